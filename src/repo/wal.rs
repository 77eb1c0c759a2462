//! Pushing and fetching WAL files: the rules of archive-push and archive-get
//! that do not depend on where the file comes from (archive_command or the
//! streamer) or goes to (pg_wal, a spool).
//!
//! A segment is stored with `IfAbsent`, so it is never overwritten: when the
//! name is taken, the stored content is decoded and compared, identical is a
//! no-op ([`PushOutcome::Duplicate`]) and different is [`RepoError::WalConflict`].
//! Only `.partial` objects are replaced, because they grow.

use bytes::Bytes;

use super::index::WalIndexEntry;
use super::{layout, RepoError, Repository};
use crate::codec;
use crate::pg::wal::page::parse_segment_start;
use crate::pg::wal::record::summarize_segment;
use crate::pg::wal::segment::{parse_timeline_history, TimelineId, WalFileName, WalSegSize};
use crate::pg::wal::Lsn;
use crate::storage::{PutMode, PutOutcome};

/// What happened to a pushed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Newly stored (durably).
    Stored,
    /// The same content was already stored: nothing written.
    Duplicate,
}

/// BLAKE3 of a WAL file's content, as hex: the identity used for duplicates.
pub fn content_checksum(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

impl Repository {
    /// The segment size of this stanza.
    pub fn seg_size(&self) -> Result<WalSegSize, RepoError> {
        WalSegSize::new(self.stanza().wal_seg_size).map_err(|e| RepoError::StanzaCorrupt {
            key: layout::stanza_file(&self.stanza().name),
            reason: e.to_string(),
        })
    }

    /// Checks that a segment (or partial) belongs to this stanza's cluster and
    /// sits where its name says. `origin` names the file for errors.
    pub fn check_segment(
        &self,
        name: &WalFileName,
        data: &[u8],
        origin: &str,
    ) -> Result<(), RepoError> {
        let seg_size = self.seg_size()?;
        let (tli, segno) = match name {
            WalFileName::Segment { tli, segno } | WalFileName::Partial { tli, segno } => {
                (*tli, *segno)
            }
            _ => return Ok(()),
        };
        let bad = |reason: String| RepoError::BadWalFile {
            path: origin.to_string(),
            reason,
        };
        if matches!(name, WalFileName::Segment { .. })
            && data.len() as u64 != u64::from(seg_size.bytes())
        {
            return Err(bad(format!(
                "is {} bytes, but this stanza's WAL segments are {} bytes",
                data.len(),
                seg_size.bytes()
            )));
        }
        let start =
            parse_segment_start(data).map_err(|e| bad(format!("not a WAL segment: {e}")))?;
        let identity = super::ClusterIdentity {
            system_id: start.system_id,
            pg_version: start.pg_major.unwrap_or(0) * 10000,
            wal_seg_size: start.seg_size,
        };
        super::check_identity(self.stanza(), &identity, origin)?;
        let expected = Lsn::from_segment(segno, seg_size);
        if start.pageaddr != expected {
            return Err(bad(format!(
                "its first page is for LSN {} but its name says {}",
                start.pageaddr, expected
            )));
        }
        if start.tli > tli {
            return Err(bad(format!(
                "its first page is on timeline {} but its name says {}",
                start.tli, tli
            )));
        }
        Ok(())
    }

    /// Stores one WAL file (already read into memory) under its name.
    pub async fn push_wal(
        &self,
        name: &WalFileName,
        data: &[u8],
        origin: &str,
    ) -> Result<PushOutcome, RepoError> {
        let seg_size = self.seg_size()?;
        self.check_segment(name, data, origin)?;
        let key = layout::wal_object(&self.stanza().name, name, seg_size);
        let file = name.file_name(seg_size);
        let mode = match name {
            WalFileName::Partial { .. } => PutMode::Overwrite,
            _ => PutMode::IfAbsent,
        };
        let (stored, summary) = codec::encode_bytes(&key, data, self.codec())?;
        // The codec's checksum is BLAKE3 of the plaintext: the same identity
        // as `content_checksum`, without hashing the segment twice.
        let checksum = summary.checksum.to_string();
        let outcome = match self.storage().put(&key, Bytes::from(stored), mode).await? {
            PutOutcome::Stored => PushOutcome::Stored,
            PutOutcome::AlreadyExists => {
                let existing = self.get_object(&key).await?;
                let stored_checksum = match existing {
                    Some((plain, _)) => content_checksum(&plain),
                    None => {
                        return Err(RepoError::BadMetadata {
                            key,
                            reason: "existed, then vanished during the push".into(),
                        })
                    }
                };
                if stored_checksum != checksum {
                    return Err(RepoError::WalConflict {
                        name: file,
                        stored: stored_checksum,
                        new: checksum,
                    });
                }
                PushOutcome::Duplicate
            }
        };
        if let WalFileName::Segment { tli, segno } = name {
            let summary = summarize_segment(data, seg_size).map_err(|e| e.to_string());
            if let Err(reason) = &summary {
                tracing::warn!(file = %file, %reason, "WAL records not decodable; stored as is, not indexed");
            }
            let entry = WalIndexEntry::new(
                &file,
                *tli,
                Lsn::from_segment(*segno, seg_size),
                summary,
                checksum,
                data.len() as u64,
            );
            self.put_index(&entry).await?;
        }
        Ok(outcome)
    }

    /// Writes (or rewrites) a segment's index entry.
    pub async fn put_index(&self, entry: &WalIndexEntry) -> Result<(), RepoError> {
        let key = layout::wal_index_object(&self.stanza().name, entry.timeline, &entry.file);
        let json = serde_json::to_vec(entry).map_err(|e| RepoError::BadMetadata {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        self.put_object(&key, &json, PutMode::Overwrite).await?;
        Ok(())
    }

    /// Reads a segment's index entry; `None` when it has none.
    pub async fn get_index(
        &self,
        tli: u32,
        file: &str,
    ) -> Result<Option<WalIndexEntry>, RepoError> {
        let key = layout::wal_index_object(&self.stanza().name, tli, file);
        let Some((json, _)) = self.get_object(&key).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&json)
            .map(Some)
            .map_err(|e| RepoError::BadMetadata {
                key,
                reason: e.to_string(),
            })
    }

    /// For recovery to the latest point (`archive-get --allow-partial`): the
    /// stored `.partial` of segment `segno` on `tli`, zero-padded to the
    /// segment size, only when no full segment of that name exists and it is
    /// the last segment of its timeline: no full segment after it on `tli`,
    /// and no higher timeline branching off `tli` before its end (a higher
    /// timeline without a readable history file counts as branching). `None`
    /// otherwise. A partial object holds the written prefix of its segment;
    /// PostgreSQL reads the zeros after it as the end of the WAL.
    pub async fn fetch_partial_as_segment(
        &self,
        tli: TimelineId,
        segno: u64,
    ) -> Result<Option<Vec<u8>>, RepoError> {
        let seg_size = self.seg_size()?;
        let catalog = super::catalog::WalCatalog::load(self).await?;
        let Some(files) = catalog.timelines.get(&tli) else {
            return Ok(None);
        };
        if !files.partials.contains_key(&segno) || files.segments.range(segno..).next().is_some() {
            return Ok(None);
        }
        let seg_end = Lsn::from_segment(segno + 1, seg_size);
        for (&higher, _) in catalog.timelines.range(tli + 1..) {
            let history = WalFileName::History { tli: higher };
            let Some(text) = self.fetch_wal(&history).await? else {
                tracing::info!(
                    timeline = higher,
                    "a higher timeline has no history file: not using the .partial"
                );
                return Ok(None);
            };
            let entries = parse_timeline_history(&String::from_utf8_lossy(&text)).map_err(|e| {
                RepoError::BadWalFile {
                    path: layout::wal_object(&self.stanza().name, &history, seg_size),
                    reason: e.to_string(),
                }
            })?;
            if entries
                .iter()
                .any(|e| e.parent_tli == tli && e.switch_lsn < seg_end)
            {
                return Ok(None);
            }
        }
        let partial = WalFileName::Partial { tli, segno };
        let Some(mut data) = self.fetch_wal(&partial).await? else {
            return Ok(None);
        };
        if data.len() > seg_size.bytes() as usize {
            return Err(RepoError::BadWalFile {
                path: layout::wal_object(&self.stanza().name, &partial, seg_size),
                reason: format!(
                    "{} bytes, more than a segment ({} bytes)",
                    data.len(),
                    seg_size.bytes()
                ),
            });
        }
        data.resize(seg_size.bytes() as usize, 0);
        Ok(Some(data))
    }

    /// Fetches one WAL file, verified: authenticated and checksummed by the
    /// codec, and for segments checked against the stanza. `None` only when
    /// no object exists under that name.
    pub async fn fetch_wal(&self, name: &WalFileName) -> Result<Option<Vec<u8>>, RepoError> {
        let seg_size = self.seg_size()?;
        let key = layout::wal_object(&self.stanza().name, name, seg_size);
        let Some((data, _)) = self.get_object(&key).await? else {
            return Ok(None);
        };
        self.check_segment(name, &data, &key)?;
        Ok(Some(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_checksum_is_the_content_checksum() {
        let data = b"some WAL-ish bytes".repeat(1000);
        let (_, summary) =
            codec::encode_bytes("x", &data, &codec::CodecSettings::default()).unwrap();
        assert_eq!(summary.checksum.to_string(), content_checksum(&data));
    }
}
