//! Pre-encoding `execute_many` rows as `Bind` messages, checked before anything is sent.

use bytes::BytesMut;
use pgdbm_core::{BoxError, Param};
use postgres_protocol::message::frontend;
use postgres_types::{IsNull, Type};

/// `Execute` of the unnamed portal, all rows.
const EXECUTE_UNNAMED: [u8; 10] = [b'E', 0, 0, 0, 9, 0, 0, 0, 0, 0];

/// Bytes of a pre-encoded `Bind` before its format codes: tag, length, empty portal and
/// statement names.
const BIND_PREFIX: usize = 7;

/// Bytes of a pre-encoded `Bind` after its values: an empty result-format list.
const BIND_SUFFIX: usize = 2;

/// Largest pre-encoded `Bind`; the server refuses messages over 1 GB anyway.
const MAX_BIND: usize = 1 << 30;

/// Why a row could not be encoded.
#[derive(Debug)]
pub(crate) struct EncodeError {
    /// What is wrong, with the parameter index.
    pub(crate) message: String,
    /// The `ToSql` error, when there is one.
    pub(crate) source: Option<BoxError>,
}

/// Encodes one row's `Bind` for the unnamed portal and statement with no result formats
/// (what tokio-postgres does in its `encode_bind`: per-parameter `encode_format`, values via
/// `to_sql_checked`). The caller checked the parameter count.
pub(crate) fn encode_bind(
    values: &[Param<'_>],
    types: &[Type],
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = buf.len();
    let formats = values
        .iter()
        .zip(types)
        .map(|(v, ty)| v.encode_format(ty) as i16);
    let mut error_idx = 0;
    let r = frontend::bind(
        "",
        "",
        formats,
        values.iter().zip(types).enumerate(),
        |(idx, (value, ty)), buf| match value.to_sql_checked(ty, buf) {
            Ok(IsNull::No) => Ok(postgres_protocol::IsNull::No),
            Ok(IsNull::Yes) => Ok(postgres_protocol::IsNull::Yes),
            Err(e) => {
                error_idx = idx;
                Err(e)
            }
        },
        std::iter::empty::<i16>(),
        buf,
    );
    match r {
        Ok(()) if buf.len() - start <= MAX_BIND => Ok(()),
        Ok(()) => {
            buf.truncate(start);
            Err(EncodeError {
                message: "the row encodes to more than 1 GB, the server's message limit"
                    .to_string(),
                source: None,
            })
        }
        Err(frontend::BindError::Conversion(e)) => {
            buf.truncate(start);
            Err(EncodeError {
                message: format!("error serializing parameter {error_idx}: {e}"),
                source: Some(e),
            })
        }
        Err(frontend::BindError::Serialization(e)) => {
            buf.truncate(start);
            Err(EncodeError {
                message: format!("error encoding the row: {e}"),
                source: Some(Box::new(e)),
            })
        }
    }
}

/// Rows `1..n` of a chunk, encoded by [`encode_bind`] before anything is sent.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    buf: BytesMut,
    ends: Vec<usize>,
}

impl Rows {
    /// Encodes and appends one row.
    pub(crate) fn push(&mut self, values: &[Param<'_>], types: &[Type]) -> Result<(), EncodeError> {
        encode_bind(values, types, &mut self.buf)?;
        self.ends.push(self.buf.len());
        Ok(())
    }

    /// Rows held.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Writes every row as `Bind` (statement `stmt`, result formats `result_formats`, the
    /// count included) + `Execute` into `out`.
    pub(super) fn write_to(&self, stmt: &[u8], result_formats: &[u8], out: &mut Vec<u8>) {
        let mut start = 0;
        for &end in &self.ends {
            let mid = self
                .buf
                .get(start + BIND_PREFIX..end.saturating_sub(BIND_SUFFIX))
                .unwrap_or_default();
            let len = 4 + 1 + stmt.len() + 1 + mid.len() + result_formats.len();
            out.push(b'B');
            // `mid` is at most MAX_BIND (checked in `encode_bind`) and a statement name is
            // short, so the length fits an i32.
            out.extend_from_slice(&(len as u32).to_be_bytes());
            out.push(0);
            out.extend_from_slice(stmt);
            out.push(0);
            out.extend_from_slice(mid);
            out.extend_from_slice(result_formats);
            out.extend_from_slice(&EXECUTE_UNNAMED);
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unencodable_values_are_refused_with_their_index() {
        let mut r = Rows::default();
        let err = r
            .push(
                &[&1_i32 as Param<'_>, &"x" as Param<'_>],
                &[Type::INT4, Type::INT4],
            )
            .unwrap_err();
        assert!(err.message.contains("parameter 1"), "{}", err.message);
        assert!(err.source.is_some());
        assert_eq!(r.len(), 0);
        assert!(r.buf.is_empty());
    }
}
