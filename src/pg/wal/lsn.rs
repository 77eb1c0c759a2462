//! placeholder: being written.
pub struct Lsn(pub u64);
