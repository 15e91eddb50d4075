//! [`ServerError`]: an `ErrorResponse` the shim read for a later row of an `execute_many` chunk.

/// A server error of a row after the first one, parsed from its `ErrorResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServerError {
    /// Severity (`V`, else `S`).
    pub(crate) severity: String,
    /// SQLSTATE (`C`).
    pub(crate) code: String,
    /// Primary message (`M`).
    pub(crate) message: String,
    /// Detail (`D`).
    pub(crate) detail: Option<String>,
    /// Hint (`H`).
    pub(crate) hint: Option<String>,
    /// Constraint name (`n`).
    pub(crate) constraint: Option<String>,
    /// Table name (`t`).
    pub(crate) table: Option<String>,
    /// Schema name (`s`).
    pub(crate) schema: Option<String>,
    /// Column name (`c`).
    pub(crate) column: Option<String>,
}

impl ServerError {
    /// Parses an `ErrorResponse` body: (field type, cstring) pairs ended by a 0 byte.
    pub(super) fn parse(body: &[u8]) -> ServerError {
        let mut e = ServerError::default();
        let mut rest = body;
        while let Some((&field, tail)) = rest.split_first() {
            if field == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            let value = String::from_utf8_lossy(&tail[..end]).into_owned();
            rest = tail.get(end + 1..).unwrap_or_default();
            match field {
                b'S' if e.severity.is_empty() => e.severity = value,
                b'V' => e.severity = value,
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'H' => e.hint = Some(value),
                b'n' => e.constraint = Some(value),
                b't' => e.table = Some(value),
                b's' => e.schema = Some(value),
                b'c' => e.column = Some(value),
                _ => {}
            }
        }
        e
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.severity, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, "\nDETAIL: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\nHINT: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}
