//! Durations from float seconds (Python pgdbm's unit): [`duration_from_secs`] and the
//! [`DurationField`]s of [`Config`](super::Config).

use std::time::Duration;

use crate::error::{Error, Result};

#[cfg(doc)]
use super::Config;

/// The [`Duration`] fields of [`Config`], for [`Config::with_secs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DurationField {
    /// [`Config::max_inactive_connection_lifetime`].
    MaxInactiveConnectionLifetime,
    /// [`Config::command_timeout`].
    CommandTimeout,
    /// [`Config::retry_delay`].
    RetryDelay,
    /// [`Config::retry_max_delay`].
    RetryMaxDelay,
    /// [`Config::statement_timeout`].
    StatementTimeout,
    /// [`Config::lock_timeout`].
    LockTimeout,
    /// [`Config::idle_in_transaction_session_timeout`].
    IdleInTransactionSessionTimeout,
    /// [`Config::connect_timeout`].
    ConnectTimeout,
    /// [`Config::acquire_timeout`].
    AcquireTimeout,
    /// [`Config::max_lifetime`].
    MaxLifetime,
}

impl DurationField {
    /// The name of the [`Config`] field.
    pub fn name(self) -> &'static str {
        match self {
            DurationField::MaxInactiveConnectionLifetime => "max_inactive_connection_lifetime",
            DurationField::CommandTimeout => "command_timeout",
            DurationField::RetryDelay => "retry_delay",
            DurationField::RetryMaxDelay => "retry_max_delay",
            DurationField::StatementTimeout => "statement_timeout",
            DurationField::LockTimeout => "lock_timeout",
            DurationField::IdleInTransactionSessionTimeout => "idle_in_transaction_session_timeout",
            DurationField::ConnectTimeout => "connect_timeout",
            DurationField::AcquireTimeout => "acquire_timeout",
            DurationField::MaxLifetime => "max_lifetime",
        }
    }
}

/// `secs` seconds as a [`Duration`]; negative, NaN, infinite or too large values are an
/// [`Error::Configuration`] naming `field`.
///
/// This is how float seconds (Python pgdbm's unit) become durations everywhere in pgdbm.
pub fn duration_from_secs(field: &str, secs: f64) -> Result<Duration> {
    if !secs.is_finite() {
        return Err(Error::config(
            field,
            format!("{secs} is not a number of seconds; use a finite, non-negative number"),
        ));
    }
    if secs < 0.0 {
        return Err(Error::config(
            field,
            format!("{secs} s is negative; use a non-negative number of seconds"),
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| {
        Error::config(
            field,
            format!("{secs} s is too large for a duration; use a smaller number of seconds"),
        )
    })
}
