//! `explain_query`: the JSON plan of one statement (`EXPLAIN (FORMAT JSON[, ANALYZE])`).
//!
//! The statement's `{{tables.x}}` / `{{schema}}` templates are rendered (identifiers validated)
//! for the connection's schema like every other query, and it must be exactly one statement (as
//! the one SQL lexer, [`split_statements`](crate::split_statements), splits it): `EXPLAIN` takes
//! one, and a second one after a `;` is refused instead of being run unexplained.
//!
//! With `analyze` PostgreSQL *runs* the statement to time it: an `INSERT`/`UPDATE`/`DELETE`
//! changes data. Explain those inside a transaction you roll back.

use postgres_types::{FromSql, Type};

use crate::database::{Database, DbConnection};
use crate::{Connection, Error, Param, Pool, QueryError, QueryErrorKind, Result};

/// The plan `EXPLAIN (FORMAT JSON)` returned: PostgreSQL's JSON text, unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryPlan {
    json: String,
}

impl QueryPlan {
    /// The plan as PostgreSQL's JSON text (an array with one object holding `"Plan"`).
    pub fn as_json_text(&self) -> &str {
        &self.json
    }

    /// The plan as a `serde_json::Value` (feature `serde_json`).
    #[cfg(feature = "serde_json")]
    pub fn to_value(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.json).map_err(|e| {
            QueryError::new(
                QueryErrorKind::Conversion,
                format!("the server's EXPLAIN output is not valid JSON: {e}"),
                String::new(),
            )
            .into()
        })
    }

    /// Every `"Node Type"` of the plan tree, depth first (`"Index Scan"`, `"Seq Scan"`,
    /// `"Hash Join"`...): enough to assert which access path was chosen.
    pub fn node_types(&self) -> Vec<String> {
        // PostgreSQL writes `"Node Type": "<name>"` for each node; inside a string value every
        // quote is escaped, so this pattern only matches real keys.
        const KEY: &str = "\"Node Type\": \"";
        let mut out = Vec::new();
        let mut rest = self.json.as_str();
        while let Some(i) = rest.find(KEY) {
            rest = &rest[i + KEY.len()..];
            let end = rest.find('"').unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
        out
    }

    /// True when some node of the plan has this type.
    pub fn has_node(&self, node_type: &str) -> bool {
        self.node_types().iter().any(|n| n == node_type)
    }
}

/// A `json` column's text (the binary format of `json` is its text).
struct JsonText(String);

impl<'a> FromSql<'a> for JsonText {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(JsonText(std::str::from_utf8(raw)?.to_string()))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON || *ty == Type::TEXT
    }
}

fn refused(message: String, sql: &str) -> Error {
    QueryError::new(QueryErrorKind::Client, message, sql).into()
}

/// `EXPLAIN (FORMAT JSON[, ANALYZE]) <statement>` for rendered `sql`, refusing anything but one
/// statement.
fn explain_sql(rendered: &str, analyze: bool) -> Result<String> {
    let statements: Vec<&str> = crate::split_statements(rendered)
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect();
    match statements.as_slice() {
        [one] => {
            let options = if analyze {
                "FORMAT JSON, ANALYZE"
            } else {
                "FORMAT JSON"
            };
            Ok(format!("EXPLAIN ({options}) {}", one.trim()))
        }
        [] => Err(refused(
            "explain_query needs a statement, got none; pass the query to explain".to_string(),
            rendered,
        )),
        many => Err(refused(
            format!(
                "explain_query explains exactly one statement, got {}; explain them one at a time",
                many.len()
            ),
            rendered,
        )),
    }
}

impl<C: Connection> DbConnection<C> {
    /// The plan of `sql` with `params` (Python: `explain_query`), as PostgreSQL's
    /// `EXPLAIN (FORMAT JSON)` gives it; with `analyze`, `EXPLAIN (FORMAT JSON, ANALYZE)`, which
    /// runs the statement (see the [module docs](crate::explain)). Session settings of this
    /// connection (`SET enable_seqscan = off`...) apply.
    pub async fn explain_query(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        analyze: bool,
    ) -> Result<QueryPlan> {
        let rendered = self.render(sql)?;
        let explain = explain_sql(&rendered, analyze)?;
        let json = self
            .fetch_value::<JsonText, _>(explain.as_str(), params)
            .await?
            .ok_or_else(|| refused("EXPLAIN returned no row".to_string(), &explain))?;
        Ok(QueryPlan { json: json.0 })
    }
}

impl<P: Pool> Database<P> {
    /// The plan of `sql` on a connection of the pool (Python: `explain_query`); see
    /// [`DbConnection::explain_query`].
    pub async fn explain_query(
        &self,
        sql: &str,
        params: &[Param<'_>],
        analyze: bool,
    ) -> Result<QueryPlan> {
        self.acquire()
            .await?
            .explain_query(sql, params, analyze)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_statement_only() {
        assert_eq!(
            explain_sql("SELECT 1;", false).unwrap(),
            "EXPLAIN (FORMAT JSON) SELECT 1"
        );
        assert_eq!(
            explain_sql("SELECT ';' -- x;\n", true).unwrap(),
            "EXPLAIN (FORMAT JSON, ANALYZE) SELECT ';' -- x;"
        );
        let e = explain_sql("SELECT 1; DROP TABLE t", false).unwrap_err();
        assert!(
            e.to_string().contains("exactly one statement, got 2"),
            "{e}"
        );
        assert!(explain_sql("  ; ", false).is_err());
    }

    #[test]
    fn node_types_in_order() {
        let plan = QueryPlan {
            json: r#"[{"Plan": {"Node Type": "Nested Loop", "Plans": [{"Node Type": "Index Scan", "Relation Name": "a\"Node Type\": \"x"}, {"Node Type": "Seq Scan"}]}}]"#.to_string(),
        };
        assert_eq!(plan.node_types(), ["Nested Loop", "Index Scan", "Seq Scan"]);
        assert!(plan.has_node("Seq Scan") && !plan.has_node("x"));
    }
}
