//! The manager's methods against a real PostgreSQL, each body run for deadpool and bb8.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgdbm::{Database, Error, FromRow, Param, Pool, QueryErrorKind, QueryEvent, QueryObserver};
use pgdbm_integration_tests::{both_backends, fresh_config, fresh_database, hold_connections};

async fn db<P: Pool>(prefix: &str) -> Database<P> {
    fresh_database::<P>(prefix, |_| {})
        .await
        .expect("fresh database")
}

async fn basic_queries<P: Pool>() {
    let db = db::<P>("basic").await;
    assert_eq!(
        db.execute(
            "CREATE TABLE {{tables.users}} (id SERIAL PRIMARY KEY, email TEXT UNIQUE, age INT)",
            &[]
        )
        .await
        .unwrap(),
        0
    );
    let n = db
        .execute(
            "INSERT INTO {{tables.users}} (email, age) VALUES ($1, $2), ($3, $4)",
            &[&"a@x", &30i32, &"b@x", &40i32],
        )
        .await
        .unwrap();
    assert_eq!(n, 2);

    let row = db
        .fetch_one(
            "SELECT email, age FROM {{tables.users}} WHERE age > $1 ORDER BY age",
            &[&35i32],
        )
        .await
        .unwrap()
        .expect("one row");
    use pgdbm::Row;
    assert_eq!(row.try_get::<_, String>("email").unwrap(), "b@x");
    assert_eq!(row.try_get::<_, i32>(&1usize).unwrap(), 40);
    assert_eq!(row.column_names(), vec!["email", "age"]);
    assert!(db
        .fetch_one("SELECT 1 FROM {{tables.users}} WHERE false", &[])
        .await
        .unwrap()
        .is_none());

    let all = db
        .fetch_all("SELECT email FROM {{tables.users}} ORDER BY email", &[])
        .await
        .unwrap();
    let emails: Vec<String> = all.iter().map(|r| r.try_get("email").unwrap()).collect();
    assert_eq!(emails, vec!["a@x", "b@x"]);

    let count: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.users}}", &[])
        .await
        .unwrap();
    assert_eq!(count, Some(2));
    let none: Option<i64> = db
        .fetch_value("SELECT 1::bigint FROM {{tables.users}} WHERE false", &[])
        .await
        .unwrap();
    assert_eq!(none, None);
    let second: Option<i32> = db
        .fetch_value_at(
            "SELECT email, age FROM {{tables.users}} WHERE email = $1",
            &[&"a@x"],
            1,
        )
        .await
        .unwrap();
    assert_eq!(second, Some(30));
    let null: Option<Option<i32>> = db.fetch_value("SELECT NULL::int", &[]).await.unwrap();
    assert_eq!(null, Some(None));
    // Asking for a column that does not exist is an error naming it, not a panic.
    let err = db
        .fetch_value_at::<i32, _>("SELECT 1", &[], 5)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("index 5"), "{err}");

    let id: i32 = db
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email, age) VALUES ($1, $2)",
            &[&"c@x", &50i32],
        )
        .await
        .unwrap();
    let id2: i32 = db
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email) VALUES ('returning@x') RETURNING id;",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(id2, id + 1);
    // A string literal containing the word does not count as a RETURNING clause.
    let id3: i32 = db
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email) VALUES ('returning id')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(id3, id2 + 1);

    assert!(db.table_exists("users").await.unwrap());
    assert!(db.table_exists("public.users").await.unwrap());
    assert!(!db.table_exists("nope").await.unwrap());
    assert!(!db.table_exists("nope.users").await.unwrap());
    assert!(matches!(
        db.table_exists("users; drop").await,
        Err(Error::Schema { .. })
    ));

    // A template with an invalid identifier is refused before any SQL is sent.
    let err = db
        .execute("SELECT * FROM {{tables.bad-name}}", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Schema { .. }), "{err}");
    db.close().await;
}
both_backends!(basic_queries_work, basic_queries);

async fn schema_views_are_independent<P: Pool>() {
    let db = db::<P>("views").await;
    let auth = db.with_schema("auth").unwrap();
    let billing = db.with_schema("billing").unwrap();
    for view in [&auth, &billing] {
        view.execute("CREATE SCHEMA {{schema}}", &[]).await.unwrap();
        view.execute("CREATE TABLE {{tables.items}} (name TEXT)", &[])
            .await
            .unwrap();
    }
    auth.execute("INSERT INTO {{tables.items}} VALUES ('a1'), ('a2')", &[])
        .await
        .unwrap();
    billing
        .execute("INSERT INTO {{tables.items}} VALUES ('b1')", &[])
        .await
        .unwrap();
    // Interleave on the same pool: each view keeps rendering its own schema.
    for _ in 0..3 {
        let a: Option<i64> = auth
            .fetch_value("SELECT count(*) FROM {{tables.items}}", &[])
            .await
            .unwrap();
        let b: Option<i64> = billing
            .fetch_value("SELECT count(*) FROM {{tables.items}}", &[])
            .await
            .unwrap();
        assert_eq!((a, b), (Some(2), Some(1)));
    }
    assert_eq!(
        auth.render("SELECT * FROM {{tables.items}}").unwrap(),
        "SELECT * FROM \"auth\".items"
    );
    assert_eq!(
        db.render("SELECT * FROM {{tables.items}}").unwrap(),
        "SELECT * FROM items"
    );
    assert!(auth.table_exists("items").await.unwrap());
    assert!(
        !db.table_exists("items").await.unwrap(),
        "the schema-less view sees public only"
    );
    assert!(db.table_exists("billing.items").await.unwrap());
    assert!(matches!(
        db.with_schema("bad schema"),
        Err(Error::Schema { .. })
    ));
    db.close().await;
}
both_backends!(schema_views, schema_views_are_independent);

async fn execute_many_all_or_nothing<P: Pool>() {
    let db = db::<P>("many").await;
    db.execute(
        "CREATE TABLE {{tables.t}} (id INT PRIMARY KEY, v TEXT)",
        &[],
    )
    .await
    .unwrap();
    let data: Vec<(i32, String)> = (0..10_000).map(|i| (i, format!("v{i}"))).collect();
    let rows: Vec<[Param<'_>; 2]> = data
        .iter()
        .map(|(i, v)| [i as Param<'_>, v as Param<'_>])
        .collect();
    let n = db
        .execute_many("INSERT INTO {{tables.t}} VALUES ($1, $2)", &rows)
        .await
        .unwrap();
    assert_eq!(n, 10_000);

    // Row 5 collides with an existing key: nothing of the batch remains, the error names row 5.
    let bad: Vec<(i32, String)> = (20_000..20_010)
        .map(|i| (if i == 20_005 { 7 } else { i }, "x".to_string()))
        .collect();
    let rows: Vec<[Param<'_>; 2]> = bad
        .iter()
        .map(|(i, v)| [i as Param<'_>, v as Param<'_>])
        .collect();
    let err = db
        .execute_many("INSERT INTO {{tables.t}} VALUES ($1, $2)", &rows)
        .await
        .unwrap_err();
    let q = err.as_query().expect("query error");
    assert_eq!(q.row, Some(5), "{err}");
    assert_eq!(q.sqlstate.as_deref(), Some("23505"));
    let count: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.t}}", &[])
        .await
        .unwrap();
    assert_eq!(count, Some(10_000), "a failed batch leaves nothing behind");

    // Inside a transaction: the batch and the transaction go together.
    let mut tx = db.transaction().await.unwrap();
    let more: Vec<(i32, String)> = (30_000..30_100).map(|i| (i, "y".to_string())).collect();
    let rows: Vec<[Param<'_>; 2]> = more
        .iter()
        .map(|(i, v)| [i as Param<'_>, v as Param<'_>])
        .collect();
    assert_eq!(
        tx.execute_many("INSERT INTO {{tables.t}} VALUES ($1, $2)", &rows)
            .await
            .unwrap(),
        100
    );
    tx.rollback().await.unwrap();
    let count: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.t}}", &[])
        .await
        .unwrap();
    assert_eq!(count, Some(10_000));
    // An empty batch is fine.
    let empty: Vec<[Param<'_>; 2]> = Vec::new();
    assert_eq!(
        db.execute_many("INSERT INTO {{tables.t}} VALUES ($1, $2)", &empty)
            .await
            .unwrap(),
        0
    );
    db.close().await;
}
both_backends!(execute_many, execute_many_all_or_nothing);

async fn copy_records<P: Pool>() {
    let db = db::<P>("copy").await;
    let app = db.with_schema("app").unwrap();
    app.execute("CREATE SCHEMA {{schema}}", &[]).await.unwrap();
    app.execute(
        "CREATE TABLE {{tables.events}} (id BIGINT, name TEXT, score DOUBLE PRECISION, note TEXT)",
        &[],
    )
    .await
    .unwrap();
    let data: Vec<(i64, String, f64)> = (0..10_000)
        .map(|i| (i, format!("e{i}"), i as f64 / 2.0))
        .collect();
    let rows: Vec<[Param<'_>; 3]> = data
        .iter()
        .map(|(i, n, s)| [i as Param<'_>, n as Param<'_>, s as Param<'_>])
        .collect();
    let copied = app
        .copy_records_to_table("events", &["id", "name", "score"], &rows)
        .await
        .unwrap();
    assert_eq!(copied, 10_000);
    let sum: Option<f64> = app
        .fetch_value("SELECT sum(score) FROM {{tables.events}}", &[])
        .await
        .unwrap();
    assert_eq!(sum, Some((0..10_000).map(|i| i as f64 / 2.0).sum()));
    let nulls: Option<i64> = app
        .fetch_value(
            "SELECT count(*) FROM {{tables.events}} WHERE note IS NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(nulls, Some(10_000));

    // All columns, with a NULL, into a schema-qualified name from the schema-less manager.
    let none: Option<String> = None;
    let one: [Param<'_>; 4] = [&1_000_000i64, &"x", &1.5f64, &none];
    assert_eq!(
        db.copy_records_to_table("app.events", &[], &[one])
            .await
            .unwrap(),
        1
    );
    // A wrong type is an error, not a panic, and copies nothing.
    let wrong: [Param<'_>; 1] = [&"not a number"];
    assert!(app
        .copy_records_to_table("events", &["id"], &[wrong])
        .await
        .is_err());
    let total: Option<i64> = app
        .fetch_value("SELECT count(*) FROM {{tables.events}}", &[])
        .await
        .unwrap();
    assert_eq!(total, Some(10_001));
    assert!(matches!(
        app.copy_records_to_table("events", &["id; drop"], &[[&1i64 as Param<'_>]])
            .await,
        Err(Error::Schema { .. })
    ));
    db.close().await;
}
both_backends!(copy_records_to_table, copy_records);

#[derive(Debug, FromRow, PartialEq)]
struct User {
    id: i32,
    email: String,
    #[pgdbm(rename = "display_name")]
    name: Option<String>,
}

async fn rows_as_structs<P: Pool>() {
    let db = db::<P>("fromrow").await;
    db.execute(
        "CREATE TABLE {{tables.users}} (id SERIAL, email TEXT, display_name TEXT)",
        &[],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO {{tables.users}} (email, display_name) VALUES ('a@x', 'A'), ('b@x', NULL)",
        &[],
    )
    .await
    .unwrap();
    let users: Vec<User> = db
        .fetch_all_as("SELECT * FROM {{tables.users}} ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(
        users,
        vec![
            User {
                id: 1,
                email: "a@x".into(),
                name: Some("A".into())
            },
            User {
                id: 2,
                email: "b@x".into(),
                name: None
            }
        ]
    );
    let one: Option<User> = db
        .fetch_one_as("SELECT * FROM {{tables.users}} WHERE email = $1", &[&"b@x"])
        .await
        .unwrap();
    assert_eq!(one.map(|u| u.id), Some(2));
    // Wrong type: the error names the column.
    let err = db
        .fetch_one_as::<User, _>(
            "SELECT id::text AS id, email, display_name FROM {{tables.users}}",
            &[],
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("id"), "{err}");
    // Missing column: named too.
    let err = db
        .fetch_all_as::<User, _>("SELECT id, email FROM {{tables.users}}", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("display_name"), "{err}");
    db.close().await;
}
both_backends!(fetch_as_struct, rows_as_structs);

async fn prepared_statements<P: Pool>() {
    let db = db::<P>("prep").await;
    let app = db.with_schema("app").unwrap();
    app.execute("CREATE SCHEMA {{schema}}", &[]).await.unwrap();
    app.execute(
        "CREATE TABLE {{tables.kv}} (k TEXT PRIMARY KEY, v INT)",
        &[],
    )
    .await
    .unwrap();
    app.add_prepared_statement("put", "INSERT INTO {{tables.kv}} VALUES ($1, $2)")
        .unwrap();
    app.add_prepared_statement("get", "SELECT v FROM {{tables.kv}} WHERE k = $1")
        .unwrap();
    let put = app.prepared("put").unwrap();
    assert_eq!(put.sql(), "INSERT INTO \"app\".kv VALUES ($1, $2)");
    for i in 0..20i32 {
        app.execute(&put, &[&format!("k{i}"), &i]).await.unwrap();
    }
    let v: Option<i32> = app
        .fetch_value(&app.prepared("get").unwrap(), &[&"k7"])
        .await
        .unwrap();
    assert_eq!(v, Some(7));
    let q = app
        .prepare_query("SELECT count(*) FROM {{tables.kv}}")
        .unwrap();
    let n: Option<i64> = app.fetch_value(&q, &[]).await.unwrap();
    assert_eq!(n, Some(20));
    assert!(app
        .prepared("missing")
        .unwrap_err()
        .to_string()
        .contains("add_prepared_statement"));
    assert!(matches!(
        app.add_prepared_statement("bad", "SELECT * FROM {{tables.no way}}"),
        Err(Error::Schema { .. })
    ));
    db.close().await;
}
both_backends!(prepared, prepared_statements);

async fn transactions<P: Pool>() {
    let db = db::<P>("tx").await;
    db.execute("CREATE TABLE {{tables.t}} (v INT)", &[])
        .await
        .unwrap();
    let count = |db: Database<P>| async move {
        db.fetch_value::<i64, _>("SELECT count(*) FROM {{tables.t}}", &[])
            .await
            .unwrap()
            .unwrap()
    };

    let mut tx = db.transaction().await.unwrap();
    tx.execute("INSERT INTO {{tables.t}} VALUES (1)", &[])
        .await
        .unwrap();
    assert!(tx.in_transaction());
    tx.commit().await.unwrap();
    assert_eq!(count(db.clone()).await, 1);

    let mut tx = db.transaction().await.unwrap();
    tx.execute("INSERT INTO {{tables.t}} VALUES (2)", &[])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(count(db.clone()).await, 1);

    {
        let mut tx = db.transaction().await.unwrap();
        tx.execute("INSERT INTO {{tables.t}} VALUES (3)", &[])
            .await
            .unwrap();
        // dropped without commit
    }
    assert_eq!(
        count(db.clone()).await,
        1,
        "dropping a transaction rolls it back"
    );

    // Nested: a committed savepoint stays, a rolled-back or dropped one goes.
    let mut tx = db.transaction().await.unwrap();
    tx.execute("INSERT INTO {{tables.t}} VALUES (10)", &[])
        .await
        .unwrap();
    {
        let mut sp = tx.savepoint().await.unwrap();
        sp.execute("INSERT INTO {{tables.t}} VALUES (11)", &[])
            .await
            .unwrap();
        {
            let mut inner = sp.savepoint().await.unwrap();
            inner
                .execute("INSERT INTO {{tables.t}} VALUES (12)", &[])
                .await
                .unwrap();
            inner.rollback().await.unwrap();
        }
        sp.commit().await.unwrap();
    }
    {
        let mut sp = tx.savepoint().await.unwrap();
        sp.execute("INSERT INTO {{tables.t}} VALUES (13)", &[])
            .await
            .unwrap();
        // dropped: rolled back before the next statement
    }
    {
        // A failing statement inside a savepoint does not doom the outer transaction.
        let mut sp = tx.savepoint().await.unwrap();
        assert!(sp.execute("SELECT 1/0", &[]).await.is_err());
        sp.rollback().await.unwrap();
    }
    let inside: Vec<i32> = tx
        .fetch_all("SELECT v FROM {{tables.t}} ORDER BY v", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| pgdbm::Row::try_get(r, "v").unwrap())
        .collect();
    assert_eq!(inside, vec![1, 10, 11]);
    tx.commit().await.unwrap();
    assert_eq!(count(db.clone()).await, 3);

    // A savepoint on an acquired connection outside a transaction opens one.
    let mut conn = db.acquire().await.unwrap();
    {
        let mut sp = conn.savepoint().await.unwrap();
        assert!(sp.in_transaction());
        sp.execute("INSERT INTO {{tables.t}} VALUES (20)", &[])
            .await
            .unwrap();
    }
    assert_eq!(
        conn.fetch_value::<i64, _>("SELECT count(*) FROM {{tables.t}}", &[])
            .await
            .unwrap(),
        Some(3)
    );
    assert!(!conn.in_transaction());
    drop(conn);
    db.close().await;
}
both_backends!(transaction_semantics, transactions);

async fn returned_inside_transaction<P: Pool>() {
    let db = fresh_database::<P>("dirty", |c| {
        c.min_connections = 1;
        c.max_connections = 1;
    })
    .await
    .unwrap();
    // A user opens a transaction by hand on an acquired connection and drops it.
    {
        let mut conn = db.acquire().await.unwrap();
        conn.execute("BEGIN", &[]).await.unwrap();
        conn.execute("CREATE TABLE leaked (id INT)", &[])
            .await
            .unwrap();
    }
    // The next borrower (same single connection) is not inside a transaction...
    let mut conn = db.acquire().await.unwrap();
    let err = conn.execute("SAVEPOINT probe", &[]).await.unwrap_err();
    assert_eq!(err.sqlstate(), Some("25P01"), "{err}");
    // ...and the abandoned work was rolled back.
    assert!(!conn.table_exists("leaked").await.unwrap());
    drop(conn);
    // The same with an aborted transaction.
    {
        let mut tx = db.transaction().await.unwrap();
        assert!(tx.execute("SELECT 1/0", &[]).await.is_err());
    }
    let v: Option<i32> = db.fetch_value("SELECT 1", &[]).await.unwrap();
    assert_eq!(v, Some(1));
    db.close().await;
}
both_backends!(
    connection_returned_in_transaction,
    returned_inside_transaction
);

async fn timeouts_cancel_on_server<P: Pool>() {
    let db = db::<P>("timeout").await;
    let short = db.with_timeout(Some(Duration::from_millis(300)));
    let started = Instant::now();
    let err = short.execute("SELECT pg_sleep(30)", &[]).await.unwrap_err();
    let waited = started.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(
        err.as_query().map(|q| q.kind),
        Some(QueryErrorKind::Timeout)
    );
    assert!(waited < Duration::from_secs(5), "took {waited:?}");
    // The server is not still running it.
    let mut still_running = true;
    for _ in 0..50 {
        let n: Option<i64> = db
            .fetch_value(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'",
                &[],
            )
            .await
            .unwrap();
        if n == Some(0) {
            still_running = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !still_running,
        "the timed-out query is still running on the server"
    );
    // The pool still works.
    let v: Option<i32> = short.fetch_value("SELECT 42", &[]).await.unwrap();
    assert_eq!(v, Some(42));
    db.close().await;
}
both_backends!(timeout_and_cancel, timeouts_cancel_on_server);

async fn errors_carry_context<P: Pool>() {
    let db = db::<P>("errors").await;
    db.execute(
        "CREATE TABLE {{tables.u}} (email TEXT CONSTRAINT u_email_key UNIQUE)",
        &[],
    )
    .await
    .unwrap();
    db.execute("INSERT INTO {{tables.u}} VALUES ($1)", &[&"dup@x"])
        .await
        .unwrap();
    let secret = "s3cr3t-param";
    let err = db
        .execute("INSERT INTO {{tables.u}} VALUES ($1)", &[&"dup@x"])
        .await
        .unwrap_err();
    let q = err.as_query().unwrap();
    assert_eq!(q.sqlstate.as_deref(), Some("23505"));
    assert_eq!(q.constraint.as_deref(), Some("u_email_key"));
    assert_eq!(q.table.as_deref(), Some("u"));
    let shown = err.to_string();
    assert!(
        shown.contains("23505") && shown.contains("$1=***"),
        "{shown}"
    );
    let err = db
        .execute("SELECT $1::text || 'x' FROM nope", &[&secret])
        .await
        .unwrap_err();
    assert!(!err.to_string().contains(secret) && !format!("{err:?}").contains(secret));

    // Opting in shows parameters.
    let mut config = fresh_config("errors_optin").unwrap();
    config.log_parameters = true;
    let loud = Database::<P>::connect(config).await.unwrap();
    let err = loud
        .execute("SELECT $1::int / 0", &[&5i32])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("$1=5"), "{err}");
    loud.close().await;
    db.close().await;
}
both_backends!(query_errors, errors_carry_context);

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, Option<u64>, bool)>>);

impl QueryObserver for Recorder {
    fn on_query(&self, e: &QueryEvent<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((e.sql.to_string(), e.rows, e.error.is_some()));
    }
}

async fn observers_see_queries<P: Pool>() {
    let db = db::<P>("observe").await;
    let rec = Arc::new(Recorder::default());
    db.add_observer(rec.clone());
    let view = db.with_schema("public").unwrap();
    view.execute("CREATE TABLE {{tables.o}} (v INT)", &[])
        .await
        .unwrap();
    view.execute("INSERT INTO {{tables.o}} VALUES (1), (2)", &[])
        .await
        .unwrap();
    let _ = view.execute("SELECT * FROM missing_table", &[]).await;
    let seen = rec.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(
        seen[1],
        (
            "INSERT INTO \"public\".o VALUES (1), (2)".to_string(),
            Some(2),
            false
        )
    );
    assert!(seen[2].2);
    db.close().await;
}
both_backends!(observers, observers_see_queries);

async fn pool_stats_and_exhaustion<P: Pool>() {
    let db = fresh_database::<P>("exhaust", |c| {
        c.min_connections = 1;
        c.max_connections = 2;
        c.acquire_timeout = Duration::from_millis(300);
    })
    .await
    .unwrap();
    let a = db.acquire().await.unwrap();
    let b = db.acquire().await.unwrap();
    let stats = db.pool_stats();
    assert_eq!((stats.in_use, stats.max_size), (2, 2), "{stats:?}");
    let err = db.acquire().await.unwrap_err();
    assert!(matches!(err, Error::Pool { .. }), "{err}");
    assert!(err.to_string().contains("2 of 2"), "{err}");
    drop(a);
    let c = tokio::time::timeout(Duration::from_secs(10), db.acquire())
        .await
        .expect("no deadlock after a release")
        .unwrap();
    drop((b, c));
    let stats = db.pool_stats();
    assert_eq!(stats.in_use, 0, "{stats:?}");
    assert!(stats.size >= 1 && stats.size <= 2, "{stats:?}");
    db.close().await;
    assert!(matches!(
        db.fetch_value::<i32, _>("SELECT 1", &[]).await,
        Err(Error::Pool { .. })
    ));
}
both_backends!(pool_exhaustion, pool_stats_and_exhaustion);

async fn terminated_backends_are_replaced<P: Pool>() {
    let config = fresh_config("terminate").unwrap();
    let dbname = config.database.clone();
    let db = Database::<P>::connect(config).await.unwrap();
    // Fill the pool with several live connections.
    let conns: Vec<_> = hold_connections(&db, 3).await.unwrap();
    drop(conns);
    let server = pgdbm_testkit::TestServer::shared().unwrap();
    server
        .psql(
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}' AND pid <> pg_backend_pid()"
            ),
        )
        .unwrap();
    // Wait until the server has no backend of that database left.
    for _ in 0..100 {
        let left = server
            .psql(
                "postgres",
                &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{dbname}'"),
            )
            .unwrap();
        if left.trim() == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Every next query succeeds: the pool discards the dead connections.
    for i in 0..6i32 {
        let v: Option<i32> = db.fetch_value("SELECT $1::int", &[&i]).await.unwrap();
        assert_eq!(v, Some(i));
    }
    db.close().await;
}

both_backends!(terminate_backends, terminated_backends_are_replaced);

async fn unreachable_host_retries<P: Pool>() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener); // nothing listens there now
    let mut config = pgdbm::Config::default();
    config.host = "127.0.0.1".into();
    config.port = port;
    config.password = Some("hunter2-secret".into());
    config.retry_attempts = 3;
    config.retry_delay = Duration::from_millis(20);
    config.retry_max_delay = Duration::from_millis(50);
    let err = Database::<P>::connect(config).await.unwrap_err();
    match &err {
        Error::Connection {
            attempts, port: p, ..
        } => {
            assert_eq!(*attempts, 3);
            assert_eq!(*p, port);
        }
        other => panic!("expected a connection error, got {other}"),
    }
    assert!(!err.to_string().contains("hunter2") && !format!("{err:?}").contains("hunter2"));
}
both_backends!(unreachable_host, unreachable_host_retries);
