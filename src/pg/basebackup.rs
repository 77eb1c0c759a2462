//! BASE_BACKUP over a replication connection, as a stream of events.
//!
//! Two wire forms exist (PostgreSQL's protocol-replication docs):
//!
//! - PostgreSQL 15+ (`BASE_BACKUP ( LABEL '..', ... )`): a result set with
//!   the start position and timeline, one with the tablespaces (`spcoid`,
//!   `spclocation`, `size` in kB), then ONE CopyOutResponse whose CopyData
//!   payloads are typed: `n` a new archive (name, tablespace path), `d`
//!   archive or manifest data, `m` the manifest begins, `p` progress (bytes
//!   done, Int64). After CopyDone, a result set with the end position.
//! - PostgreSQL 13/14 (`BASE_BACKUP LABEL '..' PROGRESS FAST ...`): the same
//!   two result sets, then one CopyOutResponse per tablespace, in the order
//!   of the tablespace rows, each a raw tar stream without the two trailing
//!   zero blocks, then one more CopyOutResponse with the raw manifest, then
//!   the end position.
//!
//! [`BaseBackupStream`] hides the difference: archives come as
//! [`BackupEvent::ArchiveStart`], entries, content pieces (at most
//! [`crate::pg::tar::MAX_DATA_PIECE`] bytes, never spanning two files) and
//! [`BackupEvent::ArchiveEnd`]; the manifest as [`BackupEvent::Manifest`]
//! pieces. Nothing is gathered: memory stays bounded whatever the cluster size.
//!
//! WAL is not requested (no `WAL` option): walship archives it separately,
//! and the server is told not to wait for its archiver at the end (`WAIT 0`,
//! `NOWAIT` before 15): walship waits for the backup's WAL in its own
//! repository instead (`backup/wal_wait.rs`), which is what makes the backup
//! restorable. The server's wait checked its archiver, not this repository,
//! and looked once a second: ~1 s on every backup.

use std::collections::VecDeque;

use bytes::{Buf, Bytes};

use crate::pg::conn::{QueryEvent, ReplicationConnection};
use crate::pg::replication::parse_lsn;
use crate::pg::tar::{TarItem, TarReader};
use crate::pg::wal::{Lsn, TimelineId};
use crate::pg::PgError;

pub use crate::pg::tar::{EntryHeader, EntryKind};

/// Emit a progress event at least every this many bytes on 13/14 (where
/// the server sends none; 15+ sends its own about once a second).
const LEGACY_PROGRESS_INTERVAL: u64 = 8 * 1024 * 1024;

/// The options of a base backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackupOptions {
    /// The backup label (in `backup_label` and the server's logs).
    pub label: String,
    /// Request an immediate checkpoint (`CHECKPOINT 'fast'` / `FAST`)
    /// instead of a spread one.
    pub fast_checkpoint: bool,
    /// `PROGRESS`: the server estimates tablespace sizes first (an extra
    /// pass over the files), giving [`BackupEvent::Progress`] a total.
    pub progress: bool,
    /// Verify page checksums while reading (when the cluster has data
    /// checksums); a failure makes the server fail the backup at its end.
    pub verify_checksums: bool,
    /// `TABLESPACE_MAP`: send a `tablespace_map` file instead of the
    /// symbolic links in `pg_tblspc`.
    pub tablespace_map: bool,
    /// `MAX_RATE` in kB/s (the server accepts 32 to 1048576).
    pub max_rate_kb: Option<u32>,
}

impl Default for BaseBackupOptions {
    fn default() -> Self {
        BaseBackupOptions {
            label: "walship".to_string(),
            fast_checkpoint: true,
            progress: true,
            verify_checksums: true,
            tablespace_map: false,
            max_rate_kb: None,
        }
    }
}

/// One tablespace of the backup, from the server's tablespace result set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablespaceInfo {
    /// The tablespace's OID; `None` for the main data directory.
    pub oid: Option<u32>,
    /// Its directory on the server; `None` for the main data directory.
    pub location: Option<String>,
    /// Approximate size in kB (with `PROGRESS` only).
    pub size_kb: Option<u64>,
}

/// What the backup stream delivers, in order: `Started`, `Tablespaces`, for
/// each archive `ArchiveStart`, its entries (`Entry`, `Data`..., `EntryEnd`)
/// and `ArchiveEnd`; then `Manifest` pieces; `Finished` last. `Progress` may
/// come between any two of them (never inside a file's data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupEvent {
    /// The server started the backup (after its checkpoint).
    Started {
        /// The backup's start position (its checkpoint's redo point).
        start_lsn: Lsn,
        /// The timeline at the start.
        timeline: TimelineId,
    },
    /// The tablespaces, main data directory included.
    Tablespaces(Vec<TablespaceInfo>),
    /// An archive begins: `base.tar` (main data directory) or `<oid>.tar`.
    ArchiveStart {
        /// The tablespace; `None` for the main data directory.
        tablespace_oid: Option<u32>,
        /// The archive's name.
        name: String,
    },
    /// A file, directory or symbolic link begins; for files, `Data` events
    /// follow until `EntryEnd`.
    Entry(EntryHeader),
    /// A piece of the current file's content.
    Data(Bytes),
    /// The current entry is complete.
    EntryEnd,
    /// The current archive is complete.
    ArchiveEnd,
    /// A piece of the server's `backup_manifest`.
    Manifest(Bytes),
    /// Bytes sent so far, and the estimated total (with `PROGRESS`).
    Progress {
        /// Archive bytes sent so far.
        done_bytes: u64,
        /// The server's estimate of the total, when it made one.
        total_bytes: Option<u64>,
    },
    /// The backup ended on the server.
    Finished {
        /// The end position: WAL up to here is needed for consistency.
        stop_lsn: Lsn,
        /// The timeline at the end.
        timeline: TimelineId,
    },
}

/// Which wire form the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// PostgreSQL 15+: one COPY with typed messages.
    Modern,
    /// PostgreSQL 13/14: one COPY per tablespace, then one for the manifest.
    Legacy,
}

#[derive(Debug)]
enum Section {
    None,
    Archive(TarReader),
    Manifest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Inside a COPY OUT.
    Copy,
    /// 13/14: after a CopyDone, before the next CopyOutResponse or the end.
    BetweenCopies,
    /// Reading the end position result set.
    Ending,
    /// `Finished` was delivered.
    Done,
    /// An error was returned; `reusable` when the connection is back at
    /// ReadyForQuery (a server error), not when it is mid-stream.
    Failed { reusable: bool },
}

/// A running base backup: call [`BaseBackupStream::next_event`] until it
/// returns `None`. Dropping it mid-way closes the connection (the server
/// aborts the backup).
#[derive(Debug)]
pub struct BaseBackupStream {
    conn: ReplicationConnection,
    form: Form,
    phase: Phase,
    section: Section,
    /// The rest of the current CopyData, still to go through the tar reader.
    input: Bytes,
    pending: VecDeque<BackupEvent>,
    tablespaces: Vec<TablespaceInfo>,
    /// 13/14: the next tablespace row whose archive is expected.
    legacy_next: usize,
    manifest_seen: bool,
    total_bytes: Option<u64>,
    /// 13/14: archive bytes received (the server reports none).
    legacy_done: u64,
    legacy_reported: u64,
    stop: Option<(Lsn, TimelineId)>,
}

/// Quotes a string for the replication command grammar (`'` doubled; the
/// grammar has no backslash escapes).
fn quote_literal(s: &str, what: &str) -> Result<String, PgError> {
    if s.contains('\0') {
        return Err(PgError::Config(format!("{what} contains a NUL byte")));
    }
    Ok(format!("'{}'", s.replace('\'', "''")))
}

/// The BASE_BACKUP command for a server of `version` (`server_version_num`).
pub(crate) fn base_backup_command(
    opts: &BaseBackupOptions,
    version: u32,
) -> Result<String, PgError> {
    if version != 0 && version < 130000 {
        return Err(PgError::Unsupported(format!(
            "BASE_BACKUP with a backup manifest needs PostgreSQL 13 or later; the server runs {version}"
        )));
    }
    let label = quote_literal(&opts.label, "the backup label")?;
    if version >= 150000 || version == 0 {
        let mut o = vec![format!("LABEL {label}")];
        if opts.progress {
            o.push("PROGRESS".into());
        }
        o.push(format!(
            "CHECKPOINT '{}'",
            if opts.fast_checkpoint {
                "fast"
            } else {
                "spread"
            }
        ));
        o.push("WAIT 0".into());
        o.push("MANIFEST 'yes'".into());
        o.push("MANIFEST_CHECKSUMS 'CRC32C'".into());
        if opts.tablespace_map {
            o.push("TABLESPACE_MAP".into());
        }
        if !opts.verify_checksums {
            o.push("VERIFY_CHECKSUMS 0".into());
        }
        if let Some(rate) = opts.max_rate_kb {
            o.push(format!("MAX_RATE {rate}"));
        }
        o.push("TARGET 'client'".into());
        Ok(format!("BASE_BACKUP ( {} )", o.join(", ")))
    } else {
        let mut c = format!("BASE_BACKUP LABEL {label}");
        if opts.progress {
            c.push_str(" PROGRESS");
        }
        if opts.fast_checkpoint {
            c.push_str(" FAST");
        }
        c.push_str(" NOWAIT");
        if let Some(rate) = opts.max_rate_kb {
            c.push_str(&format!(" MAX_RATE {rate}"));
        }
        if opts.tablespace_map {
            c.push_str(" TABLESPACE_MAP");
        }
        if !opts.verify_checksums {
            c.push_str(" NOVERIFY_CHECKSUMS");
        }
        c.push_str(" MANIFEST 'yes' MANIFEST_CHECKSUMS 'CRC32C'");
        Ok(c)
    }
}

fn text(value: &Option<Bytes>, what: &str) -> Result<Option<String>, PgError> {
    value
        .as_ref()
        .map(|b| {
            String::from_utf8(b.to_vec())
                .map_err(|_| PgError::Protocol(format!("BASE_BACKUP: {what} is not UTF-8")))
        })
        .transpose()
}

fn number<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, PgError> {
    s.trim()
        .parse()
        .map_err(|_| PgError::Protocol(format!("BASE_BACKUP: invalid {what} {s:?}")))
}

/// Parses a position row (`recptr`, `tli`).
fn parse_position(row: &[Option<Bytes>], what: &str) -> Result<(Lsn, TimelineId), PgError> {
    let lsn = text(row.first().unwrap_or(&None), what)?
        .ok_or_else(|| PgError::Protocol(format!("BASE_BACKUP: no {what}")))?;
    let tli = text(row.get(1).unwrap_or(&None), what)?
        .ok_or_else(|| PgError::Protocol(format!("BASE_BACKUP: no timeline with the {what}")))?;
    Ok((parse_lsn(&lsn)?, number(&tli, "timeline")?))
}

/// Parses a tablespace row (`spcoid`, `spclocation`, `size`).
fn parse_tablespace(row: &[Option<Bytes>]) -> Result<TablespaceInfo, PgError> {
    let field = |i: usize, what: &str| text(row.get(i).unwrap_or(&None), what);
    Ok(TablespaceInfo {
        oid: field(0, "spcoid")?
            .map(|s| number(&s, "spcoid"))
            .transpose()?,
        location: field(1, "spclocation")?,
        size_kb: field(2, "size")?
            .map(|s| number::<i64>(&s, "tablespace size").map(|v| v.max(0) as u64))
            .transpose()?,
    })
}

/// Reads a NUL-terminated string from the front of `b`.
fn take_cstr(b: &mut Bytes, what: &str) -> Result<String, PgError> {
    let end = b
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| PgError::Protocol(format!("BASE_BACKUP: unterminated {what}")))?;
    let s = String::from_utf8(b[..end].to_vec())
        .map_err(|_| PgError::Protocol(format!("BASE_BACKUP: {what} is not UTF-8")))?;
    b.advance(end + 1);
    Ok(s)
}

fn archive_name(oid: Option<u32>) -> String {
    match oid {
        Some(o) => format!("{o}.tar"),
        None => "base.tar".to_string(),
    }
}

impl ReplicationConnection {
    /// Starts BASE_BACKUP (the form the server's version speaks, with a
    /// CRC-32C manifest) and returns once the server reported the start
    /// position and tablespaces. Server errors (missing privilege, bad
    /// options, too many backups) come back as [`PgError::Server`].
    pub async fn base_backup(
        mut self,
        opts: &BaseBackupOptions,
    ) -> Result<BaseBackupStream, PgError> {
        let version = self.server_version_num();
        let sql = base_backup_command(opts, version)?;
        let form = if version >= 150000 || version == 0 {
            Form::Modern
        } else {
            Form::Legacy
        };
        tracing::debug!(server = %self.target(), command = %sql, "starting base backup");
        self.send_query(&sql).await?;
        let mut result_sets = 0;
        let mut start = None;
        let mut tablespaces = Vec::new();
        loop {
            match self.next_event().await? {
                QueryEvent::RowDescription(_) => result_sets += 1,
                QueryEvent::DataRow(row) => match result_sets {
                    1 => start = Some(parse_position(&row, "start position")?),
                    2 => tablespaces.push(parse_tablespace(&row)?),
                    _ => {
                        return Err(PgError::Protocol(format!(
                            "{} sent an unexpected result set before the BASE_BACKUP data",
                            self.target()
                        )))
                    }
                },
                QueryEvent::CommandComplete(_) => {}
                QueryEvent::CopyOutResponse => break,
                QueryEvent::Error(e) => {
                    self.drain_to_ready().await?;
                    return Err(PgError::Server(e));
                }
                QueryEvent::ReadyForQuery => {
                    return Err(PgError::Protocol(format!(
                        "{} ended BASE_BACKUP without sending the backup",
                        self.target()
                    )))
                }
                _ => {
                    return Err(PgError::Protocol(format!(
                        "unexpected answer from {} to BASE_BACKUP",
                        self.target()
                    )))
                }
            }
        }
        let (start_lsn, timeline) = start.ok_or_else(|| {
            PgError::Protocol(format!(
                "{} sent no start position for BASE_BACKUP",
                self.target()
            ))
        })?;
        if tablespaces.is_empty() {
            return Err(PgError::Protocol(format!(
                "{} sent no tablespace list for BASE_BACKUP",
                self.target()
            )));
        }
        let total_bytes = tablespaces
            .iter()
            .map(|t| t.size_kb.map(|kb| kb * 1024))
            .sum::<Option<u64>>();
        tracing::debug!(server = %self.target(), %start_lsn, timeline, tablespaces = tablespaces.len(), "base backup started");
        let mut stream = BaseBackupStream {
            conn: self,
            form,
            phase: Phase::Copy,
            section: Section::None,
            input: Bytes::new(),
            pending: VecDeque::new(),
            tablespaces: tablespaces.clone(),
            legacy_next: 0,
            manifest_seen: false,
            total_bytes,
            legacy_done: 0,
            legacy_reported: 0,
            stop: None,
        };
        stream.pending.push_back(BackupEvent::Started {
            start_lsn,
            timeline,
        });
        stream
            .pending
            .push_back(BackupEvent::Tablespaces(tablespaces));
        if form == Form::Legacy {
            stream.start_legacy_archive()?;
        }
        Ok(stream)
    }
}

impl BaseBackupStream {
    /// The next event; `None` after [`BackupEvent::Finished`]. An error ends
    /// the stream (later calls fail too).
    pub async fn next_event(&mut self) -> Result<Option<BackupEvent>, PgError> {
        if let Phase::Failed { .. } = self.phase {
            return Err(PgError::Protocol(
                "the base backup stream already failed".into(),
            ));
        }
        match self.step().await {
            Ok(e) => Ok(e),
            Err(e) => {
                // A server error was drained to ReadyForQuery by the helpers.
                let reusable = matches!(e, PgError::Server(_));
                self.phase = Phase::Failed { reusable };
                Err(e)
            }
        }
    }

    /// Reads (and discards) what remains of the stream, and returns the
    /// connection, ready for the next command.
    pub async fn finish(mut self) -> Result<ReplicationConnection, PgError> {
        match self.phase {
            Phase::Failed { reusable: true } => return Ok(self.conn),
            Phase::Failed { reusable: false } => {
                return Err(PgError::Protocol(format!(
                    "the base backup from {} failed mid-stream: the connection cannot be reused",
                    self.conn.target()
                )))
            }
            _ => {}
        }
        while self.next_event().await?.is_some() {}
        Ok(self.conn)
    }

    /// The tablespaces the server announced.
    pub fn tablespaces(&self) -> &[TablespaceInfo] {
        &self.tablespaces
    }

    async fn step(&mut self) -> Result<Option<BackupEvent>, PgError> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            match self.phase {
                Phase::Done | Phase::Failed { .. } => return Ok(None),
                Phase::Copy => {
                    // The reader may have an item without new input (the
                    // end of a file whose content ended with the last message).
                    if let Section::Archive(tar) = &mut self.section {
                        match tar.next_item(&mut self.input).map_err(tar_error)? {
                            Some(TarItem::Entry(h)) => return Ok(Some(BackupEvent::Entry(h))),
                            Some(TarItem::Data(d)) => return Ok(Some(BackupEvent::Data(d))),
                            Some(TarItem::EntryEnd) => {
                                self.legacy_progress(false);
                                return Ok(Some(BackupEvent::EntryEnd));
                            }
                            Some(TarItem::End) => continue,
                            None => {}
                        }
                    }
                    match self.conn.copy_out_data().await? {
                        Some(payload) => self.on_copy_data(payload)?,
                        None => self.on_copy_done()?,
                    }
                }
                Phase::BetweenCopies => match self.conn.next_event().await? {
                    QueryEvent::CopyOutResponse => {
                        if self.legacy_next < self.tablespaces.len() {
                            self.start_legacy_archive()?;
                        } else if !self.manifest_seen {
                            self.manifest_seen = true;
                            self.section = Section::Manifest;
                        } else {
                            return Err(self.protocol("an extra COPY after the manifest"));
                        }
                        self.phase = Phase::Copy;
                    }
                    QueryEvent::RowDescription(_) => {
                        if self.legacy_next < self.tablespaces.len() {
                            return Err(self.protocol(&format!(
                                "the end position after {} of {} tablespace archives",
                                self.legacy_next,
                                self.tablespaces.len()
                            )));
                        }
                        self.phase = Phase::Ending;
                    }
                    QueryEvent::CommandComplete(_) => {}
                    QueryEvent::Error(e) => {
                        self.conn.drain_to_ready().await?;
                        return Err(PgError::Server(e));
                    }
                    _ => return Err(self.protocol("an unexpected message between archives")),
                },
                Phase::Ending => match self.conn.next_event().await? {
                    QueryEvent::DataRow(row) => {
                        self.stop = Some(parse_position(&row, "end position")?)
                    }
                    QueryEvent::RowDescription(_) | QueryEvent::CommandComplete(_) => {}
                    QueryEvent::Error(e) => {
                        self.conn.drain_to_ready().await?;
                        return Err(PgError::Server(e));
                    }
                    QueryEvent::ReadyForQuery => {
                        let (stop_lsn, timeline) =
                            self.stop.ok_or_else(|| self.protocol("no end position"))?;
                        self.phase = Phase::Done;
                        tracing::debug!(server = %self.conn.target(), %stop_lsn, timeline, "base backup finished");
                        return Ok(Some(BackupEvent::Finished { stop_lsn, timeline }));
                    }
                    _ => return Err(self.protocol("an unexpected message after the backup")),
                },
            }
        }
    }

    fn protocol(&self, what: &str) -> PgError {
        PgError::Protocol(format!("BASE_BACKUP from {}: {what}", self.conn.target()))
    }

    /// 13/14: the COPY that just began carries the next tablespace's tar.
    fn start_legacy_archive(&mut self) -> Result<(), PgError> {
        let ts = self
            .tablespaces
            .get(self.legacy_next)
            .ok_or_else(|| self.protocol("more archives than tablespaces"))?;
        let name = archive_name(ts.oid);
        self.pending.push_back(BackupEvent::ArchiveStart {
            tablespace_oid: ts.oid,
            name: name.clone(),
        });
        self.section = Section::Archive(TarReader::new(name));
        self.legacy_next += 1;
        Ok(())
    }

    /// Ends the current archive, if one is open (checking its tar ended cleanly).
    fn close_archive(&mut self) -> Result<(), PgError> {
        if let Section::Archive(tar) = std::mem::replace(&mut self.section, Section::None) {
            if !self.input.is_empty() {
                return Err(
                    self.protocol(&format!("archive {} ended with unread data", tar.archive()))
                );
            }
            tar.finish().map_err(tar_error)?;
            self.pending.push_back(BackupEvent::ArchiveEnd);
            self.legacy_progress(true);
        }
        Ok(())
    }

    /// 13/14: a progress event every [`LEGACY_PROGRESS_INTERVAL`] bytes and
    /// at the end of each archive.
    fn legacy_progress(&mut self, force: bool) {
        if self.form != Form::Legacy {
            return;
        }
        if force || self.legacy_done >= self.legacy_reported + LEGACY_PROGRESS_INTERVAL {
            self.legacy_reported = self.legacy_done;
            self.pending.push_back(BackupEvent::Progress {
                done_bytes: self.legacy_done,
                total_bytes: self.total_bytes,
            });
        }
    }

    fn on_copy_data(&mut self, mut payload: Bytes) -> Result<(), PgError> {
        if self.form == Form::Legacy {
            match self.section {
                Section::Archive(_) => {
                    self.legacy_done += payload.len() as u64;
                    self.input = payload;
                }
                Section::Manifest => {
                    if !payload.is_empty() {
                        self.pending.push_back(BackupEvent::Manifest(payload));
                    }
                }
                Section::None => return Err(self.protocol("COPY data outside an archive")),
            }
            return Ok(());
        }
        let Some(&kind) = payload.first() else {
            return Err(self.protocol("an empty CopyData message"));
        };
        payload.advance(1);
        match kind {
            b'n' => {
                self.close_archive()?;
                let name = take_cstr(&mut payload, "archive name")?;
                let path = take_cstr(&mut payload, "tablespace path")?;
                let oid = if path.is_empty() {
                    None
                } else if let Some(t) = self
                    .tablespaces
                    .iter()
                    .find(|t| t.location.as_deref() == Some(path.as_str()))
                {
                    t.oid
                } else {
                    Some(
                        name.strip_suffix(".tar")
                            .and_then(|n| n.parse().ok())
                            .ok_or_else(|| {
                                self.protocol(&format!(
                                    "archive {name:?} for {path:?} matches no tablespace"
                                ))
                            })?,
                    )
                };
                if !name.ends_with(".tar") {
                    return Err(self.protocol(&format!(
                        "archive {name:?} is not a tar archive (server-side compression is not \
                         requested by walship)"
                    )));
                }
                self.pending.push_back(BackupEvent::ArchiveStart {
                    tablespace_oid: oid,
                    name: name.clone(),
                });
                self.section = Section::Archive(TarReader::new(name));
            }
            b'm' => {
                self.close_archive()?;
                self.manifest_seen = true;
                self.section = Section::Manifest;
            }
            b'd' => match self.section {
                Section::Archive(_) => self.input = payload,
                Section::Manifest => {
                    if !payload.is_empty() {
                        self.pending.push_back(BackupEvent::Manifest(payload));
                    }
                }
                Section::None => return Err(self.protocol("data before any archive")),
            },
            b'p' => {
                if payload.len() < 8 {
                    return Err(self.protocol("a short progress message"));
                }
                let done_bytes = payload.get_u64();
                self.pending.push_back(BackupEvent::Progress {
                    done_bytes,
                    total_bytes: self.total_bytes,
                });
            }
            other => {
                return Err(self.protocol(&format!(
                    "unknown message type {:?} in the backup stream",
                    other as char
                )))
            }
        }
        Ok(())
    }

    fn on_copy_done(&mut self) -> Result<(), PgError> {
        match self.form {
            Form::Modern => {
                self.close_archive()?;
                self.section = Section::None;
                self.phase = Phase::Ending;
            }
            Form::Legacy => {
                self.close_archive()?;
                self.section = Section::None;
                self.phase = Phase::BetweenCopies;
            }
        }
        Ok(())
    }
}

fn tar_error(e: crate::pg::tar::TarError) -> PgError {
    PgError::Protocol(format!("BASE_BACKUP: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_command() {
        let opts = BaseBackupOptions {
            label: "it's mine".into(),
            fast_checkpoint: true,
            progress: true,
            verify_checksums: false,
            tablespace_map: true,
            max_rate_kb: Some(1024),
        };
        assert_eq!(
            base_backup_command(&opts, 150004).unwrap(),
            "BASE_BACKUP ( LABEL 'it''s mine', PROGRESS, CHECKPOINT 'fast', WAIT 0, \
             MANIFEST 'yes', MANIFEST_CHECKSUMS 'CRC32C', TABLESPACE_MAP, VERIFY_CHECKSUMS 0, \
             MAX_RATE 1024, TARGET 'client' )"
        );
        let d = BaseBackupOptions {
            fast_checkpoint: false,
            progress: false,
            ..Default::default()
        };
        assert_eq!(
            base_backup_command(&d, 180000).unwrap(),
            "BASE_BACKUP ( LABEL 'walship', CHECKPOINT 'spread', WAIT 0, MANIFEST 'yes', \
             MANIFEST_CHECKSUMS 'CRC32C', TARGET 'client' )"
        );
    }

    #[test]
    fn legacy_command() {
        let opts = BaseBackupOptions {
            label: "l".into(),
            fast_checkpoint: true,
            progress: true,
            verify_checksums: false,
            tablespace_map: true,
            max_rate_kb: Some(64),
        };
        assert_eq!(
            base_backup_command(&opts, 140010).unwrap(),
            "BASE_BACKUP LABEL 'l' PROGRESS FAST NOWAIT MAX_RATE 64 TABLESPACE_MAP \
             NOVERIFY_CHECKSUMS MANIFEST 'yes' MANIFEST_CHECKSUMS 'CRC32C'"
        );
        assert!(matches!(
            base_backup_command(&opts, 120000),
            Err(PgError::Unsupported(_))
        ));
        let nul = BaseBackupOptions {
            label: "a\0b".into(),
            ..Default::default()
        };
        assert!(matches!(
            base_backup_command(&nul, 150000),
            Err(PgError::Config(_))
        ));
    }

    #[test]
    fn rows_parse() {
        let b = |s: &str| Some(Bytes::copy_from_slice(s.as_bytes()));
        assert_eq!(
            parse_position(&[b("0/2000028"), b("1")], "start").unwrap(),
            (Lsn(0x2000028), 1)
        );
        assert!(parse_position(&[b("0/2000028"), None], "start").is_err());
        assert_eq!(
            parse_tablespace(&[b("16385"), b("/srv/ts"), b("42")]).unwrap(),
            TablespaceInfo {
                oid: Some(16385),
                location: Some("/srv/ts".into()),
                size_kb: Some(42)
            }
        );
        assert_eq!(
            parse_tablespace(&[None, None, None]).unwrap(),
            TablespaceInfo {
                oid: None,
                location: None,
                size_kb: None
            }
        );
        let mut m = Bytes::from_static(b"16385.tar\0/srv/ts\0");
        assert_eq!(take_cstr(&mut m, "name").unwrap(), "16385.tar");
        assert_eq!(take_cstr(&mut m, "path").unwrap(), "/srv/ts");
        assert!(take_cstr(&mut m, "more").is_err());
    }
}
