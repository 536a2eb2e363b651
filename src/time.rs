//! UTC times as Hedgerow keeps them: Unix milliseconds in log rows, `YYYY-MM-DD`
//! for roll-up days. A few lines of civil-calendar arithmetic (Howard
//! Hinnant's `days_from_civil`) instead of a date crate. Used by the store and
//! by list downloads (the "last good copy" dates).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds in a UTC day (no leap seconds in Unix time).
pub const DAY_MS: i64 = 86_400_000;

/// Milliseconds in an hour: the query log's blocks and roll-ups are by UTC hour.
pub const HOUR_MS: i64 = 3_600_000;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The current time in UTC Unix milliseconds.
pub fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(elapsed) => i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The UTC day (days since 1970-01-01) that `time_ms` falls in.
pub fn day_number(time_ms: i64) -> i64 {
    time_ms.div_euclid(DAY_MS)
}

/// `2024-05-01` for a day number.
pub fn day_string(day: i64) -> String {
    let (year, month, day) = civil_from_days(day);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The day number of `YYYY-MM-DD`, or `None` if it is not a real date.
pub fn parse_day(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year: i64 = digits(&text[0..4])?;
    let month: u32 = digits(&text[5..7])?;
    let day: u32 = digits(&text[8..10])?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// `2024-05-01T08:15:30.250Z` for a time in Unix milliseconds.
pub fn format_utc(time_ms: i64) -> String {
    let day = day_number(time_ms);
    let in_day = time_ms - day * DAY_MS;
    let (hours, minutes) = (in_day / 3_600_000, in_day / 60_000 % 60);
    let (seconds, millis) = (in_day / 1000 % 60, in_day % 1000);
    format!("{}T{hours:02}:{minutes:02}:{seconds:02}.{millis:03}Z", day_string(day))
}

/// Parses a UTC time: `YYYY-MM-DD`, optionally followed by `T` or a space and
/// `HH:MM`, `HH:MM:SS` or `HH:MM:SS.fff`, optionally ending in `Z`.
/// Returns Unix milliseconds.
pub fn parse_utc(text: &str) -> Option<i64> {
    let text = text.trim();
    let text = text.strip_suffix('Z').or_else(|| text.strip_suffix('z')).unwrap_or(text);
    if text.len() < 10 || !text.is_char_boundary(10) {
        return None;
    }
    let (date, rest) = text.split_at(10);
    let day = parse_day(date)?;
    let mut time_ms = day * DAY_MS;
    if rest.is_empty() {
        return Some(time_ms);
    }
    let rest = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' '))?;
    let (clock, fraction) = match rest.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (rest, None),
    };
    let mut parts = clock.split(':');
    let hours: i64 = digits(parts.next()?)?;
    let minutes: i64 = digits(parts.next()?)?;
    let seconds: i64 = match parts.next() {
        Some(seconds) => digits(seconds)?,
        None if fraction.is_none() => 0,
        None => return None,
    };
    if parts.next().is_some() || hours > 23 || minutes > 59 || seconds > 59 {
        return None;
    }
    time_ms += ((hours * 60 + minutes) * 60 + seconds) * 1000;
    if let Some(fraction) = fraction {
        if fraction.is_empty() || fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let padded = format!("{fraction:0<3}");
        time_ms += padded[..3].parse::<i64>().ok()?;
    }
    Some(time_ms)
}

/// Parses a run of ASCII digits (no sign, no spaces).
pub(crate) fn digits<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

pub(crate) fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day number: (year, month, day).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_across_four_centuries() {
        for day in -200_000..200_000 {
            let (year, month, date) = civil_from_days(day);
            assert_eq!(days_from_civil(year, month, date), day);
            assert_eq!(parse_day(&day_string(day)), Some(day), "{}", day_string(day));
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(day_string(0), "1970-01-01");
        assert_eq!(parse_day("2000-02-29"), Some(11_016));
        assert_eq!(parse_day("1900-02-29"), None);
        assert_eq!(parse_day("2024-13-01"), None);
        assert_eq!(format_utc(1_714_551_330_250), "2024-05-01T08:15:30.250Z");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_the_forms_the_cli_accepts() {
        assert_eq!(parse_utc("2024-05-01"), Some(1_714_521_600_000));
        assert_eq!(parse_utc("2024-05-01T08:15"), Some(1_714_551_300_000));
        assert_eq!(parse_utc("2024-05-01 08:15:30Z"), Some(1_714_551_330_000));
        assert_eq!(parse_utc("2024-05-01T08:15:30.25"), Some(1_714_551_330_250));
        assert_eq!(parse_utc("2024-05-01T24:00"), None);
        assert_eq!(parse_utc("yesterday"), None);
        assert_eq!(parse_utc("2024-05-01T08"), None);
    }
}
