//! Base backups: from PostgreSQL's BASE_BACKUP stream into the chunk store.
//!
//! The path of the data (`docs/backup.md` has the whole story):
//!
//! ```text
//! BASE_BACKUP stream --(one task, sequential)--> chunker: files cut at 256 KiB
//!     --> up to N chunk tasks (one blocking task each): hash (keyed BLAKE3)
//!             -> known? reference it
//!             : encode (lz4, AES-256-GCM) -> append to the open bundle
//!     --> full bundles (~4 MiB) -> the uploader (2 at a time)
//! end of stream: check every file against the server's backup_manifest,
//! wait for the WAL start..stop in the repository, then publish the manifest.
//! ```
//!
//! - [`source`]: the events of a base backup, and where they come from.
//! - [`chunker`]: cutting files into page-aligned chunks, CRC-32C on the way.
//! - [`store`]: the parallel, deduplicating chunk writer and the bundle uploader.
//! - [`pipeline`]: the event loop that builds the backup's manifest.
//! - [`wal_wait`]: waiting for the WAL a backup needs.
//! - [`progress`]: the progress bar (terminal) or periodic log lines.
//! - [`verify`]: checking stored backups (for `walship verify`).

pub mod chunker;
pub mod pipeline;
pub mod progress;
pub mod source;
pub mod store;
pub mod verify;
pub mod wal_wait;

use std::sync::Arc;
use std::time::Duration;

use crate::pg::PgError;
use crate::repo::backup::BackupManifest;
use crate::repo::{RepoError, Repository};

pub use pipeline::{ingest, BackupRequest, Ingested};
pub use source::{BackupEvent, EventSource};

/// Default time to wait for the WAL a backup needs (`WALSHIP_BACKUP_WAL_TIMEOUT`,
/// `[backup] wal_timeout`).
pub const DEFAULT_WAL_TIMEOUT: Duration = Duration::from_secs(300);

/// What can make a backup fail. Each names the file, object, segment or
/// server step concerned.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// PostgreSQL failed or the connection broke. (The cause is part of the
    /// message and not chained, so `{:#}` does not print it twice.)
    #[error("{context}: {cause}")]
    Pg {
        /// What was being done.
        context: String,
        /// The cause (boxed: server errors are large).
        cause: Box<PgError>,
    },
    /// The repository failed (storage, codec); the message is the cause's.
    #[error("{0}")]
    Repo(RepoError),
    /// Files received differ from the server's backup_manifest.
    #[error("the data received does not match the server's backup_manifest: {}", describe_mismatches(.0))]
    ManifestMismatch(Vec<crate::pg::backup_manifest::Mismatch>),
    /// The server's backup_manifest is missing or unreadable.
    #[error("the server's backup_manifest: {0}")]
    BadServerManifest(String),
    /// The stream broke the protocol's order (a bug on one side).
    #[error("base backup stream: {0}")]
    Stream(String),
    /// A WAL segment the backup needs did not reach the repository in time.
    #[error("WAL segment {segment} needed by the backup (from {start} to {stop}) did not reach the repository within {waited_secs} s: {hint}")]
    WalMissing {
        /// The first missing segment.
        segment: String,
        /// The backup's start LSN.
        start: String,
        /// The backup's stop LSN.
        stop: String,
        /// How long we waited.
        waited_secs: u64,
        /// Why that usually happens.
        hint: &'static str,
    },
    /// A worker task failed (panic or cancellation).
    #[error("internal: {0}")]
    Internal(String),
}

impl From<RepoError> for BackupError {
    fn from(e: RepoError) -> Self {
        BackupError::Repo(e)
    }
}

fn describe_mismatches(m: &[crate::pg::backup_manifest::Mismatch]) -> String {
    let shown: Vec<String> = m.iter().take(10).map(|x| x.to_string()).collect();
    let more = if m.len() > 10 {
        format!(" (and {} more)", m.len() - 10)
    } else {
        String::new()
    };
    format!("{}{more}", shown.join("; "))
}

/// Settings of one backup run that do not come from the stream.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Chunk tasks in flight.
    pub in_flight: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            in_flight: default_in_flight(),
        }
    }
}

/// Chunk tasks in flight by default: enough to keep every core busy hashing
/// and encoding while uploads wait on the network.
pub fn default_in_flight() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    (cores * 4).clamp(8, 64)
}

/// Takes a backup from `source` end to end: ingest, check, wait for WAL,
/// publish. Returns the published manifest; on error nothing is visible.
pub async fn take_backup<S: EventSource>(
    source: &mut S,
    repo: &Arc<Repository>,
    request: &BackupRequest,
    options: &RunOptions,
) -> Result<BackupManifest, BackupError> {
    let ingested = ingest(source, repo, request, options.in_flight).await?;
    wal_wait::wait_for_wal(repo, &ingested.manifest, request.wal_timeout).await?;
    repo.store_backup(&ingested.manifest, &ingested.server_manifest)
        .await?;
    tracing::info!(
        id = %ingested.manifest.id,
        files = ingested.manifest.files.len(),
        chunks = ingested.chunks,
        new_chunks = ingested.new_chunks,
        original_bytes = ingested.manifest.original_bytes,
        new_bytes = ingested.manifest.new_bytes,
        "backup complete"
    );
    Ok(ingested.manifest)
}

#[cfg(test)]
mod tests;
