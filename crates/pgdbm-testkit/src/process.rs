//! The process lifecycle of a throwaway server: its directory, initdb, the postmaster and the
//! keeper thread that starts and stops it.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use pgdbm_core::{Error, Result};

use crate::options::TestServerOptions;
use crate::{reap, sys};

/// The superuser of a throwaway server.
pub(crate) const SUPERUSER: &str = "postgres";
/// The system user that runs initdb and postgres when the tests run as root.
const SYSTEM_USER: &str = "postgres";
/// Names of the TLS files inside the server directory ([`TestServerOptions::tls_files`]).
const TLS_CERT_FILE: &str = "server.crt";
const TLS_KEY_FILE: &str = "server.key";
const TLS_CA_FILE: &str = "client-ca.crt";

/// The parts of a throwaway server.
pub(crate) struct Local {
    pub(crate) bin_dir: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) log_path: PathBuf,
    pub(crate) run_as: Option<RunAs>,
    pub(crate) options: TestServerOptions,
    pub(crate) running: Mutex<Option<Running>>,
}

/// The uid/gid the server processes run as (when the tests run as root).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// A running postmaster and the keeper thread that started it and will stop it.
pub(crate) struct Running {
    pub(crate) pid: u32,
    pub(crate) stop: mpsc::Sender<Shutdown>,
    pub(crate) exited: Arc<AtomicBool>,
    pub(crate) keeper: JoinHandle<()>,
}

/// How to stop the server.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shutdown {
    /// SIGINT: roll back, checkpoint, exit (used by `stop`/`restart`, data kept).
    Fast,
    /// SIGQUIT: exit at once (used on drop, the data is deleted anyway).
    Immediate,
}

/// Why a start failed.
pub(crate) enum StartFailure {
    /// Someone else took the port between choosing it and the server binding it.
    PortTaken(String),
    /// Anything else.
    Other(Error),
}

impl Local {
    /// Runs initdb: superuser `postgres` with `password`, trusted only on the private Unix
    /// socket directory, SCRAM-SHA-256 on TCP.
    pub(crate) fn init_db(&self, password: &str) -> Result<()> {
        let local = self;
        let pwfile = local.dir.join("pwfile");
        fs::write(&pwfile, format!("{password}\n"))
            .and_then(|()| local.chown(&pwfile))
            .map_err(|e| io_error("cannot write the initdb password file", &pwfile, e))?;
        let mut cmd = local.command("initdb");
        cmd.arg("-D")
            .arg(&local.data_dir)
            .arg("-U")
            .arg(SUPERUSER)
            .arg(OsString::from(format!("--pwfile={}", pwfile.display())))
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
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
        if !local.options.hba.is_empty() {
            let hba = local.data_dir.join("pg_hba.conf");
            let mut text = String::from(
                "# Written by pgdbm-testkit (TestServerOptions::hba).\n\
                 local all all trust\nlocal replication all trust\n",
            );
            for line in &local.options.hba {
                text.push_str(line);
                text.push('\n');
            }
            fs::write(&hba, text).map_err(|e| io_error("cannot write", &hba, e))?;
        }
        if let Some((cert, key)) = &local.options.tls_files {
            // The server reads them as its own user and refuses a key others can read.
            let ca = local
                .options
                .tls_ca_file
                .as_ref()
                .map(|ca| (ca, TLS_CA_FILE));
            for (from, name) in [(cert, TLS_CERT_FILE), (key, TLS_KEY_FILE)]
                .into_iter()
                .chain(ca)
            {
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

    /// Fills the data directory with `pg_basebackup -R` of the server listening in
    /// `socket_dir` on `port` (trusted there), WAL streamed, creating the replication slot
    /// `slot` and naming it as the standby's `primary_slot_name`; a fast checkpoint, no fsync.
    pub(crate) fn base_backup(&self, socket_dir: &Path, port: u16, slot: &str) -> Result<()> {
        let mut cmd = self.command("pg_basebackup");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-h")
            .arg(socket_dir)
            .arg("-p")
            .arg(port.to_string())
            .args(["-U", SUPERUSER, "-X", "stream", "-R", "-C", "-S", slot])
            .args(["--checkpoint=fast", "--no-sync", "-w"])
            .stdin(Stdio::null());
        let out = cmd.output().map_err(|e| Error::TestDatabase {
            name: None,
            message: format!(
                "cannot run {}: {e}; it comes with the PostgreSQL binaries (Debian: the \
                 postgresql-client-<version> package, which the postgresql package installs)",
                self.bin_dir.join("pg_basebackup").display()
            ),
            source: Some(Box::new(e)),
        })?;
        if !out.status.success() {
            return Err(start_error(format!(
                "pg_basebackup of the primary on port {port} failed ({}):\n{}{}",
                out.status,
                tail(&String::from_utf8_lossy(&out.stdout), 10),
                tail(&String::from_utf8_lossy(&out.stderr), 20)
            )));
        }
        Ok(())
    }

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

    pub(crate) fn chown(&self, path: &Path) -> io::Result<()> {
        match self.run_as {
            Some(r) => std::os::unix::fs::chown(path, Some(r.uid), Some(r.gid)),
            None => Ok(()),
        }
    }

    /// Starts postgres on `port` from a new keeper thread and waits until it accepts
    /// connections.
    pub(crate) fn launch(&self, port: u16) -> std::result::Result<Running, StartFailure> {
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
            if self.options.tls_ca_file.is_some() {
                cmd.arg("-c").arg(format!(
                    "ssl_ca_file={}",
                    self.dir.join(TLS_CA_FILE).display()
                ));
            }
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

    /// The postmaster wrote `ready` (or `standby`) in its pid file and answers a startup message.
    fn is_ready(&self, pid: u32, port: u16) -> bool {
        let Ok(text) = fs::read_to_string(self.data_dir.join("postmaster.pid")) else {
            return false;
        };
        let lines: Vec<&str> = text.lines().collect();
        let pid_matches = lines.first().is_some_and(|l| l.trim() == pid.to_string());
        // `standby`: a hot standby that accepts read-only connections.
        let ready = lines
            .get(7)
            .is_some_and(|l| matches!(l.trim(), "ready" | "standby"));
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
    pub(crate) fn detect() -> Result<Option<RunAs>> {
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
pub(crate) fn lookup_user(name: &str) -> Option<RunAs> {
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
    pub(crate) fn shutdown(self, how: Shutdown) {
        let _ = self.stop.send(how);
        let _ = self.keeper.join();
    }
}

/// Spawns `cmd` from a new long-lived thread. The parent-death signal fires when the spawning
/// *thread* exits, so the thread stays until the server is stopped (or the process dies).
pub(crate) fn spawn_keeper(mut cmd: Command) -> io::Result<Running> {
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
pub(crate) fn stop_child(child: &mut Child, how: Shutdown) {
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
pub(crate) fn accepts_startup(port: u16) -> io::Result<bool> {
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
    if first[0] == b'E' {
        // Refused by pg_hba (a `hostssl`-only server, `TestServerOptions::hba`): the server is
        // up, unless the error is "the database system is starting up" (57P03).
        let mut len = [0u8; 4];
        stream.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len).saturating_sub(4).min(4096) as usize;
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body)?;
        return Ok(!body.windows(7).any(|w| w == b"C57P03\0"));
    }
    Ok(first[0] == b'R')
}

/// Creates `base` for this user's servers with mode 0700, owned by the user the servers run as
/// (the `postgres` system user when the tests run as root, so that it can reach its data).
pub(crate) fn ensure_base_dir(base: &Path, run_as: Option<RunAs>) -> Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(base)
    {
        Ok(()) => {}
        Err(e) => return Err(io_error("cannot create", base, e)),
    }
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(base).map_err(|e| io_error("cannot read", base, e))?;
    let owner = run_as.map_or_else(sys::geteuid, |r| r.uid);
    if meta.uid() != owner {
        if sys::geteuid() == 0 {
            if let Some(r) = run_as {
                std::os::unix::fs::chown(base, Some(r.uid), Some(r.gid))
                    .map_err(|e| io_error("cannot chown", base, e))?;
            }
        } else {
            return Err(Error::TestDatabase {
                name: None,
                message: format!(
                    "the test server base directory {} belongs to another user (uid {}); \
                     remove it or choose another with TestServerOptions::base_dir",
                    base.display(),
                    meta.uid()
                ),
                source: None,
            });
        }
    }
    if meta.permissions().mode() & 0o7777 != 0o700 {
        fs::set_permissions(base, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_error("cannot restrict to mode 0700", base, e))?;
    }
    Ok(())
}

/// Creates `<base>/<pid>-<n>` with the owner file, owned by the server's user.
pub(crate) fn create_server_dir(base: &Path, run_as: Option<RunAs>) -> Result<PathBuf> {
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

pub(crate) fn free_port() -> Result<u16> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::TestDatabase {
            name: None,
            message: format!("cannot find a free port on 127.0.0.1: {e}"),
            source: Some(Box::new(e)),
        })
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the state consistent (it is only ever replaced
    // whole), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn start_error(message: String) -> Error {
    Error::TestDatabase {
        name: None,
        message: format!("cannot start the test server: {message}"),
        source: None,
    }
}

pub(crate) fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::TestDatabase {
        name: None,
        message: format!("{what} {}: {e}", path.display()),
        source: Some(Box::new(e)),
    }
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
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
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("", 2), "");
    }
}
