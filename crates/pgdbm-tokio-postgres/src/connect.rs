//! Opening connections: hosts in order, TLS, server settings at startup, init commands, retries.

use std::time::Instant;

use pgdbm_core::{BoxError, Config, Error, Result, RetrySchedule};
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

/// `config` with the connection fields of `connection_string` applied when it is set (it
/// overrides the individual fields): hosts, database and user always, password when the string
/// has one, and TLS / timeout / application settings when the string sets them.
fn effective_config(config: &Config) -> Result<Config> {
    let Some(dsn) = &config.connection_string else {
        return Ok(config.clone());
    };
    let parsed = Config::from_url(dsn)?;
    let defaults = Config::default();
    let mut c = config.clone();
    c.host = parsed.host;
    c.port = parsed.port;
    c.fallback_hosts = parsed.fallback_hosts;
    c.database = parsed.database;
    c.user = parsed.user;
    if parsed.password.is_some() {
        c.password = parsed.password;
    }
    if parsed.ssl_mode != defaults.ssl_mode {
        c.ssl_mode = parsed.ssl_mode;
    }
    for (field, value) in [
        (&mut c.ssl_root_cert, parsed.ssl_root_cert),
        (&mut c.ssl_cert, parsed.ssl_cert),
        (&mut c.ssl_key, parsed.ssl_key),
    ] {
        if value.is_some() {
            *field = value;
        }
    }
    if parsed.connect_timeout != defaults.connect_timeout {
        c.connect_timeout = parsed.connect_timeout;
    }
    if parsed.application_name != defaults.application_name {
        c.application_name = parsed.application_name;
    }
    for (k, v) in parsed.server_settings {
        c.server_settings.entry(k).or_insert(v);
    }
    Ok(c)
}

/// The tokio-postgres config (without host and port) for `config`: user, password
/// (`Config::password`, else `DB_PASSWORD`), database, `application_name`, and every other
/// [`Config::server_settings`] entry as `-c key=value` in the startup `options`.
fn base_config(config: &Config) -> tokio_postgres::Config {
    let mut pg = tokio_postgres::Config::new();
    pg.user(&config.user).dbname(&config.database);
    if let Some(p) = config.resolved_password() {
        pg.password(p);
    }
    let mut settings = config.server_settings();
    if let Some(app) = settings.remove("application_name") {
        pg.application_name(app);
    }
    if !settings.is_empty() {
        pg.options(startup_options(
            settings.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ));
    }
    pg.ssl_mode(tls::pg_ssl_mode(config.ssl_mode));
    pg.connect_timeout(config.connect_timeout);
    pg
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
    let database = config.database.clone();
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

/// `config` (already [`effective_config`]d and validated) and its TLS connector.
fn prepare(config: &Config) -> Result<(Config, Option<MakeRustlsConnect>)> {
    let config = effective_config(config)?;
    config.validate()?;
    let tls = tls::connector(&config)?;
    Ok((config, tls))
}

/// One attempt over every host in order; the last host's error when all fail.
async fn attempt(
    config: &Config,
    tls: &Option<MakeRustlsConnect>,
) -> std::result::Result<PgConnection, AttemptError> {
    let base = base_config(config);
    let hosts = config.hosts();
    let mut last = None;
    for (host, port) in &hosts {
        match connect_host(config, &base, tls, host, *port).await {
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
        database: config.database.clone(),
        message: "no host to connect to".to_string(),
        source: None,
        permanent: true,
    }))
}

impl PgConnection {
    /// One connection attempt: tries the configured hosts in order (`host` then
    /// `fallback_hosts`, or the hosts of `connection_string`), each bounded as a whole (TCP,
    /// TLS and authentication) by `config.connect_timeout`; passes the server settings in the
    /// startup packet (no extra round trip) and then runs `config.init_commands`. The
    /// connection task runs on the current tokio runtime.
    ///
    /// Errors are [`Error::Connection`] naming host, port, database and `attempts = 1`, never
    /// the password; an invalid `config` (or TLS file) is an [`Error::Configuration`].
    pub async fn connect_once(config: &Config) -> Result<PgConnection> {
        let (config, tls) = prepare(config)?;
        attempt(&config, &tls).await.map_err(|e| e.into_error(1))
    }

    /// Connects, retrying failed attempts with the backoff schedule of `config`
    /// (`retry_attempts`, `retry_delay`, `retry_backoff`, `retry_max_delay`, `retry_jitter`).
    ///
    /// Authentication failures (SQLSTATE 28P01 / 28000), an unknown database (3D000), an invalid
    /// TLS setup and failing init commands are not retried. The error is an
    /// [`Error::Connection`] whose `attempts` is the number of attempts made.
    pub async fn connect(config: &Config) -> Result<PgConnection> {
        let started = Instant::now();
        // An invalid configuration is reported as such, not as a connection failure.
        let (config, tls) = prepare(config)?;
        let config = &config;
        let schedule = RetrySchedule::from_config(config);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match attempt(config, &tls).await {
                Ok(conn) => {
                    tracing::debug!(target: "pgdbm", attempts, elapsed_ms = started.elapsed().as_millis() as u64, "connected");
                    return Ok(conn);
                }
                Err(e) if e.permanent => return Err(e.into_error(attempts)),
                Err(e) => match schedule.delay_after(attempts, rand::random::<f64>()) {
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
    fn connection_string_hosts_are_tried_in_order() {
        let mut c = Config::default();
        c.connection_string = Some("postgresql://u:secret@h1:5433,h2:5434/db".to_string());
        c.database = "other".to_string();
        let e = effective_config(&c).unwrap();
        assert_eq!(
            e.hosts(),
            vec![("h1".to_string(), 5433), ("h2".to_string(), 5434)]
        );
        let pg = base_config(&e);
        assert_eq!(pg.get_dbname(), Some("db"));
        assert_eq!(pg.get_user(), Some("u"));
        assert_eq!(pg.get_password(), Some(&b"secret"[..]));
    }

    #[test]
    fn bad_connection_string_error_hides_password() {
        let mut c = Config::default();
        c.connection_string = Some("postgresql://u:hunter2@h1:notaport/db".to_string());
        let e = effective_config(&c).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}

#[cfg(test)]
mod settings_tests {
    use super::*;

    #[test]
    fn server_settings_go_into_startup_options() {
        let mut c = Config::default();
        c.schema = Some("my_app".to_string());
        c.server_settings
            .insert("work_mem".to_string(), "64MB".to_string());
        let pg = base_config(&c);
        let opts = pg.get_options().unwrap_or_default();
        assert!(
            opts.contains(r#"-c search_path="my_app",\ public"#),
            "{opts}"
        );
        assert!(opts.contains("-c work_mem=64MB"), "{opts}");
        assert!(opts.contains("-c statement_timeout=60000"), "{opts}");
        assert!(!opts.contains("application_name"), "{opts}");
        assert_eq!(pg.get_application_name(), Some("pgdbm"));
    }
}
