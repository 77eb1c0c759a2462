//! Waiting for the WAL a backup needs: every segment from the one holding
//! the start LSN to the one holding the last byte before the stop LSN must be
//! in the repository before the backup is published. The WAL arrives through
//! archive-push, `walship stream`, or anything else that stores segments;
//! PostgreSQL archives the last one only after the backup ends (it switches
//! segments at backup stop; `BASE_BACKUP` is told not to wait for that, as
//! this wait is the one that counts: see `pg/basebackup.rs`).

use std::time::{Duration, Instant};

use super::BackupError;
use crate::pg::wal::segment::{segment_file_name, WalFileName};
use crate::repo::backup::BackupManifest;
use crate::repo::layout;
use crate::repo::Repository;

/// The repository is looked at this often at first: the last segment is
/// usually stored a few tens of milliseconds after the backup ends, and every
/// millisecond between its arrival and our look is added to the backup's
/// time (a look is a stat, or one HEAD request on S3).
const POLL_FIRST: Duration = Duration::from_millis(5);
/// How long the looks stay that frequent; then each wait doubles, up to
/// [`POLL_MAX`].
const POLL_FAST_FOR: Duration = Duration::from_secs(1);
/// The longest wait between two looks at the repository.
const POLL_MAX: Duration = Duration::from_millis(500);

/// Why a segment usually does not arrive (part of the error).
pub const WAL_HINT: &str = "the WAL reaches the repository through PostgreSQL's archive_command \
     (archive_mode = on and archive_command = 'walship archive-push %p' with the same repository \
     and stanza; see pg_stat_archiver and the server log for failures) or a running \
     `walship stream`; neither delivered it. Raise WALSHIP_BACKUP_WAL_TIMEOUT \
     ([backup] wal_timeout) if archiving is merely slow";

/// Waits until every segment the backup needs is stored, or `timeout`.
pub async fn wait_for_wal(
    repo: &Repository,
    manifest: &BackupManifest,
    timeout: Duration,
) -> Result<(), BackupError> {
    let seg_size = repo.seg_size()?;
    let (tli, first, last) = manifest.wal_segments(seg_size);
    let started = Instant::now();
    let mut poll = POLL_FIRST;
    let mut next = first;
    let mut waiting_for = None;
    while next <= last {
        let name = WalFileName::Segment { tli, segno: next };
        let key = layout::wal_object(&repo.stanza().name, &name, seg_size);
        if repo
            .storage()
            .head(&key)
            .await
            .map_err(crate::repo::RepoError::from)?
            .is_some()
        {
            next += 1;
            continue;
        }
        if started.elapsed() >= timeout {
            return Err(BackupError::WalMissing {
                segment: segment_file_name(tli, next, seg_size),
                start: manifest.start_lsn.to_string(),
                stop: manifest.stop_lsn.to_string(),
                waited_secs: started.elapsed().as_secs(),
                hint: WAL_HINT,
            });
        }
        if waiting_for != Some(next) {
            tracing::debug!(segment = %segment_file_name(tli, next, seg_size), "waiting for WAL");
            waiting_for = Some(next);
        }
        tokio::time::sleep(poll).await;
        if started.elapsed() >= POLL_FAST_FOR {
            poll = (poll * 2).min(POLL_MAX);
        }
    }
    tracing::info!(
        first = %segment_file_name(tli, first, seg_size),
        last = %segment_file_name(tli, last, seg_size),
        "the WAL the backup needs is in the repository"
    );
    Ok(())
}
