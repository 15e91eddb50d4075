//! `StatementMode::Unnamed`: statements sent without named prepared statements, for
//! transaction poolers (PgBouncer < 1.21) that hand out a different server connection for
//! every transaction.
//!
//! Each statement goes as one tokio-postgres `query_typed_raw` request: unnamed `Parse` (with
//! the parameter types), `Bind`, `Describe`, `Execute`, `Sync`, one round trip, no server
//! state left behind. The parameter types (and, for the `COPY` probes, the columns) come from
//! a client-side cache of [`Described`] statements keyed by SQL text. A SQL text seen for the
//! first time is described with tokio-postgres's `prepare` inside one transaction (pipelined
//! `BEGIN` + `Parse`/`Describe`/`Sync`, then the statement's `Close` and `COMMIT`), so the
//! named statement it creates lives and dies on one server connection; inside the caller's
//! transaction no wrapping is needed.
//!
//! Before the first statement of a connection, the database's user-defined types are loaded
//! into tokio-postgres's type cache inside one transaction ([`PgConnection::warm_types`]):
//! its own type lookups use named statements that a pooler would split.
//!
//! Session state is not relied on either: the startup settings go with every `BEGIN`
//! ([`local_settings`]) instead of into the startup packet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgdbm_core::{Config, Result, StatementMode};
use postgres_types::Type;

use crate::connection::PgConnection;
use crate::wire::TxStatus;

/// What the server said about a statement: its parameter types and result columns.
#[derive(Debug, Clone, Default)]
pub(crate) struct Described {
    pub(crate) params: Arc<[Type]>,
    pub(crate) columns: Arc<[(String, Type)]>,
}

impl Described {
    fn of(stmt: &tokio_postgres::Statement) -> Self {
        Described {
            params: stmt.params().into(),
            columns: stmt
                .columns()
                .iter()
                .map(|c| (c.name().to_string(), c.type_().clone()))
                .collect(),
        }
    }
}

/// A string literal for any `standard_conforming_strings`: `E'...'` with `\` and `'` doubled.
fn literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    out.push_str("E'");
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A setting's name for `SET`: as it is when it is a plain (possibly dotted) name, else each
/// dotted part double-quoted.
fn setting_name(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return name.to_string();
    }
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// A setting's value for `SET`: one string literal, or for the list settings (`search_path`,
/// `temp_tablespaces`) one element per comma outside double quotes, a double-quoted element
/// kept as an identifier and the others as literals (a single literal would be one element).
fn setting_value(name: &str, value: &str) -> String {
    if !matches!(
        name.to_ascii_lowercase().as_str(),
        "search_path" | "temp_tablespaces"
    ) {
        return literal(value);
    }
    let mut elements = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => elements.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    elements.push(current);
    elements
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .map(|e| {
            if e.len() >= 2 && e.starts_with('"') && e.ends_with('"') {
                e.to_string()
            } else {
                literal(e)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The statements pgdbm sends with each of its `BEGIN`s in [`StatementMode::Unnamed`]:
/// `SET LOCAL name = value; ...` for every startup setting ([`Config::server_settings`]
/// without `application_name`, which PgBouncer tracks itself), so they hold for the
/// transaction whatever server connection the pooler lent. `SET` takes no snapshot, so a
/// `SET TRANSACTION ISOLATION LEVEL` may still follow. Empty in [`StatementMode::Cached`] (the
/// settings went in the startup packet) or when there are none.
pub(crate) fn local_settings(config: &Config) -> String {
    if config.statement_mode != StatementMode::Unnamed {
        return String::new();
    }
    let mut settings = config.server_settings();
    settings.remove("application_name");
    settings
        .iter()
        .map(|(k, v)| format!("SET LOCAL {} = {}", setting_name(k), setting_value(k, v)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The SQL text `SELECT NULL::<type>, ...` naming every user-defined type of the database
/// (enums, domains, ranges, standalone composites, extension base types and their arrays; not
/// tables' row types), at most 500, or NULL when there is none. Preparing it makes
/// tokio-postgres look them all up at once.
const USER_TYPES: &str = "SELECT string_agg(format('NULL::%s', format_type(oid, NULL)), ', ') \
     FROM (SELECT t.oid FROM pg_catalog.pg_type t \
       JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
       LEFT JOIN pg_catalog.pg_class c ON c.oid = t.typrelid \
       LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem \
       LEFT JOIN pg_catalog.pg_class ec ON ec.oid = e.typrelid \
       WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
         AND t.typisdefined AND t.typtype IN ('b', 'c', 'd', 'e', 'r', 'm') \
         AND (t.typrelid = 0 OR c.relkind = 'c') \
         AND (e.typrelid IS NULL OR e.typrelid = 0 OR ec.relkind = 'c') \
       ORDER BY t.oid LIMIT 500) u";

/// Ends pgdbm's own describe or type-loading transaction. `DEALLOCATE ALL` drops the named
/// statements tokio-postgres prepared for its type lookups on this server session, which would
/// otherwise stay there after the pooler lends the session to other clients (whose own
/// tokio-postgres numbers its statements from `s0` too: a leftover `s3` would make another
/// process's `s3` fail with "already exists"). A later lookup on this connection then fails
/// once with 26000 and the connection is replaced ([`PgConnection::lost_driver_statement`]).
const END_OWN: &str = "DEALLOCATE ALL; COMMIT";

impl PgConnection {
    /// Before the first statement in [`StatementMode::Unnamed`]: makes tokio-postgres load
    /// every user-defined type of the database inside one transaction. Its type lookups use
    /// named statements prepared in one request and bound in the next, which a transaction
    /// pooler may send to different server sessions; loaded up front, the types never need a
    /// lookup later (types created afterwards still do, see [`lost_driver_statement`]).
    ///
    /// [`lost_driver_statement`]: Self::lost_driver_statement
    pub(crate) async fn warm_types(
        &mut self,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let wrap = self.tx_status() == TxStatus::Idle;
        let client = self.client();
        let work = async move {
            let load = async {
                let row = client.query_one(USER_TYPES, &[]).await?;
                if let Some(sql) = row.try_get::<_, Option<String>>(0)? {
                    client.prepare(&format!("SELECT {sql}")).await?;
                }
                Ok::<(), tokio_postgres::Error>(())
            };
            if !wrap {
                return load.await;
            }
            let (begun, loaded) =
                futures_util::future::join(client.batch_execute("BEGIN"), load).await;
            let ended = client.batch_execute(END_OWN).await;
            begun?;
            loaded?;
            ended
        };
        let outcome = self.bounded(deadline, work).await;
        self.settle(outcome, USER_TYPES, 0, timeout)?;
        self.types_warmed = true;
        Ok(())
    }

    /// In [`StatementMode::Unnamed`], refuses `what` outside a transaction: tokio-postgres
    /// sends it as a named statement prepared in one request and bound in the next, which a
    /// transaction pooler may send to two different server connections.
    pub(crate) fn needs_transaction(&self, what: &str, sql: &str) -> Result<()> {
        if self.settings().statement_mode == StatementMode::Unnamed
            && self.tx_status() == TxStatus::Idle
        {
            return Err(crate::errors::client_error(
                pgdbm_core::QueryErrorKind::Client,
                format!(
                    "{what} with statement_mode = unnamed runs only inside a transaction (the \
                     driver prepares it as a named statement, which a transaction pooler does not \
                     keep from one request to the next); run it inside db.transaction(...)"
                ),
                sql,
            ));
        }
        Ok(())
    }

    /// True for "prepared statement ... does not exist" (26000) in [`StatementMode::Unnamed`]:
    /// pgdbm sent no named statement, so it was one tokio-postgres keeps for itself (its type
    /// lookups), prepared on a server session a transaction pooler no longer lends this
    /// connection. The client cannot be told to forget it: the connection is discarded, so the
    /// error happens once and the pool's next connection looks the type up afresh.
    pub(crate) fn lost_driver_statement(&self, e: &tokio_postgres::Error) -> bool {
        self.settings().statement_mode == StatementMode::Unnamed
            && e.code().is_some_and(|c| c.code() == "26000")
    }

    /// The description of `sql`: from the cache, or asked of the server (and cached).
    pub(crate) async fn described(
        &mut self,
        sql: &str,
        n_params: usize,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
    ) -> Result<Described> {
        self.sync_epoch();
        if let Some(d) = self.described_cache.get(sql) {
            return Ok(d);
        }
        let wrap = self.tx_status() == TxStatus::Idle;
        let client = self.client();
        let work = async move {
            if !wrap {
                return client.prepare(sql).await.map(|s| Described::of(&s));
            }
            // Both requests are written on the first poll, BEGIN first: one round trip.
            let (begun, prepared) =
                futures_util::future::join(client.batch_execute("BEGIN"), client.prepare(sql))
                    .await;
            // The statement is dropped here: its Close goes before the COMMIT, on the same
            // server connection. After a failed Parse the COMMIT answers ROLLBACK.
            let described = prepared.map(|s| Described::of(&s));
            let ended = client.batch_execute(END_OWN).await;
            begun?;
            let described = described?;
            ended?;
            Ok(described)
        };
        let outcome = self.bounded(deadline, work).await;
        let d = self.settle(outcome, sql, n_params, timeout)?;
        self.described_cache.insert(sql, d.clone());
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_survive_quotes_and_backslashes() {
        assert_eq!(literal("off"), "E'off'");
        assert_eq!(literal("it's"), "E'it''s'");
        assert_eq!(literal(r"a\b"), r"E'a\\b'");
    }

    #[test]
    fn local_settings_only_in_unnamed_mode() {
        let mut c = Config::default();
        assert_eq!(local_settings(&c), "");
        c.statement_mode = StatementMode::Unnamed;
        c.schema = Some("app".into());
        let s = local_settings(&c);
        assert!(
            s.contains("SET LOCAL search_path = \"app\", E'public'"),
            "{s}"
        );
        assert!(s.contains("SET LOCAL jit = E'off'"), "{s}");
        assert!(!s.contains("application_name"), "{s}");
    }

    #[test]
    fn list_values_keep_their_elements() {
        assert_eq!(
            setting_value("search_path", "$user, public"),
            "E'$user', E'public'"
        );
        assert_eq!(setting_value("search_path", "\"a,b\", x"), "\"a,b\", E'x'");
        assert_eq!(setting_value("work_mem", "64MB"), "E'64MB'");
        assert_eq!(setting_name("myext.opt"), "myext.opt");
        assert_eq!(setting_name("odd name"), "\"odd name\"");
    }
}
