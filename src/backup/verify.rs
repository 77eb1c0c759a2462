//! Checking the backups in a repository (for `walship verify`): every
//! manifest authentic and readable, every file's chunks adding up to its
//! size, every chunk present and decodable (authenticated, bound to its id,
//! content hashing to its id), the server's backup_manifest kept, and the WAL
//! each backup needs (start..stop segments) present.

use std::collections::HashMap;
use std::sync::Arc;

use crate::pg::backup_manifest::ServerManifest;
use crate::pg::wal::segment::{segment_file_name, WalFileName};
use crate::repo::backup::{manifest_key, server_manifest_key, ChunkRef};
use crate::repo::{layout, RepoError, Repository};

/// Chunks decoded at the same time.
const IN_FLIGHT: usize = 8;

/// One problem, named with its object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupProblem {
    /// The object, backup or file concerned.
    pub object: String,
    /// What is wrong.
    pub problem: String,
}

/// What checking the backups found.
#[derive(Debug, Clone, Default)]
pub struct BackupCheck {
    /// Backups whose manifest was read.
    pub backups: usize,
    /// Distinct chunks decoded.
    pub chunks: usize,
    /// Plaintext bytes of those chunks.
    pub chunk_bytes: u64,
    /// Everything wrong.
    pub problems: Vec<BackupProblem>,
}

/// Checks every backup of the stanza. Fails only when the repository cannot
/// be listed; every other failure is a problem in the result.
pub async fn verify_backups(repo: &Arc<Repository>) -> Result<BackupCheck, RepoError> {
    let stanza = repo.stanza().name.clone();
    let seg_size = repo.seg_size()?;
    let mut check = BackupCheck::default();
    let mut problem = |object: String, problem: String| {
        check.problems.push(BackupProblem { object, problem });
    };
    // Each distinct chunk (id and location) once, with the first file that
    // references it.
    let mut chunks: HashMap<(String, String), (ChunkRef, String)> = HashMap::new();
    let mut backups = 0;
    for id in repo.list_backup_ids().await? {
        let manifest = match repo.load_backup(&id).await {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                problem(manifest_key(&stanza, &id), e.to_string());
                continue;
            }
        };
        backups += 1;
        match repo.load_server_manifest(&id).await {
            Ok(Some(bytes)) => {
                if let Err(e) = ServerManifest::parse(&bytes) {
                    problem(server_manifest_key(&stanza, &id), e.to_string());
                }
            }
            Ok(None) => problem(
                server_manifest_key(&stanza, &id),
                "the server's backup_manifest is missing".into(),
            ),
            Err(e) => problem(server_manifest_key(&stanza, &id), e.to_string()),
        }
        for f in &manifest.files {
            let sum: u64 = f.chunks.iter().map(|c| u64::from(c.len)).sum();
            if sum != f.size {
                problem(
                    format!("backup {id}: {}", f.path),
                    format!("its chunks hold {sum} bytes, the file has {}", f.size),
                );
            }
            for c in &f.chunks {
                chunks
                    .entry((c.id.clone(), format!("{:?}", c.at)))
                    .or_insert_with(|| (c.clone(), format!("backup {id}: {}", f.path)));
            }
        }
        let (tli, first, last) = manifest.wal_segments(seg_size);
        for segno in first..=last {
            let name = WalFileName::Segment { tli, segno };
            let key = layout::wal_object(&stanza, &name, seg_size);
            match repo.storage().head(&key).await {
                Ok(Some(_)) => {}
                Ok(None) => problem(
                    format!("backup {id}"),
                    format!(
                        "WAL segment {} it needs (start {} .. stop {}) is missing",
                        segment_file_name(tli, segno, seg_size),
                        manifest.start_lsn,
                        manifest.stop_lsn
                    ),
                ),
                Err(e) => problem(key, e.to_string()),
            }
        }
    }
    check.backups = backups;

    let mut tasks = tokio::task::JoinSet::new();
    let mut pending = chunks.into_values();
    loop {
        while tasks.len() < IN_FLIGHT {
            let Some((chunk, referrer)) = pending.next() else {
                break;
            };
            let repo = Arc::clone(repo);
            tasks.spawn(async move {
                let r = repo.read_chunk(&chunk).await.map(|p| p.len() as u64);
                (chunk, referrer, r)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        match joined {
            Ok((_, _, Ok(n))) => {
                check.chunks += 1;
                check.chunk_bytes += n;
            }
            Ok((chunk, referrer, Err(e))) => {
                check.chunks += 1;
                check.problems.push(BackupProblem {
                    object: format!("chunk {} (in {referrer})", chunk.id),
                    problem: e.to_string(),
                });
            }
            Err(e) => check.problems.push(BackupProblem {
                object: "chunk reader".into(),
                problem: format!("task failed: {e}"),
            }),
        }
    }
    check.problems.sort_by(|a, b| a.object.cmp(&b.object));
    Ok(check)
}
