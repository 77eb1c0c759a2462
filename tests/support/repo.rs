//! The repository from inside a test: opened in-process with a test's
//! environment, and damaged on purpose.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use walship::config::{FlagValues, Settings};
use walship::repo::backup::{ChunkLocation, ChunkRef};
use walship::repo::chunks::bundle_key;
use walship::repo::Repository;

/// Opens the repository the `WALSHIP_*` pairs of `env` name.
pub fn open_repo<K: AsRef<str>>(
    rt: &tokio::runtime::Runtime,
    env: &[(K, String)],
) -> Arc<Repository> {
    let lookup = |k: &str| {
        env.iter()
            .find(|(n, _)| n.as_ref() == k)
            .map(|(_, v)| v.clone())
    };
    let settings = Settings::resolve_with(&FlagValues::default(), &lookup).unwrap();
    Arc::new(rt.block_on(Repository::open(&settings)).unwrap())
}

/// Flips one bit in the middle of `chunk`'s stored bytes, inside its bundle
/// in the local directory repository `repo_dir` (stanza `main`).
pub fn damage_bundled_chunk(repo_dir: &Path, chunk: &ChunkRef) {
    let ChunkLocation::Bundle {
        bundle,
        offset,
        stored_len,
    } = &chunk.at
    else {
        panic!("new chunks are bundled: {chunk:?}");
    };
    let path = repo_dir.join(bundle_key("main", bundle));
    let mut bytes = fs::read(&path).unwrap();
    bytes[(offset + stored_len / 2) as usize] ^= 0x40;
    fs::write(&path, bytes).unwrap();
}
