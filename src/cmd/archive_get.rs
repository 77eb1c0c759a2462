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
        Ok(Fetched::Written { spooled_ahead }) => {
            // A worker only when the spool runs low: each one is a process
            // start and a repository open that replay's CPU would pay for.
            let depth = settings.prefetch.depth;
            if depth > 0 && spooled_ahead <= depth / 2 {
                start_prefetch(&args.walfile, global);
            }
            ExitCode::SUCCESS
        }
        Ok(Fetched::NotFound) => {
            tracing::info!(file = %args.walfile, "not in the repository");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("walship: archive-get {}: {e:#}", args.walfile);
            ExitCode::from(EXIT_ARCHIVE_GET_FATAL)
        }
    }
}

/// What archive-get did.
enum Fetched {
    /// DEST is written; so many segments after it wait in the read-ahead spool.
    Written { spooled_ahead: usize },
    /// Not in the repository.
    NotFound,
}

async fn fetch(settings: &Settings, args: &ArchiveGetArgs) -> anyhow::Result<Fetched> {
    let mut spooled_ahead = 0;
    // A segment the read-ahead already verified and decoded: check it and
    // rename it into place, without opening the repository at all.
    let is_segment =
        args.walfile.len() == 24 && args.walfile.bytes().all(|b| b.is_ascii_hexdigit());
    if settings.prefetch.depth > 0 && is_segment {
        match PrefetchSpool::open(settings) {
            Ok(spool) => {
                // Blocking calls on the runtime's only thread, on purpose:
                // nothing else runs yet, and a hop to a blocking-pool thread
                // (a thread start and two wake-ups) sat on replay's critical
                // path for every segment.
                let served = spool.serve(&args.walfile, &args.dest);
                spooled_ahead = spool.prune(&args.walfile);
                if served? {
                    return Ok(Fetched::Written { spooled_ahead });
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "prefetch spool unusable; reading from the repository only")
            }
        }
    }
    let repo = Repository::open(settings).await?;
    let seg_size = repo.seg_size()?;
    let name = WalFileName::parse(&args.walfile, seg_size)
        .with_context(|| format!("`{}` is not a WAL file name", args.walfile))?;
    if let Some(stored) = repo.fetch_wal_object(&name).await? {
        // Decoded straight into the destination's temp file, each thread
        // writing the chunks it decoded.
        let repo = Arc::new(repo);
        write_file(&args.dest, move |f| {
            repo.decode_wal_to_file(&name, &stored, f)?;
            Ok(())
        })
        .await?;
        return Ok(Fetched::Written { spooled_ahead });
    }
    match (&name, args.allow_partial) {
        (WalFileName::Segment { tli, segno }, true) => {
            match repo.fetch_partial_as_segment(*tli, *segno).await? {
                Some(data) => {
                    tracing::info!(file = %args.walfile, "served from the stored .partial (zero-padded)");
                    write_file(&args.dest, move |f| {
                        f.write_all(&data).map_err(anyhow::Error::from)
                    })
                    .await?;
                    Ok(Fetched::Written { spooled_ahead })
                }
                None => Ok(Fetched::NotFound),
            }
        }
        _ => Ok(Fetched::NotFound),
    }
}

/// Writes DEST atomically off the async threads.
async fn write_file(
    dest: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<()> {
    let dest = dest.to_path_buf();
    tokio::task::spawn_blocking(move || write_atomically_with(&dest, fill))
        .await
        .context("writer task failed")?
}

/// Fills a temp file beside `dest` (mode 0600, as PostgreSQL's own WAL) and
/// renames it over `dest`: PostgreSQL never sees half a segment, nor one that
/// failed verification half-way.
///
/// No fsync: DEST is PostgreSQL's scratch file (`RECOVERYXLOG`), read and
/// thrown away; when PostgreSQL keeps a restored file in pg_wal it makes it
/// durable itself (`KeepFileRestoredFromArchive` renames it with
/// `durable_rename`, which fsyncs the file and the directory), and after a
/// crash recovery asks for the segment again. An fsync here cost about a
/// third of every archive-get.
pub fn write_atomically_with(
    dest: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let file_name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: no file name", dest.display()))?;
    let tmp = dir.join(format!(".{file_name}.walship-{}.tmp", std::process::id()));
    let result = (|| -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        fill(&mut f)?;
        std::fs::rename(&tmp, dest)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", dest.display()));
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
    let spool = PrefetchSpool::open(settings)?;
    spool.fill(&repo, &name, settings.prefetch.depth).await?;
    Ok(ExitCode::SUCCESS)
}
