//! Issue 10, migrations parity: `create_migration` writes exactly what Python pgdbm 0.5 writes
//! (file name format, local time, content byte for byte), run against the Python package from
//! `scripts/setup`'s venv (skipped without it unless `PGDBM_REQUIRE_PYTHON=1`).

use std::path::{Path, PathBuf};
use std::process::Command;

use pgdbm::migrate::Migrator;
use pgdbm::{Database, Pool};
use pgdbm_integration_tests::{both_backends, fresh_config};

const PY_CREATE: &str = r#"
import asyncio, sys
from pgdbm.migrations import AsyncMigrationManager

class NoDb:
    schema = None

async def main(path, name, content, auto):
    m = AsyncMigrationManager(NoDb(), migrations_path=path)
    print(await m.create_migration(name, content, auto_transaction=(auto == "1")))

asyncio.run(main(*sys.argv[1:5]))
"#;

/// The local wall-clock time as `YYYYMMDD_HHMMSS`, from `date` (a source independent of the
/// code under test).
fn local_now() -> String {
    let out = Command::new("date").arg("+%Y%m%d_%H%M%S").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn split_name(path: &Path) -> (String, String) {
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    (name[..15].to_string(), name[15..].to_string())
}

const CASES: &[(&str, &str, bool)] = &[
    (
        "add_user_roles",
        "\n        CREATE TABLE user_roles (\n            user_id INTEGER,\n            role VARCHAR(50) NOT NULL\n        );\n    ",
        true,
    ),
    ("no_newline", "CREATE TABLE a (id int);", true),
    ("wrapped", "BEGIN;\nCREATE TABLE b (id int);\nCOMMIT;\n", true),
    ("no_tx", "CREATE INDEX CONCURRENTLY i ON a (id);\n", false),
    ("crlf-and-unicode", "-- café ☕\r\nSELECT 'ü';\r\n", false),
    ("empty", "", true),
];

async fn create_migration_matches_python<P: Pool>() {
    let Some(py) = pgdbm_integration_tests::python_with_pgdbm("the create_migration parity test")
    else {
        return;
    };
    let config = fresh_config("py_create").unwrap();
    let db = Database::<P>::connect(config).await.unwrap();
    let base = std::env::temp_dir().join(format!(
        "pgdbm-create-parity-{}-{}",
        std::process::id(),
        std::any::type_name::<P>().rsplit("::").next().unwrap()
    ));
    let _ = std::fs::remove_dir_all(&base);
    let (py_dir, rs_dir) = (base.join("py"), base.join("rs"));
    let migrator = Migrator::new(&db).migrations_path(&rs_dir);
    for (name, content, auto) in CASES {
        let out = Command::new(&py)
            .args([
                "-c",
                PY_CREATE,
                py_dir.to_str().unwrap(),
                name,
                content,
                if *auto { "1" } else { "0" },
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let py_path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let before = local_now();
        let rs_path = migrator.create_migration(name, content, *auto).unwrap();
        let after = local_now();

        // Content: byte for byte.
        assert_eq!(
            std::fs::read(&py_path).unwrap(),
            std::fs::read(&rs_path).unwrap(),
            "{name}"
        );
        // Name: same suffix, same timestamp format, taken from local time.
        let (py_ts, py_rest) = split_name(&py_path);
        let (rs_ts, rs_rest) = split_name(&rs_path);
        assert_eq!(py_rest, rs_rest);
        assert_eq!(py_rest, format!("_{name}.sql"));
        for ts in [&py_ts, &rs_ts] {
            assert!(
                ts.len() == 15
                    && ts.as_bytes()[8] == b'_'
                    && ts.bytes().filter(u8::is_ascii_digit).count() == 14,
                "{ts}"
            );
        }
        assert!(py_ts <= rs_ts, "{py_ts} then {rs_ts}");
        assert!(
            before <= rs_ts && rs_ts <= after,
            "{before} <= {rs_ts} <= {after}"
        );
    }
    // Both tools' files sort together by time.
    let mut all: Vec<String> = [&py_dir, &rs_dir]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    all.sort();
    assert_eq!(all.len(), CASES.len() * 2);
    db.close().await;
    std::fs::remove_dir_all(&base).unwrap();
}
both_backends!(create_migration_parity, create_migration_matches_python);
