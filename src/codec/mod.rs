//! How one stored object is framed, compressed and encrypted (byte layout in
//! `docs/format.md`).
//!
//! Every object walship stores goes through this codec: a self-describing
//! header, then the plaintext in chunks (1 MiB by default), each lz4
//! compressed when that helps and, with a key, sealed with AES-256-GCM under a
//! per-object key; then an authenticated trailer with the plaintext's BLAKE3.
//! The object's name, the chunk's index, a final-chunk flag and the header
//! are bound to every chunk, so truncation, reordering, bit flips and swapped
//! objects are detected, with or without encryption.
//!
//! The core is sans-I/O ([`ObjectEncoder`], [`ObjectDecoder`]): callers pump
//! bytes from files or S3 streams with bounded memory. [`encode_bytes`],
//! [`decode_bytes`], [`encode_file`], [`encode_reader`] and
//! [`decode_to_writer`] are the convenience forms.

mod aead;
mod decode;
mod encode;
mod error;
mod format;
mod key;
#[cfg(test)]
mod tests;
mod tree_hash;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

pub use decode::{decode_in_order, decode_parallel_at, ObjectDecoder};
pub use encode::{encode_parallel, ObjectEncoder};
pub use error::CodecError;
pub use format::{
    content_id, read_header, Checksum, ChecksumKind, ContentIdHasher, ObjectHeader,
    DEFAULT_CHUNK_SHIFT, FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_CHUNK_SHIFT, MIN_CHUNK_SHIFT,
};
pub use key::{KdfParams, Key, KeyCheck, KeyId};

/// Compression of stored objects, chosen when the stanza is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Stored as is.
    None,
    /// lz4 (block format per chunk).
    #[default]
    Lz4,
}

/// How objects are written: compression and, when encrypting, the key.
#[derive(Debug, Clone, Default)]
pub struct CodecSettings {
    /// Compression of each chunk.
    pub compression: Compression,
    /// The repository key; `None` for an unencrypted repository.
    pub key: Option<Arc<Key>>,
}

/// What encoding or decoding one object found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectSummary {
    /// Plaintext length in bytes.
    pub plain_len: u64,
    /// Stored (encoded) length in bytes.
    pub stored_len: u64,
    /// The trailer's checksum of the plaintext (verified when decoding).
    pub checksum: Checksum,
    /// What kind of checksum it is: BLAKE3, or the keyed content id.
    pub checksum_kind: ChecksumKind,
}

/// Size of the read buffer of the `std::io` helpers.
const IO_BUF: usize = 1 << 20;

/// Encodes a whole object held in memory.
pub fn encode_bytes(
    name: &str,
    plain: &[u8],
    settings: &CodecSettings,
) -> Result<(Vec<u8>, ObjectSummary), CodecError> {
    encode_whole(
        ObjectEncoder::new(name, plain.len() as u64, settings),
        plain,
    )
}

/// Encodes a whole object held in memory whose [`content_id`] under
/// `settings` the caller has computed (a base-backup chunk: its id, needed
/// first to deduplicate): the id is the trailer's checksum, so the
/// plaintext is hashed once, not twice. Decoding verifies it like any
/// checksum (keyed when `settings` encrypt; then the object is format
/// version 2).
pub fn encode_bytes_with_id(
    name: &str,
    plain: &[u8],
    settings: &CodecSettings,
    id: Checksum,
) -> Result<(Vec<u8>, ObjectSummary), CodecError> {
    debug_assert_eq!(id, content_id(settings, plain), "{name}: wrong content id");
    let enc = ObjectEncoder::with_content_id(name, plain.len() as u64, settings, id)?;
    encode_whole(enc, plain)
}

fn encode_whole(
    mut enc: ObjectEncoder,
    plain: &[u8],
) -> Result<(Vec<u8>, ObjectSummary), CodecError> {
    let mut out = enc.header();
    // The largest possible output (chunks stored as is), so `out` never reallocates.
    let chunks = plain.len().div_ceil(1 << DEFAULT_CHUNK_SHIFT) + 1;
    out.reserve(plain.len() + chunks * 24 + 64);
    enc.push(plain, &mut out);
    let summary = enc.finish(&mut out)?;
    Ok((out, summary))
}

/// Decodes and verifies a whole object held in memory.
pub fn decode_bytes(
    name: &str,
    stored: &[u8],
    key: Option<Arc<Key>>,
) -> Result<(Vec<u8>, ObjectSummary), CodecError> {
    let mut dec = ObjectDecoder::new(name, key);
    let mut out = Vec::new();
    if let Ok(h) = read_header(stored) {
        // Bounded by what we were given, so a forged length cannot make us
        // reserve more than a small multiple of the input.
        let cap = h.plain_len.min(stored.len() as u64 * 4 + 1024);
        out.reserve(cap as usize);
    }
    dec.feed(stored, &mut out)?;
    let summary = dec.finish()?;
    Ok((out, summary))
}

/// Encodes the file at `path` into `dest` (1 MiB at a time). The length is
/// taken from the file's metadata; a file that changes size while being read
/// makes this fail with [`CodecError::LengthMismatch`].
pub fn encode_file(
    name: &str,
    path: &Path,
    settings: &CodecSettings,
    dest: &mut impl Write,
) -> Result<ObjectSummary, CodecError> {
    let io = |op: &str, source| CodecError::Io {
        name: name.into(),
        op: format!("{op} {}", path.display()),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(|e| io("opening", e))?;
    let len = file
        .metadata()
        .map_err(|e| io("reading metadata of", e))?
        .len();
    encode_reader_inner(name, &mut file, len, settings, dest, &|op, e| {
        io(
            if op == "read" {
                "reading"
            } else {
                "writing the encoded form of"
            },
            e,
        )
    })
}

/// Encodes `plain_len` bytes read from `src` into `dest` (1 MiB at a time).
pub fn encode_reader(
    name: &str,
    src: &mut impl Read,
    plain_len: u64,
    settings: &CodecSettings,
    dest: &mut impl Write,
) -> Result<ObjectSummary, CodecError> {
    encode_reader_inner(name, src, plain_len, settings, dest, &|op, source| {
        CodecError::Io {
            name: name.into(),
            op: format!("{op} while encoding"),
            source,
        }
    })
}

fn encode_reader_inner(
    name: &str,
    src: &mut impl Read,
    plain_len: u64,
    settings: &CodecSettings,
    dest: &mut impl Write,
    io: &dyn Fn(&str, std::io::Error) -> CodecError,
) -> Result<ObjectSummary, CodecError> {
    let mut enc = ObjectEncoder::new(name, plain_len, settings);
    let mut out = enc.header();
    let mut buf = vec![0u8; IO_BUF];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io("read", e)),
        };
        enc.push(&buf[..n], &mut out);
        if !out.is_empty() {
            dest.write_all(&out).map_err(|e| io("write", e))?;
            out.clear();
        }
    }
    let summary = enc.finish(&mut out)?;
    dest.write_all(&out).map_err(|e| io("write", e))?;
    Ok(summary)
}

/// Decodes the stored object read from `src` into `dest` (1 MiB at a time).
///
/// `dest` receives chunks as they are verified; the object as a whole is
/// verified only when this returns `Ok`: write to a temporary file and
/// publish it (rename) only then.
pub fn decode_to_writer(
    name: &str,
    src: &mut impl Read,
    key: Option<Arc<Key>>,
    dest: &mut impl Write,
) -> Result<ObjectSummary, CodecError> {
    let io = |op: &str, source| CodecError::Io {
        name: name.into(),
        op: op.into(),
        source,
    };
    let mut dec = ObjectDecoder::new(name, key);
    let mut buf = vec![0u8; IO_BUF];
    let mut out = Vec::with_capacity(IO_BUF * 2);
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io("reading the stored object", e)),
        };
        dec.feed(&buf[..n], &mut out)?;
        if !out.is_empty() {
            dest.write_all(&out)
                .map_err(|e| io("writing the decoded data", e))?;
            out.clear();
        }
    }
    dec.finish()
}
