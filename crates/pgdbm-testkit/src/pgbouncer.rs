//! [`TestPgBouncer`]: a throwaway PgBouncer in front of a throwaway [`TestServer`].

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use pgdbm_core::{Config, Error, Result};

use crate::process::{
    accepts_startup, free_port, io_error, lock, spawn_keeper, tail, RunAs, Running, Shutdown,
};
use crate::{sys, TestServer};

/// Environment variable naming the `pgbouncer` binary (default: `pgbouncer` on the `PATH`,
/// then `/usr/sbin/pgbouncer`, where Debian's package puts it).
pub const PGBOUNCER_ENV: &str = "PGDBM_PGBOUNCER";

/// How PgBouncer hands server connections to clients (its `pool_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection per client session (`pool_mode = session`).
    Session,
    /// A server connection per transaction (`pool_mode = transaction`): session state and
    /// named prepared statements do not survive from one transaction to the next.
    Transaction,
    /// A server connection per statement (`pool_mode = statement`): multi-statement
    /// transactions are refused.
    Statement,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// Options for [`TestPgBouncer::start_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TestPgBouncerOptions {
    /// `pool_mode` (default [`PoolMode::Transaction`]).
    pub pool_mode: PoolMode,
    /// `default_pool_size`: server connections per database/user pair (default 4).
    pub default_pool_size: u32,
    /// `max_client_conn` (default 1000).
    pub max_client_conn: u32,
    /// `ignore_startup_parameters` (default `extra_float_digits,options`). PgBouncer 1.18
    /// refuses a client whose startup packet carries a parameter it does not track; pgdbm
    /// sends its server settings in `options` unless the config's statement mode is
    /// `Unnamed`, so the default lets both modes connect (the settings are then dropped).
    pub ignore_startup_parameters: String,
    /// How long to wait for PgBouncer to accept connections (default 30 s).
    pub start_timeout: Duration,
    /// Extra `[pgbouncer]` settings, `name = value` lines (they come after the defaults).
    pub settings: Vec<(String, String)>,
}

impl Default for TestPgBouncerOptions {
    fn default() -> Self {
        TestPgBouncerOptions {
            pool_mode: PoolMode::Transaction,
            default_pool_size: 4,
            max_client_conn: 1000,
            ignore_startup_parameters: "extra_float_digits,options".to_string(),
            start_timeout: Duration::from_secs(30),
            settings: Vec::new(),
        }
    }
}

impl TestPgBouncerOptions {
    /// Sets `pool_mode`.
    pub fn pool_mode(mut self, mode: PoolMode) -> Self {
        self.pool_mode = mode;
        self
    }

    /// Sets `default_pool_size`.
    pub fn default_pool_size(mut self, n: u32) -> Self {
        self.default_pool_size = n;
        self
    }

    /// Adds a `[pgbouncer]` setting.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }
}

/// A throwaway PgBouncer on a free loopback port in front of a throwaway [`TestServer`]
/// (every database of the server, `* = host=127.0.0.1 port=<server port>`).
///
/// Clients authenticate with SCRAM-SHA-256 as the server's superuser with the server's
/// password (`auth_file` in the PgBouncer directory, mode 0600); PgBouncer logs in to the
/// server with the same credentials. `admin_users` is that user, so the admin console
/// (database `pgbouncer`, [`show`](Self::show)) works too. It runs in
/// `<server dir>/pgbouncer-<n>/` (config, auth file, log), as the `postgres` system user when the
/// tests run as root, and dies with the test process like the server (parent-death signal).
/// Dropping the value stops it.
///
/// ```no_run
/// use pgdbm_testkit::{TestPgBouncer, TestPgBouncerOptions, TestServer};
///
/// # fn main() -> pgdbm_core::Result<()> {
/// let server = TestServer::start()?;
/// server.create_database("app")?;
/// let bouncer = TestPgBouncer::start_with(&server, TestPgBouncerOptions::default().default_pool_size(2))?;
/// let config = bouncer.config("app"); // goes through PgBouncer
/// # let _ = config;
/// # Ok(())
/// # }
/// ```
pub struct TestPgBouncer {
    port: u16,
    host: String,
    user: String,
    password: Option<String>,
    dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    binary: PathBuf,
    run_as: Option<RunAs>,
    options: TestPgBouncerOptions,
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for TestPgBouncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPgBouncer")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .field("pool_mode", &self.options.pool_mode)
            .field("default_pool_size", &self.options.default_pool_size)
            .finish_non_exhaustive()
    }
}

/// The `pgbouncer` binary: [`PGBOUNCER_ENV`], the `PATH`, then `/usr/sbin/pgbouncer`.
pub fn find_pgbouncer() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(PGBOUNCER_ENV) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("pgbouncer");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let debian = PathBuf::from("/usr/sbin/pgbouncer");
    debian.is_file().then_some(debian)
}

fn bouncer_error(message: impl Into<String>) -> Error {
    Error::TestDatabase {
        name: None,
        message: message.into(),
        source: None,
    }
}

/// A value for pgbouncer.ini / the auth file: the characters that would end it are refused.
fn checked(what: &str, value: &str) -> Result<()> {
    if value.contains(['"', '\n', '\r']) {
        return Err(bouncer_error(format!(
            "the {what} holds a double quote or a line break, which PgBouncer's files cannot carry"
        )));
    }
    Ok(())
}

impl TestPgBouncer {
    /// Starts PgBouncer in front of `server` with default options (transaction mode,
    /// `default_pool_size` 4).
    ///
    /// # Errors
    /// As [`start_with`](Self::start_with).
    pub fn start(server: &TestServer) -> Result<TestPgBouncer> {
        Self::start_with(server, TestPgBouncerOptions::default())
    }

    /// Starts PgBouncer in front of `server` and waits until it answers a startup message.
    ///
    /// # Errors
    /// [`Error::TestDatabase`] when `server` is not a throwaway server, `pgbouncer` is not
    /// installed (run `scripts/setup`, or set `PGDBM_PGBOUNCER`), or it does not start within
    /// `start_timeout` (with the tail of its log).
    pub fn start_with(server: &TestServer, options: TestPgBouncerOptions) -> Result<TestPgBouncer> {
        let server_dir = server.dir().ok_or_else(|| {
            bouncer_error("TestPgBouncer needs a throwaway TestServer (TEST_DB_HOST is set)")
        })?;
        let binary = find_pgbouncer().ok_or_else(|| {
            bouncer_error(format!(
                "pgbouncer is not installed: run scripts/setup (it installs Debian's pgbouncer \
                 package) or set {PGBOUNCER_ENV} to the binary"
            ))
        })?;
        let run_as = RunAs::detect()?;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = server_dir.join(format!(
            "pgbouncer-{}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_error("cannot create", &dir, e))?;
        let chown = |p: &Path| -> Result<()> {
            if let Some(r) = run_as {
                std::os::unix::fs::chown(p, Some(r.uid), Some(r.gid))
                    .map_err(|e| io_error("cannot hand over", p, e))?;
            }
            Ok(())
        };
        chown(&dir)?;
        let user = server.user().to_string();
        let password = server.password().map(str::to_string);
        checked("user name", &user)?;
        let auth_path = dir.join("userlist.txt");
        let secret = password.clone().unwrap_or_default();
        checked("password", &secret)?;
        {
            use std::io::Write;
            let mut f = fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&auth_path)
                .map_err(|e| io_error("cannot write", &auth_path, e))?;
            writeln!(f, "\"{user}\" \"{secret}\"")
                .map_err(|e| io_error("cannot write", &auth_path, e))?;
        }
        chown(&auth_path)?;
        let log_path = dir.join("pgbouncer.log");
        let config_path = dir.join("pgbouncer.ini");
        let mut bouncer = TestPgBouncer {
            port: 0,
            host: "127.0.0.1".to_string(),
            user,
            password,
            dir,
            config_path,
            log_path,
            binary,
            run_as,
            options,
            running: Mutex::new(None),
        };
        let mut last = String::new();
        for _ in 0..5 {
            bouncer.port = free_port()?;
            bouncer.write_config(server.port(), &auth_path)?;
            match bouncer.launch() {
                Ok(running) => {
                    *lock(&bouncer.running) = Some(running);
                    return Ok(bouncer);
                }
                Err((taken, message)) if taken => last = message,
                Err((_, message)) => return Err(bouncer_error(message)),
            }
        }
        Err(bouncer_error(format!(
            "pgbouncer found no free port after 5 attempts: {last}"
        )))
    }

    fn write_config(&self, server_port: u16, auth_path: &Path) -> Result<()> {
        let o = &self.options;
        let mut ini = format!(
            "[databases]\n\
             * = host=127.0.0.1 port={server_port}\n\
             \n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = scram-sha-256\n\
             auth_file = {auth}\n\
             admin_users = {user}\n\
             pool_mode = {mode}\n\
             default_pool_size = {size}\n\
             min_pool_size = 0\n\
             reserve_pool_size = 0\n\
             max_client_conn = {max_client}\n\
             ignore_startup_parameters = {ignore}\n\
             logfile = {log}\n\
             log_connections = 0\n\
             log_disconnections = 0\n\
             server_login_retry = 1\n",
            port = self.port,
            auth = auth_path.display(),
            user = self.user,
            mode = o.pool_mode.as_str(),
            size = o.default_pool_size,
            max_client = o.max_client_conn,
            ignore = o.ignore_startup_parameters,
            log = self.log_path.display(),
        );
        for (name, value) in &o.settings {
            checked("setting", name)?;
            checked("setting", value)?;
            ini.push_str(&format!("{name} = {value}\n"));
        }
        fs::write(&self.config_path, ini)
            .map_err(|e| io_error("cannot write", &self.config_path, e))?;
        if let Some(r) = self.run_as {
            std::os::unix::fs::chown(&self.config_path, Some(r.uid), Some(r.gid))
                .map_err(|e| io_error("cannot hand over", &self.config_path, e))?;
        }
        fs::set_permissions(&self.config_path, fs::Permissions::from_mode(0o600))
            .map_err(|e| io_error("cannot restrict", &self.config_path, e))?;
        Ok(())
    }

    fn log_len(&self) -> u64 {
        fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0)
    }

    fn log_since(&self, offset: u64) -> String {
        let text = fs::read(&self.log_path).unwrap_or_default();
        let start = usize::try_from(offset).unwrap_or(0).min(text.len());
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// Starts the process and polls until it answers a startup message. `Err((port taken,
    /// message))`.
    fn launch(&self) -> std::result::Result<Running, (bool, String)> {
        let log_start = self.log_len();
        let mut cmd = Command::new(&self.binary);
        cmd.arg(&self.config_path)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(r) = self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(r.uid).gid(r.gid);
        }
        // SIGKILL: PgBouncer has no children and nothing to flush.
        sys::die_with_parent(&mut cmd, sys::SIGKILL);
        let running = spawn_keeper(cmd).map_err(|e| {
            (
                false,
                format!("cannot start {}: {e}", self.binary.display()),
            )
        })?;
        let deadline = Instant::now() + self.options.start_timeout;
        loop {
            if running.exited.load(Ordering::SeqCst) {
                let log = self.log_since(log_start);
                running.shutdown(Shutdown::Immediate);
                let taken = log.contains("Address already in use");
                return Err((
                    taken,
                    format!(
                        "pgbouncer exited during start; its log ({}):\n{}",
                        self.log_path.display(),
                        tail(&log, 20)
                    ),
                ));
            }
            if accepts_startup(self.port).unwrap_or(false) {
                return Ok(running);
            }
            if Instant::now() >= deadline {
                running.shutdown(Shutdown::Immediate);
                return Err((
                    false,
                    format!(
                        "pgbouncer did not accept connections on 127.0.0.1:{} within {:?}; its log \
                         ({}):\n{}",
                        self.port,
                        self.options.start_timeout,
                        self.log_path.display(),
                        tail(&self.log_since(log_start), 20)
                    ),
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Host clients connect to (`127.0.0.1`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// PgBouncer's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory with `pgbouncer.ini`, the auth file and the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// PgBouncer's log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The options it was started with.
    pub fn options(&self) -> &TestPgBouncerOptions {
        &self.options
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.running).as_ref().map(|r| r.pid)
    }

    /// True while the process runs.
    pub fn is_running(&self) -> bool {
        lock(&self.running)
            .as_ref()
            .is_some_and(|r| !r.exited.load(Ordering::SeqCst))
    }

    /// A pgdbm [`Config`] for `database` through PgBouncer (the server's user and password,
    /// TLS disabled).
    pub fn config(&self, database: &str) -> Config {
        let mut config = Config::default();
        config.host = self.host.clone();
        config.port = self.port;
        config.user = self.user.clone();
        config.password = self.password.clone();
        config.database = database.to_string();
        config.ssl_mode = pgdbm_core::SslMode::Disable;
        config
    }

    /// Stops PgBouncer (client and server connections are closed at once).
    ///
    /// # Errors
    /// None so far; the signature leaves room for one.
    pub fn stop(&self) -> Result<()> {
        if let Some(running) = lock(&self.running).take() {
            running.shutdown(Shutdown::Immediate);
        }
        Ok(())
    }

    /// Starts it again on the same port (after [`stop`](Self::stop)); a no-op while it runs.
    ///
    /// # Errors
    /// [`Error::TestDatabase`] when it does not start (with the tail of its log).
    pub fn start_again(&self) -> Result<()> {
        let mut running = lock(&self.running);
        if running
            .as_ref()
            .is_some_and(|r| !r.exited.load(Ordering::SeqCst))
        {
            return Ok(());
        }
        if let Some(old) = running.take() {
            old.shutdown(Shutdown::Immediate);
        }
        *running = Some(self.launch().map_err(|(_, m)| bouncer_error(m))?);
        Ok(())
    }

    /// [`stop`](Self::stop) then [`start_again`](Self::start_again).
    ///
    /// # Errors
    /// As [`start_again`](Self::start_again).
    pub fn restart(&self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// Runs `SHOW <what>` (e.g. `POOLS`, `STATS`, `SERVERS`) on PgBouncer's admin console and
    /// returns its rows as (column, value) pairs; NULL is an empty string.
    ///
    /// # Errors
    /// [`Error::TestDatabase`] when the console cannot be reached or refuses the command.
    pub async fn show(&self, what: &str) -> Result<Vec<Vec<(String, String)>>> {
        if !what.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bouncer_error(format!(
                "SHOW {what:?}: expected one word such as POOLS"
            )));
        }
        let mut pg = tokio_postgres::Config::new();
        pg.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname("pgbouncer")
            .connect_timeout(Duration::from_secs(5));
        if let Some(p) = &self.password {
            pg.password(p);
        }
        let console = |e: tokio_postgres::Error| Error::TestDatabase {
            name: None,
            message: format!("PgBouncer admin console on port {}: {e}", self.port),
            source: Some(Box::new(e)),
        };
        let (client, connection) = pg.connect(tokio_postgres::NoTls).await.map_err(console)?;
        let task = tokio::spawn(connection);
        let result = client.simple_query(&format!("SHOW {what}")).await;
        drop(client);
        let _ = task.await;
        let mut rows = Vec::new();
        for msg in result.map_err(console)? {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = msg {
                let cols = row
                    .columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        (
                            c.name().to_string(),
                            row.get(i).unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                rows.push(cols);
            }
        }
        Ok(rows)
    }

    /// True when something accepts TCP connections on PgBouncer's port.
    pub fn accepts_tcp(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    }
}

impl Drop for TestPgBouncer {
    fn drop(&mut self) {
        if let Some(running) = lock(&self.running).take() {
            running.shutdown(Shutdown::Immediate);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_line_breaks_are_refused_in_files() {
        assert!(checked("password", "pa\"ss").is_err());
        assert!(checked("password", "a\nb").is_err());
        assert!(checked("password", "plain-Secret_1").is_ok());
    }

    #[test]
    fn pool_modes_are_pgbouncer_words() {
        assert_eq!(PoolMode::Transaction.as_str(), "transaction");
        assert_eq!(PoolMode::Session.as_str(), "session");
        assert_eq!(PoolMode::Statement.as_str(), "statement");
    }
}
