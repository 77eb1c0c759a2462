//! Replication connections for tests, with settings taken only from the test
//! (never the developer's `PG*` variables or `~/.pgpass`).

use std::time::Duration;

use walship::pg::conn::ReplicationConnection;
use walship::pg::conninfo::ConnConfig;
use walship::pg::PgError;

/// Upper bound for any wait on the server in these tests.
pub const WAIT: Duration = Duration::from_secs(30);

/// Parses a conninfo string without the environment.
pub fn config(conninfo: &str) -> ConnConfig {
    ConnConfig::parse_with_env(conninfo, &|_| None)
        .unwrap_or_else(|e| panic!("parse conninfo {conninfo:?}: {e}"))
}

/// Connects in replication mode, failing the test after [`WAIT`].
pub async fn connect(conninfo: &str) -> Result<ReplicationConnection, PgError> {
    tokio::time::timeout(WAIT, ReplicationConnection::connect(&config(conninfo)))
        .await
        .unwrap_or_else(|_| panic!("connecting with {conninfo:?} took more than {WAIT:?}"))
}

/// As [`connect`], panicking on an error.
pub async fn connect_ok(conninfo: &str) -> ReplicationConnection {
    connect(conninfo)
        .await
        .unwrap_or_else(|e| panic!("connect with {conninfo:?}: {e}"))
}
