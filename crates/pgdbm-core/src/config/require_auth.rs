//! [`RequireAuth`]: which authentication methods the client accepts from the server (libpq 16's
//! `require_auth`).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

#[cfg(doc)]
use super::Config;

/// An authentication method a server may ask for, with libpq's `require_auth` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AuthMethod {
    /// `password`: the password in cleartext (`AuthenticationCleartextPassword`).
    Password,
    /// `md5`: an MD5 hash of the password (`AuthenticationMD5Password`).
    Md5,
    /// `gss`: GSSAPI (not supported by pgdbm's driver; listed for libpq compatibility).
    Gss,
    /// `sspi`: SSPI (not supported by pgdbm's driver; listed for libpq compatibility).
    Sspi,
    /// `scram-sha-256`: SASL with `SCRAM-SHA-256` or `SCRAM-SHA-256-PLUS`.
    ScramSha256,
    /// `none`: the server asks for no authentication at all (`trust`, `cert`, `peer`).
    None,
}

impl AuthMethod {
    const ALL: [AuthMethod; 6] = [
        AuthMethod::Password,
        AuthMethod::Md5,
        AuthMethod::Gss,
        AuthMethod::Sspi,
        AuthMethod::ScramSha256,
        AuthMethod::None,
    ];

    /// libpq's name of the method.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Password => "password",
            AuthMethod::Md5 => "md5",
            AuthMethod::Gss => "gss",
            AuthMethod::Sspi => "sspi",
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::None => "none",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// libpq's `require_auth` ([`Config::require_auth`]): either the methods the server may use
/// (`scram-sha-256`, `password,md5`) or, all prefixed with `!`, the methods it must not use
/// (`!password,!md5`). `none` stands for "no authentication request at all", so `!none`
/// requires the server to authenticate the client somehow. The check runs on the server's
/// authentication request, before any password is sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequireAuth {
    negated: bool,
    methods: Vec<AuthMethod>,
}

impl RequireAuth {
    /// Only these methods are accepted.
    pub fn only(methods: impl IntoIterator<Item = AuthMethod>) -> Self {
        Self::build(false, methods)
    }

    /// Every method except these is accepted.
    pub fn except(methods: impl IntoIterator<Item = AuthMethod>) -> Self {
        Self::build(true, methods)
    }

    fn build(negated: bool, methods: impl IntoIterator<Item = AuthMethod>) -> Self {
        let mut methods: Vec<AuthMethod> = methods.into_iter().collect();
        methods.sort();
        methods.dedup();
        RequireAuth { negated, methods }
    }

    /// True when the server may authenticate with `method`.
    pub fn allows(&self, method: AuthMethod) -> bool {
        self.methods.contains(&method) != self.negated
    }
}

impl fmt::Display for RequireAuth {
    /// libpq's form, e.g. `scram-sha-256` or `!password,!md5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.methods.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if self.negated {
                f.write_str("!")?;
            }
            f.write_str(m.as_str())?;
        }
        Ok(())
    }
}

impl FromStr for RequireAuth {
    type Err = Error;

    /// Parses libpq's comma-separated list (`scram-sha-256`, `password,md5`,
    /// `!password,!md5`); negated and plain methods cannot be mixed, and a method can only
    /// appear once.
    fn from_str(s: &str) -> Result<Self> {
        let names = AuthMethod::ALL.map(AuthMethod::as_str).join(", ");
        let mut negated = None;
        let mut methods = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let (neg, name) = match part.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, part),
            };
            let name = name.to_ascii_lowercase();
            let Some(method) = AuthMethod::ALL.into_iter().find(|m| m.as_str() == name) else {
                return Err(Error::config(
                    "require_auth",
                    format!(
                        "unknown authentication method `{}` in require_auth; use a comma-separated \
                         list of {names}, optionally each prefixed with `!`",
                        part.escape_debug()
                    ),
                ));
            };
            if *negated.get_or_insert(neg) != neg {
                return Err(Error::config(
                    "require_auth",
                    "require_auth mixes negated (`!method`) and plain methods; list either the \
                     methods to accept or, each with `!`, the methods to refuse",
                ));
            }
            if methods.contains(&method) {
                return Err(Error::config(
                    "require_auth",
                    format!("require_auth lists `{method}` more than once"),
                ));
            }
            methods.push(method);
        }
        Ok(Self::build(negated.unwrap_or(false), methods))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lists_and_negations() {
        let r: RequireAuth = "scram-sha-256".parse().unwrap();
        assert!(r.allows(AuthMethod::ScramSha256));
        assert!(!r.allows(AuthMethod::Password));
        assert!(!r.allows(AuthMethod::Md5));
        assert!(!r.allows(AuthMethod::None));
        let r: RequireAuth = " !password , !MD5".parse().unwrap();
        assert!(!r.allows(AuthMethod::Password));
        assert!(!r.allows(AuthMethod::Md5));
        assert!(r.allows(AuthMethod::ScramSha256));
        assert!(r.allows(AuthMethod::None));
        assert_eq!(r.to_string(), "!password,!md5");
        let r: RequireAuth = "!none".parse().unwrap();
        assert!(!r.allows(AuthMethod::None));
        assert!(r.allows(AuthMethod::Md5));
    }

    #[test]
    fn bad_lists_name_the_field() {
        for (bad, needle) in [
            ("scram", "unknown authentication method `scram`"),
            ("", "unknown authentication method"),
            ("password,!md5", "mixes"),
            ("md5,md5", "more than once"),
        ] {
            match bad.parse::<RequireAuth>() {
                Err(Error::Configuration { field, message }) => {
                    assert_eq!(field, "require_auth");
                    assert!(message.contains(needle), "{bad}: {message}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    fn method() -> impl Strategy<Value = AuthMethod> {
        proptest::sample::select(AuthMethod::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn display_parses_back_and_negation_inverts(
            methods in proptest::collection::btree_set(method(), 1..6),
            probe in method(),
        ) {
            let only = RequireAuth::only(methods.iter().copied());
            let except = RequireAuth::except(methods.iter().copied());
            prop_assert_eq!(only.to_string().parse::<RequireAuth>().unwrap(), only.clone());
            prop_assert_eq!(except.to_string().parse::<RequireAuth>().unwrap(), except.clone());
            prop_assert_eq!(only.allows(probe), methods.contains(&probe));
            prop_assert_eq!(except.allows(probe), !methods.contains(&probe));
        }
    }
}
