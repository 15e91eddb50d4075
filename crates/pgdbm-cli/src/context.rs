//! What every command needs: the configuration file (if any), the environment, connections.

use std::path::PathBuf;

use crate::config::{tune_for_cli, FileConfig, DEFAULT_SCHEMA};
use crate::error::{CliError, CliResult};

/// Default configuration file, in the working directory.
pub(crate) const DEFAULT_CONFIG: &str = "pgdbm.toml";

/// Loaded settings of one invocation.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// The parsed configuration file; `None` when there is none.
    pub(crate) file: Option<FileConfig>,
    /// Where the file is (or would be).
    pub(crate) config_path: PathBuf,
    /// The environment name.
    pub(crate) env: String,
}

impl Ctx {
    /// Loads `--config` (an error when given and missing) or `./pgdbm.toml` (optional).
    pub(crate) fn load(config: Option<PathBuf>, env: String) -> CliResult<Ctx> {
        let explicit = config.is_some();
        let config_path = config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        let file = if config_path.exists() {
            Some(FileConfig::load(&config_path)?)
        } else if explicit {
            return Err(CliError::new(format!(
                "configuration file {} not found; fix the --config path (or PGDBM_CONFIG)",
                config_path.display()
            )));
        } else {
            None
        };
        Ok(Ctx {
            file,
            config_path,
            env,
        })
    }

    /// The configuration file, or an error saying that `what` needs one.
    pub(crate) fn require_file(&self, what: &str) -> CliResult<&FileConfig> {
        self.file.as_ref().ok_or_else(|| {
            CliError::new(format!(
                "{what} needs a configuration file with modules; {} does not exist (create it or \
                 pass --config)",
                self.config_path.display()
            ))
        })
    }

    /// True when the configuration file defines modules.
    pub(crate) fn has_modules(&self) -> bool {
        self.file.as_ref().is_some_and(|f| !f.modules.is_empty())
    }

    /// The history table name.
    pub(crate) fn migrations_table(&self) -> &str {
        self.file
            .as_ref()
            .map_or(crate::config::DEFAULT_MIGRATIONS_TABLE, |f| {
                f.migrations_table()
            })
    }

    /// The connection config of the environment (tuned for the CLI).
    pub(crate) fn db_config(&self) -> CliResult<pgdbm::Config> {
        let mut config = match &self.file {
            Some(file) => {
                let env = file.environments.get(&self.env).ok_or_else(|| {
                    let known: Vec<&str> = file.environments.keys().map(String::as_str).collect();
                    CliError::new(format!(
                        "no [environments.{}] in {}; add it, or choose another environment with \
                         --env / PGDBM_ENV (configured: {})",
                        self.env,
                        self.config_path.display(),
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ))
                })?;
                env.to_db_config(&self.env, &|k: &str| std::env::var(k).ok())?
            }
            None => {
                let mut c = pgdbm::Config::from_env().map_err(|e| {
                    CliError::new(format!(
                        "no configuration file ({}) and the environment is not usable: {e}; set \
                         DATABASE_URL, or create a pgdbm.toml",
                        self.config_path.display()
                    ))
                })?;
                if c.schema.is_none() {
                    c.schema = Some(DEFAULT_SCHEMA.to_owned());
                }
                c
            }
        };
        tune_for_cli(&mut config);
        Ok(config)
    }

    /// Where the connection settings come from, for error messages.
    pub(crate) fn source_hint(&self) -> String {
        match &self.file {
            Some(_) => format!(
                "check [environments.{}] in {} and that the server is running",
                self.env,
                self.config_path.display()
            ),
            None => "check DATABASE_URL (or the PG* variables) and that the server is running"
                .to_owned(),
        }
    }

    /// Connects with `config`; a failure names the (masked) target and the fix.
    pub(crate) async fn connect_with(&self, config: pgdbm::Config) -> CliResult<pgdbm::Db> {
        let masked = config.dsn_masked();
        pgdbm::Db::connect(config).await.map_err(|e| {
            CliError::new(format!(
                "cannot connect to {masked}: {e}; {}",
                self.source_hint()
            ))
        })
    }

    /// Connects to the environment's database.
    pub(crate) async fn connect(&self) -> CliResult<pgdbm::Db> {
        let config = self.db_config()?;
        self.connect_with(config).await
    }
}
