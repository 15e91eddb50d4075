//! [`TargetSessionAttrs`]: which kind of server a connection must reach (libpq's
//! `target_session_attrs`), and the decision whether a server that accepted the connection is
//! that kind, made from what the server reported ([`ServerState`]) the way libpq makes it.
//!
//! The decision is pure: the connect path reads the `ParameterStatus` values of the startup
//! (`in_hot_standby` and `default_transaction_read_only`, reported by PostgreSQL 14 and later),
//! asks [`TargetSessionAttrs::check`], runs the [`SessionQuery`] it asks for when the server did
//! not report enough (older servers), and moves on to the next host on a [`Rejection`].

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

#[cfg(doc)]
use super::Config;

/// The kind of server a connection must reach (libpq's `target_session_attrs`); a server of
/// another kind is closed and the next host tried.
///
/// Read-write and read-only are about the session (`default_transaction_read_only` or hot
/// standby); primary and standby about the server (hot standby alone), as in libpq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TargetSessionAttrs {
    /// Any server (the default).
    #[default]
    Any,
    /// A session that accepts writes by default: not in hot standby and
    /// `default_transaction_read_only` off.
    ReadWrite,
    /// A session that refuses writes by default: in hot standby or
    /// `default_transaction_read_only` on.
    ReadOnly,
    /// A server that is not in hot standby.
    Primary,
    /// A server in hot standby.
    Standby,
    /// A standby if any host is one; otherwise any server (a second pass over the hosts).
    PreferStandby,
}

impl TargetSessionAttrs {
    /// libpq's name (`any`, `read-write`, `read-only`, `primary`, `standby`, `prefer-standby`).
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
            TargetSessionAttrs::Primary => "primary",
            TargetSessionAttrs::Standby => "standby",
            TargetSessionAttrs::PreferStandby => "prefer-standby",
        }
    }

    /// The passes over the host list a connect makes, each with the kind it accepts:
    /// `prefer-standby` is a pass for a standby, then a pass accepting any server (libpq's
    /// `SERVER_TYPE_PREFER_STANDBY_PASS2`); every other value is one pass of itself.
    pub fn passes(self) -> &'static [TargetSessionAttrs] {
        match self {
            TargetSessionAttrs::PreferStandby => {
                &[TargetSessionAttrs::Standby, TargetSessionAttrs::Any]
            }
            TargetSessionAttrs::Any => &[TargetSessionAttrs::Any],
            TargetSessionAttrs::ReadWrite => &[TargetSessionAttrs::ReadWrite],
            TargetSessionAttrs::ReadOnly => &[TargetSessionAttrs::ReadOnly],
            TargetSessionAttrs::Primary => &[TargetSessionAttrs::Primary],
            TargetSessionAttrs::Standby => &[TargetSessionAttrs::Standby],
        }
    }

    /// Whether a server in `state` is acceptable for one pass of this kind (see
    /// [`passes`](Self::passes); `PreferStandby` itself is checked as its first pass,
    /// `Standby`).
    ///
    /// As libpq: `read-write` / `read-only` need both `default_transaction_read_only` and
    /// `in_hot_standby` (either unknown: ask [`SessionQuery::TransactionReadOnly`]) and call the
    /// session read-only when either is on; `primary` / `standby` look at `in_hot_standby`
    /// alone (unknown: ask [`SessionQuery::InRecovery`]).
    pub fn check(self, state: ServerState) -> SessionCheck {
        use TargetSessionAttrs as T;
        match self {
            T::Any => SessionCheck::Accept,
            T::ReadWrite | T::ReadOnly => {
                let (Some(read_only), Some(hot_standby)) =
                    (state.default_transaction_read_only, state.in_hot_standby)
                else {
                    return SessionCheck::Ask(SessionQuery::TransactionReadOnly);
                };
                let read_only_server = read_only || hot_standby;
                match (self, read_only_server) {
                    (T::ReadWrite, true) => self.reject(Reason::ReadOnly),
                    (T::ReadOnly, false) => self.reject(Reason::NotReadOnly),
                    _ => SessionCheck::Accept,
                }
            }
            T::Primary | T::Standby | T::PreferStandby => {
                let Some(hot_standby) = state.in_hot_standby else {
                    return SessionCheck::Ask(SessionQuery::InRecovery);
                };
                match (self, hot_standby) {
                    (T::Primary, true) => self.reject(Reason::InHotStandby),
                    (T::Standby | T::PreferStandby, false) => self.reject(Reason::NotInHotStandby),
                    _ => SessionCheck::Accept,
                }
            }
        }
    }

    fn reject(self, reason: Reason) -> SessionCheck {
        SessionCheck::Reject(Rejection {
            wanted: self,
            reason,
        })
    }
}

impl fmt::Display for TargetSessionAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TargetSessionAttrs {
    type Err = Error;

    /// Parses libpq's names (case-insensitive, `_` accepted for `-`).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "any" => Ok(TargetSessionAttrs::Any),
            "read-write" => Ok(TargetSessionAttrs::ReadWrite),
            "read-only" => Ok(TargetSessionAttrs::ReadOnly),
            "primary" => Ok(TargetSessionAttrs::Primary),
            "standby" => Ok(TargetSessionAttrs::Standby),
            "prefer-standby" => Ok(TargetSessionAttrs::PreferStandby),
            _ => Err(Error::config(
                "target_session_attrs",
                "unknown target_session_attrs; use one of any, read-write, read-only, primary, \
                 standby, prefer-standby",
            )),
        }
    }
}

/// What a server reported about itself, as far as [`TargetSessionAttrs::check`] needs it
/// (`None` = not reported, not asked yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerState {
    /// `default_transaction_read_only` (a `ParameterStatus` of PostgreSQL 14+).
    pub default_transaction_read_only: Option<bool>,
    /// `in_hot_standby` (a `ParameterStatus` of PostgreSQL 14+).
    pub in_hot_standby: Option<bool>,
}

impl ServerState {
    /// The state from the startup `ParameterStatus` values, looked up by name. As libpq, a
    /// value is on exactly when it is `on`.
    pub fn from_parameters<'a>(parameter: impl Fn(&str) -> Option<&'a str>) -> Self {
        let flag = |name| parameter(name).map(|v| v == "on");
        ServerState {
            default_transaction_read_only: flag("default_transaction_read_only"),
            in_hot_standby: flag("in_hot_standby"),
        }
    }
}

/// A query the connect path runs when the server did not report what the check needs (servers
/// before PostgreSQL 14), as libpq does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionQuery {
    /// `SHOW transaction_read_only`.
    TransactionReadOnly,
    /// `SELECT pg_catalog.pg_is_in_recovery()`.
    InRecovery,
}

impl SessionQuery {
    /// The SQL sent (one row, one text column).
    pub fn sql(self) -> &'static str {
        match self {
            SessionQuery::TransactionReadOnly => "SHOW transaction_read_only",
            SessionQuery::InRecovery => "SELECT pg_catalog.pg_is_in_recovery()",
        }
    }

    /// Folds the query's answer (its one value as text) into `state`. `transaction_read_only
    /// = on` proves that one of `default_transaction_read_only` and hot standby is on without
    /// saying which, so libpq sets both, and so does this.
    pub fn apply(self, value: &str, state: &mut ServerState) {
        match self {
            SessionQuery::TransactionReadOnly => {
                let on = value.starts_with("on");
                state.default_transaction_read_only = Some(on);
                state.in_hot_standby = Some(on);
            }
            SessionQuery::InRecovery => state.in_hot_standby = Some(value.starts_with('t')),
        }
    }
}

/// What [`TargetSessionAttrs::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCheck {
    /// The server is the kind asked for: use the connection.
    Accept,
    /// Run this query, [apply](SessionQuery::apply) its answer and check again.
    Ask(SessionQuery),
    /// The server is another kind: close the connection and try the next host.
    Reject(Rejection),
}

/// Why a server was not the kind asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    ReadOnly,
    NotReadOnly,
    InHotStandby,
    NotInHotStandby,
}

/// A server that accepted the connection but is not the kind [`TargetSessionAttrs`] asked for;
/// its `Display` says which kind it is and what was asked for, e.g. `server is read-only
/// (hot standby or default_transaction_read_only = on) but target_session_attrs=read-write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    wanted: TargetSessionAttrs,
    reason: Reason,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.reason {
            Reason::ReadOnly => {
                "server is read-only (hot standby or default_transaction_read_only = on)"
            }
            Reason::NotReadOnly => "server is not read-only",
            Reason::InHotStandby => "server is in hot standby",
            Reason::NotInHotStandby => "server is not in hot standby",
        };
        write!(f, "{what} but target_session_attrs={}", self.wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use TargetSessionAttrs as T;

    const ALL: [T; 6] = [
        T::Any,
        T::ReadWrite,
        T::ReadOnly,
        T::Primary,
        T::Standby,
        T::PreferStandby,
    ];

    fn state(read_only: Option<bool>, hot_standby: Option<bool>) -> ServerState {
        ServerState {
            default_transaction_read_only: read_only,
            in_hot_standby: hot_standby,
        }
    }

    #[test]
    fn names_round_trip() {
        for a in ALL {
            assert_eq!(a.to_string().parse::<T>().unwrap(), a);
            assert_eq!(a.as_str().to_uppercase().parse::<T>().unwrap(), a);
        }
        assert_eq!("read_write".parse::<T>().unwrap(), T::ReadWrite);
        assert_eq!(T::default(), T::Any);
        match "master".parse::<T>() {
            Err(Error::Configuration { field, message }) => {
                assert_eq!(field, "target_session_attrs");
                assert!(message.contains("prefer-standby"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn read_write_and_read_only_look_at_either_flag() {
        let on = Some(true);
        let off = Some(false);
        for (attrs, ro, hs, accept) in [
            (T::ReadWrite, off, off, true),
            (T::ReadWrite, on, off, false),
            (T::ReadWrite, off, on, false),
            (T::ReadWrite, on, on, false),
            (T::ReadOnly, off, off, false),
            (T::ReadOnly, on, off, true),
            (T::ReadOnly, off, on, true),
            (T::ReadOnly, on, on, true),
        ] {
            let got = attrs.check(state(ro, hs));
            assert_eq!(
                matches!(got, SessionCheck::Accept),
                accept,
                "{attrs} {ro:?} {hs:?}: {got:?}"
            );
        }
        for attrs in [T::ReadWrite, T::ReadOnly] {
            for s in [state(None, off), state(off, None), state(None, None)] {
                assert_eq!(
                    attrs.check(s),
                    SessionCheck::Ask(SessionQuery::TransactionReadOnly)
                );
            }
        }
    }

    #[test]
    fn primary_and_standby_look_at_hot_standby_alone() {
        for ro in [None, Some(true), Some(false)] {
            assert_eq!(
                T::Primary.check(state(ro, Some(false))),
                SessionCheck::Accept
            );
            assert!(matches!(
                T::Primary.check(state(ro, Some(true))),
                SessionCheck::Reject(_)
            ));
            for standby in [T::Standby, T::PreferStandby] {
                assert_eq!(standby.check(state(ro, Some(true))), SessionCheck::Accept);
                assert!(matches!(
                    standby.check(state(ro, Some(false))),
                    SessionCheck::Reject(_)
                ));
                assert_eq!(
                    standby.check(state(ro, None)),
                    SessionCheck::Ask(SessionQuery::InRecovery)
                );
            }
        }
    }

    #[test]
    fn prefer_standby_is_a_standby_pass_then_any() {
        assert_eq!(T::PreferStandby.passes(), &[T::Standby, T::Any]);
        for a in ALL.into_iter().filter(|a| *a != T::PreferStandby) {
            assert_eq!(a.passes(), &[a]);
        }
    }

    #[test]
    fn rejections_say_what_the_server_is_and_what_was_asked() {
        let r = |attrs: T, s| match attrs.check(s) {
            SessionCheck::Reject(r) => r.to_string(),
            other => panic!("{other:?}"),
        };
        let msg = r(T::ReadWrite, state(Some(true), Some(false)));
        assert!(
            msg.contains("read-only") && msg.ends_with("target_session_attrs=read-write"),
            "{msg}"
        );
        assert_eq!(
            r(T::ReadOnly, state(Some(false), Some(false))),
            "server is not read-only but target_session_attrs=read-only"
        );
        assert_eq!(
            r(T::Primary, state(None, Some(true))),
            "server is in hot standby but target_session_attrs=primary"
        );
        assert_eq!(
            r(T::Standby, state(None, Some(false))),
            "server is not in hot standby but target_session_attrs=standby"
        );
    }

    #[test]
    fn startup_parameters_and_fallback_queries_fill_the_state() {
        let reported = |name: &str| match name {
            "default_transaction_read_only" => Some("off"),
            "in_hot_standby" => Some("on"),
            _ => None,
        };
        assert_eq!(
            ServerState::from_parameters(reported),
            state(Some(false), Some(true))
        );
        assert_eq!(ServerState::from_parameters(|_| None), state(None, None));
        let mut s = ServerState::default();
        SessionQuery::TransactionReadOnly.apply("on", &mut s);
        assert_eq!(s, state(Some(true), Some(true)));
        SessionQuery::TransactionReadOnly.apply("off", &mut s);
        assert_eq!(s, state(Some(false), Some(false)));
        let mut s = ServerState::default();
        SessionQuery::InRecovery.apply("t", &mut s);
        assert_eq!(s, state(None, Some(true)));
        SessionQuery::InRecovery.apply("f", &mut s);
        assert_eq!(s, state(None, Some(false)));
    }

    fn flag() -> impl Strategy<Value = Option<bool>> {
        prop_oneof![Just(None), Just(Some(false)), Just(Some(true))]
    }

    proptest! {
        /// Checking, answering the query asked for with what the server really is, and checking
        /// again always ends in a decision within two rounds; the decision accepts exactly the
        /// servers of the kind asked for.
        #[test]
        fn decision_matches_the_server_kind(
            attrs in proptest::sample::select(ALL.to_vec()),
            reported_ro in flag(), reported_hs in flag(),
            real_ro: bool, real_hs: bool,
        ) {
            // What the server reports, when it reports, is the truth.
            let reported_ro = reported_ro.map(|_| real_ro);
            let reported_hs = reported_hs.map(|_| real_hs);
            let mut s = state(reported_ro, reported_hs);
            let mut rounds = 0;
            let decision = loop {
                rounds += 1;
                prop_assert!(rounds <= 2, "{attrs} {s:?} did not decide");
                match attrs.check(s) {
                    SessionCheck::Ask(q) => {
                        let answer = match q {
                            SessionQuery::TransactionReadOnly => if real_ro || real_hs { "on" } else { "off" },
                            SessionQuery::InRecovery => if real_hs { "t" } else { "f" },
                        };
                        q.apply(answer, &mut s);
                    }
                    other => break other,
                }
            };
            let accepted = decision == SessionCheck::Accept;
            // A server's kind, given its real flags; read-only as the session sees it.
            let read_only = real_ro || real_hs;
            let want = match attrs {
                T::Any => true,
                T::ReadWrite => !read_only,
                T::ReadOnly => read_only,
                T::Primary => !real_hs,
                T::Standby | T::PreferStandby => real_hs,
            };
            // SHOW transaction_read_only cannot tell hot standby from a read-only default, so
            // an older server answering it is judged on "read-only", which is what read-write
            // and read-only ask about: the same decision.
            prop_assert_eq!(accepted, want, "{} {:?}", attrs, decision);
        }
    }
}
