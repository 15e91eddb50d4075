//! Closure transactions: [`Database::transaction_with`] commits when the closure returns `Ok`
//! and rolls back on `Err` or panic; [`Database::transaction_retrying`] runs it again on
//! serialization failures and deadlocks.
//!
//! The closure is an async closure (`async |tx| { ... }`, Rust 1.85+) borrowing the
//! [`Transaction`] mutably, so the transaction cannot escape it. A panic inside unwinds through
//! the transaction's drop: the connection goes back to the pool inside the transaction and the
//! pool's release path rolls it back at once (as for any dropped [`Transaction`]); the panic
//! then continues to the caller.

use std::hash::{BuildHasher, Hasher};

use crate::{Database, Error, Pool, Result, Transaction, TransactionOptions};

/// The value of a [`transaction_retrying`](Database::transaction_retrying) and how many times
/// the closure ran (1 when the first attempt committed).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retried<T> {
    /// What the closure returned in the attempt that committed.
    pub value: T,
    /// Attempts made, the committed one included.
    pub attempts: u32,
}

/// Commits on `Ok`, rolls back on `Err` (returning the closure's error; a failed rollback is
/// logged, and the connection is then reset or discarded by the pool).
async fn finish<C: crate::Connection, T>(tx: Transaction<C>, result: Result<T>) -> Result<T> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(target: "pgdbm", error = %rollback, "rollback after a failed transaction closure failed");
            }
            Err(e)
        }
    }
}

/// A number in `[0, 1)` for the retry jitter. The core has no random number generator; std's
/// `RandomState` is seeded randomly per process and varied per instance, which is all jitter
/// needs (spreading out clients that conflicted together).
fn jitter_random() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

impl<P: Pool> Database<P> {
    /// Runs `f` in a transaction on a fresh connection: commits when it returns `Ok(v)` and
    /// gives `v` back; rolls back when it returns `Err` (that error is returned) or panics
    /// (the panic goes on). Python: `async with db.transaction() as tx:`.
    ///
    /// ```no_run
    /// # async fn demo<P: pgdbm_core::Pool>(db: pgdbm_core::Database<P>) -> pgdbm_core::Result<()> {
    /// use pgdbm_core::Executor;
    /// let id: i64 = db
    ///     .transaction_with(async |tx| {
    ///         let id = tx.execute_and_return_id("INSERT INTO {{tables.orders}} (total) VALUES (1)", &[]).await?;
    ///         tx.execute("UPDATE {{tables.stats}} SET orders = orders + 1", &[]).await?;
    ///         Ok(id)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn transaction_with<T, F>(&self, f: F) -> Result<T>
    where
        F: AsyncFnOnce(&mut Transaction<P::Connection>) -> Result<T>,
    {
        self.transaction_with_options(&TransactionOptions::default(), f)
            .await
    }

    /// [`transaction_with`](Database::transaction_with) with `options` (isolation level,
    /// read-only, deferrable). Runs `f` once; see
    /// [`transaction_retrying`](Database::transaction_retrying) to retry.
    pub async fn transaction_with_options<T, F>(
        &self,
        options: &TransactionOptions,
        f: F,
    ) -> Result<T>
    where
        F: AsyncFnOnce(&mut Transaction<P::Connection>) -> Result<T>,
    {
        let mut tx = self.begin_with(options).await?;
        let result = f(&mut tx).await;
        finish(tx, result).await
    }

    /// Runs `f` in a transaction with `options`, and runs it again (in a new transaction, after
    /// the delay of `options.retry`) when the attempt fails with an error that
    /// [`is_retryable`](Error::is_retryable): a serialization failure (40001) or deadlock
    /// (40P01), from any statement or from `COMMIT`, or a connection that failed before any
    /// statement ran. Any other error, and a commit whose outcome is unknown
    /// ([`CommitOutcomeUnknown`](crate::QueryErrorKind::CommitOutcomeUnknown)), is returned at
    /// once without retrying. Meant for SERIALIZABLE and REPEATABLE READ work.
    ///
    /// `f` must be safe to run more than once: everything it did in a failed attempt was
    /// rolled back, but effects outside the database (messages sent, counters in memory) were
    /// not. Returns the value with the number of attempts; after the last attempt fails, an
    /// [`Error::Transaction`] saying how many were made, with the last error as source (the
    /// `is_*` helpers see through it).
    pub async fn transaction_retrying<T, F>(
        &self,
        options: &TransactionOptions,
        mut f: F,
    ) -> Result<Retried<T>>
    where
        F: AsyncFnMut(&mut Transaction<P::Connection>) -> Result<T>,
    {
        let mut attempt: u32 = 1;
        loop {
            let result = match self.begin_with(options).await {
                Ok(mut tx) => {
                    let result = f(&mut tx).await;
                    finish(tx, result).await
                }
                Err(e) => Err(e),
            };
            let error = match result {
                Ok(value) => {
                    return Ok(Retried {
                        value,
                        attempts: attempt,
                    })
                }
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => e,
            };
            let Some(delay) = options.retry.delay_after(attempt, jitter_random()) else {
                return Err(Error::Transaction {
                    message: format!(
                        "gave up after {attempt} attempt(s): every attempt failed with a \
                         retryable error (serialization failure, deadlock or lost connection); \
                         raise TransactionOptions::retry's attempts or reduce contention"
                    ),
                    source: Some(Box::new(error)),
                });
            };
            tracing::debug!(
                target: "pgdbm",
                attempt,
                sqlstate = error.sql_state().map(|s| s.to_string()),
                delay_ms = delay.as_secs_f64() * 1000.0,
                "transaction failed with a retryable error; running it again"
            );
            self.pool().sleep(delay).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..1000 {
            let r = jitter_random();
            assert!((0.0..1.0).contains(&r), "{r}");
        }
    }
}
