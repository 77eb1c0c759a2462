//! BLAKE3 of a whole object computed chunk by chunk on several threads.
//!
//! BLAKE3 is a tree hash: the hash of a 1 MiB-aligned piece of the input (a
//! "subtree") does not depend on the rest, and the root hash is made by
//! merging subtree hashes in the tree's own shape. So each thread that
//! compresses or decompresses a chunk also hashes it while it is in cache, and
//! the object's checksum comes out identical to `blake3::hash` (or
//! `blake3::keyed_hash`, given a key) of the whole plaintext without a
//! second, single-threaded pass over it.

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

/// The chaining value of the chunk of `data` that starts at byte `offset` of
/// the object. `offset` must be a multiple of the chunk size, which must be a
/// power of two of at least 1 KiB, and the object must have more than one
/// chunk (a single chunk is hashed with `blake3::hash`). With `key`, BLAKE3's
/// keyed mode.
pub(crate) fn chunk_cv(data: &[u8], offset: u64, key: Option<&[u8; 32]>) -> ChainingValue {
    let mut hasher = match key {
        Some(k) => blake3::Hasher::new_keyed(k),
        None => blake3::Hasher::new(),
    };
    hasher.set_input_offset(offset);
    hasher.update(data);
    hasher.finalize_non_root()
}

/// The root hash of an object of `total_len` bytes from the chaining values of
/// its chunks of `chunk_size` bytes (the last may be short), in order.
/// `cvs.len()` must be at least 2 and match `total_len` and `chunk_size`;
/// `key` must be the one the chaining values were computed with.
pub(crate) fn root_hash(
    cvs: &[ChainingValue],
    chunk_size: u64,
    total_len: u64,
    key: Option<&[u8; 32]>,
) -> blake3::Hash {
    let mode = match key {
        Some(k) => Mode::KeyedHash(k),
        None => Mode::Hash,
    };
    let left = left_subtree_len(total_len);
    let split = (left / chunk_size) as usize;
    let l = subtree(&cvs[..split], chunk_size, left, mode);
    let r = subtree(&cvs[split..], chunk_size, total_len - left, mode);
    merge_subtrees_root(&l, &r, mode)
}

fn subtree(cvs: &[ChainingValue], chunk_size: u64, len: u64, mode: Mode) -> ChainingValue {
    if len <= chunk_size {
        return cvs[0];
    }
    // Splits fall on chunk boundaries: `left` is a power of two >= chunk_size.
    let left = left_subtree_len(len);
    let split = (left / chunk_size) as usize;
    let l = subtree(&cvs[..split], chunk_size, left, mode);
    let r = subtree(&cvs[split..], chunk_size, len - left, mode);
    merge_subtrees_non_root(&l, &r, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_blake3_of_the_whole() {
        let key = [9u8; 32];
        let data: Vec<u8> = (0..(9u32 << 12) + 77)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        for chunk_shift in [10u32, 11, 12, 13] {
            let cs = 1usize << chunk_shift;
            for len in [
                cs + 1,
                2 * cs,
                2 * cs + 5,
                3 * cs,
                5 * cs - 1,
                8 * cs,
                data.len(),
            ] {
                let len = len.min(data.len());
                let plain = &data[..len];
                for (k, expected) in [
                    (None, blake3::hash(plain)),
                    (Some(&key), blake3::keyed_hash(&key, plain)),
                ] {
                    let cvs: Vec<_> = plain
                        .chunks(cs)
                        .enumerate()
                        .map(|(i, c)| chunk_cv(c, (i * cs) as u64, k))
                        .collect();
                    assert_eq!(
                        root_hash(&cvs, cs as u64, len as u64, k),
                        expected,
                        "chunk 2^{chunk_shift}, {len} bytes, keyed {}",
                        k.is_some()
                    );
                }
            }
        }
    }
}
