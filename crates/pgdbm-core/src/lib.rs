//! Pure core of pgdbm: configuration, DSNs, identifiers, schema templates, retry schedules,
//! migration files, errors and the [`Pool`] / [`Connection`] / [`Row`] traits.
//!
//! This crate does no I/O: no sockets, no runtime, no clocks it does not take as input.
//! Driver adapters (such as `pgdbm-tokio-postgres`) implement the traits; everything else is
//! written once against them.
//!
//! ```
//! use pgdbm_core::{checksum, render, split_statements, Config, Error};
//!
//! # fn main() -> pgdbm_core::Result<()> {
//! // Configuration: URLs, validation naming the field, and no password in any output.
//! let config = Config::from_url("postgresql://app:s3cret@db.internal:5433/shop?sslmode=require")?;
//! assert_eq!((config.port, config.database.as_str()), (5433, "shop"));
//! assert!(!format!("{config:?} {config} {}", config.dsn_masked()).contains("s3cret"));
//! let mut bad = config.clone();
//! bad.min_connections = 50;
//! assert!(matches!(bad.validate(), Err(Error::Configuration { field, .. }) if field == "min_connections"));
//!
//! // Schema-aware templates: validated, quoted identifiers, never SQL injection.
//! assert_eq!(render("SELECT * FROM {{tables.users}}", Some("myapp"))?, r#"SELECT * FROM "myapp".users"#);
//! assert_eq!(render("SELECT * FROM {{tables.users}}", None)?, "SELECT * FROM users");
//! assert!(matches!(render("SELECT * FROM {{tables.x;drop}}", None), Err(Error::Schema { .. })));
//!
//! // Migration files: Python pgdbm's checksum, and a splitter that knows PostgreSQL quoting.
//! assert_eq!(
//!     checksum("CREATE TABLE t (id INT);"),
//!     "f423e61fbd021a13b6ae0afb423f2da5c3cf7cc0647ddb7348266dbfd281d6fe"
//! );
//! let parts = split_statements("SELECT ';'; CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;");
//! assert_eq!(parts.len(), 2);
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod database;
pub mod debugger;
pub mod dsn;
pub mod error;
pub mod ident;
pub mod migration;
pub mod monitor;
mod percent;
pub mod pool;
pub mod retry;
pub mod sql;
pub mod template;

pub use config::{duration_from_secs, Config, DurationField, ResetPolicy, SslMode};
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
    parse_qualified_name, quote_catalog_name, quote_identifier, validate_identifier,
    MAX_IDENTIFIER_BYTES,
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
pub use percent::percent_encode;
pub use pool::{ColumnIndex, Connection, FromRow, Param, Pool, PoolStats, Row};
pub use retry::RetrySchedule;
pub use sql::{contains_keyword, split_statements, split_statements_spans};
pub use template::{has_placeholders, render, TemplateCache};
