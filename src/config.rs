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

use serde::Deserialize;
use std::path::Path;

use crate::codec::Compression;

/// A setting that could not be resolved; always names the key and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys or bad types.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, naming the key.
        message: String,
    },
    /// A value that is present but malformed.
    #[error("invalid value for {key} (from {origin}): {reason}")]
    Invalid {
        /// The setting, as the user wrote it (`--repo`, `WALSHIP_REPO`, `repo`).
        key: String,
        /// `flag`, `environment` or the config file path.
        origin: String,
        /// Why it is refused.
        reason: String,
    },
    /// A setting the command needs is not set anywhere.
    #[error("{0}")]
    Missing(String),
}

/// The TOML config file: the same keys as the flags. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    repo: Option<String>,
    stanza: Option<String>,
    pg: Option<String>,
    key_file: Option<PathBuf>,
    compress: Option<String>,
    log_level: Option<String>,
    #[serde(default)]
    s3: FileS3,
    #[serde(default)]
    archive_get: FileArchiveGet,
    #[serde(default)]
    backup: FileBackup,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBackup {
    wal_timeout: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileS3 {
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    storage_class: Option<String>,
    sse: Option<String>,
    sse_kms_key_id: Option<String>,
    checksum_when_required: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileArchiveGet {
    prefetch: Option<usize>,
    spool: Option<PathBuf>,
}

/// The values given on the command line (the highest precedence).
#[derive(Debug, Clone, Default)]
pub struct FlagValues {
    /// `--config`
    pub config: Option<PathBuf>,
    /// `--repo`
    pub repo: Option<String>,
    /// `--stanza`
    pub stanza: Option<String>,
    /// `--pg`
    pub pg: Option<String>,
    /// `--key-file`
    pub key_file: Option<PathBuf>,
    /// `--compress`
    pub compress: Option<String>,
    /// `--log-level`
    pub log_level: Option<String>,
}

/// archive-get's read-ahead settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchSettings {
    /// How many following segments to fetch ahead (0 turns prefetch off).
    pub depth: usize,
    /// Where prefetched segments wait (outside the data directory); a
    /// per-stanza directory under the system temp dir when `None`.
    pub spool: Option<PathBuf>,
}

/// Every setting, resolved: flag > environment > config file > default.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The repository; `None` when not set anywhere (see [`Settings::repo`]).
    pub repo: Option<RepoLocation>,
    /// The stanza: one cluster's namespace inside the repository.
    pub stanza: String,
    /// libpq connection string (URI or key=value); empty means libpq's defaults.
    pub pg: String,
    /// Where the encryption key comes from.
    pub key: KeySource,
    /// Compression for a stanza created by this run.
    pub compress: Compression,
    /// Log level.
    pub log_level: tracing::Level,
    /// S3 settings (used with an `s3://` repository).
    pub s3: S3Settings,
    /// archive-get read-ahead.
    pub prefetch: PrefetchSettings,
    /// `walship backup`: seconds to wait for the WAL a backup needs
    /// (`WALSHIP_BACKUP_WAL_TIMEOUT`, `[backup] wal_timeout`; default 300).
    pub backup_wal_timeout: std::time::Duration,
}

/// Default number of segments archive-get reads ahead from S3 (none from a
/// local directory).
pub const DEFAULT_PREFETCH: usize = 8;

impl Settings {
    /// Resolves the settings from the flags and the process environment.
    pub fn resolve(flags: &FlagValues) -> Result<Settings, ConfigError> {
        Settings::resolve_with(flags, &|k| std::env::var(k).ok())
    }

    /// Resolves with an injectable environment (for tests).
    pub fn resolve_with(
        flags: &FlagValues,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        let config_path = flags
            .config
            .clone()
            .or_else(|| env("WALSHIP_CONFIG").map(PathBuf::from));
        let (file, file_origin) = match &config_path {
            Some(path) => (load_file(path)?, path.display().to_string()),
            None => (FileConfig::default(), String::new()),
        };

        // Pick the first source that has a value, remembering where it came from
        // so that an error can say which one to fix.
        let pick = |flag: Option<String>,
                    flag_name: &str,
                    env_name: &str,
                    file_val: Option<String>,
                    file_key: &str| {
            if let Some(v) = flag {
                Some((v, flag_name.to_string(), "flag".to_string()))
            } else if let Some(v) = env(env_name) {
                Some((v, env_name.to_string(), "environment".to_string()))
            } else {
                file_val.map(|v| (v, file_key.to_string(), file_origin.clone()))
            }
        };

        let repo = match pick(
            flags.repo.clone(),
            "--repo",
            "WALSHIP_REPO",
            file.repo.clone(),
            "repo",
        ) {
            Some((v, key, origin)) => {
                Some(parse_repo(&v).map_err(|reason| ConfigError::Invalid {
                    key,
                    origin,
                    reason,
                })?)
            }
            None => None,
        };

        let stanza = match pick(
            flags.stanza.clone(),
            "--stanza",
            "WALSHIP_STANZA",
            file.stanza.clone(),
            "stanza",
        ) {
            Some((v, key, origin)) => {
                validate_stanza(&v).map_err(|reason| ConfigError::Invalid {
                    key,
                    origin,
                    reason,
                })?;
                v
            }
            None => "main".to_string(),
        };

        let pg = if let Some(v) = &flags.pg {
            if conninfo_has_password(v) {
                return Err(ConfigError::Invalid {
                    key: "--pg".into(),
                    origin: "flag".into(),
                    reason: "a password on the command line would be visible in the process list; \
                             use PGPASSWORD, ~/.pgpass or WALSHIP_PG instead"
                        .into(),
                });
            }
            v.clone()
        } else {
            env("WALSHIP_PG")
                .or_else(|| env("DATABASE_URL"))
                .or_else(|| file.pg.clone())
                .unwrap_or_default()
        };

        let key_file = flags
            .key_file
            .clone()
            .or_else(|| env("WALSHIP_KEY_FILE").map(PathBuf::from))
            .or_else(|| file.key_file.clone());
        let key = match (key_file, env("WALSHIP_PASSPHRASE")) {
            (Some(path), _) => KeySource::File(path),
            (None, Some(p)) => KeySource::Passphrase(Secret::new(p)),
            (None, None) => KeySource::None,
        };

        let compress = match pick(
            flags.compress.clone(),
            "--compress",
            "WALSHIP_COMPRESS",
            file.compress.clone(),
            "compress",
        ) {
            Some((v, key, origin)) => match v.as_str() {
                "lz4" => Compression::Lz4,
                "none" => Compression::None,
                _ => {
                    return Err(ConfigError::Invalid {
                        key,
                        origin,
                        reason: format!("`{v}` is not one of lz4, none"),
                    })
                }
            },
            None => Compression::Lz4,
        };

        let log_level = match pick(
            flags.log_level.clone(),
            "--log-level",
            "WALSHIP_LOG",
            file.log_level.clone(),
            "log_level",
        ) {
            Some((v, key, origin)) => parse_level(&v).map_err(|reason| ConfigError::Invalid {
                key,
                origin,
                reason,
            })?,
            None => tracing::Level::INFO,
        };

        let path_style = match env("WALSHIP_S3_PATH_STYLE") {
            Some(v) => Some(parse_bool(&v).map_err(|reason| ConfigError::Invalid {
                key: "WALSHIP_S3_PATH_STYLE".into(),
                origin: "environment".into(),
                reason,
            })?),
            None => file.s3.path_style,
        };
        let checksum_when_required = match env("WALSHIP_S3_CHECKSUM") {
            Some(v) => match v.as_str() {
                "when_required" => Some(true),
                "when_supported" => Some(false),
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "WALSHIP_S3_CHECKSUM".into(),
                        origin: "environment".into(),
                        reason: format!("`{v}` is not one of when_required, when_supported"),
                    })
                }
            },
            None => file.s3.checksum_when_required,
        };
        let s3 = S3Settings {
            endpoint: env("WALSHIP_S3_ENDPOINT").or(file.s3.endpoint),
            region: env("WALSHIP_S3_REGION").or(file.s3.region),
            path_style: path_style.unwrap_or(false),
            storage_class: env("WALSHIP_S3_STORAGE_CLASS").or(file.s3.storage_class),
            sse: env("WALSHIP_S3_SSE").or(file.s3.sse),
            sse_kms_key_id: env("WALSHIP_S3_SSE_KMS_KEY_ID").or(file.s3.sse_kms_key_id),
            checksum_when_required: checksum_when_required.unwrap_or(false),
            access_key_id: env("AWS_ACCESS_KEY_ID"),
            secret_access_key: env("AWS_SECRET_ACCESS_KEY").map(Secret::new),
            session_token: env("AWS_SESSION_TOKEN").map(Secret::new),
        };

        let depth = match env("WALSHIP_PREFETCH") {
            Some(v) => v.parse::<usize>().map_err(|_| ConfigError::Invalid {
                key: "WALSHIP_PREFETCH".into(),
                origin: "environment".into(),
                reason: format!("`{v}` is not a number of segments"),
            })?,
            // From any repository: the spool holds decoded, verified segments,
            // so decryption and decompression leave replay's critical path
            // (measured: docs/benchmarks.md, restore).
            None => file.archive_get.prefetch.unwrap_or(DEFAULT_PREFETCH),
        };
        let prefetch = PrefetchSettings {
            depth,
            spool: env("WALSHIP_SPOOL")
                .map(PathBuf::from)
                .or(file.archive_get.spool),
        };

        let backup_wal_timeout = match env("WALSHIP_BACKUP_WAL_TIMEOUT") {
            Some(v) => v.parse::<u64>().map_err(|_| ConfigError::Invalid {
                key: "WALSHIP_BACKUP_WAL_TIMEOUT".into(),
                origin: "environment".into(),
                reason: format!("`{v}` is not a number of seconds"),
            })?,
            None => file.backup.wal_timeout.unwrap_or(300),
        };

        Ok(Settings {
            repo,
            stanza,
            pg,
            key,
            compress,
            log_level,
            s3,
            prefetch,
            backup_wal_timeout: std::time::Duration::from_secs(backup_wal_timeout),
        })
    }

    /// The repository, or an error telling how to set it.
    pub fn repo(&self) -> Result<&RepoLocation, ConfigError> {
        self.repo.as_ref().ok_or_else(|| {
            ConfigError::Missing(
                "no repository given: set --repo, WALSHIP_REPO or `repo` in the config file".into(),
            )
        })
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Parses `file:///abs/dir`, `s3://bucket/prefix`, or a plain directory path.
pub fn parse_repo(value: &str) -> Result<RepoLocation, String> {
    if let Some(rest) = value.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!(
                "`{value}` has no bucket name (expected s3://bucket/prefix)"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|c| c == "." || c == "..") {
            return Err(format!("`{value}`: the prefix may not contain `.` or `..`"));
        }
        return Ok(RepoLocation::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        });
    }
    let path = if let Some(rest) = value.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(format!(
                "`{value}` is not an absolute file:// URL (expected file:///abs/dir)"
            ));
        }
        PathBuf::from(rest)
    } else if value.contains("://") {
        return Err(format!(
            "`{value}`: unknown scheme (expected file:///dir, s3://bucket/prefix or a directory)"
        ));
    } else if value.is_empty() {
        return Err("empty repository path".into());
    } else {
        PathBuf::from(value)
    };
    // archive_command runs in the data directory: a relative path would point
    // somewhere else there, so make it absolute now.
    let path = if path.is_absolute() {
        path
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot resolve relative path `{value}`: {e}"))?
            .join(path)
    };
    Ok(RepoLocation::Fs(path))
}

fn validate_stanza(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}`: a stanza name is 1-64 characters of letters, digits, `_`, `-`, `.`, not starting with `.`"))
    }
}

fn parse_level(v: &str) -> Result<tracing::Level, String> {
    match v.to_ascii_lowercase().as_str() {
        "error" => Ok(tracing::Level::ERROR),
        "warn" | "warning" => Ok(tracing::Level::WARN),
        "info" => Ok(tracing::Level::INFO),
        "debug" => Ok(tracing::Level::DEBUG),
        "trace" => Ok(tracing::Level::TRACE),
        _ => Err(format!(
            "`{v}` is not one of error, warn, info, debug, trace"
        )),
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("`{v}` is not a boolean (true/false)")),
    }
}

/// Whether a conninfo string carries a password (URI `user:pass@` or `password=`).
fn conninfo_has_password(conninfo: &str) -> bool {
    let s = conninfo.trim();
    if s.starts_with("postgresql://") || s.starts_with("postgres://") {
        let rest = s.split_once("://").map(|x| x.1).unwrap_or("");
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let userinfo_has_pw = authority
            .rsplit_once('@')
            .is_some_and(|(ui, _)| ui.contains(':'));
        userinfo_has_pw || s.contains("password=")
    } else {
        s.split_whitespace()
            .any(|kv| kv.trim_start().starts_with("password"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(flags: FlagValues, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve_with(&flags, &|k| map.get(k).cloned())
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn precedence_flag_env_file_default() {
        let cfg = file("repo = \"/from/file\"\nstanza = \"filestanza\"\ncompress = \"none\"\n");
        let path = cfg.path().to_path_buf();
        let s = resolve(
            FlagValues {
                config: Some(path.clone()),
                ..Default::default()
            },
            &[],
        )
        .unwrap();
        assert_eq!(s.repo, Some(RepoLocation::Fs("/from/file".into())));
        assert_eq!(s.stanza, "filestanza");
        assert_eq!(s.compress, Compression::None);

        let s = resolve(
            FlagValues {
                config: Some(path.clone()),
                ..Default::default()
            },
            &[
                ("WALSHIP_REPO", "/from/env"),
                ("WALSHIP_STANZA", "envstanza"),
            ],
        )
        .unwrap();
        assert_eq!(s.repo, Some(RepoLocation::Fs("/from/env".into())));
        assert_eq!(s.stanza, "envstanza");

        let s = resolve(
            FlagValues {
                config: Some(path),
                repo: Some("/from/flag".into()),
                ..Default::default()
            },
            &[("WALSHIP_REPO", "/from/env")],
        )
        .unwrap();
        assert_eq!(s.repo, Some(RepoLocation::Fs("/from/flag".into())));

        let s = resolve(FlagValues::default(), &[]).unwrap();
        assert_eq!(s.repo, None);
        assert_eq!(s.stanza, "main");
        assert_eq!(s.compress, Compression::Lz4);
        assert_eq!(s.log_level, tracing::Level::INFO);
        assert_eq!(s.key, KeySource::None);
        assert!(s.repo().unwrap_err().to_string().contains("--repo"));
    }

    #[test]
    fn config_file_from_env_and_unknown_key_is_named() {
        let cfg = file("repo = \"/x\"\nrepository = \"/y\"\n");
        let err = resolve(
            FlagValues::default(),
            &[("WALSHIP_CONFIG", cfg.path().to_str().unwrap())],
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("repository"), "{msg}");
        assert!(msg.contains(cfg.path().to_str().unwrap()), "{msg}");

        let cfg = file("[s3]\nendpont = \"http://x\"\n");
        let msg = resolve(
            FlagValues {
                config: Some(cfg.path().into()),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("endpont"), "{msg}");
    }

    #[test]
    fn malformed_values_name_the_key() {
        let msg = resolve(
            FlagValues {
                compress: Some("zstd".into()),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("--compress") && msg.contains("zstd"), "{msg}");
        let msg = resolve(FlagValues::default(), &[("WALSHIP_LOG", "loud")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("WALSHIP_LOG"), "{msg}");
        let msg = resolve(FlagValues::default(), &[("WALSHIP_S3_PATH_STYLE", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("WALSHIP_S3_PATH_STYLE"), "{msg}");
        let cfg = file("stanza = 5\n");
        let msg = resolve(
            FlagValues {
                config: Some(cfg.path().into()),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("stanza"), "{msg}");
        let msg = resolve(
            FlagValues {
                stanza: Some("../x".into()),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("--stanza"), "{msg}");
        let msg = resolve(
            FlagValues {
                repo: Some("ftp://x".into()),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("--repo") && msg.contains("unknown scheme"),
            "{msg}"
        );
    }

    #[test]
    fn repo_forms() {
        assert_eq!(
            parse_repo("file:///var/lib/walship").unwrap(),
            RepoLocation::Fs("/var/lib/walship".into())
        );
        assert_eq!(
            parse_repo("s3://bkt/some/prefix/").unwrap(),
            RepoLocation::S3 {
                bucket: "bkt".into(),
                prefix: "some/prefix".into()
            }
        );
        assert_eq!(
            parse_repo("s3://bkt").unwrap(),
            RepoLocation::S3 {
                bucket: "bkt".into(),
                prefix: "".into()
            }
        );
        assert!(parse_repo("s3:///x").is_err());
        assert!(parse_repo("file://relative").is_err());
        match parse_repo("rel/dir").unwrap() {
            RepoLocation::Fs(p) => assert!(p.is_absolute() && p.ends_with("rel/dir")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pg_precedence_and_password_flag_refused() {
        let s = resolve(
            FlagValues::default(),
            &[("DATABASE_URL", "postgresql://db/x")],
        )
        .unwrap();
        assert_eq!(s.pg, "postgresql://db/x");
        let s = resolve(
            FlagValues::default(),
            &[
                ("DATABASE_URL", "postgresql://db/x"),
                ("WALSHIP_PG", "host=h"),
            ],
        )
        .unwrap();
        assert_eq!(s.pg, "host=h");
        let err = resolve(
            FlagValues {
                pg: Some("host=h password=hunter2".into()),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--pg") && !err.contains("hunter2"), "{err}");
        let err = resolve(
            FlagValues {
                pg: Some("postgresql://u:hunter2@h/db".into()),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(resolve(
            FlagValues {
                pg: Some("postgresql://u@h/db".into()),
                ..Default::default()
            },
            &[]
        )
        .is_ok());
    }

    #[test]
    fn prefetch_defaults_to_eight_segments() {
        let s = resolve(
            FlagValues {
                repo: Some("/r".into()),
                ..Default::default()
            },
            &[],
        )
        .unwrap();
        assert_eq!(s.prefetch.depth, DEFAULT_PREFETCH);
        let s = resolve(
            FlagValues {
                repo: Some("s3://b/p".into()),
                ..Default::default()
            },
            &[],
        )
        .unwrap();
        assert_eq!(s.prefetch.depth, DEFAULT_PREFETCH);
        let s = resolve(
            FlagValues {
                repo: Some("/r".into()),
                ..Default::default()
            },
            &[("WALSHIP_PREFETCH", "4")],
        )
        .unwrap();
        assert_eq!(s.prefetch.depth, 4);
    }

    #[test]
    fn key_sources() {
        let s = resolve(
            FlagValues::default(),
            &[("WALSHIP_PASSPHRASE", "correct horse")],
        )
        .unwrap();
        assert!(matches!(s.key, KeySource::Passphrase(_)));
        assert!(!format!("{s:?}").contains("correct horse"));
        let s = resolve(
            FlagValues {
                key_file: Some("/k".into()),
                ..Default::default()
            },
            &[("WALSHIP_PASSPHRASE", "p")],
        )
        .unwrap();
        assert_eq!(s.key, KeySource::File("/k".into()));
    }
}
