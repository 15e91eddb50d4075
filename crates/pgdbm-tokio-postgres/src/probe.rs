//! [`SocketProbe`]: a non-blocking look at a pooled connection's socket before it is handed
//! out, so a session the server already ended (its FATAL message and EOF sitting unread in the
//! socket buffer while the connection task has not run yet) is caught at checkout instead of
//! failing the borrower's first statement. The approach of pgx's idle-connection check.

use std::mem::MaybeUninit;

/// What an idle connection's socket holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketState {
    /// Nothing to read: the usual state of an idle connection.
    Quiet,
    /// Bytes are waiting (a notice, a notification, or the server's goodbye): check the
    /// connection with a round trip before reuse.
    Pending,
    /// The peer closed the connection (or the socket reports an error).
    Closed,
}

/// A second handle on a connection's socket (a duplicated file descriptor, sharing the
/// non-blocking open file description tokio set up), used only to peek.
#[derive(Debug)]
pub(crate) struct SocketProbe(socket2::Socket);

impl SocketProbe {
    /// A probe on `stream`'s socket; `None` when the descriptor cannot be duplicated (the
    /// connection then simply goes without the check).
    #[cfg(unix)]
    pub(crate) fn of(stream: &impl std::os::fd::AsFd) -> Option<Self> {
        let fd = stream.as_fd().try_clone_to_owned().ok()?;
        Some(SocketProbe(socket2::Socket::from(fd)))
    }

    /// Peeks at the socket without consuming or blocking.
    pub(crate) fn state(&self) -> SocketState {
        let mut buf = [MaybeUninit::<u8>::uninit(); 1];
        match self.0.peek(&mut buf) {
            Ok(0) => SocketState::Closed,
            Ok(_) => SocketState::Pending,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => SocketState::Quiet,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => SocketState::Pending,
            Err(_) => SocketState::Closed,
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn quiet_pending_and_closed_are_told_apart() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let probe = SocketProbe::of(&client).unwrap();
        assert_eq!(probe.state(), SocketState::Quiet);
        server.write_all(b"x").await.unwrap();
        server.flush().await.unwrap();
        let mut seen = SocketState::Quiet;
        for _ in 0..1000 {
            seen = probe.state();
            if seen != SocketState::Quiet {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(seen, SocketState::Pending);
        // Peeking consumed nothing; the peer going away is seen once the byte is read.
        let mut b = [0u8; 1];
        client.readable().await.unwrap();
        assert_eq!(client.try_read(&mut b).unwrap(), 1);
        drop(server);
        let mut seen = SocketState::Quiet;
        for _ in 0..1000 {
            seen = probe.state();
            if seen == SocketState::Closed {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(seen, SocketState::Closed);
    }
}
