//! The PostgreSQL side of walship.
//!
//! - [`conninfo`]: libpq-compatible connection settings (URI and `key=value`,
//!   `PG*` environment variables, `~/.pgpass`).
//! - [`conn`]: a replication-mode connection written on tokio and
//!   postgres-protocol's codecs (startup, authentication, TLS, queries).
//! - [`replication`]: the replication commands and the WAL stream.
//! - [`sql`]: plain SQL connections through tokio-postgres.
//! - [`wal`]: the WAL format: positions, file names, page headers, records.

pub mod conn;
pub mod conninfo;
pub mod error;
pub mod replication;
pub mod sql;
pub mod tls;
pub mod wal;

pub use error::{PgError, ServerError};
