//! Latency histograms and per-route counters, recorded by each worker in its own tables
//! (no lock, no shared write per request) and folded into one process-wide table off the
//! request path: every second, and at the next housekeeping tick when a reader asks (the
//! Admin API's `/histograms` and `/metrics` request a flush and wait up to 500 ms for the
//! workers' answer, so what they show includes every request answered before the read).
//! A worker's tick never waits for the tables' lock: while another reader renders under
//! it, the worker keeps its records and tries again at the next tick. Only the fold after
//! a reload (once per reload per worker) takes the lock unconditionally.

pub mod hgrm;
pub mod prometheus;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::proxy::Snapshot;

/// Microsecond values, three significant digits; the range grows with what is recorded.
pub type Hist = Histogram<u64>;

fn new_hist() -> Hist {
    // Three significant digits cannot fail to construct.
    Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
}

/// Records one value, growing the histogram's range as needed (`saturating_record`
/// would clamp to the current range instead of growing it).
fn record(h: &mut Hist, us: u64) {
    let us = us.max(1);
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

/// The three latencies of one scope: what the client saw (request head complete to
/// last response byte written), what the upstream took (request sent to response head),
/// and what ringway took before sending it (routing, plugins, pool or connect).
#[derive(Debug, Clone)]
pub struct Latencies {
    pub request: Hist,
    pub upstream: Hist,
    pub proxy: Hist,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            request: new_hist(),
            upstream: new_hist(),
            proxy: new_hist(),
        }
    }
}

impl Latencies {
    fn record(&mut self, sample: &Sample) {
        record(&mut self.request, sample.request_us);
        if let Some(upstream) = sample.upstream_us {
            record(&mut self.upstream, upstream);
        }
        record(&mut self.proxy, sample.proxy_us);
    }

    pub fn add(&mut self, other: &Latencies) {
        // Same precision on both sides and auto-resizing: adding cannot fail.
        let _ = self.request.add(&other.request);
        let _ = self.upstream.add(&other.upstream);
        let _ = self.proxy.add(&other.proxy);
    }

    pub fn get(&self, metric: Metric) -> &Hist {
        match metric {
            Metric::Request => &self.request,
            Metric::Upstream => &self.upstream,
            Metric::Proxy => &self.proxy,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Request,
    Upstream,
    Proxy,
}

impl Metric {
    pub fn parse(name: &str) -> Option<Metric> {
        match name {
            "request" => Some(Metric::Request),
            "upstream" => Some(Metric::Upstream),
            "proxy" => Some(Metric::Proxy),
            _ => None,
        }
    }
}

/// Who answered a request: the upstream, or ringway itself (Kong's `source` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Service,
    Kong,
}

/// What one routed request leaves behind.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub route: usize,
    pub service: usize,
    pub consumer: Option<usize>,
    pub status: u16,
    pub source: Source,
    /// From the complete request head to the last response byte written.
    pub request_us: u64,
    /// From sending the request upstream to the upstream's response head (Kong's
    /// upstream latency); `None` when no upstream answered.
    pub upstream_us: Option<u64>,
    /// From the complete request head to sending it upstream: routing, plugins, the
    /// pool or a connect (Kong's proxy latency); the whole time when ringway answered.
    pub proxy_us: u64,
    pub ingress_bytes: u64,
    pub egress_bytes: u64,
}

/// The per-request tables hash small integer keys of our own making: foldhash, not
/// SipHash (no client controls them).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Counters of one (route, consumer, status, source).
type CountKey = (usize, Option<usize>, u16, Source);
/// Bytes of one (route, consumer): ingress, egress.
type BytesKey = (usize, Option<usize>);

/// One worker's unflushed records, under the snapshot whose indexes they use.
#[derive(Default)]
struct Pending {
    snapshot: Option<Arc<Snapshot>>,
    /// Per route, with the route's service: the service's and the overall histograms
    /// are sums of these, made when they are folded, not on every request.
    routes: FastMap<usize, (usize, Box<Latencies>)>,
    counts: FastMap<CountKey, u64>,
    bytes: FastMap<BytesKey, (u64, u64)>,
    jwt_failures: FastMap<&'static str, u64>,
    rate_limited: u64,
    last_flush: Option<Instant>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.jwt_failures.is_empty() && self.rate_limited == 0
    }
}

/// A worker's recorder. Only its own thread touches it.
pub struct Recorder {
    observe: Arc<Observe>,
    worker: usize,
    pending: RefCell<Pending>,
    /// The last flush request this worker answered.
    answered: std::cell::Cell<u64>,
}

/// A label value, folded into `other` beyond the cardinality cap.
pub type Label = Arc<str>;

/// The process-wide tables, keyed by names (indexes change with every reload).
#[derive(Default)]
pub struct Published {
    pub overall: Latencies,
    pub services: HashMap<Label, Latencies>,
    pub routes: HashMap<Label, Latencies>,
    /// (service, route, consumer, status, source) → requests.
    pub counts: HashMap<(Label, Label, Label, u16, Source), u64>,
    /// (service, route, consumer) → (ingress, egress) bytes.
    pub bytes: HashMap<(Label, Label, Label), (u64, u64)>,
    pub jwt_failures: HashMap<&'static str, u64>,
    pub rate_limited: u64,
    /// Distinct consumer labels handed out so far.
    consumers: HashMap<String, Label>,
    /// Each route label's service label (the `service` of Kong's latency series).
    pub route_services: HashMap<Label, Label>,
    pub service_labels: ScopeLabels,
    pub route_labels: ScopeLabels,
}

/// The service (or route) names given labels of their own, at most the cap, in the
/// order they first had traffic; and those that came after and fold into `other`.
#[derive(Default)]
pub struct ScopeLabels {
    own: HashSet<Label>,
    folded: HashSet<Label>,
}

impl ScopeLabels {
    /// `name`'s label in every series: itself while under the cap, else `other`.
    fn label(&mut self, name: Label, limit: usize) -> Label {
        if name.is_empty() || self.own.contains(&name) {
            return name;
        }
        if self.own.len() < limit {
            self.own.insert(name.clone());
            return name;
        }
        self.folded.insert(name);
        Label::from(OTHER)
    }

    /// Whether `name`'s numbers are counted under `other`.
    pub fn is_folded(&self, name: &str) -> bool {
        self.folded.contains(name)
    }
}

/// What every worker and the Admin API share.
pub struct Observe {
    published: Mutex<Published>,
    /// Flush requests made so far; workers answer by storing it in `answered`.
    requested: AtomicU64,
    answered: Vec<AtomicU64>,
    /// Label values per label beyond which values fold into `other`.
    label_limit: usize,
}

/// How long a reader waits for the workers to flush.
const FLUSH_WAIT: Duration = Duration::from_millis(500);
/// Workers flush on their own this often when they have records.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

pub const OTHER: &str = "other";

impl std::fmt::Debug for Observe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observe")
            .field("label_limit", &self.label_limit)
            .finish_non_exhaustive()
    }
}

impl Observe {
    pub fn new(workers: usize, label_limit: usize) -> Observe {
        Observe {
            published: Mutex::new(Published::default()),
            requested: AtomicU64::new(0),
            answered: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            label_limit: label_limit.max(1),
        }
    }

    /// Asks every worker to flush and waits (briefly) until they have; then the tables.
    pub fn read(&self, running: usize) -> MutexGuard<'_, Published> {
        let wanted = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let deadline = Instant::now() + FLUSH_WAIT;
        while Instant::now() < deadline
            && self
                .answered
                .iter()
                .take(running)
                .any(|a| a.load(Ordering::Acquire) < wanted)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.lock()
    }

    fn lock(&self) -> MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Recorder {
    pub fn new(observe: Arc<Observe>, worker: usize) -> Recorder {
        Recorder {
            observe,
            worker,
            pending: RefCell::default(),
            answered: std::cell::Cell::new(0),
        }
    }

    /// Records one request answered under `snapshot`.
    pub fn record(&self, snapshot: &Arc<Snapshot>, sample: &Sample) {
        let mut pending = self.pending.borrow_mut();
        if pending
            .snapshot
            .as_ref()
            .is_some_and(|s| !Arc::ptr_eq(s, snapshot))
        {
            // The indexes below belong to another config: hand the old records over
            // before they could be misread. Rare (once per reload per worker).
            drop(pending);
            self.flush();
            pending = self.pending.borrow_mut();
        }
        if pending.snapshot.is_none() {
            pending.snapshot = Some(snapshot.clone());
        }
        pending
            .routes
            .entry(sample.route)
            .or_insert_with(|| (sample.service, Box::default()))
            .1
            .record(sample);
        *pending
            .counts
            .entry((sample.route, sample.consumer, sample.status, sample.source))
            .or_default() += 1;
        let bytes = pending
            .bytes
            .entry((sample.route, sample.consumer))
            .or_default();
        bytes.0 += sample.ingress_bytes;
        bytes.1 += sample.egress_bytes;
    }

    pub fn jwt_failure(&self, reason: &'static str) {
        *self
            .pending
            .borrow_mut()
            .jwt_failures
            .entry(reason)
            .or_default() += 1;
    }

    pub fn rate_limited(&self) {
        self.pending.borrow_mut().rate_limited += 1;
    }

    /// Housekeeping: flushes when a reader asked or a second has passed.
    pub fn tick(&self) {
        let wanted = self.observe.requested.load(Ordering::Acquire);
        let due = {
            let pending = self.pending.borrow();
            !pending.is_empty()
                && pending
                    .last_flush
                    .is_none_or(|t| t.elapsed() >= FLUSH_EVERY)
        };
        if wanted > self.answered.get() || due {
            // Never wait for a reader rendering /metrics or /histograms under the lock:
            // the records stay pending and the next tick tries again.
            match self.observe.published.try_lock() {
                Ok(mut published) => self.fold_into(&mut published),
                Err(std::sync::TryLockError::Poisoned(e)) => self.fold_into(&mut e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => return,
            }
            self.answered.set(wanted);
            if let Some(slot) = self.observe.answered.get(self.worker) {
                slot.store(wanted, Ordering::Release);
            }
        }
    }

    /// Moves this worker's records into the shared tables (off the request path:
    /// housekeeping, or once after a reload).
    pub fn flush(&self) {
        self.fold_into(&mut self.observe.lock());
    }

    fn fold_into(&self, published: &mut Published) {
        let taken = std::mem::take(&mut *self.pending.borrow_mut());
        self.pending.borrow_mut().last_flush = Some(Instant::now());
        fold(published, self.observe.label_limit, taken);
    }
}

/// Moves one worker's records into the process-wide tables.
fn fold(published: &mut Published, limit: usize, pending: Pending) {
    let Some(snapshot) = pending.snapshot else {
        published.rate_limited += pending.rate_limited;
        for (reason, n) in pending.jwt_failures {
            *published.jwt_failures.entry(reason).or_default() += n;
        }
        return;
    };
    let config = &snapshot.config;
    // Labels go to services, routes and consumers in the order of their first traffic;
    // within one fold, in config order. Every series and histogram uses the same ones.
    let mut routes: Vec<_> = pending.routes.iter().collect();
    routes.sort_unstable_by_key(|(index, _)| **index);
    for (index, (service, latencies)) in routes {
        published.overall.add(latencies);
        let service = published
            .service_labels
            .label(service_label(config, *service), limit);
        published
            .services
            .entry(service.clone())
            .or_default()
            .add(latencies);
        let route = published
            .route_labels
            .label(route_label(config, *index), limit);
        // Kong's latency series name one service per route: `other` has many.
        let service = if &*route == OTHER {
            Label::from(OTHER)
        } else {
            service
        };
        published.route_services.insert(route.clone(), service);
        published.routes.entry(route).or_default().add(latencies);
    }
    let names = |published: &mut Published, route: usize, consumer: Option<usize>| {
        let service = config
            .routes
            .get(route)
            .map(|r| service_label(config, r.service))
            .unwrap_or_else(|| Label::from(""));
        let service = published.service_labels.label(service, limit);
        let route = published
            .route_labels
            .label(route_label(config, route), limit);
        let consumer = consumer
            .and_then(|c| config.consumers.get(c))
            // Kong's label: the username, else (Kong 3.11 on) the custom_id; the id
            // when there is neither.
            .map(|c| {
                let name = c.username.as_deref().or(c.custom_id.as_deref());
                published.consumer_label(name.unwrap_or(&c.id), limit)
            })
            .unwrap_or_else(|| Label::from(""));
        (service, route, consumer)
    };
    for ((route, consumer, status, source), n) in pending.counts {
        let (service, route, consumer) = names(published, route, consumer);
        *published
            .counts
            .entry((service, route, consumer, status, source))
            .or_default() += n;
    }
    for ((route, consumer), (ingress, egress)) in pending.bytes {
        let (service, route, consumer) = names(published, route, consumer);
        let entry = published
            .bytes
            .entry((service, route, consumer))
            .or_default();
        entry.0 += ingress;
        entry.1 += egress;
    }
    published.rate_limited += pending.rate_limited;
    for (reason, n) in pending.jwt_failures {
        *published.jwt_failures.entry(reason).or_default() += n;
    }
}

/// A service's label: its name, or its host when it has none (Kong's `service` label:
/// `service.name or service.host`; an unnamed service goes by its id elsewhere).
pub fn service_label(config: &crate::config::Config, index: usize) -> Label {
    config
        .services
        .get(index)
        .map(|s| {
            if *s.name == *s.id {
                Label::from(s.host.as_str())
            } else {
                s.name.clone()
            }
        })
        .unwrap_or_else(|| Label::from(""))
}

/// A route's label: its name, or its id when it has none (as Kong's `route` label).
pub fn route_label(config: &crate::config::Config, index: usize) -> Label {
    config
        .routes
        .get(index)
        .map(|r| r.name.clone().unwrap_or_else(|| Label::from(r.id.as_str())))
        .unwrap_or_else(|| Label::from(""))
}

impl Published {
    fn consumer_label(&mut self, name: &str, limit: usize) -> Label {
        if let Some(label) = self.consumers.get(name) {
            return label.clone();
        }
        if self.consumers.len() >= limit {
            return Label::from(OTHER);
        }
        let label = Label::from(name);
        self.consumers.insert(name.to_owned(), label.clone());
        label
    }
}
