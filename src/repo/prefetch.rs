//! archive-get's read-ahead: after serving a segment, a background worker
//! fetches, verifies and decodes the next few segments of the same timeline
//! into a local spool directory (outside the data directory), so that
//! PostgreSQL's replay waits neither on the network nor on decryption and
//! decompression for each one.
//!
//! Replay is serial: PostgreSQL runs `restore_command` for one segment, replays
//! it, then asks for the next. Decoding in archive-get put ~20 ms of CPU per
//! 16 MiB segment on that critical path; from the spool, archive-get only
//! checks the file and renames it into place.
//!
//! A spool entry is a plain segment named `<WAL file>.<crc32c>`: the worker
//! writes it only after the repository object passed the full verification
//! (authenticated decryption, BLAKE3 checksum, page header against the stanza)
//! and records the CRC-32C of the verified bytes in the name. archive-get
//! serves an entry only when its length, its CRC-32C and its first page (system
//! identifier, timeline, address, against the copy of the stanza kept in the
//! spool) still match; anything else (an entry damaged on disk, cut short by a
//! crash, or holding another segment) is discarded and the segment read from
//! the repository. Entries behind the segment being asked for, and entries
//! older than [`STALE_AFTER`], are removed.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::stanza::Stanza;
use super::wal::check_segment_start_for;
use super::{RepoError, Repository};
use crate::config::Settings;
use crate::pg::wal::segment::{WalFileName, WalSegSize};

/// Spool entries older than this are not trusted to be wanted any more.
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);

/// Segments decoded at once by the worker: replay itself needs a core.
const IN_FLIGHT: usize = 2;

/// The copy of the stanza the entries belong to.
const STANZA_FILE: &str = ".stanza.json";

/// The spool directory of one repository and stanza.
pub struct PrefetchSpool {
    dir: PathBuf,
}

impl PrefetchSpool {
    /// The spool for the repository and stanza of `settings`, created (0700)
    /// when missing. Nothing is read from the repository: archive-get serves
    /// from the spool without opening it. The directory name is specific to
    /// the repository (location, endpoint) and stanza, so that two
    /// repositories never share entries.
    pub fn open(settings: &Settings) -> std::io::Result<PrefetchSpool> {
        let base = match &settings.prefetch.spool {
            Some(dir) => dir.clone(),
            None => {
                let uid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
                std::env::temp_dir().join(format!("walship-prefetch-{uid}"))
            }
        };
        let identity = format!(
            "{:?}\n{:?}\n{}",
            settings.repo, settings.s3.endpoint, settings.stanza
        );
        let tag = blake3::hash(identity.as_bytes()).to_hex();
        let dir = base.join(format!("{}-{}", settings.stanza, &tag[..16]));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(PrefetchSpool { dir })
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The spooled entry of `file` and the CRC-32C its name records.
    fn find(&self, file: &str) -> Option<(PathBuf, u32)> {
        fs::read_dir(&self.dir).ok()?.flatten().find_map(|e| {
            let name = e.file_name();
            let crc = name.to_str()?.strip_prefix(file)?.strip_prefix('.')?;
            let crc = u32::from_str_radix(crc, 16)
                .ok()
                .filter(|_| crc.len() == 8)?;
            Some((e.path(), crc))
        })
    }

    fn stanza(&self) -> Option<Stanza> {
        let raw = fs::read(self.dir.join(STANZA_FILE)).ok()?;
        serde_json::from_slice(&raw).ok()
    }

    /// Serves `file` from the spool as `dest` (renamed into place, or copied
    /// when the spool is on another file system). `Ok(false)` when it is not
    /// spooled, or failed verification (then it is discarded with a warning).
    pub fn serve(&self, file: &str, dest: &Path) -> Result<bool, RepoError> {
        let Some((entry, crc)) = self.find(file) else {
            return Ok(false);
        };
        let verified = self
            .stanza()
            .ok_or("no stanza copy in the spool")
            .and_then(|stanza| {
                let seg_size = WalSegSize::new(stanza.wal_seg_size)
                    .map_err(|_| "bad stanza copy in the spool")?;
                let name = WalFileName::parse(file, seg_size).map_err(|_| "not a segment name")?;
                let origin = entry.display().to_string();
                let data = crate::storage::mapped::read_file(&entry).map_err(|_| "unreadable")?;
                if crc32c::crc32c(&data) != crc {
                    return Err("CRC-32C mismatch");
                }
                check_segment_start_for(&stanza, &name, &data, data.len() as u64, &origin)
                    .map_err(|_| "not the segment its name says")
            });
        if let Err(reason) = verified {
            tracing::warn!(entry = %entry.display(), reason, "discarded a prefetched segment that failed verification");
            let _ = fs::remove_file(&entry);
            return Ok(false);
        }
        match fs::rename(&entry, dest) {
            Ok(()) => {}
            // Another file system: copy beside DEST, then rename.
            Err(e) if e.raw_os_error() == Some(18 /* EXDEV */) => {
                let tmp =
                    dest.with_file_name(format!(".{file}.walship-{}.tmp", std::process::id()));
                let copied = fs::copy(&entry, &tmp).and_then(|_| fs::rename(&tmp, dest));
                if let Err(e) = copied {
                    let _ = fs::remove_file(&tmp);
                    return Err(io_err("copy", &entry, e));
                }
                let _ = fs::remove_file(&entry);
            }
            Err(e) => return Err(io_err("rename", &entry, e)),
        }
        tracing::debug!(file, "served from the prefetch spool");
        Ok(true)
    }

    /// Removes entries behind `file` on its timeline and entries gone stale;
    /// returns how many entries wait for the segments after it (archive-get
    /// starts a worker only when few do).
    pub fn prune(&self, file: &str) -> usize {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut ahead = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let position = entry_position(name.as_encoded_bytes(), file.as_bytes());
            let stale = position.is_some()
                && entry
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_AFTER);
            if stale || position.is_some_and(|p| p.is_le()) {
                let _ = fs::remove_file(entry.path());
            } else if position.is_some_and(|p| p.is_gt()) {
                ahead += 1;
            }
        }
        ahead
    }

    /// Fetches, verifies and decodes the `depth` segments after `after` (same
    /// timeline) that are not spooled yet. Stops at the first segment the
    /// repository does not have. Holds the spool's lock: a second worker for
    /// the same spool returns at once.
    pub async fn fill(
        &self,
        repo: &Arc<Repository>,
        after: &WalFileName,
        depth: usize,
    ) -> Result<(), RepoError> {
        let WalFileName::Segment { tli, segno } = *after else {
            return Ok(());
        };
        let lock_path = self.dir.join(".lock");
        let lock = File::create(&lock_path).map_err(|e| io_err("create", &lock_path, e))?;
        if lock.try_lock().is_err() {
            return Ok(());
        }
        self.keep_stanza(repo.stanza())?;
        let seg_size = repo.seg_size()?;
        let wanted: Vec<WalFileName> = (1..=depth as u64)
            .map(|i| WalFileName::Segment {
                tli,
                segno: segno + i,
            })
            .filter(|n| self.find(&n.file_name(seg_size)).is_none())
            .collect();
        let mut tasks = tokio::task::JoinSet::new();
        let mut pending = wanted.into_iter();
        loop {
            while tasks.len() < IN_FLIGHT {
                let Some(name) = pending.next() else { break };
                let repo = Arc::clone(repo);
                let dir = self.dir.clone();
                tasks.spawn(async move { spool_one(repo, dir, name).await });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            match joined {
                Ok(Ok(true)) => {}
                // Not in the repository (yet): the ones after it are not either.
                Ok(Ok(false)) => {
                    tasks.abort_all();
                    break;
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "prefetch failed; archive-get will read from the repository")
                }
                Err(_) => {}
            }
        }
        drop(lock);
        Ok(())
    }

    /// Keeps a copy of the repository's stanza beside the entries (what
    /// archive-get checks them against); when the stanza changed (the
    /// repository was recreated), the entries of the old one are dropped.
    fn keep_stanza(&self, stanza: &Stanza) -> Result<(), RepoError> {
        if self.stanza().as_ref() == Some(stanza) {
            return Ok(());
        }
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                if entry.file_name() != ".lock" {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let path = self.dir.join(STANZA_FILE);
        let tmp = self
            .dir
            .join(format!("{STANZA_FILE}.{}.tmp", std::process::id()));
        let json = serde_json::to_vec(stanza).map_err(|e| RepoError::BadMetadata {
            key: path.display().to_string(),
            reason: e.to_string(),
        })?;
        write_new(&tmp, &json)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| io_err("write", &path, e))
    }
}

/// Puts the calling thread, and every thread it starts afterwards, behind
/// everything else on the machine (`SCHED_IDLE`, nice 19). Call it before the
/// worker's runtime starts its threads.
///
/// Replay is serial: the startup process and each `restore_command` it starts
/// are the critical path. At normal priority the worker's decoding threads
/// took whole time slices from them on a 2-core machine (PostgreSQL's `vfork`
/// of the shell waited up to 38 ms for a CPU). Idle-class threads run only on
/// a CPU nobody else wants, which replay leaves plenty of; if they starve, the
/// spool runs dry and archive-get decodes the segment itself, as without one.
pub fn background_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system calls on the calling thread with a valid argument.
    let (sched, nice) = unsafe {
        (
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param),
            libc::setpriority(libc::PRIO_PROCESS, 0, 19),
        )
    };
    if sched != 0 || nice != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower the read-ahead worker's priority");
    }
}

/// Fetches one stored object, verifies and decodes it into the spool (temp
/// file, written back to disk, then renamed to `<file>.<crc32c>`). The spool
/// is a cache: the CRC-32C in the name, not an fsync of the directory,
/// catches an entry a crash left damaged.
async fn spool_one(
    repo: Arc<Repository>,
    dir: PathBuf,
    name: WalFileName,
) -> Result<bool, RepoError> {
    let Some(stored) = repo.fetch_wal_object(&name).await? else {
        return Ok(false);
    };
    tokio::task::spawn_blocking(move || {
        let file = name.file_name(repo.seg_size()?);
        let tmp = dir.join(format!(".{file}.{}.tmp", std::process::id()));
        let result = (|| {
            let out = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| io_err("create", &tmp, e))?;
            let mut out = CrcWriter {
                inner: std::io::BufWriter::with_capacity(1 << 20, out),
                crc: 0,
            };
            // One thread: PostgreSQL's replay needs the other core.
            repo.decode_wal_into(&name, &stored, &mut out)?;
            out.inner.flush().map_err(|e| io_err("write", &tmp, e))?;
            // Not for the spool's sake (a cache): PostgreSQL fsyncs every file
            // restore_command hands it (durable_rename), and writing 16 MiB
            // back there took ~10 ms per segment on replay's critical path.
            // Written back here, in the background, that fsync finds it clean.
            out.inner
                .get_ref()
                .sync_data()
                .map_err(|e| io_err("fsync", &tmp, e))?;
            let path = dir.join(format!("{file}.{:08x}", out.crc));
            fs::rename(&tmp, &path).map_err(|e| io_err("rename", &tmp, e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| true)
    })
    .await
    .map_err(|e| RepoError::BadMetadata {
        key: "prefetch".into(),
        reason: format!("the decoding task failed: {e}"),
    })?
}

/// Where the spool entry `name` (`<24 hex digits>.<crc32c>`) stands against
/// the segment `want` on the same timeline (the first 8 digits); `None` for
/// anything else (other timelines, the stanza copy, the lock, temp files).
fn entry_position(name: &[u8], want: &[u8]) -> Option<std::cmp::Ordering> {
    let ours = want.len() == 24 && name.len() > 25 && name[24] == b'.' && name[..8] == want[..8];
    ours.then(|| name[8..24].cmp(&want[8..24]))
}

/// A writer that keeps the CRC-32C of what went through it.
struct CrcWriter<W> {
    inner: W,
    crc: u32,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_new(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> RepoError {
    RepoError::Spool {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_worker_priority_reaches_threads_started_after_it() {
        // On a thread of its own: the policy must not leak into the test harness.
        let seen = std::thread::spawn(|| {
            super::background_priority();
            std::thread::spawn(|| {
                // SAFETY: plain system calls about the calling thread.
                unsafe {
                    (
                        libc::sched_getscheduler(0),
                        libc::getpriority(libc::PRIO_PROCESS, 0),
                    )
                }
            })
            .join()
        })
        .join()
        .expect("thread")
        .expect("inner thread");
        assert_eq!(seen, (libc::SCHED_IDLE, 19));
    }
}
