//! Pool and query metrics (feature `metrics`), published through the `metrics` crate facade to
//! whatever recorder the application installed (a Prometheus exporter, say). Every metric is
//! labelled with `db.namespace` (the database name), so several databases of one process stay
//! apart. See docs/observability.md for the list.

use std::time::Duration;

use super::Ctx;
use crate::{Error, PoolStats, QueryErrorKind};

fn namespace(ctx: &Ctx) -> String {
    ctx.shared.config.database.clone()
}

/// The labels of a pool's metrics: `db.namespace`, plus `db.pool.role` = `replica` for the
/// read replica pool ([`Database::replica`](crate::Database::replica)), so its gauges do not
/// overwrite the primary pool's.
fn pool_labels(ctx: &Ctx) -> Vec<metrics::Label> {
    let mut labels = vec![metrics::Label::new("db.namespace", namespace(ctx))];
    if ctx.replica.is_some() {
        labels.push(metrics::Label::new("db.pool.role", "replica"));
    }
    labels
}

/// Publishes the pool gauges: `pgdbm.pool.size`, `.idle`, `.in_use`, `.waiting`, `.max_size`.
pub(super) fn pool_gauges(ctx: &Ctx, stats: PoolStats) {
    let labels = pool_labels(ctx);
    metrics::gauge!("pgdbm.pool.size", labels.clone()).set(stats.size as f64);
    metrics::gauge!("pgdbm.pool.idle", labels.clone()).set(stats.idle as f64);
    metrics::gauge!("pgdbm.pool.in_use", labels.clone()).set(stats.in_use as f64);
    metrics::gauge!("pgdbm.pool.waiting", labels.clone()).set(stats.waiting as f64);
    metrics::gauge!("pgdbm.pool.max_size", labels).set(stats.max_size as f64);
}

/// One checkout: `pgdbm.pool.acquire.wait` (seconds), and `pgdbm.pool.acquire.timeouts` when
/// it failed with a pool error.
pub(super) fn acquired(ctx: &Ctx, waited: Duration, error: Option<&Error>, stats: PoolStats) {
    let labels = pool_labels(ctx);
    metrics::histogram!("pgdbm.pool.acquire.wait", labels.clone()).record(waited.as_secs_f64());
    if let Some(Error::Pool { .. }) = error {
        metrics::counter!("pgdbm.pool.acquire.timeouts", labels).increment(1);
    }
    pool_gauges(ctx, stats);
}

/// One finished query: `pgdbm.query.duration` (seconds, by `operation`), and for a failure
/// `pgdbm.query.errors` (by `operation` and `sqlstate_class`, the first two SQLSTATE
/// characters or the kind of failure) and, for a timeout, `pgdbm.query.timeouts`.
pub(super) fn query(ctx: &Ctx, operation: &'static str, duration: Duration, error: Option<&Error>) {
    let ns = namespace(ctx);
    metrics::histogram!(
        "pgdbm.query.duration",
        "db.namespace" => ns.clone(),
        "operation" => operation
    )
    .record(duration.as_secs_f64());
    if let Some(e) = error {
        let class = match e {
            Error::Query(q) => match &q.sqlstate {
                Some(code) => code.get(..2).unwrap_or(code).to_string(),
                None => super::telemetry::error_type(e),
            },
            other => super::telemetry::error_type(other),
        };
        metrics::counter!(
            "pgdbm.query.errors",
            "db.namespace" => ns.clone(),
            "operation" => operation,
            "sqlstate_class" => class
        )
        .increment(1);
        if matches!(e, Error::Query(q) if q.kind == QueryErrorKind::Timeout) {
            metrics::counter!("pgdbm.query.timeouts", "db.namespace" => ns, "operation" => operation)
                .increment(1);
        }
    }
}
