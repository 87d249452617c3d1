//! Service and target host names, resolved all at once once the config is built.
//!
//! Resolving each name as the build met it made a load wait for every lookup in turn
//! (300 names that do not resolve held `check`, a reload or an Admin API write for a
//! minute). The build takes IP literals as they are and leaves names unresolved;
//! [`fill`] then looks up every name not already known, concurrently, and writes the
//! addresses in. A load waits about as long as its slowest lookup.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{Config, Report};

/// Lookups running at once, at most.
const CONCURRENT: usize = 16;

/// A host name and port.
pub type Name = (String, u16);

/// Names already looked up, with what each resolved to (`None`: it did not).
pub type Known = HashMap<Name, Option<SocketAddr>>;

/// The address of an IP literal host (`[::1]` too); `None` for a name.
pub fn literal(host: &str, port: u16) -> Option<SocketAddr> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

/// Gives every service (not balanced) and target that names a host its address: what
/// `known` says of the name, else a lookup, all of them at once; each that did not
/// resolve is named in a warning.
pub fn fill(config: &mut Config, known: &Known, report: &mut Report) {
    let services = config
        .services
        .iter_mut()
        .filter(|s| s.balancer.is_none() && s.addr.is_none())
        .map(|s| ((s.host.clone(), s.port), &mut s.addr, &mut s.addr_text));
    let targets = config
        .upstreams
        .iter_mut()
        .flat_map(|u| u.targets.iter_mut())
        .filter(|t| t.addr.is_none())
        .map(|t| ((t.host.clone(), t.port), &mut t.addr, &mut t.addr_text));
    let mut slots: Vec<_> = services.chain(targets).collect();
    let wanted: Vec<Name> = slots
        .iter()
        .map(|(name, _, _)| name)
        .filter(|name| !known.contains_key(*name))
        .cloned()
        .collect();
    let found: Known = look_up_all(wanted).into_iter().collect();
    for (name, addr, text) in &mut slots {
        **addr = known
            .get(name)
            .or_else(|| found.get(name))
            .copied()
            .flatten();
        **text = addr.map(|a| a.to_string()).unwrap_or_default();
    }
    for service in config.services.iter().filter(|s| s.balancer.is_none()) {
        if service.addr.is_none() {
            report.warn(format!(
                "service '{}': host '{}' did not resolve; its requests get 503 until a reload resolves it",
                service.name, service.host
            ));
        }
    }
    for upstream in &config.upstreams {
        for target in upstream.targets.iter().filter(|t| t.addr.is_none()) {
            report.warn(format!(
                "upstream '{}': target '{}' did not resolve; it takes no traffic until a reload resolves it",
                upstream.name, target.target
            ));
        }
    }
}

fn look_up(host: &str, port: u16) -> Option<SocketAddr> {
    if reads_as_number(host) {
        return None;
    }
    (host, port).to_socket_addrs().ok()?.next()
}

/// Whether the C library's resolver would take `host` for an IPv4 address in one of
/// inet_aton's forms (`1.2.3` is 1.2.0.3, `0x7f.1` is 127.0.0.1) rather than look it up:
/// its last label is a number, which no domain name's is. Kong's resolver looks such a
/// name up (and finds nothing); ringway does not reach an address the operator never
/// wrote. Dotted quads are IP literals by then, read in decimal (`canonical_host`).
fn reads_as_number(host: &str) -> bool {
    let last = host
        .trim_end_matches('.')
        .rsplit('.')
        .next()
        .unwrap_or_default();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    digits(last) || (last.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x")) && hex(&last[2..]))
}

/// Looks names up on up to [`CONCURRENT`] threads.
fn look_up_all(mut names: Vec<Name>) -> Vec<(Name, Option<SocketAddr>)> {
    names.sort_unstable();
    names.dedup();
    let next = AtomicUsize::new(0);
    let found = Mutex::new(Vec::with_capacity(names.len()));
    std::thread::scope(|scope| {
        let work = || {
            while let Some(name) = names.get(next.fetch_add(1, Ordering::Relaxed)) {
                let addr = look_up(&name.0, name.1);
                found
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((name.clone(), addr));
            }
        };
        for _ in 0..names.len().min(CONCURRENT) {
            // A thread the system will not give is done without: the names left are
            // looked up here, after the threads that did start.
            if std::thread::Builder::new()
                .spawn_scoped(scope, work)
                .is_err()
            {
                break;
            }
        }
        work();
    });
    found.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_looked_up_unless_known() {
        assert_eq!(literal("[::1]", 1), Some("[::1]:1".parse().unwrap()));
        assert_eq!(literal("localhost", 1), None);
        let found = look_up_all(vec![("localhost".into(), 80), ("localhost".into(), 80)]);
        assert_eq!(found.len(), 1, "one lookup per name");
        assert_eq!(found[0].1.map(|a| a.port()), Some(80));
    }

    #[test]
    fn names_the_resolver_would_read_as_numbers_are_not_looked_up() {
        for name in [
            "1.2.3",
            "127.1",
            "0x7f.1",
            "2130706433",
            "a.b.10",
            "1.2.3.4.",
        ] {
            assert!(reads_as_number(name), "{name}");
            assert_eq!(look_up(name, 80), None, "{name}");
        }
        for name in ["localhost", "a.example", "x.0x", "10.in-addr.arpa", "a1"] {
            assert!(!reads_as_number(name), "{name}");
        }
    }
}
