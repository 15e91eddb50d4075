//! Row streams and COPY OUT against a real server, on both pool backends: streams read every
//! row, a stream dropped midway leaves its connection clean (the server says so), and a
//! table copied out round-trips through `copy_records_to_table`.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use pgdbm::{Config, CopyFormat, CopySource, Database, Pool, Row};
use pgdbm_integration_tests::{both_backends, fresh_config};

fn backend<P>() -> &'static str {
    if std::any::type_name::<P>().contains("Bb8") {
        "bb8"
    } else {
        "deadpool"
    }
}

/// A pool of one connection (so the next borrower gets the same session) and an observer.
async fn pools<P: Pool>(app: &str) -> (Database<P>, Database<P>) {
    let mut config: Config = fresh_config("stream").unwrap();
    config.min_connections = 1;
    config.max_connections = 1;
    config.application_name = Some(app.to_string());
    let mut observer = config.clone();
    observer.application_name = Some(format!("{app}_obs"));
    let db = Database::<P>::connect(config).await.unwrap();
    let obs = Database::<P>::connect(observer).await.unwrap();
    (db, obs)
}

/// Polls (at most ~10 s) until every session of `app` is idle on the server; returns how many
/// are not.
async fn busy_sessions<P: Pool>(obs: &Database<P>, app: &str) -> i64 {
    let mut n = i64::MAX;
    for _ in 0..200 {
        n = obs
            .fetch_value::<i64, _>(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'",
                &[&app],
            )
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

/// The next borrower's session is outside any transaction: `SAVEPOINT x` is refused with 25P01.
async fn assert_next_borrower_clean<P: Pool>(db: &Database<P>, what: &str) {
    let mut conn = db.acquire().await.unwrap();
    let err = conn.execute("SAVEPOINT x", &[]).await.unwrap_err();
    match err {
        pgdbm::Error::Query(q) => assert_eq!(q.sqlstate.as_deref(), Some("25P01"), "{what}: {q}"),
        other => panic!("{what}: unexpected {other:?}"),
    }
    let one: Option<i32> = conn.fetch_value("SELECT 1", &[]).await.unwrap();
    assert_eq!(one, Some(1), "{what}");
}

const MANY: &str = "SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 200000) g";

async fn streams_read_every_row_and_drops_leave_the_connection_clean<P: Pool>() {
    let app = format!("st_rows_{}", backend::<P>());
    let (db, obs) = pools::<P>(&app).await;

    // Every row, in order, on a checked-out connection.
    {
        let mut conn = db.acquire().await.unwrap();
        let mut stream = conn.fetch_stream(MANY, &[]).await.unwrap();
        let mut n = 0i32;
        while let Some(row) = stream.try_next().await.unwrap() {
            n += 1;
            assert_eq!(row.try_get::<_, i32>(&0usize).unwrap(), n);
        }
        drop(stream);
        assert_eq!(n, 200_000);
        // The connection is usable at once after a stream that ended.
        let v: Option<i64> = conn.fetch_value("SELECT 41::int8 + 1", &[]).await.unwrap();
        assert_eq!(v, Some(42));
    }

    // A stream dropped midway on a checked-out connection: the next statement on the same
    // connection runs after the rest is cancelled, and gets its own answer.
    {
        let mut conn = db.acquire().await.unwrap();
        let mut stream = conn.fetch_stream(MANY, &[]).await.unwrap();
        for _ in 0..10 {
            stream.next().await.unwrap().unwrap();
        }
        drop(stream);
        let v: Option<String> = conn.fetch_value("SELECT 'after'", &[]).await.unwrap();
        assert_eq!(v.as_deref(), Some("after"));
    }
    assert_next_borrower_clean(&db, "after a dropped DbConnection stream").await;

    // A stream dropped midway together with its connection, inside a transaction.
    {
        let mut tx = db.transaction().await.unwrap();
        let mut stream = tx.fetch_stream(MANY, &[]).await.unwrap();
        stream.next().await.unwrap().unwrap();
        drop(stream);
        drop(tx);
    }
    assert_eq!(
        busy_sessions(&obs, &app).await,
        0,
        "dropped stream in a transaction"
    );
    assert_next_borrower_clean(&db, "after a dropped stream in a transaction").await;

    // Database::fetch_stream holds its pooled connection until dropped.
    {
        let mut stream = db.fetch_stream(MANY, &[]).await.unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.try_get::<_, i32>(&"g").unwrap(), 1);
        assert_eq!(db.pool_stats().in_use, 1, "the stream holds the connection");
        drop(stream);
    }
    assert_eq!(
        busy_sessions(&obs, &app).await,
        0,
        "dropped Database stream"
    );
    assert_next_borrower_clean(&db, "after a dropped Database stream").await;

    // Errors arrive through the stream (a division by zero after some rows) and leave the
    // connection usable.
    {
        let mut conn = db.acquire().await.unwrap();
        let stream = conn
            .fetch_stream("SELECT 10 / (5 - g) FROM generate_series(1, 10) g", &[])
            .await
            .unwrap();
        let items: Vec<_> = stream.collect().await;
        let err = items
            .iter()
            .find_map(|r| r.as_ref().err())
            .expect("an error item");
        assert!(
            matches!(err, pgdbm::Error::Query(q) if q.sqlstate.as_deref() == Some("22012")),
            "{err}"
        );
    }
    assert_next_borrower_clean(&db, "after a failed stream").await;
    db.close().await;
    obs.close().await;
}
both_backends!(
    rows,
    streams_read_every_row_and_drops_leave_the_connection_clean
);

async fn copy_out_round_trips<P: Pool>() {
    let app = format!("st_copy_{}", backend::<P>());
    let (db, _obs) = pools::<P>(&app).await;
    db.batch_execute(
        "CREATE TABLE src (id int PRIMARY KEY, name text, score float8, tags text[]); \
         CREATE TABLE dst (LIKE src); \
         INSERT INTO src SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'n' || g END, g / 3.0, \
           ARRAY['a', 'b' || g] FROM generate_series(1, 5000) g",
    )
    .await
    .unwrap();

    // Rows out (binary, typed) and back in with copy_records_to_table.
    let rows: Vec<_> = db
        .copy_out_rows("src", &[])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows.len(), 5000);
    type Rec = (i32, Option<String>, Option<f64>, Option<Vec<String>>);
    let recs: Vec<Rec> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("id").unwrap(),
                r.try_get("name").unwrap(),
                r.try_get(2usize).unwrap(),
                r.try_get(3usize).unwrap(),
            )
        })
        .collect();
    let params: Vec<Vec<&(dyn pgdbm::types::ToSql + Sync)>> = recs
        .iter()
        .map(|(a, b, c, d)| {
            vec![
                a as &(dyn pgdbm::types::ToSql + Sync),
                b as _,
                c as _,
                d as _,
            ]
        })
        .collect();
    let n = db.copy_records_to_table("dst", &[], &params).await.unwrap();
    assert_eq!(n, 5000);
    let diff: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM ((SELECT * FROM src EXCEPT ALL SELECT * FROM dst) \
             UNION ALL (SELECT * FROM dst EXCEPT ALL SELECT * FROM src)) d",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        diff,
        Some(0),
        "copy_out_rows -> copy_records_to_table round trip"
    );

    // Bytes out: a table's columns as CSV, and a query as text.
    let mut conn = db.acquire().await.unwrap();
    let csv: Vec<u8> = conn
        .copy_out(
            CopySource::Table {
                table: "src",
                columns: &["id", "name"],
            },
            CopyFormat::CsvWithHeader,
        )
        .await
        .unwrap()
        .try_fold(Vec::new(), |mut acc, chunk| async move {
            acc.extend_from_slice(&chunk);
            Ok(acc)
        })
        .await
        .unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 5001);
    assert_eq!(lines[0], "id,name");
    assert!(
        lines.contains(&"1,n1") && lines.contains(&"7,"),
        "{}",
        &csv[..60]
    );
    let text: Vec<u8> = conn
        .copy_out(
            CopySource::Query("SELECT id FROM src WHERE id <= 3 ORDER BY id"),
            CopyFormat::Text,
        )
        .await
        .unwrap()
        .try_fold(Vec::new(), |mut acc, chunk| async move {
            acc.extend_from_slice(&chunk);
            Ok(acc)
        })
        .await
        .unwrap();
    assert_eq!(text, b"1\n2\n3\n");
    // A COPY OUT dropped midway leaves the connection clean too.
    {
        let mut s = conn
            .copy_out(CopySource::Query(MANY), CopyFormat::Text)
            .await
            .unwrap();
        s.next().await.unwrap().unwrap();
    }
    drop(conn);
    assert_next_borrower_clean(&db, "after a dropped COPY OUT").await;
    db.close().await;
}
both_backends!(copy_out, copy_out_round_trips);
