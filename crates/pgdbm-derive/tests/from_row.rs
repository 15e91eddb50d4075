//! Tests of `#[derive(FromRow)]` against a small in-memory `Row` whose values are encoded with
//! the real `postgres-types` `ToSql` codecs and decoded with `FromSql` (binary format), so the
//! conversions are the ones a PostgreSQL driver performs.

// Test helpers outside `#[test]` functions panic on impossible setups by design.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use bytes::BytesMut;
use pgdbm_core::{Error, FromRow, QueryError, QueryErrorKind, Result, Row};
use pgdbm_derive::FromRow;
use postgres_types::{FromSql, IsNull, ToSql, Type};
use proptest::prelude::*;

/// A row of `(column name, type, binary value or NULL)`.
#[derive(Debug, Default)]
struct TestRow {
    columns: Vec<(String, Type, Option<Vec<u8>>)>,
}

impl TestRow {
    fn new() -> Self {
        Self::default()
    }

    /// Adds a column holding `value` encoded as `ty`.
    fn col<T: ToSql>(mut self, name: &str, ty: Type, value: T) -> Self {
        let mut buf = BytesMut::new();
        let raw = match value
            .to_sql_checked(&ty, &mut buf)
            .expect("encodable test value")
        {
            IsNull::Yes => None,
            IsNull::No => Some(buf.to_vec()),
        };
        self.columns.push((name.to_owned(), ty, raw));
        self
    }

    /// Adds a NULL column of type `ty`.
    fn null(mut self, name: &str, ty: Type) -> Self {
        self.columns.push((name.to_owned(), ty, None));
        self
    }
}

impl Row for TestRow {
    fn len(&self) -> usize {
        self.columns.len()
    }

    fn column_name(&self, idx: usize) -> Option<&str> {
        self.columns.get(idx).map(|c| c.0.as_str())
    }

    fn column_type(&self, idx: usize) -> Option<&Type> {
        self.columns.get(idx).map(|c| &c.1)
    }

    fn get_at<'a, T: FromSql<'a>>(&'a self, idx: usize) -> Result<T> {
        let (name, ty, raw) = self.columns.get(idx).ok_or_else(|| {
            Error::from(QueryError::new(
                QueryErrorKind::Conversion,
                format!("no column at index {idx}"),
                "",
            ))
        })?;
        if !T::accepts(ty) {
            return Err(QueryError::new(
                QueryErrorKind::Conversion,
                format!(
                    "column `{name}` of type {ty} cannot be read as {}",
                    std::any::type_name::<T>()
                ),
                "",
            )
            .into());
        }
        T::from_sql_nullable(ty, raw.as_deref()).map_err(|e| {
            QueryError::new(
                QueryErrorKind::Conversion,
                format!("column `{name}` ({ty}): {e}"),
                "",
            )
            .with_source(e)
            .into()
        })
    }
}

/// The query error inside `e`, its message, and the message of its source.
fn conversion_parts(e: &Error) -> (String, String) {
    let q = e.as_query().expect("FromRow errors are query errors");
    assert_eq!(q.kind, QueryErrorKind::Conversion, "{e}");
    let source = std::error::Error::source(q)
        .expect("the original error is kept as the source")
        .to_string();
    (q.message.clone(), source)
}

#[derive(Debug, PartialEq, FromRow)]
#[pgdbm(crate = "pgdbm_core")]
struct User {
    id: i32,
    name: String,
    email: Option<String>,
}

fn user_row() -> TestRow {
    TestRow::new()
        .col("id", Type::INT4, 7i32)
        .col("name", Type::TEXT, "ada")
        .col("email", Type::TEXT, "ada@example.com")
}

#[test]
fn named_fields_read_columns_of_the_same_name() {
    let user = User::from_row(&user_row()).unwrap();
    assert_eq!(
        user,
        User {
            id: 7,
            name: "ada".into(),
            email: Some("ada@example.com".into()),
        }
    );
}

#[test]
fn column_order_does_not_matter_and_extra_columns_are_ignored() {
    let row = TestRow::new()
        .col("extra", Type::BOOL, true)
        .col("email", Type::TEXT, "e")
        .col("name", Type::TEXT, "n")
        .col("id", Type::INT4, 1i32);
    let user = User::from_row(&row).unwrap();
    assert_eq!(user.id, 1);
    assert_eq!(user.name, "n");
    assert_eq!(user.email.as_deref(), Some("e"));
}

#[test]
fn null_into_option_is_none() {
    let row = TestRow::new()
        .col("id", Type::INT4, 1i32)
        .col("name", Type::TEXT, "n")
        .null("email", Type::TEXT);
    assert_eq!(User::from_row(&row).unwrap().email, None);
}

#[test]
fn null_into_non_option_names_struct_field_and_column() {
    let row = TestRow::new()
        .col("id", Type::INT4, 1i32)
        .null("name", Type::TEXT)
        .col("email", Type::TEXT, "e");
    let err = User::from_row(&row).unwrap_err();
    let (message, source) = conversion_parts(&err);
    assert!(
        message.starts_with("User.name: column `name`: "),
        "{message}"
    );
    assert!(message.contains("NULL"), "{message}");
    assert!(source.contains("NULL"), "{source}");
    assert!(
        err.to_string().contains("User.name: column `name`"),
        "{err}"
    );
}

#[test]
fn wrong_type_names_the_column() {
    let row = TestRow::new()
        .col("id", Type::TEXT, "not a number")
        .col("name", Type::TEXT, "n")
        .col("email", Type::TEXT, "e");
    let err = User::from_row(&row).unwrap_err();
    let (message, source) = conversion_parts(&err);
    assert!(message.starts_with("User.id: column `id`: "), "{message}");
    assert!(message.contains("i32"), "{message}");
    assert!(source.contains("column `id` of type text"), "{source}");
}

#[test]
fn missing_column_names_struct_field_and_column() {
    // `email` is an Option: that accepts NULL but does not make the column optional (that
    // is what `default` is for).
    let row = TestRow::new()
        .col("id", Type::INT4, 1i32)
        .col("name", Type::TEXT, "n");
    let err = User::from_row(&row).unwrap_err();
    let (message, source) = conversion_parts(&err);
    assert!(
        message.starts_with("User.email: column `email`: "),
        "{message}"
    );
    assert!(source.contains("no column named `email`"), "{source}");
}

#[derive(Debug, PartialEq, FromRow)]
#[pgdbm(crate = "pgdbm_core")]
struct Renamed {
    #[pgdbm(rename = "email_address")]
    email: String,
    #[pgdbm(rename = "type")]
    kind: String,
    r#type: i16,
}

#[test]
fn rename_and_raw_identifiers() {
    let row = TestRow::new()
        .col("email", Type::TEXT, "wrong one")
        .col("email_address", Type::TEXT, "right one")
        .col("type", Type::INT2, 3i16);
    // `kind` reads column `type` as TEXT: it is INT2, so this fails naming the renamed column.
    let err = Renamed::from_row(&row).unwrap_err();
    let (message, _) = conversion_parts(&err);
    assert!(
        message.starts_with("Renamed.kind: column `type`: "),
        "{message}"
    );

    let row = TestRow::new()
        .col("email_address", Type::TEXT, "right one")
        .col("type", Type::TEXT, "admin");
    // Now `r#type` (column `type`, i16) meets a TEXT column.
    let err = Renamed::from_row(&row).unwrap_err();
    let (message, _) = conversion_parts(&err);
    assert!(
        message.starts_with("Renamed.type: column `type`: "),
        "{message}"
    );
}

#[derive(Debug, PartialEq, FromRow)]
#[pgdbm(crate = "pgdbm_core")]
struct RenamedOk {
    #[pgdbm(rename = "email_address")]
    email: String,
    r#type: i16,
}

#[test]
fn rename_reads_the_named_column() {
    let row = TestRow::new()
        .col("email", Type::TEXT, "wrong one")
        .col("email_address", Type::TEXT, "right one")
        .col("type", Type::INT2, 3i16);
    assert_eq!(
        RenamedOk::from_row(&row).unwrap(),
        RenamedOk {
            email: "right one".into(),
            r#type: 3
        }
    );
    let err = RenamedOk::from_row(&TestRow::new().col("email", Type::TEXT, "x")).unwrap_err();
    let (message, _) = conversion_parts(&err);
    assert!(
        message.starts_with("RenamedOk.email: column `email_address`: "),
        "{message}"
    );
}

#[derive(Debug, PartialEq, FromRow)]
#[pgdbm(crate = "pgdbm_core")]
struct WithDefaults {
    id: i32,
    #[pgdbm(default)]
    count: i64,
    #[pgdbm(default)]
    note: Option<String>,
    #[pgdbm(default, rename = "tag_list")]
    tags: Vec<String>,
}

#[test]
fn default_applies_when_the_column_is_absent() {
    let row = TestRow::new().col("id", Type::INT4, 1i32);
    assert_eq!(
        WithDefaults::from_row(&row).unwrap(),
        WithDefaults {
            id: 1,
            count: 0,
            note: None,
            tags: Vec::new(),
        }
    );
}

#[test]
fn default_reads_the_column_when_present() {
    let row = TestRow::new()
        .col("id", Type::INT4, 1i32)
        .col("count", Type::INT8, 42i64)
        .col("note", Type::TEXT, "hi")
        .col(
            "tag_list",
            Type::TEXT_ARRAY,
            vec!["a".to_string(), "b".to_string()],
        );
    assert_eq!(
        WithDefaults::from_row(&row).unwrap(),
        WithDefaults {
            id: 1,
            count: 42,
            note: Some("hi".into()),
            tags: vec!["a".into(), "b".into()],
        }
    );
}

#[test]
fn default_does_not_hide_null_or_type_errors() {
    // A NULL in a present column is not "absent": a non-Option field still fails.
    let row = TestRow::new()
        .col("id", Type::INT4, 1i32)
        .null("count", Type::INT8);
    let err = WithDefaults::from_row(&row).unwrap_err();
    let (message, _) = conversion_parts(&err);
    assert!(
        message.starts_with("WithDefaults.count: column `count`: "),
        "{message}"
    );
    assert!(message.contains("NULL"), "{message}");

    // A NULL into an Option field with `default` is None.
    let row = TestRow::new()
        .col("id", Type::INT4, 1i32)
        .null("note", Type::TEXT);
    assert_eq!(WithDefaults::from_row(&row).unwrap().note, None);

    // A present column of the wrong type is an error naming the renamed column.
    let row = TestRow::new()
        .col("id", Type::INT4, 1i32)
        .col("tag_list", Type::INT4, 5i32);
    let err = WithDefaults::from_row(&row).unwrap_err();
    let (message, _) = conversion_parts(&err);
    assert!(
        message.starts_with("WithDefaults.tags: column `tag_list`: "),
        "{message}"
    );
}

#[derive(Debug, PartialEq, FromRow)]
#[pgdbm(crate = "pgdbm_core")]
struct Address {
    city: String,
    zip: Option<String>,
}

#[derive(Debug, PartialEq, FromRow)]
#[pgdbm(crate = "pgdbm_core")]
struct Customer {
    id: i32,
    #[pgdbm(flatten)]
    address: Address,
    #[pgdbm(skip)]
    cache: Vec<u8>,
    #[pgdbm(skip)]
    zip: Option<i64>,
}

#[test]
fn flatten_reads_the_nested_struct_from_the_same_row() {
    let row = TestRow::new()
        .col("id", Type::INT4, 9i32)
        .col("city", Type::TEXT, "Paris")
        .col("zip", Type::TEXT, "75001")
        .col("cache", Type::BYTEA, vec![1u8, 2, 3]);
    assert_eq!(
        Customer::from_row(&row).unwrap(),
        Customer {
            id: 9,
            address: Address {
                city: "Paris".into(),
                zip: Some("75001".into()),
            },
            // skipped: never read, even though columns `cache` and `zip` exist (and `zip`
            // is TEXT, which an Option<i64> could not read).
            cache: Vec::new(),
            zip: None,
        }
    );
}

#[test]
fn flatten_errors_name_the_inner_struct_and_column() {
    let row = TestRow::new()
        .col("id", Type::INT4, 9i32)
        .col("zip", Type::TEXT, "75001");
    let err = Customer::from_row(&row).unwrap_err();
    let (message, source) = conversion_parts(&err);
    assert!(
        message.starts_with("Address.city: column `city`: "),
        "{message}"
    );
    assert!(source.contains("no column named `city`"), "{source}");
}

#[test]
fn skip_works_without_any_column() {
    #[derive(Debug, FromRow)]
    #[pgdbm(crate = "pgdbm_core")]
    struct OnlySkipped {
        #[pgdbm(skip)]
        a: String,
        #[pgdbm(skip)]
        b: i32,
    }
    let value = OnlySkipped::from_row(&TestRow::new()).unwrap();
    assert_eq!((value.a.as_str(), value.b), ("", 0));
}

#[derive(Debug, PartialEq, FromRow)]
#[pgdbm(crate = "pgdbm_core")]
struct Pair(i64, Option<String>);

#[test]
fn tuple_structs_read_by_position() {
    let row = TestRow::new()
        .col("whatever", Type::INT8, 5i64)
        .null("other", Type::TEXT)
        .col("ignored", Type::BOOL, false);
    assert_eq!(Pair::from_row(&row).unwrap(), Pair(5, None));
}

#[test]
fn tuple_struct_errors_name_the_position() {
    let err = Pair::from_row(&TestRow::new().col("a", Type::INT8, 5i64)).unwrap_err();
    let (message, source) = conversion_parts(&err);
    assert!(message.starts_with("Pair.1: column 1: "), "{message}");
    assert!(source.contains("no column at index 1"), "{source}");

    let row = TestRow::new()
        .col("a", Type::TEXT, "five")
        .col("b", Type::TEXT, "x");
    let err = Pair::from_row(&row).unwrap_err();
    let (message, _) = conversion_parts(&err);
    assert!(message.starts_with("Pair.0: column 0: "), "{message}");
}

#[derive(Debug, PartialEq, FromRow)]
#[pgdbm(crate = "pgdbm_core")]
struct TupleWithSkipAndDefault(i32, #[pgdbm(skip)] Vec<u8>, String, #[pgdbm(default)] i16);

#[test]
fn tuple_skip_consumes_no_column_and_default_covers_short_rows() {
    let row = TestRow::new()
        .col("a", Type::INT4, 1i32)
        .col("b", Type::TEXT, "two");
    assert_eq!(
        TupleWithSkipAndDefault::from_row(&row).unwrap(),
        TupleWithSkipAndDefault(1, Vec::new(), "two".into(), 0)
    );
    let row = row.col("c", Type::INT2, 3i16);
    assert_eq!(
        TupleWithSkipAndDefault::from_row(&row).unwrap(),
        TupleWithSkipAndDefault(1, Vec::new(), "two".into(), 3)
    );
    // A wrong type at the defaulted position is still an error (field 3 reads column 2).
    let row = TestRow::new()
        .col("a", Type::INT4, 1i32)
        .col("b", Type::TEXT, "two")
        .col("c", Type::TEXT, "three");
    let err = TupleWithSkipAndDefault::from_row(&row).unwrap_err();
    let (message, _) = conversion_parts(&err);
    assert!(
        message.starts_with("TupleWithSkipAndDefault.3: column 2: "),
        "{message}"
    );
}

#[test]
fn unit_and_empty_structs() {
    #[derive(Debug, PartialEq, FromRow)]
    #[pgdbm(crate = "pgdbm_core")]
    struct Unit;
    #[derive(Debug, PartialEq, FromRow)]
    #[pgdbm(crate = "pgdbm_core")]
    struct Empty {}
    let row = TestRow::new().col("a", Type::INT4, 1i32);
    assert_eq!(Unit::from_row(&row).unwrap(), Unit);
    assert_eq!(Empty::from_row(&row).unwrap(), Empty {});
}

#[derive(Debug, PartialEq, FromRow)]
#[pgdbm(crate = "pgdbm_core")]
struct Bounded<T: for<'a> FromSql<'a>> {
    id: i32,
    value: T,
}

#[derive(Debug, PartialEq, FromRow)]
#[pgdbm(
    crate = "pgdbm_core",
    bound = "T: for<'a> postgres_types::FromSql<'a>, N: FromRow"
)]
struct WithBoundAttr<T, N> {
    value: Option<T>,
    #[pgdbm(flatten)]
    nested: N,
}

#[derive(Debug, PartialEq, FromRow)]
#[pgdbm(crate = "pgdbm_core")]
struct ConstGeneric<const N: usize> {
    id: i32,
}

#[test]
fn generic_structs_use_the_given_bounds() {
    let row = TestRow::new()
        .col("id", Type::INT4, 1i32)
        .col("value", Type::FLOAT8, 2.5f64)
        .col("city", Type::TEXT, "Oslo")
        .null("zip", Type::TEXT);
    assert_eq!(
        Bounded::<f64>::from_row(&row).unwrap(),
        Bounded { id: 1, value: 2.5 }
    );
    assert_eq!(
        WithBoundAttr::<f64, Address>::from_row(&row).unwrap(),
        WithBoundAttr {
            value: Some(2.5),
            nested: Address {
                city: "Oslo".into(),
                zip: None
            }
        }
    );
    assert_eq!(
        ConstGeneric::<3>::from_row(&row).unwrap(),
        ConstGeneric { id: 1 }
    );
    let err = Bounded::<String>::from_row(&row).unwrap_err();
    let (message, _) = conversion_parts(&err);
    assert!(
        message.starts_with("Bounded.value: column `value`: "),
        "{message}"
    );
}

/// `crate = "..."` accepts any path that names the core crate, e.g. a re-export.
mod reexport {
    pub(crate) use pgdbm_core as core;
}

#[derive(Debug, PartialEq, FromRow)]
#[pgdbm(crate = "crate::reexport::core")]
struct ThroughReexport {
    id: i32,
}

#[test]
fn crate_path_can_be_a_reexport() {
    let row = TestRow::new().col("id", Type::INT4, 4i32);
    assert_eq!(
        ThroughReexport::from_row(&row).unwrap(),
        ThroughReexport { id: 4 }
    );
}

#[test]
fn error_display_carries_the_context_and_no_values() {
    let row = TestRow::new()
        .col("id", Type::INT4, 1i32)
        .col("name", Type::TEXT, "secret-value")
        .col("email", Type::INT4, 3i32);
    let err = User::from_row(&row).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("conversion error"), "{text}");
    assert!(text.contains("User.email: column `email`"), "{text}");
    assert!(!text.contains("secret-value"), "{text}");
}

proptest! {
    /// Any values round-trip through the codecs into the derived struct, and NULLs into
    /// `Option` fields are `None`.
    #[test]
    fn values_round_trip(id in any::<i32>(), name in ".*", email in proptest::option::of(".*")) {
        let row = TestRow::new()
            .col("email", Type::TEXT, email.clone())
            .col("name", Type::VARCHAR, name.clone())
            .col("id", Type::INT4, id);
        let user = User::from_row(&row).unwrap();
        prop_assert_eq!(user, User { id, name, email });
    }

    /// A missing column always yields an error naming that column, whichever it is.
    #[test]
    fn any_missing_column_is_named(missing in 0usize..3) {
        let names = ["id", "name", "email"];
        let mut row = TestRow::new();
        for (i, n) in names.iter().enumerate() {
            if i == missing { continue; }
            row = match *n {
                "id" => row.col(n, Type::INT4, 1i32),
                _ => row.col(n, Type::TEXT, "x"),
            };
        }
        let err = User::from_row(&row).unwrap_err();
        let (message, _) = conversion_parts(&err);
        let expected = format!("User.{0}: column `{0}`: ", names[missing]);
        prop_assert!(message.starts_with(&expected), "{}", message);
    }
}

#[derive(Debug, PartialEq, FromRow)]
#[pgdbm(crate = "pgdbm_core", rename_all = "camelCase")]
struct Camel {
    user_id: i32,
    #[pgdbm(rename = "exact_name")]
    display_name: String,
}

#[derive(Debug, PartialEq, FromRow)]
#[pgdbm(crate = "pgdbm_core", rename_all = "SCREAMING_SNAKE_CASE")]
struct Screaming {
    user_id: i32,
}

#[derive(Debug, PartialEq, FromRow)]
#[pgdbm(crate = "pgdbm_core", rename_all = "PascalCase")]
struct Pascal {
    user_id: i32,
}

#[derive(Debug, PartialEq, FromRow)]
#[pgdbm(crate = "pgdbm_core", rename_all = "kebab-case")]
struct Kebab {
    user_id: i32,
}

#[derive(Debug, PartialEq, FromRow)]
#[pgdbm(crate = "pgdbm_core", rename_all = "UPPERCASE")]
struct Upper {
    user_id: i32,
}

#[test]
fn rename_all_follows_sqlx_case_conventions() {
    let row = TestRow::new()
        .col("userId", Type::INT4, 1i32)
        .col("exact_name", Type::TEXT, "a");
    assert_eq!(
        Camel::from_row(&row).unwrap(),
        Camel {
            user_id: 1,
            display_name: "a".into()
        }
    );
    let one = |name: &str| TestRow::new().col(name, Type::INT4, 2i32);
    assert_eq!(
        Screaming::from_row(&one("USER_ID")).unwrap(),
        Screaming { user_id: 2 }
    );
    assert_eq!(
        Pascal::from_row(&one("UserId")).unwrap(),
        Pascal { user_id: 2 }
    );
    assert_eq!(
        Kebab::from_row(&one("user-id")).unwrap(),
        Kebab { user_id: 2 }
    );
    assert_eq!(
        Upper::from_row(&one("USER_ID")).unwrap(),
        Upper { user_id: 2 }
    );
    // The renamed column is the one named in errors.
    let e = Pascal::from_row(&one("user_id")).unwrap_err();
    assert!(e.to_string().contains("column `UserId`"), "{e}");
}

#[derive(Debug, PartialEq)]
struct Cents(u32);

impl TryFrom<i64> for Cents {
    type Error = std::num::TryFromIntError;
    fn try_from(v: i64) -> std::result::Result<Self, Self::Error> {
        u32::try_from(v).map(Cents)
    }
}

#[derive(Debug, PartialEq, FromRow)]
#[pgdbm(crate = "pgdbm_core")]
struct Priced {
    #[pgdbm(try_from = "i64")]
    price: Cents,
    #[pgdbm(try_from = "i32", default)]
    stock: u16,
}

#[test]
fn try_from_converts_after_decoding() {
    let row = TestRow::new()
        .col("price", Type::INT8, 250i64)
        .col("stock", Type::INT4, 3i32);
    assert_eq!(
        Priced::from_row(&row).unwrap(),
        Priced {
            price: Cents(250),
            stock: 3
        }
    );
    let row = TestRow::new().col("price", Type::INT8, 9i64);
    assert_eq!(Priced::from_row(&row).unwrap().stock, 0);
    // An out-of-range value is a conversion error naming the field, column and source type.
    let row = TestRow::new().col("price", Type::INT8, -1i64);
    let e = Priced::from_row(&row).unwrap_err();
    let (message, source) = conversion_parts(&e);
    assert!(
        message.contains("Priced.price: column `price`") && message.contains("TryFrom<i64>"),
        "{message}"
    );
    assert!(source.contains("out of range"), "{source}");
    // The column must still decode as the `try_from` type.
    let row = TestRow::new().col("price", Type::TEXT, "x");
    assert!(Priced::from_row(&row).is_err());
}

#[cfg(feature = "json")]
mod json {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Settings {
        theme: String,
        size: u8,
    }

    #[derive(Debug, PartialEq, FromRow)]
    #[pgdbm(crate = "pgdbm_core")]
    struct Profile {
        #[pgdbm(json)]
        settings: Settings,
        #[pgdbm(json)]
        tags: Option<Vec<String>>,
    }

    #[test]
    fn json_columns_deserialize_with_serde() {
        let settings = postgres_types::Json(serde_json::json!({"theme": "dark", "size": 3}));
        let row = TestRow::new().col("settings", Type::JSONB, settings).col(
            "tags",
            Type::JSON,
            postgres_types::Json(vec!["a", "b"]),
        );
        assert_eq!(
            Profile::from_row(&row).unwrap(),
            Profile {
                settings: Settings {
                    theme: "dark".into(),
                    size: 3
                },
                tags: Some(vec!["a".into(), "b".into()])
            }
        );
        let bad = postgres_types::Json(serde_json::json!({"theme": 1}));
        let row = TestRow::new()
            .col("settings", Type::JSONB, bad)
            .null("tags", Type::JSON);
        let e = Profile::from_row(&row).unwrap_err();
        assert!(e.to_string().contains("Profile.settings"), "{e}");
    }
}
