//! Paced load with precise latency: requests sent at evenly spaced instants, `--rate` a
//! second, over `--conns` keep-alive connections (a request waits for a free connection
//! if all are busy), each exchange timed from its scheduled instant and from its send.
//!
//! bench/run.sh measures the latency a proxy adds with it. oha's fixed rate (`-q`)
//! releases requests in bursts on its timer's ticks: a proxy at half load still queues a
//! burst every tick, and the percentiles carry the tick (about half a millisecond here),
//! which hides the tens of microseconds one proxy hop adds. Here one thread waits on an
//! absolute timer (timerfd) for each instant and on the connections with epoll, so the
//! requests arrive spread out, and a timing from the scheduled instant includes any
//! lateness (a stall is not hidden: no coordinated omission).
//!
//! Usage: paced --addr 127.0.0.1:PORT [--path /size/100] [--duration S] [--rate N]
//!              [--conns N] --out FILE
//! Writes JSON: requests, errors, the rate achieved, and p50/p90/p99/p99.9 in
//! microseconds from the scheduled instant (`scheduled`) and from the send (`sent`).
//! Expects 200 responses framed by Content-Length (the bundled upstream's); anything
//! else, or a connection lost with a request on it, counts as an error and the
//! connection is replaced. A connection that cannot be replaced ends the run.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

struct Args {
    addr: SocketAddr,
    path: String,
    duration: Duration,
    rate: u32,
    conns: usize,
    out: String,
}

fn parse_args() -> Result<Args, String> {
    let mut addr = None;
    let mut path = "/size/100".to_string();
    let mut duration = Duration::from_secs(5);
    let mut rate = 1000;
    let mut conns = 32;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = Some(value()?.parse().map_err(|e| format!("--addr: {e}"))?),
            "--path" => {
                path = value()?;
                // It goes into the request line as given.
                if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err("--path must start with / and hold no space or control byte".into());
                }
            }
            "--duration" => {
                let secs: f64 = value()?.parse().map_err(|e| format!("--duration: {e}"))?;
                if !(secs > 0.0 && secs < 86_400.0) {
                    return Err("--duration must be between 0 and 86400 seconds".into());
                }
                duration = Duration::from_secs_f64(secs);
            }
            "--rate" => {
                rate = value()?.parse().map_err(|e| format!("--rate: {e}"))?;
                if rate == 0 || rate > 1_000_000 {
                    return Err("--rate must be from 1 to 1000000 requests a second".into());
                }
            }
            "--conns" => {
                conns = value()?.parse().map_err(|e| format!("--conns: {e}"))?;
                if conns == 0 || conns > 4096 {
                    return Err("--conns must be from 1 to 4096".into());
                }
            }
            "--out" => out = Some(value()?),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if f64::from(rate) * duration.as_secs_f64() > MAX_REQUESTS {
        return Err(format!(
            "--rate × --duration is over {MAX_REQUESTS} requests"
        ));
    }
    Ok(Args {
        addr: addr.ok_or("--addr is required")?,
        path,
        duration,
        rate,
        conns,
        out: out.ok_or("--out is required")?,
    })
}

/// The first instant is this far after the start, so every connection is open by then.
const LEAD_IN_NS: u64 = 50_000_000;
/// How long answers may still come after the last instant before they count as lost.
const GRACE_NS: u64 = 5_000_000_000;
/// What one read takes.
const READ_BYTES: usize = 64 * 1024;
/// What one response may hold (the suite's are 100 B and 16 KiB); a longer one, or a
/// head that never ends, is an error rather than a buffer without bound.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Timings kept (two per request): rate × duration beyond this is refused.
const MAX_REQUESTS: f64 = 1e8;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// epoll events taken per wait, and the longest wait (ms) when no instant is due.
const EVENTS: usize = 256;
const WAIT_MS: i32 = 1000;
/// The epoll key of the timer; connections are keyed by their index.
const TIMER: u64 = u64::MAX;

/// The system calls this needs beyond std: the monotonic clock, an absolute timer and
/// epoll, each a thin wrapper that checks the result.
#[allow(unsafe_code)]
mod sys {
    use std::os::fd::RawFd;

    fn check(ret: libc::c_int, what: &str) -> Result<libc::c_int, String> {
        if ret < 0 {
            Err(format!("{what}: {}", std::io::Error::last_os_error()))
        } else {
            Ok(ret)
        }
    }

    /// CLOCK_MONOTONIC in nanoseconds: the clock the timer's absolute instants are on.
    pub fn now_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// The kernel's default timer slack (50 µs) would blur the schedule.
    pub fn tight_timer_slack() {
        // SAFETY: PR_SET_TIMERSLACK takes an integer and changes only this thread's setting.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    }

    pub fn epoll() -> Result<RawFd, String> {
        // SAFETY: creates a descriptor; the flag is valid.
        check(
            unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) },
            "epoll_create1",
        )
    }

    /// Adds `fd` to `epoll` for reading, under `key`.
    pub fn watch(epoll: RawFd, fd: RawFd, key: u64) -> Result<(), String> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: key,
        };
        // SAFETY: both descriptors are open (the caller's); `event` is valid.
        let ret = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) };
        check(ret, "epoll_ctl").map(drop)
    }

    /// Waits for events; the keys of those that came.
    pub fn wait(
        epoll: RawFd,
        events: &mut [libc::epoll_event],
        ms: i32,
    ) -> Result<Vec<u64>, String> {
        let capacity = events.len() as i32;
        // SAFETY: `events` is a valid buffer of `capacity` entries.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), capacity, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(Vec::new());
            }
            return Err(format!("epoll_wait: {e}"));
        }
        Ok(events[..n as usize].iter().map(|e| e.u64).collect())
    }

    pub fn timer() -> Result<RawFd, String> {
        let flags = libc::TFD_NONBLOCK | libc::TFD_CLOEXEC;
        // SAFETY: creates a descriptor; the clock and flags are valid.
        check(
            unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, flags) },
            "timerfd_create",
        )
    }

    /// Arms `timer` to fire once at `at_ns` on CLOCK_MONOTONIC.
    pub fn arm(timer: RawFd, at_ns: u64) -> Result<(), String> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
            },
        };
        let absolute = libc::TFD_TIMER_ABSTIME;
        // SAFETY: `timer` is open; `spec` is a valid itimerspec; no old value wanted.
        let ret = unsafe { libc::timerfd_settime(timer, absolute, &spec, std::ptr::null_mut()) };
        check(ret, "timerfd_settime").map(drop)
    }

    /// Clears a timer that fired.
    pub fn clear(timer: RawFd) {
        let mut expirations = 0u64;
        // SAFETY: reads at most 8 bytes into a u64 from the (non-blocking) timerfd.
        unsafe { libc::read(timer, (&mut expirations as *mut u64).cast(), 8) };
    }
}

/// Whether `buf` holds one whole response: `Some(true)`, `Some(false)` for not yet, and
/// `None` when it is malformed, not a 200, not framed by Content-Length, or followed by
/// more bytes.
fn response_complete(buf: &[u8]) -> Option<bool> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return (buf.len() <= MAX_RESPONSE_BYTES).then_some(false),
        Err(_) => return None,
    };
    if response.code != Some(200) {
        return None;
    }
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })?;
    let whole = head_len
        .checked_add(length)
        .filter(|&n| n <= MAX_RESPONSE_BYTES)?;
    match buf.len().cmp(&whole) {
        std::cmp::Ordering::Less => Some(false),
        std::cmp::Ordering::Equal => Some(true),
        std::cmp::Ordering::Greater => None,
    }
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The scheduled instant and the send instant of the request in flight (ns).
    busy: Option<(u64, u64)>,
}

struct Generator {
    addr: SocketAddr,
    epoll: RawFd,
    conns: Vec<Conn>,
    /// Indexes of connections with no request in flight.
    idle: Vec<usize>,
    in_flight: usize,
    from_slot_ns: Vec<u64>,
    from_send_ns: Vec<u64>,
    errors: u64,
}

impl Generator {
    /// Opens connection `index` (a new one, or in place of one that ended).
    fn open(&mut self, index: usize) -> Result<(), String> {
        let stream = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT)
            .map_err(|e| format!("connect to {}: {e}", self.addr))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        sys::watch(self.epoll, stream.as_raw_fd(), index as u64)?;
        let conn = Conn {
            stream,
            buf: Vec::new(),
            busy: None,
        };
        if index == self.conns.len() {
            self.conns.push(conn);
        } else {
            // The old stream is closed by the drop, which takes it out of the epoll set.
            self.conns[index] = conn;
        }
        self.idle.push(index);
        Ok(())
    }

    /// Replaces connection `index`, which ended; the request it had in flight, if any,
    /// is lost and counts as an error.
    fn replace(&mut self, index: usize) -> Result<(), String> {
        if self.conns[index].busy.take().is_some() {
            self.errors += 1;
            self.in_flight -= 1;
        }
        self.idle.retain(|&i| i != index);
        self.open(index)
    }

    fn send(&mut self, index: usize, slot_ns: u64, request: &[u8]) -> Result<(), String> {
        let conn = &mut self.conns[index];
        conn.buf.clear();
        let sent_ns = sys::now_ns();
        conn.busy = Some((slot_ns, sent_ns));
        self.in_flight += 1;
        // A request of a few dozen bytes on an idle connection fits the socket buffer.
        match conn.stream.write(request) {
            Ok(n) if n == request.len() => Ok(()),
            _ => self.replace(index),
        }
    }

    fn readable(&mut self, index: usize) -> Result<(), String> {
        let mut chunk = [0u8; READ_BYTES];
        let mut ended = false;
        loop {
            let conn = &mut self.conns[index];
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                // Past the bound, reading stops: what is buffered is then judged an
                // oversized response below, however fast the server sends.
                Ok(n) if conn.buf.len() + n > MAX_RESPONSE_BYTES + READ_BYTES => break,
                Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    ended = true;
                    break;
                }
            }
        }
        let conn = &mut self.conns[index];
        match (conn.busy, response_complete(&conn.buf)) {
            // An idle connection the server closed (its keep-alive timeout): replaced,
            // nothing lost. Bytes nobody asked for are an error.
            (None, _) if conn.buf.is_empty() => {
                if ended {
                    self.replace(index)?;
                }
                Ok(())
            }
            (Some((slot_ns, sent_ns)), Some(true)) => {
                let done_ns = sys::now_ns();
                self.from_slot_ns.push(done_ns - slot_ns);
                self.from_send_ns.push(done_ns - sent_ns);
                conn.busy = None;
                conn.buf.clear();
                self.in_flight -= 1;
                if ended {
                    self.replace(index)
                } else {
                    self.idle.push(index);
                    Ok(())
                }
            }
            (Some(_), Some(false)) if !ended => Ok(()),
            _ => {
                if conn.busy.is_none() {
                    self.errors += 1;
                }
                self.replace(index)
            }
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

/// Percentiles in microseconds.
fn summary(mut ns: Vec<u64>) -> serde_json::Value {
    ns.sort_unstable();
    serde_json::json!({
        "p50_us": percentile(&ns, 50.0),
        "p90_us": percentile(&ns, 90.0),
        "p99_us": percentile(&ns, 99.0),
        "p999_us": percentile(&ns, 99.9),
    })
}

fn run(args: &Args) -> Result<serde_json::Value, String> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringway-paced\r\n\r\n",
        args.path, args.addr
    )
    .into_bytes();
    let epoll = sys::epoll()?;
    let timer = sys::timer()?;
    sys::watch(epoll, timer, TIMER)?;
    let mut g = Generator {
        addr: args.addr,
        epoll,
        conns: Vec::with_capacity(args.conns),
        idle: Vec::with_capacity(args.conns),
        in_flight: 0,
        from_slot_ns: Vec::new(),
        from_send_ns: Vec::new(),
        errors: 0,
    };
    for index in 0..args.conns {
        g.open(index)?;
    }

    let start_ns = sys::now_ns() + LEAD_IN_NS;
    let end_ns = start_ns + args.duration.as_nanos() as u64;
    let slot_at =
        |k: u64| start_ns + (u128::from(k) * 1_000_000_000 / u128::from(args.rate)) as u64;
    let mut next = 0u64;
    // Instants that came while every connection was busy, oldest first: at most the
    // instants of the run, and in practice what one stall holds back.
    let mut waiting: VecDeque<u64> = VecDeque::new();
    let mut armed_ns = 0u64;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    loop {
        let now_ns = sys::now_ns();
        while slot_at(next) <= now_ns && slot_at(next) < end_ns {
            waiting.push_back(slot_at(next));
            next += 1;
        }
        while let Some(&slot_ns) = waiting.front() {
            let Some(index) = g.idle.pop() else { break };
            waiting.pop_front();
            g.send(index, slot_ns, &request)?;
        }
        if slot_at(next) >= end_ns && waiting.is_empty() && g.in_flight == 0 {
            break;
        }
        if now_ns > end_ns + GRACE_NS {
            // Answers that never came count as errors.
            g.errors += (g.in_flight + waiting.len()) as u64;
            break;
        }
        let next_ns = slot_at(next);
        if next_ns < end_ns && next_ns != armed_ns {
            sys::arm(timer, next_ns)?;
            armed_ns = next_ns;
        }
        for key in sys::wait(epoll, &mut events, WAIT_MS)? {
            if key == TIMER {
                sys::clear(timer);
            } else {
                g.readable(key as usize)?;
            }
        }
    }
    let requests = g.from_slot_ns.len();
    Ok(serde_json::json!({
        "requests": requests,
        "errors": g.errors,
        "rate": (requests as f64 / args.duration.as_secs_f64()).round(),
        "conns": args.conns,
        "scheduled": summary(g.from_slot_ns),
        "sent": summary(g.from_send_ns),
    }))
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("paced: {e}");
            std::process::exit(2);
        }
    };
    sys::tight_timer_slack();
    match run(&args) {
        Ok(json) => {
            if let Err(e) = std::fs::write(&args.out, format!("{json}\n")) {
                eprintln!("paced: cannot write {}: {e}", args.out);
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("paced: {e}");
            std::process::exit(1);
        }
    }
}
