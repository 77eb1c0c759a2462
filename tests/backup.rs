//! `walship backup` end to end against real PostgreSQL (and the real S3
//! server): the stored file list and checksums equal the server's
//! backup_manifest, the backup becomes visible only with its WAL, unchanged
//! data is stored once, `verify` decodes every chunk, and each kind of bad
//! input fails with a clear error and publishes nothing.

mod support;

use support::scratch::{Scratch, KEY_HEX};

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::repo::{damage_bundled_chunk, open_repo};
use support::s3::S3Server;
use support::{run_walship, walship_bin, Cluster};
use walship::config::{FlagValues, Settings};
use walship::pg::backup_manifest::{crc32c_manifest_hex, ServerManifest};
use walship::repo::backup::{BackupManifest, FileKind};
use walship::repo::Repository;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn walship(args: &[&str], env: &[(String, String)]) -> Output {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_walship(args, &pairs)
}

/// A cluster whose archive_command is `walship archive-push` with `env`
/// (non-secret settings and file paths only).
fn archiving_cluster(env: &[(String, String)], checksums: bool) -> Cluster {
    let assignments: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let command = format!(
        "{} {} archive-push %p",
        assignments.join(" "),
        walship_bin().display()
    );
    Cluster::builder()
        .data_checksums(checksums)
        .conf("archive_mode = on")
        .conf(format!(
            "archive_command = '{}'",
            command.replace('\'', "''")
        ))
        .conf("checkpoint_timeout = '1h'")
        .start()
}

/// Switches WAL and waits until the archiver stored the segment (so the
/// stanza exists, created by the PostgreSQL user, before a backup runs).
fn wait_archived(cluster: &Cluster) {
    let last = cluster.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    cluster.psql("SELECT pg_switch_wal()");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let row = cluster
            .psql("SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver");
        let parts: Vec<&str> = row.trim().split('|').collect();
        if parts[0] >= last.as_str() {
            assert_eq!(parts[1], "0", "archive_command failed: {}", cluster.log());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "archiving stuck: {row}\n{}",
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `walship backup --json`; the id on success, the output otherwise.
fn backup(env: &[(String, String)], label: &str) -> Result<String, Output> {
    let o = walship(&["backup", "--json", "--label", label], env);
    if !o.status.success() {
        return Err(o);
    }
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "backup --json printed {:?}: {e}",
            String::from_utf8_lossy(&o.stdout)
        )
    });
    Ok(doc["id"].as_str().expect("an id").to_string())
}

fn backup_ok(env: &[(String, String)], label: &str) -> String {
    backup(env, label).unwrap_or_else(|o| panic!("backup {label} failed: {}", stderr(&o)))
}

fn info(env: &[(String, String)]) -> serde_json::Value {
    let o = walship(&["info", "--json"], env);
    assert!(o.status.success(), "info: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The backup's file list and checksums equal the server's backup_manifest
/// kept with it, and every file's chunks decode back to its size and CRC.
fn check_against_server_manifest(
    rt: &tokio::runtime::Runtime,
    repo: &Arc<Repository>,
    m: &BackupManifest,
) {
    let raw = rt
        .block_on(repo.load_server_manifest(&m.id))
        .unwrap()
        .expect("server manifest kept");
    let server = ServerManifest::parse(&raw).unwrap();
    let ours: std::collections::BTreeMap<&str, _> = m
        .files
        .iter()
        .filter(|f| f.kind == FileKind::File)
        .map(|f| (f.path.as_str(), f))
        .collect();
    for f in &server.files {
        let mine = ours
            .get(f.path.as_str())
            .unwrap_or_else(|| panic!("{} missing from our manifest", f.path));
        assert_eq!(mine.size, f.size, "{}", f.path);
        assert_eq!(f.checksum_algorithm.as_deref(), Some("CRC32C"));
        let crc = mine
            .crc32c
            .unwrap_or_else(|| panic!("{} has no CRC", f.path));
        assert_eq!(
            Some(crc32c_manifest_hex(crc)),
            f.checksum.clone(),
            "{}",
            f.path
        );
    }
    for path in ours.keys() {
        assert!(
            server.file(path).is_some(),
            "{path} is not in the server's manifest"
        );
    }
    assert_eq!(server.files.len(), ours.len());
    // The content: a sample of files decoded from their chunks.
    let mut checked = 0;
    for f in ours.values().filter(|f| f.size > 0).step_by(7) {
        let mut crc = 0u32;
        let mut len = 0u64;
        for c in &f.chunks {
            let plain = rt.block_on(repo.read_chunk(c)).unwrap();
            crc = crc32c::crc32c_append(crc, &plain);
            len += plain.len() as u64;
        }
        assert_eq!(
            (len, Some(crc)),
            (f.size, f.crc32c),
            "{} from its chunks",
            f.path
        );
        checked += 1;
    }
    assert!(checked > 10);
}

/// The one big scenario (one cluster, several backups): data checksums on,
/// a tablespace, pgbench data, WAL through archive-push; then deduplication
/// measured for an unchanged cluster and after updates of 1% of the rows.
#[test]
fn backup_matches_the_server_manifest_and_deduplicates() {
    let scratch = Scratch::new("walship-backup-");
    let repo_dir = scratch.user_dir("repo");
    let key = scratch.key_file("key", KEY_HEX);
    let env = vec![
        ("WALSHIP_REPO".to_string(), repo_dir.display().to_string()),
        ("WALSHIP_KEY_FILE".to_string(), key.display().to_string()),
    ];
    let cluster = archiving_cluster(&env, true);
    let mut benv = env.clone();
    benv.push(("WALSHIP_PG".into(), cluster.conninfo()));
    benv.push(("WALSHIP_BACKUP_WAL_TIMEOUT".into(), "120".into()));
    assert_eq!(cluster.psql("SHOW data_checksums"), "on");

    let ts_dir = scratch.user_dir("tablespace");
    cluster.psql(&format!(
        "CREATE TABLESPACE extra LOCATION '{}'",
        ts_dir.display()
    ));
    cluster.psql("CREATE TABLE in_ts TABLESPACE extra AS SELECT g, md5(g::text) AS h FROM generate_series(1, 50000) g");
    let scale = 10;
    cluster.pgbench_init(scale);
    cluster.psql("VACUUM (FREEZE, ANALYZE)");
    cluster.psql("CHECKPOINT");
    wait_archived(&cluster);

    let started = Instant::now();
    let first = backup_ok(&benv, "first");
    let first_secs = started.elapsed().as_secs_f64();
    let rt = runtime();
    let repo = open_repo(&rt, &env);
    let m1 = rt
        .block_on(repo.load_backup(&first))
        .unwrap()
        .expect("first backup visible");
    assert_eq!(m1.label.as_deref(), Some("first"));
    assert!(m1.data_checksums);
    assert_eq!(m1.tablespaces.len(), 1);
    assert_eq!(m1.tablespaces[0].location, ts_dir.display().to_string());
    let oid = m1.tablespaces[0].oid;
    assert!(
        m1.files
            .iter()
            .any(|f| f.path == format!("pg_tblspc/{oid}")
                && matches!(f.kind, FileKind::Symlink { .. })),
        "the tablespace link is in the backup"
    );
    assert!(
        m1.files
            .iter()
            .any(|f| f.path.starts_with(&format!("pg_tblspc/{oid}/PG_")) && f.size > 1 << 20),
        "the tablespace's files are in the backup"
    );
    check_against_server_manifest(&rt, &repo, &m1);
    eprintln!(
        "first backup: {} files, {} original bytes, {} stored, {} new, {:.1} s",
        m1.files.len(),
        m1.original_bytes,
        m1.stored_bytes,
        m1.new_bytes,
        first_secs
    );
    assert!(
        m1.stored_bytes < m1.original_bytes,
        "lz4 shrinks pgbench data"
    );

    // info lists it with the interface's fields.
    let doc = info(&env);
    let b = &doc["backups"][0];
    assert_eq!(b["id"], first.as_str());
    assert_eq!(b["label"], "first");
    assert_eq!(b["timeline"], 1);
    assert_eq!(b["start_lsn"], m1.start_lsn.to_string().as_str());
    assert_eq!(b["stop_lsn"], m1.stop_lsn.to_string().as_str());
    for field in ["start_time", "stop_time"] {
        assert!(b[field].as_str().unwrap().ends_with('Z'), "{field}: {b}");
    }
    assert_eq!(b["original_bytes"], m1.original_bytes);
    assert_eq!(b["stored_bytes"], m1.stored_bytes);
    assert_eq!(b["new_bytes"], m1.new_bytes);

    // An unchanged cluster backed up again costs almost nothing.
    let second = backup_ok(&benv, "unchanged");
    let m2 = rt.block_on(repo.load_backup(&second)).unwrap().unwrap();
    check_against_server_manifest(&rt, &repo, &m2);
    let pct2 = 100.0 * m2.new_bytes as f64 / m1.stored_bytes as f64;
    eprintln!(
        "unchanged cluster: {} new bytes = {pct2:.2}% of the first backup's {}",
        m2.new_bytes, m1.stored_bytes
    );
    assert!(pct2 <= 2.0, "second backup stored {pct2:.2}% of the first");

    // UPDATEs of 1% of the rows, in a contiguous range of aid (see docs/backup.md).
    let rows: u64 = 100_000 * scale as u64;
    let range = rows / 100;
    let script = scratch.path("one_percent.sql");
    fs::write(
        &script,
        format!("\\set aid random(1, {range})\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n"),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    cluster.pgbench(&[
        "-n",
        "-c",
        "2",
        "-t",
        &(range / 2).to_string(),
        "-f",
        script.to_str().unwrap(),
    ]);
    let third = backup_ok(&benv, "one percent");
    let m3 = rt.block_on(repo.load_backup(&third)).unwrap().unwrap();
    let pct3 = 100.0 * m3.new_bytes as f64 / m1.stored_bytes as f64;
    eprintln!(
        "after updating 1% of the rows (contiguous aid range): {} new bytes = {pct3:.2}%",
        m3.new_bytes
    );
    assert!(pct3 <= 15.0, "third backup stored {pct3:.2}% of the first");

    // Reported, not asserted: the same number of updates spread over the whole table.
    fs::write(
        &script,
        format!("\\set aid random(1, {rows})\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n"),
    )
    .unwrap();
    cluster.pgbench(&[
        "-n",
        "-c",
        "2",
        "-t",
        &(range / 2).to_string(),
        "-f",
        script.to_str().unwrap(),
    ]);
    let fourth = backup_ok(&benv, "uniform");
    let m4 = rt.block_on(repo.load_backup(&fourth)).unwrap().unwrap();
    eprintln!(
        "after updating 1% of the rows uniformly at random: {} new bytes = {:.2}% (page granularity)",
        m4.new_bytes,
        100.0 * m4.new_bytes as f64 / m1.stored_bytes as f64
    );

    // verify decodes every chunk of every backup and finds the WAL they need.
    let o = walship(&["verify", "--json"], &env);
    assert!(
        o.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["backups_checked"], 4);
    let distinct: std::collections::HashSet<&str> = [&m1, &m2, &m3, &m4]
        .iter()
        .flat_map(|m| m.chunks().map(|c| c.id.as_str()))
        .collect();
    assert_eq!(
        report["chunks_checked"].as_u64().unwrap(),
        distinct.len() as u64
    );

    // A damaged chunk is found and named.
    let victim = m1.files.iter().find(|f| f.size >= 1 << 20).unwrap().chunks[0].clone();
    damage_bundled_chunk(&repo_dir, &victim);
    let o = walship(&["verify", "--json"], &env);
    assert_eq!(o.status.code(), Some(1), "verify must fail: {}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let problems = report["backup_problems"].to_string();
    assert!(problems.contains(&victim.id), "{problems}");
}

/// Backup and verify through the real S3 server (WAL archived there too).
#[test]
fn backup_round_trip_through_s3() {
    let scratch = Scratch::new("walship-backup-");
    let s3 = S3Server::start();
    let key = scratch.key_file("key", KEY_HEX);
    // archive_command gets the credentials from a file, never its command line.
    let creds = scratch.aws_credentials(&s3);
    let mut env: Vec<(String, String)> = s3
        .env("backup-test")
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AWS_"))
        .collect();
    env.push((
        "AWS_SHARED_CREDENTIALS_FILE".into(),
        creds.display().to_string(),
    ));
    env.push((
        "AWS_CONFIG_FILE".into(),
        scratch.path("no-aws-config").display().to_string(),
    ));
    env.push(("WALSHIP_KEY_FILE".into(), key.display().to_string()));
    let cluster = archiving_cluster(&env, false);
    cluster.pgbench_init(2);
    wait_archived(&cluster);
    let mut benv = env.clone();
    benv.push(("WALSHIP_PG".into(), cluster.conninfo()));
    let id = backup_ok(&benv, "s3");
    let id2 = backup_ok(&benv, "s3 again");

    let o = walship(&["verify", "--json"], &env);
    assert!(
        o.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["backups_checked"], 2);

    let rt = runtime();
    let mut lib_env = s3.env("backup-test");
    lib_env.push(("WALSHIP_KEY_FILE".into(), key.display().to_string()));
    let repo = open_repo(&rt, &lib_env);
    let ids: Vec<String> = rt
        .block_on(repo.list_backups())
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, vec![id.clone(), id2]);
    let m = rt.block_on(repo.load_backup(&id)).unwrap().unwrap();
    check_against_server_manifest(&rt, &repo, &m);
    // Bundled chunks were read with ranged GETs above; check one explicitly.
    let bundled = m
        .chunks()
        .find(|c| matches!(c.at, walship::repo::backup::ChunkLocation::Bundle { .. }))
        .expect("new chunks are bundled");
    assert_eq!(
        rt.block_on(repo.read_chunk(bundled)).unwrap().len(),
        bundled.len as usize
    );
}

/// `Storage::get_range` on both backends: exact bytes, missing object, and a
/// range past the end refused (never a short read).
#[test]
fn ranged_reads_on_fs_and_s3() {
    let rt = runtime();
    let scratch = Scratch::new("walship-backup-");
    let s3 = S3Server::start();
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let fs_loc = walship::config::RepoLocation::Fs(scratch.path("r"));
    for (name, loc, settings) in [
        ("fs", fs_loc, walship::config::S3Settings::default()),
        ("s3", s3.location("ranges"), s3.settings()),
    ] {
        rt.block_on(async {
            let st = walship::storage::Storage::open(&loc, &settings)
                .await
                .unwrap();
            st.put(
                "a/b",
                bytes::Bytes::from(body.clone()),
                walship::storage::PutMode::Overwrite,
            )
            .await
            .unwrap();
            let got = st.get_range("a/b", 1234, 5000).await.unwrap().unwrap();
            assert_eq!(&got[..], &body[1234..6234], "{name}");
            let tail = st.get_range("a/b", 99_000, 1000).await.unwrap().unwrap();
            assert_eq!(&tail[..], &body[99_000..], "{name}");
            assert!(
                st.get_range("a/missing", 0, 10).await.unwrap().is_none(),
                "{name}"
            );
            let e = st.get_range("a/b", 99_999, 10).await.unwrap_err();
            assert!(e.to_string().contains("a/b"), "{name}: {e}");
        });
    }
}

/// No WAL arrives (archiving off): the backup fails after the timeout naming
/// the missing segment and why, and nothing becomes visible.
#[test]
fn backup_fails_naming_the_segment_when_no_wal_arrives() {
    let scratch = Scratch::new("walship-backup-");
    let repo_dir = scratch.user_dir("repo");
    let cluster = Cluster::builder().conf("archive_mode = off").start();
    let env = vec![
        ("WALSHIP_REPO".to_string(), repo_dir.display().to_string()),
        ("WALSHIP_PG".to_string(), cluster.conninfo()),
        ("WALSHIP_BACKUP_WAL_TIMEOUT".to_string(), "3".to_string()),
    ];
    let start_segment = cluster.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    let o = backup(&env, "no wal").expect_err("the backup must fail");
    let err = stderr(&o);
    eprintln!("walship said: {err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("WAL segment 0000000"), "{err}");
    assert!(
        err.contains("archive_command") && err.contains("walship stream"),
        "{err}"
    );
    assert!(
        err.contains("did not reach the repository within 3 s"),
        "{err}"
    );
    // The segment named is the backup's first: at or after the one current before it.
    let at = err.find("WAL segment ").unwrap() + "WAL segment ".len();
    let named = &err[at..at + 24];
    assert!(named >= start_segment.as_str(), "{named} < {start_segment}");
    assert!(info(&env)["backups"].as_array().unwrap().is_empty());
}

/// archive_mode = on but archive_command fails: the server does not wait
/// for its archiver (NOWAIT); walship's own wait names the segment that
/// never reached the repository.
#[test]
fn backup_fails_when_archive_command_fails() {
    let scratch = Scratch::new("walship-backup-");
    let repo_dir = scratch.user_dir("repo");
    let cluster = Cluster::builder()
        .conf("archive_mode = on")
        .conf("archive_command = 'false'")
        .start();
    let env = vec![
        ("WALSHIP_REPO".to_string(), repo_dir.display().to_string()),
        ("WALSHIP_PG".to_string(), cluster.conninfo()),
        ("WALSHIP_BACKUP_WAL_TIMEOUT".to_string(), "3".to_string()),
    ];
    let o = backup(&env, "archiver broken").expect_err("the backup must fail");
    let err = stderr(&o);
    eprintln!("walship said: {err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("WAL segment 0000000"), "{err}");
    assert!(
        err.contains("did not reach the repository within 3 s"),
        "{err}"
    );
    assert!(err.contains("archive_command"), "{err}");
    assert!(info(&env)["backups"].as_array().unwrap().is_empty());
}

/// The walsender is terminated mid-stream: a clear error, nothing visible.
#[test]
fn backup_fails_cleanly_when_the_connection_drops() {
    let scratch = Scratch::new("walship-backup-");
    let repo_dir = scratch.user_dir("repo");
    let cluster = Cluster::builder().conf("archive_mode = off").start();
    cluster.pgbench_init(2);
    let env = vec![
        ("WALSHIP_REPO".to_string(), repo_dir.display().to_string()),
        ("WALSHIP_PG".to_string(), cluster.conninfo()),
        // 1 MiB/s: the ~30 MB cluster takes long enough to be caught mid-stream.
        ("WALSHIP_BACKUP_MAX_RATE".to_string(), "1024".to_string()),
    ];
    let bin = walship_bin();
    let mut child = std::process::Command::new(&bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("WALSHIP_") || k.starts_with("PG") {
            child.env_remove(k);
        }
    }
    let child = child
        .args(["backup", "--json"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let phase = cluster.psql("SELECT coalesce(max(phase), '') || '|' || coalesce(max(backup_streamed), 0) FROM pg_stat_progress_basebackup");
        let (p, streamed) = phase.split_once('|').unwrap();
        if p == "streaming database files" && streamed.parse::<u64>().unwrap() > 1 << 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backup never started streaming: {phase}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed =
        cluster.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_progress_basebackup");
    assert_eq!(killed, "1");
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    eprintln!("walship said: {err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        o.stdout.is_empty(),
        "no id printed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(err.contains("nothing was published"), "{err}");
    assert!(err.contains("receiving the base backup"), "{err}");
    assert!(info(&env)["backups"].as_array().unwrap().is_empty());
}

/// A role without REPLICATION is refused with the reason and the fix.
#[test]
fn backup_refused_without_replication_privilege() {
    let scratch = Scratch::new("walship-backup-");
    let repo_dir = scratch.user_dir("repo");
    let cluster = Cluster::new();
    cluster.psql("CREATE ROLE plain LOGIN");
    let env = vec![
        ("WALSHIP_REPO".to_string(), repo_dir.display().to_string()),
        (
            "WALSHIP_PG".to_string(),
            format!(
                "host=127.0.0.1 port={} user=plain dbname=postgres",
                cluster.port()
            ),
        ),
    ];
    let o = backup(&env, "x").expect_err("must be refused");
    let err = stderr(&o);
    eprintln!("walship said: {err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("replication"), "{err}");
    assert!(err.contains("REPLICATION attribute"), "{err}");
    assert!(!repo_dir.join("main/backups").exists());
}

/// max_wal_senders = 1 and the one sender held by another connection.
#[test]
fn backup_refused_when_wal_senders_are_exhausted() {
    let scratch = Scratch::new("walship-backup-");
    let repo_dir = scratch.user_dir("repo");
    let cluster = Cluster::builder().max_wal_senders(1).start();
    let rt = runtime();
    let cfg = walship::pg::conninfo::ConnConfig::parse(&cluster.conninfo()).unwrap();
    let holder = rt
        .block_on(walship::pg::conn::ReplicationConnection::connect(&cfg))
        .unwrap();
    let env = vec![
        ("WALSHIP_REPO".to_string(), repo_dir.display().to_string()),
        ("WALSHIP_PG".to_string(), cluster.conninfo()),
    ];
    let o = backup(&env, "x").expect_err("must be refused");
    let err = stderr(&o);
    eprintln!("walship said: {err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("max_wal_senders"), "{err}");
    drop(holder);
    assert!(!repo_dir.join("main/backups").exists());
}

/// The repository cannot take the chunks: `chunks/` and `bundles/` are
/// regular files, so every chunk write fails with ENOTDIR (root cannot
/// override that, unlike permission bits).
#[test]
fn backup_fails_when_the_repository_is_unwritable() {
    let scratch = Scratch::new("walship-backup-");
    let repo_dir = scratch.user_dir("repo");
    let cluster = Cluster::new();
    cluster.pgbench_init(1);
    let env = vec![
        ("WALSHIP_REPO".to_string(), repo_dir.display().to_string()),
        ("WALSHIP_PG".to_string(), cluster.conninfo()),
    ];
    let o = walship(&["init"], &env);
    assert!(o.status.success(), "init: {}", stderr(&o));
    fs::write(repo_dir.join("main/chunks"), b"not a directory").unwrap();
    fs::write(repo_dir.join("main/bundles"), b"not a directory").unwrap();
    let o = backup(&env, "x").expect_err("must fail");
    let err = stderr(&o);
    eprintln!("walship said: {err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("main/chunks") || err.contains("main/bundles"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    assert!(!repo_dir.join("main/backups").exists());
}

/// The WAL wait: `[backup] wal_timeout` in the config file, overridden by
/// `WALSHIP_BACKUP_WAL_TIMEOUT`, 300 s by default; garbage is refused by name.
#[test]
fn wal_timeout_setting() {
    let scratch = Scratch::new("walship-backup-");
    let conf = scratch.path("walship.toml");
    fs::write(&conf, "repo = \"/tmp/x\"\n[backup]\nwal_timeout = 7\n").unwrap();
    let flags = FlagValues {
        config: Some(conf.clone()),
        ..Default::default()
    };
    let none = |_: &str| None;
    let s = Settings::resolve_with(&flags, &none).unwrap();
    assert_eq!(s.backup_wal_timeout, Duration::from_secs(7));
    let env = |k: &str| (k == "WALSHIP_BACKUP_WAL_TIMEOUT").then(|| "42".to_string());
    let s = Settings::resolve_with(&flags, &env).unwrap();
    assert_eq!(s.backup_wal_timeout, Duration::from_secs(42));
    let s = Settings::resolve_with(&FlagValues::default(), &none).unwrap();
    assert_eq!(s.backup_wal_timeout, Duration::from_secs(300));
    let bad = |k: &str| (k == "WALSHIP_BACKUP_WAL_TIMEOUT").then(|| "soon".to_string());
    let e = Settings::resolve_with(&flags, &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("WALSHIP_BACKUP_WAL_TIMEOUT"), "{e}");
}
