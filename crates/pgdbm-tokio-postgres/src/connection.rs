//! [`PgConnection`]: one physical tokio-postgres connection and the state pgdbm keeps about it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pgdbm_core::error::truncate_sql;
use pgdbm_core::{Connection, Error, Param, QueryError, QueryErrorKind, Result};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::{Client, NoTls, Statement};
use tracing::Instrument;

use crate::cache::StatementCache;
use crate::connect::Target;
use crate::errors::{client_error, is_connection_error, query_error, server_error, QUERY_CANCELED};
use crate::row::PgRow;
use crate::sql::{tx_effect, TxEffect};
use crate::wire::{encode_bind, ArmGuard, Batch, Outcome, Rows, ServerError};

/// How long a timed-out statement may take to finish after its CancelRequest was sent before the
/// connection is given up as broken.
pub(crate) const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// Rows sent per pipelined chunk (one Sync, see [`crate::wire`]) by `execute_many`; bounds the
/// memory of the encoded rows held for a chunk. Within one call the chunks share the
/// `BEGIN`/`COMMIT` (or savepoint), so a multi-chunk batch stays all-or-nothing.
const EXECUTE_MANY_CHUNK: usize = 16384;

/// Longest SQL text (in characters) recorded in tracing spans.
const TRACED_SQL: usize = 200;

const EXECUTE_MANY_SAVEPOINT: &str = "pgdbm_execute_many";

type PgFuture<'a, T> =
    Pin<Box<dyn Future<Output = std::result::Result<T, tokio_postgres::Error>> + Send + 'a>>;

/// One physical PostgreSQL connection (a [`tokio_postgres::Client`] whose connection task runs on
/// tokio) plus the state pgdbm keeps about it: a bounded statement cache, transaction tracking,
/// usage counters and the TLS connector used to cancel timed-out statements.
///
/// Open one with [`PgConnection::connect`]; pools hand them out wrapped in
/// [`Pooled`](crate::Pooled). It implements [`pgdbm_core::Connection`].
///
/// ```no_run
/// # async fn demo() -> pgdbm_core::Result<()> {
/// use pgdbm_core::{Config, Connection};
/// use pgdbm_tokio_postgres::PgConnection;
///
/// let mut config = Config::default();
/// config.database = "app".into();
/// let mut conn = PgConnection::connect(&config).await?;
/// let n = conn.execute("UPDATE t SET x = $1", &[&1_i32], None).await?;
/// # let _ = n; Ok(()) }
/// ```
pub struct PgConnection {
    client: Client,
    /// The server this connection goes to, with its TLS setup: cancel requests open a new
    /// stream to it.
    target: Target,
    /// The wire shim's batch switch for `execute_many`.
    batch: Batch,
    cache: StatementCache,
    epoch: Option<(Arc<AtomicU64>, u64)>,
    created_at: Instant,
    last_used: Instant,
    query_count: u64,
    /// Inside a transaction opened by `begin()`.
    in_tx: bool,
    /// The user ran `BEGIN`/`START` through `execute`/`batch_execute`.
    maybe_tx: bool,
    /// A statement was cancelled or interrupted: reset before reuse.
    dirty: bool,
    /// Unusable: discard it.
    broken: bool,
    log_parameters: bool,
    /// `host:port/database`, for messages.
    endpoint: String,
}

impl std::fmt::Debug for PgConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnection")
            .field("endpoint", &self.endpoint)
            .field("tls", &self.target.has_tls())
            .field("cached_statements", &self.cache.len())
            .field("query_count", &self.query_count)
            .field("in_transaction", &(self.in_tx || self.maybe_tx))
            .field("needs_reset", &self.needs_reset())
            .field("broken", &self.is_broken())
            .finish_non_exhaustive()
    }
}

/// What happened to a statement run under a deadline.
enum Bounded<T> {
    /// It finished (successfully or not) before the deadline.
    Done(std::result::Result<T, tokio_postgres::Error>),
    /// The deadline passed; a CancelRequest was sent. `finished` holds the statement's own
    /// outcome when it completed within the grace period (the connection is idle again), `None`
    /// when it did not (the connection must be discarded).
    TimedOut {
        finished: Option<std::result::Result<T, tokio_postgres::Error>>,
    },
}

/// A statement ready to run: prepared (cached or not), or unnamed (no parameters, cache off).
enum Stmt {
    Prepared(Statement),
    Unnamed,
}

/// What a single statement returns.
#[derive(Clone, Copy)]
enum Op {
    Execute,
    Query,
    QueryOpt,
}

enum Output {
    Count(u64),
    Rows(Vec<tokio_postgres::Row>),
}

fn deadline_of(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + t)
}

fn is_cached_plan_error(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        db.code().code() == "0A000"
            && db
                .message()
                .contains("cached plan must not change result type")
    })
}

impl PgConnection {
    pub(crate) fn from_parts(
        client: Client,
        target: Target,
        batch: Batch,
        statement_cache_size: usize,
        log_parameters: bool,
        endpoint: String,
    ) -> Self {
        let now = Instant::now();
        PgConnection {
            client,
            target,
            batch,
            cache: StatementCache::new(statement_cache_size),
            epoch: None,
            created_at: now,
            last_used: now,
            query_count: 0,
            in_tx: false,
            maybe_tx: false,
            dirty: false,
            broken: false,
            log_parameters,
            endpoint,
        }
    }

    /// When this physical connection was opened.
    pub fn created_at(&self) -> Instant {
        self.created_at
    }

    /// When this connection last finished a statement (or was opened).
    pub fn last_used(&self) -> Instant {
        self.last_used
    }

    /// Statements run on this connection so far (each row of an `execute_many` counts as one).
    pub fn query_count(&self) -> u64 {
        self.query_count
    }

    /// True if the connection may be inside a transaction or may have a cancelled or unfinished
    /// statement: it was returned inside a transaction opened by `begin()`, its user ran
    /// `BEGIN`/`START TRANSACTION` through `execute`/`batch_execute` without a later
    /// `COMMIT`/`ROLLBACK`/`END`/`ABORT`, or a statement timed out or was interrupted.
    /// [`reset`](Self::reset) brings it back to a clean idle state.
    pub fn needs_reset(&self) -> bool {
        self.in_tx || self.maybe_tx || self.dirty
    }

    /// Brings the connection back to a clean idle state: a `ROLLBACK` (simple protocol) when
    /// [`needs_reset`](Self::needs_reset), bounded by `timeout`. An error means the connection
    /// must be discarded. Session settings (`SET`) are kept: they are part of the connection's
    /// setup (`server_settings`, `init_commands`).
    pub async fn reset(&mut self, timeout: Duration) -> Result<()> {
        if self.is_broken() {
            return Err(self.broken_error("reset"));
        }
        if !self.needs_reset() {
            return Ok(());
        }
        match tokio::time::timeout(timeout, self.client.batch_execute("ROLLBACK")).await {
            Ok(Ok(())) => {
                self.in_tx = false;
                self.maybe_tx = false;
                self.dirty = false;
                Ok(())
            }
            Ok(Err(e)) => {
                self.broken = true;
                Err(query_error(e, "ROLLBACK", 0))
            }
            Err(_) => {
                self.broken = true;
                Err(client_error(
                    QueryErrorKind::Timeout,
                    format!(
                        "resetting the connection (ROLLBACK) took longer than {timeout:?}; the connection is discarded"
                    ),
                    "ROLLBACK",
                ))
            }
        }
    }

    /// Liveness check: an empty simple query, bounded by `timeout`. An error means the
    /// connection must be discarded (it is marked broken).
    pub async fn check_alive(&mut self, timeout: Duration) -> Result<()> {
        if self.is_broken() {
            return Err(self.broken_error("liveness check"));
        }
        match tokio::time::timeout(timeout, self.client.simple_query("")).await {
            Ok(Ok(_)) => {
                self.last_used = Instant::now();
                Ok(())
            }
            Ok(Err(e)) => {
                self.broken = true;
                Err(query_error(e, "", 0))
            }
            Err(_) => {
                self.broken = true;
                Err(client_error(
                    QueryErrorKind::Timeout,
                    format!(
                        "the liveness check got no answer within {timeout:?}; the connection is discarded"
                    ),
                    "",
                ))
            }
        }
    }

    /// True when the connection is closed (the server or network ended it, or an I/O error or an
    /// unfinished cancelled statement left it unusable), an `execute_many` was cancelled (its
    /// future dropped) before its closing statement was sent, or
    /// [`discard`](Connection::discard) was called. A broken connection is never reused.
    pub fn is_broken(&self) -> bool {
        self.broken || self.client.is_closed() || self.batch.is_poisoned()
    }

    /// Shares the pool's statement-cache epoch: `Pool::clear_statement_caches` increments it,
    /// and before its next statement this connection clears its cache when the epoch differs
    /// from the one it last saw.
    pub fn set_cache_epoch(&mut self, epoch: Arc<AtomicU64>) {
        let seen = epoch.load(Ordering::Acquire);
        self.epoch = Some((epoch, seen));
    }

    /// The underlying tokio-postgres client: an escape hatch for what pgdbm does not wrap
    /// (LISTEN/NOTIFY, `copy_out`, custom types).
    ///
    /// Statements run through it bypass pgdbm's bookkeeping: its transaction tracking, statement
    /// cache, query counter and timeouts. Leave the connection idle and outside a transaction
    /// before returning it to a pool, or call [`discard`](Connection::discard).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Number of prepared statements currently cached.
    pub fn cached_statements(&self) -> usize {
        self.cache.len()
    }

    fn in_any_tx(&self) -> bool {
        self.in_tx || self.maybe_tx
    }

    fn broken_error(&self, what: &str) -> Error {
        client_error(
            QueryErrorKind::Connection,
            format!(
                "{what} on a closed connection to {}; the connection is discarded, use a new one",
                self.endpoint
            ),
            "",
        )
    }

    fn check_usable(&self, sql: &str) -> Result<()> {
        if self.is_broken() {
            Err(client_error(
                QueryErrorKind::Connection,
                format!(
                    "the connection to {} is closed; the connection is discarded, retry on a new one",
                    self.endpoint
                ),
                sql,
            ))
        } else {
            Ok(())
        }
    }

    /// Clears the statement cache when the pool's epoch moved.
    fn sync_epoch(&mut self) {
        if let Some((epoch, seen)) = &mut self.epoch {
            let now = epoch.load(Ordering::Acquire);
            if now != *seen {
                *seen = now;
                self.cache.clear();
            }
        }
    }

    fn span(&self, op: &'static str, sql: &str) -> tracing::Span {
        // Trace level: the manager (pgdbm-core's Database) owns the debug-level span of each
        // query; this one only adds wire-level detail for those who ask for `pgdbm::wire=trace`.
        tracing::trace_span!(
            target: "pgdbm::wire",
            "wire",
            op,
            sql = %truncate_sql(sql.trim(), TRACED_SQL),
            rows = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        )
    }

    fn record(&self, span: &tracing::Span, started: Instant, rows: Option<u64>, ok: bool) {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        span.record("duration_ms", ms);
        if let Some(r) = rows {
            span.record("rows", r);
        }
        span.in_scope(|| {
            if ok {
                tracing::trace!(target: "pgdbm::wire", duration_ms = ms, rows, "statement finished");
            } else {
                tracing::trace!(target: "pgdbm::wire", duration_ms = ms, "statement failed");
            }
        });
    }

    fn log_params(&self, span: &tracing::Span, params: &[Param<'_>]) {
        if self.log_parameters && !params.is_empty() {
            let shown: Vec<String> = params.iter().map(|p| format!("{p:?}")).collect();
            span.in_scope(|| tracing::debug!(target: "pgdbm", params = ?shown, "query parameters"));
        }
    }

    /// With `Config::log_parameters`, puts the parameters' `Debug` text into a query error
    /// (they are masked otherwise).
    fn show_params(&self, mut err: Error, params: &[Param<'_>]) -> Error {
        if self.log_parameters && !params.is_empty() {
            if let Error::Query(q) = &mut err {
                q.params = pgdbm_core::QueryParams::Shown(
                    params.iter().map(|p| format!("{p:?}")).collect(),
                );
            }
        }
        err
    }

    /// Runs `fut` (a request on this connection's client) until `deadline`; on expiry sends a
    /// CancelRequest and waits up to [`CANCEL_GRACE`] for the statement to end.
    async fn bounded<T>(
        &self,
        deadline: Option<Instant>,
        fut: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Bounded<T> {
        let Some(deadline) = deadline else {
            return Bounded::Done(fut.await);
        };
        let mut fut = std::pin::pin!(fut);
        match tokio::time::timeout_at(deadline.into(), &mut fut).await {
            Ok(r) => Bounded::Done(r),
            Err(_) => {
                let grace_end = tokio::time::Instant::now() + CANCEL_GRACE;
                let token = self.client.cancel_token();
                // The connection was opened with `connect_raw` (below the wire shim), so the
                // token knows no socket: open a fresh stream to the same server, TLS included
                // when the connection uses it, and send the CancelRequest over it.
                let cancel = async {
                    let stream = self.target.open().await.map_err(|e| e.to_string())?;
                    token
                        .cancel_query_raw(stream, NoTls)
                        .await
                        .map_err(|e| e.to_string())
                };
                match tokio::time::timeout_at(grace_end, cancel).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(target: "pgdbm", error = %e, "cancel request failed")
                    }
                    Err(_) => tracing::debug!(target: "pgdbm", "cancel request timed out"),
                }
                let finished = tokio::time::timeout_at(grace_end, &mut fut).await.ok();
                Bounded::TimedOut { finished }
            }
        }
    }

    /// Turns a [`Bounded`] outcome into a result, updating the connection's state.
    fn settle<T>(
        &mut self,
        outcome: Bounded<T>,
        sql: &str,
        n_params: usize,
        timeout: Option<Duration>,
    ) -> Result<T> {
        match outcome {
            Bounded::Done(Ok(v)) => Ok(v),
            Bounded::Done(Err(e)) => {
                if is_connection_error(&e) {
                    self.broken = true;
                }
                Err(query_error(e, sql, n_params))
            }
            Bounded::TimedOut { finished } => {
                self.dirty = true;
                let limit = timeout.unwrap_or_default();
                let detail = match finished {
                    // The statement completed just as the deadline passed: its outcome stands.
                    Some(Ok(v)) => return Ok(v),
                    Some(Err(e)) if e.code().map(|c| c.code()) != Some(QUERY_CANCELED) => {
                        if is_connection_error(&e) {
                            self.broken = true;
                        }
                        return Err(query_error(e, sql, n_params));
                    }
                    Some(Err(_)) => "the statement was cancelled on the server".to_string(),
                    None => {
                        self.broken = true;
                        format!(
                            "a cancel request was sent but the statement did not end within {CANCEL_GRACE:?}; the connection is discarded"
                        )
                    }
                };
                let mut q = QueryError::new(
                    QueryErrorKind::Timeout,
                    format!("statement exceeded its timeout of {limit:?}; {detail}"),
                    sql,
                )
                .with_params(crate::errors::params_for(n_params));
                q.sqlstate = Some(QUERY_CANCELED.to_string());
                Err(q.into())
            }
        }
    }

    /// The statement for `sql`: from the cache, or prepared (and cached when the cache is on).
    async fn statement(
        &mut self,
        sql: &str,
        n_params: usize,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
        allow_unnamed: bool,
    ) -> Result<Stmt> {
        if !self.cache.enabled() {
            if allow_unnamed && n_params == 0 {
                return Ok(Stmt::Unnamed);
            }
            let outcome = self.bounded(deadline, self.client.prepare(sql)).await;
            return self
                .settle(outcome, sql, n_params, timeout)
                .map(Stmt::Prepared);
        }
        self.sync_epoch();
        if let Some(stmt) = self.cache.get(sql) {
            return Ok(Stmt::Prepared(stmt));
        }
        let outcome = self.bounded(deadline, self.client.prepare(sql)).await;
        let stmt = self.settle(outcome, sql, n_params, timeout)?;
        self.cache.insert(sql, stmt.clone());
        Ok(Stmt::Prepared(stmt))
    }

    fn start<'a>(
        &'a self,
        stmt: &'a Stmt,
        sql: &'a str,
        params: &'a [Param<'a>],
        op: Op,
    ) -> PgFuture<'a, Output> {
        let client = &self.client;
        match (stmt, op) {
            (Stmt::Prepared(s), Op::Execute) => {
                Box::pin(async move { client.execute(s, params).await.map(Output::Count) })
            }
            (Stmt::Prepared(s), Op::Query) => {
                Box::pin(async move { client.query(s, params).await.map(Output::Rows) })
            }
            (Stmt::Prepared(s), Op::QueryOpt) => Box::pin(async move {
                let stream = client.query_raw(s, params.iter().copied()).await?;
                first_row(stream).await
            }),
            (Stmt::Unnamed, Op::Execute) => {
                Box::pin(async move { client.execute_typed(sql, &[]).await.map(Output::Count) })
            }
            (Stmt::Unnamed, Op::Query) => {
                Box::pin(async move { client.query_typed(sql, &[]).await.map(Output::Rows) })
            }
            (Stmt::Unnamed, Op::QueryOpt) => Box::pin(async move {
                let stream = client
                    .query_typed_raw(
                        sql,
                        std::iter::empty::<(
                            &(dyn postgres_types::ToSql + Sync),
                            postgres_types::Type,
                        )>(),
                    )
                    .await?;
                first_row(stream).await
            }),
        }
    }

    fn note_tx_effect(&mut self, sql: &str) {
        match tx_effect(sql) {
            TxEffect::Begin => self.maybe_tx = true,
            TxEffect::End => {
                self.maybe_tx = false;
                self.in_tx = false;
            }
            TxEffect::None => {}
        }
    }

    /// Runs one statement with the statement cache, the evict-and-retry-once rule for
    /// "cached plan must not change result type", timeouts and bookkeeping.
    async fn run(
        &mut self,
        op: Op,
        sql: &str,
        params: &[Param<'_>],
        timeout: Option<Duration>,
    ) -> Result<Output> {
        self.check_usable(sql)?;
        let deadline = deadline_of(timeout);
        let mut retried = false;
        loop {
            let stmt = self
                .statement(sql, params.len(), deadline, timeout, true)
                .await?;
            let outcome = self
                .bounded(deadline, self.start(&stmt, sql, params, op))
                .await;
            self.query_count += 1;
            if let Bounded::Done(Err(e)) = &outcome {
                if !retried && is_cached_plan_error(e) && !self.in_any_tx() {
                    self.cache.remove(sql);
                    retried = true;
                    continue;
                }
            }
            self.note_tx_effect(sql);
            let result = self.settle(outcome, sql, params.len(), timeout);
            if matches!(op, Op::Execute | Op::Query) {
                drop(stmt);
            }
            return result;
        }
    }

    async fn traced(
        &mut self,
        op: Op,
        name: &'static str,
        sql: &str,
        params: &[Param<'_>],
        timeout: Option<Duration>,
    ) -> Result<Output> {
        let span = self.span(name, sql);
        self.log_params(&span, params);
        let started = Instant::now();
        let result = self
            .run(op, sql, params, timeout)
            .instrument(span.clone())
            .await
            .map_err(|e| self.show_params(e, params));
        self.last_used = Instant::now();
        let rows = match &result {
            Ok(Output::Count(n)) => Some(*n),
            Ok(Output::Rows(r)) => Some(r.len() as u64),
            Err(_) => None,
        };
        self.record(&span, started, rows, result.is_ok());
        result
    }

    /// Runs a control statement (`BEGIN`, `COMMIT`...) with the simple protocol.
    async fn control(&mut self, sql: &str) -> Result<()> {
        self.check_usable(sql)?;
        let span = self.span("control", sql);
        let started = Instant::now();
        let result = self
            .client
            .batch_execute(sql)
            .instrument(span.clone())
            .await;
        self.query_count += 1;
        self.last_used = Instant::now();
        self.record(&span, started, None, result.is_ok());
        result.map_err(|e| {
            if is_connection_error(&e) {
                self.broken = true;
            }
            query_error(e, sql, 0)
        })
    }

    /// Encodes every row of `execute_many` before anything is sent: the parameter count must
    /// match and every value must serialize to its parameter type (what tokio-postgres checks
    /// when it builds a Bind). Rows `1..n` of each chunk are kept (the wire shim writes them);
    /// each chunk's row 0 is only checked (tokio-postgres encodes it again). The error names
    /// the first bad row, with the texts tokio-postgres would use.
    fn encode_rows(
        stmt: &Statement,
        rows: &[&[Param<'_>]],
    ) -> std::result::Result<Vec<Rows>, BadRow> {
        let types = stmt.params();
        let mut scratch = bytes::BytesMut::new();
        let mut chunks = Vec::with_capacity(rows.len().div_ceil(EXECUTE_MANY_CHUNK));
        for (ci, chunk) in rows.chunks(EXECUTE_MANY_CHUNK).enumerate() {
            let mut encoded = Rows::default();
            for (j, row) in chunk.iter().enumerate() {
                let i = ci * EXECUTE_MANY_CHUNK + j;
                if row.len() != types.len() {
                    return Err((
                        i,
                        QueryErrorKind::Client,
                        format!("expected {} parameters but got {}", types.len(), row.len()),
                        None,
                    ));
                }
                let r = if j == 0 {
                    scratch.clear();
                    encode_bind(row, types, &mut scratch)
                } else {
                    encoded.push(row, types)
                };
                if let Err(e) = r {
                    return Err((i, QueryErrorKind::Conversion, e.message, e.source));
                }
            }
            chunks.push(encoded);
        }
        Ok(chunks)
    }

    /// The pipelined part of `execute_many`: opens (BEGIN or SAVEPOINT), then for each chunk
    /// arms the wire shim with the chunk's rows `1..n` and issues one tokio-postgres `execute`
    /// for row 0, which the shim turns into the whole chunk with one Sync (see
    /// [`crate::wire`]), and closes (COMMIT or RELEASE) after the last chunk, or rolls back
    /// when a row failed. Returns the total row count or the first failing row.
    async fn pipeline_rows(
        client: &Client,
        batch: &Batch,
        stmt: &Statement,
        rows: &[&[Param<'_>]],
        encoded: Vec<Rows>,
        own_tx: bool,
    ) -> std::result::Result<u64, ManyError> {
        let open = if own_tx {
            "BEGIN".to_string()
        } else {
            format!("SAVEPOINT {EXECUTE_MANY_SAVEPOINT}")
        };
        let close_ok = if own_tx {
            "COMMIT".to_string()
        } else {
            format!("RELEASE SAVEPOINT {EXECUTE_MANY_SAVEPOINT}")
        };
        let close_err = if own_tx {
            "ROLLBACK".to_string()
        } else {
            format!(
                "ROLLBACK TO SAVEPOINT {EXECUTE_MANY_SAVEPOINT}; RELEASE SAVEPOINT {EXECUTE_MANY_SAVEPOINT}"
            )
        };

        // Dropped (the caller cancelled execute_many) before the closing statement is queued,
        // the connection is poisoned and will be discarded: the server may hold an open
        // transaction.
        let mut guard = ArmGuard::new(batch);
        // Waiting for the open also makes the connection idle (every earlier request, such as
        // the Close of an evicted statement, is answered), which arming the shim requires.
        if let Err(e) = client.batch_execute(&open).await {
            guard.complete();
            return Err(ManyError {
                row: None,
                cause: ManyCause::Driver(e),
            });
        }
        let mut total = 0u64;
        let mut base = 0usize;

        for (chunk, rest) in rows.chunks(EXECUTE_MANY_CHUNK).zip(encoded) {
            let injected = rest.len();
            let Some(first) = chunk.first() else { break };
            // Not armed (a chunk still active, which the idle connection rules out) only
            // costs speed: the rows then run one by one.
            let armed = injected > 0 && batch.arm(rest);
            let mut failure: Option<ManyError> = None;
            if injected > 0 && !armed {
                tracing::debug!(target: "pgdbm::wire", "execute_many chunk not armed; rows run one by one");
                for (i, params) in chunk.iter().enumerate() {
                    match client.execute(stmt, params).await {
                        Ok(n) => total += n,
                        Err(e) => {
                            failure = Some(ManyError {
                                row: Some(base + i),
                                cause: ManyCause::Driver(e),
                            });
                            break;
                        }
                    }
                }
            } else {
                let first_result = client.execute(stmt, first).await;
                let outcome = if armed {
                    batch.take_outcome()
                } else {
                    Outcome::default()
                };
                failure = match first_result {
                    // A later row's fatal error (57P01...) closed the connection: report it.
                    Err(_) if outcome.error.is_some() => outcome.error.map(|(k, e)| ManyError {
                        row: Some(base + k),
                        cause: ManyCause::Server(Box::new(e)),
                    }),
                    Err(e) => Some(ManyError {
                        row: Some(base),
                        cause: ManyCause::Driver(e),
                    }),
                    Ok(n) if !armed => {
                        total += n;
                        None
                    }
                    Ok(n) => match outcome {
                        Outcome {
                            injected: true,
                            complete: true,
                            error: None,
                            rows,
                        } => {
                            total += n + rows;
                            None
                        }
                        Outcome {
                            injected: true,
                            complete: true,
                            error: Some((k, e)),
                            ..
                        } => Some(ManyError {
                            row: Some(base + k),
                            cause: ManyCause::Server(Box::new(e)),
                        }),
                        _ => Some(ManyError {
                            row: None,
                            cause: ManyCause::Lost,
                        }),
                    },
                };
            }
            if let Some(f) = failure {
                // A row failed: the transaction (or savepoint) is aborted; roll it back. The
                // first poll of the await below queues the rollback before any drop can
                // happen.
                guard.complete();
                let _ = client.batch_execute(&close_err).await;
                return Err(f);
            }
            base += chunk.len();
        }
        // As above: the first poll queues the close.
        guard.complete();
        client
            .batch_execute(&close_ok)
            .await
            .map_err(|e| ManyError {
                row: None,
                cause: ManyCause::Driver(e),
            })?;
        Ok(total)
    }
}

/// Why `execute_many` failed.
enum ManyCause {
    /// tokio-postgres reported it (row 0 of a chunk, the open or close statement, or I/O).
    Driver(tokio_postgres::Error),
    /// A later row of a chunk failed on the server (read by the wire shim).
    Server(Box<ServerError>),
    /// The wire shim did not see the chunk through (it is not the request it expected).
    Lost,
}

/// A row `execute_many` cannot send: (row index, kind, message, source).
type BadRow = (usize, QueryErrorKind, String, Option<pgdbm_core::BoxError>);

/// A failure inside `execute_many`.
struct ManyError {
    /// The failing row, when one failed.
    row: Option<usize>,
    cause: ManyCause,
}

async fn first_row(
    stream: tokio_postgres::RowStream,
) -> std::result::Result<Output, tokio_postgres::Error> {
    use futures_util::TryStreamExt;
    let mut stream = std::pin::pin!(stream);
    let first = stream.try_next().await?;
    // Drain the rest so the statement completes and any error after the first row is reported.
    // (A stream that ended must not be polled again: tokio-postgres would report "closed".)
    if first.is_some() {
        while stream.try_next().await?.is_some() {}
    }
    Ok(Output::Rows(first.into_iter().collect()))
}

#[async_trait]
impl Connection for PgConnection {
    type Row = PgRow;

    async fn execute(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        match self
            .traced(Op::Execute, "execute", sql, params, timeout)
            .await?
        {
            Output::Count(n) => Ok(n),
            Output::Rows(r) => Ok(r.len() as u64),
        }
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        timeout: Option<Duration>,
    ) -> Result<Vec<PgRow>> {
        match self
            .traced(Op::Query, "query", sql, params, timeout)
            .await?
        {
            Output::Rows(r) => Ok(r.into_iter().map(PgRow::new).collect()),
            Output::Count(_) => Ok(Vec::new()),
        }
    }

    async fn query_opt(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        timeout: Option<Duration>,
    ) -> Result<Option<PgRow>> {
        match self
            .traced(Op::QueryOpt, "query_opt", sql, params, timeout)
            .await?
        {
            Output::Rows(r) => Ok(r.into_iter().next().map(PgRow::new)),
            Output::Count(_) => Ok(None),
        }
    }

    async fn batch_execute(&mut self, sql: &str, timeout: Option<Duration>) -> Result<()> {
        self.check_usable(sql)?;
        let span = self.span("batch_execute", sql);
        let started = Instant::now();
        let deadline = deadline_of(timeout);
        let outcome = self
            .bounded(deadline, self.client.batch_execute(sql))
            .instrument(span.clone())
            .await;
        self.query_count += 1;
        self.last_used = Instant::now();
        self.note_tx_effect(sql);
        let result = self.settle(outcome, sql, 0, timeout);
        self.record(&span, started, None, result.is_ok());
        result
    }

    async fn execute_many(
        &mut self,
        sql: &str,
        rows: &[&[Param<'_>]],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.check_usable(sql)?;
        if rows.is_empty() {
            return Ok(0);
        }
        let span = self.span("execute_many", sql);
        let started = Instant::now();
        let deadline = deadline_of(timeout);
        let n_params = rows.first().map_or(0, |r| r.len());
        let stmt = match self
            .statement(sql, n_params, deadline, timeout, false)
            .instrument(span.clone())
            .await?
        {
            Stmt::Prepared(s) => s,
            // `statement` never answers Unnamed when `allow_unnamed` is false.
            Stmt::Unnamed => self
                .client
                .prepare(sql)
                .await
                .map_err(|e| query_error(e, sql, n_params))?,
        };
        let encoded = match Self::encode_rows(&stmt, rows) {
            Ok(encoded) => encoded,
            Err((row, kind, message, source)) => {
                let bad: &[Param<'_>] = rows.get(row).copied().unwrap_or(&[]);
                let mut q = QueryError::new(
                    kind,
                    format!("row {row} of {}: {message}; nothing was sent", rows.len()),
                    sql,
                )
                .with_params(crate::errors::params_for(bad.len()));
                q.row = Some(row);
                q.source = source;
                let err = self.show_params(q.into(), bad);
                self.record(&span, started, None, false);
                return Err(err);
            }
        };
        let own_tx = !self.in_any_tx();
        let outcome = self
            .bounded(deadline, async {
                Ok::<_, tokio_postgres::Error>(
                    Self::pipeline_rows(&self.client, &self.batch, &stmt, rows, encoded, own_tx)
                        .await,
                )
            })
            .instrument(span.clone())
            .await;
        self.query_count += rows.len() as u64;
        self.last_used = Instant::now();
        let result = match self.settle(outcome, sql, n_params, timeout) {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(many)) => {
                let row_params = many
                    .row
                    .and_then(|r| rows.get(r))
                    .map_or(n_params, |r| r.len());
                let mut err = match many.cause {
                    ManyCause::Driver(e) => {
                        if is_connection_error(&e) {
                            self.broken = true;
                        }
                        query_error(e, sql, row_params)
                    }
                    ManyCause::Server(e) => {
                        if e.code.starts_with("08") || e.code.starts_with("57P") {
                            self.broken = true;
                        }
                        server_error(*e, sql, row_params)
                    }
                    ManyCause::Lost => {
                        self.broken = true;
                        client_error(
                            QueryErrorKind::Connection,
                            "execute_many lost track of its pipeline on the connection; nothing was committed and the connection is discarded, retry on a new one",
                            sql,
                        )
                    }
                };
                if let Error::Query(q) = &mut err {
                    q.row = many.row;
                    if let Some(params) = many.row.and_then(|r| rows.get(r)) {
                        if self.log_parameters && !params.is_empty() {
                            q.params = pgdbm_core::QueryParams::Shown(
                                params.iter().map(|p| format!("{p:?}")).collect(),
                            );
                        }
                    }
                    if let Some(r) = many.row {
                        q.message = format!(
                            "row {r} of {}: {}; no row was applied",
                            rows.len(),
                            q.message
                        );
                    }
                }
                Err(err)
            }
            Err(e) => Err(e),
        };
        self.record(
            &span,
            started,
            result.as_ref().ok().copied(),
            result.is_ok(),
        );
        result
    }

    async fn copy_in(
        &mut self,
        table: &str,
        columns: &[&str],
        rows: &[&[Param<'_>]],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        let quoted = columns
            .iter()
            .map(|c| pgdbm_core::quote_identifier(c))
            .collect::<Result<Vec<_>>>()?
            .join(", ");
        let (probe, copy) = if columns.is_empty() {
            (
                format!("SELECT * FROM {table} LIMIT 0"),
                format!("COPY {table} FROM STDIN (FORMAT binary)"),
            )
        } else {
            (
                format!("SELECT {quoted} FROM {table} LIMIT 0"),
                format!("COPY {table} ({quoted}) FROM STDIN (FORMAT binary)"),
            )
        };
        self.check_usable(&copy)?;
        let span = self.span("copy_in", &copy);
        let started = Instant::now();
        let deadline = deadline_of(timeout);

        let outcome = self.bounded(deadline, self.client.prepare(&probe)).await;
        let types: Vec<postgres_types::Type> = self
            .settle(outcome, &probe, 0, timeout)?
            .columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect();
        if let Some((i, row)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != types.len())
        {
            let mut q = QueryError::new(
                QueryErrorKind::Client,
                format!(
                    "row {i} has {} value(s) but the copy targets {} column(s); nothing was copied",
                    row.len(),
                    types.len()
                ),
                copy.clone(),
            );
            q.row = Some(i);
            return Err(q.into());
        }

        let client = &self.client;
        let copy_sql = copy.as_str();
        let work = async {
            let sink = client.copy_in(copy_sql).await?;
            let writer = BinaryCopyInWriter::new(sink, &types);
            let mut writer = std::pin::pin!(writer);
            for (i, row) in rows.iter().enumerate() {
                if let Err(e) = writer.as_mut().write(row).await {
                    return Ok(Err((i, e)));
                }
            }
            writer.as_mut().finish().await.map(Ok)
        };
        let outcome = self.bounded(deadline, work).instrument(span.clone()).await;
        self.query_count += 1;
        self.last_used = Instant::now();
        let result = match self.settle(outcome, &copy, 0, timeout) {
            Ok(Ok(n)) => Ok(n),
            Ok(Err((i, e))) => {
                let mut err = query_error(e, &copy, types.len());
                if let Error::Query(q) = &mut err {
                    q.row = Some(i);
                    q.message = format!("row {i}: {}; the copy was aborted", q.message);
                }
                Err(err)
            }
            Err(e) => Err(e),
        };
        self.record(
            &span,
            started,
            result.as_ref().ok().copied(),
            result.is_ok(),
        );
        result
    }

    async fn prepare(&mut self, sql: &str) -> Result<()> {
        self.check_usable(sql)?;
        let outcome = self.bounded(None, self.client.prepare(sql)).await;
        let stmt = self.settle(outcome, sql, 0, None)?;
        self.sync_epoch();
        self.cache.insert(sql, stmt);
        Ok(())
    }

    async fn begin(&mut self) -> Result<()> {
        self.control("BEGIN").await?;
        self.in_tx = true;
        Ok(())
    }

    async fn commit(&mut self) -> Result<()> {
        let r = self.control("COMMIT").await;
        // A failed COMMIT (e.g. a deferred constraint) still ends the transaction.
        self.in_tx = false;
        self.maybe_tx = false;
        r
    }

    async fn rollback(&mut self) -> Result<()> {
        let r = self.control("ROLLBACK").await;
        self.in_tx = false;
        self.maybe_tx = false;
        r
    }

    fn in_transaction(&self) -> bool {
        self.in_any_tx()
    }

    fn is_closed(&self) -> bool {
        self.is_broken()
    }

    fn discard(&mut self) {
        self.broken = true;
    }

    fn clear_statement_cache(&mut self) {
        self.cache.clear();
    }
}
