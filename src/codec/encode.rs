//! The sans-I/O encoder: plaintext in, framed (compressed, encrypted) bytes out.

use super::aead::{fill_random, ChunkCipher};

use super::error::CodecError;
use super::format::{
    associated_data, data_chunks, frame_crc, frame_header, name_hash, nonce, trailer, Checksum,
    ChecksumKind, ObjectHeader, DEFAULT_CHUNK_SHIFT, FLAG_COMPRESSED, FLAG_FINAL, FRAME_HEADER_LEN,
    HEADER_LEN, MAX_CHUNK_SHIFT, MIN_CHUNK_SHIFT, TAG_LEN,
};
use super::key::wipe;
use super::tree_hash;
use super::{CodecSettings, Compression, ObjectSummary};
use blake3::hazmat::ChainingValue;

/// Seals frames: owns the header bytes and, when encrypting, the object's
/// cipher and nonce prefix.
pub(crate) struct Sealer {
    pub(crate) header: [u8; HEADER_LEN],
    pub(crate) cipher: Option<(ChunkCipher, [u8; 8])>,
}

impl Sealer {
    /// Appends one frame (frame header, payload, tag or CRC) to `out`.
    fn emit(
        &self,
        name: &str,
        index: u64,
        flags: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, CodecError> {
        let before = out.len();
        match &self.cipher {
            Some((cipher, prefix)) => {
                let fh = frame_header(flags, (payload.len() + TAG_LEN) as u32);
                out.extend_from_slice(&fh);
                let start = out.len();
                out.extend_from_slice(payload);
                let ad = associated_data(&self.header, index, &fh);
                let n = nonce(prefix, index);
                let tag =
                    cipher
                        .seal(n, &ad, &mut out[start..])
                        .map_err(|_| CodecError::Invalid {
                            name: name.into(),
                            reason: format!("AES-GCM refused to encrypt chunk {index}"),
                        })?;
                out.extend_from_slice(&tag);
            }
            None => {
                let fh = frame_header(flags, payload.len() as u32);
                let crc = frame_crc(&self.header, index, &fh, payload);
                out.extend_from_slice(&fh);
                out.extend_from_slice(payload);
                out.extend_from_slice(&crc.to_le_bytes());
            }
        }
        Ok(out.len() - before)
    }
}

thread_local! {
    /// The lz4 output buffer of the last [`ObjectEncoder`] dropped on this thread.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Encodes one object, chunk by chunk, with bounded memory.
///
/// Write [`header`](Self::header) first, then everything [`push`](Self::push)
/// appends, then what [`finish`](Self::finish) appends. The plaintext length
/// must be known in advance (it is in the header); `finish` fails when a
/// different number of bytes was pushed, and the output must then be discarded.
pub struct ObjectEncoder {
    name: String,
    plain_len: u64,
    chunk_size: usize,
    compression: Compression,
    sealer: Sealer,
    /// A partial chunk waiting for more plaintext.
    buf: Vec<u8>,
    /// lz4 output of the current chunk.
    scratch: Vec<u8>,
    index: u64,
    pushed: u64,
    stored: u64,
    checksum: ChecksumSource,
    failed: Option<CodecError>,
}

/// Where the trailer's checksum comes from.
// One per encoder, held inline as the hasher always was: boxing it would add
// an allocation per object for nothing.
#[allow(clippy::large_enum_variant)]
enum ChecksumSource {
    /// BLAKE3 of the chunks as they are sealed.
    Hashing(blake3::Hasher),
    /// The caller's content id of the whole plaintext, of this kind.
    Given(Checksum, ChecksumKind),
}

impl ObjectEncoder {
    /// An encoder for the object `name` of `plain_len` bytes, with 1 MiB chunks.
    pub fn new(name: &str, plain_len: u64, settings: &CodecSettings) -> Self {
        match Self::with_chunk_shift(name, plain_len, settings, DEFAULT_CHUNK_SHIFT) {
            Ok(enc) => enc,
            Err(e) => {
                // Only an absurd plain_len (over 4 PiB) gets here: report it from finish().
                let mut enc = Self::build(name, 0, settings, DEFAULT_CHUNK_SHIFT, None, None);
                enc.plain_len = plain_len;
                enc.failed = Some(e);
                enc
            }
        }
    }

    /// Like [`new`](Self::new) with chunks of `2^chunk_shift` plaintext bytes
    /// (10..=24, i.e. 1 KiB to 16 MiB). Readers honour whatever the header says.
    pub fn with_chunk_shift(
        name: &str,
        plain_len: u64,
        settings: &CodecSettings,
        chunk_shift: u8,
    ) -> Result<Self, CodecError> {
        Self::check(name, plain_len, chunk_shift)?;
        Ok(Self::build(
            name,
            plain_len,
            settings,
            chunk_shift,
            None,
            None,
        ))
    }

    /// Like [`new`](Self::new) for a plaintext whose
    /// [`content_id`](super::content_id) under `settings` the caller has
    /// computed: that id becomes the trailer's checksum and the plaintext is
    /// not hashed again. A wrong id makes an object that fails to decode.
    pub fn with_content_id(
        name: &str,
        plain_len: u64,
        settings: &CodecSettings,
        id: Checksum,
    ) -> Result<Self, CodecError> {
        Self::check(name, plain_len, DEFAULT_CHUNK_SHIFT)?;
        let kind = ChecksumKind::of_content_ids(settings);
        Ok(Self::build(
            name,
            plain_len,
            settings,
            DEFAULT_CHUNK_SHIFT,
            None,
            Some((id, kind)),
        ))
    }

    /// Test hook: [`with_content_id`](Self::with_content_id) with a fixed
    /// salt and chunk size (test vectors, damage tests).
    #[cfg(test)]
    pub(crate) fn with_salt_and_content_id(
        name: &str,
        plain_len: u64,
        settings: &CodecSettings,
        chunk_shift: u8,
        salt: [u8; 32],
        id: Checksum,
    ) -> Self {
        let kind = ChecksumKind::of_content_ids(settings);
        Self::build(
            name,
            plain_len,
            settings,
            chunk_shift,
            Some(salt),
            Some((id, kind)),
        )
    }

    /// Test hook: a fixed salt makes the output deterministic (test vectors).
    #[cfg(test)]
    pub(crate) fn with_salt(
        name: &str,
        plain_len: u64,
        settings: &CodecSettings,
        chunk_shift: u8,
        salt: [u8; 32],
    ) -> Self {
        Self::build(name, plain_len, settings, chunk_shift, Some(salt), None)
    }

    fn check(name: &str, plain_len: u64, chunk_shift: u8) -> Result<(), CodecError> {
        if !(MIN_CHUNK_SHIFT..=MAX_CHUNK_SHIFT).contains(&chunk_shift) {
            return Err(CodecError::Invalid {
                name: name.into(),
                reason: format!(
                    "chunk size 2^{chunk_shift} out of range 2^{MIN_CHUNK_SHIFT}..2^{MAX_CHUNK_SHIFT}"
                ),
            });
        }
        if data_chunks(plain_len, chunk_shift) >= u64::from(u32::MAX) {
            return Err(CodecError::Invalid {
                name: name.into(),
                reason: format!("{plain_len} bytes need more than 2^32-1 chunks"),
            });
        }
        Ok(())
    }

    fn build(
        name: &str,
        plain_len: u64,
        settings: &CodecSettings,
        chunk_shift: u8,
        salt: Option<[u8; 32]>,
        given: Option<(Checksum, ChecksumKind)>,
    ) -> Self {
        let (checksum, kind) = match given {
            Some((id, kind)) => (ChecksumSource::Given(id, kind), kind),
            None => (
                ChecksumSource::Hashing(blake3::Hasher::new()),
                ChecksumKind::Blake3,
            ),
        };
        let mut header = ObjectHeader {
            version: kind.version(),
            checksum: kind,
            compression: settings.compression,
            encrypted: settings.key.is_some(),
            key_id: settings.key.as_ref().map(|k| k.id()),
            plain_len,
            chunk_shift,
            name_hash: name_hash(name),
            salt: [0; 32],
        };
        let cipher = settings.key.as_ref().map(|key| {
            let salt = salt.unwrap_or_else(|| {
                let mut s = [0u8; 32];
                fill_random(&mut s);
                s
            });
            header.salt = salt;
            let (mut object_key, prefix) = key.object_material(&salt);
            let cipher = ChunkCipher::new(&object_key);
            wipe(&mut object_key);
            (cipher, prefix)
        });
        let chunk_size = 1usize << chunk_shift;
        ObjectEncoder {
            name: name.into(),
            plain_len,
            chunk_size,
            compression: settings.compression,
            sealer: Sealer {
                header: header.to_bytes(),
                cipher,
            },
            buf: Vec::new(),
            // Reused from the last encoder of this thread: a backup encodes one
            // object per chunk, and zeroing a fresh buffer for each was 4% of it.
            scratch: SCRATCH.with(|c| c.take()),
            index: 0,
            pushed: 0,
            stored: HEADER_LEN as u64,
            checksum,
            failed: None,
        }
    }

    /// The header bytes: the first [`HEADER_LEN`] bytes of the stored object.
    pub fn header(&self) -> Vec<u8> {
        self.sealer.header.to_vec()
    }

    /// Takes plaintext; appends every chunk that fills up to `out`, framed.
    pub fn push(&mut self, mut plain: &[u8], out: &mut Vec<u8>) {
        if self.failed.is_some() {
            return;
        }
        self.pushed += plain.len() as u64;
        let cs = self.chunk_size;
        if !self.buf.is_empty() {
            let take = (cs - self.buf.len()).min(plain.len());
            self.buf.extend_from_slice(&plain[..take]);
            plain = &plain[take..];
            if self.buf.len() == cs {
                let chunk = std::mem::take(&mut self.buf);
                self.seal_data(&chunk, out);
                self.buf = chunk;
                self.buf.clear();
            }
        }
        // Whole chunks straight from the caller's slice: no copy.
        while plain.len() >= cs {
            self.seal_data(&plain[..cs], out);
            plain = &plain[cs..];
        }
        if !plain.is_empty() {
            if self.buf.capacity() < cs {
                self.buf.reserve_exact(cs - self.buf.len());
            }
            self.buf.extend_from_slice(plain);
        }
    }

    fn seal_data(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.failed.is_some() {
            return;
        }
        if let ChecksumSource::Hashing(h) = &mut self.checksum {
            h.update(chunk);
        }
        let mut flags = 0u8;
        let mut payload = chunk;
        if self.compression == Compression::Lz4 {
            let bound = lz4_flex::block::get_maximum_output_size(chunk.len());
            if self.scratch.len() < bound {
                self.scratch.resize(bound, 0);
            }
            if let Ok(n) = lz4_flex::block::compress_into(chunk, &mut self.scratch) {
                // Keep the compressed form only when it is smaller.
                if n < chunk.len() {
                    payload = &self.scratch[..n];
                    flags |= FLAG_COMPRESSED;
                }
            }
        }
        match self
            .sealer
            .emit(&self.name, self.index, flags, payload, out)
        {
            Ok(n) => self.stored += n as u64,
            Err(e) => self.failed = Some(e),
        }
        self.index += 1;
    }

    /// Seals the last partial chunk and the trailer into `out`. Fails when the
    /// number of bytes pushed differs from the announced length.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<ObjectSummary, CodecError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.pushed != self.plain_len {
            return Err(CodecError::LengthMismatch {
                name: std::mem::take(&mut self.name),
                expected: self.plain_len,
                actual: self.pushed,
            });
        }
        if !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            self.seal_data(&chunk, out);
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
        }
        let (checksum, checksum_kind) = match &self.checksum {
            ChecksumSource::Hashing(h) => {
                (Checksum(*h.finalize().as_bytes()), ChecksumKind::Blake3)
            }
            ChecksumSource::Given(id, kind) => (*id, *kind),
        };
        let t = trailer(&checksum, self.plain_len, self.index);
        let n = self
            .sealer
            .emit(&self.name, self.index, FLAG_FINAL, &t, out)?;
        self.stored += n as u64;
        Ok(ObjectSummary {
            plain_len: self.plain_len,
            stored_len: self.stored,
            checksum,
            checksum_kind,
        })
    }
}

impl Drop for ObjectEncoder {
    fn drop(&mut self) {
        let scratch = std::mem::take(&mut self.scratch);
        // Keep at most a default chunk's worth, whichever of the two is larger.
        if scratch.capacity() <= lz4_flex::block::get_maximum_output_size(1 << DEFAULT_CHUNK_SHIFT)
        {
            SCRATCH.with(|c| {
                let kept = c.take();
                c.set(if scratch.capacity() > kept.capacity() {
                    scratch
                } else {
                    kept
                });
            });
        }
    }
}

/// Compresses (when it shrinks) and seals one data chunk into `out`.
fn seal_chunk(
    sealer: &Sealer,
    name: &str,
    compression: Compression,
    index: u64,
    chunk: &[u8],
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<usize, CodecError> {
    let mut flags = 0u8;
    let mut payload = chunk;
    if compression == Compression::Lz4 {
        scratch.resize(lz4_flex::block::get_maximum_output_size(chunk.len()), 0);
        if let Ok(n) = lz4_flex::block::compress_into(chunk, scratch) {
            if n < chunk.len() {
                payload = &scratch[..n];
                flags |= FLAG_COMPRESSED;
            }
        }
    }
    sealer.emit(name, index, flags, payload, out)
}

/// Encodes a whole object held in memory with up to `threads` threads
/// compressing and sealing chunks side by side, handing the stored bytes to
/// `sink` in order (header first, then a frame at a time), so that the
/// encoded object is never held whole. The bytes are exactly those
/// [`ObjectEncoder`] produces for the same salt: chunks are independent (each
/// has its own nonce and associated data), only their order matters.
pub fn encode_parallel(
    name: &str,
    plain: &[u8],
    settings: &CodecSettings,
    threads: usize,
    sink: &mut dyn FnMut(Vec<u8>) -> Result<(), CodecError>,
) -> Result<ObjectSummary, CodecError> {
    let enc = ObjectEncoder::new(name, plain.len() as u64, settings);
    encode_parallel_with(enc, plain, threads, sink)
}

fn encode_parallel_with(
    mut enc: ObjectEncoder,
    plain: &[u8],
    threads: usize,
    sink: &mut dyn FnMut(Vec<u8>) -> Result<(), CodecError>,
) -> Result<ObjectSummary, CodecError> {
    if let Some(e) = enc.failed.take() {
        return Err(e);
    }
    let cs = enc.chunk_size;
    let n = plain.len().div_ceil(cs);
    let threads = threads.clamp(1, n.max(1));
    if threads == 1 || n < 2 || matches!(enc.checksum, ChecksumSource::Given(..)) {
        sink(enc.header())?;
        let mut out = Vec::new();
        for chunk in plain.chunks(cs) {
            enc.push(chunk, &mut out);
            sink(std::mem::take(&mut out))?;
        }
        let summary = enc.finish(&mut out)?;
        sink(out)?;
        return Ok(summary);
    }
    let (sealer, name, compression) = (&enc.sealer, enc.name.as_str(), enc.compression);
    // One chunk: its frame, and its BLAKE3 subtree hash while it is in cache.
    let seal = |i: usize, scratch: &mut Vec<u8>| -> Result<(Vec<u8>, ChainingValue), CodecError> {
        let chunk = &plain[i * cs..((i + 1) * cs).min(plain.len())];
        let cv = tree_hash::chunk_cv(chunk, (i * cs) as u64, None);
        let mut out = Vec::with_capacity(chunk.len() + FRAME_HEADER_LEN + TAG_LEN);
        seal_chunk(
            sealer,
            name,
            compression,
            i as u64,
            chunk,
            scratch,
            &mut out,
        )?;
        Ok((out, cv))
    };
    let mut stored = HEADER_LEN as u64;
    sink(enc.header())?;
    let mut cvs = Vec::with_capacity(n);
    std::thread::scope(|scope| -> Result<(), CodecError> {
        // Worker k seals chunks k, k + threads, ...; this thread seals the
        // rest and hands every frame to the sink in order. A bounded channel
        // per worker keeps at most one of its frames waiting.
        let mut sealed = Vec::with_capacity(threads - 1);
        for k in 1..threads {
            // A rendezvous: a sealed frame waits in its worker, not in a
            // queue too (archive-push's peak memory is measured).
            let (tx, rx) = std::sync::mpsc::sync_channel(0);
            sealed.push(rx);
            let seal = &seal;
            scope.spawn(move || {
                let mut scratch = Vec::new();
                for i in (k..n).step_by(threads) {
                    let result = seal(i, &mut scratch);
                    let failed = result.is_err();
                    // A closed channel: the caller stopped (its sink failed).
                    if tx.send(result).is_err() || failed {
                        return;
                    }
                }
            });
        }
        let mut scratch = Vec::new();
        for i in 0..n {
            let (out, cv) = match i % threads {
                0 => seal(i, &mut scratch)?,
                k => sealed[k - 1].recv().map_err(|_| CodecError::Invalid {
                    name: name.into(),
                    reason: "a sealing thread stopped".into(),
                })??,
            };
            cvs.push(cv);
            stored += out.len() as u64;
            sink(out)?;
        }
        Ok(())
    })?;
    let checksum =
        Checksum(*tree_hash::root_hash(&cvs, cs as u64, plain.len() as u64, None).as_bytes());
    let mut out = Vec::new();
    let t = trailer(&checksum, plain.len() as u64, n as u64);
    stored += enc
        .sealer
        .emit(&enc.name, n as u64, FLAG_FINAL, &t, &mut out)? as u64;
    sink(out)?;
    Ok(ObjectSummary {
        plain_len: plain.len() as u64,
        stored_len: stored,
        checksum,
        checksum_kind: ChecksumKind::Blake3,
    })
}

#[cfg(test)]
mod parallel_tests {
    use super::*;
    use crate::codec::{decode_bytes, Key};
    use std::sync::Arc;

    fn sequential(settings: &CodecSettings, plain: &[u8], salt: [u8; 32]) -> Vec<u8> {
        let mut enc = ObjectEncoder::with_salt(
            "obj",
            plain.len() as u64,
            settings,
            DEFAULT_CHUNK_SHIFT,
            salt,
        );
        let mut out = enc.header();
        enc.push(plain, &mut out);
        enc.finish(&mut out).unwrap();
        out
    }

    fn parallel(
        settings: &CodecSettings,
        plain: &[u8],
        salt: [u8; 32],
        threads: usize,
    ) -> (Vec<u8>, ObjectSummary) {
        let enc = ObjectEncoder::with_salt(
            "obj",
            plain.len() as u64,
            settings,
            DEFAULT_CHUNK_SHIFT,
            salt,
        );
        let mut out = Vec::new();
        let summary = encode_parallel_with(enc, plain, threads, &mut |b| {
            out.extend_from_slice(&b);
            Ok(())
        })
        .unwrap();
        (out, summary)
    }

    #[test]
    fn parallel_encoding_gives_the_sequential_bytes() {
        let key = Arc::new(Key::from_bytes([7; 32]));
        let mut data: Vec<u8> = (0..(5 << 20) + 12345).map(|i| (i % 251) as u8).collect();
        data[3 << 20..(3 << 20) + 4096].fill(0);
        for settings in [
            CodecSettings {
                compression: Compression::Lz4,
                key: Some(key.clone()),
            },
            CodecSettings {
                compression: Compression::None,
                key: Some(key.clone()),
            },
            CodecSettings {
                compression: Compression::Lz4,
                key: None,
            },
            CodecSettings {
                compression: Compression::None,
                key: None,
            },
        ] {
            for len in [0, 1, 1 << 20, (1 << 20) + 1, data.len()] {
                let plain = &data[..len];
                let expected = sequential(&settings, plain, [9; 32]);
                for threads in [1, 2, 3, 8] {
                    let (got, summary) = parallel(&settings, plain, [9; 32], threads);
                    assert!(
                        got == expected,
                        "len {len}, {threads} threads: bytes differ"
                    );
                    assert_eq!(summary.stored_len, got.len() as u64);
                    let (back, s2) = decode_bytes("obj", &got, settings.key.clone()).unwrap();
                    assert!(back == plain);
                    assert_eq!(s2.checksum, summary.checksum);
                }
            }
        }
    }
}
