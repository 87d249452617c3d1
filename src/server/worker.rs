//! One worker thread: a monoio runtime, its accept loops and its housekeeping.

use std::net::TcpListener as StdListener;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpListener;

use super::RunningDriver;
use crate::proxy::{self, Shared, Worker};

/// How often a worker looks at the shared drain flag, sweeps its deadline slots and its
/// idle pool: the precision of idle and operation deadlines.
const HOUSEKEEPING_INTERVAL: Duration = crate::proxy::idle::TICK;
/// io_uring submission queue size per worker.
const RING_ENTRIES: u32 = 4096;

/// Builds the worker's runtime on the chosen driver and runs it until drained.
pub fn run(
    id: usize,
    shared: Arc<Shared>,
    listeners: Vec<StdListener>,
    driver: RunningDriver,
) -> std::io::Result<()> {
    match driver {
        RunningDriver::IoUring => {
            // COOP_TASKRUN + TASKRUN_FLAG: completions are run when the worker next
            // enters the kernel instead of interrupting it; measured faster than
            // monoio's default setup (and than epoll) on this kind of machine.
            let mut uring = io_uring::IoUring::builder();
            uring.setup_coop_taskrun().setup_taskrun_flag();
            let mut runtime = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .uring_builder(uring)
                .with_entries(RING_ENTRIES)
                .enable_timer()
                .build()?;
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

async fn main(id: usize, shared: Arc<Shared>, listeners: Vec<StdListener>) -> std::io::Result<()> {
    let worker = Rc::new(Worker::new(id, shared.clone()));
    let mut accepting = Vec::new();
    for std_listener in listeners {
        let local_port = std_listener.local_addr()?.port();
        let listener = TcpListener::from_std(std_listener)?;
        accepting.push(monoio::spawn(accept_loop(
            worker.clone(),
            listener,
            local_port,
        )));
    }
    shared.workers_ready.fetch_add(1, Ordering::AcqRel);

    let mut last_sweep = Instant::now();
    loop {
        monoio::time::sleep(HOUSEKEEPING_INTERVAL).await;
        if shared.draining.load(Ordering::Acquire) && !worker.drain.fired() {
            worker.drain.fire();
        }
        worker.idle.sweep(Instant::now(), worker.drain.fired());
        worker.plugins.recorder.tick();
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
        if now.duration_since(last_sweep) >= Duration::from_secs(1) {
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

async fn accept_loop(worker: Rc<Worker>, listener: TcpListener, local_port: u16) {
    loop {
        let accepted = {
            let drain = worker.drain.wait();
            monoio::select! {
                accepted = listener.accept() => accepted,
                _ = drain => break,
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                let stats = &worker.stats;
                if stats.connections_active.get() as usize >= worker.max_connections {
                    // Refused fast: closing at once costs less than serving badly.
                    stats.connections_refused.inc();
                    drop(stream);
                    continue;
                }
                stats.connections_accepted.inc();
                stats.connections_active.inc();
                let worker = worker.clone();
                monoio::spawn(async move {
                    proxy::serve(worker.clone(), stream, peer, local_port, false).await;
                    worker.stats.connections_active.dec();
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                log::warn!("accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    // Dropping the listener closes it: new connections are refused from here on.
    drop(listener);
}
