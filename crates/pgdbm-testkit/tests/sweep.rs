//! Orphan sweep: a database left by a SIGKILLed test process is dropped by the next sweep, and
//! two sweeps at once are safe. The killed process is a child of this test (the same binary),
//! using this test's private server as its `TEST_DB_HOST`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::io::{BufRead, BufReader};
use std::process::Command;

use pgdbm_testkit::TestServer;

mod common;
use common::spawn_test_child;

const CHILD_ENV: &str = "PGDBM_TESTKIT_SWEEP_CHILD";

fn exists(server: &TestServer, name: &str) -> bool {
    server
        .psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
        )
        .unwrap()
        == "1"
}

#[test]
fn sweep_drops_the_database_of_a_sigkilled_process() {
    let server = TestServer::start().unwrap();
    let mut child = spawn_test_child("sweep_child", CHILD_ENV, &server);
    let stdout = child.stdout.take().unwrap();
    let name = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("CREATED ").map(str::to_string))
        .expect("the child printed no CREATED line");
    child.kill().unwrap(); // SIGKILL: no destructor, no atexit
    child.wait().unwrap();
    assert!(
        exists(&server, &name),
        "{name} should survive its killed owner"
    );

    // A live process's database is not an orphan.
    let mine = pgdbm_testkit::unique_database_name("test_live_").unwrap();
    server.create_database(&mine).unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (a, b) =
        rt.block_on(async { tokio::join!(server.sweep_orphans(), server.sweep_orphans()) });
    let mut dropped = a.unwrap();
    dropped.extend(b.unwrap());
    assert_eq!(dropped, vec![name.clone()], "dropped exactly once");
    assert!(!exists(&server, &name));
    assert!(exists(&server, &mine));
    server.drop_database(&mine).unwrap();
}

#[test]
#[ignore = "helper process of sweep_drops_the_database_of_a_sigkilled_process"]
fn sweep_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let server = TestServer::shared().unwrap();
    assert!(!server.is_local());
    let name = pgdbm_testkit::unique_database_name("test_orphan_").unwrap();
    server.create_database(&name).unwrap();
    println!("CREATED {name}");
    // Wait to be killed.
    loop {
        std::thread::park();
    }
}

/// Creating, querying and dropping databases needs no `psql` (nor anything else) on `PATH`:
/// the sweep test above runs again in a child whose `PATH` holds nothing.
#[test]
fn no_psql_needed_on_path() {
    if std::env::var_os("PGDBM_TESTKIT_NO_PATH_CHILD").is_some() {
        return; // already the child
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "sweep_drops_the_database_of_a_sigkilled_process",
            "--exact",
            "--nocapture",
        ])
        .env("PATH", "/nonexistent")
        .env("PGDBM_TESTKIT_NO_PATH_CHILD", "1")
        .env("PGDBM_PG_BIN", pgdbm_testkit::find_pg_bin(None).unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
