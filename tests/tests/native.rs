//! The Rust-native surface against a real PostgreSQL, each body run for deadpool and bb8: the
//! `Executor` trait on every handle, closure transactions (commit, rollback on error and panic,
//! retries on serialization failures), transaction options, and typed server errors.

use std::sync::atomic::{AtomicU32, Ordering};

use pgdbm::{Database, Executor, IsolationLevel, Pool, Result, Row, SqlState, TransactionOptions};
use pgdbm_integration_tests::{both_backends, fresh_config};

/// The database under test and a second manager on the same database (other connections), to
/// look at committed state from outside.
async fn pools<P: Pool>(prefix: &str) -> (Database<P>, Database<P>) {
    let config = fresh_config(prefix).unwrap();
    let db = Database::<P>::connect(config.clone()).await.unwrap();
    let obs = Database::<P>::connect(config).await.unwrap();
    (db, obs)
}

/// One generic function: runs on anything that is an `Executor`.
async fn insert_and_count(q: &mut impl Executor, id: i32) -> Result<i64> {
    q.execute("INSERT INTO {{tables.items}} (id) VALUES ($1)", &[&id])
        .await?;
    let row = q
        .fetch_optional(
            "SELECT count(*) AS n, max(id) AS top FROM {{tables.items}}",
            &[],
        )
        .await?
        .expect("an aggregate returns one row");
    // Columns by value, by name or position.
    let top: i32 = row.get(1);
    assert!(top >= id);
    row.try_get("n")
}

async fn count<P: Pool>(obs: &Database<P>) -> i64 {
    obs.fetch_value("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .unwrap()
}

async fn one_function_on_every_handle<P: Pool>() {
    let (mut db, obs) = pools::<P>("native_exec").await;
    db.execute("CREATE TABLE items (id INT PRIMARY KEY)", &[])
        .await
        .unwrap();

    assert_eq!(insert_and_count(&mut db, 1).await.unwrap(), 1);
    assert_eq!(insert_and_count(&mut &db, 2).await.unwrap(), 2);

    let mut conn = db.acquire().await.unwrap();
    assert_eq!(insert_and_count(&mut conn, 3).await.unwrap(), 3);
    drop(conn);

    let mut tx = db.transaction().await.unwrap();
    assert_eq!(insert_and_count(&mut tx, 4).await.unwrap(), 4);
    {
        let mut sp = tx.savepoint().await.unwrap();
        assert_eq!(insert_and_count(&mut sp, 5).await.unwrap(), 5);
        sp.rollback().await.unwrap();
    }
    {
        let mut sp = tx.savepoint().await.unwrap();
        assert_eq!(insert_and_count(&mut sp, 6).await.unwrap(), 5);
        sp.commit().await.unwrap();
    }
    // Not committed yet: invisible from another connection.
    assert_eq!(count(&obs).await, 3);
    tx.commit().await.unwrap();
    assert_eq!(count(&obs).await, 5);

    // The generic function's future is Send: it can be spawned.
    let mut spawned = db.clone();
    let n = tokio::spawn(async move { insert_and_count(&mut spawned, 7).await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 6);

    // Row access errors, not panics, through try_get.
    let row = db
        .fetch_one("SELECT 1::int AS a", &[])
        .await
        .unwrap()
        .unwrap();
    assert!(row.try_get::<_, i32>("missing").is_err());
    assert!(row.try_get::<_, i32>(5).is_err());
    assert!(row.try_get::<_, String>(0).is_err());
    assert_eq!(row.get::<_, i32>("a"), 1);
    db.close().await;
    obs.close().await;
}

both_backends!(executor, one_function_on_every_handle);

async fn closure_transactions_commit_or_roll_back<P: Pool>() {
    let (db, obs) = pools::<P>("native_closure").await;
    db.execute("CREATE TABLE items (id INT PRIMARY KEY)", &[])
        .await
        .unwrap();

    // Ok commits and gives the value back.
    let v = db
        .transaction_with(async |tx| {
            tx.execute("INSERT INTO items VALUES (1)", &[]).await?;
            Ok(41 + 1)
        })
        .await
        .unwrap();
    assert_eq!(v, 42);
    assert_eq!(count(&obs).await, 1);

    // Err rolls back and returns the closure's error.
    let err = db
        .transaction_with(async |tx| -> Result<()> {
            tx.execute("INSERT INTO items VALUES (2)", &[]).await?;
            Err(pgdbm::Error::transaction("the closure said no"))
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the closure said no"), "{err}");
    assert_eq!(count(&obs).await, 1);

    // A panic rolls back (and goes on to the caller): the row is not there and its lock is
    // free for another session.
    let panicking = db.clone();
    let joined = tokio::spawn(async move {
        panicking
            .transaction_with(async |tx| -> Result<()> {
                tx.execute("INSERT INTO items VALUES (3)", &[]).await?;
                panic!("boom inside the transaction");
            })
            .await
    })
    .await;
    assert!(joined.unwrap_err().is_panic());
    assert_eq!(count(&obs).await, 1);
    obs.transaction_with(async |tx| {
        tx.execute("SET LOCAL lock_timeout = '10s'", &[]).await?;
        tx.execute("INSERT INTO items VALUES (3)", &[]).await
    })
    .await
    .expect("the panicked transaction's row lock is released");
    assert_eq!(count(&obs).await, 2);

    // Options: isolation level and read-only reach the server.
    let level: Option<String> = db
        .transaction_with_options(&TransactionOptions::serializable(), async |tx| {
            tx.fetch_value("SHOW transaction_isolation", &[]).await
        })
        .await
        .unwrap();
    assert_eq!(level.as_deref(), Some("serializable"));
    let ro = TransactionOptions::default()
        .isolation(IsolationLevel::RepeatableRead)
        .read_only(true);
    let err = db
        .transaction_with_options(&ro, async |tx| {
            tx.execute("INSERT INTO items VALUES (9)", &[]).await
        })
        .await
        .unwrap_err();
    assert_eq!(err.sql_state(), Some(SqlState::READ_ONLY_SQL_TRANSACTION));
    let mut tx = db.begin_with(&ro.deferrable(true)).await.unwrap();
    let ro_setting: Option<String> = tx
        .fetch_value("SHOW transaction_read_only", &[])
        .await
        .unwrap();
    assert_eq!(ro_setting.as_deref(), Some("on"));
    tx.rollback().await.unwrap();
    db.close().await;
    obs.close().await;
}

both_backends!(closure, closure_transactions_commit_or_roll_back);

async fn serializable_conflicts_are_retried<P: Pool>() {
    let (db, obs) = pools::<P>("native_retry").await;
    db.execute("CREATE TABLE items (id INT PRIMARY KEY, total BIGINT)", &[])
        .await
        .unwrap();
    db.execute("INSERT INTO items VALUES (0, 0)", &[])
        .await
        .unwrap();

    // Write skew: each transaction reads the whole table, then inserts a row derived from it.
    // Both read before either writes (the barrier, first attempt only), so SERIALIZABLE must
    // abort one of them with 40001; the retrying form runs it again and both succeed.
    let barrier = tokio::sync::Barrier::new(2);
    let runs = [AtomicU32::new(0), AtomicU32::new(0)];
    let options = TransactionOptions::serializable();
    let work = |id: i32| {
        let (barrier, runs, db, options) = (&barrier, &runs, &db, &options);
        async move {
            db.transaction_retrying(options, async |tx| {
                let run = runs[id as usize - 1].fetch_add(1, Ordering::SeqCst) + 1;
                let total: Option<i64> = tx
                    .fetch_value("SELECT sum(total)::bigint FROM items", &[])
                    .await?;
                if run == 1 {
                    barrier.wait().await;
                }
                tx.execute(
                    "INSERT INTO items VALUES ($1, $2)",
                    &[&id, &(total.unwrap_or(0) + 1)],
                )
                .await?;
                Ok(id)
            })
            .await
        }
    };
    let (a, b) = tokio::join!(work(1), work(2));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a.value, b.value), (1, 2));
    // The attempt counts are what the closures saw, and one of them needed a retry.
    assert_eq!(a.attempts, runs[0].load(Ordering::SeqCst));
    assert_eq!(b.attempts, runs[1].load(Ordering::SeqCst));
    assert!(a.attempts.max(b.attempts) > 1, "{a:?} {b:?}");
    assert_eq!(a.attempts.min(b.attempts), 1, "{a:?} {b:?}");
    // Serial outcome: the retried one saw the other's row.
    let totals: Vec<i64> = obs
        .fetch_all("SELECT total FROM items WHERE id > 0 ORDER BY total", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(totals, vec![1, 2]);

    // A non-retryable error is returned at once, after one run.
    let runs = AtomicU32::new(0);
    let err = db
        .transaction_retrying(&options, async |tx| {
            runs.fetch_add(1, Ordering::SeqCst);
            tx.execute("INSERT INTO items VALUES (1, 0)", &[]).await
        })
        .await
        .unwrap_err();
    assert!(err.is_unique_violation(), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // Always failing with 40001: gives up after the schedule's attempts, saying so.
    let runs = AtomicU32::new(0);
    let three = options.clone().retry(pgdbm::core::retry::RetrySchedule {
        attempts: 3,
        ..TransactionOptions::DEFAULT_RETRY
    });
    let err = db
        .transaction_retrying(&three, async |tx| -> Result<()> {
            runs.fetch_add(1, Ordering::SeqCst);
            tx.batch_execute(
                "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$",
            )
            .await
        })
        .await
        .unwrap_err();
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert!(err.is_serialization_failure(), "{err}");
    assert!(err.to_string().contains("after 3 attempt"), "{err}");
    db.close().await;
    obs.close().await;
}

both_backends!(retrying, serializable_conflicts_are_retried);

async fn server_errors_are_typed<P: Pool>() {
    let (db, obs) = pools::<P>("native_errors").await;
    db.batch_execute(
        "CREATE TABLE parent (id INT PRIMARY KEY); \
         CREATE TABLE child (id INT PRIMARY KEY, parent INT REFERENCES parent (id), \
                             qty INT NOT NULL CONSTRAINT qty_positive CHECK (qty > 0)); \
         INSERT INTO parent VALUES (1); INSERT INTO child VALUES (1, 1, 1);",
    )
    .await
    .unwrap();

    let unique = db
        .execute("INSERT INTO child VALUES (1, 1, 1)", &[])
        .await
        .unwrap_err();
    assert!(unique.is_unique_violation(), "{unique}");
    assert_eq!(unique.sql_state(), Some(SqlState::UNIQUE_VIOLATION));
    assert!(!unique.is_retryable());
    assert!(!unique.is_foreign_key_violation() && !unique.is_serialization_failure());
    assert_eq!(unique.constraint(), Some("child_pkey"));
    assert_eq!(unique.table(), Some("child"));
    assert_eq!(unique.table_schema(), Some("public"));

    let fk = db
        .execute("INSERT INTO child VALUES (2, 99, 1)", &[])
        .await
        .unwrap_err();
    assert!(fk.is_foreign_key_violation(), "{fk}");
    assert_eq!(fk.constraint(), Some("child_parent_fkey"));

    let check = db
        .execute("INSERT INTO child VALUES (2, 1, 0)", &[])
        .await
        .unwrap_err();
    assert!(check.is_check_violation(), "{check}");
    assert_eq!(check.constraint(), Some("qty_positive"));

    let not_null = db
        .execute("INSERT INTO child (id, parent) VALUES (2, 1)", &[])
        .await
        .unwrap_err();
    assert!(not_null.is_not_null_violation(), "{not_null}");
    assert_eq!(not_null.column(), Some("qty"));
    assert!(!not_null.is_retryable());

    // A real deadlock: two transactions lock two rows in opposite order.
    db.execute("INSERT INTO parent VALUES (2)", &[])
        .await
        .unwrap();
    let mut t1 = db.transaction().await.unwrap();
    let mut t2 = obs.transaction().await.unwrap();
    t1.execute("UPDATE parent SET id = id WHERE id = 1", &[])
        .await
        .unwrap();
    t2.execute("UPDATE parent SET id = id WHERE id = 2", &[])
        .await
        .unwrap();
    let (r1, r2) = tokio::join!(
        t1.execute("UPDATE parent SET id = id WHERE id = 2", &[]),
        t2.execute("UPDATE parent SET id = id WHERE id = 1", &[]),
    );
    let deadlock = match (r1, r2) {
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => e,
        other => panic!("expected exactly one deadlock victim, got {other:?}"),
    };
    assert!(
        deadlock.is_deadlock() && deadlock.is_retryable(),
        "{deadlock}"
    );
    t1.rollback().await.unwrap();
    t2.rollback().await.unwrap();
    db.close().await;
    obs.close().await;
}

both_backends!(errors, server_errors_are_typed);
