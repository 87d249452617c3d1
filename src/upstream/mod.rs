//! Upstream connections: connecting with a deadline, and the per-worker keep-alive pool.
//!
//! The pool belongs to one worker and is never shared, so checkout and checkin are a
//! `RefCell` borrow that is never held across an `.await`. Checkout says whether the
//! connection was reused, because a failure on a reused connection before any response
//! byte may be retried once on a fresh one (idempotent methods only). Checkin happens
//! only after a clean exchange. Idle connections are taken newest first, so the oldest
//! age out, and are dropped past `upstream_keepalive_idle_timeout` or beyond
//! `upstream_keepalive_max_idle` per address.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
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

struct Idle {
    stream: Stream,
    since: Instant,
}

/// One worker's idle upstream connections, keyed by address (and TLS settings).
pub struct Pool {
    /// Keyed by addresses from the config, not by anything a client sends: foldhash,
    /// not SipHash, on this per-request lookup.
    idle: RefCell<HashMap<PoolKey, Vec<Idle>, foldhash::fast::RandomState>>,
    /// `upstream_keepalive_max_idle` and `upstream_keepalive_idle_timeout`, as the
    /// worker's current config has them.
    max_idle: std::cell::Cell<usize>,
    idle_timeout: std::cell::Cell<Duration>,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: RefCell::new(HashMap::default()),
            max_idle: std::cell::Cell::new(max_idle),
            idle_timeout: std::cell::Cell::new(idle_timeout),
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
    pub fn take(&self, addr: PoolKey, now: Instant) -> Option<Stream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        while let Some(entry) = list.pop() {
            // Expired or dead: dropping it closes it.
            if now.saturating_duration_since(entry.since) < self.idle_timeout.get()
                && !is_closed(&entry.stream)
            {
                return Some(entry.stream);
            }
        }
        None
    }

    /// Returns a connection after a clean exchange.
    pub fn put(&self, addr: PoolKey, stream: Stream, now: Instant) {
        let max_idle = self.max_idle.get();
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        // Drop the oldest so the newest (most likely alive) stay; a lowered limit
        // drops as many as it takes.
        while !list.is_empty() && list.len() >= max_idle {
            list.remove(0);
        }
        if max_idle == 0 {
            return;
        }
        list.push(Idle { stream, since: now });
    }

    /// Closes connections idle past the timeout; run periodically by the worker.
    pub fn sweep(&self, now: Instant) {
        let timeout = self.idle_timeout.get();
        let mut idle = self.idle.borrow_mut();
        idle.retain(|_, list| {
            list.retain(|entry| now.saturating_duration_since(entry.since) < timeout);
            !list.is_empty()
        });
    }

    /// Closes every idle connection (on shutdown).
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
    }
}

/// Opens a new connection within `timeout` (for TLS, the handshake included, with
/// `server_name` when given instead of the service's: a balanced target's own).
pub async fn connect(
    addr: SocketAddr,
    tls: Option<&UpstreamTls>,
    server_name: Option<&rustls::pki_types::ServerName<'static>>,
    timeout: Duration,
) -> Result<Stream, ErrorKind> {
    let deadline = Instant::now() + timeout;
    let tcp = match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            stream
        }
        Ok(Err(e)) => {
            log::debug!("connect to {addr} failed: {e}");
            return Err(ErrorKind::ConnectFailed);
        }
        Err(_) => return Err(ErrorKind::ConnectTimeout),
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
            match cause {
                Ok(
                    cause @ (rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::InvalidCertRevocationList(_)),
                ) => {
                    log::warn!("TLS to upstream {addr} refused: {cause}");
                    Err(ErrorKind::UpstreamCertificate)
                }
                Ok(cause) => {
                    log::warn!("TLS to upstream {addr} failed: {cause}");
                    Err(ErrorKind::ConnectFailed)
                }
                Err(cause) => {
                    log::warn!("TLS to upstream {addr} failed: {cause}");
                    Err(ErrorKind::ConnectFailed)
                }
            }
        }
        Err(_) => Err(ErrorKind::ConnectTimeout),
    }
}

/// Whether the upstream has closed (or reset, or spoken out of turn on) an idle pooled
/// connection: a non-blocking one-byte peek, made before every reuse. Its syscall is the
/// price of never reading an unsolicited response as the answer to the next request, and
/// of not sending a request that cannot be replayed on a dead connection.
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
