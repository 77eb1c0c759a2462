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

use super::EXIT_ARCHIVE_GET_FATAL;
use crate::cli::ArchiveGetArgs;
use crate::config::Settings;
use crate::pg::wal::segment::WalFileName;
use crate::repo::Repository;

/// Runs `walship archive-get`, mapping outcomes to the interface's exit codes.
pub async fn run(settings: &Settings, args: &ArchiveGetArgs) -> ExitCode {
    match fetch(settings, args).await {
        Ok(true) => ExitCode::SUCCESS,
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
    let name = WalFileName::parse(&args.walfile, repo.seg_size()?)
        .with_context(|| format!("`{}` is not a WAL file name", args.walfile))?;
    let Some(data) = repo.fetch_wal(&name).await? else {
        return Ok(false);
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
