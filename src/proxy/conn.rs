//! The per-connection loop: the one place that sequences a request.
//!
//! read head → parse, frame and route (`request::prepare`, synchronous) → send the
//! upstream head with any body bytes already read, in one write → stream the rest of the
//! body → read the response head → rewrite it (`response::rewrite`) → write it with the
//! body bytes already read, in one write → stream the rest → pool the upstream
//! connection after a clean exchange → next request (keep-alive, pipelining in order).
//!
//! Hot-path notes: buffers come from the worker's free list and are reused, never
//! allocated per request once warm; a reused upstream connection's answer arrives in the
//! buffer of the read posted on it when its previous response was in (`upstream::Pool`),
//! so no syscall checks it before reuse. The response head and the first body bytes go
//! out in one write, as do the upstream head and a small request body.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split};

use super::io::{
    answer_within, read_answer_within, read_more, read_more_until, read_more_within,
    unless_client_leaves, write_all_within, write_head_body_within, write_range_within, Answered,
    HeadBody, IoFail, BODY_READ_SPACE, HEAD_READ_SPACE,
};
use super::request::{self, ClientInfo, Exchange, RequestId, Routed};
use super::response::{self, ClientBody, Parsed, ResponsePlan};
use super::worker::{Snapshot, Worker};
use crate::balance::{Outcome, Thresholds};
use crate::config::{Limits, Service};
use crate::error::ErrorKind;
use crate::http::chunked::{self, Decoder, Emit};
use crate::http::generated::{self, CONTINUE};
use crate::http::{BodyKind, HeadScanner, HeadStatus};
use crate::observe::{Sample, Source};
use crate::upstream;

/// Request body bytes already read are sent with the head when they fit in this much.
const COALESCE_BYTES: usize = 64 * 1024;
/// From this many body bytes on, a response head and the body bytes that came with it
/// go out with `writev` instead of a copy of the body behind the head.
const WRITEV_BODY_BYTES: usize = 4 * 1024;
/// Free space for reading a response head and the body bytes that come with it: a
/// pooled buffer grows to this once and is reused. A 16 KiB body with a head of up to
/// 4 KiB arrives in one read and leaves in one write; with room for the body alone, the
/// last bytes took a second read and a second (tiny) write to the client.
const RESPONSE_HEAD_READ_SPACE: usize = BODY_READ_SPACE + 4 * 1024;
/// Interim (1xx) answers taken before a final one (a long job's `102 Processing`
/// keep-alives fit many times over); beyond them the upstream is answering nothing: 502.
const MAX_INTERIM_RESPONSES: u32 = 64;
/// Limits for upstream response heads: generous, but bounded.
const RESPONSE_LIMITS: Limits = Limits {
    max_request_line_bytes: 8192,
    max_header_line_bytes: 64 * 1024,
    max_header_bytes: 256 * 1024,
    max_headers: 256,
};

/// How a connection's request ended.
enum Next {
    KeepAlive,
    Close,
    /// `101 Switching Protocols` was relayed: bytes now flow both ways unparsed.
    /// The connection switched protocols: a tunnel to this upstream, closed after this
    /// long without a byte either way (the service's `read_timeout`, as nginx does).
    Tunnel(upstream::Stream, Duration),
}

/// Why a head could not be read.
enum HeadEnd {
    /// The client left, idled out, or draining began: close without a word.
    Closed,
    /// Answer with this error and close; the head's first byte came at the instant given
    /// (when it came before a read that waited), which is when the request began.
    Reject(ErrorKind, Option<Instant>),
}

/// Where the current request's body stands. Anything but `Done` when the connection
/// closes means the client may still be sending it: the close then lingers, or the
/// unread bytes would reset the connection, and the answer with it.
enum RequestBody {
    /// Read whole (or there was none).
    Done,
    /// This many bytes still to read.
    Length(u64),
    /// Boxed: the state lives on the connection, idle ones included, and a chunked
    /// upload is rarer than the bytes its decoder would add to each.
    Chunked(Box<Decoder>),
    /// Never to be read: the request was refused before its body (or before its head
    /// was whole), and whatever of it is still on its way is dropped.
    Abandoned,
}

impl RequestBody {
    fn is_done(&self) -> bool {
        matches!(self, RequestBody::Done)
    }
}

/// How an upstream broke off a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyCut {
    Closed,
    Reset,
    Stalled,
    Malformed,
    /// Bytes past the response's end (beyond its `Content-Length`, after its last chunk,
    /// or after a response without a body): the client had the whole response.
    Trailing,
}

impl BodyCut {
    /// The cut a failed (or empty) body read means.
    fn of(read: Result<usize, IoFail>) -> BodyCut {
        match read {
            Ok(_) => BodyCut::Closed,
            Err(IoFail::TimedOut) => BodyCut::Stalled,
            Err(IoFail::Io) => BodyCut::Reset,
        }
    }

    /// What the upstream did.
    fn describe(self) -> &'static str {
        match self {
            BodyCut::Closed => "closed the connection before the end of the response body",
            BodyCut::Reset => "reset the connection in the response body",
            BodyCut::Stalled => "sent no response body bytes for read_timeout",
            BodyCut::Malformed => "sent a malformed chunked response body",
            BodyCut::Trailing => "sent bytes past the end of the response",
        }
    }

    /// Whether the client's response was cut short (else it had all of it).
    fn cuts_response(self) -> bool {
        self != BodyCut::Trailing
    }
}

/// Why sending the request failed.
enum SendFail {
    /// The upstream failed: before any response byte, so maybe retryable.
    Upstream(ErrorKind),
    /// The upstream stopped taking the body (closed or reset); it may have answered
    /// first.
    UpstreamGone,
    /// The client failed while its body was being streamed.
    Client(ErrorKind),
}

/// When a proxied request began (its failure's answer tells the time spent before and
/// after it went upstream), and whether Kong's latency headers are on.
#[derive(Clone, Copy)]
struct Spent {
    started: Instant,
    headers: bool,
}

/// What one exchange did, for the histograms and counters.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    status: u16,
    /// ringway answered (not the upstream).
    generated: bool,
    ingress: u64,
    egress: u64,
    /// µs from sending upstream to the response head, and from the request head to
    /// sending upstream.
    upstream_us: Option<u32>,
    before_upstream_us: u32,
    /// The upstream target that answered (or was tried last), for a balanced service.
    target: Option<u32>,
    /// An upstream connection was attempted (the log names the upstream even when the
    /// attempt failed).
    contacted: bool,
    /// The request went out to an upstream, `before_upstream_us` after it began (its
    /// last attempt).
    sent: bool,
    /// Bytes of the proxied response reached the client.
    delivered: bool,
}

/// What a client connection may be: a TCP stream, or TLS over one.
pub trait ClientIo: AsyncReadRent + AsyncWriteRent + Split + 'static {}

impl<S: AsyncReadRent + AsyncWriteRent + Split + 'static> ClientIo for S {}

struct Conn<S> {
    worker: Rc<Worker>,
    client: S,
    info: ClientInfo,
    /// The current request's ID (`correlation-id`).
    rid: Option<Box<RequestId>>,
    tally: Tally,
    /// Client bytes read and not yet consumed.
    buf: Vec<u8>,
    /// What is written next, to either side.
    out: Vec<u8>,
    /// Upstream bytes read.
    ubuf: Vec<u8>,
    /// The current request's method and path for the access log, reused across requests.
    logged: String,
    /// For a head arriving in pieces, with the access log on: where `logged`'s method
    /// ends, once its request line came whole (a head refused for a timeout is logged
    /// with it, its bytes being gone with the read the timeout cancelled).
    partial_line: Option<usize>,
    /// The current request's body: what is left to read, and so whether a close must
    /// linger.
    body: RequestBody,
    /// A read or write of the client was abandoned (cut off by its deadline, or a read
    /// by the upstream's answer during an upload). A TLS stream cannot be used again
    /// after that (its record layer lost the buffer the abandoned operation held), so
    /// its close neither lingers reading nor sends a close_notify; a plain socket's
    /// cancelled operation left nothing behind.
    cut: bool,
    /// The current request is HTTP/1.0, as its framing found (false for a head refused
    /// before that: its answer closes the connection anyway).
    http10: bool,
}

/// Serves one client connection until it closes. `local` is the address it reached
/// (the listener's, or the socket's own when known); `https` marks TLS connections. The
/// connection was counted active when accepted; the count ends with the returned future.
///
/// The connection state is built here, before the future: the future then holds it once,
/// not also the arguments it was built from, which every idle connection would carry.
pub fn serve<S: ClientIo>(
    worker: Rc<Worker>,
    client: S,
    fd: std::os::fd::RawFd,
    peer: SocketAddr,
    local: SocketAddr,
    https: bool,
) -> impl std::future::Future<Output = ()> {
    let trusted = worker.snapshot().config.node.is_trusted(peer.ip());
    let info = ClientInfo {
        ip: peer.ip().to_string(),
        port: local.port().to_string(),
        local_port: local.port(),
        fd: Some(fd),
        trusted,
        https,
        local_ip: Some(local.ip()),
        // A serial number for the whole process, as nginx's `$connection` (the tracker
        // ID's): each worker's count, interleaved with the others'.
        connection: (worker.stats.connections_accepted.get() as u32)
            .wrapping_mul(worker.shared.stats.len() as u32)
            .wrapping_add(worker.id as u32),
        requests: Default::default(),
    };
    let mut conn = Conn::new(worker, client, info);
    async move {
        match conn.run().await {
            // Boxed: the tunnel's state (two copy loops) would otherwise be part of every
            // connection's future, idle or not.
            Some((upstream, idle)) => {
                Box::pin(tunnel(conn.client, upstream, conn.buf, idle)).await;
            }
            // Boxed too: rare, and its timer is large.
            None if !conn.body.is_done() => Box::pin(conn.linger_close()).await,
            // A TLS connection ends with its close_notify (RFC 8446 §6.1), so the client
            // can tell a close-delimited answer from a cut one; a client that does not
            // read gets a moment, not a worker task forever.
            None if conn.info.https && !conn.cut => {
                let closing = monoio::time::timeout(TLS_CLOSE_WAIT, conn.client.shutdown());
                let _ = Box::pin(closing).await;
            }
            None => {}
        }
    }
}

/// How long a closing TLS connection may take to send its close_notify.
const TLS_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Copies bytes both ways after a protocol switch until each side has closed, or until
/// nothing has moved either way for `idle`: a peer that vanished without a close would
/// otherwise hold the tunnel forever. The limit ends the whole tunnel at once (a read is
/// never cancelled and then retried: its bytes could be lost with it).
async fn tunnel<S: ClientIo>(
    client: S,
    upstream: upstream::Stream,
    pending: Vec<u8>,
    idle: Duration,
) {
    use monoio::io::Splitable;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let last = std::cell::Cell::new(Instant::now());
    let copying = async {
        if !pending.is_empty() {
            let (result, _) = upstream_write.write_all(pending).await;
            if result.is_err() {
                return;
            }
            last.set(Instant::now());
        }
        let up = async {
            pump(&mut client_read, &mut upstream_write, &last).await;
            let _ = upstream_write.shutdown().await;
        };
        let down = async {
            pump(&mut upstream_read, &mut client_write, &last).await;
            let _ = client_write.shutdown().await;
        };
        monoio::join!(up, down);
    };
    let watchdog = async {
        loop {
            let quiet = last.get().elapsed();
            if quiet >= idle {
                return;
            }
            monoio::time::sleep(idle - quiet).await;
        }
    };
    monoio::select! {
        biased;
        _ = copying => {}
        _ = watchdog => {}
    }
}

/// One direction of a tunnel, until EOF or an error; every byte moved marks `last`.
async fn pump(
    from: &mut impl AsyncReadRent,
    to: &mut impl AsyncWriteRent,
    last: &std::cell::Cell<Instant>,
) {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let (result, filled) = from.read(buf).await;
        match result {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        last.set(Instant::now());
        let (result, written) = to.write_all(filled).await;
        if result.is_err() {
            return;
        }
        last.set(Instant::now());
        buf = written;
        buf.clear();
    }
}

impl<S: ClientIo> Conn<S> {
    fn new(worker: Rc<Worker>, client: S, info: ClientInfo) -> Conn<S> {
        Conn {
            worker,
            client,
            info,
            rid: None,
            tally: Tally::default(),
            buf: Vec::with_capacity(HEAD_READ_SPACE),
            out: Vec::new(),
            ubuf: Vec::new(),
            logged: String::new(),
            partial_line: None,
            body: RequestBody::Done,
            cut: false,
            http10: false,
        }
    }

    /// Serves requests; returns the upstream connection when the exchange became a tunnel.
    async fn run(&mut self) -> Option<(upstream::Stream, Duration)> {
        let mut first = true;
        loop {
            let snapshot = self.worker.snapshot();
            let (start, end) =
                match self
                    .read_head(&snapshot.config.node.limits, &snapshot, first)
                    .await
                {
                    Ok(range) => range,
                    Err(HeadEnd::Closed) => return None,
                    Err(HeadEnd::Reject(kind, began)) => {
                        // A head refused before it was whole (414, 431, 408, a line that is
                        // no HTTP/1.x) is a request too: counted, and logged as it came.
                        self.worker.stats.total_requests.inc();
                        let started = began.unwrap_or_else(Instant::now);
                        // Where the head starts, past empty lines before it.
                        let at = self
                            .buf
                            .iter()
                            .position(|b| !matches!(b, b'\r' | b'\n'))
                            .unwrap_or(self.buf.len());
                        let logged = self.worker.access_log.is_some().then(|| {
                            match self.partial_line.take() {
                                Some(split) if at == self.buf.len() => split,
                                _ => request_line(&self.buf[at..], &mut self.logged),
                            }
                        });
                        self.tally = Tally {
                            ingress: self.buf.len() as u64,
                            ..Tally::default()
                        };
                        // The rest of an oversized head, and a body after it, may still be
                        // arriving.
                        self.body = RequestBody::Abandoned;
                        let head = request::names_head(&self.buf[at..]);
                        self.answer(kind, true, head, NO_EXTRA).await;
                        self.record(&snapshot, None, started, logged);
                        return None;
                    }
                };
            first = false;
            self.partial_line = None;
            self.worker.stats.total_requests.inc();
            // Boxed: everything a request needs (its routing result, plugin state,
            // timings, the proxying state machine) lives only while it is in flight, so
            // an idle keep-alive connection carries none of it.
            let worker = self.worker.clone();
            let writing = worker.stats.connections_writing.hold();
            let next = Box::pin(self.exchange(start, end)).await;
            drop(writing);
            // An answer that said keep-alive is kept to, drain or not: the client may send
            // its next request at once (the idle wait closes the connection once the
            // drain's grace is over).
            match next {
                Next::KeepAlive => self.release_buffers(),
                Next::Tunnel(upstream, idle) => return Some((upstream, idle)),
                _ => return None,
            }
        }
    }

    /// One request, from its complete head (`buf[start..end]`) to its answer.
    async fn exchange(&mut self, start: usize, end: usize) -> Next {
        self.info
            .requests
            .set(self.info.requests.get().wrapping_add(1));
        let started = Instant::now();
        let logged = if self.worker.access_log.is_some() {
            Some(request_line(&self.buf[start..end], &mut self.logged))
        } else {
            None
        };
        self.tally = Tally {
            ingress: (end - start) as u64,
            ..Tally::default()
        };
        // The request uses the config current when its head arrived, not the one
        // current when the connection went idle: a reload in between applies.
        let snapshot = self.worker.snapshot();
        if self.out.capacity() == 0 {
            self.out = self.worker.buffers.take();
        }
        self.out.clear();
        let now = self.worker.clock.since_epoch(started).as_secs();
        let prepared = request::prepare(
            &self.buf[start..end],
            &self.info,
            &snapshot,
            now,
            Some(&self.worker.plugins),
            &mut self.out,
        );
        self.buf.drain(..end);
        let (next, routed) = match prepared {
            Err(reject) => {
                self.out.clear();
                let request::Reject {
                    kind,
                    head,
                    keep_alive,
                    http10,
                    unread,
                    body_pending,
                    detail,
                    routed,
                    request_id,
                } = reject;
                self.rid = request_id;
                self.http10 = http10;
                // A body that came whole with the head is skipped; one still on its way
                // would be read as the next request, so the connection closes instead.
                let whole = unread <= self.buf.len() as u64;
                if keep_alive && whole {
                    self.buf.drain(..unread as usize);
                }
                let keep = keep_alive && whole && !self.worker.draining();
                // A body still on its way, or one of unknown length, is never read.
                self.body = if !whole || body_pending {
                    RequestBody::Abandoned
                } else {
                    RequestBody::Done
                };
                // As Kong: what ringway answers without proxying says how long it took
                // (formatted on the stack: a flood of 401s or 429s allocates nothing).
                let mut digits = itoa::Buffer::new();
                let latency: Extra<'_> = if snapshot.config.node.latency_headers {
                    let ms = started.elapsed().as_millis() as u64;
                    [
                        b"X-Kong-Response-Latency: ",
                        digits.format(ms).as_bytes(),
                        b"\r\n",
                    ]
                } else {
                    NO_EXTRA
                };
                if let Some(detail) = detail {
                    let detail = *detail;
                    let body = with_request_id(detail.body, self.rid.as_deref());
                    let echo = echo_line(self.rid.as_deref());
                    let keep_line = self.keep_alive_line(!keep);
                    generated::response(
                        &mut self.out,
                        detail.status,
                        b"application/json; charset=utf-8",
                        &body,
                        !keep,
                        head,
                        &[
                            &detail.headers,
                            echo.as_bytes(),
                            latency[0],
                            latency[1],
                            latency[2],
                            keep_line,
                        ],
                    );
                    self.tally.status = detail.status;
                }
                let answered = self.answer_prepared(kind, !keep, head, latency).await;
                let next = if answered {
                    Next::KeepAlive
                } else {
                    Next::Close
                };
                (next, routed)
            }
            Ok(mut exchange) => {
                self.rid = exchange.request_id.take();
                self.http10 = exchange.framing.http10;
                if let BodyKind::Length(n) = exchange.framing.body {
                    self.tally.ingress += n;
                }
                let routed = Routed {
                    route: exchange.route,
                    service: exchange.service,
                    consumer: exchange.consumer,
                };
                let next = self.proxy(&snapshot, exchange, started).await;
                (next, Some(routed))
            }
        };
        self.record(&snapshot, routed, started, logged);
        self.rid = None;
        next
    }

    /// Adds the finished exchange to the worker's histograms and counters (when it was
    /// routed) and to the access log (when it is on).
    fn record(
        &self,
        snapshot: &Arc<Snapshot>,
        routed: Option<Routed>,
        started: Instant,
        logged: Option<usize>,
    ) {
        let ended = Instant::now();
        let request_us = ended.duration_since(started).as_micros() as u64;
        let tally = self.tally;
        let upstream_us = tally.upstream_us.map(u64::from);
        let proxy_us = if upstream_us.is_some() {
            u64::from(tally.before_upstream_us)
        } else {
            request_us
        };
        if let Some(routed) = routed {
            let sample = Sample {
                route: routed.route,
                service: routed.service,
                consumer: routed.consumer,
                status: tally.status,
                source: if tally.generated {
                    Source::Kong
                } else {
                    Source::Service
                },
                request_us,
                upstream_us,
                proxy_us,
                ingress_bytes: tally.ingress,
                egress_bytes: tally.egress,
            };
            self.worker.plugins.recorder.record(snapshot, &sample);
        }
        if let (Some(log), Some(split)) = (&self.worker.access_log, logged) {
            let (method, path) = self.logged.split_at(split);
            let config = &snapshot.config;
            let service = routed.and_then(|r| config.services.get(r.service));
            let consumer = routed
                .and_then(|r| r.consumer)
                .and_then(|c| config.consumers.get(c))
                .map(|c| c.username.as_deref().unwrap_or(&c.id));
            let entry = crate::accesslog::Entry {
                time: self.worker.clock.since_epoch(ended),
                client_ip: &self.info.ip,
                method,
                path,
                status: tally.status,
                request_us,
                upstream_us,
                proxy_us,
                scope: routed
                    .and_then(|r| snapshot.log_scopes.get(r.route))
                    .map(|s| &**s),
                upstream: service.filter(|_| tally.contacted).and_then(|s| {
                    match (s.balancer, tally.target) {
                        (Some(u), Some(t)) => config
                            .upstreams
                            .get(u)
                            .and_then(|u| u.targets.get(t as usize))
                            .map(|t| t.addr_text.as_str()),
                        (Some(_), None) => None,
                        (None, _) => s.addr.is_some().then_some(s.addr_text.as_str()),
                    }
                }),
                consumer,
                request_id: self.rid.as_deref().map(RequestId::value),
                bytes_in: tally.ingress,
                bytes_out: tally.egress,
            };
            log.push(&entry);
        }
    }

    /// Between requests: the write and upstream buffers go back to the worker's pool and
    /// an oversized read buffer is dropped, so an idle connection holds one small buffer.
    fn release_buffers(&mut self) {
        self.worker.buffers.give(std::mem::take(&mut self.out));
        self.worker.buffers.give(std::mem::take(&mut self.ubuf));
        if self.buf.is_empty() && self.buf.capacity() > 2 * HEAD_READ_SPACE {
            self.buf = Vec::with_capacity(HEAD_READ_SPACE);
        }
    }

    /// Closes after an answer while the client may still be sending, as nginx's lingering
    /// close: the write side is shut (the answer is complete), then what the client
    /// still sends is read and dropped for a moment, so the close does not reset the
    /// connection, and the answer with it, while the client is sending.
    async fn linger_close(&mut self) {
        const LINGER: Duration = Duration::from_secs(2);
        // Time is the bound; the byte cap only stops a client that sends at loopback
        // speed. Several MiB may already sit in the socket buffers from before the
        // answer (an upload stalled behind an upstream that stopped reading).
        const LINGER_BYTES: usize = 64 << 20;
        if self.cut && self.info.https {
            return;
        }
        // Over TLS the shutdown writes a close_notify, which a client that stopped
        // reading would hold up: it shares the deadline.
        let deadline = Instant::now() + LINGER;
        let _ = monoio::time::timeout_at(deadline.into(), self.client.shutdown()).await;
        let mut buf = std::mem::take(&mut self.buf);
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            buf.clear();
            let read = read_more(&mut self.client, buf, BODY_READ_SPACE);
            match monoio::time::timeout_at(deadline.into(), read).await {
                Ok((Ok(n), back)) if n > 0 => {
                    dropped += n;
                    buf = back;
                }
                _ => return,
            }
        }
    }

    /// Reads until `buf` holds a complete head; returns its range.
    async fn read_head(
        &mut self,
        limits: &Limits,
        snapshot: &Arc<Snapshot>,
        first: bool,
    ) -> Result<(usize, usize), HeadEnd> {
        let node = &snapshot.config.node;
        let mut scanner = HeadScanner::new();
        let mut deadline: Option<Instant> = None;
        // From a head's first byte when it comes in parts: nginx's "reading".
        let worker = self.worker.clone();
        let mut _reading = None;
        let began = |deadline: Option<Instant>| {
            deadline.and_then(|d| d.checked_sub(node.client_header_timeout))
        };
        loop {
            if !self.buf.is_empty() {
                match scanner.scan(&self.buf, limits) {
                    Ok(HeadStatus::Complete { start, end }) => return Ok((start, end)),
                    Ok(HeadStatus::Partial) => {}
                    Err(kind) => return Err(HeadEnd::Reject(kind, began(deadline))),
                }
                // Refuse a request line that can never become HTTP/1.x (HTTP/0.9, the
                // HTTP/2 preface, garbage) now, rather than waiting for headers.
                if let Some(line) = scanner.first_line(&self.buf) {
                    if !(line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0")) {
                        return Err(HeadEnd::Reject(ErrorKind::BadRequest, began(deadline)));
                    }
                    if self.partial_line.is_none() && self.worker.access_log.is_some() {
                        self.partial_line = Some(request_line(line, &mut self.logged));
                    }
                }
                if deadline.is_none() && scanner.started() {
                    // RFC-free policy: one deadline for the whole head, from its first
                    // byte, so trickling bytes cannot keep a connection forever.
                    deadline = Some(Instant::now() + node.client_header_timeout);
                    _reading = Some(worker.stats.connections_reading.hold());
                }
            }
            let buf = std::mem::take(&mut self.buf);
            let (result, buf) = match deadline {
                // A head arriving in pieces is rare: its timer is boxed so it does not
                // grow every connection's state.
                Some(deadline) => {
                    Box::pin(read_more_until(
                        &mut self.client,
                        buf,
                        HEAD_READ_SPACE,
                        deadline,
                    ))
                    .await
                }
                None => {
                    // Waiting for a request to start: the idle timeout applies, and
                    // draining closes a keep-alive connection at once. The idle slot (not a
                    // timer) keeps an idle connection's state small.
                    let idle = if first {
                        node.client_header_timeout
                    } else {
                        node.keepalive_timeout
                    };
                    let worker = self.worker.clone();
                    let slot = worker.idle.register();
                    let deadline = worker.idle.deadline_after(idle);
                    // A new connection is about to send its first request: draining
                    // lets it (within client_header_timeout), so a connection accepted
                    // just before a shutdown or an upgrade is served, not dropped.
                    let expired = if first {
                        slot.arm_deadline(deadline)
                    } else {
                        slot.arm(deadline)
                    };
                    let read = read_more(&mut self.client, buf, HEAD_READ_SPACE);
                    let result = monoio::select! {
                        biased;
                        (r, buf) = read => (r.map_err(|_| IoFail::Io), buf),
                        _ = expired => return Err(HeadEnd::Closed),
                    };
                    slot.disarm();
                    result
                }
            };
            self.buf = buf;
            match result {
                Ok(0) => return Err(HeadEnd::Closed),
                Ok(_) => {}
                Err(IoFail::TimedOut) if deadline.is_some() => {
                    self.cut = true;
                    return Err(HeadEnd::Reject(ErrorKind::RequestTimeout, began(deadline)));
                }
                Err(_) => return Err(HeadEnd::Closed),
            }
        }
    }

    /// Writes a generated error response (with the `extra` header lines). Returns whether
    /// the connection may continue.
    async fn answer(&mut self, kind: ErrorKind, close: bool, head: bool, extra: Extra<'_>) -> bool {
        self.out.clear();
        self.answer_prepared(kind, close, head, extra).await
    }

    /// Writes the answer already in `out`, or the generated one for `kind` (with the
    /// `extra` header lines) when `out` is empty. Returns whether the connection may
    /// continue.
    async fn answer_prepared(
        &mut self,
        kind: ErrorKind,
        close: bool,
        head: bool,
        extra: Extra<'_>,
    ) -> bool {
        self.count_error(kind);
        if kind == ErrorKind::ClientGone {
            // Recorded as nginx logs it (and so Kong's metrics count it): 499.
            self.tally.status = kind.status();
            return false;
        }
        if self.out.is_empty() {
            let body =
                with_request_id(generated::message_body(kind.message()), self.rid.as_deref());
            let echo = echo_line(self.rid.as_deref());
            let keep_line = self.keep_alive_line(close);
            generated::response(
                &mut self.out,
                kind.status(),
                b"application/json; charset=utf-8",
                &body,
                close,
                head,
                &[echo.as_bytes(), extra[0], extra[1], extra[2], keep_line],
            );
            self.tally.status = kind.status();
        }
        self.tally.generated = true;
        self.tally.egress += self.out.len() as u64;
        let out = std::mem::take(&mut self.out);
        // A client that sends requests and takes no answers (a pipelined flood) is held
        // to send_timeout like one that takes no proxied response.
        let worker = self.worker.clone();
        let timeout = worker.snapshot().config.node.send_timeout;
        // Boxed: a deadline's state would size every connection's future, idle ones
        // included, for what is the rarer path.
        let (result, out) = Box::pin(write_all_within(
            &worker.idle,
            &mut self.client,
            out,
            timeout,
        ))
        .await;
        self.out = out.unwrap_or_default();
        self.cut |= matches!(result, Err(IoFail::TimedOut));
        result.is_ok() && !close
    }

    /// The line an answer to an HTTP/1.0 request that keeps the connection carries.
    fn keep_alive_line(&self, close: bool) -> &'static [u8] {
        if self.http10 && !close {
            b"Connection: keep-alive\r\n"
        } else {
            b""
        }
    }

    fn count_error(&self, kind: ErrorKind) {
        match kind.side() {
            crate::error::Side::Upstream => self.worker.stats.upstream_errors.inc(),
            _ => self.worker.stats.client_errors.inc(),
        }
    }

    /// Proxies one routed request whose upstream head is in `out`.
    async fn proxy(
        &mut self,
        snapshot: &Arc<Snapshot>,
        mut exchange: Exchange,
        started: Instant,
    ) -> Next {
        let service = &snapshot.config.services[exchange.service];
        let node = &snapshot.config.node;
        let balanced = service.balancer.map(|i| (i, &snapshot.config.upstreams[i]));
        // What a failure's answer says of the time spent, as Kong's does once a request
        // was meant for the upstream: ms with the upstream, ms before it.
        let latency = Spent {
            started,
            headers: node.latency_headers,
        };

        // Move body bytes that arrived with the head behind the upstream head.
        self.body = match exchange.framing.body {
            BodyKind::None | BodyKind::UntilClose => RequestBody::Done,
            BodyKind::Length(n) => RequestBody::Length(n),
            BodyKind::Chunked => RequestBody::Chunked(Box::default()),
        };
        if let Err(kind) = self.take_buffered_body() {
            // Nothing has reached the upstream yet.
            return self.fail_close(kind, exchange.head).await;
        }
        if balanced.is_none() && service.addr.is_none() {
            return self
                .fail(ErrorKind::NameResolution, &exchange, latency)
                .await;
        }
        // An idempotent request's body that fits with its head is read whole before
        // anything goes upstream (as nginx and Kong buffer request bodies), so a failed
        // attempt can be replayed however the client's segments arrived (SPEC §3). A
        // chunked body's size shows only as it comes: it is gathered while it fits.
        let gather = exchange.idempotent
            && match self.body {
                RequestBody::Length(remaining) => {
                    self.out.len() as u64 + remaining <= COALESCE_BYTES as u64
                }
                RequestBody::Chunked(_) => true,
                RequestBody::Done | RequestBody::Abandoned => false,
            };
        if gather {
            if let Err(kind) = self.gather_body(&exchange, node).await {
                return self.fail_close(kind, exchange.head).await;
            }
            // The client has had its `100 Continue`.
            exchange.framing.expect_continue = false;
        }
        let complete = self.body.is_done();
        if !complete && exchange.framing.expect_continue {
            let (result, _) = self.client.write_all(CONTINUE).await;
            if result.is_err() {
                return Next::Close;
            }
        }

        let worker = self.worker.clone();
        let balance = exchange.balance.as_deref();
        // Targets this request failed on; a retry goes elsewhere while it can.
        let mut tried: Vec<u32> = Vec::new();
        // The length of the target `Host` value now in the head.
        let mut host_len = 0;
        // After a pooled connection failed, the fresh one goes to the same target.
        let mut same_target: Option<usize> = None;
        let mut retries_left = service.retries;
        let mut fresh_retry = true;
        let mut force_fresh = false;
        loop {
            let (addr, lease, target_name) = match balanced {
                None => (service.addr.unwrap_or(UNSPECIFIED), None, None),
                Some((index, upstream)) => {
                    let lease = match same_target.take() {
                        Some(target) => Some(worker.balance.hold(index, upstream, target)),
                        None => worker.balance.pick(
                            index,
                            upstream,
                            balance.and_then(|b| b.key),
                            &tried,
                        ),
                    };
                    let Some(lease) = lease else {
                        return self
                            .fail(ErrorKind::NoHealthyTarget, &exchange, latency)
                            .await;
                    };
                    let target = &upstream.targets[lease.target];
                    match balance.map(|b| (b.host_at, b.port_only)) {
                        Some((Some(at), port_only)) if self.out.len() >= at + host_len => {
                            // As Kong: no port for the scheme's default one.
                            let default_port = if service.tls.is_some() { 443 } else { 80 };
                            // `host_header` is the target's host, then `:port`.
                            let suffix = &target.host_header.as_bytes()[target.host.len()..];
                            let port;
                            let value = match (target.port == default_port, port_only) {
                                (true, true) => b"".as_slice(),
                                (true, false) => target.host.as_bytes(),
                                (false, true) if !suffix.is_empty() => suffix,
                                (false, true) => {
                                    port = format!(":{}", target.port);
                                    port.as_bytes()
                                }
                                (false, false) => target.host_header.as_bytes(),
                            };
                            self.out.splice(at..at + host_len, value.iter().copied());
                            host_len = value.len();
                        }
                        _ => {}
                    }
                    self.tally.target = Some(lease.target as u32);
                    (
                        target.addr.unwrap_or(UNSPECIFIED),
                        Some(lease),
                        target.server_name.as_ref(),
                    )
                }
            };
            let report = |outcome: Outcome| {
                if let (Some((_, upstream)), Some(lease)) = (balanced, &lease) {
                    passive_report(upstream, lease.target, outcome);
                }
            };
            self.tally.contacted = true;
            // Each attempt's own: an earlier attempt's request is not this one's.
            self.tally.sent = false;
            // A preserved `Host` names the connection, balanced or not (as Kong's
            // `$upstream_host`); its connections are pooled apart.
            let (server_name, pool_key) = match exchange.tls_name() {
                Some(tls) => (Some(&tls.name), (addr, tls.pool_key)),
                None => (
                    target_name,
                    (addr, service.tls.as_ref().map_or(0, |t| t.pool_key)),
                ),
            };
            let (mut upstream, reused) = match self
                .checkout(pool_key, service, server_name, force_fresh)
                .await
            {
                // A body still to stream is sent watching the socket for an early
                // answer, which a posted read would take instead.
                Ok((lease, reused)) if !complete => (lease.whole(), reused),
                Ok(checkout) => checkout,
                // The client left while the connect went on: nothing to answer, no
                // fault of the target's, nothing to try again for.
                Err(ErrorKind::ClientGone) => {
                    return self.fail_close(ErrorKind::ClientGone, exchange.head).await;
                }
                Err(kind) => {
                    report(Outcome::of_error(kind));
                    if let Some(lease) = &lease {
                        tried.push(lease.target as u32);
                    }
                    // Nothing was sent: any method may try again, unless the
                    // upstream's certificate was refused (it would be again).
                    if retries_left > 0 && kind != ErrorKind::UpstreamCertificate {
                        retries_left -= 1;
                        self.worker.stats.upstream_retries.inc();
                        continue;
                    }
                    self.log_upstream_failure(service, addr, kind);
                    return self.fail(kind, &exchange, latency).await;
                }
            };
            let sent = Instant::now();
            self.tally.sent = true;
            self.tally.before_upstream_us =
                sent.saturating_duration_since(started).as_micros() as u32;
            let sending = self
                .send_request(&mut upstream, service, node.client_body_timeout)
                .await;
            // An upstream that stopped taking the body may have answered first (a 413, a
            // 401 before the upload): that answer is the client's, on a connection that
            // then closes, since the rest of its body is never read.
            let early = matches!(sending, Err(SendFail::UpstreamGone));
            if early {
                exchange.framing.keep_alive = false;
            }
            let failure = match sending {
                Ok(()) | Err(SendFail::UpstreamGone) => match self
                    .read_response_head(
                        &mut upstream,
                        service,
                        &exchange,
                        (started, sent),
                        node.latency_headers,
                    )
                    .await
                {
                    Ok((mut plan, pos)) => {
                        plan.upstream_close |= early;
                        self.tally.status = plan.status;
                        if let (Some((_, up)), Some(lease)) = (balanced, &lease) {
                            let passive = &up.checks.passive;
                            let outcome = if plan.status == 504 {
                                // As Kong: a gateway timeout behind the target counts
                                // as a timeout.
                                Outcome::Timeout
                            } else if passive.tcp_only {
                                Outcome::Neutral
                            } else if passive.unhealthy_statuses.contains(plan.status) {
                                Outcome::HttpFailure
                            } else if passive.healthy_statuses.contains(plan.status) {
                                Outcome::Success
                            } else {
                                Outcome::Neutral
                            };
                            passive_report(up, lease.target, outcome);
                        }
                        // The lease (least-connections' count) lasts the whole exchange.
                        let _lease = lease;
                        return self
                            .relay_response(
                                upstream,
                                pool_key,
                                service,
                                plan,
                                pos,
                                node.send_timeout,
                            )
                            .await;
                    }
                    // The client left while the upstream worked: nothing to answer, no
                    // fault of the target's; the upstream connection, mid-exchange, goes.
                    // The wait was the upstream's, as a timeout's is.
                    Err(ErrorKind::ClientGone) => {
                        self.tally.upstream_us = Some(sent.elapsed().as_micros() as u32);
                        return self.fail_close(ErrorKind::ClientGone, exchange.head).await;
                    }
                    // No answer after all: the failed send is what went wrong.
                    Err(_) if early => ErrorKind::BadResponse,
                    Err(kind) => kind,
                },
                Err(SendFail::Client(kind)) => return self.fail_close(kind, exchange.head).await,
                Err(SendFail::Upstream(kind)) => kind,
            };
            drop(upstream);
            // A failure on a pooled connection says little about the target: the fresh
            // connection's attempt is what counts.
            let stale = reused && failure == ErrorKind::UpstreamClosed;
            if !stale {
                report(Outcome::of_error(failure));
                if let Some(lease) = &lease {
                    tried.push(lease.target as u32);
                }
            }
            // RFC 9110 §9.2.2: only an idempotent request whose bytes we still hold is
            // sent again, and only when the upstream sent nothing back.
            let replayable =
                complete && exchange.idempotent && failure == ErrorKind::UpstreamClosed;
            if replayable && reused && fresh_retry {
                same_target = lease.as_ref().map(|l| l.target);
                drop(lease);
                fresh_retry = false;
                force_fresh = true;
                self.worker.stats.upstream_retries.inc();
                continue;
            }
            if replayable && retries_left > 0 {
                retries_left -= 1;
                force_fresh = true;
                self.worker.stats.upstream_retries.inc();
                continue;
            }
            self.log_upstream_failure(service, addr, failure);
            return self.fail(failure, &exchange, latency).await;
        }
    }

    /// Answers an upstream-side failure. The connection continues only when the client
    /// asked for that (HTTP/1.1 without `Connection: close`, or 1.0 with keep-alive) and
    /// none of the request's body is left unread: unread body bytes would be read as the
    /// next request. The time since the request went upstream (as Kong's waiting time)
    /// is what its latency headers and the upstream latency record say, not time
    /// ringway added.
    async fn fail(&mut self, kind: ErrorKind, exchange: &Exchange, latency: Spent) -> Next {
        // A client still uploading (to an upstream that stopped reading) gets its 504
        // before a lingering close.
        let keep = exchange.framing.keep_alive && self.body.is_done() && !self.worker.draining();
        // Once the request went out, the time since is the upstream's, as for an answer.
        // Before the request went out (a connect that failed), all of it is ringway's.
        let (upstream, before) = if self.tally.sent {
            let from =
                latency.started + Duration::from_micros(u64::from(self.tally.before_upstream_us));
            (
                from.elapsed(),
                from.saturating_duration_since(latency.started),
            )
        } else {
            (Duration::ZERO, latency.started.elapsed())
        };
        if self.tally.sent && self.tally.upstream_us.is_none() {
            self.tally.upstream_us = Some(upstream.as_micros() as u32);
            self.tally.before_upstream_us = before.as_micros() as u32;
        }
        // No upstream was tried (no healthy target, a host that did not resolve):
        // answered without proxying, as Kong's balancer failures are, and as the
        // refusals' header, formatted on the stack (a flood of such 503s allocates
        // nothing for it).
        let mut digits = itoa::Buffer::new();
        let pair;
        let extra: Extra<'_> = match (latency.headers, self.tally.contacted) {
            (false, _) => NO_EXTRA,
            (true, false) => [
                b"X-Kong-Response-Latency: ",
                digits.format(before.as_millis() as u64).as_bytes(),
                b"\r\n",
            ],
            (true, true) => {
                pair = format!(
                    "X-Kong-Upstream-Latency: {}\r\nX-Kong-Proxy-Latency: {}\r\n",
                    upstream.as_millis(),
                    before.as_millis()
                );
                [pair.as_bytes(), b"", b""]
            }
        };
        // A request the rate limiter counted says so on a failure too, as on the answer
        // it would have had (Kong sets these on whatever the response is).
        let mut with_rate = Vec::new();
        let extra: Extra<'_> = match &exchange.rate_headers {
            Some(headers) => {
                headers.write(&mut with_rate, false);
                for part in extra {
                    with_rate.extend_from_slice(part);
                }
                [&with_rate, b"", b""]
            }
            None => extra,
        };
        if self.answer(kind, !keep, exchange.head, extra).await {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    /// Answers a failure that leaves the client connection unusable. One found in the
    /// client's body (a broken chunk, a stalled upload) leaves the body unread: the
    /// close lingers.
    async fn fail_close(&mut self, kind: ErrorKind, head: bool) -> Next {
        self.answer(kind, true, head, NO_EXTRA).await;
        Next::Close
    }

    /// Reads the rest of a body that fits with the head into `out` (after a `100
    /// Continue` when the client waits for one); a chunked one until it is whole or
    /// no longer fits, the rest then streaming.
    async fn gather_body(
        &mut self,
        exchange: &Exchange,
        node: &crate::config::Node,
    ) -> Result<(), ErrorKind> {
        if exchange.framing.expect_continue {
            let (result, _) = self.client.write_all(CONTINUE).await;
            if result.is_err() {
                return Err(ErrorKind::ClientGone);
            }
        }
        while !self.body.is_done() {
            if self.out.len() + self.buf.len() >= COALESCE_BYTES {
                break;
            }
            self.read_body_bytes(node.client_body_timeout).await?;
            self.take_buffered_body()?;
        }
        Ok(())
    }

    /// Reads more of the client's body into `buf`, within `timeout`.
    async fn read_body_bytes(&mut self, timeout: Duration) -> Result<(), ErrorKind> {
        let worker = self.worker.clone();
        let buf = std::mem::take(&mut self.buf);
        let (result, buf) = read_more_within(
            &worker.idle,
            &mut self.client,
            buf,
            BODY_READ_SPACE,
            timeout,
        )
        .await;
        self.buf = buf;
        match result {
            Ok(0) | Err(IoFail::Io) => Err(ErrorKind::ClientGone),
            Err(IoFail::TimedOut) => {
                self.cut = true;
                Err(ErrorKind::RequestTimeout)
            }
            Ok(_) => Ok(()),
        }
    }

    /// Appends body bytes already in `buf` to `out` (re-framed when chunked).
    fn take_buffered_body(&mut self) -> Result<(), ErrorKind> {
        let body = &mut self.body;
        match body {
            RequestBody::Done | RequestBody::Abandoned => {}
            RequestBody::Length(remaining) => {
                let take = (*remaining).min(self.buf.len() as u64) as usize;
                if take > 0 && self.out.len() + take <= COALESCE_BYTES {
                    self.out.extend_from_slice(&self.buf[..take]);
                    self.buf.drain(..take);
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        *body = RequestBody::Done;
                    }
                }
            }
            RequestBody::Chunked(decoder) => {
                if !self.buf.is_empty() && self.buf.len() <= COALESCE_BYTES {
                    let used = decoder
                        .decode(&self.buf, &mut self.out, Emit::Chunked)
                        .map_err(|_| ErrorKind::BadRequest)?;
                    // A chunked body counts as read, framing and all (nginx's
                    // `$request_length`, Kong's ingress bandwidth).
                    self.tally.ingress += used as u64;
                    self.buf.drain(..used);
                    if decoder.is_done() {
                        *body = RequestBody::Done;
                    }
                }
            }
        }
        Ok(())
    }

    async fn checkout(
        &mut self,
        key: upstream::PoolKey,
        service: &Service,
        server_name: Option<&rustls::pki_types::ServerName<'static>>,
        fresh: bool,
    ) -> Result<(upstream::Lease, bool), ErrorKind> {
        let addr = key.0;
        if !fresh {
            if let Some(lease) = self.worker.pool.take(key, self.worker.idle.coarse_now()) {
                self.worker.stats.upstream_reused.inc();
                return Ok((lease, true));
            }
        }
        // A client that leaves meanwhile ends it (and the retries after it).
        let connect = upstream::connect(
            addr,
            service.tls.as_ref(),
            server_name,
            service.connect_timeout,
        );
        // Boxed: a connect (with a TLS handshake) is a large future and rare next to a
        // pooled connection; unboxed it would size, and be copied with, every request's.
        let stream = Box::pin(unless_client_leaves(
            &self.worker.idle,
            connect,
            self.info.fd,
        ))
        .await
        .ok_or(ErrorKind::ClientGone)?
        .map_err(|e| {
            // Every attempt of every request to an upstream that answers TLS wrongly
            // fails so: said under the worker's limit on upstream failure lines.
            if let Some(tls) = &e.tls {
                self.log_upstream(service, addr, format_args!("TLS to upstream {tls}"));
            }
            e.kind
        })?;
        self.worker.stats.upstream_connects.inc();
        Ok((upstream::Lease::Whole(stream), false))
    }

    /// Sends the head in `out`, then streams what remains of the body from the client.
    async fn send_request(
        &mut self,
        upstream: &mut upstream::Lease,
        service: &Service,
        body_timeout: Duration,
    ) -> Result<(), SendFail> {
        let worker = self.worker.clone();
        let out = std::mem::take(&mut self.out);
        let (result, out) =
            write_all_within(&worker.idle, upstream, out, service.write_timeout).await;
        self.out = out.unwrap_or_default();
        match result {
            Ok(()) => {}
            Err(IoFail::TimedOut) => return Err(SendFail::Upstream(ErrorKind::UpstreamTimeout)),
            Err(IoFail::Io) => return Err(SendFail::Upstream(ErrorKind::UpstreamClosed)),
        }
        if self.body.is_done() {
            return Ok(());
        }
        // While the body streams, the upstream may answer before it has all of it (a
        // 413, a 401 before the upload) and stop reading: that answer ends the upload at
        // once, rather than when the client or a write times out. A read or write in
        // flight is abandoned; the caller reads the answer and closes both connections.
        // An interim 1xx sent unasked ends the watch instead, and the upload goes on; so
        // does a success or redirect (an upstream answering as it reads), read once the
        // body is sent, or at once should the upstream stop taking the rest after all.
        let mut answer = upstream.watch();
        let mut taking = false;
        let write_failure = |fail: IoFail, taking: bool| match fail {
            IoFail::TimedOut if taking => SendFail::UpstreamGone,
            fail => body_write_failure(fail),
        };
        loop {
            // Body bytes still in `buf` (those that did not fit the first write) go first.
            if self.buf.is_empty() && !self.body.is_done() {
                let read = self.read_body_bytes(body_timeout);
                let Some(read) = Box::pin(unless_answered(read, &mut answer, &mut taking)).await
                else {
                    self.cut = true;
                    return Err(SendFail::UpstreamGone);
                };
                read.map_err(SendFail::Client)?;
            }
            match &mut self.body {
                // `Abandoned` is never sent (a refused request's body); it stops here as
                // a finished one would.
                RequestBody::Done | RequestBody::Abandoned => return Ok(()),
                RequestBody::Length(remaining) => {
                    let take = (*remaining).min(self.buf.len() as u64) as usize;
                    let buf = std::mem::take(&mut self.buf);
                    let write = write_range_within(
                        &worker.idle,
                        upstream,
                        buf,
                        0,
                        take,
                        service.write_timeout,
                    );
                    let Some((result, mut buf)) =
                        Box::pin(unless_answered(write, &mut answer, &mut taking)).await
                    else {
                        return Err(SendFail::UpstreamGone);
                    };
                    if let Err(fail) = result {
                        return Err(write_failure(fail, taking));
                    }
                    buf.drain(..take);
                    self.buf = buf;
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.body = RequestBody::Done;
                    }
                }
                RequestBody::Chunked(decoder) => {
                    self.out.clear();
                    // An error here leaves the upstream with an incomplete request; the
                    // caller drops (closes) that connection before answering 400.
                    let used = decoder
                        .decode(&self.buf, &mut self.out, Emit::Chunked)
                        .map_err(|_| SendFail::Client(ErrorKind::BadRequest))?;
                    self.tally.ingress += used as u64;
                    self.buf.drain(..used);
                    let done = decoder.is_done();
                    let out = std::mem::take(&mut self.out);
                    let write =
                        write_all_within(&worker.idle, upstream, out, service.write_timeout);
                    let Some((result, out)) =
                        Box::pin(unless_answered(write, &mut answer, &mut taking)).await
                    else {
                        return Err(SendFail::UpstreamGone);
                    };
                    self.out = out.unwrap_or_default();
                    if let Err(fail) = result {
                        return Err(write_failure(fail, taking));
                    }
                    if done {
                        self.body = RequestBody::Done;
                    }
                }
            }
        }
    }

    /// Reads the upstream response head, skipping interim responses. On success the
    /// client's head is in `out` and the body starts at the returned offset of `ubuf`.
    async fn read_response_head(
        &mut self,
        upstream: &mut upstream::Lease,
        service: &Service,
        exchange: &Exchange,
        (started, sent): (Instant, Instant),
        latency_headers: bool,
    ) -> Result<(ResponsePlan, usize), ErrorKind> {
        let worker = self.worker.clone();
        self.ubuf.clear();
        let mut scanner = HeadScanner::new();
        let mut received_any = false;
        let mut interim = 0;
        loop {
            // Until the answer starts, a client that leaves ends the wait (as nginx's).
            let client = (!received_any).then_some(self.info.fd).flatten();
            let (answered, ubuf) = match upstream.take_posted() {
                // Read into the pooled connection's own buffer: this one goes back.
                Some(posted) => {
                    let read = posted.read(upstream);
                    let answered =
                        answer_within(&worker.idle, read, service.read_timeout, client).await;
                    self.worker.buffers.give(std::mem::take(&mut self.ubuf));
                    answered
                }
                None => {
                    let ubuf = match std::mem::take(&mut self.ubuf) {
                        ubuf if ubuf.capacity() > 0 => ubuf,
                        _ => self.worker.buffers.take(),
                    };
                    read_answer_within(
                        &worker.idle,
                        upstream,
                        ubuf,
                        RESPONSE_HEAD_READ_SPACE,
                        service.read_timeout,
                        client,
                    )
                    .await
                }
            };
            self.ubuf = ubuf;
            let result = match answered {
                Answered::Read(result) => result,
                Answered::ClientGone => return Err(ErrorKind::ClientGone),
            };
            match result {
                Ok(0) | Err(IoFail::Io) if !received_any => return Err(ErrorKind::UpstreamClosed),
                Ok(0) | Err(IoFail::Io) => return Err(ErrorKind::BadResponse),
                Err(IoFail::TimedOut) => return Err(ErrorKind::UpstreamTimeout),
                Ok(_) => received_any = true,
            }
            loop {
                match scanner.scan(&self.ubuf, &RESPONSE_LIMITS) {
                    Ok(HeadStatus::Partial) => break,
                    Err(_) => return Err(ErrorKind::BadResponse),
                    Ok(HeadStatus::Complete { start, end }) => {
                        // Decided now, not when the request went out: a drain that began
                        // while the upstream worked still tells this client to reconnect.
                        let keep_client = exchange.framing.keep_alive && !self.worker.draining();
                        self.out.clear();
                        let upstream_us = sent.elapsed().as_micros() as u32;
                        let before_us = sent.saturating_duration_since(started).as_micros() as u32;
                        self.tally.upstream_us = Some(upstream_us);
                        self.tally.before_upstream_us = before_us;
                        let extra = response::Extra {
                            request_id: self
                                .rid
                                .as_deref()
                                .filter(|id| id.echo)
                                .map(RequestId::header_line),
                            latency_ms: latency_headers
                                .then_some((upstream_us / 1000, before_us / 1000)),
                            set_cookie: exchange
                                .balance
                                .as_ref()
                                .and_then(|b| b.set_cookie.as_deref()),
                        };
                        match response::rewrite(
                            &self.ubuf[start..end],
                            exchange,
                            keep_client,
                            &extra,
                            &mut self.out,
                        )? {
                            Parsed::Final(plan) => return Ok((plan, end)),
                            Parsed::Informational => {
                                // Each interim answer restarts `read_timeout`: an upstream
                                // that only ever sends them would hold the request forever.
                                interim += 1;
                                if interim > MAX_INTERIM_RESPONSES {
                                    return Err(ErrorKind::BadResponse);
                                }
                                self.ubuf.drain(..end);
                                scanner = HeadScanner::new();
                                if self.ubuf.is_empty() {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Writes the response head and streams the body; pools the upstream when clean.
    async fn relay_response(
        &mut self,
        mut upstream: upstream::Lease,
        key: upstream::PoolKey,
        service: &Service,
        plan: ResponsePlan,
        mut pos: usize,
        client_timeout: Duration,
    ) -> Next {
        let addr = key.0;
        let worker = self.worker.clone();
        if plan.switching {
            self.out.extend_from_slice(&self.ubuf[pos..]);
            if !self.flush_out(client_timeout).await {
                return Next::Close;
            }
            return match upstream.into_stream() {
                Some(stream) => Next::Tunnel(stream, service.read_timeout),
                None => Next::Close,
            };
        }
        let emit = if plan.client_body == ClientBody::Raw {
            Emit::Raw
        } else {
            Emit::Chunked
        };
        let clean;
        match plan.upstream_body {
            BodyKind::None => {
                clean = pos == self.ubuf.len();
                if clean {
                    self.post_next_read(&mut upstream, &plan);
                }
                if !self.flush_out(client_timeout).await {
                    return Next::Close;
                }
                if !clean {
                    self.upstream_cut(service, addr, BodyCut::Trailing);
                }
            }
            BodyKind::Length(mut remaining) => {
                let take = remaining.min((self.ubuf.len() - pos) as u64) as usize;
                if take as u64 == remaining && pos + take == self.ubuf.len() {
                    self.post_next_read(&mut upstream, &plan);
                }
                let flushed = if take >= WRITEV_BODY_BYTES {
                    // A large first part goes out beside the head, not copied behind it.
                    self.flush_out_with_body(pos..pos + take, client_timeout)
                        .await
                } else {
                    self.out.extend_from_slice(&self.ubuf[pos..pos + take]);
                    self.flush_out(client_timeout).await
                };
                if !flushed {
                    return Next::Close;
                }
                pos += take;
                remaining -= take as u64;
                let extra = pos < self.ubuf.len();
                while remaining > 0 {
                    self.ubuf.clear();
                    let ubuf = std::mem::take(&mut self.ubuf);
                    let (result, ubuf) = read_more_within(
                        &worker.idle,
                        &mut upstream,
                        ubuf,
                        BODY_READ_SPACE,
                        service.read_timeout,
                    )
                    .await;
                    self.ubuf = ubuf;
                    match result {
                        Ok(n) if n > 0 => {}
                        // Short body or a stalled upstream: the client must not see a
                        // complete-looking response, so its connection is cut.
                        result => {
                            self.upstream_cut(service, addr, BodyCut::of(result));
                            return Next::Close;
                        }
                    }
                    let take = remaining.min(self.ubuf.len() as u64) as usize;
                    let extra_now = take < self.ubuf.len();
                    if take as u64 == remaining && !extra_now {
                        self.post_next_read(&mut upstream, &plan);
                    }
                    let ubuf = std::mem::take(&mut self.ubuf);
                    let (result, ubuf) = write_range_within(
                        &worker.idle,
                        &mut self.client,
                        ubuf,
                        0,
                        take,
                        client_timeout,
                    )
                    .await;
                    self.ubuf = ubuf;
                    if let Err(fail) = result {
                        self.cut |= matches!(fail, IoFail::TimedOut);
                        return Next::Close;
                    }
                    self.tally.egress += take as u64;
                    remaining -= take as u64;
                    if extra_now {
                        // More bytes than declared: the upstream is out of step.
                        self.upstream_cut(service, addr, BodyCut::Trailing);
                        return finish(plan);
                    }
                }
                clean = !extra;
                if extra {
                    self.upstream_cut(service, addr, BodyCut::Trailing);
                }
            }
            BodyKind::Chunked => {
                let mut decoder = Decoder::new();
                let used = match decoder.decode(&self.ubuf[pos..], &mut self.out, emit) {
                    Ok(used) => used,
                    Err(_) => {
                        self.log_upstream_failure(service, addr, ErrorKind::BadResponse);
                        return self.bad_response_after_head(plan).await;
                    }
                };
                pos += used;
                if decoder.is_done() && pos == self.ubuf.len() {
                    self.post_next_read(&mut upstream, &plan);
                }
                if !self.flush_out(client_timeout).await {
                    return Next::Close;
                }
                while !decoder.is_done() {
                    self.ubuf.clear();
                    let ubuf = std::mem::take(&mut self.ubuf);
                    let (result, ubuf) = read_more_within(
                        &worker.idle,
                        &mut upstream,
                        ubuf,
                        BODY_READ_SPACE,
                        service.read_timeout,
                    )
                    .await;
                    self.ubuf = ubuf;
                    match result {
                        Ok(n) if n > 0 => {}
                        result => {
                            self.upstream_cut(service, addr, BodyCut::of(result));
                            return Next::Close;
                        }
                    }
                    pos = match decoder.decode(&self.ubuf, &mut self.out, emit) {
                        Ok(used) => used,
                        Err(_) => {
                            self.upstream_cut(service, addr, BodyCut::Malformed);
                            return Next::Close;
                        }
                    };
                    // Not when nothing is left to write (the last chunk alone, decoded
                    // for an HTTP/1.0 client): no write would take the read to the kernel.
                    if decoder.is_done() && pos == self.ubuf.len() && !self.out.is_empty() {
                        self.post_next_read(&mut upstream, &plan);
                    }
                    if !self.flush_out(client_timeout).await {
                        return Next::Close;
                    }
                }
                clean = pos == self.ubuf.len();
                if !clean {
                    self.upstream_cut(service, addr, BodyCut::Trailing);
                }
            }
            BodyKind::UntilClose => {
                self.encode_body(pos, emit);
                if !self.flush_out(client_timeout).await {
                    return Next::Close;
                }
                loop {
                    self.ubuf.clear();
                    let ubuf = std::mem::take(&mut self.ubuf);
                    let (result, ubuf) = read_more_within(
                        &worker.idle,
                        &mut upstream,
                        ubuf,
                        BODY_READ_SPACE,
                        service.read_timeout,
                    )
                    .await;
                    self.ubuf = ubuf;
                    match result {
                        Ok(0) => break,
                        Ok(_) => {}
                        result @ Err(_) => {
                            self.upstream_cut(service, addr, BodyCut::of(result));
                            return Next::Close;
                        }
                    }
                    self.encode_body(0, emit);
                    if !self.flush_out(client_timeout).await {
                        return Next::Close;
                    }
                }
                // The upstream closed: that connection is never reused.
                clean = false;
                if emit == Emit::Chunked {
                    self.out.extend_from_slice(chunked::LAST_CHUNK);
                    if !self.flush_out(client_timeout).await {
                        return Next::Close;
                    }
                }
            }
        }
        if clean && !plan.upstream_close {
            self.worker
                .pool
                .put(key, upstream, self.worker.idle.coarse_now());
        }
        finish(plan)
    }

    /// Once the whole response is in, clean, from an upstream that keeps the connection:
    /// posts the connection's next read. Called only ahead of a write to the client with
    /// bytes in it: its completion comes through the kernel, which so has the read by the
    /// time the connection is pooled (`upstream::Pool`).
    fn post_next_read(&self, upstream: &mut upstream::Lease, plan: &ResponsePlan) {
        if plan.upstream_close {
            return;
        }
        let buffers = &self.worker.buffers;
        upstream.post(&self.worker.pool, || {
            let mut buf = buffers.take();
            buf.reserve(RESPONSE_HEAD_READ_SPACE);
            buf
        });
    }

    /// Logs what `service`'s upstream at `addr` did to this request, with its ID, under
    /// the worker's limit on such lines.
    fn log_upstream(&self, service: &Service, addr: SocketAddr, what: std::fmt::Arguments<'_>) {
        let id = self.rid.as_deref().map(RequestId::value);
        self.worker.log_upstream(&service.name, addr, what, id);
    }

    /// `log_upstream` for the failure a request is answered with (its 502 or 504).
    fn log_upstream_failure(&self, service: &Service, addr: SocketAddr, kind: ErrorKind) {
        let id = self.rid.as_deref().map(RequestId::value);
        self.worker
            .log_upstream_failure(&service.name, addr, kind, id);
    }

    /// Counts and logs an upstream that broke off its response after the head.
    fn upstream_cut(&self, service: &Service, addr: SocketAddr, cut: BodyCut) {
        let outcome = if cut.cuts_response() {
            self.worker.stats.upstream_cut.inc();
            "the client's connection was cut"
        } else {
            "they were dropped and the connection closed"
        };
        self.log_upstream(service, addr, format_args!("{}; {outcome}", cut.describe()));
    }

    /// The upstream broke chunked framing before anything of the body was sent.
    async fn bad_response_after_head(&mut self, _plan: ResponsePlan) -> Next {
        self.out.clear();
        // A response to a HEAD has no body to break: this request was not one.
        self.fail_close(ErrorKind::BadResponse, false).await
    }

    /// Appends `ubuf[pos..]` to `out`, as a chunk or raw.
    fn encode_body(&mut self, pos: usize, emit: Emit) {
        let data = &self.ubuf[pos..];
        match emit {
            Emit::Chunked => chunked::encode_chunk(&mut self.out, data),
            Emit::Raw => self.out.extend_from_slice(data),
        }
    }

    /// Writes `out` to the client and clears it. Returns false when the client is gone.
    /// Writes `out` and then `ubuf[body]` with one `writev`; `ubuf` keeps its bytes.
    async fn flush_out_with_body(
        &mut self,
        body: std::ops::Range<usize>,
        timeout: Duration,
    ) -> bool {
        let worker = self.worker.clone();
        let head_and_body = (self.out.len() + body.len()) as u64;
        self.tally.egress += head_and_body;
        let buf = HeadBody::new(
            std::mem::take(&mut self.out),
            std::mem::take(&mut self.ubuf),
            body,
        );
        let (result, buf) =
            write_head_body_within(&worker.idle, &mut self.client, buf, timeout).await;
        if let Some(buf) = buf {
            let (out, ubuf) = buf.into_parts();
            self.out = out;
            self.out.clear();
            self.ubuf = ubuf;
        }
        self.cut |= matches!(result, Err(IoFail::TimedOut));
        self.note_delivery(result.is_ok(), head_and_body);
        result.is_ok()
    }

    /// After a write of the proxied response: a client gone before any of it reached
    /// it is logged and counted as nginx does it (499), with nothing sent.
    fn note_delivery(&mut self, written: bool, len: u64) {
        if written {
            self.tally.delivered = true;
        } else if !self.tally.delivered {
            self.tally.status = ErrorKind::ClientGone.status();
            self.tally.egress = self.tally.egress.saturating_sub(len);
        }
    }

    async fn flush_out(&mut self, timeout: Duration) -> bool {
        let worker = self.worker.clone();
        if self.out.is_empty() {
            return true;
        }
        let len = self.out.len() as u64;
        self.tally.egress += len;
        let out = std::mem::take(&mut self.out);
        let (result, out) = write_all_within(&worker.idle, &mut self.client, out, timeout).await;
        self.out = out.unwrap_or_default();
        self.out.clear();
        self.cut |= matches!(result, Err(IoFail::TimedOut));
        self.note_delivery(result.is_ok(), len);
        result.is_ok()
    }
}

/// The method and the path (without the query, which may carry a token) of a head, for
/// the access log: written into the connection's reused `line`, method first; returns
/// where the path starts.
fn request_line(head: &[u8], line: &mut String) -> usize {
    // `METHOD SP target SP version` when the head parsed; anything when it did not (the
    // log escapes both parts).
    let first = &head[..memchr::memchr(b'\n', head).unwrap_or(head.len())];
    let method_end = memchr::memchr(b' ', first).unwrap_or(first.len());
    let rest = first.get(method_end + 1..).unwrap_or_default();
    let mut target = &rest[..memchr::memchr(b' ', rest).unwrap_or(rest.len())];
    // An absolute-form target logs its path only: its authority may carry credentials
    // (`http://user:password@host/`).
    if let Some((_, end)) = crate::http::split_absolute(target) {
        target = match target.get(end) {
            Some(b'/') => &target[end..],
            _ => b"/",
        };
    }
    // Neither the query nor a fragment (which no client should send, and which would
    // carry what a query does) is logged.
    let path = &target[..memchr::memchr2(b'?', b'#', target).unwrap_or(target.len())];
    // A parsed head's method is ASCII and its target nearly always valid UTF-8: checked
    // first, so the lossy conversion's slower scan runs only for what needs it.
    fn push(line: &mut String, part: &[u8]) {
        match std::str::from_utf8(part) {
            Ok(text) => line.push_str(text),
            Err(_) => line.push_str(&String::from_utf8_lossy(part)),
        }
    }
    line.clear();
    push(line, &first[..method_end]);
    let split = line.len();
    push(line, path);
    split
}

/// A generated JSON body with `request_id` added, in place, when the request has one.
fn with_request_id(mut body: Vec<u8>, rid: Option<&RequestId>) -> Vec<u8> {
    let Some(rid) = rid else {
        return body;
    };
    if body.last() == Some(&b'}') {
        body.pop();
        if body.len() > 1 {
            body.push(b',');
        }
        body.extend_from_slice(b"\"request_id\":");
        generated::write_json_string(&mut body, rid.value());
        body.push(b'}');
    }
    body
}

/// A header line a generated answer carries, in pieces written one after another
/// (`X-Kong-Response-Latency: `, its digits, CRLF), so it is never formatted into a
/// `String` of its own.
type Extra<'a> = [&'a [u8]; 3];

const NO_EXTRA: Extra<'static> = [b"", b"", b""];

/// The request ID header line for a generated response, when it is echoed.
fn echo_line(rid: Option<&RequestId>) -> String {
    match rid.filter(|id| id.echo) {
        Some(id) => format!("{}\r\n", id.header_line()),
        None => String::new(),
    }
}

fn finish(plan: ResponsePlan) -> Next {
    if plan.close_client {
        Next::Close
    } else {
        Next::KeepAlive
    }
}

/// Runs `op` to its end unless the watched upstream answers first (`None` then). What
/// arrives may not end the upload: an interim 1xx sent unasked, or a success or a
/// redirect, which says the upstream is taking the body (it answers as it reads, or
/// before it reads, and wants the rest): either ends the watch, not the operation, and
/// the second sets `taking`, the answer then read once the body is sent. A refusal (4xx,
/// 5xx) or what does not read as a status is the upstream that stopped reading.
/// Callers box it: it runs only for a body that did not go up with the head, and
/// unboxed it would size every request's future.
async fn unless_answered<F: std::future::Future>(
    op: F,
    answer: &mut Option<upstream::Answer>,
    taking: &mut bool,
) -> Option<F::Output> {
    let mut op = std::pin::pin!(op);
    loop {
        let arrived = async {
            match answer.as_ref() {
                Some(answer) => answer.arrived().await,
                None => std::future::pending().await,
            }
        };
        monoio::select! {
            biased;
            done = &mut op => return Some(done),
            _ = arrived => {}
        }
        match answer.as_ref().and_then(upstream::Answer::status) {
            Some(100 | 102..=199) => {}
            Some(200..=399) => *taking = true,
            _ => return None,
        }
        *answer = None;
    }
}

/// A failed body write: after part of the request went out it is never retried.
fn body_write_failure(fail: IoFail) -> SendFail {
    match fail {
        IoFail::TimedOut => SendFail::Upstream(ErrorKind::UpstreamTimeout),
        IoFail::Io => SendFail::UpstreamGone,
    }
}

/// Where no address is (a balanced service's own `addr`); never connected to.
const UNSPECIFIED: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Counts a proxied request's outcome for the target's passive health check.
fn passive_report(upstream: &crate::config::Upstream, target: usize, outcome: Outcome) {
    let passive = &upstream.checks.passive;
    if !passive.enabled() {
        return;
    }
    let Some(t) = upstream.targets.get(target) else {
        return;
    };
    let limits = Thresholds {
        successes: passive.successes,
        tcp_failures: passive.tcp_failures,
        timeouts: passive.timeouts,
        http_failures: passive.http_failures,
    };
    if let Some(healthy) = t.health.report(outcome, limits) {
        crate::balance::active::announce(&upstream.name, &t.target, healthy, "passive check");
    }
}

#[cfg(test)]
mod tests {
    /// Every idle keep-alive connection holds this future (plus its small read buffer):
    /// keep it small. Everything per request is boxed and only exists while a request
    /// is in flight.
    #[test]
    fn idle_connection_state_stays_small() {
        crate::proxy::worker::with_test_worker(|worker, addr| async move {
            let stream = monoio::net::TcpStream::connect_addr(addr).await.unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
            let future = super::serve(worker, stream, fd, addr, addr, false);
            let size = std::mem::size_of_val(&future);
            assert!(size <= 1088, "the connection future grew to {size} bytes");
        });
    }

    /// A request's future is built, then moved into its box, and each await moves a
    /// child future into its parent: copies paid on every request. Rare large states (a
    /// connect with its TLS handshake, a TLS upstream's reads and writes) are boxed so
    /// they do not size it.
    #[test]
    fn per_request_state_stays_small() {
        use super::*;
        crate::proxy::worker::with_test_worker(|worker, addr| async move {
            let client = monoio::net::TcpStream::connect_addr(addr).await.unwrap();
            let mut conn = Conn::new(worker, client, ClientInfo::default());
            let future = conn.exchange(0, 0);
            let size = std::mem::size_of_val(&future);
            assert!(size <= 2304, "a request's future grew to {size} bytes");
        });
    }

    /// The access log's method and path: the query dropped (it may carry a token), bytes
    /// that are not UTF-8 replaced rather than refused.
    #[test]
    fn logged_request_line() {
        let mut line = String::new();
        let cases: [(&[u8], &str, &str); 9] = [
            (b"GET /a/b HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "/a/b"),
            (
                b"GET http://alice:pw@b.example/h/x?token=1 HTTP/1.1\r\n\r\n",
                "GET",
                "/h/x",
            ),
            (b"GET HTTPS://b.example HTTP/1.1\r\n\r\n", "GET", "/"),
            (b"GET http://u:p@b.example?q HTTP/1.1\r\n\r\n", "GET", "/"),
            (b"GE\"T /x HTTP/1.1\r\n\r\n", "GE\"T", "/x"),
            (
                b"POST /login?jwt=secret&x=1 HTTP/1.1\r\n\r\n",
                "POST",
                "/login",
            ),
            (b"OPTIONS * HTTP/1.1\r\n\r\n", "OPTIONS", "*"),
            (b"GET /?only=query HTTP/1.1\r\n\r\n", "GET", "/"),
            (b"GET /caf\xe9 HTTP/1.1\r\n\r\n", "GET", "/caf\u{fffd}"),
        ];
        for (head, method, path) in cases {
            let split = super::request_line(head, &mut line);
            assert_eq!(line.split_at(split), (method, path), "{head:?}");
        }
    }
}
