//! [`Transaction`](crate::Transaction) and [`Savepoint`](crate::Savepoint).

use super::connection::{DbConnection, Pending};

use std::fmt;
use std::ops::{Deref, DerefMut};

use crate::error::QueryErrorKind;
use crate::{Connection, Error, Result};

/// The error of a failed `BEGIN`. A connection failure there happened before any statement of
/// the transaction ran, so the query error is marked [`nothing_ran`](QueryError::nothing_ran)
/// (retrying the transaction cannot do anything twice).
pub(super) fn begin_error(mut e: Error) -> Error {
    if let Error::Query(q) = &mut e {
        if q.kind == QueryErrorKind::Connection {
            q.nothing_ran = true;
        }
    }
    Error::Transaction {
        message: "could not start a transaction".to_string(),
        source: Some(Box::new(e)),
    }
}

/// The error of a failed `COMMIT`. When the server refused it, the transaction was rolled back
/// ([`Error::Transaction`]). When no answer came ([`QueryErrorKind::CommitOutcomeUnknown`],
/// the connection failed or timed out), the transaction may have committed: that error is
/// returned as it is, so callers can tell the two apart.
pub(super) fn commit_error(e: Error) -> Error {
    if let Error::Query(q) = &e {
        if q.kind == QueryErrorKind::CommitOutcomeUnknown {
            return e;
        }
    }
    Error::Transaction {
        message: "commit failed; the transaction was rolled back".to_string(),
        source: Some(Box::new(e)),
    }
}

/// A transaction on its own connection (Python: `async with db.transaction() as conn`).
///
/// Dereferences to [`DbConnection`](crate::DbConnection), so all query methods render templates as usual. Call
/// [`commit`](Transaction::commit); dropping it without commit rolls it back: the connection goes
/// back to the pool inside the transaction and the pool's release path rolls it back at once
/// (its locks go with it), before anyone else can get it.
pub struct Transaction<C: Connection> {
    pub(super) conn: DbConnection<C>,
}

impl<C: Connection> fmt::Debug for Transaction<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("conn", &self.conn)
            .finish()
    }
}

impl<C: Connection> Deref for Transaction<C> {
    type Target = DbConnection<C>;
    fn deref(&self) -> &DbConnection<C> {
        &self.conn
    }
}

impl<C: Connection> DerefMut for Transaction<C> {
    fn deref_mut(&mut self) -> &mut DbConnection<C> {
        &mut self.conn
    }
}

impl<C: Connection> Transaction<C> {
    /// Commits. A failure is an [`Error::Transaction`] with the server's error as source; the
    /// transaction is then rolled back.
    pub async fn commit(self) -> Result<()> {
        self.commit_into_connection().await.map(drop)
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<()> {
        let mut conn = self.conn;
        conn.pending.clear();
        conn.conn.rollback().await.map_err(|e| Error::Transaction {
            message: "rollback failed".to_string(),
            source: Some(Box::new(e)),
        })
    }

    /// Commits and gives back the connection, to keep using it outside the transaction.
    pub async fn commit_into_connection(self) -> Result<DbConnection<C>> {
        let mut conn = self.conn;
        conn.flush_pending().await?;
        conn.conn.commit().await.map_err(commit_error)?;
        Ok(conn)
    }
}

/// A nested transaction (`SAVEPOINT`), or a transaction on an acquired connection
/// ([`DbConnection::savepoint`](crate::DbConnection::savepoint)). Dereferences to [`DbConnection`](crate::DbConnection).
///
/// Dropping it without [`commit`](Savepoint::commit) rolls it back before the next statement on
/// the connection.
pub struct Savepoint<'c, C: Connection> {
    pub(super) conn: &'c mut DbConnection<C>,
    /// `None` when this savepoint is the outermost transaction of an acquired connection.
    pub(super) name: Option<String>,
    pub(super) finished: bool,
}

impl<C: Connection> fmt::Debug for Savepoint<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Savepoint")
            .field("name", &self.name)
            .field("finished", &self.finished)
            .finish()
    }
}

impl<C: Connection> Deref for Savepoint<'_, C> {
    type Target = DbConnection<C>;
    fn deref(&self) -> &DbConnection<C> {
        self.conn
    }
}

impl<C: Connection> DerefMut for Savepoint<'_, C> {
    fn deref_mut(&mut self) -> &mut DbConnection<C> {
        self.conn
    }
}

impl<C: Connection> Savepoint<'_, C> {
    /// Keeps the savepoint's work (`RELEASE SAVEPOINT`, or `COMMIT` when it is the outermost
    /// transaction).
    pub async fn commit(self) -> Result<()> {
        self.finish(true).await
    }

    /// Undoes the savepoint's work (`ROLLBACK TO SAVEPOINT`, or `ROLLBACK` when it is the
    /// outermost transaction).
    pub async fn rollback(self) -> Result<()> {
        self.finish(false).await
    }

    async fn finish(mut self, commit: bool) -> Result<()> {
        self.finished = true;
        self.conn.depth = self.conn.depth.saturating_sub(1);
        self.conn.flush_pending().await?;
        let timeout = self.conn.ctx.timeout;
        let conn = &mut self.conn.conn;
        let result = match (&self.name, commit) {
            (Some(name), true) => {
                conn.batch_execute(&format!("RELEASE SAVEPOINT {name}"), timeout)
                    .await
            }
            (Some(name), false) => {
                conn.batch_execute(
                    &format!("ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"),
                    timeout,
                )
                .await
            }
            (None, true) => return conn.commit().await.map_err(commit_error),
            (None, false) => conn.rollback().await,
        };
        result.map_err(|e| Error::Transaction {
            message: format!(
                "could not {} the savepoint",
                if commit { "commit" } else { "roll back" }
            ),
            source: Some(Box::new(e)),
        })
    }
}

impl<C: Connection> Drop for Savepoint<'_, C> {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.depth = self.conn.depth.saturating_sub(1);
            self.conn.pending.push(match self.name.take() {
                Some(name) => Pending::RollbackTo(name),
                None => Pending::Rollback,
            });
        }
    }
}
