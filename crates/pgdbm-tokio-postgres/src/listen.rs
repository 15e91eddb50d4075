//! LISTEN/NOTIFY: a dedicated connection whose notifications become a stream
//! ([`pgdbm_core::Connection::listen`]).
//!
//! tokio-postgres delivers notifications through its connection task's `poll_message`; the
//! task (see `connect.rs`) hands them to the connection's [`Inbox`], which forwards them to a
//! listener when one registered, and reports the task's end (the connection was lost) there
//! too. The listener then opens a new connection with the config's retry schedule
//! ([`PgConnection::connect`]), runs `LISTEN` again and yields
//! [`ListenEvent::Reconnected`] with the gap before any later notification.

use std::sync::Mutex;
use std::time::Instant;

use pgdbm_core::{
    quote_catalog_name, BoxStream, Config, Connection, ListenEvent, Notification, Result,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::connection::PgConnection;

/// What the connection task tells a listener: a notification, or why the connection ended.
type Message = std::result::Result<Notification, String>;

/// Where a connection's task puts the notifications it receives: nowhere until a listener
/// registers (pool connections never do).
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    listener: Mutex<Option<UnboundedSender<Message>>>,
}

impl Inbox {
    fn sender(&self) -> std::sync::MutexGuard<'_, Option<UnboundedSender<Message>>> {
        match self.listener.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Called by the connection task for each notification.
    pub(crate) fn deliver(&self, n: &tokio_postgres::Notification) {
        if let Some(tx) = self.sender().as_ref() {
            let _ = tx.send(Ok(Notification {
                channel: n.channel().to_string(),
                payload: n.payload().to_string(),
                process_id: n.process_id(),
            }));
        }
    }

    /// Called by the connection task when it ends: tells the listener why and lets it go.
    pub(crate) fn close(&self, reason: String) {
        if let Some(tx) = self.sender().take() {
            let _ = tx.send(Err(reason));
        }
    }

    fn register(&self, tx: UnboundedSender<Message>) {
        *self.sender() = Some(tx);
    }
}

/// A listening connection and what it receives.
struct Listener {
    config: Config,
    statement: String,
    /// Kept open while the stream lives; dropping it closes the session.
    conn: Option<PgConnection>,
    rx: UnboundedReceiver<Message>,
    ended: bool,
}

/// `LISTEN a; LISTEN b` with each channel quoted as an identifier.
fn listen_statement(channels: &[String]) -> Result<String> {
    Ok(channels
        .iter()
        .map(|c| quote_catalog_name(c).map(|q| format!("LISTEN {q}")))
        .collect::<Result<Vec<_>>>()?
        .join("; "))
}

/// Opens a connection (with retries), registers for its notifications, then runs `LISTEN`.
async fn open(
    config: &Config,
    statement: &str,
) -> Result<(PgConnection, UnboundedReceiver<Message>)> {
    let mut conn = PgConnection::connect(config).await?;
    let (tx, rx) = unbounded_channel();
    conn.session().notifications.register(tx);
    if !statement.is_empty() {
        conn.batch_execute(statement, config.command_timeout)
            .await?;
    }
    Ok((conn, rx))
}

/// Opens the listening connection and returns its stream.
pub(crate) async fn listen(config: &Config, channels: &[String]) -> Result<BoxStream<ListenEvent>> {
    let statement = listen_statement(channels)?;
    let (conn, rx) = open(config, &statement).await?;
    let listener = Listener {
        config: config.clone(),
        statement,
        conn: Some(conn),
        rx,
        ended: false,
    };
    Ok(Box::pin(futures_util::stream::unfold(listener, next)))
}

async fn next(mut l: Listener) -> Option<(Result<ListenEvent>, Listener)> {
    if l.ended {
        return None;
    }
    let reason = match l.rx.recv().await {
        Some(Ok(n)) => return Some((Ok(ListenEvent::Notification(n)), l)),
        Some(Err(reason)) => reason,
        None => "the connection task ended".to_string(),
    };
    let lost = Instant::now();
    l.conn = None;
    tracing::debug!(target: "pgdbm", reason = %reason, "listening connection lost; reconnecting");
    match open(&l.config, &l.statement).await {
        Ok((conn, rx)) => {
            l.conn = Some(conn);
            l.rx = rx;
            let event = ListenEvent::Reconnected {
                gap: lost.elapsed(),
                reason,
            };
            Some((Ok(event), l))
        }
        Err(e) => {
            l.ended = true;
            Some((Err(e), l))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_quoted() {
        let s = listen_statement(&["jobs".into(), "Mixed Case".into()]).unwrap();
        assert_eq!(s, "LISTEN \"jobs\"; LISTEN \"Mixed Case\"");
        assert!(listen_statement(&["bad\0".into()]).is_err());
    }
}
