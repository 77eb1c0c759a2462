//! The event loop of a backup: reads the BASE_BACKUP stream (the one
//! sequential part), cuts files into chunks for the [`ChunkWriter`], and
//! builds the backup's manifest; at the end checks every file against the
//! server's backup_manifest.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::BytesMut;

use super::chunker::FileChunker;
use super::progress::Progress;
use super::source::{BackupEvent, EntryKind, EventSource, TablespaceInfo};
use super::store::{ChunkDone, ChunkWriter};
use super::BackupError;
use crate::pg::backup_manifest::{crc32c_manifest_hex, FileChecker, ServerManifest};
use crate::pg::wal::segment::TimelineId;
use crate::pg::wal::Lsn;
use crate::repo::backup::{
    BackupFile, BackupManifest, BackupTablespace, ChunkRef, FileKind, MANIFEST_FORMAT,
};
use crate::repo::Repository;

/// What the caller knows before the stream starts.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    /// The backup id ([`crate::repo::backup::new_backup_id`]).
    pub id: String,
    /// `--label`.
    pub label: Option<String>,
    /// System identifier of the server (decimal).
    pub system_id: String,
    /// `server_version_num`.
    pub pg_version: u32,
    /// Whether the cluster has data checksums.
    pub data_checksums: bool,
    /// When the backup started (RFC 3339 UTC).
    pub start_time: String,
    /// How long to wait for the WAL: also bounds the server's own wait for
    /// archiving at the end of the backup (see [`ingest`]).
    pub wal_timeout: std::time::Duration,
}

/// A backup received and stored, not yet published.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// Its manifest (complete; publish it once its WAL is stored).
    pub manifest: BackupManifest,
    /// The server's backup_manifest, as received.
    pub server_manifest: Vec<u8>,
    /// Chunk references in the manifest.
    pub chunks: usize,
    /// Chunks this backup stored.
    pub new_chunks: usize,
    /// Bundles this backup wrote.
    pub bundles: usize,
}

/// The file being received.
struct Current {
    file: usize,
    chunker: FileChunker,
    next_chunk: usize,
}

/// Receives a whole base backup from `source` into the chunk store.
pub async fn ingest<S: EventSource>(
    source: &mut S,
    repo: &Arc<Repository>,
    request: &BackupRequest,
    in_flight: usize,
) -> Result<Ingested, BackupError> {
    let known = repo.load_chunk_set().await?;
    tracing::debug!(
        chunks = known.chunks.len(),
        bundles = known.bundles,
        "known chunks loaded"
    );
    let mut writer = ChunkWriter::new(Arc::clone(repo), known, in_flight);
    let mut progress = Progress::new();

    let mut files: Vec<BackupFile> = Vec::new();
    let mut chunk_slots: Vec<Vec<Option<ChunkRef>>> = Vec::new();
    let mut crcs: Vec<Option<u32>> = Vec::new();
    let mut start: Option<(Lsn, TimelineId)> = None;
    let mut stop: Option<(Lsn, TimelineId)> = None;
    let mut tablespaces: Vec<TablespaceInfo> = Vec::new();
    let mut prefix = String::new();
    let mut current: Option<Current> = None;
    let mut server_manifest = BytesMut::new();
    let mut stats = Stats::default();
    let mut checker = FileChecker::new();

    let pg = |e| BackupError::Pg {
        context: "receiving the base backup".into(),
        cause: Box::new(e),
    };
    loop {
        let Some(event) = source.next_event().await.map_err(pg)? else {
            break;
        };
        checker.observe(&event);
        match event {
            BackupEvent::Started {
                start_lsn,
                timeline,
            } => {
                tracing::info!(start_lsn = %start_lsn, timeline, "backup started");
                start = Some((start_lsn, timeline));
            }
            BackupEvent::Tablespaces(list) => {
                let total: Option<u64> = list
                    .iter()
                    .map(|t| t.size_kb.map(|k| k * 1024))
                    .sum::<Option<u64>>();
                progress.set_total(total);
                tablespaces = list;
            }
            BackupEvent::ArchiveStart { tablespace_oid, .. } => {
                prefix = match tablespace_oid {
                    Some(oid) => format!("pg_tblspc/{oid}/"),
                    None => String::new(),
                };
            }
            BackupEvent::Entry(header) => {
                if let Some(c) = &current {
                    return Err(BackupError::Stream(format!(
                        "a new entry began before {} ended",
                        files[c.file].path
                    )));
                }
                let path = format!("{prefix}{}", clean_path(&header.path));
                let kind = match header.kind {
                    EntryKind::File => FileKind::File,
                    EntryKind::Dir => FileKind::Dir,
                    EntryKind::Symlink { target } => FileKind::Symlink { target },
                };
                let is_file = kind == FileKind::File;
                files.push(BackupFile {
                    path,
                    kind,
                    mode: header.mode,
                    size: if is_file { header.size } else { 0 },
                    mtime: header.mtime,
                    crc32c: None,
                    chunks: Vec::new(),
                });
                chunk_slots.push(Vec::new());
                crcs.push(None);
                if is_file {
                    current = Some(Current {
                        file: files.len() - 1,
                        chunker: FileChunker::default(),
                        next_chunk: 0,
                    });
                }
            }
            BackupEvent::Data(data) => {
                let Some(c) = current.as_mut() else {
                    if data.is_empty() {
                        continue;
                    }
                    return Err(BackupError::Stream(
                        "file data outside of a file entry".into(),
                    ));
                };
                progress.add(data.len() as u64);
                for chunk in c.chunker.push(data) {
                    let done = writer.submit(c.file, c.next_chunk, chunk).await?;
                    c.next_chunk += 1;
                    record(&mut chunk_slots, &mut stats, done);
                }
            }
            BackupEvent::EntryEnd => {
                let Some(c) = current.take() else {
                    continue; // directories and symlinks end too
                };
                let (last, received) = c.chunker.finish();
                // The checker saw this EntryEnd first: its last file is this one.
                let crc = checker
                    .last_finished()
                    .filter(|r| r.size == received)
                    .map(|r| r.crc32c)
                    .ok_or_else(|| {
                        BackupError::Internal(format!(
                            "{}: the manifest checker did not see the file end",
                            files[c.file].path
                        ))
                    })?;
                if let Some(chunk) = last {
                    let done = writer.submit(c.file, c.next_chunk, chunk).await?;
                    record(&mut chunk_slots, &mut stats, done);
                }
                let f = &files[c.file];
                if received != f.size {
                    return Err(BackupError::Stream(format!(
                        "{}: the header announced {} bytes, {received} arrived",
                        f.path, f.size
                    )));
                }
                crcs[c.file] = Some(crc);
            }
            BackupEvent::ArchiveEnd => {
                if let Some(c) = &current {
                    return Err(BackupError::Stream(format!(
                        "the archive ended inside {}",
                        files[c.file].path
                    )));
                }
            }
            BackupEvent::Manifest(piece) => server_manifest.extend_from_slice(&piece),
            BackupEvent::Progress {
                done_bytes: _,
                total_bytes,
            } => {
                if total_bytes.is_some() {
                    progress.set_total(total_bytes);
                }
            }
            BackupEvent::Finished { stop_lsn, timeline } => {
                stop = Some((stop_lsn, timeline));
            }
        }
    }
    let (done, bundles) = writer.finish().await?;
    for d in done {
        record(&mut chunk_slots, &mut stats, vec![d]);
    }
    progress.finish();

    let (Some((start_lsn, timeline)), Some((stop_lsn, stop_timeline))) = (start, stop) else {
        return Err(BackupError::Stream(
            "the stream ended before the backup's start and stop positions were reported".into(),
        ));
    };
    if let Some(c) = current {
        return Err(BackupError::Stream(format!(
            "the stream ended inside {}",
            files[c.file].path
        )));
    }

    // Every file against the server's manifest.
    if server_manifest.is_empty() {
        return Err(BackupError::BadServerManifest(
            "the server sent none (PostgreSQL 13 or later sends one)".into(),
        ));
    }
    let parsed = ServerManifest::parse(&server_manifest)
        .map_err(|e| BackupError::BadServerManifest(e.to_string()))?;
    let mismatches = checker.verify_against(&parsed);
    if !mismatches.is_empty() {
        return Err(BackupError::ManifestMismatch(mismatches));
    }
    let listed: std::collections::HashMap<&str, &str> = parsed
        .files
        .iter()
        .filter(|f| {
            f.checksum_algorithm
                .as_deref()
                .is_some_and(|a| a.eq_ignore_ascii_case("CRC32C"))
        })
        .filter_map(|f| Some((f.path.as_str(), f.checksum.as_deref()?)))
        .collect();

    let mut chunks = 0usize;
    for (i, f) in files.iter_mut().enumerate() {
        f.crc32c = match (crcs[i], listed.get(f.path.as_str())) {
            (Some(c), Some(sum)) if crc32c_manifest_hex(c).eq_ignore_ascii_case(sum) => Some(c),
            _ => None,
        };
        let slots = std::mem::take(&mut chunk_slots[i]);
        for (n, slot) in slots.into_iter().enumerate() {
            let chunk = slot.ok_or_else(|| {
                BackupError::Internal(format!("{}: chunk {n} has no result", f.path))
            })?;
            f.chunks.push(chunk);
        }
        chunks += f.chunks.len();
    }

    let manifest = BackupManifest {
        format: MANIFEST_FORMAT,
        id: request.id.clone(),
        label: request.label.clone(),
        system_id: request.system_id.clone(),
        pg_version: request.pg_version,
        timeline,
        start_lsn,
        stop_lsn,
        stop_timeline,
        start_time: request.start_time.clone(),
        stop_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        data_checksums: request.data_checksums,
        tablespaces: tablespaces
            .iter()
            .filter_map(|t| {
                Some(BackupTablespace {
                    oid: t.oid?,
                    location: t.location.clone()?,
                })
            })
            .collect(),
        original_bytes: files.iter().map(|f| f.size).sum(),
        stored_bytes: stats.stored_bytes,
        new_bytes: stats.new_bytes,
        files,
    };
    Ok(Ingested {
        manifest,
        server_manifest: server_manifest.to_vec(),
        chunks,
        new_chunks: stats.new_chunks,
        bundles,
    })
}

#[derive(Default)]
struct Stats {
    seen: HashSet<String>,
    stored_bytes: u64,
    new_bytes: u64,
    new_chunks: usize,
}

fn record(slots: &mut [Vec<Option<ChunkRef>>], stats: &mut Stats, done: Vec<ChunkDone>) {
    for d in done {
        if stats.seen.insert(d.chunk.id.clone()) {
            stats.stored_bytes += d.stored_len;
        }
        if d.new {
            stats.new_bytes += d.stored_len;
            stats.new_chunks += 1;
        }
        let file = &mut slots[d.file];
        if file.len() <= d.index {
            file.resize(d.index + 1, None);
        }
        file[d.index] = Some(d.chunk);
    }
}

/// A member path as PostgreSQL's manifest writes it: no `./`, no trailing `/`.
fn clean_path(path: &str) -> &str {
    let p = path.strip_prefix("./").unwrap_or(path);
    p.strip_suffix('/').unwrap_or(p)
}
