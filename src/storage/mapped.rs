//! Whole-file reads for the hot paths (a 16 MiB WAL segment in archive-push, a
//! stored object in archive-get): a file of a MiB or more is memory-mapped
//! rather than read into fresh heap memory, which the kernel would have to
//! zero and charge page by page before copying the page cache into it. That
//! copy and those page faults were a third of archive-push's CPU time.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use bytes::Bytes;

/// Files below this size are read: mapping costs more than it saves.
const MAP_AT_LEAST: u64 = 1 << 20;

/// Reads the whole regular file `file` (opened from `path`, named in errors by
/// the caller). Only for files nobody rewrites in place: WAL segments that
/// PostgreSQL hands to archive_command, and repository objects (written once,
/// published by rename). A file truncated by someone else while mapped would
/// fault the reader (SIGBUS) rather than return short data.
pub fn read_whole(mut file: File, len: u64, path: &Path) -> std::io::Result<Bytes> {
    if len >= MAP_AT_LEAST {
        // SAFETY: see above: the files mapped here are never modified in place
        // while they are read; the mapping is read-only and private.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }?;
        if map.len() as u64 != len {
            return Err(std::io::Error::other(format!(
                "{}: changed size while being read",
                path.display()
            )));
        }
        return Ok(Bytes::from_owner(map));
    }
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.read_to_end(&mut data)?;
    Ok(Bytes::from(data))
}

/// [`read_whole`] of the file at `path`.
pub fn read_file(path: &Path) -> std::io::Result<Bytes> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    read_whole(file, len, path)
}
