//! pgdbm's [bb8](https://docs.rs/bb8) backend: [`Bb8Pool`], a thin [`pgdbm_core::Pool`] over
//! [`PgConnection`]s from `pgdbm-tokio-postgres`.
//!
//! # Why bb8 with pgdbm's own manager and not `bb8-postgres`
//!
//! `bb8-postgres` opens connections with `tokio_postgres::Config::connect` and validates them
//! with a `SELECT 1` on every checkout. pgdbm needs its own connect path (one timeout over TCP +
//! TLS + authentication, server settings, init commands, retries with core's backoff schedule)
//! and its own recycle policy (`max_queries`, a maximum lifetime, idle reaping, a reset of
//! connections returned inside a transaction or after a cancelled query, a liveness check only
//! after a second idle). Both live in `pgdbm-tokio-postgres` ([`PgConnection::connect`] and
//! [`pgdbm_tokio_postgres::recycle`]); this crate plugs them into a [`bb8::ManageConnection`], so
//! both backends behave the same.
//!
//! # Fairness
//!
//! bb8 alone is not first come, first served: a task that returns a connection and asks again at
//! once usually gets it back ahead of tasks already waiting (measured on this project: with 64
//! tasks on 20 connections, some waited 1.4-8.3 s). [`Bb8Pool`] therefore puts a FIFO-fair
//! [`tokio::sync::Semaphore`] with `max_connections` permits in front of bb8: a task takes a permit
//! (in arrival order, within `acquire_timeout`) before asking bb8 for a connection, and keeps it
//! until the connection is back in bb8, so bb8 never sees more simultaneous askers than it has
//! connections and a returning task queues behind the waiting ones.
//!
//! # Behaviour
//!
//! - [`Pool::connect`] validates the config, opens the first connection with retries (an
//!   [`Error::Connection`] when the server cannot be reached), then opens up to
//!   `min_connections` (bb8's `min_idle`) and waits for them, bounded by `connect_timeout`
//!   (best effort: it stops waiting at the first failure, which is logged; bb8 keeps trying in
//!   the background). Note that bb8's `min_idle` keeps `min_connections` *idle* connections
//!   (the pool grows with load up to `max_connections`), where deadpool keeps
//!   `min_connections` connections in total.
//! - [`Pool::acquire`] waits at most `acquire_timeout`. While the server is unreachable bb8 keeps
//!   retrying to open connections in the background until that timeout, so a checkout during an
//!   outage ends with the timeout [`Error::Pool`] (whose message carries the last connection
//!   error) and succeeds as soon as the server is back.
//! - Every checkout runs [`pgdbm_tokio_postgres::recycle`] (bb8's `test_on_check_out`); a
//!   connection it rejects is closed and bb8 hands out another. Broken connections are closed
//!   when returned.
//! - bb8's reaper closes idle connections idle longer than `max_inactive_connection_lifetime`
//!   (`idle_timeout`) or older than `max_lifetime`, then reopens connections up to
//!   `min_connections` (`min_idle`). bb8 documents `idle_timeout` as applying only above
//!   `min_idle`: in effect idle connections below `min_idle` are replaced by fresh ones rather
//!   than kept, and the recycle policy replaces any connection idle too long at checkout.
//! - bb8 has no `close`: [`Pool::close`] sets a closed flag and closes the semaphore (every
//!   later checkout fails with an [`Error::Pool`] saying the pool is closed), closes the idle
//!   connections by checking them out once with a validation that now fails, and makes bb8 treat
//!   returned connections as broken, so they are closed on return. bb8 may try to reopen
//!   connections for `min_idle` in the background for up to `acquire_timeout`; those attempts
//!   fail at once without touching the network and are not logged.
//!
//! # Example
//!
//! ```no_run
//! use pgdbm_core::{Config, Connection, Pool};
//! use pgdbm_bb8::Bb8Pool;
//!
//! # async fn demo() -> pgdbm_core::Result<()> {
//! let pool = Bb8Pool::connect(&Config::default()).await?;
//! let mut conn = pool.acquire().await?;
//! conn.execute("SELECT 1", &[], None).await?;
//! drop(conn); // back to the pool
//! println!("{:?}", pool.stats());
//! pool.close().await;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pgdbm_core::pool::conventions::{
    acquire_timeout_error, idle_limit, pool_closed_error, reap_interval, WaitingGuard,
};
use pgdbm_core::{Config, Error, Pool, PoolStats, Result};
use pgdbm_tokio_postgres::{saturate, Connector, PgConnection, PoolGuard, Pooled};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The connection type handed out by [`Bb8Pool::acquire`](Pool::acquire).
pub type Bb8Connection = Pooled<Bb8Guard>;

/// A connection checked out of a [`Bb8Pool`]; dropping it returns the connection to bb8 and
/// then releases the fairness permit, in that order. It is wrapped in [`Pooled`], which
/// implements [`pgdbm_core::Connection`].
pub struct Bb8Guard {
    // Field order matters: fields drop in declaration order, so the connection is back in bb8
    // before the permit lets the next waiter in.
    conn: bb8::PooledConnection<'static, Manager>,
    _permit: OwnedSemaphorePermit,
}

impl fmt::Debug for Bb8Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bb8Guard").finish_non_exhaustive()
    }
}

impl std::ops::Deref for Bb8Guard {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Bb8Guard {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl PoolGuard for Bb8Guard {
    fn detach(self) {
        // The connection is marked broken: bb8's `has_broken` makes it close the connection
        // on return instead of keeping it, then the permit lets the next waiter in.
        drop(self);
    }
}

/// State shared by the manager, the error sink and the pool handle.
struct Shared {
    closed: AtomicBool,
    /// The last error met while bb8 opened a connection in the background (shown in timeouts).
    last_connect_error: Mutex<Option<String>>,
    /// `last_connect_error` holds an error: checkouts clear it only then, so a busy pool's
    /// checkouts do not all take one shared lock.
    has_connect_error: AtomicBool,
}

impl Shared {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Opens, validates and recycles [`PgConnection`]s for bb8, through the shared [`Connector`].
struct Manager {
    connector: Arc<Connector>,
    shared: Arc<Shared>,
}

impl bb8::ManageConnection for Manager {
    // Boxed: bb8 moves its connections in and out of its idle queue, and a `PgConnection` is
    // some 600 bytes; a box is one pointer.
    type Connection = Box<PgConnection>;
    type Error = Error;

    async fn connect(&self) -> Result<Box<PgConnection>> {
        if self.shared.is_closed() {
            return Err(pool_closed_error());
        }
        let conn = self.connector.open().await?;
        // `close` may have run while this connect was under way (bb8 replenishes `min_idle`
        // in the background): a connection it would add to the idle set after the drain is
        // dropped here instead.
        if self.shared.is_closed() {
            return Err(pool_closed_error());
        }
        Ok(Box::new(conn))
    }

    async fn is_valid(&self, conn: &mut Box<PgConnection>) -> Result<()> {
        if self.shared.is_closed() {
            return Err(pool_closed_error());
        }
        self.connector.vet(conn).await
    }

    fn has_broken(&self, conn: &mut Box<PgConnection>) -> bool {
        self.shared.is_closed() || conn.is_broken()
    }
}

/// Logs errors bb8 meets in the background (opening connections) and keeps the last one.
#[derive(Clone)]
struct Sink(Arc<Shared>);

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sink")
    }
}

impl bb8::ErrorSink<Error> for Sink {
    fn sink(&self, error: Error) {
        if self.0.is_closed() {
            return;
        }
        tracing::warn!(target: "pgdbm", error = %error, "could not open a pooled connection");
        *self
            .0
            .last_connect_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
        self.0.has_connect_error.store(true, Ordering::Release);
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<Error>> {
        Box::new(self.clone())
    }
}

struct Inner {
    pool: bb8::Pool<Manager>,
    /// FIFO-fair gate in front of bb8 (see the crate docs).
    gate: Arc<Semaphore>,
    shared: Arc<Shared>,
    connector: Arc<Connector>,
    /// Tasks inside `acquire` that have no connection yet.
    waiting: AtomicUsize,
    min_size: usize,
    max_size: usize,
    acquire_timeout: Duration,
}

/// A pgdbm [`Pool`] on bb8, with first come, first served checkouts. Cloning shares the pool.
///
/// See the [crate documentation](crate) for its behaviour.
#[derive(Clone)]
pub struct Bb8Pool {
    inner: Arc<Inner>,
}

impl fmt::Debug for Bb8Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bb8Pool")
            .field("stats", &self.stats())
            .field("closed", &self.is_closed())
            .finish()
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Bb8Pool {
    fn timeout_error(&self) -> Error {
        let last = self
            .inner
            .shared
            .last_connect_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        acquire_timeout_error(self.inner.acquire_timeout, self.stats(), last.as_deref())
    }

    /// The current cache epoch: bumped by [`Pool::clear_statement_caches`].
    pub fn cache_epoch(&self) -> u64 {
        self.inner.connector.cache_epoch()
    }

    /// Takes a fairness permit, then a connection from bb8. `Ok(None)` is bb8's own timeout
    /// (reported by the caller, once it no longer counts itself as waiting).
    async fn checkout(&self) -> Result<Option<Bb8Guard>> {
        let permit = self
            .inner
            .gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|_closed| pool_closed_error())?;
        let conn = match self.inner.pool.get_owned().await {
            Ok(conn) => conn,
            Err(bb8::RunError::User(e)) => return Err(e),
            Err(bb8::RunError::TimedOut) => return Ok(None),
        };
        if self.inner.shared.is_closed() {
            return Err(pool_closed_error());
        }
        // A connection was handed out: older background connect errors are stale.
        let shared = &self.inner.shared;
        if shared.has_connect_error.swap(false, Ordering::AcqRel) {
            *shared
                .last_connect_error
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
        }
        Ok(Some(Bb8Guard {
            conn,
            _permit: permit,
        }))
    }
}

#[async_trait]
impl Pool for Bb8Pool {
    type Connection = Bb8Connection;

    async fn connect(config: &Config) -> Result<Self> {
        let connector = Connector::start(config).await?;
        let shared = Arc::new(Shared {
            closed: AtomicBool::new(false),
            last_connect_error: Mutex::new(None),
            has_connect_error: AtomicBool::new(false),
        });
        let manager = Manager {
            connector: connector.clone(),
            shared: shared.clone(),
        };
        let min = config.min_connections;
        let pool = bb8::Pool::builder()
            .max_size(to_u32(config.max_connections))
            .min_idle(Some(to_u32(min)))
            .test_on_check_out(true)
            .max_lifetime(config.max_lifetime.map(saturate))
            .idle_timeout(idle_limit(config).map(saturate))
            .reaper_rate(reap_interval(config))
            .connection_timeout(saturate(config.acquire_timeout))
            .retry_connection(true)
            // Most recently used idle connection first: a lightly loaded pool keeps using a
            // few warm backends (fewer liveness checks, less server CPU); waiter fairness
            // comes from the gate, not from this order.
            .queue_strategy(bb8::QueueStrategy::Lifo)
            .error_sink(Box::new(Sink(shared.clone())))
            .build_unchecked(manager);

        // build_unchecked started opening min_idle connections in the background (the first
        // one is the seed). Wait for them, bounded by connect_timeout; failures are logged by
        // the sink and retried by bb8.
        let deadline = Instant::now() + saturate(config.connect_timeout);
        let connect_failed = || {
            shared
                .last_connect_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
        };
        while (pool.state().connections as usize) < min
            && Instant::now() < deadline
            && !connect_failed()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // With min_connections = 0 nobody took the seed: hand it to bb8 directly.
        let unused = connector.take_seed();
        if let Some(seed) = unused {
            if pool.add(Box::new(seed)).is_err() {
                tracing::debug!(target: "pgdbm", "first connection not kept: the pool is full");
            }
        }

        Ok(Bb8Pool {
            inner: Arc::new(Inner {
                pool,
                gate: Arc::new(Semaphore::new(config.max_connections)),
                shared,
                connector,
                waiting: AtomicUsize::new(0),
                min_size: config.min_connections,
                max_size: config.max_connections,
                acquire_timeout: config.acquire_timeout,
            }),
        })
    }

    async fn acquire(&self) -> Result<Self::Connection> {
        if self.is_closed() {
            return Err(pool_closed_error());
        }
        let waiting = WaitingGuard::new(&self.inner.waiting);
        let got = tokio::time::timeout(self.inner.acquire_timeout, self.checkout()).await;
        drop(waiting);
        match got {
            Ok(Ok(Some(guard))) => Ok(Pooled::new(guard)),
            Ok(Err(e)) => Err(e),
            Ok(Ok(None)) | Err(_) => Err(self.timeout_error()),
        }
    }

    fn stats(&self) -> PoolStats {
        let state = self.inner.pool.state();
        PoolStats::new(
            state.connections as usize,
            state.idle_connections as usize,
            self.inner.min_size,
            self.inner.max_size,
            self.inner.waiting.load(Ordering::SeqCst),
        )
    }

    async fn close(&self) {
        self.inner.shared.closed.store(true, Ordering::SeqCst);
        self.inner.gate.close();
        // Close the idle connections: one checkout pops every idle connection, and the
        // validation (now failing) makes bb8 close each of them. It polls the pool before the
        // timer, so the draining happens even with a short bound; the loop covers connections
        // that come back meanwhile, for up to two seconds on a loaded machine.
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.inner.pool.state().idle_connections > 0 && tokio::time::Instant::now() < until {
            let _ = tokio::time::timeout(Duration::from_millis(50), self.inner.pool.get()).await;
        }
    }

    fn is_closed(&self) -> bool {
        self.inner.shared.is_closed()
    }

    fn clear_statement_caches(&self) {
        self.inner.connector.clear_statement_caches();
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}
