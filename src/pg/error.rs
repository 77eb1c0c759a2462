//! Errors of the PostgreSQL side.

/// The fields of a PostgreSQL `ErrorResponse` (or `NoticeResponse`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerError {
    /// `S`: ERROR, FATAL, PANIC (localized form when `V` is absent).
    pub severity: String,
    /// `C`: the SQLSTATE code, for example `28P01`.
    pub code: String,
    /// `M`: the primary message.
    pub message: String,
    /// `D`: optional detail.
    pub detail: Option<String>,
    /// `H`: optional hint.
    pub hint: Option<String>,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )?;
        if let Some(d) = &self.detail {
            write!(f, "; DETAIL: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; HINT: {h}")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// Connection settings that cannot be used (bad URI, unknown key, bad value).
    #[error("connection settings: {0}")]
    Config(String),
    /// A socket-level failure; `context` says what walship was doing.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, including the host and port.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// TLS could not be set up or the handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// Authentication failed on our side (unsupported method, missing password).
    #[error("authentication: {0}")]
    Auth(String),
    /// PostgreSQL answered with an ErrorResponse.
    #[error("server error: {0}")]
    Server(ServerError),
    /// The server ended the connection or the stream in an orderly way (for
    /// example a walsender at server shutdown); reconnecting is the answer.
    #[error("{0}")]
    Closed(String),
    /// The server sent something the protocol does not allow here.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The server's version lacks a feature (for example READ_REPLICATION_SLOT
    /// before PostgreSQL 15): callers fall back to another way.
    #[error("unsupported by the server: {0}")]
    Unsupported(String),
}

impl PgError {
    /// The server's error fields, when PostgreSQL reported the error.
    pub fn server(&self) -> Option<&ServerError> {
        match self {
            PgError::Server(e) => Some(e),
            _ => None,
        }
    }

    /// The SQLSTATE of a server-reported error (for example `28P01`).
    pub fn sqlstate(&self) -> Option<&str> {
        self.server().map(|e| e.code.as_str())
    }
}
