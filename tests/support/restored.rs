//! A PostgreSQL server started on a data directory that `walship restore`
//! rebuilt: the files are handed to the PostgreSQL test user, the server gets
//! its own port and socket directory (appended to `postgresql.conf`, as an
//! operator would on another host), and runs recovery with the
//! `restore_command` walship wrote.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::pg::{PgBin, SUPERUSER};

/// A server on a restored data directory. Dropping it stops the server
/// (immediate) and removes its socket directory and log; the data directory
/// belongs to the test.
#[derive(Debug)]
pub struct RestoredCluster {
    data: PathBuf,
    root: PathBuf,
    port: u16,
    envs: Vec<(String, String)>,
    running: bool,
}

/// A command running `program` as the PostgreSQL test user, without the
/// caller's `PG*` and `WALSHIP_*` variables.
fn as_pg_user(program: &Path) -> Command {
    let mut cmd = match super::pg::test_user_ids() {
        Some((uid, gid)) => {
            let mut c = Command::new("/usr/bin/setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            c
        }
        None => Command::new(program),
    };
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("PG") || k.starts_with("WALSHIP_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir("/");
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RestoredCluster {
    /// Prepares the restored directory `data` to run here (not started).
    /// `envs` are set in the server's environment (restore_command inherits
    /// them: S3 credentials, WALSHIP_PASSPHRASE ...).
    pub fn new(data: &Path, envs: &[(&str, &str)]) -> RestoredCluster {
        let root = tempfile::Builder::new()
            .prefix("walship-restored-")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        fs::create_dir(root.join("sock")).unwrap();
        super::pg::give_to_test_user(&root);
        super::pg::give_to_test_user(data);
        let port = free_port();
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        use std::io::Write;
        writeln!(
            conf,
            "# restored test server\nport = {port}\nunix_socket_directories = '{}'\nlisten_addresses = ''",
            root.join("sock").display()
        )
        .unwrap();
        RestoredCluster {
            data: data.to_path_buf(),
            root,
            port,
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            running: false,
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("log")).unwrap_or_default()
    }

    /// Starts the server (not waiting: recovery may pause or shut down).
    pub fn start(&mut self) {
        let bin = PgBin::get();
        let out = as_pg_user(&bin.server("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.root.join("log"))
            .args(["-W", "-s", "start"])
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start on {}: {}{}\n{}",
            self.data.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        self.running = true;
    }

    /// Runs SQL; `Err` with psql's stderr.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out: Output = as_pg_user(&PgBin::get().client("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.root.join("sock"))
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs SQL, panicking with the server log on failure.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("psql {sql:?}: {e}\nserver log:\n{}", self.log()))
    }

    /// Waits until `sql` returns `want` (the server may still be starting).
    pub fn wait_for(&self, sql: &str, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.try_psql(sql) {
                Ok(v) if v == want => return,
                Ok(v) => last = v,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{sql} did not return {want} within {timeout:?} (last: {last})\nserver log:\n{}",
            self.log()
        );
    }

    /// Waits until recovery paused at its target (`recovery_target_action = pause`).
    pub fn wait_paused(&self) {
        self.wait_for(
            "SELECT pg_is_wal_replay_paused()",
            "t",
            Duration::from_secs(180),
        );
    }

    /// Waits until the server left recovery (promoted).
    pub fn wait_promoted(&self) {
        self.wait_for("SELECT pg_is_in_recovery()", "f", Duration::from_secs(180));
    }

    /// Stops the server (fast).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let _ = as_pg_user(&PgBin::get().server("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "120", "-s", "stop"])
            .output();
        self.running = false;
    }
}

impl Drop for RestoredCluster {
    fn drop(&mut self) {
        if self.running || self.data.join("postmaster.pid").exists() {
            let _ = as_pg_user(&PgBin::get().server("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "-t", "60", "-s", "stop"])
                .output();
        }
        if std::env::var("WALSHIP_KEEP_TEST_DIRS").as_deref() != Ok("1") {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}
