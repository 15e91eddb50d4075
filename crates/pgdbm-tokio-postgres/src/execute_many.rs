//! `execute_many`: every row's Bind/Execute in one pipeline with one Sync per chunk (through the
//! wire shim), inside `BEGIN`/`COMMIT` or a savepoint of the caller's transaction.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgdbm_core::{Error, Param, QueryError, QueryErrorKind, Result};
use postgres_types::Type;
use tokio_postgres::{Client, Statement};

use crate::connection::{commit_outcome, PgConnection, Stmt};
use crate::deadline::{deadline_of, Bounded};
use crate::errors::{
    classify, client_error, discards_connection, params_shown, query_error, server_error,
};
use crate::json;
use crate::wire::{encode_bind, ArmGuard, Batch, Outcome, Rows, ServerError, TxStatus};

/// Rows sent per pipelined chunk (one Sync, see [`crate::wire`]) by `execute_many`; bounds the
/// memory of the encoded rows held for a chunk. Within one call the chunks share the
/// `BEGIN`/`COMMIT` (or savepoint), so a multi-chunk batch stays all-or-nothing.
const EXECUTE_MANY_CHUNK: usize = 16384;

/// Rows sent at once, each its own request, when the shim cannot be used.
const PLAIN_PIPELINE: usize = 256;

const EXECUTE_MANY_SAVEPOINT: &str = "pgdbm_execute_many";

/// Set when the shim did not recognise tokio-postgres's request pattern (a changed driver):
/// from then on `execute_many` sends each row as its own request, which is slower but correct.
static SHIM_UNUSABLE: AtomicBool = AtomicBool::new(false);

/// True while the wire shim's batch path is in use (it was never found not to match the
/// driver's messages).
pub fn batch_path_available() -> bool {
    !SHIM_UNUSABLE.load(Ordering::Relaxed)
}

fn shim_mismatch() {
    if !SHIM_UNUSABLE.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            target: "pgdbm",
            "execute_many: the wire shim did not see tokio-postgres's Bind/Execute/Sync where it \
             expects them (was tokio-postgres upgraded past the pinned version?); falling back to \
             one request per row for the rest of this process. Please report this."
        );
    }
}

/// The statement `execute_many` runs: a prepared one, or (`StatementMode::Unnamed`) the SQL
/// text with its described parameter types, parsed unnamed by each chunk's row 0 (the shim's
/// rows `1..n` bind that unnamed statement, in the same pipeline before its Sync).
enum ManyStmt<'s> {
    Named(Statement),
    Unnamed { sql: &'s str, types: Arc<[Type]> },
}

impl ManyStmt<'_> {
    fn params(&self) -> &[Type] {
        match self {
            ManyStmt::Named(s) => s.params(),
            ManyStmt::Unnamed { types, .. } => types,
        }
    }

    /// Runs one row as its own request.
    async fn execute(
        &self,
        client: &Client,
        row: &[Param<'_>],
    ) -> std::result::Result<u64, tokio_postgres::Error> {
        match self {
            ManyStmt::Named(s) => client.execute(s, row).await,
            ManyStmt::Unnamed { sql, types } => {
                let pairs: Vec<(Param<'_>, Type)> =
                    row.iter().copied().zip(types.iter().cloned()).collect();
                client.execute_typed(sql, &pairs).await
            }
        }
    }
}

/// Why `execute_many` failed.
enum ManyCause {
    /// tokio-postgres reported it (row 0 of a chunk, the open or close statement, or I/O).
    Driver(tokio_postgres::Error),
    /// A later row of a chunk failed on the server (read by the wire shim).
    Server(Box<ServerError>),
    /// The wire shim did not see the chunk through (the connection ended mid-chunk).
    Lost,
}

/// A row `execute_many` cannot send: (row index, kind, message, source).
type BadRow = (usize, QueryErrorKind, String, Option<pgdbm_core::BoxError>);

/// A failure inside `execute_many`.
struct ManyError {
    /// The failing row, when one failed.
    row: Option<usize>,
    cause: ManyCause,
    /// The failure is the answer to the closing `COMMIT` of pgdbm's own transaction.
    at_commit: bool,
}

impl ManyError {
    fn driver(row: Option<usize>, e: tokio_postgres::Error) -> Self {
        ManyError {
            row,
            cause: ManyCause::Driver(e),
            at_commit: false,
        }
    }
}

impl PgConnection {
    pub(crate) async fn run_execute_many(
        &mut self,
        sql: &str,
        rows: &[&[Param<'_>]],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.ready_for(sql).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let started = Instant::now();
        let deadline = deadline_of(timeout);
        let n_params = rows.first().map_or(0, |r| r.len());
        let stmt = match self
            .statement(sql, n_params, deadline, timeout, false)
            .await?
        {
            Stmt::Prepared(s) => ManyStmt::Named(s),
            Stmt::Typed(d) => ManyStmt::Unnamed {
                sql,
                types: d.params,
            },
            // `statement` never answers Unnamed when `allow_unnamed` is false.
            Stmt::Unnamed => {
                return Err(client_error(
                    QueryErrorKind::Client,
                    "execute_many needs a prepared statement (pgdbm bug: please report)",
                    sql,
                ))
            }
        };
        // JSON text for json/jsonb parameters (see `json`): rows re-borrowed through wrappers.
        let (cells, refs): (Vec<Vec<json::JsonText<'_>>>, Vec<Vec<Param<'_>>>);
        let wrapped: Vec<&[Param<'_>]>;
        let rows = if json::has_json(stmt.params()) {
            cells = json::wrap_rows(rows);
            refs = cells
                .iter()
                .map(|r| r.iter().map(|c| c as Param<'_>).collect())
                .collect();
            wrapped = refs.iter().map(Vec::as_slice).collect();
            &wrapped[..]
        } else {
            rows
        };
        let encoded = match encode_rows(&stmt, rows) {
            Ok(encoded) => encoded,
            Err((row, kind, message, source)) => {
                let bad: &[Param<'_>] = rows.get(row).copied().unwrap_or(&[]);
                let mut q = QueryError::new(
                    kind,
                    format!("row {row} of {}: {message}; nothing was sent", rows.len()),
                    sql,
                )
                .with_params(params_shown(bad, self.settings().log_parameters))
                .with_values_shown(self.settings().log_parameters);
                q.row = Some(row);
                q.source = source;
                self.record(started, None, false);
                return Err(q.into());
            }
        };
        // The server's word, not a guess: outside a transaction, execute_many opens its own.
        let own_tx = self.tx_status() == TxStatus::Idle;
        let commit_sent = AtomicBool::new(false);
        let begin_sql = self.settings().begin_sql.as_str();
        let outcome = self
            .bounded(deadline, async {
                Ok::<_, tokio_postgres::Error>(
                    pipeline_rows(
                        self.client(),
                        &self.batch,
                        &stmt,
                        rows,
                        encoded,
                        own_tx.then_some(begin_sql),
                        &commit_sent,
                    )
                    .await,
                )
            })
            .await;
        self.query_count += rows.len() as u64;
        self.last_used = Instant::now();
        let timed_out_at_commit =
            matches!(outcome, Bounded::TimedOut { .. }) && commit_sent.load(Ordering::Relaxed);
        let result = match self.settle(outcome, sql, n_params, timeout) {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(many)) => Err(self.many_error(many, sql, rows, n_params)),
            Err(e) if timed_out_at_commit => Err(commit_outcome(e, "execute_many's COMMIT")),
            Err(e) => Err(e),
        };
        self.record(started, result.as_ref().ok().copied(), result.is_ok());
        result
    }

    fn many_error(
        &mut self,
        many: ManyError,
        sql: &str,
        rows: &[&[Param<'_>]],
        n_params: usize,
    ) -> Error {
        let row_params = many
            .row
            .and_then(|r| rows.get(r))
            .map_or(n_params, |r| r.len());
        let mut err = match many.cause {
            ManyCause::Driver(e) => {
                if discards_connection(&e) {
                    self.mark_broken();
                }
                let err = query_error(e, sql, row_params);
                if many.at_commit {
                    commit_outcome(err, "execute_many's COMMIT")
                } else {
                    err
                }
            }
            ManyCause::Server(e) => {
                if classify(&e.code).discards_connection {
                    self.mark_broken();
                }
                server_error(*e, sql, row_params)
            }
            ManyCause::Lost => {
                self.mark_broken();
                client_error(
                    QueryErrorKind::Connection,
                    "execute_many lost its connection in the middle of a chunk; nothing was committed and the connection is discarded, retry on a new one",
                    sql,
                )
            }
        };
        if let Error::Query(q) = &mut err {
            q.row = many.row;
            q.values_shown = self.settings().log_parameters;
            if let Some(params) = many.row.and_then(|r| rows.get(r)) {
                q.params = params_shown(params, self.settings().log_parameters);
            }
            if let Some(r) = many.row {
                q.message = format!(
                    "row {r} of {}: {}; no row was applied",
                    rows.len(),
                    q.message
                );
            }
        }
        err
    }
}

/// Encodes every row of `execute_many` before anything is sent: the parameter count must
/// match and every value must serialize to its parameter type (what tokio-postgres checks
/// when it builds a Bind). Rows `1..n` of each chunk are kept (the wire shim writes them);
/// each chunk's row 0 is only checked (tokio-postgres encodes it again). The error names
/// the first bad row, with the texts tokio-postgres would use.
fn encode_rows(
    stmt: &ManyStmt<'_>,
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

/// Runs rows one request each (pipelined in groups): the path when the shim cannot be used.
async fn plain_rows(
    client: &Client,
    stmt: &ManyStmt<'_>,
    rows: &[&[Param<'_>]],
    base: usize,
) -> std::result::Result<u64, ManyError> {
    let mut total = 0;
    for (g, group) in rows.chunks(PLAIN_PIPELINE).enumerate() {
        let answers =
            futures_util::future::join_all(group.iter().map(|p| stmt.execute(client, p))).await;
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(n) => total += n,
                Err(e) => return Err(ManyError::driver(Some(base + g * PLAIN_PIPELINE + i), e)),
            }
        }
    }
    Ok(total)
}

/// The pipelined part of `execute_many`: opens (`own_tx`: that BEGIN, else a SAVEPOINT), then for each chunk
/// arms the wire shim with the chunk's rows `1..n` and issues one tokio-postgres `execute`
/// for row 0, which the shim turns into the whole chunk with one Sync (see
/// [`crate::wire`]), and closes (COMMIT or RELEASE) after the last chunk, or rolls back
/// when a row failed. Returns the total row count or the first failing row.
async fn pipeline_rows(
    client: &Client,
    batch: &Batch,
    stmt: &ManyStmt<'_>,
    rows: &[&[Param<'_>]],
    encoded: Vec<Rows>,
    own_tx: Option<&str>,
    commit_sent: &AtomicBool,
) -> std::result::Result<u64, ManyError> {
    let (open, close_ok, close_err) = if let Some(begin) = own_tx {
        (
            begin.to_string(),
            "COMMIT".to_string(),
            "ROLLBACK".to_string(),
        )
    } else {
        (
            format!("SAVEPOINT {EXECUTE_MANY_SAVEPOINT}"),
            format!("RELEASE SAVEPOINT {EXECUTE_MANY_SAVEPOINT}"),
            format!(
                "ROLLBACK TO SAVEPOINT {EXECUTE_MANY_SAVEPOINT}; RELEASE SAVEPOINT {EXECUTE_MANY_SAVEPOINT}"
            ),
        )
    };

    // Dropped (the caller cancelled execute_many) before the closing statement is queued,
    // the connection is poisoned and will be closed: the shim may be armed for a request
    // that never comes.
    let mut guard = ArmGuard::new(batch);
    // Waiting for the open also makes the connection idle (every earlier request, such as
    // the Close of an evicted statement, is answered), which arming the shim requires.
    if let Err(e) = client.batch_execute(&open).await {
        guard.complete();
        return Err(ManyError::driver(None, e));
    }
    let mut total = 0u64;
    let mut base = 0usize;

    for (chunk, rest) in rows.chunks(EXECUTE_MANY_CHUNK).zip(encoded) {
        let injected = rest.len();
        let Some(first) = chunk.first() else { break };
        let armed = injected > 0 && batch_path_available() && batch.arm(rest);
        let failure = if injected > 0 && !armed {
            plain_rows(client, stmt, chunk, base)
                .await
                .map(|n| total += n)
                .err()
        } else {
            let first_result = stmt.execute(client, first).await;
            let outcome = if armed {
                batch.take_outcome()
            } else {
                Outcome::default()
            };
            match first_result {
                // A later row's fatal error (57P01...) closed the connection: report it.
                Err(_) if outcome.error.is_some() => outcome.error.map(|(k, e)| ManyError {
                    row: Some(base + k),
                    cause: ManyCause::Server(Box::new(e)),
                    at_commit: false,
                }),
                Err(e) => Some(ManyError::driver(Some(base), e)),
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
                        at_commit: false,
                    }),
                    // Row 0 ran but the shim never saw its Bind/Execute/Sync: the driver's
                    // message pattern is not the one the shim knows. Rows 1..n were not
                    // sent; send them the plain way and stop using the shim.
                    Outcome {
                        injected: false,
                        complete: true,
                        ..
                    } => {
                        shim_mismatch();
                        total += n;
                        plain_rows(client, stmt, chunk.get(1..).unwrap_or_default(), base + 1)
                            .await
                            .map(|m| total += m)
                            .err()
                    }
                    _ => Some(ManyError {
                        row: None,
                        cause: ManyCause::Lost,
                        at_commit: false,
                    }),
                },
            }
        };
        if let Some(f) = failure {
            // A row failed: the transaction (or savepoint) is aborted; roll it back. The
            // first poll of the await below queues the rollback before any drop can happen.
            guard.complete();
            let _ = client.batch_execute(&close_err).await;
            return Err(f);
        }
        base += chunk.len();
    }
    // As above: the first poll queues the close.
    guard.complete();
    let own_tx = own_tx.is_some();
    commit_sent.store(own_tx, Ordering::Relaxed);
    client
        .batch_execute(&close_ok)
        .await
        .map_err(|e| ManyError {
            row: None,
            cause: ManyCause::Driver(e),
            at_commit: own_tx,
        })?;
    Ok(total)
}
