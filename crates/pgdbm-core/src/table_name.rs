//! [`TableName`]: a validated, optionally schema-qualified table name that renders itself
//! quoted, for APIs that must not splice raw text into SQL (`Connection::copy_in`).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::ident::{parse_qualified_name, quote_catalog_name, validate_identifier};

/// A table name, optionally with its schema; [`Display`](fmt::Display) writes it quoted
/// (`"app"."users"`), so it is safe in SQL.
///
/// Built from user input with [`TableName::parse`] / [`TableName::new`] (plain identifiers only,
/// see [`validate_identifier`]) or from names read from the server's catalog with
/// [`TableName::from_catalog`] (any name; quoting keeps it exact).
///
/// ```
/// use pgdbm_core::TableName;
/// assert_eq!(TableName::parse("app.users")?.to_string(), "\"app\".\"users\"");
/// assert_eq!(TableName::new(None, "Users")?.to_string(), "\"Users\"");
/// assert!(TableName::parse("users; DROP TABLE x").is_err());
/// assert_eq!(TableName::from_catalog(Some("my schema"), "Order \"Items\"")?.to_string(),
///            "\"my schema\".\"Order \"\"Items\"\"\"");
/// # Ok::<(), pgdbm_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    schema: Option<String>,
    name: String,
}

impl TableName {
    /// `table` or `schema.table`, each part a plain identifier.
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] naming the invalid part.
    pub fn parse(s: &str) -> Result<Self> {
        let (schema, name) = parse_qualified_name(s)?;
        Ok(TableName { schema, name })
    }

    /// `name` in `schema` (or unqualified), each a plain identifier.
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] naming the invalid part.
    pub fn new(schema: Option<&str>, name: &str) -> Result<Self> {
        if let Some(s) = schema {
            validate_identifier(s)?;
        }
        validate_identifier(name)?;
        Ok(TableName {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    /// Names as the catalog has them (any characters but NUL), quoted exactly.
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] for an empty name or one containing NUL.
    pub fn from_catalog(schema: Option<&str>, name: &str) -> Result<Self> {
        if let Some(s) = schema {
            quote_catalog_name(s)?;
        }
        quote_catalog_name(name)?;
        Ok(TableName {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    /// The same table in `schema` when it has none yet.
    pub fn or_schema(mut self, schema: Option<&str>) -> Self {
        if self.schema.is_none() {
            self.schema = schema.map(str::to_owned);
        }
        self
    }

    /// The schema, if qualified.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The table name, unquoted.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for TableName {
    /// `"schema"."name"` or `"name"`, with `"` doubled.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The parts were checked at construction, so quoting cannot fail; fall back to an
        // error rather than panic anyway.
        let q = |s: &str| quote_catalog_name(s).map_err(|_| fmt::Error);
        if let Some(s) = &self.schema {
            write!(f, "{}.", q(s)?)?;
        }
        f.write_str(&q(&self.name)?)
    }
}

impl FromStr for TableName {
    type Err = Error;

    /// Same as [`TableName::parse`].
    fn from_str(s: &str) -> Result<Self> {
        TableName::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_and_render() {
        assert_eq!(TableName::parse("t").unwrap().to_string(), "\"t\"");
        let t = TableName::parse("s.t").unwrap();
        assert_eq!((t.schema(), t.name()), (Some("s"), "t"));
        for bad in ["", "a.b.c", "a b", "t\"", "x;y", ".t", "s."] {
            assert!(TableName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            TableName::parse("t")
                .unwrap()
                .or_schema(Some("app"))
                .to_string(),
            "\"app\".\"t\""
        );
        assert_eq!(
            TableName::parse("x.t")
                .unwrap()
                .or_schema(Some("app"))
                .to_string(),
            "\"x\".\"t\""
        );
        assert!(TableName::from_catalog(None, "").is_err());
        assert!(TableName::from_catalog(None, "a\0").is_err());
    }

    proptest! {
        /// A catalog name renders as one quoted identifier: `"` + the name with `"` doubled + `"`.
        #[test]
        fn catalog_names_render_as_one_quoted_identifier(name in "[^\u{0}]{1,20}") {
            let s = TableName::from_catalog(None, &name).unwrap().to_string();
            prop_assert!(s.starts_with('"') && s.ends_with('"'));
            let inner = &s[1..s.len() - 1];
            prop_assert_eq!(inner.replace("\"\"", "\""), name);
            prop_assert!(!inner.replace("\"\"", "").contains('"'));
        }
    }
}
