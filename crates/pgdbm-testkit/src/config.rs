//! [`TestConfig`]: the port of Python pgdbm's `DatabaseTestConfig`.

use std::fmt;

use pgdbm_core::{Config, Error, Result};

/// Where test databases live when an existing server is used; the port of the reference's
/// `DatabaseTestConfig`.
///
/// Defaults: `localhost:5432`, user and password `postgres`, database prefix `test_`, quiet.
/// `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TestConfig {
    /// Server host (`TEST_DB_HOST`, default `localhost`).
    pub host: String,
    /// Server port (`TEST_DB_PORT`, default 5432).
    pub port: u16,
    /// User (`TEST_DB_USER`, default `postgres`); must be allowed to create databases.
    pub user: String,
    /// Password (`TEST_DB_PASSWORD`, default `postgres`).
    pub password: String,
    /// Prefix of generated test database names (default `test_`).
    pub test_prefix: String,
    /// Verbose logging (`TEST_DB_VERBOSE`).
    pub verbose: bool,
    /// Log SQL statements (`TEST_DB_LOG_SQL`).
    pub log_sql: bool,
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig {
            host: "localhost".to_string(),
            port: 5432,
            user: "postgres".to_string(),
            password: "postgres".to_string(),
            test_prefix: "test_".to_string(),
            verbose: false,
            log_sql: false,
        }
    }
}

impl fmt::Debug for TestConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"***")
            .field("test_prefix", &self.test_prefix)
            .field("verbose", &self.verbose)
            .field("log_sql", &self.log_sql)
            .finish()
    }
}

/// The environment variable that selects an existing server instead of a throwaway one.
pub const TEST_DB_HOST_ENV: &str = "TEST_DB_HOST";

impl TestConfig {
    /// Reads `TEST_DB_HOST`, `TEST_DB_PORT`, `TEST_DB_USER`, `TEST_DB_PASSWORD`,
    /// `TEST_DB_VERBOSE` and `TEST_DB_LOG_SQL`; unset variables keep their defaults.
    ///
    /// # Errors
    /// [`Error::Configuration`] naming the variable when `TEST_DB_PORT` is not a port number or a
    /// boolean variable is not one of `1/0/true/false/yes/no/on/off`.
    pub fn from_env() -> Result<TestConfig> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// [`from_env`](Self::from_env) when `TEST_DB_HOST` is set (and not empty), else `None`:
    /// the signal to use an existing server instead of starting one.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_env_if_set() -> Result<Option<TestConfig>> {
        Self::from_lookup_if_set(|key| std::env::var(key).ok())
    }

    fn from_lookup_if_set(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<TestConfig>> {
        if lookup(TEST_DB_HOST_ENV).is_some_and(|h| !h.trim().is_empty()) {
            Self::from_lookup(lookup).map(Some)
        } else {
            Ok(None)
        }
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<TestConfig> {
        let mut config = TestConfig::default();
        if let Some(host) = lookup(TEST_DB_HOST_ENV).filter(|h| !h.trim().is_empty()) {
            config.host = host.trim().to_string();
        }
        if let Some(port) = lookup("TEST_DB_PORT").filter(|p| !p.trim().is_empty()) {
            config.port = port
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    Error::config(
                        "TEST_DB_PORT",
                        format!("`{port}` is not a port number: use 1-65535, e.g. 5432"),
                    )
                })?;
        }
        if let Some(user) = lookup("TEST_DB_USER").filter(|u| !u.is_empty()) {
            config.user = user;
        }
        if let Some(password) = lookup("TEST_DB_PASSWORD") {
            config.password = password;
        }
        if let Some(v) = lookup("TEST_DB_VERBOSE") {
            config.verbose = parse_bool("TEST_DB_VERBOSE", &v)?;
        }
        if let Some(v) = lookup("TEST_DB_LOG_SQL") {
            config.log_sql = parse_bool("TEST_DB_LOG_SQL", &v)?;
        }
        Ok(config)
    }

    /// A pgdbm [`Config`] for `database` on this server.
    pub fn to_config(&self, database: &str) -> Config {
        let mut config = Config::default();
        config.host = self.host.clone();
        config.port = self.port;
        config.user = self.user.clone();
        config.password = Some(self.password.clone());
        config.database = database.to_string();
        config
    }
}

fn parse_bool(field: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" => Ok(false),
        "1" | "true" | "yes" | "on" => Ok(true),
        _ => Err(Error::config(
            field,
            format!("`{value}` is not a boolean: use true/false, 1/0, yes/no or on/off"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_match_the_reference() {
        let c = TestConfig::from_lookup(env(&[])).unwrap();
        assert_eq!(c, TestConfig::default());
        assert_eq!(
            (
                c.host.as_str(),
                c.port,
                c.user.as_str(),
                c.password.as_str()
            ),
            ("localhost", 5432, "postgres", "postgres")
        );
        assert_eq!(c.test_prefix, "test_");
        assert!(!c.verbose && !c.log_sql);
    }

    #[test]
    fn reads_every_variable() {
        let c = TestConfig::from_lookup(env(&[
            ("TEST_DB_HOST", "db.example"),
            ("TEST_DB_PORT", "6543"),
            ("TEST_DB_USER", "alice"),
            ("TEST_DB_PASSWORD", "s3cr3t"),
            ("TEST_DB_VERBOSE", "true"),
            ("TEST_DB_LOG_SQL", "1"),
        ]))
        .unwrap();
        assert_eq!(c.host, "db.example");
        assert_eq!(c.port, 6543);
        assert_eq!(c.user, "alice");
        assert_eq!(c.password, "s3cr3t");
        assert!(c.verbose && c.log_sql);
        let cfg = c.to_config("test_x");
        assert_eq!(cfg.database, "test_x");
        assert_eq!(cfg.password.as_deref(), Some("s3cr3t"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for port in ["0", "70000", "abc", "-1"] {
            let err = TestConfig::from_lookup(env(&[("TEST_DB_PORT", port)])).unwrap_err();
            assert!(
                matches!(&err, Error::Configuration { field, .. } if field == "TEST_DB_PORT"),
                "{err}"
            );
        }
        let err = TestConfig::from_lookup(env(&[("TEST_DB_VERBOSE", "maybe")])).unwrap_err();
        assert!(err.to_string().contains("TEST_DB_VERBOSE"), "{err}");
    }

    #[test]
    fn only_a_set_host_selects_an_external_server() {
        assert!(TestConfig::from_lookup_if_set(env(&[])).unwrap().is_none());
        assert!(
            TestConfig::from_lookup_if_set(env(&[("TEST_DB_HOST", " ")]))
                .unwrap()
                .is_none()
        );
        let c = TestConfig::from_lookup_if_set(env(&[("TEST_DB_HOST", "h")])).unwrap();
        assert_eq!(c.map(|c| c.host), Some("h".to_string()));
    }

    #[test]
    fn debug_hides_the_password() {
        let c = TestConfig {
            password: "hunter2-very-secret".into(),
            ..TestConfig::default()
        };
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("***"));
    }
}
