//! The chunk writer: hashes, deduplicates, encodes and stores chunks with a
//! bounded number of tasks in flight, and packs every new chunk into a bundle.
//!
//! Why bundles for every chunk, not one object per chunk: a compressed
//! 256 KiB chunk is typically 20-40 KB, and an object per chunk costs a file
//! creation, an fsync and a directory fsync (fs) or a PUT (S3) each; those
//! per-object costs, not the data, dominated a backup. A ~4 MiB bundle costs
//! them once per ~150 chunks, and a chunk is still read back with one ranged
//! read. Chunk objects (`chunks/`) written by earlier versions stay readable
//! and are still found by deduplication.
//!
//! A chunk is one blocking task from start to end (hash, look up, encode,
//! append to the open bundle): on 2 cores shared with PostgreSQL's walsender,
//! every extra thread hand-off per chunk (wake-ups, context switches) costs
//! CPU the walsender needs.
//!
//! Memory bound: at most `in_flight` chunk tasks exist, each holding one
//! chunk's plaintext and its encoded form (2 x 256 KiB at most), plus the
//! open bundle, one full bundle waiting for the uploader and at most
//! [`BUNDLE_UPLOADS`] bundles being uploaded (about 4 MiB each). The set of
//! known chunk ids grows with the repository (about 150 bytes per chunk), not
//! with the stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::BackupError;
use crate::repo::backup::{ChunkLocation, ChunkRef};
use crate::repo::chunks::{
    BundleEntry, BundleIndex, ChunkHasher, ChunkSet, KnownChunk, BUNDLE_INDEX_FORMAT, BUNDLE_TARGET,
};
use crate::repo::Repository;

/// Bundles uploading at the same time.
pub const BUNDLE_UPLOADS: usize = 2;

/// One chunk, stored or found.
#[derive(Debug, Clone)]
pub struct ChunkDone {
    /// Index of the file in the manifest.
    pub file: usize,
    /// Position of the chunk in the file.
    pub index: usize,
    /// The reference to put in the manifest.
    pub chunk: ChunkRef,
    /// Its stored length.
    pub stored_len: u64,
    /// Whether this backup stored it (false: already in the repository, or
    /// stored by another chunk of this backup with the same content).
    pub new: bool,
}

enum Slot {
    Known(KnownChunk),
    /// Being encoded by another task; the value appears when it is placed.
    Pending(watch::Receiver<Option<KnownChunk>>),
}

struct Ctx {
    repo: Arc<Repository>,
    hasher: ChunkHasher,
    known: Mutex<HashMap<String, Slot>>,
    /// The bundle being filled; `None` until the first new chunk.
    open: Mutex<Option<OpenBundle>>,
    /// Full bundles to the uploader (capacity 1: a chunk task that fills a
    /// bundle waits while the uploader is behind, which bounds memory).
    full_tx: mpsc::Sender<OpenBundle>,
    /// To block on a duplicate's pending store from a blocking thread.
    runtime: tokio::runtime::Handle,
}

/// The deduplicating, parallel chunk writer.
pub struct ChunkWriter {
    ctx: Arc<Ctx>,
    tasks: JoinSet<Result<ChunkDone, BackupError>>,
    in_flight: usize,
    uploader: tokio::task::JoinHandle<Result<usize, BackupError>>,
    /// When the writer was made, and how long `submit` waited for a free
    /// task slot since: tells a slow server from a slow pipeline (debug log).
    started: Instant,
    waited: Duration,
}

impl ChunkWriter {
    /// A writer for `repo` that knows the chunks in `known`.
    pub fn new(repo: Arc<Repository>, known: ChunkSet, in_flight: usize) -> ChunkWriter {
        let (full_tx, full_rx) = mpsc::channel(1);
        let uploader = tokio::spawn(run_uploader(Arc::clone(&repo), full_rx));
        let map = known
            .chunks
            .into_iter()
            .map(|(id, k)| (id, Slot::Known(k)))
            .collect();
        ChunkWriter {
            ctx: Arc::new(Ctx {
                hasher: ChunkHasher::new(repo.codec()),
                repo,
                known: Mutex::new(map),
                open: Mutex::new(None),
                full_tx,
                runtime: tokio::runtime::Handle::current(),
            }),
            tasks: JoinSet::new(),
            in_flight: in_flight.max(1),
            uploader,
            started: Instant::now(),
            waited: Duration::ZERO,
        }
    }

    /// Queues one chunk; waits while `in_flight` tasks are running and
    /// returns the chunks finished meanwhile. Fails with the first task error.
    pub async fn submit(
        &mut self,
        file: usize,
        index: usize,
        data: Bytes,
    ) -> Result<Vec<ChunkDone>, BackupError> {
        let mut done = Vec::new();
        while let Some(joined) = self.tasks.try_join_next() {
            done.push(self.flatten(joined).await?);
        }
        if self.tasks.len() >= self.in_flight {
            let t = Instant::now();
            while self.tasks.len() >= self.in_flight {
                match self.tasks.join_next().await {
                    Some(joined) => done.push(self.flatten(joined).await?),
                    None => break,
                }
            }
            self.waited += t.elapsed();
        }
        let ctx = Arc::clone(&self.ctx);
        self.tasks
            .spawn_blocking(move || process(&ctx, file, index, &data));
        Ok(done)
    }

    /// Waits for every chunk and stores the last bundle; returns the chunks
    /// finished since the last `submit` and the number of bundles written.
    pub async fn finish(mut self) -> Result<(Vec<ChunkDone>, usize), BackupError> {
        let mut done = Vec::new();
        while let Some(joined) = self.tasks.join_next().await {
            done.push(self.flatten(joined).await?);
        }
        tracing::debug!(
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            waited_for_tasks_ms = self.waited.as_millis() as u64,
            "chunk writer: time the stream waited for chunk tasks"
        );
        let last = self
            .ctx
            .open
            .lock()
            .map_err(|_| BackupError::Internal("open bundle lock poisoned".into()))?
            .take();
        if let Some(b) = last {
            if self.ctx.full_tx.send(b).await.is_err() {
                return Err(self.uploader_error().await);
            }
        }
        // Dropping the last sender tells the uploader to finish and stop.
        drop(self.ctx);
        let bundles = self
            .uploader
            .await
            .map_err(|e| BackupError::Internal(format!("bundle uploader failed: {e}")))??;
        Ok((done, bundles))
    }

    /// A chunk task's result; when the uploader is gone, its error (the cause).
    async fn flatten(
        &mut self,
        joined: Result<Result<ChunkDone, BackupError>, tokio::task::JoinError>,
    ) -> Result<ChunkDone, BackupError> {
        match joined {
            Ok(Err(BackupError::Internal(m))) if m == UPLOADER_GONE => {
                Err(self.uploader_error().await)
            }
            Ok(r) => r,
            Err(e) => Err(BackupError::Internal(format!("chunk task failed: {e}"))),
        }
    }

    /// Why the uploader stopped early.
    async fn uploader_error(&mut self) -> BackupError {
        match (&mut self.uploader).await {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => BackupError::Internal(UPLOADER_GONE.into()),
            Err(e) => BackupError::Internal(format!("bundle uploader failed: {e}")),
        }
    }
}

const UPLOADER_GONE: &str = "the bundle uploader stopped early";

/// Where a chunk's hash led.
enum Lookup {
    /// Already stored (in the repository, or placed by another task).
    Found(KnownChunk),
    /// Another task of this backup is placing the same content.
    Wait(watch::Receiver<Option<KnownChunk>>),
    /// New: this task places it and tells waiters through this sender.
    Mine(watch::Sender<Option<KnownChunk>>),
}

/// One chunk, start to end, on a blocking thread: hash, look up, and when
/// new, encode and append to the open bundle.
fn process(ctx: &Ctx, file: usize, index: usize, data: &[u8]) -> Result<ChunkDone, BackupError> {
    let len = u32::try_from(data.len())
        .map_err(|_| BackupError::Internal(format!("chunk of {} bytes", data.len())))?;
    let checksum = ctx.hasher.checksum(data);
    let id = checksum.to_string();
    let lookup = {
        let mut map = ctx
            .known
            .lock()
            .map_err(|_| BackupError::Internal("chunk set lock poisoned".into()))?;
        match map.get(&id) {
            Some(Slot::Known(k)) => Lookup::Found(k.clone()),
            Some(Slot::Pending(rx)) => Lookup::Wait(rx.clone()),
            None => {
                let (tx, rx) = watch::channel(None);
                map.insert(id.clone(), Slot::Pending(rx));
                Lookup::Mine(tx)
            }
        }
    };
    let (known, new) = match lookup {
        Lookup::Found(k) => (k, false),
        Lookup::Wait(mut rx) => {
            // Rare (the same content twice at once) and short (one encode).
            let k = ctx
                .runtime
                .block_on(rx.wait_for(|v| v.is_some()))
                .ok()
                .and_then(|v| v.clone())
                .ok_or_else(|| {
                    BackupError::Internal(format!(
                        "chunk {id}: the task storing the same content failed"
                    ))
                })?;
            (k, false)
        }
        Lookup::Mine(tx) => {
            // An error from here on drops `tx`: tasks waiting for this id fail too.
            let encoded = ctx.repo.encode_chunk(&checksum, data)?;
            let k = place(ctx, &id, len, &encoded)?;
            if let Ok(mut map) = ctx.known.lock() {
                map.insert(id.clone(), Slot::Known(k.clone()));
            }
            let _ = tx.send(Some(k.clone()));
            (k, true)
        }
    };
    Ok(ChunkDone {
        file,
        index,
        stored_len: known.stored_len,
        chunk: ChunkRef {
            id,
            len,
            at: known.at,
        },
        new,
    })
}

/// Appends an encoded chunk to the open bundle (every new chunk goes into a
/// bundle, whatever its size: one object and one fsync per ~4 MiB instead of
/// per chunk) and hands the bundle to the uploader once it is full. The
/// location is final at once; the backup's manifest is written only after
/// the uploader has stored every bundle.
fn place(ctx: &Ctx, id: &str, len: u32, encoded: &[u8]) -> Result<KnownChunk, BackupError> {
    let stored_len = encoded.len() as u64;
    let (at, full) = {
        let mut open = ctx
            .open
            .lock()
            .map_err(|_| BackupError::Internal("open bundle lock poisoned".into()))?;
        let b = open.get_or_insert_with(|| OpenBundle {
            id: new_bundle_id(),
            data: BytesMut::with_capacity(BUNDLE_TARGET + (256 << 10)),
            entries: Vec::new(),
        });
        let offset = b.data.len() as u64;
        b.data.extend_from_slice(encoded);
        b.entries.push(BundleEntry {
            id: id.to_string(),
            len,
            offset,
            stored_len,
        });
        let at = ChunkLocation::Bundle {
            bundle: b.id.clone(),
            offset,
            stored_len,
        };
        let full = if b.data.len() >= BUNDLE_TARGET {
            open.take()
        } else {
            None
        };
        (at, full)
    };
    if let Some(b) = full {
        // Outside the lock: other tasks keep filling the next bundle.
        ctx.full_tx
            .blocking_send(b)
            .map_err(|_| BackupError::Internal(UPLOADER_GONE.into()))?;
    }
    Ok(KnownChunk { at, stored_len })
}

struct OpenBundle {
    id: String,
    data: BytesMut,
    entries: Vec<BundleEntry>,
}

fn new_bundle_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Stores full bundles, at most [`BUNDLE_UPLOADS`] at a time, until every
/// sender is gone; returns how many it stored. Stops at the first failure
/// (the chunk tasks then fail to hand over bundles and report this error).
async fn run_uploader(
    repo: Arc<Repository>,
    mut rx: mpsc::Receiver<OpenBundle>,
) -> Result<usize, BackupError> {
    let mut uploads: JoinSet<Result<(), BackupError>> = JoinSet::new();
    let mut written = 0usize;
    let join = |r: Result<Result<(), BackupError>, tokio::task::JoinError>| {
        r.map_err(|e| BackupError::Internal(format!("bundle upload task failed: {e}")))?
    };
    while let Some(b) = rx.recv().await {
        while uploads.len() >= BUNDLE_UPLOADS {
            if let Some(r) = uploads.join_next().await {
                join(r)?;
            }
        }
        written += 1;
        uploads.spawn(upload(Arc::clone(&repo), b));
    }
    while let Some(r) = uploads.join_next().await {
        join(r)?;
    }
    Ok(written)
}

async fn upload(repo: Arc<Repository>, b: OpenBundle) -> Result<(), BackupError> {
    let index = BundleIndex {
        format: BUNDLE_INDEX_FORMAT,
        bundle: b.id,
        chunks: b.entries,
    };
    repo.store_bundle(b.data.freeze(), &index).await?;
    Ok(())
}
