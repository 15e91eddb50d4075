//! TLS completeness against real servers, through both pool backends: SCRAM-SHA-256-PLUS
//! channel binding, `verify-ca` without a root certificate, `require_auth`, client
//! certificates, and the warning when `ssl_mode = prefer` ends in plaintext.
//!
//! Two private servers (they die with the test process):
//! - `tls`: TLS with a test CA (openssl CLI, [`TestCerts`]), client certificates trusted;
//!   pg_hba: `hostssl ... cert` for role `certuser`, `hostssl ... scram-sha-256` for everyone
//!   else, and no plain `host` line (a plaintext connection is refused by the server).
//! - `plain`: no TLS; pg_hba: `md5` for role `md5user` (an MD5-stored password), `password`
//!   (cleartext) for role `pwuser`, `scram-sha-256` for everyone else.

use std::sync::OnceLock;

use pgdbm::{ChannelBinding, Config, Database, Error, Pool, SslMode};
use pgdbm_integration_tests::{both_backends, Captured};
use pgdbm_testkit::{unique_database_name, TestCerts, TestServer, TestServerOptions};

struct Servers {
    tls: TestServer,
    plain: TestServer,
    certs: TestCerts,
}

fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let certs = TestCerts::generate("certuser").expect("generate test certificates");
        let tls = TestServer::start_with(
            TestServerOptions::default()
                .tls_files(certs.server_cert(), certs.server_key())
                .tls_ca_file(certs.ca_cert())
                .hba("hostssl all certuser 127.0.0.1/32 cert")
                .hba("hostssl all all 127.0.0.1/32 scram-sha-256"),
        )
        .expect("start the TLS server");
        tls.psql("postgres", "CREATE ROLE certuser LOGIN").unwrap();
        let plain = TestServer::start_with(
            TestServerOptions::default()
                .hba("host all md5user 127.0.0.1/32 md5")
                .hba("host all pwuser 127.0.0.1/32 password")
                .hba("host all all 127.0.0.1/32 scram-sha-256"),
        )
        .expect("start the plain server");
        let pw = plain.password().expect("a local server has a password");
        let pw = pw.replace('\'', "''");
        plain
            .psql(
                "postgres",
                &format!(
                    "SET password_encryption = 'md5'; \
                     CREATE ROLE md5user LOGIN PASSWORD '{pw}'; \
                     SET password_encryption = 'scram-sha-256'; \
                     CREATE ROLE pwuser LOGIN PASSWORD '{pw}'"
                ),
            )
            .unwrap();
        Servers { tls, plain, certs }
    })
}

/// The config of a fresh database on `server` (small pool, one connect attempt).
fn config_on(server: &TestServer, prefix: &str) -> Config {
    let name = unique_database_name(prefix).unwrap();
    server.create_database(&name).unwrap();
    let mut c = server.config(&name);
    c.min_connections = 1;
    c.max_connections = 2;
    c.retry_attempts = 1;
    c
}

/// The error of opening a pool on `config` and running a statement on it.
async fn connect_err<P: Pool>(config: Config) -> Error {
    match Database::<P>::connect(config).await {
        Err(e) => e,
        Ok(db) => {
            let e = db
                .fetch_value::<i32, _>("SELECT 1", &[])
                .await
                .expect_err("the connection should have been refused");
            db.close().await;
            e
        }
    }
}

/// Whether the server sees this pool's session as TLS (`pg_stat_ssl`).
async fn server_sees_tls<P: Pool>(db: &Database<P>) -> bool {
    db.fetch_value::<bool, _>(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
    .unwrap()
    .unwrap()
}

async fn channel_binding_require<P: Pool>() {
    let s = servers();

    // Over TLS with SCRAM: tokio-postgres gets the TLS channel binding data and authenticates
    // with SCRAM-SHA-256-PLUS (`require` fails on anything else: plain SCRAM, MD5, cleartext).
    let mut config = config_on(&s.tls, "tls_cb");
    config.ssl_mode = SslMode::Require;
    config.channel_binding = ChannelBinding::Require;
    let db = Database::<P>::connect(config.clone()).await.unwrap();
    assert!(server_sees_tls(&db).await);
    let n = db
        .fetch_value::<i64, _>("SELECT count(*) FROM pg_stat_ssl WHERE ssl", &[])
        .await
        .unwrap()
        .unwrap();
    assert!(n >= 1);
    db.close().await;

    // The server refuses plaintext on this pg_hba: the test really sees a TLS-only server.
    let mut plain = config.clone();
    plain.ssl_mode = SslMode::Disable;
    plain.channel_binding = ChannelBinding::Prefer;
    let e = connect_err::<P>(plain).await;
    assert!(e.to_string().contains("no encryption"), "{e}");

    // channel_binding = disable over the same TLS connection still works (plain SCRAM).
    let mut off = config.clone();
    off.channel_binding = ChannelBinding::Disable;
    let db = Database::<P>::connect(off).await.unwrap();
    assert!(server_sees_tls(&db).await);
    db.close().await;

    // Without TLS (the server has none): refused before any password is sent, with an error
    // that says why, and not retried.
    let mut config = config_on(&s.plain, "tls_cb_plain");
    config.ssl_mode = SslMode::Prefer;
    config.channel_binding = ChannelBinding::Require;
    config.retry_attempts = 3;
    config.retry_delay = std::time::Duration::from_secs(30);
    let e = connect_err::<P>(config.clone()).await;
    match &e {
        Error::Connection {
            attempts, message, ..
        } => {
            assert_eq!(*attempts, 1, "{e}");
            assert!(message.contains("channel_binding = require"), "{message}");
            assert!(message.contains("not encrypted"), "{message}");
        }
        other => panic!("{other}"),
    }

    // With TLS switched off in the config it is a configuration error.
    config.ssl_mode = SslMode::Disable;
    let e = connect_err::<P>(config).await;
    assert!(
        matches!(&e, Error::Configuration { field, .. } if field == "channel_binding"),
        "{e}"
    );
}

both_backends!(channel_binding_require_over_tls, channel_binding_require);

async fn verify_ca_without_root_cert<P: Pool>() {
    let s = servers();
    let mut config = config_on(&s.tls, "tls_verify");
    config.ssl_mode = SslMode::VerifyCa;
    config.ssl_root_cert = None;
    if Config::default_root_cert().is_some_and(|p| p.exists()) {
        eprintln!("SKIPPED the missing-root-cert part: ~/.postgresql/root.crt exists");
    } else {
        let e = connect_err::<P>(config.clone()).await;
        match &e {
            Error::Configuration { field, message } => {
                assert_eq!(field, "ssl_root_cert");
                assert!(message.contains("sslrootcert="), "{message}");
                assert!(message.contains("root.crt"), "{message}");
            }
            other => panic!("{other}"),
        }
    }
    // With the CA it connects (127.0.0.1 is not in the certificate: verify-ca does not care).
    config.ssl_root_cert = Some(s.certs.ca_cert());
    let db = Database::<P>::connect(config).await.unwrap();
    assert!(server_sees_tls(&db).await);
    db.close().await;
}

both_backends!(
    verify_ca_needs_a_root_certificate,
    verify_ca_without_root_cert
);

async fn require_auth_refuses<P: Pool>() {
    let s = servers();
    let base = config_on(&s.plain, "tls_reqauth");

    let as_user = |user: &str, require: Option<&str>| {
        let mut c = base.clone();
        c.user = user.to_string();
        c.require_auth = require.map(|r| r.parse().unwrap());
        c
    };

    // Without require_auth, cleartext and MD5 servers are answered (the roles work).
    for user in ["pwuser", "md5user"] {
        let db = Database::<P>::connect(as_user(user, None)).await.unwrap();
        let who = db
            .fetch_value::<String, _>("SELECT current_user::text", &[])
            .await
            .unwrap();
        assert_eq!(who.as_deref(), Some(user));
        db.close().await;
    }
    // require_auth lists the method: accepted.
    for (user, method) in [
        ("pwuser", "password"),
        ("md5user", "md5"),
        ("postgres", "scram-sha-256"),
    ] {
        let db = Database::<P>::connect(as_user(user, Some(method)))
            .await
            .unwrap_or_else(|e| panic!("{user} with require_auth={method}: {e}"));
        db.close().await;
    }
    // require_auth = scram-sha-256 refuses the cleartext and MD5 requests, clearly and without
    // retrying.
    for (user, method) in [("pwuser", "password"), ("md5user", "md5")] {
        for require in ["scram-sha-256", "!password,!md5"] {
            let mut c = as_user(user, Some(require));
            c.retry_attempts = 3;
            c.retry_delay = std::time::Duration::from_secs(30);
            let e = connect_err::<P>(c).await;
            match &e {
                Error::Connection {
                    attempts, message, ..
                } => {
                    assert_eq!(*attempts, 1, "{e}");
                    assert!(
                        message.contains(&format!("asked for {method} authentication")),
                        "{message}"
                    );
                    assert!(
                        message.contains(&format!("require_auth = {require}")),
                        "{message}"
                    );
                }
                other => panic!("{other}"),
            }
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(s.plain.password().unwrap()), "{shown}");
        }
    }
}

both_backends!(require_auth_refuses_cleartext_and_md5, require_auth_refuses);

async fn client_certificate<P: Pool>() {
    let s = servers();
    let mut config = config_on(&s.tls, "tls_cert");
    config.user = "certuser".to_string();
    config.password = None;
    config.host = "localhost".to_string();
    config.ssl_mode = SslMode::VerifyFull;
    config.ssl_root_cert = Some(s.certs.ca_cert());

    // Without a client certificate the server refuses (pg_hba `cert`).
    let e = connect_err::<P>(config.clone()).await;
    assert!(e.to_string().contains("certificate"), "{e}");

    config.ssl_cert = Some(s.certs.client_cert());
    config.ssl_key = Some(s.certs.client_key());
    let db = Database::<P>::connect(config.clone()).await.unwrap();
    let dn = db
        .fetch_value::<String, _>(
            "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(dn.as_deref(), Some("/CN=certuser"));
    let who = db
        .fetch_value::<String, _>("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(who.as_deref(), Some("certuser"));
    db.close().await;

    // Certificate authentication asks for no password: require_auth = scram-sha-256 refuses
    // it, `none` accepts it.
    config.require_auth = Some("scram-sha-256".parse().unwrap());
    let e = connect_err::<P>(config.clone()).await;
    assert!(
        e.to_string().contains("without any password exchange"),
        "{e}"
    );
    config.require_auth = Some("none".parse().unwrap());
    let db = Database::<P>::connect(config).await.unwrap();
    db.close().await;
}

both_backends!(client_certificate_authentication, client_certificate);

async fn prefer_plaintext_warns<P: Pool>(captured: &Captured) {
    let s = servers();
    captured.take();
    let mut config = config_on(&s.plain, "tls_prefer");
    config.ssl_mode = SslMode::Prefer;
    let db = Database::<P>::connect(config).await.unwrap();
    assert!(!server_sees_tls(&db).await);
    db.close().await;
    let out = captured.take();
    let line = out
        .lines()
        .find(|l| l.contains("declined TLS"))
        .unwrap_or_else(|| panic!("no warning in {out}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&format!("port={}", s.plain.port())), "{line}");

    // Over TLS, prefer logs no such warning.
    let mut config = config_on(&s.tls, "tls_prefer_tls");
    config.ssl_mode = SslMode::Prefer;
    let db = Database::<P>::connect(config).await.unwrap();
    assert!(server_sees_tls(&db).await);
    db.close().await;
    // (A late connect of the first pool may still log for the plain server.)
    let out = captured.take();
    let tls_port = format!("port={}", s.tls.port());
    assert!(
        !out.lines()
            .any(|l| l.contains("declined TLS") && l.contains(&tls_port)),
        "{out}"
    );
}

/// One current-thread runtime for both backends, so every task the pools spawn runs on this
/// thread and the thread's default subscriber sees their logs.
#[tokio::test]
async fn prefer_ending_in_plaintext_logs_a_warning() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    prefer_plaintext_warns::<pgdbm::DeadpoolPool>(&captured).await;
    prefer_plaintext_warns::<pgdbm::Bb8Pool>(&captured).await;
}
