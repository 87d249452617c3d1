//! Service and target host names, resolved all at once.
//!
//! Building a config meets its host names one by one, and resolving each as it comes
//! made a load wait for every lookup in turn (300 names that do not resolve held
//! `check`, a reload or an Admin API write for a minute). Within [`resolving`], a name
//! not yet known is noted and reads as unresolved; when the build is done, the noted
//! names are looked up concurrently and the config is built again, from what they
//! resolved to. A load takes about as long as its slowest lookup.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Lookups running at once, at most.
const CONCURRENT: usize = 16;

pub type Name = (String, u16);

#[derive(Default)]
struct Lookups {
    known: HashMap<Name, Option<SocketAddr>>,
    wanted: Vec<Name>,
}

thread_local! {
    static LOOKUPS: RefCell<Option<Lookups>> = const { RefCell::new(None) };
    /// Addresses the next [`resolving`] on this thread takes as known (see [`reusing`]).
    static SEED: RefCell<HashMap<Name, Option<SocketAddr>>> = RefCell::new(HashMap::new());
}

/// Runs `load` with the names in `known` taken as resolved to what they give: an
/// Admin API write rebuilds the config from both layers, and looking up every host
/// again for it (a reload's work) would hold each write for the slowest lookup.
pub fn reusing<T>(
    known: impl IntoIterator<Item = (Name, Option<SocketAddr>)>,
    load: impl FnOnce() -> T,
) -> T {
    SEED.with(|seed| *seed.borrow_mut() = known.into_iter().collect());
    let loaded = load();
    SEED.with(|seed| seed.borrow_mut().clear());
    loaded
}

/// The address of `host:port`: an IP literal at once; a name from this build's
/// lookups (noted for the next round when not yet looked up), or outside
/// [`resolving`] by a lookup now.
pub fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    let noted = LOOKUPS.with(|lookups| {
        let mut lookups = lookups.borrow_mut();
        let lookups = lookups.as_mut()?;
        let name = (host.to_owned(), port);
        Some(match lookups.known.get(&name) {
            Some(addr) => *addr,
            None => {
                lookups.wanted.push(name);
                None
            }
        })
    });
    match noted {
        Some(addr) => addr,
        None => look_up(host, port),
    }
}

/// Runs `build` once; if it met names not looked up yet, looks them all up at once and
/// runs it again. `build`'s result the second time is the one returned.
pub fn resolving<T>(mut build: impl FnMut() -> T) -> T {
    let known = SEED.with(|seed| std::mem::take(&mut *seed.borrow_mut()));
    let lookups = Lookups {
        known,
        wanted: Vec::new(),
    };
    let outer = LOOKUPS.with(|l| l.borrow_mut().replace(lookups));
    let mut built = build();
    let wanted = LOOKUPS.with(|l| {
        l.borrow_mut()
            .as_mut()
            .map(|l| std::mem::take(&mut l.wanted))
            .unwrap_or_default()
    });
    if !wanted.is_empty() {
        let found = look_up_all(wanted);
        LOOKUPS.with(|l| {
            if let Some(l) = l.borrow_mut().as_mut() {
                l.known.extend(found);
            }
        });
        built = build();
    }
    LOOKUPS.with(|l| *l.borrow_mut() = outer);
    built
}

fn look_up(host: &str, port: u16) -> Option<SocketAddr> {
    (host, port).to_socket_addrs().ok()?.next()
}

/// Looks names up on up to [`CONCURRENT`] threads.
fn look_up_all(mut names: Vec<Name>) -> Vec<(Name, Option<SocketAddr>)> {
    names.sort_unstable();
    names.dedup();
    let next = AtomicUsize::new(0);
    let found = Mutex::new(Vec::with_capacity(names.len()));
    std::thread::scope(|scope| {
        for _ in 0..names.len().min(CONCURRENT) {
            scope.spawn(|| {
                while let Some(name) = names.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let addr = look_up(&name.0, name.1);
                    found
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((name.clone(), addr));
                }
            });
        }
    });
    found.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_looked_up_between_two_builds() {
        let mut builds = 0;
        let addrs = resolving(|| {
            builds += 1;
            [resolve("localhost", 80), resolve("127.0.0.2", 81)]
        });
        assert_eq!(builds, 2);
        assert_eq!(addrs[0].map(|a| a.port()), Some(80));
        assert_eq!(addrs[1], Some("127.0.0.2:81".parse().unwrap()));
        // IP literals alone need no second build.
        let mut builds = 0;
        resolving(|| {
            builds += 1;
            resolve("[::1]", 1)
        });
        assert_eq!(builds, 1);
        // Names given as known are not looked up.
        let mut builds = 0;
        let addr = reusing(
            [(
                ("known.invalid".to_owned(), 8),
                Some("10.0.0.8:8".parse().unwrap()),
            )],
            || {
                resolving(|| {
                    builds += 1;
                    resolve("known.invalid", 8)
                })
            },
        );
        assert_eq!((builds, addr), (1, Some("10.0.0.8:8".parse().unwrap())));
    }
}
