//! [`DbConnection`](crate::DbConnection): one checked-out connection that renders templates and runs queries.

use super::context::{client_error, debug_params, AsQuery, Ctx, Run};
use super::transaction::{begin_error, Savepoint, Transaction};

use std::fmt;

use postgres_types::FromSql;

use crate::ident::{parse_qualified_name, quote_identifier};
use crate::table_name::TableName;
use crate::{Connection, Error, FromRow, Param, Result, Row, TransactionOptions};

/// A pending action that must run before the next statement on a connection (the async half
/// of dropping a [`Savepoint`](crate::Savepoint) without committing it).
#[derive(Debug)]
pub(super) enum Pending {
    RollbackTo(String),
    Rollback,
}

/// A checked-out connection that renders templates (Python: the connection of `acquire()`).
///
/// Goes back to the pool when dropped; if it is left inside a transaction, the pool resets it
/// before anyone else gets it.
pub struct DbConnection<C: Connection> {
    pub(super) conn: C,
    pub(super) ctx: Ctx,
    pub(super) pending: Vec<Pending>,
    pub(super) depth: u32,
}

impl<C: Connection> fmt::Debug for DbConnection<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConnection")
            .field("schema", &self.ctx.schema)
            .field("in_transaction", &self.conn.in_transaction())
            .field("savepoint_depth", &self.depth)
            .finish()
    }
}

impl<C: Connection> DbConnection<C> {
    pub(super) fn new(conn: C, ctx: Ctx) -> Self {
        DbConnection {
            conn,
            ctx,
            pending: Vec::new(),
            depth: 0,
        }
    }

    /// The driver connection underneath (no template rendering, no observers).
    pub fn inner(&mut self) -> &mut C {
        &mut self.conn
    }

    /// Gives back the driver connection.
    pub fn into_inner(self) -> C {
        self.conn
    }

    /// The schema templates render for.
    pub fn schema(&self) -> Option<&str> {
        self.ctx.schema.as_deref()
    }

    /// True inside a transaction.
    pub fn in_transaction(&self) -> bool {
        self.conn.in_transaction()
    }

    /// Renders `sql` for this connection's schema.
    pub fn render(&self, sql: &str) -> Result<String> {
        Ok(self.ctx.render(sql)?.to_string())
    }

    pub(super) async fn flush_pending(&mut self) -> Result<()> {
        while !self.pending.is_empty() {
            let action = self.pending.remove(0);
            let result = match &action {
                Pending::RollbackTo(name) => {
                    self.conn
                        .batch_execute(
                            &format!("ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"),
                            self.ctx.timeout,
                        )
                        .await
                }
                Pending::Rollback => self.conn.rollback().await,
            };
            if let Err(e) = result {
                self.pending.clear();
                self.conn.discard();
                return Err(Error::Transaction {
                    message: format!(
                        "could not roll back a dropped savepoint/transaction ({action:?}); the connection was discarded"
                    ),
                    source: Some(Box::new(e)),
                });
            }
        }
        Ok(())
    }

    pub(super) fn run<'a>(&self, operation: &'static str, sql: &'a str) -> Run<'a> {
        let span = super::telemetry::query_span(&self.ctx, operation, sql);
        let started = (cfg!(feature = "metrics") || !span.is_disabled() || self.ctx.observed())
            .then(|| self.ctx.shared.clock.now());
        Run {
            span,
            operation,
            sql,
            started,
        }
    }

    /// Runs a statement; returns rows affected.
    pub async fn execute<Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> Result<u64> {
        self.flush_pending().await?;
        let sql = self.ctx.render(sql)?;
        let run = self.run("execute", &sql);
        let result = run
            .in_span(self.conn.execute(&sql, params, self.ctx.timeout))
            .await;
        self.ctx
            .finish(&run, result, |n| Some(*n), &|_| debug_params(params))
    }

    /// Runs one or more statements with the simple protocol, no parameters.
    pub async fn batch_execute<Q: AsQuery + ?Sized>(&mut self, sql: &Q) -> Result<()> {
        self.flush_pending().await?;
        let sql = self.ctx.render(sql)?;
        let run = self.run("batch_execute", &sql);
        let result = run
            .in_span(self.conn.batch_execute(&sql, self.ctx.timeout))
            .await;
        self.ctx.finish(&run, result, |_| None, &|_| Vec::new())
    }

    /// Runs `sql` once per parameter row in one pipelined batch, all or nothing; the error names
    /// the failing row. Returns the total rows affected.
    pub async fn execute_many<'p, Q: AsQuery + ?Sized, R: AsRef<[Param<'p>]> + Sync>(
        &mut self,
        sql: &Q,
        rows: &[R],
    ) -> Result<u64> {
        self.flush_pending().await?;
        let sql = self.ctx.render(sql)?;
        let run = self.run("execute_many", &sql);
        let slices: Vec<&[Param<'_>]> = rows.iter().map(|r| r.as_ref()).collect();
        let result = run
            .in_span(self.conn.execute_many(&sql, &slices, self.ctx.timeout))
            .await;
        self.ctx.finish(&run, result, |n| Some(*n), &|row| {
            row.and_then(|i| slices.get(i))
                .map(|r| debug_params(r))
                .unwrap_or_default()
        })
    }

    /// The first row, if any.
    pub async fn fetch_one<Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> Result<Option<C::Row>> {
        self.flush_pending().await?;
        let sql = self.ctx.render(sql)?;
        let run = self.run("fetch_one", &sql);
        let result = run
            .in_span(self.conn.query_opt(&sql, params, self.ctx.timeout))
            .await;
        self.ctx
            .finish(&run, result, |r| Some(u64::from(r.is_some())), &|_| {
                debug_params(params)
            })
    }

    /// All rows.
    pub async fn fetch_all<Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> Result<Vec<C::Row>> {
        self.flush_pending().await?;
        let sql = self.ctx.render(sql)?;
        let run = self.run("fetch_all", &sql);
        let result = run
            .in_span(self.conn.query(&sql, params, self.ctx.timeout))
            .await;
        self.ctx
            .finish(&run, result, |r| Some(r.len() as u64), &|_| {
                debug_params(params)
            })
    }

    /// The first column of the first row; `None` when there is no row.
    pub async fn fetch_value<T: for<'a> FromSql<'a>, Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> Result<Option<T>> {
        self.fetch_value_at(sql, params, 0).await
    }

    /// Column `column` (0-based) of the first row; `None` when there is no row.
    pub async fn fetch_value_at<T: for<'a> FromSql<'a>, Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
        column: usize,
    ) -> Result<Option<T>> {
        match self.fetch_one(sql, params).await? {
            None => Ok(None),
            Some(row) => row.try_get(column).map(Some),
        }
    }

    /// Runs an INSERT and returns the generated `id`, adding `RETURNING id` when the statement
    /// has no RETURNING clause.
    pub async fn execute_and_return_id<T: for<'a> FromSql<'a>, Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> Result<T> {
        let rendered = self.ctx.render(sql)?;
        let text: &str = &rendered;
        let owned;
        let final_sql: &str = if crate::sql::contains_keyword(text, "RETURNING") {
            text
        } else {
            let trimmed = text.trim_end().trim_end_matches(';').trim_end();
            owned = format!("{trimmed} RETURNING id");
            &owned
        };
        let row = self.fetch_one(final_sql, params).await?.ok_or_else(|| {
            client_error(
                "the statement returned no row, so there is no id; check that it inserts a row",
                final_sql,
            )
        })?;
        row.try_get(0usize)
    }

    /// The first row mapped to `T`.
    pub async fn fetch_one_as<T: FromRow, Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> Result<Option<T>> {
        match self.fetch_one(sql, params).await? {
            None => Ok(None),
            Some(row) => T::from_row(&row).map(Some),
        }
    }

    /// All rows mapped to `T`.
    pub async fn fetch_all_as<T: FromRow, Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> Result<Vec<T>> {
        self.fetch_all(sql, params)
            .await?
            .iter()
            .map(T::from_row)
            .collect()
    }

    /// The first row as a JSON object ([`Row::to_json`]; feature `serde_json`).
    #[cfg(feature = "serde_json")]
    pub async fn fetch_one_json<Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> Result<Option<serde_json::Value>> {
        self.fetch_one(sql, params)
            .await?
            .map(|row| row.to_json())
            .transpose()
    }

    /// All rows as JSON objects ([`Row::to_json`]; feature `serde_json`).
    #[cfg(feature = "serde_json")]
    pub async fn fetch_all_json<Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> Result<Vec<serde_json::Value>> {
        self.fetch_all(sql, params)
            .await?
            .iter()
            .map(Row::to_json)
            .collect()
    }

    /// The quoted, qualified name of `table` for this connection's schema.
    pub(super) fn qualified_table(&self, table: &str) -> Result<String> {
        let (schema, name) = parse_qualified_name(table)?;
        let name = quote_identifier(&name)?;
        Ok(match schema.as_deref().or(self.ctx.schema.as_deref()) {
            Some(s) => format!("{}.{name}", quote_identifier(s)?),
            None => name,
        })
    }

    /// Whether a table (or view) exists: `"users"` in this connection's schema (or the
    /// `search_path` without one), or `"schema.users"`.
    pub async fn table_exists(&mut self, table: &str) -> Result<bool> {
        let qualified = self.qualified_table(table)?;
        let exists: Option<bool> = self
            .fetch_value(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class \
                 WHERE oid = pg_catalog.to_regclass($1) AND relkind IN ('r', 'p', 'v', 'm', 'f'))",
                &[&qualified],
            )
            .await?;
        Ok(exists.unwrap_or(false))
    }

    /// Bulk insert with binary COPY. `table` may be `"t"` (this connection's schema) or
    /// `"schema.t"`; empty `columns` means all columns in table order. Returns the rows copied.
    pub async fn copy_records_to_table<'p, R: AsRef<[Param<'p>]> + Sync>(
        &mut self,
        table: &str,
        columns: &[&str],
        rows: &[R],
    ) -> Result<u64> {
        self.flush_pending().await?;
        let target = TableName::parse(table)?.or_schema(self.ctx.schema.as_deref());
        let qualified = target.to_string();
        let all_columns: Vec<String>;
        let columns: Vec<&str> = if columns.is_empty() {
            let rows = self
                .fetch_all(
                    "SELECT attname::text FROM pg_catalog.pg_attribute \
                     WHERE attrelid = pg_catalog.to_regclass($1) AND attnum > 0 AND NOT attisdropped \
                     AND attgenerated = '' ORDER BY attnum",
                    &[&qualified],
                )
                .await?;
            all_columns = rows
                .iter()
                .map(|r| r.try_get::<_, String>(&0usize))
                .collect::<Result<_>>()?;
            if all_columns.is_empty() {
                return Err(client_error(
                    format!("table {qualified} does not exist or has no columns"),
                    "",
                ));
            }
            all_columns.iter().map(String::as_str).collect()
        } else {
            // Checked by `copy_in`: plain identifiers, or exact names of the table's columns.
            columns.to_vec()
        };
        let slices: Vec<&[Param<'_>]> = rows.iter().map(|r| r.as_ref()).collect();
        let description = format!(
            "COPY {qualified} ({}) FROM STDIN BINARY",
            columns.join(", ")
        );
        let run = self.run("copy_records_to_table", &description);
        let result = run
            .in_span(
                self.conn
                    .copy_in(&target, &columns, &slices, self.ctx.timeout),
            )
            .await;
        self.ctx.finish(&run, result, |n| Some(*n), &|_| Vec::new())
    }

    /// Starts a transaction on this connection, consuming it.
    pub async fn begin(self) -> Result<Transaction<C>> {
        self.begin_with(&TransactionOptions::default()).await
    }

    /// Starts a transaction with `options` (isolation level, read-only, deferrable: a
    /// `SET TRANSACTION` right after `BEGIN` when any is set), consuming the connection.
    pub async fn begin_with(mut self, options: &TransactionOptions) -> Result<Transaction<C>> {
        self.flush_pending().await?;
        if self.conn.in_transaction() {
            return Err(Error::transaction(
                "this connection is already inside a transaction; use savepoint() to nest",
            ));
        }
        self.conn.begin().await.map_err(begin_error)?;
        if let Some(sql) = options.set_transaction_sql() {
            // On failure the dropped transaction is rolled back by the pool's release path.
            self.conn
                .batch_execute(&sql, self.ctx.timeout)
                .await
                .map_err(|e| Error::Transaction {
                    message: format!("could not set the transaction options ({sql})"),
                    source: Some(Box::new(e)),
                })?;
        }
        Ok(Transaction { conn: self })
    }

    /// A nested transaction: a `SAVEPOINT` when this connection is inside a transaction, else a
    /// new transaction. Commit or roll it back explicitly; dropping it rolls it back (before the
    /// next statement on this connection).
    pub async fn savepoint(&mut self) -> Result<Savepoint<'_, C>> {
        self.flush_pending().await?;
        let name = if self.conn.in_transaction() {
            let name = format!("pgdbm_sp_{}", self.depth + 1);
            self.conn
                .batch_execute(&format!("SAVEPOINT {name}"), self.ctx.timeout)
                .await
                .map_err(|e| Error::Transaction {
                    message: format!("could not create savepoint {name}"),
                    source: Some(Box::new(e)),
                })?;
            Some(name)
        } else {
            self.conn.begin().await.map_err(begin_error)?;
            None
        };
        self.depth += 1;
        Ok(Savepoint {
            conn: self,
            name,
            finished: false,
        })
    }
}
