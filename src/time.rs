//! Time: the clock, what a reader may believe about it, and the two text
//! forms we write and read (RFC 3339 in records and manifests, the HTTP date
//! in response headers).
//!
//! RFC 3339 parsing is strict: it refuses impossible dates (31 February,
//! 29 February of a common year) and offsets beyond ±23:59, since a record
//! or manifest date is untrusted input. HTTP dates are written by the
//! `httpdate` crate (RFC 9110's IMF-fixdate). This module depends on nothing
//! else of ours; what a time means for a record or a release is theirs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far a reader's clock may be behind the publisher's before a record
/// counts as expired: boards without a real-time clock run on NTP, which
/// may be a few minutes off right after boot.
pub const CLOCK_SKEW_SECS: u64 = 300;

/// When this binary was built (seconds since the epoch, stamped by
/// `build.rs`): no honest clock reads earlier.
pub const BUILD_TIME: u64 = parse_decimal(env!("PLASMD_BUILD_TIME"));

const fn parse_decimal(s: &str) -> u64 {
    let b = s.as_bytes();
    let (mut i, mut n) = (0, 0u64);
    while i < b.len() {
        n = n * 10 + (b[i] - b'0') as u64;
        i += 1;
    }
    n
}

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a reader knows about the time, in seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Now {
    /// The clock is trusted.
    At(u64),
    /// The clock is known to be wrong (it reads earlier than something
    /// already seen): only a lower bound is known.
    NotBefore(u64),
}

impl Now {
    /// The system clock `system_now`, judged against `trusted`, a time
    /// known to have passed: a clock reading earlier (beyond the skew) is
    /// wrong, e.g. a board without a real-time clock before NTP.
    pub fn judge(system_now: u64, trusted: u64) -> Now {
        if system_now.saturating_add(CLOCK_SKEW_SECS) < trusted {
            Now::NotBefore(trusted)
        } else {
            Now::At(system_now)
        }
    }
}

/// [`rfc3339`] of seconds since the epoch.
pub fn rfc3339_secs(t: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(t))
}

/// Formats a time as RFC 3339 UTC with second precision, e.g.
/// `2026-11-22T10:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Parses an RFC 3339 date-time (UTC `Z` or a numeric offset, optional
/// fraction, which is dropped) into seconds since the epoch. `None` for
/// anything else, for impossible dates, offsets beyond ±23:59 and times
/// before the epoch.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |part: Option<&str>| -> Option<i64> {
        let part = part?;
        if !part.is_empty() && part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(s.get(0..4))?, num(s.get(5..7))?, num(s.get(8..10))?);
    let (h, mi, sec) = (
        num(s.get(11..13))?,
        num(s.get(14..16))?,
        num(s.get(17..19))?,
    );
    // Second 60 is a leap second (RFC 3339 5.7); it counts as the next one.
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return None;
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest.as_bytes() {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(rest.get(1..3))?, num(rest.get(4..6))?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let t = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    u64::try_from(t).ok()
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for HTTP headers.
pub fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// Days in month `m` (1-12) of year `y`, proleptic Gregorian.
fn days_in_month(y: i64, m: i64) -> i64 {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) to days since 1970-01-01; inverse of `civil_from_days`.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_345_200);
        let s = rfc3339(t);
        assert_eq!(s, "2026-11-22T11:00:00Z");
        assert_eq!(parse_rfc3339(&s), Some(1_795_345_200));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-22T12:00:00+01:00"),
            Some(1_795_345_200)
        );
        assert_eq!(
            parse_rfc3339("2026-11-22T11:00:00.123Z"),
            Some(1_795_345_200)
        );
        assert_eq!(parse_rfc3339("2026-13-22T11:00:00Z"), None);
        assert_eq!(parse_rfc3339("2026-11-22T11:00:00"), None);
    }

    #[test]
    fn rfc3339_refuses_impossible_dates_and_offsets() {
        for bad in [
            "2026-02-31T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-00-10T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:60:00Z",
            "2026-01-01T00:00:61Z",
            "2026-01-01T00:00:00+24:00",
            "2026-01-01T00:00:00-99:00",
            "2026-01-01T00:00:00+01:60",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00Zjunk",
            "1969-12-31T23:59:59Z",
            "2026-01-01T00:00:0\u{e9}Z",
            "+026-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert!(parse_rfc3339("2028-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339("2000-02-29T00:00:00Z").is_some());
        assert_eq!(
            parse_rfc3339("2026-01-01T00:00:00+23:59"),
            parse_rfc3339("2025-12-31T00:01:00Z")
        );
    }

    #[test]
    fn http_dates_are_imf_fixdates() {
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn a_clock_behind_what_was_seen_is_not_trusted() {
        assert_eq!(Now::judge(1000, 1000 + CLOCK_SKEW_SECS), Now::At(1000));
        assert_eq!(Now::judge(1000, 2000), Now::NotBefore(2000));
    }
}
