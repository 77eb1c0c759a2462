//! Integration tests of the replication client's behaviours that
//! `tests/protocol.rs` does not cover: keepalive replies and periodic status
//! updates (the server's `wal_sender_timeout` kills a silent client), stopping
//! a stream early and reusing the connection, channel binding, multi-host
//! fallback and the missing-password message. Real PostgreSQL via the harness.

mod support;

use support::repl::connect;

use std::time::{Duration, Instant};

use support::pg::{AuthMethod, Cluster};
use walship::pg::replication::{StreamMessage, WalStream};

/// Streams for `how_long`; returns (keepalives asking for a reply, XLogData count).
async fn stream_for(stream: &mut WalStream, how_long: Duration) -> (u32, u32) {
    let until = Instant::now() + how_long;
    let (mut asked, mut data) = (0, 0);
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next_message()).await {
            Err(_) => break,
            Ok(Err(e)) => panic!("WAL stream failed after {asked} reply requests: {e}"),
            Ok(Ok(StreamMessage::Keepalive {
                reply_requested: true,
                ..
            })) => asked += 1,
            Ok(Ok(StreamMessage::Keepalive { .. })) => {}
            Ok(Ok(StreamMessage::XLogData { .. })) => data += 1,
            Ok(Ok(StreamMessage::EndOfTimeline)) => panic!("the timeline cannot end on a primary"),
        }
    }
    (asked, data)
}

#[tokio::test]
async fn keepalive_replies_and_status_updates_keep_the_stream_alive() {
    // The server drops a client silent for 2 s and asks for a reply after 1 s.
    let c = Cluster::builder().conf("wal_sender_timeout = '2s'").start();
    let mut conn = connect(&c.conninfo()).await.expect("connect");
    let id = conn.identify_system().await.expect("IDENTIFY_SYSTEM");
    let start = walship::pg::wal::Lsn(id.xlogpos.0 & !0xFFFFFF); // segment start (16 MB)
    let mut stream = conn
        .start_replication(None, start, id.timeline)
        .await
        .expect("START_REPLICATION");

    // No unsolicited updates: only our answers to the server's requests keep
    // the walsender from timing out.
    stream.set_status_interval(Duration::ZERO);
    let (asked, data) = stream_for(&mut stream, Duration::from_secs(5)).await;
    assert!(data > 0, "no XLogData received");
    assert!(asked >= 2, "the server asked for {asked} replies in 5 s");

    // Unsolicited updates every 300 ms: the server never needs to ask.
    stream.set_status_interval(Duration::from_millis(300));
    stream.send_status(false).await.expect("status update");
    let (asked, _) = stream_for(&mut stream, Duration::from_secs(4)).await;
    assert_eq!(
        asked, 0,
        "the server had to ask for replies despite periodic updates"
    );

    // Stop early; the connection is usable again afterwards.
    let (end, mut conn) = stream.finish().await.expect("stop streaming");
    assert_eq!(end.next_timeline, None);
    let again = conn
        .identify_system()
        .await
        .expect("IDENTIFY_SYSTEM after streaming");
    assert_eq!(again.system_id, id.system_id);
    conn.close().await.expect("close");
}

#[tokio::test]
async fn channel_binding_policies() {
    let c = Cluster::builder()
        .auth(AuthMethod::ScramSha256)
        .tls(true)
        .start();
    // Over TLS the server offers SCRAM-SHA-256-PLUS: binding works.
    let mut conn = connect(&format!(
        "{} sslmode=require channel_binding=require",
        c.conninfo()
    ))
    .await
    .expect("SCRAM-SHA-256-PLUS over TLS");
    conn.identify_system().await.expect("IDENTIFY_SYSTEM");
    conn.close().await.expect("close");
    // Without TLS there is nothing to bind to.
    let err = connect(&format!(
        "{} sslmode=disable channel_binding=require",
        c.conninfo()
    ))
    .await
    .expect_err("channel_binding=require without TLS must fail");
    assert!(
        err.to_string().contains("channel binding required"),
        "{err}"
    );
    // channel_binding=disable still authenticates over TLS.
    connect(&format!(
        "{} sslmode=require channel_binding=disable",
        c.conninfo()
    ))
    .await
    .expect("SCRAM without binding over TLS");
}

#[tokio::test]
async fn tries_hosts_in_order_and_names_missing_password() {
    let c = Cluster::builder().auth(AuthMethod::Md5).start();
    // Port 1 refuses; the second host/port is the server.
    let multi = c.conninfo().replace(
        &format!("host=127.0.0.1 port={}", c.port()),
        &format!("host=127.0.0.1,127.0.0.1 port=1,{}", c.port()),
    );
    assert_ne!(multi, c.conninfo());
    let mut conn = connect(&multi).await.expect("second host");
    conn.identify_system().await.expect("IDENTIFY_SYSTEM");
    conn.close().await.expect("close");

    // Only the refusing host: the error names it.
    let dead = c
        .conninfo()
        .replace(&format!("port={}", c.port()), "port=1");
    let err = connect(&dead).await.expect_err("nothing listens on port 1");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");

    let no_pw = c.conninfo().replace(
        &format!(" password='{}'", c.password().expect("password")),
        "",
    );
    let err = connect(&no_pw).await.expect_err("no password");
    assert!(
        err.to_string()
            .contains("password required by server for user"),
        "{err}"
    );
}

#[tokio::test]
async fn target_session_attrs_are_checked() {
    let c = Cluster::new();
    connect(&format!("{} target_session_attrs=read-write", c.conninfo()))
        .await
        .expect("a primary is read-write");
    let err = connect(&format!("{} target_session_attrs=read-only", c.conninfo()))
        .await
        .expect_err("a primary is not read-only");
    assert!(err.to_string().contains("read-write"), "{err}");
}

#[tokio::test]
async fn start_replication_errors_carry_the_server_fields() {
    let c = Cluster::new();
    let conn = connect(&c.conninfo()).await.expect("connect");
    let err = conn
        .start_replication(Some("no_such_slot"), walship::pg::wal::Lsn(0x100_0000), 1)
        .await
        .expect_err("a missing slot");
    assert_eq!(err.sqlstate(), Some("42704"), "{err}");
    let mut conn = connect(&c.conninfo()).await.expect("connect");
    let err = conn
        .timeline_history(1)
        .await
        .expect_err("timeline 1 has no history");
    assert!(err.server().is_some(), "{err}");
    // The connection survives a failed command.
    conn.identify_system()
        .await
        .expect("IDENTIFY_SYSTEM after an error");
    let rows = conn.simple_query("SHOW wal_level").await.expect("SHOW");
    assert_eq!(rows[0].get("wal_level"), Some("replica"));
}
