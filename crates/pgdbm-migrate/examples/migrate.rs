//! Applies the migrations of a directory to a database.
//!
//! ```text
//! cargo run -p pgdbm-migrate --example migrate -- postgresql://user:pw@host/db ./migrations [--dry-run] [--module NAME]
//! ```
//!
//! `MIGRATION_DEBUG=1` (or `true`/`yes`, like Python pgdbm) turns on debug logging of the
//! `pgdbm::migrate` target; otherwise `RUST_LOG` is honoured.

use pgdbm_core::{Config, Pool};
use pgdbm_deadpool::DeadpoolPool;
use pgdbm_migrate::Migrator;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let debug = std::env::var("MIGRATION_DEBUG")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
        .unwrap_or(false);
    let filter = if debug {
        EnvFilter::new("info,pgdbm::migrate=debug")
    } else {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
    };
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let mut args = std::env::args().skip(1);
    let (Some(url), Some(dir)) = (args.next(), args.next()) else {
        eprintln!("usage: migrate <database-url> <migrations-dir> [--dry-run] [--module NAME]");
        std::process::exit(2);
    };
    let mut dry_run = false;
    let mut module = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dry-run" => dry_run = true,
            "--module" => module = args.next(),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }

    let config = Config::from_url(&url)?;
    let pool = DeadpoolPool::connect(&config).await?;
    let mut migrator =
        Migrator::from_pool(pool.clone(), config.schema.clone()).migrations_path(dir);
    if let Some(m) = module {
        migrator = migrator.module(m);
    }
    let report = migrator.apply_pending_report(dry_run).await;
    println!("status: {}", report.status);
    for m in &report.applied {
        println!("  applied {} ({} ms)", m.filename, m.execution_time_ms);
    }
    for p in report.pending.iter().filter(|_| dry_run) {
        println!("  would apply {p}");
    }
    if let Some(e) = &report.error {
        eprintln!("error: {e}");
    }
    pool.close().await;
    if !report.is_ok() {
        std::process::exit(1);
    }
    Ok(())
}
