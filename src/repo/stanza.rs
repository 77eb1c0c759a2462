//! The stanza: one cluster's namespace inside the repository, and the facts
//! every object of it is checked against (system identifier, major version,
//! WAL segment size), plus how its objects are compressed and encrypted.
//!
//! The stanza file is stored as plain JSON: it must be readable before the key
//! is known, and holds nothing secret (the key check is a keyed MAC).

use serde::{Deserialize, Serialize};

use crate::codec::{Compression, KdfParams, KeyCheck};

/// The facts that identify a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterIdentity {
    /// `pg_control_system().system_identifier`.
    pub system_id: u64,
    /// `server_version_num` (for example 150018), or `major * 10000` when only
    /// the major is known (from a WAL page header).
    pub pg_version: u32,
    /// WAL segment size in bytes.
    pub wal_seg_size: u32,
}

impl ClusterIdentity {
    /// The major version (13, 14, ...).
    pub fn pg_major(&self) -> u32 {
        self.pg_version / 10000
    }
}

/// How the stanza's key is supplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// A 256-bit key file.
    KeyFile,
    /// A passphrase stretched with Argon2id (parameters in [`Encryption::kdf`]).
    Passphrase,
}

impl KeyKind {
    /// For messages.
    pub fn describe(self) -> &'static str {
        match self {
            KeyKind::KeyFile => "key file",
            KeyKind::Passphrase => "passphrase",
        }
    }
}

/// Encryption settings of a stanza.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// Key file or passphrase.
    pub key_kind: KeyKind,
    /// Argon2id parameters (passphrase only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<KdfParams>,
    /// Proves a key is this stanza's key (a wrong key is reported as such).
    pub key_check: KeyCheck,
}

/// The stanza file (`<stanza>/stanza.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stanza {
    /// Format version of this file.
    pub format: u32,
    /// The stanza name.
    pub name: String,
    /// System identifier, as decimal text (JSON numbers lose 64-bit precision).
    pub system_id: String,
    /// `server_version_num` at creation (or `major * 10000`).
    pub pg_version: u32,
    /// WAL segment size in bytes.
    pub wal_seg_size: u32,
    /// Compression of new objects.
    pub compression: Compression,
    /// `None` for an unencrypted stanza.
    pub encryption: Option<Encryption>,
    /// When it was created (RFC 3339 UTC).
    pub created: String,
}

/// The current stanza file format.
pub const STANZA_FORMAT: u32 = 1;

impl Stanza {
    /// The system identifier as a number.
    pub fn system_id(&self) -> Option<u64> {
        self.system_id.parse().ok()
    }

    /// The major version.
    pub fn pg_major(&self) -> u32 {
        self.pg_version / 10000
    }

    /// The identity recorded in the stanza.
    pub fn identity(&self) -> Option<ClusterIdentity> {
        Some(ClusterIdentity {
            system_id: self.system_id()?,
            pg_version: self.pg_version,
            wal_seg_size: self.wal_seg_size,
        })
    }
}
