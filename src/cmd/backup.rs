//! `walship backup`: a base backup over the replication protocol into the
//! chunk store. Prints the backup id (stdout; `{"id": ...}` with `--json`)
//! only once the backup and all the WAL it needs are in the repository.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::backup::{self, BackupRequest};
use crate::cli::{BackupArgs, CheckpointMode};
use crate::config::Settings;
use crate::pg::basebackup::BaseBackupOptions;
use crate::pg::conn::ReplicationConnection;
use crate::pg::conninfo::ConnConfig;
use crate::pg::PgError;
use crate::repo::backup::new_backup_id;
use crate::repo::{ClusterIdentity, Repository};

/// Environment variable: throttle the server's sending to this many kB/s
/// (BASE_BACKUP's MAX_RATE, 32 to 1048576), to spare a busy primary's disks.
pub const MAX_RATE_ENV: &str = "WALSHIP_BACKUP_MAX_RATE";

/// Runs `walship backup`.
pub async fn run(settings: &Settings, args: &BackupArgs) -> anyhow::Result<ExitCode> {
    let max_rate_kb = max_rate()?;
    let cfg = ConnConfig::parse(&settings.pg).context("PostgreSQL connection settings")?;
    let mut conn = ReplicationConnection::connect(&cfg)
        .await
        .map_err(explain)
        .context("connecting to PostgreSQL for the base backup")?;
    let server = conn.target().to_string();
    let system = conn
        .identify_system()
        .await
        .map_err(flat)
        .with_context(|| format!("IDENTIFY_SYSTEM on {server}"))?;
    let seg_size = conn
        .wal_segment_size()
        .await
        .map_err(flat)
        .with_context(|| format!("SHOW wal_segment_size on {server}"))?;
    let identity = ClusterIdentity {
        system_id: system.system_id,
        pg_version: conn.server_version_num(),
        wal_seg_size: seg_size.bytes(),
    };
    let (repo, _) =
        Repository::open_or_create(settings, identity, &format!("the server at {server}")).await?;
    let repo = Arc::new(repo);
    // BASE_BACKUP consumes the connection: ask everything else first.
    let data_checksums = conn
        .show("data_checksums")
        .await
        .map_err(flat)
        .with_context(|| format!("SHOW data_checksums on {server}"))?
        == "on";

    let now = chrono::Utc::now();
    let id = new_backup_id(now);
    let request = BackupRequest {
        id: id.clone(),
        label: args.label.clone(),
        system_id: system.system_id.to_string(),
        pg_version: identity.pg_version,
        data_checksums,
        start_time: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        wal_timeout: settings.backup_wal_timeout,
    };
    let options = BaseBackupOptions {
        label: args
            .label
            .clone()
            .unwrap_or_else(|| format!("walship {id}")),
        fast_checkpoint: args.checkpoint == CheckpointMode::Fast,
        progress: true,
        verify_checksums: data_checksums,
        tablespace_map: false,
        max_rate_kb,
    };
    tracing::info!(%id, server = %server, data_checksums, "starting base backup");
    let mut stream = conn
        .base_backup(&options)
        .await
        .map_err(explain)
        .with_context(|| format!("starting BASE_BACKUP on {server}"))?;
    let ingested = backup::ingest(&mut stream, &repo, &request, backup::default_in_flight())
        .await
        .with_context(|| format!("backup {id} from {server} failed; nothing was published"))?;
    // Free the WAL sender before the (possibly long) wait for WAL.
    match stream.finish().await {
        Ok(conn) => {
            let _ = conn.close().await;
        }
        Err(e) => tracing::debug!(error = %e, "closing the replication connection"),
    }
    backup::wal_wait::wait_for_wal(&repo, &ingested.manifest, settings.backup_wal_timeout)
        .await
        .with_context(|| format!("backup {id} failed; nothing was published"))?;
    repo.store_backup(&ingested.manifest, &ingested.server_manifest)
        .await
        .with_context(|| format!("publishing backup {id}"))?;
    // What earlier backups killed mid-write left behind (an hour old at least).
    for area in ["bundles", "backups"] {
        repo.remove_stale_temps(area).await;
    }
    let m = &ingested.manifest;
    tracing::info!(
        %id,
        start_lsn = %m.start_lsn,
        stop_lsn = %m.stop_lsn,
        files = m.files.len(),
        chunks = ingested.chunks,
        new_chunks = ingested.new_chunks,
        original_bytes = m.original_bytes,
        stored_bytes = m.stored_bytes,
        new_bytes = m.new_bytes,
        "backup complete"
    );
    if args.json {
        println!("{}", serde_json::json!({ "id": id }));
    } else {
        println!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}

fn max_rate() -> anyhow::Result<Option<u32>> {
    let Ok(v) = std::env::var(MAX_RATE_ENV) else {
        return Ok(None);
    };
    if v.is_empty() {
        return Ok(None);
    }
    let n: u32 = v
        .parse()
        .ok()
        .filter(|n| (32..=1_048_576).contains(n))
        .with_context(|| format!("{MAX_RATE_ENV}=`{v}`: expected kB/s between 32 and 1048576"))?;
    Ok(Some(n))
}

/// Adds what the operator should do for the errors a backup commonly meets.
fn explain(e: PgError) -> anyhow::Error {
    let hint = match e.sqlstate() {
        Some("53300") => Some(
            "every WAL sender slot is in use: raise max_wal_senders or stop another replication client",
        ),
        Some("42501") | Some("28000") => Some(
            "the role needs the REPLICATION attribute (ALTER ROLE ... REPLICATION) and a `replication` line in pg_hba.conf",
        ),
        _ => None,
    };
    match hint {
        Some(h) => anyhow::anyhow!("{h}: {e}"),
        None => flat(e),
    }
}

/// The error as one message: PostgreSQL errors print their cause already,
/// so chaining it would print it twice.
fn flat(e: PgError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}
