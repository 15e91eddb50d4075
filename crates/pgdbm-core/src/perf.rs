//! Timing of async functions (Python: the `log_query_performance` decorator).
//!
//! [`log_query_performance`] awaits a future that returns a `Result` and logs, under the
//! tracing target `pgdbm::perf`:
//! - a failure as `error!` (`"call failed"`) with the name, the duration and the error's
//!   `Display` text (pgdbm errors never contain passwords, and parameters only when
//!   `Config::log_parameters` is on);
//! - a success that took at least `threshold` as `warn!` (`"slow call"`) with the name, the
//!   duration and the threshold;
//! - any other success as `debug!` (`"call finished"`).
//!
//! The result is returned unchanged. The clock is [`SystemClock`] unless
//! given ([`log_query_performance_with_clock`]).

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use crate::database::{Clock, SystemClock};

/// The tracing target of [`log_query_performance`]'s events.
pub const PERF_TARGET: &str = "pgdbm::perf";

/// Awaits `call`, logs how it went (see the [module docs](self)) and returns its result.
///
/// ```
/// use std::time::Duration;
/// use pgdbm_core::perf::log_query_performance;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let n: Result<u64, pgdbm_core::Error> =
///     log_query_performance("load_users", Duration::from_millis(200), async { Ok(3) }).await;
/// assert_eq!(n.ok(), Some(3));
/// # }
/// ```
pub async fn log_query_performance<F, T, E>(
    name: &str,
    threshold: Duration,
    call: F,
) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
    E: Display,
{
    log_query_performance_with_clock(&SystemClock, name, threshold, call).await
}

/// [`log_query_performance`] with the time read from `clock`.
pub async fn log_query_performance_with_clock<F, T, E>(
    clock: &dyn Clock,
    name: &str,
    threshold: Duration,
    call: F,
) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
    E: Display,
{
    let started = clock.now();
    let result = call.await;
    let elapsed = clock.now().saturating_duration_since(started);
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    let threshold_ms = threshold.as_secs_f64() * 1000.0;
    match &result {
        Err(e) => tracing::error!(
            target: PERF_TARGET,
            name,
            duration_ms,
            error = %e,
            "call failed"
        ),
        Ok(_) if elapsed >= threshold => tracing::warn!(
            target: PERF_TARGET,
            name,
            duration_ms,
            threshold_ms,
            "slow call"
        ),
        Ok(_) => tracing::debug!(target: PERF_TARGET, name, duration_ms, "call finished"),
    }
    result
}
