//! The failures of one connect attempt over several hosts, turned into one error that lists
//! every host tried and why it failed (the per-host messages never hold the password).

use super::AttemptError;

/// Failures by host (and address, when a host name stood for several), in the order first
/// seen; a later failure of the same host (the second pass of `prefer-standby`) replaces the
/// earlier one, as it is the more telling.
#[derive(Default)]
pub(super) struct Failures {
    entries: Vec<(String, AttemptError)>,
    /// Index of the most recent failure.
    last: usize,
}

impl Failures {
    /// Records that the host labelled `label` failed with `e`.
    pub(super) fn record(&mut self, label: String, e: AttemptError) {
        match self.entries.iter().position(|(l, _)| *l == label) {
            Some(i) => {
                self.entries[i].1 = e;
                self.last = i;
            }
            None => {
                self.entries.push((label, e));
                self.last = self.entries.len() - 1;
            }
        }
    }

    /// One error for the whole attempt: a single failure as it is; several as the most
    /// recent one (its host, port, source and permanence) with a message listing every host,
    /// e.g. `could not connect to any host: a:5432 (error connecting to server: Connection
    /// refused (os error 111)); b:5433 (server is read-only ... but
    /// target_session_attrs=read-write)`. `None` when nothing was recorded.
    pub(super) fn into_error(mut self) -> Option<AttemptError> {
        if self.entries.len() <= 1 {
            return self.entries.pop().map(|(_, e)| e);
        }
        let list = self
            .entries
            .iter()
            .map(|(label, e)| format!("{label} ({})", e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let last = self.last;
        let mut e = self.entries.swap_remove(last).1;
        e.message = format!("could not connect to any host: {list}");
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(host: &str, port: u16, message: &str, permanent: bool) -> AttemptError {
        AttemptError {
            host: host.to_string(),
            port,
            database: "db".to_string(),
            message: message.to_string(),
            source: None,
            permanent,
            rejected: false,
        }
    }

    #[test]
    fn one_failure_is_kept_as_it_is() {
        let mut f = Failures::default();
        assert!(Failures::default().into_error().is_none());
        f.record("a:1".into(), err("a", 1, "refused", false));
        let e = f.into_error().unwrap();
        assert_eq!((e.host.as_str(), e.message.as_str()), ("a", "refused"));
    }

    #[test]
    fn several_failures_list_every_host_once() {
        let mut f = Failures::default();
        f.record("a:1".into(), err("a", 1, "refused", false));
        f.record("b:2".into(), err("b", 2, "not a standby", false));
        // The second pass of prefer-standby: b again, with its newer reason.
        f.record("a:1".into(), err("a", 1, "refused again", false));
        f.record("b:2".into(), err("b", 2, "bad password", true));
        let e = f.into_error().unwrap();
        assert_eq!(
            e.message,
            "could not connect to any host: a:1 (refused again); b:2 (bad password)"
        );
        assert_eq!((e.host.as_str(), e.port, e.permanent), ("b", 2, true));
    }
}
