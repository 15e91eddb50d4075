//! The connection cap: 40 tests' worth of concurrent test databases and pools on a server with
//! `max_connections = 20` never hold more connections than the cap (watched from the server
//! side through `pg_stat_activity`) and none fails with "too many clients". On both backends.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pgdbm_core::{Database, Pool};
use pgdbm_testkit::{
    TestConfig, TestDatabase, TestServer, TestServerOptions, TEST_POOL_MAX_CONNECTIONS,
    TEST_POOL_MIN_CONNECTIONS,
};

const SERVER_MAX_CONNECTIONS: u32 = 20;
const TESTS: usize = 40;

/// What the watcher saw: the most pool sessions and the most client sessions at once.
#[derive(Debug, Default, Clone, Copy)]
struct Peak {
    pool: i64,
    total: i64,
    samples: u64,
}

/// One test's worth of work: its own database, a pool of the default size, two connections in
/// use at once (a transaction and a query beside it).
async fn one_test<P: Pool>(server: &'static TestServer, i: usize) -> pgdbm_core::Result<()> {
    let test_db = TestDatabase::create_with(server, TestConfig::default(), Some("cap")).await?;
    let db: Database<P> = test_db.manager(None).await?;
    db.execute("CREATE TABLE t (id int PRIMARY KEY, note text)", &[])
        .await?;
    let mut tx = db.transaction().await?;
    tx.execute("INSERT INTO t VALUES ($1, 'x')", &[&(i as i32)])
        .await?;
    // A second connection while the transaction holds the first.
    let outside: i64 = db
        .fetch_value("SELECT count(*) FROM t", &[])
        .await?
        .unwrap_or(-1);
    assert_eq!(outside, 0, "the insert is not committed yet");
    tx.commit().await?;
    let n: i64 = db
        .fetch_value("SELECT count(*) FROM t", &[])
        .await?
        .unwrap_or(-1);
    assert_eq!(n, 1);
    db.close().await;
    drop(db);
    test_db.drop_async().await
}

async fn cap_holds<P: Pool>() {
    let mut options = TestServerOptions::default();
    options.max_connections = SERVER_MAX_CONNECTIONS;
    let server: &'static TestServer = Box::leak(Box::new(TestServer::start_with(options).unwrap()));
    let cap = server.connection_cap().await.unwrap();
    if std::env::var_os(pgdbm_testkit::TEST_MAX_CONNECTIONS_ENV).is_none() {
        // 20 - 3 superuser-reserved - 4 admin - 2 spare.
        assert_eq!(cap, 11);
    }
    let probe = TestDatabase::create_with(server, TestConfig::default(), None)
        .await
        .unwrap();
    let config = probe.config(None);
    assert_eq!(
        (config.min_connections, config.max_connections),
        (TEST_POOL_MIN_CONNECTIONS, TEST_POOL_MAX_CONNECTIONS)
    );
    assert_eq!((config.min_connections, config.max_connections), (0, 2));
    probe.drop_async().await.unwrap();

    // The watcher: its own connection (one of the spare ones), polling until told to stop.
    let (watcher, conn) =
        tokio_postgres::connect(&server.connection_url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    let stop = Arc::new(AtomicBool::new(false));
    let watch = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut peak = Peak::default();
            while !stop.load(Ordering::SeqCst) {
                let row = watcher
                    .query_one(
                        "SELECT count(*) FILTER (WHERE application_name LIKE 'pgdbm-testkit-pool-%'), \
                         count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
                        &[],
                    )
                    .await
                    .unwrap();
                peak.pool = peak.pool.max(row.get(0));
                peak.total = peak.total.max(row.get(1));
                peak.samples += 1;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            peak
        })
    };

    let tasks: Vec<_> = (0..TESTS)
        .map(|i| tokio::spawn(one_test::<P>(server, i)))
        .collect();
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            failures.push(e.to_string());
        }
    }
    stop.store(true, Ordering::SeqCst);
    let peak = watch.await.unwrap();
    eprintln!("cap {cap}, peak {peak:?}");
    assert!(
        failures.is_empty(),
        "{} tests failed: {failures:#?}",
        failures.len()
    );
    assert!(
        !failures.iter().any(|f| f.contains("too many clients")),
        "{failures:?}"
    );
    assert!(peak.samples > 0);
    assert!(
        peak.pool <= cap as i64,
        "{} pool sessions at once, over the cap of {cap}: {peak:?}",
        peak.pool
    );
    assert!(peak.total <= i64::from(SERVER_MAX_CONNECTIONS), "{peak:?}");
    // The tests did run side by side (the cap was what held them back).
    assert!(peak.pool >= 4, "{peak:?}");
    // Every permit comes back once the pools are gone (polled: given back in the background).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.connections_available().await.unwrap() < cap {
        assert!(
            std::time::Instant::now() < deadline,
            "permits not given back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    server.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cap_holds_deadpool() {
    cap_holds::<pgdbm_deadpool::DeadpoolPool>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cap_holds_bb8() {
    cap_holds::<pgdbm_bb8::Bb8Pool>().await;
}

/// A pool larger than the whole cap is refused with an error naming the override.
#[tokio::test]
async fn a_pool_over_the_cap_is_refused() {
    let server = TestServer::shared().unwrap();
    let test_db = TestDatabase::create(None).await.unwrap();
    let mut config = test_db.config(None);
    config.max_connections = server.connection_cap().await.unwrap() + 1;
    let e = test_db
        .manager_with::<pgdbm_deadpool::DeadpoolPool>(config)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("PGDBM_TEST_MAX_CONNECTIONS"), "{e}");
    test_db.drop_async().await.unwrap();
}
