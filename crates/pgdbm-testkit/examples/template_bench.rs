//! Benchmark (not a test): time until a test holds a fresh database with 50 migrations applied:
//! taking a clone prepared ahead (`TestServer::migrated_database`), cloning the migrated
//! template on the spot (FILE_COPY and WAL_LOG), and re-running the migrations (`sqlx::test`'s
//! way). "Holds" means the call returned and a connection to the database is open. Prints the
//! median of 25 runs of each and the ratios. Between runs the bench waits (polling) until the
//! prepared clones are replaced, as a test's own work would give them time to be.
//!
//! `cargo run --release -p pgdbm-testkit --example template_bench`
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code: a panic is a failure

use std::time::{Duration, Instant};

use pgdbm_testkit::{
    template_name, unique_database_name, TestServer, CLONE_STRATEGY, DEFAULT_PREPARED_CLONES,
    PREPARED_CLONES_ENV,
};

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
    let server = TestServer::shared().unwrap();
    if let Some(dir) = server.dir() {
        println!("server directory: {}", dir.display());
    }
    rt.block_on(async {
        let files: Vec<(String, String)> = (0..MIGRATIONS)
            .map(|i| (format!("{i:03}.sql"), migration(i)))
            .collect();
        let template = template_name(&files);
        server
            .ensure_template(&template, |db| {
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
        let mut prepared = Vec::new();
        let build = |db: String| async move {
            migrate(&connect(server, &db).await).await;
            Ok(())
        };
        // The first call makes sure of the template and starts preparing clones.
        server
            .migrated_database(&template, build)
            .await
            .unwrap()
            .drop_async()
            .await
            .unwrap();
        let ready = std::env::var(PREPARED_CLONES_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_PREPARED_CLONES);
        for _ in 0..RUNS {
            // A test's own work gives the background time to replace the taken clone.
            while server.prepared_clones(&template) < ready {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let start = Instant::now();
            let test_db = server.migrated_database(&template, build).await.unwrap();
            let c = connect(server, test_db.name()).await;
            prepared.push(start.elapsed());
            drop(c);
            test_db.drop_async().await.unwrap();

            for (strategy, times) in [("FILE_COPY", &mut clone), ("WAL_LOG", &mut wal_log)] {
                let name = unique_database_name("bench_clone_").unwrap();
                let start = Instant::now();
                server
                    .clone_database_with(&template, &name, strategy)
                    .await
                    .unwrap();
                let c = connect(server, &name).await;
                times.push(start.elapsed());
                drop(c);
                server.drop_database_async(&name).await.unwrap();
            }

            let name = unique_database_name("bench_rerun_").unwrap();
            let start = Instant::now();
            server.create_database_async(&name).await.unwrap();
            let c = connect(server, &name).await;
            migrate(&c).await;
            rerun.push(start.elapsed());
            drop(c);
            server.drop_database_async(&name).await.unwrap();
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (p, c, w, r) = (
            median(prepared),
            median(clone),
            median(wal_log),
            median(rerun),
        );
        println!("WAL_LOG clone median {:.1} ms", ms(w));
        println!(
            "{MIGRATIONS} migrations, median of {RUNS}: template clone ({CLONE_STRATEGY}) {:.1} ms, \
             re-running migrations {:.1} ms, ratio {:.1}x",
            ms(c),
            ms(r),
            r.as_secs_f64() / c.as_secs_f64()
        );
        println!(
            "prepared clone ({ready} ready) {:.1} ms, re-running migrations \
             {:.1} ms, ratio {:.1}x (target: >= 10x and < 20 ms)",
            ms(p),
            ms(r),
            r.as_secs_f64() / p.as_secs_f64()
        );
    });
}
