//! One worker thread: a monoio runtime, its accept loops and its housekeeping.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpListener;

use super::RunningDriver;
use crate::proxy::{self, Admitted, Shared, Worker};

/// How often a worker looks at the shared drain flag, sweeps its deadline slots and its
/// idle pool: the precision of idle and operation deadlines.
const HOUSEKEEPING_INTERVAL: Duration = crate::proxy::idle::TICK;
/// io_uring submission queue size per worker.
const RING_ENTRIES: u32 = 4096;

/// Builds the worker's runtime on the chosen driver and runs it until drained.
pub fn run(
    id: usize,
    shared: Arc<Shared>,
    listeners: Vec<(StdListener, bool)>,
    driver: RunningDriver,
) -> std::io::Result<()> {
    match driver {
        RunningDriver::IoUring => {
            let mut runtime = io_uring_runtime()?;
            runtime.block_on(main(id, shared, listeners))
        }
        RunningDriver::Epoll => {
            let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .with_entries(RING_ENTRIES)
                .enable_timer()
                .build()?;
            runtime.block_on(main(id, shared, listeners))
        }
    }
}

/// A worker's io_uring runtime (with timers). DEFER_TASKRUN (with SINGLE_ISSUER: only
/// this thread submits): the kernel completes socket operations in batches, when the
/// worker asks for events (it does when it runs out of ready tasks), instead of at every
/// entry; 3-5 % less CPU per proxied request than COOP_TASKRUN in A/B runs here.
/// Kernels before 6.1 refuse it: then COOP_TASKRUN + TASKRUN_FLAG, which runs
/// completions when the worker next enters the kernel instead of interrupting it
/// (measured faster than monoio's default setup and epoll). The benchmarks' relay
/// (bench/relay.rs) runs on this setup too.
pub fn io_uring_runtime(
) -> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
    let build = |defer: bool| {
        let mut uring = io_uring::IoUring::builder();
        if defer {
            uring.setup_single_issuer().setup_defer_taskrun();
        } else {
            uring.setup_coop_taskrun().setup_taskrun_flag();
        }
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .uring_builder(uring)
            .with_entries(RING_ENTRIES)
            .enable_timer()
            .build()
    };
    build(true).or_else(|_| build(false))
}

async fn main(
    id: usize,
    shared: Arc<Shared>,
    listeners: Vec<(StdListener, bool)>,
) -> std::io::Result<()> {
    let worker = Rc::new(Worker::new(id, shared.clone()));
    let mut accepting = Vec::new();
    for (std_listener, ssl) in listeners {
        let local = std_listener.local_addr()?;
        let listener = TcpListener::from_std(std_listener)?;
        accepting.push(monoio::spawn(accept_loop(
            worker.clone(),
            listener,
            local,
            ssl,
        )));
    }
    shared.workers_ready.fetch_add(1, Ordering::AcqRel);

    let mut last_sweep = Instant::now();
    loop {
        monoio::time::sleep(HOUSEKEEPING_INTERVAL).await;
        if shared.draining.load(Ordering::Acquire) && !worker.drain.fired() {
            worker.drain.fire();
        }
        worker.idle.sweep(Instant::now(), worker.drain.since());
        worker.clock.reanchor();
        worker.buffers.trim();
        worker.plugins.recorder.tick();
        worker.log_unlogged_failures();
        if let Some(log) = &worker.access_log {
            log.flush();
        }
        if !worker.plugins.rate_limits.is_empty() {
            worker.plugins.rate_limits.tick(&worker.plugins.rate_store);
        }
        if worker.drain.fired() {
            if worker.stats.connections_active.get() == 0 {
                break;
            }
            continue;
        }
        let now = Instant::now();
        if now.duration_since(last_sweep) >= worker.pool.sweep_every(HOUSEKEEPING_INTERVAL) {
            worker.pool.sweep(now);
            last_sweep = now;
        }
    }
    for task in accepting {
        task.await;
    }
    worker.pool.clear();
    worker.plugins.recorder.flush();
    if let Some(log) = &worker.access_log {
        log.flush();
    }
    Ok(())
}

/// The TLS handshake, within `client_header_timeout`, with the certificates of the
/// config current now. A failure (a plain-HTTP request, garbage, no certificate for the
/// name, a stall) closes this connection and is counted.
async fn handshake(
    worker: &Rc<Worker>,
    stream: monoio::net::TcpStream,
) -> Option<monoio_rustls::ServerTlsStream<monoio::net::TcpStream>> {
    let snapshot = worker.snapshot();
    let Some(config) = snapshot.config.tls.clone() else {
        worker.stats.tls_failures.inc();
        return None;
    };
    let timeout = snapshot.config.node.client_header_timeout;
    drop(snapshot);
    match monoio::time::timeout(timeout, crate::tls::accept(config, stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            log::debug!("TLS handshake failed: {e}");
            worker.stats.tls_failures.inc();
            None
        }
        Err(_) => {
            log::debug!("TLS handshake timed out");
            worker.stats.tls_failures.inc();
            None
        }
    }
}

/// Stops a listener without dropping what it has accepted: `shutdown` takes it out of
/// listening (new connections are refused, or with net.ipv4.tcp_migrate_req move to
/// another process's listener) and makes the pending accept return, while a
/// connection whose accept already completed is still handed over and served.
/// Cancelling the pending accept instead would drop such a connection unanswered.
#[allow(unsafe_code)]
fn stop_listening(fd: std::os::fd::RawFd) {
    // SAFETY: `fd` is the listener's descriptor, which the accept loop keeps open until
    // its pending accept returns after this call; shutdown takes no buffers.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// A plain connection's whole task.
fn serve_plain(
    worker: Rc<Worker>,
    stream: monoio::net::TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) -> impl std::future::Future<Output = ()> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    proxy::serve(worker, stream, fd, peer, local, false)
}

/// A TLS connection's whole task: the handshake, then the same connection loop.
async fn serve_tls(
    worker: Rc<Worker>,
    stream: monoio::net::TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    // Boxed: the handshake's state is needed only until it is done.
    if let Some(tls) = Box::pin(handshake(&worker, stream)).await {
        proxy::serve(worker, tls, fd, peer, local, true).await;
    }
}

/// Runs a connection's task, holding its place in the counts until the task ends.
async fn counted(_admitted: Admitted, task: impl std::future::Future<Output = ()>) {
    task.await;
}

async fn accept_loop(worker: Rc<Worker>, listener: TcpListener, local: SocketAddr, ssl: bool) {
    use std::os::fd::AsRawFd;
    let fd = listener.as_raw_fd();
    let stopper = {
        let worker = worker.clone();
        monoio::spawn(async move {
            worker.drain.wait().await;
            stop_listening(fd);
        })
    };
    loop {
        let accepted = listener.accept().await;
        if accepted.is_err() && worker.drain.fired() {
            break;
        }
        match accepted {
            Ok((stream, peer)) => {
                let Some(admitted) = worker.admit() else {
                    // Refused fast: closing at once costs less than serving badly.
                    worker.stats.connections_refused.inc();
                    drop(stream);
                    continue;
                };
                let worker = worker.clone();
                let _ = stream.set_nodelay(true);
                // The address the client reached: the listener's, unless it is a
                // wildcard (0.0.0.0), which only getsockname can resolve.
                let local = if local.ip().is_unspecified() {
                    stream.local_addr().unwrap_or(local)
                } else {
                    local
                };
                // Two kinds of task, not one with both branches: a task is as large as
                // its largest state, and a TLS connection's (rustls' state inline) is
                // several KiB that every idle plain connection would otherwise carry.
                // The connection is counted while its task runs, however it ends.
                if ssl {
                    monoio::spawn(counted(admitted, serve_tls(worker, stream, peer, local)));
                } else {
                    monoio::spawn(counted(admitted, serve_plain(worker, stream, peer, local)));
                }
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                log::warn!("accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    stopper.await;
    drop(listener);
}

#[cfg(test)]
mod tests {
    /// The task of every idle plain connection: no larger than the connection loop
    /// itself, whatever a TLS connection needs, and within the allocator's 1 KiB size
    /// class with the task's header (the next class up is 1.25 KiB per connection).
    #[test]
    fn a_plain_connection_task_carries_no_tls_state() {
        crate::proxy::worker::with_test_worker(|worker, addr| async move {
            let plain = monoio::net::TcpStream::connect_addr(addr).await.unwrap();
            let tls = monoio::net::TcpStream::connect_addr(addr).await.unwrap();
            let plain = super::serve_plain(worker.clone(), plain, addr, addr);
            let tls = super::serve_tls(worker, tls, addr, addr);
            let (plain, tls) = (std::mem::size_of_val(&plain), std::mem::size_of_val(&tls));
            assert!(
                plain <= 960,
                "a plain connection's task grew to {plain} bytes"
            );
            assert!(tls > 2 * plain, "the TLS task ({tls}) is the larger one");
        });
    }
}
