//! Tracing spans and Prometheus metrics of pgdbm (`cargo run -p pgdbm --example observability
//! --features metrics`).
//!
//! Installs a `tracing` subscriber that prints each query's span (OpenTelemetry database
//! attributes) and a Prometheus recorder (`metrics-exporter-prometheus`), runs a few queries,
//! and prints the metrics in Prometheus' text format, as a `/metrics` endpoint would serve
//! them. With `DATABASE_URL` set it uses that server; without it, it starts a throwaway
//! PostgreSQL from the local binaries.

use metrics_exporter_prometheus::PrometheusBuilder;
use pgdbm::{Config, Db};
use pgdbm_testkit::{unique_database_name, TestServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("pgdbm=debug")
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .init();
    // In a service, serve `handle.render()` on `/metrics` (or use the exporter's own listener).
    let handle = PrometheusBuilder::new().install_recorder()?;

    let _server_guard;
    let config = match std::env::var("DATABASE_URL") {
        Ok(url) => Config::from_url(&url)?,
        Err(_) => {
            let server = TestServer::start()?;
            let name = unique_database_name("observability")?;
            server.create_database(&name)?;
            let config = server.config(&name);
            _server_guard = server;
            config
        }
    };
    let db = Db::connect(config).await?;
    db.execute("CREATE TABLE items (id int PRIMARY KEY, name text)", &[])
        .await?;
    for i in 0..5i32 {
        db.execute(
            "INSERT INTO items VALUES ($1, $2)",
            &[&i, &format!("item {i}")],
        )
        .await?;
    }
    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM items WHERE name <> 'none'", &[])
        .await?;
    println!("{n:?} items");
    // A failing query: its span carries db.response.status_code = 23505, and
    // pgdbm_query_errors counts it under sqlstate_class 23.
    let _ = db
        .execute("INSERT INTO items VALUES (1, 'duplicate')", &[])
        .await;
    db.publish_pool_metrics();
    println!("{}", handle.render());
    db.close().await;
    Ok(())
}
