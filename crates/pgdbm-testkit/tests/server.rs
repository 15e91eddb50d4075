//! A private TestServer against real PostgreSQL: start, query, restart, drop, bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use std::process::Command;

use common::{is_running, own_uid, postgres_uid, processes_in, uid_of, wait_gone};
use pgdbm_core::{Error, SslMode};
use pgdbm_testkit::{find_pg_bin, unique_database_name, TestServer, TestServerOptions};

#[test]
fn start_query_and_drop_leaves_nothing() {
    let server = TestServer::start().unwrap();
    assert!(server.is_local() && server.is_running());
    let version = server.psql("postgres", "SELECT version()").unwrap();
    assert!(version.starts_with("PostgreSQL "), "{version}");

    let pid = server.pid().unwrap();
    let dir = server.dir().unwrap().to_path_buf();
    assert!(server.data_dir().unwrap().join("PG_VERSION").is_file());
    assert_eq!(server.socket_dir(), Some(dir.as_path()));
    assert!(dir.join(format!(".s.PGSQL.{}", server.port())).exists());
    assert!(
        dir.starts_with(std::env::temp_dir()) || dir.starts_with("/dev/shm"),
        "{}",
        dir.display()
    );
    assert!(is_running(pid));
    assert!(processes_in(server.data_dir().unwrap()).contains(&pid));

    // As root the server runs as the `postgres` system user; otherwise as ourselves.
    let expected_uid = if own_uid() == 0 {
        postgres_uid()
    } else {
        own_uid()
    };
    assert_eq!(uid_of(pid), expected_uid);

    // The settings the issue asks for.
    let show = |s: &str| server.psql("postgres", &format!("SHOW {s}")).unwrap();
    assert_eq!(show("port"), server.port().to_string());
    assert_eq!(show("fsync"), "off");
    assert_eq!(show("synchronous_commit"), "off");
    assert_eq!(show("full_page_writes"), "off");
    assert_eq!(show("max_connections"), "300");
    assert_eq!(show("listen_addresses"), "127.0.0.1");
    assert_eq!(show("server_encoding"), "UTF8");
    assert_eq!(
        server.psql("postgres", "SELECT current_user").unwrap(),
        "postgres"
    );

    drop(server);
    assert!(wait_gone(pid, 10), "postmaster {pid} survived the drop");
    assert!(!dir.exists(), "{} survived the drop", dir.display());
    assert!(processes_in(&dir).is_empty());
}

#[test]
fn restart_keeps_port_and_data() {
    let server = TestServer::start().unwrap();
    let db = unique_database_name("test_restart_").unwrap();
    server.create_database(&db).unwrap();
    server
        .psql(
            &db,
            "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)",
        )
        .unwrap();
    let (port, old_pid) = (server.port(), server.pid().unwrap());

    server.restart().unwrap();
    let new_pid = server.pid().unwrap();
    assert_ne!(new_pid, old_pid);
    assert!(wait_gone(old_pid, 10));
    assert_eq!(server.port(), port);
    assert_eq!(server.psql(&db, "SELECT count(*) FROM t").unwrap(), "2");

    server.stop().unwrap();
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    assert!(wait_gone(new_pid, 10));
    let err = server.psql(&db, "SELECT 1").unwrap_err();
    assert!(matches!(err, Error::TestDatabase { .. }), "{err}");
    server.stop().unwrap(); // stopping twice is fine

    server.start_again().unwrap();
    assert_eq!(server.psql(&db, "SELECT sum(id) FROM t").unwrap(), "3");
    server.start_again().unwrap(); // starting a running server is fine
    server.drop_database(&db).unwrap();
    assert_eq!(
        server
            .psql(
                "postgres",
                &format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'")
            )
            .unwrap(),
        "0"
    );
}

#[test]
fn explicit_pg_bin_is_used() {
    let bin = find_pg_bin(None).unwrap();
    let server = TestServer::start_with(TestServerOptions::default().pg_bin(&bin)).unwrap();
    let exe = std::fs::read_link(format!("/proc/{}/exe", server.pid().unwrap())).unwrap();
    assert_eq!(
        exe,
        std::fs::canonicalize(bin.join("postgres")).unwrap(),
        "the server runs the binary of the chosen directory"
    );
    assert_eq!(server.psql("postgres", "SELECT 1").unwrap(), "1");

    let err = TestServer::start_with(TestServerOptions::default().pg_bin("/nonexistent/bin"))
        .unwrap_err();
    assert!(matches!(err, Error::TestDatabase { .. }));
    assert!(err.to_string().contains("/nonexistent/bin"), "{err}");
}

#[test]
fn server_settings_and_bad_options() {
    let server =
        TestServer::start_with(TestServerOptions::default().setting("work_mem", "8MB")).unwrap();
    assert_eq!(server.psql("postgres", "SHOW work_mem").unwrap(), "8MB");
    drop(server);

    // A setting the server rejects: a clear error with the server log, not a hang or panic.
    let err = TestServer::start_with(TestServerOptions::default().setting("no_such_setting", "1"))
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no_such_setting"), "{msg}");

    let err =
        TestServer::start_with(TestServerOptions::default().setting("a=b -c x", "1")).unwrap_err();
    assert!(matches!(err, Error::Configuration { .. }), "{err}");
}

#[test]
fn bad_database_names_are_errors_naming_them() {
    let server = TestServer::shared().unwrap();
    let long = "a".repeat(64);
    for name in [
        "",
        "1abc",
        "a-b",
        "x\"; DROP DATABASE postgres; --",
        "dbname=x",
        &long,
    ] {
        for result in [
            server.create_database(name),
            server.drop_database(name),
            server.psql(name, "SELECT 1").map(drop),
        ] {
            match result {
                Err(Error::TestDatabase {
                    name: Some(n),
                    message,
                    ..
                }) => {
                    assert_eq!(n, name);
                    assert!(message.contains("invalid database name"), "{message}");
                }
                other => panic!("expected an error naming {name:?}, got {other:?}"),
            }
        }
    }
    // The server is untouched.
    assert_eq!(server.psql("postgres", "SELECT 1").unwrap(), "1");

    // Server-side failures name the database too.
    let db = unique_database_name("test_dup_").unwrap();
    server.create_database(&db).unwrap();
    let err = server.create_database(&db).unwrap_err();
    assert!(
        matches!(&err, Error::TestDatabase { name: Some(n), .. } if *n == db),
        "{err}"
    );
    assert!(err.to_string().contains("already exists"), "{err}");
    let err = server.psql(&db, "SELEC 1").unwrap_err();
    assert!(err.to_string().contains("syntax error"), "{err}");
    server.drop_database(&db).unwrap();
    server.drop_database(&db).unwrap(); // IF EXISTS
}

#[test]
fn config_and_url_work_with_a_real_driver() {
    let server = TestServer::shared().unwrap();
    let db = unique_database_name("test_url_").unwrap();
    server.create_database(&db).unwrap();

    let config = server.config(&db);
    assert_eq!(config.host, "127.0.0.1");
    assert_eq!(config.port, server.port());
    assert_eq!(config.user, "postgres");
    assert_eq!(config.database, db);
    assert_eq!(config.ssl_mode, SslMode::Disable);
    assert_eq!(config.password.as_deref(), server.password());

    let url = server.connection_url(&db);
    assert_eq!(
        url,
        format!(
            "postgresql://postgres:{}@127.0.0.1:{}/{db}",
            server.password().unwrap(),
            server.port()
        )
    );
    assert_eq!(
        server.display_url(&db),
        format!("postgresql://postgres@127.0.0.1:{}/{db}", server.port())
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let current: String = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let row = client
            .query_one("SELECT current_database()", &[])
            .await
            .unwrap();
        row.get(0)
    });
    assert_eq!(current, db);
    server.drop_database(&db).unwrap();

    let debug = format!("{server:?}");
    assert!(
        !debug.contains("postgres@") && debug.contains("***"),
        "{debug}"
    );
}

/// Binary discovery honours `PGDBM_PG_BIN`: checked in child processes, so that no test
/// mutates the environment of this multi-threaded one.
#[test]
fn pg_bin_env_is_honoured() {
    let run = |value: &str| -> String {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["discovery_child", "--exact", "--ignored", "--nocapture"])
            .env("PGDBM_TESTKIT_DISCOVERY_CHILD", "1")
            .env("PGDBM_PG_BIN", value)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("DISCOVERY "))
            .unwrap_or_else(|| panic!("no DISCOVERY line in {stdout}"))
            .to_string()
    };
    let real = find_pg_bin(None).unwrap();
    assert_eq!(
        run(real.to_str().unwrap()),
        format!("ok {}", real.display())
    );
    let bad = run("/nonexistent/pgdbm-bin");
    assert!(bad.starts_with("err "), "{bad}");
    assert!(bad.contains("PGDBM_PG_BIN=/nonexistent/pgdbm-bin"), "{bad}");
    assert!(bad.contains("initdb and postgres"), "{bad}");
}

#[test]
#[ignore = "helper process of pg_bin_env_is_honoured"]
fn discovery_child() {
    if std::env::var_os("PGDBM_TESTKIT_DISCOVERY_CHILD").is_none() {
        return;
    }
    match find_pg_bin(None) {
        Ok(dir) => println!("DISCOVERY ok {}", dir.display()),
        Err(e) => println!("DISCOVERY err {}", e.to_string().replace('\n', " ")),
    }
}

#[test]
fn fixed_port_in_use_is_a_clear_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let err = TestServer::start_with(TestServerOptions::default().port(port)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::TestDatabase { .. }), "{msg}");
    assert!(
        msg.contains(&format!("port {port} is in use")),
        "the error names the port: {msg}"
    );
    drop(holder);

    // A free fixed port works.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = TestServer::start_with(TestServerOptions::default().port(port)).unwrap();
    assert_eq!(server.port(), port);
    assert_eq!(
        server.psql("postgres", "SHOW port").unwrap(),
        port.to_string()
    );
}

/// With `TEST_DB_HOST` set, `shared()` uses that server instead of starting one. Checked in a
/// child process (whose environment we set) against a private server of this test.
#[test]
fn test_db_host_selects_an_existing_server() {
    let server = TestServer::start().unwrap();
    let password = server.password().unwrap().to_string();
    let run = |port: u16| -> (bool, String) {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["external_child", "--exact", "--ignored", "--nocapture"])
            .env("PGDBM_TESTKIT_EXTERNAL_CHILD", "1")
            .env("TEST_DB_HOST", "127.0.0.1")
            .env("TEST_DB_PORT", port.to_string())
            .env("TEST_DB_USER", "postgres")
            .env("TEST_DB_PASSWORD", &password)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("EXTERNAL "))
            .unwrap_or_else(|| panic!("no EXTERNAL line in {stdout}"))
            .to_string();
        (out.status.success(), line)
    };
    let (ok, line) = run(server.port());
    assert!(ok, "{line}");
    assert_eq!(line, format!("ok port={} rows=1", server.port()));

    // No server there: an error naming the variables, not a throwaway server.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_, line) = run(unused);
    assert!(line.starts_with("err "), "{line}");
    assert!(line.contains("TEST_DB_HOST"), "{line}");
}

#[test]
#[ignore = "helper process of test_db_host_selects_an_existing_server"]
fn external_child() {
    if std::env::var_os("PGDBM_TESTKIT_EXTERNAL_CHILD").is_none() {
        return;
    }
    match TestServer::shared() {
        Ok(server) => {
            assert!(!server.is_local());
            assert_eq!(server.pid(), None);
            assert_eq!(server.data_dir(), None);
            assert!(server.stop().is_err());
            assert!(server.restart().is_err());
            let rows = server
                .psql(
                    "postgres",
                    "SELECT count(*) FROM pg_database WHERE datname = 'postgres'",
                )
                .unwrap();
            println!("EXTERNAL ok port={} rows={rows}", server.port());
        }
        Err(e) => println!("EXTERNAL err {}", e.to_string().replace('\n', " ")),
    }
}

/// `password_auth` checks passwords on TCP; `tls_files` serves TLS with the given certificate.
#[test]
fn password_auth_and_tls_options() {
    let certs = std::env::temp_dir().join(format!("pgdbm-testkit-tls-{}", std::process::id()));
    std::fs::create_dir_all(&certs).unwrap();
    let openssl = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.crt",
        ])
        .current_dir(&certs)
        .output()
        .expect("the openssl command (Debian: apt-get install openssl)");
    assert!(
        openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stderr)
    );
    let server = TestServer::start_with(
        TestServerOptions::default()
            .password_auth(true)
            .tls_files(certs.join("server.crt"), certs.join("server.key")),
    )
    .unwrap();
    std::fs::remove_dir_all(&certs).unwrap();

    let psql = |password: &str, sslmode: &str| {
        Command::new(find_pg_bin(None).unwrap().join("psql"))
            .args(["-X", "-A", "-t", "-c"])
            .arg("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .arg(format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode={sslmode}",
                server.port()
            ))
            .env("PGPASSWORD", password)
            .output()
            .unwrap()
    };
    // The right password over TLS: the session is encrypted.
    let ok = psql(server.password().unwrap(), "require");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "t");
    // A wrong password is refused (with trust auth it would be accepted).
    let bad = psql("not-the-password", "disable");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("password authentication failed"));
    // The testkit's own helpers still work (they pass the password).
    assert_eq!(server.psql("postgres", "SELECT 1").unwrap(), "1");
}

/// The throwaway server checks passwords on TCP (only its private socket directory is
/// trusted), the testkit refuses to drop a database it did not create, and a remote
/// `TEST_DB_HOST` needs `TEST_DB_ALLOW_REMOTE`.
#[test]
fn safety_password_marker_and_remote_host() {
    let server = TestServer::shared().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let connect = |password: &str| {
            let mut c = tokio_postgres::Config::new();
            c.host("127.0.0.1")
                .port(server.port())
                .user("postgres")
                .dbname("postgres")
                .password(password);
            async move {
                c.connect(tokio_postgres::NoTls)
                    .await
                    .map(|(client, _)| client)
            }
        };
        let err = match connect("").await {
            Ok(_) => panic!("TCP without the password was accepted"),
            Err(e) => e,
        };
        assert!(format!("{err:?}").contains("password"), "{err:?}");
        assert!(connect("postgres").await.is_err());
        assert!(connect(server.password().unwrap()).await.is_ok());
    });

    // An unmarked database (created behind the testkit's back) is not dropped.
    let name = unique_database_name("unmarked_").unwrap();
    server
        .psql("postgres", &format!("CREATE DATABASE {name}"))
        .unwrap();
    let err = server.drop_database(&name).unwrap_err();
    assert!(err.to_string().contains("refusing to drop"), "{err}");
    assert_eq!(
        server
            .psql(
                "postgres",
                &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'")
            )
            .unwrap(),
        "1"
    );
    server
        .psql("postgres", &format!("DROP DATABASE {name}"))
        .unwrap();

    // A marked one is dropped, also from async code.
    let marked = unique_database_name("marked_").unwrap();
    rt.block_on(async {
        server.create_database_async(&marked).await.unwrap();
        server.drop_database_async(&marked).await.unwrap();
    });
    assert_eq!(
        server
            .psql(
                "postgres",
                &format!("SELECT count(*) FROM pg_database WHERE datname = '{marked}'")
            )
            .unwrap(),
        "0"
    );

    // A remote host without the opt-in is a configuration error naming the variable.
    let mut config = pgdbm_testkit::TestConfig::default();
    config.host = "192.0.2.1".to_string();
    if std::env::var_os("TEST_DB_ALLOW_REMOTE").is_none() {
        let err = TestServer::external(&config).unwrap_err();
        assert!(err.to_string().contains("TEST_DB_ALLOW_REMOTE"), "{err}");
    }
}
