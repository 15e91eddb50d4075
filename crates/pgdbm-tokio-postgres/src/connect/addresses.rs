//! The socket addresses one configured host stands for: none to resolve for a Unix socket
//! directory, its `hostaddr` when one is given (no name lookup), else every address its name
//! resolves to, looked up once per connect and bounded by `connect_timeout`. Each address is
//! then tried in turn, and the one that served the connection is kept for cancel requests.

use std::net::SocketAddr;
use std::time::Duration;

use pgdbm_core::{HostSpec, LoadBalanceHosts};

/// Where to open a stream for one try: a Unix socket (`None`, the directory is the host) or
/// one TCP address.
pub(crate) type Address = Option<SocketAddr>;

/// The addresses to try for `spec`, in the order to try them (shuffled for
/// [`LoadBalanceHosts::Random`], as libpq does). The error is the reason for the failure
/// list: the lookup failed, timed out or found nothing.
pub(crate) async fn addresses_of(
    spec: &HostSpec,
    limit: Duration,
    order: LoadBalanceHosts,
) -> Result<Vec<Address>, String> {
    if let Some(ip) = spec.hostaddr {
        return Ok(vec![Some(SocketAddr::new(ip, spec.port))]);
    }
    if spec.is_unix_socket() {
        return Ok(vec![None]);
    }
    let lookup = tokio::net::lookup_host((spec.host.as_str(), spec.port));
    let mut addrs: Vec<Address> = match tokio::time::timeout(limit, lookup).await {
        Ok(Ok(found)) => found.map(Some).collect(),
        Ok(Err(e)) => {
            return Err(format!(
            "could not resolve host name {:?}: {e}; check the name or give its address in hostaddr",
            spec.host
        ))
        }
        Err(_) => {
            return Err(format!(
                "resolving host name {:?} took longer than connect_timeout = {limit:?}",
                spec.host
            ))
        }
    };
    if addrs.is_empty() {
        return Err(format!("host name {:?} resolved to no address", spec.host));
    }
    order.order(&mut addrs, random_below);
    Ok(addrs)
}

/// A uniformly random index below `n` (`n` > 0), for [`LoadBalanceHosts::order`].
pub(crate) fn random_below(n: usize) -> usize {
    rand::random_range(0..n.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hostaddr_and_sockets_need_no_lookup() {
        let limit = Duration::from_secs(5);
        let mut spec = HostSpec::new("name.invalid", 5433);
        spec.hostaddr = Some("10.1.2.3".parse().unwrap());
        assert_eq!(
            addresses_of(&spec, limit, LoadBalanceHosts::Disable)
                .await
                .unwrap(),
            vec![Some("10.1.2.3:5433".parse().unwrap())]
        );
        let sock = HostSpec::new("/run/postgresql", 5432);
        assert_eq!(
            addresses_of(&sock, limit, LoadBalanceHosts::Random)
                .await
                .unwrap(),
            vec![None]
        );
        let ip = HostSpec::new("127.0.0.1", 6000);
        assert_eq!(
            addresses_of(&ip, limit, LoadBalanceHosts::Disable)
                .await
                .unwrap(),
            vec![Some("127.0.0.1:6000".parse().unwrap())]
        );
        // RFC 6761: `.invalid` never resolves.
        let bad = HostSpec::new("no-such-host.invalid", 5432);
        let e = addresses_of(&bad, limit, LoadBalanceHosts::Disable)
            .await
            .unwrap_err();
        assert!(e.contains("no-such-host.invalid"), "{e}");
    }

    #[test]
    fn random_below_stays_in_range() {
        for n in 1..20 {
            for _ in 0..50 {
                assert!(random_below(n) < n);
            }
        }
    }
}
