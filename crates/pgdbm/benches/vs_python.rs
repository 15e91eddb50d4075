//! pgdbm against Python pgdbm 0.5 and raw tokio-postgres, side by side in one run, as ratios.
//!
//! Two workloads on one throwaway server: 2,000 point selects on one connection, and a
//! 10,000-row `executemany` insert. Each round runs raw tokio-postgres, pgdbm and Python pgdbm
//! one after another (Python times itself inside its process, after connecting), so machine
//! noise hits all of them alike; figures are medians of the rounds.
//!
//! Needs Python pgdbm (`scripts/setup` puts it in `target/py-interop`, or set `PGDBM_PYTHON`);
//! without it only the Rust contenders run.
//!
//! Run: `cargo bench -p pgdbm --bench vs_python` (`VS_PYTHON_ROUNDS` changes the rounds).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use pgdbm::{Config, DeadpoolDb, Param};
use pgdbm_testkit::{unique_database_name, TestServer};

const PY: &str = r#"
import asyncio, sys, time
from pgdbm import AsyncDatabaseManager, DatabaseConfig

async def main(url, workload, n):
    n = int(n)
    db = AsyncDatabaseManager(DatabaseConfig(connection_string=url, min_connections=1, max_connections=1))
    await db.connect()
    if workload == "select":
        await db.fetch_one("SELECT id, name FROM bench_users WHERE id = $1", 1)
        t = time.perf_counter()
        for i in range(n):
            await db.fetch_one("SELECT id, name FROM bench_users WHERE id = $1", i % 1000 + 1)
        elapsed = time.perf_counter() - t
    else:
        rows = [(i, "name %d" % i) for i in range(n)]
        await db.execute("TRUNCATE bench_insert")
        t = time.perf_counter()
        await db.executemany("INSERT INTO bench_insert (id, name) VALUES ($1, $2)", rows)
        elapsed = time.perf_counter() - t
    await db.disconnect()
    print(elapsed)

asyncio.run(main(*sys.argv[1:4]))
"#;

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PGDBM_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/py-interop/bin/python");
    let ok = Command::new(&venv)
        .args(["-c", "import pgdbm"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(venv)
}

fn py_run(py: &PathBuf, url: &str, workload: &str, n: usize) -> Result<Duration, String> {
    let out = Command::new(py)
        .args(["-c", PY, url, workload, &n.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let secs: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("{e}"))?;
    Ok(Duration::from_secs_f64(secs))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn report(title: &str, base_label: &str, rows: Vec<(&str, Vec<Duration>)>) {
    let base = rows
        .iter()
        .find(|(l, _)| *l == base_label)
        .map(|(_, v)| median(v.clone()))
        .unwrap_or_default();
    println!("{title} (median of rounds; ratio = time / {base_label}; below 1 is faster)");
    for (label, times) in rows {
        if times.is_empty() {
            continue;
        }
        let m = median(times);
        println!(
            "  {label:<34} {:>10.2} ms  ratio {:.2}",
            m.as_secs_f64() * 1000.0,
            m.as_secs_f64() / base.as_secs_f64()
        );
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo test --all-targets` runs this without `--bench`: then only a quick smoke run.
    let measuring = std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::var("VS_PYTHON_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 7 } else { 1 })
        .max(1);
    let (selects, inserts) = if measuring {
        (2_000, 10_000)
    } else {
        (20, 100)
    };
    let py = python();
    if py.is_none() {
        println!("Python pgdbm not found (run scripts/setup): measuring the Rust side only");
    }

    let server = TestServer::shared()?;
    let name = unique_database_name("bench_vs_py")?;
    server.create_database(&name)?;
    let url = server.connection_url(&name);
    let mut config: Config = server.config(&name);
    config.min_connections = 1;
    config.max_connections = 1;

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE bench_users (id INT PRIMARY KEY, name TEXT);
             INSERT INTO bench_users SELECT g, 'user ' || g FROM generate_series(1, 1000) g;
             CREATE TABLE bench_insert (id INT, name TEXT);
             ANALYZE bench_users;",
        )
        .await?;
    let select = client
        .prepare("SELECT id, name FROM bench_users WHERE id = $1")
        .await?;
    let insert = client
        .prepare("INSERT INTO bench_insert (id, name) VALUES ($1, $2)")
        .await?;
    let db = DeadpoolDb::connect(config).await?;
    let data: Vec<(i32, String)> = (0..inserts as i32)
        .map(|i| (i, format!("name {i}")))
        .collect();
    let params: Vec<[Param<'_>; 2]> = data.iter().map(|(i, n)| [i as _, n as _]).collect();

    let (mut s_raw, mut s_pg, mut s_py) = (Vec::new(), Vec::new(), Vec::new());
    let (mut i_raw, mut i_pg, mut i_py) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..=rounds {
        let t = Instant::now();
        for i in 0..selects {
            let id = (i % 1000) as i32 + 1;
            std::hint::black_box(client.query_opt(&select, &[&id]).await?);
        }
        let raw_select = t.elapsed();
        let t = Instant::now();
        for i in 0..selects {
            let id = (i % 1000) as i32 + 1;
            std::hint::black_box(
                db.fetch_one("SELECT id, name FROM bench_users WHERE id = $1", &[&id])
                    .await?,
            );
        }
        let pg_select = t.elapsed();
        let py_select = match &py {
            Some(p) => Some(py_run(p, &url, "select", selects)?),
            None => None,
        };

        client.batch_execute("TRUNCATE bench_insert").await?;
        let t = Instant::now();
        for (i, n) in &data {
            client.execute(&insert, &[i, n]).await?;
        }
        let raw_insert = t.elapsed();
        client.batch_execute("TRUNCATE bench_insert").await?;
        let t = Instant::now();
        db.execute_many(
            "INSERT INTO bench_insert (id, name) VALUES ($1, $2)",
            &params,
        )
        .await?;
        let pg_insert = t.elapsed();
        let py_insert = match &py {
            Some(p) => Some(py_run(p, &url, "insert", inserts)?),
            None => None,
        };

        if round > 0 {
            s_raw.push(raw_select);
            s_pg.push(pg_select);
            s_py.extend(py_select);
            i_raw.push(raw_insert);
            i_pg.push(pg_insert);
            i_py.extend(py_insert);
        }
    }
    report(
        &format!("{selects} point selects, one connection"),
        "raw tokio-postgres (prepared once)",
        vec![
            ("raw tokio-postgres (prepared once)", s_raw),
            ("pgdbm fetch_one (deadpool)", s_pg),
            ("Python pgdbm 0.5 fetch_one", s_py),
        ],
    );
    report(
        &format!("{inserts}-row insert"),
        "raw tokio-postgres prepared loop",
        vec![
            ("raw tokio-postgres prepared loop", i_raw),
            ("pgdbm execute_many", i_pg),
            ("Python pgdbm 0.5 executemany", i_py),
        ],
    );
    db.close().await;
    Ok(())
}
