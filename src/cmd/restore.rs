//! `walship restore --pgdata DIR`: plan (and prove the WAL is all there)
//! before writing anything, then write the data directory, the recovery
//! settings, and `global/pg_control` last. See `docs/restore.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::cli::{Cli, GlobalArgs, RestoreArgs};
use crate::config::Settings;
use crate::repo::Repository;
use crate::restore::plan::{describe, make_plan, ArchiveView, PlanRequest};
use crate::restore::recovery::{recovery_settings, restore_command, write_recovery};
use crate::restore::target::{parse_target, Target, TimelineChoice};
use crate::restore::writer::{
    check_dirs, parse_tablespace_map, prepare_dirs, tablespace_locations, write_backup,
    write_control, WriteOptions, DEFAULT_IN_FLIGHT,
};

/// Whether this build's archive-get has `--allow-partial` (serve the newest
/// `.partial` when the full segment is not archived yet).
fn archive_get_allows_partial() -> bool {
    use clap::CommandFactory;
    Cli::command()
        .find_subcommand("archive-get")
        .is_some_and(|c| {
            c.get_arguments()
                .any(|a| a.get_long() == Some("allow-partial"))
        })
}

/// Runs `walship restore`.
pub async fn run(
    settings: &Settings,
    args: &RestoreArgs,
    global: &GlobalArgs,
) -> anyhow::Result<ExitCode> {
    // A malformed option is a usage error (exit 2), like clap's own.
    let parsed = (|| {
        Ok::<_, crate::restore::RestoreError>((
            parse_target(
                args.target_time.as_deref(),
                args.target_lsn.as_deref(),
                args.target_xid.as_deref(),
                args.target_name.as_deref(),
                args.target_immediate,
            )?,
            TimelineChoice::parse(args.target_timeline.as_deref())?,
            parse_tablespace_map(&args.tablespace_map)?,
        ))
    })();
    let (target, timeline, map) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("walship: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let dir = absolute(&args.pgdata)?;
    let repo = Arc::new(
        Repository::open(settings)
            .await
            .context("cannot open the repository")?,
    );
    let mut view = ArchiveView::load(&repo)
        .await
        .context("cannot read the repository's backups and WAL catalog")?;
    if let Target::Xid(xid) = target {
        view.read_xid_candidates(&repo, xid)
            .await
            .with_context(|| format!("cannot read the WAL that may finish xid {xid}"))?;
    }
    let allow_partial = target == Target::Latest && archive_get_allows_partial();
    let plan = make_plan(
        &view,
        &PlanRequest {
            backup: args.backup.clone(),
            target: target.clone(),
            timeline,
            exclusive: args.target_exclusive,
            allow_partial,
        },
    )?;
    let manifest = view
        .backups
        .iter()
        .find(|b| b.id == plan.backup_id)
        .context("the planned backup vanished from the view")?
        .clone();
    let tablespaces = tablespace_locations(&manifest, &map)?;
    let opts = WriteOptions {
        delta: args.delta,
        force: args.force,
        tablespace_map: map,
        in_flight: DEFAULT_IN_FLIGHT,
    };
    let config = global.config.clone().or_else(|| {
        std::env::var_os("WALSHIP_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let exe = std::env::current_exe().context("cannot find the path of this walship binary")?;
    let rc = restore_command(&exe, settings, config.as_deref(), allow_partial)?;
    let lines = recovery_settings(
        &rc.command,
        &target,
        args.target_exclusive,
        args.target_action,
        &plan.recovery_target_timeline,
        args.archive_mode,
    );

    if args.dry_run {
        print!("{}", describe(&plan));
        println!("data dir:   {}", dir.display());
        if let Err(e) = check_dirs(&dir, &tablespaces, &opts) {
            println!("            WARNING: a restore would be refused: {e}");
        }
        for (oid, loc) in &tablespaces {
            println!("tablespace: {oid} -> {}", loc.display());
        }
        println!("recovery settings (appended to postgresql.auto.conf):");
        for (k, v) in &lines {
            println!("  {k} = {}", crate::restore::recovery::conf_quote(v));
        }
        for n in &rc.notes {
            println!("note: {n}");
        }
        println!("dry run: nothing was written");
        return Ok(ExitCode::SUCCESS);
    }

    let moved = prepare_dirs(&dir, &tablespaces, &opts)?;
    let mut stats = write_backup(Arc::clone(&repo), &manifest, &dir, &tablespaces, &opts).await?;
    stats.moved_aside = moved;
    let header = format!(
        "walship restore {}: backup {}, target {}, timeline {}",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        plan.backup_id,
        plan.target,
        plan.recovery_target_timeline
    );
    let dir2 = dir.clone();
    tokio::task::spawn_blocking(move || write_recovery(&dir2, &header, &lines))
        .await
        .context("recovery settings writer failed")??;
    write_control(&repo, &manifest, &dir).await?;

    print!("{}", describe(&plan));
    if let Some(aside) = &stats.moved_aside {
        println!(
            "previous:   {} was moved to {} (remove it once the restore is good)",
            dir.display(),
            aside.display()
        );
    }
    println!(
        "restored:   {} files into {}: {} chunks fetched ({:.1} MiB), {} reused ({:.1} MiB){}",
        stats.files,
        dir.display(),
        stats.chunks_fetched,
        stats.bytes_fetched as f64 / 1048576.0,
        stats.chunks_reused,
        stats.bytes_reused as f64 / 1048576.0,
        if args.delta {
            format!(", {} stale entries removed", stats.removed)
        } else {
            String::new()
        }
    );
    for n in &rc.notes {
        println!("note: {n}");
    }
    println!(
        "next:       start PostgreSQL on {} (pg_ctl -D {} start); it replays WAL to {}{}",
        dir.display(),
        dir.display(),
        plan.target,
        match (target, args.target_action) {
            (Target::Latest, _) => ", then promotes".to_string(),
            (_, a) => format!(", then {}", format!("{a:?}").to_lowercase()),
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn absolute(p: &std::path::Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("cannot read the current directory")?
            .join(p))
    }
}
