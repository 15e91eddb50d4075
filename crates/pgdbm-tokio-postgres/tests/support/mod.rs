//! A throwaway PostgreSQL 15 server for these tests, with password (scram-sha-256) auth so a
//! wrong password can be tested (the shared testkit server trusts every local connection).
//!
//! One server per test binary, in `/tmp/pgdbm-adapter-<pid>`; a watchdog shell stops it and
//! deletes its directory when the test process exits.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pgdbm_core::{Config, Connection, SslMode};
use pgdbm_tokio_postgres::PgConnection;

pub(crate) const PASSWORD: &str = "adapter-test-pw";

pub(crate) struct Server {
    pub(crate) port: u16,
    pub(crate) dir: PathBuf,
    pub(crate) bin: PathBuf,
}

static SERVER: OnceLock<Server> = OnceLock::new();

fn bin_dir() -> PathBuf {
    std::env::var("PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

fn as_postgres(bin: &Path, prog: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(bin.join(prog));
    c
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        let bin = bin_dir();
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/tmp/pgdbm-adapter-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, PASSWORD).unwrap();
        assert!(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap()
            .success());
        make_certs(&dir);
        let data = dir.join("data");
        let out = as_postgres(&bin, "initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "scram-sha-256",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-locale",
                "-N",
            ])
            .arg(format!("--pwfile={}", pw.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let script = format!(
            "runuser -u postgres -- {bin}/postgres -D {data} -k {dir} -p {port} \
             -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 \
             -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key \
             > {dir}/log 2>&1 & \
             while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             runuser -u postgres -- {bin}/pg_ctl -D {data} stop -m immediate >/dev/null 2>&1; \
             rm -rf {dir}",
            bin = bin.display(),
            data = data.display(),
            dir = dir.display(),
        );
        // The watchdog outlives this process on purpose (it cleans up after it), so it is
        // never waited for.
        #[allow(clippy::zombie_processes)]
        Command::new("sh").arg("-c").arg(script).spawn().unwrap();
        let started = Instant::now();
        loop {
            let ok = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Server { port, dir, bin }
    })
}

/// A CA and a server certificate it signed, valid for DNS name `localhost` only (not for the
/// IP 127.0.0.1, so verify-full to 127.0.0.1 fails while verify-ca passes).
fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=pgdbm test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    assert!(Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()
        .unwrap()
        .success());
    assert!(Command::new("chmod")
        .arg("600")
        .arg(dir.join("server.key"))
        .status()
        .unwrap()
        .success());
}

/// The CA certificate that signed the server's certificate.
pub(crate) fn ca_cert() -> PathBuf {
    server().dir.join("ca.crt")
}

pub(crate) fn config(database: &str) -> Config {
    let s = server();
    let mut c = Config::default();
    c.host = "127.0.0.1".to_string();
    c.port = s.port;
    c.database = database.to_string();
    c.user = "postgres".to_string();
    c.password = Some(PASSWORD.to_string());
    c.ssl_mode = SslMode::Disable;
    c.retry_attempts = 1;
    c.connect_timeout = Duration::from_secs(10);
    c
}

/// Creates a fresh database named `name` (dropping any leftover) and returns its config.
pub(crate) async fn database(name: &str) -> Config {
    let mut admin = PgConnection::connect(&config("postgres")).await.unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"), None)
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"), None)
        .await
        .unwrap();
    config(name)
}

/// A connection to a fresh database named `name`.
pub(crate) async fn connect(name: &str) -> PgConnection {
    PgConnection::connect(&database(name).await).await.unwrap()
}
