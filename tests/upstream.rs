//! Upstream failures, retries and the keep-alive pool (SPEC §3 "Upstreams", "Retries",
//! generated responses).

mod support;

use std::time::{Duration, Instant};

use support::*;

fn config(url: &str, service_extra: &str, extra: &str) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: {url}\n{service_extra}    routes:\n      - name: all\n        paths: [\"/\"]\n{extra}"
    )
}

fn assert_kong_json(r: &Response, status: u16, message: Option<&str>) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8"),
        "{r:?}"
    );
    let j = r.json();
    let m = j["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {r:?}"));
    assert!(!m.is_empty());
    if let Some(want) = message {
        assert_eq!(m, want, "{r:?}");
    }
}

#[test]
fn connect_refused_gives_502_quickly() {
    let port = closed_port();
    let gw = Gateway::start(&config(
        &format!("http://127.0.0.1:{port}"),
        "    retries: 2\n    connect_timeout: 1000\n",
        "",
    ));
    let start = Instant::now();
    let r = gw.get("/refused");
    let took = start.elapsed();
    assert_kong_json(&r, 502, None);
    assert!(
        took < Duration::from_secs(5),
        "a refused connect (3 attempts) took {took:?}"
    );
    // POST too: nothing was sent, so retrying a connect failure is fine, and the answer is 502
    let r = gw
        .client()
        .roundtrip(&req_with_body("POST", "/refused", "a", b"x"));
    assert_kong_json(&r, 502, None);
}

#[test]
fn connect_refused_502_has_kong_message() {
    let port = closed_port();
    let gw = Gateway::start(&config(
        &format!("http://127.0.0.1:{port}"),
        "    retries: 0\n",
        "",
    ));
    let r = gw.get("/refused");
    // Kong (nginx 502 on connect error) answers with the generic 502 text
    assert_kong_json(
        &r,
        502,
        Some("An invalid response was received from the upstream server"),
    );
}

#[test]
fn idempotent_request_retried_after_close_before_response() {
    let o = Origin::script(vec![Action::Close, Action::Close]);
    let gw = Gateway::start(&config(&o.url(), "    retries: 2\n", ""));
    let r = gw.get("/retry-me");
    assert_eq!(
        r.status, 200,
        "two failures then success within retries=2: {r:?}"
    );
    let reqs = o.requests();
    assert_eq!(reqs.len(), 3, "three attempts reached the origin: {reqs:?}");
    assert!(reqs.iter().all(|r| r.target == "/retry-me"));
}

#[test]
fn an_idempotent_request_is_retried_with_its_body_however_it_arrived() {
    // The body in a second segment, after the head: a PUT is still idempotent, and the
    // retry carries the same body.
    let o = Origin::script(vec![Action::Close, Action::Echo]);
    let gw = Gateway::start(&config(&o.url(), "    retries: 2\n", ""));
    let mut c = gw.client();
    c.send(b"PUT /doc HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    c.send(b"hello world").unwrap();
    let r = c.read_response().expect("an answer");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body_str().ends_with("hello world"), "{}", r.body_str());
    let puts: Vec<_> = o
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 2, "tried twice: {puts:?}");
    assert!(puts.iter().all(|r| r.body == b"hello world"), "{puts:?}");

    // A chunked body too: its size shows only as it comes, and this one fits.
    let o = Origin::script(vec![Action::Close, Action::Echo]);
    let gw = Gateway::start(&config(&o.url(), "    retries: 2\n", ""));
    let mut c = gw.client();
    c.send(b"PUT /doc HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    c.send(b"5\r\nhello\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"6\r\n world\r\n0\r\n\r\n").unwrap();
    let r = c.read_response().expect("an answer");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body_str().ends_with("hello world"), "{}", r.body_str());

    // Expect: 100-continue: the 100 comes first, then the body is read whole.
    let o = Origin::script(vec![Action::Close, Action::Echo]);
    let gw = Gateway::start(&config(&o.url(), "    retries: 2\n", ""));
    let mut c = gw.client();
    c.send(b"PUT /doc HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let interim = c.read_response().expect("100 Continue");
    assert_eq!(interim.status, 100, "{interim:?}");
    c.send(b"abcde").unwrap();
    let r = c.read_response().expect("an answer");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body_str().ends_with("abcde"), "{}", r.body_str());
}

#[test]
fn retries_are_bounded_by_service_retries() {
    let o = Origin::script(vec![
        Action::Close,
        Action::Close,
        Action::Close,
        Action::Close,
    ]);
    let gw = Gateway::start(&config(&o.url(), "    retries: 1\n", ""));
    let r = gw.get("/bounded");
    assert_kong_json(&r, 502, None);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        o.requests().len(),
        2,
        "one try plus one retry: {:?}",
        o.requests()
    );
}

#[test]
fn post_never_retried_after_it_was_sent() {
    let o = Origin::script(vec![Action::Close]);
    let gw = Gateway::start(&config(&o.url(), "    retries: 5\n", ""));
    let r = gw
        .client()
        .roundtrip(&req_with_body("POST", "/pay", "a", b"id=1"));
    assert_kong_json(&r, 502, None);
    std::thread::sleep(Duration::from_millis(300));
    let posts: Vec<_> = o
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1, "a POST is never sent twice: {posts:?}");
}

#[test]
fn silent_upstream_gives_504_at_read_timeout_without_retry() {
    let o = Origin::with_handler(|_| Action::Silent);
    let gw = Gateway::start(&config(
        &o.url(),
        "    retries: 3\n    read_timeout: 700\n",
        "",
    ));
    let start = Instant::now();
    let r = gw.get("/silent");
    let took = start.elapsed();
    assert_kong_json(&r, 504, Some("The upstream server is timing out"));
    assert!(
        took >= Duration::from_millis(600),
        "504 before read_timeout: {took:?}"
    );
    assert!(
        took < Duration::from_millis(4000),
        "read timeouts are not retried (4 x 700 ms); took {took:?}"
    );
    assert_eq!(
        o.requests().len(),
        1,
        "read timeouts are not retried: {:?}",
        o.requests()
    );
}

#[test]
fn reset_mid_body_aborts_the_client_response() {
    let o = Origin::with_handler(|ctx| match ctx.req.target.as_str() {
        "/cl" => {
            let mut v = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
            v.extend_from_slice(&pattern(1000));
            Action::RespondClose(v)
        }
        _ => Action::RespondClose(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n"
                .iter()
                .copied()
                .chain(pattern(1024))
                .chain(*b"\r\n10\r\nabc")
                .collect(),
        ),
    });
    let gw = Gateway::start(&config(&o.url(), "    retries: 0\n", ""));
    for path in ["/cl", "/chunked"] {
        let mut c = gw.client();
        c.send(&get_req(path, "a")).unwrap();
        match c.read_response() {
            Ok(r) if r.status == 502 => {} // nothing was forwarded yet: acceptable
            Ok(r) => panic!("{path}: a truncated upstream body was presented as complete: {r:?}"),
            Err(ReadErr::Timeout(b)) => panic!(
                "{path}: client left hanging after the upstream died ({} bytes)",
                b.len()
            ),
            Err(_) => {}
        }
    }
}

#[test]
fn reused_connection_closed_on_arrival_get_retried_post_not() {
    // the 2nd+ request on any upstream connection is read and then the connection is closed
    // without an answer: the stale-pool race, made deterministic
    let o = Origin::with_handler(|ctx| {
        if ctx.conn_req >= 1 {
            Action::Close
        } else {
            Action::Ok
        }
    });
    // retries: 0 — the one extra attempt after a pooled connection failed does not count
    let gw = Gateway::start(&config(&o.url(), "    retries: 0\n", ""));
    let mut c = gw.client();
    let r = c.roundtrip(&get_req("/g1", "a"));
    assert_eq!(r.status, 200);
    let r = c.roundtrip(&get_req("/g2", "a"));
    assert_eq!(
        r.status, 200,
        "GET on a stale pooled connection is retried once on a fresh one: {r:?}"
    );
    let g2: Vec<_> = o
        .requests()
        .into_iter()
        .filter(|r| r.target == "/g2")
        .collect();
    assert!(!g2.is_empty() && g2.len() <= 2, "{g2:?}");

    // now a POST on the pooled connection from the successful retry
    let r = c.roundtrip(&req_with_body("POST", "/p1", "a", b"id=1"));
    let p1: Vec<_> = o
        .requests()
        .into_iter()
        .filter(|r| r.target == "/p1")
        .collect();
    assert_eq!(p1.len(), 1, "a POST is never sent twice: {p1:?}");
    if p1[0].conn_req >= 1 {
        // it went out on a reused connection that then failed: 502, no replay
        assert_kong_json(&r, 502, None);
    } else {
        assert_eq!(r.status, 200);
    }
}

#[test]
fn upstream_close_after_response_without_connection_close() {
    // Every answer is followed by a close the response never announced: each pooled
    // connection is dead (the origin has closed it) by the time the next request takes
    // it, a few milliseconds later. A GET may go out on it and is then replayed on a
    // fresh connection; a POST (never replayable) must find out before sending. Every
    // request answers 200; no POST reaches the origin twice.
    let o = Origin::with_handler(|ctx| Action::RespondClose(ok_reply(ctx.conn, ctx.req)));
    let gw = Gateway::start(&config(&o.url(), "    retries: 0\n", ""));
    let mut c = gw.client();
    for i in 0..8 {
        let r = if i % 2 == 0 {
            c.roundtrip(&get_req(&format!("/get{i}"), "a"))
        } else {
            c.roundtrip(&req_with_body("POST", &format!("/post{i}"), "a", b"id=1"))
        };
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        // The origin closes after writing: wait for it, so the race between its close
        // and the next request is not part of the test.
        assert!(
            wait_for(Duration::from_secs(3), || (o.closed_connections() > i)
                .then_some(()))
            .is_some(),
            "the origin did not close after request {i}"
        );
    }
    for i in [1, 3, 5, 7] {
        let target = format!("/post{i}");
        let n = o.requests().iter().filter(|r| r.target == target).count();
        assert_eq!(n, 1, "{target} reached the origin {n} times");
    }
}

/// An upstream that closes its idle connections: the gateway sees the close while the
/// connection sits in its pool (its posted read completes; on epoll, readiness), so
/// neither the GET nor the POST after it goes to the dead connection: both are answered
/// on a fresh one, with no retry needed (`retries: 0`), on both drivers. (Kong may
/// answer such a POST 502.)
#[test]
fn idle_closed_pooled_connection_get_transparently_retried() {
    for driver in ["io_uring", "epoll"] {
        let o = Origin::with_opts(
            OriginOpts {
                idle_close: Some(Duration::from_millis(200)),
                ..Default::default()
            },
            |_| Action::Ok,
        );
        let gw = Gateway::start_with(
            &config(
                &o.url(),
                "    retries: 0\n",
                "ringway:\n  upstream_keepalive_idle_timeout: 60000\n",
            ),
            GatewayOpts::default().env("RINGWAY_DRIVER", driver),
        );
        let mut c = gw.client();
        assert_eq!(c.roundtrip(&get_req("/a", "a")).status, 200, "{driver}");
        for (closed, request) in [
            (1, get_req("/b", "a")),
            (2, req_with_body("POST", "/post-after-idle", "a", b"id=7")),
        ] {
            // The origin closes its idle connection after 200 ms; the gateway holds it
            // pooled until then.
            assert!(
                wait_for(Duration::from_secs(3), || (o.closed_connections()
                    >= closed)
                    .then_some(()))
                .is_some(),
                "{driver}"
            );
            std::thread::sleep(Duration::from_millis(100));
            let r = c.roundtrip(&request);
            assert_eq!(r.status, 200, "{driver}: {r:?}");
        }
        let n = o
            .requests()
            .iter()
            .filter(|r| r.target == "/post-after-idle")
            .count();
        assert_eq!(n, 1, "{driver}: POST sent {n} times");
        assert_eq!(o.connections(), 3, "{driver}: a fresh connection for each");
    }
}

/// A pooled connection idle past `upstream_keepalive_idle_timeout` is closed about then,
/// not at the next whole second: the pool is swept at a quarter of the timeout.
#[test]
fn pooled_connection_closes_soon_after_a_short_idle_timeout() {
    let o = Origin::start();
    let gw = Gateway::start(&config(
        &o.url(),
        "",
        "ringway:\n  upstream_keepalive_idle_timeout: 200\n",
    ));
    let mut c = gw.client();
    assert_eq!(c.roundtrip(&get_req("/a", "a")).status, 200);
    let pooled = std::time::Instant::now();
    assert!(
        wait_for(Duration::from_secs(3), || (o.closed_connections() >= 1)
            .then_some(()))
        .is_some(),
        "the idle upstream connection was never closed"
    );
    let after = pooled.elapsed();
    assert!(
        (Duration::from_millis(180)..Duration::from_millis(700)).contains(&after),
        "closed {after:?} after the answer, with a 200 ms idle timeout"
    );
}

#[test]
fn connection_close_from_upstream_is_not_reused() {
    // the origin says `Connection: close` but leaves the socket open: the gateway must not reuse it
    let o = Origin::with_handler(|ctx| {
        Action::Respond(format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\nX-Origin-Conn: {}\r\n\r\nok", ctx.conn).into_bytes())
    });
    let gw = Gateway::start(&config(&o.url(), "", ""));
    let mut c = gw.client();
    for i in 0..3 {
        let r = c.roundtrip(&get_req(&format!("/cc{i}"), "a"));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, b"ok");
    }
    let reqs = o.requests();
    let conns: Vec<(usize, usize)> = reqs.iter().map(|r| (r.conn, r.conn_req)).collect();
    assert!(
        reqs.iter().all(|r| r.conn_req == 0),
        "a connection was reused after `Connection: close`: {conns:?}"
    );
    assert_eq!(o.connections(), 3);
}

#[test]
fn http10_upstream_response_not_reused() {
    let o = Origin::with_handler(|ctx| {
        Action::Respond(
            format!(
                "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nX-Origin-Conn: {}\r\n\r\nok",
                ctx.conn
            )
            .into_bytes(),
        )
    });
    let gw = Gateway::start(&config(&o.url(), "", ""));
    let mut c = gw.client();
    for i in 0..2 {
        let r = c.roundtrip(&get_req(&format!("/ten{i}"), "a"));
        assert_eq!(r.status, 200);
    }
    assert!(
        o.requests().iter().all(|r| r.conn_req == 0),
        "an HTTP/1.0 upstream response without keep-alive must not be reused"
    );
}

#[test]
fn failed_exchange_is_not_pooled() {
    // a truncated response body makes the connection unusable; the next request must use a new one
    let o = Origin::with_handler(|ctx| {
        if ctx.req.target == "/trunc" {
            // promise 10 bytes, send 3, keep the socket open (no close)
            Action::Delay(
                Duration::from_millis(0),
                Box::new(Action::Respond(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
                )),
            )
        } else {
            Action::Ok
        }
    });
    let gw = Gateway::start(&config(
        &o.url(),
        "    retries: 0\n    read_timeout: 600\n",
        "",
    ));
    let mut c = gw.client();
    let _ = c.send(&get_req("/trunc", "a"));
    let _ = c.read_response_within(Duration::from_secs(5));
    let mut c2 = gw.client();
    let r = c2.roundtrip(&get_req("/after", "a"));
    assert_eq!(r.status, 200, "{r:?}");
    let after = o
        .requests()
        .into_iter()
        .find(|r| r.target == "/after")
        .unwrap();
    assert_eq!(
        after.conn_req, 0,
        "the connection of a failed exchange was reused: {after:?}"
    );
}

#[test]
fn client_abort_mid_body_aborts_upstream_request() {
    let o = Origin::start();
    let gw = Gateway::start(&config(&o.url(), "", ""));
    {
        let mut c = gw.client();
        c.send(b"POST /abort HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
            .unwrap();
        // let the head and the first bytes travel upstream, then vanish
        let _ = wait_for(Duration::from_millis(1000), || {
            if o.requests().is_empty() {
                None
            } else {
                Some(())
            }
        });
    }
    // the upstream connection carrying the partial request is closed, never completed
    let ok = wait_for(Duration::from_secs(5), || {
        if o.closed_connections() == o.connections() {
            Some(())
        } else {
            None
        }
    });
    assert!(
        ok.is_some(),
        "upstream connection with a partial request left open ({} of {} closed)",
        o.closed_connections(),
        o.connections()
    );
    assert!(o.complete_requests().is_empty(), "{:?}", o.requests());
    // and the next request works on a fresh connection
    let r = gw.get("/next");
    assert_eq!(r.status, 200, "{r:?}");
    let next = o
        .requests()
        .into_iter()
        .find(|r| r.target == "/next")
        .unwrap();
    assert_eq!(next.conn_req, 0, "{next:?}");
}

#[test]
fn client_gone_while_upstream_slow_does_not_desync_the_pool() {
    let o = Origin::with_handler(|ctx| {
        if ctx.req.target == "/slow" {
            Action::Delay(Duration::from_millis(600), Box::new(Action::Ok))
        } else {
            Action::Ok
        }
    });
    let gw = Gateway::start(&config(&o.url(), "", ""));
    {
        let mut c = gw.client();
        c.send(&get_req("/slow", "a")).unwrap();
        o.wait_requests(1, RESPONSE_DEADLINE);
    } // client closes while the upstream is still working
    std::thread::sleep(Duration::from_millis(100));
    let mut c2 = gw.client();
    for i in 0..3 {
        let path = format!("/fast{i}");
        let r = c2.roundtrip(&get_req(&path, "a"));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.header("x-origin-target"),
            Some(path.as_str()),
            "got another request's response: {r:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(800));
    let r = c2.roundtrip(&get_req("/fast-late", "a"));
    assert_eq!(r.header("x-origin-target"), Some("/fast-late"), "{r:?}");
}

#[test]
fn extra_bytes_after_upstream_response_never_reach_another_request() {
    // the origin appends a second, unsolicited response after each real one; a pooled
    // connection with leftover bytes must be discarded, not read as the next answer
    let o = Origin::with_handler(|ctx| {
        let mut v = ok_reply(ctx.conn, ctx.req);
        v.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Evil: 1\r\n\r\nevil!");
        Action::Respond(v)
    });
    let gw = Gateway::start(&config(&o.url(), "", ""));
    let mut c = gw.client();
    for i in 0..3 {
        let path = format!("/x{i}");
        let r = c.roundtrip(&get_req(&path, "a"));
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            r.header("x-evil").is_none() && r.body != b"evil!",
            "request {path} got the smuggled response: {r:?}"
        );
        assert_eq!(r.header("x-origin-target"), Some(path.as_str()), "{r:?}");
    }
}
