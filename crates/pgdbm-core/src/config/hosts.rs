//! [`HostSpec`]: one server a connect may try, combining [`Config::host`] / [`Config::port`],
//! [`Config::fallback_hosts`] and [`Config::hostaddr`] the way libpq combines `host`, `port`
//! and `hostaddr`.

use std::fmt;
use std::net::IpAddr;

use super::Config;

/// One server to try: its name, port and (libpq's `hostaddr`) the numeric address to connect
/// to instead of resolving the name.
///
/// The name is what TLS verifies (`verify-full`) and what messages show; with a `hostaddr` no
/// name lookup happens. A name starting with `/` is a Unix socket directory (unless a
/// `hostaddr` is given, which always means TCP).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct HostSpec {
    /// Host name, IP address or Unix socket directory.
    pub host: String,
    /// Port (also the number in a Unix socket's file name).
    pub port: u16,
    /// Numeric address to connect to (libpq `hostaddr`); `None` resolves `host`.
    pub hostaddr: Option<IpAddr>,
}

impl HostSpec {
    /// A host without a `hostaddr`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        HostSpec {
            host: host.into(),
            port,
            hostaddr: None,
        }
    }

    /// True when this is a Unix socket directory (a host starting with `/`, no `hostaddr`).
    pub fn is_unix_socket(&self) -> bool {
        self.hostaddr.is_none() && self.host.starts_with('/')
    }
}

/// `host:port`, IPv6 addresses in brackets, plus ` (hostaddr a)` when one is set and differs
/// from the host; for messages.
impl fmt::Display for HostSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        match self.hostaddr {
            Some(a) if a.to_string() != self.host => write!(f, " (hostaddr {a})"),
            _ => Ok(()),
        }
    }
}

impl Config {
    /// Every server to try, in the configured order: [`hosts`](Config::hosts) with the
    /// [`hostaddr`](Config::hostaddr) of the same position (none when `hostaddr` is empty).
    /// [`validate`](Config::validate) rejects a `hostaddr` whose length is neither 0 nor the
    /// number of hosts; here extra entries are ignored and missing ones are `None`.
    pub fn host_specs(&self) -> Vec<HostSpec> {
        self.hosts()
            .into_iter()
            .enumerate()
            .map(|(i, (host, port))| HostSpec {
                host,
                port,
                hostaddr: self.hostaddr.get(i).copied().flatten(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_pair_hosts_with_addresses() {
        let mut c = Config {
            host: "db1".into(),
            fallback_hosts: vec![("db2".into(), 5433), ("/run/pg".into(), 5434)],
            ..Config::default()
        };
        assert_eq!(
            c.host_specs(),
            vec![
                HostSpec::new("db1", 5432),
                HostSpec::new("db2", 5433),
                HostSpec::new("/run/pg", 5434)
            ]
        );
        assert!(c.host_specs()[2].is_unix_socket());
        c.hostaddr = vec![Some("10.0.0.1".parse().unwrap()), None];
        let specs = c.host_specs();
        assert_eq!(specs[0].hostaddr, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(specs[1].hostaddr, None);
        assert_eq!(specs[2].hostaddr, None);
        assert_eq!(specs[0].to_string(), "db1:5432 (hostaddr 10.0.0.1)");
        assert_eq!(specs[1].to_string(), "db2:5433");
        let mut v6 = HostSpec::new("::1", 5432);
        v6.hostaddr = Some("::1".parse().unwrap());
        assert_eq!(v6.to_string(), "[::1]:5432");
        let mut sock = HostSpec::new("/tmp", 5432);
        sock.hostaddr = Some("127.0.0.1".parse().unwrap());
        assert!(!sock.is_unix_socket());
    }
}
