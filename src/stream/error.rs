//! Errors of `walship stream`.

use std::path::PathBuf;

use crate::pg::wal::Lsn;
use crate::pg::PgError;
use crate::repo::RepoError;

/// What can stop or interrupt the streamer. [`StreamError::is_fatal`] says
/// which ones end the process (the rest are retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// PostgreSQL: a lost connection, a restart, a server error.
    #[error("{context}: {source}")]
    Pg {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: Box<PgError>,
    },
    /// The repository (storage down, a bad object ...).
    #[error("{context}: {source}")]
    Repo {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: Box<RepoError>,
    },
    /// The local spool (a full disk, permissions ...).
    #[error("spool {}: {what}: {source}", path.display())]
    Spool {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another streamer holds the spool.
    #[error("spool {} is in use by another walship stream process", path.display())]
    SpoolBusy {
        /// The spool directory.
        path: PathBuf,
    },
    /// The replication slot is in use by another process.
    #[error("replication slot \"{slot}\" is in use by another process{}: {detail}",
        pid.map(|p| format!(" (PID {p})")).unwrap_or_default())]
    SlotBusy {
        /// The slot.
        slot: String,
        /// The holder's PID, when known.
        pid: Option<i32>,
        /// The server's message.
        detail: String,
    },
    /// The slot vanished and the server no longer has the WAL the repository
    /// needs next: continuing would leave a gap.
    #[error(
        "replication slot \"{slot}\" was dropped and the server has already removed the WAL \
        from {needed} that the repository needs next ({detail}); the archive cannot continue \
        without a gap: take a new base backup, then restart walship stream"
    )]
    SlotLost {
        /// The slot.
        slot: String,
        /// The first position the repository lacks.
        needed: Lsn,
        /// The server's message.
        detail: String,
    },
    /// The slot exists but cannot be used (logical, or other settings).
    #[error("replication slot \"{slot}\": {reason}")]
    BadSlot {
        /// The slot.
        slot: String,
        /// Why.
        reason: String,
    },
    /// The server is not the repository's cluster, or its history does not
    /// contain the WAL we hold.
    #[error("{0}")]
    Mismatch(String),
    /// A passing condition (the server behind us, a gap in the stream):
    /// reconnect and try again.
    #[error("{0}")]
    Retry(String),
    /// The uploader stopped on a fatal error (reported by it).
    #[error("the uploader stopped")]
    UploaderStopped,
}

impl StreamError {
    /// Whether the streamer must stop rather than retry.
    pub fn is_fatal(&self) -> bool {
        match self {
            StreamError::SpoolBusy { .. }
            | StreamError::SlotLost { .. }
            | StreamError::BadSlot { .. }
            | StreamError::Mismatch(_)
            | StreamError::UploaderStopped => true,
            StreamError::Repo { source, .. } => matches!(
                source.as_ref(),
                RepoError::WalConflict { .. }
                    | RepoError::ClusterMismatch { .. }
                    | RepoError::KeyRequired { .. }
                    | RepoError::NotEncrypted { .. }
                    | RepoError::KeyKindMismatch { .. }
                    | RepoError::BadWalFile { .. }
            ),
            StreamError::Pg { source, .. } => {
                matches!(source.as_ref(), PgError::Config(_) | PgError::Auth(_))
                    || matches!(source.sqlstate(), Some("28P01" | "28000" | "42501"))
            }
            _ => false,
        }
    }

    pub(crate) fn pg(context: impl Into<String>) -> impl FnOnce(PgError) -> StreamError {
        let context = context.into();
        move |source| StreamError::Pg {
            context,
            source: Box::new(source),
        }
    }

    pub(crate) fn repo(context: impl Into<String>) -> impl FnOnce(RepoError) -> StreamError {
        let context = context.into();
        move |source| StreamError::Repo {
            context,
            source: Box::new(source),
        }
    }
}
