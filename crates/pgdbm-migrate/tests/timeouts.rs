//! Migration timeouts against a real PostgreSQL (the testkit's shared server), for both pool
//! backends from one generic test body: migration SQL runs without the application's
//! `statement_timeout` / `lock_timeout`, the migration lock wait ends with an error naming the
//! lock, and the migrator's own queries have a client-side deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::time::Duration;

use pgdbm_core::{Connection, Pool, Row};
use pgdbm_testkit::{FaultProxy, TestServer};

mod common;
use common::Env;

both_backends! {
    long_migration => long_migration_outlives_app_statement_timeout,
    own_statement_timeout => migrator_statement_timeout_applies,
    concurrent_index => create_index_concurrently_waits_past_app_lock_timeout,
    lock_wait => migration_lock_wait_fails_naming_the_lock,
    dead_connection => lock_queries_have_a_deadline,
}

/// A migration that runs longer than the application's 200 ms `statement_timeout` succeeds,
/// and the application's setting is unchanged on the pool's connections afterwards.
async fn long_migration_outlives_app_statement_timeout<P: Pool>() {
    let env = Env::<P>::with("mig_to_long_", |c| {
        c.statement_timeout = Some(Duration::from_millis(200));
    })
    .await;
    // Control: the application's timeout is in force on a pooled connection.
    {
        let mut c = env.pool.acquire().await.unwrap();
        let err = c
            .batch_execute("SELECT pg_sleep(0.5)", None)
            .await
            .unwrap_err();
        assert_eq!(err.sqlstate(), Some("57014"), "{err}");
    }
    env.write(
        "001_slow.sql",
        "SELECT pg_sleep(0.5);\nCREATE TABLE slow_done (id int);\n",
    );
    env.write(
        "002_slow_no_tx.sql",
        "-- pgdbm:no-transaction\nSELECT pg_sleep(0.5);\nCREATE TABLE slow_done_2 (id int);\n",
    );
    let report = env.migrator().apply_pending().await.expect("migrations");
    assert_eq!(report.applied.len(), 2, "{report:?}");
    assert_eq!(
        env.value("SELECT to_regclass('slow_done_2')::text").await,
        "slow_done_2"
    );
    // The migration session's settings did not reach the pool.
    for _ in 0..4 {
        assert_eq!(env.value("SHOW statement_timeout").await, "200ms");
    }
    env.finish().await;
}

/// `Migrator::statement_timeout` is applied to migration SQL (so the test above can fail).
async fn migrator_statement_timeout_applies<P: Pool>() {
    let env = Env::<P>::with("mig_to_own_", |_| {}).await;
    env.write("001_slow.sql", "SELECT pg_sleep(2);\n");
    let err = env
        .migrator()
        .statement_timeout(Some(Duration::from_millis(100)))
        .apply_pending()
        .await
        .expect_err("the migration must hit its statement_timeout");
    let text = err.to_string();
    assert!(text.contains("001_slow.sql"), "{text}");
    assert!(
        text.contains("statement timeout") || text.contains("57014"),
        "{text}"
    );
    // Without the limit it succeeds.
    env.write("001_slow.sql", "SELECT pg_sleep(0.2);\n");
    env.migrator().apply_pending().await.expect("migration");
    env.finish().await;
}

/// `CREATE INDEX CONCURRENTLY` waits for an older writing transaction; under the application's
/// 300 ms `lock_timeout` it would fail (leaving an INVALID index). The migration waits until
/// the writer commits, well past 300 ms, and the index is valid.
async fn create_index_concurrently_waits_past_app_lock_timeout<P: Pool>() {
    let env = Env::<P>::with("mig_to_cic_", |c| {
        c.lock_timeout = Some(Duration::from_millis(300));
    })
    .await;
    let mut setup = env.pool.acquire().await.unwrap();
    setup
        .batch_execute("CREATE TABLE items (v int)", None)
        .await
        .unwrap();
    drop(setup);
    env.write(
        "001_index.sql",
        "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY items_v ON items (v);\n",
    );
    // A writer whose transaction stays open: CIC waits for it.
    let mut writer = env.pool.acquire().await.unwrap();
    writer.begin().await.unwrap();
    writer
        .execute("INSERT INTO items VALUES (1)", &[], None)
        .await
        .unwrap();
    let migrator = env.migrator();
    let run = tokio::spawn(async move { migrator.apply_pending().await });
    // Poll the server until the index build has been waiting on a lock for twice the
    // application's lock_timeout.
    let mut probe = env.pool.acquire().await.unwrap();
    let mut waited = false;
    for _ in 0..600 {
        let row = probe
            .query_opt(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' \
                 AND query ILIKE '%CREATE INDEX CONCURRENTLY items_v%' \
                 AND clock_timestamp() - query_start > interval '600 milliseconds'",
                &[],
                None,
            )
            .await
            .unwrap()
            .unwrap();
        if row.get_at::<i64>(0).unwrap() == 1 {
            waited = true;
            break;
        }
        assert!(
            !run.is_finished(),
            "the migration ended while the writer was open: {:?}",
            run.await
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(waited, "CREATE INDEX CONCURRENTLY was never seen waiting");
    writer.commit().await.unwrap();
    drop(writer);
    let report = run.await.unwrap().expect("the index migration");
    assert_eq!(report.applied.len(), 1);
    let valid = probe
        .query_opt(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_v'::regclass",
            &[],
            None,
        )
        .await
        .unwrap()
        .unwrap();
    assert!(valid.get_at::<bool>(0).unwrap(), "the index is INVALID");
    drop(probe);
    env.finish().await;
}

/// While another session holds the module's migration lock, a migrator with a 300 ms lock
/// timeout fails with an error naming the lock, the holder and the fix; once the lock is
/// released it succeeds.
async fn migration_lock_wait_fails_naming_the_lock<P: Pool>() {
    let env = Env::<P>::with("mig_to_lock_", |_| {}).await;
    env.write("001_t.sql", "CREATE TABLE t (id int);\n");
    let mut holder = env.pool.acquire().await.unwrap();
    let pid = holder
        .query_opt(
            "SELECT pg_advisory_lock(hashtext('pgdbm_migration_default')), pg_backend_pid()",
            &[],
            None,
        )
        .await
        .unwrap()
        .unwrap()
        .get_at::<i32>(1)
        .unwrap();
    let err = env
        .migrator()
        .lock_timeout(Duration::from_millis(300))
        .apply_pending()
        .await
        .expect_err("the lock is held");
    let text = err.to_string();
    for needle in [
        "migration lock",
        "pgdbm_migration_default",
        &format!("pid {pid}"),
        "raise the lock timeout",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from: {text}");
    }
    holder
        .batch_execute(
            "SELECT pg_advisory_unlock(hashtext('pgdbm_migration_default'))",
            None,
        )
        .await
        .unwrap();
    drop(holder);
    let report = env.migrator().apply_pending().await.expect("after unlock");
    assert_eq!(report.applied.len(), 1);
    env.finish().await;
}

/// The migration lock's queries are bounded by `query_timeout`: on a connection whose traffic
/// is blackholed (a half-open network), the run fails instead of hanging.
async fn lock_queries_have_a_deadline<P: Pool>() {
    let server = TestServer::shared().expect("test server");
    let proxy = FaultProxy::for_server(server).expect("proxy");
    let env = Env::<P>::with("mig_to_dead_", |c| {
        c.port = proxy.port();
        c.min_connections = 1;
        c.acquire_timeout = Duration::from_secs(2);
    })
    .await;
    env.write("001_t.sql", "CREATE TABLE t (id int);\n");
    // Warm a connection so the migrator gets an established one.
    drop(env.pool.acquire().await.unwrap());
    proxy.blackhole(pgdbm_testkit::Direction::Both);
    let result = env
        .migrator()
        .query_timeout(Duration::from_millis(300))
        .apply_pending()
        .await;
    let err = result.expect_err("a blackholed connection cannot migrate");
    let text = err.to_string();
    for needle in ["pg_try_advisory_lock", "migration lock", "query_timeout"] {
        assert!(text.contains(needle), "`{needle}` missing from: {text}");
    }
    proxy.heal();
    env.finish().await;
}
