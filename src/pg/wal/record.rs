//! WAL records: walking the records of one segment, checking their CRC-32C,
//! finding their main data, and summarising what matters for recovery
//! targets (commit/abort times, transaction ids, restore points).
//!
//! # Where a segment's WAL ends
//!
//! [`scan_segment`] stops without error, like PostgreSQL's recovery does, at:
//! - the end of the data given (a `.partial` or a prefix of a segment);
//! - a record that continues past the end of the segment (it belongs to the
//!   next segment's reader) or past the end of the data;
//! - an `XLOG_SWITCH` record (the rest of the segment is unused);
//! - the end of valid WAL: a zero length (zeroed tail), a record header that
//!   cannot be valid (length below 24 bytes, `xl_prev` not pointing at the
//!   previous record), or a page whose header is not the expected one (a
//!   recycled segment's stale tail).
//!
//! A CRC mismatch is the end of WAL (a torn tail) only when no valid record
//! follows it: if the next position holds a record whose `xl_prev` points back
//! at the failing record and whose own CRC is valid, WAL continued after the
//! damaged record, so the segment is corrupt and [`RecordError::CrcMismatch`]
//! names the damaged record's LSN. A record whose CRC is valid but whose block
//! headers cannot be decoded is an error too ([`RecordError::BadRecord`]).
//!
//! Records are attributed to the segment in which they start, except one that
//! crosses into the next segment: its start is kept ([`CrossingRecord`], in
//! the segment's index entry) and the next segment's scan, given it, checks
//! and reports the whole record there, where replay completes it. Without it
//! the next segment's scan skips the continuation, as PostgreSQL's
//! `XLogFindNextRecord` does.

use super::page::{parse_segment_start, PageError, PageHeader, XLP_FIRST_IS_CONTRECORD};
use super::segment::{TimelineId, WalSegSize};
use super::Lsn;

/// Size of the fixed record header (`SizeOfXLogRecord`).
pub const SIZE_OF_XLOG_RECORD: usize = 24;
/// `XLogRecordMaxSize` (PostgreSQL 16+; older versions allow about as much).
const MAX_RECORD_LEN: u32 = 1020 * 1024 * 1024;

/// Resource manager of the XLOG records (checkpoints, switch, restore points).
pub const RM_XLOG_ID: u8 = 0;
/// Resource manager of transaction records (commit, abort, prepare).
pub const RM_XACT_ID: u8 = 1;
/// `XLOG_SWITCH`: the rest of the segment is unused.
pub const XLOG_SWITCH: u8 = 0x40;
/// `XLOG_RESTORE_POINT`: `pg_create_restore_point()`.
pub const XLOG_RESTORE_POINT: u8 = 0x70;
/// Mask of the transaction operation in `xl_info` (`XLOG_XACT_OPMASK`).
pub const XLOG_XACT_OPMASK: u8 = 0x70;
/// `XLOG_XACT_COMMIT`.
pub const XLOG_XACT_COMMIT: u8 = 0x00;
/// `XLOG_XACT_PREPARE`.
pub const XLOG_XACT_PREPARE: u8 = 0x10;
/// `XLOG_XACT_ABORT`.
pub const XLOG_XACT_ABORT: u8 = 0x20;
/// `XLOG_XACT_COMMIT_PREPARED`.
pub const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
/// `XLOG_XACT_ABORT_PREPARED`.
pub const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
/// `XLOG_XACT_HAS_INFO`: an `xl_xact_xinfo` follows `xact_time`.
const XLOG_XACT_HAS_INFO: u8 = 0x80;

const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
const XACT_XINFO_HAS_RELFILELOCATORS: u32 = 1 << 2;
const XACT_XINFO_HAS_INVALS: u32 = 1 << 3;
const XACT_XINFO_HAS_TWOPHASE: u32 = 1 << 4;
const XACT_XINFO_HAS_DROPPED_STATS: u32 = 1 << 8;

const XLR_MAX_BLOCK_ID: u8 = 32;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_HAS_DATA: u8 = 0x20;
const BKPBLOCK_SAME_REL: u8 = 0x80;
const BKPIMAGE_HAS_HOLE: u8 = 0x01;
/// 13 and 14: `BKPIMAGE_IS_COMPRESSED`.
const BKPIMAGE_IS_COMPRESSED_PG13: u8 = 0x02;
/// 15+: `BKPIMAGE_COMPRESS_PGLZ | BKPIMAGE_COMPRESS_LZ4 | BKPIMAGE_COMPRESS_ZSTD`.
const BKPIMAGE_COMPRESSED_PG15: u8 = 0x04 | 0x08 | 0x10;
/// `sizeof(RelFileLocator)` (`RelFileNode` before 16).
const REL_FILE_LOCATOR_LEN: usize = 12;

/// Seconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01 00:00:00 UTC.
pub const POSTGRES_EPOCH_UNIX_SECS: i64 = 946_684_800;
const POSTGRES_EPOCH_UNIX_MICROS: i64 = POSTGRES_EPOCH_UNIX_SECS * 1_000_000;

/// Converts a PostgreSQL `TimestampTz` (microseconds since 2000-01-01 UTC) to
/// microseconds since 1970-01-01 UTC (saturating at the `i64` range).
pub fn timestamptz_to_unix_micros(ts: i64) -> i64 {
    ts.saturating_add(POSTGRES_EPOCH_UNIX_MICROS)
}

/// Converts microseconds since 1970-01-01 UTC to a PostgreSQL `TimestampTz`.
pub fn unix_micros_to_timestamptz(micros: i64) -> i64 {
    micros.saturating_sub(POSTGRES_EPOCH_UNIX_MICROS)
}

/// A `TimestampTz` as a UTC date-time; `None` outside chrono's range
/// (including PostgreSQL's `infinity` values).
pub fn timestamptz_to_datetime(ts: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_micros(timestamptz_to_unix_micros(ts))
}

/// Errors scanning a segment's records. Each names the position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The segment's first page cannot be used.
    #[error("WAL segment starting at byte 0: {0}")]
    SegmentStart(#[from] PageError),
    /// The data is not a segment of the expected size.
    #[error(
        "WAL segment of {found} bytes per segment (from its long page header), expected {expected}"
    )]
    SegSizeMismatch {
        /// The size the long page header records.
        found: u32,
        /// The size the caller expected.
        expected: u32,
    },
    /// More bytes than a segment holds.
    #[error("WAL data of {len} bytes is larger than one segment ({seg_size} bytes)")]
    TooLong {
        /// Bytes given.
        len: usize,
        /// The segment size.
        seg_size: u32,
    },
    /// A record whose CRC does not match, followed by valid WAL.
    #[error("WAL record at {lsn}: CRC-32C mismatch (stored {stored:08X}, computed {computed:08X}) with valid WAL after it: the segment is corrupt")]
    CrcMismatch {
        /// Start of the damaged record.
        lsn: Lsn,
        /// The CRC in the record header.
        stored: u32,
        /// The CRC of the bytes found.
        computed: u32,
    },
    /// A record with a valid CRC that cannot be decoded.
    #[error("WAL record at {lsn}: {reason}")]
    BadRecord {
        /// Start of the record.
        lsn: Lsn,
        /// What is wrong.
        reason: String,
    },
}

/// Why [`scan_segment`] stopped. All of these are normal ends; see the module
/// documentation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ScanStop {
    /// The data ended (at a record boundary or inside a record).
    EndOfData,
    /// The last record continues into the next segment.
    ContinuesPastSegment,
    /// An `XLOG_SWITCH` record ended the segment.
    Switch,
    /// Zeros, an impossible record header or a stale page: no more WAL here.
    EndOfWal,
    /// A record with a bad CRC and nothing valid after it (a torn tail).
    CrcAtTail,
}

/// One decoded record, borrowed from the segment data (or from the scanner's
/// reassembly buffer when the record spans pages).
#[derive(Debug)]
pub struct WalRecord<'a> {
    /// Where the record starts.
    pub lsn: Lsn,
    /// Where the next record starts (the end, MAXALIGNed, as PostgreSQL's
    /// `EndRecPtr`). For an `XLOG_SWITCH` record this is the record's own
    /// end, where PostgreSQL's reader pretends it runs to the segment end.
    pub end_lsn: Lsn,
    /// `xl_xid`.
    pub xid: u32,
    /// `xl_prev`.
    pub prev: Lsn,
    /// `xl_info`.
    pub info: u8,
    /// `xl_rmid`.
    pub rmid: u8,
    /// The whole record, header included (`xl_tot_len` bytes).
    pub bytes: &'a [u8],
    /// The record's main data (after block images and block data).
    pub main_data: &'a [u8],
}

impl<'a> WalRecord<'a> {
    /// The record `rec` (whole, CRC checked) starting at `lsn`, its header
    /// fields read from its bytes.
    fn of(lsn: Lsn, end_lsn: Lsn, rec: &'a [u8], main_data: &'a [u8]) -> WalRecord<'a> {
        WalRecord {
            lsn,
            end_lsn,
            xid: le_u32(rec, 4),
            prev: Lsn(le_u64(rec, 8)),
            info: rec[16],
            rmid: rec[17],
            bytes: rec,
            main_data,
        }
    }
}

/// Largest record whose start [`scan_segment`] keeps when it crosses the end
/// of the segment: commit, abort and restore point records are far smaller.
pub const MAX_CROSSING_LEN: usize = 64 << 10;

/// The start of a record that crosses the end of its segment: the bytes in
/// that segment, page headers left out. Given to the scan of the next segment,
/// which joins the rest and checks the record's CRC before reporting it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CrossingRecord {
    /// Where the record starts.
    pub lsn: Lsn,
    /// Its bytes in the segment where it starts (hex in JSON).
    #[serde(with = "hex_bytes")]
    pub head: Vec<u8>,
}

impl CrossingRecord {
    /// Whether the record matters to the WAL index (a commit, abort or restore
    /// point), or cannot be told yet (its header is cut by the segment end).
    pub fn worth_keeping(&self) -> bool {
        let h = &self.head;
        if h.len() < SIZE_OF_XLOG_RECORD {
            return true;
        }
        let (info, rmid) = (h[16], h[17]);
        match rmid {
            RM_XACT_ID => matches!(
                info & XLOG_XACT_OPMASK,
                XLOG_XACT_COMMIT
                    | XLOG_XACT_COMMIT_PREPARED
                    | XLOG_XACT_ABORT
                    | XLOG_XACT_ABORT_PREPARED
            ),
            RM_XLOG_ID => info & 0xF0 == XLOG_RESTORE_POINT,
            _ => false,
        }
    }
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

/// What [`scan_segment`] found besides the records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanOutcome {
    /// The segment's first byte.
    pub start_lsn: Lsn,
    /// Timeline of the first page.
    pub timeline: TimelineId,
    /// The major version that wrote the segment.
    pub pg_major: Option<u32>,
    /// The first record that starts in this segment, if any.
    pub first_record_lsn: Option<Lsn>,
    /// End of the last complete record (where the next one starts); the
    /// start of the first record when none completed, or [`ScanOutcome::start_lsn`]
    /// when no record starts in the data.
    pub end_lsn: Lsn,
    /// Why the scan stopped.
    pub stop: ScanStop,
    /// The start of the last record when it continues into the next segment
    /// ([`ScanStop::ContinuesPastSegment`]) and is at most [`MAX_CROSSING_LEN`] long.
    pub crossing: Option<CrossingRecord>,
}

fn maxalign(n: usize) -> usize {
    (n + 7) & !7
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The segment being scanned.
struct Seg<'d> {
    data: &'d [u8],
    start: Lsn,
    blcksz: usize,
    seg_bytes: usize,
    magic: u16,
}

/// Outcome of reading the record at one position.
enum Read {
    /// A record, complete in the data: its length and the offset where the next one starts.
    Record {
        tot_len: usize,
        next: usize,
        spans: bool,
    },
    /// No record here; scanning stops for this reason.
    Stop(ScanStop),
}

impl Seg<'_> {
    /// The header of the page at `off` when it is the page PostgreSQL would
    /// have written there (same magic, right address), else `None`.
    fn page_at(&self, off: usize) -> Option<PageHeader> {
        let h = PageHeader::parse(self.data.get(off..)?).ok()?;
        (h.magic == self.magic && h.pageaddr == self.start + off as u64).then_some(h)
    }

    /// Reads the record that starts at `pos` (past any page header), copying
    /// it into `buf` when it spans pages. `pos` is where the header begins.
    fn read_at(&self, pos: usize, buf: &mut Vec<u8>) -> Read {
        let data = self.data;
        if pos + 4 > data.len() {
            return Read::Stop(ScanStop::EndOfData);
        }
        let tot_len = le_u32(data, pos);
        if tot_len == 0 {
            return Read::Stop(ScanStop::EndOfWal);
        }
        if (tot_len as usize) < SIZE_OF_XLOG_RECORD || tot_len > MAX_RECORD_LEN {
            return Read::Stop(ScanStop::EndOfWal);
        }
        let tot_len = tot_len as usize;
        let page_end = (pos / self.blcksz + 1) * self.blcksz;
        if pos + tot_len <= page_end {
            if pos + tot_len > data.len() {
                return Read::Stop(ScanStop::EndOfData);
            }
            return Read::Record {
                tot_len,
                next: maxalign(pos + tot_len),
                spans: false,
            };
        }
        // The record continues on following pages, each starting with a
        // short header that counts the bytes still to come.
        buf.clear();
        let first = page_end.min(data.len()) - pos;
        buf.extend_from_slice(&data[pos..pos + first]);
        if page_end > data.len() {
            return Read::Stop(ScanStop::EndOfData);
        }
        let mut page = page_end;
        loop {
            let remaining = tot_len - buf.len();
            if page >= self.seg_bytes {
                return Read::Stop(ScanStop::ContinuesPastSegment);
            }
            if page >= data.len() {
                return Read::Stop(ScanStop::EndOfData);
            }
            let Some(h) = self.page_at(page) else {
                return Read::Stop(ScanStop::EndOfWal);
            };
            if h.info & XLP_FIRST_IS_CONTRECORD == 0 || h.rem_len as usize != remaining {
                return Read::Stop(ScanStop::EndOfWal);
            }
            let body = page + h.header_len();
            let take = remaining.min(self.blcksz - h.header_len());
            if body + take > data.len() {
                return Read::Stop(ScanStop::EndOfData);
            }
            buf.extend_from_slice(&data[body..body + take]);
            if take == remaining {
                return Read::Record {
                    tot_len,
                    next: maxalign(body + take),
                    spans: true,
                };
            }
            page += self.blcksz;
        }
    }

    /// Moves `pos` past the page header when it sits on a page boundary.
    /// The reason to stop when the data or the valid WAL ends there.
    fn skip_page_header(&self, pos: usize) -> Result<usize, ScanStop> {
        if !pos.is_multiple_of(self.blcksz) {
            return Ok(pos);
        }
        if pos >= self.seg_bytes {
            return Err(ScanStop::EndOfData);
        }
        if pos >= self.data.len() {
            return Err(ScanStop::EndOfData);
        }
        match self.page_at(pos) {
            // A page that starts with a continuation cannot start a record.
            Some(h) if h.info & XLP_FIRST_IS_CONTRECORD == 0 => Ok(pos + h.header_len()),
            _ => Err(ScanStop::EndOfWal),
        }
    }
}

fn record_crc(rec: &[u8]) -> (u32, u32) {
    let stored = le_u32(rec, 20);
    let crc = crc32c::crc32c(&rec[SIZE_OF_XLOG_RECORD..]);
    (stored, crc32c::crc32c_append(crc, &rec[..20]))
}

/// Finds the main data of a record (`DecodeXLogRecord`'s header walk).
fn main_data(rec: &[u8], pg_major: u32) -> Result<&[u8], String> {
    let end = rec.len();
    let mut p = SIZE_OF_XLOG_RECORD;
    let mut main_len = 0usize;
    let mut payload = 0usize;
    let need = |p: usize, n: usize| -> Result<(), String> {
        if p + n > end {
            Err(format!("block headers run past the record's {end} bytes"))
        } else {
            Ok(())
        }
    };
    // Headers continue while more bytes remain than the payloads announced so far.
    while end - p > payload {
        let id = rec[p];
        p += 1;
        match id {
            XLR_BLOCK_ID_DATA_SHORT => {
                need(p, 1)?;
                main_len = rec[p] as usize;
                p += 1;
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                need(p, 4)?;
                main_len = le_u32(rec, p) as usize;
                p += 4;
                break;
            }
            XLR_BLOCK_ID_ORIGIN => {
                need(p, 2)?;
                p += 2;
            }
            XLR_BLOCK_ID_TOPLEVEL_XID => {
                need(p, 4)?;
                p += 4;
            }
            0..=XLR_MAX_BLOCK_ID => {
                need(p, 3)?;
                let fork_flags = rec[p];
                let data_len = le_u16(rec, p + 1) as usize;
                p += 3;
                if (fork_flags & BKPBLOCK_HAS_DATA != 0) != (data_len != 0) {
                    return Err(format!(
                        "block {id}: BKPBLOCK_HAS_DATA disagrees with data length {data_len}"
                    ));
                }
                payload += data_len;
                if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    need(p, 5)?;
                    let img_len = le_u16(rec, p) as usize;
                    let bimg_info = rec[p + 4];
                    p += 5;
                    let compressed = if pg_major >= 15 {
                        bimg_info & BKPIMAGE_COMPRESSED_PG15 != 0
                    } else {
                        bimg_info & BKPIMAGE_IS_COMPRESSED_PG13 != 0
                    };
                    if bimg_info & BKPIMAGE_HAS_HOLE != 0 && compressed {
                        need(p, 2)?;
                        p += 2;
                    }
                    payload += img_len;
                }
                if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    p += REL_FILE_LOCATOR_LEN;
                }
                need(p, 4)?;
                p += 4;
            }
            other => return Err(format!("invalid block id {other}")),
        }
    }
    if p + payload + main_len != end {
        return Err(format!(
            "headers ({p} bytes) + block payload ({payload}) + main data ({main_len}) != record length {end}"
        ));
    }
    Ok(&rec[end - main_len..])
}

/// Walks the records that start in one WAL segment, calling `f` for each
/// complete record with a valid CRC. `data` is the whole segment or a prefix
/// of it (a `.partial`); the segment size must match the segment's long
/// header. See the module documentation for where the scan stops.
///
/// `carry` is the previous segment's [`ScanOutcome::crossing`], when known:
/// the record it starts is joined with its continuation at the start of this
/// segment and, if whole here and its CRC checks, given to `f` first. A carry
/// that does not fit (another length, another history) is ignored.
///
/// Allocation: one reassembly buffer, reused, for records that span pages.
pub fn scan_segment(
    data: &[u8],
    seg_size: WalSegSize,
    carry: Option<&CrossingRecord>,
    mut f: impl FnMut(&WalRecord<'_>),
) -> Result<ScanOutcome, RecordError> {
    let start = parse_segment_start(data)?;
    if start.seg_size != seg_size.bytes() {
        return Err(RecordError::SegSizeMismatch {
            found: start.seg_size,
            expected: seg_size.bytes(),
        });
    }
    if data.len() > seg_size.bytes() as usize {
        return Err(RecordError::TooLong {
            len: data.len(),
            seg_size: seg_size.bytes(),
        });
    }
    // parse_segment_start accepted the magic, so the major is known.
    let first = PageHeader::parse(data)?;
    let pg_major = first.pg_major().unwrap_or(0);
    let seg = Seg {
        data,
        start: start.pageaddr,
        blcksz: start.xlog_blcksz as usize,
        seg_bytes: seg_size.bytes() as usize,
        magic: first.magic,
    };
    let mut out = ScanOutcome {
        start_lsn: start.pageaddr,
        timeline: start.tli,
        pg_major: start.pg_major,
        first_record_lsn: None,
        end_lsn: start.pageaddr,
        stop: ScanStop::EndOfData,
        crossing: None,
    };

    // The tail of a record that began in the previous segment: joined to its
    // start when the caller has it, else skipped (XLogFindNextRecord). Either
    // way, follow xlp_rem_len from page to page.
    let mut joining = carry.and_then(|c| {
        let tot_len = c.head.get(..4).map(|b| le_u32(b, 0) as usize)?;
        let fits = first.info & XLP_FIRST_IS_CONTRECORD != 0
            && c.lsn < seg.start
            && (SIZE_OF_XLOG_RECORD..=MAX_CROSSING_LEN).contains(&tot_len)
            && c.head.len() + first.rem_len as usize == tot_len;
        fits.then(|| {
            let mut bytes = Vec::with_capacity(tot_len);
            bytes.extend_from_slice(&c.head);
            (c.lsn, tot_len, bytes)
        })
    });
    let mut pos = first.header_len();
    let mut h = first;
    let mut page = 0usize;
    while h.info & XLP_FIRST_IS_CONTRECORD != 0 {
        let rem = h.rem_len as usize;
        let body = page + h.header_len();
        let take = rem.min(seg.blcksz - h.header_len());
        joining = joining.filter(|(_, tot_len, bytes)| {
            bytes.len() + rem == *tot_len && body + take <= data.len()
        });
        if let Some((_, _, bytes)) = joining.as_mut() {
            bytes.extend_from_slice(&data[body..body + take]);
        }
        if h.header_len() + rem <= seg.blcksz {
            if let Some((lsn, _, rec)) = joining.take() {
                let end = seg.start + maxalign(body + rem) as u64;
                report_joined(lsn, end, &rec, pg_major, &mut f);
            }
        }
        if h.header_len() + rem < seg.blcksz {
            pos = page + h.header_len() + maxalign(rem);
            break;
        }
        page += seg.blcksz;
        match seg.page_at(page) {
            Some(next) if page < data.len() => {
                pos = page + next.header_len();
                h = next;
            }
            _ => {
                out.stop = if page >= seg.seg_bytes {
                    ScanStop::ContinuesPastSegment
                } else if page >= data.len() {
                    ScanStop::EndOfData
                } else {
                    ScanStop::EndOfWal
                };
                return Ok(out);
            }
        }
    }

    let mut buf = Vec::new();
    let mut prev: Option<Lsn> = None;
    loop {
        pos = match seg.skip_page_header(pos) {
            Ok(p) => p,
            Err(stop) => {
                out.stop = stop;
                break;
            }
        };
        let lsn = seg.start + pos as u64;
        if out.first_record_lsn.is_none() {
            out.end_lsn = lsn;
        }
        let (tot_len, next, spans) = match seg.read_at(pos, &mut buf) {
            Read::Record {
                tot_len,
                next,
                spans,
            } => (tot_len, next, spans),
            Read::Stop(stop) => {
                if stop == ScanStop::ContinuesPastSegment && buf.len() <= MAX_CROSSING_LEN {
                    out.crossing = Some(CrossingRecord {
                        lsn,
                        head: buf.clone(),
                    });
                }
                out.stop = stop;
                break;
            }
        };
        let rec: &[u8] = if spans {
            &buf[..tot_len]
        } else {
            &data[pos..pos + tot_len]
        };
        let rec_prev = Lsn(le_u64(rec, 8));
        // The first record's predecessor is in the previous segment; after
        // that, a wrong back link means stale data (PostgreSQL's check too).
        if prev.is_some_and(|p| p != rec_prev) {
            out.stop = ScanStop::EndOfWal;
            break;
        }
        let (stored, computed) = record_crc(rec);
        if stored != computed {
            let mut look = Vec::new();
            if valid_record_follows(&seg, next, lsn, &mut look) {
                return Err(RecordError::CrcMismatch {
                    lsn,
                    stored,
                    computed,
                });
            }
            out.stop = ScanStop::CrcAtTail;
            break;
        }
        let main =
            main_data(rec, pg_major).map_err(|reason| RecordError::BadRecord { lsn, reason })?;
        let record = WalRecord::of(lsn, seg.start + next as u64, rec, main);
        out.first_record_lsn.get_or_insert(lsn);
        out.end_lsn = record.end_lsn;
        f(&record);
        prev = Some(lsn);
        if record.rmid == RM_XLOG_ID && record.info & 0xF0 == XLOG_SWITCH {
            out.stop = ScanStop::Switch;
            break;
        }
        pos = next;
    }
    Ok(out)
}

/// Gives `f` the record joined from the previous segment's [`CrossingRecord`]
/// and this segment's continuation, if its CRC and block headers check out; a
/// record that does not is dropped: it is the other segment's business.
fn report_joined(
    lsn: Lsn,
    end_lsn: Lsn,
    rec: &[u8],
    pg_major: u32,
    f: &mut impl FnMut(&WalRecord<'_>),
) {
    let (stored, computed) = record_crc(rec);
    if stored != computed {
        tracing::debug!(%lsn, "the record crossing into this segment does not check: not indexed");
        return;
    }
    let Ok(main) = main_data(rec, pg_major) else {
        return;
    };
    f(&WalRecord::of(lsn, end_lsn, rec, main));
}

/// Whether a valid record (back link to `prev`, good CRC) starts at `pos`.
fn valid_record_follows(seg: &Seg<'_>, pos: usize, prev: Lsn, buf: &mut Vec<u8>) -> bool {
    let Ok(pos) = seg.skip_page_header(pos) else {
        return false;
    };
    let Read::Record { tot_len, spans, .. } = seg.read_at(pos, buf) else {
        return false;
    };
    let rec: &[u8] = if spans {
        &buf[..tot_len]
    } else {
        &seg.data[pos..pos + tot_len]
    };
    let (stored, computed) = record_crc(rec);
    Lsn(le_u64(rec, 8)) == prev && stored == computed
}

/// A restore point made by `pg_create_restore_point(name)`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestorePoint {
    /// The name (`recovery_target_name`).
    pub name: String,
    /// The restore point record's position.
    pub lsn: Lsn,
    /// `rp_time`, a PostgreSQL `TimestampTz` (microseconds since 2000-01-01 UTC).
    pub time: i64,
}

/// What one segment holds, for the repository's WAL index.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentSummary {
    /// The segment's first byte.
    pub start_lsn: Lsn,
    /// End of the last complete record (where the next starts), see [`ScanOutcome::end_lsn`].
    pub end_lsn: Lsn,
    /// The first record that starts in this segment, if any.
    pub first_record_lsn: Option<Lsn>,
    /// Timeline of the segment's first page.
    pub timeline: TimelineId,
    /// The major version that wrote it.
    pub pg_major: Option<u32>,
    /// `xact_time` of the first commit (`COMMIT` or `COMMIT_PREPARED`), a
    /// `TimestampTz`: microseconds since 2000-01-01 UTC.
    pub first_commit_time: Option<i64>,
    /// `xact_time` of the last commit.
    pub last_commit_time: Option<i64>,
    /// `COMMIT` and `COMMIT_PREPARED` records.
    pub commits: u64,
    /// `ABORT` and `ABORT_PREPARED` records.
    pub aborts: u64,
    /// The oldest transaction id among commit and abort records, in
    /// PostgreSQL's circular xid order (see [`xid_precedes`]); for
    /// `*_PREPARED` the prepared transaction's id.
    pub min_xid: Option<u32>,
    /// The newest transaction id among commit and abort records.
    pub max_xid: Option<u32>,
    /// Restore points, in WAL order.
    pub restore_points: Vec<RestorePoint>,
    /// Complete records that start in the segment.
    pub records: u64,
    /// Whether the segment ends with an `XLOG_SWITCH` record.
    pub ends_with_switch: bool,
    /// The start of a commit, abort or restore point record (or of a record
    /// whose header the segment end cuts) that continues into the next
    /// segment, for that segment's summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crossing: Option<CrossingRecord>,
}

/// Whether transaction id `a` is older than `b` in PostgreSQL's circular xid
/// space (`TransactionIdPrecedes` for normal xids): xids wrap around after
/// 2^32, and of two xids the one up to 2^31 behind the other is the older.
pub fn xid_precedes(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// Widens the circular range `[min, max]` to take in `xid`.
pub fn widen_xid_range(range: Option<(u32, u32)>, xid: u32) -> (u32, u32) {
    match range {
        None => (xid, xid),
        Some((min, max)) => (
            if xid_precedes(xid, min) { xid } else { min },
            if xid_precedes(max, xid) { xid } else { max },
        ),
    }
}

/// Whether `xid` lies in the circular range `[min, max]`.
pub fn xid_in_range(xid: u32, min: u32, max: u32) -> bool {
    !xid_precedes(xid, min) && !xid_precedes(max, xid)
}

/// The commit or abort record of a top-level transaction, with the id it
/// finishes; `None` for other records (and for a transaction record too short
/// for its flags, which [`summarize_segment`] reports).
fn finished_xid(rec: &WalRecord<'_>, pg_major: u32) -> Option<u32> {
    xact_end(rec).and_then(|_| xact_xid(rec, pg_major))
}

/// How a transaction record ends its transaction: `Some(true)` commit
/// (`COMMIT`, `COMMIT_PREPARED`), `Some(false)` abort (`ABORT`,
/// `ABORT_PREPARED`); `None` for every other record.
fn xact_end(rec: &WalRecord<'_>) -> Option<bool> {
    if rec.rmid != RM_XACT_ID {
        return None;
    }
    match rec.info & XLOG_XACT_OPMASK {
        XLOG_XACT_COMMIT | XLOG_XACT_COMMIT_PREPARED => Some(true),
        XLOG_XACT_ABORT | XLOG_XACT_ABORT_PREPARED => Some(false),
        _ => None,
    }
}

/// Whether a commit or abort record of transaction `xid` ends in this
/// segment: the records [`summarize_segment`] counts here (with the same
/// `carry`), looked at one by one. This is what `recovery_target_xid` stops
/// at; the index's `[min_xid, max_xid]` only says where such a record may be
/// (a subtransaction's xid, or one that never finished, lies in ranges too).
pub fn finishes_xid(
    data: &[u8],
    seg_size: WalSegSize,
    carry: Option<&CrossingRecord>,
    xid: u32,
) -> Result<bool, RecordError> {
    let major = parse_segment_start(data)?.pg_major.unwrap_or(0);
    let mut found = false;
    scan_segment(data, seg_size, carry, |rec| {
        found |= finished_xid(rec, major) == Some(xid);
    })?;
    Ok(found)
}

/// The transaction id a commit/abort record finishes: `xl_xid`, or for a
/// `*_PREPARED` record the prepared transaction's id from `xl_xact_twophase`.
fn xact_xid(rec: &WalRecord<'_>, pg_major: u32) -> Option<u32> {
    let d = rec.main_data;
    if rec.info & XLOG_XACT_HAS_INFO == 0 {
        return Some(rec.xid);
    }
    let get = |at: usize| -> Option<u32> { d.get(at..at + 4).map(|b| le_u32(b, 0)) };
    let xinfo = get(8)?;
    if xinfo & XACT_XINFO_HAS_TWOPHASE == 0 {
        return Some(rec.xid);
    }
    let mut p = 12;
    if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
        p += 8;
    }
    if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
        p += 4 + get(p)? as usize * 4;
    }
    if xinfo & XACT_XINFO_HAS_RELFILELOCATORS != 0 {
        p += 4 + get(p)? as usize * REL_FILE_LOCATOR_LEN;
    }
    if xinfo & XACT_XINFO_HAS_DROPPED_STATS != 0 {
        // xl_xact_stats_item: kind, dboid, objoid (15-17); objid as two uint32 since 18.
        let item = if pg_major >= 18 { 16 } else { 12 };
        p += 4 + get(p)? as usize * item;
    }
    // Abort records carry no invalidation messages.
    if xinfo & XACT_XINFO_HAS_INVALS != 0 && rec.info & XLOG_XACT_OPMASK != XLOG_XACT_ABORT_PREPARED
    {
        p += 4 + get(p)? as usize * 16;
    }
    get(p)
}

/// Summarises one WAL segment (or a prefix of one): see [`SegmentSummary`]
/// and, for where the scan stops and what is an error, the module documentation.
/// `carry` is the previous segment's [`SegmentSummary::crossing`], when known:
/// the record it starts ends here and is summarised here (not counted in
/// [`SegmentSummary::records`], which counts the records that start here).
pub fn summarize_segment(
    data: &[u8],
    seg_size: WalSegSize,
    carry: Option<&CrossingRecord>,
) -> Result<SegmentSummary, RecordError> {
    let mut s = SegmentSummary {
        start_lsn: Lsn::INVALID,
        end_lsn: Lsn::INVALID,
        first_record_lsn: None,
        timeline: 0,
        pg_major: None,
        first_commit_time: None,
        last_commit_time: None,
        commits: 0,
        aborts: 0,
        min_xid: None,
        max_xid: None,
        restore_points: Vec::new(),
        records: 0,
        ends_with_switch: false,
        crossing: None,
    };
    let (major, seg_start) = parse_segment_start(data)
        .map(|h| (h.pg_major.unwrap_or(0), h.pageaddr))
        .unwrap_or((0, Lsn::INVALID));
    let mut bad: Option<RecordError> = None;
    let out = scan_segment(data, seg_size, carry, |rec| {
        if rec.lsn >= seg_start {
            s.records += 1;
        }
        match rec.rmid {
            RM_XACT_ID => {
                let Some(commit) = xact_end(rec) else {
                    return;
                };
                let Some(time) = rec.main_data.get(..8).map(|b| le_u64(b, 0) as i64) else {
                    bad.get_or_insert(RecordError::BadRecord {
                        lsn: rec.lsn,
                        reason: "transaction record without xact_time".into(),
                    });
                    return;
                };
                if commit {
                    s.commits += 1;
                    s.first_commit_time.get_or_insert(time);
                    s.last_commit_time = Some(time);
                } else {
                    s.aborts += 1;
                }
                match xact_xid(rec, major) {
                    Some(xid) => {
                        let (min, max) = widen_xid_range(s.min_xid.zip(s.max_xid), xid);
                        s.min_xid = Some(min);
                        s.max_xid = Some(max);
                    }
                    None => {
                        bad.get_or_insert(RecordError::BadRecord {
                            lsn: rec.lsn,
                            reason: "transaction record shorter than its xinfo flags say".into(),
                        });
                    }
                }
            }
            RM_XLOG_ID if rec.info & 0xF0 == XLOG_RESTORE_POINT => {
                let d = rec.main_data;
                if d.len() < 8 + 64 {
                    bad.get_or_insert(RecordError::BadRecord {
                        lsn: rec.lsn,
                        reason: format!(
                            "restore point record with {} bytes of data, expected 72",
                            d.len()
                        ),
                    });
                    return;
                }
                let name = &d[8..72];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                s.restore_points.push(RestorePoint {
                    name: String::from_utf8_lossy(name).into_owned(),
                    lsn: rec.lsn,
                    time: le_u64(d, 0) as i64,
                });
            }
            _ => {}
        }
    })?;
    if let Some(e) = bad {
        return Err(e);
    }
    s.start_lsn = out.start_lsn;
    s.end_lsn = out.end_lsn;
    s.first_record_lsn = out.first_record_lsn;
    s.timeline = out.timeline;
    s.pg_major = out.pg_major;
    s.ends_with_switch = out.stop == ScanStop::Switch;
    s.crossing = out.crossing.filter(CrossingRecord::worth_keeping);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::wal::test_fixtures::{fixture, Fixture, RpAt};

    fn one_mib() -> WalSegSize {
        WalSegSize::new(1 << 20).unwrap()
    }

    #[test]
    fn xid_ranges_follow_wraparound() {
        assert!(xid_precedes(3, 4) && !xid_precedes(4, 3) && !xid_precedes(5, 5));
        // Across the wrap: 4294967290 is older than 10.
        assert!(xid_precedes(4_294_967_290, 10));
        assert!(!xid_precedes(10, 4_294_967_290));
        let mut r = None;
        for xid in [4_294_967_290u32, 7, 4_294_967_295, 3] {
            r = Some(widen_xid_range(r, xid));
        }
        let (min, max) = r.unwrap();
        assert_eq!((min, max), (4_294_967_290, 7));
        assert!(xid_in_range(4_294_967_293, min, max));
        assert!(xid_in_range(5, min, max));
        // Numerically between, but not in the circular range.
        assert!(!xid_in_range(1_000_000, min, max));
        assert!(!xid_in_range(8, min, max));
        assert!(xid_in_range(42, 42, 42));
    }

    fn check(f: &Fixture) -> SegmentSummary {
        let s = summarize_segment(&f.data, one_mib(), None).unwrap();
        let n = &f.name;
        assert_eq!(s.start_lsn, f.start_lsn, "{n}");
        assert_eq!(s.end_lsn, f.end_lsn, "{n}");
        if let Some(records) = f.records {
            assert_eq!(s.records, records, "{n}");
        }
        assert_eq!(s.commits, f.commits, "{n}");
        assert_eq!(s.aborts, f.aborts, "{n}");
        assert_eq!(
            s.first_commit_time.map(timestamptz_to_unix_micros),
            Some(f.first_commit_unix_us),
            "{n}"
        );
        assert_eq!(
            s.last_commit_time.map(timestamptz_to_unix_micros),
            Some(f.last_commit_unix_us),
            "{n}"
        );
        assert_eq!(s.min_xid, Some(f.min_xid), "{n}");
        assert_eq!(s.max_xid, Some(f.max_xid), "{n}");
        // The range's ends are finished here; an xid past them is not.
        for (xid, here) in [
            (f.min_xid, true),
            (f.max_xid, true),
            (f.max_xid + 1000, false),
        ] {
            assert_eq!(
                finishes_xid(&f.data, one_mib(), None, xid).unwrap(),
                here,
                "{n}: xid {xid}"
            );
        }
        // Restore points: name and start, or name and end of the record.
        let mut ends = std::collections::HashMap::new();
        scan_segment(&f.data, one_mib(), None, |r| {
            ends.insert(r.lsn, r.end_lsn);
        })
        .unwrap();
        assert_eq!(s.restore_points.len(), f.restore_points.len(), "{n}");
        let rps: Vec<(String, RpAt)> = s
            .restore_points
            .iter()
            .zip(&f.restore_points)
            .map(|(r, (_, at))| match at {
                RpAt::Start(_) => (r.name.clone(), RpAt::Start(r.lsn)),
                RpAt::End(_) => (r.name.clone(), RpAt::End(ends[&r.lsn])),
            })
            .collect();
        assert_eq!(rps, f.restore_points, "{n}");
        for rp in &s.restore_points {
            let t = timestamptz_to_unix_micros(rp.time);
            assert!(
                t >= f.first_commit_unix_us - 60_000_000 && t <= f.last_commit_unix_us,
                "{n}: {t}"
            );
        }
        assert_eq!(s.timeline, 1);
        assert_eq!(s.pg_major, Some(f.major));
        assert!(!s.ends_with_switch);
        s
    }

    /// Every record the server's own decoder listed, in order, with the same xid and rmgr.
    fn check_records(f: &Fixture) {
        let list = f.record_list.as_ref().unwrap();
        let mut seen = Vec::new();
        scan_segment(&f.data, one_mib(), None, |r| {
            seen.push((r.lsn, r.xid, r.rmid))
        })
        .unwrap();
        assert_eq!(seen.len(), list.len(), "{}", f.name);
        for ((lsn, xid, rmid), (elsn, exid, ermgr)) in seen.iter().zip(list) {
            assert_eq!((lsn, xid), (elsn, exid), "{}", f.name);
            let expected_rmid = match ermgr.as_str() {
                "XLOG" => Some(0),
                "Transaction" => Some(1),
                "Heap2" => Some(9),
                "Heap" => Some(10),
                "Btree" => Some(11),
                _ => None,
            };
            if let Some(e) = expected_rmid {
                assert_eq!(*rmid, e, "{} at {lsn}: {ermgr}", f.name);
            }
        }
    }

    #[test]
    fn pg15_full_segment_ending_in_a_spanning_record() {
        let f = fixture("pg15-a");
        let s = check(&f);
        assert_eq!(s.first_record_lsn, Some(f.start_lsn + 40));
        check_records(&f);
        let out = scan_segment(&f.data, one_mib(), None, |_| {}).unwrap();
        assert_eq!(out.stop, ScanStop::ContinuesPastSegment);
    }

    #[test]
    fn pg15_partial_starting_with_a_continuation() {
        let f = fixture("pg15-b");
        let s = check(&f);
        assert!(s.first_record_lsn.unwrap() > f.start_lsn + 40);
        check_records(&f);
        let out = scan_segment(&f.data, one_mib(), None, |_| {}).unwrap();
        assert_eq!(out.stop, ScanStop::EndOfWal, "zeros after the last record");
    }

    const RM_HEAP_ID: u8 = 10;

    #[test]
    fn a_record_crossing_segments_is_joined_from_the_previous_segments_start() {
        let (a, b) = (fixture("pg15-a"), fixture("pg15-b"));
        let out = scan_segment(&a.data, one_mib(), None, |_| {}).unwrap();
        let crossing = out.crossing.expect("pg15-a ends inside a record");
        // It starts where segment 7's last complete record ends, 16 bytes
        // before the boundary: its header is cut, so the index keeps it.
        assert_eq!(crossing.lsn, a.end_lsn);
        assert_eq!(crossing.head.len(), 16);
        let kept = summarize_segment(&a.data, one_mib(), None)
            .unwrap()
            .crossing;
        assert_eq!(kept.as_ref(), Some(&crossing));

        let mut seen = Vec::new();
        scan_segment(&b.data, one_mib(), Some(&crossing), |r| {
            seen.push((r.lsn, r.end_lsn, r.xid, r.rmid))
        })
        .unwrap();
        let first_in_b = b.record_list.as_ref().unwrap()[0].0;
        // Its CRC checks once joined: a heap record of the fixture's
        // transaction (xid 758), ending where pg_waldump's list for segment 8 starts.
        assert_eq!(seen[0], (crossing.lsn, first_in_b, 758, RM_HEAP_ID));
        assert_eq!(seen[1].0, first_in_b);
        assert_eq!(seen.len(), b.record_list.as_ref().unwrap().len() + 1);
        // Summarised in b, but not counted among the records that start there.
        let s = summarize_segment(&b.data, one_mib(), Some(&crossing)).unwrap();
        assert_eq!(s, summarize_segment(&b.data, one_mib(), None).unwrap());

        // A start that does not belong (damaged, or another length) is ignored.
        let mut damaged = crossing.clone();
        let last = damaged.head.len() - 1;
        damaged.head[last] ^= 1;
        let mut shorter = crossing.clone();
        shorter.head.pop();
        for carry in [&damaged, &shorter] {
            let mut lsns = Vec::new();
            scan_segment(&b.data, one_mib(), Some(carry), |r| lsns.push(r.lsn)).unwrap();
            assert_eq!(lsns.first(), Some(&first_in_b));
        }
        // The carried start survives the index's JSON.
        let json = serde_json::to_string(&crossing).unwrap();
        assert_eq!(
            serde_json::from_str::<CrossingRecord>(&json).unwrap(),
            crossing
        );
    }

    #[test]
    fn pg17_and_pg18_partials() {
        for name in ["pg17-a", "pg18-a"] {
            let f = fixture(name);
            check(&f);
            check_records(&f);
        }
    }

    #[test]
    fn commit_prepared_reports_the_prepared_xid() {
        for name in ["pg15-a", "pg17-a", "pg18-a"] {
            let f = fixture(name);
            let major = f.major;
            let (mut prepared, mut finished) = (None, None);
            scan_segment(&f.data, one_mib(), None, |r| {
                if r.rmid == RM_XACT_ID && r.info & XLOG_XACT_OPMASK == XLOG_XACT_PREPARE {
                    prepared = Some(r.xid);
                }
                if r.rmid == RM_XACT_ID && r.info & XLOG_XACT_OPMASK == XLOG_XACT_COMMIT_PREPARED {
                    assert_eq!(r.xid, 0, "{name}: COMMIT PREPARED runs without an xid");
                    finished = xact_xid(r, major);
                }
            })
            .unwrap();
            assert!(prepared.is_some(), "{name}");
            assert_eq!(finished, prepared, "{name}");
        }
    }

    #[test]
    fn pg13_partial_with_pre_15_image_flags() {
        let f = fixture("pg13-a");
        check(&f);
        // 13 marks compressed images with 0x02 (BKPIMAGE_IS_COMPRESSED); the
        // fixture was written with wal_compression=on, so some images with a
        // hole carry the extra hole-length field that decoding must skip.
        let mut compressed_with_hole = 0;
        scan_segment(&f.data, one_mib(), None, |r| {
            let b = r.bytes;
            if b.len() > 33 && b[24] <= XLR_MAX_BLOCK_ID && b[25] & BKPBLOCK_HAS_IMAGE != 0 {
                let bimg_info = b[32];
                if bimg_info & BKPIMAGE_HAS_HOLE != 0
                    && bimg_info & BKPIMAGE_IS_COMPRESSED_PG13 != 0
                {
                    compressed_with_hole += 1;
                }
            }
        })
        .unwrap();
        assert!(compressed_with_hole > 0);
    }

    #[test]
    fn records_span_pages_and_carry_full_page_images() {
        let f = fixture("pg15-a");
        let (mut spanning, mut images, mut compressed_with_hole) = (0, 0, 0);
        scan_segment(&f.data, one_mib(), None, |r| {
            if r.lsn.0 / 8192 != (r.lsn.0 + r.bytes.len() as u64 - 1) / 8192 {
                spanning += 1;
            }
            // First block header: id, fork_flags, data_len, then the image header.
            let b = r.bytes;
            if b.len() > 33 && b[24] <= XLR_MAX_BLOCK_ID && b[25] & BKPBLOCK_HAS_IMAGE != 0 {
                images += 1;
                let bimg_info = b[32];
                if bimg_info & BKPIMAGE_HAS_HOLE != 0 && bimg_info & BKPIMAGE_COMPRESSED_PG15 != 0 {
                    compressed_with_hole += 1;
                }
            }
        })
        .unwrap();
        assert!(spanning > 10, "{spanning}");
        assert!(images > 10, "{images}");
        assert!(compressed_with_hole > 0, "{compressed_with_hole}");
    }

    #[test]
    fn prefixes_stop_cleanly() {
        let f = fixture("pg15-a");
        let full = summarize_segment(&f.data, one_mib(), None).unwrap();
        let mut last = 0;
        // Cut at page boundaries and in the middle of pages: never an error,
        // never more records than the whole, monotonic.
        for cut in (40..f.data.len()).step_by(8192 * 7 + 1234) {
            let s = summarize_segment(&f.data[..cut], one_mib(), None).unwrap();
            assert!(s.records >= last && s.records <= full.records);
            assert!(s.end_lsn <= f.start_lsn + cut as u64);
            last = s.records;
        }
    }

    #[test]
    fn crc_damage_mid_segment_is_an_error_at_the_tail_is_end_of_wal() {
        let f = fixture("pg15-b");
        // Find the last record and one in the middle.
        let mut recs = Vec::new();
        scan_segment(&f.data, one_mib(), None, |r| {
            recs.push((r.lsn, r.bytes.len()))
        })
        .unwrap();
        let off = |lsn: Lsn| (lsn - f.start_lsn) as usize;

        let (mid, mid_len) = recs[recs.len() / 2];
        let mut d = f.data.clone();
        d[off(mid) + mid_len - 1] ^= 0x55;
        match summarize_segment(&d, one_mib(), None) {
            Err(RecordError::CrcMismatch { lsn, .. }) => assert_eq!(lsn, mid),
            other => panic!("expected a CRC error, got {other:?}"),
        }
        let e = summarize_segment(&d, one_mib(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&mid.to_string()), "{e}");

        let (last, last_len) = *recs.last().unwrap();
        let mut d = f.data.clone();
        d[off(last) + last_len - 1] ^= 0x55;
        let s = summarize_segment(&d, one_mib(), None).unwrap();
        assert_eq!(s.records, f.records.unwrap() - 1);
        assert_eq!(s.end_lsn, last);
        let out = scan_segment(&d, one_mib(), None, |_| {}).unwrap();
        assert_eq!(out.stop, ScanStop::CrcAtTail);
    }

    #[test]
    fn wrong_segment_size_and_garbage() {
        let f = fixture("pg17-a");
        assert!(matches!(
            summarize_segment(&f.data, WalSegSize::DEFAULT, None),
            Err(RecordError::SegSizeMismatch {
                found: 1048576,
                expected: 16777216
            })
        ));
        assert!(matches!(
            summarize_segment(&[0u8; 100], one_mib(), None),
            Err(RecordError::SegmentStart(_))
        ));
        let mut big = f.data.clone();
        big.resize((1 << 20) + 1, 0);
        assert!(matches!(
            summarize_segment(&big, one_mib(), None),
            Err(RecordError::TooLong { .. })
        ));
    }

    #[test]
    fn switch_record_ends_the_segment() {
        // Build a switch record by hand after the fixture's last record: it
        // must be counted and end the scan even though more pages follow.
        let f = fixture("pg15-b");
        let mut d = f.data.clone();
        d.resize(1 << 20, 0);
        let end = (f.end_lsn - f.start_lsn) as usize;
        let mut rec = vec![0u8; 24];
        rec[0..4].copy_from_slice(&24u32.to_le_bytes());
        let last_lsn = f.record_list.as_ref().unwrap().last().unwrap().0;
        rec[8..16].copy_from_slice(&last_lsn.0.to_le_bytes());
        rec[16] = XLOG_SWITCH;
        rec[17] = RM_XLOG_ID;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&[]), &rec[..20]);
        rec[20..24].copy_from_slice(&crc.to_le_bytes());
        d[end..end + 24].copy_from_slice(&rec);
        let s = summarize_segment(&d, one_mib(), None).unwrap();
        assert!(s.ends_with_switch);
        assert_eq!(s.records, f.records.unwrap() + 1);
        assert_eq!(s.end_lsn, f.end_lsn + 24);
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamptz_to_unix_micros(0), 946_684_800_000_000);
        assert_eq!(unix_micros_to_timestamptz(946_684_800_000_000), 0);
        assert_eq!(timestamptz_to_unix_micros(i64::MAX), i64::MAX);
        let dt = timestamptz_to_datetime(0).unwrap();
        assert_eq!(dt.to_rfc3339(), "2000-01-01T00:00:00+00:00");
        assert!(timestamptz_to_datetime(i64::MAX).is_none());
    }
}
