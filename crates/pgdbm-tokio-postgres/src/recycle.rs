//! The recycling policy both pool adapters apply when a connection is returned or reused.

use std::time::{Duration, Instant};

use pgdbm_core::{Config, Error, Result};

use crate::connection::PgConnection;
use crate::probe::SocketState;

/// When a pooled connection may be reused. Shared by `pgdbm-deadpool` and `pgdbm-bb8`.
#[derive(Debug, Clone)]
pub struct RecyclePolicy {
    /// Statements after which the connection is closed (0 = no limit). From `Config::max_queries`.
    pub max_queries: u64,
    /// Longest life of a physical connection (`None` = no limit). From `Config::max_lifetime`.
    pub max_lifetime: Option<Duration>,
    /// Idle time after which the connection is closed. From
    /// `Config::max_inactive_connection_lifetime` (zero = no limit).
    pub max_idle: Duration,
    /// Idle time after which a liveness check runs before reuse (1 s).
    pub liveness_after: Duration,
    /// Idle time after which the socket is peeked at before reuse (1 ms): a connection
    /// handed back and out again sooner was answering a moment ago, and a busy pool would
    /// otherwise pay one system call per checkout for it.
    pub probe_after: Duration,
    /// Bound on the reset (`ROLLBACK`) and on the liveness check.
    pub reset_timeout: Duration,
}

impl RecyclePolicy {
    /// The policy `config` asks for.
    pub fn from_config(config: &Config) -> Self {
        RecyclePolicy {
            max_queries: config.max_queries,
            max_lifetime: config.max_lifetime,
            max_idle: config.max_inactive_connection_lifetime,
            liveness_after: Duration::from_secs(1),
            probe_after: Duration::from_millis(1),
            reset_timeout: reset_timeout(config),
        }
    }
}

/// Bound on settling, resetting or checking a pooled connection: the connect timeout, between
/// 100 ms and 5 s. The one definition, used by the checkout policy and the release path.
pub(crate) fn reset_timeout(config: &Config) -> Duration {
    Duration::from_secs(5).min(config.connect_timeout.max(Duration::from_millis(100)))
}

impl Default for RecyclePolicy {
    fn default() -> Self {
        RecyclePolicy::from_config(&Config::default())
    }
}

fn reject(label: &'static str, reason: String) -> Error {
    crate::metrics::connection_closed(label);
    Error::pool(format!("connection not reused: {reason}"))
}

/// Decides whether `conn` may be handed out again; called by the pools when a connection is
/// returned or about to be reused. `Err(reason)` means the pool must drop it.
///
/// In order: a broken connection, `max_queries` reached, `max_lifetime` exceeded or idle longer
/// than `max_idle` are rejected; a connection that still [needs a reset](PgConnection::needs_reset)
/// is reset (the release path normally did that already, see [`Pooled`](crate::Pooled)); one
/// idle longer than `liveness_after`, or idle longer than `probe_after` with unread bytes in
/// its socket, gets a liveness check (a socket the server closed is rejected at once). Both are bounded by
/// `reset_timeout`. A connection that passes is marked as checked out by a new borrower.
pub async fn recycle(conn: &mut PgConnection, policy: &RecyclePolicy) -> Result<()> {
    if conn.is_broken() {
        return Err(reject(
            "broken",
            "it is closed or was discarded".to_string(),
        ));
    }
    if policy.max_queries > 0 && conn.query_count() >= policy.max_queries {
        return Err(reject(
            "max_queries",
            format!(
                "it ran {} statements (max_queries = {})",
                conn.query_count(),
                policy.max_queries
            ),
        ));
    }
    let now = Instant::now();
    if let Some(max) = policy.max_lifetime {
        let age = now.saturating_duration_since(conn.created_at());
        if age >= max {
            return Err(reject(
                "max_lifetime",
                format!("it is {age:?} old (max_lifetime = {max:?})"),
            ));
        }
    }
    let idle = now.saturating_duration_since(conn.last_used());
    if !policy.max_idle.is_zero() && idle >= policy.max_idle {
        return Err(reject(
            "idle",
            format!(
                "it was idle for {idle:?} (max_inactive_connection_lifetime = {:?})",
                policy.max_idle
            ),
        ));
    }
    // An idle connection's socket should hold nothing: bytes waiting (often the server's
    // FATAL goodbye the connection task has not read yet) call for a round trip before reuse.
    let state = if idle >= policy.probe_after {
        conn.socket_state()
    } else {
        SocketState::Quiet
    };
    if state == SocketState::Closed {
        return Err(reject("peer_closed", "the server closed it".to_string()));
    }
    // The rare paths are boxed, so the checkout future that embeds this one stays small.
    if conn.needs_reset() {
        Box::pin(conn.reset(policy.reset_timeout))
            .await
            .map_err(|e| reject("reset_failed", format!("resetting it failed: {e}")))?;
    } else if idle >= policy.liveness_after || state == SocketState::Pending {
        Box::pin(conn.check_alive(policy.reset_timeout))
            .await
            .map_err(|e| reject("liveness_failed", format!("liveness check failed: {e}")))?;
    }
    conn.mark_checked_out();
    Ok(())
}
