//! A replication-mode connection to PostgreSQL, written on tokio streams and
//! postgres-protocol's message codecs (tokio-postgres has no replication mode).
//!
//! It does the startup (TLS per `sslmode`, authentication: trust, cleartext
//! password, md5, SCRAM-SHA-256 with or without channel binding), the simple
//! query protocol, and the raw message reading that the replication commands
//! in [`crate::pg::replication`] build on.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;

use bytes::{Buf, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::config::Secret;
use crate::pg::conninfo::{
    ChannelBinding as CbPolicy, ConnConfig, Host, SslMode, TargetSessionAttrs,
};
use crate::pg::gather::{GatheringSocket, Taken};
use crate::pg::{PgError, ServerError};

/// The largest backend message accepted. PostgreSQL's own messages stay far
/// below (XLogData carries at most 128 kB of WAL); a bigger length means a
/// broken stream, and refusing it keeps memory bounded.
const MAX_MESSAGE_LEN: usize = 64 * 1024 * 1024;
/// Room for at least this much in every read: a COPY stream (BASE_BACKUP,
/// WAL) arrives as messages of 8-64 KiB, and one read that takes whatever
/// the socket holds costs a fraction of the syscalls and wake-ups of reading
/// one message at a time.
const READ_SIZE: usize = 256 * 1024;

/// The tag of CopyBothResponse, which postgres-protocol's parser lacks.
const COPY_BOTH_RESPONSE_TAG: u8 = b'W';

/// Any byte stream the connection can run on (TCP, Unix socket, TLS, and
/// either plain socket read by a thread of its own).
trait Transport: AsyncRead + AsyncWrite + Send + Unpin {
    /// The socket under it (and the TLS session over it), taken off the
    /// reactor ([`ReplicationConnection::gather_reads`]); `Err(self)` when
    /// there is none to take (taken already).
    fn into_plain(self: Box<Self>) -> Result<io::Result<Taken>, Box<dyn Transport>>;
}

impl Transport for TcpStream {
    fn into_plain(self: Box<Self>) -> Result<io::Result<Taken>, Box<dyn Transport>> {
        Ok((*self).into_std().map(|s| Taken {
            socket: OwnedFd::from(s).into(),
            tls: None,
        }))
    }
}

impl Transport for UnixStream {
    fn into_plain(self: Box<Self>) -> Result<io::Result<Taken>, Box<dyn Transport>> {
        Ok((*self).into_std().map(|s| Taken {
            socket: OwnedFd::from(s).into(),
            tls: None,
        }))
    }
}

impl Transport for tokio_rustls::client::TlsStream<TcpStream> {
    fn into_plain(self: Box<Self>) -> Result<io::Result<Taken>, Box<dyn Transport>> {
        // Everything read from the socket is in the session already.
        let (tcp, session) = (*self).into_inner();
        Ok(tcp.into_std().map(|s| Taken {
            socket: OwnedFd::from(s).into(),
            tls: Some(session),
        }))
    }
}

impl Transport for GatheringSocket {
    fn into_plain(self: Box<Self>) -> Result<io::Result<Taken>, Box<dyn Transport>> {
        Err(self)
    }
}

/// Stands in for the transport while it is being swapped (never read from).
impl Transport for tokio::io::Empty {
    fn into_plain(self: Box<Self>) -> Result<io::Result<Taken>, Box<dyn Transport>> {
        Err(self)
    }
}

/// One row of a simple-query result, every value in text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Column names, from the result's RowDescription.
    pub columns: Vec<String>,
    /// Values in column order; `None` is SQL NULL.
    pub values: Vec<Option<String>>,
}

impl Row {
    /// The value of column `name`; `None` when the column is missing or NULL.
    pub fn get(&self, name: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| c == name)?;
        self.values.get(i)?.as_deref()
    }
}

/// One backend message as the query and copy helpers see it (notices and
/// parameter changes are consumed on the way).
#[derive(Debug)]
pub(crate) enum QueryEvent {
    /// A result set starts: its column names.
    RowDescription(Vec<String>),
    /// One row: raw values (text format), `None` for NULL.
    DataRow(Vec<Option<Bytes>>),
    /// A command finished: its tag.
    CommandComplete(String),
    /// The query string was empty.
    EmptyQuery,
    /// The server starts sending COPY data (BASE_BACKUP).
    CopyOutResponse,
    /// The server starts a two-way COPY (START_REPLICATION).
    CopyBothResponse,
    /// One CopyData payload.
    CopyData(Bytes),
    /// The server finished its COPY data.
    CopyDone,
    /// An ErrorResponse: the server still sends ReadyForQuery after it.
    Error(ServerError),
    /// The server is ready for the next command.
    ReadyForQuery,
}

/// A physical replication connection (`replication=true`).
pub struct ReplicationConnection {
    io: Box<dyn Transport>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    params: HashMap<String, String>,
    backend_key: Option<(i32, i32)>,
    /// `host:port` or the socket path: names the server in errors.
    target: String,
}

impl std::fmt::Debug for ReplicationConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConnection")
            .field("target", &self.target)
            .field("server_version", &self.parameter("server_version"))
            .finish_non_exhaustive()
    }
}

/// The error for an I/O failure while `context`. On the per-message paths,
/// call it inside the `map_err` closure: the context is formatted only when
/// there is an error.
fn io_err(context: String) -> impl FnOnce(io::Error) -> PgError {
    move |source| PgError::Io { context, source }
}

/// Turns the fields of an ErrorResponse or NoticeResponse into a
/// [`ServerError`]. `V` (never localized) wins over `S`.
pub(crate) fn parse_server_error(mut fields: ErrorFields<'_>) -> Result<ServerError, PgError> {
    let mut e = ServerError::default();
    let mut v_severity = None;
    while let Some(field) = fields
        .next()
        .map_err(|err| PgError::Protocol(format!("malformed error message: {err}")))?
    {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'S' => e.severity = value,
            b'V' => v_severity = Some(value),
            b'C' => e.code = value,
            b'M' => e.message = value,
            b'D' => e.detail = Some(value),
            b'H' => e.hint = Some(value),
            _ => {}
        }
    }
    if let Some(v) = v_severity {
        e.severity = v;
    }
    Ok(e)
}

impl ReplicationConnection {
    /// Connects with `replication=true` (physical) and application_name (cfg's, else "walship"); tries each
    /// host/port in order like libpq; errors name host:port or socket path.
    pub async fn connect(cfg: &ConnConfig) -> Result<Self, PgError> {
        let targets = cfg.targets();
        let mut last = None;
        for (host, port) in &targets {
            let (host, port) = (host, *port);
            let attempt = Self::connect_one(cfg, host, port);
            let result = match cfg.connect_timeout {
                Some(limit) => match tokio::time::timeout(limit, attempt).await {
                    Ok(r) => r,
                    Err(_) => Err(PgError::Io {
                        context: format!("connecting to {}", host.describe(port)),
                        source: io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("timed out after {:?} (connect_timeout)", limit),
                        ),
                    }),
                },
                None => attempt.await,
            };
            match result {
                Ok(conn) => return Ok(conn),
                Err(e) => {
                    if targets.len() > 1 {
                        tracing::warn!(host = %host.describe(port), error = %e, "connection attempt failed");
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| PgError::Config("no host to connect to".into())))
    }

    async fn connect_one(cfg: &ConnConfig, host: &Host, port: u16) -> Result<Self, PgError> {
        let target = host.describe(port);
        let mut binding = None;
        let mut tls = false;
        let io: Box<dyn Transport> = match host {
            Host::Tcp(name) => {
                let mut tcp = TcpStream::connect((name.as_str(), port))
                    .await
                    .map_err(io_err(format!("connecting to {target}")))?;
                tcp.set_nodelay(true)
                    .map_err(io_err(format!("setting TCP_NODELAY on {target}")))?;
                if cfg.sslmode == SslMode::Disable {
                    Box::new(tcp)
                } else {
                    let mut buf = BytesMut::new();
                    frontend::ssl_request(&mut buf);
                    tcp.write_all(&buf)
                        .await
                        .map_err(io_err(format!("sending SSLRequest to {target}")))?;
                    let answer = tcp.read_u8().await.map_err(io_err(format!(
                        "reading the SSLRequest answer from {target}"
                    )))?;
                    match answer {
                        b'S' => {
                            let stream = crate::pg::tls::handshake(tcp, cfg, name, &target).await?;
                            binding = crate::pg::tls::tls_server_end_point(&stream);
                            tls = true;
                            Box::new(stream)
                        }
                        b'N' if cfg.sslmode == SslMode::Prefer => Box::new(tcp),
                        b'N' => {
                            return Err(PgError::Tls(format!(
                                "server {target} does not support TLS, but sslmode={} requires it",
                                cfg.sslmode.as_str()
                            )))
                        }
                        other => {
                            return Err(PgError::Protocol(format!(
                                "server {target} answered the SSLRequest with byte {other:#04x} \
                                 instead of 'S' or 'N'"
                            )))
                        }
                    }
                }
            }
            // Unix sockets never use TLS (as libpq).
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                Box::new(
                    UnixStream::connect(&path)
                        .await
                        .map_err(io_err(format!("connecting to {target}")))?,
                )
            }
        };
        let mut conn = ReplicationConnection {
            io,
            rbuf: BytesMut::with_capacity(8192),
            wbuf: BytesMut::with_capacity(1024),
            params: HashMap::new(),
            backend_key: None,
            target,
        };
        let password = cfg.password_for_replication(host, port);
        conn.startup(cfg, password, tls, binding).await?;
        conn.check_session_attrs(cfg.target_session_attrs).await?;
        tracing::debug!(
            target = %conn.target,
            server_version = conn.parameter("server_version").unwrap_or("?"),
            tls,
            "replication connection established"
        );
        Ok(conn)
    }

    async fn startup(
        &mut self,
        cfg: &ConnConfig,
        password: Option<Secret>,
        tls: bool,
        binding: Option<Vec<u8>>,
    ) -> Result<(), PgError> {
        let app = cfg.application_name.as_deref().unwrap_or("walship");
        let mut params: Vec<(&str, &str)> = vec![
            ("user", cfg.user.as_str()),
            // Physical replication connects to no database: dbname is not sent.
            ("replication", "true"),
            ("application_name", app),
            ("client_encoding", "UTF8"),
        ];
        if let Some(options) = cfg.options.as_deref() {
            params.push(("options", options));
        }
        frontend::startup_message(params, &mut self.wbuf)
            .map_err(|e| PgError::Config(format!("startup parameters: {e}")))?;
        self.flush().await?;

        let cb_policy = cfg.channel_binding;
        let binding = if cb_policy == CbPolicy::Disable {
            None
        } else {
            binding
        };
        let mut scram: Option<ScramSha256> = None;
        let mut bound = false;
        loop {
            let msg = self.recv().await?;
            // libpq: with channel_binding=require, only SCRAM-SHA-256-PLUS may
            // authenticate us; refuse before sending anything else.
            if cb_policy == CbPolicy::Require {
                let plus_done = bound
                    && matches!(
                        msg,
                        Message::AuthenticationOk
                            | Message::AuthenticationSaslContinue(_)
                            | Message::AuthenticationSaslFinal(_)
                    );
                let is_error = matches!(msg, Message::ErrorResponse(_));
                let is_sasl_start = matches!(msg, Message::AuthenticationSasl(_));
                if !plus_done && !is_error && !is_sasl_start {
                    return Err(PgError::Auth(format!(
                        "channel binding required, but {} did not authenticate with \
                         SCRAM-SHA-256-PLUS{}",
                        self.target,
                        if tls {
                            ""
                        } else {
                            " (the connection does not use TLS)"
                        }
                    )));
                }
            }
            match msg {
                Message::AuthenticationOk => break,
                Message::AuthenticationCleartextPassword => {
                    let pw = require_password(&password, &cfg.user, &self.target)?;
                    frontend::password_message(pw.expose().as_bytes(), &mut self.wbuf)
                        .map_err(|e| PgError::Auth(format!("password message: {e}")))?;
                    self.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let pw = require_password(&password, &cfg.user, &self.target)?;
                    let hashed = postgres_protocol::authentication::md5_hash(
                        cfg.user.as_bytes(),
                        pw.expose().as_bytes(),
                        body.salt(),
                    );
                    frontend::password_message(hashed.as_bytes(), &mut self.wbuf)
                        .map_err(|e| PgError::Auth(format!("password message: {e}")))?;
                    self.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let pw = require_password(&password, &cfg.user, &self.target)?;
                    let mut has_scram = false;
                    let mut has_plus = false;
                    let mut mechanisms = body.mechanisms();
                    while let Some(m) = mechanisms.next().map_err(|e| {
                        PgError::Protocol(format!(
                            "malformed SASL mechanism list from {}: {e}",
                            self.target
                        ))
                    })? {
                        match m {
                            sasl::SCRAM_SHA_256 => has_scram = true,
                            sasl::SCRAM_SHA_256_PLUS => has_plus = true,
                            _ => {}
                        }
                    }
                    // As libpq: bind the channel when the server offers it and we
                    // can; claim "client supports binding" ('y') only when the
                    // server did not offer it over TLS.
                    let (channel, mechanism) = match (has_plus, binding.clone()) {
                        (true, Some(b)) => (
                            ChannelBinding::tls_server_end_point(b),
                            sasl::SCRAM_SHA_256_PLUS,
                        ),
                        _ if !has_scram && !has_plus => {
                            return Err(PgError::Auth(format!(
                                "server {} offers no supported SASL mechanism (SCRAM-SHA-256)",
                                self.target
                            )))
                        }
                        (true, None) => (ChannelBinding::unsupported(), sasl::SCRAM_SHA_256),
                        (false, _) if tls && cb_policy != CbPolicy::Disable => {
                            (ChannelBinding::unrequested(), sasl::SCRAM_SHA_256)
                        }
                        (false, _) => (ChannelBinding::unsupported(), sasl::SCRAM_SHA_256),
                    };
                    bound = mechanism == sasl::SCRAM_SHA_256_PLUS;
                    let s = ScramSha256::new(pw.expose().as_bytes(), channel);
                    frontend::sasl_initial_response(mechanism, s.message(), &mut self.wbuf)
                        .map_err(|e| PgError::Auth(format!("SASL initial response: {e}")))?;
                    self.flush().await?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().ok_or_else(|| {
                        PgError::Protocol(format!("{} sent SASLContinue before SASL", self.target))
                    })?;
                    s.update(body.data()).map_err(|e| {
                        PgError::Auth(format!("SCRAM exchange with {} failed: {e}", self.target))
                    })?;
                    frontend::sasl_response(s.message(), &mut self.wbuf)
                        .map_err(|e| PgError::Auth(format!("SASL response: {e}")))?;
                    self.flush().await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram.as_mut().ok_or_else(|| {
                        PgError::Protocol(format!("{} sent SASLFinal before SASL", self.target))
                    })?;
                    s.finish(body.data()).map_err(|e| {
                        PgError::Auth(format!(
                            "server {} failed to prove it knows the password (SCRAM): {e}",
                            self.target
                        ))
                    })?;
                }
                Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential
                | Message::AuthenticationGss
                | Message::AuthenticationSspi
                | Message::AuthenticationGssContinue(_) => {
                    return Err(PgError::Auth(format!(
                        "server {} asks for an authentication method walship does not support \
                         (GSSAPI/SSPI/Kerberos/SCM); use scram-sha-256, md5, password or trust",
                        self.target
                    )))
                }
                Message::ErrorResponse(body) => {
                    return Err(PgError::Server(parse_server_error(body.fields())?))
                }
                _ => {
                    return Err(PgError::Protocol(format!(
                        "unexpected message from {} during authentication",
                        self.target
                    )))
                }
            }
        }
        loop {
            match self.recv().await? {
                Message::BackendKeyData(body) => {
                    self.backend_key = Some((body.process_id(), body.secret_key()))
                }
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => {
                    return Err(PgError::Server(parse_server_error(body.fields())?))
                }
                _ => {
                    return Err(PgError::Protocol(format!(
                        "unexpected message from {} after authentication",
                        self.target
                    )))
                }
            }
        }
    }

    /// libpq's `target_session_attrs`: read-write or read-only servers only.
    async fn check_session_attrs(&mut self, attrs: TargetSessionAttrs) -> Result<(), PgError> {
        let want_read_only = match attrs {
            TargetSessionAttrs::Any => return Ok(()),
            TargetSessionAttrs::ReadWrite => false,
            TargetSessionAttrs::ReadOnly => true,
        };
        let rows = self.simple_query("SHOW transaction_read_only").await?;
        let read_only = rows
            .first()
            .and_then(|r| r.values.first().cloned().flatten());
        let read_only = read_only.as_deref() == Some("on");
        if read_only != want_read_only {
            return Err(PgError::Config(format!(
                "server {} is {}, but target_session_attrs={}",
                self.target,
                if read_only { "read-only" } else { "read-write" },
                attrs.as_str()
            )));
        }
        Ok(())
    }

    /// The server's version number, e.g. 150018 for 15.18 (from the
    /// `server_version` parameter; 0 when the server did not report it).
    pub fn server_version_num(&self) -> u32 {
        self.parameter("server_version")
            .map(parse_server_version)
            .unwrap_or(0)
    }

    /// A parameter the server reported (ParameterStatus): `server_version`,
    /// `integer_datetimes`, `server_encoding`, ...
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// `host:port` or the socket path of the server.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The backend's process id (from BackendKeyData), when it sent one.
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_key.map(|(pid, _)| pid)
    }

    /// Simple-query protocol; returns the rows of each result as text (None = NULL). Errors carry the server's fields.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Row>, PgError> {
        self.send_query(sql).await?;
        let mut rows = Vec::new();
        let mut columns: Vec<String> = Vec::new();
        let mut error = None;
        loop {
            match self.next_event().await? {
                QueryEvent::RowDescription(c) => columns = c,
                QueryEvent::DataRow(values) => {
                    let values = values
                        .into_iter()
                        .map(|v| {
                            v.map(|b| {
                                String::from_utf8(b.to_vec()).map_err(|_| {
                                    PgError::Protocol(format!(
                                        "{} returned a non-UTF-8 value for {sql:?}",
                                        self.target
                                    ))
                                })
                            })
                            .transpose()
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    rows.push(Row {
                        columns: columns.clone(),
                        values,
                    });
                }
                QueryEvent::CommandComplete(tag) => {
                    tracing::trace!(server = %self.target, tag, "command complete")
                }
                QueryEvent::EmptyQuery => {}
                QueryEvent::Error(e) => error = Some(e),
                QueryEvent::ReadyForQuery => break,
                QueryEvent::CopyOutResponse | QueryEvent::CopyBothResponse => {
                    return Err(PgError::Protocol(format!(
                        "{sql:?} started a COPY on {}: not usable through simple_query",
                        self.target
                    )))
                }
                QueryEvent::CopyData(_) | QueryEvent::CopyDone => {
                    return Err(PgError::Protocol(format!(
                        "{} sent COPY data outside a COPY",
                        self.target
                    )))
                }
            }
        }
        match error {
            Some(e) => Err(PgError::Server(e)),
            None => Ok(rows),
        }
    }

    /// Ends the session politely (Terminate) and closes the socket.
    pub async fn close(mut self) -> Result<(), PgError> {
        frontend::terminate(&mut self.wbuf);
        self.flush().await?;
        // A failed TLS close_notify after Terminate loses nothing.
        let _ = self.io.shutdown().await;
        Ok(())
    }

    // ---- low-level helpers shared with the replication module ----

    /// Sends a simple Query.
    pub(crate) async fn send_query(&mut self, sql: &str) -> Result<(), PgError> {
        tracing::trace!(target = %self.target, sql, "query");
        frontend::query(sql, &mut self.wbuf)
            .map_err(|e| PgError::Protocol(format!("cannot encode query {sql:?}: {e}")))?;
        self.flush().await
    }

    /// Sends what is in the write buffer.
    ///
    /// Written piecewise, consuming what was sent: a call that is cancelled
    /// midway leaves the unsent rest queued (never a resent prefix), and the
    /// next flush completes it.
    pub(crate) async fn flush(&mut self) -> Result<(), PgError> {
        while !self.wbuf.is_empty() {
            let n = self
                .io
                .write(&self.wbuf)
                .await
                .map_err(|e| io_err(format!("sending to {}", self.target))(e))?;
            if n == 0 {
                return Err(PgError::Io {
                    context: format!("sending to {}", self.target),
                    source: io::Error::new(io::ErrorKind::WriteZero, "connection closed"),
                });
            }
            self.wbuf.advance(n);
        }
        self.io
            .flush()
            .await
            .map_err(|e| io_err(format!("sending to {}", self.target))(e))
    }

    /// Whether frontend bytes are queued but not yet sent (after a cancelled send).
    pub(crate) fn has_pending_output(&self) -> bool {
        !self.wbuf.is_empty()
    }

    /// Sends a CopyData message with `payload`.
    pub(crate) async fn send_copy_data(&mut self, payload: &[u8]) -> Result<(), PgError> {
        frontend::CopyData::new(payload)
            .map_err(|e| PgError::Protocol(format!("CopyData: {e}")))?
            .write(&mut self.wbuf);
        self.flush().await
    }

    /// Sends CopyDone.
    pub(crate) async fn send_copy_done(&mut self) -> Result<(), PgError> {
        frontend::copy_done(&mut self.wbuf);
        self.flush().await
    }

    /// The next message of a query or COPY (see [`QueryEvent`]). Cancel-safe:
    /// dropping the future loses no data.
    pub(crate) async fn next_event(&mut self) -> Result<QueryEvent, PgError> {
        let msg = match self.recv_frame().await? {
            Frame::CopyBothResponse => return Ok(QueryEvent::CopyBothResponse),
            Frame::Message(m) => m,
        };
        Ok(match msg {
            Message::RowDescription(body) => {
                let names = body
                    .fields()
                    .map(|f| Ok(f.name().to_string()))
                    .collect::<Vec<_>>()
                    .map_err(|e| {
                        PgError::Protocol(format!(
                            "malformed RowDescription from {}: {e}",
                            self.target
                        ))
                    })?;
                QueryEvent::RowDescription(names)
            }
            Message::DataRow(body) => {
                let buf = body.buffer_bytes().clone();
                let values = body
                    .ranges()
                    .map(|r| Ok(r.map(|r| buf.slice(r))))
                    .collect::<Vec<_>>()
                    .map_err(|e| {
                        PgError::Protocol(format!("malformed DataRow from {}: {e}", self.target))
                    })?;
                QueryEvent::DataRow(values)
            }
            Message::CommandComplete(body) => QueryEvent::CommandComplete(
                body.tag()
                    .map_err(|e| {
                        PgError::Protocol(format!(
                            "malformed CommandComplete from {}: {e}",
                            self.target
                        ))
                    })?
                    .to_string(),
            ),
            Message::EmptyQueryResponse => QueryEvent::EmptyQuery,
            Message::CopyOutResponse(_) => QueryEvent::CopyOutResponse,
            Message::CopyData(body) => QueryEvent::CopyData(body.into_bytes()),
            Message::CopyDone => QueryEvent::CopyDone,
            Message::ErrorResponse(body) => QueryEvent::Error(parse_server_error(body.fields())?),
            Message::ReadyForQuery(_) => QueryEvent::ReadyForQuery,
            Message::CopyInResponse(_) => {
                return Err(PgError::Protocol(format!(
                    "{} asked for COPY IN data, which walship never sends",
                    self.target
                )))
            }
            _ => {
                return Err(PgError::Protocol(format!(
                    "unexpected message from {} during a query",
                    self.target
                )))
            }
        })
    }

    /// Inside a COPY OUT (after [`QueryEvent::CopyOutResponse`], e.g. BASE_BACKUP):
    /// the next CopyData payload, or `None` at the server's CopyDone. A server
    /// error ends the command: it is drained to ReadyForQuery and returned.
    pub(crate) async fn copy_out_data(&mut self) -> Result<Option<Bytes>, PgError> {
        match self.next_event().await? {
            QueryEvent::CopyData(b) => Ok(Some(b)),
            QueryEvent::CopyDone => Ok(None),
            QueryEvent::Error(e) => {
                self.drain_to_ready().await?;
                Err(PgError::Server(e))
            }
            _ => Err(PgError::Protocol(format!(
                "unexpected message from {} inside COPY OUT",
                self.target
            ))),
        }
    }

    /// Reads until ReadyForQuery, discarding what comes (after an error).
    /// Returns the first server error seen on the way.
    pub(crate) async fn drain_to_ready(&mut self) -> Result<Option<ServerError>, PgError> {
        let mut first = None;
        loop {
            match self.next_event().await? {
                QueryEvent::ReadyForQuery => return Ok(first),
                QueryEvent::Error(e) => {
                    first.get_or_insert(e);
                }
                _ => {}
            }
        }
    }

    /// From now on a thread of its own reads the socket, waiting `wait`
    /// after each small read so that messages arriving close together are
    /// taken in one ([`crate::pg::gather`]). What is already buffered stays
    /// first. False, and nothing changed, when it is done already.
    pub(crate) fn gather_reads(&mut self, wait: std::time::Duration) -> Result<bool, PgError> {
        let io = std::mem::replace(&mut self.io, Box::new(tokio::io::empty()));
        let socket = match io.into_plain() {
            Err(io) => {
                self.io = io;
                return Ok(false);
            }
            Ok(socket) => socket,
        };
        let context = || format!("handing the socket of {} to a reading thread", self.target);
        let socket = socket.map_err(|e| io_err(context())(e))?;
        let gathering = GatheringSocket::start(socket, wait).map_err(|e| io_err(context())(e))?;
        self.io = Box::new(gathering);
        Ok(true)
    }

    /// Reads one backend message, consuming notices and parameter changes.
    async fn recv(&mut self) -> Result<Message, PgError> {
        match self.recv_frame().await? {
            Frame::Message(m) => Ok(m),
            Frame::CopyBothResponse => Err(PgError::Protocol(format!(
                "unexpected CopyBothResponse from {}",
                self.target
            ))),
        }
    }

    async fn recv_frame(&mut self) -> Result<Frame, PgError> {
        loop {
            match self.read_frame().await? {
                Frame::Message(Message::NoticeResponse(body)) => {
                    let n = parse_server_error(body.fields())?;
                    match n.severity.as_str() {
                        "WARNING" => tracing::warn!(server = %self.target, "{n}"),
                        "NOTICE" | "INFO" => tracing::info!(server = %self.target, "{n}"),
                        _ => tracing::debug!(server = %self.target, "{n}"),
                    }
                }
                Frame::Message(Message::ParameterStatus(body)) => {
                    let name = body.name().map_err(|e| {
                        PgError::Protocol(format!(
                            "malformed ParameterStatus from {}: {e}",
                            self.target
                        ))
                    })?;
                    let value = body.value().map_err(|e| {
                        PgError::Protocol(format!(
                            "malformed ParameterStatus from {}: {e}",
                            self.target
                        ))
                    })?;
                    self.params.insert(name.to_string(), value.to_string());
                }
                Frame::Message(Message::NotificationResponse(_)) => {}
                other => return Ok(other),
            }
        }
    }

    /// Reads one whole message. The 5-byte header is checked here so that a
    /// tag postgres-protocol lacks ('W') is handled and a bogus length is
    /// refused before anything is allocated for it.
    async fn read_frame(&mut self) -> Result<Frame, PgError> {
        loop {
            if self.rbuf.len() >= 5 {
                let tag = self.rbuf[0];
                let len =
                    u32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]])
                        as usize;
                if !(4..=MAX_MESSAGE_LEN).contains(&len) {
                    return Err(PgError::Protocol(format!(
                        "{} sent a message (tag {:?}) with invalid length {len}",
                        self.target, tag as char
                    )));
                }
                if self.rbuf.len() > len {
                    if tag == COPY_BOTH_RESPONSE_TAG {
                        self.rbuf.advance(len + 1);
                        return Ok(Frame::CopyBothResponse);
                    }
                    return match Message::parse(&mut self.rbuf) {
                        Ok(Some(m)) => Ok(Frame::Message(m)),
                        Ok(None) => Err(PgError::Protocol(format!(
                            "incomplete message from {} after a complete header",
                            self.target
                        ))),
                        Err(e) => Err(PgError::Protocol(format!(
                            "cannot parse message (tag {:?}) from {}: {e}",
                            tag as char, self.target
                        ))),
                    };
                }
                self.rbuf.reserve(len + 1 - self.rbuf.len());
            }
            // A new buffer only when the spare room is small: reserving
            // READ_SIZE on every read would reallocate while earlier messages
            // still share the buffer.
            if self.rbuf.capacity() - self.rbuf.len() < READ_SIZE / 4 {
                self.rbuf.reserve(READ_SIZE);
            }
            let n = self
                .io
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|e| io_err(format!("reading from {}", self.target))(e))?;
            if n == 0 {
                return Err(PgError::Io {
                    context: format!("reading from {}", self.target),
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed the connection unexpectedly",
                    ),
                });
            }
        }
    }
}

/// A whole backend message.
enum Frame {
    CopyBothResponse,
    Message(Message),
}

fn require_password<'a>(
    password: &'a Option<Secret>,
    user: &str,
    target: &str,
) -> Result<&'a Secret, PgError> {
    password.as_ref().ok_or_else(|| {
        PgError::Auth(format!(
            "password required by server for user {user:?} ({target}): set password=, \
             PGPASSWORD or a ~/.pgpass entry"
        ))
    })
}

/// `15.18 (Debian 15.18-1)` -> 150018; `9.6.24` -> 90624; `16beta1` -> 160000.
pub(crate) fn parse_server_version(v: &str) -> u32 {
    let numeric: String = v
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = numeric.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let second = parts.next().unwrap_or(0);
    if major >= 10 {
        major * 10000 + second
    } else {
        let third = parts.next().unwrap_or(0);
        major * 10000 + second * 100 + third
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_version_forms() {
        assert_eq!(
            parse_server_version("15.18 (Debian 15.18-1.pgdg13+1)"),
            150018
        );
        assert_eq!(parse_server_version("13.2"), 130002);
        assert_eq!(parse_server_version("17beta1"), 170000);
        assert_eq!(parse_server_version("9.6.24"), 90624);
        assert_eq!(parse_server_version("garbage"), 0);
    }

    #[test]
    fn row_get_by_name() {
        let row = Row {
            columns: vec!["a".into(), "b".into()],
            values: vec![Some("1".into()), None],
        };
        assert_eq!(row.get("a"), Some("1"));
        assert_eq!(row.get("b"), None);
        assert_eq!(row.get("c"), None);
    }

    #[test]
    fn missing_password_message_is_libpq_like() {
        let err = require_password(&None, "alice", "h:1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("password required by server for user \"alice\""),
            "{err}"
        );
    }
}
