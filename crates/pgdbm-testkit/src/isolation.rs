//! [`run_isolated`]: run a test body inside one transaction and roll it back (Python:
//! `test_db_isolated`).

use std::future::Future;

use pgdbm_core::{Database, Pool, Result, Transaction};

/// Runs `body` with a transaction on `db` and rolls it back afterwards, whatever the body did,
/// so the database is left as it was. The body gets the transaction by value and hands it back
/// with its result.
///
/// # Errors
/// The error of starting or rolling back the transaction, else the body's result.
pub async fn run_isolated<P, F, Fut, T>(db: &Database<P>, body: F) -> Result<T>
where
    P: Pool,
    F: FnOnce(Transaction<P::Connection>) -> Fut,
    Fut: Future<Output = (Transaction<P::Connection>, Result<T>)>,
{
    let tx = db.transaction().await?;
    let (tx, result) = body(tx).await;
    tx.rollback().await?;
    result
}
