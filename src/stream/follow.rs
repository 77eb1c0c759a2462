//! Encoding WAL from the spool file a chunk at a time, and the segment in
//! progress while it arrives.
//!
//! Without this the uploader started on a segment only once it was complete:
//! it read the 16 MiB back whole, compressed, encrypted and stored them in one
//! burst, and the flush position waited for all of it. The [`Follower`]
//! instead opens the segment's object (`IfAbsent`, as archive-push does) as
//! soon as the segment's first piece is in the spool, seals each codec chunk
//! as it fills, and streams the frames to storage. When the segment completes
//! only its last chunk, the commit of the object and the index entry remain.
//! Files already complete (`.ready` after an outage, `.partial` requests) go
//! the same way, a chunk at a time ([`push_from_spool`]).
//!
//! The object is what [`Repository::push_wal`] stores for the same content:
//! the same key, the codec's [`ObjectEncoder`] (which `encode_parallel`
//! reproduces byte for byte, salt aside), the same first-page check,
//! no-overwrite rule and index entry. It becomes visible only when the put is
//! finished, so a crash or a failure leaves nothing behind: the completed
//! segment is then pushed from the spool again.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::StreamError;
use crate::codec::{ObjectEncoder, ObjectSummary};
use crate::pg::wal::record::summarize_segment;
use crate::pg::wal::segment::{TimelineId, WalFileName, WalSegSize};
use crate::repo::wal::PushOutcome;
use crate::repo::{layout, Repository};
use crate::storage::{PutMode, PutStream};

/// Plaintext read from the spool and fed to the encoder at most at a time:
/// the codec's default chunk (1 MiB). The receiver announces the segment in
/// [`super::spool::WRITE_BATCH`] steps; the encoder keeps a partial chunk.
pub const FEED: u64 = 1 << 20;

/// The segment in progress as the receiver announces it to the uploader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    /// Its timeline.
    pub tli: TimelineId,
    /// Its segment number.
    pub segno: u64,
    /// Which spool file this is ([`super::spool::InProgress::generation`]):
    /// a segment dropped and started again is another file.
    pub generation: u64,
    /// Bytes written to the spool file so far.
    pub len: u64,
}

/// A WAL file's object being written from a spool file.
struct Encoding {
    name: WalFileName,
    key: String,
    path: PathBuf,
    /// Opened once: it keeps the same inode when renamed from `.inprogress`
    /// to `.ready`.
    file: File,
    plain_len: u64,
    encoder: ObjectEncoder,
    put: PutStream,
    /// Plaintext bytes fed to the encoder.
    fed: u64,
    buf: Vec<u8>,
}

fn read_at(file: &File, path: &Path, buf: &mut [u8], at: u64) -> Result<(), StreamError> {
    file.read_exact_at(buf, at).map_err(|e| StreamError::Spool {
        path: path.to_path_buf(),
        what: "cannot read WAL back from the spool".into(),
        source: e,
    })
}

fn storing(path: &Path) -> impl Fn(crate::storage::StorageError) -> StreamError + '_ {
    move |e| StreamError::repo(format!("storing {}", path.display()))(e.into())
}

impl Encoding {
    /// Opens the object of `name` (`plain_len` bytes from the spool file
    /// `path`, of which `available` are there) and encodes the first piece;
    /// `Ok(None)` when it cannot be done this way (the file is gone, or its
    /// first page fails the check that `push_wal` then reports).
    async fn start(
        repo: &Repository,
        seg_size: WalSegSize,
        name: WalFileName,
        path: PathBuf,
        plain_len: u64,
        available: u64,
    ) -> Result<Option<Encoding>, StreamError> {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StreamError::Spool {
                    path,
                    what: "cannot open".into(),
                    source: e,
                })
            }
        };
        let first = FEED.min(available).min(plain_len) as usize;
        let mut buf = vec![0u8; first];
        read_at(&file, &path, &mut buf, 0)?;
        let origin = path.display().to_string();
        if repo
            .check_segment_start(&name, &buf, plain_len, &origin)
            .is_err()
        {
            return Ok(None);
        }
        let key = layout::wal_object(&repo.stanza().name, &name, seg_size);
        let mode = match name {
            WalFileName::Partial { .. } => PutMode::Overwrite,
            _ => PutMode::IfAbsent,
        };
        let encoder = ObjectEncoder::new(&key, plain_len, repo.codec());
        let mut put = repo
            .storage()
            .put_stream(&key, mode)
            .await
            .map_err(storing(&path))?;
        if let Err(e) = put.write(Bytes::from(encoder.header())).await {
            put.abort().await;
            return Err(storing(&path)(e));
        }
        let mut enc = Encoding {
            name,
            key,
            path,
            file,
            plain_len,
            encoder,
            put,
            fed: 0,
            buf,
        };
        enc.push_buf().await?;
        Ok(Some(enc))
    }

    /// Encodes what `buf` holds and sends the frames to storage.
    async fn push_buf(&mut self) -> Result<(), StreamError> {
        let mut out = Vec::with_capacity(self.buf.len() + 64);
        self.encoder.push(&self.buf, &mut out);
        self.fed += self.buf.len() as u64;
        if !out.is_empty() {
            self.put
                .write(Bytes::from(out))
                .await
                .map_err(storing(&self.path))?;
        }
        Ok(())
    }

    /// Feeds what is below `len` bytes of the file, up to a chunk boundary
    /// (whole chunks are sealed from the read buffer without a copy) unless
    /// `len` is the end.
    async fn feed(&mut self, len: u64) -> Result<(), StreamError> {
        let mut len = len.min(self.plain_len);
        if len < self.plain_len {
            len -= len % FEED;
        }
        while self.fed < len {
            let n = FEED.min(len - self.fed) as usize;
            self.buf.resize(n, 0);
            read_at(&self.file, &self.path, &mut self.buf, self.fed)?;
            self.push_buf().await?;
        }
        Ok(())
    }

    /// Feeds the rest and commits the object. For a segment, its index entry
    /// is left to the caller ([`PendingIndex`]): the WAL is in the repository
    /// once the object is, and the flush position need not wait for the scan.
    async fn commit_object(
        mut self,
        repo: &Repository,
    ) -> Result<(PushOutcome, Option<PendingIndex>), StreamError> {
        self.feed(self.plain_len).await?;
        let ctx = format!("storing {}", self.path.display());
        let mut out = Vec::new();
        let summary: ObjectSummary = match self.encoder.finish(&mut out) {
            Ok(s) => s,
            Err(e) => {
                self.put.abort().await;
                return Err(StreamError::repo(ctx)(e.into()));
            }
        };
        self.put
            .write(Bytes::from(out))
            .await
            .map_err(storing(&self.path))?;
        let put_outcome = self.put.finish().await.map_err(storing(&self.path))?;
        let WalFileName::Segment { tli, segno } = self.name else {
            return Ok((PushOutcome::Stored, None));
        };
        let seg_size = repo
            .seg_size()
            .map_err(StreamError::repo("reading the stanza"))?;
        let file_name = self.name.file_name(seg_size);
        let checksum = summary.checksum.to_string();
        let outcome = repo
            .settle_wal_put(&self.key, &file_name, put_outcome, &checksum)
            .await
            .map_err(StreamError::repo(ctx))?;
        let index = PendingIndex {
            tli,
            segno,
            file_name,
            checksum,
            file: self.file,
            path: self.path,
            plain_len: self.plain_len,
        };
        Ok((outcome, Some(index)))
    }

    /// [`commit_object`](Self::commit_object), then the index entry.
    async fn commit(self, repo: &Repository) -> Result<PushOutcome, StreamError> {
        let (outcome, index) = self.commit_object(repo).await?;
        if let Some(index) = index {
            index.write(repo).await?;
        }
        Ok(outcome)
    }

    async fn abort(self) {
        self.put.abort().await;
    }
}

/// The index entry of a segment whose object is stored: the scan of its
/// records (commit times) and the entry itself. Until it is written the
/// segment's `.ready` spool file stays: after a failure or a crash the file
/// is pushed again, finds its identical object, and writes the entry then.
pub struct PendingIndex {
    tli: TimelineId,
    segno: u64,
    file_name: String,
    checksum: String,
    file: File,
    path: PathBuf,
    plain_len: u64,
}

impl PendingIndex {
    /// Scans the segment and writes its index entry.
    pub async fn write(self, repo: &Repository) -> Result<(), StreamError> {
        let seg_size = repo
            .seg_size()
            .map_err(StreamError::repo("reading the stanza"))?;
        // The index needs the whole segment (records span pages): mapped
        // from the page cache rather than copied. Safety: a `.ready` spool
        // file is only ever removed, never truncated or rewritten, and this
        // process holds the spool's lock.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .len(self.plain_len as usize)
                .map(&self.file)
        }
        .map_err(|e| StreamError::Spool {
            path: self.path.clone(),
            what: "cannot map WAL back from the spool".into(),
            source: e,
        })?;
        let carry = repo.crossing_into(self.tli, self.segno).await;
        let summary = summarize_segment(&map, seg_size, carry.as_ref()).map_err(|e| e.to_string());
        drop(map);
        repo.index_segment(
            self.tli,
            self.segno,
            &self.file_name,
            summary,
            self.checksum,
            self.plain_len,
        )
        .await
        .map_err(StreamError::repo(format!(
            "storing {}",
            self.path.display()
        )))
    }
}

/// Stores the first `len` bytes of the spool file `path` as `name`, encoded a
/// chunk at a time; `Ok(None)` when its first page does not pass the check
/// (the caller then lets `push_wal` say why) or the file is gone.
pub async fn push_from_spool(
    repo: &Repository,
    seg_size: WalSegSize,
    name: WalFileName,
    path: &Path,
    len: u64,
) -> Result<Option<PushOutcome>, StreamError> {
    match Encoding::start(repo, seg_size, name, path.to_path_buf(), len, len).await? {
        Some(enc) => enc.commit(repo).await.map(Some),
        None => Ok(None),
    }
}

/// The segment in progress, its object being written while it arrives.
pub struct Follower {
    /// The segment followed.
    pub tail: Tail,
    enc: Encoding,
}

impl Follower {
    /// Starts following `tail` (spool file `path`) once its first piece is
    /// there; `Ok(None)` when it cannot be followed (too short yet, the file
    /// is gone, its first page does not pass the check).
    pub async fn start(
        repo: &Repository,
        seg_size: WalSegSize,
        tail: Tail,
        path: PathBuf,
    ) -> Result<Option<Follower>, StreamError> {
        let seg_bytes = u64::from(seg_size.bytes());
        // A whole first chunk when the segment has more (no copy in the
        // encoder), else a first write batch (small test segments).
        let first = if seg_bytes > FEED {
            FEED
        } else {
            super::spool::WRITE_BATCH.min(seg_bytes)
        };
        if tail.len < first {
            return Ok(None);
        }
        let name = WalFileName::Segment {
            tli: tail.tli,
            segno: tail.segno,
        };
        Ok(
            Encoding::start(repo, seg_size, name, path, seg_bytes, first)
                .await?
                .map(|enc| Follower { tail, enc }),
        )
    }

    /// Plaintext bytes encoded so far.
    pub fn fed(&self) -> u64 {
        self.enc.fed
    }

    /// Feeds what is below `len` (the announced spool length).
    pub async fn feed(&mut self, len: u64) -> Result<(), StreamError> {
        self.enc.feed(len).await
    }

    /// The segment is complete (its `.ready` file is the same inode): seals
    /// the rest and commits the object; its index entry is left to write.
    pub async fn finish(
        self,
        repo: &Repository,
    ) -> Result<(PushOutcome, Option<PendingIndex>), StreamError> {
        self.enc.commit_object(repo).await
    }

    /// Gives up: nothing is stored.
    pub async fn abort(self) {
        self.enc.abort().await;
    }
}
