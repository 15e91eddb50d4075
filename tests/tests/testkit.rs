//! The Pool-generic test-database layer of pgdbm-testkit, for both backends.

use pgdbm::{Error, Pool, Row};
use pgdbm_integration_tests::both_backends;
use pgdbm_testkit::{TestDatabase, TestHelpers, TestServer};

async fn test_database_lifecycle<P: Pool>() {
    let test_db = TestDatabase::create(Some("kit")).await.unwrap();
    let name = test_db.name().to_string();
    assert!(name.starts_with("test_kit"), "{name}");
    let db = test_db.manager::<P>(Some("app")).await.unwrap();
    db.execute(
        "CREATE TABLE {{tables.users}} (id SERIAL PRIMARY KEY, email TEXT NOT NULL, name TEXT, full_name TEXT, is_active BOOL DEFAULT true)",
        &[],
    )
    .await
    .unwrap();
    let helpers = TestHelpers::new(&db);
    let before = helpers.snapshot_table("users", Some("id")).await.unwrap();
    assert!(before.is_empty());
    let alice = helpers
        .create_test_user(
            "alice@example.com",
            &[("name", &"Alice"), ("is_active", &false)],
        )
        .await
        .unwrap();
    assert_eq!(alice.try_get::<_, String>("name").unwrap(), "Alice");
    helpers
        .create_test_user("bob@example.com", &[])
        .await
        .unwrap();
    assert_eq!(helpers.count_rows("users", None).await.unwrap(), 2);
    assert_eq!(
        helpers
            .count_rows("users", Some("is_active"))
            .await
            .unwrap(),
        1
    );
    assert!(helpers.table_exists("users").await.unwrap());
    assert!(helpers.table_exists("app.users").await.unwrap());

    let after = helpers
        .snapshot_table("users", Some("id DESC"))
        .await
        .unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(
        after[0].get("email"),
        Some(&Some("bob@example.com".to_string()))
    );
    assert_eq!(after[1].get("name"), Some(&Some("Alice".to_string())));
    assert_eq!(after[0].get("name"), Some(&None));
    assert_ne!(before, after);
    assert!(matches!(
        helpers
            .snapshot_table("users", Some("id; DROP TABLE x"))
            .await,
        Err(Error::Schema { .. })
    ));

    helpers.truncate_table("users", false).await.unwrap();
    assert_eq!(helpers.count_rows("users", None).await.unwrap(), 0);
    db.close().await;

    // Dropping the handle drops the database, even with connections still open.
    let other = test_db.manager::<P>(None).await.unwrap();
    let _conn = other.acquire().await.unwrap();
    drop(test_db);
    let server = TestServer::shared().unwrap();
    let left = server
        .psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
        )
        .unwrap();
    assert_eq!(left.trim(), "0");
}
both_backends!(test_database, test_database_lifecycle);

#[tokio::test]
async fn bad_suffix_is_an_error() {
    assert!(matches!(
        TestDatabase::create(Some("no good")).await,
        Err(Error::Schema { .. })
    ));
}

/// `assert_table_unchanged` reports added and removed rows; `run_isolated` rolls the body back.
async fn snapshot_assertion_and_isolation<P: Pool>() {
    let test_db = TestDatabase::create(Some("snap")).await.unwrap();
    let db = test_db.manager::<P>(None).await.unwrap();
    db.execute("CREATE TABLE items (id int PRIMARY KEY, name text)", &[])
        .await
        .unwrap();
    db.execute("INSERT INTO items VALUES (1, 'a'), (2, 'b')", &[])
        .await
        .unwrap();
    let before = pgdbm_testkit::snapshot_table(&db, "items", None)
        .await
        .unwrap();
    pgdbm_testkit::assert_table_unchanged(&db, "items", &before)
        .await
        .unwrap();

    let inserted = pgdbm_testkit::run_isolated(&db, |mut tx| async move {
        let r = tx.execute("INSERT INTO items VALUES (3, 'c')", &[]).await;
        (tx, r)
    })
    .await
    .unwrap();
    assert_eq!(inserted, 1);
    pgdbm_testkit::assert_table_unchanged(&db, "items", &before)
        .await
        .unwrap();

    db.execute("UPDATE items SET name = 'x' WHERE id = 1", &[])
        .await
        .unwrap();
    db.execute("INSERT INTO items VALUES (4, 'd')", &[])
        .await
        .unwrap();
    let err = pgdbm_testkit::assert_table_unchanged(&db, "items", &before)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Table 'items' has changed! Added rows: 2 Removed rows: 1"),
        "{err}"
    );
    db.close().await;
    test_db.drop_async().await.unwrap();
}
both_backends!(snapshot_and_isolation, snapshot_assertion_and_isolation);
