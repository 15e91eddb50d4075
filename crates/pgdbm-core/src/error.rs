//! The one error type of pgdbm.
//!
//! Every error class of Python pgdbm (`ConfigurationError`, `ConnectionError`, `PoolError`,
//! `QueryError`, `SchemaError`, `MigrationError`, `DatabaseTestError`, `TransactionError`,
//! `MonitoringError`) is a variant of [`Error`], carrying the same context fields.
//!
//! No variant ever carries a password: connection errors name host, port, database and attempts
//! only, and query errors show parameters masked unless the caller opted in
//! (see [`QueryParams`]).

use std::fmt;

use crate::SqlState;

/// A boxed error from a driver or the operating system, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used throughout pgdbm.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Longest SQL text (in characters) shown in an error's `Display`; the full text stays in the
/// [`QueryError::query`] field.
pub const MAX_DISPLAYED_SQL: usize = 200;

/// The error type of every pgdbm crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid or missing (Python: `ConfigurationError`).
    #[error("configuration error in `{field}`: {message}")]
    Configuration {
        /// The configuration field at fault (Python: `config_field`).
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// Connecting to the server failed, after retries (Python: `ConnectionError`).
    #[error(
        "could not connect to {host}:{port} database `{database}` after {attempts} attempt(s): {message}"
    )]
    Connection {
        /// Host (or socket directory) that was tried last.
        host: String,
        /// Port that was tried last.
        port: u16,
        /// Database name.
        database: String,
        /// Number of attempts made.
        attempts: u32,
        /// What went wrong, without any password.
        message: String,
        /// The last underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// The connection pool could not hand out a connection (Python: `PoolError`).
    #[error("pool error: {message}")]
    Pool {
        /// What went wrong, e.g. an acquire timeout with the number of connections in use.
        message: String,
        /// Connections in use when the error happened, when known.
        in_use: Option<usize>,
        /// Maximum pool size, when known.
        max_size: Option<usize>,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// A query failed (Python: `QueryError`). Boxed to keep `Result` small.
    #[error(transparent)]
    Query(Box<QueryError>),

    /// A schema or identifier is invalid (Python: `SchemaError`).
    #[error("schema error{}: {message}", fmt_opt(" for", schema))]
    Schema {
        /// The offending schema or identifier.
        schema: Option<String>,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// A migration failed (Python: `MigrationError`).
    #[error("migration error{}: {message}", fmt_opt(" in", file))]
    Migration {
        /// The migration file at fault (Python: `migration_file`).
        file: Option<String>,
        /// What went wrong.
        message: String,
        /// The underlying error (often a [`Error::Query`]).
        #[source]
        source: Option<Box<Error>>,
    },

    /// A test database operation failed (Python: `DatabaseTestError`).
    #[error("test database error{}: {message}", fmt_opt(" for", name))]
    TestDatabase {
        /// The test database name (Python: `test_db_name`).
        name: Option<String>,
        /// What went wrong.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// A transaction could not be started, committed or rolled back (Python: `TransactionError`).
    #[error("transaction error: {message}")]
    Transaction {
        /// What went wrong.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<Error>>,
    },

    /// Monitoring failed (Python: `MonitoringError`).
    #[error("monitoring error: {message}")]
    Monitoring {
        /// What went wrong.
        message: String,
    },
}

fn fmt_opt(prefix: &str, value: &Option<String>) -> String {
    match value {
        Some(v) => format!("{prefix} `{v}`"),
        None => String::new(),
    }
}

impl Error {
    /// A [`Error::Configuration`] for `field`.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Configuration {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A [`Error::Schema`] naming the offending identifier.
    pub fn schema(schema: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Schema {
            schema: Some(schema.into()),
            message: message.into(),
        }
    }

    /// A [`Error::Pool`] with a message only.
    pub fn pool(message: impl Into<String>) -> Self {
        Error::Pool {
            message: message.into(),
            in_use: None,
            max_size: None,
            source: None,
        }
    }

    /// A [`Error::Migration`] naming `file`.
    pub fn migration(file: Option<String>, message: impl Into<String>) -> Self {
        Error::Migration {
            file,
            message: message.into(),
            source: None,
        }
    }

    /// A [`Error::Transaction`] with a message only.
    pub fn transaction(message: impl Into<String>) -> Self {
        Error::Transaction {
            message: message.into(),
            source: None,
        }
    }

    /// The query error inside, if this is an [`Error::Query`].
    pub fn as_query(&self) -> Option<&QueryError> {
        match self {
            Error::Query(q) => Some(q),
            _ => None,
        }
    }

    /// The SQLSTATE code of a server error (e.g. `"23505"` for a unique violation), if any.
    pub fn sqlstate(&self) -> Option<&str> {
        self.as_query().and_then(|q| q.sqlstate.as_deref())
    }

    /// True when this error is a query timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self.as_query(), Some(q) if q.kind == QueryErrorKind::Timeout)
    }

    /// The query error this error is or wraps: itself for [`Error::Query`], else the source of
    /// an [`Error::Transaction`] or [`Error::Migration`] (a failed `COMMIT` is a transaction
    /// error whose source is the server's error), followed to the innermost query error.
    pub fn query_error(&self) -> Option<&QueryError> {
        let mut e = self;
        loop {
            match e {
                Error::Query(q) => return Some(q),
                Error::Transaction {
                    source: Some(inner),
                    ..
                }
                | Error::Migration {
                    source: Some(inner),
                    ..
                } => e = inner,
                _ => return None,
            }
        }
    }

    /// The typed SQLSTATE of the server error this error is or wraps (see
    /// [`query_error`](Error::query_error)).
    pub fn sql_state(&self) -> Option<SqlState> {
        self.query_error()
            .and_then(|q| q.sqlstate.as_deref())
            .and_then(SqlState::new)
    }

    fn has_state(&self, state: SqlState) -> bool {
        self.sql_state() == Some(state)
    }

    /// `23505`: a unique constraint or index rejected the row. See
    /// [`constraint`](Error::constraint) for which one.
    pub fn is_unique_violation(&self) -> bool {
        self.has_state(SqlState::UNIQUE_VIOLATION)
    }

    /// `23503`: a foreign key rejected the row (or the delete of a referenced row).
    pub fn is_foreign_key_violation(&self) -> bool {
        self.has_state(SqlState::FOREIGN_KEY_VIOLATION)
    }

    /// `23514`: a CHECK constraint rejected the row.
    pub fn is_check_violation(&self) -> bool {
        self.has_state(SqlState::CHECK_VIOLATION)
    }

    /// `23502`: NULL in a NOT NULL column. See [`column`](Error::column).
    pub fn is_not_null_violation(&self) -> bool {
        self.has_state(SqlState::NOT_NULL_VIOLATION)
    }

    /// `40001`: the transaction could not be serialized with concurrent ones; run it again.
    pub fn is_serialization_failure(&self) -> bool {
        self.has_state(SqlState::SERIALIZATION_FAILURE)
    }

    /// `40P01`: the server broke a deadlock by aborting this transaction; run it again.
    pub fn is_deadlock(&self) -> bool {
        self.has_state(SqlState::DEADLOCK_DETECTED)
    }

    /// True when running the whole transaction again may succeed and cannot do anything twice:
    /// a serialization failure, a deadlock, or a connection that failed before any statement of
    /// the transaction ran (connecting, or at `BEGIN`). False for everything else, in particular
    /// for constraint violations and for [`QueryErrorKind::CommitOutcomeUnknown`] (the
    /// transaction may have committed).
    pub fn is_retryable(&self) -> bool {
        if matches!(self, Error::Connection { .. }) {
            return true;
        }
        match self.query_error() {
            Some(q) if q.kind == QueryErrorKind::CommitOutcomeUnknown => false,
            Some(q) if q.nothing_ran && q.kind == QueryErrorKind::Connection => true,
            Some(_) => self
                .sql_state()
                .is_some_and(|s| s.is_transaction_rollback()),
            None => false,
        }
    }

    /// The constraint the server named (unique, foreign key, check, exclusion violations).
    pub fn constraint(&self) -> Option<&str> {
        self.query_error().and_then(|q| q.constraint.as_deref())
    }

    /// The table the server named.
    pub fn table(&self) -> Option<&str> {
        self.query_error().and_then(|q| q.table.as_deref())
    }

    /// The column the server named (e.g. of a not-null violation).
    pub fn column(&self) -> Option<&str> {
        self.query_error().and_then(|q| q.column.as_deref())
    }

    /// The schema of the table or constraint the server named.
    pub fn table_schema(&self) -> Option<&str> {
        self.query_error().and_then(|q| q.schema.as_deref())
    }
}

impl From<QueryError> for Error {
    fn from(e: QueryError) -> Self {
        Error::Query(Box::new(e))
    }
}

/// What kind of failure a [`QueryError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QueryErrorKind {
    /// The server rejected the statement (it has a SQLSTATE).
    Server,
    /// The statement ran longer than its timeout and was cancelled on the server.
    Timeout,
    /// The connection broke while the statement was running.
    Connection,
    /// A parameter could not be encoded or a column could not be decoded into the requested type.
    Conversion,
    /// The caller misused the API (wrong number of parameters, missing column, no rows...).
    Client,
    /// A `COMMIT` (or `execute_many`'s own `COMMIT`) was sent but the connection failed or
    /// timed out before the server answered: the transaction may have committed or not. Do not
    /// blindly retry writes that are not idempotent; check whether the work is there (by a
    /// key the transaction wrote) or make the transaction idempotent, then retry.
    CommitOutcomeUnknown,
}

impl fmt::Display for QueryErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueryErrorKind::Server => "server error",
            QueryErrorKind::Timeout => "timeout",
            QueryErrorKind::Connection => "connection error",
            QueryErrorKind::Conversion => "conversion error",
            QueryErrorKind::Client => "client error",
            QueryErrorKind::CommitOutcomeUnknown => "commit outcome unknown",
        })
    }
}

/// Parameters of a failed query as they appear in errors and logs.
///
/// By default only their number is kept ([`QueryParams::Masked`]); a user who opts in
/// (`Config::log_parameters`) gets their `Debug` text ([`QueryParams::Shown`]).
#[derive(Clone, PartialEq, Eq, Default)]
pub enum QueryParams {
    /// No parameters.
    #[default]
    None,
    /// `n` parameters, values hidden.
    Masked(usize),
    /// The parameters' `Debug` renderings (only when the user opted in).
    Shown(Vec<String>),
}

impl QueryParams {
    /// Masked parameters: only their count is kept.
    pub fn masked(count: usize) -> Self {
        if count == 0 {
            QueryParams::None
        } else {
            QueryParams::Masked(count)
        }
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        match self {
            QueryParams::None => 0,
            QueryParams::Masked(n) => *n,
            QueryParams::Shown(v) => v.len(),
        }
    }

    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for QueryParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for QueryParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryParams::None => f.write_str("[]"),
            QueryParams::Masked(n) => {
                f.write_str("[")?;
                for i in 1..=*n {
                    if i > 1 {
                        f.write_str(", ")?;
                    }
                    write!(f, "${i}=***")?;
                }
                f.write_str("]")
            }
            QueryParams::Shown(v) => {
                f.write_str("[")?;
                for (i, p) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "${}={}", i + 1, p)?;
                }
                f.write_str("]")
            }
        }
    }
}

/// A failed query, with the context Python pgdbm's `QueryError` has and the server's fields.
///
/// The server's DETAIL often quotes row values (`Key (email)=(alice@x) already exists`), so
/// `Display` and `Debug` show it only when [`values_shown`](QueryError::values_shown) is set
/// (the adapters set it from `Config::log_parameters`); the [`detail`](QueryError::detail) field
/// itself always holds it.
#[non_exhaustive]
pub struct QueryError {
    /// What kind of failure this is.
    pub kind: QueryErrorKind,
    /// The server's (or client's) message.
    pub message: String,
    /// The SQL that failed, as sent to the server (after template rendering).
    pub query: String,
    /// The parameters, masked unless the user opted in.
    pub params: QueryParams,
    /// SQLSTATE code for server errors (e.g. `23505`).
    pub sqlstate: Option<String>,
    /// Constraint name, when the server gives one.
    pub constraint: Option<String>,
    /// Schema name, when the server gives one.
    pub schema: Option<String>,
    /// Table name, when the server gives one.
    pub table: Option<String>,
    /// Column name, when the server gives one.
    pub column: Option<String>,
    /// The server's DETAIL field (always kept here; shown by `Display`/`Debug` only when
    /// [`values_shown`](QueryError::values_shown)).
    pub detail: Option<String>,
    /// The server's HINT field.
    pub hint: Option<String>,
    /// For [`execute_many`](crate::Connection::execute_many): the 0-based index of the row that failed.
    pub row: Option<usize>,
    /// The underlying driver error.
    pub source: Option<BoxError>,
    /// Values may appear in `Display`/`Debug` (the user opted in with `Config::log_parameters`):
    /// then [`detail`](QueryError::detail) is shown; otherwise it is replaced by a note.
    /// Default `false`.
    pub values_shown: bool,
    /// True when the connection failed before any statement of the transaction ran (at
    /// `BEGIN`): running the transaction again cannot do anything twice (see
    /// [`Error::is_retryable`]). Set by the manager.
    pub nothing_ran: bool,
}

impl QueryError {
    /// A new query error of `kind` with `message` for `query`; other fields empty.
    pub fn new(kind: QueryErrorKind, message: impl Into<String>, query: impl Into<String>) -> Self {
        QueryError {
            kind,
            message: message.into(),
            query: query.into(),
            params: QueryParams::None,
            sqlstate: None,
            constraint: None,
            schema: None,
            table: None,
            column: None,
            detail: None,
            hint: None,
            row: None,
            source: None,
            values_shown: false,
            nothing_ran: false,
        }
    }

    /// Sets [`values_shown`](QueryError::values_shown).
    pub fn with_values_shown(mut self, shown: bool) -> Self {
        self.values_shown = shown;
        self
    }

    /// The DETAIL as `Display`/`Debug` show it: the text when values may be shown, else a note.
    fn shown_detail(&self) -> Option<&str> {
        self.detail
            .as_deref()
            .map(|d| if self.values_shown { d } else { HIDDEN_DETAIL })
    }

    /// Sets the parameters shown for this error.
    pub fn with_params(mut self, params: QueryParams) -> Self {
        self.params = params;
        self
    }

    /// Sets the underlying error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }
}

/// `sql` cut to at most `max` characters (on a char boundary), with `…` when cut.
pub fn truncate_sql(sql: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match sql.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(sql),
        Some((idx, _)) => std::borrow::Cow::Owned(format!("{}…", &sql[..idx])),
    }
}

/// What `Display`/`Debug` show in place of a DETAIL when values are not shown.
const HIDDEN_DETAIL: &str =
    "(hidden: may contain row values; set Config::log_parameters to show it)";

/// `Debug` of [`QueryError::source`]: the driver's own `Debug` repeats the DETAIL, so it is
/// only shown when values are.
struct SourceDebug<'a>(&'a QueryError);

impl fmt::Debug for SourceDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.source {
            None => f.write_str("None"),
            Some(s) if self.0.values_shown => write!(f, "Some({s:?})"),
            Some(_) => f.write_str("Some(<driver error; hidden: may contain row values>)"),
        }
    }
}

impl fmt::Debug for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("query", &self.query)
            .field("params", &self.params)
            .field("sqlstate", &self.sqlstate)
            .field("constraint", &self.constraint)
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("column", &self.column)
            .field("detail", &self.shown_detail())
            .field("hint", &self.hint)
            .field("row", &self.row)
            .field("source", &SourceDebug(self))
            .field("values_shown", &self.values_shown)
            .finish()
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "query failed ({}", self.kind)?;
        if let Some(code) = &self.sqlstate {
            write!(f, ", SQLSTATE {code}")?;
        }
        write!(f, "): {}", self.message)?;
        if let Some(d) = self.shown_detail() {
            write!(f, "; detail: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; hint: {h}")?;
        }
        if let Some(c) = &self.constraint {
            write!(f, "; constraint: {c}")?;
        }
        if let Some(t) = &self.table {
            match &self.schema {
                Some(s) => write!(f, "; table: {s}.{t}")?,
                None => write!(f, "; table: {t}")?,
            }
        }
        if let Some(c) = &self.column {
            write!(f, "; column: {c}")?;
        }
        if let Some(r) = self.row {
            write!(f, "; failing row: {r}")?;
        }
        if !self.query.trim().is_empty() {
            write!(
                f,
                "; query: {}",
                truncate_sql(self.query.trim(), MAX_DISPLAYED_SQL)
            )?;
        }
        if !self.params.is_empty() {
            write!(f, "; params: {}", self.params)?;
        }
        Ok(())
    }
}

impl std::error::Error for QueryError {
    /// The driver error, except when it carries a DETAIL that may not be shown
    /// ([`values_shown`](QueryError::values_shown) off): the driver's `Display` repeats the
    /// DETAIL, and error reporters print the whole chain. The [`source`](QueryError::source)
    /// field always holds it.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        if self.detail.is_some() && !self.values_shown {
            return None;
        }
        self.source
            .as_ref()
            .map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_error_masks_params_and_truncates_sql() {
        let long = format!("SELECT {}", "x, ".repeat(200));
        let e: Error = QueryError::new(QueryErrorKind::Server, "boom", long.clone())
            .with_params(QueryParams::masked(2))
            .into();
        let s = e.to_string();
        assert!(s.contains("$1=***, $2=***"), "{s}");
        assert!(s.contains('…'));
        assert!(s.len() < long.len());
        assert!(!s.contains("secret"));
    }

    #[test]
    fn detail_only_shown_when_values_are() {
        let mut q = QueryError::new(QueryErrorKind::Server, "duplicate key", "INSERT ...");
        q.detail = Some("Key (email)=(alice@x) already exists.".into());
        for out in [q.to_string(), format!("{q:?}"), format!("{q:#?}")] {
            assert!(!out.contains("alice@x"), "{out}");
            assert!(out.contains("log_parameters"), "{out}");
        }
        let q = q.with_values_shown(true);
        assert!(q.to_string().contains("alice@x"));
        assert!(format!("{q:?}").contains("alice@x"));
        assert_eq!(
            q.detail.as_deref(),
            Some("Key (email)=(alice@x) already exists.")
        );
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        let s = "é".repeat(10);
        assert_eq!(truncate_sql(&s, 3), "ééé…");
        assert_eq!(truncate_sql(&s, 10), s.as_str());
    }

    fn server(code: &str) -> Error {
        let mut q = QueryError::new(QueryErrorKind::Server, "x", "SELECT 1");
        q.sqlstate = Some(code.into());
        q.constraint = Some("t_pkey".into());
        q.into()
    }

    #[test]
    fn typed_helpers_look_through_transaction_errors() {
        let e = server("23505");
        assert!(e.is_unique_violation() && !e.is_retryable());
        assert_eq!(e.constraint(), Some("t_pkey"));
        let commit = Error::Transaction {
            message: "commit failed".into(),
            source: Some(Box::new(server("40001"))),
        };
        assert!(commit.is_serialization_failure() && commit.is_retryable());
        assert!(server("40P01").is_deadlock() && server("40P01").is_retryable());
        assert!(server("23503").is_foreign_key_violation());
        assert!(server("23514").is_check_violation());
        assert!(server("23502").is_not_null_violation());
        let mut unknown = QueryError::new(QueryErrorKind::CommitOutcomeUnknown, "x", "COMMIT");
        unknown.sqlstate = Some("40001".into());
        assert!(!Error::from(unknown).is_retryable());
        let mut lost = QueryError::new(QueryErrorKind::Connection, "broke", "BEGIN");
        assert!(
            !Error::from(QueryError::new(QueryErrorKind::Connection, "broke", "x")).is_retryable()
        );
        lost.nothing_ran = true;
        assert!(Error::from(lost).is_retryable());
        assert!(!Error::pool("x").is_retryable());
    }

    #[test]
    fn sqlstate_and_timeout_helpers() {
        let mut q = QueryError::new(QueryErrorKind::Timeout, "timed out", "SELECT 1");
        q.sqlstate = Some("57014".into());
        let e: Error = q.into();
        assert!(e.is_timeout());
        assert_eq!(e.sqlstate(), Some("57014"));
        assert!(!Error::pool("x").is_timeout());
    }
}
