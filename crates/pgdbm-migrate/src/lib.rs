//! SQL migrations for pgdbm (Python: `AsyncMigrationManager`), generic over core's
//! [`Pool`](pgdbm_core::Pool).
//!
//! - Files `*.sql` in a directory (or compiled in with [`embed_migrations!`]), applied in
//!   code-point order of their names, each in its own transaction together with its history row.
//! - The history table is the one Python pgdbm 0.5 creates (`schema_migrations`), with the same
//!   checksums and module semantics: a database migrated by one continues under the other.
//! - Concurrent migrators (processes, tasks, Python or Rust) serialise per module on a
//!   PostgreSQL advisory lock that is polled, never waited on, and always released.
//! - `-- pgdbm:no-transaction` files (e.g. `CREATE INDEX CONCURRENTLY`) run statement by
//!   statement outside a transaction.
//!
//! ```no_run
//! # async fn demo<P: pgdbm_core::Pool>(db: &pgdbm_core::Database<P>) -> pgdbm_core::Result<()> {
//! use pgdbm_migrate::Migrator;
//!
//! let report = Migrator::new(db)
//!     .migrations_path("./migrations")
//!     .module("myapp")
//!     .apply_pending()
//!     .await?;
//! for m in &report.applied {
//!     println!("applied {} in {} ms", m.filename, m.execution_time_ms);
//! }
//! # Ok(()) }
//! ```
//!
//! See `docs/migrations.md` in the repository for the full guide.

mod clock;
mod lock;
mod migration;
mod migrator;
mod pooler;
mod report;

pub use migration::{EmbeddedMigration, HistoryEntry, Migration, MigrationSource};
pub use migrator::{
    validate_migration_name, Migrator, DEFAULT_LOCK_TIMEOUT, DEFAULT_MIGRATIONS_PATH,
    DEFAULT_QUERY_TIMEOUT, DEFAULT_TABLE,
};
pub use report::{AppliedMigration, MigrationReport, MigrationStatus};

#[doc(hidden)]
pub use pgdbm_migrate_macros::__embed_migrations;

/// Compiles a directory of migration files into the binary.
///
/// `embed_migrations!("migrations")` expands to a `&'static [EmbeddedMigration]` holding every
/// `*.sql` file (not starting with `.`) of the directory, in code-point order of file name — the
/// same files, order and checksums as reading the directory at run time. The path is relative to
/// the directory of the calling crate's `Cargo.toml`. Each file is included with
/// `include_str!`, so editing a file rebuilds the crate; adding or removing a file needs a
/// rebuild trigger such as `println!("cargo:rerun-if-changed=migrations")` in a build script.
///
/// ```ignore
/// static MIGRATIONS: &[pgdbm_migrate::EmbeddedMigration] =
///     pgdbm_migrate::embed_migrations!("migrations");
/// let report = pgdbm_migrate::Migrator::new(&db).embedded(MIGRATIONS).apply_pending().await?;
/// ```
#[macro_export]
macro_rules! embed_migrations {
    ($dir:literal $(,)?) => {
        $crate::__embed_migrations!($crate, $dir)
    };
}

/// The `tracing` target of every event this crate emits.
pub const TRACING_TARGET: &str = "pgdbm::migrate";
