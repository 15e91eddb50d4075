//! `pgdbm migrate ...` (Python: `pgdbm/cli/commands/migrate.py`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pgdbm::migrate::{MigrationStatus, Migrator};
use pgdbm::DeadpoolPool;

use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::util::{confirm, format_time};
use crate::MigrateCmd;

/// Directory used without modules (Python's simple mode).
const SIMPLE_PATH: &str = "migrations";

/// One set of migrations: a configured module, or `./migrations` without modules.
#[derive(Debug, Clone)]
struct Target {
    /// Module name; `None` in simple mode (the migrator's default: the schema).
    module: Option<String>,
    /// Migrations directory.
    path: PathBuf,
    /// Schema of the module; `None`: the environment's.
    schema: Option<String>,
}

impl Target {
    fn label(&self) -> String {
        match &self.module {
            Some(m) => m.clone(),
            None => format!("(no module, {})", self.path.display()),
        }
    }
}

fn target_of(ctx: &Ctx, name: &str) -> CliResult<Target> {
    let file = ctx.require_file("--module")?;
    let m = file.module(name)?;
    Ok(Target {
        module: Some(name.to_owned()),
        path: PathBuf::from(&m.migrations_path),
        schema: m.schema.clone(),
    })
}

fn simple_target() -> Target {
    Target {
        module: None,
        path: PathBuf::from(SIMPLE_PATH),
        schema: None,
    }
}

/// `--module M` or every module in dependency order; simple mode without modules.
fn targets(ctx: &Ctx, module: Option<&str>, announce: bool) -> CliResult<Vec<Target>> {
    if let Some(m) = module {
        return Ok(vec![target_of(ctx, m)?]);
    }
    match &ctx.file {
        Some(file) if !file.modules.is_empty() => {
            let order = file.resolve_module_order()?;
            if announce {
                println!("Resolved module order: {}", order.join(" → "));
            }
            order.iter().map(|m| target_of(ctx, m)).collect()
        }
        _ => Ok(vec![simple_target()]),
    }
}

/// Exactly one target: `--module` is required when modules are configured.
fn single_target(ctx: &Ctx, module: Option<&str>, what: &str) -> CliResult<Target> {
    match module {
        Some(m) => target_of(ctx, m),
        None if ctx.has_modules() => {
            let names: Vec<&str> = ctx
                .file
                .iter()
                .flat_map(|f| f.modules.keys().map(String::as_str))
                .collect();
            Err(CliError::new(format!(
                "`migrate {what}` needs --module: the configuration file defines modules ({})",
                names.join(", ")
            )))
        }
        None => Ok(simple_target()),
    }
}

fn migrator(ctx: &Ctx, db: &pgdbm::Db, t: &Target) -> CliResult<Migrator<DeadpoolPool>> {
    let view = match &t.schema {
        Some(s) => db.with_schema(s).map_err(|e| {
            CliError::from(e).context(&format!("invalid schema of module `{}`", t.label()))
        })?,
        None => db.clone(),
    };
    let mut m = Migrator::new(&view)
        .migrations_path(&t.path)
        .table(ctx.migrations_table());
    if let Some(name) = &t.module {
        m = m.module(name.clone());
    }
    Ok(m)
}

fn missing_dir(t: &Target) -> CliError {
    CliError::new(format!(
        "migrations directory {} of {} does not exist; create it (`pgdbm migrate create NAME{}`) \
         or fix `migrations_path` in the configuration file",
        t.path.display(),
        t.label(),
        t.module
            .as_deref()
            .map(|m| format!(" --module {m}"))
            .unwrap_or_default()
    ))
}

/// Runs a `migrate` subcommand.
pub(crate) async fn run(ctx: &Ctx, cmd: MigrateCmd) -> CliResult<()> {
    match cmd {
        MigrateCmd::Create {
            name, module, path, ..
        } => create(ctx, &name, module.as_deref(), path),
        MigrateCmd::Apply {
            module,
            all: _,
            dry_run,
        } => apply(ctx, module.as_deref(), dry_run).await,
        MigrateCmd::Status {
            module,
            all_modules: _,
        } => status(ctx, module.as_deref()).await,
        MigrateCmd::History { module, limit } => history(ctx, module.as_deref(), limit).await,
        MigrateCmd::Repair(m) => repair(ctx, m.module.as_deref()).await,
        MigrateCmd::Baseline { module, up_to } => {
            baseline(ctx, module.module.as_deref(), up_to.as_deref()).await
        }
        MigrateCmd::Rollback {
            module,
            version,
            confirm,
        } => rollback(ctx, module.module.as_deref(), &version, confirm).await,
    }
}

async fn apply(ctx: &Ctx, module: Option<&str>, dry_run: bool) -> CliResult<()> {
    let targets = targets(ctx, module, true)?;
    if module.is_some() || targets.iter().all(|t| t.module.is_none()) {
        if let Some(t) = targets.iter().find(|t| !t.path.is_dir()) {
            return Err(missing_dir(t));
        }
    }
    let db = ctx.connect().await?;
    let mut total = 0usize;
    for t in &targets {
        if !t.path.is_dir() {
            eprintln!(
                "Warning: migrations path not found for {}: {} (skipped)",
                t.label(),
                t.path.display()
            );
            continue;
        }
        println!("\nApplying migrations for module: {}", t.label());
        let m = migrator(ctx, &db, t)?;
        let ctx_msg = format!("module {}", t.label());
        if dry_run {
            let report = m
                .apply_pending_dry_run()
                .await
                .map_err(|e| CliError::from(e).context(&ctx_msg))?;
            if report.pending.is_empty() {
                println!("  No pending migrations (up to date)");
            } else {
                println!("  Would apply {} migration(s):", report.pending.len());
                for f in &report.pending {
                    println!("    - {f}");
                }
            }
        } else {
            let report = m
                .apply_pending()
                .await
                .map_err(|e| CliError::from(e).context(&ctx_msg))?;
            if report.status == MigrationStatus::UpToDate || report.applied.is_empty() {
                println!("  No pending migrations (up to date)");
            }
            for a in &report.applied {
                println!("  ✓ {} ({:.0}ms)", a.filename, a.execution_time_ms);
            }
            total += report.applied.len();
        }
    }
    db.close().await;
    if dry_run {
        println!("\nDry run: nothing was applied");
    } else {
        println!("\n✓ Applied {total} migration(s) total");
    }
    Ok(())
}

async fn status(ctx: &Ctx, module: Option<&str>) -> CliResult<()> {
    let targets = targets(ctx, module, false)?;
    let db = ctx.connect().await?;
    let env_schema = db.schema().unwrap_or("public").to_owned();
    let mut changed_total = Vec::new();
    for t in &targets {
        println!("\nModule: {}", t.label());
        println!(
            "  Schema: {}",
            t.schema.as_deref().unwrap_or(env_schema.as_str())
        );
        if !t.path.is_dir() {
            println!("  Status: migrations path not found ({})", t.path.display());
            continue;
        }
        let m = migrator(ctx, &db, t)?;
        let ctx_msg = format!("module {}", t.label());
        let files = m
            .find_migration_files()
            .map_err(|e| CliError::from(e).context(&ctx_msg))?;
        let applied = m
            .applied()
            .await
            .map_err(|e| CliError::from(e).context(&ctx_msg))?;
        let file_sums: BTreeMap<&str, &str> = files
            .iter()
            .map(|f| (f.filename.as_str(), f.checksum.as_str()))
            .collect();
        let pending: Vec<&str> = files
            .iter()
            .filter(|f| !applied.contains_key(&f.filename))
            .map(|f| f.filename.as_str())
            .collect();
        println!("  Applied: {}", applied.len());
        println!("  Pending: {}", pending.len());
        if !applied.is_empty() {
            println!("  Applied migrations:");
        }
        for (name, a) in &applied {
            let when = a.applied_at.map(format_time).unwrap_or_default();
            match file_sums.get(name.as_str()) {
                Some(sum) if *sum != a.checksum => {
                    println!(
                        "    ✗ {name} at {when}  CHECKSUM MISMATCH: the file changed since it was \
                         applied (recorded {}, file {})",
                        short(&a.checksum),
                        short(sum)
                    );
                    changed_total.push((t.clone(), name.clone()));
                }
                Some(_) => println!("    ✓ {name} at {when}"),
                None => println!("    ? {name} at {when}  (file not found)"),
            }
        }
        if !pending.is_empty() {
            println!("  Pending migrations:");
            for p in &pending {
                println!("    - {p}");
            }
        }
    }
    db.close().await;
    if changed_total.is_empty() {
        Ok(())
    } else {
        let list: Vec<String> = changed_total
            .iter()
            .map(|(t, f)| format!("{f} ({})", t.label()))
            .collect();
        Err(CliError::new(format!(
            "{} applied migration file(s) changed since they were applied: {}; restore the \
             original files, or accept the new content with `pgdbm migrate repair --module <M>`",
            list.len(),
            list.join(", ")
        )))
    }
}

fn short(checksum: &str) -> &str {
    checksum.get(..12).unwrap_or(checksum)
}

/// Python's numbering: `NNN_<name>.sql` with NNN one more than the largest leading number.
fn next_filename(dir: &Path, name: &str) -> CliResult<String> {
    let mut max: Option<u128> = None;
    let entries = std::fs::read_dir(dir)
        .map_err(|e| CliError::new(format!("cannot read {}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if !file.ends_with(".sql") {
            continue;
        }
        let digits: String = file.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse::<u128>() {
            max = Some(max.map_or(n, |m| m.max(n)));
        }
    }
    let next = max.map_or(1, |m| m.saturating_add(1));
    Ok(format!("{next:03}_{name}.sql"))
}

fn create(ctx: &Ctx, name: &str, module: Option<&str>, path: Option<PathBuf>) -> CliResult<()> {
    pgdbm::migrate::validate_migration_name(name)?;
    let (dir, schema) = match (path, module) {
        (Some(p), _) => (p, None),
        (None, Some(m)) => {
            let t = target_of(ctx, m)?;
            (t.path, t.schema)
        }
        (None, None) => (PathBuf::from(SIMPLE_PATH), None),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::new(format!("cannot create {}: {e}", dir.display())))?;
    let filename = next_filename(&dir, name)?;
    let file = dir.join(&filename);
    let title: String = name
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f
                    .to_uppercase()
                    .chain(c.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join(" ");
    let text = format!(
        "-- Migration: {filename}\n-- Created: {}\n-- Description: {title}\n\n-- Add your \
         migration SQL here\n-- Use {{{{tables.tablename}}}} syntax for schema-aware table \
         names\n\n",
        format_time(std::time::SystemTime::now())
    );
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
        .map_err(|e| CliError::new(format!("cannot create {}: {e}", file.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", file.display())))?;
    println!("✓ Created migration: {}", file.display());
    if let Some(s) = schema {
        println!("  Schema: {s}");
        println!("  Remember to use {{{{tables.}}}} syntax for table names");
    }
    Ok(())
}

async fn history(ctx: &Ctx, module: Option<&str>, limit: i64) -> CliResult<()> {
    if limit < 1 {
        return Err(CliError::new("--limit must be at least 1"));
    }
    let targets = targets(ctx, module, false)?;
    let db = ctx.connect().await?;
    for t in &targets {
        println!("\nModule: {}", t.label());
        let m = migrator(ctx, &db, t)?;
        let ctx_msg = format!("module {}", t.label());
        // `applied` reads "no history table" as empty; `history` would fail on it.
        let any = m
            .applied()
            .await
            .map_err(|e| CliError::from(e).context(&ctx_msg))?;
        let rows = if any.is_empty() {
            Vec::new()
        } else {
            m.history(limit)
                .await
                .map_err(|e| CliError::from(e).context(&ctx_msg))?
        };
        if rows.is_empty() {
            println!("  No migrations applied");
        }
        for r in rows {
            println!(
                "  {}  {}  by {}  {} ms",
                format_time(r.applied_at),
                r.filename,
                r.applied_by.as_deref().unwrap_or("?"),
                r.execution_time_ms
                    .map_or_else(|| "?".to_owned(), |v| v.to_string())
            );
        }
    }
    db.close().await;
    Ok(())
}

async fn repair(ctx: &Ctx, module: Option<&str>) -> CliResult<()> {
    let t = single_target(ctx, module, "repair")?;
    if !t.path.is_dir() {
        return Err(missing_dir(&t));
    }
    let db = ctx.connect().await?;
    let fixed = migrator(ctx, &db, &t)?.repair().await;
    db.close().await;
    let fixed = fixed.map_err(|e| CliError::from(e).context(&format!("module {}", t.label())))?;
    if fixed.is_empty() {
        println!("Nothing to repair: every stored checksum matches its file");
    } else {
        println!("Repaired {} checksum(s):", fixed.len());
        for f in fixed {
            println!("  ✓ {f}");
        }
    }
    Ok(())
}

async fn baseline(ctx: &Ctx, module: Option<&str>, up_to: Option<&str>) -> CliResult<()> {
    let t = single_target(ctx, module, "baseline")?;
    if !t.path.is_dir() {
        return Err(missing_dir(&t));
    }
    let db = ctx.connect().await?;
    let done = migrator(ctx, &db, &t)?.baseline(up_to).await;
    db.close().await;
    let done = done.map_err(|e| CliError::from(e).context(&format!("module {}", t.label())))?;
    if done.is_empty() {
        println!("Nothing to record: every migration file is already recorded");
    } else {
        println!("Recorded {} migration(s) as applied (not run):", done.len());
        for f in done {
            println!("  ✓ {f}");
        }
    }
    Ok(())
}

async fn rollback(ctx: &Ctx, module: Option<&str>, version: &str, yes: bool) -> CliResult<()> {
    let t = single_target(ctx, module, "rollback")?;
    let db = ctx.connect().await?;
    let result = async {
        let m = migrator(ctx, &db, &t)?;
        let applied = m.applied().await?;
        // Python: walk applied migrations from the newest back while their version > VERSION.
        let mut to_remove: Vec<String> = Vec::new();
        for a in applied.values().rev() {
            if a.version().as_str() > version {
                to_remove.push(a.filename.clone());
            } else {
                break;
            }
        }
        if to_remove.is_empty() {
            println!("No migrations to roll back (already at or before version {version})");
            return Ok(());
        }
        println!(
            "Will remove the history records of {} migration(s):",
            to_remove.len()
        );
        for f in &to_remove {
            println!("  - {f}");
        }
        confirm(
            &format!(
                "Remove these records of module {}? Their schema changes are NOT undone",
                t.label()
            ),
            yes,
        )?;
        for f in &to_remove {
            m.rollback_migration(f).await?;
            println!("  ✓ removed record {f}");
        }
        println!(
            "\nNote: only the history records were removed; reverse the schema changes \
             yourself (pgdbm has no down migrations)"
        );
        Ok::<(), CliError>(())
    }
    .await;
    db.close().await;
    result.map_err(|e| e.context(&format!("rollback of {}", t.label())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_filename_follows_python_numbering() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(next_filename(dir.path(), "init").unwrap(), "001_init.sql");
        std::fs::write(dir.path().join("001_a.sql"), "").unwrap();
        std::fs::write(dir.path().join("007_b.sql"), "").unwrap();
        std::fs::write(dir.path().join("010_notes.txt"), "").unwrap();
        assert_eq!(next_filename(dir.path(), "c").unwrap(), "008_c.sql");
    }
}
