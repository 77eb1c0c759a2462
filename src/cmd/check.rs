//! `walship check`: is PostgreSQL reachable for walship? Logs in over the
//! replication protocol, runs IDENTIFY_SYSTEM, reads the settings walship
//! relies on, and with `--stream-seconds` streams WAL for a while and reports
//! what arrived.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::cli::CheckArgs;
use crate::config::Settings;
use crate::pg::replication::StreamMessage;

/// The `check --json` document.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// System identifier.
    pub system_id: String,
    /// `server_version_num`.
    pub server_version: u32,
    /// Current timeline.
    pub timeline: u32,
    /// Current WAL flush position.
    pub xlogpos: String,
    /// WAL segment size in bytes.
    pub wal_segment_size: u32,
    /// `max_wal_senders`.
    pub max_wal_senders: String,
    /// Streaming results when asked for.
    pub streamed: Option<StreamedReport>,
}

/// What `--stream-seconds` saw.
#[derive(Debug, Serialize)]
pub struct StreamedReport {
    /// XLogData messages.
    pub xlogdata_messages: u64,
    /// WAL bytes received.
    pub wal_bytes: u64,
    /// Keepalives received.
    pub keepalives: u64,
    /// Position streaming started at.
    pub from: String,
    /// Position reached.
    pub to: String,
}

/// Runs `walship check`.
pub async fn run(settings: &Settings, args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let mut conn = super::connect_replication(settings).await?;
    let system = conn.identify_system().await.context("IDENTIFY_SYSTEM")?;
    let seg_size = conn
        .wal_segment_size()
        .await
        .context("SHOW wal_segment_size")?;
    let max_wal_senders = conn
        .show("max_wal_senders")
        .await
        .context("SHOW max_wal_senders")?;
    let mut report = CheckReport {
        system_id: system.system_id.to_string(),
        server_version: conn.server_version_num(),
        timeline: system.timeline,
        xlogpos: system.xlogpos.to_string(),
        wal_segment_size: seg_size.bytes(),
        max_wal_senders,
        streamed: None,
    };
    if args.stream_seconds > 0 {
        // Start at the beginning of the current segment: always still on the server.
        let start =
            crate::pg::wal::Lsn::from_segment(system.xlogpos.segment_number(seg_size), seg_size);
        let mut stream = conn
            .start_replication(None, start, system.timeline)
            .await
            .context("START_REPLICATION")?;
        let deadline = Instant::now() + Duration::from_secs(args.stream_seconds);
        let mut s = StreamedReport {
            xlogdata_messages: 0,
            wal_bytes: 0,
            keepalives: 0,
            from: start.to_string(),
            to: start.to_string(),
        };
        while let Ok(msg) = tokio::time::timeout_at(deadline.into(), stream.next_message()).await {
            match msg.context("streaming WAL")? {
                StreamMessage::XLogData { start, data, .. } => {
                    s.xlogdata_messages += 1;
                    s.wal_bytes += data.len() as u64;
                    s.to = (start + data.len() as u64).to_string();
                }
                StreamMessage::Keepalive { .. } => s.keepalives += 1,
                StreamMessage::EndOfTimeline => break,
            }
        }
        report.streamed = Some(s);
        let _ = stream.finish().await;
    } else {
        let _ = conn.close().await;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "connected: PostgreSQL {} (server_version_num {})",
            report.server_version / 10000,
            report.server_version
        );
        println!("  system id:        {}", report.system_id);
        println!("  timeline:         {}", report.timeline);
        println!("  WAL position:     {}", report.xlogpos);
        println!("  segment size:     {} MiB", report.wal_segment_size >> 20);
        println!("  max_wal_senders:  {}", report.max_wal_senders);
        if let Some(s) = &report.streamed {
            println!(
                "  streamed:         {} bytes of WAL in {} messages ({} keepalives), {} .. {}",
                s.wal_bytes, s.xlogdata_messages, s.keepalives, s.from, s.to
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
