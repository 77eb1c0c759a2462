//! Throwaway PostgreSQL clusters for integration tests.
//!
//! # Which binaries
//!
//! One environment variable, `WALSHIP_PG_BIN`, names the directory holding the
//! server binaries `initdb`, `pg_ctl` and `postgres` (default: Debian's
//! PostgreSQL 15 in `/usr/lib/postgresql/15/bin`). Client tools (`psql`,
//! `pgbench`, `pg_basebackup`, `pg_controldata`, `pg_waldump`) are taken from
//! `WALSHIP_PG_BIN` when present there and from Debian's 15 otherwise: the npm
//! builds that `scripts/fetch-pg.sh` installs ship server binaries only, and
//! psql 15 talks to every major from 13 to 18. Missing binaries make the test
//! panic with instructions; nothing is ever skipped.
//!
//! # Which user
//!
//! PostgreSQL refuses to run as root. When the tests run as root, every
//! PostgreSQL program (initdb, pg_ctl, the server, psql, pgbench) runs as the
//! unprivileged user [`TEST_USER`] (created with `useradd --system` when
//! missing) through `setpriv`; otherwise as the current user.
//!
//! # What the harness ensures about permissions
//!
//! - Each cluster's temporary directory (`/tmp/walship-pg-*`) is owned by that
//!   user; it holds `data/`, the socket directory `sock/`, the server log `log`
//!   and, with TLS, `ca.crt` (server certificate and key live in `data/`).
//! - [`walship_bin`] checks that the unprivileged user can execute the
//!   `walship` binary (it will run as `archive_command`); when it cannot and we
//!   are root, it adds the search (`o+x`) bit to the binary's ancestor
//!   directories (and `o+rx` to the binary), nothing more, then checks again.
//! - The server binaries must be executable by that user: `scripts/fetch-pg.sh`
//!   makes `.pg/` world-readable; a failing check names the path.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Debian's PostgreSQL 15: the default server and the fallback client tools.
pub const DEBIAN_PG15_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The unprivileged user that runs PostgreSQL when the tests run as root.
pub const TEST_USER: &str = "walship-test";
/// The superuser role every test cluster is created with.
pub const SUPERUSER: &str = "postgres";
/// The password used when an authenticating method is chosen without one.
pub const DEFAULT_PASSWORD: &str = "walship-test-pw";

/// How a panic tells the developer to get the server binaries.
const HOW_TO_GET_PG: &str = "get PostgreSQL 15 with `apt-get install postgresql-15` \
     (binaries in /usr/lib/postgresql/15/bin), or another major with `scripts/fetch-pg.sh 13` \
     and `WALSHIP_PG_BIN=$PWD/.pg/13/bin`";

// ---------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------

/// The PostgreSQL binaries chosen by `WALSHIP_PG_BIN`.
#[derive(Debug)]
pub struct PgBin {
    /// Directory of the server binaries.
    pub dir: PathBuf,
    /// Major version of the server (13, 14, ..., 18).
    pub major: u32,
    /// `postgres --version` output, for messages.
    pub version: String,
}

impl PgBin {
    /// The binaries for this test process (resolved once). Panics, saying how
    /// to get them, when the server binaries are missing or do not run.
    pub fn get() -> &'static PgBin {
        static BIN: OnceLock<PgBin> = OnceLock::new();
        BIN.get_or_init(|| {
            let dir = std::env::var_os("WALSHIP_PG_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEBIAN_PG15_BIN));
            for name in ["initdb", "pg_ctl", "postgres"] {
                let p = dir.join(name);
                if !p.is_file() {
                    panic!(
                        "PostgreSQL server binary {} is missing (WALSHIP_PG_BIN={}): {HOW_TO_GET_PG}",
                        p.display(),
                        dir.display()
                    );
                }
            }
            let postgres = dir.join("postgres");
            let out = Command::new(&postgres)
                .arg("--version")
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}; {HOW_TO_GET_PG}", postgres.display()));
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !out.status.success() {
                panic!(
                    "{} --version failed: {}; {HOW_TO_GET_PG}",
                    postgres.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            // "postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)" -> 15
            let major = version
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.split('.').next())
                .and_then(|m| m.parse::<u32>().ok())
                .unwrap_or_else(|| panic!("cannot read the major version from {version:?}"));
            ensure_user_can_execute(&postgres);
            PgBin { dir, major, version }
        })
    }

    /// A server binary (`initdb`, `pg_ctl`, `postgres`).
    pub fn server(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A client tool: from `WALSHIP_PG_BIN` when it has it, else Debian's 15.
    pub fn client(&self, name: &str) -> PathBuf {
        let own = self.dir.join(name);
        if own.is_file() {
            return own;
        }
        let debian = Path::new(DEBIAN_PG15_BIN).join(name);
        if debian.is_file() {
            return debian;
        }
        panic!(
            "PostgreSQL client tool {name} is in neither {} nor {DEBIAN_PG15_BIN}: \
             install it with `apt-get install postgresql-15`",
            self.dir.display()
        );
    }
}

// ---------------------------------------------------------------------------
// Users and commands
// ---------------------------------------------------------------------------

fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        let out = Command::new("id").arg("-u").output().expect("run `id -u`");
        String::from_utf8_lossy(&out.stdout).trim() == "0"
    })
}

/// `(uid, gid)` of [`TEST_USER`] when running as root (creating the user when
/// missing); `None` when PostgreSQL runs as the current user.
pub fn test_user_ids() -> Option<(u32, u32)> {
    static IDS: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *IDS.get_or_init(|| {
        if !is_root() {
            return None;
        }
        let lookup = || -> Option<(u32, u32)> {
            let id = |flag: &str| -> Option<u32> {
                let out = Command::new("id").args([flag, TEST_USER]).output().ok()?;
                if !out.status.success() {
                    return None;
                }
                String::from_utf8_lossy(&out.stdout).trim().parse().ok()
            };
            Some((id("-u")?, id("-g")?))
        };
        if let Some(ids) = lookup() {
            return Some(ids);
        }
        let out = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER])
            .output()
            .unwrap_or_else(|e| panic!("cannot run useradd to create user {TEST_USER}: {e}"));
        // Another test process may have created it meanwhile: look again.
        Some(lookup().unwrap_or_else(|| {
            panic!(
                "cannot create user {TEST_USER} (PostgreSQL refuses to run as root): useradd said {}",
                String::from_utf8_lossy(&out.stderr)
            )
        }))
    })
}

/// A command that runs `program` as the user PostgreSQL runs as, with the
/// libpq environment variables of the caller removed so they cannot leak in.
fn pg_command(program: &Path) -> Command {
    let mut cmd = match test_user_ids() {
        Some((uid, gid)) => {
            let setpriv = Path::new("/usr/bin/setpriv");
            if !setpriv.is_file() {
                panic!("setpriv is missing: install util-linux (`apt-get install util-linux`)");
            }
            let mut c = Command::new(setpriv);
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            c
        }
        None => Command::new(program),
    };
    for var in [
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGDATABASE",
        "PGSSLMODE",
        "PGSERVICE",
        "PGOPTIONS",
        "PGAPPNAME",
        "PGDATA",
    ] {
        cmd.env_remove(var);
    }
    cmd.current_dir("/");
    cmd
}

/// Runs a command and returns its output, panicking when it cannot start.
fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; panics with its stderr otherwise.
fn run_ok(cmd: &mut Command) -> Output {
    let out = output(cmd);
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Gives the PostgreSQL user ownership of `path` (no-op when not root).
fn chown_to_test_user(path: &Path) {
    if let Some((uid, gid)) = test_user_ids() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {} to {TEST_USER}: {e}", path.display()));
    }
}

/// Gives the PostgreSQL user ownership of `path` and everything below it, so
/// that walship run by PostgreSQL (archive_command, restore_command) can use
/// the repositories, key files and spools the test made (no-op when not root).
pub fn give_to_test_user(path: &Path) {
    chown_to_test_user(path);
    if path.is_dir() && !path.is_symlink() {
        for entry in fs::read_dir(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())) {
            give_to_test_user(
                &entry
                    .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
                    .path(),
            );
        }
    }
}

/// Whether the PostgreSQL user can execute `path`.
fn user_can_execute(path: &Path) -> bool {
    let mut cmd = pg_command(Path::new("/usr/bin/test"));
    cmd.arg("-x").arg(path);
    output(&mut cmd).status.success()
}

/// Makes sure the PostgreSQL user can execute `path`: when it cannot and we
/// are root, add `o+x` to every ancestor directory and `o+rx` to the file.
fn ensure_user_can_execute(path: &Path) {
    if test_user_ids().is_none() || user_can_execute(path) {
        return;
    }
    let add_bits = |p: &Path, bits: u32| {
        if let Ok(meta) = fs::metadata(p) {
            let mode = meta.permissions().mode();
            if mode & bits != bits {
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(mode | bits));
            }
        }
    };
    for dir in path.ancestors().skip(1) {
        add_bits(dir, 0o001);
    }
    add_bits(path, 0o005);
    if !user_can_execute(path) {
        panic!(
            "user {TEST_USER} cannot execute {}: make it and its directories readable and \
             searchable (chmod o+rx on the file, o+x on each directory)",
            path.display()
        );
    }
}

// ---------------------------------------------------------------------------
// walship itself
// ---------------------------------------------------------------------------

/// The `walship` binary built for these tests; the PostgreSQL user can run it
/// (it serves as `archive_command`).
pub fn walship_bin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_walship"));
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| ensure_user_can_execute(&bin));
    bin
}

/// Runs `walship args...` as the current user with `envs` set. Inherited
/// `WALSHIP_*`, `PG*` and `DATABASE_URL` variables are removed first so that
/// the developer's shell cannot change the outcome.
pub fn run_walship(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(walship_bin());
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("WALSHIP_") || k.starts_with("PG") || k == "DATABASE_URL" {
            cmd.env_remove(&key);
        }
    }
    cmd.args(args).envs(envs.iter().copied());
    output(&mut cmd)
}

// ---------------------------------------------------------------------------
// Clusters
// ---------------------------------------------------------------------------

/// Authentication method of the TCP `host` lines (normal and replication) in
/// `pg_hba.conf`. `local` lines are always `trust` so the harness's psql works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// No password.
    Trust,
    /// Cleartext password.
    Password,
    /// MD5 challenge (the role's password is stored as MD5).
    Md5,
    /// SCRAM-SHA-256 (the role's password is stored as SCRAM).
    ScramSha256,
}

impl AuthMethod {
    /// The `pg_hba.conf` keyword.
    pub fn hba(self) -> &'static str {
        match self {
            AuthMethod::Trust => "trust",
            AuthMethod::Password => "password",
            AuthMethod::Md5 => "md5",
            AuthMethod::ScramSha256 => "scram-sha-256",
        }
    }
}

/// Picks a TCP port on 127.0.0.1 that is free now and not yet handed out by
/// this process.
fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        if given.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// Creates a fresh temp dir under /tmp owned by the PostgreSQL user.
fn new_root_dir() -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix("walship-pg-")
        .tempdir_in("/tmp")
        .expect("create a temp dir under /tmp")
        .keep();
    chown_to_test_user(&dir);
    dir
}

/// Writes `content` to `path` (owned by the PostgreSQL user, mode `mode`).
fn write_file(path: &Path, content: &[u8], mode: u32) {
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    chown_to_test_user(path);
}

/// Appends lines to a file (creating it), keeping it owned by the PostgreSQL user.
fn append_lines(path: &Path, lines: &[String]) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    for line in lines {
        writeln!(f, "{line}").unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    drop(f);
    chown_to_test_user(path);
}

/// Quotes a value for postgresql.conf or conninfo (single quotes, `\` and `'` escaped).
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Options of a test cluster; [`ClusterBuilder::start`] makes it.
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    auth: AuthMethod,
    password: Option<String>,
    tls: bool,
    wal_segsize_mb: Option<u32>,
    checksums: Option<bool>,
    conf: Vec<String>,
    max_wal_senders: u32,
    listen: Vec<String>,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            auth: AuthMethod::Trust,
            password: None,
            tls: false,
            wal_segsize_mb: None,
            checksums: None,
            conf: Vec::new(),
            max_wal_senders: 10,
            listen: vec!["127.0.0.1".to_string()],
        }
    }
}

impl ClusterBuilder {
    /// Defaults: trust, no TLS, 16 MB segments, initdb's default checksums.
    pub fn new() -> Self {
        Self::default()
    }
    /// Authentication method of the TCP lines (normal and replication).
    pub fn auth(mut self, auth: AuthMethod) -> Self {
        self.auth = auth;
        self
    }
    /// The superuser's password ([`DEFAULT_PASSWORD`] when an authenticating
    /// method is chosen and none is given).
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_string());
        self
    }
    /// TLS on: a fresh CA and a server certificate for `localhost` and `127.0.0.1`.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }
    /// WAL segment size in MB (`initdb --wal-segsize`).
    pub fn wal_segsize_mb(mut self, mb: u32) -> Self {
        self.wal_segsize_mb = Some(mb);
        self
    }
    /// Data checksums on (`initdb -k`) or off (`--no-data-checksums` on 18+).
    pub fn data_checksums(mut self, on: bool) -> Self {
        self.checksums = Some(on);
        self
    }
    /// An extra postgresql.conf line (for example `archive_mode = on`).
    pub fn conf(mut self, line: impl Into<String>) -> Self {
        self.conf.push(line.into());
        self
    }
    /// `max_wal_senders` (default 10).
    pub fn max_wal_senders(mut self, n: u32) -> Self {
        self.max_wal_senders = n;
        self
    }

    /// Also listen on another loopback address (for example `127.0.0.2`, to
    /// reach the server under an address its certificate does not name).
    pub fn also_listen_on(mut self, addr: &str) -> Self {
        assert!(
            addr.starts_with("127."),
            "test servers listen on loopback only, not {addr}"
        );
        self.listen.push(addr.to_string());
        self
    }

    /// initdb and configure, without starting.
    pub fn init(self) -> Cluster {
        let bin = PgBin::get();
        let root = new_root_dir();
        let password = match (self.auth, self.password) {
            (_, Some(p)) => Some(p),
            (AuthMethod::Trust, None) => None,
            (_, None) => Some(DEFAULT_PASSWORD.to_string()),
        };
        let mut cluster = Cluster {
            data: root.join("data"),
            sock: root.join("sock"),
            root,
            port: free_port(),
            bin,
            password,
            ca_cert: None,
            running: false,
            password_pending: None,
        };
        fs::create_dir(&cluster.sock).expect("create the socket dir");
        chown_to_test_user(&cluster.sock);

        let mut initdb = pg_command(&bin.server("initdb"));
        initdb.arg("-D").arg(&cluster.data).args([
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        if let Some(mb) = self.wal_segsize_mb {
            initdb.arg(format!("--wal-segsize={mb}"));
        }
        match self.checksums {
            Some(true) => {
                initdb.arg("--data-checksums");
            }
            Some(false) if bin.major >= 18 => {
                initdb.arg("--no-data-checksums");
            }
            _ => {}
        }
        run_ok(&mut initdb);

        let method = self.auth.hba();
        let hba = format!(
            "# walship test harness\n\
             local all all trust\n\
             local replication all trust\n\
             host all all 127.0.0.0/8 {method}\n\
             host replication all 127.0.0.0/8 {method}\n"
        );
        write_file(&cluster.data.join("pg_hba.conf"), hba.as_bytes(), 0o600);

        let mut conf = vec![
            "# walship test harness".to_string(),
            format!("listen_addresses = '{}'", self.listen.join(",")),
            format!("port = {}", cluster.port),
            format!(
                "unix_socket_directories = {}",
                quote(&cluster.sock.to_string_lossy())
            ),
            "wal_level = replica".to_string(),
            format!("max_wal_senders = {}", self.max_wal_senders),
            "max_replication_slots = 10".to_string(),
        ];
        // The stored form decides which challenge the server can use: md5
        // authentication needs an MD5-stored password to really do MD5.
        let encryption = if self.auth == AuthMethod::Md5 {
            "md5"
        } else {
            "scram-sha-256"
        };
        conf.push(format!("password_encryption = '{encryption}'"));
        if self.tls {
            let ca = write_tls_files(&cluster.root, &cluster.data);
            cluster.ca_cert = Some(ca);
            // Relative to the data directory, so a copied standby keeps working.
            conf.push("ssl = on".to_string());
            conf.push("ssl_cert_file = 'server.crt'".to_string());
            conf.push("ssl_key_file = 'server.key'".to_string());
        }
        conf.extend(self.conf);
        append_lines(&cluster.data.join("postgresql.conf"), &conf);
        cluster.password_pending = cluster.password.clone().map(|p| (p, encryption));
        cluster
    }

    /// initdb, configure and start.
    pub fn start(self) -> Cluster {
        let mut c = self.init();
        c.start();
        c
    }
}

/// A fresh test PKI: a CA and a server certificate it signed, in PEM.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate (for `sslrootcert`).
    pub ca_cert_pem: String,
    /// The server certificate: CN and SAN `localhost`, SAN `127.0.0.1`.
    pub server_cert_pem: String,
    /// The server's private key.
    pub server_key_pem: String,
}

impl TestPki {
    /// Generates a new CA and server certificate (ECDSA P-256).
    pub fn generate() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "walship test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA");

        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let mut params = CertificateParams::new(names).expect("server cert params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("sign the server cert");
        TestPki {
            ca_cert_pem: ca_cert.pem(),
            server_cert_pem: cert.pem(),
            server_key_pem: key.serialize_pem(),
        }
    }
}

/// Generates a [`TestPki`]; writes `ca.crt` into `root` and
/// `server.{crt,key}` into `data`. Returns the CA path.
fn write_tls_files(root: &Path, data: &Path) -> PathBuf {
    let pki = TestPki::generate();
    let ca_path = root.join("ca.crt");
    write_file(&ca_path, pki.ca_cert_pem.as_bytes(), 0o644);
    write_file(
        &data.join("server.crt"),
        pki.server_cert_pem.as_bytes(),
        0o644,
    );
    write_file(
        &data.join("server.key"),
        pki.server_key_pem.as_bytes(),
        0o600,
    );
    ca_path
}

/// A throwaway PostgreSQL cluster. Dropping it stops the server
/// (`pg_ctl stop -m immediate`) and removes its directory, unless
/// `WALSHIP_KEEP_TEST_DIRS=1`.
#[derive(Debug)]
pub struct Cluster {
    root: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    port: u16,
    bin: &'static PgBin,
    password: Option<String>,
    ca_cert: Option<PathBuf>,
    running: bool,
    /// Password (and its storage form) to set at the first start.
    password_pending: Option<(String, &'static str)>,
}

impl Cluster {
    /// A started cluster with the defaults of [`ClusterBuilder`].
    pub fn new() -> Cluster {
        ClusterBuilder::new().start()
    }

    /// Options for a new cluster.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::new()
    }

    /// The binaries in use.
    pub fn bin(&self) -> &'static PgBin {
        self.bin
    }
    /// The temporary directory holding everything of this cluster.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }
    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }
    /// `pg_wal` inside the data directory.
    pub fn pg_wal_dir(&self) -> PathBuf {
        self.data.join("pg_wal")
    }
    /// The Unix-socket directory.
    pub fn socket_dir(&self) -> &Path {
        &self.sock
    }
    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The server log file.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("log")
    }
    /// The server log so far (empty when there is none).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }
    /// The superuser's password, when one was set.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
    /// The CA certificate that signed the server certificate (TLS clusters).
    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }
    /// Whether the server is running (as far as the harness knows).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// `key=value` conninfo over TCP to 127.0.0.1 as the superuser, with the
    /// password when one is set; no `sslmode` (tests add what they test).
    pub fn conninfo(&self) -> String {
        self.conninfo_host("127.0.0.1")
    }

    /// As [`Cluster::conninfo`] with another host name (for example `localhost`).
    pub fn conninfo_host(&self, host: &str) -> String {
        let mut s = format!(
            "host={host} port={} user={SUPERUSER} dbname=postgres",
            self.port
        );
        if let Some(p) = &self.password {
            s.push_str(&format!(" password={}", quote(p)));
        }
        s
    }

    /// `key=value` conninfo over the Unix socket (trusted) as the superuser.
    pub fn socket_conninfo(&self) -> String {
        format!(
            "host={} port={} user={SUPERUSER} dbname=postgres",
            quote(&self.sock.to_string_lossy()),
            self.port
        )
    }

    fn pg_ctl(&self) -> Command {
        let mut cmd = pg_command(&self.bin.server("pg_ctl"));
        cmd.arg("-D").arg(&self.data);
        cmd
    }

    /// Starts the server and waits until it accepts connections; panics with
    /// the server log when it does not start.
    pub fn start(&mut self) {
        assert!(
            !self.running,
            "cluster in {} is already running",
            self.root.display()
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            let log_before = self.log().len();
            let out = output(
                self.pg_ctl()
                    .arg("-l")
                    .arg(self.log_path())
                    .args(["-w", "-t", "120", "-s", "start"]),
            );
            if out.status.success() {
                break;
            }
            let log = self.log();
            let new_log = log.get(log_before..).unwrap_or(&log);
            // Another process took our port between choosing and binding it.
            if attempt < 5 && new_log.contains("could not bind") {
                self.port = free_port();
                append_lines(
                    &self.data.join("postgresql.conf"),
                    &[format!("port = {}", self.port)],
                );
                continue;
            }
            eprintln!(
                "---- server log {} ----\n{log}\n---- end of log ----",
                self.log_path().display()
            );
            panic!(
                "pg_ctl start failed for {} ({}): {}{}\nserver log:\n{new_log}",
                self.data.display(),
                self.bin.version,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.running = true;
        if let Some((password, encryption)) = self.password_pending.take() {
            self.psql(&format!(
                "SET password_encryption = '{encryption}'; ALTER ROLE {SUPERUSER} PASSWORD '{}'",
                password.replace('\'', "''")
            ));
        }
    }

    /// Stops the server (`-m fast`, waiting).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        run_ok(
            self.pg_ctl()
                .args(["-m", "fast", "-w", "-t", "120", "-s", "stop"]),
        );
        self.running = false;
    }

    /// Stops and starts the server.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// Promotes a standby and waits until it accepts writes.
    pub fn promote(&mut self) {
        run_ok(self.pg_ctl().args(["-w", "-t", "120", "-s", "promote"]));
        // pg_ctl -w returns once the server says so; double-check with SQL.
        for _ in 0..600 {
            if self.psql("SELECT pg_is_in_recovery()") == "f" {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "standby in {} did not leave recovery after promote",
            self.root.display()
        );
    }

    /// Runs SQL with psql over the socket as the superuser; stdout without
    /// the trailing newline, or psql's stderr on failure.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let mut cmd = pg_command(&self.bin.client("psql"));
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.sock)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
                "-c",
                sql,
            ]);
        let out = output(&mut cmd);
        if out.status.success() {
            let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
            while s.ends_with('\n') {
                s.pop();
            }
            Ok(s)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// As [`Cluster::try_psql`], panicking with psql's stderr on failure.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("psql on {} failed for {sql:?}: {e}", self.root.display()))
    }

    /// `pg_control_system()`'s system identifier.
    pub fn system_id(&self) -> u64 {
        let s = self.psql("SELECT system_identifier FROM pg_control_system()");
        s.parse()
            .unwrap_or_else(|e| panic!("system_identifier {s:?}: {e}"))
    }

    /// `server_version_num` (for example 150014).
    pub fn server_version_num(&self) -> u32 {
        let s = self.psql("SHOW server_version_num");
        s.parse()
            .unwrap_or_else(|e| panic!("server_version_num {s:?}: {e}"))
    }

    /// The WAL segment size in bytes.
    pub fn wal_segment_size(&self) -> u64 {
        let s = self.psql("SELECT pg_size_bytes(current_setting('wal_segment_size'))");
        s.parse()
            .unwrap_or_else(|e| panic!("wal_segment_size {s:?}: {e}"))
    }

    /// The current timeline (from `pg_control_checkpoint()`, so after a
    /// promotion it is the new one once the end-of-recovery checkpoint ran).
    pub fn timeline(&self) -> u32 {
        let s = self.psql("SELECT timeline_id FROM pg_control_checkpoint()");
        s.parse()
            .unwrap_or_else(|e| panic!("timeline_id {s:?}: {e}"))
    }

    /// A streaming standby of this cluster on its own port and socket dir,
    /// started. Made by a cold copy (this cluster is stopped, its data
    /// directory copied, and started again) because pg_basebackup 15 refuses
    /// newer servers.
    pub fn create_standby(&mut self) -> Cluster {
        let was_running = self.running;
        self.stop();
        let root = new_root_dir();
        let mut standby = Cluster {
            data: root.join("data"),
            sock: root.join("sock"),
            root,
            port: free_port(),
            bin: self.bin,
            password: self.password.clone(),
            ca_cert: None,
            running: false,
            password_pending: None,
        };
        fs::create_dir(&standby.sock).expect("create the socket dir");
        chown_to_test_user(&standby.sock);
        // cp -a keeps owners and modes (the server insists on 0700/0750).
        run_ok(
            Command::new("cp")
                .arg("-a")
                .arg(&self.data)
                .arg(&standby.data),
        );
        if let Some(ca) = &self.ca_cert {
            let copy = standby.root.join("ca.crt");
            fs::copy(ca, &copy).expect("copy ca.crt");
            chown_to_test_user(&copy);
            standby.ca_cert = Some(copy);
        }
        let _ = fs::remove_file(standby.data.join("postmaster.pid"));
        if was_running {
            self.start();
        }
        let primary_conninfo = format!(
            "host={} port={} user={SUPERUSER} application_name=walship_standby",
            self.sock.display(),
            self.port
        );
        append_lines(
            &standby.data.join("postgresql.conf"),
            &[
                "# walship test harness: standby".to_string(),
                format!("port = {}", standby.port),
                format!(
                    "unix_socket_directories = {}",
                    quote(&standby.sock.to_string_lossy())
                ),
                format!("primary_conninfo = {}", quote(&primary_conninfo)),
            ],
        );
        write_file(&standby.data.join("standby.signal"), b"", 0o600);
        standby.start();
        standby
    }

    fn client_args(&self, tool: &str) -> Command {
        let mut cmd = pg_command(&self.bin.client(tool));
        cmd.arg("-h")
            .arg(&self.sock)
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER]);
        cmd
    }

    /// `pgbench -i -s scale` into the `postgres` database.
    pub fn pgbench_init(&self, scale: u32) {
        run_ok(self.client_args("pgbench").args([
            "-i",
            "-q",
            "-s",
            &scale.to_string(),
            "postgres",
        ]));
    }

    /// `pgbench ARGS... postgres`; returns its stdout.
    pub fn pgbench(&self, args: &[&str]) -> String {
        let out = run_ok(self.client_args("pgbench").args(args).arg("postgres"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running || self.data.join("postmaster.pid").exists() {
            let _ = self
                .pg_ctl()
                .args(["-m", "immediate", "-w", "-t", "60", "-s", "stop"])
                .output();
            self.running = false;
        }
        if std::env::var("WALSHIP_KEEP_TEST_DIRS").as_deref() == Ok("1") {
            eprintln!("WALSHIP_KEEP_TEST_DIRS=1: keeping {}", self.root.display());
        } else if let Err(e) = fs::remove_dir_all(&self.root) {
            eprintln!("could not remove {}: {e}", self.root.display());
        }
    }
}
