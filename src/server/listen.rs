//! Binding listeners before any thread starts, so that every failure is one clear error.

use std::io;
use std::net::{SocketAddr, TcpListener};

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

/// One listener without SO_REUSEPORT (the admin API).
pub fn bind_single(addr: SocketAddr) -> io::Result<TcpListener> {
    socket(addr, 1024, false)
}

/// One SO_REUSEPORT listener per worker for every proxy address; returns them grouped by
/// worker, each with whether it speaks TLS. A port some other socket holds is detected first: SO_REUSEPORT would
/// otherwise let the bind succeed and silently share the port.
pub fn bind_proxy(
    listens: &[Listen],
    workers: usize,
) -> anyhow::Result<Vec<Vec<(TcpListener, bool)>>> {
    let mut per_worker: Vec<Vec<(TcpListener, bool)>> = (0..workers).map(|_| Vec::new()).collect();
    for listen in listens {
        let mut addr = listen.addr;
        let context = || format!("cannot listen on {}", listen.addr);
        if addr.port() != 0 {
            drop(socket(addr, 1, false).with_context(context)?);
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
