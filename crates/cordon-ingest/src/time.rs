//! Sensor timestamps, read by hand: no time library, no clock. Every function here takes text
//! from the wire and returns `None` rather than fail loudly; all arithmetic is checked.

const US_PER_SEC: i64 = 1_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// A calendar date and time of day, as written (before any zone offset is applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
}

impl Civil {
    /// Unix microseconds of this civil time read in a zone `offset_secs` east of UTC, or `None`
    /// when a field is out of range (month 13, February 30, hour 24, ...).
    pub fn to_unix_us(self, offset_secs: i64) -> Option<i64> {
        if !(0..=9999).contains(&self.year)
            || !(1..=12).contains(&self.month)
            || self.day == 0
            || self.day > days_in_month(self.year, self.month)
            || self.hour > 23
            || self.minute > 59
            || self.second > 60
            || self.micros >= 1_000_000
            || offset_secs.abs() >= SECS_PER_DAY
        {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let secs =
            days * SECS_PER_DAY + i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second)
                - offset_secs;
        secs.checked_mul(US_PER_SEC)?.checked_add(i64::from(self.micros))
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (UTC) year in which a Unix time in microseconds falls.
fn year_of(unix_us: i64) -> i64 {
    let z = unix_us.div_euclid(US_PER_SEC * SECS_PER_DAY) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let y = yoe + era * 400;
    if mp >= 10 { y + 1 } else { y }
}

/// A BSD (RFC 3164) time carries no year: pick the year that puts it nearest to `reference_us`
/// (when the message was received), so that late December lines read in January stay in the
/// old year. `civil.year` is ignored. The time is read as UTC.
pub(crate) fn resolve_year(civil: Civil, reference_us: i64) -> Option<i64> {
    let year = year_of(reference_us);
    [year - 1, year, year + 1]
        .into_iter()
        .filter_map(|y| Civil { year: y, ..civil }.to_unix_us(0))
        .min_by_key(|t| t.abs_diff(reference_us))
}

/// A byte cursor for the small grammars below.
#[derive(Debug)]
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    pub fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    pub fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Consumes `byte` if it comes next.
    pub fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Exactly `n` ASCII digits.
    pub fn digits(&mut self, n: usize) -> Option<u32> {
        let end = self.pos.checked_add(n)?;
        let slice = self.bytes.get(self.pos..end)?;
        let mut value: u32 = 0;
        for &b in slice {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u32::from(b - b'0');
        }
        self.pos = end;
        Some(value)
    }

    /// One to `max` ASCII digits (at most 9, so the value fits).
    pub fn digits_up_to(&mut self, max: usize) -> Option<u32> {
        let mut value: u32 = 0;
        let mut n = 0;
        while n < max.min(9) {
            match self.peek() {
                Some(b) if b.is_ascii_digit() => {
                    value = value * 10 + u32::from(b - b'0');
                    self.pos += 1;
                    n += 1;
                }
                _ => break,
            }
        }
        (n > 0).then_some(value)
    }

    /// An optional fraction of a second (`.123`, `.123456789`): microseconds, extra digits dropped.
    pub fn fraction(&mut self) -> Option<u32> {
        if !self.eat(b'.') {
            return Some(0);
        }
        let mut micros: u32 = 0;
        let mut n = 0;
        while let Some(b) = self.peek().filter(u8::is_ascii_digit) {
            if n < 6 {
                micros = micros * 10 + u32::from(b - b'0');
            }
            n += 1;
            self.pos += 1;
        }
        if n == 0 {
            return None;
        }
        for _ in n..6 {
            micros *= 10;
        }
        Some(micros)
    }

    /// `hh:mm:ss[.frac]`.
    pub fn time_of_day(&mut self) -> Option<(u32, u32, u32, u32)> {
        let hour = self.digits(2)?;
        self.eat(b':').then_some(())?;
        let minute = self.digits(2)?;
        self.eat(b':').then_some(())?;
        let second = self.digits(2)?;
        let micros = self.fraction()?;
        Some((hour, minute, second, micros))
    }

    /// A numeric zone offset after its sign: `hh`, `hhmm` or `hh:mm`, in seconds (unsigned).
    fn offset_magnitude(&mut self) -> Option<i64> {
        let hours = self.digits(2)?;
        let minutes = if self.eat(b':') { self.digits(2)? } else { self.digits(2).unwrap_or(0) };
        if hours > 23 || minutes > 59 {
            return None;
        }
        Some(i64::from(hours) * 3600 + i64::from(minutes) * 60)
    }

    /// `Z`, `+hh:mm`, `-hhmm`, `+hh`: seconds east of UTC.
    pub fn zone_offset(&mut self) -> Option<i64> {
        if self.eat(b'Z') || self.eat(b'z') {
            return Some(0);
        }
        let sign = if self.eat(b'+') {
            1
        } else if self.eat(b'-') {
            -1
        } else {
            return None;
        };
        Some(sign * self.offset_magnitude()?)
    }

    /// A three-letter English month abbreviation (any case): 1 to 12.
    pub fn month_abbr(&mut self) -> Option<u32> {
        let end = self.pos.checked_add(3)?;
        let word = self.bytes.get(self.pos..end)?;
        const MONTHS: [&[u8; 3]; 12] =
            [b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec"];
        let index = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(word))?;
        self.pos = end;
        u32::try_from(index + 1).ok()
    }
}

/// RFC 3339 / ISO 8601 with a zone: `2026-11-27T10:00:00.123456+00:00`, `...Z`, `...+0000`
/// (Suricata writes `+hhmm`). The whole text must be the timestamp.
pub(crate) fn parse_rfc3339(text: &[u8]) -> Option<i64> {
    let mut cur = Cursor::new(text);
    let us = rfc3339(&mut cur)?;
    cur.is_empty().then_some(us)
}

/// An RFC 3339 timestamp at the cursor; the cursor stops right after it.
pub(crate) fn rfc3339(cur: &mut Cursor<'_>) -> Option<i64> {
    let year = cur.digits(4)?;
    cur.eat(b'-').then_some(())?;
    let month = cur.digits(2)?;
    cur.eat(b'-').then_some(())?;
    let day = cur.digits(2)?;
    if !(cur.eat(b'T') || cur.eat(b't') || cur.eat(b' ')) {
        return None;
    }
    let (hour, minute, second, micros) = cur.time_of_day()?;
    let offset = cur.zone_offset()?;
    Civil { year: i64::from(year), month, day, hour, minute, second, micros }.to_unix_us(offset)
}

/// A BSD timestamp at the cursor: `Mmm dd hh:mm:ss` (day space-padded, zero-padded or bare),
/// optionally with a year before the time (`Mar 09 2026 11:58:24`, as Cisco and Trend Micro
/// write it) and a fraction. Returns the civil time and whether it named its year (if not,
/// `year` is 0).
pub(crate) fn bsd(cur: &mut Cursor<'_>) -> Option<(Civil, bool)> {
    let month = cur.month_abbr()?;
    cur.eat(b' ').then_some(())?;
    cur.eat(b' '); // "Mar  9"
    let day = cur.digits_up_to(2)?;
    cur.eat(b' ').then_some(())?;
    let mut year = None;
    let save = cur.pos;
    if let Some(y) = cur.digits(4) {
        if cur.eat(b' ') {
            year = Some(y);
        } else {
            cur.pos = save;
        }
    }
    let (hour, minute, second, micros) = cur.time_of_day()?;
    let civil = Civil { year: year.map_or(0, i64::from), month, day, hour, minute, second, micros };
    Some((civil, year.is_some()))
}

/// The CEF `rt` field: epoch milliseconds, or `MMM dd yyyy HH:mm:ss[.SSS]` with an optional zone
/// (`GMT+08:00`, `UTC`, `+0100`, `Z`; none means UTC), or RFC 3339. An unknown zone name gives
/// `None`: better no time than a wrong one.
pub(crate) fn parse_cef_time(text: &str) -> Option<i64> {
    let text = text.trim();
    let bytes = text.as_bytes();
    if !bytes.is_empty() && bytes.len() <= 16 && bytes.iter().all(u8::is_ascii_digit) {
        return text.parse::<i64>().ok()?.checked_mul(1000);
    }
    if let Some(us) = parse_rfc3339(bytes) {
        return Some(us);
    }
    let mut cur = Cursor::new(bytes);
    let (civil, has_year) = bsd(&mut cur)?;
    if !has_year {
        return None;
    }
    let offset = if cur.is_empty() {
        0
    } else {
        cur.eat(b' ').then_some(())?;
        zone(&mut cur)?
    };
    cur.is_empty().then_some(())?;
    civil.to_unix_us(offset)
}

/// `GMT`, `UTC`, `Z`, each optionally followed by a numeric offset, or a bare numeric offset.
fn zone(cur: &mut Cursor<'_>) -> Option<i64> {
    let rest = cur.rest();
    let named = [&b"GMT"[..], b"UTC", b"UT"]
        .into_iter()
        .find(|name| rest.get(..name.len()).is_some_and(|r| r.eq_ignore_ascii_case(name)));
    if let Some(name) = named {
        cur.pos += name.len();
        if cur.is_empty() {
            return Some(0);
        }
    } else if cur.eat(b'Z') {
        return Some(0);
    }
    let sign = if cur.eat(b'+') {
        1
    } else if cur.eat(b'-') {
        -1
    } else {
        return None;
    };
    // "GMT+8" as well as "GMT+08:00"
    let save = cur.pos;
    if let Some(magnitude) = cur.offset_magnitude() {
        return Some(sign * magnitude);
    }
    cur.pos = save;
    let hours = cur.digits_up_to(1)?;
    Some(sign * i64::from(hours) * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_773_600_000_000; // 2026-11-27T10:00:00Z

    #[test]
    fn rfc3339_variants() {
        assert_eq!(parse_rfc3339(b"2026-11-27T10:00:00Z"), Some(T0));
        assert_eq!(parse_rfc3339(b"2026-11-27T10:00:00.123456+0000"), Some(T0 + 123_456));
        assert_eq!(parse_rfc3339(b"2026-11-27T11:00:00.5+01:00"), Some(T0 + 500_000));
        assert_eq!(parse_rfc3339(b"2026-11-27T05:00:00-0500"), Some(T0));
        assert_eq!(parse_rfc3339(b"2026-11-27T10:00:00.123456789Z"), Some(T0 + 123_456));
        assert_eq!(parse_rfc3339(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339(b"1969-12-31T23:59:59Z"), Some(-1_000_000));
        assert_eq!(parse_rfc3339(b"2024-02-29T00:00:00Z"), Some(1_709_164_800_000_000));
        for bad in [
            &b"2026-11-27T10:00:00"[..],
            b"2026-13-27T10:00:00Z",
            b"2025-02-29T10:00:00Z",
            b"2026-11-27T24:00:00Z",
            b"2026-11-27T10:00:00.Z",
            b"2026-11-27T10:00:00Zjunk",
            b"2026-11-27",
            b"",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn year_is_resolved_near_the_reference() {
        let civil = |month, day| Civil { year: 0, month, day, hour: 10, minute: 0, second: 0, micros: 0 };
        assert_eq!(resolve_year(civil(11, 27), T0 + 5_000_000), Some(T0));
        // A late-December line read on January 1st belongs to the old year.
        let jan_1_2027 = 1_798_761_600_000_000;
        let dec_31_2026 = Civil { year: 2026, ..civil(12, 31) }.to_unix_us(0);
        assert_eq!(resolve_year(civil(12, 31), jan_1_2027), dec_31_2026);
    }

    #[test]
    fn cef_times() {
        assert_eq!(parse_cef_time("1795773600000"), Some(T0));
        assert_eq!(parse_cef_time("Nov 27 2026 10:00:00"), Some(T0));
        assert_eq!(parse_cef_time("Nov 27 2026 10:00:00 GMT+00:00"), Some(T0));
        assert_eq!(parse_cef_time("Nov 27 2026 18:00:00 GMT+08:00"), Some(T0));
        assert_eq!(parse_cef_time("Nov 27 2026 18:00:00 GMT+8"), Some(T0));
        assert_eq!(parse_cef_time("Nov 27 2026 10:00:00.250 UTC"), Some(T0 + 250_000));
        assert_eq!(parse_cef_time("Nov 27 2026 11:00:00 +0100"), Some(T0));
        assert_eq!(parse_cef_time("2026-11-27T10:00:00Z"), Some(T0));
        assert_eq!(parse_cef_time("Nov 27 2026 10:00:00 PST"), None);
        assert_eq!(parse_cef_time("Nov 27 10:00:00"), None);
        assert_eq!(parse_cef_time("99999999999999999999"), None);
    }
}
