//! The XLOG page header that starts every WAL page (`XLogPageHeaderData`),
//! and the long form that starts every segment (`XLogLongPageHeaderData`).
//!
//! Layouts are those of x86_64 (little-endian, 8-byte MAXALIGN):
//! short header 24 bytes (20 used), long header 40 bytes.

use super::segment::{TimelineId, WalSegSize};
use super::Lsn;

/// The first page record continues a record from the previous page.
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// This page has the long header (first page of a segment).
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// The backup blocks on this page may be removed (unused since 9.x; kept for decoding).
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
/// The record that would continue here was overwritten (`XLOG_OVERWRITE_CONTRECORD`, 15+ and
/// back-patched minors).
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// All flag bits PostgreSQL defines (`XLP_ALL_FLAGS`).
pub const XLP_ALL_FLAGS: u16 = 0x000F;

/// Size of the short page header (`SizeOfXLogShortPHD`).
pub const SHORT_HEADER_LEN: usize = 24;
/// Size of the long page header (`SizeOfXLogLongPHD`).
pub const LONG_HEADER_LEN: usize = 40;
/// PostgreSQL's default and near-universal WAL page size (`XLOG_BLCKSZ`).
pub const DEFAULT_XLOG_BLCKSZ: u32 = 8192;

/// `XLOG_PAGE_MAGIC` per major version. Each value was checked against the
/// first bytes of WAL written by that major's own `initdb` (13.23, 14.20,
/// 15.18, 16.14, 17.10, 18.4) as well as `xlog_internal.h`.
const MAGICS: [(u16, u32); 6] = [
    (0xD106, 13),
    (0xD10D, 14),
    (0xD110, 15),
    (0xD113, 16),
    (0xD116, 17),
    (0xD118, 18),
];

/// The PostgreSQL major version that writes WAL pages with this magic
/// (13 to 18), or `None` for any other value.
pub fn pg_major_for_magic(magic: u16) -> Option<u32> {
    MAGICS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, major)| *major)
}

/// The `XLOG_PAGE_MAGIC` written by a PostgreSQL major (13 to 18).
pub fn magic_for_pg_major(major: u32) -> Option<u16> {
    MAGICS.iter().find(|(_, v)| *v == major).map(|(m, _)| *m)
}

/// Errors reading a page header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// Fewer bytes than the header needs.
    #[error("WAL page header needs {needed} bytes, only {available} available")]
    TooShort {
        /// Bytes the header needs.
        needed: usize,
        /// Bytes given.
        available: usize,
    },
    /// A magic number of no PostgreSQL major this build knows (13 to 18): not
    /// WAL, or WAL of an unsupported version.
    #[error("unknown WAL page magic 0x{magic:04X} (not WAL of PostgreSQL 13 to 18)")]
    UnknownMagic {
        /// The value found.
        magic: u16,
    },
    /// Flag bits PostgreSQL never sets.
    #[error("invalid WAL page flags 0x{info:04X}")]
    BadFlags {
        /// The value found.
        info: u16,
    },
    /// The first page of a segment lacks the long header.
    #[error("the first page of a WAL segment has no long header (flags 0x{info:04X})")]
    NotSegmentStart {
        /// The flags found.
        info: u16,
    },
    /// The long header carries a segment or page size PostgreSQL cannot use.
    #[error("WAL long page header: invalid {what} {value}")]
    BadSizes {
        /// `segment size` or `page size`.
        what: &'static str,
        /// The value found.
        value: u32,
    },
    /// `xlp_pageaddr` is not the address of a segment start.
    #[error(
        "WAL segment's first page claims address {pageaddr}, which is not the start of a segment"
    )]
    MisplacedSegment {
        /// The address found.
        pageaddr: Lsn,
    },
}

/// The extra fields of the long header on a segment's first page.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LongPageHeader {
    /// The cluster's system identifier (`pg_control`'s `system_identifier`).
    pub system_id: u64,
    /// `wal_segment_size` in bytes.
    pub seg_size: u32,
    /// `XLOG_BLCKSZ`, the WAL page size in bytes.
    pub xlog_blcksz: u32,
}

/// A decoded WAL page header.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PageHeader {
    /// `xlp_magic`: identifies the WAL format, hence the major version.
    pub magic: u16,
    /// `xlp_info`: the `XLP_*` flag bits.
    pub info: u16,
    /// `xlp_tli`: timeline of the first record on the page.
    pub tli: TimelineId,
    /// `xlp_pageaddr`: the WAL position of this page.
    pub pageaddr: Lsn,
    /// `xlp_rem_len`: bytes of a record continued from the previous page.
    pub rem_len: u32,
    /// Present when `XLP_LONG_HEADER` is set.
    pub long: Option<LongPageHeader>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl PageHeader {
    /// Decodes the header at the start of `page`. Checks the length, the
    /// magic and the flag bits; not the address (the caller knows where the
    /// page should be).
    pub fn parse(page: &[u8]) -> Result<PageHeader, PageError> {
        if page.len() < SHORT_HEADER_LEN {
            return Err(PageError::TooShort {
                needed: SHORT_HEADER_LEN,
                available: page.len(),
            });
        }
        let magic = u16_at(page, 0);
        if pg_major_for_magic(magic).is_none() {
            return Err(PageError::UnknownMagic { magic });
        }
        let info = u16_at(page, 2);
        if info & !XLP_ALL_FLAGS != 0 {
            return Err(PageError::BadFlags { info });
        }
        let long = if info & XLP_LONG_HEADER != 0 {
            if page.len() < LONG_HEADER_LEN {
                return Err(PageError::TooShort {
                    needed: LONG_HEADER_LEN,
                    available: page.len(),
                });
            }
            Some(LongPageHeader {
                system_id: u64_at(page, 24),
                seg_size: u32_at(page, 32),
                xlog_blcksz: u32_at(page, 36),
            })
        } else {
            None
        };
        Ok(PageHeader {
            magic,
            info,
            tli: u32_at(page, 4),
            pageaddr: Lsn(u64_at(page, 8)),
            rem_len: u32_at(page, 16),
            long,
        })
    }

    /// The header's size on the page: 40 bytes with the long header, else 24.
    pub fn header_len(&self) -> usize {
        if self.long.is_some() {
            LONG_HEADER_LEN
        } else {
            SHORT_HEADER_LEN
        }
    }

    /// The major version that wrote the page (from the magic).
    pub fn pg_major(&self) -> Option<u32> {
        pg_major_for_magic(self.magic)
    }

    /// Whether the page begins with the rest of a record from the previous page.
    pub fn is_contrecord(&self) -> bool {
        self.info & XLP_FIRST_IS_CONTRECORD != 0
    }
}

/// What the first page of a segment says about the segment.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SegmentStart {
    /// The cluster's system identifier.
    pub system_id: u64,
    /// The cluster's `wal_segment_size` in bytes, already checked by
    /// [`WalSegSize::new`].
    pub seg_size: u32,
    /// The WAL page size.
    pub xlog_blcksz: u32,
    /// The timeline of the first page.
    pub tli: TimelineId,
    /// The segment's start position.
    pub pageaddr: Lsn,
    /// The major version that wrote the segment, from the page magic.
    pub pg_major: Option<u32>,
}

/// Reads and checks the long header at the start of a segment (or of a
/// prefix of one, as a `.partial` may be): it must be a long header with a
/// valid segment size and page size, and its address must be a segment start.
pub fn parse_segment_start(data: &[u8]) -> Result<SegmentStart, PageError> {
    let h = PageHeader::parse(data)?;
    let long = h.long.ok_or(PageError::NotSegmentStart { info: h.info })?;
    let seg_size = WalSegSize::new(long.seg_size).map_err(|_| PageError::BadSizes {
        what: "segment size",
        value: long.seg_size,
    })?;
    let b = long.xlog_blcksz;
    // PostgreSQL allows XLOG_BLCKSZ of 1 kB to 64 kB (configure --with-wal-blocksize).
    if !b.is_power_of_two() || !(1024..=65536).contains(&b) || b > seg_size.bytes() {
        return Err(PageError::BadSizes {
            what: "page size",
            value: b,
        });
    }
    if h.pageaddr.segment_offset(seg_size) != 0 {
        return Err(PageError::MisplacedSegment {
            pageaddr: h.pageaddr,
        });
    }
    Ok(SegmentStart {
        system_id: long.system_id,
        seg_size: seg_size.bytes(),
        xlog_blcksz: b,
        tli: h.tli,
        pageaddr: h.pageaddr,
        pg_major: h.pg_major(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::wal::test_fixtures::{fixture, Fixture};

    #[test]
    fn magic_table() {
        assert_eq!(pg_major_for_magic(0xD106), Some(13));
        assert_eq!(pg_major_for_magic(0xD10D), Some(14));
        assert_eq!(pg_major_for_magic(0xD110), Some(15));
        assert_eq!(pg_major_for_magic(0xD113), Some(16));
        assert_eq!(pg_major_for_magic(0xD116), Some(17));
        assert_eq!(pg_major_for_magic(0xD118), Some(18));
        assert_eq!(pg_major_for_magic(0xD101), None);
        assert_eq!(pg_major_for_magic(0), None);
        for major in 13..=18 {
            assert_eq!(
                pg_major_for_magic(magic_for_pg_major(major).unwrap()),
                Some(major)
            );
        }
        assert_eq!(magic_for_pg_major(12), None);
    }

    fn check_fixture(f: &Fixture) {
        let data = &f.data;
        let h = PageHeader::parse(data).unwrap();
        assert_eq!(h.pg_major(), Some(f.major), "{}", f.name);
        assert_eq!(h.header_len(), LONG_HEADER_LEN);
        assert_eq!(h.tli, 1);
        assert_eq!(h.pageaddr, f.start_lsn);
        let long = h.long.unwrap();
        assert_eq!(long.system_id, f.system_id, "{}", f.name);
        assert_eq!(long.seg_size, 1 << 20);
        assert_eq!(long.xlog_blcksz, 8192);

        let s = parse_segment_start(data).unwrap();
        assert_eq!(s.system_id, f.system_id);
        assert_eq!(s.seg_size, 1 << 20);
        assert_eq!(s.pg_major, Some(f.major));
        assert_eq!(s.pageaddr, f.start_lsn);

        // The second page (when the fixture has one) has a short header,
        // addressed one page later.
        if data.len() > 8192 {
            let p2 = PageHeader::parse(&data[8192..]).unwrap();
            assert_eq!(p2.header_len(), SHORT_HEADER_LEN);
            assert!(p2.long.is_none());
            assert_eq!(p2.pageaddr, f.start_lsn + 8192);
            assert_eq!(p2.magic, h.magic);
            assert!(matches!(
                parse_segment_start(&data[8192..]),
                Err(PageError::NotSegmentStart { .. })
            ));
        }
    }

    #[test]
    fn fixture_headers_all_majors() {
        for name in ["pg13-a", "pg15-a", "pg15-b", "pg17-a", "pg18-a"] {
            check_fixture(&fixture(name));
        }
        // pg15-b begins with the continuation of a record from pg15-a.
        let b = fixture("pg15-b");
        let h = PageHeader::parse(&b.data).unwrap();
        assert!(h.is_contrecord());
        assert!(h.rem_len > 0);
    }

    #[test]
    fn header_errors() {
        let f = fixture("pg15-a");
        assert_eq!(
            PageHeader::parse(&f.data[..10]),
            Err(PageError::TooShort {
                needed: 24,
                available: 10
            })
        );
        assert_eq!(
            PageHeader::parse(&f.data[..30]),
            Err(PageError::TooShort {
                needed: 40,
                available: 30
            })
        );
        let mut bad = f.data[..8192].to_vec();
        bad[0] = 0x01;
        let e = PageHeader::parse(&bad).unwrap_err();
        assert!(e.to_string().contains("0xD101"), "{e}");
        let mut bad = f.data[..8192].to_vec();
        bad[2] |= 0x80;
        assert!(matches!(
            PageHeader::parse(&bad),
            Err(PageError::BadFlags { .. })
        ));
        let mut bad = f.data[..8192].to_vec();
        bad[32..36].copy_from_slice(&3_000_000u32.to_le_bytes());
        assert!(matches!(
            parse_segment_start(&bad),
            Err(PageError::BadSizes {
                what: "segment size",
                ..
            })
        ));
        let mut bad = f.data[..8192].to_vec();
        bad[8] = 0x28;
        assert!(matches!(
            parse_segment_start(&bad),
            Err(PageError::MisplacedSegment { .. })
        ));
        assert!(matches!(
            PageHeader::parse(&[0u8; 40]),
            Err(PageError::UnknownMagic { magic: 0 })
        ));
    }
}
