//! Rust counterparts of Python pgdbm's pytest fixtures (`pgdbm.fixtures.conftest`): a fresh
//! database with a connected manager, with a schema, with the common tables, with sample data,
//! a factory for several databases in one test, and transaction isolation.
//!
//! | pytest fixture        | here                                        |
//! |-----------------------|---------------------------------------------|
//! | `test_db`             | [`test_db`]                                 |
//! | `test_db_with_schema` | [`test_db_with_schema`] (schema `test_schema`) |
//! | `test_db_factory`     | [`test_db_factory`] ([`TestDbFactory`])     |
//! | `test_db_with_tables` | [`test_db_with_tables`]                     |
//! | `test_db_with_data`   | [`test_db_with_data`]                       |
//! | `db_test_utils`       | [`TestHelpers::new`](crate::TestHelpers::new) on the manager |
//! | `test_db_isolated`    | [`test_db_isolated`] (and [`run_isolated`](crate::run_isolated)) |
//!
//! Every database lives on the shared server ([`TestServer::shared`]), is named with the
//! environment's `test_prefix`, and uses a test-sized pool counted against the connection cap
//! ([`TestServer::manager_with`]).

use std::future::Future;
use std::ops::Deref;

use pgdbm_core::{Database, Pool, Result, Transaction};

use crate::{TestConfig, TestDatabase, TestServer};

/// The schema of [`test_db_with_schema`] (as in the reference).
pub const TEST_SCHEMA: &str = "test_schema";

/// The tables of [`test_db_with_tables`]: `users`, `projects` and `agents`, as the reference
/// creates them.
pub const COMMON_TABLES_SQL: &str = "\
CREATE TABLE users (
    id SERIAL PRIMARY KEY,
    email VARCHAR(255) UNIQUE NOT NULL,
    full_name VARCHAR(255),
    is_active BOOLEAN DEFAULT true,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE projects (
    id SERIAL PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    owner_id INTEGER REFERENCES users(id),
    description TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE agents (
    id SERIAL PRIMARY KEY,
    project_id INTEGER REFERENCES projects(id),
    title VARCHAR(255) NOT NULL,
    status VARCHAR(50) DEFAULT 'pending',
    assigned_to INTEGER REFERENCES users(id),
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);";

/// The rows of [`test_db_with_data`]: users alice, bob and charlie; projects Alpha and Beta
/// owned by alice; five agents across them, three assigned to bob.
pub const SAMPLE_DATA_SQL: &str = "\
INSERT INTO users (email, full_name) VALUES
    ('alice@example.com', 'Alice Smith'),
    ('bob@example.com', 'Bob Jones'),
    ('charlie@example.com', 'Charlie Brown');
INSERT INTO projects (name, owner_id, description)
    SELECT p.name, u.id, p.description FROM users u,
        (VALUES ('Project Alpha', 'First project'), ('Project Beta', 'Second project'))
            AS p (name, description)
    WHERE u.email = 'alice@example.com';
INSERT INTO agents (project_id, title, status, assigned_to)
    SELECT p.id, a.title, a.status, CASE WHEN a.bob THEN b.id END
    FROM (VALUES
        ('Project Alpha', 'Design database schema', 'completed', true, 1),
        ('Project Alpha', 'Implement user authentication', 'in_progress', true, 2),
        ('Project Alpha', 'Write tests', 'pending', false, 3),
        ('Project Beta', 'Setup CI/CD', 'in_progress', true, 4),
        ('Project Beta', 'Deploy to production', 'pending', false, 5))
        AS a (project, title, status, bob, n)
    JOIN projects p ON p.name = a.project
    CROSS JOIN (SELECT id FROM users WHERE email = 'bob@example.com') b
    ORDER BY a.n;";

/// A fresh test database with a connected manager (what the pytest fixtures yield). It
/// dereferences to the [`Database`]; dropping it drops the database (kept, and named on
/// stderr, when dropped during a panic). Prefer [`close`](Self::close) in async code: it
/// closes the pool and drops the database without blocking the runtime.
#[derive(Debug)]
pub struct TestDb<P: Pool> {
    // Field order: the manager goes before the database it lives in.
    db: Database<P>,
    database: TestDatabase,
}

impl<P: Pool> TestDb<P> {
    /// A fresh database on the shared server with a manager for `schema`.
    async fn open(schema: Option<&str>) -> Result<TestDb<P>> {
        let database = TestDatabase::create(None).await?;
        let db = database.manager::<P>(schema).await?;
        Ok(TestDb { db, database })
    }

    /// The manager.
    pub fn db(&self) -> &Database<P> {
        &self.db
    }

    /// The test database (name, server, keep).
    pub fn test_database(&self) -> &TestDatabase {
        &self.database
    }

    /// The database name.
    pub fn name(&self) -> &str {
        self.database.name()
    }

    /// Keeps the database after the test (for inspection).
    pub fn keep(&mut self) {
        self.database.keep();
    }

    /// Closes the pool and drops the database (Python: the fixture's teardown).
    ///
    /// # Errors
    /// The error of dropping the database.
    pub async fn close(self) -> Result<()> {
        let TestDb { db, database } = self;
        db.close().await;
        drop(db);
        database.drop_async().await
    }
}

impl<P: Pool> Deref for TestDb<P> {
    type Target = Database<P>;
    fn deref(&self) -> &Database<P> {
        &self.db
    }
}

/// Python's `test_db`: a fresh database and a manager on it (no schema).
///
/// # Errors
/// As [`TestDatabase::create`] and [`TestDatabase::manager`].
pub async fn test_db<P: Pool>() -> Result<TestDb<P>> {
    TestDb::open(None).await
}

/// Python's `test_db_with_schema`: a fresh database and a manager for the schema
/// [`TEST_SCHEMA`] (`test_schema`), created; `{{tables.x}}` renders into it.
///
/// # Errors
/// As [`test_db`].
pub async fn test_db_with_schema<P: Pool>() -> Result<TestDb<P>> {
    TestDb::open(Some(TEST_SCHEMA)).await
}

/// Python's `test_db_with_tables`: [`test_db`] with the tables of [`COMMON_TABLES_SQL`]
/// (`users`, `projects`, `agents`).
///
/// # Errors
/// As [`test_db`], and the error creating the tables.
pub async fn test_db_with_tables<P: Pool>() -> Result<TestDb<P>> {
    let t = test_db::<P>().await?;
    t.db.batch_execute(COMMON_TABLES_SQL).await?;
    Ok(t)
}

/// Python's `test_db_with_data`: [`test_db_with_tables`] with the rows of
/// [`SAMPLE_DATA_SQL`] (3 users, 2 projects owned by alice, 5 agents).
///
/// # Errors
/// As [`test_db_with_tables`], and the error inserting the rows.
pub async fn test_db_with_data<P: Pool>() -> Result<TestDb<P>> {
    let t = test_db_with_tables::<P>().await?;
    t.db.batch_execute(SAMPLE_DATA_SQL).await?;
    Ok(t)
}

/// Python's `test_db_isolated`: runs `body` on a fresh database inside one transaction and
/// rolls it back (see [`run_isolated`](crate::run_isolated)), then drops the database.
///
/// # Errors
/// The body's error, or the error of creating the database or the transaction.
pub async fn test_db_isolated<P, F, Fut, T>(body: F) -> Result<T>
where
    P: Pool,
    F: FnOnce(Transaction<P::Connection>) -> Fut,
    Fut: Future<Output = (Transaction<P::Connection>, Result<T>)>,
{
    let t = test_db::<P>().await?;
    let result = crate::run_isolated(&t.db, body).await;
    t.close().await?;
    result
}

/// Python's `test_db_factory`: makes several test databases in one test and drops them all at
/// [`cleanup`](Self::cleanup) (or when dropped).
#[derive(Debug)]
pub struct TestDbFactory<P: Pool> {
    settings: TestConfig,
    made: Vec<TestDb<P>>,
}

/// Python's `test_db_factory` fixture: a [`TestDbFactory`] with the environment's settings.
///
/// # Errors
/// A bad `TEST_DB_*` variable.
pub fn test_db_factory<P: Pool>() -> Result<TestDbFactory<P>> {
    Ok(TestDbFactory {
        settings: TestConfig::from_env()?,
        made: Vec::new(),
    })
}

impl<P: Pool> TestDbFactory<P> {
    /// A fresh database named with `suffix` and a manager for `schema` (created); Python:
    /// `create_db(suffix, schema)`. The returned manager shares the pool the factory closes.
    ///
    /// # Errors
    /// As [`TestDatabase::create_with`] and [`TestDatabase::manager`].
    pub async fn create_db(
        &mut self,
        suffix: Option<&str>,
        schema: Option<&str>,
    ) -> Result<Database<P>> {
        let database =
            TestDatabase::create_with(TestServer::shared()?, self.settings.clone(), suffix).await?;
        let db = database.manager::<P>(schema).await?;
        self.made.push(TestDb {
            db: db.clone(),
            database,
        });
        Ok(db)
    }

    /// The databases made so far.
    pub fn databases(&self) -> &[TestDb<P>] {
        &self.made
    }

    /// Closes every pool and drops every database (Python: `cleanup()`).
    ///
    /// # Errors
    /// The first error dropping a database (the others are still dropped).
    pub async fn cleanup(mut self) -> Result<()> {
        let mut first = Ok(());
        for t in self.made.drain(..) {
            if let Err(e) = t.close().await {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}
