//! `execute_many` against plain tokio-postgres: 10 000-row inserts, three ways, one run.
//!
//! - `pgdbm_execute_many`: `PgConnection::execute_many` (prepared once, every row's
//!   Bind/Execute sent as one request with one Sync per chunk between BEGIN and COMMIT);
//! - `tokio_postgres_loop`: a prepared statement executed row by row, each awaited (autocommit);
//! - `tokio_postgres_pipelined`: the same executes issued concurrently on one client
//!   (`try_join_all`), no transaction.
//!
//! Run: `cargo bench -p pgdbm-tokio-postgres --bench execute_many`. It starts a throwaway
//! PostgreSQL (see `tests/support`) and prints the ratios at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use pgdbm_core::Connection;
use postgres_types::ToSql;

const ROWS: usize = 10_000;
const SQL: &str = "INSERT INTO bench (id, name, score) VALUES ($1, $2, $3)";

static TOTALS: Mutex<BTreeMap<&'static str, (Duration, u64)>> = Mutex::new(BTreeMap::new());

fn note(name: &'static str, d: Duration, iters: u64) {
    let mut t = TOTALS.lock().unwrap();
    let e = t.entry(name).or_default();
    e.0 += d;
    e.1 += iters;
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut conn = rt.block_on(async {
        let mut conn = support::connect("bench_many").await;
        conn.batch_execute(
            "CREATE TABLE bench (id int PRIMARY KEY, name text NOT NULL, score float8)",
            None,
        )
        .await
        .unwrap();
        conn
    });
    let ids: Vec<i32> = (0..ROWS as i32).collect();
    let names: Vec<String> = ids.iter().map(|i| format!("name-{i}")).collect();
    let scores: Vec<f64> = ids.iter().map(|i| *i as f64 * 0.5).collect();
    let rows: Vec<[&(dyn ToSql + Sync); 3]> = (0..ROWS)
        .map(|i| [&ids[i] as _, &names[i] as _, &scores[i] as _])
        .collect();
    let refs: Vec<&[&(dyn ToSql + Sync)]> = rows.iter().map(|r| &r[..]).collect();

    let mut group = c.benchmark_group("insert_10000_rows");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));

    group.bench_function("pgdbm_execute_many", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    conn.batch_execute("TRUNCATE bench", None).await.unwrap();
                    let t = Instant::now();
                    let n = conn.execute_many(SQL, &refs, None).await.unwrap();
                    total += t.elapsed();
                    assert_eq!(n, ROWS as u64);
                }
                note("pgdbm_execute_many", total, iters);
                total
            })
        })
    });

    group.bench_function("tokio_postgres_loop", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    conn.batch_execute("TRUNCATE bench", None).await.unwrap();
                    let client = conn.client();
                    let t = Instant::now();
                    let stmt = client.prepare(SQL).await.unwrap();
                    for r in &refs {
                        client.execute(&stmt, r).await.unwrap();
                    }
                    total += t.elapsed();
                }
                note("tokio_postgres_loop", total, iters);
                total
            })
        })
    });

    group.bench_function("tokio_postgres_pipelined", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    conn.batch_execute("TRUNCATE bench", None).await.unwrap();
                    let client = conn.client();
                    let t = Instant::now();
                    let stmt = client.prepare(SQL).await.unwrap();
                    futures_util::future::try_join_all(
                        refs.iter().map(|r| client.execute(&stmt, r)),
                    )
                    .await
                    .unwrap();
                    total += t.elapsed();
                }
                note("tokio_postgres_pipelined", total, iters);
                total
            })
        })
    });
    group.finish();
}

fn report() {
    let t = TOTALS.lock().unwrap();
    let mean = |k: &str| {
        t.get(k)
            .filter(|(_, n)| *n > 0)
            .map(|(d, n)| d.as_secs_f64() / *n as f64)
    };
    println!("\nmean time per 10 000-row insert:");
    for (k, _) in t.iter() {
        if let Some(m) = mean(k) {
            println!("  {k:<26} {:>8.1} ms", m * 1000.0);
        }
    }
    if let Some(ours) = mean("pgdbm_execute_many") {
        for other in ["tokio_postgres_loop", "tokio_postgres_pipelined"] {
            if let Some(m) = mean(other) {
                println!("  {other} / pgdbm_execute_many = {:.2}x", m / ours);
            }
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}
