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

use std::collections::HashMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use postgres_types::FromSql;
use tracing::Instrument;

use crate::error::{truncate_sql, QueryErrorKind, MAX_DISPLAYED_SQL};
use crate::ident::{parse_qualified_name, quote_identifier, validate_identifier};
use crate::template::{has_placeholders, TemplateCache};
#[cfg(feature = "metrics")]
mod metrics;
mod stream;
mod telemetry;

use crate::{
    Config, Connection, Error, FromRow, Param, Pool, PoolStats, QueryError, QueryParams, Result,
    Row,
};

/// A source of monotonic time. The core reads no clock of its own: [`Database`] takes one
/// ([`SystemClock`] by default; see [`Database::with_clock`]).
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The standard monotonic clock ([`Instant::now`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// What one query did, as reported to a [`QueryObserver`].
#[derive(Debug)]
#[non_exhaustive]
pub struct QueryEvent<'a> {
    /// The operation (`"execute"`, `"fetch_all"`, ...).
    pub operation: &'static str,
    /// The SQL sent to the server (rendered).
    pub sql: &'a str,
    /// The schema of the [`Database`] view that ran it.
    pub schema: Option<&'a str>,
    /// How long it took, including waiting for the server.
    pub duration: Duration,
    /// Rows returned or affected, when it succeeded.
    pub rows: Option<u64>,
    /// The error, when it failed.
    pub error: Option<&'a Error>,
}

/// Receives a [`QueryEvent`] after every query of a [`Database`] (and its views, connections and
/// transactions). This is how monitoring is layered around the query path.
pub trait QueryObserver: Send + Sync + 'static {
    /// Called once per query, after it finished. Must be fast and must not block.
    fn on_query(&self, event: &QueryEvent<'_>);
}

/// SQL ready to send: borrowed when it had no placeholders, shared when it came from the
/// template cache.
#[derive(Debug, Clone)]
pub enum RenderedSql<'q> {
    /// The caller's text, unchanged (it had no placeholders).
    Borrowed(&'q str),
    /// A rendering held by the template cache or a [`PreparedQuery`].
    Shared(Arc<str>),
}

impl Deref for RenderedSql<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            RenderedSql::Borrowed(s) => s,
            RenderedSql::Shared(s) => s,
        }
    }
}

/// Query text accepted by the query methods: `&str`, `String` or a [`PreparedQuery`].
pub trait AsQuery: Sync {
    /// Renders this query for `schema`, using `cache`.
    fn render<'q>(&'q self, schema: Option<&str>, cache: &TemplateCache)
        -> Result<RenderedSql<'q>>;
}

impl AsQuery for str {
    fn render<'q>(
        &'q self,
        schema: Option<&str>,
        cache: &TemplateCache,
    ) -> Result<RenderedSql<'q>> {
        if has_placeholders(self) {
            Ok(RenderedSql::Shared(cache.render(self, schema)?))
        } else {
            Ok(RenderedSql::Borrowed(self))
        }
    }
}

impl AsQuery for String {
    fn render<'q>(
        &'q self,
        schema: Option<&str>,
        cache: &TemplateCache,
    ) -> Result<RenderedSql<'q>> {
        self.as_str().render(schema, cache)
    }
}

impl<T: AsQuery + ?Sized> AsQuery for &T {
    fn render<'q>(
        &'q self,
        schema: Option<&str>,
        cache: &TemplateCache,
    ) -> Result<RenderedSql<'q>> {
        (**self).render(schema, cache)
    }
}

/// A query rendered once (Python: `prepare_query`, `add_prepared_statement`).
///
/// Pass it to any query method instead of a string: no template work is done again, and the
/// connection's statement cache keeps it prepared on the server.
#[derive(Clone)]
pub struct PreparedQuery {
    name: Option<Arc<str>>,
    raw: Arc<str>,
    rendered: Arc<str>,
    schema: Option<Arc<str>>,
}

impl PreparedQuery {
    /// The rendered SQL.
    pub fn sql(&self) -> &str {
        &self.rendered
    }

    /// The name it was registered under, for named statements.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl fmt::Debug for PreparedQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedQuery")
            .field("name", &self.name)
            .field("sql", &truncate_sql(&self.rendered, MAX_DISPLAYED_SQL))
            .finish()
    }
}

impl AsQuery for PreparedQuery {
    fn render<'q>(
        &'q self,
        schema: Option<&str>,
        cache: &TemplateCache,
    ) -> Result<RenderedSql<'q>> {
        if self.schema.as_deref() == schema {
            Ok(RenderedSql::Shared(self.rendered.clone()))
        } else {
            // Used through a view with another schema: render for that schema.
            Ok(RenderedSql::Shared(cache.render(&self.raw, schema)?))
        }
    }
}

/// State shared by a database and all its views, connections and transactions.
struct Shared {
    config: Config,
    templates: TemplateCache,
    prepared: RwLock<HashMap<String, Arc<str>>>,
    observers: RwLock<Vec<Arc<dyn QueryObserver>>>,
    has_observers: AtomicBool,
    clock: Arc<dyn Clock>,
    /// The pool's counters, for the pool gauges.
    #[cfg(feature = "metrics")]
    pool_stats: Arc<dyn Fn() -> PoolStats + Send + Sync>,
}

/// What a query handle needs to render, time and report a query.
#[derive(Clone)]
struct Ctx {
    schema: Option<Arc<str>>,
    timeout: Option<Duration>,
    shared: Arc<Shared>,
}

impl Ctx {
    fn render<'q, Q: AsQuery + ?Sized>(&self, sql: &'q Q) -> Result<RenderedSql<'q>> {
        sql.render(self.schema.as_deref(), &self.shared.templates)
    }

    fn observed(&self) -> bool {
        self.shared.has_observers.load(Ordering::Relaxed)
    }

    /// Reports a finished query to tracing and observers, and adds opted-in parameters to errors.
    fn finish<T>(
        &self,
        run: &Run<'_>,
        result: Result<T>,
        rows: impl FnOnce(&T) -> Option<u64>,
        params: &dyn Fn(Option<usize>) -> Vec<String>,
    ) -> Result<T> {
        let Run {
            span,
            operation,
            sql,
            started,
        } = run;
        let (operation, sql) = (*operation, *sql);
        let duration = started.map(|s| self.shared.clock.now().saturating_duration_since(s));
        let result = match result {
            Err(Error::Query(mut q)) if self.shared.config.log_parameters => {
                if matches!(q.params, QueryParams::Masked(_) | QueryParams::None) {
                    let shown = params(q.row);
                    if !shown.is_empty() {
                        q.params = QueryParams::Shown(shown);
                    }
                }
                Err(Error::Query(q))
            }
            other => other,
        };
        let row_count = result.as_ref().ok().and_then(rows);
        telemetry::record_outcome(
            span,
            row_count,
            duration.map(|d| d.as_secs_f64() * 1000.0),
            result.as_ref().err(),
        );
        if !span.is_disabled() {
            let duration_ms = duration.map(|d| d.as_secs_f64() * 1000.0);
            span.in_scope(|| match &result {
                Ok(_) => tracing::debug!(target: "pgdbm", duration_ms, rows = row_count, "query finished"),
                Err(e) => tracing::debug!(target: "pgdbm", duration_ms, error = %e, "query failed"),
            });
        }
        #[cfg(feature = "metrics")]
        {
            metrics::query(
                self,
                operation,
                duration.unwrap_or_default(),
                result.as_ref().err(),
            );
            metrics::pool_gauges(self, (self.shared.pool_stats)());
        }
        if self.observed() {
            let event = QueryEvent {
                operation,
                sql,
                schema: self.schema.as_deref(),
                duration: duration.unwrap_or_default(),
                rows: row_count,
                error: result.as_ref().err(),
            };
            let observers = match self.shared.observers.read() {
                Ok(g) => g.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            for o in observers {
                o.on_query(&event);
            }
        }
        result
    }
}

/// One query in flight: its span, what it is, and when it started (when anyone is timing it).
struct Run<'a> {
    span: tracing::Span,
    operation: &'static str,
    sql: &'a str,
    started: Option<Instant>,
}

fn debug_params(params: &[Param<'_>]) -> Vec<String> {
    params.iter().map(|p| format!("{p:?}")).collect()
}

fn client_error(message: impl Into<String>, sql: &str) -> Error {
    QueryError::new(QueryErrorKind::Client, message, sql).into()
}

/// The row type of a connection type.
pub type RowOf<C> = <C as Connection>::Row;

/// The database manager (Python: `AsyncDatabaseManager`), generic over the [`Pool`] backend.
///
/// Cloning is cheap and shares the pool. [`with_schema`](Database::with_schema) makes a view on
/// the same pool that renders templates for another schema; views never change each other's
/// behaviour (templates are rendered to schema-qualified names, nothing relies on a
/// per-connection `search_path`).
pub struct Database<P: Pool> {
    pool: P,
    ctx: Ctx,
}

impl<P: Pool> Clone for Database<P> {
    fn clone(&self) -> Self {
        Database {
            pool: self.pool.clone(),
            ctx: self.ctx.clone(),
        }
    }
}

impl<P: Pool> fmt::Debug for Database<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("schema", &self.ctx.schema)
            .field("timeout", &self.ctx.timeout)
            .field("pool", &self.pool.stats())
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
    /// Validates `config`, opens a pool and returns the manager (Python: `connect()`).
    pub async fn connect(config: Config) -> Result<Self> {
        // `Pool::connect` validates the config (its contract), before any I/O.
        let pool = P::connect(&config).await?;
        Self::from_pool(pool, config)
    }

    /// Opens a pool meant to be shared by several managers (Python: `create_shared_pool`).
    /// Wrap it with [`from_pool`](Database::from_pool), then make per-schema views.
    pub async fn create_shared_pool(config: &Config) -> Result<P> {
        P::connect(config).await
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
            },
        })
    }

    /// A view on the same pool whose templates render for `schema` (Python:
    /// `AsyncDatabaseManager(pool=pool, schema="auth")`). Errors if `schema` is not a valid
    /// identifier.
    pub fn with_schema(&self, schema: &str) -> Result<Self> {
        validate_identifier(schema)?;
        let mut view = self.clone();
        view.ctx.schema = Some(Arc::from(schema));
        Ok(view)
    }

    /// A view on the same pool without a schema (templates render unqualified names).
    pub fn without_schema(&self) -> Self {
        let mut view = self.clone();
        view.ctx.schema = None;
        view
    }

    /// A view whose queries use `timeout` instead of the configured `command_timeout`
    /// (`None`: no client-side timeout). Python's per-call `timeout=` argument.
    pub fn with_timeout(&self, timeout: Option<Duration>) -> Self {
        let mut view = self.clone();
        view.ctx.timeout = timeout;
        view
    }

    /// Replaces the clock used to time queries (for deterministic tests or another runtime).
    /// Call it before making views: views made from the returned manager share its clock;
    /// views made earlier keep the old one.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        let Database { pool, mut ctx } = self;
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
        Database { pool, ctx }
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

    /// Closes the pool (Python: `disconnect()`); every view of it is closed too.
    pub async fn close(&self) {
        self.pool.close().await;
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

/// A pending action that must run before the next statement on a connection (the async half
/// of dropping a [`Savepoint`] without committing it).
#[derive(Debug)]
enum Pending {
    RollbackTo(String),
    Rollback,
}

/// A checked-out connection that renders templates (Python: the connection of `acquire()`).
///
/// Goes back to the pool when dropped; if it is left inside a transaction, the pool resets it
/// before anyone else gets it.
pub struct DbConnection<C: Connection> {
    conn: C,
    ctx: Ctx,
    pending: Vec<Pending>,
    depth: u32,
}

impl<C: Connection> fmt::Debug for DbConnection<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConnection")
            .field("schema", &self.ctx.schema)
            .field("in_transaction", &self.conn.in_transaction())
            .field("savepoint_depth", &self.depth)
            .finish()
    }
}

impl<C: Connection> DbConnection<C> {
    fn new(conn: C, ctx: Ctx) -> Self {
        DbConnection {
            conn,
            ctx,
            pending: Vec::new(),
            depth: 0,
        }
    }

    /// The driver connection underneath (no template rendering, no observers).
    pub fn inner(&mut self) -> &mut C {
        &mut self.conn
    }

    /// Gives back the driver connection.
    pub fn into_inner(self) -> C {
        self.conn
    }

    /// The schema templates render for.
    pub fn schema(&self) -> Option<&str> {
        self.ctx.schema.as_deref()
    }

    /// True inside a transaction.
    pub fn in_transaction(&self) -> bool {
        self.conn.in_transaction()
    }

    /// Renders `sql` for this connection's schema.
    pub fn render(&self, sql: &str) -> Result<String> {
        Ok(self.ctx.render(sql)?.to_string())
    }

    async fn flush_pending(&mut self) -> Result<()> {
        while !self.pending.is_empty() {
            let action = self.pending.remove(0);
            let result = match &action {
                Pending::RollbackTo(name) => {
                    self.conn
                        .batch_execute(
                            &format!("ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"),
                            self.ctx.timeout,
                        )
                        .await
                }
                Pending::Rollback => self.conn.rollback().await,
            };
            if let Err(e) = result {
                self.pending.clear();
                self.conn.discard();
                return Err(Error::Transaction {
                    message: format!(
                        "could not roll back a dropped savepoint/transaction ({action:?}); the connection was discarded"
                    ),
                    source: Some(Box::new(e)),
                });
            }
        }
        Ok(())
    }

    fn run<'a>(&self, operation: &'static str, sql: &'a str) -> Run<'a> {
        let span = telemetry::query_span(&self.ctx, operation, sql);
        let started = (cfg!(feature = "metrics") || !span.is_disabled() || self.ctx.observed())
            .then(|| self.ctx.shared.clock.now());
        Run {
            span,
            operation,
            sql,
            started,
        }
    }

    /// Runs a statement; returns rows affected.
    pub async fn execute<Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> Result<u64> {
        self.flush_pending().await?;
        let sql = self.ctx.render(sql)?;
        let run = self.run("execute", &sql);
        let result = self
            .conn
            .execute(&sql, params, self.ctx.timeout)
            .instrument(run.span.clone())
            .await;
        self.ctx
            .finish(&run, result, |n| Some(*n), &|_| debug_params(params))
    }

    /// Runs one or more statements with the simple protocol, no parameters.
    pub async fn batch_execute<Q: AsQuery + ?Sized>(&mut self, sql: &Q) -> Result<()> {
        self.flush_pending().await?;
        let sql = self.ctx.render(sql)?;
        let run = self.run("batch_execute", &sql);
        let result = self
            .conn
            .batch_execute(&sql, self.ctx.timeout)
            .instrument(run.span.clone())
            .await;
        self.ctx.finish(&run, result, |_| None, &|_| Vec::new())
    }

    /// Runs `sql` once per parameter row in one pipelined batch, all or nothing; the error names
    /// the failing row. Returns the total rows affected.
    pub async fn execute_many<'p, Q: AsQuery + ?Sized, R: AsRef<[Param<'p>]> + Sync>(
        &mut self,
        sql: &Q,
        rows: &[R],
    ) -> Result<u64> {
        self.flush_pending().await?;
        let sql = self.ctx.render(sql)?;
        let run = self.run("execute_many", &sql);
        let slices: Vec<&[Param<'_>]> = rows.iter().map(|r| r.as_ref()).collect();
        let result = self
            .conn
            .execute_many(&sql, &slices, self.ctx.timeout)
            .instrument(run.span.clone())
            .await;
        self.ctx.finish(&run, result, |n| Some(*n), &|row| {
            row.and_then(|i| slices.get(i))
                .map(|r| debug_params(r))
                .unwrap_or_default()
        })
    }

    /// The first row, if any.
    pub async fn fetch_one<Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> Result<Option<C::Row>> {
        self.flush_pending().await?;
        let sql = self.ctx.render(sql)?;
        let run = self.run("fetch_one", &sql);
        let result = self
            .conn
            .query_opt(&sql, params, self.ctx.timeout)
            .instrument(run.span.clone())
            .await;
        self.ctx
            .finish(&run, result, |r| Some(u64::from(r.is_some())), &|_| {
                debug_params(params)
            })
    }

    /// All rows.
    pub async fn fetch_all<Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> Result<Vec<C::Row>> {
        self.flush_pending().await?;
        let sql = self.ctx.render(sql)?;
        let run = self.run("fetch_all", &sql);
        let result = self
            .conn
            .query(&sql, params, self.ctx.timeout)
            .instrument(run.span.clone())
            .await;
        self.ctx
            .finish(&run, result, |r| Some(r.len() as u64), &|_| {
                debug_params(params)
            })
    }

    /// The first column of the first row; `None` when there is no row.
    pub async fn fetch_value<T: for<'a> FromSql<'a>, Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> Result<Option<T>> {
        self.fetch_value_at(sql, params, 0).await
    }

    /// Column `column` (0-based) of the first row; `None` when there is no row.
    pub async fn fetch_value_at<T: for<'a> FromSql<'a>, Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
        column: usize,
    ) -> Result<Option<T>> {
        match self.fetch_one(sql, params).await? {
            None => Ok(None),
            Some(row) => row.try_get(&column).map(Some),
        }
    }

    /// Runs an INSERT and returns the generated `id`, adding `RETURNING id` when the statement
    /// has no RETURNING clause.
    pub async fn execute_and_return_id<T: for<'a> FromSql<'a>, Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> Result<T> {
        let rendered = self.ctx.render(sql)?;
        let text: &str = &rendered;
        let owned;
        let final_sql: &str = if crate::sql::contains_keyword(text, "RETURNING") {
            text
        } else {
            let trimmed = text.trim_end().trim_end_matches(';').trim_end();
            owned = format!("{trimmed} RETURNING id");
            &owned
        };
        let row = self.fetch_one(final_sql, params).await?.ok_or_else(|| {
            client_error(
                "the statement returned no row, so there is no id; check that it inserts a row",
                final_sql,
            )
        })?;
        row.try_get(&0usize)
    }

    /// The first row mapped to `T`.
    pub async fn fetch_one_as<T: FromRow, Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> Result<Option<T>> {
        match self.fetch_one(sql, params).await? {
            None => Ok(None),
            Some(row) => T::from_row(&row).map(Some),
        }
    }

    /// All rows mapped to `T`.
    pub async fn fetch_all_as<T: FromRow, Q: AsQuery + ?Sized>(
        &mut self,
        sql: &Q,
        params: &[Param<'_>],
    ) -> Result<Vec<T>> {
        self.fetch_all(sql, params)
            .await?
            .iter()
            .map(T::from_row)
            .collect()
    }

    /// The quoted, qualified name of `table` for this connection's schema.
    fn qualified_table(&self, table: &str) -> Result<String> {
        let (schema, name) = parse_qualified_name(table)?;
        let name = quote_identifier(&name)?;
        Ok(match schema.as_deref().or(self.ctx.schema.as_deref()) {
            Some(s) => format!("{}.{name}", quote_identifier(s)?),
            None => name,
        })
    }

    /// Whether a table (or view) exists: `"users"` in this connection's schema (or the
    /// `search_path` without one), or `"schema.users"`.
    pub async fn table_exists(&mut self, table: &str) -> Result<bool> {
        let qualified = self.qualified_table(table)?;
        let exists: Option<bool> = self
            .fetch_value(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class \
                 WHERE oid = pg_catalog.to_regclass($1) AND relkind IN ('r', 'p', 'v', 'm', 'f'))",
                &[&qualified],
            )
            .await?;
        Ok(exists.unwrap_or(false))
    }

    /// Bulk insert with binary COPY. `table` may be `"t"` (this connection's schema) or
    /// `"schema.t"`; empty `columns` means all columns in table order. Returns the rows copied.
    pub async fn copy_records_to_table<'p, R: AsRef<[Param<'p>]> + Sync>(
        &mut self,
        table: &str,
        columns: &[&str],
        rows: &[R],
    ) -> Result<u64> {
        self.flush_pending().await?;
        let qualified = self.qualified_table(table)?;
        let all_columns: Vec<String>;
        let columns: Vec<&str> = if columns.is_empty() {
            let rows = self
                .fetch_all(
                    "SELECT attname::text FROM pg_catalog.pg_attribute \
                     WHERE attrelid = pg_catalog.to_regclass($1) AND attnum > 0 AND NOT attisdropped \
                     ORDER BY attnum",
                    &[&qualified],
                )
                .await?;
            all_columns = rows
                .iter()
                .map(|r| r.try_get::<_, String>(&0usize))
                .collect::<Result<_>>()?;
            if all_columns.is_empty() {
                return Err(client_error(
                    format!("table {qualified} does not exist or has no columns"),
                    "",
                ));
            }
            all_columns.iter().map(String::as_str).collect()
        } else {
            for c in columns {
                validate_identifier(c)?;
            }
            columns.to_vec()
        };
        let slices: Vec<&[Param<'_>]> = rows.iter().map(|r| r.as_ref()).collect();
        let description = format!(
            "COPY {qualified} ({}) FROM STDIN BINARY",
            columns.join(", ")
        );
        let run = self.run("copy_records_to_table", &description);
        let result = self
            .conn
            .copy_in(&qualified, &columns, &slices, self.ctx.timeout)
            .instrument(run.span.clone())
            .await;
        self.ctx.finish(&run, result, |n| Some(*n), &|_| Vec::new())
    }

    /// Starts a transaction on this connection, consuming it.
    pub async fn begin(mut self) -> Result<Transaction<C>> {
        self.flush_pending().await?;
        if self.conn.in_transaction() {
            return Err(Error::transaction(
                "this connection is already inside a transaction; use savepoint() to nest",
            ));
        }
        self.conn.begin().await.map_err(|e| Error::Transaction {
            message: "could not start a transaction".to_string(),
            source: Some(Box::new(e)),
        })?;
        Ok(Transaction { conn: self })
    }

    /// A nested transaction: a `SAVEPOINT` when this connection is inside a transaction, else a
    /// new transaction. Commit or roll it back explicitly; dropping it rolls it back (before the
    /// next statement on this connection).
    pub async fn savepoint(&mut self) -> Result<Savepoint<'_, C>> {
        self.flush_pending().await?;
        let name = if self.conn.in_transaction() {
            let name = format!("pgdbm_sp_{}", self.depth + 1);
            self.conn
                .batch_execute(&format!("SAVEPOINT {name}"), self.ctx.timeout)
                .await
                .map_err(|e| Error::Transaction {
                    message: format!("could not create savepoint {name}"),
                    source: Some(Box::new(e)),
                })?;
            Some(name)
        } else {
            self.conn.begin().await.map_err(|e| Error::Transaction {
                message: "could not start a transaction".to_string(),
                source: Some(Box::new(e)),
            })?;
            None
        };
        self.depth += 1;
        Ok(Savepoint {
            conn: self,
            name,
            finished: false,
        })
    }
}

/// The error of a failed `COMMIT`. When the server refused it, the transaction was rolled back
/// ([`Error::Transaction`]). When no answer came ([`QueryErrorKind::CommitOutcomeUnknown`],
/// the connection failed or timed out), the transaction may have committed: that error is
/// returned as it is, so callers can tell the two apart.
fn commit_error(e: Error) -> Error {
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
/// Dereferences to [`DbConnection`], so all query methods render templates as usual. Call
/// [`commit`](Transaction::commit); dropping it without commit rolls it back: the connection goes
/// back to the pool inside the transaction and the pool's release path rolls it back at once
/// (its locks go with it), before anyone else can get it.
pub struct Transaction<C: Connection> {
    conn: DbConnection<C>,
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
/// ([`DbConnection::savepoint`]). Dereferences to [`DbConnection`].
///
/// Dropping it without [`commit`](Savepoint::commit) rolls it back before the next statement on
/// the connection.
pub struct Savepoint<'c, C: Connection> {
    conn: &'c mut DbConnection<C>,
    /// `None` when this savepoint is the outermost transaction of an acquired connection.
    name: Option<String>,
    finished: bool,
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
