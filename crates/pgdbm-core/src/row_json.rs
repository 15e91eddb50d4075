//! A [`Row`] as a JSON object (feature `serde_json`): what Python pgdbm's `dict(row)` gives,
//! ready for `json.dumps`-style output.
//!
//! Each column is decoded from PostgreSQL's binary format by its type, the way asyncpg hands
//! the value to Python and Python turns it into JSON:
//!
//! | PostgreSQL type | JSON |
//! | --- | --- |
//! | `bool` | `true` / `false` |
//! | `int2`, `int4`, `int8`, `oid` | number |
//! | `float4`, `float8` | number; `NaN` / `Infinity` / `-Infinity` as strings (JSON has no such numbers) |
//! | `numeric` | string with every digit (`"12.50"`): a JSON number would lose precision, like `str(Decimal)` |
//! | `text`, `varchar`, `char(n)`, `name`, `"char"`, enums | string |
//! | `json`, `jsonb` | the nested value |
//! | `uuid` | string, hyphenated lowercase (`str(UUID)`) |
//! | `date` | `"2024-01-31"` (`date.isoformat()`) |
//! | `time` | `"13:45:00"` or `"13:45:00.250000"` (`time.isoformat()`) |
//! | `timestamp` | `"2024-01-31T13:45:00"` (`datetime.isoformat()`) |
//! | `timestamptz` | `"2024-01-31T13:45:00+00:00"` (asyncpg returns UTC datetimes) |
//! | `interval` | ISO 8601 duration, `"P1Y2M3DT4H5M6.5S"` |
//! | `bytea` | `"\\x0102ff"` (PostgreSQL's hex text form) |
//! | arrays | arrays (nested for more dimensions), elements mapped as above |
//! | NULL | `null` |
//!
//! `±infinity` dates and timestamps are the strings `"infinity"` / `"-infinity"`. A column of any
//! other type is an error naming the column and its type: cast it in SQL (`col::text`).

use std::fmt::Write as _;

use postgres_types::{FromSql, Kind, Type};
use serde_json::{Map, Number, Value};

use crate::{QueryError, QueryErrorKind, Result, Row};

/// A column's raw binary value (`None` for NULL), whatever its type.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(
        _ty: &Type,
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

/// Why a value could not be mapped (the caller adds the column).
type Mapped = std::result::Result<Value, String>;

/// `row` as a JSON object: column name → value, in column order (see the module docs for the
/// mapping). Duplicate column names keep the last value, as `dict(row)` does.
pub fn row_to_json<R: Row + ?Sized>(row: &R) -> Result<Value> {
    let mut map = Map::new();
    for i in 0..row.len() {
        let name = row.column_name(i).unwrap_or_default().to_string();
        let ty = row
            .column_type(i)
            .cloned()
            .unwrap_or(postgres_types::Type::UNKNOWN);
        let Raw(raw) = row.get_at::<Raw<'_>>(i)?;
        let value = match raw {
            None => Value::Null,
            Some(bytes) => value_of(&ty, bytes).map_err(|why| {
                QueryError::new(
                    QueryErrorKind::Conversion,
                    format!(
                        "column `{name}` (index {i}) of PostgreSQL type `{ty}` cannot be turned \
                         into JSON: {why}; cast it in SQL (for example `{name}::text`)"
                    ),
                    String::new(),
                )
            })?,
        };
        map.insert(name, value);
    }
    Ok(Value::Object(map))
}

fn be<const N: usize>(b: &[u8]) -> std::result::Result<[u8; N], String> {
    b.get(..N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| format!("expected {N} bytes, got {}", b.len()))
}

fn text(b: &[u8]) -> Mapped {
    std::str::from_utf8(b)
        .map(|s| Value::String(s.to_string()))
        .map_err(|e| format!("invalid UTF-8: {e}"))
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or_else(
        || {
            Value::String(
                if f.is_nan() {
                    "NaN"
                } else if f > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                }
                .to_string(),
            )
        },
        Value::Number,
    )
}

/// Maps one non-NULL value of type `ty`.
fn value_of(ty: &Type, b: &[u8]) -> Mapped {
    match ty.kind() {
        Kind::Array(elem) => return array(elem, b),
        Kind::Domain(inner) => return value_of(inner, b),
        Kind::Enum(_) => return text(b),
        _ => {}
    }
    Ok(match *ty {
        Type::BOOL => Value::Bool(be::<1>(b)?[0] != 0),
        Type::INT2 => Value::from(i16::from_be_bytes(be(b)?)),
        Type::INT4 => Value::from(i32::from_be_bytes(be(b)?)),
        Type::INT8 => Value::from(i64::from_be_bytes(be(b)?)),
        Type::OID => Value::from(u32::from_be_bytes(be(b)?)),
        Type::FLOAT4 => float(f64::from(f32::from_be_bytes(be(b)?))),
        Type::FLOAT8 => float(f64::from_be_bytes(be(b)?)),
        Type::NUMERIC => Value::String(numeric(b)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => text(b)?,
        Type::CHAR => Value::String(char::from(be::<1>(b)?[0]).to_string()),
        Type::JSON => serde_json::from_slice(b).map_err(|e| format!("invalid JSON: {e}"))?,
        Type::JSONB => match b.split_first() {
            Some((1, rest)) => {
                serde_json::from_slice(rest).map_err(|e| format!("invalid JSON: {e}"))?
            }
            _ => return Err("unknown jsonb format version".to_string()),
        },
        Type::UUID => Value::String(uuid(&be::<16>(b)?)),
        Type::BYTEA => {
            let mut s = String::with_capacity(2 + 2 * b.len());
            s.push_str("\\x");
            for byte in b {
                let _ = write!(s, "{byte:02x}");
            }
            Value::String(s)
        }
        Type::DATE => Value::String(date(i32::from_be_bytes(be(b)?))),
        Type::TIME => Value::String(time_of_day(i64::from_be_bytes(be(b)?))),
        Type::TIMESTAMP => Value::String(timestamp(i64::from_be_bytes(be(b)?), "")),
        Type::TIMESTAMPTZ => Value::String(timestamp(i64::from_be_bytes(be(b)?), "+00:00")),
        Type::INTERVAL => {
            let micros = i64::from_be_bytes(be(b)?);
            let days = i32::from_be_bytes(be(b.get(8..).unwrap_or_default())?);
            let months = i32::from_be_bytes(be(b.get(12..).unwrap_or_default())?);
            Value::String(interval(months, days, micros))
        }
        _ => return Err("no JSON mapping for this type".to_string()),
    })
}

fn array(elem: &Type, b: &[u8]) -> Mapped {
    let mut at = 0usize;
    let i32_at = |at: &mut usize| -> std::result::Result<i32, String> {
        let v = i32::from_be_bytes(be(b.get(*at..).unwrap_or_default())?);
        *at += 4;
        Ok(v)
    };
    let ndim = i32_at(&mut at)?;
    let _has_null = i32_at(&mut at)?;
    let _elem_oid = i32_at(&mut at)?;
    if ndim <= 0 {
        return Ok(Value::Array(Vec::new()));
    }
    let mut dims = Vec::new();
    for _ in 0..ndim {
        let len = i32_at(&mut at)?;
        let _lower = i32_at(&mut at)?;
        dims.push(usize::try_from(len).map_err(|_| "negative array dimension".to_string())?);
    }
    let total: usize = dims.iter().product();
    let mut flat = Vec::with_capacity(total);
    for _ in 0..total {
        let len = i32_at(&mut at)?;
        if len < 0 {
            flat.push(Value::Null);
            continue;
        }
        let len = len as usize;
        let bytes = b
            .get(at..at + len)
            .ok_or_else(|| "truncated array element".to_string())?;
        at += len;
        flat.push(value_of(elem, bytes)?);
    }
    Ok(nest(&dims, &mut flat.into_iter()))
}

/// Regroups row-major elements into nested arrays of the given dimensions.
fn nest(dims: &[usize], items: &mut impl Iterator<Item = Value>) -> Value {
    match dims.split_first() {
        None => items.next().unwrap_or(Value::Null),
        Some((&n, [])) => Value::Array(items.take(n).collect()),
        Some((&n, rest)) => Value::Array((0..n).map(|_| nest(rest, items)).collect()),
    }
}

/// NUMERIC's binary form (base-10000 digits, weight, sign, display scale) as decimal text.
fn numeric(b: &[u8]) -> std::result::Result<String, String> {
    let word = |i: usize| -> std::result::Result<u16, String> {
        be::<2>(b.get(i * 2..).unwrap_or_default()).map(u16::from_be_bytes)
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = usize::from(word(3)?);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok("NaN".to_string()),
        0xD000 => return Ok("Infinity".to_string()),
        0xF000 => return Ok("-Infinity".to_string()),
        other => return Err(format!("unknown numeric sign {other:#x}")),
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        digits.push(word(4 + i)?);
    }
    let digit = |i: i64| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight {
            let d = digit(i);
            let _ = if i == 0 {
                write!(s, "{d}")
            } else {
                write!(s, "{d:04}")
            };
        }
    }
    if dscale > 0 {
        let mut frac = String::with_capacity(dscale + 4);
        let mut i = weight + 1;
        while frac.len() < dscale {
            let _ = write!(frac, "{:04}", digit(i));
            i += 1;
        }
        frac.truncate(dscale);
        s.push('.');
        s.push_str(&frac);
    }
    Ok(s)
}

fn uuid(b: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{byte:02x}");
    }
    s
}

/// Days between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn ymd(days_since_pg_epoch: i64) -> String {
    let (y, m, d) = civil(days_since_pg_epoch + PG_EPOCH_DAYS);
    format!("{y:04}-{m:02}-{d:02}")
}

fn date(days: i32) -> String {
    match days {
        i32::MAX => "infinity".to_string(),
        i32::MIN => "-infinity".to_string(),
        d => ymd(i64::from(d)),
    }
}

/// `HH:MM:SS[.ffffff]` of microseconds since midnight (Python's `isoformat`).
fn time_of_day(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let (h, m, s) = (secs / 3_600, secs / 60 % 60, secs % 60);
    if frac == 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}.{frac:06}")
    }
}

fn timestamp(micros: i64, offset: &str) -> String {
    match micros {
        i64::MAX => "infinity".to_string(),
        i64::MIN => "-infinity".to_string(),
        t => format!(
            "{}T{}{offset}",
            ymd(t.div_euclid(MICROS_PER_DAY)),
            time_of_day(t.rem_euclid(MICROS_PER_DAY))
        ),
    }
}

/// ISO 8601 duration of an interval (each part with its own sign, like PostgreSQL's
/// `intervalstyle = iso_8601`).
fn interval(months: i32, days: i32, micros: i64) -> String {
    let mut s = String::from("P");
    let (years, months) = (months / 12, months % 12);
    for (n, unit) in [(years, 'Y'), (months, 'M'), (days, 'D')] {
        if n != 0 {
            let _ = write!(s, "{n}{unit}");
        }
    }
    if micros != 0 {
        s.push('T');
        let neg = micros < 0;
        let abs = micros.unsigned_abs();
        let (h, rest) = (abs / 3_600_000_000, abs % 3_600_000_000);
        let (m, rest) = (rest / 60_000_000, rest % 60_000_000);
        let (sec, frac) = (rest / 1_000_000, rest % 1_000_000);
        let sign = if neg { "-" } else { "" };
        if h != 0 {
            let _ = write!(s, "{sign}{h}H");
        }
        if m != 0 {
            let _ = write!(s, "{sign}{m}M");
        }
        if sec != 0 || frac != 0 {
            if frac == 0 {
                let _ = write!(s, "{sign}{sec}S");
            } else {
                let f = format!("{frac:06}");
                let _ = write!(s, "{sign}{sec}.{}S", f.trim_end_matches('0'));
            }
        }
    }
    if s == "P" {
        s.push_str("T0S");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn num(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numerics_keep_every_digit() {
        assert_eq!(numeric(&num(2, 0, 0, 2, &[12, 5000])).unwrap(), "12.50");
        assert_eq!(
            numeric(&num(3, 1, 0x4000, 3, &[1, 2345, 6780])).unwrap(),
            "-12345.678"
        );
        assert_eq!(numeric(&num(1, -2, 0, 8, &[12])).unwrap(), "0.00000012");
        assert_eq!(numeric(&num(0, 0, 0, 0, &[])).unwrap(), "0");
        assert_eq!(numeric(&num(1, 2, 0, 0, &[7])).unwrap(), "700000000");
        assert_eq!(numeric(&num(0, 0, 0xC000, 0, &[])).unwrap(), "NaN");
    }

    #[test]
    fn dates_and_times_are_iso() {
        assert_eq!(date(0), "2000-01-01");
        assert_eq!(date(-1), "1999-12-31");
        assert_eq!(date(8_790), "2024-01-25");
        assert_eq!(date(i32::MAX), "infinity");
        assert_eq!(time_of_day(49_500_250_000), "13:45:00.250000");
        assert_eq!(time_of_day(0), "00:00:00");
        assert_eq!(timestamp(-1, "+00:00"), "1999-12-31T23:59:59.999999+00:00");
        assert_eq!(
            interval(14, 3, 4 * 3_600_000_000 + 5 * 60_000_000 + 6_500_000),
            "P1Y2M3DT4H5M6.5S"
        );
        assert_eq!(interval(0, 0, 0), "PT0S");
        assert_eq!(interval(0, -1, -1_000_000), "P-1DT-1S");
    }

    #[test]
    fn uuids_are_hyphenated() {
        let b: [u8; 16] = core::array::from_fn(|i| i as u8);
        assert_eq!(uuid(&b), "00010203-0405-0607-0809-0a0b0c0d0e0f");
    }

    #[test]
    fn arrays_nest_by_dimension() {
        // int4[2][2] = {{1,2},{3,NULL}}
        let mut b = Vec::new();
        for v in [2i32, 1, 23, 2, 1, 2, 1] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        for v in [Some(1i32), Some(2), Some(3), None] {
            match v {
                Some(v) => {
                    b.extend_from_slice(&4i32.to_be_bytes());
                    b.extend_from_slice(&v.to_be_bytes());
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        assert_eq!(
            value_of(&Type::INT4_ARRAY, &b).unwrap(),
            serde_json::json!([[1, 2], [3, null]])
        );
        assert!(value_of(&Type::INT4_ARRAY, &b[..10]).is_err());
    }

    #[test]
    fn floats_without_json_numbers_are_strings() {
        assert_eq!(float(f64::NAN), Value::String("NaN".into()));
        assert_eq!(float(f64::NEG_INFINITY), Value::String("-Infinity".into()));
        assert_eq!(float(1.5), serde_json::json!(1.5));
    }

    proptest! {
        /// The civil-date conversion agrees with a day-by-day walk from the epoch.
        #[test]
        fn civil_round_trips(days in -800_000i64..800_000) {
            let (y, m, d) = civil(days);
            prop_assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            // Converting back with the inverse (days_from_civil) gives the same count.
            let yy = if m <= 2 { y - 1 } else { y };
            let era = yy.div_euclid(400);
            let yoe = yy.rem_euclid(400);
            let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
            let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
            let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
            prop_assert_eq!(era * 146_097 + doe - 719_468, days);
        }

        /// Any numeric text PostgreSQL could send back reads the same after a round trip
        /// through the base-10000 form.
        #[test]
        fn numeric_formats_what_it_encodes(int in 0u64..1_000_000_000_000, frac in 0u32..10_000, scale in 0u16..5) {
            // Encode int.frac with 4-digit fraction group `frac`, display scale `scale`.
            let mut groups = Vec::new();
            let mut n = int;
            while n > 0 { groups.push((n % 10_000) as u16); n /= 10_000; }
            groups.reverse();
            let weight = groups.len() as i16 - 1;
            let weight = if groups.is_empty() { -1 } else { weight };
            groups.push(frac as u16);
            let b = num(groups.len() as u16, weight, 0, scale, &groups);
            let s = numeric(&b).unwrap();
            let mut expected = int.to_string();
            if scale > 0 {
                expected.push('.');
                expected.push_str(&format!("{frac:04}")[..usize::from(scale).min(4)]);
                for _ in 4..scale { expected.push('0'); }
            }
            prop_assert_eq!(s, expected);
        }
    }
}
