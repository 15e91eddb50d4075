//! A small SQL lexer: statement splitting and keyword search that know about PostgreSQL's
//! quoting rules.
//!
//! The lexer recognises single-quoted strings (`''` escapes; `E'…'` strings also take backslash
//! escapes), double-quoted identifiers, dollar quotes (`$$…$$`, `$tag$…$tag$`, not confused with
//! `$1` parameters or `$` inside identifiers), `--` line comments, nested `/* /* */ */` block
//! comments, parentheses and `BEGIN … END` bodies of `CREATE FUNCTION`/`PROCEDURE` (their `;`s
//! do not end the statement; `CASE … END` inside them nests), splitting exactly where psql does.
//! Unterminated constructs run to the end of the input. It never panics and works on any UTF-8
//! text.
//!
//! Plain `'…'` strings follow `standard_conforming_strings = on` (the default since PostgreSQL
//! 9.1): a backslash in them is an ordinary character.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Spaces, tabs, newlines.
    Space,
    /// `-- …` or `/* … */`.
    Comment,
    /// An unquoted word: keyword or identifier (`[A-Za-z0-9_$]` and non-ASCII, not starting
    /// with a digit).
    Word,
    /// A numeric constant: digits, a fraction, an exponent and any letters or `_` glued to it
    /// (`0x1F`, `1_000`, `1.5e-3`, `.5`).
    Number,
    /// `'…'`, `E'…'` (without the `E`), `$tag$…$tag$`.
    Literal,
    /// `"…"`.
    QuotedIdent,
    /// `$1`.
    Param,
    /// `;`.
    Semicolon,
    /// Any other character (operators, punctuation).
    Other,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_tag_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_tag_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Tokens of `sql` as (kind, byte range). Ranges are contiguous and cover the input.
#[derive(Clone)]
struct Lexer<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// The previous word was `E`/`e` directly followed by `'`.
    escape_string_next: bool,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer {
            src,
            bytes: src.as_bytes(),
            pos: 0,
            escape_string_next: false,
        }
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.bytes.get(i).copied()
    }

    /// End of a quoted run starting after the opening `quote` at `from`: the byte after the
    /// closing quote, where a doubled quote is an escaped one (and, when `backslash`, `\x` too).
    fn quoted_end(&self, from: usize, quote: u8, backslash: bool) -> usize {
        let mut i = from;
        while let Some(b) = self.at(i) {
            if backslash && b == b'\\' {
                i += 2;
            } else if b == quote {
                if self.at(i + 1) == Some(quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            } else {
                i += 1;
            }
        }
        self.bytes.len()
    }

    /// If a dollar-quote opener `$tag$` starts at `start`, its length.
    fn dollar_tag_len(&self, start: usize) -> Option<usize> {
        let mut i = start + 1;
        match self.at(i)? {
            b'$' => return Some(2),
            b if is_tag_start(b) => i += 1,
            _ => return None,
        }
        while let Some(b) = self.at(i) {
            if b == b'$' {
                return Some(i + 1 - start);
            }
            if !is_tag_byte(b) {
                return None;
            }
            i += 1;
        }
        None
    }
}

impl Iterator for Lexer<'_> {
    type Item = (Kind, Range<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.pos;
        let b = self.at(start)?;
        let escape_string = std::mem::take(&mut self.escape_string_next);
        let (kind, end) = match b {
            b'\'' => (
                Kind::Literal,
                self.quoted_end(start + 1, b'\'', escape_string),
            ),
            b'"' => (Kind::QuotedIdent, self.quoted_end(start + 1, b'"', false)),
            b';' => (Kind::Semicolon, start + 1),
            b'-' if self.at(start + 1) == Some(b'-') => {
                let end = self.bytes[start..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(self.bytes.len(), |p| start + p);
                (Kind::Comment, end)
            }
            b'/' if self.at(start + 1) == Some(b'*') => {
                let mut depth = 1usize;
                let mut i = start + 2;
                while depth > 0 && i < self.bytes.len() {
                    match (self.bytes[i], self.at(i + 1)) {
                        (b'/', Some(b'*')) => {
                            depth += 1;
                            i += 2;
                        }
                        (b'*', Some(b'/')) => {
                            depth -= 1;
                            i += 2;
                        }
                        _ => i += 1,
                    }
                }
                (Kind::Comment, i.min(self.bytes.len()))
            }
            b'$' => {
                if let Some(tag_len) = self.dollar_tag_len(start) {
                    let tag = &self.src[start..start + tag_len];
                    let body = start + tag_len;
                    let end = self.src[body..]
                        .find(tag)
                        .map_or(self.bytes.len(), |p| body + p + tag_len);
                    (Kind::Literal, end)
                } else {
                    let digits = self.bytes[start + 1..]
                        .iter()
                        .take_while(|c| c.is_ascii_digit())
                        .count();
                    if digits > 0 {
                        (Kind::Param, start + 1 + digits)
                    } else {
                        (Kind::Other, start + 1)
                    }
                }
            }
            b if b.is_ascii_whitespace() => {
                let n = self.bytes[start..]
                    .iter()
                    .take_while(|c| c.is_ascii_whitespace())
                    .count();
                (Kind::Space, start + n)
            }
            b if b.is_ascii_digit()
                || (b == b'.' && self.at(start + 1).is_some_and(|c| c.is_ascii_digit())) =>
            {
                let mut i = start;
                let mut prev = 0u8;
                while let Some(c) = self.at(i) {
                    let exponent_sign = matches!(c, b'+' | b'-') && matches!(prev, b'e' | b'E');
                    if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || exponent_sign {
                        prev = c;
                        i += 1;
                    } else {
                        break;
                    }
                }
                (Kind::Number, i)
            }
            b if is_word_byte(b) => {
                // As psql: a number does not continue with `$` (`1$a$` is 1 then a dollar
                // quote), an identifier does (`a$b`).
                let number = b.is_ascii_digit();
                let n = self.bytes[start..]
                    .iter()
                    .take_while(|&&c| is_word_byte(c) && !(number && c == b'$'))
                    .count();
                let end = start + n;
                if matches!(&self.bytes[start..end], b"E" | b"e") && self.at(end) == Some(b'\'') {
                    self.escape_string_next = true;
                }
                (Kind::Word, end)
            }
            _ => {
                // Any other character, whole (keeps ranges on char boundaries).
                let len = self.src[start..].chars().next().map_or(1, char::len_utf8);
                (Kind::Other, start + len)
            }
        };
        self.pos = end;
        Some((kind, start..end))
    }
}

/// The tokens of `sql` (kind and byte range), covering it whole and in order: the one lexer,
/// shared by the splitter, the keyword search and the monitor's normaliser.
pub(crate) fn tokens(sql: &str) -> impl Iterator<Item = (Kind, Range<usize>)> + Clone + '_ {
    Lexer::new(sql)
}

/// The first keyword of `sql` (after whitespace and comments), upper-cased: `SELECT`,
/// `INSERT`, `WITH`... (OpenTelemetry's `db.operation.name`); `None` when it starts otherwise.
///
/// ```
/// use pgdbm_core::sql::operation_name;
/// assert_eq!(operation_name("  -- hi\n select 1").as_deref(), Some("SELECT"));
/// assert_eq!(operation_name("(SELECT 1)"), None);
/// ```
pub fn operation_name(sql: &str) -> Option<String> {
    Lexer::new(sql)
        .find(|(k, _)| !matches!(k, Kind::Space | Kind::Comment))
        .filter(|(k, _)| *k == Kind::Word)
        .map(|(_, r)| sql[r].to_ascii_uppercase())
}

/// Byte ranges of the statements of `sql`, split exactly where psql (15) ends a statement.
///
/// psql's rule (`psqlscan.l`): a `;` outside quotes, dollar quotes and comments ends the
/// statement when the parenthesis depth is 0 and, in a statement that starts with
/// `CREATE [OR REPLACE] FUNCTION|PROCEDURE`, no `BEGIN … END` block is open (`BEGIN` opens one,
/// `CASE` nests inside one, `END` closes one; only at parenthesis depth 0). So a multi-action
/// `CREATE RULE … DO ALSO (INSERT …; INSERT …)` and a `BEGIN ATOMIC … END` function body stay
/// whole. tests/tests/splitter_psql.rs checks this against psql itself.
///
/// The ranges are untrimmed and exclude the `;` separators: joining the pieces with `";"` gives
/// back `sql` exactly. There is always at least one range (the text after the last `;`,
/// possibly empty).
///
/// ```
/// use pgdbm_core::sql::split_statements_spans;
/// let sql = "SELECT ';'; SELECT 2;";
/// let spans = split_statements_spans(sql);
/// assert_eq!(spans, vec![0..10, 11..20, 21..21]);
/// ```
pub fn split_statements_spans(sql: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut piece_start = 0;
    let mut state = PsqlState::default();
    for (kind, range) in Lexer::new(sql) {
        match kind {
            Kind::Semicolon if state.paren_depth == 0 && state.begin_depth == 0 => {
                spans.push(piece_start..range.start);
                piece_start = range.end;
                state = PsqlState::default();
            }
            Kind::Other => match &sql[range] {
                "(" => state.paren_depth += 1,
                ")" => state.paren_depth = state.paren_depth.saturating_sub(1),
                _ => {}
            },
            Kind::Word
                if sql
                    .as_bytes()
                    .get(range.start)
                    .is_some_and(|&b| is_tag_start(b)) =>
            {
                state.identifier(&sql[range]);
            }
            _ => {}
        }
    }
    spans.push(piece_start..sql.len());
    spans
}

/// psql's per-statement lexer state for deciding whether a `;` ends the statement.
#[derive(Default)]
struct PsqlState {
    paren_depth: usize,
    begin_depth: usize,
    /// First letters of the first four identifiers, when they are `create`, `or`, `replace`,
    /// `function` or `procedure` (0 otherwise), as psql keeps them.
    identifiers: [u8; 4],
    identifier_count: usize,
}

impl PsqlState {
    /// An identifier (psql: `{ident_start}{ident_cont}*`, keywords included).
    fn identifier(&mut self, word: &str) {
        let lower = word.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "create" | "function" | "procedure" | "or" | "replace"
        ) {
            if let Some(slot) = self.identifiers.get_mut(self.identifier_count) {
                *slot = lower.as_bytes()[0];
            }
        }
        self.identifier_count += 1;
        let ids = self.identifiers;
        let creates_routine = ids[0] == b'c'
            && (ids[1] == b'f'
                || ids[1] == b'p'
                || (ids[1] == b'o' && ids[2] == b'r' && (ids[3] == b'f' || ids[3] == b'p')));
        if creates_routine && self.paren_depth == 0 {
            match lower.as_str() {
                "begin" => self.begin_depth += 1,
                // CASE also ends with END; only tracked inside a BEGIN.
                "case" if self.begin_depth >= 1 => self.begin_depth += 1,
                "end" => self.begin_depth = self.begin_depth.saturating_sub(1),
                _ => {}
            }
        }
    }
}

/// True when `piece` has something besides whitespace and comments.
fn has_code(piece: &str) -> bool {
    Lexer::new(piece).any(|(k, _)| !matches!(k, Kind::Space | Kind::Comment))
}

/// The statements of a script, split at top-level `;` (see [`split_statements_spans`]),
/// trimmed, without their `;`, skipping pieces that are empty or only comments.
///
/// ```
/// use pgdbm_core::sql::split_statements;
/// let script = "CREATE TABLE t (s text DEFAULT ';');\n-- done;\nINSERT INTO t VALUES ($$a;b$$);";
/// assert_eq!(
///     split_statements(script),
///     vec!["CREATE TABLE t (s text DEFAULT ';')", "-- done;\nINSERT INTO t VALUES ($$a;b$$)"]
/// );
/// ```
pub fn split_statements(sql: &str) -> Vec<&str> {
    split_statements_spans(sql)
        .into_iter()
        .map(|r| sql[r].trim())
        .filter(|s| has_code(s))
        .collect()
}

/// True when `keyword` (ASCII letters, digits and `_`, compared case-insensitively) occurs in
/// `sql` as a whole word outside string literals, quoted identifiers and comments.
///
/// ```
/// use pgdbm_core::sql::contains_keyword;
/// assert!(contains_keyword("INSERT INTO t VALUES (1) returning id", "RETURNING"));
/// assert!(!contains_keyword("INSERT INTO t VALUES ('returning') -- returning", "RETURNING"));
/// assert!(!contains_keyword("INSERT INTO returning_log VALUES (1)", "RETURNING"));
/// ```
pub fn contains_keyword(sql: &str, keyword: &str) -> bool {
    !keyword.is_empty()
        && Lexer::new(sql).any(|(k, r)| k == Kind::Word && sql[r].eq_ignore_ascii_case(keyword))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejoin(sql: &str) -> String {
        split_statements_spans(sql)
            .into_iter()
            .map(|r| &sql[r])
            .collect::<Vec<_>>()
            .join(";")
    }

    #[test]
    fn simple_split() {
        assert_eq!(
            split_statements("SELECT 1; SELECT 2"),
            ["SELECT 1", "SELECT 2"]
        );
        assert_eq!(
            split_statements("SELECT 1;;\n ; SELECT 2;\n"),
            ["SELECT 1", "SELECT 2"]
        );
        assert!(split_statements("").is_empty());
        assert!(split_statements(" ;\n-- only a comment;\n/* x; */ ;").is_empty());
        assert_eq!(split_statements_spans(""), vec![0..0]);
    }

    #[test]
    fn single_quotes() {
        assert_eq!(
            split_statements("SELECT 'a;b'; SELECT 'it''s;'; SELECT 2"),
            ["SELECT 'a;b'", "SELECT 'it''s;'", "SELECT 2"]
        );
        // Standard strings: a backslash is an ordinary character.
        assert_eq!(
            split_statements(r"SELECT '\'; SELECT 2"),
            [r"SELECT '\'", "SELECT 2"]
        );
    }

    #[test]
    fn escape_strings() {
        assert_eq!(
            split_statements(r"SELECT E'\';'; SELECT 2"),
            [r"SELECT E'\';'", "SELECT 2"]
        );
        assert_eq!(
            split_statements(r"SELECT e'\\'; SELECT 2"),
            [r"SELECT e'\\'", "SELECT 2"]
        );
        // `tablE'…'` is not an E string.
        assert_eq!(split_statements(r"SELECT x'\'; SELECT 2").len(), 2);
    }

    #[test]
    fn quoted_identifiers() {
        assert_eq!(
            split_statements(r#"SELECT 1 AS "a;""b"; SELECT 2"#),
            [r#"SELECT 1 AS "a;""b""#, "SELECT 2"]
        );
    }

    #[test]
    fn dollar_quotes() {
        assert_eq!(
            split_statements("SELECT $$a;b$$; SELECT $a$ ; $a$; SELECT 3"),
            ["SELECT $$a;b$$", "SELECT $a$ ; $a$", "SELECT 3"]
        );
        assert_eq!(
            split_statements("SELECT $fn$ $$;$$ $x$; $fn$; SELECT 2"),
            ["SELECT $fn$ $$;$$ $x$; $fn$", "SELECT 2"]
        );
        let f = "CREATE FUNCTION f() RETURNS int AS $body$\nBEGIN\n  RETURN 1;\nEND;\n$body$ LANGUAGE plpgsql";
        assert_eq!(
            split_statements(&format!("{f};\nSELECT f();")),
            [f, "SELECT f()"]
        );
    }

    #[test]
    fn params_are_not_dollar_quotes() {
        assert_eq!(
            split_statements("SELECT $1; SELECT $2, $1;SELECT 3"),
            ["SELECT $1", "SELECT $2, $1", "SELECT 3"]
        );
        // `a$b$` is an identifier containing `$`, not a dollar quote.
        assert_eq!(split_statements("SELECT a$b$; SELECT 2").len(), 2);
        assert_eq!(split_statements("SELECT $; SELECT 2").len(), 2);
    }

    #[test]
    fn comments() {
        assert_eq!(
            split_statements("SELECT 1 -- a;b\n; SELECT 2"),
            ["SELECT 1 -- a;b", "SELECT 2"]
        );
        assert_eq!(
            split_statements("SELECT /* a; /* nested; */ still; */ 1; SELECT 2"),
            ["SELECT /* a; /* nested; */ still; */ 1", "SELECT 2"]
        );
        // `-` and `/` alone are operators.
        assert_eq!(split_statements("SELECT 4-1/2; SELECT 2").len(), 2);
    }

    #[test]
    fn begin_atomic() {
        let f = "CREATE FUNCTION f(x int) RETURNS text LANGUAGE sql\nBEGIN ATOMIC\n  SELECT CASE WHEN x > 0 THEN 'pos;' ELSE 'neg' END;\n  SELECT 'x';\nEND";
        assert_eq!(
            split_statements(&format!("{f};\nSELECT f(1);")),
            [f, "SELECT f(1)"]
        );
        let p = "create procedure p() begin atomic insert into t values (1); case end; end";
        // (`case end` is not valid SQL, but must still nest.)
        assert_eq!(split_statements(&format!("{p}; select 1")), [p, "select 1"]);
        // A transaction BEGIN is not BEGIN ATOMIC.
        assert_eq!(
            split_statements("BEGIN; SELECT 1; END; COMMIT"),
            ["BEGIN", "SELECT 1", "END", "COMMIT"]
        );
        // BEGIN /* c */ ATOMIC still counts.
        assert_eq!(
            split_statements("CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN /* c */ ATOMIC SELECT 1; END; SELECT 2")
                .len(),
            2
        );
    }

    #[test]
    fn parentheses_and_psql_heuristics() {
        // Issue 10: a multi-action rule keeps its `;`s inside the parentheses.
        let rule = "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (NEW.id); INSERT INTO b VALUES (NEW.id))";
        assert_eq!(
            split_statements(&format!(
                "{rule};
SELECT 1;"
            )),
            [rule, "SELECT 1"]
        );
        // An unbalanced `)` does not go negative; an unclosed `(` swallows the rest, as in psql.
        assert_eq!(split_statements("SELECT 1); SELECT 2").len(), 2);
        assert_eq!(split_statements("SELECT (1; SELECT 2").len(), 1);
        // OR REPLACE; BEGIN without ATOMIC also opens a block in a CREATE FUNCTION (psql does not
        // look for ATOMIC); BEGIN in other statements never does.
        let f = "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC SELECT 1; END";
        assert_eq!(split_statements(&format!("{f}; SELECT 2")), [f, "SELECT 2"]);
        assert_eq!(
            split_statements("SELECT 1 AS begin; SELECT 2 AS atomic; SELECT 3").len(),
            3
        );
        // Inside parentheses BEGIN is not tracked (a parameter named `begin`).
        let g = "CREATE FUNCTION g(begin int) RETURNS int LANGUAGE sql RETURN 1";
        assert_eq!(split_statements(&format!("{g}; SELECT 1")), [g, "SELECT 1"]);
        // ... but at depth 0 it is, even where it is a name: psql sends this as one statement.
        assert_eq!(
            split_statements(
                "CREATE FUNCTION g(begin int) RETURNS int LANGUAGE sql RETURN begin; SELECT 1"
            )
            .len(),
            1
        );
        // A number ends before `$`: `1$a$` is 1 followed by a dollar quote.
        assert_eq!(split_statements("SELECT 1$a$;$a$; SELECT 2").len(), 2);
        assert_eq!(split_statements("SELECT a$b; SELECT 2").len(), 2);
    }

    #[test]
    fn unterminated_constructs_run_to_end() {
        for sql in [
            "SELECT 'a;b",
            "SELECT \"a;b",
            "SELECT $$a;b",
            "SELECT /* a;b",
            "SELECT E'\\",
        ] {
            assert_eq!(split_statements(sql), [sql]);
            assert_eq!(rejoin(sql), sql);
        }
    }

    #[test]
    fn spans_rejoin() {
        for sql in [
            "",
            ";",
            ";;",
            "a;b;",
            "SELECT 'x;y'; SELECT $$;$$;\n-- c;\n",
            "é;ü;€",
        ] {
            assert_eq!(rejoin(sql), sql);
        }
    }

    #[test]
    fn keywords() {
        assert!(contains_keyword(
            "insert into t values (1) RETURNING *",
            "returning"
        ));
        assert!(!contains_keyword(
            "insert into t values ('RETURNING')",
            "returning"
        ));
        assert!(!contains_keyword(
            "insert into \"returning\" values (1)",
            "returning"
        ));
        assert!(!contains_keyword(
            "insert into t values (1) /* returning */",
            "returning"
        ));
        assert!(!contains_keyword(
            "insert into t values ($$ returning $$)",
            "returning"
        ));
        assert!(!contains_keyword(
            "insert into t_returning values (1)",
            "returning"
        ));
        assert!(!contains_keyword("anything", ""));
    }
}
