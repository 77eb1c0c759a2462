//! One module per command, each a thin orchestration of the library modules.

use std::process::ExitCode;

use crate::cli::Command;
use crate::config::Settings;

pub mod check;

/// archive-get's exit code for every failure that must stop recovery (not "not found").
pub const EXIT_ARCHIVE_GET_FATAL: u8 = 126;

/// Runs one command and maps its outcome to the exit codes of the interface.
pub fn run(command: Command, settings: Settings) -> ExitCode {
    let result = match command {
        Command::Check(args) => runtime().and_then(|rt| rt.block_on(check::run(&settings, &args))),
        Command::ArchiveGet(_) => {
            eprintln!("walship: archive-get is not implemented yet");
            return ExitCode::from(EXIT_ARCHIVE_GET_FATAL);
        }
        other => Err(anyhow::anyhow!(
            "{} is not implemented yet",
            command_name(&other)
        )),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("walship: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Init => "init",
        Command::ArchivePush(_) => "archive-push",
        Command::ArchiveGet(_) => "archive-get",
        Command::Stream(_) => "stream",
        Command::Backup(_) => "backup",
        Command::Restore(_) => "restore",
        Command::Info(_) => "info",
        Command::Verify(_) => "verify",
        Command::Check(_) => "check",
    }
}

/// A multi-threaded runtime for the commands that do concurrent work.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
