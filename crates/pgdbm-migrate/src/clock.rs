//! Small time helpers: UTC timestamps for file names and jitter, without extra dependencies.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// Civil date (year, month, day) of `days` since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = if m <= 2 { y + 1 } else { y };
    // Both values are in small ranges (see the comments above), so the casts are lossless.
    (y, m as u32, d as u32)
}

/// `YYYYMMDDHHMMSS` (UTC) of `secs` seconds since the Unix epoch.
pub(crate) fn timestamp_from_unix(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// `YYYYMMDDHHMMSS` (UTC) of now.
pub(crate) fn timestamp_now() -> String {
    let secs = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    timestamp_from_unix(secs)
}

/// A random number in `[0, 1)` from the standard library's randomly seeded hasher (every
/// `RandomState` gets fresh keys), good enough for backoff jitter.
pub(crate) fn jitter() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos().into())
            .unwrap_or(0),
    );
    // 53 random bits -> [0, 1).
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_timestamps() {
        assert_eq!(timestamp_from_unix(0), "19700101000000");
        assert_eq!(timestamp_from_unix(1_706_270_400), "20240126120000");
        assert_eq!(timestamp_from_unix(951_825_600), "20000229120000");
        assert_eq!(timestamp_from_unix(-1), "19691231235959");
        assert_eq!(timestamp_now().len(), 14);
    }

    #[test]
    fn jitter_is_in_unit_interval_and_varies() {
        let v: Vec<f64> = (0..50).map(|_| jitter()).collect();
        assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(v.iter().any(|x| (x - v[0]).abs() > f64::EPSILON));
    }

    proptest! {
        #[test]
        fn timestamps_are_14_digits_and_ordered(a in 0i64..8_000_000_000, b in 0i64..8_000_000_000) {
            let (ta, tb) = (timestamp_from_unix(a), timestamp_from_unix(b));
            prop_assert_eq!(ta.len(), 14);
            prop_assert!(ta.bytes().all(|c| c.is_ascii_digit()));
            // Code-point order of the names follows time order.
            prop_assert_eq!(a.cmp(&b), ta.cmp(&tb));
        }
    }
}
