//! Shared test harness: real PostgreSQL clusters ([`pg`]) and a real S3
//! server ([`s3`]). Each test binary uses a subset, hence `dead_code`.
#![allow(dead_code)]

pub mod pg;
pub mod repl;
pub mod repo;
pub mod restored;
pub mod s3;
pub mod scratch;

#[allow(unused_imports)]
pub use pg::{run_walship, walship_bin, AuthMethod, Cluster, ClusterBuilder, PgBin, TestPki};
