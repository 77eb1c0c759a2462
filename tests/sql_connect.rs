//! `connect_sql` against a real PostgreSQL (see tests/support): SCRAM over
//! TCP, the Unix socket, the password file, multi-host fallback, server
//! errors, and TLS per `sslmode` (with channel binding).

#[allow(unused_imports)] // the harness re-exports more than this test uses
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::{AuthMethod, Cluster};
use walship::pg::conninfo::ConnConfig;
use walship::pg::sql::connect_sql;
use walship::pg::PgError;

/// Parses `conninfo` with an empty environment (only a `HOME` without
/// files), so the developer's `PG*` variables and `~/.pgpass` cannot change
/// the outcome.
fn cfg(conninfo: &str) -> ConnConfig {
    ConnConfig::parse_with_env(conninfo, &|name| {
        (name == "HOME").then(|| "/nonexistent-walship-home".to_string())
    })
    .unwrap_or_else(|e| panic!("parse {conninfo:?}: {e}"))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `SELECT 1` over a fresh session; panics with the error otherwise.
async fn select_one(c: &ConnConfig) -> tokio_postgres::Client {
    let client = connect_sql(c)
        .await
        .unwrap_or_else(|e| panic!("connect_sql({c}): {e}"));
    let row = client.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    client
}

/// A password file holding `content`, with `mode`.
fn passfile(dir: &Path, content: &str, mode: u32) -> std::path::PathBuf {
    let p = dir.join("pgpass");
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[test]
fn scram_tcp_unix_socket_pgpass_and_errors() {
    let cluster = Cluster::builder().auth(AuthMethod::ScramSha256).start();
    let port = cluster.port();
    let password = cluster
        .password()
        .expect("a SCRAM cluster has a password")
        .to_string();
    let rt = rt();
    rt.block_on(async {
        // SCRAM over TCP, with application_name reported to the server.
        let c = cfg(&format!(
            "{} sslmode=disable application_name=walship-sql-test",
            cluster.conninfo()
        ));
        let client = select_one(&c).await;
        let row = client
            .query_one(
                "SELECT current_user::text, current_setting('application_name'), \
                 inet_server_addr() IS NOT NULL",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "postgres");
        assert_eq!(row.get::<_, String>(1), "walship-sql-test");
        assert!(row.get::<_, bool>(2), "expected a TCP session");
        let method: String = client
            .query_one(
                "SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' LIMIT 1",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(method, "scram-sha-256");

        // The same as a URI with a percent-encoded password.
        let uri = format!(
            "postgresql://postgres:{}@127.0.0.1:{port}/postgres?sslmode=disable",
            password.replace('-', "%2D")
        );
        select_one(&cfg(&uri)).await;

        // The Unix socket (a host starting with '/'); sslmode=require is
        // ignored there, as libpq does.
        let c = cfg(&format!("{} sslmode=require", cluster.socket_conninfo()));
        let client = select_one(&c).await;
        let unix: bool = client
            .query_one("SELECT inet_server_addr() IS NULL", &[])
            .await
            .unwrap()
            .get(0);
        assert!(unix, "expected a Unix-socket session");
        // And as a URI with a percent-encoded socket directory.
        let sock = cluster.socket_dir().to_str().unwrap().replace('/', "%2F");
        select_one(&cfg(&format!(
            "postgresql://postgres@{sock}:{port}/postgres"
        )))
        .await;

        // The password from a password file (0600)...
        let dir = tempfile::tempdir().unwrap();
        let pf = passfile(
            dir.path(),
            &format!("# test\n127.0.0.1:{port}:postgres:postgres:{password}\n"),
            0o600,
        );
        let base = format!(
            "host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable passfile={}",
            pf.display()
        );
        select_one(&cfg(&base)).await;
        // ...ignored when others may read it, as libpq does: no password.
        std::fs::set_permissions(&pf, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = connect_sql(&cfg(&base)).await.unwrap_err();
        assert!(
            matches!(&err, PgError::Auth(m) if m.contains("none was given")),
            "expected a missing-password error, got {err:?}"
        );
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );

        // A wrong password: the server's error, with its SQLSTATE, and never
        // the password itself.
        let c = cfg(&format!(
            "host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable \
             password=wrong-secret"
        ));
        let err = connect_sql(&c).await.unwrap_err();
        let server = err
            .server()
            .unwrap_or_else(|| panic!("expected a server error, got {err:?}"));
        assert_eq!(server.code, "28P01", "{server}");
        assert!(
            server.message.contains("password authentication failed"),
            "{server}"
        );
        assert!(!err.to_string().contains("wrong-secret"));

        // Several hosts: a dead one first, then the cluster.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_port = dead.local_addr().unwrap().port();
        drop(dead);
        let c = cfg(&format!(
            "host=127.0.0.1,127.0.0.1 port={dead_port},{port} user=postgres dbname=postgres \
             sslmode=disable password={password}"
        ));
        select_one(&c).await;

        // A missing database: the server's error names it.
        let c = cfg(&format!(
            "{} dbname=nosuchdb sslmode=disable",
            cluster.conninfo()
        ));
        let err = connect_sql(&c).await.unwrap_err();
        let server = err
            .server()
            .unwrap_or_else(|| panic!("expected a server error, got {err:?}"));
        assert_eq!(server.code, "3D000", "{server}");

        // TLS required but the server has none.
        let c = cfg(&format!("{} sslmode=require", cluster.conninfo()));
        let err = connect_sql(&c).await.unwrap_err();
        assert!(
            matches!(err, PgError::Tls(_)),
            "expected a TLS error, got {err:?}"
        );
    });
}

#[test]
fn tls_per_sslmode_with_channel_binding() {
    let cluster = Cluster::builder()
        .auth(AuthMethod::ScramSha256)
        .tls(true)
        .start();
    let ca = cluster
        .ca_cert()
        .expect("a TLS cluster has a CA")
        .to_path_buf();
    let rt = rt();
    rt.block_on(async {
        async fn ssl_in_use(c: &ConnConfig) -> bool {
            let client = select_one(c).await;
            client
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap()
                .get(0)
        }
        let localhost = cluster.conninfo_host("localhost");
        let ip = cluster.conninfo();

        assert!(ssl_in_use(&cfg(&format!("{ip} sslmode=prefer"))).await);
        assert!(ssl_in_use(&cfg(&format!("{ip} sslmode=require"))).await);
        assert!(!ssl_in_use(&cfg(&format!("{ip} sslmode=disable"))).await);
        let ca = ca.display();
        assert!(ssl_in_use(&cfg(&format!("{ip} sslmode=verify-ca sslrootcert={ca}"))).await);
        assert!(
            ssl_in_use(&cfg(&format!(
                "{localhost} sslmode=verify-full sslrootcert={ca}"
            )))
            .await
        );
        // The certificate names 127.0.0.1 too (an IP SAN).
        assert!(ssl_in_use(&cfg(&format!("{ip} sslmode=verify-full sslrootcert={ca}"))).await);

        // SCRAM-SHA-256-PLUS: channel binding over tls-server-end-point.
        assert!(
            ssl_in_use(&cfg(&format!(
                "{ip} sslmode=require channel_binding=require"
            )))
            .await
        );

        // A CA that did not sign the server certificate.
        let other = Cluster::builder().tls(true).init();
        let other_ca = other.ca_cert().unwrap().display().to_string();
        for mode in ["verify-ca", "verify-full"] {
            let c = cfg(&format!("{ip} sslmode={mode} sslrootcert={other_ca}"));
            let err = connect_sql(&c).await.unwrap_err();
            assert!(
                matches!(err, PgError::Tls(_)),
                "{mode}: expected a TLS error, got {err:?}"
            );
        }
        // prefer: a failed handshake falls back to a plain session, as in libpq.
        assert!(!ssl_in_use(&cfg(&format!("{ip} sslmode=prefer sslrootcert={other_ca}"))).await);
        // libpq's rule: require with a root certificate checks the chain.
        let c = cfg(&format!("{ip} sslmode=require sslrootcert={other_ca}"));
        assert!(
            connect_sql(&c).await.is_err(),
            "require with a foreign root must fail"
        );
    });
}
