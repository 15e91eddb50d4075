//! `#[pgdbm::test]` in use: each test gets a fresh database cloned from a template that was
//! migrated once (per migration set and schema), with its fixtures loaded.

use pgdbm::migrate::EmbeddedMigration;
use pgdbm::{Bb8Db, Db, DbConn, DbTransaction};
use pgdbm_example_testing::{active_users, register, total_spent};

/// The same migrations compiled into the test binary.
static MIGRATIONS: &[EmbeddedMigration] = pgdbm::migrate::embed_migrations!("migrations");

#[pgdbm::test(migrations = "migrations", fixtures("users.sql"))]
async fn counts_active_users(db: Db) {
    assert_eq!(active_users(&db).await.unwrap(), 2);
}

#[pgdbm::test(
    migrations = "migrations",
    schema = "shop",
    fixtures("users.sql", "orders.json")
)]
async fn sums_orders_in_a_schema(db: Db) {
    assert_eq!(db.schema(), Some("shop"));
    assert_eq!(total_spent(&db, 1).await.unwrap(), "24.99");
    assert_eq!(total_spent(&db, 3).await.unwrap(), "0.00");
    let tags: Option<Vec<String>> = db
        .fetch_value(
            "SELECT tags FROM {{tables.orders}} WHERE total = 120.50",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(tags.unwrap(), ["desk", "office"]);
}

#[pgdbm::test(migrator = MIGRATIONS, backend = "bb8")]
async fn registers_on_bb8(db: Bb8Db) -> pgdbm::Result<()> {
    let id = register(&db, "new@example.com", "New").await?;
    assert_eq!(id, 1);
    assert_eq!(active_users(&db).await?, 1);
    Ok(())
}

#[pgdbm::test(migrations = "migrations")]
async fn takes_a_connection(mut conn: DbConn) {
    let n: Option<i64> = conn
        .fetch_value("SELECT count(*) FROM {{tables.users}}", &[])
        .await
        .unwrap();
    assert_eq!(n, Some(0));
}

#[pgdbm::test(migrations = "migrations", fixtures("users.sql"))]
async fn takes_a_transaction(mut tx: DbTransaction) {
    tx.execute("DELETE FROM {{tables.users}}", &[])
        .await
        .unwrap();
    let n: Option<i64> = tx
        .fetch_value("SELECT count(*) FROM {{tables.users}}", &[])
        .await
        .unwrap();
    assert_eq!(n, Some(0));
    // Not committed: dropping the transaction rolls it back.
}

/// A failing test keeps its database and prints where it is; run it to see:
/// `cargo test -p pgdbm-example-testing -- --ignored fails_and_keeps`.
#[pgdbm::test(migrations = "migrations", fixtures("users.sql"))]
#[ignore = "fails on purpose: shows the kept database"]
async fn fails_and_keeps_its_database(db: Db) {
    assert_eq!(
        active_users(&db).await.unwrap(),
        99,
        "look at the kept database"
    );
}
