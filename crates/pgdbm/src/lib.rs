#![doc = include_str!("../../../README.md")]
//!
//! # Crate map
//!
//! This facade re-exports what users need:
//! - the manager [`Database`] (with [`Db`], the default backend), [`DbConnection`],
//!   [`Transaction`], [`Savepoint`], [`PreparedQuery`];
//! - [`Config`], [`Error`] and the [`Pool`] / [`Connection`] / [`Row`] traits from `pgdbm-core`;
//! - `#[derive(FromRow)]`;
//! - `migrate` (feature `migrate`, on by default) and `testkit` (feature `testkit`).
//!
//! Pick the pool backend with Cargo features: `deadpool` (default) or `bb8`. Both give the same
//! behaviour: first-come-first-served waiters, acquire timeouts that say how many connections are
//! in use, recycling by query count, lifetime and idle time, and reset of connections returned
//! inside a transaction.

#[cfg(not(any(feature = "deadpool", feature = "bb8")))]
compile_error!("pgdbm needs a pool backend: enable the `deadpool` (default) or `bb8` feature");

pub use pgdbm_core::{
    checksum, mask_dsn, quote_identifier, render, validate_identifier, AsQuery, BlockingQuery,
    Clock, ColumnIndex, Config, Connection, ConnectionInfo, ConnectionMetrics, Database,
    DatabaseHealth, DbConnection, Debugger, Error, FromRow, IndexUsage, LongRunningQuery, Monitor,
    MonitorConfig, Param, PatternStats, Pool, PoolStats, PreparedQuery, QueryError, QueryErrorKind,
    QueryEvent, QueryMetrics, QueryObserver, QueryParams, QueryPatterns, QueryRecord, ResetPolicy,
    Result, Row, RowOf, Savepoint, SslMode, SystemClock, TableSize, Transaction,
};
pub use pgdbm_core::{
    BoxStream, Bytes, CopyFormat, CopySource, ListenEvent, Notification, OwnedRowStream, RowStream,
    Stream,
};
pub use pgdbm_derive::FromRow;
pub use pgdbm_tokio_postgres::{PgConnection, PgCopyRow, PgRow};
/// PostgreSQL type conversions (`ToSql`, `FromSql`, `Type`, `Json`...), from `postgres-types`.
pub use postgres_types as types;

/// Modules of the pure core (`pgdbm-core`): templates, identifiers, retry schedules, migration
/// files, the SQL splitter.
pub mod core {
    pub use pgdbm_core::{
        config, database, debugger, dsn, error, ident, migration, monitor, pool, retry, sql,
        stream, template,
    };
}

#[doc(hidden)]
pub mod __private {
    pub use pgdbm_core as core;
}

#[cfg(feature = "deadpool")]
pub use pgdbm_deadpool::DeadpoolPool;
/// The manager on the deadpool backend.
#[cfg(feature = "deadpool")]
pub type DeadpoolDb = Database<DeadpoolPool>;

#[cfg(feature = "bb8")]
pub use pgdbm_bb8::Bb8Pool;
/// The manager on the bb8 backend.
#[cfg(feature = "bb8")]
pub type Bb8Db = Database<Bb8Pool>;

/// The manager on the default backend: deadpool, or bb8 when only the `bb8` feature is on.
#[cfg(feature = "deadpool")]
pub type Db = DeadpoolDb;
/// The manager on the default backend: deadpool, or bb8 when only the `bb8` feature is on.
#[cfg(all(feature = "bb8", not(feature = "deadpool")))]
pub type Db = Bb8Db;

/// SQL-file migrations (feature `migrate`).
#[cfg(feature = "migrate")]
pub use pgdbm_migrate as migrate;

/// Throwaway PostgreSQL servers and test databases (feature `testkit`).
#[cfg(feature = "testkit")]
pub use pgdbm_testkit as testkit;
