//! Streaming on the manager's handles: [`fetch_stream`](DbConnection::fetch_stream),
//! [`copy_out`](DbConnection::copy_out), [`copy_out_rows`](DbConnection::copy_out_rows),
//! [`listen`](Database::listen) and [`notify`](DbConnection::notify).

use super::context::debug_params;
use super::{AsQuery, Database, DbConnection, RowOf};
use crate::ident::{quote_identifier, validate_identifier};
use crate::stream::{BoxStream, CopyFormat, CopySource, OwnedRowStream, RowStream};
use crate::{Bytes, Connection, ListenEvent, Param, Pool, Result};

impl<C: Connection> DbConnection<C> {
    /// Runs a query and streams its rows as they are consumed, instead of collecting them:
    /// client memory stays bounded for any result size. Use `futures::StreamExt::next` (or
    /// `TryStreamExt::try_next`) to read it.
    ///
    /// The stream borrows this connection; dropping it before the end cancels the rest of the
    /// statement on the server before the connection's next statement. The handle's timeout
    /// bounds starting the statement, not reading it.
    pub async fn fetch_stream<Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> Result<RowStream<'_, C::Row>> {
        self.flush_pending().await?;
        let sql = self.ctx.render(sql)?;
        let run = self.run("fetch_stream", &sql);
        let result = run
            .in_span(self.conn.query_stream(&sql, params, self.ctx.timeout))
            .await;
        self.ctx
            .finish(&run, result, |_| None, &|_| debug_params(params))
            .map(RowStream::new)
    }

    /// `COPY ... TO STDOUT` of a table or a query, streamed as the server sends it (chunks of
    /// the chosen [`CopyFormat`]). A table is `"t"` (this handle's schema) or `"schema.t"`;
    /// a query has its templates rendered and takes no parameters.
    pub async fn copy_out(
        &mut self,
        source: CopySource<'_>,
        format: CopyFormat,
    ) -> Result<RowStream<'_, Bytes>> {
        self.flush_pending().await?;
        let sql = match source {
            CopySource::Table { table, columns } => {
                let qualified = self.qualified_table(table)?;
                let cols = quoted_columns(columns)?;
                format!("COPY {qualified}{cols} TO STDOUT {}", format.options())
            }
            CopySource::Query(q) => {
                let rendered = self.ctx.render(q)?;
                let body = rendered.trim().trim_end_matches(';');
                format!("COPY ({body}) TO STDOUT {}", format.options())
            }
        };
        let run = self.run("copy_out", &sql);
        let result = run
            .in_span(self.conn.copy_out(&sql, self.ctx.timeout))
            .await;
        self.ctx
            .finish(&run, result, |_| None, &|_| Vec::new())
            .map(RowStream::new)
    }

    /// Binary `COPY table TO STDOUT`, decoded into rows with the table's column types: the
    /// reverse of [`copy_records_to_table`](DbConnection::copy_records_to_table). Empty
    /// `columns` means every column.
    pub async fn copy_out_rows(
        &mut self,
        table: &str,
        columns: &[&str],
    ) -> Result<RowStream<'_, C::CopyRow>> {
        self.flush_pending().await?;
        let qualified = self.qualified_table(table)?;
        for c in columns {
            validate_identifier(c)?;
        }
        let description = format!(
            "COPY {qualified}{} TO STDOUT (FORMAT binary)",
            quoted_columns(columns)?
        );
        let run = self.run("copy_out_rows", &description);
        let result = run
            .in_span(
                self.conn
                    .copy_out_rows(&qualified, columns, self.ctx.timeout),
            )
            .await;
        self.ctx
            .finish(&run, result, |_| None, &|_| Vec::new())
            .map(RowStream::new)
    }

    /// Sends a notification (`SELECT pg_notify(channel, payload)`). Inside a transaction it is
    /// delivered when the transaction commits.
    pub async fn notify(&mut self, channel: &str, payload: &str) -> Result<()> {
        self.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
            .await
            .map(drop)
    }
}

/// ` (a, b)` for `columns`, each quoted; empty for no columns.
fn quoted_columns(columns: &[&str]) -> Result<String> {
    if columns.is_empty() {
        return Ok(String::new());
    }
    let quoted = columns
        .iter()
        .map(|c| quote_identifier(c))
        .collect::<Result<Vec<_>>>()?;
    Ok(format!(" ({})", quoted.join(", ")))
}

impl<P: Pool> Database<P> {
    /// Runs a query on a connection checked out for the stream and streams its rows (see
    /// [`DbConnection::fetch_stream`]). The stream holds the connection until it is dropped;
    /// dropped midway, the pool cancels the rest of the statement before reusing it.
    pub async fn fetch_stream<Q: AsQuery + ?Sized>(
        &self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> Result<OwnedRowStream<P::Connection, RowOf<P::Connection>>> {
        let mut conn = self.acquire().await?;
        let inner = conn.fetch_stream(sql, params).await?.into_inner();
        Ok(OwnedRowStream::new(inner, conn))
    }

    /// `COPY ... TO STDOUT` on a connection checked out for the stream (see
    /// [`DbConnection::copy_out`]).
    pub async fn copy_out(
        &self,
        source: CopySource<'_>,
        format: CopyFormat,
    ) -> Result<OwnedRowStream<P::Connection, Bytes>> {
        let mut conn = self.acquire().await?;
        let inner = conn.copy_out(source, format).await?.into_inner();
        Ok(OwnedRowStream::new(inner, conn))
    }

    /// Binary COPY OUT decoded into rows, on a connection checked out for the stream (see
    /// [`DbConnection::copy_out_rows`]).
    pub async fn copy_out_rows(
        &self,
        table: &str,
        columns: &[&str],
    ) -> Result<OwnedRowStream<P::Connection, <P::Connection as Connection>::CopyRow>> {
        let mut conn = self.acquire().await?;
        let inner = conn.copy_out_rows(table, columns).await?.into_inner();
        Ok(OwnedRowStream::new(inner, conn))
    }

    /// Listens on `channels` on a dedicated connection (not one of the pool's): a stream of
    /// [`ListenEvent`]s that reconnects (with the config's retry schedule) and listens again
    /// after the connection is lost, reporting the gap as [`ListenEvent::Reconnected`].
    /// Dropping the stream closes the connection.
    pub async fn listen(&self, channels: &[&str]) -> Result<BoxStream<ListenEvent>> {
        let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
        <P::Connection as Connection>::listen(&self.ctx.shared.config, &channels).await
    }

    /// Sends a notification on `channel` (`pg_notify`), from a pooled connection.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        self.acquire().await?.notify(channel, payload).await
    }
}
