//! Clones prepared ahead: for each migrated template a process uses, a few databases cloned
//! from it in the background, so that a test usually just takes one
//! ([`TestServer::migrated_database`]).
//!
//! Each process prepares and takes only its own clones: they are created through the admin
//! thread with the usual marker (this process's pid and start time), so nobody else takes
//! them, and the orphan sweep drops those of a process that died. A taken clone is replaced
//! in the background, one clone at a time per template.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use pgdbm_core::{quote_catalog_name, Error, Result};

use crate::admin::Op;
use crate::template::{CLONE_STRATEGY, TOUCH_INTERVAL};
use crate::{unique_database_name, TestConfig, TestDatabase, TestServer};

/// Sets how many clones of each template a process keeps ready (0 turns preparing off).
pub const PREPARED_CLONES_ENV: &str = "PGDBM_TEST_PREPARED_CLONES";

/// Clones of each template a process keeps ready by default.
pub const DEFAULT_PREPARED_CLONES: usize = 3;

/// The ready clones of one template.
#[derive(Default)]
struct Spares {
    ready: VecDeque<String>,
    /// A background clone is being made.
    filling: bool,
}

/// Per-server state of templates and their prepared clones (in [`TestServer`]).
#[derive(Default)]
pub(crate) struct Clones {
    spares: Mutex<HashMap<String, Spares>>,
    /// Templates this process made sure of, and when.
    ensured: Mutex<HashMap<String, Instant>>,
    /// One in-process lock per template, so that only one task per process waits on the
    /// server's advisory lock (holding a connection).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Clones {
    pub(crate) fn template_lock(&self, template: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(lock(&self.locks).entry(template.to_string()).or_default())
    }

    fn take(&self, template: &str) -> Option<String> {
        lock(&self.spares).get_mut(template)?.ready.pop_front()
    }

    fn ready(&self, template: &str) -> usize {
        lock(&self.spares)
            .get(template)
            .map_or(0, |s| s.ready.len())
    }

    fn is_ensured(&self, template: &str) -> bool {
        lock(&self.ensured)
            .get(template)
            .is_some_and(|at| at.elapsed() < TOUCH_INTERVAL)
    }
}

/// [`PREPARED_CLONES_ENV`] or the default (an unreadable value is logged and ignored).
fn prepared_target() -> usize {
    match std::env::var(PREPARED_CLONES_ENV) {
        Err(_) => DEFAULT_PREPARED_CLONES,
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            tracing::warn!(target: "pgdbm::testkit", value = %v,
                "{PREPARED_CLONES_ENV} is not a number; keeping {DEFAULT_PREPARED_CLONES} clones ready");
            DEFAULT_PREPARED_CLONES
        }),
    }
}

impl TestServer {
    /// A fresh database migrated like the template `template` (see
    /// [`template_name`](crate::template_name)), for one test: the template is built once
    /// ([`ensure_template`](Self::ensure_template), calling `build` with the name of the
    /// database to migrate only when no process built it yet), and the test gets a clone of it.
    ///
    /// The process keeps a few clones of each template ready ([`DEFAULT_PREPARED_CLONES`], or
    /// `PGDBM_TEST_PREPARED_CLONES`; 0 turns it off), made in the background by the admin
    /// thread: the call usually just takes one, and a taken clone is replaced in the
    /// background. When none is ready it clones now. When cloning fails (for example because
    /// a sweep dropped the template), the template is made sure of again and the clone retried
    /// once. The database is named with the environment's `test_prefix`, and dropped with the
    /// returned value like any [`TestDatabase`].
    ///
    /// ```no_run
    /// # async fn f() -> pgdbm_core::Result<()> {
    /// use pgdbm_testkit::{template_name, TestServer};
    /// let server = TestServer::shared()?;
    /// let template = template_name(&[("001_users.sql", "checksum")]);
    /// let test_db = server
    ///     .migrated_database(&template, |db| async move {
    ///         let m = server.manager::<pgdbm_deadpool::DeadpoolPool>(&db, None).await?;
    ///         m.execute("CREATE TABLE users (id int)", &[]).await?;
    ///         m.close().await;
    ///         Ok(())
    ///     })
    ///     .await?;
    /// # let _ = test_db; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `build`'s error, or [`Error::TestDatabase`] naming the template or the clone.
    pub async fn migrated_database<F, Fut>(
        &'static self,
        template: &str,
        build: F,
    ) -> Result<TestDatabase>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        self.migrated_database_named(template, None, build).await
    }

    /// [`migrated_database`](Self::migrated_database), with the database named like
    /// [`TestDatabase::create`] names it for `suffix` (`<test_prefix><suffix>_...`, for
    /// example the test's name): a prepared clone is renamed (`ALTER DATABASE ... RENAME`, one
    /// statement on the admin connection; nobody is connected to a spare).
    ///
    /// # Errors
    /// As [`migrated_database`](Self::migrated_database), and [`Error::Schema`] for a
    /// `suffix` that is not an identifier.
    pub async fn migrated_database_named<F, Fut>(
        &'static self,
        template: &str,
        suffix: Option<&str>,
        build: F,
    ) -> Result<TestDatabase>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let settings = TestConfig::from_env()?;
        let wanted = match suffix {
            Some(_) => Some(TestDatabase::new_name(&settings, suffix)?),
            None => None,
        };
        crate::validate_database_name(template)?;
        let mut last_error = None;
        for _attempt in 0..2 {
            if !self.clones.is_ensured(template) {
                self.ensure_template(template, &build).await?;
                lock(&self.clones.ensured).insert(template.to_string(), Instant::now());
            }
            let taken = self.clones.take(template);
            self.refill(template, &settings.test_prefix);
            if let Some(name) = taken {
                if settings.verbose {
                    tracing::info!(target: "pgdbm::testkit", database = %name,
                        template = %template, "took a prepared clone");
                }
                let name = match wanted {
                    Some(wanted) => {
                        let sql = format!(
                            "ALTER DATABASE {} RENAME TO {}",
                            quote_catalog_name(&name)?,
                            quote_catalog_name(&wanted)?
                        );
                        if let Err(e) = self.query_async("postgres", &sql).await {
                            // Still this process's marked clone: the drop or a sweep takes it.
                            let _ = self.drop_database_async(&name).await;
                            return Err(e);
                        }
                        wanted
                    }
                    None => name,
                };
                return Ok(TestDatabase::created(self, name, settings));
            }
            let name = match &wanted {
                Some(w) => w.clone(),
                None => unique_database_name(&settings.test_prefix)?,
            };
            match self.clone_database(template, &name).await {
                Ok(()) => return Ok(TestDatabase::created(self, name, settings)),
                Err(e) => {
                    // Perhaps the template was swept: make sure of it again, then retry.
                    lock(&self.clones.ensured).remove(template);
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::TestDatabase {
            name: Some(template.to_string()),
            message: "cannot clone the template".to_string(),
            source: None,
        }))
    }

    /// How many clones of `template` this process has ready now.
    pub fn prepared_clones(&self, template: &str) -> usize {
        self.clones.ready(template)
    }

    /// Starts a background clone of `template` when fewer than the target are ready and none
    /// is being made; each finished clone starts the next.
    fn refill(&'static self, template: &str, prefix: &str) {
        let target = prepared_target();
        {
            let mut spares = lock(&self.clones.spares);
            let s = spares.entry(template.to_string()).or_default();
            if s.filling || s.ready.len() >= target {
                return;
            }
            s.filling = true;
        }
        let done = |server: &TestServer, template: &str| {
            if let Some(s) = lock(&server.clones.spares).get_mut(template) {
                s.filling = false;
            }
        };
        let name = match unique_database_name(prefix) {
            Ok(name) => name,
            Err(e) => {
                tracing::warn!(target: "pgdbm::testkit", error = %e, "cannot name a prepared clone");
                return done(self, template);
            }
        };
        let admin = match self.admin() {
            Ok(admin) => admin,
            Err(_) => return done(self, template),
        };
        let (template, prefix) = (template.to_string(), prefix.to_string());
        let op = Op::Create {
            name: name.clone(),
            template: Some((template.clone(), CLONE_STRATEGY)),
        };
        admin.spawn(op, move |result| {
            match result {
                Ok(_) => {
                    let mut spares = lock(&self.clones.spares);
                    let s = spares.entry(template.clone()).or_default();
                    s.ready.push_back(name);
                    s.filling = false;
                }
                Err(e) => {
                    // Not retried now (the template may be gone); the next take tries again.
                    tracing::warn!(target: "pgdbm::testkit", template = %template, error = %e,
                        "could not prepare a clone");
                    return done(self, &template);
                }
            }
            self.refill(&template, &prefix);
        });
    }
}
