//! Hostile clients (SPEC §2 limits, §3 "Limits"): slowloris heads and bodies, header floods
//! that never end, idle connections, clients that vanish mid-request, and
//! `ringway.max_connections`. Each test is bounded to a few seconds; the attacks use small
//! timeouts and generous margins.
//!
//! The exact size thresholds (414/431 at 8 KiB / 32 KiB / 100 headers) are in
//! tests/framing.rs; here the point is that the gateway stays bounded and responsive.

mod support;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

// ---------------------------------------------------------------------------------------
// helpers

/// Raises this process's RLIMIT_NOFILE soft limit towards `want` (the gateway, spawned
/// afterwards, inherits it); returns the soft limit in force.
#[allow(unsafe_code)]
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid local `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur >= want {
        return lim.rlim_cur;
    }
    let new = libc::rlimit {
        rlim_cur: want.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads one valid rlimit; raising the soft limit up to the hard
    // limit is always allowed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
        new.rlim_cur
    } else {
        lim.rlim_cur
    }
}

/// How many attack connections fit: `want`, or fewer when the fd limit is low (both this
/// process and the gateway hold one descriptor per connection, plus some spare).
fn attack_size(want: usize) -> usize {
    let soft = raise_nofile(want as u64 + 1024) as usize;
    let n = want.min(soft.saturating_sub(512));
    if n < want {
        eprintln!("RLIMIT_NOFILE {soft}: {n} connections instead of {want}");
    }
    n
}

fn connect_raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let _ = s.set_nodelay(true);
    let _ = s.set_write_timeout(Some(Duration::from_secs(3)));
    s
}

/// Makes the next close of `s` an RST (SO_LINGER 0).
fn arm_reset(s: &TcpStream) {
    socket2::SockRef::from(s)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

/// What a non-blocking socket shows right now.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// Open, nothing to read.
    Open,
    /// EOF or reset with nothing before it.
    Closed,
    /// Bytes (and whether EOF/reset followed them).
    Data(Vec<u8>, bool),
}

/// Drains a non-blocking socket without waiting.
fn look(s: &TcpStream) -> Seen {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match (&*s).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return if got.is_empty() {
                    Seen::Open
                } else {
                    Seen::Data(got, false)
                };
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break, // reset
        }
    }
    if got.is_empty() {
        Seen::Closed
    } else {
        Seen::Data(got, true)
    }
}

/// Tally of attack connections at a check point.
#[derive(Debug, Default)]
struct Outcome {
    /// Answered with the expected status (then closed or closing).
    answered: usize,
    /// Closed (EOF or reset) without an answer.
    closed: usize,
    /// Still open and silent.
    open: usize,
    /// Anything else: (index, what arrived).
    wrong: Vec<(usize, String)>,
}

fn tally(socks: &[TcpStream], want_status: &str) -> Outcome {
    let mut o = Outcome::default();
    for (i, s) in socks.iter().enumerate() {
        match look(s) {
            Seen::Open => o.open += 1,
            Seen::Closed => o.closed += 1,
            Seen::Data(d, _) if d.starts_with(format!("HTTP/1.1 {want_status} ").as_bytes()) => {
                o.answered += 1
            }
            Seen::Data(d, _) => o.wrong.push((
                i,
                String::from_utf8_lossy(&d[..d.len().min(200)]).to_string(),
            )),
        }
    }
    o
}

/// Sleeps until `t`.
fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}

/// A normal client running alongside an attack: a GET on a fresh connection every 50 ms
/// until `stop`; returns each (status, latency).
fn normal_client(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Vec<(u16, Duration)>> {
    spawn(move || {
        let mut out = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            let start = Instant::now();
            let status = Client::try_connect_timeout(addr, Duration::from_secs(3))
                .ok()
                .and_then(|mut c| {
                    c.send(&get_req(&format!("/normal{i}"), "a")).ok()?;
                    c.read_response_within(Duration::from_secs(3)).ok()
                })
                .map(|r| r.status)
                .unwrap_or(0);
            out.push((status, start.elapsed()));
            i += 1;
            thread::sleep(Duration::from_millis(50));
        }
        out
    })
}

fn assert_served(results: &[(u16, Duration)], what: &str) {
    assert!(
        results.len() >= 5,
        "{what}: only {} normal requests ran",
        results.len()
    );
    let failed: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{what}: normal requests failed: {failed:?}"
    );
    let slowest = results.iter().map(|(_, d)| *d).max().unwrap();
    assert!(
        slowest < Duration::from_secs(1),
        "{what}: a normal request took {slowest:?} during the attack"
    );
}

/// The sum of a `ringway_*` series over its labels, from `GET /metrics`.
fn metric(gw: &Gateway, name: &str) -> u64 {
    let r = gw.admin_get("/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    let text = r.body_str();
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        found = true;
        sum += line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
    }
    assert!(found, "no {name} in /metrics:\n{text}");
    sum as u64
}

fn server_stat(gw: &Gateway, key: &str) -> u64 {
    let j = gw.status_json();
    j["server"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("server.{key} in {j}"))
}

/// Waits until `/status` shows `server.connections_active == n`.
fn wait_active(gw: &Gateway, n: u64, t: Duration) -> bool {
    wait_for(t, || {
        (server_stat(gw, "connections_active") == n).then_some(())
    })
    .is_some()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// (a) slowloris heads

#[test]
fn slowloris_heads_get_408_or_close_while_normal_clients_are_served() {
    let n = attack_size(1500);
    let o = Origin::start();
    let gw = Gateway::start(&one_service_config(
        &o.url(),
        "ringway:\n  client_header_timeout: 1000\n",
    ));
    let errors_before = metric(&gw, "ringway_client_errors_total");
    let socks: Vec<TcpStream> = (0..n).map(|_| connect_raw(gw.proxy_addr())).collect();
    for s in &socks {
        s.set_nonblocking(true).unwrap();
    }
    let socks = Arc::new(socks);
    // the first byte of every head; the deadline runs from it
    for s in socks.iter() {
        (&*s).write_all(b"G").expect("first byte");
    }
    let first_bytes_sent = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (socks, stop) = (socks.clone(), stop.clone());
        spawn(move || {
            // then one byte per connection every 100 ms, never finishing the head
            let tail = b"ET /loris HTTP/1.1\r\nHost: a\r\nX-Loris: ";
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let b = tail.get(i).copied().unwrap_or(b'a');
                for s in socks.iter() {
                    let _ = (&*s).write(&[b]);
                }
                i += 1;
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let normal_stop = Arc::new(AtomicBool::new(false));
    let normal = normal_client(gw.proxy_addr(), normal_stop.clone());

    // well before the timeout every trickling connection is still being read
    sleep_until(first_bytes_sent + Duration::from_millis(500));
    let early = tally(&socks, "408");
    assert_eq!(
        early.open, n,
        "connections ended before client_header_timeout: {early:?}"
    );
    // timeout (1000 ms from the first byte) + margin
    sleep_until(first_bytes_sent + Duration::from_millis(2500));
    let late = tally(&socks, "408");
    stop.store(true, Ordering::SeqCst);
    normal_stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert_served(&normal.join().unwrap(), "slowloris");
    assert!(
        late.open == 0 && late.wrong.is_empty(),
        "{n} slowloris connections, 1.5 s past client_header_timeout: {} still open, {} wrong answers {:?}",
        late.open,
        late.wrong.len(),
        &late.wrong[..late.wrong.len().min(3)]
    );
    eprintln!(
        "slowloris x{n}: {} answered 408, {} closed",
        late.answered, late.closed
    );
    drop(socks);
    assert!(
        wait_active(&gw, 0, Duration::from_secs(5)),
        "connections_active did not return to 0: {}",
        gw.status_json()
    );
    let errors = metric(&gw, "ringway_client_errors_total") - errors_before;
    assert!(
        errors >= late.answered as u64,
        "{} clients got a 408 but ringway_client_errors_total rose by {errors}",
        late.answered
    );
    assert_no_panic(&gw.stderr_text());
}

// ---------------------------------------------------------------------------------------
// (b) slowloris bodies

#[test]
fn stalled_bodies_get_408_or_close_and_their_upstream_requests_are_abandoned() {
    let n = attack_size(150);
    let o = Origin::start();
    let gw = Gateway::start(&one_service_config(
        &o.url(),
        "ringway:\n  client_body_timeout: 800\n",
    ));
    let socks: Vec<TcpStream> = (0..n)
        .map(|i| {
            let mut s = connect_raw(gw.proxy_addr());
            s.write_all(
                format!(
                    "POST /body-loris{i} HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789"
                )
                .as_bytes(),
            )
            .expect("send head and first body bytes");
            s
        })
        .collect();
    let sent = Instant::now();
    for s in &socks {
        s.set_nonblocking(true).unwrap();
    }
    let normal_stop = Arc::new(AtomicBool::new(false));
    let normal = normal_client(gw.proxy_addr(), normal_stop.clone());
    sleep_until(sent + Duration::from_millis(800 + 1700));
    let late = tally(&socks, "408");
    normal_stop.store(true, Ordering::SeqCst);
    assert_served(&normal.join().unwrap(), "body slowloris");
    assert!(
        late.open == 0 && late.wrong.is_empty(),
        "{n} stalled bodies, 1.7 s past client_body_timeout: {late:?}"
    );
    eprintln!(
        "stalled bodies x{n}: {} answered 408, {} closed",
        late.answered, late.closed
    );
    // every upstream request carrying a stalled body was cut, never completed
    let cut = wait_for(Duration::from_secs(5), || {
        let loris: Vec<Recorded> = o
            .requests()
            .into_iter()
            .filter(|r| r.target.starts_with("/body-loris"))
            .collect();
        loris
            .iter()
            .all(|r| !r.complete && o.is_closed(r.conn))
            .then_some(loris.len())
    });
    assert!(
        cut.is_some(),
        "upstream connections with a stalled body left open or completed: {:?}",
        o.requests()
            .iter()
            .filter(|r| r.target.starts_with("/body-loris") && (r.complete || !o.is_closed(r.conn)))
            .take(3)
            .collect::<Vec<_>>()
    );
    drop(socks);
    assert!(
        wait_active(&gw, 0, Duration::from_secs(5)),
        "{}",
        gw.status_json()
    );
}

// ---------------------------------------------------------------------------------------
// (c) floods that never end

/// Sends `prefix`, then `unit` over and over (at most 64 MiB, 6 s) while waiting for the
/// answer; returns the answer, whether the connection then closed, and bytes written.
fn flood(addr: SocketAddr, prefix: &[u8], unit: &[u8]) -> (Result<Response, ReadErr>, bool, usize) {
    const CAP: usize = 64 << 20;
    let mut c = Client::connect(addr);
    let mut w = c.conn.stream.try_clone().unwrap();
    let _ = w.set_write_timeout(Some(Duration::from_secs(2)));
    let stop = Arc::new(AtomicBool::new(false));
    let block: Vec<u8> = unit
        .iter()
        .copied()
        .cycle()
        .take(unit.len() * (16384 / unit.len()).max(1))
        .collect();
    let (prefix, stop2) = (prefix.to_vec(), stop.clone());
    let writer = spawn(move || {
        let mut total = 0usize;
        let end = Instant::now() + Duration::from_secs(6);
        if w.write_all(&prefix).is_err() {
            return 0;
        }
        while total < CAP && !stop2.load(Ordering::SeqCst) && Instant::now() < end {
            match w.write(&block) {
                Ok(k) => total += k,
                Err(_) => break,
            }
        }
        total
    });
    let r = c.read_response_within(Duration::from_secs(5));
    let closed = r.is_ok() && c.closed_within(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    (r, closed, written)
}

#[test]
fn endless_heads_are_refused_early_with_bounded_memory() {
    let o = Origin::start();
    let gw = Gateway::start(&one_service_config(&o.url(), ""));
    // warm up so the baseline includes the worker's buffers
    assert_eq!(gw.get("/warm").status, 200);
    let rss_before = rss_kib(gw.pid());
    let big_header = format!("X-Big: {}\r\n", "v".repeat(1000));
    let cases: [(&str, &[u8], &[u8], u16); 4] = [
        (
            "endless small headers (max_headers)",
            b"GET /flood HTTP/1.1\r\nHost: a\r\n",
            b"X-Flood: v\r\n",
            431,
        ),
        (
            "endless 1 KB headers (max_header_bytes)",
            b"GET /flood HTTP/1.1\r\nHost: a\r\n",
            big_header.as_bytes(),
            431,
        ),
        (
            "one endless header line",
            b"GET /flood HTTP/1.1\r\nHost: a\r\nX-Long: ",
            b"aaaaaaaaaaaaaaaa",
            431,
        ),
        ("endless request line", b"GET /", b"aaaaaaaaaaaaaaaa", 414),
    ];
    let mut failures = Vec::new();
    for (name, prefix, unit, want) in cases {
        let start = Instant::now();
        let (r, closed, written) = flood(gw.proxy_addr(), prefix, unit);
        let took = start.elapsed();
        match &r {
            Ok(resp) if resp.status == want && closed => {}
            other => failures.push(format!(
                "{name}: want {want} and close; got {:?}, closed={closed}",
                other.as_ref().map(|r| r.status)
            )),
        }
        if written >= 32 << 20 {
            failures.push(format!(
                "{name}: the gateway kept reading ({} MiB accepted)",
                written >> 20
            ));
        }
        eprintln!("{name}: {took:?}, {written} bytes written");
    }
    assert!(
        failures.is_empty(),
        "{}\nstderr:\n{}",
        failures.join("\n"),
        gw.stderr_text()
    );
    let grown = rss_kib(gw.pid()).saturating_sub(rss_before);
    assert!(grown < 32 * 1024, "gateway RSS grew by {grown} KiB");
    let flood_reqs = o
        .requests()
        .iter()
        .filter(|r| r.target.starts_with("/flood"))
        .count();
    assert_eq!(flood_reqs, 0, "a flood reached the upstream");
    assert_eq!(gw.get("/after").status, 200);
}

// ---------------------------------------------------------------------------------------
// (d) idle connections

#[test]
fn idle_connections_are_closed_after_their_timeout() {
    let n = attack_size(200);
    let o = Origin::start();
    let gw = Gateway::start(&one_service_config(
        &o.url(),
        "ringway:\n  keepalive_timeout: 1000\n  client_header_timeout: 1000\n",
    ));
    // n that served one request and went idle, then n that never sent a byte
    let mut used: Vec<Client> = (0..n).map(|_| gw.client()).collect();
    for (i, c) in used.iter_mut().enumerate() {
        assert_eq!(c.roundtrip(&get_req(&format!("/u{i}"), "a")).status, 200);
    }
    let used: Vec<TcpStream> = used.into_iter().map(|c| c.conn.stream).collect();
    let fresh: Vec<TcpStream> = (0..n).map(|_| connect_raw(gw.proxy_addr())).collect();
    let opened = Instant::now();
    for s in used.iter().chain(&fresh) {
        s.set_nonblocking(true).unwrap();
    }
    assert!(
        wait_active(&gw, 2 * n as u64, Duration::from_secs(3)),
        "{}",
        gw.status_json()
    );
    sleep_until(opened + Duration::from_millis(400));
    let early = tally(&fresh, "408");
    assert_eq!(early.open, n, "closed before the timeout: {early:?}");
    sleep_until(opened + Duration::from_millis(1000 + 1500));
    // keep-alive connections are closed silently; a never-used one may get a 408
    let u = tally(&used, "none"); // any bytes at all count as wrong
    assert!(
        u.closed == n,
        "{n} idle keep-alive connections 1.5 s past keepalive_timeout: {u:?}"
    );
    let f = tally(&fresh, "408");
    assert!(
        f.open == 0 && f.wrong.is_empty(),
        "{n} never-used connections 1.5 s past the timeout: {f:?}"
    );
    // the gateway released them (our sockets are still open)
    assert!(
        wait_active(&gw, 0, Duration::from_secs(3)),
        "{}",
        gw.status_json()
    );
    assert_eq!(gw.get("/after").status, 200);
}

// ---------------------------------------------------------------------------------------
// (e) clients that vanish mid-request

#[test]
fn vanishing_clients_leave_the_gateway_serving_with_sane_counters() {
    const K: usize = 40;
    let o = Origin::start();
    let gw = Gateway::start(&one_service_config(&o.url(), ""));
    let acc0 = server_stat(&gw, "connections_accepted");
    let req0 = server_stat(&gw, "total_requests");
    let addr = gw.proxy_addr();
    let mut doomed = Vec::new();
    for i in 0..K {
        // half a head, then FIN
        let mut s = connect_raw(addr);
        s.write_all(format!("GET /half{i} HTTP/1.1\r\nHo").as_bytes())
            .unwrap();
        doomed.push((s, false));
        // a head and half the body, then RST
        let mut s = connect_raw(addr);
        s.write_all(
            format!("POST /vanish{i} HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        s.write_all(&[b'x'; 500]).unwrap();
        doomed.push((s, true));
        // a whole GET, gone (RST) before the answer is read
        let mut s = connect_raw(addr);
        s.write_all(&get_req(&format!("/gone{i}"), "a")).unwrap();
        doomed.push((s, true));
        // connect, then RST at once
        doomed.push((connect_raw(addr), true));
    }
    // let the gateway accept every connection and read what was sent, then vanish
    let _ = o.wait_requests(2 * K, Duration::from_secs(5));
    let all_accepted = wait_for(Duration::from_secs(5), || {
        (server_stat(&gw, "connections_accepted") - acc0 >= 4 * K as u64).then_some(())
    });
    assert!(all_accepted.is_some(), "{}", gw.status_json());
    for (s, rst) in doomed {
        if rst {
            arm_reset(&s);
        }
        drop(s);
    }
    // still serving, on one keep-alive connection
    let mut c = gw.client();
    for i in 0..5 {
        let r = c.roundtrip(&get_req(&format!("/after{i}"), "a"));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.header("x-origin-target"),
            Some(format!("/after{i}").as_str())
        );
    }
    drop(c);
    assert!(
        wait_active(&gw, 0, Duration::from_secs(5)),
        "connections_active did not return to 0: {}",
        gw.status_json()
    );
    let accepted = server_stat(&gw, "connections_accepted") - acc0;
    assert_eq!(accepted, 4 * K as u64 + 1, "{}", gw.status_json());
    // the POST and GET heads count; half heads may or may not
    let requests = server_stat(&gw, "total_requests") - req0;
    assert!(
        (2 * K as u64 + 5..=3 * K as u64 + 5).contains(&requests),
        "total_requests rose by {requests}: {}",
        gw.status_json()
    );
    // no half body ever completed upstream, and those upstream connections were closed
    let cut = wait_for(Duration::from_secs(5), || {
        o.requests()
            .iter()
            .filter(|r| r.target.starts_with("/vanish"))
            .all(|r| !r.complete && o.is_closed(r.conn))
            .then_some(())
    });
    assert!(
        cut.is_some(),
        "{:?}",
        o.requests()
            .iter()
            .filter(|r| r.target.starts_with("/vanish"))
            .take(3)
            .collect::<Vec<_>>()
    );
    assert!(
        o.requests().iter().all(|r| !r.target.starts_with("/half")),
        "a half head reached the upstream"
    );
    assert_no_panic(&gw.stderr_text());
}

// ---------------------------------------------------------------------------------------
// (f) max_connections

/// The limit is the whole process's, whichever worker accepts: 3 over 2 workers holds 3
/// connections, not 2 × ⌈3/2⌉, and no worker refuses while the other has room.
#[test]
fn max_connections_is_one_count_across_workers() {
    const MAX: usize = 3;
    let o = Origin::start();
    let gw = Gateway::start_with(
        &one_service_config(&o.url(), &format!("ringway:\n  max_connections: {MAX}\n")),
        GatewayOpts::default().workers(2),
    );
    let mut served = Vec::new();
    for i in 0..8 {
        let mut c = gw.client();
        let _ = c.send(&get_req(&format!("/c{i}"), "a"));
        match c.read_response_within(Duration::from_secs(3)) {
            Ok(r) => {
                assert_eq!(r.status, 200, "{r:?}");
                served.push(c);
            }
            Err(ReadErr::Closed(b)) | Err(ReadErr::Io(_, b)) if b.is_empty() => {}
            Err(other) => panic!("want a response or a close, got {other:?}"),
        }
    }
    assert_eq!(served.len(), MAX, "{}", gw.status_json());
    // One closed, and the next is served, whichever worker takes it.
    served.pop();
    assert!(
        wait_active(&gw, (MAX - 1) as u64, Duration::from_secs(3)),
        "{}",
        gw.status_json()
    );
    for i in 0..2 {
        let mut c = gw.client();
        let r = c.roundtrip(&get_req(&format!("/again{i}"), "a"));
        assert_eq!(r.status, 200, "{r:?}");
        drop(c);
        assert!(
            wait_active(&gw, (MAX - 1) as u64, Duration::from_secs(3)),
            "{}",
            gw.status_json()
        );
    }
    // A reload that raises the limit applies to the next connection.
    let hash = gw.status_json()["configuration_hash"].clone();
    gw.write_config(&one_service_config(
        &o.url(),
        "ringway:\n  max_connections: 5\n",
    ));
    gw.send_signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.status_json()["configuration_hash"] == hash && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    for i in 0..3 {
        let mut c = gw.client();
        let r = c.roundtrip(&get_req(&format!("/raised{i}"), "a"));
        assert_eq!(r.status, 200, "{r:?}");
        served.push(c);
    }
    assert_eq!(served.len(), 5);
}

#[test]
fn max_connections_refuses_fast_and_recovers() {
    const MAX: usize = 20;
    let o = Origin::start();
    let gw = Gateway::start_with(
        &one_service_config(&o.url(), &format!("ringway:\n  max_connections: {MAX}\n")),
        GatewayOpts::default().workers(1),
    );
    let mut held: Vec<Client> = (0..MAX).map(|_| gw.client()).collect();
    for (i, c) in held.iter_mut().enumerate() {
        assert_eq!(c.roundtrip(&get_req(&format!("/h{i}"), "a")).status, 200);
    }
    assert!(
        wait_active(&gw, MAX as u64, Duration::from_secs(3)),
        "{}",
        gw.status_json()
    );
    let refused_before = metric(&gw, "ringway_connections_refused_total");

    // one more: closed at once (EOF or reset), never left hanging
    for _ in 0..2 {
        let start = Instant::now();
        let mut extra = gw.client();
        let _ = extra.send(&get_req("/extra", "a"));
        match extra.read_response_within(Duration::from_secs(3)) {
            Err(ReadErr::Closed(b)) | Err(ReadErr::Io(_, b)) if b.is_empty() => {}
            other => panic!("connection over max_connections: want a close, got {other:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "refusal took {:?}",
            start.elapsed()
        );
    }
    let refused = metric(&gw, "ringway_connections_refused_total") - refused_before;
    assert_eq!(refused, 2, "ringway_connections_refused_total");
    assert!(
        server_stat(&gw, "connections_refused") >= 2,
        "{}",
        gw.status_json()
    );
    // As nginx's stub_status (Kong's /status): accepted counts the drops, handled not.
    assert_eq!(
        server_stat(&gw, "connections_accepted") - server_stat(&gw, "connections_handled"),
        server_stat(&gw, "connections_refused"),
        "{}",
        gw.status_json()
    );
    assert!(
        o.requests().iter().all(|r| r.target != "/extra"),
        "a refused connection was served"
    );
    // the held connections still work
    assert_eq!(held[0].roundtrip(&get_req("/still", "a")).status, 200);

    // free five, and new connections are served again
    held.truncate(MAX - 5);
    assert!(
        wait_active(&gw, (MAX - 5) as u64, Duration::from_secs(3)),
        "{}",
        gw.status_json()
    );
    for i in 0..5 {
        let mut c = gw.client();
        let r = c.roundtrip(&get_req(&format!("/again{i}"), "a"));
        assert_eq!(r.status, 200, "{r:?}");
        held.push(c);
    }
    // full again: refused again
    let mut extra = gw.client();
    let _ = extra.send(&get_req("/extra", "a"));
    assert!(
        matches!(
            extra.read_response_within(Duration::from_secs(3)),
            Err(ReadErr::Closed(_)) | Err(ReadErr::Io(..))
        ),
        "over the limit again"
    );
    assert_eq!(
        metric(&gw, "ringway_connections_refused_total") - refused_before,
        3
    );
}
