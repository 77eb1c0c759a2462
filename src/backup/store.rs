//! The chunk writer: hashes, deduplicates, encodes and stores chunks with a
//! bounded number of tasks in flight, and packs small chunks into bundles.
//!
//! Memory bound: at most `in_flight` chunk tasks exist, each holding one
//! chunk's plaintext and its encoded form (2 x 256 KiB at most), plus the
//! bundler's open bundle and at most [`BUNDLE_UPLOADS`] bundles being
//! uploaded (4 MiB each), plus [`BUNDLE_QUEUE`] small encoded chunks queued
//! for the bundler. The set of known chunk ids grows with the repository
//! (about 150 bytes per chunk), not with the stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::BackupError;
use crate::repo::backup::{ChunkLocation, ChunkRef};
use crate::repo::chunks::{
    BundleEntry, BundleIndex, ChunkHasher, ChunkSet, KnownChunk, BUNDLE_CHUNK_MAX,
    BUNDLE_INDEX_FORMAT, BUNDLE_TARGET,
};
use crate::repo::Repository;

/// Bundles uploading at the same time.
pub const BUNDLE_UPLOADS: usize = 2;
/// Small chunks queued for the bundler.
pub const BUNDLE_QUEUE: usize = 32;

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
    /// Being stored by another task; the value appears when it is.
    Pending(watch::Receiver<Option<KnownChunk>>),
}

struct Ctx {
    repo: Arc<Repository>,
    hasher: ChunkHasher,
    known: Mutex<HashMap<String, Slot>>,
    bundle_tx: mpsc::Sender<BundleReq>,
}

struct BundleReq {
    id: String,
    len: u32,
    encoded: Vec<u8>,
    reply: oneshot::Sender<ChunkLocation>,
}

/// The deduplicating, parallel chunk writer.
pub struct ChunkWriter {
    ctx: Arc<Ctx>,
    tasks: JoinSet<Result<ChunkDone, BackupError>>,
    in_flight: usize,
    bundler: tokio::task::JoinHandle<Result<usize, BackupError>>,
}

impl ChunkWriter {
    /// A writer for `repo` that knows the chunks in `known`.
    pub fn new(repo: Arc<Repository>, known: ChunkSet, in_flight: usize) -> ChunkWriter {
        let (bundle_tx, bundle_rx) = mpsc::channel(BUNDLE_QUEUE);
        let bundler = tokio::spawn(run_bundler(Arc::clone(&repo), bundle_rx));
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
                bundle_tx,
            }),
            tasks: JoinSet::new(),
            in_flight: in_flight.max(1),
            bundler,
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
            done.push(flatten(joined)?);
        }
        while self.tasks.len() >= self.in_flight {
            match self.tasks.join_next().await {
                Some(joined) => done.push(flatten(joined)?),
                None => break,
            }
        }
        let ctx = Arc::clone(&self.ctx);
        self.tasks
            .spawn(async move { process(ctx, file, index, data).await });
        Ok(done)
    }

    /// Waits for every chunk and closes the last bundle; returns the chunks
    /// finished since the last `submit` and the number of bundles written.
    pub async fn finish(mut self) -> Result<(Vec<ChunkDone>, usize), BackupError> {
        let mut done = Vec::new();
        while let Some(joined) = self.tasks.join_next().await {
            done.push(flatten(joined)?);
        }
        // Dropping the last sender tells the bundler to flush and stop.
        drop(self.ctx);
        let bundles = self
            .bundler
            .await
            .map_err(|e| BackupError::Internal(format!("bundler task failed: {e}")))??;
        Ok((done, bundles))
    }
}

fn flatten(
    joined: Result<Result<ChunkDone, BackupError>, tokio::task::JoinError>,
) -> Result<ChunkDone, BackupError> {
    joined.map_err(|e| BackupError::Internal(format!("chunk task failed: {e}")))?
}

enum Decision {
    Found(KnownChunk),
    Wait(watch::Receiver<Option<KnownChunk>>),
    Mine(watch::Sender<Option<KnownChunk>>),
}

async fn process(
    ctx: Arc<Ctx>,
    file: usize,
    index: usize,
    data: Bytes,
) -> Result<ChunkDone, BackupError> {
    let len = u32::try_from(data.len())
        .map_err(|_| BackupError::Internal(format!("chunk of {} bytes", data.len())))?;
    let hasher = ctx.hasher.clone();
    let (id, data) = tokio::task::spawn_blocking(move || (hasher.id(&data), data))
        .await
        .map_err(|e| BackupError::Internal(format!("hashing task failed: {e}")))?;
    let decision = {
        let mut map = ctx
            .known
            .lock()
            .map_err(|_| BackupError::Internal("chunk set lock poisoned".into()))?;
        match map.get(&id) {
            Some(Slot::Known(k)) => Decision::Found(k.clone()),
            Some(Slot::Pending(rx)) => Decision::Wait(rx.clone()),
            None => {
                let (tx, rx) = watch::channel(None);
                map.insert(id.clone(), Slot::Pending(rx));
                Decision::Mine(tx)
            }
        }
    };
    let done = |known: KnownChunk, new: bool, id: String| ChunkDone {
        file,
        index,
        stored_len: known.stored_len,
        chunk: ChunkRef {
            id,
            len,
            at: known.at,
        },
        new,
    };
    match decision {
        Decision::Found(k) => Ok(done(k, false, id)),
        Decision::Wait(mut rx) => {
            let k = rx
                .wait_for(|v| v.is_some())
                .await
                .ok()
                .and_then(|v| v.clone())
                .ok_or_else(|| {
                    BackupError::Internal(format!(
                        "chunk {id}: the task storing the same content failed"
                    ))
                })?;
            Ok(done(k, false, id))
        }
        Decision::Mine(tx) => {
            let repo = Arc::clone(&ctx.repo);
            let id2 = id.clone();
            let encoded = tokio::task::spawn_blocking(move || repo.encode_chunk(&id2, &data))
                .await
                .map_err(|e| BackupError::Internal(format!("encoding task failed: {e}")))??;
            let stored_len = encoded.len() as u64;
            let at = if (len as usize) < BUNDLE_CHUNK_MAX {
                let (reply, answer) = oneshot::channel();
                let req = BundleReq {
                    id: id.clone(),
                    len,
                    encoded,
                    reply,
                };
                let lost = || BackupError::Internal("the bundler stopped early".into());
                ctx.bundle_tx.send(req).await.map_err(|_| lost())?;
                answer.await.map_err(|_| lost())?
            } else {
                ctx.repo
                    .store_chunk_object(&id, Bytes::from(encoded))
                    .await?;
                ChunkLocation::Object
            };
            let k = KnownChunk { at, stored_len };
            if let Ok(mut map) = ctx.known.lock() {
                map.insert(id.clone(), Slot::Known(k.clone()));
            }
            let _ = tx.send(Some(k.clone()));
            Ok(done(k, true, id))
        }
    }
}

struct OpenBundle {
    id: String,
    data: BytesMut,
    entries: Vec<BundleEntry>,
}

fn new_bundle_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Packs small encoded chunks into bundles. A chunk's location is assigned
/// (and answered) at once; the bundle is uploaded when full or at the end,
/// and the backup's manifest is written only after this task returns `Ok`.
async fn run_bundler(
    repo: Arc<Repository>,
    mut rx: mpsc::Receiver<BundleReq>,
) -> Result<usize, BackupError> {
    let mut open: Option<OpenBundle> = None;
    let mut uploads: JoinSet<Result<(), BackupError>> = JoinSet::new();
    let mut written = 0usize;
    let join = |r: Result<Result<(), BackupError>, tokio::task::JoinError>| {
        r.map_err(|e| BackupError::Internal(format!("bundle upload task failed: {e}")))?
    };
    while let Some(req) = rx.recv().await {
        let b = open.get_or_insert_with(|| OpenBundle {
            id: new_bundle_id(),
            data: BytesMut::with_capacity(BUNDLE_TARGET + (256 << 10)),
            entries: Vec::new(),
        });
        let offset = b.data.len() as u64;
        let stored_len = req.encoded.len() as u64;
        b.data.extend_from_slice(&req.encoded);
        b.entries.push(BundleEntry {
            id: req.id,
            len: req.len,
            offset,
            stored_len,
        });
        let _ = req.reply.send(ChunkLocation::Bundle {
            bundle: b.id.clone(),
            offset,
            stored_len,
        });
        if b.data.len() >= BUNDLE_TARGET {
            while uploads.len() >= BUNDLE_UPLOADS {
                if let Some(r) = uploads.join_next().await {
                    join(r)?;
                }
            }
            if let Some(b) = open.take() {
                written += 1;
                uploads.spawn(upload(Arc::clone(&repo), b));
            }
        }
    }
    if let Some(b) = open.take() {
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
