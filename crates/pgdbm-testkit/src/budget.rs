//! The connection cap: one budget per [`TestServer`](crate::TestServer) of a process, so that
//! many tests running in parallel stay under the server's `max_connections`.
//!
//! Every pool the testkit builds ([`TestServer::manager`](crate::TestServer::manager),
//! [`TestDatabase::manager`](crate::TestDatabase::manager) and the fixture counterparts) takes
//! as many permits as its `max_connections` before it opens, and gives them back once the
//! manager is dropped and the server shows none of its sessions left. The cap is the server's
//! `max_connections` minus `superuser_reserved_connections` minus a reserve for the testkit's
//! own admin connections and a human's `psql`, or [`TEST_MAX_CONNECTIONS_ENV`] when set.

use std::sync::Arc;
use std::time::Duration;

use pgdbm_core::{Error, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Overrides the connection cap of testkit-built pools (a positive number of connections). Set
/// it when several test processes share one server (`TEST_DB_HOST`): each process has its own
/// cap, so divide the server's limit between them.
pub const TEST_MAX_CONNECTIONS_ENV: &str = "PGDBM_TEST_MAX_CONNECTIONS";

/// Connections the testkit's admin thread may hold at once (create, drop, sweep, queries).
pub(crate) const ADMIN_CONNECTIONS: usize = 4;

/// Left free beyond the admin connections and `superuser_reserved_connections`: a human's
/// `psql` and a test's own direct connections (for example one watching `pg_stat_activity`).
pub(crate) const SPARE_CONNECTIONS: usize = 2;

/// How long a pool waits for permits before failing (the cap is exhausted, for example by a
/// test holding several managers while others wait).
pub(crate) const PERMIT_TIMEOUT: Duration = Duration::from_secs(120);

/// The cap for a server with `max_connections` and `superuser_reserved_connections`, or the
/// `override_` value. At least 2 (one pool of the default size).
pub(crate) fn cap_for(max_connections: usize, superuser_reserved: usize) -> usize {
    max_connections
        .saturating_sub(superuser_reserved + ADMIN_CONNECTIONS + SPARE_CONNECTIONS)
        .max(2)
}

/// Parses [`TEST_MAX_CONNECTIONS_ENV`].
pub(crate) fn parse_override(value: &str) -> Result<usize> {
    value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            Error::config(
                TEST_MAX_CONNECTIONS_ENV,
                format!("`{value}` is not a positive number of connections, e.g. 50"),
            )
        })
}

/// The permits of one server.
#[derive(Debug)]
pub(crate) struct Budget {
    semaphore: Arc<Semaphore>,
    cap: usize,
}

impl Budget {
    pub(crate) fn new(cap: usize) -> Budget {
        // A semaphore holds at most `MAX_PERMITS`, and permits are taken as a `u32`.
        let cap = cap.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize);
        Budget {
            semaphore: Arc::new(Semaphore::new(cap)),
            cap,
        }
    }

    /// The cap.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Permits not taken now.
    pub(crate) fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// Takes `n` permits, waiting (without blocking the runtime) for other tests to give theirs
    /// back, at most [`PERMIT_TIMEOUT`].
    pub(crate) async fn take(&self, n: usize) -> Result<OwnedSemaphorePermit> {
        if n > self.cap {
            return Err(Error::config(
                "max_connections",
                format!(
                    "a test pool of {n} connections is larger than the testkit's connection cap \
                     of {} for this server; lower max_connections or set \
                     {TEST_MAX_CONNECTIONS_ENV}",
                    self.cap
                ),
            ));
        }
        // `n <= cap`, and the cap came from a `usize` the semaphore accepted.
        let permits = u32::try_from(n).unwrap_or(u32::MAX);
        let acquire = Arc::clone(&self.semaphore).acquire_many_owned(permits);
        match tokio::time::timeout(PERMIT_TIMEOUT, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Error::pool("the testkit's connection budget was closed")),
            Err(_) => Err(Error::Pool {
                message: format!(
                    "waited {PERMIT_TIMEOUT:?} for {n} of the testkit's {} connections to this \
                     server ({} free): tests hold that many pools open; drop managers sooner, \
                     use fewer per test, or raise {TEST_MAX_CONNECTIONS_ENV}",
                    self.cap,
                    self.available()
                ),
                in_use: Some(self.cap - self.available()),
                max_size: Some(self.cap),
                source: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_leaves_the_reserve() {
        assert_eq!(cap_for(300, 3), 291);
        assert_eq!(cap_for(20, 3), 11);
        assert_eq!(cap_for(5, 3), 2);
    }

    #[test]
    fn override_must_be_positive() {
        assert_eq!(parse_override(" 40 ").unwrap(), 40);
        for bad in ["0", "-1", "many", ""] {
            let e = parse_override(bad).unwrap_err();
            assert!(e.to_string().contains(TEST_MAX_CONNECTIONS_ENV), "{e}");
        }
    }

    #[tokio::test]
    async fn permits_come_back() {
        let b = Budget::new(3);
        let p = b.take(2).await.unwrap();
        assert_eq!(b.available(), 1);
        drop(p);
        assert_eq!(b.available(), 3);
        assert!(b.take(4).await.is_err());
        assert_eq!(Budget::new(usize::MAX).cap(), u32::MAX as usize);
    }
}
