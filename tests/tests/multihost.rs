//! Several hosts in one config, with libpq's semantics, against real servers for both pool
//! backends: a host that is down is skipped, `target_session_attrs` picks the right kind of
//! server (judged from what each server reports), `load_balance_hosts = random` spreads
//! connections, the error of a failed connect lists every host, a write that reaches a
//! read-only server discards the connection, and cancel requests go to the address that
//! served the connection.
//!
//! Each test owns private servers (some are stopped). The "read-only" server is a primary
//! started with `default_transaction_read_only = on`, which libpq (and pgdbm) treats as
//! read-only for `read-write` / `read-only` but not as a hot standby; real standbys
//! (`in_hot_standby`) are tested with the streaming cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use pgdbm::{Config, Connection, Database, Error, PgConnection, Pool, Row, TargetSessionAttrs};
use pgdbm_integration_tests::both_backends;
use pgdbm_testkit::TestServer;

/// A writable server and a read-only one (`default_transaction_read_only = on`), both with
/// database `db` and the same superuser password, so one config reaches both.
struct Pair {
    primary: TestServer,
    read_only: TestServer,
}

async fn pair(db: &str) -> Pair {
    let primary = TestServer::start().expect("primary server");
    let read_only = TestServer::start().expect("read-only server");
    same_password(&primary, &read_only);
    for s in [&primary, &read_only] {
        s.create_database(db).unwrap();
        // Per-server marker: which server a connection reached, from the server's own data.
        s.psql(
            db,
            &format!(
                "CREATE TABLE marker (port int); INSERT INTO marker VALUES ({})",
                s.port()
            ),
        )
        .unwrap();
    }
    // Then the second becomes read-only for every new session.
    read_only
        .psql(
            "postgres",
            "ALTER SYSTEM SET default_transaction_read_only = on",
        )
        .unwrap();
    read_only
        .psql("postgres", "SELECT pg_reload_conf()")
        .unwrap();
    // (Its own password was replaced by the primary's.)
    let mut probe = primary.config(db);
    probe.port = read_only.port();
    probe.retry_attempts = 1;
    let mut reported = None;
    for _ in 0..200 {
        let mut conn = PgConnection::connect_once(&probe).await.unwrap();
        let rows = conn
            .query("SHOW default_transaction_read_only", &[], None)
            .await
            .unwrap();
        reported = Some(rows[0].get_at::<String>(0).unwrap());
        if reported.as_deref() == Some("on") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(reported.as_deref(), Some("on"), "the reload did not apply");
    Pair { primary, read_only }
}

/// Gives `other` the superuser password of `first` (each throwaway server has its own).
fn same_password(first: &TestServer, other: &TestServer) {
    let pw = first.password().expect("a throwaway server has a password");
    other
        .psql(
            "postgres",
            &format!(
                "ALTER ROLE \"{}\" PASSWORD '{}'",
                other.user(),
                pw.replace('\'', "''")
            ),
        )
        .unwrap();
}

/// A port on 127.0.0.1 with nothing listening (bound, then released).
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The config of `first`'s database `db` with these `(host, port)`s in order.
fn multi(first: &TestServer, db: &str, hosts: &[(String, u16)]) -> Config {
    let mut c = first.config(db);
    c.host = hosts[0].0.clone();
    c.port = hosts[0].1;
    c.fallback_hosts = hosts[1..].to_vec();
    c.min_connections = 1;
    c.max_connections = 2;
    c.connect_timeout = Duration::from_secs(5);
    c.retry_attempts = 1;
    c
}

fn at(s: &TestServer) -> (String, u16) {
    (s.host().to_string(), s.port())
}

/// The port of the server the pool's connections reach, from its marker table.
async fn served_by<P: Pool>(db: &Database<P>) -> i32 {
    db.fetch_value::<i32, _>("SELECT port FROM marker", &[])
        .await
        .unwrap()
        .unwrap()
}

async fn first_host_down_second_used<P: Pool>() {
    let p = pair("mh_down").await;
    let hosts = [
        ("127.0.0.1".to_string(), dead_port()),
        at(&p.primary),
        at(&p.read_only),
    ];
    let db = Database::<P>::connect(multi(&p.primary, "mh_down", &hosts))
        .await
        .unwrap();
    assert_eq!(served_by(&db).await, i32::from(p.primary.port()));
    // Also the server's own view of the port it was reached on.
    let port = db
        .fetch_value::<i32, _>("SELECT inet_server_port()", &[])
        .await
        .unwrap();
    assert_eq!(port, Some(i32::from(p.primary.port())));
    db.close().await;

    // A stopped server first: the same.
    p.primary.stop().unwrap();
    let hosts = [at(&p.primary), at(&p.read_only)];
    let db = Database::<P>::connect(multi(&p.primary, "mh_down", &hosts))
        .await
        .unwrap();
    assert_eq!(served_by(&db).await, i32::from(p.read_only.port()));
    db.close().await;
}

both_backends!(first_host_down, first_host_down_second_used);

async fn session_attrs_pick_the_right_server<P: Pool>() {
    let p = pair("mh_attrs").await;
    let connect = |hosts: Vec<(String, u16)>, attrs: TargetSessionAttrs| {
        let mut c = multi(&p.primary, "mh_attrs", &hosts);
        c.target_session_attrs = attrs;
        Database::<P>::connect(c)
    };
    let (rw, ro) = (p.primary.port() as i32, p.read_only.port() as i32);
    let both = vec![at(&p.read_only), at(&p.primary)];
    let reversed = vec![at(&p.primary), at(&p.read_only)];

    // read-write over (read-only, primary): the primary, and writes work there.
    let db = connect(both.clone(), TargetSessionAttrs::ReadWrite)
        .await
        .unwrap();
    assert_eq!(served_by(&db).await, rw);
    db.execute("INSERT INTO marker VALUES (0)", &[])
        .await
        .unwrap();
    db.close().await;

    // read-only over (primary, read-only): the read-only server.
    let db = connect(reversed.clone(), TargetSessionAttrs::ReadOnly)
        .await
        .unwrap();
    assert_eq!(served_by(&db).await, ro);
    db.close().await;

    // any: the first that answers.
    let db = connect(both.clone(), TargetSessionAttrs::Any)
        .await
        .unwrap();
    assert_eq!(served_by(&db).await, ro);
    db.close().await;

    // Neither server is in hot standby (both report in_hot_standby = off): primary takes the
    // first, standby finds none and says so for each host.
    let db = connect(both.clone(), TargetSessionAttrs::Primary)
        .await
        .unwrap();
    assert_eq!(served_by(&db).await, ro);
    db.close().await;
    match connect(both.clone(), TargetSessionAttrs::Standby).await {
        Err(Error::Connection { message, .. }) => {
            assert_eq!(
                message
                    .matches("server is not in hot standby but target_session_attrs=standby")
                    .count(),
                2,
                "{message}"
            );
        }
        other => panic!(
            "standby with no standby must fail, got {:?}",
            other.map(|_| ())
        ),
    }

    // prefer-standby: no standby among them, so the second pass takes the first that answers;
    // with the first host down it falls back to the next (the primary).
    let db = connect(reversed.clone(), TargetSessionAttrs::PreferStandby)
        .await
        .unwrap();
    assert_eq!(served_by(&db).await, rw);
    db.close().await;
    p.read_only.stop().unwrap();
    let db = connect(both.clone(), TargetSessionAttrs::PreferStandby)
        .await
        .unwrap();
    assert_eq!(served_by(&db).await, rw);
    db.close().await;
}

both_backends!(session_attrs, session_attrs_pick_the_right_server);

async fn error_lists_every_host<P: Pool>() {
    let p = pair("mh_err").await;
    let dead = dead_port();
    let hosts = [("127.0.0.1".to_string(), dead), at(&p.read_only)];
    let mut c = multi(&p.primary, "mh_err", &hosts);
    c.target_session_attrs = TargetSessionAttrs::ReadWrite;
    c.application_name = Some("mh_rejected".to_string());
    let password = c.password.clone().unwrap();
    let err = match Database::<P>::connect(c).await {
        Err(e) => e,
        Ok(_) => panic!("no host is read-write: the connect must fail"),
    };
    let text = err.to_string();
    let Error::Connection { message, .. } = &err else {
        panic!("expected a connection error, got {err:?}");
    };
    assert!(
        message.starts_with("could not connect to any host: "),
        "{message}"
    );
    let first = format!("127.0.0.1:{dead} (error connecting to server");
    let second = format!(
        "127.0.0.1:{} (server is read-only (hot standby or default_transaction_read_only = on) \
         but target_session_attrs=read-write)",
        p.read_only.port()
    );
    assert!(message.contains(&first), "{message}");
    assert!(message.contains(&second), "{message}");
    assert!(!text.contains(&password) && !format!("{err:?}").contains(&password));
    // The rejected session was closed, not left open on the server.
    let mut open = String::new();
    for _ in 0..200 {
        open = p
            .read_only
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mh_rejected'",
            )
            .unwrap();
        if open == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(open, "0", "a rejected connection stayed open");
}

both_backends!(error_lists_hosts, error_lists_every_host);

/// `load_balance_hosts = random`: 100 connects spread over two servers (each gets at least 20:
/// for a fair coin that fails with probability below 1e-9), told apart by the servers' marker
/// tables; a pool's connections land on both.
async fn random_load_balancing_spreads_connections<P: Pool>() {
    let p = pair("mh_lb").await;
    let mut c = multi(&p.primary, "mh_lb", &[at(&p.primary), at(&p.read_only)]);
    c.load_balance_hosts = pgdbm::LoadBalanceHosts::Random;
    let mut seen = BTreeMap::<i32, u32>::new();
    for _ in 0..100 {
        let mut conn = PgConnection::connect_once(&c).await.unwrap();
        let rows = conn
            .query("SELECT port FROM marker", &[], None)
            .await
            .unwrap();
        let port: i32 = rows[0].get_at(0).unwrap();
        *seen.entry(port).or_default() += 1;
    }
    let (a, b) = (p.primary.port() as i32, p.read_only.port() as i32);
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), {
        let mut v = vec![a, b];
        v.sort();
        v
    });
    assert!(seen.values().all(|&n| n >= 20), "{seen:?}");

    // Without it, every connect takes the first host.
    c.load_balance_hosts = pgdbm::LoadBalanceHosts::Disable;
    for _ in 0..10 {
        let mut conn = PgConnection::connect_once(&c).await.unwrap();
        let rows = conn
            .query("SELECT port FROM marker", &[], None)
            .await
            .unwrap();
        assert_eq!(rows[0].get_at::<i32>(0).unwrap(), a);
    }

    // A pool opening 16 connections (all held at once) reaches both servers.
    c.load_balance_hosts = pgdbm::LoadBalanceHosts::Random;
    c.min_connections = 0;
    c.max_connections = 16;
    let db = Database::<P>::connect(c).await.unwrap();
    let mut held = Vec::new();
    let mut ports = std::collections::BTreeSet::new();
    for _ in 0..16 {
        let mut conn = db.acquire().await.unwrap();
        ports.insert(
            conn.fetch_value::<i32, _>("SELECT port FROM marker", &[])
                .await
                .unwrap()
                .unwrap(),
        );
        held.push(conn);
    }
    assert_eq!(
        ports.len(),
        2,
        "16 connections all on one server: {ports:?}"
    );
    drop(held);
    db.close().await;
}

both_backends!(load_balance, random_load_balancing_spreads_connections);

/// A write refused with 25006 (the server is read-only, as a standby after a failover is)
/// discards the connection: the pool's next statement runs on a new backend.
async fn read_only_write_discards_the_connection<P: Pool>() {
    let p = pair("mh_25006").await;
    let mut c = multi(&p.primary, "mh_25006", &[at(&p.read_only)]);
    c.max_connections = 1;
    let db = Database::<P>::connect(c).await.unwrap();
    let pid = || db.fetch_value::<i32, _>("SELECT pg_backend_pid()", &[]);
    let before = pid().await.unwrap();
    assert_eq!(
        pid().await.unwrap(),
        before,
        "one pooled connection, reused"
    );
    let e = db
        .execute("INSERT INTO marker VALUES (1)", &[])
        .await
        .expect_err("a write on a read-only server must fail");
    assert_eq!(e.sqlstate(), Some("25006"), "{e}");
    let after = pid().await.unwrap();
    assert_ne!(after, before, "the connection that hit 25006 was reused");
    // Other errors keep the connection.
    let e = db.execute("SELECT 1/0", &[]).await.unwrap_err();
    assert_eq!(e.sqlstate(), Some("22012"));
    assert_eq!(pid().await.unwrap(), after);
    db.close().await;
    drop(p);
}

both_backends!(read_only_write, read_only_write_discards_the_connection);

/// `hostaddr`: the name is never looked up (it is in `.invalid`, which never resolves), for
/// the connect and for the cancel request of a timed-out statement, which goes to the address
/// that served the connection: the statement is cancelled and the connection kept.
async fn hostaddr_connects_and_cancels_without_lookup<P: Pool>() {
    let p = pair("mh_addr").await;
    let mut c = multi(
        &p.primary,
        "mh_addr",
        &[
            ("db.invalid".to_string(), dead_port()),
            ("primary.invalid".to_string(), p.primary.port()),
        ],
    );
    c.hostaddr = vec![
        Some("127.0.0.1".parse().unwrap()),
        Some("127.0.0.1".parse().unwrap()),
    ];
    c.max_connections = 1;
    c.command_timeout = Some(Duration::from_millis(300));

    let conn = PgConnection::connect_once(&c).await.unwrap();
    assert_eq!(
        conn.server_addr(),
        Some(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            p.primary.port()
        )))
    );
    drop(conn);

    let db = Database::<P>::connect(c).await.unwrap();
    assert_eq!(served_by(&db).await, i32::from(p.primary.port()));
    let pid = db
        .fetch_value::<i32, _>("SELECT pg_backend_pid()", &[])
        .await
        .unwrap();
    let e = db
        .execute("SELECT pg_sleep(30)", &[])
        .await
        .expect_err("the statement must time out");
    assert_eq!(e.sqlstate(), Some("57014"), "{e}");
    // Cancelled on the server (not left running), and the connection was kept: a cancel that
    // could not be delivered would have discarded it.
    assert_eq!(
        db.fetch_value::<i32, _>("SELECT pg_backend_pid()", &[])
            .await
            .unwrap(),
        pid
    );
    let running = p
        .primary
        .psql(
            "mh_addr",
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' \
             AND state = 'active'",
        )
        .unwrap();
    assert_eq!(running, "0");
    db.close().await;
}

both_backends!(hostaddr, hostaddr_connects_and_cancels_without_lookup);

/// The URL and `key=value` forms reach the same servers as the fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_strings_with_several_hosts() {
    let p = pair("mh_dsn").await;
    let pw = p.primary.password().unwrap().to_string();
    let dead = dead_port();
    let kv = format!(
        "host=127.0.0.1,127.0.0.1,127.0.0.1 port={dead},{},{} user={} password='{}' dbname=mh_dsn \
         sslmode=disable target_session_attrs=read-only connect_timeout=5",
        p.primary.port(),
        p.read_only.port(),
        p.primary.user(),
        pw.replace('\\', "\\\\").replace('\'', "\\'"),
    );
    let c = Config::from_url(&kv).unwrap();
    let mut conn = PgConnection::connect_once(&c).await.unwrap();
    let rows = conn
        .query("SELECT port FROM marker", &[], None)
        .await
        .unwrap();
    assert_eq!(rows[0].get_at::<i32>(0).unwrap(), p.read_only.port() as i32);

    let url = format!(
        "postgresql://{}:{}@127.0.0.1:{dead},127.0.0.1:{}/mh_dsn?sslmode=disable\
         &target_session_attrs=read-write",
        pgdbm::percent_encode(p.primary.user()),
        pgdbm::percent_encode(&pw),
        p.primary.port()
    );
    let c = Config::from_url(&url).unwrap();
    let mut conn = PgConnection::connect_once(&c).await.unwrap();
    let rows = conn
        .query("SELECT port FROM marker", &[], None)
        .await
        .unwrap();
    assert_eq!(rows[0].get_at::<i32>(0).unwrap(), p.primary.port() as i32);
}
