//! libpq-compatible connection settings.
//!
//! [`ConnConfig::parse`] accepts what `PQconnectdb` accepts: a URI
//! (`postgresql://user:pw@h1:5432,h2/db?sslmode=require`) or a `key=value`
//! string (`host=/tmp port=5433 user='a b'`). Settings left unset come from
//! the `PG*` environment variables and then from libpq's defaults, as
//! documented in "Connection Strings", "Parameter Key Words" and
//! "Environment Variables" of the libpq chapter.
//!
//! Deliberate differences from libpq, all documented on the items below:
//! `hostaddr` is used like `host`; `sslmode=allow` is treated as `prefer`
//! (both accept either outcome); parameters walship cannot honour and whose
//! silent omission would weaken security (`service`, `sslcrl`,
//! `require_auth`, ...) are rejected instead of ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Secret;
use crate::pg::PgError;

/// libpq's compiled-in socket directory on Debian and Ubuntu.
pub const DEBIAN_SOCKET_DIR: &str = "/var/run/postgresql";
/// libpq's upstream compiled-in socket directory.
pub const UPSTREAM_SOCKET_DIR: &str = "/tmp";
/// libpq's default port.
pub const DEFAULT_PORT: u16 = 5432;

/// One host to try: a TCP host name or address, or a Unix-socket directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name or IP address.
    Tcp(String),
    /// A directory holding `.s.PGSQL.<port>` (a host starting with `/`).
    Unix(PathBuf),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp(h) => f.write_str(h),
            Host::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Host {
    /// Where this host listens on `port`, for messages: `db1:5432` or
    /// `/tmp/.s.PGSQL.5432`.
    pub fn describe(&self, port: u16) -> String {
        match self {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]:{port}"),
            Host::Tcp(h) => format!("{h}:{port}"),
            Host::Unix(p) => format!("{}/.s.PGSQL.{port}", p.display()),
        }
    }
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, plain otherwise (libpq's default).
    /// libpq's `allow` is parsed as this too.
    #[default]
    Prefer,
    /// TLS required, certificate not checked.
    Require,
    /// TLS required, certificate chain checked against `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the host name must match the certificate.
    VerifyFull,
}

impl SslMode {
    /// libpq's spelling of this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether this mode checks the server certificate against a CA.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl std::str::FromStr for SslMode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "disable" => SslMode::Disable,
            // `allow` tries plain first, `prefer` TLS first; both accept
            // either outcome, so neither is weaker than the other.
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return Err(()),
        })
    }
}

/// libpq's `target_session_attrs` (the subset tokio-postgres can check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetSessionAttrs {
    /// Any server will do (the default).
    #[default]
    Any,
    /// Only a server that accepts writes (`transaction_read_only` is off).
    ReadWrite,
    /// Only a server in read-only mode.
    ReadOnly,
}

impl TargetSessionAttrs {
    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
        }
    }
}

/// libpq's `channel_binding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelBinding {
    /// Never use channel binding.
    Disable,
    /// Use it when the server and TLS offer it (the default).
    #[default]
    Prefer,
    /// Fail unless SCRAM with channel binding is used.
    Require,
}

impl ChannelBinding {
    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelBinding::Disable => "disable",
            ChannelBinding::Prefer => "prefer",
            ChannelBinding::Require => "require",
        }
    }
}

/// Resolved connection settings: the conninfo string with libpq's environment
/// variables and defaults filled in.
///
/// `Debug` and [`Display`](fmt::Display) never show the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnConfig {
    /// Hosts to try in order (libpq's multi-host form); never empty.
    /// `hostaddr`, when given, is used in place of `host`.
    pub hosts: Vec<Host>,
    /// One port for every host, or one per host (checked at parse time).
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
    /// CA certificate(s). Set for `verify-ca`/`verify-full` (default
    /// `~/.postgresql/root.crt`, which must then exist); for `prefer` and
    /// `require` set only when the file exists, in which case the chain is
    /// checked as with `verify-ca` (libpq's backward-compatible rule). The
    /// value `system` means the bundled public CA roots.
    pub sslrootcert: Option<PathBuf>,
    /// Client certificate (explicit, or `~/.postgresql/postgresql.crt` when
    /// that file exists).
    pub sslcert: Option<PathBuf>,
    /// Client private key (explicit, or `~/.postgresql/postgresql.key` when
    /// that file exists).
    pub sslkey: Option<PathBuf>,
    /// `application_name` reported to the server (`application_name`,
    /// `PGAPPNAME`, then `fallback_application_name`).
    pub application_name: Option<String>,
    /// Give up connecting to one host after this long (`None`: wait forever).
    pub connect_timeout: Option<Duration>,
    /// `options=` passed at startup.
    pub options: Option<String>,
    /// Which kind of server is acceptable when several hosts are listed.
    pub target_session_attrs: TargetSessionAttrs,
    /// Whether SCRAM channel binding is used.
    pub channel_binding: ChannelBinding,
}

/// How walship treats each key libpq accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyUse {
    /// Resolved into a [`ConnConfig`] field.
    Used,
    /// Accepted and ignored: ignoring it cannot weaken security or send the
    /// connection somewhere else. The value is still validated when it is
    /// one of a few known forms.
    Ignored,
    /// Accepted by libpq but not by walship: ignoring it would be wrong.
    Unsupported,
}

fn key_use(key: &str) -> Option<KeyUse> {
    use KeyUse::*;
    Some(match key {
        "host"
        | "hostaddr"
        | "port"
        | "user"
        | "password"
        | "passfile"
        | "dbname"
        | "sslmode"
        | "sslrootcert"
        | "sslcert"
        | "sslkey"
        | "application_name"
        | "fallback_application_name"
        | "connect_timeout"
        | "options"
        | "target_session_attrs"
        | "channel_binding" => Used,
        // `replication` is set by walship itself; the rest only tune TCP,
        // encodings, or features walship never uses.
        "replication"
        | "keepalives"
        | "keepalives_idle"
        | "keepalives_interval"
        | "keepalives_count"
        | "tcp_user_timeout"
        | "client_encoding"
        | "gssencmode"
        | "krbsrvname"
        | "gsslib"
        | "gssdelegation"
        | "sslcompression"
        | "sslsni"
        | "ssl_min_protocol_version"
        | "ssl_max_protocol_version"
        | "load_balance_hosts"
        | "sslnegotiation"
        | "sslcertmode"
        | "min_protocol_version"
        | "max_protocol_version" => Ignored,
        "service"
        | "sslpassword"
        | "sslcrl"
        | "sslcrldir"
        | "requirepeer"
        | "require_auth"
        | "sslkeylogfile"
        | "scram_client_key"
        | "scram_server_key"
        | "oauth_issuer"
        | "oauth_client_id"
        | "oauth_client_secret"
        | "oauth_scope" => Unsupported,
        _ => return None,
    })
}

/// Values of ignored keys that would change behaviour if honoured: refuse
/// them rather than ignore them.
fn check_ignored_value(key: &str, value: &str) -> Result<(), PgError> {
    let ok = match key {
        // walship has no GSSAPI: `prefer`/`disable` end up plain or TLS.
        "gssencmode" => matches!(value, "" | "disable" | "prefer"),
        "sslnegotiation" => matches!(value, "" | "postgres"),
        "sslcertmode" => matches!(value, "" | "allow" | "disable"),
        "load_balance_hosts" => matches!(value, "" | "disable"),
        // walship always speaks UTF-8 (tokio-postgres forces it).
        "client_encoding" => {
            value.is_empty()
                || value.eq_ignore_ascii_case("utf8")
                || value.eq_ignore_ascii_case("utf-8")
                || value == "auto"
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(PgError::Config(format!(
            "unsupported value \"{value}\" for connection option \"{key}\""
        )))
    }
}

/// The explicit settings of a conninfo string, keyed by libpq key word,
/// before environment variables and defaults.
type RawOptions = BTreeMap<String, String>;

impl ConnConfig {
    /// Parses a libpq URI or `key=value` string, filling unset parts from the
    /// `PG*` environment variables and libpq's defaults.
    pub fn parse(conninfo: &str) -> Result<Self, PgError> {
        Self::parse_with_env(conninfo, &|name| std::env::var(name).ok())
    }

    /// As [`parse`](Self::parse), reading environment variables through
    /// `env` (which returns `None` for an unset variable). `HOME` is read
    /// through it too.
    pub fn parse_with_env(
        conninfo: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, PgError> {
        let raw = parse_raw(conninfo)?;
        resolve(&raw, env)
    }

    /// Pairs every host with its port, in the order they are tried.
    pub fn targets(&self) -> Vec<(Host, u16)> {
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = self
                    .ports
                    .get(i)
                    .or_else(|| self.ports.first())
                    .copied()
                    .unwrap_or(DEFAULT_PORT);
                (h.clone(), port)
            })
            .collect()
    }

    /// The password for a connection to `host`:`port` of database
    /// [`dbname`](Self::dbname): the explicit password, else the first
    /// matching line of the password file.
    pub fn password_for(&self, host: &Host, port: u16) -> Option<Secret> {
        self.password_for_database(host, port, &self.dbname)
    }

    /// The password for a physical replication connection to `host`:`port`.
    ///
    /// libpq matches the password file's database field against the
    /// connection's `dbname`; `pg_basebackup` and `pg_receivewal` connect
    /// with `dbname=replication`, which is why the libpq documentation says
    /// a database field of `replication` matches streaming replication
    /// connections. walship's physical connections follow those tools and
    /// match `replication` (or `*`).
    pub fn password_for_replication(&self, host: &Host, port: u16) -> Option<Secret> {
        self.password_for_database(host, port, "replication")
    }

    /// The password for `host`:`port` and database `dbname`: the explicit
    /// password first, then the password file.
    pub fn password_for_database(&self, host: &Host, port: u16, dbname: &str) -> Option<Secret> {
        if let Some(p) = &self.password {
            if !p.expose().is_empty() {
                return Some(p.clone());
            }
        }
        let passfile = self.passfile.as_deref()?;
        passfile_lookup(passfile, host, port, dbname, &self.user)
    }

    /// The settings as a `key=value` string without the password, for logs
    /// and messages. Same as the `Display` form.
    pub fn redacted(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ConnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<String> = self.hosts.iter().map(Host::to_string).collect();
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        write!(f, "host={}", quote_value(&hosts.join(",")))?;
        write!(f, " port={}", quote_value(&ports.join(",")))?;
        write!(f, " user={}", quote_value(&self.user))?;
        write!(f, " dbname={}", quote_value(&self.dbname))?;
        write!(f, " sslmode={}", self.sslmode.as_str())?;
        if let Some(a) = &self.application_name {
            write!(f, " application_name={}", quote_value(a))?;
        }
        if let Some(t) = self.connect_timeout {
            write!(f, " connect_timeout={}", t.as_secs())?;
        }
        if self.target_session_attrs != TargetSessionAttrs::Any {
            write!(
                f,
                " target_session_attrs={}",
                self.target_session_attrs.as_str()
            )?;
        }
        if self.password.is_some() {
            // Says that a password is set, never what it is.
            f.write_str(" password=<redacted>")?;
        }
        Ok(())
    }
}

/// Quotes a value for a `key=value` string when it needs it.
fn quote_value(v: &str) -> String {
    if !v.is_empty()
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
    {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('\'');
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

// ---------------------------------------------------------------------------
// Parsing the two syntaxes into raw options.

fn parse_raw(conninfo: &str) -> Result<RawOptions, PgError> {
    if let Some(rest) = conninfo
        .strip_prefix("postgresql://")
        .or_else(|| conninfo.strip_prefix("postgres://"))
    {
        parse_uri(rest)
    } else {
        parse_key_value(conninfo)
    }
}

/// Stores one explicit option, checking the key.
fn store(raw: &mut RawOptions, key: &str, value: String, from_uri: bool) -> Result<(), PgError> {
    match key_use(key) {
        None if from_uri => {
            return Err(PgError::Config(format!(
                "invalid URI query parameter: \"{key}\""
            )))
        }
        None => {
            return Err(PgError::Config(format!(
                "invalid connection option \"{key}\""
            )))
        }
        Some(KeyUse::Unsupported) => {
            return Err(PgError::Config(format!(
                "connection option \"{key}\" is not supported by walship"
            )))
        }
        Some(KeyUse::Ignored) => check_ignored_value(key, &value)?,
        Some(KeyUse::Used) => {}
    }
    raw.insert(key.to_string(), value);
    Ok(())
}

/// `key = value` pairs separated by whitespace; values may be single-quoted;
/// a backslash escapes the next character (quoted or not), as in libpq's
/// `conninfo_parse`.
fn parse_key_value(s: &str) -> Result<RawOptions, PgError> {
    let mut raw = RawOptions::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let n = chars.len();
    loop {
        while i < n && chars[i].is_whitespace() {
            i += 1;
        }
        if i >= n {
            break;
        }
        let start = i;
        while i < n && chars[i] != '=' && !chars[i].is_whitespace() {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        while i < n && chars[i].is_whitespace() {
            i += 1;
        }
        if i >= n || chars[i] != '=' {
            return Err(PgError::Config(format!(
                "missing \"=\" after \"{key}\" in connection info string"
            )));
        }
        i += 1;
        while i < n && chars[i].is_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < n && chars[i] == '\'' {
            i += 1;
            let mut closed = false;
            while i < n {
                match chars[i] {
                    '\\' if i + 1 < n => {
                        value.push(chars[i + 1]);
                        i += 2;
                    }
                    '\'' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    c => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
            if !closed {
                return Err(PgError::Config(
                    "unterminated quoted string in connection info string".into(),
                ));
            }
        } else {
            while i < n && !chars[i].is_whitespace() {
                if chars[i] == '\\' && i + 1 < n {
                    i += 1;
                }
                value.push(chars[i]);
                i += 1;
            }
        }
        store(&mut raw, &key, value, false)?;
    }
    Ok(raw)
}

/// `[user[:password]@][host[:port][,...]][/dbname][?key=value&...]`, the part
/// after `postgresql://`, as in libpq's `conninfo_uri_parse_options`.
fn parse_uri(rest: &str) -> Result<RawOptions, PgError> {
    let mut raw = RawOptions::new();
    let mut s = rest;

    // libpq looks for '@' before the first '/' only.
    let cred_end = s.find(['@', '/']).unwrap_or(s.len());
    if s[cred_end..].starts_with('@') {
        let userinfo = &s[..cred_end];
        let (user, password) = match userinfo.find(':') {
            Some(c) => (&userinfo[..c], Some(&userinfo[c + 1..])),
            None => (userinfo, None),
        };
        let user = percent_decode(user, "user")?;
        if !user.is_empty() {
            raw.insert("user".into(), user);
        }
        if let Some(p) = password {
            let p = percent_decode(p, "password")?;
            if !p.is_empty() {
                raw.insert("password".into(), p);
            }
        }
        s = &s[cred_end + 1..];
    }

    let mut hosts: Vec<String> = Vec::new();
    let mut ports: Vec<String> = Vec::new();
    let mut position = rest.len() - s.len() + "postgresql://".len();
    loop {
        let host;
        if let Some(after) = s.strip_prefix('[') {
            let close = after.find(']').ok_or_else(|| {
                PgError::Config(
                    "end of string reached when looking for matching \"]\" in IPv6 host \
                     address in URI"
                        .into(),
                )
            })?;
            if close == 0 {
                return Err(PgError::Config(
                    "IPv6 host address may not be empty in URI".into(),
                ));
            }
            host = after[..close].to_string();
            s = &after[close + 1..];
            position += close + 2;
            if let Some(c) = s.chars().next() {
                if !matches!(c, ':' | '/' | '?' | ',') {
                    return Err(PgError::Config(format!(
                        "unexpected character \"{c}\" at position {} in URI \
                         (expected \":\" or \"/\")",
                        position + 1
                    )));
                }
            }
        } else {
            let end = s.find([':', '/', '?', ',']).unwrap_or(s.len());
            host = percent_decode(&s[..end], "host")?;
            s = &s[end..];
            position += end;
        }
        let mut port = String::new();
        if let Some(after) = s.strip_prefix(':') {
            let end = after.find(['/', '?', ',']).unwrap_or(after.len());
            port = percent_decode(&after[..end], "port")?;
            s = &after[end..];
            position += end + 1;
        }
        hosts.push(host);
        ports.push(port);
        match s.strip_prefix(',') {
            Some(after) => {
                s = after;
                position += 1;
            }
            None => break,
        }
    }
    let host_list = hosts.join(",");
    if !host_list.is_empty() {
        raw.insert("host".into(), host_list);
    }
    let port_list = ports.join(",");
    if !port_list.is_empty() {
        raw.insert("port".into(), port_list);
    }

    if let Some(after) = s.strip_prefix('/') {
        let end = after.find('?').unwrap_or(after.len());
        let dbname = percent_decode(&after[..end], "dbname")?;
        if !dbname.is_empty() {
            raw.insert("dbname".into(), dbname);
        }
        s = &after[end..];
    }

    if let Some(query) = s.strip_prefix('?') {
        for pair in query.split('&') {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(PgError::Config(format!(
                    "missing key/value separator \"=\" in URI query parameter: \"{}\"",
                    redact_pair(pair)
                )));
            };
            if v.contains('=') {
                return Err(PgError::Config(format!(
                    "extra key/value separator \"=\" in URI query parameter: \"{k}\""
                )));
            }
            let k = percent_decode(k, "query parameter")?;
            let v = percent_decode(v, &k)?;
            // JDBC's `ssl=true`, which libpq accepts too.
            if k == "ssl" && v == "true" {
                store(&mut raw, "sslmode", "require".into(), true)?;
            } else {
                store(&mut raw, &k, v, true)?;
            }
        }
    } else if !s.is_empty() {
        return Err(PgError::Config(format!(
            "unexpected text \"{s}\" at the end of the URI"
        )));
    }
    Ok(raw)
}

/// A query parameter for an error message, with a password value hidden.
fn redact_pair(pair: &str) -> &str {
    if pair.starts_with("password") {
        "password"
    } else {
        pair
    }
}

/// libpq's URI percent-decoding: `%XX` with two hex digits, `%00` refused,
/// `+` left alone. `what` names the part for the error message (never the
/// value, which may be a password).
fn percent_decode(s: &str, what: &str) -> Result<String, PgError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(0) => {
                    return Err(PgError::Config(format!(
                        "forbidden value %00 in percent-encoded {what} in URI"
                    )))
                }
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => {
                    return Err(PgError::Config(format!(
                        "invalid percent-encoded token in {what} in URI"
                    )))
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| PgError::Config(format!("percent-encoded {what} in URI is not UTF-8")))
}

// ---------------------------------------------------------------------------
// Resolution: explicit settings, then environment, then defaults.

/// An explicit setting, else the environment variable. An explicit empty
/// value counts as set (libpq then uses the compiled default, not the
/// environment); an empty environment variable counts as unset.
fn setting(
    raw: &RawOptions,
    key: &str,
    var: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    if let Some(v) = raw.get(key) {
        return Some(v.clone());
    }
    var.and_then(env).filter(|v| !v.is_empty())
}

/// A setting that treats an empty value as unset.
fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|v| !v.is_empty())
}

fn resolve(raw: &RawOptions, env: &dyn Fn(&str) -> Option<String>) -> Result<ConnConfig, PgError> {
    let home = home_dir(env);

    // Environment variables of libpq features walship lacks, where going
    // on without them would connect elsewhere or check less.
    for (var, key) in [
        ("PGSERVICE", "service"),
        ("PGSSLCRL", "sslcrl"),
        ("PGSSLCRLDIR", "sslcrldir"),
        ("PGREQUIREPEER", "requirepeer"),
        ("PGREQUIREAUTH", "require_auth"),
    ] {
        if env(var).is_some_and(|v| !v.is_empty()) {
            return Err(PgError::Config(format!(
                "{var} is set, but walship does not support libpq's \"{key}\"; unset it"
            )));
        }
    }

    // Hosts.
    let host_setting = setting(raw, "host", Some("PGHOST"), env);
    let hostaddr_setting = nonempty(setting(raw, "hostaddr", Some("PGHOSTADDR"), env));
    let host_entries: Vec<String> = match &host_setting {
        Some(h) => h.split(',').map(str::to_string).collect(),
        None => vec![String::new()],
    };
    let host_entries = match &hostaddr_setting {
        None => host_entries,
        Some(addrs) => {
            let addrs: Vec<String> = addrs.split(',').map(|a| a.trim().to_string()).collect();
            // libpq takes only numeric addresses here (no name lookup).
            for a in addrs.iter().filter(|a| !a.is_empty()) {
                if a.parse::<std::net::IpAddr>().is_err() {
                    return Err(PgError::Config(format!(
                        "could not parse network address \"{a}\" (connection option \"hostaddr\")"
                    )));
                }
            }
            if host_setting.is_some() && host_entries.len() != addrs.len() {
                return Err(PgError::Config(format!(
                    "could not match {} host names to {} hostaddr values",
                    host_entries.len(),
                    addrs.len()
                )));
            }
            // hostaddr wins where given; an empty entry falls back to host.
            addrs
                .into_iter()
                .enumerate()
                .map(|(i, a)| {
                    if a.is_empty() {
                        host_entries.get(i).cloned().unwrap_or_default()
                    } else {
                        a
                    }
                })
                .collect()
        }
    };
    let mut hosts = Vec::with_capacity(host_entries.len());
    for h in &host_entries {
        let h = h.trim();
        hosts.push(if h.is_empty() {
            Host::Unix(default_socket_dir())
        } else if h.starts_with('/') {
            Host::Unix(PathBuf::from(h))
        } else if h.starts_with('@') {
            return Err(PgError::Config(format!(
                "host \"{h}\": abstract Unix sockets are not supported by walship"
            )));
        } else {
            Host::Tcp(h.to_string())
        });
    }

    // Ports.
    let ports = match setting(raw, "port", Some("PGPORT"), env) {
        None => vec![DEFAULT_PORT],
        Some(p) => {
            let mut ports = Vec::new();
            for entry in p.split(',') {
                ports.push(parse_port(entry)?);
            }
            ports
        }
    };
    if ports.len() != 1 && ports.len() != hosts.len() {
        return Err(PgError::Config(format!(
            "could not match {} port numbers to {} hosts (connection option \"port\")",
            ports.len(),
            hosts.len()
        )));
    }

    // Role and database.
    let user = match nonempty(setting(raw, "user", Some("PGUSER"), env)) {
        Some(u) => u,
        None => os_user_name(env).ok_or_else(|| {
            PgError::Config(
                "no user given (user=, PGUSER) and the operating-system user name could not \
                 be found"
                    .into(),
            )
        })?,
    };
    let dbname =
        nonempty(setting(raw, "dbname", Some("PGDATABASE"), env)).unwrap_or_else(|| user.clone());
    let password = setting(raw, "password", Some("PGPASSWORD"), env)
        .filter(|p| !p.is_empty())
        .map(Secret::new);
    let passfile = nonempty(setting(raw, "passfile", Some("PGPASSFILE"), env))
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".pgpass")));

    // TLS.
    let sslmode = match nonempty(setting(raw, "sslmode", Some("PGSSLMODE"), env)) {
        None => SslMode::default(),
        Some(m) => m.parse().map_err(|()| {
            PgError::Config(format!(
                "invalid value \"{m}\" for connection option \"sslmode\" (expected disable, \
                 allow, prefer, require, verify-ca or verify-full)"
            ))
        })?,
    };
    let pg_dir = home.as_ref().map(|h| h.join(".postgresql"));
    let sslrootcert = match nonempty(setting(raw, "sslrootcert", Some("PGSSLROOTCERT"), env)) {
        Some(p) if p == "system" => {
            if sslmode != SslMode::VerifyFull {
                return Err(PgError::Config(format!(
                    "weak sslmode \"{}\" may not be used with sslrootcert=system (use \
                     \"verify-full\")",
                    sslmode.as_str()
                )));
            }
            Some(PathBuf::from("system"))
        }
        Some(p) if sslmode.verifies() || Path::new(&p).is_file() => Some(PathBuf::from(p)),
        Some(_) => None,
        None => {
            let default = pg_dir.as_ref().map(|d| d.join("root.crt"));
            match default {
                Some(d) if sslmode.verifies() || d.is_file() => Some(d),
                _ => None,
            }
        }
    };
    if sslmode.verifies() && sslrootcert.is_none() {
        return Err(PgError::Config(format!(
            "sslmode={} needs a root certificate: set sslrootcert (no home directory to \
             find ~/.postgresql/root.crt)",
            sslmode.as_str()
        )));
    }
    let client_file = |key: &str, var: &str, default: &str| -> Option<PathBuf> {
        match nonempty(setting(raw, key, Some(var), env)) {
            Some(p) => Some(PathBuf::from(p)),
            None => pg_dir
                .as_ref()
                .map(|d| d.join(default))
                .filter(|p| p.is_file()),
        }
    };
    let sslcert = client_file("sslcert", "PGSSLCERT", "postgresql.crt");
    let sslkey = client_file("sslkey", "PGSSLKEY", "postgresql.key");

    // The rest.
    let application_name = nonempty(setting(raw, "application_name", Some("PGAPPNAME"), env))
        .or_else(|| nonempty(raw.get("fallback_application_name").cloned()));
    let connect_timeout = match nonempty(setting(
        raw,
        "connect_timeout",
        Some("PGCONNECT_TIMEOUT"),
        env,
    )) {
        None => None,
        Some(t) => parse_timeout(&t)?,
    };
    let options = nonempty(setting(raw, "options", Some("PGOPTIONS"), env));
    let target_session_attrs = match nonempty(setting(
        raw,
        "target_session_attrs",
        Some("PGTARGETSESSIONATTRS"),
        env,
    ))
    .as_deref()
    {
        None | Some("any") => TargetSessionAttrs::Any,
        Some("read-write") => TargetSessionAttrs::ReadWrite,
        Some("read-only") => TargetSessionAttrs::ReadOnly,
        Some(v) => {
            return Err(PgError::Config(format!(
                "invalid value \"{v}\" for connection option \"target_session_attrs\" \
                 (walship supports any, read-write and read-only)"
            )))
        }
    };
    let channel_binding = match nonempty(setting(
        raw,
        "channel_binding",
        Some("PGCHANNELBINDING"),
        env,
    ))
    .as_deref()
    {
        None | Some("prefer") => ChannelBinding::Prefer,
        Some("disable") => ChannelBinding::Disable,
        Some("require") => ChannelBinding::Require,
        Some(v) => {
            return Err(PgError::Config(format!(
                "invalid value \"{v}\" for connection option \"channel_binding\" (expected \
                 disable, prefer or require)"
            )))
        }
    };

    Ok(ConnConfig {
        hosts,
        ports,
        user,
        password,
        passfile,
        dbname,
        sslmode,
        sslrootcert,
        sslcert,
        sslkey,
        application_name,
        connect_timeout,
        options,
        target_session_attrs,
        channel_binding,
    })
}

/// One entry of a port list: empty means the default port.
fn parse_port(entry: &str) -> Result<u16, PgError> {
    let e = entry.trim();
    if e.is_empty() {
        return Ok(DEFAULT_PORT);
    }
    match e.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(PgError::Config(format!(
            "invalid port number \"{e}\" for connection option \"port\""
        ))),
    }
}

/// libpq's `connect_timeout`: whole seconds; zero or negative means no
/// limit, and 1 is raised to 2 (libpq's minimum).
fn parse_timeout(t: &str) -> Result<Option<Duration>, PgError> {
    let secs: i64 = t.trim().parse().map_err(|_| {
        PgError::Config(format!(
            "invalid integer value \"{t}\" for connection option \"connect_timeout\""
        ))
    })?;
    Ok(match secs {
        s if s <= 0 => None,
        1 => Some(Duration::from_secs(2)),
        s => Some(Duration::from_secs(s.unsigned_abs())),
    })
}

/// The default Unix-socket directory: Debian's libpq default when it exists,
/// else upstream's.
pub fn default_socket_dir() -> PathBuf {
    if Path::new(DEBIAN_SOCKET_DIR).is_dir() {
        PathBuf::from(DEBIAN_SOCKET_DIR)
    } else {
        PathBuf::from(UPSTREAM_SOCKET_DIR)
    }
}

/// The effective uid of this process, from `/proc/self/status`.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Real, effective, saved, filesystem.
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The `/etc/passwd` entry (name, home) of the effective uid.
fn passwd_entry() -> Option<(String, PathBuf)> {
    let uid = effective_uid()?;
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid) {
            Some((f[0].to_string(), PathBuf::from(f[5])))
        } else {
            None
        }
    })
}

/// libpq's default user: the operating-system user (`getpwuid(geteuid())`),
/// then `$USER` / `$LOGNAME` when there is no passwd entry.
fn os_user_name(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    passwd_entry()
        .map(|(name, _)| name)
        .or_else(|| env("USER").filter(|u| !u.is_empty()))
        .or_else(|| env("LOGNAME").filter(|u| !u.is_empty()))
}

/// libpq's home directory: `$HOME`, else the passwd entry's.
fn home_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| passwd_entry().map(|(_, home)| home))
}

// ---------------------------------------------------------------------------
// The password file.

/// The host name a password-file line is matched against: libpq matches a
/// connection over the default socket directory as `localhost`, and other
/// socket directories by their path.
fn passfile_host(host: &Host) -> String {
    match host {
        Host::Tcp(h) => h.clone(),
        Host::Unix(dir) => {
            if dir == Path::new(DEBIAN_SOCKET_DIR) || dir == Path::new(UPSTREAM_SOCKET_DIR) {
                "localhost".to_string()
            } else {
                dir.display().to_string()
            }
        }
    }
}

/// Looks `host`:`port`, `dbname`, `user` up in the password file. A missing
/// file is silently ignored; a file that is not a plain file, or that group
/// or others may read, is ignored with a warning, as libpq does.
fn passfile_lookup(
    passfile: &Path,
    host: &Host,
    port: u16,
    dbname: &str,
    user: &str,
) -> Option<Secret> {
    if dbname.is_empty() || user.is_empty() {
        return None;
    }
    let meta = std::fs::metadata(passfile).ok()?;
    if !meta.is_file() {
        tracing::warn!(
            passfile = %passfile.display(),
            "password file is not a plain file; ignoring it"
        );
        return None;
    }
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                passfile = %passfile.display(),
                "password file has group or world access; permissions should be u=rw (0600) \
                 or less; ignoring it"
            );
            return None;
        }
    }
    let text = match std::fs::read(passfile) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(passfile = %passfile.display(), error = %e, "cannot read password file");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&text);
    let host = passfile_host(host);
    let port = port.to_string();
    passfile_match(&text, &host, &port, dbname, user).map(Secret::new)
}

/// The password of the first line of a password file that matches.
fn passfile_match(text: &str, host: &str, port: &str, dbname: &str, user: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let rest = line.as_bytes();
        let Some(rest) = field_matches(rest, host) else {
            continue;
        };
        let Some(rest) = field_matches(rest, port) else {
            continue;
        };
        let Some(rest) = field_matches(rest, dbname) else {
            continue;
        };
        let Some(rest) = field_matches(rest, user) else {
            continue;
        };
        // The password runs to the next unescaped ':' or the end of line.
        let mut pw = Vec::new();
        let mut i = 0;
        while i < rest.len() && rest[i] != b':' {
            if rest[i] == b'\\' && i + 1 < rest.len() {
                i += 1;
            }
            pw.push(rest[i]);
            i += 1;
        }
        return Some(String::from_utf8_lossy(&pw).into_owned());
    }
    None
}

/// Whether the field at the start of `buf` matches `token` (`*` matches
/// anything; `\` escapes `:` and `\`): returns what follows its `:`.
fn field_matches<'a>(buf: &'a [u8], token: &str) -> Option<&'a [u8]> {
    if buf.starts_with(b"*:") {
        return Some(&buf[2..]);
    }
    let tok = token.as_bytes();
    let mut t = 0;
    let mut i = 0;
    while i < buf.len() {
        let mut escaped = false;
        if buf[i] == b'\\' && i + 1 < buf.len() {
            escaped = true;
            i += 1;
        }
        if buf[i] == b':' && !escaped {
            return (t == tok.len()).then(|| &buf[i + 1..]);
        }
        if t < tok.len() && tok[t] == buf[i] {
            t += 1;
            i += 1;
        } else {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// Parses with an environment holding only `HOME` and `USER` pointing
    /// nowhere useful, so the machine's own settings do not leak in.
    fn p(s: &str) -> ConnConfig {
        let env = env_of(&[("HOME", "/nonexistent-home"), ("PGUSER", "alice")]);
        ConnConfig::parse_with_env(s, &env).unwrap()
    }

    fn err(s: &str) -> String {
        let env = env_of(&[("HOME", "/nonexistent-home"), ("PGUSER", "alice")]);
        ConnConfig::parse_with_env(s, &env).unwrap_err().to_string()
    }

    fn tcp(h: &str) -> Host {
        Host::Tcp(h.into())
    }

    #[test]
    fn empty_string_is_all_defaults() {
        let c = p("");
        assert_eq!(c.hosts, vec![Host::Unix(default_socket_dir())]);
        assert_eq!(c.ports, vec![5432]);
        assert_eq!(c.user, "alice");
        assert_eq!(c.dbname, "alice");
        assert_eq!(c.sslmode, SslMode::Prefer);
        assert_eq!(c.password, None);
        assert_eq!(c.passfile, Some(PathBuf::from("/nonexistent-home/.pgpass")));
        assert_eq!(c.sslrootcert, None);
        assert_eq!(c.connect_timeout, None);
        assert_eq!(c.target_session_attrs, TargetSessionAttrs::Any);
    }

    #[test]
    fn libpq_doc_uri_examples() {
        let c = p("postgresql://");
        assert_eq!(c.hosts, vec![Host::Unix(default_socket_dir())]);

        let c = p("postgresql://localhost");
        assert_eq!(c.hosts, vec![tcp("localhost")]);
        assert_eq!(c.ports, vec![5432]);

        let c = p("postgresql://localhost:5433");
        assert_eq!(c.targets(), vec![(tcp("localhost"), 5433)]);

        let c = p("postgresql://localhost/mydb");
        assert_eq!(c.dbname, "mydb");

        let c = p("postgresql://user@localhost");
        assert_eq!(c.user, "user");

        let c = p("postgresql://user:secret@localhost");
        assert_eq!(c.user, "user");
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("secret"));

        let c = p("postgresql://other@localhost/otherdb?connect_timeout=10&application_name=myapp");
        assert_eq!(c.user, "other");
        assert_eq!(c.dbname, "otherdb");
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(10)));
        assert_eq!(c.application_name.as_deref(), Some("myapp"));

        let c = p("postgresql://host1:123,host2:456/somedb?target_session_attrs=any&application_name=myapp");
        assert_eq!(c.targets(), vec![(tcp("host1"), 123), (tcp("host2"), 456)]);
        assert_eq!(c.dbname, "somedb");

        let c = p("postgres://localhost/mydb?user=other&password=secret");
        assert_eq!(c.user, "other");
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("secret"));
    }

    #[test]
    fn uri_percent_encoding_and_socket_dirs() {
        let c = p("postgresql://%2Fvar%2Flib%2Fpostgresql/dbname");
        assert_eq!(c.hosts, vec![Host::Unix("/var/lib/postgresql".into())]);
        assert_eq!(c.dbname, "dbname");

        let c = p("postgresql:///dbname?host=/var/lib/postgresql");
        assert_eq!(c.hosts, vec![Host::Unix("/var/lib/postgresql".into())]);

        let c = p("postgresql:///mydb?host=localhost&port=5433");
        assert_eq!(c.targets(), vec![(tcp("localhost"), 5433)]);

        let c = p("postgresql://us%40er:p%3Aw%2F@h/d%20b");
        assert_eq!(c.user, "us@er");
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("p:w/"));
        assert_eq!(c.dbname, "d b");

        // '+' is not a space in libpq URIs.
        assert_eq!(p("postgresql://h/a+b").dbname, "a+b");

        assert!(err("postgresql://h/a%zz").contains("invalid percent-encoded token"));
        assert!(err("postgresql://h/a%0").contains("invalid percent-encoded token"));
        assert!(err("postgresql://h/a%00").contains("forbidden value %00"));
    }

    #[test]
    fn uri_ipv6() {
        let c = p("postgresql://[2001:db8::1234]/database");
        assert_eq!(c.hosts, vec![tcp("2001:db8::1234")]);
        assert_eq!(c.dbname, "database");

        let c = p("postgresql://[::1]:5433,[fe80::1]/db");
        assert_eq!(
            c.targets(),
            vec![(tcp("::1"), 5433), (tcp("fe80::1"), 5432)]
        );
        assert_eq!(tcp("::1").describe(5433), "[::1]:5433");

        assert!(err("postgresql://[::1").contains("matching \"]\""));
        assert!(err("postgresql://[]/db").contains("may not be empty"));
        assert!(err("postgresql://[::1]x/db").contains("unexpected character \"x\""));
    }

    #[test]
    fn uri_multi_host_with_partial_ports() {
        let c = p("postgresql://h1:5433,h2,h3:5435/db");
        assert_eq!(
            c.targets(),
            vec![(tcp("h1"), 5433), (tcp("h2"), 5432), (tcp("h3"), 5435)]
        );
        // An empty host in the list is the default socket directory.
        let c = p("postgresql://h1,/db");
        assert_eq!(c.hosts, vec![tcp("h1"), Host::Unix(default_socket_dir())]);
    }

    #[test]
    fn uri_query_errors_and_ssl_true() {
        assert_eq!(
            err("postgresql://h/db?foo=bar"),
            "connection settings: invalid URI query parameter: \"foo\""
        );
        assert!(err("postgresql://h/db?sslmode").contains("missing key/value separator"));
        assert!(err("postgresql://h/db?sslmode=a=b").contains("extra key/value separator"));
        assert_eq!(p("postgresql://h/db?ssl=true").sslmode, SslMode::Require);
        // A password given without '=' is not echoed.
        assert!(!err("postgresql://h/db?passwordhunter2").contains("hunter2"));
    }

    #[test]
    fn key_value_examples_quoting_and_escapes() {
        let c = p("host=localhost port=5432 dbname=mydb connect_timeout=10");
        assert_eq!(c.targets(), vec![(tcp("localhost"), 5432)]);
        assert_eq!(c.dbname, "mydb");
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(10)));

        let c = p("  host = db1   user='a b' password='it\\'s \\\\ ok' dbname=''  ");
        assert_eq!(c.hosts, vec![tcp("db1")]);
        assert_eq!(c.user, "a b");
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("it's \\ ok"));
        // An explicit empty dbname means the default: the user name.
        assert_eq!(c.dbname, "a b");

        // Backslash escapes work unquoted too.
        let c = p(r"user=a\ b options=-c\ x=1");
        assert_eq!(c.user, "a b");
        assert_eq!(c.options.as_deref(), Some("-c x=1"));

        let c = p("host=/tmp,db2 port=5433,5434 sslmode=disable application_name=w");
        assert_eq!(
            c.targets(),
            vec![(Host::Unix("/tmp".into()), 5433), (tcp("db2"), 5434)]
        );
        assert_eq!(c.sslmode, SslMode::Disable);

        // Last one wins, as in libpq.
        assert_eq!(p("port=1 port=2").ports, vec![2]);

        assert!(err("host").contains("missing \"=\" after \"host\""));
        assert!(err("host=a user='bob").contains("unterminated quoted string"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        assert_eq!(
            err("hots=x"),
            "connection settings: invalid connection option \"hots\""
        );
        assert_eq!(
            err("port=54x32"),
            "connection settings: invalid port number \"54x32\" for connection option \"port\""
        );
        assert!(err("port=0").contains("invalid port number \"0\""));
        assert!(err("port=70000").contains("invalid port number \"70000\""));
        assert!(err("sslmode=sometimes")
            .contains("invalid value \"sometimes\" for connection option \"sslmode\""));
        assert!(err("connect_timeout=soon")
            .contains("invalid integer value \"soon\" for connection option \"connect_timeout\""));
        assert!(err("target_session_attrs=standby").contains("target_session_attrs"));
        assert!(err("service=prod").contains("\"service\" is not supported"));
        assert!(err("sslcrl=/x.crl").contains("\"sslcrl\" is not supported"));
        assert!(err("gssencmode=require").contains("\"gssencmode\""));
        assert!(err("host=@abstract").contains("abstract Unix sockets"));
        // Harmless libpq keys are accepted.
        let c = p("keepalives=1 keepalives_idle=30 gssencmode=disable replication=true sslsni=1");
        assert_eq!(c.hosts.len(), 1);
    }

    #[test]
    fn port_count_must_match_hosts() {
        let e = err("host=a,b,c port=1,2");
        assert!(
            e.contains("could not match 2 port numbers to 3 hosts"),
            "{e}"
        );
        assert!(e.contains("\"port\""));
        let c = p("host=a,b,c port=6000");
        assert_eq!(
            c.targets().iter().map(|t| t.1).collect::<Vec<_>>(),
            vec![6000; 3]
        );
    }

    #[test]
    fn connect_timeout_rules() {
        assert_eq!(p("connect_timeout=0").connect_timeout, None);
        assert_eq!(p("connect_timeout=-5").connect_timeout, None);
        assert_eq!(
            p("connect_timeout=1").connect_timeout,
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn environment_fallbacks() {
        let env = env_of(&[
            ("HOME", "/nonexistent-home"),
            ("PGHOST", "envhost,/run/pg"),
            ("PGPORT", "6001"),
            ("PGUSER", "envuser"),
            ("PGPASSWORD", "envpw"),
            ("PGPASSFILE", "/etc/pw"),
            ("PGDATABASE", "envdb"),
            ("PGSSLMODE", "require"),
            ("PGAPPNAME", "envapp"),
            ("PGCONNECT_TIMEOUT", "7"),
            ("PGOPTIONS", "-c work_mem=1MB"),
        ]);
        let c = ConnConfig::parse_with_env("", &env).unwrap();
        assert_eq!(
            c.targets(),
            vec![(tcp("envhost"), 6001), (Host::Unix("/run/pg".into()), 6001)]
        );
        assert_eq!(c.user, "envuser");
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("envpw"));
        assert_eq!(c.passfile, Some(PathBuf::from("/etc/pw")));
        assert_eq!(c.dbname, "envdb");
        assert_eq!(c.sslmode, SslMode::Require);
        assert_eq!(c.application_name.as_deref(), Some("envapp"));
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(c.options.as_deref(), Some("-c work_mem=1MB"));

        // Explicit settings beat the environment.
        let c = ConnConfig::parse_with_env("postgresql://u@h:1/d?sslmode=disable", &env).unwrap();
        assert_eq!((c.user.as_str(), c.dbname.as_str()), ("u", "d"));
        assert_eq!(c.targets(), vec![(tcp("h"), 1)]);
        assert_eq!(c.sslmode, SslMode::Disable);

        // PGHOSTADDR is used like a host.
        let env = env_of(&[("HOME", "/x"), ("PGUSER", "u"), ("PGHOSTADDR", "10.0.0.1")]);
        assert_eq!(
            ConnConfig::parse_with_env("", &env).unwrap().hosts,
            vec![tcp("10.0.0.1")]
        );
        // hostaddr beats host; both lists must have the same length.
        assert_eq!(
            p("host=db hostaddr=192.0.2.7").hosts,
            vec![tcp("192.0.2.7")]
        );
        assert_eq!(
            p("host=a,b hostaddr=,::1").hosts,
            vec![tcp("a"), tcp("::1")]
        );
        assert!(err("host=a,b hostaddr=192.0.2.7").contains("could not match 2 host names"));
        assert!(
            err("hostaddr=db.example").contains("could not parse network address \"db.example\"")
        );

        // libpq features walship lacks are refused, not ignored.
        let env = env_of(&[("HOME", "/x"), ("PGUSER", "u"), ("PGSERVICE", "prod")]);
        let e = ConnConfig::parse_with_env("", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("PGSERVICE is set"), "{e}");

        // A bad value from the environment is named too.
        let env = env_of(&[("HOME", "/x"), ("PGUSER", "u"), ("PGPORT", "abc")]);
        let e = ConnConfig::parse_with_env("", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid port number \"abc\""), "{e}");
    }

    #[test]
    fn application_name_fallback() {
        assert_eq!(
            p("fallback_application_name=fb")
                .application_name
                .as_deref(),
            Some("fb")
        );
        assert_eq!(
            p("fallback_application_name=fb application_name=real")
                .application_name
                .as_deref(),
            Some("real")
        );
        let env = env_of(&[("HOME", "/x"), ("PGUSER", "u"), ("PGAPPNAME", "envapp")]);
        let c = ConnConfig::parse_with_env("fallback_application_name=fb", &env).unwrap();
        assert_eq!(c.application_name.as_deref(), Some("envapp"));
    }

    #[test]
    fn ssl_root_cert_defaults() {
        let c = p("sslmode=verify-full host=db");
        assert_eq!(
            c.sslrootcert,
            Some(PathBuf::from("/nonexistent-home/.postgresql/root.crt"))
        );
        // Not needed, not present: unset.
        assert_eq!(p("sslmode=require").sslrootcert, None);
        assert_eq!(
            p("sslmode=require sslrootcert=/nonexistent.crt").sslrootcert,
            None
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".postgresql")).unwrap();
        std::fs::write(dir.path().join(".postgresql/root.crt"), "x").unwrap();
        std::fs::write(dir.path().join(".postgresql/postgresql.crt"), "x").unwrap();
        let home = dir.path().to_str().unwrap();
        let env = env_of(&[("HOME", home), ("PGUSER", "u")]);
        let c = ConnConfig::parse_with_env("sslmode=require", &env).unwrap();
        assert_eq!(c.sslrootcert, Some(dir.path().join(".postgresql/root.crt")));
        assert_eq!(
            c.sslcert,
            Some(dir.path().join(".postgresql/postgresql.crt"))
        );
        assert_eq!(c.sslkey, None);

        assert!(err("sslrootcert=system sslmode=require").contains("weak sslmode"));
        assert_eq!(
            p("sslrootcert=system sslmode=verify-full").sslrootcert,
            Some(PathBuf::from("system"))
        );
    }

    #[test]
    fn password_never_displayed() {
        let c = p("postgresql://bob:hunter2@db/x");
        let shown = format!("{c} {c:?} {}", c.redacted());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(c.to_string().contains("password=<redacted>"));
        let c = p("password='hunter2' user=bob host=db");
        assert!(!format!("{c} {c:?}").contains("hunter2"));
        // Quoting in the display form round-trips.
        let c = p("user='a b' host=/tmp");
        let again = p(&c.to_string());
        assert_eq!(again.user, "a b");
        assert_eq!(again.hosts, c.hosts);
    }

    #[test]
    fn pgpass_matching_rules() {
        let file = "\
# comment line
db1:5432:app:bob:first
*:*:replication:bob:repl\\:pw
localhost:5432:*:bob:local
/run/pg:5433:*:bob:socketdir
h\\:x:*:*:*:escaped\\\\host
*:*:*:*:fallback:trailing
";
        let m = |h: &str, port: &str, db: &str, u: &str| passfile_match(file, h, port, db, u);
        assert_eq!(m("db1", "5432", "app", "bob").as_deref(), Some("first"));
        assert_eq!(
            m("db1", "5432", "replication", "bob").as_deref(),
            Some("repl:pw")
        );
        assert_eq!(m("db1", "5433", "app", "bob").as_deref(), Some("fallback"));
        assert_eq!(m("localhost", "5432", "x", "bob").as_deref(), Some("local"));
        assert_eq!(
            m("/run/pg", "5433", "x", "bob").as_deref(),
            Some("socketdir")
        );
        assert_eq!(m("h:x", "1", "d", "u").as_deref(), Some("escaped\\host"));
        // A prefix of a field is not a match.
        assert_eq!(m("db", "5432", "app", "bob").as_deref(), Some("fallback"));
        assert_eq!(
            passfile_match("db1:5432:app:bob:pw\r\n", "db1", "5432", "app", "bob").as_deref(),
            Some("pw")
        );
        assert_eq!(
            passfile_match("# only a comment\n", "a", "1", "b", "c"),
            None
        );
        assert_eq!(passfile_match("a:1:b:c\n", "a", "1", "b", "c"), None);
    }

    #[test]
    fn pgpass_socket_hosts_and_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pgpass");
        std::fs::write(
            &pass,
            "localhost:5432:*:bob:viasocket\n/srv/sock:5432:*:bob:othersock\ndb:*:*:bob:tcp\n",
        )
        .unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = format!("user=bob dbname=app passfile={}", pass.display());
        let c = p(&s);
        let unix = |d: &str| Host::Unix(d.into());
        assert_eq!(
            c.password_for(&unix("/var/run/postgresql"), 5432)
                .unwrap()
                .expose(),
            "viasocket"
        );
        assert_eq!(
            c.password_for(&unix("/tmp"), 5432).unwrap().expose(),
            "viasocket"
        );
        assert_eq!(
            c.password_for(&unix("/srv/sock"), 5432).unwrap().expose(),
            "othersock"
        );
        assert_eq!(c.password_for(&tcp("db"), 9999).unwrap().expose(), "tcp");
        assert_eq!(
            c.password_for_replication(&tcp("db"), 1).unwrap().expose(),
            "tcp"
        );
        assert!(c.password_for(&tcp("other"), 5432).is_none());

        // An explicit password wins over the file.
        let c2 = p(&format!("{s} password=explicit"));
        assert_eq!(c2.password_for(&tcp("db"), 1).unwrap().expose(), "explicit");

        // Group- or world-readable: ignored, as libpq does.
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(c.password_for(&tcp("db"), 1).is_none());
        // Missing file: no password, no error.
        let c3 = p("user=bob passfile=/nonexistent/pgpass");
        assert!(c3.password_for(&tcp("db"), 1).is_none());
        // A directory is not a password file.
        let c4 = p(&format!("user=bob passfile={}", dir.path().display()));
        assert!(c4.password_for(&tcp("db"), 1).is_none());
    }

    #[test]
    fn replication_matches_replication_database() {
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pgpass");
        std::fs::write(&pass, "*:*:replication:bob:repl\n*:*:app:bob:app\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let c = p(&format!("user=bob dbname=app passfile={}", pass.display()));
        assert_eq!(c.password_for(&tcp("h"), 5432).unwrap().expose(), "app");
        assert_eq!(
            c.password_for_replication(&tcp("h"), 5432)
                .unwrap()
                .expose(),
            "repl"
        );
    }
}
