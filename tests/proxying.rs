//! Proxying behaviour (SPEC §3): keep-alive, pipelining, Expect, bodiless responses,
//! re-framing, HTTP/1.0, hop-by-hop and X-Forwarded-* headers, large streamed bodies.

mod support;

use std::time::{Duration, Instant};

use support::*;

fn gateway_for(o: &Origin) -> Gateway {
    Gateway::start(&one_service_config(&o.url(), ""))
}

#[test]
fn keepalive_client_and_upstream_connection_reused() {
    let o = Origin::start();
    let gw = gateway_for(&o);
    let mut c = gw.client();
    for i in 0..10 {
        let r = c.roundtrip(&get_req(&format!("/ka/{i}"), "a"));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, b"ok");
        assert_eq!(
            r.origin_conn(),
            Some(1),
            "request {i} should reuse upstream connection 1: {r:?}"
        );
    }
    assert_eq!(
        o.connections(),
        1,
        "one upstream connection for ten sequential requests"
    );
    // a second client connection on the same worker also reuses the pooled connection
    let mut c2 = gw.client();
    let r = c2.roundtrip(&get_req("/ka/other", "a"));
    assert_eq!(r.status, 200);
    assert_eq!(
        o.connections(),
        1,
        "idle pooled connection reused by another client"
    );
}

#[test]
fn pipelined_requests_answered_in_order() {
    // the first request is the slowest, so answering out of order would show
    let o = Origin::with_handler(|ctx| {
        let n: u64 = ctx
            .req
            .target
            .rsplit('/')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Action::Delay(
            Duration::from_millis(200u64.saturating_sub(n * 40)),
            Box::new(Action::Ok),
        )
    });
    let gw = gateway_for(&o);
    let mut c = gw.client();
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.extend_from_slice(&get_req(&format!("/pipe/{i}"), "a"));
    }
    c.send(&batch).unwrap();
    for i in 0..5 {
        let r = c
            .read_response()
            .unwrap_or_else(|e| panic!("response {i}: {e:?}"));
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-origin-target"),
            Some(format!("/pipe/{i}").as_str()),
            "response {i} out of order: {r:?}"
        );
    }
    // a POST with a body pipelined with a GET
    let mut batch = req_with_body("POST", "/pipe/post", "a", b"hello");
    batch.extend_from_slice(&get_req("/pipe/after", "a"));
    c.send(&batch).unwrap();
    let r1 = c.read_response().unwrap();
    let r2 = c.read_response().unwrap();
    assert_eq!(r1.header("x-origin-target"), Some("/pipe/post"));
    assert_eq!(r2.header("x-origin-target"), Some("/pipe/after"));
    let post = o
        .requests()
        .into_iter()
        .find(|r| r.target == "/pipe/post")
        .unwrap();
    assert_eq!(post.body, b"hello");
}

#[test]
fn expect_100_continue() {
    let o = Origin::echo();
    let gw = gateway_for(&o);
    let mut c = gw.client();
    c.send(
        b"POST /expect HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let interim = c
        .read_response_within(Duration::from_secs(5))
        .expect("an interim 100 Continue before the body is sent");
    assert_eq!(interim.status, 100, "{interim:?}");
    c.send(b"hello").unwrap();
    let mut r = c.read_response().unwrap();
    while r.status == 100 {
        r = c.read_response().unwrap();
    }
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.ends_with(b"hello"), "{r:?}");
    let rec = &o.complete_requests()[0];
    assert_eq!(rec.body, b"hello");
    // the connection is still in sync afterwards
    let r = c.roundtrip(&get_req("/after", "a"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-origin-target"), Some("/after"));
}

#[test]
fn head_204_304_have_no_body_and_keep_connections_in_sync() {
    let o = Origin::with_handler(|ctx| {
        let conn = ctx.conn;
        match ctx.req.target.as_str() {
            "/head" => Action::Respond(
                b"HTTP/1.1 200 OK\r\nContent-Length: 0100\r\nContent-Type: text/plain\r\n\r\n"
                    .to_vec(),
            ),
            "/204" => Action::Respond(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n".to_vec()),
            "/304" => Action::Respond(
                b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 050, 50\r\n\r\n"
                    .to_vec(),
            ),
            "/zero" => Action::Respond(b"HTTP/1.1 200 OK\r\nContent-Length: 000\r\n\r\n".to_vec()),
            _ => Action::Respond(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Origin-Conn: {conn}\r\n\r\nnext"
                )
                .into_bytes(),
            ),
        }
    });
    let gw = gateway_for(&o);
    let mut c = gw.client();

    c.send(b"HEAD /head HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = c.read_head_response().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some("100"),
        "HEAD keeps the upstream Content-Length, in canonical form: {r:?}"
    );
    let r = c.roundtrip(&get_req("/next1", "a"));
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"next"[..]),
        "no stray body bytes after HEAD: {r:?}"
    );

    let r = c.roundtrip(&get_req("/204", "a"));
    assert_eq!(r.status, 204);
    assert!(
        r.header("content-length").is_none() || r.header("content-length") == Some("0"),
        "{r:?}"
    );
    assert!(
        r.header("transfer-encoding").is_none(),
        "204 must not be chunked: {r:?}"
    );
    let r = c.roundtrip(&get_req("/next2", "a"));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"next"[..]), "{r:?}");

    let r = c.roundtrip(&get_req("/304", "a"));
    assert_eq!(r.status, 304);
    assert_eq!(r.header("content-length"), Some("50"), "{r:?}");
    assert!(
        r.header("transfer-encoding").is_none(),
        "304 must not be chunked: {r:?}"
    );
    let r = c.roundtrip(&get_req("/next3", "a"));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"next"[..]), "{r:?}");
    let r = c.roundtrip(&get_req("/zero", "a"));
    assert_eq!(
        (r.status, r.header("content-length")),
        (200, Some("0")),
        "{r:?}"
    );

    // nothing extra arrives on the client connection
    assert_eq!(c.wait_close(Duration::from_millis(300)), CloseState::Open);
    // each of these exchanges was clean, so the upstream connection was reused throughout
    assert_eq!(
        o.connections(),
        1,
        "HEAD/204/304 exchanges are clean; the pooled connection is reused"
    );
}

#[test]
fn chunked_request_body_reframed_exactly() {
    let o = Origin::start();
    let gw = gateway_for(&o);
    let mut c = gw.client();
    let r = c.roundtrip(
        b"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;name=val\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let rec = o.complete_requests().pop().expect("origin got the request");
    assert_eq!(rec.body, b"Wikipedia in\r\n\r\nchunks.");
    assert!(
        rec.header("content-length").is_none() || rec.header("transfer-encoding").is_none(),
        "never both framings upstream: {rec:?}"
    );
    if let Some(cl) = rec.header("content-length") {
        assert_eq!(cl, "23");
    }
    // next request on the same connection is unaffected
    let r = c.roundtrip(&get_req("/after", "a"));
    assert_eq!(r.header("x-origin-target"), Some("/after"));
}

#[test]
fn chunked_response_body_reframed_exactly() {
    let o = Origin::raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n");
    let gw = gateway_for(&o);
    let mut c = gw.client();
    for _ in 0..2 {
        let r = c.roundtrip(&get_req("/c", "a"));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, b"hello world", "{r:?}");
        assert_eq!(r.header("x-up"), Some("1"));
        assert!(
            r.header("content-length").is_none() || r.header("transfer-encoding").is_none(),
            "{r:?}"
        );
    }
    assert_eq!(
        o.connections(),
        1,
        "a chunked response is a clean exchange; the connection is reused"
    );
}

#[test]
fn close_delimited_upstream_response() {
    let o = Origin::with_handler(|_| {
        Action::RespondClose(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nbody until close".to_vec(),
        )
    });
    let gw = gateway_for(&o);
    let mut c = gw.client();
    let r = c.roundtrip(&get_req("/cd", "a"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"body until close");
    // whatever framing the gateway chose, the client connection is either closed or usable
    match c.wait_close(Duration::from_millis(200)) {
        CloseState::Closed => {}
        CloseState::Open => {
            let r = c.roundtrip(&get_req("/cd2", "a"));
            assert_eq!(r.body, b"body until close");
            assert_eq!(
                o.connections(),
                2,
                "a close-delimited upstream connection cannot be reused"
            );
        }
        CloseState::Data(d) => panic!(
            "stray bytes after response: {:?}",
            String::from_utf8_lossy(&d)
        ),
    }
}

#[test]
fn http10_client() {
    let o = Origin::start();
    let gw = gateway_for(&o);
    let mut c = gw.client();
    c.send(b"GET /ten HTTP/1.0\r\n\r\n").unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"ok");
    assert!(
        r.header("transfer-encoding").is_none(),
        "no chunked to an HTTP/1.0 client: {r:?}"
    );
    assert!(
        c.closed_within(CLOSE_DEADLINE),
        "HTTP/1.0 without keep-alive: closed after the response"
    );
    let rec = &o.complete_requests()[0];
    assert_eq!(rec.target, "/ten");
}

/// An HTTP/1.0 client that asked to keep the connection is told it is kept, on
/// ringway's own answers too (a 404, a plugin's 401), or it takes each as the last.
#[test]
fn http10_keep_alive_answers_say_keep_alive() {
    let o = Origin::start();
    let gw = gateway_for(&o);
    let mut c = gw.client();
    for (path, status) in [("/ten", 200), ("/ten", 200)] {
        let r = c
            .roundtrip(format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes());
        assert_eq!(r.status, status, "{r:?}");
        assert_eq!(r.header("connection"), Some("keep-alive"), "{r:?}");
    }
    let gw = Gateway::start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: {}\n    routes:\n      - name: r\n        hosts: [a.test]\n",
        o.url()
    ));
    let mut c = gw.client();
    for _ in 0..2 {
        let r =
            c.roundtrip(b"GET /x HTTP/1.0\r\nHost: elsewhere\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(r.status, 404, "{r:?}");
        assert_eq!(
            r.header("connection"),
            Some("keep-alive"),
            "the 404 keeps the connection and says so: {r:?}"
        );
    }
    let r = c.roundtrip(b"GET /x HTTP/1.0\r\nHost: elsewhere\r\n\r\n");
    assert_eq!(r.status, 404, "{r:?}");
    assert_ne!(r.header("connection"), Some("keep-alive"), "{r:?}");
    assert!(
        c.closed_within(CLOSE_DEADLINE),
        "without keep-alive: closed"
    );
}

#[test]
fn http10_client_with_chunked_upstream_response_gets_close_delimited_or_length() {
    let o =
        Origin::raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    let gw = gateway_for(&o);
    let mut c = gw.client();
    c.send(b"GET /ten HTTP/1.0\r\n\r\n").unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.chunked, "chunked is not HTTP/1.0: {r:?}");
    assert_eq!(r.body, b"abc");
}

/// A client that stops reading a response for a while is no idle connection: it keeps
/// its response past `keepalive_timeout`; `send_timeout` (nginx's) is what ends one
/// that takes nothing for that long.
#[test]
fn a_pause_in_reading_is_bounded_by_send_timeout_not_keepalive_timeout() {
    const BODY: usize = 16 << 20;
    let o = Origin::with_handler(|_| Action::Pattern {
        head: format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n"),
        n: BODY,
    });
    for (node, whole) in [
        ("  keepalive_timeout: 300\n", true),
        ("  keepalive_timeout: 300\n  send_timeout: 300\n", false),
    ] {
        let gw = Gateway::start(&one_service_config(&o.url(), &format!("ringway:\n{node}")));
        let mut c = gw.client();
        c.send(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        // Not reading: the socket buffers fill, the gateway's writes wait.
        std::thread::sleep(Duration::from_millis(1500));
        match c.read_response_within(Duration::from_secs(20)) {
            Ok(r) => {
                assert!(
                    whole,
                    "{node}: the pause exceeds send_timeout, yet {} bytes came",
                    r.body.len()
                );
                assert_eq!(r.body.len(), BODY, "{node}");
            }
            Err(e) => assert!(!whole, "{node}: the response was cut: {e:?}"),
        }
    }
}

/// A client that pipelines requests and takes none of ringway's own answers (404s here)
/// is held to send_timeout too, not kept with megabytes queued for it.
#[test]
fn a_flood_of_unread_answers_ends_at_send_timeout() {
    use std::io::{Read, Write};
    let o = Origin::start();
    let gw = Gateway::start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: {}\n    routes:\n      - name: r\n        hosts: [a.test]\nringway:\n  send_timeout: 500\n",
        o.url()
    ));
    let mut stream = std::net::TcpStream::connect(gw.proxy_addr()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let flood = std::thread::spawn(move || {
        let request = b"GET /x HTTP/1.1\r\nHost: elsewhere\r\n\r\n".repeat(1000);
        for _ in 0..100 {
            if writer.write_all(&request).is_err() {
                break;
            }
        }
    });
    // Not reading while the answers pile up, then reading all that came: the end must
    // come (a close), not wait for more.
    std::thread::sleep(Duration::from_millis(2500));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = vec![0u8; 1 << 16];
    let closed = loop {
        match stream.read(&mut sink) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(closed, "the connection is closed once send_timeout passed");
    let _ = flood.join();
    let r = gw.client().roundtrip(&get_req("/x", "a.test"));
    assert_eq!(r.status, 200, "the gateway serves on: {r:?}");
}

#[test]
fn client_connection_close_is_honoured() {
    let o = Origin::start();
    let gw = gateway_for(&o);
    let mut c = gw.client();
    let r = c.roundtrip(b"GET /cc HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(
        c.closed_within(CLOSE_DEADLINE),
        "Connection: close from the client closes after the response"
    );
}

/// As nginx and Kong by default: header names with an underscore are not forwarded, so
/// a CGI-style backend cannot read a client's `X_Real_IP` as ringway's `X-Real-IP`.
#[test]
fn headers_with_underscores_are_not_forwarded() {
    let o = Origin::start();
    let gw = gateway_for(&o);
    let mut c = gw.client();
    let r = c.roundtrip(
        b"GET /u HTTP/1.1\r\nHost: a\r\nX_Real_IP: 6.6.6.6\r\nX_Forwarded_For: 6.6.6.6\r\nX-Kept: 1\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let rec = &o.complete_requests()[0];
    assert!(rec.header_all("x_real_ip").is_empty(), "{rec:?}");
    assert!(rec.header_all("x_forwarded_for").is_empty(), "{rec:?}");
    assert_eq!(rec.header_all("x-kept"), vec!["1"], "{rec:?}");
    assert_eq!(rec.header_all("x-real-ip"), vec!["127.0.0.1"], "{rec:?}");
}

#[test]
fn hop_by_hop_headers_removed_upstream() {
    let o = Origin::start();
    let gw = gateway_for(&o);
    let mut c = gw.client();
    let r = c.roundtrip(
        b"GET /hop HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Custom-Hop\r\nX-Custom-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-End-To-End: kept\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let rec = o.complete_requests().pop().unwrap();
    let mut leaked = Vec::new();
    for h in [
        "x-custom-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        if rec.header(h).is_some() {
            leaked.push(h);
        }
    }
    assert!(
        leaked.is_empty(),
        "hop-by-hop headers forwarded upstream: {leaked:?}\n{rec:?}"
    );
    for v in rec.header_all("connection") {
        assert!(
            !v.to_ascii_lowercase().contains("x-custom-hop"),
            "Connection forwarded as sent: {rec:?}"
        );
    }
    assert_eq!(rec.header("x-end-to-end"), Some("kept"));

    // Named in `Connection`, the client's X-Forwarded-For is hop-by-hop too: the
    // upstream gets ringway's entry alone (and the usual list without the naming).
    for (connection, want) in [
        ("Connection: X-Forwarded-For\r\n", "127.0.0.1"),
        ("", "1.2.3.4, 127.0.0.1"),
    ] {
        let before = o.requests().len();
        let request =
            format!("GET /hop HTTP/1.1\r\nHost: a\r\n{connection}X-Forwarded-For: 1.2.3.4\r\n\r\n");
        assert_eq!(c.roundtrip(request.as_bytes()).status, 200);
        let rec = o.wait_complete(before + 1, Duration::from_secs(10))[before].clone();
        assert_eq!(rec.header_all("x-forwarded-for"), vec![want], "{rec:?}");
    }
}

#[test]
fn hop_by_hop_response_headers_removed_downstream() {
    let o = Origin::raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Resp-Hop\r\nX-Resp-Hop: 1\r\nKeep-Alive: timeout=99\r\nX-Kept: 1\r\n\r\nok");
    let gw = gateway_for(&o);
    let r = gw.get("/r");
    assert_eq!(r.status, 200);
    assert!(r.header("x-resp-hop").is_none(), "{r:?}");
    assert!(
        r.header("keep-alive")
            .map(|v| !v.contains("99"))
            .unwrap_or(true),
        "{r:?}"
    );
    assert_eq!(r.header("x-kept"), Some("1"));
}

#[test]
fn x_forwarded_headers_set_and_client_values_overwritten() {
    let o = Origin::start();
    let gw = gateway_for(&o);
    let port = gw.proxy_addr().port().to_string();
    let mut c = gw.client();
    let r = c.roundtrip(
        b"GET /xff/path?q=1 HTTP/1.1\r\nHost: Client.EXAMPLE.:8000\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 9999\r\nX-Forwarded-Path: /evil\r\nX-Real-IP: 6.6.6.6\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let rec = o.complete_requests().pop().unwrap();
    let mut bad = Vec::new();
    let want = [
        ("x-forwarded-for", "1.2.3.4, 127.0.0.1"),
        ("x-forwarded-proto", "http"),
        // nginx's $host, as Kong sends it: lowercased, without the port or final dot
        ("x-forwarded-host", "client.example"),
        ("x-forwarded-port", port.as_str()),
        ("x-forwarded-path", "/xff/path"),
        ("x-real-ip", "127.0.0.1"),
        // RFC 9110 §7.6.3: the gateway names itself in what it forwards.
        ("via", "1.1 ringway"),
    ];
    assert_eq!(r.header("via"), Some("1.1 ringway"), "{r:?}");
    for (h, v) in want {
        let got = rec.header_all(h);
        if got != vec![v] {
            bad.push(format!("{h}: got {got:?}, want [{v:?}]"));
        }
    }
    assert!(bad.is_empty(), "{}\n{rec:?}", bad.join("\n"));

    // An HTTP/1.0 client's request says so; an earlier hop's Via goes first.
    let mut c10 = gw.client();
    let r = c10.roundtrip(b"GET /v10 HTTP/1.0\r\nHost: h.example\r\nVia: 1.1 edge\r\n\r\n");
    assert_eq!(r.status, 200);
    let rec = o.complete_requests().pop().unwrap();
    assert_eq!(
        rec.header_all("via"),
        vec!["1.1 edge", "1.0 ringway"],
        "{rec:?}"
    );
    // One that names no host at all still says where it came in: the address it reached.
    let mut c10 = gw.client();
    let r = c10.roundtrip(b"GET /nohost HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    let rec = o.complete_requests().pop().unwrap();
    assert_eq!(
        rec.header_all("x-forwarded-host"),
        vec!["127.0.0.1"],
        "{rec:?}"
    );

    // without client values
    let r = c.roundtrip(&get_req("/plain", "h.example"));
    assert_eq!(r.status, 200);
    let rec = o.complete_requests().pop().unwrap();
    assert_eq!(
        rec.header_all("x-forwarded-for"),
        vec!["127.0.0.1"],
        "{rec:?}"
    );
    assert_eq!(rec.header_all("x-real-ip"), vec!["127.0.0.1"], "{rec:?}");
    assert_eq!(
        rec.header_all("x-forwarded-host"),
        vec!["h.example"],
        "{rec:?}"
    );
}

#[test]
fn content_length_forwarded_in_canonical_form() {
    let o = Origin::start();
    let gw = gateway_for(&o);
    let mut c = gw.client();
    let r = c.roundtrip(b"POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 010\r\n\r\n0123456789");
    assert_eq!(r.status, 200, "{r:?}");
    let rec = o.complete_requests().pop().unwrap();
    assert_eq!(rec.header_all("content-length"), vec!["10"], "{rec:?}");
    assert_eq!(rec.body, b"0123456789");
    // identical duplicates count as one value and are forwarded once
    let r = c.roundtrip(b"POST /cl2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello");
    assert_eq!(r.status, 200, "{r:?}");
    let rec = o.complete_requests().pop().unwrap();
    assert_eq!(rec.header_all("content-length"), vec!["5"], "{rec:?}");
    assert_eq!(rec.body, b"hello");
    // An empty body declared as such stays declared (`00` → `0`); none declared, none sent.
    let r = c.roundtrip(b"POST /cl3 HTTP/1.1\r\nHost: a\r\nContent-Length: 00\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    let rec = o.complete_requests().pop().unwrap();
    assert_eq!(rec.header_all("content-length"), vec!["0"], "{rec:?}");
    assert!(rec.header_all("transfer-encoding").is_empty(), "{rec:?}");
    let r = c.roundtrip(b"GET /cl4 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    let rec = o.complete_requests().pop().unwrap();
    assert!(rec.header_all("content-length").is_empty(), "{rec:?}");
}

#[test]
fn request_host_header_forwarded_once() {
    let o = Origin::start();
    let gw = gateway_for(&o);
    let r = gw.get("/h");
    assert_eq!(r.status, 200);
    let rec = o.complete_requests().pop().unwrap();
    assert_eq!(rec.header_all("host").len(), 1, "{rec:?}");
}

const BIG: usize = 64 * 1024 * 1024;

#[test]
fn large_upload_streamed_through() {
    let o = Origin::start();
    let gw = gateway_for(&o);
    let addr = gw.proxy_addr();
    let start = Instant::now();
    let mut c = Client::connect(addr);
    let head = format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {BIG}\r\n\r\n");
    let body = pattern(BIG);
    let expected = fnv1a(&body);
    let writer = {
        let mut w = c.conn.stream.try_clone().unwrap();
        spawn(move || {
            use std::io::Write;
            w.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
            w.write_all(head.as_bytes())?;
            for chunk in body.chunks(256 * 1024) {
                w.write_all(chunk)?;
            }
            w.flush()
        })
    };
    let r = c
        .read_response_within(Duration::from_secs(90))
        .expect("response to the upload");
    writer.join().unwrap().expect("upload written");
    let took = start.elapsed();
    assert_eq!(r.status, 200, "{r:?}");
    let rec = o.complete_requests().pop().expect("origin got the upload");
    assert_eq!(rec.body.len(), BIG);
    assert_eq!(fnv1a(&rec.body), expected, "upload body corrupted");
    eprintln!("64 MiB upload took {took:?}");
    assert!(
        took < Duration::from_secs(60),
        "64 MiB upload took {took:?}"
    );
}

#[test]
fn large_download_streamed_through() {
    let o = Origin::with_handler(|_| {
        Action::Pattern {
        head: format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {BIG}\r\n\r\n"),
        n: BIG,
    }
    });
    let gw = gateway_for(&o);
    let start = Instant::now();
    let mut c = gw.client();
    c.send(&get_req("/download", "a")).unwrap();
    let r = c
        .read_response_within(Duration::from_secs(90))
        .expect("download");
    let took = start.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), BIG);
    assert_eq!(
        fnv1a(&r.body),
        fnv1a(&pattern(BIG)),
        "download body corrupted"
    );
    eprintln!("64 MiB download took {took:?}");
    assert!(
        took < Duration::from_secs(60),
        "64 MiB download took {took:?}"
    );
    // and the connection is still usable afterwards
    let r = c.roundtrip(&get_req("/download", "a"));
    assert_eq!(r.body.len(), BIG);
}

#[test]
fn chunked_upload_of_several_mib() {
    let o = Origin::start();
    let gw = gateway_for(&o);
    let mut c = gw.client();
    let data = pattern(4 * 1024 * 1024 + 17);
    let mut req =
        b"PUT /chunked-upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in data.chunks(100_003) {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let writer = {
        let mut w = c.conn.stream.try_clone().unwrap();
        spawn(move || {
            use std::io::Write;
            w.write_all(&req)
        })
    };
    let r = c
        .read_response_within(Duration::from_secs(60))
        .expect("response");
    writer.join().unwrap().unwrap();
    assert_eq!(r.status, 200);
    let rec = o.complete_requests().pop().unwrap();
    assert!(
        rec.body == data,
        "chunked upload body corrupted ({} bytes)",
        rec.body.len()
    );
}

/// Bytes a path may not carry raw reach the upstream percent-encoded, as Kong sends
/// them, and route as their encoded form does; bytes that are no UTF-8 are refused.
#[test]
fn raw_path_bytes_go_upstream_escaped() {
    let o = Origin::start();
    let gw = Gateway::start(&one_service_config(&o.url(), ""));
    for (raw, want) in [
        (&b"/caf\xc3\xa9?q=\"1\""[..], "/caf%C3%A9?q=\"1\""),
        (b"/caf%c3%a9", "/caf%C3%A9"),
        (b"/a\"b<c>{d}|e^f`g", "/a%22b%3Cc%3E%7Bd%7D%7Ce%5Ef%60g"),
    ] {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(raw);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = gw.client().roundtrip(&req);
        assert_eq!(r.status, 200, "{:?}: {r:?}", String::from_utf8_lossy(raw));
        let rec = o.complete_requests().pop().unwrap();
        assert_eq!(rec.target, want);
    }
    let r = gw
        .client()
        .roundtrip(b"GET /caf\xe9 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 400, "{r:?}");
}

/// Kong's `X-Forwarded-Prefix`: what `strip_path` took off, never a value an untrusted
/// client sent; a trusted client's is kept.
#[test]
fn x_forwarded_prefix_is_the_stripped_prefix() {
    let o = Origin::start();
    let routes = |trusted: &str| {
        format!(
            "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: {}/base\n    routes:\n      \
             - {{name: strip, paths: [/api]}}\n      \
             - {{name: keep, paths: [/keep], strip_path: false}}\n      \
             - {{name: root, paths: [/]}}\n{trusted}",
            o.url()
        )
    };
    let gw = Gateway::start(&routes(""));
    for (path, want) in [
        ("/api/x", vec!["/api"]),
        ("/api", vec!["/api"]),
        ("/keep/x", vec![]),
        ("/other", vec![]),
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\nX-Forwarded-Prefix: /spoofed\r\n\r\n");
        assert_eq!(gw.client().roundtrip(req.as_bytes()).status, 200);
        let rec = o.complete_requests().pop().unwrap();
        assert_eq!(
            rec.header_all("x-forwarded-prefix"),
            want,
            "{path}: {rec:?}"
        );
    }
    drop(gw);
    let gw = Gateway::start(&routes("ringway:\n  trusted_ips: [\"127.0.0.1/32\"]\n"));
    let req = b"GET /api/x HTTP/1.1\r\nHost: a\r\nX-Forwarded-Prefix: /outer\r\n\r\n";
    assert_eq!(gw.client().roundtrip(req).status, 200);
    let rec = o.complete_requests().pop().unwrap();
    assert_eq!(
        rec.header_all("x-forwarded-prefix"),
        vec!["/outer"],
        "{rec:?}"
    );
}

#[test]
fn trusted_ips_keep_client_forwarded_headers() {
    let o = Origin::start();
    let gw = Gateway::start(&one_service_config(
        &o.url(),
        "ringway:\n  trusted_ips: [\"127.0.0.1/32\"]\n",
    ));
    let r = gw.client().roundtrip(
        b"GET /t HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: shop.example\r\nX-Forwarded-Port: 443\r\nX-Forwarded-Path: /orig\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let rec = o.complete_requests().pop().unwrap();
    assert_eq!(
        rec.header_all("x-forwarded-for"),
        vec!["1.2.3.4, 127.0.0.1"],
        "{rec:?}"
    );
    assert_eq!(
        rec.header_all("x-forwarded-proto"),
        vec!["https"],
        "{rec:?}"
    );
    assert_eq!(
        rec.header_all("x-forwarded-host"),
        vec!["shop.example"],
        "{rec:?}"
    );
    assert_eq!(rec.header_all("x-forwarded-port"), vec!["443"], "{rec:?}");
    assert_eq!(rec.header_all("x-forwarded-path"), vec!["/orig"], "{rec:?}");
}

#[test]
fn absolute_form_target_forwarded_in_origin_form() {
    let o = Origin::start();
    let gw = gateway_for(&o);
    let r = gw
        .client()
        .roundtrip(b"GET http://b.example/abs?q=1 HTTP/1.1\r\nHost: b.example\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    let rec = o.complete_requests().pop().unwrap();
    assert_eq!(rec.target, "/abs?q=1", "upstream gets origin-form: {rec:?}");
    // An empty path is `/` (RFC 9110 §4.2.3), with or without a query.
    for (target, want) in [("http://b.example?q=2", "/?q=2"), ("http://b.example", "/")] {
        let r = gw
            .client()
            .roundtrip(format!("GET {target} HTTP/1.1\r\nHost: b.example\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200, "{target}: {r:?}");
        let rec = o.complete_requests().pop().unwrap();
        assert_eq!(rec.target, want, "{target}: {rec:?}");
    }
    // The authority is held to the Host grammar: no userinfo, no empty host, ASCII only.
    for target in [
        "http://user:pw@b.example/x",
        "http:///x",
        "http://b.exa\u{e9}mple/x",
        "http://b.example:8o/x",
    ] {
        let r = gw
            .client()
            .roundtrip(format!("GET {target} HTTP/1.1\r\nHost: b.example\r\n\r\n").as_bytes());
        assert_eq!(r.status, 400, "{target}: {r:?}");
    }
}

#[test]
fn get_with_body_is_forwarded_framed_exactly_or_rejected() {
    let o = Origin::start();
    let gw = gateway_for(&o);
    let mut c = gw.client();
    let mut batch = b"GET /gb HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    batch.extend_from_slice(&get_req("/after-gb", "a"));
    c.send(&batch).unwrap();
    let r = c.read_response().unwrap();
    if r.status == 400 {
        return;
    }
    assert_eq!(r.status, 200, "{r:?}");
    let r2 = c.read_response().unwrap();
    assert_eq!(r2.header("x-origin-target"), Some("/after-gb"), "{r2:?}");
    let rec = o
        .complete_requests()
        .into_iter()
        .find(|r| r.target == "/gb")
        .unwrap();
    assert_eq!(rec.body, b"hello", "GET body dropped or altered: {rec:?}");
}

#[test]
fn two_workers_serve_many_connections() {
    let o = Origin::start();
    let gw = Gateway::start_with(
        &one_service_config(&o.url(), ""),
        GatewayOpts::default().workers(2),
    );
    let addr = gw.proxy_addr();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..10 {
                    let path = format!("/w{t}/{i}");
                    let r = c.roundtrip(&get_req(&path, "a"));
                    assert_eq!(r.status, 200);
                    assert_eq!(r.header("x-origin-target"), Some(path.as_str()));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread");
    }
    assert_eq!(o.complete_requests().len(), 80);
    assert!(
        o.connections() < 40,
        "upstream connections are pooled, not one per request: {} for 80 requests",
        o.connections()
    );
}

#[test]
fn deep_pipeline_answered_in_order() {
    let o = Origin::start();
    let gw = gateway_for(&o);
    let mut c = gw.client();
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.extend_from_slice(&get_req(&format!("/deep/{i}"), "a"));
    }
    let mut w = c.conn.stream.try_clone().unwrap();
    let writer = spawn(move || {
        use std::io::Write;
        w.write_all(&batch)
    });
    for i in 0..200 {
        let r = c
            .read_response()
            .unwrap_or_else(|e| panic!("response {i}: {e:?}"));
        assert_eq!(
            r.header("x-origin-target"),
            Some(format!("/deep/{i}").as_str()),
            "response {i} out of order"
        );
    }
    writer.join().unwrap().unwrap();
}

#[test]
fn connection_close_request_ends_the_pipeline() {
    let o = Origin::start();
    let gw = gateway_for(&o);
    let mut c = gw.client();
    let mut batch = b"GET /first HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec();
    batch.extend_from_slice(&get_req("/second", "a"));
    c.send(&batch).unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.header("x-origin-target"), Some("/first"));
    assert!(
        c.closed_within(CLOSE_DEADLINE),
        "closed after the response to a `Connection: close` request"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        o.requests().iter().all(|r| r.target != "/second"),
        "a request after `Connection: close` was processed: {:?}",
        o.requests()
    );
}

/// A WebSocket-style upstream: answers `101` to a request carrying `Upgrade: websocket`
/// (426 otherwise, as a WebSocket server does), then echoes every byte until EOF. Returns
/// its address and the request heads it received.
fn upgrading_origin() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut conn = BufConn::new(stream.try_clone().unwrap());
                let deadline = Instant::now() + Duration::from_secs(10);
                let Ok(Some(head)) = conn.read_head(deadline, deadline) else {
                    return;
                };
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                seen.lock().unwrap().push(head.clone());
                if !head.contains("\r\nupgrade: websocket\r\n") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n");
                    return;
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                );
                // Bytes that arrived behind the head, then the rest of the stream.
                let early = conn.available().to_vec();
                let _ = stream.write_all(&early);
                let mut chunk = [0u8; 4096];
                while let Ok(n) = stream.read(&mut chunk) {
                    if n == 0 || stream.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, heads)
}

#[test]
fn websocket_upgrade_is_tunnelled_both_ways() {
    let (addr, heads) = upgrading_origin();
    let gw = Gateway::start(&one_service_config(&format!("http://{addr}"), ""));
    for connection in ["Upgrade", "keep-alive, Upgrade", "upgrade"] {
        let mut c = gw.client();
        let request = format!(
            "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: {connection}\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        c.send(request.as_bytes()).unwrap();
        let r = c.read_head_response().unwrap();
        assert_eq!(r.status, 101, "Connection: {connection}: {r:?}\n{heads:?}");
        assert_eq!(r.header("upgrade"), Some("websocket"), "{r:?}");
        assert!(
            r.header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
            "{r:?}"
        );
        let head = heads.lock().unwrap().last().cloned().unwrap();
        assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
        assert!(head.contains("\r\nsec-websocket-key: "), "{head}");
        // Frames both ways after the switch, in several writes.
        for message in [&b"hello"[..], &[0x81, 0x02, b'h', b'i'], &[7u8; 3000]] {
            c.send(message).unwrap();
            let mut echoed = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            c.conn
                .read_exact_into(message.len(), &mut echoed, deadline)
                .unwrap();
            assert_eq!(echoed, message);
        }
    }
}

/// An offer of `h2c` is not passed on: after the switch the client's HTTP/2 requests
/// would reach the upstream past routing and plugins. The request goes on as HTTP/1.1.
/// And a `101` to a protocol the client did not offer is not tunnelled (RFC 9110 §7.8).
#[test]
fn h2c_is_not_offered_and_a_switch_must_be_to_an_offered_protocol() {
    let (addr, heads) = upgrading_origin();
    let gw = Gateway::start(&one_service_config(&format!("http://{addr}"), ""));
    for upgrade in ["h2c", "H2C"] {
        let mut c = gw.client();
        let r = c.roundtrip(
            format!(
                "GET /h2 HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                 Upgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 426, "the origin's plain answer: {r:?}");
        let head = heads.lock().unwrap().last().cloned().unwrap();
        assert!(
            !head.contains("\r\nupgrade:") && !head.contains("http2-settings"),
            "Upgrade: {upgrade} reached the upstream: {head}"
        );
    }
    // Offered beside another protocol, h2c alone is taken out of the offer.
    let mut c = gw.client();
    c.send(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c, websocket\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .unwrap();
    let r = c.read_head_response().unwrap();
    assert_eq!(r.status, 101, "{r:?}");
    let head = heads.lock().unwrap().last().cloned().unwrap();
    assert!(
        head.contains("\r\nupgrade: websocket\r\n") && !head.contains("h2c"),
        "{head}"
    );

    let switcher = Origin::raw(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    let gw = gateway_for(&switcher);
    let mut c = gw.client();
    let r =
        c.roundtrip(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: chat\r\n\r\n");
    assert_eq!(
        r.status, 502,
        "a switch to websocket when chat was offered: {r:?}"
    );
    let mut c = gw.client();
    c.send(
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: chat, WebSocket\r\n\r\n",
    )
    .unwrap();
    let r = c.read_head_response().unwrap();
    assert_eq!(r.status, 101, "websocket was among the offers: {r:?}");
}

/// A tunnel with nothing moving either way for the service's `read_timeout` is closed
/// (a peer that vanished without a close would hold it forever); traffic in either
/// direction keeps it open past that.
#[test]
fn an_idle_tunnel_closes_after_read_timeout() {
    let (addr, _heads) = upgrading_origin();
    let gw = Gateway::start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: ws\n    url: http://{addr}\n    read_timeout: 600\n    routes:\n      - paths: [/]\n"
    ));
    let mut c = gw.client();
    c.send(b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
        .unwrap();
    let r = c.read_head_response().unwrap();
    assert_eq!(r.status, 101, "{r:?}");
    // Busy for twice the timeout: one message every 200 ms.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(200));
        c.send(b"ping").unwrap();
        let mut echoed = Vec::new();
        c.conn
            .read_exact_into(4, &mut echoed, Instant::now() + Duration::from_secs(5))
            .unwrap();
        assert_eq!(echoed, b"ping");
    }
    // Then quiet: closed after the timeout, not before.
    let quiet = Instant::now();
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "an idle tunnel closes"
    );
    let after = quiet.elapsed();
    assert!(
        after >= Duration::from_millis(500),
        "closed after {after:?}"
    );
}

/// RFC 9110 §6.6.1: a response forwarded without a `Date` gets one; an upstream's own
/// `Date` is passed on as it is, never doubled.
#[test]
fn responses_are_dated_once() {
    let undated = Origin::raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let gw = gateway_for(&undated);
    let r = gw.get("/d");
    assert_eq!(r.status, 200);
    let dates = r.header_all("date");
    assert_eq!(dates.len(), 1, "{r:?}");
    assert!(
        httpdate::parse_http_date(dates[0]).is_ok(),
        "an IMF-fixdate: {r:?}"
    );
    let dated = Origin::raw(
        b"HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\n\r\nok",
    );
    let gw = gateway_for(&dated);
    let r = gw.get("/d");
    assert_eq!(
        r.header_all("date"),
        ["Sun, 06 Nov 1994 08:49:37 GMT"],
        "{r:?}"
    );
}

/// A request answered by the gateway itself (here a 401) whose Content-Length body came
/// whole is skipped and the connection goes on, as nginx discards it; a body still on its
/// way closes the connection (its bytes would otherwise be read as the next request).
#[test]
fn a_refused_request_with_its_whole_body_keeps_the_connection() {
    let o = Origin::start();
    let gw = Gateway::start(&one_service_config(&o.url(), "plugins:\n  - name: jwt\n"));
    let mut c = gw.client();
    // Two in one write: the second is parsed after the first's body, not from it.
    c.send(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 15\r\n\r\nGET /x HTTP/1.1POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
        .unwrap();
    for path in ["/a", "/b"] {
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 401, "{path}: {r:?}");
        assert_ne!(r.header("connection"), Some("close"), "{path}: {r:?}");
    }
    let r = c.roundtrip(b"GET /c HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 401, "the connection still serves: {r:?}");
    assert!(o.requests().is_empty(), "nothing reached the upstream");

    let mut c = gw.client();
    c.send(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly part")
        .unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert!(c.closed_within(CLOSE_DEADLINE));
}

/// A request refused while its large body is still arriving: the answer reaches the
/// client whole (the gateway closes lingering, reading and dropping what still comes,
/// rather than resetting the connection under its answer), and the connection then ends.
#[test]
fn a_refusal_during_a_large_upload_reaches_the_client() {
    let o = Origin::start();
    let gw = Gateway::start(&one_service_config(&o.url(), "plugins:\n  - name: jwt\n"));
    for round in 0..3 {
        let mut c = gw.client();
        let mut sender = c.conn.stream.try_clone().unwrap();
        let upload = std::thread::spawn(move || {
            use std::io::Write;
            let _ = sender
                .write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 8388608\r\n\r\n");
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..128 {
                if sender.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        let r = c
            .read_response_within(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!(r.status, 401, "round {round}: {r:?}");
        assert_eq!(r.json()["message"], "Unauthorized", "round {round}");
        assert!(c.closed_within(Duration::from_secs(5)), "round {round}");
        let _ = upload.join();
    }
    assert!(o.requests().is_empty());
}
