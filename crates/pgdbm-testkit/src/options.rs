//! [`TestServerOptions`]: how a throwaway server is started.

use std::path::PathBuf;
use std::time::Duration;

use pgdbm_core::{Error, Result};

/// Options for [`TestServer::start_with`](crate::TestServer::start_with).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TestServerOptions {
    /// Directory holding `initdb` and `postgres`; `None` searches as
    /// [`find_pg_bin`](crate::find_pg_bin) says.
    pub pg_bin: Option<PathBuf>,
    /// Parent of the server directories; `None` = a per-user directory (mode 0700):
    /// `/dev/shm/pgdbm-testkit-<uid>` when `/dev/shm` exists (tmpfs: clones are fast), else
    /// `<temp dir>/pgdbm-testkit-<uid>`. Stale directories
    /// found here are reaped at start.
    pub base_dir: Option<PathBuf>,
    /// How long to wait for the server to accept connections (default 60 s).
    pub start_timeout: Duration,
    /// The server's `max_connections` (default 300, for many parallel tests).
    pub max_connections: u32,
    /// Extra server settings passed as `-c name=value` (they override the defaults).
    pub settings: Vec<(String, String)>,
    /// Kill the server when the thread that started it (and so the test process) dies, even by
    /// SIGKILL (default true). Only turn it off to test the reaper.
    pub die_with_process: bool,
    /// A fixed port; `None` (default) picks a free one, retrying when another process takes it
    /// first. A fixed port that is in use is an error.
    pub port: Option<u16>,
    /// Kept for compatibility: TCP connections to a throwaway server always need its generated
    /// password (SCRAM-SHA-256); only its private Unix socket directory is trusted. Setting
    /// this has no further effect.
    pub password_auth: bool,
    /// Serve TLS with this certificate and private key (PEM files, copied into the server
    /// directory); `None` (default) serves plain connections only.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// A CA certificate (PEM, copied into the server directory) the server trusts for client
    /// certificates (`ssl_ca_file`), for pg_hba's `cert` method or `clientcert=verify-full`;
    /// only with [`tls_files`](Self::tls_files).
    pub tls_ca_file: Option<PathBuf>,
    /// pg_hba.conf lines for TCP (`host`/`hostssl`/`hostnossl` ...), replacing the default
    /// `host all all 127.0.0.1/32 scram-sha-256`; the private Unix socket stays trusted (the
    /// testkit's admin connection uses it). Empty (default) keeps the default.
    pub hba: Vec<String>,
}

impl Default for TestServerOptions {
    fn default() -> Self {
        TestServerOptions {
            pg_bin: None,
            base_dir: None,
            start_timeout: Duration::from_secs(60),
            max_connections: 300,
            settings: Vec::new(),
            die_with_process: true,
            port: None,
            password_auth: false,
            tls_files: None,
            tls_ca_file: None,
            hba: Vec::new(),
        }
    }
}

impl TestServerOptions {
    /// Use the binaries in `dir`.
    pub fn pg_bin(mut self, dir: impl Into<PathBuf>) -> Self {
        self.pg_bin = Some(dir.into());
        self
    }

    /// Put the server directory under `dir`.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// Wait at most `timeout` for the server to accept connections.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Adds a server setting (`-c name=value`).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Listen on `port` instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Whether the server dies with the process that started it (see the field).
    pub fn die_with_process(mut self, yes: bool) -> Self {
        self.die_with_process = yes;
        self
    }

    /// Kept for compatibility (see the field): TCP always needs the password.
    pub fn password_auth(mut self, yes: bool) -> Self {
        self.password_auth = yes;
        self
    }

    /// Serve TLS with the PEM certificate `cert` and private key `key` (see the field).
    pub fn tls_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_files = Some((cert.into(), key.into()));
        self
    }
}

impl TestServerOptions {
    /// Trust client certificates signed by the CA in `ca` (see the field).
    pub fn tls_ca_file(mut self, ca: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(ca.into());
        self
    }

    /// Adds a pg_hba.conf line (see the field), e.g.
    /// `hostssl all all 127.0.0.1/32 scram-sha-256`.
    pub fn hba(mut self, line: impl Into<String>) -> Self {
        self.hba.push(line.into());
        self
    }
}

pub(crate) fn validate_options(options: &TestServerOptions) -> Result<()> {
    if options.max_connections == 0 {
        return Err(Error::config(
            "max_connections",
            "must be at least 1 (default 300)",
        ));
    }
    if options.start_timeout.is_zero() {
        return Err(Error::config(
            "start_timeout",
            "must be positive (default 60 s)",
        ));
    }
    if options.tls_ca_file.is_some() && options.tls_files.is_none() {
        return Err(Error::config(
            "tls_ca_file",
            "a client CA needs TLS: set tls_files (server certificate and key) too",
        ));
    }
    if let Some(line) = options
        .hba
        .iter()
        .find(|l| l.contains('\n') || l.trim().is_empty())
    {
        return Err(Error::config(
            "hba",
            format!("`{}` is not one pg_hba.conf line", line.escape_debug()),
        ));
    }
    for (name, _) in &options.settings {
        let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !ok {
            return Err(Error::config(
                "settings",
                format!("`{name}` is not a PostgreSQL setting name"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_options_name_the_field() {
        let o = TestServerOptions {
            max_connections: 0,
            ..TestServerOptions::default()
        };
        let e = validate_options(&o).unwrap_err();
        assert!(matches!(e, Error::Configuration { ref field, .. } if field == "max_connections"));
        let o = TestServerOptions::default().setting("x; rm", "1");
        let e = validate_options(&o).unwrap_err();
        assert!(e.to_string().contains("x; rm"), "{e}");
        let o = TestServerOptions::default().start_timeout(Duration::ZERO);
        assert!(validate_options(&o).is_err());
    }
}
