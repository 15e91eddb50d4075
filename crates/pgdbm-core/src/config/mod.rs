//! Connection and pool configuration ([`Config`]), the port of Python pgdbm's `DatabaseConfig`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::dsn::{self, percent_encode, url_host, MASK};
use crate::error::{Error, Result};

mod builder;
mod channel_binding;
mod duration;
mod hosts;
mod load_balance;
mod require_auth;
mod reset_policy;
mod rules;
#[cfg(feature = "serde")]
mod serde_impl;
mod session_attrs;
mod ssl_mode;
mod statement_mode;

pub use builder::ConfigBuilder;
pub use channel_binding::ChannelBinding;
pub use duration::{duration_from_secs, DurationField};
pub use hosts::HostSpec;
pub use load_balance::LoadBalanceHosts;
pub use require_auth::{AuthMethod, RequireAuth};
pub use reset_policy::ResetPolicy;
pub use session_attrs::{Rejection, ServerState, SessionCheck, SessionQuery, TargetSessionAttrs};
pub use ssl_mode::SslMode;
pub use statement_mode::StatementMode;

/// Connection and pool configuration; the port of Python pgdbm's `DatabaseConfig`.
///
/// Field names and defaults follow the reference; durations are [`Duration`]s.
/// `Debug` and `Display` never show the password.
///
/// **The fields are the one source of truth.** A connection URL ([`Config::from_url`],
/// `DATABASE_URL` in [`Config::from_env`], [`ConfigBuilder::url`]) is parsed into the fields and
/// not kept, so the last write to a field wins: after
/// `let mut c = Config::from_env()?; c.database = "other".into();` pools connect to `other`.
/// (Python's `connection_string` argument maps to [`Config::from_url`].)
///
/// The struct is `#[non_exhaustive]` (new settings are not breaking changes), so code outside
/// pgdbm cannot write a struct literal `Config { .., ..Default::default() }`; start from
/// [`Config::default()`], [`Config::from_url`] or [`Config::builder`] and assign fields.
#[derive(Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct Config {
    /// Database host (default `localhost`).
    pub host: String,
    /// Database port (default 5432).
    pub port: u16,
    /// Further hosts to try after `host` (from multi-host URLs and `host=a,b`), in order unless
    /// [`load_balance_hosts`](Config::load_balance_hosts) is `Random`.
    pub fallback_hosts: Vec<(String, u16)>,
    /// Numeric addresses of the hosts (libpq `hostaddr`): entry `i` belongs to host `i` of
    /// [`hosts`](Config::hosts) and is connected to instead of resolving that host's name,
    /// which stays the name TLS verifies and messages show. Empty (the default) resolves
    /// every name; a `None` entry resolves that host's name. Non-empty, it must have one entry
    /// per host.
    pub hostaddr: Vec<Option<IpAddr>>,
    /// Which kind of server a connection must reach (libpq `target_session_attrs`, default
    /// [`TargetSessionAttrs::Any`]); servers of another kind are skipped for the next host.
    pub target_session_attrs: TargetSessionAttrs,
    /// The order the hosts are tried in (libpq `load_balance_hosts`, default
    /// [`LoadBalanceHosts::Disable`]: as given).
    pub load_balance_hosts: LoadBalanceHosts,
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
    #[cfg_attr(feature = "serde", serde(with = "serde_impl::secs"))]
    pub max_inactive_connection_lifetime: Duration,
    /// Default timeout of each query (default 60 s; `None` = no client-side timeout).
    #[cfg_attr(feature = "serde", serde(with = "serde_impl::opt_secs"))]
    pub command_timeout: Option<Duration>,
    /// Extra PostgreSQL run-time settings for every connection.
    pub server_settings: BTreeMap<String, String>,
    /// SQL run on every new physical connection.
    pub init_commands: Vec<String>,
    /// `search_path` pinned on every connection of a pool made by
    /// [`Database::create_shared_pool`](crate::Database::create_shared_pool) (Python 0.5:
    /// `shared_pool_search_path`, default `pg_catalog`, which resolves no user schema), so an
    /// unqualified table name through a schema view fails instead of reading `public`. A
    /// comma-separated list of plain identifiers; `None` leaves shared pools unpinned. Pools
    /// made by [`Database::connect`](crate::Database::connect) are unaffected.
    pub shared_pool_search_path: Option<String>,
    /// Connection attempts before giving up (default 3).
    pub retry_attempts: u32,
    /// Delay before the first retry (default 1 s).
    #[cfg_attr(feature = "serde", serde(with = "serde_impl::secs"))]
    pub retry_delay: Duration,
    /// Multiplier of the delay after each retry (default 2.0, at least 1).
    pub retry_backoff: f64,
    /// Longest delay between retries (default 30 s).
    #[cfg_attr(feature = "serde", serde(with = "serde_impl::secs"))]
    pub retry_max_delay: Duration,
    /// Add random jitter to retry delays (default true).
    pub retry_jitter: bool,
    /// TLS mode (default [`SslMode::Prefer`]).
    pub ssl_mode: SslMode,
    /// CA certificate file (PEM) for `verify-ca` / `verify-full` (libpq `sslrootcert`). `None`
    /// means libpq's default `~/.postgresql/root.crt`; when that file does not exist either,
    /// `verify-ca` / `verify-full` are a configuration error. The special value `system` uses
    /// the Mozilla root certificates bundled with pgdbm (`webpki-roots`) and, as in libpq, only
    /// with `verify-full`.
    pub ssl_root_cert: Option<PathBuf>,
    /// Client certificate file (PEM, libpq `sslcert`), sent when the server asks for one; set
    /// together with [`ssl_key`](Config::ssl_key).
    pub ssl_cert: Option<PathBuf>,
    /// Client private key file (PEM, libpq `sslkey`).
    pub ssl_key: Option<PathBuf>,
    /// SCRAM channel binding (libpq `channel_binding`, default [`ChannelBinding::Prefer`]);
    /// `Require` fails unless the server authenticates with `SCRAM-SHA-256-PLUS` over TLS.
    pub channel_binding: ChannelBinding,
    /// Authentication methods the server may use (libpq 16 `require_auth`, e.g.
    /// `scram-sha-256` or `!password,!md5`); `None` (default) accepts any. Checked on the
    /// server's request, before a password is sent.
    pub require_auth: Option<RequireAuth>,
    /// Server-side `statement_timeout` (default 60 s; `None` leaves the server's).
    #[cfg_attr(feature = "serde", serde(with = "serde_impl::opt_secs"))]
    pub statement_timeout: Option<Duration>,
    /// Server-side `lock_timeout` (default 5 s; `None` leaves the server's).
    #[cfg_attr(feature = "serde", serde(with = "serde_impl::opt_secs"))]
    pub lock_timeout: Option<Duration>,
    /// Server-side `idle_in_transaction_session_timeout` (default 60 s; `None` leaves the server's).
    #[cfg_attr(feature = "serde", serde(with = "serde_impl::opt_secs"))]
    pub idle_in_transaction_session_timeout: Option<Duration>,
    /// Bound on establishing one connection: TCP, TLS and authentication (default 10 s).
    #[cfg_attr(feature = "serde", serde(with = "serde_impl::secs"))]
    pub connect_timeout: Duration,
    /// How long `acquire` waits for a pooled connection (default 30 s).
    #[cfg_attr(feature = "serde", serde(with = "serde_impl::secs"))]
    pub acquire_timeout: Duration,
    /// `application_name` reported to the server (default `pgdbm`).
    pub application_name: Option<String>,
    /// Longest life of a physical connection before it is replaced (default 1 h; `None` = no limit).
    #[cfg_attr(feature = "serde", serde(with = "serde_impl::opt_secs"))]
    pub max_lifetime: Option<Duration>,
    /// Statements cached per connection (default 100): named prepared statements with
    /// [`StatementMode::Cached`] (0 = prepare and close one per statement with parameters;
    /// statements without parameters go unnamed), statement descriptions with
    /// [`StatementMode::Unnamed`] (0 = describe every time).
    pub statement_cache_size: usize,
    /// How statements are sent (default [`StatementMode::Cached`]: named prepared statements).
    /// [`StatementMode::Unnamed`] leaves no named prepared statement on the server and applies
    /// the startup settings per transaction: the setting for PgBouncer < 1.21 in transaction
    /// mode (see [`StatementMode`] for what it costs).
    pub statement_mode: StatementMode,
    /// Show query parameters in logs and errors (default false: they are masked).
    pub log_parameters: bool,
    /// What the pool does to a connection's session when it is released (default
    /// [`ResetPolicy::Rollback`]; see [`ResetPolicy`] for the cost of each).
    pub reset_on_release: ResetPolicy,
    /// TCP keepalives on each connection's socket (libpq `keepalives`, default on), so a peer
    /// that vanished is detected on an idle connection.
    pub keepalives: bool,
    /// Idle time before the first keepalive probe (libpq `keepalives_idle`, default 30 s).
    #[cfg_attr(feature = "serde", serde(with = "serde_impl::secs"))]
    pub keepalives_idle: Duration,
    /// Time between unanswered keepalive probes (libpq `keepalives_interval`, default 10 s).
    #[cfg_attr(feature = "serde", serde(with = "serde_impl::secs"))]
    pub keepalives_interval: Duration,
    /// Unanswered probes before the connection is dropped (libpq `keepalives_count`, default 3).
    pub keepalives_count: u32,
    /// How long sent data may stay unacknowledged before the kernel drops the connection
    /// (libpq `tcp_user_timeout`, Linux `TCP_USER_TIMEOUT`; default `None`, the OS default).
    #[cfg_attr(feature = "serde", serde(with = "serde_impl::opt_secs"))]
    pub tcp_user_timeout: Option<Duration>,
    /// Read replicas (streaming standbys), tried in order like `host` then `fallback_hosts`
    /// (default none). When set, [`Database::connect`](crate::Database::connect) also opens a
    /// pool on them, used by the view [`Database::replica`](crate::Database::replica); the
    /// user chooses that view for reads, nothing is guessed from the SQL. See
    /// [`replica_config`](Config::replica_config).
    pub read_hosts: Vec<(String, u16)>,
}

/// A `search_path` that resolves no user schema (Python 0.5's `NEUTRAL_SEARCH_PATH`):
/// `pg_catalog` is always searched, so built-in functions and types stay reachable while every
/// unqualified table reference fails.
pub const NEUTRAL_SEARCH_PATH: &str = "pg_catalog";

/// The entries of a `search_path` value, trimmed (the server's formatting ignored), as Python
/// 0.5 compares them.
pub fn split_search_path(search_path: &str) -> Vec<&str> {
    search_path.split(',').map(str::trim).collect()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "localhost".to_string(),
            port: 5432,
            fallback_hosts: Vec::new(),
            hostaddr: Vec::new(),
            target_session_attrs: TargetSessionAttrs::Any,
            load_balance_hosts: LoadBalanceHosts::Disable,
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
            shared_pool_search_path: Some(NEUTRAL_SEARCH_PATH.to_string()),
            retry_attempts: 3,
            retry_delay: Duration::from_secs(1),
            retry_backoff: 2.0,
            retry_max_delay: Duration::from_secs(30),
            retry_jitter: true,
            ssl_mode: SslMode::Prefer,
            ssl_root_cert: None,
            ssl_cert: None,
            ssl_key: None,
            channel_binding: ChannelBinding::Prefer,
            require_auth: None,
            statement_timeout: Some(Duration::from_secs(60)),
            lock_timeout: Some(Duration::from_secs(5)),
            idle_in_transaction_session_timeout: Some(Duration::from_secs(60)),
            connect_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(30),
            application_name: Some("pgdbm".to_string()),
            max_lifetime: Some(Duration::from_secs(3600)),
            statement_cache_size: 100,
            statement_mode: StatementMode::Cached,
            log_parameters: false,
            reset_on_release: ResetPolicy::Rollback,
            keepalives: true,
            keepalives_idle: Duration::from_secs(30),
            keepalives_interval: Duration::from_secs(10),
            keepalives_count: 3,
            tcp_user_timeout: None,
            read_hosts: Vec::new(),
        }
    }
}

/// True for `^[A-Za-z_][A-Za-z0-9_]*$` of at most 63 bytes.
// The same rule as templates and identifiers everywhere: `ident::validate_identifier`.
pub(crate) fn is_identifier(s: &str) -> bool {
    crate::ident::validate_identifier(s).is_ok()
}

/// True for a PostgreSQL setting name: identifiers separated by dots (custom settings such as
/// `myapp.tenant_id`).
pub(crate) fn is_setting_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 127 && s.split('.').all(is_identifier)
}

/// Quotes `s` with the one quoter ([`quote_catalog_name`](crate::ident::quote_catalog_name));
/// a name it refuses (empty, NUL: rejected by `validate`) shows as `""`.
fn quote_ident(s: &str) -> String {
    crate::ident::quote_catalog_name(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// Milliseconds of `d`, rounded up so that a non-zero duration never becomes `0` (which would
/// disable a server-side timeout).
pub(crate) fn millis_ceil(d: Duration) -> u128 {
    let ms = d.as_millis();
    if Duration::from_millis(ms as u64) < d {
        ms + 1
    } else {
        ms
    }
}

/// The [`Config::ssl_root_cert`] value that means "the bundled public root certificates"
/// (libpq's `sslrootcert=system`).
pub const SYSTEM_ROOT_CERT: &str = "system";

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Config {
    /// Parses a `postgresql://` or `postgres://` URL or a libpq `key=value` string.
    ///
    /// URLs: `postgresql://user:password@host1:5432,host2:5433/database?param=value&...` with
    /// percent-decoding of every part, IPv6 hosts in brackets (`[::1]:5432`), and the query
    /// parameters `host`, `port`, `dbname`, `user`, `password`, `sslmode`, `application_name`,
    /// `options` (`-c key=value` pairs, which become [`server_settings`](Config::server_settings)),
    /// `connect_timeout` (seconds), `sslrootcert`, `sslcert`, `sslkey`, `channel_binding`,
    /// `require_auth`, the `keepalives*` and `tcp_user_timeout` settings, `hostaddr`,
    /// `target_session_attrs`, `load_balance_hosts`, and pgdbm's own `statement_mode`
    /// (`cached` | `unnamed`; [`dsn`](Config::dsn) leaves it out, libpq does not know it).
    /// `key=value` strings take the same parameters, with libpq's quoting
    /// (`password='a b\'c'`).
    ///
    /// Hosts, ports and addresses combine as in libpq: `host=a,b port=5432,5433` pairs them by
    /// position, a single port applies to every host, an empty entry is the default
    /// (`localhost`, 5432); `hostaddr` has one entry per host (empty entries resolve that
    /// host's name), and without `host` its addresses are the host names too. The first host
    /// becomes `host`/`port`, the others `fallback_hosts`. Fields not given keep
    /// their [`Default`]. The string itself is not kept (see [`Config`]). Errors name the part
    /// and position of the problem, never any text of `s`. Unknown parameters, bad ports, an
    /// unknown `sslmode` or a negative `connect_timeout` are an [`Error::Configuration`] naming
    /// the field or parameter. The result is not [`validate`](Config::validate)d.
    ///
    /// ```
    /// use pgdbm_core::Config;
    /// let c = Config::from_url("postgres://app:p%40ss@db:6432/shop?sslmode=require")?;
    /// assert_eq!((c.user.as_str(), c.password.as_deref(), c.port), ("app", Some("p@ss"), 6432));
    /// # Ok::<(), pgdbm_core::Error>(())
    /// ```
    pub fn from_url(s: &str) -> Result<Config> {
        dsn::parse(s)
    }

    /// Applies a URL or `key=value` string on top of `self`: each parameter `s` gives (user,
    /// password, hosts, database, `sslmode`, `options`, ...) overwrites the field it sets, even
    /// when its value equals the default (an explicit `sslmode=prefer` wins over an earlier
    /// `ssl_mode = Require`); fields `s` does not mention keep their values. The string is not
    /// kept. On error `self` is unchanged.
    ///
    /// ```
    /// use pgdbm_core::{Config, SslMode};
    /// let mut c = Config::default();
    /// c.ssl_mode = SslMode::Require;
    /// c.schema = Some("app".into());
    /// c.apply_url("postgresql://u@db/shop?sslmode=prefer")?;
    /// assert_eq!((c.ssl_mode, c.schema.as_deref()), (SslMode::Prefer, Some("app")));
    /// # Ok::<(), pgdbm_core::Error>(())
    /// ```
    pub fn apply_url(&mut self, s: &str) -> Result<()> {
        *self = dsn::parse_onto(self.clone(), s)?;
        Ok(())
    }

    /// Reads the configuration from the process environment; see [`Config::from_env_with`].
    pub fn from_env() -> Result<Config> {
        Config::from_env_with(process_env)
    }

    /// Reads the configuration through `env` (a variable lookup), so it can be tested without
    /// touching the process environment.
    ///
    /// When `DATABASE_URL` is set and not empty it is parsed with [`Config::from_url`] and
    /// nothing else is read. Otherwise `PGHOST` (comma-separated hosts), `PGPORT`, `PGDATABASE`,
    /// `PGUSER`, `PGPASSWORD`, `PGSSLMODE`, `PGAPPNAME`, `PGCONNECT_TIMEOUT`, `PGSSLROOTCERT`,
    /// `PGSSLCERT`, `PGSSLKEY`, `PGOPTIONS`, `PGHOSTADDR`, `PGTARGETSESSIONATTRS` and
    /// `PGLOADBALANCEHOSTS` are read like libpq does, with `DB_PASSWORD` as
    /// the password when `PGPASSWORD` is unset; empty variables count as unset. Invalid values
    /// are an [`Error::Configuration`] naming the field and the variable.
    pub fn from_env_with<F>(env: F) -> Result<Config>
    where
        F: Fn(&str) -> Option<String>,
    {
        dsn::from_env_with(&env)
    }

    /// Checks the configuration; the first problem found is an [`Error::Configuration`] naming
    /// the field and saying how to fix it.
    ///
    /// Rejected: empty `host`, `database` or `user` (or ones containing NUL), port 0 (also in
    /// `fallback_hosts`), a non-empty `hostaddr` without one entry per host, `max_connections` 0, `min_connections > max_connections`,
    /// `max_queries` 0, `retry_attempts` 0, `retry_backoff` below 1 or not finite, zero
    /// `connect_timeout`, `acquire_timeout`, `command_timeout` or `max_lifetime`, server-side
    /// timeouts above PostgreSQL's limit (`i32::MAX` ms), a `schema` that is not an identifier
    /// (`^[A-Za-z_][A-Za-z0-9_]*$`, at most 63 bytes), an `application_name` longer than 63 bytes
    /// or with characters other than printable ASCII, and `server_settings` whose key is not a
    /// setting name (identifiers separated by dots) or whose value contains NUL.
    ///
    /// A zero `statement_timeout` / `lock_timeout` / `idle_in_transaction_session_timeout` is
    /// allowed: PostgreSQL reads 0 as "disabled" (`None` instead leaves the server's setting),
    /// and so are zero retry delays and a zero `max_inactive_connection_lifetime` ("never close
    /// idle connections", as in asyncpg).
    pub fn validate(&self) -> Result<()> {
        rules::validate(self)
    }

    /// Sets a duration field from float seconds (Python pgdbm's unit), rejecting negative, NaN
    /// and infinite values with an [`Error::Configuration`] naming the field. Optional fields are
    /// set to `Some`; assign `None` to the field directly to clear it.
    ///
    /// ```
    /// use pgdbm_core::{Config, DurationField};
    /// let c = Config::default().with_secs(DurationField::CommandTimeout, 2.5)?;
    /// assert_eq!(c.command_timeout, Some(std::time::Duration::from_millis(2500)));
    /// assert!(Config::default().with_secs(DurationField::LockTimeout, -1.0).is_err());
    /// # Ok::<(), pgdbm_core::Error>(())
    /// ```
    pub fn with_secs(mut self, field: DurationField, secs: f64) -> Result<Self> {
        let d = duration_from_secs(field.name(), secs)?;
        match field {
            DurationField::MaxInactiveConnectionLifetime => {
                self.max_inactive_connection_lifetime = d
            }
            DurationField::CommandTimeout => self.command_timeout = Some(d),
            DurationField::RetryDelay => self.retry_delay = d,
            DurationField::RetryMaxDelay => self.retry_max_delay = d,
            DurationField::StatementTimeout => self.statement_timeout = Some(d),
            DurationField::LockTimeout => self.lock_timeout = Some(d),
            DurationField::IdleInTransactionSessionTimeout => {
                self.idle_in_transaction_session_timeout = Some(d)
            }
            DurationField::ConnectTimeout => self.connect_timeout = d,
            DurationField::AcquireTimeout => self.acquire_timeout = d,
            DurationField::MaxLifetime => self.max_lifetime = Some(d),
        }
        Ok(self)
    }

    /// The password to connect with: [`password`](Config::password), else the process's
    /// `DB_PASSWORD` (empty values count as unset).
    pub fn resolved_password(&self) -> Option<String> {
        self.resolved_password_with(process_env)
    }

    /// [`resolved_password`](Config::resolved_password) with `env` as the variable lookup.
    pub fn resolved_password_with<F>(&self, env: F) -> Option<String>
    where
        F: Fn(&str) -> Option<String>,
    {
        self.password
            .clone()
            .filter(|p| !p.is_empty())
            .or_else(|| env("DB_PASSWORD").filter(|p| !p.is_empty()))
    }

    /// The connection string (Python: `get_dsn()`), built from the fields:
    /// `postgresql://user:password@host:port[,fallback:port...]/database`, with
    /// user, password, database and host percent-encoded (IPv6 hosts in brackets); the password
    /// is [`password`](Config::password), else `DB_PASSWORD`. Neither is an
    /// [`Error::Configuration`] for `password`.
    ///
    /// The result contains the password: never log it (use [`dsn_masked`](Config::dsn_masked)).
    pub fn dsn(&self) -> Result<String> {
        self.dsn_with(process_env)
    }

    /// [`dsn`](Config::dsn) with `env` as the variable lookup (for `DB_PASSWORD`).
    pub fn dsn_with<F>(&self, env: F) -> Result<String>
    where
        F: Fn(&str) -> Option<String>,
    {
        let password = self.resolved_password_with(env).ok_or_else(|| {
            Error::config(
                "password",
                "no database password: set Config::password, put it in the connection string, or \
                 set the DB_PASSWORD environment variable",
            )
        })?;
        Ok(self.build_url(Some(&percent_encode(&password))))
    }

    /// The connection string with the password replaced by `***` (Python: `get_dsn_masked()`);
    /// safe to log. Never fails: without any password (none set, no `DB_PASSWORD`) the URL has
    /// no password part.
    pub fn dsn_masked(&self) -> String {
        self.dsn_masked_with(process_env)
    }

    /// [`dsn_masked`](Config::dsn_masked) with `env` as the variable lookup.
    pub fn dsn_masked_with<F>(&self, env: F) -> String
    where
        F: Fn(&str) -> Option<String>,
    {
        let has_password = self.resolved_password_with(env).is_some();
        self.build_url(has_password.then_some(MASK))
    }

    /// `postgresql://user[:password]@hosts/database[?...]` from the fields; `password` already
    /// encoded. `hostaddr`, `target_session_attrs` and `load_balance_hosts` become query
    /// parameters when they differ from the defaults.
    fn build_url(&self, password: Option<&str>) -> String {
        let hosts = self
            .hosts()
            .iter()
            .map(|(h, p)| format!("{}:{p}", url_host(h)))
            .collect::<Vec<_>>()
            .join(",");
        let user = percent_encode(&self.user);
        let db = percent_encode(&self.database);
        let mut query = Vec::new();
        if !self.hostaddr.is_empty() {
            let addrs = self
                .hostaddr
                .iter()
                .map(|a| {
                    a.map(|a| percent_encode(&a.to_string()))
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join(",");
            query.push(format!("hostaddr={addrs}"));
        }
        if self.target_session_attrs != TargetSessionAttrs::Any {
            query.push(format!(
                "target_session_attrs={}",
                self.target_session_attrs
            ));
        }
        if self.load_balance_hosts != LoadBalanceHosts::Disable {
            query.push(format!("load_balance_hosts={}", self.load_balance_hosts));
        }
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{}", query.join("&"))
        };
        match password {
            Some(pw) => format!("postgresql://{user}:{pw}@{hosts}/{db}{query}"),
            None => format!("postgresql://{user}@{hosts}/{db}{query}"),
        }
    }

    /// libpq's default root certificate file, `~/.postgresql/root.crt` (`$HOME`), used for
    /// `verify-ca` / `verify-full` when [`ssl_root_cert`](Config::ssl_root_cert) is `None`.
    pub fn default_root_cert() -> Option<PathBuf> {
        process_env("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".postgresql").join("root.crt"))
    }

    /// True when [`default_root_cert`](Config::default_root_cert) names an existing file.
    pub(crate) fn default_root_cert_exists(&self) -> bool {
        Config::default_root_cert().is_some_and(|p| p.is_file())
    }

    /// The configured schema (Python: `get_schema()`).
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Every host to try, in order: `(host, port)` then [`fallback_hosts`](Config::fallback_hosts).
    pub fn hosts(&self) -> Vec<(String, u16)> {
        let mut v = Vec::with_capacity(1 + self.fallback_hosts.len());
        v.push((self.host.clone(), self.port));
        v.extend(self.fallback_hosts.iter().cloned());
        v
    }

    /// The configuration of the read replica pool: this one with
    /// [`read_hosts`](Config::read_hosts) as its hosts (the first becomes `host`/`port`, the
    /// others `fallback_hosts`), no `read_hosts` and no `hostaddr` (those addresses belong to
    /// the primary's hosts), and `target_session_attrs = prefer-standby`, so a standby is taken
    /// when one of the read hosts is up and a primary among them only when none is; `None` when
    /// there are no read hosts. Everything else (database, user, password, TLS, pool sizes,
    /// timeouts, schema) is the primary's.
    ///
    /// ```
    /// use pgdbm_core::Config;
    /// let mut c = Config::default();
    /// c.read_hosts = vec![("replica1".into(), 5432), ("replica2".into(), 5433)];
    /// let r = c.replica_config().unwrap();
    /// assert_eq!((r.host.as_str(), r.fallback_hosts.len()), ("replica1", 1));
    /// assert_eq!(r.target_session_attrs, pgdbm_core::TargetSessionAttrs::PreferStandby);
    /// assert!(Config::default().replica_config().is_none());
    /// ```
    pub fn replica_config(&self) -> Option<Config> {
        let (first, rest) = self.read_hosts.split_first()?;
        let mut c = self.clone();
        c.host = first.0.clone();
        c.port = first.1;
        c.fallback_hosts = rest.to_vec();
        c.read_hosts = Vec::new();
        c.hostaddr = Vec::new();
        c.target_session_attrs = TargetSessionAttrs::PreferStandby;
        Some(c)
    }

    /// The run-time settings to send at connection startup (Python: `get_server_settings()`).
    ///
    /// The user's [`server_settings`](Config::server_settings), plus, for each of these the user
    /// did not set: `search_path` = `"<schema>", public` when a schema is set;
    /// `application_name` when set; `jit` = `off`; and `statement_timeout`, `lock_timeout`,
    /// `idle_in_transaction_session_timeout` in milliseconds (e.g. `"60000"`) when not `None`
    /// (rounded up, so a non-zero duration never becomes the "disabled" value 0).
    ///
    /// ```
    /// use pgdbm_core::Config;
    /// let mut c = Config::default();
    /// c.schema = Some("myapp".into());
    /// let s = c.server_settings();
    /// assert_eq!(s["search_path"], "\"myapp\", public");
    /// assert_eq!(s["jit"], "off");
    /// assert_eq!(s["lock_timeout"], "5000");
    /// ```
    pub fn server_settings(&self) -> BTreeMap<String, String> {
        let mut s = self.server_settings.clone();
        if let Some(schema) = self.schema() {
            s.entry("search_path".to_string())
                .or_insert_with(|| format!("{}, public", quote_ident(schema)));
        }
        if let Some(app) = &self.application_name {
            s.entry("application_name".to_string())
                .or_insert_with(|| app.clone());
        }
        s.entry("jit".to_string()).or_insert_with(|| "off".into());
        let timeouts = [
            ("statement_timeout", self.statement_timeout),
            ("lock_timeout", self.lock_timeout),
            (
                "idle_in_transaction_session_timeout",
                self.idle_in_transaction_session_timeout,
            ),
        ];
        for (name, d) in timeouts {
            if let Some(d) = d {
                s.entry(name.to_string())
                    .or_insert_with(|| millis_ceil(d).to_string());
            }
        }
        s
    }
}

impl FromStr for Config {
    type Err = Error;

    /// Same as [`Config::from_url`].
    fn from_str(s: &str) -> Result<Self> {
        Config::from_url(s)
    }
}

/// `Debug` of `init_commands` that hides commands mentioning a password (such as
/// `ALTER ROLE ... PASSWORD '...'`).
struct InitCommands<'a>(&'a [String]);

impl fmt::Debug for InitCommands<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|c| {
                if c.to_ascii_lowercase().contains("password") {
                    "*** (hidden: mentions a password)"
                } else {
                    c.as_str()
                }
            }))
            .finish()
    }
}

/// Shows every field; the password as `Some("***")` / `None`, and `init_commands` that mention
/// a password hidden.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("fallback_hosts", &self.fallback_hosts)
            .field("hostaddr", &self.hostaddr)
            .field("target_session_attrs", &self.target_session_attrs)
            .field("load_balance_hosts", &self.load_balance_hosts)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| MASK))
            .field("schema", &self.schema)
            .field("min_connections", &self.min_connections)
            .field("max_connections", &self.max_connections)
            .field("max_queries", &self.max_queries)
            .field(
                "max_inactive_connection_lifetime",
                &self.max_inactive_connection_lifetime,
            )
            .field("command_timeout", &self.command_timeout)
            .field("server_settings", &self.server_settings)
            .field("init_commands", &InitCommands(&self.init_commands))
            .field("shared_pool_search_path", &self.shared_pool_search_path)
            .field("retry_attempts", &self.retry_attempts)
            .field("retry_delay", &self.retry_delay)
            .field("retry_backoff", &self.retry_backoff)
            .field("retry_max_delay", &self.retry_max_delay)
            .field("retry_jitter", &self.retry_jitter)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("ssl_cert", &self.ssl_cert)
            .field("ssl_key", &self.ssl_key)
            .field("channel_binding", &self.channel_binding)
            .field("require_auth", &self.require_auth)
            .field("statement_timeout", &self.statement_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field(
                "idle_in_transaction_session_timeout",
                &self.idle_in_transaction_session_timeout,
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("application_name", &self.application_name)
            .field("max_lifetime", &self.max_lifetime)
            .field("statement_cache_size", &self.statement_cache_size)
            .field("statement_mode", &self.statement_mode)
            .field("log_parameters", &self.log_parameters)
            .field("reset_on_release", &self.reset_on_release)
            .field("keepalives", &self.keepalives)
            .field("keepalives_idle", &self.keepalives_idle)
            .field("keepalives_interval", &self.keepalives_interval)
            .field("keepalives_count", &self.keepalives_count)
            .field("tcp_user_timeout", &self.tcp_user_timeout)
            .field("read_hosts", &self.read_hosts)
            .finish()
    }
}

/// The masked DSN (without reading `DB_PASSWORD`: `***` appears when a password is set), plus the schema when set, e.g.
/// `postgresql://app:***@db:5432/shop (schema "tenant1")`.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dsn_masked_with(|_| None))?;
        if let Some(schema) = &self.schema {
            write!(f, " (schema {})", quote_ident(schema))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: Result<()>) -> String {
        match r {
            Err(Error::Configuration { field, message }) => {
                assert!(!message.is_empty());
                field
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    fn with(f: impl FnOnce(&mut Config)) -> Config {
        let mut c = Config::default();
        f(&mut c);
        c
    }

    const PASSWORDS: &[&str] = &[
        "hunter22",
        "p@ss:w/rd",
        "quo'te\\back",
        "spa ce&amp=eq?q#h%25",
        "ünïcødé🔑",
        "\"dq\"",
    ];

    #[test]
    fn debug_and_display_hide_passwords() {
        for pw in PASSWORDS {
            let mut c = Config {
                password: Some(pw.to_string()),
                schema: Some("tenant".into()),
                ..Config::default()
            };
            let url = c.dsn_with(|_| None).unwrap();
            let kv = format!(
                "host=h password='{}'",
                pw.replace('\\', "\\\\").replace('\'', "\\'")
            );
            for cs in [None, Some(url), Some(kv)] {
                if let Some(cs) = cs {
                    c = Config::from_url(&cs).unwrap();
                    c.schema = Some("tenant".into());
                }
                for out in [format!("{c:?}"), format!("{c:#?}"), c.to_string()] {
                    assert!(!out.contains(pw), "{pw} leaked in {out}");
                    assert!(!out.contains(&percent_encode(pw)), "{pw} leaked in {out}");
                    assert!(out.contains("***"), "{out}");
                }
            }
            let dbg = format!("{c:?}");
            assert!(dbg.contains(r#"password: Some("***")"#), "{dbg}");
        }
        let dbg = format!("{:?}", Config::default());
        assert!(dbg.contains("password: None"), "{dbg}");
        let c = with(|c| {
            c.init_commands = vec![
                "SET work_mem = '64MB'".into(),
                "ALTER ROLE app PASSWORD 'topsecret'".into(),
            ];
        });
        let dbg = format!("{c:?}");
        assert!(
            dbg.contains("SET work_mem") && !dbg.contains("topsecret"),
            "{dbg}"
        );
        assert!(dbg.contains("host: \"localhost\""), "{dbg}");
        assert_eq!(
            Config::default().to_string(),
            "postgresql://postgres@localhost:5432/postgres"
        );
        let c = with(|c| {
            c.password = Some("x".into());
            c.schema = Some("app".into());
        });
        assert_eq!(
            c.to_string(),
            "postgresql://postgres:***@localhost:5432/postgres (schema \"app\")"
        );
    }

    #[test]
    fn dsn_builds_encoded_url() {
        let c = with(|c| {
            c.user = "us er".into();
            c.password = Some("p@ss/w:rd".into());
            c.database = "my/db".into();
            c.host = "db.local".into();
            c.port = 6000;
        });
        assert_eq!(
            c.dsn_with(|_| None).unwrap(),
            "postgresql://us%20er:p%40ss%2Fw%3Ard@db.local:6000/my%2Fdb"
        );
        let c = with(|c| {
            c.password = Some("x".into());
            c.host = "::1".into();
            c.fallback_hosts = vec![("h2".into(), 5433)];
        });
        assert_eq!(
            c.dsn_with(|_| None).unwrap(),
            "postgresql://postgres:x@[::1]:5432,h2:5433/postgres"
        );
    }

    #[test]
    fn dsn_password_sources() {
        let env = |k: &str| (k == "DB_PASSWORD").then(|| "from env".to_string());
        let c = Config::default();
        assert_eq!(
            c.dsn_with(env).unwrap(),
            "postgresql://postgres:from%20env@localhost:5432/postgres"
        );
        // The config's own password wins over DB_PASSWORD.
        let c = with(|c| c.password = Some("own".into()));
        assert!(c.dsn_with(env).unwrap().contains(":own@"));
        // Neither: an error naming the password field.
        match Config::default().dsn_with(|_| None) {
            Err(Error::Configuration { field, message }) => {
                assert_eq!(field, "password");
                assert!(message.contains("DB_PASSWORD"), "{message}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
        // Empty strings count as missing, like Python's `or`.
        let c = with(|c| c.password = Some(String::new()));
        assert!(c
            .dsn_with(|k| (k == "DB_PASSWORD").then(String::new))
            .is_err());
        // A connection string is returned as given.
        // A parsed string is not kept: the DSN is built from the fields.
        let c = Config::from_url("host=h user=u password=p").unwrap();
        assert_eq!(
            c.dsn_with(|_| None).unwrap(),
            "postgresql://u:p@h:5432/postgres"
        );
    }

    #[test]
    fn dsn_masked_forms() {
        let c = with(|c| c.password = Some("secret".into()));
        assert_eq!(
            c.dsn_masked_with(|_| None),
            "postgresql://postgres:***@localhost:5432/postgres"
        );
        assert_eq!(
            Config::default().dsn_masked_with(|_| None),
            "postgresql://postgres@localhost:5432/postgres"
        );
        assert_eq!(
            Config::default().dsn_masked_with(|_| Some("envpw".into())),
            "postgresql://postgres:***@localhost:5432/postgres"
        );
        let c = Config::from_url("postgres://u:secret@h/db?password=again").unwrap();
        assert_eq!(c.dsn_masked(), "postgresql://u:***@h:5432/db");
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        let c = with(|c| {
            c.schema = Some("_tenant_1".into());
            c.statement_timeout = Some(Duration::ZERO);
            c.retry_delay = Duration::ZERO;
            c.server_settings
                .insert("myapp.tenant_id".into(), "42".into());
            c.application_name = Some("my app (v1.2) #3".into());
            c.min_connections = 20;
        });
        c.validate().unwrap();
    }

    #[test]
    fn validate_rejects_naming_the_field() {
        type Case = (&'static str, fn(&mut Config));
        let cases: &[Case] = &[
            ("min_connections", |c| c.min_connections = 21),
            ("max_connections", |c| {
                c.max_connections = 0;
                c.min_connections = 0
            }),
            ("port", |c| c.port = 0),
            ("fallback_hosts", |c| {
                c.fallback_hosts = vec![("h".into(), 0)]
            }),
            ("fallback_hosts", |c| {
                c.fallback_hosts = vec![(String::new(), 1)]
            }),
            ("hostaddr", |c| c.hostaddr = vec![None, None]),
            ("read_hosts", |c| c.read_hosts = vec![("r".into(), 0)]),
            ("read_hosts", |c| c.read_hosts = vec![(String::new(), 1)]),
            ("retry_backoff", |c| c.retry_backoff = 0.5),
            ("retry_backoff", |c| c.retry_backoff = f64::NAN),
            ("retry_backoff", |c| c.retry_backoff = f64::INFINITY),
            ("retry_backoff", |c| c.retry_backoff = -2.0),
            ("retry_attempts", |c| c.retry_attempts = 0),
            ("max_queries", |c| c.max_queries = 0),
            ("connect_timeout", |c| c.connect_timeout = Duration::ZERO),
            ("acquire_timeout", |c| c.acquire_timeout = Duration::ZERO),
            ("command_timeout", |c| {
                c.command_timeout = Some(Duration::ZERO)
            }),
            ("max_lifetime", |c| c.max_lifetime = Some(Duration::ZERO)),
            ("statement_timeout", |c| {
                c.statement_timeout = Some(Duration::from_secs(30 * 24 * 3600))
            }),
            ("lock_timeout", |c| c.lock_timeout = Some(Duration::MAX)),
            ("schema", |c| c.schema = Some("my-app".into())),
            ("schema", |c| c.schema = Some("1abc".into())),
            ("schema", |c| c.schema = Some(String::new())),
            ("schema", |c| c.schema = Some("a\n".into())),
            ("schema", |c| c.schema = Some("x".repeat(64))),
            ("schema", |c| c.schema = Some("\"; DROP TABLE x; --".into())),
            ("schema", |c| c.schema = Some("é".into())),
            ("application_name", |c| {
                c.application_name = Some("a".repeat(64))
            }),
            ("application_name", |c| {
                c.application_name = Some("bad\nname".into())
            }),
            ("application_name", |c| {
                c.application_name = Some("naïve".into())
            }),
            ("server_settings", |c| {
                c.server_settings.insert("bad key".into(), "1".into());
            }),
            ("server_settings", |c| {
                c.server_settings.insert("a..b".into(), "1".into());
            }),
            ("server_settings", |c| {
                c.server_settings.insert("ok".into(), "nul\0".into());
            }),
            ("host", |c| c.host = String::new()),
            ("database", |c| c.database = String::new()),
            ("user", |c| c.user = String::new()),
            ("user", |c| c.user = "a\0b".into()),
        ];
        for (want, f) in cases {
            let c = with(f);
            assert_eq!(field_of(c.validate()), *want, "{c:?}");
        }
        // Exactly 63 bytes is fine for both.
        let c = with(|c| {
            c.schema = Some("s".repeat(63));
            c.application_name = Some("a".repeat(63));
        });
        c.validate().unwrap();
    }

    #[test]
    fn duration_setters() {
        let c = Config::default()
            .with_secs(DurationField::CommandTimeout, 1.5)
            .unwrap()
            .with_secs(DurationField::RetryDelay, 0.0)
            .unwrap()
            .with_secs(DurationField::MaxLifetime, 10.0)
            .unwrap();
        assert_eq!(c.command_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(c.retry_delay, Duration::ZERO);
        assert_eq!(c.max_lifetime, Some(Duration::from_secs(10)));
        let all = [
            DurationField::MaxInactiveConnectionLifetime,
            DurationField::CommandTimeout,
            DurationField::RetryDelay,
            DurationField::RetryMaxDelay,
            DurationField::StatementTimeout,
            DurationField::LockTimeout,
            DurationField::IdleInTransactionSessionTimeout,
            DurationField::ConnectTimeout,
            DurationField::AcquireTimeout,
            DurationField::MaxLifetime,
        ];
        for field in all {
            let ok = Config::default().with_secs(field, 2.0).unwrap();
            assert_ne!(ok, Config::default(), "{field:?} was not set");
            for bad in [
                -1.0,
                -0.001,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                1e300,
            ] {
                match Config::default().with_secs(field, bad) {
                    Err(Error::Configuration { field: f, .. }) => assert_eq!(f, field.name()),
                    other => panic!("{field:?} {bad}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn ssl_mode_parse_and_display() {
        for (s, m) in [
            ("disable", SslMode::Disable),
            ("allow", SslMode::Prefer),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("VERIFY_FULL", SslMode::VerifyFull),
        ] {
            assert_eq!(s.parse::<SslMode>().unwrap(), m);
        }
        for m in [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert_eq!(m.to_string().parse::<SslMode>().unwrap(), m);
        }
        assert_eq!(SslMode::VerifyCa.to_string(), "verify-ca");
        match "bogus".parse::<SslMode>() {
            Err(Error::Configuration { field, message }) => {
                assert_eq!(field, "ssl_mode");
                assert!(message.contains("bogus") && message.contains("verify-full"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_settings_derivation() {
        let s = Config::default().server_settings();
        let want: BTreeMap<String, String> = [
            ("application_name", "pgdbm"),
            ("jit", "off"),
            ("statement_timeout", "60000"),
            ("lock_timeout", "5000"),
            ("idle_in_transaction_session_timeout", "60000"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(s, want);

        let c = with(|c| {
            c.schema = Some("myapp".into());
            c.application_name = None;
            c.statement_timeout = None;
            c.lock_timeout = Some(Duration::from_micros(1500));
            c.idle_in_transaction_session_timeout = Some(Duration::ZERO);
            c.server_settings.insert("work_mem".into(), "64MB".into());
        });
        let s = c.server_settings();
        assert_eq!(s["search_path"], "\"myapp\", public");
        assert_eq!(s["work_mem"], "64MB");
        assert_eq!(s["lock_timeout"], "2", "sub-millisecond parts round up");
        assert_eq!(s["idle_in_transaction_session_timeout"], "0");
        assert!(!s.contains_key("statement_timeout"));
        assert!(!s.contains_key("application_name"));
        assert_eq!(c.schema(), Some("myapp"));

        // User-set values win.
        let c = with(|c| {
            c.schema = Some("myapp".into());
            for (k, v) in [
                ("search_path", "other"),
                ("application_name", "mine"),
                ("jit", "on"),
                ("statement_timeout", "1s"),
                ("lock_timeout", "2s"),
                ("idle_in_transaction_session_timeout", "3s"),
            ] {
                c.server_settings.insert(k.into(), v.into());
            }
        });
        assert_eq!(c.server_settings(), c.server_settings.clone());
        assert_eq!(Config::default().schema(), None);
    }

    #[test]
    fn hosts_lists_primary_then_fallbacks() {
        let c = with(|c| {
            c.host = "a".into();
            c.port = 1;
            c.fallback_hosts = vec![("b".into(), 2), ("c".into(), 3)];
        });
        assert_eq!(
            c.hosts(),
            vec![("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]
        );
    }

    #[test]
    fn duration_from_secs_rules() {
        assert_eq!(
            duration_from_secs("x", 0.25).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(duration_from_secs("x", -0.0).unwrap(), Duration::ZERO);
        assert!(duration_from_secs("x", -1.0).is_err());
        assert!(duration_from_secs("x", f64::NAN).is_err());
    }

    #[test]
    fn replica_config_takes_the_read_hosts_and_keeps_the_rest() {
        let c = with(|c| {
            c.host = "primary".into();
            c.fallback_hosts = vec![("primary2".into(), 5433)];
            c.read_hosts = vec![("r1".into(), 6000), ("r2".into(), 6001)];
            c.password = Some("pw".into());
            c.schema = Some("app".into());
            c.min_connections = 2;
            c.max_connections = 7;
        });
        c.validate().unwrap();
        let r = c.replica_config().unwrap();
        assert_eq!(
            r.hosts(),
            vec![("r1".to_string(), 6000), ("r2".to_string(), 6001)]
        );
        assert!(r.read_hosts.is_empty());
        assert_eq!(r.password.as_deref(), Some("pw"));
        assert_eq!(r.schema.as_deref(), Some("app"));
        assert_eq!(r.max_connections, 7);
        assert!(Config::default().replica_config().is_none());
        assert!(!format!("{c:?}").contains("\"pw\""));
    }
}
