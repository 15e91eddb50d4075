//! Client-side deadlines: a request that outlives its timeout is cancelled on the server, and
//! the connection is handed back only once the cancelled statement's outcome is settled.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::time::Sleep;

use pgdbm_core::{Error, QueryError, QueryErrorKind, Result};

use crate::cancel::{cancel, CancelOutcome};
use crate::connection::PgConnection;
use crate::errors::{discards_connection, query_error, QUERY_CANCELED};

/// How long a timed-out statement may take to finish after its CancelRequest before the
/// connection is given up as broken; also the bound on the CancelRequest itself.
pub(crate) const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// What happened to a request run under a deadline.
pub(crate) enum Bounded<T> {
    /// It finished (successfully or not) before the deadline.
    Done(std::result::Result<T, tokio_postgres::Error>),
    /// The deadline passed and a CancelRequest went out. `finished` holds the request's own
    /// outcome when it completed within the grace period and no late cancel can follow;
    /// `None` when it did not (the connection is then marked broken).
    TimedOut {
        finished: Option<std::result::Result<T, tokio_postgres::Error>>,
    },
}

/// The instant `timeout` from now; `None` (no deadline) for no timeout or one so large that
/// the clock cannot represent it (`Duration::MAX` reads as "no limit").
pub(crate) fn deadline_of(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// A connection's deadline timer, kept from one request to the next.
///
/// A fresh `tokio::time::timeout` per request registers a timer entry in the runtime's wheel
/// and removes it again (a lock each way), on every statement. This one stays registered:
/// pushing its deadline later is one atomic update in tokio (a request's deadline is almost
/// always later than the previous one's), and only an earlier deadline or an entry that
/// already fired goes back to the wheel. It belongs to the runtime that polls it (a request
/// from another runtime gets a timer of its own), so it never outlives its timer driver.
#[derive(Debug, Default)]
pub(crate) struct DeadlineTimer(Mutex<Option<(tokio::runtime::Id, Pin<Box<Sleep>>)>>);

impl DeadlineTimer {
    /// Polls `fut` until it finishes (`Some`) or `deadline` passes (`None`).
    async fn race<F: Future>(&self, deadline: Instant, mut fut: Pin<&mut F>) -> Option<F::Output> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Outside a runtime: what tokio's own timeout does there.
            return tokio::time::timeout_at(deadline.into(), fut).await.ok();
        };
        let runtime = runtime.id();
        let mut armed = false;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
            let sleep = match &mut *slot {
                Some((id, sleep)) if *id == runtime => sleep,
                other => {
                    armed = true;
                    &mut other
                        .insert((runtime, Box::pin(tokio::time::sleep_until(deadline.into()))))
                        .1
                }
            };
            if !armed {
                sleep.as_mut().reset(deadline.into());
                armed = true;
            }
            sleep.as_mut().poll(cx).map(|()| None)
        })
        .await
    }
}

impl PgConnection {
    /// Runs `fut` (a request on this connection's client) until `deadline`. The connection is
    /// marked in flight for the whole request, so a caller that drops this future leaves the
    /// mark for the release path. On expiry a CancelRequest is sent and confirmed
    /// ([`cancel`]), then the request gets [`CANCEL_GRACE`] to end.
    pub(crate) async fn bounded<T>(
        &self,
        deadline: Option<Instant>,
        fut: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Bounded<T> {
        self.set_in_flight(true);
        let Some(deadline) = deadline else {
            let r = fut.await;
            self.set_in_flight(false);
            return Bounded::Done(r);
        };
        let mut fut = std::pin::pin!(fut);
        match self.deadline_timer().race(deadline, fut.as_mut()).await {
            Some(r) => {
                self.set_in_flight(false);
                Bounded::Done(r)
            }
            None => {
                let grace_end = tokio::time::Instant::now() + CANCEL_GRACE;
                let sent = cancel(self.target(), self.session().backend_key(), CANCEL_GRACE).await;
                let finished = tokio::time::timeout_at(grace_end, &mut fut).await.ok();
                if finished.is_some() && sent != CancelOutcome::Uncertain {
                    self.set_in_flight(false);
                } else {
                    self.mark_broken();
                }
                Bounded::TimedOut {
                    finished: if sent == CancelOutcome::Uncertain {
                        None
                    } else {
                        finished
                    },
                }
            }
        }
    }

    /// Turns a [`Bounded`] outcome into a result, marking the connection broken when it is.
    pub(crate) fn settle<T>(
        &mut self,
        outcome: Bounded<T>,
        sql: &str,
        n_params: usize,
        timeout: Option<Duration>,
    ) -> Result<T> {
        match outcome {
            Bounded::Done(Ok(v)) => Ok(v),
            Bounded::Done(Err(e)) => {
                if discards_connection(&e) || self.lost_driver_statement(&e) {
                    self.mark_broken();
                }
                Err(query_error(e, sql, n_params))
            }
            Bounded::TimedOut { finished } => {
                let limit = timeout.unwrap_or_default();
                let detail = match finished {
                    // The statement completed just as the deadline passed: its outcome stands.
                    Some(Ok(v)) => return Ok(v),
                    Some(Err(e)) if e.code().map(|c| c.code()) != Some(QUERY_CANCELED) => {
                        if discards_connection(&e) {
                            self.mark_broken();
                        }
                        return Err(query_error(e, sql, n_params));
                    }
                    Some(Err(_)) => "the statement was cancelled on the server".to_string(),
                    None => format!(
                        "a cancel request was sent but the statement's end was not confirmed within {CANCEL_GRACE:?}; the connection is discarded"
                    ),
                };
                Err(timeout_error(limit, &detail, sql, n_params))
            }
        }
    }
}

/// The [`QueryErrorKind::Timeout`] error of a statement cancelled after `limit`.
pub(crate) fn timeout_error(limit: Duration, detail: &str, sql: &str, n_params: usize) -> Error {
    let mut q = QueryError::new(
        QueryErrorKind::Timeout,
        format!("statement exceeded its timeout of {limit:?}; {detail}"),
        sql,
    )
    .with_params(pgdbm_core::QueryParams::masked(n_params));
    q.sqlstate = Some(QUERY_CANCELED.to_string());
    q.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_timeouts_mean_no_deadline() {
        assert!(deadline_of(None).is_none());
        assert!(deadline_of(Some(Duration::MAX)).is_none());
        assert!(deadline_of(Some(Duration::from_secs(u64::MAX))).is_none());
        let d = deadline_of(Some(Duration::from_secs(5))).unwrap();
        assert!(d > Instant::now());
    }
}
