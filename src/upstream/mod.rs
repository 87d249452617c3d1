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
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use crate::error::ErrorKind;

struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// A connection handed out by the pool or freshly connected.
pub struct Checkout {
    pub stream: TcpStream,
    pub reused: bool,
}

/// One worker's idle upstream connections, keyed by address.
pub struct Pool {
    idle: RefCell<HashMap<SocketAddr, Vec<Idle>>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: RefCell::new(HashMap::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// Takes the most recently used live connection to `addr`, if any.
    pub fn take(&self, addr: SocketAddr, now: Instant) -> Option<TcpStream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        while let Some(entry) = list.pop() {
            if now.saturating_duration_since(entry.since) < self.idle_timeout {
                return Some(entry.stream);
            }
            // Expired: dropping it closes it.
        }
        None
    }

    /// Returns a connection after a clean exchange.
    pub fn put(&self, addr: SocketAddr, stream: TcpStream, now: Instant) {
        if self.max_idle == 0 {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() >= self.max_idle {
            // Drop the oldest so the newest (most likely alive) stay.
            list.remove(0);
        }
        list.push(Idle { stream, since: now });
    }

    /// Closes connections idle past the timeout; run periodically by the worker.
    pub fn sweep(&self, now: Instant) {
        let mut idle = self.idle.borrow_mut();
        idle.retain(|_, list| {
            list.retain(|entry| now.saturating_duration_since(entry.since) < self.idle_timeout);
            !list.is_empty()
        });
    }

    /// Closes every idle connection (on shutdown).
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
    }
}

/// Opens a new connection within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ErrorKind> {
    match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => {
            log::debug!("connect to {addr} failed: {e}");
            Err(ErrorKind::ConnectFailed)
        }
        Err(_) => Err(ErrorKind::ConnectTimeout),
    }
}

/// Whether the upstream has closed (or reset, or spoken out of turn on) an idle pooled
/// connection: a non-blocking one-byte peek. It costs a syscall, so it is used only for
/// requests that could not be replayed if the connection turned out to be dead.
#[allow(unsafe_code)]
pub fn is_closed(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: the descriptor belongs to `stream`, which outlives the call and has no
    // operation in flight (it was idle in the pool); the buffer is one valid local byte,
    // and MSG_PEEK leaves the socket's data untouched.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        return err.kind() != std::io::ErrorKind::WouldBlock;
    }
    // 0: the upstream closed; > 0: bytes nobody asked for, the connection is out of step.
    true
}
