//! [`Pooled`]: a checked-out connection of any pool, as a [`pgdbm_core::Connection`], and the
//! release path both pool backends share.
//!
//! When a borrower drops its connection, [`Pooled`] looks at what the server reported
//! ([`PgConnection::release_action`]) and acts at once, never leaving it to the next checkout:
//! a clean connection goes back as it is; one inside a transaction, with a request in flight or
//! due a full reset is cleaned in a spawned task (bounded by `reset_timeout`) and only then
//! returned; a broken one, or one whose cleanup fails, is taken out of its pool and its socket
//! closed, so the server ends the session (and its locks) immediately.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use async_trait::async_trait;
use pgdbm_core::{Config, Connection, Param, Result};

use crate::connection::{PgConnection, ReleaseAction};
use crate::row::PgRow;

/// The boxed future async-trait methods return.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A pool's checkout guard for a [`PgConnection`] (deadpool's `Object`, bb8's
/// `PooledConnection`...): dropping it returns the connection, [`detach`](Self::detach) takes
/// it out of the pool for good.
pub trait PoolGuard: DerefMut<Target = PgConnection> + Send + 'static {
    /// Removes the connection from its pool and closes it (the pool opens a new one when it
    /// needs one). The connection is already marked broken when this is called.
    fn detach(self);
}

/// A connection checked out of a pool. It implements [`pgdbm_core::Connection`] by delegating;
/// dropping it runs the release path: a clean connection is reused, a dirty one is cleaned in a
/// spawned task before reuse, a broken one is closed at once.
pub struct Pooled<G: PoolGuard> {
    /// `Some` from [`new`](Self::new) until the release path takes it in `drop` or
    /// [`into_inner`](Self::into_inner).
    guard: Option<G>,
}

impl<G: PoolGuard> Pooled<G> {
    /// Wraps a pool guard.
    pub fn new(guard: G) -> Self {
        Pooled { guard: Some(guard) }
    }

    /// The pool guard inside, without the release path (dropping the guard returns the
    /// connection to its pool as it is).
    pub fn into_inner(mut self) -> G {
        match self.guard.take() {
            Some(g) => g,
            // The guard is `Some` until drop or into_inner, which both consume `self`.
            None => unreachable_guard(),
        }
    }

    fn conn(&self) -> &PgConnection {
        match &self.guard {
            Some(g) => g,
            None => unreachable_guard(),
        }
    }

    fn conn_mut(&mut self) -> &mut PgConnection {
        match &mut self.guard {
            Some(g) => g,
            None => unreachable_guard(),
        }
    }
}

/// The guard of a [`Pooled`] is present for its whole life (proven invariant: only `drop` and
/// `into_inner` take it, and both consume the value).
#[cold]
#[allow(clippy::panic)]
fn unreachable_guard() -> ! {
    panic!("pgdbm bug: a Pooled connection was used after its guard was taken")
}

/// Closes `guard`'s connection now and takes it out of its pool.
fn close<G: PoolGuard>(guard: G) {
    guard.mark_broken();
    guard.detach();
}

/// The release path: what happens to a connection its borrower gave back.
pub(crate) fn release<G: PoolGuard>(mut guard: G) {
    match guard.release_action() {
        ReleaseAction::Reuse => drop(guard),
        ReleaseAction::Close => {
            crate::metrics::connection_closed("broken");
            close(guard)
        }
        ReleaseAction::Reset => match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let limit = guard.reset_timeout();
                    match guard.reset(limit).await {
                        Ok(()) => drop(guard),
                        Err(e) => {
                            tracing::debug!(target: "pgdbm", error = %e, "released connection could not be reset; closed");
                            crate::metrics::connection_closed("reset_failed");
                            close(guard);
                        }
                    }
                });
            }
            // No runtime to clean it on (dropped after the runtime shut down): close it.
            Err(_) => {
                guard.deref_mut().discard();
                crate::metrics::connection_closed("no_runtime");
                close(guard)
            }
        },
    }
}

impl<G: PoolGuard> Drop for Pooled<G> {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            release(guard);
        }
    }
}

impl<G: PoolGuard> Deref for Pooled<G> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn()
    }
}

impl<G: PoolGuard> DerefMut for Pooled<G> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn_mut()
    }
}

impl<G: PoolGuard> std::fmt::Debug for Pooled<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pooled").field(self.conn()).finish()
    }
}

#[async_trait]
impl<G: PoolGuard> Connection for Pooled<G> {
    type Row = PgRow;

    // The hot query methods hand back the connection's own boxed future instead of boxing
    // it a second time (async-trait leaves a plain `fn` with its signature alone).
    fn execute<'life0, 'life1, 'life2, 'life3, 'async_trait>(
        &'life0 mut self,
        sql: &'life1 str,
        params: &'life2 [Param<'life3>],
        timeout: Option<Duration>,
    ) -> BoxFuture<'async_trait, Result<u64>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        'life3: 'async_trait,
        Self: 'async_trait,
    {
        self.conn_mut().execute(sql, params, timeout)
    }

    fn query<'life0, 'life1, 'life2, 'life3, 'async_trait>(
        &'life0 mut self,
        sql: &'life1 str,
        params: &'life2 [Param<'life3>],
        timeout: Option<Duration>,
    ) -> BoxFuture<'async_trait, Result<Vec<PgRow>>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        'life3: 'async_trait,
        Self: 'async_trait,
    {
        self.conn_mut().query(sql, params, timeout)
    }

    fn query_opt<'life0, 'life1, 'life2, 'life3, 'async_trait>(
        &'life0 mut self,
        sql: &'life1 str,
        params: &'life2 [Param<'life3>],
        timeout: Option<Duration>,
    ) -> BoxFuture<'async_trait, Result<Option<PgRow>>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        'life3: 'async_trait,
        Self: 'async_trait,
    {
        self.conn_mut().query_opt(sql, params, timeout)
    }

    async fn batch_execute(&mut self, sql: &str, timeout: Option<Duration>) -> Result<()> {
        self.conn_mut().batch_execute(sql, timeout).await
    }

    async fn execute_many(
        &mut self,
        sql: &str,
        rows: &[&[Param<'_>]],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.conn_mut().execute_many(sql, rows, timeout).await
    }

    async fn copy_in(
        &mut self,
        table: &pgdbm_core::TableName,
        columns: &[&str],
        rows: &[&[Param<'_>]],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.conn_mut().copy_in(table, columns, rows, timeout).await
    }

    async fn prepare(&mut self, sql: &str) -> Result<()> {
        self.conn_mut().prepare(sql).await
    }

    async fn begin(&mut self) -> Result<()> {
        self.conn_mut().begin().await
    }

    async fn commit(&mut self) -> Result<()> {
        self.conn_mut().commit().await
    }

    async fn rollback(&mut self) -> Result<()> {
        self.conn_mut().rollback().await
    }

    fn in_transaction(&self) -> bool {
        self.conn().in_transaction()
    }

    fn is_closed(&self) -> bool {
        self.conn().is_closed()
    }

    fn discard(&mut self) {
        self.conn_mut().discard()
    }

    fn clear_statement_cache(&mut self) {
        self.conn_mut().clear_statement_cache()
    }

    fn announced_backend_pid(&self) -> Option<i32> {
        self.conn().announced_backend_pid()
    }

    type CopyRow = crate::PgCopyRow;

    async fn query_stream(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        timeout: Option<Duration>,
    ) -> Result<pgdbm_core::BoxStream<PgRow>> {
        self.conn_mut().query_stream(sql, params, timeout).await
    }

    async fn copy_out(
        &mut self,
        sql: &str,
        timeout: Option<Duration>,
    ) -> Result<pgdbm_core::BoxStream<bytes::Bytes>> {
        self.conn_mut().copy_out(sql, timeout).await
    }

    async fn copy_out_rows(
        &mut self,
        table: &str,
        columns: &[&str],
        timeout: Option<Duration>,
    ) -> Result<pgdbm_core::BoxStream<crate::PgCopyRow>> {
        self.conn_mut().copy_out_rows(table, columns, timeout).await
    }

    async fn listen(
        config: &Config,
        channels: &[String],
    ) -> Result<pgdbm_core::BoxStream<pgdbm_core::ListenEvent>> {
        PgConnection::listen(config, channels).await
    }
}
