//! [`PgConnection`]: one physical tokio-postgres connection and what pgdbm knows about it.
//!
//! Its transaction state is what the server reported (the status byte of every
//! `ReadyForQuery`, read by the wire shim), and a request marks the connection *in flight*
//! from before it is handed to tokio-postgres until its answer is consumed: a future dropped
//! midway leaves the mark. Nothing is inferred from SQL text.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pgdbm_core::error::truncate_sql;
use pgdbm_core::{
    Config, Connection, Error, Param, QueryErrorKind, ResetPolicy, Result, StatementMode,
};
use tokio_postgres::{Client, Statement};

use crate::cache::StatementCache;
use crate::cancel::{cancel, CancelOutcome};
use crate::connect::Target;
use crate::deadline::{deadline_of, Bounded, DeadlineTimer, CANCEL_GRACE};
use crate::errors::{client_error, params_shown, query_error};
use crate::json;
use crate::probe::{SocketProbe, SocketState};
use crate::row::PgRow;
use crate::unnamed::{local_settings, Described};
use crate::wire::{Batch, Session, TxStatus};

/// What a full session reset runs (asyncpg's reset plus temp objects and sequences); then
/// `init_commands` again, in the same round trip.
const FULL_RESET: &str = "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; \
    SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DISCARD TEMP; DISCARD SEQUENCES";

/// Added to [`FULL_RESET`] when the server reported a SQL-level `PREPARE` since the last reset:
/// deallocates those statements only (pgdbm's protocol-level cache is kept).
const DEALLOCATE_SQL_PREPARED: &str = "DO $pgdbm_reset$ DECLARE r record; BEGIN FOR r IN \
    SELECT name FROM pg_prepared_statements WHERE from_sql LOOP \
    EXECUTE format('DEALLOCATE %I', r.name); END LOOP; END $pgdbm_reset$";

/// Settings every connection of one config shares.
#[derive(Debug)]
pub(crate) struct ConnSettings {
    pub(crate) statement_cache_size: usize,
    pub(crate) log_parameters: bool,
    /// Deadline of transaction control, `prepare` and other statements pgdbm runs itself:
    /// `Config::command_timeout`.
    pub(crate) control_timeout: Option<Duration>,
    pub(crate) reset_policy: ResetPolicy,
    pub(crate) init_commands: Vec<String>,
    /// Bound on settling, resetting or checking a connection on its way back to the pool.
    pub(crate) reset_timeout: Duration,
    /// `Config::statement_mode`.
    pub(crate) statement_mode: StatementMode,
    /// `BEGIN` plus, in [`StatementMode::Unnamed`], the startup settings for the transaction.
    pub(crate) begin_sql: String,
}

impl ConnSettings {
    pub(crate) fn from_config(config: &Config) -> Self {
        ConnSettings {
            statement_cache_size: config.statement_cache_size,
            log_parameters: config.log_parameters,
            control_timeout: config.command_timeout,
            reset_policy: config.reset_on_release,
            init_commands: config.init_commands.clone(),
            reset_timeout: crate::recycle::reset_timeout(config),
            statement_mode: config.statement_mode,
            begin_sql: begin_sql(config),
        }
    }
}

/// `BEGIN`, followed in [`StatementMode::Unnamed`] by [`local_settings`] (one round trip).
pub(crate) fn begin_sql(config: &Config) -> String {
    let local = local_settings(config);
    if local.is_empty() {
        "BEGIN".to_string()
    } else {
        format!("BEGIN; {local}")
    }
}

/// What the pool must do with a connection a borrower gave back
/// ([`PgConnection::release_action`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseAction {
    /// Idle, outside a transaction, nothing in flight: reuse as it is.
    Reuse,
    /// Inside a transaction, a failed one or with a request in flight, or (with
    /// [`ResetPolicy::Full`]) used since checkout: [`reset`](PgConnection::reset) it before
    /// anyone else gets it.
    Reset,
    /// Broken, discarded or in a state the server did not report: close it now.
    Close,
}

/// One physical PostgreSQL connection (a [`tokio_postgres::Client`] whose connection task runs on
/// tokio) plus the state pgdbm keeps about it: a bounded statement cache, the session state the
/// server reported, usage counters and the address cancel requests go to.
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
    pub(crate) batch: Batch,
    /// What the server reported, read by the wire shim.
    session: Arc<Session>,
    /// The connection task; aborted when the connection is given up, so the socket closes at
    /// once instead of when tokio-postgres has drained pending replies.
    task: tokio::task::AbortHandle,
    settings: Arc<ConnSettings>,
    pub(crate) cache: StatementCache,
    /// Statement descriptions, in [`StatementMode::Unnamed`] (the named cache stays empty).
    pub(crate) described_cache: StatementCache<Described>,
    /// [`StatementMode::Unnamed`]: the database's user-defined types were loaded
    /// (`warm_types`).
    pub(crate) types_warmed: bool,
    epoch: Option<(Arc<AtomicU64>, u64)>,
    created_at: Instant,
    pub(crate) last_used: Instant,
    pub(crate) query_count: u64,
    /// `query_count` when the current borrower checked the connection out.
    checkout_queries: u64,
    /// A request was handed to tokio-postgres and its answer not consumed yet (shared with
    /// the row streams it returned, which clear it when they end).
    in_flight: Arc<AtomicBool>,
    /// Unusable: discard it.
    broken: AtomicBool,
    /// `host:port/database`, for messages.
    endpoint: String,
    /// Peeks at the socket at checkout (`None` where the platform has no file descriptors).
    probe: Option<SocketProbe>,
    /// The timer of [`bounded`](Self::bounded) requests, reused from one to the next.
    timer: DeadlineTimer,
}

impl std::fmt::Debug for PgConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnection")
            .field("endpoint", &self.endpoint)
            .field("tls", &self.target.has_tls())
            .field("cached_statements", &self.cache.len())
            .field("query_count", &self.query_count)
            .field("transaction_status", &self.session.tx_status())
            .field("in_flight", &self.in_flight())
            .field("broken", &self.is_broken())
            .finish_non_exhaustive()
    }
}

/// A statement ready to run: prepared (cached or not), unnamed (no parameters, cache off), or
/// described and sent unnamed with its parameter types ([`StatementMode::Unnamed`]).
pub(crate) enum Stmt {
    Prepared(Statement),
    Unnamed,
    Typed(Described),
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
    /// The first row (`query_opt`), without a `Vec` around it.
    Row(Option<tokio_postgres::Row>),
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
        session: Arc<Session>,
        task: tokio::task::AbortHandle,
        settings: Arc<ConnSettings>,
        endpoint: String,
    ) -> Self {
        let now = Instant::now();
        PgConnection {
            client,
            target,
            batch,
            session,
            task,
            cache: StatementCache::new(settings.statement_cache_size),
            described_cache: StatementCache::new(settings.statement_cache_size),
            types_warmed: false,
            settings,
            epoch: None,
            created_at: now,
            last_used: now,
            query_count: 0,
            checkout_queries: 0,
            in_flight: Arc::new(AtomicBool::new(false)),
            broken: AtomicBool::new(false),
            endpoint,
            probe: None,
            timer: DeadlineTimer::default(),
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

    /// True when a request was handed to the driver and its answer was not consumed (its
    /// future was dropped midway): the statement may still be queued or running.
    pub fn in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Acquire)
    }

    /// True when the connection is not idle outside a transaction as far as the server
    /// reported: inside a transaction or a failed one (the last `ReadyForQuery` said `T` or
    /// `E`), or with a request in flight. [`reset`](Self::reset) brings it back.
    pub fn needs_reset(&self) -> bool {
        self.in_flight() || self.session.tx_status() != TxStatus::Idle
    }

    /// What a pool must do with this connection when its borrower gives it back.
    pub fn release_action(&self) -> ReleaseAction {
        if self.is_broken() {
            return ReleaseAction::Close;
        }
        match self.session.tx_status() {
            TxStatus::Unknown if !self.in_flight() => ReleaseAction::Close,
            TxStatus::Idle if !self.in_flight() && !self.full_reset_due() => ReleaseAction::Reuse,
            _ => ReleaseAction::Reset,
        }
    }

    /// Bound on [`reset`](Self::reset) that this connection's config asks for.
    pub fn reset_timeout(&self) -> Duration {
        self.settings.reset_timeout
    }

    /// Records that a new borrower has the connection (for [`ResetPolicy::Full`], which resets
    /// only connections used since checkout).
    pub fn mark_checked_out(&mut self) {
        self.checkout_queries = self.query_count;
    }

    fn full_reset_due(&self) -> bool {
        self.settings.reset_policy == ResetPolicy::Full && self.query_count > self.checkout_queries
    }

    /// Brings the connection back to a clean idle state, each step bounded by `timeout`:
    /// a request in flight is cancelled and settled (a CancelRequest, confirmed, then an empty
    /// query that tokio-postgres answers only after every earlier request), an open or failed
    /// transaction is rolled back, and with [`ResetPolicy::Full`] a used connection gets the
    /// full session reset and its `init_commands` again. An error means the connection must be
    /// closed (it is marked broken).
    pub async fn reset(&mut self, timeout: Duration) -> Result<()> {
        if self.is_broken() {
            return Err(self.broken_error("reset"));
        }
        let r = self.reset_steps(timeout).await;
        if r.is_err() {
            self.mark_broken();
        }
        r
    }

    async fn reset_steps(&mut self, timeout: Duration) -> Result<()> {
        if self.in_flight() {
            self.settle_in_flight(timeout).await?;
        }
        match self.session.tx_status() {
            TxStatus::Idle => {}
            TxStatus::InTransaction | TxStatus::Failed => {
                self.simple_bounded("ROLLBACK", timeout).await?;
            }
            TxStatus::Unknown => {
                return Err(client_error(
                    QueryErrorKind::Connection,
                    "the server reported no transaction status; the connection is discarded",
                    "",
                ))
            }
        }
        if self.full_reset_due() {
            // One simple-protocol round trip; statements are separated by a newline first, so
            // an init command ending in a `--` comment cannot swallow the next one.
            let mut sql = String::from(FULL_RESET);
            if self.session.take_sql_prepared() {
                sql.push_str(";\n");
                sql.push_str(DEALLOCATE_SQL_PREPARED);
            }
            for cmd in &self.settings.init_commands {
                sql.push_str(";\n");
                sql.push_str(cmd);
            }
            self.simple_bounded(&sql, timeout).await?;
            self.checkout_queries = self.query_count;
        }
        self.forget_dropped_statements();
        Ok(())
    }

    /// Settles a request left in flight by a dropped future: cancels it (confirmed, so no late
    /// cancel can hit a later statement), then waits for an empty query, which tokio-postgres
    /// answers only after every earlier request; the session status is then current.
    async fn settle_in_flight(&mut self, timeout: Duration) -> Result<()> {
        let key = self.session.backend_key();
        if cancel(&self.target, key, timeout.min(CANCEL_GRACE)).await == CancelOutcome::Uncertain {
            return Err(client_error(
                QueryErrorKind::Connection,
                "a request left running could not be cancelled with certainty; the connection is discarded",
                "",
            ));
        }
        match tokio::time::timeout(timeout, self.client.simple_query("")).await {
            Ok(Ok(_)) => {
                self.set_in_flight(false);
                Ok(())
            }
            Ok(Err(e)) => Err(query_error(e, "", 0)),
            Err(_) => Err(client_error(
                QueryErrorKind::Timeout,
                format!(
                    "a request left running did not end within {timeout:?} of its cancel; the connection is discarded"
                ),
                "",
            )),
        }
    }

    /// Runs `sql` with the simple protocol, bounded by `timeout`.
    async fn simple_bounded(&mut self, sql: &str, timeout: Duration) -> Result<()> {
        match tokio::time::timeout(timeout, self.client.batch_execute(sql)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(query_error(e, sql, 0)),
            Err(_) => Err(client_error(
                QueryErrorKind::Timeout,
                format!(
                    "`{}` took longer than {timeout:?}; the connection is discarded",
                    truncate_sql(sql, 40)
                ),
                sql,
            )),
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
                self.mark_broken();
                Err(query_error(e, "", 0))
            }
            Err(_) => {
                self.mark_broken();
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

    /// Gives the connection a probe on its socket (see [`socket_state`](Self::socket_state)).
    pub(crate) fn with_probe(mut self, probe: Option<SocketProbe>) -> Self {
        self.probe = probe;
        self
    }

    /// A non-blocking look at the socket: bytes waiting or the peer gone on a connection that
    /// should be idle (see [`crate::recycle`]). `Quiet` when the socket cannot be probed.
    pub(crate) fn socket_state(&self) -> SocketState {
        self.probe
            .as_ref()
            .map_or(SocketState::Quiet, SocketProbe::state)
    }

    /// True when the connection is closed (the server or network ended it, or an I/O error or an
    /// unconfirmed cancel left it unusable), an `execute_many` was cancelled (its future dropped)
    /// before its closing statement was sent, or [`discard`](Connection::discard) was called. A
    /// broken connection is never reused.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire) || self.client.is_closed() || self.batch.is_poisoned()
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
    /// Statements run through it bypass pgdbm's statement cache, query counter and timeouts,
    /// but not its state tracking: the transaction status is what the server reports, so a
    /// transaction left open through it is still rolled back when the connection is released.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Number of prepared statements currently cached.
    pub fn cached_statements(&self) -> usize {
        self.cache.len()
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    pub(crate) fn deadline_timer(&self) -> &DeadlineTimer {
        &self.timer
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    pub(crate) fn settings(&self) -> &ConnSettings {
        &self.settings
    }

    /// The in-flight mark, for streams that outlive the call that started them.
    pub(crate) fn in_flight_flag(&self) -> Arc<AtomicBool> {
        self.in_flight.clone()
    }

    pub(crate) fn set_in_flight(&self, v: bool) {
        self.in_flight.store(v, Ordering::Release);
    }

    pub(crate) fn mark_broken(&self) {
        self.broken.store(true, Ordering::Release);
    }

    pub(crate) fn tx_status(&self) -> TxStatus {
        self.session.tx_status()
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

    /// Called before every request: refuses a broken connection and settles a request an
    /// earlier, dropped future left in flight (so its statement cannot run into this one).
    pub(crate) async fn ready_for(&mut self, sql: &str) -> Result<()> {
        if self.in_flight() && !self.is_broken() {
            let timeout = self.settings.reset_timeout;
            if let Err(e) = Box::pin(self.settle_in_flight(timeout)).await {
                self.mark_broken();
                return Err(e);
            }
        }
        if self.is_broken() {
            return Err(client_error(
                QueryErrorKind::Connection,
                format!(
                    "the connection to {} is closed; the connection is discarded, retry on a new one",
                    self.endpoint
                ),
                sql,
            ));
        }
        Ok(())
    }

    /// Clears the statement cache when the pool's epoch moved or the server dropped prepared
    /// statements (`DEALLOCATE`, `DISCARD ALL`).
    pub(crate) fn sync_epoch(&mut self) {
        if let Some((epoch, seen)) = &mut self.epoch {
            let now = epoch.load(Ordering::Acquire);
            if now != *seen {
                *seen = now;
                self.cache.clear();
                self.described_cache.clear();
            }
        }
        self.forget_dropped_statements();
    }

    fn forget_dropped_statements(&mut self) {
        if self.session.take_statements_dropped() {
            self.cache.clear();
        }
    }

    /// Emits the wire-level trace event of a finished statement. There is one span per query,
    /// the manager's (pgdbm-core's `query` span, OpenTelemetry conventions): the adapter runs
    /// inside it and opens none of its own, so the event lands in it.
    pub(crate) fn record(&self, started: Instant, rows: Option<u64>, ok: bool) {
        if !tracing::enabled!(target: "pgdbm::wire", tracing::Level::TRACE) {
            return;
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if ok {
            tracing::trace!(target: "pgdbm::wire", duration_ms = ms, rows, "statement finished");
        } else {
            tracing::trace!(target: "pgdbm::wire", duration_ms = ms, "statement failed");
        }
    }

    /// With `Config::log_parameters`, puts the parameters' `Debug` text into a query error
    /// (they are masked otherwise) and lets it show the server's DETAIL.
    pub(crate) fn show_params(&self, mut err: Error, params: &[Param<'_>]) -> Error {
        if let Error::Query(q) = &mut err {
            if !params.is_empty() {
                q.params = params_shown(params, self.settings.log_parameters);
            }
            q.values_shown = self.settings.log_parameters;
        }
        err
    }

    /// The statement for `sql`: from the cache, or prepared (and cached when the cache is on).
    pub(crate) async fn statement(
        &mut self,
        sql: &str,
        n_params: usize,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
        allow_unnamed: bool,
    ) -> Result<Stmt> {
        if self.settings.statement_mode == StatementMode::Unnamed {
            if !self.types_warmed {
                Box::pin(self.warm_types(deadline, timeout)).await?;
            }
            if allow_unnamed && n_params == 0 {
                return Ok(Stmt::Typed(Described::default()));
            }
            let d = Box::pin(self.described(sql, n_params, deadline, timeout)).await?;
            if d.params.len() != n_params {
                // What tokio-postgres says for a prepared statement (the typed query would
                // drop extra values silently).
                return Err(client_error(
                    QueryErrorKind::Client,
                    format!("expected {} parameters but got {n_params}", d.params.len()),
                    sql,
                ));
            }
            return Ok(Stmt::Typed(d));
        }
        if !self.cache.enabled() {
            if allow_unnamed && n_params == 0 {
                return Ok(Stmt::Unnamed);
            }
            let outcome = Box::pin(self.bounded(deadline, self.client.prepare(sql))).await;
            return self
                .settle(outcome, sql, n_params, timeout)
                .map(Stmt::Prepared);
        }
        self.sync_epoch();
        if let Some(stmt) = self.cache.get(sql) {
            return Ok(Stmt::Prepared(stmt));
        }
        // A miss is rare: boxed, so the prepare future is not part of every statement's.
        Box::pin(self.prepare_and_cache(sql, n_params, deadline, timeout)).await
    }

    async fn prepare_and_cache(
        &mut self,
        sql: &str,
        n_params: usize,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
    ) -> Result<Stmt> {
        let outcome = self.bounded(deadline, self.client.prepare(sql)).await;
        let stmt = self.settle(outcome, sql, n_params, timeout)?;
        self.cache.insert(sql, stmt.clone());
        Ok(Stmt::Prepared(stmt))
    }

    /// Sends one statement and reads its answer. An `async fn`, not a boxed future: the
    /// caller's future holds the largest arm's state in place, no allocation per statement.
    async fn start(
        &self,
        stmt: &Stmt,
        sql: &str,
        params: &[Param<'_>],
        op: Op,
    ) -> std::result::Result<Output, tokio_postgres::Error> {
        use futures_util::TryStreamExt;
        let client = &self.client;
        match (stmt, op) {
            // Parameters go through `json::wrap` so JSON text binds to json/jsonb.
            (Stmt::Prepared(s), Op::Execute) => client
                .execute_raw(s, json::wrap(params))
                .await
                .map(Output::Count),
            (Stmt::Prepared(s), Op::Query) => {
                let stream = client.query_raw(s, json::wrap(params)).await?;
                stream.try_collect().await.map(Output::Rows)
            }
            (Stmt::Prepared(s), Op::QueryOpt) => {
                let stream = client.query_raw(s, json::wrap(params)).await?;
                first_row(stream).await
            }
            (Stmt::Typed(d), Op::Execute) => {
                let stream = client
                    .query_typed_raw(sql, typed(params, &d.params))
                    .await?;
                let mut stream = std::pin::pin!(stream);
                while stream.try_next().await?.is_some() {}
                Ok(Output::Count(stream.rows_affected().unwrap_or(0)))
            }
            (Stmt::Typed(d), Op::Query) => {
                let stream = client
                    .query_typed_raw(sql, typed(params, &d.params))
                    .await?;
                stream.try_collect().await.map(Output::Rows)
            }
            (Stmt::Typed(d), Op::QueryOpt) => {
                let stream = client
                    .query_typed_raw(sql, typed(params, &d.params))
                    .await?;
                first_row(stream).await
            }
            (Stmt::Unnamed, Op::Execute) => client.execute_typed(sql, &[]).await.map(Output::Count),
            (Stmt::Unnamed, Op::Query) => client.query_typed(sql, &[]).await.map(Output::Rows),
            (Stmt::Unnamed, Op::QueryOpt) => {
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
            }
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
        self.ready_for(sql).await?;
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
                if !retried && is_cached_plan_error(e) && self.tx_status() == TxStatus::Idle {
                    self.cache.remove(sql);
                    retried = true;
                    continue;
                }
            }
            return self.settle(outcome, sql, params.len(), timeout);
        }
    }

    async fn traced(
        &mut self,
        op: Op,
        sql: &str,
        params: &[Param<'_>],
        timeout: Option<Duration>,
    ) -> Result<Output> {
        if self.settings.log_parameters && !params.is_empty() {
            let shown = params_shown(params, true);
            tracing::debug!(target: "pgdbm", params = ?shown, "query parameters");
        }
        // The clock is read for the trace event only when someone records it.
        let started =
            tracing::enabled!(target: "pgdbm::wire", tracing::Level::TRACE).then(Instant::now);
        let result = self
            .run(op, sql, params, timeout)
            .await
            .map_err(|e| self.show_params(e, params));
        self.last_used = Instant::now();
        if let Some(started) = started {
            let rows = match &result {
                Ok(Output::Count(n)) => Some(*n),
                Ok(Output::Rows(r)) => Some(r.len() as u64),
                Ok(Output::Row(r)) => Some(u64::from(r.is_some())),
                Err(_) => None,
            };
            self.record(started, rows, result.is_ok());
        }
        result
    }

    /// Runs a transaction-control statement (`BEGIN`, `COMMIT`...) with the simple protocol,
    /// bounded by `Config::command_timeout`.
    async fn control(&mut self, sql: &str) -> Result<()> {
        self.ready_for(sql).await?;
        let started = Instant::now();
        let timeout = self.settings.control_timeout;
        let outcome = self
            .bounded(deadline_of(timeout), self.client.batch_execute(sql))
            .await;
        self.query_count += 1;
        self.last_used = Instant::now();
        let result = self.settle(outcome, sql, 0, timeout);
        self.record(started, None, result.is_ok());
        result
    }
}

/// Rewrites the error of a `COMMIT` whose answer never came (the connection failed or the
/// deadline passed) as [`QueryErrorKind::CommitOutcomeUnknown`]: it may have committed. A
/// server's refusal (a deferred constraint, say) is a definite outcome and stays as it is.
pub(crate) fn commit_outcome(err: Error, what: &str) -> Error {
    match err {
        Error::Query(mut q)
            if matches!(q.kind, QueryErrorKind::Connection | QueryErrorKind::Timeout) =>
        {
            q.kind = QueryErrorKind::CommitOutcomeUnknown;
            q.message = format!(
                "{what} was sent but no answer came back ({}); the transaction may or may not have \
                 committed. Check whether its work is there (or make it idempotent) before retrying",
                q.message
            );
            Error::Query(q)
        }
        other => other,
    }
}

/// The parameters (JSON text wrapped, see [`json`]) paired with the described types, for
/// `query_typed_raw`.
pub(crate) fn typed<'a>(
    params: &'a [Param<'a>],
    types: &'a [postgres_types::Type],
) -> impl ExactSizeIterator<Item = (json::JsonText<'a>, postgres_types::Type)> + 'a {
    json::wrap(params).zip(types.iter().cloned())
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
    Ok(Output::Row(first))
}

impl Drop for PgConnection {
    fn drop(&mut self) {
        let clean =
            !self.in_flight() && !self.is_broken() && self.session.tx_status() == TxStatus::Idle;
        if clean {
            // tokio-postgres says goodbye (Terminate) and ends the task itself.
            return;
        }
        if self.in_flight() && !self.client.is_closed() {
            // A statement may be running: closing the socket alone would leave it (and its
            // locks) until it ends, since the server notices a gone client only when it reads.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let target = self.target.clone();
                let key = self.session.backend_key();
                rt.spawn(async move {
                    cancel(&target, key, CANCEL_GRACE).await;
                });
            }
        }
        // Close the socket now: the server ends the session (and rolls back) at once.
        self.task.abort();
    }
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
        match self.traced(Op::Execute, sql, params, timeout).await? {
            Output::Count(n) => Ok(n),
            Output::Rows(r) => Ok(r.len() as u64),
            Output::Row(r) => Ok(u64::from(r.is_some())),
        }
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        timeout: Option<Duration>,
    ) -> Result<Vec<PgRow>> {
        match self.traced(Op::Query, sql, params, timeout).await? {
            Output::Rows(r) => Ok(r.into_iter().map(PgRow::new).collect()),
            Output::Row(r) => Ok(r.into_iter().map(PgRow::new).collect()),
            Output::Count(_) => Ok(Vec::new()),
        }
    }

    async fn query_opt(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        timeout: Option<Duration>,
    ) -> Result<Option<PgRow>> {
        match self.traced(Op::QueryOpt, sql, params, timeout).await? {
            Output::Row(r) => Ok(r.map(PgRow::new)),
            Output::Rows(r) => Ok(r.into_iter().next().map(PgRow::new)),
            Output::Count(_) => Ok(None),
        }
    }

    async fn batch_execute(&mut self, sql: &str, timeout: Option<Duration>) -> Result<()> {
        self.ready_for(sql).await?;
        let started = Instant::now();
        let deadline = deadline_of(timeout);
        let outcome = self.bounded(deadline, self.client.batch_execute(sql)).await;
        self.query_count += 1;
        self.last_used = Instant::now();
        let result = self.settle(outcome, sql, 0, timeout);
        self.record(started, None, result.is_ok());
        result
    }

    async fn execute_many(
        &mut self,
        sql: &str,
        rows: &[&[Param<'_>]],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.run_execute_many(sql, rows, timeout).await
    }

    async fn copy_in(
        &mut self,
        table: &pgdbm_core::TableName,
        columns: &[&str],
        rows: &[&[Param<'_>]],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.run_copy_in(table, columns, rows, timeout).await
    }

    async fn prepare(&mut self, sql: &str) -> Result<()> {
        self.ready_for(sql).await?;
        let timeout = self.settings.control_timeout;
        if self.settings.statement_mode == StatementMode::Unnamed {
            // No named statement on the server: the description is what is kept.
            return self
                .described(sql, 0, deadline_of(timeout), timeout)
                .await
                .map(|_| ());
        }
        let outcome = self
            .bounded(deadline_of(timeout), self.client.prepare(sql))
            .await;
        let stmt = self.settle(outcome, sql, 0, timeout)?;
        self.sync_epoch();
        self.cache.insert(sql, stmt);
        Ok(())
    }

    async fn begin(&mut self) -> Result<()> {
        let settings = self.settings.clone();
        self.control(&settings.begin_sql).await
    }

    async fn commit(&mut self) -> Result<()> {
        // A connection already unusable never sent the COMMIT: the server rolls back, a
        // definite outcome.
        self.ready_for("COMMIT").await?;
        self.control("COMMIT")
            .await
            .map_err(|e| commit_outcome(e, "COMMIT"))
    }

    async fn rollback(&mut self) -> Result<()> {
        self.control("ROLLBACK").await
    }

    fn in_transaction(&self) -> bool {
        matches!(
            self.session.tx_status(),
            TxStatus::InTransaction | TxStatus::Failed
        )
    }

    fn is_closed(&self) -> bool {
        self.is_broken()
    }

    fn discard(&mut self) {
        self.mark_broken();
    }

    fn clear_statement_cache(&mut self) {
        self.cache.clear();
        self.described_cache.clear();
    }

    fn announced_backend_pid(&self) -> Option<i32> {
        self.session.backend_key().map(|(pid, _)| pid)
    }

    type CopyRow = crate::PgCopyRow;

    async fn query_stream(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        timeout: Option<Duration>,
    ) -> Result<pgdbm_core::BoxStream<PgRow>> {
        self.run_query_stream(sql, params, timeout).await
    }

    async fn copy_out(
        &mut self,
        sql: &str,
        timeout: Option<Duration>,
    ) -> Result<pgdbm_core::BoxStream<bytes::Bytes>> {
        self.run_copy_out(sql, timeout).await
    }

    async fn copy_out_rows(
        &mut self,
        table: &str,
        columns: &[&str],
        timeout: Option<Duration>,
    ) -> Result<pgdbm_core::BoxStream<crate::PgCopyRow>> {
        self.run_copy_out_rows(table, columns, timeout).await
    }

    async fn listen(
        config: &Config,
        channels: &[String],
    ) -> Result<pgdbm_core::BoxStream<pgdbm_core::ListenEvent>> {
        crate::listen::listen(config, channels).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_errors_without_an_answer_become_outcome_unknown() {
        let lost = client_error(QueryErrorKind::Connection, "broke", "COMMIT");
        match commit_outcome(lost, "COMMIT") {
            Error::Query(q) => {
                assert_eq!(q.kind, QueryErrorKind::CommitOutcomeUnknown);
                assert!(
                    q.message.contains("may or may not have committed"),
                    "{}",
                    q.message
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let late = client_error(QueryErrorKind::Timeout, "slow", "COMMIT");
        assert!(matches!(
            commit_outcome(late, "COMMIT"),
            Error::Query(q) if q.kind == QueryErrorKind::CommitOutcomeUnknown
        ));
        // A server's refusal (e.g. a deferred constraint) is a definite outcome: rolled back.
        let refused = client_error(QueryErrorKind::Server, "no", "COMMIT");
        assert!(matches!(
            commit_outcome(refused, "COMMIT"),
            Error::Query(q) if q.kind == QueryErrorKind::Server
        ));
    }
}
