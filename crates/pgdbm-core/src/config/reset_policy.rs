//! [`ResetPolicy`]: what the pool does to a session when a connection is released.

use std::str::FromStr;

use crate::error::{Error, Result};

#[cfg(doc)]
use super::Config;

/// What the pool does to a connection's session state when a borrower releases it
/// ([`Config::reset_on_release`]).
///
/// Either way a connection released inside a transaction (or a failed one) is rolled back at
/// once, one with a statement still running is cancelled and settled first, and one in an
/// unknown state is closed: no borrower ever gets a connection inside a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ResetPolicy {
    /// Only end the transaction (`ROLLBACK` when one is open). Session state a borrower set
    /// (`SET`, `SET ROLE`, temp tables, `LISTEN`, session advisory locks, SQL `PREPARE`) stays
    /// on the connection and is seen by the next borrower. No extra round trip on a clean
    /// release.
    #[default]
    Rollback,
    /// asyncpg's reset, for connections that ran statements since checkout: unlock advisory
    /// locks, close cursors, `UNLISTEN *`, `RESET ALL`, `DISCARD TEMP`, `DEALLOCATE ALL`, then
    /// re-apply the startup settings and `init_commands` (and clear the statement cache). One
    /// extra round trip per release of a used connection.
    Full,
}

impl ResetPolicy {
    /// The policy's name (`rollback`, `full`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResetPolicy::Rollback => "rollback",
            ResetPolicy::Full => "full",
        }
    }
}

impl FromStr for ResetPolicy {
    type Err = Error;

    /// Parses `rollback` or `full` (case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "rollback" => Ok(ResetPolicy::Rollback),
            "full" => Ok(ResetPolicy::Full),
            _ => Err(Error::config(
                "reset_on_release",
                format!(
                    "unknown reset policy `{}`; use rollback or full",
                    s.escape_debug()
                ),
            )),
        }
    }
}
