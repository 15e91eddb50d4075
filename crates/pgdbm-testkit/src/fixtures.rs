//! Fixture files (Python: the data a test starts from): `.sql` files rendered with the
//! manager's templates and run, `.json` files `{"table": [{"column": value, ...}, ...]}` loaded
//! with binary COPY.
//!
//! A JSON file is an object whose keys are tables (`"users"` in the manager's schema, or
//! `"schema.users"`), loaded in the order they appear in the file, each with an array of row
//! objects. Rows of one table that name the same columns are copied together; a column a row
//! leaves out gets its default (copies are split where the set of columns changes, so the row
//! order is kept). Values are converted to the column's type as the catalog has it (see
//! [`load_fixture`] for the conversions). Each file runs in one transaction: a failing file
//! leaves nothing behind.

use std::fmt;
use std::path::Path;

use bytes::{BufMut, BytesMut};
use pgdbm_core::{Database, Error, Param, Pool, Result, TableName};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio_postgres::types::{to_sql_checked, IsNull, Kind, ToSql, Type};

type EncodeResult = std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>>;

/// Loads every `.sql` and `.json` file of `dir` (not starting with `.`; other files are
/// ignored), in code-point order of file name, and returns the names loaded.
///
/// # Errors
/// [`Error::TestDatabase`] naming the directory when it cannot be read, and the error of the
/// first file that fails (see [`load_fixture`]); files before it stay loaded.
pub async fn load_fixtures<P: Pool>(
    db: &Database<P>,
    dir: impl AsRef<Path>,
) -> Result<Vec<String>> {
    let dir = dir.as_ref();
    let read_error = |e: std::io::Error| Error::TestDatabase {
        name: None,
        message: format!(
            "cannot read the fixtures directory `{}`: {e}",
            dir.display()
        ),
        source: Some(Box::new(e)),
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if is_fixture_file_name(&name) && entry.path().is_file() {
            names.push(name);
        }
    }
    names.sort();
    for name in &names {
        load_fixture_file(db, dir.join(name)).await?;
    }
    Ok(names)
}

/// Whether `name` is a fixture file [`load_fixtures`] picks up: `*.sql` or `*.json`, not hidden.
pub fn is_fixture_file_name(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".sql") || name.ends_with(".json"))
}

/// Reads the fixture file at `path` and loads it (see [`load_fixture`]).
///
/// # Errors
/// [`Error::TestDatabase`] naming the file when it cannot be read, and [`load_fixture`]'s.
pub async fn load_fixture_file<P: Pool>(db: &Database<P>, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let contents = std::fs::read_to_string(path).map_err(|e| Error::TestDatabase {
        name: None,
        message: format!("cannot read the fixture file `{}`: {e}", path.display()),
        source: Some(Box::new(e)),
    })?;
    load_fixture(db, &path.display().to_string(), &contents).await
}

/// Loads one fixture whose file name is `name` (its extension picks the format) and whose text
/// is `contents`.
///
/// - `.sql`: rendered with the manager's templates (`{{tables.users}}`, `{{schema}}`) and run
///   as one script (simple protocol, several statements allowed).
/// - `.json`: `{"table": [{"column": value}, ...]}` through binary COPY, in one transaction.
///   JSON `null` is SQL NULL. Column types: `bool` from booleans; `int2`/`int4`/`int8`/`oid`
///   from integers (or strings of one); `float4`/`float8` from numbers; `numeric` from numbers
///   or decimal strings (exact); text types, enums and `citext` from strings; `json`/`jsonb`
///   from any value; `uuid` from its text; `bytea` from `"\\x..."` hex (other strings as their
///   UTF-8 bytes); `date` (`YYYY-MM-DD`), `time` (`HH:MM[:SS[.ffffff]]`), `timestamp` and
///   `timestamptz` (`YYYY-MM-DD[T ]HH:MM[:SS[.ffffff]][Z|±HH[:MM]]`, without an offset UTC) from
///   strings; domains as their base type; one-dimensional arrays of these from arrays. Other
///   types are refused with a message pointing to a `.sql` fixture.
///
/// # Errors
/// [`Error::TestDatabase`] naming the file, and for JSON the table and the row (counted from 1
/// in that table's array) with the cause: invalid JSON or shape, an invalid table or column
/// name, a value the column's type cannot take, or the server's error.
pub async fn load_fixture<P: Pool>(db: &Database<P>, name: &str, contents: &str) -> Result<()> {
    if name.ends_with(".sql") {
        let mut conn = db.acquire().await.map_err(|e| fixture_error(name, "", e))?;
        conn.batch_execute(contents)
            .await
            .map_err(|e| fixture_error(name, "", e))
    } else if name.ends_with(".json") {
        load_json(db, name, contents).await
    } else {
        Err(Error::TestDatabase {
            name: None,
            message: format!(
                "fixture `{name}`: unknown kind of file; fixtures are `.sql` or `.json` files"
            ),
            source: None,
        })
    }
}

fn fixture_error(file: &str, place: &str, e: Error) -> Error {
    Error::TestDatabase {
        name: None,
        message: format!("fixture `{file}`{place}: {e}"),
        source: Some(Box::new(e)),
    }
}

fn shape_error(file: &str, place: &str, problem: impl fmt::Display) -> Error {
    Error::TestDatabase {
        name: None,
        message: format!("fixture `{file}`{place}: {problem}"),
        source: None,
    }
}

/// The tables of a JSON fixture, in file order (a `serde_json::Map` would sort them, and the
/// order matters for foreign keys).
struct Tables(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Tables {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tables;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object {\"table\": [{\"column\": value, ...}, ...]}")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Tables, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(Tables(out))
            }
        }
        d.deserialize_map(V)
    }
}

async fn load_json<P: Pool>(db: &Database<P>, file: &str, contents: &str) -> Result<()> {
    let tables: Tables = serde_json::from_str(contents)
        .map_err(|e| shape_error(file, "", format!("not a JSON fixture: {e}")))?;
    let mut tx = db
        .transaction()
        .await
        .map_err(|e| fixture_error(file, "", e))?;
    for (table, rows) in &tables.0 {
        let place = format!(", table `{table}`");
        TableName::parse(table).map_err(|e| fixture_error(file, &place, e))?;
        let Value::Array(rows) = rows else {
            return Err(shape_error(
                file,
                &place,
                "expected an array of row objects",
            ));
        };
        let mut objects: Vec<&Map<String, Value>> = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            match row {
                Value::Object(o) if !o.is_empty() => objects.push(o),
                _ => {
                    return Err(shape_error(
                        file,
                        &format!("{place}, row {}", i + 1),
                        "expected an object {\"column\": value, ...} with at least one column",
                    ))
                }
            }
        }
        for (start, group) in column_groups(&objects) {
            let columns: Vec<&str> = group[0].keys().map(String::as_str).collect();
            let cells: Vec<Vec<Cell<'_>>> = group
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|(column, value)| Cell { column, value })
                        .collect()
                })
                .collect();
            let params: Vec<Vec<Param<'_>>> = cells
                .iter()
                .map(|row| row.iter().map(|c| c as Param<'_>).collect())
                .collect();
            if let Err(e) = tx.copy_records_to_table(table, &columns, &params).await {
                return Err(copy_error(file, &place, start, group.len(), e));
            }
        }
    }
    tx.commit().await.map_err(|e| fixture_error(file, "", e))
}

/// The error of a copy of `count` rows starting at row index `start`: the row that could not
/// be encoded (the copy names it) or the range, and the cause without the copy's own row
/// numbering (0-based, within the run).
fn copy_error(file: &str, place: &str, start: usize, count: usize, e: Error) -> Error {
    let (rows, cause) = match &e {
        Error::Query(q) if q.row.is_some() => {
            let i = q.row.unwrap_or(0);
            let prefix = format!("row {i}: ");
            let cause = q.message.strip_prefix(&prefix).unwrap_or(&q.message);
            (format!(", row {}", start + i + 1), cause.to_string())
        }
        _ if count == 1 => (format!(", row {}", start + 1), e.to_string()),
        _ => (
            format!(", rows {}-{}", start + 1, start + count),
            e.to_string(),
        ),
    };
    Error::TestDatabase {
        name: None,
        message: format!("fixture `{file}`{place}{rows}: {cause}"),
        source: Some(Box::new(e)),
    }
}

/// Runs of consecutive rows naming the same columns, with the index of their first row.
fn column_groups<'r, 'v>(
    rows: &'r [&'v Map<String, Value>],
) -> Vec<(usize, &'r [&'v Map<String, Value>])> {
    let same = |a: &Map<String, Value>, b: &Map<String, Value>| {
        a.len() == b.len() && a.keys().eq(b.keys())
    };
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=rows.len() {
        if i == rows.len() || !same(rows[i], rows[start]) {
            if i > start {
                out.push((start, &rows[start..i]));
            }
            start = i;
        }
    }
    out
}

/// One JSON value bound to a COPY column: encoded for the column's type (see [`load_fixture`]).
struct Cell<'a> {
    column: &'a str,
    value: &'a Value,
}

impl fmt::Debug for Cell<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.value)
    }
}

impl ToSql for Cell<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> EncodeResult {
        encode(self.value, ty, out)
            .map_err(|problem| format!("column `{}` ({ty}): {problem}", self.column).into())
    }

    fn accepts(_ty: &Type) -> bool {
        // `encode` decides per value.
        true
    }

    to_sql_checked!();
}

/// Encodes `value` in the binary format of `ty`, or says why it cannot.
fn encode(value: &Value, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, String> {
    if value.is_null() {
        return Ok(IsNull::Yes);
    }
    match ty.kind() {
        Kind::Domain(base) => return encode(value, base, out),
        Kind::Enum(_) => {
            let s = text(value, "a string (an enum label)")?;
            out.put_slice(s.as_bytes());
            return Ok(IsNull::No);
        }
        Kind::Array(element) => return encode_array(value, element, out),
        _ => {}
    }
    let put = |r: std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>>| {
        r.map_err(|e| e.to_string())
    };
    match *ty {
        Type::BOOL => match value {
            Value::Bool(b) => put(b.to_sql(ty, out)),
            _ => Err(got("a boolean", value)),
        },
        Type::INT2 => {
            let n = integer(value)?;
            let n = i16::try_from(n).map_err(|_| format!("{n} is out of range for int2"))?;
            put(n.to_sql(ty, out))
        }
        Type::INT4 => {
            let n = integer(value)?;
            let n = i32::try_from(n).map_err(|_| format!("{n} is out of range for int4"))?;
            put(n.to_sql(ty, out))
        }
        Type::INT8 => put(integer(value)?.to_sql(ty, out)),
        Type::OID => {
            let n = integer(value)?;
            let n = u32::try_from(n).map_err(|_| format!("{n} is out of range for oid"))?;
            put(n.to_sql(ty, out))
        }
        Type::FLOAT4 => put((float(value)? as f32).to_sql(ty, out)),
        Type::FLOAT8 => put(float(value)?.to_sql(ty, out)),
        Type::NUMERIC => {
            let text = match value {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => return Err(got("a number or a decimal string", value)),
            };
            encode_numeric(text.trim(), out)?;
            Ok(IsNull::No)
        }
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            out.put_slice(text(value, "a string")?.as_bytes());
            Ok(IsNull::No)
        }
        Type::JSON | Type::JSONB => {
            if *ty == Type::JSONB {
                out.put_u8(1); // the jsonb binary format version
            }
            out.put_slice(value.to_string().as_bytes());
            Ok(IsNull::No)
        }
        Type::UUID => {
            out.put_slice(&parse_uuid(text(value, "a UUID string")?)?);
            Ok(IsNull::No)
        }
        Type::BYTEA => {
            let s = text(value, "a string (\\x followed by hex digits)")?;
            match s.strip_prefix("\\x") {
                Some(hex) => out.put_slice(&parse_hex(hex)?),
                None => out.put_slice(s.as_bytes()),
            }
            Ok(IsNull::No)
        }
        Type::DATE => {
            let s = text(value, "a date string YYYY-MM-DD")?;
            out.put_i32(parse_date(s)?);
            Ok(IsNull::No)
        }
        Type::TIME => {
            let s = text(value, "a time string HH:MM:SS")?;
            out.put_i64(parse_time(s)?);
            Ok(IsNull::No)
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let s = text(value, "a timestamp string YYYY-MM-DD HH:MM:SS")?;
            let (micros, offset) = parse_timestamp(s)?;
            let micros = if *ty == Type::TIMESTAMPTZ {
                micros - offset * 1_000_000
            } else {
                micros // PostgreSQL ignores an offset given for a timestamp without time zone
            };
            out.put_i64(micros);
            Ok(IsNull::No)
        }
        _ if ty.name() == "citext" => {
            out.put_slice(text(value, "a string")?.as_bytes());
            Ok(IsNull::No)
        }
        _ => Err(format!(
            "JSON fixtures cannot fill a `{ty}` column; load this table from a .sql fixture"
        )),
    }
}

fn got(expected: &str, value: &Value) -> String {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    format!("expected {expected}, got {kind} ({value})")
}

fn text<'v>(value: &'v Value, expected: &str) -> std::result::Result<&'v str, String> {
    value.as_str().ok_or_else(|| got(expected, value))
}

fn integer(value: &Value) -> std::result::Result<i64, String> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("expected an integer, got {n}")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("expected an integer, got the string {s:?}")),
        _ => Err(got("an integer", value)),
    }
}

fn float(value: &Value) -> std::result::Result<f64, String> {
    match value {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| format!("expected a number, got {n}")),
        Value::String(s) => match s.trim() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other
                .parse()
                .map_err(|_| format!("expected a number, got the string {s:?}")),
        },
        _ => Err(got("a number", value)),
    }
}

fn encode_array(
    value: &Value,
    element: &Type,
    out: &mut BytesMut,
) -> std::result::Result<IsNull, String> {
    let Value::Array(items) = value else {
        return Err(got("an array", value));
    };
    if items.iter().any(Value::is_array) {
        return Err(
            "JSON fixtures take one-dimensional arrays only; use a .sql fixture for more"
                .to_string(),
        );
    }
    let len = i32::try_from(items.len()).map_err(|_| "the array is too long".to_string())?;
    out.put_i32(i32::from(!items.is_empty())); // dimensions
    out.put_i32(i32::from(items.iter().any(Value::is_null)));
    out.put_u32(element.oid());
    if !items.is_empty() {
        out.put_i32(len);
        out.put_i32(1); // lower bound
    }
    for (i, item) in items.iter().enumerate() {
        let at = out.len();
        out.put_i32(0); // length, filled in below
        match encode(item, element, out).map_err(|e| format!("element {}: {e}", i + 1))? {
            IsNull::Yes => {
                out.truncate(at);
                out.put_i32(-1);
            }
            IsNull::No => {
                let n = i32::try_from(out.len() - at - 4)
                    .map_err(|_| "an array element is too long".to_string())?;
                out[at..at + 4].copy_from_slice(&n.to_be_bytes());
            }
        }
    }
    Ok(IsNull::No)
}

/// The binary `numeric` of a decimal text (`-12.50`, `1e3`, `NaN`): base-10000 digits.
fn encode_numeric(text: &str, out: &mut BytesMut) -> std::result::Result<(), String> {
    let bad = || format!("{text:?} is not a decimal number");
    if text.eq_ignore_ascii_case("nan") {
        out.put_slice(&[0, 0, 0, 0, 0xC0, 0, 0, 0]);
        return Ok(());
    }
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i32>().map_err(|_| bad())?),
        None => (rest, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part
            .bytes()
            .chain(frac_part.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    // All digits, and where the decimal point falls in them after the exponent.
    let digits: Vec<u8> = int_part
        .bytes()
        .chain(frac_part.bytes())
        .map(|b| b - b'0')
        .collect();
    let point = i64::try_from(int_part.len()).map_err(|_| bad())? + i64::from(exponent);
    let frac_len = i64::try_from(frac_part.len()).map_err(|_| bad())? - i64::from(exponent);
    let dscale = u16::try_from(frac_len.max(0)).map_err(|_| bad())?;
    // Digit k (0-based) has decimal position point-1-k (10^(point-1-k)). Groups of 4 are
    // aligned so that group g covers positions 4g..4g+3.
    let position = |k: usize| point - 1 - k as i64;
    let group_of = |p: i64| p.div_euclid(4);
    let mut groups: Vec<(i64, i16)> = Vec::new(); // (group index, value), descending
    for (k, d) in digits.iter().enumerate() {
        let p = position(k);
        let g = group_of(p);
        let weight = [1i16, 10, 100, 1000][p.rem_euclid(4) as usize];
        match groups.last_mut() {
            Some((last, v)) if *last == g => *v += i16::from(*d) * weight,
            _ => groups.push((g, i16::from(*d) * weight)),
        }
    }
    while groups.first().is_some_and(|(_, v)| *v == 0) {
        groups.remove(0);
    }
    while groups.last().is_some_and(|(_, v)| *v == 0) {
        groups.pop();
    }
    // Fill the holes between the first and the last group (none from contiguous digits).
    let (weight, values): (i16, Vec<i16>) = match (groups.first(), groups.last()) {
        (Some((first, _)), Some((last, _))) => {
            let mut values = vec![0i16; usize::try_from(first - last + 1).map_err(|_| bad())?];
            for (g, v) in &groups {
                values[usize::try_from(first - g).map_err(|_| bad())?] = *v;
            }
            (i16::try_from(*first).map_err(|_| bad())?, values)
        }
        _ => (0, Vec::new()),
    };
    out.put_i16(i16::try_from(values.len()).map_err(|_| bad())?);
    out.put_i16(weight);
    out.put_u16(if negative && !values.is_empty() {
        0x4000
    } else {
        0
    });
    out.put_u16(dscale);
    for v in values {
        out.put_i16(v);
    }
    Ok(())
}

fn parse_hex(hex: &str) -> std::result::Result<Vec<u8>, String> {
    if !hex.len().is_multiple_of(2) {
        return Err(format!("{hex:?} has an odd number of hex digits"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("{hex:?} is not hex"))
        })
        .collect()
}

fn parse_uuid(s: &str) -> std::result::Result<Vec<u8>, String> {
    let hex: String = s.trim_matches(['{', '}']).replace('-', "");
    if hex.len() != 32 {
        return Err(format!("{s:?} is not a UUID"));
    }
    parse_hex(&hex).map_err(|_| format!("{s:?} is not a UUID"))
}

/// Days from 2000-01-01 (PostgreSQL's epoch) to `YYYY-MM-DD`.
fn parse_date(s: &str) -> std::result::Result<i32, String> {
    let bad = || format!("{s:?} is not a date YYYY-MM-DD");
    let mut parts = s.trim().splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let (y, m, d): (i64, i64, i64) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month[(m - 1) as usize] {
        return Err(bad());
    }
    // Howard Hinnant's days_from_civil (proleptic Gregorian), shifted to 2000-01-01.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days_from_1970 = era * 146_097 + doe - 719_468;
    i32::try_from(days_from_1970 - 10_957).map_err(|_| bad())
}

/// Microseconds since midnight of `HH:MM[:SS[.ffffff]]`.
fn parse_time(s: &str) -> std::result::Result<i64, String> {
    let bad = || format!("{s:?} is not a time HH:MM[:SS[.ffffff]]");
    let s = s.trim();
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut parts = hms.split(':');
    let h: i64 = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let m: i64 = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let sec: i64 = match parts.next() {
        Some(p) => p.parse().map_err(|_| bad())?,
        None => 0,
    };
    if parts.next().is_some() || h > 24 || m > 59 || sec > 60 || frac.len() > 6 {
        return Err(bad());
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let micros: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().map_err(|_| bad())?
    };
    Ok(((h * 60 + m) * 60 + sec) * 1_000_000 + micros)
}

/// Microseconds since 2000-01-01 00:00 of a timestamp, and its offset from UTC in seconds.
fn parse_timestamp(s: &str) -> std::result::Result<(i64, i64), String> {
    let bad = || format!("{s:?} is not a timestamp YYYY-MM-DD[T ]HH:MM[:SS[.ffffff]][Z|±HH[:MM]]");
    let s = s.trim();
    let (date, rest) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], s[i + 1..].trim()),
        None => (s, "00:00"),
    };
    let days = parse_date(date).map_err(|_| bad())?;
    let (time, offset) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (t, o) = rest.split_at(i);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let digits: String = o[1..].chars().filter(|c| *c != ':').collect();
        let (hh, mm) = match digits.len() {
            2 => (&digits[..2], "0"),
            4 => (&digits[..2], &digits[2..]),
            _ => return Err(bad()),
        };
        let hh: i64 = hh.parse().map_err(|_| bad())?;
        let mm: i64 = mm.parse().map_err(|_| bad())?;
        (t.trim(), sign * (hh * 3600 + mm * 60))
    } else {
        (rest, 0)
    };
    let micros = parse_time(time).map_err(|_| bad())?;
    Ok((i64::from(days) * 86_400_000_000 + micros, offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn numeric(text: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_numeric(text, &mut out).unwrap();
        out.to_vec()
    }

    fn words(v: &[i16]) -> Vec<u8> {
        v.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    #[test]
    fn numerics_encode_like_postgres() {
        // ndigits, weight, sign, dscale, digits
        assert_eq!(numeric("0"), words(&[0, 0, 0, 0]));
        assert_eq!(numeric("12345.678"), words(&[3, 1, 0, 3, 1, 2345, 6780]));
        assert_eq!(numeric("-0.5"), words(&[1, -1, 0x4000, 1, 5000]));
        assert_eq!(numeric("10000"), words(&[1, 1, 0, 0, 1]));
        assert_eq!(numeric("1e3"), words(&[1, 0, 0, 0, 1000]));
        assert_eq!(numeric("1.50"), words(&[2, 0, 0, 2, 1, 5000]));
        assert_eq!(numeric("0.0001"), words(&[1, -1, 0, 4, 1]));
        assert_eq!(numeric("0.00001"), words(&[1, -2, 0, 5, 1000]));
        let mut out = BytesMut::new();
        assert!(encode_numeric("1.2.3", &mut out).is_err());
        assert!(encode_numeric("abc", &mut out).is_err());
        assert!(encode_numeric("", &mut out).is_err());
    }

    #[test]
    fn dates_and_times_count_from_2000() {
        assert_eq!(parse_date("2000-01-01").unwrap(), 0);
        assert_eq!(parse_date("2000-03-01").unwrap(), 60);
        assert_eq!(parse_date("1999-12-31").unwrap(), -1);
        assert_eq!(parse_date("1970-01-01").unwrap(), -10_957);
        assert!(parse_date("2001-02-29").is_err());
        assert!(parse_date("2000-13-01").is_err());
        assert_eq!(parse_time("01:02:03.5").unwrap(), 3_723_500_000);
        assert_eq!(parse_time("00:01").unwrap(), 60_000_000);
        assert!(parse_time("1:2:3:4").is_err());
        assert_eq!(
            parse_timestamp("2000-01-02T00:00:01Z").unwrap(),
            (86_401_000_000, 0)
        );
        assert_eq!(
            parse_timestamp("2000-01-01 02:00+02:00").unwrap(),
            (7_200_000_000, 7200)
        );
        assert_eq!(
            parse_timestamp("2000-01-01 00:00:00-0130").unwrap(),
            (0, -5400)
        );
        assert_eq!(parse_timestamp("2000-01-01").unwrap(), (0, 0));
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn values_are_checked_against_the_column_type() {
        let mut out = BytesMut::new();
        let e = encode(&Value::from("x"), &Type::INT4, &mut out)
            .err()
            .unwrap();
        assert!(e.contains("integer"), "{e}");
        let e = encode(&Value::from(1), &Type::INET, &mut out)
            .err()
            .unwrap();
        assert!(e.contains(".sql fixture"), "{e}");
        let e = encode(&Value::from(1i64 << 40), &Type::INT4, &mut out)
            .err()
            .unwrap();
        assert!(e.contains("out of range"), "{e}");
        assert!(matches!(
            encode(&Value::Null, &Type::INT4, &mut out),
            Ok(IsNull::Yes)
        ));
        let mut out = BytesMut::new();
        encode(&serde_json::json!({"a": 1}), &Type::JSONB, &mut out).unwrap();
        assert_eq!(&out[..], b"\x01{\"a\":1}");
        let mut out = BytesMut::new();
        encode(
            &Value::from("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            &Type::UUID,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 16);
        assert_eq!(out[0], 0xa0);
    }

    #[test]
    fn arrays_are_one_dimensional() {
        let mut out = BytesMut::new();
        encode(&serde_json::json!([1, null]), &Type::INT4_ARRAY, &mut out).unwrap();
        let mut expected = Vec::new();
        for w in [1i32, 1, 23, 2, 1, 4, 7] {
            expected.extend_from_slice(&w.to_be_bytes());
        }
        expected.truncate(expected.len() - 4);
        expected.extend_from_slice(&1i32.to_be_bytes());
        expected.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(&out[..], &expected[..]);
        let e = encode(&serde_json::json!([[1]]), &Type::INT4_ARRAY, &mut out)
            .err()
            .unwrap();
        assert!(e.contains("one-dimensional"), "{e}");
    }

    #[test]
    fn groups_split_where_columns_change() {
        let rows: Vec<Map<String, Value>> = [
            serde_json::json!({"a": 1}),
            serde_json::json!({"a": 2}),
            serde_json::json!({"a": 3, "b": 1}),
            serde_json::json!({"a": 4}),
        ]
        .into_iter()
        .filter_map(|v| v.as_object().cloned())
        .collect();
        let refs: Vec<&Map<String, Value>> = rows.iter().collect();
        let groups: Vec<(usize, usize)> = column_groups(&refs)
            .into_iter()
            .map(|(s, g)| (s, g.len()))
            .collect();
        assert_eq!(groups, [(0, 2), (2, 1), (3, 1)]);
        let none: Vec<&Map<String, Value>> = Vec::new();
        assert!(column_groups(&none).is_empty());
    }

    #[test]
    fn tables_keep_file_order() {
        let t: Tables = serde_json::from_str(r#"{"users": [], "orders": [], "a": []}"#).unwrap();
        let names: Vec<&str> = t.0.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["users", "orders", "a"]);
        assert!(serde_json::from_str::<Tables>("[1]").is_err());
    }

    proptest! {
        #[test]
        fn integers_and_decimals_round_trip_through_numeric(int in -1_000_000_000i64..1_000_000_000, frac in 0u32..10_000, scale in 0usize..5) {
            let frac_text = format!("{frac:04}");
            let text = if scale == 0 { int.to_string() } else { format!("{int}.{}", &frac_text[..scale.min(4)]) };
            let encoded = numeric(&text);
            // Decode: ndigits, weight, sign, dscale, digits.
            let w = |i: usize| i16::from_be_bytes([encoded[2 * i], encoded[2 * i + 1]]);
            let (n, weight, sign, dscale) = (w(0), w(1), w(2) as u16, w(3));
            let mut value = 0f64;
            for i in 0..n as usize {
                value += f64::from(w(4 + i)) * 10f64.powi(4 * (i32::from(weight) - i as i32));
            }
            if sign == 0x4000 { value = -value; }
            let expected: f64 = text.parse().unwrap();
            prop_assert!((value - expected).abs() < 1e-6, "{text}: {value}");
            prop_assert_eq!(dscale as usize, if scale == 0 { 0 } else { scale.min(4) });
        }
    }
}
