#![doc = include_str!("../../../README.md")]
//!
//! # Crate map
//!
//! This facade re-exports what users need:
//! - the manager [`Database`] (with [`Db`], the default backend), [`DbConnection`],
//!   [`Transaction`], [`Savepoint`], [`PreparedQuery`];
//! - [`Config`], [`Error`] and the [`Pool`] / [`Connection`] / [`Row`] traits from `pgdbm-core`;
//! - `#[derive(FromRow)]`;
//! - `migrate` (feature `migrate`, on by default) and `testkit` (feature `testkit`, with the
//!   `#[pgdbm::test]` attribute: a fresh database per test cloned from a migrated template).
//!
//! Pick the pool backend with Cargo features: `deadpool` (default) or `bb8`. Both give the same
//! behaviour: first-come-first-served waiters, acquire timeouts that say how many connections are
//! in use, recycling by query count, lifetime and idle time, and reset of connections returned
//! inside a transaction.
//!
//! # Type features
//!
//! Column and parameter types beyond the built-in ones (integers, floats, `bool`, strings,
//! `Vec<u8>`, `SystemTime`, `IpAddr`, arrays of them) come with Cargo features, which forward
//! `postgres-types`' own (the crates are re-exported under the same names):
//!
//! | Feature | Enables | Rust types | PostgreSQL types |
//! | --- | --- | --- | --- |
//! | `serde_json` | postgres-types `with-serde_json-1` | `serde_json::Value`, `types::Json<T>` | `json`, `jsonb` |
//! | `serde_json` | pgdbm-core `serde_json` | `Row::to_json`, `fetch_one_json`, `fetch_all_json` | every common type |
//! | `chrono` | postgres-types `with-chrono-0_4` | `NaiveDate`, `NaiveTime`, `NaiveDateTime`, `DateTime<Utc>`, `DateTime<FixedOffset>`, `DateTime<Local>` | `date`, `time`, `timestamp`, `timestamptz` |
//! | `time` | postgres-types `with-time-0_3` | `Date`, `Time`, `PrimitiveDateTime`, `OffsetDateTime` | `date`, `time`, `timestamp`, `timestamptz` |
//! | `uuid` | postgres-types `with-uuid-1` | `uuid::Uuid` | `uuid` |
//! | `decimal` | rust_decimal `db-tokio-postgres` | `rust_decimal::Decimal` | `numeric` |
//!
//! JSON text needs no feature: a `&str`/`String` bound to a `json`/`jsonb` parameter or COPY
//! column is sent as JSON text (the server parses it), as Python pgdbm accepts it.
//!
//! ```
//! # #[cfg(feature = "serde_json")]
//! # fn demo() {
//! use pgdbm::types::Json;
//! let doc = serde_json::json!({"tags": ["a", "b"]});
//! let _as_param = Json(&doc); // binds to json and jsonb; so does doc.to_string()
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(any(feature = "deadpool", feature = "bb8")))]
compile_error!("pgdbm needs a pool backend: enable the `deadpool` (default) or `bb8` feature");

pub use pgdbm_core::StatementMode;
pub use pgdbm_core::{
    checksum, log_query_performance, mask_dsn, quote_identifier, render, validate_identifier,
    AsQuery, BlockingQuery, Clock, ColumnIndex, Config, Connection, ConnectionInfo,
    ConnectionMetrics, Database, DatabaseHealth, DbConnection, Debugger, Error, FromRow,
    IndexUsage, LongRunningQuery, Monitor, MonitorConfig, Param, PatternStats, Pool, PoolStats,
    PreparedQuery, QueryError, QueryErrorKind, QueryEvent, QueryMetrics, QueryObserver,
    QueryParams, QueryPatterns, QueryPlan, QueryRecord, ResetPolicy, Result, Row, RowOf, Savepoint,
    SslMode, SystemClock, TableSize, Transaction,
};
pub use pgdbm_core::{percent_encode, ConfigBuilder, TableName};
pub use pgdbm_core::{AuthMethod, ChannelBinding, RequireAuth, SYSTEM_ROOT_CERT};
pub use pgdbm_core::{
    BoxStream, Bytes, CopyFormat, CopySource, ListenEvent, Notification, OwnedRowStream, RowStream,
    Stream,
};
pub use pgdbm_core::{Executor, IsolationLevel, Retried, SqlState, TransactionOptions};
pub use pgdbm_core::{HostSpec, LoadBalanceHosts, TargetSessionAttrs};
pub use pgdbm_derive::FromRow;
pub use pgdbm_tokio_postgres::{PgConnection, PgCopyRow, PgRow};
/// `serde_json` (feature `serde_json`), for `Value`s and [`Row::to_json`] results.
#[cfg(feature = "serde_json")]
pub use serde_json;

/// `chrono` (feature `chrono`): its date/time types are parameters and columns.
#[cfg(feature = "chrono")]
pub use chrono;

/// `time` (feature `time`): its date/time types are parameters and columns.
#[cfg(feature = "time")]
pub use time;

/// `uuid` (feature `uuid`): `Uuid` is a parameter and column type.
#[cfg(feature = "uuid")]
pub use uuid;

/// `rust_decimal` (feature `decimal`): `Decimal` is a `numeric` parameter and column type.
#[cfg(feature = "decimal")]
pub use rust_decimal;

/// PostgreSQL type conversions (`ToSql`, `FromSql`, `Type`, `Json`...), from `postgres-types`.
pub use postgres_types as types;

/// Modules of the pure core (`pgdbm-core`): templates, identifiers, retry schedules, migration
/// files, the SQL splitter.
pub mod core {
    pub use pgdbm_core::{
        config, database, debugger, dsn, error, explain, ident, migration, monitor, perf, pool,
        retry, sql, stream, template,
    };
}

#[doc(hidden)]
pub mod __private {
    pub use pgdbm_core as core;
}

#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
pub use pgdbm_deadpool::{DeadpoolConnection, DeadpoolPool};
/// The manager on the deadpool backend.
#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
pub type DeadpoolDb = Database<DeadpoolPool>;

#[cfg(feature = "bb8")]
#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
pub use pgdbm_bb8::{Bb8Connection, Bb8Pool};
/// The manager on the bb8 backend.
#[cfg(feature = "bb8")]
#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
pub type Bb8Db = Database<Bb8Pool>;

/// The manager on the default backend: deadpool, or bb8 when only the `bb8` feature is on.
#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
pub type Db = DeadpoolDb;
/// The manager on the default backend: deadpool, or bb8 when only the `bb8` feature is on.
#[cfg(all(feature = "bb8", not(feature = "deadpool")))]
#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
pub type Db = Bb8Db;

/// A connection checked out of a [`Db`] (`db.acquire()`), e.g. a `#[pgdbm::test]` argument.
#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
pub type DbConn = DbConnection<DeadpoolConnection>;
/// A connection checked out of a [`Db`] (`db.acquire()`), e.g. a `#[pgdbm::test]` argument.
#[cfg(all(feature = "bb8", not(feature = "deadpool")))]
#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
pub type DbConn = DbConnection<Bb8Connection>;
/// A transaction on a [`Db`] (`db.transaction()`), e.g. a `#[pgdbm::test]` argument.
#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
pub type DbTransaction = Transaction<DeadpoolConnection>;
/// A transaction on a [`Db`] (`db.transaction()`), e.g. a `#[pgdbm::test]` argument.
#[cfg(all(feature = "bb8", not(feature = "deadpool")))]
#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
pub type DbTransaction = Transaction<Bb8Connection>;

/// SQL-file migrations (feature `migrate`).
#[cfg(feature = "migrate")]
#[cfg_attr(docsrs, doc(cfg(feature = "migrate")))]
pub use pgdbm_migrate as migrate;

/// Throwaway PostgreSQL servers and test databases (feature `testkit`).
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub use pgdbm_testkit as testkit;

/// `#[pgdbm::test]`: an async test on a fresh database of its own, cloned from a template
/// migrated once (feature `testkit`; see `docs/testing.md`).
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub use pgdbm_test_macros::test;

#[cfg(feature = "testkit")]
#[doc(hidden)]
#[path = "test_support.rs"]
pub mod __test;
