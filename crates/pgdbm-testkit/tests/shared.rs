//! `TestServer::shared()` is one server per test process, used by tests running in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::sync::OnceLock;

use pgdbm_testkit::{unique_database_name, TestServer};

/// (address of the shared server, its port, its postmaster pid) as seen by the first test.
static FIRST: OnceLock<(usize, u16, Option<u32>)> = OnceLock::new();

fn check_same_server_and_use_it() {
    let server = TestServer::shared().unwrap();
    let seen = (
        server as *const TestServer as usize,
        server.port(),
        server.pid(),
    );
    assert_eq!(*FIRST.get_or_init(|| seen), seen);

    // Use it concurrently with the other tests: a private database each.
    let db = unique_database_name("test_shared_").unwrap();
    server.create_database(&db).unwrap();
    server
        .psql(&db, "CREATE TABLE t (v text); INSERT INTO t VALUES ('x')")
        .unwrap();
    assert_eq!(server.psql(&db, "SELECT v FROM t").unwrap(), "x");
    server.drop_database(&db).unwrap();

    // A throwaway shared server lives in a directory owned by this process, and it is the
    // only server directory of this process (no second server was started).
    if let Some(dir) = server.dir() {
        let owner = std::fs::read_to_string(dir.join("owner")).unwrap();
        let pid = std::process::id().to_string();
        assert_eq!(owner.split_whitespace().next(), Some(pid.as_str()));
        let prefix = format!("{pid}-");
        let ours = std::fs::read_dir(dir.parent().unwrap())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&prefix)
            })
            .count();
        assert_eq!(ours, 1);
    }
}

#[test]
fn shared_one() {
    check_same_server_and_use_it();
}

#[test]
fn shared_two() {
    check_same_server_and_use_it();
}

#[test]
fn shared_three() {
    check_same_server_and_use_it();
}

#[test]
fn shared_four() {
    check_same_server_and_use_it();
}

/// A test that panics keeps its database and prints its name.
#[test]
fn a_panicking_test_keeps_its_database() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let name = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen = std::sync::Arc::clone(&name);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let db = pgdbm_testkit::TestDatabase::create(Some("panics"))
                .await
                .unwrap();
            *seen.lock().unwrap() = db.name().to_string();
            panic!("the test body fails");
        })
    }));
    assert!(result.is_err());
    let name = name.lock().unwrap().clone();
    let server = TestServer::shared().unwrap();
    let count = |n: &str| {
        server
            .psql(
                "postgres",
                &format!("SELECT count(*) FROM pg_database WHERE datname = '{n}'"),
            )
            .unwrap()
    };
    assert_eq!(count(&name), "1", "{name} was dropped");
    server.drop_database(&name).unwrap();
    assert_eq!(count(&name), "0");
}
