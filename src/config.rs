//! Settings: resolved from a flag, then an environment variable, then the TOML
//! config file, then the default (see `../shared/interface.md`).

use std::path::PathBuf;

/// A secret string (password, passphrase, access key). Its `Debug` and
/// `Display` never show the value, so it cannot leak through logs or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value itself: call only where the secret is used, never to print.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where the repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    /// A local directory (absolute path): the embedded default.
    Fs(PathBuf),
    /// An S3 bucket and a key prefix (no leading or trailing `/`; may be empty).
    S3 {
        /// The bucket name.
        bucket: String,
        /// The prefix under which everything of this repository is stored.
        prefix: String,
    },
}

/// S3-compatible object storage settings (only used with an `s3://` repository).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// Custom endpoint URL (MinIO, Ceph, R2, a local test server); AWS when `None`.
    pub endpoint: Option<String>,
    /// Region; the AWS chain's (or `us-east-1`) when `None`.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), usual for non-AWS stores.
    pub path_style: bool,
    /// Storage class for new objects (`STANDARD_IA`, ...).
    pub storage_class: Option<String>,
    /// Server-side encryption (`AES256` or `aws:kms`).
    pub sse: Option<String>,
    /// KMS key id when `sse` is `aws:kms`.
    pub sse_kms_key_id: Option<String>,
    /// Send request checksums (CRC trailers) only when the operation requires
    /// them: some S3-compatible stores reject the SDK's default trailers.
    pub checksum_when_required: bool,
    /// Static credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`
    /// (and `AWS_SESSION_TOKEN`); the standard AWS chain is used when `None`.
    pub access_key_id: Option<String>,
    /// See `access_key_id`.
    pub secret_access_key: Option<Secret>,
    /// See `access_key_id`.
    pub session_token: Option<Secret>,
}

/// Where the encryption key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// No key: the repository must be unencrypted.
    None,
    /// A file holding a 256-bit key as 64 hex characters.
    File(PathBuf),
    /// A passphrase (from `WALSHIP_PASSPHRASE`), stretched by a KDF.
    Passphrase(Secret),
}
