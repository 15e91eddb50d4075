//! Acquire fairness under load: 64 tasks share 20 connections, each checking out a connection
//! `ITERATIONS` times (default 20) to run `SELECT pg_sleep(0.005)`. Prints the longest and the
//! 99th-percentile wait for a connection with pgdbm-deadpool, plain bb8 (bb8-postgres) and
//! pgdbm-bb8 (bb8 behind a FIFO semaphore).
//!
//! Starts its own throw-away PostgreSQL 15 (needs /usr/lib/postgresql/15/bin and root, like the
//! tests):
//!
//! ```text
//! cargo run --release -p pgdbm-bb8 --example fairness
//! ITERATIONS=50 cargo run --release -p pgdbm-bb8 --example fairness
//! ```
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../pgdbm-deadpool/tests/common/pool_behaviour.rs"]
mod common;

use std::time::{Duration, Instant};

use bb8_postgres::PostgresConnectionManager;
use pgdbm_bb8::Bb8Pool;
use pgdbm_core::Pool;
use pgdbm_deadpool::DeadpoolPool;

const TASKS: usize = 64;
const CONNECTIONS: usize = 20;

fn report(name: &str, mut waits: Vec<Duration>) {
    waits.sort();
    let n = waits.len();
    let max = waits.last().copied().unwrap_or_default();
    let p99 = waits.get(n * 99 / 100).copied().unwrap_or_default();
    let mean = waits.iter().sum::<Duration>() / n.max(1) as u32;
    println!("{name:<16} acquires={n:<6} mean={mean:>10.2?} p99={p99:>10.2?} max={max:>10.2?}");
}

async fn raw_bb8_load(dsn: &str, iterations: usize) -> Vec<Duration> {
    let manager =
        PostgresConnectionManager::new_from_stringlike(dsn, tokio_postgres::NoTls).expect("dsn");
    let pool = bb8::Pool::builder()
        .max_size(CONNECTIONS as u32)
        .min_idle(Some(CONNECTIONS as u32))
        .connection_timeout(Duration::from_secs(120))
        .build(manager)
        .await
        .expect("bb8 pool");
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let pool = pool.clone();
        handles.push(tokio::spawn(async move {
            let mut waits = Vec::with_capacity(iterations);
            for _ in 0..iterations {
                let t = Instant::now();
                let conn = pool.get().await.expect("bb8 get");
                waits.push(t.elapsed());
                conn.query("SELECT pg_sleep(0.005)", &[])
                    .await
                    .expect("query");
            }
            waits
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("join"));
    }
    all
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let iterations: usize = std::env::var("ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let server = common::PgServer::shared();
    let db = server.new_database("fairness");
    let mut config = server.config(&db);
    config.min_connections = CONNECTIONS;
    config.max_connections = CONNECTIONS;
    config.acquire_timeout = Duration::from_secs(120);
    println!("{TASKS} tasks x {iterations} checkouts on {CONNECTIONS} connections, SELECT pg_sleep(0.005)");

    let pool = DeadpoolPool::connect(&config).await.expect("deadpool");
    report(
        "pgdbm-deadpool",
        common::run_load(&pool, TASKS, iterations).await,
    );
    pool.close().await;

    let dsn = format!(
        "host=127.0.0.1 port={} user=postgres dbname={db}",
        server.port()
    );
    report("bb8 (raw)", raw_bb8_load(&dsn, iterations).await);

    let pool = Bb8Pool::connect(&config).await.expect("bb8");
    report(
        "pgdbm-bb8",
        common::run_load(&pool, TASKS, iterations).await,
    );
    pool.close().await;
}
