//! [`TestServer`]: a throwaway PostgreSQL server for tests.

use pgdbm_core::percent_encode;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use pgdbm_core::{Config, Error, Result, SslMode};

use crate::config::TestConfig;
use crate::discover::{find_pg_bin, find_psql};
use crate::names::{quoted, validate_database_name};
use crate::{reap, sys};

/// The superuser of a throwaway server.
const SUPERUSER: &str = "postgres";
/// Its password. By default the server trusts loopback connections, so it is only checked with
/// [`TestServerOptions::password_auth`]; clients that insist on a password (such as
/// `Config::dsn`) get one that works either way.
const SUPERUSER_PASSWORD: &str = "postgres";
/// The system user that runs initdb and postgres when the tests run as root.
const SYSTEM_USER: &str = "postgres";
/// Names of the TLS files inside the server directory ([`TestServerOptions::tls_files`]).
const TLS_CERT_FILE: &str = "server.crt";
const TLS_KEY_FILE: &str = "server.key";
/// How many times a start is retried when another process took the chosen port.
const PORT_ATTEMPTS: u32 = 10;

/// Options for [`TestServer::start_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TestServerOptions {
    /// Directory holding `initdb` and `postgres`; `None` searches as
    /// [`find_pg_bin`](crate::find_pg_bin) says.
    pub pg_bin: Option<PathBuf>,
    /// Parent of the server directories; `None` = `<temp dir>/pgdbm-testkit`. Stale directories
    /// found here are reaped at start.
    pub base_dir: Option<PathBuf>,
    /// How long to wait for the server to accept connections (default 60 s).
    pub start_timeout: Duration,
    /// The server's `max_connections` (default 300, for many parallel tests).
    pub max_connections: u32,
    /// Extra server settings passed as `-c name=value` (they override the defaults).
    pub settings: Vec<(String, String)>,
    /// Kill the server when the thread that started it (and so the test process) dies, even by
    /// SIGKILL (default true). Only turn it off to test the reaper.
    pub die_with_process: bool,
    /// A fixed port; `None` (default) picks a free one, retrying when another process takes it
    /// first. A fixed port that is in use is an error.
    pub port: Option<u16>,
    /// Check passwords (SCRAM-SHA-256) on TCP connections instead of trusting them (default
    /// false), e.g. to test a wrong password. Unix-socket connections stay trusted.
    pub password_auth: bool,
    /// Serve TLS with this certificate and private key (PEM files, copied into the server
    /// directory); `None` (default) serves plain connections only.
    pub tls_files: Option<(PathBuf, PathBuf)>,
}

impl Default for TestServerOptions {
    fn default() -> Self {
        TestServerOptions {
            pg_bin: None,
            base_dir: None,
            start_timeout: Duration::from_secs(60),
            max_connections: 300,
            settings: Vec::new(),
            die_with_process: true,
            port: None,
            password_auth: false,
            tls_files: None,
        }
    }
}

impl TestServerOptions {
    /// Use the binaries in `dir`.
    pub fn pg_bin(mut self, dir: impl Into<PathBuf>) -> Self {
        self.pg_bin = Some(dir.into());
        self
    }

    /// Put the server directory under `dir`.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// Wait at most `timeout` for the server to accept connections.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Adds a server setting (`-c name=value`).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Listen on `port` instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Whether the server dies with the process that started it (see the field).
    pub fn die_with_process(mut self, yes: bool) -> Self {
        self.die_with_process = yes;
        self
    }

    /// Whether TCP connections must give the password (see the field).
    pub fn password_auth(mut self, yes: bool) -> Self {
        self.password_auth = yes;
        self
    }

    /// Serve TLS with the PEM certificate `cert` and private key `key` (see the field).
    pub fn tls_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_files = Some((cert.into(), key.into()));
        self
    }
}

/// A PostgreSQL server for tests: either a throwaway one started from the local binaries, or an
/// existing one named by `TEST_DB_HOST` (see [`TestServer::shared`]).
///
/// A throwaway server runs in `<temp>/pgdbm-testkit/<pid>-<n>/` on a free loopback port, with
/// the superuser `postgres` (trusted on 127.0.0.1; password `postgres`), fsync off, and
/// `max_connections` 300. When the tests run as root, `initdb` and `postgres` run as the
/// `postgres` system user. Dropping the value stops the server and deletes its directory; if
/// the test process is killed, the server dies with it (parent-death signal) and the directory
/// is reaped by the next start.
pub struct TestServer {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    psql: PathBuf,
    local: Option<Local>,
}

/// The parts of a throwaway server.
struct Local {
    bin_dir: PathBuf,
    dir: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    run_as: Option<RunAs>,
    options: TestServerOptions,
    running: Mutex<Option<Running>>,
}

/// The uid/gid the server processes run as (when the tests run as root).
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// A running postmaster and the keeper thread that started it and will stop it.
struct Running {
    pid: u32,
    stop: mpsc::Sender<Shutdown>,
    exited: Arc<AtomicBool>,
    keeper: JoinHandle<()>,
}

/// How to stop the server.
#[derive(Debug, Clone, Copy)]
enum Shutdown {
    /// SIGINT: roll back, checkpoint, exit (used by `stop`/`restart`, data kept).
    Fast,
    /// SIGQUIT: exit at once (used on drop, the data is deleted anyway).
    Immediate,
}

/// Why a start failed.
enum StartFailure {
    /// Someone else took the port between choosing it and the server binding it.
    PortTaken(String),
    /// Anything else.
    Other(Error),
}

static SHARED: OnceLock<std::result::Result<TestServer, String>> = OnceLock::new();

impl TestServer {
    /// The server shared by all tests of this process, started on first use.
    ///
    /// When `TEST_DB_HOST` is set, it is the existing server described by the `TEST_DB_*`
    /// variables ([`TestConfig::from_env`]); otherwise a throwaway server with default options.
    /// The server is never dropped: at process exit it is stopped (an `atexit` hook, and the
    /// parent-death signal when the process is killed) and its directory is deleted or reaped
    /// by the next start.
    ///
    /// # Errors
    /// The error of the first start attempt (every later call returns it again).
    pub fn shared() -> Result<&'static TestServer> {
        let slot = SHARED.get_or_init(|| {
            let server = match TestConfig::from_env_if_set() {
                Ok(Some(config)) => TestServer::external(&config),
                Ok(None) => TestServer::start(),
                Err(e) => Err(e),
            };
            if let Ok(s) = &server {
                if s.local.is_some() {
                    let _ = sys::at_exit(stop_shared_at_exit);
                }
            }
            server.map_err(|e| e.to_string())
        });
        match slot {
            Ok(server) => Ok(server),
            Err(message) => Err(Error::TestDatabase {
                name: None,
                message: format!("the shared test server could not be started: {message}"),
                source: None,
            }),
        }
    }

    /// Starts a private throwaway server with default options (it ignores `TEST_DB_HOST`).
    ///
    /// # Errors
    /// [`Error::TestDatabase`] when no binaries are found, initdb fails, or the server does not
    /// accept connections in time (the message includes the end of the server log).
    pub fn start() -> Result<TestServer> {
        Self::start_with(TestServerOptions::default())
    }

    /// Starts a private throwaway server with `options`.
    ///
    /// # Errors
    /// As [`start`](Self::start), and [`Error::Configuration`] for invalid options.
    pub fn start_with(options: TestServerOptions) -> Result<TestServer> {
        validate_options(&options)?;
        let bin_dir = find_pg_bin(options.pg_bin.as_deref())?;
        let run_as = RunAs::detect()?;
        let base = options
            .base_dir
            .clone()
            .unwrap_or_else(reap::default_base_dir);
        ensure_base_dir(&base)?;
        reap::reap_stale(&base);
        let dir = create_server_dir(&base, run_as)?;
        let data_dir = dir.join("data");
        let log_path = dir.join("postgres.log");
        let local = Local {
            bin_dir,
            dir,
            data_dir,
            log_path,
            run_as,
            options,
            running: Mutex::new(None),
        };
        let mut server = TestServer {
            host: "127.0.0.1".to_string(),
            port: 0,
            user: SUPERUSER.to_string(),
            password: Some(SUPERUSER_PASSWORD.to_string()),
            psql: find_psql(Some(&local.bin_dir)),
            local: Some(local),
        };
        // From here on, dropping `server` deletes the directory.
        server.init_db()?;
        let attempts = if server_fixed_port(&server) {
            1
        } else {
            PORT_ATTEMPTS
        };
        let mut last = String::new();
        for _ in 0..attempts {
            let Some(local) = &server.local else { break };
            server.port = match local.options.port {
                Some(port) => port,
                None => free_port()?,
            };
            match local.launch(server.port) {
                Ok(r) => {
                    *lock(&local.running) = Some(r);
                    return Ok(server);
                }
                Err(StartFailure::PortTaken(log)) => last = log,
                Err(StartFailure::Other(e)) => return Err(e),
            }
        }
        Err(start_error(if attempts == 1 {
            format!(
                "port {} is in use by another process: choose another port or leave \
                 `TestServerOptions::port` unset; server log:\n{last}",
                server.port
            )
        } else {
            format!("no free port after {attempts} attempts; last server log:\n{last}")
        }))
    }

    /// Uses an existing server (no process is started; [`stop`](Self::stop) and friends are
    /// errors). Checks that the host and port accept TCP connections.
    ///
    /// # Errors
    /// [`Error::TestDatabase`] when the server cannot be reached, naming host, port and the
    /// `TEST_DB_*` variables.
    pub fn external(config: &TestConfig) -> Result<TestServer> {
        if !config.host.starts_with('/') {
            let reachable = (config.host.as_str(), config.port)
                .to_socket_addrs()
                .map(|addrs| {
                    addrs
                        .into_iter()
                        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok())
                })
                .unwrap_or(false);
            if !reachable {
                return Err(Error::TestDatabase {
                    name: None,
                    message: format!(
                        "cannot reach the test server {}:{} named by TEST_DB_HOST/TEST_DB_PORT: \
                         start it, fix the variables, or unset TEST_DB_HOST to use a throwaway \
                         server",
                        config.host, config.port
                    ),
                    source: None,
                });
            }
        }
        let bin_dir = find_pg_bin(None).ok();
        Ok(TestServer {
            host: config.host.clone(),
            port: config.port,
            user: config.user.clone(),
            password: Some(config.password.clone()),
            psql: find_psql(bin_dir.as_deref()),
            local: None,
        })
    }

    /// Host to connect to (`127.0.0.1` for a throwaway server).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Port to connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Superuser name (`postgres` for a throwaway server).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Password (`postgres` for a throwaway server, which does not check it).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// True for a throwaway server started by this process, false for a `TEST_DB_HOST` one.
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// The data directory of a throwaway server.
    pub fn data_dir(&self) -> Option<&Path> {
        self.local.as_ref().map(|l| l.data_dir.as_path())
    }

    /// The server directory (data directory, socket and log live in it) of a throwaway server.
    pub fn dir(&self) -> Option<&Path> {
        self.local.as_ref().map(|l| l.dir.as_path())
    }

    /// The Unix socket directory of a throwaway server.
    pub fn socket_dir(&self) -> Option<&Path> {
        self.dir()
    }

    /// The server log of a throwaway server.
    pub fn log_path(&self) -> Option<&Path> {
        self.local.as_ref().map(|l| l.log_path.as_path())
    }

    /// The postmaster's process id, while a throwaway server runs.
    pub fn pid(&self) -> Option<u32> {
        let local = self.local.as_ref()?;
        let running = lock(&local.running);
        running.as_ref().map(|r| r.pid)
    }

    /// True while the server runs (always true for an external server).
    pub fn is_running(&self) -> bool {
        match &self.local {
            None => true,
            Some(local) => lock(&local.running)
                .as_ref()
                .is_some_and(|r| !r.exited.load(Ordering::SeqCst)),
        }
    }

    /// `postgresql://user:password@host:port/database`, percent-encoded.
    pub fn connection_url(&self, database: &str) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            percent_encode(&self.host)
        };
        let userinfo = match &self.password {
            Some(p) => format!("{}:{}", percent_encode(&self.user), percent_encode(p)),
            None => percent_encode(&self.user),
        };
        format!(
            "postgresql://{userinfo}@{host}:{}/{}",
            self.port,
            percent_encode(database)
        )
    }

    /// A pgdbm [`Config`] for `database` on this server (TLS disabled for a throwaway server).
    pub fn config(&self, database: &str) -> Config {
        let mut config = Config::default();
        config.host = self.host.clone();
        config.port = self.port;
        config.user = self.user.clone();
        config.password = self.password.clone();
        config.database = database.to_string();
        if self.local.is_some() {
            config.ssl_mode = SslMode::Disable;
        }
        config
    }

    /// Runs `sql` with `psql -X -A -t -q -v ON_ERROR_STOP=1` in `database` and returns its
    /// output without the final newline (one line per row, columns separated by `|`).
    ///
    /// # Errors
    /// [`Error::TestDatabase`] naming the database: an invalid database name, psql missing, or
    /// the statement failing (with psql's message).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        validate_database_name(database)?;
        let mut cmd = Command::new(&self.psql);
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.host)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(&self.user)
            .arg("-d")
            .arg(database)
            .arg("-c")
            .arg(sql)
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGOPTIONS")
            .env_remove("PGSERVICE")
            .stdin(Stdio::null());
        match &self.password {
            Some(p) => cmd.env("PGPASSWORD", p),
            None => cmd.env_remove("PGPASSWORD"),
        };
        let out = cmd.output().map_err(|e| Error::TestDatabase {
            name: Some(database.to_string()),
            message: format!(
                "cannot run {}: {e}; install the PostgreSQL client (Debian: `apt-get install \
                 postgresql-client`)",
                self.psql.display()
            ),
            source: Some(Box::new(e)),
        })?;
        if !out.status.success() {
            return Err(Error::TestDatabase {
                name: Some(database.to_string()),
                message: format!(
                    "psql failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                source: None,
            });
        }
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.ends_with('\n') {
            text.pop();
        }
        Ok(text)
    }

    /// Creates the database `name` (a validated identifier).
    ///
    /// # Errors
    /// [`Error::TestDatabase`] naming `name` when it is invalid or creation fails (for example
    /// because it exists).
    pub fn create_database(&self, name: &str) -> Result<()> {
        validate_database_name(name)?;
        self.psql("postgres", &format!("CREATE DATABASE {}", quoted(name)))
            .map(drop)
            .map_err(|e| rename(e, name))
    }

    /// Drops the database `name` if it exists, disconnecting its sessions first.
    ///
    /// # Errors
    /// [`Error::TestDatabase`] naming `name` when it is invalid or the drop fails.
    pub fn drop_database(&self, name: &str) -> Result<()> {
        validate_database_name(name)?;
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quoted(name)),
        )
        .map(drop)
        .map_err(|e| rename(e, name))
    }

    /// Stops a throwaway server (fast shutdown), keeping its data directory and port for
    /// [`start_again`](Self::start_again). Does nothing when it is already stopped.
    ///
    /// # Errors
    /// [`Error::TestDatabase`] for an external server.
    pub fn stop(&self) -> Result<()> {
        let local = self.require_local("stop")?;
        let mut running = lock(&local.running);
        if let Some(r) = running.take() {
            r.shutdown(Shutdown::Fast);
        }
        Ok(())
    }

    /// Starts a stopped throwaway server again, on the same port and data directory. Does
    /// nothing when it runs.
    ///
    /// # Errors
    /// [`Error::TestDatabase`] for an external server, when the port was taken meanwhile, or
    /// when the server does not come up (with the end of its log).
    pub fn start_again(&self) -> Result<()> {
        let local = self.require_local("start_again")?;
        let mut running = lock(&local.running);
        if running
            .as_ref()
            .is_some_and(|r| !r.exited.load(Ordering::SeqCst))
        {
            return Ok(());
        }
        if let Some(dead) = running.take() {
            dead.shutdown(Shutdown::Immediate);
        }
        match local.launch(self.port) {
            Ok(r) => {
                *running = Some(r);
                Ok(())
            }
            Err(StartFailure::PortTaken(log)) => Err(start_error(format!(
                "port {} was taken by another process while the server was stopped; server \
                 log:\n{log}",
                self.port
            ))),
            Err(StartFailure::Other(e)) => Err(e),
        }
    }

    /// [`stop`](Self::stop) then [`start_again`](Self::start_again): existing connections are
    /// broken, the data stays.
    ///
    /// # Errors
    /// As those two.
    pub fn restart(&self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }

    fn require_local(&self, what: &str) -> Result<&Local> {
        self.local.as_ref().ok_or_else(|| Error::TestDatabase {
            name: None,
            message: format!(
                "`{what}` needs a throwaway server, but this one is the external server \
                 {}:{} (TEST_DB_HOST); use TestServer::start() for a private server",
                self.host, self.port
            ),
            source: None,
        })
    }

    fn init_db(&self) -> Result<()> {
        let Some(local) = &self.local else {
            return Ok(());
        };
        let pwfile = local.dir.join("pwfile");
        fs::write(&pwfile, format!("{SUPERUSER_PASSWORD}\n"))
            .and_then(|()| local.chown(&pwfile))
            .map_err(|e| io_error("cannot write the initdb password file", &pwfile, e))?;
        let mut cmd = local.command("initdb");
        cmd.arg("-D")
            .arg(&local.data_dir)
            .arg("-U")
            .arg(SUPERUSER)
            .arg(OsString::from(format!("--pwfile={}", pwfile.display())))
            .args(if local.options.password_auth {
                ["--auth-local=trust", "--auth-host=scram-sha-256"]
            } else {
                ["-A", "trust"]
            })
            .args(["-E", "UTF8", "--no-locale", "-N"])
            .stdin(Stdio::null());
        let out = cmd.output().map_err(|e| Error::TestDatabase {
            name: None,
            message: format!("cannot run {}: {e}", local.bin_dir.join("initdb").display()),
            source: Some(Box::new(e)),
        });
        let _ = fs::remove_file(&pwfile);
        let out = out?;
        if !out.status.success() {
            return Err(start_error(format!(
                "initdb failed ({}):\n{}{}",
                out.status,
                tail(&String::from_utf8_lossy(&out.stdout), 10),
                tail(&String::from_utf8_lossy(&out.stderr), 20)
            )));
        }
        if let Some((cert, key)) = &local.options.tls_files {
            // The server reads them as its own user and refuses a key others can read.
            for (from, name) in [(cert, TLS_CERT_FILE), (key, TLS_KEY_FILE)] {
                let to = local.dir.join(name);
                fs::copy(from, &to)
                    .and_then(|_| local.chown(&to))
                    .map_err(|e| io_error("cannot copy the TLS file", from, e))?;
            }
            let key = local.dir.join(TLS_KEY_FILE);
            fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(|e| io_error("cannot restrict the TLS key file", &key, e))?;
        }
        Ok(())
    }

    /// Stops the shared server at process exit without blocking on a held lock.
    fn stop_for_exit(&self) {
        if let Some(local) = &self.local {
            if let Ok(mut running) = local.running.try_lock() {
                if let Some(r) = running.take() {
                    r.shutdown(Shutdown::Immediate);
                }
                let _ = fs::remove_dir_all(&local.dir);
            }
        }
    }
}

extern "C" fn stop_shared_at_exit() {
    if let Some(Ok(server)) = SHARED.get() {
        server.stop_for_exit();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(local) = &self.local {
            let running = match local.running.lock() {
                Ok(mut guard) => guard.take(),
                Err(poisoned) => poisoned.into_inner().take(),
            };
            if let Some(r) = running {
                r.shutdown(Shutdown::Immediate);
            }
            if !local.dir.as_os_str().is_empty() {
                reap::kill_server_processes(&local.dir);
                let _ = fs::remove_dir_all(&local.dir);
            }
        }
    }
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("local", &self.local.is_some())
            .field("dir", &self.dir())
            .field("pid", &self.pid())
            .finish()
    }
}

impl Local {
    /// A command for the server binary `name`, as the `postgres` user when root, dying with
    /// the calling thread when so configured.
    fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(name));
        cmd.current_dir(&self.dir);
        if let Some(run_as) = self.run_as {
            cmd.uid(run_as.uid).gid(run_as.gid);
        }
        if self.options.die_with_process {
            sys::die_with_parent(&mut cmd, sys::SIGQUIT);
        }
        cmd
    }

    fn chown(&self, path: &Path) -> io::Result<()> {
        match self.run_as {
            Some(r) => std::os::unix::fs::chown(path, Some(r.uid), Some(r.gid)),
            None => Ok(()),
        }
    }

    /// Starts postgres on `port` from a new keeper thread and waits until it accepts
    /// connections.
    fn launch(&self, port: u16) -> std::result::Result<Running, StartFailure> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| StartFailure::Other(io_error("cannot open", &self.log_path, e)))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log2 = log
            .try_clone()
            .map_err(|e| StartFailure::Other(io_error("cannot open", &self.log_path, e)))?;
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(port.to_string())
            .arg("-h")
            .arg("127.0.0.1")
            .arg("-k")
            .arg(&self.dir)
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .arg("-c")
            .arg(format!("max_connections={}", self.options.max_connections));
        if self.options.tls_files.is_some() {
            cmd.args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!(
                    "ssl_cert_file={}",
                    self.dir.join(TLS_CERT_FILE).display()
                ))
                .arg("-c")
                .arg(format!(
                    "ssl_key_file={}",
                    self.dir.join(TLS_KEY_FILE).display()
                ));
        }
        for (name, value) in &self.options.settings {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let running = spawn_keeper(cmd).map_err(|e| {
            StartFailure::Other(Error::TestDatabase {
                name: None,
                message: format!(
                    "cannot start {}: {e}",
                    self.bin_dir.join("postgres").display()
                ),
                source: Some(Box::new(e)),
            })
        })?;
        let deadline = Instant::now() + self.options.start_timeout;
        loop {
            if running.exited.load(Ordering::SeqCst) {
                let log = self.log_since(log_start);
                running.shutdown(Shutdown::Immediate);
                let taken = ["could not bind", "Address already in use"]
                    .iter()
                    .any(|needle| log.contains(needle));
                return Err(if taken {
                    StartFailure::PortTaken(tail(&log, 20))
                } else {
                    StartFailure::Other(start_error(format!(
                        "postgres exited during start; server log ({}):\n{}",
                        self.log_path.display(),
                        tail(&log, 20)
                    )))
                });
            }
            if self.is_ready(running.pid, port) {
                return Ok(running);
            }
            if Instant::now() >= deadline {
                running.shutdown(Shutdown::Immediate);
                return Err(StartFailure::Other(start_error(format!(
                    "postgres did not accept connections on 127.0.0.1:{port} within {:?}; \
                     server log ({}):\n{}",
                    self.options.start_timeout,
                    self.log_path.display(),
                    tail(&self.log_since(log_start), 20)
                ))));
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// The postmaster wrote `ready` in its pid file and answers a startup message.
    fn is_ready(&self, pid: u32, port: u16) -> bool {
        let Ok(text) = fs::read_to_string(self.data_dir.join("postmaster.pid")) else {
            return false;
        };
        let lines: Vec<&str> = text.lines().collect();
        let pid_matches = lines.first().is_some_and(|l| l.trim() == pid.to_string());
        let ready = lines.get(7).is_some_and(|l| l.trim() == "ready");
        pid_matches && ready && accepts_startup(port).unwrap_or(false)
    }

    fn log_since(&self, offset: u64) -> String {
        let text = fs::read(&self.log_path).unwrap_or_default();
        let start = usize::try_from(offset).unwrap_or(0).min(text.len());
        String::from_utf8_lossy(&text[start..]).into_owned()
    }
}

impl RunAs {
    /// `Some(postgres user)` when running as root (initdb and postgres refuse root).
    fn detect() -> Result<Option<RunAs>> {
        if sys::geteuid() != 0 {
            return Ok(None);
        }
        lookup_user(SYSTEM_USER)
            .map(Some)
            .ok_or_else(|| Error::TestDatabase {
                name: None,
                message: format!(
                "the tests run as root, and PostgreSQL refuses to run as root, but there is no \
                 `{SYSTEM_USER}` system user to run it as; create it (`useradd --system \
                 {SYSTEM_USER}`; installing the postgresql package does it) or run the tests as \
                 an ordinary user"
            ),
                source: None,
            })
    }
}

/// uid and gid of `name`, from `/etc/passwd`, else from `id`.
fn lookup_user(name: &str) -> Option<RunAs> {
    if let Ok(passwd) = fs::read_to_string("/etc/passwd") {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() >= 4 && fields[0] == name {
                if let (Ok(uid), Ok(gid)) = (fields[2].parse(), fields[3].parse()) {
                    return Some(RunAs { uid, gid });
                }
            }
        }
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(name).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some(RunAs {
        uid: id("-u")?,
        gid: id("-g")?,
    })
}

impl Running {
    /// Asks the keeper to stop the server and waits for it.
    fn shutdown(self, how: Shutdown) {
        let _ = self.stop.send(how);
        let _ = self.keeper.join();
    }
}

/// Spawns `cmd` from a new long-lived thread. The parent-death signal fires when the spawning
/// *thread* exits, so the thread stays until the server is stopped (or the process dies).
fn spawn_keeper(mut cmd: Command) -> io::Result<Running> {
    let (started_tx, started_rx) = mpsc::sync_channel::<io::Result<u32>>(1);
    let (stop_tx, stop_rx) = mpsc::channel::<Shutdown>();
    let exited = Arc::new(AtomicBool::new(false));
    let exited_flag = Arc::clone(&exited);
    let keeper = thread::Builder::new()
        .name("pgdbm-testkit-postgres".to_string())
        .spawn(move || {
            let mut child = match cmd.spawn() {
                Ok(child) => {
                    let _ = started_tx.send(Ok(child.id()));
                    child
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            let how = loop {
                match stop_rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(how) => break how,
                    Err(RecvTimeoutError::Disconnected) => break Shutdown::Immediate,
                    Err(RecvTimeoutError::Timeout) => {
                        if !exited_flag.load(Ordering::SeqCst)
                            && matches!(child.try_wait(), Ok(Some(_)))
                        {
                            exited_flag.store(true, Ordering::SeqCst);
                        }
                    }
                }
            };
            stop_child(&mut child, how);
            exited_flag.store(true, Ordering::SeqCst);
        })?;
    match started_rx.recv() {
        Ok(Ok(pid)) => Ok(Running {
            pid,
            stop: stop_tx,
            exited,
            keeper,
        }),
        Ok(Err(e)) => {
            let _ = keeper.join();
            Err(e)
        }
        Err(_) => {
            let _ = keeper.join();
            Err(io::Error::other("the server keeper thread ended early"))
        }
    }
}

/// Signals the postmaster, waits for it, and SIGKILLs it when it does not exit in time.
fn stop_child(child: &mut Child, how: Shutdown) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let (signal, grace) = match how {
        Shutdown::Fast => (sys::SIGINT, Duration::from_secs(30)),
        Shutdown::Immediate => (sys::SIGQUIT, Duration::from_secs(10)),
    };
    let _ = sys::send_signal(child.id(), signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            _ => return,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends a protocol-3 startup message as `postgres` and reads the first answer byte: `R`
/// (authentication request) means the server accepts connections; `E` (e.g. "starting up")
/// means not yet.
fn accepts_startup(port: u16) -> io::Result<bool> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    for part in ["user", SUPERUSER, "database", "postgres"] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    body.push(0);
    let len = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
    let mut packet = len.to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    stream.write_all(&packet)?;
    let mut first = [0u8; 1];
    stream.read_exact(&mut first)?;
    if first[0] == b'R' {
        // Terminate, so the server logs no "unexpected EOF".
        let _ = stream.write_all(&[b'X', 0, 0, 0, 4]);
    }
    Ok(first[0] == b'R')
}

fn validate_options(options: &TestServerOptions) -> Result<()> {
    if options.max_connections == 0 {
        return Err(Error::config(
            "max_connections",
            "must be at least 1 (default 300)",
        ));
    }
    if options.start_timeout.is_zero() {
        return Err(Error::config(
            "start_timeout",
            "must be positive (default 60 s)",
        ));
    }
    for (name, _) in &options.settings {
        let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !ok {
            return Err(Error::config(
                "settings",
                format!("`{name}` is not a PostgreSQL setting name"),
            ));
        }
    }
    Ok(())
}

/// Creates `base` (mode 1777, like /tmp, so root and ordinary users can share it).
fn ensure_base_dir(base: &Path) -> Result<()> {
    match fs::DirBuilder::new().recursive(true).create(base) {
        Ok(()) => {}
        Err(e) => return Err(io_error("cannot create", base, e)),
    }
    if let Ok(meta) = fs::metadata(base) {
        use std::os::unix::fs::MetadataExt;
        if meta.uid() == sys::geteuid() && meta.permissions().mode() & 0o7777 != 0o1777 {
            let _ = fs::set_permissions(base, fs::Permissions::from_mode(0o1777));
        }
    }
    Ok(())
}

/// Creates `<base>/<pid>-<n>` with the owner file, owned by the server's user.
fn create_server_dir(base: &Path, run_as: Option<RunAs>) -> Result<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("{}-{n}", std::process::id()));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A leftover of an earlier process with our pid: reap it if stale, else skip.
                if reap::is_stale(&dir) {
                    reap::reap_dir(&dir);
                }
                continue;
            }
            Err(e) => return Err(io_error("cannot create a server directory in", base, e)),
        }
        let dir = fs::canonicalize(&dir).unwrap_or(dir);
        let setup =
            fs::write(dir.join(reap::OWNER_FILE), reap::owner_line()).and_then(|()| match run_as {
                Some(r) => std::os::unix::fs::chown(&dir, Some(r.uid), Some(r.gid)),
                None => Ok(()),
            });
        if let Err(e) = setup {
            let _ = fs::remove_dir_all(&dir);
            return Err(io_error("cannot prepare", &dir, e));
        }
        return Ok(dir);
    }
}

fn server_fixed_port(server: &TestServer) -> bool {
    server
        .local
        .as_ref()
        .is_some_and(|l| l.options.port.is_some())
}

fn free_port() -> Result<u16> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::TestDatabase {
            name: None,
            message: format!("cannot find a free port on 127.0.0.1: {e}"),
            source: Some(Box::new(e)),
        })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the state consistent (it is only ever replaced
    // whole), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn start_error(message: String) -> Error {
    Error::TestDatabase {
        name: None,
        message: format!("cannot start the test server: {message}"),
        source: None,
    }
}

fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::TestDatabase {
        name: None,
        message: format!("{what} {}: {e}", path.display()),
        source: Some(Box::new(e)),
    }
}

/// Puts `name` in a psql error about the maintenance database.
fn rename(e: Error, name: &str) -> Error {
    match e {
        Error::TestDatabase {
            message, source, ..
        } => Error::TestDatabase {
            name: Some(name.to_string()),
            message,
            source,
        },
        other => other,
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = lines[start..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding() {
        assert_eq!(percent_encode("a b@c:/%"), "a%20b%40c%3A%2F%25");
        assert_eq!(percent_encode("test_1"), "test_1");
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("", 2), "");
    }

    #[test]
    fn bad_options_name_the_field() {
        let o = TestServerOptions {
            max_connections: 0,
            ..TestServerOptions::default()
        };
        let e = validate_options(&o).unwrap_err();
        assert!(matches!(e, Error::Configuration { ref field, .. } if field == "max_connections"));
        let o = TestServerOptions::default().setting("x; rm", "1");
        let e = validate_options(&o).unwrap_err();
        assert!(e.to_string().contains("x; rm"), "{e}");
        let o = TestServerOptions::default().start_timeout(Duration::ZERO);
        assert!(validate_options(&o).is_err());
    }
}
