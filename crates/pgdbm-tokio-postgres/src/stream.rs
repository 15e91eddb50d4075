//! Row streams (`query_stream`): tokio-postgres's `RowStream` behind pgdbm's in-flight mark.
//!
//! The statement is prepared (through the statement cache) and bound with `query_raw`; its
//! rows are read from the socket only as the consumer polls the stream (tokio-postgres hands
//! each response over a channel of one message, so an unpolled stream stops the connection
//! task reading). The connection is marked in flight from before the request until the stream
//! reports its end or an error; a stream dropped midway leaves the mark, and the connection's
//! `ready_for` (before its next request) or the pool's release path settles it with a
//! confirmed cancel, exactly as for a dropped query future.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::Stream;
use pgdbm_core::{BoxStream, Param, Result};

use crate::connection::{PgConnection, Stmt};
use crate::deadline::deadline_of;
use crate::errors::query_error;
use crate::row::PgRow;

/// A driver stream that clears the connection's in-flight mark when it ends (or fails), and
/// turns driver errors into pgdbm errors naming the statement.
pub(crate) struct InFlight<S> {
    inner: S,
    in_flight: Arc<AtomicBool>,
    sql: Arc<str>,
    done: bool,
}

impl<S> InFlight<S> {
    /// Wraps `inner`; the connection's mark (`in_flight`) is set again for the stream's life.
    pub(crate) fn new(inner: S, in_flight: Arc<AtomicBool>, sql: &str) -> Self {
        in_flight.store(true, Ordering::Release);
        InFlight {
            inner,
            in_flight,
            sql: Arc::from(sql),
            done: false,
        }
    }
}

impl<S, T> Stream for InFlight<S>
where
    S: Stream<Item = std::result::Result<T, tokio_postgres::Error>> + Unpin,
{
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            // tokio-postgres reports "closed" when an ended stream is polled again.
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(item))) => Poll::Ready(Some(Ok(item))),
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                self.in_flight.store(false, Ordering::Release);
                Poll::Ready(Some(Err(query_error(e, &self.sql, 0))))
            }
            Poll::Ready(None) => {
                self.done = true;
                self.in_flight.store(false, Ordering::Release);
                Poll::Ready(None)
            }
        }
    }
}

impl PgConnection {
    /// [`pgdbm_core::Connection::query_stream`]: prepares `sql` (cached), binds it and returns
    /// its rows as a stream marked in flight until it ends.
    pub(crate) async fn run_query_stream(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        timeout: Option<Duration>,
    ) -> Result<BoxStream<PgRow>> {
        self.ready_for(sql).await?;
        let deadline = deadline_of(timeout);
        let stmt = self
            .statement(sql, params.len(), deadline, timeout, false)
            .await?;
        let client = self.client();
        let start = async {
            match &stmt {
                Stmt::Typed(d) => {
                    client
                        .query_typed_raw(sql, crate::connection::typed(params, &d.params))
                        .await
                }
                Stmt::Prepared(s) => client.query_raw(s, params.iter().copied()).await,
                // `statement` with `allow_unnamed` false never answers Unnamed.
                Stmt::Unnamed => client.query_raw(sql, params.iter().copied()).await,
            }
        };
        let outcome = self.bounded(deadline, start).await;
        self.query_count += 1;
        self.last_used = Instant::now();
        let rows = self
            .settle(outcome, sql, params.len(), timeout)
            .map_err(|e| self.show_params(e, params))?;
        let stream = InFlight::new(Box::pin(rows), self.in_flight_flag(), sql);
        Ok(Box::pin(futures_util::StreamExt::map(stream, |r| {
            r.map(PgRow::new)
        })))
    }
}
