//! Point selects: pgdbm (deadpool and bb8 backends) side by side with raw tokio-postgres, in one
//! run, reported as ratios. Rounds alternate between the contenders so machine noise hits all
//! of them alike; the figure per contender is the median of its rounds.
//!
//! Run: `cargo bench -p pgdbm --features bb8 --bench point_select`
//! (`POINT_SELECT_ROUNDS` and `POINT_SELECT_QUERIES` change the sizes.)

use std::time::{Duration, Instant};

use pgdbm::{Bb8Db, Config, DeadpoolDb};
use pgdbm_testkit::{unique_database_name, TestServer};

const SQL: &str = "SELECT id, name FROM bench_users WHERE id = $1";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo test --all-targets` runs this without `--bench`: then only a quick smoke run.
    let measuring = std::env::args().any(|a| a == "--bench");
    let (default_rounds, default_queries) = if measuring { (15, 2_000) } else { (1, 20) };
    let rounds = env_usize("POINT_SELECT_ROUNDS", default_rounds).max(1);
    let per_round = env_usize("POINT_SELECT_QUERIES", default_queries).max(1);
    let server = TestServer::shared()?;
    let name = unique_database_name("bench_point")?;
    server.create_database(&name)?;
    let mut config: Config = server.config(&name);
    config.min_connections = 1;
    config.max_connections = 1;

    // Raw tokio-postgres: one client, a statement prepared once (the best case for raw).
    let (client, connection) =
        tokio_postgres::connect(&server.connection_url(&name), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE bench_users (id INT PRIMARY KEY, name TEXT);
             INSERT INTO bench_users SELECT g, 'user ' || g FROM generate_series(1, 1000) g;
             ANALYZE bench_users;",
        )
        .await?;
    let stmt = client.prepare(SQL).await?;

    let deadpool = DeadpoolDb::connect(config.clone()).await?;
    let bb8 = Bb8Db::connect(config.clone()).await?;

    let mut raw_t = Vec::new();
    let mut raw_unprepared_t = Vec::new();
    let mut dp_t = Vec::new();
    let mut bb_t = Vec::new();
    for round in 0..=rounds {
        let t = Instant::now();
        for i in 0..per_round {
            let id = (i % 1000) as i32 + 1;
            let row = client.query_one(&stmt, &[&id]).await?;
            std::hint::black_box(row.get::<_, String>(1));
        }
        let raw = t.elapsed();

        let t = Instant::now();
        for i in 0..per_round {
            let id = (i % 1000) as i32 + 1;
            let row = client.query_one(SQL, &[&id]).await?;
            std::hint::black_box(row.get::<_, String>(1));
        }
        let raw_unprepared = t.elapsed();

        let t = Instant::now();
        for i in 0..per_round {
            let id = (i % 1000) as i32 + 1;
            let row = deadpool.fetch_one(SQL, &[&id]).await?;
            std::hint::black_box(row.map(|r| pgdbm::Row::try_get::<_, String>(&r, &1usize)));
        }
        let dp = t.elapsed();

        let t = Instant::now();
        for i in 0..per_round {
            let id = (i % 1000) as i32 + 1;
            let row = bb8.fetch_one(SQL, &[&id]).await?;
            std::hint::black_box(row.map(|r| pgdbm::Row::try_get::<_, String>(&r, &1usize)));
        }
        let bb = t.elapsed();

        if round > 0 {
            // round 0 warms caches and connections
            raw_t.push(raw);
            raw_unprepared_t.push(raw_unprepared);
            dp_t.push(dp);
            bb_t.push(bb);
        }
    }
    let raw = median(raw_t);
    let per = |d: Duration| d.as_secs_f64() * 1e6 / per_round as f64;
    println!("point select, {rounds} rounds x {per_round} queries, median per query:");
    println!(
        "  raw tokio-postgres (prepared once) {:8.1} us  ratio 1.00",
        per(raw)
    );
    for (label, d) in [
        (
            "raw tokio-postgres (str, prepares) ",
            median(raw_unprepared_t),
        ),
        ("pgdbm deadpool (fetch_one)         ", median(dp_t)),
        ("pgdbm bb8 (fetch_one)              ", median(bb_t)),
    ] {
        println!(
            "  {label}{:8.1} us  ratio {:.2} (time / raw prepared)",
            per(d),
            d.as_secs_f64() / raw.as_secs_f64()
        );
    }
    deadpool.close().await;
    bb8.close().await;
    Ok(())
}
