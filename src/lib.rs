//! walship: a WAL archiver and point-in-time-recovery engine for PostgreSQL.
//!
//! The modules follow the path data takes (see `docs/ARCHITECTURE.md`):
//!
//! - [`pg`]: the PostgreSQL side: connection settings, the replication-protocol
//!   client, and the WAL format itself ([`pg::wal`]).
//! - [`codec`]: how one object is framed, compressed and encrypted.
//! - [`storage`]: where objects live (a local directory or S3).
//! - [`repo`]: what the repository means: stanza, WAL archive, its index.
//! - [`backup`]: base backups: the stream into the chunk store.
//! - [`cmd`]: one module per command, each a thin orchestration of the above.
//! - [`cli`] and [`config`]: the command line and the settings it resolves.

pub mod backup;
pub mod cli;
pub mod cmd;
pub mod codec;
pub mod config;
pub mod pg;
pub mod repo;
pub mod restore;
pub mod storage;
pub mod stream;
