#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `execute_many` through the wire shim (one Sync per chunk) against a real PostgreSQL server:
//! all rows or none, the failing row named, the connection in sync afterwards.

mod support;

use std::time::Duration;

use pgdbm_core::{Connection, Error, QueryErrorKind, Row};
use pgdbm_tokio_postgres::PgConnection;
use postgres_types::ToSql;

type P<'a> = &'a (dyn ToSql + Sync);

const INSERT: &str = "INSERT INTO t VALUES ($1, $2)";

async fn setup(name: &str) -> PgConnection {
    let mut c = support::connect(name).await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)", None)
        .await
        .unwrap();
    c
}

async fn count(c: &mut PgConnection) -> i64 {
    c.query_opt("SELECT count(*) FROM t", &[], None)
        .await
        .unwrap()
        .unwrap()
        .get_at::<i64>(0)
        .unwrap()
}

async fn sum(c: &mut PgConnection) -> i64 {
    c.query_opt("SELECT coalesce(sum(id), 0)::int8 FROM t", &[], None)
        .await
        .unwrap()
        .unwrap()
        .get_at::<i64>(0)
        .unwrap()
}

/// How [`send_ids`] sends its rows.
enum Via<'a> {
    ExecuteMany,
    Copy(&'a pgdbm_core::TableName),
}

/// Sends `(id, 'v<id>')` for each id with one `execute_many` or one COPY.
async fn send_ids(c: &mut PgConnection, ids: &[i32], via: Via<'_>) -> Result<u64, Error> {
    let vals: Vec<String> = ids.iter().map(|i| format!("v{i}")).collect();
    let rows: Vec<[P<'_>; 2]> = ids
        .iter()
        .zip(&vals)
        .map(|(i, v)| [i as P<'_>, v as P<'_>])
        .collect();
    let refs: Vec<&[P<'_>]> = rows.iter().map(|r| &r[..]).collect();
    match via {
        Via::ExecuteMany => c.execute_many(INSERT, &refs, None).await,
        Via::Copy(table) => c.copy_in(table, &["id", "v"], &refs, None).await,
    }
}

/// Inserts `(id, 'v<id>')` for each id with one `execute_many`.
async fn insert_ids(c: &mut PgConnection, ids: &[i32]) -> Result<u64, Error> {
    send_ids(c, ids, Via::ExecuteMany).await
}

async fn still_usable(c: &mut PgConnection) {
    assert!(!c.is_broken());
    let r = c
        .query_opt("SELECT $1::int + 1", &[&41i32], None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.get_at::<i32>(0).unwrap(), 42);
}

#[tokio::test]
async fn batches_over_one_chunk_count_every_row_and_name_rows_near_the_boundary() {
    // 16 384 rows per chunk: 40 000 rows are three chunks.
    let mut c = setup("em_chunks").await;
    let ids: Vec<i32> = (0..40_000).collect();
    assert_eq!(insert_ids(&mut c, &ids).await.unwrap(), 40_000);
    assert_eq!(count(&mut c).await, 40_000);
    assert_eq!(sum(&mut c).await, (0..40_000i64).sum::<i64>());
    // Rows at the end of the first chunk, the start of the second and just after it.
    for bad in [16_383usize, 16_384, 16_385, 32_769] {
        let ids: Vec<i32> = (0..40_000)
            .map(|i| if i as usize == bad { 7 } else { 100_000 + i })
            .collect();
        let e = insert_ids(&mut c, &ids).await.unwrap_err();
        let q = e.as_query().unwrap();
        assert_eq!(q.row, Some(bad), "{e}");
        assert_eq!(q.sqlstate.as_deref(), Some("23505"), "{e}");
        assert_eq!(count(&mut c).await, 40_000, "row {bad}");
        still_usable(&mut c).await;
    }
    // Inside the caller's transaction, a later chunk's failure keeps earlier work.
    c.begin().await.unwrap();
    c.execute("DELETE FROM t WHERE id >= 20000", &[], None)
        .await
        .unwrap();
    let ids: Vec<i32> = (50_000..70_000)
        .map(|i| if i == 66_000 { 1 } else { i })
        .collect();
    let e = insert_ids(&mut c, &ids).await.unwrap_err();
    assert_eq!(e.as_query().unwrap().row, Some(16_000), "{e}");
    assert!(c.in_transaction());
    assert_eq!(count(&mut c).await, 20_000);
    c.commit().await.unwrap();
    assert_eq!(count(&mut c).await, 20_000);
}

#[tokio::test]
async fn ten_thousand_rows_are_inserted_exactly_once() {
    let mut c = setup("em_10k").await;
    let ids: Vec<i32> = (0..10_000).collect();
    assert_eq!(insert_ids(&mut c, &ids).await.unwrap(), 10_000);
    assert_eq!(count(&mut c).await, 10_000);
    assert_eq!(sum(&mut c).await, (0..10_000i64).sum::<i64>());
    assert!(!c.needs_reset());
    assert!(!c.in_transaction());
    // A one-row batch (n = 1: its only Sync goes through).
    assert_eq!(insert_ids(&mut c, &[10_000]).await.unwrap(), 1);
    assert_eq!(count(&mut c).await, 10_001);
    still_usable(&mut c).await;
}

#[tokio::test]
async fn a_failing_row_applies_nothing_and_is_named() {
    let mut c = setup("em_fail").await;
    insert_ids(&mut c, &[-1]).await.unwrap();
    // Row `bad` of 10 000 duplicates the existing key -1: first, middle (second chunk), last.
    for bad in [0usize, 5000, 9999, 4095, 4096] {
        let ids: Vec<i32> = (0..10_000)
            .map(|i| if i as usize == bad { -1 } else { 100_000 + i })
            .collect();
        let e = insert_ids(&mut c, &ids).await.unwrap_err();
        let q = e.as_query().unwrap();
        assert_eq!(q.row, Some(bad), "{e}");
        assert_eq!(q.sqlstate.as_deref(), Some("23505"), "{e}");
        assert_eq!(q.kind, QueryErrorKind::Server, "{e}");
        assert_eq!(q.constraint.as_deref(), Some("t_pkey"), "{e}");
        assert_eq!(q.table.as_deref(), Some("t"), "{e}");
        assert!(q.detail.as_deref().unwrap_or("").contains("(-1)"), "{e}");
        assert!(q.message.contains(&format!("row {bad} of 10000")), "{e}");
        assert_eq!(count(&mut c).await, 1, "row {bad}");
        assert!(!c.in_transaction());
        still_usable(&mut c).await;
    }
    // A small batch failing at its first and last rows.
    for ids in [vec![-1, 1, 2], vec![1, 2, -1]] {
        let e = insert_ids(&mut c, &ids).await.unwrap_err();
        let bad = ids.iter().position(|i| *i == -1);
        assert_eq!(e.as_query().unwrap().row, bad, "{e}");
        assert_eq!(count(&mut c).await, 1);
    }
    // A failure that is not the first row's and not a constraint: division by zero at row 7.
    let divisors: Vec<i32> = (0..20).collect();
    let rows: Vec<[P<'_>; 1]> = divisors.iter().map(|d| [d as P<'_>]).collect();
    let refs: Vec<&[P<'_>]> = rows.iter().map(|r| &r[..]).collect();
    let e = c
        .execute_many(
            "INSERT INTO t SELECT 1000 + $1::int, 'x' WHERE 1 / ($1::int - 7) IS NOT NULL",
            &refs,
            None,
        )
        .await
        .unwrap_err();
    let q = e.as_query().unwrap();
    assert_eq!(q.row, Some(7), "{e}");
    assert_eq!(q.sqlstate.as_deref(), Some("22012"), "{e}");
    assert_eq!(count(&mut c).await, 1);
    // The connection keeps working for batches too.
    assert_eq!(insert_ids(&mut c, &[5, 6, 7]).await.unwrap(), 3);
    assert_eq!(count(&mut c).await, 4);
}

#[tokio::test]
async fn inside_a_transaction_a_failing_batch_keeps_earlier_work() {
    let mut c = setup("em_tx").await;
    c.begin().await.unwrap();
    c.execute("INSERT INTO t VALUES (-1, 'before')", &[], None)
        .await
        .unwrap();
    let ids: Vec<i32> = (0..6000).map(|i| if i == 4500 { -1 } else { i }).collect();
    let e = insert_ids(&mut c, &ids).await.unwrap_err();
    assert_eq!(e.as_query().unwrap().row, Some(4500), "{e}");
    assert!(c.in_transaction());
    // The caller's transaction is intact: its earlier row is there, new work succeeds.
    assert_eq!(count(&mut c).await, 1);
    assert_eq!(insert_ids(&mut c, &[1, 2]).await.unwrap(), 2);
    c.commit().await.unwrap();
    assert_eq!(count(&mut c).await, 3);
    assert_eq!(sum(&mut c).await, 2);
}

#[tokio::test]
async fn unencodable_rows_fail_before_anything_is_sent() {
    let mut c = setup("em_encode").await;
    let bad: Vec<Box<dyn ToSql + Sync>> = (0..6)
        .map(|i| -> Box<dyn ToSql + Sync> {
            if i == 3 {
                Box::new("not an int")
            } else {
                Box::new(30_000 + i)
            }
        })
        .collect();
    let rows: Vec<[P<'_>; 2]> = bad.iter().map(|b| [b.as_ref(), &"x" as P<'_>]).collect();
    let refs: Vec<&[P<'_>]> = rows.iter().map(|r| &r[..]).collect();
    let e = c.execute_many(INSERT, &refs, None).await.unwrap_err();
    let q = e.as_query().unwrap();
    assert_eq!(q.row, Some(3), "{e}");
    assert_eq!(q.kind, QueryErrorKind::Conversion, "{e}");
    assert!(q.message.contains("row 3 of 6"), "{e}");
    assert!(q.message.contains("nothing was sent"), "{e}");
    assert_eq!(count(&mut c).await, 0);
    assert!(!c.in_transaction());

    // A row with the wrong number of values (row 2).
    let short: Vec<&[P<'_>]> = vec![&[&1i32, &"a"], &[&2i32, &"b"], &[&3i32], &[&4i32, &"d"]];
    let e = c.execute_many(INSERT, &short, None).await.unwrap_err();
    let q = e.as_query().unwrap();
    assert_eq!(q.row, Some(2), "{e}");
    assert!(q.message.contains("expected 2 parameters but got 1"), "{e}");
    assert_eq!(count(&mut c).await, 0);
    still_usable(&mut c).await;
    // Inside a transaction the failure leaves the transaction usable.
    c.begin().await.unwrap();
    c.execute_many(INSERT, &refs, None).await.unwrap_err();
    assert_eq!(insert_ids(&mut c, &[9]).await.unwrap(), 1);
    c.commit().await.unwrap();
    assert_eq!(count(&mut c).await, 1);
}

#[tokio::test]
async fn statements_returning_rows_work() {
    let mut c = setup("em_rows").await;
    let ids: Vec<i32> = (0..5000).collect();
    let vals: Vec<String> = ids.iter().map(|i| format!("v{i}")).collect();
    let rows: Vec<[P<'_>; 2]> = ids
        .iter()
        .zip(&vals)
        .map(|(i, v)| [i as P<'_>, v as P<'_>])
        .collect();
    let refs: Vec<&[P<'_>]> = rows.iter().map(|r| &r[..]).collect();
    let n = c
        .execute_many("INSERT INTO t VALUES ($1, $2) RETURNING id", &refs, None)
        .await
        .unwrap();
    assert_eq!(n, 5000);
    assert_eq!(count(&mut c).await, 5000);

    let one: Vec<[P<'_>; 1]> = ids.iter().map(|i| [i as P<'_>]).collect();
    let one_refs: Vec<&[P<'_>]> = one.iter().map(|r| &r[..]).collect();
    let n = c
        .execute_many("SELECT $1::int", &one_refs, None)
        .await
        .unwrap();
    assert_eq!(n, 5000);
    // Rows that return nothing (zero-row SELECT) and several rows each.
    let n = c
        .execute_many(
            "SELECT id FROM t WHERE id < $1 AND id > 4990",
            &one_refs,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        n,
        (0..5000i64)
            .map(|i| (i - 4991).clamp(0, 8) as u64)
            .sum::<u64>()
    );
    // A failure after some DataRows: row 3000 divides by zero.
    let n_rows: Vec<i32> = (0..4000).map(|i| if i == 3000 { 0 } else { 1 }).collect();
    let nr: Vec<[P<'_>; 1]> = n_rows.iter().map(|i| [i as P<'_>]).collect();
    let nr_refs: Vec<&[P<'_>]> = nr.iter().map(|r| &r[..]).collect();
    let e = c
        .execute_many(
            "SELECT 1 / $1::int FROM generate_series(1, 2)",
            &nr_refs,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.as_query().unwrap().row, Some(3000), "{e}");
    still_usable(&mut c).await;
}

#[tokio::test]
async fn batches_interleaved_with_queries_and_closed_statements_stay_in_sync() {
    for cache_size in [2usize, 0] {
        let mut config = support::database(&format!("em_sync_{cache_size}")).await;
        config.statement_cache_size = cache_size;
        let mut c = PgConnection::connect(&config).await.unwrap();
        c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)", None)
            .await
            .unwrap();
        let mut expected = 0i64;
        for round in 0..12i32 {
            // Four distinct statements rotate through a cache of two: every round evicts (and
            // closes) statements, so Close messages are queued around the batches.
            let base = round * 1000;
            let ids: Vec<i32> = (base..base + 300).collect();
            let sql = match round % 3 {
                0 => INSERT.to_string(),
                1 => "INSERT INTO t (id, v) VALUES ($1, $2)".to_string(),
                _ => "INSERT INTO t (v, id) SELECT $2, $1".to_string(),
            };
            let vals: Vec<String> = ids.iter().map(|i| format!("v{i}")).collect();
            let rows: Vec<[P<'_>; 2]> = ids
                .iter()
                .zip(&vals)
                .map(|(i, v)| [i as P<'_>, v as P<'_>])
                .collect();
            let refs: Vec<&[P<'_>]> = rows.iter().map(|r| &r[..]).collect();
            assert_eq!(c.execute_many(&sql, &refs, None).await.unwrap(), 300);
            expected += 300;
            let r = c
                .query_opt("SELECT count(*) FROM t WHERE id >= $1", &[&base], None)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(r.get_at::<i64>(0).unwrap(), 300);
            let r = c
                .query(
                    "SELECT v FROM t WHERE id = $1 OR id = $2 ORDER BY id",
                    &[&base, &(base + 299)],
                    None,
                )
                .await
                .unwrap();
            assert_eq!(r.len(), 2);
            assert_eq!(
                r[1].get_at::<String>(0).unwrap(),
                format!("v{}", base + 299)
            );
            // A failing batch in between (duplicate of this round's first id, at row 150).
            let dup: Vec<i32> = (0..200)
                .map(|i| if i == 150 { base } else { base + 500 + i })
                .collect();
            let e = insert_ids(&mut c, &dup).await.unwrap_err();
            assert_eq!(e.as_query().unwrap().row, Some(150), "round {round}: {e}");
            assert_eq!(count(&mut c).await, expected, "round {round}");
        }
        still_usable(&mut c).await;
    }
}

#[tokio::test]
async fn a_timeout_in_the_middle_of_a_batch_cancels_it() {
    let mut c = setup("em_timeout").await;
    let rows: Vec<&[P<'_>]> = (0..400).map(|_| &[] as &[P<'_>]).collect();
    let outcome = tokio::time::timeout(
        Duration::from_secs(15),
        c.execute_many(
            "SELECT pg_sleep(0.01)",
            &rows,
            Some(Duration::from_millis(300)),
        ),
    )
    .await
    .expect("execute_many hung after its timeout");
    let e = outcome.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let q = e.as_query().unwrap();
    assert_eq!(q.sqlstate.as_deref(), Some("57014"), "{e}");
    // The cancelled row is named; the server stopped there (no row after it ran).
    assert!(q.row.is_some_and(|r| r > 0 && r < 400), "{e}");
    // Cancelling ends the batch at once (the later rows get the shim's answers): the
    // connection is usable after a reset, not discarded, and never hung.
    assert!(!c.is_broken(), "{e}");
    {
        tokio::time::timeout(Duration::from_secs(10), c.reset(Duration::from_secs(5)))
            .await
            .expect("reset hung")
            .unwrap();
        still_usable(&mut c).await;
        assert_eq!(insert_ids(&mut c, &[1, 2, 3]).await.unwrap(), 3);
        assert_eq!(count(&mut c).await, 3);
    }
}

#[tokio::test]
async fn unix_socket_connections_batch_and_cancel() {
    let mut config = support::database("em_unix").await;
    config.host = support::server().dir.display().to_string();
    let mut c = PgConnection::connect(&config).await.unwrap();
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)", None)
        .await
        .unwrap();
    let ids: Vec<i32> = (0..5000).collect();
    assert_eq!(insert_ids(&mut c, &ids).await.unwrap(), 5000);
    let e = c
        .query("SELECT pg_sleep(30)", &[], Some(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(!c.is_broken());
    c.reset(Duration::from_secs(5)).await.unwrap();
    assert_eq!(count(&mut c).await, 5000);
}

#[tokio::test]
async fn a_cancelled_execute_many_never_leaves_a_stale_transaction() {
    let config = support::database("em_cancel").await;
    let mut c = PgConnection::connect(&config).await.unwrap();
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)", None)
        .await
        .unwrap();
    let mut broken = 0;
    for (round, micros) in [0u64, 20, 100, 300, 1000, 3000, 10_000, 30_000]
        .into_iter()
        .enumerate()
    {
        let base = round as i32 * 100_000;
        let ids: Vec<i32> = (base..base + 20_000).collect();
        let vals: Vec<String> = ids.iter().map(|i| format!("v{i}")).collect();
        let rows: Vec<[P<'_>; 2]> = ids
            .iter()
            .zip(&vals)
            .map(|(i, v)| [i as P<'_>, v as P<'_>])
            .collect();
        let refs: Vec<&[P<'_>]> = rows.iter().map(|r| &r[..]).collect();
        // The caller gives up (drops the future) at some point of the pipeline.
        let _ = tokio::time::timeout(
            Duration::from_micros(micros),
            c.execute_many(INSERT, &refs, None),
        )
        .await;
        if c.is_broken() {
            broken += 1;
            c = PgConnection::connect(&config).await.unwrap();
        } else {
            // Not broken: whatever was queued completes; the connection is then idle, not
            // "idle in transaction" (no stale BEGIN left behind), within a bound.
            let pid = tokio::time::timeout(
                Duration::from_secs(10),
                c.query_opt("SELECT pg_backend_pid()", &[], None),
            )
            .await
            .expect("hung after a cancelled execute_many")
            .unwrap()
            .unwrap()
            .get_at::<i32>(0)
            .unwrap();
            let mut observer = PgConnection::connect(&config).await.unwrap();
            let state = observer
                .query_opt(
                    "SELECT state FROM pg_stat_activity WHERE pid = $1",
                    &[&pid],
                    None,
                )
                .await
                .unwrap()
                .unwrap()
                .get_at::<String>(0)
                .unwrap();
            assert_eq!(state, "idle", "round {round}: stale transaction");
        }
        // All rows of the round or none.
        let mut fresh = PgConnection::connect(&config).await.unwrap();
        let n = fresh
            .query_opt(
                "SELECT count(*) FROM t WHERE id >= $1 AND id < $2",
                &[&base, &(base + 100_000)],
                None,
            )
            .await
            .unwrap()
            .unwrap()
            .get_at::<i64>(0)
            .unwrap();
        assert!(n == 0 || n == 20_000, "round {round}: {n} rows");
    }
    // Dropping the future right away (0 µs) happens before anything is queued or while the
    // BEGIN is awaited; some rounds are expected to poison the connection, but not all.
    assert!(broken < 8, "every round broke the connection");
}

/// The shim carries `execute_many`'s one-Sync batches and must recognise the pinned
/// tokio-postgres's request pattern: if a driver upgrade changed it, `execute_many` would still
/// be correct (it falls back to one request per row and logs once) but this test fails, so the
/// change is caught before release.
#[tokio::test]
async fn the_shim_recognises_the_pinned_driver() {
    let mut c = setup("shim_pattern").await;
    let ids: Vec<i32> = (1..=100).collect();
    assert_eq!(insert_ids(&mut c, &ids).await.unwrap(), 100);
    assert!(
        pgdbm_tokio_postgres::batch_path_available(),
        "the wire shim did not recognise tokio-postgres's Bind/Execute/Sync pattern"
    );
    assert_eq!(count(&mut c).await, 100);
    still_usable(&mut c).await;
}

/// Runs one small batch on a scratch table: until the shim has carried a chunk in this process,
/// `execute_many` wraps a chunk in `BEGIN`/`COMMIT`; after it, one chunk outside a transaction
/// is one implicit transaction.
async fn prove_the_shim(c: &mut PgConnection) {
    c.batch_execute("CREATE TEMP TABLE prove (id int)", None)
        .await
        .unwrap();
    let rows: Vec<[P<'_>; 1]> = [1i32, 2, 3].iter().map(|i| [i as P<'_>]).collect();
    let refs: Vec<&[P<'_>]> = rows.iter().map(|r| &r[..]).collect();
    let n = c
        .execute_many("INSERT INTO prove VALUES ($1)", &refs, None)
        .await
        .unwrap();
    assert_eq!(n, 3);
}

/// The server's view that no transaction is open: `SAVEPOINT` answers 25P01.
async fn no_transaction_open(c: &mut PgConnection) {
    let e = c.batch_execute("SAVEPOINT probe", None).await.unwrap_err();
    assert_eq!(
        e.as_query().and_then(|q| q.sqlstate.as_deref()),
        Some("25P01"),
        "{e}"
    );
}

#[tokio::test]
async fn an_implicit_transaction_applies_nothing_when_a_row_fails() {
    let mut c = setup("em_implicit_row").await;
    prove_the_shim(&mut c).await;
    assert_eq!(insert_ids(&mut c, &[1, 2, 3]).await.unwrap(), 3);
    // Row 4 (0-based) repeats id 2: no row of the batch stays, the error names row 4.
    let e = insert_ids(&mut c, &[10, 11, 12, 13, 2, 14])
        .await
        .unwrap_err();
    let q = e.as_query().unwrap();
    assert_eq!(q.row, Some(4), "{e}");
    assert_eq!(q.sqlstate.as_deref(), Some("23505"), "{e}");
    assert_eq!(count(&mut c).await, 3);
    no_transaction_open(&mut c).await;
    still_usable(&mut c).await;
}

/// A deferred constraint fails at the commit, after every row's answer: in an implicit
/// transaction that is the chunk's Sync. The error is the commit's (no row named, since none
/// failed on its own), nothing is applied and no transaction is left open.
#[tokio::test]
async fn a_deferred_constraint_failing_at_the_implicit_commit_names_no_row() {
    let mut c = support::connect("em_deferred").await;
    c.batch_execute(
        "CREATE TABLE t (id int NOT NULL, v text NOT NULL, \
         CONSTRAINT t_id_key UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)",
        None,
    )
    .await
    .unwrap();
    prove_the_shim(&mut c).await;
    let e = insert_ids(&mut c, &[1, 2, 1, 3]).await.unwrap_err();
    let q = e.as_query().unwrap();
    assert_eq!(q.sqlstate.as_deref(), Some("23505"), "{e}");
    assert_eq!(q.constraint.as_deref(), Some("t_id_key"), "{e}");
    assert_eq!(q.row, None, "{e}");
    assert_eq!(count(&mut c).await, 0);
    no_transaction_open(&mut c).await;
    assert_eq!(insert_ids(&mut c, &[1, 2, 3]).await.unwrap(), 3);
    still_usable(&mut c).await;
}

/// A COPY FROM STDIN is owed one ReadyForQuery for its two Syncs (the server ignores the one
/// sent with its Execute): batches after successful and failing copies still end on their own
/// ReadyForQuery, all rows or none.
#[tokio::test]
async fn batches_after_copies_stay_in_sync() {
    let mut c = setup("em_after_copy").await;
    prove_the_shim(&mut c).await;
    let table = pgdbm_core::TableName::parse("public.t").unwrap();
    let mut expected = 0i64;
    for round in 0..4i32 {
        let base = round * 1000;
        let ids: Vec<i32> = (base..base + 50).collect();
        assert_eq!(send_ids(&mut c, &ids, Via::Copy(&table)).await.unwrap(), 50);
        expected += 50;
        // A copy the server refuses in copy-in mode (a duplicate key).
        send_ids(&mut c, &[base], Via::Copy(&table))
            .await
            .unwrap_err();
        let batch: Vec<i32> = (base + 500..base + 800).collect();
        assert_eq!(
            insert_ids(&mut c, &batch).await.unwrap(),
            300,
            "round {round}"
        );
        expected += 300;
        let failing: Vec<i32> = (base + 900..base + 950).chain([base]).collect();
        let e = insert_ids(&mut c, &failing).await.unwrap_err();
        assert_eq!(e.as_query().unwrap().row, Some(50), "round {round}: {e}");
        assert_eq!(count(&mut c).await, expected, "round {round}");
        no_transaction_open(&mut c).await;
    }
    still_usable(&mut c).await;
}
