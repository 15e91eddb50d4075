//! pgdbm-migrate against a real PostgreSQL (the testkit's shared server), every behaviour run
//! for both pool backends (deadpool and bb8) from one generic test body.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::time::Duration;

use pgdbm_core::{Connection, Database, Error, Pool, Row};
use pgdbm_migrate::{
    embed_migrations, EmbeddedMigration, MigrationSource, MigrationStatus, Migrator,
};

mod common;
use common::Env;
use sha2::{Digest, Sha256};

static EMBEDDED: &[EmbeddedMigration] = embed_migrations!("tests/fixtures/embedded");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/embedded");

fn migration_error(e: &Error) -> (Option<String>, String) {
    match e {
        Error::Migration { file, message, .. } => (file.clone(), message.clone()),
        other => panic!("expected Error::Migration, got {other:?}"),
    }
}

both_backends! {
    eight_concurrent_migrators => case_eight_concurrent,
    failing_migration => case_failing_migration,
    no_transaction_concurrently_while_other_waits => case_concurrently,
    table_ddl_rows_and_checksums => case_table_ddl_and_rows,
    edited_crlf_and_repair => case_edited_and_repair,
    embedded_equals_directory => case_embedded_equals_directory,
    multi_tenant_schemas => case_multi_tenant,
    cancelled_migrator_releases_lock => case_cancelled,
    lock_timeout_names_holder => case_lock_timeout,
    strict_and_out_of_order => case_strict,
    baseline_history_rollback_create => case_baseline_history_rollback_create,
    statement_caches_cleared => case_statement_caches,
    python_wrapped_and_null_module => case_python_wrapped_and_null_module,
    python_database_continues_under_rust_and_back => case_python_interop,
    blocking_waiter_control_deadlocks_with_concurrently => case_blocking_control,
}

async fn case_eight_concurrent<P: Pool>() {
    let env = Env::<P>::new("mig_eight").await;
    env.write("001_a.sql", "CREATE TABLE a (id INT PRIMARY KEY);");
    env.write(
        "002_b.sql",
        "INSERT INTO a VALUES (1);\nSELECT pg_sleep(0.2);",
    );
    env.write("003_c.sql", "INSERT INTO a VALUES (2);");
    // ensure_migrations_table does not take the lock: racing CREATE ... IF NOT EXISTS (in a
    // schema that does not exist yet) must still succeed everywhere.
    let mut ensures = Vec::new();
    for _ in 0..8 {
        let m = Migrator::from_pool(env.pool.clone(), Some("race".into()));
        ensures.push(tokio::spawn(
            async move { m.ensure_migrations_table().await },
        ));
    }
    for e in ensures {
        e.await
            .expect("join")
            .expect("concurrent ensure_migrations_table");
    }
    assert_eq!(
        env.psql("SELECT to_regclass('race.schema_migrations') IS NOT NULL"),
        "t"
    );
    let mut tasks = Vec::new();
    for i in 0..8 {
        // Half share the test pool, half open their own.
        let pool = if i % 2 == 0 {
            env.pool.clone()
        } else {
            P::connect(&env.config).await.expect("own pool")
        };
        let m = Migrator::from_pool(pool, None).migrations_path(&env.dir);
        tasks.push(tokio::spawn(async move { m.apply_pending().await }));
    }
    let mut applied = Vec::new();
    let mut statuses = Vec::new();
    for t in tasks {
        let report = t.await.expect("join").expect("apply_pending");
        statuses.push(report.status);
        applied.extend(report.applied.into_iter().map(|a| a.filename));
    }
    applied.sort();
    assert_eq!(applied, ["001_a.sql", "002_b.sql", "003_c.sql"]);
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == MigrationStatus::Success)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == MigrationStatus::UpToDate)
            .count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(env.psql("SELECT count(*) FROM schema_migrations"), "3");
    assert_eq!(
        env.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM a"),
        "1,2"
    );
    assert_eq!(env.advisory_locks(), "0");
    env.finish().await;
}

async fn case_failing_migration<P: Pool>() {
    let env = Env::<P>::new("mig_fail").await;
    env.write("001_ok.sql", "CREATE TABLE ok_t (id INT);");
    env.write(
        "002_bad.sql",
        "CREATE TABLE bad_t (id INT);\nINSERT INTO bad_t VALUES (1);\nSELECT 1/0;",
    );
    env.write("003_later.sql", "CREATE TABLE later_t (id INT);");
    let err = env.migrator().apply_pending().await.unwrap_err();
    let (file, message) = migration_error(&err);
    assert_eq!(file.as_deref(), Some("002_bad.sql"));
    assert!(err.to_string().contains("002_bad.sql"), "{err}");
    assert!(message.contains("rolled back"), "{message}");
    assert!(
        matches!(&err, Error::Migration { source: Some(s), .. } if s.sqlstate() == Some("22012")),
        "{err:?}"
    );
    // Nothing of 002 remains; 001 stays applied; 003 was not attempted.
    assert_eq!(env.psql("SELECT to_regclass('bad_t') IS NULL"), "t");
    assert_eq!(env.psql("SELECT to_regclass('later_t') IS NULL"), "t");
    assert_eq!(
        env.psql("SELECT string_agg(filename, ',' ORDER BY filename) FROM schema_migrations"),
        "001_ok.sql"
    );
    assert_eq!(env.advisory_locks(), "0");

    // The Python-style report of the same failure.
    let report = env.migrator().apply_pending_report(false).await;
    assert_eq!(report.status, MigrationStatus::Error);
    assert_eq!(report.failed_migration.as_deref(), Some("002_bad.sql"));
    assert!(report
        .error
        .as_deref()
        .unwrap_or("")
        .contains("division by zero"));
    assert!(report.applied.is_empty());
    assert_eq!(report.skipped, ["001_ok.sql"]);
    assert_eq!(report.total, 3);

    // The next migrator gets the lock at once: with a zero lock timeout a single
    // pg_try_advisory_lock attempt must succeed.
    env.write("002_bad.sql", "CREATE TABLE bad_t (id INT);");
    let report = env
        .migrator()
        .lock_timeout(Duration::ZERO)
        .apply_pending()
        .await
        .expect("fixed migration applies");
    assert_eq!(report.status, MigrationStatus::Success);
    let names: Vec<_> = report.applied.iter().map(|a| a.filename.as_str()).collect();
    assert_eq!(names, ["002_bad.sql", "003_later.sql"]);
    assert_eq!(env.advisory_locks(), "0");
    env.finish().await;
}

/// Waits until this database has an advisory lock (the first migrator holds the lock).
async fn wait_for_advisory_lock<P: Pool>(env: &Env<P>) {
    for _ in 0..400 {
        if env.advisory_locks() != "0" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the first migrator never took the lock");
}

async fn case_concurrently<P: Pool>() {
    let env = Env::<P>::new("mig_cic").await;
    env.write(
        "001_t.sql",
        "CREATE TABLE big (id INT, v TEXT);\nINSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 5000) g;",
    );
    env.write(
        "002_index.sql",
        "-- pgdbm:no-transaction\nSELECT pg_sleep(1);\nCREATE INDEX CONCURRENTLY big_v_idx ON big (v);\n",
    );
    let first = env.migrator();
    let a = tokio::spawn(async move { first.apply_pending().await });
    wait_for_advisory_lock(&env).await;
    // The second migrator polls for the lock while the first runs CREATE INDEX CONCURRENTLY.
    let second = env.migrator().lock_timeout(Duration::from_secs(60));
    let b = tokio::spawn(async move { second.apply_pending().await });
    let ra = a.await.expect("join a").expect("first migrator");
    let rb = b.await.expect("join b").expect("second migrator");
    assert_eq!(ra.status, MigrationStatus::Success);
    assert_eq!(ra.applied.len(), 2);
    assert_eq!(rb.status, MigrationStatus::UpToDate);
    assert_eq!(
        env.psql("SELECT indisvalid FROM pg_index WHERE indexrelid = 'big_v_idx'::regclass"),
        "t"
    );
    assert_eq!(env.psql("SELECT count(*) FROM schema_migrations"), "2");
    assert_eq!(env.advisory_locks(), "0");
    env.finish().await;
}

/// Catalog description of a table: columns, constraints and indexes (names included).
fn describe(env_psql: impl Fn(&str) -> String, schema: &str, table: &str) -> String {
    let columns = env_psql(&format!(
        "SELECT string_agg(concat_ws(':', column_name, data_type, character_maximum_length, \
         is_nullable, column_default), E'\\n' ORDER BY ordinal_position) \
         FROM information_schema.columns WHERE table_schema = '{schema}' AND table_name = '{table}'"
    ));
    let constraints = env_psql(&format!(
        "SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), E'\\n' ORDER BY conname) \
         FROM pg_constraint WHERE conrelid = '{schema}.{table}'::regclass"
    ));
    let indexes = env_psql(&format!(
        "SELECT string_agg(indexname || ' ' || replace(indexdef, current_database(), 'DB'), E'\\n' ORDER BY indexname) \
         FROM pg_indexes WHERE schemaname = '{schema}' AND tablename = '{table}'"
    ));
    format!("{columns}\n--\n{constraints}\n--\n{indexes}")
}

/// The statements Python pgdbm 0.5 runs, verbatim apart from the table name.
fn python_ddl(table: &str, bare: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
                id SERIAL PRIMARY KEY,
                filename VARCHAR(255) NOT NULL,
                checksum VARCHAR(64) NOT NULL,
                module_name VARCHAR(100),
                applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
                applied_by VARCHAR(100) DEFAULT CURRENT_USER,
                execution_time_ms INTEGER,
                UNIQUE(filename, module_name)
            );
            CREATE INDEX IF NOT EXISTS idx_{bare}_module
            ON {table}(module_name, filename)"
    )
}

async fn case_table_ddl_and_rows<P: Pool>() {
    let env = Env::<P>::new("mig_ddl").await;
    // Rust creates the table in `public` (no schema) and in schema `app`.
    env.write("001_t.sql", "CREATE TABLE t (id INT);");
    env.write("002_vec.sql", "CREATE TABLE {{tables.t1}} (id INT);\n");
    let report = env.migrator().apply_pending().await.expect("apply");
    assert_eq!(report.status, MigrationStatus::Success);
    assert!(report.applied.iter().all(|a| a.execution_time_ms >= 1.0));
    let app_dir = env.dir.join("app");
    std::fs::create_dir_all(&app_dir).unwrap();
    std::fs::write(
        app_dir.join("002_vec.sql"),
        "CREATE TABLE {{tables.t1}} (id INT);\n",
    )
    .unwrap();
    let app = Migrator::from_pool(env.pool.clone(), Some("app".into())).migrations_path(&app_dir);
    app.apply_pending().await.expect("apply in schema app");
    assert_eq!(env.psql("SELECT to_regclass('app.t1') IS NOT NULL"), "t");

    // Python's DDL in two other schemas, for comparison.
    env.psql("CREATE SCHEMA py; CREATE SCHEMA pyapp");
    env.psql(&python_ddl("py.schema_migrations", "schema_migrations"));
    env.psql(&python_ddl("pyapp.schema_migrations", "schema_migrations"));
    let ours = describe(|q| env.psql(q), "public", "schema_migrations");
    let python = describe(|q| env.psql(q), "py", "schema_migrations");
    // Qualifiers differ only by search_path (`public` is on it): drop them.
    let normalize = |s: &str, schema: &str| s.replace(&format!("{schema}."), "");
    assert_eq!(normalize(&ours, "public"), normalize(&python, "py"));
    let ours_app = describe(|q| env.psql(q), "app", "schema_migrations");
    let python_app = describe(|q| env.psql(q), "pyapp", "schema_migrations");
    assert_eq!(normalize(&ours_app, "app"), normalize(&python_app, "pyapp"));
    assert!(
        ours.contains("applied_at:timestamp without time zone:NO:CURRENT_TIMESTAMP"),
        "{ours}"
    );
    assert!(ours.contains("idx_schema_migrations_module"), "{ours}");

    // Rows: bare file name, the foundation's checksum vectors, module, time >= 1, defaults.
    let rows = env.psql(
        "SELECT filename, checksum, module_name, execution_time_ms >= 1, applied_by = current_user, \
         applied_at <= now()::timestamp AND applied_at > now()::timestamp - interval '1 hour' \
         FROM schema_migrations ORDER BY filename",
    );
    assert_eq!(
        rows,
        "001_t.sql|f423e61fbd021a13b6ae0afb423f2da5c3cf7cc0647ddb7348266dbfd281d6fe|default|t|t|t\n\
         002_vec.sql|090a12620d172e2b49a7746a58ea26246bec62a0eba4addabd962819415a9107|default|t|t|t"
    );
    assert_eq!(
        env.psql("SELECT string_agg(DISTINCT module_name, ',') FROM app.schema_migrations"),
        "app"
    );
    // An explicit module wins over the schema.
    let m = Migrator::from_pool(env.pool.clone(), Some("app".into())).module("billing");
    assert_eq!(m.module_name(), "billing");
    assert_eq!(m.table_name().unwrap(), "app.schema_migrations");
    assert!(env.migrator().table("bad;name").table_name().is_err());

    // applied() reads them back.
    let applied = env.migrator().applied().await.expect("applied");
    assert_eq!(applied.len(), 2);
    assert!(applied
        .values()
        .all(|m| m.is_applied() && m.module_name.as_deref() == Some("default")));
    env.finish().await;
}

fn raw_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn case_edited_and_repair<P: Pool>() {
    let env = Env::<P>::new("mig_edit").await;
    env.write("001_a.sql", "CREATE TABLE a (id INT);\n");
    env.migrator().apply_pending().await.expect("apply");

    // A real edit: an error naming the file and both checksums.
    env.write("001_a.sql", "CREATE TABLE a (id BIGINT);\n");
    let err = env.migrator().pending().await.unwrap_err();
    let (file, message) = migration_error(&err);
    assert_eq!(file.as_deref(), Some("001_a.sql"));
    assert!(
        message.contains(&pgdbm_core::checksum("CREATE TABLE a (id INT);")),
        "{message}"
    );
    assert!(
        message.contains(&pgdbm_core::checksum("CREATE TABLE a (id BIGINT);")),
        "{message}"
    );
    assert!(!message.contains("line endings"), "{message}");
    let err = env.migrator().apply_pending().await.unwrap_err();
    assert_eq!(migration_error(&err).0.as_deref(), Some("001_a.sql"));
    assert_eq!(env.advisory_locks(), "0");
    env.write("001_a.sql", "CREATE TABLE a (id INT);\n");
    assert_eq!(
        env.migrator()
            .apply_pending()
            .await
            .expect("restored")
            .status,
        MigrationStatus::UpToDate
    );

    // CRLF-only edit. The core checksum normalizes CRLF to LF (like Python), so a CRLF copy of
    // an LF file has the same checksum; a mismatch on line endings arises when the stored
    // checksum was computed over the raw text (e.g. by another tool). Simulate that row.
    let crlf = "CREATE TABLE c (id INT);\r\nINSERT INTO c VALUES (1);\r\n";
    env.write("002_crlf.sql", crlf);
    assert_eq!(
        pgdbm_core::checksum(crlf),
        pgdbm_core::checksum(&crlf.replace("\r\n", "\n"))
    );
    env.psql("CREATE TABLE c (id INT); INSERT INTO c VALUES (1);");
    env.psql(&format!(
        "INSERT INTO schema_migrations (filename, checksum, module_name, execution_time_ms) \
         VALUES ('002_crlf.sql', '{}', 'default', 5)",
        raw_sha256(crlf)
    ));
    let err = env.migrator().apply_pending().await.unwrap_err();
    let (file, message) = migration_error(&err);
    assert_eq!(file.as_deref(), Some("002_crlf.sql"));
    assert!(message.contains("line endings"), "{message}");
    assert!(message.contains(&raw_sha256(crlf)), "{message}");
    assert!(message.contains(&pgdbm_core::checksum(crlf)), "{message}");

    // repair() rewrites the stored checksum; then everything is up to date.
    let repaired = env.migrator().repair().await.expect("repair");
    assert_eq!(repaired, ["002_crlf.sql"]);
    assert_eq!(
        env.psql("SELECT checksum FROM schema_migrations WHERE filename = '002_crlf.sql'"),
        pgdbm_core::checksum(crlf)
    );
    let report = env.migrator().apply_pending().await.expect("after repair");
    assert_eq!(report.status, MigrationStatus::UpToDate);
    assert_eq!(env.psql("SELECT count(*) FROM c"), "1", "not re-applied");
    assert!(env
        .migrator()
        .repair()
        .await
        .expect("repair again")
        .is_empty());
    assert_eq!(env.advisory_locks(), "0");
    env.finish().await;
}

async fn case_embedded_equals_directory<P: Pool>() {
    let env = Env::<P>::new("mig_embed").await;
    let dir = Migrator::from_pool(env.pool.clone(), None).migrations_path(FIXTURES);
    let emb = Migrator::from_pool(env.pool.clone(), None).embedded(EMBEDDED);
    let files_dir = dir.find_migration_files().expect("dir files");
    let files_emb = emb.find_migration_files().expect("embedded files");
    let names: Vec<_> = files_dir.iter().map(|m| m.filename.as_str()).collect();
    assert_eq!(
        names,
        [
            "001_users.sql",
            "002_bom_name.sql",
            "010_index.sql",
            "9_out_of_numeric_order.sql"
        ]
    );
    assert_eq!(files_dir, files_emb);
    assert!(files_dir[1].content.starts_with('\u{feff}'));
    assert_eq!(
        MigrationSource::Embedded(EMBEDDED).load().unwrap(),
        MigrationSource::Directory(FIXTURES.into()).load().unwrap()
    );

    let pending_dir = dir.pending().await.expect("pending dir");
    let pending_emb = emb.pending().await.expect("pending emb");
    assert_eq!(pending_dir, pending_emb);
    assert_eq!(pending_dir.len(), 4);
    // Apply from the embedded source; the directory source then sees nothing pending.
    let report = emb.apply_pending().await.expect("apply embedded");
    assert_eq!(report.applied.len(), 4);
    assert!(dir.pending().await.expect("pending").is_empty());
    assert_eq!(
        dir.apply_pending().await.expect("dir").status,
        MigrationStatus::UpToDate
    );
    assert_eq!(
        env.psql("SELECT email FROM emb_users"),
        "a;b@example.com",
        "dollar-quoted ; kept"
    );
    env.finish().await;
}

async fn case_multi_tenant<P: Pool>() {
    let env = Env::<P>::new("mig_tenant").await;
    env.write(
        "001_items.sql",
        "CREATE TABLE {{tables.items}} (id SERIAL PRIMARY KEY, name TEXT);\n\
         INSERT INTO {{tables.items}} (name) VALUES ('{{schema}}');",
    );
    env.write(
        "002_more.sql",
        "ALTER TABLE {{tables.items}} ADD COLUMN qty INT;",
    );
    let db = Database::from_pool(env.pool.clone(), env.config.clone()).expect("database");
    let tenants = ["tenant_a", "tenant_b", "tenant_c"];
    for t in tenants {
        let view = db.with_schema(t).expect("schema view");
        let m = Migrator::new(&view).migrations_path(&env.dir);
        assert_eq!(m.module_name(), t);
        let report = match m.apply_pending().await {
            Ok(r) => r,
            Err(e) => {
                let log = std::fs::read_to_string(env.server.log_path().unwrap()).unwrap();
                panic!(
                    "apply tenant: {e}\nLOG {}",
                    &log[log.len().saturating_sub(6000)..]
                );
            }
        };
        assert_eq!(report.applied.len(), 2, "{t}");
    }
    for t in tenants {
        assert_eq!(
            env.psql(&format!(
                "SELECT string_agg(filename || '/' || module_name, ',' ORDER BY filename) FROM {t}.schema_migrations"
            )),
            format!("001_items.sql/{t},002_more.sql/{t}")
        );
        assert_eq!(
            env.psql(&format!("SELECT name FROM {t}.items")),
            "\"".to_owned() + t + "\"",
            "{{schema}} renders to the quoted schema"
        );
    }
    // One tenant's history does not affect another's.
    let a = Migrator::new(&db.with_schema("tenant_a").unwrap()).migrations_path(&env.dir);
    assert!(a.rollback_migration("002_more.sql").await.unwrap());
    assert_eq!(a.pending().await.unwrap().len(), 1);
    let b = Migrator::new(&db.with_schema("tenant_b").unwrap()).migrations_path(&env.dir);
    assert!(b.pending().await.unwrap().is_empty());
    env.finish().await;
}

async fn case_cancelled<P: Pool>() {
    // The server notices a closed client within 100 ms even while pg_sleep runs.
    let env = Env::<P>::with("mig_cancel", |c| {
        c.server_settings
            .insert("client_connection_check_interval".into(), "100ms".into());
    })
    .await;
    env.write("001_slow.sql", "SELECT pg_sleep(30);");
    let m = env.migrator();
    let task = tokio::spawn(async move { m.apply_pending().await });
    wait_for_advisory_lock(&env).await;
    // Cancelling the future drops the lock guard mid-migration (like a panic would): its
    // connection is discarded, the server ends the session and releases the lock.
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let report = env
        .migrator()
        .lock_timeout(Duration::from_secs(60))
        .apply_pending_dry_run()
        .await
        .expect("lock becomes free after the cancelled migrator's connection closes");
    assert_eq!(report.status, MigrationStatus::DryRun);
    assert_eq!(report.pending, ["001_slow.sql"]);
    assert_eq!(env.psql("SELECT count(*) FROM schema_migrations"), "0");
    env.finish().await;
}

async fn case_lock_timeout<P: Pool>() {
    let env = Env::<P>::new("mig_locktimeout").await;
    env.write("001_a.sql", "CREATE TABLE IF NOT EXISTS a (id INT);");
    // Hold the lock the way Python pgdbm takes it.
    let mut holder = env.pool.acquire().await.expect("conn");
    holder
        .query_opt(
            "SELECT pg_advisory_lock(hashtext('pgdbm_migration_' || $1))",
            &[&"default"],
            None,
        )
        .await
        .expect("python-style lock");
    let pid: i32 = holder
        .query_opt("SELECT pg_backend_pid()", &[], None)
        .await
        .unwrap()
        .unwrap()
        .get_at(0)
        .unwrap();
    let err = env
        .migrator()
        .lock_timeout(Duration::from_millis(300))
        .apply_pending()
        .await
        .unwrap_err();
    let (_, message) = migration_error(&err);
    assert!(message.contains("module `default`"), "{message}");
    assert!(message.contains(&format!("pid {pid}")), "{message}");
    // Another module is not blocked.
    let other = env.migrator().module("other").lock_timeout(Duration::ZERO);
    assert_eq!(
        other.apply_pending().await.expect("other module").status,
        MigrationStatus::Success
    );
    holder
        .query_opt(
            "SELECT pg_advisory_unlock(hashtext('pgdbm_migration_' || $1))",
            &[&"default"],
            None,
        )
        .await
        .unwrap();
    drop(holder);
    let report = env
        .migrator()
        .lock_timeout(Duration::ZERO)
        .apply_pending()
        .await
        .unwrap();
    assert_eq!(report.status, MigrationStatus::Success);
    env.finish().await;
}

async fn case_strict<P: Pool>() {
    let env = Env::<P>::new("mig_strict").await;
    env.write("001_a.sql", "CREATE TABLE a (id INT);");
    env.write("003_c.sql", "CREATE TABLE c (id INT);");
    env.migrator().apply_pending().await.expect("apply");
    env.write("002_b.sql", "CREATE TABLE b (id INT);");
    let err = env
        .migrator()
        .strict(true)
        .apply_pending()
        .await
        .unwrap_err();
    let (file, message) = migration_error(&err);
    assert_eq!(file.as_deref(), Some("002_b.sql"));
    assert!(
        message.contains("`002_b.sql`") && message.contains("003_c.sql"),
        "{message}"
    );
    assert_eq!(env.psql("SELECT to_regclass('b') IS NULL"), "t");
    // Not strict (the default, like Python): applied out of order.
    let report = env.migrator().apply_pending().await.expect("out of order");
    let names: Vec<_> = report.applied.iter().map(|a| a.filename.as_str()).collect();
    assert_eq!(names, ["002_b.sql"]);
    assert_eq!(report.skipped, ["001_a.sql", "003_c.sql"]);
    assert_eq!(report.total, 3);
    env.finish().await;
}

async fn case_baseline_history_rollback_create<P: Pool>() {
    let env = Env::<P>::new("mig_baseline").await;
    // No history table yet: nothing applied, and reading does not create it.
    assert!(env.migrator().applied().await.unwrap().is_empty());
    assert_eq!(
        env.psql("SELECT to_regclass('schema_migrations') IS NULL"),
        "t"
    );
    // An existing database adopted with baseline: files recorded, not run.
    env.psql("CREATE TABLE a (id INT); CREATE TABLE b (id INT);");
    env.write("001_a.sql", "CREATE TABLE a (id INT);");
    env.write("002_b.sql", "CREATE TABLE b (id INT);");
    env.write("003_c.sql", "CREATE TABLE c (id INT);");
    let err = env.migrator().baseline(Some("nope.sql")).await.unwrap_err();
    assert_eq!(migration_error(&err).0.as_deref(), Some("nope.sql"));
    let recorded = env
        .migrator()
        .baseline(Some("002_b.sql"))
        .await
        .expect("baseline");
    assert_eq!(recorded, ["001_a.sql", "002_b.sql"]);
    assert_eq!(
        env.psql("SELECT string_agg(execution_time_ms::text, ',') FROM schema_migrations"),
        "0,0"
    );
    // Dry run: nothing applied.
    let dry = env
        .migrator()
        .apply_pending_dry_run()
        .await
        .expect("dry run");
    assert_eq!(dry.status, MigrationStatus::DryRun);
    assert_eq!(dry.pending, ["003_c.sql"]);
    assert!(dry.applied.is_empty());
    assert_eq!(env.psql("SELECT to_regclass('c') IS NULL"), "t");
    let report = env.migrator().apply_pending().await.expect("apply");
    assert_eq!(report.applied.len(), 1);

    // history: newest first, limited.
    let h = env.migrator().history(2).await.expect("history");
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].filename, "003_c.sql");
    assert!(h[0].execution_time_ms.unwrap_or(0) >= 1);
    assert_eq!(h[0].module_name.as_deref(), Some("default"));
    assert!(h[0].applied_by.is_some());

    // rollback_migration removes the record only.
    assert!(env
        .migrator()
        .rollback_migration("003_c.sql")
        .await
        .unwrap());
    assert!(!env
        .migrator()
        .rollback_migration("003_c.sql")
        .await
        .unwrap());
    assert_eq!(env.psql("SELECT to_regclass('c') IS NOT NULL"), "t");
    let pending = env.migrator().pending().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].version(), "003");

    // create_migration: Python 0.5's `YYYYMMDD_HHMMSS_` name, content as given; the
    // no-transaction marker only when the content has it (auto_transaction changes nothing).
    let path = env
        .migrator()
        .create_migration("add_d", "CREATE TABLE d (id INT);", true)
        .expect("create");
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(name.len(), "YYYYMMDD_HHMMSS_add_d.sql".len(), "{name}");
    assert!(
        name[..8].bytes().all(|b| b.is_ascii_digit())
            && &name[8..9] == "_"
            && name[9..15].bytes().all(|b| b.is_ascii_digit())
            && name.ends_with("_add_d.sql"),
        "{name}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "CREATE TABLE d (id INT);"
    );
    let nt = env
        .migrator()
        .create_migration(
            "idx_d",
            "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY d_id ON d (id);",
            false,
        )
        .expect("create no-tx");
    assert_eq!(
        std::fs::read_to_string(&nt).unwrap(),
        "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY d_id ON d (id);"
    );
    assert!(env
        .migrator()
        .create_migration("../evil", "x", true)
        .is_err());
    assert!(env
        .migrator()
        .embedded(&[])
        .create_migration("x", "x", true)
        .is_err());
    // 003 is pending again (its table exists, so drop it first), then the two new files.
    env.psql("DROP TABLE c");
    let report = env.migrator().apply_pending().await.expect("apply created");
    assert_eq!(report.applied.len(), 3);
    assert_eq!(
        env.psql("SELECT indisvalid FROM pg_index WHERE indexrelid = 'd_id'::regclass"),
        "t"
    );

    // apply_migration: one migration, recorded; a second time fails on the unique key and is
    // rolled back (the table it would create again is not touched).
    let one =
        pgdbm_migrate::Migration::new("050_x.sql", "CREATE TABLE IF NOT EXISTS x50 (id INT);");
    let ms = env
        .migrator()
        .apply_migration(&one)
        .await
        .expect("apply_migration");
    assert!(ms >= 1.0);
    let err = env.migrator().apply_migration(&one).await.unwrap_err();
    assert_eq!(migration_error(&err).0.as_deref(), Some("050_x.sql"));
    assert_eq!(
        env.psql("SELECT count(*) FROM schema_migrations WHERE filename = '050_x.sql'"),
        "1"
    );
    assert_eq!(env.advisory_locks(), "0");
    env.finish().await;
}

async fn case_statement_caches<P: Pool>() {
    // One connection: the cached statement lives on the connection the migrator then uses.
    let env = Env::<P>::with("mig_cache", |c| {
        c.min_connections = 1;
        c.max_connections = 1;
    })
    .await;
    env.psql("CREATE TABLE cache_t (a INT); INSERT INTO cache_t VALUES (1)");
    {
        let mut conn = env.pool.acquire().await.expect("conn");
        let rows = conn
            .query("SELECT * FROM cache_t", &[], None)
            .await
            .expect("q");
        assert_eq!(rows[0].len(), 1);
    }
    env.write(
        "001_alter.sql",
        "ALTER TABLE cache_t ADD COLUMN b INT DEFAULT 2;",
    );
    env.migrator().apply_pending().await.expect("apply");
    let mut conn = env.pool.acquire().await.expect("conn");
    let rows = conn
        .query("SELECT * FROM cache_t", &[], None)
        .await
        .expect("no 'cached plan must not change result type' after migrations");
    assert_eq!(rows[0].len(), 2);
    assert_eq!(rows[0].try_get::<_, i32>("b").unwrap(), 2);
    let before = conn
        .query_opt("SHOW search_path", &[], None)
        .await
        .unwrap()
        .unwrap()
        .get_at::<String>(0)
        .unwrap();
    drop(conn);

    // Session state set by a migration (search_path, temporary tables) does not leak into the
    // pool: the migrator's connection is closed after running migration SQL.
    env.write(
        "002_session.sql",
        "SET search_path TO pg_catalog;\nCREATE TEMP TABLE tmp_leak (id INT);",
    );
    env.migrator().apply_pending().await.expect("apply 002");
    let mut conn = env.pool.acquire().await.expect("conn");
    let after = conn
        .query_opt("SHOW search_path", &[], None)
        .await
        .unwrap()
        .unwrap()
        .get_at::<String>(0)
        .unwrap();
    assert_eq!(after, before);
    assert_ne!(after, "pg_catalog");
    let tmp = conn
        .query_opt("SELECT to_regclass('pg_temp.tmp_leak') IS NULL", &[], None)
        .await
        .unwrap()
        .unwrap()
        .get_at::<bool>(0)
        .unwrap();
    assert!(
        tmp,
        "temporary table of the migration session leaked into the pool"
    );
    drop(conn);
    env.finish().await;
}

async fn case_python_wrapped_and_null_module<P: Pool>() {
    let env = Env::<P>::new("mig_pywrap").await;
    // A file as Python's create_migration(auto_transaction=True) writes it, that fails: the
    // wrapper must not commit half of it.
    env.write(
        "001_wrapped.sql",
        "BEGIN;\n\nCREATE TABLE w (id INT);\nSELECT 1/0;\n\nCOMMIT;",
    );
    let err = env.migrator().apply_pending().await.unwrap_err();
    assert_eq!(migration_error(&err).0.as_deref(), Some("001_wrapped.sql"));
    assert_eq!(env.psql("SELECT to_regclass('w') IS NULL"), "t");
    assert_eq!(env.psql("SELECT count(*) FROM schema_migrations"), "0");
    env.write(
        "001_wrapped.sql",
        "BEGIN;\n\nCREATE TABLE w (id INT);\n\nCOMMIT;",
    );
    env.migrator()
        .apply_pending()
        .await
        .expect("wrapped applies");
    assert_eq!(env.psql("SELECT to_regclass('w') IS NOT NULL"), "t");

    // A row with NULL module_name counts as applied for every module.
    env.write("002_shared.sql", "CREATE TABLE shared (id INT);");
    env.psql(&format!(
        "INSERT INTO schema_migrations (filename, checksum, module_name, execution_time_ms) \
         VALUES ('002_shared.sql', '{}', NULL, 1)",
        pgdbm_core::checksum("CREATE TABLE shared (id INT);")
    ));
    let other = env.migrator().module("other_module");
    let pending: Vec<_> = other
        .pending()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.filename)
        .collect();
    assert_eq!(
        pending,
        ["001_wrapped.sql"],
        "002 is applied for every module"
    );
    assert!(env.migrator().pending().await.unwrap().is_empty());
    env.finish().await;
}

async fn case_python_interop<P: Pool>() {
    let env = Env::<P>::new("mig_pyinterop").await;
    let a = "CREATE TABLE a (id INT);\n";
    let b = "CREATE TABLE b (id INT);\n";
    env.write("001_a.sql", a);
    env.write("002_b.sql", b);
    // What Python pgdbm 0.5 leaves behind after applying 001_a.sql for module "default": its
    // table DDL verbatim, the schema change, and its INSERT.
    env.psql(&python_ddl("schema_migrations", "schema_migrations"));
    env.psql(a);
    env.psql(&format!(
        "INSERT INTO schema_migrations (filename, checksum, module_name, execution_time_ms) \
         VALUES ('001_a.sql', '{}', 'default', 3)",
        pgdbm_core::checksum(a)
    ));
    // Rust continues: only 002 is pending (re-running 001 would fail: `a` exists).
    let report = env
        .migrator()
        .apply_pending()
        .await
        .expect("continue under Rust");
    let names: Vec<_> = report.applied.iter().map(|m| m.filename.as_str()).collect();
    assert_eq!(names, ["002_b.sql"]);
    assert_eq!(report.skipped, ["001_a.sql"]);
    // And back: Python's get_applied_migrations query sees both files with the checksums its
    // _calculate_checksum computes (the core checksum is Python's, see the vectors above), so
    // Python finds nothing pending.
    let python_view = env.psql(
        "SELECT filename, checksum FROM schema_migrations \
         WHERE module_name = 'default' OR module_name IS NULL ORDER BY filename",
    );
    assert_eq!(
        python_view,
        format!(
            "001_a.sql|{}\n002_b.sql|{}",
            pgdbm_core::checksum(a),
            pgdbm_core::checksum(b)
        )
    );
    assert_eq!(
        env.psql("SELECT count(*) FROM pg_indexes WHERE tablename = 'schema_migrations'"),
        "3",
        "no second index or table was created next to Python's"
    );
    env.finish().await;
}

/// Control for `case_concurrently`: a waiter that blocks in `pg_advisory_lock` (as Python
/// pgdbm 0.5 does) while the lock holder runs CREATE INDEX CONCURRENTLY forms a deadlock that
/// PostgreSQL has to break (40P01). The polling migrator in `case_concurrently` does not.
async fn case_blocking_control<P: Pool>() {
    let env = Env::<P>::new("mig_cic_ctl").await;
    env.write(
        "001_t.sql",
        "CREATE TABLE big (v TEXT);\nINSERT INTO big SELECT g::text FROM generate_series(1, 1000) g;",
    );
    env.write(
        "002_index.sql",
        "-- pgdbm:no-transaction\nSELECT pg_sleep(1);\nCREATE INDEX CONCURRENTLY big_v ON big (v);",
    );
    let m = env.migrator();
    let a = tokio::spawn(async move { m.apply_pending().await });
    wait_for_advisory_lock(&env).await;
    let mut blocker = env.pool.acquire().await.expect("conn");
    let blocked = blocker
        .query_opt(
            "SELECT pg_advisory_lock(hashtext('pgdbm_migration_' || $1))",
            &[&"default"],
            None,
        )
        .await;
    let ra = a.await.expect("join");
    match (&blocked, &ra) {
        // The detector usually aborts the blocking waiter...
        (Err(e), Ok(_)) => assert_eq!(e.sqlstate(), Some("40P01"), "{e}"),
        // ...or the index build; either way someone got a deadlock error.
        (Ok(_), Err(e)) => assert!(e.to_string().contains("deadlock"), "{e}"),
        (b, a) => panic!(
            "expected a deadlock error, got blocker ok={} migrator {:?}",
            b.is_ok(),
            a.as_ref().map(|r| r.status)
        ),
    }
    if blocked.is_ok() {
        blocker
            .query_opt("SELECT pg_advisory_unlock_all()", &[], None)
            .await
            .unwrap();
    }
    drop(blocker);
    env.finish().await;
}
