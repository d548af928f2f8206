//! The lock, condition variable and shared pointer of the future's state machine: std's in
//! every build, loom's in the unit tests built with the `loom` feature, which model-check it (`host/future_loom.rs`).
//!
//! The waits are written here once, with only what both libraries have: `wait_while` as a
//! loop over `wait`, and a timed wait whose timeout loom cannot model in time, so under loom
//! it "fires" at an arbitrary point chosen by the model checker (a yield between giving the
//! lock up and taking it back). Every lock recovers from poisoning: no user code runs under
//! these locks, so a poisoned lock still guards consistent data.

use std::sync::PoisonError;
use std::time::Duration;

#[cfg(all(test, feature = "loom"))]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(not(all(test, feature = "loom")))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Locks `mutex`, recovering the guard from a poisoned lock.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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

/// The model of a timed wait: the timeout expires at a point the model checker picks.
#[cfg(all(test, feature = "loom"))]
pub(crate) fn wait_timeout_while<'a, T>(
    _condvar: &Condvar,
    mutex: &'a Mutex<T>,
    _timeout: Duration,
    mut blocked: impl FnMut(&T) -> bool,
) -> MutexGuard<'a, T> {
    let guard = lock(mutex);
    if !blocked(&guard) {
        return guard;
    }
    drop(guard);
    loom::thread::yield_now();
    lock(mutex)
}
