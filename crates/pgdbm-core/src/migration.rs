//! Migration files: discovery rules, versions, the no-transaction marker and checksums.
//!
//! Everything here is a pure function over file names and contents; the migrate crate does the
//! file I/O. The rules are those of Python pgdbm, so that both can share one database:
//!
//! - a migration is a `*.sql` file (case-sensitive suffix) whose name does not start with `.`;
//!   files are applied in code-point order of their names ([`sort_migration_names`]);
//! - the checksum is the lowercase hex SHA-256 of the UTF-8 content after turning CRLF and lone
//!   CR into LF (Python reads files with universal newlines) and trimming surrounding whitespace
//!   with Python's `str.strip()` set ([`checksum`]);
//! - a migration containing [`NO_TRANSACTION_MARKER`] at the start of a line runs outside a
//!   transaction, one statement at a time ([`has_no_transaction_marker`]).

use std::borrow::Cow;

use sha2::{Digest, Sha256};

/// Magic comment that makes a migration run in autocommit mode, statement by statement.
pub const NO_TRANSACTION_MARKER: &str = "-- pgdbm:no-transaction";

/// True for the characters Python's `str.isspace()` accepts: Rust's [`char::is_whitespace`]
/// plus the separators U+001C..=U+001F.
pub fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `s` without leading and trailing whitespace, exactly like Python's `str.strip()`.
///
/// A byte-order mark (U+FEFF) is not whitespace and is kept.
///
/// ```
/// assert_eq!(pgdbm_core::migration::python_strip("\u{1f} x \u{3000}"), "x");
/// assert_eq!(pgdbm_core::migration::python_strip("\u{feff}x"), "\u{feff}x");
/// ```
pub fn python_strip(s: &str) -> &str {
    s.trim_matches(is_python_whitespace)
}

/// Turns CRLF and lone CR into LF.
fn normalize_line_endings(s: &str) -> Cow<'_, str> {
    if s.contains('\r') {
        Cow::Owned(s.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Cow::Borrowed(s)
    }
}

/// The text a checksum is computed over: CRLF and lone CR turned into LF, then
/// [`python_strip`]ped.
pub fn normalize_content(s: &str) -> Cow<'_, str> {
    match normalize_line_endings(s) {
        Cow::Borrowed(b) => Cow::Borrowed(python_strip(b)),
        Cow::Owned(o) => {
            let stripped = python_strip(&o);
            if stripped.len() == o.len() {
                Cow::Owned(o)
            } else {
                Cow::Owned(stripped.to_owned())
            }
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The checksum Python pgdbm stores for a migration: lowercase hex SHA-256 of
/// [`normalize_content`]`(content)`.
///
/// ```
/// assert_eq!(
///     pgdbm_core::checksum("CREATE TABLE t (id INT);"),
///     "f423e61fbd021a13b6ae0afb423f2da5c3cf7cc0647ddb7348266dbfd281d6fe"
/// );
/// ```
pub fn checksum(content: &str) -> String {
    sha256_hex(normalize_content(content).as_bytes())
}

const BOM: char = '\u{feff}';

const MSG_LINE_ENDINGS: &str =
    "the file differs only in line endings (CRLF/CR vs LF) from the content that was applied";
const MSG_BOM: &str =
    "the file differs only in a byte-order mark (U+FEFF) from the content that was applied";
const MSG_WHITESPACE: &str =
    "the file differs only in leading or trailing whitespace from the content that was applied";
const MSG_SEVERAL: &str = "the file differs only in line endings, a byte-order mark and/or \
     leading or trailing whitespace from the content that was applied";

fn message(line_endings: bool, bom: bool, whitespace: bool) -> Option<&'static str> {
    match (line_endings, bom, whitespace) {
        (false, false, false) => None,
        (true, false, false) => Some(MSG_LINE_ENDINGS),
        (false, true, false) => Some(MSG_BOM),
        (false, false, true) => Some(MSG_WHITESPACE),
        _ => Some(MSG_SEVERAL),
    }
}

/// Explains a checksum mismatch that is only cosmetic.
///
/// Returns `None` when `stored_checksum` equals [`checksum`]`(current_content)` (no mismatch)
/// or when no cosmetic variant explains it. Otherwise, the stored checksum is the SHA-256 of a
/// variant of the current content — raw (not normalized), with LF turned into CRLF, with a
/// byte-order mark removed or added, with or without surrounding whitespace or a final newline —
/// and the message says which kind of difference it is, e.g. "the file differs only in line
/// endings …". Migrate tools add it to their "modified after being applied" error.
pub fn explain_checksum_mismatch(
    stored_checksum: &str,
    current_content: &str,
) -> Option<&'static str> {
    let stored = stored_checksum.trim().to_ascii_lowercase();
    if stored.len() != 64 || stored == checksum(current_content) {
        return None;
    }
    let lf = normalize_line_endings(current_content);
    let crlf = lf.replace('\n', "\r\n");
    // (text, line endings changed from the normalized form?)
    let line_forms: [(&str, bool); 3] = [
        (current_content, current_content.contains('\r')),
        (&lf, false),
        (&crlf, crlf.len() != lf.len()),
    ];
    for (text, eol_changed) in line_forms {
        let without_bom = text.strip_prefix(BOM);
        let with_bom = format!("{BOM}{}", without_bom.unwrap_or(text));
        let bom_forms: [(&str, bool); 2] = match without_bom {
            Some(stripped) => [(text, false), (stripped, true)],
            None => [(text, false), (&with_bom, true)],
        };
        for (t, bom_changed) in bom_forms {
            let stripped = python_strip(t);
            let nl = if eol_changed { "\r\n" } else { "\n" };
            let with_newline = format!("{stripped}{nl}");
            let ws_forms: [&str; 5] = [
                stripped,
                t,
                t.trim_end_matches(is_python_whitespace),
                t.trim_start_matches(is_python_whitespace),
                &with_newline,
            ];
            for w in ws_forms {
                if sha256_hex(w.as_bytes()) == stored {
                    // The bytes hashed differ from the normalized content in these respects.
                    let ws_changed = w.len() != python_strip(w).len();
                    return message(eol_changed, bom_changed, ws_changed).or(Some(MSG_SEVERAL));
                }
            }
        }
    }
    None
}

/// Explains why two contents with different checksums are the same SQL: only a byte-order mark
/// (possibly with surrounding whitespace next to it) tells them apart. `None` when the checksums
/// are equal or the SQL differs.
pub fn explain_content_difference(old: &str, new: &str) -> Option<&'static str> {
    if checksum(old) == checksum(new) {
        return None;
    }
    let canon = |s: &str| -> String {
        let n = normalize_content(s);
        python_strip(n.trim_start_matches(|c| c == BOM || is_python_whitespace(c))).to_owned()
    };
    (canon(old) == canon(new)).then_some(MSG_BOM)
}

/// True for names of migration files: ending in `.sql` (case-sensitive) and not hidden (not
/// starting with `.`).
pub fn is_migration_file_name(name: &str) -> bool {
    name.ends_with(".sql") && !name.starts_with('.') && !name.contains('/')
}

/// Sorts migration file names in the order they are applied: code-point order, which for
/// UTF-8 strings is byte order (`"10_a.sql"` comes before `"9_a.sql"`; use zero-padded or
/// timestamp prefixes).
pub fn sort_migration_names(names: &mut [String]) {
    names.sort_unstable();
}

/// Length of the run of ASCII digits at the start of `s`.
fn digits(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

/// The version of a migration file, as Python pgdbm derives it:
/// `001_x.sql` -> `"001"`, `V1__x.sql` -> `"1"`, `20240126120000_x.sql` -> `"20240126120000"`;
/// otherwise the name up to its first `.` (`init.sql` -> `"init"`).
///
/// Only ASCII digits count (Python's `\d` also matches other Unicode digits).
pub fn migration_version(filename: &str) -> String {
    let n = digits(filename);
    if n > 0 && filename[n..].starts_with('_') {
        return filename[..n].to_owned();
    }
    if let Some(rest) = filename.strip_prefix('V') {
        let n = digits(rest);
        if n > 0 && rest[n..].starts_with("__") {
            return rest[..n].to_owned();
        }
    }
    filename.split('.').next().unwrap_or_default().to_owned()
}

/// True when a line of `content` starts with [`NO_TRANSACTION_MARKER`] followed by whitespace
/// or the end of the line.
///
/// Like Python pgdbm's `re.search(r"^-- pgdbm:no-transaction(?=\s|$)", content, re.MULTILINE)`:
/// the marker must be at the very start of a line (no indentation), lines are separated by
/// `\n`, and `-- pgdbm:no-transactionX` or a marker in the middle of a line does not count.
pub fn has_no_transaction_marker(content: &str) -> bool {
    content.split('\n').any(|line| {
        line.strip_prefix(NO_TRANSACTION_MARKER)
            .is_some_and(|rest| rest.chars().next().is_none_or(is_python_whitespace))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[c for c in range(0x110000) if chr(c).isspace()]` in CPython 3.
    const PYTHON_SPACES: &[u32] = &[
        0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001,
        0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029,
        0x202f, 0x205f, 0x3000,
    ];

    #[test]
    fn whitespace_set_is_pythons() {
        let ours: Vec<u32> = (0..=0x10ffff)
            .filter_map(char::from_u32)
            .filter(|&c| is_python_whitespace(c))
            .map(u32::from)
            .collect();
        assert_eq!(ours, PYTHON_SPACES);
        assert!(!is_python_whitespace(BOM));
    }

    #[test]
    fn strip_like_python() {
        assert_eq!(python_strip("  \t\n x y \r\n\u{1c}\u{85}"), "x y");
        assert_eq!(python_strip("\u{feff} x"), "\u{feff} x");
        assert_eq!(python_strip(""), "");
        assert_eq!(python_strip(" \u{2028} "), "");
    }

    #[test]
    fn checksum_vectors() {
        assert_eq!(
            checksum("CREATE TABLE {{tables.t1}} (id INT);\n"),
            "090a12620d172e2b49a7746a58ea26246bec62a0eba4addabd962819415a9107"
        );
        assert_eq!(
            checksum("CREATE TABLE t (id INT);"),
            "f423e61fbd021a13b6ae0afb423f2da5c3cf7cc0647ddb7348266dbfd281d6fe"
        );
        // Python: hashlib.sha256(b"").hexdigest()
        assert_eq!(
            checksum(" \n"),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn checksum_normalizes_line_endings_and_keeps_bom() {
        let lf = checksum("A;\nB;\n");
        assert_eq!(checksum("A;\r\nB;\r\n"), lf);
        assert_eq!(checksum("A;\rB;\r"), lf);
        assert_eq!(checksum("\r\n\t A;\nB;  \u{1f}"), lf);
        assert_ne!(checksum("\u{feff}A;\nB;"), lf);
        assert_eq!(normalize_content("a\r\n\rb"), "a\n\nb");
        assert!(matches!(normalize_content("  x  "), Cow::Borrowed("x")));
    }

    #[test]
    fn explains_cosmetic_mismatches() {
        let content = "CREATE TABLE t (id INT);\nCREATE TABLE u (id INT);\n";
        let same = checksum(content);
        assert_eq!(explain_checksum_mismatch(&same, content), None);
        // Stored over CRLF content that was not normalized.
        let crlf = sha256_hex(content.replace('\n', "\r\n").as_bytes());
        let m = explain_checksum_mismatch(&crlf, content).unwrap();
        assert!(m.contains("line endings"), "{m}");
        // Stored with a BOM, the file lost it (and the other way around).
        let with_bom = checksum(&format!("{BOM}{content}"));
        let m = explain_checksum_mismatch(&with_bom, content).unwrap();
        assert!(m.contains("byte-order mark"), "{m}");
        let m = explain_checksum_mismatch(&same, &format!("{BOM}{content}")).unwrap();
        assert!(m.contains("byte-order mark"), "{m}");
        // Stored over the raw, unstripped content.
        let raw = sha256_hex(content.as_bytes());
        let m = explain_checksum_mismatch(&raw, content).unwrap();
        assert!(m.contains("whitespace"), "{m}");
        assert!(explain_checksum_mismatch(&raw.to_uppercase(), content).is_some());
        // A real change is not explained.
        assert_eq!(
            explain_checksum_mismatch(&checksum("CREATE TABLE v (id INT);"), content),
            None
        );
        assert_eq!(explain_checksum_mismatch("not a checksum", content), None);
    }

    #[test]
    fn explains_content_difference() {
        assert_eq!(explain_content_difference("a", "a\r\n"), None);
        assert!(explain_content_difference("\u{feff}a", "a").is_some());
        assert!(explain_content_difference("\u{feff} \na", "a").is_some());
        assert_eq!(explain_content_difference("a", "b"), None);
    }

    #[test]
    fn migration_file_names() {
        for ok in ["001_init.sql", "x.sql", "V1__a.sql", "a b.sql", "é.sql"] {
            assert!(is_migration_file_name(ok), "{ok}");
        }
        for bad in [
            ".hidden.sql",
            ".sql",
            "001_init.SQL",
            "001_init.sql.bak",
            "001_init.txt",
            "readme",
            "a/b.sql",
        ] {
            assert!(!is_migration_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn sorts_in_code_point_order() {
        let mut names: Vec<String> = [
            "b.sql", "B.sql", "10_x.sql", "9_x.sql", "_a.sql", "é.sql", "z.sql",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        sort_migration_names(&mut names);
        assert_eq!(
            names,
            ["10_x.sql", "9_x.sql", "B.sql", "_a.sql", "b.sql", "z.sql", "é.sql"]
        );
    }

    #[test]
    fn versions() {
        for (name, version) in [
            ("001_x.sql", "001"),
            ("V1__x.sql", "1"),
            ("V12__create_users.sql", "12"),
            ("20240126120000_x.sql", "20240126120000"),
            ("20240126_x.sql", "20240126"),
            ("init.sql", "init"),
            ("a.b.sql", "a"),
            ("V1_x.sql", "V1_x"),
            ("v1__x.sql", "v1__x"),
            ("001.sql", "001"),
            ("_x.sql", "_x"),
            ("V__x.sql", "V__x"),
            ("", ""),
        ] {
            assert_eq!(migration_version(name), version, "{name}");
        }
    }

    #[test]
    fn no_transaction_marker() {
        assert!(has_no_transaction_marker(
            "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (c);"
        ));
        assert!(has_no_transaction_marker(
            "-- Description\n-- pgdbm:no-transaction\nCREATE INDEX i ON t (c);"
        ));
        assert!(has_no_transaction_marker(
            "x;\r\n-- pgdbm:no-transaction\r\n"
        ));
        assert!(has_no_transaction_marker("-- pgdbm:no-transaction"));
        assert!(has_no_transaction_marker(
            "-- pgdbm:no-transaction because CIC"
        ));
        assert!(!has_no_transaction_marker("CREATE TABLE t (id INT);"));
        assert!(!has_no_transaction_marker(
            "SELECT 1; -- pgdbm:no-transaction\n"
        ));
        assert!(!has_no_transaction_marker("  -- pgdbm:no-transaction\n"));
        assert!(!has_no_transaction_marker("-- pgdbm:no-transactionX\n"));
        assert!(!has_no_transaction_marker("-- pgdbm:no-transaction_mode"));
        assert!(!has_no_transaction_marker("-- PGDBM:NO-TRANSACTION"));
    }
}
