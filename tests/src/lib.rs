//! Support for pgdbm's cross-crate integration tests (in `tests/tests/`): every behaviour is one
//! generic test body run for both pool backends by [`both_backends!`].

use pgdbm::{Config, Database, Pool, Result};
use pgdbm_testkit::{unique_database_name, TestServer};

/// A fresh database on the shared test server, with `tweak` applied to its config.
pub async fn fresh_database<P: Pool>(
    prefix: &str,
    tweak: impl FnOnce(&mut Config),
) -> Result<Database<P>> {
    let config = fresh_config(prefix)?;
    let mut config = config;
    tweak(&mut config);
    Database::<P>::connect(config).await
}

/// The config of a fresh database on the shared test server (small pool).
pub fn fresh_config(prefix: &str) -> Result<Config> {
    let server = TestServer::shared()?;
    let name = unique_database_name(prefix)?;
    server.create_database(&name)?;
    let mut config = server.config(&name);
    config.min_connections = 1;
    config.max_connections = 4;
    Ok(config)
}

/// Checks out `n` connections at once and runs a query on each, so the pool holds `n` live
/// connections; returns them still checked out.
pub async fn hold_connections<P: Pool>(
    db: &Database<P>,
    n: usize,
) -> Result<Vec<pgdbm::DbConnection<P::Connection>>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut c = db.acquire().await?;
        c.execute("SELECT 1", &[]).await?;
        out.push(c);
    }
    Ok(out)
}

/// Log lines written by a tracing subscriber (`tracing_subscriber::fmt().with_writer(...)`),
/// shared with the test that reads them.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything written since the last call (lossy UTF-8).
    pub fn take(&self) -> String {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Runs a generic async test body `fn body<P: Pool>()` once per backend:
/// `both_backends!(name, body);` makes `name::deadpool` and `name::bb8`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deadpool() {
                super::$body::<pgdbm::DeadpoolPool>().await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bb8() {
                super::$body::<pgdbm::Bb8Pool>().await
            }
        }
    };
}

/// The Python with pgdbm 0.5 installed for the interop tests: `PGDBM_PYTHON`, else the venv
/// `scripts/setup` makes in `target/py-interop`. `None` (after printing SKIPPED) when there is
/// none; a panic instead when `PGDBM_REQUIRE_PYTHON=1` (CI), so the tests cannot skip there.
pub fn python_with_pgdbm(what: &str) -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("PGDBM_PYTHON") {
        return Some(std::path::PathBuf::from(p));
    }
    let venv =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-interop/bin/python");
    let usable = venv.exists()
        && std::process::Command::new(&venv)
            .args(["-c", "import pgdbm"])
            .status()
            .is_ok_and(|s| s.success());
    if usable {
        return Some(venv);
    }
    if std::env::var("PGDBM_REQUIRE_PYTHON").as_deref() == Ok("1") {
        panic!("PGDBM_REQUIRE_PYTHON=1 but no Python with pgdbm: run scripts/setup or set PGDBM_PYTHON");
    }
    eprintln!(
        "SKIPPED: no Python with pgdbm installed (run scripts/setup, or set PGDBM_PYTHON); {what} did not run"
    );
    None
}
