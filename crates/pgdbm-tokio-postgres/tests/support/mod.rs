//! The test server of these tests: pgdbm-testkit's throwaway PostgreSQL, with password
//! (SCRAM) authentication on TCP so a wrong password can be tested, and TLS with a test CA.
//!
//! One private server per test binary; it dies with the process (testkit's parent-death
//! signal) and its directory is reaped by the next start.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use pgdbm_core::{Config, Connection, SslMode};
use pgdbm_testkit::{TestServer, TestServerOptions};
use pgdbm_tokio_postgres::PgConnection;

pub(crate) struct Server {
    pub(crate) server: TestServer,
    pub(crate) port: u16,
    /// The Unix-socket directory.
    pub(crate) dir: PathBuf,
    ca_cert: PathBuf,
}

static SERVER: OnceLock<Server> = OnceLock::new();

pub(crate) fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        let certs =
            std::env::temp_dir().join(format!("pgdbm-adapter-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&certs);
        std::fs::create_dir_all(&certs).unwrap();
        make_certs(&certs);
        let server = TestServer::start_with(
            TestServerOptions::default()
                .password_auth(true)
                .tls_files(certs.join("server.crt"), certs.join("server.key")),
        )
        .expect("start the test server");
        // Keep the CA next to the server (deleted with it) and drop the rest of the certs.
        let ca_cert = server.dir().expect("a local server").join("test-ca.crt");
        std::fs::copy(certs.join("ca.crt"), &ca_cert).unwrap();
        std::fs::remove_dir_all(&certs).unwrap();
        let dir = server.socket_dir().expect("a local server").to_path_buf();
        Server {
            port: server.port(),
            dir,
            ca_cert,
            server,
        }
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
}

/// The CA certificate that signed the server's certificate.
pub(crate) fn ca_cert() -> PathBuf {
    server().ca_cert.clone()
}

pub(crate) fn config(database: &str) -> Config {
    let mut c = server().server.config(database);
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
