//! Binary `COPY ... FROM STDIN` of parameter rows, with column types taken from the table.

use std::time::{Duration, Instant};

use pgdbm_core::{
    quote_catalog_name, quote_identifier, validate_identifier, Connection, Error, Param,
    QueryError, QueryErrorKind, Result, Row, TableName,
};
use tokio_postgres::binary_copy::BinaryCopyInWriter;

use crate::connection::{PgConnection, Stmt};
use crate::deadline::deadline_of;
use crate::errors::query_error;
use crate::json;

/// The table's columns that `COPY` can write, in order: not dropped, not generated.
pub(crate) const COPYABLE_COLUMNS: &str = "SELECT attname::text FROM pg_catalog.pg_attribute \
     WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '' \
     ORDER BY attnum";

impl PgConnection {
    /// `COPY table (columns) FROM STDIN (FORMAT binary)` into the validated `table`; without
    /// `columns` every column that can be written is copied (generated and dropped columns are
    /// left out, names quoted as the catalog has them). Named columns are plain identifiers, or
    /// exact names of writable columns of the table (`Order Date`), quoted by the one quoter;
    /// anything else is an [`Error::Schema`] before any SQL is built. The column
    /// types come from a `SELECT ... LIMIT 0` that goes through the statement cache, so
    /// repeated copies into one table cost no extra round trip.
    pub(crate) async fn run_copy_in(
        &mut self,
        table: &TableName,
        columns: &[&str],
        rows: &[&[Param<'_>]],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        let table_text = table.to_string();
        let plain = columns.iter().all(|c| validate_identifier(c).is_ok());
        let quoted = if columns.is_empty() || !plain {
            let names = self
                .query(COPYABLE_COLUMNS, &[&table_text], timeout)
                .await?;
            let names = names
                .iter()
                .map(|r| r.get_at::<String>(0))
                .collect::<Result<Vec<_>>>()?;
            if columns.is_empty() {
                names
                    .iter()
                    .map(|n| quote_catalog_name(n))
                    .collect::<Result<Vec<_>>>()?
            } else {
                columns
                    .iter()
                    .map(|c| {
                        if names.iter().any(|n| n == c) {
                            quote_catalog_name(c)
                        } else {
                            // Not a column: the identifier rule's error names the problem.
                            quote_identifier(c)
                        }
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        } else {
            columns
                .iter()
                .map(|c| quote_identifier(c))
                .collect::<Result<Vec<_>>>()?
        }
        .join(", ");
        let table = table_text.as_str();
        let probe = format!("SELECT {quoted} FROM {table} LIMIT 0");
        let copy = format!("COPY {table} ({quoted}) FROM STDIN (FORMAT binary)");
        self.ready_for(&copy).await?;
        let started = Instant::now();
        let deadline = deadline_of(timeout);

        let types: Vec<postgres_types::Type> =
            match self.statement(&probe, 0, deadline, timeout, false).await? {
                Stmt::Prepared(s) => s.columns().iter().map(|c| c.type_().clone()).collect(),
                Stmt::Typed(d) => d.columns.iter().map(|(_, t)| t.clone()).collect(),
                Stmt::Unnamed => Vec::new(),
            };
        if let Some((i, row)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != types.len())
        {
            let mut q = QueryError::new(
                QueryErrorKind::Client,
                format!(
                    "row {i} has {} value(s) but the copy targets {} column(s); nothing was copied",
                    row.len(),
                    types.len()
                ),
                copy.clone(),
            );
            q.row = Some(i);
            return Err(q.into());
        }

        let client = self.client();
        let copy_sql = copy.as_str();
        // tokio-postgres prepares the COPY as a named statement and binds it in a second
        // request: with StatementMode::Unnamed, both go inside one transaction, so a
        // transaction pooler keeps them on one server connection.
        let own_tx = self.settings().statement_mode == pgdbm_core::StatementMode::Unnamed
            && self.tx_status() == crate::wire::TxStatus::Idle;
        let begin_sql = self.settings().begin_sql.as_str();
        let work = async {
            if !own_tx {
                return copy_rows(client, copy_sql, &types, rows).await;
            }
            client.batch_execute(begin_sql).await?;
            let copied = copy_rows(client, copy_sql, &types, rows).await;
            match copied {
                Ok(Ok(n)) => {
                    client.batch_execute("COMMIT").await?;
                    Ok(Ok(n))
                }
                other => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    other
                }
            }
        };
        let outcome = self.bounded(deadline, work).await;
        self.query_count += 1;
        self.last_used = Instant::now();
        let result = match self.settle(outcome, &copy, 0, timeout) {
            Ok(Ok(n)) => Ok(n),
            Ok(Err((i, e))) => {
                let mut err = query_error(e, &copy, types.len());
                if let Error::Query(q) = &mut err {
                    q.row = Some(i);
                    q.message = format!("row {i}: {}; the copy was aborted", q.message);
                }
                Err(err)
            }
            Err(e) => Err(e),
        };
        self.record(started, result.as_ref().ok().copied(), result.is_ok());
        result
    }
}

/// Copies `rows` with `COPY ... FROM STDIN (FORMAT binary)`: `Ok(Err((row, e)))` when a row
/// does not encode (the copy is aborted).
async fn copy_rows(
    client: &tokio_postgres::Client,
    copy_sql: &str,
    types: &[postgres_types::Type],
    rows: &[&[Param<'_>]],
) -> std::result::Result<
    std::result::Result<u64, (usize, tokio_postgres::Error)>,
    tokio_postgres::Error,
> {
    let sink = client.copy_in(copy_sql).await?;
    let writer = BinaryCopyInWriter::new(sink, types);
    let mut writer = std::pin::pin!(writer);
    for (i, row) in rows.iter().enumerate() {
        if let Err(e) = writer.as_mut().write_raw(json::wrap(row)).await {
            return Ok(Err((i, e)));
        }
    }
    writer.as_mut().finish().await.map(Ok)
}
