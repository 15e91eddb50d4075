//! `#[pgdbm::test]` end to end, and the fixture loader, on a real PostgreSQL.
//!
//! The attribute's keep-on-failure and template-sharing behaviour is seen from outside: the
//! parent tests run the `child_*` tests of this same binary as child processes (`--ignored
//! --exact`) against a private server of their own (`TEST_DB_HOST` and friends), then read
//! the children's stdout/stderr and the server's catalog. The children do nothing harmful when
//! run by hand: without `PGDBM_TESTATTR_CHILD` they pass.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use pgdbm::testkit::{
    load_fixture, load_fixture_file, load_fixtures, TestArgs, TestDatabase, TestFn, TestServer,
};
use pgdbm::{Bb8Db, Database, Db, DbConn, Error, Pool};
use pgdbm_integration_tests::both_backends;

const CHILD_ENV: &str = "PGDBM_TESTATTR_CHILD";

fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

// ---- children (run as separate processes by the parents below) ----

#[pgdbm::test(migrations = "testattr/migrations")]
#[ignore = "a child of `the_database_is_dropped_on_success_and_kept_on_failure`"]
async fn child_passes(db: Db) {
    println!("DBNAME={}", db.config().database);
}

#[pgdbm::test(migrations = "testattr/migrations", backend = "bb8")]
#[ignore = "a child of `the_database_is_dropped_on_success_and_kept_on_failure`"]
async fn child_returns_err(db: Bb8Db) -> Result<(), String> {
    println!("DBNAME={}", db.config().database);
    if is_child() {
        Err("failed on purpose".to_string())
    } else {
        Ok(())
    }
}

#[pgdbm::test(migrations = "testattr/migrations", fixtures("testattr/items.json"))]
#[ignore = "a child of `the_database_is_dropped_on_success_and_kept_on_failure`"]
async fn child_panics(db: Db) {
    println!("DBNAME={}", db.config().database);
    assert!(!is_child(), "panicked on purpose");
}

macro_rules! template_children {
    ($($name:ident: $backend:literal),*) => {$(
        #[pgdbm::test(migrations = "testattr/migrations", schema = "tpl", backend = $backend)]
        #[ignore = "a child of `the_template_is_built_once_for_eight_tests_in_two_processes`"]
        async fn $name(mut conn: DbConn) {
            let n: Option<i64> = conn
                .fetch_value("SELECT count(*) FROM {{tables.items}}", &[])
                .await
                .unwrap();
            assert_eq!(n, Some(0));
        }
    )*};
}

// Half on each backend: `DbConn` is the deadpool connection, so the bb8 ones take a `Bb8Db`.
template_children!(
    child_template_1: "deadpool",
    child_template_2: "deadpool",
    child_template_3: "deadpool",
    child_template_4: "deadpool"
);

macro_rules! template_children_bb8 {
    ($($name:ident),*) => {$(
        #[pgdbm::test(migrations = "testattr/migrations", schema = "tpl", backend = "bb8")]
        #[ignore = "a child of `the_template_is_built_once_for_eight_tests_in_two_processes`"]
        async fn $name(db: Bb8Db) {
            let n: Option<i64> = db
                .fetch_value("SELECT count(*) FROM {{tables.stock}}", &[])
                .await
                .unwrap();
            assert_eq!(n, Some(0));
        }
    )*};
}

template_children_bb8!(
    child_template_5,
    child_template_6,
    child_template_7,
    child_template_8
);

// ---- parents ----

/// Starts this test binary with `args` as a child process on `server`.
fn spawn_child(server: &TestServer, args: &[&str]) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--nocapture"])
        .args(args)
        .env(CHILD_ENV, "1")
        .env("TEST_DB_HOST", server.host())
        .env("TEST_DB_PORT", server.port().to_string())
        .env("TEST_DB_USER", server.user())
        .env("TEST_DB_PASSWORD", server.password().unwrap())
        .env_remove("TEST_DB_ALLOW_REMOTE")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn run_child(server: &TestServer, test: &str) -> (Output, String, String) {
    let out = spawn_child(server, &["--exact", test])
        .wait_with_output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// The database name a child printed.
fn printed_name(stdout: &str) -> String {
    let name = stdout
        .lines()
        .find_map(|l| l.strip_prefix("DBNAME="))
        .unwrap_or_else(|| panic!("no DBNAME line in:\n{stdout}"))
        .trim()
        .to_string();
    pgdbm::testkit::validate_database_name(&name).unwrap();
    name
}

fn database_exists(server: &TestServer, name: &str) -> bool {
    pgdbm::testkit::validate_database_name(name).unwrap();
    let n = server
        .psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
        )
        .unwrap();
    n == "1"
}

#[test]
fn the_database_is_dropped_on_success_and_kept_on_failure() {
    let server = TestServer::start().unwrap();
    let password = server.password().unwrap().to_string();

    let (out, stdout, stderr) = run_child(&server, "child_passes");
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let passed = printed_name(&stdout);
    assert!(
        !database_exists(&server, &passed),
        "{passed} survived a passing test"
    );
    assert!(!stderr.contains("kept its database"), "{stderr}");

    for (test, how) in [
        ("child_returns_err", "returned an error"),
        ("child_panics", "panicked"),
    ] {
        let (out, stdout, stderr) = run_child(&server, test);
        assert!(!out.status.success(), "{test} passed:\n{stdout}\n{stderr}");
        let kept = printed_name(&stdout);
        let url = server.display_url(&kept);
        let line = format!(
            "pgdbm-testkit: test `test_attr::{test}` {how}; kept its database {kept} ({url})"
        );
        assert!(stderr.contains(&line), "no `{line}` in:\n{stderr}");
        assert!(
            !stderr.contains(&password),
            "the password was printed:\n{stderr}"
        );
        assert!(
            database_exists(&server, &kept),
            "{kept} was dropped after a failing test"
        );
        if test == "child_panics" {
            // Its fixture was loaded before the body ran, and is still there to look at.
            assert_eq!(
                server.psql(&kept, "SELECT count(*) FROM items").unwrap(),
                "3"
            );
            assert_eq!(
                server.psql(&kept, "SELECT sum(qty) FROM stock").unwrap(),
                "14"
            );
        }
    }
}

#[test]
fn the_template_is_built_once_for_eight_tests_in_two_processes() {
    let server = TestServer::start().unwrap();
    let args = ["child_template_", "--test-threads", "8"];
    let children = [spawn_child(&server, &args), spawn_child(&server, &args)];
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut builds = 0;
    for out in &outputs {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(
            stdout.contains("test result: ok. 8 passed"),
            "{stdout}\n{stderr}"
        );
        builds += stderr.matches("built the template database").count();
    }
    assert_eq!(builds, 1, "the template was built {builds} times");
    let templates = server
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'pgdbm\\_tpl\\_%' AND datistemplate",
        )
        .unwrap();
    assert_eq!(templates, "1");
    // What the children left are the clones they had prepared ahead and not used; marked with
    // their (now dead) pids, so the orphan sweep drops them.
    let swept = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(server.sweep_orphans())
        .unwrap();
    assert!(
        swept.len() <= 2 * 3,
        "more than the prepared clones left: {swept:?}"
    );
    let left = server
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'test\\_%'",
        )
        .unwrap();
    assert_eq!(left, "0", "passing tests left databases behind");
}

// ---- a changed migration, through the runner the attribute calls ----

async fn sees_only_a<P: Pool>(db: Database<P>) {
    let columns: Option<String> = db
        .fetch_value(
            "SELECT string_agg(attname::text, ',' ORDER BY attnum) FROM pg_attribute \
             WHERE attrelid = 't'::regclass AND attnum > 0",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(columns.as_deref(), Some("a"));
}

async fn sees_a_and_b<P: Pool>(db: Database<P>) {
    let columns: Option<String> = db
        .fetch_value(
            "SELECT string_agg(attname::text, ',' ORDER BY attnum) FROM pg_attribute \
             WHERE attrelid = 't'::regclass AND attnum > 0",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(columns.as_deref(), Some("a,b"));
}

fn is_template(name: &str) -> bool {
    let server = TestServer::shared().unwrap();
    server
        .psql(
            "postgres",
            &format!("SELECT datistemplate FROM pg_database WHERE datname = '{name}'"),
        )
        .unwrap()
        == "t"
}

fn a_changed_migration_gives_a_new_template_on<P: Pool>(backend: &str) {
    let dir = std::env::temp_dir().join(format!("pgdbm-testattr-{backend}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("001_t.sql");
    let dir_text = dir.to_str().unwrap();
    let migrations = || pgdbm::__test::migrations_dir::<P>("/", dir_text);

    std::fs::write(&file, format!("-- {backend}\nCREATE TABLE t (a INT);\n")).unwrap();
    let first = migrations().unwrap().template_name(None);
    let f: fn(Database<P>) -> _ = sees_only_a::<P>;
    f.run_test(TestArgs::new("test_attr::changed_1").migrations(migrations()));
    assert!(is_template(&first));

    std::fs::write(
        &file,
        format!("-- {backend}\nCREATE TABLE t (a INT, b INT);\n"),
    )
    .unwrap();
    let second = migrations().unwrap().template_name(None);
    assert_ne!(first, second);
    let f: fn(Database<P>) -> _ = sees_a_and_b::<P>;
    f.run_test(TestArgs::new("test_attr::changed_2").migrations(migrations()));
    assert!(is_template(&second));
    // The old one is still a valid template for its own files.
    assert!(is_template(&first));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_changed_migration_gives_a_new_template_deadpool() {
    a_changed_migration_gives_a_new_template_on::<pgdbm::DeadpoolPool>("deadpool");
}

#[test]
fn a_changed_migration_gives_a_new_template_bb8() {
    a_changed_migration_gives_a_new_template_on::<pgdbm::Bb8Pool>("bb8");
}

#[test]
fn a_missing_migrations_directory_fails_the_test_with_its_path() {
    let migrations = pgdbm::__test::migrations_dir::<pgdbm::DeadpoolPool>("/nonexistent", "m");
    let e = migrations.unwrap_err().to_string();
    assert!(e.contains("/nonexistent/m"), "{e}");
    let f: fn(Db) -> _ = sees_only_a::<pgdbm::DeadpoolPool>;
    let panic =
        std::panic::catch_unwind(|| {
            f.run_test(TestArgs::new("test_attr::missing").migrations(
                pgdbm::__test::migrations_dir::<pgdbm::DeadpoolPool>("/nonexistent", "m"),
            ))
        })
        .unwrap_err();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("test_attr::missing"), "{message}");
    assert!(message.contains("/nonexistent/m"), "{message}");
}

// ---- fixtures ----

fn fixtures_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/testattr"))
}

async fn migrated<P: Pool>(test_db: &TestDatabase, schema: Option<&str>) -> Database<P> {
    let db = test_db.manager::<P>(schema).await.unwrap();
    for file in ["001_items.sql", "002_stock.sql"] {
        let sql = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("testattr/migrations")
                .join(file),
        )
        .unwrap();
        db.acquire()
            .await
            .unwrap()
            .batch_execute(&sql)
            .await
            .unwrap();
    }
    db
}

async fn json_fixtures_fill_typed_columns<P: Pool>() {
    let test_db = TestDatabase::create(Some("fixjson")).await.unwrap();
    let db = migrated::<P>(&test_db, Some("shop")).await;
    load_fixture_file(&db, fixtures_dir().join("items.json"))
        .await
        .unwrap();
    let row = db
        .fetch_one(
            "SELECT name, price::text AS price, added_on::text AS added_on, \
             (added_at AT TIME ZONE 'UTC')::text AS added_at, tags, attrs->>'colour' AS colour, \
             ref::text AS ref, flag FROM {{tables.items}} WHERE id = 1",
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    use pgdbm::Row;
    assert_eq!(row.try_get::<_, String>("name").unwrap(), "pen");
    assert_eq!(row.try_get::<_, String>("price").unwrap(), "1.50");
    assert_eq!(row.try_get::<_, String>("added_on").unwrap(), "2026-12-01");
    assert_eq!(
        row.try_get::<_, String>("added_at").unwrap(),
        "2026-12-01 09:00:00"
    );
    assert_eq!(
        row.try_get::<_, Vec<Option<String>>>("tags").unwrap(),
        [Some("office".to_string()), None]
    );
    assert_eq!(row.try_get::<_, String>("colour").unwrap(), "blue");
    assert_eq!(
        row.try_get::<_, String>("ref").unwrap(),
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    );
    assert!(row.try_get::<_, bool>("flag").unwrap());
    // Columns a row leaves out get their defaults; JSON null is NULL.
    let defaults: Option<String> = db
        .fetch_value(
            "SELECT string_agg(format('%s:%s:%s', id, flag, attrs IS NULL), ',' ORDER BY id) \
             FROM {{tables.items}} WHERE id > 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(defaults.as_deref(), Some("2:f:t,3:f:t"));
    let qty: Option<i64> = db
        .fetch_value("SELECT sum(qty)::bigint FROM {{tables.stock}}", &[])
        .await
        .unwrap();
    assert_eq!(qty, Some(14));
    db.close().await;
    test_db.drop_async().await.unwrap();
}

both_backends!(json_fixtures, json_fixtures_fill_typed_columns);

async fn a_directory_loads_in_name_order<P: Pool>() {
    let test_db = TestDatabase::create(Some("fixdir")).await.unwrap();
    let db = migrated::<P>(&test_db, None).await;
    // One directory per backend: both bodies run at once in this process.
    let dir = std::env::temp_dir().join(format!(
        "pgdbm-fixdir-{}-{}",
        std::process::id(),
        std::any::type_name::<P>()
            .rsplit("::")
            .next()
            .unwrap_or("pool")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // b_ refers to a_'s row: it only works in name order.
    std::fs::write(
        dir.join("a_items.json"),
        r#"{"items": [{"id": 7, "name": "box", "price": 2}]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("b_stock.sql"),
        "INSERT INTO {{tables.stock}} (item_id, qty) VALUES (7, 1);",
    )
    .unwrap();
    std::fs::write(dir.join("README.md"), "not a fixture").unwrap();
    let loaded = load_fixtures(&db, &dir).await.unwrap();
    assert_eq!(loaded, ["a_items.json", "b_stock.sql"]);
    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.stock}}", &[])
        .await
        .unwrap();
    assert_eq!(n, Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
    db.close().await;
    test_db.drop_async().await.unwrap();
}

both_backends!(fixture_directory, a_directory_loads_in_name_order);

async fn fixture_errors_name_file_table_and_row<P: Pool>() {
    let test_db = TestDatabase::create(Some("fixerr")).await.unwrap();
    let db = migrated::<P>(&test_db, None).await;
    let message = |e: Error| e.to_string();

    let e = message(
        load_fixture_file(&db, fixtures_dir().join("bad_row.json"))
            .await
            .unwrap_err(),
    );
    assert!(e.contains("bad_row.json"), "{e}");
    assert!(e.contains("table `items`, row 2"), "{e}");
    assert!(e.contains("column `price` (numeric)"), "{e}");
    assert!(
        !e.contains("params"),
        "the copy's own numbering and parameters leaked: {e}"
    );
    // The file ran in one transaction: its first row is not there either.
    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM items", &[])
        .await
        .unwrap();
    assert_eq!(n, Some(0));

    // A server-side failure (CHECK) on the second row of a table.
    let e = message(
        load_fixture(
            &db,
            "neg.json",
            r#"{"items": [{"id": 1, "name": "a", "price": 1}], "stock": [{"item_id": 1, "qty": 1}, {"item_id": 1, "qty": -1}]}"#,
        )
        .await
        .unwrap_err(),
    );
    assert!(e.contains("neg.json") && e.contains("table `stock`"), "{e}");

    for (json, needle) in [
        (
            r#"{"users; DROP TABLE items": [{"a": 1}]}"#,
            "users; DROP TABLE items",
        ),
        (r#"{"items": [{"id": 1, "na\"me": "x"}]}"#, "table `items`"),
        (r#"{"items": {"id": 1}}"#, "array of row objects"),
        (r#"{"items": [1]}"#, "row 1"),
        (r#"[]"#, "not a JSON fixture"),
        (r#"{"nope": [{"a": 1}]}"#, "table `nope`"),
    ] {
        let e = message(load_fixture(&db, "x.json", json).await.unwrap_err());
        assert!(e.contains("x.json") && e.contains(needle), "{json}: {e}");
    }
    let e = message(
        load_fixture(&db, "broken.sql", "INSERT INTO nope VALUES (1)")
            .await
            .unwrap_err(),
    );
    assert!(e.contains("broken.sql"), "{e}");
    let e = message(load_fixture(&db, "data.csv", "a,b").await.unwrap_err());
    assert!(e.contains(".sql") && e.contains(".json"), "{e}");
    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM items", &[])
        .await
        .unwrap();
    assert_eq!(n, Some(0), "a failed fixture left rows behind");
    db.close().await;
    test_db.drop_async().await.unwrap();
}

both_backends!(fixture_errors, fixture_errors_name_file_table_and_row);

// ---- the attribute's own forms, in this process ----

#[pgdbm::test(
    migrations = "testattr/migrations",
    schema = "inv",
    fixtures("testattr/items.json", "testattr/more_items.sql")
)]
async fn fixtures_are_loaded_in_the_schema(db: Db) {
    assert_eq!(db.schema(), Some("inv"));
    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM inv.items", &[])
        .await
        .unwrap();
    assert_eq!(n, Some(4));
}

#[pgdbm::test(
    migrations = "testattr/migrations",
    backend = "bb8",
    fixtures("testattr/items.json")
)]
async fn fixtures_are_loaded_on_bb8(db: Bb8Db) -> pgdbm::Result<()> {
    let n: Option<i64> = db.fetch_value("SELECT count(*) FROM items", &[]).await?;
    assert_eq!(n, Some(3));
    Ok(())
}

#[pgdbm::test]
async fn without_migrations_the_database_is_empty(db: Db) {
    let n: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, Some(0));
}

#[pgdbm::test(migrations = "testattr/migrations")]
#[should_panic(expected = "inside the test")]
async fn a_panic_reaches_the_harness(_db: Db) {
    panic!("inside the test");
}

#[test]
fn a_failing_fixture_fails_the_test_and_keeps_the_database() {
    const BAD: &[pgdbm::testkit::Fixture] = &[pgdbm::testkit::Fixture {
        name: "testattr/bad_row.json",
        contents: include_str!("../fixtures/testattr/bad_row.json"),
    }];
    let f: fn(Db) -> _ = sees_only_a::<pgdbm::DeadpoolPool>;
    let panic = std::panic::catch_unwind(|| {
        f.run_test(
            TestArgs::new("test_attr::bad_fixture_keeps")
                .migrations(pgdbm::__test::migrations_dir::<pgdbm::DeadpoolPool>(
                    env!("CARGO_MANIFEST_DIR"),
                    "testattr/migrations",
                ))
                .fixtures(BAD),
        )
    })
    .unwrap_err();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("fixture `testattr/bad_row.json`, table `items`, row 2"),
        "{message}"
    );
    let server = TestServer::shared().unwrap();
    let kept = server
        .psql(
            "postgres",
            &format!(
                "SELECT datname FROM pg_database WHERE datname LIKE 'test\\_bad\\_fixture\\_keeps\\_{}\\_%'",
                std::process::id()
            ),
        )
        .unwrap();
    assert!(!kept.is_empty() && !kept.contains('\n'), "kept: {kept:?}");
    // The copy ran in one transaction: nothing of the bad file is in the kept database.
    assert_eq!(
        server.psql(&kept, "SELECT count(*) FROM items").unwrap(),
        "0"
    );
    server.drop_database(&kept).unwrap();
}

async fn numeric_and_time_values_match_the_servers_own_parsing<P: Pool>() {
    let test_db = TestDatabase::create(Some("fixnum")).await.unwrap();
    let db = test_db.manager::<P>(None).await.unwrap();
    db.execute(
        "CREATE TABLE n (i INT, v NUMERIC, d DATE, ts TIMESTAMP, tz TIMESTAMPTZ, t TIME)",
        &[],
    )
    .await
    .unwrap();
    let numbers = [
        "0",
        "-0",
        "1",
        "-1",
        "0.1",
        "-0.0001",
        "123456789.123456789",
        "1e10",
        "1.5E-7",
        "99999999999999999999.99",
        "10000",
        "0.00010000",
        "1e-20",
        "NaN",
        "+3.25",
        "00012.50",
        "-98765.4321e3",
        "5e0",
    ];
    let times = [
        (
            "1999-12-31",
            "1999-12-31 23:59:59.999999",
            "2000-01-01T00:00:00Z",
            "00:00",
        ),
        (
            "2000-02-29",
            "2000-02-29 12:00",
            "2026-12-02 10:30:00.5+05:30",
            "23:59:59.5",
        ),
        (
            "1970-01-01",
            "1970-01-01T00:00:01",
            "1969-07-20 20:17:40-04",
            "12:34:56",
        ),
        (
            "2400-12-31",
            "1900-03-01 01:02:03",
            "2100-01-01 00:00:00+0000",
            "01:00:00.000001",
        ),
    ];
    let rows: Vec<serde_json::Value> = numbers
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let (d, ts, tz, t) = times[i % times.len()];
            serde_json::json!({"i": i, "v": v, "d": d, "ts": ts, "tz": tz, "t": t})
        })
        .collect();
    let json = serde_json::json!({ "n": rows }).to_string();
    load_fixture(&db, "n.json", &json).await.unwrap();
    for (i, v) in numbers.iter().enumerate() {
        let (d, ts, tz, t) = times[i % times.len()];
        let i = i as i32;
        let same: Option<bool> = db
            .fetch_value(
                "SELECT v::text = $2::text::numeric::text AND d = $3::text::date \
                 AND ts = $4::text::timestamp AND tz = $5::text::timestamptz \
                 AND t = $6::text::time FROM n WHERE i = $1",
                &[&i, &v, &d, &ts, &tz, &t],
            )
            .await
            .unwrap();
        assert_eq!(same, Some(true), "row {i}: {v} {d} {ts} {tz} {t}");
    }
    db.close().await;
    test_db.drop_async().await.unwrap();
}

both_backends!(
    json_values_match_the_server,
    numeric_and_time_values_match_the_servers_own_parsing
);

#[test]
fn a_failing_migration_fails_the_test_and_leaves_no_template() {
    let dir = std::env::temp_dir().join(format!("pgdbm-testattr-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("001_ok.sql"), "CREATE TABLE t (a INT);").unwrap();
    std::fs::write(dir.join("002_bad.sql"), "CREATE TABLE t (a INT);").unwrap();
    let dir_text = dir.to_str().unwrap();
    let migrations = || pgdbm::__test::migrations_dir::<pgdbm::Bb8Pool>("/", dir_text);
    let template = migrations().unwrap().template_name(None);
    let f: fn(Bb8Db) -> _ = sees_only_a::<pgdbm::Bb8Pool>;
    let panic = std::panic::catch_unwind(|| {
        f.run_test(TestArgs::new("test_attr::bad_migration").migrations(migrations()))
    })
    .unwrap_err();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("test_attr::bad_migration"), "{message}");
    assert!(message.contains("002_bad.sql"), "{message}");
    assert!(message.contains("already exists"), "{message}");
    let server = TestServer::shared().unwrap();
    assert!(
        !database_exists(server, &template),
        "a half-built template was left"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
