//! [`TestServer`]: a throwaway PostgreSQL server for tests, or an existing one.

use std::fmt;
use std::fs;
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pgdbm_core::{percent_encode, Config, Error, Result, SslMode};

use crate::admin::{Admin, Op, Target};
use crate::config::TestConfig;
use crate::discover::find_pg_bin;
use crate::names::validate_database_name;
use crate::options::{validate_options, TestServerOptions};
use crate::process::{
    create_server_dir, ensure_base_dir, free_port, lock, start_error, Local, RunAs, Shutdown,
    StartFailure, SUPERUSER,
};
use crate::{reap, sys};

/// How many times a start is retried when another process took the chosen port.
const PORT_ATTEMPTS: u32 = 10;
/// The variable that allows a `TEST_DB_HOST` that is not a loopback address.
pub const TEST_DB_ALLOW_REMOTE_ENV: &str = "TEST_DB_ALLOW_REMOTE";

/// A PostgreSQL server for tests: either a throwaway one started from the local binaries, or an
/// existing one named by `TEST_DB_HOST` (see [`TestServer::shared`]).
///
/// A throwaway server runs in `<base>/<pid>-<n>/` (see [`TestServerOptions::base_dir`]) on a
/// free loopback port, with the superuser `postgres`, fsync off, and `max_connections` 300. TCP
/// connections need its password (SCRAM-SHA-256; generated per server, see
/// [`password`](Self::password)); only its private Unix socket directory (mode 0700) is
/// trusted, and the testkit's own admin connection uses it. When the tests run as root, `initdb` and `postgres` run as the
/// `postgres` system user. Dropping the value stops the server and deletes its directory; if
/// the test process is killed, the server dies with it (parent-death signal) and the directory
/// is reaped by the next start.
pub struct TestServer {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    local: Option<Local>,
    /// The admin thread, started on first use.
    admin: OnceLock<std::result::Result<Admin, String>>,
    /// Serialises starting the admin thread (the `OnceLock` cannot fail).
    admin_start: Mutex<()>,
    /// The connection cap of testkit-built pools, read from the server on first use.
    pub(crate) budget: tokio::sync::OnceCell<crate::budget::Budget>,
    /// Templates this process uses and their prepared clones.
    pub(crate) clones: crate::clones::Clones,
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
                } else {
                    // An existing server outlives test processes: drop what dead ones left.
                    match s.admin().and_then(|admin| admin.call(Op::Sweep)) {
                        Ok(dropped) => tracing::debug!(target: "pgdbm::testkit",
                            dropped = dropped.len(), "orphan sweep done"),
                        Err(e) => tracing::warn!(target: "pgdbm::testkit", error = %e,
                            "orphan sweep failed"),
                    }
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
        let server = Self::prepare(options)?;
        // From here on, dropping `server` deletes the directory.
        if let (Some(local), Some(password)) = (&server.local, &server.password) {
            local.init_db(password)?;
        }
        server.launch_on_free_port()
    }

    /// Starts a streaming standby of `primary` (a running throwaway server): its data
    /// directory is a `pg_basebackup -R` of the primary through the primary's private socket,
    /// replicating through the replication slot `slot` (created by the backup), with the
    /// primary's password. Used by [`TestCluster`](crate::TestCluster).
    pub(crate) fn start_standby(
        primary: &TestServer,
        slot: &str,
        options: TestServerOptions,
    ) -> Result<TestServer> {
        let socket_dir = primary.socket_dir().ok_or_else(|| Error::TestDatabase {
            name: None,
            message: "a standby needs a throwaway primary (TestServer::start), not an external \
                      server"
                .to_string(),
            source: None,
        })?;
        let mut server = Self::prepare(options)?;
        server.password = primary.password.clone();
        if let Some(local) = &server.local {
            local.base_backup(socket_dir, primary.port, slot)?;
        }
        server.launch_on_free_port()
    }

    /// The directory and the (not yet started) value of a throwaway server.
    fn prepare(options: TestServerOptions) -> Result<TestServer> {
        validate_options(&options)?;
        let bin_dir = find_pg_bin(options.pg_bin.as_deref())?;
        let run_as = RunAs::detect()?;
        let base = options
            .base_dir
            .clone()
            .unwrap_or_else(reap::default_base_dir);
        ensure_base_dir(&base, run_as)?;
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
        Ok(TestServer {
            host: "127.0.0.1".to_string(),
            port: 0,
            user: SUPERUSER.to_string(),
            password: Some(generate_password()?),
            local: Some(local),
            admin: OnceLock::new(),
            admin_start: Mutex::new(()),
            budget: tokio::sync::OnceCell::new(),
            clones: crate::clones::Clones::default(),
        })
    }

    /// Starts the prepared data directory on a free port (or the fixed one), retrying when
    /// another process takes the port first.
    fn launch_on_free_port(mut self) -> Result<TestServer> {
        let server = &mut self;
        let attempts = if server_fixed_port(server) {
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
                    return Ok(self);
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
    /// errors). Checks that the host and port accept TCP connections. A host that is not a
    /// loopback address (or a Unix socket directory) needs `TEST_DB_ALLOW_REMOTE=1`: the
    /// testkit creates and drops databases there.
    ///
    /// # Errors
    /// [`Error::TestDatabase`] when the server cannot be reached, naming host, port and the
    /// `TEST_DB_*` variables; [`Error::Configuration`] for a remote host without the opt-in.
    pub fn external(config: &TestConfig) -> Result<TestServer> {
        check_remote(
            &config.host,
            std::env::var(TEST_DB_ALLOW_REMOTE_ENV).ok().as_deref(),
        )?;
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
        Ok(TestServer {
            host: config.host.clone(),
            port: config.port,
            user: config.user.clone(),
            password: Some(config.password.clone()),
            local: None,
            admin: OnceLock::new(),
            admin_start: Mutex::new(()),
            budget: tokio::sync::OnceCell::new(),
            clones: crate::clones::Clones::default(),
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

    /// Password: generated for a throwaway server (it checks it on TCP). Never logged.
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

    /// `postgresql://user:password@host:port/database`, percent-encoded. It holds the
    /// password: print [`display_url`](Self::display_url) instead.
    pub fn connection_url(&self, database: &str) -> String {
        self.url(database, self.password.as_deref())
    }

    /// `postgresql://user@host:port/database` without the password, for messages and logs.
    pub fn display_url(&self, database: &str) -> String {
        self.url(database, None)
    }

    fn url(&self, database: &str, password: Option<&str>) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            percent_encode(&self.host)
        };
        let userinfo = match password {
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

    /// Runs `sql` (one or more statements) in `database` as the superuser and returns the rows
    /// of every statement the way `psql -A -t` prints them: one line per row, columns separated
    /// by `|`, NULL as an empty string, no final newline. It goes through the testkit's admin
    /// connection (tokio-postgres), not a `psql` process, and blocks the calling thread: async
    /// code should use [`query_async`](Self::query_async).
    ///
    /// # Errors
    /// [`Error::TestDatabase`] naming the database: an invalid database name, no connection,
    /// or the statement failing (with the server's message).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        validate_database_name(database)?;
        let rows = self.admin()?.call(Op::Query {
            database: database.to_string(),
            sql: sql.to_string(),
        })?;
        Ok(psql_text(&rows))
    }

    /// [`psql`](Self::psql) for async code: awaits the admin thread without blocking the
    /// runtime.
    ///
    /// # Errors
    /// As [`psql`](Self::psql).
    pub async fn query_async(&self, database: &str, sql: &str) -> Result<String> {
        validate_database_name(database)?;
        let rows = self
            .admin()?
            .call_async(Op::Query {
                database: database.to_string(),
                sql: sql.to_string(),
            })
            .await?;
        Ok(psql_text(&rows))
    }

    /// Creates the database `name` (a validated identifier) and marks it as the testkit's
    /// (`COMMENT ON DATABASE`, with this process's pid and start time), so that
    /// [`drop_database`](Self::drop_database) and the orphan sweep may drop it. Blocks the
    /// calling thread; async code should use
    /// [`create_database_async`](Self::create_database_async).
    ///
    /// # Errors
    /// [`Error::TestDatabase`] naming `name` when it is invalid or creation fails (for example
    /// because it exists).
    pub fn create_database(&self, name: &str) -> Result<()> {
        validate_database_name(name)?;
        self.admin()?
            .call(Op::Create {
                name: name.to_string(),
                template: None,
            })
            .map(drop)
    }

    /// [`create_database`](Self::create_database) without blocking the runtime.
    ///
    /// # Errors
    /// As [`create_database`](Self::create_database).
    pub async fn create_database_async(&self, name: &str) -> Result<()> {
        validate_database_name(name)?;
        self.admin()?
            .call_async(Op::Create {
                name: name.to_string(),
                template: None,
            })
            .await
            .map(drop)
    }

    /// Drops the database `name` if it exists, disconnecting its sessions first. Refuses a
    /// database the testkit did not create (no marker comment). Blocks the calling thread;
    /// async code should use [`drop_database_async`](Self::drop_database_async).
    ///
    /// # Errors
    /// [`Error::TestDatabase`] naming `name` when it is invalid, not marked, or the drop fails.
    pub fn drop_database(&self, name: &str) -> Result<()> {
        validate_database_name(name)?;
        self.admin()?
            .call(Op::Drop {
                name: name.to_string(),
            })
            .map(drop)
    }

    /// [`drop_database`](Self::drop_database) without blocking the runtime.
    ///
    /// # Errors
    /// As [`drop_database`](Self::drop_database).
    pub async fn drop_database_async(&self, name: &str) -> Result<()> {
        validate_database_name(name)?;
        self.admin()?
            .call_async(Op::Drop {
                name: name.to_string(),
            })
            .await
            .map(drop)
    }

    /// Drops the databases the testkit created for test processes that are gone (their
    /// marker names a pid that no longer runs; on a remote server, older than 6 hours) and
    /// returns their names. Several processes may sweep at once: an advisory lock serialises
    /// them.
    ///
    /// # Errors
    /// [`Error::TestDatabase`] when the server cannot be reached or the catalog not read.
    pub async fn sweep_orphans(&self) -> Result<Vec<String>> {
        let rows = self.admin()?.call_async(Op::Sweep).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect())
    }

    /// How the admin connections reach this server.
    pub(crate) fn target(&self) -> Target {
        Target {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            password: self.password.clone(),
            socket_dir: self.socket_dir().map(Path::to_path_buf),
            same_host: self.local.is_some() || is_loopback(&self.host),
        }
    }

    /// The admin thread, started on first use.
    pub(crate) fn admin(&self) -> Result<&Admin> {
        if self.admin.get().is_none() {
            let _guard = lock(&self.admin_start);
            if self.admin.get().is_none() {
                let _ = self
                    .admin
                    .set(Admin::start(self.target()).map_err(|e| e.to_string()));
            }
        }
        match self.admin.get() {
            Some(Ok(admin)) => Ok(admin),
            Some(Err(message)) => Err(Error::TestDatabase {
                name: None,
                message: message.clone(),
                source: None,
            }),
            None => Err(Error::TestDatabase {
                name: None,
                message: "the admin thread did not start".to_string(),
                source: None,
            }),
        }
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

fn server_fixed_port(server: &TestServer) -> bool {
    server
        .local
        .as_ref()
        .is_some_and(|l| l.options.port.is_some())
}

/// Rows the way `psql -A -t` prints them.
fn psql_text(rows: &[Vec<Option<String>>]) -> String {
    rows.iter()
        .map(|row| {
            row.iter()
                .map(|v| v.as_deref().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// 32 hex digits from the kernel's random source.
fn generate_password() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| start_error(format!("cannot read /dev/urandom for a password: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// True for `localhost`, a loopback address, or a Unix socket directory.
fn is_loopback(host: &str) -> bool {
    if host.starts_with('/') || host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// A remote `TEST_DB_HOST` needs `TEST_DB_ALLOW_REMOTE=1` (or true/yes/on).
fn check_remote(host: &str, allow: Option<&str>) -> Result<()> {
    let allowed = allow.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    });
    if is_loopback(host) || allowed {
        Ok(())
    } else {
        Err(Error::config(
            "TEST_DB_HOST",
            format!(
                "`{host}` is not a loopback address, and the testkit creates and drops \
                 databases on it; set {TEST_DB_ALLOW_REMOTE_ENV}=1 if that server is meant for \
                 tests"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psql_text_joins_like_psql() {
        let rows = vec![
            vec![Some("1".to_string()), None],
            vec![Some("2".to_string()), Some("b".to_string())],
        ];
        assert_eq!(psql_text(&rows), "1|\n2|b");
        assert_eq!(psql_text(&[]), "");
    }

    #[test]
    fn remote_hosts_need_the_opt_in() {
        for host in [
            "127.0.0.1",
            "localhost",
            "::1",
            "[::1]",
            "/var/run/postgresql",
        ] {
            assert!(check_remote(host, None).is_ok(), "{host}");
        }
        let e = check_remote("db.example.com", None).unwrap_err();
        assert!(e.to_string().contains("TEST_DB_ALLOW_REMOTE"), "{e}");
        assert!(check_remote("10.0.0.5", Some("0")).is_err());
        assert!(check_remote("10.0.0.5", Some("1")).is_ok());
    }

    #[test]
    fn passwords_are_random_hex() {
        let a = generate_password().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, generate_password().unwrap());
    }
}
