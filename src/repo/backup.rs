//! Base backups in the repository: the backup manifest (what files a backup
//! holds and which chunks make each one) and the catalog of backups.
//!
//! Layout:
//!
//! ```text
//! <stanza>/backups/<id>/manifest          this manifest (encoded JSON); its presence makes the backup visible
//! <stanza>/backups/<id>/backup_manifest   the server's backup_manifest, as received
//! ```
//!
//! Every backup is complete on its own: its manifest lists every chunk of
//! every file. Chunks are shared between backups through the chunk store
//! ([`super::chunks`]), so an unchanged file costs nothing the second time.
//!
//! (The types are the contract between `walship backup`, which writes them,
//! and `walship restore`, `info` and `verify`, which read them.)

use serde::{Deserialize, Serialize};

use super::{RepoError, Repository};
use crate::pg::wal::segment::{TimelineId, WalSegSize};
use crate::pg::wal::Lsn;
use crate::storage::PutMode;

/// The current manifest format.
pub const MANIFEST_FORMAT: u32 = 1;

/// One backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// Format version of this manifest.
    pub format: u32,
    /// The backup id (sortable by time: `YYYYMMDDTHHMMSSZ-<random>`).
    pub id: String,
    /// The `--label` given.
    pub label: Option<String>,
    /// System identifier of the cluster (decimal text).
    pub system_id: String,
    /// `server_version_num` of the server.
    pub pg_version: u32,
    /// Timeline the backup started on.
    pub timeline: TimelineId,
    /// Start of the backup (the checkpoint's REDO location).
    pub start_lsn: Lsn,
    /// End of the backup: the cluster is consistent once WAL is replayed to here.
    pub stop_lsn: Lsn,
    /// Timeline at the end of the backup.
    pub stop_timeline: TimelineId,
    /// When it started (RFC 3339 UTC).
    pub start_time: String,
    /// When it ended (RFC 3339 UTC).
    pub stop_time: String,
    /// Whether the cluster has data checksums (then VERIFY_CHECKSUMS was used).
    pub data_checksums: bool,
    /// Tablespaces other than the main data directory.
    pub tablespaces: Vec<BackupTablespace>,
    /// Every file, directory and symlink, in the order received.
    pub files: Vec<BackupFile>,
    /// Bytes of all files as PostgreSQL sent them.
    pub original_bytes: u64,
    /// Stored bytes of all chunks this backup references (shared ones included).
    pub stored_bytes: u64,
    /// Stored bytes this backup added to the repository (new chunks only).
    pub new_bytes: u64,
}

/// A tablespace of the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupTablespace {
    /// The tablespace OID (the name of its link in `pg_tblspc/`).
    pub oid: u32,
    /// Its location on the backed-up server.
    pub location: String,
}

/// What a manifest entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file with content.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (tablespace links in `pg_tblspc/`).
    Symlink {
        /// Where it points.
        target: String,
    },
}

/// One entry of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFile {
    /// Path relative to the data directory; files of tablespace OID live under
    /// `pg_tblspc/<OID>/...` as PostgreSQL names them.
    pub path: String,
    /// File, directory or symlink.
    pub kind: FileKind,
    /// Unix permission bits.
    pub mode: u32,
    /// Size in bytes (files only).
    pub size: u64,
    /// Modification time (Unix seconds).
    pub mtime: i64,
    /// CRC-32C of the content as the server's backup_manifest states it
    /// (verified when the backup was taken); `None` for files the server's
    /// manifest does not list (backup_label, tablespace_map ...).
    pub crc32c: Option<u32>,
    /// The chunks that make the file, in order.
    pub chunks: Vec<ChunkRef>,
}

/// One chunk of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The chunk id: keyed BLAKE3 of its plaintext (hex), see [`super::chunks`].
    pub id: String,
    /// Plaintext length.
    pub len: u32,
    /// Where the chunk is stored.
    pub at: ChunkLocation,
}

/// Where a chunk's encoded bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "in", rename_all = "snake_case")]
pub enum ChunkLocation {
    /// Its own object (`<stanza>/chunks/<id[..2]>/<id>`).
    Object,
    /// Inside a bundle of small chunks: `stored_len` bytes at `offset`.
    Bundle {
        /// The bundle's id (`<stanza>/bundles/<id[..2]>/<id>`).
        bundle: String,
        /// Byte offset of the chunk's encoded object inside the bundle.
        offset: u64,
        /// Length of the chunk's encoded object.
        stored_len: u64,
    },
}

/// The prefix of every backup's objects.
pub fn backups_prefix(stanza: &str) -> String {
    format!("{stanza}/backups/")
}

/// Object key of a backup's manifest (its presence makes the backup visible).
pub fn manifest_key(stanza: &str, id: &str) -> String {
    format!("{stanza}/backups/{id}/manifest")
}

/// Object key of the server's backup_manifest kept with a backup.
pub fn server_manifest_key(stanza: &str, id: &str) -> String {
    format!("{stanza}/backups/{id}/backup_manifest")
}

/// A new backup id for a backup starting at `now`: UTC time to the second,
/// then the milliseconds and a short random part, so that ids sort in start
/// order (`--backup latest` is the last one) even for two backups in the same
/// second, and two started in the same millisecond still differ.
pub fn new_backup_id(now: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "{}-{:03}{:03x}",
        now.format("%Y%m%dT%H%M%SZ"),
        now.timestamp_subsec_millis().min(999),
        fastrand::u32(..) & 0xfff
    )
}

/// Whether `id` has the form of a backup id (so it is safe in an object key).
pub fn is_backup_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl BackupManifest {
    /// The WAL segments the backup needs to be consistent: timeline, first
    /// and last segment number (from the start LSN's segment to the one
    /// holding the last byte before the stop LSN).
    pub fn wal_segments(&self, seg_size: WalSegSize) -> (TimelineId, u64, u64) {
        let first = self.start_lsn.segment_number(seg_size);
        let last =
            Lsn(self.stop_lsn.0.saturating_sub(1).max(self.start_lsn.0)).segment_number(seg_size);
        (self.timeline, first, last.max(first))
    }

    /// Every chunk reference of every file.
    pub fn chunks(&self) -> impl Iterator<Item = &ChunkRef> {
        self.files.iter().flat_map(|f| f.chunks.iter())
    }
}

impl Repository {
    /// The ids of the visible backups (those with a manifest), sorted oldest first.
    pub async fn list_backup_ids(&self) -> Result<Vec<String>, RepoError> {
        let prefix = backups_prefix(&self.stanza().name);
        let mut ids: Vec<String> = self
            .storage()
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|m| {
                let rest = m.key.strip_prefix(&prefix)?;
                let id = rest.strip_suffix("/manifest")?;
                is_backup_id(id).then(|| id.to_string())
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Every visible (complete) backup, sorted oldest first.
    pub async fn list_backups(&self) -> Result<Vec<BackupManifest>, RepoError> {
        let mut out = Vec::new();
        for id in self.list_backup_ids().await? {
            // Listed a moment ago: a manifest gone now was deleted meanwhile.
            if let Some(m) = self.load_backup(&id).await? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// One backup's manifest, verified; `None` when there is no such backup.
    pub async fn load_backup(&self, id: &str) -> Result<Option<BackupManifest>, RepoError> {
        if !is_backup_id(id) {
            return Ok(None);
        }
        let key = manifest_key(&self.stanza().name, id);
        let Some((json, _)) = self.get_object(&key).await? else {
            return Ok(None);
        };
        let manifest: BackupManifest =
            serde_json::from_slice(&json).map_err(|e| RepoError::BadMetadata {
                key: key.clone(),
                reason: e.to_string(),
            })?;
        if manifest.format > MANIFEST_FORMAT {
            return Err(RepoError::BadMetadata {
                key,
                reason: format!(
                    "manifest format {} is newer than this walship understands ({MANIFEST_FORMAT})",
                    manifest.format
                ),
            });
        }
        if manifest.id != id || manifest.system_id != self.stanza().system_id {
            return Err(RepoError::BadMetadata {
                key,
                reason: format!(
                    "manifest is for backup {} of system {}, not backup {id} of system {}",
                    manifest.id,
                    manifest.system_id,
                    self.stanza().system_id
                ),
            });
        }
        Ok(Some(manifest))
    }

    /// The server's backup_manifest kept with backup `id`; `None` when absent.
    pub async fn load_server_manifest(&self, id: &str) -> Result<Option<Vec<u8>>, RepoError> {
        if !is_backup_id(id) {
            return Ok(None);
        }
        let key = server_manifest_key(&self.stanza().name, id);
        Ok(self.get_object(&key).await?.map(|(b, _)| b))
    }

    /// Publishes a backup: the server's manifest first, then ours, whose
    /// presence makes the backup visible. Call only once every chunk it
    /// references and the WAL it needs are stored.
    pub async fn store_backup(
        &self,
        manifest: &BackupManifest,
        server_manifest: &[u8],
    ) -> Result<(), RepoError> {
        let stanza = &self.stanza().name;
        let key = server_manifest_key(stanza, &manifest.id);
        self.put_object(&key, server_manifest, PutMode::IfAbsent)
            .await?
            .0
            .require_stored(&key)?;
        let key = manifest_key(stanza, &manifest.id);
        let json = serde_json::to_vec(manifest).map_err(|e| RepoError::BadMetadata {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        self.put_object(&key, &json, PutMode::IfAbsent)
            .await?
            .0
            .require_stored(&key)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_ids_sort_by_time_and_are_key_safe() {
        let t1 = chrono::DateTime::parse_from_rfc3339("2026-11-21T20:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let t2 = t1 + chrono::Duration::seconds(1);
        let (a, b) = (new_backup_id(t1), new_backup_id(t2));
        assert!(a.starts_with("20261121T200000Z-000"), "{a}");
        assert_eq!(a.len(), "20261121T200000Z-000abc".len());
        assert!(a < b);
        // Backups a few milliseconds apart, in the same second, in order.
        for ms in [1, 10, 999] {
            let later = new_backup_id(t1 + chrono::Duration::milliseconds(ms));
            assert!(a < later && later < b, "{a} {later} {b}");
        }
        assert!(is_backup_id(&a));
        assert!(!is_backup_id("../x"));
        assert!(!is_backup_id(""));
    }

    #[test]
    fn wal_segments_of_a_backup() {
        let seg = WalSegSize::new(16 << 20).unwrap();
        let mut m = BackupManifest {
            format: MANIFEST_FORMAT,
            id: "x".into(),
            label: None,
            system_id: "1".into(),
            pg_version: 150000,
            timeline: 1,
            start_lsn: Lsn(0x2000028),
            stop_lsn: Lsn(0x2000138),
            stop_timeline: 1,
            start_time: String::new(),
            stop_time: String::new(),
            data_checksums: false,
            tablespaces: vec![],
            files: vec![],
            original_bytes: 0,
            stored_bytes: 0,
            new_bytes: 0,
        };
        assert_eq!(m.wal_segments(seg), (1, 2, 2));
        // A stop LSN at a segment boundary needs nothing of the next segment.
        m.stop_lsn = Lsn(0x4000000);
        assert_eq!(m.wal_segments(seg), (1, 2, 3));
        m.stop_lsn = Lsn(0x4000001);
        assert_eq!(m.wal_segments(seg), (1, 2, 4));
    }
}
