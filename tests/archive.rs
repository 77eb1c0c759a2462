//! The WAL archive end to end: PostgreSQL's archive_command running walship
//! under pgbench load, to a local directory and to a real S3 server; every
//! archived segment comes back byte-identical through archive-get; and each
//! kind of bad input gets a clear error, the interface's exit code, and leaves
//! the repository as it was.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use support::s3::S3Server;
use support::scratch::{Scratch, KEY_HEX, OTHER_KEY_HEX};
use support::{run_walship, walship_bin, Cluster};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A cluster archiving with walship to `env` settings (passed on the
/// archive_command line: only non-secret settings and file paths).
fn archiving_cluster(env: &[(&str, String)]) -> Cluster {
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
        .conf("wal_keep_size = '1GB'")
        .conf("checkpoint_timeout = '1h'")
        .start()
}

/// Waits until PostgreSQL has archived everything up to the current segment.
fn wait_archived(cluster: &Cluster) -> String {
    let last = cluster.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    cluster.psql("SELECT pg_switch_wal()");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let row = cluster.psql("SELECT coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver");
        let parts: Vec<&str> = row.trim().split('|').collect();
        if parts[0] >= last.trim() {
            assert_eq!(
                parts[1],
                "0",
                "archive_command failed for {}: {}",
                parts[2],
                cluster.log()
            );
            return last.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "archiving did not reach {last}: {row}\n{}",
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The segments PostgreSQL reports as archived (archive_status/*.done) that are still in pg_wal.
fn archived_segments(cluster: &Cluster) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(cluster.pg_wal_dir().join("archive_status"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".done"))
                .map(str::to_string)
        })
        .filter(|n| n.len() == 24)
        .collect();
    names.sort();
    names
}

fn env_refs(env: &[(&str, String)]) -> Vec<(&'static str, String)> {
    env.iter().map(|(k, v)| (leak(k), v.clone())).collect()
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn walship(args: &[&str], env: &[(&'static str, String)]) -> Output {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_walship(args, &pairs)
}

/// Pushes under pgbench, then checks every archived segment comes back
/// byte-identical, info shows one timeline without gaps, verify passes.
fn archive_round_trip(env: Vec<(&'static str, String)>, scratch: &Scratch) {
    let cluster = archiving_cluster(&env);
    cluster.pgbench_init(2);
    cluster.pgbench(&["-T", "4", "-c", "2"]);
    let last = wait_archived(&cluster);
    let segments = archived_segments(&cluster);
    assert!(
        segments.len() >= 5,
        "expected several archived segments, got {segments:?}"
    );
    assert!(segments.iter().any(|s| s.as_str() == last));

    let out_dir = scratch.path("restored");
    fs::create_dir_all(&out_dir).unwrap();
    for name in &segments {
        let dest = out_dir.join(name);
        let o = walship(&["archive-get", name, dest.to_str().unwrap()], &env);
        assert!(o.status.success(), "archive-get {name}: {}", stderr(&o));
        let original = fs::read(cluster.pg_wal_dir().join(name)).unwrap();
        let restored = fs::read(&dest).unwrap();
        assert!(original == restored, "{name} differs after the round trip");
    }

    let o = walship(&["info", "--json"], &env);
    assert!(o.status.success(), "info: {}", stderr(&o));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        info["system_id"].as_str().unwrap(),
        cluster.system_id().to_string()
    );
    let tl = &info["timelines"][0];
    assert_eq!(tl["timeline"], 1);
    assert_eq!(tl["gaps"].as_array().unwrap().len(), 0, "{info}");
    assert_eq!(
        tl["last_segment"].as_str().unwrap(),
        segments.last().unwrap()
    );
    assert!(info["recoverable"]["latest_time"].is_string(), "{info}");
    assert!(info["recoverable"]["latest_lsn"].is_string(), "{info}");

    let o = walship(&["verify", "--json"], &env);
    assert!(o.status.success(), "verify: {}{}", stdout(&o), stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report["objects_checked"].as_u64().unwrap() >= segments.len() as u64);

    let o = walship(
        &[
            "archive-get",
            "0000000100000000000000FF",
            out_dir.join("x").to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "a missing segment is exit 1: {}",
        stderr(&o)
    );
    assert!(!out_dir.join("x").exists());
}

#[test]
fn archive_command_to_local_directory_under_pgbench() {
    let scratch = Scratch::new("walship-archive-");
    let repo = scratch.user_dir("repo");
    let key = scratch.key_file("key", KEY_HEX);
    let env = vec![
        ("WALSHIP_REPO", repo.display().to_string()),
        ("WALSHIP_KEY_FILE", key.display().to_string()),
    ];
    archive_round_trip(env, &scratch);
    // Repository files are private.
    let stanza = fs::metadata(repo.join("main/stanza.json")).unwrap();
    assert_eq!(stanza.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        fs::metadata(repo.join("main"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
}

#[test]
fn archive_command_to_s3_under_pgbench() {
    let scratch = Scratch::new("walship-archive-");
    let s3 = S3Server::start();
    let key = scratch.key_file("key", KEY_HEX);
    // Credentials reach archive_command through a credentials file, never its command line.
    let creds = scratch.aws_credentials(&s3);
    let env = vec![
        ("WALSHIP_REPO", format!("s3://{}/archive-test", s3.bucket())),
        ("WALSHIP_S3_ENDPOINT", s3.endpoint().to_string()),
        ("WALSHIP_S3_PATH_STYLE", "true".to_string()),
        ("WALSHIP_S3_REGION", "us-east-1".to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
        (
            "AWS_CONFIG_FILE",
            scratch.path("no-aws-config").display().to_string(),
        ),
        ("WALSHIP_KEY_FILE", key.display().to_string()),
    ];
    archive_round_trip(env_refs(&env), &scratch);
}

/// A stopped cluster's real WAL, for the bad-input tests (1 MiB segments).
struct WalSample {
    _cluster: Cluster,
    segments: Vec<(String, PathBuf)>,
}

fn wal_sample() -> WalSample {
    wal_sample_of(2)
}

/// At least `n` finished segments.
fn wal_sample_of(n: usize) -> WalSample {
    let cluster = Cluster::builder()
        .wal_segsize_mb(1)
        .conf("wal_keep_size = '1GB'")
        .start();
    cluster.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g");
    cluster.psql("SELECT pg_switch_wal()");
    for _ in 0..n {
        cluster.psql("INSERT INTO t SELECT g FROM generate_series(1, 20000) g");
        cluster.psql("SELECT pg_switch_wal()");
    }
    let dir = cluster.pg_wal_dir();
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.len() == 24)
        .collect();
    names.sort();
    // The newest segment is still being written; leave it out.
    names.pop();
    assert!(names.len() >= 2, "{names:?}");
    let segments = names
        .into_iter()
        .map(|n| (n.clone(), dir.join(n)))
        .collect();
    WalSample {
        _cluster: cluster,
        segments,
    }
}

fn fs_env(repo: &Path, key: Option<&Path>) -> Vec<(&'static str, String)> {
    let mut env = vec![("WALSHIP_REPO", repo.display().to_string())];
    if let Some(k) = key {
        env.push(("WALSHIP_KEY_FILE", k.display().to_string()));
    }
    env
}

fn push(path: &Path, env: &[(&'static str, String)]) -> Output {
    walship(&["archive-push", path.to_str().unwrap()], env)
}

/// Every file under a directory with its content, to prove "nothing changed".
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn object_path(repo: &Path, name: &str) -> PathBuf {
    repo.join("main/wal").join(&name[..8]).join(name)
}

fn get_fails_fatally(name: &str, env: &[(&'static str, String)], scratch: &Scratch, expect: &str) {
    let dest = scratch.path(&format!("get-{name}"));
    let o = walship(&["archive-get", name, dest.to_str().unwrap()], env);
    let code = o.status.code().unwrap();
    assert!(
        code >= 126,
        "archive-get must stop recovery (exit >= 126), got {code}: {}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains(expect),
        "expected `{expect}` in: {}",
        stderr(&o)
    );
    assert!(!dest.exists(), "nothing may be written on failure");
}

/// `n` segments pushed to an encrypted local directory repository: the
/// sample, the scratch directory, the repository and its environment.
fn pushed_sample(n: usize) -> (WalSample, Scratch, PathBuf, Vec<(&'static str, String)>) {
    let sample = wal_sample_of(n);
    let scratch = Scratch::new("walship-archive-");
    let repo = scratch.path("repo");
    let key = scratch.key_file("key", KEY_HEX);
    let env = fs_env(&repo, Some(&key));
    for (_, path) in &sample.segments {
        let o = push(path, &env);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    (sample, scratch, repo, env)
}

#[test]
fn tampered_objects_stop_recovery_with_the_object_named() {
    let (sample, scratch, repo, env) = pushed_sample(2);
    let (a, _) = &sample.segments[0];
    let (b, _) = &sample.segments[1];
    let pa = object_path(&repo, a);
    let pb = object_path(&repo, b);
    let good_a = fs::read(&pa).unwrap();
    let good_b = fs::read(&pb).unwrap();

    // A bit flipped in the middle.
    let mut flipped = good_a.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    fs::write(&pa, &flipped).unwrap();
    get_fails_fatally(a, &env, &scratch, a);
    let o = walship(&["verify"], &env);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains(a),
        "verify names the object: {}",
        stdout(&o)
    );

    // Truncated.
    fs::write(&pa, &good_a[..good_a.len() - 100]).unwrap();
    get_fails_fatally(a, &env, &scratch, a);

    // Two objects swapped.
    fs::write(&pa, &good_b).unwrap();
    fs::write(&pb, &good_a).unwrap();
    get_fails_fatally(a, &env, &scratch, a);
    get_fails_fatally(b, &env, &scratch, b);

    fs::write(&pa, &good_a).unwrap();
    fs::write(&pb, &good_b).unwrap();
    let dest = scratch.path("ok");
    let o = walship(&["archive-get", a, dest.to_str().unwrap()], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::read(&dest).unwrap() == fs::read(&sample.segments[0].1).unwrap());
}

/// An object that is authentic for its name (sealed with the repository's key
/// under that name) but holds another segment's bytes: the first-page check
/// refuses it before anything is written.
#[test]
fn an_authentic_object_holding_another_segment_is_not_served() {
    let (sample, scratch, repo, env) = pushed_sample(2);
    let (a, _) = &sample.segments[0];
    let (_, b_path) = &sample.segments[1];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = support::repo::open_repo(&rt, &env);
    let seg_size = r.seg_size().unwrap();
    let name = walship::pg::wal::segment::WalFileName::parse(a, seg_size).unwrap();
    let object_key = walship::repo::layout::wal_object("main", &name, seg_size);
    let (sealed, _) =
        walship::codec::encode_bytes(&object_key, &fs::read(b_path).unwrap(), r.codec()).unwrap();
    fs::write(object_path(&repo, a), sealed).unwrap();
    get_fails_fatally(a, &env, &scratch, "its first page is for LSN");
}

#[test]
fn wrong_or_missing_key_is_named_as_such() {
    let sample = wal_sample();
    let scratch = Scratch::new("walship-archive-");
    let repo = scratch.path("repo");
    let key = scratch.key_file("key", KEY_HEX);
    let other = scratch.key_file("other", OTHER_KEY_HEX);
    let (name, path) = &sample.segments[0];
    assert!(push(path, &fs_env(&repo, Some(&key))).status.success());
    let before = snapshot(&repo);

    let o = push(&sample.segments[1].1, &fs_env(&repo, Some(&other)));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("wrong key"), "{}", stderr(&o));
    get_fails_fatally(name, &fs_env(&repo, Some(&other)), &scratch, "wrong key");

    let o = push(&sample.segments[1].1, &fs_env(&repo, None));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("encrypted"), "{}", stderr(&o));
    get_fails_fatally(name, &fs_env(&repo, None), &scratch, "encrypted");

    // A key file that is not a key names the file, never its content.
    let bad = scratch.path("bad-key");
    fs::write(&bad, "not-a-key-secretvalue\n").unwrap();
    let o = push(&sample.segments[1].1, &fs_env(&repo, Some(&bad)));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("bad-key") && !stderr(&o).contains("secretvalue"),
        "{}",
        stderr(&o)
    );

    assert_eq!(
        before,
        snapshot(&repo),
        "failed pushes changed the repository"
    );
}

#[test]
fn another_clusters_wal_and_conflicting_content_are_refused() {
    let first = wal_sample();
    let second = wal_sample();
    let scratch = Scratch::new("walship-archive-");
    let repo = scratch.path("repo");
    let env = fs_env(&repo, None);
    let (name, path) = &first.segments[0];
    assert!(push(path, &env).status.success());

    // The same file again: exit 0 with a warning.
    let o = push(path, &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("identical"), "{}", stderr(&o));
    let before = snapshot(&repo);

    // Another cluster's WAL: both system ids named.
    let o = push(&second.segments[1].1, &env);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("system identifier"), "{}", stderr(&o));

    // A different segment under an existing name (same cluster's other segment, renamed).
    let imposter = scratch.path(name);
    let mut bytes = fs::read(path).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    fs::write(&imposter, &bytes).unwrap();
    let o = push(&imposter, &env);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("different content") && stderr(&o).contains("checksum"),
        "{}",
        stderr(&o)
    );

    // An unreadable source file.
    let o = push(&scratch.path("000000010000000000000042"), &env);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("000000010000000000000042"),
        "{}",
        stderr(&o)
    );

    assert_eq!(
        before,
        snapshot(&repo),
        "refused pushes changed the repository"
    );
    let dest = scratch.path("back");
    assert!(
        walship(&["archive-get", name, dest.to_str().unwrap()], &env)
            .status
            .success()
    );
    assert!(fs::read(&dest).unwrap() == fs::read(path).unwrap());
}

#[test]
fn history_and_backup_files_are_accepted() {
    let sample = wal_sample();
    let scratch = Scratch::new("walship-archive-");
    let repo = scratch.path("repo");
    let env = fs_env(&repo, None);
    assert!(push(&sample.segments[0].1, &env).status.success());
    let history = scratch.path("00000002.history");
    fs::write(&history, "1\t0/3000000\tno recovery target specified\n").unwrap();
    let o = push(&history, &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let backup = scratch.path("000000010000000000000002.00000028.backup");
    fs::write(
        &backup,
        "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n",
    )
    .unwrap();
    let o = push(&backup, &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let dest = scratch.path("h");
    let o = walship(
        &["archive-get", "00000002.history", dest.to_str().unwrap()],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&history).unwrap());
}

#[test]
fn full_disk_in_the_repository_fails_cleanly() {
    let sample = wal_sample();
    let scratch = Scratch::new("walship-archive-");
    let mnt = scratch.path("small");
    fs::create_dir_all(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1200k", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "this test mounts a small tmpfs and needs root (CI runs as root)"
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let repo = mnt.join("repo");
    // Uncompressed, so the second 1 MiB segment cannot fit.
    let mut env = fs_env(&repo, None);
    env.push(("WALSHIP_COMPRESS", "none".to_string()));
    let o = push(&sample.segments[0].1, &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = snapshot(&repo);
    let o = push(&sample.segments[1].1, &env);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("disk full"), "{}", stderr(&o));
    assert_eq!(
        before,
        snapshot(&repo),
        "a failed push left something behind"
    );
}

#[test]
fn s3_server_down_then_back() {
    let sample = wal_sample();
    let scratch = Scratch::new("walship-archive-");
    let mut s3 = S3Server::start();
    let env = vec![
        ("WALSHIP_REPO", format!("s3://{}/down-test", s3.bucket())),
        ("WALSHIP_S3_ENDPOINT", s3.endpoint().to_string()),
        ("WALSHIP_S3_PATH_STYLE", "true".to_string()),
        ("WALSHIP_S3_REGION", "us-east-1".to_string()),
        ("AWS_ACCESS_KEY_ID", s3.access_key().to_string()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key().to_string()),
    ];
    let (first, first_path) = &sample.segments[0];
    assert!(push(first_path, &env).status.success());
    s3.stop();
    let o = push(&sample.segments[1].1, &env);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    get_fails_fatally(first, &env, &scratch, first);
    s3.start_again();
    // PostgreSQL's retry succeeds.
    let o = push(&sample.segments[1].1, &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let dest = scratch.path("back");
    let o = walship(
        &["archive-get", &sample.segments[1].0, dest.to_str().unwrap()],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::read(&dest).unwrap() == fs::read(&sample.segments[1].1).unwrap());
}

#[test]
fn archive_get_prefetches_and_never_serves_a_bad_spool_entry() {
    let (sample, scratch, repo, mut env) = pushed_sample(5);
    let spool = scratch.path("spool");
    env.push(("WALSHIP_SPOOL", spool.display().to_string()));
    env.push(("WALSHIP_PREFETCH", "3".to_string()));
    let seg = |i: usize| sample.segments[i].0.clone();
    let get = |i: usize, env: &[(&'static str, String)]| {
        let dest = scratch.path(&format!("got-{}", seg(i)));
        let o = walship(&["archive-get", &seg(i), dest.to_str().unwrap()], env);
        assert!(o.status.success(), "archive-get {}: {}", seg(i), stderr(&o));
        assert!(
            fs::read(&dest).unwrap() == fs::read(&sample.segments[i].1).unwrap(),
            "{} differs",
            seg(i)
        );
        o
    };

    get(0, &env);
    // The worker fills the spool with the next three segments in the background.
    // Entries are verified, decoded segments named `<segment>.<crc32c>`.
    let spooled = |name: &str| -> Option<PathBuf> {
        let sub = fs::read_dir(&spool).ok()?.flatten().next()?.path();
        fs::read_dir(sub)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{name}.")) && !n.ends_with(".tmp"))
            })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while (1..=3).any(|i| spooled(&seg(i)).is_none()) {
        assert!(Instant::now() < deadline, "prefetch did not fill the spool");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A corrupt spool entry is discarded, and the segment read from the repository.
    let entry = spooled(&seg(1)).unwrap();
    let mut bytes = fs::read(&entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&entry, &bytes).unwrap();
    // Segment 2 now exists only in the spool: serving it proves the spool is used.
    fs::remove_file(object_path(&repo, &seg(2))).unwrap();
    let o = get(1, &env);
    assert!(stderr(&o).contains("discarded"), "{}", stderr(&o));
    get(2, &env);

    // An entry that holds another segment's object fails verification too.
    let deadline = Instant::now() + Duration::from_secs(30);
    while spooled(&seg(3)).is_none() || spooled(&seg(4)).is_none() {
        assert!(
            Instant::now() < deadline,
            "prefetch did not refill the spool"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (entry3, entry4) = (spooled(&seg(3)).unwrap(), spooled(&seg(4)).unwrap());
    assert!(
        fs::read(&entry4).unwrap() == fs::read(&sample.segments[4].1).unwrap(),
        "a spool entry is the plain segment"
    );
    fs::copy(&entry4, &entry3).unwrap();
    let o = get(3, &env);
    assert!(stderr(&o).contains("discarded"), "{}", stderr(&o));

    // Segment 4's entry, CRC and all, under segment 3's name: the page header
    // check refuses it (the CRC alone would not).
    let crc4 = entry4.extension().unwrap().to_str().unwrap().to_string();
    let wrong = entry4.with_file_name(format!("{}.{crc4}", seg(3)));
    fs::rename(&entry4, &wrong).unwrap();
    let o = get(3, &env);
    assert!(stderr(&o).contains("discarded"), "{}", stderr(&o));
    assert!(!wrong.exists(), "the wrong entry was not removed");
}
