//! CancelRequest, sent so that its effect is settled before the connection is used again.
//!
//! tokio-postgres's `cancel_query_raw` writes the request and returns; the server handles it
//! asynchronously, so its signal can reach the backend after the cancelled statement ended and
//! abort the *next* one. PostgreSQL closes the cancel connection only after it signalled the
//! backend, so reading the stream to its end means the signal was sent: from then on, a
//! statement that finishes can no longer be hit by it (a backend waiting for a command ignores
//! a cancel).

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::connect::Target;

/// What became of a CancelRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelOutcome {
    /// The server handled it (it closed the cancel stream after signalling the backend).
    Delivered,
    /// It never reached the server (no cancel key yet, or the cancel stream could not be
    /// opened): nothing can arrive late.
    NotSent,
    /// It may have reached the server, but its handling was not confirmed in time: a late
    /// signal cannot be ruled out, so the connection must not be reused.
    Uncertain,
}

/// Sends a CancelRequest for backend `key` (process id, secret) to `target` and waits, at most
/// `limit`, until the server closes the stream.
///
/// Boxed: opening the stream (TCP, TLS) is a future of kilobytes, and the statement path that
/// may need a cancel would otherwise carry it on every request.
pub(crate) async fn cancel(
    target: &Target,
    key: Option<(i32, i32)>,
    limit: Duration,
) -> CancelOutcome {
    Box::pin(send_cancel(target, key, limit)).await
}

async fn send_cancel(target: &Target, key: Option<(i32, i32)>, limit: Duration) -> CancelOutcome {
    let Some((pid, secret)) = key else {
        return CancelOutcome::NotSent;
    };
    let mut written = false;
    let run = async {
        let mut stream = target.open().await.map_err(|_| false)?;
        let mut buf = BytesMut::new();
        frontend::cancel_request(pid, secret, &mut buf);
        written = true;
        stream.write_all(&buf).await.map_err(|_| true)?;
        stream.flush().await.map_err(|_| true)?;
        let mut sink = [0u8; 64];
        loop {
            match stream.read(&mut sink).await {
                Ok(0) => return Ok::<(), bool>(()),
                Ok(_) => continue,
                Err(_) => return Err(true),
            }
        }
    };
    let outcome = match tokio::time::timeout(limit, run).await {
        Ok(Ok(())) => CancelOutcome::Delivered,
        Ok(Err(false)) => CancelOutcome::NotSent,
        Ok(Err(true)) | Err(_) => {
            if written {
                CancelOutcome::Uncertain
            } else {
                CancelOutcome::NotSent
            }
        }
    };
    tracing::debug!(target: "pgdbm::wire", pid, ?outcome, "cancel request");
    outcome
}
