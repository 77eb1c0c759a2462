//! The PostgreSQL side of walship.
//!
//! - [`conninfo`]: libpq-compatible connection settings (URI and `key=value`,
//!   `PG*` environment variables, `~/.pgpass`).
//! - [`conn`]: a replication-mode connection written on tokio and
//!   postgres-protocol's codecs (startup, authentication, TLS, queries).
//! - [`replication`]: the replication commands and the WAL stream;
//!   [`gather`] reads a streaming connection's socket on a thread of its own.
//! - [`sql`]: plain SQL connections through tokio-postgres.
//! - [`basebackup`]: BASE_BACKUP (13/14 and 15+ wire forms) as a stream of
//!   events; [`tar`] reads its archives, [`backup_manifest`] checks them
//!   against the server's manifest.
//! - [`wal`]: the WAL format: positions, file names, page headers, records.

pub mod backup_manifest;
pub mod basebackup;
pub mod conn;
pub mod conninfo;
pub mod error;
pub mod gather;
pub mod replication;
pub mod sql;
pub mod tar;
pub mod tls;
pub mod wal;

pub use error::{PgError, ServerError};
