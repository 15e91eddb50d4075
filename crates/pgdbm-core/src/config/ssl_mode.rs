//! [`SslMode`]: TLS modes with libpq's names.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

#[cfg(doc)]
use super::Config;

/// TLS mode, with libpq's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it, plain otherwise (libpq's default).
    #[default]
    Prefer,
    /// Require TLS, without verifying the server certificate.
    Require,
    /// Require TLS and verify the server certificate against the CA.
    VerifyCa,
    /// Require TLS, verify the certificate and that it names the host.
    VerifyFull,
}

impl SslMode {
    /// libpq's name of the mode (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = Error;

    /// Parses libpq's names: `disable`, `allow` (treated as `prefer`), `prefer`, `require`,
    /// `verify-ca`, `verify-full` (case-insensitive, `_` accepted for `-`).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "disable" => Ok(SslMode::Disable),
            "allow" | "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            _ => Err(Error::config(
                "ssl_mode",
                format!(
                    "unknown ssl mode `{s}`; use one of disable, allow, prefer, require, \
                     verify-ca, verify-full"
                ),
            )),
        }
    }
}
