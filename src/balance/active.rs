//! Active health checks: one thread for the process probes the targets of every
//! upstream that asks for it, each at the interval of its current state (Kong's
//! `healthchecks.active.healthy.interval` / `unhealthy.interval`), at most
//! `concurrency` probes at a time. Probes are blocking and bounded by the upstream's
//! `timeout`, so they never touch the workers' rings.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Health, Outcome, Thresholds};
use crate::config::{Active, Upstream};
use crate::proxy::Shared;

/// How often the thread looks for work when nothing is due sooner (and so how soon it
/// sees a reload that added probes).
const IDLE_TICK: Duration = Duration::from_millis(250);
/// Upstreams probed at once (each with up to its own `concurrency` probes).
const PARALLEL_UPSTREAMS: usize = 8;
/// The most of a probe's answer read to find its status line.
const STATUS_LINE_BYTES: usize = 256;

/// Starts the prober. It runs for the life of the process.
pub fn spawn(shared: Arc<Shared>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ringway-health".into())
        .spawn(move || run(&shared))
        .map(drop)
}

struct Job {
    upstream: Arc<str>,
    target: String,
    addr: SocketAddr,
    host_header: String,
    health: Arc<Health>,
}

/// When a target was last probed, and in which state with which interval: a change of
/// either (passive checks, the Admin API, a reload) reschedules it.
struct Due {
    last: Instant,
    healthy: bool,
    interval: Duration,
}

fn run(shared: &Shared) {
    let mut due: HashMap<(Arc<str>, String), Due> = HashMap::new();
    loop {
        let snapshot = shared.snapshot();
        let now = Instant::now();
        let mut next = now + IDLE_TICK;
        let mut seen = HashSet::new();
        let mut work: Vec<(&Upstream, Vec<Job>)> = Vec::new();
        for upstream in &snapshot.config.upstreams {
            let active = &upstream.checks.active;
            if !active.probes() {
                continue;
            }
            let mut jobs = Vec::new();
            for target in &upstream.targets {
                let Some(addr) = target.addr else { continue };
                let healthy = target.health.is_healthy();
                let interval = if healthy {
                    active.healthy_interval
                } else {
                    active.unhealthy_interval
                };
                if interval.is_zero() {
                    continue;
                }
                let key = (upstream.name.clone(), target.target.clone());
                let at = match due.get(&key) {
                    Some(d) if d.healthy == healthy && d.interval == interval => d.last + interval,
                    _ => now,
                };
                if at <= now {
                    due.insert(
                        key.clone(),
                        Due {
                            last: now,
                            healthy,
                            interval,
                        },
                    );
                    next = next.min(now + interval);
                    jobs.push(Job {
                        upstream: upstream.name.clone(),
                        target: target.target.clone(),
                        addr,
                        // As Kong's prober: the upstream's host header, else the
                        // target's host, without a port.
                        host_header: upstream
                            .host_header
                            .clone()
                            .unwrap_or_else(|| target.host.clone()),
                        health: target.health.clone(),
                    });
                } else {
                    next = next.min(at);
                }
                seen.insert(key);
            }
            if !jobs.is_empty() {
                work.push((upstream, jobs));
            }
        }
        // Upstreams are probed side by side, so one with slow targets and a long
        // timeout delays the others by at most its own round.
        for group in work.chunks(PARALLEL_UPSTREAMS) {
            std::thread::scope(|scope| {
                for (upstream, jobs) in group {
                    scope.spawn(move || probe_all(upstream, jobs));
                }
            });
        }
        // Targets gone from the config are forgotten.
        if due.len() > seen.len() {
            due.retain(|key, _| seen.contains(key));
        }
        drop(snapshot);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// Probes `jobs`, `concurrency` at a time, and counts each outcome.
fn probe_all(upstream: &Upstream, jobs: &[Job]) {
    let active = &upstream.checks.active;
    let limits = Thresholds {
        successes: active.successes,
        tcp_failures: active.tcp_failures,
        timeouts: active.timeouts,
        http_failures: active.http_failures,
    };
    for batch in jobs.chunks(active.concurrency.max(1)) {
        std::thread::scope(|scope| {
            for job in batch {
                scope.spawn(move || {
                    let outcome = probe(active, job);
                    if let Some(healthy) = job.health.report(outcome, limits) {
                        announce(&job.upstream, &job.target, healthy, "active check");
                    }
                });
            }
        });
    }
}

/// Logs a change of a target's health.
pub fn announce(upstream: &str, target: &str, healthy: bool, by: &str) {
    if healthy {
        log::info!("upstream '{upstream}': target {target} is healthy again ({by})");
    } else {
        log::warn!("upstream '{upstream}': target {target} is unhealthy ({by}); traffic moves to the other targets");
    }
}

/// One probe: a connection, and for `http` a `GET` of `http_path` whose status decides.
fn probe(active: &Active, job: &Job) -> Outcome {
    let deadline = Instant::now() + active.timeout;
    let mut stream = match TcpStream::connect_timeout(&job.addr, active.timeout) {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Outcome::Timeout,
        Err(_) => return Outcome::TcpFailure,
    };
    if active.tcp_only {
        return Outcome::Success;
    }
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringway-healthcheck\r\nConnection: close\r\n",
        active.http_path, job.host_header
    );
    for (name, value) in &active.headers {
        request.push_str(name);
        request.push_str(": ");
        request.push_str(value);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let _ = stream.set_write_timeout(Some(active.timeout));
    if stream.write_all(request.as_bytes()).is_err() {
        return Outcome::TcpFailure;
    }
    let mut buf = [0u8; STATUS_LINE_BYTES];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Outcome::Timeout;
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Outcome::Timeout
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Outcome::TcpFailure,
        }
        if buf[..len].contains(&b'\n') || len == buf.len() {
            break;
        }
    }
    if len == 0 {
        return Outcome::TcpFailure;
    }
    match status_of(&buf[..len]) {
        Some(status) if active.healthy_statuses.contains(status) => Outcome::Success,
        Some(status) if active.unhealthy_statuses.contains(status) => Outcome::HttpFailure,
        Some(_) => Outcome::Neutral,
        // As Kong: an answer without a status counts as an HTTP failure.
        None => Outcome::HttpFailure,
    }
}

/// The status of `HTTP/1.x NNN ...`.
fn status_of(head: &[u8]) -> Option<u16> {
    let rest = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let digits = rest.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::status_of;

    #[test]
    fn status_line_is_read_strictly() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_of(b"HTTP/1.0 503 x"), Some(503));
        assert_eq!(status_of(b"HTTP/1.1 20"), None);
        assert_eq!(status_of(b"HTTP/2 200"), None);
        assert_eq!(status_of(b"garbage"), None);
    }
}
