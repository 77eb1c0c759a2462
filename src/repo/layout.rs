//! Where each kind of object lives. Keys are `/`-separated and relative to the
//! repository root; WAL objects carry their file's name, so an operator listing
//! the repository sees what is archived:
//!
//! ```text
//! <stanza>/stanza.json                                  the stanza (plain JSON)
//! <stanza>/wal/<TLI>/<segment>                          a WAL segment
//! <stanza>/wal/<TLI>/<segment>.partial                  the newest partial of a segment
//! <stanza>/wal/<TLI>/<segment>.<offset>.backup          a backup history file
//! <stanza>/wal/<TLI>/<TLI>.history                      a timeline history file
//! <stanza>/walindex/<TLI>/<segment>                     the segment's index entry
//! ```

use crate::pg::wal::segment::{TimelineId, WalFileName, WalSegSize};

/// The stanza file.
pub fn stanza_file(stanza: &str) -> String {
    format!("{stanza}/stanza.json")
}

/// The prefix of the WAL archive.
pub fn wal_prefix(stanza: &str) -> String {
    format!("{stanza}/wal/")
}

/// The prefix of the WAL index.
pub fn wal_index_prefix(stanza: &str) -> String {
    format!("{stanza}/walindex/")
}

/// The object key of a WAL file.
pub fn wal_object(stanza: &str, name: &WalFileName, seg_size: WalSegSize) -> String {
    format!(
        "{stanza}/wal/{:08X}/{}",
        name.timeline(),
        name.file_name(seg_size)
    )
}

/// The object key of a segment's index entry.
pub fn wal_index_object(stanza: &str, tli: TimelineId, segment_file: &str) -> String {
    format!("{stanza}/walindex/{tli:08X}/{segment_file}")
}
