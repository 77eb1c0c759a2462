//! A real S3 server for tests: `s3s-fs` (SigV4, multipart, conditional
//! writes, checksums) on a free port of 127.0.0.1, storing into a temp dir.
//!
//! The binary comes from `S3S_FS_BIN`, else `PATH`, else `~/.cargo/bin`; when
//! it is missing the harness panics with how to install it (never skips).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use walship::config::{RepoLocation, S3Settings, Secret};

/// How long the server gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `s3s-fs` with one bucket. Killed, and its files removed, on drop.
pub struct S3Server {
    child: Option<Child>,
    bin: PathBuf,
    port: u16,
    /// Holds `data/` (the server's root: one directory per bucket) and the log.
    dir: tempfile::TempDir,
    bucket: String,
    access_key: String,
    secret_key: String,
}

/// Finds the s3s-fs binary or panics saying how to get it.
pub fn s3s_fs_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("S3S_FS_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "S3S_FS_BIN={} does not exist", p.display());
        return p;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("s3s-fs"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let in_cargo = cargo_home.map(|c| c.join("bin/s3s-fs"));
    on_path
        .into_iter()
        .chain(in_cargo)
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("s3s-fs not found: run scripts/ensure-s3s.sh"))
}

fn random_token(len: usize, alphabet: &[u8]) -> String {
    (0..len)
        .map(|_| alphabet[fastrand::usize(..alphabet.len())] as char)
        .collect()
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port on 127.0.0.1");
    l.local_addr().expect("local address").port()
}

impl S3Server {
    /// Starts a server on a free port with fresh credentials and creates the
    /// bucket `walship-test`.
    pub fn start() -> S3Server {
        let bin = s3s_fs_bin();
        let dir = tempfile::Builder::new()
            .prefix("walship-s3-")
            .tempdir()
            .expect("create the S3 server's temp dir");
        let bucket = "walship-test".to_string();
        std::fs::create_dir_all(dir.path().join("data").join(&bucket))
            .expect("create the bucket directory");
        let mut server = S3Server {
            child: None,
            bin,
            port: 0,
            dir,
            bucket,
            access_key: format!(
                "AKWS{}",
                random_token(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
            ),
            secret_key: random_token(
                40,
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            ),
        };
        // Another process may grab the free port between probing and binding: retry.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("could not start s3s-fs: {last}");
    }

    /// Starts the process on `self.port` and waits until it accepts connections.
    fn spawn(&mut self) -> Result<(), String> {
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("open {}: {e}", log_path.display()))?;
        let log_err = log.try_clone().map_err(|e| format!("dup log: {e}"))?;
        let mut child = Command::new(&self.bin)
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--access-key")
            .arg(&self.access_key)
            .arg("--secret-key")
            .arg(&self.secret_key)
            .arg(self.root())
            .env("RUST_LOG", "s3s_fs=warn,s3s=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "s3s-fs exited with {status} on port {}; log:\n{}",
                    self.port,
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "s3s-fs did not listen on {addr} within {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (same port and data kept for [`S3Server::start_again`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the S3 server is already running");
        if let Err(e) = self.spawn() {
            panic!("could not restart s3s-fs: {e}");
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bucket the server was started with.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The access key id the server accepts.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key the server accepts.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The server's data directory (one sub-directory per bucket).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("s3s-fs.log")
    }

    /// Creates another (empty) bucket.
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root().join(name)).expect("create a bucket directory");
    }

    /// Settings that reach this server: endpoint, path style, static credentials.
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".to_string()),
            path_style: true,
            access_key_id: Some(self.access_key.clone()),
            secret_access_key: Some(Secret::new(self.secret_key.clone())),
            ..S3Settings::default()
        }
    }

    /// A repository location in this server's bucket under `prefix`.
    pub fn location(&self, prefix: &str) -> RepoLocation {
        RepoLocation::S3 {
            bucket: self.bucket.clone(),
            prefix: prefix.to_string(),
        }
    }

    /// Environment for a `walship` child process reaching this server.
    pub fn env(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            (
                "WALSHIP_REPO".into(),
                format!("s3://{}/{}", self.bucket, prefix),
            ),
            ("WALSHIP_S3_ENDPOINT".into(), self.endpoint()),
            ("WALSHIP_S3_REGION".into(), "us-east-1".into()),
            ("WALSHIP_S3_PATH_STYLE".into(), "true".into()),
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
        ]
    }

    /// Where the server keeps object `key` of the default bucket on disk.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root().join(&self.bucket).join(Path::new(key))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
