//! The `rate-limiting` plugin, black box (SPEC §2 plugins / consumer_groups / precedence,
//! §4 `rate-limiting`; Kong's behaviour: research/kong-semantics.md §1.3; the tiers of the
//! seed scenario: research/seed-scenarios.md).
//!
//! The algorithm is a token bucket per key (capacity = the limit, refilled evenly over the
//! period), so every test uses `minute` or `hour` limits small enough that the requests of
//! one test finish long before a single token comes back (`minute: 5` refills one token
//! every 12 s, `hour: 200` one every 18 s). Nothing here asserts timing.
//!
//! Exactness: with one worker the limit is exact; with N workers SPEC promises at most
//! `limit` and at least `limit - (N - 1)` admissions when demand exceeds the limit, which is
//! what the multi-worker tests assert.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// Deadline for one proxied response (generous: the machine may be loaded).
const DEADLINE: Duration = Duration::from_secs(5);
const CLI_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_MESSAGE: &str = "API rate limit exceeded";

// ---------------------------------------------------------------------------------------
// helpers

/// Starts the gateway; a refusal of the config is reported as what it is.
fn start_with(cfg: &str, opts: GatewayOpts) -> Gateway {
    Gateway::try_start_with(cfg, opts).unwrap_or_else(|e| {
        panic!(
            "the gateway must start with this rate-limiting config (SPEC §4): {e}\nconfig:\n{cfg}"
        )
    })
}

fn start(cfg: &str) -> Gateway {
    start_with(cfg, GatewayOpts::default())
}

/// One keep-alive client connection to the proxy; reconnects after the server closed it.
struct Conn {
    addr: SocketAddr,
    client: Option<Client>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn { addr, client: None }
    }

    /// Opens the connection now (instead of with the first request).
    fn connect(&mut self) -> Result<(), String> {
        if self.client.is_none() {
            let c = Client::try_connect(self.addr)
                .map_err(|e| format!("connect {}: {e}", self.addr))?;
            self.client = Some(c);
        }
        Ok(())
    }

    fn try_get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
        self.connect()?;
        let c = self.client.as_mut().expect("connected above");
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        if let Err(e) = c.send(req.as_bytes()) {
            self.client = None;
            return Err(format!("send GET {path}: {e}"));
        }
        match c.read_response_within(DEADLINE) {
            Ok(r) => {
                let close = r
                    .header("connection")
                    .map(|v| v.to_ascii_lowercase().contains("close"))
                    .unwrap_or(false);
                if close {
                    self.client = None;
                }
                Ok(r)
            }
            Err(e) => {
                self.client = None;
                Err(format!(
                    "no response to GET {path} within {DEADLINE:?}: {e:?}"
                ))
            }
        }
    }

    /// A GET that must be answered; `what` names it in the failure message.
    fn get(&mut self, path: &str, headers: &[(&str, &str)], what: &str) -> Response {
        self.try_get(path, headers)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}

/// The header as an integer; None when missing or not a whole number.
fn int_header(r: &Response, name: &str) -> Option<i64> {
    r.header(name).and_then(|v| v.trim().parse::<i64>().ok())
}

/// Asserts the header is present exactly once with this value.
fn assert_header(r: &Response, name: &str, want: &str, what: &str) {
    let all = r.header_all(name);
    assert_eq!(
        all,
        vec![want],
        "{what}: header {name} (exactly once, {want:?}); response {r:?}"
    );
}

/// Asserts the header is an integer in `lo..=hi`; returns it.
fn assert_int_in(r: &Response, name: &str, lo: i64, hi: i64, what: &str) -> i64 {
    let v = int_header(r, name).unwrap_or_else(|| {
        panic!("{what}: header {name} missing or not an integer; response {r:?}")
    });
    assert!(
        (lo..=hi).contains(&v),
        "{what}: {name} = {v}, expected {lo}..={hi}; response {r:?}"
    );
    v
}

/// Names of the rate-limit headers a response carries (`X-RateLimit-*`, `RateLimit-*`).
fn rl_headers(r: &Response) -> Vec<String> {
    r.headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .filter(|k| k.starts_with("x-ratelimit-") || k.starts_with("ratelimit-"))
        .collect()
}

/// Asserts a 200 from the test origin (its own headers and body came through).
fn assert_proxied(r: &Response, what: &str) {
    assert_eq!(r.status, 200, "{what}: status; response {r:?}");
    assert!(
        r.header("x-origin-conn").is_some(),
        "{what}: the upstream's own headers must be kept; response {r:?}"
    );
    assert_eq!(r.body_str(), "ok", "{what}: upstream body; response {r:?}");
}

/// Asserts a rejection: status, JSON body `{"message": message}`, a JSON content type and
/// `Retry-After` an integer ≥ 1. Returns Retry-After.
fn assert_limited(r: &Response, status: u16, message: &str, what: &str) -> i64 {
    assert_eq!(r.status, status, "{what}: status; response {r:?}");
    let body: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}); response {r:?}"));
    assert_eq!(
        body,
        json!({ "message": message }),
        "{what}: body; response {r:?}"
    );
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "{what}: Content-Type {ct:?}; response {r:?}"
    );
    assert_eq!(
        r.header_all("retry-after").len(),
        1,
        "{what}: exactly one Retry-After; response {r:?}"
    );
    assert_int_in(r, "retry-after", 1, i64::MAX, what)
}

/// Sends `n` GETs on `conn` and returns the statuses.
fn statuses(
    conn: &mut Conn,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
    what: &str,
) -> Vec<u16> {
    (0..n)
        .map(|i| {
            conn.get(path, headers, &format!("{what} #{}", i + 1))
                .status
        })
        .collect()
}

/// A config with one service `svc` (route `/`) at `url` and one rate-limiting plugin, scoped
/// by `scope_line` (e.g. `service: svc`, or empty for global), with `config` in flow style.
fn rl_config(url: &str, scope_line: &str, config: &str) -> String {
    let scope = if scope_line.is_empty() {
        String::new()
    } else {
        format!("    {scope_line}\n")
    };
    one_service_config(
        url,
        &format!("plugins:\n  - name: rate-limiting\n{scope}    config: {config}\n"),
    )
}

fn hs256(iss: &str, secret: &str) -> String {
    let claims = json!({"iss": iss, "sub": "user123", "exp": unix_now() + 3600});
    format!("Bearer {}", py_hs256(&claims.to_string(), secret))
}

// ---------------------------------------------------------------------------------------
// 1. config validation (`ringway check`)

fn check(yaml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("kong.yaml");
    std::fs::write(&p, yaml).expect("write config");
    let path = p.to_string_lossy().to_string();
    let out = run_cli(&["check", "-c", &path], &[], CLI_TIMEOUT);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_no_panic(&err);
    (out.status.code(), err)
}

/// True when some stderr line starts with `prefix` and names one of `words`.
fn has_line(stderr: &str, prefix: &str, words: &[&str]) -> bool {
    nonempty_lines(stderr).iter().any(|l| {
        let l = l.trim_start();
        l.starts_with(prefix) && words.iter().any(|w| l.contains(w))
    })
}

const PERIODS: &[&str] = &["second", "minute", "hour", "day", "month", "year"];

#[test]
fn check_rejects_invalid_rate_limiting_configs_with_their_path() {
    let up = "http://127.0.0.1:9";
    let nested_service = |config: &str| {
        format!(
            "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: {up}\n    routes:\n      - name: all\n        paths: [\"/\"]\n    plugins:\n      - name: rate-limiting\n        config: {config}\n"
        )
    };
    let in_group = |config: &str| {
        format!(
            "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: {up}\n    routes:\n      - name: all\n        paths: [\"/\"]\nconsumer_groups:\n  - name: free\n    plugins:\n      - name: rate-limiting\n        config: {config}\n"
        )
    };
    // (case, file, path prefix of the problem line, words the line must name one of)
    let cases: Vec<(&str, String, &str, &[&str])> = vec![
        (
            "no period given",
            rl_config(up, "", "{limit_by: ip}"),
            "plugins[0]",
            PERIODS,
        ),
        (
            "no config at all",
            one_service_config(up, "plugins:\n  - name: rate-limiting\n"),
            "plugins[0]",
            PERIODS,
        ),
        (
            "negative limit",
            rl_config(up, "", "{minute: -5}"),
            "plugins[0].config",
            &["minute"],
        ),
        (
            "zero limit",
            rl_config(up, "", "{hour: 0}"),
            "plugins[0].config",
            &["hour"],
        ),
        (
            "negative limit, service-nested",
            nested_service("{second: -1}"),
            "services[0].plugins[0].config",
            &["second"],
        ),
        (
            "limit_by header without header_name",
            rl_config(up, "", "{minute: 5, limit_by: header}"),
            "plugins[0].config",
            &["header_name"],
        ),
        (
            "limit_by header without header_name, in a consumer group",
            in_group("{minute: 5, limit_by: header}"),
            "consumer_groups[0].plugins[0].config",
            &["header_name"],
        ),
        (
            "limit_by path without path",
            rl_config(up, "", "{minute: 5, limit_by: path}"),
            "plugins[0].config",
            &["path"],
        ),
        (
            "unknown limit_by",
            rl_config(up, "", "{minute: 5, limit_by: planet}"),
            "plugins[0].config",
            &["limit_by", "planet"],
        ),
        (
            "unknown option",
            rl_config(up, "", "{minute: 5, bogus_option: 1}"),
            "plugins[0].config",
            &["bogus_option"],
        ),
        (
            "policy cluster (not allowed without a database, as in Kong's DB-less mode)",
            rl_config(up, "", "{minute: 5, policy: cluster}"),
            "plugins[0].config",
            &["policy", "cluster"],
        ),
        (
            "hour lower than minute",
            rl_config(up, "", "{minute: 100, hour: 10}"),
            "plugins[0].config",
            &["hour"],
        ),
        (
            "year lower than second",
            rl_config(up, "", "{second: 50, year: 10}"),
            "plugins[0].config",
            &["year", "second"],
        ),
        (
            "limit not a number",
            rl_config(up, "", "{minute: lots}"),
            "plugins[0].config",
            &["minute"],
        ),
    ];
    let mut failures = Vec::new();
    for (name, yaml, prefix, words) in &cases {
        let (code, err) = check(yaml);
        if code != Some(78) {
            failures.push(format!(
                "{name}: exit code {code:?}, want 78; stderr:\n{err}"
            ));
            continue;
        }
        if !has_line(&err, prefix, words) {
            failures.push(format!(
                "{name}: no line starting with `{prefix}` naming one of {words:?}; stderr:\n{err}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid configs not reported as SPEC §2 asks:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn check_reports_every_rate_limiting_problem_at_once() {
    let yaml = r#"_format_version: "3.0"
services:
  - name: a
    url: http://127.0.0.1:9
    routes:
      - name: ra
        paths: ["/a"]
    plugins:
      - name: rate-limiting
        config: {minute: 5, policy: cluster}
consumer_groups:
  - name: free
    plugins:
      - name: rate-limiting
        config: {minute: 100, hour: 10}
plugins:
  - name: rate-limiting
    config: {limit_by: ip}
"#;
    let (code, err) = check(yaml);
    assert_eq!(code, Some(78), "invalid file; stderr:\n{err}");
    let mut missing = Vec::new();
    for (prefix, words) in [
        ("services[0].plugins[0].config", &["policy", "cluster"][..]),
        ("consumer_groups[0].plugins[0].config", &["hour"][..]),
        ("plugins[0]: at least one of", PERIODS),
    ] {
        if !has_line(&err, prefix, words) {
            missing.push(format!("`{prefix}` naming one of {words:?}"));
        }
    }
    assert!(
        missing.is_empty(),
        "every problem is reported, with its path; missing: {missing:?}; stderr:\n{err}"
    );
}

#[test]
fn check_accepts_valid_rate_limiting_configs_at_every_scope() {
    let yaml = r#"_format_version: "3.0"
services:
  - name: a
    url: http://127.0.0.1:9
    routes:
      - name: ra
        paths: ["/a"]
        plugins:
          - name: rate-limiting
            config:
              second: 5
              minute: 100
              hour: 1000
              day: 10000
              month: 100000
              year: 1000000
              limit_by: path
              path: /a
    plugins:
      - name: jwt
      - name: rate-limiting
        config:
          minute: 100
          hour: 100
          limit_by: header
          header_name: X-Api-Key
          policy: local
          fault_tolerant: true
          hide_client_headers: true
          error_code: 418
          error_message: slow down
  - name: b
    url: http://127.0.0.1:9
    routes:
      - name: rb
        paths: ["/b"]
    plugins:
      - name: rate-limiting
        config: {year: 7, limit_by: service}
consumer_groups:
  - name: free
    plugins:
      - name: rate-limiting
        config: {minute: 100}
  - name: premium
consumers:
  - username: u
    groups: [free]
    jwt_secrets:
      - key: u
        secret: s
    plugins:
      - name: rate-limiting
        config: {hour: 5, limit_by: credential}
plugins:
  - name: rate-limiting
    config: {day: 10, limit_by: ip}
  - name: rate-limiting
    consumer_group: premium
    config: {minute: 1000, limit_by: consumer}
  - name: rate-limiting
    service: a
    consumer: u
    config: {hour: 2}
"#;
    let (code, err) = check(yaml);
    assert_eq!(
        code,
        Some(0),
        "a valid file with rate-limiting at every scope and every option; stderr:\n{err}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. exact admission, headers and the 429

#[test]
fn exact_admission_headers_and_429_for_one_client() {
    let o = Origin::start();
    let gw = start(&rl_config(
        &o.url(),
        "service: svc",
        "{minute: 5, limit_by: ip}",
    ));
    let mut c = Conn::new(gw.proxy_addr());
    for i in 1..=5i64 {
        let what = format!("request {i} of 5 allowed (minute: 5)");
        let r = c.get("/x", &[], &what);
        assert_proxied(&r, &what);
        let remaining = (5 - i).to_string();
        assert_header(&r, "X-RateLimit-Limit-Minute", "5", &what);
        assert_header(&r, "X-RateLimit-Remaining-Minute", &remaining, &what);
        assert_header(&r, "RateLimit-Limit", "5", &what);
        assert_header(&r, "RateLimit-Remaining", &remaining, &what);
        // the bucket is full again after i tokens × 12 s (rounded up)
        assert_int_in(&r, "RateLimit-Reset", (12 * (i - 1)).max(1), 12 * i, &what);
        assert!(
            r.header("retry-after").is_none(),
            "{what}: no Retry-After on an admitted request; response {r:?}"
        );
        let others: Vec<String> = rl_headers(&r)
            .into_iter()
            .filter(|h| h.starts_with("x-ratelimit-") && !h.ends_with("-minute"))
            .collect();
        assert!(
            others.is_empty(),
            "{what}: only the configured period gets X-RateLimit headers: {others:?}"
        );
    }
    let what = "request 6 (minute: 5)";
    let r = c.get("/x", &[], what);
    let retry = assert_limited(&r, 429, DEFAULT_MESSAGE, what);
    assert!(
        retry <= 12,
        "{what}: Retry-After {retry}: one token comes back every 12 s (SPEC: seconds until a \
         token is available); response {r:?}"
    );
    assert_header(&r, "X-RateLimit-Limit-Minute", "5", what);
    assert_header(&r, "X-RateLimit-Remaining-Minute", "0", what);
    assert_header(&r, "RateLimit-Limit", "5", what);
    assert_header(&r, "RateLimit-Remaining", "0", what);
    assert_int_in(&r, "RateLimit-Reset", 48, 60, what);

    // a rejected request never reaches the upstream, and the limit holds on new connections
    let r = gw.get("/y");
    assert_limited(&r, 429, DEFAULT_MESSAGE, "request 7, on a new connection");
    let seen = o.requests().len();
    assert_eq!(
        seen, 5,
        "the upstream saw {seen} requests, want the 5 admitted ones"
    );
}

/// A request the limiter counted and the upstream then failed (nothing listens) carries
/// the limiter's headers on the generated 502 too, as on a proxied answer.
#[test]
fn a_counted_request_that_fails_upstream_still_gets_its_headers() {
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], closed_port()));
    let gw = start(&rl_config(
        &format!("http://{dead}"),
        "service: svc",
        "{minute: 5, limit_by: ip}",
    ));
    let mut c = Conn::new(gw.proxy_addr());
    let r = c.get("/x", &[], "a dead upstream");
    assert_eq!(r.status, 502, "{r:?}");
    assert_header(&r, "X-RateLimit-Limit-Minute", "5", "the 502");
    assert_header(&r, "X-RateLimit-Remaining-Minute", "4", "the 502");
    assert_header(&r, "RateLimit-Remaining", "4", "the 502");
}

#[test]
fn spoofed_forwarded_headers_do_not_escape_an_ip_limit() {
    // 127.0.0.1 is not in trusted_ips, so X-Forwarded-For / X-Real-IP are the client's word
    let o = Origin::start();
    let gw = start(&rl_config(&o.url(), "", "{hour: 2, limit_by: ip}"));
    let mut got = Vec::new();
    for (i, ip) in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
        .iter()
        .enumerate()
    {
        let r = proxy_get(&gw, "/", &[("X-Forwarded-For", ip), ("X-Real-IP", ip)]);
        got.push((i + 1, r.status));
    }
    assert_eq!(
        got,
        vec![(1, 200), (2, 200), (3, 429), (4, 429)],
        "untrusted X-Forwarded-For / X-Real-IP must not give a client new quotas"
    );
}

/// From a trusted proxy, X-Real-IP names the client; a value that is not an address is
/// ignored (nginx's realip does the same), so it cannot pick a fresh bucket per value.
#[test]
fn a_trusted_proxys_forwarded_address_counts_only_when_it_is_one() {
    let o = Origin::start();
    let mut yaml = rl_config(&o.url(), "", "{hour: 2, limit_by: ip}");
    yaml.push_str("ringway:\n  trusted_ips: [\"127.0.0.1/32\"]\n");
    let gw = start(&yaml);
    let statuses: Vec<u16> = ["not-an-ip", "2001:DB8::1", "1.1.1.1.1", "[fe80::1%1]:80"]
        .iter()
        .map(|v| proxy_get(&gw, "/", &[("X-Real-IP", v)]).status)
        .collect();
    assert_eq!(
        statuses,
        [200, 200, 429, 429],
        "values that are not addresses all count as the peer (127.0.0.1)"
    );
    let r = proxy_get(&gw, "/", &[("X-Real-IP", " 10.9.8.7 ")]);
    assert_proxied(&r, "a forwarded address has its own quota");
    // With a port, as nginx's realip takes it: the same address, the same quota.
    let r = proxy_get(&gw, "/", &[("X-Real-IP", "10.9.8.7:4000")]);
    assert_proxied(&r, "the second of 10.9.8.7's two");
    let r = proxy_get(&gw, "/", &[("X-Real-IP", "10.9.8.7")]);
    assert_eq!(r.status, 429, "10.9.8.7's third: {r:?}");
    // Of several X-Forwarded-For lines the last is the trusted proxy's; an earlier one may
    // be the client's own, which must not buy it a fresh quota.
    let r = proxy_get(
        &gw,
        "/",
        &[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-For", "10.9.8.7"),
        ],
    );
    assert_eq!(r.status, 429, "the last line's address, 10.9.8.7: {r:?}");
}

// ---------------------------------------------------------------------------------------
// 3. several periods

/// A reload that changes a limit keeps what each client has used, as Kong keeps a
/// window's count: raised from 3 to 30 a minute, a client that used 3 has 27 left (it
/// stayed refused at "0 remaining" when the time drawn ahead was kept instead); lowered
/// back to 3, it is refused, and told to retry within one period.
#[test]
fn a_changed_limit_keeps_the_requests_already_counted() {
    let o = Origin::start();
    let yaml = |minute: u32| {
        rl_config(
            &o.url(),
            "service: svc",
            &format!("{{minute: {minute}, limit_by: ip}}"),
        )
    };
    let gw = start(&yaml(3));
    for i in 1..=3 {
        assert_proxied(&gw.get("/x"), &format!("request {i} of 3"));
    }
    assert_limited(&gw.get("/x"), 429, DEFAULT_MESSAGE, "request 4 of 3");

    gw.reload(&yaml(30));
    let what = "the first request after raising the limit to 30";
    let r = gw.get("/x");
    assert_proxied(&r, what);
    assert_header(&r, "X-RateLimit-Limit-Minute", "30", what);
    assert_header(&r, "X-RateLimit-Remaining-Minute", "26", what);
    for i in 0..5 {
        assert_proxied(&gw.get("/x"), &format!("request {i} more after raising"));
    }

    gw.reload(&yaml(3));
    let what = "after lowering the limit back to 3";
    let r = gw.get("/x");
    let retry = assert_limited(&r, 429, DEFAULT_MESSAGE, what);
    assert!(
        (1..=60).contains(&retry),
        "{what}: Retry-After {retry}, want within the period; response {r:?}"
    );
    assert_int_in(&r, "RateLimit-Reset", 1, 60, what);
    assert_header(&r, "X-RateLimit-Remaining-Minute", "0", what);
}

#[test]
fn several_periods_each_get_headers_and_the_tightest_blocks() {
    let o = Origin::start();
    let gw = start(&rl_config(
        &o.url(),
        "",
        "{second: 2, minute: 2, hour: 5, limit_by: ip}",
    ));
    let mut c = Conn::new(gw.proxy_addr());
    for i in 1..=2i64 {
        let what = format!("request {i} (second: 2, minute: 2, hour: 5)");
        let r = c.get("/", &[], &what);
        assert_proxied(&r, &what);
        assert_header(&r, "X-RateLimit-Limit-Second", "2", &what);
        assert_header(&r, "X-RateLimit-Limit-Minute", "2", &what);
        assert_header(&r, "X-RateLimit-Limit-Hour", "5", &what);
        // the second bucket refills twice a second: its remaining count depends on timing
        assert_int_in(&r, "X-RateLimit-Remaining-Second", 0, 2, &what);
        assert_header(
            &r,
            "X-RateLimit-Remaining-Minute",
            &(2 - i).to_string(),
            &what,
        );
        assert_header(
            &r,
            "X-RateLimit-Remaining-Hour",
            &(5 - i).to_string(),
            &what,
        );
        // RateLimit-* follow the most restrictive period: minute (2 - i left of 2)
        assert_header(&r, "RateLimit-Limit", "2", &what);
        assert_header(&r, "RateLimit-Remaining", &(2 - i).to_string(), &what);
        assert_int_in(&r, "RateLimit-Reset", 1, 60, &what);
        assert!(
            r.header("x-ratelimit-limit-day").is_none(),
            "{what}: no header for an unconfigured period; response {r:?}"
        );
    }
    let what = "request 3: the minute bucket is empty";
    let r = c.get("/", &[], what);
    let retry = assert_limited(&r, 429, DEFAULT_MESSAGE, what);
    assert!(
        retry <= 30,
        "{what}: Retry-After {retry}: a minute token comes back every 30 s; response {r:?}"
    );
    assert_header(&r, "X-RateLimit-Remaining-Minute", "0", what);
    assert_header(&r, "RateLimit-Remaining", "0", what);
    assert_header(&r, "RateLimit-Limit", "2", what);
    // a rejected request takes no token from the other periods (Kong does not count it)
    assert_header(&r, "X-RateLimit-Remaining-Hour", "3", what);
    assert_eq!(o.requests().len(), 2, "the 429 did not reach the upstream");
}

#[test]
fn equal_limits_follow_the_longer_window_and_the_hour_blocks() {
    // minute and hour both allow 3: the hour is the tightest (a tie goes to the longer
    // window, and the minute bucket refills faster), so RateLimit-Reset and Retry-After
    // come from the hour bucket (one token per 1200 s), not the minute one (one per 20 s).
    let o = Origin::start();
    let gw = start(&rl_config(
        &o.url(),
        "",
        "{minute: 3, hour: 3, limit_by: ip}",
    ));
    let mut c = Conn::new(gw.proxy_addr());
    for i in 1..=3i64 {
        let what = format!("request {i} (minute: 3, hour: 3)");
        let r = c.get("/", &[], &what);
        assert_proxied(&r, &what);
        let left = (3 - i).to_string();
        assert_header(&r, "X-RateLimit-Remaining-Minute", &left, &what);
        assert_header(&r, "X-RateLimit-Remaining-Hour", &left, &what);
        assert_header(&r, "RateLimit-Limit", "3", &what);
        assert_header(&r, "RateLimit-Remaining", &left, &what);
        assert_int_in(&r, "RateLimit-Reset", 61, 1200 * i, &what);
    }
    let what = "request 4 (hour exhausted)";
    let r = c.get("/", &[], what);
    let retry = assert_limited(&r, 429, DEFAULT_MESSAGE, what);
    assert!(
        (61..=1200).contains(&retry),
        "{what}: Retry-After {retry}: the next hour token comes back after ~1200 s; {r:?}"
    );
    assert_int_in(&r, "RateLimit-Reset", 61, 3600, what);
}

// ---------------------------------------------------------------------------------------
// 4, 5. hide_client_headers, error_code, error_message

#[test]
fn hide_client_headers_hides_them_but_still_limits() {
    let o = Origin::start();
    let gw = start(&rl_config(
        &o.url(),
        "",
        "{hour: 2, limit_by: ip, hide_client_headers: true}",
    ));
    let mut c = Conn::new(gw.proxy_addr());
    for i in 1..=2 {
        let what = format!("request {i} (hour: 2, hide_client_headers)");
        let r = c.get("/", &[], &what);
        assert_proxied(&r, &what);
        assert_eq!(
            rl_headers(&r),
            Vec::<String>::new(),
            "{what}: no rate-limit headers; response {r:?}"
        );
    }
    let what = "request 3 (hour: 2, hide_client_headers)";
    let r = c.get("/", &[], what);
    // Kong keeps Retry-After on the rejection even with hidden headers
    assert_limited(&r, 429, DEFAULT_MESSAGE, what);
    assert_eq!(
        rl_headers(&r),
        Vec::<String>::new(),
        "{what}: no rate-limit headers on the rejection either; response {r:?}"
    );
}

#[test]
fn error_code_and_error_message_are_used() {
    let o = Origin::start();
    let gw = start(&rl_config(
        &o.url(),
        "",
        "{hour: 1, limit_by: ip, error_code: 418, error_message: \"slow down\"}",
    ));
    let mut c = Conn::new(gw.proxy_addr());
    assert_proxied(&c.get("/", &[], "request 1"), "request 1 (hour: 1)");
    let what = "request 2 (hour: 1, error_code 418)";
    let r = c.get("/", &[], what);
    assert_limited(&r, 418, "slow down", what);
    assert_header(&r, "X-RateLimit-Remaining-Hour", "0", what);
    assert_eq!(
        o.requests().len(),
        1,
        "the rejection did not reach the upstream"
    );
}

/// A worker's lease kept past the bucket's refill is no extra token: requests spaced a
/// little over the lease's idle time, then a pipelined burst, get the limit (plus what
/// refills while the burst runs), not a third more.
#[test]
fn a_burst_after_spaced_requests_gets_the_limit() {
    const LIMIT: usize = 100;
    let o = Origin::start();
    let gw = start(&rl_config(
        &o.url(),
        "",
        &format!("{{second: {LIMIT}, limit_by: ip}}"),
    ));
    let mut c = Client::connect(gw.proxy_addr());
    for _ in 0..10 {
        let r = c.roundtrip(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.status, 200, "{r:?}");
        thread::sleep(Duration::from_millis(105));
    }
    let burst = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".repeat(2 * LIMIT);
    let started = Instant::now();
    c.send(&burst).unwrap();
    let mut admitted = 0;
    for _ in 0..2 * LIMIT {
        let r = c.read_response().unwrap();
        assert!(r.status == 200 || r.status == 429, "{r:?}");
        admitted += usize::from(r.status == 200);
    }
    // One token every 10 ms refills while the burst is answered (and one or two more
    // for the coarse clock the buckets read).
    let refilled = started.elapsed().as_millis() as usize / 10 + 2;
    assert!(
        admitted <= LIMIT + refilled,
        "{admitted} admitted in {:?} (limit {LIMIT})",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// 6. concurrency across workers

#[test]
fn two_workers_never_admit_more_than_the_limit() {
    const LIMIT: usize = 200;
    const WORKERS: usize = 2;
    const THREADS: usize = 16;
    const MAX_REQUESTS: usize = 600;
    let o = Origin::start();
    let gw = start_with(
        &rl_config(&o.url(), "", &format!("{{hour: {LIMIT}, limit_by: ip}}")),
        GatewayOpts::default().workers(WORKERS),
    );
    let addr = gw.proxy_addr();
    let sent = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let sent = sent.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                // connect before the start line so that the connections spread over both
                // workers' SO_REUSEPORT listeners
                let mut c = Conn::new(addr);
                let connected = c.connect();
                barrier.wait();
                let (mut ok, mut limited, mut errors) = (0usize, 0usize, Vec::new());
                if let Err(e) = connected {
                    errors.push(format!("thread {t}: {e}"));
                }
                while errors.is_empty() {
                    if sent.fetch_add(1, Ordering::SeqCst) >= MAX_REQUESTS {
                        break;
                    }
                    match c.try_get("/", &[]) {
                        Ok(r) if r.status == 200 => ok += 1,
                        Ok(r) if r.status == 429 => {
                            limited += 1;
                            break;
                        }
                        Ok(r) => {
                            errors.push(format!("thread {t}: status {}: {r:?}", r.status));
                        }
                        Err(e) => errors.push(format!("thread {t}: {e}")),
                    }
                }
                (ok, limited, errors)
            })
        })
        .collect();
    let mut ok_total = 0;
    let mut limited_total = 0;
    let mut errors = Vec::new();
    for h in handles {
        let (ok, limited, e) = h.join().expect("client thread");
        ok_total += ok;
        limited_total += limited;
        errors.extend(e);
    }
    assert!(errors.is_empty(), "client errors: {errors:#?}");
    // demand on fresh connections (both workers) after the threads stopped
    let mut last = 0;
    for i in 0..2 * THREADS {
        let r = gw.get("/");
        assert!(
            r.status == 200 || r.status == 429,
            "sweep request {i}: {r:?}"
        );
        if r.status == 200 {
            ok_total += 1;
        }
        last = r.status;
    }
    assert!(
        ok_total <= LIMIT,
        "{ok_total} requests admitted for hour: {LIMIT} on {WORKERS} workers ({limited_total} \
         threads saw a 429): all workers together must never admit more than the limit"
    );
    assert!(
        ok_total >= LIMIT - (WORKERS - 1),
        "{ok_total} requests admitted for hour: {LIMIT} on {WORKERS} workers: SPEC promises \
         at least limit - (workers - 1) = {} when demand exceeds the limit",
        LIMIT - (WORKERS - 1)
    );
    assert_eq!(last, 429, "the last request of the sweep is refused");
    assert_eq!(
        o.requests().len(),
        ok_total,
        "the upstream saw exactly the admitted requests"
    );
}

// ---------------------------------------------------------------------------------------
// 7. tiers through consumer groups (the seed scenario)

const TIER_CONSUMERS: &str = r#"consumer_groups:
  - name: free
    plugins:
      - name: rate-limiting
        config:
          hour: 100
  - name: premium
    plugins:
      - name: rate-limiting
        config:
          hour: 1000
consumers:
  - username: free-user
    groups: [free]
    jwt_secrets:
      - key: free-user
        secret: free-secret
  - username: premium-user
    groups: [premium]
    jwt_secrets:
      - key: premium-user
        secret: premium-secret
  - username: plain-user
    jwt_secrets:
      - key: plain-user
        secret: plain-secret
"#;

#[test]
fn tiers_through_consumer_groups() {
    let o = Origin::start();
    let gw = start(&seed_services_config(&o, true, TIER_CONSUMERS));
    let free = hs256("free-user", "free-secret");
    let premium = hs256("premium-user", "premium-secret");
    let plain = hs256("plain-user", "plain-secret");
    let mut cf = Conn::new(gw.proxy_addr());
    let mut cp = Conn::new(gw.proxy_addr());
    let (mut free_seq, mut premium_ok) = (Vec::new(), 0);
    for i in 0..150 {
        let r = cf.get(
            "/api/users/1",
            &[("Authorization", free.as_str())],
            &format!("free-user request {}", i + 1),
        );
        free_seq.push(r.status);
        if i == 0 || r.status == 429 {
            let what = format!("free-user request {} ({})", i + 1, r.status);
            assert_header(&r, "X-RateLimit-Limit-Hour", "100", &what);
        }
        if r.status == 429 {
            assert_limited(&r, 429, DEFAULT_MESSAGE, "free-user over its tier");
        }
        let r = cp.get(
            "/api/accounts/1",
            &[("Authorization", premium.as_str())],
            &format!("premium-user request {}", i + 1),
        );
        let what = format!("premium-user request {}", i + 1);
        assert_proxied(&r, &what);
        assert_header(&r, "X-RateLimit-Limit-Hour", "1000", &what);
        assert_header(
            &r,
            "X-RateLimit-Remaining-Hour",
            &(999 - i).to_string(),
            &what,
        );
        premium_ok += 1;
    }
    let free_ok = free_seq.iter().filter(|&&s| s == 200).count();
    let free_limited = free_seq.iter().filter(|&&s| s == 429).count();
    assert_eq!(
        (free_ok, free_limited),
        (100, 50),
        "free-user (hour: 100 through its group): 100 × 200 then 50 × 429; statuses: {free_seq:?}"
    );
    assert!(
        free_seq[..100].iter().all(|&s| s == 200),
        "the first 100 are the admitted ones: {free_seq:?}"
    );
    assert_eq!(premium_ok, 150, "premium-user (hour: 1000): 150 × 200");

    // a consumer in no group, with no global rate-limiting: unlimited, no headers
    let mut c = Conn::new(gw.proxy_addr());
    for i in 1..=110 {
        let what = format!("plain-user request {i}");
        let r = c.get("/api/users/1", &[("Authorization", plain.as_str())], &what);
        assert_proxied(&r, &what);
        assert_eq!(
            rl_headers(&r),
            Vec::<String>::new(),
            "{what}: no rate-limiting applies to a consumer in no group; response {r:?}"
        );
    }
}

/// A consumer in several tiers gets the group first by name, whatever order it lists
/// them in (as Kong Enterprise decides between groups).
#[test]
fn of_several_groups_the_first_by_name_decides() {
    let o = Origin::start();
    let consumers = format!(
        "{TIER_CONSUMERS}  - username: listed-premium-first\n    groups: [premium, free]\n    jwt_secrets:\n      - key: both-a\n        secret: both-a-secret\n  - username: listed-free-first\n    groups: [free, premium]\n    jwt_secrets:\n      - key: both-b\n        secret: both-b-secret\n"
    );
    let gw = start(&seed_services_config(&o, true, &consumers));
    for (key, secret) in [("both-a", "both-a-secret"), ("both-b", "both-b-secret")] {
        let token = hs256(key, secret);
        let mut c = Conn::new(gw.proxy_addr());
        let r = c.get("/api/users/1", &[("Authorization", token.as_str())], key);
        assert_proxied(&r, key);
        assert_header(&r, "X-RateLimit-Limit-Hour", "100", key);
    }
}

#[test]
fn consumer_scoped_limit_beats_the_group_and_the_group_beats_global() {
    let o = Origin::start();
    let extra = format!(
        "{TIER_CONSUMERS}plugins:\n  - name: rate-limiting\n    consumer: free-user\n    \
         config:\n      hour: 3\n  - name: rate-limiting\n    config:\n      hour: 5\n"
    );
    let gw = start(&seed_services_config(&o, true, &extra));
    let free = hs256("free-user", "free-secret");
    let premium = hs256("premium-user", "premium-secret");
    let plain = hs256("plain-user", "plain-secret");
    let mut c = Conn::new(gw.proxy_addr());

    // consumer > group: free-user gets the consumer-scoped hour: 3
    for i in 1..=3 {
        let what = format!("free-user request {i} (consumer-scoped hour: 3)");
        let r = c.get("/api/users/1", &[("Authorization", free.as_str())], &what);
        assert_proxied(&r, &what);
        assert_header(&r, "X-RateLimit-Limit-Hour", "3", &what);
    }
    let r = c.get(
        "/api/users/1",
        &[("Authorization", free.as_str())],
        "free-user #4",
    );
    assert_limited(
        &r,
        429,
        DEFAULT_MESSAGE,
        "free-user request 4 (consumer-scoped hour: 3)",
    );

    // group > global: premium-user gets its group's 1000, not the global 5
    for i in 1..=7 {
        let what = format!("premium-user request {i} (group hour: 1000 over global hour: 5)");
        let r = c.get(
            "/api/users/1",
            &[("Authorization", premium.as_str())],
            &what,
        );
        assert_proxied(&r, &what);
        assert_header(&r, "X-RateLimit-Limit-Hour", "1000", &what);
    }

    // global for a consumer in no group
    let got = statuses(
        &mut c,
        "/api/users/1",
        &[("Authorization", plain.as_str())],
        6,
        "plain-user (global hour: 5)",
    );
    assert_eq!(
        got,
        vec![200, 200, 200, 200, 200, 429],
        "plain-user falls back to the global hour: 5"
    );
}

// ---------------------------------------------------------------------------------------
// 8. independent keys (limit_by header)

#[test]
fn limit_by_header_gives_each_value_its_own_quota_and_falls_back_to_the_ip() {
    let o = Origin::start();
    let gw = start(&rl_config(
        &o.url(),
        "",
        "{hour: 2, limit_by: header, header_name: X-Api-Key}",
    ));
    let mut c = Conn::new(gw.proxy_addr());
    let key_a = [("X-Api-Key", "key-a")];
    let key_a_lower = [("x-api-key", "key-a")];
    let key_b = [("X-Api-Key", "key-b")];

    let r = c.get("/", &key_a, "key-a #1");
    assert_proxied(&r, "key-a #1");
    assert_header(&r, "X-RateLimit-Remaining-Hour", "1", "key-a #1");
    // the header name is case-insensitive: the same key
    let r = c.get("/", &key_a_lower, "key-a #2 (lower-case header name)");
    assert_proxied(&r, "key-a #2");
    assert_header(&r, "X-RateLimit-Remaining-Hour", "0", "key-a #2");
    let r = c.get("/", &key_a, "key-a #3");
    assert_limited(&r, 429, DEFAULT_MESSAGE, "key-a #3");

    // another value: a quota of its own
    let r = c.get("/", &key_b, "key-b #1");
    assert_proxied(&r, "key-b #1 after key-a is exhausted");
    assert_header(&r, "X-RateLimit-Remaining-Hour", "1", "key-b #1");
    assert_eq!(c.get("/", &key_b, "key-b #2").status, 200, "key-b #2");
    assert_eq!(c.get("/", &key_b, "key-b #3").status, 429, "key-b #3");

    // no header: the client IP is the key, with its own quota
    let got = statuses(&mut c, "/", &[], 3, "no X-Api-Key");
    assert_eq!(
        got,
        vec![200, 200, 429],
        "without the header the client IP is the key (its own quota)"
    );
    assert_eq!(
        c.get("/", &key_a, "key-a #4").status,
        429,
        "key-a still exhausted"
    );
}

// ---------------------------------------------------------------------------------------
// 9. the plugin instance's scope is part of the key

fn two_services(url: &str, plugins: &str, global: &str) -> String {
    format!(
        r#"_format_version: "3.0"
services:
  - name: user-service
    url: {url}
    routes:
      - name: user-routes
        paths: ["/api/users"]
      - name: profile-routes
        paths: ["/api/profile"]
{plugins}  - name: account-service
    url: {url}
    routes:
      - name: account-routes
        paths: ["/api/accounts"]
{plugins}{global}"#
    )
}

#[test]
fn service_scoped_instances_count_separately() {
    let o = Origin::start();
    let plugins =
        "    plugins:\n      - name: rate-limiting\n        config: {hour: 2, limit_by: ip}\n";
    let gw = start(&two_services(&o.url(), plugins, ""));
    let mut c = Conn::new(gw.proxy_addr());
    // user-service: one quota across both of its routes
    assert_eq!(
        c.get("/api/users/1", &[], "users #1").status,
        200,
        "users #1"
    );
    assert_eq!(
        c.get("/api/profile/1", &[], "profile #1").status,
        200,
        "profile #1"
    );
    let r = c.get("/api/users/1", &[], "users #3");
    assert_limited(
        &r,
        429,
        DEFAULT_MESSAGE,
        "third request to user-service (two routes, one service-scoped instance: one quota)",
    );
    // account-service: its own instance, its own count, for the same client
    let got = statuses(&mut c, "/api/accounts/1", &[], 3, "accounts");
    assert_eq!(
        got,
        vec![200, 200, 429],
        "account-service's instance counts separately from user-service's"
    );
}

#[test]
fn a_global_instance_is_one_quota_across_services() {
    let o = Origin::start();
    let global = "plugins:\n  - name: rate-limiting\n    config: {hour: 3, limit_by: ip}\n";
    let gw = start(&two_services(&o.url(), "", global));
    let mut c = Conn::new(gw.proxy_addr());
    let got = vec![
        c.get("/api/users/1", &[], "users #1").status,
        c.get("/api/accounts/1", &[], "accounts #1").status,
        c.get("/api/profile/1", &[], "profile #1").status,
        c.get("/api/accounts/1", &[], "accounts #2").status,
        c.get("/api/users/1", &[], "users #2").status,
    ];
    assert_eq!(
        got,
        vec![200, 200, 200, 429, 429],
        "a global hour: 3 is one quota across every service and route"
    );
}

// ---------------------------------------------------------------------------------------
// 10. limit_by consumer / credential with jwt

#[test]
fn limit_by_consumer_and_credential_with_jwt() {
    let o = Origin::start();
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: by-consumer
    url: {u}
    routes:
      - name: c
        paths: ["/c"]
    plugins:
      - name: jwt
      - name: rate-limiting
        config: {{hour: 2, limit_by: consumer}}
  - name: by-credential
    url: {u}
    routes:
      - name: cred
        paths: ["/cred"]
    plugins:
      - name: jwt
      - name: rate-limiting
        config: {{hour: 2, limit_by: credential}}
  - name: open
    url: {u}
    routes:
      - name: open
        paths: ["/open"]
    plugins:
      - name: rate-limiting
        config: {{hour: 2}}
consumers:
  - username: alice
    jwt_secrets:
      - key: alice-1
        secret: alice-secret-1
      - key: alice-2
        secret: alice-secret-2
  - username: bob
    jwt_secrets:
      - key: bob
        secret: bob-secret
"#,
        u = o.url()
    );
    let gw = start(&cfg);
    let a1 = hs256("alice-1", "alice-secret-1");
    let a2 = hs256("alice-2", "alice-secret-2");
    let bob = hs256("bob", "bob-secret");
    let mut c = Conn::new(gw.proxy_addr());
    let mut get =
        |path: &str, token: &str, what: &str| c.get(path, &[("Authorization", token)], what).status;

    // limit_by consumer: alice's two credentials share one quota; bob (same IP) has his own
    let got = vec![
        get("/c", &a1, "alice-1 #1"),
        get("/c", &a2, "alice-2 #1"),
        get("/c", &a1, "alice-1 #2"),
        get("/c", &bob, "bob #1"),
        get("/c", &bob, "bob #2"),
        get("/c", &bob, "bob #3"),
    ];
    assert_eq!(
        got,
        vec![200, 200, 429, 200, 200, 429],
        "limit_by consumer: one quota per consumer (alice over two credentials), not per IP"
    );

    // limit_by credential: each of alice's credentials has its own quota
    let got = vec![
        get("/cred", &a1, "alice-1 #1"),
        get("/cred", &a1, "alice-1 #2"),
        get("/cred", &a1, "alice-1 #3"),
        get("/cred", &a2, "alice-2 #1"),
    ];
    assert_eq!(
        got,
        vec![200, 200, 429, 200],
        "limit_by credential: one quota per credential"
    );

    // the default limit_by is consumer; an anonymous client falls back to its IP
    let mut c2 = Conn::new(gw.proxy_addr());
    let got = statuses(&mut c2, "/open", &[], 3, "anonymous on /open");
    assert_eq!(
        got,
        vec![200, 200, 429],
        "no consumer: the client IP is the key"
    );
}

// ---------------------------------------------------------------------------------------
// 11. Admin API

#[test]
fn admin_api_plugin_limits_at_once_on_every_worker_and_delete_lifts_it() {
    let o = Origin::start();
    let gw = start_with(
        &seed_services_config(&o, false, ""),
        GatewayOpts::default().workers(2),
    );
    assert_eq!(gw.get("/api/accounts/1").status, 200, "open before");

    // invalid configs are refused with Kong's schema-violation shape
    for (what, form) in [
        ("no period", vec![("name", "rate-limiting")]),
        (
            "negative limit",
            vec![("name", "rate-limiting"), ("config.minute", "-1")],
        ),
        (
            "policy cluster",
            vec![
                ("name", "rate-limiting"),
                ("config.minute", "3"),
                ("config.policy", "cluster"),
            ],
        ),
    ] {
        let r = admin_form(&gw, "POST", "/plugins", &form);
        assert_eq!(r.status, 400, "POST /plugins with {what}: {r:?}");
        assert_eq!(r.json()["name"], "schema violation", "{what}: {r:?}");
    }
    assert_eq!(
        gw.get("/api/accounts/1").status,
        200,
        "refused plugins change nothing"
    );

    let r = admin_form(
        &gw,
        "POST",
        "/plugins",
        &[("name", "rate-limiting"), ("config.minute", "3")],
    );
    assert_eq!(
        r.status, 201,
        "POST /plugins name=rate-limiting config.minute=3: {r:?}"
    );
    let plugin = r.json();
    assert_eq!(plugin["name"], "rate-limiting", "{plugin}");
    assert_eq!(
        plugin["config"]["minute"].as_f64(),
        Some(3.0),
        "the form value is stored as a number: {plugin}"
    );
    let pid = plugin["id"]
        .as_str()
        .unwrap_or_else(|| panic!("plugin has an id: {plugin}"))
        .to_string();

    // applied on every worker before the 201: fresh connections land on both workers
    let mut seq = Vec::new();
    for i in 1..=8 {
        let what = format!("fresh-connection request {i} after the 201");
        let r = gw.get("/api/accounts/1");
        match r.status {
            200 => assert_header(&r, "X-RateLimit-Limit-Minute", "3", &what),
            429 => {
                assert_limited(&r, 429, DEFAULT_MESSAGE, &what);
            }
            s => panic!("{what}: status {s}: {r:?}"),
        }
        seq.push(r.status);
    }
    let ok = seq.iter().filter(|&&s| s == 200).count();
    assert!(
        (2..=3).contains(&ok),
        "minute: 3 on 2 workers admits 2 or 3 (SPEC: at most the limit, at least limit - \
         (workers - 1)); statuses {seq:?}"
    );
    assert_eq!(seq[7], 429, "the last one is refused: {seq:?}");

    let r = admin_form(&gw, "DELETE", &format!("/plugins/{pid}"), &[]);
    assert_eq!(r.status, 204, "DELETE /plugins/{pid}: {r:?}");
    for i in 1..=4 {
        let r = gw.get("/api/accounts/1");
        assert_eq!(r.status, 200, "request {i} after DELETE: {r:?}");
        assert_eq!(
            rl_headers(&r),
            Vec::<String>::new(),
            "request {i} after DELETE: no rate-limit headers; {r:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 12. counters survive reloads and Admin writes

fn reload_count(gw: &Gateway) -> usize {
    gw.stderr_text()
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("reload"))
        .count()
}

#[test]
fn reload_and_admin_writes_keep_the_counters() {
    let o = Origin::start();
    let cfg = rl_config(&o.url(), "", "{hour: 3, limit_by: ip}");
    let gw = start_with(
        &cfg,
        GatewayOpts {
            log_level: "info".to_string(),
            ..GatewayOpts::default()
        },
    );
    let got = statuses(
        &mut Conn::new(gw.proxy_addr()),
        "/",
        &[],
        4,
        "before reload",
    );
    assert_eq!(got, vec![200, 200, 200, 429], "hour: 3 used up");

    // SIGHUP with the same file
    let before = reload_count(&gw);
    gw.send_signal("HUP");
    let reloaded = wait_for(Duration::from_secs(10), || {
        (reload_count(&gw) > before).then_some(())
    });
    assert!(
        reloaded.is_some(),
        "no reload logged at info after SIGHUP; stderr:\n{}",
        gw.stderr_text()
    );
    let r = gw.get("/");
    assert_limited(&r, 429, DEFAULT_MESSAGE, "after SIGHUP of the same file");
    assert_header(&r, "X-RateLimit-Remaining-Hour", "0", "after SIGHUP");

    // SIGHUP with a changed file (one more service), the same plugin
    let hash = gw.status_json()["configuration_hash"].clone();
    let changed_cfg = rl_config(&o.url(), "", "{hour: 3, limit_by: ip}").replace(
        "services:\n",
        &format!(
            "services:\n  - name: other\n    url: {}\n    routes:\n      - name: other\n        paths: [\"/other\"]\n",
            o.url()
        ),
    );
    gw.write_config(&changed_cfg);
    gw.send_signal("HUP");
    let changed = wait_for(Duration::from_secs(10), || {
        let h = gw.status_json()["configuration_hash"].clone();
        (h != hash).then_some(h)
    });
    assert!(
        changed.is_some(),
        "configuration_hash did not change after SIGHUP with a new service; stderr:\n{}",
        gw.stderr_text()
    );
    let r = gw.get("/");
    assert_limited(&r, 429, DEFAULT_MESSAGE, "after reloading a changed file");
    let r = gw.get("/other/1");
    assert_limited(
        &r,
        429,
        DEFAULT_MESSAGE,
        "the new service's route is under the same global quota",
    );

    // an Admin API write publishes a new snapshot too
    let r = admin_form(&gw, "POST", "/consumers", &[("username", "someone")]);
    assert_eq!(r.status, 201, "POST /consumers: {r:?}");
    let r = gw.get("/");
    assert_limited(&r, 429, DEFAULT_MESSAGE, "after an Admin API write");
    assert_eq!(
        o.requests().len(),
        3,
        "only the 3 admitted requests reached the upstream"
    );
}

/// The seed scenario through the Admin API: the service allows 100/min; a consumer
/// created with curl and put into the `premium` group gets the group's 1000 instead, and
/// taking it out of the group puts it back under the service's limit.
#[test]
fn admin_api_moves_a_consumer_between_tiers() {
    let o = Origin::start();
    let groups = r#"
consumer_groups:
  - name: premium
    plugins:
      - name: rate-limiting
        config: {minute: 1000}
"#;
    let cfg = seed_services_config(&o, true, groups).replace(
        "      - name: jwt\n",
        "      - name: jwt\n      - name: rate-limiting\n        config: {minute: 100}\n",
    );
    let gw = start(&cfg);
    assert_eq!(
        admin_form(&gw, "POST", "/consumers", &[("username", "mobile-app")]).status,
        201
    );
    let r = admin_form(
        &gw,
        "POST",
        "/consumers/mobile-app/jwt",
        &[
            ("algorithm", "HS256"),
            ("secret", "my-secret-key"),
            ("key", "mobile-app"),
        ],
    );
    assert_eq!(r.status, 201, "{}", r.body_str());
    let token = hs256("mobile-app", "my-secret-key");
    let auth = [("Authorization", token.as_str())];
    let limit_of = |gw: &Gateway| {
        let r = proxy_get(gw, "/api/users/1", &auth);
        assert_eq!(r.status, 200, "{}", r.body_str());
        r.header("X-RateLimit-Limit-Minute").map(str::to_owned)
    };
    assert_eq!(limit_of(&gw).as_deref(), Some("100"), "the service's limit");

    // Unknown consumer or group: Kong's errors.
    let r = admin_form(
        &gw,
        "POST",
        "/consumer_groups/premium/consumers",
        &[("consumer", "nobody")],
    );
    assert_eq!(r.status, 400, "{}", r.body_str());
    let r = admin_form(
        &gw,
        "POST",
        "/consumer_groups/gold/consumers",
        &[("consumer", "mobile-app")],
    );
    assert_eq!(r.status, 404, "{}", r.body_str());

    let r = admin_form(
        &gw,
        "POST",
        "/consumer_groups/premium/consumers",
        &[("consumer", "mobile-app")],
    );
    assert_eq!(r.status, 201, "{}", r.body_str());
    let body = r.json();
    assert_eq!(body["consumer_group"]["name"], "premium", "{body}");
    assert_eq!(body["consumers"][0]["username"], "mobile-app", "{body}");
    assert_eq!(limit_of(&gw).as_deref(), Some("1000"), "the premium tier");
    let listed = admin_form(&gw, "GET", "/consumers/mobile-app/consumer_groups", &[]).json();
    assert_eq!(listed["data"][0]["name"], "premium", "{listed}");
    let members = admin_form(&gw, "GET", "/consumer_groups/premium/consumers", &[]).json();
    assert_eq!(members["data"][0]["username"], "mobile-app", "{members}");

    let r = admin_form(
        &gw,
        "DELETE",
        "/consumer_groups/premium/consumers/mobile-app",
        &[],
    );
    assert_eq!(r.status, 204, "{}", r.body_str());
    assert_eq!(
        limit_of(&gw).as_deref(),
        Some("100"),
        "back to the service's limit"
    );
    let r = admin_form(
        &gw,
        "DELETE",
        "/consumer_groups/premium/consumers/mobile-app",
        &[],
    );
    assert_eq!(r.status, 404, "not a member any more");

    // The other side of the same relation.
    let r = admin_form(
        &gw,
        "POST",
        "/consumers/mobile-app/consumer_groups",
        &[("group", "premium")],
    );
    assert_eq!(r.status, 201, "{}", r.body_str());
    assert_eq!(r.json()["consumer_groups"][0]["name"], "premium");
    assert_eq!(limit_of(&gw).as_deref(), Some("1000"));
}

/// A flood of distinct identifiers cannot grow the bucket table beyond
/// `rate_limit_max_keys`, and cannot escape the limit either: the newcomers share one
/// overflow bucket.
#[test]
fn a_flood_of_identifiers_is_bounded_and_still_limited() {
    let o = Origin::start();
    let cfg = rl_config(
        &o.url(),
        "",
        "{hour: 2, limit_by: header, header_name: X-Api-Key}",
    )
    .replace(
        "_format_version: \"3.0\"\n",
        "_format_version: \"3.0\"\nringway:\n  rate_limit_max_keys: 5\n",
    );
    let gw = start(&cfg);
    let mut c = Conn::new(gw.proxy_addr());
    let mut admitted = 0;
    for i in 0..40 {
        let key = format!("flood-{i}");
        let r = c.get("/", &[("X-Api-Key", key.as_str())], &key);
        match r.status {
            200 => admitted += 1,
            429 => {}
            other => panic!("{key}: unexpected status {other}"),
        }
    }
    // Five keys get a bucket each (one request each: 5 admitted); the other 35 share the
    // overflow bucket (hour: 2: 2 admitted).
    assert_eq!(admitted, 7, "admitted {admitted} of 40 distinct keys");
    // The first keys still have their own bucket with one token left.
    assert_eq!(
        c.get("/", &[("X-Api-Key", "flood-0")], "flood-0 again")
            .status,
        200
    );
    assert_eq!(
        c.get("/", &[("X-Api-Key", "flood-0")], "flood-0 3rd")
            .status,
        429
    );
}
