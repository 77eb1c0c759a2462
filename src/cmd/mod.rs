//! Commands (being written).
