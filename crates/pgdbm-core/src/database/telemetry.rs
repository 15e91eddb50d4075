//! The one span of each query, following OpenTelemetry's database semantic conventions
//! (`db.system.name`, `db.namespace`, `db.operation.name`, `db.query.text` without literal
//! values, `server.address`, `server.port`, `db.response.status_code`, `error.type`).
//!
//! The span is opened at `debug` level under the target `pgdbm`. Its attributes are computed
//! only when a subscriber records it: a disabled span costs one `enabled` check.

use tracing::field::Empty;

use super::Ctx;
use crate::monitor::normalize_query;
use crate::sql::operation_name;
use crate::{Error, QueryErrorKind};

/// Opens the span of one query: `operation` is pgdbm's method (`fetch_all`...), `sql` the
/// rendered statement.
pub(super) fn query_span(ctx: &Ctx, operation: &'static str, sql: &str) -> tracing::Span {
    // No tracing subscriber was ever installed: no span can be recorded. Returned before the
    // macro, which otherwise hands every field to the `log` facade when any crate in the
    // build turns on tracing's `log` feature (a cost per query with nobody listening).
    if !tracing::dispatcher::has_been_set() {
        return tracing::Span::none();
    }
    let span = tracing::debug_span!(
        target: "pgdbm",
        "query",
        otel.name = Empty,
        otel.kind = "client",
        db.system.name = "postgresql",
        db.namespace = Empty,
        db.operation.name = Empty,
        db.query.text = Empty,
        server.address = Empty,
        server.port = Empty,
        db.response.status_code = Empty,
        db.response.returned_rows = Empty,
        error.type = Empty,
        pgdbm.operation = operation,
        duration_ms = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let config = &ctx.shared.config;
    let namespace = match ctx.schema.as_deref() {
        Some(schema) => format!("{}|{schema}", config.database),
        None => config.database.clone(),
    };
    let op = operation_name(sql);
    span.record(
        "otel.name",
        match &op {
            Some(op) => format!("{op} {}", config.database),
            None => config.database.clone(),
        },
    );
    span.record("db.namespace", namespace);
    if let Some(op) = &op {
        span.record("db.operation.name", op.as_str());
    }
    span.record(
        "db.query.text",
        crate::error::truncate_sql(&normalize_query(sql), crate::error::MAX_DISPLAYED_SQL).as_ref(),
    );
    span.record("server.address", config.host.as_str());
    span.record("server.port", config.port);
    span
}

/// Records the outcome of a query on its span: rows, duration, and for a failure the SQLSTATE
/// (`db.response.status_code`) and `error.type` (the SQLSTATE, else the kind of failure).
pub(super) fn record_outcome(
    span: &tracing::Span,
    rows: Option<u64>,
    duration_ms: Option<f64>,
    error: Option<&Error>,
) {
    if span.is_disabled() {
        return;
    }
    if let Some(ms) = duration_ms {
        span.record("duration_ms", ms);
    }
    if let Some(n) = rows {
        span.record("db.response.returned_rows", n);
    }
    if let Some(e) = error {
        span.record("error.type", error_type(e).as_str());
        if let Error::Query(q) = e {
            if let Some(code) = &q.sqlstate {
                span.record("db.response.status_code", code.as_str());
            }
        }
    }
}

/// OpenTelemetry's `error.type`: the SQLSTATE when the server gave one, else a low-cardinality
/// name of the failure.
pub(crate) fn error_type(e: &Error) -> String {
    match e {
        Error::Query(q) => match (&q.sqlstate, q.kind) {
            (Some(code), _) => code.clone(),
            (None, QueryErrorKind::Timeout) => "timeout".into(),
            (None, QueryErrorKind::Connection) => "connection".into(),
            (None, QueryErrorKind::Conversion) => "conversion".into(),
            (None, QueryErrorKind::Client) => "client".into(),
            (None, QueryErrorKind::CommitOutcomeUnknown) => "commit_outcome_unknown".into(),
            (None, QueryErrorKind::Server) => "server".into(),
        },
        Error::Pool { .. } => "pool".into(),
        Error::Transaction { .. } => "transaction".into(),
        _ => "other".into(),
    }
}
