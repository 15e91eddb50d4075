#![allow(clippy::unwrap_used, clippy::expect_used)]
//! PgConnection against a real PostgreSQL server.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgdbm_core::{Connection, Error, QueryErrorKind, Row};
use pgdbm_tokio_postgres::{recycle, PgConnection, RecyclePolicy};

fn kind(e: &Error) -> QueryErrorKind {
    e.as_query()
        .unwrap_or_else(|| panic!("not a query error: {e}"))
        .kind
}

#[tokio::test]
async fn execute_query_and_query_opt() {
    let mut c = support::connect("t_basic").await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, name text)", None)
        .await
        .unwrap();
    let n = c
        .execute(
            "INSERT INTO t VALUES ($1, $2), ($3, $4)",
            &[&1i32, &"a", &2i32, &"b"],
            None,
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    let rows = c
        .query("SELECT id, name FROM t ORDER BY id", &[], None)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].try_get::<_, i32>("id").unwrap(), 2);
    assert_eq!(rows[1].try_get::<_, String>(&1usize).unwrap(), "b");
    assert_eq!(rows[0].column_names(), vec!["id", "name"]);
    let one = c
        .query_opt("SELECT name FROM t WHERE id = $1", &[&1i32], None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one.get_at::<String>(0).unwrap(), "a");
    assert!(c
        .query_opt("SELECT name FROM t WHERE id = $1", &[&9i32], None)
        .await
        .unwrap()
        .is_none());
    // query_opt with many rows returns the first and still runs the statement to completion.
    let first = c
        .query_opt("SELECT id FROM t ORDER BY id", &[], None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.get_at::<i32>(0).unwrap(), 1);
    assert_eq!(c.query_count(), 6);
    assert!(!c.needs_reset());
}

#[tokio::test]
async fn server_errors_carry_sqlstate_constraint_and_masked_params() {
    let mut c = support::connect("t_errors").await;
    c.batch_execute("CREATE TABLE u (id int CONSTRAINT u_pk PRIMARY KEY)", None)
        .await
        .unwrap();
    c.execute("INSERT INTO u VALUES ($1)", &[&1i32], None)
        .await
        .unwrap();
    let e = c
        .execute("INSERT INTO u VALUES ($1)", &[&1i32], None)
        .await
        .unwrap_err();
    let q = e.as_query().unwrap();
    assert_eq!(q.kind, QueryErrorKind::Server);
    assert_eq!(q.sqlstate.as_deref(), Some("23505"));
    assert_eq!(q.constraint.as_deref(), Some("u_pk"));
    assert_eq!(q.table.as_deref(), Some("u"));
    assert_eq!(q.schema.as_deref(), Some("public"));
    assert!(q.detail.as_deref().unwrap_or("").contains("already exists"));
    let shown = e.to_string();
    assert!(shown.contains("$1=***"), "{shown}");
    assert!(shown.contains("INSERT INTO u"), "{shown}");
    // A failed statement outside a transaction leaves the connection clean.
    assert!(!c.needs_reset());

    // Encoding a parameter of the wrong type is a conversion error.
    let e = c
        .execute("INSERT INTO u VALUES ($1)", &[&"text"], None)
        .await
        .unwrap_err();
    assert_eq!(kind(&e), QueryErrorKind::Conversion, "{e}");
}

#[tokio::test]
async fn row_type_mismatch_names_column_and_types() {
    let mut c = support::connect("t_rowconv").await;
    let row = c
        .query_opt("SELECT 1::int4 AS n, NULL::text AS s", &[], None)
        .await
        .unwrap()
        .unwrap();
    let e = row.try_get::<_, String>("n").unwrap_err();
    assert_eq!(kind(&e), QueryErrorKind::Conversion);
    let msg = e.to_string();
    assert!(
        msg.contains("`n`") && msg.contains("int4") && msg.contains("String"),
        "{msg}"
    );
    let e = row.try_get::<_, String>("s").unwrap_err();
    assert!(e.to_string().contains("Option"), "{e}");
    assert_eq!(row.try_get::<_, Option<String>>("s").unwrap(), None);
    assert!(row.try_get::<_, i32>("missing").is_err());
    assert!(row.get_at::<i32>(5).is_err());
}

#[tokio::test]
async fn transactions_and_tracking() {
    let mut c = support::connect("t_tx").await;
    c.batch_execute("CREATE TABLE t (x int)", None)
        .await
        .unwrap();
    c.begin().await.unwrap();
    assert!(c.in_transaction() && c.needs_reset());
    c.execute("INSERT INTO t VALUES (1)", &[], None)
        .await
        .unwrap();
    c.rollback().await.unwrap();
    assert!(!c.in_transaction() && !c.needs_reset());
    c.begin().await.unwrap();
    c.execute("INSERT INTO t VALUES (2)", &[], None)
        .await
        .unwrap();
    c.commit().await.unwrap();
    let rows = c.query("SELECT x FROM t", &[], None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get_at::<i32>(0).unwrap(), 2);

    // BEGIN run by the user (after a comment) is noticed; COMMIT clears it.
    c.execute("/* hi */ BEGIN", &[], None).await.unwrap();
    assert!(c.needs_reset() && c.in_transaction());
    c.batch_execute("  commit", None).await.unwrap();
    assert!(!c.needs_reset());
    c.batch_execute("START TRANSACTION; SELECT 1", None)
        .await
        .unwrap();
    assert!(c.needs_reset());
    c.reset(Duration::from_secs(5)).await.unwrap();
    assert!(!c.needs_reset());
    let e = c.batch_execute("SAVEPOINT x", None).await.unwrap_err();
    assert_eq!(e.sqlstate(), Some("25P01"), "{e}");
}

#[tokio::test]
async fn recycle_resets_a_connection_left_in_a_transaction() {
    let mut c = support::connect("t_recycle").await;
    let policy = RecyclePolicy::from_config(&support::config("t_recycle"));
    c.begin().await.unwrap();
    c.execute("SELECT 1", &[], None).await.unwrap();
    recycle(&mut c, &policy).await.unwrap();
    assert!(!c.needs_reset());
    // Not inside a transaction any more: SAVEPOINT fails with 25P01.
    let e = c.batch_execute("SAVEPOINT x", None).await.unwrap_err();
    assert_eq!(e.sqlstate(), Some("25P01"), "{e}");

    // An aborted transaction started by the user is reset too.
    c.batch_execute("BEGIN", None).await.unwrap();
    let _ = c.execute("SELECT 1/0", &[], None).await.unwrap_err();
    recycle(&mut c, &policy).await.unwrap();
    let e = c.batch_execute("SAVEPOINT x", None).await.unwrap_err();
    assert_eq!(e.sqlstate(), Some("25P01"), "{e}");
}

#[tokio::test]
async fn recycle_enforces_max_queries_lifetime_and_idle() {
    let mut c = support::connect("t_maxq").await;
    let mut policy = RecyclePolicy::from_config(&support::config("t_maxq"));
    policy.max_queries = 3;
    for _ in 0..2 {
        c.execute("SELECT 1", &[], None).await.unwrap();
    }
    recycle(&mut c, &policy).await.unwrap();
    c.execute("SELECT 1", &[], None).await.unwrap();
    let e = recycle(&mut c, &policy).await.unwrap_err();
    assert!(e.to_string().contains("max_queries"), "{e}");

    let mut policy = RecyclePolicy::from_config(&support::config("t_maxq"));
    policy.max_lifetime = Some(Duration::from_millis(1));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let e = recycle(&mut c, &policy).await.unwrap_err();
    assert!(e.to_string().contains("max_lifetime"), "{e}");

    let mut policy = RecyclePolicy::from_config(&support::config("t_maxq"));
    policy.max_idle = Duration::from_millis(1);
    let e = recycle(&mut c, &policy).await.unwrap_err();
    assert!(e.to_string().contains("idle"), "{e}");

    // Idle longer than liveness_after: a liveness check runs and passes.
    let mut policy = RecyclePolicy::from_config(&support::config("t_maxq"));
    policy.liveness_after = Duration::ZERO;
    recycle(&mut c, &policy).await.unwrap();
    c.check_alive(Duration::from_secs(5)).await.unwrap();
}

/// Ends backend `pid` from another thread (its own runtime) and returns once the server no
/// longer lists it: the calling runtime does not run meanwhile, so the goodbye (FATAL, EOF)
/// sits unread in the terminated connection's socket.
fn terminate_elsewhere(db: &'static str, pid: i32) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut admin = PgConnection::connect(&support::config(db)).await.unwrap();
            admin
                .execute("SELECT pg_terminate_backend($1)", &[&pid], None)
                .await
                .unwrap();
            for _ in 0..200 {
                let n: i64 = admin
                    .query_opt(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                        &[&pid],
                        None,
                    )
                    .await
                    .unwrap()
                    .unwrap()
                    .get_at(0)
                    .unwrap();
                if n == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("backend {pid} still listed 5 s after pg_terminate_backend");
        });
    })
    .join()
    .unwrap();
}

async fn backend_pid(c: &mut PgConnection) -> i32 {
    c.query_opt("SELECT pg_backend_pid()", &[], None)
        .await
        .unwrap()
        .unwrap()
        .get_at(0)
        .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn the_socket_probe_catches_an_ended_session_the_task_has_not_read() {
    // Idle longer than probe_after (zero here): the peek finds the server's goodbye before
    // the connection task has read it, and the connection is not handed out.
    let mut c = support::connect("t_probe").await;
    terminate_elsewhere("t_probe", backend_pid(&mut c).await);
    assert!(!c.is_broken(), "the task has not run: nothing is known yet");
    let mut policy = RecyclePolicy::from_config(&support::config("t_probe"));
    policy.probe_after = Duration::ZERO;
    let e = recycle(&mut c, &policy).await.unwrap_err();
    assert!(e.to_string().contains("not reused"), "{e}");

    // Reused within probe_after, the socket is not peeked at (no system call per checkout of
    // a busy pool): the same situation passes the checkout and the first statement fails,
    // with a connection error that discards it.
    let mut c = PgConnection::connect(&support::config("t_probe"))
        .await
        .unwrap();
    terminate_elsewhere("t_probe", backend_pid(&mut c).await);
    policy.probe_after = Duration::from_secs(3600);
    recycle(&mut c, &policy).await.unwrap();
    let e = c.execute("SELECT 1", &[], None).await.unwrap_err();
    assert_eq!(kind(&e), QueryErrorKind::Connection, "{e}");
    assert!(c.is_broken());
}

/// A 30 s sleep under `timeout` fails with a timeout error.
async fn times_out(c: &mut PgConnection, timeout: Option<Duration>) {
    let e = c
        .execute("SELECT pg_sleep(30)", &[], timeout)
        .await
        .unwrap_err();
    assert_eq!(kind(&e), QueryErrorKind::Timeout, "{e}");
}

#[tokio::test]
async fn the_reused_deadline_timer_fires_for_earlier_and_later_deadlines() {
    // One timer serves every statement of a connection: a deadline later than the one it
    // holds moves it, an earlier one re-registers it, and after it fired it is armed again.
    let mut c = support::connect("t_timer").await;
    let long = Some(Duration::from_secs(60));
    let short = Some(Duration::from_millis(300));
    for _ in 0..3 {
        c.execute("SELECT 1", &[], long).await.unwrap();
    }
    times_out(&mut c, short).await;
    // Fired once; a later, longer deadline does not fire early.
    c.execute("SELECT pg_sleep(0.5)", &[], short.map(|d| d * 4))
        .await
        .unwrap();
    c.execute("SELECT 1", &[], long).await.unwrap();
    times_out(&mut c, short).await;
    c.execute("SELECT 1", &[], None).await.unwrap();

    // Used from another runtime, which then shuts down: that runtime's requests get a timer
    // of their own, and this runtime's next deadline does not touch the dead one's (tokio
    // panics on polling a timer whose driver is gone). A fresh connection, so its timer is
    // first made on the other runtime.
    let mut c = PgConnection::connect(&support::config("t_timer"))
        .await
        .unwrap();
    let mut c = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            times_out(&mut c, short).await;
            c.execute("SELECT 1", &[], long).await.unwrap();
        });
        drop(rt);
        c
    })
    .await
    .unwrap();
    times_out(&mut c, short).await;
    c.execute("SELECT 1", &[], long).await.unwrap();
}

#[tokio::test]
async fn timeout_cancels_the_statement_on_the_server() {
    let mut c = support::connect("t_timeout").await;
    let mut observer = PgConnection::connect(&support::config("t_timeout"))
        .await
        .unwrap();
    let e = c
        .query("SELECT pg_sleep(30)", &[], Some(Duration::from_millis(300)))
        .await
        .unwrap_err();
    let q = e.as_query().unwrap();
    assert_eq!(q.kind, QueryErrorKind::Timeout, "{e}");
    assert_eq!(q.sqlstate.as_deref(), Some("57014"));
    assert!(e.to_string().contains("300ms"), "{e}");
    assert!(!c.is_broken());

    // No pg_sleep left running on the server.
    let mut running = i64::MAX;
    for _ in 0..50 {
        running = observer
            .query_opt(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                 AND query = 'SELECT pg_sleep(30)'",
                &[],
                None,
            )
            .await
            .unwrap()
            .unwrap()
            .get_at::<i64>(0)
            .unwrap();
        if running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(running, 0);

    // The cancel was confirmed and the statement ended within the grace: the connection is
    // settled (idle, outside a transaction) and reusable as it is.
    assert!(!c.needs_reset());
    recycle(
        &mut c,
        &RecyclePolicy::from_config(&support::config("t_timeout")),
    )
    .await
    .unwrap();
    let v = c.query_opt("SELECT 7", &[], None).await.unwrap().unwrap();
    assert_eq!(v.get_at::<i32>(0).unwrap(), 7);

    // batch_execute honours timeouts too.
    let e = c
        .batch_execute("SELECT pg_sleep(30)", Some(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
}

#[tokio::test]
async fn terminated_backend_is_a_connection_error_and_broken() {
    let mut c = support::connect("t_terminate").await;
    let pid = c
        .query_opt("SELECT pg_backend_pid()", &[], None)
        .await
        .unwrap()
        .unwrap()
        .get_at::<i32>(0)
        .unwrap();
    let mut killer = PgConnection::connect(&support::config("t_terminate"))
        .await
        .unwrap();
    killer
        .execute("SELECT pg_terminate_backend($1)", &[&pid], None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = c.query("SELECT 1", &[], None).await.unwrap_err();
    assert_eq!(kind(&e), QueryErrorKind::Connection, "{e}");
    assert!(c.is_broken());
    assert!(c.is_closed());
    let policy = RecyclePolicy::from_config(&support::config("t_terminate"));
    assert!(recycle(&mut c, &policy).await.is_err());
}

#[tokio::test]
async fn cached_plan_change_is_retried_once() {
    let mut c = support::connect("t_plan").await;
    c.batch_execute("CREATE TABLE t (a int); INSERT INTO t VALUES (1)", None)
        .await
        .unwrap();
    c.prepare("SELECT * FROM t").await.unwrap();
    let rows = c.query("SELECT * FROM t", &[], None).await.unwrap();
    assert_eq!(rows[0].len(), 1);
    c.batch_execute("ALTER TABLE t ADD COLUMN b int DEFAULT 5", None)
        .await
        .unwrap();
    let rows = c.query("SELECT * FROM t", &[], None).await.unwrap();
    assert_eq!(rows[0].len(), 2);
    assert_eq!(rows[0].try_get::<_, i32>("b").unwrap(), 5);

    // Inside a transaction the error is returned (it aborted the transaction).
    c.batch_execute("ALTER TABLE t ADD COLUMN c int", None)
        .await
        .unwrap();
    c.begin().await.unwrap();
    let e = c.query("SELECT * FROM t", &[], None).await.unwrap_err();
    assert_eq!(e.sqlstate(), Some("0A000"), "{e}");
    c.rollback().await.unwrap();
}

#[tokio::test]
async fn statement_cache_is_bounded_and_clearable() {
    let mut config = support::database("t_cache").await;
    config.statement_cache_size = 2;
    let mut c = PgConnection::connect(&config).await.unwrap();
    for i in 0..5 {
        c.query(&format!("SELECT {i}"), &[], None).await.unwrap();
    }
    assert_eq!(c.cached_statements(), 2);
    let count = |rows: Vec<pgdbm_tokio_postgres::PgRow>| rows[0].get_at::<i64>(0).unwrap();
    let on_server = count(
        c.query("SELECT count(*) FROM pg_prepared_statements", &[], None)
            .await
            .unwrap(),
    );
    assert!(on_server <= 3, "{on_server} statements on the server");

    c.clear_statement_cache();
    assert_eq!(c.cached_statements(), 0);

    // A shared epoch bump clears the cache before the next statement.
    let epoch = Arc::new(AtomicU64::new(0));
    c.set_cache_epoch(epoch.clone());
    c.query("SELECT 1", &[], None).await.unwrap();
    assert_eq!(c.cached_statements(), 1);
    epoch.fetch_add(1, Ordering::AcqRel);
    c.query("SELECT 2", &[], None).await.unwrap();
    assert_eq!(c.cached_statements(), 1);
}

#[tokio::test]
async fn cache_off_uses_no_lasting_prepared_statements() {
    let mut config = support::database("t_nocache").await;
    config.statement_cache_size = 0;
    let mut c = PgConnection::connect(&config).await.unwrap();
    c.batch_execute("CREATE TABLE t (x int)", None)
        .await
        .unwrap();
    c.execute("INSERT INTO t VALUES ($1)", &[&1i32], None)
        .await
        .unwrap();
    let rows = c
        .query("SELECT x FROM t WHERE x = $1", &[&1i32], None)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    // Rows keep their statement alive; once they are gone it is closed on the server.
    drop(rows);
    let n = c
        .query_opt("SELECT count(*) FROM pg_prepared_statements", &[], None)
        .await
        .unwrap()
        .unwrap()
        .get_at::<i64>(0)
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(c.cached_statements(), 0);
    assert_eq!(
        c.execute_many("INSERT INTO t VALUES ($1)", &[&[&2i32], &[&3i32]], None)
            .await
            .unwrap(),
        2
    );
}

#[tokio::test]
async fn execute_many_all_or_nothing_and_names_the_row() {
    let mut c = support::connect("t_many").await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)", None)
        .await
        .unwrap();
    let ids: Vec<i32> = (0..10_000).collect();
    let vals: Vec<String> = ids.iter().map(|i| format!("v{i}")).collect();
    let rows: Vec<[&(dyn postgres_types::ToSql + Sync); 2]> = ids
        .iter()
        .zip(&vals)
        .map(|(i, v)| [i as _, v as _])
        .collect();
    let refs: Vec<&[&(dyn postgres_types::ToSql + Sync)]> = rows.iter().map(|r| &r[..]).collect();
    let n = c
        .execute_many("INSERT INTO t VALUES ($1, $2)", &refs, None)
        .await
        .unwrap();
    assert_eq!(n, 10_000);
    assert!(!c.needs_reset());

    // Row 5 (0-based) duplicates a key: nothing is inserted, the error names row 5.
    let dup: Vec<i32> = (20_000..20_010)
        .map(|i| if i == 20_005 { 7 } else { i })
        .collect();
    let dup_rows: Vec<[&(dyn postgres_types::ToSql + Sync); 2]> =
        dup.iter().map(|i| [i as _, &"x" as _]).collect();
    let dup_refs: Vec<&[&(dyn postgres_types::ToSql + Sync)]> =
        dup_rows.iter().map(|r| &r[..]).collect();
    let e = c
        .execute_many("INSERT INTO t VALUES ($1, $2)", &dup_refs, None)
        .await
        .unwrap_err();
    let q = e.as_query().unwrap();
    assert_eq!(q.row, Some(5), "{e}");
    assert_eq!(q.sqlstate.as_deref(), Some("23505"));
    assert_eq!(count(&mut c).await, 10_000);
    assert!(!c.in_transaction());

    // A parameter that cannot be encoded (row 3): nothing is inserted either.
    let bad: Vec<Box<dyn postgres_types::ToSql + Sync>> = (0..6)
        .map(|i| -> Box<dyn postgres_types::ToSql + Sync> {
            if i == 3 {
                Box::new("not an int")
            } else {
                Box::new(30_000 + i)
            }
        })
        .collect();
    let bad_rows: Vec<[&(dyn postgres_types::ToSql + Sync); 2]> =
        bad.iter().map(|b| [b.as_ref(), &"x" as _]).collect();
    let bad_refs: Vec<&[&(dyn postgres_types::ToSql + Sync)]> =
        bad_rows.iter().map(|r| &r[..]).collect();
    let e = c
        .execute_many("INSERT INTO t VALUES ($1, $2)", &bad_refs, None)
        .await
        .unwrap_err();
    assert_eq!(e.as_query().unwrap().row, Some(3), "{e}");
    assert_eq!(kind(&e), QueryErrorKind::Conversion);
    assert_eq!(count(&mut c).await, 10_000);

    // Inside the caller's transaction: the failed batch leaves no rows and the transaction usable.
    c.begin().await.unwrap();
    c.execute("INSERT INTO t VALUES (-1, 'before')", &[], None)
        .await
        .unwrap();
    let e = c
        .execute_many("INSERT INTO t VALUES ($1, $2)", &dup_refs, None)
        .await
        .unwrap_err();
    assert_eq!(e.as_query().unwrap().row, Some(5));
    c.execute_many("INSERT INTO t VALUES ($1, $2)", &[&[&-2i32, &"ok"]], None)
        .await
        .unwrap();
    c.commit().await.unwrap();
    assert_eq!(count(&mut c).await, 10_002);
}

fn table(s: &str) -> pgdbm_core::TableName {
    pgdbm_core::TableName::parse(s).unwrap()
}

#[tokio::test]
async fn copy_in_binary() {
    let mut c = support::connect("t_copy").await;
    c.batch_execute(
        "CREATE TABLE t (id bigint, \"Name\" text, score float8, note text)",
        None,
    )
    .await
    .unwrap();
    let ids: Vec<i64> = (0..1000).collect();
    let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
    let rows: Vec<[&(dyn postgres_types::ToSql + Sync); 3]> = ids
        .iter()
        .zip(&names)
        .map(|(i, n)| [i as _, n as _, &1.5f64 as _])
        .collect();
    let refs: Vec<&[&(dyn postgres_types::ToSql + Sync)]> = rows.iter().map(|r| &r[..]).collect();
    let n = c
        .copy_in(&table("public.t"), &["id", "Name", "score"], &refs, None)
        .await
        .unwrap();
    assert_eq!(n, 1000);
    let row = c
        .query_opt(
            "SELECT count(*), sum(score)::float8 FROM t WHERE note IS NULL",
            &[],
            None,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get_at::<i64>(0).unwrap(), 1000);
    assert_eq!(row.get_at::<f64>(1).unwrap(), 1500.0);

    // Wrong arity: an error naming the row, nothing copied, no panic.
    let short: [&(dyn postgres_types::ToSql + Sync); 1] = [&1i64];
    let e = c
        .copy_in(
            &table("public.t"),
            &["id", "Name", "score"],
            &[&rows[0][..], &short[..]],
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.as_query().unwrap().row, Some(1), "{e}");
    // A bad column name never reaches SQL.
    assert!(matches!(
        c.copy_in(&table("public.t"), &["id; drop"], &[], None)
            .await,
        Err(Error::Schema { .. })
    ));
    // All columns when none are named.
    let all: [&(dyn postgres_types::ToSql + Sync); 4] = [&5i64, &"x", &2.0f64, &"note"];
    assert_eq!(
        c.copy_in(&table("t"), &[], &[&all[..]], None)
            .await
            .unwrap(),
        1
    );

    // Columns that are not plain identifiers, a generated and a dropped column; a schema and a
    // table name that need quoting come from the catalog.
    c.batch_execute(
        "CREATE TABLE \"Odd Table\" (id bigint, \"Order Date\" text, \"x\"\"y\" text, gone int, \
         doubled bigint GENERATED ALWAYS AS (id * 2) STORED); ALTER TABLE \"Odd Table\" DROP COLUMN gone",
        None,
    )
    .await
    .unwrap();
    let odd = pgdbm_core::TableName::from_catalog(Some("public"), "Odd Table").unwrap();
    let r: [&(dyn postgres_types::ToSql + Sync); 3] = [&7i64, &"2024-01-01", &"q"];
    assert_eq!(c.copy_in(&odd, &[], &[&r[..]], None).await.unwrap(), 1);
    let r2: [&(dyn postgres_types::ToSql + Sync); 2] = [&8i64, &"2024-02-02"];
    assert_eq!(
        c.copy_in(&odd, &["id", "Order Date"], &[&r2[..]], None)
            .await
            .unwrap(),
        1
    );
    let row = c
        .query_opt(
            "SELECT string_agg(id || '/' || \"Order Date\" || '/' || coalesce(\"x\"\"y\", '-') || '/' || doubled, ',' ORDER BY id) FROM \"Odd Table\"",
            &[],
            None,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.get_at::<String>(0).unwrap(),
        "7/2024-01-01/q/14,8/2024-02-02/-/16"
    );
    // A non-plain name that is not a column of the table never reaches SQL.
    assert!(matches!(
        c.copy_in(&odd, &["Order Date\"); DROP TABLE t; --"], &[], None)
            .await,
        Err(Error::Schema { .. })
    ));
    // The connection is still usable.
    assert_eq!(
        c.query("SELECT 1", &[], None).await.unwrap()[0]
            .get_at::<i32>(0)
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn settings_and_init_commands_apply() {
    let mut config = support::database("t_settings").await;
    config.schema = Some("app".to_string());
    config
        .server_settings
        .insert("application_name".to_string(), "my app\\x".to_string());
    config.init_commands = vec!["CREATE TEMP TABLE init_ran (x int)".to_string()];
    let mut c = PgConnection::connect(&config).await.unwrap();
    let row = c
        .query_opt(
            "SELECT current_setting('search_path'), current_setting('application_name'), \
             current_setting('statement_timeout'), current_setting('jit')",
            &[],
            None,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get_at::<String>(0).unwrap(), "\"app\", public");
    assert_eq!(row.get_at::<String>(1).unwrap(), "my app\\x");
    assert_eq!(row.get_at::<String>(2).unwrap(), "1min");
    assert_eq!(row.get_at::<String>(3).unwrap(), "off");
    c.query("SELECT * FROM init_ran", &[], None).await.unwrap();

    // A failing init command is a connection error, not retried.
    config.init_commands = vec!["SELECT no_such_function()".to_string()];
    config.retry_attempts = 3;
    let e = PgConnection::connect(&config).await.unwrap_err();
    match e {
        Error::Connection {
            attempts, message, ..
        } => {
            assert_eq!(attempts, 1);
            assert!(message.contains("init_commands[0]"), "{message}");
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn wrong_password_fails_at_once_without_the_password() {
    support::server();
    let mut config = support::config("postgres");
    config.password = Some("definitely-wrong-pw".to_string());
    config.retry_attempts = 5;
    config.retry_delay = Duration::from_secs(5);
    // Not retried: `attempts` below is 1 (no timing assertion needed).
    let e = PgConnection::connect(&config).await.unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("definitely-wrong-pw"), "{shown}");
    match &e {
        Error::Connection {
            attempts,
            message,
            host,
            database,
            ..
        } => {
            assert_eq!(*attempts, 1);
            assert_eq!(host, "127.0.0.1");
            assert_eq!(database, "postgres");
            assert!(message.contains("28P01"), "{message}");
        }
        other => panic!("{other}"),
    }
    // An unknown database is not retried either.
    let mut config = support::config("no_such_db");
    config.retry_attempts = 5;
    config.retry_delay = Duration::from_secs(5);
    let e = PgConnection::connect(&config).await.unwrap_err();
    assert!(e.to_string().contains("3D000"), "{e}");
}

#[tokio::test]
async fn unreachable_host_is_retried_then_reports_attempts() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = pgdbm_core::Config::default();
    config.host = "127.0.0.1".to_string();
    config.port = port;
    config.password = Some("secret-pw".to_string());
    config.ssl_mode = pgdbm_core::SslMode::Disable;
    config.retry_attempts = 3;
    config.retry_delay = Duration::from_millis(20);
    let e = PgConnection::connect(&config).await.unwrap_err();
    match &e {
        Error::Connection {
            attempts,
            port: p,
            host,
            ..
        } => {
            assert_eq!(*attempts, 3);
            assert_eq!(*p, port);
            assert_eq!(host, "127.0.0.1");
        }
        other => panic!("{other}"),
    }
    assert!(!format!("{e} {e:?}").contains("secret-pw"));
    let e = PgConnection::connect_once(&config).await.unwrap_err();
    assert!(matches!(e, Error::Connection { attempts: 1, .. }), "{e}");
}

#[tokio::test]
async fn connect_timeout_bounds_a_server_that_never_answers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts TCP connections (kernel backlog) but never says anything.
    let mut config = pgdbm_core::Config::default();
    config.host = "127.0.0.1".to_string();
    config.port = port;
    config.ssl_mode = pgdbm_core::SslMode::Disable;
    config.retry_attempts = 1;
    config.connect_timeout = Duration::from_millis(500);
    let e = PgConnection::connect(&config).await.unwrap_err();
    assert!(e.to_string().contains("connect_timeout"), "{e}");
    drop(listener);
}

#[tokio::test]
async fn discard_marks_broken() {
    let mut c = support::connect("t_discard").await;
    assert!(!c.is_broken());
    c.discard();
    assert!(c.is_broken() && c.is_closed());
    let e = c.query("SELECT 1", &[], None).await.unwrap_err();
    assert_eq!(kind(&e), QueryErrorKind::Connection);
}

async fn count(c: &mut PgConnection) -> i64 {
    c.query_opt("SELECT count(*) FROM t", &[], None)
        .await
        .unwrap()
        .unwrap()
        .get_at::<i64>(0)
        .unwrap()
}

#[tokio::test]
async fn parameters_shown_only_when_opted_in() {
    let mut config = support::database("t_logparams").await;
    config.log_parameters = true;
    let mut c = PgConnection::connect(&config).await.unwrap();
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)", None)
        .await
        .unwrap();
    c.execute("INSERT INTO t VALUES ($1)", &[&41i32], None)
        .await
        .unwrap();
    let e = c
        .execute("INSERT INTO t VALUES ($1)", &[&41i32], None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("$1=41"), "{e}");
    let e = c
        .execute_many("INSERT INTO t VALUES ($1)", &[&[&1i32], &[&41i32]], None)
        .await
        .unwrap_err();
    assert_eq!(e.as_query().unwrap().row, Some(1));
    assert!(e.to_string().contains("$1=41"), "{e}");
}
