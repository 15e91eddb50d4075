//! PostgreSQL identifiers: validation and quoting.
//!
//! pgdbm only ever splices identifiers it has validated into SQL. The rule is the one of Python
//! pgdbm, made stricter about trailing newlines: an identifier matches
//! `^[A-Za-z_][A-Za-z0-9_]*$`, is 1 to [`MAX_IDENTIFIER_BYTES`] bytes long, and contains nothing
//! else (no trailing newline, no quotes, no dots, no non-ASCII letters). Anything else is an
//! [`Error::Schema`] naming the identifier, never SQL.

use crate::error::{Error, Result};

/// Longest identifier PostgreSQL keeps without truncating it (`NAMEDATALEN - 1`).
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// The rule every identifier must follow, quoted in error messages.
const RULE: &str = "identifiers must match ^[A-Za-z_][A-Za-z0-9_]*$ and be at most 63 bytes long";

/// Longest identifier text echoed back in an error message.
const MAX_ECHOED: usize = 80;

fn echo(name: &str) -> String {
    crate::error::truncate_sql(name, MAX_ECHOED).into_owned()
}

/// Checks that `name` is a safe, unquoted PostgreSQL identifier.
///
/// Accepts exactly `^[A-Za-z_][A-Za-z0-9_]*$` with 1..=[`MAX_IDENTIFIER_BYTES`] bytes (checked by
/// hand, so a trailing newline is rejected too, unlike a regex whose `$` matches before it).
///
/// # Errors
///
/// [`Error::Schema`] with `schema: Some(name)` and a message saying what is wrong and what the
/// rule is.
///
/// ```
/// use pgdbm_core::validate_identifier;
/// assert!(validate_identifier("users_2024").is_ok());
/// assert!(validate_identifier("a;drop").is_err());
/// assert!(validate_identifier("users\n").is_err());
/// ```
pub fn validate_identifier(name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        "it is empty".to_owned()
    } else if name.len() > MAX_IDENTIFIER_BYTES {
        format!(
            "it is {} bytes long (PostgreSQL would silently truncate it)",
            name.len()
        )
    } else {
        let mut problem = None;
        for (i, c) in name.char_indices() {
            let ok = if i == 0 {
                c.is_ascii_alphabetic() || c == '_'
            } else {
                c.is_ascii_alphanumeric() || c == '_'
            };
            if !ok {
                problem = Some(if i == 0 && c.is_ascii_digit() {
                    "it starts with a digit".to_owned()
                } else {
                    format!("it contains {c:?} at byte {i}")
                });
                break;
            }
        }
        match problem {
            None => return Ok(()),
            Some(p) => p,
        }
    };
    Err(Error::schema(
        name,
        format!(
            "invalid identifier `{}`: {problem}; {RULE}",
            echo(name).escape_debug()
        ),
    ))
}

/// Validates `name` and returns it double-quoted (`users` -> `"users"`).
///
/// Quoting keeps the exact case of the name. Since a valid identifier contains no `"`, no
/// escaping is needed.
///
/// # Errors
///
/// [`Error::Schema`] when `name` is not a valid identifier (see [`validate_identifier`]).
///
/// ```
/// assert_eq!(pgdbm_core::quote_identifier("MyApp").unwrap(), "\"MyApp\"");
/// ```
pub fn quote_identifier(name: &str) -> Result<String> {
    validate_identifier(name)?;
    quote_catalog_name(name)
}

/// Quotes a name read from the server's catalog (a column called `Order Date`, say), which
/// need not follow pgdbm's identifier rule: `"` is doubled. This is the one quoter;
/// [`quote_identifier`] validates and then calls it.
///
/// # Errors
///
/// [`Error::Schema`] when `name` is empty or contains NUL (PostgreSQL has no such names).
///
/// ```
/// assert_eq!(pgdbm_core::quote_catalog_name("Order \"Date\"").unwrap(), "\"Order \"\"Date\"\"\"");
/// ```
pub fn quote_catalog_name(name: &str) -> Result<String> {
    if name.is_empty() || name.contains('\0') {
        return Err(Error::Schema {
            message: format!(
                "`{}` cannot be an SQL name: names are non-empty and contain no NUL",
                name.escape_debug()
            ),
            schema: None,
        });
    }
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    Ok(out)
}

/// Splits `"schema.table"` or `"table"` into `(Some(schema), table)` / `(None, table)`,
/// validating each part.
///
/// Parts are plain identifiers: quoted parts (`"My Schema".t`) are not accepted.
///
/// # Errors
///
/// [`Error::Schema`] when there are more than two parts or a part is not a valid identifier.
///
/// ```
/// use pgdbm_core::parse_qualified_name;
/// assert_eq!(parse_qualified_name("app.users").unwrap(), (Some("app".into()), "users".into()));
/// assert_eq!(parse_qualified_name("users").unwrap(), (None, "users".into()));
/// ```
pub fn parse_qualified_name(name: &str) -> Result<(Option<String>, String)> {
    let mut parts = name.split('.');
    let first = parts.next().unwrap_or_default();
    match (parts.next(), parts.next()) {
        (None, _) => {
            validate_identifier(first)?;
            Ok((None, first.to_owned()))
        }
        (Some(table), None) => {
            validate_identifier(first)?;
            validate_identifier(table)?;
            Ok((Some(first.to_owned()), table.to_owned()))
        }
        (Some(_), Some(_)) => Err(Error::schema(
            name,
            format!(
                "invalid qualified name `{}`: expected `table` or `schema.table`, found more than one `.`; {RULE}",
                echo(name).escape_debug()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_err(r: Result<impl std::fmt::Debug>) -> (Option<String>, String) {
        match r {
            Err(Error::Schema { schema, message }) => (schema, message),
            other => panic!("expected Error::Schema, got {other:?}"),
        }
    }

    #[test]
    fn accepts_valid_identifiers() {
        for ok in ["a", "_", "users", "Users_2", "_x9", &"a".repeat(63)] {
            assert!(validate_identifier(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_invalid_identifiers_with_schema_error() {
        let long = "a".repeat(64);
        for bad in [
            "",
            "1abc",
            "a;drop",
            "a b",
            "\"x\"",
            "a.b",
            "users\n",
            "\nusers",
            "é",
            "uséers",
            "a-b",
            "a$b",
            "a\0",
            long.as_str(),
        ] {
            let (schema, message) = schema_err(validate_identifier(bad));
            assert_eq!(schema.as_deref(), Some(bad));
            assert!(message.contains("^[A-Za-z_][A-Za-z0-9_]*$"), "{message}");
        }
    }

    #[test]
    fn error_messages_say_why() {
        assert!(schema_err(validate_identifier("")).1.contains("empty"));
        assert!(schema_err(validate_identifier("1abc"))
            .1
            .contains("starts with a digit"));
        assert!(schema_err(validate_identifier(&"a".repeat(64)))
            .1
            .contains("64 bytes"));
        let m = schema_err(validate_identifier("users\n")).1;
        assert!(m.contains("'\\n'"), "{m}");
        assert!(!m.contains("users\n"), "raw newline echoed: {m}");
    }

    #[test]
    fn quotes_valid_identifiers() {
        assert_eq!(quote_identifier("users").unwrap(), "\"users\"");
        assert!(quote_identifier("x\"; DROP").is_err());
    }

    #[test]
    fn parses_qualified_names() {
        assert_eq!(
            parse_qualified_name("s.t").unwrap(),
            (Some("s".to_owned()), "t".to_owned())
        );
        assert_eq!(parse_qualified_name("t").unwrap(), (None, "t".to_owned()));
        for bad in ["a.b.c", ".t", "s.", "", "s.t;x", "\"s\".t", "s .t"] {
            schema_err(parse_qualified_name(bad));
        }
    }
}
