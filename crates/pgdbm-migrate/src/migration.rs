//! Migration files and where they come from.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use pgdbm_core::migration as rules;
use pgdbm_core::{Error, Result};

use crate::TRACING_TARGET;

/// One migration (Python: `Migration`).
///
/// From [`Migrator::find_migration_files`](crate::Migrator::find_migration_files): `content` is
/// the file's text and `applied_at` is `None`. From [`Migrator::applied`](crate::Migrator::applied):
/// `content` is empty (not stored in the database) and `applied_at` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Bare file name, e.g. `001_create_users.sql`.
    pub filename: String,
    /// Python-identical checksum of the raw, unrendered content
    /// ([`pgdbm_core::checksum`]), or the stored checksum for applied migrations.
    pub checksum: String,
    /// The file's text (empty for migrations read from the history table).
    pub content: String,
    /// When it was applied (server time of the history row, a `TIMESTAMP` read as UTC).
    pub applied_at: Option<SystemTime>,
    /// The module of the history row (`None` for rows that apply to every module).
    pub module_name: Option<String>,
}

impl Migration {
    /// A migration for a file with this name and content; computes the checksum.
    pub fn new(filename: impl Into<String>, content: impl Into<String>) -> Self {
        let content = content.into();
        Migration {
            filename: filename.into(),
            checksum: rules::checksum(&content),
            content,
            applied_at: None,
            module_name: None,
        }
    }

    /// True when this migration was read from the history table (Python: `is_applied`).
    pub fn is_applied(&self) -> bool {
        self.applied_at.is_some()
    }

    /// The version in the file name: `001_x.sql` -> `001`, `V1__x.sql` -> `1`,
    /// `20240126120000_x.sql` -> `20240126120000`, else the name before the first `.`.
    pub fn version(&self) -> String {
        rules::migration_version(&self.filename)
    }

    /// True when the file carries the `-- pgdbm:no-transaction` marker at the start of a line.
    pub fn is_no_transaction(&self) -> bool {
        rules::has_no_transaction_marker(&self.content)
    }
}

/// A migration file compiled into the binary by [`embed_migrations!`](crate::embed_migrations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedMigration {
    /// Bare file name.
    pub filename: &'static str,
    /// The file's text.
    pub content: &'static str,
}

/// Where a [`Migrator`](crate::Migrator) finds its migration files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationSource {
    /// `*.sql` files of a directory, read at run time (Python's behaviour).
    Directory(PathBuf),
    /// Files compiled in with [`embed_migrations!`](crate::embed_migrations).
    Embedded(&'static [EmbeddedMigration]),
}

impl MigrationSource {
    /// All migration files, in code-point order of file name.
    ///
    /// A directory that does not exist yields no migrations (with a warning), like Python pgdbm.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] naming the directory or file that cannot be read (or is not UTF-8),
    /// or a file (symlink) that resolves outside the directory, as Python pgdbm refuses it.
    pub fn load(&self) -> Result<Vec<Migration>> {
        match self {
            MigrationSource::Directory(dir) => load_dir(dir),
            MigrationSource::Embedded(files) => {
                let mut out: Vec<Migration> = files
                    .iter()
                    .filter(|f| rules::is_migration_file_name(f.filename))
                    .map(|f| Migration::new(f.filename, f.content))
                    .collect();
                // The macro already sorts; a hand-written slice may not be.
                out.sort_by(|a, b| a.filename.cmp(&b.filename));
                Ok(out)
            }
        }
    }
}

fn load_dir(dir: &Path) -> Result<Vec<Migration>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(target: TRACING_TARGET, dir = %dir.display(), "migrations directory does not exist");
            return Ok(Vec::new());
        }
        Err(e) => {
            return Err(Error::migration(
                None,
                format!("cannot read migrations directory `{}`: {e}", dir.display()),
            ))
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            Error::migration(
                None,
                format!("cannot list migrations directory `{}`: {e}", dir.display()),
            )
        })?;
        let Ok(name) = entry.file_name().into_string() else {
            tracing::warn!(target: TRACING_TARGET, file = ?entry.file_name(), "skipping a file whose name is not UTF-8");
            continue;
        };
        if !rules::is_migration_file_name(&name) {
            continue;
        }
        // Follows symlinks, like Python's `Path.is_file()`.
        if std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            names.push(name);
        }
    }
    rules::sort_migration_names(&mut names);
    // As Python pgdbm: a file (typically a symlink) that resolves outside the directory is
    // refused, so a link cannot smuggle another project's SQL into this history.
    let real_dir = std::fs::canonicalize(dir).map_err(|e| {
        Error::migration(
            None,
            format!(
                "cannot resolve migrations directory `{}`: {e}",
                dir.display()
            ),
        )
    })?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        let real = std::fs::canonicalize(&path).map_err(|e| {
            Error::migration(
                Some(name.clone()),
                format!("cannot resolve migration file `{}`: {e}", path.display()),
            )
        })?;
        if !real.starts_with(&real_dir) {
            return Err(Error::migration(
                Some(name.clone()),
                format!(
                    "migration file `{name}` resolves to `{}`, which is outside the migrations \
                     directory `{}`; copy the file into the directory instead of linking to it",
                    real.display(),
                    real_dir.display()
                ),
            ));
        }
        let content = std::fs::read_to_string(&path).map_err(|e| {
            Error::migration(
                Some(name.clone()),
                format!(
                    "cannot read migration file `{}` (migrations must be UTF-8 text): {e}",
                    path.display()
                ),
            )
        })?;
        out.push(Migration::new(name, content));
    }
    Ok(out)
}

/// One row of the history table (Python: `get_migration_history()` items).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// File name.
    pub filename: String,
    /// Module of the row (`None`: applies to every module).
    pub module_name: Option<String>,
    /// When it was applied (a `TIMESTAMP` read as UTC).
    pub applied_at: SystemTime,
    /// Database user that applied it.
    pub applied_by: Option<String>,
    /// Execution time in milliseconds (`0` for rows recorded by
    /// [`baseline`](crate::Migrator::baseline)).
    pub execution_time_ms: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_helpers() {
        let m = Migration::new("V12__init.sql", "-- pgdbm:no-transaction\nSELECT 1;");
        assert_eq!(m.version(), "12");
        assert!(m.is_no_transaction());
        assert!(!m.is_applied());
        assert_eq!(
            m.checksum,
            pgdbm_core::checksum("-- pgdbm:no-transaction\nSELECT 1;")
        );
        assert!(!Migration::new("1_a.sql", "SELECT 1").is_no_transaction());
    }

    #[test]
    fn embedded_source_filters_and_sorts() {
        static FILES: &[EmbeddedMigration] = &[
            EmbeddedMigration {
                filename: "b.sql",
                content: "B",
            },
            EmbeddedMigration {
                filename: ".hidden.sql",
                content: "H",
            },
            EmbeddedMigration {
                filename: "a.sql",
                content: "A",
            },
            EmbeddedMigration {
                filename: "notes.txt",
                content: "N",
            },
        ];
        let names: Vec<String> = MigrationSource::Embedded(FILES)
            .load()
            .unwrap()
            .into_iter()
            .map(|m| m.filename)
            .collect();
        assert_eq!(names, ["a.sql", "b.sql"]);
    }

    #[test]
    fn missing_directory_is_empty_and_non_utf8_is_an_error_naming_the_file() {
        let base = std::env::temp_dir().join(format!("pgdbm-migrate-unit-{}", std::process::id()));
        assert!(MigrationSource::Directory(base.join("nope"))
            .load()
            .unwrap()
            .is_empty());
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("001_ok.sql"), "SELECT 1;").unwrap();
        std::fs::write(base.join("002_bad.sql"), [0xff, 0xfe, 0x00]).unwrap();
        std::fs::write(base.join("readme.md"), "x").unwrap();
        let err = MigrationSource::Directory(base.clone()).load().unwrap_err();
        match err {
            Error::Migration { file, message, .. } => {
                assert_eq!(file.as_deref(), Some("002_bad.sql"));
                assert!(message.contains("UTF-8"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        std::fs::remove_file(base.join("002_bad.sql")).unwrap();
        let ok = MigrationSource::Directory(base.clone()).load().unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].filename, "001_ok.sql");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn symlinks_resolving_outside_the_directory_are_refused() {
        let base = std::env::temp_dir().join(format!("pgdbm-symlink-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("migrations");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(base.join("outside.sql"), "DROP TABLE users;").unwrap();
        std::fs::write(dir.join("001_ok.sql"), "SELECT 1;").unwrap();
        // A link to a file inside the directory is fine.
        std::os::unix::fs::symlink(dir.join("001_ok.sql"), dir.join("002_inside.sql")).unwrap();
        assert_eq!(
            MigrationSource::Directory(dir.clone())
                .load()
                .unwrap()
                .len(),
            2
        );
        std::os::unix::fs::symlink(base.join("outside.sql"), dir.join("003_evil.sql")).unwrap();
        match MigrationSource::Directory(dir.clone()).load().unwrap_err() {
            Error::Migration { file, message, .. } => {
                assert_eq!(file.as_deref(), Some("003_evil.sql"));
                assert!(
                    message.contains("003_evil.sql") && message.contains("outside"),
                    "{message}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        // Also when the directory itself is reached through a symlink.
        let linked_dir = base.join("linked");
        std::os::unix::fs::symlink(&dir, &linked_dir).unwrap();
        std::fs::remove_file(dir.join("003_evil.sql")).unwrap();
        assert_eq!(
            MigrationSource::Directory(linked_dir).load().unwrap().len(),
            2
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
