//! The pre-flight check: before anything is written, choose the backup and
//! the timeline, and prove from the repository's WAL catalog and index that
//! every segment from the backup's start to the target is there.
//!
//! Everything here is pure over an [`ArchiveView`] (the backups, the catalog,
//! the index entries and the parsed timeline histories), so it is unit-tested
//! with hand-built views; [`ArchiveView::load`] reads one from a repository.
//!
//! How the timeline is chosen when `--target-timeline` is not given: each
//! timeline whose history contains the backup is a candidate; the target is
//! looked for along each candidate's path (its ancestors up to their switch
//! points, then its own WAL). Among the candidates that reach the target,
//! the one that reaches it crossing the fewest timeline switches after the
//! backup wins (then the lowest timeline number): that is the timeline on
//! which the target was written. A branch that forked off before the target
//! (an earlier drill, for instance) reaches some other point of its own, and
//! is not chosen, unlike PostgreSQL's default `latest`. With no target, the
//! candidate whose WAL holds the newest commit wins (ties: the highest number).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

use super::target::{format_time, parse_rfc3339, Target, TimelineChoice};
use super::RestoreError;
use crate::pg::wal::record::finishes_xid;
use crate::pg::wal::segment::{
    history_file_name, parse_timeline_history, segment_file_name, TimelineHistoryEntry, TimelineId,
    WalFileName, WalSegSize,
};
use crate::pg::wal::Lsn;
use crate::repo::backup::BackupManifest;
use crate::repo::catalog::WalCatalog;
use crate::repo::index::{format_unix_micros, WalIndexEntry};
use crate::repo::Repository;

/// What the planner reads: backups, WAL catalog, index, timeline histories.
#[derive(Debug, Clone)]
pub struct ArchiveView {
    /// The stanza name (for messages).
    pub stanza: String,
    /// The stanza's WAL segment size.
    pub seg_size: WalSegSize,
    /// Visible backups, oldest first.
    pub backups: Vec<BackupManifest>,
    /// The WAL archive listing.
    pub catalog: WalCatalog,
    /// Index entries of the full segments.
    pub index: BTreeMap<(TimelineId, u64), WalIndexEntry>,
    /// Parsed history files by timeline (timelines above 1 that have one).
    pub histories: BTreeMap<TimelineId, Vec<TimelineHistoryEntry>>,
    /// For an xid target: the segments whose index range holds the xid,
    /// read record by record, and whether each really finishes it
    /// ([`ArchiveView::read_xid_candidates`]). A segment in range but not
    /// read counts as finishing it.
    pub xid_finished: BTreeMap<(TimelineId, u64), bool>,
}

impl ArchiveView {
    /// Reads the view from the repository (one listing, the index entries,
    /// the history files, the backup manifests).
    pub async fn load(repo: &Arc<Repository>) -> Result<ArchiveView, RestoreError> {
        let seg_size = repo.seg_size()?;
        let catalog = WalCatalog::load(repo).await?;
        let index = catalog.load_index(repo).await?;
        let mut histories = BTreeMap::new();
        for (&tli, files) in &catalog.timelines {
            if files.history.is_none() {
                continue;
            }
            let name = WalFileName::History { tli };
            let Some(data) = repo.fetch_wal(&name).await? else {
                continue;
            };
            let text = String::from_utf8_lossy(&data);
            let entries = parse_timeline_history(&text)
                .map_err(|e| RestoreError::BadInput(format!("{}: {e}", history_file_name(tli))))?;
            histories.insert(tli, entries);
        }
        let backups = repo.list_backups().await?;
        Ok(ArchiveView {
            stanza: repo.stanza().name.clone(),
            seg_size,
            backups,
            catalog,
            index,
            histories,
            xid_finished: BTreeMap::new(),
        })
    }

    /// Reads every archived segment whose index range holds `xid` and records
    /// whether a commit or abort of that top-level transaction ends in it:
    /// the index's range alone also holds subtransaction xids and xids that
    /// never finished, which `recovery_target_xid` never reaches. Segments
    /// are few (those written while `xid` ran and finished) and read once.
    pub async fn read_xid_candidates(
        &mut self,
        repo: &Repository,
        xid: u32,
    ) -> Result<(), RestoreError> {
        let candidates: Vec<(TimelineId, u64)> = self
            .index
            .iter()
            .filter(|(_, e)| e.may_finish_xid(xid))
            .map(|(&k, _)| k)
            .collect();
        for (tli, segno) in candidates {
            let name = WalFileName::Segment { tli, segno };
            let Some(data) = repo.fetch_wal(&name).await? else {
                continue; // gone since the listing: the walk reports it
            };
            let carry = repo.crossing_into(tli, segno).await;
            match finishes_xid(&data, self.seg_size, carry.as_ref(), xid) {
                Ok(found) => {
                    self.xid_finished.insert((tli, segno), found);
                }
                Err(e) => tracing::warn!(
                    segment = %self.name(tli, segno),
                    error = %e,
                    "could not read the segment's records; its xid range stands in for them"
                ),
            }
        }
        Ok(())
    }

    fn has_segment(&self, tli: TimelineId, segno: u64) -> bool {
        self.catalog
            .timelines
            .get(&tli)
            .is_some_and(|f| f.segments.contains_key(&segno))
    }

    fn has_partial(&self, tli: TimelineId, segno: u64) -> bool {
        self.catalog
            .timelines
            .get(&tli)
            .is_some_and(|f| f.partials.contains_key(&segno))
    }

    fn segment_size(&self, tli: TimelineId, segno: u64) -> u64 {
        self.catalog
            .timelines
            .get(&tli)
            .and_then(|f| f.segments.get(&segno))
            .map(|m| m.size)
            .unwrap_or(0)
    }

    fn name(&self, tli: TimelineId, segno: u64) -> String {
        segment_file_name(tli, segno, self.seg_size)
    }

    /// The highest segment number any timeline holds.
    fn last_segno(&self) -> Option<u64> {
        self.catalog
            .timelines
            .values()
            .filter_map(|f| f.range().map(|(_, l)| l))
            .max()
    }

    /// The timeline path of `tli`: its ancestors with the ranges they cover.
    fn path(&self, tli: TimelineId) -> Result<TimelinePath, RestoreError> {
        if tli == 1 {
            return Ok(TimelinePath {
                ranges: vec![PathRange {
                    tli: 1,
                    begin: Lsn(0),
                    end: None,
                }],
            });
        }
        let history = self
            .histories
            .get(&tli)
            .ok_or_else(|| RestoreError::HistoryMissing {
                timeline: tli,
                file: history_file_name(tli),
            })?;
        let mut ranges = Vec::new();
        let mut begin = Lsn(0);
        for e in history {
            ranges.push(PathRange {
                tli: e.parent_tli,
                begin,
                end: Some(e.switch_lsn),
            });
            begin = e.switch_lsn;
        }
        ranges.push(PathRange {
            tli,
            begin,
            end: None,
        });
        Ok(TimelinePath { ranges })
    }

    /// Every timeline the repository knows of (segments or history).
    fn timelines(&self) -> Vec<TimelineId> {
        let mut t: Vec<TimelineId> = self.catalog.timelines.keys().copied().collect();
        t.extend(self.histories.keys().copied());
        t.sort_unstable();
        t.dedup();
        t
    }

    /// The recoverable window in words (for errors and the plan).
    pub fn window(&self) -> Window {
        let oldest = self.backups.first();
        let newest_commit = self
            .index
            .iter()
            .filter_map(|(k, e)| e.last_commit_us.map(|t| (t, *k)))
            .max();
        let latest_lsn = self
            .catalog
            .timelines
            .iter()
            .filter_map(|(&tli, f)| f.range().map(|(_, last)| (tli, last)))
            .max_by_key(|&(tli, last)| (last, tli))
            .map(|(tli, last)| {
                let lsn = self
                    .index
                    .get(&(tli, last))
                    .map(|e| e.end_lsn)
                    .unwrap_or_else(|| Lsn::from_segment(last + 1, self.seg_size));
                (tli, lsn)
            });
        Window {
            earliest_time: oldest.map(|b| b.stop_time.clone()),
            earliest_lsn: oldest.map(|b| b.stop_lsn),
            earliest_backup: oldest.map(|b| b.id.clone()),
            latest_time: newest_commit.map(|(t, _)| format_unix_micros(t)),
            latest_time_timeline: newest_commit.map(|(_, (tli, _))| tli),
            latest_lsn: latest_lsn.map(|(_, l)| l),
            latest_lsn_timeline: latest_lsn.map(|(t, _)| t),
        }
    }
}

/// The recoverable window: from the end of the oldest backup to the newest
/// archived commit (and the end of the archived WAL).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Window {
    /// When the oldest backup became consistent (RFC 3339).
    pub earliest_time: Option<String>,
    /// Its stop LSN.
    pub earliest_lsn: Option<Lsn>,
    /// Its id.
    pub earliest_backup: Option<String>,
    /// The newest archived commit (RFC 3339).
    pub latest_time: Option<String>,
    /// The timeline it is on.
    pub latest_time_timeline: Option<TimelineId>,
    /// The end of the archived WAL.
    pub latest_lsn: Option<Lsn>,
    /// The timeline it is on.
    pub latest_lsn_timeline: Option<TimelineId>,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (
            &self.earliest_time,
            &self.earliest_lsn,
            &self.earliest_backup,
        ) {
            (Some(t), Some(l), Some(b)) => write!(f, "from {t} (LSN {l}, end of backup {b})")?,
            _ => f.write_str("from - (no backup)")?,
        }
        match (&self.latest_time, self.latest_time_timeline) {
            (Some(t), Some(tli)) => write!(f, " to {t} (newest archived commit, timeline {tli})")?,
            _ => f.write_str(" to - (no commit archived)")?,
        }
        if let (Some(l), Some(tli)) = (self.latest_lsn, self.latest_lsn_timeline) {
            write!(f, ", WAL archived to LSN {l} on timeline {tli}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PathRange {
    tli: TimelineId,
    begin: Lsn,
    end: Option<Lsn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TimelinePath {
    ranges: Vec<PathRange>,
}

impl TimelinePath {
    fn target_tli(&self) -> TimelineId {
        self.ranges.last().map(|r| r.tli).unwrap_or(1)
    }

    /// Index of the range holding `lsn`.
    fn range_of_lsn(&self, lsn: Lsn) -> usize {
        self.ranges
            .iter()
            .position(|r| r.begin <= lsn && r.end.is_none_or(|e| lsn < e))
            .unwrap_or(self.ranges.len() - 1)
    }

    /// The timeline PostgreSQL reads segment `segno` from: the newest one on
    /// the path that had begun by that segment (`XLogFileReadAnyTLI`).
    fn range_of_segment(&self, segno: u64, seg_size: WalSegSize) -> usize {
        self.ranges
            .iter()
            .rposition(|r| r.begin.segment_number(seg_size) <= segno)
            .unwrap_or(0)
    }
}

/// One WAL segment the restore needs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NeededSegment {
    /// Its file name.
    pub file: String,
    /// Its timeline.
    pub timeline: TimelineId,
    /// Stored size in bytes.
    pub stored_bytes: u64,
}

/// The plan: what will be restored and how far recovery will go.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    /// The backup restored.
    pub backup_id: String,
    /// Its label.
    pub backup_label: Option<String>,
    /// Its stop time (RFC 3339).
    pub backup_stop_time: String,
    /// Its start LSN.
    pub backup_start_lsn: Lsn,
    /// Its stop LSN (consistent from here).
    pub backup_stop_lsn: Lsn,
    /// Its timeline.
    pub backup_timeline: TimelineId,
    /// Bytes of the data directory restored.
    pub backup_bytes: u64,
    /// Stored bytes of the backup's chunks.
    pub backup_stored_bytes: u64,
    /// Number of files in the backup.
    pub backup_files: usize,
    /// The target, in words.
    pub target: String,
    /// The timeline recovery follows (the path's last timeline).
    pub timeline: TimelineId,
    /// The value written to `recovery_target_timeline`.
    pub recovery_target_timeline: String,
    /// The timelines on the way, oldest first, with their switch points.
    pub timeline_path: Vec<String>,
    /// Where recovery is expected to stop, in words.
    pub stop_point: String,
    /// Every WAL segment needed, in replay order.
    pub segments: Vec<NeededSegment>,
    /// Stored bytes of those segments.
    pub wal_stored_bytes: u64,
    /// Whether the newest segment is only a `.partial` (served to PostgreSQL
    /// by archive-get --allow-partial).
    pub ends_in_partial: Option<String>,
    /// The recoverable window.
    pub window: Window,
    /// A rough estimate of the restore and replay time in seconds (see
    /// [`estimate_seconds`]).
    pub estimated_seconds: u64,
}

/// Assumed throughputs of the estimate: data directory written at 200 MiB/s,
/// WAL replayed at 60 MiB/s (local disk, 2 cores). Only an order of magnitude.
pub fn estimate_seconds(backup_bytes: u64, wal_bytes: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    1 + backup_bytes / (200 * MIB) + wal_bytes / (60 * MIB)
}

/// What the planner is asked.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// `--backup`: an id, `latest`, or `None` for automatic.
    pub backup: Option<String>,
    /// The target.
    pub target: Target,
    /// `--target-timeline`.
    pub timeline: TimelineChoice,
    /// `--target-exclusive`.
    pub exclusive: bool,
    /// Whether archive-get can serve a `.partial` for the last segment.
    pub allow_partial: bool,
}

/// Why one backup/timeline combination cannot reach the target.
#[derive(Debug)]
enum Miss {
    /// The target lies before this backup is consistent: try an older backup.
    BeforeBackup(String),
    /// The target is not on this timeline path, or beyond its archived WAL.
    NotReached(String),
    /// A segment is missing in the middle (later WAL exists).
    Gap(RestoreError),
    /// Anything else.
    Fatal(RestoreError),
}

struct Reach {
    segments: Vec<NeededSegment>,
    stop_point: String,
    switches: usize,
    newest_commit: Option<i64>,
    ends_in_partial: Option<String>,
}

/// Makes the plan, or says precisely why the target cannot be reached.
pub fn make_plan(view: &ArchiveView, req: &PlanRequest) -> Result<RestorePlan, RestoreError> {
    if view.backups.is_empty() {
        return Err(RestoreError::NoBackups {
            stanza: view.stanza.clone(),
        });
    }
    let window = view.window();
    let outside = |reason: String| RestoreError::OutsideWindow {
        target: req.target.to_string(),
        reason,
        window: window.to_string(),
    };
    let candidates: Vec<&BackupManifest> = match req.backup.as_deref() {
        Some("latest") => view.backups.last().into_iter().collect(),
        Some(id) => {
            let b = view.backups.iter().find(|b| b.id == id).ok_or_else(|| {
                RestoreError::BackupNotFound {
                    id: id.to_string(),
                    known: view
                        .backups
                        .iter()
                        .map(|b| b.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?;
            vec![b]
        }
        None => {
            let mut c: Vec<&BackupManifest> = view
                .backups
                .iter()
                .filter(|b| ends_before(b, &req.target))
                .collect();
            c.reverse();
            if c.is_empty() {
                return Err(outside(format!(
                    "it is before the end of the oldest backup ({})",
                    view.backups[0].id
                )));
            }
            c
        }
    };
    let mut first_error: Option<RestoreError> = None;
    let mut before_all = true;
    for backup in candidates {
        match plan_backup(view, req, backup) {
            Ok(mut plan) => {
                plan.window = window.clone();
                return Ok(plan);
            }
            Err(Miss::BeforeBackup(reason)) => {
                if first_error.is_none() && req.backup.is_some() {
                    first_error = Some(outside(reason));
                }
            }
            Err(Miss::NotReached(reason)) => {
                before_all = false;
                if first_error.is_none() {
                    first_error = Some(outside(reason));
                }
            }
            Err(Miss::Gap(e)) | Err(Miss::Fatal(e)) => return Err(e),
        }
    }
    Err(first_error.unwrap_or_else(|| {
        debug_assert!(before_all);
        outside(format!(
            "it is before the end of the oldest backup that could reach it ({})",
            view.backups[0].id
        ))
    }))
}

/// Whether a backup ends before the target (for the automatic choice).
fn ends_before(b: &BackupManifest, target: &Target) -> bool {
    match target {
        Target::Time(t) => parse_rfc3339(&b.stop_time).is_none_or(|stop| stop <= *t),
        Target::Lsn(l) => b.stop_lsn <= *l,
        _ => true,
    }
}

fn plan_backup(
    view: &ArchiveView,
    req: &PlanRequest,
    backup: &BackupManifest,
) -> Result<RestorePlan, Miss> {
    let seg = view.seg_size;
    // The timelines to try, and what recovery_target_timeline will say.
    let (tries, written): (Vec<TimelineId>, Option<String>) = match req.timeline {
        TimelineChoice::Id(t) => (vec![t], Some(t.to_string())),
        TimelineChoice::Current => (vec![backup.timeline], Some("current".into())),
        TimelineChoice::Latest => {
            // PostgreSQL's `latest`: the newest timeline whose history exists.
            let newest = view
                .timelines()
                .into_iter()
                .filter(|&t| t == 1 || view.histories.contains_key(&t))
                .max()
                .unwrap_or(backup.timeline);
            (vec![newest], Some("latest".into()))
        }
        TimelineChoice::Auto => (view.timelines(), None),
    };
    let explicit = !matches!(req.timeline, TimelineChoice::Auto);
    let mut best: Option<(TimelineId, TimelinePath, Reach)> = None;
    let mut first_miss: Option<Miss> = None;
    for tli in tries {
        let path = match view.path(tli) {
            Ok(p) => p,
            Err(e) => {
                if explicit {
                    return Err(Miss::Fatal(e));
                }
                continue;
            }
        };
        // The backup must lie on this path: started and ended on the
        // timelines the path has at those positions.
        let start_range = path.ranges[path.range_of_lsn(backup.start_lsn)];
        let stop_range = path.ranges[path.range_of_lsn(backup.stop_lsn)];
        if start_range.tli != backup.timeline || stop_range.tli != backup.stop_timeline {
            if explicit {
                return Err(Miss::NotReached(format!(
                    "timeline {tli} does not contain backup {} (it branched off at {} before the backup ended, or the backup is on a later timeline)",
                    backup.id,
                    path.ranges
                        .iter()
                        .find(|r| r.tli == backup.timeline)
                        .and_then(|r| r.end)
                        .map(|l| l.to_string())
                        .unwrap_or_else(|| "-".into())
                )));
            }
            continue;
        }
        match reach(view, req, backup, &path) {
            Ok(r) => {
                let better = match &best {
                    None => true,
                    Some((btli, _, b)) => match req.target {
                        Target::Latest => (r.newest_commit, tli) > (b.newest_commit, *btli),
                        _ => (r.switches, tli) < (b.switches, *btli),
                    },
                };
                if better {
                    best = Some((tli, path, r));
                }
            }
            Err(m) => {
                // A gap on the path is worth reporting only if no path works.
                let rank = |m: &Miss| match m {
                    Miss::Fatal(_) => 0,
                    Miss::Gap(_) => 1,
                    Miss::BeforeBackup(_) => 2,
                    Miss::NotReached(_) => 3,
                };
                if first_miss.as_ref().is_none_or(|f| rank(&m) < rank(f)) {
                    first_miss = Some(m);
                }
            }
        }
    }
    let Some((tli, path, r)) = best else {
        return Err(first_miss.unwrap_or_else(|| {
            Miss::NotReached(format!(
                "no timeline in the repository contains backup {}",
                backup.id
            ))
        }));
    };
    let _ = seg;
    let wal_stored_bytes = r.segments.iter().map(|s| s.stored_bytes).sum();
    let timeline_path = path
        .ranges
        .iter()
        .map(|p| match p.end {
            Some(end) => format!("timeline {} until {end}", p.tli),
            None => format!("timeline {} from {}", p.tli, p.begin),
        })
        .collect();
    Ok(RestorePlan {
        backup_id: backup.id.clone(),
        backup_label: backup.label.clone(),
        backup_stop_time: backup.stop_time.clone(),
        backup_start_lsn: backup.start_lsn,
        backup_stop_lsn: backup.stop_lsn,
        backup_timeline: backup.timeline,
        backup_bytes: backup.original_bytes,
        backup_stored_bytes: backup.stored_bytes,
        backup_files: backup
            .files
            .iter()
            .filter(|f| f.kind == crate::repo::backup::FileKind::File)
            .count(),
        target: req.target.to_string(),
        timeline: tli,
        recovery_target_timeline: written.unwrap_or_else(|| tli.to_string()),
        timeline_path,
        stop_point: r.stop_point,
        estimated_seconds: estimate_seconds(backup.original_bytes, wal_stored_bytes),
        wal_stored_bytes,
        segments: r.segments,
        ends_in_partial: r.ends_in_partial,
        window: Window::default(),
    })
}

/// Walks the path from the backup's first segment until the target is
/// reached; every segment on the way must be stored.
fn reach(
    view: &ArchiveView,
    req: &PlanRequest,
    backup: &BackupManifest,
    path: &TimelinePath,
) -> Result<Reach, Miss> {
    let seg = view.seg_size;
    let first = backup.start_lsn.segment_number(seg);
    // The segment holding the last byte of the backup's WAL.
    let consistent = Lsn(backup.stop_lsn.0.saturating_sub(1)).segment_number(seg);
    let start_range = path.range_of_lsn(backup.start_lsn);
    let last_any = view.last_segno().unwrap_or(first);
    let mut segments: Vec<NeededSegment> = Vec::new();
    let mut newest_commit: Option<i64> = None;
    let mut segno = first;
    let name_of = |s: u64| view.name(path.ranges[path.range_of_segment(s, seg)].tli, s);
    let gap = |missing: u64, last_needed: u64| {
        Miss::Gap(RestoreError::MissingSegment {
            segment: name_of(missing),
            backup: backup.id.clone(),
            target: format!("{} on timeline {}", req.target, path.target_tli()),
            first: name_of(first),
            last: name_of(last_needed),
        })
    };
    // Whether any segment after `s` exists on the path (then a missing `s`
    // is a gap in the middle, not the end of the archive).
    let later_exists = |s: u64| {
        (s + 1..=last_any).any(|n| {
            let tli = path.ranges[path.range_of_segment(n, seg)].tli;
            view.has_segment(tli, n)
        })
    };
    loop {
        let ri = path.range_of_segment(segno, seg);
        let tli = path.ranges[ri].tli;
        if !view.has_segment(tli, segno) {
            // The end of this path's archived WAL (or a gap).
            if segno <= consistent {
                return Err(gap(segno, consistent.max(segno)));
            }
            let partial = req.allow_partial && view.has_partial(tli, segno);
            return match &req.target {
                Target::Latest => {
                    if later_exists(segno) {
                        let last = (segno..=last_any)
                            .rev()
                            .find(|&n| {
                                view.has_segment(path.ranges[path.range_of_segment(n, seg)].tli, n)
                            })
                            .unwrap_or(segno);
                        return Err(gap(segno, last));
                    }
                    let last = segno - 1;
                    let end_lsn = view
                        .index
                        .get(&(path.ranges[path.range_of_segment(last, seg)].tli, last))
                        .map(|e| e.end_lsn)
                        .unwrap_or_else(|| Lsn::from_segment(segno, seg));
                    let ends_in_partial =
                        partial.then(|| format!("{}.partial", view.name(tli, segno)));
                    Ok(Reach {
                        stop_point: format!(
                            "end of the archived WAL: LSN {end_lsn} on timeline {}{}",
                            path.ranges[path.range_of_segment(last, seg)].tli,
                            if partial {
                                " (then the .partial segment)"
                            } else {
                                ""
                            }
                        ),
                        switches: path.range_of_segment(last, seg).saturating_sub(start_range),
                        segments,
                        newest_commit,
                        ends_in_partial,
                    })
                }
                _ if later_exists(segno) => {
                    let last = (segno..=last_any)
                        .rev()
                        .find(|&n| {
                            view.has_segment(path.ranges[path.range_of_segment(n, seg)].tli, n)
                        })
                        .unwrap_or(segno);
                    Err(gap(segno, last))
                }
                t => Err(Miss::NotReached(format!(
                    "the archived WAL on timeline {} ends at segment {} without reaching {t}{}",
                    path.target_tli(),
                    name_of(segno.saturating_sub(1)),
                    match t {
                        Target::Xid(_) => {
                            " (recovery stops only at the commit or abort of a top-level \
                             transaction: a subtransaction's xid, or one still running when the \
                             WAL ends, is never reached)"
                        }
                        _ => "",
                    }
                ))),
            };
        }
        segments.push(NeededSegment {
            file: view.name(tli, segno),
            timeline: tli,
            stored_bytes: view.segment_size(tli, segno),
        });
        let entry = view.index.get(&(tli, segno));
        if let Some(e) = entry {
            if let Some(t) = e.last_commit_us {
                newest_commit = Some(newest_commit.map_or(t, |n: i64| n.max(t)));
            }
        }
        let switches = ri.saturating_sub(start_range);
        let done = |point: String, segments: Vec<NeededSegment>| Reach {
            segments,
            stop_point: point,
            switches,
            newest_commit,
            ends_in_partial: None,
        };
        match &req.target {
            Target::Latest => {}
            Target::Immediate => {
                if segno >= consistent {
                    return Ok(done(
                        format!("LSN {} (the backup is consistent)", backup.stop_lsn),
                        segments,
                    ));
                }
            }
            Target::Lsn(x) => {
                if *x < backup.stop_lsn {
                    return Err(Miss::BeforeBackup(format!(
                        "LSN {x} is before backup {} is consistent (LSN {})",
                        backup.id, backup.stop_lsn
                    )));
                }
                if segno >= x.segment_number(seg) && segno >= consistent {
                    // Beyond the last complete record archived: not reachable.
                    let next_tli = path.ranges[path.range_of_segment(segno + 1, seg)].tli;
                    if entry.is_some_and(|e| e.decode_error.is_none() && e.end_lsn < *x)
                        && !view.has_segment(next_tli, segno + 1)
                    {
                        return Err(Miss::NotReached(format!(
                            "LSN {x} is after the end of the archived WAL on timeline {}",
                            path.target_tli()
                        )));
                    }
                    // The LSN must be on this timeline's stretch of the path.
                    let on = path.ranges[path.range_of_lsn(*x)].tli;
                    return Ok(Reach {
                        switches: path.range_of_lsn(*x).saturating_sub(start_range),
                        ..done(format!("LSN {x} on timeline {on}"), segments)
                    });
                }
            }
            Target::Time(t) => {
                if let Some(e) = entry {
                    let hit = e.last_commit_us.is_some_and(|last| {
                        if req.exclusive {
                            last >= *t
                        } else {
                            last > *t
                        }
                    });
                    if hit {
                        if segno < consistent
                            || parse_rfc3339(&backup.stop_time).is_some_and(|s| s > *t)
                        {
                            return Err(Miss::BeforeBackup(format!(
                                "time {} is before backup {} is consistent ({})",
                                format_time(*t),
                                backup.id,
                                backup.stop_time
                            )));
                        }
                        return Ok(done(
                            format!(
                                "the first commit after {} (in {} on timeline {tli})",
                                format_time(*t),
                                e.file
                            ),
                            segments,
                        ));
                    }
                }
            }
            Target::Xid(x) => {
                if let Some(e) = entry {
                    let finished = view.xid_finished.get(&(tli, segno)).copied();
                    if e.may_finish_xid(*x) && finished != Some(false) {
                        if segno < consistent {
                            return Err(Miss::BeforeBackup(format!(
                                "xid {x} finished before backup {} is consistent",
                                backup.id
                            )));
                        }
                        return Ok(done(
                            format!("the commit of xid {x} (in {} on timeline {tli})", e.file),
                            segments,
                        ));
                    }
                }
            }
            Target::Name(n) => {
                if let Some(rp) = entry.and_then(|e| {
                    e.restore_points
                        .iter()
                        .find(|rp| &rp.name == n && rp.lsn >= backup.start_lsn)
                }) {
                    if rp.lsn < backup.stop_lsn {
                        return Err(Miss::BeforeBackup(format!(
                            "restore point `{n}` (LSN {}) is before backup {} is consistent",
                            rp.lsn, backup.id
                        )));
                    }
                    return Ok(done(
                        format!("restore point `{n}` at LSN {} on timeline {tli}", rp.lsn),
                        segments,
                    ));
                }
            }
        }
        segno += 1;
        // Nothing stored beyond: stop walking (handled at the top).
        if segno > last_any + 1 {
            segno = last_any + 1;
        }
    }
}

/// The plan as text for `--dry-run` and the restore's report.
pub fn describe(plan: &RestorePlan) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "backup:     {}{} (timeline {}, LSN {} .. {}, consistent at {})",
        plan.backup_id,
        plan.backup_label
            .as_deref()
            .map(|l| format!(" \"{l}\""))
            .unwrap_or_default(),
        plan.backup_timeline,
        plan.backup_start_lsn,
        plan.backup_stop_lsn,
        plan.backup_stop_time
    );
    let _ = writeln!(
        s,
        "            {} files, {:.1} MiB ({:.1} MiB stored)",
        plan.backup_files,
        mib(plan.backup_bytes),
        mib(plan.backup_stored_bytes)
    );
    let _ = writeln!(s, "target:     {}", plan.target);
    let _ = writeln!(
        s,
        "timeline:   {} (recovery_target_timeline = '{}'); path: {}",
        plan.timeline,
        plan.recovery_target_timeline,
        plan.timeline_path.join(", ")
    );
    let _ = writeln!(s, "stops at:   {}", plan.stop_point);
    match (plan.segments.first(), plan.segments.last()) {
        (Some(f), Some(l)) => {
            let _ = writeln!(
                s,
                "WAL:        {} segments, {} .. {}, {:.1} MiB stored, all present{}",
                plan.segments.len(),
                f.file,
                l.file,
                mib(plan.wal_stored_bytes),
                plan.ends_in_partial
                    .as_deref()
                    .map(|p| format!(", then {p}"))
                    .unwrap_or_default()
            );
        }
        _ => {
            let _ = writeln!(s, "WAL:        none needed");
        }
    }
    let _ = writeln!(s, "window:     {}", plan.window);
    let _ = writeln!(
        s,
        "estimate:   ~{} s (data directory at ~200 MiB/s, WAL replay at ~60 MiB/s)",
        plan.estimated_seconds
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::backup::MANIFEST_FORMAT;
    use crate::repo::index::IndexedRestorePoint;
    use crate::storage::ObjectMeta;

    const MIB: u64 = 1 << 20;
    const T0: i64 = 1_795_271_400_000_000; // 2026-11-21 14:30:00 UTC
    const SEC: i64 = 1_000_000;

    fn seg() -> WalSegSize {
        WalSegSize::new(MIB as u32).unwrap()
    }

    struct Builder {
        view: ArchiveView,
    }

    impl Builder {
        fn new() -> Builder {
            Builder {
                view: ArchiveView {
                    stanza: "main".into(),
                    seg_size: seg(),
                    backups: Vec::new(),
                    catalog: WalCatalog::default(),
                    index: BTreeMap::new(),
                    histories: BTreeMap::new(),
                    xid_finished: BTreeMap::new(),
                },
            }
        }
        /// Segment `segno` on `tli` with commits at T0 + `t` seconds for t in `times`.
        fn seg(mut self, tli: TimelineId, segno: u64, times: &[i64]) -> Builder {
            let file = segment_file_name(tli, segno, seg());
            self.view
                .catalog
                .timelines
                .entry(tli)
                .or_default()
                .segments
                .insert(
                    segno,
                    ObjectMeta {
                        key: format!("main/wal/{tli:08X}/{file}"),
                        size: 1000,
                        modified: None,
                    },
                );
            let start = Lsn::from_segment(segno, seg());
            self.view.index.insert(
                (tli, segno),
                WalIndexEntry {
                    file,
                    timeline: tli,
                    start_lsn: start,
                    end_lsn: Lsn(start.0 + MIB - 100),
                    first_commit_us: times.first().map(|t| T0 + t * SEC),
                    last_commit_us: times.last().map(|t| T0 + t * SEC),
                    commits: times.len() as u64,
                    aborts: 0,
                    min_xid: times.first().map(|t| 1000 + *t as u32),
                    max_xid: times.last().map(|t| 1000 + *t as u32),
                    restore_points: Vec::new(),
                    checksum: String::new(),
                    size: MIB,
                    decode_error: None,
                    crossing: None,
                },
            );
            self
        }
        fn segs(
            mut self,
            tli: TimelineId,
            range: std::ops::RangeInclusive<u64>,
            t0: i64,
        ) -> Builder {
            for s in range {
                let t = t0 + (s as i64) * 10;
                self = self.seg(tli, s, &[t, t + 5]);
            }
            self
        }
        fn rp(mut self, tli: TimelineId, segno: u64, name: &str) -> Builder {
            let e = self.view.index.get_mut(&(tli, segno)).unwrap();
            e.restore_points.push(IndexedRestorePoint {
                name: name.into(),
                lsn: Lsn(e.start_lsn.0 + 500),
                time_us: T0,
            });
            self
        }
        fn history(mut self, tli: TimelineId, entries: &[(TimelineId, u64)]) -> Builder {
            self.view.catalog.timelines.entry(tli).or_default().history = Some(ObjectMeta {
                key: format!("main/wal/{tli:08X}/{}", history_file_name(tli)),
                size: 40,
                modified: None,
            });
            self.view.histories.insert(
                tli,
                entries
                    .iter()
                    .map(|&(p, lsn)| TimelineHistoryEntry {
                        parent_tli: p,
                        switch_lsn: Lsn(lsn),
                        reason: "test".into(),
                    })
                    .collect(),
            );
            self
        }
        /// A backup on `tli` from segment `start` to `stop` (stop time = T0 + `stop_t` s).
        fn backup(
            mut self,
            id: &str,
            tli: TimelineId,
            start: u64,
            stop: u64,
            stop_t: i64,
        ) -> Builder {
            self.view.backups.push(BackupManifest {
                format: MANIFEST_FORMAT,
                id: id.into(),
                label: None,
                system_id: "1".into(),
                pg_version: 150000,
                timeline: tli,
                start_lsn: Lsn(start * MIB + 40),
                stop_lsn: Lsn(stop * MIB + 300),
                stop_timeline: tli,
                start_time: format_unix_micros(T0 + (stop_t - 1) * SEC),
                stop_time: format_unix_micros(T0 + stop_t * SEC),
                data_checksums: false,
                tablespaces: Vec::new(),
                files: Vec::new(),
                original_bytes: 100 * MIB,
                stored_bytes: 40 * MIB,
                new_bytes: 40 * MIB,
            });
            self
        }
    }

    fn req(target: Target) -> PlanRequest {
        PlanRequest {
            backup: None,
            target,
            timeline: TimelineChoice::Auto,
            exclusive: false,
            allow_partial: false,
        }
    }

    fn names(p: &RestorePlan) -> Vec<String> {
        p.segments.iter().map(|s| s.file.clone()).collect()
    }

    // Timeline 1: segments 2..=10, commits at T0 + 10*s and +5 s.
    fn simple() -> Builder {
        Builder::new().segs(1, 2..=10, 0).backup("b1", 1, 2, 3, 31)
    }

    #[test]
    fn time_target_needs_segments_up_to_the_first_later_commit() {
        let v = simple().view;
        let p = make_plan(&v, &req(Target::Time(T0 + 62 * SEC))).unwrap();
        assert_eq!(p.backup_id, "b1");
        assert_eq!(p.timeline, 1);
        assert_eq!(p.recovery_target_timeline, "1");
        // Segment 6 has commits at 60 and 65 s: the first after 62 s.
        assert_eq!(
            names(&p),
            (2..=6)
                .map(|s| segment_file_name(1, s, seg()))
                .collect::<Vec<_>>()
        );
        assert!(describe(&p).contains("5 segments"));
    }

    #[test]
    fn refuses_a_time_after_the_newest_commit_stating_the_window() {
        let v = simple().view;
        let e = make_plan(&v, &req(Target::Time(T0 + 500 * SEC))).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, RestoreError::OutsideWindow { .. }), "{msg}");
        assert!(msg.contains("recoverable window: from"), "{msg}");
        assert!(msg.contains(&format_unix_micros(T0 + 105 * SEC)), "{msg}");
    }

    #[test]
    fn refuses_a_time_before_the_oldest_backup() {
        let v = simple().view;
        let e = make_plan(&v, &req(Target::Time(T0 + 10 * SEC))).unwrap_err();
        assert!(
            e.to_string()
                .contains("before the end of the oldest backup (b1)"),
            "{e}"
        );
    }

    #[test]
    fn names_the_first_missing_segment() {
        let mut v = simple().view;
        v.catalog.timelines.get_mut(&1).unwrap().segments.remove(&5);
        v.catalog.timelines.get_mut(&1).unwrap().segments.remove(&6);
        for target in [
            Target::Time(T0 + 72 * SEC),
            Target::Latest,
            Target::Lsn(Lsn(8 * MIB)),
        ] {
            let e = make_plan(&v, &req(target)).unwrap_err();
            match &e {
                RestoreError::MissingSegment { segment, .. } => {
                    assert_eq!(segment, "000000010000000000000005")
                }
                other => panic!("{other}"),
            }
        }
        // A target before the gap is fine.
        let p = make_plan(&v, &req(Target::Time(T0 + 41 * SEC))).unwrap();
        assert_eq!(p.segments.len(), 3);
    }

    #[test]
    fn an_xid_in_range_that_its_segment_does_not_finish_is_looked_for_further() {
        let mut v = simple().view;
        // Segment 8's range holds xid 1085 (as it would a subtransaction's
        // xid), but reading the segment found no commit or abort of it.
        v.xid_finished.insert((1, 8), false);
        let e = make_plan(&v, &req(Target::Xid(1085))).unwrap_err();
        assert!(e.to_string().contains("without reaching xid 1085"), "{e}");
        // A later segment whose range holds it too, read and finishing it.
        let e9 = v.index.get_mut(&(1, 9)).unwrap();
        e9.min_xid = Some(1080);
        v.xid_finished.insert((1, 9), true);
        let p = make_plan(&v, &req(Target::Xid(1085))).unwrap();
        assert_eq!(p.segments.last().unwrap().file, "000000010000000000000009");
    }

    #[test]
    fn latest_lsn_immediate_xid_and_name() {
        let v = simple().rp(1, 7, "before-upgrade").view;
        let p = make_plan(&v, &req(Target::Latest)).unwrap();
        assert_eq!(p.segments.len(), 9);
        let p = make_plan(&v, &req(Target::Immediate)).unwrap();
        assert_eq!(p.segments.len(), 2);
        let p = make_plan(&v, &req(Target::Lsn(Lsn(4 * MIB + 10)))).unwrap();
        assert_eq!(p.segments.len(), 3);
        let p = make_plan(&v, &req(Target::Xid(1085))).unwrap();
        assert_eq!(p.segments.last().unwrap().file, "000000010000000000000008");
        let p = make_plan(&v, &req(Target::Name("before-upgrade".into()))).unwrap();
        assert_eq!(p.segments.last().unwrap().file, "000000010000000000000007");
        assert!(make_plan(&v, &req(Target::Name("nope".into()))).is_err());
        assert!(make_plan(&v, &req(Target::Xid(5000))).is_err());
        // An LSN after the last archived record, in the last segment.
        let e = make_plan(&v, &req(Target::Lsn(Lsn(10 * MIB + MIB - 50)))).unwrap_err();
        assert!(
            e.to_string().contains("after the end of the archived WAL"),
            "{e}"
        );
        assert!(make_plan(&v, &req(Target::Lsn(Lsn(10 * MIB + 50)))).is_ok());
        // An LSN before the backup is consistent.
        let mut r = req(Target::Lsn(Lsn(2 * MIB + 100)));
        r.backup = Some("b1".into());
        assert!(make_plan(&v, &r).is_err());
    }

    #[test]
    fn picks_the_newest_backup_that_ends_before_the_target() {
        let v = simple().backup("b2", 1, 6, 6, 61).view;
        assert_eq!(
            make_plan(&v, &req(Target::Time(T0 + 62 * SEC)))
                .unwrap()
                .backup_id,
            "b2"
        );
        assert_eq!(
            make_plan(&v, &req(Target::Time(T0 + 52 * SEC)))
                .unwrap()
                .backup_id,
            "b1"
        );
        let mut r = req(Target::Latest);
        r.backup = Some("latest".into());
        assert_eq!(make_plan(&v, &r).unwrap().backup_id, "b2");
        r.backup = Some("nope".into());
        assert!(matches!(
            make_plan(&v, &r),
            Err(RestoreError::BackupNotFound { .. })
        ));
    }

    // Timeline 1 runs on to segment 10; a drill forked timeline 2 off it in
    // segment 5 and wrote segments 5..=6 with commits at T0 + 900 s.
    fn drill() -> Builder {
        simple()
            .history(2, &[(1, 5 * MIB + 4000)])
            .seg(2, 5, &[50, 900])
            .seg(2, 6, &[901, 902])
    }

    #[test]
    fn a_branch_that_forked_before_the_target_is_not_chosen() {
        let v = drill().view;
        let p = make_plan(&v, &req(Target::Time(T0 + 82 * SEC))).unwrap();
        assert_eq!(p.timeline, 1, "{}", describe(&p));
        assert_eq!(p.recovery_target_timeline, "1");
        assert!(names(&p).iter().all(|n| n.starts_with("00000001")));
        // Explicitly asking for timeline 2 follows the drill.
        let mut r = req(Target::Time(T0 + 82 * SEC));
        r.timeline = TimelineChoice::Id(2);
        let p = make_plan(&v, &r).unwrap();
        assert_eq!(p.timeline, 2);
        assert_eq!(p.segments.last().unwrap().file, "000000020000000000000005");
        // Before the fork both reach it without a switch: the lower wins.
        let p = make_plan(&v, &req(Target::Time(T0 + 32 * SEC))).unwrap();
        assert_eq!(p.timeline, 1);
        // Latest: the branch with the newest commit (the drill, at 902 s).
        let p = make_plan(&v, &req(Target::Latest)).unwrap();
        assert_eq!(p.timeline, 2);
        let mut r = req(Target::Latest);
        r.timeline = TimelineChoice::Latest;
        let p = make_plan(&v, &r).unwrap();
        assert_eq!(
            (p.timeline, p.recovery_target_timeline.as_str()),
            (2, "latest")
        );
    }

    #[test]
    fn after_a_failover_the_target_is_on_the_new_timeline() {
        // Timeline 1 ends in segment 5; timeline 2 carries on.
        let mut b = Builder::new()
            .segs(1, 2..=4, 0)
            .backup("b1", 1, 2, 3, 31)
            .history(2, &[(1, 5 * MIB + 4000)]);
        for s in 5..=9 {
            let t = s as i64 * 10;
            b = b.seg(2, s, &[t, t + 5]);
        }
        let v = b.view;
        let p = make_plan(&v, &req(Target::Time(T0 + 72 * SEC))).unwrap();
        assert_eq!(p.timeline, 2);
        assert_eq!(p.segments[3].file, "000000020000000000000005");
        // A missing history file makes timeline 2 unusable.
        let mut v2 = v.clone();
        v2.histories.clear();
        let e = make_plan(&v2, &req(Target::Time(T0 + 72 * SEC))).unwrap_err();
        assert!(e.to_string().contains("cannot be reached"), "{e}");
        let mut r = req(Target::Latest);
        r.timeline = TimelineChoice::Id(2);
        assert!(matches!(
            make_plan(&v2, &r),
            Err(RestoreError::HistoryMissing { .. })
        ));
    }
}
