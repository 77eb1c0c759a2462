//! What the repository means: the stanza, the WAL archive and its index.
//!
//! - [`backup`]: base backups: their manifests and catalog.
//! - [`chunks`]: the content-addressed chunk store backups share.
//! - [`stanza`]: the stanza file and the cluster identity it records.
//! - [`layout`]: where each kind of object lives (object keys).
//! - [`wal`]: pushing and fetching WAL files, with the no-overwrite rule.
//! - [`index`]: the per-segment WAL index (LSN range, commit times).
//! - [`prefetch`]: archive-get's read-ahead spool.
//! - [`catalog`]: the listing of the WAL archive per timeline, gaps, window.
//!
//! [`Repository`] ties a storage backend to one stanza and its keys; every
//! object goes through the codec with its full key as the name bound into
//! the encryption, so an object moved or swapped fails to decode.

pub mod backup;
pub mod catalog;
pub mod chunks;
pub mod error;
pub mod index;
pub mod layout;
pub mod prefetch;
pub mod stanza;
pub mod wal;

use std::sync::Arc;

use bytes::Bytes;

use crate::codec::{self, CodecSettings, KdfParams, Key, KeyCheck, ObjectSummary};
use crate::config::{KeySource, Settings};
use crate::storage::{PutMode, PutOutcome, Storage};

pub use error::RepoError;
pub use stanza::{ClusterIdentity, Stanza};

/// A storage backend bound to one stanza, with its codec settings and key.
pub struct Repository {
    storage: Storage,
    stanza: Stanza,
    codec: CodecSettings,
    /// The WAL index entry this process wrote last (timeline, segment) and
    /// its crossing record: the next segment's scan needs it, and a streamer
    /// indexes segments in order, so it need not read its own entry back.
    last_indexed: std::sync::Mutex<Option<LastIndexed>>,
}

/// See [`Repository::crossing_into`].
type LastIndexed = (
    crate::pg::wal::segment::TimelineId,
    u64,
    Option<crate::pg::wal::record::CrossingRecord>,
);

/// The key material resolved from the settings (before the stanza is known).
enum KeyInput {
    None,
    File(Key),
    Passphrase(crate::config::Secret),
}

impl Repository {
    /// Opens an existing stanza; [`RepoError::StanzaMissing`] when there is none.
    pub async fn open(settings: &Settings) -> Result<Repository, RepoError> {
        let storage = open_storage(settings).await?;
        let key_input = load_key_input(&settings.key)?;
        match read_stanza(&storage, &settings.stanza).await? {
            Some(stanza) => Repository::bind(storage, stanza, key_input),
            None => Err(RepoError::StanzaMissing {
                stanza: settings.stanza.clone(),
                repo: storage.describe(),
            }),
        }
    }

    /// Opens the stanza, creating it for `identity` when missing; checks that an
    /// existing stanza belongs to the same cluster (`source_name` says where
    /// `identity` was read, for the error).
    pub async fn open_or_create(
        settings: &Settings,
        identity: ClusterIdentity,
        source_name: &str,
    ) -> Result<(Repository, bool), RepoError> {
        let storage = open_storage(settings).await?;
        let key_input = load_key_input(&settings.key)?;
        if let Some(stanza) = read_stanza(&storage, &settings.stanza).await? {
            check_identity(&stanza, &identity, source_name)?;
            return Ok((Repository::bind(storage, stanza, key_input)?, false));
        }
        let (encryption, key) = match key_input {
            KeyInput::None => (None, None),
            KeyInput::File(key) => {
                let enc = stanza::Encryption {
                    key_kind: stanza::KeyKind::KeyFile,
                    kdf: None,
                    key_check: KeyCheck::create(&key),
                };
                (Some(enc), Some(key))
            }
            KeyInput::Passphrase(pass) => {
                let params = passphrase_kdf_params();
                let key = Key::from_passphrase(&pass, &params)?;
                let enc = stanza::Encryption {
                    key_kind: stanza::KeyKind::Passphrase,
                    kdf: Some(params),
                    key_check: KeyCheck::create(&key),
                };
                (Some(enc), Some(key))
            }
        };
        let stanza = Stanza {
            format: stanza::STANZA_FORMAT,
            name: settings.stanza.clone(),
            system_id: identity.system_id.to_string(),
            pg_version: identity.pg_version,
            wal_seg_size: identity.wal_seg_size,
            compression: settings.compress,
            encryption,
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        let key_name = layout::stanza_file(&settings.stanza);
        let json = serde_json::to_vec_pretty(&stanza).map_err(|e| RepoError::StanzaCorrupt {
            key: key_name.clone(),
            reason: e.to_string(),
        })?;
        match storage
            .put(&key_name, Bytes::from(json), PutMode::IfAbsent)
            .await?
        {
            PutOutcome::Stored => {
                tracing::info!(stanza = %stanza.name, system_id = %stanza.system_id, "stanza created");
                let codec = CodecSettings {
                    compression: stanza.compression,
                    key: key.map(Arc::new),
                };
                Ok((
                    Repository {
                        storage,
                        stanza,
                        codec,
                        last_indexed: Default::default(),
                    },
                    true,
                ))
            }
            // Someone else created it at the same moment: use theirs.
            PutOutcome::AlreadyExists => {
                let stanza = read_stanza(&storage, &settings.stanza)
                    .await?
                    .ok_or_else(|| RepoError::StanzaCorrupt {
                        key: key_name,
                        reason: "vanished after creation".into(),
                    })?;
                check_identity(&stanza, &identity, source_name)?;
                let key_input = load_key_input(&settings.key)?;
                Ok((Repository::bind(storage, stanza, key_input)?, false))
            }
        }
    }

    fn bind(
        storage: Storage,
        stanza: Stanza,
        key_input: KeyInput,
    ) -> Result<Repository, RepoError> {
        let key = match (&stanza.encryption, key_input) {
            (None, KeyInput::None) => None,
            (None, _) => {
                return Err(RepoError::NotEncrypted {
                    stanza: stanza.name.clone(),
                })
            }
            (Some(_), KeyInput::None) => {
                return Err(RepoError::KeyRequired {
                    stanza: stanza.name.clone(),
                })
            }
            (Some(enc), input) => {
                let key = match (enc.key_kind, input) {
                    (stanza::KeyKind::KeyFile, KeyInput::File(k)) => k,
                    (stanza::KeyKind::Passphrase, KeyInput::Passphrase(p)) => {
                        let params = enc.kdf.as_ref().ok_or_else(|| RepoError::StanzaCorrupt {
                            key: layout::stanza_file(&stanza.name),
                            reason: "passphrase stanza without KDF parameters".into(),
                        })?;
                        Key::from_passphrase(&p, params)?
                    }
                    (kind, other) => {
                        return Err(RepoError::KeyKindMismatch {
                            stanza: stanza.name.clone(),
                            expected: kind.describe(),
                            given: match other {
                                KeyInput::File(_) => "key file",
                                _ => "passphrase",
                            },
                        })
                    }
                };
                enc.key_check.verify(&key)?;
                Some(Arc::new(key))
            }
        };
        let codec = CodecSettings {
            compression: stanza.compression,
            key,
        };
        Ok(Repository {
            storage,
            stanza,
            codec,
            last_indexed: Default::default(),
        })
    }

    /// The stanza.
    pub fn stanza(&self) -> &Stanza {
        &self.stanza
    }

    /// The storage backend.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Removes the temp files of writers killed mid-write under the stanza's
    /// `area` (`wal`, `bundles`, ...): see [`Storage::remove_stale_temps`].
    /// Only a convenience: a failure is logged, not returned.
    pub async fn remove_stale_temps(&self, area: &str) {
        let prefix = format!("{}/{area}/", self.stanza.name);
        match self.storage.remove_stale_temps(&prefix).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                removed = n,
                prefix,
                "removed temp files left by writers that were killed"
            ),
            Err(e) => tracing::warn!(prefix, error = %e, "could not remove stale temp files"),
        }
    }

    /// The codec settings (compression and key) of this stanza.
    pub fn codec(&self) -> &CodecSettings {
        &self.codec
    }

    /// Encodes `plain` and stores it under `key`.
    pub async fn put_object(
        &self,
        key: &str,
        plain: &[u8],
        mode: PutMode,
    ) -> Result<(PutOutcome, ObjectSummary), RepoError> {
        let (stored, summary) = codec::encode_bytes(key, plain, &self.codec)?;
        let outcome = self.storage.put(key, Bytes::from(stored), mode).await?;
        Ok((outcome, summary))
    }

    /// Fetches and decodes the object at `key`; `None` when it does not exist.
    pub async fn get_object(
        &self,
        key: &str,
    ) -> Result<Option<(Vec<u8>, ObjectSummary)>, RepoError> {
        let Some(stored) = self.storage.get_bytes(key).await? else {
            return Ok(None);
        };
        let (plain, summary) = codec::decode_bytes(key, &stored, self.codec.key.clone())?;
        Ok(Some((plain, summary)))
    }
}

/// Argon2id costs for a new passphrase stanza. Every archive-push and
/// archive-get stretches the passphrase again, so these follow OWASP's
/// minimum (19 MiB, 2 passes) rather than an interactive-login budget; a key
/// file costs nothing and is the recommended choice for the hooks.
fn passphrase_kdf_params() -> KdfParams {
    let mut params = KdfParams::generate();
    params.m_cost = 19 * 1024;
    params.t_cost = 2;
    params.p_cost = 1;
    params
}

async fn open_storage(settings: &Settings) -> Result<Storage, RepoError> {
    let location = settings.repo().map_err(|e| RepoError::BadMetadata {
        key: "repository".into(),
        reason: e.to_string(),
    })?;
    Ok(Storage::open(location, &settings.s3).await?)
}

fn load_key_input(source: &KeySource) -> Result<KeyInput, RepoError> {
    Ok(match source {
        KeySource::None => KeyInput::None,
        KeySource::File(path) => KeyInput::File(Key::from_hex_file(path)?),
        KeySource::Passphrase(p) => KeyInput::Passphrase(p.clone()),
    })
}

/// Reads the stanza file; `None` when it does not exist.
pub async fn read_stanza(storage: &Storage, name: &str) -> Result<Option<Stanza>, RepoError> {
    let key = layout::stanza_file(name);
    let Some(bytes) = storage.get_bytes(&key).await? else {
        return Ok(None);
    };
    let stanza: Stanza = serde_json::from_slice(&bytes).map_err(|e| RepoError::StanzaCorrupt {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    if stanza.format > stanza::STANZA_FORMAT {
        return Err(RepoError::StanzaCorrupt {
            key,
            reason: format!(
                "format {} is newer than this walship understands ({})",
                stanza.format,
                stanza::STANZA_FORMAT
            ),
        });
    }
    if stanza.system_id().is_none() {
        return Err(RepoError::StanzaCorrupt {
            key,
            reason: format!("bad system_id `{}`", stanza.system_id),
        });
    }
    Ok(Some(stanza))
}

/// Checks that `identity` (read from `source_name`) is the stanza's cluster.
pub fn check_identity(
    stanza: &Stanza,
    identity: &ClusterIdentity,
    source_name: &str,
) -> Result<(), RepoError> {
    let mismatch = |what, stanza_value: String, found: String| RepoError::ClusterMismatch {
        stanza: stanza.name.clone(),
        what,
        stanza_value,
        found,
        source_name: source_name.to_string(),
    };
    if stanza.system_id() != Some(identity.system_id) {
        return Err(mismatch(
            "system identifier",
            stanza.system_id.clone(),
            identity.system_id.to_string(),
        ));
    }
    if stanza.pg_major() != identity.pg_major() {
        return Err(mismatch(
            "major version",
            stanza.pg_major().to_string(),
            identity.pg_major().to_string(),
        ));
    }
    if stanza.wal_seg_size != identity.wal_seg_size {
        return Err(mismatch(
            "WAL segment size",
            stanza.wal_seg_size.to_string(),
            identity.wal_seg_size.to_string(),
        ));
    }
    Ok(())
}
