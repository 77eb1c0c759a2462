//! Cutting a file's stream into chunks: at every multiple of
//! [`CHUNK_SIZE`] from the file's start (so an unchanged page lands in the
//! same chunk every time). The file's CRC-32C is the server manifest
//! checker's ([`crate::pg::backup_manifest::FileChecker`]): one pass, not two.

use bytes::{Bytes, BytesMut};

use crate::repo::chunks::CHUNK_SIZE;

/// The state of the file being received.
#[derive(Debug)]
pub struct FileChunker {
    buf: BytesMut,
    received: u64,
    chunk_size: usize,
}

impl Default for FileChunker {
    fn default() -> Self {
        FileChunker::with_chunk_size(CHUNK_SIZE)
    }
}

impl FileChunker {
    /// A chunker with another chunk size (tests).
    pub fn with_chunk_size(chunk_size: usize) -> FileChunker {
        FileChunker {
            buf: BytesMut::new(),
            received: 0,
            chunk_size: chunk_size.max(1),
        }
    }

    /// Takes more of the file; returns the chunks completed by it.
    pub fn push(&mut self, mut data: Bytes) -> Vec<Bytes> {
        self.received += data.len() as u64;
        let mut out = Vec::new();
        // Whole chunks straight from the input avoid a copy when the
        // producer's pieces are already chunk-aligned.
        while !data.is_empty() {
            if self.buf.is_empty() && data.len() >= self.chunk_size {
                out.push(data.split_to(self.chunk_size));
                continue;
            }
            if self.buf.is_empty() && self.buf.capacity() < self.chunk_size {
                // One allocation of the final size: growing by doubling from
                // the first piece would copy and page-fault each chunk twice.
                self.buf = BytesMut::with_capacity(self.chunk_size);
            }
            let take = (self.chunk_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data.split_to(take));
            if self.buf.len() == self.chunk_size {
                out.push(self.buf.split().freeze());
            }
        }
        out
    }

    /// Ends the file: the last (short) chunk, when any, and the byte count.
    pub fn finish(mut self) -> (Option<Bytes>, u64) {
        let last = (!self.buf.is_empty()).then(|| self.buf.split().freeze());
        (last, self.received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_aligned_whatever_the_pieces() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for piece in [1usize, 3, 100, 1024, 4096, 5000, 20_000] {
            let mut c = FileChunker::with_chunk_size(1024);
            let mut chunks = Vec::new();
            for p in data.chunks(piece) {
                chunks.extend(c.push(Bytes::copy_from_slice(p)));
            }
            let (last, n) = c.finish();
            chunks.extend(last);
            assert_eq!(n, data.len() as u64);
            assert_eq!(chunks.len(), data.len().div_ceil(1024));
            for (i, ch) in chunks.iter().enumerate() {
                let end = ((i + 1) * 1024).min(data.len());
                assert_eq!(
                    &ch[..],
                    &data[i * 1024..end],
                    "piece size {piece}, chunk {i}"
                );
            }
        }
    }

    #[test]
    fn empty_file_has_no_chunks() {
        let (last, n) = FileChunker::default().finish();
        assert!(last.is_none());
        assert_eq!(n, 0);
    }
}
