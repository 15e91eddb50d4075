//! Types beyond the built-in ones (facade features `serde_json`, `chrono`, `time`, `uuid`,
//! `decimal`), JSON text for json/jsonb parameters and COPY columns, and `Row::to_json`, all
//! against a real server and on both pool backends.

use pgdbm::types::{Json, ToSql};
use pgdbm::{Database, Pool, Row};
use pgdbm_integration_tests::{both_backends, fresh_database};
use serde_json::{json, Value};

type P<'a> = &'a (dyn ToSql + Sync);

async fn db<P2: Pool>(prefix: &str) -> Database<P2> {
    fresh_database::<P2>(prefix, |_| {}).await.unwrap()
}

/// JSON text (`&str`, `String`, `Option<&str>`) and `Json<Value>` / `Value` go into json and
/// jsonb columns through execute, execute_many and COPY, and come back equal.
async fn json_round_trip<B: Pool>() {
    let db = db::<B>("types_json").await;
    db.execute(
        "CREATE TABLE docs (id int PRIMARY KEY, j json, jb jsonb)",
        &[],
    )
    .await
    .unwrap();
    let doc = json!({"name": "Ada", "tags": ["x", "y"], "n": 1.5, "nested": {"ok": true}});
    let text = doc.to_string();
    let owned: String = text.clone();

    // execute: &str, String, Json<&Value>, Value, and a NULL text.
    db.execute(
        "INSERT INTO docs VALUES (1, $1, $2)",
        &[&text.as_str(), &owned],
    )
    .await
    .unwrap();
    db.execute("INSERT INTO docs VALUES (2, $1, $2)", &[&Json(&doc), &doc])
        .await
        .unwrap();
    let none: Option<&str> = None;
    db.execute("INSERT INTO docs VALUES (3, $1, $2)", &[&none, &none])
        .await
        .unwrap();
    // A parameter that is compared against jsonb in a WHERE clause takes text too.
    let found: Option<i32> = db
        .fetch_value(
            "SELECT id FROM docs WHERE jb = $1 ORDER BY id LIMIT 1",
            &[&text],
        )
        .await
        .unwrap();
    assert_eq!(found, Some(1));

    // execute_many: text rows and Json rows mixed.
    let t4 = text.as_str();
    let j5 = Json(&doc);
    let rows: Vec<Vec<P<'_>>> = vec![vec![&4i32, &t4, &t4], vec![&5i32, &j5, &j5]];
    assert_eq!(
        db.execute_many("INSERT INTO docs VALUES ($1, $2, $3)", &rows)
            .await
            .unwrap(),
        2
    );

    // COPY: text and Json into both column types.
    let rows: Vec<Vec<P<'_>>> = vec![vec![&6i32, &t4, &owned], vec![&7i32, &j5, &doc]];
    assert_eq!(
        db.copy_records_to_table("docs", &[], &rows).await.unwrap(),
        2
    );

    // Every non-NULL row reads back as the same document, as Value and as Json<Value>.
    let all = db
        .fetch_all("SELECT id, j, jb FROM docs ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(all.len(), 7);
    for row in &all {
        let id: i32 = row.try_get(0usize).unwrap();
        let j: Option<Value> = row.try_get("j").unwrap();
        let jb: Option<Json<Value>> = row.try_get("jb").unwrap();
        if id == 3 {
            assert!(j.is_none() && jb.is_none(), "row 3 is NULL");
        } else {
            assert_eq!(j.as_ref(), Some(&doc), "json of row {id}");
            assert_eq!(jb.map(|v| v.0), Some(doc.clone()), "jsonb of row {id}");
        }
    }
    // json keeps the text as sent; jsonb normalises it.
    let raw: String = db
        .fetch_value("SELECT j::text FROM docs WHERE id = 1", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw, text);

    // Invalid JSON text is the server's error (22P02), not a bind-time one; nothing is copied.
    let bad = "{not json";
    let e = db
        .execute("INSERT INTO docs VALUES (8, $1, NULL)", &[&bad])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("22P02"), "{e}");
    let rows: Vec<Vec<P<'_>>> = vec![vec![&9i32, &t4, &bad]];
    assert!(db.copy_records_to_table("docs", &[], &rows).await.is_err());
    // A non-string, non-JSON Rust value still fails at bind time, naming the types.
    let e = db
        .execute("INSERT INTO docs VALUES (10, NULL, $1)", &[&5i32])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("jsonb"), "{e}");
    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM docs", &[])
        .await
        .unwrap();
    assert_eq!(n, Some(7));
    db.close().await;
}
both_backends!(json_text_and_values_round_trip, json_round_trip);

/// chrono, time, uuid and rust_decimal values go in as parameters (execute and COPY) and come
/// back equal.
async fn typed_round_trip<B: Pool>() {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
    use rust_decimal::Decimal;
    use std::str::FromStr;

    let db = db::<B>("types_typed").await;
    db.execute(
        "CREATE TABLE v (id int, d date, t time, ts timestamp, tstz timestamptz, u uuid, n numeric)",
        &[],
    )
    .await
    .unwrap();

    let d = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    let t = NaiveTime::from_hms_micro_opt(23, 59, 58, 123_456).unwrap();
    let ts = NaiveDateTime::new(d, t);
    let tstz: DateTime<Utc> = DateTime::from_naive_utc_and_offset(ts, Utc);
    let u = uuid::Uuid::from_str("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
    let n = Decimal::from_str("-12345678901234.5678").unwrap();
    db.execute(
        "INSERT INTO v VALUES (1, $1, $2, $3, $4, $5, $6)",
        &[&d, &t, &ts, &tstz, &u, &n],
    )
    .await
    .unwrap();
    let row = db
        .fetch_one("SELECT d, t, ts, tstz, u, n FROM v WHERE id = 1", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<_, NaiveDate>("d").unwrap(), d);
    assert_eq!(row.try_get::<_, NaiveTime>("t").unwrap(), t);
    assert_eq!(row.try_get::<_, NaiveDateTime>("ts").unwrap(), ts);
    assert_eq!(row.try_get::<_, DateTime<Utc>>("tstz").unwrap(), tstz);
    assert_eq!(row.try_get::<_, uuid::Uuid>("u").unwrap(), u);
    assert_eq!(row.try_get::<_, Decimal>("n").unwrap(), n);
    // The server saw the values, not just the client: compare with literals in SQL.
    let same: Option<bool> = db
        .fetch_value(
            "SELECT d = '2024-02-29' AND t = '23:59:58.123456' AND ts = '2024-02-29 23:59:58.123456' \
             AND tstz = '2024-02-29 23:59:58.123456+00' AND u = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11' \
             AND n = -12345678901234.5678 FROM v WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(same, Some(true));

    // The `time` crate's types, through COPY this time, read back with `time` and chrono.
    let td = time::macros::date!(2024 - 02 - 29);
    let tt = time::macros::time!(23:59:58.123456);
    let tts = time::PrimitiveDateTime::new(td, tt);
    let ttz = tts.assume_utc();
    let rows: Vec<Vec<P<'_>>> = vec![vec![&2i32, &td, &tt, &tts, &ttz, &u, &n]];
    assert_eq!(db.copy_records_to_table("v", &[], &rows).await.unwrap(), 1);
    let row = db
        .fetch_one("SELECT d, t, ts, tstz FROM v WHERE id = 2", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<_, time::Date>("d").unwrap(), td);
    assert_eq!(row.try_get::<_, time::Time>("t").unwrap(), tt);
    assert_eq!(
        row.try_get::<_, time::PrimitiveDateTime>("ts").unwrap(),
        tts
    );
    assert_eq!(row.try_get::<_, time::OffsetDateTime>("tstz").unwrap(), ttz);
    assert_eq!(row.try_get::<_, DateTime<Utc>>("tstz").unwrap(), tstz);
    let equal: Option<bool> = db
        .fetch_value(
            "SELECT (SELECT (d, t, ts, tstz, u, n) FROM v WHERE id = 1) \
                  = (SELECT (d, t, ts, tstz, u, n) FROM v WHERE id = 2)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(equal, Some(true));
    db.close().await;
}
both_backends!(chrono_time_uuid_decimal_round_trip, typed_round_trip);

const EVERY_TYPE: &str = r#"SELECT
    true AS b, 1::int2 AS i2, (-2)::int4 AS i4, 9007199254740993::int8 AS i8, 26::oid AS oid,
    1.5::float4 AS f4, (-0.25)::float8 AS f8, 'NaN'::float8 AS f8_nan, '-Infinity'::float8 AS f8_inf,
    12.50::numeric AS num, (-123456789012345678901234567890.000000001)::numeric AS num_big,
    'NaN'::numeric AS num_nan,
    'txt'::text AS t, 'v'::varchar AS vc, 'ab'::char(3) AS bp, 'x'::"char" AS ch, 'nm'::name AS nm,
    'happy'::mood AS mood,
    '{"a": [1, {"b": null}], "s": "é"}'::json AS j, '{"z": 1, "a": 2}'::jsonb AS jb,
    '"just a string"'::jsonb AS jb_scalar,
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u, '\x01ff'::bytea AS by,
    '2024-01-31'::date AS d, '1969-07-20'::date AS d_old, 'infinity'::date AS d_inf,
    '13:45:00.25'::time AS tm, '00:00'::time AS tm0,
    '2024-01-31 13:45:00'::timestamp AS ts, '2024-01-31 13:45:00.123456+02'::timestamptz AS tstz,
    '-infinity'::timestamp AS ts_inf,
    '1 year 2 mons 3 days 04:05:06.5'::interval AS iv, '0'::interval AS iv0,
    ARRAY[1, 2, NULL]::int4[] AS arr, ARRAY[['a', 'b'], ['c', 'd']]::text[] AS arr2,
    '{}'::int[] AS empty_arr, ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid] AS uuids,
    NULL::int AS n"#;

/// `to_json()` of a row with every common type matches the fixture, and the fetch helpers
/// return the same objects.
async fn to_json_fixture<B: Pool>() {
    let db = db::<B>("types_to_json").await;
    db.execute("CREATE TYPE mood AS ENUM ('happy', 'sad')", &[])
        .await
        .unwrap();
    let fixture: Value = serde_json::from_str(include_str!("../fixtures/to_json.json")).unwrap();
    let row = db.fetch_one(EVERY_TYPE, &[]).await.unwrap().unwrap();
    let got = row.to_json().unwrap();
    if got != fixture {
        let (g, f) = (got.as_object().unwrap(), fixture.as_object().unwrap());
        for (k, v) in f {
            assert_eq!(g.get(k), Some(v), "column {k}");
        }
        panic!("extra columns: {got}");
    }
    assert_eq!(row.len(), fixture.as_object().unwrap().len());

    let one = db.fetch_one_json(EVERY_TYPE, &[]).await.unwrap();
    assert_eq!(one.as_ref(), Some(&fixture));
    let all = db
        .fetch_all_json(
            "SELECT g AS id, g * 1.5 AS x FROM generate_series(1, 2) g ORDER BY g",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        all,
        vec![json!({"id": 1, "x": "1.5"}), json!({"id": 2, "x": "3.0"})]
    );
    assert_eq!(
        db.fetch_one_json("SELECT 1 WHERE false", &[])
            .await
            .unwrap(),
        None
    );

    // A type without a mapping is an error naming the column and the fix.
    let e = db
        .fetch_one("SELECT '1,2'::point AS p", &[])
        .await
        .unwrap()
        .unwrap()
        .to_json()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`p`") && e.contains("point") && e.contains("::text"),
        "{e}"
    );
    db.close().await;
}
both_backends!(row_to_json_matches_the_fixture, to_json_fixture);
