//! pgdbm's [deadpool](https://docs.rs/deadpool) backend: [`DeadpoolPool`], a thin
//! [`pgdbm_core::Pool`] over [`PgConnection`]s from `pgdbm-tokio-postgres`.
//!
//! # Why the generic `deadpool::managed` pool and not `deadpool-postgres`
//!
//! `deadpool-postgres` opens connections with `tokio_postgres::Config::connect` and recycles
//! them with its own checks. pgdbm needs its own connect path (one timeout over TCP + TLS +
//! authentication, server settings, init commands, retries with core's backoff schedule) and its
//! own recycle policy (`max_queries`, a maximum lifetime, idle reaping, a reset of connections
//! returned inside a transaction or after a cancelled query, a liveness check after a second
//! idle). Both live in `pgdbm-tokio-postgres` ([`PgConnection::connect`] and
//! [`pgdbm_tokio_postgres::recycle`]); this crate only plugs them into a
//! [`deadpool::managed::Manager`], so both backends behave the same.
//!
//! # Behaviour
//!
//! - [`Pool::connect`] validates the config, opens the first connection with retries (an
//!   [`Error::Connection`] when the server cannot be reached), then opens up to
//!   `min_connections` eagerly (best effort: later failures are logged, not fatal).
//! - [`Pool::acquire`] waits at most `acquire_timeout` (the whole checkout: waiting, recycling
//!   and, when the pool is not full, opening a connection). deadpool hands connections to
//!   waiters first come, first served (its semaphore is fair). A connection that cannot be
//!   opened fails the checkout at once with the connection error.
//! - Every reuse runs [`pgdbm_tokio_postgres::recycle`]; a connection it rejects is closed and
//!   the checkout goes on with another one.
//! - deadpool has no idle reaper: a background task (stopped by [`Pool::close`] or when the
//!   pool is dropped) closes idle connections idle longer than
//!   `max_inactive_connection_lifetime`, older than `max_lifetime` or broken, then tops the pool
//!   back up to `min_connections`.
//!
//! # Example
//!
//! ```no_run
//! use pgdbm_core::{Config, Connection, Pool};
//! use pgdbm_deadpool::DeadpoolPool;
//!
//! # async fn demo() -> pgdbm_core::Result<()> {
//! let pool = DeadpoolPool::connect(&Config::default()).await?;
//! let mut conn = pool.acquire().await?;
//! conn.execute("SELECT 1", &[], None).await?;
//! drop(conn); // back to the pool
//! println!("{:?}", pool.stats());
//! pool.close().await;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult, Timeouts};
use pgdbm_core::pool::conventions::{
    acquire_timeout_error, idle_limit, pool_closed_error, reap_interval, WaitingGuard,
};
use pgdbm_core::{Config, Error, Pool, PoolStats, Result};
use pgdbm_tokio_postgres::{Connector, PgConnection, PoolGuard, Pooled};
use tokio::task::JoinSet;

/// The connection type handed out by [`DeadpoolPool::acquire`](Pool::acquire).
pub type DeadpoolConnection = Pooled<DeadpoolGuard>;

/// A connection checked out of a [`DeadpoolPool`]; dropping it returns the connection to the
/// pool. It is wrapped in [`Pooled`], which implements [`pgdbm_core::Connection`].
pub struct DeadpoolGuard(Object<Manager>);

impl fmt::Debug for DeadpoolGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadpoolGuard").finish_non_exhaustive()
    }
}

impl std::ops::Deref for DeadpoolGuard {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.0
    }
}

impl std::ops::DerefMut for DeadpoolGuard {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.0
    }
}

impl PoolGuard for DeadpoolGuard {
    fn detach(self) {
        // Out of the pool at once (deadpool would otherwise keep the object, socket and server
        // session until its next checkout or the reaper); dropping it closes the socket.
        drop(Object::take(self.0));
    }
}

/// Opens and recycles [`PgConnection`]s for deadpool, through the shared [`Connector`].
struct Manager(Arc<Connector>);

impl managed::Manager for Manager {
    // Boxed: deadpool moves its objects several times per checkout and return, and a
    // `PgConnection` is some 600 bytes; a box is one pointer.
    type Type = Box<PgConnection>;
    type Error = Error;

    async fn create(&self) -> Result<Box<PgConnection>> {
        self.0.open().await.map(Box::new)
    }

    async fn recycle(
        &self,
        conn: &mut Box<PgConnection>,
        _metrics: &Metrics,
    ) -> RecycleResult<Error> {
        self.0.vet(conn).await.map_err(RecycleError::Backend)
    }
}

struct Inner {
    pool: managed::Pool<Manager>,
    connector: Arc<Connector>,
    /// Tasks inside `acquire` that have no connection yet.
    waiting: AtomicUsize,
    min_size: usize,
    max_size: usize,
    acquire_timeout: Duration,
    reaper: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The reaper holds only a weak reference and would stop at its next tick anyway.
        let reaper = self
            .reaper
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(reaper) = reaper {
            reaper.abort();
        }
    }
}

/// A pgdbm [`Pool`] on deadpool's generic managed pool. Cloning shares the pool.
///
/// See the [crate documentation](crate) for its behaviour.
#[derive(Clone)]
pub struct DeadpoolPool {
    inner: Arc<Inner>,
}

impl fmt::Debug for DeadpoolPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadpoolPool")
            .field("stats", &self.stats())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl DeadpoolPool {
    fn timeout_error(&self) -> Error {
        acquire_timeout_error(self.inner.acquire_timeout, self.stats(), None)
    }

    fn map_error(&self, e: PoolError<Error>) -> Error {
        match e {
            PoolError::Backend(e) => e,
            PoolError::Closed => pool_closed_error(),
            PoolError::Timeout(_) => self.timeout_error(),
            PoolError::NoRuntimeSpecified => {
                Error::pool("deadpool was built without a runtime (pgdbm bug: please report)")
            }
            PoolError::PostCreateHook(e) => Error::pool(format!("post-create hook failed: {e}")),
        }
    }

    /// The current cache epoch: bumped by [`Pool::clear_statement_caches`].
    pub fn cache_epoch(&self) -> u64 {
        self.inner.connector.cache_epoch()
    }
}

/// Checks out connections without waiting until the pool holds `min` connections (or no more
/// can be opened), then returns them all. Holding them is what makes deadpool open new ones
/// instead of handing out the same idle connection again.
async fn top_up(pool: &managed::Pool<Manager>, min: usize) {
    let no_wait = Timeouts {
        wait: Some(Duration::ZERO),
        create: None,
        recycle: None,
    };
    let mut held = Vec::new();
    while pool.status().size < min && !pool.is_closed() {
        match pool.timeout_get(&no_wait).await {
            Ok(obj) => held.push(obj),
            Err(PoolError::Backend(e)) => {
                tracing::warn!(target: "pgdbm", error = %e, "could not open a pooled connection to keep min_connections");
                break;
            }
            Err(_) => break,
        }
    }
}

/// Background task: drops idle connections that are idle too long, too old or broken, then tops
/// the pool up to `min`. Holds only a weak reference, so it ends when the pool is dropped.
async fn reaper(weak: managed::WeakPool<Manager>, config: Config) {
    let period = reap_interval(&config);
    let max_idle = idle_limit(&config);
    let max_lifetime = config.max_lifetime;
    let min = config.min_connections;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate
    loop {
        ticker.tick().await;
        let Some(pool) = weak.upgrade() else { break };
        if pool.is_closed() {
            break;
        }
        let removed = pool.retain(|conn, _metrics| {
            !conn.is_broken()
                && max_idle.is_none_or(|i| conn.last_used().elapsed() < i)
                && max_lifetime.is_none_or(|l| conn.created_at().elapsed() < l)
        });
        if !removed.removed.is_empty() {
            tracing::debug!(target: "pgdbm", closed = removed.removed.len(), "closed idle, expired or broken pooled connections");
        }
        drop(removed);
        top_up(&pool, min).await;
    }
}

#[async_trait]
impl Pool for DeadpoolPool {
    type Connection = DeadpoolConnection;

    async fn connect(config: &Config) -> Result<Self> {
        let connector = Connector::start(config).await?;
        let pool = managed::Pool::builder(Manager(connector.clone()))
            .max_size(config.max_connections)
            // Most recently used idle connection first (see pgdbm-bb8): waiters are still
            // served in order by deadpool's fair semaphore.
            .queue_mode(managed::QueueMode::Lifo)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::pool(format!("could not build the deadpool pool: {e}")))?;

        // Open min_connections eagerly (the first one is the seed): check them all out at once
        // so each checkout opens a new connection, then return them.
        let eager = config.min_connections.max(1);
        let mut tasks = JoinSet::new();
        for _ in 0..eager {
            let pool = pool.clone();
            tasks.spawn(async move { pool.get().await });
        }
        let mut held = Vec::with_capacity(eager);
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(obj)) => held.push(obj),
                Ok(Err(e)) => {
                    tracing::warn!(target: "pgdbm", error = %e, "could not open one of min_connections; the pool opens it later")
                }
                Err(e) => {
                    tracing::warn!(target: "pgdbm", error = %e, "task opening a pooled connection failed")
                }
            }
        }
        drop(held);

        let reaper = tokio::spawn(reaper(pool.weak(), config.clone())).abort_handle();
        Ok(DeadpoolPool {
            inner: Arc::new(Inner {
                pool,
                connector,
                waiting: AtomicUsize::new(0),
                min_size: config.min_connections,
                max_size: config.max_connections,
                acquire_timeout: config.acquire_timeout,
                reaper: Mutex::new(Some(reaper)),
            }),
        })
    }

    async fn acquire(&self) -> Result<Self::Connection> {
        if self.inner.pool.is_closed() {
            return Err(pool_closed_error());
        }
        let waiting = WaitingGuard::new(&self.inner.waiting);
        let got = tokio::time::timeout(self.inner.acquire_timeout, self.inner.pool.get()).await;
        drop(waiting);
        match got {
            Ok(Ok(obj)) => Ok(Pooled::new(DeadpoolGuard(obj))),
            Ok(Err(e)) => Err(self.map_error(e)),
            Err(_elapsed) => Err(self.timeout_error()),
        }
    }

    fn stats(&self) -> PoolStats {
        let status = self.inner.pool.status();
        PoolStats::new(
            status.size,
            status.available,
            self.inner.min_size,
            self.inner.max_size,
            self.inner.waiting.load(Ordering::SeqCst),
        )
    }

    async fn close(&self) {
        self.inner.pool.close();
        let reaper = self
            .inner
            .reaper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(reaper) = reaper {
            reaper.abort();
        }
    }

    fn is_closed(&self) -> bool {
        self.inner.pool.is_closed()
    }

    fn clear_statement_caches(&self) {
        self.inner.connector.clear_statement_caches();
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}
