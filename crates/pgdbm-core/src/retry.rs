//! Retry/backoff schedules for connecting, as pure functions (no sleeping, no clock, no RNG).
//!
//! The adapters' connect loop makes attempt 1; when it fails and
//! [`RetrySchedule::delay_after`]`(1, r)` is `Some(d)`, it sleeps `d` and makes attempt 2, and so
//! on. `retry_attempts` is the total number of attempts (Python pgdbm: `for attempt in
//! range(retry_attempts)`), so there are `attempts - 1` delays.

use std::time::Duration;

/// Most delays [`RetrySchedule::delays`] lists.
pub const MAX_LISTED_DELAYS: usize = 1000;

/// A retry schedule: `attempts` tries, waiting `delay * backoff^(n-1)` (capped at `max_delay`,
/// optionally jittered) after failed attempt `n`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    /// Total number of attempts (0 and 1 both mean: try once, never retry).
    pub attempts: u32,
    /// Delay after the first failed attempt.
    pub delay: Duration,
    /// Factor applied to the delay after each failed attempt; values below 1 and NaN count as 1.
    pub backoff: f64,
    /// Upper bound of any delay.
    pub max_delay: Duration,
    /// Wait a random 50–100 % of each delay ("equal jitter"), so that many clients restarting
    /// together do not retry in lockstep.
    pub jitter: bool,
}

impl RetrySchedule {
    /// The schedule of `config`'s `retry_attempts`, `retry_delay`, `retry_backoff`,
    /// `retry_max_delay` and `retry_jitter`.
    pub fn from_config(config: &crate::Config) -> Self {
        RetrySchedule {
            attempts: config.retry_attempts,
            delay: config.retry_delay,
            backoff: config.retry_backoff,
            max_delay: config.retry_max_delay,
            jitter: config.retry_jitter,
        }
    }

    /// The delay to wait after failed attempt `attempt` (1-based; 0 counts as 1) before the next
    /// one, or `None` when `attempt >= attempts` (no attempt left).
    ///
    /// The delay is `delay * backoff^(attempt - 1)`, capped at `max_delay`. With `jitter`, it is
    /// then scaled by `0.5 + 0.5 * random`, where `random` should be uniform in `[0, 1)`
    /// (values outside are clamped, NaN counts as 1). Never panics: overflows and non-finite
    /// values end at `max_delay`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pgdbm_core::RetrySchedule;
    /// let s = RetrySchedule { attempts: 4, delay: Duration::from_secs(1), backoff: 2.0,
    ///                         max_delay: Duration::from_secs(3), jitter: false };
    /// assert_eq!(s.delay_after(1, 0.0), Some(Duration::from_secs(1)));
    /// assert_eq!(s.delay_after(2, 0.0), Some(Duration::from_secs(2)));
    /// assert_eq!(s.delay_after(3, 0.0), Some(Duration::from_secs(3)));
    /// assert_eq!(s.delay_after(4, 0.0), None);
    /// ```
    pub fn delay_after(&self, attempt: u32, random: f64) -> Option<Duration> {
        let attempt = attempt.max(1);
        if attempt >= self.attempts {
            return None;
        }
        let base = self.base_delay(attempt);
        if !self.jitter {
            return Some(base);
        }
        let r = if random.is_nan() {
            1.0
        } else {
            random.clamp(0.0, 1.0)
        };
        // Equal jitter in integer nanoseconds: half the delay, plus `r` times the other half.
        let total = base.as_nanos();
        let half = total / 2;
        let rest = total - half;
        // The float-to-int cast saturates; `min` keeps the sum at most `total`.
        let extra = ((rest as f64 * r) as u128).min(rest);
        let n = half + extra;
        // n <= total, the nanoseconds of a Duration, so the seconds fit in a u64.
        Some(Duration::new(
            (n / 1_000_000_000) as u64,
            (n % 1_000_000_000) as u32,
        ))
    }

    /// `delay * backoff^(attempt-1)` capped at `max_delay`, without jitter.
    fn base_delay(&self, attempt: u32) -> Duration {
        let capped = |d: Duration| d.min(self.max_delay);
        let backoff = if self.backoff.is_nan() || self.backoff < 1.0 {
            1.0
        } else {
            self.backoff
        };
        let exponent = attempt - 1;
        if exponent == 0 || backoff == 1.0 || self.delay.is_zero() {
            return capped(self.delay);
        }
        let factor = backoff.powf(f64::from(exponent));
        let secs = self.delay.as_secs_f64() * factor;
        match Duration::try_from_secs_f64(secs) {
            // Never below the first delay (rounding), never above the cap.
            Ok(d) => capped(d.max(self.delay)),
            // Infinite or too large for a Duration.
            Err(_) => self.max_delay,
        }
    }

    /// All the delays of the schedule without jitter (the longest possible waits), in order:
    /// `attempts - 1` of them, but at most [`MAX_LISTED_DELAYS`].
    pub fn delays(&self) -> Vec<Duration> {
        let n = (self.attempts.saturating_sub(1) as usize).min(MAX_LISTED_DELAYS);
        (1..=n as u32).map(|a| self.base_delay(a)).collect()
    }

    /// Sum of [`delays`](Self::delays): the longest total time spent waiting.
    pub fn total_delay(&self) -> Duration {
        self.delays()
            .into_iter()
            .fold(Duration::ZERO, Duration::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn schedule(attempts: u32, delay: f64, backoff: f64, max: f64, jitter: bool) -> RetrySchedule {
        RetrySchedule {
            attempts,
            delay: secs(delay),
            backoff,
            max_delay: secs(max),
            jitter,
        }
    }

    #[test]
    fn from_default_config() {
        let s = RetrySchedule::from_config(&crate::Config::default());
        assert_eq!(s.attempts, 3);
        assert_eq!(s.delay, Duration::from_secs(1));
        assert_eq!(s.backoff, 2.0);
        assert_eq!(s.max_delay, Duration::from_secs(30));
        assert!(s.jitter);
        assert_eq!(s.delays(), vec![secs(1.0), secs(2.0)]);
    }

    #[test]
    fn exponential_and_capped() {
        let s = schedule(8, 0.5, 3.0, 10.0, false);
        assert_eq!(
            s.delays(),
            vec![
                secs(0.5),
                secs(1.5),
                secs(4.5),
                secs(10.0),
                secs(10.0),
                secs(10.0),
                secs(10.0)
            ]
        );
        assert_eq!(s.delay_after(7, 0.3), Some(secs(10.0)));
        assert_eq!(s.delay_after(8, 0.3), None);
        assert_eq!(s.delay_after(0, 0.3), Some(secs(0.5)));
        assert_eq!(s.total_delay(), secs(46.5));
    }

    #[test]
    fn no_retries() {
        for attempts in [0, 1] {
            let s = schedule(attempts, 1.0, 2.0, 30.0, true);
            assert_eq!(s.delay_after(1, 0.5), None);
            assert!(s.delays().is_empty());
        }
    }

    #[test]
    fn jitter_is_between_half_and_full() {
        let s = schedule(5, 2.0, 2.0, 30.0, true);
        assert_eq!(s.delay_after(1, 0.0), Some(secs(1.0)));
        assert_eq!(s.delay_after(1, 0.5), Some(secs(1.5)));
        assert_eq!(
            s.delay_after(2, 0.999_999),
            Some(secs(4.0 * (0.5 + 0.5 * 0.999_999)))
        );
        // Out-of-range randoms are clamped.
        assert_eq!(s.delay_after(1, -3.0), Some(secs(1.0)));
        assert_eq!(s.delay_after(1, 7.0), Some(secs(2.0)));
        assert_eq!(s.delay_after(1, f64::NAN), Some(secs(2.0)));
    }

    #[test]
    fn bad_values_do_not_panic() {
        let s = RetrySchedule {
            attempts: u32::MAX,
            delay: Duration::MAX,
            backoff: f64::INFINITY,
            max_delay: Duration::MAX,
            jitter: true,
        };
        assert_eq!(
            s.delay_after(u32::MAX - 1, 0.5).map(|d| d > Duration::ZERO),
            Some(true)
        );
        assert_eq!(s.delays().len(), MAX_LISTED_DELAYS);
        let _ = s.total_delay();
        for backoff in [f64::NAN, -1.0, 0.5, 0.0, f64::NEG_INFINITY] {
            let s = schedule(4, 1.0, backoff, 30.0, false);
            assert_eq!(s.delays(), vec![secs(1.0); 3], "backoff {backoff}");
        }
        // max_delay below delay: the cap wins.
        let s = schedule(3, 5.0, 2.0, 1.0, false);
        assert_eq!(s.delays(), vec![secs(1.0), secs(1.0)]);
    }
}
