//! Starting write-back of a file's dirty pages early, so that the `fsync`
//! that makes the file durable at the end finds little left to write.
//!
//! WAL is made durable a segment at a time, and the time from "complete" to
//! "durable" is how far the flush position reported to PostgreSQL trails.
//! Written back as it arrives, a segment's final fsync waits for the last
//! piece instead of all 16 MiB. The pages are written once either way.

use std::fs::File;
use std::os::fd::AsRawFd;

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to disk
/// without waiting. Only a hint: errors are left to the later fsync, which
/// reports them.
pub fn start(file: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a system call on a file descriptor `file` keeps open.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}
