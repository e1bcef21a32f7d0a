//! Writes a Diesel migration directory, all or nothing.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The migration could not be written; nothing was left behind.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the migration in {dir}: {error}")]
pub struct WriteError {
    dir: PathBuf,
    error: std::io::Error,
}

/// Writes `<dir>/<YYYY-MM-DD-HHMMSS>_<name>/{up,down}.sql` (the names `diesel migration
/// generate` uses) and returns the migration's directory. The files are written into a
/// hidden directory first and renamed into place, so a failure leaves nothing half-written.
pub fn write(dir: &Path, name: &str, up: &str, down: &str) -> Result<PathBuf, WriteError> {
    let fail = |error| WriteError {
        dir: dir.to_path_buf(),
        error,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let version = next_version(dir, SystemTime::now()).map_err(fail)?;
    let final_dir = dir.join(format!("{version}_{name}"));
    let staging = dir.join(format!(".{version}_{name}.tmp"));
    let written = (|| {
        std::fs::create_dir(&staging)?;
        std::fs::write(staging.join("up.sql"), up)?;
        std::fs::write(staging.join("down.sql"), down)?;
        if final_dir.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists; wait a second and run again",
                    final_dir.display()
                ),
            ));
        }
        std::fs::rename(&staging, &final_dir)
    })();
    if let Err(error) = written {
        // Best effort: the staging directory is ours and hidden either way.
        let _ = std::fs::remove_dir_all(&staging);
        return Err(fail(error));
    }
    Ok(final_dir)
}

/// The version of a new migration: now, or one second after the newest migration already
/// in `dir` when that is not older (two runs within a second would otherwise share a
/// version, and Diesel would take the second for already applied).
fn next_version(dir: &Path, now: SystemTime) -> std::io::Result<String> {
    let mut newest: Option<u64> = None;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let seconds = name
            .to_str()
            .and_then(|n| n.get(..17))
            .and_then(parse_timestamp);
        newest = newest.max(seconds);
    }
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let secs = match newest {
        Some(newest) if newest >= now_secs => newest + 1,
        _ => now_secs,
    };
    Ok(timestamp(UNIX_EPOCH + std::time::Duration::from_secs(secs)))
}

/// Seconds since the epoch of a `YYYY-MM-DD-HHMMSS` timestamp.
fn parse_timestamp(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 17 || b[4] != b'-' || b[7] != b'-' || b[10] != b'-' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(13..15)?, num(15..17)?);
    let days = days_from_civil(year, month, day);
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

/// Day count since 1970-01-01 of a Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD-HHMMSS` in UTC, as diesel_cli names migrations.
fn timestamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_diesels_format() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01-000000");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_574_096);
        assert_eq!(timestamp(t), "2026-11-25-023456");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_661);
        assert_eq!(timestamp(leap), "2000-02-29-010101");
        for secs in [0, 951_782_400 + 3_661, 1_795_574_096, 4_102_444_800] {
            let text = timestamp(UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(parse_timestamp(&text), Some(secs), "{text}");
        }
        assert_eq!(parse_timestamp("2026-11-25_x"), None);
    }

    #[test]
    fn a_new_version_is_newer_than_every_existing_one() {
        let dir = std::env::temp_dir().join(format!("tenants-next-version-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("2026-11-25-023456_first")).expect("dir");
        let same_second = UNIX_EPOCH + Duration::from_secs(1_795_574_096);
        assert_eq!(
            next_version(&dir, same_second).expect("version"),
            "2026-11-25-023457"
        );
        let later = UNIX_EPOCH + Duration::from_secs(1_795_574_200);
        assert_eq!(
            next_version(&dir, later).expect("version"),
            "2026-11-25-023640"
        );
    }
}
