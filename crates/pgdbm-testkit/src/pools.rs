//! Pools the testkit builds for tests: small by default (min 0, max 2), counted against the
//! server's connection cap ([`crate::budget`]), and logging their SQL when `log_sql` is on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pgdbm_core::ident::quote_identifier;
use pgdbm_core::{Config, Database, Pool, QueryEvent, QueryObserver, Result};
use tokio::sync::OwnedSemaphorePermit;

use crate::admin::{Admin, Op};
use crate::budget::{self, Budget, TEST_MAX_CONNECTIONS_ENV};
use crate::{TestConfig, TestServer};

/// `min_connections` of a pool the testkit builds for a test: none opened before they are used.
pub const TEST_POOL_MIN_CONNECTIONS: usize = 0;

/// `max_connections` of a pool the testkit builds for a test: two, so that hundreds of tests
/// in parallel fit under a server's `max_connections` while a test can still hold a
/// transaction and run one more query.
pub const TEST_POOL_MAX_CONNECTIONS: usize = 2;

/// A fresh `application_name` for one testkit-built pool: how the server tells its sessions
/// apart, so that the pool's permits are given back only once they are gone.
fn pool_application_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "pgdbm-testkit-pool-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Attached to every testkit-built manager: holds its permits (given back when the last clone
/// of the manager is dropped and the server shows none of its sessions), logs its SQL when
/// `log_sql` is on and its query count when `verbose` is on.
struct TestPoolObserver {
    database: String,
    permit: Option<OwnedSemaphorePermit>,
    application_name: Option<String>,
    admin: Admin,
    log_sql: bool,
    verbose: bool,
    queries: AtomicU64,
}

impl QueryObserver for TestPoolObserver {
    fn on_query(&self, event: &QueryEvent<'_>) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        if self.log_sql {
            let ms = event.duration.as_secs_f64() * 1000.0;
            match event.error {
                None => tracing::info!(target: "pgdbm::testkit::sql", database = %self.database,
                    operation = event.operation, schema = event.schema, rows = event.rows,
                    duration_ms = ms, "{}", event.sql),
                Some(e) => tracing::info!(target: "pgdbm::testkit::sql", database = %self.database,
                    operation = event.operation, schema = event.schema, duration_ms = ms,
                    error = %e, "{}", event.sql),
            }
        }
    }
}

impl Drop for TestPoolObserver {
    fn drop(&mut self) {
        if self.verbose {
            tracing::info!(target: "pgdbm::testkit", database = %self.database,
                queries = self.queries.load(Ordering::Relaxed), "test database manager dropped");
        }
        let Some(permit) = self.permit.take() else {
            return;
        };
        match self.application_name.take() {
            // Give the permits back once the server shows the pool's sessions gone.
            Some(application_name) => self
                .admin
                .spawn(Op::WaitGone { application_name }, move |_| drop(permit)),
            None => drop(permit),
        }
    }
}

impl TestServer {
    /// The connection budget of this server, read from it on first use.
    pub(crate) async fn budget(&self) -> Result<&Budget> {
        self.budget
            .get_or_try_init(|| async {
                let cap = match std::env::var(TEST_MAX_CONNECTIONS_ENV) {
                    Ok(v) => budget::parse_override(&v)?,
                    Err(_) => {
                        let rows = self
                            .admin()?
                            .call_async(Op::Query {
                                database: "postgres".to_string(),
                                // `reserved_connections` exists from PostgreSQL 16 on.
                                sql: "SELECT current_setting('max_connections'), \
                                      current_setting('superuser_reserved_connections'), \
                                      current_setting('reserved_connections', true)"
                                    .to_string(),
                            })
                            .await?;
                        let setting = |i: usize| -> usize {
                            rows.first()
                                .and_then(|r| r.get(i).cloned().flatten())
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0)
                        };
                        budget::cap_for(setting(0), setting(1) + setting(2))
                    }
                };
                tracing::debug!(target: "pgdbm::testkit", cap, "test connection cap");
                Ok(Budget::new(cap))
            })
            .await
    }

    /// How many connections the pools the testkit builds on this server may hold together:
    /// the server's `max_connections` minus `superuser_reserved_connections` (and
    /// `reserved_connections` on PostgreSQL 16+) minus 6 (the testkit's admin connections and
    /// two spare), at least 2; or
    /// `PGDBM_TEST_MAX_CONNECTIONS` when set.
    ///
    /// # Errors
    /// [`Error::TestDatabase`](pgdbm_core::Error::TestDatabase) when the server cannot be
    /// asked; [`Error::Configuration`](pgdbm_core::Error::Configuration) for a bad override.
    pub async fn connection_cap(&self) -> Result<usize> {
        Ok(self.budget().await?.cap())
    }

    /// Connections of the cap not taken by a live testkit-built pool now.
    ///
    /// # Errors
    /// As [`connection_cap`](Self::connection_cap).
    pub async fn connections_available(&self) -> Result<usize> {
        Ok(self.budget().await?.available())
    }

    /// A config for `database` with a test-sized pool ([`TEST_POOL_MIN_CONNECTIONS`],
    /// [`TEST_POOL_MAX_CONNECTIONS`]), the given `schema`, and an `application_name` of its own
    /// (how the connection cap tells the pool's sessions apart).
    pub fn test_config(&self, database: &str, schema: Option<&str>) -> Config {
        let mut config = self.config(database);
        config.schema = schema.map(str::to_string);
        config.min_connections = TEST_POOL_MIN_CONNECTIONS;
        config.max_connections = TEST_POOL_MAX_CONNECTIONS;
        config.application_name = Some(pool_application_name());
        config
    }

    /// A connected manager on `database` with a test-sized pool
    /// ([`test_config`](Self::test_config)), counted against the connection cap, with the SQL logging of the
    /// environment's [`TestConfig`] (`TEST_DB_LOG_SQL`). With a schema, the schema is created
    /// first if missing. Use it, for example, in the build function of
    /// [`migrated_database`](Self::migrated_database).
    ///
    /// # Errors
    /// The connection error, a bad `TEST_DB_*` variable, or a timeout waiting for the cap.
    pub async fn manager<P: Pool>(
        &self,
        database: &str,
        schema: Option<&str>,
    ) -> Result<Database<P>> {
        let settings = TestConfig::from_env()?;
        self.manager_with(self.test_config(database, schema), &settings)
            .await
    }

    /// A connected manager from `config` (for example [`test_config`](Self::test_config) with
    /// changes), counted against the connection cap: it first takes `config.max_connections`
    /// permits, waiting for other tests' pools to go when the cap is reached, and gives them
    /// back after the manager (every clone of it) is dropped and the server shows its sessions
    /// gone. A config without an `application_name` gets one. `settings.log_sql` logs every
    /// statement it sends (target `pgdbm::testkit::sql`, level info); `settings.verbose` logs
    /// its query count when it is dropped. With `config.schema`, the schema is created first
    /// if missing.
    ///
    /// # Errors
    /// As [`manager`](Self::manager), and [`Error::Configuration`](pgdbm_core::Error::Configuration)
    /// when `config.max_connections` alone exceeds the cap.
    pub async fn manager_with<P: Pool>(
        &self,
        mut config: Config,
        settings: &TestConfig,
    ) -> Result<Database<P>> {
        if config.application_name.is_none() {
            config.application_name = Some(pool_application_name());
        }
        let permit = self.budget().await?.take(config.max_connections).await?;
        let observer = Arc::new(TestPoolObserver {
            database: config.database.clone(),
            permit: Some(permit),
            application_name: config.application_name.clone(),
            admin: self.admin()?.clone(),
            log_sql: settings.log_sql,
            verbose: settings.verbose,
            queries: AtomicU64::new(0),
        });
        let schema = config.schema.clone();
        // On an error the observer is dropped here and its permits are given back once the
        // server shows no session of the pool.
        let db = Database::<P>::connect(config).await?;
        db.add_observer(observer);
        if let Some(schema) = schema {
            db.execute(
                &format!("CREATE SCHEMA IF NOT EXISTS {}", quote_identifier(&schema)?),
                &[],
            )
            .await?;
        }
        Ok(db)
    }
}
