//! `pgdbm.toml`: the same file format as Python pgdbm 0.5's CLI (`pgdbm/cli/config.py`).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

use crate::error::CliError;

/// Default history table (Python: `DatabaseConfig.migrations_table`).
pub(crate) const DEFAULT_MIGRATIONS_TABLE: &str = "schema_migrations";
/// Schema used when an environment names none (Python's default is `public`).
pub(crate) const DEFAULT_SCHEMA: &str = "public";

/// The whole file (Python: `Config`). Unknown keys are ignored, as pydantic does.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FileConfig {
    /// `[project]`.
    #[serde(default)]
    #[allow(dead_code)] // read for format compatibility only
    pub(crate) project: Option<ProjectConfig>,
    /// `[database]`.
    #[serde(default)]
    pub(crate) database: Option<DatabaseSection>,
    /// `[environments.<name>]`.
    #[serde(default)]
    pub(crate) environments: BTreeMap<String, EnvironmentConfig>,
    /// `[modules.<name>]`, in file order.
    #[serde(default)]
    pub(crate) modules: IndexMap<String, ModuleConfig>,
}

/// `[project]` (Python: `ProjectConfig`).
#[derive(Debug, Deserialize)]
pub(crate) struct ProjectConfig {
    /// Project name (required by Python when `[project]` is present).
    #[allow(dead_code)] // read for format compatibility only
    pub(crate) name: String,
}

/// `[database]` (Python: `DatabaseConfig`).
#[derive(Debug, Deserialize)]
pub(crate) struct DatabaseSection {
    /// History table name.
    #[serde(default = "default_table")]
    pub(crate) migrations_table: String,
}

fn default_table() -> String {
    DEFAULT_MIGRATIONS_TABLE.to_owned()
}

fn default_port() -> u16 {
    5432
}

fn default_mode() -> String {
    "dual".to_owned()
}

/// `[modules.<name>]` (Python: `ModuleConfig`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ModuleConfig {
    /// Directory of the module's `*.sql` files (relative to the working directory).
    pub(crate) migrations_path: String,
    /// Schema of the module (default: the environment's).
    #[serde(default)]
    pub(crate) schema: Option<String>,
    /// `standalone`, `library` or `dual` (informational).
    #[serde(default = "default_mode")]
    #[allow(dead_code)] // informational, as in Python
    pub(crate) mode: String,
    /// Modules whose migrations must run first.
    #[serde(default)]
    pub(crate) depends_on: Vec<String>,
}

/// `[environments.<name>]` (Python: `EnvironmentConfig`). `Debug` hides the password.
#[derive(Clone, Deserialize)]
pub(crate) struct EnvironmentConfig {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    connection_string: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default = "default_port")]
    port: u16,
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    schema: Option<String>,
    #[serde(default)]
    ssl_enabled: bool,
    #[serde(default)]
    ssl_mode: Option<String>,
    #[serde(default)]
    ssl_ca_file: Option<String>,
    #[serde(default)]
    ssl_cert_file: Option<String>,
    #[serde(default)]
    ssl_key_file: Option<String>,
}

impl fmt::Debug for EnvironmentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvironmentConfig")
            .field("url", &self.url.as_deref().map(pgdbm::mask_dsn))
            .field(
                "connection_string",
                &self.connection_string.as_deref().map(pgdbm::mask_dsn),
            )
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("schema", &self.schema)
            .field("ssl_enabled", &self.ssl_enabled)
            .field("ssl_mode", &self.ssl_mode)
            .finish_non_exhaustive()
    }
}

/// Python's `expand_env_vars`: a value that is exactly `${VAR}` becomes the variable's value
/// (`None` when unset); anything else is kept as written.
pub(crate) fn expand_env<F>(value: &str, env: &F) -> Expanded
where
    F: Fn(&str) -> Option<String>,
{
    match value
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
    {
        Some(var) => match env(var) {
            Some(v) => Expanded::Value(v),
            None => Expanded::Unset(var.to_owned()),
        },
        None => Expanded::Value(value.to_owned()),
    }
}

/// Result of [`expand_env`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Expanded {
    /// The value to use.
    Value(String),
    /// `${VAR}` with `VAR` unset.
    Unset(String),
}

impl EnvironmentConfig {
    /// The pgdbm connection config of this environment (Python: `get_connection_config`),
    /// with the environment variables read through `env`.
    pub(crate) fn to_db_config<F>(&self, env_name: &str, env: &F) -> Result<pgdbm::Config, CliError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let mut unset = Vec::new();
        let mut pick = |field: &str, v: &Option<String>| -> Option<String> {
            match v.as_deref().map(|s| expand_env(s, env)) {
                Some(Expanded::Value(s)) => Some(s),
                Some(Expanded::Unset(var)) => {
                    unset.push(format!("{field} = \"${{{var}}}\" but {var} is not set"));
                    None
                }
                None => None,
            }
        };
        let url = pick("url", &self.url);
        let cs = pick("connection_string", &self.connection_string);
        let mut config = match url.or(cs) {
            Some(s) => pgdbm::Config::from_url(&s).map_err(|e| {
                CliError::new(format!(
                    "invalid url/connection_string in [environments.{env_name}]: {e}"
                ))
            })?,
            None => {
                let (Some(host), Some(database)) = (&self.host, &self.database) else {
                    let mut msg = format!(
                        "[environments.{env_name}] has no connection settings: set `url` (or \
                         `connection_string`), or `host` and `database`"
                    );
                    if !unset.is_empty() {
                        msg.push_str(&format!(" ({})", unset.join("; ")));
                    }
                    return Err(CliError::new(msg));
                };
                let mut c = pgdbm::Config::default();
                c.host = host.clone();
                c.port = self.port;
                c.database = database.clone();
                if let Some(user) = &self.user {
                    c.user = user.clone();
                }
                c.password = self.password.clone();
                c
            }
        };
        config.schema = Some(
            self.schema
                .clone()
                .unwrap_or_else(|| DEFAULT_SCHEMA.to_owned()),
        );
        if self.ssl_enabled {
            config.ssl_mode = match &self.ssl_mode {
                Some(m) => pgdbm::SslMode::from_str(m).map_err(|e| {
                    CliError::new(format!(
                        "invalid ssl_mode in [environments.{env_name}]: {e}"
                    ))
                })?,
                None => pgdbm::SslMode::VerifyFull,
            };
            // Python verifies against the system roots when no CA file is given
            // (`ssl.create_default_context`); for verify-full that is libpq's
            // `sslrootcert=system`. verify-ca without a CA file stays a configuration error.
            config.ssl_root_cert = match &self.ssl_ca_file {
                Some(file) => Some(file.into()),
                None if config.ssl_mode == pgdbm::SslMode::VerifyFull => {
                    Some(pgdbm::SYSTEM_ROOT_CERT.into())
                }
                None => None,
            };
            config.ssl_cert = self.ssl_cert_file.as_ref().map(Into::into);
            config.ssl_key = self.ssl_key_file.as_ref().map(Into::into);
        }
        Ok(config)
    }
}

impl FileConfig {
    /// Parses the text of a `pgdbm.toml`.
    ///
    /// Errors name the file, line and key, never the value or the line's text (it may be a
    /// password): see [`describe_toml_error`].
    pub(crate) fn parse(text: &str, path: &Path) -> Result<FileConfig, CliError> {
        toml::from_str(text).map_err(|e| CliError::new(describe_toml_error(text, path, &e)))
    }

    /// Reads and parses `path`.
    pub(crate) fn load(path: &Path) -> Result<FileConfig, CliError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CliError::new(format!(
                "cannot read configuration file {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(&text, path)
    }

    /// The history table name.
    pub(crate) fn migrations_table(&self) -> &str {
        self.database
            .as_ref()
            .map_or(DEFAULT_MIGRATIONS_TABLE, |d| d.migrations_table.as_str())
    }

    /// The module `name`, or an error listing the configured ones.
    pub(crate) fn module(&self, name: &str) -> Result<&ModuleConfig, CliError> {
        self.modules.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.modules.keys().map(String::as_str).collect();
            CliError::new(format!(
                "no module `{name}` in the configuration file; configured modules: {}",
                if known.is_empty() {
                    "none (add a [modules.<name>] section)".to_owned()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    /// Python's `resolve_module_order`: modules ordered so each comes after the modules it
    /// depends on (unknown dependencies are ignored), otherwise in file order.
    pub(crate) fn resolve_module_order(&self) -> Result<Vec<String>, CliError> {
        fn visit(
            node: &str,
            modules: &IndexMap<String, ModuleConfig>,
            visited: &mut HashSet<String>,
            path: &mut Vec<String>,
            out: &mut Vec<String>,
        ) -> Result<(), CliError> {
            if let Some(pos) = path.iter().position(|n| n == node) {
                let mut cycle: Vec<&str> = path[pos..].iter().map(String::as_str).collect();
                cycle.push(node);
                return Err(CliError::new(format!(
                    "circular dependency between modules: {}; remove one of these `depends_on` \
                     entries in the configuration file",
                    cycle.join(" → ")
                )));
            }
            if visited.contains(node) {
                return Ok(());
            }
            path.push(node.to_owned());
            if let Some(m) = modules.get(node) {
                for dep in &m.depends_on {
                    if modules.contains_key(dep) {
                        visit(dep, modules, visited, path, out)?;
                    }
                }
            }
            path.pop();
            visited.insert(node.to_owned());
            out.push(node.to_owned());
            Ok(())
        }
        let mut out = Vec::new();
        let mut visited = HashSet::new();
        for name in self.modules.keys() {
            if !visited.contains(name) {
                visit(name, &self.modules, &mut visited, &mut Vec::new(), &mut out)?;
            }
        }
        Ok(out)
    }
}

/// `invalid configuration file <path>, line N, key `[section] key`: <problem>`, for a TOML
/// error in `text`. The problem is toml's message with every quoted part that comes from the
/// line's value replaced by `…`; when any 4-byte piece of the value would still show, a generic
/// message is used instead. The raw line (which toml's own `Display` prints) is never shown.
pub(crate) fn describe_toml_error(text: &str, path: &Path, e: &toml::de::Error) -> String {
    let at = e.span().map_or(0, |s| s.start).min(text.len());
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_no = text[..line_start].matches('\n').count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    let (key, value) = match line.split_once('=') {
        Some((k, v)) => (Some(k.trim()), v),
        None => (None, line),
    };
    let section = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.split('#').next().unwrap_or(l).trim());
    let mut message = redact(e.message(), value);
    let value_bytes = value.trim().as_bytes();
    let leaks = value_bytes.len() >= 4
        && value_bytes
            .windows(4)
            .any(|w| message.as_bytes().windows(4).any(|m| m == w));
    if leaks || message.trim().is_empty() {
        message = "the value is not valid here (not shown: it may be secret)".to_owned();
    }
    let location = match (section, key) {
        (Some(sec), Some(k)) if line_start > 0 => format!(", key `{k}` in {sec}"),
        (_, Some(k)) => format!(", key `{k}`"),
        (Some(sec), None) => format!(", in {sec}"),
        (None, None) => String::new(),
    };
    format!(
        "invalid configuration file {}, line {line_no}{location}: {message}",
        path.display()
    )
}

/// `message` with each `` `...` `` or `"..."` part whose text occurs in `value` replaced by `…`.
fn redact(message: &str, value: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['`', '"']) {
        let q = &rest[open..open + 1];
        out.push_str(&rest[..open + 1]);
        let after = &rest[open + 1..];
        match after.find(q) {
            Some(close) => {
                let inner = &after[..close];
                if !inner.is_empty() && value.contains(inner) {
                    out.push('…');
                } else {
                    out.push_str(inner);
                }
                out.push_str(q);
                rest = &after[close + 1..];
            }
            None => {
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace('\n', "; ")
}

/// Settings every CLI connection gets: a small pool, one connection attempt (so a wrong
/// host fails fast), and no statement timeouts (a migration may run long).
pub(crate) fn tune_for_cli(config: &mut pgdbm::Config) {
    config.min_connections = 1;
    config.max_connections = 2;
    config.retry_attempts = 1;
    config.command_timeout = None;
    config.statement_timeout = None;
    if config.connect_timeout > Duration::from_secs(10) {
        config.connect_timeout = Duration::from_secs(10);
    }
    config.application_name = Some("pgdbm-cli".to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> FileConfig {
        FileConfig::parse(text, Path::new("pgdbm.toml")).unwrap()
    }

    #[test]
    fn toml_errors_name_file_line_and_key_but_never_the_value() {
        let cases = [
            // Unquoted password: a TOML syntax error on the value.
            "[environments.dev]\nhost = \"h\"\npassword = correct horse battery staple\n",
            // Wrong type: serde's message would quote the value.
            "[environments.dev]\nhost = \"h\"\npassword = 123456789\n",
            "[environments.dev]\nhost = \"h\"\nport = \"sekritvalue\"\n",
        ];
        for (text, secret, key) in [
            (cases[0], "horse", "password"),
            (cases[1], "12345", "password"),
            (cases[2], "sekrit", "port"),
        ] {
            let err = FileConfig::parse(text, Path::new("conf/pgdbm.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("conf/pgdbm.toml"), "{err}");
            assert!(err.contains("line 3"), "{err}");
            assert!(err.contains(&format!("key `{key}`")), "{err}");
            assert!(err.contains("[environments.dev]"), "{err}");
            assert!(!err.contains(secret), "{err}");
            for w in text
                .lines()
                .nth(2)
                .unwrap()
                .split('=')
                .nth(1)
                .unwrap()
                .trim()
                .as_bytes()
                .windows(4)
            {
                let w = std::str::from_utf8(w).unwrap();
                assert!(!err.contains(w), "{w:?} in {err}");
            }
        }
    }

    #[test]
    fn env_expansion_is_whole_value_only_like_python() {
        let env = |k: &str| (k == "DB_URL").then(|| "postgresql://u:pw@h:1/d".to_owned());
        assert_eq!(
            expand_env("${DB_URL}", &env),
            Expanded::Value("postgresql://u:pw@h:1/d".into())
        );
        assert_eq!(expand_env("${NOPE}", &env), Expanded::Unset("NOPE".into()));
        assert_eq!(
            expand_env("x${DB_URL}", &env),
            Expanded::Value("x${DB_URL}".into())
        );
    }

    #[test]
    fn environment_url_from_variable_and_defaults() {
        let c = parse(
            r#"
            [environments.dev]
            url = "${APP_DB}"
            [environments.prod]
            host = "db.example"
            port = 6543
            database = "shop"
            user = "app"
            password = "s3cret"
            schema = "billing"
            "#,
        );
        let env = |k: &str| (k == "APP_DB").then(|| "postgresql://a:pw@h:5433/appdb".to_owned());
        let dev = c.environments["dev"].to_db_config("dev", &env).unwrap();
        assert_eq!(
            (dev.host.as_str(), dev.port, dev.database.as_str()),
            ("h", 5433, "appdb")
        );
        assert_eq!(dev.schema.as_deref(), Some("public"));
        let prod = c.environments["prod"].to_db_config("prod", &env).unwrap();
        assert_eq!((prod.port, prod.user.as_str()), (6543, "app"));
        assert_eq!(prod.schema.as_deref(), Some("billing"));
        assert!(!format!("{:?}", c.environments["prod"]).contains("s3cret"));
        assert!(!prod.to_string().contains("s3cret"));

        let none = |_: &str| None;
        let err = c.environments["dev"]
            .to_db_config("dev", &none)
            .unwrap_err();
        assert!(err.to_string().contains("APP_DB is not set"), "{err}");
    }

    #[test]
    fn ssl_enabled_without_a_ca_file_verifies_against_the_system_roots_like_python() {
        let c = parse(
            r#"
            [environments.a]
            host = "db.example"
            database = "shop"
            ssl_enabled = true
            [environments.b]
            host = "db.example"
            database = "shop"
            ssl_enabled = true
            ssl_ca_file = "/etc/ca.pem"
            "#,
        );
        let none = |_: &str| None;
        let a = c.environments["a"].to_db_config("a", &none).unwrap();
        assert_eq!(a.ssl_mode, pgdbm::SslMode::VerifyFull);
        assert_eq!(
            a.ssl_root_cert.as_deref(),
            Some(std::path::Path::new(pgdbm::SYSTEM_ROOT_CERT))
        );
        a.validate().unwrap();
        let b = c.environments["b"].to_db_config("b", &none).unwrap();
        assert_eq!(
            b.ssl_root_cert.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
    }

    #[test]
    fn module_order_follows_depends_on_then_file_order() {
        let c = parse(
            r#"
            [modules.orders]
            migrations_path = "o"
            depends_on = ["users", "external"]
            [modules.users]
            migrations_path = "u"
            schema = "users"
            [modules.audit]
            migrations_path = "a"
            "#,
        );
        assert_eq!(
            c.resolve_module_order().unwrap(),
            vec!["users", "orders", "audit"]
        );
        assert_eq!(c.modules["users"].mode, "dual");
    }

    #[test]
    fn cycles_are_an_error_naming_the_cycle() {
        let c = parse(
            r#"
            [modules.a]
            migrations_path = "a"
            depends_on = ["b"]
            [modules.b]
            migrations_path = "b"
            depends_on = ["c"]
            [modules.c]
            migrations_path = "c"
            depends_on = ["a"]
            "#,
        );
        let err = c.resolve_module_order().unwrap_err().to_string();
        assert!(err.contains("a → b → c → a"), "{err}");
        assert!(err.contains("depends_on"), "{err}");
    }

    #[test]
    fn missing_migrations_path_is_a_parse_error() {
        let err = FileConfig::parse("[modules.a]\nschema = \"x\"\n", Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("migrations_path") && err.contains("p.toml"),
            "{err}"
        );
    }
}
