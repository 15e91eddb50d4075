//! Test databases and helpers over any [`Pool`]: the port of Python pgdbm's `AsyncTestDatabase`,
//! `DatabaseTestCase` and its pytest fixtures.

use std::collections::BTreeMap;
use std::fmt;

use pgdbm_core::ident::{parse_qualified_name, quote_identifier, validate_identifier};
use pgdbm_core::{Config, Database, Error, Param, Pool, Result, Row, RowOf};

use crate::names::random_u32;
use crate::{unique_database_name, TestConfig, TestServer};

/// A database created for one test, dropped when the value is dropped (Python:
/// `AsyncTestDatabase`).
///
/// Its name is `<prefix><suffix>_<pid>_<counter>_<random>`, so tests running in parallel never
/// share one. Dropping it drops the database (`WITH (FORCE)`, closing any connection left open);
/// call [`keep`](TestDatabase::keep) to leave it for inspection. When it is dropped during a
/// panic (a failing test), the database is kept and its name and a password-free URL are
/// printed to stderr.
///
/// ```
/// use pgdbm_core::{Database, Pool};
/// use pgdbm_testkit::{TestDatabase, TestHelpers};
///
/// // Generic over the pool backend, e.g. `pgdbm::DeadpoolPool`.
/// async fn users_test<P: Pool>() -> pgdbm_core::Result<()> {
///     let test_db = TestDatabase::create(Some("users")).await?;
///     let db: Database<P> = test_db.manager(Some("app")).await?;
///     db.execute(
///         "CREATE TABLE {{tables.users}} (id SERIAL, email TEXT, full_name TEXT, is_active BOOL)",
///         &[],
///     )
///     .await?;
///     let helpers = TestHelpers::new(&db);
///     helpers.create_test_user("a@example.com", &[]).await?;
///     assert_eq!(helpers.count_rows("users", None).await?, 1);
///     db.close().await;
///     Ok(()) // the database is dropped with `test_db`
/// }
/// ```
pub struct TestDatabase {
    server: &'static TestServer,
    name: String,
    keep: bool,
    /// Prefix, `verbose` and `log_sql` it was made with.
    settings: TestConfig,
}

impl fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .field("host", &self.server.host())
            .field("port", &self.server.port())
            .field("keep", &self.keep)
            .finish()
    }
}

impl TestDatabase {
    /// Creates a fresh database on the shared test server ([`TestServer::shared`]), named with
    /// the optional `suffix` (Python: `create_test_database(suffix)`).
    ///
    /// The name starts with [`TestConfig::test_prefix`](crate::TestConfig::test_prefix) (from
    /// the environment; default `test_`). Creation goes through the testkit's admin thread and
    /// does not block the runtime.
    pub async fn create(suffix: Option<&str>) -> Result<TestDatabase> {
        Self::create_with(TestServer::shared()?, TestConfig::from_env()?, suffix).await
    }

    /// Creates a fresh database on `server` with explicit settings (Python:
    /// `AsyncTestDatabase(config).create_test_database(suffix)`): the name starts with
    /// `settings.test_prefix`, `settings.verbose` logs the creation, the drop and each
    /// manager's query count, and `settings.log_sql` logs the SQL of the managers made by
    /// [`manager`](Self::manager). (`settings`' host, port, user and password choose a server
    /// only through [`TestServer::external`] or `TEST_DB_HOST`.)
    pub async fn create_with(
        server: &'static TestServer,
        settings: TestConfig,
        suffix: Option<&str>,
    ) -> Result<TestDatabase> {
        let name = Self::new_name(&settings, suffix)?;
        server.create_database_async(&name).await?;
        Ok(Self::created(server, name, settings))
    }

    /// Creates a fresh database on `server`, blocking the calling thread (for synchronous
    /// code; async code should use [`create`](Self::create)).
    pub fn create_on(server: &'static TestServer, suffix: Option<&str>) -> Result<TestDatabase> {
        let settings = TestConfig::from_env()?;
        let name = Self::new_name(&settings, suffix)?;
        server.create_database(&name)?;
        Ok(Self::created(server, name, settings))
    }

    /// `<test_prefix>[<suffix>_]<unique part>`, the suffix checked as an identifier.
    pub(crate) fn new_name(config: &TestConfig, suffix: Option<&str>) -> Result<String> {
        let mut prefix = config.test_prefix.clone();
        if let Some(s) = suffix {
            validate_identifier(s)?;
            prefix.push_str(s);
            prefix.push('_');
        }
        unique_database_name(&prefix)
    }

    /// Takes charge of the (already created and marked) database `name`.
    pub(crate) fn created(
        server: &'static TestServer,
        name: String,
        settings: TestConfig,
    ) -> TestDatabase {
        if settings.verbose {
            tracing::info!(target: "pgdbm::testkit", database = %name,
                url = %server.display_url(&name), "created test database");
        }
        TestDatabase {
            server,
            name,
            keep: false,
            settings,
        }
    }

    /// The settings it was made with (prefix, `verbose`, `log_sql`).
    pub fn settings(&self) -> &TestConfig {
        &self.settings
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server it lives on.
    pub fn server(&self) -> &'static TestServer {
        self.server
    }

    /// Keeps the database after the test (for inspection); it is not dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// A config for this database (Python: `get_test_db_config`), with the given `schema` and
    /// a small pool suited to tests: min [`TEST_POOL_MIN_CONNECTIONS`](crate::TEST_POOL_MIN_CONNECTIONS)
    /// (0), max [`TEST_POOL_MAX_CONNECTIONS`](crate::TEST_POOL_MAX_CONNECTIONS) (2); see
    /// [`TestServer::test_config`].
    pub fn config(&self, schema: Option<&str>) -> Config {
        self.server.test_config(&self.name, schema)
    }

    /// A connected manager on this database (Python: `get_test_db_manager`), with the pool of
    /// [`config`](Self::config), counted against the server's connection cap and logging its
    /// SQL when `log_sql` is on (see [`TestServer::manager_with`]). With a schema, the schema is
    /// created first if missing.
    pub async fn manager<P: Pool>(&self, schema: Option<&str>) -> Result<Database<P>> {
        self.manager_with::<P>(self.config(schema)).await
    }

    /// A connected manager from a config (e.g. [`config`](TestDatabase::config) with changes),
    /// counted against the connection cap like [`manager`](Self::manager).
    pub async fn manager_with<P: Pool>(&self, config: Config) -> Result<Database<P>> {
        self.server.manager_with(config, &self.settings).await
    }

    /// Drops the database now (Python: `drop_test_database`), blocking the calling thread.
    pub fn drop_database(mut self) -> Result<()> {
        self.keep = true; // Drop has nothing left to do
        self.log_drop();
        self.server.drop_database(&self.name)
    }

    /// Drops the database now without blocking the runtime (prefer this in async tests: the
    /// implicit drop on `Drop` waits for the admin thread).
    pub async fn drop_async(mut self) -> Result<()> {
        self.keep = true; // Drop has nothing left to do
        self.log_drop();
        self.server.drop_database_async(&self.name).await
    }

    fn log_drop(&self) {
        if self.settings.verbose {
            tracing::info!(target: "pgdbm::testkit", database = %self.name,
                "dropping test database");
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.keep && self.settings.verbose {
            tracing::info!(target: "pgdbm::testkit", database = %self.name,
                url = %self.server.display_url(&self.name), "kept test database");
        }
        if !self.keep && std::thread::panicking() {
            // The test failed: keep its database for inspection and say where it is.
            eprintln!(
                "pgdbm-testkit: test panicked; kept its database {} ({})",
                self.name,
                self.server.display_url(&self.name)
            );
            return;
        }
        if !self.keep {
            self.log_drop();
            if let Err(e) = self.server.drop_database(&self.name) {
                tracing::warn!(target: "pgdbm::testkit", database = %self.name, error = %e,
                    "could not drop the test database");
            }
        }
    }
}

/// One row of a [`snapshot_table`]: column name to its value as text (`None` for NULL).
pub type SnapshotRow = BTreeMap<String, Option<String>>;

/// Every row of `table` as text, ordered by `order_by` (a comma-separated list of columns, each
/// optionally followed by `ASC`/`DESC`) or by the whole row, to compare a table before and after
/// an operation (Python: `snapshot_table`).
pub async fn snapshot_table<P: Pool>(
    db: &Database<P>,
    table: &str,
    order_by: Option<&str>,
) -> Result<Vec<SnapshotRow>> {
    let qualified = qualify(db, table)?;
    let order = match order_by {
        Some(spec) => order_clause(spec)?,
        None => "t::text".to_string(),
    };
    let sql = format!(
        "SELECT r.n, e.key, e.value FROM \
         (SELECT row_number() OVER (ORDER BY {order}) AS n, to_jsonb(t) AS j FROM {qualified} t) r \
         CROSS JOIN LATERAL jsonb_each_text(r.j) e ORDER BY r.n, e.key"
    );
    let rows = db.fetch_all(&sql, &[]).await?;
    let mut out: Vec<SnapshotRow> = Vec::new();
    let mut current: Option<i64> = None;
    for row in &rows {
        let n: i64 = row.try_get(0usize)?;
        let key: String = row.try_get(1usize)?;
        let value: Option<String> = row.try_get(2usize)?;
        if current != Some(n) {
            out.push(SnapshotRow::new());
            current = Some(n);
        }
        if let Some(last) = out.last_mut() {
            last.insert(key, value);
        }
    }
    Ok(out)
}

fn order_clause(spec: &str) -> Result<String> {
    let mut parts = Vec::new();
    for item in spec.split(',') {
        let mut words = item.split_whitespace();
        let column = words.next().ok_or_else(|| {
            Error::schema(
                spec,
                "empty column in order_by; use e.g. \"id\" or \"name DESC, id\"",
            )
        })?;
        let mut clause = quote_identifier(column)?;
        match words.next().map(str::to_ascii_uppercase).as_deref() {
            None => {}
            Some(dir @ ("ASC" | "DESC")) => {
                clause.push(' ');
                clause.push_str(dir);
            }
            Some(other) => {
                return Err(Error::schema(
                    spec,
                    format!(
                        "unexpected `{other}` in order_by; only ASC or DESC may follow a column"
                    ),
                ))
            }
        }
        if words.next().is_some() {
            return Err(Error::schema(
                spec,
                "order_by items are `column [ASC|DESC]`",
            ));
        }
        parts.push(clause);
    }
    Ok(parts.join(", "))
}

fn qualify<P: Pool>(db: &Database<P>, table: &str) -> Result<String> {
    let (schema, name) = parse_qualified_name(table)?;
    let name = quote_identifier(&name)?;
    Ok(match schema.as_deref().or(db.schema()) {
        Some(s) => format!("{}.{name}", quote_identifier(s)?),
        None => name,
    })
}

/// Test helpers on a manager (Python: `DatabaseTestCase`). Table names may be `"t"` (the
/// manager's schema) or `"schema.t"`; they are validated, never pasted into SQL unchecked.
#[derive(Debug, Clone)]
pub struct TestHelpers<P: Pool> {
    db: Database<P>,
}

impl<P: Pool> TestHelpers<P> {
    /// Helpers on `db`.
    pub fn new(db: &Database<P>) -> Self {
        TestHelpers { db: db.clone() }
    }

    /// Inserts a user into the `users` table and returns the inserted row (Python:
    /// `create_test_user(email=None, **kwargs)`), with the reference's defaults: `email`
    /// `None` becomes `test_<8 hex digits>@example.com`, `full_name` is `"Test User"` and
    /// `is_active` is `true` unless `fields` gives them; further `fields` are more columns.
    /// The table needs `email`, `full_name` and `is_active` columns (as
    /// [`test_db_with_tables`](crate::test_db_with_tables) makes it).
    ///
    /// `email` may be a `&str` or an `Option<&str>`.
    pub async fn create_test_user<'e>(
        &self,
        email: impl Into<Option<&'e str>>,
        fields: &[(&str, Param<'_>)],
    ) -> Result<RowOf<P::Connection>> {
        let email: String = match email.into() {
            Some(e) => e.to_string(),
            None => format!("test_{:08x}@example.com", random_u32()),
        };
        let full_name = "Test User";
        let is_active = true;
        let mut columns = vec![quote_identifier("email")?];
        let mut params: Vec<Param<'_>> = vec![&email];
        let given = |c: &str| fields.iter().any(|(n, _)| *n == c);
        if !given("full_name") {
            columns.push(quote_identifier("full_name")?);
            params.push(&full_name);
        }
        if !given("is_active") {
            columns.push(quote_identifier("is_active")?);
            params.push(&is_active);
        }
        for (name, value) in fields {
            columns.push(quote_identifier(name)?);
            params.push(*value);
        }
        let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({}) RETURNING *",
            qualify(&self.db, "users")?,
            columns.join(", "),
            placeholders.join(", ")
        );
        self.db
            .fetch_one(&sql, &params)
            .await?
            .ok_or_else(|| Error::TestDatabase {
                name: None,
                message: "INSERT ... RETURNING returned no row".to_string(),
                source: None,
            })
    }

    /// Rows in `table`, optionally filtered by a trusted SQL `where` clause (Python:
    /// `count_rows(table, where)`). The clause is test code's own SQL: never pass user input.
    pub async fn count_rows(&self, table: &str, where_clause: Option<&str>) -> Result<i64> {
        let mut sql = format!("SELECT count(*) FROM {}", qualify(&self.db, table)?);
        if let Some(w) = where_clause {
            sql.push_str(" WHERE ");
            sql.push_str(w);
        }
        Ok(self.db.fetch_value(&sql, &[]).await?.unwrap_or(0))
    }

    /// Whether `table` exists (Python: `table_exists`).
    pub async fn table_exists(&self, table: &str) -> Result<bool> {
        self.db.table_exists(table).await
    }

    /// Empties `table`, optionally with `CASCADE` (Python: `truncate_table`).
    pub async fn truncate_table(&self, table: &str, cascade: bool) -> Result<()> {
        let sql = format!(
            "TRUNCATE TABLE {}{}",
            qualify(&self.db, table)?,
            if cascade { " CASCADE" } else { "" }
        );
        self.db.execute(&sql, &[]).await.map(drop)
    }

    /// [`snapshot_table`] on this manager.
    pub async fn snapshot_table(
        &self,
        table: &str,
        order_by: Option<&str>,
    ) -> Result<Vec<SnapshotRow>> {
        snapshot_table(&self.db, table, order_by).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_by_is_validated() {
        assert_eq!(order_clause("id").unwrap(), "\"id\"");
        assert_eq!(
            order_clause("name desc, id").unwrap(),
            "\"name\" DESC, \"id\""
        );
        assert!(matches!(
            order_clause("id; drop table x"),
            Err(Error::Schema { .. })
        ));
        assert!(matches!(
            order_clause("id sideways"),
            Err(Error::Schema { .. })
        ));
        assert!(matches!(order_clause("id,"), Err(Error::Schema { .. })));
    }
}
