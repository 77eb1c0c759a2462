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
        Command::Init => multi_thread().and_then(|rt| rt.block_on(init::run(&settings))),
        Command::Info(args) => {
            multi_thread().and_then(|rt| rt.block_on(info::run(&settings, &args)))
        }
        Command::Verify(args) => {
            multi_thread().and_then(|rt| rt.block_on(verify::run(&settings, &args)))
        }
        Command::Check(args) => {
            multi_thread().and_then(|rt| rt.block_on(check::run(&settings, &args)))
        }
        Command::PrefetchWorker(args) => {
            crate::repo::prefetch::background_priority();
            multi_thread()
                .and_then(|rt| rt.block_on(archive_get::prefetch_worker(&settings, &args)))
        }
        Command::Stream(args) => {
            multi_thread().and_then(|rt| rt.block_on(stream::run(&settings, &args)))
        }
        Command::Backup(args) => {
            multi_thread().and_then(|rt| rt.block_on(backup::run(&settings, &args)))
        }
        Command::Restore(args) => {
            multi_thread().and_then(|rt| rt.block_on(restore::run(&settings, &args, global)))
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
