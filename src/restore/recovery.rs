//! The recovery settings: a `restore_command` that calls this walship binary
//! with the same repository, stanza and key settings, the `recovery_target_*`
//! settings, appended to `postgresql.auto.conf`, and `recovery.signal`.
//!
//! Nothing else of the user's configuration changes. Secrets never go into
//! the command: a key file is passed by path; a passphrase must be in
//! PostgreSQL's environment as `WALSHIP_PASSPHRASE`; S3 credentials come
//! from PostgreSQL's environment (or the AWS chain) too. The S3 endpoint,
//! region and addressing style are not secret and are passed as
//! `WALSHIP_S3_*=...` assignments in front of the command.

use std::fs;
use std::path::{Path, PathBuf};

use super::target::{format_time, Target};
use super::writer::write_durably;
use super::RestoreError;
use crate::cli::{ArchiveMode, TargetAction};
use crate::config::{KeySource, RepoLocation, Settings};

/// The `restore_command` and what the operator must know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreCommand {
    /// The command, as PostgreSQL runs it (`%` of paths already doubled).
    pub command: String,
    /// Things the environment of PostgreSQL must provide.
    pub notes: Vec<String>,
}

/// Quotes a word for `sh -c` when it needs it.
pub fn sh_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:=@%+-,".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Quotes a value for postgresql.conf (`'` doubled, `\` escaped).
pub fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

fn absolute(p: &Path) -> PathBuf {
    if let Ok(c) = fs::canonicalize(p) {
        return c;
    }
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Builds the restore_command for `exe` (this binary) with the settings of
/// this run. `config` is the config file given, if any; `allow_partial`
/// adds `--allow-partial` to archive-get (recovery to the latest point).
pub fn restore_command(
    exe: &Path,
    settings: &Settings,
    config: Option<&Path>,
    allow_partial: bool,
) -> Result<RestoreCommand, RestoreError> {
    let mut words: Vec<String> = Vec::new();
    let mut notes = Vec::new();
    let repo = settings
        .repo()
        .map_err(|e| RestoreError::BadInput(e.to_string()))?;
    let repo_text = match repo {
        RepoLocation::Fs(p) => absolute(p).to_string_lossy().into_owned(),
        RepoLocation::S3 { bucket, prefix } => {
            let s3 = &settings.s3;
            if let Some(e) = &s3.endpoint {
                words.push(format!("WALSHIP_S3_ENDPOINT={}", sh_quote(e)));
            }
            if let Some(r) = &s3.region {
                words.push(format!("WALSHIP_S3_REGION={}", sh_quote(r)));
            }
            if s3.path_style {
                words.push("WALSHIP_S3_PATH_STYLE=true".into());
            }
            if s3.checksum_when_required {
                words.push("WALSHIP_S3_CHECKSUM=when_required".into());
            }
            notes.push(
                "S3 credentials are not written into restore_command: PostgreSQL's environment \
                 must provide them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or the AWS chain: \
                 instance profile, ~/.aws of the postgres user)"
                    .into(),
            );
            if prefix.is_empty() {
                format!("s3://{bucket}")
            } else {
                format!("s3://{bucket}/{prefix}")
            }
        }
    };
    words.push(sh_quote(&exe.to_string_lossy()));
    if let Some(c) = config {
        words.push("--config".into());
        words.push(sh_quote(&absolute(c).to_string_lossy()));
    }
    words.push("--repo".into());
    words.push(sh_quote(&repo_text));
    words.push("--stanza".into());
    words.push(sh_quote(&settings.stanza));
    match &settings.key {
        KeySource::None => {}
        KeySource::File(p) => {
            words.push("--key-file".into());
            words.push(sh_quote(&absolute(p).to_string_lossy()));
            notes.push(format!(
                "the key file {} must be readable by the user PostgreSQL runs as",
                absolute(p).display()
            ));
        }
        KeySource::Passphrase(_) => notes.push(
            "the repository key is a passphrase: it is NOT written into restore_command; \
             start PostgreSQL with WALSHIP_PASSPHRASE in its environment"
                .into(),
        ),
    }
    words.push("archive-get".into());
    if allow_partial {
        words.push("--allow-partial".into());
    }
    // PostgreSQL expands %f, %p, %r and %%: escape every % of ours.
    let mut command = words.join(" ").replace('%', "%%");
    command.push_str(" %f %p");
    Ok(RestoreCommand { command, notes })
}

/// The settings appended to `postgresql.auto.conf`, in order.
pub fn recovery_settings(
    restore_command: &str,
    target: &Target,
    exclusive: bool,
    action: TargetAction,
    timeline: &str,
    archive_mode: ArchiveMode,
) -> Vec<(&'static str, String)> {
    let mut s: Vec<(&'static str, String)> = vec![("restore_command", restore_command.into())];
    // Every target setting is given, the unused ones empty: a target left in
    // the backup's own postgresql.auto.conf (a restored cluster backed up
    // again) would otherwise combine with ours into "multiple recovery targets".
    let mut targets: Vec<(&'static str, String)> = vec![
        ("recovery_target", String::new()),
        ("recovery_target_lsn", String::new()),
        ("recovery_target_name", String::new()),
        ("recovery_target_time", String::new()),
        ("recovery_target_xid", String::new()),
    ];
    let chosen = match target {
        Target::Latest => None,
        Target::Immediate => Some(("recovery_target", "immediate".to_string())),
        Target::Lsn(l) => Some(("recovery_target_lsn", l.to_string())),
        Target::Name(n) => Some(("recovery_target_name", n.clone())),
        Target::Time(t) => Some(("recovery_target_time", format_time(*t))),
        Target::Xid(x) => Some(("recovery_target_xid", x.to_string())),
    };
    if let Some((k, v)) = chosen {
        targets.retain(|(key, _)| *key != k);
        targets.push((k, v));
    }
    s.extend(targets);
    s.push((
        "recovery_target_inclusive",
        if exclusive { "false" } else { "true" }.into(),
    ));
    s.push(("recovery_target_timeline", timeline.into()));
    s.push((
        "recovery_target_action",
        match action {
            TargetAction::Pause => "pause",
            TargetAction::Promote => "promote",
            TargetAction::Shutdown => "shutdown",
        }
        .into(),
    ));
    if archive_mode == ArchiveMode::Off {
        s.push(("archive_mode", "off".into()));
    }
    s
}

/// Appends the settings to `postgresql.auto.conf` (durably: temp file,
/// fsync, rename) and creates `recovery.signal`.
pub fn write_recovery(
    dir: &Path,
    header: &str,
    settings: &[(&'static str, String)],
) -> Result<(), RestoreError> {
    let auto = dir.join("postgresql.auto.conf");
    let mut text = match fs::read_to_string(&auto) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n"
                .to_string()
        }
        Err(e) => return Err(RestoreError::io("read", &auto)(e)),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for line in header.lines() {
        text.push_str("# ");
        text.push_str(line);
        text.push('\n');
    }
    for (k, v) in settings {
        text.push_str(&format!("{k} = {}\n", conf_quote(v)));
    }
    write_durably(&auto, text.as_bytes(), 0o600)?;
    write_durably(&dir.join("recovery.signal"), b"", 0o600)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::pg::wal::Lsn;

    /// Settings resolved from a fake environment (robust to new fields).
    fn settings(repo: RepoLocation, key: KeySource) -> Settings {
        let env = |k: &str| -> Option<String> {
            match k {
                "WALSHIP_S3_ENDPOINT" => Some("http://127.0.0.1:9000".into()),
                "WALSHIP_S3_REGION" => Some("us-east-1".into()),
                "WALSHIP_S3_PATH_STYLE" => Some("true".into()),
                "AWS_ACCESS_KEY_ID" => Some("AKIDSECRETLOOKING".into()),
                "AWS_SECRET_ACCESS_KEY" => Some("very-secret".into()),
                _ => None,
            }
        };
        let mut s = Settings::resolve_with(&crate::config::FlagValues::default(), &env).unwrap();
        s.repo = Some(repo);
        s.key = key;
        s
    }

    #[test]
    fn fs_repo_with_key_file() {
        let s = settings(
            RepoLocation::Fs("/srv/walship repo/100%".into()),
            KeySource::File("/etc/walship/key".into()),
        );
        let rc = restore_command(Path::new("/usr/bin/walship"), &s, None, false).unwrap();
        assert_eq!(
            rc.command,
            "/usr/bin/walship --repo '/srv/walship repo/100%%' --stanza main --key-file /etc/walship/key archive-get %f %p"
        );
        assert!(!rc.command.contains("S3"));
    }

    #[test]
    fn s3_repo_never_has_credentials_or_passphrase() {
        let s = settings(
            RepoLocation::S3 {
                bucket: "b".into(),
                prefix: "p/q".into(),
            },
            KeySource::Passphrase(Secret::new("hunter2")),
        );
        let rc = restore_command(
            Path::new("/w/walship"),
            &s,
            Some(Path::new("/etc/w.toml")),
            true,
        )
        .unwrap();
        assert_eq!(
            rc.command,
            "WALSHIP_S3_ENDPOINT=http://127.0.0.1:9000 WALSHIP_S3_REGION=us-east-1 WALSHIP_S3_PATH_STYLE=true /w/walship --config /etc/w.toml --repo s3://b/p/q --stanza main archive-get --allow-partial %f %p"
        );
        for secret in ["hunter2", "very-secret", "AKIDSECRETLOOKING"] {
            assert!(!rc.command.contains(secret));
        }
        assert!(rc.notes.iter().any(|n| n.contains("WALSHIP_PASSPHRASE")));
    }

    #[test]
    fn settings_give_one_target_and_an_explicit_timeline() {
        let s = recovery_settings(
            "cmd",
            &Target::Lsn(Lsn(0x3000028)),
            true,
            TargetAction::Promote,
            "2",
            ArchiveMode::Off,
        );
        let get = |k: &str| {
            s.iter()
                .rev()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("recovery_target_lsn").as_deref(), Some("0/3000028"));
        assert_eq!(get("recovery_target_time").as_deref(), Some(""));
        assert_eq!(get("recovery_target_inclusive").as_deref(), Some("false"));
        assert_eq!(get("recovery_target_timeline").as_deref(), Some("2"));
        assert_eq!(get("recovery_target_action").as_deref(), Some("promote"));
        assert_eq!(get("archive_mode").as_deref(), Some("off"));
        // The chosen target comes after the emptied ones.
        let pos = |k: &str| s.iter().position(|(key, _)| *key == k).unwrap();
        assert!(pos("recovery_target_lsn") > pos("recovery_target_xid"));
        let p = recovery_settings(
            "c",
            &Target::Latest,
            false,
            TargetAction::Pause,
            "1",
            ArchiveMode::Preserve,
        );
        assert!(p.iter().all(|(k, _)| *k != "archive_mode"));
    }

    #[test]
    fn writes_auto_conf_and_signal() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("postgresql.auto.conf"), "work_mem = '8MB'").unwrap();
        write_recovery(
            t.path(),
            "walship restore",
            &[("restore_command", "a 'b' c\\d".into())],
        )
        .unwrap();
        let text = fs::read_to_string(t.path().join("postgresql.auto.conf")).unwrap();
        assert_eq!(
            text,
            "work_mem = '8MB'\n# walship restore\nrestore_command = 'a ''b'' c\\\\d'\n"
        );
        assert!(t.path().join("recovery.signal").exists());
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("/a/b"), "/a/b");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote(""), "''");
    }
}
