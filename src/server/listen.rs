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

/// The Admin API's listener. SO_REUSEPORT, so an upgraded process can bind it beside
/// the old one (`takeover`); otherwise a port someone holds is refused first.
pub fn bind_admin(addr: SocketAddr, takeover: bool) -> io::Result<TcpListener> {
    if !takeover && addr.port() != 0 {
        drop(socket(addr, 1, false)?);
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
