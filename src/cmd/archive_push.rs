//! `walship archive-push PATH`: PostgreSQL's archive_command.
//!
//! Exit 0 only once the file is durably stored (or an identical copy already
//! was); exit 1 otherwise, and PostgreSQL retries. It runs once per segment, so
//! it does only what this one push needs: read the stanza, read the file,
//! store it, write its index entry.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::ArchivePushArgs;
use crate::config::Settings;
use crate::pg::wal::page::parse_segment_start;
use crate::pg::wal::segment::WalFileName;
use crate::repo::wal::PushOutcome;
use crate::repo::{ClusterIdentity, RepoError, Repository};

/// Runs `walship archive-push`.
pub async fn run(settings: &Settings, args: &ArchivePushArgs) -> anyhow::Result<ExitCode> {
    let path = &args.path;
    let file_name = wal_file_name(path)?;
    let data = read_wal_file(path)
        .await
        .with_context(|| format!("cannot read WAL file {}", path.display()))?;
    let origin = path.display().to_string();

    let repo = match Repository::open(settings).await {
        Ok(repo) => repo,
        // The first push creates the stanza from the segment's own header.
        Err(RepoError::StanzaMissing { .. }) if looks_like_segment(file_name) => {
            let start = parse_segment_start(&data)
                .with_context(|| format!("{origin}: not a WAL segment"))?;
            let major = start.pg_major.with_context(|| {
                format!("{origin}: unknown WAL page magic, not a PostgreSQL 13-18 segment")
            })?;
            let identity = ClusterIdentity {
                system_id: start.system_id,
                pg_version: major * 10000,
                wal_seg_size: start.seg_size,
            };
            Repository::open_or_create(settings, identity, &origin)
                .await?
                .0
        }
        Err(e) => return Err(e.into()),
    };

    let name = WalFileName::parse(file_name, repo.seg_size()?)
        .with_context(|| format!("{origin}: not a WAL file name"))?;
    match repo.push_wal(&name, data, &origin).await? {
        PushOutcome::Stored => tracing::debug!(file = file_name, "stored"),
        PushOutcome::Duplicate => {
            tracing::warn!(
                file = file_name,
                "already in the repository with identical content: nothing to do"
            )
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn read_wal_file(path: &Path) -> std::io::Result<bytes::Bytes> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || crate::storage::mapped::read_file(&path))
        .await
        .map_err(std::io::Error::other)?
}

fn wal_file_name(path: &Path) -> anyhow::Result<&str> {
    path.file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: no WAL file name in this path", path.display()))
}

fn looks_like_segment(name: &str) -> bool {
    let base = name.strip_suffix(".partial").unwrap_or(name);
    base.len() == 24 && base.bytes().all(|b| b.is_ascii_hexdigit())
}
