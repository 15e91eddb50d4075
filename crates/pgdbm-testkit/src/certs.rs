//! [`TestCerts`]: a throwaway certificate authority with a server certificate and a client
//! certificate it signed, for TLS tests against a [`TestServer`](crate::TestServer).
//!
//! Made with the `openssl` command-line tool (Debian's `openssl` package, present wherever
//! PostgreSQL is installed from Debian packages): no Rust crate for certificate generation is
//! needed, and the files are the same kind of PEM a real deployment uses. RSA 2048 keys and
//! SHA-256 signatures, so SCRAM channel binding (`tls-server-end-point`, which needs a
//! hash-based signature algorithm) works.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use pgdbm_core::{Error, Result};

/// A CA, a server certificate valid for the DNS name `localhost` only (not for the IP
/// `127.0.0.1`, so `verify-full` to `127.0.0.1` fails while `verify-ca` passes), and a client
/// certificate whose common name is a role name (for pg_hba's `cert` method). The directory
/// holding them is deleted on drop.
#[derive(Debug)]
pub struct TestCerts {
    dir: PathBuf,
}

impl TestCerts {
    /// Generates the certificates in a new directory under the system temp dir; the client
    /// certificate's common name is `client_user`.
    ///
    /// # Errors
    /// [`Error::TestDatabase`] when `openssl` is missing or fails (its stderr is in the
    /// message).
    pub fn generate(client_user: &str) -> Result<TestCerts> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pgdbm-testkit-certs-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        let certs = TestCerts { dir };
        certs.make(client_user)?;
        Ok(certs)
    }

    fn make(&self, client_user: &str) -> Result<()> {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-sha256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=pgdbm test CA",
        ])?;
        self.write(
            "server.cnf",
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )?;
        self.write(
            "client.cnf",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=clientAuth\n",
        )?;
        for (name, subject) in [
            ("server", "/CN=localhost".to_string()),
            ("client", format!("/CN={client_user}")),
        ] {
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let crt = format!("{name}.crt");
            let ext = format!("{name}.cnf");
            self.openssl(&[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                &subject,
            ])?;
            self.openssl(&[
                "x509",
                "-req",
                "-sha256",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ])?;
        }
        Ok(())
    }

    fn write(&self, name: &str, text: &str) -> Result<()> {
        let path = self.dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))
    }

    fn openssl(&self, args: &[&str]) -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .map_err(|e| {
                fail(format!(
                    "cannot run openssl ({e}); install the `openssl` package to generate test \
                     certificates"
                ))
            })?;
        if !out.status.success() {
            return Err(fail(format!(
                "openssl {} failed: {}",
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (PEM): the client's `ssl_root_cert`, the server's `ssl_ca_file`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The server certificate (PEM, `DNS:localhost`).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    /// The server's private key (PEM).
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// The client certificate (PEM, common name = the `client_user` given to
    /// [`generate`](Self::generate)).
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.crt")
    }

    /// The client's private key (PEM).
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fail(message: String) -> Error {
    Error::TestDatabase {
        name: None,
        message,
        source: None,
    }
}
