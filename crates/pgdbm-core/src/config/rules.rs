//! [`Config::validate`](super::Config::validate) as a table of per-field checks: one [`Rule`] per
//! field, each returning the message of the first problem with that field.

use std::time::Duration;

use super::{
    is_identifier, is_setting_name, millis_ceil, AuthMethod, ChannelBinding, Config, SslMode,
};
use crate::error::{Error, Result};

/// Longest server-side timeout PostgreSQL accepts (an `int` of milliseconds).
const MAX_SERVER_TIMEOUT_MS: u128 = i32::MAX as u128;

/// Largest `keepalives_idle` / `keepalives_interval` Linux accepts (`TCP_KEEPIDLE`, `TCP_KEEPINTVL`).
const MAX_KEEPALIVE_SECS: u64 = 32767;

/// Largest `keepalives_count` Linux accepts (`TCP_KEEPCNT`).
const MAX_KEEPALIVE_COUNT: u32 = 127;

/// What a check returns: `Err(message)` names the problem and the fix.
type Check = std::result::Result<(), String>;

/// One per-field check of [`Config::validate`](super::Config::validate).
pub(crate) struct Rule {
    /// The field an error names.
    pub(crate) field: &'static str,
    /// The check.
    pub(crate) check: fn(&Config) -> Check,
}

/// Every check, in the order they run; the first failure is the error.
pub(crate) const RULES: &[Rule] = &[
    Rule {
        field: "host",
        check: |c| text("host", &c.host),
    },
    Rule {
        field: "database",
        check: |c| text("database", &c.database),
    },
    Rule {
        field: "user",
        check: |c| text("user", &c.user),
    },
    Rule {
        field: "port",
        check: port,
    },
    Rule {
        field: "fallback_hosts",
        check: fallback_hosts,
    },
    Rule {
        field: "hostaddr",
        check: hostaddr,
    },
    Rule {
        field: "read_hosts",
        check: |c| host_list(&c.read_hosts),
    },
    Rule {
        field: "max_connections",
        check: max_connections,
    },
    Rule {
        field: "min_connections",
        check: min_connections,
    },
    Rule {
        field: "max_queries",
        check: max_queries,
    },
    Rule {
        field: "retry_attempts",
        check: retry_attempts,
    },
    Rule {
        field: "retry_backoff",
        check: retry_backoff,
    },
    Rule {
        field: "connect_timeout",
        check: |c| nonzero("connect_timeout", Some(c.connect_timeout), ""),
    },
    Rule {
        field: "acquire_timeout",
        check: |c| nonzero("acquire_timeout", Some(c.acquire_timeout), ""),
    },
    Rule {
        field: "command_timeout",
        check: |c| nonzero("command_timeout", c.command_timeout, NONE_HINT),
    },
    Rule {
        field: "max_lifetime",
        check: |c| nonzero("max_lifetime", c.max_lifetime, NONE_HINT),
    },
    Rule {
        field: "statement_timeout",
        check: |c| server_timeout("statement_timeout", c.statement_timeout),
    },
    Rule {
        field: "lock_timeout",
        check: |c| server_timeout("lock_timeout", c.lock_timeout),
    },
    Rule {
        field: "idle_in_transaction_session_timeout",
        check: |c| {
            server_timeout(
                "idle_in_transaction_session_timeout",
                c.idle_in_transaction_session_timeout,
            )
        },
    },
    Rule {
        field: "keepalives_idle",
        check: |c| keepalive_secs(c, "keepalives_idle", c.keepalives_idle),
    },
    Rule {
        field: "keepalives_interval",
        check: |c| keepalive_secs(c, "keepalives_interval", c.keepalives_interval),
    },
    Rule {
        field: "keepalives_count",
        check: keepalives_count,
    },
    Rule {
        field: "tcp_user_timeout",
        check: tcp_user_timeout,
    },
    Rule {
        field: "ssl_root_cert",
        check: |c| ssl_root_cert(c, c.default_root_cert_exists()),
    },
    Rule {
        field: "channel_binding",
        check: channel_binding,
    },
    Rule {
        field: "schema",
        check: schema,
    },
    Rule {
        field: "application_name",
        check: application_name,
    },
    Rule {
        field: "server_settings",
        check: server_settings,
    },
    Rule {
        field: "shared_pool_search_path",
        check: shared_pool_search_path,
    },
];

/// Runs [`RULES`] in order; the first failure is an [`Error::Configuration`] for its field.
pub(crate) fn validate(config: &Config) -> Result<()> {
    for rule in RULES {
        (rule.check)(config).map_err(|message| Error::config(rule.field, message))?;
    }
    Ok(())
}

const NONE_HINT: &str = " (or None for no limit)";

fn text(name: &str, v: &str) -> Check {
    if v.is_empty() {
        return Err(format!(
            "`{name}` is empty; set it (default: see Config::default())"
        ));
    }
    if v.contains('\0') {
        return Err(format!("`{name}` contains a NUL character; remove it"));
    }
    Ok(())
}

fn port(c: &Config) -> Check {
    if c.port == 0 {
        return Err(
            "port 0 is not a valid port; use 1-65535 (PostgreSQL's default is 5432)".into(),
        );
    }
    Ok(())
}

fn fallback_hosts(c: &Config) -> Check {
    host_list(&c.fallback_hosts)
}

/// Every `(host, port)` non-empty, without NUL, port not 0.
fn host_list(hosts: &[(String, u16)]) -> Check {
    for (h, p) in hosts {
        if h.is_empty() || h.contains('\0') || *p == 0 {
            return Err(format!(
                "`{}:{p}` is not a valid host and port; hosts must be non-empty and ports 1-65535",
                h.escape_debug()
            ));
        }
    }
    Ok(())
}

/// libpq: `hostaddr` has one entry per host, or none at all.
fn hostaddr(c: &Config) -> Check {
    let hosts = 1 + c.fallback_hosts.len();
    if !c.hostaddr.is_empty() && c.hostaddr.len() != hosts {
        return Err(format!(
            "hostaddr has {} entries for {hosts} hosts; give one address per host (None / an \
             empty entry resolves that host's name) or leave hostaddr empty",
            c.hostaddr.len()
        ));
    }
    Ok(())
}

fn max_connections(c: &Config) -> Check {
    if c.max_connections == 0 {
        return Err("max_connections is 0; a pool needs at least 1 connection".into());
    }
    Ok(())
}

fn min_connections(c: &Config) -> Check {
    if c.min_connections > c.max_connections {
        return Err(format!(
            "min_connections ({}) is greater than max_connections ({}); lower min_connections or \
             raise max_connections",
            c.min_connections, c.max_connections
        ));
    }
    Ok(())
}

fn max_queries(c: &Config) -> Check {
    if c.max_queries == 0 {
        return Err("max_queries is 0; use a positive number of queries per connection".into());
    }
    Ok(())
}

fn retry_attempts(c: &Config) -> Check {
    if c.retry_attempts == 0 {
        return Err("retry_attempts is 0; use at least 1 (1 = a single attempt, no retry)".into());
    }
    Ok(())
}

fn retry_backoff(c: &Config) -> Check {
    if !c.retry_backoff.is_finite() || c.retry_backoff < 1.0 {
        return Err(format!(
            "retry_backoff is {}; use a finite multiplier of at least 1.0 (default 2.0)",
            c.retry_backoff
        ));
    }
    Ok(())
}

fn nonzero(name: &str, d: Option<Duration>, hint: &str) -> Check {
    if d == Some(Duration::ZERO) {
        return Err(format!("{name} is zero; use a positive duration{hint}"));
    }
    Ok(())
}

fn server_timeout(name: &str, d: Option<Duration>) -> Check {
    match d {
        Some(d) if millis_ceil(d) > MAX_SERVER_TIMEOUT_MS => Err(format!(
            "{name} of {} s exceeds PostgreSQL's maximum of {MAX_SERVER_TIMEOUT_MS} ms; use a \
             smaller value, Some(0) to disable it or None to keep the server's setting",
            d.as_secs_f64()
        )),
        _ => Ok(()),
    }
}

/// The kernel takes whole seconds in an int for these (Linux caps them at 32767 s); only checked
/// when keepalives are on.
fn keepalive_secs(c: &Config, name: &str, d: Duration) -> Check {
    if c.keepalives && (d < Duration::from_secs(1) || d > Duration::from_secs(MAX_KEEPALIVE_SECS)) {
        return Err(format!(
            "{name} of {} s is out of range; use 1 to {MAX_KEEPALIVE_SECS} s, or keepalives = \
             false to turn keepalives off",
            d.as_secs_f64()
        ));
    }
    Ok(())
}

fn keepalives_count(c: &Config) -> Check {
    if c.keepalives && (c.keepalives_count == 0 || c.keepalives_count > MAX_KEEPALIVE_COUNT) {
        return Err(format!(
            "keepalives_count of {} is out of range; use 1 to {MAX_KEEPALIVE_COUNT}",
            c.keepalives_count
        ));
    }
    Ok(())
}

fn tcp_user_timeout(c: &Config) -> Check {
    match c.tcp_user_timeout {
        Some(d) if millis_ceil(d) > MAX_SERVER_TIMEOUT_MS => Err(format!(
            "tcp_user_timeout of {} s exceeds the kernel's maximum of {MAX_SERVER_TIMEOUT_MS} ms; \
             use a smaller value or None for the OS default",
            d.as_secs_f64()
        )),
        _ => Ok(()),
    }
}

/// libpq: `verify-ca` / `verify-full` need a root certificate (`sslrootcert`, else
/// `~/.postgresql/root.crt`: `default_exists`); `sslrootcert=system` only with `verify-full`.
fn ssl_root_cert(c: &Config, default_exists: bool) -> Check {
    let verify = matches!(c.ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull);
    match &c.ssl_root_cert {
        Some(p)
            if p.as_os_str() == super::SYSTEM_ROOT_CERT && c.ssl_mode != SslMode::VerifyFull =>
        {
            Err(format!(
                "ssl_root_cert = \"system\" (the bundled Mozilla roots) may only be used with \
                 ssl_mode = verify-full, not {}: a public CA vouches for any host it issued a \
                 certificate to, so the host name must be checked too",
                c.ssl_mode
            ))
        }
        None if verify && !default_exists => Err(format!(
            "ssl_mode = {} verifies the server certificate but no root certificate is set and \
             the default ~/.postgresql/root.crt does not exist; set ssl_root_cert to the CA file \
             (PEM; URL/key=value `sslrootcert=/path/ca.crt`, env PGSSLROOTCERT), use \
             `sslrootcert=system` with verify-full for a publicly signed server, or use \
             ssl_mode = require to encrypt without verifying",
            c.ssl_mode
        )),
        _ => Ok(()),
    }
}

/// `channel_binding = require` needs TLS and SCRAM.
fn channel_binding(c: &Config) -> Check {
    if c.channel_binding != ChannelBinding::Require {
        return Ok(());
    }
    if c.ssl_mode == SslMode::Disable {
        return Err(
            "channel_binding = require needs TLS but ssl_mode = disable; use ssl_mode = require \
             (or stricter), or channel_binding = prefer"
                .into(),
        );
    }
    match &c.require_auth {
        Some(r) if !r.allows(AuthMethod::ScramSha256) => Err(format!(
            "channel_binding = require needs SCRAM-SHA-256 authentication but require_auth = \
             {r} does not allow it; allow scram-sha-256 or use channel_binding = prefer"
        )),
        _ => Ok(()),
    }
}

fn schema(c: &Config) -> Check {
    match &c.schema {
        Some(schema) if !is_identifier(schema) => Err(format!(
            "schema `{}` is not a valid identifier: use letters, digits and `_`, starting with a \
             letter or `_`, at most 63 bytes",
            schema.escape_debug()
        )),
        _ => Ok(()),
    }
}

fn application_name(c: &Config) -> Check {
    match &c.application_name {
        Some(app) if app.len() > 63 || !app.bytes().all(|b| (0x20..=0x7e).contains(&b)) => {
            Err(format!(
                "application_name `{}` must be at most 63 bytes of printable ASCII (no control or \
                 non-ASCII characters)",
                app.escape_debug()
            ))
        }
        _ => Ok(()),
    }
}

fn server_settings(c: &Config) -> Check {
    for (k, v) in &c.server_settings {
        if !is_setting_name(k) {
            return Err(format!(
                "`{}` is not a valid setting name; use letters, digits and `_` (and `.` for custom \
                 settings such as `myapp.tenant`)",
                k.escape_debug()
            ));
        }
        if v.contains('\0') {
            return Err(format!(
                "the value of `{k}` contains a NUL character; remove it"
            ));
        }
    }
    Ok(())
}

/// Python 0.5's `_validate_search_path`: a comma-separated list of plain identifiers (it
/// reaches the server as a startup parameter, so it is rejected rather than quoted).
fn shared_pool_search_path(c: &Config) -> Check {
    let Some(sp) = &c.shared_pool_search_path else {
        return Ok(());
    };
    let entries = super::split_search_path(sp);
    if !entries.iter().any(|e| !e.is_empty()) || !entries.iter().all(|e| is_identifier(e)) {
        return Err(format!(
            "Invalid search_path '{}'. Expected a comma-separated list of identifiers, each \
             starting with a letter or underscore and containing only letters, numbers, and \
             underscores.",
            sp.escape_debug()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_names_a_distinct_field_of_config() {
        let dbg = format!("{:?}", Config::default());
        let mut seen = std::collections::BTreeSet::new();
        for r in RULES {
            assert!(seen.insert(r.field), "{} twice", r.field);
            assert!(
                dbg.contains(&format!("{}:", r.field)),
                "{} is not a field",
                r.field
            );
            assert_eq!((r.check)(&Config::default()), Ok(()), "{}", r.field);
        }
    }

    #[test]
    fn verify_modes_need_a_root_certificate() {
        let mut c = Config::default();
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            c.ssl_mode = mode;
            c.ssl_root_cert = None;
            let e = ssl_root_cert(&c, false).unwrap_err();
            assert!(e.contains("sslrootcert=/path/ca.crt"), "{e}");
            assert!(e.contains(mode.as_str()), "{e}");
            assert_eq!(ssl_root_cert(&c, true), Ok(()));
            c.ssl_root_cert = Some("/etc/ca.pem".into());
            assert_eq!(ssl_root_cert(&c, false), Ok(()));
        }
        for mode in [SslMode::Disable, SslMode::Prefer, SslMode::Require] {
            c.ssl_mode = mode;
            c.ssl_root_cert = None;
            assert_eq!(ssl_root_cert(&c, false), Ok(()));
            c.ssl_root_cert = Some("system".into());
            assert!(ssl_root_cert(&c, false)
                .unwrap_err()
                .contains("verify-full"));
        }
        c.ssl_mode = SslMode::VerifyCa;
        assert!(ssl_root_cert(&c, true).is_err());
        c.ssl_mode = SslMode::VerifyFull;
        assert_eq!(ssl_root_cert(&c, false), Ok(()));
    }

    #[test]
    fn channel_binding_require_needs_tls_and_scram() {
        let mut c = Config {
            channel_binding: ChannelBinding::Require,
            ..Config::default()
        };
        assert_eq!(channel_binding(&c), Ok(()));
        c.ssl_mode = SslMode::Disable;
        assert!(channel_binding(&c).unwrap_err().contains("needs TLS"));
        c.ssl_mode = SslMode::Require;
        c.require_auth = Some("password,md5".parse().unwrap());
        assert!(channel_binding(&c).unwrap_err().contains("password,md5"));
        c.require_auth = Some("!password".parse().unwrap());
        assert_eq!(channel_binding(&c), Ok(()));
        c.channel_binding = ChannelBinding::Disable;
        c.ssl_mode = SslMode::Disable;
        c.require_auth = Some("md5".parse().unwrap());
        assert_eq!(channel_binding(&c), Ok(()));
    }

    #[test]
    fn shared_pool_search_path_rule() {
        let mut c = Config::default();
        for ok in [None, Some("pg_catalog"), Some("public, ext"), Some("a,b")] {
            c.shared_pool_search_path = ok.map(str::to_owned);
            assert_eq!(shared_pool_search_path(&c), Ok(()), "{ok:?}");
        }
        for bad in ["", " , ", "\"x\"", "a;b", "a, b c", "$user"] {
            c.shared_pool_search_path = Some(bad.to_owned());
            assert!(shared_pool_search_path(&c).is_err(), "{bad}");
        }
    }
}
