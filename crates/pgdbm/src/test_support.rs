//! Glue `#[pgdbm::test]` expands to (hidden): the default backend and migrations from
//! `pgdbm-migrate` as a [`TestMigrations`](pgdbm_testkit::TestMigrations) (the testkit does not
//! depend on the migrator).

use pgdbm_core::{Error, Pool, Result};
use pgdbm_testkit::TestMigrations;

/// The backend `#[pgdbm::test]` uses without `backend = ...`: deadpool, or bb8 when only the
/// `bb8` feature is on.
#[cfg(feature = "deadpool")]
pub type DefaultPool = crate::DeadpoolPool;
/// The backend `#[pgdbm::test]` uses without `backend = ...`: deadpool, or bb8 when only the
/// `bb8` feature is on.
#[cfg(all(feature = "bb8", not(feature = "deadpool")))]
pub type DefaultPool = crate::Bb8Pool;

/// The migrations of `dir` (relative to `manifest_dir`, the crate's `CARGO_MANIFEST_DIR`), read
/// now; the template is built from exactly these files.
///
/// # Errors
/// [`Error::Migration`] when the directory does not exist or a file cannot be read.
#[cfg(feature = "migrate")]
pub fn migrations_dir<P: Pool>(manifest_dir: &str, dir: &str) -> Result<TestMigrations<P>> {
    let path = std::path::Path::new(manifest_dir).join(dir);
    if !path.is_dir() {
        return Err(Error::Migration {
            message: format!(
                "#[pgdbm::test(migrations = \"{dir}\")]: `{}` is not a directory (the path is \
                 relative to the crate's Cargo.toml directory)",
                path.display()
            ),
            file: None,
            source: None,
        });
    }
    let files = pgdbm_migrate::MigrationSource::Directory(path).load()?;
    // The files read now are the ones applied (a file edited meanwhile cannot slip in under
    // the old template name): they become a static embedded set, leaked once per test.
    let embedded: Vec<pgdbm_migrate::EmbeddedMigration> = files
        .into_iter()
        .map(|m| pgdbm_migrate::EmbeddedMigration {
            filename: Box::leak(m.filename.into_boxed_str()),
            content: Box::leak(m.content.into_boxed_str()),
        })
        .collect();
    migrations_embedded(Box::leak(embedded.into_boxed_slice()))
}

/// Embedded migrations (`pgdbm::migrate::embed_migrations!`).
///
/// # Errors
/// The migration source's error (none for embedded files today).
#[cfg(feature = "migrate")]
pub fn migrations_embedded<P: Pool>(
    files: &'static [pgdbm_migrate::EmbeddedMigration],
) -> Result<TestMigrations<P>> {
    let source = pgdbm_migrate::MigrationSource::Embedded(files);
    let names = source
        .load()?
        .into_iter()
        .map(|m| (m.filename, m.checksum))
        .collect();
    Ok(TestMigrations::new(names, move |db| async move {
        pgdbm_migrate::Migrator::new(&db)
            .source(source)
            .apply_pending()
            .await
            .map(drop)
    }))
}

/// Without the `migrate` feature: the error that says to enable it.
///
/// # Errors
/// Always [`Error::Configuration`].
#[cfg(not(feature = "migrate"))]
pub fn migrations_dir<P: Pool>(_manifest_dir: &str, _dir: &str) -> Result<TestMigrations<P>> {
    Err(Error::config(
        "migrations",
        "#[pgdbm::test(migrations = ...)] needs the pgdbm feature `migrate`",
    ))
}
