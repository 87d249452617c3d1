//! Strict HTTP/1.1 framing (SPEC §3 "Framing is strict" and "Limits"), table-driven: one
//! byte string per case, each with the SPEC's status, a closed connection, and nothing (or,
//! for errors inside a chunked body, never a complete request) at the upstream.

mod support;

use std::time::{Duration, Instant};

use support::*;

/// Framing tests allow 2 s for a head, so a gateway that waits for more bytes instead of
/// rejecting answers 408 here (and fails the case) instead of hanging.
const RINGWAY_SECTION: &str =
    "ringway:\n  client_header_timeout: 2000\n  client_body_timeout: 2000\n";

fn gateway_for(o: &Origin, extra: &str) -> Gateway {
    Gateway::start(&one_service_config(&o.url(), extra))
}

struct Outcome {
    status: Option<u16>,
    detail: String,
    closed: bool,
}

/// Sends `bytes` on a fresh connection; reads one response; waits for the close.
fn probe(addr: std::net::SocketAddr, bytes: Vec<u8>) -> Outcome {
    let mut c = match Client::try_connect(addr) {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                status: None,
                detail: format!("connect: {e}"),
                closed: false,
            }
        }
    };
    let _ = c.send(&bytes);
    match c.read_response_within(Duration::from_secs(6)) {
        Ok(r) if r.status == 200 => Outcome {
            // a success keeps the connection; no need to wait for a close
            status: Some(200),
            detail: format!("{r:?}"),
            closed: false,
        },
        Ok(r) => {
            let closed = match c.wait_close(CLOSE_DEADLINE) {
                CloseState::Closed => true,
                CloseState::Open => false,
                CloseState::Data(_) => false,
            };
            Outcome {
                status: Some(r.status),
                detail: format!("{r:?}"),
                closed,
            }
        }
        Err(e) => Outcome {
            status: None,
            detail: format!("{e:?}"),
            closed: matches!(e, ReadErr::Closed(_) | ReadErr::Io(..)),
        },
    }
}

/// Runs every case concurrently (each on its own connection) and returns the outcomes in order.
fn run_cases(addr: std::net::SocketAddr, cases: &[(String, Vec<u8>)]) -> Vec<Outcome> {
    let handles: Vec<_> = cases
        .iter()
        .map(|(_, bytes)| {
            let b = bytes.clone();
            spawn(move || probe(addr, b))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("probe thread"))
        .collect()
}

fn expand(name: &str, template: &str) -> (String, Vec<u8>) {
    (
        name.to_string(),
        template
            .replace("{P}", &format!("/case-{name}"))
            .into_bytes(),
    )
}

/// Malformed heads: (name, request with `{P}` for the target, expected status).
/// SPEC §3: 400 (501 for other transfer codings) and close, sending the upstream nothing.
const HEAD_CASES: &[(&str, &str, u16)] = &[
    // Content-Length / Transfer-Encoding
    ("cl-and-te", "POST {P} HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 400),
    ("te-and-cl", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("cl-differ-lines", "POST {P} HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("cl-differ-list", "POST {P} HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!", 400),
    ("cl-plus", "POST {P} HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400),
    ("cl-minus", "POST {P} HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\nhello", 400),
    ("cl-hex", "POST {P} HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n0123456789abcdef", 400),
    ("cl-empty", "POST {P} HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400),
    ("cl-empty-then-valid", "GET {P} HTTP/1.1\r\nHost: a\r\ncontent-length: \r\ncontent-length: 5\r\n\r\nhello", 400),
    ("cl-overflow", "POST {P} HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\nhello", 400),
    // Past a signed 64-bit length, which upstreams (and nginx) parse into.
    ("cl-over-i64", "POST {P} HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\nhello", 400),
    ("cl-underscore", "POST {P} HTTP/1.1\r\nHost: a\r\nContent-Length: 1_0\r\n\r\n0123456789", 400),
    ("cl-space-inside", "POST {P} HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\nhello", 400),
    ("te-chunked-not-final", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    ("te-chunked-twice", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-chunked-two-lines", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-comma-chunked-with-cl", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("te-http10-with-cl", "POST {P} HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("te-gzip", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    ("te-gzip-chunked", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("te-gzip-chunked-with-cl", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 501),
    ("te-gzip-with-cl", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello", 501),
    ("te-identity", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501),
    ("te-xchunked", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
    // header syntax
    // As nginx: a method is upper-case letters, `_` and `-` (`post` would pass by a
    // route limited to POST, and its jwt, to a backend that reads it as POST).
    ("method-lower", "post {P} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 400),
    ("method-mixed", "Get {P} HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("method-digit", "G3T {P} HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("ws-before-colon", "GET {P} HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", 400),
    ("ws-before-colon-te", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("tab-before-colon", "GET {P} HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n", 400),
    ("obs-fold", "GET {P} HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400),
    ("obs-fold-tab", "GET {P} HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", 400),
    ("bare-cr-in-value", "GET {P} HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400),
    ("bare-lf-everywhere", "GET {P} HTTP/1.1\nHost: a\n\n", 400),
    ("bare-lf-one-line", "GET {P} HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", 400),
    ("nul-in-value", "GET {P} HTTP/1.1\r\nHost: a\r\nX-A: b\u{0}c\r\n\r\n", 400),
    ("nul-in-host", "GET {P} HTTP/1.1\r\nHost: a\u{0}.evil.example\r\n\r\n", 400),
    ("ctl-in-name", "GET {P} HTTP/1.1\r\nHost: a\r\nX\u{1}A: b\r\n\r\n", 400),
    ("no-colon", "GET {P} HTTP/1.1\r\nHost: a\r\nX-A b\r\n\r\n", 400),
    ("empty-name", "GET {P} HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400),
    ("name-split-across-lines", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-\r\nEncoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("whitespace-line-after-request-line", "GET {P} HTTP/1.1\r\n \r\nHost: a\r\n\r\n", 400),
    ("first-header-leading-space", "GET {P} HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    ("later-header-leading-space", "GET {P} HTTP/1.1\r\nHost: a\r\n X-A: b\r\n\r\n", 400),
    // Host
    ("missing-host-11", "GET {P} HTTP/1.1\r\nX-A: b\r\n\r\n", 400),
    ("duplicate-host-identical", "GET {P} HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    ("duplicate-host-different", "GET {P} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    // RFC 9112 §3.2: an invalid Host value is a 400 (routing and the upstream's Host
    // must not read it differently).
    ("host-port-not-digits", "GET {P} HTTP/1.1\r\nHost: a:evil.com\r\n\r\n", 400),
    ("host-two-ports", "GET {P} HTTP/1.1\r\nHost: a:1:2\r\n\r\n", 400),
    ("host-unclosed-literal", "GET {P} HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
    // as nginx refuses them (and so Kong): an empty label, or only the root's dot
    ("host-empty-label", "GET {P} HTTP/1.1\r\nHost: a..b\r\n\r\n", 400),
    ("host-only-dot", "GET {P} HTTP/1.1\r\nHost: .\r\n\r\n", 400),
    // a path a server reading `\` as `/` would see as another route's
    ("backslash-in-path", "GET /\\admin HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    // not passed on, as nginx (and so Kong) answers them
    ("connect-origin-form", "CONNECT {P} HTTP/1.1\r\nHost: a\r\n\r\n", 405),
    ("trace", "TRACE {P} HTTP/1.1\r\nHost: a\r\n\r\n", 405),
    ("host-empty", "GET {P} HTTP/1.1\r\nHost: \r\n\r\n", 400),
    ("host-port-only", "GET {P} HTTP/1.1\r\nHost: :80\r\n\r\n", 400),
    // request line and version
    ("version-1-32", "GET {P} HTTP/1.32\r\nHost: a\r\n\r\n", 400),
    ("version-1", "GET {P} HTTP/1\r\nHost: a\r\n\r\n", 400),
    ("version-01-1", "GET {P} HTTP/01.1\r\nHost: a\r\n\r\n", 400),
    ("version-lowercase", "GET {P} http/1.1\r\nHost: a\r\n\r\n", 400),
    ("http09", "GET {P}\r\n", 400),
    ("double-space", "GET  {P} HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("tabs-in-request-line", "GET\t{P}\tHTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("leading-space-request-line", " GET {P} HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("bad-method-char", "G(T {P} HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("no-version", "GET {P}\r\nHost: a\r\n\r\n", 400),
    ("trailing-space-request-line", "GET {P} HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
];

#[test]
fn malformed_heads_rejected_and_nothing_sent_upstream() {
    let o = Origin::start();
    let gw = gateway_for(&o, RINGWAY_SECTION);
    let cases: Vec<(String, Vec<u8>)> = HEAD_CASES.iter().map(|(n, t, _)| expand(n, t)).collect();
    let outcomes = run_cases(gw.proxy_addr(), &cases);
    let mut failures = Vec::new();
    for (((name, _), (_, _, want)), out) in cases.iter().zip(HEAD_CASES).zip(&outcomes) {
        if out.status != Some(*want) || !out.closed {
            failures.push(format!(
                "{name}: want {want} + close; got status {:?}, closed={} :: {}",
                out.status,
                out.closed,
                out.detail.lines().next().unwrap_or("")
            ));
        }
    }
    // a valid control request still works, and afterwards nothing of any case reached the origin
    let r = gw.get("/control");
    assert_eq!(r.status, 200, "control request: {r:?}");
    std::thread::sleep(Duration::from_millis(200));
    for (conn, raw) in o.raw_received() {
        let text = String::from_utf8_lossy(&raw).to_string();
        for (name, _) in &cases {
            if text.contains(&format!("/case-{name}")) {
                failures.push(format!(
                    "{name}: reached the upstream (origin connection {conn})"
                ));
            }
        }
    }
    let reqs = o.requests();
    let foreign: Vec<_> = reqs.iter().filter(|r| r.target != "/control").collect();
    if !foreign.is_empty() {
        failures.push(format!("origin received unexpected requests: {foreign:?}"));
    }
    let control_bytes: usize = reqs
        .iter()
        .filter(|r| r.target == "/control")
        .map(|r| r.head_raw.len() + r.body.len())
        .sum();
    if o.bytes_received() != control_bytes {
        failures.push(format!(
            "origin received {} bytes, only {control_bytes} were the control request's",
            o.bytes_received()
        ));
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\nstderr:\n{}",
        failures.len(),
        failures.join("\n"),
        gw.stderr_text()
    );
}

/// Errors inside a chunked body: (name, body after a valid chunked head).
/// SPEC §3: 400 and close; if the head already went upstream, the upstream connection is
/// closed before the request is complete, so the upstream never receives a complete request.
const CHUNK_CASES: &[(&str, &str)] = &[
    ("size-0x", "0x5\r\nhello\r\n0\r\n\r\n"),
    ("size-minus", "-1\r\nhello\r\n0\r\n\r\n"),
    ("size-leading-space", " 5\r\nhello\r\n0\r\n\r\n"),
    ("size-trailing-garbage", "5x\r\nhello\r\n0\r\n\r\n"),
    ("size-underscore", "0_2e\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
    ("size-empty", "\r\nhello\r\n0\r\n\r\n"),
    ("size-z", "Z\r\nZZ\r\nZZZ\r\n\r\n"),
    ("size-overflow", "FFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n"),
    ("ext-bare-semicolon", "5;\r\nhello\r\n0\r\n\r\n"),
    ("ext-cr", "2\r\r;a\r\n02\r\n41\r\n0\r\n\r\nGET /bad_path/pwned HTTP/1.1\r\nHost: a\r\nContent-Length: 430\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("size-bare-lf", "5\nhello\r\n0\r\n\r\n"),
    ("data-bare-lf", "a\r\n0123456789\n0\r\n\r\n"),
    ("data-longer-than-size", "3\r\nhello\r\n0\r\n\r\n"),
    ("data-no-crlf", "5\r\nhelloXX0\r\n\r\n"),
    ("extra-crlf-before-last", "17\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n\r\n\r\n0\r\n\r\n"),
    ("trailer-bare-lf", "5\r\nhello\r\n0\r\nX-T: 1\n\r\n"),
    ("trailer-obs-fold", "5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"),
];

#[test]
fn malformed_chunked_bodies_rejected_and_never_complete_upstream() {
    let o = Origin::start();
    let gw = gateway_for(&o, RINGWAY_SECTION);
    let cases: Vec<(String, Vec<u8>)> = CHUNK_CASES
        .iter()
        .map(|(n, body)| {
            expand(
                n,
                &format!(
                    "POST {{P}} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
                ),
            )
        })
        .collect();
    let outcomes = run_cases(gw.proxy_addr(), &cases);
    let mut failures = Vec::new();
    for ((name, _), out) in cases.iter().zip(&outcomes) {
        if out.status != Some(400) || !out.closed {
            failures.push(format!(
                "{name}: want 400 + close; got status {:?}, closed={} :: {}",
                out.status,
                out.closed,
                out.detail.lines().next().unwrap_or("")
            ));
        }
    }
    let r = gw.get("/control");
    assert_eq!(r.status, 200, "control request: {r:?}");
    // upstream connections that carried a partial request must be closed
    let partial_conns: Vec<usize> = o
        .requests()
        .iter()
        .filter(|r| r.target != "/control")
        .map(|r| r.conn)
        .collect();
    let _ = wait_for(Duration::from_secs(3), || {
        if partial_conns.iter().all(|&c| o.is_closed(c)) {
            Some(())
        } else {
            None
        }
    });
    for rec in o.requests() {
        if rec.target == "/control" {
            continue;
        }
        if rec.complete {
            failures.push(format!("upstream received a complete request: {rec:?}"));
        }
        if !o.is_closed(rec.conn) {
            failures.push(format!(
                "upstream connection {} with a partial request left open: {rec:?}",
                rec.conn
            ));
        }
    }
    for (conn, raw) in o.raw_received() {
        let text = String::from_utf8_lossy(&raw).to_string();
        if text.contains("/bad_path/")
            || text.contains("Content-Length: 430")
            || text.matches("HTTP/1.1\r\n").count() > 1
        {
            failures.push(format!(
                "smuggled bytes reached the upstream on connection {conn}: {text:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\nstderr:\n{}",
        failures.len(),
        failures.join("\n"),
        gw.stderr_text()
    );
}

#[test]
fn chunk_error_after_head_went_upstream() {
    let o = Origin::start();
    let gw = gateway_for(&o, RINGWAY_SECTION);
    let mut c = gw.client();
    c.send(
        b"POST /late-error HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .unwrap();
    // give the gateway time to stream the head and first chunk upstream
    let _ = wait_for(Duration::from_millis(1000), || {
        if o.requests().is_empty() {
            None
        } else {
            Some(())
        }
    });
    c.send(b"zz\r\nworld\r\n0\r\n\r\n").unwrap();
    let r = c
        .read_response_within(Duration::from_secs(6))
        .expect("a 400 after the bad chunk line");
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        c.closed_within(CLOSE_DEADLINE),
        "client connection closed after the 400"
    );
    let _ = wait_for(Duration::from_secs(3), || {
        if o.closed_connections() == o.connections() {
            Some(())
        } else {
            None
        }
    });
    for rec in o.requests() {
        assert!(
            !rec.complete,
            "upstream received a complete request: {rec:?}"
        );
    }
    assert_eq!(
        o.closed_connections(),
        o.connections(),
        "the upstream connection carrying the partial request is closed"
    );
}

/// Valid but unusual framing: (name, request with `{P}`, body the upstream must receive).
const POSITIVE_CASES: &[(&str, &str, &str)] = &[
    ("upper-hex", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", "0123456789"),
    ("ext", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;foo=bar\r\nhello\r\n0\r\n\r\n", "hello"),
    ("ext-quoted", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;foo=\"b a r\"\r\nhello\r\n0\r\n\r\n", "hello"),
    ("trailers", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", "hello"),
    ("multi-chunk", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n", "hello"),
    ("leading-zero-size", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0005\r\nhello\r\n0000\r\n\r\n", "hello"),
    ("empty-chunked", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", ""),
    ("te-capitalised", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "hello"),
    ("te-tab-ows", "POST {P} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "hello"),
    ("cl-duplicate-list", "POST {P} HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", "hello"),
    ("cl-duplicate-lines", "POST {P} HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", "hello"),
    ("cl-leading-zeros", "POST {P} HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n\r\nhello", "hello"),
    ("cl-zero", "POST {P} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", ""),
    ("http10-no-host", "GET {P} HTTP/1.0\r\n\r\n", ""),
    ("header-value-ows", "GET {P} HTTP/1.1\r\nHost: a\r\nX-A:   spaced   \r\n\r\n", ""),
];

#[test]
fn valid_framing_variants_accepted_with_exact_body_upstream() {
    let o = Origin::start();
    let gw = gateway_for(&o, RINGWAY_SECTION);
    let mut failures = Vec::new();
    for (name, template, body) in POSITIVE_CASES {
        let (_, bytes) = expand(name, template);
        let mut c = gw.client();
        c.send(&bytes).unwrap();
        match c.read_response() {
            Ok(r) if r.status == 200 => {}
            Ok(r) => {
                failures.push(format!("{name}: status {} :: {}", r.status, r.body_str()));
                continue;
            }
            Err(e) => {
                failures.push(format!("{name}: {e:?}"));
                continue;
            }
        }
        let target = format!("/case-{name}");
        match o
            .complete_requests()
            .into_iter()
            .find(|r| r.target == target)
        {
            None => failures.push(format!("{name}: origin has no complete request")),
            Some(rec) => {
                if rec.body != body.as_bytes() {
                    failures.push(format!(
                        "{name}: origin body {:?}, want {body:?}",
                        rec.body_str()
                    ));
                }
                let cl = rec.header_all("content-length");
                let te = rec.header_all("transfer-encoding");
                if !cl.is_empty() && !te.is_empty() {
                    failures.push(format!("{name}: both CL and TE upstream: {rec:?}"));
                }
                if cl.len() > 1 {
                    failures.push(format!("{name}: several Content-Length upstream: {cl:?}"));
                }
                if let Some(v) = cl.first() {
                    if *v != body.len().to_string() {
                        failures.push(format!(
                            "{name}: upstream Content-Length {v:?} for a {}-byte body",
                            body.len()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\nstderr:\n{}",
        failures.len(),
        failures.join("\n"),
        gw.stderr_text()
    );
}

#[test]
fn invalid_request_pipelined_after_valid_one() {
    let o = Origin::start();
    let gw = gateway_for(&o, RINGWAY_SECTION);
    let mut c = gw.client();
    c.send(
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n",
    )
    .unwrap();
    let r1 = c.read_response().expect("first response");
    assert_eq!(r1.status, 200);
    let r2 = c.read_response().expect("second response");
    assert_eq!(r2.status, 400, "{r2:?}");
    assert!(c.closed_within(CLOSE_DEADLINE));
    assert!(
        o.requests().iter().all(|r| r.target == "/first"),
        "{:?}",
        o.requests()
    );
}

// ---------------------------------------------------------------------------------------
// limits

fn headers_req(path: &str, n_extra: usize, value_len: usize) -> Vec<u8> {
    let mut s = format!("GET {path} HTTP/1.1\r\nHost: a\r\n");
    let v = "v".repeat(value_len);
    for i in 0..n_extra {
        s.push_str(&format!("X-H-{i}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

fn check_limit_cases(gw: &Gateway, o: &Origin, cases: Vec<(&str, Vec<u8>, u16)>) {
    let mut failures = Vec::new();
    for (name, bytes, want) in cases {
        let before = o.bytes_received();
        let out = probe(gw.proxy_addr(), bytes);
        let must_close = want != 200;
        // Kong's texts for these statuses.
        let message = match want {
            414 => Some(r#"{"message":"URI too long"}"#),
            431 => Some(r#"{"message":"Request header fields too large"}"#),
            _ => None,
        };
        if let Some(message) = message.filter(|m| !out.detail.contains(&m.replace('"', "\\\""))) {
            failures.push(format!(
                "{name}: the body is not {message} :: {}",
                out.detail
            ));
        }
        if out.status != Some(want) || (must_close && !out.closed) {
            failures.push(format!(
                "{name}: want {want}{}; got {:?}, closed={} :: {}",
                if must_close { " + close" } else { "" },
                out.status,
                out.closed,
                out.detail.lines().next().unwrap_or("")
            ));
        }
        if must_close {
            std::thread::sleep(Duration::from_millis(50));
            if o.bytes_received() != before {
                failures.push(format!(
                    "{name}: {} bytes reached the upstream",
                    o.bytes_received() - before
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\nstderr:\n{}",
        failures.len(),
        failures.join("\n"),
        gw.stderr_text()
    );
}

#[test]
fn default_size_limits() {
    let o = Origin::start();
    let gw = gateway_for(&o, RINGWAY_SECTION);
    let long_ok = format!("/{}", "a".repeat(8000));
    let too_long = format!("/{}", "a".repeat(8192 + 100));
    check_limit_cases(
        &gw,
        &o,
        vec![
            ("request-line-8000", get_req(&long_ok, "a"), 200),
            ("request-line-over-8k", get_req(&too_long, "a"), 414),
            ("header-line-8000", headers_req("/h", 1, 8000), 200),
            ("header-line-over-8k", headers_req("/h", 1, 8300), 431),
            ("headers-total-21k", headers_req("/h", 3, 7000), 200),
            ("headers-total-over-32k", headers_req("/h", 5, 7000), 431),
            ("headers-100", headers_req("/h", 99, 4), 200),
            ("headers-101", headers_req("/h", 100, 4), 431),
            ("headers-200", headers_req("/h", 199, 4), 431),
        ],
    );
}

#[test]
fn configured_size_limits() {
    let o = Origin::start();
    let extra = "ringway:\n  client_header_timeout: 2000\n  max_request_line_bytes: 1024\n  max_header_line_bytes: 1024\n  max_header_bytes: 4096\n  max_headers: 20\n";
    let gw = gateway_for(&o, extra);
    check_limit_cases(
        &gw,
        &o,
        vec![
            (
                "request-line-900",
                get_req(&format!("/{}", "a".repeat(900)), "a"),
                200,
            ),
            (
                "request-line-1100",
                get_req(&format!("/{}", "a".repeat(1100)), "a"),
                414,
            ),
            ("header-line-900", headers_req("/h", 1, 900), 200),
            ("header-line-1100", headers_req("/h", 1, 1100), 431),
            ("headers-total-2700", headers_req("/h", 3, 900), 200),
            ("headers-total-4500", headers_req("/h", 5, 900), 431),
            ("headers-20", headers_req("/h", 19, 4), 200),
            ("headers-21", headers_req("/h", 20, 4), 431),
        ],
    );
}

// ---------------------------------------------------------------------------------------
// timeouts (the timeouts under test are small; the deadlines around them generous)

#[test]
fn client_header_timeout_is_a_deadline_from_the_first_byte() {
    let o = Origin::start();
    let gw = gateway_for(&o, "ringway:\n  client_header_timeout: 800\n");
    let mut c = gw.client();
    let start = Instant::now();
    c.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n").unwrap();
    // trickle one header byte every 100 ms for up to 5 s: a per-read timeout would never fire
    let mut w = c.conn.stream.try_clone().unwrap();
    let trickle = spawn(move || {
        use std::io::Write;
        for _ in 0..50 {
            if w.write_all(b"X").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let r = c.read_response_within(Duration::from_secs(6));
    let took = start.elapsed();
    let r = r.unwrap_or_else(|e| panic!("no 408 while trickling a head: {e:?} after {took:?}"));
    assert_eq!(r.status, 408, "{r:?}");
    assert!(
        took >= Duration::from_millis(600),
        "408 came too early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(3000),
        "408 must come ~800 ms after the first byte, came after {took:?}"
    );
    assert!(c.closed_within(CLOSE_DEADLINE), "closed after 408");
    trickle.join().unwrap();
    assert_eq!(o.bytes_received(), 0, "nothing reaches the upstream");
}

#[test]
fn client_header_timeout_for_a_stalled_partial_head() {
    let o = Origin::start();
    let gw = gateway_for(&o, "ringway:\n  client_header_timeout: 600\n");
    let mut c = gw.client();
    let start = Instant::now();
    c.send(b"GET /stall HTTP/1.1\r\nHo").unwrap();
    let r = c.read_response_within(Duration::from_secs(6)).expect("408");
    assert_eq!(r.status, 408, "{r:?}");
    assert!(
        start.elapsed() < Duration::from_millis(3000),
        "{:?}",
        start.elapsed()
    );
    assert!(c.closed_within(CLOSE_DEADLINE));
}

#[test]
fn idle_keepalive_closed_after_keepalive_timeout() {
    let o = Origin::start();
    let gw = gateway_for(&o, "ringway:\n  keepalive_timeout: 600\n");
    let mut c = gw.client();
    let r = c.roundtrip(&get_req("/ka", "a"));
    assert_eq!(r.status, 200);
    let start = Instant::now();
    let state = c.wait_close(Duration::from_secs(5));
    let took = start.elapsed();
    assert_eq!(
        state,
        CloseState::Closed,
        "idle keep-alive connection must be closed (silently) after keepalive_timeout"
    );
    assert!(
        took >= Duration::from_millis(400),
        "closed too early ({took:?}): not kept alive"
    );
    assert!(
        took < Duration::from_millis(3500),
        "closed only after {took:?}"
    );
}

#[test]
fn keepalive_connection_usable_before_timeout() {
    let o = Origin::start();
    let gw = gateway_for(&o, "ringway:\n  keepalive_timeout: 1500\n");
    let mut c = gw.client();
    assert_eq!(c.roundtrip(&get_req("/a", "a")).status, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.roundtrip(&get_req("/b", "a")).status, 200);
}

#[test]
fn client_body_timeout_gives_408() {
    let o = Origin::start();
    let gw = gateway_for(&o, "ringway:\n  client_body_timeout: 600\n");
    let mut c = gw.client();
    c.send(b"POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let start = Instant::now();
    let r = c.read_response_within(Duration::from_secs(6));
    let took = start.elapsed();
    let r = r.unwrap_or_else(|e| panic!("no 408 for a stalled body: {e:?}"));
    assert_eq!(r.status, 408, "{r:?}");
    assert!(
        took >= Duration::from_millis(400),
        "408 too early: {took:?}"
    );
    assert!(took < Duration::from_millis(3500), "408 too late: {took:?}");
    assert!(c.closed_within(CLOSE_DEADLINE), "closed after 408");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        o.complete_requests().is_empty(),
        "the upstream never gets a complete request: {:?}",
        o.requests()
    );
}

/// RFC 9110 §9.3.2: ringway's own answers to a HEAD carry no content, those to a head
/// that does not parse, one too large, or one whose body stalls included (each closes).
#[test]
fn generated_answers_to_head_have_no_body() {
    let o = Origin::start();
    let gw = gateway_for(&o, "ringway:\n  client_body_timeout: 600\n");
    let long = "x".repeat(9000);
    for (what, request, status) in [
        (
            "space before the colon",
            "HEAD /a HTTP/1.1\r\nHost : a\r\n\r\n".to_owned(),
            400,
        ),
        (
            "a header line too long",
            format!("HEAD /a HTTP/1.1\r\nHost: a\r\nX: {long}\r\n\r\n"),
            431,
        ),
        (
            "a stalled body",
            "HEAD /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab".to_owned(),
            408,
        ),
    ] {
        let mut stream = std::net::TcpStream::connect(gw.proxy_addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
        let mut got = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stream, &mut got);
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {text:?}"
        );
        assert!(
            text.ends_with("\r\n\r\n"),
            "{what}: a body after the head: {text:?}"
        );
    }
}

#[test]
fn client_body_timeout_is_per_read_not_total() {
    let o = Origin::start();
    let gw = gateway_for(&o, "ringway:\n  client_body_timeout: 600\n");
    let mut c = gw.client();
    c.send(b"POST /trickle HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n")
        .unwrap();
    // 10 bytes, one every 150 ms: 1.5 s in total, never idle for 600 ms
    c.send_slowly(b"0123456789", 1, Duration::from_millis(150))
        .unwrap();
    let r = c.read_response().expect("response");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(o.complete_requests()[0].body, b"0123456789");
}

// ---------------------------------------------------------------------------------------
// upstream responses get the same strictness (502)

const BAD_RESPONSES: &[(&str, &str)] = &[
    (
        "cl-and-te",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "cl-letters",
        "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nabc",
    ),
    ("cl-plus", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok"),
    (
        "cl-differ",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    ),
    (
        "te-chunked-twice",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "status-letters",
        "HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok",
    ),
    ("not-http", "SSH-2.0-OpenSSH_9.0\r\n\r\n"),
    (
        "ws-before-colon",
        "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    ),
    (
        "obs-fold",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n c\r\n\r\nok",
    ),
    ("bare-lf", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
    (
        "nul-in-value",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\u{0}c\r\n\r\nok",
    ),
];

/// Bad chunked response bodies: the head may already be on its way to the client, so the
/// client gets either a 502 or an aborted response, never a clean complete one.
const BAD_RESPONSE_BODIES: &[(&str, &str)] = &[
    (
        "chunk-size-z",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "chunk-data-longer",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "chunk-size-0x",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    ),
];

#[test]
fn invalid_upstream_responses_give_502() {
    let origins: Vec<Origin> = BAD_RESPONSES
        .iter()
        .chain(BAD_RESPONSE_BODIES)
        .map(|(_, raw)| Origin::raw(raw.as_bytes()))
        .collect();
    let mut services = String::new();
    for (i, o) in origins.iter().enumerate() {
        services.push_str(&format!(
            "  - name: bad{i}\n    url: {}\n    retries: 0\n    routes:\n      - name: rbad{i}\n        paths: [\"/bad{i}\"]\n",
            o.url()
        ));
    }
    let gw = Gateway::start(&format!("_format_version: \"3.0\"\nservices:\n{services}"));
    let mut failures = Vec::new();
    for (i, (name, _)) in BAD_RESPONSES.iter().enumerate() {
        let mut c = gw.client();
        c.send(&get_req(&format!("/bad{i}"), "a")).unwrap();
        match c.read_response() {
            Ok(r) => {
                let msg = serde_json::from_slice::<serde_json::Value>(&r.body)
                    .ok()
                    .and_then(|j| j["message"].as_str().map(String::from));
                if r.status != 502
                    || msg.as_deref()
                        != Some("An invalid response was received from the upstream server")
                    || r.header("content-type") != Some("application/json; charset=utf-8")
                {
                    failures.push(format!("{name}: want Kong's 502 JSON, got {r:?}"));
                }
            }
            Err(e) => failures.push(format!("{name}: want 502, got {e:?}")),
        }
    }
    let base = BAD_RESPONSES.len();
    for (j, (name, _)) in BAD_RESPONSE_BODIES.iter().enumerate() {
        let mut c = gw.client();
        c.send(&get_req(&format!("/bad{}", base + j), "a")).unwrap();
        match c.read_response() {
            Ok(r) if r.status == 502 => {}
            Ok(r) => failures.push(format!(
                "{name}: a bad chunked body was delivered as a complete response: {r:?}"
            )),
            Err(ReadErr::Timeout(b)) => {
                failures.push(format!("{name}: client left hanging ({} bytes)", b.len()))
            }
            Err(_) => {} // aborted: acceptable
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\nstderr:\n{}",
        failures.len(),
        failures.join("\n"),
        gw.stderr_text()
    );
}

/// A head far over its limits, sent in one write, still gets its answer: the gateway
/// reads and drops what follows before closing (a close with unread bytes would reset
/// the connection, and the answer with it).
#[test]
fn an_oversized_head_in_one_write_gets_its_answer() {
    use std::io::{Read, Write};
    let o = Origin::start();
    let gw = gateway_for(&o, "");
    for (raw, status) in [
        (
            format!("GET /x/{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(70_000)),
            "414",
        ),
        (
            format!(
                "GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
                "b".repeat(70_000)
            ),
            "431",
        ),
    ] {
        let mut c = std::net::TcpStream::connect(gw.proxy_addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(raw.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let read = c.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{status}: {read:?} {text}"
        );
    }
}

/// A request refused for its framing while the client is still sending its body gets
/// its answer and a clean close, not a reset: the gateway shuts its side and reads and
/// drops what still comes (RFC 9112 §9.6), as it does after an oversized head.
#[test]
fn a_framing_error_mid_upload_closes_without_a_reset() {
    use std::io::{Read, Write};
    let o = Origin::start();
    let gw = gateway_for(&o, "");
    for (head, status) in [
        (
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\nzz\r\n",
            "400",
        ),
        (
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 9999999\r\nTransfer-Encoding: chunked\r\n\r\n",
            "400",
        ),
        (
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            "501",
        ),
    ] {
        let mut c = std::net::TcpStream::connect(gw.proxy_addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(head.as_bytes()).unwrap();
        // More than the socket buffers hold: with nobody reading, this write would stall,
        // and after a reset it fails.
        let sent = c.write_all(&vec![b'z'; 4 << 20]);
        assert!(sent.is_ok(), "{status}: the upload was cut: {sent:?}");
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        let read = c.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            read.is_ok() && text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{status}: {read:?} {text}"
        );
    }
}

/// A refusal with nothing left to arrive closes at once: no lingering read holds the
/// connection (a flood of such requests would otherwise hold a task each for seconds).
#[test]
fn a_bodiless_refusal_closes_without_lingering() {
    use std::io::{Read, Write};
    let o = Origin::start();
    let gw = gateway_for(&o, "");
    for (request, status) in [
        (&b"TRACE /x HTTP/1.1\r\nHost: a\r\n\r\n"[..], "405"),
        // Refused before its framing is read, but announcing no body.
        (b"GET /x HTTP/1.1\r\n\r\n", "400"),
        (b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400"),
    ] {
        let mut c = std::net::TcpStream::connect(gw.proxy_addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(request).unwrap();
        let mut answer = Vec::new();
        c.read_to_end(&mut answer).unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        // The client keeps its side open; the gateway's is gone well before a linger's 2 s.
        let gone = wait_for(Duration::from_millis(1000), || {
            (gw.status_json()["server"]["connections_active"] == 0).then_some(())
        });
        assert!(gone.is_some(), "{status}: {}", gw.status_json());
        drop(c);
    }
}
