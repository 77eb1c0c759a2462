//! Timelines, WAL segment sizes and the names of the files in `pg_wal`.

use std::fmt;

use super::Lsn;

/// A timeline (PostgreSQL's `TimeLineID`). Timeline 0 does not exist.
pub type TimelineId = u32;

/// Errors of WAL file names, segment sizes and timeline history files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// A segment size that PostgreSQL would refuse.
    #[error("invalid WAL segment size {0} bytes: must be a power of two between 1 MiB and 1 GiB")]
    InvalidSegSize(u64),
    /// A file name that is not a WAL segment, `.partial`, `.history` or `.backup` file.
    #[error("{name:?} is not a WAL file name ({reason})")]
    BadFileName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A line of a timeline history file that cannot be parsed.
    #[error("timeline history, line {line}: {reason}: {text:?}")]
    BadHistoryLine {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A validated WAL segment size (`wal_segment_size`, fixed at `initdb`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct WalSegSize(u32);

impl WalSegSize {
    /// PostgreSQL's default: 16 MiB.
    pub const DEFAULT: WalSegSize = WalSegSize(16 * 1024 * 1024);
    const MIN: u32 = 1024 * 1024;
    const MAX: u32 = 1024 * 1024 * 1024;

    /// Checks `bytes` the way PostgreSQL does (`IsValidWalSegSize`).
    pub fn new(bytes: u32) -> Result<Self, SegmentError> {
        if bytes.is_power_of_two() && (Self::MIN..=Self::MAX).contains(&bytes) {
            Ok(WalSegSize(bytes))
        } else {
            Err(SegmentError::InvalidSegSize(u64::from(bytes)))
        }
    }

    /// The size in bytes.
    pub fn bytes(self) -> u32 {
        self.0
    }

    /// Segments per 4 GiB "xlog id" (`XLogSegmentsPerXLogId`): the middle
    /// 8 hex digits of a segment file name count up to this.
    pub fn segments_per_xlog_id(self) -> u64 {
        0x1_0000_0000 / u64::from(self.0)
    }
}

impl Default for WalSegSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for WalSegSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= Self::MAX {
            write!(f, "{}GB", self.0 / Self::MAX)
        } else {
            write!(f, "{}MB", self.0 / Self::MIN)
        }
    }
}

/// The file name of segment `segno` on timeline `tli` (`XLogFileName`):
/// 24 upper-case hex digits.
pub fn segment_file_name(tli: TimelineId, segno: u64, seg_size: WalSegSize) -> String {
    let per_id = seg_size.segments_per_xlog_id();
    format!("{:08X}{:08X}{:08X}", tli, segno / per_id, segno % per_id)
}

/// The name of the history file of timeline `tli` (`TLHistoryFileName`).
pub fn history_file_name(tli: TimelineId) -> String {
    format!("{tli:08X}.history")
}

/// A file PostgreSQL archives, identified by its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WalFileName {
    /// A complete segment, `000000010000000000000002`.
    Segment {
        /// Its timeline.
        tli: TimelineId,
        /// Its segment number.
        segno: u64,
    },
    /// The segment in progress when a timeline ended or streaming stopped,
    /// `000000010000000000000002.partial`.
    Partial {
        /// Its timeline.
        tli: TimelineId,
        /// Its segment number.
        segno: u64,
    },
    /// A timeline history file, `00000002.history`.
    History {
        /// The timeline it describes.
        tli: TimelineId,
    },
    /// A backup history file, `000000010000000000000002.00000028.backup`.
    Backup {
        /// Its timeline.
        tli: TimelineId,
        /// The segment where the backup started.
        segno: u64,
        /// The backup's start offset within that segment.
        offset: u32,
    },
}

fn hex8(s: &str) -> Option<u32> {
    if s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

impl WalFileName {
    /// Parses a file name (no directory). PostgreSQL writes upper-case hex
    /// only, so lower case is rejected like any other foreign name.
    pub fn parse(name: &str, seg_size: WalSegSize) -> Result<Self, SegmentError> {
        let bad = |reason| SegmentError::BadFileName {
            name: name.to_string(),
            reason,
        };
        if let Some(tli) = name.strip_suffix(".history") {
            let tli = hex8(tli)
                .ok_or_else(|| bad("a history file is 8 upper-case hex digits + .history"))?;
            if tli == 0 {
                return Err(bad("timeline 0 does not exist"));
            }
            return Ok(WalFileName::History { tli });
        }
        let (seg, rest) = name
            .split_at_checked(24)
            .ok_or_else(|| bad("too short for a segment name"))?;
        let (tli, segno) = Self::parse_segment(seg, seg_size).map_err(bad)?;
        match rest {
            "" => Ok(WalFileName::Segment { tli, segno }),
            ".partial" => Ok(WalFileName::Partial { tli, segno }),
            _ => {
                let offset = rest
                    .strip_prefix('.')
                    .and_then(|r| r.strip_suffix(".backup"))
                    .and_then(hex8)
                    .ok_or_else(|| {
                        bad("unknown suffix; expected none, .partial or .XXXXXXXX.backup")
                    })?;
                if offset >= seg_size.bytes() {
                    return Err(bad("backup offset beyond the segment size"));
                }
                Ok(WalFileName::Backup { tli, segno, offset })
            }
        }
    }

    fn parse_segment(seg: &str, seg_size: WalSegSize) -> Result<(TimelineId, u64), &'static str> {
        const HEX: &str = "a segment name is 24 upper-case hex digits";
        let tli = hex8(&seg[0..8]).ok_or(HEX)?;
        let log = hex8(&seg[8..16]).ok_or(HEX)?;
        let seg_in_log = hex8(&seg[16..24]).ok_or(HEX)?;
        if tli == 0 {
            return Err("timeline 0 does not exist");
        }
        let per_id = seg_size.segments_per_xlog_id();
        if u64::from(seg_in_log) >= per_id {
            return Err("segment number too large for the segment size");
        }
        Ok((tli, u64::from(log) * per_id + u64::from(seg_in_log)))
    }

    /// The file name, as PostgreSQL writes it.
    pub fn file_name(&self, seg_size: WalSegSize) -> String {
        match *self {
            WalFileName::Segment { tli, segno } => segment_file_name(tli, segno, seg_size),
            WalFileName::Partial { tli, segno } => {
                format!("{}.partial", segment_file_name(tli, segno, seg_size))
            }
            WalFileName::History { tli } => history_file_name(tli),
            WalFileName::Backup { tli, segno, offset } => {
                format!(
                    "{}.{offset:08X}.backup",
                    segment_file_name(tli, segno, seg_size)
                )
            }
        }
    }

    /// The timeline the file belongs to.
    pub fn timeline(&self) -> TimelineId {
        match *self {
            WalFileName::Segment { tli, .. }
            | WalFileName::Partial { tli, .. }
            | WalFileName::History { tli }
            | WalFileName::Backup { tli, .. } => tli,
        }
    }

    /// The segment number, for every kind but history files.
    pub fn segment_number(&self) -> Option<u64> {
        match *self {
            WalFileName::Segment { segno, .. }
            | WalFileName::Partial { segno, .. }
            | WalFileName::Backup { segno, .. } => Some(segno),
            WalFileName::History { .. } => None,
        }
    }
}

/// One line of a timeline history file: the timeline `parent_tli` ended (and
/// its child began) at `switch_lsn`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineHistoryEntry {
    /// The ancestor timeline.
    pub parent_tli: TimelineId,
    /// Where the ancestor ended and the next timeline branched off.
    pub switch_lsn: Lsn,
    /// PostgreSQL's free-text reason (`no recovery target specified`, ...).
    pub reason: String,
}

/// Parses a `.history` file (`readTimeLineHistory`): lines of
/// `parentTLI<TAB>switchpoint<TAB>reason`; blank lines and `#` comments are
/// ignored. Timelines must increase from line to line, as PostgreSQL requires.
pub fn parse_timeline_history(text: &str) -> Result<Vec<TimelineHistoryEntry>, SegmentError> {
    let mut entries: Vec<TimelineHistoryEntry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason| SegmentError::BadHistoryLine {
            line: i + 1,
            text: raw.to_string(),
            reason,
        };
        let mut fields = line.splitn(3, ['\t', ' ']);
        let tli = fields.next().unwrap_or_default();
        let parent_tli: TimelineId = tli.parse().map_err(|_| bad("timeline is not a number"))?;
        if parent_tli == 0 {
            return Err(bad("timeline 0 does not exist"));
        }
        let switch_lsn: Lsn = fields
            .next()
            .ok_or_else(|| bad("missing switch point"))?
            .trim()
            .parse()
            .map_err(|_| bad("switch point is not an X/Y LSN"))?;
        if let Some(prev) = entries.last() {
            if parent_tli <= prev.parent_tli {
                return Err(bad("timelines are not in increasing sequence"));
            }
        }
        let reason = fields.next().unwrap_or_default().trim().to_string();
        entries.push(TimelineHistoryEntry {
            parent_tli,
            switch_lsn,
            reason,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(mib: u32) -> WalSegSize {
        WalSegSize::new(mib * 1024 * 1024).unwrap()
    }

    #[test]
    fn seg_size_validation() {
        assert_eq!(WalSegSize::DEFAULT.bytes(), 16 << 20);
        assert_eq!(WalSegSize::default(), WalSegSize::DEFAULT);
        for ok in [1u32 << 20, 2 << 20, 16 << 20, 64 << 20, 1 << 30] {
            assert_eq!(WalSegSize::new(ok).unwrap().bytes(), ok);
        }
        for bad in [0u32, 1, 512 << 10, (1 << 20) + 1, 3 << 20, 2 << 30] {
            let e = WalSegSize::new(bad).unwrap_err();
            assert!(e.to_string().contains(&bad.to_string()), "{e}");
        }
        assert_eq!(size(16).segments_per_xlog_id(), 256);
        assert_eq!(size(1).segments_per_xlog_id(), 4096);
        assert_eq!(size(1024).segments_per_xlog_id(), 4);
        assert_eq!(size(16).to_string(), "16MB");
        assert_eq!(size(1024).to_string(), "1GB");
    }

    #[test]
    fn segment_names_known_good() {
        // 16 MiB: LSN 16/B374D848 is in segment 0x16B3, named ...16 000000B3.
        let s16 = size(16);
        assert_eq!(
            segment_file_name(1, 0x16B3, s16),
            "0000000100000016000000B3"
        );
        assert_eq!(segment_file_name(1, 1, s16), "000000010000000000000001");
        // segno crossing an xlog id: 255 is the last of id 0, 256 the first of id 1.
        assert_eq!(segment_file_name(1, 255, s16), "0000000100000000000000FF");
        assert_eq!(segment_file_name(1, 256, s16), "000000010000000100000000");
        // 1 MiB: 4096 segments per id.
        let s1 = size(1);
        assert_eq!(segment_file_name(3, 7, s1), "000000030000000000000007");
        assert_eq!(segment_file_name(3, 4095, s1), "000000030000000000000FFF");
        assert_eq!(segment_file_name(3, 4096, s1), "000000030000000100000000");
        // 1 GiB: 4 segments per id.
        let s1g = size(1024);
        assert_eq!(segment_file_name(2, 3, s1g), "000000020000000000000003");
        assert_eq!(segment_file_name(2, 4, s1g), "000000020000000100000000");
        assert_eq!(
            segment_file_name(0xABCDEF01, 4 * 0x10 + 2, s1g),
            "ABCDEF010000001000000002"
        );
        assert_eq!(history_file_name(2), "00000002.history");
        assert_eq!(history_file_name(0x1A), "0000001A.history");
    }

    #[test]
    fn file_names_round_trip() {
        for s in [size(1), size(16), size(1024)] {
            let per = s.segments_per_xlog_id();
            for segno in [1, per - 1, per, per + 1, 7 * per + 3] {
                for name in [
                    WalFileName::Segment { tli: 1, segno },
                    WalFileName::Partial { tli: 2, segno },
                    WalFileName::Backup {
                        tli: 0x10,
                        segno,
                        offset: 0x28,
                    },
                    WalFileName::History { tli: 0xFF },
                ] {
                    let text = name.file_name(s);
                    assert_eq!(WalFileName::parse(&text, s).unwrap(), name, "{text}");
                }
                let lsn = Lsn::from_segment(segno, s);
                assert_eq!(lsn.segment_number(s), segno);
            }
        }
        let s16 = size(16);
        assert_eq!(
            WalFileName::parse("000000010000000000000002.00000028.backup", s16).unwrap(),
            WalFileName::Backup {
                tli: 1,
                segno: 2,
                offset: 0x28
            }
        );
        assert_eq!(
            WalFileName::parse("00000002.history", s16)
                .unwrap()
                .timeline(),
            2
        );
        assert_eq!(
            WalFileName::parse("0000000300000001000000FF.partial", s16).unwrap(),
            WalFileName::Partial {
                tli: 3,
                segno: 0x1FF
            }
        );
        assert_eq!(
            WalFileName::Segment { tli: 1, segno: 9 }.segment_number(),
            Some(9)
        );
        assert_eq!(WalFileName::History { tli: 1 }.segment_number(), None);
    }

    #[test]
    fn bad_file_names_are_rejected_by_name() {
        let s16 = size(16);
        for bad in [
            "",
            "00000001000000000000000",     // 23 digits
            "0000000100000000000000001",   // 25 digits
            "000000010000000000000001.gz", // foreign suffix
            "000000010000000000000001.partial.tmp",
            "00000001000000000000000g", // not hex
            "00000001000000000000000a", // lower case
            "000000000000000000000001", // timeline 0
            "000000010000000000000100", // 256 > 255 segments per id for 16 MiB
            "00000000.history",
            "0000001.history",
            "000000010000000000000001.0000028.backup",
            "000000010000000000000001.01000000.backup", // offset >= segment size
            "000000010000000000000001.backup",
            "archive_status",
            "RECOVERYHISTORY",
        ] {
            let e = WalFileName::parse(bad, s16).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        // With 1 MiB segments 0x100 is fine, 0x1000 is not.
        assert!(WalFileName::parse("000000010000000000000100", size(1)).is_ok());
        assert!(WalFileName::parse("000000010000000000001000", size(1)).is_err());
    }

    #[test]
    fn history_parsing() {
        let text = "1\t0/3000158\tno recovery target specified\n\n# comment\n\
                    2\t0/50000A0\tat restore point \"before_upgrade\"\n3\t1/A0\t\n";
        let h = parse_timeline_history(text).unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(
            h[0],
            TimelineHistoryEntry {
                parent_tli: 1,
                switch_lsn: "0/3000158".parse().unwrap(),
                reason: "no recovery target specified".into()
            }
        );
        assert_eq!(h[1].reason, "at restore point \"before_upgrade\"");
        assert_eq!(h[2].switch_lsn, Lsn(0x1_0000_00A0));
        assert_eq!(h[2].reason, "");
        assert!(parse_timeline_history("").unwrap().is_empty());
        assert!(parse_timeline_history("# only a comment\n")
            .unwrap()
            .is_empty());

        for (bad, line) in [
            ("x\t0/1\tr\n", 1),
            ("1\n", 1),
            ("1\tnot-an-lsn\tr\n", 1),
            ("1\t0/1\tr\n1\t0/2\tr\n", 2),
            ("0\t0/1\tr\n", 1),
        ] {
            match parse_timeline_history(bad).unwrap_err() {
                SegmentError::BadHistoryLine { line: l, .. } => assert_eq!(l, line, "{bad:?}"),
                e => panic!("unexpected {e}"),
            }
        }
    }
}
