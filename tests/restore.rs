//! `walship restore` end to end: real PostgreSQL archiving with
//! `archive_command = walship archive-push`, `walship backup`, then restores to
//! a time, a named restore point, an LSN and an xid, each started with the
//! `restore_command` walship wrote and compared table by table with the
//! snapshot taken at that mark. Also: a timeline switch, `--delta` on a
//! diverged directory, `--force`, an S3 repository, and every bad input
//! (refused before anything is written, or stopped with the culprit named).
//!
//! The same PITR test runs on other majors with
//! `WALSHIP_PG_BIN=$PWD/.pg/13/bin cargo test --test restore pitr_`.

mod support;

use support::repo::{damage_bundled_chunk, open_repo};
use support::scratch::Scratch;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use support::pg::give_to_test_user;
use support::restored::RestoredCluster;
use support::s3::S3Server;
use support::{run_walship, walship_bin, Cluster};

const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const OTHER_KEY_HEX: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

/// pgbench's tables and the order that makes their text unique.
const TABLES: [(&str, &str); 4] = [
    ("pgbench_accounts", "aid"),
    ("pgbench_branches", "bid"),
    ("pgbench_tellers", "tid"),
    ("pgbench_history", "tid, bid, aid, delta, mtime"),
];

type Env = Vec<(&'static str, String)>;

fn walship(args: &[&str], env: &Env) -> Output {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_walship(args, &pairs)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A cluster archiving with walship (1 MiB segments); `env` goes on the
/// archive_command line (paths and non-secret settings only).
fn archiving_cluster(env: &Env) -> Cluster {
    let assignments: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let command = format!(
        "{} {} archive-push %p",
        assignments.join(" "),
        walship_bin().display()
    );
    Cluster::builder()
        .wal_segsize_mb(1)
        .conf("archive_mode = on")
        .conf(format!(
            "archive_command = '{}'",
            command.replace('\'', "''")
        ))
        .conf("checkpoint_timeout = '1h'")
        .conf("autovacuum = off")
        .start()
}

/// Switches WAL and waits until PostgreSQL archived everything so far.
fn wait_archived(cluster: &Cluster) {
    let last = cluster.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    cluster.psql("SELECT pg_switch_wal()");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let row = cluster
            .psql("SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver");
        let parts: Vec<&str> = row.split('|').collect();
        if parts[0] >= last.as_str() && parts[0].len() == 24 {
            assert_eq!(parts[1], "0", "archive_command failed: {}", cluster.log());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "archiving did not reach {last}: {row}\n{}",
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn backup(cluster_conninfo: &str, env: &Env) -> String {
    let o = walship(&["backup", "--pg", cluster_conninfo, "--json"], env);
    assert!(o.status.success(), "walship backup: {}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("backup --json: {e}: {}", text(&o)));
    v["id"].as_str().unwrap().to_string()
}

fn checksum_sql(table: &str, order: &str) -> String {
    format!("SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY {order})), '') FROM {table} t")
}

/// One checksum per pgbench table.
fn checksums(psql: impl Fn(&str) -> String) -> Vec<String> {
    TABLES
        .iter()
        .map(|(t, o)| format!("{t}={}", psql(&checksum_sql(t, o))))
        .collect()
}

/// `walship restore --pgdata DIR --archive-mode off ARGS...`, expected to succeed.
fn restore_ok(env: &Env, dir: &Path, args: &[&str]) -> String {
    let mut all = vec![
        "restore",
        "--pgdata",
        dir.to_str().unwrap(),
        "--archive-mode",
        "off",
    ];
    all.extend_from_slice(args);
    let o = walship(&all, env);
    assert!(o.status.success(), "walship {all:?}: {}", text(&o));
    assert!(dir.join("global/pg_control").is_file());
    assert!(dir.join("recovery.signal").is_file());
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn restore_fails(env: &Env, dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["restore", "--pgdata", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = walship(&all, env);
    assert_eq!(
        o.status.code(),
        Some(1),
        "walship {all:?} should fail: {}",
        text(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    eprintln!("walship {all:?} refused, as it should:\n{err}");
    err
}

/// Restores, starts PostgreSQL on the result, waits for the target, and
/// returns the server (still running) and the table checksums.
fn restore_and_check(
    env: &Env,
    dir: &Path,
    args: &[&str],
    promote: bool,
) -> (RestoredCluster, Vec<String>) {
    restore_ok(env, dir, args);
    let mut server = RestoredCluster::new(dir, &[]);
    server.start();
    if promote {
        server.wait_promoted();
    } else {
        server.wait_paused();
    }
    let sums = checksums(|sql| server.psql(sql));
    (server, sums)
}

struct Marks {
    time: String,
    time_sums: Vec<String>,
    name_sums: Vec<String>,
    lsn: String,
    lsn_sums: Vec<String>,
    xid: String,
    xid_sums: Vec<String>,
    end_sums: Vec<String>,
}

/// pgbench load with a mark of each kind along the way.
fn load_with_marks(cluster: &Cluster) -> Marks {
    let sums = || checksums(|sql| cluster.psql(sql));
    cluster.pgbench(&["-t", "1500", "-n"]);
    let time_sums = sums();
    let time = cluster.psql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    std::thread::sleep(Duration::from_millis(20));
    cluster.pgbench(&["-t", "1500", "-n"]);
    let name_sums = sums();
    cluster.psql("SELECT pg_create_restore_point('walship-mark')");
    cluster.pgbench(&["-t", "1500", "-n"]);
    let lsn_sums = sums();
    let lsn = cluster.psql("SELECT pg_current_wal_lsn()");
    cluster.pgbench(&["-t", "1500", "-n"]);
    let xid = cluster.psql(
        "UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1; SELECT txid_current()",
    );
    let xid_sums = sums();
    cluster.pgbench(&["-t", "1500", "-n"]);
    let end_sums = sums();
    wait_archived(cluster);
    Marks {
        time,
        time_sums,
        name_sums,
        lsn,
        lsn_sums,
        xid,
        xid_sums,
        end_sums,
    }
}

fn fs_env(scratch: &Scratch) -> Env {
    let repo = scratch.user_dir("repo");
    let key = scratch.key_file("key", KEY_HEX);
    vec![
        ("WALSHIP_REPO", repo.display().to_string()),
        ("WALSHIP_KEY_FILE", key.display().to_string()),
    ]
}

/// The whole PITR story on one cluster: every kind of target, then --delta on
/// a diverged directory and --force. Run it on other majors with WALSHIP_PG_BIN.
#[test]
fn pitr_every_target_kind_delta_and_force() {
    let scratch = Scratch::new("walship-restore-");
    let env = fs_env(&scratch);
    let cluster = archiving_cluster(&env);
    cluster.pgbench_init(1);
    wait_archived(&cluster);
    let b1 = backup(&cluster.socket_conninfo(), &env);
    let m = load_with_marks(&cluster);
    assert_ne!(m.time_sums, m.end_sums);

    // --dry-run writes nothing and says what it would do.
    let dry = scratch.path("dry");
    let out = restore_ok_dry(&env, &dry, &["--target-time", &m.time]);
    eprintln!("dry run:\n{out}");
    assert!(
        out.contains(&b1) && out.contains("segments") && out.contains("estimate"),
        "{out}"
    );
    assert!(!dry.exists());

    // Time, pause (the default).
    let d_time = scratch.path("r-time");
    let (mut s, sums) = restore_and_check(&env, &d_time, &["--target-time", &m.time], false);
    assert_eq!(sums, m.time_sums, "time target {}", m.time);
    s.stop();
    drop(s);

    // Named restore point.
    let d_name = scratch.path("r-name");
    let (s, sums) = restore_and_check(&env, &d_name, &["--target-name", "walship-mark"], false);
    assert_eq!(sums, m.name_sums);
    drop(s);

    // LSN, promoted.
    let d_lsn = scratch.path("r-lsn");
    let (mut s, sums) = restore_and_check(
        &env,
        &d_lsn,
        &["--target-lsn", &m.lsn, "--target-action", "promote"],
        true,
    );
    assert_eq!(sums, m.lsn_sums);
    // Diverge: the promoted copy writes on its own.
    s.psql("UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid <= 5000");
    s.psql("CREATE TABLE junk AS SELECT g FROM generate_series(1, 100000) g");
    s.psql("CHECKPOINT");
    s.stop();
    drop(s);

    // xid.
    let d_xid = scratch.path("r-xid");
    let (s, sums) = restore_and_check(&env, &d_xid, &["--target-xid", &m.xid], false);
    assert_eq!(sums, m.xid_sums, "xid {}", m.xid);
    drop(s);

    // --delta on the diverged directory, to the restore point.
    let out = restore_ok(&env, &d_lsn, &["--delta", "--target-name", "walship-mark"]);
    assert!(out.contains("reused"), "{out}");
    let reused: u64 = out
        .split(" reused")
        .next()
        .and_then(|s| s.rsplit(", ").next())
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(reused > 0, "--delta reused no chunk: {out}");
    let mut s = RestoredCluster::new(&d_lsn, &[]);
    s.start();
    s.wait_paused();
    assert_eq!(checksums(|q| s.psql(q)), m.name_sums);
    assert!(
        s.try_psql("SELECT 1 FROM junk LIMIT 1").is_err(),
        "--delta left a table the backup does not have"
    );
    s.stop();
    drop(s);

    // --force: the time-restored directory moves aside and stays usable.
    let out = restore_ok(&env, &d_time, &["--force"]);
    assert!(out.contains(".pre-restore-"), "{out}");
    let aside: PathBuf = fs::read_dir(scratch.path(""))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("r-time.pre-restore-"))
        .expect("the pre-restore directory");
    let mut latest = RestoredCluster::new(&d_time, &[]);
    latest.start();
    latest.wait_promoted();
    assert_eq!(checksums(|q| latest.psql(q)), m.end_sums, "latest point");
    latest.stop();
    let mut old = RestoredCluster::new(&aside, &[]);
    old.start();
    old.wait_paused();
    assert_eq!(
        checksums(|q| old.psql(q)),
        m.time_sums,
        "the moved-aside directory still works"
    );
}

/// Recovery to the xid of a transaction whose commit record starts in one WAL
/// segment and ends in the next: the pre-flight finds it (indexed in the
/// segment where it ends) and PostgreSQL stops right after it.
#[test]
fn pitr_xid_whose_commit_crosses_a_segment_boundary() {
    let scratch = Scratch::new("walship-restore-");
    let env = fs_env(&scratch);
    let cluster = archiving_cluster(&env);
    cluster.psql("CREATE TABLE marks (name text)");
    wait_archived(&cluster);
    backup(&cluster.socket_conninfo(), &env);
    cluster.psql("INSERT INTO marks VALUES ('before')");
    let (xid, segment) = commit_across_a_segment_boundary(&cluster, "crossing");
    // Another commit in the same segment: its xid alone would be that
    // segment's range if the crossing commit were not indexed.
    cluster.psql("INSERT INTO marks VALUES ('after')");
    // A subtransaction's xid: inside the xid range of the segment that holds
    // its transaction's commit, yet no record finishes it, so recovery to it
    // would never stop. The pre-flight reads that segment and refuses it.
    cluster.psql(
        "BEGIN; INSERT INTO marks VALUES ('top'); SAVEPOINT s; \
         INSERT INTO marks VALUES ('sub'); COMMIT",
    );
    let subxid = cluster.psql("SELECT xmin FROM marks WHERE name = 'sub'");
    cluster.psql("INSERT INTO marks VALUES ('later')");
    wait_archived(&cluster);
    let sub_dir = scratch.path("r-subxid");
    let err = restore_fails(&env, &sub_dir, &["--target-xid", &subxid]);
    assert!(
        err.contains(&format!("without reaching xid {subxid}")) && err.contains("subtransaction"),
        "{err}"
    );
    assert!(!sub_dir.exists(), "nothing may be written");

    let dir = scratch.path("r-xid");
    let plan = restore_ok_dry(&env, &dir, &["--target-xid", &xid]);
    assert!(
        plan.contains(&format!("the commit of xid {xid} (in {segment}")),
        "expected the commit of xid {xid} found in {segment}:\n{plan}"
    );
    restore_ok(&env, &dir, &["--target-xid", &xid]);
    let mut server = RestoredCluster::new(&dir, &[]);
    server.start();
    server.wait_paused();
    assert_eq!(
        server.psql("SELECT string_agg(name, ',' ORDER BY name) FROM marks"),
        "before,crossing"
    );
    server.stop();
}

/// Commits a transaction that inserts `name` into `marks`, placing its commit
/// record across a WAL segment boundary with a logical message sized to end
/// 16 bytes before it. Returns the xid and the segment where the commit ends.
fn commit_across_a_segment_boundary(cluster: &Cluster, name: &str) -> (String, String) {
    let seg = cluster.wal_segment_size();
    let page = 8192u64;
    let lsn = |text: &str| -> u64 { text.trim().parse::<walship::pg::wal::Lsn>().unwrap().0 };
    let insert_lsn = || lsn(&cluster.psql("SELECT pg_current_wal_insert_lsn()"));
    let emit = |n: u64| {
        cluster.psql(&format!(
            "SELECT pg_logical_emit_message(false, 'w', repeat('x', {n}))"
        ));
    };
    // A message record's bytes besides its payload: header, data header,
    // xl_logical_message, prefix "w\0". Corrected from each attempt.
    let mut overhead: i64 = 24 + 5 + 24 + 2;
    for _ in 0..10 {
        // Leave 20-28 KiB to the boundary: room for the insert (and a full
        // page image) before the message that closes the gap.
        let left = seg - insert_lsn() % seg;
        if !(20_000..28_000).contains(&left) {
            let step = if left > 24_000 {
                left - 24_000
            } else {
                left + 24_000
            };
            emit(step);
            continue;
        }
        let out = cluster.psql(&format!(
            "BEGIN; INSERT INTO marks VALUES ('{name}');
             DO $$
             DECLARE
               pos bigint := pg_current_wal_insert_lsn() - '0/0'::pg_lsn;
               target bigint := pos + ({seg} - pos % {seg}) - 16;
               pages bigint := target / {page} - pos / {page};
             BEGIN
               PERFORM set_config('w.xid', txid_current()::text, false);
               PERFORM set_config('w.target', target::text, false);
               PERFORM pg_logical_emit_message(false, 'w',
                 repeat('x', (target - pos - pages * 24 - {overhead})::int));
               PERFORM set_config('w.before', pg_current_wal_insert_lsn()::text, false);
             END $$;
             COMMIT;
             SELECT current_setting('w.xid') || ' ' || current_setting('w.target') || ' '
               || current_setting('w.before') || ' ' || pg_current_wal_insert_lsn()"
        ));
        let f: Vec<&str> = out.split_whitespace().collect();
        let (xid, target, before, after) =
            (f[0], f[1].parse::<u64>().unwrap(), lsn(f[2]), lsn(f[3]));
        if before % seg != 0 && before / seg != (after - 1) / seg && after - before < 256 {
            let segment = cluster.psql(&format!("SELECT pg_walfile_name('{}'::pg_lsn)", f[3]));
            return (xid.to_string(), segment);
        }
        // Missed: learn the message's real overhead and try at the next boundary.
        overhead += before as i64 - target as i64;
    }
    panic!("could not place a commit record across a segment boundary in 10 tries");
}

fn restore_ok_dry(env: &Env, dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["restore", "--pgdata", dir.to_str().unwrap(), "--dry-run"];
    all.extend_from_slice(args);
    let o = walship(&all, env);
    assert!(o.status.success(), "walship {all:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Restore to a point, promote (timeline 2, archiving into the same
/// repository), write, back up the new timeline, and restore it with
/// `--target-timeline latest`.
#[test]
fn recovery_across_a_timeline_switch() {
    let scratch = Scratch::new("walship-restore-");
    let env = fs_env(&scratch);
    let cluster = archiving_cluster(&env);
    cluster.pgbench_init(1);
    wait_archived(&cluster);
    backup(&cluster.socket_conninfo(), &env);
    let m = load_with_marks(&cluster);

    // Restore to the LSN mark and promote, archiving kept on: timeline 2.
    let d1 = scratch.path("tl2");
    let o = walship(
        &[
            "restore",
            "--pgdata",
            d1.to_str().unwrap(),
            "--target-lsn",
            &m.lsn,
            "--target-action",
            "promote",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", text(&o));
    let mut s = RestoredCluster::new(&d1, &[]);
    s.start();
    s.wait_promoted();
    assert_eq!(
        s.psql("SELECT timeline_id FROM pg_control_checkpoint()"),
        "2"
    );
    assert_eq!(checksums(|q| s.psql(q)), m.lsn_sums);
    s.psql("UPDATE pgbench_accounts SET abalance = abalance - 3 WHERE aid % 7 = 0");
    s.psql("INSERT INTO pgbench_history SELECT 1, 1, g, 1, now() FROM generate_series(1, 500) g");
    // Back up timeline 2 through the restored server's socket.
    let sock_conninfo = restored_conninfo(&s);
    let b2 = backup(&sock_conninfo, &env);
    s.psql("UPDATE pgbench_tellers SET tbalance = tbalance + 11");
    let tl2_sums = checksums(|q| s.psql(q));
    s.psql("SELECT pg_switch_wal()");
    wait_archived_restored(&s);

    let d2 = scratch.path("tl2-again");
    let out = restore_ok(&env, &d2, &["--backup", &b2, "--target-timeline", "latest"]);
    assert!(out.contains("timeline:   2"), "{out}");
    let mut s2 = RestoredCluster::new(&d2, &[]);
    s2.start();
    s2.wait_promoted();
    assert_eq!(checksums(|q| s2.psql(q)), tl2_sums);

    // Timeline 1 goes on in the original cluster; a time target there, with
    // no --target-timeline, still picks timeline 1 (the drill forked earlier).
    let d3 = scratch.path("tl1");
    let out = restore_ok(&env, &d3, &["--target-xid", &m.xid]);
    assert!(out.contains("timeline:   1"), "{out}");
    let conf = fs::read_to_string(d3.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("recovery_target_timeline = '1'"), "{conf}");
    let mut s3 = RestoredCluster::new(&d3, &[]);
    s3.start();
    s3.wait_paused();
    assert_eq!(checksums(|q| s3.psql(q)), m.xid_sums);
}

/// conninfo of a restored server (Unix socket, trusted).
fn restored_conninfo(s: &RestoredCluster) -> String {
    let conf = fs::read_to_string(s.data_dir().join("postgresql.conf")).unwrap();
    let get = |key: &str| {
        conf.lines()
            .rev()
            .find_map(|l| l.strip_prefix(&format!("{key} = ")))
            .unwrap()
            .trim_matches('\'')
            .to_string()
    };
    format!(
        "host={} port={} user=postgres dbname=postgres",
        get("unix_socket_directories"),
        get("port")
    )
}

fn wait_archived_restored(s: &RestoredCluster) {
    let last = s.psql("SELECT pg_walfile_name(pg_current_wal_lsn() - 1)");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = s.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
        if done.len() == 24 && done >= last {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "restored server did not archive {last}: {}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Archive and back up to a real S3 server, restore from it; the
/// restore_command finds its credentials in PostgreSQL's environment.
#[test]
fn restore_from_s3() {
    let scratch = Scratch::new("walship-restore-");
    let s3 = S3Server::start();
    let key = scratch.key_file("key", KEY_HEX);
    let creds = scratch.aws_credentials(&s3);
    let no_config = scratch.path("no-aws-config").display().to_string();
    let env: Env = vec![
        ("WALSHIP_REPO", format!("s3://{}/restore-test", s3.bucket())),
        ("WALSHIP_S3_ENDPOINT", s3.endpoint()),
        ("WALSHIP_S3_PATH_STYLE", "true".to_string()),
        ("WALSHIP_S3_REGION", "us-east-1".to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
        ("AWS_CONFIG_FILE", no_config.clone()),
        ("WALSHIP_KEY_FILE", key.display().to_string()),
    ];
    let cluster = archiving_cluster(&env);
    cluster.pgbench_init(1);
    wait_archived(&cluster);
    backup(&cluster.socket_conninfo(), &env);
    let m = load_with_marks(&cluster);
    let dir = scratch.path("from-s3");
    restore_ok(&env, &dir, &["--target-name", "walship-mark"]);
    let conf = fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("WALSHIP_S3_ENDPOINT="), "{conf}");
    assert!(
        !conf.contains(s3.secret_key()) && !conf.contains(s3.access_key()),
        "credentials leaked: {conf}"
    );
    let creds_s = creds.display().to_string();
    let mut s = RestoredCluster::new(
        &dir,
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", creds_s.as_str()),
            ("AWS_CONFIG_FILE", no_config.as_str()),
        ],
    );
    s.start();
    s.wait_paused();
    assert_eq!(checksums(|q| s.psql(q)), m.name_sums);
}

// ---------------------------------------------------------------------------
// Bad input: refused before anything is written, or stopped naming the culprit.
// ---------------------------------------------------------------------------

/// A small archiving cluster with one backup and a few segments after it.
struct Small {
    scratch: Scratch,
    env: Env,
    cluster: Cluster,
    backup: String,
}

fn small() -> Small {
    let scratch = Scratch::new("walship-restore-");
    let env = fs_env(&scratch);
    let cluster = archiving_cluster(&env);
    cluster.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g");
    wait_archived(&cluster);
    let backup = backup(&cluster.socket_conninfo(), &env);
    for _ in 0..4 {
        cluster.psql("INSERT INTO t SELECT g FROM generate_series(1, 20000) g");
        cluster.psql("SELECT pg_switch_wal()");
    }
    wait_archived(&cluster);
    Small {
        scratch,
        env,
        cluster,
        backup,
    }
}

#[test]
fn bad_target_outside_the_window_is_refused_stating_it() {
    let s = small();
    let dir = s.scratch.path("r");
    let err = restore_fails(&s.env, &dir, &["--target-time", "2099-01-01 00:00:00+00"]);
    assert!(err.contains("recoverable window: from"), "{err}");
    assert!(
        err.contains(&s.backup),
        "the window names the oldest backup: {err}"
    );
    let err = restore_fails(&s.env, &dir, &["--target-time", "2001-01-01T00:00:00Z"]);
    assert!(err.contains("before the end of the oldest backup"), "{err}");
    let err = restore_fails(&s.env, &dir, &["--target-name", "never-created"]);
    assert!(err.contains("recoverable window"), "{err}");
    let err = restore_fails(&s.env, &dir, &["--target-timeline", "7"]);
    assert!(err.contains("00000007.history"), "{err}");
    // A malformed target is a usage error (exit 2).
    let o = walship(
        &[
            "restore",
            "--pgdata",
            dir.to_str().unwrap(),
            "--target-time",
            "yesterday",
        ],
        &s.env,
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--target-time `yesterday`"),
        "{}",
        text(&o)
    );
    assert!(!dir.exists(), "nothing may be written");
    drop(s.cluster);
}

#[test]
fn bad_missing_segment_in_the_middle_is_named_before_writing() {
    let s = small();
    let start = s
        .cluster
        .psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    // A segment after the backup (the third-newest finished one).
    let mut segs: Vec<String> = fs::read_dir(s.scratch.path("repo/main/wal/00000001"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24 && n.as_str() < start.as_str())
        .collect();
    segs.sort();
    let victim = segs[segs.len() - 3].clone();
    fs::remove_file(s.scratch.path(&format!("repo/main/wal/00000001/{victim}"))).unwrap();
    let dir = s.scratch.path("r");
    let err = restore_fails(&s.env, &dir, &[]);
    assert!(
        err.contains(&format!("WAL segment {victim} is missing")),
        "{err}"
    );
    assert!(!dir.exists(), "nothing may be written");
}

#[test]
fn bad_corrupt_chunk_stops_the_restore_naming_it() {
    let s = small();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = open_repo(&rt, &s.env);
    let manifest = rt.block_on(repo.load_backup(&s.backup)).unwrap().unwrap();
    let victim = manifest
        .files
        .iter()
        .filter(|f| f.size >= 8192)
        .flat_map(|f| f.chunks.iter())
        .next()
        .expect("a chunk of a relation file")
        .clone();
    damage_bundled_chunk(&s.scratch.path("repo"), &victim);
    let id = victim.id.clone();
    let dir = s.scratch.path("r");
    let err = restore_fails(&s.env, &dir, &[]);
    assert!(
        err.contains(&format!("chunk {id}")),
        "the chunk must be named: {err}"
    );
    assert!(
        !dir.join("global/pg_control").exists(),
        "a half-restored directory must not look good"
    );
}

#[test]
fn bad_non_empty_directory_without_force_is_refused() {
    let s = small();
    let dir = s.scratch.path("r");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("precious.txt"), b"keep me").unwrap();
    let err = restore_fails(&s.env, &dir, &[]);
    assert!(
        err.contains("is not empty") && err.contains("--force"),
        "{err}"
    );
    let left: Vec<_> = fs::read_dir(&dir).unwrap().collect();
    assert_eq!(left.len(), 1, "nothing may be written");
    assert_eq!(fs::read(dir.join("precious.txt")).unwrap(), b"keep me");
}

#[test]
fn bad_wrong_key_is_refused_as_a_wrong_key() {
    let s = small();
    let other = s.scratch.key_file("other-key", OTHER_KEY_HEX);
    let mut env = s.env.clone();
    env.retain(|(k, _)| *k != "WALSHIP_KEY_FILE");
    env.push(("WALSHIP_KEY_FILE", other.display().to_string()));
    let dir = s.scratch.path("r");
    let err = restore_fails(&env, &dir, &[]);
    assert!(
        err.to_lowercase().contains("wrong key") || err.contains("not this stanza's key"),
        "{err}"
    );
    assert!(!dir.exists(), "nothing may be written");
}

/// A tablespace restored into another directory with --tablespace-map
/// (the original one is still in use by the running source cluster).
#[test]
fn tablespace_restored_into_the_mapped_directory() {
    let scratch = Scratch::new("walship-restore-");
    let env = fs_env(&scratch);
    let cluster = archiving_cluster(&env);
    let ts = scratch.user_dir("ts-original");
    cluster.psql(&format!("CREATE TABLESPACE ts LOCATION '{}'", ts.display()));
    cluster.psql("CREATE TABLE tt TABLESPACE ts AS SELECT g, md5(g::text) AS h FROM generate_series(1, 50000) g");
    wait_archived(&cluster);
    let oid = cluster.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts'");
    backup(&cluster.socket_conninfo(), &env);
    cluster.psql("INSERT INTO tt SELECT g, md5(g::text) FROM generate_series(50001, 60000) g");
    let sum_sql = "SELECT count(*) || ':' || md5(string_agg(h, ',' ORDER BY g)) FROM tt";
    let want = cluster.psql(sum_sql);
    wait_archived(&cluster);

    let mapped = scratch.path("ts-mapped");
    let dir = scratch.path("r");
    let map = format!("{oid}={}", mapped.display());
    restore_ok(&env, &dir, &["--tablespace-map", &map]);
    let link = fs::read_link(dir.join("pg_tblspc").join(&oid)).unwrap();
    assert_eq!(link, mapped);
    assert!(
        fs::read_dir(&mapped).unwrap().next().is_some(),
        "the tablespace's files are in the mapped directory"
    );
    give_to_test_user(&mapped);
    let mut s = RestoredCluster::new(&dir, &[]);
    s.start();
    s.wait_promoted();
    assert_eq!(s.psql(sum_sql), want);
    assert_eq!(
        s.psql(&format!("SELECT pg_tablespace_location({oid})")),
        mapped.display().to_string()
    );
    // An OID the backup does not have is refused before writing.
    let err = restore_fails(
        &env,
        &scratch.path("r2"),
        &["--tablespace-map", "99999=/tmp/nowhere"],
    );
    assert!(err.contains("has no tablespace 99999"), "{err}");
    assert!(!scratch.path("r2").exists());
}
