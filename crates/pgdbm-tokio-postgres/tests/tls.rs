#![allow(clippy::unwrap_used, clippy::expect_used)]
//! TLS modes against the local server (its certificate is signed by a test CA and names only
//! `localhost`).

mod support;

use pgdbm_core::{Connection, Error, Row, SslMode};
use pgdbm_tokio_postgres::PgConnection;

async fn uses_ssl(c: &mut PgConnection) -> bool {
    c.query_opt(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
        None,
    )
    .await
    .unwrap()
    .unwrap()
    .get_at::<bool>(0)
    .unwrap()
}

#[tokio::test]
async fn require_prefer_and_disable() {
    for (mode, expect) in [
        (SslMode::Require, true),
        (SslMode::Prefer, true),
        (SslMode::Disable, false),
    ] {
        let mut config = support::config("postgres");
        config.ssl_mode = mode;
        let mut c = PgConnection::connect(&config).await.unwrap();
        assert_eq!(uses_ssl(&mut c).await, expect, "{mode:?}");
    }
}

#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_host() {
    let mut config = support::config("postgres");
    config.ssl_mode = SslMode::VerifyCa;
    config.ssl_root_cert = Some(support::ca_cert());
    // Connecting to 127.0.0.1: the certificate only names localhost, verify-ca accepts it.
    let mut c = PgConnection::connect(&config).await.unwrap();
    assert!(uses_ssl(&mut c).await);

    // Without any root certificate (and no ~/.postgresql/root.crt) verify-ca is a
    // configuration error, as in libpq, and nothing is retried.
    config.ssl_root_cert = None;
    config.retry_attempts = 5;
    config.retry_delay = std::time::Duration::from_secs(5);
    if !pgdbm_core::Config::default_root_cert().is_some_and(|p| p.exists()) {
        let e = PgConnection::connect(&config).await.unwrap_err();
        match &e {
            Error::Configuration { field, message } => {
                assert_eq!(field, "ssl_root_cert");
                assert!(message.contains("sslrootcert="), "{message}");
            }
            other => panic!("{other}"),
        }
    }

    // With the bundled public roots (`sslrootcert=system`, verify-full only) the test CA's chain
    // is not trusted.
    config.retry_attempts = 1;
    config.ssl_root_cert = Some(pgdbm_core::SYSTEM_ROOT_CERT.into());
    let e = PgConnection::connect(&config).await.unwrap_err();
    assert!(
        matches!(&e, Error::Configuration { field, .. } if field == "ssl_root_cert"),
        "{e}"
    );
    config.ssl_mode = SslMode::VerifyFull;
    config.host = "localhost".to_string();
    let e = PgConnection::connect(&config).await.unwrap_err();
    assert!(matches!(e, Error::Connection { .. }), "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");
}

#[tokio::test]
async fn verify_full_checks_the_host_name() {
    let mut config = support::config("postgres");
    config.ssl_mode = SslMode::VerifyFull;
    config.ssl_root_cert = Some(support::ca_cert());
    let e = PgConnection::connect(&config).await.unwrap_err();
    assert!(matches!(e, Error::Connection { .. }), "{e}");

    config.host = "localhost".to_string();
    let mut c = PgConnection::connect(&config).await.unwrap();
    assert!(uses_ssl(&mut c).await);
    // A timed-out statement is cancelled through TLS too.
    let e = c
        .query(
            "SELECT pg_sleep(30)",
            &[],
            Some(std::time::Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(!c.is_broken());
}

#[tokio::test]
async fn unreadable_ca_file_is_a_configuration_error_not_retried() {
    let mut config = support::config("postgres");
    config.ssl_mode = SslMode::VerifyFull;
    config.ssl_root_cert = Some("/nonexistent/ca.crt".into());
    config.retry_attempts = 5;
    config.retry_delay = std::time::Duration::from_secs(5);
    let e = PgConnection::connect(&config).await.unwrap_err();
    assert!(
        matches!(&e, Error::Configuration { field, .. } if field == "ssl_root_cert"),
        "{e}"
    );
}

#[tokio::test]
async fn execute_many_over_tls_batches_fails_atomically_and_cancels() {
    let mut config = support::database("em_tls").await;
    config.ssl_mode = SslMode::Require;
    let mut c = PgConnection::connect(&config).await.unwrap();
    assert!(uses_ssl(&mut c).await);
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)", None)
        .await
        .unwrap();
    let ids: Vec<i32> = (0..10_000).map(|i| if i == 7000 { 3 } else { i }).collect();
    let rows: Vec<[&(dyn postgres_types::ToSql + Sync); 1]> =
        ids.iter().map(|i| [i as _]).collect();
    let refs: Vec<&[&(dyn postgres_types::ToSql + Sync)]> = rows.iter().map(|r| &r[..]).collect();
    let e = c
        .execute_many("INSERT INTO t VALUES ($1)", &refs, None)
        .await
        .unwrap_err();
    assert_eq!(e.as_query().unwrap().row, Some(7000), "{e}");
    let n = c
        .execute_many("INSERT INTO t VALUES ($1)", &refs[..7000], None)
        .await
        .unwrap();
    assert_eq!(n, 7000);

    // A timeout in the middle of a batch is cancelled over a fresh TLS stream.
    let sleeps: Vec<&[&(dyn postgres_types::ToSql + Sync)]> =
        (0..400).map(|_| &[] as &[_]).collect();
    let e = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        c.execute_many(
            "SELECT pg_sleep(0.01)",
            &sleeps,
            Some(std::time::Duration::from_millis(300)),
        ),
    )
    .await
    .expect("hung")
    .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(!c.is_broken());
    c.reset(std::time::Duration::from_secs(5)).await.unwrap();
    let r = c
        .query_opt("SELECT count(*) FROM t", &[], None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.get_at::<i64>(0).unwrap(), 7000);
}

#[tokio::test]
async fn channel_binding_require_over_tls_and_refused_on_a_unix_socket() {
    let mut config = support::config("postgres");
    config.ssl_mode = SslMode::Require;
    config.channel_binding = pgdbm_core::ChannelBinding::Require;
    let mut c = PgConnection::connect(&config).await.unwrap();
    assert!(uses_ssl(&mut c).await);
    // Cancelling a timed-out statement still works over the TLS stream.
    let e = c
        .query(
            "SELECT pg_sleep(30)",
            &[],
            Some(std::time::Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(!c.is_broken());

    // The Unix socket is trusted (no password exchange) and never TLS: channel binding is
    // impossible, and that is said before anything is sent; no retry.
    config.host = support::server().dir.to_string_lossy().into_owned();
    config.retry_attempts = 3;
    config.retry_delay = std::time::Duration::from_secs(30);
    let e = PgConnection::connect(&config).await.unwrap_err();
    match &e {
        Error::Connection {
            attempts, message, ..
        } => {
            assert_eq!(*attempts, 1, "{e}");
            assert!(message.contains("channel_binding = require"), "{message}");
        }
        other => panic!("{other}"),
    }
}
