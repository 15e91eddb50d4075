//! The Rust counterparts of the pytest fixtures, `create_test_user`'s defaults, and the
//! `TestConfig` settings (`test_prefix` names databases, `verbose` logs, `log_sql` logs the SQL
//! of testkit-built managers). On both backends.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::io::Write;
use std::sync::{Arc, Mutex};

use pgdbm_core::{Pool, Row};
use pgdbm_testkit::{
    test_db, test_db_factory, test_db_isolated, test_db_with_data, test_db_with_schema,
    test_db_with_tables, TestConfig, TestDatabase, TestHelpers, TestServer, TEST_SCHEMA,
};

async fn exists(name: &str) -> bool {
    TestServer::shared()
        .unwrap()
        .query_async(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
        )
        .await
        .unwrap()
        == "1"
}

async fn counterparts<P: Pool>() {
    // test_db: a fresh database, dropped by close().
    let t = test_db::<P>().await.unwrap();
    let one: i32 = t.fetch_value("SELECT 1", &[]).await.unwrap().unwrap();
    assert_eq!(one, 1);
    let name = t.name().to_string();
    assert!(name.starts_with("test_"), "{name}");
    t.close().await.unwrap();
    assert!(!exists(&name).await);

    // test_db_with_schema: templates render into test_schema.
    let t = test_db_with_schema::<P>().await.unwrap();
    assert_eq!(t.schema(), Some(TEST_SCHEMA));
    t.execute("CREATE TABLE {{tables.users}} (id INT)", &[])
        .await
        .unwrap();
    let in_schema: i64 = t
        .fetch_value(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'test_schema' \
             AND table_name = 'users'",
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(in_schema, 1);
    t.close().await.unwrap();

    // test_db_with_data: the reference's tables and rows.
    let t = test_db_with_data::<P>().await.unwrap();
    let h = TestHelpers::new(&t);
    assert_eq!(h.count_rows("users", None).await.unwrap(), 3);
    assert_eq!(h.count_rows("projects", None).await.unwrap(), 2);
    assert_eq!(h.count_rows("agents", None).await.unwrap(), 5);
    let bobs: i64 = t
        .fetch_value(
            "SELECT count(*) FROM agents a JOIN users u ON u.id = a.assigned_to \
             WHERE u.email = 'bob@example.com'",
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bobs, 3);
    let alpha: i64 = h
        .count_rows(
            "agents",
            Some("project_id = (SELECT id FROM projects WHERE name = 'Project Alpha')"),
        )
        .await
        .unwrap();
    assert_eq!(alpha, 3);

    // create_test_user: the reference's defaults, each overridable.
    let u = h.create_test_user(None, &[]).await.unwrap();
    let email: String = u.try_get("email").unwrap();
    assert!(
        email.starts_with("test_") && email.ends_with("@example.com") && email.len() == 25,
        "{email}"
    );
    assert_eq!(u.try_get::<_, String>("full_name").unwrap(), "Test User");
    assert!(u.try_get::<_, bool>("is_active").unwrap());
    let other = h.create_test_user(None, &[]).await.unwrap();
    assert_ne!(other.try_get::<_, String>("email").unwrap(), email);
    let d = h
        .create_test_user(
            "dora@example.com",
            &[("full_name", &"Dora"), ("is_active", &false)],
        )
        .await
        .unwrap();
    assert_eq!(d.try_get::<_, String>("full_name").unwrap(), "Dora");
    assert!(!d.try_get::<_, bool>("is_active").unwrap());
    assert_eq!(h.count_rows("users", Some("is_active")).await.unwrap(), 5);
    t.close().await.unwrap();

    // test_db_with_tables without data.
    let t = test_db_with_tables::<P>().await.unwrap();
    let h = TestHelpers::new(&t);
    for table in ["users", "projects", "agents"] {
        assert!(h.table_exists(table).await.unwrap(), "{table}");
        assert_eq!(h.count_rows(table, None).await.unwrap(), 0);
    }
    t.close().await.unwrap();

    // test_db_factory: several databases, all dropped at cleanup.
    let mut factory = test_db_factory::<P>().unwrap();
    let db1 = factory.create_db(Some("db1"), None).await.unwrap();
    let db2 = factory
        .create_db(Some("db2"), Some("custom"))
        .await
        .unwrap();
    db1.execute("CREATE TABLE test1 (id INT)", &[])
        .await
        .unwrap();
    db2.execute("CREATE TABLE {{tables.test2}} (id INT)", &[])
        .await
        .unwrap();
    let names: Vec<String> = factory
        .databases()
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    assert!(names[0].starts_with("test_db1_") && names[1].starts_with("test_db2_"));
    drop((db1, db2));
    factory.cleanup().await.unwrap();
    for n in &names {
        assert!(!exists(n).await, "{n}");
    }

    // test_db_isolated: the body runs in a transaction.
    let seen = test_db_isolated::<P, _, _, _>(|mut tx| async move {
        let r = async {
            tx.execute("CREATE TABLE t (id INT)", &[]).await?;
            tx.execute("INSERT INTO t VALUES (1)", &[]).await?;
            let in_tx: bool = tx
                .fetch_value("SELECT now() = statement_timestamp()", &[])
                .await?
                .unwrap_or(true);
            let n: i64 = tx
                .fetch_value("SELECT count(*) FROM t", &[])
                .await?
                .unwrap_or(0);
            Ok((in_tx, n))
        }
        .await;
        (tx, r)
    })
    .await
    .unwrap();
    assert_eq!(
        seen,
        (false, 1),
        "inside one transaction, now() is its start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counterparts_deadpool() {
    counterparts::<pgdbm_deadpool::DeadpoolPool>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counterparts_bb8() {
    counterparts::<pgdbm_bb8::Bb8Pool>().await;
}

/// Log output captured for one test (the subscriber is set for this thread only).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// One test database with `settings`, a query, and what was logged.
fn run_with(settings: TestConfig, marker: &str) -> (String, String) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let name = rt.block_on(async {
        let test_db = TestDatabase::create_with(TestServer::shared().unwrap(), settings, Some("s"))
            .await
            .unwrap();
        let db = test_db
            .manager::<pgdbm_deadpool::DeadpoolPool>(None)
            .await
            .unwrap();
        let sql = format!("SELECT 42 AS {marker}");
        let v: i32 = db.fetch_value(sql.as_str(), &[]).await.unwrap().unwrap();
        assert_eq!(v, 42);
        db.close().await;
        drop(db);
        let name = test_db.name().to_string();
        test_db.drop_async().await.unwrap();
        name
    });
    (name, captured.text())
}

#[test]
fn settings_do_what_the_reference_says() {
    let mut loud = TestConfig::default();
    loud.test_prefix = "loud_".to_string();
    loud.verbose = true;
    loud.log_sql = true;
    let (name, log) = run_with(loud, "loud_marker");
    assert!(name.starts_with("loud_s_"), "test_prefix names it: {name}");
    assert!(log.contains("SELECT 42 AS loud_marker"), "log_sql: {log}");
    assert!(log.contains("pgdbm::testkit::sql"), "{log}");
    assert!(log.contains("created test database"), "verbose: {log}");
    assert!(log.contains("dropping test database"), "verbose: {log}");
    assert!(log.contains("queries=1"), "verbose query count: {log}");

    let (name, log) = run_with(TestConfig::default(), "quiet_marker");
    assert!(name.starts_with("test_s_"), "{name}");
    assert!(!log.contains("quiet_marker"), "log_sql off: {log}");
    assert!(!log.contains("created test database"), "verbose off: {log}");
}
