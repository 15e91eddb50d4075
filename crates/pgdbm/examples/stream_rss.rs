//! Peak client memory of `fetch_stream` over 1,000,000 rows (a benchmark, not a test).
//!
//! `cargo run --release -p pgdbm --example stream_rss` streams the rows and prints the
//! process's peak resident set size (Linux `VmHWM`) before and after; `-- --collect` runs
//! `fetch_all` over the same rows instead, for comparison. With `DATABASE_URL` set it uses that
//! server; without it, it starts a throwaway PostgreSQL from the local binaries.

use futures_util::TryStreamExt;
use pgdbm::{Config, Db, Row};
use pgdbm_testkit::{unique_database_name, TestServer};

const ROWS: &str = "SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 1000000) g";

/// The peak resident set size in KiB (`VmHWM` of `/proc/self/status`), when readable.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() -> pgdbm::Result<()> {
    let collect = std::env::args().any(|a| a == "--collect");
    let _server_guard;
    let config = match std::env::var("DATABASE_URL") {
        Ok(url) => Config::from_url(&url)?,
        Err(_) => {
            let server = TestServer::start()?;
            let name = unique_database_name("stream_rss")?;
            server.create_database(&name)?;
            let config = server.config(&name);
            _server_guard = server;
            config
        }
    };
    let db = Db::connect(config).await?;
    db.execute("SELECT 1", &[]).await?;
    let before = peak_rss_kib();
    let started = std::time::Instant::now();
    let (rows, bytes) = if collect {
        let all = db.fetch_all(ROWS, &[]).await?;
        let bytes: usize = all
            .iter()
            .map(|r| r.try_get::<_, &str>(&1usize).map(str::len))
            .sum::<pgdbm::Result<usize>>()?;
        (all.len(), bytes)
    } else {
        let mut stream = db.fetch_stream(ROWS, &[]).await?;
        let (mut rows, mut bytes) = (0usize, 0usize);
        while let Some(row) = stream.try_next().await? {
            rows += 1;
            bytes += row.try_get::<_, &str>(&1usize)?.len();
        }
        (rows, bytes)
    };
    let after = peak_rss_kib();
    println!(
        "{}: {rows} rows, {bytes} payload bytes in {:?}; peak RSS before {} KiB, after {} KiB",
        if collect { "fetch_all" } else { "fetch_stream" },
        started.elapsed(),
        before.map_or("?".into(), |v| v.to_string()),
        after.map_or("?".into(), |v| v.to_string()),
    );
    db.close().await;
    Ok(())
}
