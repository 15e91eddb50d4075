//! [`WireShim`]: a protocol-aware stream between tokio-postgres and the socket, so that
//! `execute_many` sends a whole chunk of rows as one request with one Sync.
//!
//! # Why it exists
//!
//! tokio-postgres 0.7 appends a `Sync` to every request: `client.execute(stmt, params)` writes
//! `Bind`, `Execute`, `Sync`, and every request costs a response channel and task wake-ups.
//! asyncpg's `executemany` sends `Bind`/`Execute` for every row and a single `Sync`.
//! tokio-postgres has no API for that (rust-postgres PR #1352 is still open), so the shim adds
//! the other rows to one tokio-postgres request underneath it.
//!
//! # What it does
//!
//! The shim always parses the message framing in both directions (tag byte + `int32` length;
//! bodies are counted down, not buffered), which is cheap. It changes the stream only while a
//! chunk is armed ([`Batch::arm`], called by `execute_many` with the `Bind` messages of rows
//! `1..n` of a chunk, already encoded, when no other request is in flight):
//!
//! - frontend → server: `execute_many` issues one ordinary `execute` for row 0. The shim reads
//!   that request's `Bind` to learn the statement name and the result formats, and writes the
//!   other rows' `Bind`/`Execute` after row 0's `Execute`, before its `Sync`. The server sees
//!   `B0 E0 B1 E1 … Bn-1 En-1 S`, like asyncpg's pipeline. Messages written before that
//!   `Bind` (the `Close` + `Sync` of a dropped statement) pass through untouched.
//! - server → frontend: row 0's answers pass through, so tokio-postgres completes its request
//!   on the one `ReadyForQuery` that ends the chunk. The answers of rows `1..n` are swallowed:
//!   the shim adds up their `CommandComplete` row counts and keeps the first `ErrorResponse`
//!   (its fields and its row) for `execute_many` ([`Batch::take_outcome`]). After an error
//!   the server skips to the `Sync`, so the next message is that `ReadyForQuery`.
//!
//! Everything else (the startup exchange, authentication, other requests, notices,
//! notifications) passes through unchanged.
//!
//! # Limits
//!
//! - The shim sits above TLS: pgdbm negotiates TLS itself and hands tokio-postgres an already
//!   encrypted stream with `NoTls`, so SCRAM channel binding (`SCRAM-SHA-256-PLUS`) is not used
//!   (`channel_binding=prefer` behaviour falls back to plain SCRAM; `require` is not offered).
//! - A chunk must be armed only when the connection is idle (every earlier request answered),
//!   and the next `Bind` tokio-postgres writes must be row 0's. `execute_many` guarantees both:
//!   it holds `&mut` on the connection and waits for its `BEGIN`/`SAVEPOINT` first.
//! - If the connection ends mid-chunk, the state is reset; tokio-postgres's request fails with
//!   its "connection closed" error as it would without the shim.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::BytesMut;
use pgdbm_core::{BoxError, Param};
use postgres_protocol::message::frontend;
use postgres_types::{IsNull, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Unwritten output beyond which `poll_write` stops accepting more.
const WRITE_LIMIT: usize = 256 * 1024;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// `Execute` of the unnamed portal, all rows.
const EXECUTE_UNNAMED: [u8; 10] = [b'E', 0, 0, 0, 9, 0, 0, 0, 0, 0];

/// Bytes of a pre-encoded `Bind` before its format codes: tag, length, empty portal and
/// statement names.
const BIND_PREFIX: usize = 7;

/// Bytes of a pre-encoded `Bind` after its values: an empty result-format list.
const BIND_SUFFIX: usize = 2;

/// Largest pre-encoded `Bind`; the server refuses messages over 1 GB anyway.
const MAX_BIND: usize = 1 << 30;

/// Why a row could not be encoded.
#[derive(Debug)]
pub(crate) struct EncodeError {
    /// What is wrong, with the parameter index.
    pub(crate) message: String,
    /// The `ToSql` error, when there is one.
    pub(crate) source: Option<BoxError>,
}

/// Encodes one row's `Bind` for the unnamed portal and statement with no result formats
/// (what tokio-postgres does in its `encode_bind`: per-parameter `encode_format`, values via
/// `to_sql_checked`). The caller checked the parameter count.
pub(crate) fn encode_bind(
    values: &[Param<'_>],
    types: &[Type],
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = buf.len();
    let formats = values
        .iter()
        .zip(types)
        .map(|(v, ty)| v.encode_format(ty) as i16);
    let mut error_idx = 0;
    let r = frontend::bind(
        "",
        "",
        formats,
        values.iter().zip(types).enumerate(),
        |(idx, (value, ty)), buf| match value.to_sql_checked(ty, buf) {
            Ok(IsNull::No) => Ok(postgres_protocol::IsNull::No),
            Ok(IsNull::Yes) => Ok(postgres_protocol::IsNull::Yes),
            Err(e) => {
                error_idx = idx;
                Err(e)
            }
        },
        std::iter::empty::<i16>(),
        buf,
    );
    match r {
        Ok(()) if buf.len() - start <= MAX_BIND => Ok(()),
        Ok(()) => {
            buf.truncate(start);
            Err(EncodeError {
                message: "the row encodes to more than 1 GB, the server's message limit"
                    .to_string(),
                source: None,
            })
        }
        Err(frontend::BindError::Conversion(e)) => {
            buf.truncate(start);
            Err(EncodeError {
                message: format!("error serializing parameter {error_idx}: {e}"),
                source: Some(e),
            })
        }
        Err(frontend::BindError::Serialization(e)) => {
            buf.truncate(start);
            Err(EncodeError {
                message: format!("error encoding the row: {e}"),
                source: Some(Box::new(e)),
            })
        }
    }
}

/// Rows `1..n` of a chunk, encoded by [`encode_bind`] before anything is sent.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    buf: BytesMut,
    ends: Vec<usize>,
}

impl Rows {
    /// Encodes and appends one row.
    pub(crate) fn push(&mut self, values: &[Param<'_>], types: &[Type]) -> Result<(), EncodeError> {
        encode_bind(values, types, &mut self.buf)?;
        self.ends.push(self.buf.len());
        Ok(())
    }

    /// Rows held.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Writes every row as `Bind` (statement `stmt`, result formats `result_formats`, the
    /// count included) + `Execute` into `out`.
    fn write_to(&self, stmt: &[u8], result_formats: &[u8], out: &mut Vec<u8>) {
        let mut start = 0;
        for &end in &self.ends {
            let mid = self
                .buf
                .get(start + BIND_PREFIX..end.saturating_sub(BIND_SUFFIX))
                .unwrap_or_default();
            let len = 4 + 1 + stmt.len() + 1 + mid.len() + result_formats.len();
            out.push(b'B');
            // `mid` is at most MAX_BIND (checked in `encode_bind`) and a statement name is
            // short, so the length fits an i32.
            out.extend_from_slice(&(len as u32).to_be_bytes());
            out.push(0);
            out.extend_from_slice(stmt);
            out.push(0);
            out.extend_from_slice(mid);
            out.extend_from_slice(result_formats);
            out.extend_from_slice(&EXECUTE_UNNAMED);
            start = end;
        }
    }
}

/// A server error of a row after the first one, parsed from its `ErrorResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServerError {
    /// Severity (`V`, else `S`).
    pub(crate) severity: String,
    /// SQLSTATE (`C`).
    pub(crate) code: String,
    /// Primary message (`M`).
    pub(crate) message: String,
    /// Detail (`D`).
    pub(crate) detail: Option<String>,
    /// Hint (`H`).
    pub(crate) hint: Option<String>,
    /// Constraint name (`n`).
    pub(crate) constraint: Option<String>,
    /// Table name (`t`).
    pub(crate) table: Option<String>,
    /// Schema name (`s`).
    pub(crate) schema: Option<String>,
    /// Column name (`c`).
    pub(crate) column: Option<String>,
}

impl ServerError {
    /// Parses an `ErrorResponse` body: (field type, cstring) pairs ended by a 0 byte.
    fn parse(body: &[u8]) -> ServerError {
        let mut e = ServerError::default();
        let mut rest = body;
        while let Some((&field, tail)) = rest.split_first() {
            if field == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            let value = String::from_utf8_lossy(&tail[..end]).into_owned();
            rest = tail.get(end + 1..).unwrap_or_default();
            match field {
                b'S' if e.severity.is_empty() => e.severity = value,
                b'V' => e.severity = value,
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'H' => e.hint = Some(value),
                b'n' => e.constraint = Some(value),
                b't' => e.table = Some(value),
                b's' => e.schema = Some(value),
                b'c' => e.column = Some(value),
                _ => {}
            }
        }
        e
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.severity, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, "\nDETAIL: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\nHINT: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

/// The row count of a `CommandComplete` tag ("INSERT 0 1" → 1, "UPDATE 3" → 3): its last
/// word when that is a number, else 0.
fn tag_count(body: &[u8]) -> u64 {
    let tag = body.strip_suffix(&[0]).unwrap_or(body);
    let last = tag.rsplit(|&b| b == b' ').next().unwrap_or_default();
    std::str::from_utf8(last)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Reads a cstring at the start of `b`: (text, rest).
fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = b.iter().position(|&c| c == 0)?;
    Some((&b[..end], &b[end + 1..]))
}

fn int16(b: &[u8]) -> Option<(i16, &[u8])> {
    let (h, t) = b.split_first_chunk::<2>()?;
    Some((i16::from_be_bytes(*h), t))
}

/// Parses a frontend `Bind` body: (statement name, result-format section including its
/// count).
fn parse_bind(body: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (_portal, rest) = cstr(body)?;
    let (stmt, rest) = cstr(rest)?;
    let (nfmt, rest) = int16(rest)?;
    let mut rest = rest.get(2 * usize::try_from(nfmt).ok()?..)?;
    let (nparams, tail) = int16(rest)?;
    rest = tail;
    for _ in 0..nparams.max(0) {
        let (h, tail) = rest.split_first_chunk::<4>()?;
        let len = i32::from_be_bytes(*h);
        rest = match usize::try_from(len) {
            Ok(len) => tail.get(len..)?,
            Err(_) => tail,
        };
    }
    let (nres, tail) = int16(rest)?;
    if tail.len() != 2 * usize::try_from(nres).ok()? {
        return None;
    }
    Some((stmt.to_vec(), rest.to_vec()))
}

/// What the rows `1..n` of the last armed chunk did.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Their rows were written (row 0's `Bind` was recognized).
    pub(crate) injected: bool,
    /// The chunk's `ReadyForQuery` arrived.
    pub(crate) complete: bool,
    /// Sum of their `CommandComplete` row counts.
    pub(crate) rows: u64,
    /// The first failing row (index within the chunk, >= 1) and its error.
    pub(crate) error: Option<(usize, ServerError)>,
}

/// Where the write side of an armed chunk is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// Nothing armed, or the rows were written.
    #[default]
    Idle,
    /// Waiting for row 0's `Bind`.
    AwaitBind,
    /// Reading row 0's `Bind` body.
    InBind,
    /// Waiting for row 0's `Execute`.
    AwaitExecute,
    /// Waiting for row 0's `Sync`: the rows go in front of it.
    AwaitSync,
}

/// What happens to a backend message's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pass,
    Drop,
    Capture,
}

/// The chunk state shared by a [`WireShim`] and the connection that arms it.
#[derive(Debug, Default)]
pub(crate) struct BatchState {
    rows: Rows,
    write: Write,
    bind: Vec<u8>,
    stmt: Vec<u8>,
    result_formats: Vec<u8>,
    /// The read side follows the chunk (its `ReadyForQuery` has not passed yet).
    r_active: bool,
    /// `ReadyForQuery` messages owed to requests written after arming, before row 0.
    z_before: usize,
    /// The row whose answer is being read.
    r_row: usize,
    /// A row failed: only the chunk's `ReadyForQuery` is still expected.
    r_wait_z: bool,
    outcome: Outcome,
    /// A chunk was abandoned mid-way: the connection must be discarded.
    poisoned: bool,
}

impl BatchState {
    /// Stops following the chunk; keeps what its rows did so far (a later row's fatal error
    /// explains why the connection closed) and the poisoned flag.
    fn reset(&mut self) {
        let poisoned = self.poisoned;
        let outcome = std::mem::take(&mut self.outcome);
        *self = BatchState::default();
        self.poisoned = poisoned;
        self.outcome = outcome;
    }

    fn is_idle(&self) -> bool {
        self.write == Write::Idle && !self.r_active
    }

    /// Stops injecting: the rows are not written (the outcome says so).
    fn abandon_write(&mut self) {
        self.write = Write::Idle;
        self.rows = Rows::default();
    }

    /// Called with each frontend header, before it is passed on.
    fn on_frontend(&mut self, tag: u8, out: &mut Vec<u8>) {
        match (self.write, tag) {
            (Write::Idle | Write::InBind, _) => {}
            (Write::AwaitBind, b'B') => {
                self.write = Write::InBind;
                self.bind.clear();
            }
            (Write::AwaitBind, b'S' | b'Q') => self.z_before += 1,
            (Write::AwaitBind, _) => {}
            (Write::AwaitExecute, b'E') => self.write = Write::AwaitSync,
            (Write::AwaitSync, b'S') => {
                self.rows.write_to(&self.stmt, &self.result_formats, out);
                self.outcome.injected = true;
                self.abandon_write();
            }
            // Not the Bind/Execute/Sync of one execute: leave the stream alone.
            (Write::AwaitExecute | Write::AwaitSync, _) => self.abandon_write(),
        }
    }

    /// Called when row 0's `Bind` body is complete (in `self.bind`).
    fn on_bind_end(&mut self) {
        match parse_bind(&self.bind) {
            Some((stmt, result_formats)) => {
                self.stmt = stmt;
                self.result_formats = result_formats;
                self.write = Write::AwaitExecute;
            }
            None => self.abandon_write(),
        }
        self.bind = Vec::new();
    }

    /// Called with each backend header: what to do with the message.
    fn on_backend(&mut self, tag: u8) -> Mode {
        if !self.r_active {
            return Mode::Pass;
        }
        match tag {
            // Asynchronous messages: notice, notification, parameter status.
            b'N' | b'A' | b'S' => Mode::Pass,
            b'Z' => {
                if self.z_before > 0 {
                    self.z_before -= 1;
                } else {
                    self.r_active = false;
                    self.outcome.complete = true;
                    self.abandon_write();
                }
                Mode::Pass
            }
            _ if self.z_before > 0 || self.r_wait_z => Mode::Pass,
            _ if self.r_row == 0 => {
                match tag {
                    b'C' | b'I' => self.r_row = 1,
                    b'E' => self.r_wait_z = true,
                    _ => {}
                }
                Mode::Pass
            }
            b'2' | b'D' => Mode::Drop,
            b'I' => {
                self.r_row += 1;
                Mode::Drop
            }
            b'C' | b'E' => Mode::Capture,
            _ => Mode::Pass,
        }
    }

    /// Called with the complete body of a captured backend message.
    fn on_captured(&mut self, tag: u8, body: &[u8]) {
        if tag == b'C' {
            self.outcome.rows += tag_count(body);
            self.r_row += 1;
        } else {
            if self.outcome.error.is_none() {
                self.outcome.error = Some((self.r_row, ServerError::parse(body)));
            }
            self.r_wait_z = true;
        }
    }
}

/// The handle `execute_many` uses to arm a chunk on its connection's [`WireShim`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Batch(Arc<Mutex<BatchState>>);

impl Batch {
    fn lock(&self) -> MutexGuard<'_, BatchState> {
        // The state is plain data updated in small steps; a panic elsewhere while it was held
        // cannot leave it in a state worse than "reset it", which the next arm check does.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Arms a chunk whose rows `1..n` are `rows`: the next `Bind`/`Execute`/`Sync` request
    /// written must be row 0's. False (nothing armed) when a chunk is still active.
    pub(crate) fn arm(&self, rows: Rows) -> bool {
        let mut st = self.lock();
        if !st.is_idle() || st.poisoned {
            return false;
        }
        *st = BatchState {
            rows,
            write: Write::AwaitBind,
            r_active: true,
            ..BatchState::default()
        };
        true
    }

    /// Takes what rows `1..n` of the last chunk did.
    pub(crate) fn take_outcome(&self) -> Outcome {
        std::mem::take(&mut self.lock().outcome)
    }

    /// True when no chunk is active.
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.lock().is_idle()
    }

    /// Forgets any active chunk (the connection failed).
    pub(crate) fn reset(&self) {
        self.lock().reset();
    }

    /// Marks the connection unusable: an `execute_many` was abandoned before its closing
    /// statement was queued. The shim stops rewriting; the connection reports itself broken
    /// and is discarded (the server then rolls back).
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
/// statement was queued. The server may then hold an open transaction that pgdbm's
/// bookkeeping does not know of, so the connection must not be reused.
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
/// down.
#[derive(Debug)]
struct Framer {
    head: [u8; 5],
    have: usize,
    body_left: usize,
    /// The next header has no tag byte (the frontend's startup message).
    untagged: bool,
    /// Tag of the message in progress.
    tag: u8,
    /// What happens to the body of the message in progress.
    mode: Mode,
}

impl Framer {
    fn new(untagged_first: bool) -> Self {
        Framer {
            head: [0; 5],
            have: 0,
            body_left: 0,
            untagged: untagged_first,
            tag: 0,
            mode: Mode::Pass,
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

/// A stream that parses PostgreSQL protocol framing and, while a [`Batch`] is armed, sends
/// the rows of an `execute_many` chunk inside one tokio-postgres request (see the
/// [module docs](self)).
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
    captured: Vec<u8>,
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
            captured: Vec::new(),
            scratch: vec![0; READ_CHUNK],
        }
    }

    /// Copies frontend bytes into `out`, adding an armed chunk's rows.
    fn filter_output(&mut self, mut input: &[u8]) {
        let f = &mut self.wframe;
        let mut st: Option<MutexGuard<'_, BatchState>> = None;
        while !input.is_empty() {
            if f.body_left > 0 {
                let take = f.body_left.min(input.len());
                self.out.extend_from_slice(&input[..take]);
                f.body_left -= take;
                if f.mode == Mode::Capture {
                    let st = st.get_or_insert_with(|| self.batch.lock());
                    st.bind.extend_from_slice(&input[..take]);
                    if f.body_left == 0 {
                        st.on_bind_end();
                    }
                }
                input = &input[take..];
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
            f.mode = Mode::Pass;
            if !f.untagged {
                st.on_frontend(tag, &mut self.out);
                if st.write == Write::InBind {
                    f.mode = Mode::Capture;
                    if body == 0 {
                        st.on_bind_end();
                    }
                }
            }
            self.out.extend_from_slice(&f.head[..hlen]);
            f.have = 0;
            f.untagged = false;
            f.tag = tag;
            f.body_left = body;
        }
    }

    /// Passes backend bytes into `ready`, swallowing the answers of an armed chunk's rows
    /// `1..n`.
    fn filter_input(&mut self, len: usize) {
        let mut input = &self.scratch[..len];
        let f = &mut self.rframe;
        let mut st = self.batch.lock();
        while !input.is_empty() {
            if f.body_left > 0 {
                let take = f.body_left.min(input.len());
                match f.mode {
                    Mode::Pass => self.ready.extend_from_slice(&input[..take]),
                    Mode::Drop => {}
                    Mode::Capture => self.captured.extend_from_slice(&input[..take]),
                }
                f.body_left -= take;
                input = &input[take..];
                if f.body_left == 0 && f.mode == Mode::Capture {
                    st.on_captured(f.tag, &self.captured);
                    self.captured.clear();
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
            let mode = st.on_backend(tag);
            if mode == Mode::Pass {
                self.ready.extend_from_slice(&f.head);
            }
            f.have = 0;
            f.tag = tag;
            f.mode = mode;
            f.body_left = body;
            if body == 0 && mode == Mode::Capture {
                st.on_captured(tag, &[]);
            }
        }
    }
}

impl<S> Drop for WireShim<S> {
    fn drop(&mut self) {
        self.batch.reset();
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

    /// A Bind as tokio-postgres writes it: unnamed portal, statement `s1`, one binary int4
    /// parameter, binary results.
    fn bind0(value: i32) -> Vec<u8> {
        let mut body = b"\0s1\0\0\x01\0\x01\0\x01\0\0\0\x04".to_vec();
        body.extend_from_slice(&value.to_be_bytes());
        body.extend_from_slice(b"\0\x01\0\x01");
        msg(b'B', &body)
    }

    fn row_request(value: i32) -> Vec<u8> {
        let mut v = bind0(value);
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

    /// Splits the messages of `bytes` into (tag, body).
    fn split(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i + 5 <= bytes.len() {
            let len = u32::from_be_bytes([bytes[i + 1], bytes[i + 2], bytes[i + 3], bytes[i + 4]])
                as usize;
            out.push((bytes[i], bytes[i + 5..i + 1 + len].to_vec()));
            i += 1 + len;
        }
        assert_eq!(i, bytes.len(), "trailing partial message");
        out
    }

    fn tags(bytes: &[u8]) -> Vec<u8> {
        split(bytes).into_iter().map(|(t, _)| t).collect()
    }

    fn shim() -> WireShim<tokio::io::Empty> {
        let mut s = WireShim::new(tokio::io::empty(), Batch::default());
        s.filter_output(&startup());
        s.out.clear();
        s
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

    fn rows(values: &[i32]) -> Rows {
        let mut r = Rows::default();
        for v in values {
            r.push(&[v as Param<'_>], &[Type::INT4]).unwrap();
        }
        r
    }

    #[test]
    fn bind_parsing_finds_the_statement_and_result_formats() {
        let b = bind0(7);
        let (stmt, res) = parse_bind(&b[5..]).unwrap();
        assert_eq!(stmt, b"s1");
        assert_eq!(res, b"\0\x01\0\x01");
        // A NULL parameter (length -1) and no result formats.
        let (stmt, res) = parse_bind(b"p\0s_2\0\0\0\0\x01\xff\xff\xff\xff\0\0").unwrap();
        assert_eq!(stmt, b"s_2");
        assert_eq!(res, b"\0\0");
        // Truncated or inconsistent bodies are refused.
        assert!(parse_bind(&b[5..b.len() - 1]).is_none());
        assert!(parse_bind(b"\0s1\0\0\x01").is_none());
        assert!(parse_bind(b"\0s1").is_none());
    }

    #[test]
    fn command_complete_tags_are_counted() {
        assert_eq!(tag_count(b"INSERT 0 1\0"), 1);
        assert_eq!(tag_count(b"UPDATE 3\0"), 3);
        assert_eq!(tag_count(b"SELECT 2\0"), 2);
        assert_eq!(tag_count(b"DELETE 12345678901\0"), 12_345_678_901);
        assert_eq!(tag_count(b"CREATE TABLE\0"), 0);
        assert_eq!(tag_count(b"\0"), 0);
        assert_eq!(tag_count(b""), 0);
    }

    #[test]
    fn error_response_fields_are_parsed() {
        let e = ServerError::parse(
            b"SERREUR\0VERROR\0C23505\0Mduplicate key\0Dkey (id)=(1)\0Hfix it\0nt_pkey\0tt\0spublic\0cid\0Ffile.c\0\0",
        );
        assert_eq!(e.severity, "ERROR");
        assert_eq!(e.code, "23505");
        assert_eq!(e.message, "duplicate key");
        assert_eq!(e.detail.as_deref(), Some("key (id)=(1)"));
        assert_eq!(e.hint.as_deref(), Some("fix it"));
        assert_eq!(e.constraint.as_deref(), Some("t_pkey"));
        assert_eq!(e.table.as_deref(), Some("t"));
        assert_eq!(e.schema.as_deref(), Some("public"));
        assert_eq!(e.column.as_deref(), Some("id"));
        // A truncated body keeps what it has and never panics.
        let e = ServerError::parse(b"SERROR\0C22P02\0Mbad inp");
        assert_eq!((e.code.as_str(), e.message.as_str()), ("22P02", "bad inp"));
    }

    #[test]
    fn idle_shim_passes_everything_through() {
        for piece in [1, 3, 7, 1000] {
            let mut s = WireShim::new(tokio::io::empty(), Batch::default());
            let mut data = startup();
            data.extend(row_request(1));
            data.extend(row_request(2));
            write_all(&mut s, &data, piece);
            assert_eq!(s.out, data);
            let mut back = msg(b'2', b"");
            back.extend(msg(b'C', b"INSERT 0 1\0"));
            back.extend(msg(b'Z', b"I"));
            assert_eq!(read_all(&mut s, &back, piece), back);
        }
    }

    #[test]
    fn armed_chunk_writes_its_rows_before_the_sync_and_swallows_their_answers() {
        for piece in [1, 2, 5, 64] {
            let mut s = shim();
            assert!(s.batch.arm(rows(&[20, 30])));
            write_all(&mut s, &row_request(10), piece);
            let sent = split(&s.out);
            let t: Vec<u8> = sent.iter().map(|m| m.0).collect();
            assert_eq!(t, b"BEBEBES".to_vec());
            // Rows 1 and 2 bind the same statement with row 0's result formats.
            assert_eq!(sent[2].1, split(&bind0(20))[0].1);
            assert_eq!(sent[4].1, split(&bind0(30))[0].1);
            let mut back = Vec::new();
            for _ in 0..3 {
                back.extend(msg(b'2', b""));
                back.extend(msg(b'D', b"\0\x01\0\0\0\x01x"));
                back.extend(msg(b'C', b"INSERT 0 1\0"));
            }
            back.extend(msg(b'Z', b"T"));
            let got = read_all(&mut s, &back, piece);
            assert_eq!(tags(&got), b"2DCZ".to_vec());
            assert!(s.batch.is_idle());
            let o = s.batch.take_outcome();
            assert!(o.injected && o.complete);
            assert_eq!(o.rows, 2);
            assert!(o.error.is_none());
        }
    }

    #[test]
    fn a_failing_later_row_is_kept_with_its_index() {
        let mut s = shim();
        assert!(s.batch.arm(rows(&[2, 3, 4])));
        write_all(&mut s, &row_request(1), 100);
        let mut back = Vec::new();
        for _ in 0..2 {
            back.extend(msg(b'2', b""));
            back.extend(msg(b'C', b"INSERT 0 1\0"));
        }
        back.extend(msg(b'N', b"SNOTICE\0Mhi\0\0"));
        back.extend(msg(b'2', b""));
        back.extend(msg(b'E', b"SERROR\0C23505\0Mdup\0nk\0\0"));
        back.extend(msg(b'Z', b"E"));
        let got = read_all(&mut s, &back, 3);
        // Row 0's answers, the notice and the chunk's ReadyForQuery.
        assert_eq!(tags(&got), b"2CNZ".to_vec());
        let o = s.batch.take_outcome();
        assert!(o.complete);
        assert_eq!(o.rows, 1);
        let (row, e) = o.error.unwrap();
        assert_eq!(row, 2);
        assert_eq!(
            (e.code.as_str(), e.constraint.as_deref()),
            ("23505", Some("k"))
        );
    }

    #[test]
    fn a_fatal_later_row_error_survives_the_connection_closing() {
        let mut s = shim();
        assert!(s.batch.arm(rows(&[2])));
        write_all(&mut s, &row_request(1), 100);
        let mut back = msg(b'2', b"");
        back.extend(msg(b'C', b"INSERT 0 1\0"));
        back.extend(msg(b'2', b""));
        back.extend(msg(b'E', b"SFATAL\0C57P01\0Mterminating connection\0\0"));
        assert_eq!(tags(&read_all(&mut s, &back, 100)), b"2C".to_vec());
        // End of stream: the shim resets, the error stays for execute_many.
        let batch = s.batch.clone();
        drop(s);
        assert!(batch.is_idle());
        let o = batch.take_outcome();
        let (row, e) = o.error.unwrap();
        assert_eq!((row, e.code.as_str()), (1, "57P01"));
        assert!(!o.complete);
    }

    #[test]
    fn an_error_at_row_zero_passes_through() {
        let mut s = shim();
        assert!(s.batch.arm(rows(&[2])));
        write_all(&mut s, &row_request(1), 100);
        let mut back = msg(b'E', b"SERROR\0C22P02\0Mbad\0\0");
        back.extend(msg(b'Z', b"E"));
        assert_eq!(tags(&read_all(&mut s, &back, 100)), b"EZ".to_vec());
        let o = s.batch.take_outcome();
        assert!(o.complete && o.error.is_none());
        assert!(s.batch.is_idle());
    }

    #[test]
    fn rows_go_in_front_of_the_sync_when_a_close_sync_is_interleaved() {
        let mut s = shim();
        assert!(s.batch.arm(rows(&[2])));
        let mut data = msg(b'C', b"Sold\0");
        data.extend(msg(b'S', b""));
        data.extend(row_request(1));
        data.extend(msg(b'C', b"Sother\0"));
        data.extend(msg(b'S', b""));
        write_all(&mut s, &data, 4);
        assert_eq!(tags(&s.out), b"CSBEBESCS".to_vec());
        // The Close's answers pass, then the chunk's; the later Close is not touched.
        let mut back = msg(b'3', b"");
        back.extend(msg(b'Z', b"T"));
        for _ in 0..2 {
            back.extend(msg(b'2', b""));
            back.extend(msg(b'C', b"INSERT 0 1\0"));
        }
        back.extend(msg(b'Z', b"T"));
        back.extend(msg(b'3', b""));
        back.extend(msg(b'Z', b"T"));
        assert_eq!(tags(&read_all(&mut s, &back, 5)), b"3Z2CZ3Z".to_vec());
        let o = s.batch.take_outcome();
        assert!(o.injected && o.complete);
        assert_eq!(o.rows, 1);
    }

    #[test]
    fn an_unexpected_request_shape_is_left_alone() {
        let mut s = shim();
        assert!(s.batch.arm(rows(&[2])));
        // A Bind followed by a Describe: not one plain execute.
        let mut data = bind0(1);
        data.extend(msg(b'D', b"P\0"));
        data.extend(msg(b'E', b"\0\0\0\0\0"));
        data.extend(msg(b'S', b""));
        write_all(&mut s, &data, 100);
        assert_eq!(s.out, data);
        let mut back = msg(b'2', b"");
        back.extend(msg(b'C', b"INSERT 0 1\0"));
        back.extend(msg(b'Z', b"I"));
        assert_eq!(read_all(&mut s, &back, 100), back);
        let o = s.batch.take_outcome();
        assert!(!o.injected && o.complete);
    }

    #[test]
    fn unencodable_values_are_refused_with_their_index() {
        let mut r = Rows::default();
        let err = r
            .push(
                &[&1_i32 as Param<'_>, &"x" as Param<'_>],
                &[Type::INT4, Type::INT4],
            )
            .unwrap_err();
        assert!(err.message.contains("parameter 1"), "{}", err.message);
        assert!(err.source.is_some());
        assert_eq!(r.len(), 0);
        assert!(r.buf.is_empty());
    }
}
