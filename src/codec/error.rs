//! Errors of the object codec.

use std::path::PathBuf;

use super::key::KeyId;

/// What went wrong while encoding, decoding or loading key material.
///
/// Every variant names the object (or file) concerned; decoding errors also
/// say where (chunk index, byte offset in the stored object). No variant ever
/// carries key material, passphrases or the content of a key file.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The key file could not be read or does not hold a 256-bit hex key.
    #[error("key file {}: {reason}", path.display())]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong (never the content).
        reason: String,
    },

    /// Passphrase stretching failed or its parameters are unusable.
    #[error("key derivation from passphrase: {reason}")]
    Kdf {
        /// What is wrong.
        reason: String,
    },

    /// The object is encrypted with a different key than ours.
    #[error(
        "object {name}: encrypted with another key (key id {found}, ours is {ours}): wrong key"
    )]
    WrongKey {
        /// The object (or "key check").
        name: String,
        /// The key id recorded in the object.
        found: KeyId,
        /// The id of the key we were given.
        ours: KeyId,
    },

    /// The object is encrypted and no key was given.
    #[error("object {name}: encrypted (key id {key_id}) but no key was given: a key is required")]
    KeyRequired {
        /// The object.
        name: String,
        /// The key id recorded in the object.
        key_id: KeyId,
    },

    /// A key was given but the object is not encrypted: refused, because
    /// accepting it would let anyone who can write to the storage replace an
    /// encrypted object with forged plaintext.
    #[error("object {name}: not encrypted, but this repository is encrypted: refusing an unauthenticated object")]
    NotEncrypted {
        /// The object.
        name: String,
    },

    /// The stored object was written for another name: misplaced or swapped.
    #[error("object {name}: holds a different object (name hash in its header does not match): swapped or misplaced")]
    NameMismatch {
        /// The name we read it under.
        name: String,
    },

    /// Authentication failed with the right key: corrupted or tampered with.
    #[error("object {name}: chunk {chunk} at offset {offset} failed authentication: corrupt or tampered with")]
    Tampered {
        /// The object.
        name: String,
        /// Chunk index (the trailer is the last index).
        chunk: u64,
        /// Byte offset of the chunk's frame in the stored object.
        offset: u64,
    },

    /// The stored bytes are not a valid object (bad checksum, bad structure).
    #[error("object {name}: corrupt at offset {offset}: {reason}")]
    Corrupt {
        /// The object.
        name: String,
        /// Byte offset in the stored object where the problem was found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// The stored object ends early.
    #[error("object {name}: truncated after {offset} bytes: {reason}")]
    Truncated {
        /// The object.
        name: String,
        /// How many stored bytes there were.
        offset: u64,
        /// What was expected next.
        reason: String,
    },

    /// The stored bytes do not start with the walship magic.
    #[error("object {name}: not a walship object (bad magic)")]
    NotAnObject {
        /// The object.
        name: String,
    },

    /// The object was written by a newer walship.
    #[error(
        "object {name}: format version {version} is not supported (this walship reads versions 1 and 2)"
    )]
    UnsupportedVersion {
        /// The object.
        name: String,
        /// The version found.
        version: u8,
    },

    /// The encoder was fed a different number of bytes than announced.
    #[error("object {name}: {actual} bytes of data, but {expected} were announced (source changed while being read?)")]
    LengthMismatch {
        /// The object.
        name: String,
        /// The announced plaintext length.
        expected: u64,
        /// The number of bytes pushed.
        actual: u64,
    },

    /// Invalid encoder parameters (chunk size, object too large).
    #[error("object {name}: {reason}")]
    Invalid {
        /// The object.
        name: String,
        /// What is wrong.
        reason: String,
    },

    /// Reading or writing a file or stream failed.
    #[error("object {name}: {op}: {source}")]
    Io {
        /// The object.
        name: String,
        /// What was being done, naming the file when there is one.
        op: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
