//! Opening connections: hosts in order, TLS, server settings at startup, init commands, retries.

use std::str::FromStr;
use std::time::{Duration, Instant};

use pgdbm_core::{BoxError, Config, Error, Result};
use tokio_postgres::config::Host;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::connection::PgConnection;
use crate::tls;

/// One failed attempt.
struct AttemptError {
    host: String,
    port: u16,
    database: String,
    message: String,
    source: Option<BoxError>,
    /// Retrying cannot help (wrong password, unknown database, bad configuration...).
    permanent: bool,
}

impl AttemptError {
    fn into_error(self, attempts: u32) -> Error {
        Error::Connection {
            host: self.host,
            port: self.port,
            database: self.database,
            attempts,
            message: self.message,
            source: self.source,
        }
    }
}

/// Escapes a value for the libpq `options` startup parameter: spaces and backslashes are
/// backslash-escaped.
pub(crate) fn escape_option(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '\\' || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The `options` startup string `-c key=value ...` for `settings`.
pub(crate) fn startup_options<'a>(
    settings: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    settings
        .into_iter()
        .map(|(k, v)| format!("-c {}={}", escape_option(k), escape_option(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Server settings applied at startup.
fn server_settings(config: &Config) -> Vec<(String, String)> {
    config
        .server_settings
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The password: the configured one, else `DB_PASSWORD`.
fn password(config: &Config) -> Option<String> {
    config
        .password
        .clone()
        .or_else(|| std::env::var("DB_PASSWORD").ok())
}

/// The base tokio-postgres config (without hosts), and the hosts to try in order.
fn base_config(config: &Config) -> Result<(tokio_postgres::Config, Vec<(String, u16)>)> {
    let (mut pg, hosts) = match &config.connection_string {
        Some(dsn) => {
            let pg = tokio_postgres::Config::from_str(dsn).map_err(|_| {
                Error::config(
                    "connection_string",
                    "tokio-postgres cannot parse the connection string; use \
                     postgresql://user:password@host:port/database or libpq key=value pairs",
                )
            })?;
            let ports = pg.get_ports();
            let mut hosts = Vec::new();
            for (i, h) in pg.get_hosts().iter().enumerate() {
                let port = ports
                    .get(i)
                    .or_else(|| ports.first())
                    .copied()
                    .unwrap_or(5432);
                let name = match h {
                    Host::Tcp(name) => name.clone(),
                    #[cfg(unix)]
                    Host::Unix(path) => path.display().to_string(),
                };
                hosts.push((name, port));
            }
            if hosts.is_empty() {
                hosts.push(("localhost".to_string(), 5432));
            }
            let mut fresh = tokio_postgres::Config::new();
            if let Some(u) = pg.get_user() {
                fresh.user(u);
            } else {
                fresh.user(&config.user);
            }
            match pg.get_password() {
                Some(p) => {
                    fresh.password(p);
                }
                None => {
                    if let Some(p) = password(config) {
                        fresh.password(p);
                    }
                }
            }
            fresh.dbname(pg.get_dbname().unwrap_or(&config.database));
            if let Some(o) = pg.get_options() {
                fresh.options(o);
            }
            if let Some(a) = pg.get_application_name() {
                fresh.application_name(a);
            }
            (fresh, hosts)
        }
        None => {
            let mut pg = tokio_postgres::Config::new();
            pg.user(&config.user).dbname(&config.database);
            if let Some(p) = password(config) {
                pg.password(p);
            }
            let mut hosts = vec![(config.host.clone(), config.port)];
            hosts.extend(config.fallback_hosts.iter().cloned());
            (pg, hosts)
        }
    };
    if pg.get_application_name().is_none() {
        if let Some(app) = &config.application_name {
            pg.application_name(app);
        }
    }
    let settings = server_settings(config);
    if !settings.is_empty() {
        let extra = startup_options(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let options = match pg.get_options() {
            Some(existing) if !existing.is_empty() => format!("{existing} {extra}"),
            _ => extra,
        };
        pg.options(options);
    }
    pg.ssl_mode(tls::pg_ssl_mode(config.ssl_mode));
    pg.connect_timeout(config.connect_timeout);
    Ok((pg, hosts))
}

fn database_of(pg: &tokio_postgres::Config, config: &Config) -> String {
    pg.get_dbname().unwrap_or(&config.database).to_string()
}

/// True for server errors that retrying cannot fix.
fn is_permanent(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        matches!(
            c.code(),
            "28P01" | "28000" | "3D000" | "42501" | "42704" | "22023" | "0A000"
        )
    })
}

fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let hint = match db.code().code() {
            "28P01" | "28000" => {
                "; check the user and password (Config::password or DB_PASSWORD) and pg_hba.conf"
            }
            "3D000" => "; create the database first or fix Config::database",
            _ => "",
        };
        format!(
            "server refused the connection: {} (SQLSTATE {}){hint}",
            db.message(),
            db.code().code()
        )
    } else {
        let mut text = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            text.push_str(": ");
            text.push_str(&s.to_string());
            src = s.source();
        }
        text
    }
}

/// One host, one try.
async fn connect_host(
    config: &Config,
    base: &tokio_postgres::Config,
    tls: &Option<MakeRustlsConnect>,
    host: &str,
    port: u16,
) -> std::result::Result<PgConnection, AttemptError> {
    let database = database_of(base, config);
    let fail = |message: String, source: Option<BoxError>, permanent: bool| AttemptError {
        host: host.to_string(),
        port,
        database: database.clone(),
        message,
        source,
        permanent,
    };
    let mut pg = base.clone();
    pg.host(host).port(port);
    let limit = config.connect_timeout;

    let connected = match tls {
        Some(tls) => tokio::time::timeout(limit, pg.connect(tls.clone()))
            .await
            .map(|r| {
                r.map(|(client, conn)| {
                    spawn_connection(conn);
                    client
                })
            }),
        None => tokio::time::timeout(limit, pg.connect(tokio_postgres::NoTls))
            .await
            .map(|r| {
                r.map(|(client, conn)| {
                    spawn_connection(conn);
                    client
                })
            }),
    };
    let client = match connected {
        Err(_) => {
            return Err(fail(
                format!(
                    "no complete connection (TCP, TLS and authentication) within connect_timeout = {limit:?}; \
                     check that the server is up and reachable, or raise connect_timeout"
                ),
                None,
                false,
            ))
        }
        Ok(Err(e)) => {
            let permanent = is_permanent(&e);
            return Err(fail(describe(&e), Some(Box::new(e)), permanent));
        }
        Ok(Ok(client)) => client,
    };

    let endpoint = format!("{host}:{port}/{database}");
    let conn = PgConnection::from_parts(
        client,
        tls.clone(),
        config.statement_cache_size,
        config.log_parameters,
        endpoint,
    );
    for (i, cmd) in config.init_commands.iter().enumerate() {
        let run = tokio::time::timeout(limit, conn.client().batch_execute(cmd)).await;
        let (message, source): (String, Option<BoxError>) = match run {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => (
                format!(
                    "init_commands[{i}] failed: {}",
                    e.as_db_error()
                        .map(|d| format!("{} (SQLSTATE {})", d.message(), d.code().code()))
                        .unwrap_or_else(|| e.to_string())
                ),
                Some(Box::new(e)),
            ),
            Err(_) => (
                format!("init_commands[{i}] did not finish within connect_timeout = {limit:?}"),
                None,
            ),
        };
        return Err(fail(message, source, true));
    }
    Ok(conn)
}

fn spawn_connection<S, T>(conn: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(target: "pgdbm", error = %e, "connection task ended with an error");
        }
    });
}

/// One attempt over every host in order; the last host's error when all fail.
async fn attempt(config: &Config) -> std::result::Result<PgConnection, AttemptError> {
    let (base, hosts) = base_config(config).map_err(|e| AttemptError {
        host: config.host.clone(),
        port: config.port,
        database: config.database.clone(),
        message: e.to_string(),
        source: Some(Box::new(e)),
        permanent: true,
    })?;
    let tls = tls::connector(config).map_err(|e| AttemptError {
        host: config.host.clone(),
        port: config.port,
        database: database_of(&base, config),
        message: e.to_string(),
        source: Some(Box::new(e)),
        permanent: true,
    })?;
    let mut last = None;
    for (host, port) in &hosts {
        match connect_host(config, &base, &tls, host, *port).await {
            Ok(conn) => return Ok(conn),
            Err(e) if e.permanent => return Err(e),
            Err(e) => {
                tracing::debug!(target: "pgdbm", host = %host, port, error = %e.message, "connection attempt failed");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| AttemptError {
        host: config.host.clone(),
        port: config.port,
        database: database_of(&base, config),
        message: "no host to connect to".to_string(),
        source: None,
        permanent: true,
    }))
}

/// Delay before attempt `attempt + 1` (after `attempt` failures, 1-based), or `None` when no
/// attempt is left. `random` is in `[0, 1)`.
// TODO(adapter): replace with pgdbm_core::retry::RetrySchedule once it lands.
fn retry_delay(config: &Config, attempt: u32, random: f64) -> Option<Duration> {
    if attempt >= config.retry_attempts.max(1) {
        return None;
    }
    let base = config.retry_delay.as_secs_f64()
        * config
            .retry_backoff
            .max(1.0)
            .powi(attempt.saturating_sub(1) as i32);
    let capped = base.min(config.retry_max_delay.as_secs_f64());
    let jittered = if config.retry_jitter {
        capped * (0.5 + random * 0.5)
    } else {
        capped
    };
    Some(Duration::from_secs_f64(jittered.max(0.0)))
}

impl PgConnection {
    /// One connection attempt: tries the configured hosts in order (`host` then
    /// `fallback_hosts`, or the hosts of `connection_string`), each bounded as a whole (TCP,
    /// TLS and authentication) by `config.connect_timeout`; passes the server settings in the
    /// startup packet (no extra round trip) and then runs `config.init_commands`. The
    /// connection task runs on the current tokio runtime.
    ///
    /// Errors are [`Error::Connection`] naming host, port, database and `attempts = 1`, never
    /// the password.
    pub async fn connect_once(config: &Config) -> Result<PgConnection> {
        attempt(config).await.map_err(|e| e.into_error(1))
    }

    /// Connects, retrying failed attempts with the backoff schedule of `config`
    /// (`retry_attempts`, `retry_delay`, `retry_backoff`, `retry_max_delay`, `retry_jitter`).
    ///
    /// Authentication failures (SQLSTATE 28P01 / 28000), an unknown database (3D000), an invalid
    /// TLS setup and failing init commands are not retried. The error is an
    /// [`Error::Connection`] whose `attempts` is the number of attempts made.
    pub async fn connect(config: &Config) -> Result<PgConnection> {
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match attempt(config).await {
                Ok(conn) => {
                    tracing::debug!(target: "pgdbm", attempts, elapsed_ms = started.elapsed().as_millis() as u64, "connected");
                    return Ok(conn);
                }
                Err(e) if e.permanent => return Err(e.into_error(attempts)),
                Err(e) => match retry_delay(config, attempts, rand::random::<f64>()) {
                    Some(delay) => {
                        tracing::debug!(
                            target: "pgdbm",
                            attempts,
                            delay_ms = delay.as_millis() as u64,
                            error = %e.message,
                            "connection attempt failed; retrying"
                        );
                        tokio::time::sleep(delay).await;
                    }
                    None => return Err(e.into_error(attempts)),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_escape_spaces_and_backslashes() {
        assert_eq!(escape_option(r"a b\c"), r"a\ b\\c");
        let s = startup_options([("search_path", "my schema, public"), ("work_mem", "64MB")]);
        assert_eq!(s, r"-c search_path=my\ schema,\ public -c work_mem=64MB");
    }

    #[test]
    fn retry_delays_grow_and_stop() {
        let mut c = Config::default();
        c.retry_attempts = 4;
        c.retry_delay = Duration::from_millis(100);
        c.retry_backoff = 2.0;
        c.retry_max_delay = Duration::from_millis(300);
        c.retry_jitter = false;
        assert_eq!(retry_delay(&c, 1, 0.0), Some(Duration::from_millis(100)));
        assert_eq!(retry_delay(&c, 2, 0.0), Some(Duration::from_millis(200)));
        assert_eq!(retry_delay(&c, 3, 0.0), Some(Duration::from_millis(300)));
        assert_eq!(retry_delay(&c, 4, 0.0), None);
    }

    #[test]
    fn connection_string_hosts_are_tried_in_order() {
        let mut c = Config::default();
        c.connection_string = Some("postgresql://u:secret@h1:5433,h2:5434/db".to_string());
        let (pg, hosts) = base_config(&c).unwrap();
        assert_eq!(
            hosts,
            vec![("h1".to_string(), 5433), ("h2".to_string(), 5434)]
        );
        assert_eq!(pg.get_dbname(), Some("db"));
        assert_eq!(pg.get_user(), Some("u"));
    }

    #[test]
    fn bad_connection_string_error_hides_password() {
        let mut c = Config::default();
        c.connection_string = Some("postgresql://u:hunter2@h1:notaport/db".to_string());
        let e = base_config(&c).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
