//! [`Owed`]: the `ReadyForQuery` messages the server still owes for the requests the shim has
//! written, so an `execute_many` chunk armed behind unanswered requests knows where its own
//! answers begin.

use std::collections::VecDeque;

/// The requests written and not yet answered, oldest first (`true`: a simple `Query`, `false`:
/// an extended-protocol request ended by `Sync`). Each one is answered by one `ReadyForQuery`,
/// with one exception the server makes: in copy-in mode it ignores `Sync`, so an extended
/// `COPY ... FROM STDIN` request (tokio-postgres writes `Bind`, `Execute`, `Sync`, then the
/// data, `CopyDone` or `CopyFail`, and another `Sync`) gets one `ReadyForQuery` for two
/// `Sync`s.
#[derive(Debug, Default)]
pub(super) struct Owed(VecDeque<bool>);

impl Owed {
    /// A frontend message with `tag` was written.
    pub(super) fn wrote(&mut self, tag: u8) {
        match tag {
            b'S' => self.0.push_back(false),
            b'Q' => self.0.push_back(true),
            _ => {}
        }
    }

    /// A backend message with `tag` arrived.
    pub(super) fn arrived(&mut self, tag: u8) {
        match tag {
            // The startup exchange ends with a ReadyForQuery no request asked for: nothing to pop.
            b'Z' => {
                self.0.pop_front();
            }
            // CopyInResponse answers the oldest request. If it was extended, its Sync is one
            // the server ignores; the Sync after CopyDone/CopyFail ends it instead.
            b'G' if self.0.front() == Some(&false) => {
                self.0.pop_front();
            }
            _ => {}
        }
    }

    /// How many `ReadyForQuery` messages are still owed.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(o: &mut Owed, frontend: &[u8], backend: &[u8]) {
        for &t in frontend {
            o.wrote(t);
        }
        for &t in backend {
            o.arrived(t);
        }
    }

    #[test]
    fn requests_and_answers_pair_up() {
        let mut o = Owed::default();
        // Startup: a ReadyForQuery nobody asked for.
        run(&mut o, b"", b"RSKZ");
        assert_eq!(o.len(), 0);
        run(&mut o, b"BES", b"");
        run(&mut o, b"CS", b"");
        run(&mut o, b"Q", b"");
        assert_eq!(o.len(), 3);
        run(&mut o, b"", b"2DCZ3Z");
        assert_eq!(o.len(), 1);
        run(&mut o, b"", b"CZ");
        assert_eq!(o.len(), 0);
    }

    #[test]
    fn an_extended_copy_in_is_owed_one_ready_for_its_two_syncs() {
        let mut o = Owed::default();
        // tokio-postgres's copy_in: Bind, Execute, Sync; the server enters copy-in mode.
        run(&mut o, b"BES", b"2G");
        assert_eq!(o.len(), 0);
        // Data, CopyDone, Sync: that Sync is answered.
        run(&mut o, b"ddcS", b"");
        assert_eq!(o.len(), 1);
        run(&mut o, b"", b"CZ");
        assert_eq!(o.len(), 0);
        // A COPY that fails before copy-in mode: both Syncs are answered.
        run(&mut o, b"BES", b"E");
        run(&mut o, b"fS", b"Z");
        assert_eq!(o.len(), 1);
        run(&mut o, b"", b"Z");
        assert_eq!(o.len(), 0);
    }

    #[test]
    fn a_copy_in_started_by_a_simple_query_keeps_its_count() {
        let mut o = Owed::default();
        run(&mut o, b"Q", b"G");
        assert_eq!(o.len(), 1);
        run(&mut o, b"dc", b"CZ");
        assert_eq!(o.len(), 0);
    }
}
