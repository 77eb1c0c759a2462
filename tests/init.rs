//! `walship init` and `walship check` against real clusters: the stanza
//! records the live cluster's identity, init is idempotent for the same
//! cluster and refuses another one; check reports the server's identity.

mod support;

use support::{run_walship, Cluster};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn init_records_the_cluster_and_refuses_another() {
    let first = Cluster::builder().wal_segsize_mb(1).start();
    let second = Cluster::new();
    let repo = tempfile::tempdir().unwrap();
    let repo_s = repo.path().to_str().unwrap();

    let o = run_walship(
        &["init"],
        &[
            ("WALSHIP_REPO", repo_s),
            ("WALSHIP_PG", &first.socket_conninfo()),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("created"));
    let stanza: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.path().join("main/stanza.json")).unwrap())
            .unwrap();
    assert_eq!(
        stanza["system_id"].as_str().unwrap(),
        first.system_id().to_string()
    );
    assert_eq!(
        stanza["pg_version"].as_u64().unwrap(),
        u64::from(first.server_version_num())
    );
    assert_eq!(stanza["wal_seg_size"].as_u64().unwrap(), 1 << 20);

    // Idempotent for the same cluster.
    let o = run_walship(
        &["init"],
        &[
            ("WALSHIP_REPO", repo_s),
            ("WALSHIP_PG", &first.socket_conninfo()),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("already exists"));

    // Another cluster is refused, naming both system identifiers.
    let o = run_walship(
        &["init"],
        &[
            ("WALSHIP_REPO", repo_s),
            ("WALSHIP_PG", &second.socket_conninfo()),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&first.system_id().to_string())
            && err.contains(&second.system_id().to_string()),
        "{err}"
    );

    // The --stanza flag keeps clusters apart in one repository.
    let o = run_walship(
        &["--stanza", "other", "init"],
        &[
            ("WALSHIP_REPO", repo_s),
            ("WALSHIP_PG", &second.socket_conninfo()),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(repo.path().join("other/stanza.json").exists());
}

#[test]
fn check_reports_the_servers_identity() {
    let cluster = Cluster::new();
    let o = run_walship(
        &["check", "--json", "--stream-seconds", "1"],
        &[("WALSHIP_PG", &cluster.socket_conninfo())],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        report["system_id"].as_str().unwrap(),
        cluster.system_id().to_string()
    );
    assert_eq!(
        report["server_version"].as_u64().unwrap(),
        u64::from(cluster.server_version_num())
    );
    assert!(
        report["streamed"]["wal_bytes"].as_u64().unwrap() > 0,
        "{report}"
    );
}

#[test]
fn settings_errors_name_the_setting() {
    let o = run_walship(&["info"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--repo"), "{}", stderr(&o));

    let o = run_walship(&["--pg", "host=x password=hunter2", "check"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--pg") && !stderr(&o).contains("hunter2"),
        "{}",
        stderr(&o)
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("walship.toml");
    std::fs::write(&cfg, "repo = \"/x\"\nbogus_key = 1\n").unwrap();
    let o = run_walship(&["info"], &[("WALSHIP_CONFIG", cfg.to_str().unwrap())]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bogus_key"), "{}", stderr(&o));

    // archive-get never reports "not found" for a configuration error.
    let o = run_walship(
        &["archive-get", "000000010000000000000001", "/tmp/x"],
        &[("WALSHIP_COMPRESS", "zstd")],
    );
    assert!(o.status.code().unwrap() >= 126, "{}", stderr(&o));
}
