//! The per-module advisory lock, held on a dedicated connection.
//!
//! The key is computed by the server as `hashtext('pgdbm_migration_' || module)`, exactly like
//! Python pgdbm, so Python and Rust migrators exclude each other. The lock is taken by polling
//! `pg_try_advisory_lock` with jittered exponential backoff: a migrator never sits in a blocking
//! `pg_advisory_lock`, whose open snapshot would make another migrator's
//! `CREATE INDEX CONCURRENTLY` wait for it forever (a deadlock).

use std::time::{Duration, Instant};

use pgdbm_core::{Connection, Error, Pool, QueryErrorKind, Result, Row};

use crate::TRACING_TARGET;

const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtext('pgdbm_migration_' || $1::text))";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtext('pgdbm_migration_' || $1::text))";
/// The backend holding the lock of module `$1` in the current database, if any.
const HOLDER: &str = "SELECT l.pid FROM pg_locks l \
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
       AND ((l.classid::int8 << 32) | l.objid::int8) = hashtext('pgdbm_migration_' || $1::text)::int8 \
     LIMIT 1";

const FIRST_DELAY: Duration = Duration::from_millis(20);
const MAX_DELAY: Duration = Duration::from_millis(500);

/// A connection holding the migration lock of one module.
///
/// [`release`](LockGuard::release) unlocks and returns the connection to the pool. When the
/// guard is dropped without it (an error path that forgot, a panic, a cancelled future), the
/// connection is [discarded](Connection::discard): the pool closes it and the server releases
/// the session lock with the session. A connection that cannot be cleaned is never reused.
pub(crate) struct LockGuard<C: Connection> {
    conn: Option<C>,
    module: String,
    /// Client-side deadline of each lock query (try-lock, unlock, holder lookup).
    query_timeout: Duration,
}

impl<C: Connection> LockGuard<C> {
    pub(crate) fn conn(&mut self) -> Result<&mut C> {
        self.conn.as_mut().ok_or_else(|| {
            Error::migration(
                None,
                "internal error: the migration lock was already released",
            )
        })
    }

    /// Rolls back a leftover transaction and unlocks. The connection goes back to the pool
    /// when `reuse` is true and everything went cleanly; otherwise it is closed (which also
    /// releases the lock). Callers pass `reuse = false` after running migration SQL, which may
    /// have changed session state (`SET search_path`, temporary tables...) that must not leak
    /// into the pool.
    pub(crate) async fn release(mut self, reuse: bool) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let query_timeout = Some(self.query_timeout);
        let module = std::mem::take(&mut self.module);
        let mut clean = true;
        if conn.in_transaction() && conn.rollback().await.is_err() {
            clean = false;
        }
        if clean {
            match conn.query_opt(UNLOCK, &[&module], query_timeout).await {
                Ok(Some(row)) => {
                    clean = matches!(row.get_at::<bool>(0), Ok(true));
                    if !clean {
                        tracing::warn!(target: TRACING_TARGET, module = %module, "pg_advisory_unlock returned false: the lock was not held");
                    }
                }
                Ok(None) => clean = false,
                Err(e) => {
                    tracing::warn!(target: TRACING_TARGET, module = %module, error = %e, "could not release the migration lock; closing the connection instead");
                    clean = false;
                }
            }
        }
        if !clean || !reuse {
            conn.discard();
        }
        tracing::debug!(target: TRACING_TARGET, module = %module, "migration lock released");
    }
}

impl<C: Connection> LockGuard<C> {
    /// Returns the connection to the pool as is: only for a connection that does not hold the
    /// lock (its last `pg_try_advisory_lock` said false).
    fn give_back(&mut self) {
        drop(self.conn.take());
    }
}

impl<C: Connection> Drop for LockGuard<C> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            // No async code can run here: let the pool close the connection, which makes the
            // server release the session-level advisory lock.
            tracing::warn!(target: TRACING_TARGET, module = %self.module, "migration lock dropped without release (error, panic or cancellation); closing its connection");
            conn.discard();
        }
    }
}

/// How many fresh connections to try when the pool hands out one that turns out to be broken
/// (e.g. its server session ended while it sat idle).
const CONNECTION_ATTEMPTS: u32 = 3;

/// Polls for the lock of `module` on a dedicated connection of `pool` until `timeout`; each
/// lock query is bounded by `query_timeout`, so a dead or blackholed connection cannot hang it.
pub(crate) async fn acquire<P: Pool>(
    pool: &P,
    module: &str,
    timeout: Duration,
    query_timeout: Duration,
) -> Result<LockGuard<P::Connection>> {
    let start = Instant::now();
    let mut delay = FIRST_DELAY;
    let mut attempts: u32 = 0;
    let mut broken_connections: u32 = 0;
    let mut guard = new_guard(pool, module, query_timeout).await?;
    // A session lock does not hold behind a transaction pooler: refuse before taking it (the
    // guard's connection holds no lock yet and goes back to the pool).
    if let Err(e) =
        crate::pooler::refuse_transaction_pooler(pool, guard.conn()?, query_timeout).await
    {
        guard.give_back();
        return Err(match e {
            refusal @ Error::Migration { .. } => refusal,
            e => lock_error(
                module,
                "the connection check before pg_try_advisory_lock failed",
                e,
            ),
        });
    }
    loop {
        attempts += 1;
        let conn = guard.conn()?;
        let row = match conn
            .query_opt(TRY_LOCK, &[&module], Some(query_timeout))
            .await
        {
            Ok(row) => row,
            Err(e)
                if e.as_query()
                    .is_some_and(|q| q.kind == QueryErrorKind::Connection)
                    && broken_connections + 1 < CONNECTION_ATTEMPTS =>
            {
                // The connection is dead, so it holds no lock: replace it.
                broken_connections += 1;
                tracing::debug!(target: TRACING_TARGET, module, error = %e, "broken connection while polling the migration lock; using a new one");
                guard = new_guard(pool, module, query_timeout).await?;
                continue;
            }
            // Unknown state (e.g. a timeout after the server granted the lock): the guard's
            // drop closes the connection, which releases any lock it may hold.
            Err(e) => return Err(lock_error(module, "pg_try_advisory_lock failed", e)),
        };
        let got = match row.map(|row| row.get_at::<bool>(0)).transpose() {
            Ok(got) => got.unwrap_or(false),
            Err(e) => {
                return Err(lock_error(
                    module,
                    "cannot read the pg_try_advisory_lock result",
                    e,
                ))
            }
        };
        if got {
            tracing::debug!(target: TRACING_TARGET, module, attempts, "migration lock acquired");
            return Ok(guard);
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            let holder = holder_pid(conn, module, query_timeout).await;
            // The lock is not held by this connection: return it to the pool normally.
            guard.give_back();
            return Err(Error::migration(
                None,
                format!(
                    "timed out after {timeout:?} ({attempts} attempts) waiting for the migration lock of module \
                     `{module}` (advisory lock hashtext('pgdbm_migration_{module}')); it is held by {}. \
                     Another migrator (Rust or Python pgdbm) is running for this module: wait for it, \
                     or raise the lock timeout",
                    match holder {
                        Some(pid) => format!("server process pid {pid} (see pg_stat_activity)"),
                        None => "a session that released it meanwhile".to_owned(),
                    }
                ),
            ));
        }
        if attempts == 1 {
            tracing::info!(target: TRACING_TARGET, module, "waiting for the migration lock held by another migrator");
        }
        // Jitter in [delay/2, delay), never past the deadline. The connection is idle (no
        // open transaction or snapshot) while we sleep, so it never blocks other sessions.
        let jittered = delay.mul_f64(0.5 + 0.5 * crate::clock::jitter());
        pool.sleep(jittered.min(timeout - elapsed)).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}

async fn new_guard<P: Pool>(
    pool: &P,
    module: &str,
    query_timeout: Duration,
) -> Result<LockGuard<P::Connection>> {
    let conn = pool
        .acquire()
        .await
        .map_err(|e| lock_error(module, "cannot get a connection", e))?;
    Ok(LockGuard {
        conn: Some(conn),
        module: module.to_owned(),
        query_timeout,
    })
}

async fn holder_pid<C: Connection>(
    conn: &mut C,
    module: &str,
    query_timeout: Duration,
) -> Option<i32> {
    match conn
        .query_opt(HOLDER, &[&module], Some(query_timeout))
        .await
    {
        Ok(Some(row)) => row.get_at::<i32>(0).ok(),
        _ => None,
    }
}

fn lock_error(module: &str, what: &str, e: Error) -> Error {
    let hint = if e.is_timeout() {
        "; the server did not answer within the migrator's query_timeout: check the server and \
         the network, or raise Migrator::query_timeout"
    } else {
        ""
    };
    Error::Migration {
        file: None,
        message: format!("{what} while taking the migration lock of module `{module}`: {e}{hint}"),
        source: Some(Box::new(e)),
    }
}
