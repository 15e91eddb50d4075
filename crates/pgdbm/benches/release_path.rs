//! The release path's cost per checkout: acquire, one point select, release, for a clean
//! connection, after a committed transaction, after a dropped (rolled back at release)
//! transaction, and with `ResetPolicy::Full`, side by side with raw tokio-postgres in one run,
//! reported as ratios. The pool has one connection, so whatever the release path does before the
//! connection is available again is inside the next op's time (nothing is hidden by a second
//! connection). Rounds alternate between contenders; the figure is the median of rounds.
//!
//! Run: `cargo bench -p pgdbm --bench release_path`
//! (`RELEASE_ROUNDS` and `RELEASE_OPS` change the sizes.)

use std::time::{Duration, Instant};

use pgdbm::{Config, DeadpoolDb, ResetPolicy};
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

type BoxErr = Box<dyn std::error::Error>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxErr> {
    // `cargo test --all-targets` runs this without `--bench`: then only a quick smoke run.
    let measuring = std::env::args().any(|a| a == "--bench");
    let (default_rounds, default_ops) = if measuring { (15, 1_000) } else { (1, 10) };
    let rounds = env_usize("RELEASE_ROUNDS", default_rounds).max(1);
    let ops = env_usize("RELEASE_OPS", default_ops).max(1);
    let server = TestServer::shared()?;
    let name = unique_database_name("bench_release")?;
    server.create_database(&name)?;
    let mut config: Config = server.config(&name);
    config.min_connections = 1;
    config.max_connections = 1;

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

    let db = DeadpoolDb::connect(config.clone()).await?;
    let mut full_config = config.clone();
    full_config.reset_on_release = ResetPolicy::Full;
    let full = DeadpoolDb::connect(full_config).await?;

    let labels = [
        "raw tokio-postgres (prepared)        ",
        "pgdbm clean checkout                 ",
        "pgdbm committed transaction          ",
        "pgdbm dropped transaction (rollback) ",
        "pgdbm ResetPolicy::Full, used conn   ",
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); labels.len()];
    for round in 0..=rounds {
        let mut round_times = Vec::new();

        let t = Instant::now();
        for i in 0..ops {
            let id = (i % 1000) as i32 + 1;
            let row = client.query_one(&stmt, &[&id]).await?;
            std::hint::black_box(row.get::<_, String>(1));
        }
        round_times.push(t.elapsed());

        let t = Instant::now();
        for i in 0..ops {
            let id = (i % 1000) as i32 + 1;
            let mut c = db.acquire().await?;
            std::hint::black_box(c.fetch_one(SQL, &[&id]).await?);
        }
        round_times.push(t.elapsed());

        let t = Instant::now();
        for i in 0..ops {
            let id = (i % 1000) as i32 + 1;
            let mut tx = db.transaction().await?;
            std::hint::black_box(tx.fetch_one(SQL, &[&id]).await?);
            tx.commit().await?;
        }
        round_times.push(t.elapsed());

        let t = Instant::now();
        for i in 0..ops {
            let id = (i % 1000) as i32 + 1;
            let mut tx = db.transaction().await?;
            std::hint::black_box(tx.fetch_one(SQL, &[&id]).await?);
            drop(tx);
        }
        round_times.push(t.elapsed());

        let t = Instant::now();
        for i in 0..ops {
            let id = (i % 1000) as i32 + 1;
            let mut c = full.acquire().await?;
            std::hint::black_box(c.fetch_one(SQL, &[&id]).await?);
        }
        round_times.push(t.elapsed());

        if round > 0 {
            for (all, t) in times.iter_mut().zip(round_times) {
                all.push(t);
            }
        }
    }
    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / ops as f64;
    println!("release path, pool of 1, {rounds} rounds x {ops} ops, median per op:");
    for (label, d) in labels.iter().zip(&medians) {
        println!(
            "  {label}{:8.1} us  ratio {:.2} (time / raw)",
            per(*d),
            d.as_secs_f64() / medians[0].as_secs_f64()
        );
    }
    println!(
        "  Full / clean checkout: {:.2}",
        medians[4].as_secs_f64() / medians[1].as_secs_f64()
    );
    db.close().await;
    full.close().await;
    Ok(())
}
