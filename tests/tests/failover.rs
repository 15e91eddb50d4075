//! Failover and read routing on a real primary + streaming standby ([`TestCluster`]), both pool
//! backends from one body.
//!
//! - Failover: 8 tasks write through a pool over the hosts (primary, standby); the primary is
//!   stopped, the pool lands on the standby (writes there are refused with 25006 and reported),
//!   the standby is promoted, and the pool writes again. Every acknowledged write is on the new
//!   primary, every write refused as read-only is not, and nothing is there that was neither
//!   acknowledged nor failed ambiguously.
//! - Read routing: the replica view reads the standby (after replay, polled on
//!   `pg_last_wal_replay_lsn`), shares schema, prepared statements and observers with the
//!   primary view, and its writes are refused by the server and reported as the replica view's.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgdbm::testkit::TestCluster;
use pgdbm::{Config, Database, Error, Pool, QueryEvent, QueryObserver, Row, SqlState};
use pgdbm_integration_tests::both_backends;

/// Bound on every wait of these tests (a generous deadline, polled; no speed is asserted).
const DEADLINE: Duration = Duration::from_secs(90);

/// Polls `done` every 20 ms until it is true; panics naming `what` after [`DEADLINE`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A cluster of one primary and one standby with the database `db` on both.
async fn cluster(db: &str) -> Arc<TestCluster> {
    let cluster = tokio::task::spawn_blocking(|| TestCluster::start(1))
        .await
        .unwrap()
        .unwrap();
    cluster.create_database(db).await.unwrap();
    Arc::new(cluster)
}

fn backend<P>() -> &'static str {
    if std::any::type_name::<P>().contains("Bb8") {
        "bb8"
    } else {
        "deadpool"
    }
}

/// What the writers saw.
#[derive(Default)]
struct Outcomes {
    acked: Mutex<Vec<i64>>,
    /// Writes refused by a read-only server (SQLSTATE 25006).
    read_only: Mutex<Vec<i64>>,
    /// Writes that failed otherwise (connection lost, pool timeout, ...): their outcome is
    /// unknown to the client, so they may or may not be on the server.
    failed: Mutex<Vec<i64>>,
    /// The first read-only error, to check its text.
    first_read_only: Mutex<Option<String>>,
}

impl Outcomes {
    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }
    fn read_only(&self) -> usize {
        self.read_only.lock().unwrap().len()
    }
}

async fn writes_survive_failover<P: Pool>() {
    let cluster = cluster("failover").await;
    let setup = cluster.primary();
    setup
        .query_async(
            "failover",
            "CREATE TABLE writes (id bigint PRIMARY KEY, task int NOT NULL)",
        )
        .await
        .unwrap();
    cluster.wait_for_replay(1).await.unwrap();

    let mut config = cluster.multi_host_config(&[0, 1], "failover").unwrap();
    config.min_connections = 0;
    config.max_connections = 8;
    config.connect_timeout = Duration::from_secs(2);
    config.retry_attempts = 5;
    config.retry_delay = Duration::from_millis(100);
    config.retry_max_delay = Duration::from_secs(1);
    config.retry_jitter = false;
    config.acquire_timeout = Duration::from_secs(15);
    config.command_timeout = Some(Duration::from_secs(15));
    config.application_name = Some(format!("failover_{}", backend::<P>()));
    let db = Database::<P>::connect(config).await.unwrap();

    let outcomes = Arc::new(Outcomes::default());
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicI64::new(1));
    let mut tasks = Vec::new();
    for task in 0..8i32 {
        let (db, outcomes, stop, next_id) =
            (db.clone(), outcomes.clone(), stop.clone(), next_id.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let id = next_id.fetch_add(1, Ordering::SeqCst);
                let result = db
                    .execute(
                        "INSERT INTO writes (id, task) VALUES ($1, $2)",
                        &[&id, &task],
                    )
                    .await;
                match result {
                    Ok(1) => outcomes.acked.lock().unwrap().push(id),
                    Ok(n) => panic!("an INSERT of one row reported {n} rows"),
                    Err(e) if e.sql_state() == Some(SqlState::READ_ONLY_SQL_TRANSACTION) => {
                        outcomes.read_only.lock().unwrap().push(id);
                        outcomes
                            .first_read_only
                            .lock()
                            .unwrap()
                            .get_or_insert_with(|| e.to_string());
                        // Back off a little: the server refuses at once.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(_) => {
                        outcomes.failed.lock().unwrap().push(id);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }));
    }

    // 1. Writes go to the primary.
    wait_until("writes on the primary", || outcomes.acked() >= 100).await;

    // 2. The primary goes away; the pool's new connections find host 1 refusing and use host
    //    2, the standby, which refuses the writes: each one comes back as an error.
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop(0))
        .await
        .unwrap()
        .unwrap();
    let acked_before = outcomes.acked();
    wait_until("writes refused by the standby", || outcomes.read_only() > 0).await;
    // While the standby is the only server, writes keep being refused and none is
    // acknowledged (counted from the first refusal: by then every answer of the old primary
    // has long been recorded).
    let acked_on_standby = outcomes.acked();
    let refused = outcomes.read_only();
    wait_until("more writes refused by the standby", || {
        outcomes.read_only() >= refused + 20
    })
    .await;
    assert_eq!(
        outcomes.acked(),
        acked_on_standby,
        "a write was acknowledged while the only running server was a standby"
    );

    // 3. The standby is promoted: the pool writes again (on the connections it has to it,
    //    and on new ones, which find host 1 still refusing).
    cluster.promote(1).await.unwrap();
    let acked_at_promote = outcomes.acked();
    wait_until("writes on the promoted standby", || {
        outcomes.acked() >= acked_at_promote + 100
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }

    // 4. What the new primary holds.
    let mut check = cluster.config(1, "failover").unwrap();
    check.min_connections = 0;
    check.max_connections = 1;
    let new_primary = Database::<P>::connect(check).await.unwrap();
    assert_eq!(
        new_primary
            .fetch_value::<bool, _>("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap(),
        Some(false)
    );
    let present: HashSet<i64> = new_primary
        .fetch_all("SELECT id FROM writes", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get_at::<i64>(0).unwrap())
        .collect();
    let acked = outcomes.acked.lock().unwrap().clone();
    let read_only = outcomes.read_only.lock().unwrap().clone();
    let failed: HashSet<i64> = outcomes.failed.lock().unwrap().iter().copied().collect();
    let lost: Vec<i64> = acked
        .iter()
        .copied()
        .filter(|id| !present.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes are missing on the new primary, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let applied_refused: Vec<i64> = read_only
        .iter()
        .copied()
        .filter(|id| present.contains(id))
        .collect();
    assert!(
        applied_refused.is_empty(),
        "writes reported as refused by a read-only server are on the new primary: {applied_refused:?}"
    );
    let acked_set: HashSet<i64> = acked.iter().copied().collect();
    let unexplained: Vec<i64> = present
        .iter()
        .copied()
        .filter(|id| !acked_set.contains(id) && !failed.contains(id))
        .collect();
    assert!(
        unexplained.is_empty(),
        "rows on the new primary whose write was neither acknowledged nor failed: {unexplained:?}"
    );
    let message = outcomes.first_read_only.lock().unwrap().clone().unwrap();
    assert!(message.contains("read-only"), "{message}");
    eprintln!(
        "failover ({}): {} acked ({} before the stop, {} after promote() returned), {} refused as \
         read-only, {} failed otherwise",
        backend::<P>(),
        acked.len(),
        acked_before,
        acked.len() - acked_at_promote,
        read_only.len(),
        failed.len()
    );
    new_primary.close().await;
    db.close().await;
}
both_backends!(failover, writes_survive_failover);

/// Counts the queries observers saw on the replica view.
#[derive(Default)]
struct ReplicaEvents(AtomicUsize);

impl QueryObserver for ReplicaEvents {
    fn on_query(&self, event: &QueryEvent<'_>) {
        if event.replica {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn replica_view_reads_standbys_and_refuses_writes<P: Pool>() {
    let cluster = cluster("routing").await;
    let standby = cluster.member(1).unwrap();
    let mut config: Config = cluster.config(0, "routing").unwrap();
    config.min_connections = 1;
    config.max_connections = 2;
    config.schema = Some("rr".to_string());
    config.read_hosts = cluster.hosts(&[1]).unwrap();
    assert_eq!(
        config.read_hosts,
        vec![(standby.host().to_string(), standby.port())]
    );

    // Without read hosts there is no replica view, and the error says how to get one.
    let plain = Database::<P>::connect(cluster.config(0, "routing").unwrap())
        .await
        .unwrap();
    let e = plain.replica().unwrap_err();
    assert!(
        matches!(e, Error::Configuration { ref field, .. } if field == "read_hosts"),
        "{e}"
    );
    assert!(!plain.is_replica());
    plain.close().await;

    let db = Database::<P>::connect(config).await.unwrap();
    let events = Arc::new(ReplicaEvents::default());
    db.add_observer(events.clone());
    let replica = db.replica().unwrap();
    assert!(replica.is_replica() && !db.is_replica());
    assert_eq!(replica.schema(), Some("rr"));
    assert!(replica.replica().unwrap().is_replica());

    // The views reach different servers: the primary and the standby.
    let recovery = "SELECT pg_is_in_recovery()";
    assert_eq!(
        db.fetch_value::<bool, _>(recovery, &[]).await.unwrap(),
        Some(false)
    );
    assert_eq!(
        replica.fetch_value::<bool, _>(recovery, &[]).await.unwrap(),
        Some(true)
    );

    db.execute(
        "CREATE TABLE {{tables.items}} (id int PRIMARY KEY, v text NOT NULL)",
        &[],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO {{tables.items}} SELECT g, 'v' || g FROM generate_series(1, 10) g",
        &[],
    )
    .await
    .unwrap();
    cluster.wait_for_replay(1).await.unwrap();
    let count = "SELECT count(*) FROM {{tables.items}}";
    assert_eq!(
        replica.fetch_value::<i64, _>(count, &[]).await.unwrap(),
        Some(10)
    );

    // Prepared statements registered on the primary view run on the replica view.
    db.add_prepared_statement("max_item", "SELECT max(id) FROM {{tables.items}}")
        .unwrap();
    let q = replica.prepared("max_item").unwrap();
    assert_eq!(
        replica.fetch_value::<i32, _>(&q, &[]).await.unwrap(),
        Some(10)
    );
    // A schema view made from the replica view stays on the replica.
    let public = replica.with_schema("public").unwrap();
    assert!(public.is_replica());
    assert_eq!(
        public.fetch_value::<bool, _>(recovery, &[]).await.unwrap(),
        Some(true)
    );

    // Writes through the replica view are refused by the server and say where to write.
    let insert = "INSERT INTO {{tables.items}} (id, v) VALUES (11, 'x')";
    let e = replica.execute(insert, &[]).await.unwrap_err();
    assert_eq!(
        e.sql_state(),
        Some(SqlState::READ_ONLY_SQL_TRANSACTION),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("read replica view") && text.contains("primary"),
        "{text}"
    );
    assert!(
        text.contains("read-only"),
        "the server's message is kept: {text}"
    );
    let mut tx = replica.transaction().await.unwrap();
    let e = tx.execute(insert, &[]).await.unwrap_err();
    assert!(e.to_string().contains("read replica view"), "{e}");
    drop(tx);
    // The same write through the primary view works and reaches the replica.
    db.execute(insert, &[]).await.unwrap();
    cluster.wait_for_replay(1).await.unwrap();
    assert_eq!(
        replica.fetch_value::<i64, _>(count, &[]).await.unwrap(),
        Some(11)
    );
    // Observers attached to the primary view saw the replica view's queries.
    assert!(events.0.load(Ordering::SeqCst) >= 6);
    // The pools are separate.
    assert!(replica.pool_stats().size >= 1 && db.pool_stats().size >= 1);

    // Closing the manager closes both pools; close on the view does nothing.
    replica.close().await;
    assert!(db.fetch_value::<i64, _>(count, &[]).await.is_ok());
    db.close().await;
    assert!(replica.fetch_value::<i64, _>(count, &[]).await.is_err());
}
both_backends!(read_routing, replica_view_reads_standbys_and_refuses_writes);

/// `target_session_attrs` against a real hot standby (`in_hot_standby` reported at startup),
/// hosts listed standby first: each kind picks the server it names (checked with
/// `pg_is_in_recovery()` and the server's port), and with the standby stopped `prefer-standby`
/// falls back to the primary while `standby` fails naming both hosts.
async fn session_attrs_on_a_real_standby<P: Pool>() {
    use pgdbm::TargetSessionAttrs as A;
    let cluster = cluster("attrs").await;
    let (primary, standby) = (cluster.member(0).unwrap(), cluster.member(1).unwrap());
    let landed = |attrs: A| {
        let mut config = cluster.multi_host_config(&[1, 0], "attrs").unwrap();
        config.target_session_attrs = attrs;
        config.min_connections = 0;
        config.max_connections = 2;
        config.retry_attempts = 1;
        async move {
            let db = Database::<P>::connect(config).await?;
            let row = db
                .fetch_one("SELECT pg_is_in_recovery(), inet_server_port()", &[])
                .await;
            db.close().await;
            let row = row?.expect("SELECT returns a row");
            Ok::<_, Error>((
                row.try_get::<_, bool>(0)?,
                u16::try_from(row.try_get::<_, i32>(1)?).unwrap(),
            ))
        }
    };
    let on_standby = (true, standby.port());
    let on_primary = (false, primary.port());
    for (attrs, want) in [
        (A::Any, on_standby),
        (A::ReadWrite, on_primary),
        (A::Primary, on_primary),
        (A::ReadOnly, on_standby),
        (A::Standby, on_standby),
        (A::PreferStandby, on_standby),
    ] {
        assert_eq!(landed(attrs).await.unwrap(), want, "{attrs:?}");
    }
    // Listed primary first, prefer-standby still finds the standby (its first pass).
    let mut config = cluster.multi_host_config(&[0, 1], "attrs").unwrap();
    config.target_session_attrs = A::PreferStandby;
    config.min_connections = 0;
    let db = Database::<P>::connect(config).await.unwrap();
    let recovery = db
        .fetch_value::<bool, _>("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap();
    db.close().await;
    assert_eq!(recovery, Some(true));

    let stop = cluster.clone();
    tokio::task::spawn_blocking(move || stop.stop(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(landed(A::PreferStandby).await.unwrap(), on_primary);
    let e = landed(A::Standby).await.unwrap_err().to_string();
    for port in [primary.port(), standby.port()] {
        assert!(e.contains(&format!(":{port}")), "{e}");
    }
    assert!(e.contains("target_session_attrs=standby"), "{e}");
}

both_backends!(real_standby_attrs, session_attrs_on_a_real_standby);
