//! `pgdbm db ...` (Python: `pgdbm/cli/commands/db.py`).

use pgdbm::Row;

use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::util::{confirm, format_size};
use crate::DbCmd;

/// Maintenance database used to create and drop databases.
const MAINTENANCE_DB: &str = "postgres";

/// Runs a `db` subcommand.
pub(crate) async fn run(ctx: &Ctx, cmd: DbCmd) -> CliResult<()> {
    match cmd {
        DbCmd::Create { confirm: yes } => {
            let (name, admin) = target(ctx)?;
            confirm(
                &format!("Create database '{name}' in environment '{}'?", ctx.env),
                yes,
            )?;
            create(ctx, &name, admin).await
        }
        DbCmd::Drop { confirm: yes } => {
            let (name, admin) = target(ctx)?;
            confirm(
                &format!(
                    "Drop database '{name}' in environment '{}'? This cannot be undone!",
                    ctx.env
                ),
                yes,
            )?;
            drop_db(ctx, &name, admin).await
        }
        DbCmd::Reset { confirm: yes } => {
            let (name, admin) = target(ctx)?;
            confirm(
                &format!(
                    "Reset database '{name}' in environment '{}'? This deletes all its data!",
                    ctx.env
                ),
                yes,
            )?;
            drop_db(ctx, &name, admin.clone()).await?;
            create(ctx, &name, admin).await?;
            println!("✓ Database reset complete");
            Ok(())
        }
        DbCmd::TestConnection => test_connection(ctx).await,
        DbCmd::Info => info(ctx).await,
    }
}

/// The environment's (validated) database name and a config for the maintenance database on
/// the same server.
fn target(ctx: &Ctx) -> CliResult<(String, pgdbm::Config)> {
    let config = ctx.db_config()?;
    let name = config.database.clone();
    pgdbm::validate_identifier(&name).map_err(|e| {
        CliError::new(format!(
            "the database name `{}` cannot be created or dropped by pgdbm: {e}; use a name of \
             letters, digits and `_` starting with a letter or `_`",
            name.escape_debug()
        ))
    })?;
    if name == MAINTENANCE_DB {
        return Err(CliError::new(format!(
            "the environment points at the `{MAINTENANCE_DB}` maintenance database; set the \
             application's database name in its connection settings"
        )));
    }
    let mut admin = config;
    admin.database = MAINTENANCE_DB.to_owned();
    admin.schema = None;
    Ok((name, admin))
}

async fn create(ctx: &Ctx, name: &str, admin: pgdbm::Config) -> CliResult<()> {
    let db = ctx.connect_with(admin).await?;
    let result = async {
        let exists: Option<i32> = db
            .fetch_value("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?;
        if exists.is_some() {
            println!("Database '{name}' already exists");
            return Ok(());
        }
        let sql = format!("CREATE DATABASE {}", pgdbm::quote_identifier(name)?);
        db.acquire().await?.batch_execute(sql.as_str()).await?;
        println!("✓ Created database '{name}'");
        Ok::<(), pgdbm::Error>(())
    }
    .await;
    db.close().await;
    result.map_err(|e| CliError::from(e).context(&format!("creating database `{name}`")))
}

async fn drop_db(ctx: &Ctx, name: &str, admin: pgdbm::Config) -> CliResult<()> {
    let db = ctx.connect_with(admin).await?;
    let result = async {
        db.fetch_all(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )
        .await?;
        let sql = format!("DROP DATABASE IF EXISTS {}", pgdbm::quote_identifier(name)?);
        db.acquire().await?.batch_execute(sql.as_str()).await?;
        println!("✓ Dropped database '{name}'");
        Ok::<(), pgdbm::Error>(())
    }
    .await;
    db.close().await;
    result.map_err(|e| CliError::from(e).context(&format!("dropping database `{name}`")))
}

async fn test_connection(ctx: &Ctx) -> CliResult<()> {
    let config = ctx.db_config()?;
    let masked = config.dsn_masked();
    let db = ctx
        .connect_with(config)
        .await
        .map_err(|e| CliError::new(format!("Connection failed: {e}")))?;
    let result = async {
        let row = db
            .fetch_one(
                "SELECT version(), current_database()::text, \
                 pg_size_pretty(pg_database_size(current_database()))",
                &[],
            )
            .await?
            .ok_or_else(|| pgdbm::Error::config("query", "the server returned no row"))?;
        let version: String = row.try_get(0usize)?;
        let name: String = row.try_get(1usize)?;
        let size: String = row.try_get(2usize)?;
        println!("✓ Connection successful!");
        println!("  Connection: {masked}");
        println!("  PostgreSQL: {}", version.split(',').next().unwrap_or(""));
        println!("  Database: {name}");
        println!("  Size: {size}");
        Ok::<(), pgdbm::Error>(())
    }
    .await;
    db.close().await;
    result.map_err(|e| CliError::new(format!("Connection failed: {e}")))
}

async fn info(ctx: &Ctx) -> CliResult<()> {
    let config = ctx.db_config()?;
    let masked = config.dsn_masked();
    let db = ctx.connect_with(config).await?;
    let result = async {
        let debugger = pgdbm::Debugger::new(&db);
        let version: Option<String> = db.fetch_value("SELECT version()", &[]).await?;
        let name: Option<String> = db
            .fetch_value("SELECT current_database()::text", &[])
            .await?;
        let health = debugger.database_health().await?;
        let conns = health.connection_info;
        println!("Database: {}", name.unwrap_or_default());
        println!("Connection: {masked}");
        println!(
            "Version: {}",
            version
                .as_deref()
                .and_then(|v| v.split(',').next())
                .unwrap_or("")
        );
        println!("Size: {}", format_size(health.database_size_bytes));
        if let Some(ratio) = health.cache_hit_ratio {
            println!("Cache hit ratio: {:.1}%", ratio * 100.0);
        }
        println!();
        println!("Schemas:");
        for (schema, tables) in super::schema::schemas_with_tables(&db).await? {
            println!("  - {schema} ({tables} tables)");
        }
        println!();
        println!("Connections to this database:");
        println!(
            "  Total: {} (active {}, idle {}, idle in transaction {}, waiting {})",
            conns.total, conns.active, conns.idle, conns.idle_in_transaction, conns.waiting
        );
        println!("  Server max_connections: {}", conns.max_connections);
        if !health.warnings.is_empty() {
            println!();
            println!("Warnings:");
            for w in &health.warnings {
                println!("  - {w}");
            }
        }
        Ok::<(), pgdbm::Error>(())
    }
    .await;
    db.close().await;
    result.map_err(|e| CliError::from(e).context("reading database information"))
}
