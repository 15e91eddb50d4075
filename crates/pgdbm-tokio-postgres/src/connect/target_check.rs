//! `target_session_attrs` on a live connection: the decision is pgdbm-core's
//! [`TargetSessionAttrs::check`] over what the server reported at startup (`in_hot_standby`
//! and `default_transaction_read_only`, PostgreSQL 14+); for older servers the query it asks
//! for (`SHOW transaction_read_only` or `SELECT pg_is_in_recovery()`) runs here, as in libpq.

use pgdbm_core::{ServerState, SessionCheck, TargetSessionAttrs};
use tokio::time::Instant;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Checks that the server behind `client` is what `attrs` (one pass of it) accepts, given the
/// startup `state`, asking the server when `state` is not enough; every query ends by
/// `deadline`. The error is the reason the host is left for the next one.
pub(super) async fn check_target(
    client: &Client,
    attrs: TargetSessionAttrs,
    mut state: ServerState,
    deadline: Instant,
) -> Result<(), String> {
    // Each query fills what the check needs, so two rounds always decide; the bound is for
    // a server whose answers do not fit.
    for _ in 0..3 {
        let query = match attrs.check(state) {
            SessionCheck::Accept => return Ok(()),
            SessionCheck::Reject(r) => return Err(r.to_string()),
            SessionCheck::Ask(q) => q,
        };
        let sql = query.sql();
        let answer = match tokio::time::timeout_at(deadline, client.simple_query(sql)).await {
            Ok(Ok(messages)) => messages.into_iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                _ => None,
            }),
            Ok(Err(e)) => return Err(format!("\"{sql}\" failed: {e}")),
            Err(_) => return Err(format!("\"{sql}\" did not answer within connect_timeout")),
        };
        let Some(value) = answer else {
            return Err(format!("\"{sql}\" returned no value"));
        };
        query.apply(&value, &mut state);
    }
    Err(format!(
        "could not tell whether the server is what target_session_attrs={attrs} asks for"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PgConnection;
    use std::time::Duration;
    use TargetSessionAttrs as T;

    /// The fallback queries older servers get, run here against a real (newer) server by
    /// pretending it reported nothing: a writable primary, then a session made read-only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fallback_queries_decide_against_a_real_server() {
        let server = pgdbm_testkit::TestServer::shared().unwrap();
        let conn = PgConnection::connect_once(&server.config("postgres"))
            .await
            .unwrap();
        let client = conn.client();
        let unknown = ServerState::default();
        let deadline = || Instant::now() + Duration::from_secs(10);
        for (attrs, accepted) in [
            (T::Any, true),
            (T::ReadWrite, true),
            (T::ReadOnly, false),
            (T::Primary, true),
            (T::Standby, false),
            (T::PreferStandby, false),
        ] {
            let got = check_target(client, attrs, unknown, deadline()).await;
            assert_eq!(got.is_ok(), accepted, "{attrs}: {got:?}");
        }
        client
            .batch_execute("SET default_transaction_read_only = on")
            .await
            .unwrap();
        let got = check_target(client, T::ReadWrite, unknown, deadline()).await;
        let reason = got.unwrap_err();
        assert!(
            reason.contains("target_session_attrs=read-write"),
            "{reason}"
        );
        assert!(check_target(client, T::ReadOnly, unknown, deadline())
            .await
            .is_ok());
        // Read-only is not hot standby: primary still accepts it.
        assert!(check_target(client, T::Primary, unknown, deadline())
            .await
            .is_ok());
        // A deadline already passed: the check fails instead of waiting.
        let late = check_target(client, T::ReadWrite, unknown, Instant::now()).await;
        assert!(late.is_err());
    }
}
