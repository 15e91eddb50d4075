//! Property tests of the pure SQL-side logic: templates, splitter, checksum, retry schedule.

use std::time::Duration;

use pgdbm_core::migration::python_strip;
use pgdbm_core::{
    checksum, render, split_statements, split_statements_spans, validate_identifier, Error,
    RetrySchedule, TemplateCache,
};
use proptest::prelude::*;

/// Names from a broad strategy: valid identifiers, near misses and arbitrary text (no `}`,
/// which would end the placeholder early and change what the "name" is).
fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z_][A-Za-z0-9_]{0,70}",
        "[0-9][A-Za-z0-9_]{0,10}",
        "[A-Za-z_]{1,5}[;\"' .\n\t-]{1,3}[A-Za-z_]{0,5}",
        "[A-Za-z_]{1,5}\n",
        "[^}]{0,20}",
        Just(String::new()),
    ]
}

/// Is `inner` (the text between `{{tables.` and `}}`) a valid placeholder name?
fn valid_placeholder(inner: &str) -> bool {
    let parts: Vec<&str> = inner.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| validate_identifier(p).is_ok())
}

fn is_schema_error<T>(r: &pgdbm_core::Result<T>) -> bool {
    matches!(r, Err(Error::Schema { .. }))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A bad identifier never reaches SQL: render fails with Error::Schema exactly when a
    /// placeholder's name (or the schema it uses) is invalid, and otherwise every substituted
    /// name is valid and present.
    #[test]
    fn template_output_never_contains_invalid_identifiers(
        table in any_name(),
        schema in prop::option::of(any_name()),
        use_schema_placeholder in any::<bool>(),
    ) {
        let sql = if use_schema_placeholder {
            format!("SELECT 1 FROM {{{{tables.{table}}}}} WHERE x IN (SELECT 1 FROM {{{{schema}}}}.t)")
        } else {
            format!("SELECT 1 FROM {{{{tables.{table}}}}}")
        };
        let explicit = table.contains('.');
        let schema_used = schema.is_some() && (use_schema_placeholder || !explicit);
        let schema_ok = schema.as_deref().is_none_or(|s| validate_identifier(s).is_ok());
        let expect_ok = valid_placeholder(&table) && (!schema_used || schema_ok);
        let result = render(&sql, schema.as_deref());
        if expect_ok {
            let out = result.unwrap();
            // Every identifier that appears came from a valid name.
            let (ts, tn) = match table.split_once('.') {
                Some((s, t)) => (Some(s), t),
                None => (schema.as_deref(), table.as_str()),
            };
            let expected_table = match ts {
                Some(s) => format!("\"{s}\".{tn}"),
                None => tn.to_owned(),
            };
            prop_assert!(out.starts_with(&format!("SELECT 1 FROM {expected_table}")), "{out}");
            prop_assert!(!out.contains("{{"));
        } else {
            prop_assert!(is_schema_error(&result), "{result:?}");
        }
        // The cache agrees with the uncached render.
        let cache = TemplateCache::new(8);
        let cached = cache.render(&sql, schema.as_deref());
        match (&cached, render(&sql, schema.as_deref())) {
            (Ok(a), Ok(b)) => prop_assert_eq!(&**a, b.as_str()),
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "cache {a:?} vs render {b:?}"),
        }
    }

    /// Text without placeholders renders byte-identical, with or without a schema.
    #[test]
    fn text_without_placeholders_is_unchanged(sql in any::<String>(), schema in prop::option::of("[a-z_]{1,10}")) {
        prop_assume!(!sql.contains("{{schema}}") && !sql.contains("{{tables."));
        prop_assert_eq!(render(&sql, schema.as_deref()).unwrap(), sql.clone());
        prop_assert_eq!(render(&sql, None).unwrap(), sql);
    }

    /// Text around placeholders is preserved byte for byte.
    #[test]
    fn text_around_placeholders_is_preserved(
        before in "[^{}]{0,30}",
        after in "[^{}]{0,30}",
        table in "[a-z_][a-z0-9_]{0,10}",
    ) {
        let out = render(&format!("{before}{{{{tables.{table}}}}}{after}"), Some("app")).unwrap();
        prop_assert_eq!(out, format!("{before}\"app\".{table}{after}"));
    }

    /// The splitter's spans re-joined with `;` give back the input, for arbitrary input, and
    /// every returned statement is a trimmed slice of it.
    #[test]
    fn splitter_spans_rejoin_arbitrary(sql in any::<String>()) {
        check_split(&sql)?;
    }

    /// Same, on SQL-like input full of quotes, comments and dollar signs.
    #[test]
    fn splitter_spans_rejoin_sqlish(
        parts in prop::collection::vec(
            prop_oneof![
                Just(";"), Just("'"), Just("''"), Just("E'"), Just("\\"), Just("\""),
                Just("$$"), Just("$a$"), Just("$1"), Just("$"), Just("--"), Just("\n"),
                Just("/*"), Just("*/"), Just("BEGIN"), Just("ATOMIC"), Just("CASE"),
                Just("END"), Just(" "), Just("x"), Just("é"), Just("-"), Just("/"),
            ],
            0..40,
        )
    ) {
        check_split(&parts.concat())?;
    }

    /// Statements made only of safe text split exactly at their `;`s (parentheses balanced:
    /// as in psql, a `;` inside open parentheses does not end a statement).
    #[test]
    fn splitter_splits_plain_statements(stmts in prop::collection::vec("[a-zA-Z0-9 ,=]*[a-z][a-zA-Z0-9 ,=]*(\\([a-z0-9 ,=]*\\))?", 1..6)) {
        let script = stmts.join(";\n");
        let expected: Vec<&str> = stmts.iter().map(|s| s.trim()).collect();
        prop_assert_eq!(split_statements(&script), expected);
    }

    /// The checksum ignores CRLF vs LF, lone CR, and surrounding whitespace.
    #[test]
    fn checksum_invariant_under_line_endings_and_whitespace(
        lines in prop::collection::vec("[^\r\n]{0,20}", 0..6),
        lead in "[ \t\n\r\u{0b}\u{0c}\u{1c}-\u{1f}\u{85}\u{a0}\u{2000}\u{3000}]{0,4}",
        trail in "[ \t\n\r\u{0b}\u{0c}\u{1c}-\u{1f}\u{85}\u{a0}\u{2000}\u{3000}]{0,4}",
    ) {
        let lf = lines.join("\n");
        let crlf = lines.join("\r\n");
        let cr = lines.join("\r");
        let base = checksum(&lf);
        prop_assert_eq!(checksum(&crlf), base.clone());
        prop_assert_eq!(checksum(&cr), base.clone());
        prop_assert_eq!(checksum(&format!("{lead}{crlf}{trail}")), base.clone());
        prop_assert_eq!(checksum(python_strip(&lf)), base.clone());
        prop_assert_eq!(base.len(), 64);
        prop_assert!(base.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    /// Without jitter, delays never decrease and never exceed max_delay; with jitter they stay
    /// within 50-100 % of the unjittered delay; nothing panics for any input.
    #[test]
    fn retry_schedule_is_sane(
        attempts in prop_oneof![0u32..20, any::<u32>()],
        delay_ns in prop_oneof![0u64..10_000_000_000, any::<u64>()],
        max_ns in prop_oneof![0u64..100_000_000_000, any::<u64>()],
        backoff in prop_oneof![1.0f64..10.0, any::<f64>(), Just(f64::NAN), Just(f64::INFINITY)],
        random in prop_oneof![0.0f64..1.0, any::<f64>()],
        probe in any::<u32>(),
    ) {
        let plain = RetrySchedule {
            attempts,
            delay: Duration::from_nanos(delay_ns),
            backoff,
            max_delay: Duration::from_nanos(max_ns),
            jitter: false,
        };
        let delays = plain.delays();
        prop_assert_eq!(delays.len(), (attempts.saturating_sub(1) as usize).min(1000));
        for w in delays.windows(2) {
            prop_assert!(w[0] <= w[1], "{:?}", delays);
        }
        for d in &delays {
            prop_assert!(*d <= plain.max_delay);
        }
        let jittered = RetrySchedule { jitter: true, ..plain.clone() };
        let a = probe.max(1);
        match (plain.delay_after(a, random), jittered.delay_after(a, random)) {
            (None, None) => prop_assert!(a >= attempts),
            (Some(full), Some(j)) => {
                prop_assert!(a < attempts);
                prop_assert!(j <= full);
                prop_assert!(j.as_nanos() >= full.as_nanos() / 2, "{j:?} < half of {full:?}");
            }
            other => prop_assert!(false, "{other:?}"),
        }
    }
}

fn check_split(sql: &str) -> Result<(), TestCaseError> {
    let spans = split_statements_spans(sql);
    prop_assert!(!spans.is_empty());
    let rejoined: Vec<&str> = spans.iter().map(|r| &sql[r.clone()]).collect();
    prop_assert_eq!(rejoined.join(";"), sql);
    for w in spans.windows(2) {
        prop_assert_eq!(w[0].end + 1, w[1].start);
        prop_assert_eq!(&sql[w[0].end..w[1].start], ";");
    }
    for s in split_statements(sql) {
        prop_assert!(!s.is_empty());
        prop_assert_eq!(s, s.trim());
        prop_assert!(sql.contains(s));
    }
    Ok(())
}
