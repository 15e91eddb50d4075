//! The traits a driver adapter implements: [`Pool`], [`Connection`] and [`Row`].
//!
//! Everything above them (the [`Database`](crate::Database) manager, migrations, the testkit,
//! monitoring) is written once, against these traits. An adapter for another driver implements
//! the three traits and gets all of it.
//!
//! Conventions every implementation follows:
//! - SQL reaching a [`Connection`] is already rendered (no `{{...}}` templates).
//! - Errors are [`Error`]s with context: server errors become [`Error::Query`] with the SQLSTATE,
//!   parameters masked as [`QueryParams::masked`](crate::QueryParams::masked).
//! - A `timeout` bounds the call; on expiry the statement is cancelled on the server and the
//!   call returns an [`Error::Query`] of kind [`Timeout`](crate::QueryErrorKind::Timeout).
//! - A connection returned to the pool inside a transaction, or after a cancelled statement, is
//!   reset or discarded before anyone else gets it.

use std::time::Duration;

use async_trait::async_trait;
use postgres_types::{FromSql, ToSql, Type};

use crate::{Config, Error, Result};

/// One query parameter: anything `postgres-types` can encode.
pub type Param<'a> = &'a (dyn ToSql + Sync);

/// A result row.
pub trait Row: Send + Sync + 'static {
    /// Number of columns.
    fn len(&self) -> usize;

    /// True when the row has no columns.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Name of column `idx`, if it exists.
    fn column_name(&self, idx: usize) -> Option<&str>;

    /// PostgreSQL type of column `idx`, if it exists.
    fn column_type(&self, idx: usize) -> Option<&Type>;

    /// Decodes column `idx` as `T`. A missing column or a type mismatch is an
    /// [`Error::Query`] of kind [`Conversion`](crate::QueryErrorKind::Conversion) that names the
    /// column and both types.
    fn get_at<'a, T: FromSql<'a>>(&'a self, idx: usize) -> Result<T>;

    /// Decodes the column at `idx` (a `usize` position or a `&str` name, by value as in
    /// tokio-postgres: `row.try_get::<_, String>("email")`, `row.try_get::<_, i64>(0)`) as `T`.
    /// A missing column or a type mismatch is an [`Error::Query`] naming the column.
    fn try_get<'a, I: ColumnIndex, T: FromSql<'a>>(&'a self, idx: I) -> Result<T> {
        let pos = idx.position(self)?;
        self.get_at(pos)
    }

    /// Like [`try_get`](Row::try_get), for code that knows the column is there and has the
    /// type (tokio-postgres's `Row::get`).
    ///
    /// # Panics
    ///
    /// When [`try_get`](Row::try_get) would return an error: a missing column, a type mismatch,
    /// or NULL read into a non-`Option` type. The panic message is that error's text. Use
    /// `try_get` wherever that can happen.
    #[track_caller]
    fn get<'a, I: ColumnIndex, T: FromSql<'a>>(&'a self, idx: I) -> T {
        match self.try_get(idx) {
            Ok(v) => v,
            // Documented above: `get` is the panicking twin of `try_get`, like tokio-postgres's.
            Err(e) => panic!("Row::get: {e}"),
        }
    }

    /// All column names, in order.
    fn column_names(&self) -> Vec<&str> {
        (0..self.len())
            .filter_map(|i| self.column_name(i))
            .collect()
    }

    /// The row as a JSON object, column name to value, with types mapped as Python pgdbm's
    /// rows turn into JSON (feature `serde_json`; the mapping is in
    /// [`row_json`](crate::row_json)). A column of a type without a mapping is an error naming
    /// it: cast it in SQL.
    #[cfg(feature = "serde_json")]
    fn to_json(&self) -> Result<serde_json::Value> {
        crate::row_json::row_to_json(self)
    }
}

/// Something that selects a column of a [`Row`]: a position or a name.
pub trait ColumnIndex {
    /// The 0-based position of this column in `row`, or an error naming it.
    fn position<R: Row + ?Sized>(&self, row: &R) -> Result<usize>;
}

fn no_column(what: String, row_len: usize) -> Error {
    crate::QueryError::new(
        crate::QueryErrorKind::Client,
        format!("no column {what} in a row of {row_len} column(s)"),
        String::new(),
    )
    .into()
}

impl ColumnIndex for usize {
    fn position<R: Row + ?Sized>(&self, row: &R) -> Result<usize> {
        if *self < row.len() {
            Ok(*self)
        } else {
            Err(no_column(format!("at index {self}"), row.len()))
        }
    }
}

impl ColumnIndex for str {
    fn position<R: Row + ?Sized>(&self, row: &R) -> Result<usize> {
        (0..row.len())
            .find(|&i| row.column_name(i) == Some(self))
            .ok_or_else(|| no_column(format!("named `{self}`"), row.len()))
    }
}

impl ColumnIndex for String {
    fn position<R: Row + ?Sized>(&self, row: &R) -> Result<usize> {
        self.as_str().position(row)
    }
}

impl<T: ColumnIndex + ?Sized> ColumnIndex for &T {
    fn position<R: Row + ?Sized>(&self, row: &R) -> Result<usize> {
        (**self).position(row)
    }
}

/// A connection checked out of a [`Pool`]. Dropping it returns it to the pool.
///
/// All SQL is already rendered. `timeout: None` means no client-side timeout.
#[async_trait]
pub trait Connection: Send {
    /// The row type this connection yields.
    type Row: Row;

    /// Runs one statement; returns the number of rows affected.
    async fn execute(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        timeout: Option<Duration>,
    ) -> Result<u64>;

    /// Runs one statement; returns all rows.
    async fn query(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        timeout: Option<Duration>,
    ) -> Result<Vec<Self::Row>>;

    /// Runs one statement; returns its first row, if any (further rows are ignored).
    async fn query_opt(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        timeout: Option<Duration>,
    ) -> Result<Option<Self::Row>>;

    /// Runs one or more `;`-separated statements with the simple protocol (no parameters).
    async fn batch_execute(&mut self, sql: &str, timeout: Option<Duration>) -> Result<()>;

    /// Runs `sql` once per parameter row, pipelined; returns the total rows affected.
    ///
    /// Either all rows succeed or, inside a transaction, none take effect; outside a transaction
    /// the implementation wraps the batch in one. A failure is an [`Error::Query`] whose
    /// [`row`](crate::QueryError::row) names the failing row.
    async fn execute_many(
        &mut self,
        sql: &str,
        rows: &[&[Param<'_>]],
        timeout: Option<Duration>,
    ) -> Result<u64>;

    /// Binary `COPY table (columns) FROM STDIN` into a validated [`TableName`](crate::TableName)
    /// (never raw text). `columns` are plain identifiers or, when not, exact names of the
    /// table's columns (quoted as the catalog has them); empty means every column that can be
    /// written (not generated, not dropped). Column types are taken from the table. Returns the
    /// number of rows copied.
    async fn copy_in(
        &mut self,
        table: &crate::TableName,
        columns: &[&str],
        rows: &[&[Param<'_>]],
        timeout: Option<Duration>,
    ) -> Result<u64>;

    /// Prepares `sql` and keeps it in this connection's statement cache.
    async fn prepare(&mut self, sql: &str) -> Result<()>;

    /// `BEGIN`. The connection remembers it is inside a transaction.
    async fn begin(&mut self) -> Result<()>;

    /// `COMMIT` of the transaction opened by [`begin`](Connection::begin).
    async fn commit(&mut self) -> Result<()>;

    /// `ROLLBACK` of the transaction opened by [`begin`](Connection::begin).
    async fn rollback(&mut self) -> Result<()>;

    /// True between [`begin`](Connection::begin) and `commit`/`rollback`.
    fn in_transaction(&self) -> bool;

    /// True when the connection is broken and cannot be used again.
    fn is_closed(&self) -> bool;

    /// Marks the connection so the pool closes it instead of reusing it.
    fn discard(&mut self);

    /// Drops every prepared statement cached on this connection.
    fn clear_statement_cache(&mut self);

    /// The backend process id the server announced when the connection was opened
    /// (`BackendKeyData`), when the adapter knows it (default `None`). Directly connected it
    /// equals `pg_backend_pid()`; a connection pooler such as PgBouncer announces a key of its
    /// own, so the two differ (the migrator uses this to detect a pooler).
    fn announced_backend_pid(&self) -> Option<i32> {
        None
    }

    /// The row type of [`copy_out_rows`](Connection::copy_out_rows) (binary COPY rows).
    type CopyRow: Row;

    /// Runs one statement and streams its rows, read from the server as they are consumed
    /// (backpressure: an unpolled stream stops the socket being read).
    ///
    /// The stream does not borrow the connection, but the connection must not run anything
    /// else until the stream ended or was dropped (the manager enforces it with a borrow). A
    /// stream dropped midway leaves its request in flight: the connection cancels and settles
    /// it before its next request, and the pool's release path does the same. `timeout` bounds
    /// starting the statement (until its first answer); reading the rows is paced by the
    /// consumer.
    async fn query_stream(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        timeout: Option<Duration>,
    ) -> Result<crate::BoxStream<Self::Row>>;

    /// Runs `sql`, a complete `COPY ... TO STDOUT` statement, and streams its data as the
    /// server sends it, with the same in-flight rules as [`query_stream`](Connection::query_stream).
    async fn copy_out(
        &mut self,
        sql: &str,
        timeout: Option<Duration>,
    ) -> Result<crate::BoxStream<crate::Bytes>>;

    /// Binary `COPY table (columns) TO STDOUT`, decoded into rows with the table's column types
    /// (`table` is an already quoted, qualified name; empty `columns` means every column).
    async fn copy_out_rows(
        &mut self,
        table: &str,
        columns: &[&str],
        timeout: Option<Duration>,
    ) -> Result<crate::BoxStream<Self::CopyRow>>;

    /// Opens a dedicated connection (not from any pool) for `config`, runs `LISTEN` on each
    /// channel, and streams the notifications. When the connection is lost, a new one is
    /// opened with the config's retry schedule, `LISTEN` is run again and
    /// [`ListenEvent::Reconnected`](crate::ListenEvent::Reconnected) reports the gap. The
    /// stream ends with an error when no new connection could be opened.
    async fn listen(
        config: &Config,
        channels: &[String],
    ) -> Result<crate::BoxStream<crate::ListenEvent>>
    where
        Self: Sized;
}

/// Counters of a [`Pool`] (Python: `get_pool_stats()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PoolStats {
    /// Open physical connections (Python: `size`).
    pub size: usize,
    /// Idle connections (Python: `free_size`).
    pub idle: usize,
    /// Connections checked out (Python: `used_size`).
    pub in_use: usize,
    /// Configured minimum.
    pub min_size: usize,
    /// Configured maximum.
    pub max_size: usize,
    /// Tasks waiting for a connection.
    pub waiting: usize,
}

impl PoolStats {
    /// Builds stats from their parts.
    pub fn new(size: usize, idle: usize, min_size: usize, max_size: usize, waiting: usize) -> Self {
        PoolStats {
            size,
            idle,
            in_use: size.saturating_sub(idle),
            min_size,
            max_size,
            waiting,
        }
    }
}

/// A pool of [`Connection`]s. Cloning shares the pool.
#[async_trait]
pub trait Pool: Clone + Send + Sync + 'static {
    /// The connection handed out by [`acquire`](Pool::acquire).
    type Connection: Connection + 'static;

    /// Validates `config` and opens a pool (with `min_connections` opened eagerly, retried with
    /// the config's backoff schedule).
    async fn connect(config: &Config) -> Result<Self>;

    /// Checks out a connection, waiting at most `acquire_timeout`; waiters are served first come,
    /// first served. A timeout is an [`Error::Pool`] saying how many connections are in use.
    async fn acquire(&self) -> Result<Self::Connection>;

    /// Current counters.
    fn stats(&self) -> PoolStats;

    /// Closes the pool: no new checkouts, idle connections closed, checked-out ones closed on
    /// return.
    async fn close(&self);

    /// True once [`close`](Pool::close) was called.
    fn is_closed(&self) -> bool;

    /// Invalidates the statement cache of every connection of the pool (idle ones now,
    /// checked-out ones before their next statement). Used after migrations.
    fn clear_statement_caches(&self);

    /// Waits `duration` on the pool's runtime (used for polling, e.g. migration locks).
    async fn sleep(&self, duration: Duration);
}

/// Builds a value from a [`Row`]: what `fetch_one_as` / `fetch_all_as` return.
///
/// Usually derived with `#[derive(FromRow)]` from the `pgdbm` crate: each field is read from the
/// column of the same name (or `#[pgdbm(rename = "col")]`), `Option<T>` fields accept NULL, and a
/// type mismatch is an error naming the column.
pub trait FromRow: Sized {
    /// Reads `Self` from `row`.
    fn from_row<R: Row>(row: &R) -> Result<Self>;
}

/// Conventions shared by every [`Pool`] implementation: limits derived from the [`Config`] and
/// the errors a pool returns, so all backends behave and speak alike.
pub mod conventions {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::PoolStats;
    use crate::{Config, Error};

    /// `max_inactive_connection_lifetime`, where zero means "never close idle connections" (as
    /// in asyncpg).
    pub fn idle_limit(config: &Config) -> Option<Duration> {
        Some(config.max_inactive_connection_lifetime).filter(|d| !d.is_zero())
    }

    /// How often a pool looks for idle, expired or broken connections: a quarter of the shortest
    /// of the idle limit and `max_lifetime`, between 100 ms and 10 s.
    pub fn reap_interval(config: &Config) -> Duration {
        [idle_limit(config), config.max_lifetime]
            .into_iter()
            .flatten()
            .min()
            .map_or(Duration::from_secs(10), |d| {
                (d / 4).clamp(Duration::from_millis(100), Duration::from_secs(10))
            })
    }

    /// The [`Error::Pool`] of an acquire that timed out: how long it waited, how many
    /// connections were in use, and what to do about it.
    pub fn acquire_timeout_error(
        waited: Duration,
        stats: PoolStats,
        last_connect_error: Option<&str>,
    ) -> Error {
        let mut message = format!(
            "timed out after {waited:?} waiting for a connection: {} of {} connections in use \
             ({} other task(s) waiting); raise max_connections or acquire_timeout, or release \
             connections sooner",
            stats.in_use, stats.max_size, stats.waiting
        );
        if let Some(last) = last_connect_error {
            message.push_str("; last error opening a connection: ");
            message.push_str(last);
        }
        Error::Pool {
            message,
            in_use: Some(stats.in_use),
            max_size: Some(stats.max_size),
            source: None,
        }
    }

    /// The [`Error::Pool`] of an acquire on a closed pool.
    pub fn pool_closed_error() -> Error {
        Error::pool(
            "the pool is closed: no connections can be acquired after close(); open a new pool",
        )
    }

    /// Counts a task as waiting while it lives (also when the future holding it is cancelled):
    /// the `waiting` figure of [`PoolStats`].
    #[derive(Debug)]
    pub struct WaitingGuard<'a>(&'a AtomicUsize);

    impl<'a> WaitingGuard<'a> {
        /// Adds one to `counter` until the guard is dropped.
        pub fn new(counter: &'a AtomicUsize) -> Self {
            counter.fetch_add(1, Ordering::SeqCst);
            WaitingGuard(counter)
        }
    }

    impl Drop for WaitingGuard<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use proptest::prelude::*;

        fn config(idle_ms: u64, lifetime_ms: Option<u64>) -> Config {
            Config {
                max_inactive_connection_lifetime: Duration::from_millis(idle_ms),
                max_lifetime: lifetime_ms.map(Duration::from_millis),
                ..Config::default()
            }
        }

        #[test]
        fn reap_interval_follows_the_shortest_limit() {
            assert_eq!(
                reap_interval(&config(1_000, None)),
                Duration::from_millis(250)
            );
            assert_eq!(
                reap_interval(&config(300_000, Some(2_000))),
                Duration::from_millis(500)
            );
            // Zero idle lifetime means "never close idle connections": only the lifetime counts.
            assert_eq!(
                reap_interval(&config(0, Some(4_000))),
                Duration::from_secs(1)
            );
            assert_eq!(reap_interval(&config(0, None)), Duration::from_secs(10));
            assert_eq!(idle_limit(&config(0, None)), None);
            assert_eq!(
                idle_limit(&config(1_500, None)),
                Some(Duration::from_millis(1_500))
            );
        }

        #[test]
        fn timeout_error_says_how_many_are_in_use() {
            let stats = PoolStats::new(2, 0, 1, 2, 3);
            let e = acquire_timeout_error(Duration::from_millis(300), stats, Some("refused"));
            let s = e.to_string();
            assert!(
                s.contains("2 of 2 connections in use") && s.contains("3 other"),
                "{s}"
            );
            assert!(
                s.contains("last error opening a connection: refused"),
                "{s}"
            );
            assert!(matches!(
                e,
                Error::Pool {
                    in_use: Some(2),
                    max_size: Some(2),
                    ..
                }
            ));
        }

        #[test]
        fn waiting_guard_counts_while_alive() {
            let n = AtomicUsize::new(0);
            {
                let _a = WaitingGuard::new(&n);
                let _b = WaitingGuard::new(&n);
                assert_eq!(n.load(Ordering::SeqCst), 2);
            }
            assert_eq!(n.load(Ordering::SeqCst), 0);
        }

        proptest! {
            #[test]
            fn reap_interval_is_bounded(idle in 0u64..10_000_000, lifetime in proptest::option::of(1u64..10_000_000)) {
                let d = reap_interval(&config(idle, lifetime));
                prop_assert!(d >= Duration::from_millis(100) && d <= Duration::from_secs(10));
                let shortest = [idle_limit(&config(idle, lifetime)), lifetime.map(Duration::from_millis)]
                    .into_iter()
                    .flatten()
                    .min();
                if let Some(s) = shortest {
                    // Never slower than a quarter of the shortest limit unless clamped at 100 ms.
                    prop_assert!(d <= (s / 4).max(Duration::from_millis(100)));
                }
            }
        }
    }
}
