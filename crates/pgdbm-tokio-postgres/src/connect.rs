//! Opening connections: hosts in order (or shuffled), each address of a host, TLS, server
//! settings at startup, the `target_session_attrs` check, init commands, retries.

use std::net::SocketAddr;
use std::time::Instant;

use pgdbm_core::{
    BoxError, Config, Error, HostSpec, Result, RetrySchedule, ServerState, SslMode,
    TargetSessionAttrs,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres_rustls::MakeRustlsConnect;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::connection::{ConnSettings, PgConnection};
use crate::errors::classify;
use crate::probe::SocketProbe;
use crate::tls;
use crate::wire::{AuthCheck, AuthPolicy, AuthRefused, Batch, Session, WireShim};

mod addresses;
mod failures;
mod target_check;

use addresses::{addresses_of, random_below, Address};
use failures::Failures;

/// One failed attempt.
struct AttemptError {
    host: String,
    port: u16,
    database: String,
    message: String,
    source: Option<BoxError>,
    /// Retrying cannot help (wrong password, unknown database, bad configuration...).
    permanent: bool,
    /// The server answered but is not the kind `target_session_attrs` asks for (or the check
    /// failed): the next host is tried, not the next address of this one.
    rejected: bool,
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
    pg.channel_binding(match config.channel_binding {
        pgdbm_core::ChannelBinding::Disable => tokio_postgres::config::ChannelBinding::Disable,
        pgdbm_core::ChannelBinding::Prefer => tokio_postgres::config::ChannelBinding::Prefer,
        pgdbm_core::ChannelBinding::Require => tokio_postgres::config::ChannelBinding::Require,
    });
    pg.connect_timeout(config.connect_timeout);
    pg
}

/// True for server errors that retrying cannot fix, and for authentication requests the
/// configuration refuses (`require_auth`, `channel_binding = require`).
fn is_permanent(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| classify(c.code()).permanent_connect_failure)
        || auth_refused(e).is_some()
}

/// The [`AuthRefused`] the wire shim failed the connection with, if that is what happened.
fn auth_refused(e: &tokio_postgres::Error) -> Option<&AuthRefused> {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(refused) = s.downcast_ref::<AuthRefused>() {
            return Some(refused);
        }
        if let Some(inner) = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(refused) = inner.downcast_ref::<AuthRefused>() {
                return Some(refused);
            }
        }
        src = s.source();
    }
    None
}

fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(refused) = auth_refused(e) {
        return format!("authentication refused: {refused}");
    }
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
    /// The resolved address the connection was opened to (`None` for a Unix socket): cancel
    /// requests go to this exact address, with no second name lookup.
    addr: Option<SocketAddr>,
    ssl_mode: SslMode,
    tls: Option<MakeRustlsConnect>,
    socket: SocketOptions,
    /// `require_auth` / `channel_binding = require`, checked by the wire shim.
    auth: AuthPolicy,
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
    /// The target `host:port` of `config` at `addr` (`None`: a Unix socket, or resolve `host`),
    /// with its TLS connector `tls`.
    pub(crate) fn new(
        config: &Config,
        host: &str,
        port: u16,
        addr: Option<SocketAddr>,
        tls: &Option<MakeRustlsConnect>,
    ) -> Self {
        Target {
            host: host.to_string(),
            port,
            addr,
            ssl_mode: config.ssl_mode,
            tls: tls.clone(),
            socket: SocketOptions::from_config(config),
            auth: AuthPolicy::from_config(config),
        }
    }

    /// True when streams to this server use TLS (unless the server declines it under `Prefer`).
    pub(crate) fn has_tls(&self) -> bool {
        self.tls.is_some() && self.ssl_mode != SslMode::Disable && !self.is_unix()
    }

    /// A `host` starting with `/` is a Unix socket directory (unless a TCP address was given
    /// for it, as `hostaddr`).
    fn is_unix(&self) -> bool {
        self.addr.is_none() && self.host.starts_with('/')
    }

    /// Opens a connection: the socket ([`open_socket`](Self::open_socket)) under a
    /// [`WireShim`], then tokio-postgres's startup with [`tls::ShimTls`] as its TLS connector
    /// (it sends the SSLRequest itself; see [`crate::tls`]) and the connection task spawned.
    /// `ssl_mode = prefer` ending in plaintext is logged as a warning.
    async fn start(
        &self,
        pg: &tokio_postgres::Config,
        batch: Batch,
        session: Arc<Session>,
    ) -> std::result::Result<
        (
            tokio_postgres::Client,
            tokio::task::AbortHandle,
            Option<SocketProbe>,
            ServerState,
        ),
        ConnectFailure,
    > {
        let (stream, probe) = self.open_socket().await.map_err(ConnectFailure::Io)?;
        let mut pg = pg.clone();
        if !self.has_tls() {
            pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        let used = Arc::new(AtomicBool::new(false));
        let shim = WireShim::new(tls::Plain::new(stream), batch, session.clone())
            .with_auth(AuthCheck::new(self.auth.clone(), false));
        let connector = tls::ShimTls::new(self.tls.clone(), &self.host, used.clone());
        let (client, conn) = pg
            .connect_raw(shim, connector)
            .await
            .map_err(ConnectFailure::Pg)?;
        if self.ssl_mode == SslMode::Prefer && !self.is_unix() && !used.load(Ordering::Acquire) {
            tracing::warn!(
                target: "pgdbm",
                host = %self.host,
                port = self.port,
                "ssl_mode = prefer: the server declined TLS, so this connection is unencrypted \
                 (password exchange and data in plaintext); enable ssl on the server, or set \
                 ssl_mode = disable to accept plaintext (or require to refuse it)"
            );
        }
        // What the server reported at startup (ParameterStatus), before the connection task
        // takes the connection.
        let state = ServerState::from_parameters(|name| conn.parameter(name));
        let task = spawn_connection(conn, session);
        Ok((client, task, probe, state))
    }

    /// Opens a stream and negotiates TLS like libpq, for a CancelRequest: none for `Disable`
    /// and for Unix sockets, else an SSLRequest; `'S'` means a TLS handshake with the rustls
    /// configuration of [`tls::connector`] (server name = `host`), `'N'` means plain text for
    /// `Prefer` and an error for the stricter modes.
    pub(crate) async fn open(&self) -> std::io::Result<Box<dyn Io>> {
        let (mut stream, _) = self.open_socket().await?;
        let Some(tls) = &self.tls else {
            return Ok(stream);
        };
        if !self.has_tls() {
            return Ok(stream);
        }
        stream.write_all(&SSL_REQUEST).await?;
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await?;
        match answer[0] {
            b'S' => {
                let mut make = tls.clone();
                let connect =
                    match MakeTlsConnect::<Box<dyn Io>>::make_tls_connect(&mut make, &self.host) {
                        Ok(c) => c,
                        Err(never) => match never {},
                    };
                let stream = TlsConnect::connect(connect, stream).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("error performing TLS handshake: {e}"))
                })?;
                Ok(Box::new(stream))
            }
            b'N' if self.ssl_mode == SslMode::Prefer => Ok(stream),
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

    /// Opens the socket: TCP (to the recorded address, with `TCP_NODELAY` and the keepalive
    /// options) or a Unix socket, plus a [`SocketProbe`] on it (below TLS).
    async fn open_socket(&self) -> std::io::Result<(Box<dyn Io>, Option<SocketProbe>)> {
        if self.is_unix() {
            return open_unix(&self.host, self.port).await;
        }
        let tcp = self.connect_tcp().await.map_err(|e| {
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
        Ok((Box::new(tcp), probe))
    }
}

impl Target {
    /// The TCP connection: to the recorded address, else (a target built without one) to
    /// whatever `host` resolves to.
    async fn connect_tcp(&self) -> std::io::Result<TcpStream> {
        match self.addr {
            Some(addr) => TcpStream::connect(addr).await,
            None => TcpStream::connect((self.host.as_str(), self.port)).await,
        }
    }

    /// The address streams to this server are opened to (`None` for a Unix socket).
    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        self.addr
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

/// One address of one host, one try: the stream, TLS, startup and authentication, the
/// `target_session_attrs` check (one pass of it: `attrs`), then `init_commands`.
async fn connect_host(
    config: &Config,
    base: &tokio_postgres::Config,
    tls: &Option<MakeRustlsConnect>,
    settings: &Arc<ConnSettings>,
    spec: &HostSpec,
    addr: Address,
    attrs: TargetSessionAttrs,
) -> std::result::Result<PgConnection, AttemptError> {
    let (host, port) = (spec.host.as_str(), spec.port);
    let database = config.database.clone();
    let fail = |message: String, source: Option<BoxError>, permanent: bool| AttemptError {
        host: host.to_string(),
        port,
        database: database.clone(),
        message,
        source,
        permanent,
        rejected: false,
    };
    let limit = config.connect_timeout;
    // A huge connect_timeout ("no limit") must not overflow the deadline.
    let deadline = tokio::time::Instant::now() + crate::connector::saturate(limit);
    let target = Target::new(config, host, port, addr, tls);
    let batch = Batch::default();
    let session = Arc::new(Session::default());

    let connected =
        tokio::time::timeout_at(deadline, target.start(base, batch.clone(), session.clone())).await;
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
    let (client, task, probe, state) = client;
    if let Err(reason) = target_check::check_target(&client, attrs, state, deadline).await {
        // Dropping the client ends the session politely (tokio-postgres sends Terminate) and
        // then the connection task.
        drop(client);
        let mut e = fail(reason, None, false);
        e.rejected = true;
        return Err(e);
    }

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

/// One attempt, as libpq makes it: for each pass of `target_session_attrs` (two for
/// `prefer-standby`), every host in order (shuffled for `load_balance_hosts = random`), and
/// for each host every address it resolves to until one connects; a server of the wrong kind
/// moves on to the next host. A permanent failure (authentication, unknown database) ends the
/// attempt at once, as in libpq. When everything fails, the error lists every host and why.
async fn attempt(p: &Prepared) -> std::result::Result<PgConnection, AttemptError> {
    let (config, tls) = (&p.config, &p.tls);
    let base = base_config(config);
    let mut hosts = config.host_specs();
    config.load_balance_hosts.order(&mut hosts, random_below);
    let mut failures = Failures::default();
    for &pass in config.target_session_attrs.passes() {
        for spec in &hosts {
            let addrs = match addresses_of(spec, config.connect_timeout, config.load_balance_hosts)
                .await
            {
                Ok(addrs) => addrs,
                Err(message) => {
                    tracing::debug!(target: "pgdbm", host = %spec, error = %message, "host lookup failed");
                    failures.record(
                        spec.to_string(),
                        AttemptError {
                            host: spec.host.clone(),
                            port: spec.port,
                            database: config.database.clone(),
                            message,
                            source: None,
                            permanent: false,
                            rejected: false,
                        },
                    );
                    continue;
                }
            };
            let several = addrs.len() > 1;
            for addr in addrs {
                match connect_host(config, &base, tls, &p.settings, spec, addr, pass).await {
                    Ok(conn) => return Ok(conn),
                    Err(e) => {
                        tracing::debug!(target: "pgdbm", host = %spec, ?addr, error = %e.message, "connection attempt failed");
                        let label = match addr {
                            Some(a) if several => format!("{spec} at {a}"),
                            _ => spec.to_string(),
                        };
                        let (permanent, next_host) = (e.permanent, e.rejected);
                        failures.record(label, e);
                        if permanent {
                            return Err(failures.into_error().unwrap_or_else(|| no_host(config)));
                        }
                        if next_host {
                            break;
                        }
                    }
                }
            }
        }
    }
    Err(failures.into_error().unwrap_or_else(|| no_host(config)))
}

/// The error of a config with no host at all (which `validate` rules out).
fn no_host(config: &Config) -> AttemptError {
    AttemptError {
        host: config.host.clone(),
        port: config.port,
        database: config.database.clone(),
        message: "no host to connect to".to_string(),
        source: None,
        permanent: true,
        rejected: false,
    }
}

impl PgConnection {
    /// One connection attempt: tries the configured hosts (`host` then `fallback_hosts`, in
    /// order or shuffled per [`Config::load_balance_hosts`]) and each address a host name
    /// resolves to (or its [`Config::hostaddr`]), each try bounded as a whole (TCP, TLS,
    /// authentication and the check) by `config.connect_timeout`; passes the server settings
    /// in the startup packet (no extra round trip), skips servers that are not what
    /// [`Config::target_session_attrs`] asks for (judged from the `in_hot_standby` and
    /// `default_transaction_read_only` the server reports at startup, or by asking older
    /// servers, as libpq does) and then runs `config.init_commands`. The connection task runs
    /// on the current tokio runtime. Cancel requests of the connection go to the address
    /// that served it.
    ///
    /// Errors are [`Error::Connection`] naming host, port, database and `attempts = 1`, never
    /// the password; with several hosts its message lists each host and why it failed. An
    /// invalid `config` (or TLS file) is an [`Error::Configuration`].
    pub async fn connect_once(config: &Config) -> Result<PgConnection> {
        let p = prepare(config)?;
        attempt(&p).await.map_err(|e| e.into_error(1))
    }

    /// The address this connection was opened to (`None` for a Unix socket); its cancel
    /// requests go there.
    pub fn server_addr(&self) -> Option<SocketAddr> {
        self.target().addr()
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
