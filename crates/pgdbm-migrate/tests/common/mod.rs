//! What the migrate test files share: one test database with a pool and a scratch migrations
//! directory ([`Env`]), and [`both_backends!`], which runs a generic test body on deadpool and
//! bb8 under a bound.
#![allow(dead_code)] // each test file uses its own part of this module

use std::path::PathBuf;
use std::time::Duration;

use pgdbm_core::{Config, Connection, Pool, Row};
use pgdbm_migrate::Migrator;
use pgdbm_testkit::{unique_database_name, TestServer};

/// Generous bound so that a hang or deadlock fails the test instead of blocking the suite.
pub(crate) const BOUND: Duration = Duration::from_secs(120);

/// One test database, a pool on it (built from a possibly tweaked [`Config`]) and a scratch
/// migrations directory.
pub(crate) struct Env<P: Pool> {
    pub(crate) server: &'static TestServer,
    pub(crate) db: String,
    pub(crate) config: Config,
    pub(crate) pool: P,
    pub(crate) dir: PathBuf,
}

impl<P: Pool> Env<P> {
    pub(crate) async fn new(prefix: &str) -> Self {
        Self::with(prefix, |_| {}).await
    }

    pub(crate) async fn with(prefix: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let server = TestServer::shared().expect("test server");
        let db = unique_database_name(prefix).expect("name");
        server.create_database(&db).expect("create database");
        let mut config = server.config(&db);
        config.min_connections = 1;
        config.max_connections = 12;
        tweak(&mut config);
        let pool = P::connect(&config).await.expect("connect");
        let dir = std::env::temp_dir().join(format!("pgdbm-migrate-tests-{db}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Env {
            server,
            db,
            config,
            pool,
            dir,
        }
    }

    pub(crate) fn write(&self, name: &str, content: &str) {
        std::fs::write(self.dir.join(name), content).expect("write migration");
    }

    pub(crate) fn migrator(&self) -> Migrator<P> {
        Migrator::from_pool(self.pool.clone(), None).migrations_path(&self.dir)
    }

    pub(crate) fn psql(&self, sql: &str) -> String {
        self.server.psql(&self.db, sql).expect("psql")
    }

    /// The first column of the first row of `sql`, as text, run on a pooled connection.
    pub(crate) async fn value(&self, sql: &str) -> String {
        let mut c = self.pool.acquire().await.expect("acquire");
        let row = c
            .query_opt(sql, &[], None)
            .await
            .expect(sql)
            .expect("a row");
        row.get_at::<String>(0).expect("text")
    }

    /// Advisory locks held in this test's database.
    pub(crate) fn advisory_locks(&self) -> String {
        self.psql(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = \
             (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
    }

    pub(crate) async fn finish(self) {
        self.pool.close().await;
        let _ = self.server.drop_database(&self.db);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Generates `mod $name { deadpool(), bb8() }` calling `$case::<Pool>()` under [`BOUND`].
#[macro_export]
macro_rules! both_backends {
    ($($name:ident => $case:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn deadpool() {
                tokio::time::timeout(
                    $crate::common::BOUND,
                    super::$case::<pgdbm_deadpool::DeadpoolPool>(),
                )
                .await
                .expect("test timed out (hang or deadlock?)");
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn bb8() {
                tokio::time::timeout($crate::common::BOUND, super::$case::<pgdbm_bb8::Bb8Pool>())
                    .await
                    .expect("test timed out (hang or deadlock?)");
            }
        }
    )*};
}
