//! One module per command, each a thin orchestration of the library modules.
//! This file maps their outcomes to the exit codes of the interface.

use std::process::ExitCode;

use crate::cli::{Command, GlobalArgs};
use crate::config::Settings;

pub mod archive_get;
pub mod archive_push;
pub mod backup;
pub mod check;
pub mod info;
pub mod init;
pub mod restore;
pub mod stream;
pub mod verify;

/// archive-get's exit code for every failure that must stop recovery (not "not found").
pub const EXIT_ARCHIVE_GET_FATAL: u8 = 126;

/// Runs one command and maps its outcome to the exit codes of the interface.
pub fn run(command: Command, settings: Settings, global: &GlobalArgs) -> ExitCode {
    // Every command but `check` works on a repository: its absence is a usage error.
    if !matches!(command, Command::Check(_)) {
        if let Err(e) = settings.repo() {
            eprintln!("walship: {e}");
            return match command {
                Command::ArchiveGet(_) => ExitCode::from(EXIT_ARCHIVE_GET_FATAL),
                _ => ExitCode::from(2),
            };
        }
    }
    let result = match command {
        // The hooks run once per segment: a single-threaded runtime starts fastest.
        Command::ArchivePush(args) => {
            current_thread().and_then(|rt| rt.block_on(archive_push::run(&settings, &args)))
        }
        Command::ArchiveGet(args) => {
            return match current_thread() {
                Ok(rt) => rt.block_on(archive_get::run(&settings, &args, global)),
                Err(e) => {
                    eprintln!("walship: archive-get {}: {e:#}", args.walfile);
                    ExitCode::from(EXIT_ARCHIVE_GET_FATAL)
                }
            };
        }
        Command::Init => as_task(async move { init::run(&settings).await }),
        Command::Info(args) => as_task(async move { info::run(&settings, &args).await }),
        Command::Verify(args) => as_task(async move { verify::run(&settings, &args).await }),
        Command::Check(args) => as_task(async move { check::run(&settings, &args).await }),
        Command::PrefetchWorker(args) => {
            crate::repo::prefetch::background_priority();
            as_task(async move { archive_get::prefetch_worker(&settings, &args).await })
        }
        Command::Stream(args) => as_task(async move { stream::run(&settings, &args).await }),
        Command::Backup(args) => as_task(async move { backup::run(&settings, &args).await }),
        Command::Restore(args) => {
            let global = global.clone();
            as_task(async move { restore::run(&settings, &args, &global).await })
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("walship: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Opens a replication connection with the resolved `--pg` settings.
pub async fn connect_replication(
    settings: &Settings,
) -> anyhow::Result<crate::pg::conn::ReplicationConnection> {
    use anyhow::Context;
    let cfg = crate::pg::conninfo::ConnConfig::parse(&settings.pg)
        .context("PostgreSQL connection settings")?;
    crate::pg::conn::ReplicationConnection::connect(&cfg)
        .await
        .context("connecting to PostgreSQL")
}

/// Runs a command on a multi-threaded runtime as a task of its own, not as
/// the future `block_on` polls on the main thread: there, every event of a
/// socket on the reactor (which a worker thread drives) woke that worker and
/// then the main thread, two wake-ups and context switches per event. A
/// backup's stream took 22,000 of the first and 12,000 of the second; as a
/// task, the worker that sees the event runs the command itself (backup
/// wall time -17%, see docs/benchmarks.md).
fn as_task(
    command: impl std::future::Future<Output = anyhow::Result<ExitCode>> + Send + 'static,
) -> anyhow::Result<ExitCode> {
    multi_thread()?.block_on(async {
        tokio::spawn(command)
            .await
            .map_err(|e| anyhow::anyhow!("the command's task failed: {e}"))?
    })
}

fn multi_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
