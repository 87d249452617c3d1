//! The floor under any io_uring proxy: a byte relay that does no HTTP work at all.
//!
//! Each client connection gets one upstream connection of its own (what a keep-alive
//! pool amounts to in steady state), and bytes are copied both ways with the operations
//! ringway's proxy path uses: recv and send on io_uring, owned buffers, ringway's own
//! runtime (`ringway::server::io_uring_runtime`: the same ring setup and timer). No
//! parsing, no routing, no headers added, no pool, no timers: what it costs per request
//! is what the kernel's socket work costs a proxy on this machine, and `bench/floor.sh`
//! measures ringway and nginx beside it.
//!
//! usage: relay --listen ADDR --upstream ADDR

use std::net::SocketAddr;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Large enough that a 16 KiB response is one receive when it has all arrived.
const BUFFER: usize = 64 * 1024;

fn main() {
    let (listen, upstream) = match parse_args(std::env::args().skip(1)) {
        Ok(addrs) => addrs,
        Err(message) => {
            eprintln!("relay: {message}\nusage: relay --listen ADDR --upstream ADDR");
            std::process::exit(2);
        }
    };
    let mut runtime = match ringway::server::io_uring_runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("relay: no io_uring runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(serve(listen, upstream)) {
        eprintln!("relay: {e}");
        std::process::exit(1);
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(SocketAddr, SocketAddr), String> {
    let (mut listen, mut upstream) = (None, None);
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--listen" => &mut listen,
            "--upstream" => &mut upstream,
            _ => return Err(format!("unknown argument {flag}")),
        };
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        *slot = Some(value.parse().map_err(|e| format!("{flag} {value}: {e}"))?);
    }
    match (listen, upstream) {
        (Some(listen), Some(upstream)) => Ok((listen, upstream)),
        _ => Err("--listen and --upstream are required".into()),
    }
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    loop {
        let (client, _) = listener.accept().await?;
        monoio::spawn(relay(client, upstream));
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr) {
    let Ok(origin) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = origin.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (origin_read, origin_write) = origin.into_split();
    let requests = monoio::spawn(copy(client_read, origin_write));
    copy(origin_read, client_write).await;
    requests.await;
}

/// Copies until the reader ends or either side fails, then shuts the writer.
async fn copy(mut from: impl AsyncReadRent, mut to: impl AsyncWriteRent) {
    let mut buf = Vec::with_capacity(BUFFER);
    loop {
        let (read, back) = from.read(buf).await;
        buf = back;
        if !matches!(read, Ok(n) if n > 0) {
            break;
        }
        let (written, back) = to.write_all(buf).await;
        buf = back;
        if written.is_err() {
            break;
        }
        buf.clear();
    }
    let _ = to.shutdown().await;
}
