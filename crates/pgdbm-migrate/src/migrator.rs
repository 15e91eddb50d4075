//! [`Migrator`]: the migration manager (Python: `AsyncMigrationManager`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use pgdbm_core::migration as rules;
use pgdbm_core::{validate_identifier, Connection, Database, Error, Pool, Result, Row};

use crate::lock::{self, LockGuard};
use crate::migration::{EmbeddedMigration, HistoryEntry, Migration, MigrationSource};
use crate::report::{AppliedMigration, MigrationReport, MigrationStatus};
use crate::TRACING_TARGET;

/// Default migrations directory (Python: `migrations_path="./migrations"`).
pub const DEFAULT_MIGRATIONS_PATH: &str = "./migrations";
/// Default history table name (Python: `migrations_table="schema_migrations"`).
pub const DEFAULT_TABLE: &str = "schema_migrations";
/// Default time to wait for another migrator of the same module.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// Default client-side deadline of each of the migrator's own queries (migration lock,
/// history table and rows), so that a dead or half-open connection cannot hang a run.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Module used when neither a module nor a schema is set (Python: `"default"`).
const DEFAULT_MODULE: &str = "default";
/// `module_name` is a `VARCHAR(100)`.
const MAX_MODULE_CHARS: usize = 100;
/// `filename` is a `VARCHAR(255)`.
const MAX_FILENAME_CHARS: usize = 255;

/// SQLSTATEs of a lost `CREATE ... IF NOT EXISTS` race (unique_violation, duplicate_table,
/// duplicate_object, duplicate_schema).
const CREATE_RACE_STATES: [&str; 4] = ["23505", "42P07", "42710", "42P06"];
/// undefined_table.
const UNDEFINED_TABLE: &str = "42P01";

/// Applies SQL migration files to a database, compatible with Python pgdbm's
/// `AsyncMigrationManager` (same history table, checksums, module semantics and lock key).
///
/// Built from a [`Database`] (or a pool and a schema) and configured with builder methods;
/// cloning is cheap.
///
/// | Python | Rust |
/// |---|---|
/// | `AsyncMigrationManager(db, migrations_path, migrations_table, module_name)` | `Migrator::new(&db).migrations_path(..).table(..).module(..)` |
/// | `ensure_migrations_table()` | [`ensure_migrations_table`](Self::ensure_migrations_table) |
/// | `get_applied_migrations()` | [`applied`](Self::applied) |
/// | `get_pending_migrations()` | [`pending`](Self::pending) |
/// | `apply_pending_migrations(dry_run)` | [`apply_pending`](Self::apply_pending), [`apply_pending_dry_run`](Self::apply_pending_dry_run), [`apply_pending_report`](Self::apply_pending_report) |
/// | `apply_migration(m)` | [`apply_migration`](Self::apply_migration) |
/// | `find_migration_files()` | [`find_migration_files`](Self::find_migration_files) |
/// | `create_migration(name, content, auto_transaction)` | [`create_migration`](Self::create_migration) |
/// | `rollback_migration(filename)` | [`rollback_migration`](Self::rollback_migration) |
/// | `get_migration_history(limit)` | [`history`](Self::history) |
/// | — | [`repair`](Self::repair), [`baseline`](Self::baseline), [`embedded`](Self::embedded), [`strict`](Self::strict) |
#[derive(Clone)]
pub struct Migrator<P: Pool> {
    pool: P,
    schema: Option<String>,
    table: String,
    module: Option<String>,
    source: MigrationSource,
    strict: bool,
    lock_timeout: Duration,
    statement_timeout: Option<Duration>,
    statement_lock_timeout: Option<Duration>,
    query_timeout: Duration,
}

impl<P: Pool> std::fmt::Debug for Migrator<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrator")
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("module", &self.module_name())
            .field("source", &self.source)
            .field("strict", &self.strict)
            .field("lock_timeout", &self.lock_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("statement_lock_timeout", &self.statement_lock_timeout)
            .field("query_timeout", &self.query_timeout)
            .finish_non_exhaustive()
    }
}

impl<P: Pool> Migrator<P> {
    /// A migrator for `db`: its pool, and its schema for the history table, the module name and
    /// templates. Defaults: `./migrations`, table `schema_migrations`, module = schema or
    /// `default`, not strict, 60 s lock timeout; migration SQL runs without `statement_timeout`
    /// and `lock_timeout` (whatever the application's [`Config`](pgdbm_core::Config) sets), and
    /// the migrator's own queries have a 30 s deadline.
    pub fn new(db: &Database<P>) -> Self {
        Self::from_pool(db.pool().clone(), db.schema().map(str::to_owned))
    }

    /// A migrator on `pool` for `schema` (`None`: no schema), without a [`Database`].
    pub fn from_pool(pool: P, schema: Option<String>) -> Self {
        Migrator {
            pool,
            schema,
            table: DEFAULT_TABLE.to_owned(),
            module: None,
            source: MigrationSource::Directory(PathBuf::from(DEFAULT_MIGRATIONS_PATH)),
            strict: false,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            statement_timeout: None,
            statement_lock_timeout: None,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
        }
    }

    /// Reads migrations from this directory at run time.
    pub fn migrations_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = MigrationSource::Directory(path.into());
        self
    }

    /// Uses migrations compiled in with [`embed_migrations!`](crate::embed_migrations).
    pub fn embedded(mut self, files: &'static [EmbeddedMigration]) -> Self {
        self.source = MigrationSource::Embedded(files);
        self
    }

    /// Sets the migration source.
    pub fn source(mut self, source: MigrationSource) -> Self {
        self.source = source;
        self
    }

    /// History table name (default `schema_migrations`); validated as an identifier when used.
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// Module name recorded with each migration and used for the lock (default: the schema,
    /// else `default`).
    pub fn module(mut self, name: impl Into<String>) -> Self {
        self.module = Some(name.into());
        self
    }

    /// When true, a pending file that sorts before an already applied one is an error instead
    /// of being applied out of order.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// How long to wait for another migrator of the same module (default 60 s).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Server-side `statement_timeout` for migration SQL (default `None`: no limit, i.e.
    /// `statement_timeout = 0`), replacing the application's setting on the migration
    /// connection, so a long index build is not cut by a timeout meant for requests.
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Server-side `lock_timeout` for migration SQL waiting on table or row locks (default
    /// `None`: wait as long as needed, i.e. `lock_timeout = 0`), replacing the application's
    /// setting on the migration connection. `CREATE INDEX CONCURRENTLY` waits for older
    /// transactions under this timeout; when it expires the index is left INVALID.
    ///
    /// Not to be confused with [`lock_timeout`](Self::lock_timeout), the wait for the
    /// migration lock held by another migrator.
    pub fn statement_lock_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_lock_timeout = timeout;
        self
    }

    /// Client-side deadline of each of the migrator's own queries: the migration lock's
    /// queries, the history table's creation and reads, and history rows (default 30 s). On
    /// expiry the query is cancelled and the run fails instead of hanging on a dead connection.
    /// Migration SQL itself has no client-side deadline; see
    /// [`statement_timeout`](Self::statement_timeout).
    pub fn query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// The module name: the explicit one, else the schema, else `default`.
    pub fn module_name(&self) -> &str {
        self.module
            .as_deref()
            .or(self.schema.as_deref())
            .unwrap_or(DEFAULT_MODULE)
    }

    /// The schema templates are rendered for and the history table lives in.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The migration source.
    pub fn migration_source(&self) -> &MigrationSource {
        &self.source
    }

    /// The history table as it appears in SQL: `<schema>.<table>` or `<table>`, unquoted like
    /// Python pgdbm (so both name the same table).
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] when the table or schema name is not a valid identifier.
    pub fn table_name(&self) -> Result<String> {
        validate_identifier(&self.table)?;
        Ok(match &self.schema {
            Some(s) => {
                validate_identifier(s)?;
                format!("{s}.{}", self.table)
            }
            None => self.table.clone(),
        })
    }

    fn checked_module(&self) -> Result<&str> {
        let m = self.module_name();
        if m.is_empty() || m.chars().count() > MAX_MODULE_CHARS {
            return Err(Error::migration(
                None,
                format!(
                    "invalid module name `{}`: it must be 1 to {MAX_MODULE_CHARS} characters \
                     (the module_name column is VARCHAR({MAX_MODULE_CHARS}))",
                    m.escape_debug()
                ),
            ));
        }
        Ok(m)
    }

    /// Creates the history table and its index if they do not exist, exactly as Python pgdbm
    /// 0.5 does (and the schema, when set and missing).
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] for invalid names; the server's error otherwise.
    pub async fn ensure_migrations_table(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        self.ensure_table_on(&mut conn).await
    }

    async fn ensure_table_on(&self, conn: &mut P::Connection) -> Result<()> {
        let table = self.table_name()?;
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {table} (\n\
             \x20   id SERIAL PRIMARY KEY,\n\
             \x20   filename VARCHAR(255) NOT NULL,\n\
             \x20   checksum VARCHAR(64) NOT NULL,\n\
             \x20   module_name VARCHAR(100),\n\
             \x20   applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,\n\
             \x20   applied_by VARCHAR(100) DEFAULT CURRENT_USER,\n\
             \x20   execution_time_ms INTEGER,\n\
             \x20   UNIQUE(filename, module_name)\n\
             )"
        );
        let index = format!(
            "CREATE INDEX IF NOT EXISTS idx_{}_module ON {table}(module_name, filename)",
            self.table
        );
        // The index lives in the table's schema.
        let index_name = match &self.schema {
            Some(s) => format!("{s}.idx_{}_module", self.table),
            None => format!("idx_{}_module", self.table),
        };
        // Migrators racing on CREATE ... IF NOT EXISTS can both miss the catalog row and one
        // gets a duplicate error once the other committed: the object exists then, so a retry
        // settles it (a few, as the schema, table and index can each race).
        const ATTEMPTS: u32 = 5;
        for attempt in 1..=ATTEMPTS {
            let result = async {
                if let Some(schema) = &self.schema {
                    let exists = conn
                        .query_opt(
                            "SELECT 1 FROM pg_namespace WHERE nspname = lower($1::text)",
                            &[schema],
                            Some(self.query_timeout),
                        )
                        .await?
                        .is_some();
                    if !exists {
                        conn.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"), Some(self.query_timeout))
                            .await?;
                    }
                }
                // Skip the statements when the objects exist (the server would log a NOTICE
                // for every IF NOT EXISTS that does nothing); IF NOT EXISTS stays for races.
                let existing = conn
                    .query_opt(
                        "SELECT to_regclass($1::text) IS NOT NULL, to_regclass($2::text) IS NOT NULL",
                        &[&table, &index_name],
                        Some(self.query_timeout),
                    )
                    .await?;
                let (has_table, has_index) = match existing {
                    Some(row) => (row.get_at::<bool>(0)?, row.get_at::<bool>(1)?),
                    None => (false, false),
                };
                if !has_table {
                    conn.batch_execute(&ddl, Some(self.query_timeout)).await?;
                }
                if !has_index {
                    conn.batch_execute(&index, Some(self.query_timeout)).await?;
                }
                Ok::<(), Error>(())
            }
            .await;
            match result {
                Err(e)
                    if attempt < ATTEMPTS
                        && e.sqlstate()
                            .is_some_and(|s| CREATE_RACE_STATES.contains(&s)) =>
                {
                    tracing::debug!(target: TRACING_TARGET, error = %e, "lost a CREATE IF NOT EXISTS race; retrying");
                }
                other => return other,
            }
        }
        Ok(())
    }

    /// Migrations recorded as applied for this module (rows with this module name or a NULL
    /// one), keyed and ordered by file name. No history table yet: an empty map.
    ///
    /// # Errors
    ///
    /// Connection and server errors.
    pub async fn applied(&self) -> Result<BTreeMap<String, Migration>> {
        let mut conn = self.pool.acquire().await?;
        self.applied_on(&mut conn).await
    }

    async fn applied_on(&self, conn: &mut P::Connection) -> Result<BTreeMap<String, Migration>> {
        let table = self.table_name()?;
        let module = self.checked_module()?;
        let sql = format!(
            "SELECT filename, checksum, applied_at, module_name FROM {table} \
             WHERE module_name = $1 OR module_name IS NULL ORDER BY filename"
        );
        let rows = match conn.query(&sql, &[&module], Some(self.query_timeout)).await {
            Ok(rows) => rows,
            Err(e) if e.sqlstate() == Some(UNDEFINED_TABLE) => return Ok(BTreeMap::new()),
            Err(e) => return Err(e),
        };
        let mut out = BTreeMap::new();
        for row in rows {
            let m = Migration {
                filename: row.try_get("filename")?,
                checksum: row.try_get("checksum")?,
                content: String::new(),
                applied_at: Some(row.try_get::<_, SystemTime>("applied_at")?),
                module_name: row.try_get("module_name")?,
            };
            out.insert(m.filename.clone(), m);
        }
        Ok(out)
    }

    /// All migration files of the source, in code-point order of file name.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] naming an unreadable directory or file.
    pub fn find_migration_files(&self) -> Result<Vec<Migration>> {
        self.source.load()
    }

    /// Migrations not applied yet, in application order.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] naming the file when an applied file was changed (both checksums,
    /// and "differs only in line endings / BOM / whitespace" when that is the case), or, in
    /// strict mode, naming the files that would be applied out of order.
    pub async fn pending(&self) -> Result<Vec<Migration>> {
        let files = self.find_migration_files()?;
        let applied = self.applied().await?;
        self.compute_pending(files, &applied)
    }

    fn compute_pending(
        &self,
        files: Vec<Migration>,
        applied: &BTreeMap<String, Migration>,
    ) -> Result<Vec<Migration>> {
        let module = self.module_name();
        let mut pending = Vec::new();
        for file in files {
            match applied.get(&file.filename) {
                Some(done) if done.checksum != file.checksum => {
                    return Err(checksum_error(module, &file, &done.checksum));
                }
                Some(_) => {}
                None => pending.push(file),
            }
        }
        if self.strict {
            if let Some(last) = applied.keys().next_back() {
                let early: Vec<&str> = pending
                    .iter()
                    .filter(|m| m.filename.as_str() < last.as_str())
                    .map(|m| m.filename.as_str())
                    .collect();
                if !early.is_empty() {
                    return Err(Error::migration(
                        early.first().map(|s| (*s).to_owned()),
                        format!(
                            "strict mode: pending migration(s) {} sort before the already applied \
                             `{last}` (module `{module}`) and would be applied out of order; rename \
                             them to sort after it, or turn strict mode off",
                            early.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(pending)
    }

    /// Applies every pending migration under the module's lock.
    ///
    /// Returns the report (status `success` or `up_to_date`). Any failure is an `Err`: a failing
    /// migration is an [`Error::Migration`] naming the file, with the server error as `source`;
    /// it was rolled back (nothing of it remains) and migrations before it stay applied. For a
    /// Python-style report that also describes failures, use
    /// [`apply_pending_report`](Self::apply_pending_report).
    ///
    /// # Errors
    ///
    /// Lock timeout (naming the module and the holder's pid), changed files, strict-mode
    /// violations, failing migrations, connection errors.
    pub async fn apply_pending(&self) -> Result<MigrationReport> {
        match self.run(false).await {
            (report, None) => Ok(report),
            (_, Some(e)) => Err(e),
        }
    }

    /// Like [`apply_pending`](Self::apply_pending) but applies nothing: status `dry_run` (or
    /// `up_to_date`) with [`MigrationReport::pending`] listing what would run.
    ///
    /// # Errors
    ///
    /// As [`apply_pending`](Self::apply_pending), except that no migration runs.
    pub async fn apply_pending_dry_run(&self) -> Result<MigrationReport> {
        match self.run(true).await {
            (report, None) => Ok(report),
            (_, Some(e)) => Err(e),
        }
    }

    /// Python's `apply_pending_migrations(dry_run)`: never fails; a failure is a report with
    /// status `error`, the message in `error`, the file in `failed_migration` (when a migration
    /// failed) and the migrations applied before it in `applied`.
    pub async fn apply_pending_report(&self, dry_run: bool) -> MigrationReport {
        self.run(dry_run).await.0
    }

    async fn run(&self, dry_run: bool) -> (MigrationReport, Option<Error>) {
        let mut report = MigrationReport::empty();
        let mut ran_sql = false;
        let error = match self.lock().await {
            Ok(mut guard) => {
                let result = match guard.conn() {
                    Ok(conn) => self.run_locked(conn, dry_run, &mut report).await,
                    Err(e) => Err(e),
                };
                // Migration SQL ran on this connection when something was applied or failed
                // (a failed no-transaction file may have changed the schema too).
                ran_sql = !report.applied.is_empty() || result.is_err();
                guard.release(!ran_sql).await;
                result.err()
            }
            Err(e) => Some(e),
        };
        if let Some(e) = &error {
            report.status = MigrationStatus::Error;
            report.error = Some(e.to_string());
            if let Error::Migration { file: Some(f), .. } = e {
                if report.pending.iter().any(|p| p == f) {
                    report.failed_migration = Some(f.clone());
                }
            }
        }
        if ran_sql {
            // New or changed tables: plans cached before the migration may be stale.
            self.pool.clear_statement_caches();
        }
        (report, error)
    }

    async fn run_locked(
        &self,
        conn: &mut P::Connection,
        dry_run: bool,
        report: &mut MigrationReport,
    ) -> Result<()> {
        self.ensure_table_on(conn).await?;
        let files = self.find_migration_files()?;
        let applied = self.applied_on(conn).await?;
        let pending = self.compute_pending(files, &applied)?;
        report.skipped = applied.keys().cloned().collect();
        report.pending = pending.iter().map(|m| m.filename.clone()).collect();
        report.total = applied.len() + pending.len();
        let module = self.module_name();
        if pending.is_empty() {
            tracing::info!(target: TRACING_TARGET, module, "no pending migrations");
            report.status = MigrationStatus::UpToDate;
            return Ok(());
        }
        if dry_run {
            tracing::info!(target: TRACING_TARGET, module, pending = ?report.pending, "dry run: would apply {} migration(s)", pending.len());
            report.status = MigrationStatus::DryRun;
            return Ok(());
        }
        let table = self.resolve_table(conn).await?;
        // From here on the connection is closed after the run (migration SQL runs on it, see
        // `run`), so the session settings never reach the pool.
        self.apply_session_settings(conn).await?;
        for m in &pending {
            let ms = self.apply_on(conn, m, &table).await?;
            report.total_time_ms += ms;
            report.applied.push(AppliedMigration {
                filename: m.filename.clone(),
                execution_time_ms: ms,
            });
        }
        tracing::info!(target: TRACING_TARGET, module, count = report.applied.len(), total_time_ms = report.total_time_ms, "applied migrations");
        report.status = MigrationStatus::Success;
        Ok(())
    }

    /// Takes the module's migration lock on a dedicated connection. The caller must
    /// [`release`](LockGuard::release) it; if it is dropped instead (error path, panic,
    /// cancellation) its connection is closed, which releases the lock on the server.
    async fn lock(&self) -> Result<LockGuard<P::Connection>> {
        let module = self.checked_module()?;
        lock::acquire(&self.pool, module, self.lock_timeout, self.query_timeout).await
    }

    /// Sets the migration session's `statement_timeout` and `lock_timeout` on the lock
    /// connection. Only called on a connection that is closed after the run.
    async fn apply_session_settings(&self, conn: &mut P::Connection) -> Result<()> {
        let sql = session_settings_sql(self.statement_timeout, self.statement_lock_timeout);
        conn.batch_execute(&sql, Some(self.query_timeout))
            .await
            .map_err(|e| Error::Migration {
                file: None,
                message: format!(
                    "cannot set statement_timeout and lock_timeout on the migration connection: {e}"
                ),
                source: Some(Box::new(e)),
            })
    }

    /// Applies one migration under the module's lock, in its own transaction with its history
    /// row (or statement by statement for `-- pgdbm:no-transaction` files). Returns the
    /// execution time in milliseconds as recorded (at least 1).
    ///
    /// Unlike [`apply_pending`](Self::apply_pending) it does not check whether the migration was
    /// applied already: applying it twice fails on the history table's unique key (and is
    /// rolled back). Statement caches of the pool are cleared afterwards.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] naming the file.
    pub async fn apply_migration(&self, migration: &Migration) -> Result<f64> {
        let mut guard = self.lock().await?;
        let result = match guard.conn() {
            Ok(conn) => match self.ensure_table_on(conn).await {
                Ok(()) => match self.resolve_table(conn).await {
                    // The connection is closed by `release(false)` below.
                    Ok(table) => match self.apply_session_settings(conn).await {
                        Ok(()) => self.apply_on(conn, migration, &table).await,
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        guard.release(false).await;
        // Even a failed no-transaction file may have changed the schema.
        self.pool.clear_statement_caches();
        result
    }

    /// The history table, qualified with the schema it was found in (quoted), so that a
    /// migration changing `search_path` cannot redirect or break the history row.
    async fn resolve_table(&self, conn: &mut P::Connection) -> Result<String> {
        let name = self.table_name()?;
        let row = conn
            .query_opt(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1::text)",
                &[&name],
                Some(self.query_timeout),
            )
            .await?
            .ok_or_else(|| {
                Error::migration(
                    None,
                    format!("the history table `{name}` does not exist after creating it"),
                )
            })?;
        let schema: String = row.get_at(0)?;
        let table: String = row.get_at(1)?;
        Ok(format!(
            "{}.{}",
            pgdbm_core::quote_identifier(&schema)?,
            pgdbm_core::quote_identifier(&table)?
        ))
    }

    async fn apply_on(&self, conn: &mut P::Connection, m: &Migration, table: &str) -> Result<f64> {
        let file = m.filename.as_str();
        if file.chars().count() > MAX_FILENAME_CHARS {
            return Err(Error::migration(
                Some(file.to_owned()),
                format!("file name longer than {MAX_FILENAME_CHARS} characters (filename is VARCHAR(255))"),
            ));
        }
        if rules::python_strip(&m.content).is_empty() {
            return Err(Error::migration(
                Some(file.to_owned()),
                format!("migration `{file}` is empty"),
            ));
        }
        let rendered = pgdbm_core::render(&m.content, self.schema.as_deref()).map_err(|e| {
            wrap(
                file,
                format!("cannot render the templates of `{file}`: {e}"),
                e,
            )
        })?;
        // A byte-order mark is part of the checksum (computed on the raw text) but not SQL.
        let rendered = rendered.strip_prefix('\u{feff}').unwrap_or(&rendered);
        let module = self.checked_module()?;
        let insert = format!(
            "INSERT INTO {table} (filename, checksum, module_name, execution_time_ms) \
             VALUES ($1, $2, $3, $4)"
        );
        tracing::info!(target: TRACING_TARGET, module, file, no_transaction = m.is_no_transaction(), "applying migration");
        let start = Instant::now();
        if m.is_no_transaction() {
            let statements = pgdbm_core::split_statements(rendered);
            let n = statements.len();
            for (i, stmt) in statements.into_iter().enumerate() {
                if let Err(e) = conn.batch_execute(stmt, None).await {
                    return Err(wrap(
                        file,
                        format!(
                            "no-transaction migration `{file}` failed at statement {} of {n}: {e}; \
                             statements before it stay applied and no history row was written: \
                             fix the file (make it re-runnable, e.g. IF NOT EXISTS; drop any \
                             INVALID index left by CREATE INDEX CONCURRENTLY) and run again",
                            i + 1
                        ),
                        e,
                    ));
                }
            }
            let ms = elapsed_ms(start);
            conn.execute(&insert, &[&file, &m.checksum, &module, &ms], Some(self.query_timeout))
                .await
                .map_err(|e| {
                    wrap(
                        file,
                        format!("no-transaction migration `{file}` ran but its history row could not be written: {e}"),
                        e,
                    )
                })?;
            return Ok(f64::from(ms));
        }
        let body = strip_python_transaction_wrapper(rendered);
        conn.begin().await.map_err(|e| {
            wrap(
                file,
                format!("cannot start the transaction for `{file}`: {e}"),
                e,
            )
        })?;
        let result = async {
            if !rules::python_strip(body).is_empty() {
                conn.batch_execute(body, None).await?;
            }
            let ms = elapsed_ms(start);
            conn.execute(
                &insert,
                &[&file, &m.checksum, &module, &ms],
                Some(self.query_timeout),
            )
            .await?;
            Ok::<i32, Error>(ms)
        }
        .await;
        match result {
            Ok(ms) => {
                conn.commit().await.map_err(|e| {
                    wrap(
                        file,
                        format!("migration `{file}` could not be committed: {e}"),
                        e,
                    )
                })?;
                tracing::info!(target: TRACING_TARGET, module, file, execution_time_ms = ms, "applied migration");
                Ok(f64::from(ms))
            }
            Err(e) => {
                if conn.rollback().await.is_err() {
                    conn.discard();
                }
                tracing::error!(target: TRACING_TARGET, module, file, error = %e, "migration failed and was rolled back");
                Err(wrap(
                    file,
                    format!(
                        "migration `{file}` failed and was rolled back (no schema change and no \
                         history row remain): {e}"
                    ),
                    e,
                ))
            }
        }
    }

    /// Writes a new migration file `YYYYMMDD_HHMMSS_<name>.sql` (local time, as Python pgdbm 0.5's
    /// `create_migration`) into the migrations directory (created if missing) and returns its
    /// path. The file holds `content` byte for byte, as Python writes it.
    ///
    /// `auto_transaction` is kept for compatibility and, as in Python 0.5, changes nothing: every
    /// migration runs in a transaction unless its content carries the `-- pgdbm:no-transaction`
    /// marker. With `auto_transaction = true` and a `BEGIN` in the content a warning is logged,
    /// like Python's.
    ///
    /// Differences from Python, for safety: the name must be ASCII letters, digits, `_` and `-`
    /// (Python accepts anything, including `../`), and an existing file is not overwritten.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] when the source is embedded, the name is not made of ASCII letters,
    /// digits, `_` and `-`, the file exists, or it cannot be written.
    pub fn create_migration(
        &self,
        name: &str,
        content: &str,
        auto_transaction: bool,
    ) -> Result<PathBuf> {
        let MigrationSource::Directory(dir) = &self.source else {
            return Err(Error::migration(
                None,
                "create_migration needs a directory source; this migrator uses embedded migrations",
            ));
        };
        validate_migration_name(name)?;
        let filename = format!("{}_{name}.sql", crate::clock::local_file_timestamp_now());
        let path = dir.join(&filename);
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::migration(
                Some(filename.clone()),
                format!(
                    "cannot create migrations directory `{}`: {e}",
                    dir.display()
                ),
            )
        })?;
        if auto_transaction && content.to_uppercase().contains("BEGIN") {
            tracing::warn!(
                target: TRACING_TARGET,
                file = %filename,
                "migration content already contains explicit transaction statements; pgdbm \
                 applies migrations transactionally by default"
            );
        }
        let text = content;
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| {
                Error::migration(
                    Some(filename.clone()),
                    format!("cannot create `{}`: {e}", path.display()),
                )
            })?;
        f.write_all(text.as_bytes()).map_err(|e| {
            Error::migration(
                Some(filename.clone()),
                format!("cannot write `{}`: {e}", path.display()),
            )
        })?;
        tracing::info!(target: TRACING_TARGET, path = %path.display(), "created migration");
        Ok(path)
    }

    /// Removes the history row of `filename` for this module (Python: `rollback_migration`).
    /// Does NOT undo the migration's schema changes. Returns whether a row was removed.
    ///
    /// # Errors
    ///
    /// Connection and server errors.
    pub async fn rollback_migration(&self, filename: &str) -> Result<bool> {
        let table = self.table_name()?;
        let module = self.checked_module()?;
        let mut conn = self.pool.acquire().await?;
        let n = conn
            .execute(
                &format!("DELETE FROM {table} WHERE filename = $1 AND module_name = $2"),
                &[&filename, &module],
                Some(self.query_timeout),
            )
            .await?;
        if n == 0 {
            tracing::warn!(target: TRACING_TARGET, module, filename, "migration was not found in applied migrations");
        } else {
            tracing::info!(target: TRACING_TARGET, module, filename, "removed migration record");
        }
        Ok(n > 0)
    }

    /// The `limit` most recent history rows of this module (and NULL-module rows), newest
    /// first (Python: `get_migration_history`).
    ///
    /// # Errors
    ///
    /// Connection and server errors (including a missing history table).
    pub async fn history(&self, limit: i64) -> Result<Vec<HistoryEntry>> {
        let table = self.table_name()?;
        let module = self.checked_module()?;
        let mut conn = self.pool.acquire().await?;
        let rows = conn
            .query(
                &format!(
                    "SELECT filename, module_name, applied_at, applied_by, execution_time_ms \
                     FROM {table} WHERE module_name = $1 OR module_name IS NULL \
                     ORDER BY applied_at DESC, id DESC LIMIT $2"
                ),
                &[&module, &limit],
                Some(self.query_timeout),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(HistoryEntry {
                    filename: row.try_get("filename")?,
                    module_name: row.try_get("module_name")?,
                    applied_at: row.try_get("applied_at")?,
                    applied_by: row.try_get("applied_by")?,
                    execution_time_ms: row.try_get("execution_time_ms")?,
                })
            })
            .collect()
    }

    /// Rewrites the stored checksum of every applied file whose current content has a different
    /// checksum (after a deliberate, harmless edit, e.g. line endings). Runs under the lock and
    /// in one transaction. Returns the repaired file names.
    ///
    /// # Errors
    ///
    /// Lock timeout, connection and server errors.
    pub async fn repair(&self) -> Result<Vec<String>> {
        let mut guard = self.lock().await?;
        let result = match guard.conn() {
            Ok(conn) => self.repair_on(conn).await,
            Err(e) => Err(e),
        };
        guard.release(true).await;
        result
    }

    async fn repair_on(&self, conn: &mut P::Connection) -> Result<Vec<String>> {
        let this = self;
        {
            {
                this.ensure_table_on(conn).await?;
                let table = this.table_name()?;
                let module = this.checked_module()?;
                let applied = this.applied_on(conn).await?;
                let files = this.find_migration_files()?;
                let changed: Vec<&Migration> = files
                    .iter()
                    .filter(|f| {
                        applied
                            .get(&f.filename)
                            .is_some_and(|a| a.checksum != f.checksum)
                    })
                    .collect();
                if changed.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = format!(
                    "UPDATE {table} SET checksum = $1 WHERE filename = $2 \
                     AND (module_name = $3 OR module_name IS NULL)"
                );
                conn.begin().await?;
                let result = async {
                    for f in &changed {
                        conn.execute(&sql, &[&f.checksum, &f.filename, &module], Some(this.query_timeout)).await?;
                        tracing::warn!(target: TRACING_TARGET, module, file = %f.filename, checksum = %f.checksum, "repaired stored checksum");
                    }
                    Ok::<(), Error>(())
                }
                .await;
                finish_tx(conn, result).await?;
                Ok(changed.iter().map(|f| f.filename.clone()).collect())
            }
        }
    }

    /// Records migration files as applied without running them, for adopting an existing
    /// database: every file not yet applied, or only those whose name sorts at or before
    /// `up_to` when given. Rows get `execution_time_ms = 0`. Runs under the lock and in one
    /// transaction. Returns the recorded file names.
    ///
    /// # Errors
    ///
    /// Lock timeout, connection and server errors; [`Error::Migration`] when `up_to` names no
    /// migration file.
    pub async fn baseline(&self, up_to: Option<&str>) -> Result<Vec<String>> {
        let mut guard = self.lock().await?;
        let result = match guard.conn() {
            Ok(conn) => self.baseline_on(conn, up_to).await,
            Err(e) => Err(e),
        };
        guard.release(true).await;
        result
    }

    async fn baseline_on(
        &self,
        conn: &mut P::Connection,
        up_to: Option<&str>,
    ) -> Result<Vec<String>> {
        let this = self;
        {
            {
                this.ensure_table_on(conn).await?;
                let table = this.table_name()?;
                let module = this.checked_module()?;
                let files = this.find_migration_files()?;
                if let Some(u) = &up_to {
                    if !files.iter().any(|f| f.filename == *u) {
                        return Err(Error::migration(
                            Some((*u).to_owned()),
                            format!("baseline: `{u}` is not one of the migration files"),
                        ));
                    }
                }
                let applied = this.applied_on(conn).await?;
                let todo: Vec<&Migration> = files
                    .iter()
                    .filter(|f| !applied.contains_key(&f.filename))
                    .filter(|f| up_to.is_none_or(|u| f.filename.as_str() <= u))
                    .collect();
                if todo.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = format!(
                    "INSERT INTO {table} (filename, checksum, module_name, execution_time_ms) \
                     VALUES ($1, $2, $3, 0)"
                );
                conn.begin().await?;
                let result = async {
                    for f in &todo {
                        conn.execute(
                            &sql,
                            &[&f.filename, &f.checksum, &module],
                            Some(this.query_timeout),
                        )
                        .await?;
                    }
                    Ok::<(), Error>(())
                }
                .await;
                finish_tx(conn, result).await?;
                tracing::info!(target: TRACING_TARGET, module, count = todo.len(), "baselined migrations");
                Ok(todo.iter().map(|f| f.filename.clone()).collect())
            }
        }
    }
}

async fn finish_tx<C: Connection>(conn: &mut C, result: Result<()>) -> Result<()> {
    match result {
        Ok(()) => conn.commit().await,
        Err(e) => {
            if conn.rollback().await.is_err() {
                conn.discard();
            }
            Err(e)
        }
    }
}

/// `SET` statements for the migration session: `statement_timeout` and `lock_timeout` in
/// whole milliseconds (rounded up, so a positive duration never becomes 0 = no limit; capped
/// at the server's maximum), 0 for `None`.
fn session_settings_sql(statement: Option<Duration>, lock: Option<Duration>) -> String {
    fn ms(d: Option<Duration>) -> u128 {
        // PostgreSQL's maximum for both settings is INT_MAX milliseconds.
        const MAX_MS: u128 = i32::MAX as u128;
        d.map_or(0, |d| d.as_nanos().div_ceil(1_000_000).min(MAX_MS))
    }
    format!(
        "SET statement_timeout = {}; SET lock_timeout = {}",
        ms(statement),
        ms(lock)
    )
}

fn elapsed_ms(start: Instant) -> i32 {
    i32::try_from(start.elapsed().as_millis())
        .unwrap_or(i32::MAX)
        .max(1)
}

fn wrap(file: &str, message: String, source: Error) -> Error {
    Error::Migration {
        file: Some(file.to_owned()),
        message,
        source: Some(Box::new(source)),
    }
}

fn checksum_error(module: &str, file: &Migration, stored: &str) -> Error {
    let mut message = format!(
        "migration `{}` has been modified after being applied (module `{module}`): stored \
         checksum {stored}, current checksum {}",
        file.filename, file.checksum
    );
    if let Some(why) = rules::explain_checksum_mismatch(stored, &file.content) {
        message.push_str("; ");
        message.push_str(why);
        message.push_str(
            ". If the edit is intended and harmless, run repair() to record the new checksum",
        );
    } else {
        message.push_str(
            ". Restore the applied content and put the change in a new migration file; run \
             repair() only if the change is harmless",
        );
    }
    Error::migration(Some(file.filename.clone()), message)
}

/// Python pgdbm's `create_migration` wraps files in `BEGIN;` ... `COMMIT;`. Inside the
/// migrator's own transaction that `COMMIT` would end it early (the history row would then be
/// written outside it), so such a wrapper is dropped and the body runs in the migrator's
/// transaction. Anything else is returned unchanged.
fn strip_python_transaction_wrapper(sql: &str) -> &str {
    let stmts = pgdbm_core::split_statements(sql);
    if stmts.len() < 2 {
        return sql;
    }
    let norm = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_uppercase()
    };
    let first = norm(stmts[0]);
    let last = norm(stmts[stmts.len() - 1]);
    let is_begin = matches!(
        first.as_str(),
        "BEGIN" | "BEGIN TRANSACTION" | "BEGIN WORK" | "START TRANSACTION"
    );
    let is_commit = matches!(
        last.as_str(),
        "COMMIT" | "COMMIT TRANSACTION" | "COMMIT WORK" | "END" | "END TRANSACTION"
    );
    if !(is_begin && is_commit) {
        return sql;
    }
    if stmts.len() == 2 {
        return "";
    }
    // The statements are subslices of `sql`: take the original text between the first inner
    // statement and the end of the last inner one.
    let offset = |s: &str| s.as_ptr() as usize - sql.as_ptr() as usize;
    let start = offset(stmts[1]);
    let inner_last = stmts[stmts.len() - 2];
    let end = offset(inner_last) + inner_last.len();
    sql.get(start..end).unwrap_or(sql)
}

/// Checks a name for a new migration file (`create_migration`, the CLI's `migrate create`):
/// 1 to 200 ASCII letters, digits, `_` or `-`, so it is safe in a file name on every system.
///
/// # Errors
///
/// [`Error::Migration`] saying what is allowed.
pub fn validate_migration_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(Error::migration(
            None,
            format!(
                "invalid migration name `{}`: use 1 to 200 ASCII letters, digits, `_` or `-`",
                name.escape_debug()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_wrapper_is_stripped_only_when_complete() {
        let wrapped =
            "BEGIN;\n\nCREATE TABLE a (id int); -- c;\nINSERT INTO a VALUES (1);\n\nCOMMIT;";
        assert_eq!(
            strip_python_transaction_wrapper(wrapped),
            "CREATE TABLE a (id int); -- c;\nINSERT INTO a VALUES (1)"
        );
        assert_eq!(strip_python_transaction_wrapper("begin;\ncommit;"), "");
        let plain = "CREATE TABLE a (id int);\nCOMMIT;";
        assert_eq!(strip_python_transaction_wrapper(plain), plain);
        let fn_body = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;";
        assert_eq!(strip_python_transaction_wrapper(fn_body), fn_body);
        assert_eq!(strip_python_transaction_wrapper("SELECT 1"), "SELECT 1");
    }

    proptest::proptest! {
        /// Wrapping statements the way Python's create_migration does and stripping the wrapper
        /// gives back the same statements.
        #[test]
        fn wrapper_roundtrip(stmts in proptest::collection::vec("[a-z ]{1,12}", 1..5)) {
            let body = stmts
                .iter()
                .map(|s| format!("SELECT '{s}'"))
                .collect::<Vec<_>>()
                .join(";\n");
            let wrapped = format!("BEGIN;\n\n{body};\n\nCOMMIT;");
            let stripped = strip_python_transaction_wrapper(&wrapped);
            proptest::prop_assert_eq!(
                pgdbm_core::split_statements(stripped),
                pgdbm_core::split_statements(&body)
            );
            // Without the wrapper nothing changes.
            proptest::prop_assert_eq!(strip_python_transaction_wrapper(&body), body.as_str());
        }
    }

    #[test]
    fn session_settings_round_up_and_cap() {
        assert_eq!(
            session_settings_sql(None, None),
            "SET statement_timeout = 0; SET lock_timeout = 0"
        );
        assert_eq!(
            session_settings_sql(
                Some(Duration::from_micros(1)),
                Some(Duration::from_millis(1500))
            ),
            "SET statement_timeout = 1; SET lock_timeout = 1500"
        );
        assert_eq!(
            session_settings_sql(Some(Duration::MAX), Some(Duration::ZERO)),
            format!("SET statement_timeout = {}; SET lock_timeout = 0", i32::MAX)
        );
    }

    #[test]
    fn elapsed_is_at_least_one() {
        assert!(elapsed_ms(Instant::now()) >= 1);
    }
}
