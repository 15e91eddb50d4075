//! [`Executor`]: the query methods shared by every handle that runs queries, so one function
//! runs on the pool, a checked-out connection, a transaction or a savepoint.
//!
//! ```no_run
//! use pgdbm_core::{Executor, Result};
//!
//! /// Works on `&mut db`, `&mut conn`, `&mut tx` and `&mut savepoint` alike.
//! async fn count_users(q: &mut impl Executor) -> Result<i64> {
//!     Ok(q.fetch_value("SELECT count(*) FROM {{tables.users}}", &[]).await?.unwrap_or(0))
//! }
//! ```
//!
//! Methods take `&mut self`: a connection runs one statement at a time, and `&mut` makes that
//! a compile-time fact instead of a lock taken on every call. [`Database`] ignores the
//! exclusivity (each call checks out its own connection); `&Database` is an `Executor` too, so
//! `f(&mut &db)` or passing `&db` by value to `fn f(q: impl Executor)` works without `mut`.
//!
//! The methods return `impl Future + Send` (native `async fn` in traits, no boxing): a call
//! through the trait is statically dispatched to the handle's own method and compiles to the
//! same code as calling it directly.

use std::future::Future;

use postgres_types::FromSql;

use crate::{
    AsQuery, Connection, Database, DbConnection, FromRow, Param, Pool, Result, Row, Savepoint,
    Transaction,
};

/// The query methods of [`Database`], [`DbConnection`], [`Transaction`] and [`Savepoint`]
/// (sqlx's `Executor`, tokio-postgres's `GenericClient`). All of them render `{{...}}`
/// templates for the handle's schema, apply its timeout and report to its observers.
///
/// The Python names are kept; [`fetch_optional`](Executor::fetch_optional) is the Rust-style
/// spelling of [`fetch_one`](Executor::fetch_one) (which, as in Python, returns `None` when
/// there is no row).
pub trait Executor: Send {
    /// The row type of the handle's connections.
    type Row: Row;

    /// Runs a statement; returns rows affected (Python: `execute`).
    fn execute<Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Runs one or more statements with the simple protocol, no parameters.
    fn batch_execute<Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Runs `sql` once per parameter row in one pipelined batch, all or nothing (Python:
    /// `executemany`). Returns the total rows affected; an error names the failing row.
    fn execute_many<'p, Q: AsQuery + ?Sized, R: AsRef<[Param<'p>]> + Sync>(
        &mut self,
        sql: &Q,
        rows: &[R],
    ) -> impl Future<Output = Result<u64>> + Send;

    /// The first row, if any (Python: `fetch_one`).
    fn fetch_one<Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Option<Self::Row>>> + Send;

    /// The first row, if any: [`fetch_one`](Executor::fetch_one) under the name sqlx users
    /// look for.
    fn fetch_optional<Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Option<Self::Row>>> + Send {
        self.fetch_one(sql, params)
    }

    /// All rows (Python: `fetch_all`).
    fn fetch_all<Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Vec<Self::Row>>> + Send;

    /// The first column of the first row; `None` when there is no row (Python:
    /// `fetch_value`). Use `Option<T>` as `T` for a nullable column.
    fn fetch_value<T: for<'a> FromSql<'a>, Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Option<T>>> + Send;

    /// Column `column` (0-based) of the first row (Python: `fetch_value(column=)`).
    fn fetch_value_at<T: for<'a> FromSql<'a>, Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
        column: usize,
    ) -> impl Future<Output = Result<Option<T>>> + Send;

    /// Runs an INSERT and returns the generated `id`, adding `RETURNING id` when the statement
    /// has no RETURNING clause (Python: `execute_and_return_id`).
    fn execute_and_return_id<T: for<'a> FromSql<'a>, Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<T>> + Send;

    /// The first row mapped to `T` (Python: `fetch_as_model`).
    fn fetch_one_as<T: FromRow, Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Option<T>>> + Send;

    /// All rows mapped to `T` (Python: `fetch_all_as_model`).
    fn fetch_all_as<T: FromRow, Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Vec<T>>> + Send;

    /// Whether a table (or view) exists: `"users"` in the handle's schema (or the
    /// `search_path` without one), or `"schema.users"` (Python: `table_exists`).
    fn table_exists(&mut self, table: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Bulk insert with binary COPY (Python: `copy_records_to_table`). `table` may be `"t"`
    /// (the handle's schema) or `"schema.t"`; empty `columns` means all columns in table
    /// order. Returns the rows copied.
    fn copy_records_to_table<'p, R: AsRef<[Param<'p>]> + Sync>(
        &mut self,
        table: &str,
        columns: &[&str],
        rows: &[R],
    ) -> impl Future<Output = Result<u64>> + Send;
}

/// Implements every required method of [`Executor`] by calling `<$t>::method($target, ...)`:
/// the inherent method of the handle (inherent items win over trait items in a type path), with
/// `$target` an expression of `$this` (the `&mut self`).
macro_rules! delegate {
    ($t:ty, $this:ident => $target:expr) => {
        fn execute<Q: AsQuery + ?Sized>(
            &mut self,
            sql: &Q,
            params: &[Param<'_>],
        ) -> impl Future<Output = Result<u64>> + Send {
            let $this = self;
            <$t>::execute($target, sql, params)
        }

        fn batch_execute<Q: AsQuery + ?Sized>(
            &mut self,
            sql: &Q,
        ) -> impl Future<Output = Result<()>> + Send {
            let $this = self;
            <$t>::batch_execute($target, sql)
        }

        fn execute_many<'p, Q: AsQuery + ?Sized, R: AsRef<[Param<'p>]> + Sync>(
            &mut self,
            sql: &Q,
            rows: &[R],
        ) -> impl Future<Output = Result<u64>> + Send {
            let $this = self;
            <$t>::execute_many($target, sql, rows)
        }

        fn fetch_one<Q: AsQuery + ?Sized>(
            &mut self,
            sql: &Q,
            params: &[Param<'_>],
        ) -> impl Future<Output = Result<Option<Self::Row>>> + Send {
            let $this = self;
            <$t>::fetch_one($target, sql, params)
        }

        fn fetch_all<Q: AsQuery + ?Sized>(
            &mut self,
            sql: &Q,
            params: &[Param<'_>],
        ) -> impl Future<Output = Result<Vec<Self::Row>>> + Send {
            let $this = self;
            <$t>::fetch_all($target, sql, params)
        }

        fn fetch_value<T: for<'a> FromSql<'a>, Q: AsQuery + ?Sized>(
            &mut self,
            sql: &Q,
            params: &[Param<'_>],
        ) -> impl Future<Output = Result<Option<T>>> + Send {
            let $this = self;
            <$t>::fetch_value($target, sql, params)
        }

        fn fetch_value_at<T: for<'a> FromSql<'a>, Q: AsQuery + ?Sized>(
            &mut self,
            sql: &Q,
            params: &[Param<'_>],
            column: usize,
        ) -> impl Future<Output = Result<Option<T>>> + Send {
            let $this = self;
            <$t>::fetch_value_at($target, sql, params, column)
        }

        fn execute_and_return_id<T: for<'a> FromSql<'a>, Q: AsQuery + ?Sized>(
            &mut self,
            sql: &Q,
            params: &[Param<'_>],
        ) -> impl Future<Output = Result<T>> + Send {
            let $this = self;
            <$t>::execute_and_return_id($target, sql, params)
        }

        fn fetch_one_as<T: FromRow, Q: AsQuery + ?Sized>(
            &mut self,
            sql: &Q,
            params: &[Param<'_>],
        ) -> impl Future<Output = Result<Option<T>>> + Send {
            let $this = self;
            <$t>::fetch_one_as($target, sql, params)
        }

        fn fetch_all_as<T: FromRow, Q: AsQuery + ?Sized>(
            &mut self,
            sql: &Q,
            params: &[Param<'_>],
        ) -> impl Future<Output = Result<Vec<T>>> + Send {
            let $this = self;
            <$t>::fetch_all_as($target, sql, params)
        }

        fn table_exists(&mut self, table: &str) -> impl Future<Output = Result<bool>> + Send {
            let $this = self;
            <$t>::table_exists($target, table)
        }

        fn copy_records_to_table<'p, R: AsRef<[Param<'p>]> + Sync>(
            &mut self,
            table: &str,
            columns: &[&str],
            rows: &[R],
        ) -> impl Future<Output = Result<u64>> + Send {
            let $this = self;
            <$t>::copy_records_to_table($target, table, columns, rows)
        }
    };
}

impl<P: Pool> Executor for Database<P> {
    type Row = <P::Connection as Connection>::Row;
    delegate!(Database<P>, this => this);
}

impl<P: Pool> Executor for &Database<P> {
    type Row = <P::Connection as Connection>::Row;
    delegate!(Database<P>, this => *this);
}

impl<C: Connection> Executor for DbConnection<C> {
    type Row = C::Row;
    delegate!(DbConnection<C>, this => this);
}

impl<C: Connection> Executor for Transaction<C> {
    type Row = C::Row;
    delegate!(DbConnection<C>, this => &mut **this);
}

impl<C: Connection> Executor for Savepoint<'_, C> {
    type Row = C::Row;
    delegate!(DbConnection<C>, this => &mut **this);
}

impl<E: Executor + ?Sized> Executor for &mut E {
    type Row = E::Row;
    delegate!(E, this => &mut **this);
}
