//! The token buckets. Each key (plugin instance × client identifier) has one shared
//! [`Bucket`] holding, per period, the "theoretical arrival time" of a generic cell rate
//! algorithm: a token bucket of capacity `limit` refilled one token every
//! `period / limit`, kept as a single atomic timestamp and advanced by compare-and-swap.
//! Tokens are never created twice, so all workers together admit at most what one bucket
//! would.
//!
//! Workers do not advance the shared arrival times per request: each leases a few
//! tokens at a time into its own slot of the bucket and spends them from there, taking a
//! fresh lease only when its slot runs out. A worker the bucket refuses takes a token from
//! another worker's unspent lease, so an unspent lease never keeps a token from a client
//! that asks on another worker. Unused leases go back to the bucket when a key sits idle
//! for a moment.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{Config, Headers, Limit, Period, Policy};

/// A bucket's key: the plugin instance and a hash of the client identifier.
pub type Key = (u64, u64);

/// The identifier hash reserved for a plugin instance's overflow bucket, shared by the
/// identifiers that arrive while the table is full.
const OVERFLOW: u64 = 0;

/// The largest lease a worker takes at once.
const MAX_LEASE: u64 = 64;

/// A worker gives an unused lease back once the key has been idle this long.
pub const LEASE_IDLE: Duration = Duration::from_millis(100);

/// A worker forgets an idle key (without a lease) after this long.
const LOCAL_IDLE: Duration = Duration::from_secs(2);

/// One key's shared state.
#[derive(Debug)]
pub struct Bucket {
    /// Per period (indexed by `Period as usize`): the time, in [`Store::now`]
    /// nanoseconds, at which the bucket will be full again if nothing more is taken.
    /// At or before now means full.
    tat: [AtomicU64; 6],
    /// Per period: the emission interval `tat` was last drawn at (0 before the first
    /// draw). A reload that changes the limit rescales the arrival time by it, so the
    /// tokens in use stay in use (as Kong keeps a window's count when its limit
    /// changes) instead of the time drawn ahead staying drawn.
    intervals: [AtomicU64; 6],
    /// Tokens taken since the last Redis sync (returns make it go down).
    pub pending: AtomicI64,
    /// Set while the sweeper decides whether to drop the bucket from the table.
    retired: AtomicBool,
    /// The identifier's stable digest, for buckets shared through Redis.
    pub shared_name: Option<Box<str>>,
    /// Per worker: leased tokens not yet spent. A worker spends from its own slot and,
    /// refused by the bucket, from the others'.
    held: Box<[AtomicU64]>,
}

/// What a [`Bucket::take`] got.
#[derive(Debug, Clone, Copy)]
pub struct Take {
    pub got: u64,
    /// When `got` is 0: nanoseconds until every period has a token again.
    pub wait: u64,
}

impl Bucket {
    fn new(shared_name: Option<Box<str>>, workers: usize) -> Bucket {
        Bucket {
            tat: Default::default(),
            intervals: Default::default(),
            pending: AtomicI64::new(0),
            retired: AtomicBool::new(false),
            shared_name,
            held: (0..workers.max(1)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Spends one token of a worker's unspent lease, if it has one. The leases count
    /// as in use in the bucket's arrival times (see `effective_tat`): once the bucket
    /// has refilled past them, that count is made the arrival time first, so the token
    /// leaves the lease without the bucket gaining one.
    pub(super) fn spend_held(&self, worker: usize, limits: &[Limit], now: u64) -> bool {
        if self.held[worker].load(Ordering::Acquire) == 0 {
            return false;
        }
        let held = self.held_total();
        for limit in limits {
            let floor = now.saturating_add(held.saturating_mul(limit.interval));
            let tat = &self.tat[limit.period as usize];
            // Only a bucket refilled past the leases is written: a spend from a fresh
            // lease (the arrival time still ahead of it) stays a read of the shared line.
            if tat.load(Ordering::Acquire) < floor {
                tat.fetch_max(floor, Ordering::AcqRel);
            }
        }
        self.held[worker]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Puts `count` leased tokens in worker `worker`'s slot.
    pub(super) fn hold(&self, worker: usize, count: u64) {
        self.held[worker].fetch_add(count, Ordering::AcqRel);
    }

    /// Leased tokens no worker has spent yet.
    fn held_total(&self) -> u64 {
        self.held.iter().map(|h| h.load(Ordering::Acquire)).sum()
    }

    /// Tokens `limit`'s period holds at `now` given arrival time `tat`.
    pub fn available(limit: &Limit, tat: u64, now: u64) -> u64 {
        let base = tat.max(now);
        (now + limit.capacity()).saturating_sub(base) / limit.interval
    }

    /// The arrival time of `limit`'s period with the unspent leases counted as in use.
    /// A lease's tokens were drawn when it was taken; once the bucket has refilled past
    /// them, the arrival time alone would count the bucket full while the leases still
    /// hold their tokens, and the two together would admit more than the limit. So the
    /// bucket is never fuller than its capacity less what the leases hold.
    fn effective_tat(&self, limit: &Limit, now: u64, held: u64) -> u64 {
        self.tat(limit.period)
            .max(now.saturating_add(held.saturating_mul(limit.interval)))
    }

    /// Tokens `limit`'s period holds at `now`, the unspent leases (`held` tokens)
    /// counted as in use.
    pub fn free(&self, limit: &Limit, now: u64, held: u64) -> u64 {
        Bucket::available(limit, self.effective_tat(limit, now, held), now)
    }

    /// Takes the same number of tokens from every period at once: as many as `lease`
    /// asks for given what the emptiest period holds, and at least one if any.
    pub fn take(&self, limits: &[Limit], now: u64, lease: impl Fn(u64) -> u64) -> Take {
        self.rescale(limits, now);
        'retry: loop {
            let held = self.held_total();
            let mut fewest = u64::MAX;
            let mut wait = 0;
            for limit in limits {
                let tat = self.effective_tat(limit, now, held);
                let available = Bucket::available(limit, tat, now);
                fewest = fewest.min(available);
                if available == 0 {
                    let next = tat.max(now).saturating_add(limit.interval);
                    wait = wait.max((next - limit.capacity().min(next)).saturating_sub(now));
                }
            }
            if fewest == 0 {
                return Take { got: 0, wait };
            }
            let want = lease(fewest).clamp(1, fewest);
            for (i, limit) in limits.iter().enumerate() {
                if !self.advance(limit, now, want, held) {
                    // Another worker took tokens meanwhile: undo and look again.
                    for undone in &limits[..i] {
                        self.give_back(undone.period, want);
                    }
                    continue 'retry;
                }
            }
            return Take { got: want, wait: 0 };
        }
    }

    /// Keeps the tokens in use when a limit's interval is not the one its period was
    /// drawn at: the arrival time becomes the same number of tokens at the new interval,
    /// at most a full period ahead (a lowered limit empties the bucket, no more). One
    /// worker wins the swap of a period's interval and converts it; a token another
    /// worker draws in between counts at the new interval. Unspent leases were drawn at
    /// the old intervals and are not in use: they all go back first, at those intervals
    /// (given back after the conversion, at the new one, they would undo it).
    fn rescale(&self, limits: &[Limit], now: u64) {
        let mut changed: [Option<u64>; 6] = [None; 6];
        for limit in limits {
            let slot = &self.intervals[limit.period as usize];
            let was = slot.load(Ordering::Acquire);
            if was != limit.interval
                && slot
                    .compare_exchange(was, limit.interval, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                && was != 0
            {
                changed[limit.period as usize] = Some(was);
            }
        }
        if changed.iter().all(Option::is_none) {
            return;
        }
        let unspent: u64 = self.held.iter().map(|h| h.swap(0, Ordering::AcqRel)).sum();
        if unspent > 0 {
            for period in Period::ALL {
                let interval = match changed[period as usize] {
                    Some(was) => was,
                    None => self.intervals[period as usize].load(Ordering::Acquire),
                };
                if interval > 0 {
                    self.return_tokens(period, interval, unspent);
                }
            }
            if self.shared_name.is_some() {
                self.pending.fetch_sub(unspent as i64, Ordering::AcqRel);
            }
        }
        for limit in limits {
            let Some(was) = changed[limit.period as usize] else {
                continue;
            };
            let _ = self.tat[limit.period as usize].fetch_update(
                Ordering::AcqRel,
                Ordering::Acquire,
                |tat| {
                    let in_use = tat.saturating_sub(now).div_ceil(was).min(limit.limit);
                    Some(now + in_use * limit.interval)
                },
            );
        }
    }

    /// Moves one period's arrival time forward by `count` tokens, if it has them (the
    /// unspent leases, `held` tokens, counted as in use).
    fn advance(&self, limit: &Limit, now: u64, count: u64, held: u64) -> bool {
        let slot = &self.tat[limit.period as usize];
        let floor = now.saturating_add(held.saturating_mul(limit.interval));
        let mut current = slot.load(Ordering::Acquire);
        loop {
            let next = current
                .max(floor)
                .saturating_add(count.saturating_mul(limit.interval));
            if next > now + limit.capacity() {
                return false;
            }
            match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Returns `count` unused tokens of one period, at the interval the period is drawn
    /// at now (tokens a reload rescaled since were rescaled with it). A period never
    /// drawn has nothing to take back.
    pub fn give_back(&self, period: Period, count: u64) {
        let interval = self.intervals[period as usize].load(Ordering::Acquire);
        if interval > 0 {
            self.return_tokens(period, interval, count);
        }
    }

    /// Moves one period's arrival time back by `count` tokens of `interval`.
    fn return_tokens(&self, period: Period, interval: u64, count: u64) {
        let _ = self.tat[period as usize].fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
            Some(t.saturating_sub(count.saturating_mul(interval)))
        });
    }

    /// Whether every period is full (the bucket is indistinguishable from a new one).
    fn is_full(&self, now: u64) -> bool {
        self.tat.iter().all(|t| t.load(Ordering::Acquire) <= now)
    }

    /// The arrival time of one period.
    pub fn tat(&self, period: Period) -> u64 {
        self.tat[period as usize].load(Ordering::Acquire)
    }

    /// Sets one period's arrival time (Redis sync: the cluster-wide state, drawn at
    /// `limit`'s interval).
    pub fn set_tat(&self, limit: &Limit, tat: u64) {
        self.intervals[limit.period as usize].store(limit.interval, Ordering::Release);
        self.tat[limit.period as usize].store(tat, Ordering::Release);
    }
}

/// The process-wide table of buckets, shared by every worker and kept across reloads
/// (a reload does not hand out fresh quotas).
#[derive(Debug)]
pub struct Store {
    map: papaya::HashMap<Key, Arc<Bucket>>,
    /// Seeded per process, so clients cannot aim their identifiers at another's bucket.
    hasher: foldhash::quality::RandomState,
    capacity: usize,
    workers: usize,
}

impl Store {
    /// Worker `worker`'s lease slot in every bucket (a worker numbered past the store's
    /// count shares the last slot rather than indexing past it).
    fn slot(&self, worker: usize) -> usize {
        worker.min(self.workers - 1)
    }

    /// A table holding at most `capacity` keys (beyond it, new identifiers share their
    /// plugin instance's overflow bucket until idle keys are swept), for `workers`
    /// workers, numbered from 0.
    pub fn new(capacity: usize, workers: usize) -> Store {
        Store {
            map: papaya::HashMap::new(),
            hasher: foldhash::quality::RandomState::default(),
            capacity: capacity.max(1),
            workers: workers.max(1),
        }
    }

    /// Nanoseconds on the buckets' clock: the kernel's coarse monotonic clock (a few
    /// nanoseconds to read, a tick of resolution). It can only run behind real time, so
    /// buckets refill a tick late at worst and never early. Offset past every period's
    /// length so a zeroed bucket reads as full.
    pub fn now(&self) -> u64 {
        const START: u64 = 40_000_000 * 1_000_000_000;
        START + coarse_monotonic_ns()
    }

    /// The key for `identifier` under one plugin instance.
    pub fn key(&self, instance: u64, identifier: &[u8]) -> Key {
        let hash = self.hasher.hash_one(identifier);
        (instance, if hash == OVERFLOW { 1 } else { hash })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The bucket for `key`, created on first use. `shared` names it for Redis.
    pub fn bucket(&self, key: Key, shared: impl Fn() -> Option<Box<str>>) -> Arc<Bucket> {
        let map = self.map.pin();
        loop {
            let bucket = match map.get(&key) {
                Some(bucket) => bucket.clone(),
                None => {
                    let key = if map.len() >= self.capacity {
                        (key.0, OVERFLOW)
                    } else {
                        key
                    };
                    map.get_or_insert_with(key, || {
                        let name = if key.1 == OVERFLOW {
                            shared().map(|_| "~overflow".into())
                        } else {
                            shared()
                        };
                        Arc::new(Bucket::new(name, self.workers))
                    })
                    .clone()
                }
            };
            // Pairs with the fence in `sweep`: either the sweeper sees this clone and
            // keeps the bucket, or this sees it retired and looks again.
            fence(Ordering::SeqCst);
            if !bucket.retired.load(Ordering::SeqCst) {
                return bucket;
            }
            drop(bucket);
            std::thread::yield_now();
        }
    }

    /// Drops buckets that are full, have nothing to sync and no worker holds: they are
    /// indistinguishable from fresh ones, so forgetting them loses nothing.
    pub fn sweep(&self) {
        let now = self.now();
        let map = self.map.pin();
        for (key, bucket) in map.iter() {
            if Arc::strong_count(bucket) != 1
                || bucket.pending.load(Ordering::Acquire) != 0
                || !bucket.is_full(now)
            {
                continue;
            }
            bucket.retired.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if Arc::strong_count(bucket) == 1 {
                map.remove(key);
            } else {
                bucket.retired.store(false, Ordering::SeqCst);
            }
        }
    }

    /// Every bucket of one plugin instance (Redis sync).
    pub fn buckets_of(&self, instance: u64) -> Vec<Arc<Bucket>> {
        let map = self.map.pin();
        map.iter()
            .filter(|(key, _)| key.0 == instance)
            .map(|(_, bucket)| bucket.clone())
            .collect()
    }
}

/// A worker's view of one key: the shared bucket (its lease is in the bucket's slot for
/// this worker).
struct Entry {
    bucket: Arc<Bucket>,
    /// The intervals the lease was taken under (0 for periods not configured): which
    /// periods it goes back to, and, when they differ from the config's, a reload
    /// changed the limits and the lease is settled before the next is taken.
    intervals: [u64; 6],
    used: u64,
}

impl Entry {
    /// Returns what is left of this worker's lease (another worker may have spent part
    /// of it meanwhile: only what is left goes back).
    fn give_back(&mut self, worker: usize) {
        let left = self.bucket.held[worker].swap(0, Ordering::AcqRel);
        if left == 0 {
            return;
        }
        for period in Period::ALL {
            if self.intervals[period as usize] > 0 {
                self.bucket.give_back(period, left);
            }
        }
        if self.bucket.shared_name.is_some() {
            self.bucket.pending.fetch_sub(left as i64, Ordering::AcqRel);
        }
    }
}

/// What the plugin decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow(Headers),
    Deny(Headers),
    /// Redis is unreachable and the plugin is not fault tolerant.
    Unavailable,
}

/// The worker tables' hasher: keys already hold a seeded hash of the identifier, so
/// mixing in the instance is all that is left to do.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(29) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Entries = HashMap<Key, Entry, BuildHasherDefault<KeyHasher>>;

/// One worker's keys, keyed like the store. Only its own thread touches it.
pub struct Local {
    /// This worker's number: its lease slot in every bucket.
    worker: usize,
    entries: RefCell<Entries>,
}

impl Local {
    /// The table of worker `worker` (numbered from 0, below the store's `workers`).
    pub fn new(worker: usize) -> Local {
        Local {
            worker,
            entries: RefCell::default(),
        }
    }

    /// Admits or refuses one request from `identifier` under `config`.
    pub fn check(&self, store: &Store, config: &Config, identifier: &[u8]) -> Decision {
        let redis = match &config.policy {
            Policy::Redis(settings) => Some(settings),
            Policy::Local => None,
        };
        if let Some(settings) = redis {
            if !config.fault_tolerant && !settings.health.is_up() {
                return Decision::Unavailable;
            }
        }
        let now = store.now();
        let key = store.key(config.instance, identifier);
        let worker = store.slot(self.worker);
        let mut entries = self.entries.borrow_mut();
        if !entries.contains_key(&key) && entries.len() >= store.capacity {
            shrink(&mut entries, now, worker);
        }
        let mut intervals = [0u64; 6];
        for limit in &config.limits {
            intervals[limit.period as usize] = limit.interval;
        }
        // A new entry takes the current intervals: several entries may share a bucket
        // (the overflow one), and settling a lease under no intervals would drop it.
        let entry = entries.entry(key).or_insert_with(|| Entry {
            bucket: store.bucket(key, || redis.map(|_| super::redis::shared_name(identifier))),
            intervals,
            used: now,
        });
        entry.used = now;
        if entry.intervals != intervals {
            // The limits changed under a reload: settle the old lease first.
            entry.give_back(worker);
            entry.intervals = intervals;
        }
        let bucket = &entry.bucket;
        let mut denied = None;
        if !bucket.spend_held(worker, &config.limits, now) {
            let divisor = 2 * store.workers as u64;
            let take = bucket.take(&config.limits, now, |available| {
                (available / divisor).min(MAX_LEASE)
            });
            if take.got > 0 {
                // One token for this request, the rest leased.
                bucket.hold(worker, take.got - 1);
                if redis.is_some() {
                    bucket.pending.fetch_add(take.got as i64, Ordering::AcqRel);
                }
            } else if !(0..bucket.held.len())
                .any(|w| w != worker && bucket.spend_held(w, &config.limits, now))
            {
                // Nothing in the bucket, nothing unspent in any other worker's lease.
                denied = Some(take.wait);
            }
        }
        // What is left for the key across all workers: the bucket's tokens and every
        // unspent lease.
        let held = bucket.held_total();
        let mut headers = Headers::default();
        for limit in &config.limits {
            let remaining = bucket.free(limit, now, held) + held;
            headers.push(limit.period, limit.limit, remaining.min(limit.limit));
        }
        let reset = |i: usize| {
            let limit = &config.limits[i];
            let debt = bucket
                .tat(limit.period)
                .max(now)
                .saturating_sub(now)
                .saturating_sub(held.saturating_mul(limit.interval));
            debt.div_ceil(1_000_000_000)
        };
        match denied {
            Some(wait) => {
                headers.finish(reset, wait.div_ceil(1_000_000_000));
                Decision::Deny(headers)
            }
            None => {
                headers.finish(reset, 0);
                Decision::Allow(headers)
            }
        }
    }

    /// Housekeeping: gives back leases of keys idle for [`LEASE_IDLE`] and forgets keys
    /// idle for longer, so the shared table can sweep them.
    pub fn tick(&self, store: &Store) {
        let now = store.now();
        let worker = store.slot(self.worker);
        let mut entries = self.entries.borrow_mut();
        entries.retain(|_, entry| {
            let idle = now.saturating_sub(entry.used);
            if idle >= LEASE_IDLE.as_nanos() as u64 {
                entry.give_back(worker);
            }
            idle < LOCAL_IDLE.as_nanos() as u64
        });
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.borrow().is_empty()
    }
}

/// Makes room in a full local table: idle keys first, then half of the rest (their
/// leases go back, so nothing is lost but the lookup).
fn shrink(entries: &mut Entries, now: u64, worker: usize) {
    let before = entries.len();
    entries.retain(|_, entry| {
        let keep = now.saturating_sub(entry.used) < LEASE_IDLE.as_nanos() as u64;
        if !keep {
            entry.give_back(worker);
        }
        keep
    });
    if entries.len() * 4 > before * 3 {
        let mut flip = false;
        entries.retain(|_, entry| {
            flip = !flip;
            if flip {
                entry.give_back(worker);
            }
            !flip
        });
    }
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds.
#[allow(unsafe_code)]
fn coarse_monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call, and
    // CLOCK_MONOTONIC_COARSE exists on every Linux ringway runs on.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}
