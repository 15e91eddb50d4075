//! Small time helpers: local-time timestamps for new migration file names (as Python pgdbm) and
//! jitter.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// `YYYYMMDD_HHMMSS` of `t`: the prefix Python pgdbm 0.5's `create_migration` gives new files
/// (`datetime.now().strftime("%Y%m%d_%H%M%S")`).
pub(crate) fn file_timestamp<Tz: chrono::TimeZone>(t: &chrono::DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    t.format("%Y%m%d_%H%M%S").to_string()
}

/// [`file_timestamp`] of now in the local time zone (`TZ`, else `/etc/localtime`), as Python's
/// naive `datetime.now()`.
pub(crate) fn local_file_timestamp_now() -> String {
    file_timestamp(&chrono::Local::now())
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
    fn file_timestamps_are_pythons_format() {
        use chrono::TimeZone;
        let t = chrono::FixedOffset::east_opt(2 * 3600)
            .unwrap()
            .with_ymd_and_hms(2024, 1, 26, 12, 0, 5)
            .unwrap();
        // The wall-clock time of the zone, not UTC (Python's naive `datetime.now()`).
        assert_eq!(file_timestamp(&t), "20240126_120005");
        let now = local_file_timestamp_now();
        assert_eq!(now.len(), 15);
        assert_eq!(now.as_bytes()[8], b'_');
    }

    #[test]
    fn jitter_is_in_unit_interval_and_varies() {
        let v: Vec<f64> = (0..50).map(|_| jitter()).collect();
        assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(v.iter().any(|x| (x - v[0]).abs() > f64::EPSILON));
    }

    proptest! {
        #[test]
        fn file_timestamps_sort_in_time_order(a in 0i64..8_000_000_000, b in 0i64..8_000_000_000) {
            let at = |s| chrono::DateTime::from_timestamp(s, 0).unwrap();
            let (ta, tb) = (file_timestamp(&at(a)), file_timestamp(&at(b)));
            prop_assert_eq!(ta.len(), 15);
            // Code-point order of the names follows time order.
            prop_assert_eq!(a.cmp(&b), ta.cmp(&tb));
        }
    }
}
