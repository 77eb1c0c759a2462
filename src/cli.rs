//! The command line: parsing, settings, logging, and the hand-over to [`crate::cmd`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{FlagValues, Settings};

/// walship: WAL archiving, base backups and point-in-time recovery for PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "walship", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Settings shared by every command (flag > environment > config file > default).
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// TOML config file with the same keys (env WALSHIP_CONFIG).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Repository: file:///abs/dir, a directory, or s3://bucket/prefix (env WALSHIP_REPO).
    #[arg(long, global = true, value_name = "URL")]
    pub repo: Option<String>,
    /// One cluster's namespace inside the repository [default: main] (env WALSHIP_STANZA).
    #[arg(long, global = true, value_name = "NAME")]
    pub stanza: Option<String>,
    /// libpq connection string, URI or key=value, without a password (env WALSHIP_PG, DATABASE_URL).
    #[arg(long, global = true, value_name = "CONNINFO")]
    pub pg: Option<String>,
    /// File with a 256-bit key as 64 hex characters (env WALSHIP_KEY_FILE; or WALSHIP_PASSPHRASE).
    #[arg(long, global = true, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Compression of stored objects [default: lz4] (env WALSHIP_COMPRESS).
    #[arg(long, global = true, value_name = "lz4|none")]
    pub compress: Option<String>,
    /// error, warn, info, debug or trace [default: info] (env WALSHIP_LOG).
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// The commands of `../shared/interface.md`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the stanza: record the cluster's system identifier, version and WAL segment size.
    Init,
    /// Store one WAL file (archive_command = 'walship archive-push %p').
    ArchivePush(ArchivePushArgs),
    /// Fetch one WAL file (restore_command = 'walship archive-get %f %p').
    ArchiveGet(ArchiveGetArgs),
    /// Stream WAL continuously over the physical replication protocol.
    Stream(StreamArgs),
    /// Take a base backup over the replication protocol (BASE_BACKUP).
    Backup(BackupArgs),
    /// Rebuild a data directory and write the recovery settings.
    Restore(RestoreArgs),
    /// Show what the repository holds.
    Info(JsonArgs),
    /// Read every object and check authenticity, checksums and WAL continuity.
    Verify(JsonArgs),
    /// Check the PostgreSQL connection: replication login, IDENTIFY_SYSTEM, settings,
    /// and optionally stream WAL for a few seconds.
    Check(CheckArgs),
    /// Internal: archive-get's background read-ahead (started by archive-get itself).
    #[command(hide = true)]
    PrefetchWorker(PrefetchWorkerArgs),
}

/// `prefetch-worker` (internal)
#[derive(Debug, Args)]
pub struct PrefetchWorkerArgs {
    /// The segment just served; the ones after it are fetched.
    pub after: String,
}

/// `archive-push`
#[derive(Debug, Args)]
pub struct ArchivePushArgs {
    /// The WAL file (segment, .history, .partial or .backup), %p.
    pub path: PathBuf,
}

/// `archive-get`
#[derive(Debug, Args)]
pub struct ArchiveGetArgs {
    /// The WAL file name asked for, %f.
    pub walfile: String,
    /// Where to write it, %p.
    pub dest: PathBuf,
    /// When the full segment is missing, serve the newest stored `.partial` of
    /// that name, zero-padded to the segment size, if it is the last segment
    /// of its timeline (recovery to the latest point only).
    #[arg(long)]
    pub allow_partial: bool,
}

/// `stream`
#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Physical replication slot (created with RESERVE_WAL when missing).
    #[arg(long, default_value = "walship")]
    pub slot: String,
    /// Local durable spool directory for the segment in progress.
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Upload the segment in progress as a .partial at most this often (seconds).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub partial_interval: u64,
    /// Acknowledge flush after the local fsync (for synchronous_standby_names).
    #[arg(long)]
    pub synchronous: bool,
}

/// `--checkpoint`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckpointMode {
    /// Request an immediate checkpoint.
    Fast,
    /// Wait for a spread checkpoint.
    Spread,
}

/// `backup`
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// A label stored with the backup.
    #[arg(long)]
    pub label: Option<String>,
    /// Checkpoint mode at the start of the backup.
    #[arg(long, value_enum, default_value_t = CheckpointMode::Fast)]
    pub checkpoint: CheckpointMode,
    /// Print `{"id": ...}`.
    #[arg(long)]
    pub json: bool,
}

/// `--target-action`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetAction {
    /// Pause at the target (PostgreSQL's default).
    Pause,
    /// Promote at the target.
    Promote,
    /// Shut down at the target.
    Shutdown,
}

/// `--archive-mode`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchiveMode {
    /// Turn archiving off in the restored cluster (drills).
    Off,
    /// Keep the archive settings of the backup.
    Preserve,
}

/// `restore`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").multiple(false).args([
    "target_time", "target_lsn", "target_xid", "target_name", "target_immediate"])))]
pub struct RestoreArgs {
    /// The data directory to rebuild.
    #[arg(long, value_name = "DIR")]
    pub pgdata: PathBuf,
    /// Backup id or `latest` (default: the newest backup that ends before the target).
    #[arg(long, value_name = "ID|latest")]
    pub backup: Option<String>,
    /// Recover to this time (ISO 8601; no zone means UTC).
    #[arg(long, value_name = "TS")]
    pub target_time: Option<String>,
    /// Recover to this LSN (X/Y).
    #[arg(long, value_name = "X/Y")]
    pub target_lsn: Option<String>,
    /// Recover to this transaction id.
    #[arg(long, value_name = "N")]
    pub target_xid: Option<String>,
    /// Recover to this named restore point.
    #[arg(long, value_name = "NAME")]
    pub target_name: Option<String>,
    /// Stop as soon as the backup is consistent.
    #[arg(long)]
    pub target_immediate: bool,
    /// What PostgreSQL does at the target.
    #[arg(long, value_enum, default_value_t = TargetAction::Pause)]
    pub target_action: TargetAction,
    /// latest, current or a timeline number (default: the timeline that contains the target).
    #[arg(long, value_name = "latest|current|N")]
    pub target_timeline: Option<String>,
    /// Stop just before the target instead of just after.
    #[arg(long)]
    pub target_exclusive: bool,
    /// Reuse files in DIR that already match the backup.
    #[arg(long)]
    pub delta: bool,
    /// Move a non-empty DIR aside to DIR.pre-restore-<time> instead of refusing.
    #[arg(long)]
    pub force: bool,
    /// Restore tablespace OID into DIR (repeatable).
    #[arg(long, value_name = "OID=DIR")]
    pub tablespace_map: Vec<String>,
    /// Archiving in the restored cluster.
    #[arg(long, value_enum, default_value_t = ArchiveMode::Preserve)]
    pub archive_mode: ArchiveMode,
    /// Print the plan and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `--json` for reporting commands.
#[derive(Debug, Args)]
pub struct JsonArgs {
    /// One JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `check`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also stream WAL for this many seconds and report what arrived.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub stream_seconds: u64,
    /// One JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

impl GlobalArgs {
    /// The flags as command-line arguments again, for a child walship process
    /// (none of them carries a secret).
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut out: Vec<std::ffi::OsString> = Vec::new();
        let mut push = |flag: &str, value: Option<std::ffi::OsString>| {
            if let Some(v) = value {
                out.push(flag.into());
                out.push(v);
            }
        };
        push("--config", self.config.clone().map(Into::into));
        push("--repo", self.repo.clone().map(Into::into));
        push("--stanza", self.stanza.clone().map(Into::into));
        push("--pg", self.pg.clone().map(Into::into));
        push("--key-file", self.key_file.clone().map(Into::into));
        push("--compress", self.compress.clone().map(Into::into));
        push("--log-level", self.log_level.clone().map(Into::into));
        out
    }

    fn flag_values(&self) -> FlagValues {
        FlagValues {
            config: self.config.clone(),
            repo: self.repo.clone(),
            stanza: self.stanza.clone(),
            pg: self.pg.clone(),
            key_file: self.key_file.clone(),
            compress: self.compress.clone(),
            log_level: self.log_level.clone(),
        }
    }
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::resolve(&cli.global.flag_values()) {
        Ok(s) => s,
        Err(e) => {
            init_logging(tracing::Level::INFO);
            eprintln!("walship: {e}");
            // archive-get must never report "not found" for a failure of ours.
            return match cli.command {
                Command::ArchiveGet(_) => ExitCode::from(crate::cmd::EXIT_ARCHIVE_GET_FATAL),
                _ => ExitCode::from(2),
            };
        }
    };
    init_logging(settings.log_level);
    crate::cmd::run(cli.command, settings, &cli.global)
}

fn init_logging(level: tracing::Level) {
    // Logs go to stderr; stdout is for the data a command reports.
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn help_lists_every_command_of_the_interface() {
        let help = Cli::command().render_help().to_string();
        for name in [
            "init",
            "archive-push",
            "archive-get",
            "stream",
            "backup",
            "restore",
            "info",
            "verify",
        ] {
            assert!(help.contains(name), "{name} missing from:\n{help}");
        }
        Cli::command().debug_assert();
    }

    #[test]
    fn restore_targets_are_exclusive() {
        let r = Cli::try_parse_from([
            "walship",
            "restore",
            "--pgdata",
            "/x",
            "--target-time",
            "2026-01-01",
            "--target-lsn",
            "0/1",
        ]);
        assert!(r.is_err());
    }
}
