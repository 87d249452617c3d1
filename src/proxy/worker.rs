//! The per-core context a connection runs in: the config snapshot, the upstream pool,
//! the worker's counters and its drain signal.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use slab::Slab;

use crate::config::Config;
use crate::metrics::WorkerStats;
use crate::route::Router;
use crate::upstream::Pool;

/// One immutable config with its compiled router; swapped whole on reload.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub router: Router,
    /// Per route, its access-log `service` and `route` fields (when the log is on).
    pub log_scopes: Vec<Box<[u8]>>,
}

impl Snapshot {
    pub fn new(config: Config) -> Snapshot {
        let router = Router::new(&config);
        let log_scopes = match config.node.access_log {
            Some(_) => (0..config.routes.len())
                .map(|i| {
                    let service = config
                        .services
                        .get(config.routes[i].service)
                        .map_or("", |s| &*s.name);
                    crate::accesslog::scope_json(service, &crate::observe::route_label(&config, i))
                })
                .collect(),
            None => Vec::new(),
        };
        Snapshot {
            config,
            router,
            log_scopes,
        }
    }
}

/// What every worker and the admin thread share. Read on the request path only through
/// one relaxed-cheap generation check; the snapshot itself is loaded when it changed.
#[derive(Debug)]
pub struct Shared {
    current: ArcSwap<Snapshot>,
    generation: AtomicU64,
    pub draining: AtomicBool,
    pub stats: Vec<Arc<WorkerStats>>,
    /// Workers whose listeners are accepting.
    pub workers_ready: AtomicU64,
    /// Rate-limiting buckets; outlive config snapshots so reloads keep the counts.
    pub rate_store: Arc<crate::plugins::rate_limiting::Store>,
    /// Latency histograms and per-route counters, folded from the workers'.
    pub observe: Arc<crate::observe::Observe>,
    /// The access log's queue, when `ringway.access_log` is on (set before workers start).
    pub access_log: std::sync::OnceLock<crate::accesslog::Log>,
    /// Access log lines dropped because the writer fell behind.
    pub access_log_dropped: Arc<AtomicU64>,
    /// Client connections open in the whole process, held to `max_connections`.
    connections: AtomicUsize,
    /// Admin API requests whose head has arrived and whose answer is not written yet:
    /// a drain waits for them too, so a write is never cut off half-way.
    pub admin_in_flight: AtomicUsize,
}

impl Shared {
    pub fn new(snapshot: Snapshot, workers: usize) -> Shared {
        let max_keys = snapshot.config.node.rate_limit_max_keys;
        let label_limit = snapshot.config.node.metrics_label_limit;
        Shared {
            observe: Arc::new(crate::observe::Observe::new(workers, label_limit)),
            access_log: std::sync::OnceLock::new(),
            access_log_dropped: Arc::default(),
            rate_store: Arc::new(crate::plugins::rate_limiting::Store::new(max_keys, workers)),
            current: ArcSwap::from_pointee(snapshot),
            generation: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            stats: (0..workers)
                .map(|_| Arc::new(WorkerStats::default()))
                .collect(),
            workers_ready: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            admin_in_flight: AtomicUsize::new(0),
        }
    }

    /// The current snapshot (admin thread and reload).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes a new snapshot to every worker.
    pub fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// Wakes every connection of one worker that waits idle, when draining starts.
#[derive(Default)]
pub struct Drain {
    fired: Cell<bool>,
    since: Cell<Option<Instant>>,
    waiters: RefCell<Slab<Waker>>,
}

impl Drain {
    pub fn fire(&self) {
        self.fired.set(true);
        self.since.set(Some(Instant::now()));
        for waker in self.waiters.borrow_mut().drain() {
            waker.wake();
        }
    }

    pub fn fired(&self) -> bool {
        self.fired.get()
    }

    /// When draining began.
    pub fn since(&self) -> Option<Instant> {
        self.since.get()
    }

    /// A future that completes once draining starts.
    pub fn wait(&self) -> DrainWait<'_> {
        DrainWait {
            drain: self,
            key: None,
        }
    }
}

pub struct DrainWait<'a> {
    drain: &'a Drain,
    key: Option<usize>,
}

impl Future for DrainWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.fired.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.drain.waiters.borrow_mut();
        match self.key {
            Some(key) if waiters.contains(key) => {
                if !waiters[key].will_wake(cx.waker()) {
                    waiters[key] = cx.waker().clone();
                }
            }
            _ => {
                let key = waiters.insert(cx.waker().clone());
                drop(waiters);
                self.key = Some(key);
            }
        }
        Poll::Pending
    }
}

impl Drop for DrainWait<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut waiters = self.drain.waiters.borrow_mut();
            if waiters.contains(key) {
                waiters.remove(key);
            }
        }
    }
}

/// A worker's free list of write and upstream-read buffers, so a request borrows them
/// instead of allocating, and idle connections hold none. After a burst (thousands of
/// requests in flight at once) the list would keep a buffer for each of them; buffers
/// that sat unused through a whole housekeeping tick are freed, down to a floor.
pub struct BufPool {
    free: RefCell<Vec<Vec<u8>>>,
    /// The fewest buffers the list held since the last trim: that many went unused.
    low_water: Cell<usize>,
}

impl BufPool {
    /// Capacity of a pooled buffer: enough for a response head and a small body. Body
    /// streaming grows a buffer to `BODY_READ_SPACE`; such buffers are pooled too.
    pub const BUFFER_BYTES: usize = 4 * 1024;
    /// Buffers kept per worker; beyond this they are freed.
    const MAX_FREE: usize = 1024;
    /// Buffers a trim always leaves, for the next requests.
    const KEEP: usize = 64;

    fn new() -> BufPool {
        BufPool {
            free: RefCell::new(Vec::new()),
            low_water: Cell::new(0),
        }
    }

    pub fn take(&self) -> Vec<u8> {
        let mut free = self.free.borrow_mut();
        let buf = free.pop();
        self.low_water.set(self.low_water.get().min(free.len()));
        buf.unwrap_or_else(|| Vec::with_capacity(Self::BUFFER_BYTES))
    }

    /// Housekeeping: frees the buffers no request needed since the last trim (the
    /// least recently used ones), keeping at least `KEEP`.
    pub fn trim(&self) {
        let mut free = self.free.borrow_mut();
        let unused = self
            .low_water
            .get()
            .min(free.len().saturating_sub(Self::KEEP));
        // The bottom of the stack is what was pushed longest ago.
        free.drain(..unused);
        self.low_water.set(free.len());
    }

    /// Returns a buffer; one that grew far past the usual size is freed instead.
    pub fn give(&self, mut buf: Vec<u8>) {
        let capacity = buf.capacity();
        if !(Self::BUFFER_BYTES..=8 * Self::BUFFER_BYTES).contains(&capacity) {
            return;
        }
        let mut free = self.free.borrow_mut();
        if free.len() < Self::MAX_FREE {
            buf.clear();
            free.push(buf);
        }
    }
}

/// A client connection counted in by `Worker::admit`, until it is dropped.
pub struct Admitted {
    shared: Arc<Shared>,
    stats: Arc<WorkerStats>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.stats.connections_active.dec();
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One worker's state. Lives in an `Rc` on its thread; nothing in it is locked.
pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub stats: Arc<WorkerStats>,
    pub pool: Pool,
    pub buffers: BufPool,
    pub drain: Drain,
    /// Idle deadlines of this worker's keep-alive connections.
    pub idle: super::idle::IdleSlots,
    /// Tokens this worker verified under the current config, and its rate-limit leases.
    pub plugins: super::access::PluginState,
    /// Round-robin positions and in-flight counts of the current config's upstreams.
    pub balance: crate::balance::Local,
    /// This worker's access log lines not yet handed to the writer.
    pub access_log: Option<crate::accesslog::Batcher>,
    /// Wall-clock time from the monotonic readings requests take anyway.
    pub clock: WallClock,
    /// When this worker last logged a failing upstream, and the failures since.
    failure_log: std::cell::Cell<(Option<Instant>, u64)>,
    /// The snapshot this worker uses and its generation. The `Rc` around the `Arc` is
    /// deliberate: requests clone the `Rc` (a plain increment), never the shared `Arc`
    /// (an atomic one on a cache line every worker touches).
    #[allow(clippy::redundant_allocation)]
    local: RefCell<(u64, Rc<Arc<Snapshot>>)>,
}

impl Worker {
    pub fn new(id: usize, shared: Arc<Shared>) -> Worker {
        let snapshot = shared.snapshot();
        let node = &snapshot.config.node;
        let pool = Pool::new(
            node.upstream_keepalive_max_idle,
            node.upstream_keepalive_idle_timeout,
        );
        let stats = shared.stats[id].clone();
        let rate_store = shared.rate_store.clone();
        let access_log = shared
            .access_log
            .get()
            .cloned()
            .map(crate::accesslog::Batcher::new);
        let recorder = crate::observe::Recorder::new(shared.observe.clone(), id);
        let generation = shared.generation.load(Ordering::Acquire);
        Worker {
            id,
            shared,
            stats,
            pool,
            buffers: BufPool::new(),
            drain: Drain::default(),
            idle: super::idle::IdleSlots::default(),
            plugins: super::access::PluginState {
                jwt_cache: crate::plugins::jwt::Cache::default(),
                rate_limits: crate::plugins::rate_limiting::Local::new(id),
                rate_store,
                recorder,
                ids: crate::plugins::correlation_id::Ids::default(),
            },
            balance: {
                let balance = crate::balance::Local::default();
                balance.reset(&snapshot.config.upstreams);
                balance
            },
            access_log,
            clock: WallClock::default(),
            failure_log: std::cell::Cell::new((None, 0)),
            local: RefCell::new((generation, Rc::new(snapshot))),
        }
    }

    /// Whether the process is draining, as of now: the signal sets the shared flag at
    /// once, while the worker's own `drain` fires at its next housekeeping tick. An
    /// answer decided in between must already say `Connection: close`.
    pub fn draining(&self) -> bool {
        self.drain.fired() || self.shared.draining.load(Ordering::Acquire)
    }

    /// Counts a new client connection in, unless the process already holds the current
    /// config's `max_connections`: one count for the whole process, so no worker refuses
    /// while another has room left. The connection is counted out (there and in this
    /// worker's `connections_active`) when what this returns is dropped.
    pub fn admit(&self) -> Option<Admitted> {
        let max = self.snapshot().config.node.max_connections;
        let connections = &self.shared.connections;
        if connections.fetch_add(1, Ordering::Relaxed) >= max {
            connections.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        self.stats.connections_accepted.inc();
        self.stats.connections_active.inc();
        Some(Admitted {
            shared: self.shared.clone(),
            stats: self.stats.clone(),
        })
    }

    /// Logs why a request failed upstream (the 502 or 504 it got), as nginx's error
    /// log does, but at most once a second per worker, with a count of the failures
    /// not logged: an upstream down under load must not make every request a write
    /// to stderr. Neither the path nor the query is logged (either may carry a token).
    pub fn log_upstream_failure(
        &self,
        service: &str,
        addr: std::net::SocketAddr,
        kind: crate::error::ErrorKind,
        request_id: Option<&str>,
    ) {
        self.log_upstream(
            service,
            addr,
            format_args!("{} ({})", kind.describe(), kind.status()),
            request_id,
        );
    }

    /// One warn line about an upstream (`what` it did), at most one a second per worker
    /// (the rest are counted into the next). Also for an upstream that broke off a
    /// response after its head, as nginx logs "upstream prematurely closed connection".
    pub fn log_upstream(
        &self,
        service: &str,
        addr: std::net::SocketAddr,
        what: std::fmt::Arguments<'_>,
        request_id: Option<&str>,
    ) {
        const EVERY: std::time::Duration = std::time::Duration::from_secs(1);
        let (last, unlogged) = self.failure_log.get();
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < EVERY) {
            self.failure_log.set((last, unlogged + 1));
            return;
        }
        self.failure_log.set((Some(now), 0));
        // The ID may be the client's own: quoted and escaped, and cut short, so it can
        // neither pass for more of the line nor make it long.
        const ID_SHOWN: usize = 128;
        let id = request_id
            .map(|id| {
                let mut end = id.len().min(ID_SHOWN);
                while !id.is_char_boundary(end) {
                    end -= 1;
                }
                let cut = if end < id.len() { "..." } else { "" };
                format!(", request {:?}{cut}", &id[..end])
            })
            .unwrap_or_default();
        let more = match unlogged {
            0 => String::new(),
            n => format!(
                " ({n} more upstream failures on this worker since its last such line, not logged)"
            ),
        };
        log::warn!("service '{service}', upstream {addr}: {what}{id}{more}");
    }

    /// On the housekeeping tick: the failures held back by `log_upstream`, once
    /// their second is over, so a burst followed by quiet still has its count logged.
    pub fn log_unlogged_failures(&self) {
        let (last, unlogged) = self.failure_log.get();
        if unlogged > 0 && last.is_some_and(|at| at.elapsed() >= std::time::Duration::from_secs(1))
        {
            self.failure_log.set((Some(Instant::now()), 0));
            log::warn!(
                "{unlogged} more upstream failures on this worker since its last such line, not logged"
            );
        }
    }

    /// The config to use for the next request: the worker's cached snapshot, refreshed
    /// only when a reload published a new one. Cloning the `Rc` is not atomic, so workers
    /// never contend on the shared `Arc`'s count per request.
    #[allow(clippy::redundant_allocation)]
    pub fn snapshot(&self) -> Rc<Arc<Snapshot>> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        let mut local = self.local.borrow_mut();
        if local.0 != generation {
            *local = (generation, Rc::new(self.shared.snapshot()));
            // Credentials or plugin configs may have changed: verify tokens afresh.
            self.plugins.jwt_cache.clear();
            self.balance.reset(&local.1.config.upstreams);
            let node = &local.1.config.node;
            self.pool.configure(
                node.upstream_keepalive_max_idle,
                node.upstream_keepalive_idle_timeout,
            );
        }
        local.1.clone()
    }
}

/// Runs `test` on a monoio runtime with a worker of an empty config and the address of a
/// listener that accepts (and holds) connections for it to open.
#[cfg(test)]
pub(crate) fn with_test_worker<F, Fut>(test: F)
where
    F: FnOnce(Rc<Worker>, std::net::SocketAddr) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let config =
            crate::config::Config::from_bytes(b"_format_version: \"3.0\"\n", &Default::default())
                .unwrap();
        let shared = Arc::new(Shared::new(Snapshot::new(config), 1));
        test(Rc::new(Worker::new(0, shared)), addr).await;
        drop(listener);
    });
}

/// Wall-clock time derived from a monotonic reading the request path takes anyway (one
/// `clock_gettime` less per request). Re-anchored every housekeeping tick, so a step of
/// the system clock shows within a tick.
#[derive(Debug)]
pub struct WallClock {
    anchor: Cell<(Instant, Duration)>,
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock {
            anchor: Cell::new(Self::now()),
        }
    }
}

impl WallClock {
    fn now() -> (Instant, Duration) {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (Instant::now(), since_epoch)
    }

    pub fn reanchor(&self) {
        self.anchor.set(Self::now());
    }

    /// The time since the Unix epoch at `at`.
    pub fn since_epoch(&self, at: Instant) -> Duration {
        let (instant, since_epoch) = self.anchor.get();
        match at.checked_duration_since(instant) {
            Some(later) => since_epoch + later,
            None => since_epoch.saturating_sub(instant - at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_follows_the_system_clock_from_monotonic_readings() {
        let clock = WallClock::default();
        let system = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
        };
        let before = system();
        let now = clock.since_epoch(Instant::now());
        let after = system();
        assert!(
            before <= now + Duration::from_millis(1) && now <= after + Duration::from_millis(1)
        );
        // Instants before and after the anchor land before and after its wall time.
        let earlier = Instant::now() - Duration::from_secs(5);
        let later = Instant::now() + Duration::from_secs(5);
        clock.reanchor();
        let (lo, hi) = (clock.since_epoch(earlier), clock.since_epoch(later));
        assert!(hi - lo >= Duration::from_secs(10) && hi - lo < Duration::from_secs(11));
        assert!(lo < system() && system() < hi);
    }

    #[test]
    fn buffers_left_over_from_a_burst_are_freed_after_an_unused_tick() {
        let pool = BufPool::new();
        // A burst: 300 requests in flight at once, then all done.
        let burst: Vec<_> = (0..300).map(|_| pool.take()).collect();
        for buf in burst {
            pool.give(buf);
        }
        pool.trim();
        assert_eq!(
            pool.free.borrow().len(),
            300,
            "they were all in use this tick"
        );
        // Steady traffic needing 10 at a time keeps what it uses and the floor.
        let some: Vec<_> = (0..10).map(|_| pool.take()).collect();
        for buf in some {
            pool.give(buf);
        }
        pool.trim();
        assert_eq!(pool.free.borrow().len(), 64);
        pool.trim();
        assert_eq!(pool.free.borrow().len(), 64, "never below the floor");
    }
}
