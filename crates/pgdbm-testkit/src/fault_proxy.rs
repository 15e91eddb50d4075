//! [`FaultProxy`]: a fault-injecting TCP proxy between a client and a PostgreSQL server, for
//! testing how code behaves when the network misbehaves.
//!
//! The proxy listens on `127.0.0.1:<ephemeral port>` and forwards every accepted connection to
//! its target. At run time, per direction, it can delay each chunk, hold the traffic
//! (blackhole: bytes are kept, connections stay open, as on a half-open network), cut every
//! connection at once with a TCP reset, cut the connection that carries the next N bytes, and
//! refuse new connections. Faults apply to current and new connections alike.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pgdbm_core::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::TestServer;

/// How long the proxy waits for its target when a client connects; on expiry the client's
/// connection is reset.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Size of one forwarded chunk (the unit of [`FaultProxy::set_latency`]).
const CHUNK: usize = 16 * 1024;

/// The direction of traffic a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client (your code) to the server.
    ClientToServer,
    /// From the server to the client.
    ServerToClient,
    /// Both directions.
    Both,
}

impl Direction {
    /// The indices of the one-way directions this covers (0: client to server, 1: server to
    /// client).
    fn ways(self) -> &'static [usize] {
        match self {
            Direction::ClientToServer => &[C2S],
            Direction::ServerToClient => &[S2C],
            Direction::Both => &[C2S, S2C],
        }
    }
}

const C2S: usize = 0;
const S2C: usize = 1;

/// Counters of a [`FaultProxy`] since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FaultProxyStats {
    /// Connections accepted, including refused ones.
    pub accepted: u64,
    /// Connections reset at once because [`FaultProxy::refuse_new`] was on.
    pub refused: u64,
    /// Connections open now (both sides).
    pub live: usize,
    /// Connections whose target could not be reached (the client side was reset).
    pub upstream_failures: u64,
    /// Connections closed by [`FaultProxy::cut_all`] or [`FaultProxy::cut_after_bytes`].
    pub cut: u64,
    /// Bytes forwarded from client to server.
    pub bytes_client_to_server: u64,
    /// Bytes forwarded from server to client.
    pub bytes_server_to_client: u64,
    /// Chunks forwarded after an added latency.
    pub delayed_chunks: u64,
}

/// The faults both pumps of every connection follow; changes wake them.
#[derive(Debug, Clone, Default)]
struct Faults {
    latency: [Duration; 2],
    blackhole: [bool; 2],
}

/// State shared by the proxy handle, its accept loop and its connections.
struct Shared {
    /// The target's addresses, tried in order.
    targets: Vec<SocketAddr>,
    faults: watch::Sender<Faults>,
    refuse: AtomicBool,
    /// Armed one-shot cuts: bytes still allowed through per direction.
    cut_budget: Mutex<[Option<u64>; 2]>,
    /// Kill switch of every open connection, by id.
    conns: Mutex<HashMap<u64, watch::Sender<bool>>>,
    next_id: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    upstream_failures: AtomicU64,
    cut: AtomicU64,
    bytes: [AtomicU64; 2],
    delayed_chunks: AtomicU64,
}

impl Shared {
    fn new(targets: Vec<SocketAddr>) -> Shared {
        Shared {
            targets,
            faults: watch::channel(Faults::default()).0,
            refuse: AtomicBool::new(false),
            cut_budget: Mutex::new([None, None]),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            upstream_failures: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            bytes: [AtomicU64::new(0), AtomicU64::new(0)],
            delayed_chunks: AtomicU64::new(0),
        }
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<u64, watch::Sender<bool>>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map stays valid.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn budget(&self) -> MutexGuard<'_, [Option<u64>; 2]> {
        self.cut_budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many of `n` bytes may pass in direction `way`, and whether the connection is to be
    /// cut after them (which disarms the cut).
    fn take_budget(&self, way: usize, n: usize) -> (usize, bool) {
        let mut budget = self.budget();
        match budget[way] {
            None => (n, false),
            Some(left) => {
                let n64 = n as u64;
                if n64 < left {
                    budget[way] = Some(left - n64);
                    (n, false)
                } else {
                    budget[way] = None;
                    // `left <= n`, so it fits in usize.
                    (usize::try_from(left).unwrap_or(n), true)
                }
            }
        }
    }
}

/// A fault-injecting TCP proxy, for tests of how code copes with network failures.
///
/// Start it in front of a server, point the code under test at [`port`](Self::port) (e.g.
/// `config.port = proxy.port()`), then inject faults while it runs:
///
/// | Fault | Method | Effect |
/// |---|---|---|
/// | latency | [`set_latency`](Self::set_latency) | each chunk in that direction waits before it is forwarded |
/// | blackhole | [`blackhole`](Self::blackhole) | traffic is held, not forwarded; connections stay open (a half-open network) |
/// | recovery | [`heal`](Self::heal) | every fault is removed; held bytes are forwarded in order, nothing is dropped |
/// | cut | [`cut_all`](Self::cut_all) | every open connection is reset (RST) on both sides at once |
/// | cut mid-stream | [`cut_after_bytes`](Self::cut_after_bytes) | the connection carrying the next N bytes in that direction is reset after them |
/// | refusal | [`refuse_new`](Self::refuse_new) | new connections are accepted and reset at once, so connecting fails quickly |
///
/// Faults apply to open and new connections alike. Dropping the proxy stops accepting, resets
/// every open connection and ends all its tasks. It must be started inside a Tokio runtime and
/// never panics.
///
/// ```no_run
/// # async fn demo() -> pgdbm_core::Result<()> {
/// use pgdbm_testkit::{Direction, FaultProxy, TestServer};
///
/// let server = TestServer::shared()?;
/// let proxy = FaultProxy::for_server(server)?;
/// let mut config = server.config("postgres");
/// config.port = proxy.port(); // connect through the proxy
/// proxy.blackhole(Direction::Both); // queries now time out
/// proxy.heal(); // and work again
/// # Ok(()) }
/// ```
pub struct FaultProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    target: SocketAddr,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("target", &self.target())
            .field("faults", &*self.shared.faults.borrow())
            .field("refuse_new", &self.shared.refuse.load(Ordering::Relaxed))
            .field("live", &self.connections())
            .finish()
    }
}

fn proxy_error(message: String, source: Option<io::Error>) -> Error {
    Error::TestDatabase {
        name: None,
        message,
        source: source.map(Into::into),
    }
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:<ephemeral port>` forwarding to `target`, e.g.
    /// `("127.0.0.1", 5432)` or a [`SocketAddr`] (when it resolves to several addresses, each
    /// connection tries them in order).
    ///
    /// # Errors
    ///
    /// [`Error::TestDatabase`] when `target` does not resolve, no Tokio runtime is running, or
    /// the listener cannot be bound.
    pub fn start(target: impl ToSocketAddrs) -> Result<FaultProxy> {
        let targets: Vec<SocketAddr> = target
            .to_socket_addrs()
            .map_err(|e| {
                proxy_error(
                    format!("fault proxy: cannot resolve the target: {e}"),
                    Some(e),
                )
            })?
            .collect();
        let Some(&target) = targets.first() else {
            return Err(proxy_error(
                "fault proxy: the target resolves to no address".into(),
                None,
            ));
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            proxy_error(
                format!(
                    "fault proxy: start it inside a Tokio runtime (e.g. in a #[tokio::test]): {e}"
                ),
                None,
            )
        })?;
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| {
                proxy_error(
                    format!("fault proxy: cannot listen on 127.0.0.1: {e}"),
                    Some(e),
                )
            })?;
        let addr = std_listener
            .local_addr()
            .map_err(|e| proxy_error(format!("fault proxy: no local address: {e}"), Some(e)))?;
        let listener = {
            let _enter = runtime.enter();
            TcpListener::from_std(std_listener).map_err(|e| {
                proxy_error(
                    format!("fault proxy: cannot register the listener: {e}"),
                    Some(e),
                )
            })?
        };
        let shared = Arc::new(Shared::new(targets));
        let accept = runtime.spawn(accept_loop(listener, Arc::clone(&shared)));
        tracing::debug!(%addr, %target, "fault proxy started");
        Ok(FaultProxy {
            shared,
            addr,
            target,
            accept,
        })
    }

    /// Starts a proxy in front of `server` (its host and port).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn for_server(server: &TestServer) -> Result<FaultProxy> {
        Self::start((server.host(), server.port()))
    }

    /// The port to connect to (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address connections are forwarded to (the first the target resolved to; the
    /// others are tried in order when it does not answer).
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Delays every chunk forwarded in `direction` by `latency` (zero: none). Chunks of one
    /// direction keep their order, so the delay also caps throughput (one chunk of up to
    /// 16 KiB per `latency`), which is fine for query traffic.
    pub fn set_latency(&self, direction: Direction, latency: Duration) {
        self.shared.faults.send_modify(|f| {
            for &w in direction.ways() {
                f.latency[w] = latency;
            }
        });
    }

    /// Holds all traffic in `direction`: nothing more is forwarded (bytes already read are
    /// kept, the rest waits in the kernel buffers) and connections stay open, as when a
    /// network path dies without a reset. [`heal`](Self::heal) forwards the held bytes.
    pub fn blackhole(&self, direction: Direction) {
        self.shared.faults.send_modify(|f| {
            for &w in direction.ways() {
                f.blackhole[w] = true;
            }
        });
    }

    /// Removes every fault: blackholes (the held bytes are then forwarded in order; nothing is
    /// dropped), latency, armed [`cut_after_bytes`](Self::cut_after_bytes) and
    /// [`refuse_new`](Self::refuse_new). Connections already cut stay closed.
    pub fn heal(&self) {
        *self.shared.budget() = [None, None];
        self.shared.refuse.store(false, Ordering::SeqCst);
        self.shared.faults.send_replace(Faults::default());
    }

    /// Closes every open connection at once, on both sides, with a TCP reset (no FIN, no
    /// goodbye message), and returns how many were open. New connections are still accepted.
    pub fn cut_all(&self) -> usize {
        let conns = self.shared.conns();
        for kill in conns.values() {
            kill.send_replace(true);
        }
        conns.len()
    }

    /// Arms a one-shot cut: the next `n` bytes forwarded in `direction` (over all connections,
    /// counted from now) pass, then the connection that carried the last of them is reset on
    /// both sides and the cut disarms. `n = 0` cuts the connection that next sends anything in
    /// that direction, before forwarding it. With [`Direction::Both`] each direction is armed
    /// separately.
    pub fn cut_after_bytes(&self, direction: Direction, n: u64) {
        let mut budget = self.shared.budget();
        for &w in direction.ways() {
            budget[w] = Some(n);
        }
    }

    /// When `true`, every new connection is accepted and reset at once (the client sees a
    /// reset during its handshake, a quick connection error rather than a hang); open
    /// connections are not affected. `false` accepts normally again.
    pub fn refuse_new(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.shared.conns().len()
    }

    /// The proxy's counters.
    pub fn stats(&self) -> FaultProxyStats {
        let s = &self.shared;
        FaultProxyStats {
            accepted: s.accepted.load(Ordering::SeqCst),
            refused: s.refused.load(Ordering::SeqCst),
            live: self.connections(),
            upstream_failures: s.upstream_failures.load(Ordering::SeqCst),
            cut: s.cut.load(Ordering::SeqCst),
            bytes_client_to_server: s.bytes[C2S].load(Ordering::SeqCst),
            bytes_server_to_client: s.bytes[S2C].load(Ordering::SeqCst),
            delayed_chunks: s.delayed_chunks.load(Ordering::SeqCst),
        }
    }
}

impl Drop for FaultProxy {
    /// Stops accepting (the listener closes when the runtime drops the accept task, at once on
    /// a running runtime) and resets every open connection.
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                // Per-connection errors (e.g. the client already gave up) or fd exhaustion:
                // keep serving, but do not spin.
                tracing::debug!(error = %e, "fault proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.refuse.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            reset(&client);
            continue;
        }
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let (kill, killed) = watch::channel(false);
        shared.conns().insert(id, kill);
        let registration = Registration {
            shared: Arc::clone(&shared),
            id,
        };
        tokio::spawn(serve(client, registration, killed));
    }
}

/// Removes a connection from the live set when its task ends, however it ends.
struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.conns().remove(&self.id);
    }
}

/// Closes a socket with a reset: a zero linger makes the close send RST instead of FIN.
fn reset(stream: &TcpStream) {
    if let Err(e) = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO)) {
        tracing::debug!(error = %e, "fault proxy: cannot set SO_LINGER; closing normally");
    }
}

/// Why a proxied connection ended.
enum End {
    /// Both sides finished normally (EOF each way).
    Closed,
    /// Cut by the proxy, or one side failed: reset both.
    Reset,
}

async fn serve(mut client: TcpStream, reg: Registration, mut killed: watch::Receiver<bool>) {
    let shared = Arc::clone(&reg.shared);
    let upstream = tokio::select! {
        r = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(&shared.targets[..])) => r,
        _ = killed.wait_for(|k| *k) => {
            shared.cut.fetch_add(1, Ordering::SeqCst);
            reset(&client);
            return;
        }
    };
    let mut server = match upstream {
        Ok(Ok(server)) => server,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, target = ?shared.targets, "fault proxy: cannot reach the target");
            shared.upstream_failures.fetch_add(1, Ordering::SeqCst);
            reset(&client);
            return;
        }
        Err(_) => {
            shared.upstream_failures.fetch_add(1, Ordering::SeqCst);
            reset(&client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let end = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let both =
            async { tokio::try_join!(pump(&shared, C2S, cr, sw), pump(&shared, S2C, sr, cw)) };
        tokio::select! {
            r = both => match r {
                Ok(_) => End::Closed,
                Err(e) => {
                    tracing::debug!(error = %e, "fault proxy: connection ended");
                    End::Reset
                }
            },
            _ = killed.wait_for(|k| *k) => {
                shared.cut.fetch_add(1, Ordering::SeqCst);
                End::Reset
            }
        }
    };
    if let End::Reset = end {
        reset(&client);
        reset(&server);
    }
    drop(reg);
}

/// Forwards one direction until EOF (then half-closes the other side) or an error; a
/// triggered [`FaultProxy::cut_after_bytes`] is an error, which resets the connection.
async fn pump(
    shared: &Shared,
    way: usize,
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
) -> io::Result<()> {
    let mut faults = shared.faults.subscribe();
    let mut buf = vec![0u8; CHUNK];
    loop {
        open(&mut faults, way).await?;
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        // Bytes read just before a blackhole began are held too.
        open(&mut faults, way).await?;
        let latency = faults.borrow().latency[way];
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
            shared.delayed_chunks.fetch_add(1, Ordering::SeqCst);
            open(&mut faults, way).await?;
        }
        let (pass, cut) = shared.take_budget(way, n);
        if pass > 0 {
            to.write_all(&buf[..pass]).await?;
            shared.bytes[way].fetch_add(pass as u64, Ordering::SeqCst);
        }
        if cut {
            shared.cut.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::other("cut by FaultProxy::cut_after_bytes"));
        }
    }
}

/// Waits while direction `way` is blackholed.
async fn open(faults: &mut watch::Receiver<Faults>, way: usize) -> io::Result<()> {
    faults
        .wait_for(|f| !f.blackhole[way])
        .await
        .map(|_| ())
        .map_err(|_| io::Error::other("fault proxy stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared::new(vec![SocketAddr::from(([127, 0, 0, 1], 1))])
    }

    #[test]
    fn budget_passes_exactly_n_bytes_then_disarms() {
        let s = shared();
        assert_eq!(s.take_budget(C2S, 100), (100, false));
        *s.budget() = [Some(10), None];
        assert_eq!(s.take_budget(S2C, 100), (100, false));
        assert_eq!(s.take_budget(C2S, 4), (4, false));
        assert_eq!(s.take_budget(C2S, 100), (6, true));
        assert_eq!(s.take_budget(C2S, 100), (100, false));
        *s.budget() = [Some(0), None];
        assert_eq!(s.take_budget(C2S, 5), (0, true));
        *s.budget() = [Some(5), None];
        assert_eq!(s.take_budget(C2S, 5), (5, true));
    }

    proptest::proptest! {
        /// However the traffic is chunked, exactly `n` bytes pass before the single cut.
        #[test]
        fn budget_is_exact(n in 0u64..10_000, chunks in proptest::collection::vec(1usize..3000, 1..40)) {
            let s = shared();
            *s.budget() = [None, Some(n)];
            let mut passed = 0u64;
            let mut cuts = 0;
            for c in chunks {
                if cuts > 0 { break; }
                let (p, cut) = s.take_budget(S2C, c);
                passed += p as u64;
                if cut { cuts += 1; }
            }
            if cuts == 1 {
                proptest::prop_assert_eq!(passed, n);
            } else {
                proptest::prop_assert!(passed < n);
            }
        }
    }
}
