//! Errors of the storage backends.
//!
//! "Not found" is not an error here: reads return `Option`. Every variant names
//! the path, key, bucket or endpoint involved, and never carries credentials.

use std::path::PathBuf;

/// Everything that can go wrong storing or reading an object.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file-system call failed for a reason not covered by a variant below.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("write", "rename", "fsync directory", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file system is full (ENOSPC or EDQUOT).
    #[error("cannot write {}: disk full", path.display())]
    NoSpace {
        /// The file or directory being written.
        path: PathBuf,
    },
    /// The file system refused access (EACCES or EPERM).
    #[error("cannot access {}: permission denied", path.display())]
    PermissionDenied {
        /// The file or directory involved.
        path: PathBuf,
    },
    /// A `PutMode::IfAbsent` write found the key already stored (see
    /// [`PutOutcome::require_stored`](super::PutOutcome::require_stored)).
    #[error("object {key} already exists")]
    AlreadyExists {
        /// The key, relative to the repository root.
        key: String,
    },
    /// A key that is not a clean relative `/`-separated path.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An S3 request failed (after the SDK's retries, when retryable).
    #[error("S3 {op} of {key}: {message}")]
    S3 {
        /// The S3 operation ("PutObject", "UploadPart", ...).
        op: &'static str,
        /// The object key (full key inside the bucket) or prefix.
        key: String,
        /// The error code, HTTP status and server message.
        message: String,
        /// The HTTP status, when the server answered.
        status: Option<u16>,
    },
    /// The bucket does not exist at this endpoint.
    #[error("bucket {bucket} does not exist at {endpoint}")]
    BucketNotFound {
        /// The bucket name.
        bucket: String,
        /// The endpoint URL (or "AWS" for the default endpoints).
        endpoint: String,
    },
    /// The server refused the credentials or the policy denies access.
    #[error("access denied to bucket {bucket} (check credentials and policy): {detail}")]
    AccessDenied {
        /// The bucket name.
        bucket: String,
        /// The server's error code and message (never the credentials).
        detail: String,
    },
    /// The endpoint could not be reached, even after retries.
    #[error("S3 endpoint {endpoint} unreachable (retries exhausted): {message}")]
    Unreachable {
        /// The endpoint URL (or "AWS" for the default endpoints).
        endpoint: String,
        /// What failed (connection refused, timeout, ...) and during which operation.
        message: String,
    },
    /// S3 settings that cannot be used (bad endpoint, missing bucket name).
    #[error("S3 settings: {0}")]
    Config(String),
    /// A streamed upload ended without `finish` (the writer was dropped or
    /// aborted) or its background task failed; nothing was stored.
    #[error("upload of {key} aborted: {reason}")]
    Aborted {
        /// The key, relative to the repository root.
        key: String,
        /// Why.
        reason: String,
    },
}

impl StorageError {
    /// Whether retrying the same operation later may succeed: network trouble,
    /// throttling and server-side (5xx) errors. Bad keys, missing buckets,
    /// refused credentials, full disks and conflicts are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            StorageError::S3 { status, .. } => match status {
                Some(s) => *s >= 500 || *s == 429 || *s == 408,
                // No HTTP answer at all: a network-level failure.
                None => true,
            },
            StorageError::Unreachable { .. } => true,
            StorageError::NoSpace { .. }
            | StorageError::PermissionDenied { .. }
            | StorageError::AlreadyExists { .. }
            | StorageError::InvalidKey { .. }
            | StorageError::BucketNotFound { .. }
            | StorageError::AccessDenied { .. }
            | StorageError::Config(_)
            | StorageError::Aborted { .. } => false,
        }
    }

    /// Maps a file-system error to the variant that says what happened.
    pub(crate) fn from_io(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        let path = path.into();
        // EDQUOT (122 on Linux) is a full disk as far as the operator is concerned.
        const EDQUOT: i32 = 122;
        match source.kind() {
            std::io::ErrorKind::StorageFull => StorageError::NoSpace { path },
            std::io::ErrorKind::PermissionDenied => StorageError::PermissionDenied { path },
            _ if source.raw_os_error() == Some(EDQUOT) => StorageError::NoSpace { path },
            _ => StorageError::Io { op, path, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_mapped_by_kind() {
        let e = StorageError::from_io("write", "/x/y", std::io::Error::from_raw_os_error(28));
        assert!(matches!(e, StorageError::NoSpace { .. }), "{e:?}");
        assert_eq!(e.to_string(), "cannot write /x/y: disk full");
        let e = StorageError::from_io("open", "/x/y", std::io::Error::from_raw_os_error(13));
        assert_eq!(e.to_string(), "cannot access /x/y: permission denied");
        let e = StorageError::from_io("rename", "/x/y", std::io::Error::from_raw_os_error(5));
        assert!(e.to_string().starts_with("rename /x/y: "), "{e}");
    }

    #[test]
    fn transient_classification() {
        let s3 = |status| StorageError::S3 {
            op: "PutObject",
            key: "k".into(),
            message: "m".into(),
            status,
        };
        assert!(s3(Some(503)).is_transient());
        assert!(s3(Some(429)).is_transient());
        assert!(!s3(Some(400)).is_transient());
        assert!(StorageError::Unreachable {
            endpoint: "http://127.0.0.1:1".into(),
            message: "refused".into()
        }
        .is_transient());
        assert!(!StorageError::NoSpace { path: "/x".into() }.is_transient());
    }
}
