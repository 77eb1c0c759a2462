//! Pushing and fetching WAL files: the rules of archive-push and archive-get
//! that do not depend on where the file comes from (archive_command or the
//! streamer) or goes to (pg_wal, a spool).
//!
//! A segment is stored with `IfAbsent`, so it is never overwritten: when the
//! name is taken, the stored content is decoded and compared, identical is a
//! no-op ([`PushOutcome::Duplicate`]) and different is [`RepoError::WalConflict`].
//! Only `.partial` objects are replaced, because they grow.

use bytes::Bytes;

use super::index::WalIndexEntry;
use super::{layout, RepoError, Repository};
use crate::codec;
use crate::pg::wal::page::parse_segment_start;
use crate::pg::wal::record::{summarize_segment, CrossingRecord, SegmentSummary};
use crate::pg::wal::segment::{
    parse_timeline_history, segment_file_name, TimelineId, WalFileName, WalSegSize,
};
use crate::pg::wal::Lsn;
use crate::storage::{PutMode, PutOutcome};

/// What happened to a pushed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Newly stored (durably).
    Stored,
    /// The same content was already stored: nothing written.
    Duplicate,
}

/// BLAKE3 of a WAL file's content, as hex: the identity used for duplicates.
pub fn content_checksum(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

impl Repository {
    /// The segment size of this stanza.
    pub fn seg_size(&self) -> Result<WalSegSize, RepoError> {
        WalSegSize::new(self.stanza().wal_seg_size).map_err(|e| RepoError::StanzaCorrupt {
            key: layout::stanza_file(&self.stanza().name),
            reason: e.to_string(),
        })
    }

    /// Checks that a segment (or partial) belongs to this stanza's cluster and
    /// sits where its name says. `origin` names the file for errors.
    pub fn check_segment(
        &self,
        name: &WalFileName,
        data: &[u8],
        origin: &str,
    ) -> Result<(), RepoError> {
        self.check_segment_start(name, data, data.len() as u64, origin)
    }

    /// As [`check_segment`](Self::check_segment) from the file's first bytes
    /// (at least its first page) and its total length, for content that
    /// streams through.
    pub fn check_segment_start(
        &self,
        name: &WalFileName,
        data: &[u8],
        total_len: u64,
        origin: &str,
    ) -> Result<(), RepoError> {
        check_segment_start_for(self.stanza(), name, data, total_len, origin)
    }

    /// Stores one WAL file (already read into memory) under its name.
    pub async fn push_wal(
        &self,
        name: &WalFileName,
        data: Bytes,
        origin: &str,
    ) -> Result<PushOutcome, RepoError> {
        let seg_size = self.seg_size()?;
        self.check_segment(name, &data, origin)?;
        let key = layout::wal_object(&self.stanza().name, name, seg_size);
        let file = name.file_name(seg_size);
        let mode = match name {
            WalFileName::Partial { .. } => PutMode::Overwrite,
            _ => PutMode::IfAbsent,
        };
        // The index scan (record CRCs, commit times), and the read of the
        // previous entry it needs, run beside the encoding and the put.
        let scan = async {
            let WalFileName::Segment { tli, segno } = *name else {
                return None;
            };
            let carry = self.crossing_into(tli, segno).await;
            let data = data.clone();
            let scanned = tokio::task::spawn_blocking(move || {
                summarize_segment(&data, seg_size, carry.as_ref()).map_err(|e| e.to_string())
            })
            .await;
            Some((tli, segno, scanned))
        };
        let (put, scan) = tokio::join!(self.put_encoded(&key, data.clone(), mode), scan);
        let (put_outcome, summary) = put?;
        // The codec's checksum is BLAKE3 of the plaintext: the same identity
        // as `content_checksum`, without hashing the segment twice.
        let checksum = summary.checksum.to_string();
        let outcome = self
            .settle_wal_put(&key, &file, put_outcome, &checksum)
            .await?;
        if let Some((tli, segno, scanned)) = scan {
            let summary = scanned
                .map_err(|e| format!("the index scan failed: {e}"))
                .and_then(|s| s);
            self.index_segment(tli, segno, &file, summary, checksum, data.len() as u64)
                .await?;
        }
        Ok(outcome)
    }

    /// What a finished put of the WAL object `key` (file `file`, plaintext
    /// BLAKE3 `checksum`) means: stored; or already there with identical
    /// content (a duplicate, fine); or already there with other content (a
    /// conflict: never overwritten, both checksums named).
    pub async fn settle_wal_put(
        &self,
        key: &str,
        file: &str,
        put: PutOutcome,
        checksum: &str,
    ) -> Result<PushOutcome, RepoError> {
        if put == PutOutcome::Stored {
            return Ok(PushOutcome::Stored);
        }
        let Some((plain, _)) = self.get_object(key).await? else {
            return Err(RepoError::BadMetadata {
                key: key.to_string(),
                reason: "existed, then vanished during the push".into(),
            });
        };
        let stored = content_checksum(&plain);
        if stored != checksum {
            return Err(RepoError::WalConflict {
                name: file.to_string(),
                stored,
                new: checksum.to_string(),
            });
        }
        Ok(PushOutcome::Duplicate)
    }

    /// The start of the record that crosses from segment `segno - 1` into
    /// `segno` on `tli`, from the previous segment's index entry (remembered
    /// when this process wrote it, else read), for the scan of `segno`
    /// ([`summarize_segment`]). `None` when there is none or
    /// it cannot be read: the index then misses that one record, and a push
    /// never fails for its neighbour's entry.
    pub async fn crossing_into(&self, tli: TimelineId, segno: u64) -> Option<CrossingRecord> {
        let prev = segno.checked_sub(1)?;
        if let Some((_, _, crossing)) = self
            .last_indexed
            .lock()
            .ok()
            .and_then(|last| last.clone())
            .filter(|(t, s, _)| (*t, *s) == (tli, prev))
        {
            return crossing;
        }
        let file = segment_file_name(tli, prev, self.seg_size().ok()?);
        match self.get_index(tli, &file).await {
            Ok(entry) => entry.and_then(|e| e.crossing),
            Err(e) => {
                tracing::debug!(%file, error = %e, "previous index entry unreadable: its crossing record is not indexed");
                None
            }
        }
    }

    /// Writes the index entry of a stored segment from its record scan (a
    /// segment whose records do not decode is stored, and said so, unindexed).
    pub async fn index_segment(
        &self,
        tli: TimelineId,
        segno: u64,
        file: &str,
        summary: Result<SegmentSummary, String>,
        checksum: String,
        len: u64,
    ) -> Result<(), RepoError> {
        if let Err(reason) = &summary {
            tracing::warn!(file = %file, %reason, "WAL records not decodable; stored as is, not indexed");
        }
        let seg_size = self.seg_size()?;
        let entry = WalIndexEntry::new(
            file,
            tli,
            Lsn::from_segment(segno, seg_size),
            summary,
            checksum,
            len,
        );
        self.put_index(&entry).await?;
        if let Ok(mut last) = self.last_indexed.lock() {
            *last = Some((tli, segno, entry.crossing));
        }
        Ok(())
    }

    /// Encodes `plain` on every core (chunks are independent) and streams the
    /// frames to storage as they are sealed, so the encoded object is never
    /// held whole: memory stays at the plaintext plus a few chunks.
    async fn put_encoded(
        &self,
        key: &str,
        plain: Bytes,
        mode: PutMode,
    ) -> Result<(PutOutcome, codec::ObjectSummary), RepoError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let settings = self.codec().clone();
        let name = key.to_string();
        let encoder = tokio::task::spawn_blocking(move || {
            let threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4);
            codec::encode_parallel(&name, &plain, &settings, threads, &mut |frame| {
                tx.blocking_send(Bytes::from(frame))
                    .map_err(|_| codec::CodecError::Invalid {
                        name: name.clone(),
                        reason: "the storage writer stopped".into(),
                    })
            })
        });
        let mut put = self.storage().put_stream(key, mode).await?;
        let mut write_error = None;
        while let Some(frame) = rx.recv().await {
            if let Err(e) = put.write(frame).await {
                write_error = Some(e);
                break;
            }
        }
        drop(rx);
        let encoded = encoder.await.map_err(|e| RepoError::BadMetadata {
            key: key.to_string(),
            reason: format!("the encoding task failed: {e}"),
        })?;
        if let Some(e) = write_error {
            put.abort().await;
            return Err(e.into());
        }
        let summary = match encoded {
            Ok(summary) => summary,
            Err(e) => {
                put.abort().await;
                return Err(e.into());
            }
        };
        Ok((put.finish().await?, summary))
    }

    /// Writes (or rewrites) a segment's index entry.
    pub async fn put_index(&self, entry: &WalIndexEntry) -> Result<(), RepoError> {
        let key = layout::wal_index_object(&self.stanza().name, entry.timeline, &entry.file);
        let json = serde_json::to_vec(entry).map_err(|e| RepoError::BadMetadata {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        self.put_object(&key, &json, PutMode::Overwrite).await?;
        Ok(())
    }

    /// Reads a segment's index entry; `None` when it has none.
    pub async fn get_index(
        &self,
        tli: u32,
        file: &str,
    ) -> Result<Option<WalIndexEntry>, RepoError> {
        let key = layout::wal_index_object(&self.stanza().name, tli, file);
        let Some((json, _)) = self.get_object(&key).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&json)
            .map(Some)
            .map_err(|e| RepoError::BadMetadata {
                key,
                reason: e.to_string(),
            })
    }

    /// For recovery to the latest point (`archive-get --allow-partial`): the
    /// stored `.partial` of segment `segno` on `tli`, zero-padded to the
    /// segment size, only when no full segment of that name exists and it is
    /// the last segment of its timeline: no full segment after it on `tli`,
    /// and no higher timeline branching off `tli` before its end (a higher
    /// timeline without a readable history file counts as branching). `None`
    /// otherwise. A partial object holds the written prefix of its segment;
    /// PostgreSQL reads the zeros after it as the end of the WAL.
    pub async fn fetch_partial_as_segment(
        &self,
        tli: TimelineId,
        segno: u64,
    ) -> Result<Option<Vec<u8>>, RepoError> {
        let seg_size = self.seg_size()?;
        let catalog = super::catalog::WalCatalog::load(self).await?;
        let Some(files) = catalog.timelines.get(&tli) else {
            return Ok(None);
        };
        if !files.partials.contains_key(&segno) || files.segments.range(segno..).next().is_some() {
            return Ok(None);
        }
        let seg_end = Lsn::from_segment(segno + 1, seg_size);
        for (&higher, _) in catalog.timelines.range(tli + 1..) {
            let history = WalFileName::History { tli: higher };
            let Some(text) = self.fetch_wal(&history).await? else {
                tracing::info!(
                    timeline = higher,
                    "a higher timeline has no history file: not using the .partial"
                );
                return Ok(None);
            };
            let entries = parse_timeline_history(&String::from_utf8_lossy(&text)).map_err(|e| {
                RepoError::BadWalFile {
                    path: layout::wal_object(&self.stanza().name, &history, seg_size),
                    reason: e.to_string(),
                }
            })?;
            if entries
                .iter()
                .any(|e| e.parent_tli == tli && e.switch_lsn < seg_end)
            {
                return Ok(None);
            }
        }
        let partial = WalFileName::Partial { tli, segno };
        let Some(mut data) = self.fetch_wal(&partial).await? else {
            return Ok(None);
        };
        if data.len() > seg_size.bytes() as usize {
            return Err(RepoError::BadWalFile {
                path: layout::wal_object(&self.stanza().name, &partial, seg_size),
                reason: format!(
                    "{} bytes, more than a segment ({} bytes)",
                    data.len(),
                    seg_size.bytes()
                ),
            });
        }
        data.resize(seg_size.bytes() as usize, 0);
        Ok(Some(data))
    }

    /// Fetches the stored (still encoded) object of a WAL file, for
    /// [`decode_wal_to_file`](Self::decode_wal_to_file); `None` when it does
    /// not exist.
    pub async fn fetch_wal_object(&self, name: &WalFileName) -> Result<Option<Bytes>, RepoError> {
        let key = layout::wal_object(&self.stanza().name, name, self.seg_size()?);
        Ok(self.storage().get_bytes(&key).await?)
    }

    /// Decodes a stored WAL object into `file` (from offset 0) on up to four
    /// threads, each writing the chunks it decoded at their offsets, with the
    /// verification of [`fetch_wal`](Self::fetch_wal): authenticity and
    /// checksum by the codec, the first page and the length against the
    /// stanza (checked before anything is written). On an error, what was
    /// written is not to be used. Returns the plaintext length.
    pub fn decode_wal_to_file(
        &self,
        name: &WalFileName,
        stored: &[u8],
        file: &std::fs::File,
    ) -> Result<u64, RepoError> {
        use std::os::unix::fs::FileExt;
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4);
        let key = layout::wal_object(&self.stanza().name, name, self.seg_size()?);
        let gate = std::sync::Mutex::new(FirstPageGate::new(stored, &key)?);
        let failure = std::sync::Mutex::new(None);
        let write_at = |offset: u64, plain: &[u8]| {
            let written = (|| {
                let mut gate = gate.lock().unwrap_or_else(|e| e.into_inner());
                let (offset, bytes) = match gate.pass(self, name, plain)? {
                    Passed::Now => (offset, std::borrow::Cow::Borrowed(plain)),
                    Passed::WithHead(head) => (0, std::borrow::Cow::Owned(head)),
                    Passed::HeldBack => return Ok(()),
                };
                drop(gate);
                file.write_all_at(&bytes, offset)
                    .map_err(|source| RepoError::Output {
                        key: key.clone(),
                        source,
                    })
            })();
            written.map_err(|e| stop_output(&failure, &key, e))
        };
        let decoded =
            codec::decode_parallel_at(&key, stored, self.codec().key.clone(), threads, &write_at);
        if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        let summary = decoded?;
        let gate = gate.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(head) = gate.finish(self, name, summary.plain_len)? {
            file.write_all_at(&head, 0)
                .map_err(|source| RepoError::Output { key, source })?;
        }
        Ok(summary.plain_len)
    }

    /// Decodes a stored WAL object into `out` in order, on the calling thread,
    /// with the verification of [`decode_wal_to_file`](Self::decode_wal_to_file).
    /// Memory: a chunk, not the segment.
    pub fn decode_wal_into(
        &self,
        name: &WalFileName,
        stored: &[u8],
        out: &mut dyn std::io::Write,
    ) -> Result<u64, RepoError> {
        let key = layout::wal_object(&self.stanza().name, name, self.seg_size()?);
        let mut gate = FirstPageGate::new(stored, &key)?;
        let failure = std::sync::Mutex::new(None);
        let decoded =
            codec::decode_in_order(&key, stored, self.codec().key.clone(), &mut |plain| {
                let written = match gate.pass(self, name, plain) {
                    Ok(Passed::Now) => out.write_all(plain),
                    Ok(Passed::WithHead(head)) => out.write_all(&head),
                    Ok(Passed::HeldBack) => Ok(()),
                    Err(e) => return Err(stop_output(&failure, &key, e)),
                };
                written.map_err(|source| {
                    let e = RepoError::Output {
                        key: key.clone(),
                        source,
                    };
                    stop_output(&failure, &key, e)
                })
            });
        if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        let summary = decoded?;
        if let Some(head) = gate.finish(self, name, summary.plain_len)? {
            out.write_all(&head)
                .map_err(|source| RepoError::Output { key, source })?;
        }
        Ok(summary.plain_len)
    }

    pub async fn fetch_wal(&self, name: &WalFileName) -> Result<Option<Vec<u8>>, RepoError> {
        let seg_size = self.seg_size()?;
        let key = layout::wal_object(&self.stanza().name, name, seg_size);
        let Some((data, _)) = self.get_object(&key).await? else {
            return Ok(None);
        };
        self.check_segment(name, &data, &key)?;
        Ok(Some(data))
    }
}

/// Holds back the start of a segment being decoded until its first page
/// (8 KiB, or all of a smaller object) has been checked against the stanza:
/// nothing of a segment that is not what its name says is written. Until
/// then the plaintext arrives in order from offset 0 (the decoders write
/// chunk 0 before any other).
struct FirstPageGate {
    key: String,
    total: u64,
    head: Vec<u8>,
    checked: bool,
}

/// What [`FirstPageGate::pass`] lets through.
enum Passed {
    /// The first page was checked earlier: write this piece where it goes.
    Now,
    /// The first page checks out with this piece: write all held back so
    /// far (it starts at offset 0).
    WithHead(Vec<u8>),
    /// Not enough for the first page yet: nothing to write.
    HeldBack,
}

impl FirstPageGate {
    fn new(stored: &[u8], key: &str) -> Result<FirstPageGate, RepoError> {
        Ok(FirstPageGate {
            key: key.to_string(),
            total: codec::read_header(stored)?.plain_len,
            head: Vec::new(),
            checked: false,
        })
    }

    fn pass(
        &mut self,
        repo: &Repository,
        name: &WalFileName,
        plain: &[u8],
    ) -> Result<Passed, RepoError> {
        if self.checked {
            return Ok(Passed::Now);
        }
        self.head.extend_from_slice(plain);
        if self.head.is_empty() || (self.head.len() as u64) < self.total.min(8192) {
            return Ok(Passed::HeldBack);
        }
        self.checked = true;
        repo.check_segment_start(name, &self.head, self.total, &self.key)?;
        Ok(Passed::WithHead(std::mem::take(&mut self.head)))
    }

    /// After a successful decode: what is still held back (an object shorter
    /// than a page, or empty), checked with the object's real length.
    fn finish(
        self,
        repo: &Repository,
        name: &WalFileName,
        plain_len: u64,
    ) -> Result<Option<Vec<u8>>, RepoError> {
        if self.checked {
            return Ok(None);
        }
        repo.check_segment_start(name, &self.head, plain_len, &self.key)?;
        Ok(Some(self.head))
    }
}

/// Keeps the first output error (the real cause) for the caller, and tells
/// the decoder to stop.
fn stop_output(
    failure: &std::sync::Mutex<Option<RepoError>>,
    key: &str,
    e: RepoError,
) -> codec::CodecError {
    let mut slot = failure.lock().unwrap_or_else(|e| e.into_inner());
    slot.get_or_insert(e);
    codec::CodecError::Invalid {
        name: key.to_string(),
        reason: "output stopped".into(),
    }
}

/// [`Repository::check_segment_start`] against a stanza held apart from its
/// repository (the prefetch spool keeps a copy of it).
pub fn check_segment_start_for(
    stanza: &super::stanza::Stanza,
    name: &WalFileName,
    data: &[u8],
    total_len: u64,
    origin: &str,
) -> Result<(), RepoError> {
    let seg_size = WalSegSize::new(stanza.wal_seg_size).map_err(|e| RepoError::StanzaCorrupt {
        key: layout::stanza_file(&stanza.name),
        reason: e.to_string(),
    })?;
    let (tli, segno) = match name {
        WalFileName::Segment { tli, segno } | WalFileName::Partial { tli, segno } => (*tli, *segno),
        _ => return Ok(()),
    };
    let bad = |reason: String| RepoError::BadWalFile {
        path: origin.to_string(),
        reason,
    };
    if matches!(name, WalFileName::Segment { .. }) && total_len != u64::from(seg_size.bytes()) {
        return Err(bad(format!(
            "is {} bytes, but this stanza's WAL segments are {} bytes",
            total_len,
            seg_size.bytes()
        )));
    }
    let start = parse_segment_start(data).map_err(|e| bad(format!("not a WAL segment: {e}")))?;
    let identity = super::ClusterIdentity {
        system_id: start.system_id,
        pg_version: start.pg_major.unwrap_or(0) * 10000,
        wal_seg_size: start.seg_size,
    };
    super::check_identity(stanza, &identity, origin)?;
    let expected = Lsn::from_segment(segno, seg_size);
    if start.pageaddr != expected {
        return Err(bad(format!(
            "its first page is for LSN {} but its name says {}",
            start.pageaddr, expected
        )));
    }
    if start.tli > tli {
        return Err(bad(format!(
            "its first page is on timeline {} but its name says {}",
            start.tli, tli
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_checksum_is_the_content_checksum() {
        let data = b"some WAL-ish bytes".repeat(1000);
        let (_, summary) =
            codec::encode_bytes("x", &data, &codec::CodecSettings::default()).unwrap();
        assert_eq!(summary.checksum.to_string(), content_checksum(&data));
    }
}
