//! The WAL archive as a whole: which files each timeline holds, where the gaps
//! are, and (from the index) the recoverable window. `info`, `verify` and
//! `restore` read the archive through this.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::index::{format_unix_micros, WalIndexEntry};
use super::{layout, RepoError, Repository};
use crate::pg::wal::segment::{segment_file_name, TimelineId, WalFileName, WalSegSize};
use crate::pg::wal::Lsn;
use crate::storage::ObjectMeta;

/// The objects of one timeline.
#[derive(Debug, Default, Clone)]
pub struct TimelineFiles {
    /// Full segments by segment number.
    pub segments: BTreeMap<u64, ObjectMeta>,
    /// `.partial` segments by segment number.
    pub partials: BTreeMap<u64, ObjectMeta>,
    /// `.backup` history files.
    pub backup_files: Vec<ObjectMeta>,
    /// The `<TLI>.history` file, when stored.
    pub history: Option<ObjectMeta>,
}

/// A run of missing segments `[first, last]` (segment numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// First missing segment number.
    pub first: u64,
    /// Last missing segment number.
    pub last: u64,
}

impl TimelineFiles {
    /// The first and last full segment numbers.
    pub fn range(&self) -> Option<(u64, u64)> {
        Some((
            *self.segments.keys().next()?,
            *self.segments.keys().next_back()?,
        ))
    }

    /// Missing segments between the first and the last stored one.
    pub fn gaps(&self) -> Vec<Gap> {
        let mut gaps = Vec::new();
        let mut prev: Option<u64> = None;
        for &segno in self.segments.keys() {
            if let Some(p) = prev {
                if segno > p + 1 {
                    gaps.push(Gap {
                        first: p + 1,
                        last: segno - 1,
                    });
                }
            }
            prev = Some(segno);
        }
        gaps
    }
}

/// The whole WAL archive of a stanza.
#[derive(Debug, Default, Clone)]
pub struct WalCatalog {
    /// Files per timeline.
    pub timelines: BTreeMap<TimelineId, TimelineFiles>,
    /// Objects under `wal/` whose names are not WAL file names.
    pub unknown: Vec<String>,
}

impl WalCatalog {
    /// Lists the stanza's WAL archive (one listing of the storage).
    pub async fn load(repo: &Repository) -> Result<WalCatalog, RepoError> {
        let seg_size = repo.seg_size()?;
        let prefix = layout::wal_prefix(&repo.stanza().name);
        let mut catalog = WalCatalog::default();
        for meta in repo.storage().list(&prefix).await? {
            let file = meta.key.rsplit('/').next().unwrap_or_default().to_string();
            match WalFileName::parse(&file, seg_size) {
                Ok(WalFileName::Segment { tli, segno }) => {
                    catalog
                        .timelines
                        .entry(tli)
                        .or_default()
                        .segments
                        .insert(segno, meta);
                }
                Ok(WalFileName::Partial { tli, segno }) => {
                    catalog
                        .timelines
                        .entry(tli)
                        .or_default()
                        .partials
                        .insert(segno, meta);
                }
                Ok(WalFileName::History { tli }) => {
                    catalog.timelines.entry(tli).or_default().history = Some(meta);
                }
                Ok(WalFileName::Backup { tli, .. }) => {
                    catalog
                        .timelines
                        .entry(tli)
                        .or_default()
                        .backup_files
                        .push(meta);
                }
                Err(_) => catalog.unknown.push(meta.key),
            }
        }
        Ok(catalog)
    }

    /// Loads the index entries of every full segment, a few at a time.
    /// Segments without an entry are absent from the map.
    pub async fn load_index(
        &self,
        repo: &Arc<Repository>,
    ) -> Result<BTreeMap<(TimelineId, u64), WalIndexEntry>, RepoError> {
        let seg_size = repo.seg_size()?;
        let mut wanted: Vec<(TimelineId, u64, String)> = Vec::new();
        for (&tli, files) in &self.timelines {
            for &segno in files.segments.keys() {
                wanted.push((tli, segno, segment_file_name(tli, segno, seg_size)));
            }
        }
        let mut out = BTreeMap::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut pending = wanted.into_iter();
        const IN_FLIGHT: usize = 16;
        loop {
            while tasks.len() < IN_FLIGHT {
                let Some((tli, segno, file)) = pending.next() else {
                    break;
                };
                let repo = Arc::clone(repo);
                tasks.spawn(async move { (tli, segno, repo.get_index(tli, &file).await) });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (tli, segno, entry) = joined.map_err(|e| RepoError::BadMetadata {
                key: "WAL index".into(),
                reason: format!("index reader task failed: {e}"),
            })?;
            if let Some(entry) = entry? {
                out.insert((tli, segno), entry);
            }
        }
        Ok(out)
    }
}

/// The recoverable window as the interface reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoverableWindow {
    /// Earliest time a restore can reach (RFC 3339 UTC).
    pub earliest_time: Option<String>,
    /// Latest archived commit time (RFC 3339 UTC).
    pub latest_time: Option<String>,
    /// Earliest LSN a restore can reach.
    pub earliest_lsn: Option<Lsn>,
    /// End of the last complete WAL record archived.
    pub latest_lsn: Option<Lsn>,
    /// The timeline the window is on.
    pub timeline: Option<TimelineId>,
}

/// The window the WAL alone supports: the newest timeline's last contiguous run
/// of segments, from the first commit in it to the last. (Backups narrow the
/// start of the window: a restore starts from a backup.)
pub fn wal_window(
    catalog: &WalCatalog,
    index: &BTreeMap<(TimelineId, u64), WalIndexEntry>,
    seg_size: WalSegSize,
) -> RecoverableWindow {
    let Some((&tli, files)) = catalog
        .timelines
        .iter()
        .rev()
        .find(|(_, f)| !f.segments.is_empty())
    else {
        return RecoverableWindow::default();
    };
    let Some((_, last)) = files.range() else {
        return RecoverableWindow::default();
    };
    let mut first = last;
    while first > 0 && files.segments.contains_key(&(first - 1)) {
        first -= 1;
    }
    let entries: Vec<&WalIndexEntry> = (first..=last)
        .filter_map(|s| index.get(&(tli, s)))
        .collect();
    let earliest = entries.iter().filter_map(|e| e.first_commit_us).min();
    let latest = entries.iter().filter_map(|e| e.last_commit_us).max();
    let latest_lsn = index
        .get(&(tli, last))
        .map(|e| e.end_lsn)
        .unwrap_or_else(|| Lsn::from_segment(last + 1, seg_size));
    RecoverableWindow {
        earliest_time: earliest.map(format_unix_micros),
        latest_time: latest.map(format_unix_micros),
        earliest_lsn: Some(Lsn::from_segment(first, seg_size)),
        latest_lsn: Some(latest_lsn),
        timeline: Some(tli),
    }
}
