//! The chunk store: content-addressed pieces of base-backup files, shared by
//! every backup that contains the same bytes.
//!
//! Layout:
//!
//! ```text
//! <stanza>/chunks/<id[..2]>/<id>              one chunk, encoded on its own
//! <stanza>/bundles/<b[..2]>/<b>               a bundle: encoded small chunks, back to back
//! <stanza>/bundles/<b[..2]>/<b>.index         the bundle's index (encoded JSON, written after it)
//! ```
//!
//! A chunk's id is its [`codec::content_id`]: BLAKE3 of its plaintext, keyed
//! with `key.subkey("walship chunk id")` when the stanza is encrypted (so the
//! names reveal nothing about the content: without the key nobody can test a
//! guess), plain BLAKE3 otherwise. Every chunk is encoded by the codec under
//! its chunk-object key [`chunk_key`], wherever it ends up (its own object or
//! a bundle), so a chunk's encoded bytes are bound to its id: a chunk swapped
//! for another one fails to decode. The id is also the encoded chunk's
//! checksum ([`codec::encode_bytes_with_id`]): the plaintext is hashed once
//! when stored and once when read, and decoding it verifies the id.
//!
//! Chunks are never deleted by a backup. A failed backup leaves chunks that
//! no manifest references: garbage a future retention command may collect
//! (only after checking that no manifest references them).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::backup::{ChunkLocation, ChunkRef};
use super::{RepoError, Repository};
use crate::codec::{self, Checksum, CodecSettings};
use crate::storage::{PutMode, PutOutcome};

/// Plaintext size of a chunk: files are cut at every multiple of this from
/// their start. 256 KiB is 32 PostgreSQL pages: small enough that a change to
/// a few pages rewrites little (a changed 8 KiB page costs one 256 KiB chunk,
/// compressed), large enough that a 1 TiB cluster is 4 million chunks, not
/// hundreds of millions of objects with their per-request cost and per-object
/// metadata. Aligned to the 8 KiB page (and to every power-of-two page size
/// PostgreSQL can be built with, up to 32 KiB), so an unchanged page always
/// falls in the same place of the same chunk.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// Chunks shorter than this are packed into bundles instead of having an
/// object each: most files of a cluster are tiny (catalogs, `_fsm`, `_vm`,
/// `pg_xact` ...), and one PUT per 8 KiB file would dominate the cost.
pub const BUNDLE_CHUNK_MAX: usize = 64 * 1024;

/// A bundle is closed and uploaded once its encoded chunks reach this size.
pub const BUNDLE_TARGET: usize = 4 << 20;

/// Format version of a bundle index.
pub const BUNDLE_INDEX_FORMAT: u32 = 1;

/// Object key of a chunk stored on its own; also the name bound into every
/// encoding of that chunk.
pub fn chunk_key(stanza: &str, id: &str) -> String {
    format!("{stanza}/chunks/{}/{id}", prefix2(id))
}

/// Object key of a bundle.
pub fn bundle_key(stanza: &str, bundle: &str) -> String {
    format!("{stanza}/bundles/{}/{bundle}", prefix2(bundle))
}

/// Object key of a bundle's index.
pub fn bundle_index_key(stanza: &str, bundle: &str) -> String {
    format!("{stanza}/bundles/{}/{bundle}.index", prefix2(bundle))
}

fn prefix2(id: &str) -> &str {
    id.get(..2).unwrap_or("00")
}

/// Whether `s` is a chunk or bundle id (lowercase hex of the right length).
pub fn is_hex_id(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Computes chunk ids: the codec's content id (keyed BLAKE3 when the stanza
/// is encrypted), its subkey derived once.
#[derive(Clone, Debug)]
pub struct ChunkHasher {
    ids: codec::ContentIdHasher,
}

impl ChunkHasher {
    /// The hasher for a stanza's codec settings.
    pub fn new(codec: &CodecSettings) -> ChunkHasher {
        ChunkHasher {
            ids: codec::ContentIdHasher::new(codec),
        }
    }

    /// The id of a chunk with this plaintext.
    pub fn checksum(&self, plain: &[u8]) -> Checksum {
        self.ids.id(plain)
    }

    /// The id of a chunk with this plaintext (64 hex characters).
    pub fn id(&self, plain: &[u8]) -> String {
        self.checksum(plain).to_string()
    }
}

/// One chunk inside a bundle, as its index lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEntry {
    /// The chunk id.
    pub id: String,
    /// Plaintext length.
    pub len: u32,
    /// Offset of the chunk's encoded object in the bundle.
    pub offset: u64,
    /// Length of the chunk's encoded object.
    pub stored_len: u64,
}

/// A bundle's index: which chunks it holds and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleIndex {
    /// [`BUNDLE_INDEX_FORMAT`].
    pub format: u32,
    /// The bundle id.
    pub bundle: String,
    /// Its chunks, in order.
    pub chunks: Vec<BundleEntry>,
}

/// A chunk known to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownChunk {
    /// Where it is.
    pub at: ChunkLocation,
    /// Its stored (encoded) length.
    pub stored_len: u64,
}

/// The chunks already in the repository, by id (loaded once at the start of
/// a backup: a chunk found here is referenced, not stored again).
#[derive(Debug, Default, Clone)]
pub struct ChunkSet {
    /// Every known chunk.
    pub chunks: HashMap<String, KnownChunk>,
    /// Number of bundles whose index was read.
    pub bundles: usize,
}

impl Repository {
    /// Loads the set of stored chunks: one listing of `chunks/` and `bundles/`,
    /// then every bundle index (a few at a time).
    pub async fn load_chunk_set(self: &Arc<Self>) -> Result<ChunkSet, RepoError> {
        let stanza = self.stanza().name.clone();
        let mut set = ChunkSet::default();
        for meta in self.storage().list(&format!("{stanza}/chunks/")).await? {
            let id = meta.key.rsplit('/').next().unwrap_or_default();
            if is_hex_id(id, 64) {
                set.chunks.insert(
                    id.to_string(),
                    KnownChunk {
                        at: ChunkLocation::Object,
                        stored_len: meta.size,
                    },
                );
            }
        }
        let mut bundles = Vec::new();
        for meta in self.storage().list(&format!("{stanza}/bundles/")).await? {
            let name = meta.key.rsplit('/').next().unwrap_or_default();
            if let Some(b) = name.strip_suffix(".index") {
                if is_hex_id(b, 32) {
                    bundles.push(b.to_string());
                }
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        let mut pending = bundles.into_iter();
        const IN_FLIGHT: usize = 16;
        loop {
            while tasks.len() < IN_FLIGHT {
                let Some(b) = pending.next() else { break };
                let repo = Arc::clone(self);
                tasks.spawn(async move { repo.load_bundle_index(&b).await });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let index = joined.map_err(|e| RepoError::BadMetadata {
                key: format!("{stanza}/bundles/"),
                reason: format!("bundle index reader failed: {e}"),
            })??;
            let Some(index) = index else { continue };
            set.bundles += 1;
            for e in index.chunks {
                // A chunk of its own wins: it is read without a range request.
                set.chunks.entry(e.id).or_insert(KnownChunk {
                    at: ChunkLocation::Bundle {
                        bundle: index.bundle.clone(),
                        offset: e.offset,
                        stored_len: e.stored_len,
                    },
                    stored_len: e.stored_len,
                });
            }
        }
        Ok(set)
    }

    /// Reads a bundle's index; `None` when it does not exist.
    pub async fn load_bundle_index(&self, bundle: &str) -> Result<Option<BundleIndex>, RepoError> {
        let key = bundle_index_key(&self.stanza().name, bundle);
        let Some((json, _)) = self.get_object(&key).await? else {
            return Ok(None);
        };
        let index: BundleIndex =
            serde_json::from_slice(&json).map_err(|e| RepoError::BadMetadata {
                key: key.clone(),
                reason: e.to_string(),
            })?;
        if index.format > BUNDLE_INDEX_FORMAT || index.bundle != bundle {
            return Err(RepoError::BadMetadata {
                key,
                reason: format!(
                    "format {} for bundle {} (expected format <= {BUNDLE_INDEX_FORMAT} for bundle {bundle})",
                    index.format, index.bundle
                ),
            });
        }
        Ok(Some(index))
    }

    /// Encodes a chunk's plaintext under its chunk key, with its id
    /// ([`ChunkHasher::checksum`] of `plain`) as the checksum (CPU work: call
    /// it from a blocking thread for large inputs).
    pub fn encode_chunk(&self, id: &Checksum, plain: &[u8]) -> Result<Vec<u8>, RepoError> {
        let key = chunk_key(&self.stanza().name, &id.to_string());
        Ok(codec::encode_bytes_with_id(&key, plain, self.codec(), *id)?.0)
    }

    /// Stores an encoded chunk as its own object. An existing object with
    /// that id is left alone: same id, same plaintext.
    pub async fn store_chunk_object(&self, id: &str, encoded: Bytes) -> Result<(), RepoError> {
        let key = chunk_key(&self.stanza().name, id);
        match self.storage().put(&key, encoded, PutMode::IfAbsent).await? {
            PutOutcome::Stored | PutOutcome::AlreadyExists => Ok(()),
        }
    }

    /// Stores a bundle, then its index (so an index never names a bundle that
    /// is not there).
    pub async fn store_bundle(&self, data: Bytes, index: &BundleIndex) -> Result<(), RepoError> {
        let stanza = &self.stanza().name;
        let key = bundle_key(stanza, &index.bundle);
        self.storage()
            .put(&key, data, PutMode::IfAbsent)
            .await?
            .require_stored(&key)?;
        let index_key = bundle_index_key(stanza, &index.bundle);
        let json = serde_json::to_vec(index).map_err(|e| RepoError::BadMetadata {
            key: index_key.clone(),
            reason: e.to_string(),
        })?;
        self.put_object(&index_key, &json, PutMode::IfAbsent)
            .await?
            .0
            .require_stored(&index_key)?;
        Ok(())
    }

    /// Fetches one chunk, verifies it (authenticated decode bound to its id,
    /// length, and its id recomputed from the plaintext) and returns the
    /// plaintext. Bundled chunks are read with one ranged read.
    pub async fn read_chunk(&self, chunk: &ChunkRef) -> Result<Vec<u8>, RepoError> {
        let stanza = &self.stanza().name;
        let name = chunk_key(stanza, &chunk.id);
        let bad = |key: String, reason: String| RepoError::BadMetadata { key, reason };
        if !is_hex_id(&chunk.id, 64) {
            return Err(bad(name, format!("`{}` is not a chunk id", chunk.id)));
        }
        let stored = match &chunk.at {
            ChunkLocation::Object => self
                .storage()
                .get_bytes(&name)
                .await?
                .ok_or_else(|| bad(name.clone(), format!("chunk {} is missing", chunk.id)))?,
            ChunkLocation::Bundle {
                bundle,
                offset,
                stored_len,
            } => {
                let key = bundle_key(stanza, bundle);
                self.storage()
                    .get_range(&key, *offset, *stored_len)
                    .await?
                    .ok_or_else(|| {
                        bad(
                            key.clone(),
                            format!("bundle {bundle} holding chunk {} is missing", chunk.id),
                        )
                    })?
            }
        };
        let (plain, summary) = codec::decode_bytes(&name, &stored, self.codec().key.clone())?;
        if plain.len() != chunk.len as usize {
            return Err(bad(
                name,
                format!(
                    "chunk {} decodes to {} bytes, the manifest says {}",
                    chunk.id,
                    plain.len(),
                    chunk.len
                ),
            ));
        }
        // A chunk encoded with its id as checksum was just verified against
        // it; one encoded before that (or copied in) is hashed here.
        let verified = summary.checksum_kind == codec::ChecksumKind::of_content_ids(self.codec());
        let id = if verified {
            summary.checksum
        } else {
            ChunkHasher::new(self.codec()).checksum(&plain)
        };
        if id.to_string() != chunk.id {
            return Err(bad(
                name,
                format!("chunk {}: content does not match its id", chunk.id),
            ));
        }
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Key;

    #[test]
    fn ids_are_keyed_when_encrypted() {
        let plain = CodecSettings::default();
        let key = Key::from_bytes([7; 32]);
        let enc = CodecSettings {
            key: Some(Arc::new(key)),
            ..Default::default()
        };
        let data = b"some page";
        let a = ChunkHasher::new(&plain).id(data);
        let b = ChunkHasher::new(&enc).id(data);
        assert_eq!(a, blake3::hash(data).to_hex().to_string());
        assert_ne!(a, b, "a keyed id must not be the plain hash");
        assert!(is_hex_id(&a, 64) && is_hex_id(&b, 64));
        let other = CodecSettings {
            key: Some(Arc::new(Key::from_bytes([8; 32]))),
            ..Default::default()
        };
        assert_ne!(b, ChunkHasher::new(&other).id(data), "depends on the key");
    }

    #[test]
    fn keys_and_ids() {
        let id = "ab".repeat(32);
        assert_eq!(chunk_key("main", &id), format!("main/chunks/ab/{id}"));
        let b = "cd".repeat(16);
        assert_eq!(bundle_key("main", &b), format!("main/bundles/cd/{b}"));
        assert_eq!(
            bundle_index_key("main", &b),
            format!("main/bundles/cd/{b}.index")
        );
        assert!(!is_hex_id("AB", 2));
        assert!(!is_hex_id("abc", 2));
        assert_eq!(CHUNK_SIZE % 8192, 0);
        assert_eq!(CHUNK_SIZE % 32768, 0);
    }
}
