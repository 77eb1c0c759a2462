//! Integration tests of the replication-protocol client (`walship::pg`)
//! against real PostgreSQL clusters made by the harness in `support::pg`.
//!
//! The server binaries come from `WALSHIP_PG_BIN` (default Debian's 15);
//! `scripts/test-all-majors.sh` runs this file against 13 through 18.

mod support;

use support::repl::{connect, connect_ok, WAIT};

use std::time::Duration;

use support::pg::{AuthMethod, Cluster, TestPki, DEFAULT_PASSWORD};
use walship::pg::replication::{StreamMessage, WalStream};
use walship::pg::wal::segment::WalSegSize;
use walship::pg::wal::Lsn;
use walship::pg::PgError;

fn lsn(text: &str) -> Lsn {
    text.parse()
        .unwrap_or_else(|e| panic!("LSN {text:?} from the server: {e:?}"))
}

/// Fills the current segment with some WAL and switches to the next one;
/// returns the LSN before the WAL was written.
fn generate_wal_and_switch(c: &Cluster, rows: u32) -> Lsn {
    let before = lsn(&c.psql("SELECT pg_current_wal_lsn()"));
    c.psql(&format!(
        "CREATE TABLE IF NOT EXISTS filler (i int, t text); \
         INSERT INTO filler SELECT g, repeat('x', 100) FROM generate_series(1, {rows}) g"
    ));
    c.psql("SELECT pg_switch_wal()");
    before
}

/// Next stream message, failing the test after [`WAIT`].
async fn next(stream: &mut WalStream) -> StreamMessage {
    tokio::time::timeout(WAIT, stream.next_message())
        .await
        .unwrap_or_else(|_| panic!("no message from the WAL stream within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("WAL stream: {e}"))
}

/// Reads XLogData from `stream` (which starts at `start`) until `end` is
/// reached or the timeline ends; checks the messages are contiguous.
/// Returns the WAL bytes and whether the timeline ended.
async fn collect_wal(stream: &mut WalStream, start: Lsn, end: Option<Lsn>) -> (Vec<u8>, bool) {
    let mut wal = Vec::new();
    loop {
        if let Some(end) = end {
            if start.0 + wal.len() as u64 >= end.0 {
                return (wal, false);
            }
        }
        match next(stream).await {
            StreamMessage::XLogData {
                start: at, data, ..
            } => {
                let expected = Lsn(start.0 + wal.len() as u64);
                assert_eq!(at, expected, "XLogData is not contiguous");
                wal.extend_from_slice(&data);
            }
            StreamMessage::Keepalive { .. } => {}
            StreamMessage::EndOfTimeline => return (wal, true),
        }
    }
}

fn seg_size(c: &Cluster) -> WalSegSize {
    WalSegSize::new(c.wal_segment_size() as u32).expect("valid segment size")
}

// ---------------------------------------------------------------------------
// Connecting
// ---------------------------------------------------------------------------

/// Connects with `auth` over TCP, and checks that the method really needs
/// the password (so a trust fallback would fail the test).
async fn auth_roundtrip(auth: AuthMethod) {
    let c = Cluster::builder().auth(auth).start();
    assert_eq!(c.password(), Some(DEFAULT_PASSWORD));
    let mut conn = connect_ok(&c.conninfo()).await;
    let id = conn.identify_system().await.expect("IDENTIFY_SYSTEM");
    assert_eq!(id.system_id, c.system_id());
    conn.close().await.expect("close");

    let no_password = c
        .conninfo()
        .replace(&format!(" password='{DEFAULT_PASSWORD}'"), "");
    assert!(!no_password.contains("password"), "{no_password}");
    let err = connect(&no_password)
        .await
        .expect_err("connecting without a password must fail with password authentication");
    let text = err.to_string();
    assert!(
        text.contains("password"),
        "unexpected error without a password: {text}"
    );
}

#[tokio::test]
async fn connect_trust() {
    let c = Cluster::new();
    let mut conn = connect_ok(&c.conninfo()).await;
    assert_eq!(conn.server_version_num(), c.server_version_num());
    conn.identify_system().await.expect("IDENTIFY_SYSTEM");
    conn.close().await.expect("close");
    // The Unix socket too.
    let mut conn = connect_ok(&c.socket_conninfo()).await;
    conn.identify_system()
        .await
        .expect("IDENTIFY_SYSTEM over the socket");
}

#[tokio::test]
async fn connect_password() {
    auth_roundtrip(AuthMethod::Password).await;
}

#[tokio::test]
async fn connect_md5() {
    auth_roundtrip(AuthMethod::Md5).await;
}

#[tokio::test]
async fn connect_scram_sha_256() {
    auth_roundtrip(AuthMethod::ScramSha256).await;
}

#[tokio::test]
async fn wrong_password_reports_the_server_error() {
    let c = Cluster::builder().auth(AuthMethod::ScramSha256).start();
    let wrong = c.conninfo().replace(
        &format!("password='{DEFAULT_PASSWORD}'"),
        "password='not-the-password'",
    );
    let err = connect(&wrong)
        .await
        .expect_err("a wrong password must fail");
    eprintln!("wrong password: {err}");
    let server = err
        .server()
        .unwrap_or_else(|| panic!("expected the server's error, got: {err}"));
    assert_eq!(server.code, "28P01", "{err}");
    assert!(
        server
            .message
            .contains("password authentication failed for user"),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("28P01"), "SQLSTATE missing from {text}");
    assert!(
        !text.contains("not-the-password"),
        "the password leaked: {text}"
    );
}

/// Whether the server sees the backend `pid` as a TLS connection.
fn backend_uses_tls(c: &Cluster, pid: i32) -> bool {
    c.psql(&format!("SELECT ssl FROM pg_stat_ssl WHERE pid = {pid}")) == "t"
}

#[tokio::test]
async fn connect_tls_modes() {
    let c = Cluster::builder()
        .auth(AuthMethod::ScramSha256)
        .tls(true)
        .also_listen_on("127.0.0.2")
        .start();
    let ca = c
        .ca_cert()
        .expect("TLS cluster has a CA")
        .display()
        .to_string();
    let cases = [
        format!("{} sslmode=require", c.conninfo()),
        format!("{} sslmode=verify-ca sslrootcert='{ca}'", c.conninfo()),
        format!(
            "{} sslmode=verify-full sslrootcert='{ca}'",
            c.conninfo_host("localhost")
        ),
        format!("{} sslmode=verify-full sslrootcert='{ca}'", c.conninfo()),
    ];
    for conninfo in &cases {
        let mut conn = connect_ok(conninfo).await;
        let pid = conn.backend_pid().expect("BackendKeyData gives the pid");
        assert!(backend_uses_tls(&c, pid), "not TLS with {conninfo}");
        conn.identify_system()
            .await
            .expect("IDENTIFY_SYSTEM over TLS");
        conn.close().await.expect("close");
    }

    // 127.0.0.2 reaches the same server but the certificate does not name it:
    // verify-ca accepts it, verify-full must not.
    let other = c.conninfo_host("127.0.0.2");
    connect_ok(&format!("{other} sslmode=verify-ca sslrootcert='{ca}'")).await;
    let err = connect(&format!("{other} sslmode=verify-full sslrootcert='{ca}'"))
        .await
        .expect_err("verify-full must refuse a certificate for another host");
    eprintln!("verify-full, wrong host: {err}");
    assert!(
        err.server().is_none(),
        "expected a client-side TLS error, got {err}"
    );

    // A CA that did not sign the server certificate is refused by verify-ca.
    let dir = tempfile::tempdir().expect("temp dir");
    let other_ca = dir.path().join("other-ca.crt");
    std::fs::write(&other_ca, TestPki::generate().ca_cert_pem).expect("write other-ca.crt");
    let err = connect(&format!(
        "{} sslmode=verify-ca sslrootcert='{}'",
        c.conninfo(),
        other_ca.display()
    ))
    .await
    .expect_err("verify-ca must refuse a certificate from another CA");
    eprintln!("verify-ca, other CA: {err}");
    assert!(
        err.server().is_none(),
        "expected a client-side TLS error, got {err}"
    );
}

// ---------------------------------------------------------------------------
// Replication commands
// ---------------------------------------------------------------------------

#[tokio::test]
async fn identify_system_and_show() {
    let c = Cluster::builder().wal_segsize_mb(1).start();
    let mut conn = connect_ok(&c.conninfo()).await;
    let id = conn.identify_system().await.expect("IDENTIFY_SYSTEM");
    assert_eq!(id.system_id, c.system_id());
    assert_eq!(id.timeline, 1);
    let current = lsn(&c.psql("SELECT pg_current_wal_flush_lsn()"));
    assert!(
        id.xlogpos.0 > 0 && id.xlogpos <= current,
        "{} vs {current}",
        id.xlogpos
    );
    assert_eq!(
        conn.wal_segment_size().await.expect("segment size").bytes(),
        1 << 20
    );
    assert_eq!(conn.show("wal_level").await.expect("SHOW"), "replica");
}

#[tokio::test]
async fn slot_with_reserve_wal_has_restart_lsn() {
    let c = Cluster::new();
    let mut conn = connect_ok(&c.conninfo()).await;
    conn.create_physical_slot("walship_reserved", true, false)
        .await
        .expect("CREATE_REPLICATION_SLOT RESERVE_WAL");
    conn.create_physical_slot("walship_lazy", false, false)
        .await
        .expect("CREATE_REPLICATION_SLOT");

    let sql_restart = |name: &str| {
        c.psql(&format!(
            "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '{name}'"
        ))
    };
    let reserved = lsn(&sql_restart("walship_reserved"));
    assert!(reserved.0 > 0);
    assert_eq!(
        sql_restart("walship_lazy"),
        "",
        "a slot without RESERVE_WAL reserves nothing"
    );

    if c.server_version_num() >= 150000 {
        let state = conn
            .read_replication_slot("walship_reserved")
            .await
            .expect("READ_REPLICATION_SLOT")
            .expect("the slot exists");
        assert_eq!(state.slot_type, "physical");
        assert_eq!(state.restart_lsn, Some(reserved));
        assert_eq!(state.restart_tli, Some(1));
        let lazy = conn
            .read_replication_slot("walship_lazy")
            .await
            .expect("READ_REPLICATION_SLOT")
            .expect("the slot exists");
        assert_eq!(lazy.restart_lsn, None);
        assert_eq!(
            conn.read_replication_slot("walship_missing")
                .await
                .expect("READ_REPLICATION_SLOT"),
            None
        );
    } else {
        let err = conn
            .read_replication_slot("walship_reserved")
            .await
            .expect_err("READ_REPLICATION_SLOT does not exist before 15");
        assert!(matches!(err, PgError::Unsupported(_)), "{err}");
    }

    conn.drop_slot("walship_lazy", false)
        .await
        .expect("DROP_REPLICATION_SLOT");
    assert_eq!(
        c.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walship_lazy'"),
        "0"
    );
    let err = conn
        .drop_slot("walship_lazy", false)
        .await
        .expect_err("dropping a missing slot fails");
    assert_eq!(
        err.server().map(|e| e.code.as_str()),
        Some("42704"),
        "{err}"
    );
}

#[tokio::test]
async fn streamed_segment_is_byte_identical_to_pg_wal() {
    let c = Cluster::builder().wal_segsize_mb(1).start();
    let seg = seg_size(&c);
    let before = generate_wal_and_switch(&c, 3000);
    // The segment holding `before` is finished: the switch came after it.
    let segno = before.segment_number(seg);
    let start = Lsn::from_segment(segno, seg);
    // Named here, not with pg_walfile_name(), which maps a segment's first
    // byte to the previous segment.
    let per_id = 0x1_0000_0000 / u64::from(seg.bytes());
    let name = format!("{:08X}{:08X}{:08X}", 1, segno / per_id, segno % per_id);

    let conn = connect_ok(&c.conninfo()).await;
    let mut stream = conn
        .start_replication(None, start, 1)
        .await
        .expect("START_REPLICATION");
    let end = Lsn::from_segment(segno + 1, seg);
    let (mut wal, ended) = collect_wal(&mut stream, start, Some(end)).await;
    assert!(!ended, "the timeline cannot end on a primary");
    wal.truncate(seg.bytes() as usize);
    let (_, conn) = stream.finish().await.expect("end streaming");
    conn.close().await.expect("close");

    let path = c.pg_wal_dir().join(&name);
    let file = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(file.len(), wal.len(), "{name}: size differs");
    // Not assert_eq! on a megabyte: name the first differing offset.
    if let Some(i) = file.iter().zip(&wal).position(|(a, b)| a != b) {
        panic!("{name}: streamed WAL differs from pg_wal at offset {i:#x}");
    }
}

#[tokio::test]
async fn status_updates_move_the_slot_forward() {
    let c = Cluster::builder().wal_segsize_mb(1).start();
    let seg = seg_size(&c);
    let mut conn = connect_ok(&c.conninfo()).await;
    conn.create_physical_slot("walship_status", true, false)
        .await
        .expect("CREATE_REPLICATION_SLOT");
    let slot_restart = || {
        lsn(&c.psql(
            "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'walship_status'",
        ))
    };
    let initial = slot_restart();
    generate_wal_and_switch(&c, 3000);

    let start = Lsn::from_segment(initial.segment_number(seg), seg);
    let mut stream = conn
        .start_replication(Some("walship_status"), start, 1)
        .await
        .expect("START_REPLICATION SLOT");
    // Receive past the slot's position, then report part of it as flushed.
    let (wal, _) = collect_wal(&mut stream, start, Some(Lsn(initial.0 + 64 * 1024))).await;
    let flushed = Lsn(start.0 + wal.len() as u64);
    assert!(flushed > initial);
    stream.set_positions(flushed, flushed, flushed);
    stream.send_status(false).await.expect("status update");

    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let now = slot_restart();
        if now == flushed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slot restart_lsn stayed at {now} (initially {initial}), reported flush {flushed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, conn) = stream.finish().await.expect("end streaming");
    conn.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeline_switch_after_promotion() {
    let mut primary = Cluster::builder().wal_segsize_mb(1).start();
    generate_wal_and_switch(&primary, 500);
    let mut standby = primary.create_standby();
    standby.promote();

    let history_path = standby.pg_wal_dir().join("00000002.history");
    let history_file = std::fs::read(&history_path)
        .unwrap_or_else(|e| panic!("read {}: {e}", history_path.display()));
    let history_text = String::from_utf8(history_file.clone()).expect("history file is text");
    // "1<TAB>0/3000A8<TAB>no recovery target specified"
    let first = history_text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .expect("a history line");
    let mut fields = first.split_whitespace();
    assert_eq!(fields.next(), Some("1"), "{history_text}");
    let switch = lsn(fields.next().expect("switch LSN"));

    let seg = seg_size(&standby);
    let mut segno = switch.segment_number(seg);
    if switch.segment_offset(seg) == 0 {
        segno -= 1; // start strictly before the switch
    }
    let start = Lsn::from_segment(segno, seg);

    let mut conn = connect_ok(&standby.conninfo()).await;
    let id = conn.identify_system().await.expect("IDENTIFY_SYSTEM");
    assert_eq!(id.timeline, 2);
    let mut stream = conn
        .start_replication(None, start, 1)
        .await
        .expect("START_REPLICATION of timeline 1");
    let (wal, ended) = collect_wal(&mut stream, start, None).await;
    assert!(ended, "timeline 1 must end");
    assert_eq!(
        Lsn(start.0 + wal.len() as u64),
        switch,
        "streamed up to the switch point"
    );
    let (end, mut conn) = stream.finish().await.expect("finish the timeline");
    assert_eq!(end.next_timeline, Some(2));
    assert_eq!(end.switch_lsn, Some(switch));

    let (name, content) = conn.timeline_history(2).await.expect("TIMELINE_HISTORY 2");
    assert_eq!(name, "00000002.history");
    assert_eq!(content, history_file);
    conn.close().await.expect("close");
}

// ---------------------------------------------------------------------------
// The harness itself
// ---------------------------------------------------------------------------

/// Options reach the server, restart and pgbench work, the PostgreSQL user
/// can run `walship` (future archive_command), and drop removes everything.
#[test]
fn harness_cluster_lifecycle() {
    let mut c = Cluster::builder()
        .data_checksums(true)
        .wal_segsize_mb(2)
        .conf("wal_keep_size = '32MB'")
        .start();
    assert_eq!(c.psql("SHOW data_checksums"), "on");
    assert_eq!(c.wal_segment_size(), 2 << 20);
    assert_eq!(c.psql("SHOW wal_keep_size"), "32MB");
    c.restart();
    c.pgbench_init(1);
    let out = c.pgbench(&["-t", "20"]);
    assert!(
        out.contains("number of transactions actually processed: 20"),
        "{out}"
    );
    assert!(c.try_psql("SELEC 1").is_err());

    let walship = support::walship_bin();
    assert!(walship.is_file());
    let root = c.root_dir().to_path_buf();
    assert!(root.join("log").is_file());
    drop(c);
    if std::env::var("WALSHIP_KEEP_TEST_DIRS").as_deref() != Ok("1") {
        assert!(!root.exists(), "{} left behind", root.display());
    }
}
