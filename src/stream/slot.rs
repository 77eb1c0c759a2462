//! The replication slot: reading its state (READ_REPLICATION_SLOT on 15+,
//! `pg_replication_slots` over plain SQL on 13/14) and creating it.

use crate::pg::conn::ReplicationConnection;
use crate::pg::conninfo::ConnConfig;
use crate::pg::sql::connect_sql;
use crate::pg::wal::segment::TimelineId;
use crate::pg::wal::Lsn;

use super::StreamError;

/// What the streamer needs to know about its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    /// The oldest WAL the slot keeps (`None`: it reserves none).
    pub restart_lsn: Option<Lsn>,
    /// The timeline of `restart_lsn`, when the server says (15+).
    pub restart_tli: Option<TimelineId>,
}

/// Reads the slot; `None` when it does not exist. A logical slot of that
/// name is an error.
pub async fn read_slot(
    conn: &mut ReplicationConnection,
    cfg: &ConnConfig,
    name: &str,
) -> Result<Option<SlotView>, StreamError> {
    let (slot_type, view) = if conn.server_version_num() >= 150000 {
        let Some(state) = conn
            .read_replication_slot(name)
            .await
            .map_err(StreamError::pg(format!("READ_REPLICATION_SLOT {name}")))?
        else {
            return Ok(None);
        };
        (
            state.slot_type,
            SlotView {
                restart_lsn: state.restart_lsn,
                restart_tli: state.restart_tli,
            },
        )
    } else {
        let client = connect_sql(cfg)
            .await
            .map_err(StreamError::pg("reading pg_replication_slots"))?;
        let rows = client
            .query(
                "SELECT slot_type, restart_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await
            .map_err(|e| {
                StreamError::pg("reading pg_replication_slots")(crate::pg::sql::map_error(
                    "reading pg_replication_slots",
                    e,
                ))
            })?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let slot_type: String = row.get(0);
        let restart: Option<String> = row.get(1);
        let restart_lsn = match restart {
            Some(t) => Some(t.parse::<Lsn>().map_err(|e| {
                StreamError::Mismatch(format!(
                    "pg_replication_slots.restart_lsn {t:?} of slot \"{name}\": {e}"
                ))
            })?),
            None => None,
        };
        (
            slot_type,
            SlotView {
                restart_lsn,
                restart_tli: None,
            },
        )
    };
    if slot_type != "physical" {
        return Err(StreamError::BadSlot {
            slot: name.to_string(),
            reason: format!("is a {slot_type} slot; walship stream needs a physical slot"),
        });
    }
    Ok(Some(view))
}

/// Creates the slot with RESERVE_WAL (never without: a slot that reserves no
/// WAL protects nothing until the first status update).
pub async fn create_slot(conn: &mut ReplicationConnection, name: &str) -> Result<(), StreamError> {
    match conn.create_physical_slot(name, true, false).await {
        Ok(_) => {
            tracing::info!(
                slot = name,
                "created the physical replication slot (RESERVE_WAL)"
            );
            Ok(())
        }
        // Created by someone else at the same moment: fine, it is there.
        Err(e) if e.sqlstate() == Some("42710") => Ok(()),
        Err(e) => Err(StreamError::pg(format!("CREATE_REPLICATION_SLOT {name}"))(
            e,
        )),
    }
}

/// The PID in PostgreSQL's "replication slot \"x\" is active for PID n".
pub fn holder_pid(message: &str) -> Option<i32> {
    let at = message.find("PID ")?;
    let digits: String = message[at + 4..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_from_the_server_message() {
        assert_eq!(
            holder_pid("replication slot \"walship\" is active for PID 4242"),
            Some(4242)
        );
        assert_eq!(holder_pid("something else"), None);
    }
}
