//! What every query handle shares: the clock, the observer hook, query text ([`AsQuery`](crate::AsQuery),
//! [`PreparedQuery`](crate::PreparedQuery)) and the context that renders, times and reports each query.

use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::error::{truncate_sql, QueryErrorKind, MAX_DISPLAYED_SQL};
use crate::template::{has_placeholders, TemplateCache};
use crate::{Config, Error, Param, QueryError, QueryParams, Result};

/// A source of monotonic time. The core reads no clock of its own: [`Database`](crate::Database) takes one
/// ([`SystemClock`](crate::SystemClock) by default; see [`Database::with_clock`](crate::Database::with_clock)).
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

/// What one query did, as reported to a [`QueryObserver`](crate::QueryObserver).
#[derive(Debug)]
#[non_exhaustive]
pub struct QueryEvent<'a> {
    /// The operation (`"execute"`, `"fetch_all"`, ...).
    pub operation: &'static str,
    /// The SQL sent to the server (rendered).
    pub sql: &'a str,
    /// The schema of the [`Database`](crate::Database) view that ran it.
    pub schema: Option<&'a str>,
    /// How long it took, including waiting for the server.
    pub duration: Duration,
    /// Rows returned or affected, when it succeeded.
    pub rows: Option<u64>,
    /// The error, when it failed.
    pub error: Option<&'a Error>,
    /// True when it ran through the read replica view ([`Database::replica`](crate::Database::replica)).
    pub replica: bool,
}

/// Receives a [`QueryEvent`](crate::QueryEvent) after every query of a [`Database`](crate::Database) (and its views, connections and
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
    /// A rendering held by the template cache or a [`PreparedQuery`](crate::PreparedQuery).
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

/// Query text accepted by the query methods: `&str`, `String` or a [`PreparedQuery`](crate::PreparedQuery).
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
    pub(super) name: Option<Arc<str>>,
    pub(super) raw: Arc<str>,
    pub(super) rendered: Arc<str>,
    pub(super) schema: Option<Arc<str>>,
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
pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) templates: TemplateCache,
    pub(super) prepared: RwLock<HashMap<String, Arc<str>>>,
    pub(super) observers: RwLock<Vec<Arc<dyn QueryObserver>>>,
    pub(super) has_observers: AtomicBool,
    pub(super) clock: Arc<dyn Clock>,
    /// The pool's counters, for the pool gauges.
    #[cfg(feature = "metrics")]
    pub(super) pool_stats: Arc<dyn Fn() -> crate::PoolStats + Send + Sync>,
}

/// What a query handle needs to render, time and report a query.
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) schema: Option<Arc<str>>,
    pub(super) timeout: Option<Duration>,
    pub(super) shared: Arc<Shared>,
    /// Set on the read replica view ([`Database::replica`](crate::Database::replica)).
    pub(super) replica: Option<Arc<ReplicaCtx>>,
}

/// What the read replica view has of its own: its pool's counters, for the pool gauges.
pub(super) struct ReplicaCtx {
    #[cfg(feature = "metrics")]
    pub(super) pool_stats: Arc<dyn Fn() -> crate::PoolStats + Send + Sync>,
}

/// Appended to the message of a write refused (SQLSTATE 25006) on the read replica view.
pub(super) const REPLICA_WRITE_REFUSED: &str = "this is the read replica view \
     (Database::replica()), whose servers are read-only standbys: run writes through the \
     primary Database it was made from";

impl Ctx {
    pub(super) fn render<'q, Q: AsQuery + ?Sized>(&self, sql: &'q Q) -> Result<RenderedSql<'q>> {
        sql.render(self.schema.as_deref(), &self.shared.templates)
    }

    /// The counters of this view's pool (the replica pool on the replica view).
    #[cfg(feature = "metrics")]
    pub(super) fn pool_stats(&self) -> crate::PoolStats {
        match &self.replica {
            Some(r) => (r.pool_stats)(),
            None => (self.shared.pool_stats)(),
        }
    }

    pub(super) fn observed(&self) -> bool {
        self.shared.has_observers.load(Ordering::Relaxed)
    }

    /// Reports a finished query to tracing and observers, and adds opted-in parameters to errors.
    pub(super) fn finish<T>(
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
        let result = match result {
            Err(Error::Query(mut q))
                if self.replica.is_some()
                    && q.sqlstate.as_deref()
                        == Some(crate::SqlState::READ_ONLY_SQL_TRANSACTION.code()) =>
            {
                q.message = format!("{}; {REPLICA_WRITE_REFUSED}", q.message);
                Err(Error::Query(q))
            }
            other => other,
        };
        let row_count = result.as_ref().ok().and_then(rows);
        super::telemetry::record_outcome(
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
            super::metrics::query(
                self,
                operation,
                duration.unwrap_or_default(),
                result.as_ref().err(),
            );
            super::metrics::pool_gauges(self, self.pool_stats());
        }
        if self.observed() {
            let event = QueryEvent {
                operation,
                sql,
                schema: self.schema.as_deref(),
                duration: duration.unwrap_or_default(),
                rows: row_count,
                error: result.as_ref().err(),
                replica: self.replica.is_some(),
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
pub(super) struct Run<'a> {
    pub(super) span: tracing::Span,
    pub(super) operation: &'static str,
    pub(super) sql: &'a str,
    pub(super) started: Option<Instant>,
}

impl Run<'_> {
    /// Awaits `fut` inside this query's span; with the span disabled (no subscriber wants
    /// it) the future is awaited as it is, without the `Instrumented` wrapper's enter and
    /// exit on every poll.
    pub(super) async fn in_span<F: std::future::Future>(&self, fut: F) -> F::Output {
        if self.span.is_disabled() {
            fut.await
        } else {
            tracing::Instrument::instrument(fut, self.span.clone()).await
        }
    }
}

pub(super) fn debug_params(params: &[Param<'_>]) -> Vec<String> {
    params.iter().map(|p| format!("{p:?}")).collect()
}

pub(super) fn client_error(message: impl Into<String>, sql: &str) -> Error {
    QueryError::new(QueryErrorKind::Client, message, sql).into()
}
