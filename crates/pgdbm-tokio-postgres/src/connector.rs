//! [`Connector`]: what a pool backend needs to open and vet [`PgConnection`]s, written once for
//! pgdbm-deadpool and pgdbm-bb8 (and any third backend).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgdbm_core::{Config, Result};

use crate::connection::PgConnection;
use crate::recycle::{recycle, RecyclePolicy};

/// Longest timeout handed to a pool library: some compute `Instant::now() + timeout`, which
/// overflows for `Duration::MAX` ("no limit"). A century is no limit in practice.
pub const MAX_POOL_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `d`, at most [`MAX_POOL_TIMEOUT`].
pub fn saturate(d: Duration) -> Duration {
    d.min(MAX_POOL_TIMEOUT)
}

/// Opens and vets the connections of one pool: the validated config, the recycle policy, the
/// statement-cache epoch every connection shares, and the connection opened (with retries) by
/// [`Connector::start`] before the pool existed.
#[derive(Debug)]
pub struct Connector {
    config: Config,
    policy: RecyclePolicy,
    epoch: Arc<AtomicU64>,
    seeds: Mutex<Vec<PgConnection>>,
}

impl Connector {
    /// Validates `config` and opens the first connection with retries (an
    /// [`Error::Connection`](pgdbm_core::Error::Connection) when the server cannot be reached);
    /// [`open`](Self::open) hands it out first.
    pub async fn start(config: &Config) -> Result<Arc<Connector>> {
        config.validate()?;
        let epoch = Arc::new(AtomicU64::new(0));
        let mut first = PgConnection::connect(config).await?;
        first.set_cache_epoch(epoch.clone());
        Ok(Arc::new(Connector {
            config: config.clone(),
            policy: RecyclePolicy::from_config(config),
            epoch,
            seeds: Mutex::new(vec![first]),
        }))
    }

    /// The pool's config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The first connection, if [`open`](Self::open) has not handed it out yet.
    pub fn take_seed(&self) -> Option<PgConnection> {
        // A poisoned lock only means another task panicked while pushing/popping a Vec; the
        // Vec itself is still consistent, so keep using it.
        self.seeds.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// A connection for the pool: the seed, else a new one (one attempt; the pools retry).
    pub async fn open(&self) -> Result<PgConnection> {
        if let Some(conn) = self.take_seed() {
            return Ok(conn);
        }
        // Boxed: the connect future (TCP, TLS, authentication) is tens of kilobytes, and every
        // pool's checkout future embeds this one; unboxed, each checkout would move it.
        let mut conn = Box::pin(PgConnection::connect_once(&self.config)).await?;
        conn.set_cache_epoch(self.epoch.clone());
        Ok(conn)
    }

    /// Decides whether a pooled connection may be handed out ([`recycle`]); an error means
    /// the pool must close it.
    pub async fn vet(&self, conn: &mut PgConnection) -> Result<()> {
        recycle(conn, &self.policy).await.inspect_err(|e| {
            tracing::debug!(target: "pgdbm", error = %e, "pooled connection discarded");
        })
    }

    /// The current statement-cache epoch.
    pub fn cache_epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Invalidates every connection's statement cache (before its next statement).
    pub fn clear_statement_caches(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_timeouts_saturate() {
        assert_eq!(saturate(Duration::MAX), MAX_POOL_TIMEOUT);
        assert_eq!(saturate(Duration::from_secs(3)), Duration::from_secs(3));
        // What bb8 does with it must not overflow.
        assert!(std::time::Instant::now()
            .checked_add(MAX_POOL_TIMEOUT)
            .is_some());
    }
}
