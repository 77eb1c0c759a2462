//! The byte layout of a stored object (see `docs/format.md`): the header,
//! frame headers, associated data, nonces and the trailer.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::CodecError;
use super::key::{Key, KeyId};
use super::{CodecSettings, Compression};

/// The first 8 bytes of every object (PNG-style: a non-ASCII byte, then
/// "WSH", then CR LF SUB LF to catch text-mode mangling).
pub const MAGIC: [u8; 8] = [0x89, b'W', b'S', b'H', 0x0D, 0x0A, 0x1A, 0x0A];
/// The newest format version this code writes and reads. Version 2 differs
/// from 1 only in header byte 12, the [`ChecksumKind`]; an object with the
/// plain checksum is written as version 1, byte for byte as before.
pub const FORMAT_VERSION: u8 = 2;
/// The version of objects whose trailer holds BLAKE3 in hash mode.
const VERSION_PLAIN_CHECKSUM: u8 = 1;
/// Length of the object header in bytes.
pub const HEADER_LEN: usize = 92;
/// Length of a frame header in bytes.
pub const FRAME_HEADER_LEN: usize = 8;
/// Length of the AES-GCM tag in bytes.
pub const TAG_LEN: usize = 16;
/// Length of the CRC-32C that ends each frame of an unencrypted object.
pub const CRC_LEN: usize = 4;
/// Length of the trailer's payload: checksum, plaintext length, data chunk count.
pub const TRAILER_LEN: usize = 48;
/// Default chunk size: log2 of 1 MiB.
pub const DEFAULT_CHUNK_SHIFT: u8 = 20;
/// Smallest chunk size a reader accepts (1 KiB).
pub const MIN_CHUNK_SHIFT: u8 = 10;
/// Largest chunk size a reader accepts (16 MiB): bounds a decoder's memory.
pub const MAX_CHUNK_SHIFT: u8 = 24;

/// Frame flag: the payload is an lz4 block.
pub(crate) const FLAG_COMPRESSED: u8 = 0x01;
/// Frame flag: this is the final frame (the trailer).
pub(crate) const FLAG_FINAL: u8 = 0x02;

/// Encryption byte values in the header.
pub(crate) const ENC_NONE: u8 = 0;
pub(crate) const ENC_AES256GCM: u8 = 1;

/// BLAKE3 `derive_key` context for the object name hash.
const CTX_NAME: &str = "walship 2026-11-21 object name v1";

/// Subkey context of content ids in an encrypted repository (see
/// [`content_id`]); the chunk store has named chunks with it since its start.
const CONTENT_ID_CONTEXT: &str = "walship chunk id";

/// The key of content ids and keyed checksums under `key`.
pub(crate) fn content_id_key(key: &Key) -> [u8; 32] {
    key.subkey(CONTENT_ID_CONTEXT)
}

/// What the trailer's 32-byte checksum of the plaintext is (header byte 12
/// from version 2 on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumKind {
    /// BLAKE3 in hash mode (every object of format version 1).
    Blake3,
    /// BLAKE3 in keyed mode under `Key::subkey("walship chunk id")`: the
    /// [`content_id`] of an encrypted repository's chunk, computed once for
    /// deduplication and reused as the checksum instead of hashing twice.
    /// Encrypted objects only.
    KeyedBlake3,
}

impl ChecksumKind {
    /// The format version an object with this checksum is written as: the
    /// oldest that can hold it.
    pub(crate) fn version(self) -> u8 {
        match self {
            ChecksumKind::Blake3 => VERSION_PLAIN_CHECKSUM,
            ChecksumKind::KeyedBlake3 => FORMAT_VERSION,
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            ChecksumKind::Blake3 => 0,
            ChecksumKind::KeyedBlake3 => 1,
        }
    }

    /// The hasher that computes this kind of checksum; `None` when it is
    /// keyed and there is no key.
    pub(crate) fn hasher(self, key: Option<&Key>) -> Option<blake3::Hasher> {
        match self {
            ChecksumKind::Blake3 => Some(blake3::Hasher::new()),
            ChecksumKind::KeyedBlake3 => key.map(|k| blake3::Hasher::new_keyed(&content_id_key(k))),
        }
    }

    /// The checksum kind of content ids under these settings.
    pub fn of_content_ids(settings: &CodecSettings) -> ChecksumKind {
        match settings.key {
            Some(_) => ChecksumKind::KeyedBlake3,
            None => ChecksumKind::Blake3,
        }
    }
}

/// The content id of a plaintext: BLAKE3 keyed with
/// `Key::subkey("walship chunk id")` when the settings encrypt (so an id
/// tells nothing about the content to anyone without the key), plain BLAKE3
/// otherwise. It is the checksum of an object encoded with
/// [`encode_bytes_with_id`](super::encode_bytes_with_id).
pub fn content_id(settings: &CodecSettings, plain: &[u8]) -> Checksum {
    ContentIdHasher::new(settings).id(plain)
}

/// Computes [`content_id`]s with the subkey derived once, for callers that
/// hash many plaintexts (every chunk of a backup).
#[derive(Clone)]
pub struct ContentIdHasher {
    key: Option<[u8; 32]>,
}

impl fmt::Debug for ContentIdHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentIdHasher")
            .field("keyed", &self.key.is_some())
            .finish()
    }
}

impl ContentIdHasher {
    /// The hasher of content ids under `settings`.
    pub fn new(settings: &CodecSettings) -> ContentIdHasher {
        ContentIdHasher {
            key: settings.key.as_deref().map(content_id_key),
        }
    }

    /// The content id of `plain`.
    pub fn id(&self, plain: &[u8]) -> Checksum {
        let hash = match &self.key {
            Some(k) => blake3::keyed_hash(k, plain),
            None => blake3::hash(plain),
        };
        Checksum(*hash.as_bytes())
    }
}

/// A BLAKE3-256 hash: of an object's plaintext, plain or keyed ([`ChecksumKind`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Checksum(pub [u8; 32]);

impl Checksum {
    /// The checksum of `data`.
    pub fn of(data: &[u8]) -> Checksum {
        Checksum(*blake3::hash(data).as_bytes())
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({self})")
    }
}

impl FromStr for Checksum {
    type Err = hex::FromHexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b)?;
        Ok(Checksum(b))
    }
}

impl Serialize for Checksum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Checksum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("checksum: {e}")))
    }
}

/// What an object's header says, readable without a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHeader {
    /// Format version.
    pub version: u8,
    /// What the trailer's checksum is.
    pub checksum: ChecksumKind,
    /// Compression used for chunks (each chunk may still be stored as is).
    pub compression: Compression,
    /// Whether chunks are AES-256-GCM encrypted.
    pub encrypted: bool,
    /// The key's fingerprint when encrypted.
    pub key_id: Option<KeyId>,
    /// Plaintext length in bytes.
    pub plain_len: u64,
    /// log2 of the plaintext bytes per chunk.
    pub chunk_shift: u8,
    /// First 16 bytes of the object name's hash.
    pub name_hash: [u8; 16],
    /// Random per-object salt (zero when unencrypted).
    pub salt: [u8; 32],
}

impl ObjectHeader {
    /// Whether this header was written for the object called `name`.
    pub fn matches_name(&self, name: &str) -> bool {
        self.name_hash == name_hash(name)
    }

    /// Plaintext bytes per chunk.
    pub fn chunk_size(&self) -> u64 {
        1u64 << self.chunk_shift
    }

    /// Number of data chunks (the trailer comes after them).
    pub fn data_chunks(&self) -> u64 {
        data_chunks(self.plain_len, self.chunk_shift)
    }

    /// Serializes the header (the CRC is computed here).
    pub(crate) fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8] = self.version;
        h[9] = match self.compression {
            Compression::None => 0,
            Compression::Lz4 => 1,
        };
        h[10] = if self.encrypted {
            ENC_AES256GCM
        } else {
            ENC_NONE
        };
        h[11] = self.chunk_shift;
        if self.version >= 2 {
            h[12] = self.checksum.to_byte();
        }
        // 13..16 reserved, zero.
        h[16..24].copy_from_slice(&self.plain_len.to_le_bytes());
        h[24..40].copy_from_slice(&self.name_hash);
        if let Some(id) = self.key_id {
            h[40..56].copy_from_slice(&id.0);
        }
        h[56..88].copy_from_slice(&self.salt);
        let crc = crc32c::crc32c(&h[..88]);
        h[88..92].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Parses and validates a header (`bytes` holds at least [`HEADER_LEN`] bytes).
    pub(crate) fn parse(name: &str, bytes: &[u8]) -> Result<ObjectHeader, CodecError> {
        if bytes.len() < HEADER_LEN {
            if bytes.len() >= MAGIC.len() && bytes[..MAGIC.len()] != MAGIC {
                return Err(CodecError::NotAnObject { name: name.into() });
            }
            return Err(CodecError::Truncated {
                name: name.into(),
                offset: bytes.len() as u64,
                reason: format!("the header needs {HEADER_LEN} bytes"),
            });
        }
        let h = &bytes[..HEADER_LEN];
        if h[0..8] != MAGIC {
            return Err(CodecError::NotAnObject { name: name.into() });
        }
        if !(VERSION_PLAIN_CHECKSUM..=FORMAT_VERSION).contains(&h[8]) {
            return Err(CodecError::UnsupportedVersion {
                name: name.into(),
                version: h[8],
            });
        }
        let corrupt = |offset: u64, reason: String| CodecError::Corrupt {
            name: name.into(),
            offset,
            reason,
        };
        let stored_crc = u32::from_le_bytes([h[88], h[89], h[90], h[91]]);
        let crc = crc32c::crc32c(&h[..88]);
        if crc != stored_crc {
            return Err(corrupt(
                88,
                format!("header CRC-32C mismatch (stored {stored_crc:08x}, computed {crc:08x})"),
            ));
        }
        let compression = match h[9] {
            0 => Compression::None,
            1 => Compression::Lz4,
            c => return Err(corrupt(9, format!("unknown compression {c}"))),
        };
        let encrypted = match h[10] {
            ENC_NONE => false,
            ENC_AES256GCM => true,
            e => return Err(corrupt(10, format!("unknown encryption {e}"))),
        };
        let chunk_shift = h[11];
        if !(MIN_CHUNK_SHIFT..=MAX_CHUNK_SHIFT).contains(&chunk_shift) {
            return Err(corrupt(
                11,
                format!("chunk size 2^{chunk_shift} out of range"),
            ));
        }
        let checksum = match (h[8], h[12]) {
            (_, 0) => ChecksumKind::Blake3,
            (2.., 1) if encrypted => ChecksumKind::KeyedBlake3,
            (2.., 1) => {
                return Err(corrupt(
                    12,
                    "unencrypted object with a keyed checksum".into(),
                ))
            }
            _ => return Err(corrupt(12, "reserved header bytes are not zero".into())),
        };
        if h[13..16] != [0; 3] {
            return Err(corrupt(13, "reserved header bytes are not zero".into()));
        }
        let mut b8 = [0u8; 8];
        b8.copy_from_slice(&h[16..24]);
        let plain_len = u64::from_le_bytes(b8);
        let mut name_hash = [0u8; 16];
        name_hash.copy_from_slice(&h[24..40]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&h[40..56]);
        let mut salt = [0u8; 32];
        salt.copy_from_slice(&h[56..88]);
        if !encrypted && (id != [0; 16] || salt != [0; 32]) {
            return Err(corrupt(
                40,
                "unencrypted object with a key id or salt".into(),
            ));
        }
        let header = ObjectHeader {
            version: h[8],
            checksum,
            compression,
            encrypted,
            key_id: encrypted.then_some(KeyId(id)),
            plain_len,
            chunk_shift,
            name_hash,
            salt,
        };
        if header.data_chunks() >= u64::from(u32::MAX) {
            return Err(corrupt(
                16,
                format!("plaintext length {plain_len} needs too many chunks"),
            ));
        }
        Ok(header)
    }
}

/// Number of data chunks for a plaintext length.
pub(crate) fn data_chunks(plain_len: u64, chunk_shift: u8) -> u64 {
    plain_len.div_ceil(1u64 << chunk_shift)
}

/// The first 16 bytes of BLAKE3 `derive_key("walship 2026-11-21 object name v1", name)`.
pub(crate) fn name_hash(name: &str) -> [u8; 16] {
    let full = blake3::derive_key(CTX_NAME, name.as_bytes());
    let mut h = [0u8; 16];
    h.copy_from_slice(&full[..16]);
    h
}

/// The 12-byte AES-GCM nonce of chunk `index`: the object's 8-byte nonce
/// prefix, then the index as u32 big-endian.
pub(crate) fn nonce(prefix: &[u8; 8], index: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(prefix);
    // `index < u32::MAX` is enforced when the header is built or parsed.
    n[8..].copy_from_slice(&(index as u32).to_be_bytes());
    n
}

/// Associated data of chunk `index`: header || index (u64 LE) || frame header.
pub(crate) fn associated_data(
    header: &[u8; HEADER_LEN],
    index: u64,
    frame_header: &[u8; FRAME_HEADER_LEN],
) -> [u8; HEADER_LEN + 8 + FRAME_HEADER_LEN] {
    let mut ad = [0u8; HEADER_LEN + 8 + FRAME_HEADER_LEN];
    ad[..HEADER_LEN].copy_from_slice(header);
    ad[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&index.to_le_bytes());
    ad[HEADER_LEN + 8..].copy_from_slice(frame_header);
    ad
}

/// The CRC-32C of a frame of an unencrypted object: over
/// header CRC (4 bytes, as stored) || index (u64 LE) || frame header || payload.
pub(crate) fn frame_crc(
    header: &[u8; HEADER_LEN],
    index: u64,
    frame_header: &[u8; FRAME_HEADER_LEN],
    payload: &[u8],
) -> u32 {
    let mut prefix = [0u8; 4 + 8 + FRAME_HEADER_LEN];
    prefix[..4].copy_from_slice(&header[88..92]);
    prefix[4..12].copy_from_slice(&index.to_le_bytes());
    prefix[12..].copy_from_slice(frame_header);
    crc32c::crc32c_append(crc32c::crc32c(&prefix), payload)
}

/// A frame header: flags, three zero bytes, stored payload length (u32 LE).
pub(crate) fn frame_header(flags: u8, stored_len: u32) -> [u8; FRAME_HEADER_LEN] {
    let mut f = [0u8; FRAME_HEADER_LEN];
    f[0] = flags;
    f[4..8].copy_from_slice(&stored_len.to_le_bytes());
    f
}

/// The trailer payload: checksum || plain_len (u64 LE) || data chunks (u64 LE).
pub(crate) fn trailer(checksum: &Checksum, plain_len: u64, chunks: u64) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[..32].copy_from_slice(&checksum.0);
    t[32..40].copy_from_slice(&plain_len.to_le_bytes());
    t[40..48].copy_from_slice(&chunks.to_le_bytes());
    t
}

/// Reads an object's header from the first [`HEADER_LEN`] (or more) stored
/// bytes, without a key: compression, encryption, key id, plaintext length.
/// The header's CRC is checked; nothing else is authenticated here.
pub fn read_header(stored_prefix: &[u8]) -> Result<ObjectHeader, CodecError> {
    ObjectHeader::parse("(header only)", stored_prefix)
}
