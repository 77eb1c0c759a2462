//! Writing the data directory: chunks fetched, verified and decoded in
//! parallel (at most `in_flight` at once, so memory stays bounded whatever the
//! cluster size), written in place at their offsets, each file fsynced with
//! its mode and mtime once its last chunk is in, every directory fsynced, and
//! `global/pg_control` written last of all (see [`write_control`]).
//!
//! With `--delta` the files already in the directory are reused: each file is
//! compared chunk by chunk with the manifest (the local bytes hashed the way
//! chunk ids are made) and only the chunks that differ are fetched; files the
//! backup does not have are removed. `global/pg_control` is removed before
//! anything else changes, so an interrupted delta restore does not start.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::Semaphore;

use super::RestoreError;
use crate::repo::backup::{BackupFile, BackupManifest, ChunkRef, FileKind};
use crate::repo::chunks::ChunkHasher;
use crate::repo::Repository;

/// The file PostgreSQL cannot start without: written last.
pub const PG_CONTROL: &str = "global/pg_control";

/// Chunks fetched and decoded at once by default (8 x 256 KiB in memory).
pub const DEFAULT_IN_FLIGHT: usize = 8;

/// How the data directory is written.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Reuse matching files in the directory (`--delta`).
    pub delta: bool,
    /// Move a non-empty directory aside (`--force`).
    pub force: bool,
    /// Tablespace OID to the directory it is restored into (`--tablespace-map`).
    pub tablespace_map: BTreeMap<u32, PathBuf>,
    /// Chunks fetched at once.
    pub in_flight: usize,
}

/// What the writer did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct WriteStats {
    /// Regular files in the backup.
    pub files: u64,
    /// Chunks fetched from the repository.
    pub chunks_fetched: u64,
    /// Chunks found already correct in the directory (`--delta`).
    pub chunks_reused: u64,
    /// Plaintext bytes fetched.
    pub bytes_fetched: u64,
    /// Plaintext bytes reused.
    pub bytes_reused: u64,
    /// Entries removed because the backup does not have them (`--delta`).
    pub removed: u64,
    /// Where a non-empty directory was moved (`--force`).
    pub moved_aside: Option<PathBuf>,
}

/// Parses `--tablespace-map OID=DIR` options (DIR must be absolute).
pub fn parse_tablespace_map(items: &[String]) -> Result<BTreeMap<u32, PathBuf>, RestoreError> {
    let mut map = BTreeMap::new();
    for item in items {
        let bad = |why: &str| {
            RestoreError::BadInput(format!(
                "--tablespace-map `{item}`: {why} (expected OID=/abs/dir)"
            ))
        };
        let (oid, dir) = item.split_once('=').ok_or_else(|| bad("no `=`"))?;
        let oid: u32 = oid.trim().parse().map_err(|_| bad("OID is not a number"))?;
        let dir = PathBuf::from(dir);
        if !dir.is_absolute() {
            return Err(bad("the directory must be an absolute path"));
        }
        if map.insert(oid, dir).is_some() {
            return Err(bad("OID given twice"));
        }
    }
    Ok(map)
}

/// Where each tablespace of the backup goes.
pub fn tablespace_locations(
    manifest: &BackupManifest,
    map: &BTreeMap<u32, PathBuf>,
) -> Result<BTreeMap<u32, PathBuf>, RestoreError> {
    for oid in map.keys() {
        if !manifest.tablespaces.iter().any(|t| t.oid == *oid) {
            return Err(RestoreError::BadInput(format!(
                "--tablespace-map: backup {} has no tablespace {oid} (it has: {})",
                manifest.id,
                manifest
                    .tablespaces
                    .iter()
                    .map(|t| format!("{} at {}", t.oid, t.location))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(manifest
        .tablespaces
        .iter()
        .map(|t| {
            (
                t.oid,
                map.get(&t.oid)
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from(&t.location)),
            )
        })
        .collect())
}

/// Checks, without changing anything, that the directory (and the
/// tablespace directories) can be restored into with these options.
pub fn check_dirs(
    dir: &Path,
    tablespaces: &BTreeMap<u32, PathBuf>,
    opts: &WriteOptions,
) -> Result<(), RestoreError> {
    check_not_running(dir)?;
    if !opts.delta && !opts.force && !is_empty_or_absent(dir)? {
        return Err(RestoreError::NotEmpty {
            path: dir.to_path_buf(),
        });
    }
    for loc in tablespaces.values() {
        if loc.starts_with(dir) {
            return Err(RestoreError::BadInput(format!(
                "tablespace directory {} is inside the data directory {}",
                loc.display(),
                dir.display()
            )));
        }
        if !opts.delta && !opts.force && !is_empty_or_absent(loc)? {
            return Err(RestoreError::NotEmpty { path: loc.clone() });
        }
    }
    Ok(())
}

fn is_empty_or_absent(dir: &Path) -> Result<bool, RestoreError> {
    match fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(RestoreError::io("read directory", dir)(e)),
    }
}

/// Refuses a directory a live server uses (`postmaster.pid` with a live pid).
fn check_not_running(dir: &Path) -> Result<(), RestoreError> {
    let pidfile = dir.join("postmaster.pid");
    let Ok(text) = fs::read_to_string(&pidfile) else {
        return Ok(());
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return Ok(());
    };
    if pid > 0 && Path::new(&format!("/proc/{pid}")).exists() {
        return Err(RestoreError::ServerRunning {
            path: dir.to_path_buf(),
            pid,
        });
    }
    Ok(())
}

/// Makes the directory ready: moves a non-empty one aside with `--force`
/// (returns where), creates it 0700. With `--delta` it removes
/// `global/pg_control` first of all.
pub fn prepare_dirs(
    dir: &Path,
    tablespaces: &BTreeMap<u32, PathBuf>,
    opts: &WriteOptions,
) -> Result<Option<PathBuf>, RestoreError> {
    check_dirs(dir, tablespaces, opts)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let mut moved = None;
    if !opts.delta && opts.force {
        if !is_empty_or_absent(dir)? {
            moved = Some(move_aside(dir, &stamp)?);
        }
        for loc in tablespaces.values() {
            if !is_empty_or_absent(loc)? {
                move_aside(loc, &stamp)?;
            }
        }
    }
    create_dir_0700(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(RestoreError::io("chmod", dir))?;
    if opts.delta {
        let control = dir.join(PG_CONTROL);
        match fs::remove_file(&control) {
            Ok(()) => fsync_dir(&dir.join("global"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(RestoreError::io("remove", &control)(e)),
        }
    }
    Ok(moved)
}

fn move_aside(path: &Path, stamp: &str) -> Result<PathBuf, RestoreError> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".pre-restore-{stamp}"));
    let aside = PathBuf::from(name);
    if aside.exists() {
        return Err(RestoreError::BadInput(format!(
            "cannot move {} aside: {} already exists",
            path.display(),
            aside.display()
        )));
    }
    fs::rename(path, &aside).map_err(RestoreError::io("move aside", path))?;
    if let Some(parent) = path.parent() {
        fsync_dir(parent)?;
    }
    tracing::info!(from = %path.display(), to = %aside.display(), "moved the existing directory aside");
    Ok(aside)
}

fn create_dir_0700(dir: &Path) -> Result<(), RestoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(RestoreError::io("create directory", dir))
}

fn fsync_dir(dir: &Path) -> Result<(), RestoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(RestoreError::io("fsync directory", dir))
}

/// A manifest path made safe: relative, no `..`, no empty components.
fn safe_rel(manifest: &BackupManifest, path: &str) -> Result<PathBuf, RestoreError> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !path.contains('\0');
    if !ok {
        return Err(RestoreError::BadManifest {
            backup: manifest.id.clone(),
            path: path.to_string(),
            reason: "not a relative path inside the data directory".into(),
        });
    }
    Ok(p.to_path_buf())
}

/// The tablespace OID of a `pg_tblspc/<oid>` link path.
fn tablespace_link_oid(path: &str) -> Option<u32> {
    path.strip_prefix("pg_tblspc/")
        .filter(|r| !r.contains('/'))
        .and_then(|r| r.parse().ok())
}

struct OpenFile {
    file: File,
    path: PathBuf,
    mode: u32,
    mtime: i64,
    remaining: AtomicUsize,
}

impl OpenFile {
    /// Called once per chunk written; the last one fsyncs and sets the mode.
    fn chunk_done(&self) -> Result<(), RestoreError> {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish()?;
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), RestoreError> {
        self.file
            .set_permissions(fs::Permissions::from_mode(self.mode & 0o7777))
            .map_err(RestoreError::io("chmod", &self.path))?;
        if self.mtime > 0 {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(self.mtime as u64);
            // Cosmetic: a failure to set the mtime is not worth failing for.
            let _ = self.file.set_modified(t);
        }
        self.file
            .sync_all()
            .map_err(RestoreError::io("fsync", &self.path))
    }
}

/// Writes every entry of the backup except `global/pg_control` into `dir`
/// (prepared by [`prepare_dirs`]), and fsyncs everything written. Needs a
/// multi-threaded tokio runtime (local reads run in `block_in_place`).
pub async fn write_backup(
    repo: Arc<Repository>,
    manifest: &BackupManifest,
    dir: &Path,
    tablespaces: &BTreeMap<u32, PathBuf>,
    opts: &WriteOptions,
) -> Result<WriteStats, RestoreError> {
    let mut stats = WriteStats::default();
    // Directories first (with their modes), then links.
    let mut dirs: Vec<PathBuf> = vec![dir.to_path_buf()];
    let wanted: HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    if opts.delta {
        stats.removed = remove_extraneous(manifest, dir, tablespaces, &wanted)?;
    }
    for loc in tablespaces.values() {
        create_dir_0700(loc)?;
        dirs.push(loc.clone());
    }
    for f in &manifest.files {
        let rel = safe_rel(manifest, &f.path)?;
        let abs = dir.join(&rel);
        match &f.kind {
            FileKind::Dir => {
                create_dir_0700(&abs)?;
                fs::set_permissions(&abs, fs::Permissions::from_mode(f.mode & 0o7777))
                    .map_err(RestoreError::io("chmod", &abs))?;
                dirs.push(abs);
            }
            FileKind::Symlink { target } => {
                let to = match tablespace_link_oid(&f.path).and_then(|o| tablespaces.get(&o)) {
                    Some(loc) => loc.clone(),
                    None => PathBuf::from(target),
                };
                if let Some(parent) = abs.parent() {
                    create_dir_0700(parent)?;
                }
                replace_symlink(&abs, &to)?;
            }
            FileKind::File => {}
        }
    }
    // Tablespaces the manifest lists without a link entry still need one.
    for (oid, loc) in tablespaces {
        let link = dir.join("pg_tblspc").join(oid.to_string());
        if !wanted.contains(format!("pg_tblspc/{oid}").as_str()) {
            create_dir_0700(&dir.join("pg_tblspc"))?;
            replace_symlink(&link, loc)?;
        }
    }
    for must in ["pg_wal", "pg_wal/archive_status", "global"] {
        let p = dir.join(must);
        if !p.exists() {
            create_dir_0700(&p)?;
            dirs.push(p);
        }
    }

    // Files: chunks in parallel, bounded.
    let hasher = ChunkHasher::new(repo.codec());
    let permits = Arc::new(Semaphore::new(opts.in_flight.max(1)));
    let mut tasks: tokio::task::JoinSet<Result<(u64, u64), RestoreError>> =
        tokio::task::JoinSet::new();
    for f in manifest.files.iter().filter(|f| f.kind == FileKind::File) {
        stats.files += 1;
        if f.path == PG_CONTROL {
            continue;
        }
        let rel = safe_rel(manifest, &f.path)?;
        let abs = dir.join(&rel);
        check_chunks_cover(manifest, f)?;
        // Local reads and hashing (--delta) block: keep them off the
        // runtime's worker so in-flight fetches keep moving.
        let (file, fetch) = tokio::task::block_in_place(|| {
            let (file, reuse) = open_for_restore(&abs, f, opts.delta)?;
            // Which chunks must be fetched.
            let mut fetch: Vec<(u64, ChunkRef)> = Vec::new();
            let mut offset = 0u64;
            let mut buf = Vec::new();
            for c in &f.chunks {
                let same = reuse
                    && read_local(&file, offset, c.len as usize, &mut buf)
                        .map_err(RestoreError::io("read", &abs))?
                    && hasher.id(&buf) == c.id;
                if same {
                    stats.chunks_reused += 1;
                    stats.bytes_reused += u64::from(c.len);
                } else {
                    fetch.push((offset, c.clone()));
                }
                offset += u64::from(c.len);
            }
            Ok::<_, RestoreError>((file, fetch))
        })?;
        let open = Arc::new(OpenFile {
            file,
            path: abs,
            mode: f.mode,
            mtime: f.mtime,
            remaining: AtomicUsize::new(fetch.len()),
        });
        if fetch.is_empty() {
            let o = Arc::clone(&open);
            tokio::task::spawn_blocking(move || o.finish())
                .await
                .map_err(|e| task_failed(&f.path, e))??;
            continue;
        }
        for (offset, chunk) in fetch {
            let permit = Arc::clone(&permits)
                .acquire_owned()
                .await
                .map_err(|e| RestoreError::BadInput(format!("internal: {e}")))?;
            // Reap what finished, so the first failure stops us early.
            while let Some(done) = tasks.try_join_next() {
                let (n, bytes) = done.map_err(|e| task_failed(&f.path, e))??;
                stats.chunks_fetched += n;
                stats.bytes_fetched += bytes;
            }
            let repo = Arc::clone(&repo);
            let open = Arc::clone(&open);
            let file_name = f.path.clone();
            tasks.spawn(async move {
                let data = repo
                    .read_chunk(&chunk)
                    .await
                    .map_err(|cause| RestoreError::Chunk {
                        chunk: chunk.id.clone(),
                        file: file_name.clone(),
                        cause: Box::new(cause),
                    })?;
                let len = data.len() as u64;
                tokio::task::spawn_blocking(move || {
                    open.file
                        .write_all_at(&data, offset)
                        .map_err(RestoreError::io("write", &open.path))?;
                    open.chunk_done()
                })
                .await
                .map_err(|e| task_failed(&file_name, e))??;
                drop(permit);
                Ok((1, len))
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        let (n, bytes) = done.map_err(|e| task_failed("a file", e))??;
        stats.chunks_fetched += n;
        stats.bytes_fetched += bytes;
    }
    // Every directory that got entries, deepest first.
    let mut all_dirs: HashSet<PathBuf> = dirs.into_iter().collect();
    for f in &manifest.files {
        if let Some(parent) = dir.join(&f.path).parent() {
            all_dirs.insert(parent.to_path_buf());
        }
    }
    let mut all_dirs: Vec<PathBuf> = all_dirs.into_iter().collect();
    all_dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    tokio::task::spawn_blocking(move || -> Result<(), RestoreError> {
        for d in &all_dirs {
            if d.is_dir() {
                fsync_dir(d)?;
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| task_failed("directories", e))??;
    rewrite_tablespace_map(manifest, dir, tablespaces)?;
    Ok(stats)
}

fn task_failed(what: &str, e: tokio::task::JoinError) -> RestoreError {
    RestoreError::Io {
        op: "restore task",
        path: PathBuf::from(what),
        cause: std::io::Error::other(e.to_string()),
    }
}

/// The chunks of a file must add up to its size.
fn check_chunks_cover(manifest: &BackupManifest, f: &BackupFile) -> Result<(), RestoreError> {
    let sum: u64 = f.chunks.iter().map(|c| u64::from(c.len)).sum();
    if sum != f.size {
        return Err(RestoreError::BadManifest {
            backup: manifest.id.clone(),
            path: f.path.clone(),
            reason: format!("its chunks hold {sum} bytes but its size is {}", f.size),
        });
    }
    Ok(())
}

/// Opens (creating) a file for writing its chunks; sized to the manifest's
/// size. Returns whether its existing content may be reused (delta).
fn open_for_restore(abs: &Path, f: &BackupFile, delta: bool) -> Result<(File, bool), RestoreError> {
    let mut reuse = false;
    if delta {
        match fs::symlink_metadata(abs) {
            Ok(m) if m.file_type().is_file() => reuse = true,
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(abs).map_err(RestoreError::io("remove", abs))?
            }
            Ok(_) => fs::remove_file(abs).map_err(RestoreError::io("remove", abs))?,
            Err(_) => {}
        }
    }
    if let Some(parent) = abs.parent() {
        create_dir_0700(parent)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(!reuse)
        .mode(0o600)
        .open(abs)
        .map_err(RestoreError::io("create", abs))?;
    file.set_len(f.size)
        .map_err(RestoreError::io("resize", abs))?;
    Ok((file, reuse))
}

/// Reads `len` bytes at `offset`; false when the file is shorter.
fn read_local(file: &File, offset: u64, len: usize, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.resize(len, 0);
    match file.read_exact_at(buf, offset) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn replace_symlink(link: &Path, to: &Path) -> Result<(), RestoreError> {
    match fs::symlink_metadata(link) {
        Ok(m) if m.file_type().is_symlink() => {
            if fs::read_link(link).ok().as_deref() == Some(to) {
                return Ok(());
            }
            fs::remove_file(link).map_err(RestoreError::io("remove", link))?;
        }
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(link).map_err(RestoreError::io("remove", link))?
        }
        Ok(_) => fs::remove_file(link).map_err(RestoreError::io("remove", link))?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink(to, link).map_err(RestoreError::io("create symlink", link))
}

/// `--delta`: removes what the backup does not have (in the data directory
/// and in the tablespace directories). Returns the number of entries removed.
fn remove_extraneous(
    manifest: &BackupManifest,
    dir: &Path,
    tablespaces: &BTreeMap<u32, PathBuf>,
    wanted: &HashSet<&str>,
) -> Result<u64, RestoreError> {
    let kinds: HashMap<&str, &FileKind> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), &f.kind))
        .collect();
    let mut removed = 0;
    let mut stack: Vec<(PathBuf, String)> = vec![(dir.to_path_buf(), String::new())];
    for (oid, loc) in tablespaces {
        if loc.is_dir() {
            stack.push((loc.clone(), format!("pg_tblspc/{oid}")));
        }
    }
    while let Some((abs_dir, rel_dir)) = stack.pop() {
        let entries =
            fs::read_dir(&abs_dir).map_err(RestoreError::io("read directory", &abs_dir))?;
        for e in entries {
            let e = e.map_err(RestoreError::io("read directory", &abs_dir))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else {
                // Not UTF-8: never a PostgreSQL file.
                remove_any(&e.path())?;
                removed += 1;
                continue;
            };
            let rel = if rel_dir.is_empty() {
                name.to_string()
            } else {
                format!("{rel_dir}/{name}")
            };
            let abs = e.path();
            let meta = fs::symlink_metadata(&abs).map_err(RestoreError::io("stat", &abs))?;
            let keep = match (kinds.get(rel.as_str()), wanted.contains(rel.as_str())) {
                (Some(FileKind::Dir), _) => meta.is_dir(),
                (Some(FileKind::File), _) => meta.file_type().is_file(),
                (Some(FileKind::Symlink { .. }), _) => meta.file_type().is_symlink(),
                (None, _) => {
                    // A tablespace link is walked through its location instead.
                    tablespace_link_oid(&rel).is_some_and(|o| tablespaces.contains_key(&o))
                        && meta.file_type().is_symlink()
                }
            };
            if !keep {
                remove_any(&abs)?;
                removed += 1;
            } else if meta.is_dir() {
                stack.push((abs, rel));
            }
        }
    }
    Ok(removed)
}

fn remove_any(p: &Path) -> Result<(), RestoreError> {
    let meta = fs::symlink_metadata(p).map_err(RestoreError::io("stat", p))?;
    if meta.is_dir() {
        fs::remove_dir_all(p).map_err(RestoreError::io("remove", p))
    } else {
        fs::remove_file(p).map_err(RestoreError::io("remove", p))
    }
}

/// A `tablespace_map` file in the backup names the original locations, and
/// PostgreSQL recreates the links from it at startup: point it at the
/// restored locations.
fn rewrite_tablespace_map(
    manifest: &BackupManifest,
    dir: &Path,
    tablespaces: &BTreeMap<u32, PathBuf>,
) -> Result<(), RestoreError> {
    let path = dir.join("tablespace_map");
    if !manifest.files.iter().any(|f| f.path == "tablespace_map") || tablespaces.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(RestoreError::io("read", &path))?;
    let mut out = String::new();
    for line in text.lines() {
        let oid = line.split(' ').next().and_then(|o| o.parse::<u32>().ok());
        match oid.and_then(|o| tablespaces.get(&o).map(|l| (o, l))) {
            Some((o, loc)) => {
                let escaped = loc
                    .to_string_lossy()
                    .replace('\\', "\\\\")
                    .replace('\n', "\\\n")
                    .replace('\r', "\\\r");
                out.push_str(&format!("{o} {escaped}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    write_durably(&path, out.as_bytes(), 0o600)
}

/// Writes a small file through a temp file, fsync, rename, fsync dir.
pub fn write_durably(path: &Path, data: &[u8], mode: u32) -> Result<(), RestoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".walship-tmp");
    let tmp = PathBuf::from(tmp_name);
    let result = (|| -> std::io::Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all_at(data, 0)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(RestoreError::io("write", path)(e));
    }
    Ok(())
}

/// Writes `global/pg_control`: the last file of a restore, after everything
/// else (recovery settings included) is durable. Until it exists PostgreSQL
/// refuses to start on the directory.
pub async fn write_control(
    repo: &Repository,
    manifest: &BackupManifest,
    dir: &Path,
) -> Result<(), RestoreError> {
    let f = manifest
        .files
        .iter()
        .find(|f| f.path == PG_CONTROL && f.kind == FileKind::File)
        .ok_or_else(|| RestoreError::BadManifest {
            backup: manifest.id.clone(),
            path: PG_CONTROL.into(),
            reason: "the backup has no global/pg_control".into(),
        })?;
    check_chunks_cover(manifest, f)?;
    let mut data = Vec::with_capacity(f.size as usize);
    for c in &f.chunks {
        let chunk = repo
            .read_chunk(c)
            .await
            .map_err(|cause| RestoreError::Chunk {
                chunk: c.id.clone(),
                file: f.path.clone(),
                cause: Box::new(cause),
            })?;
        data.extend_from_slice(&chunk);
    }
    let path = dir.join(PG_CONTROL);
    write_durably(&path, &data, f.mode & 0o7777)?;
    fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tablespace_map_option() {
        let m = parse_tablespace_map(&["16384=/srv/ts1".into(), "16385=/srv/ts2".into()]).unwrap();
        assert_eq!(m[&16384], PathBuf::from("/srv/ts1"));
        assert!(parse_tablespace_map(&["16384".into()]).is_err());
        assert!(parse_tablespace_map(&["x=/a".into()]).is_err());
        assert!(parse_tablespace_map(&["1=rel".into()]).is_err());
        assert!(parse_tablespace_map(&["1=/a".into(), "1=/b".into()]).is_err());
    }

    #[test]
    fn link_oids() {
        assert_eq!(tablespace_link_oid("pg_tblspc/16384"), Some(16384));
        assert_eq!(tablespace_link_oid("pg_tblspc/16384/PG_15"), None);
        assert_eq!(tablespace_link_oid("base/1"), None);
    }

    #[test]
    fn dir_checks() {
        let t = tempfile::tempdir().unwrap();
        let opts = WriteOptions {
            delta: false,
            force: false,
            tablespace_map: BTreeMap::new(),
            in_flight: 8,
        };
        let none = BTreeMap::new();
        check_dirs(&t.path().join("absent"), &none, &opts).unwrap();
        check_dirs(t.path(), &none, &opts).unwrap();
        fs::write(t.path().join("x"), b"1").unwrap();
        assert!(matches!(
            check_dirs(t.path(), &none, &opts),
            Err(RestoreError::NotEmpty { .. })
        ));
        let force = WriteOptions {
            force: true,
            ..opts.clone()
        };
        let moved = prepare_dirs(t.path(), &none, &force).unwrap().unwrap();
        assert!(moved.to_string_lossy().contains(".pre-restore-"));
        assert!(moved.join("x").exists());
        assert!(is_empty_or_absent(t.path()).unwrap());
        fs::remove_dir_all(&moved).unwrap();
    }
}
