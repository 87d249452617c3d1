use super::*;
use crate::config::NodeOverrides;

fn config(routes: &str) -> Config {
    let yaml = format!("_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:1\n  - name: off\n    url: http://127.0.0.1:2\n    enabled: false\n    routes:\n      - name: disabled\n        paths: [/]\nroutes:\n{routes}");
    Config::from_bytes(yaml.as_bytes(), &NodeOverrides::default())
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

struct Req<'a> {
    method: &'a str,
    path: &'a str,
    host: Option<&'a str>,
    headers: Vec<(&'a str, &'a str)>,
    https: bool,
}

fn get(path: &str) -> Req<'_> {
    Req {
        method: "GET",
        path,
        host: Some("example.com"),
        headers: vec![],
        https: false,
    }
}

fn select<'c>(config: &'c Config, req: &Req<'_>) -> Option<(&'c str, usize)> {
    let router = Router::new(config);
    let headers: Vec<httparse::Header<'_>> = req
        .headers
        .iter()
        .map(|(n, v)| httparse::Header {
            name: n,
            value: v.as_bytes(),
        })
        .collect();
    let view = RequestView {
        method: req.method,
        path: req.path,
        host: req.host,
        headers: &headers,
        https: req.https,
        // The port every test request arrives on.
        port: 8000,
    };
    router.select(&config.routes, &view).map(|m| {
        (
            config.routes[m.route].name.as_deref().unwrap(),
            m.matched_len,
        )
    })
}

fn name<'c>(config: &'c Config, req: &Req<'_>) -> Option<&'c str> {
    select(config, req).map(|(n, _)| n)
}

#[test]
fn prefix_is_a_plain_string_prefix() {
    let c = config("  - { name: api, service: s, paths: [/api] }\n");
    assert_eq!(select(&c, &get("/api")), Some(("api", 4)));
    assert_eq!(select(&c, &get("/apiv2/x")), Some(("api", 4)));
    assert_eq!(name(&c, &get("/ap")), None);
    assert_eq!(name(&c, &get("/")), None);
}

#[test]
fn longest_prefix_wins_and_regex_beats_prefix() {
    let c = config(
        "  - { name: short, service: s, paths: [/a] }\n  - { name: long, service: s, paths: [/a/b] }\n  - { name: re, service: s, paths: [\"~/a/b/\\\\d+$\"] }\n",
    );
    assert_eq!(name(&c, &get("/a/x")), Some("short"));
    assert_eq!(name(&c, &get("/a/b/x")), Some("long"));
    assert_eq!(select(&c, &get("/a/b/42")), Some(("re", 7)));
}

#[test]
fn regex_is_anchored_and_regex_priority_orders_regexes() {
    let c = config(
        "  - { name: low, service: s, paths: [\"~/items/\\\\w+\"], regex_priority: 1 }\n  - { name: high, service: s, paths: [\"~/items/[0-9]+\"], regex_priority: 5 }\n",
    );
    assert_eq!(name(&c, &get("/items/12")), Some("high"));
    assert_eq!(name(&c, &get("/items/ab")), Some("low"));
    assert_eq!(name(&c, &get("/x/items/12")), None);
}

#[test]
fn more_match_fields_win_then_plain_hosts_then_headers() {
    let c = config(
        "  - { name: path, service: s, paths: [/] }\n  - { name: host-path, service: s, paths: [/], hosts: [\"*.example.com\"] }\n  - { name: plain-host-path, service: s, paths: [/], hosts: [api.example.com] }\n  - { name: method-host-path, service: s, paths: [/], hosts: [\"*.example.com\"], methods: [POST] }\n  - { name: header-path, service: s, paths: [/], headers: { x-v: [\"2\"] } }\n",
    );
    let mut r = get("/x");
    assert_eq!(name(&c, &r), Some("path"));
    r.host = Some("a.example.com");
    assert_eq!(name(&c, &r), Some("host-path"));
    r.host = Some("api.example.com:8000");
    assert_eq!(name(&c, &r), Some("plain-host-path"));
    r.method = "POST";
    r.host = Some("a.example.com");
    assert_eq!(name(&c, &r), Some("method-host-path"));
    let mut r = get("/x");
    r.headers = vec![("X-V", "2")];
    assert_eq!(name(&c, &r), Some("header-path"));
}

#[test]
fn hosts_wildcards_and_ports() {
    let c = config(
        "  - { name: suffix, service: s, hosts: [\"*.example.com\"] }\n  - { name: prefix, service: s, hosts: [\"example.*\"] }\n  - { name: port, service: s, hosts: [\"other.test:8080\"] }\n  - { name: local-port, service: s, hosts: [\"here.test:8000\", \"*.here.test:8000\"] }\n  - { name: rooted, service: s, hosts: [\"Rooted.Test.\", \"*.rooted.example.:8000\"] }\n",
    );
    let with_host = |h: &'static str| Req {
        method: "GET",
        path: "/",
        host: Some(h),
        headers: vec![],
        https: false,
    };
    assert_eq!(name(&c, &with_host("a.example.com")), Some("suffix"));
    assert_eq!(name(&c, &with_host("A.B.EXAMPLE.COM:81")), Some("suffix"));
    // `example.*` covers example.com; `*.example.com` does not.
    assert_eq!(name(&c, &with_host("example.com")), Some("prefix"));
    assert_eq!(name(&c, &with_host("example")), None);
    assert_eq!(name(&c, &with_host("example.org")), Some("prefix"));
    assert_eq!(name(&c, &with_host("other.test:8080")), Some("port"));
    assert_eq!(name(&c, &with_host("other.test")), None);
    // The port is a number: leading zeros name the same one.
    assert_eq!(name(&c, &with_host("other.test:08080")), Some("port"));
    assert_eq!(name(&c, &with_host("other.test:8080x")), None);
    // A `Host` without a port is at the port the request arrived on (8000 here).
    assert_eq!(name(&c, &with_host("here.test")), Some("local-port"));
    assert_eq!(name(&c, &with_host("a.here.test")), Some("local-port"));
    assert_eq!(name(&c, &with_host("a.here.test:8000")), Some("local-port"));
    assert_eq!(name(&c, &with_host("a.here.test:8080")), None);
    assert_eq!(name(&c, &with_host("here.test:80")), None);
    // A route host's root dot goes, as the request's does before routing.
    assert_eq!(name(&c, &with_host("rooted.test")), Some("rooted"));
    assert_eq!(
        name(&c, &with_host("a.rooted.example:8000")),
        Some("rooted")
    );
    // A route without paths consumed the path's leading `/`, as in Kong.
    assert_eq!(select(&c, &with_host("rooted.test")), Some(("rooted", 1)));
    assert_eq!(
        name(
            &c,
            &Req {
                method: "GET",
                path: "/",
                host: None,
                headers: vec![],
                https: false,
            }
        ),
        None
    );
}

#[test]
fn header_values_exact_or_regex() {
    let c =
        config("  - { name: h, service: s, headers: { x-version: [v1, \"~*^v2\\\\.\\\\d$\"] } }\n");
    let with = |v: &'static str| Req {
        method: "GET",
        path: "/",
        host: None,
        headers: vec![("x-version", v)],
        https: false,
    };
    assert_eq!(name(&c, &with("V1")), Some("h"));
    assert_eq!(name(&c, &with("v2.3")), Some("h"));
    assert_eq!(name(&c, &with("v3")), None);
}

#[test]
fn methods_and_disabled_services() {
    let c = config("  - { name: post, service: s, methods: [POST], paths: [/p] }\n");
    assert_eq!(name(&c, &get("/p")), None);
    assert_eq!(
        name(
            &c,
            &Req {
                method: "POST",
                path: "/p",
                host: None,
                headers: vec![],
                https: false,
            }
        ),
        Some("post")
    );
    // The disabled service's catch-all route is never selected.
    assert_eq!(name(&c, &get("/anything")), None);
}

#[test]
fn ties_keep_file_order() {
    let c = config("  - { name: first, service: s, paths: [/same] }\n  - { name: second, service: s, paths: [/same] }\n");
    assert_eq!(name(&c, &get("/same")), Some("first"));
}

/// An http-only route is no candidate for an HTTPS request, which goes to the next
/// route that matches; an https-only route matches plain HTTP (to answer its 426).
#[test]
fn an_http_only_route_is_not_matched_over_https() {
    let c = config(
        "  - { name: plain, service: s, paths: [/plain], protocols: [http] }\n  - { name: secure, service: s, paths: [/secure], protocols: [https] }\n  - { name: all, service: s, paths: [/] }\n",
    );
    let over_tls = |path| Req {
        https: true,
        ..get(path)
    };
    assert_eq!(name(&c, &get("/plain/x")), Some("plain"));
    assert_eq!(name(&c, &over_tls("/plain/x")), Some("all"));
    assert_eq!(name(&c, &get("/secure/x")), Some("secure"));
    assert_eq!(name(&c, &over_tls("/secure/x")), Some("secure"));
}
