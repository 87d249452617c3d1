//! The upstream fault matrix (SPEC §3 "Upstreams", "Retries", generated responses) for the
//! faults tests/upstream.rs does not cover: resets (RST, not FIN) before and inside the
//! response head and inside the body, a half-closed upstream, bodies longer than declared,
//! unsolicited bytes on an idle pooled connection, and stalls past `read_timeout`.
//!
//! Each test then sends a normal request through the same gateway: a fault must never leave
//! a poisoned connection in the pool.
//!
//! The faults need control of the socket (SO_LINGER 0, half-close, timed writes), so the
//! upstream here is a small raw server of its own rather than support's `Origin`.

mod support;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const BAD_GATEWAY: &str = "An invalid response was received from the upstream server";
const TIMING_OUT: &str = "The upstream server is timing out";

// ---------------------------------------------------------------------------------------
// a raw upstream

/// One request as the raw upstream saw it.
#[derive(Clone, Debug)]
struct Seen {
    conn: usize,
    method: String,
    target: String,
}

/// What a handler gets: the connection, and the request just read (head and body).
struct Req<'a> {
    conn: &'a mut BufConn,
    id: usize,
    target: &'a str,
}

impl Req<'_> {
    fn write(&mut self, bytes: &[u8]) -> bool {
        self.conn.write_all(bytes).is_ok()
    }
    /// The normal answer: 200 whose body names the target and the connection.
    fn ok(&mut self) -> bool {
        let body = format!("ok {}", self.target);
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Origin-Conn: {}\r\nX-Origin-Target: {}\r\n\r\n{body}",
            body.len(),
            self.id,
            self.target
        );
        self.write(reply.as_bytes())
    }
}

type RawHandler = Arc<dyn Fn(&mut Req) -> bool + Send + Sync>;

/// A scriptable upstream on raw sockets: the handler runs after each complete request and
/// returns whether to keep the connection for another request. Returning false drops the
/// socket without a shutdown, so a handler that set SO_LINGER 0 makes it an RST.
struct RawOrigin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    conns: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl RawOrigin {
    fn start(f: impl Fn(&mut Req) -> bool + Send + Sync + 'static) -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: RawHandler = Arc::new(f);
        let (seen2, conns2, stop2) = (seen.clone(), conns.clone(), stop.clone());
        let accept = thread::spawn(move || {
            for s in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                let id = conns2.fetch_add(1, Ordering::SeqCst) + 1;
                let (h, seen) = (handler.clone(), seen2.clone());
                thread::spawn(move || serve(s, id, &h, &seen));
            }
        });
        RawOrigin {
            addr,
            seen,
            conns,
            stop,
            accept: Some(accept),
        }
    }
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    /// Requests for `target` that reached the upstream.
    fn attempts(&self, target: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.target == target)
            .collect()
    }
    fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(s: TcpStream, id: usize, h: &RawHandler, seen: &Mutex<Vec<Seen>>) {
    let mut conn = BufConn::new(s);
    loop {
        let now = Instant::now();
        let head = match conn.read_head(now + Duration::from_secs(30), now + RESPONSE_DEADLINE) {
            Ok(Some(h)) => h,
            _ => return,
        };
        let text = String::from_utf8_lossy(&head).to_string();
        let mut rl = text.split("\r\n").next().unwrap_or("").split(' ');
        let method = rl.next().unwrap_or("").to_string();
        let target = rl.next().unwrap_or("").to_string();
        let cl = text
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = Vec::new();
        if conn
            .read_exact_into(cl, &mut body, Instant::now() + RESPONSE_DEADLINE)
            .is_err()
        {
            return;
        }
        seen.lock().unwrap().push(Seen {
            conn: id,
            method,
            target: target.clone(),
        });
        let mut req = Req {
            conn: &mut conn,
            id,
            target: &target,
        };
        if !h(&mut req) {
            return; // dropped as is: FIN, or RST when the handler set SO_LINGER 0
        }
    }
}

/// Makes the next close of `s` an RST (SO_LINGER 0).
fn arm_reset(s: &TcpStream) {
    socket2::SockRef::from(s)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

/// Writes `bytes`, gives the gateway a moment to read them, then resets the connection.
fn write_then_reset(req: &mut Req, bytes: &[u8]) -> bool {
    let _ = req.conn.stream.write_all(bytes);
    thread::sleep(Duration::from_millis(100));
    arm_reset(&req.conn.stream);
    false
}

// ---------------------------------------------------------------------------------------
// helpers

fn gateway(url: &str, service_extra: &str) -> Gateway {
    Gateway::start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: {url}\n{service_extra}    routes:\n      - name: all\n        paths: [\"/\"]\n"
    ))
}

fn assert_kong_json(r: &Response, status: u16, message: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8"),
        "{r:?}"
    );
    assert_eq!(r.json()["message"], message, "{r:?}");
}

/// A normal request on `c` gets its own answer.
fn assert_normal(c: &mut Client, path: &str) -> Response {
    let r = c.roundtrip(&get_req(path, "a"));
    assert_eq!(r.status, 200, "{path} after a fault: {r:?}");
    assert_eq!(
        r.body_str(),
        format!("ok {path}"),
        "{path} got another answer: {r:?}"
    );
    r
}

/// Reads a response that must be cut short: the client sees the connection end (EOF or
/// reset) before a complete response, within `within`, never a hang and never a
/// complete-looking response. Returns what arrived.
fn expect_aborted(c: &mut Client, within: Duration, what: &str) -> Vec<u8> {
    match c.read_response_within(within) {
        Ok(r) => panic!("{what}: a broken upstream response was delivered as complete: {r:?}"),
        Err(ReadErr::Timeout(b)) => panic!(
            "{what}: client connection left hanging for {within:?} ({} bytes)",
            b.len()
        ),
        Err(ReadErr::Malformed(m, b)) => panic!(
            "{what}: malformed bytes to the client ({m}): {:?}",
            String::from_utf8_lossy(&b)
        ),
        Err(e) => e.received().to_vec(),
    }
}

// ---------------------------------------------------------------------------------------
// resets

#[test]
fn reset_before_response_head_gives_502_and_idempotent_requests_retry() {
    let first_rst = Arc::new(AtomicBool::new(true));
    let o = RawOrigin::start(move |req| match req.target {
        "/rst" => write_then_reset(req, b""),
        "/rst-once" if first_rst.swap(false, Ordering::SeqCst) => write_then_reset(req, b""),
        _ => req.ok(),
    });
    let gw = gateway(&o.url(), "    retries: 1\n");
    let mut c = gw.client();
    assert_normal(&mut c, "/warm"); // leaves one connection in the pool

    let r = c.roundtrip(&get_req("/rst", "a"));
    assert_kong_json(&r, 502, BAD_GATEWAY);
    // a GET reset before any response byte is retried: once more on a fresh connection
    // because the first try was on a pooled one (free), then once for retries: 1
    let n = o.attempts("/rst").len();
    assert!(
        (2..=3).contains(&n),
        "GET reset before the head: want 2-3 attempts, got {n}: {:?}",
        o.seen()
    );
    assert_normal(&mut c, "/after-get-rst");

    let r = c.roundtrip(&req_with_body("POST", "/rst", "a", b"id=1"));
    assert_kong_json(&r, 502, BAD_GATEWAY);
    thread::sleep(Duration::from_millis(200));
    let posts: Vec<_> = o
        .attempts("/rst")
        .into_iter()
        .filter(|s| s.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1, "a POST is never sent twice: {posts:?}");
    assert_normal(&mut c, "/after-post-rst");

    // one reset, then the retry succeeds
    let r = c.roundtrip(&get_req("/rst-once", "a"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body_str(), "ok /rst-once");
    assert_eq!(o.attempts("/rst-once").len(), 2, "{:?}", o.seen());
    assert_normal(&mut gw.client(), "/fresh-client");
}

#[test]
fn reset_inside_response_head_gives_502_without_retry() {
    let o = RawOrigin::start(|req| match req.target {
        "/half-head" => write_then_reset(req, b"HTTP/1.1 200 OK\r\nContent-Type: te"),
        _ => req.ok(),
    });
    let gw = gateway(&o.url(), "    retries: 3\n");
    let mut c = gw.client();
    assert_normal(&mut c, "/warm");
    let start = Instant::now();
    let r = c.roundtrip(&get_req("/half-head", "a"));
    assert_kong_json(&r, 502, BAD_GATEWAY);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // the upstream had answered (part of a head): SPEC §3 retries only "before any
    // response byte", so this is not retried, whatever `retries` says
    assert_eq!(o.attempts("/half-head").len(), 1, "{:?}", o.seen());
    assert_normal(&mut c, "/after");
    assert_normal(&mut gw.client(), "/after-fresh");
}

#[test]
fn response_body_cut_short_aborts_the_client() {
    let o = RawOrigin::start(|req| match req.target {
        // Content-Length body cut by an RST
        "/cl" => {
            let mut v = b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n".to_vec();
            v.extend_from_slice(&pattern(100));
            write_then_reset(req, &v)
        }
        // the same cut by a FIN (tests/upstream.rs checks the abort; here also the pool)
        "/cl-fin" => {
            let mut v = b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n".to_vec();
            v.extend_from_slice(&pattern(100));
            let _ = req.write(&v);
            false
        }
        // a close-delimited body: FIN would end it cleanly, an RST must not
        "/until-close" => {
            let mut v = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
            v.extend_from_slice(&pattern(100));
            write_then_reset(req, &v)
        }
        _ => req.ok(),
    });
    let gw = gateway(&o.url(), "    retries: 2\n");
    for path in ["/cl", "/cl-fin", "/until-close"] {
        let mut c = gw.client();
        assert_normal(&mut c, "/warm");
        c.send(&get_req(path, "a")).unwrap();
        let got = expect_aborted(&mut c, Duration::from_secs(5), path);
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 200"),
            "{path}: {:?}",
            String::from_utf8_lossy(&got)
        );
        assert_eq!(o.attempts(path).len(), 1, "{path}: {:?}", o.seen());
        assert_normal(&mut gw.client(), "/after");
    }
    // Counted, and logged as nginx logs "upstream prematurely closed connection".
    assert_eq!(cut_responses(&gw), 3);
    let logged = gw.stderr_text();
    assert!(
        logged.contains("the client's connection was cut")
            && logged.contains("upstream 127.0.0.1:"),
        "{logged}"
    );
}

/// `ringway_upstream_cut_responses_total`, over the workers.
fn cut_responses(gw: &Gateway) -> u64 {
    gw.admin_get("/metrics")
        .body_str()
        .lines()
        .filter(|l| l.starts_with("ringway_upstream_cut_responses_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

// ---------------------------------------------------------------------------------------
// half-close

#[test]
fn upstream_half_close_without_reply_gives_502() {
    let gateway_closed = Arc::new(AtomicUsize::new(0));
    let gc = gateway_closed.clone();
    let o = RawOrigin::start(move |req| match req.target {
        "/half-close" => {
            // shut our write side after reading the request, keep reading: the gateway
            // sees EOF while the socket stays open
            let _ = req.conn.stream.shutdown(Shutdown::Write);
            if req.conn.fill(Instant::now() + Duration::from_secs(5)).ok() == Some(0) {
                gc.fetch_add(1, Ordering::SeqCst);
            }
            false
        }
        _ => req.ok(),
    });
    // a long read_timeout: the answer must come from the EOF, not from a timer
    let gw = gateway(&o.url(), "    retries: 0\n    read_timeout: 20000\n");
    let mut c = gw.client();
    assert_normal(&mut c, "/warm");
    let start = Instant::now();
    let r = c.roundtrip(&get_req("/half-close", "a"));
    let took = start.elapsed();
    assert_kong_json(&r, 502, BAD_GATEWAY);
    assert!(took < Duration::from_secs(3), "502 after {took:?}");
    let attempts = o.attempts("/half-close").len();
    // retries: 0, plus the one free attempt because the first went on a pooled connection
    assert!((1..=2).contains(&attempts), "{:?}", o.seen());
    // the gateway closes its side of every half-closed connection (none kept, none pooled)
    let all_closed = wait_for(Duration::from_secs(5), || {
        (gateway_closed.load(Ordering::SeqCst) == attempts).then_some(())
    });
    assert!(
        all_closed.is_some(),
        "gateway kept {} of {attempts} half-closed upstream connections open",
        attempts - gateway_closed.load(Ordering::SeqCst)
    );
    assert_normal(&mut c, "/after");
}

// ---------------------------------------------------------------------------------------
// bodies longer than declared, unsolicited bytes

#[test]
fn body_longer_than_content_length_is_cut_and_connection_not_reused() {
    const BIG: usize = 200_000;
    let o = RawOrigin::start(|req| match req.target {
        // the excess arrives in the same read as the head
        "/small" => {
            req.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloGARBAGE-AFTER-BODY")
        }
        // the excess arrives in a later read than the head
        "/big" => {
            let mut v = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").into_bytes();
            v.extend_from_slice(&pattern(BIG));
            v.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Evil: 1\r\n\r\nevil");
            req.write(&v)
        }
        _ => req.ok(),
    });
    let gw = gateway(&o.url(), "    retries: 0\n");
    let mut c = gw.client();
    let r = c.roundtrip(&get_req("/small", "a"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"hello", "exactly Content-Length bytes: {r:?}");
    let r = c.roundtrip(&get_req("/big", "a"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body.len(), BIG);
    assert_eq!(fnv1a(&r.body), fnv1a(&pattern(BIG)), "body corrupted");
    // no excess byte reached the client on this connection
    assert_eq!(
        c.wait_close(Duration::from_millis(300)),
        CloseState::Open,
        "excess upstream bytes reached the client (or the connection was closed)"
    );
    for path in ["/next1", "/next2"] {
        let r = assert_normal(&mut c, path);
        assert!(r.header("x-evil").is_none(), "{r:?}");
    }
    // The client had the whole declared body: logged, not counted as a cut response.
    assert_eq!(cut_responses(&gw), 0);
    let logged = gw.stderr_text();
    assert!(
        logged.contains("sent bytes past the end of the response"),
        "{logged}"
    );
    // neither out-of-step connection was reused
    for s in o.seen() {
        if s.target.starts_with("/next") {
            let bad: Vec<_> = o
                .seen()
                .into_iter()
                .filter(|f| (f.target == "/small" || f.target == "/big") && f.conn == s.conn)
                .collect();
            assert!(bad.is_empty(), "{s:?} reused the connection of {bad:?}");
        }
    }
}

#[test]

fn unsolicited_bytes_on_an_idle_pooled_connection_never_answer_a_request() {
    // The first exchange is clean; 100 ms after it the upstream sends a whole unsolicited
    // response on the now idle (pooled) connection. Whatever the gateway does with that
    // connection, the next request must get its own answer, never the stray one
    // (a response desync: nginx closes an idle keep-alive connection that becomes readable).
    let o = RawOrigin::start(|req| match req.target {
        "/then-stray" => {
            if !req.ok() {
                return false;
            }
            thread::sleep(Duration::from_millis(100));
            req.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Evil: 1\r\n\r\nevil")
        }
        _ => req.ok(),
    });
    let gw = gateway(&o.url(), "    retries: 0\n");
    let mut c = gw.client();
    assert_normal(&mut c, "/then-stray");
    thread::sleep(Duration::from_millis(400));
    for path in ["/get1", "/get2"] {
        let r = c.roundtrip(&get_req(path, "a"));
        assert!(
            r.status == 200 && r.body_str() == format!("ok {path}"),
            "GET {path} got the unsolicited response: {r:?}"
        );
    }
    let r = c.roundtrip(&req_with_body("POST", "/post1", "a", b"x"));
    assert_eq!(r.body_str(), "ok /post1", "{r:?}");
}

#[test]
fn a_stray_response_moments_after_a_real_one_never_answers_the_next_get() {
    // A few milliseconds after a clean exchange (well within one housekeeping tick) the
    // upstream writes a whole unsolicited response on the pooled connection. The next GET,
    // sent as soon as those bytes are there, must get its own answer: the gateway checks
    // every pooled connection before reuse, not only those idle for a while.
    let stray_sent = Arc::new(AtomicBool::new(false));
    let flag = stray_sent.clone();
    let o = RawOrigin::start(move |req| match req.target {
        "/then-stray-soon" => {
            if !req.ok() {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
            let written =
                req.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Evil: 1\r\n\r\nevil");
            flag.store(true, Ordering::SeqCst);
            written
        }
        _ => req.ok(),
    });
    let gw = gateway(&o.url(), "    retries: 0\n");
    let mut c = gw.client();
    for round in 0..3 {
        stray_sent.store(false, Ordering::SeqCst);
        assert_normal(&mut c, "/then-stray-soon");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !stray_sent.load(Ordering::SeqCst) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        let path = format!("/next{round}");
        let r = c.roundtrip(&get_req(&path, "a"));
        assert!(
            r.status == 200 && r.body_str() == format!("ok {path}") && r.header("x-evil").is_none(),
            "GET {path} got the unsolicited response: {r:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// stalls past read_timeout
//
// Reading of SPEC §2/§3: `read_timeout` is Kong's field, i.e. nginx's proxy_read_timeout,
// a bound on each wait for upstream bytes (between two successive reads), not on the whole
// response. So a head whose bytes stop for longer than read_timeout is a 504, while a head
// trickled with shorter gaps is (slowly) proxied.

#[test]
fn response_head_stalled_past_read_timeout_gives_504() {
    let o = RawOrigin::start(|req| match req.target {
        "/stall-head" => {
            if !req.write(b"HTTP/1.1 200 OK\r\nContent-") {
                return false;
            }
            thread::sleep(Duration::from_millis(1500));
            // the rest arrives late: it must not become anyone's answer
            req.write(b"Length: 4\r\nX-Late: 1\r\n\r\nlate")
        }
        "/trickle-head" => {
            let v = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Trickled: 1\r\n\r\nok /trickle-head",
                "ok /trickle-head".len()
            );
            for piece in v.as_bytes().chunks(12) {
                if !req.write(piece) {
                    return false;
                }
                thread::sleep(Duration::from_millis(150));
            }
            true
        }
        _ => req.ok(),
    });
    let gw = gateway(&o.url(), "    retries: 3\n    read_timeout: 500\n");
    let mut c = gw.client();
    assert_normal(&mut c, "/warm");
    let start = Instant::now();
    let r = c.roundtrip(&get_req("/stall-head", "a"));
    let took = start.elapsed();
    assert_kong_json(&r, 504, TIMING_OUT);
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1400),
        "504 must come ~read_timeout (500 ms) after the last upstream byte, came after {took:?}"
    );
    assert_eq!(
        o.attempts("/stall-head").len(),
        1,
        "timeouts are not retried"
    );
    // wait for the late bytes to be written, then the pool must still be clean
    thread::sleep(Duration::from_millis(1300));
    let r = assert_normal(&mut c, "/after-stall");
    assert!(r.header("x-late").is_none(), "{r:?}");

    // gaps of 150 ms < read_timeout: slow, but never a 504
    let start = Instant::now();
    let r = c.roundtrip(&get_req("/trickle-head", "a"));
    assert_eq!(r.status, 200, "after {:?}: {r:?}", start.elapsed());
    assert_eq!(r.body_str(), "ok /trickle-head");
    assert_normal(&mut c, "/after-trickle");
}

#[test]
fn response_body_stalled_past_read_timeout_aborts_the_client() {
    let o = RawOrigin::start(|req| match req.target {
        "/stall-body" => {
            let mut v = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec();
            v.extend_from_slice(&pattern(100));
            if !req.write(&v) {
                return false;
            }
            // then one byte per 1.2 s: each gap exceeds read_timeout
            for _ in 0..3 {
                thread::sleep(Duration::from_millis(1200));
                if !req.write(b"x") {
                    return false;
                }
            }
            false
        }
        _ => req.ok(),
    });
    let gw = gateway(&o.url(), "    retries: 0\n    read_timeout: 500\n");
    let mut c = gw.client();
    assert_normal(&mut c, "/warm");
    let start = Instant::now();
    c.send(&get_req("/stall-body", "a")).unwrap();
    let got = expect_aborted(&mut c, Duration::from_secs(5), "/stall-body");
    let took = start.elapsed();
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "the head and the first bytes were forwarded before the stall: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(2500),
        "client cut ~read_timeout after the stall, not after {took:?}"
    );
    assert_normal(&mut gw.client(), "/after");
    assert_eq!(cut_responses(&gw), 1);
    let logged = gw.stderr_text();
    assert!(
        logged.contains("sent no response body bytes for read_timeout"),
        "{logged}"
    );
}

// ---------------------------------------------------------------------------------------
// connect refused (tests/upstream.rs checks the 502 itself; here: the gateway stays usable)

#[test]
fn connect_refused_gives_502_fast_and_other_services_keep_working() {
    let o = RawOrigin::start(|req| req.ok());
    let dead = closed_port();
    let gw = Gateway::start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: dead\n    url: http://127.0.0.1:{dead}\n    retries: 2\n    routes:\n      - name: dead\n        paths: [\"/dead\"]\n  - name: live\n    url: {}\n    routes:\n      - name: live\n        paths: [\"/\"]\n",
        o.url()
    ));
    let mut c = gw.client();
    for i in 0..3 {
        let start = Instant::now();
        let r = c.roundtrip(&get_req("/dead", "a"));
        assert_kong_json(&r, 502, BAD_GATEWAY);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "refused connect (3 attempts) took {:?}",
            start.elapsed()
        );
        // same client connection, kept alive after the 502
        assert_normal(&mut c, &format!("/live{i}"));
    }
    assert_eq!(
        o.connections(),
        1,
        "the live service's connection is pooled"
    );
    // Why, for the operator: one line for the three failures within a second (not one
    // per request), naming the service and the address, not the path.
    let stderr = gw.stderr_text();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("service 'dead'"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(&format!("upstream 127.0.0.1:{dead}: connect failed (502)"))
            && !lines[0].contains("/dead"),
        "{stderr}"
    );
    // The two held back are counted once their second is over, with no later failure.
    let counted = wait_for(Duration::from_secs(5), || {
        gw.stderr_text()
            .contains("2 more upstream failures on this worker since its last such line")
            .then_some(())
    });
    assert!(counted.is_some(), "{}", gw.stderr_text());

    // A client's request ID is quoted and cut short in that line: it can pass neither
    // for more of the line nor make it long.
    let gw = Gateway::start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: dead\n    url: http://127.0.0.1:{dead}\n    routes:\n      - name: dead\n        paths: [\"/dead\"]\nplugins:\n  - name: correlation-id\n    config: {{header_name: X-Request-ID}}\n"
    ));
    let id = format!("abc\" injected {}", "x".repeat(500));
    let r = gw.client().roundtrip(
        format!("GET /dead HTTP/1.1\r\nHost: a\r\nX-Request-ID: {id}\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 502);
    let stderr = gw.stderr_text();
    let line = stderr
        .lines()
        .find(|l| l.contains("service 'dead'"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains(r#"request "abc\" injected xxx"#), "{line}");
    assert!(line.len() < 400, "{line}");
}

// ---------------------------------------------------------------------------------------
// the client connection after a generated upstream failure

/// A gateway with a service nobody listens for (`/dead`) beside a live one.
fn dead_and_live(o: &RawOrigin) -> Gateway {
    Gateway::start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: dead\n    url: http://127.0.0.1:{}\n    routes:\n      - name: dead\n        paths: [\"/dead\"]\n  - name: live\n    url: {}\n    routes:\n      - name: live\n        paths: [\"/\"]\n",
        closed_port(),
        o.url()
    ))
}

/// Sends `request` (for `/dead`) on a new connection, then `after`: the answer is a 502
/// with `Connection: close`, the connection is closed, and nothing reached the live
/// upstream.
fn a_502_then_closed(gw: &Gateway, o: &RawOrigin, request: &[u8], after: &[u8], what: &str) {
    let mut c = gw.client();
    c.send(request).unwrap();
    let r = c.read_response().unwrap();
    assert_kong_json(&r, 502, BAD_GATEWAY);
    assert_eq!(r.header("connection"), Some("close"), "{what}: {r:?}");
    // The peer may already have closed: a failed send is fine.
    let _ = c.send(after);
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "{what}: the connection was kept open"
    );
    assert_eq!(
        o.connections(),
        0,
        "{what}: a request reached the live upstream: {:?}",
        o.seen()
    );
}

#[test]
fn a_502_honours_connection_close_and_http_1_0() {
    let o = RawOrigin::start(|req| req.ok());
    let gw = dead_and_live(&o);
    // A request pipelined behind it (in the same write) never reaches any upstream.
    a_502_then_closed(
        &gw,
        &o,
        b"GET /dead HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n",
        b"",
        "Connection: close",
    );
    a_502_then_closed(&gw, &o, b"GET /dead HTTP/1.0\r\n\r\n", b"", "HTTP/1.0");
}

#[test]
fn a_502_before_the_request_body_was_read_closes_the_connection() {
    let o = RawOrigin::start(|req| req.ok());
    let gw = dead_and_live(&o);
    // Half of the body with the head; the rest (which looks like a request) after the
    // answer.
    a_502_then_closed(
        &gw,
        &o,
        b"POST /dead HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\n\r\n0123456789",
        b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        "the request body unread",
    );
}

#[test]
fn a_502_to_head_has_no_body() {
    let o = RawOrigin::start(|req| req.ok());
    let gw = dead_and_live(&o);
    let mut c = gw.client();
    c.send(b"HEAD /dead HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = c.read_head_response().unwrap();
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.is_empty(), "{r:?}");
    // The next response on the connection is read from where it starts.
    assert_normal(&mut c, "/next");
}

/// An upstream that runs `serve` on a thread of its own for each connection it
/// accepts; returns its address.
fn upstream_per_connection(serve: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { return };
            thread::spawn(move || serve(s));
        }
    });
    addr
}

/// An upstream that answers an upload at its head and then neither reads nor closes
/// (a size limit that leaves the connection to time out): its answer reaches the client
/// at once, not a 504 once a write times out, nor a 408 when the client pauses.
#[test]
fn an_answer_while_the_body_streams_ends_the_upload() {
    let addr = upstream_per_connection(|s| {
        let mut conn = BufConn::new(s);
        let deadline = Instant::now() + RESPONSE_DEADLINE;
        if let Ok(Some(_head)) = conn.read_head(deadline, deadline) {
            let _ = conn
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large");
        }
        // Holds the connection, reading nothing.
        thread::sleep(Duration::from_secs(20));
    });
    // Longer than the test waits: without the early answer, a 504 or a 408 comes later.
    let config = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: http://{addr}\n    write_timeout: 30000\n    routes:\n      - paths: [\"/\"]\n"
    );
    // On both drivers: a client that keeps sending (the write to the upstream blocks)
    // and one that sends a little and pauses (the gateway waits on the client).
    for (round, (driver, sent)) in [
        ("io_uring", 16usize << 20),
        ("io_uring", 100 << 10),
        ("epoll", 16 << 20),
        ("epoll", 100 << 10),
    ]
    .into_iter()
    .enumerate()
    {
        let gw = Gateway::start_with(
            &config,
            GatewayOpts::default().env("RINGWAY_DRIVER", driver),
        );
        let mut c = gw.client();
        let mut sender = c.conn.stream.try_clone().unwrap();
        let head = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 50000000\r\n\r\n";
        let upload = thread::spawn(move || {
            let _ = sender.write_all(head.as_bytes());
            let _ = sender.write_all(&vec![b'x'; sent]);
        });
        let r = c
            .read_response_within(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("round {round} ({driver}): {e:?}"));
        assert_eq!(r.status, 413, "round {round} ({driver}): {r:?}");
        assert_eq!(r.body, b"too large", "round {round}");
        assert!(c.closed_within(CLOSE_DEADLINE), "round {round}");
        let _ = upload.join();
    }
}

/// The same early answer to an upload sent on a pooled connection, one whose next read
/// the gateway posted while it sat idle: that read gives way to the watch on the
/// socket, so the 413 still ends the upload at once, on both drivers.
#[test]
fn an_answer_to_an_upload_on_a_pooled_connection_ends_it() {
    static CONNS: AtomicUsize = AtomicUsize::new(0);
    let addr = upstream_per_connection(|s| {
        CONNS.fetch_add(1, Ordering::SeqCst);
        let mut conn = BufConn::new(s);
        let deadline = Instant::now() + RESPONSE_DEADLINE;
        while let Ok(Some(head)) = conn.read_head(deadline, deadline) {
            if head.starts_with(b"POST") {
                let _ = conn.write_all(
                    b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large",
                );
                // Holds the connection, reading nothing.
                thread::sleep(Duration::from_secs(20));
                return;
            }
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let config = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: http://{addr}\n    write_timeout: 30000\n    routes:\n      - paths: [\"/\"]\n"
    );
    for driver in ["io_uring", "epoll"] {
        let before = CONNS.load(Ordering::SeqCst);
        // One worker (the default): every request meets the same pool.
        let gw = Gateway::start_with(
            &config,
            GatewayOpts::default().env("RINGWAY_DRIVER", driver),
        );
        let mut c = gw.client();
        for _ in 0..2 {
            let r = c.roundtrip(b"GET /warm HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(
                (r.status, r.body_str()),
                (200, "ok".to_string()),
                "{driver}"
            );
            // Idle a while: the read posted on the pooled connection is with the kernel.
            thread::sleep(Duration::from_millis(50));
        }
        let mut sender = c.conn.stream.try_clone().unwrap();
        let head = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 50000000\r\n\r\n";
        let upload = thread::spawn(move || {
            let _ = sender.write_all(head.as_bytes());
            let _ = sender.write_all(&vec![b'x'; 16 << 20]);
        });
        let r = c
            .read_response_within(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{driver}: {e:?}"));
        assert_eq!(
            (r.status, r.body.as_slice()),
            (413, &b"too large"[..]),
            "{driver}"
        );
        assert!(c.closed_within(CLOSE_DEADLINE), "{driver}");
        let _ = upload.join();
        assert_eq!(
            CONNS.load(Ordering::SeqCst) - before,
            1,
            "{driver}: the upload went on the pooled connection"
        );
    }
}

/// An upstream that takes the head and then stops reading: the upload stalls, and at
/// the service's `write_timeout` the client gets its 504. A client that goes on sending
/// a little meanwhile (as one that reads only between writes does) is not reset: the
/// gateway closes lingering, reading and dropping what still comes.
#[test]
fn a_write_timeout_answer_does_not_reset_a_client_still_uploading() {
    // Held, never read.
    let addr = upstream_per_connection(|s| {
        thread::sleep(Duration::from_secs(20));
        drop(s);
    });
    let config = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: http://{addr}\n    write_timeout: 300\n    retries: 0\n    routes:\n      - paths: [\"/\"]\n"
    );
    let gw = Gateway::start(&config);
    for round in 0..2 {
        let mut c = gw.client();
        let mut sender = c.conn.stream.try_clone().unwrap();
        let answered = Arc::new(AtomicBool::new(false));
        let seen = answered.clone();
        let upload = thread::spawn(move || -> std::io::Result<()> {
            let head = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 200000000\r\n\r\n";
            sender.write_all(head.as_bytes())?;
            let chunk = vec![b'x'; 64 << 10];
            // Until the answer is read, then 256 KiB more.
            while !seen.load(Ordering::SeqCst) {
                sender.write_all(&chunk)?;
            }
            for _ in 0..4 {
                sender.write_all(&chunk)?;
            }
            Ok(())
        });
        let r = c
            .read_response_within(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!(r.status, 504, "round {round}: {r:?}");
        answered.store(true, Ordering::SeqCst);
        let sent = upload.join().unwrap();
        assert!(
            sent.is_ok(),
            "round {round}: the upload was reset: {sent:?}"
        );
        assert!(c.closed_within(Duration::from_secs(5)), "round {round}");
    }
}

/// A `100 Continue` the upstream sends unasked, before it reads the body, is no answer:
/// the whole body still goes up, and the final response comes back.
#[test]
fn an_unasked_100_continue_does_not_end_the_upload() {
    let addr = upstream_per_connection(|s| {
        let mut conn = BufConn::new(s);
        let deadline = Instant::now() + RESPONSE_DEADLINE;
        let Ok(Some(_head)) = conn.read_head(deadline, deadline) else {
            return;
        };
        let _ = conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        thread::sleep(Duration::from_millis(200));
        let mut body = Vec::new();
        let _ = conn.read_exact_into(8 << 20, &mut body, deadline);
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            body.len().to_string().len()
        );
        let _ = conn.write_all(answer.as_bytes());
        let _ = conn.write_all(body.len().to_string().as_bytes());
    });
    let gw = gateway(&format!("http://{addr}"), "");
    let mut c = gw.client();
    let mut sender = c.conn.stream.try_clone().unwrap();
    let upload = thread::spawn(move || {
        let _ = sender
            .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 8388608\r\n\r\n");
        let _ = sender.write_all(&vec![b'y'; 8 << 20]);
    });
    let r = c.read_response_within(Duration::from_secs(20)).unwrap();
    assert_eq!(
        (r.status, r.body_str()),
        (200, "8388608".to_string()),
        "{r:?}"
    );
    let _ = upload.join();
}

/// Interim answers before the final one are taken (a long job's `102 Processing`), but
/// not without end: each restarts `read_timeout`, so an upstream sending only them would
/// hold the request forever. Past 64 of them the answer is a 502.
#[test]
fn endless_interim_answers_end_in_a_502() {
    let addr = upstream_per_connection(|s| {
        let mut conn = BufConn::new(s);
        let deadline = Instant::now() + RESPONSE_DEADLINE;
        let Ok(Some(head)) = conn.read_head(deadline, deadline) else {
            return;
        };
        let endless = head.starts_with(b"GET /endless");
        for _ in 0..if endless { 1000 } else { 3 } {
            if conn.write_all(b"HTTP/1.1 102 Processing\r\n\r\n").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    });
    let gw = gateway(&format!("http://{addr}"), "");
    let r = gw.get("/some");
    assert_eq!((r.status, r.body_str()), (200, "ok".to_string()), "{r:?}");
    let start = Instant::now();
    let r = gw.get("/endless");
    assert_kong_json(&r, 502, BAD_GATEWAY);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

/// An upstream that sends its success head before it has read the body, then reads the
/// whole body and only then sends the response body (a streaming server): the upload is
/// not cut at the head, a client that pauses mid-body still gets the whole answer, and
/// the connection stays open.
#[test]
fn an_early_success_head_does_not_end_the_upload() {
    let addr = upstream_per_connection(|s| {
        let mut conn = BufConn::new(s);
        let deadline = Instant::now() + RESPONSE_DEADLINE;
        while let Ok(Some(_head)) = conn.read_head(deadline, deadline) {
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            let mut body = Vec::new();
            if conn.read_exact_into(10, &mut body, deadline).is_err() {
                return;
            }
            let text = format!("received {}", String::from_utf8_lossy(&body));
            let _ = conn.write_all(format!("{:x}\r\n{text}\r\n0\r\n\r\n", text.len()).as_bytes());
        }
    });
    let gw = gateway(&format!("http://{addr}"), "");
    let mut c = gw.client();
    for round in 0..2 {
        c.send(b"POST /stream HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234")
            .unwrap();
        thread::sleep(Duration::from_millis(300));
        c.send(b"56789").unwrap();
        let r = c
            .read_response_within(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!(
            (r.status, r.body_str()),
            (200, "received 0123456789".to_string()),
            "round {round}: {r:?}"
        );
        assert_ne!(
            r.header("connection"),
            Some("close"),
            "round {round}: {r:?}"
        );
    }
}

/// An upstream that answers a large upload at its head (413, as a size limit does) and
/// closes without reading the body: the client gets that answer, not a 502, and then a
/// close, since the rest of its body is never read. The connection the gateway wrote to
/// is not pooled.
#[test]
fn an_answer_before_the_body_was_taken_reaches_the_client() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = conns.clone();
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let mut conn = BufConn::new(s);
            let deadline = Instant::now() + RESPONSE_DEADLINE;
            if let Ok(Some(_head)) = conn.read_head(deadline, deadline) {
                let _ = conn.write_all(
                    b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large",
                );
            }
            // Dropped with the body unread: the kernel resets the connection.
        }
    });
    let gw = gateway(&format!("http://{addr}"), "");
    for round in 0..2 {
        let mut c = gw.client();
        let body = vec![b'x'; 4 << 20];
        let mut sender = c.conn.stream.try_clone().unwrap();
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let upload = thread::spawn(move || {
            let _ = sender.write_all(head.as_bytes());
            let _ = sender.write_all(&body);
        });
        let r = c
            .read_response_within(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!(r.status, 413, "round {round}: {r:?}");
        assert_eq!(r.body, b"too large");
        assert!(
            c.closed_within(CLOSE_DEADLINE),
            "round {round}: the unread rest of the body is never parsed as a request"
        );
        let _ = upload.join();
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        2,
        "nothing pooled from round 0"
    );
}

/// An upstream whose chunked framing is broken in the first bytes after its head: the
/// client gets a 502 (nothing of the body has gone out), and the failure is logged as
/// every other 502 is.
#[test]
fn broken_chunked_framing_at_the_head_is_a_logged_502() {
    let o = RawOrigin::start(|req| match req.target {
        "/broken" => {
            req.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nbroken\r\n")
        }
        _ => req.ok(),
    });
    let gw = gateway(&o.url(), "    retries: 0\n");
    let r = gw.client().roundtrip(&get_req("/broken", "a"));
    assert_kong_json(&r, 502, BAD_GATEWAY);
    let logged = wait_for(Duration::from_secs(3), || {
        let log = gw.stderr_text();
        log.contains("sent an invalid response (502)").then_some(())
    });
    assert!(logged.is_some(), "{}", gw.stderr_text());
    assert_normal(&mut gw.client(), "/after");
}
