//! `walship restore`: rebuild a data directory from a base backup and write
//! the recovery settings that replay the archived WAL to a target.
//!
//! - [`target`]: what the user asked for (time, LSN, xid, restore point ...).
//! - [`plan`]: the pre-flight check, made before anything is written: which
//!   backup, which timeline, every WAL segment from the backup to the target,
//!   proven present in the repository; the recoverable window when it is not.
//! - [`writer`]: the data directory itself: chunks fetched and verified in
//!   parallel (bounded), files written with their modes and fsynced, `--delta`
//!   reuse, tablespace links; `global/pg_control` last.
//! - [`recovery`]: `postgresql.auto.conf` additions and `recovery.signal`.
//!
//! Why `global/pg_control` is written last: PostgreSQL refuses to start
//! without it, so a directory whose restore was interrupted (crash, corrupt
//! chunk, full disk) can never be mistaken for a good one.

pub mod plan;
pub mod recovery;
pub mod target;
pub mod writer;

use std::path::PathBuf;

use crate::repo::RepoError;

/// What can go wrong restoring. Every variant names the backup, segment,
/// chunk or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The repository failed (storage, codec, metadata).
    #[error(transparent)]
    Repo(Box<RepoError>),
    /// A target, timeline or option that cannot be understood.
    #[error("{0}")]
    BadInput(String),
    /// The repository holds no backup (or none of the stanza's cluster).
    #[error("stanza `{stanza}` has no backup to restore: run `walship backup` first")]
    NoBackups {
        /// The stanza.
        stanza: String,
    },
    /// `--backup ID` names no backup.
    #[error("backup `{id}` is not in the repository (known backups: {known})")]
    BackupNotFound {
        /// The id asked for.
        id: String,
        /// The ids there are.
        known: String,
    },
    /// The target cannot be reached from any backup with the archived WAL.
    #[error("target {target} cannot be reached: {reason}; recoverable window: {window}")]
    OutsideWindow {
        /// The target, as the user gave it.
        target: String,
        /// Why.
        reason: String,
        /// The recoverable window, in words.
        window: String,
    },
    /// A WAL segment between the backup and the target is not in the repository.
    #[error("WAL segment {segment} is missing from the repository: restoring backup {backup} to {target} needs every segment from {first} to {last}; nothing was written")]
    MissingSegment {
        /// The first missing segment.
        segment: String,
        /// The backup id.
        backup: String,
        /// The target, in words.
        target: String,
        /// The first segment needed.
        first: String,
        /// The last segment needed.
        last: String,
    },
    /// A timeline's history file is not in the repository.
    #[error(
        "timeline {timeline} cannot be followed: its history file {file} is not in the repository"
    )]
    HistoryMissing {
        /// The timeline.
        timeline: u32,
        /// The history file name.
        file: String,
    },
    /// The data directory is not empty and neither --force nor --delta was given.
    #[error("{} is not empty: give --force to move it aside (to {}.pre-restore-<time>) or --delta to reuse the files that match; nothing was written", path.display(), path.display())]
    NotEmpty {
        /// The data directory.
        path: PathBuf,
    },
    /// A server seems to run on the data directory.
    #[error("{} has a postmaster.pid naming a running process ({pid}): stop PostgreSQL first; nothing was written", path.display())]
    ServerRunning {
        /// The data directory.
        path: PathBuf,
        /// The pid in postmaster.pid.
        pid: i32,
    },
    /// A file or directory operation failed.
    #[error("{op} {}: {cause}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause (in the message, not chained, so it is said once).
        cause: std::io::Error,
    },
    /// A chunk could not be fetched or failed verification.
    #[error("chunk {chunk} of {file}: {cause}; the restore stopped (global/pg_control was not written, so PostgreSQL will not start on this directory)")]
    Chunk {
        /// The chunk id.
        chunk: String,
        /// The file it belongs to.
        file: String,
        /// The cause (in the message, not chained, so it is said once).
        cause: Box<RepoError>,
    },
    /// A chunk's content does not match its manifest entry.
    #[error("chunk {chunk} of {file}: {reason}; the restore stopped (global/pg_control was not written)")]
    ChunkMismatch {
        /// The chunk id.
        chunk: String,
        /// The file it belongs to.
        file: String,
        /// What does not match.
        reason: String,
    },
    /// A manifest entry that cannot be restored safely.
    #[error("backup {backup}: manifest entry `{path}`: {reason}")]
    BadManifest {
        /// The backup id.
        backup: String,
        /// The entry's path.
        path: String,
        /// Why.
        reason: String,
    },
}

impl From<RepoError> for RestoreError {
    fn from(e: RepoError) -> Self {
        RestoreError::Repo(Box::new(e))
    }
}

impl RestoreError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> RestoreError {
        let path = path.into();
        move |cause| RestoreError::Io { op, path, cause }
    }
}
