//! A streaming (sans-I/O) reader of the tar archives BASE_BACKUP sends.
//!
//! PostgreSQL writes ustar headers itself (`tarCreateHeader` in
//! `src/port/tar.c`): names of at most 99 bytes in the 100-byte name field
//! (longer names make the backup fail on the server, so the prefix field
//! stays empty), numbers in octal with a trailing space, or base-256 with a
//! leading `0x80` byte when they do not fit (files of 8 GiB or more),
//! directories and symbolic links (tablespace links in `pg_tblspc`) with a
//! trailing `/` on the name. Before PostgreSQL 15 the two zero blocks that
//! end an archive were omitted: the stream simply stops at a header boundary.
//!
//! The reader also understands what other tar writers use for long names
//! (the ustar prefix field, GNU `L`/`K` entries, pax `path`/`linkpath`/`size`
//! records) so that an archive from elsewhere is read correctly rather than
//! misread; hard links and device files are refused.
//!
//! Feed it bytes with [`TarReader::next_item`]; content comes back as slices
//! of the input (no copy), at most [`MAX_DATA_PIECE`] bytes each and never
//! spanning two files.

use bytes::{Buf, Bytes, BytesMut};

/// The tar block size.
pub const BLOCK: usize = 512;

/// The largest content piece handed out at once.
pub const MAX_DATA_PIECE: usize = 1024 * 1024;

/// The largest GNU long-name or pax extended header accepted (they are
/// buffered whole; PostgreSQL never writes them).
const MAX_EXTENDED_HEADER: u64 = 64 * 1024;

/// What kind of entry a header describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file; its content follows.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (PostgreSQL: tablespace links in `pg_tblspc`).
    Symlink {
        /// Where the link points.
        target: String,
    },
}

/// One archive member's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    /// Path relative to the archive's root, without a leading `./` or a
    /// trailing `/`; tablespace entries as they appear in that tablespace's
    /// archive (`PG_15_202209061/16384/16390`).
    pub path: String,
    /// File, directory or symbolic link.
    pub kind: EntryKind,
    /// Permission bits (`0o600`, `0o700` ...).
    pub mode: u32,
    /// Content size in bytes (0 for directories and links).
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
}

/// What the reader found next in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarItem {
    /// An entry begins. For files, [`TarItem::Data`] follows until
    /// [`TarItem::EntryEnd`]; directories and links get their `EntryEnd` at once.
    Entry(EntryHeader),
    /// A piece of the current file's content.
    Data(Bytes),
    /// The current entry is complete.
    EntryEnd,
    /// The end-of-archive marker (two zero blocks) was read.
    End,
}

/// A malformed or unsupported archive. Errors name the archive and, when
/// known, the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    /// A header's checksum does not match its bytes.
    #[error("tar archive {archive}: bad header checksum at offset {offset} (entry {entry:?}): stored {stored}, computed {computed}")]
    BadChecksum {
        /// The archive's name.
        archive: String,
        /// Byte offset of the header in the archive.
        offset: u64,
        /// The name field as far as it could be read.
        entry: String,
        /// The checksum in the header.
        stored: u64,
        /// The checksum of the header's bytes.
        computed: u64,
    },
    /// A header field that cannot be read.
    #[error("tar archive {archive}: entry {entry:?} at offset {offset}: {what}")]
    BadHeader {
        /// The archive's name.
        archive: String,
        /// Byte offset of the header in the archive.
        offset: u64,
        /// The entry's name as far as it could be read.
        entry: String,
        /// What is wrong.
        what: String,
    },
    /// The stream ended inside an entry or header.
    #[error("tar archive {archive} ended early: {what}")]
    Truncated {
        /// The archive's name.
        archive: String,
        /// Where it ended.
        what: String,
    },
    /// Data that is not zero after the end-of-archive marker.
    #[error("tar archive {archive}: data after the end-of-archive marker at offset {offset}")]
    TrailingData {
        /// The archive's name.
        archive: String,
        /// Byte offset of the first non-zero byte.
        offset: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Expecting a 512-byte header.
    Header,
    /// Inside a file's content: bytes still to come, then padding.
    Content { remaining: u64, padding: usize },
    /// Skipping padding after content (or an extended header body).
    Padding { remaining: usize },
    /// Reading the body of a GNU `L`/`K` or pax `x`/`g` header.
    Extended {
        kind: u8,
        remaining: u64,
        padding: usize,
    },
    /// One zero block seen; a second one ends the archive.
    OneZeroBlock,
    /// The end marker was read; only zeros may follow.
    Ended,
}

/// Overrides collected from GNU/pax extended headers for the next entry.
#[derive(Debug, Default, Clone)]
struct Pending {
    path: Option<String>,
    link: Option<String>,
    size: Option<u64>,
}

/// The streaming tar reader. See the module docs.
#[derive(Debug)]
pub struct TarReader {
    archive: String,
    state: State,
    /// A header (or extended header body) being assembled across inputs.
    partial: BytesMut,
    /// Bytes of the archive consumed so far.
    offset: u64,
    pending: Pending,
    /// The entry whose content is being read (for error messages).
    current: Option<String>,
}

impl TarReader {
    /// A reader for the archive `archive` (its name appears in errors).
    pub fn new(archive: impl Into<String>) -> Self {
        TarReader {
            archive: archive.into(),
            state: State::Header,
            partial: BytesMut::new(),
            offset: 0,
            pending: Pending::default(),
            current: None,
        }
    }

    /// The archive's name.
    pub fn archive(&self) -> &str {
        &self.archive
    }

    /// Bytes of the archive consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Consumes bytes from the front of `input` until one item is complete and
    /// returns it; `Ok(None)` when `input` is used up first (feed more).
    /// Content comes back as slices of `input`.
    pub fn next_item(&mut self, input: &mut Bytes) -> Result<Option<TarItem>, TarError> {
        loop {
            match self.state.clone() {
                State::Content { remaining, padding } => {
                    if remaining == 0 {
                        self.state = if padding > 0 {
                            State::Padding { remaining: padding }
                        } else {
                            State::Header
                        };
                        self.current = None;
                        return Ok(Some(TarItem::EntryEnd));
                    }
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let n = (remaining.min(MAX_DATA_PIECE as u64) as usize).min(input.len());
                    let piece = input.split_to(n);
                    self.offset += n as u64;
                    self.state = State::Content {
                        remaining: remaining - n as u64,
                        padding,
                    };
                    return Ok(Some(TarItem::Data(piece)));
                }
                State::Padding { remaining } => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let n = remaining.min(input.len());
                    input.advance(n);
                    self.offset += n as u64;
                    self.state = if n == remaining {
                        State::Header
                    } else {
                        State::Padding {
                            remaining: remaining - n,
                        }
                    };
                }
                State::Ended => {
                    if let Some(i) = input.iter().position(|&b| b != 0) {
                        return Err(TarError::TrailingData {
                            archive: self.archive.clone(),
                            offset: self.offset + i as u64,
                        });
                    }
                    self.offset += input.len() as u64;
                    input.clear();
                    return Ok(None);
                }
                State::Extended {
                    kind,
                    remaining,
                    padding,
                } => {
                    if remaining > 0 {
                        if input.is_empty() {
                            return Ok(None);
                        }
                        let n = (remaining as usize).min(input.len());
                        self.partial.extend_from_slice(&input[..n]);
                        input.advance(n);
                        self.offset += n as u64;
                        self.state = State::Extended {
                            kind,
                            remaining: remaining - n as u64,
                            padding,
                        };
                        continue;
                    }
                    let body = std::mem::take(&mut self.partial);
                    self.apply_extended(kind, &body)?;
                    self.state = if padding > 0 {
                        State::Padding { remaining: padding }
                    } else {
                        State::Header
                    };
                }
                State::Header | State::OneZeroBlock => {
                    // Assemble 512 bytes, without copying when the input holds them.
                    let block: Bytes = if self.partial.is_empty() && input.len() >= BLOCK {
                        input.split_to(BLOCK)
                    } else {
                        let n = (BLOCK - self.partial.len()).min(input.len());
                        self.partial.extend_from_slice(&input[..n]);
                        input.advance(n);
                        if self.partial.len() < BLOCK {
                            return Ok(None);
                        }
                        std::mem::take(&mut self.partial).freeze()
                    };
                    let at = self.offset;
                    self.offset += BLOCK as u64;
                    if block.iter().all(|&b| b == 0) {
                        if self.state == State::OneZeroBlock {
                            self.state = State::Ended;
                            return Ok(Some(TarItem::End));
                        }
                        self.state = State::OneZeroBlock;
                        continue;
                    }
                    if self.state == State::OneZeroBlock {
                        // A lone zero block inside an archive is malformed.
                        return Err(self.header_error(
                            at,
                            &block,
                            "a header follows a single zero block".into(),
                        ));
                    }
                    if let Some(item) = self.parse_header(at, &block)? {
                        return Ok(Some(item));
                    }
                }
            }
        }
    }

    /// Call at the end of the stream: Ok when it ended cleanly (after the
    /// end marker, or, as PostgreSQL before 15 sends it, at a header
    /// boundary), an error naming the entry otherwise.
    pub fn finish(&self) -> Result<(), TarError> {
        let truncated = |what: String| TarError::Truncated {
            archive: self.archive.clone(),
            what,
        };
        match &self.state {
            State::Ended | State::OneZeroBlock => Ok(()),
            State::Header if self.partial.is_empty() => {
                if self.pending.path.is_some() || self.pending.size.is_some() {
                    Err(truncated(
                        "after an extended header, before its entry".into(),
                    ))
                } else {
                    Ok(())
                }
            }
            State::Header => Err(truncated(format!(
                "inside a header at offset {} ({} of {BLOCK} bytes)",
                self.offset,
                self.partial.len()
            ))),
            State::Content { remaining, .. } => Err(truncated(format!(
                "inside the content of {:?}, {remaining} bytes missing",
                self.current.as_deref().unwrap_or("?")
            ))),
            // The last entry's padding is missing: PostgreSQL always pads.
            State::Padding { remaining } => Err(truncated(format!(
                "inside the padding after {:?} ({remaining} bytes missing)",
                self.current.as_deref().unwrap_or("the last entry")
            ))),
            State::Extended { .. } => Err(truncated("inside an extended header".into())),
        }
    }

    fn header_error(&self, offset: u64, block: &[u8], what: String) -> TarError {
        TarError::BadHeader {
            archive: self.archive.clone(),
            offset,
            entry: cstr_lossy(&block[0..100]),
            what,
        }
    }

    /// Parses one non-zero header block; `None` for extended headers (their
    /// body follows), else the item to return.
    fn parse_header(&mut self, at: u64, h: &[u8]) -> Result<Option<TarItem>, TarError> {
        let stored = parse_number(&h[148..156])
            .map_err(|e| self.header_error(at, h, format!("checksum field: {e}")))?;
        let computed = header_checksum(h);
        let signed = header_checksum_signed(h);
        if stored != computed && stored as i64 != signed {
            return Err(TarError::BadChecksum {
                archive: self.archive.clone(),
                offset: at,
                entry: cstr_lossy(&h[0..100]),
                stored,
                computed,
            });
        }
        let typeflag = h[156];
        let size = parse_number(&h[124..136])
            .map_err(|e| self.header_error(at, h, format!("size field: {e}")))?;
        let size = self.pending.size.take().unwrap_or(size);
        let padding = pad(size);

        match typeflag {
            b'L' | b'K' | b'x' | b'g' => {
                if size > MAX_EXTENDED_HEADER {
                    return Err(self.header_error(
                        at,
                        h,
                        format!("extended header of {size} bytes is too large"),
                    ));
                }
                self.partial.clear();
                self.state = State::Extended {
                    kind: typeflag,
                    remaining: size,
                    padding,
                };
                return Ok(None);
            }
            _ => {}
        }

        let ustar = &h[257..263] == b"ustar\0";
        let mut name = cstr_bytes(&h[0..100]).to_vec();
        if ustar {
            let prefix = cstr_bytes(&h[345..500]);
            if !prefix.is_empty() {
                let mut full = prefix.to_vec();
                full.push(b'/');
                full.extend_from_slice(&name);
                name = full;
            }
        }
        let raw_path = match self.pending.path.take() {
            Some(p) => p,
            None => String::from_utf8(name)
                .map_err(|_| self.header_error(at, h, "name is not UTF-8".into()))?,
        };
        let path = clean_path(&raw_path).map_err(|what| self.header_error(at, h, what))?;
        let mode = parse_number(&h[100..108])
            .map_err(|e| self.header_error(at, h, format!("mode field: {e}")))?
            as u32
            & 0o7777;
        let mtime = parse_number(&h[136..148])
            .map_err(|e| self.header_error(at, h, format!("mtime field: {e}")))?
            as i64;
        let link = self.pending.link.take();

        let kind = match typeflag {
            b'0' | 0 | b'7' => EntryKind::File,
            b'5' => EntryKind::Dir,
            b'2' => {
                let target = match link {
                    Some(l) => l,
                    None => String::from_utf8(cstr_bytes(&h[157..257]).to_vec())
                        .map_err(|_| self.header_error(at, h, "link target is not UTF-8".into()))?,
                };
                if target.is_empty() {
                    return Err(self.header_error(at, h, "symbolic link without target".into()));
                }
                EntryKind::Symlink { target }
            }
            other => {
                return Err(self.header_error(
                    at,
                    h,
                    format!(
                        "unsupported entry type {:?} (hard links, devices and FIFOs are not \
                         part of a PostgreSQL backup)",
                        other as char
                    ),
                ))
            }
        };
        let header = EntryHeader {
            path,
            size: if kind == EntryKind::File { size } else { 0 },
            kind,
            mode,
            mtime,
        };
        self.current = Some(header.path.clone());
        self.state = if header.kind == EntryKind::File {
            State::Content {
                remaining: size,
                padding,
            }
        } else {
            // Directories and links carry no content; skip any after EntryEnd.
            let skip = if size > 0 { size + padding as u64 } else { 0 };
            let skip = usize::try_from(skip)
                .map_err(|_| self.header_error(at, h, "size too large".into()))?;
            State::Content {
                remaining: 0,
                padding: skip,
            }
        };
        Ok(Some(TarItem::Entry(header)))
    }

    fn apply_extended(&mut self, kind: u8, body: &[u8]) -> Result<(), TarError> {
        let at = self.offset;
        let bad = |what: String| TarError::BadHeader {
            archive: self.archive.clone(),
            offset: at,
            entry: String::new(),
            what,
        };
        match kind {
            b'L' | b'K' => {
                let s = String::from_utf8(cstr_bytes(body).to_vec())
                    .map_err(|_| bad("GNU long name is not UTF-8".into()))?;
                if kind == b'L' {
                    self.pending.path = Some(s);
                } else {
                    self.pending.link = Some(s);
                }
            }
            b'x' => {
                for (key, value) in parse_pax(body).map_err(bad)? {
                    match key.as_str() {
                        "path" => self.pending.path = Some(value),
                        "linkpath" => self.pending.link = Some(value),
                        "size" => {
                            self.pending.size =
                                Some(value.parse().map_err(|_| {
                                    bad(format!("pax size {value:?} is not a number"))
                                })?)
                        }
                        _ => {}
                    }
                }
            }
            // Global pax headers: nothing PostgreSQL-relevant.
            _ => {}
        }
        Ok(())
    }
}

/// Padding after `size` bytes of content to the next block boundary.
fn pad(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// The bytes of a NUL-terminated field.
fn cstr_bytes(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

fn cstr_lossy(field: &[u8]) -> String {
    String::from_utf8_lossy(cstr_bytes(field)).into_owned()
}

/// Reads a numeric field: octal (leading spaces, trailing NUL or space), or
/// base-256 when the first byte has its high bit set (`0x80` positive).
pub fn parse_number(field: &[u8]) -> Result<u64, String> {
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            if first == 0xff {
                return Err("negative base-256 number".into());
            }
            let mut v: u64 = (first & 0x7f) as u64;
            for &b in &field[1..] {
                v = v
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(b as u64))
                    .ok_or_else(|| "base-256 number too large".to_string())?;
            }
            return Ok(v);
        }
    }
    let mut v: u64 = 0;
    let mut digits = 0;
    let mut i = 0;
    while i < field.len() && field[i] == b' ' {
        i += 1;
    }
    while i < field.len() {
        let b = field[i];
        match b {
            b'0'..=b'7' => {
                v = v
                    .checked_mul(8)
                    .and_then(|v| v.checked_add((b - b'0') as u64))
                    .ok_or_else(|| "octal number too large".to_string())?;
                digits += 1;
            }
            0 | b' ' => break,
            _ => return Err(format!("invalid byte {b:#04x} in an octal number")),
        }
        i += 1;
    }
    // Only terminators may follow the digits.
    if field[i..].iter().any(|&b| b != 0 && b != b' ') {
        return Err("garbage after an octal number".into());
    }
    if digits == 0 {
        return Err("empty number".into());
    }
    Ok(v)
}

/// The header checksum: the sum of all bytes, the checksum field counted as spaces.
fn header_checksum(h: &[u8]) -> u64 {
    h.iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                b' ' as u64
            } else {
                b as u64
            }
        })
        .sum()
}

/// The same with signed bytes (some historic writers).
fn header_checksum_signed(h: &[u8]) -> i64 {
    h.iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                b' ' as i64
            } else {
                b as i8 as i64
            }
        })
        .sum()
}

/// Normalizes an entry path: no leading `./`, no trailing `/`; refuses
/// absolute paths, `..` components and NUL bytes (the restore side writes
/// these paths under a directory).
fn clean_path(raw: &str) -> Result<String, String> {
    let mut p = raw;
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    let p = p.trim_end_matches('/');
    if p.is_empty() || p == "." {
        return Err(format!("empty path {raw:?}"));
    }
    if p.starts_with('/') {
        return Err(format!("absolute path {raw:?}"));
    }
    if p.contains('\0') || p.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(format!("unsafe path {raw:?}"));
    }
    Ok(p.to_string())
}

/// Parses pax records: `"<len> <key>=<value>\n"`.
fn parse_pax(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("pax record without length")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("pax record with a bad length")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err("malformed pax record".into());
        }
        let record = &rest[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("pax record without '='")?;
        let key = String::from_utf8(record[..eq].to_vec()).map_err(|_| "pax key not UTF-8")?;
        let value =
            String::from_utf8(record[eq + 1..].to_vec()).map_err(|_| "pax value not UTF-8")?;
        out.push((key, value));
        rest = &rest[len..];
    }
    Ok(out)
}

/// Builds a header as PostgreSQL's `tarCreateHeader` does (test helper and
/// documentation of the format): octal with a trailing space, base-256 for
/// numbers that do not fit, `/` after directory and link names.
#[cfg(test)]
pub(crate) fn pg_style_header(
    name: &str,
    link: Option<&str>,
    mode: u32,
    size: u64,
    mtime: u64,
) -> [u8; BLOCK] {
    fn put_number(field: &mut [u8], val: u64) {
        let len = field.len();
        if val < (1u64 << ((len - 1) * 3)) {
            let mut v = val;
            field[len - 1] = b' ';
            for i in (0..len - 1).rev() {
                field[i] = b'0' + (v & 7) as u8;
                v >>= 3;
            }
        } else {
            let mut v = val;
            field[0] = 0x80;
            for i in (1..len).rev() {
                field[i] = (v & 0xff) as u8;
                v >>= 8;
            }
        }
    }
    let mut h = [0u8; BLOCK];
    let is_dir = mode & 0o170000 == 0o040000;
    let mut n = name.as_bytes().to_vec();
    if link.is_some() || is_dir {
        n.push(b'/');
    }
    h[..n.len()].copy_from_slice(&n);
    put_number(&mut h[100..108], (mode & 0o7777) as u64);
    put_number(&mut h[108..116], 26);
    put_number(&mut h[116..124], 26);
    let is_file = link.is_none() && !is_dir;
    put_number(&mut h[124..136], if is_file { size } else { 0 });
    put_number(&mut h[136..148], mtime);
    h[156] = match (link, is_dir) {
        (Some(_), _) => b'2',
        (None, true) => b'5',
        _ => b'0',
    };
    if let Some(l) = link {
        h[157..157 + l.len()].copy_from_slice(l.as_bytes());
    }
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..273].copy_from_slice(b"postgres");
    h[297..305].copy_from_slice(b"postgres");
    put_number(&mut h[329..337], 0);
    put_number(&mut h[337..345], 0);
    let sum = header_checksum(&h);
    put_number(&mut h[148..156], sum);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: u32 = 0o100600;
    const DIR: u32 = 0o040700;

    fn file_entry(out: &mut Vec<u8>, name: &str, content: &[u8]) {
        out.extend_from_slice(&pg_style_header(
            name,
            None,
            FILE,
            content.len() as u64,
            1_700_000_000,
        ));
        out.extend_from_slice(content);
        out.resize(out.len() + pad(content.len() as u64), 0);
    }

    /// Reads everything, feeding `chunk`-byte pieces; returns the items (data
    /// pieces merged per entry) and the finish result.
    fn read_all(archive: &[u8], chunk: usize) -> (Vec<TarItem>, Result<(), TarError>) {
        let mut r = TarReader::new("test.tar");
        let mut items: Vec<TarItem> = Vec::new();
        for piece in archive.chunks(chunk.max(1)) {
            let mut input = Bytes::copy_from_slice(piece);
            loop {
                match r.next_item(&mut input) {
                    Ok(Some(TarItem::Data(d))) => {
                        assert!(d.len() <= MAX_DATA_PIECE);
                        if let Some(TarItem::Data(prev)) = items.last_mut() {
                            let mut v = prev.to_vec();
                            v.extend_from_slice(&d);
                            *prev = Bytes::from(v);
                        } else {
                            items.push(TarItem::Data(d));
                        }
                    }
                    Ok(Some(item)) => items.push(item),
                    Ok(None) => break,
                    Err(e) => return (items, Err(e)),
                }
            }
            assert!(input.is_empty());
        }
        let fin = r.finish();
        (items, fin)
    }

    fn sample() -> Vec<u8> {
        let mut a = Vec::new();
        file_entry(&mut a, "backup_label", b"START WAL LOCATION: 0/2000028\n");
        a.extend_from_slice(&pg_style_header("base", None, DIR, 0, 1));
        file_entry(&mut a, "base/1/1259", &vec![7u8; 8192 + 100]);
        a.extend_from_slice(&pg_style_header(
            "pg_tblspc/16385",
            Some("/srv/ts1"),
            0o120777,
            0,
            1,
        ));
        file_entry(&mut a, "empty", b"");
        a
    }

    fn check_sample(items: &[TarItem]) {
        let names: Vec<_> = items
            .iter()
            .filter_map(|i| match i {
                TarItem::Entry(h) => Some((h.path.clone(), h.kind.clone(), h.size)),
                _ => None,
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("backup_label".to_string(), EntryKind::File, 30),
                ("base".to_string(), EntryKind::Dir, 0),
                ("base/1/1259".to_string(), EntryKind::File, 8292),
                (
                    "pg_tblspc/16385".to_string(),
                    EntryKind::Symlink {
                        target: "/srv/ts1".into()
                    },
                    0
                ),
                ("empty".to_string(), EntryKind::File, 0),
            ]
        );
        assert_eq!(
            items[1],
            TarItem::Data(Bytes::from_static(b"START WAL LOCATION: 0/2000028\n"))
        );
        assert_eq!(items[2], TarItem::EntryEnd);
        match &items[0] {
            TarItem::Entry(h) => {
                assert_eq!(h.mode, 0o600);
                assert_eq!(h.mtime, 1_700_000_000);
            }
            other => panic!("{other:?}"),
        }
        let ends = items.iter().filter(|i| **i == TarItem::EntryEnd).count();
        assert_eq!(ends, 5);
    }

    #[test]
    fn reads_pg_archive_without_end_marker_any_chunking() {
        // PostgreSQL 13/14: no trailing zero blocks.
        let a = sample();
        for chunk in [1, 7, 511, 512, 513, 4096, a.len()] {
            let (items, fin) = read_all(&a, chunk);
            fin.unwrap_or_else(|e| panic!("chunk {chunk}: {e}"));
            check_sample(&items);
            assert!(!items.contains(&TarItem::End));
        }
    }

    #[test]
    fn reads_archive_with_end_marker_and_trailing_zeros() {
        let mut a = sample();
        a.extend_from_slice(&[0u8; 2 * BLOCK]);
        a.extend_from_slice(&[0u8; 3000]); // record padding of other writers
        let (items, fin) = read_all(&a, 1000);
        fin.unwrap();
        check_sample(&items);
        assert_eq!(items.last(), Some(&TarItem::End));
    }

    #[test]
    fn data_after_end_marker_is_an_error() {
        let mut a = sample();
        a.extend_from_slice(&[0u8; 2 * BLOCK]);
        a.extend_from_slice(b"junk");
        let (_, res) = read_all(&a, 100_000);
        assert!(matches!(res, Err(TarError::TrailingData { .. })), "{res:?}");
    }

    #[test]
    fn big_file_comes_in_bounded_pieces() {
        let content = vec![0xabu8; 3 * MAX_DATA_PIECE + 5];
        let mut a = Vec::new();
        file_entry(&mut a, "big", &content);
        let mut r = TarReader::new("t");
        let mut input = Bytes::from(a);
        let mut pieces = 0;
        let mut total = 0;
        while let Some(item) = r.next_item(&mut input).unwrap() {
            if let TarItem::Data(d) = item {
                assert!(d.len() <= MAX_DATA_PIECE);
                pieces += 1;
                total += d.len();
            }
        }
        assert_eq!(total, content.len());
        assert_eq!(pieces, 4);
        r.finish().unwrap();
    }

    #[test]
    fn base256_sizes_and_octal_forms() {
        // 8 GiB does not fit 11 octal digits: PostgreSQL switches to base-256.
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[7] = 0x02; // 2 << 32 = 8 GiB
        assert_eq!(parse_number(&f).unwrap(), 8 << 30);
        let h = pg_style_header("huge", None, FILE, 8 << 30, 0);
        assert_eq!(h[124], 0x80);
        assert_eq!(parse_number(&h[124..136]).unwrap(), 8 << 30);
        assert_eq!(parse_number(b"0000644 \0").unwrap(), 0o644);
        assert_eq!(parse_number(b"   644\0\0").unwrap(), 0o644);
        assert!(parse_number(b"12x4\0").is_err());
        assert!(parse_number(b"\0\0\0").is_err());
        // The reader accepts the base-256 header (content would follow).
        let mut r = TarReader::new("t");
        let mut input = Bytes::copy_from_slice(&h);
        match r.next_item(&mut input).unwrap() {
            Some(TarItem::Entry(e)) => assert_eq!(e.size, 8 << 30),
            other => panic!("{other:?}"),
        }
        let err = r.finish().unwrap_err().to_string();
        assert!(err.contains("\"huge\"") && err.contains("missing"), "{err}");
    }

    #[test]
    fn bad_checksum_names_the_entry() {
        let mut a = Vec::new();
        file_entry(&mut a, "global/pg_control", b"x");
        a[3] = b'X'; // "gloXal/pg_control"
        let (_, res) = read_all(&a, 512);
        let err = res.unwrap_err();
        assert!(matches!(err, TarError::BadChecksum { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("test.tar") && msg.contains("gloXal/pg_control"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_streams_are_errors_naming_the_entry() {
        let mut a = Vec::new();
        file_entry(&mut a, "base/1/2600", &[1u8; 1000]);
        // Inside the content.
        let (_, res) = read_all(&a[..BLOCK + 10], 64);
        let msg = res.unwrap_err().to_string();
        assert!(
            msg.contains("base/1/2600") && msg.contains("990 bytes missing"),
            "{msg}"
        );
        // Inside a header.
        let (_, res) = read_all(&a[..100], 64);
        assert!(matches!(res, Err(TarError::Truncated { .. })), "{res:?}");
        // Inside the padding.
        let (_, res) = read_all(&a[..BLOCK + 1000 + 3], 64);
        assert!(res.unwrap_err().to_string().contains("padding"));
        // At a header boundary: fine (pre-15 servers end like this).
        let (items, res) = read_all(&a, 64);
        res.unwrap();
        assert_eq!(items.len(), 3);
    }

    #[test]
    fn long_names_ustar_prefix_gnu_and_pax() {
        let long_dir = "d".repeat(120);
        let long_name = format!("{long_dir}/file");
        // ustar prefix field.
        let mut h = pg_style_header("file", None, FILE, 0, 0);
        h[345..345 + long_dir.len()].copy_from_slice(long_dir.as_bytes());
        h[148..156].fill(0);
        let sum = header_checksum(&h);
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let (items, fin) = read_all(&h, 512);
        fin.unwrap();
        assert!(
            matches!(&items[0], TarItem::Entry(e) if e.path == long_name),
            "{items:?}"
        );

        // GNU 'L' entry.
        let mut a = Vec::new();
        let body = format!("{long_name}\0");
        let mut gh = pg_style_header("././@LongLink", None, FILE, body.len() as u64, 0);
        gh[156] = b'L';
        gh[148..156].fill(0);
        let sum = header_checksum(&gh);
        gh[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        a.extend_from_slice(&gh);
        a.extend_from_slice(body.as_bytes());
        a.resize(a.len() + pad(body.len() as u64), 0);
        file_entry(&mut a, "truncated-name", b"abc");
        // pax 'x' entry with path and linkpath for a symlink.
        let rec = |k: &str, v: &str| {
            let payload = format!(" {k}={v}\n");
            let mut len = payload.len() + 1;
            while format!("{len}{payload}").len() != len {
                len += 1;
            }
            format!("{len}{payload}")
        };
        let link_target = format!("/{}", "t".repeat(150));
        let pax = format!(
            "{}{}",
            rec("path", "pg_tblspc/99"),
            rec("linkpath", &link_target)
        );
        let mut ph = pg_style_header("PaxHeader", None, FILE, pax.len() as u64, 0);
        ph[156] = b'x';
        ph[148..156].fill(0);
        let sum = header_checksum(&ph);
        ph[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        a.extend_from_slice(&ph);
        a.extend_from_slice(pax.as_bytes());
        a.resize(a.len() + pad(pax.len() as u64), 0);
        a.extend_from_slice(&pg_style_header("x", Some("short"), 0o120777, 0, 0));
        for chunk in [1, 100, 100_000] {
            let (items, fin) = read_all(&a, chunk);
            fin.unwrap();
            let entries: Vec<_> = items
                .iter()
                .filter_map(|i| match i {
                    TarItem::Entry(e) => Some((e.path.clone(), e.kind.clone())),
                    _ => None,
                })
                .collect();
            assert_eq!(
                entries,
                vec![
                    (long_name.clone(), EntryKind::File),
                    (
                        "pg_tblspc/99".to_string(),
                        EntryKind::Symlink {
                            target: link_target.clone()
                        }
                    )
                ]
            );
        }
    }

    #[test]
    fn unsafe_paths_and_unsupported_types_are_refused() {
        for bad in ["../etc/passwd", "/etc/passwd", "a/../../b", "a//b"] {
            let mut a = Vec::new();
            file_entry(&mut a, bad, b"");
            let (_, res) = read_all(&a, 512);
            let msg = res.unwrap_err().to_string();
            assert!(msg.contains("path"), "{bad}: {msg}");
        }
        let mut h = pg_style_header("hard", None, FILE, 0, 0);
        h[156] = b'1';
        h[148..156].fill(0);
        let sum = header_checksum(&h);
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let (_, res) = read_all(&h, 512);
        let msg = res.unwrap_err().to_string();
        assert!(
            msg.contains("unsupported entry type") && msg.contains("hard"),
            "{msg}"
        );
    }

    #[test]
    fn entry_end_comes_without_more_input() {
        // A file whose content ends exactly with the input (no padding):
        // EntryEnd must come from an empty input, before the stream's end.
        let mut a = Vec::new();
        file_entry(&mut a, "global/pg_control", &[3u8; 8192]);
        let mut r = TarReader::new("t");
        let mut input = Bytes::from(a);
        assert!(matches!(
            r.next_item(&mut input),
            Ok(Some(TarItem::Entry(_)))
        ));
        assert!(matches!(
            r.next_item(&mut input),
            Ok(Some(TarItem::Data(_)))
        ));
        assert!(input.is_empty());
        assert!(r.finish().is_err(), "EntryEnd not yet delivered");
        assert_eq!(r.next_item(&mut input), Ok(Some(TarItem::EntryEnd)));
        assert_eq!(r.next_item(&mut input), Ok(None));
        r.finish().unwrap();
    }

    #[test]
    fn leading_dot_slash_is_dropped() {
        let mut a = Vec::new();
        file_entry(&mut a, "./PG_VERSION", b"15\n");
        let (items, fin) = read_all(&a, 512);
        fin.unwrap();
        assert!(matches!(&items[0], TarItem::Entry(e) if e.path == "PG_VERSION"));
    }
}
