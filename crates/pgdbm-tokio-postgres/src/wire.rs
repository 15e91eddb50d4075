//! [`WireShim`]: a protocol-aware stream between tokio-postgres and the socket, so that
//! `execute_many` sends one Sync per chunk of rows instead of one per row.
//!
//! # Why it exists
//!
//! tokio-postgres 0.7 appends a `Sync` to every request: `client.execute(stmt, params)` writes
//! `Bind`, `Execute`, `Sync`. The server answers every `Sync` with `ReadyForQuery` and flushes
//! its output, so pipelining 10 000 executes still costs 10 000 server flushes (and as many
//! client wake-ups). asyncpg's `executemany` sends `Bind`/`Execute` for every row and a single
//! `Sync`. tokio-postgres has no API for that (rust-postgres PR #1352 is still open), so the
//! shim rewrites the byte stream underneath it instead.
//!
//! # What it touches
//!
//! The shim always parses the message framing in both directions (tag byte + `int32` length;
//! bodies are counted down, never buffered), which is cheap. It changes the stream only while
//! a batch is armed ([`Batch::arm`], called by `execute_many` for one chunk of `n` rows when no
//! other request is in flight on the connection):
//!
//! - frontend → server: the `Sync` that follows the `Execute` of batch rows `0..n-1` is
//!   dropped; the `Sync` after the last row's `Execute` goes through. The whole chunk is then
//!   one pipeline that the server ends with one `ReadyForQuery`.
//! - server → frontend: tokio-postgres still waits for one `ReadyForQuery` per request, so the
//!   shim injects a synthetic `ReadyForQuery` after each row's `CommandComplete` (or
//!   `EmptyQueryResponse`) except the last, whose real `ReadyForQuery` follows. When a row
//!   fails, the server skips everything up to the `Sync`: the shim passes the real
//!   `ErrorResponse`, then completes every later row of the chunk with a synthetic
//!   `ErrorResponse` (SQLSTATE 25P02, message [`SYNTHETIC_ABORT_MESSAGE`]) so each pending
//!   future ends with an error, and the real `ReadyForQuery` ends the last one. Synthetic
//!   answers are only produced for rows whose `Execute` has already been written (tokio-postgres
//!   registers a request's response slot before writing it), so they never arrive early.
//!
//! Everything else (the startup exchange, authentication, other requests, `Close` + `Sync` of
//! dropped statements, notices, notifications) passes through unchanged.
//!
//! # Limits
//!
//! - The shim sits above TLS: pgdbm negotiates TLS itself and hands tokio-postgres an already
//!   encrypted stream with `NoTls`, so SCRAM channel binding (`SCRAM-SHA-256-PLUS`) is not used
//!   (`channel_binding=prefer` behaviour falls back to plain SCRAM; `require` is not offered).
//! - A batch must be armed only when the connection is idle (every earlier request answered),
//!   and nothing but the batch's own `Bind`/`Execute`/`Sync` requests may be sent until its
//!   last `Execute` is written. `execute_many` guarantees both: it holds `&mut` on the
//!   connection, waits for its `BEGIN`/`SAVEPOINT`, and checks every row's parameters before
//!   arming, so no row can fail on the client side after the batch started.
//! - If the connection ends mid-batch, the batch state is reset; the pending futures fail with
//!   tokio-postgres's "connection closed" error as they would without the shim.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The message of the synthetic `ErrorResponse` (SQLSTATE 25P02) given to the rows of a chunk
/// that follow a failing row: the server never ran them.
pub(crate) const SYNTHETIC_ABORT_MESSAGE: &str =
    "not executed: an earlier row of this execute_many batch failed";

/// Unwritten output beyond which `poll_write` stops accepting more.
const WRITE_LIMIT: usize = 256 * 1024;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// The batch state shared by a [`WireShim`] and the connection that arms it.
#[derive(Debug, Default)]
pub(crate) struct BatchState {
    /// Rows of the armed batch; 0 when idle.
    rows: usize,
    /// The write side still filters (the last row's `Sync` has not been written yet).
    w_active: bool,
    /// `Execute` messages of the batch written so far.
    w_execs: usize,
    /// The read side still rewrites (the batch's real `ReadyForQuery` has not passed yet).
    r_active: bool,
    /// The row whose answer is being read.
    r_row: usize,
    /// The next row that needs a synthetic `ErrorResponse` (`rows` when none does).
    r_next_synth: usize,
    /// Only the batch's real `ReadyForQuery` is still expected.
    r_awaiting_z: bool,
    /// A batch was abandoned half-queued: the connection must be discarded.
    poisoned: bool,
}

impl BatchState {
    fn reset(&mut self) {
        let poisoned = self.poisoned;
        *self = BatchState::default();
        self.poisoned = poisoned;
    }

    fn is_idle(&self) -> bool {
        !self.w_active && !self.r_active
    }

    /// Called with each complete frontend header; true when the message must be dropped.
    fn on_frontend(&mut self, tag: u8, prev: u8, body: usize) -> bool {
        if !self.w_active {
            return false;
        }
        match tag {
            b'E' => {
                self.w_execs += 1;
                false
            }
            b'S' if prev == b'E' && body == 0 => {
                if self.w_execs < self.rows {
                    true
                } else {
                    self.w_active = false;
                    false
                }
            }
            _ => false,
        }
    }

    /// Emits the synthetic answers owed to rows after a failed one, up to `limit` rows.
    fn emit_owed(&mut self, ready: &mut Vec<u8>, limit: usize) {
        while self.r_next_synth < self.rows && self.r_next_synth < limit {
            push_abort_error(ready);
            if self.r_next_synth + 1 < self.rows {
                push_ready_for_query(ready);
            }
            self.r_next_synth += 1;
        }
    }

    /// Called with each complete backend header, before it is passed on.
    fn on_backend_header(&mut self, tag: u8, ready: &mut Vec<u8>) {
        if !self.r_active {
            return;
        }
        // The real ReadyForQuery only comes after the last row's Sync was written, so every
        // row's request is registered: everything owed goes out before it.
        let limit = if tag == b'Z' { self.rows } else { self.w_execs };
        self.emit_owed(ready, limit);
    }

    /// Called when a backend message has been passed on completely.
    fn on_backend_end(&mut self, tag: u8, ready: &mut Vec<u8>) {
        if !self.r_active {
            return;
        }
        if self.r_awaiting_z {
            if tag == b'Z' {
                self.r_active = false;
                if !self.w_active {
                    self.reset();
                }
            }
            return;
        }
        match tag {
            b'C' | b'I' => {
                if self.r_row + 1 < self.rows {
                    push_ready_for_query(ready);
                    self.r_row += 1;
                } else {
                    self.r_awaiting_z = true;
                }
            }
            b'E' => {
                let k = self.r_row;
                if k + 1 < self.rows {
                    push_ready_for_query(ready);
                    self.r_next_synth = k + 1;
                }
                self.r_awaiting_z = true;
                let limit = self.w_execs;
                self.emit_owed(ready, limit);
            }
            b'Z' => {
                // A ReadyForQuery the batch did not expect: the stream no longer matches the
                // batch; stop rewriting rather than inject answers nobody waits for.
                self.reset();
            }
            _ => {}
        }
    }
}

fn push_ready_for_query(out: &mut Vec<u8>) {
    out.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'T']);
}

fn push_abort_error(out: &mut Vec<u8>) {
    let mut body: Vec<u8> = Vec::with_capacity(96);
    for (field, value) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', "25P02"),
        (b'M', SYNTHETIC_ABORT_MESSAGE),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    out.push(b'E');
    // The body is well under i32::MAX bytes (a fixed, short message).
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&body);
}

/// The handle `execute_many` uses to arm a batch on its connection's [`WireShim`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Batch(Arc<Mutex<BatchState>>);

impl Batch {
    fn lock(&self) -> MutexGuard<'_, BatchState> {
        // The state is plain data updated in small steps; a panic elsewhere while it was held
        // cannot leave it in a state worse than "reset it", which the next arm check does.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Arms a batch of `rows` rows (>= 1). False (nothing armed) when a batch is still active.
    pub(crate) fn arm(&self, rows: usize) -> bool {
        let mut st = self.lock();
        if !st.is_idle() || rows == 0 || st.poisoned {
            return false;
        }
        *st = BatchState {
            rows,
            w_active: true,
            w_execs: 0,
            r_active: true,
            r_row: 0,
            r_next_synth: rows,
            r_awaiting_z: false,
            poisoned: false,
        };
        true
    }

    /// True when no batch is active.
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.lock().is_idle()
    }

    /// Forgets any active batch (the connection failed or the batch was abandoned).
    pub(crate) fn reset(&self) {
        self.lock().reset();
    }

    /// Marks the connection unusable: a batch was abandoned before all its rows were queued,
    /// so the server may hold rows without their Sync. The shim stops rewriting; the
    /// connection reports itself broken and is discarded (the server then rolls back).
    pub(crate) fn poison(&self) {
        let mut st = self.lock();
        st.reset();
        st.poisoned = true;
    }

    /// True after [`poison`](Self::poison).
    pub(crate) fn is_poisoned(&self) -> bool {
        self.lock().poisoned
    }
}

/// Poisons the connection when dropped before [`complete`](Self::complete): `execute_many` was
/// cancelled (its future dropped) after its `BEGIN`/`SAVEPOINT` but before its closing
/// statement was queued, possibly with only part of a chunk queued. The server may then hold
/// an open transaction or rows without their Sync, which pgdbm's bookkeeping does not know of,
/// so the connection must not be reused.
pub(crate) struct ArmGuard<'a> {
    batch: &'a Batch,
    complete: bool,
}

impl<'a> ArmGuard<'a> {
    /// Guards an `execute_many` pipeline on the connection of `batch`.
    pub(crate) fn new(batch: &'a Batch) -> Self {
        ArmGuard {
            batch,
            complete: false,
        }
    }

    /// The closing statement is queued: the pipeline completes on its own from here.
    pub(crate) fn complete(&mut self) {
        self.complete = true;
    }
}

impl Drop for ArmGuard<'_> {
    fn drop(&mut self) {
        if !self.complete {
            self.batch.poison();
        }
    }
}

/// Incremental message framing: collects header bytes across reads/writes and counts bodies
/// down without buffering them.
#[derive(Debug)]
struct Framer {
    head: [u8; 5],
    have: usize,
    body_left: usize,
    /// The next header has no tag byte (the frontend's startup message).
    untagged: bool,
    /// Tag of the message in progress.
    tag: u8,
    /// Tag of the previous complete message.
    prev: u8,
    /// The body of the message in progress is dropped.
    dropping: bool,
}

impl Framer {
    fn new(untagged_first: bool) -> Self {
        Framer {
            head: [0; 5],
            have: 0,
            body_left: 0,
            untagged: untagged_first,
            tag: 0,
            prev: 0,
            dropping: false,
        }
    }

    fn header_len(&self) -> usize {
        if self.untagged {
            4
        } else {
            5
        }
    }

    /// Decodes the completed header: (tag, body length).
    fn decode(&self) -> (u8, usize) {
        let (tag, len) = if self.untagged {
            (0, [self.head[0], self.head[1], self.head[2], self.head[3]])
        } else {
            (
                self.head[0],
                [self.head[1], self.head[2], self.head[3], self.head[4]],
            )
        };
        (tag, (u32::from_be_bytes(len) as usize).saturating_sub(4))
    }
}

/// A stream that parses PostgreSQL protocol framing and, while a [`Batch`] is armed, merges
/// the per-request `Sync`s of an `execute_many` chunk (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct WireShim<S> {
    inner: S,
    batch: Batch,
    wframe: Framer,
    out: Vec<u8>,
    out_pos: usize,
    rframe: Framer,
    ready: Vec<u8>,
    ready_pos: usize,
    scratch: Vec<u8>,
}

impl<S> WireShim<S> {
    /// Wraps `inner` (a plain or TLS stream, before the startup message was sent).
    pub(crate) fn new(inner: S, batch: Batch) -> Self {
        WireShim {
            inner,
            batch,
            wframe: Framer::new(true),
            out: Vec::new(),
            out_pos: 0,
            rframe: Framer::new(false),
            ready: Vec::new(),
            ready_pos: 0,
            scratch: vec![0; READ_CHUNK],
        }
    }

    /// Filters frontend bytes into `out`.
    fn filter_output(&mut self, mut input: &[u8]) {
        let f = &mut self.wframe;
        let mut st: Option<MutexGuard<'_, BatchState>> = None;
        while !input.is_empty() {
            if f.body_left > 0 {
                let take = f.body_left.min(input.len());
                if !f.dropping {
                    self.out.extend_from_slice(&input[..take]);
                }
                f.body_left -= take;
                input = &input[take..];
                if f.body_left == 0 {
                    f.prev = f.tag;
                }
                continue;
            }
            let hlen = f.header_len();
            let take = (hlen - f.have).min(input.len());
            f.head[f.have..f.have + take].copy_from_slice(&input[..take]);
            f.have += take;
            input = &input[take..];
            if f.have < hlen {
                break;
            }
            let (tag, body) = f.decode();
            let st = st.get_or_insert_with(|| self.batch.lock());
            let drop = !f.untagged && st.on_frontend(tag, f.prev, body);
            if !drop {
                self.out.extend_from_slice(&f.head[..hlen]);
            }
            f.have = 0;
            f.untagged = false;
            f.tag = tag;
            f.dropping = drop;
            f.body_left = body;
            if body == 0 {
                f.prev = tag;
            }
        }
    }

    /// Passes backend bytes into `ready`, rewriting them while a batch is armed.
    fn filter_input(&mut self, len: usize) {
        let mut input = &self.scratch[..len];
        let f = &mut self.rframe;
        let mut st = self.batch.lock();
        while !input.is_empty() {
            if f.body_left > 0 {
                let take = f.body_left.min(input.len());
                self.ready.extend_from_slice(&input[..take]);
                f.body_left -= take;
                input = &input[take..];
                if f.body_left == 0 {
                    st.on_backend_end(f.tag, &mut self.ready);
                }
                continue;
            }
            let take = (5 - f.have).min(input.len());
            f.head[f.have..f.have + take].copy_from_slice(&input[..take]);
            f.have += take;
            input = &input[take..];
            if f.have < 5 {
                break;
            }
            let (tag, body) = f.decode();
            st.on_backend_header(tag, &mut self.ready);
            self.ready.extend_from_slice(&f.head);
            f.have = 0;
            f.tag = tag;
            f.body_left = body;
            if body == 0 {
                st.on_backend_end(tag, &mut self.ready);
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> WireShim<S> {
    /// Writes buffered output to the inner stream until it is empty or the stream is busy.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_pos..]) {
                Poll::Ready(Ok(0)) => {
                    self.batch.reset();
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.out_pos += n,
                Poll::Ready(Err(e)) => {
                    self.batch.reset();
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }

    fn unwritten(&self) -> usize {
        self.out.len() - self.out_pos
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WireShim<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.unwritten() >= WRITE_LIMIT {
            if let Poll::Ready(Err(e)) = this.drain(cx) {
                return Poll::Ready(Err(e));
            }
            if this.unwritten() >= WRITE_LIMIT {
                return Poll::Pending;
            }
        }
        this.filter_output(buf);
        if let Poll::Ready(Err(e)) = this.drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WireShim<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_pos < this.ready.len() {
                let n = (this.ready.len() - this.ready_pos).min(buf.remaining());
                buf.put_slice(&this.ready[this.ready_pos..this.ready_pos + n]);
                this.ready_pos += n;
                if this.ready_pos == this.ready.len() {
                    this.ready.clear();
                    this.ready_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            {
                // Answers owed to rows whose Execute was written since the last read.
                let mut st = this.batch.lock();
                let limit = st.w_execs;
                st.emit_owed(&mut this.ready, limit);
            }
            if !this.ready.is_empty() {
                continue;
            }
            let mut rb = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    this.batch.reset();
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        // End of stream.
                        this.batch.reset();
                        return Poll::Ready(Ok(()));
                    }
                    this.filter_input(n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn row_request() -> Vec<u8> {
        let mut v = msg(b'B', b"\0stmt\0\0\0\0\0\0\0");
        v.extend(msg(b'E', b"\0\0\0\0\0"));
        v.extend(msg(b'S', b""));
        v
    }

    fn startup() -> Vec<u8> {
        let body = b"\0\x03\0\0user\0u\0\0";
        let mut v = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    /// Splits the frontend messages of `bytes` into tags.
    fn tags(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i + 5 <= bytes.len() {
            out.push(bytes[i]);
            let len = u32::from_be_bytes([bytes[i + 1], bytes[i + 2], bytes[i + 3], bytes[i + 4]]);
            i += 1 + len as usize;
        }
        out
    }

    fn shim() -> WireShim<tokio::io::Empty> {
        WireShim::new(tokio::io::empty(), Batch::default())
    }

    fn write_all(s: &mut WireShim<tokio::io::Empty>, data: &[u8], piece: usize) {
        for c in data.chunks(piece.max(1)) {
            s.filter_output(c);
        }
    }

    fn read_all(s: &mut WireShim<tokio::io::Empty>, data: &[u8], piece: usize) -> Vec<u8> {
        for c in data.chunks(piece.max(1)) {
            s.scratch[..c.len()].copy_from_slice(c);
            s.filter_input(c.len());
        }
        std::mem::take(&mut s.ready)
    }

    #[test]
    fn idle_shim_passes_everything_through() {
        for piece in [1, 3, 7, 1000] {
            let mut s = shim();
            let mut data = startup();
            data.extend(row_request());
            data.extend(row_request());
            write_all(&mut s, &data, piece);
            assert_eq!(s.out, data);
            let mut back = msg(b'2', b"");
            back.extend(msg(b'C', b"INSERT 0 1\0"));
            back.extend(msg(b'Z', b"I"));
            assert_eq!(read_all(&mut s, &back, piece), back);
        }
    }

    #[test]
    fn batch_drops_inner_syncs_and_injects_ready_for_query() {
        for piece in [1, 2, 5, 64] {
            let mut s = shim();
            write_all(&mut s, &startup(), piece);
            s.out.clear();
            assert!(s.batch.arm(3));
            let mut data = Vec::new();
            for _ in 0..3 {
                data.extend(row_request());
            }
            write_all(&mut s, &data, piece);
            assert_eq!(tags(&s.out), b"BEBEBES".to_vec());
            let mut back = Vec::new();
            for _ in 0..3 {
                back.extend(msg(b'2', b""));
                back.extend(msg(b'C', b"INSERT 0 1\0"));
            }
            back.extend(msg(b'Z', b"T"));
            let got = read_all(&mut s, &back, piece);
            assert_eq!(tags(&got), b"2CZ2CZ2CZ".to_vec());
            assert!(s.batch.is_idle());
        }
    }

    #[test]
    fn failing_row_completes_every_later_row() {
        let mut s = shim();
        write_all(&mut s, &startup(), 100);
        assert!(s.batch.arm(4));
        for _ in 0..4 {
            write_all(&mut s, &row_request(), 100);
        }
        let mut back = msg(b'2', b"");
        back.extend(msg(b'C', b"INSERT 0 1\0"));
        back.extend(msg(b'E', b"SERROR\0C23505\0Mdup\0\0"));
        back.extend(msg(b'Z', b"E"));
        let got = read_all(&mut s, &back, 3);
        // row 0 ok, row 1 real error, rows 2 and 3 synthetic errors, real Z last.
        assert_eq!(tags(&got), b"2CZEZEZEZ".to_vec());
        assert!(s.batch.is_idle());
    }

    #[test]
    fn synthetic_answers_wait_for_the_rows_to_be_written() {
        let mut s = shim();
        write_all(&mut s, &startup(), 100);
        assert!(s.batch.arm(3));
        write_all(&mut s, &row_request(), 100);
        let got = read_all(&mut s, &msg(b'E', b"SERROR\0C22P02\0Mbad\0\0"), 100);
        // Rows 1 and 2 are not written yet: nothing is owed to them so far.
        assert_eq!(tags(&got), b"EZ".to_vec());
        write_all(&mut s, &row_request(), 100);
        write_all(&mut s, &row_request(), 100);
        let got = read_all(&mut s, &msg(b'Z', b"I"), 100);
        assert_eq!(tags(&got), b"EZEZ".to_vec());
        assert!(s.batch.is_idle());
    }

    #[test]
    fn close_sync_of_a_dropped_statement_is_left_alone() {
        let mut s = shim();
        write_all(&mut s, &startup(), 100);
        s.out.clear();
        assert!(s.batch.arm(1));
        let mut data = msg(b'C', b"Sname\0");
        data.extend(msg(b'S', b""));
        data.extend(row_request());
        write_all(&mut s, &data, 4);
        assert_eq!(tags(&s.out), b"CSBES".to_vec());
    }
}
