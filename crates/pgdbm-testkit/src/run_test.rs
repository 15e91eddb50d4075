//! The runner behind `#[pgdbm::test]`: a tokio runtime per test, a fresh database cloned from
//! the migrated template, fixtures, and the database dropped on success or kept (and named on
//! stderr) on failure.
//!
//! The attribute only builds a [`TestArgs`] and calls [`TestFn::run_test`] on the test
//! function; everything else happens here, so the same runner can be called by hand:
//!
//! ```no_run
//! use pgdbm_core::{Database, Pool};
//! use pgdbm_testkit::{TestArgs, TestFn};
//!
//! async fn body<P: Pool>(db: Database<P>) {
//!     let one: Option<i32> = db.fetch_value("SELECT 1", &[]).await.unwrap();
//!     assert_eq!(one, Some(1));
//! }
//!
//! fn run<P: Pool>() {
//!     let f: fn(Database<P>) -> _ = body::<P>;
//!     f.run_test(TestArgs::new("my_crate::one"));
//! }
//! ```

use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::time::Instant;

use pgdbm_core::{Database, DbConnection, Error, Pool, Result, Transaction};

use crate::{load_fixture, template_name, TestDatabase, TestServer};

/// A boxed migration run: migrates the database it is given, then returns.
type Apply<P> = Box<dyn FnOnce(Database<P>) -> Pin<Box<dyn Future<Output = Result<()>>>>>;

/// The migrations a test database starts from: the `(file name, checksum)` pairs that name
/// its template ([`template_name`]) and the function that applies them to a fresh database.
///
/// The `pgdbm` facade builds it from a directory or embedded migrations (`pgdbm-migrate`); the
/// testkit itself does not depend on the migrator.
pub struct TestMigrations<P: Pool> {
    files: Vec<(String, String)>,
    apply: Apply<P>,
}

impl<P: Pool> std::fmt::Debug for TestMigrations<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestMigrations")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl<P: Pool> TestMigrations<P> {
    /// Migrations named by `files` (`(file name, checksum)` in the order they apply), applied
    /// by `apply` to the manager of a fresh database (which it must not keep: the template is
    /// finished when it returns).
    pub fn new<F, Fut>(files: Vec<(String, String)>, apply: F) -> Self
    where
        F: FnOnce(Database<P>) -> Fut + 'static,
        Fut: Future<Output = Result<()>> + 'static,
    {
        TestMigrations {
            files,
            apply: Box::new(move |db| Box::pin(apply(db))),
        }
    }

    /// The `(file name, checksum)` pairs.
    pub fn files(&self) -> &[(String, String)] {
        &self.files
    }

    /// The template database these migrations give in `schema`: [`template_name`] over the
    /// files, and the schema (templates render for it, so another schema is another template).
    pub fn template_name(&self, schema: Option<&str>) -> String {
        let mut key = self.files.clone();
        if let Some(schema) = schema {
            // NUL cannot appear in a file name, so this entry never collides with a file.
            key.push(("\0schema".to_string(), schema.to_string()));
        }
        template_name(&key)
    }
}

/// A fixture compiled into the test (by `#[pgdbm::test(fixtures(...))]`): its file name picks
/// the format, see [`load_fixture`](crate::load_fixture).
#[derive(Debug, Clone, Copy)]
pub struct Fixture {
    /// The file name as written in the attribute (relative to the crate's `fixtures/`).
    pub name: &'static str,
    /// The file's text.
    pub contents: &'static str,
}

/// What a test needs before its body runs: its name, migrations, schema and fixtures.
#[derive(Debug)]
pub struct TestArgs<P: Pool> {
    name: &'static str,
    migrations: Option<Result<TestMigrations<P>>>,
    schema: Option<&'static str>,
    fixtures: &'static [Fixture],
}

impl<P: Pool> TestArgs<P> {
    /// Arguments for the test `name` (its path, `module::function`): no migrations (an empty
    /// database), no schema, no fixtures.
    pub fn new(name: &'static str) -> Self {
        TestArgs {
            name,
            migrations: None,
            schema: None,
            fixtures: &[],
        }
    }

    /// Builds the database from a template migrated with `migrations` (an error is reported
    /// as the test's failure).
    pub fn migrations(mut self, migrations: Result<TestMigrations<P>>) -> Self {
        self.migrations = Some(migrations);
        self
    }

    /// The manager's schema (created if the migrations did not).
    pub fn schema(mut self, schema: &'static str) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Fixtures loaded, in this order, into the test's database before the body runs.
    pub fn fixtures(mut self, fixtures: &'static [Fixture]) -> Self {
        self.fixtures = fixtures;
        self
    }
}

/// What a test body returns: `()` or a `Result` (an `Err` fails the test, as with `#[test]`).
pub trait TestOutcome {
    /// Whether the test failed.
    fn is_failure(&self) -> bool;
}

impl TestOutcome for () {
    fn is_failure(&self) -> bool {
        false
    }
}

impl<T, E> TestOutcome for std::result::Result<T, E> {
    fn is_failure(&self) -> bool {
        self.is_err()
    }
}

/// A test function `#[pgdbm::test]` can run: an `async fn` taking the test's
/// [`Database`], a [`DbConnection`] from it, or a [`Transaction`] on it (coerced to a function
/// pointer, so the argument type picks the implementation, as `#[sqlx::test]` does).
pub trait TestFn<P: Pool> {
    /// What the test returns.
    type Output;

    /// Runs the test with `args` on its own current-thread tokio runtime (as `#[tokio::test]`
    /// builds one) and a fresh database on the shared test server ([`TestServer::shared`]).
    ///
    /// The database is a copy of the template migrated once for `args`' migrations and schema
    /// ([`TestServer::ensure_template`], safe across threads and processes), with the fixtures
    /// loaded. After the body, it is dropped when the test passed; when it returned an `Err` or
    /// panicked it is kept, and its name and a password-free URL are printed to stderr.
    ///
    /// # Panics
    /// When the test's database cannot be prepared (no server, a migration or fixture fails:
    /// the message says which), and with the body's own panic.
    fn run_test(self, args: TestArgs<P>) -> Self::Output;
}

impl<P: Pool, Fut> TestFn<P> for fn(Database<P>) -> Fut
where
    Fut: Future,
    Fut::Output: TestOutcome,
{
    type Output = Fut::Output;

    fn run_test(self, args: TestArgs<P>) -> Fut::Output {
        run(args, self)
    }
}

impl<P: Pool, Fut> TestFn<P> for fn(DbConnection<P::Connection>) -> Fut
where
    Fut: Future,
    Fut::Output: TestOutcome,
{
    type Output = Fut::Output;

    fn run_test(self, args: TestArgs<P>) -> Fut::Output {
        let name = args.name;
        run(args, move |db: Database<P>| async move {
            match db.acquire().await {
                Ok(conn) => self(conn).await,
                Err(e) => panic!("pgdbm::test `{name}`: cannot acquire a connection: {e}"),
            }
        })
    }
}

impl<P: Pool, Fut> TestFn<P> for fn(Transaction<P::Connection>) -> Fut
where
    Fut: Future,
    Fut::Output: TestOutcome,
{
    type Output = Fut::Output;

    fn run_test(self, args: TestArgs<P>) -> Fut::Output {
        let name = args.name;
        run(args, move |db: Database<P>| async move {
            match db.transaction().await {
                Ok(tx) => self(tx).await,
                Err(e) => panic!("pgdbm::test `{name}`: cannot start a transaction: {e}"),
            }
        })
    }
}

/// Prepares the database, runs `body` with a manager on it, and drops or keeps the database.
fn run<P, F, Fut>(args: TestArgs<P>, body: F) -> Fut::Output
where
    P: Pool,
    F: FnOnce(Database<P>) -> Fut,
    Fut: Future,
    Fut::Output: TestOutcome,
{
    let name = args.name;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => panic!("pgdbm::test `{name}`: cannot build the tokio runtime: {e}"),
    };
    let server = match TestServer::shared() {
        Ok(s) => s,
        Err(e) => panic!("pgdbm::test `{name}`: {e}"),
    };
    let (test_db, db) = match runtime.block_on(prepare(server, args)) {
        Ok(prepared) => prepared,
        Err(e) => panic!("pgdbm::test `{name}`: cannot prepare the test database: {e}"),
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| runtime.block_on(body(db.clone()))));
    runtime.block_on(db.close());
    match outcome {
        Ok(output) if !output.is_failure() => {
            if let Err(e) = runtime.block_on(test_db.drop_async()) {
                eprintln!(
                    "pgdbm-testkit: test `{name}` passed but its database was not dropped: {e}"
                );
            }
            output
        }
        Ok(output) => {
            keep(name, test_db, "returned an error");
            output
        }
        Err(panic) => {
            keep(name, test_db, "panicked");
            resume_unwind(panic)
        }
    }
}

/// Keeps the database of a failed test and says where it is.
fn keep(test: &str, mut test_db: TestDatabase, how: &str) {
    test_db.keep();
    let server = test_db.server();
    let note = if server.is_local() {
        "; the throwaway server stops when the test process exits: run the tests against a \
         server of your own (TEST_DB_HOST) to inspect it afterwards"
    } else {
        ""
    };
    eprintln!(
        "pgdbm-testkit: test `{test}` {how}; kept its database {} ({}){note}",
        test_db.name(),
        server.display_url(test_db.name())
    );
}

/// The test's database (cloned from the template, or empty without migrations) with the
/// schema and fixtures, and a connected manager on it.
async fn prepare<P: Pool>(
    server: &'static TestServer,
    args: TestArgs<P>,
) -> Result<(TestDatabase, Database<P>)> {
    let suffix = name_suffix(args.name);
    let test_db = match args.migrations {
        None => TestDatabase::create(Some(&suffix)).await?,
        Some(migrations) => {
            let migrations = migrations?;
            let template = migrations.template_name(args.schema);
            let started = Instant::now();
            let count = migrations.files.len();
            // `migrated_database` may build twice (when its clone finds the template swept);
            // the migrations can be applied once, so a second build reports that.
            let apply = std::sync::Mutex::new(Some(migrations.apply));
            let schema = args.schema;
            let built = std::cell::Cell::new(false);
            let test_db = server
                .migrated_database_named(&template, Some(&suffix), |name| {
                    let apply = apply.lock().ok().and_then(|mut a| a.take());
                    built.set(true);
                    async move {
                        match apply {
                            Some(apply) => build::<P>(server, name, schema, apply).await,
                            None => Err(Error::TestDatabase {
                                name: Some(name),
                                message: "the template was dropped while this test was starting \
                                          and its migrations were already applied once; run the \
                                          test again"
                                    .to_string(),
                                source: None,
                            }),
                        }
                    }
                })
                .await?;
            if built.get() {
                eprintln!(
                    "pgdbm-testkit: built the template database {template} ({count} \
                     migration(s)) in {} ms",
                    started.elapsed().as_millis()
                );
            }
            test_db
        }
    };
    let db = test_db.manager::<P>(args.schema).await?;
    for fixture in args.fixtures {
        if let Err(e) = load_fixture(&db, fixture.name, fixture.contents).await {
            db.close().await;
            keep(args.name, test_db, "could not load its fixtures");
            return Err(e);
        }
    }
    Ok((test_db, db))
}

/// Migrates the fresh database `name` into a template: a small manager on it, the schema, the
/// migrations, and every connection closed.
async fn build<P: Pool>(
    server: &TestServer,
    name: String,
    schema: Option<&str>,
    apply: Apply<P>,
) -> Result<()> {
    let mut config = server.config(&name);
    config.schema = schema.map(str::to_string);
    config.min_connections = 0;
    config.max_connections = 2;
    let db = Database::<P>::connect(config).await?;
    let result = match db.ensure_schema().await {
        Ok(()) => apply(db.clone()).await,
        Err(e) => Err(e),
    };
    db.close().await;
    result.map_err(|e| Error::TestDatabase {
        name: Some(name.clone()),
        message: format!("the migrations failed while building the template: {e}"),
        source: Some(Box::new(e)),
    })
}

/// A database-name part from a test path: its last segment, lower case, other characters as
/// `_`, at most 20 bytes.
fn name_suffix(test: &str) -> String {
    let last = test.rsplit("::").next().unwrap_or(test);
    let mut s: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(20)
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, 't');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_short_identifiers() {
        assert_eq!(name_suffix("my_crate::tests::Loads_Users"), "loads_users");
        assert_eq!(name_suffix("r#type"), "r_type");
        assert_eq!(name_suffix(""), "t");
        assert_eq!(
            name_suffix("a::a_very_long_test_function_name_indeed"),
            "a_very_long_test_fun"
        );
        for s in ["x::y", "9", "ü"] {
            pgdbm_core::validate_identifier(&name_suffix(s)).unwrap();
        }
    }

    #[test]
    fn outcomes() {
        assert!(!().is_failure());
        assert!(!Ok::<(), ()>(()).is_failure());
        assert!(Err::<(), _>("no").is_failure());
    }
}
