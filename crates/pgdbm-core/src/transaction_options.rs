//! [`TransactionOptions`]: isolation level, read-only, deferrable, and the retry schedule of
//! [`Database::transaction_retrying`](crate::Database::transaction_retrying).

use std::fmt;
use std::time::Duration;

use crate::RetrySchedule;

/// A transaction isolation level (PostgreSQL's `SET TRANSACTION ISOLATION LEVEL ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IsolationLevel {
    /// `READ UNCOMMITTED` (behaves as READ COMMITTED in PostgreSQL).
    ReadUncommitted,
    /// `READ COMMITTED`, PostgreSQL's default.
    ReadCommitted,
    /// `REPEATABLE READ`: one snapshot for the whole transaction; concurrent updates of the
    /// same rows fail with 40001.
    RepeatableRead,
    /// `SERIALIZABLE`: as if transactions ran one after the other; conflicts fail with 40001.
    Serializable,
}

impl IsolationLevel {
    /// The SQL spelling, e.g. `"SERIALIZABLE"`.
    pub fn as_sql(&self) -> &'static str {
        match self {
            IsolationLevel::ReadUncommitted => "READ UNCOMMITTED",
            IsolationLevel::ReadCommitted => "READ COMMITTED",
            IsolationLevel::RepeatableRead => "REPEATABLE READ",
            IsolationLevel::Serializable => "SERIALIZABLE",
        }
    }
}

impl fmt::Display for IsolationLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_sql())
    }
}

/// How a transaction starts, and how often [`transaction_retrying`] runs it again.
///
/// ```
/// use pgdbm_core::{IsolationLevel, TransactionOptions};
/// let o = TransactionOptions::serializable().read_only(true).deferrable(true);
/// assert_eq!(o.isolation, Some(IsolationLevel::Serializable));
/// assert_eq!(
///     o.set_transaction_sql().as_deref(),
///     Some("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE")
/// );
/// assert_eq!(TransactionOptions::default().set_transaction_sql(), None);
/// ```
///
/// [`transaction_retrying`]: crate::Database::transaction_retrying
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TransactionOptions {
    /// The isolation level; `None` keeps the session's default (`default_transaction_isolation`).
    pub isolation: Option<IsolationLevel>,
    /// `READ ONLY`: writes fail with 25006.
    pub read_only: bool,
    /// `DEFERRABLE`: with SERIALIZABLE and READ ONLY, wait for a snapshot that can never fail
    /// with a serialization error (no effect otherwise).
    pub deferrable: bool,
    /// Attempts and delays of [`transaction_retrying`]: the project's one backoff
    /// ([`RetrySchedule`]). Default [`TransactionOptions::DEFAULT_RETRY`].
    ///
    /// [`transaction_retrying`]: crate::Database::transaction_retrying
    pub retry: RetrySchedule,
}

impl TransactionOptions {
    /// 5 attempts, waiting 10 ms, 20 ms, 40 ms, 80 ms (at most 1 s) with jitter between them.
    pub const DEFAULT_RETRY: RetrySchedule = RetrySchedule {
        attempts: 5,
        delay: Duration::from_millis(10),
        backoff: 2.0,
        max_delay: Duration::from_secs(1),
        jitter: true,
    };

    /// Options with `SERIALIZABLE` isolation.
    pub fn serializable() -> Self {
        Self::default().isolation(IsolationLevel::Serializable)
    }

    /// Sets the isolation level.
    pub fn isolation(mut self, level: IsolationLevel) -> Self {
        self.isolation = Some(level);
        self
    }

    /// Sets `READ ONLY` (or back to read-write).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Sets `DEFERRABLE`.
    pub fn deferrable(mut self, deferrable: bool) -> Self {
        self.deferrable = deferrable;
        self
    }

    /// Sets the retry schedule of [`transaction_retrying`](crate::Database::transaction_retrying).
    pub fn retry(mut self, schedule: RetrySchedule) -> Self {
        self.retry = schedule;
        self
    }

    /// The `SET TRANSACTION` statement run right after `BEGIN`, or `None` when every option is
    /// the session default.
    pub fn set_transaction_sql(&self) -> Option<String> {
        let mut modes = Vec::new();
        if let Some(level) = self.isolation {
            modes.push(format!("ISOLATION LEVEL {}", level.as_sql()));
        }
        if self.read_only {
            modes.push("READ ONLY".to_string());
        }
        if self.deferrable {
            modes.push("DEFERRABLE".to_string());
        }
        (!modes.is_empty()).then(|| format!("SET TRANSACTION {}", modes.join(", ")))
    }
}

impl Default for TransactionOptions {
    fn default() -> Self {
        TransactionOptions {
            isolation: None,
            read_only: false,
            deferrable: false,
            retry: Self::DEFAULT_RETRY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_transaction_sql_lists_the_modes() {
        let o = TransactionOptions::default().isolation(IsolationLevel::RepeatableRead);
        assert_eq!(
            o.set_transaction_sql().as_deref(),
            Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        );
        let o = TransactionOptions::default().read_only(true);
        assert_eq!(
            o.set_transaction_sql().as_deref(),
            Some("SET TRANSACTION READ ONLY")
        );
        assert_eq!(TransactionOptions::DEFAULT_RETRY.delays().len(), 4);
    }
}
