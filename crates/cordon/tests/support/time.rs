//! EVE timestamps (`2026-11-27T10:00:00.123456+0000`), read and written here independently of
//! Cordon's own parser, so that the tests can check it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix microseconds.
pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Reads Suricata's `YYYY-MM-DDTHH:MM:SS.ffffff+hhmm` (also `Z` and `+hh:mm`) into Unix µs.
pub fn parse_eve(text: &str) -> Option<i64> {
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = text.get(19..)?;
    let mut micros = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        let mut value: i64 = fraction[..digits].parse().ok()?;
        for _ in digits..6 {
            value *= 10;
        }
        for _ in 6..digits {
            value /= 10;
        }
        micros = value;
        rest = &fraction[digits..];
    }
    let offset_secs = if rest == "Z" {
        0
    } else {
        let sign = match rest.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let zone = rest[1..].replace(':', "");
        if zone.len() != 4 {
            return None;
        }
        sign * (zone[..2].parse::<i64>().ok()? * 3600 + zone[2..].parse::<i64>().ok()? * 60)
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1_000_000 + micros)
}

/// Writes Unix µs the way Suricata does, in UTC: `2026-11-27T10:00:00.123456+0000`.
pub fn format_eve(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}+0000",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

#[test]
fn eve_timestamps_round_trip() {
    assert_eq!(parse_eve("1970-01-01T00:00:00.000000+0000"), Some(0));
    assert_eq!(parse_eve("2026-11-27T02:40:03.257936+0000"), Some(1_795_747_203_257_936));
    assert_eq!(parse_eve("2026-11-27T03:40:03.257936+0100"), Some(1_795_747_203_257_936));
    assert_eq!(parse_eve("2026-11-27T02:40:03Z"), Some(1_795_747_203_000_000));
    let now = now_us();
    assert_eq!(parse_eve(&format_eve(now)), Some(now));
}
