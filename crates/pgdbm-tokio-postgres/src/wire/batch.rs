//! The `execute_many` chunk state machine shared by a [`WireShim`](super::WireShim) and the
//! connection that arms it (see the [module docs](super)).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::encode::Rows;
use super::server_error::ServerError;

/// The row count of a `CommandComplete` tag ("INSERT 0 1" → 1, "UPDATE 3" → 3): its last
/// word when that is a number, else 0.
pub(super) fn tag_count(body: &[u8]) -> u64 {
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
pub(super) fn parse_bind(body: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
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
pub(super) enum Write {
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
pub(super) enum Mode {
    Pass,
    Drop,
    Capture,
}

/// The chunk state shared by a [`WireShim`](super::WireShim) and the connection that arms it.
#[derive(Debug, Default)]
pub(crate) struct BatchState {
    rows: Rows,
    pub(super) write: Write,
    pub(super) bind: Vec<u8>,
    stmt: Vec<u8>,
    result_formats: Vec<u8>,
    /// The read side follows the chunk (its `ReadyForQuery` has not passed yet).
    r_active: bool,
    /// Row 0's `Bind` was written: `z_before` is known and the answers that follow are
    /// counted. Until then every backend message answers an earlier request.
    counted: bool,
    /// `ReadyForQuery` messages still owed to requests written before row 0's `Bind`.
    z_before: usize,
    /// The row whose answer is being read.
    r_row: usize,
    /// A row failed: only the chunk's `ReadyForQuery` is still expected.
    r_wait_z: bool,
    outcome: Outcome,
}

impl BatchState {
    /// Stops following the chunk; keeps what its rows did so far (a later row's fatal error
    /// explains why the connection closed).
    fn reset(&mut self) {
        let outcome = std::mem::take(&mut self.outcome);
        *self = BatchState::default();
        self.outcome = outcome;
    }

    pub(super) fn is_idle(&self) -> bool {
        self.write == Write::Idle && !self.r_active
    }

    /// Stops injecting: the rows are not written (the outcome says so).
    fn abandon_write(&mut self) {
        self.write = Write::Idle;
        self.rows = Rows::default();
    }

    /// Called with each frontend header, before it is passed on. `owed` is the number of
    /// `ReadyForQuery` messages the server still owes for requests written so far (the
    /// shim's count), whether they were written before or after arming.
    pub(super) fn on_frontend(&mut self, tag: u8, out: &mut Vec<u8>, owed: usize) {
        match (self.write, tag) {
            (Write::Idle | Write::InBind, _) => {}
            (Write::AwaitBind, b'B') => {
                self.write = Write::InBind;
                self.bind.clear();
                self.z_before = owed;
                self.counted = true;
            }
            (Write::AwaitBind, _) => {}
            (Write::AwaitExecute, b'E') => self.write = Write::AwaitSync,
            // `execute_typed` (StatementMode::Unnamed) describes the unnamed statement between
            // its Bind and Execute; the answer is row 0's and passes through.
            (Write::AwaitExecute, b'D') => {}
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
    pub(super) fn on_bind_end(&mut self) {
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
    pub(super) fn on_backend(&mut self, tag: u8) -> Mode {
        if !self.r_active || !self.counted {
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
    pub(super) fn on_captured(&mut self, tag: u8, body: &[u8]) {
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

/// The handle `execute_many` uses to arm a chunk on its connection's [`WireShim`](super::WireShim).
///
/// The shim checks [`is_armed`](Self::is_armed) (one atomic load) before touching the chunk
/// state, so a connection with no chunk armed never takes the lock.
#[derive(Debug, Clone, Default)]
pub(crate) struct Batch(Arc<BatchShared>);

#[derive(Debug, Default)]
struct BatchShared {
    /// A chunk is armed or still being followed: the shim must consult the state.
    armed: AtomicBool,
    /// An `execute_many` was abandoned mid-way: the connection must be discarded.
    poisoned: AtomicBool,
    state: Mutex<BatchState>,
}

impl Batch {
    pub(super) fn lock(&self) -> MutexGuard<'_, BatchState> {
        // The state is plain data updated in small steps; a panic elsewhere while it was held
        // cannot leave it in a state worse than "reset it", which the next arm check does.
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while a chunk is armed or its answers are still being read.
    pub(super) fn is_armed(&self) -> bool {
        self.0.armed.load(Ordering::Acquire)
    }

    /// Called by the shim (holding the lock) once the chunk is over.
    pub(super) fn disarm_if_idle(&self, st: &BatchState) {
        if st.is_idle() {
            self.0.armed.store(false, Ordering::Release);
        }
    }

    /// Arms a chunk whose rows `1..n` are `rows`: the next `Bind`/`Execute`/`Sync` request
    /// written must be row 0's. Earlier requests may still be unanswered (the shim counts what
    /// they are owed). Gives the rows back (nothing armed) when a chunk is still active or the
    /// connection was poisoned.
    pub(crate) fn arm(&self, rows: Rows) -> Result<(), Rows> {
        let mut st = self.lock();
        if !st.is_idle() || self.is_poisoned() {
            return Err(rows);
        }
        *st = BatchState {
            rows,
            write: Write::AwaitBind,
            r_active: true,
            ..BatchState::default()
        };
        self.0.armed.store(true, Ordering::Release);
        Ok(())
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
        let mut st = self.lock();
        st.reset();
        self.0.armed.store(false, Ordering::Release);
    }

    /// Marks the connection unusable: an `execute_many` was abandoned before its closing
    /// statement was queued. The shim stops rewriting; the connection reports itself broken
    /// and is discarded (the server then rolls back).
    pub(crate) fn poison(&self) {
        self.0.poisoned.store(true, Ordering::Release);
        self.reset();
    }

    /// True after [`poison`](Self::poison).
    pub(crate) fn is_poisoned(&self) -> bool {
        self.0.poisoned.load(Ordering::Acquire)
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
