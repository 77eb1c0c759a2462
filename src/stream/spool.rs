//! The local durable spool of `walship stream`: the only local state.
//!
//! Layout of the spool directory:
//!
//! ```text
//! walship-stream.lock                 held (flock) while a streamer runs
//! <segment>.inprogress                the segment being received, from its first byte
//! <walfile>.ready                     finished, waiting for upload: a full segment,
//!                                     a `<segment>.partial` (end of a timeline) or a
//!                                     `<TLI>.history`
//! ```
//!
//! The in-progress file holds exactly the bytes received from the start of
//! its segment: its length is the write position. When it reaches the segment
//! size it is fsynced and renamed to `.ready`. Losing the spool costs only a
//! re-fetch: the flush position reported to PostgreSQL never passes what is
//! stored in the repository (or, with `--synchronous`, fsynced here).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::pg::wal::page::PageHeader;
use crate::pg::wal::segment::{segment_file_name, TimelineId, WalFileName, WalSegSize};
use crate::pg::wal::Lsn;

use super::StreamError;

/// Suffix of the segment being received.
const IN_PROGRESS: &str = ".inprogress";
/// Suffix of files waiting for upload.
const READY: &str = ".ready";
/// The lock file's name.
const LOCK_FILE: &str = "walship-stream.lock";
/// Received WAL is written to the spool file in pieces of this size, at
/// offsets that are multiples of it: one `write` per message (often a few
/// KiB under a busy OLTP load) made the spool the largest CPU cost.
pub const WRITE_BATCH: u64 = 256 << 10;

/// Tells spool files apart across the life of the process.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// The spool directory, locked for this process.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    seg_size: WalSegSize,
    _lock: File,
}

/// The segment being received.
#[derive(Debug)]
pub struct InProgress {
    /// Its timeline.
    pub tli: TimelineId,
    /// Its segment number.
    pub segno: u64,
    file: File,
    path: PathBuf,
    /// Bytes received from the segment start (in the file or in `pending`).
    len: u64,
    /// Bytes in the file.
    on_disk: u64,
    /// Received bytes not yet written to the file (less than [`WRITE_BATCH`]).
    pending: Vec<u8>,
    /// Bytes known to be fsynced.
    synced: u64,
    generation: u64,
}

fn io_err(path: &Path, what: &str, source: std::io::Error) -> StreamError {
    StreamError::Spool {
        path: path.to_path_buf(),
        what: what.to_string(),
        source,
    }
}

impl Spool {
    /// Opens (creating) the spool directory and locks it: two streamers on one
    /// spool would interleave their segments.
    pub fn open(dir: &Path, seg_size: WalSegSize) -> Result<Spool, StreamError> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, "cannot create the spool directory", e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, "cannot open the spool lock", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StreamError::SpoolBusy {
                    path: dir.to_path_buf(),
                })
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(io_err(&lock_path, "cannot lock the spool", e))
            }
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            seg_size,
            _lock: lock,
        })
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn sync_dir(&self) -> Result<(), StreamError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(&self.dir, "cannot fsync the spool directory", e))
    }

    /// Files waiting for upload, in upload order (by name: timeline, then
    /// history before segments, then segment number).
    pub fn ready_files(&self) -> Result<Vec<(WalFileName, PathBuf)>, StreamError> {
        Spool::list_ready_in(&self.dir, self.seg_size)
    }

    /// [`Spool::ready_files`] of a spool directory without holding its lock
    /// (the uploader, beside the receiver that holds it).
    pub fn list_ready_in(
        dir: &Path,
        seg_size: WalSegSize,
    ) -> Result<Vec<(WalFileName, PathBuf)>, StreamError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| io_err(dir, "cannot list the spool", e))? {
            let entry = entry.map_err(|e| io_err(dir, "cannot list the spool", e))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(READY)) else {
                continue;
            };
            match WalFileName::parse(stem, seg_size) {
                Ok(w) => out.push((w, entry.path())),
                Err(e) => tracing::warn!(file = %entry.path().display(), error = %e,
                    "ignoring a file in the spool that is not a WAL file"),
            }
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    /// Writes a small file (a timeline history) to the spool, durably, ready
    /// for upload.
    pub fn put_ready(&self, name: &WalFileName, data: &[u8]) -> Result<(), StreamError> {
        let file = name.file_name(self.seg_size);
        let tmp = self.dir.join(format!("{file}.tmp"));
        let dest = self.dir.join(format!("{file}{READY}"));
        (|| -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            fs::rename(&tmp, &dest)
        })()
        .map_err(|e| io_err(&dest, "cannot write", e))?;
        self.sync_dir()
    }

    /// Opens the segment left in progress by an earlier run, the newest when
    /// there are several (older ones, from a timeline switch cut short, become
    /// `.partial` uploads). Its content is checked page by page: it is cut
    /// back to the last page whose header is right, and to a page boundary,
    /// so a torn tail is fetched again rather than trusted.
    pub fn recover_in_progress(&self) -> Result<Option<InProgress>, StreamError> {
        let mut found: Vec<((TimelineId, u64), PathBuf)> = Vec::new();
        for entry in
            fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, "cannot list the spool", e))?
        {
            let entry = entry.map_err(|e| io_err(&self.dir, "cannot list the spool", e))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(IN_PROGRESS)) else {
                continue;
            };
            if let Ok(WalFileName::Segment { tli, segno }) = WalFileName::parse(stem, self.seg_size)
            {
                found.push(((tli, segno), entry.path()));
            }
        }
        found.sort_by(|a, b| a.1.cmp(&b.1));
        let Some((newest, path)) = found.pop() else {
            return Ok(None);
        };
        for (older, p) in found {
            let mut seg = self.open_existing(older, &p)?;
            self.seal(&mut seg)?;
        }
        let mut seg = self.open_existing(newest, &path)?;
        let good = self.valid_prefix(&mut seg)?;
        if good < seg.len {
            tracing::info!(file = %path.display(), from = seg.len, to = good,
                "cutting the spooled segment back to its last verified page");
            seg.file
                .set_len(good)
                .map_err(|e| io_err(&path, "cannot truncate", e))?;
            seg.file
                .sync_all()
                .map_err(|e| io_err(&path, "cannot fsync", e))?;
            seg.len = good;
            seg.on_disk = good;
            seg.synced = good;
        }
        if seg.len == u64::from(self.seg_size.bytes()) {
            self.complete(&mut seg)?;
            return Ok(None);
        }
        Ok(Some(seg))
    }

    fn open_existing(
        &self,
        (tli, segno): (TimelineId, u64),
        path: &Path,
    ) -> Result<InProgress, StreamError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io_err(path, "cannot open", e))?;
        let len = file
            .metadata()
            .map_err(|e| io_err(path, "cannot stat", e))?
            .len()
            .min(u64::from(self.seg_size.bytes()));
        Ok(InProgress {
            tli,
            segno,
            file,
            path: path.to_path_buf(),
            len,
            on_disk: len,
            pending: Vec::new(),
            synced: 0,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The length of the prefix of `seg` whose pages carry the right header,
    /// rounded down to a page boundary unless the whole file checks out.
    fn valid_prefix(&self, seg: &mut InProgress) -> Result<u64, StreamError> {
        let mut data = Vec::new();
        seg.file
            .seek(SeekFrom::Start(0))
            .and_then(|_| (&seg.file).read_to_end(&mut data))
            .map_err(|e| io_err(&seg.path, "cannot read", e))?;
        data.truncate(seg.len as usize);
        let Ok(first) = PageHeader::parse(&data) else {
            return Ok(0);
        };
        let Some(long) = first.long else {
            return Ok(0);
        };
        let page = u64::from(long.xlog_blcksz).max(1024);
        let base = Lsn::from_segment(seg.segno, self.seg_size);
        let mut off = 0u64;
        while off < data.len() as u64 {
            let end = (off + page).min(data.len() as u64);
            let ok = PageHeader::parse(&data[off as usize..end as usize])
                .map(|h| h.pageaddr == base + off)
                .unwrap_or(false);
            if !ok {
                return Ok(off);
            }
            off += page;
        }
        // The last page may be torn: fetch it again.
        let len = data.len() as u64;
        Ok(len - len % page)
    }

    /// Starts a new in-progress segment (truncating any leftover of that name).
    pub fn create(&self, tli: TimelineId, segno: u64) -> Result<InProgress, StreamError> {
        let path = self.dir.join(format!(
            "{}{IN_PROGRESS}",
            segment_file_name(tli, segno, self.seg_size)
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io_err(&path, "cannot create", e))?;
        self.sync_dir()?;
        Ok(InProgress {
            tli,
            segno,
            file,
            path,
            len: 0,
            on_disk: 0,
            pending: Vec::new(),
            synced: 0,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Starts an in-progress segment from a prefix already known (a `.partial`
    /// from the repository), fsynced.
    pub fn create_with(
        &self,
        tli: TimelineId,
        segno: u64,
        prefix: &[u8],
    ) -> Result<InProgress, StreamError> {
        let mut seg = self.create(tli, segno)?;
        self.write(&mut seg, prefix)?;
        self.sync(&mut seg)?;
        Ok(seg)
    }

    /// Appends WAL to the in-progress segment: buffered, written to the file
    /// at each [`WRITE_BATCH`] boundary (see [`Spool::flush`] for the rest).
    /// On a failed write (a full disk) the file is cut back to what it held
    /// before and what was buffered is dropped: [`InProgress::len`] falls
    /// back to what the file holds, so it never holds a torn write.
    pub fn write(&self, seg: &mut InProgress, mut data: &[u8]) -> Result<(), StreamError> {
        while !data.is_empty() {
            let room = WRITE_BATCH - seg.len % WRITE_BATCH;
            let take = room.min(data.len() as u64) as usize;
            if seg.pending.capacity() == 0 {
                seg.pending.reserve_exact(WRITE_BATCH as usize);
            }
            seg.pending.extend_from_slice(&data[..take]);
            seg.len += take as u64;
            data = &data[take..];
            if seg.len.is_multiple_of(WRITE_BATCH) {
                self.flush(seg)?;
            }
        }
        Ok(())
    }

    /// Writes what is buffered to the file (not fsynced).
    pub fn flush(&self, seg: &mut InProgress) -> Result<(), StreamError> {
        if seg.pending.is_empty() {
            return Ok(());
        }
        if let Err(e) = seg.file.write_all_at(&seg.pending, seg.on_disk) {
            let _ = seg.file.set_len(seg.on_disk);
            seg.pending.clear();
            seg.len = seg.on_disk;
            return Err(io_err(&seg.path, "cannot write WAL to the spool", e));
        }
        // The fsync when the segment completes then waits for the last batch
        // only: the flush position moves that much sooner.
        crate::storage::writeback::start(&seg.file, seg.on_disk, seg.pending.len() as u64);
        seg.on_disk = seg.len;
        seg.pending.clear();
        Ok(())
    }

    /// Writes what is buffered and fsyncs the in-progress segment.
    pub fn sync(&self, seg: &mut InProgress) -> Result<(), StreamError> {
        if seg.synced == seg.len {
            return Ok(());
        }
        self.flush(seg)?;
        seg.file
            .sync_data()
            .map_err(|e| io_err(&seg.path, "cannot fsync", e))?;
        seg.synced = seg.len;
        Ok(())
    }

    /// A finished segment: fsynced and renamed to `.ready`.
    pub fn complete(&self, seg: &mut InProgress) -> Result<(), StreamError> {
        self.sync(seg)?;
        let name = WalFileName::Segment {
            tli: seg.tli,
            segno: seg.segno,
        };
        let dest = self
            .dir
            .join(format!("{}{READY}", name.file_name(self.seg_size)));
        fs::rename(&seg.path, &dest).map_err(|e| io_err(&seg.path, "cannot rename", e))?;
        self.sync_dir()
    }

    /// The segment ended early (end of a timeline, or an older leftover):
    /// it becomes a `.partial` waiting for upload; an empty one is removed.
    pub fn seal(&self, seg: &mut InProgress) -> Result<(), StreamError> {
        if seg.len == 0 {
            fs::remove_file(&seg.path).map_err(|e| io_err(&seg.path, "cannot remove", e))?;
            return self.sync_dir();
        }
        self.sync(seg)?;
        let name = WalFileName::Partial {
            tli: seg.tli,
            segno: seg.segno,
        };
        let dest = self
            .dir
            .join(format!("{}{READY}", name.file_name(self.seg_size)));
        fs::rename(&seg.path, &dest).map_err(|e| io_err(&seg.path, "cannot rename", e))?;
        self.sync_dir()
    }

    /// Drops a segment in progress that is no longer wanted (the repository
    /// or the server is ahead of it).
    pub fn discard(&self, seg: InProgress) -> Result<(), StreamError> {
        fs::remove_file(&seg.path).map_err(|e| io_err(&seg.path, "cannot remove", e))?;
        self.sync_dir()
    }

    /// Reads the first `len` bytes of the in-progress segment `(tli, segno)`;
    /// `None` when it is no longer in progress (completed meanwhile).
    pub fn read_in_progress(
        &self,
        tli: TimelineId,
        segno: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, StreamError> {
        let path = self.dir.join(format!(
            "{}{IN_PROGRESS}",
            segment_file_name(tli, segno, self.seg_size)
        ));
        read_prefix(&path, len)
    }

    /// Removes an uploaded file.
    pub fn remove(&self, path: &Path) -> Result<(), StreamError> {
        fs::remove_file(path).map_err(|e| io_err(path, "cannot remove", e))
    }
}

/// Reads up to `len` bytes of `path`; `None` when the file does not exist.
pub fn read_prefix(path: &Path, len: u64) -> Result<Option<Vec<u8>>, StreamError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, "cannot open", e)),
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut data = Vec::with_capacity(len.min(size) as usize);
    file.take(len)
        .read_to_end(&mut data)
        .map_err(|e| io_err(path, "cannot read", e))?;
    Ok(Some(data))
}

impl InProgress {
    /// Bytes received from the segment start.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was received yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes fsynced from the segment start.
    pub fn synced(&self) -> u64 {
        self.synced
    }

    /// Bytes in the spool file (the rest of [`len`](Self::len) is buffered).
    pub fn on_disk(&self) -> u64 {
        self.on_disk
    }

    /// Tells this spool file from any other, even of the same segment.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The WAL position right after the received bytes.
    pub fn end(&self, seg_size: WalSegSize) -> Lsn {
        Lsn::from_segment(self.segno, seg_size) + self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg_size() -> WalSegSize {
        WalSegSize::new(1 << 20).unwrap()
    }

    #[test]
    fn second_streamer_on_the_same_spool_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Spool::open(dir.path(), seg_size()).unwrap();
        let b = Spool::open(dir.path(), seg_size());
        assert!(matches!(b, Err(StreamError::SpoolBusy { .. })), "{b:?}");
    }

    #[test]
    fn complete_and_seal_make_ready_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), seg_size()).unwrap();
        let mut a = spool.create(1, 3).unwrap();
        spool.write(&mut a, b"abc").unwrap();
        spool.seal(&mut a).unwrap();
        spool
            .put_ready(&WalFileName::History { tli: 2 }, b"1\t0/300000\tx\n")
            .unwrap();
        let mut b = spool.create(2, 3).unwrap();
        spool.complete(&mut b).unwrap();
        let names: Vec<String> = spool
            .ready_files()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n.file_name(seg_size()))
            .collect();
        assert_eq!(
            names,
            [
                "000000010000000000000003.partial",
                "00000002.history",
                "000000020000000000000003"
            ]
        );
    }

    #[test]
    fn writes_are_batched_at_batch_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), seg_size()).unwrap();
        let mut a = spool.create(1, 3).unwrap();
        spool.write(&mut a, &[1u8; 1000]).unwrap();
        assert_eq!((a.len(), a.on_disk()), (1000, 0));
        spool
            .write(&mut a, &vec![2u8; WRITE_BATCH as usize])
            .unwrap();
        assert_eq!((a.len(), a.on_disk()), (WRITE_BATCH + 1000, WRITE_BATCH));
        spool.flush(&mut a).unwrap();
        assert_eq!(a.on_disk(), a.len());
        let on_file = std::fs::read(a.path()).unwrap();
        assert_eq!(on_file.len() as u64, WRITE_BATCH + 1000);
        assert!(on_file[..1000].iter().all(|&b| b == 1));
        assert!(on_file[1000..].iter().all(|&b| b == 2));
        let b = spool.create(1, 4).unwrap();
        assert_ne!(a.generation(), b.generation());
    }

    #[test]
    fn garbage_in_progress_is_cut_back() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), seg_size()).unwrap();
        let mut a = spool.create(1, 3).unwrap();
        spool.write(&mut a, &[0u8; 5000]).unwrap();
        drop(a);
        let again = spool.recover_in_progress().unwrap().unwrap();
        assert_eq!(again.len(), 0);
        assert_eq!((again.tli, again.segno), (1, 3));
    }
}
