//! One module per command, each a thin orchestration of the library modules.
//! This file maps their outcomes to the exit codes of the interface.

use std::process::ExitCode;

use crate::cli::{Command, GlobalArgs};
use crate::config::Settings;

pub mod archive_get;
pub mod archive_push;
pub mod check;
pub mod info;
pub mod init;
pub mod verify;

/// archive-get's exit code for every failure that must stop recovery (not "not found").
pub const EXIT_ARCHIVE_GET_FATAL: u8 = 126;

/// Runs one command and maps its outcome to the exit codes of the interface.
pub fn run(command: Command, settings: Settings, global: &GlobalArgs) -> ExitCode {
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
        Command::PrefetchWorker(args) => multi_thread()
            .and_then(|rt| rt.block_on(archive_get::prefetch_worker(&settings, &args))),
        Command::Stream(_) => Err(anyhow::anyhow!("stream is not implemented yet")),
        Command::Backup(_) => Err(anyhow::anyhow!("backup is not implemented yet")),
        Command::Restore(_) => Err(anyhow::anyhow!("restore is not implemented yet")),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("walship: {e:#}");
            ExitCode::from(1)
        }
    }
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
