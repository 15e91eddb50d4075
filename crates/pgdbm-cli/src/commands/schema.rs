//! `pgdbm schema ...` (Python: `pgdbm/cli/commands/schema.py`).

use std::collections::HashSet;

use pgdbm::Row;

use crate::config::FileConfig;
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::SchemaCmd;

/// Runs a `schema` subcommand.
pub(crate) async fn run(ctx: &Ctx, cmd: SchemaCmd) -> CliResult<()> {
    match cmd {
        SchemaCmd::List => list(ctx).await,
        SchemaCmd::Create { module, name } => create(ctx, &module, name.as_deref()).await,
        SchemaCmd::Deps { module } => deps(ctx, &module),
    }
}

/// User schemas (not `pg_*` or `information_schema`) with their number of tables.
pub(crate) async fn schemas_with_tables(db: &pgdbm::Db) -> pgdbm::Result<Vec<(String, i64)>> {
    let rows = db
        .fetch_all(
            "SELECT n.nspname::text, \
                    count(c.oid) FILTER (WHERE c.relkind IN ('r', 'p'))::bigint \
             FROM pg_catalog.pg_namespace n \
             LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid \
             WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' \
             GROUP BY n.nspname ORDER BY n.nspname",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0usize)?, r.try_get(1usize)?)))
        .collect()
}

async fn list(ctx: &Ctx) -> CliResult<()> {
    let db = ctx.connect().await?;
    let env_schema = db.schema().unwrap_or("public").to_owned();
    let schemas = schemas_with_tables(&db).await;
    db.close().await;
    let schemas = schemas.map_err(|e| CliError::from(e).context("listing schemas"))?;
    let modules = ctx.file.as_ref().map(|f| &f.modules);
    println!("Database Schemas:");
    for (schema, tables) in &schemas {
        let owners: Vec<&str> = modules
            .into_iter()
            .flatten()
            .filter(|(_, m)| m.schema.as_deref().unwrap_or(env_schema.as_str()) == schema)
            .map(|(n, _)| n.as_str())
            .collect();
        if owners.is_empty() {
            println!("  {schema} ({tables} tables)");
        } else {
            println!(
                "  {schema} ({tables} tables) - module: {}",
                owners.join(", ")
            );
        }
    }
    if let Some(modules) = modules.filter(|m| !m.is_empty()) {
        println!("\nConfigured Modules:");
        for (name, m) in modules {
            let schema = m.schema.as_deref().unwrap_or(env_schema.as_str());
            let missing = if schemas.iter().any(|(s, _)| s == schema) {
                ""
            } else {
                " (schema not created yet)"
            };
            println!("  {name} → {schema}{missing}");
            if !m.depends_on.is_empty() {
                println!("    depends on: {}", m.depends_on.join(", "));
            }
        }
    }
    Ok(())
}

async fn create(ctx: &Ctx, module: &str, name: Option<&str>) -> CliResult<()> {
    let schema = name.unwrap_or(module);
    let quoted = pgdbm::quote_identifier(schema).map_err(|e| {
        CliError::new(format!(
            "invalid schema name `{}`: {e}; pass --name with letters, digits and `_`",
            schema.escape_debug()
        ))
    })?;
    let db = ctx.connect().await?;
    let result = async {
        let exists: Option<i32> = db
            .fetch_value(
                "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1",
                &[&schema],
            )
            .await?;
        if exists.is_some() {
            println!("Schema '{schema}' already exists");
            return Ok(false);
        }
        db.acquire()
            .await?
            .batch_execute(format!("CREATE SCHEMA {quoted}").as_str())
            .await?;
        println!("✓ Created schema '{schema}'");
        Ok::<bool, pgdbm::Error>(true)
    }
    .await;
    db.close().await;
    let created = result.map_err(|e| CliError::from(e).context("creating the schema"))?;
    let configured = ctx
        .file
        .as_ref()
        .and_then(|f| f.modules.get(module))
        .is_some_and(|m| m.schema.as_deref() == Some(schema));
    if created && !configured {
        println!("\nUpdate your pgdbm.toml to use this schema:");
        println!("  [modules.{module}]");
        println!("  schema = \"{schema}\"");
    }
    Ok(())
}

fn deps(ctx: &Ctx, module: &str) -> CliResult<()> {
    let file = ctx.require_file("`schema deps`")?;
    file.module(module)?;
    println!("Dependencies for {module}:");
    for line in dep_tree(file, module) {
        println!("{line}");
    }
    let reverse: Vec<&str> = file
        .modules
        .iter()
        .filter(|(_, m)| m.depends_on.iter().any(|d| d == module))
        .map(|(n, _)| n.as_str())
        .collect();
    if !reverse.is_empty() {
        println!("\nModules that depend on {module}:");
        for r in reverse {
            println!("  - {r}");
        }
    }
    Ok(())
}

/// Lines of the dependency tree of `module` (unknown modules marked, cycles cut).
fn dep_tree(file: &FileConfig, module: &str) -> Vec<String> {
    fn walk(
        file: &FileConfig,
        name: &str,
        level: usize,
        path: &mut HashSet<String>,
        out: &mut Vec<String>,
    ) {
        let indent = "  ".repeat(level);
        let Some(m) = file.modules.get(name) else {
            out.push(format!("{indent}{name} (not configured)"));
            return;
        };
        if !path.insert(name.to_owned()) {
            out.push(format!("{indent}{name} (circular dependency)"));
            return;
        }
        out.push(format!(
            "{indent}{name} → {}",
            m.schema.as_deref().unwrap_or("public")
        ));
        for d in &m.depends_on {
            walk(file, d, level + 1, path, out);
        }
        path.remove(name);
    }
    let mut out = Vec::new();
    walk(file, module, 0, &mut HashSet::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn dep_tree_cuts_cycles() {
        let f = FileConfig::parse(
            "[modules.a]\nmigrations_path = \"a\"\nschema = \"sa\"\ndepends_on = [\"b\", \"x\"]\n\
             [modules.b]\nmigrations_path = \"b\"\ndepends_on = [\"a\"]\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(
            dep_tree(&f, "a"),
            vec![
                "a → sa",
                "  b → public",
                "    a (circular dependency)",
                "  x (not configured)"
            ]
        );
    }
}
