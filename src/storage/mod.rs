//! Where objects live: a local directory ([`FsStorage`], the embedded default)
//! or an S3-compatible bucket ([`S3Storage`]).
//!
//! Keys are `/`-separated paths relative to the repository root (for example
//! `main/wal/00000001/000000010000000000000001.obj`). Every write is atomic: a
//! reader sees the whole object or nothing (fs: temp file, fsync, rename, fsync
//! directory; S3: one PutObject or a completed multipart upload). "Not found"
//! is a value (`Ok(None)`), never an error, and never stands in for an object
//! that exists but cannot be read.

mod error;
mod fs;
pub mod mapped;
mod s3;
pub mod writeback;

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use error::StorageError;
pub use fs::FsStorage;
pub use s3::{S3Storage, S3Tuning};

use crate::config::{RepoLocation, S3Settings};

/// How many pieces a [`PutStream`] buffers between the producer and the
/// backend: memory is bounded by this times the producer's piece size (plus,
/// for S3, the multipart parts being built and sent).
const STREAM_CHANNEL_PIECES: usize = 4;

/// Longest key accepted (S3's limit on object key length, in bytes).
const MAX_KEY_LEN: usize = 1024;

/// One stored object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key, relative to the repository root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, when the backend knows it.
    pub modified: Option<std::time::SystemTime>,
}

/// What a write does when the key already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Replace the object (atomically).
    Overwrite,
    /// Store only when the key does not exist yet, decided atomically by the
    /// backend (fs: `link(2)`; S3: `If-None-Match: *`); an existing object is
    /// never replaced and the write reports [`PutOutcome::AlreadyExists`].
    IfAbsent,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object is durably stored.
    Stored,
    /// `PutMode::IfAbsent` found the key already stored; nothing was changed.
    /// (On S3 a retried request whose first attempt succeeded but whose answer
    /// was lost also ends here: compare contents to tell the two apart.)
    AlreadyExists,
}

impl PutOutcome {
    /// Turns `AlreadyExists` into [`StorageError::AlreadyExists`] naming `key`,
    /// for callers to whom an existing object is a failure.
    pub fn require_stored(self, key: &str) -> Result<(), StorageError> {
        match self {
            PutOutcome::Stored => Ok(()),
            PutOutcome::AlreadyExists => Err(StorageError::AlreadyExists {
                key: key.to_string(),
            }),
        }
    }
}

/// A repository's object store.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A local directory.
    Fs(FsStorage),
    /// An S3-compatible bucket.
    S3(S3Storage),
}

impl Storage {
    /// Opens the store at `location`. fs: creates the directory (0700) when
    /// missing. S3: builds the client from `s3`; nothing remote is checked yet,
    /// so a wrong bucket or credentials show up on the first request.
    pub async fn open(location: &RepoLocation, s3: &S3Settings) -> Result<Storage, StorageError> {
        Self::open_with_tuning(location, s3, &S3Tuning::default()).await
    }

    /// [`Storage::open`] with explicit S3 retry, timeout and part-size settings
    /// (tests lower them to keep failure paths fast); ignored for fs.
    pub async fn open_with_tuning(
        location: &RepoLocation,
        s3: &S3Settings,
        tuning: &S3Tuning,
    ) -> Result<Storage, StorageError> {
        match location {
            RepoLocation::Fs(root) => Ok(Storage::Fs(FsStorage::open(root))),
            RepoLocation::S3 { bucket, prefix } => Ok(Storage::S3(
                S3Storage::open(bucket, prefix, s3, tuning.clone()).await?,
            )),
        }
    }

    /// The store for messages: `file:///dir` or `s3://bucket/prefix`.
    pub fn describe(&self) -> String {
        match self {
            Storage::Fs(s) => s.describe(),
            Storage::S3(s) => s.describe(),
        }
    }

    /// Stores `body` under `key` atomically and durably.
    pub async fn put(
        &self,
        key: &str,
        body: Bytes,
        mode: PutMode,
    ) -> Result<PutOutcome, StorageError> {
        validate_key(key)?;
        match self {
            Storage::Fs(s) => s.put(key, body, mode).await,
            Storage::S3(s) => s.put(key, body, mode).await,
        }
    }

    /// Starts a streamed write of a large object: feed it with
    /// [`PutStream::write`], then [`PutStream::finish`]. Memory stays bounded
    /// (a few pieces in the channel and, for S3, the multipart parts in
    /// flight). fs: temp file in the target directory, fsync, rename (or link
    /// for `IfAbsent`), fsync directory. S3: one PutObject when the total stays
    /// under the part size, else a multipart upload completed only by
    /// `finish`. Dropping the writer or calling [`PutStream::abort`] stores
    /// nothing and cleans up (temp file removed, multipart upload aborted).
    pub async fn put_stream(&self, key: &str, mode: PutMode) -> Result<PutStream, StorageError> {
        validate_key(key)?;
        let (tx, rx) = mpsc::channel(STREAM_CHANNEL_PIECES);
        let task = match self {
            Storage::Fs(s) => s.spawn_put_stream(key, mode, rx),
            Storage::S3(s) => s.spawn_put_stream(key, mode, rx),
        };
        Ok(PutStream {
            key: key.to_string(),
            tx: Some(tx),
            task: Some(task),
        })
    }

    /// Opens `key` for reading; `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<GetStream>, StorageError> {
        validate_key(key)?;
        match self {
            Storage::Fs(s) => s.get(key).await,
            Storage::S3(s) => s.get(key).await,
        }
    }

    /// Reads the whole of `key` into memory; `None` when it does not exist.
    /// For small objects (manifests, indexes); stream large ones with `get`.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        validate_key(key)?;
        if let Storage::Fs(fs) = self {
            return fs.get_bytes(key).await;
        }
        let Some(mut stream) = self.get(key).await? else {
            return Ok(None);
        };
        // The size is only a capacity hint: never trust it for more than a few MiB.
        let hint = usize::try_from(stream.size()).unwrap_or(0).min(64 << 20);
        let mut all = BytesMut::with_capacity(hint);
        while let Some(chunk) = stream.next_chunk().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(Some(all.freeze()))
    }

    /// Reads `len` bytes at `offset` of `key` (fs: seek and read; S3: a
    /// `Range` request); `None` when the object does not exist. A range that
    /// does not lie wholly inside the object is an error, never a short read.
    pub async fn get_range(
        &self,
        key: &str,
        offset: u64,
        len: u64,
    ) -> Result<Option<Bytes>, StorageError> {
        validate_key(key)?;
        if len == 0 {
            return Err(range_error(key, offset, len, 0));
        }
        match self {
            Storage::Fs(s) => s.get_range(key, offset, len).await,
            Storage::S3(s) => s.get_range(key, offset, len).await,
        }
    }

    /// Size and modification time of `key`; `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        validate_key(key)?;
        match self {
            Storage::Fs(s) => s.head(key).await,
            Storage::S3(s) => s.head(key).await,
        }
    }

    /// Every object whose key starts with `prefix` (a plain string prefix:
    /// `main/wal/` lists a "directory", `main/wal/0000000100` part of one),
    /// recursively, sorted by key. Keys are relative to the repository root;
    /// `""` lists everything.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        validate_prefix(prefix)?;
        let mut all = match self {
            Storage::Fs(s) => s.list(prefix).await?,
            Storage::S3(s) => s.list(prefix).await?,
        };
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }

    /// Removes what writers killed mid-write left under `prefix`: on fs, temp
    /// files older than [`STALE_TEMP_AFTER`] (an older one has no writer).
    /// Returns how many.
    /// S3 keeps no such files: an interrupted multipart upload is aborted by
    /// its writer, or expired by the bucket's lifecycle rule when the writer
    /// was killed (see docs/ARCHITECTURE.md, invariant 4).
    pub async fn remove_stale_temps(&self, prefix: &str) -> Result<usize, StorageError> {
        validate_prefix(prefix)?;
        match self {
            Storage::Fs(s) => s.remove_stale_temps(prefix, STALE_TEMP_AFTER).await,
            Storage::S3(_) => Ok(0),
        }
    }

    /// Deletes `key`; deleting a missing key is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        match self {
            Storage::Fs(s) => s.delete(key).await,
            Storage::S3(s) => s.delete(key).await,
        }
    }
}

/// The error for a ranged read outside the object (`size` 0 when unknown).
pub(crate) fn range_error(key: &str, offset: u64, len: u64, size: u64) -> StorageError {
    StorageError::Io {
        op: "ranged read",
        path: PathBuf::from(key),
        source: std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{len} bytes at offset {offset} are not inside the object ({size} bytes)"),
        ),
    }
}

/// One message from a [`PutStream`] to the backend task that stores it.
pub(crate) enum Piece {
    /// More data.
    Data(Bytes),
    /// The producer is done: commit the object. A channel closed without this
    /// means "abort".
    Finish,
}

/// The result of a backend's upload task.
pub(crate) type UploadTask = JoinHandle<Result<PutOutcome, StorageError>>;

/// A streamed write in progress (see [`Storage::put_stream`]).
#[derive(Debug)]
pub struct PutStream {
    key: String,
    tx: Option<mpsc::Sender<Piece>>,
    task: Option<UploadTask>,
}

impl PutStream {
    /// Sends the next piece. Waits while the backend is behind (that is what
    /// bounds memory). Fails with the backend's error when it has failed; the
    /// stream is then unusable and nothing is stored.
    pub async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        let Some(tx) = &self.tx else {
            return Err(self.closed());
        };
        if data.is_empty() {
            return Ok(());
        }
        if tx.send(Piece::Data(data)).await.is_err() {
            // The task stopped early: it failed; report why.
            self.tx = None;
            return Err(match self.join().await {
                Err(e) => e,
                Ok(_) => self.closed(),
            });
        }
        Ok(())
    }

    /// Commits the object: returns once it is durably stored (or found to
    /// exist already, for `IfAbsent`).
    pub async fn finish(mut self) -> Result<PutOutcome, StorageError> {
        let Some(tx) = self.tx.take() else {
            return Err(self.closed());
        };
        // A send error means the task already ended; join reports why.
        let _ = tx.send(Piece::Finish).await;
        drop(tx);
        self.join().await
    }

    /// Gives up: nothing is stored, the temp file or multipart upload is
    /// cleaned up before this returns.
    pub async fn abort(mut self) {
        self.tx = None;
        if let Err(e) = self.join().await {
            tracing::debug!(key = %self.key, error = %e, "upload aborted");
        }
    }

    async fn join(&mut self) -> Result<PutOutcome, StorageError> {
        let Some(task) = self.task.take() else {
            return Err(self.closed());
        };
        match task.await {
            Ok(result) => result,
            Err(e) => Err(StorageError::Aborted {
                key: self.key.clone(),
                reason: format!("upload task failed: {e}"),
            }),
        }
    }

    fn closed(&self) -> StorageError {
        StorageError::Aborted {
            key: self.key.clone(),
            reason: "the upload already failed or was finished".to_string(),
        }
    }
}

/// An object being read (see [`Storage::get`]).
#[derive(Debug)]
pub struct GetStream {
    key: String,
    size: u64,
    inner: GetInner,
}

#[derive(Debug)]
enum GetInner {
    Fs {
        file: tokio::fs::File,
        path: PathBuf,
    },
    S3 {
        body: aws_sdk_s3::primitives::ByteStream,
    },
}

/// Bytes read from a file per `next_chunk`.
const FS_READ_CHUNK: usize = 256 * 1024;

impl GetStream {
    /// The object's size in bytes, as stored.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The key being read.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The next piece of the object; `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StorageError> {
        match &mut self.inner {
            GetInner::Fs { file, path } => {
                use tokio::io::AsyncReadExt;
                let mut buf = BytesMut::with_capacity(FS_READ_CHUNK);
                let n = file
                    .read_buf(&mut buf)
                    .await
                    .map_err(|e| StorageError::from_io("read", path.clone(), e))?;
                Ok((n > 0).then(|| buf.freeze()))
            }
            GetInner::S3 { body } => match body.next().await {
                None => Ok(None),
                Some(Ok(b)) => Ok(Some(b)),
                Some(Err(e)) => Err(StorageError::S3 {
                    op: "GetObject",
                    key: self.key.clone(),
                    message: format!("reading the body failed: {}", s3::error_chain(&e)),
                    status: None,
                }),
            },
        }
    }
}

/// Checks that `key` is a clean relative `/`-separated path.
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    let bad = |reason| {
        Err(StorageError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("empty key");
    }
    if key.ends_with('/') {
        return bad("trailing '/' (a key names an object, not a directory)");
    }
    check_path(key).or_else(bad)
}

/// Checks a listing prefix: empty, or a key-like path that may end in `/`.
fn validate_prefix(prefix: &str) -> Result<(), StorageError> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if prefix.is_empty() {
        return Ok(());
    }
    check_path(trimmed).map_err(|reason| StorageError::InvalidKey {
        key: prefix.to_string(),
        reason,
    })
}

fn check_path(path: &str) -> Result<(), &'static str> {
    if path.len() > MAX_KEY_LEN {
        return Err("longer than 1024 bytes");
    }
    if path.starts_with('/') {
        return Err("absolute path (keys are relative to the repository root)");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    for part in path.split('/') {
        match part {
            "" => return Err("empty path component ('//' or a leading/trailing '/')"),
            "." | ".." => return Err("'.' and '..' components are not allowed"),
            p if is_temp_name(p) => {
                return Err("names like '.x.tmp.*' are reserved for temporary files")
            }
            p if p.len() > 255 => return Err("a path component is longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

/// Age after which a temp file of the fs backend is taken for a killed
/// writer's (see [`Storage::remove_stale_temps`]): no walship write of one
/// object (16 MiB of WAL, a 4 MiB bundle, a manifest) takes an hour.
pub const STALE_TEMP_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether a file name is one of our temp files (`.<name>.tmp.<random>`).
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        for good in [
            "a",
            "main/wal/00000001/000000010000000000000001.obj",
            "a.b/c-d_e",
            ".hidden",
        ] {
            validate_key(good).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("/abs", "absolute"),
            ("a//b", "empty path component"),
            ("a/", "trailing"),
            ("a/../b", "'..'"),
            ("./a", "'.'"),
            ("a/.b.tmp.123", "temporary"),
            ("a\0b", "NUL"),
        ] {
            let e = validate_key(bad).unwrap_err();
            let text = e.to_string();
            assert!(
                matches!(e, StorageError::InvalidKey { .. }),
                "{bad:?}: {e:?}"
            );
            assert!(text.contains(why), "{bad:?}: {text}");
            assert!(
                text.contains(&format!("{bad:?}")),
                "error names the key: {text}"
            );
        }
        assert!(validate_key(&"x".repeat(1025)).is_err());
    }

    #[test]
    fn prefixes_are_validated() {
        for good in ["", "main/", "main/wal/0000", "main"] {
            validate_prefix(good).unwrap();
        }
        for bad in ["/", "/main", "main//", "../x/", "a/./"] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn require_stored_names_the_key() {
        PutOutcome::Stored.require_stored("k").unwrap();
        let e = PutOutcome::AlreadyExists.require_stored("a/b").unwrap_err();
        assert_eq!(e.to_string(), "object a/b already exists");
    }
}
