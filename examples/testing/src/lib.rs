//! A tiny application used to show how to test with `#[pgdbm::test]` (see `tests/` and
//! `docs/testing.md`): users and their orders.

use pgdbm::{Database, Pool, Result};

/// The number of active users.
pub async fn active_users<P: Pool>(db: &Database<P>) -> Result<i64> {
    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.users}} WHERE is_active", &[])
        .await?;
    Ok(n.unwrap_or(0))
}

/// Registers a user and returns their id.
pub async fn register<P: Pool>(db: &Database<P>, email: &str, name: &str) -> Result<i32> {
    let id: Option<i32> = db
        .fetch_value(
            "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2) RETURNING id",
            &[&email, &name],
        )
        .await?;
    id.ok_or_else(|| pgdbm::Error::config("users", "INSERT ... RETURNING returned no row"))
}

/// What a user spent, as text with two decimals (`"0.00"` without orders).
pub async fn total_spent<P: Pool>(db: &Database<P>, user_id: i32) -> Result<String> {
    let total: Option<String> = db
        .fetch_value(
            "SELECT coalesce(sum(total), 0)::numeric(10, 2)::text FROM {{tables.orders}} \
             WHERE user_id = $1",
            &[&user_id],
        )
        .await?;
    Ok(total.unwrap_or_default())
}
