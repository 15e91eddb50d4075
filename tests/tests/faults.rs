//! Faults: the server restarting under a live pool, for both backends.
//!
//! Each test owns a private server (the shared one must not restart under other tests).

use std::time::Duration;

use pgdbm::{Database, Error, Pool};
use pgdbm_integration_tests::{both_backends, hold_connections};
use pgdbm_testkit::TestServer;

async fn survives_server_restart<P: Pool>() {
    let server = TestServer::start().expect("private server");
    server.create_database("restart_db").unwrap();
    let mut config = server.config("restart_db");
    config.min_connections = 2;
    config.max_connections = 4;
    config.acquire_timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(2);
    config.retry_attempts = 1;
    let db = Database::<P>::connect(config).await.unwrap();
    db.execute("CREATE TABLE t (v INT)", &[]).await.unwrap();
    db.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    // Warm several pooled connections.
    let held: Vec<_> = hold_connections(&db, 3).await.unwrap();
    drop(held);

    // Down: queries fail with an error (no panic, no hang).
    server.stop().unwrap();
    let down = tokio::time::timeout(
        Duration::from_secs(30),
        db.fetch_value::<i64, _>("SELECT count(*) FROM t", &[]),
    )
    .await
    .expect("a query against a stopped server must not hang");
    match down {
        Err(Error::Query(_) | Error::Pool { .. } | Error::Connection { .. }) => {}
        other => panic!("expected an error while the server is down, got {other:?}"),
    }

    // Back up on the same port: the pool recovers on its own.
    server.start_again().unwrap();
    let mut recovered = None;
    for _ in 0..50 {
        match db
            .fetch_value::<i64, _>("SELECT count(*) FROM t", &[])
            .await
        {
            Ok(v) => {
                recovered = v;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(
        recovered,
        Some(1),
        "the pool did not recover after the restart"
    );
    // And after the first success, every query succeeds: no dead connection is handed out.
    for i in 0..10i32 {
        let v: Option<i32> = db.fetch_value("SELECT $1::int", &[&i]).await.unwrap();
        assert_eq!(v, Some(i));
    }
    db.close().await;
}

both_backends!(server_restart, survives_server_restart);
