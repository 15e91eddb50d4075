//! PgBouncer 1.18 in transaction mode (Debian's package, started by the testkit's
//! `TestPgBouncer` in front of the shared test server), with fewer server connections than the
//! client pool has: `StatementMode::Unnamed` runs a mixed concurrent workload without a single
//! error, the default mode fails on it (which proves the workload sees the pooler), and the
//! migrator refuses to run through it. Skipped (with a message) when pgbouncer is not installed
//! and `PGDBM_REQUIRE_PGBOUNCER` is not set.

use std::time::{Duration, Instant};

use pgdbm::migrate::Migrator;
use pgdbm::{Config, Database, Pool, StatementMode};
use pgdbm_integration_tests::{both_backends, fresh_config};
use pgdbm_testkit::{find_pgbouncer, PoolMode, TestPgBouncer, TestPgBouncerOptions, TestServer};

/// Server connections PgBouncer keeps per database (`default_pool_size`).
const SERVER_CONNECTIONS: u32 = 4;
/// The client pool: four times as many connections as the server side has.
const CLIENT_CONNECTIONS: usize = 16;
/// Concurrent tasks of the workload.
const TASKS: usize = 64;
/// Rows of each `execute_many`.
const MANY: usize = 4;

/// A PgBouncer in front of the shared server, or `None` (test skipped) without pgbouncer.
fn bouncer(mode: PoolMode) -> Option<TestPgBouncer> {
    if find_pgbouncer().is_none() {
        if std::env::var_os("PGDBM_REQUIRE_PGBOUNCER").is_some() {
            panic!("PGDBM_REQUIRE_PGBOUNCER is set but pgbouncer is not installed (scripts/setup)");
        }
        eprintln!("SKIPPED: pgbouncer is not installed (scripts/setup installs it)");
        return None;
    }
    let server = TestServer::shared().unwrap();
    let options = TestPgBouncerOptions::default()
        .pool_mode(mode)
        .default_pool_size(SERVER_CONNECTIONS);
    Some(TestPgBouncer::start_with(server, options).unwrap())
}

/// A fresh database (created directly on the server, with its table) and the configs to
/// reach it directly and through `bouncer`.
fn configs(bouncer: &TestPgBouncer, prefix: &str, mode: StatementMode) -> (Config, Config) {
    let direct = fresh_config(prefix).unwrap();
    let mut pooled = bouncer.config(&direct.database);
    pooled.min_connections = 0;
    pooled.max_connections = CLIENT_CONNECTIONS;
    pooled.statement_mode = mode;
    pooled.retry_attempts = 1;
    // PgBouncer passes it on to the server sessions it opens: they can be told apart from the
    // test's direct sessions.
    pooled.application_name = Some("pgdbm_via_pgbouncer".to_string());
    (direct, pooled)
}

async fn create_table<P: Pool>(direct: &Config) {
    let db = Database::<P>::connect(direct.clone()).await.unwrap();
    db.batch_execute(
        "CREATE TABLE pb_items (id BIGSERIAL PRIMARY KEY, k INT NOT NULL, v TEXT NOT NULL); \
         CREATE INDEX ON pb_items (k)",
    )
    .await
    .unwrap();
    db.close().await;
}

/// What the workload saw.
#[derive(Default)]
struct Tally {
    ops: u64,
    /// Rounds run (five operations each).
    rounds: u64,
    errors: Vec<String>,
}

/// How long a workload runs: a number of rounds per task, or rounds until a moment (at least
/// one round per task).
#[derive(Clone, Copy)]
enum RunFor {
    Rounds(usize),
    Until(Instant),
}

/// One task's share: rounds of fetch, execute, execute_many and a transaction (whose settings
/// must be the config's, applied per transaction) for as long as `run` says. Errors are
/// counted, not fatal, so the default mode's run can be measured too.
async fn task<P: Pool>(db: Database<P>, task: usize, run: RunFor) -> Tally {
    let mut t = Tally::default();
    let record = |r: pgdbm::Result<()>, t: &mut Tally| {
        t.ops += 1;
        if let Err(e) = r {
            t.errors.push(e.to_string());
        }
    };
    for i in 0.. {
        let more = match run {
            RunFor::Rounds(n) => i < n,
            RunFor::Until(end) => i == 0 || Instant::now() < end,
        };
        if !more {
            break;
        }
        t.rounds += 1;
        let k = i32::try_from(task * 1_000_000 + i).unwrap();
        let v = format!("t{task}-{i}");
        let r = db
            .fetch_value::<i64, _>("SELECT count(*) FROM pb_items WHERE k = $1", &[&k])
            .await
            .map(|_| ());
        record(r, &mut t);
        let r = db
            .execute("INSERT INTO pb_items (k, v) VALUES ($1, $2)", &[&k, &v])
            .await
            .map(|_| ());
        record(r, &mut t);
        let vs: Vec<String> = (0..MANY).map(|j| format!("{v}-{j}")).collect();
        let rows: Vec<[pgdbm::Param<'_>; 2]> =
            vs.iter().map(|s| [&k as pgdbm::Param<'_>, s]).collect();
        let r = db
            .execute_many("INSERT INTO pb_items (k, v) VALUES ($1, $2)", &rows)
            .await
            .map(|_| ());
        record(r, &mut t);
        let r = async {
            let mut tx = db.transaction().await?;
            tx.execute(
                "UPDATE pb_items SET v = v || '!' WHERE k = $1 AND v = $2",
                &[&k, &v],
            )
            .await?;
            let jit: Option<String> = tx.fetch_value("SELECT current_setting('jit')", &[]).await?;
            let n: Option<i64> = tx
                .fetch_value("SELECT count(*) FROM pb_items WHERE k = $1", &[&k])
                .await?;
            tx.commit().await?;
            if n != Some(1 + MANY as i64) {
                return Err(pgdbm::Error::transaction(format!(
                    "task {task} round {i}: {n:?} rows for k = {k} inside the transaction"
                )));
            }
            // The startup settings (jit = off among them) hold in every transaction.
            if jit.as_deref() != Some("off") {
                return Err(pgdbm::Error::transaction(format!(
                    "jit = {jit:?} inside a transaction: the settings were not applied"
                )));
            }
            Ok(())
        }
        .await;
        record(r, &mut t);
        let r = db
            .fetch_one(
                "SELECT v FROM pb_items WHERE k = $1 ORDER BY id LIMIT 1",
                &[&k],
            )
            .await
            .map(|_| ());
        record(r, &mut t);
    }
    t
}

/// Runs [`TASKS`] tasks on `db` for as long as `run` says; the tallies added up.
async fn workload<P: Pool>(db: &Database<P>, run: RunFor) -> Tally {
    let handles: Vec<_> = (0..TASKS)
        .map(|n| tokio::spawn(task(db.clone(), n, run)))
        .collect();
    let mut total = Tally::default();
    for h in handles {
        let t = h.await.unwrap();
        total.ops += t.ops;
        total.rounds += t.rounds;
        total.errors.extend(t.errors);
    }
    total
}

async fn unnamed_mode_survives_transaction_pooling<P: Pool>() {
    let Some(bouncer) = bouncer(PoolMode::Transaction) else {
        return;
    };
    let (direct, pooled) = configs(&bouncer, "pb_unnamed", StatementMode::Unnamed);
    create_table::<P>(&direct).await;
    let db = Database::<P>::connect(pooled).await.unwrap();
    // The 20 s of mixed work by 64 tasks (a duration to run for, not a timed
    // assertion: what is checked is that nothing failed and every write is there).
    let started = Instant::now();
    let tally = workload(&db, RunFor::Until(started + Duration::from_secs(20))).await;
    let elapsed = started.elapsed();
    let not_exist = tally
        .errors
        .iter()
        .filter(|e| e.contains("does not exist"))
        .count();
    assert_eq!(
        not_exist,
        0,
        "prepared statement errors: {:?}",
        &tally.errors[..tally.errors.len().min(5)]
    );
    assert!(
        tally.errors.is_empty(),
        "{} errors in {} operations, e.g. {:?}",
        tally.errors.len(),
        tally.ops,
        &tally.errors[..tally.errors.len().min(5)]
    );
    assert_eq!(tally.ops, tally.rounds * 5);
    // Every write is there.
    let rows: Option<i64> = db
        .fetch_value("SELECT count(*) FROM pb_items", &[])
        .await
        .unwrap();
    assert_eq!(rows, Some((tally.rounds * (1 + MANY as u64)) as i64));
    // The pooler really multiplexed: 16 client connections, at most 4 server sessions, and
    // no named prepared statement left on any of them.
    let observer = Database::<P>::connect(direct.clone()).await.unwrap();
    let servers: Option<i64> = observer
        .fetch_value(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
             AND application_name = 'pgdbm_via_pgbouncer'",
            &[&direct.database],
        )
        .await
        .unwrap();
    let servers = servers.unwrap_or_default();
    assert!(
        (1..=i64::from(SERVER_CONNECTIONS)).contains(&servers),
        "{servers} server sessions"
    );
    let pools = bouncer.show("POOLS").await.unwrap();
    let ours = pools
        .iter()
        .find(|row| {
            row.iter()
                .any(|(c, v)| c == "database" && *v == direct.database)
        })
        .expect("PgBouncer has a pool for the test database");
    let get = |name: &str| -> i64 {
        ours.iter()
            .find(|(c, _)| c == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(-1)
    };
    let server_side: i64 = ["sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"]
        .iter()
        .map(|c| get(c).max(0))
        .sum();
    assert!(
        (1..=i64::from(SERVER_CONNECTIONS)).contains(&server_side),
        "PgBouncer holds {server_side} server connections: {ours:?}"
    );
    eprintln!(
        "unnamed mode through PgBouncer transaction pooling: {} operations by {TASKS} tasks on \
         {CLIENT_CONNECTIONS} client / {servers} server connections in {elapsed:?}, 0 errors",
        tally.ops
    );
    db.close().await;
    observer.close().await;
}
both_backends!(unnamed_mode, unnamed_mode_survives_transaction_pooling);

async fn cached_mode_fails_behind_transaction_pooling<P: Pool>() {
    let Some(bouncer) = bouncer(PoolMode::Transaction) else {
        return;
    };
    let (direct, pooled) = configs(&bouncer, "pb_cached", StatementMode::Cached);
    create_table::<P>(&direct).await;
    let db = Database::<P>::connect(pooled).await.unwrap();
    let tally = workload(&db, RunFor::Rounds(5)).await;
    let not_exist = tally
        .errors
        .iter()
        .filter(|e| e.contains("prepared statement") && e.contains("does not exist"))
        .count();
    assert!(
        not_exist > 0,
        "the default statement mode ran {} operations through PgBouncer transaction pooling \
         with {} errors and none was a missing prepared statement: the test does not see the pooler \
         ({:?})",
        tally.ops,
        tally.errors.len(),
        &tally.errors[..tally.errors.len().min(3)]
    );
    eprintln!(
        "cached mode through PgBouncer transaction pooling: {} of {} operations failed, {not_exist} \
         with a missing prepared statement",
        tally.errors.len(),
        tally.ops
    );
    db.close().await;
}
both_backends!(cached_mode, cached_mode_fails_behind_transaction_pooling);

fn migrations_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pgdbm-pgbouncer-migrations-{}-{tag}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("001_create.sql"),
        "CREATE TABLE pb_migrated (id INT PRIMARY KEY);\n",
    )
    .unwrap();
    dir
}

fn backend<P>() -> &'static str {
    if std::any::type_name::<P>().contains("Bb8") {
        "bb8"
    } else {
        "deadpool"
    }
}

async fn migrations_are_refused_through_transaction_pooling<P: Pool>() {
    let Some(bouncer) = bouncer(PoolMode::Transaction) else {
        return;
    };
    for mode in [StatementMode::Unnamed, StatementMode::Cached] {
        let (direct, pooled) = configs(&bouncer, "pb_migrate", mode);
        let dir = migrations_dir(&format!("{}-{}", backend::<P>(), mode.as_str()));
        let db = Database::<P>::connect(pooled).await.unwrap();
        let err = Migrator::new(&db)
            .migrations_path(&dir)
            .apply_pending()
            .await
            .expect_err("migrations through a transaction pooler must be refused");
        let text = err.to_string();
        assert!(
            text.contains("use a direct connection for migrations"),
            "{mode:?}: {text}"
        );
        db.close().await;
        // Nothing ran, and the same migrations work on a direct connection.
        let direct_db = Database::<P>::connect(direct).await.unwrap();
        assert!(!direct_db.table_exists("pb_migrated").await.unwrap());
        let report = Migrator::new(&direct_db)
            .migrations_path(&dir)
            .apply_pending()
            .await
            .unwrap();
        assert_eq!(report.applied.len(), 1, "{report:?}");
        direct_db.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
both_backends!(
    migrations_refused,
    migrations_are_refused_through_transaction_pooling
);

async fn migrations_run_through_session_pooling<P: Pool>() {
    // A session pooler keeps one server session per client: the lock holds, so the probe must
    // let it through (its announced backend key differs, which alone is no reason to refuse).
    let Some(bouncer) = bouncer(PoolMode::Session) else {
        return;
    };
    let (direct, mut pooled) = configs(&bouncer, "pb_session", StatementMode::Cached);
    pooled.max_connections = 2;
    let dir = migrations_dir(&format!("session-{}", backend::<P>()));
    let db = Database::<P>::connect(pooled).await.unwrap();
    let report = Migrator::new(&db)
        .migrations_path(&dir)
        .apply_pending()
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 1, "{report:?}");
    db.close().await;
    let direct_db = Database::<P>::connect(direct).await.unwrap();
    assert!(direct_db.table_exists("pb_migrated").await.unwrap());
    direct_db.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
both_backends!(
    session_pooling_migrates,
    migrations_run_through_session_pooling
);

/// The testkit's PgBouncer stops and starts again on its port, and answers its console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pgbouncer_restarts_and_shows_pools() {
    let Some(bouncer) = bouncer(PoolMode::Transaction) else {
        return;
    };
    let (_direct, pooled) = configs(&bouncer, "pb_restart", StatementMode::Unnamed);
    let db = Database::<pgdbm::DeadpoolPool>::connect(pooled)
        .await
        .unwrap();
    let one: Option<i32> = db.fetch_value("SELECT 1", &[]).await.unwrap();
    assert_eq!(one, Some(1));
    let port = bouncer.port();
    bouncer.stop().unwrap();
    assert!(!bouncer.is_running());
    assert!(db.fetch_value::<i32, _>("SELECT 1", &[]).await.is_err());
    bouncer.start_again().unwrap();
    assert_eq!(bouncer.port(), port);
    // The pool replaces the connections PgBouncer closed.
    let mut ok = false;
    for _ in 0..50 {
        if db.fetch_value::<i32, _>("SELECT 1", &[]).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "no query through the restarted PgBouncer");
    let pools = bouncer.show("POOLS").await.unwrap();
    assert!(
        pools.iter().any(|row| row
            .iter()
            .any(|(c, v)| c == "pool_mode" && v == "transaction")),
        "{pools:?}"
    );
    db.close().await;
}

async fn user_defined_types_survive_transaction_pooling<P: Pool>() {
    // tokio-postgres looks non-built-in types up with named statements of its own; the unnamed
    // mode loads the database's types once per connection inside a transaction, so enums as
    // parameters and as result columns work through the pooler too.
    let Some(bouncer) = bouncer(PoolMode::Transaction) else {
        return;
    };
    let (direct, pooled) = configs(&bouncer, "pb_types", StatementMode::Unnamed);
    let setup = Database::<P>::connect(direct).await.unwrap();
    setup
        .batch_execute(
            "CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE TYPE color AS ENUM ('red', 'blue'); \
             CREATE TYPE size AS ENUM ('s', 'm'); \
             CREATE TABLE e (m mood, c color, s size); \
             INSERT INTO e VALUES ('sad', 'red', 's'), ('ok', 'blue', 'm')",
        )
        .await
        .unwrap();
    setup.close().await;
    let db = Database::<P>::connect(pooled).await.unwrap();
    let handles: Vec<_> = (0..32)
        .map(|t| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut errors = Vec::new();
                for i in 0..10 {
                    let r = match (t + i) % 3 {
                        0 => db
                            .fetch_all("SELECT m FROM e WHERE m = $1::text::mood", &[&"sad"])
                            .await
                            .map(|rows| rows.len()),
                        1 => db
                            .fetch_all("SELECT c FROM e WHERE c::text = $1", &[&"red"])
                            .await
                            .map(|rows| rows.len()),
                        _ => db
                            .fetch_all("SELECT s FROM e", &[])
                            .await
                            .map(|rows| rows.len()),
                    };
                    match r {
                        Ok(n) if n >= 1 => {}
                        Ok(n) => errors.push(format!("{n} rows")),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                errors
            })
        })
        .collect();
    let mut errors = Vec::new();
    for h in handles {
        errors.extend(h.await.unwrap());
    }
    assert!(
        errors.is_empty(),
        "{} errors, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    db.close().await;
}
both_backends!(user_types, user_defined_types_survive_transaction_pooling);
