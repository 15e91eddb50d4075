//! Monitoring against a real PostgreSQL, each body run for deadpool and bb8: the [`Monitor`]
//! query observer and the [`Debugger`] diagnostics.

// The bodies are test code run by `#[tokio::test]` functions that `both_backends!` generates;
// clippy's allow-unwrap-in-tests does not see through the generic helpers.

use std::future::Future;
use std::time::{Duration, Instant};

use pgdbm::{Database, Debugger, Error, Monitor, MonitorConfig, Pool};
use pgdbm_integration_tests::{both_backends, fresh_database, Captured};

async fn db<P: Pool>(prefix: &str) -> Database<P> {
    fresh_database::<P>(prefix, |_| {})
        .await
        .expect("fresh database")
}

/// Calls `probe` every 50 ms until it returns `Some`, for at most `limit` (a generous bound that
/// only keeps a broken test from hanging; nothing asserts how fast it happens).
async fn poll<T, F, Fut>(limit: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn monitor_counts_queries_errors_and_slow_ones<P: Pool>() {
    // Opt in to parameters in errors: the monitor must still never record them.
    let db = fresh_database::<P>("mon_counts", |c| c.log_parameters = true)
        .await
        .expect("fresh database");
    let monitor = Monitor::attach(
        &db,
        MonitorConfig {
            slow_query_threshold: Duration::from_millis(100),
            ..MonitorConfig::default()
        },
    );

    db.execute("CREATE TABLE t (id int)", &[]).await.unwrap();
    assert_eq!(
        db.execute("INSERT INTO t VALUES (1), (2), (3)", &[])
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        db.fetch_all("SELECT id FROM t", &[]).await.unwrap().len(),
        3
    );
    db.fetch_all("SELECT pg_sleep(0.2)", &[]).await.unwrap();
    let err = db
        .fetch_value::<i32, _>("SELECT $1::int / 0", &[&12345i32])
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), Some("22012"), "{err}");
    assert!(
        err.to_string().contains("12345"),
        "the user opted in to parameters in errors: {err}"
    );

    let m = monitor.query_metrics();
    assert_eq!(m.total_queries, 5);
    assert_eq!(m.failed_queries, 1);
    assert_eq!(m.rows, 3 + 3 + 1, "inserted + selected + pg_sleep's row");
    // pg_sleep(0.2) is at least 200 ms, so at least one slow query; others may be slow too on a
    // loaded machine, so no exact count.
    assert!(
        m.slow_queries >= 1 && m.slow_queries <= m.total_queries,
        "{m:?}"
    );
    assert!(m.max_duration_ms >= 200.0, "{m:?}");
    assert!(m.avg_duration_ms > 0.0 && m.avg_duration_ms <= m.max_duration_ms);

    let slow = monitor.slow_queries(10);
    assert!(
        slow.iter().any(|r| r.sql == "SELECT pg_sleep(0.2)"),
        "{slow:?}"
    );
    assert!(slow
        .iter()
        .all(|r| r.duration >= Duration::from_millis(100)));
    assert_eq!(monitor.slow_queries(1).len(), 1);

    let history = monitor.query_history(100);
    let ops: Vec<&str> = history.iter().map(|r| r.operation).collect();
    assert_eq!(
        ops,
        vec!["fetch_one", "fetch_all", "fetch_all", "execute", "execute"],
        "most recent first"
    );
    let failed = &history[0];
    let recorded = failed.error.as_deref().expect("the failed query's error");
    assert!(recorded.contains("22012"), "{recorded}");
    assert!(
        !recorded.contains("12345"),
        "parameters are never recorded: {recorded}"
    );
    assert_eq!(failed.rows, None);
    assert_eq!(history[3].rows, Some(3));
    assert!(history.windows(2).all(|w| w[0].at > w[1].at));

    // Views and transactions share the observer.
    db.with_schema("other")
        .unwrap()
        .fetch_value::<i32, _>("SELECT 1", &[])
        .await
        .unwrap();
    let mut tx = db.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (4)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    let recent = monitor.query_history(2);
    assert_eq!(recent[0].sql, "INSERT INTO t VALUES (4)");
    assert_eq!(recent[1].schema.as_deref(), Some("other"));
    assert_eq!(monitor.query_metrics().total_queries, 7);

    let cm = monitor.connection_metrics(&db);
    assert_eq!(cm.pool.max_size, 4);
    assert!(cm.pool.size >= 1 && cm.pool.size <= 4, "{cm:?}");
    assert!((0.0..=1.0).contains(&cm.utilization), "{cm:?}");
    assert_eq!(cm.queries.total_queries, 7);

    monitor.reset();
    assert_eq!(monitor.query_metrics().total_queries, 0);
    assert!(monitor.query_history(10).is_empty());
    assert!(monitor.slow_queries(10).is_empty());
    db.execute("SELECT 1", &[]).await.unwrap();
    assert_eq!(monitor.query_metrics().total_queries, 1);
}
both_backends!(monitor_counts, monitor_counts_queries_errors_and_slow_ones);

async fn monitor_history_is_bounded<P: Pool>() {
    let db = db::<P>("mon_hist").await;
    let monitor = Monitor::attach(
        &db,
        MonitorConfig {
            query_history_size: 5,
            ..MonitorConfig::default()
        },
    );
    for i in 0..10 {
        let v: Option<i32> = db.fetch_value(&format!("SELECT {i}"), &[]).await.unwrap();
        assert_eq!(v, Some(i));
    }
    let history = monitor.query_history(100);
    let sqls: Vec<&str> = history.iter().map(|r| r.sql.as_str()).collect();
    assert_eq!(
        sqls,
        vec!["SELECT 9", "SELECT 8", "SELECT 7", "SELECT 6", "SELECT 5"]
    );
    let ats: Vec<u64> = history.iter().map(|r| r.at).collect();
    assert_eq!(ats, vec![9, 8, 7, 6, 5]);
    assert_eq!(monitor.query_history(2).len(), 2);
    assert_eq!(
        monitor.query_metrics().total_queries,
        10,
        "counters are not bounded"
    );

    // Without tracking, only the counters.
    let counters_only = Monitor::attach(
        &db,
        MonitorConfig {
            track_query_metrics: false,
            ..MonitorConfig::default()
        },
    );
    db.execute("SELECT 1", &[]).await.unwrap();
    assert_eq!(counters_only.query_metrics().total_queries, 1);
    assert!(counters_only.query_history(10).is_empty());
}
both_backends!(monitor_history, monitor_history_is_bounded);

async fn monitor_groups_query_patterns<P: Pool>() {
    let db = db::<P>("mon_pat").await;
    let monitor = Monitor::attach(&db, MonitorConfig::default());
    for i in 1..=12i32 {
        let v: Option<i32> = db.fetch_value("SELECT $1::int", &[&i]).await.unwrap();
        assert_eq!(v, Some(i));
    }
    db.execute("SELECT 1", &[]).await.unwrap();
    db.execute("SELECT   2", &[]).await.unwrap();
    assert!(db.execute("SELECT * FROM nope", &[]).await.is_err());

    let p = monitor.analyze_query_patterns();
    assert_eq!(p.analyzed_queries, 15);
    assert_eq!(p.total_patterns, 3, "{p:#?}");
    let by_pattern = |pat: &str| {
        p.top_by_count
            .iter()
            .find(|s| s.pattern == pat)
            .cloned()
            .unwrap_or_else(|| panic!("no pattern {pat:?} in {p:#?}"))
    };
    assert_eq!(by_pattern("SELECT $1::int").count, 12);
    assert_eq!(by_pattern("SELECT ?").count, 2);
    assert_eq!(by_pattern("SELECT * FROM nope").errors, 1);
    assert_eq!(p.top_by_count[0].pattern, "SELECT $1::int");
    assert!(
        p.suggestions
            .iter()
            .any(|s| s.contains("SELECT $1::int") && s.contains("ran 12 times")),
        "{:?}",
        p.suggestions
    );
    assert!(
        p.suggestions.iter().any(|s| s.contains("failed 1 of 1")),
        "{:?}",
        p.suggestions
    );
    let times: Vec<Duration> = p
        .top_by_total_time
        .iter()
        .map(|s| s.total_duration)
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "sorted by total time"
    );
}
both_backends!(monitor_patterns, monitor_groups_query_patterns);

async fn debugger_finds_blocking_queries<P: Pool>() {
    let db = db::<P>("dbg_block").await;
    db.execute("CREATE TABLE t (id int)", &[]).await.unwrap();
    let debugger = Debugger::new(&db);
    assert!(debugger.find_blocking_queries().await.unwrap().is_empty());

    // A: holds an exclusive lock inside a transaction.
    let mut a = db.transaction().await.unwrap();
    let a_pid: i32 = a
        .fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .unwrap();
    a.batch_execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    // B: blocked reading the table.
    let (pid_tx, pid_rx) = tokio::sync::oneshot::channel();
    let db_b = db.clone();
    let b = tokio::spawn(async move {
        let mut conn = db_b.acquire().await?;
        let pid: Option<i32> = conn.fetch_value("SELECT pg_backend_pid()", &[]).await?;
        let _ = pid_tx.send(pid);
        conn.fetch_all("SELECT * FROM t", &[])
            .await
            .map(|r| r.len())
    });
    let b_pid = pid_rx.await.unwrap().unwrap();

    let found = poll(Duration::from_secs(20), || async {
        debugger
            .find_blocking_queries()
            .await
            .unwrap()
            .into_iter()
            .find(|q| q.blocked_pid == b_pid && q.blocking_pid == a_pid)
    })
    .await
    .expect("B shows up as blocked by A");
    assert_eq!(found.blocked_query, "SELECT * FROM t");
    assert!(found.blocking_query.contains("LOCK TABLE t"), "{found:?}");

    let info = debugger.connection_info().await.unwrap();
    assert!(info.waiting >= 1, "{info:?}");
    assert!(info.idle_in_transaction >= 1, "{info:?}");
    assert!(info.total >= 3, "A, B and the debugger: {info:?}");
    let health = debugger.database_health().await.unwrap();
    assert!(health.blocking_queries >= 1, "{health:?}");
    assert!(
        health.warnings.iter().any(|w| w.contains("blocked")),
        "{health:?}"
    );

    a.rollback().await.unwrap();
    let rows = tokio::time::timeout(Duration::from_secs(20), b)
        .await
        .expect("B finishes once A rolled back")
        .unwrap()
        .unwrap();
    assert_eq!(rows, 0);
    let after = poll(Duration::from_secs(20), || async {
        let list = debugger.find_blocking_queries().await.unwrap();
        list.is_empty().then_some(())
    })
    .await;
    assert!(after.is_some(), "no blocking left after the rollback");
}
both_backends!(debugger_blocking, debugger_finds_blocking_queries);

async fn debugger_finds_long_running_queries<P: Pool>() {
    let db = db::<P>("dbg_long").await;
    let debugger = Debugger::new(&db);
    let (pid_tx, pid_rx) = tokio::sync::oneshot::channel();
    let db_s = db.clone();
    let sleeper = tokio::spawn(async move {
        let mut conn = db_s.acquire().await?;
        let pid: Option<i32> = conn.fetch_value("SELECT pg_backend_pid()", &[]).await?;
        let _ = pid_tx.send(pid);
        conn.execute("SELECT pg_sleep(3)", &[]).await
    });
    let pid = pid_rx.await.unwrap().unwrap();

    let found = poll(Duration::from_secs(20), || async {
        debugger
            .find_long_running_queries(Duration::from_secs(1))
            .await
            .unwrap()
            .into_iter()
            .find(|q| q.pid == pid)
    })
    .await
    .expect("the sleeping query is found");
    assert_eq!(found.query, "SELECT pg_sleep(3)");
    assert_eq!(found.state, "active");
    assert!(found.duration > Duration::from_secs(1), "{found:?}");

    // A threshold nobody reaches, and the debugger never lists its own query.
    assert!(debugger
        .find_long_running_queries(Duration::from_secs(3600))
        .await
        .unwrap()
        .is_empty());
    let all = debugger
        .find_long_running_queries(Duration::ZERO)
        .await
        .unwrap();
    assert!(
        all.iter().all(|q| !q.query.contains("pg_stat_activity")),
        "{all:?}"
    );

    sleeper.await.unwrap().unwrap();
    // With the default threshold (300 s) nothing is long-running.
    let health = debugger.database_health().await.unwrap();
    assert_eq!(health.long_running_queries, 0);
    let custom = Debugger::new(&db).with_long_running_threshold(Duration::from_secs(7));
    assert_eq!(custom.long_running_threshold(), Duration::from_secs(7));
}
both_backends!(debugger_long_running, debugger_finds_long_running_queries);

async fn debugger_reports_table_sizes_and_index_usage<P: Pool>() {
    let db = db::<P>("dbg_tables").await;
    db.execute("CREATE TABLE items (id int PRIMARY KEY, v text)", &[])
        .await
        .unwrap();
    db.execute("CREATE TABLE noidx (x int)", &[]).await.unwrap();
    db.execute(
        "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 50) g",
        &[],
    )
    .await
    .unwrap();
    // Let the INSERT's statistics reach the shared counters first: flushed after ANALYZE they
    // would add their 50 live rows on top of ANALYZE's count.
    poll(Duration::from_secs(30), || async {
        let n: Option<i64> = db
            .fetch_value(
                "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'items'",
                &[],
            )
            .await
            .unwrap();
        (n == Some(50)).then_some(())
    })
    .await
    .expect("the INSERT's statistics are flushed");
    db.execute("ANALYZE items", &[]).await.unwrap();
    let debugger = Debugger::new(&db);

    let items = poll(Duration::from_secs(20), || async {
        debugger
            .analyze_table_sizes()
            .await
            .unwrap()
            .into_iter()
            .find(|t| t.table == "items" && t.row_count == 50)
    })
    .await
    .expect("items listed with 50 rows after ANALYZE");
    assert_eq!(items.schema, "public");
    assert!(items.total_bytes > 0, "{items:?}");
    assert!(!items.size.is_empty(), "{items:?}");
    let all = debugger.analyze_table_sizes().await.unwrap();
    assert!(all.iter().any(|t| t.table == "noidx"), "{all:?}");
    assert!(all.windows(2).all(|w| w[0].total_bytes >= w[1].total_bytes));

    // A schema view only lists its schema's tables.
    db.execute("CREATE SCHEMA app", &[]).await.unwrap();
    let app = db.with_schema("app").unwrap();
    app.execute("CREATE TABLE {{tables.things}} (id int)", &[])
        .await
        .unwrap();
    let app_tables = Debugger::new(&app).analyze_table_sizes().await.unwrap();
    let names: Vec<(&str, &str)> = app_tables
        .iter()
        .map(|t| (t.schema.as_str(), t.table.as_str()))
        .collect();
    assert_eq!(names, vec![("app", "things")]);

    // Index usage: the primary key is listed, and counts a scan once the stats are flushed.
    let indexes = debugger.check_index_usage("items").await.unwrap();
    assert_eq!(
        indexes
            .iter()
            .map(|i| i.index_name.as_str())
            .collect::<Vec<_>>(),
        vec!["items_pkey"]
    );
    assert!(!indexes[0].size.is_empty());
    let mut tx = db.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL enable_seqscan = off")
        .await
        .unwrap();
    let v: Option<String> = tx
        .fetch_value("SELECT v FROM items WHERE id = $1", &[&7i32])
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("v7"));
    tx.commit().await.unwrap();
    let scanned = poll(Duration::from_secs(30), || async {
        debugger
            .check_index_usage("public.items")
            .await
            .unwrap()
            .into_iter()
            .find(|i| i.index_name == "items_pkey" && i.idx_scan >= 1)
    })
    .await
    .expect("the index scan is counted");
    assert!(scanned.idx_tup_read >= 1, "{scanned:?}");

    assert!(debugger
        .check_index_usage("noidx")
        .await
        .unwrap()
        .is_empty());
    let app_idx = Debugger::new(&app)
        .check_index_usage("things")
        .await
        .unwrap();
    assert!(app_idx.is_empty(), "{app_idx:?}");
    let missing = debugger.check_index_usage("nope").await.unwrap_err();
    assert!(matches!(missing, Error::Monitoring { .. }), "{missing:?}");
    assert!(missing.to_string().contains("does not exist"), "{missing}");
    assert!(matches!(
        debugger.check_index_usage("items; DROP TABLE items").await,
        Err(Error::Schema { .. })
    ));
    assert!(db.table_exists("items").await.unwrap());
}
both_backends!(
    debugger_tables,
    debugger_reports_table_sizes_and_index_usage
);

async fn debugger_health_is_sane<P: Pool>() {
    let db = db::<P>("dbg_health").await;
    let debugger = Debugger::new(&db);
    let health = debugger.database_health().await.unwrap();
    let info = health.connection_info;
    assert!(
        info.total >= 1 && info.active >= 1,
        "our own query: {info:?}"
    );
    assert!(info.total >= info.active + info.idle + info.idle_in_transaction);
    assert!(info.max_connections >= info.total, "{info:?}");
    assert_eq!(info.waiting, 0);
    assert_eq!(health.blocking_queries, 0);
    assert_eq!(health.long_running_queries, 0);
    assert!(health.database_size_bytes > 0);
    if let Some(r) = health.cache_hit_ratio {
        assert!((0.0..=1.0).contains(&r), "{r}");
    }
    assert!(
        health
            .warnings
            .iter()
            .all(|w| !w.contains("blocked") && !w.contains("longer than")),
        "{health:?}"
    );

    // A closed pool is a monitoring error naming what was inspected.
    db.close().await;
    let err = debugger.connection_info().await.unwrap_err();
    assert!(matches!(err, Error::Monitoring { .. }), "{err:?}");
    assert!(err.to_string().contains("connection info"), "{err}");
}
both_backends!(debugger_health, debugger_health_is_sane);

async fn explain_query_shows_the_index<P: Pool>() {
    let db = db::<P>("mon_explain").await;
    db.execute("CREATE SCHEMA shop", &[]).await.unwrap();
    let shop = db.with_schema("shop").unwrap();
    shop.execute(
        "CREATE TABLE {{tables.items}} (id int PRIMARY KEY, name text NOT NULL)",
        &[],
    )
    .await
    .unwrap();
    shop.execute(
        "INSERT INTO {{tables.items}} SELECT g, 'item ' || g FROM generate_series(1, 5000) g",
        &[],
    )
    .await
    .unwrap();
    shop.execute("ANALYZE {{tables.items}}", &[]).await.unwrap();

    // Session settings of the connection apply to its explain.
    let mut conn = shop.acquire().await.unwrap();
    conn.execute("SET enable_seqscan = off", &[]).await.unwrap();
    let lookup = "SELECT name FROM {{tables.items}} WHERE id = $1";
    let plan = conn.explain_query(lookup, &[&42i32], false).await.unwrap();
    let nodes = plan.node_types();
    assert!(
        nodes
            .iter()
            .any(|n| n == "Index Scan" || n == "Index Only Scan"),
        "{nodes:?} in {}",
        plan.as_json_text()
    );
    let value = plan.to_value().unwrap();
    let top = &value[0]["Plan"];
    assert_eq!(top["Relation Name"], "items", "{value}");
    assert_eq!(
        top["Schema"],
        serde_json::Value::Null,
        "no VERBOSE: {value}"
    );
    assert_eq!(top["Index Name"], "items_pkey", "{value}");
    assert!(top.get("Actual Rows").is_none(), "not analyzed: {value}");

    // ANALYZE runs it: actual row counts appear.
    let analyzed = conn.explain_query(lookup, &[&42i32], true).await.unwrap();
    let v = analyzed.to_value().unwrap();
    assert_eq!(v[0]["Plan"]["Actual Rows"], 1, "{v}");

    // Without the setting, a scan of every row is a Seq Scan (the test can tell them apart).
    let full = shop
        .explain_query("SELECT count(*) FROM {{tables.items}}", &[], false)
        .await
        .unwrap();
    assert!(!full.has_node("Index Scan"), "{:?}", full.node_types());

    // One statement only; identifiers in templates validated.
    let e = shop
        .explain_query("SELECT 1; DROP TABLE {{tables.items}}", &[], false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("exactly one statement"), "{e}");
    let e = shop
        .explain_query("SELECT * FROM {{tables.x;drop}}", &[], false)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Schema { .. }), "{e:?}");
    let n: Option<i64> = shop
        .fetch_value("SELECT count(*) FROM {{tables.items}}", &[])
        .await
        .unwrap();
    assert_eq!(n, Some(5000), "nothing was dropped");
    drop(conn);
    db.close().await;
}
both_backends!(monitor_explain, explain_query_shows_the_index);

async fn slow_threshold_per_call_and_error_filter<P: Pool>() {
    let db = db::<P>("mon_threshold").await;
    // A configured threshold no query reaches.
    let monitor = Monitor::attach(
        &db,
        MonitorConfig {
            slow_query_threshold: Duration::from_secs(3600),
            ..MonitorConfig::default()
        },
    );
    db.execute("SELECT 1", &[]).await.unwrap();
    db.execute("SELECT pg_sleep(0.05)", &[]).await.unwrap();
    db.execute("SELECT * FROM missing_table", &[])
        .await
        .unwrap_err();
    assert!(monitor.slow_queries(10).is_empty());

    // pg_sleep(0.05) takes at least 50 ms however loaded the machine is.
    let over = monitor.slow_queries_over(Duration::from_millis(50), 10);
    assert!(over.iter().any(|r| r.sql.contains("pg_sleep")), "{over:?}");
    assert!(over.iter().all(|r| r.duration >= Duration::from_millis(50)));
    assert_eq!(monitor.slow_queries_over(Duration::ZERO, 10).len(), 3);
    assert_eq!(monitor.slow_queries_over(Duration::ZERO, 2).len(), 2);

    let all = monitor.query_history_filtered(10, true);
    assert_eq!(all.len(), 3);
    assert!(
        all[0].failed() && all[0].sql.contains("missing_table"),
        "{all:?}"
    );
    let ok_only = monitor.query_history_filtered(10, false);
    assert_eq!(
        ok_only.iter().map(|r| r.sql.as_str()).collect::<Vec<_>>(),
        ["SELECT pg_sleep(0.05)", "SELECT 1"]
    );
    db.close().await;
}
both_backends!(
    monitor_threshold_filter,
    slow_threshold_per_call_and_error_filter
);

async fn timing_helper_logs_slow_and_failed_calls<P: Pool>() {
    use pgdbm::log_query_performance;

    let db = db::<P>("mon_timing").await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    // The body runs on this thread (the test's top-level future), so a thread default catches it.
    let _guard = tracing::subscriber::set_default(subscriber);

    // Under the threshold: a debug line, the value returned unchanged.
    let v = log_query_performance(
        "count_fast",
        Duration::from_secs(3600),
        db.fetch_value::<i32, _>("SELECT 7", &[]),
    )
    .await
    .unwrap();
    assert_eq!(v, Some(7));
    let out = captured.take();
    let line = out
        .lines()
        .find(|l| l.contains("pgdbm::perf") && l.contains("count_fast"))
        .unwrap_or_else(|| panic!("no perf line in {out}"));
    assert!(
        line.contains("DEBUG") && line.contains("call finished") && line.contains("duration_ms"),
        "{line}"
    );

    // At or over the threshold: a warning with the threshold.
    log_query_performance(
        "count_slow",
        Duration::ZERO,
        db.execute("SELECT pg_sleep(0.01)", &[]),
    )
    .await
    .unwrap();
    let out = captured.take();
    let line = out
        .lines()
        .find(|l| l.contains("pgdbm::perf") && l.contains("count_slow"))
        .unwrap_or_else(|| panic!("no perf line in {out}"));
    assert!(
        line.contains("WARN") && line.contains("slow call") && line.contains("threshold_ms=0"),
        "{line}"
    );

    // A failure: an error line with the error, and the error returned.
    let e = log_query_performance(
        "read_missing",
        Duration::from_secs(3600),
        db.fetch_value::<i32, _>("SELECT 1 FROM no_such_table", &[]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.sqlstate(), Some("42P01"));
    let out = captured.take();
    let line = out
        .lines()
        .find(|l| l.contains("pgdbm::perf") && l.contains("read_missing"))
        .unwrap_or_else(|| panic!("no perf line in {out}"));
    assert!(
        line.contains("ERROR") && line.contains("call failed") && line.contains("no_such_table"),
        "{line}"
    );
    db.close().await;
}
both_backends!(
    monitor_timing_helper,
    timing_helper_logs_slow_and_failed_calls
);
