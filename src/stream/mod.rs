//! `walship stream`: continuous WAL streaming over the physical replication
//! protocol into the repository.
//!
//! The path of the WAL: PostgreSQL (START_REPLICATION on a physical slot) ->
//! [`spool`] (the segment in progress, on local disk, written in 256 KiB
//! pieces) -> [`upload`] (full segments, the same objects archive-push
//! writes, encoded by [`follow`] while the segment arrives, and the segment
//! in progress as a `.partial` at most every `--partial-interval`) -> the
//! repository.
//!
//! What is acknowledged: the flush position sent to PostgreSQL (which the
//! slot's restart_lsn follows) is the end of the contiguous WAL stored in the
//! repository, or with `--synchronous` the end of what is fsynced in the
//! spool. Nothing the slot releases is missing from both.
//!
//! Where streaming starts: the later of the slot's restart_lsn and the end of
//! what the spool and the repository hold (last full segment + 1, or a
//! stored `.partial`'s end). A missing slot is created with RESERVE_WAL; when
//! it disappears after streaming began it is recreated only if the server
//! still has the WAL the repository needs next, otherwise the streamer stops
//! with [`StreamError::SlotLost`] rather than leave a silent gap.
//!
//! Timeline switches follow pg_receivewal: the old timeline's last segment is
//! stored as `<old TLI segment>.partial` (a full segment when the switch
//! falls on a boundary), the new timeline's history file is stored, and
//! streaming restarts on the new timeline from the start of the segment that
//! holds the switch point.

pub mod backoff;
pub mod error;
pub mod follow;
pub mod slot;
pub mod spool;
pub mod status;
pub mod upload;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub use error::StreamError;

use crate::config::Settings;
use crate::pg::conn::ReplicationConnection;
use crate::pg::conninfo::ConnConfig;
use crate::pg::replication::{StreamMessage, WalStream};
use crate::pg::wal::segment::{parse_timeline_history, TimelineId, WalFileName, WalSegSize};
use crate::pg::wal::Lsn;
use crate::repo::catalog::WalCatalog;
use crate::repo::{ClusterIdentity, Repository};
use backoff::Backoff;
use follow::Tail;
use spool::{InProgress, Spool};
use status::{now_rfc3339, StreamStatus};
use upload::{PartialRequest, Progress, UploadQueue};

/// The smallest `.partial` worth storing: the segment's long page header.
const MIN_PARTIAL: u64 = 40;

/// A status update goes out whenever the spool's write position has moved this
/// far since the last one (besides once a second, and whenever flush moves).
/// At 13 MB/s of WAL that is about 13 small messages a second.
const WRITE_REPORT_BYTES: u64 = 1 << 20;

/// After a small read the receiver waits this long for more WAL before
/// taking it ([`crate::pg::gather`]), except with `--synchronous`, where
/// every commit waits for our acknowledgement. Under a commit-heavy load
/// this turns thousands of wake-ups a second into a few hundred; the WAL
/// reaches the spool at most this much later, far below what the flush
/// position lags by (a stored segment).
const RECEIVE_GATHER: Duration = Duration::from_millis(5);

/// How `walship stream` runs.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// The physical replication slot.
    pub slot: String,
    /// The local spool directory.
    pub spool_dir: PathBuf,
    /// The segment in progress is stored as a `.partial` at most this often
    /// (when it has new WAL).
    pub partial_interval: Duration,
    /// Acknowledge flush after the local fsync instead of after storing.
    pub synchronous: bool,
    /// How often the status object is rewritten (when something changed).
    pub status_interval: Duration,
    /// How long a shutdown waits for the repository to take what the spool
    /// holds (it stays in the spool for the next start otherwise).
    pub drain_timeout: Duration,
}

impl StreamOptions {
    /// Options with the interface's defaults for `slot` and `spool_dir`.
    pub fn new(slot: impl Into<String>, spool_dir: PathBuf) -> StreamOptions {
        StreamOptions {
            slot: slot.into(),
            spool_dir,
            partial_interval: Duration::from_secs(60),
            synchronous: false,
            status_interval: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(60),
        }
    }
}

/// Streams until `shutdown` turns true (then stores the partial segment and
/// returns Ok) or a fatal error ([`StreamError::is_fatal`]); every other
/// failure (lost connection, server restart, repository down, spool full) is
/// retried with backoff and jitter, each attempt logged once.
pub async fn run(
    settings: &Settings,
    opts: &StreamOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), StreamError> {
    crate::pg::replication::check_slot_name(&opts.slot).map_err(|e| StreamError::BadSlot {
        slot: opts.slot.clone(),
        reason: e.to_string(),
    })?;
    let cfg = ConnConfig::parse(&settings.pg)
        .map_err(StreamError::pg("PostgreSQL connection settings"))?;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

    // The repository is bound to the server's cluster before anything is stored.
    let (repo, repo_end) = loop {
        let attempt = async {
            let repo = first_contact(&cfg, settings).await?;
            let end = repo_end(&repo).await?;
            Ok::<_, StreamError>((repo, end))
        };
        match attempt.await {
            Ok(r) => break r,
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, attempt = backoff.attempts(), retry_in = ?delay, "cannot start streaming yet");
                if wait_or_shutdown(delay, &mut shutdown).await {
                    return Ok(());
                }
            }
        }
    };
    backoff.reset();
    let repo = Arc::new(repo);
    let seg_size = repo
        .seg_size()
        .map_err(StreamError::repo("reading the stanza"))?;
    let spool = Spool::open(&opts.spool_dir, seg_size)?;
    let mut streamer = Streamer::new(
        cfg,
        opts.clone(),
        Arc::clone(&repo),
        spool,
        seg_size,
        repo_end,
    )?;

    let task = async move {
        streamer.announce_tail();
        let outcome = loop {
            if *shutdown.borrow() {
                break Ok(());
            }
            match streamer.session(&mut shutdown).await {
                Ok(SessionEnd::Shutdown) => break Ok(()),
                Ok(SessionEnd::TimelineEnded) => backoff.reset(),
                Err(StreamError::UploaderStopped) => break Err(streamer.uploader_error().await),
                Err(e @ StreamError::SlotLost { .. }) => {
                    streamer.drop_recreated_slot().await;
                    break Err(e);
                }
                Err(e) if e.is_fatal() => break Err(e),
                Err(e) => {
                    if streamer.streamed_since_connect {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, attempt = backoff.attempts(), retry_in = ?delay,
                        "streaming interrupted; reconnecting");
                    if wait_or_shutdown(delay, &mut shutdown).await {
                        break Ok(());
                    }
                }
            }
        };
        if outcome.is_ok() {
            streamer.shut_down().await;
        }
        outcome
    };
    // The streamer runs as a task on a worker thread rather than on the
    // thread blocked in `block_on`: there every message woke that thread from
    // a worker (a futex wake and two context switches per message).
    match tokio::spawn(task).await {
        Ok(outcome) => outcome,
        Err(e) => Err(StreamError::Mismatch(format!(
            "the streaming task failed: {e}"
        ))),
    }
}

/// Resolves once shutdown is asked for (without holding the watch's lock
/// guard, which would keep the future from moving between threads).
async fn shutdown_asked(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Sleeps `delay`; true when shutdown was asked for meanwhile.
async fn wait_or_shutdown(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    let asked = tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown_asked(shutdown) => true,
    };
    asked || *shutdown.borrow()
}

/// Connects once to learn the cluster's identity and opens (or creates) the stanza.
async fn first_contact(cfg: &ConnConfig, settings: &Settings) -> Result<Repository, StreamError> {
    let mut conn = ReplicationConnection::connect(cfg)
        .await
        .map_err(StreamError::pg("connecting to PostgreSQL"))?;
    let sys = conn
        .identify_system()
        .await
        .map_err(StreamError::pg("IDENTIFY_SYSTEM"))?;
    let seg_size = conn
        .wal_segment_size()
        .await
        .map_err(StreamError::pg("SHOW wal_segment_size"))?;
    let identity = ClusterIdentity {
        system_id: sys.system_id,
        pg_version: conn.server_version_num(),
        wal_seg_size: seg_size.bytes(),
    };
    let source = format!("the server at {}", conn.target());
    let _ = conn.close().await;
    let (repo, _created) = Repository::open_or_create(settings, identity, &source)
        .await
        .map_err(StreamError::repo("opening the repository"))?;
    // A streamer killed mid-store (kill -9) leaves a temp file in the WAL
    // area; the restart is when to clear those an hour old or more.
    repo.remove_stale_temps("wal").await;
    Ok(repo)
}

/// Where the repository's WAL ends: the newest timeline's last full segment
/// + 1, or a stored `.partial` beyond it (with its content, to continue the
///   segment).
struct RepoEnd {
    /// The timeline.
    pub tli: TimelineId,
    /// The end position.
    pub end: Lsn,
    /// The `.partial`'s content when the end is inside a segment.
    pub partial: Option<Vec<u8>>,
}

async fn repo_end(repo: &Repository) -> Result<Option<RepoEnd>, StreamError> {
    let seg_size = repo
        .seg_size()
        .map_err(StreamError::repo("reading the stanza"))?;
    let catalog = WalCatalog::load(repo)
        .await
        .map_err(StreamError::repo("listing the WAL archive"))?;
    let Some((&tli, files)) = catalog
        .timelines
        .iter()
        .rev()
        .find(|(_, f)| !f.segments.is_empty() || !f.partials.is_empty())
    else {
        return Ok(None);
    };
    let full_end = files
        .segments
        .keys()
        .next_back()
        .map(|&s| Lsn::from_segment(s + 1, seg_size));
    let mut best = full_end.map(|end| RepoEnd {
        tli,
        end,
        partial: None,
    });
    if let Some(&p) = files.partials.keys().next_back() {
        let start = Lsn::from_segment(p, seg_size);
        if full_end.is_none_or(|e| start >= e) {
            let name = WalFileName::Partial { tli, segno: p };
            let data = repo
                .fetch_wal(&name)
                .await
                .map_err(StreamError::repo(format!(
                    "reading {}",
                    name.file_name(seg_size)
                )))?;
            if let Some(data) = data {
                let len = data.len() as u64;
                // A full-size partial (PostgreSQL's own, zero-padded) says
                // nothing about where its WAL ends: re-fetch that segment.
                if len < u64::from(seg_size.bytes()) && len >= MIN_PARTIAL {
                    best = Some(RepoEnd {
                        tli,
                        end: start + len,
                        partial: Some(data),
                    });
                } else if best.is_none() {
                    best = Some(RepoEnd {
                        tli,
                        end: start,
                        partial: None,
                    });
                }
            }
        }
    }
    Ok(best)
}

enum SessionEnd {
    Shutdown,
    TimelineEnded,
}

struct Streamer {
    cfg: ConnConfig,
    opts: StreamOptions,
    repo: Arc<Repository>,
    spool: Spool,
    seg_size: WalSegSize,
    /// The timeline being streamed.
    tli: TimelineId,
    /// End of the WAL received; `None` before the first session decides.
    position: Option<Lsn>,
    current: Option<InProgress>,
    queue: UploadQueue,
    progress: watch::Receiver<Progress>,
    uploader: Option<tokio::task::JoinHandle<Result<(), StreamError>>>,
    server_lsn: Lsn,
    reported_flush: Lsn,
    last_partial: Option<PartialRequest>,
    /// What the uploader was last told of the segment in progress.
    last_tail: Option<Tail>,
    last_partial_at: Option<Instant>,
    caught_up_at: Instant,
    last_status_at: Option<Instant>,
    last_status: Option<StreamStatus>,
    status_task: Option<tokio::task::JoinHandle<()>>,
    histories: BTreeSet<TimelineId>,
    streamed_since_connect: bool,
    /// The slot was recreated by us after it vanished.
    recreated_slot: bool,
    /// Where streaming started with nothing stored before it (first run,
    /// or after a gap): no flush is reported until WAL past it is durable.
    flush_floor: Lsn,
}

impl Streamer {
    /// Picks up where the spool and the repository leave off.
    fn new(
        cfg: ConnConfig,
        opts: StreamOptions,
        repo: Arc<Repository>,
        spool: Spool,
        seg_size: WalSegSize,
        repo_end: Option<RepoEnd>,
    ) -> Result<Streamer, StreamError> {
        let cur = spool.recover_in_progress()?;
        let ready = spool.ready_files()?;
        let ready_end = ready
            .iter()
            .filter_map(|(n, _)| match n {
                WalFileName::Segment { tli, segno } => {
                    Some((*tli, Lsn::from_segment(segno + 1, seg_size)))
                }
                _ => None,
            })
            .max_by_key(|(t, l)| (*l, *t));
        let first_pending = ready
            .iter()
            .filter_map(|(n, _)| n.segment_number())
            .map(|s| Lsn::from_segment(s, seg_size))
            .chain(cur.as_ref().map(|c| Lsn::from_segment(c.segno, seg_size)))
            .min();
        let cur_end = cur.as_ref().map(|c| (c.tli, c.end(seg_size)));
        let repo_pos = repo_end.as_ref().map(|r| (r.tli, r.end));
        let best = [cur_end, ready_end, repo_pos]
            .into_iter()
            .flatten()
            .max_by_key(|(t, l)| (*l, *t));

        let mut current = None;
        let (tli, position) = match best {
            None => (0, None),
            Some(b) if Some(b) == cur_end => {
                current = cur;
                (b.0, Some(b.1))
            }
            Some(b) => {
                if let Some(c) = cur {
                    spool.discard(c)?;
                }
                if Some(b) == repo_pos && Some(b) != ready_end {
                    if let Some(RepoEnd {
                        partial: Some(prefix),
                        ..
                    }) = &repo_end
                    {
                        current =
                            Some(spool.create_with(b.0, b.1.segment_number(seg_size), prefix)?);
                    }
                }
                (b.0, Some(b.1))
            }
        };
        let stored_end = match (repo_end.as_ref().map(|r| r.end), first_pending) {
            // Behind the first pending file there is a gap: count from that file.
            (Some(r), Some(f)) => r.max(f),
            (Some(r), None) => r,
            (None, Some(f)) => f,
            (None, None) => position.unwrap_or(Lsn(0)),
        };
        if let Some(p) = position {
            tracing::info!(timeline = tli, position = %p, stored = %stored_end, "resuming");
        }
        let (queue, progress, handle) = upload::start(
            Arc::clone(&repo),
            spool.dir().to_path_buf(),
            seg_size,
            stored_end,
        );
        Ok(Streamer {
            cfg,
            opts,
            repo,
            spool,
            seg_size,
            tli,
            position,
            current,
            queue,
            progress,
            uploader: Some(handle),
            server_lsn: Lsn(0),
            reported_flush: Lsn(0),
            last_partial: None,
            last_tail: None,
            last_partial_at: None,
            caught_up_at: Instant::now(),
            last_status_at: None,
            last_status: None,
            status_task: None,
            histories: BTreeSet::new(),
            streamed_since_connect: false,
            recreated_slot: false,
            flush_floor: Lsn(0),
        })
    }

    /// A slot we recreated is useless once the WAL it should guard is gone,
    /// and would make the server keep WAL forever: drop it.
    async fn drop_recreated_slot(&self) {
        if !self.recreated_slot {
            return;
        }
        let slot = &self.opts.slot;
        let attempt = async {
            let mut c = ReplicationConnection::connect(&self.cfg).await?;
            // WAIT: the failed walsender may hold it for a moment still.
            c.drop_slot(slot, true).await
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(())) => tracing::info!(slot = %slot, "dropped the slot recreated by this run"),
            Ok(Err(e)) => {
                tracing::warn!(slot = %slot, error = %e, "could not drop the recreated slot")
            }
            Err(_) => tracing::warn!(slot = %slot, "dropping the recreated slot timed out"),
        }
    }

    /// The uploader's fatal error, once it stopped.
    async fn uploader_error(&mut self) -> StreamError {
        match self.uploader.take() {
            Some(h) => match h.await {
                Ok(Err(e)) => e,
                Ok(Ok(())) => StreamError::UploaderStopped,
                Err(e) => StreamError::Mismatch(format!("the uploader task failed: {e}")),
            },
            None => StreamError::UploaderStopped,
        }
    }

    fn check_uploader(&self) -> Result<(), StreamError> {
        match &self.uploader {
            Some(h) if h.is_finished() => Err(StreamError::UploaderStopped),
            _ => Ok(()),
        }
    }

    /// One connection: from connecting to the end of the stream.
    async fn session(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<SessionEnd, StreamError> {
        self.streamed_since_connect = false;
        self.check_uploader()?;
        // A shutdown while connecting (a server that does not answer) must
        // not wait for TCP timeouts; once streaming, the loop handles it.
        let stream = tokio::select! {
            s = self.connect_and_start() => s?,
            _ = shutdown_asked(shutdown) => return Ok(SessionEnd::Shutdown),
        };
        self.stream_loop(stream, shutdown).await
    }

    /// Connects, checks the cluster, the slot and the timeline, and starts
    /// replication where the archive ends.
    async fn connect_and_start(&mut self) -> Result<WalStream, StreamError> {
        let slot_name = self.opts.slot.clone();
        let mut conn = ReplicationConnection::connect(&self.cfg)
            .await
            .map_err(StreamError::pg("connecting to PostgreSQL"))?;
        let sys = conn
            .identify_system()
            .await
            .map_err(StreamError::pg("IDENTIFY_SYSTEM"))?;
        if self.repo.stanza().system_id() != Some(sys.system_id) {
            return Err(StreamError::Mismatch(format!(
                "the server at {} is cluster {}, but stanza `{}` holds cluster {}",
                conn.target(),
                sys.system_id,
                self.repo.stanza().name,
                self.repo.stanza().system_id
            )));
        }

        let mut recreated = false;
        let slot = match slot::read_slot(&mut conn, &self.cfg, &slot_name).await? {
            Some(s) => s,
            None => {
                if let Some(p) = self.position {
                    tracing::warn!(slot = %slot_name, needed = %p,
                        "the replication slot does not exist (dropped?): recreating it; streaming \
                         continues only if the server still has the WAL the repository needs next");
                    recreated = true;
                    self.recreated_slot = true;
                }
                slot::create_slot(&mut conn, &slot_name).await?;
                slot::read_slot(&mut conn, &self.cfg, &slot_name)
                    .await?
                    .ok_or_else(|| StreamError::BadSlot {
                        slot: slot_name.clone(),
                        reason: "vanished right after it was created".into(),
                    })?
            }
        };

        // Where to start.
        let (mut tli, mut pos) = match self.position {
            None => {
                let at = slot.restart_lsn.unwrap_or(sys.xlogpos);
                let start = Lsn::from_segment(at.segment_number(self.seg_size), self.seg_size);
                self.queue.raise_stored_end(start);
                self.flush_floor = start;
                tracing::info!(slot = %slot_name, start = %start, timeline = sys.timeline,
                    "nothing archived yet: streaming from the slot's restart point");
                (slot.restart_tli.unwrap_or(sys.timeline), start)
            }
            Some(p) => (self.tli, p),
        };
        if let (Some(r), false) = (slot.restart_lsn, recreated) {
            if r.segment_number(self.seg_size) > pos.segment_number(self.seg_size) {
                let start = Lsn::from_segment(r.segment_number(self.seg_size), self.seg_size);
                tracing::warn!(slot = %slot_name, from = %pos, to = %start,
                    "the slot is past the end of the repository: the WAL in between is not \
                     streamed (archive it another way, or it is a gap)");
                if let Some(c) = self.current.take() {
                    self.spool.discard(c)?;
                }
                pos = start;
                self.queue.raise_stored_end(start);
                self.flush_floor = start;
            }
        }

        // Which timeline holds `pos` on the server.
        if sys.timeline < tli {
            return Err(StreamError::Retry(format!(
                "the server at {} is on timeline {} but the archive is already on timeline {tli}",
                conn.target(),
                sys.timeline
            )));
        }
        if sys.timeline > tli {
            let (_, content) =
                conn.timeline_history(sys.timeline)
                    .await
                    .map_err(StreamError::pg(format!(
                        "TIMELINE_HISTORY {}",
                        sys.timeline
                    )))?;
            if self.histories.insert(sys.timeline) {
                self.spool
                    .put_ready(&WalFileName::History { tli: sys.timeline }, &content)?;
                self.queue.wake();
                self.announce_tail();
            }
            let text = String::from_utf8_lossy(&content);
            let entries = parse_timeline_history(&text).map_err(|e| {
                StreamError::Mismatch(format!("history of timeline {}: {e}", sys.timeline))
            })?;
            let holder = entries
                .iter()
                .find(|e| pos < e.switch_lsn)
                .map(|e| e.parent_tli)
                .unwrap_or(sys.timeline);
            if holder != tli {
                let Some(ours) = entries.iter().find(|e| e.parent_tli == tli) else {
                    return Err(StreamError::Mismatch(format!(
                        "the archive is on timeline {tli} at {pos}, which is not in the history \
                         of the server's timeline {}",
                        sys.timeline
                    )));
                };
                if holder < tli {
                    return Err(StreamError::Mismatch(format!(
                        "timeline {tli} of the archive ends at {} on the server, before {pos}",
                        ours.switch_lsn
                    )));
                }
                let switch = ours.switch_lsn.min(pos);
                tracing::info!(from = tli, to = holder, switch = %ours.switch_lsn,
                    "timeline switch: storing the old timeline's last segment as .partial");
                if let Some(mut c) = self.current.take() {
                    if c.tli == tli {
                        self.spool.seal(&mut c)?;
                    } else {
                        self.spool.discard(c)?;
                    }
                }
                self.queue.wake();
                self.announce_tail();
                tli = holder;
                pos = Lsn::from_segment(switch.segment_number(self.seg_size), self.seg_size);
            }
        }
        self.tli = tli;
        self.position = Some(pos);
        if self.current.is_none() && pos.segment_offset(self.seg_size) != 0 {
            // Mid-segment without its beginning: fetch the segment from its start.
            pos = Lsn::from_segment(pos.segment_number(self.seg_size), self.seg_size);
            self.position = Some(pos);
        }
        if let Some(c) = &self.current {
            if c.tli != tli {
                return Err(StreamError::Mismatch(format!(
                    "the spooled segment is on timeline {} but streaming continues on {tli}",
                    c.tli
                )));
            }
        }

        let target = conn.target().to_string();
        let mut stream = match conn.start_replication(Some(&slot_name), pos, tli).await {
            Ok(s) => s,
            Err(e) => return Err(self.start_error(e, &slot_name, pos)),
        };
        let gathered = !self.opts.synchronous
            && stream
                .gather_reads(RECEIVE_GATHER)
                .map_err(StreamError::pg("starting the receiving thread"))?;
        tracing::info!(server = %target, slot = %slot_name, start = %pos, timeline = tli,
            synchronous = self.opts.synchronous, gathered, "streaming");
        Ok(stream)
    }

    /// Maps START_REPLICATION's failure to the error the operator needs.
    fn start_error(&self, e: crate::pg::PgError, slot_name: &str, pos: Lsn) -> StreamError {
        let detail = e
            .server()
            .map(|s| s.message.clone())
            .unwrap_or_else(|| e.to_string());
        match e.sqlstate() {
            Some("55006") => StreamError::SlotBusy {
                slot: slot_name.to_string(),
                pid: slot::holder_pid(&detail),
                detail,
            },
            Some("58P01") => StreamError::SlotLost {
                slot: slot_name.to_string(),
                needed: pos,
                detail,
            },
            _ => StreamError::pg(format!("START_REPLICATION at {pos}"))(e),
        }
    }

    async fn stream_loop(
        &mut self,
        mut stream: WalStream,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<SessionEnd, StreamError> {
        // Once a second, so that pg_stat_replication's write position (and a
        // monitor's idea of our lag) follows what arrived, not what is stored.
        stream.set_status_interval(Duration::from_secs(1));
        self.update_positions(&mut stream);
        stream
            .send_status(false)
            .await
            .map_err(StreamError::pg("sending a status update"))?;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let msg = tokio::select! {
                _ = shutdown_asked(shutdown) => {
                    self.sync_current()?;
                    self.update_positions(&mut stream);
                    let _ = stream.send_status(false).await;
                    let _ = tokio::time::timeout(Duration::from_secs(5), stream.finish()).await;
                    return Ok(SessionEnd::Shutdown);
                }
                msg = stream.next_message() => msg,
                _ = self.progress.changed() => {
                    if self.update_positions(&mut stream) {
                        stream.send_status(false).await.map_err(StreamError::pg("sending a status update"))?;
                    }
                    continue;
                }
                _ = tick.tick() => {
                    self.check_uploader()?;
                    self.flush_current()?;
                    self.maybe_partial();
                    self.maybe_status(false);
                    if self.update_positions(&mut stream) {
                        stream.send_status(false).await.map_err(StreamError::pg("sending a status update"))?;
                    }
                    continue;
                }
            };
            let msg = msg.map_err(|e| self.stream_error(e))?;
            match msg {
                StreamMessage::XLogData {
                    start,
                    end_of_wal,
                    data,
                    ..
                } => {
                    self.note_server(end_of_wal);
                    self.receive(start, &data)?;
                    self.streamed_since_connect = true;
                    if self.opts.synchronous {
                        self.sync_current()?;
                        if self.update_positions(&mut stream) {
                            stream
                                .send_status(false)
                                .await
                                .map_err(StreamError::pg("sending a status update"))?;
                        }
                    } else {
                        self.update_positions(&mut stream);
                        // Between scheduled updates, so that the server's (and a
                        // monitor's) idea of what arrived lags by at most this.
                        if stream.unreported_write() >= WRITE_REPORT_BYTES {
                            stream
                                .send_status(false)
                                .await
                                .map_err(StreamError::pg("sending a status update"))?;
                        }
                    }
                }
                StreamMessage::Keepalive { end_of_wal, .. } => self.note_server(end_of_wal),
                StreamMessage::EndOfTimeline => {
                    self.sync_current()?;
                    let (end, conn) = stream
                        .finish()
                        .await
                        .map_err(StreamError::pg("ending the timeline"))?;
                    tracing::info!(timeline = self.tli,
                        next = ?end.next_timeline,
                        switch = ?end.switch_lsn.map(|l| l.to_string()),
                        "the server ended the timeline");
                    let _ = conn.close().await;
                    return Ok(SessionEnd::TimelineEnded);
                }
            }
        }
    }

    fn stream_error(&self, e: crate::pg::PgError) -> StreamError {
        if e.sqlstate() == Some("58P01") {
            let detail = e.server().map(|s| s.message.clone()).unwrap_or_default();
            return StreamError::SlotLost {
                slot: self.opts.slot.clone(),
                needed: self.position.unwrap_or_default(),
                detail,
            };
        }
        StreamError::pg("streaming WAL")(e)
    }

    fn note_server(&mut self, end_of_wal: Lsn) {
        if end_of_wal > self.server_lsn {
            self.server_lsn = end_of_wal;
        }
    }

    /// Appends received WAL to the spool, completing segments as they fill.
    fn receive(&mut self, start: Lsn, data: &[u8]) -> Result<(), StreamError> {
        let Some(mut pos) = self.position else {
            return Err(StreamError::Retry(
                "WAL arrived before a start position".into(),
            ));
        };
        let mut data = data;
        if start < pos {
            let skip = pos.0 - start.0;
            if skip >= data.len() as u64 {
                return Ok(());
            }
            data = &data[skip as usize..];
        } else if start > pos {
            return Err(StreamError::Retry(format!(
                "the server sent WAL from {start} but {pos} was expected next"
            )));
        }
        let seg_bytes = u64::from(self.seg_size.bytes());
        while !data.is_empty() {
            let cur = match self.current.as_mut() {
                Some(c) => c,
                None => {
                    if pos.segment_offset(self.seg_size) != 0 {
                        return Err(StreamError::Retry(format!(
                            "WAL at {pos} is inside a segment whose beginning is not spooled"
                        )));
                    }
                    let c = self
                        .spool
                        .create(self.tli, pos.segment_number(self.seg_size))?;
                    self.current.insert(c)
                }
            };
            let n = (seg_bytes - cur.len()).min(data.len() as u64) as usize;
            if let Err(e) = self.spool.write(cur, &data[..n]) {
                // What was buffered is gone with the failed write.
                self.position = Some(cur.end(self.seg_size));
                return Err(e);
            }
            pos = pos + n as u64;
            self.position = Some(pos);
            data = &data[n..];
            if cur.len() == seg_bytes {
                let began = Instant::now();
                self.spool.complete(cur)?;
                tracing::debug!(
                    segno = cur.segno,
                    took_ms = began.elapsed().as_millis() as u64,
                    "segment complete in the spool"
                );
                self.current = None;
            }
        }
        self.announce_tail();
        Ok(())
    }

    /// Tells the uploader how much of the segment in progress is in the
    /// spool file, in whole [`spool::WRITE_BATCH`] pieces (what it encodes
    /// ahead), and wakes it only when that changed.
    fn announce_tail(&mut self) {
        let tail = self.current.as_ref().map(|c| Tail {
            tli: c.tli,
            segno: c.segno,
            generation: c.generation(),
            len: c.on_disk() - c.on_disk() % spool::WRITE_BATCH,
        });
        if tail != self.last_tail {
            self.last_tail = tail;
            self.queue.set_tail(tail);
        }
    }

    /// Writes what the spool buffers for the segment in progress.
    fn flush_current(&mut self) -> Result<(), StreamError> {
        self.on_current(Spool::flush)
    }

    /// Writes what the spool buffers for the segment in progress and fsyncs it.
    fn sync_current(&mut self) -> Result<(), StreamError> {
        self.on_current(Spool::sync)
    }

    /// Applies `op` to the segment in progress; when it fails, what the spool
    /// had buffered is gone, so the position falls back to what the file holds.
    fn on_current(
        &mut self,
        op: fn(&Spool, &mut InProgress) -> Result<(), StreamError>,
    ) -> Result<(), StreamError> {
        if let Some(c) = self.current.as_mut() {
            if let Err(e) = op(&self.spool, c) {
                self.position = Some(c.end(self.seg_size));
                return Err(e);
            }
        }
        self.announce_tail();
        Ok(())
    }

    /// Sets the positions reported to the server; true when flush moved.
    fn update_positions(&mut self, stream: &mut WalStream) -> bool {
        let received = self.position.unwrap_or_default();
        // Written: in the spool file (a buffered tail is not).
        let write = match &self.current {
            Some(c) => Lsn::from_segment(c.segno, self.seg_size) + c.on_disk(),
            None => received,
        };
        let stored = self.progress.borrow().stored_end.min(write);
        let flush = if self.opts.synchronous {
            let synced = match &self.current {
                Some(c) => Lsn::from_segment(c.segno, self.seg_size) + c.synced(),
                None => write,
            };
            synced.max(stored)
        } else {
            stored
        };
        if stored >= self.server_lsn {
            self.caught_up_at = Instant::now();
        }
        // Streaming started at `flush_floor` with nothing stored before it:
        // report no flush (the server ignores 0/0) until WAL past it is durable.
        let flush = if flush <= self.flush_floor {
            Lsn(0)
        } else {
            flush
        };
        // walship applies nothing: apply stays invalid, as with pg_receivewal.
        stream.set_positions(write, flush, Lsn(0));
        let moved = flush > self.reported_flush;
        self.reported_flush = flush;
        moved
    }

    /// Asks for a `.partial` of the segment in progress when it has new WAL
    /// and the interval has passed.
    fn maybe_partial(&mut self) {
        // The request is served from the spool file: what it names must be there.
        if let Err(e) = self.flush_current() {
            tracing::debug!(error = %e, "cannot write the spool");
            return;
        }
        let Some(c) = &self.current else {
            return;
        };
        if c.len() < MIN_PARTIAL {
            return;
        }
        if self
            .last_partial_at
            .is_some_and(|t| t.elapsed() < self.opts.partial_interval)
        {
            return;
        }
        let req = PartialRequest {
            tli: c.tli,
            segno: c.segno,
            len: c.len(),
        };
        if self.last_partial == Some(req) {
            return;
        }
        self.queue.request_partial(req);
        self.last_partial = Some(req);
        self.last_partial_at = Some(Instant::now());
    }

    fn status(&self, state: &str) -> StreamStatus {
        let p = self.progress.borrow().clone();
        let received = self.position.unwrap_or_default();
        let stored = p.stored_end;
        let server = self.server_lsn.max(received);
        let lag_bytes = server.0.saturating_sub(stored.0);
        StreamStatus {
            state: state.to_string(),
            slot: self.opts.slot.clone(),
            synchronous: self.opts.synchronous,
            timeline: self.tli,
            received_lsn: received,
            stored_lsn: stored,
            server_lsn: server,
            lag_bytes,
            lag_seconds: if lag_bytes == 0 {
                0.0
            } else {
                self.caught_up_at.elapsed().as_secs_f64()
            },
            last_stored_at: p.last_stored_at,
            last_stored_object: p.last_object,
            updated_at: now_rfc3339(),
        }
    }

    /// Writes the status object when due and changed (in the background: a
    /// slow repository must not hold up the stream).
    fn maybe_status(&mut self, force: bool) {
        if !force
            && self
                .last_status_at
                .is_some_and(|t| t.elapsed() < self.opts.status_interval)
        {
            return;
        }
        if self.status_task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let status = self.status("running");
        let unchanged = self.last_status.as_ref().is_some_and(|s| {
            s.received_lsn == status.received_lsn
                && s.stored_lsn == status.stored_lsn
                && s.server_lsn == status.server_lsn
        });
        if unchanged && !force {
            return;
        }
        self.last_status_at = Some(Instant::now());
        self.last_status = Some(status.clone());
        let repo = Arc::clone(&self.repo);
        self.status_task = Some(tokio::spawn(async move {
            if let Err(e) = status::write_status(&repo, &status).await {
                tracing::debug!(error = %e, "could not store the stream status");
            }
        }));
    }

    /// Clean stop: the segment in progress goes to the repository as a
    /// `.partial`, the uploader drains the spool (bounded), the status says
    /// `stopped`.
    async fn shut_down(&mut self) {
        if let Err(e) = self.sync_current() {
            tracing::warn!(error = %e, "could not fsync the spool at shutdown");
        }
        if let Some(c) = &self.current {
            if c.len() >= MIN_PARTIAL {
                self.queue.request_partial(PartialRequest {
                    tli: c.tli,
                    segno: c.segno,
                    len: c.len(),
                });
            }
        }
        self.queue.drain();
        if let Some(h) = self.uploader.take() {
            match tokio::time::timeout(self.opts.drain_timeout, h).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::error!(error = %e, "the uploader stopped"),
                Ok(Err(e)) => tracing::error!(error = %e, "the uploader task failed"),
                Err(_) => tracing::warn!(
                    spool = %self.spool.dir().display(),
                    "the repository did not take everything in time: the rest stays in the \
                     spool for the next start"
                ),
            }
        }
        if let Some(t) = self.status_task.take() {
            let _ = t.await;
        }
        let status = self.status("stopped");
        let repo = Arc::clone(&self.repo);
        let last = status.clone();
        let write = tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(10), status::write_status(&repo, &last)).await
        });
        match write.await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "could not store the final stream status")
            }
            Ok(Err(_)) => tracing::warn!("storing the final stream status timed out"),
            Err(e) => tracing::warn!(error = %e, "storing the final stream status failed"),
        }
        tracing::info!(received = %status.received_lsn, stored = %status.stored_lsn, "stopped");
    }
}
