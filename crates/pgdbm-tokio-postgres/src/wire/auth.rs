//! [`AuthCheck`]: libpq's `require_auth` and `channel_binding = require`, enforced on the
//! server's authentication requests (`'R'` messages) as the shim reads them, before
//! tokio-postgres answers with a password.
//!
//! tokio-postgres answers whatever the server asks for (cleartext, MD5, SCRAM) and has no
//! `require_auth`; the shim sees the request first and, when the configuration does not allow
//! it, fails the read with [`AuthRefused`], so tokio-postgres never sees the request and never
//! sends the password.

use std::fmt;

use pgdbm_core::{AuthMethod, ChannelBinding, Config, RequireAuth};

/// The SASL mechanism with channel binding.
const SCRAM_PLUS: &[u8] = b"SCRAM-SHA-256-PLUS";

/// What the configuration allows (`require_auth`, `channel_binding`).
#[derive(Debug, Clone, Default)]
pub(crate) struct AuthPolicy {
    require_auth: Option<RequireAuth>,
    channel_binding_required: bool,
}

impl AuthPolicy {
    /// The policy of `config`.
    pub(crate) fn from_config(config: &Config) -> Self {
        AuthPolicy {
            require_auth: config.require_auth.clone(),
            channel_binding_required: config.channel_binding == ChannelBinding::Require,
        }
    }

    /// True when nothing is checked.
    fn is_open(&self) -> bool {
        self.require_auth.is_none() && !self.channel_binding_required
    }
}

/// An authentication request the configuration refuses; the message names the method, the
/// setting and the fix (never a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthRefused(pub(crate) String);

impl fmt::Display for AuthRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthRefused {}

/// The state of one connection's authentication exchange.
#[derive(Debug, Clone)]
pub(crate) struct AuthCheck {
    policy: AuthPolicy,
    /// The stream under the shim is TLS.
    tls: bool,
    /// The server asked for some authentication.
    challenged: bool,
    /// `AuthenticationOk` arrived (or nothing is checked): later messages are not looked at.
    done: bool,
}

impl AuthCheck {
    /// A check of `policy` for a stream that is TLS when `tls`.
    pub(crate) fn new(policy: AuthPolicy, tls: bool) -> Self {
        let done = policy.is_open();
        AuthCheck {
            policy,
            tls,
            challenged: false,
            done,
        }
    }

    /// The same exchange continuing over a TLS stream.
    pub(crate) fn over_tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// True once nothing more is checked.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Checks one `'R'` message, given the start of its body (the `int32` code, then for SASL
    /// the mechanism names).
    pub(crate) fn on_request(&mut self, body: &[u8]) -> Result<(), AuthRefused> {
        if self.done {
            return Ok(());
        }
        let Some(code) = body
            .get(0..4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            return Ok(());
        };
        let method = match code {
            0 => {
                self.done = true;
                if self.challenged {
                    return Ok(());
                }
                AuthMethod::None
            }
            3 => AuthMethod::Password,
            5 => AuthMethod::Md5,
            7 => AuthMethod::Gss,
            9 => AuthMethod::Sspi,
            10 => AuthMethod::ScramSha256,
            // Continuations of an exchange already checked, or methods tokio-postgres refuses.
            _ => return Ok(()),
        };
        self.challenged = true;
        if let Some(r) = &self.policy.require_auth {
            if !r.allows(method) {
                return Err(AuthRefused(refusal(method, r)));
            }
        }
        if self.policy.channel_binding_required {
            if method != AuthMethod::ScramSha256 {
                return Err(AuthRefused(format!(
                    "channel_binding = require, but the server {}; channel binding needs \
                     SCRAM-SHA-256 password authentication over TLS: use scram-sha-256 (on a \
                     hostssl line) in the server's pg_hba.conf, or set channel_binding = prefer",
                    asked_for(method)
                )));
            }
            let offers_plus = body[4..]
                .split(|b| *b == 0)
                .any(|mechanism| mechanism == SCRAM_PLUS);
            if !offers_plus {
                return Err(AuthRefused(if self.tls {
                    "channel_binding = require, but the server does not offer SCRAM-SHA-256-PLUS \
                     over this TLS connection; check the server's TLS setup, or set \
                     channel_binding = prefer"
                        .to_string()
                } else {
                    "channel_binding = require, but the connection is not encrypted (the server \
                     declined TLS, or this is a Unix socket), so SCRAM-SHA-256-PLUS is not \
                     possible; enable ssl on the server and use ssl_mode = require (or \
                     stricter), or set channel_binding = prefer"
                        .to_string()
                }));
            }
        }
        Ok(())
    }
}

fn asked_for(method: AuthMethod) -> String {
    match method {
        AuthMethod::None => "authenticated the client without any password exchange (trust, \
             cert or peer authentication)"
            .to_string(),
        m => format!("asked for {m} authentication"),
    }
}

fn refusal(method: AuthMethod, allowed: &RequireAuth) -> String {
    format!(
        "the server {}, which require_auth = {allowed} does not allow; nothing was sent. Change \
         the method in the server's pg_hba.conf (scram-sha-256 is the safe one) or require_auth",
        asked_for(method)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(require_auth: Option<&str>, cb: ChannelBinding) -> AuthPolicy {
        let mut c = Config::default();
        c.require_auth = require_auth.map(|r| r.parse().unwrap());
        c.channel_binding = cb;
        AuthPolicy::from_config(&c)
    }

    fn req(code: i32, rest: &[u8]) -> Vec<u8> {
        let mut v = code.to_be_bytes().to_vec();
        v.extend_from_slice(rest);
        v
    }

    const SASL_PLUS: &[u8] = b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0";
    const SASL: &[u8] = b"SCRAM-SHA-256\0\0";

    #[test]
    fn require_auth_refuses_methods_not_listed() {
        let p = policy(Some("scram-sha-256"), ChannelBinding::Prefer);
        for code in [3, 5] {
            let mut a = AuthCheck::new(p.clone(), false);
            let e = a.on_request(&req(code, b"salt")).unwrap_err();
            assert!(e.0.contains("require_auth = scram-sha-256"), "{e}");
            assert!(
                e.0.contains(if code == 3 { "password" } else { "md5" }),
                "{e}"
            );
        }
        let mut a = AuthCheck::new(p.clone(), false);
        a.on_request(&req(10, SASL)).unwrap();
        a.on_request(&req(11, b"r=...")).unwrap();
        a.on_request(&req(12, b"v=...")).unwrap();
        a.on_request(&req(0, b"")).unwrap();
        assert!(a.is_done());
        // trust: AuthenticationOk without a challenge is method "none".
        let mut a = AuthCheck::new(p, false);
        assert!(a.on_request(&req(0, b"")).unwrap_err().0.contains("trust"));
        let mut a = AuthCheck::new(policy(Some("none"), ChannelBinding::Prefer), false);
        a.on_request(&req(0, b"")).unwrap();
        let mut a = AuthCheck::new(
            policy(Some("!password,!md5"), ChannelBinding::Prefer),
            false,
        );
        assert!(a.on_request(&req(3, b"")).is_err());
        let mut a = AuthCheck::new(
            policy(Some("!password,!md5"), ChannelBinding::Prefer),
            false,
        );
        a.on_request(&req(10, SASL)).unwrap();
    }

    #[test]
    fn channel_binding_require_needs_scram_plus() {
        let p = policy(None, ChannelBinding::Require);
        let mut a = AuthCheck::new(p.clone(), true);
        a.on_request(&req(10, SASL_PLUS)).unwrap();
        let mut a = AuthCheck::new(p.clone(), false);
        let e = a.on_request(&req(10, SASL)).unwrap_err();
        assert!(e.0.contains("not encrypted"), "{e}");
        let mut a = AuthCheck::new(p.clone(), false).over_tls();
        let e = a.on_request(&req(10, SASL)).unwrap_err();
        assert!(e.0.contains("does not offer SCRAM-SHA-256-PLUS"), "{e}");
        for code in [0, 3, 5] {
            let mut a = AuthCheck::new(p.clone(), true);
            assert!(a.on_request(&req(code, b"")).is_err(), "{code}");
        }
    }

    #[test]
    fn nothing_configured_checks_nothing() {
        let mut a = AuthCheck::new(AuthPolicy::default(), false);
        assert!(a.is_done());
        a.on_request(&req(3, b"")).unwrap();
        a.on_request(&req(0, b"")).unwrap();
    }
}
