//! [`ChannelBinding`]: whether SCRAM authentication binds itself to the TLS channel, with
//! libpq's names (`channel_binding`).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

#[cfg(doc)]
use super::Config;

/// SCRAM channel binding (`SCRAM-SHA-256-PLUS`, `tls-server-end-point`), libpq's
/// `channel_binding` ([`Config::channel_binding`]).
///
/// Channel binding proves that the server holding the password verifier is the one at the other
/// end of the TLS connection, so a man in the middle with a certificate of its own cannot relay
/// the authentication (even with `ssl_mode = require`, which checks no certificate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChannelBinding {
    /// Never use channel binding (plain `SCRAM-SHA-256` even over TLS).
    Disable,
    /// Use it when the connection is TLS and the server offers `SCRAM-SHA-256-PLUS`
    /// (libpq's default).
    #[default]
    Prefer,
    /// Fail unless the server authenticates with `SCRAM-SHA-256-PLUS`: needs TLS and SCRAM
    /// password authentication on the server; cleartext, MD5 and `trust` are refused.
    Require,
}

impl ChannelBinding {
    /// libpq's name (`disable`, `prefer`, `require`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelBinding::Disable => "disable",
            ChannelBinding::Prefer => "prefer",
            ChannelBinding::Require => "require",
        }
    }
}

impl fmt::Display for ChannelBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelBinding {
    type Err = Error;

    /// Parses `disable`, `prefer` or `require` (case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "disable" => Ok(ChannelBinding::Disable),
            "prefer" => Ok(ChannelBinding::Prefer),
            "require" => Ok(ChannelBinding::Require),
            _ => Err(Error::config(
                "channel_binding",
                format!(
                    "unknown channel_binding `{}`; use disable, prefer or require",
                    s.escape_debug()
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in [
            ChannelBinding::Disable,
            ChannelBinding::Prefer,
            ChannelBinding::Require,
        ] {
            assert_eq!(m.to_string().parse::<ChannelBinding>().unwrap(), m);
        }
        assert_eq!(
            " REQUIRE ".parse::<ChannelBinding>().unwrap(),
            ChannelBinding::Require
        );
        let e = "always".parse::<ChannelBinding>().unwrap_err();
        assert!(e.to_string().contains("disable, prefer or require"), "{e}");
    }
}
