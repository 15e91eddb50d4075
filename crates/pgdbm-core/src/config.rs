//! Connection and pool configuration ([`Config`]), the port of Python pgdbm's `DatabaseConfig`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// TLS mode, with libpq's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it, plain otherwise (libpq's default).
    #[default]
    Prefer,
    /// Require TLS, without verifying the server certificate.
    Require,
    /// Require TLS and verify the server certificate against the CA.
    VerifyCa,
    /// Require TLS, verify the certificate and that it names the host.
    VerifyFull,
}

/// Connection and pool configuration; the port of Python pgdbm's `DatabaseConfig`.
///
/// Field names and defaults follow the reference; durations are [`Duration`]s.
/// `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Full connection URL or libpq key=value string; when set, it overrides the individual
    /// connection fields (Python: `connection_string`).
    pub connection_string: Option<String>,
    /// Database host (default `localhost`).
    pub host: String,
    /// Database port (default 5432).
    pub port: u16,
    /// Further hosts to try in order after `host` (from multi-host URLs).
    pub fallback_hosts: Vec<(String, u16)>,
    /// Database name (default `postgres`).
    pub database: String,
    /// Database user (default `postgres`).
    pub user: String,
    /// Password; when `None`, `DB_PASSWORD` is used.
    pub password: Option<String>,
    /// Default schema for `{{schema}}` / `{{tables.x}}` templates and `search_path`.
    pub schema: Option<String>,
    /// Minimum pool size (default 10).
    pub min_connections: usize,
    /// Maximum pool size (default 20).
    pub max_connections: usize,
    /// Queries per connection before it is recycled (default 50 000).
    pub max_queries: u64,
    /// Idle time after which a pooled connection is closed (default 300 s).
    pub max_inactive_connection_lifetime: Duration,
    /// Default timeout of each query (default 60 s; `None` = no client-side timeout).
    pub command_timeout: Option<Duration>,
    /// Extra PostgreSQL run-time settings for every connection.
    pub server_settings: BTreeMap<String, String>,
    /// SQL run on every new physical connection.
    pub init_commands: Vec<String>,
    /// Connection attempts before giving up (default 3).
    pub retry_attempts: u32,
    /// Delay before the first retry (default 1 s).
    pub retry_delay: Duration,
    /// Multiplier of the delay after each retry (default 2.0, at least 1).
    pub retry_backoff: f64,
    /// Longest delay between retries (default 30 s).
    pub retry_max_delay: Duration,
    /// Add random jitter to retry delays (default true).
    pub retry_jitter: bool,
    /// TLS mode (default [`SslMode::Prefer`]).
    pub ssl_mode: SslMode,
    /// CA certificate file (PEM) for `verify-ca` / `verify-full`.
    pub ssl_root_cert: Option<PathBuf>,
    /// Client certificate file (PEM).
    pub ssl_cert: Option<PathBuf>,
    /// Client private key file (PEM).
    pub ssl_key: Option<PathBuf>,
    /// Server-side `statement_timeout` (default 60 s; `None` leaves the server's).
    pub statement_timeout: Option<Duration>,
    /// Server-side `lock_timeout` (default 5 s; `None` leaves the server's).
    pub lock_timeout: Option<Duration>,
    /// Server-side `idle_in_transaction_session_timeout` (default 60 s; `None` leaves the server's).
    pub idle_in_transaction_session_timeout: Option<Duration>,
    /// Bound on establishing one connection: TCP, TLS and authentication (default 10 s).
    pub connect_timeout: Duration,
    /// How long `acquire` waits for a pooled connection (default 30 s).
    pub acquire_timeout: Duration,
    /// `application_name` reported to the server (default `pgdbm`).
    pub application_name: Option<String>,
    /// Longest life of a physical connection before it is replaced (default 1 h; `None` = no limit).
    pub max_lifetime: Option<Duration>,
    /// Prepared statements cached per connection (default 100; 0 = unnamed statements only, for
    /// PgBouncer in transaction mode).
    pub statement_cache_size: usize,
    /// Show query parameters in logs and errors (default false: they are masked).
    pub log_parameters: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            connection_string: None,
            host: "localhost".to_string(),
            port: 5432,
            fallback_hosts: Vec::new(),
            database: "postgres".to_string(),
            user: "postgres".to_string(),
            password: None,
            schema: None,
            min_connections: 10,
            max_connections: 20,
            max_queries: 50_000,
            max_inactive_connection_lifetime: Duration::from_secs(300),
            command_timeout: Some(Duration::from_secs(60)),
            server_settings: BTreeMap::new(),
            init_commands: Vec::new(),
            retry_attempts: 3,
            retry_delay: Duration::from_secs(1),
            retry_backoff: 2.0,
            retry_max_delay: Duration::from_secs(30),
            retry_jitter: true,
            ssl_mode: SslMode::Prefer,
            ssl_root_cert: None,
            ssl_cert: None,
            ssl_key: None,
            statement_timeout: Some(Duration::from_secs(60)),
            lock_timeout: Some(Duration::from_secs(5)),
            idle_in_transaction_session_timeout: Some(Duration::from_secs(60)),
            connect_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(30),
            application_name: Some("pgdbm".to_string()),
            max_lifetime: Some(Duration::from_secs(3600)),
            statement_cache_size: 100,
            log_parameters: false,
        }
    }
}
