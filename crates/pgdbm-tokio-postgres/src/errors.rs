//! Mapping driver and server errors to pgdbm's [`Error`]: one classifier for SQLSTATEs, one for
//! tokio-postgres errors, one place that decides how parameters appear.

use std::error::Error as _;

use pgdbm_core::{Error, Param, QueryError, QueryErrorKind, QueryParams};

use crate::wire::ServerError;

/// SQLSTATE `query_canceled`: what a cancelled or timed-out statement fails with.
pub(crate) const QUERY_CANCELED: &str = "57014";

/// SQLSTATE `read_only_sql_transaction`: a write reached a read-only session, typically a
/// server that became a standby in a failover.
pub(crate) const READ_ONLY_SQL_TRANSACTION: &str = "25006";

/// What a SQLSTATE means for pgdbm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Class {
    /// The error kind reported to the caller.
    pub(crate) kind: QueryErrorKind,
    /// The session is gone or unusable (class 08, 57P0x): discard the connection.
    pub(crate) ends_session: bool,
    /// The connection must not be used again (it is marked broken, so the pool discards it):
    /// every session-ending error, and 25006 (a write on a read-only server), so a pool whose
    /// server turned into a standby reconnects and finds the new primary instead of sending
    /// every later write to the standby.
    pub(crate) discards_connection: bool,
    /// Retrying the connect cannot help (authentication, unknown database, bad settings).
    pub(crate) permanent_connect_failure: bool,
}

/// The one SQLSTATE classifier: every server error (from tokio-postgres, the wire shim or a
/// connect attempt) goes through it.
pub(crate) fn classify(code: &str) -> Class {
    let ends_session = code.starts_with("08") || code.starts_with("57P");
    let kind = if code == QUERY_CANCELED {
        QueryErrorKind::Timeout
    } else if ends_session {
        QueryErrorKind::Connection
    } else {
        QueryErrorKind::Server
    };
    Class {
        kind,
        ends_session,
        discards_connection: ends_session || code == READ_ONLY_SQL_TRANSACTION,
        permanent_connect_failure: matches!(
            code,
            "28P01" | "28000" | "3D000" | "42501" | "42704" | "22023" | "0A000"
        ),
    }
}

/// How parameters appear in errors and logs: their `Debug` text when the user opted in
/// (`Config::log_parameters`), else only their number.
pub(crate) fn params_shown(params: &[Param<'_>], log_parameters: bool) -> QueryParams {
    if log_parameters && !params.is_empty() {
        QueryParams::Shown(params.iter().map(|p| format!("{p:?}")).collect())
    } else {
        QueryParams::masked(params.len())
    }
}

/// How tokio-postgres's error for a message it did not expect begins (a protocol desync, or the
/// CopyIn/CopyOutResponse of a plain-SQL `COPY ... FROM STDIN` / `TO STDOUT`).
const UNEXPECTED_MESSAGE: &str = "unexpected message";

/// True when `e` means the connection itself is unusable (closed socket, I/O failure, or a
/// server error that ends the session).
pub(crate) fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        return classify(db.code().code()).ends_session;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    // tokio-postgres reports an unexpected end of stream or protocol errors with these texts.
    let text = e.to_string();
    text.starts_with("connection closed")
        || text.starts_with(UNEXPECTED_MESSAGE)
        || text.starts_with("error communicating")
}

/// True when the connection that returned `e` must be discarded: it is unusable
/// ([`is_connection_error`]) or the server's SQLSTATE [discards it](Class::discards_connection).
pub(crate) fn discards_connection(e: &tokio_postgres::Error) -> bool {
    is_connection_error(e)
        || e.as_db_error()
            .is_some_and(|db| classify(db.code().code()).discards_connection)
}

/// Maps a tokio-postgres error from running `sql` with `n_params` parameters.
pub(crate) fn query_error(e: tokio_postgres::Error, sql: &str, n_params: usize) -> Error {
    let mut q = if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let mut q = QueryError::new(classify(code).kind, db.message().to_string(), sql);
        q.sqlstate = Some(code.to_string());
        q.constraint = db.constraint().map(str::to_string);
        q.schema = db.schema().map(str::to_string);
        q.table = db.table().map(str::to_string);
        q.column = db.column().map(str::to_string);
        q.detail = db.detail().map(str::to_string);
        q.hint = db.hint().map(str::to_string);
        q
    } else if is_connection_error(&e) {
        let text = e.to_string();
        let why = if text.starts_with(UNEXPECTED_MESSAGE) {
            "; `COPY ... FROM STDIN` or `COPY ... TO STDOUT` sent as plain SQL does this (rows go \
             in with `copy_records_to_table`, or `copy_in` on a connection)"
        } else {
            ""
        };
        QueryError::new(
            QueryErrorKind::Connection,
            format!("the connection to the server broke: {text}{why}; the connection is discarded, retry on a new one"),
            sql,
        )
    } else {
        let text = e.to_string();
        let kind =
            if text.starts_with("error serializing") || text.starts_with("error deserializing") {
                QueryErrorKind::Conversion
            } else {
                QueryErrorKind::Client
            };
        let message = match e.source() {
            Some(src) => format!("{text}: {src}"),
            None => text,
        };
        QueryError::new(kind, message, sql)
    };
    q.params = QueryParams::masked(n_params);
    q.source = Some(Box::new(e));
    q.into()
}

/// Maps a server error that the wire shim read for a later row of an `execute_many` chunk,
/// with the same fields [`query_error`] fills from a tokio-postgres error.
pub(crate) fn server_error(e: ServerError, sql: &str, n_params: usize) -> Error {
    let mut q = QueryError::new(classify(&e.code).kind, e.message.clone(), sql);
    q.sqlstate = Some(e.code.clone());
    q.constraint = e.constraint.clone();
    q.schema = e.schema.clone();
    q.table = e.table.clone();
    q.column = e.column.clone();
    q.detail = e.detail.clone();
    q.hint = e.hint.clone();
    q.params = QueryParams::masked(n_params);
    q.source = Some(Box::new(e));
    q.into()
}

/// A client-side error of `kind` for `sql`.
pub(crate) fn client_error(kind: QueryErrorKind, message: impl Into<String>, sql: &str) -> Error {
    QueryError::new(kind, message, sql).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified_once() {
        let c = classify("57014");
        assert_eq!(c.kind, QueryErrorKind::Timeout);
        assert!(!c.ends_session);
        for code in ["57P01", "08006", "08003"] {
            let c = classify(code);
            assert_eq!(c.kind, QueryErrorKind::Connection, "{code}");
            assert!(c.ends_session, "{code}");
        }
        let c = classify("23505");
        assert_eq!(c.kind, QueryErrorKind::Server);
        assert!(!c.ends_session && !c.permanent_connect_failure);
        assert!(classify("28P01").permanent_connect_failure);
        // A write on a read-only server: reported as the server's error, connection discarded.
        let c = classify("25006");
        assert_eq!(c.kind, QueryErrorKind::Server);
        assert!(c.discards_connection && !c.ends_session);
        assert!(classify("57P01").discards_connection && classify("08006").discards_connection);
        assert!(!classify("23505").discards_connection && !classify("25001").discards_connection);
        assert!(classify("3D000").permanent_connect_failure);
    }

    #[test]
    fn parameters_are_masked_unless_opted_in() {
        let a = 1_i32;
        let b = "secret";
        let params: [Param<'_>; 2] = [&a, &b];
        assert_eq!(params_shown(&params, false), QueryParams::masked(2));
        assert_eq!(
            params_shown(&params, true),
            QueryParams::Shown(vec!["1".to_string(), "\"secret\"".to_string()])
        );
        assert_eq!(params_shown(&[], true), QueryParams::masked(0));
    }
}
