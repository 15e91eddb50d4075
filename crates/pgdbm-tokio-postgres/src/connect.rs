//! Opening connections: hosts in order, TLS, server settings at startup, init commands, retries.

use std::time::Instant;

use pgdbm_core::{BoxError, Config, Error, Result, RetrySchedule, SslMode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use std::sync::Arc;

use crate::connection::{ConnSettings, PgConnection};
use crate::errors::classify;
use crate::probe::SocketProbe;
use crate::tls;
use crate::wire::{Batch, Session, WireShim};

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
    // StatementMode::Unnamed applies them per transaction instead (see `unnamed`): a
    // transaction pooler drops or refuses the startup `options`.
    if !settings.is_empty() && config.statement_mode != pgdbm_core::StatementMode::Unnamed {
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
    e.code()
        .is_some_and(|c| classify(c.code()).permanent_connect_failure)
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

/// The SSLRequest message: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A byte stream to the server: TCP, a Unix socket, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Where and how to open a stream to one server: used to connect, and again for each
/// CancelRequest (which needs a fresh stream to the same server, with the same TLS setup).
#[derive(Clone)]
pub(crate) struct Target {
    host: String,
    port: u16,
    ssl_mode: SslMode,
    tls: Option<MakeRustlsConnect>,
    socket: SocketOptions,
}

/// TCP options applied to every stream opened to a server (libpq's `keepalives*` and
/// `tcp_user_timeout`).
#[derive(Clone, Debug)]
pub(crate) struct SocketOptions {
    keepalive: Option<socket2::TcpKeepalive>,
    user_timeout: Option<std::time::Duration>,
}

impl SocketOptions {
    pub(crate) fn from_config(config: &Config) -> Self {
        let keepalive = config.keepalives.then(|| {
            let k = socket2::TcpKeepalive::new()
                .with_time(config.keepalives_idle)
                .with_interval(config.keepalives_interval);
            #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
            let k = k.with_retries(config.keepalives_count);
            k
        });
        SocketOptions {
            keepalive,
            user_timeout: config.tcp_user_timeout,
        }
    }

    fn apply(&self, tcp: &TcpStream) -> std::io::Result<()> {
        let sock = socket2::SockRef::from(tcp);
        if let Some(k) = &self.keepalive {
            sock.set_tcp_keepalive(k)?;
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(t) = self.user_timeout {
            sock.set_tcp_user_timeout(Some(t))?;
        }
        Ok(())
    }
}

impl Target {
    /// True when streams to this server use TLS (unless the server declines it under `Prefer`).
    pub(crate) fn has_tls(&self) -> bool {
        self.tls.is_some() && self.ssl_mode != SslMode::Disable
    }

    /// Opens a stream and negotiates TLS like libpq: none for `Disable` and for Unix sockets
    /// (a `host` starting with `/`), else an SSLRequest; `'S'` means a TLS handshake with the
    /// rustls configuration of [`tls::connector`] (server name = `host`), `'N'` means plain
    /// text for `Prefer` and an error for the stricter modes. TCP streams get `TCP_NODELAY`.
    pub(crate) async fn open(&self) -> std::io::Result<Box<dyn Io>> {
        self.open_probed().await.map(|(stream, _)| stream)
    }

    /// [`open`](Self::open), plus a [`SocketProbe`] on the stream's socket (below TLS).
    pub(crate) async fn open_probed(&self) -> std::io::Result<(Box<dyn Io>, Option<SocketProbe>)> {
        if self.host.starts_with('/') {
            return open_unix(&self.host, self.port).await;
        }
        let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("error connecting to server: {e}"))
            })?;
        tcp.set_nodelay(true)?;
        self.socket.apply(&tcp).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("error setting TCP keepalive options: {e}"),
            )
        })?;
        let probe = probe_of(&tcp);
        let Some(tls) = &self.tls else {
            return Ok((Box::new(tcp), probe));
        };
        if self.ssl_mode == SslMode::Disable {
            return Ok((Box::new(tcp), probe));
        }
        tcp.write_all(&SSL_REQUEST).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        match answer[0] {
            b'S' => {
                let mut make = tls.clone();
                let connect =
                    match MakeTlsConnect::<TcpStream>::make_tls_connect(&mut make, &self.host) {
                        Ok(c) => c,
                        Err(never) => match never {},
                    };
                let stream = TlsConnect::connect(connect, tcp).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("error performing TLS handshake: {e}"))
                })?;
                Ok((Box::new(stream), probe))
            }
            b'N' if self.ssl_mode == SslMode::Prefer => Ok((Box::new(tcp), probe)),
            b'N' => Err(std::io::Error::other(format!(
                "error performing TLS handshake: the server does not support TLS but ssl_mode = {:?} requires it",
                self.ssl_mode
            ))),
            other => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unexpected answer {other:#04x} to the SSLRequest; is this a PostgreSQL server?"),
            )),
        }
    }
}

#[cfg(unix)]
fn probe_of(stream: &impl std::os::fd::AsFd) -> Option<SocketProbe> {
    SocketProbe::of(stream)
}

#[cfg(not(unix))]
fn probe_of<T>(_stream: &T) -> Option<SocketProbe> {
    None
}

#[cfg(unix)]
async fn open_unix(dir: &str, port: u16) -> std::io::Result<(Box<dyn Io>, Option<SocketProbe>)> {
    let path = format!("{dir}/.s.PGSQL.{port}");
    let stream = tokio::net::UnixStream::connect(&path).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("error connecting to server at {path}: {e}"),
        )
    })?;
    let probe = probe_of(&stream);
    Ok((Box::new(stream), probe))
}

#[cfg(not(unix))]
async fn open_unix(dir: &str, _port: u16) -> std::io::Result<(Box<dyn Io>, Option<SocketProbe>)> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!("host {dir} is a Unix socket directory, which this platform does not support"),
    ))
}

/// Why one connect failed.
enum ConnectFailure {
    Io(std::io::Error),
    Pg(tokio_postgres::Error),
}

/// One host, one try.
async fn connect_host(
    config: &Config,
    base: &tokio_postgres::Config,
    tls: &Option<MakeRustlsConnect>,
    settings: &Arc<ConnSettings>,
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
    // TLS (if any) is negotiated by `Target::open`, below the wire shim; tokio-postgres gets an
    // already secured stream.
    pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let limit = config.connect_timeout;
    let target = Target {
        host: host.to_string(),
        port,
        ssl_mode: config.ssl_mode,
        tls: tls.clone(),
        socket: SocketOptions::from_config(config),
    };
    let batch = Batch::default();
    let session = Arc::new(Session::default());

    let connected = tokio::time::timeout(limit, async {
        let (stream, probe) = target.open_probed().await.map_err(ConnectFailure::Io)?;
        let shim = WireShim::new(stream, batch.clone(), session.clone());
        let (client, conn) = pg
            .connect_raw(shim, NoTls)
            .await
            .map_err(ConnectFailure::Pg)?;
        let task = spawn_connection(conn, session.clone());
        Ok::<_, ConnectFailure>((client, task, probe))
    })
    .await;
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
        Ok(Err(ConnectFailure::Pg(e))) => {
            let permanent = is_permanent(&e);
            return Err(fail(describe(&e), Some(Box::new(e)), permanent));
        }
        Ok(Err(ConnectFailure::Io(e))) => {
            return Err(fail(e.to_string(), Some(Box::new(e)), false));
        }
        Ok(Ok(connected)) => connected,
    };
    let (client, task, probe) = client;

    let endpoint = format!("{host}:{port}/{database}");
    let conn = PgConnection::from_parts(
        client,
        target,
        batch,
        session,
        task,
        settings.clone(),
        endpoint,
    )
    .with_probe(probe);
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

fn spawn_connection<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    session: Arc<Session>,
) -> tokio::task::AbortHandle
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use std::task::Poll;
    use tokio_postgres::AsyncMessage;
    tokio::spawn(async move {
        // What `Connection`'s own `Future` does, but notifications go to the session's inbox
        // (a LISTEN stream, when one registered) instead of being dropped.
        let ended = futures_util::future::poll_fn(|cx| loop {
            match conn.poll_message(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Some(Ok(AsyncMessage::Notification(n)))) => {
                    session.notifications.deliver(&n)
                }
                Poll::Ready(Some(Ok(AsyncMessage::Notice(n)))) => {
                    tracing::debug!(target: "pgdbm", severity = n.severity(), message = n.message(), "server notice")
                }
                Poll::Ready(Some(Ok(_))) => {}
            }
        })
        .await;
        let reason = match &ended {
            Ok(()) => "the connection was closed".to_string(),
            Err(e) => e.as_db_error().map_or_else(|| e.to_string(), |d| format!("{} (SQLSTATE {})", d.message(), d.code().code())),
        };
        session.notifications.close(reason);
        if let Err(e) = ended {
            tracing::debug!(target: "pgdbm", error = %e, "connection task ended with an error");
        }
    })
    .abort_handle()
}

/// What one config needs to open connections: the config (validated; its fields are the only
/// source of connection parameters), its TLS connector and the settings its connections share.
struct Prepared {
    config: Config,
    tls: Option<MakeRustlsConnect>,
    settings: Arc<ConnSettings>,
}

fn prepare(config: &Config) -> Result<Prepared> {
    let config = config.clone();
    config.validate()?;
    let tls = tls::connector(&config)?;
    let settings = Arc::new(ConnSettings::from_config(&config));
    Ok(Prepared {
        config,
        tls,
        settings,
    })
}

/// One attempt over every host in order; the last host's error when all fail.
async fn attempt(p: &Prepared) -> std::result::Result<PgConnection, AttemptError> {
    let (config, tls) = (&p.config, &p.tls);
    let base = base_config(config);
    let hosts = config.hosts();
    let mut last = None;
    for (host, port) in &hosts {
        match connect_host(config, &base, tls, &p.settings, host, *port).await {
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
    /// `fallback_hosts`), each bounded as a whole (TCP,
    /// TLS and authentication) by `config.connect_timeout`; passes the server settings in the
    /// startup packet (no extra round trip) and then runs `config.init_commands`. The
    /// connection task runs on the current tokio runtime.
    ///
    /// Errors are [`Error::Connection`] naming host, port, database and `attempts = 1`, never
    /// the password; an invalid `config` (or TLS file) is an [`Error::Configuration`].
    pub async fn connect_once(config: &Config) -> Result<PgConnection> {
        let p = prepare(config)?;
        attempt(&p).await.map_err(|e| e.into_error(1))
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
        let p = prepare(config)?;
        let schedule = RetrySchedule::from_config(&p.config);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match attempt(&p).await {
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
    fn fields_changed_after_parsing_a_url_win() {
        let mut c = Config::from_url("postgresql://u:secret@h1:5433,h2:5434/db").unwrap();
        c.database = "other".to_string();
        c.user = "v".to_string();
        assert_eq!(
            c.hosts(),
            vec![("h1".to_string(), 5433), ("h2".to_string(), 5434)]
        );
        let pg = base_config(&c);
        assert_eq!(pg.get_dbname(), Some("other"));
        assert_eq!(pg.get_user(), Some("v"));
        assert_eq!(pg.get_password(), Some(&b"secret"[..]));
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
