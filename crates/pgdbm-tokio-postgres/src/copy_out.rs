//! `COPY ... TO STDOUT`: raw data chunks ([`PgConnection::run_copy_out`]) and binary rows
//! decoded with the table's column types ([`PgCopyRow`]), both streamed under the
//! connection's in-flight mark like row streams (see `stream.rs`).

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pgdbm_core::{
    quote_catalog_name, quote_identifier, BoxStream, Connection, QueryError, QueryErrorKind,
    Result, Row,
};
use postgres_types::{FromSql, Type};
use tokio_postgres::binary_copy::{BinaryCopyOutRow, BinaryCopyOutStream};

use crate::connection::{PgConnection, Stmt};
use crate::copy::COPYABLE_COLUMNS;
use crate::deadline::deadline_of;
use crate::stream::InFlight;

/// One row of a binary COPY OUT ([`pgdbm_core::Connection::copy_out_rows`]), with the column
/// names and types of the table it came from.
pub struct PgCopyRow {
    row: BinaryCopyOutRow,
    columns: Arc<[(String, Type)]>,
}

impl std::fmt::Debug for PgCopyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCopyRow")
            .field("columns", &self.column_names())
            .finish()
    }
}

impl Row for PgCopyRow {
    fn len(&self) -> usize {
        self.columns.len()
    }

    fn column_name(&self, idx: usize) -> Option<&str> {
        self.columns.get(idx).map(|(n, _)| n.as_str())
    }

    fn column_type(&self, idx: usize) -> Option<&Type> {
        self.columns.get(idx).map(|(_, t)| t)
    }

    fn get_at<'a, T: FromSql<'a>>(&'a self, idx: usize) -> Result<T> {
        let Some((name, ty)) = self.columns.get(idx) else {
            return Err(QueryError::new(
                QueryErrorKind::Client,
                format!(
                    "no column at index {idx} in a COPY row of {} column(s)",
                    self.columns.len()
                ),
                String::new(),
            )
            .into());
        };
        let rust = std::any::type_name::<T>();
        self.row.try_get::<T>(idx).map_err(|e| {
            let cause = e
                .source()
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string());
            QueryError::new(
                QueryErrorKind::Conversion,
                format!(
                    "column `{name}` (index {idx}) of PostgreSQL type `{ty}` could not be decoded \
                     as Rust type `{rust}`: {cause}; read it as a matching type (Option<_> for NULL)"
                ),
                String::new(),
            )
            .into()
        })
    }
}

impl PgConnection {
    /// [`pgdbm_core::Connection::copy_out`]: runs a `COPY ... TO STDOUT` statement and streams
    /// its data.
    pub(crate) async fn run_copy_out(
        &mut self,
        sql: &str,
        timeout: Option<Duration>,
    ) -> Result<BoxStream<Bytes>> {
        self.ready_for(sql).await?;
        self.needs_transaction("copy_out", sql)?;
        let outcome = self
            .bounded(deadline_of(timeout), self.client().copy_out(sql))
            .await;
        self.query_count += 1;
        self.last_used = Instant::now();
        let data = self.settle(outcome, sql, 0, timeout)?;
        Ok(Box::pin(InFlight::new(
            Box::pin(data),
            self.in_flight_flag(),
            sql,
        )))
    }

    /// [`pgdbm_core::Connection::copy_out_rows`]: binary COPY OUT of `table` (already quoted
    /// and qualified), decoded with the column types of a `SELECT ... LIMIT 0` probe (through
    /// the statement cache). Without `columns`, every column `COPY` can write back is read
    /// (generated and dropped ones are left out), so the rows fit `copy_in`.
    pub(crate) async fn run_copy_out_rows(
        &mut self,
        table: &str,
        columns: &[&str],
        timeout: Option<Duration>,
    ) -> Result<BoxStream<PgCopyRow>> {
        let quoted = if columns.is_empty() {
            let names = self.query(COPYABLE_COLUMNS, &[&table], timeout).await?;
            names
                .iter()
                .map(|r| r.get_at::<&str>(0).and_then(quote_catalog_name))
                .collect::<Result<Vec<_>>>()?
        } else {
            columns
                .iter()
                .map(|c| quote_identifier(c))
                .collect::<Result<Vec<_>>>()?
        }
        .join(", ");
        let probe = format!("SELECT {quoted} FROM {table} LIMIT 0");
        let copy = format!("COPY {table} ({quoted}) TO STDOUT (FORMAT binary)");
        self.ready_for(&copy).await?;
        self.needs_transaction("copy_out_rows", &copy)?;
        let deadline = deadline_of(timeout);
        let columns: Arc<[(String, Type)]> =
            match self.statement(&probe, 0, deadline, timeout, false).await? {
                Stmt::Prepared(s) => s
                    .columns()
                    .iter()
                    .map(|c| (c.name().to_string(), c.type_().clone()))
                    .collect(),
                Stmt::Typed(d) => d.columns,
                Stmt::Unnamed => Arc::from(Vec::new()),
            };
        let types: Vec<Type> = columns.iter().map(|(_, t)| t.clone()).collect();
        let outcome = self.bounded(deadline, self.client().copy_out(&copy)).await;
        self.query_count += 1;
        self.last_used = Instant::now();
        let data = self.settle(outcome, &copy, 0, timeout)?;
        let rows = Box::pin(BinaryCopyOutStream::new(data, &types));
        let stream = InFlight::new(rows, self.in_flight_flag(), &copy);
        Ok(Box::pin(futures_util::StreamExt::map(stream, move |r| {
            r.map(|row| PgCopyRow {
                row,
                columns: columns.clone(),
            })
        })))
    }
}
