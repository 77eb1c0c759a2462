//! Waiting for the WAL a backup needs: every segment from the one holding
//! the start LSN to the one holding the last byte before the stop LSN must be
//! in the repository before the backup is published. The WAL arrives through
//! archive-push, `walship stream`, or anything else that stores segments;
//! PostgreSQL archives the last one only after the backup ends (it switches
//! segments at backup stop).

use std::time::{Duration, Instant};

use super::BackupError;
use crate::pg::wal::segment::{segment_file_name, TimelineId, WalFileName};
use crate::pg::wal::Lsn;
use crate::repo::backup::BackupManifest;
use crate::repo::layout;
use crate::repo::Repository;

/// How often the repository is looked at.
const POLL: Duration = Duration::from_millis(500);

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
    let mut next = first;
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
        tracing::debug!(segment = %segment_file_name(tli, next, seg_size), "waiting for WAL");
        tokio::time::sleep(POLL).await;
    }
    tracing::info!(
        first = %segment_file_name(tli, first, seg_size),
        last = %segment_file_name(tli, last, seg_size),
        "the WAL the backup needs is in the repository"
    );
    Ok(())
}

/// The error for a server that, at the end of the backup, waited longer than
/// `timeout` for its archiver: names the first segment from the backup's
/// start that is not in the repository (the one it is most likely waiting for).
pub async fn server_waits_for_wal(
    repo: &Repository,
    start: Lsn,
    tli: TimelineId,
    timeout: Duration,
) -> BackupError {
    let seg_size = match repo.seg_size() {
        Ok(s) => s,
        Err(e) => return e.into(),
    };
    let mut segno = start.segment_number(seg_size);
    // Bounded: a backup's WAL rarely spans more than a few thousand segments.
    for _ in 0..100_000 {
        let name = WalFileName::Segment { tli, segno };
        let key = layout::wal_object(&repo.stanza().name, &name, seg_size);
        match repo.storage().head(&key).await {
            Ok(Some(_)) => segno += 1,
            Ok(None) => break,
            Err(e) => return crate::repo::RepoError::from(e).into(),
        }
    }
    BackupError::WalMissing {
        segment: segment_file_name(tli, segno, seg_size),
        start: start.to_string(),
        stop: "(not reported: PostgreSQL sent nothing more after the last file, most likely still waiting for its archiver)".into(),
        waited_secs: timeout.as_secs(),
        hint: WAL_HINT,
    }
}
