//! [`StatementMode`]: whether pgdbm keeps named prepared statements on the server.

use std::str::FromStr;

use crate::error::{Error, Result};

#[cfg(doc)]
use super::Config;

/// How statements are sent ([`Config::statement_mode`]).
///
/// | mode | server state | round trips per statement | plan reuse |
/// |------|--------------|---------------------------|------------|
/// | `Cached` | named prepared statements, an LRU of [`Config::statement_cache_size`] per connection | 1 (2 on first use of a SQL text) | yes |
/// | `Unnamed` | none across `Sync`s (the unnamed statement only) | 1 (3 on first use, outside a transaction) | no: parsed and planned every time |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum StatementMode {
    /// Named prepared statements, cached per connection (at most
    /// [`Config::statement_cache_size`]; 0 prepares and closes one per statement). The fastest
    /// with a direct connection or a session pooler, and with PgBouncer ≥ 1.21 in transaction
    /// mode when its `max_prepared_statements` is set.
    #[default]
    Cached,
    /// No named prepared statement is ever left on the server, so nothing depends on getting
    /// the same server connection twice: the setting for PgBouncer < 1.21 (Debian 12 ships 1.18)
    /// and other transaction poolers.
    ///
    /// Each statement goes as unnamed `Parse`/`Bind`/`Describe`/`Execute`/`Sync` in one round
    /// trip, with the parameter types taken from a client-side cache of statement descriptions
    /// (keyed by SQL text, at most [`Config::statement_cache_size`] per connection). A SQL text
    /// seen for the first time is described once inside its own short transaction (`BEGIN`,
    /// `Parse`/`Describe`, `Close`, `COMMIT`: two round trips, all on one server connection),
    /// or inside the caller's transaction. Statements without parameters need no description.
    ///
    /// Session state is not relied on: the startup settings
    /// ([`Config::server_settings`], the schema's `search_path`, the timeouts, `jit`) are not
    /// sent in the startup packet (PgBouncer 1.18 refuses `options` unless it is in its
    /// `ignore_startup_parameters`) but as `SET LOCAL` with every `BEGIN` pgdbm sends; outside
    /// a transaction, statements run with the server's (role's, database's) settings.
    /// `init_commands` still run once per client connection, on whichever server connection
    /// the pooler lent: put session settings in `ALTER ROLE ... SET` or PgBouncer's
    /// `connect_query` instead.
    ///
    /// Non-built-in types (enums, domains, ranges, composites, extension types): tokio-postgres
    /// looks them up with named statements of its own, so before its first statement each
    /// connection loads every user-defined type of the database (up to 500) in one transaction
    /// and drops those statements again (`DEALLOCATE ALL`). Limit: a type created after that
    /// makes one statement fail with "prepared statement ... does not exist" (26000); that
    /// connection is then discarded and the pool's next one loads the types afresh.
    /// The transactions pgdbm opens for itself end with `DEALLOCATE ALL`, so SQL-level
    /// `PREPARE`d statements do not survive them (they would not survive a pooler either).
    Unnamed,
}

impl StatementMode {
    /// The mode's name (`cached`, `unnamed`).
    pub fn as_str(self) -> &'static str {
        match self {
            StatementMode::Cached => "cached",
            StatementMode::Unnamed => "unnamed",
        }
    }
}

impl FromStr for StatementMode {
    type Err = Error;

    /// Parses `cached` or `unnamed` (case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cached" => Ok(StatementMode::Cached),
            "unnamed" => Ok(StatementMode::Unnamed),
            _ => Err(Error::config(
                "statement_mode",
                format!(
                    "unknown statement mode `{}`; use cached or unnamed (unnamed for PgBouncer \
                     < 1.21 in transaction mode)",
                    s.escape_debug()
                ),
            )),
        }
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for StatementMode {
    /// `cached` or `unnamed`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in [StatementMode::Cached, StatementMode::Unnamed] {
            assert_eq!(m.as_str().parse::<StatementMode>().unwrap(), m);
        }
        assert_eq!(
            " UNNAMED ".parse::<StatementMode>().unwrap(),
            StatementMode::Unnamed
        );
        let e = "named".parse::<StatementMode>().unwrap_err().to_string();
        assert!(e.contains("cached or unnamed"), "{e}");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn config_files_name_the_mode() {
        let c: crate::Config = toml::from_str("statement_mode = \"unnamed\"").unwrap();
        assert_eq!(c.statement_mode, StatementMode::Unnamed);
        assert!(toml::from_str::<crate::Config>("statement_mode = \"named\"").is_err());
    }
}
