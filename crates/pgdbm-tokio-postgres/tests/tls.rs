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

    // Without the test CA (Mozilla roots) the chain is not trusted.
    config.ssl_root_cert = None;
    let e = PgConnection::connect(&config).await.unwrap_err();
    assert!(matches!(e, Error::Connection { .. }), "{e}");
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
