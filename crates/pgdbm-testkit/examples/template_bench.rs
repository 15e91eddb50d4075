//! Benchmark (not a test): time until a test holds a fresh database with 50 migrations applied,
//! cloning a migrated template vs re-running the migrations (`sqlx::test`'s way). Prints the
//! median of 25 runs of each and the ratio.
//!
//! `cargo run --release -p pgdbm-testkit --example template_bench`
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code: a panic is a failure

use std::time::{Duration, Instant};

use pgdbm_testkit::{template_name, unique_database_name, TestServer, CLONE_STRATEGY};

const MIGRATIONS: usize = 50;
const RUNS: usize = 25;

fn migration(i: usize) -> String {
    format!(
        "CREATE TABLE t{i} (id bigserial PRIMARY KEY, name text NOT NULL, created timestamptz \
         DEFAULT now()); CREATE INDEX t{i}_name ON t{i} (name); INSERT INTO t{i} (name) VALUES \
         ('a'), ('b');"
    )
}

async fn connect(server: &TestServer, db: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&server.connection_url(db), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

async fn migrate(client: &tokio_postgres::Client) {
    for i in 0..MIGRATIONS {
        client
            .batch_execute(&format!("BEGIN; {} COMMIT;", migration(i)))
            .await
            .unwrap();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = TestServer::start().unwrap();
    println!("server directory: {}", server.dir().unwrap().display());
    rt.block_on(async {
        let files: Vec<(String, String)> = (0..MIGRATIONS)
            .map(|i| (format!("{i:03}.sql"), migration(i)))
            .collect();
        let template = template_name(&files);
        server
            .ensure_template(&template, |db| {
                let server = &server;
                async move {
                    migrate(&connect(server, &db).await).await;
                    Ok(())
                }
            })
            .await
            .unwrap();

        let mut clone = Vec::new();
        let mut wal_log = Vec::new();
        let mut rerun = Vec::new();
        for _ in 0..RUNS {
            for (strategy, times) in [("FILE_COPY", &mut clone), ("WAL_LOG", &mut wal_log)] {
                let name = unique_database_name("bench_clone_").unwrap();
                let start = Instant::now();
                server
                    .clone_database_with(&template, &name, strategy)
                    .await
                    .unwrap();
                let c = connect(&server, &name).await;
                times.push(start.elapsed());
                drop(c);
                server.drop_database_async(&name).await.unwrap();
            }

            let name = unique_database_name("bench_rerun_").unwrap();
            let start = Instant::now();
            server.create_database_async(&name).await.unwrap();
            let c = connect(&server, &name).await;
            migrate(&c).await;
            rerun.push(start.elapsed());
            drop(c);
            server.drop_database_async(&name).await.unwrap();
        }
        let (c, w, r) = (median(clone), median(wal_log), median(rerun));
        println!("WAL_LOG clone median {:.1} ms", w.as_secs_f64() * 1000.0);
        println!(
            "{MIGRATIONS} migrations, median of {RUNS}: template clone ({CLONE_STRATEGY}) {:.1} ms, \
             re-running migrations {:.1} ms, ratio {:.1}x",
            c.as_secs_f64() * 1000.0,
            r.as_secs_f64() * 1000.0,
            r.as_secs_f64() / c.as_secs_f64()
        );
    });
}
