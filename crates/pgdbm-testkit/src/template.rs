//! Migrated template databases: built once per migration set (across every test process of a
//! server), then cloned per test with `CREATE DATABASE ... TEMPLATE ... STRATEGY`.

use std::future::Future;
use std::time::Duration;

use pgdbm_core::{quote_catalog_name, Error, Result};
use sha2::{Digest, Sha256};

use crate::admin::{connect, unix_now, Op, MARKER_PREFIX};
use crate::TestServer;

/// The clone strategy. FILE_COPY: on tmpfs it measured 18 ms against WAL_LOG's 26 ms for a
/// database with 50 small migrations (issue 9), and the server runs with fsync off, so the
/// checkpoint FILE_COPY forces is cheap.
pub const CLONE_STRATEGY: &str = "FILE_COPY";

/// The word after [`MARKER_PREFIX`] in the comment of a finished template. The full comment is
/// `pgdbm-testkit v1 template version=<pgdbm version> used=<unix seconds>`: templates have no
/// owner pid (they outlive their builder); `used` is when a process last made sure of it.
const TEMPLATE_MARKER: &str = "template";

/// Overrides how long a template may go unused before a sweep drops it (seconds; default
/// [`DEFAULT_TEMPLATE_MAX_IDLE`]).
pub const TEMPLATE_MAX_IDLE_ENV: &str = "PGDBM_TEST_TEMPLATE_MAX_IDLE";

/// A template no process used for this long is dropped by the next sweep (24 hours).
pub const DEFAULT_TEMPLATE_MAX_IDLE: Duration = Duration::from_secs(24 * 3600);

/// A template built by another pgdbm version (its name hash can never match this one's) is
/// dropped once unused for this long (2 hours).
const OTHER_VERSION_MAX_IDLE: Duration = Duration::from_secs(2 * 3600);

/// A process using a template records the use (`used=`) at most this often; it must stay well
/// under both idle limits so a template in use is never swept.
pub(crate) const TOUCH_INTERVAL: Duration = Duration::from_secs(3600);

/// The comment of a finished template, used now.
fn template_marker(now: u64) -> String {
    format!(
        "{MARKER_PREFIX} {TEMPLATE_MARKER} version={} used={now}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Whether `comment` marks a finished template (any version of the marker).
pub(crate) fn is_template_marker(comment: &str) -> bool {
    comment
        .strip_prefix(MARKER_PREFIX)
        .and_then(|rest| rest.trim_start().strip_prefix(TEMPLATE_MARKER))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
}

/// `(version, used)` of a template marker; an older marker without them gives `(None, 0)`.
fn parse_template_marker(comment: &str) -> (Option<&str>, u64) {
    let mut version = None;
    let mut used = 0;
    for part in comment.split_whitespace() {
        match part.split_once('=') {
            Some(("version", v)) => version = Some(v),
            Some(("used", v)) => used = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    (version, used)
}

/// The sweep rule: a template is stale when no process used it for `max_idle`, or when another
/// pgdbm version built it and it was unused for [`OTHER_VERSION_MAX_IDLE`].
pub(crate) fn is_stale(comment: &str, now: u64, max_idle: Duration) -> bool {
    if !is_template_marker(comment) {
        return false;
    }
    let (version, used) = parse_template_marker(comment);
    let idle = now.saturating_sub(used);
    let limit = if version == Some(env!("CARGO_PKG_VERSION")) {
        max_idle
    } else {
        max_idle.min(OTHER_VERSION_MAX_IDLE)
    };
    idle > limit.as_secs()
}

/// [`TEMPLATE_MAX_IDLE_ENV`] or the default (an unreadable value is logged and ignored).
pub(crate) fn max_idle() -> Duration {
    match std::env::var(TEMPLATE_MAX_IDLE_ENV) {
        Err(_) => DEFAULT_TEMPLATE_MAX_IDLE,
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => {
                tracing::warn!(target: "pgdbm::testkit", value = %v,
                    "{TEMPLATE_MAX_IDLE_ENV} is not a number of seconds; using 24 hours");
                DEFAULT_TEMPLATE_MAX_IDLE
            }
        },
    }
}

/// Drops the stale template `name` if nobody holds its lock (a builder, or a process recording
/// its use) and it is still stale under the lock. Returns its name when dropped.
pub(crate) async fn drop_stale(
    client: &tokio_postgres::Client,
    name: &str,
    now: u64,
) -> Result<Option<String>> {
    let key = lock_key(name);
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| pg(name, "cannot take the template lock", e))?;
    if !locked {
        return Ok(None);
    }
    let result = drop_stale_locked(client, name, now).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await;
    result
}

async fn drop_stale_locked(
    client: &tokio_postgres::Client,
    name: &str,
    now: u64,
) -> Result<Option<String>> {
    let rows = client
        .query(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .map_err(|e| pg(name, "cannot read the catalog", e))?;
    let comment: Option<String> = match rows.first() {
        Some(row) => row
            .try_get(0)
            .map_err(|e| pg(name, "cannot read the catalog", e))?,
        None => return Ok(None), // another sweeper dropped it first
    };
    if !comment.is_some_and(|c| is_stale(&c, now, max_idle())) {
        return Ok(None); // used meanwhile
    }
    let quoted = quote_catalog_name(name)?;
    // Two requests: DROP DATABASE cannot run in the implicit transaction of a multi-statement
    // query.
    let unmark = format!("ALTER DATABASE {quoted} WITH IS_TEMPLATE false");
    let drop = format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)");
    let result = match client.batch_execute(&unmark).await {
        Ok(()) => client.batch_execute(&drop).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            tracing::info!(target: "pgdbm::testkit", template = %name,
                "dropped a template no test used for a while");
            Ok(Some(name.to_string()))
        }
        Err(e) => {
            tracing::warn!(target: "pgdbm::testkit", template = %name, error = %e,
                "could not drop a stale template");
            Ok(None)
        }
    }
}

/// The template name for a migration set: `pgdbm_tpl_` + 16 hex digits of a SHA-256 over the
/// pgdbm version and every `(file name, checksum)` pair in order. A changed, added or removed
/// migration gives another name, so a stale template is never used.
///
/// ```
/// let a = pgdbm_testkit::template_name(&[("001_users.sql", "abc")]);
/// let b = pgdbm_testkit::template_name(&[("001_users.sql", "abd")]);
/// assert!(a.starts_with("pgdbm_tpl_"));
/// assert_ne!(a, b);
/// ```
pub fn template_name<N: AsRef<str>, C: AsRef<str>>(files: &[(N, C)]) -> String {
    let mut hash = Sha256::new();
    hash.update(env!("CARGO_PKG_VERSION").as_bytes());
    for (name, checksum) in files {
        hash.update([0]);
        hash.update(name.as_ref().as_bytes());
        hash.update([0]);
        hash.update(checksum.as_ref().as_bytes());
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("pgdbm_tpl_{hex}")
}

/// An advisory-lock key for `name` (first 8 bytes of its SHA-256).
pub(crate) fn lock_key(name: &str) -> i64 {
    let digest = Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

fn pg(name: &str, what: &str, e: tokio_postgres::Error) -> Error {
    let detail = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string());
    Error::TestDatabase {
        name: Some(name.to_string()),
        message: format!("{what}: {detail}"),
        source: Some(Box::new(e)),
    }
}

impl TestServer {
    /// Makes sure the template database `name` (see [`template_name`]) exists, calling `build`
    /// with the name of a fresh database to migrate when it does not, and returns whether this
    /// call built it. Safe when many tests and processes ask at once: an advisory lock per
    /// template and a re-check under it mean one builder; the others wait and reuse its result.
    /// `build` must close its connections before it returns; any left are terminated, and the
    /// finished template accepts no connections, so clones never fail on a busy template.
    /// The finished template's comment records the pgdbm version and when a process last made
    /// sure of it (`used=`, rewritten at most hourly), which the template sweep goes by (see
    /// `docs/testing.md`, "Sweeps"). In a process, one call per template at a time talks to
    /// the server; the others wait for it without holding a connection.
    ///
    /// # Errors
    /// [`Error::TestDatabase`] naming the template when the server fails, and `build`'s error
    /// (the half-built database is dropped).
    pub async fn ensure_template<F, Fut>(&self, name: &str, build: F) -> Result<bool>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        crate::validate_database_name(name)?;
        // One waiter per template per process holds a connection; the others wait here.
        let local = self.clones.template_lock(name);
        let _local = local.lock().await;
        let _permit = self.budget().await?.take(1).await?;
        let client = connect(&self.target(), "postgres").await?;
        let key = lock_key(name);
        client
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .await
            .map_err(|e| pg(name, "cannot take the template lock", e))?;
        let result = self.ensure_template_locked(&client, name, build).await;
        let _ = client
            .execute("SELECT pg_advisory_unlock($1)", &[&key])
            .await;
        result
    }

    async fn ensure_template_locked<F, Fut>(
        &self,
        client: &tokio_postgres::Client,
        name: &str,
        build: F,
    ) -> Result<bool>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let now = unix_now();
        let rows = client
            .query(
                "SELECT datistemplate, shobj_description(oid, 'pg_database') FROM pg_database \
                 WHERE datname = $1",
                &[&name],
            )
            .await
            .map_err(|e| pg(name, "cannot read the catalog", e))?;
        if let Some(row) = rows.first() {
            let is_template: bool = row.get(0);
            let comment: Option<String> = row.get(1);
            if let Some(comment) = comment.filter(|c| is_template && is_template_marker(c)) {
                let (_, used) = parse_template_marker(&comment);
                if now.saturating_sub(used) >= TOUCH_INTERVAL.as_secs() {
                    // Record the use, so that sweeps leave the template alone.
                    let touch = format!(
                        "COMMENT ON DATABASE {} IS '{}'",
                        quote_catalog_name(name)?,
                        template_marker(now)
                    );
                    client
                        .batch_execute(&touch)
                        .await
                        .map_err(|e| pg(name, "cannot record the template's use", e))?;
                }
                return Ok(false);
            }
            // A leftover of a builder that died half-way (marked with its pid): rebuild.
            self.drop_database_async(name).await?;
        }
        self.create_database_async(name).await?;
        if let Err(e) = build(name.to_string()).await {
            let _ = self.drop_database_async(name).await;
            return Err(e);
        }
        let quoted = quote_catalog_name(name)?;
        let finish = format!(
            "ALTER DATABASE {quoted} WITH ALLOW_CONNECTIONS false IS_TEMPLATE true; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'; \
             COMMENT ON DATABASE {quoted} IS '{}'",
            template_marker(now)
        );
        if let Err(e) = client.batch_execute(&finish).await {
            let _ = self.drop_database_async(name).await;
            return Err(pg(name, "cannot turn the database into a template", e));
        }
        tracing::info!(target: "pgdbm::testkit", template = %name, "built template database");
        Ok(true)
    }

    /// Creates the marked database `name` as a copy of `template` (`CREATE DATABASE ...
    /// TEMPLATE ... STRATEGY` [`CLONE_STRATEGY`]), without blocking the runtime.
    ///
    /// # Errors
    /// [`Error::TestDatabase`] naming `name` when a name is invalid or the copy fails.
    pub async fn clone_database(&self, template: &str, name: &str) -> Result<()> {
        self.clone_database_with(template, name, CLONE_STRATEGY)
            .await
    }

    /// [`clone_database`](Self::clone_database) with an explicit strategy: `"WAL_LOG"` or
    /// `"FILE_COPY"` (to measure; anything else is refused).
    ///
    /// # Errors
    /// As [`clone_database`](Self::clone_database), and for an unknown strategy.
    pub async fn clone_database_with(
        &self,
        template: &str,
        name: &str,
        strategy: &str,
    ) -> Result<()> {
        let strategy: &'static str = match strategy {
            "WAL_LOG" => "WAL_LOG",
            "FILE_COPY" => "FILE_COPY",
            other => {
                return Err(Error::TestDatabase {
                    name: Some(name.to_string()),
                    message: format!("unknown clone strategy `{other}`: use WAL_LOG or FILE_COPY"),
                    source: None,
                })
            }
        };
        crate::validate_database_name(template)?;
        crate::validate_database_name(name)?;
        self.admin()?
            .call_async(Op::Create {
                name: name.to_string(),
                template: Some((template.to_string(), strategy)),
            })
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_markers_and_the_sweep_rule() {
        let now = 10_000_000;
        let fresh = template_marker(now);
        assert!(is_template_marker(&fresh));
        assert!(is_template_marker("pgdbm-testkit v1 template"));
        assert!(!is_template_marker("pgdbm-testkit v1 templates"));
        assert!(!is_template_marker(
            "pgdbm-testkit v1 pid=1 start=1 created=1"
        ));
        assert!(!is_template_marker("template"));
        let day = DEFAULT_TEMPLATE_MAX_IDLE;
        assert!(!is_stale(&fresh, now + 3600, day));
        assert!(is_stale(&fresh, now + day.as_secs() + 1, day));
        // Another version's template goes after two idle hours; an old marker at once.
        let other = format!("{MARKER_PREFIX} {TEMPLATE_MARKER} version=0.0.0-old used={now}");
        assert!(!is_stale(&other, now + 3600, day));
        assert!(is_stale(&other, now + 3 * 3600, day));
        assert!(is_stale("pgdbm-testkit v1 template", now, day));
        assert!(!is_stale(
            "pgdbm-testkit v1 pid=1 start=1 created=0",
            now,
            day
        ));
        // A shorter limit applies to every version.
        assert!(is_stale(&fresh, now + 61, Duration::from_secs(60)));
    }

    #[test]
    fn names_follow_files_and_order() {
        let a = template_name(&[("1.sql", "x"), ("2.sql", "y")]);
        assert_eq!(a, template_name(&[("1.sql", "x"), ("2.sql", "y")]));
        assert_ne!(a, template_name(&[("2.sql", "y"), ("1.sql", "x")]));
        assert_ne!(a, template_name(&[("1.sql", "x")]));
        assert_ne!(template_name(&[("ab", "c")]), template_name(&[("a", "bc")]));
        assert!(crate::validate_database_name(&a).is_ok());
    }
}
