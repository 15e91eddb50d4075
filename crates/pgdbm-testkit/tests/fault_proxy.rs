//! `FaultProxy` against a real PostgreSQL (the testkit's shared server): every fault is checked
//! from the client's side and, where it matters, from the server's (`pg_stat_activity` on a
//! direct connection).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgdbm_core::{Config, Connection, Error, Pool, QueryErrorKind, Row};
use pgdbm_deadpool::DeadpoolPool;
use pgdbm_testkit::{unique_database_name, Direction, FaultProxy, TestServer};

/// Generous bound so that a hang fails the test instead of blocking the suite.
const BOUND: Duration = Duration::from_secs(60);
/// Client-side timeout of queries expected to stall.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// A test database with a pool through a proxy and a direct pool (the server's view).
struct Env {
    server: &'static TestServer,
    db: String,
    proxy: FaultProxy,
    proxied: DeadpoolPool,
    direct: DeadpoolPool,
}

impl Env {
    async fn new(prefix: &str) -> Env {
        let server = TestServer::shared().expect("test server");
        let db = unique_database_name(prefix).expect("name");
        server.create_database(&db).expect("create database");
        let proxy = FaultProxy::for_server(server).expect("proxy");
        let mut config = Self::base_config(server, &db);
        let direct = DeadpoolPool::connect(&config).await.expect("direct pool");
        config.port = proxy.port();
        config.application_name = Some("through_proxy".into());
        let proxied = DeadpoolPool::connect(&config)
            .await
            .expect("pool through the proxy");
        Env {
            server,
            db,
            proxy,
            proxied,
            direct,
        }
    }

    fn base_config(server: &TestServer, db: &str) -> Config {
        let mut config = server.config(db);
        config.min_connections = 0;
        config.max_connections = 4;
        config.retry_attempts = 1;
        config.connect_timeout = Duration::from_secs(5);
        config.acquire_timeout = Duration::from_secs(5);
        config
    }

    async fn session_exists(&self, pid: i32) -> bool {
        session_exists(&self.direct, pid).await
    }

    async fn wait_session_gone(&self, pid: i32) {
        wait_session_gone(&self.direct, pid).await;
    }

    async fn finish(self) {
        self.proxied.close().await;
        self.direct.close().await;
        drop(self.proxy);
        let _ = self.server.drop_database(&self.db);
    }
}

async fn backend_pid<C: Connection>(conn: &mut C) -> i32 {
    conn.query_opt("SELECT pg_backend_pid()", &[], Some(COMMAND_TIMEOUT))
        .await
        .unwrap()
        .unwrap()
        .get_at::<i32>(0)
        .unwrap()
}

fn is_connection_error(e: &Error) -> bool {
    matches!(e.as_query(), Some(q) if q.kind == QueryErrorKind::Connection)
        || matches!(e, Error::Connection { .. } | Error::Pool { .. })
}

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(BOUND, f)
        .await
        .expect("test timed out (hang?)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_queries_and_counts() {
    bounded(async {
        let env = Env::new("fp_fwd_").await;
        let mut c = env.proxied.acquire().await.unwrap();
        let pid = backend_pid(&mut c).await;
        assert!(env.session_exists(pid).await);
        let stats = env.proxy.stats();
        assert!(stats.accepted >= 1, "{stats:?}");
        assert!(stats.bytes_client_to_server > 0 && stats.bytes_server_to_client > 0);
        assert!(env.proxy.connections() >= 1);
        assert_eq!(stats.delayed_chunks, 0);
        drop(c);
        env.finish().await;
    })
    .await;
}

/// A query sent with 300 ms of client-to-server latency reaches the server no earlier than
/// 300 ms after it was sent: the server's clock says so (a lower bound only, never an upper).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_what_the_server_sees() {
    bounded(async {
        let env = Env::new("fp_lat_").await;
        let mut c = env.proxied.acquire().await.unwrap();
        backend_pid(&mut c).await;
        env.proxy
            .set_latency(Direction::ClientToServer, Duration::from_millis(300));
        let sent = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let row = c
            .query_opt(
                "SELECT extract(epoch FROM clock_timestamp())::float8",
                &[],
                None,
            )
            .await
            .unwrap()
            .unwrap();
        let seen = Duration::from_secs_f64(row.get_at::<f64>(0).unwrap());
        assert!(
            seen >= sent + Duration::from_millis(300),
            "the server ran the query {:?} after it was sent",
            seen.saturating_sub(sent)
        );
        assert!(env.proxy.stats().delayed_chunks >= 1);
        env.proxy.heal();
        drop(c);
        env.finish().await;
    })
    .await;
}

/// A blackholed connection fails a query with a timeout while the server keeps the session
/// (nothing was closed); after `heal` queries work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_times_out_and_heal_restores() {
    bounded(async {
        let env = Env::new("fp_bh_").await;
        let mut c = env.proxied.acquire().await.unwrap();
        let pid = backend_pid(&mut c).await;
        env.proxy.blackhole(Direction::Both);
        let err = c
            .query_opt("SELECT 1", &[], Some(COMMAND_TIMEOUT))
            .await
            .expect_err("a blackholed query cannot complete");
        assert!(err.is_timeout(), "expected a timeout, got {err}");
        // The server never heard of the client giving up.
        assert!(env.session_exists(pid).await, "the session must stay open");
        drop(c);
        env.proxy.heal();
        // Recovers: the pool hands out a working connection again (the old one may be closed
        // by the pool, so poll briefly).
        let mut ok = false;
        for _ in 0..100 {
            if let Ok(mut c) = env.proxied.acquire().await {
                if c.query_opt("SELECT 1", &[], Some(COMMAND_TIMEOUT))
                    .await
                    .is_ok()
                {
                    ok = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(ok, "queries do not work after heal");
        env.finish().await;
    })
    .await;
}

/// Only server-to-client blackholed: the query reaches the server (it runs), its reply does
/// not reach the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_blackhole_holds_only_that_direction() {
    bounded(async {
        let env = Env::new("fp_bh1_").await;
        let mut setup = env.direct.acquire().await.unwrap();
        setup
            .batch_execute("CREATE TABLE hits (v int)", None)
            .await
            .unwrap();
        let mut c = env.proxied.acquire().await.unwrap();
        backend_pid(&mut c).await;
        env.proxy.blackhole(Direction::ServerToClient);
        // A simple-protocol statement: one message, no round trip before it runs.
        let err = c
            .batch_execute("INSERT INTO hits VALUES (1)", Some(COMMAND_TIMEOUT))
            .await
            .expect_err("the reply is held");
        assert!(err.is_timeout(), "expected a timeout, got {err}");
        let mut seen = false;
        for _ in 0..200 {
            let n = setup
                .query_opt("SELECT count(*) FROM hits", &[], None)
                .await
                .unwrap()
                .unwrap()
                .get_at::<i64>(0)
                .unwrap();
            if n == 1 {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(seen, "the insert did not reach the server");
        env.proxy.heal();
        drop(c);
        drop(setup);
        env.finish().await;
    })
    .await;
}

/// `cut_all` resets every connection: the next query fails with a connection error and the
/// server loses the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_all_resets_both_sides() {
    bounded(async {
        let env = Env::new("fp_cut_").await;
        let mut c = env.proxied.acquire().await.unwrap();
        let pid = backend_pid(&mut c).await;
        assert!(env.proxy.cut_all() >= 1);
        let err = c
            .query_opt("SELECT 1", &[], Some(COMMAND_TIMEOUT))
            .await
            .expect_err("the connection was cut");
        assert!(
            is_connection_error(&err),
            "expected a connection error, got {err}"
        );
        env.wait_session_gone(pid).await;
        drop(c);
        // New connections work.
        let mut c = env.proxied.acquire().await.unwrap();
        backend_pid(&mut c).await;
        assert!(env.proxy.stats().cut >= 1);
        drop(c);
        env.finish().await;
    })
    .await;
}

/// `cut_after_bytes` lets exactly N bytes of the reply through, then resets the connection
/// (one-shot: the next connection works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_after_bytes_cuts_mid_reply() {
    bounded(async {
        let env = Env::new("fp_cutn_").await;
        let mut c = env.proxied.acquire().await.unwrap();
        let pid = backend_pid(&mut c).await;
        let before = env.proxy.stats();
        env.proxy.cut_after_bytes(Direction::ServerToClient, 7);
        let err = c
            .query_opt("SELECT repeat('x', 100000)", &[], Some(COMMAND_TIMEOUT))
            .await
            .expect_err("the reply was cut");
        assert!(
            is_connection_error(&err),
            "expected a connection error, got {err}"
        );
        let after = env.proxy.stats();
        assert_eq!(
            after.bytes_server_to_client - before.bytes_server_to_client,
            7
        );
        assert_eq!(after.cut - before.cut, 1);
        env.wait_session_gone(pid).await;
        drop(c);
        let mut c = env.proxied.acquire().await.unwrap();
        let row = c
            .query_opt(
                "SELECT length(repeat('x', 100000))",
                &[],
                Some(COMMAND_TIMEOUT),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.get_at::<i32>(0).unwrap(), 100_000);
        drop(c);
        env.finish().await;
    })
    .await;
}

/// With `refuse_new`, connecting fails with a connection error (quickly, not a hang) while an
/// open connection keeps working; turned off, connecting works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_new_fails_connects() {
    bounded(async {
        let env = Env::new("fp_ref_").await;
        let mut open = env.proxied.acquire().await.unwrap();
        backend_pid(&mut open).await;
        env.proxy.refuse_new(true);
        let mut config = Env::base_config(env.server, &env.db);
        config.port = env.proxy.port();
        config.min_connections = 0;
        let pool = DeadpoolPool::connect(&config).await;
        let err = match pool {
            Err(e) => e,
            Ok(pool) => {
                let e = pool.acquire().await.map(|_| ()).expect_err("refused");
                pool.close().await;
                e
            }
        };
        assert!(
            is_connection_error(&err),
            "expected a connection error, got {err}"
        );
        assert!(env.proxy.stats().refused >= 1);
        backend_pid(&mut open).await;
        env.proxy.refuse_new(false);
        let pool = DeadpoolPool::connect(&config).await.unwrap();
        let mut c = pool.acquire().await.unwrap();
        backend_pid(&mut c).await;
        drop(c);
        pool.close().await;
        drop(open);
        env.finish().await;
    })
    .await;
}

/// Dropping the proxy closes its port and resets its connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_stops_listening() {
    bounded(async {
        let env = Env::new("fp_drop_").await;
        let mut c = env.proxied.acquire().await.unwrap();
        let pid = backend_pid(&mut c).await;
        let Env {
            server,
            db,
            proxy,
            proxied,
            direct,
        } = env;
        let port = proxy.port();
        drop(proxy);
        let mut refused = false;
        for _ in 0..200 {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    refused = true;
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        assert!(refused, "the proxy's port still accepts connections");
        wait_session_gone(&direct, pid).await;
        drop(c);
        proxied.close().await;
        direct.close().await;
        let _ = server.drop_database(&db);
    })
    .await;
}

/// Whether the server still has a session with this pid (seen on a direct connection).
async fn session_exists(direct: &DeadpoolPool, pid: i32) -> bool {
    let mut c = direct.acquire().await.unwrap();
    let row = c
        .query_opt(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
            None,
        )
        .await
        .unwrap()
        .unwrap();
    row.get_at::<i64>(0).unwrap() == 1
}

/// Polls until the server has no session with this pid.
async fn wait_session_gone(direct: &DeadpoolPool, pid: i32) {
    for _ in 0..400 {
        if !session_exists(direct, pid).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the server still has session {pid}");
}

/// The example of docs/testing.md ("Fault injection with FaultProxy"), through the `Database`
/// manager with the config's `command_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_example_with_database() {
    bounded(async {
        let server = TestServer::shared().unwrap();
        let name = unique_database_name("fault_").unwrap();
        server.create_database(&name).unwrap();

        let proxy = FaultProxy::for_server(server).unwrap();
        let mut config = server.config(&name);
        config.port = proxy.port();
        config.command_timeout = Some(Duration::from_millis(500));
        let db = pgdbm_core::Database::<DeadpoolPool>::connect(config)
            .await
            .unwrap();
        assert_eq!(
            db.fetch_value::<i32, _>("SELECT 1", &[]).await.unwrap(),
            Some(1)
        );

        proxy.blackhole(Direction::Both);
        let err = db.fetch_value::<i32, _>("SELECT 1", &[]).await.unwrap_err();
        assert!(err.is_timeout(), "{err}");

        proxy.heal();
        assert_eq!(
            db.fetch_value::<i32, _>("SELECT 1", &[]).await.unwrap(),
            Some(1)
        );

        let mut tx = db.transaction().await.unwrap();
        proxy.cut_all();
        let err = tx.fetch_value::<i32, _>("SELECT 1", &[]).await.unwrap_err();
        assert!(
            matches!(err.as_query(), Some(q) if q.kind == QueryErrorKind::Connection),
            "{err}"
        );

        drop(tx);
        db.close().await;
        server.drop_database(&name).unwrap();
    })
    .await;
}
