//! `walship stream` end to end against real PostgreSQL (no archive_command
//! at all): pgbench while streaming, then point-in-time recovery to the
//! latest point by PostgreSQL itself with `restore_command = walship
//! archive-get --allow-partial`, compared row for row with the source; crash
//! safety under kill -9; server restarts and timeline switches; and the
//! faults an operator meets (slot dropped or busy, repository down, spool
//! disk full).
//!
//! The streamer runs as the PostgreSQL test user (as the systemd unit runs
//! it as its own user), so that the restore_command, which PostgreSQL runs
//! as that user, can read the repository's 0600 files.

mod support;

use support::pg::give_to_test_user;
use support::scratch::Scratch;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use support::pg::ClusterBuilder;
use support::s3::S3Server;
use support::{run_walship, walship_bin, Cluster};
use walship::pg::wal::Lsn;

const TEST_USER: &str = support::pg::TEST_USER;

fn id_of(flag: &str) -> String {
    let out = Command::new("id")
        .arg(flag)
        .arg(TEST_USER)
        .output()
        .unwrap();
    assert!(out.status.success(), "id {flag} {TEST_USER}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Where the repository is, as environment for walship.
#[derive(Clone)]
struct RepoEnv(Vec<(String, String)>);

impl RepoEnv {
    fn dir(dir: &Path) -> RepoEnv {
        RepoEnv(vec![(
            "WALSHIP_REPO".into(),
            dir.to_string_lossy().into_owned(),
        )])
    }
    fn pairs(&self) -> Vec<(&str, &str)> {
        self.0
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
    /// `K=V K=V` for a restore_command line.
    fn inline(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn walship(args: &[&str], repo: &RepoEnv) -> Output {
    run_walship(args, &repo.pairs())
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A running `walship stream` (as the test user), its log in a file.
struct Streamer {
    child: Option<Child>,
    log: PathBuf,
}

impl Streamer {
    fn start(conninfo: &str, repo: &RepoEnv, spool: &Path, extra: &[&str], log: &Path) -> Streamer {
        let mut cmd = Command::new("/usr/bin/setpriv");
        cmd.arg(format!("--reuid={}", id_of("-u")))
            .arg(format!("--regid={}", id_of("-g")))
            .arg("--clear-groups")
            .arg("--")
            .arg(walship_bin())
            .arg("stream")
            .arg("--spool")
            .arg(spool)
            .args(extra);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("WALSHIP_") || k.starts_with("PG") || k == "DATABASE_URL" {
                cmd.env_remove(&key);
            }
        }
        cmd.env("WALSHIP_PG", conninfo)
            .env("WALSHIP_LOG", "debug")
            .envs(repo.pairs());
        let logf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        cmd.stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        let child = cmd.spawn().expect("start walship stream");
        Streamer {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit.
    fn stop(&mut self) -> ExitStatus {
        self.signal("-TERM")
    }

    /// Sends `sig` (`-TERM`, `-INT`), then waits for the exit.
    fn signal(&mut self, sig: &str) -> ExitStatus {
        self.send(sig);
        let mut child = self.child.take().expect("streamer running");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("walship stream did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `sig` (`-TERM`, `-INT`) without waiting.
    fn send(&self, sig: &str) {
        let child = self.child.as_ref().expect("streamer running");
        let ok = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// kill -9.
    fn kill9(&mut self) {
        let mut child = self.child.take().expect("streamer running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Waits for the process to exit on its own; None when it is still running.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A cluster for streaming tests: 1 MiB segments, nothing kept but what
/// the slot holds, no timed checkpoints.
fn source_builder() -> ClusterBuilder {
    Cluster::builder()
        .wal_segsize_mb(1)
        .conf("wal_keep_size = 0")
        .conf("checkpoint_timeout = '1h'")
        .conf("max_slot_wal_keep_size = -1")
}

fn source_cluster(extra: &[&str]) -> Cluster {
    let mut b = source_builder();
    for line in extra {
        b = b.conf(*line);
    }
    b.start()
}

/// A cold copy of the data directory (the cluster is stopped, copied, and
/// started again): the base for PITR by PostgreSQL itself.
fn base_copy(cluster: &mut Cluster) -> Cluster {
    cluster.stop();
    let mut copy = cluster.create_standby();
    copy.stop();
    cluster.start();
    copy
}

/// Puts `copy` into archive recovery from the repository to the latest
/// point and waits until it is promoted.
fn recover_to_latest(copy: &mut Cluster, repo: &RepoEnv) {
    let data = copy.data_dir().to_path_buf();
    let _ = fs::remove_file(data.join("standby.signal"));
    fs::write(data.join("recovery.signal"), b"").unwrap();
    give_to_test_user(&data.join("recovery.signal"));
    let restore = format!(
        "{} {} archive-get --allow-partial %f %p",
        repo.inline(),
        walship_bin().display()
    );
    let mut conf = fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .unwrap();
    use std::io::Write;
    writeln!(conf, "# walship stream test: PITR to the latest point").unwrap();
    writeln!(conf, "primary_conninfo = ''").unwrap();
    writeln!(conf, "restore_command = '{}'", restore.replace('\'', "''")).unwrap();
    writeln!(conf, "recovery_target_timeline = 'latest'").unwrap();
    writeln!(conf, "archive_mode = off").unwrap();
    drop(conf);
    copy.start();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if copy.try_psql("SELECT pg_is_in_recovery()").as_deref() == Ok("f") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "recovery did not finish:\n{}",
            copy.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the pgbench tables hold: accounts count and balance sum, history rows.
fn pgbench_state(c: &Cluster) -> String {
    c.psql(
        "SELECT (SELECT count(*) FROM pgbench_accounts) || ',' || \
         (SELECT sum(abalance) FROM pgbench_accounts) || ',' || \
         (SELECT count(*) FROM pgbench_history)",
    )
}

fn lsn(text: &str) -> u64 {
    let lsn: Lsn = text
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{text:?} is not an LSN: {e}"));
    lsn.0
}

fn seg_name(tli: u32, lsn: u64) -> String {
    let segno = lsn >> 20; // 1 MiB segments
    format!("{:08X}{:08X}{:08X}", tli, segno >> 12, segno & 0xFFF)
}

/// How far the repository reaches on `tli`, from the stored `.partial`
/// (its raw prefix) or the full segment of `lsn`.
fn stored_end_covers(repo: &RepoEnv, scratch: &Scratch, tli: u32, at: u64) -> bool {
    // A position on a segment boundary is the end of the segment before.
    let probe = at.saturating_sub(1);
    let seg = seg_name(tli, probe);
    let dest = scratch.path("probe");
    let full = walship(&["archive-get", &seg, dest.to_str().unwrap()], repo);
    if full.status.code() == Some(0) {
        return true;
    }
    let partial = format!("{seg}.partial");
    let out = walship(&["archive-get", &partial, dest.to_str().unwrap()], repo);
    if out.status.code() != Some(0) {
        return false;
    }
    let len = fs::metadata(&dest).unwrap().len();
    let start = (probe >> 20) << 20;
    start + len >= at
}

fn info_json(repo: &RepoEnv) -> serde_json::Value {
    let out = walship(&["info", "--json"], repo);
    assert!(out.status.success(), "info: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_verify_ok(repo: &RepoEnv) {
    let out = walship(&["verify"], repo);
    assert!(
        out.status.success(),
        "verify found problems: {}",
        text(&out)
    );
}

fn wait_until(
    what: &str,
    timeout: Duration,
    context: impl Fn() -> String,
    mut f: impl FnMut() -> bool,
) -> Duration {
    let t0 = Instant::now();
    loop {
        if f() {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out waiting for {what}:\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn slot_flush(c: &Cluster) -> Option<u64> {
    let s = c.psql("SELECT coalesce(restart_lsn::text, '') FROM pg_replication_slots WHERE slot_name = 'walship'");
    if s.is_empty() {
        None
    } else {
        Some(lsn(&s))
    }
}

/// archive-get and the newest `.partial`: served zero-padded only with
/// --allow-partial and only for the last segment of the timeline.
fn assert_partial_rules(repo: &RepoEnv, scratch: &Scratch, info: &serde_json::Value) {
    let partial = info["timelines"][0]["partial"]
        .as_str()
        .unwrap_or_else(|| panic!("no partial stored: {info:#}"))
        .to_string();
    let seg = partial.trim_end_matches(".partial");
    let dest = scratch.path("partial-probe");
    let d = dest.to_str().unwrap();
    let raw = walship(&["archive-get", &partial, d], repo);
    assert_eq!(raw.status.code(), Some(0), "{}", text(&raw));
    let prefix = fs::read(&dest).unwrap();
    assert!(
        prefix.len() < 1 << 20,
        "a partial stores the written prefix"
    );
    let plain = walship(&["archive-get", seg, d], repo);
    assert_eq!(
        plain.status.code(),
        Some(1),
        "without --allow-partial: {}",
        text(&plain)
    );
    let padded = walship(&["archive-get", "--allow-partial", seg, d], repo);
    assert_eq!(padded.status.code(), Some(0), "{}", text(&padded));
    let data = fs::read(&dest).unwrap();
    assert_eq!(data.len(), 1 << 20);
    assert_eq!(&data[..prefix.len()], &prefix[..]);
    assert!(data[prefix.len()..].iter().all(|&b| b == 0));
    // An earlier segment that is missing is never made up from anything.
    let first = info["timelines"][0]["first_segment"].as_str().unwrap();
    let before = format!(
        "{}{:08X}",
        &first[..16],
        u32::from_str_radix(&first[16..], 16).unwrap() - 1
    );
    let missing = walship(&["archive-get", "--allow-partial", &before, d], repo);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
}

/// pgbench while streaming, a clean stop, then PITR to the latest point
/// recovers every committed transaction; an idle commit reaches the
/// repository within --partial-interval plus one upload; info shows the
/// streaming position.
#[test]
fn pgbench_stream_then_pitr_to_latest() {
    let scratch = Scratch::new("walship-stream-");
    let repo_dir = scratch.user_dir("repo");
    let spool = scratch.user_dir("spool");
    let repo = RepoEnv::dir(&repo_dir);
    let mut cluster = source_cluster(&[]);
    cluster.pgbench_init(1);
    // The slot exists before the copy, so it holds all the WAL the copy needs.
    cluster.psql("SELECT pg_create_physical_replication_slot('walship', true)");
    let mut copy = base_copy(&mut cluster);

    let mut streamer = Streamer::start(
        &cluster.socket_conninfo(),
        &repo,
        &spool,
        &["--partial-interval", "2"],
        &scratch.path("stream.log"),
    );
    cluster.pgbench(&["-T", "4", "-c", "2", "-n"]);
    // A server restart while streaming: the streamer reconnects and goes on.
    cluster.restart();
    cluster.pgbench(&["-T", "3", "-c", "2", "-n"]);

    // An idle commit: within 2 s plus one upload in the repository.
    std::thread::sleep(Duration::from_secs(3));
    cluster.psql("CREATE TABLE marker(x int); INSERT INTO marker VALUES (42)");
    let commit = lsn(&cluster.psql("SELECT pg_current_wal_flush_lsn()"));
    let tli = cluster.timeline();
    let took = wait_until(
        "the idle commit in the repository",
        Duration::from_secs(20),
        || streamer.log(),
        || stored_end_covers(&repo, &scratch, tli, commit),
    );
    eprintln!("idle commit stored after {took:?} (partial interval 2 s)");

    let info = info_json(&repo);
    let st = &info["streaming"];
    assert_eq!(st["state"], "running", "{info:#}");
    assert!(
        st["stored_lsn"].is_string() && st["last_stored_at"].is_string(),
        "{info:#}"
    );

    let status = streamer.stop();
    assert!(status.success(), "exit {status:?}:\n{}", streamer.log());
    // The load, the restart and the idle commit went through the gathering
    // reader (src/pg/gather.rs), which this test is the end-to-end check of.
    assert!(
        streamer.log().contains("gathered=true"),
        "{}",
        streamer.log()
    );
    let want = pgbench_state(&cluster);
    let info = info_json(&repo);
    assert_eq!(info["streaming"]["state"], "stopped", "{info:#}");
    assert_verify_ok(&repo);
    assert_partial_rules(&repo, &scratch, &info);

    recover_to_latest(&mut copy, &repo);
    assert_eq!(pgbench_state(&copy), want, "{}", copy.log());
    assert_eq!(copy.psql("SELECT x FROM marker"), "42");
}

/// Streaming over TCP through the gathering reader: first with TLS (the
/// reading thread decrypts), then without, each under pgbench and stopped
/// cleanly; PITR to the latest point recovers every transaction.
#[test]
fn stream_over_tls_then_plain_tcp() {
    let scratch = Scratch::new("walship-stream-");
    let repo_dir = scratch.user_dir("repo");
    let spool = scratch.user_dir("spool");
    let repo = RepoEnv::dir(&repo_dir);
    let mut cluster = source_builder().tls(true).start();
    cluster.pgbench_init(1);
    cluster.psql("SELECT pg_create_physical_replication_slot('walship', true)");
    let mut copy = base_copy(&mut cluster);
    let args = ["--partial-interval", "2"];
    for sslmode in ["require", "disable"] {
        let log = scratch.path(&format!("stream-{sslmode}.log"));
        let conninfo = format!("{} sslmode={sslmode}", cluster.conninfo());
        let mut streamer = Streamer::start(&conninfo, &repo, &spool, &args, &log);
        cluster.pgbench(&["-T", "3", "-c", "2", "-n"]);
        wait_for_catch_up(&cluster, &streamer, &repo, &scratch);
        let status = streamer.stop();
        let text = streamer.log();
        assert!(
            status.success(),
            "sslmode={sslmode}: exit {status:?}:\n{text}"
        );
        assert!(text.contains("gathered=true"), "sslmode={sslmode}: {text}");
    }
    let want = pgbench_state(&cluster);
    assert_verify_ok(&repo);
    recover_to_latest(&mut copy, &repo);
    assert_eq!(pgbench_state(&copy), want, "{}", copy.log());
}

/// Whether the repository or the spool (ready or in-progress files) holds
/// the WAL up to `at` on `tli`.
fn spool_covers(spool: &Path, tli: u32, at: u64) -> bool {
    let probe = at.saturating_sub(1);
    let seg = seg_name(tli, probe);
    let start = (probe >> 20) << 20;
    for name in [format!("{seg}.ready"), format!("{seg}.inprogress")] {
        if let Ok(m) = fs::metadata(spool.join(name)) {
            if start + m.len() >= at {
                return true;
            }
        }
    }
    false
}

/// Waits until the streamer created its slot; its restart_lsn then.
fn wait_for_slot(c: &Cluster, streamer: &Streamer) -> u64 {
    wait_until(
        "the slot",
        Duration::from_secs(30),
        || streamer.log(),
        || slot_flush(c).is_some(),
    );
    slot_flush(c).unwrap()
}

fn current_flush_lsn(c: &Cluster) -> u64 {
    lsn(&c.psql("SELECT pg_current_wal_flush_lsn()"))
}

/// Waits (up to a minute) until the repository holds everything `c` has
/// flushed so far on its current timeline.
fn wait_for_catch_up(c: &Cluster, streamer: &Streamer, repo: &RepoEnv, scratch: &Scratch) {
    let end = current_flush_lsn(c);
    let tli = c.timeline();
    wait_until(
        "the streamer to catch up",
        Duration::from_secs(60),
        || streamer.log(),
        || stored_end_covers(repo, scratch, tli, end),
    );
}

/// At least 20 kill -9 of the streamer at random moments under pgbench: after
/// each, the flush position it reported (the slot's restart_lsn) is in the
/// repository; after the last restart and a clean stop, verify finds no gap
/// and no conflicting duplicate, and PITR recovers every commit.
#[test]
fn kill_9_under_load_loses_nothing() {
    let scratch = Scratch::new("walship-stream-");
    let repo_dir = scratch.user_dir("repo");
    let spool = scratch.user_dir("spool");
    let repo = RepoEnv::dir(&repo_dir);
    let mut cluster = source_cluster(&[]);
    cluster.pgbench_init(1);
    let mut copy = base_copy(&mut cluster);
    let log = scratch.path("stream.log");
    let args = ["--partial-interval", "1"];
    let mut streamer = Streamer::start(&cluster.socket_conninfo(), &repo, &spool, &args, &log);
    let tli = cluster.timeline();
    // The server's own reservation (RESERVE_WAL) until walship reports a flush.
    let reserved = wait_for_slot(&cluster, &streamer);
    std::thread::scope(|s| {
        let load = s.spawn(|| cluster.pgbench(&["-T", "30", "-c", "2", "-n"]));
        for i in 0..20 {
            std::thread::sleep(Duration::from_millis(300 + fastrand::u64(0..1200)));
            streamer.kill9();
            if let Some(flush) = slot_flush(&cluster).filter(|f| *f != reserved) {
                assert!(
                    stored_end_covers(&repo, &scratch, tli, flush),
                    "kill {i}: the slot's restart_lsn {flush:X} is not in the repository\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            streamer = Streamer::start(&cluster.socket_conninfo(), &repo, &spool, &args, &log);
        }
        load.join().unwrap();
    });
    // Temp files of killed stores: the next start removes those an hour old.
    // Age whatever the kills left, plant one more, and restart once more.
    let wal_dirs: Vec<PathBuf> = fs::read_dir(&repo_dir)
        .unwrap()
        .flatten()
        .flat_map(|stanza| {
            fs::read_dir(stanza.path().join("wal"))
                .into_iter()
                .flatten()
        })
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert!(
        !wal_dirs.is_empty(),
        "no WAL directory in {}",
        repo_dir.display()
    );
    fs::write(wal_dirs[0].join(".planted.tmp.00000000deadbeef"), b"half").unwrap();
    let temps = || -> Vec<PathBuf> {
        wal_dirs
            .iter()
            .flat_map(|d| fs::read_dir(d).unwrap().flatten().map(|e| e.path()))
            .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".tmp."))
            .collect()
    };
    let day_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86400);
    for t in temps() {
        fs::File::options()
            .write(true)
            .open(&t)
            .unwrap()
            .set_modified(day_ago)
            .unwrap();
    }
    streamer.kill9();
    streamer = Streamer::start(&cluster.socket_conninfo(), &repo, &spool, &args, &log);
    let want = pgbench_state(&cluster);
    wait_for_catch_up(&cluster, &streamer, &repo, &scratch);
    let left: Vec<PathBuf> = temps()
        .into_iter()
        .filter(|t| {
            fs::metadata(t).is_ok_and(|m| m.modified().unwrap() < day_ago + Duration::from_secs(60))
        })
        .collect();
    assert!(
        left.is_empty(),
        "stale temp files survived the restart: {left:?}"
    );
    let status = streamer.stop();
    assert!(status.success(), "exit {status:?}:\n{}", streamer.log());
    assert_verify_ok(&repo);
    recover_to_latest(&mut copy, &repo);
    assert_eq!(pgbench_state(&copy), want, "{}", copy.log());
}

/// With --synchronous in synchronous_standby_names, a commit returns only
/// once its WAL is fsynced in the spool: after each kill -9 the reported
/// flush position is in the spool or the repository, and every commit that
/// returned to the client is recovered.
#[test]
fn synchronous_mode_recovers_every_returned_commit() {
    let scratch = Scratch::new("walship-stream-");
    let repo_dir = scratch.user_dir("repo");
    let spool = scratch.user_dir("spool");
    let repo = RepoEnv::dir(&repo_dir);
    let mut cluster = source_cluster(&[]);
    cluster.psql("CREATE TABLE t(i int primary key)");
    let mut copy = base_copy(&mut cluster);
    cluster.psql("ALTER SYSTEM SET synchronous_standby_names = 'walship'");
    cluster.psql("SELECT pg_reload_conf()");
    let log = scratch.path("stream.log");
    let args = ["--synchronous", "--partial-interval", "60"];
    let mut streamer = Streamer::start(&cluster.socket_conninfo(), &repo, &spool, &args, &log);
    let tli = cluster.timeline();
    // The server's own reservation (RESERVE_WAL) until walship reports a flush.
    let reserved = wait_for_slot(&cluster, &streamer);
    let last_ok = std::sync::atomic::AtomicU64::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 1u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                cluster.psql(&format!("INSERT INTO t VALUES ({i})"));
                last_ok.store(i, std::sync::atomic::Ordering::SeqCst);
                i += 1;
            }
        });
        for i in 0..6 {
            std::thread::sleep(Duration::from_millis(500 + fastrand::u64(0..1000)));
            streamer.kill9();
            let acked = last_ok.load(std::sync::atomic::Ordering::SeqCst);
            if let Some(flush) = slot_flush(&cluster).filter(|f| *f != reserved) {
                assert!(
                    spool_covers(&spool, tli, flush)
                        || stored_end_covers(&repo, &scratch, tli, flush),
                    "kill {i}: reported flush {flush:X} is neither in the spool nor stored\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
            // Nothing commits while the only synchronous standby is gone.
            assert!(last_ok.load(std::sync::atomic::Ordering::SeqCst) <= acked + 1);
            streamer = Streamer::start(&cluster.socket_conninfo(), &repo, &spool, &args, &log);
        }
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let acked = last_ok.load(std::sync::atomic::Ordering::SeqCst);
    assert!(acked > 10, "too few commits: {acked}");
    eprintln!("synchronous mode: {acked} commits returned to the client across 6 kill -9");
    let status = streamer.stop();
    assert!(status.success(), "exit {status:?}:\n{}", streamer.log());
    // Every message is read (and acknowledged) at once: no gathering wait.
    let log = streamer.log();
    assert!(
        log.contains("gathered=false") && !log.contains("gathered=true"),
        "{log}"
    );
    assert_verify_ok(&repo);
    recover_to_latest(&mut copy, &repo);
    assert_eq!(
        copy.psql("SELECT count(*) || ',' || coalesce(max(i), 0) FROM t"),
        format!("{acked},{acked}"),
        "{}",
        copy.log()
    );
}

fn replay_caught_up(primary: &Cluster, standby: &Cluster) {
    let target = current_flush_lsn(primary);
    wait_until(
        "the standby to replay",
        Duration::from_secs(60),
        || standby.log(),
        || lsn(&standby.psql("SELECT coalesce(pg_last_wal_replay_lsn(), '0/0')")) >= target,
    );
}

/// Streaming from a standby (cascading) survives the standby's restart and
/// its promotion: the history file is stored, streaming continues on the
/// new timeline, and PITR across the switch recovers the new primary's data.
#[test]
fn server_restart_and_timeline_switch() {
    let scratch = Scratch::new("walship-stream-");
    let repo_dir = scratch.user_dir("repo");
    let spool = scratch.user_dir("spool");
    let repo = RepoEnv::dir(&repo_dir);
    let mut primary = source_cluster(&[]);
    primary.pgbench_init(1);
    let mut standby = primary.create_standby();
    let log = scratch.path("stream.log");
    let args = ["--partial-interval", "1"];
    let mut streamer = Streamer::start(&standby.socket_conninfo(), &repo, &spool, &args, &log);
    wait_until(
        "the slot on the standby",
        Duration::from_secs(30),
        || streamer.log(),
        || slot_flush(&standby).is_some(),
    );
    let mut copy = base_copy(&mut primary);
    primary.pgbench(&["-T", "3", "-c", "2", "-n"]);
    replay_caught_up(&primary, &standby);
    standby.restart();
    primary.pgbench(&["-T", "3", "-c", "2", "-n"]);
    replay_caught_up(&primary, &standby);
    let before = current_flush_lsn(&primary);
    wait_until(
        "the old timeline in the repository",
        Duration::from_secs(60),
        || streamer.log(),
        || stored_end_covers(&repo, &scratch, 1, before),
    );
    primary.stop();
    standby.promote();
    standby.psql("CHECKPOINT");
    assert_eq!(standby.timeline(), 2);
    standby.pgbench(&["-T", "3", "-c", "2", "-n"]);
    let end = current_flush_lsn(&standby);
    wait_until(
        "the new timeline in the repository",
        Duration::from_secs(60),
        || streamer.log(),
        || stored_end_covers(&repo, &scratch, 2, end),
    );
    let want = pgbench_state(&standby);
    let status = streamer.stop();
    assert!(status.success(), "exit {status:?}:\n{}", streamer.log());
    if std::env::var_os("WALSHIP_TEST_SHOW_LOG").is_some() {
        eprintln!("{}", streamer.log());
    }
    let info = info_json(&repo);
    let tlis: Vec<u64> = info["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["timeline"].as_u64().unwrap())
        .collect();
    assert_eq!(tlis, [1, 2], "{info:#}");
    assert_eq!(info["timelines"][1]["history_file"], true, "{info:#}");
    assert_verify_ok(&repo);
    // The old timeline's last segment is a .partial up to the switch; timeline
    // 2 branches off inside it, so it is never served as a full segment.
    let old_partial = info["timelines"][0]["partial"]
        .as_str()
        .unwrap_or_else(|| panic!("no .partial on timeline 1: {info:#}"));
    let dest = scratch.path("probe-old");
    let out = walship(
        &[
            "archive-get",
            "--allow-partial",
            old_partial.trim_end_matches(".partial"),
            dest.to_str().unwrap(),
        ],
        &repo,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    recover_to_latest(&mut copy, &repo);
    assert_eq!(pgbench_state(&copy), want, "{}", copy.log());
    copy.psql("CHECKPOINT");
    assert_eq!(copy.timeline(), 3, "{}", copy.log());
}

/// The slot dropped while streaming: recreated (and said so) while the
/// server still has the WAL the repository needs next; once that WAL is
/// gone, the streamer exits 1 naming the slot, and drops the slot it made.
#[test]
fn slot_dropped_while_streaming() {
    let scratch = Scratch::new("walship-stream-");
    let repo_dir = scratch.user_dir("repo");
    let spool = scratch.user_dir("spool");
    let repo = RepoEnv::dir(&repo_dir);
    let cluster = source_cluster(&[]);
    let log = scratch.path("stream.log");
    let args = ["--partial-interval", "1"];
    let mut streamer = Streamer::start(&cluster.socket_conninfo(), &repo, &spool, &args, &log);
    wait_until(
        "the slot",
        Duration::from_secs(30),
        || streamer.log(),
        || slot_flush(&cluster).is_some(),
    );
    cluster.psql("CREATE TABLE a AS SELECT generate_series(1, 10000) AS x");
    // Drop it under the streamer's feet: end its walsender and drop the slot
    // before the streamer reconnects.
    wait_until(
        "dropping the active slot",
        Duration::from_secs(30),
        || streamer.log(),
        || {
            let _ = cluster.try_psql(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE slot_name = 'walship' AND active_pid IS NOT NULL",
            );
            cluster
                .try_psql("SELECT pg_drop_replication_slot('walship')")
                .is_ok()
        },
    );
    wait_until(
        "the recreated slot",
        Duration::from_secs(30),
        || streamer.log(),
        || slot_flush(&cluster).is_some(),
    );
    cluster.psql("CREATE TABLE b AS SELECT generate_series(1, 10000) AS x");
    let end = current_flush_lsn(&cluster);
    wait_until(
        "streaming after the slot came back",
        Duration::from_secs(30),
        || streamer.log(),
        || stored_end_covers(&repo, &scratch, 1, end),
    );
    assert!(
        streamer.log().contains("replication slot does not exist"),
        "{}",
        streamer.log()
    );
    assert!(streamer.stop().success(), "{}", streamer.log());

    // Now drop it while stopped and let the server recycle the WAL.
    cluster.psql("SELECT pg_drop_replication_slot('walship')");
    for _ in 0..4 {
        cluster.psql(
            "CREATE TABLE IF NOT EXISTS c(x int); INSERT INTO c SELECT generate_series(1, 20000)",
        );
        cluster.psql("SELECT pg_switch_wal()");
        cluster.psql("CHECKPOINT");
    }
    let log2 = scratch.path("stream2.log");
    let mut again = Streamer::start(&cluster.socket_conninfo(), &repo, &spool, &args, &log2);
    let status = again
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the streamer kept running:\n{}", again.log()));
    assert_eq!(status.code(), Some(1), "{}", again.log());
    let out = again.log();
    assert!(
        out.contains("replication slot \"walship\" was dropped") && out.contains("removed"),
        "{out}"
    );
    assert_eq!(
        slot_flush(&cluster),
        None,
        "the recreated slot was left behind:\n{out}"
    );
    assert_verify_ok(&repo);
}

/// Another process holds the slot: a clear error naming the slot and the
/// holder's PID, retried until the slot is free.
#[test]
fn slot_held_by_another_process() {
    let scratch = Scratch::new("walship-stream-");
    let repo_dir = scratch.user_dir("repo");
    let repo = RepoEnv::dir(&repo_dir);
    let cluster = source_cluster(&[]);
    let spool1 = scratch.user_dir("spool1");
    let spool2 = scratch.user_dir("spool2");
    let mut first = Streamer::start(
        &cluster.socket_conninfo(),
        &repo,
        &spool1,
        &[],
        &scratch.path("one.log"),
    );
    wait_until(
        "the first streamer on the slot",
        Duration::from_secs(30),
        || first.log(),
        || {
            cluster.psql(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walship' AND active",
            ) == "1"
        },
    );
    let holder =
        cluster.psql("SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'walship'");
    let mut second = Streamer::start(
        &cluster.socket_conninfo(),
        &repo,
        &spool2,
        &[],
        &scratch.path("two.log"),
    );
    wait_until(
        "the busy-slot error",
        Duration::from_secs(30),
        || second.log(),
        || {
            let l = second.log();
            l.contains("replication slot \"walship\" is in use by another process")
                && l.contains(&format!("PID {holder}"))
        },
    );
    first.kill9();
    wait_until(
        "the second streamer to take the slot",
        Duration::from_secs(60),
        || second.log(),
        || second.log().contains("streaming server="),
    );
    assert!(second.stop().success(), "{}", second.log());
}

/// A cluster streaming to a real S3 server with `--partial-interval 1`.
struct ToS3 {
    scratch: Scratch,
    spool: PathBuf,
    s3: S3Server,
    repo: RepoEnv,
    cluster: Cluster,
}

impl ToS3 {
    fn new() -> ToS3 {
        let scratch = Scratch::new("walship-stream-");
        let spool = scratch.user_dir("spool");
        let s3 = S3Server::start();
        let repo = RepoEnv(s3.env("stream"));
        let cluster = source_cluster(&[]);
        cluster.pgbench_init(1);
        ToS3 {
            scratch,
            spool,
            s3,
            repo,
            cluster,
        }
    }

    /// Starts a streamer logging to `log_name` in the scratch directory.
    fn start(&self, log_name: &str) -> Streamer {
        Streamer::start(
            &self.cluster.socket_conninfo(),
            &self.repo,
            &self.spool,
            &["--partial-interval", "1"],
            &self.scratch.path(log_name),
        )
    }

    /// Waits until the WAL written so far is stored in S3.
    fn wait_first_wal(&self, streamer: &Streamer) {
        let before = current_flush_lsn(&self.cluster);
        wait_until(
            "the first WAL in S3",
            Duration::from_secs(30),
            || streamer.log(),
            || stored_end_covers(&self.repo, &self.scratch, 1, before),
        );
    }
}

/// The repository (a real S3 server) down for 30 s: WAL waits in the spool
/// and the slot, the flush position reported does not pass what is stored,
/// and the streamer catches up when the server is back.
#[test]
fn repository_down_for_30_seconds() {
    let mut t = ToS3::new();
    let mut streamer = t.start("stream.log");
    t.wait_first_wal(&streamer);
    let (scratch, repo, cluster) = (&t.scratch, &t.repo, &t.cluster);
    t.s3.stop();
    std::thread::sleep(Duration::from_secs(2));
    let flush_at_outage = slot_flush(cluster).unwrap();
    cluster.pgbench(&["-T", "28", "-c", "1", "-n", "-R", "400"]);
    let during = slot_flush(cluster).unwrap();
    let written = current_flush_lsn(cluster);
    assert_eq!(
        during, flush_at_outage,
        "the flush position moved while the repository was down"
    );
    assert!(
        written > during + (1 << 20),
        "too little WAL during the outage"
    );
    assert!(
        streamer.log().contains("storing WAL failed"),
        "{}",
        streamer.log()
    );
    t.s3.start_again();
    wait_until(
        "catching up after the outage",
        Duration::from_secs(90),
        || streamer.log(),
        || stored_end_covers(repo, scratch, 1, written),
    );
    wait_until(
        "the slot to follow",
        Duration::from_secs(30),
        || streamer.log(),
        || slot_flush(cluster).unwrap() >= written,
    );
    assert!(streamer.stop().success(), "{}", streamer.log());
    assert_verify_ok(repo);
}

/// A stop asked while the repository is down drains (retries the store);
/// asked a second time it stops at once with exit 1, and the next start
/// stores what was left: nothing is lost.
#[test]
fn second_signal_cuts_the_drain_short_and_loses_nothing() {
    let mut t = ToS3::new();
    let mut streamer = t.start("stream.log");
    t.wait_first_wal(&streamer);
    let (scratch, spool, repo, cluster) = (&t.scratch, &t.spool, &t.repo, &t.cluster);
    t.s3.stop();
    cluster.pgbench(&["-T", "3", "-c", "1", "-n"]);
    let written = current_flush_lsn(cluster);
    wait_until(
        "the WAL written during the outage in the spool",
        Duration::from_secs(30),
        || streamer.log(),
        || spool_covers(spool, 1, written),
    );
    streamer.send("-TERM");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        streamer.wait_exit(Duration::from_millis(10)).is_none(),
        "stopped before draining, with the repository down:\n{}",
        streamer.log()
    );
    streamer.send("-INT");
    let status = streamer
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("a second signal did not stop it:\n{}", streamer.log()));
    assert_eq!(status.code(), Some(1), "{}", streamer.log());
    assert!(
        streamer.log().contains("SIGINT again"),
        "{}",
        streamer.log()
    );

    t.s3.start_again();
    let mut again = t.start("stream2.log");
    wait_until(
        "the WAL left in the spool stored by the next start",
        Duration::from_secs(90),
        || again.log(),
        || stored_end_covers(repo, scratch, 1, written),
    );
    assert!(again.stop().success(), "{}", again.log());
    assert_verify_ok(repo);
}

/// The spool's disk full (a tiny tmpfs): a clear error, nothing corrupt, no
/// flush past what is stored, and streaming resumes once space is freed.
#[test]
fn spool_disk_full() {
    let scratch = Scratch::new("walship-stream-");
    let repo_dir = scratch.user_dir("repo");
    let repo = RepoEnv::dir(&repo_dir);
    let spool = scratch.path("spool");
    fs::create_dir_all(&spool).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m,mode=0755", "tmpfs"])
        .arg(&spool)
        .status()
        .unwrap()
        .success();
    assert!(mounted, "mount a tmpfs (the tests run as root)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(spool.clone());
    give_to_test_user(&spool);
    let filler = spool.join("filler");
    let cluster = source_cluster(&[]);
    cluster.pgbench_init(1);
    let log = scratch.path("stream.log");
    let mut streamer = Streamer::start(
        &cluster.socket_conninfo(),
        &repo,
        &spool,
        &["--partial-interval", "1"],
        &log,
    );
    let start = current_flush_lsn(&cluster);
    wait_until(
        "streaming",
        Duration::from_secs(30),
        || streamer.log(),
        || stored_end_covers(&repo, &scratch, 1, start),
    );
    // Leave about 300 kB free.
    let free = {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&spool)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    fs::write(&filler, vec![1u8; (free - 300 * 1024) as usize]).unwrap();
    cluster.pgbench(&["-T", "4", "-c", "2", "-n"]);
    let written = current_flush_lsn(&cluster);
    wait_until(
        "the disk-full error",
        Duration::from_secs(30),
        || streamer.log(),
        || streamer.log().contains("No space left on device"),
    );
    let flush = slot_flush(&cluster).unwrap();
    assert!(flush < written);
    assert!(
        stored_end_covers(&repo, &scratch, 1, flush),
        "reported flush {flush:X} is not stored"
    );
    fs::remove_file(&filler).unwrap();
    wait_until(
        "resuming after space was freed",
        Duration::from_secs(90),
        || streamer.log(),
        || stored_end_covers(&repo, &scratch, 1, written),
    );
    assert!(streamer.stop().success(), "{}", streamer.log());
    assert_verify_ok(&repo);
}

/// Usage errors exit 2; SIGINT while the server cannot be reached (the
/// streamer retrying its first connection) stops it at once with exit 0.
#[test]
fn usage_errors_and_sigint_while_the_server_is_down() {
    let scratch = Scratch::new("walship-stream-");
    let repo_dir = scratch.user_dir("repo");
    let spool = scratch.user_dir("spool");
    let repo = RepoEnv::dir(&repo_dir);
    let out = walship(&["stream"], &repo);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--spool"));
    let out = walship(&["stream", "--spool", "/tmp", "--slot", "Bad-Name"], &repo);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid replication slot name"),
        "{}",
        text(&out)
    );

    let nowhere = scratch.user_dir("nosock");
    let conninfo = format!("host={} port=1 user=postgres", nowhere.display());
    let mut streamer = Streamer::start(&conninfo, &repo, &spool, &[], &scratch.path("s.log"));
    wait_until(
        "a failed attempt",
        Duration::from_secs(30),
        || streamer.log(),
        || streamer.log().contains("cannot start streaming yet"),
    );
    let status = streamer.signal("-INT");
    assert!(status.success(), "{status:?}\n{}", streamer.log());
}
