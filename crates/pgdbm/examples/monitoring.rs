//! pgdbm monitoring: query metrics, slow queries by a per-call threshold, the history without
//! failed queries, `explain_query`, timing a function with `log_query_performance`, and rows as
//! JSON.
//!
//! With `DATABASE_URL` set it uses that server; without it, it starts a throwaway PostgreSQL
//! from the local binaries (pgdbm-testkit). It prints the `pgdbm::perf` and `pgdbm::slow` log
//! lines.
//!
//! Run: `cargo run -p pgdbm --example monitoring --features serde_json`

use std::time::Duration;

use pgdbm::{log_query_performance, Config, Db, Monitor, MonitorConfig, Row};
use pgdbm_testkit::{unique_database_name, TestServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("pgdbm::perf=debug,pgdbm::slow=warn")
        .init();

    let _server_guard;
    let config = match std::env::var("DATABASE_URL") {
        Ok(url) => Config::from_url(&url)?,
        Err(_) => {
            let server = TestServer::start()?;
            let name = unique_database_name("monitoring")?;
            server.create_database(&name)?;
            let config = server.config(&name);
            _server_guard = server;
            config
        }
    };
    let db = Db::connect(config).await?;

    // 1. A monitor sees every query of the database and its views.
    let monitor = Monitor::attach(
        &db,
        MonitorConfig {
            slow_query_threshold: Duration::from_millis(500),
            ..MonitorConfig::default()
        },
    );
    db.execute("DROP TABLE IF EXISTS items", &[]).await?;
    db.execute(
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, tags jsonb)",
        &[],
    )
    .await?;
    db.execute(
        "INSERT INTO items SELECT g, 'item ' || g, '[\"a\"]' FROM generate_series(1, 10000) g",
        &[],
    )
    .await?;
    db.execute("ANALYZE items", &[]).await?;
    db.execute("SELECT pg_sleep(0.05)", &[]).await?;
    let _ = db.execute("SELECT * FROM no_such_table", &[]).await; // a failed query

    let m = monitor.query_metrics();
    println!(
        "{} queries, {} failed, avg {:.1} ms",
        m.total_queries, m.failed_queries, m.avg_duration_ms
    );
    // Slow by the configured 500 ms: probably none. By a per-call 40 ms: the pg_sleep.
    println!("slow (configured): {}", monitor.slow_queries(10).len());
    for r in monitor.slow_queries_over(Duration::from_millis(40), 10) {
        println!("slow (>= 40 ms): {:.1} ms {}", r.duration_ms(), r.sql);
    }
    let ok_only = monitor.query_history_filtered(100, false);
    assert!(ok_only.iter().all(|r| !r.failed()));
    println!("history without errors: {} queries", ok_only.len());

    // 2. The plan of an indexed lookup.
    let plan = db
        .explain_query("SELECT name FROM items WHERE id = $1", &[&42i32], false)
        .await?;
    println!("plan nodes: {:?}", plan.node_types());
    assert!(plan
        .node_types()
        .iter()
        .any(|n| n == "Index Scan" || n == "Index Only Scan"));
    let analyzed = db
        .explain_query("SELECT count(*) FROM items", &[], true)
        .await?;
    println!("analyzed: {} ms", analyzed.to_value()?[0]["Execution Time"]);

    // 3. Time a function: slow or failed calls are logged under `pgdbm::perf`.
    let names = log_query_performance("load_names", Duration::from_millis(100), async {
        db.fetch_all("SELECT name FROM items WHERE id < $1 ORDER BY id", &[&4i32])
            .await
    })
    .await?;
    println!("{} names", names.len());
    let _ = log_query_performance("broken_report", Duration::from_millis(100), async {
        db.fetch_all("SELECT * FROM no_such_table", &[]).await
    })
    .await;

    // 4. Rows as JSON (feature `serde_json`); JSON text binds to jsonb as it is.
    db.execute(
        "UPDATE items SET tags = $1 WHERE id = 1",
        &[&r#"["new", "json"]"#],
    )
    .await?;
    let row = db
        .fetch_one("SELECT id, name, tags FROM items WHERE id = 1", &[])
        .await?
        .ok_or("row 1 is missing")?;
    println!("{}", row.to_json()?);
    db.close().await;
    Ok(())
}
