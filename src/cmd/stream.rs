//! `walship stream`: continuous WAL streaming until SIGTERM/SIGINT (see
//! [`crate::stream`]).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::cli::StreamArgs;
use crate::config::Settings;
use crate::stream::{self, StreamOptions};

/// Runs `walship stream`; exit 0 after a clean stop on SIGTERM or SIGINT, 1
/// when a second signal cut the final drain short.
pub async fn run(settings: &Settings, args: &StreamArgs) -> anyhow::Result<ExitCode> {
    // Usage errors: exit 2, as the interface says.
    let Some(spool) = args.spool.clone() else {
        eprintln!(
            "walship: stream needs --spool DIR: a local directory for the segment in progress"
        );
        return Ok(ExitCode::from(2));
    };
    if args.partial_interval == 0 {
        eprintln!("walship: stream: --partial-interval must be at least 1 second");
        return Ok(ExitCode::from(2));
    }
    let mut opts = StreamOptions::new(args.slot.clone(), spool);
    opts.partial_interval = Duration::from_secs(args.partial_interval);
    opts.synchronous = args.synchronous;

    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        let first = next_signal(&mut term).await;
        tracing::info!(
            "{first}: storing the partial segment and stopping (a second signal stops at once)"
        );
        let _ = tx.send(true);
        // The drain retries for up to a minute when the repository is down;
        // an operator who asks twice gets the process back. Stopping here is
        // what kill -9 does, which the spool and the slot are built for: the
        // slot keeps everything not stored, and the next start stores it.
        let again = next_signal(&mut term).await;
        tracing::warn!("{again} again: stopping without waiting for the repository; WAL not yet stored stays in the spool and the slot and is stored at the next start");
        std::process::exit(1);
    });
    stream::run(settings, &opts, rx)
        .await
        .context("walship stream")?;
    Ok(ExitCode::SUCCESS)
}

/// Waits for SIGTERM or SIGINT; returns its name.
async fn next_signal(term: &mut tokio::signal::unix::Signal) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}
