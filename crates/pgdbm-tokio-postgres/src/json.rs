//! JSON text for JSON/JSONB parameters and COPY columns, the way Python pgdbm (asyncpg) takes it.
//!
//! tokio-postgres encodes a `&str`/`String` only as a text type, so binding JSON text to a
//! `json`/`jsonb` parameter fails at bind time. Every parameter pgdbm sends goes through
//! [`JsonText`]: a value that encodes to the parameter's type as it is (a `Json<T>`, a
//! `serde_json::Value`, an integer...) is sent unchanged; a string-like value (anything that
//! encodes as `text`, `Option`s included) bound to `json` is sent as its text, and to `jsonb`
//! as the version byte 1 followed by the text (the binary formats of the two types). The server
//! parses the text, so invalid JSON is the server's `22P02` error, as in Python.

use std::error::Error as StdError;

use bytes::{BufMut, BytesMut};
use pgdbm_core::Param;
use postgres_types::{Format, IsNull, ToSql, Type, WrongType};

/// The binary format version of `jsonb` (the only one PostgreSQL has).
const JSONB_VERSION: u8 = 1;

type EncodeResult = std::result::Result<IsNull, Box<dyn StdError + Sync + Send>>;

/// A parameter that also accepts JSON text for a `json`/`jsonb` parameter (see the module docs).
#[derive(Clone, Copy)]
pub(crate) struct JsonText<'a>(pub(crate) Param<'a>);

impl std::fmt::Debug for JsonText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

fn json_kind(ty: &Type) -> Option<bool> {
    if *ty == Type::JSON {
        Some(false)
    } else if *ty == Type::JSONB {
        Some(true)
    } else {
        None
    }
}

/// Encodes `value` for `ty`; when `ty` is `json`/`jsonb` and the value's own type does not
/// accept it, as JSON text (if the value encodes as `text`).
fn encode(value: Param<'_>, ty: &Type, out: &mut BytesMut) -> EncodeResult {
    let first = value.to_sql_checked(ty, out);
    let Err(e) = first else { return first };
    let Some(jsonb) = json_kind(ty) else {
        return Err(e);
    };
    if !e.is::<WrongType>() {
        return Err(e);
    }
    let start = out.len();
    if jsonb {
        out.put_u8(JSONB_VERSION);
    }
    match value.to_sql_checked(&Type::TEXT, out) {
        Ok(IsNull::No) => Ok(IsNull::No),
        Ok(IsNull::Yes) => {
            out.truncate(start);
            Ok(IsNull::Yes)
        }
        Err(_) => {
            // Not a string either: report the original mismatch (it names the Rust type).
            out.truncate(start);
            Err(e)
        }
    }
}

impl ToSql for JsonText<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> EncodeResult {
        encode(self.0, ty, out)
    }

    fn accepts(_ty: &Type) -> bool {
        // The inner value decides, in `to_sql_checked`.
        true
    }

    fn to_sql_checked(&self, ty: &Type, out: &mut BytesMut) -> EncodeResult {
        encode(self.0, ty, out)
    }

    fn encode_format(&self, ty: &Type) -> Format {
        if json_kind(ty).is_some() {
            Format::Binary
        } else {
            self.0.encode_format(ty)
        }
    }
}

/// The parameters of one statement, each wrapped in [`JsonText`].
pub(crate) fn wrap<'a>(params: &'a [Param<'a>]) -> impl ExactSizeIterator<Item = JsonText<'a>> {
    params.iter().map(|p| JsonText(*p))
}

/// True when a statement with these parameter types needs [`JsonText`] at all.
pub(crate) fn has_json(types: &[Type]) -> bool {
    types.iter().any(|t| json_kind(t).is_some())
}

/// Every row wrapped in [`JsonText`], for `execute_many` (which encodes rows as slices).
pub(crate) fn wrap_rows<'a>(rows: &[&'a [Param<'a>]]) -> Vec<Vec<JsonText<'a>>> {
    rows.iter().map(|r| wrap(r).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(value: Param<'_>, ty: &Type) -> (EncodeResult, Vec<u8>) {
        let mut out = BytesMut::new();
        let r = JsonText(value).to_sql_checked(ty, &mut out);
        (r, out.to_vec())
    }

    #[test]
    fn text_becomes_json_and_jsonb() {
        let (r, b) = enc(&r#"{"a":1}"#, &Type::JSON);
        assert!(matches!(r, Ok(IsNull::No)));
        assert_eq!(b, br#"{"a":1}"#);
        let s = String::from("[1,2]");
        let (r, b) = enc(&s, &Type::JSONB);
        assert!(matches!(r, Ok(IsNull::No)));
        assert_eq!(b, b"\x01[1,2]");
    }

    #[test]
    fn null_text_is_null_and_writes_nothing() {
        let none: Option<&str> = None;
        let (r, b) = enc(&none, &Type::JSONB);
        assert!(matches!(r, Ok(IsNull::Yes)));
        assert!(b.is_empty());
    }

    #[test]
    fn other_types_keep_their_encoding_and_errors() {
        let (r, b) = enc(&7_i32, &Type::INT4);
        assert!(matches!(r, Ok(IsNull::No)));
        assert_eq!(b, 7_i32.to_be_bytes());
        let (r, b) = enc(&7_i32, &Type::JSONB);
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("i32") && e.contains("jsonb"), "{e}");
        assert!(b.is_empty());
        let (r, _) = enc(&"x", &Type::INT4);
        assert!(r.is_err());
    }

    #[test]
    fn only_json_statements_need_wrapping() {
        assert!(has_json(&[Type::INT4, Type::JSONB]));
        assert!(!has_json(&[Type::INT4, Type::TEXT]));
    }
}
