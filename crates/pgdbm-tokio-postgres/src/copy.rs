//! Binary `COPY ... FROM STDIN` of parameter rows, with column types taken from the table.

use std::time::{Duration, Instant};

use pgdbm_core::{
    quote_catalog_name, quote_identifier, Connection, Error, Param, QueryError, QueryErrorKind,
    Result, Row,
};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tracing::Instrument;

use crate::connection::{PgConnection, Stmt};
use crate::deadline::deadline_of;
use crate::errors::query_error;

/// The table's columns that `COPY` can write, in order: not dropped, not generated.
pub(crate) const COPYABLE_COLUMNS: &str = "SELECT attname::text FROM pg_catalog.pg_attribute \
     WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '' \
     ORDER BY attnum";

impl PgConnection {
    /// `COPY table (columns) FROM STDIN (FORMAT binary)`. `table` is an already quoted,
    /// qualified name; without `columns` every column that can be written is copied (generated
    /// and dropped columns are left out, names quoted as the catalog has them). The column
    /// types come from a `SELECT ... LIMIT 0` that goes through the statement cache, so
    /// repeated copies into one table cost no extra round trip.
    pub(crate) async fn run_copy_in(
        &mut self,
        table: &str,
        columns: &[&str],
        rows: &[&[Param<'_>]],
        timeout: Option<Duration>,
    ) -> Result<u64> {
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
        let copy = format!("COPY {table} ({quoted}) FROM STDIN (FORMAT binary)");
        self.ready_for(&copy).await?;
        let span = self.span("copy_in", &copy);
        let started = Instant::now();
        let deadline = deadline_of(timeout);

        let types: Vec<postgres_types::Type> =
            match self.statement(&probe, 0, deadline, timeout, false).await? {
                Stmt::Prepared(s) => s.columns().iter().map(|c| c.type_().clone()).collect(),
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
        let work = async {
            let sink = client.copy_in(copy_sql).await?;
            let writer = BinaryCopyInWriter::new(sink, &types);
            let mut writer = std::pin::pin!(writer);
            for (i, row) in rows.iter().enumerate() {
                if let Err(e) = writer.as_mut().write(row).await {
                    return Ok(Err((i, e)));
                }
            }
            writer.as_mut().finish().await.map(Ok)
        };
        let outcome = self.bounded(deadline, work).instrument(span.clone()).await;
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
        self.record(
            &span,
            started,
            result.as_ref().ok().copied(),
            result.is_ok(),
        );
        result
    }
}
