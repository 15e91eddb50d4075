//! Point selects: pgdbm (deadpool and bb8 backends) side by side with raw tokio-postgres, in one
//! run, reported as ratios. Rounds alternate between the contenders so machine noise hits all
//! of them alike; the figure per contender is the median of its rounds.
//!
//! Run: `cargo bench -p pgdbm --features bb8 --bench point_select`
//! (`POINT_SELECT_ROUNDS` and `POINT_SELECT_QUERIES` change the sizes.)

use std::time::{Duration, Instant};

use pgdbm::{Bb8Db, Config, DeadpoolDb, Executor};
use pgdbm_testkit::{unique_database_name, TestServer};

const SQL: &str = "SELECT id, name FROM bench_users WHERE id = $1";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The same point select written once against the `Executor` trait (static dispatch).
async fn generic_point_select(q: &mut impl Executor, id: i32) -> pgdbm::Result<Option<String>> {
    let row = q.fetch_one(SQL, &[&id]).await?;
    row.map(|r| pgdbm::Row::try_get(&r, 1usize)).transpose()
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
    let mut trait_t = Vec::new();
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

        // The direct call and the same call through the trait run back to back, in alternating
        // order, so their ratio is not an artefact of position in the round.
        let direct = async {
            let t = Instant::now();
            for i in 0..per_round {
                let id = (i % 1000) as i32 + 1;
                let row = deadpool.fetch_one(SQL, &[&id]).await?;
                std::hint::black_box(row.map(|r| pgdbm::Row::try_get::<_, String>(&r, 1usize)));
            }
            Ok::<_, pgdbm::Error>(t.elapsed())
        };
        let via_trait = async {
            let t = Instant::now();
            for i in 0..per_round {
                let id = (i % 1000) as i32 + 1;
                std::hint::black_box(generic_point_select(&mut &deadpool, id).await?);
            }
            Ok::<_, pgdbm::Error>(t.elapsed())
        };
        let (dp, through_trait) = if round % 2 == 0 {
            let dp = direct.await?;
            (dp, via_trait.await?)
        } else {
            let tr = via_trait.await?;
            (direct.await?, tr)
        };

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
            trait_t.push(through_trait);
        }
    }
    let raw = median(raw_t);
    let (dp_median, trait_median) = (median(dp_t.clone()), median(trait_t.clone()));
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
        ("pgdbm deadpool via Executor trait  ", trait_median),
    ] {
        println!(
            "  {label}{:8.1} us  ratio {:.2} (time / raw prepared)",
            per(d),
            d.as_secs_f64() / raw.as_secs_f64()
        );
    }
    println!(
        "  Executor trait / direct call (deadpool): {:.3}",
        trait_median.as_secs_f64() / dp_median.as_secs_f64()
    );
    deadpool.close().await;
    bb8.close().await;
    Ok(())
}
