//! `walship init`: create the stanza from the live cluster's identity.
//! Idempotent for the same cluster; refuses another cluster.

use std::process::ExitCode;

use anyhow::Context;

use crate::config::Settings;
use crate::repo::{ClusterIdentity, Repository};

/// Connects over the replication protocol and reads what identifies the cluster.
pub async fn cluster_identity(settings: &Settings) -> anyhow::Result<(ClusterIdentity, String)> {
    let mut conn = super::connect_replication(settings).await?;
    let system = conn.identify_system().await.context("IDENTIFY_SYSTEM")?;
    let seg_size = conn
        .wal_segment_size()
        .await
        .context("SHOW wal_segment_size")?;
    let identity = ClusterIdentity {
        system_id: system.system_id,
        pg_version: conn.server_version_num(),
        wal_seg_size: seg_size.bytes(),
    };
    let _ = conn.close().await;
    Ok((identity, "the server".to_string()))
}

/// Runs `walship init`.
pub async fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    let (identity, source) = cluster_identity(settings).await?;
    let (repo, created) = Repository::open_or_create(settings, identity, &source).await?;
    let stanza = repo.stanza();
    println!(
        "stanza {} {}: system id {}, PostgreSQL {}, WAL segments of {} MiB, {}",
        stanza.name,
        if created {
            "created"
        } else {
            "already exists for this cluster"
        },
        stanza.system_id,
        stanza.pg_major(),
        stanza.wal_seg_size >> 20,
        if stanza.encryption.is_some() {
            "encrypted"
        } else {
            "not encrypted"
        },
    );
    Ok(ExitCode::SUCCESS)
}
