//! Connection metrics of the adapter (feature `metrics`): `pgdbm.connections.closed`, a
//! counter labelled by `reason`, published through the `metrics` crate facade. Without the
//! feature the calls compile to nothing.

/// Counts one connection closed (or refused for reuse) for `reason`: `broken`,
/// `reset_failed`, `no_runtime`, `max_queries`, `max_lifetime`, `idle`, `liveness_failed`, `peer_closed`.
#[inline]
pub(crate) fn connection_closed(reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("pgdbm.connections.closed", "reason" => reason).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}
