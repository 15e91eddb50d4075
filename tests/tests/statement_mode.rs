//! `StatementMode::Unnamed` on a direct connection, where the server session is stable and so
//! can be asked what it holds: every kind of statement works, and afterwards the session has no
//! named prepared statement (`pg_prepared_statements` is empty). The startup settings hold in
//! transactions (as `SET LOCAL`), even before a `SET TRANSACTION`.

use futures_util::TryStreamExt;
use pgdbm::Row;
use pgdbm::{
    CopyFormat, CopySource, Database, IsolationLevel, Pool, StatementMode, TransactionOptions,
};
use pgdbm_integration_tests::{both_backends, fresh_config};

async fn unnamed_mode_leaves_no_prepared_statement<P: Pool>() {
    let mut config = fresh_config("stmt_unnamed").unwrap();
    config.statement_mode = StatementMode::Unnamed;
    config.min_connections = 1;
    config.max_connections = 1;
    config.schema = Some("unnamed_app".into());
    let db = Database::<P>::connect(config).await.unwrap();
    db.batch_execute(
        "CREATE TABLE unnamed_app.items (id INT PRIMARY KEY, name TEXT NOT NULL, doc JSONB)",
    )
    .await
    .unwrap();

    // execute / fetch with inferred parameter types (int, text, jsonb from JSON text).
    let n = db
        .execute(
            "INSERT INTO {{tables.items}} (id, name, doc) VALUES ($1, $2, $3)",
            &[&1_i32, &"one", &serde_json::json!({"a": 1})],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let name: Option<String> = db
        .fetch_value("SELECT name FROM {{tables.items}} WHERE id = $1", &[&1_i32])
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("one"));
    assert!(db
        .fetch_one(
            "SELECT name FROM {{tables.items}} WHERE id = $1",
            &[&99_i32]
        )
        .await
        .unwrap()
        .is_none());
    // A second time through the description cache.
    let again: Option<String> = db
        .fetch_value("SELECT name FROM {{tables.items}} WHERE id = $1", &[&1_i32])
        .await
        .unwrap();
    assert_eq!(again.as_deref(), Some("one"));

    // A wrong parameter count is refused, as for a prepared statement.
    let err = db
        .fetch_value::<i32, _>("SELECT $1::int", &[&1_i32, &2_i32])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("expected 1 parameters but got 2"),
        "{err}"
    );

    // execute_many: one pipeline, all or nothing, the failing row named.
    let names: Vec<String> = (2..12).map(|i| format!("n{i}")).collect();
    let ids: Vec<i32> = (2..12).collect();
    let rows: Vec<[pgdbm::Param<'_>; 2]> = ids
        .iter()
        .zip(&names)
        .map(|(i, n)| [i as pgdbm::Param<'_>, n as pgdbm::Param<'_>])
        .collect();
    let inserted = db
        .execute_many(
            "INSERT INTO {{tables.items}} (id, name) VALUES ($1, $2)",
            &rows,
        )
        .await
        .unwrap();
    assert_eq!(inserted, 10);
    let dup_ids = [20_i32, 21, 2, 22];
    let dup_rows: Vec<[pgdbm::Param<'_>; 2]> = dup_ids
        .iter()
        .map(|i| [i as pgdbm::Param<'_>, &"dup" as pgdbm::Param<'_>])
        .collect();
    let err = db
        .execute_many(
            "INSERT INTO {{tables.items}} (id, name) VALUES ($1, $2)",
            &dup_rows,
        )
        .await
        .unwrap_err();
    assert_eq!(err.as_query().and_then(|q| q.row), Some(2), "{err}");
    let count: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.items}}", &[])
        .await
        .unwrap();
    assert_eq!(count, Some(11));

    // COPY in (its own transaction), a stream, and COPY out inside a transaction.
    let copy_rows: Vec<[pgdbm::Param<'_>; 2]> = vec![[&100_i32, &"c100"], [&101_i32, &"c101"]];
    let copied = db
        .copy_records_to_table("items", &["id", "name"], &copy_rows)
        .await
        .unwrap();
    assert_eq!(copied, 2);
    let streamed: Vec<i32> = db
        .fetch_stream(
            "SELECT id FROM {{tables.items}} WHERE id >= $1 ORDER BY id",
            &[&100_i32],
        )
        .await
        .unwrap()
        .map_ok(|row| row.get::<_, i32>(0))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(streamed, vec![100, 101]);
    let err = match db
        .copy_out(CopySource::Query("SELECT 1"), CopyFormat::Text)
        .await
    {
        Ok(_) => panic!("copy_out outside a transaction must be refused in unnamed mode"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("inside a transaction"), "{err}");
    {
        let mut tx = db.transaction().await.unwrap();
        let out: Vec<pgdbm::Bytes> = tx
            .copy_out(
                CopySource::Query("SELECT id FROM unnamed_app.items WHERE id = 1"),
                CopyFormat::Text,
            )
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(out.concat(), b"1\n");
        tx.commit().await.unwrap();
    }

    // Settings per transaction, and still before SET TRANSACTION.
    let mut conn = db.acquire().await.unwrap();
    let outside: Option<String> = conn
        .fetch_value("SELECT current_setting('jit')", &[])
        .await
        .unwrap();
    assert_eq!(
        outside.as_deref(),
        Some("on"),
        "no startup options in unnamed mode"
    );
    let mut tx = conn
        .begin_with(&TransactionOptions::default().isolation(IsolationLevel::Serializable))
        .await
        .unwrap();
    let (jit, path, iso): (Option<String>, Option<String>, Option<String>) = (
        tx.fetch_value("SELECT current_setting('jit')", &[])
            .await
            .unwrap(),
        tx.fetch_value("SELECT current_setting('search_path')", &[])
            .await
            .unwrap(),
        tx.fetch_value("SELECT current_setting('transaction_isolation')", &[])
            .await
            .unwrap(),
    );
    assert_eq!(jit.as_deref(), Some("off"));
    assert_eq!(path.as_deref(), Some("unnamed_app, public"));
    assert_eq!(iso.as_deref(), Some("serializable"));
    // No named prepared statement on this (only) session after all of the above.
    let prepared: Option<i64> = tx
        .fetch_value("SELECT count(*) FROM pg_prepared_statements", &[])
        .await
        .unwrap();
    assert_eq!(prepared, Some(0));
    tx.commit().await.unwrap();

    // execute_many outside a transaction opens its own, with the settings (the batch above
    // proved the shim, which would otherwise let one chunk run as an implicit transaction).
    db.execute(
        "CREATE TABLE {{tables.seen}} (id int, jit text, path text)",
        &[],
    )
    .await
    .unwrap();
    let ids: Vec<i32> = (0..5).collect();
    let rows: Vec<[pgdbm::Param<'_>; 1]> = ids.iter().map(|i| [i as pgdbm::Param<'_>]).collect();
    db.execute_many(
        "INSERT INTO {{tables.seen}} VALUES ($1, current_setting('jit'), current_setting('search_path'))",
        &rows,
    )
    .await
    .unwrap();
    let seen: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM {{tables.seen}} WHERE jit = 'off' AND path = 'unnamed_app, public'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        seen,
        Some(5),
        "execute_many ran without the transaction's settings"
    );
    db.close().await;
}
both_backends!(unnamed_mode, unnamed_mode_leaves_no_prepared_statement);
