//! `walship check`: is the replication connection usable? (Filled in once the
//! protocol client lands.)

use std::process::ExitCode;

use crate::cli::CheckArgs;
use crate::config::Settings;

/// Runs `walship check`.
pub async fn run(settings: &Settings, args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let _ = (settings, args);
    anyhow::bail!("check is not implemented yet")
}
