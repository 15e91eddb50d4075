//! [`ConfigBuilder`]: a [`Config`] built step by step and validated once at the end.

use std::time::Duration;

use super::{Config, SslMode};
use crate::error::{Error, Result};

/// Builds a [`Config`]: `Config::builder().url(..).schema(..).build()?`.
///
/// Steps apply in order, so the last write to a field wins: `.ssl_mode(Require).url("...?sslmode=prefer")`
/// ends with `prefer` (the URL states it explicitly), `.url("...?sslmode=prefer").ssl_mode(Require)`
/// with `require`; a URL only overwrites the fields it mentions. [`build`](ConfigBuilder::build)
/// returns the first error of a step (such as an unparsable URL), else the result of
/// [`Config::validate`].
///
/// ```
/// use pgdbm_core::{Config, SslMode};
/// let c = Config::builder()
///     .url("postgresql://app@db:6432/shop")
///     .schema("tenant1")
///     .max_connections(5)
///     .min_connections(1)
///     .ssl_mode(SslMode::Require)
///     .build()?;
/// assert_eq!((c.port, c.schema.as_deref(), c.ssl_mode), (6432, Some("tenant1"), SslMode::Require));
/// assert!(Config::builder().max_connections(0).build().is_err());
/// # Ok::<(), pgdbm_core::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "call .build() to get the Config"]
pub struct ConfigBuilder {
    config: Config,
    error: Option<Error>,
}

impl Config {
    /// A [`ConfigBuilder`] starting from [`Config::default`].
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::from(Config::default())
    }
}

impl From<Config> for ConfigBuilder {
    /// A builder starting from `config` (for instance [`Config::from_env`]'s result).
    fn from(config: Config) -> Self {
        ConfigBuilder {
            config,
            error: None,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => |$c:ident, $v:ident| $body:expr;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $v: $ty) -> Self {
                let $c = &mut self.config;
                $body;
                self
            }
        )*
    };
}

impl ConfigBuilder {
    /// Applies a URL or `key=value` string ([`Config::apply_url`]): the parameters it gives
    /// overwrite the fields set so far, the others are kept.
    pub fn url(mut self, url: &str) -> Self {
        if self.error.is_none() {
            if let Err(e) = self.config.apply_url(url) {
                self.error = Some(e);
            }
        }
        self
    }

    setters! {
        /// Sets [`Config::host`].
        host: impl Into<String> => |c, v| c.host = v.into();
        /// Sets [`Config::port`].
        port: u16 => |c, v| c.port = v;
        /// Sets [`Config::database`].
        database: impl Into<String> => |c, v| c.database = v.into();
        /// Sets [`Config::user`].
        user: impl Into<String> => |c, v| c.user = v.into();
        /// Sets [`Config::password`].
        password: impl Into<String> => |c, v| c.password = Some(v.into());
        /// Sets [`Config::schema`].
        schema: impl Into<String> => |c, v| c.schema = Some(v.into());
        /// Sets [`Config::min_connections`].
        min_connections: usize => |c, v| c.min_connections = v;
        /// Sets [`Config::max_connections`].
        max_connections: usize => |c, v| c.max_connections = v;
        /// Sets [`Config::ssl_mode`].
        ssl_mode: SslMode => |c, v| c.ssl_mode = v;
        /// Sets [`Config::target_session_attrs`].
        target_session_attrs: super::TargetSessionAttrs => |c, v| c.target_session_attrs = v;
        /// Sets [`Config::load_balance_hosts`].
        load_balance_hosts: super::LoadBalanceHosts => |c, v| c.load_balance_hosts = v;
        /// Sets [`Config::application_name`].
        application_name: impl Into<String> => |c, v| c.application_name = Some(v.into());
        /// Sets [`Config::command_timeout`] (`None` = no client-side timeout).
        command_timeout: Option<Duration> => |c, v| c.command_timeout = v;
        /// Sets [`Config::statement_timeout`] (`None` keeps the server's).
        statement_timeout: Option<Duration> => |c, v| c.statement_timeout = v;
        /// Sets [`Config::connect_timeout`].
        connect_timeout: Duration => |c, v| c.connect_timeout = v;
        /// Sets [`Config::acquire_timeout`].
        acquire_timeout: Duration => |c, v| c.acquire_timeout = v;
        /// Sets [`Config::statement_cache_size`].
        statement_cache_size: usize => |c, v| c.statement_cache_size = v;
        /// Sets [`Config::statement_mode`].
        statement_mode: crate::config::StatementMode => |c, v| c.statement_mode = v;
        /// Sets [`Config::log_parameters`].
        log_parameters: bool => |c, v| c.log_parameters = v;
        /// Adds an init command ([`Config::init_commands`]).
        init_command: impl Into<String> => |c, v| c.init_commands.push(v.into());
    }

    /// Sets one entry of [`Config::server_settings`].
    pub fn server_setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.server_settings.insert(key.into(), value.into());
        self
    }

    /// Changes any other field: `.with(|c| c.retry_attempts = 5)`.
    pub fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    /// The config: the first failed step's error, else [`Config::validate`]'s verdict.
    pub fn build(self) -> Result<Config> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_write_wins_between_url_and_setters() {
        let url = "postgresql://u@h/db?sslmode=prefer";
        let c = Config::builder()
            .ssl_mode(SslMode::Require)
            .url(url)
            .build()
            .unwrap();
        assert_eq!(
            c.ssl_mode,
            SslMode::Prefer,
            "explicit URL parameter written last wins"
        );
        let c = Config::builder()
            .url(url)
            .ssl_mode(SslMode::Require)
            .build()
            .unwrap();
        assert_eq!(c.ssl_mode, SslMode::Require);
        // A URL without sslmode leaves the field alone.
        let c = Config::builder()
            .ssl_mode(SslMode::Require)
            .url("postgresql://u@h2:6000/db2")
            .build()
            .unwrap();
        assert_eq!(
            (c.ssl_mode, c.host.as_str(), c.port),
            (SslMode::Require, "h2", 6000)
        );
    }

    #[test]
    fn build_reports_step_errors_then_validation() {
        match Config::builder()
            .url("postgresql://h:notaport/db")
            .port(5)
            .build()
        {
            Err(Error::Configuration { field, .. }) => assert_eq!(field, "port"),
            other => panic!("{other:?}"),
        }
        match Config::builder().schema("bad-name").build() {
            Err(Error::Configuration { field, .. }) => assert_eq!(field, "schema"),
            other => panic!("{other:?}"),
        }
        let c = Config::builder()
            .with(|c| c.retry_attempts = 7)
            .server_setting("work_mem", "64MB")
            .init_command("SET x.y = 1")
            .build()
            .unwrap();
        assert_eq!(c.retry_attempts, 7);
        assert_eq!(c.server_settings["work_mem"], "64MB");
        assert_eq!(c.init_commands, vec!["SET x.y = 1".to_string()]);
    }
}
