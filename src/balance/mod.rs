//! Load balancing over an upstream's targets, and Kong's health checks.
//!
//! The model (`config::Upstream`) is immutable; what changes lives in two places:
//! - [`Health`], one per `(upstream, target)` pair for the whole process, shared by every
//!   worker through atomics and kept across reloads, so a target found unhealthy stays
//!   so when an unrelated part of the config changes.
//! - [`Local`], one per worker: the smooth weighted round-robin state and the in-flight
//!   counts that `least-connections` compares. As in Kong (one balancer per nginx
//!   worker), neither is shared between workers.

pub mod active;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use crate::config::{Algorithm, Upstream};

/// How one request (or one probe) to a target ended, as health checks count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response whose status is in the healthy list.
    Success,
    /// A response whose status is in the unhealthy list.
    HttpFailure,
    /// A refused or reset connection, or an invalid response.
    TcpFailure,
    Timeout,
    /// A status in neither list: counts for nothing.
    Neutral,
}

impl Outcome {
    /// How a failed attempt counts: timeouts apart, everything else as a TCP failure
    /// (Kong counts an invalid response the same way).
    pub fn of_error(kind: crate::error::ErrorKind) -> Outcome {
        use crate::error::ErrorKind;
        match kind {
            ErrorKind::ConnectTimeout | ErrorKind::UpstreamTimeout => Outcome::Timeout,
            _ => Outcome::TcpFailure,
        }
    }
}

/// The limits that turn consecutive outcomes into a change of state; zero disables one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Thresholds {
    pub successes: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
    pub http_failures: u32,
}

/// A target's health, shared by every worker.
///
/// Kong's rules (lua-resty-healthcheck): each kind of failure has its own counter, and a
/// healthy target whose counter reaches its threshold becomes unhealthy. A success
/// clears every failure counter, when `successes` is set; with `successes: 0` nothing
/// does, and failures spread over any time add up. An unhealthy target counts successes
/// (a failure restarts the count) and becomes healthy at `successes`. A counter whose
/// threshold is 0 counts nothing and clears nothing. Passive
/// checks alone never bring a target back, since it gets no traffic to succeed with:
/// active probes or the Admin API do.
#[derive(Debug, Default)]
pub struct Health {
    unhealthy: AtomicBool,
    successes: AtomicU32,
    tcp_failures: AtomicU32,
    timeouts: AtomicU32,
    http_failures: AtomicU32,
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        !self.unhealthy.load(Ordering::Relaxed)
    }

    /// Sets the state (Admin API), clearing the counters. Returns whether it changed.
    pub fn set(&self, healthy: bool) -> bool {
        self.clear();
        self.unhealthy.swap(!healthy, Ordering::Relaxed) == healthy
    }

    fn clear(&self) {
        for counter in [
            &self.successes,
            &self.tcp_failures,
            &self.timeouts,
            &self.http_failures,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// Counts one outcome. Returns the new state when this outcome changed it.
    pub fn report(&self, outcome: Outcome, limits: Thresholds) -> Option<bool> {
        let (counter, limit) = match outcome {
            Outcome::Neutral => return None,
            Outcome::Success => (&self.successes, limits.successes),
            Outcome::TcpFailure => (&self.tcp_failures, limits.tcp_failures),
            Outcome::Timeout => (&self.timeouts, limits.timeouts),
            Outcome::HttpFailure => (&self.http_failures, limits.http_failures),
        };
        // A disabled counter counts nothing and resets nothing.
        if limit == 0 {
            return None;
        }
        let healthy = self.is_healthy();
        let to_healthy = outcome == Outcome::Success;
        if healthy == to_healthy {
            // A healthy target's success forgets its failures; an unhealthy target's
            // failure interrupts its recovery. Neither changes the state. (Stores only
            // when there is something to clear: the common case writes nothing shared.)
            let cleared: &[&AtomicU32] = if healthy {
                &[&self.tcp_failures, &self.timeouts, &self.http_failures]
            } else {
                &[&self.successes]
            };
            for c in cleared {
                if c.load(Ordering::Relaxed) != 0 {
                    c.store(0, Ordering::Relaxed);
                }
            }
            return None;
        }
        if counter.fetch_add(1, Ordering::Relaxed) + 1 < limit {
            return None;
        }
        self.clear();
        // Of racing workers, the one that flips the state reports it.
        self.unhealthy
            .compare_exchange(
                to_healthy,
                !to_healthy,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
            .then_some(to_healthy)
    }
}

/// A target's state in Kong's words (`kong_upstream_target_health`'s `state`).
pub fn state(upstream: &Upstream, target: &crate::config::Target) -> &'static str {
    if target.addr.is_none() {
        "dns_error"
    } else if !target.health.is_healthy() {
        "unhealthy"
    } else if upstream.checks_on() {
        "healthy"
    } else {
        "healthchecks_off"
    }
}

/// Every live `Health`, by upstream and target id, so a reload that keeps a target keeps
/// its state, and one deleted and created again (a new id) starts afresh.
static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

/// `(upstream id, target id)` to its health.
type Registry = HashMap<(String, String), Weak<Health>>;

/// The health of target `target` in `upstream` (ids): the existing one when a config still
/// holds it.
pub fn health_of(upstream: &str, target: &str) -> Arc<Health> {
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let key = (upstream.to_owned(), target.to_owned());
    if let Some(health) = registry.get(&key).and_then(Weak::upgrade) {
        return health;
    }
    // Entries of targets no config holds any more are swept now and then (each time the
    // map doubles), so loading many targets stays linear.
    if registry.len().is_power_of_two() {
        registry.retain(|_, weak| weak.strong_count() > 0);
    }
    let health = Arc::new(Health::default());
    registry.insert(key, Arc::downgrade(&health));
    health
}

/// A stable 64-bit hash (FNV-1a, then a finalizer that spreads its bits), the same in
/// every process, so gateways behind one load balancer pick the same target for a key.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// One upstream's per-worker state.
#[derive(Debug, Default)]
struct State {
    /// Smooth weighted round-robin: each target's current weight.
    current: Vec<i64>,
    /// Requests in flight per target (least-connections).
    in_flight: Vec<u32>,
    /// Where least-connections starts looking, so ties rotate.
    cursor: usize,
}

/// A worker's balancer state for the current config.
#[derive(Debug, Default)]
pub struct Local {
    /// Bumped on reset, so a lease from an older config does not touch the new state.
    epoch: Cell<u64>,
    /// The address of the current config's upstream list: a request still running on
    /// an older config (same indices, other upstreams) is told apart by it.
    owner: Cell<usize>,
    states: RefCell<Vec<State>>,
}

/// A target held by one request; least-connections counts it until dropped.
pub struct Lease<'a> {
    local: &'a Local,
    epoch: u64,
    upstream: usize,
    pub target: usize,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.local.epoch.get() != self.epoch {
            return;
        }
        if let Some(state) = self.local.states.borrow_mut().get_mut(self.upstream) {
            if let Some(n) = state.in_flight.get_mut(self.target) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

impl Local {
    /// Forgets every upstream's state: the config changed to one with `upstreams`.
    pub fn reset(&self, upstreams: &[Upstream]) {
        self.epoch.set(self.epoch.get() + 1);
        self.owner.set(upstreams.as_ptr() as usize);
        self.states.borrow_mut().clear();
    }

    /// Whether `upstream` is entry `index` of the current config's list.
    fn current(&self, index: usize, upstream: &Upstream) -> bool {
        let expected = self.owner.get() + index * std::mem::size_of::<Upstream>();
        std::ptr::from_ref(upstream) as usize == expected
    }

    /// Takes `target` again (a retry on a fresh connection to the same target).
    pub fn hold(&self, index: usize, upstream: &Upstream, target: usize) -> Lease<'_> {
        let mut states = self.states.borrow_mut();
        let mut scratch = State::default();
        let (state, epoch) = self.state(&mut states, &mut scratch, index, upstream);
        if let Some(n) = state.in_flight.get_mut(target) {
            *n += 1;
        }
        Lease {
            local: self,
            epoch,
            upstream: index,
            target,
        }
    }

    /// The state of upstream `index`, with the epoch its leases carry; for a request on
    /// an older config, a scratch state no lease will touch.
    fn state<'s>(
        &self,
        states: &'s mut Vec<State>,
        scratch: &'s mut State,
        index: usize,
        upstream: &Upstream,
    ) -> (&'s mut State, u64) {
        let (state, epoch) = if self.current(index, upstream) {
            if states.len() <= index {
                states.resize_with(index + 1, State::default);
            }
            (&mut states[index], self.epoch.get())
        } else {
            (scratch, self.epoch.get().wrapping_sub(1))
        };
        let n = upstream.targets.len();
        if state.current.len() != n {
            state.current = vec![0; n];
            state.in_flight = vec![0; n];
        }
        (state, epoch)
    }

    /// Picks a target of upstream `index` for a request, avoiding `tried` (targets this
    /// request already failed on) while others are available. `key` is the request's
    /// hash for consistent hashing. `None`: no target can take traffic (503).
    pub fn pick(
        &self,
        index: usize,
        upstream: &Upstream,
        key: Option<u64>,
        tried: &[u32],
    ) -> Option<Lease<'_>> {
        let targets = &upstream.targets;
        if targets.is_empty() || !above_threshold(upstream) {
            return None;
        }
        let usable = |i: usize| {
            let t = &targets[i];
            t.weight > 0 && t.addr.is_some() && t.health.is_healthy()
        };
        let fresh = |i: usize| usable(i) && !tried.contains(&(i as u32));
        let mut states = self.states.borrow_mut();
        let mut scratch = State::default();
        let (state, epoch) = self.state(&mut states, &mut scratch, index, upstream);
        let choose =
            |state: &mut State, eligible: &dyn Fn(usize) -> bool| match (upstream.algorithm, key) {
                (Algorithm::ConsistentHashing, Some(key)) => on_ring(&upstream.ring, key, eligible),
                (Algorithm::LeastConnections, _) => least_connections(state, upstream, eligible),
                _ => round_robin(state, upstream, eligible),
            };
        let target = choose(state, &fresh).or_else(|| choose(state, &usable))?;
        state.in_flight[target] += 1;
        Some(Lease {
            local: self,
            epoch,
            upstream: index,
            target,
        })
    }
}

/// Kong's `healthchecks.threshold`: the share of the total weight that must be healthy.
fn above_threshold(upstream: &Upstream) -> bool {
    upstream.checks.threshold <= 0.0 || threshold_met(upstream, weights(upstream))
}

/// Whether `(total, healthy)` weight is above the upstream's threshold (set or not).
pub fn threshold_met(upstream: &Upstream, (total, healthy): (u64, u64)) -> bool {
    let threshold = upstream.checks.threshold;
    // Kong's comparison is strict: at exactly the threshold the upstream is down.
    threshold <= 0.0 || total > 0 && (healthy as f64) * 100.0 > threshold * total as f64
}

/// The upstream's total weight, and the weight of its targets that may take requests
/// (healthy and resolved).
pub fn weights(upstream: &Upstream) -> (u64, u64) {
    let (mut total, mut healthy) = (0u64, 0u64);
    for t in &upstream.targets {
        total += u64::from(t.weight);
        if t.health.is_healthy() && t.addr.is_some() {
            healthy += u64::from(t.weight);
        }
    }
    (total, healthy)
}

/// nginx's smooth weighted round-robin: every eligible target gains its weight, the
/// largest is chosen and loses the total. Over any window of total-weight picks each
/// target gets its share, interleaved rather than in bursts.
fn round_robin(
    state: &mut State,
    upstream: &Upstream,
    eligible: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    let mut total = 0i64;
    let mut best: Option<usize> = None;
    for (i, t) in upstream.targets.iter().enumerate() {
        if !eligible(i) {
            continue;
        }
        let weight = i64::from(t.weight);
        state.current[i] += weight;
        total += weight;
        if best.is_none_or(|b| state.current[i] > state.current[b]) {
            best = Some(i);
        }
    }
    let best = best?;
    state.current[best] -= total;
    Some(best)
}

/// The target with the fewest requests in flight for its weight; ties rotate.
fn least_connections(
    state: &mut State,
    upstream: &Upstream,
    eligible: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    let n = upstream.targets.len();
    let mut best: Option<usize> = None;
    for step in 0..n {
        let i = (state.cursor + step) % n;
        if !eligible(i) {
            continue;
        }
        // in_flight[i] / weight[i] < in_flight[b] / weight[b], without division.
        let load = |j: usize| u64::from(state.in_flight[j]) + 1;
        let weight = |j: usize| u64::from(upstream.targets[j].weight);
        if best.is_none_or(|b| load(i) * weight(b) < load(b) * weight(i)) {
            best = Some(i);
        }
    }
    state.cursor = (state.cursor + 1) % n.max(1);
    best
}

/// The first eligible target at or after `key` on the ring.
fn on_ring(ring: &[(u64, u32)], key: u64, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
    if ring.is_empty() {
        return None;
    }
    let start = ring.partition_point(|&(point, _)| point < key);
    (0..ring.len())
        .map(|step| ring[(start + step) % ring.len()].1 as usize)
        .find(|&t| eligible(t))
}

#[cfg(test)]
mod tests;
