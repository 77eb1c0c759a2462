//! The streamer's status object, `<stanza>/status/stream`: where streaming
//! stands, for `walship info`. Written (encrypted like every object) at most
//! every few seconds and at shutdown; it is advisory and never read back by
//! the streamer.

use serde::{Deserialize, Serialize};

use crate::pg::wal::segment::TimelineId;
use crate::pg::wal::Lsn;
use crate::repo::{RepoError, Repository};
use crate::storage::PutMode;

/// The object key of a stanza's stream status.
pub fn status_key(stanza: &str) -> String {
    format!("{stanza}/status/stream")
}

/// What the streamer reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamStatus {
    /// `running` or `stopped` (after a clean shutdown).
    pub state: String,
    /// The replication slot.
    pub slot: String,
    /// Whether flush is acknowledged after the local fsync.
    pub synchronous: bool,
    /// The timeline being streamed.
    pub timeline: TimelineId,
    /// End of the WAL received (written to the spool).
    pub received_lsn: Lsn,
    /// End of the WAL stored in the repository (the flush position reported
    /// to PostgreSQL without `--synchronous`).
    pub stored_lsn: Lsn,
    /// The server's end of WAL as last reported by it.
    pub server_lsn: Lsn,
    /// `server_lsn - stored_lsn` in bytes.
    pub lag_bytes: u64,
    /// How long the oldest WAL not yet stored has waited, in seconds (0 when
    /// everything the server had is stored).
    pub lag_seconds: f64,
    /// When the last object was stored (RFC 3339 UTC).
    pub last_stored_at: Option<String>,
    /// The last WAL file stored.
    pub last_stored_object: Option<String>,
    /// When this status was written (RFC 3339 UTC).
    pub updated_at: String,
}

/// Stores the status object (overwriting the previous one).
pub async fn write_status(repo: &Repository, status: &StreamStatus) -> Result<(), RepoError> {
    let key = status_key(&repo.stanza().name);
    let json = serde_json::to_vec(status).map_err(|e| RepoError::BadMetadata {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    repo.put_object(&key, &json, PutMode::Overwrite).await?;
    Ok(())
}

/// Reads the status object; `None` when no streamer ever ran.
pub async fn read_status(repo: &Repository) -> Result<Option<StreamStatus>, RepoError> {
    let key = status_key(&repo.stanza().name);
    let Some((json, _)) = repo.get_object(&key).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&json)
        .map(Some)
        .map_err(|e| RepoError::BadMetadata {
            key,
            reason: e.to_string(),
        })
}

/// Now as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
