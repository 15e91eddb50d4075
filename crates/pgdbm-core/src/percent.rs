//! Percent-encoding for connection URLs: the one encoder of the workspace.

/// `s` with every byte outside RFC 3986's unreserved set (`A-Z a-z 0-9 - . _ ~`) written as
/// `%XX` (upper-case hex), safe in any part of a `postgresql://` URL.
///
/// ```
/// assert_eq!(pgdbm_core::percent_encode("a b@c:/%"), "a%20b%40c%3A%2F%25");
/// assert_eq!(pgdbm_core::percent_encode("test_1"), "test_1");
/// ```
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0x0f));
        }
    }
    out
}

fn hex_digit(n: u8) -> char {
    char::from(if n < 10 { b'0' + n } else { b'A' + n - 10 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_everything_but_unreserved() {
        assert_eq!(percent_encode("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(percent_encode("ü"), "%C3%BC");
        assert_eq!(percent_encode(""), "");
    }
}
