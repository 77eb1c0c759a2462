//! The WAL index: one small entry per archived segment with its LSN range,
//! the first and last commit timestamps found in it, the restore points and
//! the checksum of its content. This is what lets `info` report the
//! recoverable window and `restore` say whether a target is reachable without
//! reading the WAL itself.
//!
//! A commit, abort or restore point record that straddles two segments is in
//! the entry of the segment where it ends, where replay completes it: the
//! first segment's entry keeps the record's start ([`CrossingRecord`]) and the
//! next segment's scan joins it with the rest. That needs the first entry to
//! be written first, as archive_command and `walship stream` do; a segment
//! indexed before its predecessor misses that one record.

use serde::{Deserialize, Serialize};

use crate::pg::wal::record::{CrossingRecord, SegmentSummary};
use crate::pg::wal::segment::TimelineId;
use crate::pg::wal::Lsn;

/// A named restore point (`pg_create_restore_point`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedRestorePoint {
    /// Its name.
    pub name: String,
    /// The LSN of its record.
    pub lsn: Lsn,
    /// When it was created (Unix microseconds).
    pub time_us: i64,
}

/// The index entry of one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalIndexEntry {
    /// The segment's file name.
    pub file: String,
    /// Its timeline.
    pub timeline: TimelineId,
    /// LSN of the segment's first byte.
    pub start_lsn: Lsn,
    /// End of the last complete record in the segment.
    pub end_lsn: Lsn,
    /// First commit/abort timestamp in the segment (Unix microseconds).
    pub first_commit_us: Option<i64>,
    /// Last commit/abort timestamp in the segment (Unix microseconds).
    pub last_commit_us: Option<i64>,
    /// Commit records.
    pub commits: u64,
    /// Abort records.
    pub aborts: u64,
    /// The oldest xid committed or aborted here, in circular xid order.
    pub min_xid: Option<u32>,
    /// The newest xid committed or aborted here.
    pub max_xid: Option<u32>,
    /// Restore points created in this segment.
    pub restore_points: Vec<IndexedRestorePoint>,
    /// BLAKE3 of the segment's content (hex).
    pub checksum: String,
    /// Size of the segment in bytes.
    pub size: u64,
    /// Set when the records could not be decoded (the segment itself is stored
    /// as PostgreSQL wrote it); says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_error: Option<String>,
    /// The start of a commit, abort or restore point record that ends in the
    /// next segment, for that segment's entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crossing: Option<CrossingRecord>,
}

impl WalIndexEntry {
    /// Whether the commit or abort of `xid` may be in this segment: `xid`
    /// lies in its circular range (a necessary condition only: see
    /// [`crate::pg::wal::record::finishes_xid`]).
    pub fn may_finish_xid(&self, xid: u32) -> bool {
        match (self.min_xid, self.max_xid) {
            (Some(min), Some(max)) => crate::pg::wal::record::xid_in_range(xid, min, max),
            _ => false,
        }
    }

    /// Builds the entry from a decoded summary (or the reason decoding failed).
    pub fn new(
        file: &str,
        timeline: TimelineId,
        start_lsn: Lsn,
        summary: Result<SegmentSummary, String>,
        checksum: String,
        size: u64,
    ) -> WalIndexEntry {
        let to_unix = crate::pg::wal::record::timestamptz_to_unix_micros;
        match summary {
            Ok(s) => WalIndexEntry {
                file: file.to_string(),
                timeline,
                start_lsn,
                end_lsn: s.end_lsn,
                first_commit_us: s.first_commit_time.map(to_unix),
                last_commit_us: s.last_commit_time.map(to_unix),
                commits: s.commits,
                aborts: s.aborts,
                min_xid: s.min_xid,
                max_xid: s.max_xid,
                restore_points: s
                    .restore_points
                    .iter()
                    .map(|rp| IndexedRestorePoint {
                        name: rp.name.clone(),
                        lsn: rp.lsn,
                        time_us: to_unix(rp.time),
                    })
                    .collect(),
                checksum,
                size,
                decode_error: None,
                crossing: s.crossing,
            },
            Err(reason) => WalIndexEntry {
                file: file.to_string(),
                timeline,
                start_lsn,
                end_lsn: start_lsn,
                first_commit_us: None,
                last_commit_us: None,
                commits: 0,
                aborts: 0,
                min_xid: None,
                max_xid: None,
                restore_points: Vec::new(),
                checksum,
                size,
                decode_error: Some(reason),
                crossing: None,
            },
        }
    }
}

/// Formats Unix microseconds as RFC 3339 UTC (microsecond precision when needed).
pub fn format_unix_micros(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let nanos = (us.rem_euclid(1_000_000) * 1000) as u32;
    match chrono::DateTime::from_timestamp(secs, nanos) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => format!("@{us}us"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_micros() {
        assert_eq!(format_unix_micros(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_unix_micros(1_795_000_000_123_456),
            "2026-11-18T11:06:40.123456Z"
        );
    }
}
