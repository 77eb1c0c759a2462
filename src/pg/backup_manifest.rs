//! The server's `backup_manifest` (PostgreSQL 13+) and the check of a
//! received backup against it.
//!
//! The manifest is JSON: `PostgreSQL-Backup-Manifest-Version` 1 (13-16) or
//! 2 (17+, adds `System-Identifier`), `Files` (each with `Path`, or
//! `Encoded-Path` in hex when the name is not valid UTF-8; `Size`,
//! `Last-Modified`, and `Checksum-Algorithm`/`Checksum` unless checksums
//! were turned off), `WAL-Ranges` and, on the last line, `Manifest-Checksum`:
//! the SHA-256 of everything before that line. [`ServerManifest::parse`]
//! verifies it.
//!
//! The manifest arrives at the END of the BASE_BACKUP stream, so
//! [`FileChecker`] records the size and CRC-32C of every file while it
//! streams past, and [`FileChecker::verify_against`] compares once the
//! manifest is complete. Files of a tablespace archive are listed in the
//! manifest as `pg_tblspc/<oid>/<path in the archive>`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::pg::basebackup::BackupEvent;
use crate::pg::tar::EntryKind;
use crate::pg::wal::{Lsn, TimelineId};

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not valid JSON of the manifest's shape.
    #[error("backup manifest: invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A version this code does not know.
    #[error("backup manifest: unsupported PostgreSQL-Backup-Manifest-Version {0} (known: 1, 2)")]
    Version(u64),
    /// The text does not end with the checksum line as PostgreSQL writes it.
    #[error("backup manifest: {0}")]
    Layout(String),
    /// `Manifest-Checksum` does not match the manifest's text.
    #[error("backup manifest: Manifest-Checksum mismatch: the manifest says {stored}, its text hashes to {computed}")]
    Checksum {
        /// The checksum written in the manifest.
        stored: String,
        /// The SHA-256 of the text.
        computed: String,
    },
    /// A file entry that cannot be used.
    #[error("backup manifest: file entry {index}: {what}")]
    File {
        /// Position in `Files`.
        index: usize,
        /// What is wrong.
        what: String,
    },
}

/// One file the server sent, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Path relative to the data directory (`base/5/16384`,
    /// `pg_tblspc/16385/PG_15_202209061/5/16390`). Decoded from
    /// `Encoded-Path` when the server used it (non-UTF-8 bytes replaced).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// `Last-Modified` as the server wrote it (`2026-11-21 20:00:00 GMT`).
    pub last_modified: String,
    /// `CRC32C`, `SHA256` ...; `None` when the backup had no checksums.
    pub checksum_algorithm: Option<String>,
    /// The checksum in lower-case hex; `None` without checksums.
    pub checksum: Option<String>,
}

/// A range of WAL the backup needs (`WAL-Ranges`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalRange {
    /// The timeline.
    pub timeline: TimelineId,
    /// First LSN needed.
    pub start_lsn: Lsn,
    /// End of the range.
    pub end_lsn: Lsn,
}

/// A parsed, checksum-verified server backup manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerManifest {
    /// `PostgreSQL-Backup-Manifest-Version`: 1 or 2.
    pub version: u32,
    /// The cluster's system identifier (version 2, PostgreSQL 17+).
    pub system_identifier: Option<u64>,
    /// Every file of the backup.
    pub files: Vec<ManifestFile>,
    /// The WAL the backup needs to be consistent.
    pub wal_ranges: Vec<WalRange>,
    /// `Manifest-Checksum` (hex SHA-256, verified).
    pub manifest_checksum: String,
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "PostgreSQL-Backup-Manifest-Version")]
    version: u64,
    #[serde(rename = "System-Identifier")]
    system_identifier: Option<u64>,
    #[serde(rename = "Files", default)]
    files: Vec<RawFile>,
    #[serde(rename = "WAL-Ranges", default)]
    wal_ranges: Vec<RawWalRange>,
    #[serde(rename = "Manifest-Checksum")]
    manifest_checksum: String,
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(rename = "Path")]
    path: Option<String>,
    #[serde(rename = "Encoded-Path")]
    encoded_path: Option<String>,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Last-Modified", default)]
    last_modified: String,
    #[serde(rename = "Checksum-Algorithm")]
    checksum_algorithm: Option<String>,
    #[serde(rename = "Checksum")]
    checksum: Option<String>,
}

#[derive(Deserialize)]
struct RawWalRange {
    #[serde(rename = "Timeline")]
    timeline: TimelineId,
    #[serde(rename = "Start-LSN")]
    start_lsn: Lsn,
    #[serde(rename = "End-LSN")]
    end_lsn: Lsn,
}

impl ServerManifest {
    /// Parses a whole manifest and verifies its `Manifest-Checksum`.
    pub fn parse(text: &[u8]) -> Result<ServerManifest, ManifestError> {
        let raw: RawManifest = serde_json::from_slice(text)?;
        if raw.version != 1 && raw.version != 2 {
            return Err(ManifestError::Version(raw.version));
        }
        let computed = manifest_text_checksum(text)?;
        if !computed.eq_ignore_ascii_case(&raw.manifest_checksum) {
            return Err(ManifestError::Checksum {
                stored: raw.manifest_checksum,
                computed,
            });
        }
        let mut files = Vec::with_capacity(raw.files.len());
        for (index, f) in raw.files.into_iter().enumerate() {
            let path = match (f.path, f.encoded_path) {
                (Some(p), None) => p,
                (None, Some(hex_path)) => {
                    let bytes = hex::decode(&hex_path).map_err(|e| ManifestError::File {
                        index,
                        what: format!("Encoded-Path {hex_path:?} is not hex: {e}"),
                    })?;
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                (Some(_), Some(_)) => {
                    return Err(ManifestError::File {
                        index,
                        what: "both Path and Encoded-Path".into(),
                    })
                }
                (None, None) => {
                    return Err(ManifestError::File {
                        index,
                        what: "neither Path nor Encoded-Path".into(),
                    })
                }
            };
            if f.checksum.is_some() != f.checksum_algorithm.is_some() {
                return Err(ManifestError::File {
                    index,
                    what: format!("{path}: Checksum and Checksum-Algorithm must come together"),
                });
            }
            files.push(ManifestFile {
                path,
                size: f.size,
                last_modified: f.last_modified,
                checksum_algorithm: f.checksum_algorithm,
                checksum: f.checksum.map(|c| c.to_ascii_lowercase()),
            });
        }
        Ok(ServerManifest {
            version: raw.version as u32,
            system_identifier: raw.system_identifier,
            files,
            wal_ranges: raw
                .wal_ranges
                .into_iter()
                .map(|r| WalRange {
                    timeline: r.timeline,
                    start_lsn: r.start_lsn,
                    end_lsn: r.end_lsn,
                })
                .collect(),
            manifest_checksum: raw.manifest_checksum.to_ascii_lowercase(),
        })
    }

    /// The entry for `path`, if listed.
    pub fn file(&self, path: &str) -> Option<&ManifestFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// SHA-256 (hex) of the manifest text up to and including the newline that
/// ends the line before the last one, as PostgreSQL computes it; the text
/// must end with a newline.
fn manifest_text_checksum(text: &[u8]) -> Result<String, ManifestError> {
    if text.last() != Some(&b'\n') {
        return Err(ManifestError::Layout(
            "the last line does not end with a newline".into(),
        ));
    }
    let body = &text[..text.len() - 1];
    let cut = body.iter().rposition(|&b| b == b'\n').ok_or_else(|| {
        ManifestError::Layout("expected at least 2 lines (the checksum is the last)".into())
    })?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &text[..=cut]);
    Ok(hex::encode(digest.as_ref()))
}

/// CRC-32C as the manifest writes it: the 4 bytes of the value in the
/// server's (little-endian) byte order, in hex.
pub fn crc32c_manifest_hex(crc: u32) -> String {
    hex::encode(crc.to_le_bytes())
}

/// A difference between what was received and what the manifest lists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// Listed in the manifest, never received.
    #[error("{path}: listed in the backup manifest but not received")]
    Missing {
        /// Manifest path.
        path: String,
    },
    /// Received with another size.
    #[error("{path}: size {received} received, the backup manifest says {manifest}")]
    Size {
        /// Manifest path.
        path: String,
        /// Size in the manifest.
        manifest: u64,
        /// Bytes received.
        received: u64,
    },
    /// Received with another CRC-32C.
    #[error(
        "{path}: CRC-32C {received} of the received content, the backup manifest says {manifest}"
    )]
    Checksum {
        /// Manifest path.
        path: String,
        /// Checksum in the manifest.
        manifest: String,
        /// Checksum of the bytes received.
        received: String,
    },
    /// Received, but not listed (and not a file the manifest leaves out).
    #[error("{path}: received but not listed in the backup manifest")]
    Unlisted {
        /// Path (tablespace files as `pg_tblspc/<oid>/...`).
        path: String,
    },
    /// Received more than once.
    #[error("{path}: received more than once")]
    Duplicate {
        /// Path.
        path: String,
    },
}

/// What was received of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedFile {
    /// Bytes received.
    pub size: u64,
    /// CRC-32C of the bytes.
    pub crc32c: u32,
}

/// Records the size and CRC-32C of each file as its content streams past
/// (nothing is buffered), to check them against the manifest at the end.
#[derive(Debug, Default)]
pub struct FileChecker {
    /// Prefix of the current archive's paths in the manifest's namespace.
    prefix: String,
    current: Option<(String, ReceivedFile)>,
    /// The file that ended last.
    last: Option<ReceivedFile>,
    received: BTreeMap<String, ReceivedFile>,
    duplicates: Vec<String>,
}

impl FileChecker {
    /// An empty checker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one event of the stream (the ones that matter are
    /// `ArchiveStart`, `Entry`, `Data` and `EntryEnd`; others are ignored).
    pub fn observe(&mut self, event: &BackupEvent) {
        match event {
            BackupEvent::ArchiveStart { tablespace_oid, .. } => {
                self.prefix = match tablespace_oid {
                    Some(oid) => format!("pg_tblspc/{oid}/"),
                    None => String::new(),
                };
                self.current = None;
            }
            BackupEvent::Entry(h) => {
                self.finish_current();
                if h.kind == EntryKind::File {
                    self.current = Some((
                        format!("{}{}", self.prefix, h.path),
                        ReceivedFile { size: 0, crc32c: 0 },
                    ));
                }
            }
            BackupEvent::Data(d) => self.update(d),
            BackupEvent::EntryEnd => self.finish_current(),
            _ => {}
        }
    }

    /// Adds content to the current file (as [`BackupEvent::Data`]).
    pub fn update(&mut self, data: &[u8]) {
        if let Some((_, r)) = &mut self.current {
            r.size += data.len() as u64;
            r.crc32c = crc32c::crc32c_append(r.crc32c, data);
        }
    }

    fn finish_current(&mut self) {
        if let Some((path, r)) = self.current.take() {
            self.last = Some(r);
            if self.received.insert(path.clone(), r).is_some() {
                self.duplicates.push(path);
            }
        }
    }

    /// The file that ended last (after the `EntryEnd` of a file: that file);
    /// lets the backup record the CRC-32C without computing it again.
    pub fn last_finished(&self) -> Option<ReceivedFile> {
        self.last
    }

    /// The files completed so far, by manifest path.
    pub fn received(&self) -> &BTreeMap<String, ReceivedFile> {
        &self.received
    }

    /// Compares what was received with the manifest: every listed file
    /// received with the same size and (for CRC32C manifests) checksum;
    /// received files the server does not list are reported too, except
    /// `backup_label`, `tablespace_map` and WAL in `pg_wal/` (the server
    /// leaves those out of some versions' manifests). Empty when all is well.
    pub fn verify_against(&self, manifest: &ServerManifest) -> Vec<Mismatch> {
        let mut out: Vec<Mismatch> = self
            .duplicates
            .iter()
            .map(|p| Mismatch::Duplicate { path: p.clone() })
            .collect();
        let mut listed = std::collections::HashSet::with_capacity(manifest.files.len());
        for f in &manifest.files {
            listed.insert(f.path.as_str());
            let Some(r) = self.received.get(&f.path) else {
                out.push(Mismatch::Missing {
                    path: f.path.clone(),
                });
                continue;
            };
            if r.size != f.size {
                out.push(Mismatch::Size {
                    path: f.path.clone(),
                    manifest: f.size,
                    received: r.size,
                });
                continue;
            }
            if let (Some(alg), Some(sum)) = (&f.checksum_algorithm, &f.checksum) {
                if alg.eq_ignore_ascii_case("CRC32C") {
                    let got = crc32c_manifest_hex(r.crc32c);
                    if !got.eq_ignore_ascii_case(sum) {
                        out.push(Mismatch::Checksum {
                            path: f.path.clone(),
                            manifest: sum.clone(),
                            received: got,
                        });
                    }
                }
            }
        }
        for path in self.received.keys() {
            let allowed =
                path == "backup_label" || path == "tablespace_map" || path.starts_with("pg_wal/");
            if !allowed && !listed.contains(path.as_str()) {
                out.push(Mismatch::Unlisted { path: path.clone() });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::tar::EntryHeader;
    use bytes::Bytes;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/backup_manifest")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
    }

    /// A tiny manifest in PostgreSQL's exact layout, with its real checksum.
    fn tiny(version: u32, files: &str) -> Vec<u8> {
        let sysid = if version >= 2 {
            "\n\"System-Identifier\": 7,"
        } else {
            ""
        };
        let body = format!(
            "{{ \"PostgreSQL-Backup-Manifest-Version\": {version},{sysid}\n\"Files\": [\n{files}\n],\n\
             \"WAL-Ranges\": [\n{{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }}\n],\n"
        );
        let sum = hex::encode(ring::digest::digest(&ring::digest::SHA256, body.as_bytes()));
        format!("{body}\"Manifest-Checksum\": \"{sum}\"}}\n").into_bytes()
    }

    #[test]
    fn real_v1_manifest_from_postgresql_15() {
        let m = ServerManifest::parse(&fixture("pg15.backup_manifest")).unwrap();
        assert_eq!(m.version, 1);
        assert_eq!(m.system_identifier, None);
        assert!(m.files.len() > 900, "{}", m.files.len());
        let v = m.file("PG_VERSION").expect("PG_VERSION listed");
        assert_eq!(v.size, 3);
        assert_eq!(v.checksum_algorithm.as_deref(), Some("CRC32C"));
        assert_eq!(
            v.checksum.as_deref(),
            Some(crc32c_manifest_hex(crc32c::crc32c(b"15\n")).as_str())
        );
        assert!(m.file("global/pg_control").is_some());
        assert_eq!(m.wal_ranges.len(), 1);
        assert_eq!(m.wal_ranges[0].timeline, 1);
        assert!(m.wal_ranges[0].start_lsn <= m.wal_ranges[0].end_lsn);
    }

    #[test]
    fn real_v2_manifest_from_postgresql_17_or_later() {
        let m = ServerManifest::parse(&fixture("pg18.backup_manifest")).unwrap();
        assert_eq!(m.version, 2);
        assert!(m.system_identifier.unwrap() > 0);
        let v = m.file("PG_VERSION").expect("PG_VERSION listed");
        assert_eq!(
            v.checksum.as_deref(),
            Some(crc32c_manifest_hex(crc32c::crc32c(b"18\n")).as_str())
        );
        assert!(m.wal_ranges[0].start_lsn <= m.wal_ranges[0].end_lsn);
    }

    #[test]
    fn a_changed_byte_breaks_the_manifest_checksum() {
        let mut text = fixture("pg15.backup_manifest");
        // Change one digit of a size in the middle: still valid JSON.
        let at = text
            .windows(9)
            .position(|w| w == b"\"Size\": 3")
            .expect("a Size field")
            + 8;
        text[at] = b'4';
        match ServerManifest::parse(&text) {
            Err(ManifestError::Checksum { stored, computed }) => assert_ne!(stored, computed),
            other => panic!("{other:?}"),
        }
        // Truncation is refused too (JSON or layout).
        let text = fixture("pg15.backup_manifest");
        assert!(ServerManifest::parse(&text[..text.len() - 1]).is_err());
        assert!(ServerManifest::parse(&text[..text.len() / 2]).is_err());
    }

    #[test]
    fn encoded_path_and_no_checksums() {
        let files = "{ \"Encoded-Path\": \"666f6f0a626172\", \"Size\": 1, \"Last-Modified\": \"2026-11-21 20:00:00 GMT\" },\n\
                     { \"Path\": \"x\", \"Size\": 0, \"Last-Modified\": \"2026-11-21 20:00:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"00000000\" }";
        let m = ServerManifest::parse(&tiny(2, files)).unwrap();
        assert_eq!(m.system_identifier, Some(7));
        assert_eq!(m.files[0].path, "foo\nbar");
        assert_eq!(m.files[0].checksum, None);
        assert_eq!(m.files[1].checksum.as_deref(), Some("00000000"));
        assert_eq!(m.wal_ranges[0].end_lsn, Lsn(0x2000100));
    }

    #[test]
    fn unknown_version_and_bad_entries() {
        let m = tiny(3, "");
        assert!(matches!(
            ServerManifest::parse(&m),
            Err(ManifestError::Version(3))
        ));
        let both = "{ \"Path\": \"a\", \"Encoded-Path\": \"61\", \"Size\": 1 }";
        let err = ServerManifest::parse(&tiny(1, both))
            .unwrap_err()
            .to_string();
        assert!(err.contains("both Path and Encoded-Path"), "{err}");
    }

    fn entry(path: &str, size: u64) -> BackupEvent {
        BackupEvent::Entry(EntryHeader {
            path: path.into(),
            kind: EntryKind::File,
            mode: 0o600,
            size,
            mtime: 0,
        })
    }

    fn file_json(path: &str, content: &[u8]) -> String {
        format!(
            "{{ \"Path\": \"{path}\", \"Size\": {}, \"Last-Modified\": \"2026-11-21 20:00:00 GMT\", \
             \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}",
            content.len(),
            crc32c_manifest_hex(crc32c::crc32c(content))
        )
    }

    #[test]
    fn checker_maps_tablespaces_and_names_mismatches() {
        let files = [
            file_json("PG_VERSION", b"15\n"),
            file_json("base/1/1259", b"abcdef"),
            file_json("pg_tblspc/16385/PG_15_1/5/16390", b"tablespace data"),
            file_json("global/pg_control", b"ctl"),
            file_json("base/1/sizediff", b"12345"),
        ]
        .join(",\n");
        let m = ServerManifest::parse(&tiny(1, &files)).unwrap();
        let mut c = FileChecker::new();
        let feed = |c: &mut FileChecker, path: &str, pieces: &[&[u8]]| {
            let size = pieces.iter().map(|p| p.len() as u64).sum();
            c.observe(&entry(path, size));
            for p in pieces {
                c.observe(&BackupEvent::Data(Bytes::copy_from_slice(p)));
            }
            c.observe(&BackupEvent::EntryEnd);
        };
        c.observe(&BackupEvent::ArchiveStart {
            tablespace_oid: None,
            name: "base.tar".into(),
        });
        feed(&mut c, "backup_label", &[b"label"]);
        feed(&mut c, "PG_VERSION", &[b"15", b"\n"]);
        feed(&mut c, "base/1/1259", &[b"abcdeX"]);
        feed(&mut c, "base/1/sizediff", &[b"1234"]);
        feed(&mut c, "stray", &[b"?"]);
        c.observe(&BackupEvent::EntryEnd);
        c.observe(&BackupEvent::ArchiveStart {
            tablespace_oid: Some(16385),
            name: "16385.tar".into(),
        });
        feed(&mut c, "PG_15_1/5/16390", &[b"tablespace ", b"data"]);
        let mut got: Vec<String> = c.verify_against(&m).iter().map(|m| m.to_string()).collect();
        got.sort();
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].starts_with("base/1/1259: CRC-32C"), "{got:?}");
        assert_eq!(
            got[1],
            "base/1/sizediff: size 4 received, the backup manifest says 5"
        );
        assert_eq!(
            got[2],
            "global/pg_control: listed in the backup manifest but not received"
        );
        assert_eq!(
            got[3],
            "stray: received but not listed in the backup manifest"
        );
        assert_eq!(c.received()["pg_tblspc/16385/PG_15_1/5/16390"].size, 15);
    }
}
