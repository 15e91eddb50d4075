//! [`TestCluster`]: a throwaway primary with streaming standbys, for replica and failover tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pgdbm_core::{percent_encode, Config, Error, Result};

use crate::names::validate_database_name;
use crate::options::TestServerOptions;
use crate::pgbouncer::{TestPgBouncer, TestPgBouncerOptions};
use crate::server::TestServer;

/// How often [`TestCluster::promote`] and [`TestCluster::wait_for_replay`] poll.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A primary and `N` streaming standbys, each a throwaway [`TestServer`] with its own
/// directory, port and Unix socket directory, all dying with the test process like a
/// `TestServer`.
///
/// Member 0 starts as the primary (`wal_level=replica`, `max_wal_senders`, one replication
/// slot per standby; initdb's `pg_hba.conf` trusts replication on the private socket).
/// Members `1..=N` are standbys made by `pg_basebackup -R` through the primary's socket, each
/// streaming through its own slot (`standby_<i>`) with `hot_standby=on`, so they serve
/// read-only queries. Every member keeps its port across [`stop`](Self::stop) /
/// [`start_again`](Self::start_again), and all have the primary's password.
///
/// After [`promote`](Self::promote) the promoted member is the primary; the other standbys keep
/// following the old primary (they are not re-pointed), which is what a two-member failover
/// test needs.
///
/// ```no_run
/// # async fn demo() -> pgdbm_core::Result<()> {
/// use pgdbm_testkit::TestCluster;
/// let cluster = TestCluster::start(1)?;
/// cluster.create_database("app").await?; // on the primary, replayed by the standby
/// let writes = cluster.multi_host_config(&[0, 1], "app")?; // hosts: primary, standby
/// let mut routed = cluster.config(0, "app")?; // writes on the primary ...
/// routed.read_hosts = cluster.hosts(&[1])?; // ... and Database::replica() on the standby
/// cluster.stop(0)?;
/// cluster.promote(1).await?;
/// # let _ = (writes, routed);
/// # Ok(())
/// # }
/// ```
pub struct TestCluster {
    members: Vec<TestServer>,
    primary: AtomicUsize,
    /// Bound on each poll ([`TestServerOptions::start_timeout`]).
    timeout: Duration,
}

impl TestCluster {
    /// Starts a primary and `standbys` standbys with default server options.
    ///
    /// # Errors
    /// As [`start_with`](Self::start_with).
    pub fn start(standbys: usize) -> Result<TestCluster> {
        Self::start_with(standbys, TestServerOptions::default())
    }

    /// Starts a primary and `standbys` standbys, every member with `options` (its settings
    /// come after the cluster's own, so they win). The cluster adds `wal_level=replica`,
    /// `max_wal_senders` and `max_replication_slots` for the standbys, `hot_standby=on`, a
    /// small `shared_buffers`, `synchronous_commit=on` (a commit's WAL is written before it is
    /// acknowledged; fsync stays off), and a short `wal_retrieve_retry_interval` so that a
    /// standby reconnects quickly to a restarted primary. `options.port` must be unset (every member
    /// needs its own port).
    ///
    /// # Errors
    /// [`Error::Configuration`] for a fixed port; [`Error::TestDatabase`] when a member does
    /// not start or `pg_basebackup` fails (with the end of its output or server log).
    pub fn start_with(standbys: usize, options: TestServerOptions) -> Result<TestCluster> {
        if options.port.is_some() {
            return Err(Error::config(
                "port",
                "a TestCluster starts several servers, each on its own free port: leave \
                 TestServerOptions::port unset",
            ));
        }
        let mut settings = vec![
            ("wal_level".to_string(), "replica".to_string()),
            ("max_wal_senders".to_string(), (standbys + 10).to_string()),
            (
                "max_replication_slots".to_string(),
                (standbys + 10).to_string(),
            ),
            ("hot_standby".to_string(), "on".to_string()),
            ("shared_buffers".to_string(), "16MB".to_string()),
            (
                "wal_retrieve_retry_interval".to_string(),
                "100ms".to_string(),
            ),
            // A commit's WAL is written before it is acknowledged (a standalone TestServer
            // turns this off), so `pg_current_wal_lsn()` after a commit covers it.
            ("synchronous_commit".to_string(), "on".to_string()),
        ];
        settings.extend(options.settings.iter().cloned());
        let mut options = options;
        options.settings = settings;
        let timeout = options.start_timeout;
        let primary = TestServer::start_with(options.clone())?;
        let mut members = vec![primary];
        for i in 1..=standbys {
            let standby = TestServer::start_standby(&members[0], &slot_name(i), options.clone())?;
            wait_streaming(&members[0], i, timeout)?;
            members.push(standby);
        }
        Ok(TestCluster {
            members,
            primary: AtomicUsize::new(0),
            timeout,
        })
    }

    /// All members: index 0 is the first primary, then the standbys.
    pub fn members(&self) -> &[TestServer] {
        &self.members
    }

    /// Member `i`.
    ///
    /// # Errors
    /// [`Error::TestDatabase`] when there is no member `i`.
    pub fn member(&self, i: usize) -> Result<&TestServer> {
        self.members.get(i).ok_or_else(|| Error::TestDatabase {
            name: None,
            message: format!(
                "the cluster has no member {i}: its members are 0 (the first primary) to {}",
                self.members.len().saturating_sub(1)
            ),
            source: None,
        })
    }

    /// The index of the current primary (0 until [`promote`](Self::promote)).
    pub fn primary_index(&self) -> usize {
        self.primary.load(Ordering::SeqCst)
    }

    /// The current primary.
    pub fn primary(&self) -> &TestServer {
        // The index is always one of `members` (set by `start_with` and `promote`, which
        // checks it), and `members` is never empty; fall back to member 0 regardless.
        let i = self.primary_index();
        self.members.get(i).unwrap_or(&self.members[0])
    }

    /// Starts a PgBouncer in front of the current primary ([`TestPgBouncer`], transaction
    /// pooling unless `options` say otherwise). It points at that server's port: after a
    /// promotion, start another in front of the new primary. It dies with the test process like
    /// the members.
    ///
    /// # Errors
    /// As [`TestPgBouncer::start_with`]: pgbouncer is not installed (scripts/setup installs
    /// it), or it does not start.
    pub fn pgbouncer(&self, options: TestPgBouncerOptions) -> Result<TestPgBouncer> {
        TestPgBouncer::start_with(self.primary(), options)
    }

    /// Stops member `i` (fast shutdown), keeping its data and port.
    ///
    /// # Errors
    /// As [`TestServer::stop`], and for an unknown member.
    pub fn stop(&self, i: usize) -> Result<()> {
        self.member(i)?.stop()
    }

    /// Starts member `i` again on its port and data (a standby comes back as a standby; a
    /// stopped old primary comes back as a primary of its own, unless the test turned it into
    /// something else).
    ///
    /// # Errors
    /// As [`TestServer::start_again`], and for an unknown member.
    pub fn start_again(&self, i: usize) -> Result<()> {
        self.member(i)?.start_again()
    }

    /// Stops and starts member `i` again.
    ///
    /// # Errors
    /// As [`TestServer::restart`], and for an unknown member.
    pub fn restart(&self, i: usize) -> Result<()> {
        self.member(i)?.restart()
    }

    /// Promotes standby `i` (`SELECT pg_promote()`) and waits, polling, until
    /// `pg_is_in_recovery()` is false; it is then the [`primary`](Self::primary). Promoting
    /// the current primary does nothing.
    ///
    /// # Errors
    /// [`Error::TestDatabase`] for an unknown member, when the server refuses, or when it is
    /// still in recovery after the start timeout.
    pub async fn promote(&self, i: usize) -> Result<()> {
        let member = self.member(i)?;
        if i == self.primary_index() && !self.in_recovery(member).await? {
            return Ok(());
        }
        member
            .query_async("postgres", "SELECT pg_promote(true, 60)")
            .await?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.in_recovery(member).await {
                Ok(false) => break,
                Ok(true) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                Ok(true) => {
                    return Err(cluster_error(format!(
                        "member {i} is still in recovery {:?} after pg_promote(); see its log {}",
                        self.timeout,
                        log_of(member)
                    )))
                }
                Err(e) => return Err(e),
            }
        }
        self.primary.store(i, Ordering::SeqCst);
        Ok(())
    }

    /// Waits, polling, until member `i` has replayed the current primary's WAL up to the
    /// primary's `pg_current_wal_lsn()` read now (`pg_last_wal_replay_lsn()` at or past it):
    /// everything committed on the primary before the call is then visible on member `i`.
    /// For the primary itself it returns at once.
    ///
    /// # Errors
    /// [`Error::TestDatabase`] when the primary cannot be asked, or member `i` has not caught
    /// up within the start timeout (with both positions).
    pub async fn wait_for_replay(&self, i: usize) -> Result<()> {
        let member = self.member(i)?;
        if i == self.primary_index() {
            return Ok(()); // the primary has its own WAL
        }
        let primary = self.primary();
        let lsn = primary
            .query_async("postgres", "SELECT pg_current_wal_lsn()")
            .await?;
        if !is_lsn(&lsn) {
            return Err(cluster_error(format!(
                "the primary reported `{lsn}` as its WAL position"
            )));
        }
        let check = format!(
            "SELECT coalesce(pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn, false), \
             pg_last_wal_replay_lsn()"
        );
        let deadline = Instant::now() + self.timeout;
        loop {
            let answer = member.query_async("postgres", &check).await;
            match answer {
                Ok(row) if row.starts_with("t|") => return Ok(()),
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                Ok(row) => {
                    return Err(cluster_error(format!(
                        "member {i} has not replayed the primary's WAL up to {lsn} within {:?} \
                         (it is at `{}`); see its log {}",
                        self.timeout,
                        row.split('|').nth(1).unwrap_or(""),
                        log_of(member)
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates the database `name` on the primary (marked as the testkit's, like
    /// [`TestServer::create_database`]) and waits until every running standby has replayed it.
    ///
    /// # Errors
    /// As [`TestServer::create_database`] and [`wait_for_replay`](Self::wait_for_replay).
    pub async fn create_database(&self, name: &str) -> Result<()> {
        self.primary().create_database_async(name).await?;
        self.wait_for_all().await
    }

    /// Waits until every running member other than the primary has replayed the primary's
    /// current WAL position ([`wait_for_replay`](Self::wait_for_replay) for each).
    ///
    /// # Errors
    /// As [`wait_for_replay`](Self::wait_for_replay).
    pub async fn wait_for_all(&self) -> Result<()> {
        let primary = self.primary_index();
        for (i, member) in self.members.iter().enumerate() {
            if i != primary && member.is_running() {
                self.wait_for_replay(i).await?;
            }
        }
        Ok(())
    }

    /// A pgdbm [`Config`] for `database` on member `i` alone.
    ///
    /// # Errors
    /// For an unknown member.
    pub fn config(&self, i: usize, database: &str) -> Result<Config> {
        Ok(self.member(i)?.config(database))
    }

    /// `(host, port)` of the members `order`, in that order: for
    /// [`Config::read_hosts`](pgdbm_core::Config::read_hosts) or `fallback_hosts`.
    ///
    /// # Errors
    /// An unknown member.
    pub fn hosts(&self, order: &[usize]) -> Result<Vec<(String, u16)>> {
        order
            .iter()
            .map(|&i| self.member(i).map(|m| (m.host().to_string(), m.port())))
            .collect()
    }

    /// A pgdbm [`Config`] for `database` whose hosts are the members `order`, in that order
    /// (the first is `host`/`port`, the others `fallback_hosts`).
    ///
    /// # Errors
    /// An empty `order` or an unknown member.
    pub fn multi_host_config(&self, order: &[usize], database: &str) -> Result<Config> {
        let (first, rest) = order.split_first().ok_or_else(|| {
            Error::config("hosts", "name at least one cluster member, e.g. &[0, 1]")
        })?;
        let mut config = self.config(*first, database)?;
        config.fallback_hosts = self.hosts(rest)?;
        Ok(config)
    }

    /// `postgresql://user:password@host:port,host:port/database` for the members `order`, as
    /// libpq writes several hosts. It holds the password: print
    /// [`display_multi_host_url`](Self::display_multi_host_url) instead.
    ///
    /// # Errors
    /// As [`multi_host_config`](Self::multi_host_config).
    pub fn multi_host_url(&self, order: &[usize], database: &str) -> Result<String> {
        self.url(order, database, true)
    }

    /// [`multi_host_url`](Self::multi_host_url) without the password.
    ///
    /// # Errors
    /// As [`multi_host_config`](Self::multi_host_config).
    pub fn display_multi_host_url(&self, order: &[usize], database: &str) -> Result<String> {
        self.url(order, database, false)
    }

    fn url(&self, order: &[usize], database: &str, with_password: bool) -> Result<String> {
        validate_database_name(database)?;
        if order.is_empty() {
            return Err(Error::config(
                "hosts",
                "name at least one cluster member, e.g. &[0, 1]",
            ));
        }
        let hosts = order
            .iter()
            .map(|&i| self.member(i).map(|m| format!("{}:{}", m.host(), m.port())))
            .collect::<Result<Vec<_>>>()?
            .join(",");
        let primary = self.primary();
        let user = percent_encode(primary.user());
        let userinfo = match primary.password().filter(|_| with_password) {
            Some(p) => format!("{user}:{}", percent_encode(p)),
            None => user,
        };
        Ok(format!(
            "postgresql://{userinfo}@{hosts}/{}",
            percent_encode(database)
        ))
    }

    async fn in_recovery(&self, member: &TestServer) -> Result<bool> {
        let answer = member
            .query_async("postgres", "SELECT pg_is_in_recovery()")
            .await?;
        Ok(answer == "t")
    }
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("primary", &self.primary_index())
            .field("members", &self.members)
            .finish()
    }
}

/// Waits, polling, until standby `i` streams from `primary` (its slot is active).
fn wait_streaming(primary: &TestServer, i: usize, timeout: Duration) -> Result<()> {
    let sql = format!(
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND active",
        slot_name(i)
    );
    let deadline = Instant::now() + timeout;
    loop {
        if primary.psql("postgres", &sql)? == "1" {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(cluster_error(format!(
                "standby {i} does not stream from the primary within {timeout:?} (its slot \
                 `{}` is not active)",
                slot_name(i)
            )));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The replication slot of standby `i`.
fn slot_name(i: usize) -> String {
    format!("standby_{i}")
}

/// `X/Y` with hex digits: what `pg_current_wal_lsn()` prints (checked before it goes into SQL).
fn is_lsn(s: &str) -> bool {
    match s.split_once('/') {
        Some((a, b)) => {
            !a.is_empty()
                && !b.is_empty()
                && a.chars().chain(b.chars()).all(|c| c.is_ascii_hexdigit())
        }
        None => false,
    }
}

fn log_of(member: &TestServer) -> String {
    member
        .log_path()
        .map_or_else(String::new, |p| p.display().to_string())
}

fn cluster_error(message: String) -> Error {
    Error::TestDatabase {
        name: None,
        message: format!("test cluster: {message}"),
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_are_checked_before_they_go_into_sql() {
        assert!(is_lsn("0/3000148"));
        assert!(is_lsn("A1/FF"));
        assert!(!is_lsn(""));
        assert!(!is_lsn("0/"));
        assert!(!is_lsn("0/1'; DROP"));
        assert!(!is_lsn("03000148"));
    }

    #[test]
    fn slots_are_valid_names() {
        assert_eq!(slot_name(2), "standby_2");
    }
}
