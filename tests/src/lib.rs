//! Support for pgdbm's cross-crate integration tests (in `tests/tests/`): every behaviour is one
//! generic test body run for both pool backends by [`both_backends!`].

use pgdbm::{Config, Database, Pool, Result};
use pgdbm_testkit::{unique_database_name, TestServer};

/// A fresh database on the shared test server, with `tweak` applied to its config.
pub async fn fresh_database<P: Pool>(
    prefix: &str,
    tweak: impl FnOnce(&mut Config),
) -> Result<Database<P>> {
    let config = fresh_config(prefix)?;
    let mut config = config;
    tweak(&mut config);
    Database::<P>::connect(config).await
}

/// The config of a fresh database on the shared test server (small pool).
pub fn fresh_config(prefix: &str) -> Result<Config> {
    let server = TestServer::shared()?;
    let name = unique_database_name(prefix)?;
    server.create_database(&name)?;
    let mut config = server.config(&name);
    config.min_connections = 1;
    config.max_connections = 4;
    Ok(config)
}

/// Checks out `n` connections at once and runs a query on each, so the pool holds `n` live
/// connections; returns them still checked out.
pub async fn hold_connections<P: Pool>(
    db: &Database<P>,
    n: usize,
) -> Result<Vec<pgdbm::DbConnection<P::Connection>>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut c = db.acquire().await?;
        c.execute("SELECT 1", &[]).await?;
        out.push(c);
    }
    Ok(out)
}

/// Runs a generic async test body `fn body<P: Pool>()` once per backend:
/// `both_backends!(name, body);` makes `name::deadpool` and `name::bb8`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deadpool() {
                super::$body::<pgdbm::DeadpoolPool>().await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bb8() {
                super::$body::<pgdbm::Bb8Pool>().await
            }
        }
    };
}
