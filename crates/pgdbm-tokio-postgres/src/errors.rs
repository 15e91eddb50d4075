//! Mapping tokio-postgres errors to pgdbm's [`Error`].

use std::error::Error as _;

use pgdbm_core::{Error, QueryError, QueryErrorKind, QueryParams};

use crate::wire::ServerError;

/// SQLSTATE `query_canceled`: what a cancelled or timed-out statement fails with.
pub(crate) const QUERY_CANCELED: &str = "57014";

/// Parameters as shown in errors: masked unless the user opted in (which the adapter cannot
/// honour for `dyn ToSql` values, whose `Debug` is not available, so they are always masked).
pub(crate) fn params_for(count: usize) -> QueryParams {
    QueryParams::masked(count)
}

/// True when `e` means the connection itself is unusable (closed socket, I/O failure, or a
/// server error of class 08 / 57P0x that terminates the session).
pub(crate) fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return code.starts_with("08") || code.starts_with("57P");
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
        || text.starts_with("unexpected message")
        || text.starts_with("error communicating")
}

/// Maps a tokio-postgres error from running `sql` with `n_params` parameters.
pub(crate) fn query_error(e: tokio_postgres::Error, sql: &str, n_params: usize) -> Error {
    let mut q = if let Some(db) = e.as_db_error() {
        let code = db.code().code().to_string();
        let kind = if code == QUERY_CANCELED {
            QueryErrorKind::Timeout
        } else if code.starts_with("08") || code.starts_with("57P") {
            QueryErrorKind::Connection
        } else {
            QueryErrorKind::Server
        };
        let mut q = QueryError::new(kind, db.message().to_string(), sql);
        q.sqlstate = Some(code);
        q.constraint = db.constraint().map(str::to_string);
        q.schema = db.schema().map(str::to_string);
        q.table = db.table().map(str::to_string);
        q.column = db.column().map(str::to_string);
        q.detail = db.detail().map(str::to_string);
        q.hint = db.hint().map(str::to_string);
        q
    } else if is_connection_error(&e) {
        QueryError::new(
            QueryErrorKind::Connection,
            format!("the connection to the server broke: {e}; the connection is discarded, retry on a new one"),
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
    q.params = params_for(n_params);
    q.source = Some(Box::new(e));
    q.into()
}

/// Maps a server error that the wire shim read for a later row of an `execute_many` chunk,
/// with the same fields [`query_error`] fills from a tokio-postgres error.
pub(crate) fn server_error(e: ServerError, sql: &str, n_params: usize) -> Error {
    let kind = if e.code == QUERY_CANCELED {
        QueryErrorKind::Timeout
    } else if e.code.starts_with("08") || e.code.starts_with("57P") {
        QueryErrorKind::Connection
    } else {
        QueryErrorKind::Server
    };
    let mut q = QueryError::new(kind, e.message.clone(), sql);
    q.sqlstate = Some(e.code.clone());
    q.constraint = e.constraint.clone();
    q.schema = e.schema.clone();
    q.table = e.table.clone();
    q.column = e.column.clone();
    q.detail = e.detail.clone();
    q.hint = e.hint.clone();
    q.params = params_for(n_params);
    q.source = Some(Box::new(e));
    q.into()
}

/// A client-side error of `kind` for `sql`.
pub(crate) fn client_error(kind: QueryErrorKind, message: impl Into<String>, sql: &str) -> Error {
    QueryError::new(kind, message, sql).into()
}
