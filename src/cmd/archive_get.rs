//! `walship archive-get WALFILE DEST`: PostgreSQL's restore_command.
//!
//! Exit 0: DEST written atomically with verified content. Exit 1: the file is
//! not in the repository (PostgreSQL then moves on: end of archive, or probing
//! for a timeline). Exit 126 for every other failure, so that PostgreSQL stops
//! recovery rather than ending it early at the wrong point.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use std::sync::Arc;

use super::EXIT_ARCHIVE_GET_FATAL;
use crate::cli::{ArchiveGetArgs, GlobalArgs, PrefetchWorkerArgs};
use crate::config::Settings;
use crate::pg::wal::segment::WalFileName;
use crate::repo::prefetch::PrefetchSpool;
use crate::repo::Repository;

/// Runs `walship archive-get`, mapping outcomes to the interface's exit codes.
pub async fn run(settings: &Settings, args: &ArchiveGetArgs, global: &GlobalArgs) -> ExitCode {
    match fetch(settings, args).await {
        Ok(true) => {
            if settings.prefetch.depth > 0 {
                start_prefetch(&args.walfile, global);
            }
            ExitCode::SUCCESS
        }
        Ok(false) => {
            tracing::info!(file = %args.walfile, "not in the repository");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("walship: archive-get {}: {e:#}", args.walfile);
            ExitCode::from(EXIT_ARCHIVE_GET_FATAL)
        }
    }
}

async fn fetch(settings: &Settings, args: &ArchiveGetArgs) -> anyhow::Result<bool> {
    let repo = Repository::open(settings).await?;
    let seg_size = repo.seg_size()?;
    let name = WalFileName::parse(&args.walfile, seg_size)
        .with_context(|| format!("`{}` is not a WAL file name", args.walfile))?;
    let spool = if settings.prefetch.depth > 0 && matches!(name, WalFileName::Segment { .. }) {
        match PrefetchSpool::open(&settings.prefetch, &repo) {
            Ok(spool) => Some(spool),
            Err(e) => {
                tracing::warn!(error = %e, "prefetch spool unusable; reading from the repository only");
                None
            }
        }
    } else {
        None
    };
    let spooled = spool.as_ref().and_then(|s| s.take(&repo, &name));
    if let Some(spool) = &spool {
        spool.prune(&name, seg_size);
    }
    let data = match spooled {
        Some(data) => data,
        None => match repo.fetch_wal(&name).await? {
            Some(data) => data,
            None => match (&name, args.allow_partial) {
                (WalFileName::Segment { tli, segno }, true) => {
                    match repo.fetch_partial_as_segment(*tli, *segno).await? {
                        Some(data) => {
                            tracing::info!(file = %args.walfile, "served from the stored .partial (zero-padded)");
                            data
                        }
                        None => return Ok(false),
                    }
                }
                _ => return Ok(false),
            },
        },
    };
    let dest = args.dest.clone();
    tokio::task::spawn_blocking(move || write_atomically(&dest, &data))
        .await
        .context("writer task failed")??;
    Ok(true)
}

/// Writes `data` to a temp file beside `dest`, fsyncs it, renames it over
/// `dest` and fsyncs the directory: PostgreSQL never sees half a segment.
pub fn write_atomically(dest: &Path, data: &[u8]) -> anyhow::Result<()> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let file_name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: no file name", dest.display()))?;
    let tmp = dir.join(format!(".{file_name}.walship-{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dest)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", dest.display()));
    }
    Ok(())
}

/// Starts the read-ahead worker in the background: PostgreSQL waits for this
/// process to exit, not for the worker.
fn start_prefetch(walfile: &str, global: &GlobalArgs) {
    if !walfile.bytes().all(|b| b.is_ascii_hexdigit()) {
        return;
    }
    let spawned = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .args(global.to_args())
            .arg("prefetch-worker")
            .arg(walfile)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
    });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "could not start the prefetch worker");
    }
}

/// Runs the hidden `prefetch-worker` command: fills the spool after `args.after`.
pub async fn prefetch_worker(
    settings: &Settings,
    args: &PrefetchWorkerArgs,
) -> anyhow::Result<ExitCode> {
    let repo = Arc::new(Repository::open(settings).await?);
    let name = WalFileName::parse(&args.after, repo.seg_size()?)?;
    let spool = PrefetchSpool::open(&settings.prefetch, &repo)?;
    spool.fill(&repo, &name, settings.prefetch.depth).await?;
    Ok(ExitCode::SUCCESS)
}
