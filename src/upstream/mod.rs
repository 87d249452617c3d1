//! Upstream connections: connecting with a deadline, and the per-worker keep-alive pool.
//!
//! The pool belongs to one worker and is never shared, so checkout and checkin are a
//! `RefCell` borrow that is never held across an `.await`. Checkout says whether the
//! connection was reused, because a failure on a reused connection before any response
//! byte may be retried once on a fresh one (idempotent methods only). Checkin happens
//! only after a clean exchange. Idle connections are taken newest first, so the oldest
//! age out, and are dropped past `upstream_keepalive_idle_timeout` or beyond
//! `upstream_keepalive_max_idle` per address.
//!
//! A plain connection's next read is posted as soon as its response is in (`Lease::post`),
//! ahead of a write of the response to the client, whose completion takes the worker
//! through the kernel: the kernel has the read by the time the connection is pooled.
//! While the connection sits idle, that read completing (the upstream closed, reset, or
//! wrote out of turn) marks it dead, which checkout sees by polling it, without a
//! syscall; once it is taken, the same read receives the answer. Checkout knows what the
//! worker has collected from the kernel: bytes that came since the worker last did
//! (microseconds under load) go unseen, as bytes that come just after a peek would, and
//! as nginx's idle-connection read handler sees them. Each posted read holds a buffer, so
//! a worker has at most `MAX_POSTED` in flight; connections pooled past them (and TLS
//! ones, where a session ticket is not an answer) hold no buffer and get a non-blocking
//! peek before reuse instead.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf, Split, Splitable};
use monoio::net::TcpStream;
use monoio::BufResult;

use crate::config::UpstreamTls;
use crate::error::ErrorKind;

/// A connection to an upstream: plain TCP, or TLS over it (`https` services).
pub enum Stream {
    Plain(TcpStream),
    Tls {
        stream: Box<monoio_rustls::ClientTlsStream<TcpStream>>,
        /// The TCP socket under it, for the idle-connection liveness peek.
        fd: RawFd,
    },
}

// SAFETY: both variants are `Split` (a TCP stream, and monoio-rustls' stream over one),
// so reading and writing from separate halves is as sound for the enum as for them.
#[allow(unsafe_code)]
unsafe impl Split for Stream {}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Plain(s) => s.as_raw_fd(),
            Stream::Tls { fd, .. } => *fd,
        }
    }

    /// A watch on the socket for the upstream's answer, kept apart from the stream so
    /// it can be waited on while a write to the stream is in flight. `None` over TLS,
    /// where bytes on the socket need not be an answer (a TLS 1.3 server sends session
    /// tickets whenever it likes), or when no descriptor is left for it.
    pub fn watch(&self) -> Option<Answer> {
        if matches!(self, Stream::Tls { .. }) {
            return None;
        }
        #[allow(unsafe_code)]
        // SAFETY: `dup` of the stream's open socket; the new descriptor is checked and
        // owned by what is made of it below.
        let copy = unsafe { libc::dup(self.fd()) };
        if copy < 0 {
            return None;
        }
        #[allow(unsafe_code)]
        // SAFETY: `copy` is a descriptor just made, which nothing else owns.
        let std = unsafe { <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(copy) };
        TcpStream::from_std(std).ok().map(Answer)
    }
}

/// A second descriptor of an upstream connection's socket, only ever polled: it says
/// that the upstream sent something (an answer before it took the whole request body,
/// or its close). Dropping it closes the copy, not the connection.
pub struct Answer(TcpStream);

impl Answer {
    /// Resolves once the socket has something to read (or an error to report).
    pub async fn arrived(&self) {
        let _ = self.0.readable(false).await;
    }

    /// The status of the response that arrived, when its first twelve bytes are there
    /// and read as one (`HTTP/1.x NNN`): a peek, nothing is consumed.
    pub fn status(&self) -> Option<u16> {
        let mut head = [0u8; 12];
        if peek(self.0.as_raw_fd(), &mut head).ok() != Some(head.len())
            || !head.starts_with(b"HTTP/1.")
            || head[8] != b' '
        {
            return None;
        }
        head[9..12].iter().try_fold(0u16, |status, &digit| {
            digit
                .is_ascii_digit()
                .then(|| status * 10 + u16::from(digit - b'0'))
        })
    }
}

// The TLS branches are boxed: rustls' futures are several times a plain socket's, and
// unboxed they would size every read and write future of the proxy path, whose moves
// into the enclosing future (on every await) then copy them for plain upstreams too. A
// TLS record costs far more than the allocation.
impl AsyncReadRent for Stream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls { stream, .. } => Box::pin(stream.read(buf)).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.readv(buf).await,
            Stream::Tls { stream, .. } => Box::pin(stream.readv(buf)).await,
        }
    }
}

impl AsyncWriteRent for Stream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.write(buf).await,
            Stream::Tls { stream, .. } => Box::pin(stream.write(buf)).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.writev(buf).await,
            Stream::Tls { stream, .. } => Box::pin(stream.writev(buf)).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush().await,
            Stream::Tls { stream, .. } => Box::pin(stream.flush()).await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls { stream, .. } => Box::pin(stream.shutdown()).await,
        }
    }
}

/// Which pooled connections are interchangeable: the address, and for TLS the
/// settings the connection was verified with.
pub type PoolKey = (SocketAddr, u64);

/// Reads a worker keeps posted on upstream connections (idle in its pool, being pooled,
/// or taken and awaiting their answer), at most. Each holds a buffer for a response head
/// and a small body (20–32 KiB), so this bounds them to a few MiB per worker however many
/// connections there are.
pub const MAX_POSTED: usize = 128;

/// What a posted read gives back: the read half (to rejoin the write half), the read's
/// result and its buffer.
type ReadBack = (OwnedReadHalf<Stream>, std::io::Result<usize>, Vec<u8>);

/// A connection with a read posted on it, and the write half beside it.
pub struct PostedRead {
    write: OwnedWriteHalf<Stream>,
    /// Boxed, as its type has no name. Polled once when posted (which queues it for the
    /// kernel; the epoll driver reads at once when the socket is marked readable), when
    /// pooled, swept and taken, and awaited for the answer; never again once it has
    /// completed.
    read: Pin<Box<dyn Future<Output = ReadBack>>>,
    /// Its place among the worker's `MAX_POSTED`.
    _slot: PostSlot,
}

impl PostedRead {
    /// Posts a read into `buf`'s free space on a plain stream; `None` when it completed
    /// at once (the upstream had already said something: the connection is done).
    fn post(stream: Stream, buf: Vec<u8>, slot: PostSlot) -> Option<PostedRead> {
        let (mut half, write) = stream.into_split();
        let mut posted = PostedRead {
            write,
            read: Box::pin(async move {
                let len = buf.len();
                let cap = buf.capacity();
                let (result, slice) = half.read(buf.slice_mut(len..cap)).await;
                (half, result, slice.into_inner())
            }),
            _slot: slot,
        };
        posted.still_pending().then_some(posted)
    }

    /// Polls the read once, without a task to wake: `true` while it has not completed.
    fn still_pending(&mut self) -> bool {
        self.read
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
    }

    /// Resolves to what the read got, leaving the connection whole again in `lease` (the
    /// one `Lease::take_posted` took it from; `Closed` meanwhile, and should the read be
    /// dropped before it completes).
    pub async fn read(self, lease: &mut Lease) -> (std::io::Result<usize>, Vec<u8>) {
        let (half, result, buf) = self.read.await;
        if let Ok(stream) = half.reunite(self.write) {
            *lease = Lease::Whole(stream);
        }
        (result, buf)
    }

    /// The whole connection, the read abandoned: the runtime cancels it ahead of
    /// anything submitted after it, so it cannot take bytes meant for a later read.
    /// Bytes that came before the cancel (out of turn) go with it.
    fn abandon(self) -> Option<Stream> {
        drop(self.read);
        OwnedReadHalf(self.write.0.clone()).reunite(self.write).ok()
    }
}

/// An upstream connection as one exchange holds it.
pub enum Lease {
    /// Nothing in flight on it.
    Whole(Stream),
    /// With the read of its next answer posted: once the response is in, until pooled
    /// (`Lease::post`); taken from the pool, for the next request, whose answer
    /// `take_posted` gives. Writes go out on its write half.
    Posted(PostedRead),
    /// Left while a posted read is taken out, when it never gave the connection back, or
    /// when it completed as it was posted (the upstream wrote out of turn): reads and
    /// writes fail.
    Closed,
}

impl Lease {
    /// Posts the read of the next answer on a plain connection whose response is in,
    /// while the worker has fewer than `MAX_POSTED` and its pool keeps connections. The
    /// caller then writes to the client (a write that completes through the kernel, so
    /// the kernel has the read before the connection is pooled). A read that completes at
    /// once leaves the lease `Closed`: the upstream said something out of turn.
    pub fn post(&mut self, pool: &Pool, buffer: impl FnOnce() -> Vec<u8>) {
        if pool.posted.get() >= pool.max_posted
            || pool.max_idle.get() == 0
            || !matches!(self, Lease::Whole(Stream::Plain(_)))
        {
            return;
        }
        if let Lease::Whole(stream) = std::mem::replace(self, Lease::Closed) {
            pool.posted.set(pool.posted.get() + 1);
            let slot = PostSlot(pool.posted.clone());
            if let Some(posted) = PostedRead::post(stream, buffer(), slot) {
                *self = Lease::Posted(posted);
            }
        }
    }

    /// The read of the answer, when it was posted before the connection was pooled. The
    /// lease is `Closed` until what the read gives back makes it whole again.
    pub fn take_posted(&mut self) -> Option<PostedRead> {
        match std::mem::replace(self, Lease::Closed) {
            Lease::Posted(posted) => Some(posted),
            other => {
                *self = other;
                None
            }
        }
    }

    /// The connection as a stream with nothing in flight: a posted read is abandoned.
    /// For an exchange that watches the socket itself, as streaming a request body does
    /// (`Stream::watch`).
    pub fn into_stream(self) -> Option<Stream> {
        match self {
            Lease::Whole(stream) => Some(stream),
            Lease::Posted(posted) => posted.abandon(),
            Lease::Closed => None,
        }
    }

    /// The connection as a lease with nothing in flight (`into_stream`).
    pub fn whole(self) -> Lease {
        self.into_stream().map_or(Lease::Closed, Lease::Whole)
    }

    /// Whether nothing has come on the connection as far as the worker has seen: a
    /// posted read has not completed (a whole connection is peeked at when taken).
    fn quiet(&mut self) -> bool {
        match self {
            Lease::Whole(_) => true,
            Lease::Posted(read) => read.still_pending(),
            Lease::Closed => false,
        }
    }

    /// `Stream::watch` of a whole connection; `None` otherwise.
    pub fn watch(&self) -> Option<Answer> {
        match self {
            Lease::Whole(stream) => stream.watch(),
            _ => None,
        }
    }
}

fn closed_lease() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::NotConnected)
}

/// Reads of a whole connection. A posted read is taken with `take_posted` first: until
/// then, a read fails.
impl AsyncReadRent for Lease {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Lease::Whole(stream) => stream.read(buf).await,
            _ => (Err(closed_lease()), buf),
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Lease::Whole(stream) => stream.readv(buf).await,
            _ => (Err(closed_lease()), buf),
        }
    }
}

impl AsyncWriteRent for Lease {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Lease::Whole(stream) => stream.write(buf).await,
            Lease::Posted(posted) => posted.write.write(buf).await,
            Lease::Closed => (Err(closed_lease()), buf),
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Lease::Whole(stream) => stream.writev(buf).await,
            Lease::Posted(posted) => posted.write.writev(buf).await,
            Lease::Closed => (Err(closed_lease()), buf),
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Lease::Whole(stream) => stream.flush().await,
            Lease::Posted(posted) => posted.write.flush().await,
            Lease::Closed => Err(closed_lease()),
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Lease::Whole(stream) => stream.shutdown().await,
            Lease::Posted(posted) => posted.write.shutdown().await,
            Lease::Closed => Err(closed_lease()),
        }
    }
}

/// An idle connection in the pool: with its next read posted, or whole (TLS, or past
/// `MAX_POSTED`), to be checked with a peek when taken.
struct Idle {
    lease: Lease,
    since: Instant,
}

/// A place among a worker's `MAX_POSTED` posted reads, given back when the read goes
/// (completed and rejoined, abandoned, or dropped with its connection).
struct PostSlot(Rc<Cell<usize>>);

impl Drop for PostSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// One worker's idle upstream connections, keyed by address (and TLS settings).
pub struct Pool {
    /// Keyed by addresses from the config, not by anything a client sends: foldhash,
    /// not SipHash, on this per-request lookup.
    idle: RefCell<HashMap<PoolKey, Vec<Idle>, foldhash::fast::RandomState>>,
    /// `upstream_keepalive_max_idle` and `upstream_keepalive_idle_timeout`, as the
    /// worker's current config has them.
    max_idle: Cell<usize>,
    idle_timeout: Cell<Duration>,
    /// Reads posted now (idle, being pooled, or awaiting an answer), and how many may be.
    posted: Rc<Cell<usize>>,
    max_posted: usize,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool::with_posted_reads(max_idle, idle_timeout, MAX_POSTED)
    }

    /// A pool whose connections have at most `max_posted` reads posted at once.
    pub fn with_posted_reads(max_idle: usize, idle_timeout: Duration, max_posted: usize) -> Pool {
        Pool {
            idle: RefCell::new(HashMap::default()),
            max_idle: Cell::new(max_idle),
            idle_timeout: Cell::new(idle_timeout),
            posted: Rc::new(Cell::new(0)),
            max_posted,
        }
    }

    /// Takes a reloaded config's settings; connections already idle keep their place
    /// until the next `put` to their address or `sweep` applies them.
    pub fn configure(&self, max_idle: usize, idle_timeout: Duration) {
        self.max_idle.set(max_idle);
        self.idle_timeout.set(idle_timeout);
    }

    /// Takes the most recently used live connection to `addr`, if any. One the upstream
    /// closed, reset or wrote to while it sat idle is closed instead: a response read
    /// from it would be another request's.
    pub fn take(&self, addr: PoolKey, now: Instant) -> Option<Lease> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        while let Some(mut entry) = list.pop() {
            // Expired or dead: dropping it closes it.
            if now.saturating_duration_since(entry.since) >= self.idle_timeout.get() {
                continue;
            }
            let live = match &mut entry.lease {
                Lease::Whole(stream) => !is_closed(stream),
                posted => posted.quiet(),
            };
            if live {
                return Some(entry.lease);
            }
        }
        None
    }

    /// Returns a connection after a clean exchange; one with a posted read (`Lease::post`)
    /// keeps it while it sits idle, unless it has completed already: the connection is
    /// closed instead.
    pub fn put(&self, addr: PoolKey, mut lease: Lease, now: Instant) {
        let max_idle = self.max_idle.get();
        let mut idle = self.idle.borrow_mut();
        if max_idle == 0 {
            // A reload turned pooling off: those idle go too.
            idle.remove(&addr);
            return;
        }
        // Dead already: dropping it closes it (before it could push a live one out).
        if !lease.quiet() {
            return;
        }
        let list = idle.entry(addr).or_default();
        // Drop the oldest so the newest (most likely alive) stay; a lowered limit
        // drops as many as it takes.
        while list.len() >= max_idle {
            list.remove(0);
        }
        list.push(Idle { lease, since: now });
    }

    /// Closes connections idle past the timeout, and those whose posted read completed
    /// (the upstream closed them, as one with a shorter idle timeout does), which would
    /// otherwise hold their buffer and their place among the posted reads until taken;
    /// run periodically by the worker.
    pub fn sweep(&self, now: Instant) {
        let timeout = self.idle_timeout.get();
        let mut idle = self.idle.borrow_mut();
        idle.retain(|_, list| {
            list.retain_mut(|entry| {
                now.saturating_duration_since(entry.since) < timeout && entry.lease.quiet()
            });
            !list.is_empty()
        });
    }

    /// How often `sweep` should run: a quarter of the idle timeout, so a connection
    /// closes within a quarter past it (never more often than `at_least`, nor less often
    /// than once a second).
    pub fn sweep_every(&self, at_least: Duration) -> Duration {
        (self.idle_timeout.get() / 4).clamp(at_least, Duration::from_secs(1))
    }

    /// Closes every idle connection (on shutdown).
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
    }

    /// Reads posted now (`MAX_POSTED`).
    pub fn posted(&self) -> usize {
        self.posted.get()
    }
}

/// Why a connect failed, and for a TLS handshake rustls' reason (`refused: ...` for a
/// certificate, else `failed: ...`), which the caller logs with what it knows of the
/// request, under its own limit on such lines.
#[derive(Debug)]
pub struct ConnectError {
    pub kind: ErrorKind,
    pub tls: Option<String>,
}

impl From<ErrorKind> for ConnectError {
    fn from(kind: ErrorKind) -> ConnectError {
        ConnectError { kind, tls: None }
    }
}

/// Opens a new connection within `timeout` (for TLS, the handshake included, with
/// `server_name` when given instead of the service's: a balanced target's own).
pub async fn connect(
    addr: SocketAddr,
    tls: Option<&UpstreamTls>,
    server_name: Option<&rustls::pki_types::ServerName<'static>>,
    timeout: Duration,
) -> Result<Stream, ConnectError> {
    let deadline = Instant::now() + timeout;
    let tcp = match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            stream
        }
        Ok(Err(e)) => {
            log::debug!("connect to {addr} failed: {e}");
            return Err(ErrorKind::ConnectFailed.into());
        }
        Err(_) => return Err(ErrorKind::ConnectTimeout.into()),
    };
    let Some(tls) = tls else {
        return Ok(Stream::Plain(tcp));
    };
    let fd = tcp.as_raw_fd();
    let connector = monoio_rustls::TlsConnector::from(tls.config.clone());
    let name = server_name.unwrap_or(&tls.server_name).clone();
    let handshake = connector.connect(name, tcp);
    match monoio::time::timeout_at(deadline.into(), handshake).await {
        Ok(Ok(stream)) => Ok(Stream::Tls {
            stream: Box::new(stream),
            fd,
        }),
        Ok(Err(e)) => {
            // Either way the upstream's fault: 502. A certificate that does not verify
            // is not tried again; a handshake cut short may be.
            let cause: Result<&rustls::Error, &std::io::Error> = match &e {
                monoio_rustls::TlsError::Rustls(e) => Ok(e),
                monoio_rustls::TlsError::Io(e) => {
                    e.get_ref().and_then(|inner| inner.downcast_ref()).ok_or(e)
                }
            };
            let (kind, tls) = match cause {
                Ok(
                    cause @ (rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::InvalidCertRevocationList(_)),
                ) => (ErrorKind::UpstreamCertificate, format!("refused: {cause}")),
                Ok(cause) => (ErrorKind::ConnectFailed, format!("failed: {cause}")),
                Err(cause) => (ErrorKind::ConnectFailed, format!("failed: {cause}")),
            };
            Err(ConnectError {
                kind,
                tls: Some(tls),
            })
        }
        Err(_) => Err(ErrorKind::ConnectTimeout.into()),
    }
}

/// Whether the upstream has closed (or reset, or spoken out of turn on) an idle pooled
/// connection without a posted read: a non-blocking one-byte peek, made before reuse.
/// Its syscall is the price of never reading an unsolicited response as the answer to
/// the next request, and of not sending a request that cannot be replayed on a dead
/// connection.
fn is_closed(stream: &Stream) -> bool {
    // 0: the upstream closed; > 0: bytes nobody asked for, the connection is out of step.
    !matches!(peek(stream.fd(), &mut [0]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A non-blocking look at the bytes waiting on a socket (as many as `buf` holds), which
/// consumes none: `Ok(0)` is the peer's close, `WouldBlock` nothing there yet.
#[allow(unsafe_code)]
pub fn peek(fd: RawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes; MSG_PEEK leaves the socket's data
    // untouched, and a descriptor that is not an open socket is an error, not UB. Callers
    // pass a socket they own, with no operation reading it in flight.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests;
