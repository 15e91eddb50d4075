//! Migrated templates: built once when 8 tests in each of 2 processes ask at once, cloned per
//! test, and a changed migration gives a new template.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::process::Command;

use pgdbm_testkit::{template_name, unique_database_name, TestServer};

const CHILD_ENV: &str = "PGDBM_TESTKIT_TEMPLATE_CHILD";

async fn client(server: &TestServer, db: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&server.connection_url(db), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// 8 concurrent tests: each ensures the template (the build records itself in `counter_db`),
/// clones it and checks the migrated table is there.
async fn eight_tests(server: &'static TestServer, template: String, counter_db: String) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (template, counter_db) = (template.clone(), counter_db.clone());
        tasks.push(tokio::spawn(async move {
            server
                .ensure_template(&template, |db| async move {
                    let c = client(server, &db).await;
                    c.batch_execute(
                        "CREATE TABLE users (id int PRIMARY KEY); INSERT INTO users VALUES (1)",
                    )
                    .await
                    .unwrap();
                    let counter = client(server, &counter_db).await;
                    counter
                        .batch_execute("INSERT INTO builds VALUES (1)")
                        .await
                        .unwrap();
                    Ok(())
                })
                .await
                .unwrap();
            let name = unique_database_name("test_clone_").unwrap();
            server.clone_database(&template, &name).await.unwrap();
            let c = client(server, &name).await;
            let n: i64 = c
                .query_one("SELECT count(*) FROM users", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 1);
            drop(c);
            server.drop_database_async(&name).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn template_is_built_once_across_tests_and_processes() {
    let server: &'static TestServer = Box::leak(Box::new(TestServer::start().unwrap()));
    let counter_db = unique_database_name("test_counter_").unwrap();
    server.create_database(&counter_db).unwrap();
    server
        .psql(&counter_db, "CREATE TABLE builds (n int)")
        .unwrap();
    let template = template_name(&[("001_users.sql", unique_database_name("x").unwrap())]);

    let child = Command::new(std::env::current_exe().unwrap())
        .args(["template_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_ENV, "1")
        .env("TEST_DB_HOST", "127.0.0.1")
        .env("TEST_DB_PORT", server.port().to_string())
        .env("TEST_DB_USER", "postgres")
        .env("TEST_DB_PASSWORD", server.password().unwrap())
        .env("PGDBM_TESTKIT_TEMPLATE", &template)
        .env("PGDBM_TESTKIT_COUNTER", &counter_db)
        .spawn()
        .unwrap();
    runtime().block_on(eight_tests(server, template.clone(), counter_db.clone()));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the child process failed");
    assert_eq!(
        server
            .psql(&counter_db, "SELECT count(*) FROM builds")
            .unwrap(),
        "1"
    );

    // A changed migration: another name, built again.
    let changed = template_name(&[("001_users.sql", unique_database_name("y").unwrap())]);
    assert_ne!(changed, template);
    runtime().block_on(eight_tests(server, changed, counter_db.clone()));
    assert_eq!(
        server
            .psql(&counter_db, "SELECT count(*) FROM builds")
            .unwrap(),
        "2"
    );
}

#[test]
#[ignore = "helper process of template_is_built_once_across_tests_and_processes"]
fn template_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let server = TestServer::shared().unwrap();
    let template = std::env::var("PGDBM_TESTKIT_TEMPLATE").unwrap();
    let counter = std::env::var("PGDBM_TESTKIT_COUNTER").unwrap();
    runtime().block_on(eight_tests(server, template, counter));
}
