//! `execute_many`: every row's Bind/Execute in one pipeline with one Sync per chunk (through the
//! wire shim). One chunk outside a transaction is one implicit transaction (its Sync commits
//! it, as asyncpg's `executemany`); more chunks share a `BEGIN`/`COMMIT`, and inside the
//! caller's transaction they share a savepoint.

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

/// Set once the shim carried a chunk of a prepared (named) statement, and of an unnamed one
/// (`StatementMode::Unnamed`): only then does `execute_many` rely on the chunk's Sync alone
/// for atomicity. Until then it wraps the chunk in `BEGIN`/`COMMIT`, so a request pattern the
/// shim does not know can still fall back to one request per row inside a transaction.
static PROVEN_NAMED: AtomicBool = AtomicBool::new(false);
static PROVEN_UNNAMED: AtomicBool = AtomicBool::new(false);

/// What a failure after an implicit transaction's rows were sent leaves uncertain.
const IMPLICIT_COMMIT: &str =
    "execute_many's rows (one implicit transaction, committed by their Sync)";

/// What a failure after pgdbm's own `COMMIT` was sent leaves uncertain.
const OWN_COMMIT: &str = "execute_many's COMMIT";

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
    /// The flag saying the shim has carried a chunk of this kind of statement.
    fn proven(&self) -> &'static AtomicBool {
        match self {
            ManyStmt::Named(_) => &PROVEN_NAMED,
            ManyStmt::Unnamed { .. } => &PROVEN_UNNAMED,
        }
    }

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
    /// An implicit transaction's row 0 ran on its own because the shim did not recognise the
    /// driver's request (cannot happen once the pattern was proven; kept as an error, not a
    /// silent partial batch).
    Unrecognised,
}

/// A row `execute_many` cannot send: (row index, kind, message, source).
type BadRow = (usize, QueryErrorKind, String, Option<pgdbm_core::BoxError>);

/// A failure inside `execute_many`.
struct ManyError {
    /// The failing row, when one failed.
    row: Option<usize>,
    cause: ManyCause,
    /// Set when the failure came after a commit was sent (pgdbm's own `COMMIT`, or the Sync
    /// of an implicit transaction) and the server's answer was not read: what was sent.
    at_commit: Option<&'static str>,
}

impl ManyError {
    fn driver(row: Option<usize>, e: tokio_postgres::Error) -> Self {
        ManyError {
            row,
            cause: ManyCause::Driver(e),
            at_commit: None,
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
        let begin_sql = self.settings().begin_sql.as_str();
        let open = match own_tx {
            false => Open::Savepoint,
            // One chunk: its Sync makes it one implicit transaction, no BEGIN/COMMIT round trips.
            // Not when BEGIN carries the startup settings (`SET LOCAL`, unnamed mode): without
            // a BEGIN the rows would run without them.
            true if rows.len() <= EXECUTE_MANY_CHUNK
                && begin_sql == "BEGIN"
                && batch_path_available()
                && stmt.proven().load(Ordering::Relaxed) =>
            {
                Open::Implicit { begin: begin_sql }
            }
            true => Open::Begin(begin_sql),
        };
        // The implicit transaction's commit goes out with its rows.
        let commit_sent = AtomicBool::new(matches!(open, Open::Implicit { .. }));
        let commit_label = match open {
            Open::Implicit { .. } => IMPLICIT_COMMIT,
            _ => OWN_COMMIT,
        };
        let outcome = self
            .bounded(deadline, async {
                Ok::<_, tokio_postgres::Error>(
                    pipeline_rows(
                        self.client(),
                        &self.batch,
                        &stmt,
                        rows,
                        encoded,
                        open,
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
            Err(e) if timed_out_at_commit => Err(commit_outcome(e, commit_label)),
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
                match many.at_commit {
                    Some(what) => commit_outcome(err, what),
                    None => err,
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
                match many.at_commit {
                    Some(what) => commit_outcome(
                        client_error(
                            QueryErrorKind::Connection,
                            "the connection ended before the server's answer to the chunk arrived; the connection is discarded",
                            sql,
                        ),
                        what,
                    ),
                    None => client_error(
                        QueryErrorKind::Connection,
                        "execute_many lost its connection in the middle of a chunk; nothing was committed and the connection is discarded, retry on a new one",
                        sql,
                    ),
                }
            }
            ManyCause::Unrecognised => {
                shim_mismatch();
                client_error(
                    QueryErrorKind::Client,
                    "the wire shim did not recognise tokio-postgres's request, so row 0 ran and committed on its own and the other rows were not sent (pgdbm bug: please report); later calls send every row as its own request inside BEGIN/COMMIT",
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

/// How `execute_many` makes its rows all-or-nothing.
#[derive(Clone, Copy)]
enum Open<'a> {
    /// Outside a transaction, one chunk, the shim proven: the chunk's single Sync ends one
    /// implicit transaction. `begin` is used if the shim cannot be armed after all.
    Implicit { begin: &'a str },
    /// Outside a transaction: this `BEGIN`, then `COMMIT` after the last chunk.
    Begin(&'a str),
    /// Inside the caller's transaction: a savepoint around the chunks.
    Savepoint,
}

/// One chunk as one implicit transaction: the shim is armed with rows `1..n`, row 0 goes out
/// as a plain tokio-postgres `execute`, and the chunk's Sync commits all rows or, after a
/// failing row, none (the server skips to the Sync and rolls back). No `BEGIN`/`COMMIT`
/// round trips. Gives `rest` back, with nothing sent, when the shim cannot be armed.
async fn implicit_chunk(
    client: &Client,
    batch: &Batch,
    stmt: &ManyStmt<'_>,
    rows: &[&[Param<'_>]],
    rest: Rows,
) -> std::result::Result<std::result::Result<u64, ManyError>, Rows> {
    let Some(first) = rows.first() else {
        return Ok(Ok(0));
    };
    let injected = rest.len() > 0;
    // Dropped before the chunk's answer is read, the connection is poisoned: the shim may
    // still be following the chunk.
    let mut guard = ArmGuard::new(batch);
    if injected {
        if let Err(rest) = batch.arm(rest) {
            guard.complete();
            return Err(rest);
        }
    }
    let first_result = stmt.execute(client, first).await;
    let outcome = if injected {
        batch.take_outcome()
    } else {
        Outcome::default()
    };
    guard.complete();
    // A server error is definite (the implicit transaction rolled back); no answer after the
    // Sync went out leaves the commit unknown.
    match chunk_end(first_result, injected, outcome, rows.len()) {
        ChunkEnd::Done(n) => Ok(Ok(n)),
        ChunkEnd::Refused(row, cause) => Ok(Err(ManyError {
            row,
            cause,
            at_commit: None,
        })),
        ChunkEnd::NoAnswer(e) => Ok(Err(ManyError {
            row: None,
            cause: e.map_or(ManyCause::Lost, ManyCause::Driver),
            at_commit: Some(IMPLICIT_COMMIT),
        })),
        ChunkEnd::Unrecognised(_) => Ok(Err(ManyError {
            row: None,
            cause: ManyCause::Unrecognised,
            at_commit: None,
        })),
    }
}

/// How one chunk ended, from row 0's tokio-postgres result and what the shim saw of rows
/// `1..n`.
enum ChunkEnd {
    /// Every row ran: their total row count.
    Done(u64),
    /// The server refused row `k` (within the chunk), or the chunk's commit (`None`, an error
    /// after the last row's answer, such as a deferred constraint in an implicit transaction).
    Refused(Option<usize>, ManyCause),
    /// No answer from the server: the connection failed (with the driver's error, if any).
    NoAnswer(Option<tokio_postgres::Error>),
    /// Row 0 ran (its row count) but the shim never saw its Bind/Execute/Sync: the driver's
    /// message pattern is not the one the shim knows, and rows `1..n` were not sent.
    Unrecognised(u64),
}

fn chunk_end(
    first: std::result::Result<u64, tokio_postgres::Error>,
    armed: bool,
    outcome: Outcome,
    len: usize,
) -> ChunkEnd {
    let refused = |k: usize, e: ServerError| {
        ChunkEnd::Refused((k < len).then_some(k), ManyCause::Server(Box::new(e)))
    };
    match first {
        // A later row's fatal error (57P01...) closed the connection: report it.
        Err(_) if outcome.error.is_some() => match outcome.error {
            Some((k, e)) => refused(k, e),
            None => ChunkEnd::NoAnswer(None),
        },
        Err(e) if e.as_db_error().is_some() => ChunkEnd::Refused(Some(0), ManyCause::Driver(e)),
        Err(e) => ChunkEnd::NoAnswer(Some(e)),
        Ok(n) if !armed => ChunkEnd::Done(n),
        Ok(n) => match outcome {
            Outcome {
                injected: true,
                complete: true,
                error: None,
                rows,
            } => ChunkEnd::Done(n + rows),
            Outcome {
                injected: true,
                complete: true,
                error: Some((k, e)),
                ..
            } => refused(k, e),
            Outcome {
                injected: false,
                complete: true,
                ..
            } => ChunkEnd::Unrecognised(n),
            _ => ChunkEnd::NoAnswer(None),
        },
    }
}

/// The pipelined part of `execute_many`. [`Open::Implicit`]: one [`implicit_chunk`]. Else it
/// opens (`BEGIN`, or a SAVEPOINT in the caller's transaction), then for each chunk arms the
/// wire shim with the chunk's rows `1..n` and issues one tokio-postgres `execute` for row 0,
/// which the shim turns into the whole chunk with one Sync (see [`crate::wire`]), and closes
/// (COMMIT or RELEASE) after the last chunk, or rolls back when a row failed. Returns the
/// total row count or the first failing row.
async fn pipeline_rows(
    client: &Client,
    batch: &Batch,
    stmt: &ManyStmt<'_>,
    rows: &[&[Param<'_>]],
    mut encoded: Vec<Rows>,
    open: Open<'_>,
    commit_sent: &AtomicBool,
) -> std::result::Result<u64, ManyError> {
    let own_tx = match open {
        Open::Implicit { begin } => {
            let rest = if encoded.len() == 1 {
                encoded.pop().unwrap_or_default()
            } else {
                Rows::default()
            };
            match implicit_chunk(client, batch, stmt, rows, rest).await {
                Ok(done) => return done,
                Err(rest) => {
                    // Not armed, nothing sent: the explicit way, with the rows given back.
                    commit_sent.store(false, Ordering::Relaxed);
                    encoded = vec![rest];
                    Some(begin)
                }
            }
        }
        Open::Begin(begin) => Some(begin),
        Open::Savepoint => None,
    };
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
    if let Err(e) = client.batch_execute(&open).await {
        guard.complete();
        return Err(ManyError::driver(None, e));
    }
    let mut total = 0u64;
    let mut base = 0usize;

    for (chunk, rest) in rows.chunks(EXECUTE_MANY_CHUNK).zip(encoded) {
        let injected = rest.len();
        let Some(first) = chunk.first() else { break };
        let armed = injected > 0 && batch_path_available() && batch.arm(rest).is_ok();
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
            match chunk_end(first_result, armed, outcome, chunk.len()) {
                ChunkEnd::Done(n) => {
                    if armed {
                        stmt.proven().store(true, Ordering::Relaxed);
                    }
                    total += n;
                    None
                }
                ChunkEnd::Refused(k, cause) => Some(ManyError {
                    row: k.map(|k| base + k),
                    cause,
                    at_commit: None,
                }),
                // Inside BEGIN or a savepoint nothing is committed yet.
                ChunkEnd::NoAnswer(Some(e)) => Some(ManyError::driver(Some(base), e)),
                ChunkEnd::NoAnswer(None) => Some(ManyError {
                    row: None,
                    cause: ManyCause::Lost,
                    at_commit: None,
                }),
                // Rows 1..n were not sent; send them the plain way and stop using the shim.
                ChunkEnd::Unrecognised(n) => {
                    shim_mismatch();
                    total += n;
                    plain_rows(client, stmt, chunk.get(1..).unwrap_or_default(), base + 1)
                        .await
                        .map(|m| total += m)
                        .err()
                }
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
    let at_commit = own_tx.then_some(OWN_COMMIT);
    client
        .batch_execute(&close_ok)
        .await
        .map_err(|e| ManyError {
            row: None,
            cause: ManyCause::Driver(e),
            at_commit,
        })?;
    Ok(total)
}
