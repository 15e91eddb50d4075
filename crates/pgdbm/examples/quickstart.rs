//! pgdbm quickstart: templates, inserts, binary COPY, mapping rows to structs, a transaction and
//! pool statistics.
//!
//! With `DATABASE_URL` set it uses that server; without it, it starts a throwaway PostgreSQL
//! from the local binaries (pgdbm-testkit). `DB_DEBUG=1` prints every query (tracing).
//!
//! Run: `cargo run -p pgdbm --example quickstart`

use pgdbm::{Config, Db, FromRow};
use pgdbm_testkit::{unique_database_name, TestServer};

#[derive(Debug, FromRow)]
struct User {
    id: i64,
    email: String,
    #[pgdbm(rename = "display_name")]
    name: Option<String>,
}

fn debug_enabled(var: &str) -> bool {
    matches!(
        std::env::var(var)
            .map(|v| v.to_ascii_lowercase())
            .as_deref(),
        Ok("1" | "true" | "yes")
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if debug_enabled("DB_DEBUG") || debug_enabled("MIGRATION_DEBUG") {
        tracing_subscriber::fmt()
            .with_env_filter("pgdbm=debug")
            .init();
    }

    // 1. A server: DATABASE_URL, or a throwaway one.
    let _server_guard;
    let mut config = match std::env::var("DATABASE_URL") {
        Ok(url) => Config::from_url(&url)?,
        Err(_) => {
            let server = TestServer::start()?;
            let db_name = unique_database_name("quickstart")?;
            server.create_database(&db_name)?;
            let config = server.config(&db_name);
            println!("started a throwaway PostgreSQL on port {}", server.port());
            _server_guard = server;
            config
        }
    };
    config.schema = Some("quickstart".to_string());
    config.min_connections = 2;
    config.max_connections = 5;
    println!("connecting to {}", config.dsn_masked());

    // 2. Connect (deadpool backend by default).
    let db = Db::connect(config).await?;
    db.execute("CREATE SCHEMA IF NOT EXISTS {{schema}}", &[])
        .await?;

    // 3. Templates: {{tables.users}} renders to "quickstart".users.
    db.execute("DROP TABLE IF EXISTS {{tables.users}}", &[])
        .await?;
    db.execute(
        "CREATE TABLE {{tables.users}} (
            id BIGSERIAL PRIMARY KEY,
            email TEXT NOT NULL UNIQUE,
            display_name TEXT
        )",
        &[],
    )
    .await?;
    println!("rendered: {}", db.render("SELECT * FROM {{tables.users}}")?);

    // 4. Inserts.
    let alice: i64 = db
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email, display_name) VALUES ($1, $2)",
            &[&"alice@example.com", &"Alice"],
        )
        .await?;
    println!("inserted alice with id {alice}");
    let rows: Vec<(String, Option<String>)> = (0..100)
        .map(|i| (format!("user{i}@example.com"), None))
        .collect();
    let params: Vec<[pgdbm::Param<'_>; 2]> = rows.iter().map(|(e, n)| [e as _, n as _]).collect();
    let inserted = db
        .execute_many(
            "INSERT INTO {{tables.users}} (email, display_name) VALUES ($1, $2)",
            &params,
        )
        .await?;
    println!("execute_many inserted {inserted} rows");

    // 5. Binary COPY of 10,000 rows.
    let copied_rows: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("bulk{i}@example.com"), format!("Bulk {i}")))
        .collect();
    let copy_params: Vec<[pgdbm::Param<'_>; 2]> =
        copied_rows.iter().map(|(e, n)| [e as _, n as _]).collect();
    let copied = db
        .copy_records_to_table("users", &["email", "display_name"], &copy_params)
        .await?;
    println!("copied {copied} rows");

    // 6. Rows into structs.
    let user: Option<User> = db
        .fetch_one_as(
            "SELECT id, email, display_name FROM {{tables.users}} WHERE email = $1",
            &[&"alice@example.com"],
        )
        .await?;
    if let Some(u) = &user {
        println!(
            "mapped into User: id {} email {} name {:?}",
            u.id, u.email, u.name
        );
    }
    let count: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.users}}", &[])
        .await?;
    println!("users: {}", count.unwrap_or(0));

    // 7. A transaction with a savepoint.
    let mut tx = db.transaction().await?;
    tx.execute(
        "UPDATE {{tables.users}} SET display_name = $1 WHERE id = $2",
        &[&"Alice Smith", &alice],
    )
    .await?;
    {
        let mut sp = tx.savepoint().await?;
        sp.execute("DELETE FROM {{tables.users}}", &[]).await?;
        sp.rollback().await?; // the delete is undone
    }
    tx.commit().await?;
    let name: Option<Option<String>> = db
        .fetch_value(
            "SELECT display_name FROM {{tables.users}} WHERE id = $1",
            &[&alice],
        )
        .await?;
    println!("after the transaction: {:?}", name.flatten());

    // 8. Pool statistics.
    let stats = db.pool_stats();
    println!(
        "pool: size {} idle {} in use {} (min {}, max {})",
        stats.size, stats.idle, stats.in_use, stats.min_size, stats.max_size
    );
    db.close().await;
    Ok(())
}
