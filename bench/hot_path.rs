//! Micro-benchmarks of the per-request hot units, each beside a naive baseline:
//! parsing a request head, choosing a route, writing the response head, and writing an
//! access-log line.
//!
//! Run with `cargo bench --bench hot_path`. The baselines are what a straightforward
//! implementation would do (owned strings, maps, a search per request); they show what
//! the zero-copy, precomputed design buys, not a target to beat by a margin.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ringway::accesslog::Entry;
use ringway::config::{Config, NodeOverrides};
use ringway::http::{framing, HeadScanner, HeadStatus};
use ringway::proxy::request::{prepare, ClientInfo};
use ringway::proxy::response::rewrite;
use ringway::proxy::Snapshot;

const REQUEST: &[u8] = b"GET /api/users/12345?fields=name,email HTTP/1.1\r\n\
Host: api.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) bench/1.0\r\n\
Accept: application/json\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Authorization: Bearer eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk\r\n\
Connection: keep-alive\r\n\
X-Request-Id: 4f1c2a0e-9d7b-4c1e-8f6a-2b3c4d5e6f70\r\n\r\n";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Sat, 28 Nov 2026 13:50:12 GMT\r\n\
Content-Type: application/json\r\n\
Content-Length: 96\r\n\
Connection: keep-alive\r\n\
Keep-Alive: timeout=5\r\n\
Cache-Control: no-store\r\n\
X-Upstream-Conn: 17\r\n\r\n";

/// Fifty services with a route each, in the shapes real configs use.
fn snapshot() -> Snapshot {
    let mut yaml = String::from("_format_version: \"3.0\"\nservices:\n");
    for i in 0..50 {
        yaml.push_str(&format!(
            "  - name: svc{i}\n    url: http://127.0.0.1:9001/v{i}\n    routes:\n      - name: r{i}\n        paths: [/api/{}{i}]\n",
            if i % 2 == 0 { "items" } else { "orders" }
        ));
        if i % 10 == 0 {
            yaml.push_str(&format!("        hosts: [\"*.tenant{i}.example.com\"]\n"));
        }
    }
    yaml.push_str("  - name: users\n    url: http://127.0.0.1:9001/u\n    routes:\n      - name: users\n        paths: [/api/users]\n      - name: user-by-id\n        paths: [\"~/api/users/\\\\d+$\"]\n        methods: [GET]\n");
    Snapshot::new(
        Config::from_bytes(yaml.as_bytes(), &NodeOverrides::default()).expect("bench config"),
    )
}

fn client() -> ClientInfo {
    ClientInfo {
        ip: "192.0.2.10".into(),
        port: "8000".into(),
        local_port: 8000,
        trusted: false,
        https: false,
        ..Default::default()
    }
}

/// Naive parsing: owned strings in a map, as a quick hand-written server would.
fn naive_parse(raw: &[u8]) -> Option<(String, String, HashMap<String, String>)> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let mut headers = HashMap::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
    }
    Some((method, target, headers))
}

fn parse(c: &mut Criterion) {
    let limits = snapshot().config.node.limits;
    let mut group = c.benchmark_group("parse_request_head");
    group.bench_function("ringway (scan + httparse + framing)", |b| {
        b.iter(|| {
            let raw = black_box(REQUEST);
            let mut scanner = HeadScanner::new();
            let Ok(HeadStatus::Complete { end, .. }) = scanner.scan(raw, &limits) else {
                panic!()
            };
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            req.parse(&raw[..end]).unwrap();
            black_box(framing::request(req.version.unwrap(), req.headers).unwrap());
        })
    });
    group.bench_function("naive (String + HashMap)", |b| {
        b.iter(|| black_box(naive_parse(black_box(REQUEST))))
    });
    group.finish();
}

/// Naive routing: every route checked and its priority recomputed per request.
fn naive_route(config: &Config, method: &str, path: &str) -> Option<usize> {
    let mut best: Option<(usize, (usize, usize))> = None;
    for (i, route) in config.routes.iter().enumerate() {
        if !route.methods.is_empty() && !route.methods.iter().any(|m| m == method) {
            continue;
        }
        for p in &route.paths {
            let (hit, weight) = match p {
                ringway::config::PathMatch::Prefix(prefix) => {
                    (path.starts_with(prefix.as_str()), (0, prefix.len()))
                }
                ringway::config::PathMatch::Regex(re) => (re.is_match(path), (1, 0)),
            };
            if hit && route.hosts.is_empty() && best.is_none_or(|(_, w)| weight > w) {
                best = Some((i, weight));
            }
        }
    }
    best.map(|(i, _)| i)
}

fn route(c: &mut Criterion) {
    let snap = snapshot();
    let mut group = c.benchmark_group("route_decision");
    group.bench_function("ringway (precomputed priority order)", |b| {
        b.iter(|| {
            let view = ringway::route::RequestView {
                method: "GET",
                path: black_box("/api/orders49/7"),
                host: Some("api.example.com"),
                headers: &[],
                https: false,
                port: 8000,
            };
            black_box(snap.router.select(&snap.config.routes, &view))
        })
    });
    group.bench_function("naive (priority computed per request)", |b| {
        b.iter(|| {
            black_box(naive_route(
                &snap.config,
                "GET",
                black_box("/api/orders49/7"),
            ))
        })
    });
    group.bench_function(
        "ringway whole request step (parse + route + upstream head)",
        |b| {
            let info = client();
            let mut out = Vec::with_capacity(4096);
            b.iter(|| {
                out.clear();
                black_box(prepare(black_box(REQUEST), &info, &snap, 0, None, &mut out).unwrap());
            })
        },
    );
    group.finish();
}

/// Naive head writing: parse into a map, then `format!` each line.
fn naive_rewrite(raw: &[u8]) -> String {
    let text = std::str::from_utf8(raw).unwrap();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap().to_owned();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let (n, v) = line.split_once(':').unwrap();
        let lower = n.to_ascii_lowercase();
        if [
            "connection",
            "keep-alive",
            "transfer-encoding",
            "te",
            "trailer",
            "upgrade",
        ]
        .contains(&lower.as_str())
        {
            continue;
        }
        headers.push((n.to_owned(), v.trim().to_owned()));
    }
    let mut out = format!("{status}\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out
}

fn head_writer(c: &mut Criterion) {
    let snap = snapshot();
    let info = client();
    let mut scratch = Vec::new();
    let exchange = prepare(REQUEST, &info, &snap, 0, None, &mut scratch).unwrap();
    let mut group = c.benchmark_group("response_head_writer");
    group.bench_function("ringway (rewrite into reused buffer)", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            out.clear();
            black_box(
                rewrite(
                    black_box(RESPONSE),
                    &exchange,
                    true,
                    &Default::default(),
                    &mut out,
                )
                .unwrap(),
            );
        })
    });
    group.bench_function("naive (String + format!)", |b| {
        b.iter(|| black_box(naive_rewrite(black_box(RESPONSE))))
    });
    group.finish();
}

/// One access-log line, as a worker appends it to its batch.
fn access_log_line(c: &mut Criterion) {
    let scope = ringway::accesslog::scope_json("origin", "plain");
    let entry = Entry {
        time: Duration::from_millis(1_795_996_800_123),
        client_ip: "127.0.0.1",
        method: "GET",
        path: "/plain/size/100",
        status: 200,
        request_us: 187,
        upstream_us: Some(142),
        proxy_us: 31,
        scope: Some(&scope),
        upstream: Some("127.0.0.1:8080"),
        consumer: None,
        request_id: Some("6f1c3a52-8d0e-4b7a-9c55-2e4f0a1b7d93"),
        bytes_in: 112,
        bytes_out: 287,
    };
    let mut group = c.benchmark_group("access_log_line");
    group.bench_function("ringway (Entry::write into a batch)", |b| {
        let mut out = Vec::with_capacity(64 * 1024);
        b.iter(|| {
            if out.len() > 60 * 1024 {
                out.clear();
            }
            black_box(&entry).write(&mut out);
        })
    });
    // The usual way: a derived `Serialize` and serde_json (the time handed to it already
    // formatted, which favours it).
    #[derive(serde::Serialize)]
    struct Line<'a> {
        time: &'a str,
        client_ip: &'a str,
        method: &'a str,
        path: &'a str,
        status: u16,
        request_us: u64,
        upstream_us: Option<u64>,
        proxy_us: u64,
        service: Option<&'a str>,
        route: Option<&'a str>,
        upstream: Option<&'a str>,
        consumer: Option<&'a str>,
        request_id: Option<&'a str>,
        bytes_in: u64,
        bytes_out: u64,
    }
    group.bench_function("serde_json (derived Serialize)", |b| {
        let mut out = Vec::with_capacity(64 * 1024);
        b.iter(|| {
            if out.len() > 60 * 1024 {
                out.clear();
            }
            let e = black_box(&entry);
            let line = Line {
                time: "2026-11-29T00:00:00.123Z",
                client_ip: e.client_ip,
                method: e.method,
                path: e.path,
                status: e.status,
                request_us: e.request_us,
                upstream_us: e.upstream_us,
                proxy_us: e.proxy_us,
                service: Some("origin"),
                route: Some("plain"),
                upstream: e.upstream,
                consumer: e.consumer,
                request_id: e.request_id,
                bytes_in: e.bytes_in,
                bytes_out: e.bytes_out,
            };
            serde_json::to_writer(&mut out, &line).unwrap();
            out.push(b'\n');
        })
    });
    group.finish();
}

criterion_group!(benches, parse, route, head_writer, access_log_line);
criterion_main!(benches);
