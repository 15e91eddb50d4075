//! Issue 10, shared pools as in Python pgdbm 0.5: the shared pool's `search_path` pin (verified
//! at creation with the reference's error), schema views that fail closed, `close()` that never
//! closes a pool the manager does not own, the schema created on connect (with a clear error
//! when the role may not), `ensure_schema` and `qualify_table_name`. Both backends.

use pgdbm::{Config, Database, Error, Pool};
use pgdbm_integration_tests::{both_backends, fresh_config};
use pgdbm_testkit::TestServer;

/// A fresh database with `public.items` and `tenant.items` holding different rows.
async fn setup<P: Pool>(prefix: &str) -> Config {
    let config = fresh_config(prefix).unwrap();
    let admin = Database::<P>::connect(config.clone()).await.unwrap();
    admin
        .batch_execute(
            "CREATE TABLE public.items (v text); INSERT INTO public.items VALUES ('public');
             CREATE SCHEMA tenant; CREATE TABLE tenant.items (v text);
             INSERT INTO tenant.items VALUES ('tenant');",
        )
        .await
        .unwrap();
    admin.close().await;
    config
}

async fn schema_views_fail_closed<P: Pool>() {
    let config = setup::<P>("sp_pin").await;
    let pool = Database::<P>::create_shared_pool(&config).await.unwrap();
    let base = Database::<P>::from_pool(pool.clone(), config.clone()).unwrap();
    let tenant = base.with_schema("tenant").unwrap();

    // Unqualified `items` through a schema view fails instead of reading public.items.
    let e = tenant
        .fetch_value::<String, _>("SELECT v FROM items", &[])
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), Some("42P01"), "{e}");
    // Templates qualify, and built-ins stay reachable (pg_catalog is searched).
    let v: Option<String> = tenant
        .fetch_value("SELECT v FROM {{tables.items}}", &[])
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("tenant"));
    let n: Option<i64> = tenant
        .fetch_value("SELECT count(*) FROM pg_class WHERE relname = 'items'", &[])
        .await
        .unwrap();
    assert_eq!(n, Some(2));
    let sp: Option<String> = tenant.fetch_value("SHOW search_path", &[]).await.unwrap();
    assert_eq!(sp.as_deref(), Some("pg_catalog"));
    pool.close().await;

    // Without the pin, unqualified names resolve normally (Python's shared_pool_search_path=None).
    let mut unpinned = config.clone();
    unpinned.shared_pool_search_path = None;
    let pool = Database::<P>::create_shared_pool(&unpinned).await.unwrap();
    let view = Database::<P>::from_pool(pool.clone(), unpinned)
        .unwrap()
        .with_schema("tenant")
        .unwrap();
    let v: Option<String> = view.fetch_value("SELECT v FROM items", &[]).await.unwrap();
    assert_eq!(v.as_deref(), Some("public"));
    pool.close().await;
}
both_backends!(fail_closed, schema_views_fail_closed);

async fn pin_not_in_effect_is_refused<P: Pool>() {
    let config = setup::<P>("sp_verify").await;
    // A search_path in the config wins over the pin (as Python's setdefault), so the pin is not
    // in effect: refused with the reference's error.
    for tweak in [
        (|c: &mut Config| {
            c.server_settings
                .insert("search_path".into(), "public".into());
        }) as fn(&mut Config),
        |c: &mut Config| c.schema = Some("tenant".into()),
    ] {
        let mut c = config.clone();
        tweak(&mut c);
        match Database::<P>::create_shared_pool(&c).await {
            Err(Error::Configuration { field, message }) => {
                assert_eq!(field, "shared_pool_search_path");
                assert!(
                    message.starts_with(
                        "Shared pool search_path pin was not applied: requested 'pg_catalog', \
                         connection reports '"
                    ),
                    "{message}"
                );
                assert!(message.contains("ALTER ROLE <role> SET search_path TO pg_catalog;"));
                assert!(message.contains("shared_pool_search_path = None"));
            }
            Ok(_) => panic!("a pin that is not in effect was accepted"),
            Err(other) => panic!("unexpected {other}"),
        }
    }
    // An invalid pin never reaches the server.
    let mut c = config.clone();
    c.shared_pool_search_path = Some("public; DROP TABLE items".into());
    match Database::<P>::create_shared_pool(&c).await {
        Err(Error::Configuration { field, message }) => {
            assert_eq!(field, "shared_pool_search_path");
            assert!(message.starts_with("Invalid search_path"), "{message}");
        }
        other => panic!("unexpected {:?}", other.err()),
    }
    // Another pin: the check compares entry by entry, ignoring the server's spacing
    // (`tenant,public` is reported as `tenant, public`).
    let mut c = config.clone();
    c.shared_pool_search_path = Some("tenant,public".into());
    let pool = Database::<P>::create_shared_pool(&c).await.unwrap();
    let db = Database::<P>::from_pool(pool.clone(), c).unwrap();
    let v: Option<String> = db.fetch_value("SELECT v FROM items", &[]).await.unwrap();
    assert_eq!(v.as_deref(), Some("tenant"));
    pool.close().await;
}
both_backends!(pin_verified, pin_not_in_effect_is_refused);

async fn close_never_closes_a_pool_it_does_not_own<P: Pool>() {
    let config = setup::<P>("sp_close").await;
    let pool = Database::<P>::create_shared_pool(&config).await.unwrap();
    let base = Database::<P>::from_pool(pool.clone(), config.clone()).unwrap();
    let a = base.with_schema("tenant").unwrap();
    let b = base.with_schema("public").unwrap();
    a.close().await;
    base.close().await;
    let v: Option<String> = b
        .fetch_value("SELECT v FROM {{tables.items}}", &[])
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("public"));
    assert!(a.execute("SELECT 1", &[]).await.is_ok());
    pool.close().await;
    assert!(
        b.execute("SELECT 1", &[]).await.is_err(),
        "the owner closed it"
    );

    // A manager that made its pool owns it; its views do not, its clones do.
    let owner = Database::<P>::connect(config.clone()).await.unwrap();
    let view = owner.with_schema("tenant").unwrap();
    view.close().await;
    assert!(owner.execute("SELECT 1", &[]).await.is_ok());
    let timed = owner.with_timeout(None);
    timed.close().await;
    assert!(owner.execute("SELECT 1", &[]).await.is_ok());
    owner.clone().close().await;
    assert!(owner.execute("SELECT 1", &[]).await.is_err());
    assert!(view.execute("SELECT 1", &[]).await.is_err());
}
both_backends!(close_ownership, close_never_closes_a_pool_it_does_not_own);

async fn schema_created_on_connect<P: Pool>() {
    let mut config = fresh_config("sp_create").unwrap();
    config.schema = Some("brand_new".into());
    let db = Database::<P>::connect(config.clone()).await.unwrap();
    db.execute("CREATE TABLE {{tables.t}} (id int)", &[])
        .await
        .unwrap();
    let n: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'brand_new'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, Some(1));
    // ensure_schema on a view; qualify_table_name.
    let other = db.with_schema("other_new").unwrap();
    other.ensure_schema().await.unwrap();
    other.ensure_schema().await.unwrap();
    other
        .execute("CREATE TABLE {{tables.t}} (id int)", &[])
        .await
        .unwrap();
    assert_eq!(
        other.qualify_table_name("t").unwrap(),
        "\"other_new\".\"t\""
    );
    assert_eq!(other.qualify_table_name("x.t").unwrap(), "\"x\".\"t\"");
    assert_eq!(
        db.without_schema().qualify_table_name("t").unwrap(),
        "\"t\""
    );
    assert!(other.qualify_table_name("t; DROP").is_err());
    db.without_schema().ensure_schema().await.unwrap();

    // A role without CREATE on the database: an existing schema is fine, a new one is a clear
    // error.
    let server = TestServer::shared().unwrap();
    let role = format!("nc_{}", config.database);
    server
        .psql(
            &config.database,
            // TCP needs a password (SCRAM): the server user's, since only `user` changes.
            &format!(
                "CREATE ROLE \"{role}\" LOGIN PASSWORD '{}'; \
                 GRANT USAGE ON SCHEMA brand_new TO \"{role}\"",
                server.password().unwrap_or_default().replace('\'', "''")
            ),
        )
        .unwrap();
    let mut limited = config.clone();
    limited.user = role.clone();
    let ok = Database::<P>::connect(limited.clone()).await.unwrap();
    ok.close().await;
    limited.schema = Some("not_allowed".into());
    match Database::<P>::connect(limited).await {
        Err(Error::Schema { message, schema }) => {
            assert_eq!(schema.as_deref(), Some("not_allowed"));
            assert!(
                message.contains("42501") && message.contains(&role) && message.contains("CREATE"),
                "{message}"
            );
        }
        Ok(_) => panic!("a role without CREATE created a schema"),
        Err(other) => panic!("unexpected {other}"),
    }
    db.close().await;
}
both_backends!(schema_on_connect, schema_created_on_connect);
