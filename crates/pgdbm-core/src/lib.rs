//! Pure core of pgdbm: configuration, DSNs, identifiers, schema templates, retry schedules,
//! migration files, errors and the [`Pool`] / [`Connection`] / [`Row`] traits.
//!
//! This crate does no I/O: no sockets, no runtime, no clocks it does not take as input.
//! Driver adapters (such as `pgdbm-tokio-postgres`) implement the traits; everything else is
//! written once against them.

pub mod config;
pub mod error;
pub mod pool;

pub use config::{Config, SslMode};
pub use error::{BoxError, Error, QueryError, QueryErrorKind, QueryParams, Result};
pub use pool::{ColumnIndex, Connection, FromRow, Param, Pool, PoolStats, Row};
