//! The `pgdbm` command: migrations, databases and schemas, configured by a `pgdbm.toml` in the
//! format of Python pgdbm 0.5's CLI (or `DATABASE_URL` / `PG*` variables without one).
//!
//! See `docs/cli.md` in the repository. Exit status: 0 on success, 1 on an error (the message
//! on stderr names the problem and the fix), 2 on a usage error.

mod commands;
mod config;
mod context;
mod error;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::context::Ctx;

/// pgdbm - PostgreSQL database manager: migrations, databases and schemas.
#[derive(Debug, Parser)]
#[command(name = "pgdbm", version, about, long_about = None)]
struct Cli {
    /// Configuration file (default ./pgdbm.toml; optional: without it, DATABASE_URL or the PG*
    /// variables are used).
    #[arg(short, long, global = true, env = "PGDBM_CONFIG")]
    config: Option<PathBuf>,
    /// Environment of the configuration file to use (its environments.NAME section).
    #[arg(short, long, global = true, env = "PGDBM_ENV", default_value = "dev")]
    env: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Migration management.
    #[command(subcommand)]
    Migrate(MigrateCmd),
    /// Database management (create, drop, reset, test-connection, info).
    #[command(subcommand)]
    Db(DbCmd),
    /// Schema management.
    #[command(subcommand)]
    Schema(SchemaCmd),
}

/// `pgdbm migrate ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum MigrateCmd {
    /// Apply pending migrations (all modules in dependency order by default).
    Apply {
        /// Only this module.
        #[arg(short, long, conflicts_with = "all")]
        module: Option<String>,
        /// All modules, in dependency order (the default).
        #[arg(long)]
        all: bool,
        /// Show what would be applied without applying anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show applied and pending migrations, flagging changed files.
    Status {
        /// Only this module.
        #[arg(short, long, conflicts_with = "all_modules")]
        module: Option<String>,
        /// All modules (the default).
        #[arg(long)]
        all_modules: bool,
    },
    /// Create a new migration file (NNN_NAME.sql).
    Create {
        /// Name of the migration (ASCII letters, digits, `_`, `-`).
        name: String,
        /// Into this module's migrations directory.
        #[arg(short, long)]
        module: Option<String>,
        /// Into this directory (overrides --module).
        #[arg(long)]
        path: Option<PathBuf>,
        /// Accepted for compatibility with Python pgdbm (SQL is the only kind).
        #[arg(long, hide = true)]
        sql: bool,
    },
    /// Show the most recent history rows.
    History {
        /// Only this module (default: every module).
        #[arg(short, long)]
        module: Option<String>,
        /// Number of rows per module.
        #[arg(short, long, default_value_t = 10)]
        limit: i64,
    },
    /// Rewrite stored checksums of applied files whose content changed.
    Repair(ModuleArg),
    /// Record migration files as applied without running them.
    Baseline {
        #[command(flatten)]
        module: ModuleArg,
        /// Only files sorting at or before this file name.
        #[arg(long)]
        up_to: Option<String>,
    },
    /// Remove the history records of migrations after VERSION (records only: no schema change).
    Rollback {
        #[command(flatten)]
        module: ModuleArg,
        /// Keep migrations up to this version (e.g. `002`).
        #[arg(short = 'v', long)]
        version: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        confirm: bool,
    },
}

/// `--module`, required when the configuration file defines modules.
#[derive(Debug, Args)]
pub(crate) struct ModuleArg {
    /// The module (required when the configuration file defines modules).
    #[arg(short, long)]
    pub(crate) module: Option<String>,
}

/// `pgdbm db ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum DbCmd {
    /// Create the environment's database.
    Create {
        /// Do not ask for confirmation.
        #[arg(long)]
        confirm: bool,
    },
    /// Drop the environment's database (disconnecting its sessions).
    Drop {
        /// Do not ask for confirmation.
        #[arg(long)]
        confirm: bool,
    },
    /// Drop and re-create the environment's database.
    Reset {
        /// Do not ask for confirmation.
        #[arg(long)]
        confirm: bool,
    },
    /// Check that the database can be reached.
    TestConnection,
    /// Server version, size, schemas and connections.
    Info,
}

/// `pgdbm schema ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum SchemaCmd {
    /// List schemas with their table counts and modules.
    List,
    /// Create the schema of a module.
    Create {
        /// The module.
        #[arg(short, long)]
        module: String,
        /// Schema name (default: the module name).
        #[arg(short, long)]
        name: Option<String>,
    },
    /// Show a module's dependencies and the modules depending on it.
    Deps {
        /// The module.
        #[arg(short, long)]
        module: String,
    },
}

/// True for `1`, `true` or `yes` (any case).
fn flag_on(value: Option<String>) -> bool {
    value.is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

fn init_tracing() {
    let debug =
        flag_on(std::env::var("MIGRATION_DEBUG").ok()) || flag_on(std::env::var("DB_DEBUG").ok());
    let filter = if debug {
        tracing_subscriber::EnvFilter::new("pgdbm=debug")
    } else {
        match tracing_subscriber::EnvFilter::try_from_default_env() {
            Ok(f) => f,
            Err(_) => tracing_subscriber::EnvFilter::new("off"),
        }
    };
    // Fails only when a subscriber is already installed: nothing to do then.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn run(cli: Cli) -> error::CliResult<()> {
    let ctx = Ctx::load(cli.config, cli.env)?;
    match cli.command {
        Command::Migrate(cmd) => commands::migrate::run(&ctx, cmd).await,
        Command::Db(cmd) => commands::db::run(&ctx, cmd).await,
        Command::Schema(cmd) => commands::schema::run(&ctx, cmd).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn debug_flags() {
        assert!(flag_on(Some("YES".into())) && flag_on(Some("1".into())));
        assert!(!flag_on(Some("0".into())) && !flag_on(None));
    }
}
