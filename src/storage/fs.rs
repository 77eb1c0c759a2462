//! The local-directory backend: one file per object under the repository root.
//!
//! Writes are atomic and durable: a temp file `.<name>.tmp.<random>` in the
//! target directory is written and fsynced, then renamed over the target (or,
//! for `IfAbsent`, hard-linked to it so an existing object is never replaced,
//! then unlinked), then the directory is fsynced. Files are 0600, directories
//! 0700; directories created on the way are fsynced into their parents. A
//! failed write removes its temp file; one whose writer was killed stays
//! until [`FsStorage::remove_stale_temps`] finds it old enough.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{
    is_temp_name, GetInner, GetStream, ObjectMeta, Piece, PutMode, PutOutcome, StorageError,
    UploadTask,
};

/// A repository in a local directory.
#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
}

impl FsStorage {
    /// A repository in `root`. Nothing is created here: the first write
    /// creates the directory (mode 0700), so that a read (`info`,
    /// `archive-get`, a read-ahead worker) of a mistyped or removed path
    /// reports an empty repository instead of leaving a directory behind.
    pub fn open(root: &Path) -> FsStorage {
        FsStorage {
            root: root.to_path_buf(),
        }
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `file:///dir`, for messages.
    pub fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn path_of(&self, key: &str) -> PathBuf {
        // Keys are validated by `Storage` before they get here.
        self.root.join(key)
    }

    pub(crate) async fn put(
        &self,
        key: &str,
        body: Bytes,
        mode: PutMode,
    ) -> Result<PutOutcome, StorageError> {
        let path = self.path_of(key);
        let key = key.to_string();
        blocking(move || {
            write_atomic(&path, &key, mode, |file, tmp| {
                file.write_all(&body)
                    .map_err(|e| StorageError::from_io("write", tmp, e))
            })
        })
        .await
    }

    pub(crate) fn spawn_put_stream(
        &self,
        key: &str,
        mode: PutMode,
        mut rx: mpsc::Receiver<Piece>,
    ) -> UploadTask {
        let path = self.path_of(key);
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let mut written = 0u64;
            write_atomic(&path, &key, mode, |file, tmp| loop {
                match rx.blocking_recv() {
                    Some(Piece::Data(data)) => {
                        file.write_all(&data)
                            .map_err(|e| StorageError::from_io("write", tmp, e))?;
                        // Streamed objects are WAL segments (archive-push,
                        // stream): the fsync at the end then waits for the
                        // last piece only.
                        super::writeback::start(file, written, data.len() as u64);
                        written += data.len() as u64;
                    }
                    Some(Piece::Finish) => return Ok(()),
                    None => {
                        return Err(StorageError::Aborted {
                            key: key.clone(),
                            reason: "the writer was dropped or aborted before finish".to_string(),
                        })
                    }
                }
            })
        })
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<GetStream>, StorageError> {
        let path = self.path_of(key);
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(StorageError::from_io("open", path, e)),
        };
        let meta = file
            .metadata()
            .await
            .map_err(|e| StorageError::from_io("stat", path.clone(), e))?;
        if !meta.is_file() {
            // A directory is a key prefix, not an object.
            return Ok(None);
        }
        Ok(Some(GetStream {
            key: key.to_string(),
            size: meta.len(),
            inner: GetInner::Fs { file, path },
        }))
    }

    /// Reads a whole object in one blocking call: a 16 MiB segment read
    /// through tokio's file, piece by piece, costs a thread hand-off per piece.
    pub(crate) async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        let path = self.path_of(key);
        blocking(move || {
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if is_missing(&e) => return Ok(None),
                Err(e) => return Err(StorageError::from_io("open", path, e)),
            };
            let meta = file
                .metadata()
                .map_err(|e| StorageError::from_io("stat", path.clone(), e))?;
            if !meta.is_file() {
                // A directory is a key prefix, not an object.
                return Ok(None);
            }
            super::mapped::read_whole(file, meta.len(), &path)
                .map(Some)
                .map_err(|e| StorageError::from_io("read", path, e))
        })
        .await
    }

    pub(crate) async fn get_range(
        &self,
        key: &str,
        offset: u64,
        len: u64,
    ) -> Result<Option<Bytes>, StorageError> {
        let path = self.path_of(key);
        let key = key.to_string();
        blocking(move || {
            use std::io::{Read, Seek, SeekFrom};
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if is_missing(&e) => return Ok(None),
                Err(e) => return Err(StorageError::from_io("open", path, e)),
            };
            let size = file
                .metadata()
                .map_err(|e| StorageError::from_io("stat", path.clone(), e))?
                .len();
            if offset.checked_add(len).is_none_or(|end| end > size) {
                return Err(super::range_error(&key, offset, len, size));
            }
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| StorageError::from_io("seek", path.clone(), e))?;
            let want =
                usize::try_from(len).map_err(|_| super::range_error(&key, offset, len, size))?;
            let mut buf = vec![0u8; want];
            file.read_exact(&mut buf)
                .map_err(|e| StorageError::from_io("read", path.clone(), e))?;
            Ok(Some(Bytes::from(buf)))
        })
        .await
    }

    pub(crate) async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        let path = self.path_of(key);
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: m.len(),
                modified: m.modified().ok(),
            })),
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(StorageError::from_io("stat", path, e)),
        }
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || list_blocking(&root, &prefix)).await
    }

    /// Removes the temp files under `prefix` last modified longer than
    /// `older_than` ago: left by a writer that was killed (kill -9, power
    /// loss) before it could remove its own. Returns how many were removed.
    pub(crate) async fn remove_stale_temps(
        &self,
        prefix: &str,
        older_than: std::time::Duration,
    ) -> Result<usize, StorageError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            let mut stale = Vec::new();
            walk(&root, &prefix, |found| {
                if let Found::Temp { path, modified } = found {
                    let age = modified.and_then(|m| m.elapsed().ok());
                    if age.is_some_and(|a| a > older_than) {
                        stale.push(path);
                    }
                }
            })?;
            let mut removed = 0;
            for path in stale {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if is_missing(&e) => {}
                    Err(e) => return Err(StorageError::from_io("remove stale temp file", path, e)),
                }
            }
            Ok(removed)
        })
        .await
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path_of(key);
        blocking(move || {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if is_missing(&e) => return Ok(()),
                Err(e) => return Err(StorageError::from_io("delete", path, e)),
            }
            match path.parent() {
                Some(dir) => fsync_dir(dir),
                None => Ok(()),
            }
        })
        .await
    }
}

/// Runs blocking file-system work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StorageError::Io {
            op: "run file-system task",
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

/// ENOENT, or ENOTDIR (a component of the path is a file): the object does not exist.
fn is_missing(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// Removes the temp file when a write fails half-way.
struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    fn remove(&mut self) -> std::io::Result<()> {
        match self.path.take() {
            Some(p) => std::fs::remove_file(p),
            None => Ok(()),
        }
    }
    fn disarm(&mut self) {
        self.path = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            if let Err(e) = std::fs::remove_file(&p) {
                tracing::warn!(path = %p.display(), error = %e, "could not remove temp file");
            }
        }
    }
}

/// Writes `path` atomically: `fill` writes the content into a temp file in the
/// same directory, which is then fsynced and renamed (or linked) into place.
fn write_atomic(
    path: &Path,
    key: &str,
    mode: PutMode,
    fill: impl FnOnce(&mut File, &Path) -> Result<(), StorageError>,
) -> Result<PutOutcome, StorageError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(StorageError::InvalidKey {
            key: key.to_string(),
            reason: "does not name a file",
        });
    };
    create_dirs(dir)?;
    let tmp_path = dir.join(format!(
        ".{}.tmp.{:016x}",
        name.to_string_lossy(),
        fastrand::u64(..)
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp_path)
        .map_err(|e| StorageError::from_io("create", tmp_path.clone(), e))?;
    let mut tmp = TempFile {
        path: Some(tmp_path.clone()),
    };
    fill(&mut file, &tmp_path)?;
    file.sync_all()
        .map_err(|e| StorageError::from_io("fsync", tmp_path.clone(), e))?;
    drop(file);

    match mode {
        PutMode::Overwrite => {
            std::fs::rename(&tmp_path, path)
                .map_err(|e| StorageError::from_io("rename into", path, e))?;
            tmp.disarm();
        }
        PutMode::IfAbsent => match std::fs::hard_link(&tmp_path, path) {
            Ok(()) => {
                // The object is in place; a leftover temp name is only untidy.
                if let Err(e) = tmp.remove() {
                    tracing::warn!(path = %tmp_path.display(), error = %e, "could not remove temp file");
                }
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(PutOutcome::AlreadyExists),
            // File systems without hard links (vfat, some FUSE): check, then
            // rename. Racy against a concurrent writer of the same key, which
            // one repository never has (one stanza, one writer per object).
            Err(e) if e.kind() == ErrorKind::Unsupported || e.raw_os_error() == Some(1) => {
                if std::fs::symlink_metadata(path).is_ok() {
                    return Ok(PutOutcome::AlreadyExists);
                }
                std::fs::rename(&tmp_path, path)
                    .map_err(|e| StorageError::from_io("rename into", path, e))?;
                tmp.disarm();
            }
            Err(e) => return Err(StorageError::from_io("link into", path, e)),
        },
    }
    fsync_dir(dir)?;
    Ok(PutOutcome::Stored)
}

fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::from_io("fsync directory", dir, e))
}

/// Creates `dir` and its missing ancestors with mode 0700, fsyncing each new
/// directory's parent so the new entry survives a crash.
fn create_dirs(dir: &Path) -> Result<(), StorageError> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        match std::fs::metadata(d) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(StorageError::Io {
                    op: "create directory",
                    path: d.to_path_buf(),
                    source: std::io::Error::new(
                        ErrorKind::NotADirectory,
                        "exists and is not a directory",
                    ),
                })
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                missing.push(d);
                cur = d.parent().filter(|p| !p.as_os_str().is_empty());
            }
            Err(e) => return Err(StorageError::from_io("stat", d, e)),
        }
    }
    for d in missing.into_iter().rev() {
        match DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {
                if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fsync_dir(parent)?;
                }
            }
            // Another writer created it in the meantime: fine.
            Err(e) if e.kind() == ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(StorageError::from_io("create directory", d, e)),
        }
    }
    Ok(())
}

/// Walks the tree under the deepest directory the prefix names, keeping files
/// whose key starts with `prefix` and skipping temp files.
fn list_blocking(root: &Path, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
    let mut out = Vec::new();
    walk(root, prefix, |found| {
        if let Found::Object(meta) = found {
            out.push(meta);
        }
    })?;
    Ok(out)
}

/// What [`walk`] finds under a prefix.
enum Found {
    /// An object whose key starts with the prefix.
    Object(ObjectMeta),
    /// A writer's temp file in a directory the walk went through.
    Temp {
        path: PathBuf,
        modified: Option<std::time::SystemTime>,
    },
}

/// Walks the directories that can hold keys starting with `prefix`.
fn walk(root: &Path, prefix: &str, mut found: impl FnMut(Found)) -> Result<(), StorageError> {
    let base = match prefix.rfind('/') {
        Some(i) => &prefix[..i],
        None => "",
    };
    let start = if base.is_empty() {
        root.to_path_buf()
    } else {
        root.join(base)
    };
    let mut stack = vec![(start, base.to_string())];
    while let Some((dir, key_dir)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if is_missing(&e) => continue,
            Err(e) => return Err(StorageError::from_io("list directory", dir, e)),
        };
        for entry in entries {
            let entry =
                entry.map_err(|e| StorageError::from_io("list directory", dir.clone(), e))?;
            let os_name = entry.file_name();
            let Some(name) = os_name.to_str() else {
                tracing::warn!(path = %entry.path().display(), "skipping a file whose name is not UTF-8");
                continue;
            };
            if is_temp_name(name) {
                let path = entry.path();
                let modified = entry.metadata().ok().and_then(|m| m.modified().ok());
                found(Found::Temp { path, modified });
                continue;
            }
            let key = if key_dir.is_empty() {
                name.to_string()
            } else {
                format!("{key_dir}/{name}")
            };
            let path = entry.path();
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                // Deleted while we were listing.
                Err(e) if is_missing(&e) => continue,
                Err(e) => return Err(StorageError::from_io("stat", path, e)),
            };
            if meta.is_dir() {
                // Descend only where keys can still match the prefix.
                let as_dir = format!("{key}/");
                if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                    stack.push((path, key));
                }
            } else if meta.is_file() && key.starts_with(prefix) {
                found(Found::Object(ObjectMeta {
                    key,
                    size: meta.len(),
                    modified: meta.modified().ok(),
                }));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_leaves_no_temp_file_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/obj");
        let err = write_atomic(&path, "sub/obj", PutMode::Overwrite, |f, tmp| {
            f.write_all(b"half").unwrap();
            Err(StorageError::from_io(
                "write",
                tmp,
                std::io::Error::from_raw_os_error(28),
            ))
        })
        .unwrap_err();
        assert!(matches!(err, StorageError::NoSpace { .. }), "{err:?}");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn reads_of_a_missing_repository_create_nothing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("typo/repo");
        let fs = FsStorage::open(&root);
        assert!(fs.get_bytes("main/stanza").await.unwrap().is_none());
        assert!(fs.head("main/stanza").await.unwrap().is_none());
        assert!(fs.list("main/").await.unwrap().is_empty());
        assert!(
            !dir.path().join("typo").exists(),
            "a read created the directory"
        );

        fs.put("main/stanza", Bytes::from_static(b"x"), PutMode::IfAbsent)
            .await
            .unwrap();
        for d in [dir.path().join("typo"), root.clone(), root.join("main")] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
    }

    #[tokio::test]
    async fn stale_temp_files_are_removed_fresh_ones_and_objects_kept() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsStorage::open(dir.path());
        fs.put(
            "main/wal/00000001/a",
            Bytes::from_static(b"x"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
        let wal = dir.path().join("main/wal/00000001");
        let old = wal.join(".b.tmp.0123456789abcdef");
        let fresh = wal.join(".c.tmp.0123456789abcdef");
        let elsewhere = dir.path().join("main/bundles/ab/.d.tmp.0123456789abcdef");
        std::fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
        for p in [&old, &fresh, &elsewhere] {
            std::fs::write(p, b"half").unwrap();
        }
        let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86400);
        for p in [&old, &elsewhere] {
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(two_days_ago)
                .unwrap();
        }
        let day = std::time::Duration::from_secs(86400);
        assert_eq!(fs.remove_stale_temps("main/wal/", day).await.unwrap(), 1);
        assert!(!old.exists(), "a temp file days old is a killed writer's");
        assert!(fresh.exists(), "a fresh one may have a writer");
        assert!(elsewhere.exists(), "outside the prefix");
        let keys: Vec<String> = fs
            .list("main/")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, ["main/wal/00000001/a"], "temp files are never listed");
    }

    #[test]
    fn list_prefix_inside_a_name() {
        let dir = tempfile::tempdir().unwrap();
        for k in ["a/b/x1", "a/b/x2", "a/b/y1", "a/c/x1", "ab"] {
            let p = dir.path().join(k);
            write_atomic(&p, k, PutMode::Overwrite, |f, _| {
                f.write_all(k.as_bytes()).unwrap();
                Ok(())
            })
            .unwrap();
        }
        let keys = |prefix: &str| {
            let mut v: Vec<_> = list_blocking(dir.path(), prefix)
                .unwrap()
                .into_iter()
                .map(|m| m.key)
                .collect();
            v.sort();
            v
        };
        assert_eq!(keys("a/b/x"), ["a/b/x1", "a/b/x2"]);
        assert_eq!(keys("a/"), ["a/b/x1", "a/b/x2", "a/b/y1", "a/c/x1"]);
        assert_eq!(keys("a"), ["a/b/x1", "a/b/x2", "a/b/y1", "a/c/x1", "ab"]);
        assert_eq!(keys(""), ["a/b/x1", "a/b/x2", "a/b/y1", "a/c/x1", "ab"]);
        assert!(keys("zz/").is_empty());
    }
}
