//! libpq-compatible connection settings. (Being written.)

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Secret;
use crate::pg::PgError;

/// One host to try: a TCP host name or address, or a Unix-socket directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name or IP address.
    Tcp(String),
    /// A directory holding `.s.PGSQL.<port>` (a host starting with `/`).
    Unix(PathBuf),
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, plain otherwise (libpq's default).
    #[default]
    Prefer,
    /// TLS required, certificate not checked.
    Require,
    /// TLS required, certificate chain checked against `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the host name must match the certificate.
    VerifyFull,
}

/// Resolved connection settings: the conninfo string with libpq's environment
/// variables and defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnConfig {
    /// Hosts to try in order (libpq's multi-host form); never empty.
    pub hosts: Vec<Host>,
    /// One port for every host, or one per host.
    pub ports: Vec<u16>,
    /// The role to connect as.
    pub user: String,
    /// An explicit password (`password=` or `PGPASSWORD`).
    pub password: Option<Secret>,
    /// The password file (`passfile=`, `PGPASSFILE`, or `~/.pgpass`).
    pub passfile: Option<PathBuf>,
    /// Database name (used by plain SQL connections).
    pub dbname: String,
    /// TLS mode.
    pub sslmode: SslMode,
    /// CA certificate(s) for `verify-ca`/`verify-full` (default `~/.postgresql/root.crt`).
    pub sslrootcert: Option<PathBuf>,
    /// Client certificate.
    pub sslcert: Option<PathBuf>,
    /// Client private key.
    pub sslkey: Option<PathBuf>,
    /// `application_name` reported to the server.
    pub application_name: Option<String>,
    /// Give up connecting after this long.
    pub connect_timeout: Option<Duration>,
    /// `options=` passed at startup.
    pub options: Option<String>,
}

impl ConnConfig {
    /// Parses a libpq URI or `key=value` string, filling unset parts from the
    /// `PG*` environment variables and libpq's defaults.
    pub fn parse(conninfo: &str) -> Result<Self, PgError> {
        let _ = conninfo;
        Err(PgError::Config("connection settings parser not written yet".into()))
    }
}
