//! RFC 3339 timestamps with nanosecond precision.
//!
//! STIX timestamps (`t'…'` literals in patterns, `first_observed` and
//! `last_observed` in observed-data, `valid_from` on indicators) are compared
//! by value. This type keeps them as whole seconds since the Unix epoch plus a
//! nanosecond fraction, so comparison and subtraction are exact integer
//! arithmetic with no allocation and no time-zone database.
//!
//! It is written here rather than taken from `time` or `chrono` because the
//! rules are narrow and need to be exact: years 0000–9999, any number of
//! fraction digits (truncated to nanoseconds), a leap second `:60` read as
//! the first instant of the next minute, and (outside pattern literals)
//! numeric offsets as found in log files.

use std::fmt;
use std::num::NonZeroU32;

/// Nanoseconds in one second.
const NANOS_PER_SEC: i64 = 1_000_000_000;

/// 9999-12-31T23:59:59Z, the last second a four-digit year can print.
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// A point in time: seconds since 1970-01-01T00:00:00Z and a fraction.
///
/// Ordering is chronological. Printing gives RFC 3339 in UTC with `Z`, with
/// the fraction shortened to the digits it needs (none when it is zero).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    secs: i64,
    /// The nanoseconds plus one: the value zero is never used, which lets
    /// `Option<Timestamp>` take no more room than a timestamp (indicators
    /// carry two of them, a million indicators at a time).
    nanos_plus_one: NonZeroU32,
}

// The niche of `nanos_plus_one` is what keeps optional timestamps small.
const _: () = assert!(std::mem::size_of::<Option<Timestamp>>() == 16);

/// Why a text is not a valid timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The text does not have the shape `YYYY-MM-DDTHH:MM:SS[.f]Z`.
    #[error("expected YYYY-MM-DDTHH:MM:SS[.fraction]Z")]
    Shape,
    /// A field is outside its calendar range (month 13, February 30, …).
    #[error("{field} {value} is out of range")]
    Range {
        /// Which field: "month", "day", "hour", "minute" or "second".
        field: &'static str,
        /// The value that was read.
        value: u32,
    },
    /// The text ends in a numeric offset where only `Z` is allowed.
    #[error("the time zone must be 'Z' (UTC)")]
    NotUtc,
}

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const EPOCH: Timestamp = Timestamp::new(0, 0);

    /// A timestamp from its parts; `nanos` is below one second.
    const fn new(secs: i64, nanos: u32) -> Timestamp {
        Timestamp {
            secs,
            nanos_plus_one: NonZeroU32::MIN.saturating_add(nanos),
        }
    }

    /// The fraction of the second, in nanoseconds.
    pub fn subsec_nanos(&self) -> u32 {
        self.nanos_plus_one.get() - 1
    }

    /// Builds a timestamp from seconds since the epoch and a fraction.
    ///
    /// Nanoseconds at or above one second carry into the seconds.
    pub fn from_parts(secs: i64, nanos: u32) -> Timestamp {
        let carry = i64::from(nanos) / NANOS_PER_SEC;
        Timestamp::new(
            secs.saturating_add(carry),
            (i64::from(nanos) % NANOS_PER_SEC) as u32,
        )
    }

    /// Builds a timestamp from nanoseconds since the epoch.
    pub fn from_unix_nanos(nanos: i128) -> Timestamp {
        let secs = nanos.div_euclid(i128::from(NANOS_PER_SEC));
        let frac = nanos.rem_euclid(i128::from(NANOS_PER_SEC)) as u32;
        let secs = secs.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        Timestamp::new(secs, frac)
    }

    /// Seconds since the epoch (the fraction is dropped).
    pub fn unix_seconds(&self) -> i64 {
        self.secs
    }

    /// Nanoseconds since the epoch.
    pub fn unix_nanos(&self) -> i128 {
        i128::from(self.secs) * i128::from(NANOS_PER_SEC) + i128::from(self.subsec_nanos())
    }

    /// Parses the strict STIX form: `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
    ///
    /// # Errors
    ///
    /// Returns [`TimestampError`] when the shape is wrong, a field is out of
    /// range for the calendar, or the zone is not `Z`.
    pub fn parse_stix(text: &str) -> Result<Timestamp, TimestampError> {
        let b = text.as_bytes();
        // The strict form has an upper-case T between date and time.
        if b.get(10).is_some_and(|&c| c != b'T') {
            return Err(TimestampError::Shape);
        }
        if b.last() == Some(&b'z') {
            return Err(TimestampError::Shape);
        }
        let (ts, offset) = parse_with_offset(text)?;
        if offset.is_some() {
            return Err(TimestampError::NotUtc);
        }
        Ok(ts)
    }

    /// Parses RFC 3339 with `Z` or a numeric offset (`+02:00`, `-0530`), and
    /// also accepts a space or lower-case `t` between date and time, and a
    /// lower-case `z`, as log files often write them.
    ///
    /// # Errors
    ///
    /// Returns [`TimestampError`] when the text is not such a timestamp.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, TimestampError> {
        let (ts, offset) = parse_with_offset(text)?;
        let shift = i64::from(offset.unwrap_or(0));
        Ok(Timestamp::from_parts(ts.secs - shift, ts.subsec_nanos()))
    }

    /// The signed difference `self - earlier` in nanoseconds.
    pub fn nanos_since(&self, earlier: Timestamp) -> i128 {
        self.unix_nanos() - earlier.unix_nanos()
    }
}

/// Reads `text` into a UTC-naive timestamp and the offset in seconds east of
/// UTC (`None` for `Z`).
fn parse_with_offset(text: &str) -> Result<(Timestamp, Option<i32>), TimestampError> {
    let b = text.as_bytes();
    if b.len() < 20 {
        return Err(TimestampError::Shape);
    }
    let year = digits(b, 0, 4)?;
    expect_byte(b, 4, b'-')?;
    let month = digits(b, 5, 2)?;
    expect_byte(b, 7, b'-')?;
    let day = digits(b, 8, 2)?;
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err(TimestampError::Shape);
    }
    let hour = digits(b, 11, 2)?;
    expect_byte(b, 13, b':')?;
    let minute = digits(b, 14, 2)?;
    expect_byte(b, 16, b':')?;
    let second = digits(b, 17, 2)?;

    let mut pos = 19;
    let mut nanos: u32 = 0;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            // Digits past the ninth are read and dropped (truncation).
            let place = pos - start;
            if place < 9 {
                nanos += u32::from(b[pos] - b'0') * 10u32.pow(8 - place as u32);
            }
            pos += 1;
        }
        if pos == start {
            return Err(TimestampError::Shape);
        }
    }
    let offset = parse_zone(&b[pos..])?;

    check_range("month", month, 1, 12)?;
    check_range("day", day, 1, days_in_month(year, month))?;
    check_range("hour", hour, 0, 23)?;
    check_range("minute", minute, 0, 59)?;
    check_range("second", second, 0, 60)?;

    // A leap second (:60) is read as the first instant of the next minute,
    // which must still fall in year 9999 at the latest.
    let days = days_from_civil(year as i64, month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    if secs > MAX_UNIX_SECONDS {
        return Err(TimestampError::Range {
            field: "second",
            value: second,
        });
    }
    Ok((Timestamp::from_parts(secs, nanos), offset))
}

/// Reads the zone suffix: `Z`, `z`, `+HH:MM`, `-HH:MM`, `+HHMM` or `-HHMM`.
fn parse_zone(b: &[u8]) -> Result<Option<i32>, TimestampError> {
    match b {
        [b'Z'] | [b'z'] => Ok(None),
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (hh, mm) = match rest {
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => {
                    (two_digits(*h1, *h2)?, two_digits(*m1, *m2)?)
                }
                _ => return Err(TimestampError::Shape),
            };
            check_range("offset hour", hh, 0, 23)?;
            check_range("offset minute", mm, 0, 59)?;
            let magnitude = (hh * 3600 + mm * 60) as i32;
            Ok(Some(if *sign == b'-' { -magnitude } else { magnitude }))
        }
        _ => Err(TimestampError::Shape),
    }
}

fn two_digits(a: u8, b: u8) -> Result<u32, TimestampError> {
    if a.is_ascii_digit() && b.is_ascii_digit() {
        Ok(u32::from(a - b'0') * 10 + u32::from(b - b'0'))
    } else {
        Err(TimestampError::Shape)
    }
}

fn digits(b: &[u8], start: usize, len: usize) -> Result<u32, TimestampError> {
    let mut value = 0u32;
    for &c in b.get(start..start + len).ok_or(TimestampError::Shape)? {
        if !c.is_ascii_digit() {
            return Err(TimestampError::Shape);
        }
        value = value * 10 + u32::from(c - b'0');
    }
    Ok(value)
}

fn expect_byte(b: &[u8], at: usize, want: u8) -> Result<(), TimestampError> {
    if b.get(at) == Some(&want) {
        Ok(())
    } else {
        Err(TimestampError::Shape)
    }
}

fn check_range(field: &'static str, value: u32, lo: u32, hi: u32) -> Result<(), TimestampError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(TimestampError::Range { field, value })
    }
}

fn is_leap_year(year: u32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
///
/// Counts in 400-year eras starting on 1 March, so that the leap day is the
/// last day of the counted year and needs no special case.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day)
}

/// Debug output is the RFC 3339 text, which says more than the fields.
impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.secs.div_euclid(86_400);
        let of_day = self.secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60
        )?;
        if self.subsec_nanos() != 0 {
            let frac = format!("{:09}", self.subsec_nanos());
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

impl Timestamp {
    /// RFC 3339 with exactly three fraction digits (milliseconds), as the
    /// STIX 2.1 object properties `created` and `modified` require.
    pub fn to_stix_millis(&self) -> String {
        let days = self.secs.div_euclid(86_400);
        let of_day = self.secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let Ok(year @ 0..=9999) = u64::try_from(year) else {
            // Outside four-digit years: the general formatter.
            let whole = Timestamp::new(self.secs, 0).to_string();
            let stem = whole.trim_end_matches('Z');
            return format!("{stem}.{:03}Z", self.subsec_nanos() / 1_000_000);
        };
        // Written digit by digit: this runs for every time property of
        // every event, where the formatting machinery is the slow part.
        let mut out = String::with_capacity(24);
        let fields = [
            (year, 4, '-'),
            (u64::from(month), 2, '-'),
            (u64::from(day), 2, 'T'),
            (of_day as u64 / 3600, 2, ':'),
            (of_day as u64 / 60 % 60, 2, ':'),
            (of_day as u64 % 60, 2, '.'),
            (u64::from(self.subsec_nanos() / 1_000_000), 3, 'Z'),
        ];
        for (value, width, separator) in fields {
            push_padded(&mut out, value, width);
            out.push(separator);
        }
        out
    }
}

/// Appends `value` in decimal, zero-padded to `width` digits (at most 4).
fn push_padded(out: &mut String, value: u64, width: u32) {
    let mut divisor = 10u64.pow(width - 1);
    while divisor > 0 {
        let digit = (value / divisor % 10) as u8;
        out.push(char::from(b'0' + digit));
        divisor /= 10;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn millisecond_form_matches_the_general_formatter() {
        let general = |t: Timestamp| {
            let whole = Timestamp::from_parts(t.unix_seconds(), 0).to_string();
            format!(
                "{}.{:03}Z",
                whole.trim_end_matches('Z'),
                t.subsec_nanos() / 1_000_000
            )
        };
        let mut secs: i64 = -62_167_219_200; // 0000-01-01
        while secs < 253_402_300_800 {
            for nanos in [0, 999_999, 1_000_000, 123_456_789, 999_999_999] {
                let t = Timestamp::from_parts(secs, nanos);
                assert_eq!(t.to_stix_millis(), general(t), "{secs} {nanos}");
            }
            secs += 7_919_113;
        }
        let far = Timestamp::from_parts(253_402_300_800 + 86_400, 5_000_000);
        assert!(far.to_stix_millis().ends_with(".005Z"));
    }

    use super::*;

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn epoch_and_known_instants() {
        assert_eq!(ts("1970-01-01T00:00:00Z"), Timestamp::EPOCH);
        assert_eq!(ts("2000-03-01T00:00:00Z").unix_seconds(), 951_868_800);
        assert_eq!(ts("1969-12-31T23:59:59Z").unix_seconds(), -1);
        assert_eq!(ts("0000-01-01T00:00:00Z").unix_seconds(), -62_167_219_200);
        assert_eq!(ts("9999-12-31T23:59:59Z").unix_seconds(), 253_402_300_799);
    }

    #[test]
    fn fraction_is_kept_to_the_nanosecond_and_truncated_beyond() {
        assert_eq!(
            ts("2020-01-01T00:00:00.5Z").unix_nanos() % 1_000_000_000,
            500_000_000
        );
        assert_eq!(
            ts("2020-01-01T00:00:00.123456789999Z").unix_nanos() % 1_000_000_000,
            123_456_789
        );
    }

    #[test]
    fn printing_round_trips() {
        for text in [
            "2016-02-29T23:59:59Z",
            "2020-01-01T00:00:00.5Z",
            "1955-11-05T06:15:00.000000001Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
        ] {
            assert_eq!(ts(text).to_string(), text);
        }
    }

    #[test]
    fn calendar_ranges_are_checked() {
        for bad in [
            "2019-02-29T00:00:00Z",
            "2020-13-01T00:00:00Z",
            "2020-04-31T00:00:00Z",
            "2020-01-01T24:00:00Z",
            "2020-01-01T00:60:00Z",
            "2020-01-01T00:00:61Z",
            "2020-00-10T00:00:00Z",
        ] {
            assert!(
                matches!(
                    Timestamp::parse_stix(bad),
                    Err(TimestampError::Range { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn shapes_are_checked() {
        for bad in [
            "2020-01-01",
            "2020-01-01T00:00:00",
            "2020-01-01T00:00:00.Z",
            "2020/01/01T00:00:00Z",
            "2020-01-01T00:00:00ZZ",
            "20200-01-01T00:00:00Z",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn leap_second_is_the_next_minute() {
        assert_eq!(ts("2016-12-31T23:59:60Z"), ts("2017-01-01T00:00:00Z"));
        assert!(Timestamp::parse_stix("9999-12-31T23:59:60Z").is_err());
    }

    #[test]
    fn offsets_are_applied_but_not_allowed_in_stix_form() {
        assert_eq!(ts("2020-01-01T02:00:00+02:00"), ts("2020-01-01T00:00:00Z"));
        assert_eq!(ts("2020-01-01T00:00:00-0530"), ts("2020-01-01T05:30:00Z"));
        assert_eq!(ts("2020-01-01 00:00:00z"), ts("2020-01-01T00:00:00Z"));
        assert_eq!(
            Timestamp::parse_stix("2020-01-01T02:00:00+02:00"),
            Err(TimestampError::NotUtc)
        );
    }

    #[test]
    fn stix_millis_form() {
        assert_eq!(
            ts("2020-01-01T00:00:00Z").to_stix_millis(),
            "2020-01-01T00:00:00.000Z"
        );
        assert_eq!(
            ts("2020-01-01T00:00:00.1239Z").to_stix_millis(),
            "2020-01-01T00:00:00.123Z"
        );
    }
}
