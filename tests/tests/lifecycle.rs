//! Connection lifecycle: a pool never hands out a connection in an unknown state, whatever the
//! borrower did (cancelled futures, dropped transactions, transaction statements in any
//! spelling), and nothing it leaves behind outlives its release. Every check asks the server
//! (`SAVEPOINT` answering 25P01 outside a transaction, `pg_stat_activity`, `pg_locks`), never
//! the client's belief.

use std::time::Duration;

use pgdbm::{Config, Connection, Database, Error, Pool, ResetPolicy};
use pgdbm_integration_tests::{both_backends, fresh_config, hold_connections};

/// A pool of 4 on a fresh database whose sessions carry `app` as application_name, plus an
/// observer pool (another application_name) to look at them from outside.
async fn pools<P: Pool>(app: &str, tweak: impl FnOnce(&mut Config)) -> (Database<P>, Database<P>) {
    let mut config = fresh_config("lifecycle").unwrap();
    config.min_connections = 0;
    config.max_connections = 4;
    config.application_name = Some(app.to_string());
    let mut observer = config.clone();
    observer.application_name = Some(format!("{app}_obs"));
    observer.max_connections = 2;
    tweak(&mut config);
    let db = Database::<P>::connect(config).await.unwrap();
    let obs = Database::<P>::connect(observer).await.unwrap();
    (db, obs)
}

fn app_name<P>(test: &str) -> String {
    let backend = if std::any::type_name::<P>().contains("Bb8") {
        "bb8"
    } else {
        "deadpool"
    };
    format!("lc_{test}_{backend}")
}

/// Polls `count_sql` (a `count(*)` with one text or int parameter) until it answers 0, at most
/// ~10 s; returns the last count.
async fn poll_zero<P: Pool>(
    obs: &Database<P>,
    count_sql: &str,
    param: &(dyn pgdbm::types::ToSql + Sync),
) -> i64 {
    let mut n = i64::MAX;
    for _ in 0..200 {
        n = obs
            .fetch_value::<i64, _>(count_sql, &[param])
            .await
            .unwrap()
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    n
}

/// Polls until no session of `app` is inside a transaction or running a statement; returns
/// the last count.
async fn settle<P: Pool>(obs: &Database<P>, app: &str) -> i64 {
    poll_zero(
        obs,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
         AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')",
        &app,
    )
    .await
}

/// Every connection the pool hands out (all of them at once) is outside a transaction as the
/// server sees it, and none of the pool's sessions is busy.
async fn assert_pool_clean<P: Pool>(db: &Database<P>, obs: &Database<P>, app: &str, what: &str) {
    let max = db.config().max_connections;
    let mut held = Vec::new();
    for _ in 0..max {
        held.push(db.acquire().await.unwrap());
    }
    for c in &mut held {
        let e = c
            .execute("SAVEPOINT pgdbm_probe", &[])
            .await
            .expect_err("a pooled connection was handed out inside a transaction");
        assert_eq!(
            e.sqlstate(),
            Some("25P01"),
            "{what}: SAVEPOINT must fail with 25P01 (no transaction), got {e}"
        );
    }
    drop(held);
    assert_eq!(
        settle(obs, app).await,
        0,
        "{what}: a session of the pool stayed busy"
    );
}

/// Delays from 1 µs to 5 ms: short enough to cancel each step of a request somewhere.
const DELAYS_US: [u64; 10] = [1, 5, 20, 50, 100, 200, 500, 1000, 2000, 5000];

async fn cancelled_futures_leave_the_pool_clean<P: Pool>() {
    let app = app_name::<P>("f14");
    let (db, obs) = pools::<P>(&app, |_| {}).await;
    db.execute("CREATE TABLE t (id INT)", &[]).await.unwrap();
    for us in DELAYS_US {
        let d = Duration::from_micros(us);
        // A transaction whose future is dropped somewhere between checkout and BEGIN's answer.
        let _ = tokio::time::timeout(d, db.transaction()).await;
        // BEGIN sent through execute, future dropped.
        let _ = tokio::time::timeout(d, async {
            let mut c = db.acquire().await?;
            c.execute("BEGIN", &[]).await?;
            c.execute("INSERT INTO t VALUES (1)", &[]).await
        })
        .await;
        // A long statement whose future is dropped while it runs.
        let _ = tokio::time::timeout(d, db.fetch_one("SELECT pg_sleep(1)", &[])).await;
        // An autocommit write right after must be committed, whatever connection it gets.
        db.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    }
    assert_pool_clean(&db, &obs, &app, "after cancelled futures").await;
    // Every autocommit write is there; no write of an abandoned transaction is.
    let twos: Option<i64> = db
        .fetch_value("SELECT count(*) FROM t WHERE id = 2", &[])
        .await
        .unwrap();
    assert_eq!(twos, Some(DELAYS_US.len() as i64));
    let ones: Option<i64> = db
        .fetch_value("SELECT count(*) FROM t WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(
        ones,
        Some(0),
        "a write of an abandoned transaction was committed"
    );
    db.close().await;
    obs.close().await;
}

both_backends!(cancelled_futures, cancelled_futures_leave_the_pool_clean);

async fn dropped_transaction_releases_its_locks<P: Pool>() {
    let app = app_name::<P>("lock");
    let (db, obs) = pools::<P>(&app, |_| {}).await;
    db.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)", &[])
        .await
        .unwrap();
    db.execute("INSERT INTO t VALUES (1, 0)", &[])
        .await
        .unwrap();
    for _ in 0..5 {
        let mut tx = db.transaction().await.unwrap();
        tx.execute("UPDATE t SET v = v + 1 WHERE id = 1", &[])
            .await
            .unwrap();
        drop(tx);
        // Another session must get the row lock: at most 1 s of waiting, on the server's clock.
        let mut other = obs.transaction().await.unwrap();
        other
            .execute("SET LOCAL lock_timeout = '1s'", &[])
            .await
            .unwrap();
        other
            .execute("SELECT v FROM t WHERE id = 1 FOR UPDATE", &[])
            .await
            .expect("the dropped transaction still holds its row lock");
        other.rollback().await.unwrap();
    }
    let v: Option<i32> = db
        .fetch_value("SELECT v FROM t WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(v, Some(0), "a dropped transaction's update was committed");
    assert_pool_clean(&db, &obs, &app, "after dropped transactions").await;
    db.close().await;
    obs.close().await;
}

both_backends!(dropped_transaction, dropped_transaction_releases_its_locks);

async fn transaction_statements_in_any_spelling<P: Pool>() {
    let app = app_name::<P>("spell");
    let (db, obs) = pools::<P>(&app, |_| {}).await;
    db.batch_execute(
        "CREATE TABLE t (id INT); \
         CREATE PROCEDURE commits() LANGUAGE plpgsql AS $$ \
         BEGIN INSERT INTO t VALUES (10); COMMIT; INSERT INTO t VALUES (11); END $$",
    )
    .await
    .unwrap();
    let cases: [(&str, &[&str]); 4] = [
        ("SET then BEGIN in one batch", &["SET lc.x = '1'; BEGIN"]),
        (
            "ROLLBACK WORK TO SAVEPOINT",
            &[
                "BEGIN",
                "SAVEPOINT s",
                "INSERT INTO t VALUES (1)",
                "ROLLBACK WORK TO SAVEPOINT s",
            ],
        ),
        (
            "COMMIT WORK AND CHAIN",
            &[
                "BEGIN",
                "INSERT INTO t VALUES (2)",
                "COMMIT WORK AND CHAIN",
                "INSERT INTO t VALUES (3)",
            ],
        ),
        ("CALL of a procedure that commits", &["CALL commits()"]),
    ];
    for (what, statements) in cases {
        let mut c = db.acquire().await.unwrap();
        for s in statements {
            c.batch_execute(*s).await.unwrap();
        }
        drop(c);
        assert_pool_clean(&db, &obs, &app, what).await;
    }
    // Committed: row 2 (by COMMIT AND CHAIN) and 10, 11 (the procedure); rolled back: 1 and 3.
    let ids: Vec<i32> = db
        .fetch_all("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| pgdbm::Row::get_at::<i32>(r, 0).unwrap())
        .collect();
    assert_eq!(ids, vec![2, 10, 11]);
    db.close().await;
    obs.close().await;
}

both_backends!(
    transaction_spellings,
    transaction_statements_in_any_spelling
);

/// Session state one borrower leaves: what the next borrower of the same session sees.
async fn session_state_after_release<P: Pool>(
    policy: ResetPolicy,
) -> (i32, i32, bool, bool, bool, bool, bool) {
    let app = app_name::<P>(&format!("reset_{}", policy.as_str()));
    // One connection, so the second borrower gets the first one's session (checked by pid).
    let (db, obs) = pools::<P>(&app, |c| {
        c.max_connections = 1;
        c.reset_on_release = policy;
    })
    .await;
    let role = format!("{app}_role");
    obs.execute(&format!("DROP ROLE IF EXISTS {role}"), &[])
        .await
        .unwrap();
    obs.execute(&format!("CREATE ROLE {role}"), &[])
        .await
        .unwrap();
    let mut c = db.acquire().await.unwrap();
    let pid1: i32 = c
        .fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .unwrap();
    c.batch_execute(&format!(
        "SET ROLE {role}; SET search_path = pg_catalog; CREATE TEMP TABLE leftover (x int); \
         SELECT pg_advisory_lock(4242); PREPARE leftover_stmt AS SELECT 1"
    ))
    .await
    .unwrap();
    drop(c);
    let mut c = db.acquire().await.unwrap();
    let pid2: i32 = c
        .fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .unwrap();
    let row = c
        .fetch_one(
            "SELECT current_user = session_user, current_setting('search_path') = 'pg_catalog', \
             to_regclass('pg_temp.leftover') IS NOT NULL, \
             EXISTS (SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'), \
             EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_statements WHERE name = 'leftover_stmt')",
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    let get = |i| pgdbm::Row::get_at::<bool>(&row, i).unwrap();
    let state = (pid1, pid2, !get(0), get(1), get(2), get(3), get(4));
    drop(c);
    db.close().await;
    // The temp table (owned by the role) goes with the session: wait for it to end.
    poll_zero(
        &obs,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
        &app,
    )
    .await;
    obs.execute(&format!("DROP ROLE IF EXISTS {role}"), &[])
        .await
        .unwrap();
    obs.close().await;
    state
}

async fn full_reset_clears_session_state<P: Pool>() {
    let (pid1, pid2, role, path, temp, lock, prepared) =
        session_state_after_release::<P>(ResetPolicy::Full).await;
    assert_eq!(pid1, pid2, "the second borrower must get the same session");
    assert!(!role, "SET ROLE leaked to the next borrower");
    assert!(!path, "SET search_path leaked to the next borrower");
    assert!(!temp, "a temp table leaked to the next borrower");
    assert!(!lock, "a session advisory lock leaked to the next borrower");
    assert!(!prepared, "a SQL-level PREPARE leaked to the next borrower");
}

both_backends!(full_reset, full_reset_clears_session_state);

/// With `Rollback` (the default) session state stays on the connection, as documented.
async fn rollback_reset_keeps_session_state<P: Pool>() {
    let (pid1, pid2, role, path, temp, lock, prepared) =
        session_state_after_release::<P>(ResetPolicy::Rollback).await;
    assert_eq!(pid1, pid2, "the second borrower must get the same session");
    assert!(
        role && path && temp && lock && prepared,
        "Rollback keeps session state: {:?}",
        (role, path, temp, lock, prepared)
    );
}

both_backends!(rollback_reset, rollback_reset_keeps_session_state);

/// A cancel sent for a statement that ends just as its timeout expires must never abort the
/// holder's next statement.
async fn no_late_cancel<P: Pool>() {
    let app = app_name::<P>("late");
    let (db, obs) = pools::<P>(&app, |_| {}).await;
    let db = db.with_timeout(Some(Duration::from_millis(40)));
    let mut c = db.acquire().await.unwrap();
    let mut timed_out = 0;
    for i in 0..40 {
        // Statement durations around the 40 ms timeout.
        let secs = f64::from(30 + (i % 20)) / 1000.0;
        match c.execute("SELECT pg_sleep($1)", &[&secs]).await {
            Ok(_) => {}
            Err(e) if e.sqlstate() == Some("57014") => timed_out += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
        // The next statement: never hit by the previous one's cancel.
        let v: Option<i32> = c
            .fetch_value("SELECT $1::int", &[&i])
            .await
            .unwrap_or_else(|e| panic!("statement after a cancel failed: {e}"));
        assert_eq!(v, Some(i));
    }
    assert!(
        timed_out > 0,
        "no statement reached its timeout: the test did not test anything"
    );
    drop(c);
    assert_pool_clean(&db, &obs, &app, "after cancels").await;
    db.close().await;
    obs.close().await;
}

both_backends!(late_cancel, no_late_cancel);

/// `Duration::MAX` reads as "no limit" everywhere, and a huge connect timeout works.
async fn huge_durations_do_not_panic<P: Pool>() {
    let mut config = fresh_config("lifecycle").unwrap();
    config.command_timeout = Some(Duration::MAX);
    config.connect_timeout = Duration::MAX;
    config.acquire_timeout = Duration::MAX;
    config.max_lifetime = Some(Duration::MAX);
    let db = Database::<P>::connect(config.clone()).await.unwrap();
    let v: Option<i32> = db.fetch_value("SELECT 41 + 1", &[]).await.unwrap();
    assert_eq!(v, Some(42));
    let tx = db.transaction().await.unwrap();
    tx.commit().await.unwrap();
    db.close().await;

    config.keepalives_idle = Duration::ZERO;
    match Database::<P>::connect(config).await {
        Err(Error::Configuration { field, .. }) => assert_eq!(field, "keepalives_idle"),
        other => panic!("expected a configuration error naming keepalives_idle, got {other:?}"),
    }
}

both_backends!(huge_durations, huge_durations_do_not_panic);

/// A backend that stops answering (SIGSTOP) makes its statement time out; the cancel cannot be
/// confirmed, so the connection is discarded and the pool keeps serving on others.
async fn stopped_backend_is_discarded<P: Pool>() {
    let app = app_name::<P>("sigstop");
    let (db, obs) = pools::<P>(&app, |c| {
        c.command_timeout = Some(Duration::from_millis(500))
    })
    .await;
    let mut c = db.acquire().await.unwrap();
    let pid: i32 = c
        .fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let e = c.execute("SELECT 1", &[]).await.unwrap_err();
    assert!(
        matches!(&e, Error::Query(q) if q.kind == pgdbm::QueryErrorKind::Timeout),
        "expected a timeout, got {e}"
    );
    assert!(
        c.inner().is_closed(),
        "a connection whose cancel was not confirmed must be discarded"
    );
    drop(c);
    // The pool keeps serving, on other sessions.
    for i in 0..8i32 {
        let mut c = db.acquire().await.unwrap();
        let other: i32 = c
            .fetch_value("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .unwrap();
        assert_ne!(
            other, pid,
            "the stopped backend's connection was handed out again"
        );
        let v: Option<i32> = c.fetch_value("SELECT $1::int", &[&i]).await.unwrap();
        assert_eq!(v, Some(i));
    }
    // Let it run again: it finds its client gone and ends.
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status();
    let left = poll_zero(
        &obs,
        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
        &pid,
    )
    .await;
    assert_eq!(left, 0, "the discarded session did not end");
    db.close().await;
    obs.close().await;
}

both_backends!(sigstop, stopped_backend_is_discarded);

async fn held_connections_are_real<P: Pool>() {
    // Guard for the helpers above: hold_connections really checks out distinct sessions.
    let app = app_name::<P>("hold");
    let (db, obs) = pools::<P>(&app, |_| {}).await;
    let held = hold_connections(&db, 3).await.unwrap();
    let n: Option<i64> = obs
        .fetch_value(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    assert!(n >= Some(3), "{n:?}");
    drop(held);
    db.close().await;
    obs.close().await;
}

both_backends!(held_connections, held_connections_are_real);

/// `COPY ... FROM STDIN` / `TO STDOUT` sent as plain SQL cannot stream rows. Through the
/// extended and the simple protocol, the error names the way rows go in; the connection, which
/// the server left in copy mode (copy-in holding the table's lock), is discarded at release:
/// its backend ends (the COPY aborted, nothing applied) and every connection handed out
/// afterwards is clean.
async fn plain_sql_copy_is_discarded<P: Pool>() {
    let app = app_name::<P>("copy");
    let (db, obs) = pools::<P>(&app, |_| {}).await;
    db.execute("CREATE TABLE t (id INT, v TEXT)", &[])
        .await
        .unwrap();
    db.execute("INSERT INTO t VALUES (1, 'one')", &[])
        .await
        .unwrap();
    for (how, sql) in [
        ("execute", "COPY t (id, v) FROM STDIN"),
        ("batch_execute", "COPY t (id, v) FROM STDIN"),
        ("fetch_all", "COPY t TO STDOUT"),
    ] {
        let mut c = db.acquire().await.unwrap();
        let pid: i32 = c
            .fetch_value("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .unwrap();
        let e = match how {
            "execute" => c.execute(sql, &[]).await.unwrap_err(),
            "batch_execute" => c.batch_execute(sql).await.unwrap_err(),
            _ => match c.fetch_all(sql, &[]).await {
                Ok(rows) => panic!("{sql} answered {} rows", rows.len()),
                Err(e) => e,
            },
        };
        assert!(
            matches!(&e, Error::Query(q) if q.kind == pgdbm::QueryErrorKind::Connection),
            "{how} {sql}: {e:?}"
        );
        assert!(
            e.to_string().contains("copy_records_to_table"),
            "{how} {sql}: {e}"
        );
        drop(c);
        let listed = poll_zero(
            &obs,
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
            &pid,
        )
        .await;
        assert_eq!(listed, 0, "{how} {sql}: backend {pid} outlived its release");
    }
    let n: Option<i64> = obs
        .fetch_value("SELECT count(*) FROM t", &[])
        .await
        .unwrap();
    assert_eq!(n, Some(1), "a plain-SQL COPY FROM STDIN applied rows");
    assert_pool_clean(&db, &obs, &app, "after plain-SQL COPY").await;
    db.close().await;
    obs.close().await;
}

both_backends!(plain_sql_copy, plain_sql_copy_is_discarded);
