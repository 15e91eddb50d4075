//! [`SqlState`]: a typed SQLSTATE code, driver-free, with the codes pgdbm users test for.
//!
//! Server errors carry their code as text in [`QueryError::sqlstate`](crate::QueryError);
//! [`Error::sql_state`](crate::Error::sql_state) gives it typed, and the `is_*` helpers of
//! [`Error`](crate::Error) answer the common questions (unique violation, serialization
//! failure, ...). Codes are PostgreSQL's (Appendix A of its manual); any 5-character code is
//! representable, so codes of newer servers are not lost.

use std::fmt;

/// A SQLSTATE code: five ASCII letters or digits, e.g. `23505` ([`SqlState::UNIQUE_VIOLATION`]).
///
/// ```
/// use pgdbm_core::SqlState;
/// let s = SqlState::new("23505").unwrap();
/// assert_eq!(s, SqlState::UNIQUE_VIOLATION);
/// assert_eq!((s.code(), s.class()), ("23505", "23"));
/// assert!(s.is_integrity_constraint_violation());
/// assert!(SqlState::new("2350").is_none());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SqlState([u8; 5]);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $code:literal, $cond:literal;)*) => {
        impl SqlState {
            $(
                $(#[$doc])*
                pub const $name: SqlState = SqlState::from_const($code);
            )*

            /// The PostgreSQL condition name of a code pgdbm names (e.g. `unique_violation`).
            pub fn condition_name(&self) -> Option<&'static str> {
                $(
                    if *self == SqlState::$name {
                        return Some($cond);
                    }
                )*
                None
            }

            #[cfg(test)]
            const ALL: &'static [(&'static str, SqlState, &'static str)] =
                &[$(($code, SqlState::$name, $cond)),*];
        }
    };
}

codes! {
    /// `00000` successful_completion.
    SUCCESSFUL_COMPLETION = "00000", "successful_completion";
    /// `08000` connection_exception (class 08: the connection is gone).
    CONNECTION_EXCEPTION = "08000", "connection_exception";
    /// `08003` connection_does_not_exist.
    CONNECTION_DOES_NOT_EXIST = "08003", "connection_does_not_exist";
    /// `08006` connection_failure.
    CONNECTION_FAILURE = "08006", "connection_failure";
    /// `23000` integrity_constraint_violation (class 23).
    INTEGRITY_CONSTRAINT_VIOLATION = "23000", "integrity_constraint_violation";
    /// `23001` restrict_violation.
    RESTRICT_VIOLATION = "23001", "restrict_violation";
    /// `23502` not_null_violation.
    NOT_NULL_VIOLATION = "23502", "not_null_violation";
    /// `23503` foreign_key_violation.
    FOREIGN_KEY_VIOLATION = "23503", "foreign_key_violation";
    /// `23505` unique_violation.
    UNIQUE_VIOLATION = "23505", "unique_violation";
    /// `23514` check_violation.
    CHECK_VIOLATION = "23514", "check_violation";
    /// `23P01` exclusion_violation.
    EXCLUSION_VIOLATION = "23P01", "exclusion_violation";
    /// `25000` invalid_transaction_state.
    INVALID_TRANSACTION_STATE = "25000", "invalid_transaction_state";
    /// `25006` read_only_sql_transaction (a write in a READ ONLY transaction).
    READ_ONLY_SQL_TRANSACTION = "25006", "read_only_sql_transaction";
    /// `25P02` in_failed_sql_transaction.
    IN_FAILED_SQL_TRANSACTION = "25P02", "in_failed_sql_transaction";
    /// `40000` transaction_rollback (class 40).
    TRANSACTION_ROLLBACK = "40000", "transaction_rollback";
    /// `40001` serialization_failure: retry the whole transaction.
    SERIALIZATION_FAILURE = "40001", "serialization_failure";
    /// `40P01` deadlock_detected: retry the whole transaction.
    DEADLOCK_DETECTED = "40P01", "deadlock_detected";
    /// `42601` syntax_error.
    SYNTAX_ERROR = "42601", "syntax_error";
    /// `42501` insufficient_privilege.
    INSUFFICIENT_PRIVILEGE = "42501", "insufficient_privilege";
    /// `42703` undefined_column.
    UNDEFINED_COLUMN = "42703", "undefined_column";
    /// `42P01` undefined_table.
    UNDEFINED_TABLE = "42P01", "undefined_table";
    /// `42883` undefined_function.
    UNDEFINED_FUNCTION = "42883", "undefined_function";
    /// `42P07` duplicate_table.
    DUPLICATE_TABLE = "42P07", "duplicate_table";
    /// `42710` duplicate_object.
    DUPLICATE_OBJECT = "42710", "duplicate_object";
    /// `22P02` invalid_text_representation.
    INVALID_TEXT_REPRESENTATION = "22P02", "invalid_text_representation";
    /// `22003` numeric_value_out_of_range.
    NUMERIC_VALUE_OUT_OF_RANGE = "22003", "numeric_value_out_of_range";
    /// `22012` division_by_zero.
    DIVISION_BY_ZERO = "22012", "division_by_zero";
    /// `55P03` lock_not_available (`NOWAIT`, `lock_timeout`).
    LOCK_NOT_AVAILABLE = "55P03", "lock_not_available";
    /// `57014` query_canceled (a cancelled or timed-out statement).
    QUERY_CANCELED = "57014", "query_canceled";
    /// `57P01` admin_shutdown (e.g. `pg_terminate_backend`).
    ADMIN_SHUTDOWN = "57P01", "admin_shutdown";
    /// `57P02` crash_shutdown.
    CRASH_SHUTDOWN = "57P02", "crash_shutdown";
    /// `57P03` cannot_connect_now.
    CANNOT_CONNECT_NOW = "57P03", "cannot_connect_now";
    /// `28P01` invalid_password.
    INVALID_PASSWORD = "28P01", "invalid_password";
    /// `3D000` invalid_catalog_name (no such database).
    INVALID_CATALOG_NAME = "3D000", "invalid_catalog_name";
    /// `53300` too_many_connections.
    TOO_MANY_CONNECTIONS = "53300", "too_many_connections";
}

impl SqlState {
    /// Parses a code: exactly five ASCII digits or upper-case letters (lower case is accepted
    /// and upper-cased). `None` for anything else.
    pub fn new(code: &str) -> Option<SqlState> {
        let bytes: [u8; 5] = code.as_bytes().try_into().ok()?;
        let mut out = [0u8; 5];
        for (o, b) in out.iter_mut().zip(bytes) {
            if !b.is_ascii_alphanumeric() {
                return None;
            }
            *o = b.to_ascii_uppercase();
        }
        Some(SqlState(out))
    }

    const fn from_const(code: &str) -> SqlState {
        let b = code.as_bytes();
        // Only called with the 5-character literals above (checked by a unit test).
        SqlState([b[0], b[1], b[2], b[3], b[4]])
    }

    /// The code as text, e.g. `"23505"`.
    pub fn code(&self) -> &str {
        // Invariant: built only from ASCII alphanumerics (`new`) or ASCII literals.
        std::str::from_utf8(&self.0).unwrap_or("?????")
    }

    /// The class: the first two characters, e.g. `"23"` (integrity constraint violation).
    pub fn class(&self) -> &str {
        &self.code()[..2]
    }

    /// Class 23: a constraint rejected the row.
    pub fn is_integrity_constraint_violation(&self) -> bool {
        self.class() == "23"
    }

    /// Class 40 (transaction rollback): 40001 serialization failure or 40P01 deadlock, the
    /// codes a transaction is retried on.
    pub fn is_transaction_rollback(&self) -> bool {
        *self == SqlState::SERIALIZATION_FAILURE || *self == SqlState::DEADLOCK_DETECTED
    }
}

impl fmt::Debug for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.condition_name() {
            Some(name) => write!(f, "SqlState({} {name})", self.code()),
            None => write!(f, "SqlState({})", self.code()),
        }
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::str::FromStr for SqlState {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<SqlState> {
        SqlState::new(s).ok_or_else(|| {
            crate::Error::config(
                "sqlstate",
                format!("`{s}` is not a SQLSTATE: expected five ASCII letters or digits"),
            )
        })
    }
}

impl PartialEq<str> for SqlState {
    fn eq(&self, other: &str) -> bool {
        self.code().eq_ignore_ascii_case(other)
    }
}

impl PartialEq<&str> for SqlState {
    fn eq(&self, other: &&str) -> bool {
        self.code().eq_ignore_ascii_case(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn constants_are_valid_and_named() {
        for (code, state, name) in SqlState::ALL {
            assert_eq!(SqlState::new(code), Some(*state));
            assert_eq!(state.condition_name(), Some(*name));
        }
        assert_eq!(SqlState::UNIQUE_VIOLATION.code(), "23505");
        assert_eq!(
            SqlState::DEADLOCK_DETECTED.condition_name(),
            Some("deadlock_detected")
        );
        assert_eq!(
            format!("{:?}", SqlState::SERIALIZATION_FAILURE),
            "SqlState(40001 serialization_failure)"
        );
        assert_eq!(SqlState::new("23p01"), Some(SqlState::EXCLUSION_VIOLATION));
        assert!(SqlState::new("2350é").is_none());
        assert!(SqlState::new("235055").is_none());
        assert!("x".parse::<SqlState>().is_err());
        assert_eq!(
            SqlState::new("XX000").map(|s| s.condition_name()),
            Some(None)
        );
        assert!(SqlState::SERIALIZATION_FAILURE.is_transaction_rollback());
        assert!(!SqlState::TRANSACTION_ROLLBACK.is_transaction_rollback());
    }

    proptest! {
        #[test]
        fn parse_round_trips(code in "[0-9A-Z]{5}") {
            let s = SqlState::new(&code).unwrap();
            prop_assert_eq!(s.code(), code.as_str());
            prop_assert_eq!(s.to_string().parse::<SqlState>().unwrap(), s);
            prop_assert_eq!(s.class(), &code[..2]);
        }

        #[test]
        fn anything_else_is_rejected(code in "\\PC{0,8}") {
            let valid = code.len() == 5 && code.bytes().all(|b| b.is_ascii_alphanumeric());
            prop_assert_eq!(SqlState::new(&code).is_some(), valid);
        }
    }
}
