//! BASE_BACKUP against real PostgreSQL clusters: the event stream, the tar
//! reader and the manifest check (`walship::pg::{basebackup, tar,
//! backup_manifest}`).
//!
//! The server binaries come from `WALSHIP_PG_BIN` (default Debian's 15): 13
//! and 14 speak the old form (one COPY per tablespace), 15+ the typed one.
//! With `WALSHIP_SAVE_MANIFEST=PATH` the first backup's server manifest is
//! written to PATH (how `fixtures/backup_manifest/` was made).

mod support;

use support::pg::give_to_test_user;
use support::repl::connect;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use support::pg::Cluster;
use walship::pg::backup_manifest::{FileChecker, ServerManifest};
use walship::pg::basebackup::{
    BackupEvent, BaseBackupOptions, EntryHeader, EntryKind, TablespaceInfo,
};
use walship::pg::conn::ReplicationConnection;
use walship::pg::tar::MAX_DATA_PIECE;
use walship::pg::wal::Lsn;
use walship::pg::PgError;

/// Upper bound for any single wait on the server.
const WAIT: Duration = Duration::from_secs(120);

/// An archive member as seen by the test: its archive and path.
type Key = (Option<u32>, String);

/// Everything a backup delivered, checked for well-formedness on the way.
struct Collected {
    start: (Lsn, u32),
    stop: (Lsn, u32),
    tablespaces: Vec<TablespaceInfo>,
    archives: Vec<(Option<u32>, String)>,
    entries: BTreeMap<Key, EntryHeader>,
    /// Contents of the files `keep` selected.
    kept: BTreeMap<Key, Vec<u8>>,
    manifest: Vec<u8>,
    checker: FileChecker,
    progress: Vec<(u64, Option<u64>)>,
    largest_piece: usize,
    conn: ReplicationConnection,
}

/// Runs a backup to its end, asserting the event grammar: `Started`,
/// `Tablespaces`, archives of entries, manifest, `Finished`, then `None`.
async fn collect(
    conn: ReplicationConnection,
    opts: &BaseBackupOptions,
    keep: &dyn Fn(&Key) -> bool,
) -> Result<Collected, PgError> {
    let mut stream = tokio::time::timeout(WAIT, conn.base_backup(opts))
        .await
        .expect("BASE_BACKUP start timed out")?;
    let mut start = None;
    let mut tablespaces = None;
    let mut archive: Option<Option<u32>> = None;
    let mut archives = Vec::new();
    let mut entries = BTreeMap::new();
    let mut kept = BTreeMap::new();
    let mut manifest = Vec::new();
    let mut checker = FileChecker::new();
    let mut progress = Vec::new();
    let mut largest_piece = 0;
    // (key, declared size, bytes so far, keep?)
    let mut open: Option<(Key, u64, u64, bool)> = None;
    let mut stop = None;
    loop {
        let event = tokio::time::timeout(WAIT, stream.next_event())
            .await
            .expect("no backup event within the time limit")?;
        let Some(event) = event else { break };
        checker.observe(&event);
        assert!(stop.is_none(), "event after Finished: {event:?}");
        match event {
            BackupEvent::Started {
                start_lsn,
                timeline,
            } => {
                assert!(start.is_none() && tablespaces.is_none());
                start = Some((start_lsn, timeline));
            }
            BackupEvent::Tablespaces(t) => {
                assert!(start.is_some() && tablespaces.is_none());
                tablespaces = Some(t);
            }
            BackupEvent::ArchiveStart {
                tablespace_oid,
                name,
            } => {
                assert!(tablespaces.is_some() && archive.is_none() && manifest.is_empty());
                archive = Some(tablespace_oid);
                archives.push((tablespace_oid, name));
            }
            BackupEvent::Entry(h) => {
                let oid = archive.expect("entry outside an archive");
                assert!(open.is_none(), "entry {} inside another entry", h.path);
                let key = (oid, h.path.clone());
                let k = keep(&key);
                open = Some((key.clone(), h.size, 0, k));
                if k {
                    kept.insert(key.clone(), Vec::new());
                }
                assert!(
                    entries.insert(key, h).is_none(),
                    "an entry came twice in one archive"
                );
            }
            BackupEvent::Data(d) => {
                let (key, _, got, k) = open.as_mut().expect("data outside an entry");
                largest_piece = largest_piece.max(d.len());
                *got += d.len() as u64;
                if *k {
                    kept.get_mut(key).unwrap().extend_from_slice(&d);
                }
            }
            BackupEvent::EntryEnd => {
                let (key, size, got, _) = open.take().expect("EntryEnd without entry");
                assert_eq!(size, got, "{key:?}: declared size and content differ");
            }
            BackupEvent::ArchiveEnd => {
                assert!(open.is_none());
                archive.take().expect("ArchiveEnd outside an archive");
            }
            BackupEvent::Manifest(piece) => {
                assert!(archive.is_none(), "manifest inside an archive");
                manifest.extend_from_slice(&piece);
            }
            BackupEvent::Progress {
                done_bytes,
                total_bytes,
            } => {
                assert!(open.as_ref().is_none_or(|o| o.2 == 0 || o.1 == o.2));
                progress.push((done_bytes, total_bytes));
            }
            BackupEvent::Finished { stop_lsn, timeline } => {
                assert!(archive.is_none() && open.is_none());
                stop = Some((stop_lsn, timeline));
            }
        }
    }
    // After the end, the stream stays ended.
    assert!(stream.next_event().await.unwrap().is_none());
    let conn = stream.finish().await?;
    Ok(Collected {
        start: start.expect("no Started event"),
        stop: stop.expect("no Finished event"),
        tablespaces: tablespaces.expect("no Tablespaces event"),
        archives,
        entries,
        kept,
        manifest,
        checker,
        progress,
        largest_piece,
        conn,
    })
}

/// Connects once the server has released the single WAL sender slot of a
/// connection just dropped.
async fn connect_when_free(c: &Cluster) -> ReplicationConnection {
    let mut last = None;
    for _ in 0..100 {
        match connect(&c.conninfo()).await {
            Ok(conn) => return conn,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the WAL sender slot was not freed: {last:?}");
}

fn disk(c: &Cluster, rel: &str) -> Vec<u8> {
    let p = c.data_dir().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The manifest agrees with the stream: checksum verified, every file
/// received with its size and CRC-32C, WAL range = start..stop.
fn check_against_manifest(c: &Cluster, got: &Collected) -> ServerManifest {
    let manifest =
        ServerManifest::parse(&got.manifest).unwrap_or_else(|e| panic!("server manifest: {e}"));
    let mismatches = got.checker.verify_against(&manifest);
    assert!(
        mismatches.is_empty(),
        "received files differ from the server manifest: {}",
        mismatches
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    );
    assert_eq!(got.checker.received().len(), manifest.files.len());
    let major = c.bin().major;
    if major >= 17 {
        assert_eq!(manifest.version, 2);
        assert_eq!(manifest.system_identifier, Some(c.system_id()));
    } else {
        assert_eq!(manifest.version, 1);
        assert_eq!(manifest.system_identifier, None);
    }
    let (start_lsn, start_tli) = got.start;
    let (stop_lsn, stop_tli) = got.stop;
    assert!(
        start_lsn.is_valid() && start_lsn <= stop_lsn,
        "{start_lsn} .. {stop_lsn}"
    );
    assert_eq!(start_tli, stop_tli);
    assert_eq!(manifest.wal_ranges.len(), 1, "{:?}", manifest.wal_ranges);
    let r = manifest.wal_ranges[0];
    assert_eq!(
        (r.timeline, r.start_lsn, r.end_lsn),
        (start_tli, start_lsn, stop_lsn)
    );
    manifest
}

/// A running cluster with data checksums, pgbench data (scale 1) and a
/// tablespace holding a frozen table. Returns it, the tablespace's OID and
/// directory, and the table's file path relative to the data directory.
fn cluster_with_tablespace() -> (Cluster, u32, PathBuf, String) {
    let c = Cluster::builder().data_checksums(true).start();
    c.pgbench_init(1);
    let ts_dir = c.root_dir().join("ts one");
    std::fs::create_dir(&ts_dir).unwrap();
    give_to_test_user(&ts_dir);
    c.psql(&format!(
        "CREATE TABLESPACE ts1 LOCATION '{}'",
        ts_dir.display()
    ));
    c.psql(
        "CREATE TABLE in_ts (i int, t text) TABLESPACE ts1; \
         INSERT INTO in_ts SELECT g, repeat('y', 200) FROM generate_series(1, 20000) g",
    );
    // Frozen and flushed: the file does not change during or after the backup.
    c.psql("VACUUM (FREEZE) in_ts");
    c.psql("CHECKPOINT");
    let oid: u32 = c
        .psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'")
        .parse()
        .unwrap();
    let rel = c.psql("SELECT pg_relation_filepath('in_ts')");
    (c, oid, ts_dir, rel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_with_tablespace_matches_the_server_manifest() {
    let (c, oid, ts_dir, rel) = cluster_with_tablespace();
    let ts_prefix = format!("pg_tblspc/{oid}/");
    let rel_in_ts = rel
        .strip_prefix(&ts_prefix)
        .unwrap_or_else(|| panic!("{rel} is not under {ts_prefix}"))
        .to_string();
    let stable_base = [
        "PG_VERSION",
        "base/1/PG_VERSION",
        "pg_hba.conf",
        "backup_label",
    ];
    let keep = |k: &Key| match k {
        (None, p) => stable_base.contains(&p.as_str()),
        (Some(o), p) => *o == oid && *p == rel_in_ts,
    };
    let opts = BaseBackupOptions {
        label: "walship 'test' backup".into(),
        fast_checkpoint: true,
        progress: true,
        verify_checksums: true,
        tablespace_map: false,
        max_rate_kb: None,
    };
    let conn = connect(&c.conninfo()).await.unwrap();
    let got = collect(conn, &opts, &keep).await.unwrap();
    if let Ok(path) = std::env::var("WALSHIP_SAVE_MANIFEST") {
        std::fs::write(&path, &got.manifest).unwrap();
    }
    let manifest = check_against_manifest(&c, &got);

    // The tablespace: announced with its directory, sent as <oid>.tar.
    let ts_dir_text = ts_dir.to_string_lossy().into_owned();
    assert_eq!(got.tablespaces.len(), 2, "{:?}", got.tablespaces);
    assert!(got
        .tablespaces
        .iter()
        .any(|t| t.oid.is_none() && t.location.is_none()));
    let ts = got
        .tablespaces
        .iter()
        .find(|t| t.oid == Some(oid))
        .expect("the tablespace is announced");
    assert_eq!(ts.location.as_deref(), Some(ts_dir_text.as_str()));
    assert!(got.tablespaces.iter().all(|t| t.size_kb.is_some()));
    let mut archives = got.archives.clone();
    archives.sort();
    assert_eq!(
        archives,
        vec![
            (None, "base.tar".to_string()),
            (Some(oid), format!("{oid}.tar"))
        ]
    );
    // Its link in pg_tblspc, and its files under PG_<major>_<catversion>.
    let link = &got.entries[&(None, format!("pg_tblspc/{oid}"))];
    assert_eq!(
        link.kind,
        EntryKind::Symlink {
            target: ts_dir_text.clone()
        }
    );
    let version_dir = format!("PG_{}_", c.bin().major);
    assert!(got
        .entries
        .keys()
        .filter(|(o, _)| *o == Some(oid))
        .all(|(_, p)| p.starts_with(&version_dir)));
    assert!(manifest
        .files
        .iter()
        .any(|f| f.path == format!("{ts_prefix}{rel_in_ts}")));
    assert_eq!(
        got.entries[&(None, "base".to_string())].kind,
        EntryKind::Dir
    );

    // Bytes equal to the data directory for files that do not change.
    for name in ["PG_VERSION", "base/1/PG_VERSION", "pg_hba.conf"] {
        assert_eq!(
            got.kept[&(None, name.to_string())],
            disk(&c, name),
            "{name} differs from the data directory"
        );
    }
    let table = &got.kept[&(Some(oid), rel_in_ts.clone())];
    assert!(table.len() > 1024 * 1024, "{} bytes", table.len());
    assert_eq!(
        *table,
        disk(&c, &rel),
        "{rel} differs from the data directory"
    );
    let label = String::from_utf8(got.kept[&(None, "backup_label".to_string())].clone()).unwrap();
    assert!(
        label.contains(&format!("START WAL LOCATION: {}", got.start.0)),
        "{label}"
    );
    assert!(label.contains("LABEL: walship 'test' backup"), "{label}");

    // Content pieces are bounded; progress has a total.
    assert!(got.largest_piece <= MAX_DATA_PIECE);
    assert!(!got.progress.is_empty());
    let (done, total) = *got.progress.last().unwrap();
    assert!(
        total.is_some_and(|t| t > 0) && done > 0,
        "{:?}",
        got.progress
    );

    // The connection is usable after the backup.
    let mut conn = got.conn;
    let id = conn.identify_system().await.unwrap();
    assert_eq!(id.system_id, c.system_id());

    // Second backup on the same connection: tablespace_map instead of links,
    // no progress estimate, no checksum verification, spread checkpoint.
    let opts = BaseBackupOptions {
        label: "second".into(),
        fast_checkpoint: false,
        progress: false,
        verify_checksums: false,
        tablespace_map: true,
        max_rate_kb: None,
    };
    c.psql("CHECKPOINT"); // keeps the spread checkpoint short
    let keep = |k: &Key| k.0.is_none() && k.1 == "tablespace_map";
    let second = collect(conn, &opts, &keep).await.unwrap();
    check_against_manifest(&c, &second);
    assert!(second.start.0 >= got.stop.0);
    let map =
        String::from_utf8(second.kept[&(None, "tablespace_map".to_string())].clone()).unwrap();
    assert_eq!(map.trim_end(), format!("{oid} {ts_dir_text}"));
    assert!(!second
        .entries
        .contains_key(&(None, format!("pg_tblspc/{oid}"))));
    assert!(second.tablespaces.iter().all(|t| t.size_kb.is_none()));
    assert!(second.progress.iter().all(|(_, total)| total.is_none()));
    second.conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_checksum_failure_fails_the_backup_unless_not_verified() {
    let mut c = Cluster::builder().data_checksums(true).start();
    c.psql(
        "CREATE TABLE victim (i int, t text); \
         INSERT INTO victim SELECT g, repeat('z', 100) FROM generate_series(1, 1000) g; \
         CHECKPOINT",
    );
    let rel = c.psql("SELECT pg_relation_filepath('victim')");
    c.stop();
    let path = c.data_dir().join(&rel);
    let mut bytes = std::fs::read(&path).unwrap();
    // Inside the tuples of block 0, not the page header: only the checksum notices.
    for b in &mut bytes[4000..4016] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    c.start();

    let conn = connect(&c.conninfo()).await.unwrap();
    let err = match collect(conn, &BaseBackupOptions::default(), &|_| false).await {
        Ok(_) => panic!("a backup of a corrupt page passed checksum verification"),
        Err(e) => e,
    };
    assert_eq!(err.sqlstate(), Some("XX001"), "{err}");
    assert!(
        err.to_string().contains("checksum verification failure"),
        "{err}"
    );

    // Without verification, the page is sent as it is on disk.
    let opts = BaseBackupOptions {
        verify_checksums: false,
        ..Default::default()
    };
    let conn = connect(&c.conninfo()).await.unwrap();
    let relc = rel.clone();
    let got = collect(conn, &opts, &move |k: &Key| k.0.is_none() && k.1 == relc)
        .await
        .unwrap();
    check_against_manifest(&c, &got);
    assert_eq!(got.kept[&(None, rel.clone())], bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_the_servers_message() {
    let c = Cluster::builder().max_wal_senders(1).start();

    // A role without REPLICATION cannot start a WAL sender at all.
    c.psql("CREATE ROLE plain LOGIN");
    let plain = c.conninfo().replace("user=postgres", "user=plain");
    let err = connect(&plain).await.unwrap_err();
    assert_eq!(err.sqlstate(), Some("42501"), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("replication role to start walsender")
            || msg.contains("permission denied to start WAL sender"),
        "{msg}"
    );

    // max_wal_senders = 1: a second replication connection is refused.
    let first = connect(&c.conninfo()).await.unwrap();
    let err = connect(&c.conninfo()).await.unwrap_err();
    assert!(err.to_string().contains("max_wal_senders"), "{err}");
    assert_eq!(err.sqlstate(), Some("53300"), "{err}");

    // A bad option is the server's error, and the connection stays usable.
    let bad = BaseBackupOptions {
        max_rate_kb: Some(1),
        ..Default::default()
    };
    let err = first.base_backup(&bad).await.unwrap_err();
    assert!(err.server().is_some(), "{err}");
    assert!(err.to_string().contains("MAX_RATE"), "{err}");

    // A label with a NUL never reaches the server.
    let conn = connect_when_free(&c).await;
    let nul = BaseBackupOptions {
        label: "a\0b".into(),
        ..Default::default()
    };
    assert!(matches!(
        conn.base_backup(&nul).await,
        Err(PgError::Config(_))
    ));
    // The slot is freed when a connection goes: a backup works.
    let conn = connect_when_free(&c).await;
    let got = collect(conn, &BaseBackupOptions::default(), &|_| false)
        .await
        .unwrap();
    check_against_manifest(&c, &got);
}
