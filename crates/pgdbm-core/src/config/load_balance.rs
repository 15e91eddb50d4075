//! [`LoadBalanceHosts`]: the order in which a connect tries the configured hosts (libpq's
//! `load_balance_hosts`), and the shuffle that `random` applies on every connect.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The order in which a connect tries the hosts (libpq's `load_balance_hosts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LoadBalanceHosts {
    /// In the order given (the default): the first host that works is used.
    #[default]
    Disable,
    /// In a random order chosen anew for every connect, and the addresses a host name resolves
    /// to in random order too, so connections spread over the hosts.
    Random,
}

impl LoadBalanceHosts {
    /// libpq's name (`disable`, `random`).
    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalanceHosts::Disable => "disable",
            LoadBalanceHosts::Random => "random",
        }
    }

    /// Puts `items` in the order to try them: unchanged for `Disable`, a uniform shuffle
    /// (Fisher-Yates) for `Random`. `random_below(n)` must return a uniformly random index
    /// in `0..n` (values out of range are reduced modulo `n`).
    pub fn order<T>(self, items: &mut [T], mut random_below: impl FnMut(usize) -> usize) {
        if self == LoadBalanceHosts::Disable {
            return;
        }
        for i in (1..items.len()).rev() {
            let j = random_below(i + 1) % (i + 1);
            items.swap(i, j);
        }
    }
}

impl fmt::Display for LoadBalanceHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LoadBalanceHosts {
    type Err = Error;

    /// Parses libpq's names `disable` and `random` (case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "disable" => Ok(LoadBalanceHosts::Disable),
            "random" => Ok(LoadBalanceHosts::Random),
            _ => Err(Error::config(
                "load_balance_hosts",
                "unknown load_balance_hosts; use disable (hosts in order) or random",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_round_trip() {
        for m in [LoadBalanceHosts::Disable, LoadBalanceHosts::Random] {
            assert_eq!(m.to_string().parse::<LoadBalanceHosts>().unwrap(), m);
        }
        assert_eq!(
            "RANDOM".parse::<LoadBalanceHosts>().unwrap(),
            LoadBalanceHosts::Random
        );
        match "roundrobin".parse::<LoadBalanceHosts>() {
            Err(Error::Configuration { field, .. }) => assert_eq!(field, "load_balance_hosts"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_order_is_reachable() {
        // Enumerating the random choices of a 3-element shuffle gives each of the 6 orders once.
        let mut seen = std::collections::BTreeSet::new();
        for a in 0..3 {
            for b in 0..2 {
                let mut picks = [a, b].into_iter();
                let mut v = [1, 2, 3];
                LoadBalanceHosts::Random.order(&mut v, |_| picks.next().unwrap_or(0));
                seen.insert(v);
            }
        }
        assert_eq!(seen.len(), 6, "{seen:?}");
    }

    proptest! {
        #[test]
        fn order_is_a_permutation(v in proptest::collection::vec(any::<u8>(), 0..12),
                                  seeds in proptest::collection::vec(any::<usize>(), 12)) {
            let mut disabled = v.clone();
            LoadBalanceHosts::Disable.order(&mut disabled, |_| 0);
            prop_assert_eq!(&disabled, &v);
            let mut shuffled = v.clone();
            let mut it = seeds.into_iter();
            LoadBalanceHosts::Random.order(&mut shuffled, |_| it.next().unwrap_or(0));
            let (mut a, mut b) = (shuffled, v);
            a.sort();
            b.sort();
            prop_assert_eq!(a, b);
        }
    }
}
