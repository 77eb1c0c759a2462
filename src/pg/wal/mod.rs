//! The WAL format: positions ([`Lsn`]), timelines and file names, page headers.

pub mod lsn;
pub mod page;
pub mod segment;

pub use lsn::Lsn;
