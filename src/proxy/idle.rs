//! Idle deadlines for keep-alive connections, without a timer per wait.
//!
//! Most connections of a busy edge proxy sit idle between requests. A monoio timer is
//! over half a kilobyte (cache-padded) and would live inside every idle connection's
//! future, so idle waits use this instead: each connection owns one slot, arming it is
//! two writes, and the worker's housekeeping tick (`sweep`) wakes the slots whose
//! deadline passed. Deadlines are therefore kept to within one tick
//! (`TICK`); draining wakes every idle slot once it is `DRAIN_IDLE_GRACE` old. The
//! sweep also keeps a coarse
//! clock, so arming a deadline reads no clock: deadlines are computed from the last
//! sweep's time plus two ticks of slack (one for the clock's age, one for a sweep that
//! runs late on a busy worker), so they do not fire early, and fire at most three ticks
//! late.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often the worker sweeps its slots; also the precision of every slot deadline.
pub const TICK: Duration = Duration::from_millis(50);

/// How long into a drain idle keep-alive connections stay open. Closing one races the
/// client's next request on it (which then fails: the connection closed under it, as
/// nginx's shutdown does to such clients); for this long a request still comes in and is
/// answered with `Connection: close`, so a client that is using its connection moves to
/// a new one without a failure. Connections idle past it close.
pub const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);

use slab::Slab;

#[derive(Default)]
struct Slot {
    deadline: Option<Instant>,
    /// An idle wait, which draining ends at once (an operation's deadline it does not).
    idle: bool,
    expired: bool,
    waker: Option<Waker>,
}

/// One worker's idle slots.
pub struct IdleSlots {
    slots: RefCell<Slab<Slot>>,
    /// The time of the last sweep (the coarse clock).
    now: Cell<Instant>,
}

impl Default for IdleSlots {
    fn default() -> Self {
        IdleSlots {
            slots: RefCell::new(Slab::new()),
            now: Cell::new(Instant::now()),
        }
    }
}

/// A connection's slot; dropping it frees the slot.
pub struct IdleKey<'a> {
    slots: &'a IdleSlots,
    key: usize,
}

impl IdleSlots {
    pub fn register(&self) -> IdleKey<'_> {
        let key = self.slots.borrow_mut().insert(Slot::default());
        IdleKey { slots: self, key }
    }

    /// A deadline `timeout` from now that never fires early, computed without reading
    /// the clock.
    pub fn deadline_after(&self, timeout: Duration) -> Instant {
        self.now.get() + timeout + 2 * TICK
    }

    /// The coarse clock: the time of the last sweep (at most one tick old).
    pub fn coarse_now(&self) -> Instant {
        self.now.get()
    }

    /// Marks every armed slot whose deadline passed (or all idle ones, once a drain that
    /// began at `draining_since` is [`DRAIN_IDLE_GRACE`] old) as expired and wakes its
    /// connection.
    pub fn sweep(&self, now: Instant, draining_since: Option<Instant>) {
        self.now.set(now);
        let close_idle =
            draining_since.is_some_and(|at| now.saturating_duration_since(at) >= DRAIN_IDLE_GRACE);
        for (_, slot) in self.slots.borrow_mut().iter_mut() {
            let due = slot
                .deadline
                .is_some_and(|d| d <= now || (close_idle && slot.idle));
            if due && !slot.expired {
                slot.expired = true;
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.slots.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl IdleKey<'_> {
    /// Starts an idle period ending at `deadline`; the returned future completes when it
    /// expires or draining starts.
    pub fn arm(&self, deadline: Instant) -> IdleWait<'_> {
        self.set(deadline, true)
    }

    /// Starts an operation's deadline; the returned future completes when it expires
    /// (draining lets the operation finish).
    pub fn arm_deadline(&self, deadline: Instant) -> IdleWait<'_> {
        self.set(deadline, false)
    }

    fn set(&self, deadline: Instant, idle: bool) -> IdleWait<'_> {
        if let Some(slot) = self.slots.slots.borrow_mut().get_mut(self.key) {
            slot.deadline = Some(deadline);
            slot.idle = idle;
            slot.expired = false;
        }
        IdleWait { key: self }
    }

    /// Ends the idle period.
    pub fn disarm(&self) {
        if let Some(slot) = self.slots.slots.borrow_mut().get_mut(self.key) {
            slot.deadline = None;
            slot.waker = None;
        }
    }
}

impl Drop for IdleKey<'_> {
    fn drop(&mut self) {
        let mut slots = self.slots.slots.borrow_mut();
        if slots.contains(self.key) {
            slots.remove(self.key);
        }
    }
}

/// Completes when the slot's idle deadline has passed.
pub struct IdleWait<'a> {
    key: &'a IdleKey<'a>,
}

impl Future for IdleWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut slots = self.key.slots.slots.borrow_mut();
        let Some(slot) = slots.get_mut(self.key.key) else {
            return Poll::Ready(());
        };
        if slot.expired {
            return Poll::Ready(());
        }
        match &slot.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;
    use std::time::Duration;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn expires_on_the_sweep_after_its_deadline() {
        let slots = IdleSlots::default();
        let key = slots.register();
        let flag = std::sync::Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let start = Instant::now();
        let mut wait = Box::pin(key.arm(start + Duration::from_secs(10)));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        slots.sweep(start + Duration::from_secs(9), None);
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        slots.sweep(start + Duration::from_secs(10), None);
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(wait.as_mut().poll(&mut cx).is_ready());
        drop(wait);
        // Disarmed slots never expire; draining wakes armed idle ones once its grace
        // is over, not before.
        key.disarm();
        slots.sweep(start + Duration::from_secs(100), None);
        let mut wait = Box::pin(key.arm(start + Duration::from_secs(1000)));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        slots.sweep(start, Some(start));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        slots.sweep(start + DRAIN_IDLE_GRACE, Some(start));
        assert!(wait.as_mut().poll(&mut cx).is_ready());
        drop(wait);
        // An operation's deadline outlives draining.
        let mut op = Box::pin(key.arm_deadline(start + Duration::from_secs(1000)));
        assert!(op.as_mut().poll(&mut cx).is_pending());
        slots.sweep(start + DRAIN_IDLE_GRACE, Some(start));
        assert!(op.as_mut().poll(&mut cx).is_pending());
        drop(op);
        drop(key);
        assert!(slots.is_empty());
    }
}
