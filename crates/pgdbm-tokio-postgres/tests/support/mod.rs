//! The test server of these tests: pgdbm-testkit's throwaway PostgreSQL, with password
//! (SCRAM) authentication on TCP so a wrong password can be tested, and TLS with a test CA.
//!
//! One private server per test binary; it dies with the process (testkit's parent-death
//! signal) and its directory is reaped by the next start.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use pgdbm_core::{Config, Connection, SslMode};
use pgdbm_testkit::{TestCerts, TestServer, TestServerOptions};
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
        let certs = TestCerts::generate("postgres").expect("generate test certificates");
        let server = TestServer::start_with(
            TestServerOptions::default()
                .password_auth(true)
                .tls_files(certs.server_cert(), certs.server_key()),
        )
        .expect("start the test server");
        // Keep the CA next to the server (deleted with it); the rest goes with `certs`.
        let ca_cert = server.dir().expect("a local server").join("test-ca.crt");
        std::fs::copy(certs.ca_cert(), &ca_cert).unwrap();
        let dir = server.socket_dir().expect("a local server").to_path_buf();
        Server {
            port: server.port(),
            dir,
            ca_cert,
            server,
        }
    })
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
