//! Key material: the 256-bit repository key, its public fingerprint, the
//! passphrase KDF parameters and the key check stored in the stanza file.

use std::fmt;
use std::io::Read;
use std::path::Path;

use super::aead::fill_random;
use serde::{Deserialize, Serialize};

use super::error::CodecError;
use crate::config::Secret;

/// BLAKE3 `derive_key` contexts. Fixed forever: they are part of the format.
pub(crate) const CTX_KEY_ID: &str = "walship 2026-11-21 key id v1";
pub(crate) const CTX_KEY_CHECK: &str = "walship 2026-11-21 key check v1";
pub(crate) const CTX_OBJECT_KEY: &str = "walship 2026-11-21 object key v1";
/// Prefix of the contexts handed out by [`Key::subkey`], so a caller's context
/// can never collide with the internal ones above.
const SUBKEY_PREFIX: &str = "walship subkey: ";

/// Largest key file we read: a hex key plus generous whitespace.
const MAX_KEY_FILE_LEN: u64 = 4096;

/// A 256-bit repository key. Zeroed on drop; `Debug` shows only its [`KeyId`].
pub struct Key {
    bytes: [u8; 32],
}

impl Key {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key { bytes }
    }

    /// A new random key from the operating system's CSPRNG.
    pub fn generate() -> Key {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes);
        Key { bytes }
    }

    /// Reads a key file: exactly 64 hex characters, optionally followed by
    /// whitespace (a trailing newline). Errors name the file, never its content.
    pub fn from_hex_file(path: &Path) -> Result<Key, CodecError> {
        let err = |reason: String| CodecError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
        warn_if_readable_by_others(&file, path);
        let mut raw = Vec::with_capacity(80);
        file.take(MAX_KEY_FILE_LEN + 1)
            .read_to_end(&mut raw)
            .map_err(|e| err(format!("cannot read: {e}")))?;
        let result = parse_hex_key(&raw).map_err(err);
        wipe(&mut raw);
        result
    }

    /// Stretches a passphrase into a key with Argon2id (version 0x13) and the
    /// given parameters. The passphrase bytes are its UTF-8 encoding, as is.
    pub fn from_passphrase(passphrase: &Secret, params: &KdfParams) -> Result<Key, CodecError> {
        if passphrase.expose().is_empty() {
            return Err(CodecError::Kdf {
                reason: "the passphrase is empty".into(),
            });
        }
        let argon = params.argon2()?;
        let mut bytes = [0u8; 32];
        argon
            .hash_password_into(passphrase.expose().as_bytes(), &params.salt, &mut bytes)
            .map_err(|e| CodecError::Kdf {
                reason: format!("argon2id failed: {e}"),
            })?;
        Ok(Key { bytes })
    }

    /// The key's public fingerprint: the first 16 bytes of
    /// BLAKE3 `derive_key("walship 2026-11-21 key id v1", key)`.
    pub fn id(&self) -> KeyId {
        let full = blake3::derive_key(CTX_KEY_ID, &self.bytes);
        let mut id = [0u8; 16];
        id.copy_from_slice(&full[..16]);
        KeyId(id)
    }

    /// A 256-bit subkey for another purpose (e.g. keyed chunk hashes):
    /// BLAKE3 `derive_key("walship subkey: " + context, key)`.
    pub fn subkey(&self, context: &str) -> [u8; 32] {
        let ctx = format!("{SUBKEY_PREFIX}{context}");
        blake3::derive_key(&ctx, &self.bytes)
    }

    /// An internal derivation with one of the format's fixed contexts.
    pub(crate) fn derive(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.bytes)
    }

    /// The per-object AES-256 key and 8-byte nonce prefix: the first 40 bytes
    /// of BLAKE3 `derive_key("walship 2026-11-21 object key v1", key || salt)`.
    pub(crate) fn object_material(&self, salt: &[u8; 32]) -> ([u8; 32], [u8; 8]) {
        let mut hasher = blake3::Hasher::new_derive_key(CTX_OBJECT_KEY);
        hasher.update(&self.bytes);
        hasher.update(salt);
        let mut okm = [0u8; 40];
        hasher.finalize_xof().fill(&mut okm);
        let mut key = [0u8; 32];
        let mut prefix = [0u8; 8];
        key.copy_from_slice(&okm[..32]);
        prefix.copy_from_slice(&okm[32..]);
        wipe(&mut okm);
        (key, prefix)
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key {{ id: {} }}", self.id())
    }
}

/// Overwrites a buffer with zeros in a way the optimiser cannot elide.
pub(crate) fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to a u8.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

fn parse_hex_key(raw: &[u8]) -> Result<Key, String> {
    if raw.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(format!(
            "too large (more than {MAX_KEY_FILE_LEN} bytes): expected 64 hex characters"
        ));
    }
    let mut end = raw.len();
    while end > 0 && raw[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    let text = &raw[..end];
    if text.len() != 64 {
        return Err(format!(
            "expected 64 hex characters (a 256-bit key), found {} characters",
            text.len()
        ));
    }
    if let Some(pos) = text.iter().position(|c| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "expected 64 hex characters, found a non-hex character at position {}",
            pos + 1
        ));
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes).map_err(|e| format!("invalid hex: {e}"))?;
    Ok(Key { bytes })
}

#[cfg(unix)]
fn warn_if_readable_by_others(file: &std::fs::File, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = file.metadata() {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "key file is accessible by group or others; it should be mode 0600"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_file: &std::fs::File, _path: &Path) {}

/// A key's public fingerprint (16 bytes, shown as 32 hex characters).
/// Recorded in every encrypted object so a wrong key is told apart from
/// corruption.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 16]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut id = [0u8; 16];
        hex::decode_to_slice(&s, &mut id)
            .map_err(|e| serde::de::Error::custom(format!("key id: {e}")))?;
        Ok(KeyId(id))
    }
}

/// Argon2id parameters for stretching a passphrase (stored in the stanza
/// file, so the same passphrase yields the same key later).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Random salt (16 bytes when generated), hex in serialized form.
    #[serde(with = "hex_bytes")]
    pub salt: Vec<u8>,
    /// Memory cost in KiB.
    pub m_cost: u32,
    /// Number of passes.
    pub t_cost: u32,
    /// Degree of parallelism (lanes).
    pub p_cost: u32,
}

impl KdfParams {
    /// Default memory cost: 64 MiB.
    pub const DEFAULT_M_COST: u32 = 64 * 1024;
    /// Default passes: with 64 MiB about 0.3 s on a current x86-64 core.
    pub const DEFAULT_T_COST: u32 = 3;
    /// Default lanes.
    pub const DEFAULT_P_COST: u32 = 1;
    /// Largest memory cost accepted from a stanza file (4 GiB), so a damaged
    /// or hostile file cannot make us allocate without bound.
    pub const MAX_M_COST: u32 = 4 * 1024 * 1024;
    /// Largest number of passes accepted from a stanza file.
    pub const MAX_T_COST: u32 = 64;
    /// Largest number of lanes accepted from a stanza file.
    pub const MAX_P_COST: u32 = 64;

    /// New parameters with a fresh 16-byte random salt and the default costs.
    pub fn generate() -> KdfParams {
        let mut salt = vec![0u8; 16];
        fill_random(&mut salt);
        KdfParams {
            salt,
            m_cost: Self::DEFAULT_M_COST,
            t_cost: Self::DEFAULT_T_COST,
            p_cost: Self::DEFAULT_P_COST,
        }
    }

    fn argon2(&self) -> Result<argon2::Argon2<'static>, CodecError> {
        let bad = |reason: String| CodecError::Kdf { reason };
        if self.salt.len() < 8 || self.salt.len() > 64 {
            return Err(bad(format!(
                "salt must be 8 to 64 bytes, found {}",
                self.salt.len()
            )));
        }
        if self.m_cost > Self::MAX_M_COST
            || self.t_cost > Self::MAX_T_COST
            || self.p_cost > Self::MAX_P_COST
        {
            return Err(bad(format!(
                "costs out of range (m_cost {} KiB, t_cost {}, p_cost {}; limits {} KiB, {}, {})",
                self.m_cost,
                self.t_cost,
                self.p_cost,
                Self::MAX_M_COST,
                Self::MAX_T_COST,
                Self::MAX_P_COST
            )));
        }
        let params = argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| bad(format!("invalid argon2id parameters: {e}")))?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }
}

impl fmt::Debug for KdfParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KdfParams")
            .field("salt", &hex::encode(&self.salt))
            .field("m_cost", &self.m_cost)
            .field("t_cost", &self.t_cost)
            .field("p_cost", &self.p_cost)
            .finish()
    }
}

/// Proof that a key is the repository's key, stored in the stanza file:
/// a random salt and `BLAKE3-keyed(derive_key("walship 2026-11-21 key check v1", key), salt)`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct KeyCheck {
    /// The key's fingerprint, to report a wrong key with both ids.
    pub key_id: KeyId,
    /// Random salt (16 bytes).
    #[serde(with = "hex_bytes")]
    pub salt: Vec<u8>,
    /// 32-byte keyed BLAKE3 of the salt.
    #[serde(with = "hex_bytes")]
    pub mac: Vec<u8>,
}

impl KeyCheck {
    /// A key check for `key` with a fresh random salt.
    pub fn create(key: &Key) -> KeyCheck {
        let mut salt = vec![0u8; 16];
        fill_random(&mut salt);
        let mac = Self::mac(key, &salt).to_vec();
        KeyCheck {
            key_id: key.id(),
            salt,
            mac,
        }
    }

    /// `Ok` when `key` is the key this check was created with, otherwise
    /// [`CodecError::WrongKey`].
    pub fn verify(&self, key: &Key) -> Result<(), CodecError> {
        let wrong = || CodecError::WrongKey {
            name: "key check (stanza)".into(),
            found: self.key_id,
            ours: key.id(),
        };
        if key.id() != self.key_id || self.mac.len() != 32 {
            return Err(wrong());
        }
        let expected = Self::mac(key, &self.salt);
        // Constant-time comparison: blake3::Hash's `==` is constant time.
        let mut got = [0u8; 32];
        got.copy_from_slice(&self.mac);
        if blake3::Hash::from(got) != blake3::Hash::from(expected) {
            return Err(wrong());
        }
        Ok(())
    }

    fn mac(key: &Key, salt: &[u8]) -> [u8; 32] {
        let mut check_key = key.derive(CTX_KEY_CHECK);
        let mac = *blake3::keyed_hash(&check_key, salt).as_bytes();
        wipe(&mut check_key);
        mac
    }
}

/// Serde helper: bytes as a lowercase hex string.
pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes bytes as hex.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    /// Deserializes bytes from hex.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(&s).map_err(serde::de::Error::custom)
    }
}
