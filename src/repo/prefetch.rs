//! archive-get's read-ahead: after serving a segment, a background worker
//! fetches the next few segments of the same timeline into a local spool
//! directory (outside the data directory), so that PostgreSQL's replay does not
//! wait on the network for each one.
//!
//! The spool holds objects exactly as stored (still encrypted), one file per
//! WAL file name. A spooled segment is served only after the same verification
//! as one read from the repository (authenticated decryption, checksum, page
//! header against the stanza); an entry that fails it is discarded and the
//! segment is read from the repository instead. Entries behind the segment
//! being asked for, and entries older than [`STALE_AFTER`], are removed.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{layout, RepoError, Repository};
use crate::codec;
use crate::config::PrefetchSettings;
use crate::pg::wal::segment::{WalFileName, WalSegSize};

/// Spool entries older than this are not trusted to be wanted any more.
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);

/// Objects fetched at once by the worker.
const IN_FLIGHT: usize = 4;

/// The spool directory of one repository and stanza.
pub struct PrefetchSpool {
    dir: PathBuf,
}

impl PrefetchSpool {
    /// The spool for `repo`, created (0700) when missing. Its directory is
    /// specific to the repository, stanza and cluster, so that two
    /// repositories never share entries.
    pub fn open(settings: &PrefetchSettings, repo: &Repository) -> std::io::Result<PrefetchSpool> {
        let base = match &settings.spool {
            Some(dir) => dir.clone(),
            None => {
                let uid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
                std::env::temp_dir().join(format!("walship-prefetch-{uid}"))
            }
        };
        let identity = format!(
            "{}\n{}\n{}",
            repo.storage().describe(),
            repo.stanza().name,
            repo.stanza().system_id
        );
        let tag = blake3::hash(identity.as_bytes()).to_hex();
        let dir = base.join(format!("{}-{}", repo.stanza().name, &tag[..16]));
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

    fn entry(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Takes a verified segment out of the spool; `None` when it is not there
    /// or failed verification (then it is discarded with a warning).
    pub fn take(&self, repo: &Repository, name: &WalFileName) -> Option<Vec<u8>> {
        let seg_size = repo.seg_size().ok()?;
        let file = name.file_name(seg_size);
        let path = self.entry(&file);
        let stored = fs::read(&path).ok()?;
        let _ = fs::remove_file(&path);
        let key = layout::wal_object(&repo.stanza().name, name, seg_size);
        let verified = codec::decode_bytes(&key, &stored, repo.codec().key.clone())
            .map_err(RepoError::from)
            .and_then(|(plain, _)| repo.check_segment(name, &plain, &key).map(|()| plain));
        match verified {
            Ok(plain) => {
                tracing::debug!(file = %file, "served from the prefetch spool");
                Some(plain)
            }
            Err(e) => {
                tracing::warn!(file = %file, error = %e, "discarded a prefetched segment that failed verification");
                None
            }
        }
    }

    /// Removes entries behind `name` on its timeline and entries gone stale.
    pub fn prune(&self, name: &WalFileName, seg_size: WalSegSize) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let stale = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_AFTER);
            let behind = entry
                .file_name()
                .to_str()
                .and_then(|n| WalFileName::parse(n, seg_size).ok())
                .is_some_and(|n| match (n, name) {
                    (
                        WalFileName::Segment { tli: a, segno: s },
                        WalFileName::Segment { tli: b, segno: t },
                    ) => a == *b && s <= *t,
                    _ => false,
                });
            if stale || behind {
                let _ = fs::remove_file(&path);
            }
        }
    }

    /// Fetches the `depth` segments after `after` (same timeline) that are not
    /// spooled yet. Stops at the first segment the repository does not have.
    /// Holds the spool's lock: a second worker for the same spool returns at once.
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
        let seg_size = repo.seg_size()?;
        let wanted: Vec<WalFileName> = (1..=depth as u64)
            .map(|i| WalFileName::Segment {
                tli,
                segno: segno + i,
            })
            .filter(|n| !self.entry(&n.file_name(seg_size)).exists())
            .collect();
        let mut tasks = tokio::task::JoinSet::new();
        let mut pending = wanted.into_iter();
        loop {
            while tasks.len() < IN_FLIGHT {
                let Some(name) = pending.next() else { break };
                let repo = Arc::clone(repo);
                let dir = self.dir.clone();
                tasks.spawn(async move { spool_one(&repo, &dir, name).await });
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
}

/// Streams one stored object into the spool (temp file, then rename).
async fn spool_one(repo: &Repository, dir: &Path, name: WalFileName) -> Result<bool, RepoError> {
    let seg_size = repo.seg_size()?;
    let key = layout::wal_object(&repo.stanza().name, &name, seg_size);
    let Some(mut stream) = repo.storage().get(&key).await? else {
        return Ok(false);
    };
    let file = name.file_name(seg_size);
    let tmp = dir.join(format!(".{file}.{}.tmp", std::process::id()));
    let result: Result<(), RepoError> = async {
        let mut out = File::create(&tmp).map_err(|e| io_err("create", &tmp, e))?;
        while let Some(chunk) = stream.next_chunk().await? {
            out.write_all(&chunk)
                .map_err(|e| io_err("write", &tmp, e))?;
        }
        fs::rename(&tmp, dir.join(&file)).map_err(|e| io_err("rename", &tmp, e))
    }
    .await;
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> RepoError {
    RepoError::Spool {
        op,
        path: path.to_path_buf(),
        source,
    }
}
