//! The replication commands (IDENTIFY_SYSTEM, SHOW, TIMELINE_HISTORY, slot
//! management) and the physical WAL stream of START_REPLICATION.
//!
//! The stream's messages (PostgreSQL's protocol-replication docs), all inside
//! CopyData and big-endian:
//! - XLogData `w`: start u64, end of WAL u64, send time i64, WAL bytes;
//! - primary keepalive `k`: end of WAL u64, send time i64, reply-requested u8;
//! - standby status update `r` (ours): write, flush, apply u64, time i64,
//!   reply-requested u8.
//!
//! Times are PostgreSQL's: microseconds since 2000-01-01 00:00 UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::time::Instant;

use crate::pg::conn::{QueryEvent, ReplicationConnection};
use crate::pg::wal::segment::{TimelineId, WalSegSize};
use crate::pg::wal::Lsn;
use crate::pg::PgError;

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00 UTC).
const PG_EPOCH_OFFSET_SECS: i64 = 946_684_800;

/// Default interval between unsolicited standby status updates (as
/// `pg_receivewal --status-interval`).
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// What IDENTIFY_SYSTEM reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemIdentity {
    /// The cluster's system identifier (as in `pg_control_system()`).
    pub system_id: u64,
    /// The server's current timeline.
    pub timeline: TimelineId,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
    /// The database connected to; `None` for physical replication.
    pub dbname: Option<String>,
}

/// What CREATE_REPLICATION_SLOT reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// The slot's name.
    pub name: String,
    /// `consistent_point`; `None` when the server reports none (physical
    /// slots report `0/0`).
    pub consistent_point: Option<Lsn>,
}

/// What READ_REPLICATION_SLOT reports about an existing slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    /// `physical` or `logical`.
    pub slot_type: String,
    /// The oldest WAL the slot keeps; `None` when it reserves none yet.
    pub restart_lsn: Option<Lsn>,
    /// The timeline of `restart_lsn`.
    pub restart_tli: Option<TimelineId>,
}

/// Microseconds since 2000-01-01 UTC, now.
pub fn pg_now_micros() -> i64 {
    let since_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    since_unix - PG_EPOCH_OFFSET_SECS * 1_000_000
}

/// Parses PostgreSQL's `X/Y` LSN text.
pub(crate) fn parse_lsn(text: &str) -> Result<Lsn, PgError> {
    let bad = || PgError::Protocol(format!("invalid LSN {text:?} from the server"));
    let (hi, lo) = text.split_once('/').ok_or_else(bad)?;
    let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
    let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
    Ok(Lsn(((hi as u64) << 32) | lo as u64))
}

/// Formats an LSN as PostgreSQL does (`%X/%X`).
pub(crate) fn format_lsn(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn.0 >> 32, lsn.0 & 0xFFFF_FFFF)
}

/// Parses a size as SHOW prints a byte-unit setting (`16MB`, `1GB`, `8kB`,
/// `512B`, or a bare number of bytes).
pub(crate) fn parse_show_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    num.checked_mul(mult)
}

/// Replication slot names follow PostgreSQL's rule (lower-case letters,
/// digits, underscore; at most 63 bytes): checking it here also keeps the
/// name from altering the command it is put into.
pub(crate) fn check_slot_name(name: &str) -> Result<(), PgError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PgError::Config(format!(
            "invalid replication slot name {name:?}: use 1 to 63 lower-case letters, digits \
             and underscores"
        )))
    }
}

/// Encodes a standby status update (the CopyData payload).
pub(crate) fn encode_status_update(
    write: Lsn,
    flush: Lsn,
    apply: Lsn,
    now: i64,
    reply_requested: bool,
) -> [u8; 34] {
    let mut out = [0u8; 34];
    out[0] = b'r';
    out[1..9].copy_from_slice(&write.0.to_be_bytes());
    out[9..17].copy_from_slice(&flush.0.to_be_bytes());
    out[17..25].copy_from_slice(&apply.0.to_be_bytes());
    out[25..33].copy_from_slice(&now.to_be_bytes());
    out[33] = reply_requested as u8;
    out
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Decodes one CopyData payload of the WAL stream.
pub(crate) fn decode_stream_message(payload: Bytes) -> Result<StreamMessage, PgError> {
    match payload.first() {
        Some(b'w') if payload.len() >= 25 => Ok(StreamMessage::XLogData {
            start: Lsn(be_u64(&payload[1..9])),
            end_of_wal: Lsn(be_u64(&payload[9..17])),
            server_time: be_u64(&payload[17..25]) as i64,
            data: payload.slice(25..),
        }),
        Some(b'k') if payload.len() >= 18 => Ok(StreamMessage::Keepalive {
            end_of_wal: Lsn(be_u64(&payload[1..9])),
            server_time: be_u64(&payload[9..17]) as i64,
            reply_requested: payload[17] != 0,
        }),
        Some(&tag) => Err(PgError::Protocol(format!(
            "unknown or short replication message (tag {:?}, {} bytes)",
            tag as char,
            payload.len()
        ))),
        None => Err(PgError::Protocol("empty CopyData in the WAL stream".into())),
    }
}

/// The rows of one command, values as raw bytes (TIMELINE_HISTORY's
/// content is a file, not text to validate).
async fn raw_rows(
    conn: &mut ReplicationConnection,
    sql: &str,
) -> Result<Vec<Vec<Option<Bytes>>>, PgError> {
    conn.send_query(sql).await?;
    let mut rows = Vec::new();
    let mut error = None;
    loop {
        match conn.next_event().await? {
            QueryEvent::DataRow(v) => rows.push(v),
            QueryEvent::Error(e) => error = Some(e),
            QueryEvent::ReadyForQuery => break,
            QueryEvent::RowDescription(_)
            | QueryEvent::CommandComplete(_)
            | QueryEvent::EmptyQuery => {}
            _ => {
                return Err(PgError::Protocol(format!(
                    "{} answered {sql:?} with COPY data",
                    conn.target()
                )))
            }
        }
    }
    match error {
        Some(e) => Err(PgError::Server(e)),
        None => Ok(rows),
    }
}

fn text_field<'a>(
    row: &'a [Option<Bytes>],
    i: usize,
    what: &str,
) -> Result<Option<&'a str>, PgError> {
    match row.get(i) {
        None => Err(PgError::Protocol(format!("{what}: missing column {i}"))),
        Some(None) => Ok(None),
        Some(Some(b)) => std::str::from_utf8(b)
            .map(Some)
            .map_err(|_| PgError::Protocol(format!("{what}: column {i} is not UTF-8"))),
    }
}

fn parse_num<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, PgError> {
    text.trim()
        .parse()
        .map_err(|_| PgError::Protocol(format!("{what}: invalid number {text:?}")))
}

impl ReplicationConnection {
    /// IDENTIFY_SYSTEM: system identifier, timeline, WAL position.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity, PgError> {
        let rows = raw_rows(self, "IDENTIFY_SYSTEM").await?;
        let what = "IDENTIFY_SYSTEM";
        let row = rows
            .first()
            .ok_or_else(|| PgError::Protocol(format!("{what} returned no row")))?;
        let need = |i: usize| -> Result<&str, PgError> {
            text_field(row, i, what)?
                .ok_or_else(|| PgError::Protocol(format!("{what}: column {i} is NULL")))
        };
        Ok(SystemIdentity {
            system_id: parse_num(need(0)?, what)?,
            timeline: parse_num(need(1)?, what)?,
            xlogpos: parse_lsn(need(2)?)?,
            dbname: text_field(row, 3, what).ok().flatten().map(str::to_string),
        })
    }

    /// `SHOW name` (e.g. `wal_segment_size`), the value as the server prints it.
    pub async fn show(&mut self, name: &str) -> Result<String, PgError> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            return Err(PgError::Config(format!(
                "invalid setting name {name:?} for SHOW"
            )));
        }
        let rows = self.simple_query(&format!("SHOW {name}")).await?;
        rows.into_iter()
            .next()
            .and_then(|r| r.values.into_iter().next().flatten())
            .ok_or_else(|| PgError::Protocol(format!("SHOW {name} returned no value")))
    }

    /// The server's WAL segment size (`SHOW wal_segment_size`, e.g. `16MB`).
    pub async fn wal_segment_size(&mut self) -> Result<WalSegSize, PgError> {
        let text = self.show("wal_segment_size").await?;
        let bytes = parse_show_size(&text).ok_or_else(|| {
            PgError::Protocol(format!(
                "cannot read wal_segment_size {text:?} from {}",
                self.target()
            ))
        })?;
        let bytes = u32::try_from(bytes).map_err(|_| {
            PgError::Protocol(format!(
                "wal_segment_size {text:?} from {} is too large",
                self.target()
            ))
        })?;
        WalSegSize::new(bytes).map_err(|e| {
            PgError::Protocol(format!(
                "wal_segment_size {text:?} from {}: {e}",
                self.target()
            ))
        })
    }

    /// TIMELINE_HISTORY: the history file of timeline `tli` as (file name, content).
    pub async fn timeline_history(
        &mut self,
        tli: TimelineId,
    ) -> Result<(String, Vec<u8>), PgError> {
        let what = "TIMELINE_HISTORY";
        let rows = raw_rows(self, &format!("TIMELINE_HISTORY {tli}")).await?;
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| PgError::Protocol(format!("{what} {tli} returned no row")))?;
        let name = text_field(&row, 0, what)?
            .ok_or_else(|| PgError::Protocol(format!("{what} {tli}: NULL file name")))?
            .to_string();
        let content = row
            .get(1)
            .cloned()
            .flatten()
            .ok_or_else(|| PgError::Protocol(format!("{what} {tli}: no content")))?;
        Ok((name, content.to_vec()))
    }

    /// `CREATE_REPLICATION_SLOT name [TEMPORARY] PHYSICAL [RESERVE_WAL]` (the
    /// form every supported major accepts).
    pub async fn create_physical_slot(
        &mut self,
        name: &str,
        reserve_wal: bool,
        temporary: bool,
    ) -> Result<SlotInfo, PgError> {
        check_slot_name(name)?;
        let sql = format!(
            "CREATE_REPLICATION_SLOT {name}{} PHYSICAL{}",
            if temporary { " TEMPORARY" } else { "" },
            if reserve_wal { " RESERVE_WAL" } else { "" }
        );
        let rows = self.simple_query(&sql).await?;
        let row = rows
            .first()
            .ok_or_else(|| PgError::Protocol(format!("{sql} returned no row")))?;
        let consistent_point = match row.get("consistent_point") {
            Some(t) => Some(parse_lsn(t)?).filter(|l| l.0 != 0),
            None => None,
        };
        Ok(SlotInfo {
            name: row.get("slot_name").unwrap_or(name).to_string(),
            consistent_point,
        })
    }

    /// `DROP_REPLICATION_SLOT name [WAIT]` (`WAIT`: wait for an active slot to be
    /// released instead of failing).
    pub async fn drop_slot(&mut self, name: &str, wait: bool) -> Result<(), PgError> {
        check_slot_name(name)?;
        let sql = format!(
            "DROP_REPLICATION_SLOT {name}{}",
            if wait { " WAIT" } else { "" }
        );
        self.simple_query(&sql).await.map(|_| ())
    }

    /// READ_REPLICATION_SLOT on 15+; Ok(None) when the slot does not exist. On 13/14 returns
    /// Err(PgError::Unsupported...) so callers fall back to a plain SQL query of pg_replication_slots.
    pub async fn read_replication_slot(
        &mut self,
        name: &str,
    ) -> Result<Option<SlotState>, PgError> {
        check_slot_name(name)?;
        let version = self.server_version_num();
        if version < 150000 {
            return Err(PgError::Unsupported(format!(
                "READ_REPLICATION_SLOT needs PostgreSQL 15 or later; {} runs {}",
                self.target(),
                self.parameter("server_version")
                    .unwrap_or("an older version")
            )));
        }
        let rows = self
            .simple_query(&format!("READ_REPLICATION_SLOT {name}"))
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        // A missing slot is one row of NULLs.
        let Some(slot_type) = row.get("slot_type") else {
            return Ok(None);
        };
        Ok(Some(SlotState {
            slot_type: slot_type.to_string(),
            restart_lsn: row.get("restart_lsn").map(parse_lsn).transpose()?,
            restart_tli: row
                .get("restart_tli")
                .map(|t| parse_num(t, "READ_REPLICATION_SLOT restart_tli"))
                .transpose()?,
        }))
    }

    /// `START_REPLICATION [SLOT s] PHYSICAL X/Y TIMELINE n`. Takes the connection: streaming owns it until the
    /// stream ends (then `WalStream::finish` hands the connection back).
    pub async fn start_replication(
        mut self,
        slot: Option<&str>,
        start: Lsn,
        timeline: TimelineId,
    ) -> Result<WalStream, PgError> {
        let slot_part = match slot {
            Some(s) => {
                check_slot_name(s)?;
                format!("SLOT {s} ")
            }
            None => String::new(),
        };
        let sql = format!(
            "START_REPLICATION {slot_part}PHYSICAL {} TIMELINE {timeline}",
            format_lsn(start)
        );
        tracing::debug!(server = %self.target(), command = %sql, "starting replication");
        self.send_query(&sql).await?;
        // Starting exactly at the end of a historic timeline, the server skips
        // the COPY and sends the next timeline's result set at once.
        let mut end = EndOfStream::default();
        let mut error = None;
        loop {
            match self.next_event().await? {
                QueryEvent::CopyBothResponse if error.is_none() => {
                    return Ok(WalStream::new(self, StreamState::Streaming));
                }
                QueryEvent::DataRow(row) => end = parse_end_of_stream(&row)?,
                QueryEvent::Error(e) => {
                    error.get_or_insert(e);
                }
                QueryEvent::ReadyForQuery => break,
                QueryEvent::RowDescription(_) | QueryEvent::CommandComplete(_) => {}
                _ => {
                    return Err(PgError::Protocol(format!(
                        "unexpected answer from {} to {sql}",
                        self.target()
                    )))
                }
            }
        }
        match error {
            Some(e) => Err(PgError::Server(e)),
            None => Ok(WalStream::new(self, StreamState::Finished(end))),
        }
    }
}

/// One message of the WAL stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamMessage {
    /// WAL bytes starting at `start`.
    XLogData {
        /// The WAL position of `data[0]`.
        start: Lsn,
        /// The server's current end of WAL.
        end_of_wal: Lsn,
        /// The server's clock when sending (µs since 2000-01-01 UTC).
        server_time: i64,
        /// The WAL bytes.
        data: Bytes,
    },
    /// A primary keepalive. A requested reply has already been sent.
    Keepalive {
        /// The server's current end of WAL.
        end_of_wal: Lsn,
        /// The server's clock when sending (µs since 2000-01-01 UTC).
        server_time: i64,
        /// Whether the server asked for an immediate status update.
        reply_requested: bool,
    },
    /// The server ended the timeline (CopyDone): `finish()` then yields the next timeline and switch point.
    EndOfTimeline,
}

/// How a stream ended: where the next timeline starts, when the server said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndOfStream {
    /// The timeline that follows the streamed one.
    pub next_timeline: Option<TimelineId>,
    /// Where the streamed timeline ended and the next one begins.
    pub switch_lsn: Option<Lsn>,
}

fn parse_end_of_stream(row: &[Option<Bytes>]) -> Result<EndOfStream, PgError> {
    let what = "end-of-timeline result";
    Ok(EndOfStream {
        next_timeline: text_field(row, 0, what)?
            .map(|t| parse_num(t, what))
            .transpose()?,
        switch_lsn: text_field(row, 1, what)?.map(parse_lsn).transpose()?,
    })
}

#[derive(Debug)]
enum StreamState {
    /// In COPY BOTH mode.
    Streaming,
    /// The server sent CopyDone; ours is still due.
    ServerDone,
    /// No COPY happened; the command already completed with this result.
    Finished(EndOfStream),
}

/// A physical WAL stream (the connection in COPY BOTH mode).
#[derive(Debug)]
pub struct WalStream {
    conn: ReplicationConnection,
    write: Lsn,
    flush: Lsn,
    apply: Lsn,
    /// The write position of the last status update sent.
    sent_write: Lsn,
    interval: Duration,
    next_status: Instant,
    state: StreamState,
}

impl WalStream {
    fn new(conn: ReplicationConnection, state: StreamState) -> Self {
        WalStream {
            conn,
            write: Lsn(0),
            flush: Lsn(0),
            apply: Lsn(0),
            sent_write: Lsn(0),
            interval: DEFAULT_STATUS_INTERVAL,
            next_status: Instant::now() + DEFAULT_STATUS_INTERVAL,
            state,
        }
    }

    /// Next message; answers keepalives that request a reply itself (with the current positions) and sends the
    /// scheduled status update when due (default every 10 s, `set_status_interval`). Ok(None) never happens
    /// mid-stream: EndOfTimeline is reported first.
    ///
    /// Cancel-safe while waiting for the server (a dropped call loses no
    /// message), so it can sit in a `select!` with a shutdown signal.
    pub async fn next_message(&mut self) -> Result<StreamMessage, PgError> {
        loop {
            if !matches!(self.state, StreamState::Streaming) {
                return Ok(StreamMessage::EndOfTimeline);
            }
            if self.conn.has_pending_output() {
                self.conn.flush().await?;
            }
            let periodic = !self.interval.is_zero();
            if periodic && Instant::now() >= self.next_status {
                self.send_status(false).await?;
            }
            let event = if periodic {
                match tokio::time::timeout_at(self.next_status, self.conn.next_event()).await {
                    Ok(e) => e?,
                    Err(_) => continue, // status update due
                }
            } else {
                self.conn.next_event().await?
            };
            match event {
                QueryEvent::CopyData(payload) => {
                    let msg = decode_stream_message(payload)?;
                    if let StreamMessage::Keepalive {
                        reply_requested: true,
                        ..
                    } = msg
                    {
                        self.send_status(false).await?;
                    }
                    return Ok(msg);
                }
                QueryEvent::CopyDone => {
                    self.state = StreamState::ServerDone;
                    return Ok(StreamMessage::EndOfTimeline);
                }
                QueryEvent::Error(e) => return Err(PgError::Server(e)),
                // A walsender that is shutting down, once it has sent all WAL,
                // ends the command without CopyDone and exits.
                QueryEvent::CommandComplete(_) => {
                    return Err(PgError::Closed(format!(
                        "{} ended replication: the server is shutting down",
                        self.conn.target()
                    )))
                }
                _ => {
                    return Err(PgError::Protocol(format!(
                        "unexpected message from {} in the WAL stream",
                        self.conn.target()
                    )))
                }
            }
        }
    }

    /// Positions reported in standby status updates; `flush` MUST only be advanced by the caller (durability is
    /// the caller's business: the slot's restart_lsn follows it).
    pub fn set_positions(&mut self, write: Lsn, flush: Lsn, apply: Lsn) {
        self.write = write;
        self.flush = flush;
        self.apply = apply;
    }

    /// How often unsolicited status updates are sent; zero turns them off
    /// (requested replies are still sent).
    pub fn set_status_interval(&mut self, interval: std::time::Duration) {
        self.interval = interval;
        self.next_status = Instant::now() + interval;
    }

    /// Sends a status update now (optionally asking the server to reply).
    pub async fn send_status(&mut self, reply_requested: bool) -> Result<(), PgError> {
        let msg = encode_status_update(
            self.write,
            self.flush,
            self.apply,
            pg_now_micros(),
            reply_requested,
        );
        tracing::trace!(
            write = %format_lsn(self.write),
            flush = %format_lsn(self.flush),
            apply = %format_lsn(self.apply),
            "standby status update"
        );
        self.conn.send_copy_data(&msg).await?;
        self.sent_write = self.write;
        self.next_status = Instant::now() + self.interval;
        Ok(())
    }

    /// Reads the rest of the stream on a thread of its own that waits `wait`
    /// after each small read ([`crate::pg::gather`]): far fewer wake-ups
    /// under a load of many small messages, each message up to `wait` later.
    /// False (and nothing changed) when the server sent no stream, or the
    /// reads are gathered already.
    pub fn gather_reads(&mut self, wait: Duration) -> Result<bool, PgError> {
        if !matches!(self.state, StreamState::Streaming) {
            return Ok(false);
        }
        self.conn.gather_reads(wait)
    }

    /// How far the write position set with `set_positions` is ahead of the
    /// one last reported to the server.
    pub fn unreported_write(&self) -> u64 {
        self.write.0.saturating_sub(self.sent_write.0)
    }

    /// After EndOfTimeline: sends our CopyDone, reads the result set (next tli, switch point) and CommandComplete /
    /// ReadyForQuery, returns the connection for further commands. Also usable to stop streaming early (we send
    /// CopyDone, drain remaining CopyData until the server's CopyDone).
    pub async fn finish(self) -> Result<(EndOfStream, ReplicationConnection), PgError> {
        let WalStream {
            mut conn, state, ..
        } = self;
        match state {
            StreamState::Finished(end) => return Ok((end, conn)),
            StreamState::ServerDone => conn.send_copy_done().await?,
            StreamState::Streaming => {
                conn.send_copy_done().await?;
                loop {
                    match conn.next_event().await? {
                        // WAL already in flight: dropped, the caller stopped.
                        QueryEvent::CopyData(_) => {}
                        QueryEvent::CopyDone => break,
                        QueryEvent::Error(e) => {
                            conn.drain_to_ready().await?;
                            return Err(PgError::Server(e));
                        }
                        _ => {
                            return Err(PgError::Protocol(format!(
                                "unexpected message from {} while ending the WAL stream",
                                conn.target()
                            )))
                        }
                    }
                }
            }
        }
        let mut end = EndOfStream::default();
        let mut error = None;
        loop {
            match conn.next_event().await? {
                QueryEvent::DataRow(row) => end = parse_end_of_stream(&row)?,
                QueryEvent::RowDescription(_) | QueryEvent::CommandComplete(_) => {}
                // Stray WAL the server sent before seeing our CopyDone.
                QueryEvent::CopyData(_) => {}
                QueryEvent::Error(e) => {
                    error.get_or_insert(e);
                }
                QueryEvent::ReadyForQuery => break,
                _ => {
                    return Err(PgError::Protocol(format!(
                        "unexpected message from {} after the WAL stream",
                        conn.target()
                    )))
                }
            }
        }
        match error {
            Some(e) => Err(PgError::Server(e)),
            None => Ok((end, conn)),
        }
    }

    /// The connection's `host:port` or socket path.
    pub fn target(&self) -> &str {
        self.conn.target()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_update_bytes() {
        let b = encode_status_update(Lsn(0x1_0000_0002), Lsn(0x30), Lsn(0x20), -5, true);
        let mut want = vec![b'r'];
        want.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x30]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x20]);
        want.extend_from_slice(&(-5i64).to_be_bytes());
        want.push(1);
        assert_eq!(b.to_vec(), want);
        assert_eq!(
            encode_status_update(Lsn(0), Lsn(0), Lsn(0), 0, false)[33],
            0
        );
    }

    #[test]
    fn keepalive_and_xlogdata_decode() {
        let mut k = vec![b'k'];
        k.extend_from_slice(&0x0000_0001_0200_0028u64.to_be_bytes());
        k.extend_from_slice(&777i64.to_be_bytes());
        k.push(1);
        assert_eq!(
            decode_stream_message(Bytes::from(k)).unwrap(),
            StreamMessage::Keepalive {
                end_of_wal: Lsn(0x1_0200_0028),
                server_time: 777,
                reply_requested: true
            }
        );

        let mut w = vec![b'w'];
        w.extend_from_slice(&0x100u64.to_be_bytes());
        w.extend_from_slice(&0x200u64.to_be_bytes());
        w.extend_from_slice(&9i64.to_be_bytes());
        w.extend_from_slice(b"wal!");
        assert_eq!(
            decode_stream_message(Bytes::from(w)).unwrap(),
            StreamMessage::XLogData {
                start: Lsn(0x100),
                end_of_wal: Lsn(0x200),
                server_time: 9,
                data: Bytes::from_static(b"wal!")
            }
        );
        assert!(decode_stream_message(Bytes::from_static(b"k\0\0")).is_err());
        assert!(decode_stream_message(Bytes::from_static(b"x")).is_err());
        assert!(decode_stream_message(Bytes::new()).is_err());
    }

    #[test]
    fn show_sizes() {
        assert_eq!(parse_show_size("16MB"), Some(16 << 20));
        assert_eq!(parse_show_size("1GB"), Some(1 << 30));
        assert_eq!(parse_show_size("1MB"), Some(1 << 20));
        assert_eq!(parse_show_size("8kB"), Some(8192));
        assert_eq!(parse_show_size("16777216"), Some(16 << 20));
        assert_eq!(parse_show_size("16 MB"), Some(16 << 20));
        assert_eq!(parse_show_size("MB"), None);
        assert_eq!(parse_show_size("16XB"), None);
    }

    #[test]
    fn lsn_text() {
        assert_eq!(parse_lsn("16/B374D848").unwrap(), Lsn(0x16_B374_D848));
        assert_eq!(format_lsn(Lsn(0x16_B374_D848)), "16/B374D848");
        assert_eq!(format_lsn(Lsn(0x200_0028)), "0/2000028");
        assert!(parse_lsn("nonsense").is_err());
        assert!(parse_lsn("1/G").is_err());
    }

    #[test]
    fn slot_names() {
        assert!(check_slot_name("walship_1").is_ok());
        assert!(check_slot_name("").is_err());
        assert!(check_slot_name("Bad").is_err());
        assert!(check_slot_name("x; DROP").is_err());
        assert!(check_slot_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn end_of_stream_row() {
        let row = vec![
            Some(Bytes::from_static(b"2")),
            Some(Bytes::from_static(b"0/3000000")),
        ];
        assert_eq!(
            parse_end_of_stream(&row).unwrap(),
            EndOfStream {
                next_timeline: Some(2),
                switch_lsn: Some(Lsn(0x300_0000))
            }
        );
    }
}
