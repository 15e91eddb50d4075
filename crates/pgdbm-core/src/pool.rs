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

    /// Decodes the column at `idx` (a `usize` position or a `&str` name) as `T`.
    fn try_get<'a, I: ColumnIndex + ?Sized, T: FromSql<'a>>(&'a self, idx: &I) -> Result<T> {
        let pos = idx.position(self)?;
        self.get_at(pos)
    }

    /// All column names, in order.
    fn column_names(&self) -> Vec<&str> {
        (0..self.len())
            .filter_map(|i| self.column_name(i))
            .collect()
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

    /// Binary `COPY table (columns) FROM STDIN`; `table` is an already quoted, qualified name.
    /// Column types are taken from the table. Returns the number of rows copied.
    async fn copy_in(
        &mut self,
        table: &str,
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
