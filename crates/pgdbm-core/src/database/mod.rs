//! The database manager: [`Database`], written once over any [`Pool`].
//!
//! The port of Python pgdbm's `AsyncDatabaseManager`. It renders `{{schema}}` / `{{tables.x}}`
//! templates, applies the default command timeout, records each query in a `tracing` span
//! (target `pgdbm`) and in any attached [`QueryObserver`], masks parameters in errors, and owns no
//! driver code: everything that touches the wire is behind the [`Pool`] / [`Connection`] traits.
//!
//! Three handles run queries, all with the same methods:
//! - [`Database`]: checks a connection out of the pool for each call;
//! - [`DbConnection`]: one checked-out connection ([`Database::acquire`]);
//! - [`Transaction`] and [`Savepoint`]: a connection inside a transaction; they dereference to
//!   [`DbConnection`], so every query method is available on them.

mod connection;
mod context;
#[cfg(feature = "metrics")]
mod metrics;
mod schema_setup;
mod stream;
mod telemetry;
mod transaction;

pub use connection::DbConnection;
pub use context::{
    AsQuery, Clock, PreparedQuery, QueryEvent, QueryObserver, RenderedSql, SystemClock,
};
pub use transaction::{Savepoint, Transaction};

use context::{client_error, Ctx, ReplicaCtx, Shared};

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use postgres_types::FromSql;

use crate::ident::validate_identifier;
use crate::template::TemplateCache;
use crate::{Config, Connection, FromRow, Param, Pool, PoolStats, Result, TransactionOptions};

/// The row type of a connection type.
pub type RowOf<C> = <C as Connection>::Row;

/// The database manager (Python: `AsyncDatabaseManager`), generic over the [`Pool`] backend.
///
/// Cloning is cheap and shares the pool. [`with_schema`](Database::with_schema) makes a view on
/// the same pool that renders templates for another schema; views never change each other's
/// behaviour (templates are rendered to schema-qualified names, nothing relies on a
/// per-connection `search_path`). [`replica`](Database::replica) is the view on the read
/// replica pool ([`Config::read_hosts`]): reads the application sends to standbys.
pub struct Database<P: Pool> {
    pool: P,
    ctx: Ctx,
    /// Made by [`connect`](Database::connect) (and clones of it): [`close`](Database::close)
    /// closes the pool. Views and [`from_pool`](Database::from_pool) managers do not own it.
    owns_pool: bool,
    /// The read replica pool ([`replica`](Database::replica)), if any, and whether
    /// [`close`](Database::close) of an owning manager closes it (opened by `connect`).
    replica: Option<(P, bool)>,
}

impl<P: Pool> Clone for Database<P> {
    fn clone(&self) -> Self {
        Database {
            pool: self.pool.clone(),
            ctx: self.ctx.clone(),
            owns_pool: self.owns_pool,
            replica: self.replica.clone(),
        }
    }
}

impl<P: Pool> fmt::Debug for Database<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("schema", &self.ctx.schema)
            .field("timeout", &self.ctx.timeout)
            .field("pool", &self.pool.stats())
            .field("replica_view", &self.ctx.replica.is_some())
            .field("dsn", &self.ctx.shared.config.dsn_masked())
            .finish()
    }
}

macro_rules! via_connection {
    ($(#[$doc:meta])* $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty $(, generics: [$($g:tt)*])?) => {
        $(#[$doc])*
        pub async fn $name $(<$($g)*>)? (&self, $($arg: $ty),*) -> Result<$ret> {
            self.acquire().await?.$name($($arg),*).await
        }
    };
}

impl<P: Pool> Database<P> {
    /// Validates `config`, opens a pool and returns the manager that owns it (Python:
    /// `connect()`). When `config.schema` is set and the schema does not exist it is created
    /// (an [`Error::Schema`](crate::Error::Schema) says so when the role may not).
    ///
    /// With [`Config::read_hosts`] it also opens the read replica pool on them
    /// ([`Config::replica_config`]), used by the [`replica`](Database::replica) view and
    /// closed with this manager.
    pub async fn connect(config: Config) -> Result<Self> {
        // `Pool::connect` validates the config (its contract), before any I/O.
        let pool = P::connect(&config).await?;
        let replica = match config.replica_config() {
            Some(replica_config) => match P::connect(&replica_config).await {
                Ok(replica) => Some(replica),
                Err(e) => {
                    pool.close().await;
                    return Err(e);
                }
            },
            None => None,
        };
        let mut db = Self::from_pool(pool, config)?;
        db.owns_pool = true;
        db.replica = replica.map(|p| (p, true));
        if let Err(e) = db.create_configured_schema().await {
            db.close().await;
            return Err(e);
        }
        Ok(db)
    }

    /// Opens a pool meant to be shared by several managers (Python: `create_shared_pool`).
    /// Wrap it with [`from_pool`](Database::from_pool), then make per-schema views.
    ///
    /// As Python 0.5, every connection's `search_path` is pinned to
    /// [`Config::shared_pool_search_path`] (default `pg_catalog`: no user schema), so an
    /// unqualified table name fails rather than resolving through `public`; the pin is read
    /// back from a connection, and a pin not in effect (dropped by a proxy, or overridden by a
    /// `search_path` in the config or `config.schema`) is an
    /// [`Error::Configuration`](crate::Error::Configuration) for `shared_pool_search_path`
    /// explaining the ways forward. The caller owns the pool: close it with [`Pool::close`].
    pub async fn create_shared_pool(config: &Config) -> Result<P> {
        Self::open_shared_pool(config).await
    }

    /// A manager on an existing pool, with `config.schema` and `config.command_timeout`.
    pub fn from_pool(pool: P, config: Config) -> Result<Self> {
        let schema = match config.schema.as_deref() {
            Some(s) => {
                validate_identifier(s)?;
                Some(Arc::from(s))
            }
            None => None,
        };
        let timeout = config.command_timeout;
        #[cfg(feature = "metrics")]
        let stats_pool = pool.clone();
        Ok(Database {
            pool,
            ctx: Ctx {
                schema,
                timeout,
                shared: Arc::new(Shared {
                    config,
                    templates: TemplateCache::default(),
                    prepared: RwLock::new(HashMap::new()),
                    observers: RwLock::new(Vec::new()),
                    has_observers: AtomicBool::new(false),
                    clock: Arc::new(SystemClock),
                    #[cfg(feature = "metrics")]
                    pool_stats: Arc::new(move || stats_pool.stats()),
                }),
                replica: None,
            },
            owns_pool: false,
            replica: None,
        })
    }

    /// Attaches `pool` (on read replicas: streaming standbys) as the pool of the
    /// [`replica`](Database::replica) view of this manager and the views made from it. The
    /// caller owns `pool` and closes it; [`connect`](Database::connect) with
    /// [`Config::read_hosts`] does this itself.
    pub fn with_replica_pool(mut self, pool: P) -> Self {
        self.replica = Some((pool, false));
        self
    }

    /// The read replica view: the same manager (schema, timeout, templates, prepared
    /// statements, observers, clock, metrics namespace) on the read replica pool, for reads
    /// the application chooses to send to standbys; nothing is routed by looking at the SQL.
    /// Reads there may lag the primary by the replication delay. A write through it is
    /// refused by the server (SQLSTATE 25006), and the error says that this is the replica
    /// view and to use the primary. [`close`](Database::close) on the view does nothing: the
    /// manager that opened the pools closes both. Calling `replica()` on the replica view
    /// returns it again.
    ///
    /// # Errors
    /// [`Error::Configuration`](crate::Error::Configuration) for `read_hosts` when this
    /// manager has no replica pool.
    pub fn replica(&self) -> Result<Self> {
        let Some((pool, _)) = &self.replica else {
            return Err(crate::Error::config(
                "read_hosts",
                "this Database has no read replica pool: set Config::read_hosts before \
                 Database::connect, or attach a pool with Database::with_replica_pool",
            ));
        };
        let mut view = self.clone();
        view.pool = pool.clone();
        view.owns_pool = false;
        #[cfg(feature = "metrics")]
        let stats_pool = pool.clone();
        view.ctx.replica = Some(Arc::new(ReplicaCtx {
            #[cfg(feature = "metrics")]
            pool_stats: Arc::new(move || stats_pool.stats()),
        }));
        Ok(view)
    }

    /// True for the read replica view ([`replica`](Database::replica)) and views made from it.
    pub fn is_replica(&self) -> bool {
        self.ctx.replica.is_some()
    }

    /// A view on the same pool whose templates render for `schema` (Python:
    /// `AsyncDatabaseManager(pool=pool, schema="auth")`). Errors if `schema` is not a valid
    /// identifier.
    pub fn with_schema(&self, schema: &str) -> Result<Self> {
        validate_identifier(schema)?;
        let mut view = self.clone();
        view.ctx.schema = Some(Arc::from(schema));
        view.owns_pool = false;
        Ok(view)
    }

    /// A view on the same pool without a schema (templates render unqualified names).
    pub fn without_schema(&self) -> Self {
        let mut view = self.clone();
        view.ctx.schema = None;
        view.owns_pool = false;
        view
    }

    /// A view whose queries use `timeout` instead of the configured `command_timeout`
    /// (`None`: no client-side timeout). Python's per-call `timeout=` argument.
    pub fn with_timeout(&self, timeout: Option<Duration>) -> Self {
        let mut view = self.clone();
        view.ctx.timeout = timeout;
        view.owns_pool = false;
        view
    }

    /// Replaces the clock used to time queries (for deterministic tests or another runtime).
    /// Call it before making views: views made from the returned manager share its clock;
    /// views made earlier keep the old one.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        let Database {
            pool,
            mut ctx,
            owns_pool: self_owns,
            replica,
        } = self;
        let old = &ctx.shared;
        let shared = Shared {
            config: old.config.clone(),
            templates: TemplateCache::default(),
            prepared: RwLock::new(match old.prepared.read() {
                Ok(g) => g.clone(),
                Err(p) => p.into_inner().clone(),
            }),
            observers: RwLock::new(match old.observers.read() {
                Ok(g) => g.clone(),
                Err(p) => p.into_inner().clone(),
            }),
            has_observers: AtomicBool::new(old.has_observers.load(Ordering::Relaxed)),
            clock,
            #[cfg(feature = "metrics")]
            pool_stats: old.pool_stats.clone(),
        };
        ctx.shared = Arc::new(shared);
        Database {
            pool,
            ctx,
            owns_pool: self_owns,
            replica,
        }
    }

    /// Attaches an observer that sees every query of this manager and all its views.
    pub fn add_observer(&self, observer: Arc<dyn QueryObserver>) {
        let mut guard = match self.ctx.shared.observers.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        guard.push(observer);
        self.ctx.shared.has_observers.store(true, Ordering::Relaxed);
    }

    /// The schema of this view (Python: `config.get_schema()`).
    pub fn schema(&self) -> Option<&str> {
        self.ctx.schema.as_deref()
    }

    /// The pool.
    pub fn pool(&self) -> &P {
        &self.pool
    }

    /// The configuration the manager was created with (its `Debug` hides the password).
    pub fn config(&self) -> &Config {
        &self.ctx.shared.config
    }

    /// The default timeout of this view's queries.
    pub fn timeout(&self) -> Option<Duration> {
        self.ctx.timeout
    }

    /// Closes the pool when this manager owns it (made by [`connect`](Database::connect), or a
    /// clone of that), which closes it for every view (Python: `disconnect()`), and the read
    /// replica pool `connect` opened for [`Config::read_hosts`]. On a view
    /// ([`with_schema`](Database::with_schema), ...) or a [`from_pool`](Database::from_pool)
    /// manager it does nothing, as Python's external-pool `disconnect()`: the pool's owner
    /// closes it.
    pub async fn close(&self) {
        if self.owns_pool {
            self.pool.close().await;
            if let Some((replica, true)) = &self.replica {
                replica.close().await;
            }
        } else {
            tracing::debug!(target: "pgdbm", "close() on a view or external-pool manager: the pool is left open");
        }
    }

    /// Publishes the pool gauges now (feature `metrics`; they are also published at each
    /// checkout and after each query). Call it from a periodic task to keep them current
    /// while the pool is idle.
    #[cfg(feature = "metrics")]
    pub fn publish_pool_metrics(&self) {
        metrics::pool_gauges(&self.ctx, self.pool.stats());
    }

    /// Pool counters (Python: `get_pool_stats()`).
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Checks a connection out of the pool (Python: `acquire()`). It renders templates like the
    /// manager and goes back to the pool when dropped.
    pub async fn acquire(&self) -> Result<DbConnection<P::Connection>> {
        #[cfg(feature = "metrics")]
        let started = self.ctx.shared.clock.now();
        let conn = self.pool.acquire().await;
        #[cfg(feature = "metrics")]
        metrics::acquired(
            &self.ctx,
            self.ctx
                .shared
                .clock
                .now()
                .saturating_duration_since(started),
            conn.as_ref().err(),
            self.pool.stats(),
        );
        let conn = conn?;
        Ok(DbConnection::new(conn, self.ctx.clone()))
    }

    /// Starts a transaction on a fresh connection (Python: `transaction()`). Commit it with
    /// [`Transaction::commit`]; dropping it without commit rolls it back. Nest with
    /// [`DbConnection::savepoint`].
    pub async fn transaction(&self) -> Result<Transaction<P::Connection>> {
        self.acquire().await?.begin().await
    }

    /// Starts a transaction with `options` (isolation level, read-only, deferrable) on a fresh
    /// connection. For the closure forms see
    /// [`transaction_with`](Database::transaction_with).
    pub async fn begin_with(
        &self,
        options: &TransactionOptions,
    ) -> Result<Transaction<P::Connection>> {
        self.acquire().await?.begin_with(options).await
    }

    /// Registers a named statement (Python: `add_prepared_statement`). Run it by passing
    /// [`prepared`](Database::prepared)`(name)` to any query method.
    pub fn add_prepared_statement(&self, name: &str, sql: &str) -> Result<()> {
        // Render once now so a bad template fails here, not at first use.
        self.ctx.shared.templates.render(sql, self.schema())?;
        let mut map = match self.ctx.shared.prepared.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        map.insert(name.to_string(), Arc::from(sql));
        Ok(())
    }

    /// The statement registered under `name`, rendered for this view's schema.
    pub fn prepared(&self, name: &str) -> Result<PreparedQuery> {
        let raw = {
            let map = match self.ctx.shared.prepared.read() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            map.get(name).cloned()
        };
        let raw = raw.ok_or_else(|| {
            client_error(
                format!(
                    "no prepared statement named `{name}`; register it first with add_prepared_statement"
                ),
                "",
            )
        })?;
        let mut q = self.prepare_query(&raw)?;
        q.name = Some(Arc::from(name));
        Ok(q)
    }

    /// Renders `sql` once for this view (Python: `prepare_query`).
    pub fn prepare_query(&self, sql: &str) -> Result<PreparedQuery> {
        let rendered = self.ctx.shared.templates.render(sql, self.schema())?;
        Ok(PreparedQuery {
            name: None,
            raw: Arc::from(sql),
            rendered,
            schema: self.ctx.schema.clone(),
        })
    }

    /// Renders `sql` for this view's schema (what every query method does first).
    pub fn render(&self, sql: &str) -> Result<String> {
        Ok(self.ctx.render(sql)?.to_string())
    }

    via_connection!(
        /// Runs a statement; returns rows affected (Python: `execute`).
        execute(sql: &Q, params: &[Param<'_>]) -> u64, generics: [Q: AsQuery + ?Sized]);
    via_connection!(
        /// Runs one or more statements with the simple protocol, no parameters.
        batch_execute(sql: &Q) -> (), generics: [Q: AsQuery + ?Sized]);
    via_connection!(
        /// Runs `sql` once per parameter row in one pipelined batch, all or nothing
        /// (Python: `executemany`). Returns the total rows affected.
        execute_many(sql: &Q, rows: &[R]) -> u64,
        generics: ['p, Q: AsQuery + ?Sized, R: AsRef<[Param<'p>]> + Sync]);
    via_connection!(
        /// The first row, if any (Python: `fetch_one`).
        fetch_one(sql: &Q, params: &[Param<'_>]) -> Option<RowOf<P::Connection>>,
        generics: [Q: AsQuery + ?Sized]);
    via_connection!(
        /// All rows (Python: `fetch_all`).
        fetch_all(sql: &Q, params: &[Param<'_>]) -> Vec<RowOf<P::Connection>>,
        generics: [Q: AsQuery + ?Sized]);
    via_connection!(
        /// The first column of the first row; `None` when there is no row (Python:
        /// `fetch_value`). Use `Option<T>` as `T` for a nullable column.
        fetch_value(sql: &Q, params: &[Param<'_>]) -> Option<T>,
        generics: [T: for<'a> FromSql<'a>, Q: AsQuery + ?Sized]);
    via_connection!(
        /// Column `column` (0-based) of the first row (Python: `fetch_value(column=)`).
        fetch_value_at(sql: &Q, params: &[Param<'_>], column: usize) -> Option<T>,
        generics: [T: for<'a> FromSql<'a>, Q: AsQuery + ?Sized]);
    via_connection!(
        /// Runs an INSERT and returns the generated `id`, adding `RETURNING id` when the
        /// statement has no RETURNING clause (Python: `execute_and_return_id`).
        execute_and_return_id(sql: &Q, params: &[Param<'_>]) -> T,
        generics: [T: for<'a> FromSql<'a>, Q: AsQuery + ?Sized]);
    via_connection!(
        /// The first row mapped to `T` (Python: `fetch_as_model`).
        fetch_one_as(sql: &Q, params: &[Param<'_>]) -> Option<T>,
        generics: [T: FromRow, Q: AsQuery + ?Sized]);
    via_connection!(
        /// All rows mapped to `T` (Python: `fetch_all_as_model`).
        fetch_all_as(sql: &Q, params: &[Param<'_>]) -> Vec<T>,
        generics: [T: FromRow, Q: AsQuery + ?Sized]);
    via_connection!(
        /// The first row as a JSON object (Python: `dict(await fetch_one(..))`; feature
        /// `serde_json`).
        #[cfg(feature = "serde_json")]
        fetch_one_json(sql: &Q, params: &[Param<'_>]) -> Option<serde_json::Value>,
        generics: [Q: AsQuery + ?Sized]);
    via_connection!(
        /// All rows as JSON objects (Python: `[dict(r) for r in await fetch_all(..)]`;
        /// feature `serde_json`).
        #[cfg(feature = "serde_json")]
        fetch_all_json(sql: &Q, params: &[Param<'_>]) -> Vec<serde_json::Value>,
        generics: [Q: AsQuery + ?Sized]);
    via_connection!(
        /// Whether a table (or view) exists: `"users"` in this view's schema (or the
        /// `search_path` without one), or `"schema.users"` (Python: `table_exists`).
        table_exists(table: &str) -> bool);
    via_connection!(
        /// Bulk insert with binary COPY (Python: `copy_records_to_table`). `table` may be
        /// `"t"` (this view's schema) or `"schema.t"`; empty `columns` means all columns in
        /// table order. Returns the rows copied.
        copy_records_to_table(table: &str, columns: &[&str], rows: &[R]) -> u64,
        generics: ['p, R: AsRef<[Param<'p>]> + Sync]);
}
