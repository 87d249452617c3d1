//! Binding listeners before any thread starts, so that every failure is one clear error.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Listen;

fn socket(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

/// Fails when some other socket holds `addr`: a plain bind, which SO_REUSEPORT would not
/// refuse. A ringway killed a moment ago still holds its ports while the kernel tears its
/// io_uring down (a few milliseconds after the process is reaped), so a supervisor that
/// restarts it at once would fail: a busy port is asked again for a short while before
/// it counts as taken.
fn ensure_free(addr: SocketAddr) -> io::Result<()> {
    const SETTLE: Duration = Duration::from_millis(500);
    let deadline = Instant::now() + SETTLE;
    loop {
        match socket(addr, 1, false) {
            Ok(probe) => {
                drop(probe);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The Admin API's listener. SO_REUSEPORT, so an upgraded process can bind it beside
/// the old one (`takeover`); otherwise a port someone holds is refused first.
pub fn bind_admin(addr: SocketAddr, takeover: bool) -> io::Result<TcpListener> {
    if !takeover && addr.port() != 0 {
        ensure_free(addr)?;
    }
    socket(addr, 1024, true)
}

/// One SO_REUSEPORT listener per worker for every proxy address; returns them grouped by
/// worker, each with whether it speaks TLS. A port some other socket holds is detected first: SO_REUSEPORT would
/// otherwise let the bind succeed and silently share the port.
/// With `takeover` the check is skipped: the holder is the ringway being upgraded.
pub fn bind_proxy(
    listens: &[Listen],
    workers: usize,
    takeover: bool,
) -> anyhow::Result<Vec<Vec<(TcpListener, bool)>>> {
    let mut per_worker: Vec<Vec<(TcpListener, bool)>> = (0..workers).map(|_| Vec::new()).collect();
    for listen in listens {
        let mut addr = listen.addr;
        let context = || format!("cannot listen on {}", listen.addr);
        if addr.port() != 0 && !takeover {
            ensure_free(addr).with_context(context)?;
        }
        for slot in per_worker.iter_mut() {
            let listener = socket(addr, listen.backlog, true).with_context(context)?;
            // Port 0: every worker binds the port the first one got.
            addr = listener.local_addr().with_context(context)?;
            slot.push((listener, listen.ssl));
        }
    }
    Ok(per_worker)
}
