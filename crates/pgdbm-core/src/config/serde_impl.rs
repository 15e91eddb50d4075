//! `serde::Deserialize` for [`Config`](super::Config) (feature `serde`): every field by its name,
//! missing fields keep their defaults, unknown fields are an error, durations are float seconds
//! (Python pgdbm's unit), [`SslMode`] and [`ResetPolicy`] their names.
//!
//! ```
//! # #[cfg(feature = "serde")] {
//! #[derive(serde::Deserialize)]
//! struct App { database: pgdbm_core::Config }
//! # }
//! ```

use std::time::Duration;

use serde::de::{Deserialize, Deserializer, Error as _};

use super::{
    duration_from_secs, ChannelBinding, LoadBalanceHosts, RequireAuth, ResetPolicy, SslMode,
    TargetSessionAttrs,
};

/// `Duration` fields as float seconds.
pub(super) mod secs {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        duration_from_secs("duration", v).map_err(D::Error::custom)
    }
}

/// `Option<Duration>` fields as float seconds (`null` = `None` in formats that have it).
pub(super) mod opt_secs {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<f64>::deserialize(d)? {
            None => Ok(None),
            Some(v) => duration_from_secs("duration", v)
                .map(Some)
                .map_err(D::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for SslMode {
    /// libpq's names, as [`SslMode::from_str`](std::str::FromStr).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

impl<'de> Deserialize<'de> for ChannelBinding {
    /// libpq's names, as [`ChannelBinding::from_str`](std::str::FromStr).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

impl<'de> Deserialize<'de> for RequireAuth {
    /// libpq's list, as [`RequireAuth::from_str`](std::str::FromStr).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

impl<'de> Deserialize<'de> for ResetPolicy {
    /// `rollback` or `full`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

impl<'de> Deserialize<'de> for TargetSessionAttrs {
    /// libpq's names, as [`TargetSessionAttrs::from_str`](std::str::FromStr).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

impl<'de> Deserialize<'de> for LoadBalanceHosts {
    /// `disable` or `random`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn toml_fills_fields_and_keeps_defaults() {
        let c: Config = toml::from_str(
            r#"
            host = "db"
            port = 6432
            schema = "app"
            ssl_mode = "verify-full"
            channel_binding = "require"
            require_auth = "scram-sha-256"
            command_timeout = 2.5
            connect_timeout = 3
            reset_on_release = "full"
            server_settings = { work_mem = "64MB" }
            target_session_attrs = "read-write"
            load_balance_hosts = "random"
            fallback_hosts = [["db2", 6433]]
            "#,
        )
        .unwrap();
        assert_eq!((c.host.as_str(), c.port), ("db", 6432));
        assert_eq!(c.channel_binding, ChannelBinding::Require);
        assert_eq!(
            c.require_auth.as_ref().map(ToString::to_string).as_deref(),
            Some("scram-sha-256")
        );
        assert_eq!(c.ssl_mode, SslMode::VerifyFull);
        assert_eq!(c.command_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.reset_on_release, ResetPolicy::Full);
        assert_eq!(c.server_settings["work_mem"], "64MB");
        assert_eq!(c.database, Config::default().database);
        assert_eq!(c.target_session_attrs, TargetSessionAttrs::ReadWrite);
        assert_eq!(c.load_balance_hosts, LoadBalanceHosts::Random);
        assert_eq!(c.fallback_hosts, vec![("db2".to_string(), 6433)]);
        assert!(toml::from_str::<Config>("target_session_attrs = \"master\"").is_err());
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
        assert!(toml::from_str::<Config>("lock_timeout = -1.0").is_err());
        assert!(toml::from_str::<Config>("ssl_mode = \"sometimes\"").is_err());
    }
}
