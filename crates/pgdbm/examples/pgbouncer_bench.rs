//! Point-select throughput directly and through PgBouncer (transaction mode), and the cost of
//! `StatementMode::Unnamed` against the default statement cache (docs/benchmarks.md,
//! "PgBouncer and the statement modes").
//!
//! Contenders, each a deadpool `Database` with 16 connections, all on one throwaway server:
//! direct + `Cached` (the baseline), direct + `Unnamed`, PgBouncer 1.18 transaction mode
//! (`default_pool_size` 4) + `Unnamed` and PgBouncer session mode + `Cached` (the hop alone).
//! Two workloads: one task (latency-bound) and 16 concurrent tasks. Rounds alternate between the
//! contenders; the figure is each contender's median round as a ratio of the baseline's time.
//!
//! Run: `cargo run --release -p pgdbm --example pgbouncer_bench` (needs `scripts/setup` for
//! pgbouncer). `PGBOUNCER_BENCH_ROUNDS` (default 7) and `PGBOUNCER_BENCH_QUERIES` (queries per
//! round and workload, default 4000) change the size.

use std::time::{Duration, Instant};

use pgdbm::{Config, DeadpoolDb, StatementMode};
use pgdbm_testkit::{
    unique_database_name, PoolMode, TestPgBouncer, TestPgBouncerOptions, TestServer,
};

const SQL: &str = "SELECT id, name FROM bench_users WHERE id = $1";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn round(db: &DeadpoolDb, tasks: usize, queries: usize) -> pgdbm::Result<Duration> {
    let per_task = queries / tasks;
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let db = db.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    let id = i32::try_from((t * per_task + i) % 1000 + 1).unwrap_or(1);
                    let row = db.fetch_one(SQL, &[&id]).await?;
                    std::hint::black_box(row);
                }
                Ok::<(), pgdbm::Error>(())
            })
        })
        .collect();
    for h in handles {
        h.await
            .map_err(|e| pgdbm::Error::transaction(format!("benchmark task failed: {e}")))??;
    }
    Ok(started.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds = env_usize("PGBOUNCER_BENCH_ROUNDS", 7).max(1);
    let queries = env_usize("PGBOUNCER_BENCH_QUERIES", 4000).max(16);

    let server = TestServer::shared()?;
    let name = unique_database_name("pgbouncer_bench")?;
    server.create_database(&name)?;
    server.psql(
        &name,
        "CREATE TABLE bench_users (id INT PRIMARY KEY, name TEXT);
         INSERT INTO bench_users SELECT g, 'user ' || g FROM generate_series(1, 1000) g;
         ANALYZE bench_users;",
    )?;
    let transaction = TestPgBouncer::start_with(
        server,
        TestPgBouncerOptions::default()
            .pool_mode(PoolMode::Transaction)
            .default_pool_size(4),
    )?;
    let session = TestPgBouncer::start_with(
        server,
        TestPgBouncerOptions::default()
            .pool_mode(PoolMode::Session)
            .default_pool_size(16),
    )?;
    let sized = |mut c: Config, mode: StatementMode| {
        c.min_connections = 16;
        c.max_connections = 16;
        c.statement_mode = mode;
        c
    };
    let contenders: Vec<(&str, Config)> = vec![
        (
            "direct, cached statements",
            sized(server.config(&name), StatementMode::Cached),
        ),
        (
            "direct, unnamed statements",
            sized(server.config(&name), StatementMode::Unnamed),
        ),
        (
            "PgBouncer transaction mode (pool 4), unnamed",
            sized(transaction.config(&name), StatementMode::Unnamed),
        ),
        (
            "PgBouncer session mode, cached",
            sized(session.config(&name), StatementMode::Cached),
        ),
    ];
    let mut dbs = Vec::new();
    for (label, config) in &contenders {
        let db = DeadpoolDb::connect(config.clone()).await?;
        // Warm up: every connection opened and the statement described or prepared.
        round(&db, 16, 16 * 20).await?;
        dbs.push((*label, db));
    }

    for tasks in [1usize, 16] {
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); dbs.len()];
        for r in 0..rounds {
            // Alternate the order so drifting machine load hits every contender alike.
            let order: Vec<usize> = if r % 2 == 0 {
                (0..dbs.len()).collect()
            } else {
                (0..dbs.len()).rev().collect()
            };
            for i in order {
                times[i].push(round(&dbs[i].1, tasks, queries).await?);
            }
        }
        let medians: Vec<Duration> = times.into_iter().map(median).collect();
        let base = medians[0].as_secs_f64();
        println!(
            "\n{tasks} task(s), {queries} point selects per round, median of {rounds} rounds:"
        );
        println!("| contender | time ratio to direct cached | queries/s |");
        println!("|---|---|---|");
        for ((label, _), m) in dbs.iter().zip(&medians) {
            println!(
                "| {label} | {:.2} | {:.0} |",
                m.as_secs_f64() / base,
                queries as f64 / m.as_secs_f64()
            );
        }
    }
    for (_, db) in dbs {
        db.close().await;
    }
    Ok(())
}
