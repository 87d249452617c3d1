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
//! Expects responses framed by Content-Length (the bundled upstream's).

#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
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
            "--path" => path = value()?,
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
    Ok(Args {
        addr: addr.ok_or("--addr is required")?,
        path,
        duration,
        rate,
        conns,
        out: out.ok_or("--out is required")?,
    })
}

/// CLOCK_MONOTONIC in nanoseconds: the clock the timerfd's absolute instants are on.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn check(ret: libc::c_int, what: &str) -> Result<libc::c_int, String> {
    if ret < 0 {
        Err(format!("{what}: {}", std::io::Error::last_os_error()))
    } else {
        Ok(ret)
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
        Ok(httparse::Status::Partial) => return Some(false),
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
    match buf.len().cmp(&(head_len + length)) {
        std::cmp::Ordering::Less => Some(false),
        std::cmp::Ordering::Equal => Some(true),
        std::cmp::Ordering::Greater => None,
    }
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The scheduled instant and the send instant of the request in flight.
    busy: Option<(u64, u64)>,
}

struct Generator {
    addr: SocketAddr,
    epoll: libc::c_int,
    conns: Vec<Conn>,
    idle: Vec<usize>,
    from_slot: Vec<u64>,
    from_send: Vec<u64>,
    errors: u64,
}

impl Generator {
    fn open(&mut self, index: usize) -> Result<(), String> {
        let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))
            .map_err(|e| format!("connect to {}: {e}", self.addr))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: index as u64,
        };
        // SAFETY: both descriptors are open; `event` is a valid epoll_event.
        let ret = unsafe {
            libc::epoll_ctl(
                self.epoll,
                libc::EPOLL_CTL_ADD,
                stream.as_raw_fd(),
                &mut event,
            )
        };
        check(ret, "epoll_ctl")?;
        let conn = Conn {
            stream,
            buf: Vec::with_capacity(65536),
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

    /// Counts an error on connection `index` and replaces the connection.
    fn fail(&mut self, index: usize) -> Result<(), String> {
        self.errors += 1;
        self.idle.retain(|&i| i != index);
        self.open(index)
    }

    fn send(&mut self, index: usize, slot: u64, request: &[u8]) -> Result<(), String> {
        let conn = &mut self.conns[index];
        conn.buf.clear();
        let sent = now_ns();
        // A request of a few dozen bytes on an idle connection fits the socket buffer.
        match conn.stream.write(request) {
            Ok(n) if n == request.len() => {
                conn.busy = Some((slot, sent));
                Ok(())
            }
            _ => self.fail(index),
        }
    }

    fn readable(&mut self, index: usize) -> Result<(), String> {
        let mut chunk = [0u8; 65536];
        loop {
            let conn = &mut self.conns[index];
            match conn.stream.read(&mut chunk) {
                Ok(0) => return self.fail(index),
                Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.fail(index),
            }
        }
        let conn = &mut self.conns[index];
        let Some((slot, sent)) = conn.busy else {
            // Bytes nobody asked for.
            return self.fail(index);
        };
        match response_complete(&conn.buf) {
            Some(false) => Ok(()),
            Some(true) => {
                let done = now_ns();
                self.from_slot.push(done - slot);
                self.from_send.push(done - sent);
                conn.busy = None;
                self.idle.push(index);
                Ok(())
            }
            None => self.fail(index),
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

fn summary(mut ns: Vec<u64>) -> String {
    ns.sort_unstable();
    format!(
        "{{\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1}}}",
        percentile(&ns, 50.0),
        percentile(&ns, 90.0),
        percentile(&ns, 99.0),
        percentile(&ns, 99.9),
    )
}

const TIMER: u64 = u64::MAX;

fn run(args: &Args) -> Result<String, String> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringway-paced\r\n\r\n",
        args.path, args.addr
    )
    .into_bytes();
    // SAFETY: a descriptor-creating call with valid flags.
    let ret = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    let epoll = check(ret, "epoll_create1")?;
    let flags = libc::TFD_NONBLOCK | libc::TFD_CLOEXEC;
    // SAFETY: as above.
    let ret = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, flags) };
    let timer = check(ret, "timerfd_create")?;
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: TIMER,
    };
    // SAFETY: both descriptors were just opened; `event` is valid.
    let ret = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, timer, &mut event) };
    check(ret, "epoll_ctl")?;
    let mut g = Generator {
        addr: args.addr,
        epoll,
        conns: Vec::with_capacity(args.conns),
        idle: Vec::with_capacity(args.conns),
        from_slot: Vec::new(),
        from_send: Vec::new(),
        errors: 0,
    };
    for index in 0..args.conns {
        g.open(index)?;
    }

    let start = now_ns() + 50_000_000;
    let end = start + args.duration.as_nanos() as u64;
    let slot_at = |k: u64| start + (u128::from(k) * 1_000_000_000 / u128::from(args.rate)) as u64;
    let mut k = 0u64;
    let mut waiting: VecDeque<u64> = VecDeque::new();
    let mut armed = 0u64;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    loop {
        let now = now_ns();
        while slot_at(k) <= now && slot_at(k) < end {
            waiting.push_back(slot_at(k));
            k += 1;
        }
        while !waiting.is_empty() {
            let Some(index) = g.idle.pop() else { break };
            let slot = waiting.pop_front().unwrap_or(now);
            g.send(index, slot, &request)?;
        }
        let busy = g.conns.iter().filter(|c| c.busy.is_some()).count();
        if slot_at(k) >= end && waiting.is_empty() && busy == 0 {
            break;
        }
        if now > end + 5_000_000_000 {
            // Answers that never came count as errors.
            g.errors += (busy + waiting.len()) as u64;
            break;
        }
        let next = slot_at(k);
        if next < end && next != armed {
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: libc::timespec {
                    tv_sec: (next / 1_000_000_000) as libc::time_t,
                    tv_nsec: (next % 1_000_000_000) as libc::c_long,
                },
            };
            let absolute = libc::TFD_TIMER_ABSTIME;
            // SAFETY: `timer` is open; `spec` is a valid itimerspec; no old value wanted.
            let ret =
                unsafe { libc::timerfd_settime(timer, absolute, &spec, std::ptr::null_mut()) };
            check(ret, "timerfd_settime")?;
            armed = next;
        }
        let capacity = events.len() as i32;
        // SAFETY: `events` is a valid buffer of `capacity` entries.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), capacity, 1000) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("epoll_wait: {e}"));
        }
        for event in &events[..n as usize] {
            let key = event.u64;
            if key == TIMER {
                let mut expirations = 0u64;
                // SAFETY: reads at most 8 bytes into a u64 from the (non-blocking) timerfd.
                unsafe { libc::read(timer, (&mut expirations as *mut u64).cast(), 8) };
            } else {
                g.readable(key as usize)?;
            }
        }
    }
    let requests = g.from_slot.len();
    Ok(format!(
        "{{\"requests\":{},\"errors\":{},\"rate\":{:.0},\"conns\":{},\"scheduled\":{},\"sent\":{}}}\n",
        requests,
        g.errors,
        requests as f64 / args.duration.as_secs_f64(),
        args.conns,
        summary(g.from_slot),
        summary(g.from_send),
    ))
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("paced: {e}");
            std::process::exit(2);
        }
    };
    // The kernel's default timer slack (50 µs) would blur the schedule.
    // SAFETY: PR_SET_TIMERSLACK takes an integer and changes only this thread's setting.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    match run(&args) {
        Ok(json) => {
            if let Err(e) = std::fs::write(&args.out, json) {
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
