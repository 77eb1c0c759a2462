//! How one stored object is framed, compressed and encrypted.
//! (Being written: see docs/format.md.)

/// Compression of stored objects, chosen when the stanza is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Stored as is.
    None,
    /// lz4 (block format per chunk).
    #[default]
    Lz4,
}
