//! Database names: validation and unique generation.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use pgdbm_core::{Error, Result};

/// Longest identifier PostgreSQL keeps (NAMEDATALEN - 1).
pub const MAX_NAME_BYTES: usize = 63;

/// Checks that `name` is a plain identifier usable as a database name:
/// `^[A-Za-z_][A-Za-z0-9_]*$`, at most 63 bytes.
///
/// # Errors
/// [`Error::TestDatabase`] naming `name` and what is wrong with it.
pub fn validate_database_name(name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() > MAX_NAME_BYTES {
        Some(format!(
            "it is {} bytes long, PostgreSQL keeps at most {MAX_NAME_BYTES}",
            name.len()
        ))
    } else if name.starts_with(|c: char| c.is_ascii_digit()) {
        Some("it starts with a digit".to_string())
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
            .map(|c| format!("it contains {c:?}"))
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(Error::TestDatabase {
            name: Some(name.to_string()),
            message: format!(
                "invalid database name: {problem}; use letters, digits and underscores, not \
                 starting with a digit, at most {MAX_NAME_BYTES} bytes"
            ),
            source: None,
        }),
    }
}

/// A database name no other test (in this or another process) will pick:
/// `prefix` + process id + a per-process counter + a random suffix, e.g. `test_4242_7_9f3a01bc`.
///
/// # Errors
/// [`Error::TestDatabase`] when `prefix` is not a valid start of an identifier or too long to
/// leave room for the suffix.
pub fn unique_database_name(prefix: &str) -> Result<String> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        "{prefix}{}_{n}_{:08x}",
        std::process::id(),
        random_u32_salted(n)
    );
    if prefix.is_empty() || prefix.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(Error::TestDatabase {
            name: Some(prefix.to_string()),
            message: "invalid database name prefix: it must start with a letter or underscore, \
                      e.g. `test_`"
                .to_string(),
            source: None,
        });
    }
    validate_database_name(&name).map_err(|_| Error::TestDatabase {
        name: Some(prefix.to_string()),
        message: format!(
            "invalid database name prefix: use letters, digits and underscores, and at most {} \
             bytes so that the generated name fits in {MAX_NAME_BYTES}",
            MAX_NAME_BYTES.saturating_sub(name.len() - prefix.len())
        ),
        source: None,
    })?;
    Ok(name)
}

/// 32 random-enough bits (a fresh salt each call), e.g. for generated e-mail addresses.
pub(crate) fn random_u32() -> u32 {
    static SALT: AtomicU64 = AtomicU64::new(0);
    random_u32_salted(SALT.fetch_add(1, Ordering::Relaxed) | (1 << 63))
}

/// 32 random-enough bits from std's per-process random hasher keys, the clock and `salt`.
fn random_u32_salted(salt: u64) -> u32 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(salt);
    if let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    let h = hasher.finish();
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_pass() {
        for n in ["postgres", "test_1", "_x", "A", &"a".repeat(63)] {
            validate_database_name(n).unwrap();
        }
    }

    #[test]
    fn invalid_names_are_named_in_the_error() {
        for n in [
            "",
            "1abc",
            "a-b",
            "a b",
            "x\"; DROP DATABASE postgres; --",
            "dbname=evil",
            "é",
            "a\n",
            &"a".repeat(64),
        ] {
            let err = validate_database_name(n).unwrap_err();
            match &err {
                Error::TestDatabase { name, .. } => assert_eq!(name.as_deref(), Some(n)),
                other => panic!("unexpected {other:?}"),
            }
            assert!(err.to_string().contains("invalid database name"), "{err}");
        }
    }

    #[test]
    fn unique_names_are_unique_and_valid() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let n = unique_database_name("test_").unwrap();
            assert!(n.starts_with("test_"));
            validate_database_name(&n).unwrap();
            assert!(seen.insert(n));
        }
    }

    #[test]
    fn bad_prefixes_are_rejected() {
        for p in ["", "1x", "a-b", &"p".repeat(60)] {
            let err = unique_database_name(p).unwrap_err();
            assert!(err.to_string().contains("prefix"), "{err}");
        }
    }
}
