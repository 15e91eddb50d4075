//! [`Session`]: what the server itself reported about a connection, read by the shim from the
//! backend messages as they pass (no SQL text is looked at).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

/// The transaction status byte of the last `ReadyForQuery` the server sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxStatus {
    /// `I`: idle, outside a transaction.
    Idle,
    /// `T`: inside a transaction block.
    InTransaction,
    /// `E`: inside a failed transaction block (statements are refused until it ends).
    Failed,
    /// No `ReadyForQuery` seen yet, or a byte the protocol does not define.
    Unknown,
}

/// Facts about one connection's server session, written by the shim (in the connection task)
/// and read by [`PgConnection`](crate::PgConnection). Atomics: the shim never waits on the
/// connection and the connection never waits on the shim.
#[derive(Debug, Default)]
pub(crate) struct Session {
    /// The last `ReadyForQuery` status byte (0 before the first one).
    status: AtomicU8,
    /// `ReadyForQuery` messages seen so far (kept for the tests only: an atomic add per
    /// statement otherwise).
    #[cfg(test)]
    readies: AtomicU64,
    /// `BackendKeyData`: process id in the high half, secret key in the low half (0 = none yet).
    backend_key: AtomicU64,
    /// A `DEALLOCATE` or `DISCARD ALL` completed: protocol-level prepared statements may be gone.
    statements_dropped: AtomicBool,
    /// A SQL-level `PREPARE` completed since the last full reset.
    sql_prepared: AtomicBool,
    /// Notifications the connection task received, for a LISTEN stream (`listen.rs`).
    pub(crate) notifications: crate::listen::Inbox,
}

/// How many body bytes of a message [`Session::on_message`] (and the authentication check, for
/// the SASL mechanism list) needs to see.
pub(super) const PEEK: usize = 64;

impl Session {
    /// True for the backend message tags whose body [`on_message`](Self::on_message) reads.
    pub(super) fn wants(tag: u8) -> bool {
        matches!(tag, b'Z' | b'K' | b'C')
    }

    /// Records a complete backend message of a [wanted](Self::wants) tag, given the first
    /// [`PEEK`] bytes of its body.
    pub(super) fn on_message(&self, tag: u8, body: &[u8]) {
        match tag {
            b'Z' => {
                self.status
                    .store(body.first().copied().unwrap_or(0), Ordering::Release);
                #[cfg(test)]
                self.readies.fetch_add(1, Ordering::AcqRel);
            }
            b'K' => {
                if let (Some(pid), Some(key)) = (body.get(0..4), body.get(4..8)) {
                    let mut v = [0u8; 8];
                    v[..4].copy_from_slice(pid);
                    v[4..].copy_from_slice(key);
                    self.backend_key
                        .store(u64::from_be_bytes(v), Ordering::Release);
                }
            }
            b'C' if body.starts_with(b"DEALLOCATE") || body.starts_with(b"DISCARD ALL") => {
                self.statements_dropped.store(true, Ordering::Release);
            }
            b'C' if body.starts_with(b"PREPARE") => {
                self.sql_prepared.store(true, Ordering::Release);
            }
            _ => {}
        }
    }

    /// The transaction status of the last `ReadyForQuery`.
    pub(crate) fn tx_status(&self) -> TxStatus {
        match self.status.load(Ordering::Acquire) {
            b'I' => TxStatus::Idle,
            b'T' => TxStatus::InTransaction,
            b'E' => TxStatus::Failed,
            _ => TxStatus::Unknown,
        }
    }

    /// `ReadyForQuery` messages seen so far.
    #[cfg(test)]
    pub(crate) fn readies(&self) -> u64 {
        self.readies.load(Ordering::Acquire)
    }

    /// The server's process id and cancel key, once `BackendKeyData` arrived.
    pub(crate) fn backend_key(&self) -> Option<(i32, i32)> {
        let v = self.backend_key.load(Ordering::Acquire);
        (v != 0).then_some(((v >> 32) as u32 as i32, v as u32 as i32))
    }

    /// True (once) when a `DEALLOCATE`/`DISCARD ALL` ran since the last call.
    pub(crate) fn take_statements_dropped(&self) -> bool {
        // A plain load first: this runs before every statement and is almost always false.
        self.statements_dropped.load(Ordering::Acquire)
            && self.statements_dropped.swap(false, Ordering::AcqRel)
    }

    /// True (once) when a SQL-level `PREPARE` ran since the last call.
    pub(crate) fn take_sql_prepared(&self) -> bool {
        self.sql_prepared.load(Ordering::Acquire) && self.sql_prepared.swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_for_query_sets_the_status() {
        let s = Session::default();
        assert_eq!(s.tx_status(), TxStatus::Unknown);
        for (byte, want) in [
            (b'T', TxStatus::InTransaction),
            (b'E', TxStatus::Failed),
            (b'I', TxStatus::Idle),
            (b'?', TxStatus::Unknown),
        ] {
            s.on_message(b'Z', &[byte]);
            assert_eq!(s.tx_status(), want);
        }
        assert_eq!(s.readies(), 4);
        s.on_message(b'Z', &[]);
        assert_eq!(s.tx_status(), TxStatus::Unknown);
    }

    #[test]
    fn backend_key_and_dropped_statements_are_recorded() {
        let s = Session::default();
        assert_eq!(s.backend_key(), None);
        s.on_message(b'K', &[0, 0, 0x30, 0x39, 0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(s.backend_key(), Some((12345, -2)));
        s.on_message(b'K', &[1, 2]);
        assert_eq!(s.backend_key(), Some((12345, -2)));
        assert!(!s.take_statements_dropped());
        s.on_message(b'C', b"SELECT 1\0");
        assert!(!s.take_statements_dropped());
        s.on_message(b'C', b"DEALLOCATE ALL\0");
        assert!(s.take_statements_dropped());
        assert!(!s.take_statements_dropped());
        s.on_message(b'C', b"DISCARD ALL\0");
        assert!(s.take_statements_dropped());
    }
}
