//! pgdbm's tokio-postgres adapter: the one place that turns a [`tokio_postgres::Client`] into a
//! [`pgdbm_core::Connection`].
//!
//! - [`PgConnection`]: one physical connection. [`PgConnection::connect`] tries the configured
//!   hosts in order with TLS ([`tls`] explains why rustls), passes
//!   `server_settings` in the startup packet, runs `init_commands`, bounds each attempt (TCP +
//!   TLS + authentication) by `connect_timeout` and retries with the config's backoff schedule.
//! - Statements are prepared once per connection and kept in a bounded LRU cache
//!   (`Config::statement_cache_size`, default 100), with an evict-and-retry-once on
//!   "cached plan must not change result type" outside transactions. A cache size of 0 turns it
//!   off: statements without parameters then use the unnamed statement (one round trip,
//!   nothing left on the server); statements with parameters are prepared, run and closed
//!   again. Behind PgBouncer in transaction mode, that is safe inside transactions or with
//!   PgBouncer 1.21+ (`max_prepared_statements` > 0).
//! - Timeouts cancel on the server: when a statement's timeout expires a CancelRequest is sent,
//!   and the connection is kept only if the statement ends within a short grace (2 s).
//! - `execute_many` sends every row's Bind/Execute in one pipeline with a single Sync per
//!   chunk of up to 16 384 rows, like asyncpg's `executemany`, inside `BEGIN`/`COMMIT` (or a
//!   savepoint inside the caller's transaction): all rows or none, and the error names the
//!   failing row. Rows are checked (parameter count, encoding) before anything is sent.
//!   tokio-postgres 0.7 has no API for Bind/Execute without a Sync, so each connection runs
//!   through a small protocol-aware stream shim below tokio-postgres: a chunk is one
//!   tokio-postgres `execute` for its first row, and the shim writes the other rows'
//!   Bind/Execute (encoded beforehand) in front of that request's Sync, then swallows their
//!   answers, adding up their row counts and keeping the first error with its row. Everything
//!   else passes through unchanged. Because
//!   pgdbm negotiates TLS itself below the shim (same rustls setup, same `ssl_mode` rules;
//!   Unix-socket hosts, those starting with `/`, never use TLS, like libpq), SCRAM channel
//!   binding (`SCRAM-SHA-256-PLUS`) is not used; certificate verification is unchanged.
//! - [`backend::Pooled`] wraps a pool guard, and [`backend::recycle`] with a
//!   [`backend::RecyclePolicy`] is the reuse check both pool adapters apply (the [`backend`]
//!   module holds this plumbing for pool crates).
//!
//! Tracing: the manager (`pgdbm_core::Database`) owns the one `debug` span of each query
//! (target `pgdbm`, OpenTelemetry database conventions); this crate opens no span of its own
//! and adds wire-level events into that span at `trace` level under the target `pgdbm::wire`
//! (duration, rows; parameters only with `Config::log_parameters`).
//!
//! ```
//! use pgdbm_core::{Config, Connection, Row};
//! use pgdbm_tokio_postgres::PgConnection;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pgdbm_core::Result<()> {
//! # let server = pgdbm_testkit::TestServer::shared()?;
//! # let url = server.connection_url("postgres");
//! let config = Config::from_url(&url)?; // e.g. postgresql://app:secret@db.internal/app
//! // One physical connection, with retries, TLS per `ssl_mode` and server settings applied.
//! let mut conn = PgConnection::connect(&config).await?;
//! // Statements are prepared once and cached; the timeout cancels the query on the server.
//! let row = conn
//!     .query_opt("SELECT $1::int + 1", &[&41i32], Some(Duration::from_secs(5)))
//!     .await?
//!     .expect("one row");
//! assert_eq!(row.try_get::<_, i32>(&0usize)?, 42);
//! # Ok(())
//! # }
//! ```

mod cache;
mod cancel;
mod connect;
mod connection;
mod connector;
mod copy;
mod copy_out;
mod deadline;
mod errors;
mod execute_many;
mod json;
mod listen;
mod metrics;
mod pooled;
mod probe;
mod recycle;
mod row;
mod stream;
pub mod tls;
mod unnamed;
mod wire;

pub use connection::PgConnection;
pub use copy_out::PgCopyRow;
pub use row::PgRow;

/// Plumbing for pool backend crates (`pgdbm-deadpool`, `pgdbm-bb8`, or a backend of your
/// own): opening connections for a pool, the guard a pool hands out, the reuse check and the
/// release path. Applications do not need any of it: they use `pgdbm::Database`.
pub mod backend {
    pub use crate::connection::ReleaseAction;
    pub use crate::connector::{saturate, Connector, MAX_POOL_TIMEOUT};
    pub use crate::execute_many::batch_path_available;
    pub use crate::pooled::{PoolGuard, Pooled};
    pub use crate::recycle::{recycle, RecyclePolicy};
}

// The crate-root paths of the backend plumbing, kept for the pool crates and existing code;
// documented under `backend`.
#[doc(hidden)]
pub use backend::{
    batch_path_available, recycle, saturate, Connector, PoolGuard, Pooled, RecyclePolicy,
    ReleaseAction, MAX_POOL_TIMEOUT,
};

/// Re-export of the driver, for users of [`PgConnection::client`] and [`PgRow::into_inner`].
pub use tokio_postgres;
