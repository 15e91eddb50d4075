//! Pure core of pgdbm: configuration, DSNs, identifiers, schema templates, retry schedules,
//! migration files, errors and the [`Pool`] / [`Connection`] / [`Row`] traits.
//!
//! This crate does no I/O: no sockets, no runtime, no clocks it does not take as input.
//! Driver adapters (such as `pgdbm-tokio-postgres`) implement the traits; everything else is
//! written once against them.

pub mod config;
pub mod database;
pub mod debugger;
pub mod dsn;
pub mod error;
pub mod ident;
pub mod migration;
pub mod monitor;
pub mod pool;
pub mod retry;
pub mod sql;
pub mod template;

pub use config::{duration_from_secs, Config, DurationField, SslMode};
pub use database::{
    AsQuery, Clock, Database, DbConnection, PreparedQuery, QueryEvent, QueryObserver, RenderedSql,
    RowOf, Savepoint, SystemClock, Transaction,
};
pub use debugger::{
    BlockingQuery, ConnectionInfo, DatabaseHealth, Debugger, IndexUsage, LongRunningQuery,
    TableSize,
};
pub use dsn::mask_dsn;
pub use error::{BoxError, Error, QueryError, QueryErrorKind, QueryParams, Result};
pub use ident::{
    parse_qualified_name, quote_identifier, validate_identifier, MAX_IDENTIFIER_BYTES,
};
pub use migration::{
    checksum, explain_checksum_mismatch, has_no_transaction_marker, is_migration_file_name,
    migration_version, normalize_content, python_strip, sort_migration_names,
    NO_TRANSACTION_MARKER,
};
pub use monitor::{
    normalize_query, ConnectionMetrics, Monitor, MonitorConfig, PatternStats, QueryMetrics,
    QueryPatterns, QueryRecord,
};
pub use pool::{ColumnIndex, Connection, FromRow, Param, Pool, PoolStats, Row};
pub use retry::RetrySchedule;
pub use sql::{contains_keyword, split_statements, split_statements_spans};
pub use template::{has_placeholders, render, TemplateCache};
