//! [`PgRow`]: a tokio-postgres row behind pgdbm's [`Row`] trait.

use std::error::Error as _;

use pgdbm_core::{QueryError, QueryErrorKind, Result, Row};
use postgres_types::{FromSql, Type};

/// A result row: a [`tokio_postgres::Row`] implementing [`pgdbm_core::Row`].
pub struct PgRow(tokio_postgres::Row);

impl PgRow {
    /// Wraps a tokio-postgres row.
    pub fn new(row: tokio_postgres::Row) -> Self {
        PgRow(row)
    }

    /// The tokio-postgres row inside.
    pub fn into_inner(self) -> tokio_postgres::Row {
        self.0
    }

    /// The tokio-postgres row inside, borrowed.
    pub fn as_inner(&self) -> &tokio_postgres::Row {
        &self.0
    }
}

impl std::fmt::Debug for PgRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRow")
            .field("columns", &self.column_names())
            .finish()
    }
}

impl From<tokio_postgres::Row> for PgRow {
    fn from(row: tokio_postgres::Row) -> Self {
        PgRow(row)
    }
}

fn conversion(message: String) -> pgdbm_core::Error {
    QueryError::new(QueryErrorKind::Conversion, message, String::new()).into()
}

impl Row for PgRow {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn column_name(&self, idx: usize) -> Option<&str> {
        self.0.columns().get(idx).map(|c| c.name())
    }

    fn column_type(&self, idx: usize) -> Option<&Type> {
        self.0.columns().get(idx).map(|c| c.type_())
    }

    fn get_at<'a, T: FromSql<'a>>(&'a self, idx: usize) -> Result<T> {
        let Some(col) = self.0.columns().get(idx) else {
            return Err(QueryError::new(
                QueryErrorKind::Client,
                format!(
                    "no column at index {idx} in a row of {} column(s)",
                    self.0.len()
                ),
                String::new(),
            )
            .into());
        };
        // The type check tokio-postgres does first is repeated only to word its error.
        self.0.try_get::<usize, T>(idx).map_err(|e| {
            let rust = std::any::type_name::<T>();
            if !T::accepts(col.type_()) {
                return conversion(format!(
                    "column `{}` (index {idx}) has PostgreSQL type `{}`, which cannot be decoded as \
                     Rust type `{rust}`; read it as a matching type or cast it in SQL",
                    col.name(),
                    col.type_()
                ));
            }
            let cause = e
                .source()
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string());
            let hint = if cause.to_ascii_lowercase().contains("null") {
                "; use Option<_> for a nullable column"
            } else {
                ""
            };
            conversion(format!(
                "column `{}` (index {idx}) of PostgreSQL type `{}` could not be decoded as \
                 Rust type `{rust}`: {cause}{hint}",
                col.name(),
                col.type_()
            ))
        })
    }
}
