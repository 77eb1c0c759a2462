//! The uploader: moves what the spool holds into the repository, in order,
//! and says how far the repository reaches (the flush position reported to
//! PostgreSQL without `--synchronous`).
//!
//! When nothing waits in the spool it encodes the segment in progress as it
//! arrives ([`Follower`]), so that a completed segment needs only its last
//! chunk, the commit and the index entry.
//!
//! It runs beside the receiver so that a slow or unreachable repository
//! never stops the stream: WAL waits in the spool (and, since the flush
//! position does not move, in the slot) until the repository is back.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::backoff::Backoff;
use super::follow::{push_from_spool, Follower, Tail};
use super::spool::{read_prefix, Spool};
use super::status::now_rfc3339;
use super::StreamError;
use crate::pg::wal::segment::{TimelineId, WalFileName, WalSegSize};
use crate::pg::wal::Lsn;
use crate::repo::wal::PushOutcome;
use crate::repo::Repository;

/// How far the repository reaches, as the uploader last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// End of the contiguous WAL stored in the repository.
    pub stored_end: Lsn,
    /// When the last object was stored (RFC 3339 UTC).
    pub last_stored_at: Option<String>,
    /// The last WAL file stored.
    pub last_object: Option<String>,
    /// Whether the last attempt failed (the repository is unreachable ...).
    pub failing: bool,
}

/// A request to store the segment in progress as a `.partial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialRequest {
    /// The segment's timeline.
    pub tli: TimelineId,
    /// The segment number.
    pub segno: u64,
    /// Bytes of it to store (from its start).
    pub len: u64,
}

/// The receiver's handle on the uploader.
#[derive(Debug, Clone)]
pub struct UploadQueue {
    notify: Arc<Notify>,
    partial: Arc<Mutex<Option<PartialRequest>>>,
    tail: Arc<Mutex<Option<Tail>>>,
    draining: Arc<std::sync::atomic::AtomicBool>,
    progress: Arc<watch::Sender<Progress>>,
}

impl UploadQueue {
    /// Moves the stored end forward to `lsn` (where streaming starts when the
    /// repository holds nothing before it: the first run, or after a gap).
    pub fn raise_stored_end(&self, lsn: Lsn) {
        self.progress.send_modify(|p| {
            if lsn > p.stored_end {
                p.stored_end = lsn;
            }
        });
    }

    /// Something new is in the spool.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Store this prefix of the segment in progress as a `.partial` (replaces
    /// an earlier request not yet served).
    pub fn request_partial(&self, req: PartialRequest) {
        if let Ok(mut p) = self.partial.lock() {
            *p = Some(req);
        }
        self.notify.notify_one();
    }

    /// The segment in progress and how much of it is in the spool file
    /// (`None`: none), for the uploader to encode it as it arrives.
    pub fn set_tail(&self, tail: Option<Tail>) {
        if let Ok(mut t) = self.tail.lock() {
            *t = tail;
        }
        self.notify.notify_one();
    }

    /// Upload what is left, then stop.
    pub fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_one();
    }
}

/// Starts the uploader task; `stored_end` is where the repository's
/// contiguous WAL ends now.
pub fn start(
    repo: Arc<Repository>,
    spool_dir: PathBuf,
    seg_size: WalSegSize,
    stored_end: Lsn,
) -> (
    UploadQueue,
    watch::Receiver<Progress>,
    tokio::task::JoinHandle<Result<(), StreamError>>,
) {
    let (tx, rx) = watch::channel(Progress {
        stored_end,
        ..Progress::default()
    });
    let queue = UploadQueue {
        notify: Arc::new(Notify::new()),
        partial: Arc::new(Mutex::new(None)),
        tail: Arc::new(Mutex::new(None)),
        draining: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        progress: Arc::new(tx),
    };
    let q = queue.clone();
    let handle = tokio::spawn(async move {
        Uploader {
            repo,
            spool_dir,
            seg_size,
            queue: q,
            follower: None,
            gave_up: None,
        }
        .run()
        .await
    });
    (queue, rx, handle)
}

struct Uploader {
    repo: Arc<Repository>,
    spool_dir: PathBuf,
    seg_size: WalSegSize,
    queue: UploadQueue,
    /// The segment in progress, being encoded and stored as it arrives.
    follower: Option<Follower>,
    /// The spool file the follower failed on: not followed again.
    gave_up: Option<u64>,
}

impl Uploader {
    async fn run(mut self) -> Result<(), StreamError> {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(15));
        loop {
            let draining = self
                .queue
                .draining
                .load(std::sync::atomic::Ordering::SeqCst);
            match self.step().await {
                Ok(true) => {
                    backoff.reset();
                    continue;
                }
                Ok(false) if draining => {
                    if let Some(f) = self.follower.take() {
                        f.abort().await;
                    }
                    return Ok(());
                }
                Ok(false) => {
                    backoff.reset();
                    // Rescan now and then even without a wake-up.
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), self.queue.notify.notified())
                            .await;
                }
                Err(e) if e.is_fatal() => {
                    tracing::error!(error = %e, "cannot store WAL in the repository");
                    return Err(e);
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, attempt = backoff.attempts(), retry_in = ?delay,
                        "storing WAL failed; it stays in the spool");
                    self.queue.progress.send_modify(|p| p.failing = true);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Uploads one thing; Ok(false) when there was nothing to do.
    async fn step(&mut self) -> Result<bool, StreamError> {
        // Finished files first, oldest first: a partial is only useful after them.
        let spool_files = list_ready(&self.spool_dir, self.seg_size)?;
        let backlog = spool_files.len();
        if let Some((name, path)) = spool_files.into_iter().next() {
            let began = std::time::Instant::now();
            let followed = self.follower.as_ref().map(|f| WalFileName::Segment {
                tli: f.tail.tli,
                segno: f.tail.segno,
            });
            if followed.as_ref() == Some(&name) {
                if let Some(f) = self.follower.take() {
                    self.finish_follower(f, &name).await?;
                    tracing::debug!(file = %name.file_name(self.seg_size),
                        took_ms = began.elapsed().as_millis() as u64,
                        "segment complete -> stored (encoded while it arrived)");
                }
            } else {
                if followed.is_some_and(|f| f.segment_number() == name.segment_number()) {
                    // Its segment ended early (a timeline switch): it is a
                    // `.partial` now, stored as such.
                    if let Some(f) = self.follower.take() {
                        f.abort().await;
                    }
                }
                let len = std::fs::metadata(&path)
                    .map_err(|e| StreamError::Spool {
                        path: path.clone(),
                        what: "cannot stat".into(),
                        source: e,
                    })?
                    .len();
                self.store_file(&name, &path, len).await?;
                tracing::debug!(file = %name.file_name(self.seg_size),
                    took_ms = began.elapsed().as_millis() as u64,
                    "stored from the spool");
            }
            std::fs::remove_file(&path).map_err(|e| StreamError::Spool {
                path: path.clone(),
                what: "cannot remove an uploaded file".into(),
                source: e,
            })?;
            return Ok(true);
        }
        let draining = self
            .queue
            .draining
            .load(std::sync::atomic::Ordering::SeqCst);
        if backlog == 0 && !draining && self.follow().await? {
            return Ok(true);
        }
        let req = self.queue.partial.lock().ok().and_then(|mut p| p.take());
        let Some(req) = req else {
            return Ok(false);
        };
        let name = WalFileName::Partial {
            tli: req.tli,
            segno: req.segno,
        };
        let in_progress = self.spool_dir.join(format!(
            "{}.inprogress",
            crate::pg::wal::segment::segment_file_name(req.tli, req.segno, self.seg_size)
        ));
        // Completed meanwhile (the full segment supersedes the partial), or
        // cut back (a failed write): nothing to store.
        match std::fs::metadata(&in_progress) {
            Ok(m) if m.len() >= req.len => {}
            _ => return Ok(true),
        }
        if let Err(e) = self.store_file(&name, &in_progress, req.len).await {
            // Put it back for the retry unless a newer one came.
            if let Ok(mut p) = self.queue.partial.lock() {
                p.get_or_insert(req);
            }
            return Err(e);
        }
        Ok(true)
    }

    /// Keeps the follower up with the segment in progress: starts it once
    /// the segment has a chunk in the spool, feeds it what arrived, drops it
    /// when its segment was dropped. A failure only drops the follower: the
    /// completed segment is then pushed from the spool file.
    async fn follow(&mut self) -> Result<bool, StreamError> {
        let tail = self.queue.tail.lock().ok().and_then(|t| *t);
        if let Some(f) = &self.follower {
            if tail.is_none_or(|t| t.generation != f.tail.generation) {
                // Not in progress any more: either complete (its `.ready`
                // shows up on the next scan, or already did) or dropped.
                let ready = self.spool_dir.join(format!(
                    "{}.ready",
                    crate::pg::wal::segment::segment_file_name(
                        f.tail.tli,
                        f.tail.segno,
                        self.seg_size
                    )
                ));
                if !ready.exists() {
                    if let Some(f) = self.follower.take() {
                        f.abort().await;
                    }
                }
                return Ok(false);
            }
        }
        let Some(tail) = tail else {
            return Ok(false);
        };
        if self.gave_up == Some(tail.generation) {
            return Ok(false);
        }
        let result = match self.follower.as_mut() {
            Some(f) => {
                let before = f.fed();
                f.feed(tail.len).await.map(|()| f.fed() > before)
            }
            None => {
                let path = self.spool_dir.join(format!(
                    "{}.inprogress",
                    crate::pg::wal::segment::segment_file_name(tail.tli, tail.segno, self.seg_size)
                ));
                match Follower::start(&self.repo, self.seg_size, tail, path).await {
                    Ok(Some(f)) => {
                        self.follower = Some(f);
                        Ok(true)
                    }
                    Ok(None) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(progress) => Ok(progress),
            Err(e) => {
                tracing::debug!(error = %e, "cannot encode the segment in progress; it will be pushed once complete");
                self.gave_up = Some(tail.generation);
                if let Some(f) = self.follower.take() {
                    f.abort().await;
                }
                Ok(false)
            }
        }
    }

    /// The followed segment is complete: commits its object, moves the
    /// stored end (the WAL is in the repository now), then writes the index
    /// entry (about a third of the time from completion to here was the
    /// scan of its records).
    async fn finish_follower(
        &mut self,
        f: Follower,
        name: &WalFileName,
    ) -> Result<(), StreamError> {
        let (outcome, index) = f.finish(&self.repo).await?;
        self.stored(name, outcome, u64::from(self.seg_size.bytes()));
        if let Some(index) = index {
            index.write(&self.repo).await?;
        }
        Ok(())
    }

    /// Stores the first `len` bytes of a spool file: a segment or partial a
    /// chunk at a time (`push_wal` reading it whole when its first page fails
    /// the check, to report why), anything else (a history file) whole.
    async fn store_file(
        &self,
        name: &WalFileName,
        path: &std::path::Path,
        len: u64,
    ) -> Result<(), StreamError> {
        if matches!(
            name,
            WalFileName::Segment { .. } | WalFileName::Partial { .. }
        ) {
            if let Some(outcome) =
                push_from_spool(&self.repo, self.seg_size, name.clone(), path, len).await?
            {
                self.stored(name, outcome, len);
                return Ok(());
            }
        }
        let data = read_prefix(path, len)?.unwrap_or_default();
        self.store(name, data, &path.display().to_string()).await
    }

    async fn store(
        &self,
        name: &WalFileName,
        data: Vec<u8>,
        origin: &str,
    ) -> Result<(), StreamError> {
        let len = data.len();
        let file = name.file_name(self.seg_size);
        let outcome = self
            .repo
            .push_wal(name, bytes::Bytes::from(data), origin)
            .await
            .map_err(StreamError::repo(format!("storing {file}")))?;
        self.stored(name, outcome, len as u64);
        Ok(())
    }

    /// Records a stored WAL file in the progress.
    fn stored(&self, name: &WalFileName, outcome: PushOutcome, len: u64) {
        let file = name.file_name(self.seg_size);
        if outcome == PushOutcome::Duplicate {
            tracing::debug!(file = %file, "already stored with identical content");
        } else {
            tracing::debug!(file = %file, bytes = len, "stored");
        }
        let end = match name {
            WalFileName::Segment { segno, .. } => Some((
                Lsn::from_segment(*segno, self.seg_size),
                Lsn::from_segment(*segno + 1, self.seg_size),
            )),
            WalFileName::Partial { segno, .. } => {
                let start = Lsn::from_segment(*segno, self.seg_size);
                Some((start, start + len))
            }
            _ => None,
        };
        self.queue.progress.send_modify(|p| {
            if let Some((start, end)) = end {
                // Only contiguous WAL moves the stored end.
                if p.stored_end >= start && end > p.stored_end {
                    p.stored_end = end;
                }
            }
            p.last_stored_at = Some(now_rfc3339());
            p.last_object = Some(file.clone());
            p.failing = false;
        });
    }
}

fn list_ready(
    dir: &std::path::Path,
    seg_size: WalSegSize,
) -> Result<Vec<(WalFileName, PathBuf)>, StreamError> {
    Spool::list_ready_in(dir, seg_size)
}
