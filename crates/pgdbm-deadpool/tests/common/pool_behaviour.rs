//! Pool behaviour tests shared by `pgdbm-deadpool` and `pgdbm-bb8`: one generic body per
//! behaviour, instantiated for each backend by [`pool_tests!`].
//!
//! Included (not a crate) from both crates' tests:
//! `#[macro_use] #[path = "..."] mod common;` then `pool_tests!(the::Pool);`.
//!
//! Every test runs against a real PostgreSQL started by pgdbm-testkit: the shared throwaway
//! server of the test binary, each test in its own database, plus a private server for the
//! restart test.
#![allow(dead_code, unreachable_pub, missing_docs)]
// Test support: panicking on a failed setup step is the right behaviour here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgdbm_core::{Config, Connection, Error, Pool, Row};
use pgdbm_testkit::{unique_database_name, TestServer};

/// A PostgreSQL server for these tests: pgdbm-testkit's shared throwaway server, or a private
/// one (for the restart test).
pub enum PgServer {
    Shared(&'static TestServer),
    Private(Box<TestServer>),
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl PgServer {
    /// The server shared by all tests of this binary.
    pub fn shared() -> PgServer {
        PgServer::Shared(TestServer::shared().expect("start the shared test server"))
    }

    /// A private throwaway server that this test may stop and start.
    pub fn start_new() -> PgServer {
        PgServer::Private(Box::new(
            TestServer::start().expect("start a private test server"),
        ))
    }

    fn server(&self) -> &TestServer {
        match self {
            PgServer::Shared(s) => s,
            PgServer::Private(s) => s,
        }
    }

    pub fn port(&self) -> u16 {
        self.server().port()
    }

    /// Starts the (private) server again on its port.
    pub fn start(&self) {
        self.server().start_again().expect("start the server again");
    }

    /// Stops the (private) server (fast shutdown: sessions are terminated).
    pub fn stop(&self) {
        self.server().stop().expect("stop the server");
    }

    /// A pool config for `db` with small, test-friendly settings.
    pub fn config(&self, db: &str) -> Config {
        let mut c = self.server().config(db);
        c.min_connections = 1;
        c.max_connections = 4;
        c.retry_attempts = 2;
        c.retry_delay = Duration::from_millis(50);
        c.retry_jitter = false;
        c.connect_timeout = Duration::from_secs(5);
        c.acquire_timeout = Duration::from_secs(10);
        c
    }

    /// Runs `sql` with psql on `db`; returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.server()
            .psql(db, sql)
            .expect("psql")
            .trim()
            .to_string()
    }

    /// Creates a fresh database named after `prefix`; returns its name.
    pub fn new_database(&self, prefix: &str) -> String {
        let name = unique_database_name(prefix).expect("database name");
        self.server()
            .create_database(&name)
            .expect("create database");
        name
    }

    /// Backend pids of client sessions connected to `db` (other than psql's own).
    pub fn backends(&self, db: &str) -> Vec<i32> {
        let out = self.psql(
            "postgres",
            &format!(
                "SELECT pid FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid() ORDER BY pid"
            ),
        );
        out.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }
}

/// A fresh database on the shared server and a config for it.
pub fn setup(prefix: &str) -> (PgServer, String, Config) {
    let server = PgServer::shared();
    let db = server.new_database(prefix);
    let config = server.config(&db);
    (server, db, config)
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `limit` (a generous bound
/// on an eventual state, not a timing assertion).
pub async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "never happened within {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn backend_pid<C: Connection>(conn: &mut C) -> i32 {
    let rows = conn
        .query("SELECT pg_backend_pid()", &[], None)
        .await
        .expect("SELECT pg_backend_pid()");
    rows[0].get_at::<i32>(0).expect("pid")
}

pub async fn select_one<P: Pool>(pool: &P) -> pgdbm_core::Result<i32> {
    let mut conn = pool.acquire().await?;
    let rows = conn.query("SELECT 1::int4", &[], None).await?;
    rows[0].get_at::<i32>(0)
}

fn assert_pool_error(e: &Error, needle: &str) {
    match e {
        Error::Pool { message, .. } => assert!(message.contains(needle), "{message}"),
        other => panic!("expected Error::Pool containing {needle:?}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

pub async fn check_connect_and_stats<P: Pool>() {
    let (_server, _db, mut config) = setup("stats");
    config.min_connections = 2;
    config.max_connections = 4;
    let pool = P::connect(&config).await.expect("connect");
    let s = pool.stats();
    assert_eq!((s.size, s.idle, s.in_use), (2, 2, 0), "{s:?}");
    assert_eq!((s.min_size, s.max_size, s.waiting), (2, 4, 0), "{s:?}");

    let mut a = pool.acquire().await.expect("acquire");
    let mut b = pool.acquire().await.expect("acquire");
    assert_ne!(backend_pid(&mut a).await, backend_pid(&mut b).await);
    let s = pool.stats();
    assert_eq!(s.in_use, 2, "{s:?}");
    assert!(s.size >= 2 && s.size <= 4, "{s:?}");

    // Hold every connection, then one more task has to wait.
    let c = pool.acquire().await.expect("acquire");
    let d = pool.acquire().await.expect("acquire");
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire().await.map(|_| ()) })
    };
    eventually("one task waiting", Duration::from_secs(10), || {
        pool.stats().waiting == 1
    })
    .await;
    let s = pool.stats();
    assert_eq!((s.size, s.idle, s.in_use), (4, 0, 4), "{s:?}");
    drop(a);
    waiter
        .await
        .expect("join")
        .expect("waiter got a connection");
    assert_eq!(pool.stats().waiting, 0);
    drop((b, c, d));
    pool.close().await;
}

pub async fn check_connect_errors<P: Pool>() {
    let (server, _db, mut config) = setup("connerr");
    // Nothing listens on this port: retries, then Error::Connection with the attempts.
    config.port = free_port();
    config.retry_attempts = 2;
    match P::connect(&config).await {
        Err(Error::Connection { attempts, port, .. }) => {
            assert_eq!(attempts, 2);
            assert_eq!(port, config.port);
        }
        Err(e) => panic!("expected Error::Connection, got {e:?}"),
        Ok(_) => panic!("connected to a closed port"),
    }
    // An invalid config is rejected before any connection attempt.
    let mut bad = server.config("postgres");
    bad.min_connections = 5;
    bad.max_connections = 2;
    match P::connect(&bad).await {
        Err(Error::Configuration { field, .. }) => assert_eq!(field, "min_connections"),
        Err(e) => panic!("expected Error::Configuration, got {e:?}"),
        Ok(_) => panic!("accepted min > max"),
    }
}

pub async fn check_exhaustion<P: Pool>() {
    let (_server, _db, mut config) = setup("exhaust");
    config.min_connections = 0;
    config.max_connections = 2;
    config.acquire_timeout = Duration::from_millis(300);
    let pool = P::connect(&config).await.expect("connect");
    let a = pool.acquire().await.expect("first");
    let b = pool.acquire().await.expect("second");
    let err = pool
        .acquire()
        .await
        .err()
        .expect("third acquire must time out");
    assert_pool_error(&err, "2 of 2 connections in use");
    assert_pool_error(&err, "acquire_timeout");
    assert_pool_error(&err, "(0 other task(s) waiting)");
    match err {
        Error::Pool {
            in_use, max_size, ..
        } => assert_eq!((in_use, max_size), (Some(2), Some(2))),
        _ => unreachable!(),
    }
    // No deadlock: a released connection is handed out again, repeatedly.
    drop(a);
    for _ in 0..5 {
        assert_eq!(select_one(&pool).await.expect("after release"), 1);
    }
    assert_eq!(pool.stats().waiting, 0);
    drop(b);
    pool.close().await;
}

pub async fn check_returned_in_transaction<P: Pool>() {
    let (_server, _db, mut config) = setup("intx");
    config.min_connections = 1;
    config.max_connections = 1;
    let pool = P::connect(&config).await.expect("connect");
    {
        let mut c = pool.acquire().await.expect("acquire");
        c.batch_execute("CREATE TABLE t (id int)", None)
            .await
            .expect("create");
    }

    // Open transaction with an uncommitted insert, dropped.
    {
        let mut c = pool.acquire().await.expect("acquire");
        c.begin().await.expect("begin");
        c.execute("INSERT INTO t VALUES (1)", &[], None)
            .await
            .expect("insert");
        assert!(c.in_transaction());
    }
    {
        let mut c = pool.acquire().await.expect("next borrower");
        assert!(!c.in_transaction());
        let err = c
            .batch_execute("SAVEPOINT s", None)
            .await
            .expect_err("SAVEPOINT outside a transaction block must fail");
        assert_eq!(err.sqlstate(), Some("25P01"), "{err}");
        let rows = c
            .query("SELECT count(*) FROM t", &[], None)
            .await
            .expect("count");
        assert_eq!(
            rows[0].get_at::<i64>(0).expect("count"),
            0,
            "uncommitted insert leaked"
        );
    }

    // Aborted transaction (a failed statement inside it), dropped.
    {
        let mut c = pool.acquire().await.expect("acquire");
        c.begin().await.expect("begin");
        assert!(c.batch_execute("SELECT 1/0", None).await.is_err());
    }
    {
        let mut c = pool.acquire().await.expect("next borrower");
        let err = c
            .batch_execute("SAVEPOINT s", None)
            .await
            .expect_err("not in a transaction");
        assert_eq!(err.sqlstate(), Some("25P01"), "{err}");
        assert_eq!(select_in(&mut c).await, 7);
    }

    // A query cancelled mid-flight: its future is dropped while the server runs it.
    {
        let mut c = pool.acquire().await.expect("acquire");
        let r = tokio::time::timeout(
            Duration::from_millis(200),
            c.query("SELECT pg_sleep(3)", &[], None),
        )
        .await;
        assert!(r.is_err(), "the query future should have been dropped");
    }
    {
        let mut c = pool.acquire().await.expect("next borrower");
        // The next statement gets its own result, not the abandoned one.
        assert_eq!(select_in(&mut c).await, 7);
        let err = c
            .batch_execute("SAVEPOINT s", None)
            .await
            .expect_err("not in a transaction");
        assert_eq!(err.sqlstate(), Some("25P01"), "{err}");
    }

    // A query that timed out (client-side timeout cancels on the server).
    {
        let mut c = pool.acquire().await.expect("acquire");
        let err = c
            .query("SELECT pg_sleep(30)", &[], Some(Duration::from_millis(300)))
            .await
            .err()
            .expect("pg_sleep(30) must time out");
        assert!(err.is_timeout(), "{err:?}");
    }
    {
        let mut c = pool.acquire().await.expect("next borrower");
        assert_eq!(select_in(&mut c).await, 7);
    }
    pool.close().await;
}

async fn select_in<C: Connection>(c: &mut C) -> i32 {
    let rows = c
        .query("SELECT 7::int4", &[], None)
        .await
        .expect("SELECT 7");
    rows[0].get_at::<i32>(0).expect("int")
}

pub async fn check_max_queries<P: Pool>() {
    let (_server, _db, mut config) = setup("maxq");
    config.min_connections = 1;
    config.max_connections = 1;
    config.max_queries = 3;
    let pool = P::connect(&config).await.expect("connect");
    let mut uses: HashMap<i32, usize> = HashMap::new();
    let mut order = Vec::new();
    for _ in 0..9 {
        let mut c = pool.acquire().await.expect("acquire");
        let pid = backend_pid(&mut c).await;
        *uses.entry(pid).or_default() += 1;
        order.push(pid);
    }
    assert!(
        uses.len() >= 3,
        "9 queries with max_queries=3 used only {order:?}"
    );
    assert!(
        uses.values().all(|&n| n <= 3),
        "a connection ran more than 3 queries: {order:?}"
    );
    pool.close().await;
}

pub async fn check_idle_reaping<P: Pool>() {
    let (server, db, mut config) = setup("idle");
    config.min_connections = 0;
    config.max_connections = 2;
    config.max_inactive_connection_lifetime = Duration::from_secs(1);
    let pool = P::connect(&config).await.expect("connect");
    let first = {
        let mut c = pool.acquire().await.expect("acquire");
        backend_pid(&mut c).await
    };
    eventually("idle connections closed", Duration::from_secs(20), || {
        pool.stats().size == 0
    })
    .await;
    eventually(
        "backend gone on the server",
        Duration::from_secs(20),
        || !server.backends(&db).contains(&first),
    )
    .await;
    let mut c = pool.acquire().await.expect("acquire after reaping");
    assert_ne!(backend_pid(&mut c).await, first);
    drop(c);
    pool.close().await;

    // With min_connections = 1, an idle connection is replaced by a fresh one.
    config.min_connections = 1;
    let pool = P::connect(&config).await.expect("connect");
    let first = {
        let mut c = pool.acquire().await.expect("acquire");
        backend_pid(&mut c).await
    };
    eventually("idle backend replaced", Duration::from_secs(20), || {
        !server.backends(&db).contains(&first)
    })
    .await;
    let mut c = pool.acquire().await.expect("acquire");
    assert_ne!(backend_pid(&mut c).await, first);
    drop(c);
    pool.close().await;
}

pub async fn check_max_lifetime<P: Pool>() {
    let (_server, _db, mut config) = setup("lifetime");
    config.min_connections = 1;
    config.max_connections = 1;
    config.max_lifetime = Some(Duration::from_millis(400));
    let pool = P::connect(&config).await.expect("connect");
    let first = {
        let mut c = pool.acquire().await.expect("acquire");
        backend_pid(&mut c).await
    };
    // Keep using the pool: the connection is replaced once older than its lifetime.
    let start = Instant::now();
    let mut last = first;
    while last == first {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "connection never replaced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut c = pool.acquire().await.expect("acquire");
        last = backend_pid(&mut c).await;
    }
    pool.close().await;
}

pub async fn check_terminated_backends<P: Pool>() {
    let (server, db, mut config) = setup("term");
    config.min_connections = 4;
    config.max_connections = 4;
    let pool = P::connect(&config).await.expect("connect");
    {
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(pool.acquire().await.expect("acquire"));
        }
    }
    let before = server.backends(&db);
    assert_eq!(before.len(), 4, "{before:?}");
    server.psql(
        "postgres",
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
        ),
    );
    eventually("terminated backends gone", Duration::from_secs(10), || {
        server.backends(&db).iter().all(|p| !before.contains(p))
    })
    .await;
    // Every following query succeeds: the pool never hands out a dead connection.
    for i in 0..12 {
        let r = select_one(&pool).await;
        assert_eq!(
            r.as_ref().ok(),
            Some(&1),
            "query {i} after pg_terminate_backend: {r:?}"
        );
    }
    // Also concurrently, all connections at once.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move { select_one(&pool).await }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("query"), 1);
    }
    pool.close().await;
}

pub async fn check_server_restart<P: Pool>() {
    let server = PgServer::start_new();
    let mut config = server.config("postgres");
    config.min_connections = 2;
    config.max_connections = 3;
    config.acquire_timeout = Duration::from_secs(2);
    config.connect_timeout = Duration::from_secs(2);
    let pool = P::connect(&config).await.expect("connect");
    assert_eq!(select_one(&pool).await.expect("before restart"), 1);

    server.stop();
    for i in 0..3 {
        let err = select_one(&pool)
            .await
            .err()
            .unwrap_or_else(|| panic!("query {i} succeeded while the server was down"));
        eprintln!("while down: {err}");
        let connection_error = matches!(err, Error::Connection { .. } | Error::Pool { .. })
            || err
                .as_query()
                .is_some_and(|q| q.kind == pgdbm_core::QueryErrorKind::Connection);
        assert!(connection_error, "not a connection-related error: {err:?}");
    }

    server.start();
    let start = Instant::now();
    loop {
        match select_one(&pool).await {
            Ok(1) => break,
            Ok(n) => panic!("SELECT 1 returned {n}"),
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "pool never recovered: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    for i in 0..10 {
        let r = select_one(&pool).await;
        assert_eq!(r.as_ref().ok(), Some(&1), "query {i} after recovery: {r:?}");
    }
    pool.close().await;
    server.stop();
}

pub async fn check_close<P: Pool>() {
    let (server, db, mut config) = setup("close");
    config.min_connections = 2;
    config.max_connections = 3;
    let pool = P::connect(&config).await.expect("connect");
    let mut held = pool.acquire().await.expect("acquire");
    assert!(!pool.is_closed());
    pool.close().await;
    assert!(pool.is_closed());
    assert!(pool.clone().is_closed(), "clones share the pool");
    let err = pool.acquire().await.err().expect("acquire after close");
    assert_pool_error(&err, "closed");
    let s = pool.stats();
    assert_eq!(s.idle, 0, "idle connections closed: {s:?}");
    // The checked-out connection still works, and is closed when returned.
    assert_eq!(select_in(&mut held).await, 7);
    drop(held);
    eventually("no connections left", Duration::from_secs(10), || {
        pool.stats().size == 0
    })
    .await;
    eventually("no backends left", Duration::from_secs(10), || {
        server.backends(&db).is_empty()
    })
    .await;
}

/// How many statements starting with `SELECT 4242` this connection has prepared on the server.
async fn cached<C: Connection>(c: &mut C) -> usize {
    c.query(
        "SELECT statement FROM pg_prepared_statements WHERE statement LIKE 'SELECT 4242%'",
        &[],
        None,
    )
    .await
    .expect("pg_prepared_statements")
    .len()
}

pub async fn check_clear_statement_caches<P: Pool>() {
    let (_server, _db, mut config) = setup("epoch");
    config.min_connections = 1;
    config.max_connections = 1;
    let pool = P::connect(&config).await.expect("connect");
    {
        let mut c = pool.acquire().await.expect("acquire");
        c.query("SELECT 4242::int4", &[], None)
            .await
            .expect("select");
        assert_eq!(
            cached(&mut c).await,
            1,
            "the statement is cached on the server"
        );
    }
    {
        let mut c = pool.acquire().await.expect("acquire");
        assert_eq!(
            cached(&mut c).await,
            1,
            "still cached on the idle connection"
        );
    }
    pool.clear_statement_caches();
    let mut c = pool.acquire().await.expect("acquire");
    assert_eq!(
        cached(&mut c).await,
        0,
        "cache cleared before the next statement"
    );
    c.query("SELECT 4242::int4", &[], None)
        .await
        .expect("select after clear");
    drop(c);
    pool.close().await;
}

/// Deterministic FIFO: with one connection, waiters enqueued in a known order (task i is spawned
/// only once task i-1 is seen waiting) get it in that order.
pub async fn check_fifo_order<P: Pool>() {
    let (_server, _db, mut config) = setup("fifo");
    config.min_connections = 1;
    config.max_connections = 1;
    let pool = P::connect(&config).await.expect("connect");
    let holder = pool.acquire().await.expect("acquire");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    const N: usize = 8;
    for i in 0..N {
        let (pool2, order2) = (pool.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = pool2.acquire().await.expect("acquire");
            order2.lock().unwrap().push(i);
            select_in(&mut c).await;
        }));
        eventually("task waiting", Duration::from_secs(10), || {
            pool.stats().waiting == i + 1
        })
        .await;
    }
    drop(holder);
    for t in tasks {
        t.await.expect("join");
    }
    assert_eq!(*order.lock().unwrap(), (0..N).collect::<Vec<_>>());
    pool.close().await;
}

/// A task that releases a connection and asks again at once queues behind the task already
/// waiting (bb8 alone hands it straight back to the releaser).
pub async fn check_no_barging<P: Pool>() {
    let (_server, _db, mut config) = setup("barge");
    config.min_connections = 1;
    config.max_connections = 1;
    let pool = P::connect(&config).await.expect("connect");
    let order = Arc::new(Mutex::new(Vec::new()));
    let held = pool.acquire().await.expect("acquire");
    let waiter = {
        let (pool, order) = (pool.clone(), order.clone());
        tokio::spawn(async move {
            let mut c = pool.acquire().await.expect("waiter acquire");
            order.lock().unwrap().push("waiter");
            select_in(&mut c).await;
        })
    };
    eventually("waiter queued", Duration::from_secs(10), || {
        pool.stats().waiting == 1
    })
    .await;
    drop(held);
    let mut again = pool.acquire().await.expect("re-acquire");
    order.lock().unwrap().push("releaser");
    select_in(&mut again).await;
    drop(again);
    waiter.await.expect("join");
    assert_eq!(*order.lock().unwrap(), vec!["waiter", "releaser"]);
    pool.close().await;
}

/// 64 tasks x 10 checkouts on 20 connections, each running a 5 ms query: all complete without
/// error. Prints the longest wait (no timing assertion).
pub async fn check_many_tasks<P: Pool>() {
    let (_server, _db, mut config) = setup("many");
    config.min_connections = 20;
    config.max_connections = 20;
    config.acquire_timeout = Duration::from_secs(60);
    let pool = P::connect(&config).await.expect("connect");
    let waits = run_load(&pool, 64, 10).await;
    assert_eq!(waits.len(), 640);
    let max = waits.iter().max().copied().unwrap_or_default();
    eprintln!("64 tasks x 10 on 20 connections: longest acquire wait {max:?}");
    assert_eq!(pool.stats().in_use, 0);
    pool.close().await;
}

/// Runs `tasks` tasks doing `iterations` checkouts each with `SELECT pg_sleep(0.005)`; returns
/// every acquire wait.
pub async fn run_load<P: Pool>(pool: &P, tasks: usize, iterations: usize) -> Vec<Duration> {
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let pool = pool.clone();
        handles.push(tokio::spawn(async move {
            let mut waits = Vec::with_capacity(iterations);
            for _ in 0..iterations {
                let t = Instant::now();
                let mut c = pool.acquire().await.expect("acquire under load");
                waits.push(t.elapsed());
                c.query("SELECT pg_sleep(0.005)", &[], None)
                    .await
                    .expect("query");
            }
            waits
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("join"));
    }
    all
}

/// Defines one `#[tokio::test]` per behaviour for the pool type `$pool`.
#[allow(unused_macros)]
macro_rules! pool_tests {
    ($pool:ty) => {
        pool_tests!(@each $pool;
            connect_and_stats => check_connect_and_stats,
            connect_errors => check_connect_errors,
            exhaustion => check_exhaustion,
            returned_in_transaction => check_returned_in_transaction,
            max_queries => check_max_queries,
            idle_reaping => check_idle_reaping,
            max_lifetime => check_max_lifetime,
            terminated_backends => check_terminated_backends,
            server_restart => check_server_restart,
            close => check_close,
            clear_statement_caches => check_clear_statement_caches,
            fifo_order => check_fifo_order,
            no_barging => check_no_barging,
            many_tasks => check_many_tasks,
        );
    };
    (@each $pool:ty; $($name:ident => $body:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                common::$body::<$pool>().await;
            }
        )*
    };
}
