//! Refusing to migrate through a transaction pooler (PgBouncer `pool_mode = transaction` or
//! `statement`), where the migration lock and the migration session do not hold.
//!
//! The migration lock is a session-level advisory lock, and a migration run relies on its
//! session (`statement_timeout`, `lock_timeout`, no-transaction files run statement by
//! statement). Behind a transaction pooler each transaction may run on another server
//! session, and the session holding the lock is lent to other clients. So before taking the
//! lock the migrator asks, on its lock connection:
//!
//! 1. `pg_backend_pid()` against the process id the server announced at startup
//!    ([`Connection::announced_backend_pid`]). They are equal on a direct connection (and
//!    through a plain TCP proxy, which forwards the key): nothing else to check. A pooler
//!    announces a key of its own, so they differ.
//! 2. Only then: a session marker (`set_config('pgdbm.pooler_probe', <token>, false)`), read
//!    back in a second transaction on the same connection. A different answer means the
//!    second transaction ran on another server session: a transaction pooler.
//! 3. When it came back (the pooler lent the same server session again, as PgBouncer does by
//!    default when it is quiet, reusing the most recently released one), the marker is read on
//!    a second connection of the pool: seeing it there means two client connections share
//!    one server session, which a session pooler never does.
//!
//! A session pooler passes (2) and (3): its client keeps one server session, and the lock
//! holds. The marker is a custom setting with a random value; left on a pooled server
//! session, it affects nothing.

use std::time::Duration;

use pgdbm_core::{Connection, Error, Pool, Result, Row};

use crate::TRACING_TARGET;

const SET_MARKER: &str = "SELECT set_config('pgdbm.pooler_probe', $1::text, false)";
const GET_MARKER: &str = "SELECT current_setting('pgdbm.pooler_probe', true)";

/// The error every refusal carries.
pub(crate) const REFUSAL: &str = "use a direct connection for migrations";

fn refused(why: &str) -> Error {
    Error::migration(
        None,
        format!(
            "the migrator is connected through a transaction pooler (such as PgBouncer with \
             pool_mode = transaction): {why}. The migration lock (a session advisory lock) and \
             the migration session do not hold there; {REFUSAL} (the server's own host and \
             port, not the pooler's)"
        ),
    )
}

async fn marker<C: Connection>(conn: &mut C, query_timeout: Duration) -> Result<Option<String>> {
    let row = conn.query_opt(GET_MARKER, &[], Some(query_timeout)).await?;
    match row {
        Some(row) => row.get_at::<Option<String>>(0),
        None => Ok(None),
    }
}

/// A value no other probe uses: process id, time and a per-process counter.
fn token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Returns an error saying "use a direct connection for migrations" when `conn` (a connection
/// of `pool`) goes through a transaction pooler; see the module docs for the probe. A probe
/// query failing with SQLSTATE 26000 (a prepared statement of this connection is gone, as
/// with the default statement mode behind PgBouncer < 1.21) is the same verdict.
pub(crate) async fn refuse_transaction_pooler<P: Pool>(
    pool: &P,
    conn: &mut P::Connection,
    query_timeout: Duration,
) -> Result<()> {
    match probe(pool, conn, query_timeout).await {
        Err(e) if e.sqlstate() == Some("26000") => Err(refused(
            "a statement prepared in one transaction did not exist in the next one on the same \
             connection",
        )),
        other => other,
    }
}

async fn probe<P: Pool>(pool: &P, conn: &mut P::Connection, query_timeout: Duration) -> Result<()> {
    let announced = conn.announced_backend_pid();
    let pid_row = conn
        .query_opt("SELECT pg_backend_pid()", &[], Some(query_timeout))
        .await?;
    let pid = match pid_row {
        Some(row) => Some(row.get_at::<i32>(0)?),
        None => None,
    };
    if announced.is_some() && announced == pid {
        return Ok(());
    }
    tracing::debug!(target: TRACING_TARGET, ?announced, ?pid, "the server's backend pid differs from the announced one: probing for a transaction pooler");
    let token = token();
    conn.query_opt(SET_MARKER, &[&token], Some(query_timeout))
        .await?;
    if marker(conn, query_timeout).await?.as_deref() != Some(token.as_str()) {
        return Err(refused(
            "a setting made in one transaction was gone in the next one on the same connection",
        ));
    }
    let stats = pool.stats();
    if stats.idle == 0 && stats.size >= stats.max_size {
        // No second connection to ask without waiting for one: the first two checks passed.
        return Ok(());
    }
    let mut other = pool.acquire().await?;
    let seen = marker(&mut other, query_timeout).await?;
    drop(other);
    if seen.as_deref() == Some(token.as_str()) {
        return Err(refused(
            "two client connections of the pool were served by the same server session",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_and_the_refusal_names_the_fix() {
        assert_ne!(token(), token());
        let e = refused("because").to_string();
        assert!(e.contains(REFUSAL), "{e}");
        assert!(e.contains("because"), "{e}");
    }
}
