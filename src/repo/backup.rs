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

use crate::pg::wal::segment::TimelineId;
use crate::pg::wal::Lsn;

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
