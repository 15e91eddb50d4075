//! Runs the `pgdbm` binary against a real PostgreSQL (the testkit's shared server).
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::Path;
use std::process::{Command, Output, Stdio};

use pgdbm_testkit::{unique_database_name, TestServer};

const SECRET: &str = "pw-SECRET-7f3a";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `pgdbm ARGS` in `dir` with a clean environment (no DATABASE_URL / PG* / PGDBM_*),
/// stdin closed (not a terminal), plus `envs`.
fn pgdbm(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgdbm"));
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") || k == "DATABASE_URL" || k == "DB_PASSWORD" || k.ends_with("_DEBUG")
        {
            cmd.env_remove(k);
        }
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Two modules, `orders` (listed first) depending on `users`; `orders` has a foreign key to
/// `users`, so applying in the wrong order fails.
fn project(dir: &Path) {
    write(
        dir,
        "pgdbm.toml",
        r#"
[project]
name = "shop"

[environments.dev]
url = "${CLI_TEST_URL}"

[modules.orders]
migrations_path = "migrations/orders"
schema = "orders"
depends_on = ["users"]

[modules.users]
migrations_path = "migrations/users"
schema = "users"
mode = "library"
"#,
    );
    write(
        dir,
        "migrations/users/001_users.sql",
        "CREATE TABLE {{tables.users}} (id int PRIMARY KEY);\n",
    );
    write(
        dir,
        "migrations/orders/001_orders.sql",
        "CREATE TABLE {{tables.orders}} (id int PRIMARY KEY, user_id int REFERENCES users.users(id));\n",
    );
}

#[test]
fn migrations_schemas_and_connection_from_a_config_file() {
    let server = TestServer::shared().unwrap();
    let db = unique_database_name("cli").unwrap();
    server.create_database(&db).unwrap();
    let url = server.connection_url(&db);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir);
    let env = [("CLI_TEST_URL", url.as_str())];

    let st = pgdbm(dir, &["migrate", "status"], &env).ok();
    assert!(st.stdout.contains("Module: users"), "{}", st.stdout);
    assert!(st.stdout.contains("Pending: 1"), "{}", st.stdout);
    assert!(st.stdout.contains("- 001_users.sql"), "{}", st.stdout);
    assert!(st.stdout.contains("- 001_orders.sql"), "{}", st.stdout);

    let dry = pgdbm(dir, &["migrate", "apply", "--dry-run"], &env).ok();
    assert!(
        dry.stdout.contains("Would apply 1 migration(s)"),
        "{}",
        dry.stdout
    );
    assert_eq!(
        server
            .psql(
                &db,
                "SELECT count(*) FROM pg_tables WHERE tablename IN ('users', 'orders')"
            )
            .unwrap(),
        "0",
        "a dry run applies nothing"
    );

    let ap = pgdbm(dir, &["migrate", "apply", "--all"], &env).ok();
    assert!(
        ap.stdout.contains("Resolved module order: users → orders"),
        "{}",
        ap.stdout
    );
    assert!(
        ap.stdout.contains("Applied 2 migration(s) total"),
        "{}",
        ap.stdout
    );
    assert_eq!(
        server
            .psql(
                &db,
                "SELECT module_name || ':' || filename FROM users.schema_migrations \
                 UNION ALL SELECT module_name || ':' || filename FROM orders.schema_migrations"
            )
            .unwrap(),
        "users:001_users.sql\norders:001_orders.sql"
    );

    let again = pgdbm(dir, &["migrate", "apply", "--all"], &env).ok();
    assert!(again.stdout.contains("up to date"), "{}", again.stdout);
    assert!(again.stdout.contains("Applied 0 migration(s) total"));

    let cr = pgdbm(
        dir,
        &["migrate", "create", "add_email", "--module", "users"],
        &env,
    )
    .ok();
    let created = dir.join("migrations/users/002_add_email.sql");
    assert!(created.is_file(), "{}", cr.stdout);
    assert!(std::fs::read_to_string(&created)
        .unwrap()
        .contains("{{tables.tablename}}"));

    // An edited applied file is flagged (exit 1) until repaired.
    write(
        dir,
        "migrations/users/001_users.sql",
        "CREATE TABLE {{tables.users}} (id int PRIMARY KEY); -- edited\n",
    );
    let bad = pgdbm(dir, &["migrate", "status", "--module", "users"], &env);
    assert_eq!(bad.code, 1, "{}", bad.stdout);
    assert!(bad.stdout.contains("CHECKSUM MISMATCH"), "{}", bad.stdout);
    assert!(bad.stderr.contains("migrate repair"), "{}", bad.stderr);
    pgdbm(dir, &["migrate", "repair", "--module", "users"], &env).ok();
    pgdbm(dir, &["migrate", "status", "--module", "users"], &env).ok();

    // Rollback removes records only, and needs --confirm without a terminal.
    let no = pgdbm(
        dir,
        &[
            "migrate",
            "rollback",
            "--module",
            "orders",
            "--version",
            "000",
        ],
        &env,
    );
    assert_eq!(no.code, 1);
    assert!(no.stderr.contains("--confirm"), "{}", no.stderr);
    pgdbm(
        dir,
        &[
            "migrate",
            "rollback",
            "-m",
            "orders",
            "-v",
            "000",
            "--confirm",
        ],
        &env,
    )
    .ok();
    assert_eq!(
        server
            .psql(&db, "SELECT count(*) FROM orders.schema_migrations")
            .unwrap(),
        "0"
    );

    let hist = pgdbm(
        dir,
        &["migrate", "history", "-m", "users", "--limit", "5"],
        &env,
    )
    .ok();
    assert!(hist.stdout.contains("001_users.sql"), "{}", hist.stdout);

    let sl = pgdbm(dir, &["schema", "list"], &env).ok();
    assert!(
        sl.stdout.contains("users (2 tables) - module: users"),
        "{}",
        sl.stdout
    );
    assert!(
        sl.stdout.contains("orders (2 tables) - module: orders"),
        "{}",
        sl.stdout
    );

    let tc = pgdbm(dir, &["db", "test-connection"], &env).ok();
    assert!(tc.stdout.contains("Connection successful"), "{}", tc.stdout);
    assert!(tc.stdout.contains(&db));

    let info = pgdbm(dir, &["db", "info"], &env).ok();
    assert!(
        info.stdout.contains("Version: PostgreSQL"),
        "{}",
        info.stdout
    );
    assert!(
        info.stdout.contains("- users (2 tables)"),
        "{}",
        info.stdout
    );
    assert!(info.stdout.contains(":***@"), "{}", info.stdout);

    let missing = pgdbm(dir, &["--env", "prod", "db", "test-connection"], &env);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("[environments.prod]"),
        "{}",
        missing.stderr
    );
    server.drop_database(&db).unwrap();
}

#[test]
fn connection_failures_exit_1_without_the_password() {
    let server = TestServer::shared().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let bad_port = format!(
        "postgresql://{}:{SECRET}@{}:1/postgres",
        server.user(),
        server.host()
    );
    let bad_user = format!(
        "postgresql://no_such_role_x:{SECRET}@{}:{}/postgres",
        server.host(),
        server.port()
    );
    for url in [bad_port, bad_user] {
        let r = pgdbm(
            tmp.path(),
            &["db", "test-connection"],
            &[("DATABASE_URL", &url)],
        );
        assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("Connection failed"), "{}", r.stderr);
        assert!(r.stderr.contains("DATABASE_URL"), "{}", r.stderr);
        assert!(
            !r.stderr.contains(SECRET) && !r.stdout.contains(SECRET),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn db_create_and_drop_on_a_fresh_name_without_config_file() {
    let server = TestServer::shared().unwrap();
    let name = unique_database_name("cli_new").unwrap();
    let url = server.connection_url(&name);
    let tmp = tempfile::tempdir().unwrap();
    let env = [("DATABASE_URL", url.as_str())];
    let exists = || {
        server
            .psql(
                "postgres",
                &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
            )
            .unwrap()
    };

    let c = pgdbm(tmp.path(), &["db", "create", "--confirm"], &env).ok();
    assert!(c.stdout.contains("Created database"), "{}", c.stdout);
    assert_eq!(exists(), "1");

    // Simple mode: ./migrations, module = schema (`public`), as Python.
    write(
        tmp.path(),
        "migrations/001_t.sql",
        "CREATE TABLE {{tables.t}} (x int);\n",
    );
    let h = pgdbm(tmp.path(), &["migrate", "history"], &env).ok();
    assert!(h.stdout.contains("No migrations applied"), "{}", h.stdout);
    pgdbm(tmp.path(), &["migrate", "apply"], &env).ok();
    // baseline records a file without running it.
    write(
        tmp.path(),
        "migrations/002_never.sql",
        "SELECT broken syntax here;\n",
    );
    let b = pgdbm(tmp.path(), &["migrate", "baseline"], &env).ok();
    assert!(b.stdout.contains("002_never.sql"), "{}", b.stdout);
    let st = pgdbm(tmp.path(), &["migrate", "status"], &env).ok();
    assert!(st.stdout.contains("Pending: 0"), "{}", st.stdout);
    assert_eq!(
        server
            .psql(
                &name,
                "SELECT module_name || ':' || filename FROM public.schema_migrations ORDER BY 1"
            )
            .unwrap(),
        "public:001_t.sql\npublic:002_never.sql"
    );

    let refused = pgdbm(tmp.path(), &["db", "drop"], &env);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("--confirm"), "{}", refused.stderr);
    assert_eq!(exists(), "1");

    pgdbm(tmp.path(), &["db", "drop", "--confirm"], &env).ok();
    assert_eq!(exists(), "0");
}

#[test]
fn usage_errors_exit_2_and_bad_config_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let r = pgdbm(
        tmp.path(),
        &["migrate", "apply", "--module", "a", "--all"],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);

    write(
        tmp.path(),
        "pgdbm.toml",
        "[modules.a]\nmigrations_path = \"a\"\ndepends_on = [\"b\"]\n\
         [modules.b]\nmigrations_path = \"b\"\ndepends_on = [\"a\"]\n\
         [environments.dev]\nurl = \"postgresql://u@127.0.0.1:1/x\"\n",
    );
    let cyc = pgdbm(tmp.path(), &["migrate", "apply"], &[]);
    assert_eq!(cyc.code, 1);
    assert!(cyc.stderr.contains("circular dependency"), "{}", cyc.stderr);

    let missing = pgdbm(
        tmp.path(),
        &["--config", "nope.toml", "schema", "list"],
        &[],
    );
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("nope.toml"), "{}", missing.stderr);
}
