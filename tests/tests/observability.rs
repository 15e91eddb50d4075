//! Tracing against a real server, on both pool backends: each query gets exactly one span
//! (`query`, target `pgdbm`) carrying OpenTelemetry's database attributes, with literal values
//! kept out of `db.query.text` and the SQLSTATE of a failure recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pgdbm::{Database, Pool};
use pgdbm_integration_tests::{both_backends, fresh_config};
use tracing::field::{Field, Visit};
use tracing::instrument::WithSubscriber;
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// A span's name and its fields as text.
type CapturedSpan = (String, HashMap<String, String>);

/// Every span opened, by name, with its fields as text.
#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<Vec<CapturedSpan>>>,
    ids: Arc<Mutex<HashMap<u64, usize>>>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = self.spans.lock().unwrap();
        spans.push((attrs.metadata().name().to_string(), fields));
        self.ids
            .lock()
            .unwrap()
            .insert(id.into_u64(), spans.len() - 1);
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let Some(&i) = self.ids.lock().unwrap().get(&id.into_u64()) else {
            return;
        };
        values.record(&mut Fields(&mut self.spans.lock().unwrap()[i].1));
    }
}

async fn each_query_has_one_span_with_otel_fields<P: Pool>() {
    let config = fresh_config("otel").unwrap();
    let (database, port, host) = (config.database.clone(), config.port, config.host.clone());
    let db = Database::<P>::connect(config).await.unwrap();
    db.execute("CREATE TABLE users (id int, email text)", &[])
        .await
        .unwrap();
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let work = async {
        db.fetch_all(
            "SELECT id FROM users WHERE email = 'alice@example.com' AND id > 42",
            &[],
        )
        .await
        .unwrap();
        db.with_schema("public")
            .unwrap()
            .execute("INSERT INTO users VALUES ($1, $2)", &[&1i32, &"bob"])
            .await
            .unwrap();
        db.execute("SELECT 1 / 0", &[]).await.unwrap_err();
    };
    work.with_subscriber(subscriber).await;

    let spans = capture.spans.lock().unwrap().clone();
    let names: Vec<&str> = spans.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec!["query", "query", "query"],
        "one span per query, nothing else"
    );
    let get = |i: usize, k: &str| spans[i].1.get(k).cloned().unwrap_or_default();

    for i in 0..3 {
        assert_eq!(get(i, "db.system.name"), "postgresql");
        assert_eq!(get(i, "server.address"), host);
        assert_eq!(get(i, "server.port"), port.to_string());
        assert_eq!(get(i, "otel.kind"), "client");
    }
    assert_eq!(get(0, "db.namespace"), database);
    assert_eq!(get(0, "db.operation.name"), "SELECT");
    assert_eq!(get(0, "pgdbm.operation"), "fetch_all");
    assert_eq!(
        get(0, "db.query.text"),
        "SELECT id FROM users WHERE email = ? AND id > ?"
    );
    assert!(!get(0, "db.query.text").contains("alice"));
    assert_eq!(get(0, "db.response.returned_rows"), "0");
    assert!(get(0, "db.response.status_code").is_empty());

    assert_eq!(get(1, "db.namespace"), format!("{database}|public"));
    assert_eq!(get(1, "db.operation.name"), "INSERT");
    assert_eq!(get(1, "db.query.text"), "INSERT INTO users VALUES ($1, $2)");
    assert_eq!(get(1, "db.response.returned_rows"), "1");

    assert_eq!(get(2, "db.response.status_code"), "22012");
    assert_eq!(get(2, "error.type"), "22012");
    db.close().await;
}
both_backends!(spans, each_query_has_one_span_with_otel_fields);

/// The process-wide recording exporter (a recorder can be installed once per process).
fn snapshotter() -> &'static metrics_util::debugging::Snapshotter {
    static S: std::sync::OnceLock<metrics_util::debugging::Snapshotter> =
        std::sync::OnceLock::new();
    S.get_or_init(|| {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("no other recorder in this test binary");
        snapshotter
    })
}

/// The metrics of database `ns` now: gauges and counters by name and labels, and histograms
/// as the number of samples recorded so far. A snapshot drains every histogram of the process
/// (the other backend's test runs alongside), so sample counts are accumulated here for all.
fn metrics_of(ns: &str) -> HashMap<String, f64> {
    use metrics_util::debugging::DebugValue;
    static SEEN: Mutex<Option<HashMap<(String, String), f64>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap();
    let seen = seen.get_or_insert_with(HashMap::new);
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let key = key.key();
        let Some(owner) = key
            .labels()
            .find(|l| l.key() == "db.namespace")
            .map(|l| l.value().to_string())
        else {
            continue;
        };
        let mut labels: Vec<String> = key
            .labels()
            .filter(|l| l.key() != "db.namespace")
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let entry = seen.entry((owner, name)).or_insert(0.0);
        match value {
            // The debugging recorder drains counters (and gauges) at each snapshot.
            DebugValue::Counter(c) => *entry += c as f64,
            DebugValue::Gauge(g) => *entry = g.into_inner(),
            DebugValue::Histogram(h) => *entry += h.len() as f64,
        }
    }
    seen.iter()
        .filter(|((owner, _), _)| owner == ns)
        .map(|((_, name), v)| (name.clone(), *v))
        .collect()
}

/// The debugging recorder is process-wide and a snapshot drains it: one metrics test at a
/// time, so one test's snapshot never takes another's values.
static METRICS_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn metrics_follow_the_pool_and_the_queries<P: Pool>() {
    let _one_at_a_time = METRICS_TESTS.lock().await;
    let _ = snapshotter();
    let config = fresh_config("metrics").unwrap();
    let ns = config.database.clone();
    let db = Database::<P>::connect(config).await.unwrap();

    let held = pgdbm_integration_tests::hold_connections(&db, 3)
        .await
        .unwrap();
    let m = metrics_of(&ns);
    assert_eq!(m.get("pgdbm.pool.in_use{}"), Some(&3.0), "{m:?}");
    assert_eq!(
        m.get("pgdbm.query.duration{operation=execute}"),
        Some(&3.0),
        "{m:?}"
    );
    assert_eq!(m.get("pgdbm.pool.acquire.wait{}"), Some(&3.0), "{m:?}");
    drop(held);

    for i in 0..7i32 {
        let v: Option<i32> = db.fetch_value("SELECT $1::int", &[&i]).await.unwrap();
        assert_eq!(v, Some(i));
    }
    db.fetch_all("SELECT 1", &[]).await.unwrap();
    db.execute("SELECT 1 / 0", &[]).await.unwrap_err();
    db.with_timeout(Some(std::time::Duration::from_millis(50)))
        .execute("SELECT pg_sleep(5)", &[])
        .await
        .unwrap_err();
    // Wait (polling) for every connection to be back, then publish the gauges.
    for _ in 0..200 {
        if db.pool_stats().in_use == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    db.publish_pool_metrics();
    let m = metrics_of(&ns);
    assert_eq!(
        m.get("pgdbm.query.duration{operation=fetch_one}"),
        Some(&7.0),
        "{m:?}"
    );
    assert_eq!(
        m.get("pgdbm.query.duration{operation=fetch_all}"),
        Some(&1.0),
        "{m:?}"
    );
    // 3 from hold_connections, then the failed division and the timed-out sleep.
    assert_eq!(
        m.get("pgdbm.query.duration{operation=execute}"),
        Some(&5.0),
        "{m:?}"
    );
    assert_eq!(m.get("pgdbm.pool.acquire.wait{}"), Some(&13.0), "{m:?}");
    assert_eq!(
        m.get("pgdbm.query.errors{operation=execute,sqlstate_class=22}"),
        Some(&1.0),
        "{m:?}"
    );
    assert_eq!(
        m.get("pgdbm.query.errors{operation=execute,sqlstate_class=57}"),
        Some(&1.0),
        "{m:?}"
    );
    assert_eq!(
        m.get("pgdbm.query.timeouts{operation=execute}"),
        Some(&1.0),
        "{m:?}"
    );
    assert_eq!(m.get("pgdbm.pool.in_use{}"), Some(&0.0), "{m:?}");
    assert!(
        m.get("pgdbm.pool.size{}").is_some_and(|&s| s >= 1.0),
        "{m:?}"
    );
    assert_eq!(
        m.get("pgdbm.pool.idle{}"),
        m.get("pgdbm.pool.size{}"),
        "every open connection is idle: {m:?}"
    );
    db.close().await;
}
both_backends!(metrics, metrics_follow_the_pool_and_the_queries);

/// The read replica view (`Database::replica`) shares the query metrics and the namespace, and
/// its pool's gauges carry `db.pool.role=replica`, so they do not overwrite the primary pool's.
async fn replica_pool_has_its_own_gauges<P: Pool>() {
    let _one_at_a_time = METRICS_TESTS.lock().await;
    let _ = snapshotter();
    let cluster = tokio::task::spawn_blocking(|| pgdbm::testkit::TestCluster::start(1))
        .await
        .unwrap()
        .unwrap();
    let ns = pgdbm::testkit::unique_database_name("rmetrics_").unwrap();
    cluster.create_database(&ns).await.unwrap();
    let mut config = cluster.config(0, &ns).unwrap();
    config.min_connections = 1;
    config.max_connections = 4;
    config.read_hosts = cluster.hosts(&[1]).unwrap();
    let db = Database::<P>::connect(config).await.unwrap();
    let replica = db.replica().unwrap();

    let on_primary = pgdbm_integration_tests::hold_connections(&db, 1)
        .await
        .unwrap();
    let on_replica = pgdbm_integration_tests::hold_connections(&replica, 3)
        .await
        .unwrap();
    let m = metrics_of(&ns);
    assert_eq!(m.get("pgdbm.pool.in_use{}"), Some(&1.0), "{m:?}");
    assert_eq!(
        m.get("pgdbm.pool.in_use{db.pool.role=replica}"),
        Some(&3.0),
        "{m:?}"
    );
    assert_eq!(
        m.get("pgdbm.pool.acquire.wait{db.pool.role=replica}"),
        Some(&3.0),
        "{m:?}"
    );
    // Query metrics are shared: 1 + 3 statements by `hold_connections`.
    assert_eq!(
        m.get("pgdbm.query.duration{operation=execute}"),
        Some(&4.0),
        "{m:?}"
    );
    drop((on_primary, on_replica));
    db.close().await;
}
both_backends!(replica_metrics, replica_pool_has_its_own_gauges);
