//! Test support for pgdbm: a throwaway PostgreSQL server per test process.
//!
//! [`TestServer::shared`] starts one server per test process from the local PostgreSQL
//! binaries (or uses the server named by `TEST_DB_HOST`), shared by all tests of the process.
//! [`TestServer::start`] gives a test its own server (for example to restart it).
//! [`TestDatabase`] gives each test its own database on it, and [`TestHelpers`] the helpers of
//! Python pgdbm's `DatabaseTestCase`; both work with any pool backend. [`FaultProxy`] sits
//! between a client and a server to inject network faults (latency, blackholes, resets,
//! refused connections).
//!
//! ```
//! use pgdbm_testkit::{unique_database_name, TestServer};
//!
//! # fn main() -> pgdbm_core::Result<()> {
//! let server = TestServer::shared()?;
//! let db = unique_database_name("test_")?;
//! server.create_database(&db)?;
//! let version = server.psql(&db, "SELECT version()")?;
//! assert!(version.starts_with("PostgreSQL"));
//! let config = server.config(&db); // a pgdbm_core::Config for this database
//! # let _ = config;
//! server.drop_database(&db)?;
//! # Ok(())
//! # }
//! ```
//!
//! [`TestServer::migrated_database`] gives a test a fresh migrated database, usually by taking
//! one of the clones of a migrated template the process keeps ready. Pools the testkit builds
//! are small (min 0, max 2) and counted against a per-server connection cap
//! ([`TestServer::connection_cap`]); `docs/testing.md` describes the cap, prepared clones and
//! the sweeps. The counterparts of Python pgdbm's pytest fixtures are [`test_db`] and friends.
//!
//! Binaries are searched in `PGDBM_PG_BIN`, then `pg_config --bindir`, then the newest
//! `/usr/lib/postgresql/<version>/bin` ([`find_pg_bin`]). Tests may run as root: the server
//! then runs as the `postgres` system user. A server dies with its test process, even when that
//! is killed with SIGKILL, and a directory left behind is reaped by the next start.

mod admin;
mod assertions;
mod budget;
mod certs;
mod clones;
mod cluster;
mod config;
mod database;
mod discover;
mod fault_proxy;
mod fixtures;
mod isolation;
mod names;
mod options;
mod pgbouncer;
mod pools;
mod process;
mod procfs;
mod reap;
mod run_test;
mod server;
mod sys;
mod template;
mod test_dbs;

pub use assertions::{assert_table_unchanged, table_diff};
pub use budget::TEST_MAX_CONNECTIONS_ENV;
pub use certs::TestCerts;
pub use clones::{DEFAULT_PREPARED_CLONES, PREPARED_CLONES_ENV};
pub use cluster::TestCluster;
pub use config::{TestConfig, TEST_DB_HOST_ENV};
pub use database::{snapshot_table, SnapshotRow, TestDatabase, TestHelpers};
pub use discover::{find_pg_bin, PG_BIN_ENV};
pub use fault_proxy::{Direction, FaultProxy, FaultProxyStats};
pub use fixtures::{is_fixture_file_name, load_fixture, load_fixture_file, load_fixtures};
pub use isolation::run_isolated;
pub use names::{unique_database_name, validate_database_name, MAX_NAME_BYTES};
pub use options::TestServerOptions;
pub use pgbouncer::{find_pgbouncer, PoolMode, TestPgBouncer, TestPgBouncerOptions, PGBOUNCER_ENV};
pub use pools::{TEST_POOL_MAX_CONNECTIONS, TEST_POOL_MIN_CONNECTIONS};
pub use run_test::{Fixture, TestArgs, TestFn, TestMigrations, TestOutcome};
pub use server::{TestServer, TEST_DB_ALLOW_REMOTE_ENV};
pub use template::{template_name, CLONE_STRATEGY};
pub use template::{DEFAULT_TEMPLATE_MAX_IDLE, TEMPLATE_MAX_IDLE_ENV};
pub use test_dbs::{
    test_db, test_db_factory, test_db_isolated, test_db_with_data, test_db_with_schema,
    test_db_with_tables, TestDb, TestDbFactory, COMMON_TABLES_SQL, SAMPLE_DATA_SQL, TEST_SCHEMA,
};
