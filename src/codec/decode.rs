//! The sans-I/O decoder: stored bytes in (any split), verified plaintext out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::aead::ChunkCipher;

use super::error::CodecError;
use super::format::{
    associated_data, content_id_key, frame_crc, name_hash, nonce, Checksum, ChecksumKind,
    ObjectHeader, CRC_LEN, FLAG_COMPRESSED, FLAG_FINAL, FRAME_HEADER_LEN, HEADER_LEN, MAGIC,
    TAG_LEN, TRAILER_LEN,
};
use super::key::{wipe, Key};
use super::tree_hash;
use super::ObjectSummary;
use blake3::hazmat::ChainingValue;

#[derive(Debug, Clone, Copy)]
enum State {
    Header,
    FrameHead,
    FrameBody {
        fh: [u8; FRAME_HEADER_LEN],
        stored_len: usize,
    },
    Done,
    Failed,
}

/// Decodes one object fed in pieces of any size.
///
/// Memory: one stored chunk (at most 16 MiB + 20 bytes, 1 MiB as written by
/// default) plus the caller's output buffer. Each chunk is verified (GCM tag
/// or CRC-32C) before its plaintext is appended to `out`; the object as a
/// whole (length, chunk count, BLAKE3 of the plaintext) is verified only by
/// [`finish`](Self::finish), so callers must not publish the output (rename a
/// temp file, hand a segment to PostgreSQL) before `finish` returns `Ok`.
pub struct ObjectDecoder {
    name: String,
    key: Option<Arc<Key>>,
    state: State,
    /// The current unit (header, frame header or frame body) being gathered.
    pending: Vec<u8>,
    header: Option<(ObjectHeader, [u8; HEADER_LEN])>,
    cipher: Option<(ChunkCipher, [u8; 8])>,
    index: u64,
    n_data: u64,
    /// Stored bytes consumed so far (including those in `pending`).
    consumed: u64,
    /// Offset of the frame being decoded.
    frame_start: u64,
    plain_done: u64,
    hasher: blake3::Hasher,
    summary: Option<ObjectSummary>,
}

impl ObjectDecoder {
    /// A decoder for the object `name`. Give the repository's key when it is
    /// encrypted: then unencrypted objects are refused.
    pub fn new(name: &str, key: Option<Arc<Key>>) -> Self {
        ObjectDecoder {
            name: name.into(),
            key,
            state: State::Header,
            pending: Vec::new(),
            header: None,
            cipher: None,
            index: 0,
            n_data: 0,
            consumed: 0,
            frame_start: 0,
            plain_done: 0,
            hasher: blake3::Hasher::new(),
            summary: None,
        }
    }

    /// The object's header, once enough bytes were fed.
    pub fn header(&self) -> Option<&ObjectHeader> {
        self.header.as_ref().map(|(h, _)| h)
    }

    /// Takes the next stored bytes; appends verified plaintext to `out`.
    /// After an error the decoder is unusable.
    pub fn feed(&mut self, stored: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let result = self.feed_inner(stored, out);
        if result.is_err() {
            self.state = State::Failed;
            self.pending = Vec::new();
        }
        result
    }

    fn encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    fn feed_inner(&mut self, mut stored: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        while !stored.is_empty() {
            let need = match self.state {
                State::Header => HEADER_LEN,
                State::FrameHead => FRAME_HEADER_LEN,
                State::FrameBody { stored_len, .. } => {
                    stored_len + if self.encrypted() { 0 } else { CRC_LEN }
                }
                State::Done => {
                    return Err(self.corrupt(
                        self.consumed,
                        format!("{} unexpected bytes after the trailer", stored.len()),
                    ))
                }
                State::Failed => {
                    return Err(self.corrupt(
                        self.consumed,
                        "decoding already failed; no more data accepted".into(),
                    ))
                }
            };
            // Encrypted bodies are decrypted in place, so they are always
            // gathered in `pending`; everything else is read from the caller's
            // slice when it is there whole.
            let sealed_body = self.encrypted() && matches!(self.state, State::FrameBody { .. });
            if self.pending.is_empty() && stored.len() >= need && !sealed_body {
                self.consumed += need as u64;
                self.process(&stored[..need], out)?;
                stored = &stored[need..];
                continue;
            }
            if self.pending.capacity() < need {
                self.pending.reserve_exact(need - self.pending.len());
            }
            let take = (need - self.pending.len()).min(stored.len());
            self.pending.extend_from_slice(&stored[..take]);
            self.consumed += take as u64;
            stored = &stored[take..];
            if matches!(self.state, State::Header)
                && self.pending.len() >= MAGIC.len()
                && self.pending[..MAGIC.len()] != MAGIC
            {
                // Say "not an object" at once rather than "truncated" later.
                return Err(CodecError::NotAnObject {
                    name: self.name.clone(),
                });
            }
            if self.pending.len() == need {
                let mut unit = std::mem::take(&mut self.pending);
                let r = if sealed_body {
                    self.open_sealed(&mut unit, out)
                } else {
                    self.process(&unit, out)
                };
                unit.clear();
                self.pending = unit;
                r?;
            }
        }
        Ok(())
    }

    /// Handles a complete header, frame header or unencrypted frame body.
    fn process(&mut self, unit: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        match self.state {
            State::Header => self.on_header(unit),
            State::FrameHead => self.on_frame_header(unit),
            State::FrameBody { fh, stored_len } => {
                let (payload, crc) = unit.split_at(stored_len);
                let (header, _) = self.header_ref()?;
                check_crc(
                    &self.name,
                    header,
                    self.index,
                    self.frame_start,
                    &fh,
                    payload,
                    crc,
                )?;
                self.on_payload(fh[0], payload, out)
            }
            State::Done | State::Failed => Ok(()),
        }
    }

    fn header_ref(&self) -> Result<(&[u8; HEADER_LEN], &ObjectHeader), CodecError> {
        match &self.header {
            Some((h, raw)) => Ok((raw, h)),
            None => Err(self.corrupt(0, "internal: frame before header".into())),
        }
    }

    fn on_header(&mut self, raw: &[u8]) -> Result<(), CodecError> {
        let header = ObjectHeader::parse(&self.name, raw)?;
        match (&header.key_id, &self.key) {
            (Some(found), None) => {
                return Err(CodecError::KeyRequired {
                    name: self.name.clone(),
                    key_id: *found,
                })
            }
            (Some(found), Some(key)) => {
                let ours = key.id();
                if *found != ours {
                    return Err(CodecError::WrongKey {
                        name: self.name.clone(),
                        found: *found,
                        ours,
                    });
                }
            }
            (None, Some(_)) => {
                return Err(CodecError::NotEncrypted {
                    name: self.name.clone(),
                })
            }
            (None, None) => {}
        }
        if header.name_hash != name_hash(&self.name) {
            return Err(CodecError::NameMismatch {
                name: self.name.clone(),
            });
        }
        // A keyed checksum is only valid in an encrypted object, so the key is here.
        self.hasher = header
            .checksum
            .hasher(self.key.as_deref())
            .ok_or_else(|| self.corrupt(12, "keyed checksum without a key".into()))?;
        if let Some(key) = &self.key {
            let (mut object_key, prefix) = key.object_material(&header.salt);
            let cipher = ChunkCipher::new(&object_key);
            wipe(&mut object_key);
            self.cipher = Some((cipher, prefix));
        }
        let mut bytes = [0u8; HEADER_LEN];
        bytes.copy_from_slice(&raw[..HEADER_LEN]);
        self.n_data = header.data_chunks();
        self.header = Some((header, bytes));
        self.state = State::FrameHead;
        self.frame_start = self.consumed;
        Ok(())
    }

    /// Plaintext length of data chunk `index`.
    fn chunk_plain_len(&self, header: &ObjectHeader) -> usize {
        let cs = header.chunk_size();
        (header.plain_len - self.index * cs).min(cs) as usize
    }

    fn on_frame_header(&mut self, unit: &[u8]) -> Result<(), CodecError> {
        let mut fh = [0u8; FRAME_HEADER_LEN];
        fh.copy_from_slice(unit);
        let flags = fh[0];
        let stored_len = u32::from_le_bytes([fh[4], fh[5], fh[6], fh[7]]) as usize;
        let (_, header) = self.header_ref()?;
        let overhead = if self.encrypted() { TAG_LEN } else { 0 };
        let at = self.frame_start;
        let i = self.index;
        if flags & !(FLAG_COMPRESSED | FLAG_FINAL) != 0 || fh[1..4] != [0; 3] {
            return Err(self.corrupt(at, format!("chunk {i}: invalid frame header")));
        }
        if i == self.n_data {
            if flags != FLAG_FINAL || stored_len != TRAILER_LEN + overhead {
                return Err(self.corrupt(
                    at,
                    format!(
                        "chunk {i}: expected the trailer (the header announces {i} data chunks)"
                    ),
                ));
            }
        } else {
            if flags & FLAG_FINAL != 0 {
                return Err(self.corrupt(
                    at,
                    format!(
                        "chunk {i}: final frame, but the header announces {} data chunks",
                        self.n_data
                    ),
                ));
            }
            let plain = self.chunk_plain_len(header);
            let ok = match stored_len.checked_sub(overhead) {
                Some(p) if flags & FLAG_COMPRESSED != 0 => p > 0 && p < plain,
                Some(p) => p == plain,
                None => false,
            };
            if !ok {
                return Err(self.corrupt(
                    at,
                    format!(
                        "chunk {i}: stored length {stored_len} impossible for {plain} bytes of data"
                    ),
                ));
            }
        }
        self.state = State::FrameBody { fh, stored_len };
        Ok(())
    }

    fn open_sealed(&mut self, body: &mut [u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let State::FrameBody { fh, .. } = self.state else {
            return Err(self.corrupt(self.frame_start, "internal: not in a frame".into()));
        };
        let (header, _) = self.header_ref()?;
        let Some(cipher) = &self.cipher else {
            return Err(self.corrupt(self.frame_start, "internal: no cipher".into()));
        };
        let ct = open_frame(
            &self.name,
            cipher,
            header,
            self.index,
            self.frame_start,
            &fh,
            body,
        )?;
        self.on_payload(fh[0], ct, out)
    }

    /// A verified payload: a data chunk's (maybe compressed) bytes or the trailer.
    fn on_payload(
        &mut self,
        flags: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        if self.index == self.n_data {
            let computed = Checksum(*self.hasher.finalize().as_bytes());
            return self.on_trailer(payload, computed);
        }
        let (_, header) = self.header_ref()?;
        let plain = self.chunk_plain_len(header);
        let start = out.len();
        inflate_into(
            &self.name,
            self.index,
            self.frame_start,
            flags,
            payload,
            plain,
            out,
        )?;
        self.hasher.update(&out[start..]);
        self.plain_done += plain as u64;
        self.index += 1;
        self.state = State::FrameHead;
        self.frame_start = self.consumed;
        Ok(())
    }

    fn on_trailer(&mut self, t: &[u8], computed: Checksum) -> Result<(), CodecError> {
        let (_, header) = self.header_ref()?;
        let mut sum = [0u8; 32];
        sum.copy_from_slice(&t[..32]);
        let mut b8 = [0u8; 8];
        b8.copy_from_slice(&t[32..40]);
        let plain_len = u64::from_le_bytes(b8);
        b8.copy_from_slice(&t[40..48]);
        let chunks = u64::from_le_bytes(b8);
        let at = self.frame_start;
        if plain_len != header.plain_len || chunks != self.n_data || self.plain_done != plain_len {
            return Err(self.corrupt(
                at,
                format!(
                    "trailer says {plain_len} bytes in {chunks} chunks, header says {} bytes in {} chunks",
                    header.plain_len, self.n_data
                ),
            ));
        }
        let recorded = Checksum(sum);
        if computed != recorded {
            return Err(self.corrupt(
                at,
                format!(
                    "plaintext {} mismatch (recorded {recorded}, computed {computed})",
                    match header.checksum {
                        ChecksumKind::Blake3 => "BLAKE3",
                        ChecksumKind::KeyedBlake3 => "keyed BLAKE3 (content id)",
                    }
                ),
            ));
        }
        self.summary = Some(ObjectSummary {
            plain_len,
            stored_len: self.consumed,
            checksum: computed,
            checksum_kind: header.checksum,
        });
        self.state = State::Done;
        Ok(())
    }

    fn corrupt(&self, offset: u64, reason: String) -> CodecError {
        CodecError::Corrupt {
            name: self.name.clone(),
            offset,
            reason,
        }
    }

    /// Ends decoding: `Ok` only when the whole object, trailer included, was
    /// fed and verified.
    pub fn finish(self) -> Result<ObjectSummary, CodecError> {
        let truncated = |reason: String| CodecError::Truncated {
            name: self.name.clone(),
            offset: self.consumed,
            reason,
        };
        match self.state {
            State::Done => match self.summary {
                Some(s) => Ok(s),
                None => Err(self.corrupt(self.consumed, "internal: no summary".into())),
            },
            State::Failed => Err(self.corrupt(self.consumed, "decoding had failed".into())),
            State::Header => Err(truncated(format!(
                "the header is incomplete ({} of {HEADER_LEN} bytes)",
                self.pending.len()
            ))),
            State::FrameHead if self.index == self.n_data => {
                Err(truncated("the trailer is missing".into()))
            }
            State::FrameHead => Err(truncated(format!(
                "chunk {} of {} data chunks is missing",
                self.index, self.n_data
            ))),
            State::FrameBody { .. } => Err(truncated(format!(
                "chunk {} (frame at offset {}) is incomplete",
                self.index, self.frame_start
            ))),
        }
    }
}

/// Checks an unencrypted frame's CRC-32C (over the header, index, frame
/// header and payload).
fn check_crc(
    name: &str,
    header: &[u8; HEADER_LEN],
    index: u64,
    frame_start: u64,
    fh: &[u8; FRAME_HEADER_LEN],
    payload: &[u8],
    crc: &[u8],
) -> Result<(), CodecError> {
    let want = frame_crc(header, index, fh, payload);
    let got = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if want != got {
        return Err(CodecError::Corrupt {
            name: name.into(),
            offset: frame_start,
            reason: format!(
                "chunk {index}: CRC-32C mismatch (stored {got:08x}, computed {want:08x})"
            ),
        });
    }
    Ok(())
}

/// Authenticates and decrypts a sealed frame body (ciphertext then tag) in
/// place; returns the payload.
fn open_frame<'a>(
    name: &str,
    (cipher, prefix): &(ChunkCipher, [u8; 8]),
    header: &[u8; HEADER_LEN],
    index: u64,
    frame_start: u64,
    fh: &[u8; FRAME_HEADER_LEN],
    body: &'a mut [u8],
) -> Result<&'a [u8], CodecError> {
    let (ct, tag) = body.split_at_mut(body.len() - TAG_LEN);
    let ad = associated_data(header, index, fh);
    cipher
        .open(nonce(prefix, index), &ad, ct, tag)
        .map_err(|_| CodecError::Tampered {
            name: name.into(),
            chunk: index,
            offset: frame_start,
        })?;
    Ok(ct)
}

/// Appends a verified payload's plaintext (`plain` bytes) to `out`,
/// decompressing it when the frame says so.
fn inflate_into(
    name: &str,
    index: u64,
    frame_start: u64,
    flags: u8,
    payload: &[u8],
    plain: usize,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    if flags & FLAG_COMPRESSED == 0 {
        out.extend_from_slice(payload);
        return Ok(());
    }
    let start = out.len();
    out.resize(start + plain, 0);
    let result = inflate_exact(name, index, frame_start, flags, payload, &mut out[start..]);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Like [`inflate_into`], into `out` whose length is the chunk's plaintext
/// length; what `out` held before is overwritten, so a reused buffer need not
/// be zeroed first (that memset was ~7% of an archive-get).
fn inflate_exact(
    name: &str,
    index: u64,
    frame_start: u64,
    flags: u8,
    payload: &[u8],
    out: &mut [u8],
) -> Result<(), CodecError> {
    let plain = out.len();
    let reason = if flags & FLAG_COMPRESSED == 0 {
        if payload.len() == plain {
            out.copy_from_slice(payload);
            return Ok(());
        }
        format!(
            "chunk {index}: {} stored bytes, expected {plain}",
            payload.len()
        )
    } else {
        match lz4_flex::block::decompress_into(payload, out) {
            Ok(n) if n == plain => return Ok(()),
            Ok(n) => format!("chunk {index}: decompressed to {n} bytes, expected {plain}"),
            Err(e) => format!("chunk {index}: lz4 block does not decompress: {e}"),
        }
    };
    Err(CodecError::Corrupt {
        name: name.into(),
        offset: frame_start,
        reason,
    })
}

/// The frames of a whole object, checked as [`ObjectDecoder`] checks them
/// (header, then each frame header in order, lengths, nothing after the
/// trailer), without opening any; `None` at the first flaw.
fn walk_frames(dec: &mut ObjectDecoder, stored: &[u8]) -> Option<(Vec<DataFrame>, DataFrame)> {
    if stored.len() < HEADER_LEN {
        return None;
    }
    dec.feed(&stored[..HEADER_LEN], &mut Vec::new()).ok()?;
    let mut frames = Vec::with_capacity(dec.n_data as usize);
    let mut pos = HEADER_LEN;
    let crc_len = if dec.encrypted() { 0 } else { CRC_LEN };
    loop {
        dec.frame_start = pos as u64;
        let fh = stored.get(pos..pos + FRAME_HEADER_LEN)?;
        dec.on_frame_header(fh).ok()?;
        let State::FrameBody { fh, stored_len } = dec.state else {
            return None;
        };
        let body_start = pos + FRAME_HEADER_LEN;
        let body_end = body_start + stored_len + crc_len;
        if body_end > stored.len() {
            return None;
        }
        let frame = DataFrame {
            index: dec.index,
            fh,
            start: pos as u64,
            body: body_start..body_end,
        };
        pos = body_end;
        if dec.index == dec.n_data {
            return (pos == stored.len()).then_some((frames, frame));
        }
        frames.push(frame);
        dec.index += 1;
        dec.state = State::FrameHead;
    }
}

/// A frame's verified payload: decrypted in place (sealed frames) or
/// CRC-checked (unencrypted ones).
fn unseal<'a>(
    name: &str,
    cipher: Option<&(ChunkCipher, [u8; 8])>,
    header: &[u8; HEADER_LEN],
    f: &DataFrame,
    body: &'a mut [u8],
) -> Result<&'a [u8], CodecError> {
    match cipher {
        Some(c) => open_frame(name, c, header, f.index, f.start, &f.fh, body),
        None => {
            let (payload, crc) = body.split_at(body.len() - CRC_LEN);
            check_crc(name, header, f.index, f.start, &f.fh, payload, crc)?;
            Ok(payload)
        }
    }
}

/// One frame found by [`walk_frames`].
struct DataFrame {
    index: u64,
    fh: [u8; FRAME_HEADER_LEN],
    start: u64,
    body: std::ops::Range<usize>,
}

/// Opens one chunk: its verified plaintext and BLAKE3 subtree hash. The
/// two buffers are handed back after use and reused (fresh ones were
/// page-faulted, and zeroed by the kernel, for every chunk).
type OpenChunk<'a> = dyn Fn(&DataFrame, &mut Vec<u8>, Vec<u8>) -> Result<(Vec<u8>, ChainingValue), CodecError>
    + Sync
    + 'a;

/// Decodes and verifies a whole object held in memory on the calling thread,
/// handing the plaintext to `sink` in order (at most a chunk at a time: memory
/// stays at a chunk, not the object). Verification is that of
/// [`ObjectDecoder`]; as there, the output is not to be used unless this
/// returns `Ok`.
pub fn decode_in_order(
    name: &str,
    stored: &[u8],
    key: Option<Arc<Key>>,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), CodecError>,
) -> Result<ObjectSummary, CodecError> {
    let mut dec = ObjectDecoder::new(name, key);
    let mut out = Vec::new();
    for piece in stored.chunks(1 << 20) {
        dec.feed(piece, &mut out)?;
        sink(&out)?;
        out.clear();
    }
    dec.finish()
}

/// Writes plaintext at its offset in the output (for
/// [`decode_parallel_at`]); called from several threads at once.
pub type WriteAt<'a> = dyn Fn(u64, &[u8]) -> Result<(), CodecError> + Sync + 'a;

/// Decodes and verifies a whole object held in memory with up to `threads`
/// threads opening, decompressing and hashing chunks side by side, each
/// writing the chunks it opened at their plaintext offsets through
/// `write_at`: no thread waits for another to hand plaintext over in order
/// (such handovers kept the threads waiting on each other for about a third
/// of an archive-get). Chunk 0 is opened and written before any other chunk
/// is written: a `write_at` that checks how the object starts refuses it
/// before anything else is written. Verification is that of
/// [`ObjectDecoder`], error for error (the first bad chunk's); as there, the
/// output is not to be used unless this returns `Ok`.
pub fn decode_parallel_at(
    name: &str,
    stored: &[u8],
    key: Option<Arc<Key>>,
    threads: usize,
    write_at: &WriteAt<'_>,
) -> Result<ObjectSummary, CodecError> {
    let mut written = 0u64;
    let mut in_order = |plain: &[u8]| {
        write_at(written, plain)?;
        written += plain.len() as u64;
        Ok(())
    };
    decode_chunks(
        name,
        stored,
        key,
        threads,
        &mut in_order,
        |frames, open, threads, cs| {
            let run = PositionalRun {
                frames,
                open,
                write_at,
                cs,
                threads,
                chunk0: Chunk0Gate::default(),
                failed_at: AtomicU64::new(u64::MAX),
            };
            let per_thread: Vec<Vec<OpenedChunk>> = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads)
                    .map(|k| {
                        let run = &run;
                        scope.spawn(move || run.thread(k))
                    })
                    .collect();
                workers
                    .into_iter()
                    // A thread that panicked opened nothing: caught below.
                    .map(|w| w.join().unwrap_or_default())
                    .collect()
            });
            let mut opened: Vec<_> = per_thread.into_iter().flatten().collect();
            opened.sort_unstable_by_key(|(index, _)| *index);
            let mut cvs = Vec::with_capacity(frames.len());
            for (_, cv) in opened {
                cvs.push(cv?);
            }
            if cvs.len() != frames.len() {
                return Err(CodecError::Invalid {
                    name: name.into(),
                    reason: "a decoding thread stopped".into(),
                });
            }
            Ok(cvs)
        },
    )
}

/// A chunk's index and its chaining value, or why it could not be opened
/// or written.
type OpenedChunk = (u64, Result<ChainingValue, CodecError>);

/// The threads of [`decode_parallel_at`] and what they share.
struct PositionalRun<'a> {
    frames: &'a [DataFrame],
    open: &'a OpenChunk<'a>,
    write_at: &'a WriteAt<'a>,
    cs: u64,
    threads: usize,
    chunk0: Chunk0Gate,
    /// The lowest chunk index that failed: chunks after it are skipped,
    /// chunks before it are still opened, so the error reported is the
    /// first bad chunk's.
    failed_at: AtomicU64,
}

impl PositionalRun<'_> {
    /// Thread `k`: opens and writes chunks k, k + threads, ... (thread 0
    /// starts with chunk 0).
    fn thread(&self, k: usize) -> Vec<OpenedChunk> {
        // Should thread 0 stop or panic before writing chunk 0, the others
        // must not wait for it.
        let _release = (k == 0).then(|| self.chunk0.release_on_drop());
        let (mut body, mut out) = (Vec::new(), Vec::new());
        let mut done = Vec::new();
        for f in self.frames.iter().skip(k).step_by(self.threads) {
            if f.index > self.failed_at.load(Ordering::Relaxed) {
                break;
            }
            let result =
                (self.open)(f, &mut body, std::mem::take(&mut out)).and_then(|(plain, cv)| {
                    if f.index != 0 && !self.chunk0.wait() {
                        return Ok(None);
                    }
                    let written = (self.write_at)(f.index * self.cs, &plain);
                    if f.index == 0 {
                        self.chunk0.release(written.is_ok());
                    }
                    written?;
                    out = plain;
                    Ok(Some(cv))
                });
            match result {
                Ok(Some(cv)) => done.push((f.index, Ok(cv))),
                // Chunk 0 failed: its error is the one reported.
                Ok(None) => break,
                Err(e) => {
                    if f.index == 0 {
                        self.chunk0.release(false);
                    }
                    self.failed_at.fetch_min(f.index, Ordering::Relaxed);
                    done.push((f.index, Err(e)));
                }
            }
        }
        done
    }
}

/// Holds back the writes of every chunk but chunk 0 until chunk 0 is
/// written (`true`) or has failed (`false`).
#[derive(Default)]
struct Chunk0Gate {
    state: std::sync::Mutex<Option<bool>>,
    changed: std::sync::Condvar,
}

impl Chunk0Gate {
    /// Decides the gate (the first decision stands) and wakes the waiters.
    fn release(&self, written: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.get_or_insert(written);
        self.changed.notify_all();
    }

    /// Waits for the decision: whether chunk 0 was written.
    fn wait(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(written) = *state {
                return written;
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn release_on_drop(&self) -> impl Drop + '_ {
        struct Release<'a>(&'a Chunk0Gate);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.release(false);
            }
        }
        Release(self)
    }
}

/// The frame of [`decode_parallel_at`]: the object's layout walked and
/// checked, `run` given its data chunks (with the function that opens one,
/// the thread count and the chunk size) to return their chaining values in
/// order, then the trailer checked against them. An object whose layout is
/// flawed, or too small to split, is decoded by [`decode_in_order`] into
/// `sink` instead, which reports every flaw exactly as it always does.
fn decode_chunks(
    name: &str,
    stored: &[u8],
    key: Option<Arc<Key>>,
    threads: usize,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), CodecError>,
    run: impl FnOnce(&[DataFrame], &OpenChunk<'_>, usize, u64) -> Result<Vec<ChainingValue>, CodecError>,
) -> Result<ObjectSummary, CodecError> {
    let n_data = match super::format::read_header(stored) {
        Ok(h) => h.data_chunks(),
        Err(_) => 0,
    };
    if threads < 2 || n_data < 2 {
        return decode_in_order(name, stored, key, sink);
    }
    let mut dec = ObjectDecoder::new(name, key.clone());
    let Some((frames, trailer)) = walk_frames(&mut dec, stored) else {
        return decode_in_order(name, stored, key, sink);
    };
    let (header_raw, header) = match &dec.header {
        Some((h, raw)) => (raw, h),
        None => return Err(dec.corrupt(0, "internal: no header".into())),
    };
    let cs = header.chunk_size();
    let plain_len = header.plain_len;
    let checksum_key = match (header.checksum, &key) {
        (ChecksumKind::Blake3, _) => None,
        (ChecksumKind::KeyedBlake3, Some(k)) => Some(content_id_key(k)),
        (ChecksumKind::KeyedBlake3, None) => {
            return Err(dec.corrupt(12, "keyed checksum without a key".into()))
        }
    };
    let checksum_key = checksum_key.as_ref();
    let cipher = dec.cipher.as_ref();
    let open = |f: &DataFrame,
                body: &mut Vec<u8>,
                mut out: Vec<u8>|
     -> Result<(Vec<u8>, ChainingValue), CodecError> {
        let plain = (plain_len - f.index * cs).min(cs) as usize;
        body.clear();
        body.extend_from_slice(&stored[f.body.clone()]);
        let payload = unseal(name, cipher, header_raw, f, body)?;
        // Resized, not cleared: every byte up to `plain` is overwritten.
        out.resize(plain, 0);
        inflate_exact(name, f.index, f.start, f.fh[0], payload, &mut out)?;
        let cv = tree_hash::chunk_cv(&out, f.index * cs, checksum_key);
        Ok((out, cv))
    };
    let threads = threads.min(frames.len());
    let cvs = run(&frames, &open, threads, cs)?;
    let computed = Checksum(*tree_hash::root_hash(&cvs, cs, plain_len, checksum_key).as_bytes());
    dec.index = trailer.index;
    dec.frame_start = trailer.start;
    dec.consumed = stored.len() as u64;
    dec.plain_done = plain_len;
    let mut body = stored[trailer.body.clone()].to_vec();
    let t = unseal(name, dec.cipher.as_ref(), header_raw, &trailer, &mut body)?;
    let t = t.to_vec();
    dec.on_trailer(&t, computed)?;
    dec.finish()
}
