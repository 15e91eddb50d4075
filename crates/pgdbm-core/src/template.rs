//! Schema templates: `{{schema}}`, `{{tables.name}}` and `{{tables.schema.name}}`.
//!
//! The placeholders of Python pgdbm (see the reference's "Query Placeholders" section):
//!
//! | placeholder              | schema `Some("myapp")` | schema `None`          |
//! |--------------------------|------------------------|------------------------|
//! | `{{tables.users}}`       | `"myapp".users`        | `users`                |
//! | `{{tables.other.users}}` | `"other".users`        | `"other".users`        |
//! | `{{schema}}`             | `"myapp"`              | `public`               |
//! | `{{schema}}.` (with dot) | `"myapp".`             | *(removed)*            |
//!
//! A placeholder is exactly `{{schema}}`, or `{{tables.` followed by everything up to the next
//! `}}`. Every identifier that is substituted (the schema, the table, the explicit schema) is
//! checked with [`validate_identifier`]; a bad one makes rendering fail with
//! [`Error::Schema`], so it never reaches SQL. This is stricter than Python
//! pgdbm, which leaves a `{{tables.…}}` with a bad name in the SQL for the server to reject.
//! Any other text, including a `{{` that starts no placeholder (`{{foo}}`, a lone `{{`), is
//! copied byte for byte.
//!
//! [`TemplateCache`] memoizes renders per (query, schema) so that the hot path does no scanning.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::error::{Error, Result};
use crate::ident::validate_identifier;

const SCHEMA_PLACEHOLDER: &str = "{{schema}}";
const TABLES_PREFIX: &str = "{{tables.";
const CLOSE: &str = "}}";
/// Schema used by a bare `{{schema}}` when no schema is configured.
const DEFAULT_SCHEMA: &str = "public";

/// True when `sql` contains a placeholder (`{{schema}}` or the start of a `{{tables.` one).
///
/// When this is false, [`render`] returns `sql` unchanged.
///
/// ```
/// assert!(pgdbm_core::has_placeholders("SELECT * FROM {{tables.users}}"));
/// assert!(!pgdbm_core::has_placeholders("SELECT '{{foo}}'"));
/// ```
pub fn has_placeholders(sql: &str) -> bool {
    sql.contains(SCHEMA_PLACEHOLDER) || sql.contains(TABLES_PREFIX)
}

/// Renders the schema placeholders of `sql` for `schema` (see the [module docs](self)).
///
/// # Errors
///
/// [`Error::Schema`] when the schema or a table name used by a placeholder is not a valid
/// identifier, or when a `{{tables.` placeholder is not closed by `}}`.
///
/// ```
/// use pgdbm_core::render;
/// assert_eq!(render("SELECT * FROM {{tables.users}}", Some("myapp")).unwrap(),
///            "SELECT * FROM \"myapp\".users");
/// assert_eq!(render("CREATE TYPE {{schema}}.mood AS ENUM ('ok')", None).unwrap(),
///            "CREATE TYPE mood AS ENUM ('ok')");
/// assert!(render("SELECT * FROM {{tables.a;drop}}", None).is_err());
/// ```
pub fn render(sql: &str, schema: Option<&str>) -> Result<String> {
    render_cow(sql, schema).map(Cow::into_owned)
}

/// Like [`render`], but borrows `sql` when there is nothing to substitute.
pub(crate) fn render_cow<'a>(sql: &'a str, schema: Option<&str>) -> Result<Cow<'a, str>> {
    if !has_placeholders(sql) {
        return Ok(Cow::Borrowed(sql));
    }
    let mut out = String::with_capacity(sql.len() + 32);
    let mut schema_checked = false;
    let mut check_schema = |s: &str| -> Result<()> {
        if !schema_checked {
            validate_identifier(s).map_err(|e| context(e, "the configured schema"))?;
            schema_checked = true;
        }
        Ok(())
    };
    // `copied`: bytes of `sql` already handled; `pos`: where to look for the next `{{`.
    let mut copied = 0;
    let mut pos = 0;
    while let Some(off) = sql[pos..].find("{{") {
        let start = pos + off;
        let rest = &sql[start..];
        if rest.starts_with(SCHEMA_PLACEHOLDER) {
            out.push_str(&sql[copied..start]);
            let mut end = start + SCHEMA_PLACEHOLDER.len();
            match schema {
                Some(s) => {
                    check_schema(s)?;
                    push_quoted(&mut out, s);
                }
                None => {
                    if sql[end..].starts_with('.') {
                        // `{{schema}}.name` -> `name`: unqualified, found via search_path.
                        end += 1;
                    } else {
                        out.push_str(DEFAULT_SCHEMA);
                    }
                }
            }
            copied = end;
            pos = end;
        } else if rest.starts_with(TABLES_PREFIX) {
            let name_start = start + TABLES_PREFIX.len();
            let Some(close) = sql[name_start..].find(CLOSE) else {
                return Err(Error::Schema {
                    schema: None,
                    message: format!(
                        "unterminated placeholder `{}` at byte {start}: close it with `}}}}` \
                         (placeholders are {{{{schema}}}}, {{{{tables.name}}}} and {{{{tables.schema.name}}}})",
                        crate::error::truncate_sql(rest, 40).escape_debug()
                    ),
                });
            };
            let inner = &sql[name_start..name_start + close];
            let end = name_start + close + CLOSE.len();
            out.push_str(&sql[copied..start]);
            match inner.split_once('.') {
                Some((explicit_schema, table)) => {
                    validate_identifier(explicit_schema).map_err(|e| context(e, inner))?;
                    validate_identifier(table).map_err(|e| context(e, inner))?;
                    push_quoted(&mut out, explicit_schema);
                    out.push('.');
                    out.push_str(table);
                }
                None => {
                    validate_identifier(inner).map_err(|e| context(e, inner))?;
                    if let Some(s) = schema {
                        check_schema(s)?;
                        push_quoted(&mut out, s);
                        out.push('.');
                    }
                    out.push_str(inner);
                }
            }
            copied = end;
            pos = end;
        } else {
            // Not a placeholder: keep the `{{` and look again one byte later (`{` is ASCII),
            // so that `{{{schema}}` still finds its placeholder.
            pos = start + 1;
        }
    }
    out.push_str(&sql[copied..]);
    Ok(Cow::Owned(out))
}

fn push_quoted(out: &mut String, ident: &str) {
    out.push('"');
    out.push_str(ident);
    out.push('"');
}

/// Adds where the bad identifier was found to a [`Error::Schema`] message.
fn context(e: Error, what: &str) -> Error {
    match e {
        Error::Schema { schema, message } => Error::Schema {
            schema,
            message: format!(
                "{message} (in template placeholder `{}`)",
                crate::error::truncate_sql(what, 80).escape_debug()
            ),
        },
        other => other,
    }
}

/// Queries longer than this (in bytes) are rendered every time instead of being cached, so that
/// a few huge generated statements cannot pin a lot of memory.
pub const MAX_CACHED_QUERY_BYTES: usize = 64 * 1024;

/// A thread-safe, bounded cache of rendered templates, keyed by (query, schema).
///
/// A hit takes a read lock, does one hash lookup and returns a clone of an [`Arc<str>`]: no
/// scanning and no new string. When the cache holds `capacity` entries, inserting another one
/// empties it first, so memory stays bounded (at most `capacity` entries of at most
/// [`MAX_CACHED_QUERY_BYTES`] each). Errors are not cached.
///
/// ```
/// use pgdbm_core::TemplateCache;
/// let cache = TemplateCache::new(100);
/// let a = cache.render("SELECT * FROM {{tables.t}}", Some("app")).unwrap();
/// let b = cache.render("SELECT * FROM {{tables.t}}", Some("app")).unwrap();
/// assert_eq!(&*a, "SELECT * FROM \"app\".t");
/// assert!(std::sync::Arc::ptr_eq(&a, &b));
/// assert_eq!((cache.misses(), cache.hits()), (1, 1));
/// ```
#[derive(Debug)]
pub struct TemplateCache {
    inner: RwLock<Entries>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug, Default)]
struct Entries {
    /// Renders without a schema, by query.
    no_schema: HashMap<Arc<str>, Arc<str>>,
    /// Renders with a schema, by schema then query.
    by_schema: HashMap<Box<str>, HashMap<Arc<str>, Arc<str>>>,
    /// Total number of entries.
    len: usize,
}

impl Entries {
    fn get(&self, sql: &str, schema: Option<&str>) -> Option<&Arc<str>> {
        match schema {
            None => self.no_schema.get(sql),
            Some(s) => self.by_schema.get(s)?.get(sql),
        }
    }
}

impl Default for TemplateCache {
    /// A cache of 1024 entries.
    fn default() -> Self {
        Self::new(1024)
    }
}

impl TemplateCache {
    /// A cache holding at most `capacity` renders (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        TemplateCache {
            inner: RwLock::new(Entries::default()),
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Renders `sql` for `schema` like [`render`], from the cache when possible.
    ///
    /// # Errors
    ///
    /// The errors of [`render`].
    pub fn render(&self, sql: &str, schema: Option<&str>) -> Result<Arc<str>> {
        {
            // A poisoned lock only means another thread panicked while holding it; the maps
            // are never left half-updated by our code, so the data is still usable.
            let entries = self.inner.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(hit) = entries.get(sql, schema) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Arc::clone(hit));
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let rendered = render_cow(sql, schema)?;
        let key: Arc<str> = Arc::from(sql);
        let value = match rendered {
            Cow::Borrowed(_) => Arc::clone(&key),
            Cow::Owned(s) => Arc::from(s),
        };
        if self.capacity > 0 && sql.len() <= MAX_CACHED_QUERY_BYTES {
            let mut entries = self.inner.write().unwrap_or_else(PoisonError::into_inner);
            if entries.get(sql, schema).is_none() {
                if entries.len >= self.capacity {
                    *entries = Entries::default();
                }
                let map = match schema {
                    None => &mut entries.no_schema,
                    Some(s) => entries.by_schema.entry(Box::from(s)).or_default(),
                };
                map.insert(key, Arc::clone(&value));
                entries.len += 1;
            }
        }
        Ok(value)
    }

    /// Number of cached renders.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every cached render (the hit and miss counters are kept).
    pub fn clear(&self) {
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = Entries::default();
    }

    /// Maximum number of cached renders.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of renders answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Number of renders that scanned the query (cache misses, including failed renders).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_err<T: std::fmt::Debug>(r: Result<T>) -> (Option<String>, String) {
        match r {
            Err(Error::Schema { schema, message }) => (schema, message),
            other => panic!("expected Error::Schema, got {other:?}"),
        }
    }

    #[test]
    fn renders_with_schema() {
        let s = Some("myapp");
        assert_eq!(
            render("CREATE TABLE {{tables.users}} (id INT)", s).unwrap(),
            "CREATE TABLE \"myapp\".users (id INT)"
        );
        assert_eq!(
            render("CREATE TYPE {{schema}}.status_enum AS ENUM ('a')", s).unwrap(),
            "CREATE TYPE \"myapp\".status_enum AS ENUM ('a')"
        );
        assert_eq!(render("{{schema}}", s).unwrap(), "\"myapp\"");
        assert_eq!(
            render("SELECT * FROM {{tables.other.users}}", s).unwrap(),
            "SELECT * FROM \"other\".users"
        );
        assert_eq!(
            render("SELECT * FROM {{tables.a}} JOIN {{tables.b}} USING (id)", s).unwrap(),
            "SELECT * FROM \"myapp\".a JOIN \"myapp\".b USING (id)"
        );
    }

    #[test]
    fn renders_without_schema() {
        assert_eq!(
            render("CREATE TABLE {{tables.users}} (id INT)", None).unwrap(),
            "CREATE TABLE users (id INT)"
        );
        assert_eq!(render("{{schema}}.t", None).unwrap(), "t");
        assert_eq!(
            render("SET search_path TO {{schema}}", None).unwrap(),
            "SET search_path TO public"
        );
        assert_eq!(
            render("SELECT * FROM {{tables.other.users}}", None).unwrap(),
            "SELECT * FROM \"other\".users"
        );
    }

    #[test]
    fn keeps_non_placeholders_byte_identical() {
        for sql in [
            "SELECT '{{foo}}'",
            "{{",
            "}}",
            "{{tables}}",
            "{{ schema }}",
            "{{Schema}}",
            "SELECT $${{x}}$$",
            "é{{ü",
        ] {
            assert_eq!(render(sql, Some("s")).unwrap(), sql);
            assert_eq!(render(sql, None).unwrap(), sql);
        }
        assert_eq!(
            render("{{foo}} {{tables.t}} {{", Some("s")).unwrap(),
            "{{foo}} \"s\".t {{"
        );
        assert_eq!(render("{{{schema}}}", Some("s")).unwrap(), "{\"s\"}");
        assert_eq!(render("é{{schema}}ü", None).unwrap(), "épublicü");
    }

    #[test]
    fn rejects_bad_identifiers() {
        let long = "a".repeat(64);
        for name in [
            "a;drop",
            "1abc",
            long.as_str(),
            "\"x\"",
            "usérs",
            "users\n",
            "",
            "a b",
            "a.b.c",
            ".t",
            "s.",
        ] {
            let sql = format!("SELECT * FROM {{{{tables.{name}}}}}");
            schema_err(render(&sql, Some("app")));
            schema_err(render(&sql, None));
        }
        // A bad configured schema, used by {{schema}} or {{tables.x}}.
        for bad_schema in ["a;drop", "1abc", "x\"y", "app\n", ""] {
            let (schema, _) = schema_err(render("SELECT {{schema}}", Some(bad_schema)));
            assert_eq!(schema.as_deref(), Some(bad_schema));
            schema_err(render("SELECT * FROM {{tables.t}}", Some(bad_schema)));
            // Not used: nothing to validate, SQL unchanged.
            assert_eq!(render("SELECT 1", Some(bad_schema)).unwrap(), "SELECT 1");
        }
        let (_, message) = schema_err(render("SELECT * FROM {{tables.users", None));
        assert!(message.contains("unterminated"), "{message}");
    }

    #[test]
    fn error_names_the_identifier() {
        let (schema, message) = schema_err(render("SELECT * FROM {{tables.a;drop}}", None));
        assert_eq!(schema.as_deref(), Some("a;drop"));
        assert!(message.contains("{{tables.") || message.contains("placeholder"));
    }

    #[test]
    fn has_placeholders_matches_render() {
        assert!(has_placeholders("{{schema}}"));
        assert!(has_placeholders("x {{tables.t}}"));
        assert!(!has_placeholders("{{foo}}"));
        assert!(!has_placeholders("SELECT 1"));
    }

    #[test]
    fn cache_hits_do_not_rescan() {
        let cache = TemplateCache::new(10);
        assert!(cache.is_empty());
        let q = "SELECT * FROM {{tables.t}}";
        let a = cache.render(q, Some("app")).unwrap();
        assert_eq!((cache.hits(), cache.misses()), (0, 1));
        let b = cache.render(q, Some("app")).unwrap();
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
        assert!(Arc::ptr_eq(&a, &b));
        // Different schema and no schema are different keys.
        let c = cache.render(q, Some("other")).unwrap();
        let d = cache.render(q, None).unwrap();
        assert_eq!(&*c, "SELECT * FROM \"other\".t");
        assert_eq!(&*d, "SELECT * FROM t");
        assert_eq!(cache.misses(), 3);
        assert_eq!(cache.len(), 3);
        // Queries without placeholders are cached too, sharing one allocation.
        let e = cache.render("SELECT 1", None).unwrap();
        assert_eq!(&*e, "SELECT 1");
        cache.render("SELECT 1", None).unwrap();
        assert_eq!(cache.hits(), 2);
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn cache_does_not_store_errors() {
        let cache = TemplateCache::default();
        assert_eq!(cache.capacity(), 1024);
        for _ in 0..2 {
            schema_err(cache.render("SELECT {{tables.a;b}}", None));
        }
        assert_eq!(cache.misses(), 2);
        assert!(cache.is_empty());
    }

    #[test]
    fn cache_is_bounded() {
        let cache = TemplateCache::new(4);
        for i in 0..100 {
            let q = format!("SELECT {i} FROM {{{{tables.t}}}}");
            assert_eq!(
                &*cache.render(&q, Some("s")).unwrap(),
                format!("SELECT {i} FROM \"s\".t")
            );
            assert!(cache.len() <= 4);
        }
        let zero = TemplateCache::new(0);
        zero.render("SELECT 1", None).unwrap();
        zero.render("SELECT 1", None).unwrap();
        assert_eq!((zero.len(), zero.hits(), zero.misses()), (0, 0, 2));
        let big = format!(
            "SELECT '{}' FROM {{{{tables.t}}}}",
            "x".repeat(MAX_CACHED_QUERY_BYTES)
        );
        let cache = TemplateCache::new(4);
        cache.render(&big, None).unwrap();
        assert!(cache.is_empty());
    }

    #[test]
    fn cache_is_shared_between_threads() {
        let cache = Arc::new(TemplateCache::new(64));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let cache = Arc::clone(&cache);
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let q = format!("SELECT {} FROM {{{{tables.t}}}}", i % 16);
                        let r = cache.render(&q, Some("s")).unwrap();
                        assert_eq!(&*r, format!("SELECT {} FROM \"s\".t", i % 16), "thread {t}");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(cache.hits() + cache.misses(), 800);
        assert!(cache.len() <= 16);
    }
}
