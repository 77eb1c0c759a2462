//! `walship verify`: reads every object and reports every problem, each named
//! with its object. Exit 0 only when there is none.

use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;

use crate::cli::JsonArgs;
use crate::config::Settings;
use crate::pg::wal::segment::{segment_file_name, WalFileName};
use crate::repo::catalog::WalCatalog;
use crate::repo::wal::content_checksum;
use crate::repo::Repository;

/// One problem found.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The object or file concerned.
    pub object: String,
    /// What is wrong.
    pub problem: String,
}

/// The `verify --json` document.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Objects read.
    pub objects_checked: usize,
    /// Bytes of plaintext verified.
    pub bytes_checked: u64,
    /// Problems in the WAL archive.
    pub wal_problems: Vec<Problem>,
    /// Backups whose manifest was read.
    pub backups_checked: usize,
    /// Distinct backup chunks decoded.
    pub chunks_checked: usize,
    /// Problems of the backups: manifests, chunks, the WAL they need.
    pub backup_problems: Vec<Problem>,
}

/// Runs `walship verify`.
pub async fn run(settings: &Settings, args: &JsonArgs) -> anyhow::Result<ExitCode> {
    let repo = Arc::new(Repository::open(settings).await?);
    let mut report = verify_wal(&repo).await?;
    let backups = crate::backup::verify::verify_backups(&repo).await?;
    report.backups_checked = backups.backups;
    report.chunks_checked = backups.chunks;
    report.bytes_checked += backups.chunk_bytes;
    report.backup_problems = backups
        .problems
        .into_iter()
        .map(|p| Problem {
            object: p.object,
            problem: p.problem,
        })
        .collect();
    let clean = report.wal_problems.is_empty() && report.backup_problems.is_empty();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "checked {} objects ({} bytes of WAL)",
            report.objects_checked, report.bytes_checked
        );
        println!(
            "checked {} backups ({} chunks)",
            report.backups_checked, report.chunks_checked
        );
        if clean {
            println!("no problems found");
        }
        for p in report.wal_problems.iter().chain(&report.backup_problems) {
            println!("PROBLEM {}: {}", p.object, p.problem);
        }
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Reads every WAL object: decodes it (authenticity, checksum), checks segments
/// against the stanza and their index entries, and reports gaps per timeline.
pub async fn verify_wal(repo: &Arc<Repository>) -> anyhow::Result<Report> {
    let seg_size = repo.seg_size()?;
    let catalog = WalCatalog::load(repo).await?;
    let mut problems = Vec::new();
    for key in &catalog.unknown {
        problems.push(Problem {
            object: key.clone(),
            problem: "not a WAL file name".into(),
        });
    }
    let mut names = Vec::new();
    for (&tli, files) in &catalog.timelines {
        for g in files.gaps() {
            problems.push(Problem {
                object: format!("timeline {tli}"),
                problem: format!(
                    "gap: {} .. {} missing",
                    segment_file_name(tli, g.first, seg_size),
                    segment_file_name(tli, g.last, seg_size)
                ),
            });
        }
        if tli > 1 && files.history.is_none() {
            problems.push(Problem {
                object: format!("timeline {tli}"),
                problem: format!("history file {tli:08X}.history missing"),
            });
        }
        for &segno in files.segments.keys() {
            names.push(WalFileName::Segment { tli, segno });
        }
        for &segno in files.partials.keys() {
            names.push(WalFileName::Partial { tli, segno });
        }
        if files.history.is_some() {
            names.push(WalFileName::History { tli });
        }
    }

    let mut checked = 0usize;
    let mut bytes = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    let mut pending = names.into_iter();
    const IN_FLIGHT: usize = 4;
    loop {
        while tasks.len() < IN_FLIGHT {
            let Some(name) = pending.next() else { break };
            let repo = Arc::clone(repo);
            tasks.spawn(async move { check_one(&repo, name).await });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (size, mut found) = joined?;
        checked += 1;
        bytes += size;
        problems.append(&mut found);
    }
    problems.sort_by(|a, b| a.object.cmp(&b.object));
    Ok(Report {
        objects_checked: checked,
        bytes_checked: bytes,
        wal_problems: problems,
        backups_checked: 0,
        chunks_checked: 0,
        backup_problems: Vec::new(),
    })
}

async fn check_one(repo: &Repository, name: WalFileName) -> (u64, Vec<Problem>) {
    let Ok(seg_size) = repo.seg_size() else {
        return (0, Vec::new());
    };
    let file = name.file_name(seg_size);
    let mut problems = Vec::new();
    let data = match repo.fetch_wal(&name).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            problems.push(Problem {
                object: file,
                problem: "listed but vanished while verifying".into(),
            });
            return (0, problems);
        }
        Err(e) => {
            problems.push(Problem {
                object: file,
                problem: e.to_string(),
            });
            return (0, problems);
        }
    };
    if let WalFileName::Segment { tli, .. } = name {
        match repo.get_index(tli, &file).await {
            Ok(Some(entry)) if entry.checksum != content_checksum(&data) => {
                problems.push(Problem {
                    object: file.clone(),
                    problem: "content does not match the checksum in its index entry".into(),
                })
            }
            Ok(Some(_)) => {}
            Ok(None) => problems.push(Problem {
                object: file.clone(),
                problem: "no index entry".into(),
            }),
            Err(e) => problems.push(Problem {
                object: format!("{file} (index)"),
                problem: e.to_string(),
            }),
        }
    }
    (data.len() as u64, problems)
}
