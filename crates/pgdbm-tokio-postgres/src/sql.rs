//! Tiny SQL inspection: the first keyword of a statement, for transaction tracking.

/// What a statement's first keyword does to the transaction state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxEffect {
    /// `BEGIN` / `START TRANSACTION`: may open a transaction.
    Begin,
    /// `COMMIT` / `ROLLBACK` / `END` / `ABORT`: ends the transaction.
    End,
    /// Anything else.
    None,
}

/// The first keyword of `sql`, skipping whitespace, `--` line comments and (nested) `/* */`
/// block comments. Empty when the statement does not start with a letter.
pub(crate) fn first_keyword(sql: &str) -> &str {
    let bytes = sql.as_bytes();
    let start = keyword_start(sql);
    let mut i = start;
    while i < bytes.len() && (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_') {
        i += 1;
    }
    // Both ends sit on ASCII bytes (or the string's ends), so they are char boundaries.
    sql.get(start..i).unwrap_or("")
}

/// Byte offset where the first token after whitespace and comments starts.
fn keyword_start(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut i = 0;
    loop {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'(') {
            i += 1;
        }
        if bytes[i..].starts_with(b"--") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if bytes[i..].starts_with(b"/*") {
            let mut depth = 0usize;
            while i < bytes.len() {
                if bytes[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if bytes[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else {
            break;
        }
    }
    i.min(bytes.len())
}

/// The first `n` words of `sql` (after leading comments), upper-cased.
fn upper_words(sql: &str, n: usize) -> Vec<String> {
    sql.get(keyword_start(sql)..)
        .unwrap_or("")
        .split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty())
        .take(n)
        .map(str::to_ascii_uppercase)
        .collect()
}

/// The transaction effect of `sql`'s first keyword.
pub(crate) fn tx_effect(sql: &str) -> TxEffect {
    let kw = first_keyword(sql);
    if kw.eq_ignore_ascii_case("begin") || kw.eq_ignore_ascii_case("start") {
        TxEffect::Begin
    } else if ["commit", "rollback", "end", "abort"]
        .iter()
        .any(|k| kw.eq_ignore_ascii_case(k))
    {
        // `ROLLBACK TO [SAVEPOINT] x` stays in the transaction; `... AND CHAIN` opens a new one.
        let rest = upper_words(sql, 4);
        if rest.get(1).map(String::as_str) == Some("TO") {
            TxEffect::None
        } else if rest.get(1).map(String::as_str) == Some("AND")
            && rest.get(2).map(String::as_str) == Some("CHAIN")
        {
            TxEffect::Begin
        } else {
            TxEffect::End
        }
    } else {
        TxEffect::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_first_keyword_after_comments() {
        assert_eq!(
            first_keyword("  -- hi\n /* a /* nested */ b */ begin;"),
            "begin"
        );
        assert_eq!(first_keyword("SELECT 1"), "SELECT");
        assert_eq!(first_keyword(""), "");
        assert_eq!(first_keyword("/* unterminated"), "");
        assert_eq!(first_keyword("--only a comment"), "");
        assert_eq!(first_keyword("é"), "");
    }

    #[test]
    fn classifies_transaction_statements() {
        assert_eq!(tx_effect("BEGIN"), TxEffect::Begin);
        assert_eq!(
            tx_effect("start transaction isolation level serializable"),
            TxEffect::Begin
        );
        assert_eq!(tx_effect("\n\tCommit"), TxEffect::End);
        assert_eq!(tx_effect("rollback to savepoint a"), TxEffect::None);
        assert_eq!(tx_effect("ROLLBACK TO a"), TxEffect::None);
        assert_eq!(tx_effect("commit and chain"), TxEffect::Begin);
        assert_eq!(tx_effect("COMMIT AND NO CHAIN"), TxEffect::End);
        assert_eq!(tx_effect("END"), TxEffect::End);
        assert_eq!(tx_effect("abort"), TxEffect::End);
        assert_eq!(tx_effect("SELECT 'BEGIN'"), TxEffect::None);
        assert_eq!(tx_effect("beginning"), TxEffect::None);
    }
}
