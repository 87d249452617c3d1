//! The routing decision, differentially: a config of routes and a request, both built
//! from the input, routed by the compiled `Router` (sorted once, early exit, prefixes
//! inline) and by a reference that checks every route and path of the file and keeps
//! the best by Kong's priority rules, recomputed from the route fields. They must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::config::{Config, NodeOverrides};
use ringway::route::{RequestView, Router};

const PATHS: &[&str] = &[
    "/",
    "/a",
    "/ab",
    "/a/b",
    "/b",
    "\"~/a/[0-9]+$\"",
    "\"~/a.*\"",
    "\"~/b$\"",
];
const METHODS: &[&str] = &["GET", "POST"];
const HOSTS: &[&str] = &["a.com", "\"*.a.com\"", "\"b.*\"", "\"a.com:8080\""];
const HEADER_VALUES: &[&str] = &["\"1\"", "\"~*^2\""];

const REQUEST_PATHS: &[&str] = &["/", "/a", "/ab", "/abc", "/a/b", "/a/12", "/b", "/bb", "/c"];
const REQUEST_HOSTS: &[Option<&str>] = &[
    Some("a.com"),
    Some("A.COM"),
    Some("x.a.com"),
    Some("b.org"),
    Some("a.com:8080"),
    None,
];

/// Reads small choices from the input.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// A subset of `items`, by the bits of one byte.
    fn subset<'i>(&mut self, items: &[&'i str]) -> Vec<&'i str> {
        let bits = self.next();
        (0..items.len())
            .filter(|i| bits & (1 << i) != 0)
            .map(|i| items[i])
            .collect()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor(data);
    let mut yaml = String::from(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:9\n    routes:\n",
    );
    let routes = 1 + c.next() % 6;
    for r in 0..routes {
        let paths: Vec<&str> = (0..c.next() % 3)
            .map(|_| PATHS[usize::from(c.next()) % PATHS.len()])
            .collect();
        let methods = c.subset(METHODS);
        let hosts = c.subset(HOSTS);
        let header = c.subset(HEADER_VALUES);
        if paths.is_empty() && methods.is_empty() && hosts.is_empty() && header.is_empty() {
            continue;
        }
        yaml.push_str(&format!("      - name: r{r}\n"));
        yaml.push_str(&format!("        regex_priority: {}\n", c.next() % 3));
        yaml.push_str(&format!("        paths: [{}]\n", paths.join(", ")));
        yaml.push_str(&format!("        methods: [{}]\n", methods.join(", ")));
        yaml.push_str(&format!("        hosts: [{}]\n", hosts.join(", ")));
        if !header.is_empty() {
            yaml.push_str(&format!("        headers: {{x-v: [{}]}}\n", header.join(", ")));
        }
    }
    let Ok(config) = Config::from_bytes(yaml.as_bytes(), &NodeOverrides::default()) else {
        // Duplicate paths and the like are problems, not panics; nothing to compare.
        return;
    };
    let router = Router::new(&config);

    let method = ["GET", "POST", "PUT"][usize::from(c.next()) % 3];
    let path = REQUEST_PATHS[usize::from(c.next()) % REQUEST_PATHS.len()];
    let host = REQUEST_HOSTS[usize::from(c.next()) % REQUEST_HOSTS.len()];
    let value: &[u8] = [&b"1"[..], b"2x", b"3"][usize::from(c.next()) % 3];
    let headers = [httparse::Header {
        name: "X-V",
        value,
    }];
    let with_header = c.next() % 2 == 0;
    let view = RequestView {
        method,
        path,
        host,
        headers: if with_header { &headers } else { &[] },
        https: false,
        port: if c.next() % 2 == 0 { 8080 } else { 8000 },
    };
    let got = router.select(&config.routes, &view).map(|m| (m.route, m.matched_len));
    let want = reference(&yaml, &config, &view);
    assert_eq!(got, want, "config:\n{yaml}\nrequest: {method} {path} host={host:?} header={with_header}");
});

/// Every (route, path) that matches, the best kept by Kong's priority; file order breaks
/// ties. Written from the rules, not from the router.
fn reference(yaml: &str, config: &Config, req: &RequestView<'_>) -> Option<(usize, usize)> {
    let _ = yaml;
    let mut best: Option<((u8, bool, usize, bool, i64, usize), (usize, usize), usize)> = None;
    for (index, route) in config.routes.iter().enumerate() {
        if !route.methods.is_empty() && !route.methods.iter().any(|m| m == req.method) {
            continue;
        }
        if !route.hosts.is_empty() && !route.hosts.iter().any(|h| host_matches(h, req.host, req.port)) {
            continue;
        }
        let headers_ok = route.headers.iter().all(|(name, values)| {
            req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case(name)
                    && values.iter().any(|v| value_matches(v, h.value))
            })
        });
        if !headers_ok {
            continue;
        }
        let fields = [
            !route.methods.is_empty(),
            !route.hosts.is_empty(),
            !route.headers.is_empty(),
            !route.paths.is_empty(),
        ]
        .into_iter()
        .filter(|f| *f)
        .count() as u8;
        let plain = !route.hosts.is_empty()
            && route
                .hosts
                .iter()
                .all(|h| matches!(h, ringway::config::HostMatch::Exact(_)));
        let mut candidates = Vec::new();
        if route.paths.is_empty() {
            candidates.push(((false, 0i64, 0usize), 0usize, 0usize));
        }
        for (p, pm) in route.paths.iter().enumerate() {
            match pm {
                ringway::config::PathMatch::Prefix(prefix) => {
                    if req.path.starts_with(prefix.as_str()) {
                        candidates.push(((false, 0, prefix.len()), p, prefix.len()));
                    }
                }
                ringway::config::PathMatch::Regex(re) => {
                    if let Some(m) = re.find(req.path) {
                        if m.start() == 0 {
                            candidates.push(((true, route.regex_priority, 0), p, m.end()));
                        }
                    }
                }
            }
        }
        for ((regex, regex_priority, prefix_len), p, matched) in candidates {
            let key = (
                fields,
                plain,
                route.headers.len(),
                regex,
                regex_priority,
                prefix_len,
            );
            let better = match &best {
                None => true,
                Some((k, order, _)) => key > *k || (key == *k && (index, p) < *order),
            };
            if better {
                best = Some((key, (index, p), matched));
            }
        }
    }
    best.map(|(_, (route, _), matched)| (route, matched))
}

fn host_matches(m: &ringway::config::HostMatch, host: Option<&str>, port: u16) -> bool {
    let Some(host) = host.map(str::to_ascii_lowercase) else {
        return false;
    };
    let bare = host.split(':').next().unwrap_or("");
    // A host without a port is at the port the request arrived on.
    let with_port = if host.contains(':') { host.clone() } else { format!("{host}:{port}") };
    match m {
        ringway::config::HostMatch::Exact(h) if h.contains(':') => with_port == *h,
        ringway::config::HostMatch::Exact(h) => bare == h,
        ringway::config::HostMatch::Suffix(s) => bare.len() > s.len() && bare.ends_with(s.as_str()),
        ringway::config::HostMatch::Prefix(p) => {
            bare.len() > p.len() && bare.starts_with(p.as_str())
        }
    }
}

fn value_matches(m: &ringway::config::ValueMatch, value: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    match m {
        ringway::config::ValueMatch::Exact(v) => value.eq_ignore_ascii_case(v),
        ringway::config::ValueMatch::Regex(re) => re.is_match(value),
    }
}
