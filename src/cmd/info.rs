//! `walship info`: what the repository holds (text, or `--json` for machines).

use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;

use crate::cli::JsonArgs;
use crate::config::Settings;
use crate::pg::wal::segment::segment_file_name;
use crate::repo::catalog::{wal_window, RecoverableWindow, WalCatalog};
use crate::repo::Repository;

/// The `info --json` document (fields of `../shared/interface.md`, plus a few).
#[derive(Debug, Serialize)]
pub struct Info {
    /// Stanza name.
    pub stanza: String,
    /// System identifier (decimal text).
    pub system_id: String,
    /// `server_version_num` recorded in the stanza.
    pub pg_version: u32,
    /// WAL segment size in bytes.
    pub wal_segment_size: u32,
    /// Whether objects are encrypted.
    pub encrypted: bool,
    /// `lz4` or `none`.
    pub compression: crate::codec::Compression,
    /// Base backups, oldest first.
    pub backups: Vec<BackupInfo>,
    /// WAL per timeline.
    pub timelines: Vec<TimelineInfo>,
    /// The recoverable window.
    pub recoverable: RecoverableWindow,
    /// What `walship stream` last reported, when a streamer ever ran.
    pub streaming: Option<StreamingInfo>,
}

/// The streamer's last status (`<stanza>/status/stream`) and its age.
#[derive(Debug, Serialize)]
pub struct StreamingInfo {
    /// The status as written by the streamer.
    #[serde(flatten)]
    pub status: crate::stream::status::StreamStatus,
    /// Seconds since the status was written (a running streamer rewrites it
    /// every few seconds while WAL moves).
    pub status_age_seconds: Option<f64>,
}

/// One base backup (the interface's fields, plus a few).
#[derive(Debug, Serialize)]
pub struct BackupInfo {
    /// Backup id.
    pub id: String,
    /// `--label`.
    pub label: Option<String>,
    /// Timeline at the start.
    pub timeline: u32,
    /// Start LSN (`X/Y`).
    pub start_lsn: String,
    /// Stop LSN (`X/Y`).
    pub stop_lsn: String,
    /// RFC 3339 UTC.
    pub start_time: String,
    /// RFC 3339 UTC.
    pub stop_time: String,
    /// Bytes of all files as PostgreSQL sent them.
    pub original_bytes: u64,
    /// Stored bytes of every chunk the backup references.
    pub stored_bytes: u64,
    /// Stored bytes this backup added.
    pub new_bytes: u64,
    /// Number of files, directories and links.
    pub files: usize,
    /// Whether the cluster had data checksums.
    pub data_checksums: bool,
}

impl From<&crate::repo::backup::BackupManifest> for BackupInfo {
    fn from(m: &crate::repo::backup::BackupManifest) -> Self {
        BackupInfo {
            id: m.id.clone(),
            label: m.label.clone(),
            timeline: m.timeline,
            start_lsn: m.start_lsn.to_string(),
            stop_lsn: m.stop_lsn.to_string(),
            start_time: m.start_time.clone(),
            stop_time: m.stop_time.clone(),
            original_bytes: m.original_bytes,
            stored_bytes: m.stored_bytes,
            new_bytes: m.new_bytes,
            files: m.files.len(),
            data_checksums: m.data_checksums,
        }
    }
}

/// One timeline of the WAL archive.
#[derive(Debug, Serialize)]
pub struct TimelineInfo {
    /// Timeline id.
    pub timeline: u32,
    /// First full segment.
    pub first_segment: Option<String>,
    /// Last full segment.
    pub last_segment: Option<String>,
    /// Number of full segments.
    pub segments: usize,
    /// Missing segments between first and last.
    pub gaps: Vec<GapInfo>,
    /// The newest `.partial` segment, when one is stored.
    pub partial: Option<String>,
    /// Whether the timeline's history file is stored (timelines above 1 need it).
    pub history_file: bool,
}

/// A run of missing segments.
#[derive(Debug, Serialize)]
pub struct GapInfo {
    /// First missing segment.
    pub first_missing: String,
    /// Last missing segment.
    pub last_missing: String,
}

/// Gathers the info document.
pub async fn gather(settings: &Settings) -> anyhow::Result<Info> {
    let repo = Arc::new(Repository::open(settings).await?);
    let seg_size = repo.seg_size()?;
    let catalog = WalCatalog::load(&repo).await?;
    let index = catalog.load_index(&repo).await?;
    let timelines = catalog
        .timelines
        .iter()
        .map(|(&tli, files)| TimelineInfo {
            timeline: tli,
            first_segment: files
                .range()
                .map(|(f, _)| segment_file_name(tli, f, seg_size)),
            last_segment: files
                .range()
                .map(|(_, l)| segment_file_name(tli, l, seg_size)),
            segments: files.segments.len(),
            gaps: files
                .gaps()
                .iter()
                .map(|g| GapInfo {
                    first_missing: segment_file_name(tli, g.first, seg_size),
                    last_missing: segment_file_name(tli, g.last, seg_size),
                })
                .collect(),
            partial: files
                .partials
                .keys()
                .next_back()
                .map(|&s| format!("{}.partial", segment_file_name(tli, s, seg_size))),
            history_file: files.history.is_some(),
        })
        .collect();
    let stanza = repo.stanza();
    Ok(Info {
        stanza: stanza.name.clone(),
        system_id: stanza.system_id.clone(),
        pg_version: stanza.pg_version,
        wal_segment_size: stanza.wal_seg_size,
        encrypted: stanza.encryption.is_some(),
        compression: stanza.compression,
        backups: repo
            .list_backups()
            .await?
            .iter()
            .map(BackupInfo::from)
            .collect(),
        timelines,
        recoverable: wal_window(&catalog, &index, seg_size),
        streaming: streaming_info(&repo).await,
    })
}

/// The stream status; a status that cannot be read is logged, never fatal.
async fn streaming_info(repo: &Repository) -> Option<StreamingInfo> {
    match crate::stream::status::read_status(repo).await {
        Ok(Some(status)) => {
            let age = chrono::DateTime::parse_from_rfc3339(&status.updated_at)
                .ok()
                .map(|t| {
                    (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds() as f64
                        / 1000.0
                });
            Some(StreamingInfo {
                status,
                status_age_seconds: age,
            })
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the stream status");
            None
        }
    }
}

/// Runs `walship info`.
pub async fn run(settings: &Settings, args: &JsonArgs) -> anyhow::Result<ExitCode> {
    let info = gather(settings).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("stanza: {}", info.stanza);
    println!("  system id:       {}", info.system_id);
    println!("  PostgreSQL:      {}", info.pg_version / 10000);
    println!("  segment size:    {} MiB", info.wal_segment_size >> 20);
    println!(
        "  storage:         {}, {}",
        if info.encrypted {
            "encrypted (AES-256-GCM)"
        } else {
            "not encrypted"
        },
        match info.compression {
            crate::codec::Compression::Lz4 => "lz4",
            crate::codec::Compression::None => "uncompressed",
        }
    );
    println!(
        "backups: {}",
        if info.backups.is_empty() { "none" } else { "" }
    );
    for b in &info.backups {
        println!(
            "  {}{}: timeline {}, {} .. {} ({} .. {}), {} original, {} stored, {} new",
            b.id,
            b.label
                .as_deref()
                .map(|l| format!(" [{l}]"))
                .unwrap_or_default(),
            b.timeline,
            b.start_lsn,
            b.stop_lsn,
            b.start_time,
            b.stop_time,
            b.original_bytes,
            b.stored_bytes,
            b.new_bytes
        );
    }
    println!("WAL:");
    if info.timelines.is_empty() {
        println!("  none archived yet");
    }
    for t in &info.timelines {
        println!(
            "  timeline {}: {} segments, {} .. {}{}",
            t.timeline,
            t.segments,
            t.first_segment.as_deref().unwrap_or("-"),
            t.last_segment.as_deref().unwrap_or("-"),
            t.partial
                .as_deref()
                .map(|p| format!(", partial {p}"))
                .unwrap_or_default()
        );
        for g in &t.gaps {
            println!("    GAP: {} .. {} missing", g.first_missing, g.last_missing);
        }
    }
    if let Some(st) = &info.streaming {
        let s = &st.status;
        println!(
            "streaming ({}, slot {}{}):",
            s.state,
            s.slot,
            if s.synchronous { ", synchronous" } else { "" }
        );
        println!(
            "  timeline {}: received {}, stored {}, server {}",
            s.timeline, s.received_lsn, s.stored_lsn, s.server_lsn
        );
        println!("  lag: {} bytes, {:.1} s", s.lag_bytes, s.lag_seconds);
        println!(
            "  last stored: {} at {}",
            s.last_stored_object.as_deref().unwrap_or("-"),
            s.last_stored_at.as_deref().unwrap_or("-")
        );
        println!(
            "  status written {} ({:.0} s ago)",
            s.updated_at,
            st.status_age_seconds.unwrap_or(0.0)
        );
    }
    let w = &info.recoverable;
    println!("recoverable window (from the archived WAL):");
    println!("  earliest: {}", w.earliest_time.as_deref().unwrap_or("-"));
    println!(
        "  latest:   {} (LSN {})",
        w.latest_time.as_deref().unwrap_or("-"),
        w.latest_lsn
            .map(|l| l.to_string())
            .unwrap_or_else(|| "-".into())
    );
    Ok(ExitCode::SUCCESS)
}
