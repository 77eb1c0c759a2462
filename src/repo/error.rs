//! Errors of the repository layer.

use crate::codec::CodecError;
use crate::storage::StorageError;

/// What can go wrong reading or writing the repository. Each variant names the
/// stanza, object or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The storage backend failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An object could not be encoded or decoded (corrupt, tampered, wrong key ...).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The stanza does not exist yet.
    #[error("stanza `{stanza}` does not exist in {repo}: run `walship init` (or archive a segment) first")]
    StanzaMissing {
        /// The stanza name.
        stanza: String,
        /// The repository, as a URL.
        repo: String,
    },
    /// The stanza file cannot be understood.
    #[error("stanza file {key} is unreadable: {reason}")]
    StanzaCorrupt {
        /// The object key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The stanza belongs to another cluster (system identifier or version differ).
    #[error("stanza `{stanza}` belongs to another cluster: {what} is {stanza_value} in the stanza but {found} in {source_name}")]
    ClusterMismatch {
        /// The stanza name.
        stanza: String,
        /// What differs ("system identifier", "major version", "WAL segment size").
        what: &'static str,
        /// The stanza's value.
        stanza_value: String,
        /// The value found.
        found: String,
        /// Where the found value came from (a file path or the server).
        source_name: String,
    },
    /// The repository is encrypted and no key was given.
    #[error("stanza `{stanza}` is encrypted: give its key with --key-file, WALSHIP_KEY_FILE or WALSHIP_PASSPHRASE")]
    KeyRequired {
        /// The stanza name.
        stanza: String,
    },
    /// A key was given for an unencrypted repository.
    #[error("stanza `{stanza}` is not encrypted, but a key was given: remove the key setting (a stanza's encryption is chosen when it is created)")]
    NotEncrypted {
        /// The stanza name.
        stanza: String,
    },
    /// The key given is of the other kind than the stanza's (key file vs passphrase).
    #[error("stanza `{stanza}` was created with a {expected}, but a {given} was given")]
    KeyKindMismatch {
        /// The stanza name.
        stanza: String,
        /// What the stanza was made with.
        expected: &'static str,
        /// What was given.
        given: &'static str,
    },
    /// A different file is already stored under this WAL name: nothing was overwritten.
    #[error("{name} is already in the repository with different content (stored checksum {stored}, new checksum {new}): not overwritten")]
    WalConflict {
        /// The WAL file name.
        name: String,
        /// BLAKE3 of the stored plaintext.
        stored: String,
        /// BLAKE3 of the file offered.
        new: String,
    },
    /// A WAL file offered to archive-push is not acceptable.
    #[error("{path}: {reason}")]
    BadWalFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A metadata object (index, status) does not parse.
    #[error("object {key} is unreadable: {reason}")]
    BadMetadata {
        /// The object key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The local prefetch spool could not be written.
    #[error("prefetch spool: {op} {}: {source}", path.display())]
    Spool {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Decoded content could not be written where it was going.
    #[error("cannot write the content of {key}: {source}")]
    Output {
        /// The object being decoded.
        key: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
