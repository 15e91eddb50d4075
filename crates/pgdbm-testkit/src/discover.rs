//! Finding the PostgreSQL server binaries (`initdb`, `postgres`).

use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgdbm_core::{Error, Result};

/// Environment variable naming the directory that holds `initdb` and `postgres`.
pub const PG_BIN_ENV: &str = "PGDBM_PG_BIN";

/// Where the versioned Debian/Ubuntu server packages install their binaries.
const DEBIAN_LIB_DIR: &str = "/usr/lib/postgresql";

/// Finds the directory holding PostgreSQL's `initdb` and `postgres`.
///
/// Search order: `explicit` (when given, it must be valid: no fallback), then the
/// [`PGDBM_PG_BIN`](PG_BIN_ENV) environment variable (same rule), then `pg_config --bindir`,
/// then the newest `/usr/lib/postgresql/<version>/bin` (numeric version order).
///
/// # Errors
/// [`Error::TestDatabase`] naming every place searched and the fix (install the server or set
/// `PGDBM_PG_BIN`).
pub fn find_pg_bin(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return check_bin_dir(dir)
            .map(|()| dir.to_path_buf())
            .map_err(|why| {
                not_found(format!(
                    "the configured PostgreSQL bin directory {} is not usable: {why}; pass a \
                 directory that contains initdb and postgres",
                    dir.display()
                ))
            });
    }
    if let Some(value) = env::var_os(PG_BIN_ENV).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(value);
        return check_bin_dir(&dir).map(|()| dir.clone()).map_err(|why| {
            not_found(format!(
                "{PG_BIN_ENV}={} is not usable: {why}; set {PG_BIN_ENV} to the directory that \
                 contains initdb and postgres, or unset it to search automatically",
                dir.display()
            ))
        });
    }

    let mut tried = vec![format!("{PG_BIN_ENV} (not set)")];
    match Command::new("pg_config").arg("--bindir").output() {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            match check_bin_dir(&dir) {
                Ok(()) => return Ok(dir),
                Err(why) => tried.push(format!("`pg_config --bindir` = {} ({why})", dir.display())),
            }
        }
        Ok(out) => tried.push(format!("`pg_config --bindir` (failed: {})", out.status)),
        Err(e) => tried.push(format!("`pg_config --bindir` ({e})")),
    }

    let mut versions = versioned_bin_dirs(Path::new(DEBIAN_LIB_DIR));
    if versions.is_empty() {
        tried.push(format!("{DEBIAN_LIB_DIR}/*/bin (none)"));
    }
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    for (_, dir) in versions {
        match check_bin_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(why) => tried.push(format!("{} ({why})", dir.display())),
        }
    }
    Err(not_found(format!(
        "no PostgreSQL server binaries (initdb and postgres) found; searched: {}. Fix: install \
         the PostgreSQL server (Debian/Ubuntu: `apt-get install postgresql`) or set \
         {PG_BIN_ENV} to the directory that contains initdb and postgres",
        tried.join("; ")
    )))
}

/// `<root>/<version>/bin` directories with their numeric version (`15` -> [15], `9.6` -> [9, 6]).
fn versioned_bin_dirs(root: &Path) -> Vec<(Vec<u64>, PathBuf)> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let version = parse_version(&name)?;
            Some((version, entry.path().join("bin")))
        })
        .collect()
}

/// Parses a dotted numeric version; `None` for anything else.
fn parse_version(name: &str) -> Option<Vec<u64>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn check_bin_dir(dir: &Path) -> std::result::Result<(), String> {
    if !dir.is_dir() {
        return Err("not a directory".to_string());
    }
    let missing: Vec<&str> = ["initdb", "postgres"]
        .into_iter()
        .filter(|bin| !is_executable(&dir.join(bin)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("no executable {}", missing.join(" or ")))
    }
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn not_found(message: String) -> Error {
    Error::TestDatabase {
        name: None,
        message,
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        let mut v = vec![
            parse_version("9.6").unwrap(),
            parse_version("15").unwrap(),
            parse_version("10").unwrap(),
        ];
        v.sort_by(|a, b| b.cmp(a));
        assert_eq!(v, vec![vec![15], vec![10], vec![9, 6]]);
        assert_eq!(parse_version("15beta"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn explicit_bad_dir_is_an_error_naming_it() {
        let err = find_pg_bin(Some(Path::new("/nonexistent/pg/bin"))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/pg/bin"), "{msg}");
        assert!(msg.contains("not a directory"), "{msg}");
    }

    #[test]
    fn explicit_dir_without_binaries_names_them() {
        let err = find_pg_bin(Some(Path::new("/"))).unwrap_err().to_string();
        assert!(err.contains("initdb") && err.contains("postgres"), "{err}");
    }
}
