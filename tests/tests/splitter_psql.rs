//! Issue 10: the statement splitter (`pgdbm_core::sql`, used for no-transaction migrations)
//! splits exactly where psql does. A differential property test: generated scripts full of
//! `;` in strings, `E''` strings, dollar quotes, quoted identifiers, comments (nested block
//! comments too), parentheses, `CREATE RULE ... DO ALSO (...; ...)` and `BEGIN ATOMIC ... END`
//! functions are run by psql against a real server, and every statement psql sent is compared
//! with the splitter's.
//!
//! How psql's statements are observed: each generated `SELECT` reports the text the server
//! received through `current_query()` (framed by `chr(30)`/`chr(31)`); `CREATE` statements
//! are valid only when sent whole (psql runs with `ON_ERROR_STOP=1`) and are followed by a
//! reporting `SELECT`, so a statement psql cut or merged differently shows up as an error or a
//! different report.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use pgdbm::core::sql::split_statements;
use pgdbm_testkit::{unique_database_name, TestServer};
use proptest::prelude::*;

/// One generated statement and the text of it a `SELECT` would report (None for `CREATE`s).
#[derive(Debug, Clone)]
enum Stmt {
    Select(Vec<String>),
    Function,
    Rule,
}

fn string_body() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just(";".to_string()),
            Just("''".to_string()),
            Just("$".to_string()),
            Just("$$".to_string()),
            Just("--".to_string()),
            Just("/*".to_string()),
            Just("*/".to_string()),
            Just("\"".to_string()),
            Just("\\".to_string()),
            Just("(".to_string()),
            Just(")".to_string()),
            Just("\n".to_string()),
            Just(" ".to_string()),
            "[a-z]{1,3}",
            Just("é".to_string()),
        ],
        0..6,
    )
    .prop_map(|v| v.concat())
}

/// A select-list item (after a comma) or a comment between items.
fn item() -> impl Strategy<Value = String> {
    prop_oneof![
        string_body().prop_map(|s| format!(", '{s}'")),
        // E'' strings: backslash escapes, `\'` does not end the string.
        string_body().prop_map(|s| {
            let s = s.replace('\\', "\\\\").replace('\'', "\\'");
            format!(", E'{s}\\';'")
        }),
        (string_body(), prop_oneof![Just(""), Just("t"), Just("x_1")]).prop_map(|(s, tag)| {
            let s = s.replace('$', "");
            format!(", ${tag}${s}${tag}$")
        }),
        string_body().prop_map(|s| format!(", 1 AS \"x{}\"", s.replace('"', "\"\""))),
        string_body().prop_map(|s| format!(", (('{s}') || ((';')))")),
        string_body().prop_map(|s| format!(
            " /* {} /* nested; */ ; */",
            s.replace("*/", "").replace("/*", "")
        )),
        string_body().prop_map(|s| format!(" -- {};\n", s.replace('\n', " "))),
        Just(", 1 AS begin".to_string()),
        Just(", 2 AS atomic".to_string()),
        Just(", 3 AS \"end\"".to_string()),
        Just(", CASE WHEN true THEN 'a;' ELSE 'b' END".to_string()),
    ]
}

fn stmt() -> impl Strategy<Value = Stmt> {
    prop_oneof![
        6 => proptest::collection::vec(item(), 0..5).prop_map(Stmt::Select),
        1 => Just(Stmt::Function),
        1 => Just(Stmt::Rule),
    ]
}

/// Whitespace or a comment between statements.
fn gap() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\n".to_string()),
        Just(" ".to_string()),
        Just("\n-- between; statements\n".to_string()),
        Just(" /* between; */ ".to_string()),
        Just(";\n".to_string()),
    ]
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The script's text for `stmts` (without gaps), and the statements the splitter must find,
/// in order: `Some(text)` for a reporting select, `None` for a create.
fn render(stmts: &[Stmt], gaps: &[String]) -> String {
    let mut out = String::new();
    for (i, s) in stmts.iter().enumerate() {
        out.push_str(&gaps[i % gaps.len()]);
        match s {
            Stmt::Select(items) => {
                out.push_str("SELECT chr(30) || current_query() || chr(31) AS q");
                for it in items {
                    out.push_str(it);
                }
            }
            Stmt::Function => {
                let n = COUNTER.fetch_add(1, Ordering::Relaxed);
                out.push_str(&format!(
                    "CREATE OR REPLACE FUNCTION pg_temp.f_{n}(x int) RETURNS text LANGUAGE sql\n\
                     BEGIN ATOMIC\n  SELECT CASE WHEN x > 0 THEN 'pos;' ELSE 'neg' END;\n  \
                     SELECT 'x;';\nEND"
                ));
            }
            Stmt::Rule => {
                out.push_str(
                    "CREATE OR REPLACE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES \
                     (NEW.id); INSERT INTO b VALUES (NEW.id))",
                );
            }
        }
        out.push(';');
    }
    out
}

/// The statement texts psql sent, from the reporting selects' output.
fn reported(stdout: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = stdout;
    while let Some(a) = rest.find('\u{1e}') {
        let Some(b) = rest[a..].find('\u{1f}') else {
            break;
        };
        out.push(rest[a + 1..a + b].to_string());
        rest = &rest[a + b + 1..];
    }
    out
}

/// A statement's text without leading `--` comments and surrounding whitespace (psql drops
/// leading line comments before sending).
fn core(s: &str) -> String {
    let mut s = s.trim();
    while let Some(rest) = s.strip_prefix("--") {
        s = rest.find('\n').map_or("", |i| &rest[i + 1..]).trim_start();
    }
    s.trim_end().to_string()
}

/// [`core`] of a text psql sent, without the `;` that ended it (psql sends it, the splitter
/// drops it).
fn sent_core(s: &str) -> String {
    let s = s.trim_end();
    core(s.strip_suffix(';').unwrap_or(s))
}

struct Db {
    server: &'static TestServer,
    name: String,
}

fn db() -> &'static Db {
    static DB: std::sync::OnceLock<Db> = std::sync::OnceLock::new();
    DB.get_or_init(|| {
        let server = TestServer::shared().unwrap();
        let name = unique_database_name("split_psql").unwrap();
        server.create_database(&name).unwrap();
        server
            .psql(
                &name,
                "CREATE TABLE t (id int); CREATE TABLE a (id int); CREATE TABLE b (id int)",
            )
            .unwrap();
        Db { server, name }
    })
}

fn psql_bin() -> String {
    ["/usr/lib/postgresql/15/bin/psql", "/usr/bin/psql"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
        .unwrap_or_else(|| "psql".to_string())
}

/// Runs `script` with psql (as a file, the way migrations are applied by hand); returns stdout.
fn run_psql(script: &str) -> Result<String, String> {
    let db = db();
    let file = std::env::temp_dir().join(format!(
        "pgdbm-split-{}-{}.sql",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&file, script).unwrap();
    let mut cmd = Command::new(psql_bin());
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(db.server.host())
        .arg("-p")
        .arg(db.server.port().to_string())
        .arg("-U")
        .arg(db.server.user())
        .arg("-d")
        .arg(&db.name)
        .arg("-f")
        .arg(&file)
        .env_remove("PGOPTIONS");
    if let Some(p) = db.server.password() {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&file);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8(out.stdout).unwrap())
}

/// Splitter vs psql on one script.
fn check(script: &str) -> Result<(), TestCaseError> {
    let ours = split_statements(script);
    let sent = run_psql(script)
        .map_err(|e| TestCaseError::fail(format!("psql failed on {script:?}: {e}")))?;
    let psql_selects = reported(&sent);
    let our_selects: Vec<&str> = ours
        .iter()
        .copied()
        .filter(|s| core(s).contains("chr(30) || current_query()"))
        .collect();
    prop_assert_eq!(
        psql_selects.len(),
        our_selects.len(),
        "script {:?}\nours {:#?}\npsql {:#?}",
        script,
        ours,
        psql_selects
    );
    for (p, o) in psql_selects.iter().zip(&our_selects) {
        prop_assert_eq!(sent_core(p), core(o), "script {:?}", script);
    }
    // Every piece of ours is a select psql reported or a create that succeeded whole.
    let creates = ours.len() - our_selects.len();
    let expected_creates = script.matches("CREATE OR REPLACE").count();
    prop_assert_eq!(
        creates,
        expected_creates,
        "script {:?}\nours {:#?}",
        script,
        ours
    );
    Ok(())
}

#[test]
fn fixed_cases_match_psql() {
    for script in [
        "SELECT chr(30) || current_query() || chr(31) AS q, ';';",
        "CREATE OR REPLACE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (NEW.id); INSERT INTO b VALUES (NEW.id));\nSELECT chr(30) || current_query() || chr(31) AS q;",
        "CREATE OR REPLACE FUNCTION pg_temp.g(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN x > 0 THEN 1 ELSE 2 END; END; SELECT chr(30) || current_query() || chr(31) AS q;",
        "-- c;\n/* a; /* b; */ c; */ SELECT chr(30) || current_query() || chr(31) AS q, E'\\';', $x$;$x$ -- d;\n;SELECT chr(30) || current_query() || chr(31) AS q",
    ] {
        check(script).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn splitter_matches_psql(
        stmts in proptest::collection::vec(stmt(), 1..6),
        gaps in proptest::collection::vec(gap(), 1..4),
    ) {
        let script = render(&stmts, &gaps);
        check(&script)?;
    }
}
