//! Live diagnostics of a PostgreSQL database (Python: `DatabaseDebugger`).
//!
//! A [`Debugger`] runs catalog and statistics queries (`pg_stat_activity`, `pg_locks` through
//! `pg_blocking_pids()`, `pg_stat_user_tables`, `pg_stat_user_indexes`, `pg_stat_database`)
//! through a [`Database`], so they go through the same pool, timeouts, tracing and observers as
//! any other query. Every method returns typed structs; a failure is an [`Error::Monitoring`]
//! naming what was being inspected and the underlying error.
//!
//! Activity is limited to the database the [`Database`] is connected to
//! (`current_database()`), and to client backends.

use std::fmt;
use std::time::Duration;

use crate::ident::{parse_qualified_name, quote_identifier};
use crate::{Database, Error, Pool, Result, Row};

/// Default threshold of [`Debugger::database_health`] for long-running queries (300 s, as in
/// Python's `find_long_running_queries`).
pub const DEFAULT_LONG_RUNNING_THRESHOLD: Duration = Duration::from_secs(300);

/// Share of `max_connections` above which [`Debugger::database_health`] warns.
pub const CONNECTION_WARNING_RATIO: f64 = 0.8;

/// Cache hit ratio below which [`Debugger::database_health`] warns (once the database has read
/// at least [`CACHE_WARNING_MIN_BLOCKS`] blocks, so a fresh database does not warn).
pub const CACHE_HIT_WARNING_RATIO: f64 = 0.9;

/// Blocks (hits + reads) a database must have served before a low cache hit ratio warns.
pub const CACHE_WARNING_MIN_BLOCKS: i64 = 10_000;

/// Client connections to the current database (Python: `get_connection_info()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// All client connections to this database.
    pub total: i64,
    /// Connections running a statement (`state = 'active'`).
    pub active: i64,
    /// Idle connections.
    pub idle: i64,
    /// Connections idle inside a transaction (including aborted ones).
    pub idle_in_transaction: i64,
    /// Connections waiting for a lock (`wait_event_type = 'Lock'`).
    pub waiting: i64,
    /// The server's `max_connections` (for all databases).
    pub max_connections: i64,
}

/// A backend waiting for a lock held by another (Python: an item of `find_blocking_queries()`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockingQuery {
    /// Process id of the waiting backend.
    pub blocked_pid: i32,
    /// Its current (or last) statement.
    pub blocked_query: String,
    /// Process id of a backend it waits for.
    pub blocking_pid: i32,
    /// That backend's current (or last) statement; it may be idle in a transaction.
    pub blocking_query: String,
    /// How long the blocked statement has been running.
    pub blocked_duration: Duration,
}

/// A statement running longer than a threshold (Python: an item of
/// `find_long_running_queries()`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LongRunningQuery {
    /// Process id of the backend.
    pub pid: i32,
    /// How long the statement has been running.
    pub duration: Duration,
    /// The backend's state (`active`, `idle in transaction`, ...).
    pub state: String,
    /// The statement.
    pub query: String,
}

/// Size and row estimate of one table (Python: an item of `analyze_table_sizes()`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableSize {
    /// Schema of the table.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// Total size on disk, with indexes and TOAST (`pg_total_relation_size`).
    pub total_bytes: i64,
    /// The same, human readable (`pg_size_pretty`).
    pub size: String,
    /// Live rows as estimated by the statistics collector (`n_live_tup`).
    pub row_count: i64,
}

/// Usage of one index (Python: an item of `check_index_usage()`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexUsage {
    /// Index name.
    pub index_name: String,
    /// Index scans started on it.
    pub idx_scan: i64,
    /// Index entries returned by scans on it.
    pub idx_tup_read: i64,
    /// Live table rows fetched by simple index scans on it.
    pub idx_tup_fetch: i64,
    /// Its size, human readable (`pg_size_pretty`).
    pub size: String,
}

/// An overview of the database's state (Python: `get_database_health()`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DatabaseHealth {
    /// Client connections.
    pub connection_info: ConnectionInfo,
    /// Number of (blocked, blocking) pairs.
    pub blocking_queries: usize,
    /// Statements running longer than the debugger's long-running threshold.
    pub long_running_queries: usize,
    /// Buffer cache hit ratio of this database (0..=1); `None` before any block was read.
    pub cache_hit_ratio: Option<f64>,
    /// Size of this database on disk.
    pub database_size_bytes: i64,
    /// Problems worth a look, in plain words (empty when all is well).
    pub warnings: Vec<String>,
}

/// Diagnostics of the database behind a [`Database`] (Python: `DatabaseDebugger`).
#[derive(Clone)]
pub struct Debugger<P: Pool> {
    db: Database<P>,
    long_running_threshold: Duration,
}

impl<P: Pool> fmt::Debug for Debugger<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Debugger")
            .field("db", &self.db)
            .field("long_running_threshold", &self.long_running_threshold)
            .finish()
    }
}

fn failed(what: &str, e: Error) -> Error {
    Error::Monitoring {
        message: format!("{what} failed: {e}"),
    }
}

fn no_row(what: &str) -> Error {
    Error::Monitoring {
        message: format!("{what} failed: the aggregate query returned no row"),
    }
}

fn secs(value: f64) -> Duration {
    // Negative or NaN (clock skew between backends) counts as zero; absurdly large values
    // saturate instead of panicking.
    if value.is_nan() || value <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX)
    }
}

impl<P: Pool> Debugger<P> {
    /// A debugger running its queries through `db` (cloned: it shares the pool).
    pub fn new(db: &Database<P>) -> Self {
        Debugger {
            db: db.clone(),
            long_running_threshold: DEFAULT_LONG_RUNNING_THRESHOLD,
        }
    }

    /// Sets the threshold [`database_health`](Debugger::database_health) uses for long-running
    /// queries (default [`DEFAULT_LONG_RUNNING_THRESHOLD`]).
    pub fn with_long_running_threshold(mut self, threshold: Duration) -> Self {
        self.long_running_threshold = threshold;
        self
    }

    /// The threshold [`database_health`](Debugger::database_health) uses for long-running
    /// queries.
    pub fn long_running_threshold(&self) -> Duration {
        self.long_running_threshold
    }

    /// Counts of client connections to this database by state (Python:
    /// `get_connection_info()`).
    pub async fn connection_info(&self) -> Result<ConnectionInfo> {
        let what = "reading connection info from pg_stat_activity";
        let row = self
            .db
            .fetch_one(
                "SELECT count(*)::bigint, \
                   count(*) FILTER (WHERE state = 'active')::bigint, \
                   count(*) FILTER (WHERE state = 'idle')::bigint, \
                   count(*) FILTER (WHERE state LIKE 'idle in transaction%')::bigint, \
                   count(*) FILTER (WHERE wait_event_type = 'Lock')::bigint, \
                   current_setting('max_connections')::bigint \
                 FROM pg_catalog.pg_stat_activity \
                 WHERE datname = current_database() AND backend_type = 'client backend'",
                &[],
            )
            .await
            .map_err(|e| failed(what, e))?
            .ok_or_else(|| no_row(what))?;
        let get = |i: usize| row.try_get::<_, i64>(&i).map_err(|e| failed(what, e));
        Ok(ConnectionInfo {
            total: get(0)?,
            active: get(1)?,
            idle: get(2)?,
            idle_in_transaction: get(3)?,
            waiting: get(4)?,
            max_connections: get(5)?,
        })
    }

    /// Backends of this database waiting for a lock, each with a backend it waits for
    /// (`pg_blocking_pids()`), longest waiting first (Python: `find_blocking_queries()`).
    pub async fn find_blocking_queries(&self) -> Result<Vec<BlockingQuery>> {
        let what = "finding blocking queries";
        let rows = self
            .db
            .fetch_all(
                "SELECT blocked.pid::int4, COALESCE(blocked.query, '')::text, \
                   blocking.pid::int4, COALESCE(blocking.query, '')::text, \
                   COALESCE(EXTRACT(EPOCH FROM (clock_timestamp() - blocked.query_start)), 0)::float8 \
                 FROM pg_catalog.pg_stat_activity blocked \
                 CROSS JOIN LATERAL unnest(pg_catalog.pg_blocking_pids(blocked.pid)) AS b(pid) \
                 JOIN pg_catalog.pg_stat_activity blocking ON blocking.pid = b.pid \
                 WHERE blocked.datname = current_database() \
                 ORDER BY 5 DESC, 1, 3",
                &[],
            )
            .await
            .map_err(|e| failed(what, e))?;
        rows.iter()
            .map(|r| {
                Ok(BlockingQuery {
                    blocked_pid: r.try_get(0usize)?,
                    blocked_query: r.try_get(1usize)?,
                    blocking_pid: r.try_get(2usize)?,
                    blocking_query: r.try_get(3usize)?,
                    blocked_duration: secs(r.try_get(4usize)?),
                })
            })
            .collect::<Result<_>>()
            .map_err(|e| failed(what, e))
    }

    /// Statements of other backends of this database running for longer than `threshold`,
    /// longest first (Python: `find_long_running_queries()`). Idle connections are left out; the
    /// debugger's own connection too.
    pub async fn find_long_running_queries(
        &self,
        threshold: Duration,
    ) -> Result<Vec<LongRunningQuery>> {
        let what = "finding long-running queries";
        let threshold_secs = threshold.as_secs_f64();
        let rows = self
            .db
            .fetch_all(
                "SELECT pid::int4, \
                   EXTRACT(EPOCH FROM (clock_timestamp() - query_start))::float8 AS secs, \
                   COALESCE(state, '')::text, COALESCE(query, '')::text \
                 FROM pg_catalog.pg_stat_activity \
                 WHERE datname = current_database() AND backend_type = 'client backend' \
                   AND pid <> pg_catalog.pg_backend_pid() AND state IS DISTINCT FROM 'idle' \
                   AND query_start IS NOT NULL \
                   AND EXTRACT(EPOCH FROM (clock_timestamp() - query_start))::float8 > $1::float8 \
                 ORDER BY 2 DESC, 1",
                &[&threshold_secs],
            )
            .await
            .map_err(|e| failed(what, e))?;
        rows.iter()
            .map(|r| {
                Ok(LongRunningQuery {
                    pid: r.try_get(0usize)?,
                    duration: secs(r.try_get(1usize)?),
                    state: r.try_get(2usize)?,
                    query: r.try_get(3usize)?,
                })
            })
            .collect::<Result<_>>()
            .map_err(|e| failed(what, e))
    }

    /// Sizes and live-row estimates of the tables in the [`Database`]'s schema, or of all user
    /// schemas when it has none; largest first (Python: `analyze_table_sizes()`). Row counts are
    /// the statistics collector's estimates: run `ANALYZE` for fresh ones.
    pub async fn analyze_table_sizes(&self) -> Result<Vec<TableSize>> {
        let what = "analyzing table sizes";
        let schema = self.db.schema();
        let rows = self
            .db
            .fetch_all(
                "SELECT schemaname::text, relname::text, \
                   pg_catalog.pg_total_relation_size(relid)::bigint, \
                   pg_catalog.pg_size_pretty(pg_catalog.pg_total_relation_size(relid))::text, \
                   COALESCE(n_live_tup, 0)::bigint \
                 FROM pg_catalog.pg_stat_user_tables \
                 WHERE ($1::text IS NULL OR schemaname = $1::text) \
                   AND schemaname NOT LIKE 'pg\\_temp\\_%' \
                 ORDER BY 3 DESC, 1, 2",
                &[&schema],
            )
            .await
            .map_err(|e| failed(what, e))?;
        rows.iter()
            .map(|r| {
                Ok(TableSize {
                    schema: r.try_get(0usize)?,
                    table: r.try_get(1usize)?,
                    total_bytes: r.try_get(2usize)?,
                    size: r.try_get(3usize)?,
                    row_count: r.try_get(4usize)?,
                })
            })
            .collect::<Result<_>>()
            .map_err(|e| failed(what, e))
    }

    /// Usage counters of the indexes of `table`, most scanned first (Python:
    /// `check_index_usage()`). `table` is `"users"` (in the [`Database`]'s schema, or found
    /// through the `search_path` without one) or `"schema.users"`. A table that does not exist
    /// is an error; a table without indexes gives an empty list.
    pub async fn check_index_usage(&self, table: &str) -> Result<Vec<IndexUsage>> {
        let (schema, name) = parse_qualified_name(table)?;
        let qualified = match schema.as_deref().or(self.db.schema()) {
            Some(s) => format!("{}.{}", quote_identifier(s)?, quote_identifier(&name)?),
            None => quote_identifier(&name)?,
        };
        let what = format!("checking index usage of {qualified}");
        let rows = self
            .db
            .fetch_all(
                "SELECT r.oid IS NOT NULL, s.indexrelname::text, s.idx_scan::bigint, \
                   s.idx_tup_read::bigint, s.idx_tup_fetch::bigint, \
                   pg_catalog.pg_size_pretty(pg_catalog.pg_relation_size(s.indexrelid))::text \
                 FROM (SELECT pg_catalog.to_regclass($1::text)::oid AS oid) r \
                 LEFT JOIN pg_catalog.pg_stat_all_indexes s ON s.relid = r.oid \
                 ORDER BY s.idx_scan DESC NULLS LAST, s.indexrelname",
                &[&qualified],
            )
            .await
            .map_err(|e| failed(&what, e))?;
        let exists = match rows.first() {
            Some(r) => r
                .try_get::<_, bool>(&0usize)
                .map_err(|e| failed(&what, e))?,
            None => false,
        };
        if !exists {
            return Err(Error::Monitoring {
                message: format!(
                    "{what} failed: table {qualified} does not exist; check the name and schema \
                     (use \"schema.table\" for a table outside the database's schema)"
                ),
            });
        }
        let mut out = Vec::new();
        for r in &rows {
            let index_name: Option<String> = r.try_get(1usize).map_err(|e| failed(&what, e))?;
            let Some(index_name) = index_name else {
                continue; // the table has no index: one row of NULLs from the LEFT JOIN
            };
            let get = |i: usize| {
                r.try_get::<_, Option<i64>>(&i)
                    .map(Option::unwrap_or_default)
                    .map_err(|e| failed(&what, e))
            };
            out.push(IndexUsage {
                index_name,
                idx_scan: get(2)?,
                idx_tup_read: get(3)?,
                idx_tup_fetch: get(4)?,
                size: r
                    .try_get::<_, Option<String>>(&5usize)
                    .map_err(|e| failed(&what, e))?
                    .unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// An overview: connections, blocking and long-running queries (threshold
    /// [`long_running_threshold`](Debugger::long_running_threshold)), cache hit ratio, size, and
    /// warnings (Python: `get_database_health()`).
    pub async fn database_health(&self) -> Result<DatabaseHealth> {
        let connection_info = self.connection_info().await?;
        let blocking_queries = self.find_blocking_queries().await?.len();
        let long_running_queries = self
            .find_long_running_queries(self.long_running_threshold)
            .await?
            .len();
        let what = "reading database statistics";
        let row = self
            .db
            .fetch_one(
                "SELECT pg_catalog.pg_database_size(current_database())::bigint, \
                   (SELECT blks_hit::float8 / NULLIF(blks_hit + blks_read, 0)::float8 \
                      FROM pg_catalog.pg_stat_database WHERE datname = current_database()), \
                   COALESCE((SELECT (blks_hit + blks_read)::bigint \
                      FROM pg_catalog.pg_stat_database WHERE datname = current_database()), 0)",
                &[],
            )
            .await
            .map_err(|e| failed(what, e))?
            .ok_or_else(|| no_row(what))?;
        let database_size_bytes: i64 = row.try_get(0usize).map_err(|e| failed(what, e))?;
        let cache_hit_ratio: Option<f64> = row.try_get(1usize).map_err(|e| failed(what, e))?;
        let blocks: i64 = row.try_get(2usize).map_err(|e| failed(what, e))?;

        let mut warnings = Vec::new();
        if blocking_queries > 0 {
            warnings.push(format!(
                "{blocking_queries} blocked/blocking query pair(s): see find_blocking_queries()"
            ));
        }
        if long_running_queries > 0 {
            warnings.push(format!(
                "{long_running_queries} query(ies) running longer than {:?}: see \
                 find_long_running_queries()",
                self.long_running_threshold
            ));
        }
        if connection_info.idle_in_transaction > 0 {
            warnings.push(format!(
                "{} connection(s) idle in a transaction: they hold locks and block vacuum",
                connection_info.idle_in_transaction
            ));
        }
        if connection_info.max_connections > 0
            && connection_info.total as f64
                >= CONNECTION_WARNING_RATIO * connection_info.max_connections as f64
        {
            warnings.push(format!(
                "{} of max_connections = {} connections in use by this database",
                connection_info.total, connection_info.max_connections
            ));
        }
        if let Some(ratio) = cache_hit_ratio {
            if blocks >= CACHE_WARNING_MIN_BLOCKS && ratio < CACHE_HIT_WARNING_RATIO {
                warnings.push(format!(
                    "cache hit ratio {:.1}% is below {:.0}%: consider more shared_buffers or \
                     better indexes",
                    ratio * 100.0,
                    CACHE_HIT_WARNING_RATIO * 100.0
                ));
            }
        }
        Ok(DatabaseHealth {
            connection_info,
            blocking_queries,
            long_running_queries,
            cache_hit_ratio,
            database_size_bytes,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_clamped() {
        assert_eq!(secs(-1.0), Duration::ZERO);
        assert_eq!(secs(f64::NAN), Duration::ZERO);
        assert_eq!(secs(1.5), Duration::from_millis(1500));
        assert_eq!(secs(f64::INFINITY), Duration::MAX);
        assert_eq!(secs(1e300), Duration::MAX);
    }

    #[test]
    fn monitoring_errors_name_the_cause() {
        let e = failed("finding blocking queries", Error::pool("no connection"));
        let s = e.to_string();
        assert!(s.contains("finding blocking queries failed"), "{s}");
        assert!(s.contains("no connection"), "{s}");
        assert!(matches!(e, Error::Monitoring { .. }));
    }
}
