//! Plain SQL connections through tokio-postgres, for the few things the
//! replication protocol cannot do (reading `pg_replication_slots` on
//! PostgreSQL 13/14, pre-flight checks).
//!
//! [`connect_sql`] honours the [`ConnConfig`] as libpq would: every host in
//! order, Unix-socket directories, the password file per host, the
//! connection timeout per host, and TLS per `sslmode` through rustls (TLS is
//! never used over Unix sockets, as in libpq). The rustls configuration is
//! the replication connection's ([`crate::pg::tls`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::pg::conninfo::{self, ConnConfig, Host, SslMode, TargetSessionAttrs};
use crate::pg::{PgError, ServerError};

/// Connects a plain SQL session, trying each host of `cfg` in order, and
/// spawns the connection task on the current tokio runtime (its error is
/// logged). Returns the first session that succeeds, or the last host's
/// error.
pub async fn connect_sql(cfg: &ConnConfig) -> Result<tokio_postgres::Client, PgError> {
    let targets = cfg.targets();
    let mut last = None;
    for (host, port) in &targets {
        match connect_one(cfg, host, *port).await {
            Ok(client) => return Ok(client),
            Err(e) => {
                if targets.len() > 1 {
                    tracing::warn!(target_host = %host.describe(*port), error = %e,
                        "SQL connection failed; trying the next host");
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| PgError::Config("no host to connect to".into())))
}

/// One connection attempt to `host`:`port`.
async fn connect_one(
    cfg: &ConnConfig,
    host: &Host,
    port: u16,
) -> Result<tokio_postgres::Client, PgError> {
    let target = host.describe(port);
    let context = format!("connecting to PostgreSQL at {target}");
    let mut pg = tokio_postgres::Config::new();
    pg.user(&cfg.user).dbname(&cfg.dbname).port(port);
    let unix = match host {
        Host::Tcp(h) => {
            pg.host(h);
            false
        }
        Host::Unix(dir) => {
            pg.host_path(dir);
            true
        }
    };
    if let Some(pw) = cfg.password_for(host, port) {
        pg.password(pw.expose());
    }
    if let Some(app) = &cfg.application_name {
        pg.application_name(app);
    }
    if let Some(options) = &cfg.options {
        pg.options(options);
    }
    if let Some(t) = cfg.connect_timeout {
        pg.connect_timeout(t);
    }
    pg.target_session_attrs(match cfg.target_session_attrs {
        TargetSessionAttrs::Any => tokio_postgres::config::TargetSessionAttrs::Any,
        TargetSessionAttrs::ReadWrite => tokio_postgres::config::TargetSessionAttrs::ReadWrite,
        TargetSessionAttrs::ReadOnly => tokio_postgres::config::TargetSessionAttrs::ReadOnly,
    });
    pg.channel_binding(match cfg.channel_binding {
        conninfo::ChannelBinding::Disable => tokio_postgres::config::ChannelBinding::Disable,
        conninfo::ChannelBinding::Prefer => tokio_postgres::config::ChannelBinding::Prefer,
        conninfo::ChannelBinding::Require => tokio_postgres::config::ChannelBinding::Require,
    });

    // libpq ignores sslmode on Unix sockets, and PostgreSQL never offers
    // TLS there.
    let (mode, tls) = if unix || cfg.sslmode == SslMode::Disable {
        (
            tokio_postgres::config::SslMode::Disable,
            RustlsConnector { config: None },
        )
    } else {
        // The same rustls configuration as the replication connection.
        let config = crate::pg::tls::client_config(cfg)?;
        let mode = match cfg.sslmode {
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        };
        (
            mode,
            RustlsConnector {
                config: Some(config),
            },
        )
    };
    pg.ssl_mode(mode);

    let (client, connection) = match start(&pg, tls, cfg.connect_timeout, &context).await {
        // libpq's `prefer` goes on without TLS when the handshake fails.
        Err(PgError::Tls(e)) if mode == tokio_postgres::config::SslMode::Prefer => {
            tracing::debug!(target_host = %target, error = %e,
                "TLS failed with sslmode=prefer; retrying without TLS");
            pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            start(
                &pg,
                RustlsConnector { config: None },
                cfg.connect_timeout,
                &context,
            )
            .await?
        }
        other => other?,
    };

    tracing::debug!(target_host = %target, "SQL connection established");
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(target_host = %target, error = %e, "SQL connection ended with an error");
        }
    });
    Ok(client)
}

/// A session from `pg`, within `timeout` when set: tokio-postgres's own
/// timeout covers only the socket, libpq's the whole start-up (TLS and
/// authentication included).
async fn start(
    pg: &tokio_postgres::Config,
    tls: RustlsConnector,
    timeout: Option<std::time::Duration>,
    context: &str,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, RustlsStream<tokio_postgres::Socket>>,
    ),
    PgError,
> {
    let connect = pg.connect(tls);
    match timeout {
        Some(t) => tokio::time::timeout(t, connect)
            .await
            .map_err(|_| PgError::Io {
                context: context.to_string(),
                source: io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no session within connect_timeout ({} s)", t.as_secs()),
                ),
            })?,
        None => connect.await,
    }
    .map_err(|e| map_error(context, e))
}

/// Maps a tokio-postgres error into [`PgError`]: the server's fields for an
/// `ErrorResponse`, an I/O error (with `context`) for socket failures, and
/// otherwise a TLS, authentication or protocol error by what it says.
pub fn map_error(context: &str, e: tokio_postgres::Error) -> PgError {
    if let Some(db) = e.as_db_error() {
        return PgError::Server(ServerError {
            severity: db.severity().to_string(),
            code: db.code().code().to_string(),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
            hint: db.hint().map(str::to_string),
        });
    }
    // tokio-postgres's Display shows only the kind: add the causes.
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    let lower = text.to_ascii_lowercase();
    // A failed handshake carries rustls's error inside an io::Error: call it
    // TLS, not I/O.
    if lower.contains("tls") {
        return PgError::Tls(format!("{context}: {text}"));
    }
    let io_kind = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .map(io::Error::kind);
    if let Some(kind) = io_kind {
        return PgError::Io {
            context: context.to_string(),
            source: io::Error::new(kind, text),
        };
    }
    if e.is_closed() {
        return PgError::Io {
            context: context.to_string(),
            source: io::Error::new(io::ErrorKind::ConnectionAborted, text),
        };
    }
    if lower.contains("password missing") {
        PgError::Auth(format!(
            "{context}: the server asked for a password and none was given (password=, \
             PGPASSWORD or a password file line that matches)"
        ))
    } else if lower.contains("password")
        || lower.contains("authentication")
        || lower.contains("sasl")
        || lower.contains("channel binding")
    {
        PgError::Auth(format!("{context}: {text}"))
    } else {
        PgError::Protocol(format!("{context}: {text}"))
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        map_error("SQL", e)
    }
}

// ---------------------------------------------------------------------------
// tokio-postgres's TLS traits on tokio-rustls.

/// tokio-postgres's `MakeTlsConnect` on rustls. With no configuration it
/// refuses every handshake (used with `sslmode=disable` and Unix sockets,
/// where tokio-postgres never asks for one).
#[derive(Clone)]
pub struct RustlsConnector {
    config: Option<Arc<ClientConfig>>,
}

impl RustlsConnector {
    /// A connector that uses `config` for every handshake.
    pub fn new(config: Arc<ClientConfig>) -> Self {
        RustlsConnector {
            config: Some(config),
        }
    }
}

impl<S> MakeTlsConnect<S> for RustlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        // tokio-postgres asks even when it will not use TLS (Unix sockets
        // pass ""), so problems are reported at handshake time only.
        Ok(RustlsConnect {
            config: self.config.clone(),
            domain: domain.to_string(),
        })
    }
}

/// One pending handshake (see [`RustlsConnector`]).
pub struct RustlsConnect {
    config: Option<Arc<ClientConfig>>,
    domain: String,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, io::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let config = self.config.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "TLS is disabled for this connection",
                )
            })?;
            let name = ServerName::try_from(self.domain.clone()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "host \"{}\" is not a valid TLS server name: {e}",
                        self.domain
                    ),
                )
            })?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(tls))
        })
    }
}

/// A TLS session over `S`, as tokio-postgres wants it.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        match session
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|leaf| crate::pg::tls::end_point_hash(leaf.as_ref()))
        {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_error_fields_are_kept_and_io_is_named() {
        // Real errors come from the integration test; here the I/O mapping
        // of a refused connection, which needs no server.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let cfg = ConnConfig::parse_with_env(
            &format!("host=127.0.0.1 port={port} user=u dbname=d sslmode=disable"),
            &|_| None,
        )
        .unwrap();
        let err = rt.block_on(connect_sql(&cfg)).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, PgError::Io { .. }), "{err:?}");
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    }

    #[test]
    fn multi_host_tries_every_host_and_reports_the_last() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (pa, pb) = (
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        );
        drop((a, b));
        let cfg = ConnConfig::parse_with_env(
            &format!("postgresql://u@127.0.0.1:{pa},127.0.0.1:{pb}/d?sslmode=disable"),
            &|_| None,
        )
        .unwrap();
        let text = rt.block_on(connect_sql(&cfg)).unwrap_err().to_string();
        assert!(text.contains(&format!("127.0.0.1:{pb}")), "{text}");
    }

    #[test]
    fn connect_timeout_covers_the_whole_start_up() {
        // A listener that completes the TCP handshake (the kernel does) but
        // never answers the start-up message: only connect_timeout ends it.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let cfg = ConnConfig::parse_with_env(
            &format!(
                "host=127.0.0.1 port={port} user=u dbname=d sslmode=disable connect_timeout=2"
            ),
            &|_| None,
        )
        .unwrap();
        let started = std::time::Instant::now();
        let err = rt.block_on(connect_sql(&cfg)).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        match err {
            PgError::Io { context, source } => {
                assert_eq!(source.kind(), io::ErrorKind::TimedOut);
                assert!(context.contains(&format!("127.0.0.1:{port}")), "{context}");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        drop(silent);
    }
}
