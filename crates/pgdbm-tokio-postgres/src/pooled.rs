//! [`Pooled`]: a checked-out connection of any pool, as a [`pgdbm_core::Connection`].

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use async_trait::async_trait;
use pgdbm_core::{Connection, Param, Result};

use crate::connection::PgConnection;
use crate::row::PgRow;

/// A connection checked out of a pool whose guard dereferences to a [`PgConnection`]
/// (deadpool's `Object`, bb8's `PooledConnection`...). It implements
/// [`pgdbm_core::Connection`] by delegating, and dropping it drops the guard, which returns the
/// connection to its pool.
pub struct Pooled<G> {
    guard: G,
}

impl<G: DerefMut<Target = PgConnection> + Send> Pooled<G> {
    /// Wraps a pool guard.
    pub fn new(guard: G) -> Self {
        Pooled { guard }
    }

    /// The pool guard inside.
    pub fn into_inner(self) -> G {
        self.guard
    }
}

impl<G: DerefMut<Target = PgConnection>> Deref for Pooled<G> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.guard
    }
}

impl<G: DerefMut<Target = PgConnection>> DerefMut for Pooled<G> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.guard
    }
}

impl<G: DerefMut<Target = PgConnection>> std::fmt::Debug for Pooled<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pooled").field(&*self.guard).finish()
    }
}

#[async_trait]
impl<G: DerefMut<Target = PgConnection> + Send> Connection for Pooled<G> {
    type Row = PgRow;

    async fn execute(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.guard.execute(sql, params, timeout).await
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        timeout: Option<Duration>,
    ) -> Result<Vec<PgRow>> {
        self.guard.query(sql, params, timeout).await
    }

    async fn query_opt(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        timeout: Option<Duration>,
    ) -> Result<Option<PgRow>> {
        self.guard.query_opt(sql, params, timeout).await
    }

    async fn batch_execute(&mut self, sql: &str, timeout: Option<Duration>) -> Result<()> {
        self.guard.batch_execute(sql, timeout).await
    }

    async fn execute_many(
        &mut self,
        sql: &str,
        rows: &[&[Param<'_>]],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.guard.execute_many(sql, rows, timeout).await
    }

    async fn copy_in(
        &mut self,
        table: &str,
        columns: &[&str],
        rows: &[&[Param<'_>]],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.guard.copy_in(table, columns, rows, timeout).await
    }

    async fn prepare(&mut self, sql: &str) -> Result<()> {
        self.guard.prepare(sql).await
    }

    async fn begin(&mut self) -> Result<()> {
        self.guard.begin().await
    }

    async fn commit(&mut self) -> Result<()> {
        self.guard.commit().await
    }

    async fn rollback(&mut self) -> Result<()> {
        self.guard.rollback().await
    }

    fn in_transaction(&self) -> bool {
        self.guard.in_transaction()
    }

    fn is_closed(&self) -> bool {
        self.guard.is_closed()
    }

    fn discard(&mut self) {
        self.guard.discard()
    }

    fn clear_statement_cache(&mut self) {
        self.guard.clear_statement_cache()
    }
}
