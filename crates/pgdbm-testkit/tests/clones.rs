//! Clones prepared ahead and the template sweep: `migrated_database` hands out a clone prepared
//! in the background and replaces it; a SIGKILLed process's prepared clones are swept; stale
//! templates are dropped by two sweeps at once, and a swept template is rebuilt on next use.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pgdbm_testkit::{template_name, TestServer, DEFAULT_PREPARED_CLONES, PREPARED_CLONES_ENV};

mod common;
use common::spawn_test_child;

const CHILD_ENV: &str = "PGDBM_TESTKIT_CLONES_CHILD";

fn target() -> usize {
    std::env::var(PREPARED_CLONES_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_PREPARED_CLONES)
}

async fn client(server: &TestServer, db: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&server.connection_url(db), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// Builds the template: one table with one row; counts builds.
async fn build(server: &TestServer, db: String, builds: &AtomicUsize) -> pgdbm_core::Result<()> {
    let c = client(server, &db).await;
    c.batch_execute("CREATE TABLE users (id int PRIMARY KEY); INSERT INTO users VALUES (1)")
        .await
        .unwrap();
    builds.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

async fn users(server: &TestServer, db: &str) -> i64 {
    client(server, db)
        .await
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0)
}

/// Databases marked as owned by `pid`.
async fn owned_by(server: &TestServer, pid: u32) -> BTreeSet<String> {
    let out = server
        .query_async(
            "postgres",
            &format!(
                "SELECT datname FROM pg_database WHERE shobj_description(oid, 'pg_database') \
                 LIKE 'pgdbm-testkit v1 pid={pid} %'"
            ),
        )
        .await
        .unwrap();
    out.lines().map(str::to_string).collect()
}

async fn wait_prepared(server: &TestServer, template: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.prepared_clones(template) < n {
        assert!(Instant::now() < deadline, "clones not prepared in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_takes_a_prepared_clone_and_it_is_replaced() {
    let server = TestServer::shared().unwrap();
    let template = template_name(&[("clones.sql", format!("taken {}", std::process::id()))]);
    let builds = AtomicUsize::new(0);
    let builder = |db| build(server, db, &builds);
    let first = server.migrated_database(&template, builder).await.unwrap();
    assert_eq!(builds.load(Ordering::SeqCst), 1);
    assert_eq!(users(server, first.name()).await, 1);
    let n = target();
    if n == 0 {
        return; // preparing is turned off in this environment
    }
    wait_prepared(server, &template, n).await;
    let before = owned_by(server, std::process::id()).await;

    let second = server.migrated_database(&template, builder).await.unwrap();
    assert!(
        before.contains(second.name()),
        "{} was not prepared ahead: {before:?}",
        second.name()
    );
    assert_ne!(first.name(), second.name());
    assert_eq!(builds.load(Ordering::SeqCst), 1, "built once");
    assert_eq!(users(server, second.name()).await, 1);

    // The taken clone is replaced in the background by a new one.
    wait_prepared(server, &template, n).await;
    let after = owned_by(server, std::process::id()).await;
    assert!(after.difference(&before).next().is_some(), "{after:?}");

    let (a, b) = (first.name().to_string(), second.name().to_string());
    first.drop_async().await.unwrap();
    second.drop_async().await.unwrap();
    let left = owned_by(server, std::process::id()).await;
    assert!(!left.contains(&a) && !left.contains(&b));
}

#[test]
fn prepared_clones_of_a_sigkilled_process_are_swept() {
    if target() == 0 {
        return;
    }
    let server = TestServer::start().unwrap();
    let mut child = spawn_test_child("clones_child", CHILD_ENV, &server);
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l == "READY");
    assert!(ready, "the child did not prepare its clones");
    child.kill().unwrap(); // SIGKILL: no destructor, no atexit
    child.wait().unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let orphans = owned_by(&server, pid).await;
        // The database the child took and its prepared clones.
        assert!(orphans.len() > target(), "{orphans:?}");
        let (a, b) = tokio::join!(server.sweep_orphans(), server.sweep_orphans());
        let dropped: BTreeSet<String> = a.unwrap().into_iter().chain(b.unwrap()).collect();
        assert_eq!(dropped, orphans);
        assert!(owned_by(&server, pid).await.is_empty());
        // The template is nobody's orphan.
        let templates = server
            .query_async(
                "postgres",
                "SELECT count(*) FROM pg_database WHERE datname LIKE 'pgdbm_tpl_%'",
            )
            .await
            .unwrap();
        assert_eq!(templates, "1");
    });
}

#[test]
#[ignore = "helper process of prepared_clones_of_a_sigkilled_process_are_swept"]
fn clones_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = TestServer::shared().unwrap();
        assert!(!server.is_local());
        let template = template_name(&[("clones.sql", "orphaned")]);
        let builds = AtomicUsize::new(0);
        let mut taken = server
            .migrated_database(&template, |db| build(server, db, &builds))
            .await
            .unwrap();
        taken.keep();
        wait_prepared(server, &template, target()).await;
        println!("READY");
        // Wait to be killed.
        std::future::pending::<()>().await;
    });
}

/// Marks the database `name` as a finished template with `comment`.
async fn make_template(server: &TestServer, name: &str, comment: &str) {
    server.create_database_async(name).await.unwrap();
    server
        .query_async(
            "postgres",
            &format!(
                "ALTER DATABASE {name} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false; \
                 COMMENT ON DATABASE {name} IS '{comment}'"
            ),
        )
        .await
        .unwrap();
}

async fn exists(server: &TestServer, name: &str) -> bool {
    server
        .query_async(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
        )
        .await
        .unwrap()
        == "1"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_templates_are_swept_and_rebuilt_on_next_use() {
    let server: &'static TestServer = Box::leak(Box::new(TestServer::start().unwrap()));
    let version = env!("CARGO_PKG_VERSION");
    let stale_other = "pgdbm_tpl_00000000000000a1";
    let stale_old = "pgdbm_tpl_00000000000000a2";
    let recent_other = "pgdbm_tpl_00000000000000a3";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    make_template(
        server,
        stale_other,
        &format!(
            "pgdbm-testkit v1 template version=0.0.0-old used={}",
            now - 3 * 3600
        ),
    )
    .await;
    make_template(
        server,
        stale_old,
        &format!(
            "pgdbm-testkit v1 template version={version} used={}",
            now - 25 * 3600
        ),
    )
    .await;
    make_template(
        server,
        recent_other,
        &format!("pgdbm-testkit v1 template version=0.0.0-old used={now}"),
    )
    .await;
    // A template database the testkit did not make is never touched.
    server
        .query_async(
            "postgres",
            "CREATE DATABASE users_own_template WITH IS_TEMPLATE true",
        )
        .await
        .unwrap();
    // A template in use (made sure of just now).
    let template = template_name(&[("clones.sql", "in use")]);
    let builds = AtomicUsize::new(0);
    let builder = |db| build(server, db, &builds);
    let used = server.migrated_database(&template, builder).await.unwrap();

    let (a, b) = tokio::join!(server.sweep_orphans(), server.sweep_orphans());
    let mut dropped = a.unwrap();
    dropped.extend(b.unwrap());
    dropped.sort();
    assert_eq!(
        dropped,
        vec![stale_other.to_string(), stale_old.to_string()]
    );
    for kept in [recent_other, "users_own_template", template.as_str()] {
        assert!(exists(server, kept).await, "{kept} was dropped");
    }

    // The template in use goes stale (nobody touched it for a day) and is swept; the next
    // test rebuilds it once its prepared clones are used up.
    server
        .query_async(
            "postgres",
            &format!(
                "COMMENT ON DATABASE {template} IS \
                 'pgdbm-testkit v1 template version={version} used=1'"
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        server.sweep_orphans().await.unwrap(),
        vec![template.clone()]
    );
    assert!(!exists(server, &template).await);
    let mut dbs = vec![used];
    for _ in 0..=target() + 1 {
        let db = server.migrated_database(&template, builder).await.unwrap();
        assert_eq!(users(server, db.name()).await, 1);
        dbs.push(db);
        if builds.load(Ordering::SeqCst) == 2 {
            break;
        }
    }
    assert_eq!(builds.load(Ordering::SeqCst), 2, "rebuilt once");
    assert!(exists(server, &template).await);
    for db in dbs {
        db.drop_async().await.unwrap();
    }
    server.stop().unwrap();
}
