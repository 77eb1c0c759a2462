//! The pipeline against synthetic BASE_BACKUP events and a real fs repository.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::source::{BackupEvent, EntryHeader, EntryKind, TablespaceInfo, VecSource};
use super::*;
use crate::config::{FlagValues, Settings};
use crate::pg::wal::Lsn;
use crate::repo::backup::{ChunkLocation, FileKind};
use crate::repo::chunks::CHUNK_SIZE;
use crate::repo::{ClusterIdentity, Repository};

const SYSTEM_ID: u64 = 7_000_000_000_000_000_001;

async fn repo(dir: &std::path::Path, key: Option<&str>) -> Arc<Repository> {
    let key_path = dir.join("key");
    let mut flags = FlagValues {
        repo: Some(dir.join("repo").display().to_string()),
        ..Default::default()
    };
    if let Some(k) = key {
        std::fs::write(&key_path, k).unwrap();
        flags.key_file = Some(key_path);
    }
    let settings = Settings::resolve_with(&flags, &|_| None).unwrap();
    let identity = ClusterIdentity {
        system_id: SYSTEM_ID,
        pg_version: 150000,
        wal_seg_size: 16 << 20,
    };
    Arc::new(
        Repository::open_or_create(&settings, identity, "test")
            .await
            .unwrap()
            .0,
    )
}

fn data(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Half the bytes compressible, like real pages.
            if x.is_multiple_of(2) {
                0
            } else {
                (x >> 8) as u8
            }
        })
        .collect()
}

struct Synthetic {
    events: Vec<BackupEvent>,
    files: Vec<(String, Vec<u8>)>,
}

fn server_manifest(files: &[(String, Vec<u8>)], corrupt: Option<&str>) -> Vec<u8> {
    let entries: Vec<String> = files
        .iter()
        .map(|(p, d)| {
            let mut crc = crc32c::crc32c(d);
            if corrupt == Some(p.as_str()) {
                crc ^= 0xdead;
            }
            format!(
                "{{ \"Path\": \"{p}\", \"Size\": {}, \"Last-Modified\": \"2026-11-21 20:00:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}",
                d.len(),
                hex::encode(crc.to_le_bytes())
            )
        })
        .collect();
    let body = format!(
        "{{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{}\n],\n\"WAL-Ranges\": [\n{{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000138\" }}\n],\n",
        entries.join(",\n")
    );
    let sum = hex::encode(ring::digest::digest(&ring::digest::SHA256, body.as_bytes()));
    format!("{body}\"Manifest-Checksum\": \"{sum}\"}}\n").into_bytes()
}

fn synthetic(seed: u32, corrupt: Option<&str>) -> Synthetic {
    let big = data(CHUNK_SIZE * 2 + 8192 * 3, seed);
    let small = data(8192 * 3, seed + 1);
    let tiny = b"15\n".to_vec();
    let ts_file = data(20_000, seed + 2);
    let files: Vec<(String, Vec<u8>)> = vec![
        ("PG_VERSION".into(), tiny),
        ("base/1/1259".into(), big),
        ("base/1/1259_fsm".into(), small),
        ("base/1/empty".into(), Vec::new()),
        ("pg_tblspc/16385/PG_15_202209061/5/16386".into(), ts_file),
    ];
    let mut ev = vec![
        BackupEvent::Started {
            start_lsn: Lsn(0x2000028),
            timeline: 1,
        },
        BackupEvent::Tablespaces(vec![
            TablespaceInfo {
                oid: Some(16385),
                location: Some("/srv/ts".into()),
                size_kb: Some(20),
            },
            TablespaceInfo {
                oid: None,
                location: None,
                size_kb: Some(600),
            },
        ]),
        BackupEvent::ArchiveStart {
            tablespace_oid: None,
            name: "base.tar".into(),
        },
        BackupEvent::Entry(EntryHeader {
            path: "base/".into(),
            kind: EntryKind::Dir,
            mode: 0o700,
            size: 0,
            mtime: 1,
        }),
        BackupEvent::EntryEnd,
        BackupEvent::Entry(EntryHeader {
            path: "pg_tblspc/16385".into(),
            kind: EntryKind::Symlink {
                target: "/srv/ts".into(),
            },
            mode: 0o777,
            size: 0,
            mtime: 1,
        }),
        BackupEvent::EntryEnd,
    ];
    let add_file = |ev: &mut Vec<BackupEvent>, path: &str, d: &[u8]| {
        ev.push(BackupEvent::Entry(EntryHeader {
            path: path.into(),
            kind: EntryKind::File,
            mode: 0o600,
            size: d.len() as u64,
            mtime: 2,
        }));
        // Odd piece sizes, as the network delivers them.
        for piece in d.chunks(65_000) {
            ev.push(BackupEvent::Data(Bytes::copy_from_slice(piece)));
        }
        ev.push(BackupEvent::EntryEnd);
    };
    for (p, d) in &files[..4] {
        add_file(&mut ev, p, d);
    }
    ev.push(BackupEvent::ArchiveEnd);
    ev.push(BackupEvent::ArchiveStart {
        tablespace_oid: Some(16385),
        name: "16385.tar".into(),
    });
    add_file(&mut ev, "PG_15_202209061/5/16386", &files[4].1);
    ev.push(BackupEvent::ArchiveEnd);
    ev.push(BackupEvent::Manifest(Bytes::from(server_manifest(
        &files, corrupt,
    ))));
    ev.push(BackupEvent::Finished {
        stop_lsn: Lsn(0x2000138),
        timeline: 1,
    });
    Synthetic { events: ev, files }
}

fn request(repo: &Repository) -> BackupRequest {
    BackupRequest {
        id: crate::repo::backup::new_backup_id(chrono::Utc::now()),
        label: Some("unit".into()),
        system_id: repo.stanza().system_id.clone(),
        pg_version: 150000,
        data_checksums: true,
        start_time: "2026-11-21T20:00:00Z".into(),
        wal_timeout: Duration::from_secs(5),
    }
}

async fn round_trip(key: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), key).await;
    let s = synthetic(1, None);
    let req = request(&repo);
    let got = ingest(&mut VecSource::new(s.events.clone()), &repo, &req, 4)
        .await
        .unwrap();
    let m = &got.manifest;
    assert_eq!(m.start_lsn, Lsn(0x2000028));
    assert_eq!(m.stop_lsn, Lsn(0x2000138));
    assert_eq!(m.tablespaces.len(), 1);
    assert_eq!(m.tablespaces[0].oid, 16385);
    assert!(m
        .files
        .iter()
        .any(|f| f.path == "pg_tblspc/16385" && matches!(f.kind, FileKind::Symlink { .. })));
    assert!(m
        .files
        .iter()
        .any(|f| f.path == "base" && f.kind == FileKind::Dir));
    for (path, content) in &s.files {
        let f = m.files.iter().find(|f| &f.path == path).unwrap();
        assert_eq!(f.size, content.len() as u64);
        assert_eq!(f.crc32c, Some(crc32c::crc32c(content)), "{path}");
        let mut back = Vec::new();
        for c in &f.chunks {
            back.extend(repo.read_chunk(c).await.unwrap());
        }
        assert_eq!(&back, content, "{path} restored from its chunks");
    }
    let big = m.files.iter().find(|f| f.path == "base/1/1259").unwrap();
    assert_eq!(big.chunks.len(), 3);
    // Every new chunk is bundled, whole ones and the 24 KiB tail alike.
    for c in &big.chunks {
        assert!(matches!(c.at, ChunkLocation::Bundle { .. }), "{c:?}");
    }
    assert_eq!(
        m.original_bytes,
        s.files.iter().map(|(_, d)| d.len() as u64).sum::<u64>()
    );
    assert!(m.new_bytes > 0 && m.new_bytes == m.stored_bytes);
    assert_eq!(got.bundles, 1);

    // The same content again stores nothing.
    let again = ingest(&mut VecSource::new(s.events), &repo, &request(&repo), 4)
        .await
        .unwrap();
    assert_eq!(again.new_chunks, 0);
    assert_eq!(again.manifest.new_bytes, 0);
    assert_eq!(again.manifest.stored_bytes, m.stored_bytes);
    assert_eq!(again.bundles, 0);

    // Published backups are listed and load back identical.
    repo.store_backup(&got.manifest, &got.server_manifest)
        .await
        .unwrap();
    let listed = repo.list_backups().await.unwrap();
    assert_eq!(listed, vec![got.manifest.clone()]);
    assert_eq!(
        repo.load_server_manifest(&got.manifest.id).await.unwrap(),
        Some(got.server_manifest.clone())
    );
    assert_eq!(repo.load_backup("nope").await.unwrap(), None);
}

#[tokio::test]
async fn round_trip_unencrypted() {
    round_trip(None).await;
}

#[tokio::test]
async fn round_trip_encrypted() {
    round_trip(Some(
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    ))
    .await;
}

#[tokio::test]
async fn a_checksum_mismatch_fails_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), None).await;
    let s = synthetic(2, Some("base/1/1259_fsm"));
    let e = ingest(&mut VecSource::new(s.events), &repo, &request(&repo), 4)
        .await
        .unwrap_err();
    assert!(matches!(e, BackupError::ManifestMismatch(_)), "{e}");
    assert!(e.to_string().contains("base/1/1259_fsm"), "{e}");
    assert!(e.to_string().contains("CRC-32C"), "{e}");
}

#[tokio::test]
async fn a_broken_stream_fails_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), None).await;
    let s = synthetic(3, None);
    let mut src = VecSource::new(s.events[..12].to_vec());
    src.fail_at_end = Some("connection reset".into());
    let e = take_backup(&mut src, &repo, &request(&repo), &RunOptions::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("connection reset"), "{e}");
    assert!(repo.list_backups().await.unwrap().is_empty());
}

#[tokio::test]
async fn missing_wal_times_out_naming_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), None).await;
    let s = synthetic(4, None);
    let opts = RunOptions { in_flight: 2 };
    let mut req = request(&repo);
    req.wal_timeout = Duration::from_millis(200);
    let e = take_backup(&mut VecSource::new(s.events), &repo, &req, &opts)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("000000010000000000000002"), "{text}");
    assert!(text.contains("archive_command"), "{text}");
    assert!(repo.list_backups().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_tampered_chunk_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), None).await;
    let s = synthetic(5, None);
    let got = ingest(&mut VecSource::new(s.events), &repo, &request(&repo), 4)
        .await
        .unwrap();
    let big = got
        .manifest
        .files
        .iter()
        .find(|f| f.path == "base/1/1259")
        .unwrap();
    let c = &big.chunks[0];
    let ChunkLocation::Bundle {
        bundle,
        offset,
        stored_len,
    } = &c.at
    else {
        panic!("new chunks are bundled: {c:?}");
    };
    let path = dir
        .path()
        .join("repo")
        .join(crate::repo::chunks::bundle_key("main", bundle));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(offset + stored_len / 2) as usize] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let e = repo.read_chunk(c).await.unwrap_err();
    assert!(e.to_string().contains(&c.id), "error names the chunk: {e}");
}

/// Chunk objects of the earlier layout (one object per chunk, with the
/// codec's plain BLAKE3 checksum rather than the id) are still found and
/// referenced, not stored again, and read back with their id checked.
#[tokio::test]
async fn chunk_objects_of_earlier_backups_are_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), Some(&"ab".repeat(32))).await;
    let s = synthetic(7, None);
    let (_, content) = s.files.iter().find(|(p, _)| p == "base/1/1259").unwrap();
    let first = &content[..CHUNK_SIZE];
    let id = crate::repo::chunks::ChunkHasher::new(repo.codec()).id(first);
    let name = crate::repo::chunks::chunk_key("main", &id);
    let (encoded, summary) = crate::codec::encode_bytes(&name, first, repo.codec()).unwrap();
    assert_eq!(summary.checksum_kind, crate::codec::ChecksumKind::Blake3);
    repo.store_chunk_object(&id, Bytes::from(encoded))
        .await
        .unwrap();
    let got = ingest(&mut VecSource::new(s.events), &repo, &request(&repo), 4)
        .await
        .unwrap();
    let big = got
        .manifest
        .files
        .iter()
        .find(|f| f.path == "base/1/1259")
        .unwrap();
    assert_eq!(big.chunks[0].id, id);
    assert_eq!(big.chunks[0].at, ChunkLocation::Object);
    assert!(matches!(big.chunks[1].at, ChunkLocation::Bundle { .. }));
    assert_eq!(repo.read_chunk(&big.chunks[0]).await.unwrap(), first);

    // Such a chunk whose content is not what its id says: refused, named.
    let other = &content[CHUNK_SIZE..2 * CHUNK_SIZE];
    let forged_id = "cd".repeat(32);
    let name = crate::repo::chunks::chunk_key("main", &forged_id);
    let (encoded, _) = crate::codec::encode_bytes(&name, other, repo.codec()).unwrap();
    repo.store_chunk_object(&forged_id, Bytes::from(encoded))
        .await
        .unwrap();
    let forged = crate::repo::backup::ChunkRef {
        id: forged_id.clone(),
        len: CHUNK_SIZE as u32,
        at: ChunkLocation::Object,
    };
    let e = repo.read_chunk(&forged).await.unwrap_err().to_string();
    assert!(
        e.contains(&forged_id) && e.contains("does not match its id"),
        "{e}"
    );
}

/// The same content in many chunks at once: stored once, every copy points
/// at the same place (tasks that find it pending wait for its location).
async fn duplicates_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), None).await;
    let chunk = Bytes::from(data(CHUNK_SIZE, 9));
    let mut writer = store::ChunkWriter::new(
        Arc::clone(&repo),
        crate::repo::chunks::ChunkSet::default(),
        8,
    );
    let mut done = Vec::new();
    for i in 0..32 {
        done.extend(writer.submit(0, i, chunk.clone()).await.unwrap());
    }
    let (rest, bundles) = writer.finish().await.unwrap();
    done.extend(rest);
    assert_eq!(done.len(), 32);
    assert_eq!(bundles, 1);
    assert_eq!(done.iter().filter(|d| d.new).count(), 1);
    assert!(done.iter().all(|d| d.chunk.at == done[0].chunk.at));
    assert_eq!(repo.read_chunk(&done[0].chunk).await.unwrap(), chunk);
}

#[tokio::test]
async fn duplicates_in_flight_current_thread() {
    duplicates_in_flight().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_in_flight_multi_thread() {
    duplicates_in_flight().await;
}

/// A bundle that cannot be stored fails the writer with the storage error
/// (naming the object), whether it fills up mid-stream or is the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_bundle_upload_names_the_cause() {
    for chunks in [2u32, 64] {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path(), None).await;
        std::fs::write(dir.path().join("repo/main/bundles"), b"not a directory").unwrap();
        let mut writer = store::ChunkWriter::new(
            Arc::clone(&repo),
            crate::repo::chunks::ChunkSet::default(),
            8,
        );
        let mut failed = None;
        for i in 0..chunks {
            let chunk = Bytes::from(data(CHUNK_SIZE, 100 + i));
            if let Err(e) = writer.submit(0, i as usize, chunk).await {
                failed = Some(e);
                break;
            }
        }
        let e = match failed {
            Some(e) => e,
            None => writer.finish().await.unwrap_err(),
        };
        let text = e.to_string();
        assert!(text.contains("main/bundles"), "{chunks} chunks: {text}");
    }
}
