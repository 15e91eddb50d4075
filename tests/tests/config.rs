//! Issue 10, Config: the fields are the one source of truth. `from_env` then changing any field
//! connects with the changed value; URL parameters and fields follow "last write wins"; DETAIL
//! of a query error is shown only with `log_parameters`. Real servers, both backends.

use std::sync::OnceLock;

use pgdbm::{Config, Database, Pool, Result, SslMode};
use pgdbm_integration_tests::both_backends;
use pgdbm_testkit::{unique_database_name, TestServer, TestServerOptions};

/// `Config::from_env` as it reads `DATABASE_URL` (through the lookup, so tests do not mutate the
/// process environment).
fn from_env(url: &str) -> Config {
    let url = url.to_string();
    Config::from_env_with(move |k| (k == "DATABASE_URL").then(|| url.clone())).unwrap()
}

/// A small pool that tries once.
async fn connect<P: Pool>(mut c: Config) -> Result<Database<P>> {
    c.min_connections = 0;
    c.max_connections = 1;
    c.retry_attempts = 1;
    let db = Database::<P>::connect(c).await?;
    // Make sure a connection really is opened with these settings.
    db.execute("SELECT 1", &[]).await?;
    Ok(db)
}

async fn text<P: Pool>(db: &Database<P>, sql: &str) -> String {
    db.fetch_value::<String, _>(sql, &[])
        .await
        .unwrap()
        .unwrap()
}

/// A database on the shared server, its URL carrying parameters the test then overrides.
fn database(prefix: &str) -> (&'static TestServer, String) {
    let server = TestServer::shared().unwrap();
    let name = unique_database_name(prefix).unwrap();
    server.create_database(&name).unwrap();
    (server, name)
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn from_env_then_changing_a_field_connects_with_it<P: Pool>() {
    let (server, db_a) = database("cfg_env");
    let db_b = unique_database_name("cfg_env_b").unwrap();
    server.create_database(&db_b).unwrap();
    let role = format!("r_{db_a}");
    // The same password as the server's user: TCP needs one (SCRAM), and the test changes
    // only the user field.
    let password = server.password().unwrap_or_default().replace('\'', "''");
    server
        .psql(
            &db_a,
            &format!("CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'"),
        )
        .unwrap();
    let url = format!(
        "{}?sslmode=disable&application_name=from_url&options=-c%20work_mem%3D8MB",
        server.connection_url(&db_a)
    );
    let base = from_env(&url);

    // Unchanged: everything from the URL.
    let db = connect::<P>(base.clone()).await.unwrap();
    assert_eq!(text(&db, "SELECT current_database()::text").await, db_a);
    assert_eq!(text(&db, "SHOW application_name").await, "from_url");
    assert_eq!(text(&db, "SHOW work_mem").await, "8MB");
    db.close().await;

    // The case: the database.
    let mut c = base.clone();
    c.database = db_b.clone();
    let db = connect::<P>(c).await.unwrap();
    assert_eq!(text(&db, "SELECT current_database()::text").await, db_b);
    db.close().await;

    // The user.
    let mut c = base.clone();
    c.user = role.clone();
    let db = connect::<P>(c).await.unwrap();
    assert_eq!(text(&db, "SELECT current_user::text").await, role);
    db.close().await;

    // application_name and a server setting the URL's `options` gave.
    let mut c = base.clone();
    c.application_name = Some("changed".into());
    c.server_settings.insert("work_mem".into(), "16MB".into());
    let db = connect::<P>(c).await.unwrap();
    assert_eq!(text(&db, "SHOW application_name").await, "changed");
    assert_eq!(text(&db, "SHOW work_mem").await, "16MB");
    db.close().await;

    // The schema (search_path).
    let mut c = base.clone();
    c.schema = Some("cfg_schema".into());
    let db = connect::<P>(c).await.unwrap();
    assert!(text(&db, "SHOW search_path").await.contains("cfg_schema"));
    db.close().await;

    // The port and the host: connecting fails at the changed address.
    let mut c = base.clone();
    let port = closed_port();
    c.port = port;
    let e = connect::<P>(c)
        .await
        .expect_err("a closed port cannot work");
    assert!(e.to_string().contains(&port.to_string()), "{e}");
    let mut c = base.clone();
    c.host = "127.0.0.2".into();
    c.port = port;
    let e = connect::<P>(c).await.expect_err("nothing listens there");
    assert!(e.to_string().contains("127.0.0.2"), "{e}");

    // sslmode: the URL said disable; the server has no TLS, so `require` must fail.
    let mut c = base.clone();
    c.ssl_mode = SslMode::Require;
    assert!(
        connect::<P>(c).await.is_err(),
        "ssl_mode = Require was ignored"
    );
}
both_backends!(
    from_env_then_changing_a_field,
    from_env_then_changing_a_field_connects_with_it
);

/// A server that checks passwords, shared by the password tests of this file.
fn password_server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        TestServer::start_with(TestServerOptions::default().password_auth(true)).unwrap()
    })
}

async fn from_env_then_changing_the_password_uses_it<P: Pool>() {
    let server = password_server();
    let name = unique_database_name("cfg_pw").unwrap();
    server.create_database(&name).unwrap();
    let role = format!("r_{name}");
    server
        .psql(
            &name,
            &format!("CREATE ROLE \"{role}\" LOGIN PASSWORD 'right horse battery'"),
        )
        .unwrap();
    let mut url_config = server.config(&name);
    url_config.user = role.clone();
    url_config.password = Some("right horse battery".into());
    let base = from_env(&url_config.dsn().unwrap());
    let db = connect::<P>(base.clone()).await.unwrap();
    assert_eq!(text(&db, "SELECT current_user::text").await, role);
    db.close().await;

    let mut c = base.clone();
    c.password = Some("wrong horse battery".into());
    let e = connect::<P>(c)
        .await
        .expect_err("the changed password must be used");
    let msg = e.to_string();
    assert!(msg.contains("28P01"), "{msg}");
    assert!(!msg.contains("horse"), "{msg}");
}
both_backends!(
    from_env_then_changing_the_password,
    from_env_then_changing_the_password_uses_it
);

/// Where the docs say an explicit URL parameter equal to the default wins (`apply_url` and
/// `ConfigBuilder::url` applied after the field), and where it does not (the field written
/// after `from_url`/`from_env`, or a URL that does not mention the parameter).
async fn url_parameter_equal_to_default_wins_only_when_written_last<P: Pool>() {
    let (server, name) = database("cfg_lww");
    let url = server.connection_url(&name);
    // `pgdbm` is application_name's default.
    let url_default_app = format!("{url}?application_name=pgdbm");
    let base = server.config(&name);

    // 1. Field first, then a URL stating the default explicitly: the URL wins.
    let mut c = base.clone();
    c.application_name = Some("custom".into());
    c.apply_url(&url_default_app).unwrap();
    let db = connect::<P>(c).await.unwrap();
    assert_eq!(text(&db, "SHOW application_name").await, "pgdbm");
    db.close().await;
    let c = Config::builder()
        .with(|c| *c = base.clone())
        .application_name("custom")
        .url(&url_default_app)
        .build()
        .unwrap();
    let db = connect::<P>(c).await.unwrap();
    assert_eq!(text(&db, "SHOW application_name").await, "pgdbm");
    db.close().await;

    // 2. URL first, then the field: the field wins.
    let mut c = from_env(&url_default_app);
    c.application_name = Some("custom".into());
    let db = connect::<P>(c).await.unwrap();
    assert_eq!(text(&db, "SHOW application_name").await, "custom");
    db.close().await;
    let c = Config::builder()
        .url(&url_default_app)
        .application_name("custom")
        .build()
        .unwrap();
    let db = connect::<P>(c).await.unwrap();
    assert_eq!(text(&db, "SHOW application_name").await, "custom");
    db.close().await;

    // 3. A URL that does not mention the parameter leaves the field alone.
    let mut c = base.clone();
    c.application_name = Some("custom".into());
    c.apply_url(&url).unwrap();
    let db = connect::<P>(c).await.unwrap();
    assert_eq!(text(&db, "SHOW application_name").await, "custom");
    db.close().await;
}
both_backends!(
    url_parameter_equal_to_default,
    url_parameter_equal_to_default_wins_only_when_written_last
);

async fn detail_shown_only_with_log_parameters<P: Pool>() {
    let (server, name) = database("cfg_detail");
    for log_parameters in [false, true] {
        let mut c = server.config(&name);
        c.log_parameters = log_parameters;
        let db = connect::<P>(c).await.unwrap();
        db.execute(
            "CREATE TABLE IF NOT EXISTS users (email TEXT PRIMARY KEY)",
            &[],
        )
        .await
        .unwrap();
        db.execute("DELETE FROM users", &[]).await.unwrap();
        db.execute("INSERT INTO users VALUES ('alice@x')", &[])
            .await
            .unwrap();
        for params in [0, 1] {
            let e = if params == 0 {
                db.execute("INSERT INTO users VALUES ('alice@x')", &[])
                    .await
            } else {
                db.execute("INSERT INTO users VALUES ($1)", &[&"alice@x"])
                    .await
            }
            .unwrap_err();
            let q = e.as_query().expect("a query error");
            assert!(q.detail.as_deref().unwrap_or("").contains("alice@x"));
            assert_eq!(q.values_shown, log_parameters);
            // The whole error chain, as error reporters print it.
            let mut chain = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                chain.push_str(&format!(": {s}"));
                src = s.source();
            }
            for out in [e.to_string(), format!("{e:?}"), chain] {
                // The DETAIL (`Key (email)=(alice@x) already exists.`), not the query text.
                assert_eq!(
                    out.contains("Key (email)=(alice@x)"),
                    log_parameters,
                    "{out}"
                );
                if params == 1 {
                    assert_eq!(out.contains("alice@x"), log_parameters, "{out}");
                }
            }
        }
        db.close().await;
    }
}
both_backends!(
    detail_and_log_parameters,
    detail_shown_only_with_log_parameters
);
