//! The Admin API, on a thread of its own so it never stalls a worker.
//!
//! It reads what workers publish (the config snapshot, per-worker counters, the drain
//! flag) and never takes anything from them. HTTP/1.1 with keep-alive, one connection
//! handled at a time per task on a small epoll runtime: admin traffic is light.

use std::mem::MaybeUninit;
use std::net::TcpListener as StdListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use httparse::Header;
use monoio::io::AsyncWriteRentExt;
use monoio::net::{TcpListener, TcpStream};

mod api;
mod body;
mod multipart;
mod upstreams;

pub use api::Reply;

use crate::config::Limits;
use crate::control::Control;
use crate::http::generated;
use crate::http::{chunked, framing, BodyKind, HeadScanner, HeadStatus};
use crate::metrics;
use crate::proxy::Shared;
use crate::server::RunningDriver;

/// Admin requests are small; bodies beyond this are refused.
const MAX_ADMIN_BODY_BYTES: u64 = 8 * 1024 * 1024;
const ADMIN_LIMITS: Limits = Limits {
    max_request_line_bytes: 8192,
    max_header_line_bytes: 8192,
    max_header_bytes: 65_536,
    max_headers: 100,
};
/// Admin connections open at once. The Admin API's clients are a few scripts and
/// dashboards; a flood of connections must not take the process's descriptors from the
/// proxy. At the limit a new connection takes the place of one still waiting for (or
/// reading) a request head, on which nothing has been done yet (as nginx reuses its idle
/// connections when it runs out): first those that have never completed a request,
/// oldest first, then keep-alive ones. So connections that send nothing, or a byte at a
/// time, cannot keep a load balancer's `/status/ready` out, nor close a client's
/// keep-alive connection while any of theirs is left. Only when every connection is
/// being answered is the new one closed as it is accepted.
const MAX_ADMIN_CONNECTIONS: usize = 256;

/// Past the limit by the connections closing to make room, at most: a hard ceiling
/// should a closing connection ever stay (see `serve`).
const MAX_ADMIN_OVERSHOOT: usize = 16;

/// The admin connections waiting for a request head, in the order they are reclaimed:
/// by (has completed a request, when it was accepted). A connection keeps its place
/// while it trickles a head, so sending a byte now and then does not make it young.
#[derive(Default)]
struct Waiting {
    next: std::cell::Cell<u64>,
    connections: std::cell::RefCell<std::collections::BTreeMap<(bool, u64), std::rc::Rc<Reclaim>>>,
}

/// A waiting connection's notice that it is to close.
#[derive(Default)]
struct Reclaim {
    due: std::cell::Cell<bool>,
    waker: std::cell::Cell<Option<std::task::Waker>>,
}

impl Waiting {
    /// Closes the connection that has waited longest; `false` when none is waiting.
    fn reclaim_oldest(&self) -> bool {
        let Some((_, oldest)) = self.connections.borrow_mut().pop_first() else {
            return false;
        };
        oldest.due.set(true);
        if let Some(waker) = oldest.waker.take() {
            waker.wake();
        }
        true
    }

    /// A new connection's place in the order, by age.
    fn ticket(&self) -> u64 {
        let ticket = self.next.get();
        self.next.set(ticket + 1);
        ticket
    }

    /// Resolves when this connection is reclaimed; it stops waiting when dropped.
    /// `served`: it has completed a request before (reclaimed after those that have not);
    /// `ticket`: its own, from `ticket`.
    fn wait(&self, served: bool, ticket: u64) -> Reclaimed<'_> {
        let id = (served, ticket);
        let reclaim = std::rc::Rc::new(Reclaim::default());
        self.connections.borrow_mut().insert(id, reclaim.clone());
        Reclaimed {
            waiting: self,
            id,
            reclaim,
            closing: false,
        }
    }
}

struct Reclaimed<'a> {
    waiting: &'a Waiting,
    id: (bool, u64),
    reclaim: std::rc::Rc<Reclaim>,
    /// It resolved: the connection closes, making the room itself.
    closing: bool,
}

impl std::future::Future for Reclaimed<'_> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = self.get_mut();
        if this.reclaim.due.get() {
            this.closing = true;
            return std::task::Poll::Ready(());
        }
        this.reclaim.waker.set(Some(cx.waker().clone()));
        std::task::Poll::Pending
    }
}

impl Drop for Reclaimed<'_> {
    fn drop(&mut self) {
        self.waiting.connections.borrow_mut().remove(&self.id);
        // Reclaimed just as its read completed (the read won the race): the room it was
        // to make is made by the next one waiting instead.
        if self.reclaim.due.get() && !self.closing {
            self.waiting.reclaim_oldest();
        }
    }
}

/// What the admin thread needs besides the shared state.
pub struct Settings {
    pub token: Option<String>,
    pub driver: RunningDriver,
    pub workers: usize,
    /// This process's id in `kong_node_info` and friends.
    pub node_id: String,
}

/// Runs the Admin API on the calling thread until the process exits.
pub fn run(listener: StdListener, control: Arc<Control>, settings: Settings) {
    let runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build();
    let mut runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            log::error!("admin API cannot start: {e}");
            return;
        }
    };
    let settings = Arc::new(settings);
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                log::error!("admin API cannot listen: {e}");
                return;
            }
        };
        let open = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let waiting = std::rc::Rc::new(Waiting::default());
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    // A reclaimed connection is still counted until its task has closed
                    // it, a moment later: the count is over the limit by the ones closing.
                    let full = open.get() >= MAX_ADMIN_CONNECTIONS
                        && (open.get() >= MAX_ADMIN_CONNECTIONS + MAX_ADMIN_OVERSHOOT
                            || !waiting.reclaim_oldest());
                    if full {
                        log::debug!("admin connection from {peer} closed: {MAX_ADMIN_CONNECTIONS} already open");
                        drop(stream);
                        continue;
                    }
                    open.set(open.get() + 1);
                    let open = open.clone();
                    let serving =
                        serve(stream, control.clone(), settings.clone(), waiting.clone());
                    monoio::spawn(async move {
                        serving.await;
                        open.set(open.get() - 1);
                    });
                }
                Err(e) => {
                    log::warn!("admin accept failed: {e}");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
}

/// Serves one admin connection. Its waits are the node's, as on the proxy listener: a
/// new connection's first head and every head once begun must be whole within
/// `client_header_timeout`, a connection idles between requests for `keepalive_timeout`,
/// and a body may pause no longer than `client_body_timeout`.
async fn serve(
    mut stream: TcpStream,
    control: Arc<Control>,
    settings: Arc<Settings>,
    waiting: std::rc::Rc<Waiting>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let ticket = waiting.ticket();
    // A new connection owes its first request within client_header_timeout, as on the
    // proxy listener; between requests it may idle for keepalive_timeout.
    let mut first = true;
    loop {
        let (idle, head_time, body_pause) = {
            let node = &control.shared.snapshot().config.node;
            (
                node.keepalive_timeout,
                node.client_header_timeout,
                node.client_body_timeout,
            )
        };
        let mut scanner = HeadScanner::new();
        let mut head_deadline: Option<std::time::Instant> = None;
        let (start, end) = loop {
            if !buf.is_empty() {
                match scanner.scan(&buf, &ADMIN_LIMITS) {
                    Ok(HeadStatus::Complete { start, end }) => break (start, end),
                    Ok(HeadStatus::Partial) => {}
                    Err(kind) => {
                        let _ = write_reply(
                            &mut stream,
                            Reply::message(kind.status(), kind.message()),
                            true,
                        )
                        .await;
                        return;
                    }
                }
            }
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(4096);
            }
            let len = buf.len();
            let cap = buf.capacity();
            // Waiting for a request: keepalive_timeout; once its head began (or bytes of
            // it came pipelined), client_header_timeout from then.
            let deadline = *head_deadline.get_or_insert_with(|| {
                let wait = if len == 0 && !first { idle } else { head_time };
                std::time::Instant::now() + wait
            });
            let read = monoio::io::AsyncReadRent::read(
                &mut stream,
                monoio::buf::IoBufMut::slice_mut(buf, len..cap),
            );
            let read = monoio::time::timeout_at(deadline.into(), read);
            // Until its head is whole nothing has been done for the request: the
            // connection may be reclaimed for a new one, and then closes, the read (and
            // what came of the head) abandoned with it. Bytes that came meanwhile go
            // first.
            let reclaimed = waiting.wait(!first, ticket);
            let read = monoio::select! {
                biased;
                read = read => read,
                () = reclaimed => return,
            };
            match read {
                Ok((Ok(n), slice)) if n > 0 => {
                    buf = slice.into_inner();
                    if len == 0 {
                        head_deadline = None;
                    }
                }
                // A head begun and not finished in time: 408, as on the proxy listener
                // (an idle connection just closes).
                Err(_) if len > 0 => {
                    let reply =
                        Reply::message(408, crate::error::ErrorKind::RequestTimeout.message());
                    let _ = write_reply(&mut stream, reply, true).await;
                    return;
                }
                _ => return,
            }
        };
        first = false;
        // From the whole head to the written answer, a drain waits for this request.
        let _in_flight = InFlight::count(&control.shared.admin_in_flight);
        let mut slots = [const { MaybeUninit::<Header<'_>>::uninit() }; 100];
        let mut request = httparse::Request::new(&mut []);
        let parsed = request.parse_with_uninit_headers(&buf[start..end], &mut slots);
        let line = match (parsed, request.method, request.path, request.version) {
            (Ok(httparse::Status::Complete(_)), Some(m), Some(p), Some(v))
                if crate::http::is_served_method(m) =>
            {
                origin_form(p).map(|target| (m.to_owned(), target, v))
            }
            _ => None,
        };
        let Some((method, target, version)) = line else {
            let _ = write_reply(&mut stream, Reply::message(400, "Bad request"), true).await;
            return;
        };
        let framing = match framing::request(version, request.headers) {
            Ok(framing) => framing,
            Err(kind) => {
                let _ = write_reply(
                    &mut stream,
                    Reply::message(kind.status(), kind.message()),
                    true,
                )
                .await;
                return;
            }
        };
        let authorized = settings
            .token
            .as_deref()
            .is_none_or(|token| has_token(request.headers, token));
        // Without a token, a page in the operator's browser must not reach the API:
        // refused as an unauthorized request is.
        let browser = match &settings.token {
            None => foreign_browser(request.headers),
            Some(_) => None,
        };
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(|v| v.trim().to_owned())
        };
        let content_type = header("content-type");
        let accept_json = header("accept").is_some_and(|a| accepts_json(&a));
        buf.drain(..end);
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));

        // Body bytes the client has yet to send.
        let body_to_come = match framing.body {
            BodyKind::Length(n) => n > buf.len() as u64,
            BodyKind::Chunked => true,
            BodyKind::None | BodyKind::UntilClose => false,
        };
        // A request without the token is refused before its body is read (a client
        // waiting for `100 Continue` gets the 401 instead), and the connection closes:
        // the unread body would be read as the next request.
        if browser.is_some() || !(authorized || is_public(&method, path)) {
            let reply = match browser {
                Some(why) => Reply::message(403, why),
                None => {
                    Reply::message(401, "Unauthorized").with_header("WWW-Authenticate", "Bearer")
                }
            };
            let _ = write_reply(&mut stream, reply, true).await;
            // Only a body still to come makes the close linger: a request without one
            // frees its connection at once.
            if body_to_come {
                linger(&mut stream).await;
            }
            return;
        }
        // A client waiting for `100 Continue` before its body (curl does past 1 KiB, and
        // otherwise waits a second) gets it, unless the body is over the limit (413).
        if framing.expect_continue && body_to_come {
            let too_large = matches!(framing.body, BodyKind::Length(n) if n > MAX_ADMIN_BODY_BYTES);
            if !too_large {
                let (written, _) = stream.write_all(crate::http::generated::CONTINUE).await;
                if written.is_err() {
                    return;
                }
            }
        }

        let body = match read_body(&mut stream, &mut buf, framing.body, body_pause).await {
            Ok(body) => body,
            Err(Some(reply)) => {
                let _ = write_reply(&mut stream, reply, true).await;
                linger(&mut stream).await;
                return;
            }
            Err(None) => return,
        };

        // HEAD is answered as GET without the body (RFC 9110 §9.3.2).
        let head = method == "HEAD";
        let method = if head { "GET".to_owned() } else { method };
        let reply = if !matches!(method.as_str(), "GET" | "OPTIONS") && !control.writable() {
            // Started with --takeover beside the process it replaces, which still owns
            // the data directory: a write here would be lost to that one's.
            Reply::message(
                503,
                "the previous ringway process still runs (an upgrade in progress): Admin API writes open once it has ended",
            )
            .with_header("Retry-After", "1")
        } else {
            match route(&method, path, query, &control.shared, &settings) {
                Some(reply) => reply,
                None => {
                    let request = api::Request {
                        method: &method,
                        path,
                        query,
                        node_id: &settings.node_id,
                        content_type: content_type.as_deref(),
                        accept_json,
                        body: &body,
                    };
                    api::handle(&request, &control)
                }
            }
        };
        let close = !framing.keep_alive;
        if write_head_or_reply(&mut stream, reply, close, head)
            .await
            .is_err()
            || close
        {
            return;
        }
    }
}

/// After an answer given while the client may still be sending its body (a 413, a
/// 401 before the body), the close lingers as nginx's does: the write side is shut and
/// what comes is read and dropped for a moment, so the close does not reset the
/// connection and take the answer with it before the client read it.
async fn linger(stream: &mut TcpStream) {
    const LINGER: Duration = Duration::from_secs(2);
    const LINGER_BYTES: usize = 16 << 20;
    let _ = monoio::io::AsyncWriteRent::shutdown(stream).await;
    let deadline = std::time::Instant::now() + LINGER;
    let mut drained = 0;
    let mut buf = vec![0u8; 16 * 1024];
    while drained < LINGER_BYTES {
        let read = monoio::io::AsyncReadRent::read(stream, buf);
        match monoio::time::timeout_at(deadline.into(), read).await {
            Ok((Ok(n), back)) if n > 0 => {
                drained += n;
                buf = back;
            }
            _ => return,
        }
    }
}

/// A request target as a path and query: RFC 9112 §3.2.2 has servers accept the
/// absolute form (`http://host/status/ready`) too, as nginx, and so Kong's Admin API,
/// does; it names the same resource as its path (`/` when it has none). `None` for a
/// target the proxy refuses too (an empty or malformed authority, a fragment).
fn origin_form(target: &str) -> Option<String> {
    match crate::http::split_target(target)? {
        (_, path) if path.starts_with('?') => Some(format!("/{path}")),
        (_, path) => Some(path.to_owned()),
    }
}

/// What answers without the token: `GET` (or `HEAD`) `/status/ready`, for load balancers.
fn is_public(method: &str, path: &str) -> bool {
    matches!(method, "GET" | "HEAD") && path == "/status/ready"
}

/// Why a request to an Admin API without a token came from a web page rather than a
/// client of the operator's, if it did. A loopback listener without a token trusts
/// whoever can connect; a page open in a browser on the same machine can connect too,
/// and send form posts (which need no CORS preflight) or read answers through a name it
/// rebinds to 127.0.0.1. A browser marks its requests (`Origin`, `Sec-Fetch-Site`); one
/// so marked is answered only from the API's own address (`localhost` or an IP as the
/// `Host`, the `Origin` the same). Clients that are no browser (curl, scripts, load
/// balancers) send neither header and are not affected.
fn foreign_browser(headers: &[Header<'_>]) -> Option<&'static str> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let (origin, site) = (header("origin"), header("sec-fetch-site"));
    if origin.is_none() && site.is_none() {
        return None;
    }
    const REFUSED: &str = "cross-site request refused: an Admin API without admin_token answers a browser only from its own address";
    if site.is_some_and(|site| site == "cross-site" || site == "same-site") {
        return Some(REFUSED);
    }
    let host = header("host").unwrap_or_default();
    if origin.is_some_and(|origin| origin.split_once("://").map(|(_, a)| a) != Some(host.as_str()))
    {
        return Some(REFUSED);
    }
    let name = crate::route::strip_port(&host);
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    let local = bare.parse::<std::net::IpAddr>().is_ok() || name == "localhost";
    (!local).then_some(REFUSED)
}

/// One Admin API request counted in flight while it lives.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> InFlight<'a> {
    fn count(counter: &'a std::sync::atomic::AtomicUsize) -> InFlight<'a> {
        counter.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Reads a request body of at most `MAX_ADMIN_BODY_BYTES`, Content-Length or chunked,
/// leaving any pipelined bytes in `buf`. `Err(None)`: the client left or stalled.
async fn read_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    kind: BodyKind,
    pause: Duration,
) -> Result<Vec<u8>, Option<Reply>> {
    let too_large = || Some(Reply::message(413, "Request body too large"));
    let mut decoder = match kind {
        BodyKind::None | BodyKind::UntilClose => return Ok(Vec::new()),
        BodyKind::Length(n) if n > MAX_ADMIN_BODY_BYTES => return Err(too_large()),
        BodyKind::Length(_) => None,
        BodyKind::Chunked => Some(chunked::Decoder::new()),
    };
    let mut body = Vec::new();
    loop {
        match (&mut decoder, kind) {
            (None, BodyKind::Length(n)) if buf.len() as u64 >= n => {
                return Ok(buf.drain(..n as usize).collect())
            }
            (Some(decoder), _) => {
                let used = decoder
                    .decode(buf, &mut body, chunked::Emit::Raw)
                    .map_err(|_| Some(Reply::message(400, "Bad request")))?;
                buf.drain(..used);
                if body.len() as u64 > MAX_ADMIN_BODY_BYTES {
                    return Err(too_large());
                }
                if decoder.is_done() {
                    return Ok(body);
                }
            }
            _ => {}
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(4096);
        }
        let len = buf.len();
        let cap = buf.capacity();
        let read = monoio::io::AsyncReadRent::read(
            stream,
            monoio::buf::IoBufMut::slice_mut(std::mem::take(buf), len..cap),
        );
        match monoio::time::timeout(pause, read).await {
            Ok((Ok(n), slice)) if n > 0 => *buf = slice.into_inner(),
            _ => return Err(None),
        }
    }
}

/// Whether an `Accept` value asks for JSON: one of its media ranges is
/// `application/json` (case-insensitive, RFC 9110 §8.3.1) with a weight above zero.
fn accepts_json(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim();
        media.eq_ignore_ascii_case("application/json")
            && !parts.any(|param| {
                let (name, value) = param.split_once('=').unwrap_or((param, ""));
                name.trim().eq_ignore_ascii_case("q")
                    && value.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            })
    })
}

/// Compares the presented token in constant time with the configured one.
fn has_token(headers: &[Header<'_>], token: &str) -> bool {
    headers.iter().any(|h| {
        let presented = if h.name.eq_ignore_ascii_case("authorization") {
            let value = crate::http::trim_ows(h.value);
            match value.get(..7) {
                Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => {
                    crate::http::trim_ows(&value[7..])
                }
                _ => return false,
            }
        } else if h.name.eq_ignore_ascii_case("kong-admin-token") {
            crate::http::trim_ows(h.value)
        } else {
            return false;
        };
        constant_time_eq(presented, token.as_bytes())
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The status endpoints; everything else goes to `api`.
fn route(
    method: &str,
    path: &str,
    query: &str,
    shared: &Shared,
    settings: &Settings,
) -> Option<Reply> {
    let path = path.trim_end_matches('/');
    Some(match (method, path) {
        ("GET", "") => node_info(shared, settings),
        ("GET", "/status") => status(shared, settings),
        ("GET", "/status/ready") => ready(shared, settings),
        ("GET", "/metrics") => metrics_reply(shared, settings),
        ("GET", "/histograms") => histograms_reply(shared, settings, query),
        (_, "" | "/status" | "/status/ready" | "/metrics" | "/histograms") => {
            if method == "OPTIONS" {
                Reply::options("GET, HEAD")
            } else {
                Reply::method_not_allowed("GET, HEAD")
            }
        }
        _ => return None,
    })
}

fn status(shared: &Shared, settings: &Settings) -> Reply {
    let totals = metrics::totals(shared.stats.iter().map(|s| &**s));
    let snapshot = shared.snapshot();
    Reply::json(
        200,
        &serde_json::json!({
            "server": {
                "connections_active": totals.connections_active,
                "connections_accepted": totals.connections_taken(),
                "connections_handled": totals.connections_accepted,
                "connections_refused": totals.connections_refused,
                "connections_reading": totals.connections_reading,
                "connections_writing": totals.connections_writing,
                "connections_waiting": totals.connections_waiting(),
                "total_requests": totals.total_requests,
            },
            "upstream": {
                "connections_opened": totals.upstream_connects,
                "connections_reused": totals.upstream_reused,
                "retries": totals.upstream_retries,
            },
            "upstreams": upstreams_status(&snapshot.config.upstreams),
            // Kong's health checks probe it; there is no database to lose.
            "database": { "reachable": true },
            "configuration_hash": snapshot.config.hash,
            "workers": settings.workers,
            "driver": settings.driver.name(),
            "version": crate::VERSION,
        }),
    )
}

/// Kong's priorities, the order its plugins run in, which ringway keeps: one for each of
/// `config::KNOWN_PLUGINS`.
const PRIORITIES: [(&str, u32); 4] = [
    ("correlation-id", 100_001),
    ("jwt", 1450),
    ("rate-limiting", 910),
    ("prometheus", 13),
];

/// `GET /`: the node, with the keys of Kong's answer that tools and scripts read
/// (`hostname`, `node_id`, `plugins`, `configuration.database`, `pids`); `version` is
/// the Kong version ringway answers as, `ringway` its own.
fn node_info(shared: &Shared, settings: &Settings) -> Reply {
    // Kong's bundled plugins carry Kong's version; these answer as they do.
    let available: serde_json::Map<String, serde_json::Value> = PRIORITIES
        .iter()
        .map(|(name, priority)| {
            (
                (*name).to_owned(),
                serde_json::json!({ "version": crate::KONG_COMPATIBLE_VERSION, "priority": priority }),
            )
        })
        .collect();
    let snapshot = shared.snapshot();
    let mut enabled: Vec<&str> = snapshot
        .config
        .plugins
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    enabled.sort_unstable();
    enabled.dedup();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    Reply::json(
        200,
        &serde_json::json!({
            "tagline": "Welcome to ringway",
            "version": crate::KONG_COMPATIBLE_VERSION,
            "ringway": { "version": crate::VERSION, "commit": env!("RINGWAY_COMMIT") },
            "hostname": hostname,
            "node_id": settings.node_id,
            "plugins": {
                "available_on_server": available,
                "enabled_in_cluster": enabled,
                "disabled_on_server": {},
            },
            "configuration": { "database": "off" },
            "pids": { "master": std::process::id() },
            "node": { "workers": settings.workers, "driver": settings.driver.name() },
        }),
    )
}

/// Each upstream's targets by state, and the state of each target.
fn upstreams_status(upstreams: &[crate::config::Upstream]) -> serde_json::Value {
    let mut all = serde_json::Map::new();
    for up in upstreams {
        let mut targets = serde_json::Map::new();
        let (mut healthy, mut unhealthy) = (0, 0);
        for t in &up.targets {
            let state = crate::balance::state(up, t);
            if matches!(state, "healthy" | "healthchecks_off") {
                healthy += 1;
            } else {
                unhealthy += 1;
            }
            targets.insert(t.target.clone(), serde_json::json!(state));
        }
        all.insert(
            up.name.to_string(),
            serde_json::json!({ "healthy": healthy, "unhealthy": unhealthy, "targets": targets }),
        );
    }
    serde_json::Value::Object(all)
}

/// Prometheus text: Kong's series when a `prometheus` plugin is configured (its flags
/// merged), ours always.
fn metrics_reply(shared: &Shared, settings: &Settings) -> Reply {
    let snapshot = shared.snapshot();
    let published = shared.observe.read(settings.workers);
    let kong = crate::observe::prometheus::Kong::of(&snapshot.config, &published);
    let node = crate::observe::prometheus::Node {
        node_id: &settings.node_id,
        version: crate::VERSION,
        driver: settings.driver.name(),
        workers: &shared.stats,
        rate_limit_keys: shared.rate_store.len(),
        access_log_dropped: shared.access_log_dropped.load(Ordering::Relaxed),
        upstreams: &snapshot.config.upstreams,
    };
    let text = crate::observe::prometheus::render(&published, kong.as_ref(), &node);
    Reply {
        status: 200,
        body: text.into_bytes(),
        content_type: b"text/plain; version=0.0.4; charset=utf-8",
        headers: Vec::new(),
    }
}

/// `/histograms`: JSON, or `?format=hgrm` text; `?service=` / `?route=` narrow it.
fn histograms_reply(shared: &Shared, settings: &Settings, query: &str) -> Reply {
    use crate::observe::{hgrm, Metric};
    let mut format = None;
    let mut service = None;
    let mut route = None;
    let mut metric = Metric::Request;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = body::decode(value).unwrap_or_default();
        match key {
            "format" => format = Some(value),
            "service" => service = Some(value),
            "route" => route = Some(value),
            "metric" => match Metric::parse(&value) {
                Some(m) => metric = m,
                None => {
                    return Reply::message(400, "metric must be one of: request, upstream, proxy")
                }
            },
            _ => {}
        }
    }
    let snapshot = shared.snapshot();
    let config = &snapshot.config;
    let published = shared.observe.read(settings.workers);
    // A configured name, or `other` once names fold into it.
    let other = crate::observe::OTHER;
    // As the series are labelled: by name, or by host for a service without one.
    let known_service = |name: &str| {
        (0..config.services.len()).any(|i| &*crate::observe::service_label(config, i) == name)
            || (name == other && published.services.contains_key(other))
    };
    let known_route = |name: &str| {
        (0..config.routes.len()).any(|i| &*crate::observe::route_label(config, i) == name)
            || (name == other && published.routes.contains_key(other))
    };
    if service.as_deref().is_some_and(|s| !known_service(s)) {
        return Reply::message(404, "no such service");
    }
    if route.as_deref().is_some_and(|r| !known_route(r)) {
        return Reply::message(404, "no such route");
    }
    match format.as_deref() {
        None | Some("json") => Reply::json(
            200,
            &hgrm::document(&published, config, service.as_deref(), route.as_deref()),
        ),
        Some("hgrm") => {
            let empty = crate::observe::Latencies::default();
            let h = hgrm::pick(&published, service.as_deref(), route.as_deref(), metric)
                .unwrap_or(empty.get(metric));
            Reply {
                status: 200,
                body: hgrm::percentile_distribution(h).into_bytes(),
                content_type: b"text/plain; charset=utf-8",
                headers: Vec::new(),
            }
        }
        Some(_) => Reply::message(400, "format must be json or hgrm"),
    }
}

fn ready(shared: &Shared, settings: &Settings) -> Reply {
    if shared.draining.load(Ordering::Acquire) {
        return Reply::message(503, "draining");
    }
    if shared.workers_ready.load(Ordering::Acquire) < settings.workers as u64 {
        return Reply::message(503, "starting");
    }
    Reply::message(200, "ready")
}

async fn write_reply(stream: &mut TcpStream, reply: Reply, close: bool) -> std::io::Result<()> {
    write_head_or_reply(stream, reply, close, false).await
}

/// Writes the reply; for a HEAD request its head only (with the body's length).
async fn write_head_or_reply(
    stream: &mut TcpStream,
    reply: Reply,
    close: bool,
    head: bool,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(256 + reply.body.len());
    generated::response(
        &mut out,
        reply.status,
        reply.content_type,
        &reply.body,
        close,
        head,
        &[&reply.headers],
    );
    let (result, _) = stream.write_all(out).await;
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::accepts_json;

    #[test]
    fn accept_asks_for_json_by_media_range_and_weight() {
        for (accept, json) in [
            ("application/json", true),
            ("APPLICATION/Json", true),
            ("application/json; charset=utf-8", true),
            ("text/html, application/json;q=0.5", true),
            ("application/json ; Q=0.001", true),
            ("application/json;q=0", false),
            ("application/json; q=0.0, application/yaml", false),
            ("application/jsonx", false),
            ("application/yaml", false),
            ("*/*", false),
            ("", false),
        ] {
            assert_eq!(accepts_json(accept), json, "{accept:?}");
        }
    }

    #[test]
    fn every_known_plugin_has_its_kong_priority() {
        // `GET /` lists these as the plugins available: one missing would be a plugin a
        // file may name that the node says it does not have.
        let mut named: Vec<&str> = super::PRIORITIES.iter().map(|(name, _)| *name).collect();
        named.sort_unstable();
        let mut known = crate::config::KNOWN_PLUGINS.to_vec();
        known.sort_unstable();
        assert_eq!(named, known);
    }
}
