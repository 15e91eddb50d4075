//! Sharing one database with the real Python pgdbm (0.5, from PyPI): a database migrated by one
//! continues under the other, in both directions, with nothing re-applied, and both exclude each
//! other while migrating.
//!
//! The Python interpreter with pgdbm installed is taken from `PGDBM_PYTHON`, else from the venv
//! that `scripts/setup` makes at `target/py-interop`. Without either, the tests say so on stderr
//! and pass (CI always has the venv: `.ci/run` runs `scripts/setup`); with `PGDBM_REQUIRE_PYTHON=1`
//! a missing interpreter is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgdbm::migrate::{MigrationStatus, Migrator};
use pgdbm::{Database, DeadpoolPool, Row};
use pgdbm_testkit::TestDatabase;

const PY_APPLY: &str = r#"
import asyncio, json, sys
from pgdbm import AsyncDatabaseManager, DatabaseConfig, AsyncMigrationManager

async def main(url, path, module, schema):
    cfg = DatabaseConfig(connection_string=url, schema=schema or None,
                         min_connections=1, max_connections=2)
    db = AsyncDatabaseManager(cfg)
    await db.connect()
    try:
        m = AsyncMigrationManager(db, migrations_path=path, module_name=module)
        r = await m.apply_pending_migrations()
        print(json.dumps({"status": r["status"],
                          "applied": [a["filename"] for a in r.get("applied", [])]}))
    finally:
        await db.disconnect()

asyncio.run(main(*sys.argv[1:5]))
"#;

/// Runs Python pgdbm's `apply_pending_migrations`; returns (status, applied filenames).
fn py_apply(py: &Path, url: &str, dir: &Path, module: &str, schema: &str) -> (String, Vec<String>) {
    let out = Command::new(py)
        .args(["-c", PY_APPLY, url, dir.to_str().unwrap(), module, schema])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python pgdbm failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default().to_string();
    // {"status": "success", "applied": ["a.sql", ...]} without a JSON dependency:
    let status = line
        .split("\"status\": \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_string();
    let applied = line
        .split("\"applied\": [")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    (status, applied)
}

fn write(dir: &Path, name: &str, content: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), content).unwrap();
}

const M1: &str = "CREATE TABLE {{tables.users}} (id SERIAL PRIMARY KEY, email TEXT NOT NULL);\n";
// CRLF line endings and trailing whitespace: both sides must compute the same checksum.
const M2: &str = "CREATE TABLE {{tables.orders}} (\r\n  id SERIAL PRIMARY KEY,\r\n  user_id INT REFERENCES {{tables.users}}(id)\r\n);\r\n  \r\n";
const M3: &str = "-- a third step\nCREATE INDEX orders_user_idx ON {{tables.orders}} (user_id);\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_then_rust_then_python() {
    let Some(py) = pgdbm_integration_tests::python_with_pgdbm("the Python interop test") else {
        return;
    };
    let test_db = TestDatabase::create(Some("pyinterop")).await.unwrap();
    let url = test_db.server().connection_url(test_db.name());
    let base = tempdir("interop");
    let (a, b, c) = (base.join("a"), base.join("b"), base.join("c"));
    write(&a, "001_users.sql", M1);
    for d in [&b, &c] {
        write(d, "001_users.sql", M1);
        write(d, "002_orders.sql", M2);
    }
    write(&c, "003_index.sql", M3);
    let db: Database<DeadpoolPool> = test_db.manager(Some("app")).await.unwrap();

    // 1. Python applies 001.
    let (status, applied) = py_apply(&py, &url, &a, "app", "app");
    assert_eq!(
        (status.as_str(), applied),
        ("success", vec!["001_users.sql".to_string()])
    );

    // 2. Rust continues: only 002 is pending; 001's stored checksum matches ours.
    let rust = Migrator::new(&db).migrations_path(&b).module("app");
    let pending: Vec<String> = rust
        .pending()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.filename)
        .collect();
    assert_eq!(pending, vec!["002_orders.sql"]);
    let report = rust.apply_pending().await.unwrap();
    assert_eq!(report.status, MigrationStatus::Success);
    assert_eq!(
        report
            .applied
            .iter()
            .map(|m| m.filename.as_str())
            .collect::<Vec<_>>(),
        ["002_orders.sql"]
    );

    // 3. Python continues: it verifies the checksums Rust wrote and applies only 003.
    let (status, applied) = py_apply(&py, &url, &c, "app", "app");
    assert_eq!(
        (status.as_str(), applied),
        ("success", vec!["003_index.sql".to_string()])
    );

    // 4. Rust sees everything applied.
    let rust = Migrator::new(&db).migrations_path(&c).module("app");
    assert!(rust.pending().await.unwrap().is_empty());
    assert_eq!(
        rust.apply_pending().await.unwrap().status,
        MigrationStatus::UpToDate
    );

    // The rows: one per file, module "app", checksums equal to core's for the raw files.
    let rows = db
        .fetch_all(
            "SELECT filename, checksum, module_name, applied_by, execution_time_ms \
             FROM {{tables.schema_migrations}} ORDER BY filename",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            assert!(r
                .try_get::<_, Option<String>>("applied_by")
                .unwrap()
                .is_some());
            assert!(
                r.try_get::<_, Option<i32>>("execution_time_ms")
                    .unwrap()
                    .unwrap_or(0)
                    >= 0
            );
            (
                r.try_get("filename").unwrap(),
                r.try_get("checksum").unwrap(),
                r.try_get("module_name").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("001_users.sql".into(), pgdbm::checksum(M1), "app".into()),
            ("002_orders.sql".into(), pgdbm::checksum(M2), "app".into()),
            ("003_index.sql".into(), pgdbm::checksum(M3), "app".into()),
        ]
    );
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_rust_exclude_each_other() {
    let Some(py) = pgdbm_integration_tests::python_with_pgdbm("the Python interop test") else {
        return;
    };
    let test_db = TestDatabase::create(Some("pylock")).await.unwrap();
    let url = test_db.server().connection_url(test_db.name());
    let dir = tempdir("interop_lock");
    write(
        &dir,
        "001_slow.sql",
        "SELECT pg_sleep(1.5);\nCREATE TABLE slow_one (id INT);\n",
    );
    write(
        &dir,
        "002_slow.sql",
        "SELECT pg_sleep(1.5);\nCREATE TABLE slow_two (id INT);\n",
    );
    let db: Database<DeadpoolPool> = test_db.manager(None).await.unwrap();

    // Python starts first and holds its lock while the slow migrations run; Rust polls.
    let py_dir = dir.clone();
    let py_url = url.clone();
    let python_run = std::thread::spawn(move || py_apply(&py, &py_url, &py_dir, "shared", ""));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let rust = Migrator::new(&db)
        .migrations_path(&dir)
        .module("shared")
        .lock_timeout(Duration::from_secs(60));
    let report = tokio::time::timeout(Duration::from_secs(90), rust.apply_pending())
        .await
        .expect("no deadlock between Python and Rust migrators")
        .unwrap();
    let (py_status, py_applied) = python_run.join().unwrap();

    // Between them every migration ran exactly once.
    let mut all: Vec<String> = py_applied.clone();
    all.extend(report.applied.iter().map(|m| m.filename.clone()));
    all.sort();
    assert_eq!(
        all,
        vec!["001_slow.sql", "002_slow.sql"],
        "python: {py_status}, rust: {report:?}"
    );
    let n: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM schema_migrations WHERE module_name = 'shared'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, Some(2));
    let locks: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(locks, Some(0), "no advisory lock left behind");
    db.close().await;
}

fn tempdir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pgdbm-{prefix}-{}-{}",
        std::process::id(),
        pgdbm_testkit::unique_database_name("d").unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
