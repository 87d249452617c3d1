//! Observability, black box: `GET /histograms` (SPEC §5), `GET /metrics` with Kong's
//! `prometheus` series and ours (SPEC §4, §5; Kong: research/kong-semantics.md §1.5), the
//! `correlation-id` plugin and `request_id` in generated answers (SPEC §3, §4; Kong: §1.4),
//! the `X-Kong-*-Latency` response headers, and the `/status` counters.
//!
//! `/metrics` is parsed by an independent parser, the reference Python client's
//! (`prometheus_client.parser`, Debian's `python3-prometheus-client`), through
//! `tests/py/prom_parse.py`, which prints what it parsed as JSON. The `.hgrm` text of
//! `/histograms?format=hgrm` is parsed here, column by column, as HdrHistogram prints it.
//!
//! Nothing here asserts how fast anything is. Latencies are checked for consistency
//! (percentiles ordered, what the client saw at least what the upstream took) and, in one
//! test, against a lower bound the test itself causes: an upstream that waits 30 ms before
//! answering cannot be measured as taking less than 30 ms, however slow the machine.
//!
//! The workers fold their records into the shared tables when a reader asks, so counts
//! are read by polling until they reach the expected value (for at most a few seconds)
//! and then asserted exactly, never with a tolerance.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// Deadline for one response (generous: the machine may be loaded).
const DEADLINE: Duration = Duration::from_secs(5);
/// How long a count may take to show up in `/histograms` or `/metrics`.
const SETTLE: Duration = Duration::from_secs(3);
/// The summary fields of one histogram (SPEC §5).
const H_FIELDS: [&str; 9] = [
    "count", "min", "max", "mean", "p50", "p90", "p99", "p999", "p9999",
];
/// Kong's buckets (research/kong-semantics.md §1.5).
const KONG_LATENCY_BUCKETS: [f64; 17] = [
    1.0, 2.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0, 500.0, 750.0, 1000.0,
    3000.0, 6000.0,
];
const UPSTREAM_LATENCY_BUCKETS: [f64; 13] = [
    25.0, 50.0, 80.0, 100.0, 250.0, 400.0, 700.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0, 60000.0,
];
/// What an upstream that waits before answering waits (see `status_origin`).
const SLOW_MS: u64 = 30;

// ---------------------------------------------------------------------------------------
// gateway, clients and upstream

fn start_with(cfg: &str, opts: GatewayOpts) -> Gateway {
    Gateway::try_start_with(cfg, opts)
        .unwrap_or_else(|e| panic!("the gateway must start with this config: {e}\nconfig:\n{cfg}"))
}

fn start(cfg: &str) -> Gateway {
    start_with(cfg, GatewayOpts::default())
}

/// Extra request headers.
type Headers<'a> = Vec<(&'a str, &'a str)>;

/// `GET path` with extra headers, as raw bytes (so byte counts can be compared).
fn raw_get(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// One keep-alive client connection; reconnects after the server closed it.
struct Conn {
    addr: SocketAddr,
    client: Option<Client>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn { addr, client: None }
    }

    fn try_send(&mut self, req: &[u8]) -> Result<Response, String> {
        if self.client.is_none() {
            let c = Client::try_connect(self.addr)
                .map_err(|e| format!("connect {}: {e}", self.addr))?;
            self.client = Some(c);
        }
        let c = self.client.as_mut().expect("connected above");
        if let Err(e) = c.send(req) {
            self.client = None;
            return Err(format!("send: {e}"));
        }
        match c.read_response_within(DEADLINE) {
            Ok(r) => {
                let close = r
                    .header("connection")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("close"));
                if close {
                    self.client = None;
                }
                Ok(r)
            }
            Err(e) => {
                self.client = None;
                Err(format!("no response within {DEADLINE:?}: {e:?}"))
            }
        }
    }

    fn get(&mut self, path: &str, headers: &[(&str, &str)], what: &str) -> Response {
        self.try_send(&raw_get(path, headers))
            .unwrap_or_else(|e| panic!("{what}: GET {path}: {e}"))
    }
}

/// One GET on a fresh connection, without panicking.
fn try_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
    Conn::new(addr).try_send(&raw_get(path, headers))
}

/// One proxy GET on a fresh connection.
fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)], what: &str) -> Response {
    try_get(gw.proxy_addr(), path, headers).unwrap_or_else(|e| panic!("{what}: GET {path}: {e}"))
}

/// One Admin API GET on a fresh connection.
fn admin(gw: &Gateway, path: &str) -> Response {
    try_get(gw.admin_addr(), path, &[])
        .unwrap_or_else(|e| panic!("Admin API GET {path} must answer: {e}"))
}

/// Asserts a 200 `ok` from the test origin.
fn assert_proxied(r: &Response, what: &str) {
    assert_eq!(r.status, 200, "{what}: status; response {r:?}");
    assert_eq!(r.body_str(), "ok", "{what}: upstream body; response {r:?}");
}

/// The test upstream: `.../status/NNN` answers NNN, `.../slow` waits [`SLOW_MS`] first,
/// anything else gets the default `200 ok`. Every request is recorded.
fn status_origin() -> Origin {
    Origin::with_handler(|ctx| {
        let path = ctx.req.path().to_string();
        if let Some(i) = path.find("/status/") {
            let code: u16 = path[i + 8..]
                .get(..3)
                .and_then(|c| c.parse().ok())
                .unwrap_or(500);
            let body = format!("status {code}");
            return Action::Respond(
                format!(
                    "HTTP/1.1 {code} Scripted\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            );
        }
        if path.contains("/slow") {
            return Action::Delay(Duration::from_millis(SLOW_MS), Box::new(Action::Ok));
        }
        Action::Ok
    })
}

/// An HS256 token for the credential `key` (its `iss`).
fn token(key: &str, secret: &str) -> String {
    py_hs256(&json!({ "iss": key }).to_string(), secret)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Polls `fetch` until `done` holds or [`SETTLE`] passes; returns the last value.
fn poll<T>(mut fetch: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + SETTLE;
    loop {
        let v = fetch();
        if done(&v) || Instant::now() >= deadline {
            return v;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Lower-case 8-4-4-4-12 hex.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        })
}

// ---------------------------------------------------------------------------------------
// /histograms

/// `GET /histograms{query}` as JSON (200 required).
fn histograms(gw: &Gateway, query: &str) -> Value {
    let r = admin(gw, &format!("/histograms{query}"));
    assert_eq!(r.status, 200, "GET /histograms{query}: {r:?}");
    serde_json::from_slice(&r.body).unwrap_or_else(|e| {
        panic!(
            "GET /histograms{query}: body is not JSON ({e}): {:?}",
            r.body_str()
        )
    })
}

/// The histogram at `path` (e.g. `["routes", "r1", "request"]`).
fn hist<'a>(doc: &'a Value, path: &[&str]) -> &'a Value {
    let mut v = doc;
    for key in path {
        v = v.get(*key).unwrap_or_else(|| {
            panic!(
                "/histograms: no {:?} in {}",
                path.join("."),
                serde_json::to_string_pretty(doc).unwrap_or_default()
            )
        });
    }
    v
}

fn field(h: &Value, name: &str, what: &str) -> f64 {
    h.get(name)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{what}: field {name:?} missing or not a number in {h}"))
}

/// `count` of the histogram at `path`.
fn count(doc: &Value, path: &[&str]) -> u64 {
    let h = hist(doc, path);
    h.get("count").and_then(Value::as_u64).unwrap_or_else(|| {
        panic!(
            "{}: count missing or not a whole number: {h}",
            path.join(".")
        )
    })
}

/// Polls `/histograms{query}` until the count at `path` is `want`; returns that document.
fn histograms_when(gw: &Gateway, query: &str, path: &[&str], want: u64) -> Value {
    poll(|| histograms(gw, query), |doc| count(doc, path) == want)
}

/// Checks one H: every field a non-negative number, all zero when empty, otherwise
/// `min <= p50 <= p90 <= p99 <= p999 <= p9999 <= max` and `min <= mean <= max`.
fn check_h(h: &Value, what: &str) -> u64 {
    let obj = h
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {h}"));
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = H_FIELDS.into_iter().collect();
    assert_eq!(keys, want, "{what}: the fields of H (SPEC §5): {h}");
    let v: Vec<f64> = H_FIELDS.iter().map(|f| field(h, f, what)).collect();
    assert!(v.iter().all(|x| *x >= 0.0), "{what}: negative value: {h}");
    let count = h["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: count is not a whole number: {h}"));
    if count == 0 {
        assert!(
            v.iter().all(|x| *x == 0.0),
            "{what}: empty H must be zeros: {h}"
        );
        return 0;
    }
    let order = ["min", "p50", "p90", "p99", "p999", "p9999", "max"];
    for pair in order.windows(2) {
        assert!(
            field(h, pair[0], what) <= field(h, pair[1], what),
            "{what}: {} <= {} must hold: {h}",
            pair[0],
            pair[1]
        );
    }
    let (min, mean, max) = (
        field(h, "min", what),
        field(h, "mean", what),
        field(h, "max", what),
    );
    assert!(
        min <= mean + 0.001 && mean <= max + 0.001,
        "{what}: min <= mean <= max must hold: {h}"
    );
    count
}

/// Checks a scope's three histograms, each on its own.
fn check_scope(l: &Value, what: &str) {
    let n = check_h(&l["request"], &format!("{what}.request"));
    let nu = check_h(&l["upstream"], &format!("{what}.upstream"));
    let np = check_h(&l["proxy"], &format!("{what}.proxy"));
    assert!(nu <= n, "{what}: more upstream samples than requests: {l}");
    assert!(np <= n, "{what}: more proxy samples than requests: {l}");
}

/// Checks every scope of a document: unit, overall, each service and route.
fn check_document(doc: &Value) {
    assert_eq!(doc["unit"], "us", "unit (SPEC §5): {doc}");
    check_scope(&doc["overall"], "overall");
    for kind in ["services", "routes"] {
        let map = doc[kind]
            .as_object()
            .unwrap_or_else(|| panic!("{kind} must be an object: {doc}"));
        for (name, l) in map {
            check_scope(l, &format!("{kind}.{name}"));
        }
    }
}

/// What follows from each request's own latencies, for a scope whose requests all went
/// upstream: the client's time includes the upstream's and ringway's own, so the
/// smallest and largest request times are at least the smallest and largest of those.
fn check_consistency(doc: &Value) {
    let mut scopes = vec![("overall".to_string(), &doc["overall"])];
    for kind in ["services", "routes"] {
        for (name, l) in doc[kind].as_object().into_iter().flatten() {
            scopes.push((format!("{kind}.{name}"), l));
        }
    }
    for (what, l) in scopes {
        let n = l["request"]["count"].as_u64().unwrap_or(0);
        for part in ["upstream", "proxy"] {
            if n == 0 || l[part]["count"].as_u64() != Some(n) {
                continue;
            }
            for f in ["min", "max"] {
                let request = field(&l["request"], f, &what);
                let other = field(&l[part], f, &what);
                assert!(
                    request >= other,
                    "{what}: request.{f} ({request} us) must be >= {part}.{f} ({other} us): each request's time includes the {part} time: {l}"
                );
            }
        }
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// One row of a percentile distribution.
#[derive(Debug)]
struct HgrmRow {
    value: f64,
    percentile: f64,
    total: u64,
    inverse: Option<f64>,
}

/// HdrHistogram's percentile-distribution text, parsed.
#[derive(Debug)]
struct Hgrm {
    rows: Vec<HgrmRow>,
    mean: f64,
    max: f64,
    total: u64,
    text: String,
}

/// Parses `.hgrm` text strictly: the column header, then rows of 4 numbers (3 on the
/// 100th percentile row), then the `#[Mean`, `#[Max` and `#[Buckets` footer lines.
fn parse_hgrm(text: &str) -> Result<Hgrm, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty text")?
        .split_whitespace()
        .collect();
    if header != ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"] {
        return Err(format!("column header {header:?}"));
    }
    let mut rows = Vec::new();
    let mut footer: BTreeMap<String, String> = BTreeMap::new();
    let mut footer_lines = Vec::new();
    for line in lines {
        let t = line.trim();
        if let Some(inner) = t.strip_prefix("#[") {
            let inner = inner
                .strip_suffix(']')
                .ok_or(format!("footer line {t:?}"))?;
            footer_lines.push(inner.split('=').next().unwrap_or("").trim().to_string());
            for part in inner.split(',') {
                let (k, v) = part
                    .split_once('=')
                    .ok_or(format!("footer part {part:?}"))?;
                footer.insert(k.trim().to_string(), v.trim().to_string());
            }
            continue;
        }
        if !footer_lines.is_empty() {
            return Err(format!("row after the footer: {t:?}"));
        }
        let cols: Vec<&str> = t.split_whitespace().collect();
        if cols.len() != 3 && cols.len() != 4 {
            return Err(format!("row {t:?}: {} columns", cols.len()));
        }
        let num = |s: &str| s.parse::<f64>().map_err(|e| format!("{s:?} in {t:?}: {e}"));
        rows.push(HgrmRow {
            value: num(cols[0])?,
            percentile: num(cols[1])?,
            total: cols[2].parse().map_err(|e| format!("{t:?}: {e}"))?,
            inverse: cols.get(3).map(|c| num(c)).transpose()?,
        });
    }
    if footer_lines != ["Mean", "Max", "Buckets"] {
        return Err(format!("footer lines {footer_lines:?}"));
    }
    let get = |k: &str| -> Result<&String, String> { footer.get(k).ok_or(format!("no {k}")) };
    let f = |k: &str| -> Result<f64, String> {
        get(k)?.parse::<f64>().map_err(|e| format!("{k}: {e}"))
    };
    for k in ["StdDeviation", "Buckets", "SubBuckets"] {
        get(k)?;
    }
    Ok(Hgrm {
        rows,
        mean: f("Mean")?,
        max: f("Max")?,
        total: get("Total count")?
            .parse()
            .map_err(|e| format!("Total count: {e}"))?,
        text: text.to_string(),
    })
}

/// `GET /histograms{query}` as `.hgrm` text, parsed and checked for internal
/// consistency; `count` is what it must hold.
fn hgrm(gw: &Gateway, query: &str, count: u64) -> Hgrm {
    let r = admin(gw, &format!("/histograms{query}"));
    assert_eq!(r.status, 200, "GET /histograms{query}: {r:?}");
    let text = r.body_str();
    let h = parse_hgrm(&text).unwrap_or_else(|e| {
        panic!("GET /histograms{query}: not HdrHistogram's percentile distribution ({e}):\n{text}")
    });
    assert_eq!(
        h.total, count,
        "GET /histograms{query}: footer Total count:\n{text}"
    );
    if count == 0 {
        assert!(h.rows.is_empty(), "no rows for an empty histogram:\n{text}");
        return h;
    }
    assert!(!h.rows.is_empty(), "rows expected:\n{text}");
    let last = h.rows.last().expect("non-empty");
    assert_eq!(
        last.total, count,
        "GET /histograms{query}: the last TotalCount is the count:\n{text}"
    );
    assert_eq!(
        last.percentile, 1.0,
        "the last row is the 100th percentile:\n{text}"
    );
    assert!(
        last.inverse.is_none(),
        "the 100th percentile row has no 1/(1-Percentile) column (infinite):\n{text}"
    );
    assert_eq!(
        h.rows[0].percentile, 0.0,
        "the first row is the 0th percentile:\n{text}"
    );
    for pair in h.rows.windows(2) {
        assert!(
            pair[0].value <= pair[1].value
                && pair[0].percentile <= pair[1].percentile
                && pair[0].total <= pair[1].total,
            "rows must be non-decreasing in Value, Percentile and TotalCount: {pair:?}\n{text}"
        );
    }
    for row in &h.rows[..h.rows.len() - 1] {
        let inverse = row
            .inverse
            .unwrap_or_else(|| panic!("row {row:?} lacks 1/(1-Percentile):\n{text}"));
        let want = 1.0 / (1.0 - row.percentile);
        assert!(
            (inverse - want).abs() <= 0.01 + want * 1e-4,
            "1/(1-Percentile) of {row:?} should be {want:.2}:\n{text}"
        );
    }
    assert!(
        (last.value - h.max).abs() <= 0.001 + h.max * 0.001,
        "the 100th percentile value is the Max:\n{text}"
    );
    assert!(h.mean <= h.max + 0.001, "Mean must not exceed Max:\n{text}");
    h
}

/// The footer's Max (ms) agrees with the JSON's max (µs).
fn assert_same_max(h: &Hgrm, json_h: &Value, what: &str) {
    let max_us = field(json_h, "max", what);
    assert!(
        (h.max * 1000.0 - max_us).abs() <= 1.0 + max_us * 0.001,
        "{what}: .hgrm values are in milliseconds: Max {} ms vs JSON max {max_us} us\n{}",
        h.max,
        h.text
    );
}

// ---------------------------------------------------------------------------------------
// /metrics through the reference Python parser

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition.
struct Prom {
    declared: BTreeMap<String, String>,
    samples: Vec<Sample>,
    text: String,
}

fn py_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

/// A Python 3 that has `prometheus_client` (Debian's package installs it for
/// `/usr/bin/python3`, which a `python3` earlier on PATH may not see).
fn python() -> &'static str {
    static FOUND: OnceLock<Option<String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            ["python3", "/usr/bin/python3"]
                .into_iter()
                .find(|py| {
                    Command::new(py)
                        .args(["-c", "import prometheus_client"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                })
                .map(str::to_string)
        })
        .as_deref()
        .unwrap_or_else(|| {
            panic!(
                "no python3 with prometheus_client found (tried python3, /usr/bin/python3): \
                 install it with `apt-get install python3-prometheus-client`"
            )
        })
}

/// Runs `tests/py/NAME` with `input` on stdin (deadline 30 s); its stdout as JSON.
fn run_python(name: &str, input: &[u8]) -> Value {
    let script = py_script(name);
    let mut child = Command::new(python())
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {} {}: {e}", python(), script.display()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err_reader = thread::spawn(move || {
        let mut out = String::new();
        let _ = stderr.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait python") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} still running after 30 s", script.display());
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    assert!(
        status.success(),
        "{} failed ({status}): {err}",
        script.display()
    );
    serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "{} printed no JSON ({e}): {:?} {err}",
            script.display(),
            String::from_utf8_lossy(&out)
        )
    })
}

/// Parses an exposition with Prometheus' Python parser and asserts it is well formed:
/// accepted, every sample in a declared family, no series twice, valid names.
fn parse_prom(text: &str) -> Prom {
    let v = run_python("prom_parse.py", text.as_bytes());
    assert_eq!(
        v["ok"],
        json!(true),
        "Prometheus' parser refused /metrics: {}\n{text}",
        v["error"]
    );
    let problems = v["problems"].as_array().cloned().unwrap_or_default();
    assert!(
        problems.is_empty(),
        "/metrics is not well-formed text format 0.0.4: {problems:?}\n{text}"
    );
    let untyped = v["untyped"].as_array().cloned().unwrap_or_default();
    assert!(
        untyped.is_empty(),
        "/metrics: samples outside any # TYPE-declared family: {untyped:?}\n{text}"
    );
    let declared: BTreeMap<String, String> = v["declared"]
        .as_object()
        .expect("declared")
        .iter()
        .map(|(k, t)| (k.clone(), t.as_str().unwrap_or("").to_string()))
        .collect();
    let mut samples = Vec::new();
    for fam in v["families"].as_array().expect("families") {
        let kind = fam["type"].as_str().unwrap_or("");
        let fam_name = fam["name"].as_str().unwrap_or("");
        for s in fam["samples"].as_array().expect("samples") {
            let mut name = s["name"].as_str().unwrap_or("").to_string();
            // The parser renames a counter's samples to end in `_total` (OpenMetrics);
            // give them back the name the text used.
            if kind == "counter" && declared.contains_key(fam_name) && name.ends_with("_total") {
                name.truncate(name.len() - "_total".len());
            }
            let value = s["value"].as_f64().unwrap_or_else(|| {
                panic!(
                    "/metrics: sample {name} has a non-finite value {}\n{text}",
                    s["value"]
                )
            });
            let labels = s["labels"]
                .as_object()
                .expect("labels")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
    }
    Prom {
        declared,
        samples,
        text: text.to_string(),
    }
}

impl Prom {
    /// Samples named `name` whose labels include all of `labels`.
    fn select(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The one sample named `name` with these labels.
    fn one(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found = self.select(name, labels);
        assert_eq!(
            found.len(),
            1,
            "/metrics: exactly one {name} with {labels:?} expected, found {found:?}\n{}",
            self.text
        );
        found[0].value
    }

    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.select(name, labels).iter().map(|s| s.value).sum()
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }

    fn assert_type(&self, name: &str, kind: &str) {
        assert_eq!(
            self.declared.get(name).map(String::as_str),
            Some(kind),
            "/metrics: # TYPE {name} {kind} expected\n{}",
            self.text
        );
    }

    /// Asserts nothing of this family (declared or sampled) is present.
    fn assert_absent(&self, family: &str, why: &str) {
        let sampled: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == family || s.name.starts_with(&format!("{family}_")))
            .collect();
        assert!(
            !self.declared.contains_key(family) && sampled.is_empty(),
            "/metrics: no {family} expected ({why}), found {sampled:?}\n{}",
            self.text
        );
    }

    /// The distinct values of `label` on samples named `name`.
    fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.select(name, &[])
            .iter()
            .filter_map(|s| s.labels.get(label).cloned())
            .collect()
    }
}

fn metrics_text(gw: &Gateway) -> String {
    let r = admin(gw, "/metrics");
    assert_eq!(r.status, 200, "GET /metrics: {r:?}");
    r.body_str()
}

fn metrics(gw: &Gateway) -> Prom {
    parse_prom(&metrics_text(gw))
}

/// Waits for the first request in `kong_http_requests_total` and asserts it is the only
/// one, with status `code`.
fn assert_counted_once_as(gw: &Gateway, code: &str) {
    let prom = metrics_when(gw, |p| p.sum("kong_http_requests_total", &[]) >= 1.0);
    let codes: Vec<&str> = prom
        .select("kong_http_requests_total", &[])
        .iter()
        .map(|s| s.labels["code"].as_str())
        .collect();
    assert_eq!(codes, [code], "{}", prom.text);
}

/// Polls `/metrics` until `done` holds; returns the last parse.
fn metrics_when(gw: &Gateway, done: impl Fn(&Prom) -> bool) -> Prom {
    poll(|| metrics(gw), done)
}

/// Checks one Prometheus histogram series (`name` with `labels`): the `le` values are
/// `buckets` then `+Inf`, the counts cumulative, `+Inf` equal to `_count`, a `_sum`; every
/// bucket carries exactly `label_names` plus `le`. Returns `_count`.
fn check_prom_histogram(
    prom: &Prom,
    name: &str,
    labels: &[(&str, &str)],
    label_names: &[&str],
    buckets: &[f64],
) -> f64 {
    let what = format!("{name} {labels:?}");
    let mut rows: Vec<(f64, f64)> = Vec::new();
    let mut inf = None;
    let bucket_labels: BTreeSet<String> = label_names
        .iter()
        .map(|s| s.to_string())
        .chain(["le".to_string()])
        .collect();
    for s in prom.select(&format!("{name}_bucket"), labels) {
        let names: BTreeSet<String> = s.labels.keys().cloned().collect();
        assert_eq!(
            names, bucket_labels,
            "{what}: bucket labels (Kong's)\n{}",
            prom.text
        );
        let le = &s.labels["le"];
        if le == "+Inf" {
            assert!(inf.is_none(), "{what}: two +Inf buckets\n{}", prom.text);
            inf = Some(s.value);
        } else {
            let le: f64 = le
                .parse()
                .unwrap_or_else(|e| panic!("{what}: le={le:?}: {e}\n{}", prom.text));
            rows.push((le, s.value));
        }
    }
    let les: Vec<f64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(les, buckets, "{what}: Kong's buckets\n{}", prom.text);
    for pair in rows.windows(2) {
        assert!(
            pair[0].1 <= pair[1].1,
            "{what}: buckets must be cumulative: {pair:?}\n{}",
            prom.text
        );
    }
    let inf = inf.unwrap_or_else(|| panic!("{what}: no le=\"+Inf\" bucket\n{}", prom.text));
    if let Some(last) = rows.last() {
        assert!(
            last.1 <= inf,
            "{what}: +Inf below the last bucket\n{}",
            prom.text
        );
    }
    let count = prom.one(&format!("{name}_count"), labels);
    assert_eq!(
        inf, count,
        "{what}: +Inf bucket equals _count\n{}",
        prom.text
    );
    let sum = prom.one(&format!("{name}_sum"), labels);
    assert!(sum >= 0.0, "{what}: _sum >= 0\n{}", prom.text);
    count
}

// ---------------------------------------------------------------------------------------
// configs

/// Two services, three routes: `svc-a` (`a-one` /a1, `a-two` /a2) and `svc-b`
/// (`b-one` /b).
fn two_services_config(origin: &Origin, extra: &str) -> String {
    format!(
        r#"_format_version: "3.0"
services:
  - name: svc-a
    url: {u}
    routes:
      - name: a-one
        paths: [/a1]
      - name: a-two
        paths: [/a2]
  - name: svc-b
    url: {u}
    routes:
      - name: b-one
        paths: [/b]
{extra}"#,
        u = origin.url()
    )
}

const ALL_FLAGS: &str = "{status_code_metrics: true, latency_metrics: true, bandwidth_metrics: true, per_consumer: true}";

// ---------------------------------------------------------------------------------------
// /histograms

#[test]
fn histograms_list_every_configured_service_and_route_with_zeros_before_traffic() {
    let origin = Origin::start();
    let gw = start(&two_services_config(&origin, ""));
    let r = admin(&gw, "/histograms");
    assert_eq!(r.status, 200, "GET /histograms: {r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "GET /histograms is JSON: {r:?}"
    );
    let doc = histograms(&gw, "");
    check_document(&doc);
    assert_eq!(
        keys(&doc["overall"]),
        set(&["request", "upstream", "proxy"]),
        "{doc}"
    );
    for m in ["request", "upstream", "proxy"] {
        assert_eq!(
            count(&doc, &["overall", m]),
            0,
            "overall.{m} before traffic: {doc}"
        );
    }
    assert_eq!(
        keys(&doc["services"]),
        set(&["svc-a", "svc-b"]),
        "every configured service is listed (SPEC §5): {doc}"
    );
    assert_eq!(
        keys(&doc["routes"]),
        set(&["a-one", "a-two", "b-one"]),
        "every configured route is listed (SPEC §5): {doc}"
    );
    for (kind, names) in [
        ("services", vec!["svc-a", "svc-b"]),
        ("routes", vec!["a-one", "a-two", "b-one"]),
    ] {
        for name in names {
            assert_eq!(
                keys(&doc[kind][name]),
                set(&["request", "upstream", "proxy"]),
                "{kind}.{name}: {doc}"
            );
            for m in ["request", "upstream", "proxy"] {
                assert_eq!(count(&doc, &[kind, name, m]), 0, "{kind}.{name}.{m}: {doc}");
            }
        }
    }
    // The .hgrm text of an empty histogram: header and footer, no rows.
    hgrm(&gw, "?format=hgrm", 0);
    assert_eq!(origin.requests().len(), 0, "nothing was proxied");
}

#[test]
fn histograms_count_every_request_across_workers_and_connections() {
    let origin = Origin::start();
    let gw = start_with(
        &two_services_config(&origin, ""),
        GatewayOpts::default().workers(2),
    );
    let addr = gw.proxy_addr();
    // Four keep-alive connections, 6 requests each, and fresh connections besides (the
    // kernel spreads those over both workers).
    let plan: [(&str, usize); 4] = [("/a1/x", 6), ("/a1/y", 6), ("/a2", 6), ("/b/z", 6)];
    let handles: Vec<_> = plan
        .iter()
        .map(|&(path, n)| {
            spawn(move || {
                let mut c = Conn::new(addr);
                (0..n)
                    .map(|i| {
                        c.try_send(&raw_get(path, &[]))
                            .map_err(|e| format!("{path} #{i}: {e}"))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for i in 0..4 {
        assert_proxied(
            &get(&gw, "/a2/fresh", &[], "fresh /a2"),
            &format!("fresh /a2 #{i}"),
        );
    }
    for i in 0..8 {
        assert_proxied(&get(&gw, "/b", &[], "fresh /b"), &format!("fresh /b #{i}"));
    }
    for h in handles {
        for r in h.join().expect("client thread") {
            let r = r.unwrap_or_else(|e| panic!("keep-alive client: {e}"));
            assert_proxied(&r, "keep-alive client");
        }
    }
    let (a_one, a_two, b_one) = (12u64, 10u64, 14u64);
    let total = a_one + a_two + b_one;
    let doc = histograms_when(&gw, "", &["overall", "request"], total);
    check_document(&doc);
    for m in ["request", "upstream", "proxy"] {
        assert_eq!(
            count(&doc, &["overall", m]),
            total,
            "overall.{m}.count after {total} proxied requests over two workers: {doc}"
        );
        for (kind, name, want) in [
            ("services", "svc-a", a_one + a_two),
            ("services", "svc-b", b_one),
            ("routes", "a-one", a_one),
            ("routes", "a-two", a_two),
            ("routes", "b-one", b_one),
        ] {
            assert_eq!(
                count(&doc, &[kind, name, m]),
                want,
                "{kind}.{name}.{m}.count: {doc}"
            );
        }
        let services: u64 = ["svc-a", "svc-b"]
            .iter()
            .map(|s| count(&doc, &["services", s, m]))
            .sum();
        let routes: u64 = ["a-one", "a-two", "b-one"]
            .iter()
            .map(|r| count(&doc, &["routes", r, m]))
            .sum();
        assert_eq!(services, total, "services add up to overall ({m}): {doc}");
        assert_eq!(routes, total, "routes add up to overall ({m}): {doc}");
    }
    assert_eq!(
        origin.requests().len() as u64,
        total,
        "the upstream saw every request"
    );
    // Reading does not reset anything.
    let again = histograms(&gw, "");
    for m in ["request", "upstream", "proxy"] {
        assert_eq!(
            count(&again, &["overall", m]),
            total,
            "a second read shows the same count: {again}"
        );
    }
}

#[test]
fn histograms_narrow_to_one_service_or_route() {
    let origin = Origin::start();
    let gw = start(&two_services_config(&origin, ""));
    let mut c = Conn::new(gw.proxy_addr());
    for (path, n) in [("/a1", 3), ("/a2", 2), ("/b", 4)] {
        for _ in 0..n {
            assert_proxied(&c.get(path, &[], "traffic"), path);
        }
    }
    histograms_when(&gw, "", &["overall", "request"], 9);

    let doc = histograms(&gw, "?service=svc-a");
    check_document(&doc);
    assert_eq!(
        keys(&doc["services"]),
        set(&["svc-a"]),
        "?service=svc-a narrows services to it (SPEC §5): {doc}"
    );
    assert_eq!(count(&doc, &["services", "svc-a", "request"]), 5, "{doc}");
    assert_eq!(
        count(&doc, &["overall", "request"]),
        9,
        "overall stays global under ?service= (SPEC §5): {doc}"
    );
    if let Some(routes) = doc["routes"].as_object() {
        for name in routes.keys() {
            assert!(
                ["a-one", "a-two", "b-one"].contains(&name.as_str()),
                "?service=svc-a: unknown route {name}: {doc}"
            );
        }
    }

    let doc = histograms(&gw, "?route=b-one");
    check_document(&doc);
    assert_eq!(
        keys(&doc["routes"]),
        set(&["b-one"]),
        "?route=b-one narrows routes to it (SPEC §5): {doc}"
    );
    assert_eq!(count(&doc, &["routes", "b-one", "request"]), 4, "{doc}");
    assert_eq!(
        count(&doc, &["overall", "request"]),
        9,
        "overall stays global under ?route= (SPEC §5): {doc}"
    );

    for q in ["?service=no-such-service", "?route=no-such-route"] {
        let r = admin(&gw, &format!("/histograms{q}"));
        assert_eq!(
            r.status, 404,
            "GET /histograms{q}: an unknown name is a 404: {r:?}"
        );
    }

    // The text form narrows the same way.
    hgrm(&gw, "?service=svc-a&format=hgrm", 5);
    hgrm(&gw, "?route=a-two&format=hgrm", 2);
    hgrm(&gw, "?route=b-one&format=hgrm&metric=upstream", 4);
    hgrm(&gw, "?service=svc-b&format=hgrm&metric=proxy", 4);

    // A service without a name goes by its host, there and in the query.
    let gw = start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - url: {}\n    routes:\n      - name: unnamed-route\n        paths: [/]\n",
        origin.url()
    ));
    let mut c = Conn::new(gw.proxy_addr());
    assert_proxied(&c.get("/x", &[], "traffic"), "/x");
    histograms_when(&gw, "", &["overall", "request"], 1);
    let doc = histograms(&gw, "?service=127.0.0.1");
    assert_eq!(
        count(&doc, &["services", "127.0.0.1", "request"]),
        1,
        "{doc}"
    );
    hgrm(&gw, "?service=127.0.0.1&format=hgrm", 1);
}

#[test]
fn histograms_hgrm_is_hdrhistogram_percentile_distribution_text() {
    let origin = Origin::start();
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: open
    url: {u}
    routes:
      - name: open-route
        paths: [/open]
  - name: locked
    url: {u}
    routes:
      - name: locked-route
        paths: [/locked]
    plugins:
      - name: jwt
"#,
        u = origin.url()
    );
    let gw = start(&cfg);
    let mut c = Conn::new(gw.proxy_addr());
    for _ in 0..7 {
        assert_proxied(&c.get("/open", &[], "open"), "open");
    }
    for _ in 0..3 {
        let r = c.get("/locked", &[], "locked without a token");
        assert_eq!(r.status, 401, "jwt without a token: {r:?}");
    }
    let doc = histograms_when(&gw, "", &["overall", "request"], 10);
    check_document(&doc);
    assert_eq!(
        count(&doc, &["overall", "upstream"]),
        7,
        "only 7 went upstream: {doc}"
    );
    assert_eq!(count(&doc, &["overall", "proxy"]), 10, "{doc}");

    let h = hgrm(&gw, "?format=hgrm", 10);
    assert_same_max(&h, &doc["overall"]["request"], "overall request");
    let h = hgrm(&gw, "?format=hgrm&metric=request", 10);
    assert_same_max(&h, &doc["overall"]["request"], "metric=request");
    let h = hgrm(&gw, "?format=hgrm&metric=upstream", 7);
    assert_same_max(&h, &doc["overall"]["upstream"], "metric=upstream");
    let h = hgrm(&gw, "?format=hgrm&metric=proxy", 10);
    assert_same_max(&h, &doc["overall"]["proxy"], "metric=proxy");
    hgrm(&gw, "?format=hgrm&route=locked-route&metric=upstream", 0);

    for q in ["?format=hgrm&metric=latency", "?metric=bogus"] {
        let r = admin(&gw, &format!("/histograms{q}"));
        assert_eq!(
            r.status, 400,
            "GET /histograms{q}: a bad metric is a 400: {r:?}"
        );
    }
}

#[test]
fn answers_ringway_generates_on_a_route_are_counted_and_unrouted_requests_are_not() {
    let origin = Origin::start();
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: users
    url: {u}
    routes:
      - name: user-routes
        paths: [/api/users]
    plugins:
      - name: jwt
  - name: limited
    url: {u}
    routes:
      - name: limited-routes
        paths: [/api/limited]
    plugins:
      - name: rate-limiting
        config: {{minute: 2, limit_by: ip}}
  - name: accounts
    url: {u}
    routes:
      - name: account-routes
        paths: [/api/accounts]
"#,
        u = origin.url()
    );
    let gw = start(&cfg);
    let mut c = Conn::new(gw.proxy_addr());
    for _ in 0..3 {
        assert_proxied(&c.get("/api/accounts", &[], "accounts"), "accounts");
    }
    for _ in 0..2 {
        let r = c.get("/api/users", &[], "users without a token");
        assert_eq!(r.status, 401, "jwt: {r:?}");
    }
    let statuses: Vec<u16> = (0..3)
        .map(|_| c.get("/api/limited", &[], "limited").status)
        .collect();
    assert_eq!(statuses, [200, 200, 429], "rate-limiting minute: 2");
    for _ in 0..2 {
        let r = c.get("/nowhere", &[], "unrouted");
        assert_eq!(r.status, 404, "no route: {r:?}");
    }
    let doc = histograms_when(&gw, "", &["routes", "limited-routes", "request"], 3);
    check_document(&doc);
    for (kind, name, request, upstream) in [
        ("routes", "account-routes", 3, 3),
        ("routes", "user-routes", 2, 0),
        ("routes", "limited-routes", 3, 2),
        ("services", "accounts", 3, 3),
        ("services", "users", 2, 0),
        ("services", "limited", 3, 2),
    ] {
        assert_eq!(
            count(&doc, &[kind, name, "request"]),
            request,
            "{kind}.{name}.request counts ringway's own 401/429 too: {doc}"
        );
        assert_eq!(
            count(&doc, &[kind, name, "proxy"]),
            request,
            "{kind}.{name}.proxy: {doc}"
        );
        assert_eq!(
            count(&doc, &[kind, name, "upstream"]),
            upstream,
            "{kind}.{name}.upstream counts only what went upstream: {doc}"
        );
    }
    let routed: u64 = keys(&doc["routes"])
        .iter()
        .map(|r| count(&doc, &["routes", r, "request"]))
        .sum();
    assert_eq!(
        routed, 8,
        "the two unrouted 404s are in no route's histogram: {doc}"
    );
    assert_eq!(
        keys(&doc["routes"]),
        set(&["account-routes", "user-routes", "limited-routes"]),
        "{doc}"
    );
    assert_eq!(count(&doc, &["overall", "upstream"]), 5, "{doc}");
    // SPEC §5 does not say whether `overall` includes requests that matched no route.
    let overall = count(&doc, &["overall", "request"]);
    assert!(
        (8..=10).contains(&overall),
        "overall.request holds the 8 routed requests (and maybe the 2 unrouted): {doc}"
    );
}

/// The one test with a lower bound on latency, and it is causal: the upstream waits
/// 30 ms after reading each request, so ringway cannot have seen an answer sooner.
#[test]
fn a_slow_upstream_is_measured_as_slow() {
    let origin = status_origin();
    let cfg = one_service_config(
        &origin.url(),
        &format!("plugins:\n  - name: prometheus\n    config: {ALL_FLAGS}\n"),
    );
    let gw = start(&cfg);
    let mut c = Conn::new(gw.proxy_addr());
    let floor_ms = SLOW_MS - 1;
    for i in 0..3 {
        let r = c.get("/slow", &[], "slow upstream");
        assert_proxied(&r, "slow upstream");
        let upstream: u64 = r
            .header("x-kong-upstream-latency")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("X-Kong-Upstream-Latency missing: {r:?}"));
        assert!(
            upstream >= floor_ms,
            "request {i}: X-Kong-Upstream-Latency {upstream} ms, but the upstream waited {SLOW_MS} ms before answering: {r:?}"
        );
    }
    let doc = histograms_when(&gw, "", &["routes", "all", "request"], 3);
    check_document(&doc);
    let floor_us = (floor_ms * 1000) as f64;
    for scope in [
        vec!["overall"],
        vec!["routes", "all"],
        vec!["services", "svc"],
    ] {
        for m in ["request", "upstream"] {
            let mut path = scope.clone();
            path.push(m);
            let h = hist(&doc, &path);
            for f in ["min", "p50", "max"] {
                assert!(
                    field(h, f, "slow") >= floor_us,
                    "{}.{f} = {} us, but every request waited {SLOW_MS} ms upstream: {h}",
                    path.join("."),
                    field(h, f, "slow")
                );
            }
            assert!(
                field(h, "mean", "slow") >= floor_us,
                "{}.mean: {h}",
                path.join(".")
            );
        }
    }
    check_consistency(&doc);
    let h = hgrm(&gw, "?format=hgrm&metric=upstream", 3);
    assert!(
        h.rows.iter().all(|r| r.value >= floor_ms as f64),
        "every .hgrm value (ms) is at least {floor_ms}:\n{}",
        h.text
    );
    let prom = metrics_when(&gw, |p| {
        p.sum("kong_upstream_latency_ms_count", &[("route", "all")]) == 3.0
    });
    for name in ["kong_upstream_latency_ms", "kong_request_latency_ms"] {
        let labels = [("service", "svc"), ("route", "all")];
        let n = check_prom_histogram(
            &prom,
            name,
            &labels,
            &["service", "route", "workspace"],
            &UPSTREAM_LATENCY_BUCKETS,
        );
        assert_eq!(n, 3.0, "{name}_count");
        let le25 = prom.one(&format!("{name}_bucket"), &[("route", "all"), ("le", "25")]);
        assert_eq!(
            le25, 0.0,
            "{name}: no request took 25 ms or less (each waited {SLOW_MS} ms)\n{}",
            prom.text
        );
        let sum = prom.one(&format!("{name}_sum"), &labels);
        assert!(
            sum >= 3.0 * floor_ms as f64,
            "{name}_sum {sum} ms for 3 requests of at least {SLOW_MS} ms each\n{}",
            prom.text
        );
    }
}

/// Fast and slow requests on one route: whatever the machine's speed, each request's
/// time includes its upstream's and ringway's, so the extremes keep that order.
#[test]
fn each_requests_time_includes_its_upstream_and_proxy_time() {
    let origin = status_origin();
    let gw = start(&two_services_config(&origin, ""));
    let mut c = Conn::new(gw.proxy_addr());
    for path in [
        "/a1/fast", "/a1/slow", "/a1/fast", "/b/slow", "/a2/fast", "/a1/slow",
    ] {
        assert_proxied(&c.get(path, &[], "mixed"), path);
    }
    let doc = histograms_when(&gw, "", &["overall", "request"], 6);
    check_document(&doc);
    check_consistency(&doc);
    let h = &doc["routes"]["a-one"]["upstream"];
    assert!(
        field(h, "max", "a-one") >= ((SLOW_MS - 1) * 1000) as f64,
        "routes.a-one.upstream.max: two of its requests waited {SLOW_MS} ms upstream: {h}"
    );
}

// ---------------------------------------------------------------------------------------
// /metrics

#[test]
fn metrics_content_type_is_prometheus_text_0_0_4() {
    let origin = Origin::start();
    let gw = start(&one_service_config(&origin.url(), ""));
    let r = admin(&gw, "/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    let ct = r.header("content-type").unwrap_or("").to_ascii_lowercase();
    assert!(
        ct.starts_with("text/plain") && ct.replace(' ', "").contains("version=0.0.4"),
        "GET /metrics must be served as Prometheus text format 0.0.4 \
         (Content-Type: text/plain; version=0.0.4), got {ct:?}"
    );
}

#[test]
fn histograms_hgrm_content_type_is_text() {
    let origin = Origin::start();
    let gw = start(&one_service_config(&origin.url(), ""));
    let r = admin(&gw, "/histograms?format=hgrm");
    assert_eq!(r.status, 200, "{r:?}");
    let ct = r.header("content-type").unwrap_or("").to_ascii_lowercase();
    assert!(
        ct.starts_with("text/plain"),
        "GET /histograms?format=hgrm is plain text, not {ct:?}"
    );
}

#[test]
fn metrics_without_the_plugin_are_ringways_own_series() {
    let origin = Origin::start();
    let gw = start_with(
        &one_service_config(&origin.url(), ""),
        GatewayOpts::default().workers(2),
    );
    for i in 0..3 {
        assert_proxied(&get(&gw, "/x", &[], "traffic"), &format!("request {i}"));
    }
    let prom = metrics_when(&gw, |p| p.sum("ringway_requests_total", &[]) == 3.0);
    for name in prom.declared.keys() {
        assert!(
            name.starts_with("ringway_"),
            "without a prometheus plugin only ringway_* series (SPEC §5), found # TYPE {name}\n{}",
            prom.text
        );
    }
    for s in &prom.samples {
        assert!(
            s.name.starts_with("ringway_"),
            "without a prometheus plugin only ringway_* series, found {s:?}\n{}",
            prom.text
        );
    }
    prom.assert_type("ringway_requests_total", "counter");
    prom.assert_type("ringway_connections_active", "gauge");
    prom.assert_type("ringway_info", "gauge");
    assert_eq!(
        prom.sum("ringway_requests_total", &[]),
        3.0,
        "ringway_requests_total over all workers\n{}",
        prom.text
    );
    assert!(
        prom.has("ringway_connections_active"),
        "ringway_connections_active\n{}",
        prom.text
    );
    let info = prom.select("ringway_info", &[]);
    assert_eq!(info.len(), 1, "one ringway_info\n{}", prom.text);
    assert_eq!(info[0].value, 1.0, "ringway_info is 1\n{}", prom.text);
    assert!(
        info[0].labels.get("version").is_some_and(|v| !v.is_empty()),
        "ringway_info carries the version: {:?}",
        info[0]
    );
    let status = gw.status_json();
    assert_eq!(
        status["server"]["total_requests"].as_f64(),
        Some(prom.sum("ringway_requests_total", &[])),
        "/status and /metrics agree on requests: {status}"
    );
}

#[test]
fn metrics_kong_series_follow_the_traffic() {
    let origin = status_origin();
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: api
    url: {u}
    routes:
      - name: api-route
        paths: [/api]
  - name: secure
    url: {u}
    routes:
      - name: secure-route
        paths: [/secure]
    plugins:
      - name: jwt
consumers:
  - username: alice
    jwt_secrets:
      - key: alice-key
        secret: alice-secret
plugins:
  - name: prometheus
    config: {ALL_FLAGS}
"#,
        u = origin.url()
    );
    let gw = start(&cfg);
    let mut c = Conn::new(gw.proxy_addr());
    // Bytes each way per route, as the client sent and received them.
    let mut sent: BTreeMap<&str, u64> = BTreeMap::new();
    let mut received: BTreeMap<&str, u64> = BTreeMap::new();
    let alice = bearer(&token("alice-key", "alice-secret"));
    let traffic: Vec<(&str, &str, Headers, u16)> = vec![
        ("api-route", "/api/ok", vec![], 200),
        ("api-route", "/api/status/503", vec![], 503),
        ("api-route", "/api/ok", vec![], 200),
        ("api-route", "/api/status/503", vec![], 503),
        ("api-route", "/api/ok", vec![], 200),
        ("secure-route", "/secure", vec![], 401),
        ("secure-route", "/secure", vec![], 401),
        (
            "secure-route",
            "/secure",
            vec![("Authorization", alice.as_str())],
            200,
        ),
    ];
    for (route, path, headers, want) in &traffic {
        let req = raw_get(path, headers);
        let r = c
            .try_send(&req)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status, *want, "GET {path}: {r:?}");
        *sent.entry(route).or_default() += req.len() as u64;
        *received.entry(route).or_default() += (r.head_raw.len() + r.body.len()) as u64;
    }
    let prom = metrics_when(&gw, |p| p.sum("kong_http_requests_total", &[]) == 8.0);

    // kong_http_requests_total{service,route,code,source,workspace,consumer}
    prom.assert_type("kong_http_requests_total", "counter");
    let want_labels = set(&[
        "service",
        "route",
        "code",
        "source",
        "workspace",
        "consumer",
    ]);
    for s in prom.select("kong_http_requests_total", &[]) {
        let names: BTreeSet<String> = s.labels.keys().cloned().collect();
        assert_eq!(names, want_labels, "Kong's labels on {s:?}\n{}", prom.text);
        assert_eq!(s.labels["workspace"], "default", "{s:?}");
    }
    for (service, route, code, source, consumer, n) in [
        ("api", "api-route", "200", "service", "", 3.0),
        ("api", "api-route", "503", "service", "", 2.0),
        ("secure", "secure-route", "401", "kong", "", 2.0),
        ("secure", "secure-route", "200", "service", "alice", 1.0),
    ] {
        let labels = [
            ("service", service),
            ("route", route),
            ("code", code),
            ("source", source),
            ("consumer", consumer),
        ];
        assert_eq!(
            prom.one("kong_http_requests_total", &labels),
            n,
            "kong_http_requests_total {labels:?}\n{}",
            prom.text
        );
    }
    assert_eq!(
        prom.sum("kong_http_requests_total", &[]),
        8.0,
        "every request once\n{}",
        prom.text
    );

    // Latency histograms with Kong's buckets.
    let label_names = ["service", "route", "workspace"];
    for (name, buckets) in [
        ("kong_request_latency_ms", &UPSTREAM_LATENCY_BUCKETS[..]),
        ("kong_kong_latency_ms", &KONG_LATENCY_BUCKETS[..]),
        ("kong_upstream_latency_ms", &UPSTREAM_LATENCY_BUCKETS[..]),
    ] {
        prom.assert_type(name, "histogram");
        let api = check_prom_histogram(
            &prom,
            name,
            &[("service", "api"), ("route", "api-route")],
            &label_names,
            buckets,
        );
        assert_eq!(api, 5.0, "{name}_count for api-route\n{}", prom.text);
        let secure_labels = [("service", "secure"), ("route", "secure-route")];
        if name == "kong_upstream_latency_ms" {
            // Only alice's request went upstream; a series with no samples may be left out.
            if !prom
                .select(&format!("{name}_count"), &secure_labels)
                .is_empty()
            {
                let n = check_prom_histogram(&prom, name, &secure_labels, &label_names, buckets);
                assert_eq!(n, 1.0, "{name}_count for secure-route\n{}", prom.text);
            }
        } else {
            let n = check_prom_histogram(&prom, name, &secure_labels, &label_names, buckets);
            assert_eq!(n, 3.0, "{name}_count for secure-route\n{}", prom.text);
        }
    }

    // kong_bandwidth_bytes{service,route,direction,workspace,consumer}
    prom.assert_type("kong_bandwidth_bytes", "counter");
    let want_labels = set(&["service", "route", "direction", "workspace", "consumer"]);
    for s in prom.select("kong_bandwidth_bytes", &[]) {
        let names: BTreeSet<String> = s.labels.keys().cloned().collect();
        assert_eq!(names, want_labels, "Kong's labels on {s:?}\n{}", prom.text);
    }
    for route in ["api-route", "secure-route"] {
        let ingress = prom.sum(
            "kong_bandwidth_bytes",
            &[("route", route), ("direction", "ingress")],
        );
        let egress = prom.sum(
            "kong_bandwidth_bytes",
            &[("route", route), ("direction", "egress")],
        );
        assert!(
            ingress > 0.0 && egress > 0.0,
            "{route}: bytes both ways\n{}",
            prom.text
        );
        assert_eq!(
            ingress, sent[route] as f64,
            "{route}: ingress = the request bytes the client sent\n{}",
            prom.text
        );
        assert_eq!(
            egress, received[route] as f64,
            "{route}: egress = the response bytes the client received\n{}",
            prom.text
        );
    }
    assert!(
        prom.select(
            "kong_bandwidth_bytes",
            &[("route", "secure-route"), ("consumer", "alice")]
        )
        .len()
            == 2,
        "per_consumer: alice's bytes on their own rows (ingress and egress)\n{}",
        prom.text
    );

    // Kong's node series are there too.
    assert_eq!(
        prom.sum("kong_datastore_reachable", &[]),
        1.0,
        "{}",
        prom.text
    );
    assert!(
        prom.sum("kong_nginx_requests_total", &[]) >= 8.0,
        "kong_nginx_requests_total\n{}",
        prom.text
    );
    let info = prom.select("kong_node_info", &[]);
    assert_eq!(info.len(), 1, "one kong_node_info\n{}", prom.text);
    assert!(
        info[0].labels.contains_key("node_id") && info[0].labels.contains_key("version"),
        "kong_node_info{{node_id,version}}: {:?}",
        info[0]
    );
    // The version Kong's dashboards read is the Kong version `GET /` answers as, and
    // the node id is the one `GET /` gives.
    let node = gw.admin_get("/").json();
    assert_eq!(info[0].labels["version"], node["version"].as_str().unwrap());
    assert_eq!(info[0].labels["node_id"], node["node_id"].as_str().unwrap());
}

#[test]
fn metrics_with_default_flags_have_only_kongs_node_series() {
    let origin = Origin::start();
    let cfg = one_service_config(&origin.url(), "plugins:\n  - name: prometheus\n");
    let gw = start(&cfg);
    for _ in 0..2 {
        assert_proxied(&get(&gw, "/x", &[], "traffic"), "traffic");
    }
    let prom = metrics_when(&gw, |p| p.sum("kong_nginx_requests_total", &[]) >= 2.0);
    assert!(prom.has("kong_node_info"), "kong_node_info\n{}", prom.text);
    assert!(
        prom.has("kong_datastore_reachable"),
        "kong_datastore_reachable\n{}",
        prom.text
    );
    assert_eq!(
        prom.sum("kong_nginx_requests_total", &[]),
        2.0,
        "kong_nginx_requests_total after 2 requests\n{}",
        prom.text
    );
    for family in [
        "kong_http_requests_total",
        "kong_request_latency_ms",
        "kong_kong_latency_ms",
        "kong_upstream_latency_ms",
        "kong_bandwidth_bytes",
    ] {
        prom.assert_absent(family, "Kong's flags all default to false");
    }
    assert!(
        prom.has("ringway_requests_total"),
        "ringway_* series are always there\n{}",
        prom.text
    );
}

#[test]
fn metrics_consumer_label_is_empty_without_per_consumer() {
    let origin = Origin::start();
    let cfg = one_service_config(
        &origin.url(),
        r#"consumers:
  - username: alice
    jwt_secrets:
      - key: alice-key
        secret: alice-secret
plugins:
  - name: jwt
  - name: prometheus
    config: {status_code_metrics: true, bandwidth_metrics: true}
"#,
    );
    let gw = start(&cfg);
    let auth = bearer(&token("alice-key", "alice-secret"));
    for _ in 0..2 {
        let r = get(&gw, "/x", &[("Authorization", &auth)], "alice");
        assert_proxied(&r, "alice");
    }
    let prom = metrics_when(&gw, |p| p.sum("kong_http_requests_total", &[]) == 2.0);
    assert_eq!(
        prom.one(
            "kong_http_requests_total",
            &[("route", "all"), ("code", "200"), ("consumer", "")]
        ),
        2.0,
        "without per_consumer the consumer label is empty\n{}",
        prom.text
    );
    assert_eq!(
        prom.label_values("kong_bandwidth_bytes", "consumer"),
        set(&[""]),
        "without per_consumer the consumer label is empty\n{}",
        prom.text
    );
}

/// Ingress bandwidth counts a chunked upload as it was read, framing and all (nginx's
/// `$request_length`), as it counts a Content-Length one by its length.
#[test]
fn metrics_ingress_counts_a_chunked_body() {
    let origin = Origin::start();
    let cfg = one_service_config(
        &origin.url(),
        "plugins:\n  - name: prometheus\n    config: {bandwidth_metrics: true}\n",
    );
    let gw = start(&cfg);
    let chunk = "z".repeat(5000);
    let req = format!(
        "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n{chunk}\r\n1388\r\n{chunk}\r\n0\r\n\r\n"
    );
    let mut c = Conn::new(gw.proxy_addr());
    let r = c.try_send(req.as_bytes()).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let prom = metrics_when(&gw, |p| {
        p.sum("kong_bandwidth_bytes", &[("direction", "ingress")]) > 0.0
    });
    assert_eq!(
        prom.sum("kong_bandwidth_bytes", &[("direction", "ingress")]),
        req.len() as f64,
        "{}",
        prom.text
    );
}

#[test]
fn metrics_count_jwt_failures_and_rate_limit_rejections() {
    let origin = Origin::start();
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: secure
    url: {u}
    routes:
      - name: secure-route
        paths: [/secure]
    plugins:
      - name: jwt
  - name: limited
    url: {u}
    routes:
      - name: limited-route
        paths: [/limited]
    plugins:
      - name: rate-limiting
        config: {{minute: 2, limit_by: ip}}
consumers:
  - username: alice
    jwt_secrets:
      - key: alice-key
        secret: alice-secret
plugins:
  - name: prometheus
    config: {{status_code_metrics: true}}
"#,
        u = origin.url()
    );
    let gw = start(&cfg);
    let prom = metrics(&gw);
    assert_eq!(
        prom.sum("ringway_jwt_failures_total", &[]),
        0.0,
        "no failures yet\n{}",
        prom.text
    );
    assert_eq!(
        prom.sum("ringway_rate_limit_rejections_total", &[]),
        0.0,
        "no rejections yet\n{}",
        prom.text
    );
    let mut c = Conn::new(gw.proxy_addr());
    for _ in 0..2 {
        let r = c.get("/secure", &[], "no token");
        assert_eq!(r.status, 401, "{r:?}");
    }
    let forged = bearer(&token("alice-key", "not-alices-secret"));
    let r = c.get("/secure", &[("Authorization", &forged)], "bad signature");
    assert_eq!(r.status, 401, "{r:?}");
    let good = bearer(&token("alice-key", "alice-secret"));
    assert_proxied(
        &c.get("/secure", &[("Authorization", &good)], "alice"),
        "alice",
    );
    let statuses: Vec<u16> = (0..5)
        .map(|_| c.get("/limited", &[], "limited").status)
        .collect();
    assert_eq!(statuses, [200, 200, 429, 429, 429], "minute: 2");

    let prom = metrics_when(&gw, |p| {
        p.sum("ringway_jwt_failures_total", &[]) == 3.0
            && p.sum("ringway_rate_limit_rejections_total", &[]) == 3.0
            && p.sum("kong_http_requests_total", &[]) == 9.0
    });
    prom.assert_type("ringway_jwt_failures_total", "counter");
    prom.assert_type("ringway_rate_limit_rejections_total", "counter");
    assert_eq!(
        prom.sum("ringway_jwt_failures_total", &[]),
        3.0,
        "two missing tokens and a bad signature (the valid token is no failure)\n{}",
        prom.text
    );
    let reasons = prom.label_values("ringway_jwt_failures_total", "reason");
    assert!(
        prom.select("ringway_jwt_failures_total", &[])
            .iter()
            .all(|s| s.labels.get("reason").is_some_and(|r| !r.is_empty())),
        "every jwt failure has a reason\n{}",
        prom.text
    );
    assert!(
        reasons.len() >= 2,
        "a missing token and a bad signature are different reasons: {reasons:?}\n{}",
        prom.text
    );
    assert_eq!(
        prom.sum("ringway_rate_limit_rejections_total", &[]),
        3.0,
        "three 429s\n{}",
        prom.text
    );
    // Kong's view of the same answers: ringway's own, so source="kong".
    for (route, code, source, n) in [
        ("secure-route", "401", "kong", 3.0),
        ("secure-route", "200", "service", 1.0),
        ("limited-route", "200", "service", 2.0),
        ("limited-route", "429", "kong", 3.0),
    ] {
        let labels = [("route", route), ("code", code), ("source", source)];
        assert_eq!(
            prom.one("kong_http_requests_total", &labels),
            n,
            "kong_http_requests_total {labels:?}\n{}",
            prom.text
        );
    }
}

#[test]
fn metrics_consumer_label_cardinality_is_capped() {
    let origin = Origin::start();
    let mut consumers = String::from("consumers:\n");
    for i in 1..=4 {
        consumers.push_str(&format!(
            "  - username: c{i}\n    jwt_secrets:\n      - key: key-{i}\n        secret: secret-{i}\n"
        ));
    }
    let cfg = one_service_config(
        &origin.url(),
        &format!(
            "{consumers}plugins:\n  - name: jwt\n  - name: prometheus\n    config: {ALL_FLAGS}\nringway:\n  metrics_label_limit: 2\n"
        ),
    );
    let gw = start(&cfg);
    for i in 1..=4 {
        let auth = bearer(&token(&format!("key-{i}"), &format!("secret-{i}")));
        let r = get(&gw, "/x", &[("Authorization", &auth)], "consumer");
        assert_proxied(&r, &format!("c{i}"));
    }
    let prom = metrics_when(&gw, |p| p.sum("kong_http_requests_total", &[]) == 4.0);
    assert_eq!(
        prom.sum("kong_http_requests_total", &[]),
        4.0,
        "folding labels loses no request\n{}",
        prom.text
    );
    let allowed = set(&["c1", "c2", "c3", "c4", "other"]);
    for name in ["kong_http_requests_total", "kong_bandwidth_bytes"] {
        let values = prom.label_values(name, "consumer");
        assert!(
            values.is_subset(&allowed),
            "{name}: consumer labels {values:?} must be consumers or 'other'\n{}",
            prom.text
        );
        let named = values.iter().filter(|v| *v != "other").count();
        assert!(
            named <= 2,
            "{name}: metrics_label_limit: 2 allows at most 2 consumer values, got {values:?}\n{}",
            prom.text
        );
        assert!(
            values.contains("other"),
            "{name}: consumers beyond the cap fold into 'other': {values:?}\n{}",
            prom.text
        );
    }
}

#[test]
fn metrics_route_labels_fold_alike_in_every_series_and_in_histograms() {
    let origin = Origin::start();
    let mut routes = String::new();
    for i in 1..=4 {
        routes.push_str(&format!("      - name: r{i}\n        paths: [/r{i}]\n"));
    }
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: {}\n    routes:\n{routes}\
         plugins:\n  - name: prometheus\n    config: {ALL_FLAGS}\nringway:\n  metrics_label_limit: 2\n",
        origin.url()
    );
    let gw = start(&cfg);
    for i in 1..=4 {
        assert_proxied(
            &get(&gw, &format!("/r{i}/x"), &[], "route"),
            &format!("r{i}"),
        );
    }
    let prom = metrics_when(&gw, |p| p.sum("kong_http_requests_total", &[]) == 4.0);
    let allowed = set(&["r1", "r2", "r3", "r4", "other"]);
    let mut seen = Vec::new();
    for name in [
        "kong_http_requests_total",
        "kong_bandwidth_bytes",
        "kong_request_latency_ms_count",
    ] {
        let values = prom.label_values(name, "route");
        assert!(
            values.is_subset(&allowed),
            "{name}: {values:?}\n{}",
            prom.text
        );
        let named = values.iter().filter(|v| *v != "other").count();
        assert_eq!(
            named, 2,
            "{name}: two routes keep their labels: {values:?}\n{}",
            prom.text
        );
        assert!(
            values.contains("other"),
            "{name}: {values:?}\n{}",
            prom.text
        );
        seen.push(values);
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "one set of route labels: {seen:?}"
    );
    let doc = histograms(&gw, "");
    let listed: BTreeSet<&str> = doc["routes"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = seen[0].iter().map(String::as_str).collect();
    assert_eq!(listed, expected, "/histograms lists the same labels: {doc}");
    let total: u64 = listed
        .iter()
        .map(|r| count(&doc, &["routes", r, "request"]))
        .sum();
    assert_eq!(total, 4, "{doc}");
    // `other` is asked for as any listed route is.
    let narrowed = histograms(&gw, "?route=other");
    assert_eq!(
        count(&narrowed, &["routes", "other", "request"]),
        2,
        "{narrowed}"
    );
}

/// Kong's plugin counts a request in its log phase, which runs only where the plugin
/// is configured: a service's plugin leaves other services' traffic out of Kong's
/// series (ringway's own series count everything).
#[test]
fn a_service_scoped_prometheus_counts_that_service_only() {
    let origin = Origin::start();
    let gw = start(&format!(
        "{}\n  - name: other\n    url: {}\n    routes:\n      - name: elsewhere\n        paths: [\"/elsewhere\"]\n    plugins:\n      - name: prometheus\n        config: {{status_code_metrics: true, latency_metrics: true, bandwidth_metrics: true}}\n",
        one_service_config(&origin.url(), "").trim_end(),
        origin.url()
    ));
    for path in ["/x", "/elsewhere/y", "/elsewhere/z"] {
        assert_proxied(&get(&gw, path, &[], "traffic"), path);
    }
    let prom = metrics_when(&gw, |p| p.sum("ringway_requests_total", &[]) >= 3.0);
    assert_eq!(
        prom.sum("kong_http_requests_total", &[("service", "other")]),
        2.0,
        "{}",
        prom.text
    );
    for series in [
        "kong_http_requests_total",
        "kong_request_latency_ms_count",
        "kong_bandwidth_bytes",
    ] {
        assert!(
            prom.select(series, &[("service", "svc")]).is_empty(),
            "{series} counts no request of the service without the plugin\n{}",
            prom.text
        );
    }
    assert_eq!(
        prom.sum("kong_request_latency_ms_count", &[("route", "elsewhere")]),
        2.0,
        "{}",
        prom.text
    );
}

/// Kong counts each request with the config that applies to it: a route's own instance
/// (its flags, not those of other instances) wins over the global one there.
#[test]
fn each_route_is_counted_under_the_flags_of_the_instance_that_applies() {
    let origin = Origin::start();
    let gw = start(&format!(
        r#"_format_version: "3.0"
services:
  - name: s1
    url: {u}
    routes:
      - name: r1
        paths: [/r1]
        plugins:
          - name: prometheus
            config: {{status_code_metrics: true}}
  - name: s2
    url: {u}
    routes:
      - name: r2
        paths: [/r2]
    plugins:
      - name: prometheus
        config: {{latency_metrics: true}}
  - name: s3
    url: {u}
    routes:
      - name: quiet
        paths: [/quiet]
        plugins:
          - name: prometheus
            config: {{}}
      - name: loud
        paths: [/loud]
plugins:
  - name: prometheus
    config: {ALL_FLAGS}
"#,
        u = origin.url()
    ));
    for path in ["/r1", "/r1", "/r2", "/r2", "/quiet", "/loud"] {
        assert_proxied(&get(&gw, path, &[], "traffic"), path);
    }
    let prom = metrics_when(&gw, |p| p.sum("ringway_requests_total", &[]) >= 6.0);
    let requests = |route| prom.sum("kong_http_requests_total", &[("route", route)]);
    let latencies = |route| prom.sum("kong_request_latency_ms_count", &[("route", route)]);
    let bandwidth = |route| {
        prom.select("kong_bandwidth_bytes", &[("route", route)])
            .len()
    };
    for (route, want, why) in [
        (
            "r1",
            (2.0, 0.0, 0),
            "its own instance counts status codes only",
        ),
        (
            "r2",
            (0.0, 2.0, 0),
            "its service's instance counts latencies only",
        ),
        (
            "quiet",
            (0.0, 0.0, 0),
            "its own instance has every flag off",
        ),
        ("loud", (1.0, 1.0, 2), "the global instance, every flag"),
    ] {
        assert_eq!(
            (requests(route), latencies(route), bandwidth(route)),
            want,
            "{route}: {why}\n{}",
            prom.text
        );
    }
}

/// An upstream that times out took the time: a 504's wait is the upstream's latency
/// (Kong's `KONG_WAITING_TIME`), not time ringway added.
#[test]
fn a_timed_out_upstream_is_counted_as_upstream_time() {
    let origin =
        Origin::with_handler(|_| Action::Delay(Duration::from_millis(1500), Box::new(Action::Ok)));
    let gw = start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: {}\n    read_timeout: 200\n    retries: 0\n    routes:\n      - name: all\n        paths: [\"/\"]\nplugins:\n  - name: prometheus\n    config: {ALL_FLAGS}\n",
        origin.url()
    ));
    let r = get(&gw, "/slow", &[], "a timed-out upstream");
    assert_eq!(r.status, 504, "{r:?}");
    let header = |name| -> u64 {
        r.header(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name}: {r:?}"))
    };
    assert!(
        header("X-Kong-Upstream-Latency") >= 199 && header("X-Kong-Proxy-Latency") < 199,
        "the wait is the upstream's: {r:?}"
    );
    let doc = histograms_when(&gw, "", &["routes", "all", "request"], 1);
    assert_eq!(count(&doc, &["routes", "all", "upstream"]), 1, "{doc}");
    let upstream = field(hist(&doc, &["routes", "all", "upstream"]), "max", "504");
    let proxy = field(hist(&doc, &["routes", "all", "proxy"]), "max", "504");
    assert!(
        upstream >= 199_000.0 && proxy < upstream,
        "upstream {upstream} us, proxy {proxy} us: {doc}"
    );
    let prom = metrics_when(&gw, |p| {
        p.sum("kong_upstream_latency_ms_count", &[("route", "all")]) == 1.0
    });
    assert!(
        prom.sum("kong_kong_latency_ms_sum", &[("route", "all")])
            < prom.sum("kong_upstream_latency_ms_sum", &[("route", "all")]),
        "{}",
        prom.text
    );
}

#[test]
fn admin_api_post_plugins_prometheus_turns_on_kongs_series() {
    let origin = Origin::start();
    let gw = start(&one_service_config(&origin.url(), ""));
    let prom = metrics(&gw);
    prom.assert_absent("kong_node_info", "no prometheus plugin yet");

    let r = admin_form(&gw, "POST", "/plugins", &[("name", "prometheus")]);
    assert_eq!(
        r.status, 201,
        "POST /plugins --data name=prometheus (SPEC §5): {r:?}"
    );
    let plugin = r.json();
    assert_eq!(plugin["name"], "prometheus", "{plugin}");
    let id = plugin["id"]
        .as_str()
        .unwrap_or_else(|| panic!("the new plugin has an id: {plugin}"))
        .to_string();
    for _ in 0..2 {
        assert_proxied(&get(&gw, "/x", &[], "traffic"), "traffic");
    }
    let prom = metrics(&gw);
    assert!(prom.has("kong_node_info"), "kong_node_info\n{}", prom.text);
    assert!(
        prom.has("kong_nginx_requests_total"),
        "kong_nginx_requests_total\n{}",
        prom.text
    );
    assert_eq!(
        prom.sum("kong_datastore_reachable", &[]),
        1.0,
        "{}",
        prom.text
    );
    prom.assert_absent("kong_http_requests_total", "status_code_metrics is off");

    let r = admin_json(
        &gw,
        "PATCH",
        &format!("/plugins/{id}"),
        &json!({"config": {"status_code_metrics": true}}),
    );
    assert_eq!(
        r.status, 200,
        "PATCH /plugins/{{id}} config.status_code_metrics: {r:?}"
    );
    for _ in 0..3 {
        assert_proxied(&get(&gw, "/x", &[], "traffic"), "traffic");
    }
    let prom = metrics_when(&gw, |p| {
        p.sum(
            "kong_http_requests_total",
            &[("route", "all"), ("code", "200")],
        ) >= 3.0
    });
    assert!(
        prom.sum(
            "kong_http_requests_total",
            &[("route", "all"), ("code", "200")]
        ) >= 3.0,
        "kong_http_requests_total counts the requests after status_code_metrics was turned on\n{}",
        prom.text
    );

    let r = admin_form(&gw, "DELETE", &format!("/plugins/{id}"), &[]);
    assert_eq!(r.status, 204, "DELETE /plugins/{{id}}: {r:?}");
    let prom = metrics(&gw);
    prom.assert_absent("kong_node_info", "the prometheus plugin was deleted");
    assert!(prom.has("ringway_requests_total"), "{}", prom.text);
}

// ---------------------------------------------------------------------------------------
// correlation-id

/// The values of `name` the upstream received on its `i`-th request.
fn upstream_ids(origin: &Origin, i: usize, name: &str) -> Vec<String> {
    let reqs = origin.wait_requests(i + 1, DEADLINE);
    reqs[i]
        .header_all(name)
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// The one value of `name` on the upstream's `i`-th request.
fn upstream_id(origin: &Origin, i: usize, name: &str) -> String {
    let ids = upstream_ids(origin, i, name);
    assert_eq!(
        ids.len(),
        1,
        "upstream request {i}: exactly one {name} header expected, got {ids:?}: {:?}",
        origin.requests()[i]
    );
    ids[0].clone()
}

fn correlation_config(origin: &Origin, config: &str) -> String {
    one_service_config(
        &origin.url(),
        &format!("plugins:\n  - name: correlation-id\n    config: {config}\n"),
    )
}

#[test]
fn correlation_id_defaults_kong_request_id_uuid_counter_not_echoed() {
    let origin = Origin::start();
    let cfg = one_service_config(&origin.url(), "plugins:\n  - name: correlation-id\n");
    let gw = start(&cfg);
    let mut c = Conn::new(gw.proxy_addr());
    let mut responses = Vec::new();
    for _ in 0..2 {
        responses.push(c.get("/x", &[], "keep-alive"));
    }
    responses.push(get(&gw, "/y", &[], "fresh connection"));
    let mut uuids = BTreeSet::new();
    let mut counters = Vec::new();
    for (i, r) in responses.iter().enumerate() {
        assert_proxied(r, "correlation-id");
        assert!(
            r.header("kong-request-id").is_none(),
            "echo_downstream defaults to false: {r:?}"
        );
        let id = upstream_id(&origin, i, "Kong-Request-ID");
        let (uuid, n) = id
            .split_once('#')
            .unwrap_or_else(|| panic!("uuid#counter: '<uuid>#<n>' expected, got {id:?}"));
        assert!(is_uuid(uuid), "uuid#counter: {id:?} starts with a UUID");
        let n: u64 = n
            .parse()
            .unwrap_or_else(|_| panic!("uuid#counter: {id:?} ends with a counter"));
        uuids.insert(uuid.to_string());
        counters.push(n);
    }
    assert_eq!(
        uuids.len(),
        1,
        "one worker: one UUID, a counter per request: {uuids:?}"
    );
    assert!(
        counters.windows(2).all(|w| w[0] < w[1]),
        "the counter grows with each request: {counters:?}"
    );
}

#[test]
fn correlation_id_uuid_generator_custom_header_echoed() {
    let origin = Origin::start();
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {u}
    routes:
      - name: all
        paths: [/]
        plugins:
          - name: correlation-id
            config: {{header_name: X-Request-ID, generator: uuid, echo_downstream: true}}
"#,
        u = origin.url()
    );
    let gw = start(&cfg);
    let mut c = Conn::new(gw.proxy_addr());
    let mut seen = BTreeSet::new();
    for i in 0..3 {
        let r = c.get("/x", &[], "route-scoped correlation-id");
        assert_proxied(&r, "correlation-id");
        let echoed = r.header_all("x-request-id");
        assert_eq!(echoed.len(), 1, "echo_downstream: one X-Request-ID: {r:?}");
        let id = echoed[0].to_string();
        assert!(is_uuid(&id), "generator uuid: a bare UUID, got {id:?}");
        assert_eq!(
            upstream_id(&origin, i, "X-Request-ID"),
            id,
            "the upstream got the ID the client sees"
        );
        assert!(
            upstream_ids(&origin, i, "Kong-Request-ID").is_empty(),
            "header_name replaces Kong-Request-ID"
        );
        seen.insert(id);
    }
    assert_eq!(seen.len(), 3, "a new UUID per request: {seen:?}");
}

/// As Kong's `set_header`: the echoed ID replaces an upstream's header of that name, so
/// the client sees one ID, the one the upstream was sent.
#[test]
fn correlation_id_echo_replaces_the_upstreams_header() {
    let origin = Origin::raw(
        b"HTTP/1.1 200 OK\r\nx-request-id: the-upstreams-own\r\nContent-Length: 2\r\n\r\nok",
    );
    let gw = start(&correlation_config(
        &origin,
        "{header_name: X-Request-ID, generator: uuid, echo_downstream: true}",
    ));
    let mut c = Conn::new(gw.proxy_addr());
    let r = c.get("/x", &[], "an upstream that sends its own X-Request-ID");
    assert_eq!(r.status, 200, "{r:?}");
    let echoed = r.header_all("x-request-id");
    assert_eq!(echoed.len(), 1, "one X-Request-ID: {r:?}");
    assert!(
        is_uuid(echoed[0]),
        "the generated ID, not the upstream's: {r:?}"
    );
}

#[test]
fn correlation_id_tracker_generator() {
    let origin = Origin::start();
    let gw = start(&correlation_config(
        &origin,
        "{generator: tracker, echo_downstream: true}",
    ));
    let mut c = Conn::new(gw.proxy_addr());
    let mut fields_seen = Vec::new();
    for i in 0..2 {
        let r = c.get("/x", &[], "tracker");
        assert_proxied(&r, "tracker");
        let id = r
            .header("kong-request-id")
            .unwrap_or_else(|| panic!("echoed Kong-Request-ID: {r:?}"))
            .to_string();
        assert_eq!(
            upstream_id(&origin, i, "Kong-Request-ID"),
            id,
            "same ID upstream"
        );
        // Kong: server_addr-server_port-pid-connection-connection_requests-time
        let f: Vec<&str> = id.split('-').collect();
        assert_eq!(
            f.len(),
            6,
            "tracker: addr-port-pid-conn-connreq-time, got {id:?}"
        );
        assert_eq!(f[0], "127.0.0.1", "tracker: server address in {id:?}");
        assert_eq!(
            f[1],
            gw.proxy_addr().port().to_string(),
            "tracker: server port in {id:?}"
        );
        assert_eq!(
            f[2],
            gw.pid().to_string(),
            "tracker: the process id in {id:?}"
        );
        let conn: u64 = f[3]
            .parse()
            .unwrap_or_else(|_| panic!("tracker: connection number in {id:?}"));
        let conn_req: u64 = f[4]
            .parse()
            .unwrap_or_else(|_| panic!("tracker: connection request number in {id:?}"));
        let time: f64 = f[5]
            .parse()
            .unwrap_or_else(|_| panic!("tracker: time in {id:?}"));
        let now = unix_now() as f64;
        assert!(
            (now - 3600.0..=now + 3600.0).contains(&time),
            "tracker: the time (seconds since the epoch) in {id:?}"
        );
        fields_seen.push((conn, conn_req));
    }
    assert_eq!(
        fields_seen[0].0, fields_seen[1].0,
        "one keep-alive connection: same connection number {fields_seen:?}"
    );
    assert_eq!(
        fields_seen[1].1,
        fields_seen[0].1 + 1,
        "the connection's request number counts up {fields_seen:?}"
    );

    // With several workers (one process, one pid) the connection number is still the
    // process's serial: IDs made in the same millisecond on two workers differ.
    let gw = start(&format!(
        "{}ringway:\n  workers: 2\n",
        correlation_config(&origin, "{generator: tracker, echo_downstream: true}")
    ));
    let mut connections = BTreeSet::new();
    for _ in 0..20 {
        let r = get(&gw, "/x", &[], "a fresh connection");
        let id = r.header("kong-request-id").unwrap_or_default().to_string();
        let conn = id.split('-').nth(3).unwrap_or_default().to_string();
        assert!(connections.insert(conn), "a connection number twice: {id}");
    }
}

/// An underscored `header_name` reads the incoming ID as Kong does (`X-Req-ID`), never
/// a client's own `X_Req_ID` (which nginx drops and ringway does not forward): the
/// upstream always gets an ID under the configured name.
#[test]
fn correlation_id_with_an_underscored_header_name_always_reaches_the_upstream() {
    let origin = Origin::start();
    let gw = start(&correlation_config(
        &origin,
        "{header_name: X_Req_ID, generator: uuid, echo_downstream: true}",
    ));
    let r = get(&gw, "/x", &[("X_Req_ID", "client-1")], "an underscored ID");
    assert_proxied(&r, "an underscored ID");
    let sent = upstream_ids(&origin, 0, "x_req_id");
    assert_eq!(sent.len(), 1, "one ID upstream: {sent:?}");
    assert!(
        is_uuid(&sent[0]),
        "a generated one, not the client's: {sent:?}"
    );
    assert_eq!(r.header_all("x_req_id"), vec![sent[0].as_str()], "{r:?}");
    let r = get(&gw, "/x", &[("X-Req-ID", "client-2")], "a dashed ID");
    assert_proxied(&r, "a dashed ID");
    assert_eq!(r.header_all("x_req_id"), vec!["client-2"], "kept: {r:?}");
}

#[test]
fn correlation_id_keeps_an_incoming_id() {
    let origin = Origin::start();
    let gw = start(&correlation_config(
        &origin,
        "{generator: uuid, echo_downstream: true}",
    ));
    let cases = [
        ("Kong-Request-ID", "client-supplied-42"),
        ("kong-request-id", "lower-case-name"),
        ("KONG-REQUEST-ID", "abc#7"),
    ];
    for (i, (name, value)) in cases.iter().enumerate() {
        let r = get(&gw, "/x", &[(name, value)], "incoming ID");
        assert_proxied(&r, "incoming ID");
        assert_eq!(
            upstream_ids(&origin, i, "kong-request-id"),
            vec![value.to_string()],
            "{name}: {value} reaches the upstream unchanged, once"
        );
        assert_eq!(
            r.header_all("kong-request-id"),
            vec![*value],
            "{name}: echoed as received: {r:?}"
        );
    }
}

/// Only HTTP's whitespace (spaces, tabs) is trimmed from an incoming ID: a non-breaking
/// space is part of it, echoed as the upstream got it.
#[test]
fn correlation_id_keeps_unicode_spaces_of_an_incoming_id() {
    let origin = Origin::start();
    let gw = start(&correlation_config(
        &origin,
        "{generator: uuid, echo_downstream: true}",
    ));
    let mut c = Conn::new(gw.proxy_addr());
    let r = c
        .try_send(
            "GET /x HTTP/1.1\r\nHost: a\r\nKong-Request-ID: \u{a0}nbsp-id\u{a0}\r\n\r\n".as_bytes(),
        )
        .unwrap();
    assert_proxied(&r, "an ID with non-breaking spaces");
    let head = String::from_utf8_lossy(&r.head_raw);
    assert!(
        head.contains("Kong-Request-ID: \u{a0}nbsp-id\u{a0}\r\n"),
        "echoed whole: {head}"
    );
}

#[test]
fn correlation_id_replaces_an_empty_incoming_id() {
    let origin = Origin::start();
    let gw = start(&correlation_config(
        &origin,
        "{generator: uuid, echo_downstream: true}",
    ));
    let r = get(&gw, "/x", &[("Kong-Request-ID", "")], "empty incoming ID");
    assert_proxied(&r, "empty incoming ID");
    let ids = upstream_ids(&origin, 0, "kong-request-id");
    assert_eq!(
        ids.len(),
        1,
        "an empty incoming ID is not kept (SPEC §4: only a non-empty one is): the upstream must get one Kong-Request-ID, the generated one; got {ids:?}: {:?}",
        origin.requests()[0]
    );
    assert!(is_uuid(&ids[0]), "a generated UUID upstream, got {ids:?}");
    assert_eq!(
        r.header_all("kong-request-id"),
        vec![ids[0].as_str()],
        "the generated ID is echoed: {r:?}"
    );
}

#[test]
fn correlation_id_is_echoed_on_ringways_own_answers_with_request_id_in_the_body() {
    let origin = Origin::start();
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: api
    url: {u}
    routes:
      - name: api-route
        paths: [/api]
  - name: down
    url: http://127.0.0.1:{closed}
    retries: 0
    routes:
      - name: down-route
        paths: [/down]
  - name: secure
    url: {u}
    routes:
      - name: secure-route
        paths: [/secure]
    plugins:
      - name: jwt
  - name: limited
    url: {u}
    routes:
      - name: limited-route
        paths: [/limited]
    plugins:
      - name: rate-limiting
        config: {{minute: 1, limit_by: ip}}
plugins:
  - name: correlation-id
    config: {{header_name: X-Request-ID, generator: uuid, echo_downstream: true}}
"#,
        u = origin.url(),
        closed = closed_port()
    );
    let gw = start(&cfg);
    assert_eq!(
        get(&gw, "/limited", &[], "first").status,
        200,
        "the first request is within minute: 1"
    );
    let cases: [(&str, Headers, u16, &str); 8] = [
        (
            "/nowhere",
            vec![],
            404,
            "no Route matched with those values",
        ),
        (
            "/down",
            vec![],
            502,
            "An invalid response was received from the upstream server",
        ),
        ("/secure", vec![], 401, "Unauthorized"),
        ("/limited", vec![], 429, "API rate limit exceeded"),
        (
            "/nowhere",
            vec![("X-Request-ID", "mine-1")],
            404,
            "no Route matched with those values",
        ),
        (
            "/secure",
            vec![("X-Request-ID", "mine-2")],
            401,
            "Unauthorized",
        ),
        // Refused before routing: a path that climbs above the root, a bad escape.
        ("/../x", vec![], 400, "Bad request"),
        (
            "/api/%zz",
            vec![("X-Request-ID", "mine-3")],
            400,
            "Bad request",
        ),
    ];
    for (path, headers, status, message) in cases {
        let r = get(&gw, path, &headers, "generated answer");
        assert_eq!(r.status, status, "GET {path}: {r:?}");
        let echoed = r.header_all("x-request-id");
        assert_eq!(
            echoed.len(),
            1,
            "GET {path} ({status}): the ID is echoed on ringway's own answers too (SPEC §3, Kong): {r:?}"
        );
        let id = echoed[0];
        match headers.first() {
            Some((_, incoming)) => assert_eq!(id, *incoming, "the incoming ID is kept: {r:?}"),
            None => assert!(is_uuid(id), "a generated UUID: {r:?}"),
        }
        assert!(
            r.header("content-type")
                .is_some_and(|v| v.starts_with("application/json")),
            "GET {path}: JSON: {r:?}"
        );
        let body = r.json();
        assert_eq!(body["message"], message, "GET {path}: {body}");
        assert_eq!(
            body["request_id"], id,
            "GET {path}: the body's request_id is the header's value (SPEC §3): {body}"
        );
    }
}

#[test]
fn correlation_id_without_echo_stays_off_the_response() {
    let origin = Origin::start();
    let gw = start(&correlation_config(&origin, "{echo_downstream: false}"));
    let r = get(&gw, "/x", &[], "proxied");
    assert_proxied(&r, "proxied");
    assert!(
        r.header("kong-request-id").is_none(),
        "echo_downstream: false: {r:?}"
    );
    let id = upstream_id(&origin, 0, "Kong-Request-ID");
    assert!(!id.is_empty(), "the upstream still gets the ID");
    // A global correlation-id also gives an unrouted request an ID (SPEC §3): in the body,
    // not in a header.
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {u}
    routes:
      - name: only
        paths: [/only]
plugins:
  - name: correlation-id
"#,
        u = origin.url()
    );
    let gw = start(&cfg);
    let r = get(&gw, "/elsewhere", &[], "unrouted");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(
        r.header("kong-request-id").is_none(),
        "echo_downstream defaults to false, on generated answers too: {r:?}"
    );
    let body = r.json();
    assert_eq!(
        body["message"], "no Route matched with those values",
        "{body}"
    );
    assert!(
        body["request_id"].as_str().is_some_and(|v| !v.is_empty()),
        "the request has an ID, so the body has request_id (SPEC §3): {body}"
    );
}

/// `ringway check` on `yaml`: exit 78 and a stderr line starting with `path`.
fn assert_check_refuses(yaml: &str, path: &str, what: &str) {
    let (code, stderr) = check_file(yaml);
    assert_eq!(
        code,
        Some(78),
        "{what}: `ringway check` exits 78 for an invalid config; stderr:\n{stderr}\nconfig:\n{yaml}"
    );
    assert!(
        stderr.lines().any(|l| l.starts_with(path)),
        "{what}: a problem reported at {path}; stderr:\n{stderr}\nconfig:\n{yaml}"
    );
    assert_no_panic(&stderr);
}

#[test]
fn invalid_correlation_id_and_prometheus_configs_are_refused_with_their_path() {
    let base = r#"_format_version: "3.0"
services:
  - name: svc
    url: http://127.0.0.1:9
    routes:
      - name: all
        paths: [/]
consumers:
  - username: alice
"#;
    let ok = format!(
        "{base}plugins:\n  - name: correlation-id\n    config: {{generator: tracker}}\n  - name: prometheus\n    config: {ALL_FLAGS}\n"
    );
    let (code, stderr) = check_file(&ok);
    assert_eq!(
        code,
        Some(0),
        "a valid config passes `ringway check`: {stderr}\n{ok}"
    );

    let cases = [
        (
            format!("{base}plugins:\n  - name: correlation-id\n    config: {{generator: counter}}\n"),
            "plugins[0].config.generator",
            "unknown generator",
        ),
        (
            format!("{base}plugins:\n  - name: correlation-id\n    config: {{header_name: 'bad header'}}\n"),
            "plugins[0].config.header_name",
            "invalid header name",
        ),
        (
            format!("{base}plugins:\n  - name: correlation-id\n    config: {{colour: red}}\n"),
            "plugins[0].config",
            "unknown field",
        ),
        (
            format!("{base}plugins:\n  - name: correlation-id\n    consumer: alice\n"),
            "plugins[0]",
            "correlation-id scoped to a consumer",
        ),
        (
            format!("{base}    plugins:\n      - name: correlation-id\n"),
            "consumers[0].plugins[0]",
            "correlation-id nested under a consumer",
        ),
        (
            format!("{base}plugins:\n  - name: prometheus\n    config: {{per_route: true}}\n"),
            "plugins[0].config",
            "unknown prometheus flag",
        ),
        (
            format!("{base}plugins:\n  - name: prometheus\n    consumer: alice\n"),
            "plugins[0]",
            "prometheus scoped to a consumer",
        ),
    ];
    for (yaml, path, what) in &cases {
        assert_check_refuses(yaml, path, what);
    }
}

// ---------------------------------------------------------------------------------------
// latency headers

#[test]
fn proxied_responses_carry_kong_latency_headers() {
    let origin = Origin::start();
    let gw = start(&one_service_config(&origin.url(), ""));
    let mut c = Conn::new(gw.proxy_addr());
    for i in 0..3 {
        let r = c.get("/x", &[], "proxied");
        assert_proxied(&r, "proxied");
        for name in ["X-Kong-Upstream-Latency", "X-Kong-Proxy-Latency"] {
            let all = r.header_all(name);
            assert_eq!(all.len(), 1, "request {i}: one {name}: {r:?}");
            assert!(
                all[0].parse::<u64>().is_ok(),
                "request {i}: {name} is a non-negative whole number of ms, got {:?}: {r:?}",
                all[0]
            );
        }
    }
}

/// What ringway answers without proxying (a plugin's 401, a 404) carries Kong's
/// `X-Kong-Response-Latency` instead of the proxied pair.
#[test]
fn answers_without_proxying_carry_the_response_latency() {
    let origin = Origin::start();
    let gw = start(&one_service_config(
        &origin.url(),
        "plugins:\n  - name: jwt\n    route: all\n",
    ));
    let r = get(&gw, "/x", &[], "refused");
    assert_eq!(r.status, 401, "{r:?}");
    let all = r.header_all("X-Kong-Response-Latency");
    assert_eq!(all.len(), 1, "{r:?}");
    assert!(all[0].parse::<u64>().is_ok(), "{r:?}");
    for name in ["X-Kong-Upstream-Latency", "X-Kong-Proxy-Latency"] {
        assert!(r.header(name).is_none(), "not proxied: {r:?}");
    }
}

/// A 503 for an upstream with no target to try is answered without proxying: it
/// carries `X-Kong-Response-Latency`, as Kong's balancer failure does.
#[test]
fn no_target_to_try_carries_the_response_latency() {
    let gw = start(
        "_format_version: \"3.0\"\nupstreams:\n  - name: empty\nservices:\n  - name: s\n    url: http://empty\n    routes:\n      - name: all\n        paths: [/]\n",
    );
    let r = get(&gw, "/x", &[], "no target");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header_all("X-Kong-Response-Latency").len(), 1, "{r:?}");
    for name in ["X-Kong-Upstream-Latency", "X-Kong-Proxy-Latency"] {
        assert!(r.header(name).is_none(), "nothing was tried: {r:?}");
    }
}

/// As Kong, a request meant for the upstream that fails there (a 502 for a refused
/// connect) carries the proxied pair, and on/off follows `latency_headers`.
#[test]
fn upstream_failures_carry_the_proxied_latency_pair() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    for (extra, on) in [("", true), ("ringway:\n  latency_headers: false\n", false)] {
        let gw = start(&one_service_config(&url, extra));
        let r = get(&gw, "/x", &[], "refused connect");
        assert_eq!(r.status, 502, "{r:?}");
        for name in ["X-Kong-Upstream-Latency", "X-Kong-Proxy-Latency"] {
            let all = r.header_all(name);
            assert_eq!(all.len(), usize::from(on), "{name}: {r:?}");
            assert!(all.iter().all(|v| v.parse::<u64>().is_ok()), "{r:?}");
        }
        // Nothing went out: no upstream time, as the records say.
        if on {
            assert_eq!(r.header("X-Kong-Upstream-Latency"), Some("0"), "{r:?}");
        }
        assert!(r.header("X-Kong-Response-Latency").is_none(), "{r:?}");
    }
}

#[test]
fn latency_headers_false_turns_them_off() {
    let origin = Origin::start();
    let gw = start(&one_service_config(
        &origin.url(),
        "plugins:\n  - name: jwt\n    route: all\nringway:\n  latency_headers: false\n",
    ));
    let r = get(&gw, "/x", &[], "refused");
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("X-Kong-Response-Latency").is_none(), "{r:?}");
    let gw = start(&one_service_config(
        &origin.url(),
        "ringway:\n  latency_headers: false\n",
    ));
    let r = get(&gw, "/x", &[], "proxied");
    assert_proxied(&r, "proxied");
    for name in ["X-Kong-Upstream-Latency", "X-Kong-Proxy-Latency"] {
        assert!(
            r.header(name).is_none(),
            "ringway.latency_headers: false removes {name}: {r:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// /status

#[test]
fn status_counters_grow_with_traffic() {
    let origin = Origin::start();
    let gw = start_with(
        &one_service_config(&origin.url(), ""),
        GatewayOpts::default().workers(2),
    );
    let before = gw.status_json();
    // Kong's key, which its health checks probe.
    assert_eq!(before["database"], json!({"reachable": true}), "{before}");
    let n = |v: &Value, k: &str| -> u64 {
        v["server"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("/status server.{k} is a whole number: {v}"))
    };
    let (requests0, accepted0) = (
        n(&before, "total_requests"),
        n(&before, "connections_accepted"),
    );
    for _ in 0..4 {
        assert_proxied(&get(&gw, "/x", &[], "fresh connection"), "fresh connection");
    }
    {
        let mut c = Conn::new(gw.proxy_addr());
        for _ in 0..3 {
            assert_proxied(&c.get("/y", &[], "keep-alive"), "keep-alive");
        }
    }
    let after = poll(
        || gw.status_json(),
        |v| n(v, "total_requests") == requests0 + 7 && n(v, "connections_active") == 0,
    );
    assert_eq!(
        n(&after, "total_requests"),
        requests0 + 7,
        "7 requests: {before} -> {after}"
    );
    assert_eq!(
        n(&after, "connections_accepted"),
        accepted0 + 5,
        "5 connections: {before} -> {after}"
    );
    assert_eq!(
        n(&after, "connections_active"),
        0,
        "every client connection was closed: {after}"
    );
    let prom = metrics(&gw);
    assert_eq!(
        prom.sum("ringway_requests_total", &[]),
        n(&after, "total_requests") as f64,
        "/metrics and /status agree\n{}",
        prom.text
    );
    assert_eq!(
        prom.sum("ringway_connections_accepted_total", &[]),
        n(&after, "connections_accepted") as f64,
        "/metrics and /status agree\n{}",
        prom.text
    );
}

// ---------------------------------------------------------------------------------------
// reading while requests are in flight

#[test]
fn reading_metrics_and_histograms_under_load_never_fails_anything() {
    let origin = Origin::start();
    let cfg = one_service_config(
        &origin.url(),
        &format!("plugins:\n  - name: prometheus\n    config: {ALL_FLAGS}\n"),
    );
    let gw = start_with(&cfg, GatewayOpts::default().workers(2));
    let proxy = gw.proxy_addr();
    let admin_addr = gw.admin_addr();
    let done = Arc::new(AtomicBool::new(false));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let last_metrics: Arc<Mutex<String>> = Arc::default();
    let last_hgrm: Arc<Mutex<String>> = Arc::default();

    let (clients, per_client) = (4usize, 60usize);
    let loaders: Vec<_> = (0..clients)
        .map(|t| {
            let errors = errors.clone();
            spawn(move || {
                let mut c = Conn::new(proxy);
                for i in 0..per_client {
                    if i % 10 == 9 {
                        c = Conn::new(proxy);
                    }
                    match c.try_send(&raw_get(&format!("/load/{t}/{i}"), &[])) {
                        Ok(r) if r.status == 200 && r.body_str() == "ok" => {}
                        Ok(r) => errors
                            .lock()
                            .unwrap()
                            .push(format!("client {t} request {i}: {r:?}")),
                        Err(e) => errors
                            .lock()
                            .unwrap()
                            .push(format!("client {t} request {i}: {e}")),
                    }
                }
            })
        })
        .collect();

    let metrics_reader = {
        let (done, errors, last) = (done.clone(), errors.clone(), last_metrics.clone());
        spawn(move || {
            let mut reads = 0usize;
            loop {
                let finished = done.load(Ordering::SeqCst);
                match try_get(admin_addr, "/metrics", &[]) {
                    Ok(r) if r.status == 200 => {
                        let body = r.body_str();
                        if !body.contains("ringway_requests_total") || !body.ends_with('\n') {
                            errors.lock().unwrap().push(format!("odd /metrics: {body}"));
                        }
                        *last.lock().unwrap() = body;
                    }
                    Ok(r) => errors.lock().unwrap().push(format!("GET /metrics: {r:?}")),
                    Err(e) => errors.lock().unwrap().push(format!("GET /metrics: {e}")),
                }
                reads += 1;
                if finished {
                    return reads;
                }
            }
        })
    };
    let histograms_reader = {
        let (done, errors, last) = (done.clone(), errors.clone(), last_hgrm.clone());
        spawn(move || {
            let mut reads = 0usize;
            let mut seen = 0u64;
            loop {
                let finished = done.load(Ordering::SeqCst);
                match try_get(admin_addr, "/histograms", &[]) {
                    Ok(r) if r.status == 200 => match serde_json::from_slice::<Value>(&r.body) {
                        Ok(doc) => {
                            let n = doc["overall"]["request"]["count"].as_u64().unwrap_or(0);
                            if n < seen {
                                errors.lock().unwrap().push(format!(
                                    "overall.request.count went back from {seen} to {n}"
                                ));
                            }
                            seen = n;
                        }
                        Err(e) => errors
                            .lock()
                            .unwrap()
                            .push(format!("/histograms not JSON ({e}): {:?}", r.body_str())),
                    },
                    Ok(r) => errors
                        .lock()
                        .unwrap()
                        .push(format!("GET /histograms: {r:?}")),
                    Err(e) => errors.lock().unwrap().push(format!("GET /histograms: {e}")),
                }
                match try_get(admin_addr, "/histograms?format=hgrm", &[]) {
                    Ok(r) if r.status == 200 => *last.lock().unwrap() = r.body_str(),
                    Ok(r) => errors
                        .lock()
                        .unwrap()
                        .push(format!("GET /histograms?format=hgrm: {r:?}")),
                    Err(e) => errors
                        .lock()
                        .unwrap()
                        .push(format!("GET /histograms?format=hgrm: {e}")),
                }
                reads += 1;
                if finished {
                    return reads;
                }
            }
        })
    };

    for l in loaders {
        l.join().expect("load thread");
    }
    done.store(true, Ordering::SeqCst);
    let metric_reads = metrics_reader.join().expect("metrics reader");
    let histogram_reads = histograms_reader.join().expect("histograms reader");
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} failures while /metrics and /histograms were read under load (first 5): {:#?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(metric_reads >= 1 && histogram_reads >= 1);

    // What the readers got parses, and the final tables hold every request.
    let text = last_metrics.lock().unwrap().clone();
    parse_prom(&text);
    let text = last_hgrm.lock().unwrap().clone();
    parse_hgrm(&text).unwrap_or_else(|e| panic!(".hgrm read under load ({e}):\n{text}"));
    let total = (clients * per_client) as u64;
    let doc = histograms_when(&gw, "", &["overall", "request"], total);
    check_document(&doc);
    assert_eq!(
        count(&doc, &["overall", "request"]),
        total,
        "every request is in the histograms: {doc}"
    );
    hgrm(&gw, "?format=hgrm", total);
    let prom = metrics_when(&gw, |p| {
        p.sum("kong_http_requests_total", &[]) == total as f64
    });
    assert_eq!(
        prom.one(
            "kong_http_requests_total",
            &[("route", "all"), ("code", "200"), ("source", "service")]
        ),
        total as f64,
        "{}",
        prom.text
    );
}

/// Kong's connection states (nginx's stub_status): `reading` a head that came in parts,
/// `writing` a request in the works, `waiting` between requests, in `/status` and in
/// `kong_nginx_connections_total`.
#[test]
fn connection_states_are_reading_writing_and_waiting() {
    let origin = Origin::with_handler(|ctx| {
        if ctx.req.target.starts_with("/slow") {
            Action::Delay(Duration::from_secs(3), Box::new(Action::Ok))
        } else {
            Action::Ok
        }
    });
    let cfg = one_service_config(&origin.url(), "plugins:\n  - name: prometheus\n");
    let gw = start(&cfg);
    // Waiting: a keep-alive connection after its request.
    let mut idle = Conn::new(gw.proxy_addr());
    assert_eq!(idle.get("/fast", &[], "a request").status, 200);
    // Reading: a head's first bytes.
    let reading = std::net::TcpStream::connect(gw.proxy_addr()).unwrap();
    std::io::Write::write_all(&mut &reading, b"GET /partial HTTP/1.1\r\n").unwrap();
    // Writing: a request the upstream works on.
    let writing = std::net::TcpStream::connect(gw.proxy_addr()).unwrap();
    std::io::Write::write_all(&mut &writing, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let states = |gw: &Gateway| {
        let server = gw.status_json()["server"].clone();
        (
            server["connections_reading"].as_u64(),
            server["connections_writing"].as_u64(),
            server["connections_waiting"].as_u64(),
        )
    };
    let settled = wait_for(Duration::from_secs(2), || {
        (states(&gw) == (Some(1), Some(1), Some(1))).then_some(())
    });
    assert!(settled.is_some(), "{:?}: {}", states(&gw), gw.status_json());
    let prom = metrics_when(&gw, |_| true);
    for state in ["reading", "writing", "waiting"] {
        let value = prom.sum("kong_nginx_connections_total", &[("state", state)]);
        assert_eq!(value, 1.0, "{state}: {}", prom.text);
    }
    drop((reading, writing));
}

/// A client that resets its connection while the upstream works gets none of the answer:
/// counted as nginx counts a client gone before its response, 499, not the upstream's 200.
#[test]
fn a_client_gone_before_its_response_is_counted_as_499() {
    let origin =
        Origin::with_handler(|_| Action::Delay(Duration::from_millis(300), Box::new(Action::Ok)));
    let cfg = one_service_config(
        &origin.url(),
        "plugins:\n  - name: prometheus\n    config: {status_code_metrics: true}\n",
    );
    let gw = start(&cfg);
    let stream = std::net::TcpStream::connect(gw.proxy_addr()).unwrap();
    std::io::Write::write_all(&mut &stream, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // A reset, not a FIN: SO_LINGER 0 then close.
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
    assert_counted_once_as(&gw, "499");
}

/// A client that closes its connection while a slow upstream works is noticed while it
/// waits (as nginx's wait notices it), not when the answer comes: its connection slot is
/// free at once, and it is counted as 499.
#[test]
fn a_client_that_leaves_during_a_slow_upstream_frees_its_slot_at_once() {
    let origin =
        Origin::with_handler(|_| Action::Delay(Duration::from_secs(5), Box::new(Action::Ok)));
    let cfg = one_service_config(
        &origin.url(),
        "plugins:\n  - name: prometheus\n    config: {status_code_metrics: true}\n",
    );
    let gw = start(&cfg);
    let stream = std::net::TcpStream::connect(gw.proxy_addr()).unwrap();
    std::io::Write::write_all(&mut &stream, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let active = |gw: &Gateway| gw.status_json()["server"]["connections_active"].as_u64();
    let busy = wait_for(Duration::from_secs(3), || {
        (active(&gw) == Some(1)).then_some(())
    });
    assert!(busy.is_some(), "the request is in flight");
    let left = std::time::Instant::now();
    drop(stream);
    let freed = wait_for(Duration::from_secs(3), || {
        (active(&gw) == Some(0)).then_some(())
    });
    assert!(
        freed.is_some(),
        "the slot is held after the client left: {}",
        gw.status_json()
    );
    assert!(
        left.elapsed() < Duration::from_secs(3),
        "{:?}",
        left.elapsed()
    );
    assert_counted_once_as(&gw, "499");
    // The wait was the upstream's, not time the gateway added (as a timeout's is).
    let doc = histograms_when(&gw, "", &["overall", "request"], 1);
    assert_eq!(count(&doc, &["overall", "upstream"]), 1, "{doc}");
    let proxy_max = doc["overall"]["proxy"]["max"].as_u64().unwrap_or(u64::MAX);
    let upstream_max = doc["overall"]["upstream"]["max"].as_u64().unwrap_or(0);
    assert!(proxy_max < upstream_max, "{doc}");
}

/// A client that leaves while the gateway is still connecting to the upstream (here a TLS
/// handshake the upstream never answers) ends the attempt and the retries after it, as
/// nginx gives up: its slot is free at once, no further connection is made, and it is
/// counted as 499, not as the target's failure.
#[test]
fn a_client_that_leaves_during_the_upstream_connect_ends_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: silent\n    url: https://127.0.0.1:{port}\n    tls_verify: false\n    connect_timeout: 10000\n    retries: 3\n    routes:\n      - name: all\n        paths: [/]\nplugins:\n  - name: prometheus\n    config: {{status_code_metrics: true}}\n"
    );
    let gw = start(&cfg);
    let stream = std::net::TcpStream::connect(gw.proxy_addr()).unwrap();
    std::io::Write::write_all(&mut &stream, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let connecting = wait_for(Duration::from_secs(3), || {
        (accepted.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(())
    });
    assert!(connecting.is_some(), "the handshake is under way");
    let left = std::time::Instant::now();
    drop(stream);
    let active = |gw: &Gateway| gw.status_json()["server"]["connections_active"].as_u64();
    let freed = wait_for(Duration::from_secs(3), || {
        (active(&gw) == Some(0)).then_some(())
    });
    assert!(freed.is_some(), "the slot is held: {}", gw.status_json());
    assert!(
        left.elapsed() < Duration::from_secs(3),
        "{:?}",
        left.elapsed()
    );
    assert_counted_once_as(&gw, "499");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "no retry for a client that left"
    );
}

/// A client that goes away in the middle of its body is counted as nginx logs it, 499,
/// never as a status 0.
#[test]
fn a_client_gone_mid_body_is_counted_as_499() {
    let origin = Origin::start();
    let cfg = one_service_config(
        &origin.url(),
        "plugins:\n  - name: prometheus\n    config: {status_code_metrics: true}\n",
    );
    let gw = start(&cfg);
    let mut c = gw.client();
    c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten b")
        .unwrap();
    c.shutdown_write();
    assert!(c.closed_within(Duration::from_secs(5)));
    assert_counted_once_as(&gw, "499");
}
