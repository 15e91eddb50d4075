//! Driver-free types of pgdbm's streaming surface: row streams, `COPY ... TO STDOUT` and
//! LISTEN/NOTIFY.
//!
//! A [`Connection`] returns a [`BoxStream`]; the manager wraps it in a
//! [`RowStream`] (borrowing its [`DbConnection`]) or an [`OwnedRowStream`]
//! (holding the pooled connection it checked out). Items are fetched from the server as they
//! are consumed: a consumer that stops polling stops the socket being read, so client memory
//! stays bounded whatever the size of the result.

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub use bytes::Bytes;
pub use futures_core::Stream;

use crate::{Connection, DbConnection, Result};

/// A boxed, sendable stream of results: what a [`Connection`] returns for row streams, COPY OUT
/// and notifications. It does not borrow the connection.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T>> + Send + 'static>>;

/// Rows of one statement, streamed from a [`DbConnection`] it borrows
/// ([`DbConnection::fetch_stream`]).
///
/// Dropping it before the end leaves the statement running on the server; the connection
/// cancels and settles it before its next statement (or before the pool hands it to anyone
/// else), so no row or error of it can reach a later statement.
pub struct RowStream<'c, T> {
    inner: BoxStream<T>,
    _conn: PhantomData<&'c mut ()>,
}

impl<T> RowStream<'_, T> {
    pub(crate) fn new(inner: BoxStream<T>) -> Self {
        RowStream {
            inner,
            _conn: PhantomData,
        }
    }

    pub(crate) fn into_inner(self) -> BoxStream<T> {
        self.inner
    }
}

impl<T> Stream for RowStream<'_, T> {
    type Item = Result<T>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl<T> fmt::Debug for RowStream<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowStream").finish_non_exhaustive()
    }
}

/// Rows of one statement run by a [`Database`](crate::Database) (its
/// [`fetch_stream`](crate::Database::fetch_stream)): the stream holds the pooled connection it
/// checked out until it is dropped. Dropped midway, the connection goes back to the pool with
/// its statement in flight, and the pool's release path cancels and settles it before anyone
/// else gets the connection.
pub struct OwnedRowStream<C: Connection, T> {
    // Field order matters: the stream is dropped before the connection goes back to the pool.
    inner: BoxStream<T>,
    conn: DbConnection<C>,
}

impl<C: Connection, T> OwnedRowStream<C, T> {
    pub(crate) fn new(inner: BoxStream<T>, conn: DbConnection<C>) -> Self {
        OwnedRowStream { inner, conn }
    }

    /// The connection the rows come from (for reading its state; running a statement on it
    /// before the stream ends settles the stream's statement first, cancelling it).
    pub fn connection(&self) -> &DbConnection<C> {
        &self.conn
    }
}

impl<C: Connection, T> Stream for OwnedRowStream<C, T> {
    type Item = Result<T>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

// `DbConnection` holds no self-references and the boxed stream is `Unpin`.
impl<C: Connection, T> Unpin for OwnedRowStream<C, T> {}

impl<C: Connection, T> fmt::Debug for OwnedRowStream<C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedRowStream")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

/// The format of a `COPY ... TO STDOUT` ([`DbConnection::copy_out`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CopyFormat {
    /// PostgreSQL's text format (tab-separated, `\N` for NULL).
    #[default]
    Text,
    /// CSV with a header line.
    CsvWithHeader,
    /// CSV without a header.
    Csv,
    /// PostgreSQL's binary COPY format.
    Binary,
}

impl CopyFormat {
    /// The `WITH (...)` options of this format.
    pub fn options(self) -> &'static str {
        match self {
            CopyFormat::Text => "(FORMAT text)",
            CopyFormat::CsvWithHeader => "(FORMAT csv, HEADER true)",
            CopyFormat::Csv => "(FORMAT csv)",
            CopyFormat::Binary => "(FORMAT binary)",
        }
    }
}

/// What a COPY OUT reads ([`DbConnection::copy_out`]).
#[derive(Debug, Clone, Copy)]
pub enum CopySource<'a> {
    /// A table (`"t"` in the handle's schema, or `"schema.t"`) and its columns (empty: all).
    Table {
        /// The table.
        table: &'a str,
        /// The columns; empty means all, in table order.
        columns: &'a [&'a str],
    },
    /// A query (templates are rendered); it must not end with `;` and takes no parameters.
    Query(&'a str),
}

/// One notification received by a [`listen`](crate::Database::listen) stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The channel it was sent on.
    pub channel: String,
    /// Its payload (empty when none was given).
    pub payload: String,
    /// The server process id of the sending session.
    pub process_id: i32,
}

/// An item of a [`listen`](crate::Database::listen) stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenEvent {
    /// A notification, in the order the server delivered them.
    Notification(Notification),
    /// The listening connection was lost and a new one now listens on every channel again.
    /// Notifications sent between the loss and this event were not received: treat it as a
    /// gap (re-read whatever state the notifications describe).
    Reconnected {
        /// How long no connection was listening (from noticing the loss to LISTEN again).
        gap: Duration,
        /// Why the previous connection was lost.
        reason: String,
    },
}
