//! Route selection with Kong 3's default (`traditional_compatible`) semantics.
//!
//! Routes are expanded when the config loads into one entry per path (a route with
//! several paths matches by whichever fits, each with its own priority), sorted by Kong's
//! priority: more match fields, then plain hosts only, then more headers, then regex over
//! prefix, then `regex_priority`, then the longest prefix; ties keep file order. Selection
//! is a linear scan over that order and allocates nothing.

mod path;

use std::cmp::Reverse;

pub(crate) use path::escaped;
pub use path::{
    decoded_for_matching, encoded_offset, encoded_route_path, normalize, regex_for_matching,
    upstream_path, PathError,
};

use crate::config::{Config, HostMatch, PathMatch, Route, ValueMatch};

/// What the router looks at in a request.
pub struct RequestView<'a> {
    pub method: &'a str,
    /// The normalized path, without the query.
    pub path: &'a str,
    /// The `Host` value (or the absolute-form authority), port included if sent.
    pub host: Option<&'a str>,
    pub headers: &'a [httparse::Header<'a>],
    pub https: bool,
    /// The local port the request arrived on: the port a route host with `:port`
    /// matches when the `Host` value names none.
    pub port: u16,
}

/// A selected route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub route: usize,
    pub service: usize,
    /// How many leading bytes of the path the matched path consumed (the leading `/`
    /// without a path).
    pub matched_len: usize,
}

#[derive(Debug)]
struct Entry {
    route: usize,
    service: usize,
    /// Index into the route's `paths`, or `None` for a route without paths.
    path: Option<usize>,
    /// The prefix of a prefix path, kept inline so the common case (a route with only
    /// prefix paths) is decided without touching the route itself.
    prefix: Option<Box<str>>,
    /// Whether the route has methods, hosts, headers or an http-only protocol to check
    /// as well.
    conditions: bool,
}

impl Entry {
    fn new(route: &Route, index: usize, path: Option<usize>) -> Entry {
        let prefix = match path.map(|p| &route.paths[p]) {
            Some(PathMatch::Prefix(prefix)) => Some(prefix.as_str().into()),
            _ => None,
        };
        Entry {
            route: index,
            service: route.service,
            path,
            prefix,
            conditions: !(route.methods.is_empty()
                && route.hosts.is_empty()
                && route.headers.is_empty()
                && route.https),
        }
    }
}

/// The compiled routing table of one config.
#[derive(Debug, Default)]
pub struct Router {
    entries: Vec<Entry>,
}

type Priority = (u8, bool, u8, bool, i64, usize);

fn priority(route: &Route, path: Option<&PathMatch>) -> Priority {
    let weight = [
        !route.methods.is_empty(),
        !route.hosts.is_empty(),
        !route.headers.is_empty(),
        !route.paths.is_empty(),
    ]
    .iter()
    .filter(|set| **set)
    .count() as u8;
    let plain_hosts =
        !route.hosts.is_empty() && route.hosts.iter().all(|h| matches!(h, HostMatch::Exact(_)));
    let headers = route.headers.len().min(255) as u8;
    let (regex, regex_priority, prefix_len) = match path {
        Some(PathMatch::Regex(_)) => (true, route.regex_priority, 0),
        Some(PathMatch::Prefix(prefix)) => (false, 0, prefix.len()),
        None => (false, 0, 0),
    };
    (
        weight,
        plain_hosts,
        headers,
        regex,
        regex_priority,
        prefix_len,
    )
}

impl Router {
    /// Compiles the routes of a config; disabled services' routes are left out, as in Kong.
    pub fn new(config: &Config) -> Router {
        let mut keyed: Vec<(Reverse<Priority>, usize, usize, Entry)> = Vec::new();
        for (index, route) in config.routes.iter().enumerate() {
            if !config.services[route.service].enabled {
                continue;
            }
            if route.paths.is_empty() {
                keyed.push((
                    Reverse(priority(route, None)),
                    index,
                    0,
                    Entry::new(route, index, None),
                ));
            }
            for (p, path) in route.paths.iter().enumerate() {
                keyed.push((
                    Reverse(priority(route, Some(path))),
                    index,
                    p,
                    Entry::new(route, index, Some(p)),
                ));
            }
        }
        keyed.sort_by_key(|k| (k.0, k.1, k.2));
        Router {
            entries: keyed.into_iter().map(|(_, _, _, entry)| entry).collect(),
        }
    }

    /// The highest-priority route that matches, ignoring protocols.
    pub fn select(&self, routes: &[Route], request: &RequestView<'_>) -> Option<Match> {
        // The path as regexes read it: decoded once, at the first regex route tried.
        let decoded = std::cell::OnceCell::new();
        for entry in &self.entries {
            if let Some(prefix) = &entry.prefix {
                if !request.path.starts_with(&**prefix) {
                    continue;
                }
                if !entry.conditions {
                    return Some(Match {
                        route: entry.route,
                        service: entry.service,
                        matched_len: prefix.len(),
                    });
                }
            }
            let route = &routes[entry.route];
            // An http-only route is not for an HTTPS request, which goes on to the next
            // route that matches (Kong's documented "HTTPS requests are answered with an
            // error": a 404 when no other route takes it). An https-only route over plain
            // HTTP does match, to answer its 426 or redirect.
            if request.https && !route.https {
                continue;
            }
            if !route.methods.is_empty() && !route.methods.iter().any(|m| m == request.method) {
                continue;
            }
            if !route.hosts.is_empty() && !hosts_match(&route.hosts, request.host, request.port) {
                continue;
            }
            if !route
                .headers
                .iter()
                .all(|(name, values)| header_matches(name, values, request.headers))
            {
                continue;
            }
            let matched_len = match entry.path.map(|p| &route.paths[p]) {
                // As Kong's router: a route without paths matched the path's leading `/`,
                // so `strip_path` joins `/` to the service path as the bare service path.
                None => 1,
                Some(PathMatch::Prefix(prefix)) => prefix.len(),
                Some(PathMatch::Regex(re)) => match regex_end(re, request.path, &decoded) {
                    Some(end) => end,
                    None => continue,
                },
            };
            return Some(Match {
                route: entry.route,
                service: entry.service,
                matched_len,
            });
        }
        None
    }
}

/// Where a regex path's match ends in the normalized request path. As Kong's router,
/// the regex reads the path with escapes decoded (but those of reserved characters),
/// so `\s` matches `%20` and `é` matches `%C3%A9`; the end is mapped back to the path.
/// `decoded` holds the decoded path once computed, for the routes tried after.
fn regex_end(
    re: &regex::Regex,
    path: &str,
    decoded: &std::cell::OnceCell<Option<String>>,
) -> Option<usize> {
    match decoded.get_or_init(|| decoded_for_matching(path)) {
        None => re.find(path).map(|m| m.end()),
        Some(decoded) => re.find(decoded).map(|m| encoded_offset(path, m.end())),
    }
}

/// Whether the request's host is one of the route's. A route host naming a port (`a.test:8000`,
/// `*.a.test:8000`) matches that port as well, as Kong's router does: the `Host` value's port
/// read as a number (`08000` is 8000), or, when the value names none, the port the request
/// arrived on.
fn hosts_match(hosts: &[HostMatch], host: Option<&str>, local_port: u16) -> bool {
    let Some(full) = host else {
        return false;
    };
    let bare = strip_port(full);
    let port = || match full[bare.len()..].strip_prefix(':') {
        Some(digits) => port_number(digits),
        None => Some(local_port),
    };
    // A pattern's name, and whether its port (if it names one) is the request's.
    let split = |pattern: &'_ str| -> (usize, bool) {
        let name = strip_port(pattern);
        let port_ok = match pattern[name.len()..].strip_prefix(':') {
            Some(digits) => port().is_some_and(|p| Some(p) == port_number(digits)),
            None => true,
        };
        (name.len(), port_ok)
    };
    hosts.iter().any(|m| match m {
        HostMatch::Exact(h) => {
            let (len, port_ok) = split(h);
            port_ok && bare.eq_ignore_ascii_case(&h[..len])
        }
        HostMatch::Suffix(suffix) => {
            let (len, port_ok) = split(suffix);
            port_ok
                && bare.len() > len
                && bare.as_bytes()[bare.len() - len..]
                    .eq_ignore_ascii_case(&suffix.as_bytes()[..len])
        }
        HostMatch::Prefix(prefix) => {
            bare.len() > prefix.len()
                && bare.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        }
    })
}

/// A port written in decimal digits (leading zeros allowed), if it is one.
fn port_number(digits: &str) -> Option<u16> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match digits.trim_start_matches('0') {
        "" => Some(0),
        significant => significant.parse().ok(),
    }
}

/// The host without the root's trailing dot (`admin.example.:80` → `admin.example:80`),
/// as nginx validates it: the name routes as the host it is, and as the
/// `X-Forwarded-Host` sent for it says.
pub fn without_root_dot(host: &str) -> std::borrow::Cow<'_, str> {
    let bare = strip_port(host);
    match bare.strip_suffix('.') {
        Some(name) if !bare.starts_with('[') => {
            std::borrow::Cow::Owned(format!("{name}{}", &host[bare.len()..]))
        }
        _ => std::borrow::Cow::Borrowed(host),
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) => &host[..i],
        None => host,
    }
}

fn header_matches(name: &str, values: &[ValueMatch], headers: &[httparse::Header<'_>]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .any(|h| {
            let Ok(value) = std::str::from_utf8(h.value) else {
                return false;
            };
            let value = value.trim();
            values.iter().any(|v| match v {
                ValueMatch::Exact(expected) => value.eq_ignore_ascii_case(expected),
                ValueMatch::Regex(re) => re.is_match(value),
            })
        })
}

#[cfg(test)]
mod tests;
