//! The WAL format: positions ([`Lsn`]), timelines and file names
//! ([`segment`]), page headers ([`page`]) and records ([`record`]).
//!
//! Layouts are PostgreSQL's on x86_64 (little-endian, 8-byte alignment) for
//! majors 13 to 18.

pub mod lsn;
pub mod page;
pub mod record;
pub mod segment;

pub use lsn::{Lsn, ParseLsnError};
pub use page::{
    parse_segment_start, pg_major_for_magic, LongPageHeader, PageError, PageHeader, SegmentStart,
};
pub use record::{
    scan_segment, summarize_segment, timestamptz_to_datetime, timestamptz_to_unix_micros,
    unix_micros_to_timestamptz, CrossingRecord, RecordError, RestorePoint, ScanOutcome, ScanStop,
    SegmentSummary, WalRecord,
};
pub use segment::{
    history_file_name, parse_timeline_history, segment_file_name, SegmentError,
    TimelineHistoryEntry, TimelineId, WalFileName, WalSegSize,
};

/// Real WAL written by real PostgreSQL servers, with the facts their own
/// decoders (pg_waldump, pg_walinspect) report; see fixtures/wal/make-fixtures.sh.
#[cfg(test)]
pub(crate) mod test_fixtures {
    use super::Lsn;
    use std::path::PathBuf;

    /// One fixture file and its recorded facts.
    pub(crate) struct Fixture {
        pub name: String,
        pub data: Vec<u8>,
        pub major: u32,
        pub system_id: u64,
        pub start_lsn: Lsn,
        pub end_lsn: Lsn,
        /// `None` when no decoder of that major was at hand (13, 14).
        pub records: Option<u64>,
        pub commits: u64,
        pub aborts: u64,
        pub first_commit_unix_us: i64,
        pub last_commit_unix_us: i64,
        pub min_xid: u32,
        pub max_xid: u32,
        /// Name and start, or name and end (what `pg_create_restore_point()` returns).
        pub restore_points: Vec<(String, RpAt)>,
        /// (lsn, xid, rmgr name) of every record, from the server's decoder.
        pub record_list: Option<Vec<(Lsn, u32, String)>>,
    }

    /// Where a restore point record is known to be.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum RpAt {
        Start(Lsn),
        End(Lsn),
    }

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/wal")
    }

    /// Loads `fixtures/wal/<name>.json` and the WAL file it names. Panics
    /// with the way to regenerate them when they are missing.
    pub(crate) fn fixture(name: &str) -> Fixture {
        let read = |file: &str| {
            let path = dir().join(file);
            std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "WAL fixture {} is missing ({e}): it is part of the repository; regenerate it with \
                     fixtures/wal/make-fixtures.sh (see the script's header for the PostgreSQL binaries it needs)",
                    path.display()
                )
            })
        };
        let facts: serde_json::Value =
            serde_json::from_slice(&read(&format!("{name}.json"))).unwrap();
        let s = |k: &str| {
            facts[k]
                .as_str()
                .unwrap_or_else(|| panic!("{name}.json: {k}"))
                .to_string()
        };
        let n = |k: &str| {
            facts[k]
                .as_i64()
                .unwrap_or_else(|| panic!("{name}.json: {k}"))
        };
        let record_list = facts["records"].as_u64().map(|_| {
            let records_txt = String::from_utf8(read(&format!("{name}.records.txt"))).unwrap();
            records_txt
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let mut f = l.split('|');
                    let lsn: Lsn = f.next().unwrap().parse().unwrap();
                    let xid: u32 = f.next().unwrap().parse().unwrap();
                    (lsn, xid, f.next().unwrap().to_string())
                })
                .collect()
        });
        Fixture {
            name: name.to_string(),
            data: read(&s("file")),
            major: n("major") as u32,
            system_id: s("system_id").parse().unwrap(),
            start_lsn: s("start_lsn").parse().unwrap(),
            end_lsn: s("end_lsn").parse().unwrap(),
            records: facts["records"].as_u64(),
            commits: n("commits") as u64,
            aborts: n("aborts") as u64,
            first_commit_unix_us: n("first_commit_unix_us"),
            last_commit_unix_us: n("last_commit_unix_us"),
            min_xid: n("min_xid") as u32,
            max_xid: n("max_xid") as u32,
            restore_points: facts["restore_points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let at = match (r["lsn"].as_str(), r["end_lsn"].as_str()) {
                        (Some(l), _) => RpAt::Start(l.parse().unwrap()),
                        (None, Some(l)) => RpAt::End(l.parse().unwrap()),
                        _ => panic!("{name}.json: restore point without lsn"),
                    };
                    (r["name"].as_str().unwrap().to_string(), at)
                })
                .collect(),
            record_list,
        }
    }
}
