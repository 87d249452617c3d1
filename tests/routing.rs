//! Routing (SPEC §2 routes: Kong 3 `traditional_compatible` matching and priority, upstream
//! path join, preserve_host) and the generated 404.
//!
//! Every route has its own service whose URL path is `/svc-NAME`, so the first segment of the
//! target the origin received names the route that matched. In priority cases the expected
//! winner is listed last in the file, so that "first in file wins" cannot pass them.

mod support;

use support::*;

/// Sends a raw request on a fresh connection; returns (status, first path segment the origin
/// saw, or "" when the origin saw nothing new).
fn route_of(gw: &Gateway, origin: &Origin, req: &[u8]) -> (u16, String) {
    let before = origin.requests().len();
    let mut c = gw.client();
    let r = c.roundtrip(req);
    if r.status != 200 {
        return (r.status, String::new());
    }
    let reqs = origin.wait_requests(before + 1, RESPONSE_DEADLINE);
    let target = reqs[before].target.clone();
    let seg = target
        .trim_start_matches('/')
        .split(['/', '?'])
        .next()
        .unwrap_or("")
        .to_string();
    (r.status, seg)
}

fn get_host(path: &str, host: &str) -> Vec<u8> {
    get_req(path, host)
}

fn get_hdrs(path: &str, host: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").into_bytes()
}

/// Checks a table of (request, expected route segment or None for 404) and reports every
/// mismatch at once.
fn check_table(gw: &Gateway, origin: &Origin, cases: &[(Vec<u8>, Option<&str>)]) {
    let mut failures = Vec::new();
    for (req, want) in cases {
        let (status, seg) = route_of(gw, origin, req);
        let ok = match want {
            Some(w) => status == 200 && seg == *w,
            None => status == 404,
        };
        if !ok {
            failures.push(format!(
                "{:?}: want {}, got status {status} route {seg:?}",
                String::from_utf8_lossy(req)
                    .lines()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" | "),
                want.map(|w| format!("route {w}")).unwrap_or("404".into())
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "routing mismatches:\n{}\nstderr:\n{}",
        failures.join("\n"),
        gw.stderr_text()
    );
}

fn svc(name: &str, origin: &Origin, route_body: &str) -> String {
    format!(
        "  - name: svc-{name}\n    url: {}/svc-{name}\n    routes:\n      - name: r-{name}\n        strip_path: false\n{route_body}",
        origin.url()
    )
}

fn config(services: &[String]) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n{}\n",
        services.join("\n")
    )
}

#[test]
fn prefix_paths_are_plain_string_prefixes() {
    let o = Origin::start();
    let gw = Gateway::start(&config(&[svc("p", &o, "        paths: [\"/api\"]\n")]));
    check_table(
        &gw,
        &o,
        &[
            (get_host("/api", "a"), Some("svc-p")),
            (get_host("/api/x", "a"), Some("svc-p")),
            (get_host("/apiv2", "a"), Some("svc-p")),
            (get_host("/api?x=1", "a"), Some("svc-p")),
            (get_host("/ap", "a"), None),
            (get_host("/x/api", "a"), None),
            (get_host("/API", "a"), None),
        ],
    );
    // strip_path false: the whole request path follows the service path
    let reqs = o.requests();
    let t: Vec<&str> = reqs.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(
        t,
        vec![
            "/svc-p/api",
            "/svc-p/api/x",
            "/svc-p/apiv2",
            "/svc-p/api?x=1"
        ]
    );
}

#[test]
fn regex_paths_are_anchored_at_the_start() {
    let o = Origin::start();
    let gw = Gateway::start(&config(&[svc(
        "re",
        &o,
        "        paths: [\"~/items/\\\\d+\"]\n",
    )]));
    check_table(
        &gw,
        &o,
        &[
            (get_host("/items/42", "a"), Some("svc-re")),
            (get_host("/items/42/extra", "a"), Some("svc-re")),
            (get_host("/x/items/42", "a"), None),
            (get_host("/items/abc", "a"), None),
        ],
    );
}

#[test]
fn format_2_1_files_keep_their_bare_regex_paths() {
    // A Kong 2.x export: regex paths without `~`, which Kong's loader marks as regexes.
    let o = Origin::start();
    let services = [
        svc("re", &o, "        paths: [\"/api/v\\\\d+/users$\"]\n"),
        svc("plain", &o, "        paths: [\"/files/v1.2\"]\n"),
    ];
    let file = config(&services).replace("\"3.0\"", "\"2.1\"");
    let gw = Gateway::start(&file);
    check_table(
        &gw,
        &o,
        &[
            (get_host("/api/v2/users", "a"), Some("svc-re")),
            (get_host("/api/v10/users", "a"), Some("svc-re")),
            (get_host("/api/v2/users/x", "a"), None),
            (get_host("/api/vx/users", "a"), None),
            // `.` in a plain path is no regex metacharacter: `/files/v1x2` is not it.
            (get_host("/files/v1.2/a", "a"), Some("svc-plain")),
            (get_host("/files/v1x2", "a"), None),
        ],
    );
}

#[test]
fn host_wildcards_leading_and_trailing() {
    let o = Origin::start();
    let gw = Gateway::start(&config(&[
        svc("lead", &o, "        hosts: [\"*.example.com\"]\n"),
        svc("trail", &o, "        hosts: [\"example.*\"]\n"),
        svc("plain", &o, "        hosts: [\"plain.test\"]\n"),
        svc("ported", &o, "        hosts: [\"*.ported.test:8080\"]\n"),
    ]));
    check_table(
        &gw,
        &o,
        &[
            (get_host("/", "a.example.com"), Some("svc-lead")),
            (get_host("/x", "deep.a.example.com"), Some("svc-lead")),
            (get_host("/", "a.example.com:8000"), Some("svc-lead")),
            (get_host("/", "example.org"), Some("svc-trail")),
            (get_host("/", "example.com"), Some("svc-trail")),
            (get_host("/", "plain.test"), Some("svc-plain")),
            (get_host("/", "plain.test:1234"), Some("svc-plain")),
            (get_host("/", "PLAIN.Test"), Some("svc-plain")),
            (get_host("/", "A.Example.COM"), Some("svc-lead")),
            (get_host("/", "www.example.org"), None),
            (get_host("/", "other.test"), None),
            (get_host("/", "xplain.test"), None),
            // A leading wildcard with a port matches that port only.
            (get_host("/", "a.ported.test:8080"), Some("svc-ported")),
            (get_host("/", "B.Ported.Test:8080"), Some("svc-ported")),
            (get_host("/", "a.ported.test:8081"), None),
            (get_host("/", "a.ported.test"), None),
            (get_host("/", "ported.test:8080"), None),
        ],
    );
}

/// As Kong's router: a route host naming a port matches a `Host` without one when the
/// request arrived on that port, and the `Host` port is read as a number.
#[test]
fn a_host_port_is_the_port_the_request_arrived_on_when_host_names_none() {
    let o = Origin::start();
    let gw = Gateway::start(&config(&[svc(
        "plain",
        &o,
        "        hosts: [\"plain.test\"]\n",
    )]));
    let port = gw.proxy_addr().port();
    gw.reload(&config(&[
        svc(
            "here",
            &o,
            &format!("        hosts: [\"here.test:{port}\", \"*.here.test:{port}\"]\n"),
        ),
        svc("there", &o, "        hosts: [\"there.test:1\"]\n"),
    ]));
    check_table(
        &gw,
        &o,
        &[
            (get_host("/", "here.test"), Some("svc-here")),
            (get_host("/", "a.here.test"), Some("svc-here")),
            (
                get_host("/", &format!("here.test:{port}")),
                Some("svc-here"),
            ),
            (
                get_host("/", &format!("here.test:0{port}")),
                Some("svc-here"),
            ),
            (get_host("/", "here.test:1"), None),
            (get_host("/", "there.test"), None),
            (get_host("/", "there.test:1"), Some("svc-there")),
        ],
    );
}

/// As Kong's router: a regex reads the path with escapes decoded (all but those of
/// reserved characters), and a prefix may be written decoded too (`/a b`).
#[test]
fn regex_paths_match_the_decoded_path_and_prefixes_take_kongs_form() {
    let o = Origin::start();
    let gw = Gateway::start(&config(&[
        svc("space", &o, "        paths: [\"~/r/a\\\\sb$\"]\n"),
        svc("cafe", &o, "        paths: [\"~/caf\u{e9}$\"]\n"),
        svc("bar", &o, "        paths: [\"~/v/a%7Cb$\"]\n"),
        svc("spaced", &o, "        paths: [\"/a b\"]\n"),
    ]));
    check_table(
        &gw,
        &o,
        &[
            (get_host("/r/a%20b", "x"), Some("svc-space")),
            (get_host("/r/a%2fb", "x"), None),
            (get_host("/caf%C3%A9", "x"), Some("svc-cafe")),
            (get_host("/caf%c3%a9", "x"), Some("svc-cafe")),
            (get_host("/cafe", "x"), None),
            (get_host("/v/a%7Cb", "x"), Some("svc-bar")),
            (get_host("/v/ab", "x"), None),
            (get_host("/a%20b/x", "x"), Some("svc-spaced")),
        ],
    );
}

#[test]
fn methods_select_routes() {
    let o = Origin::start();
    let gw = Gateway::start(&config(&[
        svc(
            "get",
            &o,
            "        paths: [\"/m\"]\n        methods: [GET]\n",
        ),
        svc(
            "post",
            &o,
            "        paths: [\"/m\"]\n        methods: [POST, PUT]\n",
        ),
    ]));
    check_table(
        &gw,
        &o,
        &[
            (get_host("/m", "a"), Some("svc-get")),
            (req_with_body("POST", "/m", "a", b"x"), Some("svc-post")),
            (req_with_body("PUT", "/m/1", "a", b""), Some("svc-post")),
            (req_with_body("DELETE", "/m", "a", b""), None),
        ],
    );
    // Extension methods (upper case, `-`, `_`) are served; none matches these routes.
    check_table(
        &gw,
        &o,
        &[
            (req_with_body("M-SEARCH", "/m", "a", b""), None),
            (req_with_body("VERSION_CONTROL", "/m", "a", b""), None),
        ],
    );
}

#[test]
fn headers_select_routes() {
    let o = Origin::start();
    let gw = Gateway::start(&config(&[
        svc("plain", &o, "        paths: [\"/h\"]\n"),
        svc(
            "v2",
            &o,
            "        paths: [\"/h\"]\n        headers:\n          x-version: [\"v2\", \"v3\"]\n",
        ),
        // As Kong's router: `_` in a configured name stands for `-`.
        svc(
            "under",
            &o,
            "        paths: [\"/h\"]\n        headers:\n          x_tier: [\"gold\"]\n",
        ),
    ]));
    check_table(
        &gw,
        &o,
        &[
            (get_hdrs("/h", "a", "X-Version: v2\r\n"), Some("svc-v2")),
            (get_hdrs("/h", "a", "x-version: v3\r\n"), Some("svc-v2")),
            (get_hdrs("/h", "a", "X-Version: v9\r\n"), Some("svc-plain")),
            (get_host("/h", "a"), Some("svc-plain")),
            (get_hdrs("/h", "a", "X-Tier: gold\r\n"), Some("svc-under")),
            // A client's own underscored header is not read (nginx drops it).
            (get_hdrs("/h", "a", "x_tier: gold\r\n"), Some("svc-plain")),
        ],
    );
}

#[test]
fn priority_more_match_fields_win_over_longer_prefix() {
    let o = Origin::start();
    let gw = Gateway::start(&config(&[
        svc("long", &o, "        paths: [\"/p/longer/path\"]\n"),
        svc("deep", &o, "        paths: [\"/q/deeper\"]\n"),
        svc(
            "hostpath",
            &o,
            "        hosts: [\"h.test\"]\n        paths: [\"/p\"]\n",
        ),
        svc(
            "methpath",
            &o,
            "        methods: [GET]\n        paths: [\"/q\"]\n",
        ),
    ]));
    check_table(
        &gw,
        &o,
        &[
            (get_host("/p/longer/path", "h.test"), Some("svc-hostpath")),
            (get_host("/p/longer/path", "other.test"), Some("svc-long")),
            (get_host("/q/deeper", "a"), Some("svc-methpath")),
            (
                req_with_body("POST", "/q/deeper", "a", b""),
                Some("svc-deep"),
            ),
        ],
    );
}

#[test]
fn priority_plain_host_beats_wildcard_host() {
    let o = Origin::start();
    let gw = Gateway::start(&config(&[
        svc(
            "wild",
            &o,
            "        hosts: [\"*.ex.test\"]\n        paths: [\"/\"]\n",
        ),
        svc(
            "plain",
            &o,
            "        hosts: [\"api.ex.test\"]\n        paths: [\"/\"]\n",
        ),
    ]));
    check_table(
        &gw,
        &o,
        &[
            (get_host("/x", "api.ex.test"), Some("svc-plain")),
            (get_host("/x", "www.ex.test"), Some("svc-wild")),
        ],
    );
}

#[test]
fn priority_more_headers_win() {
    let o = Origin::start();
    let gw = Gateway::start(&config(&[
        svc("one", &o, "        paths: [\"/h\"]\n        headers:\n          x-a: [\"1\"]\n"),
        svc("two", &o, "        paths: [\"/h\"]\n        headers:\n          x-a: [\"1\"]\n          x-b: [\"2\"]\n"),
    ]));
    check_table(
        &gw,
        &o,
        &[
            (get_hdrs("/h", "a", "X-A: 1\r\nX-B: 2\r\n"), Some("svc-two")),
            (get_hdrs("/h", "a", "X-A: 1\r\n"), Some("svc-one")),
            (get_hdrs("/h", "a", "X-B: 2\r\n"), None),
        ],
    );
}

#[test]
fn priority_regex_beats_prefix() {
    let o = Origin::start();
    let gw = Gateway::start(&config(&[
        svc("prefix", &o, "        paths: [\"/r/abc\"]\n"),
        svc("regex", &o, "        paths: [\"~/r/[a-z]+$\"]\n"),
    ]));
    check_table(
        &gw,
        &o,
        &[
            (get_host("/r/abc", "a"), Some("svc-regex")),
            (get_host("/r/abc/def", "a"), Some("svc-prefix")),
        ],
    );
}

#[test]
fn priority_regex_priority_orders_regex_routes() {
    let o = Origin::start();
    let gw = Gateway::start(&config(&[
        svc(
            "qlow",
            &o,
            "        paths: [\"~/q/\\\\d+\"]\n        regex_priority: 0\n",
        ),
        svc(
            "qhigh",
            &o,
            "        paths: [\"~/q/.+\"]\n        regex_priority: 10\n",
        ),
        svc(
            "zhigh",
            &o,
            "        paths: [\"~/z/\\\\d+\"]\n        regex_priority: 5\n",
        ),
        svc(
            "zlow",
            &o,
            "        paths: [\"~/z/.+\"]\n        regex_priority: 1\n",
        ),
    ]));
    check_table(
        &gw,
        &o,
        &[
            (get_host("/q/1", "a"), Some("svc-qhigh")),
            (get_host("/z/1", "a"), Some("svc-zhigh")),
            (get_host("/z/abc", "a"), Some("svc-zlow")),
        ],
    );
}

#[test]
fn priority_longest_prefix_wins() {
    let o = Origin::start();
    let gw = Gateway::start(&config(&[
        svc("lshort", &o, "        paths: [\"/l\"]\n"),
        svc("llong", &o, "        paths: [\"/l/longer\"]\n"),
        svc("mlong", &o, "        paths: [\"/m/longer\"]\n"),
        svc("mshort", &o, "        paths: [\"/m\"]\n"),
    ]));
    check_table(
        &gw,
        &o,
        &[
            (get_host("/l/longer/x", "a"), Some("svc-llong")),
            (get_host("/l/other", "a"), Some("svc-lshort")),
            (get_host("/m/longer/x", "a"), Some("svc-mlong")),
            (get_host("/m/other", "a"), Some("svc-mshort")),
        ],
    );
}

#[test]
fn top_level_routes_refer_to_services_by_name() {
    let o = Origin::start();
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc-top\n    url: {}/svc-top\nroutes:\n  - name: r-top\n    service: svc-top\n    paths: [\"/top\"]\n    strip_path: false\n",
        o.url()
    );
    let gw = Gateway::start(&cfg);
    check_table(
        &gw,
        &o,
        &[
            (get_host("/top/1", "a"), Some("svc-top")),
            (get_host("/other", "a"), None),
        ],
    );
}

/// (service path or "" for none, route path, strip_path, request target, expected upstream target)
const JOIN_CASES: &[(&str, &str, bool, &str, &str)] = &[
    ("/v1", "/api", true, "/api/x", "/v1/x"),
    ("/v1/", "/api", true, "/api/x", "/v1/x"),
    ("/v1/", "/api", true, "/api/", "/v1/"),
    ("/v1/", "/api", true, "/api", "/v1"),
    ("/v1/", "/api", true, "/api/x/", "/v1/x/"),
    ("/v1", "/api", true, "/api", "/v1"),
    ("/v1", "/api", true, "/api/", "/v1/"),
    ("/v1", "/api/", true, "/api/", "/v1/"),
    ("/v1", "/api", true, "/apiv2", "/v1/v2"),
    ("", "/api", true, "/api/x", "/x"),
    ("", "/api", true, "/api", "/"),
    ("/v1", "/api", false, "/api/x", "/v1/api/x"),
    ("/v1/", "/api", false, "/api/x", "/v1/api/x"),
    ("", "/api", false, "/api/x", "/api/x"),
    ("/v1", "/api", true, "/api/x?a=1&b=%20c", "/v1/x?a=1&b=%20c"),
    ("", "/api", false, "/api/x?q=1", "/api/x?q=1"),
    ("/v1", "/api", true, "/api?only=query", "/v1?only=query"),
    // What the prefix leaves of a segment never climbs out of the service path (Kong
    // drops a leading dot segment there too).
    (
        "/public/v1",
        "/api",
        true,
        "/api../admin",
        "/public/v1/admin",
    ),
    (
        "/public/v1",
        "/api",
        true,
        "/api%2e%2e/admin",
        "/public/v1/admin",
    ),
    (
        "/public/v1",
        "/api",
        true,
        "/api./admin",
        "/public/v1/admin",
    ),
    ("/public/v1", "/api", true, "/api..", "/public/v1"),
    ("", "/r", true, "/r..", "/"),
    (
        "/public/v1",
        "~/re",
        true,
        "/re../admin",
        "/public/v1/admin",
    ),
    // A regex that matched the decoded path strips what it matched of the path as sent.
    ("/s", "~/sp\\\\s", true, "/sp%20x", "/s/x"),
];

#[test]
fn upstream_path_join_strip_path_and_query() {
    let o = Origin::start();
    let mut services = Vec::new();
    for (i, (spath, rpath, strip, _, _)) in JOIN_CASES.iter().enumerate() {
        services.push(format!(
            "  - name: c{i}\n    url: {}{spath}\n    routes:\n      - name: rc{i}\n        hosts: [\"c{i}.test\"]\n        paths: [\"{rpath}\"]\n        strip_path: {strip}\n",
            o.url()
        ));
    }
    let gw = Gateway::start(&format!(
        "_format_version: \"3.0\"\nservices:\n{}",
        services.join("")
    ));
    let mut failures = Vec::new();
    for (i, (spath, rpath, strip, req, want)) in JOIN_CASES.iter().enumerate() {
        let before = o.requests().len();
        let r = gw.client().roundtrip(&get_req(req, &format!("c{i}.test")));
        if r.status != 200 {
            failures.push(format!(
                "service {spath:?} route {rpath:?} strip={strip} GET {req}: status {} {:?}",
                r.status,
                r.body_str()
            ));
            continue;
        }
        let got = o.wait_requests(before + 1, RESPONSE_DEADLINE)[before]
            .target
            .clone();
        if got != *want {
            failures.push(format!("service {spath:?} route {rpath:?} strip={strip} GET {req}: upstream got {got:?}, want {want:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "path join mismatches:\n{}",
        failures.join("\n")
    );
}

#[test]
fn preserve_host_false_sends_service_host_with_port() {
    let o = Origin::start();
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: {}\n    routes:\n      - name: keep\n        hosts: [\"keep.test\"]\n        preserve_host: true\n      - name: replace\n        hosts: [\"replace.test\"]\n        preserve_host: false\n      - name: default\n        hosts: [\"default.test\"]\n",
        o.url()
    );
    let gw = Gateway::start(&cfg);
    let service_host = format!("127.0.0.1:{}", o.port());
    let mut failures = Vec::new();
    for (host, want) in [
        ("keep.test", "keep.test".to_string()),
        ("keep.test:8080", "keep.test:8080".to_string()),
        ("replace.test", service_host.clone()),
        ("default.test", service_host.clone()),
    ] {
        let before = o.requests().len();
        let r = gw.client().roundtrip(&get_req("/h", host));
        if r.status != 200 {
            failures.push(format!("Host {host}: status {}", r.status));
            continue;
        }
        let rec = o.wait_requests(before + 1, RESPONSE_DEADLINE)[before].clone();
        let hosts = rec.header_all("host");
        if hosts != vec![want.as_str()] {
            failures.push(format!(
                "Host {host}: upstream Host headers {hosts:?}, want [{want:?}]"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn no_route_gives_kong_404_json() {
    let o = Origin::start();
    let gw = Gateway::start(&config(&[svc("only", &o, "        paths: [\"/only\"]\n")]));
    for req in [
        get_req("/nothing", "a"),
        req_with_body("POST", "/else", "a", b"abc"),
    ] {
        let mut c = gw.client();
        let r = c.roundtrip(&req);
        assert_eq!(r.status, 404, "{r:?}");
        assert_eq!(
            r.header("content-type"),
            Some("application/json; charset=utf-8"),
            "{r:?}"
        );
        let j = r.json();
        assert_eq!(j["message"], "no Route matched with those values", "{r:?}");
        // the connection stays usable after a generated 404 (unless it announced a close)
        let closing = r
            .header("connection")
            .map(|v| v.eq_ignore_ascii_case("close"))
            .unwrap_or(false);
        if closing {
            c = gw.client();
        }
        let r2 = c.roundtrip(&get_req("/only/x", "a"));
        assert_eq!(r2.status, 200, "{r2:?}");
    }
    let reqs = o.requests();
    assert!(
        reqs.iter().all(|r| r.target.starts_with("/svc-only/only")),
        "404s must not reach the upstream: {reqs:?}"
    );
}
