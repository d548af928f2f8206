//! The lock, condition variable and shared pointer of the future's state machine: std's in
//! every build, loom's in the unit tests built with the `loom` feature, which model-check it (`host/future_loom.rs`).
//!
//! The waits are written here once, with only what both libraries have: `wait_while` as a
//! loop over `wait`, and a timed wait whose timeout loom cannot model in time, so under loom
//! each model runs twice: once with timeouts that "fire" at an arbitrary point chosen by the
//! model checker (a yield between giving the lock up and taking it back), once with
//! timeouts that never fire (so a missed notification is a deadlock loom reports). Every lock recovers from poisoning: no user code runs under
//! these locks, so a poisoned lock still guards consistent data.

use std::sync::PoisonError;
use std::time::Duration;

#[cfg(all(test, feature = "loom"))]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(not(all(test, feature = "loom")))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// A mutex that [`lock`] can lock: std's always (the pools, the ticker, the output sinks
/// use it in every build), and loom's in the model-checked build (the future's state).
pub(crate) trait Lock {
    /// What locking gives.
    type Guard<'a>
    where
        Self: 'a;
    /// Locks, recovering the guard from a poisoned lock.
    fn lock_ok(&self) -> Self::Guard<'_>;
}

impl<T: ?Sized> Lock for std::sync::Mutex<T> {
    type Guard<'a>
        = std::sync::MutexGuard<'a, T>
    where
        Self: 'a;
    fn lock_ok(&self) -> Self::Guard<'_> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A shared mutex locks as the mutex it points to (`lock(&self.shared)`, no `&*`).
impl<L: Lock + ?Sized> Lock for std::sync::Arc<L> {
    type Guard<'a>
        = L::Guard<'a>
    where
        Self: 'a;
    fn lock_ok(&self) -> Self::Guard<'_> {
        (**self).lock_ok()
    }
}

#[cfg(all(test, feature = "loom"))]
impl<T> Lock for loom::sync::Mutex<T> {
    type Guard<'a>
        = loom::sync::MutexGuard<'a, T>
    where
        Self: 'a;
    fn lock_ok(&self) -> Self::Guard<'_> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Locks `mutex`, recovering the guard from a poisoned lock: the one poison-ignoring lock
/// of the crate. Poisoning is ignored because no user code runs under wasmpool's locks, so a
/// panic while one is held leaves consistent data behind.
pub(crate) fn lock<L: Lock + ?Sized>(mutex: &L) -> L::Guard<'_> {
    mutex.lock_ok()
}

/// Blocks on `condvar` while `blocked` holds for the locked value.
pub(crate) fn wait_while<'a, T>(
    condvar: &Condvar,
    mut guard: MutexGuard<'a, T>,
    mut blocked: impl FnMut(&T) -> bool,
) -> MutexGuard<'a, T> {
    while blocked(&guard) {
        guard = condvar.wait(guard).unwrap_or_else(PoisonError::into_inner);
    }
    guard
}

/// Locks `mutex` and blocks on `condvar` while `blocked` holds, for at most `timeout`;
/// returns the guard either way (the caller looks at the value to tell which happened).
#[cfg(not(all(test, feature = "loom")))]
pub(crate) fn wait_timeout_while<'a, T>(
    condvar: &Condvar,
    mutex: &'a Mutex<T>,
    timeout: Duration,
    mut blocked: impl FnMut(&T) -> bool,
) -> MutexGuard<'a, T> {
    condvar
        .wait_timeout_while(lock(mutex), timeout, |value| blocked(value))
        .unwrap_or_else(PoisonError::into_inner)
        .0
}

#[cfg(all(test, feature = "loom"))]
thread_local! {
    /// How the model's timed waits behave (loom runs a model's threads on the thread that
    /// called `loom::model`): `true`, the timeout expires at a point the model checker
    /// picks; `false`, it never expires, so the wait must be woken by a notification.
    static TIMEOUTS_EXPIRE: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Sets how the timed waits of the models run on this thread behave (see above).
#[cfg(all(test, feature = "loom"))]
pub(crate) fn set_timeouts_expire(expire: bool) {
    TIMEOUTS_EXPIRE.set(expire);
}

/// The model of a timed wait: either it expires at an arbitrary point, or it is a wait
/// without timeout (which loom reports as a deadlock if no notification comes).
#[cfg(all(test, feature = "loom"))]
pub(crate) fn wait_timeout_while<'a, T>(
    condvar: &Condvar,
    mutex: &'a Mutex<T>,
    _timeout: Duration,
    mut blocked: impl FnMut(&T) -> bool,
) -> MutexGuard<'a, T> {
    let guard = lock(mutex);
    if !TIMEOUTS_EXPIRE.get() {
        return wait_while(condvar, guard, blocked);
    }
    if !blocked(&guard) {
        return guard;
    }
    drop(guard);
    loom::thread::yield_now();
    lock(mutex)
}
