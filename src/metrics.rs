//! Per-worker counters, published for the admin thread without locks.
//!
//! Each worker owns one `WorkerStats` and is its only writer, so an increment is a plain
//! load and store (no locked read-modify-write on the hot path); the admin thread sums
//! the workers' slots when it is asked. The struct is cache-line aligned so two workers'
//! counters never share a line.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One counter with a single writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtracts one. Only the owning worker may call this.
    #[inline]
    pub fn dec(&self) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(1), Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    /// Counts one for as long as the returned guard lives (a gauge of what is under way).
    /// Only the owning worker may call this.
    pub fn hold(&self) -> Held<'_> {
        self.inc();
        Held(self)
    }
}

/// One in a gauge, taken back when dropped.
pub struct Held<'a>(&'a Counter);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The counters of one worker.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct WorkerStats {
    pub connections_active: Counter,
    /// Connections reading a request head that came in parts (nginx's "reading").
    pub connections_reading: Counter,
    /// Connections with a request in the works, from its head to its answer ("writing").
    pub connections_writing: Counter,
    pub connections_accepted: Counter,
    /// Connections refused because the process was at `max_connections`.
    pub connections_refused: Counter,
    pub total_requests: Counter,
    /// TLS handshakes that failed or timed out.
    pub tls_failures: Counter,
    pub upstream_connects: Counter,
    pub upstream_reused: Counter,
    pub upstream_retries: Counter,
    /// Requests answered with a generated error, by cause.
    pub client_errors: Counter,
    pub upstream_errors: Counter,
    /// Proxied responses the upstream broke off after their head.
    pub upstream_cut: Counter,
}

/// Sums of all workers' counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub connections_active: u64,
    pub connections_reading: u64,
    pub connections_writing: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub total_requests: u64,
    pub tls_failures: u64,
    pub upstream_connects: u64,
    pub upstream_reused: u64,
    pub upstream_retries: u64,
    pub client_errors: u64,
    pub upstream_errors: u64,
}

impl Totals {
    /// nginx's "accepted" (Kong's `connections_accepted`): every connection taken from
    /// the listener, those closed at once at `max_connections` too; "handled" is the rest
    /// (`connections_accepted` here), so accepted − handled counts the drops.
    pub fn connections_taken(&self) -> u64 {
        self.connections_accepted + self.connections_refused
    }

    /// Connections between requests: nginx's "waiting", what is neither reading nor
    /// writing.
    pub fn connections_waiting(&self) -> u64 {
        self.connections_active
            .saturating_sub(self.connections_reading + self.connections_writing)
    }
}

/// Adds up every worker's slots; called off the request path.
pub fn totals<'a>(workers: impl IntoIterator<Item = &'a WorkerStats>) -> Totals {
    let mut t = Totals::default();
    for w in workers {
        t.connections_active += w.connections_active.get();
        t.connections_reading += w.connections_reading.get();
        t.connections_writing += w.connections_writing.get();
        t.connections_accepted += w.connections_accepted.get();
        t.connections_refused += w.connections_refused.get();
        t.total_requests += w.total_requests.get();
        t.tls_failures += w.tls_failures.get();
        t.upstream_connects += w.upstream_connects.get();
        t.upstream_reused += w.upstream_reused.get();
        t.upstream_retries += w.upstream_retries.get();
        t.client_errors += w.client_errors.get();
        t.upstream_errors += w.upstream_errors.get();
    }
    t
}
