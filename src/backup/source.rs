//! Where the pipeline's events come from: the BASE_BACKUP stream of
//! [`crate::pg`], or (in tests) a synthetic list.
//!
//! The event types are `pg::basebackup`'s.

use crate::pg::PgError;

pub use crate::pg::basebackup::{
    BackupEvent, BaseBackupStream, EntryHeader, EntryKind, TablespaceInfo,
};

/// A source of backup events.
#[allow(async_fn_in_trait)]
pub trait EventSource {
    /// The next event; `None` after the last one.
    async fn next_event(&mut self) -> Result<Option<BackupEvent>, PgError>;
}

impl EventSource for BaseBackupStream {
    async fn next_event(&mut self) -> Result<Option<BackupEvent>, PgError> {
        BaseBackupStream::next_event(self).await
    }
}

/// A fixed list of events (tests and benchmarks).
#[derive(Debug, Default)]
pub struct VecSource {
    events: std::collections::VecDeque<BackupEvent>,
    /// When set, this error is returned once the events run out.
    pub fail_at_end: Option<String>,
}

impl VecSource {
    /// A source replaying `events`.
    pub fn new(events: Vec<BackupEvent>) -> VecSource {
        VecSource {
            events: events.into(),
            fail_at_end: None,
        }
    }
}

impl EventSource for VecSource {
    async fn next_event(&mut self) -> Result<Option<BackupEvent>, PgError> {
        match self.events.pop_front() {
            Some(e) => Ok(Some(e)),
            None => match self.fail_at_end.take() {
                Some(msg) => Err(PgError::Protocol(msg)),
                None => Ok(None),
            },
        }
    }
}
