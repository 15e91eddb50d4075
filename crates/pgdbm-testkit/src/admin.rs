//! Admin operations on a test server (create, drop, sweep, ad-hoc SQL) through tokio-postgres
//! connections owned by one admin thread per server: no `psql` child process, and an async
//! caller never blocks its runtime thread (it awaits a reply from the admin thread).
//!
//! The testkit cannot use pgdbm's own adapter here: `pgdbm-tokio-postgres`, the pools and
//! `pgdbm-migrate` dev-depend on the testkit, and a normal dependency back would make their
//! unit tests link two copies of the adapter. tokio-postgres is the adapter's own driver.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgdbm_core::{quote_catalog_name, Error, Result};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::budget::ADMIN_CONNECTIONS;
use crate::names::validate_database_name;
use crate::procfs;
use crate::template;

/// The start of the `COMMENT ON DATABASE` text marking a database the testkit created.
pub(crate) const MARKER_PREFIX: &str = "pgdbm-testkit v1";

/// Advisory lock key (an `int8`) serialising orphan sweeps and template builds of all test
/// processes on a server: "pgdbmtk" in ASCII.
pub(crate) const SWEEP_LOCK_KEY: i64 = 0x0070_6764_626d_746b;

/// Marked databases whose owner cannot be checked (a remote server) are orphans after this.
const REMOTE_ORPHAN_AGE: Duration = Duration::from_secs(6 * 3600);

/// How to reach a server as its superuser.
#[derive(Clone)]
pub(crate) struct Target {
    /// TCP host (used when `socket_dir` is `None`).
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: Option<String>,
    /// The private Unix socket directory of a throwaway server (trusted, no password).
    pub(crate) socket_dir: Option<PathBuf>,
    /// Whether marker pids are pids of this machine (a throwaway or loopback server).
    pub(crate) same_host: bool,
}

/// Rows as text, one `Vec` per row, `None` for NULL.
pub(crate) type Rows = Vec<Vec<Option<String>>>;

/// One admin request.
pub(crate) enum Op {
    /// Runs `sql` (simple query protocol, may hold several statements) in `database`.
    Query { database: String, sql: String },
    /// Creates and marks `name`, optionally as a copy of `template` with a `STRATEGY`.
    Create {
        name: String,
        template: Option<(String, &'static str)>,
    },
    /// Drops `name` (if it exists) after checking its marker.
    Drop { name: String },
    /// Drops marked databases of dead test processes and stale templates; returns their names.
    Sweep,
    /// Waits (polling, at most [`WAIT_GONE_TIMEOUT`]) until the server shows no session with
    /// this `application_name`; returns one row with the count left.
    WaitGone { application_name: String },
}

/// How long [`Op::WaitGone`] polls before giving up.
const WAIT_GONE_TIMEOUT: Duration = Duration::from_secs(10);

/// What to do with a result computed on the admin thread.
type Callback = Box<dyn FnOnce(Result<Rows>) + Send>;

enum Reply {
    Sync(std::sync::mpsc::Sender<Result<Rows>>),
    Async(oneshot::Sender<Result<Rows>>),
    /// Run on the admin thread when the operation is done (background work).
    Detached(Callback),
}

struct Job {
    op: Op,
    reply: Reply,
}

/// The admin thread of one server (cloning gives another handle on the same thread).
#[derive(Clone)]
pub(crate) struct Admin {
    tx: mpsc::UnboundedSender<Job>,
}

struct Ctx {
    target: Target,
    /// Idle connections to the `postgres` maintenance database.
    idle: Mutex<Vec<Client>>,
    /// Bounds the connections the admin thread holds at once (see [`ADMIN_CONNECTIONS`]).
    slots: Semaphore,
}

impl Admin {
    /// Starts the admin thread for `target`.
    pub(crate) fn start(target: Target) -> Result<Admin> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| admin_error(None, format!("cannot build the admin runtime: {e}")))?;
        let ctx = Arc::new(Ctx {
            target,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(ADMIN_CONNECTIONS),
        });
        thread::Builder::new()
            .name("pgdbm-testkit-admin".to_string())
            .spawn(move || {
                runtime.block_on(async move {
                    while let Some(job) = rx.recv().await {
                        let ctx = Arc::clone(&ctx);
                        tokio::spawn(async move {
                            let result = match job.op {
                                // Takes a slot for each poll only, not while it waits.
                                Op::WaitGone { application_name } => {
                                    wait_gone(&ctx, &application_name).await
                                }
                                op => match ctx.slots.acquire().await {
                                    Ok(_slot) => run(&ctx, op).await,
                                    Err(_) => {
                                        Err(admin_error(None, "the admin thread ended".into()))
                                    }
                                },
                            };
                            match job.reply {
                                Reply::Sync(tx) => drop(tx.send(result)),
                                Reply::Async(tx) => drop(tx.send(result)),
                                Reply::Detached(callback) => callback(result),
                            }
                        });
                    }
                });
            })
            .map_err(|e| admin_error(None, format!("cannot start the admin thread: {e}")))?;
        Ok(Admin { tx })
    }

    /// Runs `op` and waits for it, blocking the calling thread (for synchronous callers).
    pub(crate) fn call(&self, op: Op) -> Result<Rows> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.submit(op, Reply::Sync(tx))?;
        rx.recv()
            .map_err(|_| admin_error(None, "the admin thread ended".to_string()))?
    }

    /// Runs `op` and awaits it without blocking the caller's runtime.
    pub(crate) async fn call_async(&self, op: Op) -> Result<Rows> {
        let (tx, rx) = oneshot::channel();
        self.submit(op, Reply::Async(tx))?;
        rx.await
            .map_err(|_| admin_error(None, "the admin thread ended".to_string()))?
    }

    /// Runs `op` in the background and hands its result to `callback` on the admin thread
    /// (which must not block). An error submitting is logged (the admin thread is gone).
    pub(crate) fn spawn(&self, op: Op, callback: impl FnOnce(Result<Rows>) + Send + 'static) {
        if let Err(e) = self.submit(op, Reply::Detached(Box::new(callback))) {
            tracing::warn!(target: "pgdbm::testkit", error = %e, "background admin work lost");
        }
    }

    fn submit(&self, op: Op, reply: Reply) -> Result<()> {
        self.tx
            .send(Job { op, reply })
            .map_err(|_| admin_error(None, "the admin thread ended".to_string()))
    }
}

async fn run(ctx: &Ctx, op: Op) -> Result<Rows> {
    match op {
        Op::Query { database, sql } => {
            validate_database_name(&database)?;
            if database == "postgres" {
                let client = ctx.take().await?;
                let result = simple(&client, &sql).await;
                ctx.give_back(client);
                result.map_err(|e| pg_error(&database, "the statement failed", e))
            } else {
                let client = connect(&ctx.target, &database).await?;
                simple(&client, &sql)
                    .await
                    .map_err(|e| pg_error(&database, "the statement failed", e))
            }
        }
        Op::Create { name, template } => {
            validate_database_name(&name)?;
            let client = ctx.take().await?;
            let result = create(&client, &name, template).await;
            ctx.give_back(client);
            result.map(|()| Vec::new())
        }
        Op::Drop { name } => {
            validate_database_name(&name)?;
            let client = ctx.take().await?;
            let result = drop_marked(&client, &name).await;
            ctx.give_back(client);
            result.map(|()| Vec::new())
        }
        Op::Sweep => {
            // A connection of its own: the session advisory lock must not stay with a pooled one.
            let client = connect(&ctx.target, "postgres").await?;
            sweep(&client, ctx.target.same_host).await
        }
        Op::WaitGone { application_name } => wait_gone(ctx, &application_name).await,
    }
}

/// Polls `pg_stat_activity` until no session has `application_name` (or the timeout), holding
/// an admin slot only while it asks.
async fn wait_gone(ctx: &Ctx, application_name: &str) -> Result<Rows> {
    let deadline = tokio::time::Instant::now() + WAIT_GONE_TIMEOUT;
    let mut pause = Duration::from_millis(2);
    loop {
        let n: i64 = {
            let _slot = ctx
                .slots
                .acquire()
                .await
                .map_err(|_| admin_error(None, "the admin thread ended".into()))?;
            let client = ctx.take().await?;
            let row = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    &[&application_name],
                )
                .await;
            ctx.give_back(client);
            row.and_then(|r| r.try_get(0))
                .map_err(|e| pg_error("postgres", "cannot read pg_stat_activity", e))?
        };
        if n == 0 || tokio::time::Instant::now() >= deadline {
            return Ok(vec![vec![Some(n.to_string())]]);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

impl Ctx {
    async fn take(&self) -> Result<Client> {
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|c| !c.is_closed());
            idle.pop()
        };
        match idle {
            Some(c) => Ok(c),
            None => connect(&self.target, "postgres").await,
        }
    }

    fn give_back(&self, client: Client) {
        if !client.is_closed() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < 4 {
                idle.push(client);
            }
        }
    }
}

/// Connects to `database` as the superuser (Unix socket when there is one).
pub(crate) async fn connect(target: &Target, database: &str) -> Result<Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .user(&target.user)
        .dbname(database)
        .port(target.port)
        .application_name("pgdbm-testkit")
        .connect_timeout(Duration::from_secs(10));
    match &target.socket_dir {
        Some(dir) => {
            config.host_path(dir);
        }
        None => {
            config.host(&target.host);
            if let Some(p) = &target.password {
                config.password(p);
            }
        }
    }
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        pg_error(
            database,
            &format!(
                "cannot connect to the test server {}:{} as {}",
                target.host, target.port, target.user
            ),
            e,
        )
    })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Runs `sql` and returns every row of every statement as text.
async fn simple(client: &Client, sql: &str) -> std::result::Result<Rows, tokio_postgres::Error> {
    let mut rows = Vec::new();
    for message in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(row) = message {
            rows.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            );
        }
    }
    Ok(rows)
}

/// The marker text for a database created now by this process.
pub(crate) fn marker() -> String {
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{MARKER_PREFIX} pid={} start={} created={created}",
        std::process::id(),
        procfs::own_start_time().unwrap_or(0)
    )
}

/// The owner recorded in a marker: `(pid, start time, created at)`.
pub(crate) fn parse_marker(text: &str) -> Option<(u32, u64, u64)> {
    let rest = text.strip_prefix(MARKER_PREFIX)?;
    let mut pid = None;
    let mut start = None;
    let mut created = None;
    for part in rest.split_whitespace() {
        match part.split_once('=') {
            Some(("pid", v)) => pid = v.parse().ok(),
            Some(("start", v)) => start = v.parse().ok(),
            Some(("created", v)) => created = v.parse().ok(),
            _ => {}
        }
    }
    Some((pid?, start?, created?))
}

async fn create(
    client: &Client,
    name: &str,
    template: Option<(String, &'static str)>,
) -> Result<()> {
    let quoted = quote_catalog_name(name)?;
    let mut sql = format!("CREATE DATABASE {quoted}");
    if let Some((template, strategy)) = &template {
        validate_database_name(template)?;
        sql.push_str(&format!(
            " TEMPLATE {} STRATEGY {strategy}",
            quote_catalog_name(template)?
        ));
    }
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| pg_error(name, "cannot create the database", e))?;
    // The marker is plain ASCII without quotes, so it is a safe literal.
    let comment = format!("COMMENT ON DATABASE {quoted} IS '{}'", marker());
    if let Err(e) = client.batch_execute(&comment).await {
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
            .await;
        return Err(pg_error(name, "cannot mark the database", e));
    }
    Ok(())
}

/// The marker comment of `name`: `Ok(None)` when there is no such database, `Some(None)` when
/// it has no comment.
async fn comment_of(client: &Client, name: &str) -> Result<Option<Option<String>>> {
    let rows = client
        .query(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .map_err(|e| pg_error(name, "cannot read the catalog", e))?;
    match rows.first() {
        None => Ok(None),
        Some(row) => {
            Ok(Some(row.try_get::<_, Option<String>>(0).map_err(|e| {
                pg_error(name, "cannot read the catalog", e)
            })?))
        }
    }
}

async fn drop_marked(client: &Client, name: &str) -> Result<()> {
    match comment_of(client, name).await? {
        None => Ok(()),
        Some(Some(c)) if c.starts_with(MARKER_PREFIX) => client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_catalog_name(name)?
            ))
            .await
            .map_err(|e| pg_error(name, "cannot drop the database", e)),
        Some(_) => Err(Error::TestDatabase {
            name: Some(name.to_string()),
            message: format!(
                "refusing to drop a database the testkit did not create (its COMMENT does not \
                 start with `{MARKER_PREFIX}`); drop it yourself if it really is disposable"
            ),
            source: None,
        }),
    }
}

/// Whether the owner recorded in `marker` is gone: its process is not running (same host), or
/// the database is older than [`REMOTE_ORPHAN_AGE`] (a server on another machine).
pub(crate) fn is_orphan(marker: &str, same_host: bool, now: u64) -> bool {
    let Some((pid, start, created)) = parse_marker(marker) else {
        return false;
    };
    if same_host {
        if start != 0 {
            !procfs::is_same_running(pid, start)
        } else {
            !procfs::is_running(pid)
        }
    } else {
        now.saturating_sub(created) > REMOTE_ORPHAN_AGE.as_secs()
    }
}

async fn sweep(client: &Client, same_host: bool) -> Result<Rows> {
    let lock_error = |e| pg_error("postgres", "cannot take the sweep lock", e);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&SWEEP_LOCK_KEY])
        .await
        .map_err(lock_error)?;
    let result = sweep_locked(client, same_host).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&SWEEP_LOCK_KEY])
        .await;
    result
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn sweep_locked(client: &Client, same_host: bool) -> Result<Rows> {
    let rows = client
        .query(
            "SELECT datname::text, shobj_description(oid, 'pg_database') FROM pg_database \
             WHERE shobj_description(oid, 'pg_database') LIKE $1",
            &[&format!("{MARKER_PREFIX}%")],
        )
        .await
        .map_err(|e| pg_error("postgres", "cannot list the test databases", e))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut dropped = Vec::new();
    for row in rows {
        let (Ok(name), Ok(Some(marker))) = (
            row.try_get::<_, String>(0),
            row.try_get::<_, Option<String>>(1),
        ) else {
            continue;
        };
        if template::is_template_marker(&marker) {
            if template::is_stale(&marker, now, template::max_idle()) {
                if let Some(name) = template::drop_stale(client, &name, now).await? {
                    dropped.push(vec![Some(name)]);
                }
            }
            continue;
        }
        if !is_orphan(&marker, same_host, now) {
            continue;
        }
        let sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_catalog_name(&name)?
        );
        match client.batch_execute(&sql).await {
            Ok(()) => {
                tracing::info!(target: "pgdbm::testkit", database = %name,
                    "dropped the database of a test process that is gone");
                dropped.push(vec![Some(name)]);
            }
            Err(e) => tracing::warn!(target: "pgdbm::testkit", database = %name, error = %e,
                "could not drop an orphaned test database"),
        }
    }
    Ok(dropped)
}

fn admin_error(name: Option<&str>, message: String) -> Error {
    Error::TestDatabase {
        name: name.map(str::to_string),
        message,
        source: None,
    }
}

pub(crate) fn pg_error(name: &str, what: &str, e: tokio_postgres::Error) -> Error {
    let detail = match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    };
    Error::TestDatabase {
        name: Some(name.to_string()),
        message: format!("{what}: {detail}"),
        source: Some(Box::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip() {
        let m = marker();
        let (pid, _, created) = parse_marker(&m).unwrap();
        assert_eq!(pid, std::process::id());
        assert!(created > 0);
        assert!(parse_marker("some other comment").is_none());
        assert!(parse_marker("pgdbm-testkit v1 pid=x").is_none());
    }

    #[test]
    fn orphans_are_dead_owners_or_old_remote_ones() {
        // This process is alive.
        assert!(!is_orphan(&marker(), true, 0));
        // A pid that cannot exist (above the kernel's pid_max limit of 2^22).
        let dead = format!("{MARKER_PREFIX} pid=4294967 start=1 created=0");
        assert!(is_orphan(&dead, true, 0));
        let young = format!("{MARKER_PREFIX} pid=1 start=1 created=1000");
        assert!(!is_orphan(&young, false, 1000 + 60));
        assert!(is_orphan(&young, false, 1000 + 7 * 3600));
        assert!(!is_orphan("unmarked", true, 0));
    }
}
