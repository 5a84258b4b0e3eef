//! Retry timing: exponential backoff with jitter, and `Retry-After`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::sys::clock;

/// Backoff never grows past this, whatever the attempt number.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Delay before retry number `retry` (1 = first retry): `base * 2^(retry-1)`,
/// capped, with "equal jitter": uniformly within [half, full] of that, so
/// agents that failed together do not retry in lockstep. `unit` is a
/// random number in [0, 1).
pub fn backoff(base: Duration, retry: u32, unit: f64) -> Duration {
    let factor = 2f64.powi(retry.saturating_sub(1).min(30) as i32);
    let full = (base.as_secs_f64() * factor).min(MAX_BACKOFF.as_secs_f64());
    let unit = unit.clamp(0.0, 1.0);
    Duration::from_secs_f64(full / 2.0 + full / 2.0 * unit)
}

/// A random number in [0, 1) from the standard library's hash seeds: good
/// enough for jitter, and no extra crate.
pub fn random_unit() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The longest `Retry-After` taken from a server. Longer values (up to
/// `u64::MAX` seconds, or a date in the year 9999) are cut to this, so that
/// no later `Instant` or `Duration` arithmetic can overflow.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Parses a `Retry-After` value: delay-seconds or an IMF-fixdate such as
/// `Sun, 06 Nov 1994 08:49:37 GMT`. A date in the past means "now"; any
/// value is capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is still "a very long time".
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = parse_http_date(value)?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

fn parse_http_date(s: &str) -> Option<SystemTime> {
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let rest = s.split_once(", ")?.1;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as u32 + 1;
    let day: u32 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let year: i64 = year.parse().ok().filter(|y| (1970..=9999).contains(y))?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    if *h > 23 || *m > 59 || *sec > 60 {
        return None;
    }
    let days = u64::try_from(clock::days_from_civil(year, month, day)).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_bounds() {
        let base = Duration::from_secs(1);
        for (retry, full) in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)] {
            let lo = backoff(base, retry, 0.0).as_secs_f64();
            let hi = backoff(base, retry, 0.999_999).as_secs_f64();
            assert!((lo - full / 2.0).abs() < 1e-6, "retry {retry}: {lo}");
            assert!((hi - full).abs() < 1e-3, "retry {retry}: {hi}");
        }
        assert_eq!(backoff(base, 40, 1.0), MAX_BACKOFF);
        assert_eq!(backoff(Duration::ZERO, 3, 0.5), Duration::ZERO);
        assert_eq!(
            backoff(Duration::from_millis(500), 2, 1.0),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn random_units_are_in_range_and_vary() {
        let xs: Vec<f64> = (0..64).map(|_| random_unit()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(xs.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn retry_after_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        // Huge values are capped, never an overflow later on.
        for huge in [
            "18446744073709551615",
            "99999999999999999999999999",
            "86401",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(
                parse_retry_after(huge, now),
                Some(MAX_RETRY_AFTER),
                "{huge}"
            );
        }
        for bad in [
            "",
            "-1",
            "soon",
            "1.5",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Sun, 32 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }
}
