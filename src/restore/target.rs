//! The recovery target and timeline the user asked for, parsed and checked
//! before anything else happens.

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

use super::RestoreError;
use crate::pg::wal::segment::TimelineId;
use crate::pg::wal::Lsn;

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// No target: the end of the archived WAL.
    Latest,
    /// As soon as the backup is consistent (`recovery_target = 'immediate'`).
    Immediate,
    /// A commit time (`recovery_target_time`), in Unix microseconds UTC.
    Time(i64),
    /// An LSN (`recovery_target_lsn`).
    Lsn(Lsn),
    /// A transaction id (`recovery_target_xid`).
    Xid(u32),
    /// A named restore point (`recovery_target_name`).
    Name(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Latest => f.write_str("the end of the archived WAL"),
            Target::Immediate => f.write_str("the end of the backup (immediate)"),
            Target::Time(us) => write!(f, "time {}", format_time(*us)),
            Target::Lsn(l) => write!(f, "LSN {l}"),
            Target::Xid(x) => write!(f, "xid {x}"),
            Target::Name(n) => write!(f, "restore point `{n}`"),
        }
    }
}

/// `--target-timeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineChoice {
    /// Not given: the timeline that contains the target, written explicitly.
    Auto,
    /// `latest`: the newest timeline in the repository.
    Latest,
    /// `current`: the backup's timeline.
    Current,
    /// A timeline number.
    Id(TimelineId),
}

impl TimelineChoice {
    /// Parses `latest`, `current` or a number (decimal, or `0x` hex).
    pub fn parse(text: Option<&str>) -> Result<TimelineChoice, RestoreError> {
        let Some(text) = text else {
            return Ok(TimelineChoice::Auto);
        };
        let bad = || {
            RestoreError::BadInput(format!(
                "--target-timeline `{text}`: expected latest, current or a timeline number"
            ))
        };
        match text.trim() {
            "latest" => Ok(TimelineChoice::Latest),
            "current" => Ok(TimelineChoice::Current),
            t => {
                let n = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                    Some(h) => u32::from_str_radix(h, 16).map_err(|_| bad())?,
                    None => t.parse::<u32>().map_err(|_| bad())?,
                };
                if n == 0 {
                    return Err(bad());
                }
                Ok(TimelineChoice::Id(n))
            }
        }
    }
}

/// Builds the target from the (mutually exclusive) target options.
pub fn parse_target(
    time: Option<&str>,
    lsn: Option<&str>,
    xid: Option<&str>,
    name: Option<&str>,
    immediate: bool,
) -> Result<Target, RestoreError> {
    if let Some(t) = time {
        return parse_time(t).map(Target::Time);
    }
    if let Some(l) = lsn {
        let lsn: Lsn = l
            .trim()
            .parse()
            .map_err(|e| RestoreError::BadInput(format!("--target-lsn: {e}")))?;
        return Ok(Target::Lsn(lsn));
    }
    if let Some(x) = xid {
        let n: u32 = x.trim().parse().map_err(|_| {
            RestoreError::BadInput(format!(
                "--target-xid `{x}`: expected a transaction id (a number up to 4294967295)"
            ))
        })?;
        if n < 3 {
            return Err(RestoreError::BadInput(format!(
                "--target-xid {n}: xids 0-2 are reserved and never committed"
            )));
        }
        return Ok(Target::Xid(n));
    }
    if let Some(n) = name {
        if n.is_empty() || n.len() >= 64 {
            return Err(RestoreError::BadInput(format!(
                "--target-name `{n}`: a restore point name has 1 to 63 bytes"
            )));
        }
        return Ok(Target::Name(n.to_string()));
    }
    if immediate {
        return Ok(Target::Immediate);
    }
    Ok(Target::Latest)
}

/// Parses the ISO 8601 forms PostgreSQL's `timestamptz` input accepts:
/// `2026-11-21`, `2026-11-21 14:30`, `2026-11-21 14:30:00`, `T` or space
/// between date and time, fractional seconds, and a zone of `Z`, `UTC`,
/// `+HH`, `+HHMM` or `+HH:MM` (with or without a space before it). No zone
/// means UTC. Returns Unix microseconds.
pub fn parse_time(text: &str) -> Result<i64, RestoreError> {
    let bad = |why: &str| {
        RestoreError::BadInput(format!(
            "--target-time `{text}`: {why} (expected e.g. `2026-11-21 14:30:00+00` or `2026-11-21T14:30:00.123Z`)"
        ))
    };
    let s = text.trim();
    if s.len() < 10 {
        return Err(bad("too short for a date"));
    }
    let (date_part, rest) = s.split_at(10);
    let date = NaiveDate::parse_from_str(date_part, "%Y-%m-%d").map_err(|_| bad("bad date"))?;
    let rest = rest.trim_start_matches(['T', 't', ' ']);
    // Split the zone off the time: Z, UTC, or the last + / - sign.
    let (time_part, zone) = split_zone(rest);
    let time = if time_part.is_empty() {
        NaiveTime::from_hms_opt(0, 0, 0).ok_or_else(|| bad("bad time"))?
    } else {
        NaiveTime::parse_from_str(time_part, "%H:%M:%S%.f")
            .or_else(|_| NaiveTime::parse_from_str(time_part, "%H:%M"))
            .map_err(|_| bad("bad time of day"))?
    };
    let offset_secs = match zone {
        None => 0,
        Some(z) => parse_offset(z).ok_or_else(|| bad("bad time zone"))?,
    };
    let offset = FixedOffset::east_opt(offset_secs).ok_or_else(|| bad("time zone out of range"))?;
    let local = NaiveDateTime::new(date, time);
    let dt: DateTime<FixedOffset> = offset
        .from_local_datetime(&local)
        .single()
        .ok_or_else(|| bad("not a valid instant"))?;
    Ok(dt.with_timezone(&Utc).timestamp_micros())
}

fn split_zone(rest: &str) -> (&str, Option<&str>) {
    let r = rest.trim_end();
    for suffix in ["Z", "z", "UTC", "utc", "GMT"] {
        if let Some(t) = r.strip_suffix(suffix) {
            return (t.trim_end(), Some("+00"));
        }
    }
    match r.rfind(['+', '-']) {
        Some(i) => (r[..i].trim_end(), Some(&r[i..])),
        None => (r, None),
    }
}

fn parse_offset(z: &str) -> Option<i32> {
    let (sign, digits) = match z.as_bytes().first()? {
        b'+' => (1, &z[1..]),
        b'-' => (-1, &z[1..]),
        _ => return None,
    };
    let digits: String = digits.chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m) = match digits.len() {
        1 | 2 => (digits.parse::<i32>().ok()?, 0),
        4 => (
            digits[..2].parse::<i32>().ok()?,
            digits[2..].parse::<i32>().ok()?,
        ),
        _ => return None,
    };
    if h > 15 || m > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

/// Unix microseconds as PostgreSQL timestamptz text in UTC
/// (`2026-11-21 14:30:00.123456+00`).
pub fn format_time(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let nanos = (us.rem_euclid(1_000_000) * 1000) as u32;
    match DateTime::from_timestamp(secs, nanos) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
        None => format!("@{us}us"),
    }
}

/// Parses RFC 3339 (the manifest's times) into Unix microseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc).timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> i64 {
        parse_time(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn accepts_postgres_iso_forms() {
        let base = t("2026-11-21T14:30:00Z");
        assert_eq!(base, 1_795_271_400_000_000);
        assert_eq!(t("2026-11-21 14:30:00+00"), base);
        assert_eq!(t("2026-11-21 14:30:00 +00:00"), base);
        assert_eq!(t("2026-11-21 14:30:00"), base);
        assert_eq!(t("2026-11-21 14:30"), base);
        assert_eq!(t("2026-11-21 15:30:00+01"), base);
        assert_eq!(t("2026-11-21 09:00:00-0530"), base);
        assert_eq!(t("2026-11-21 14:30:00 UTC"), base);
        assert_eq!(t("2026-11-21T14:30:00.123Z"), base + 123_000);
        assert_eq!(t("2026-11-21 14:30:00.000001+00"), base + 1);
        assert_eq!(t("2026-11-21"), base - (14 * 3600 + 30 * 60) * 1_000_000);
    }

    #[test]
    fn refuses_garbage() {
        for s in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-11-21 25:00",
            "2026-11-21 14:30 +99",
        ] {
            assert!(parse_time(s).is_err(), "{s}");
        }
    }

    #[test]
    fn formats_for_postgres() {
        assert_eq!(
            format_time(1_795_271_400_123_000),
            "2026-11-21 14:30:00.123000+00"
        );
    }

    #[test]
    fn timeline_choice() {
        assert_eq!(TimelineChoice::parse(None).unwrap(), TimelineChoice::Auto);
        assert_eq!(
            TimelineChoice::parse(Some("latest")).unwrap(),
            TimelineChoice::Latest
        );
        assert_eq!(
            TimelineChoice::parse(Some("current")).unwrap(),
            TimelineChoice::Current
        );
        assert_eq!(
            TimelineChoice::parse(Some("3")).unwrap(),
            TimelineChoice::Id(3)
        );
        assert_eq!(
            TimelineChoice::parse(Some("0x1A")).unwrap(),
            TimelineChoice::Id(26)
        );
        assert!(TimelineChoice::parse(Some("0")).is_err());
        assert!(TimelineChoice::parse(Some("newest")).is_err());
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_target(None, None, None, None, false).unwrap(),
            Target::Latest
        );
        assert_eq!(
            parse_target(None, None, None, None, true).unwrap(),
            Target::Immediate
        );
        assert_eq!(
            parse_target(None, Some("0/3000028"), None, None, false).unwrap(),
            Target::Lsn(Lsn(0x3000028))
        );
        assert_eq!(
            parse_target(None, None, Some("742"), None, false).unwrap(),
            Target::Xid(742)
        );
        assert!(parse_target(None, Some("3000028"), None, None, false).is_err());
        assert!(parse_target(None, None, Some("-1"), None, false).is_err());
    }
}
