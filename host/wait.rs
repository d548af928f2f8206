//! Waiting on many futures at once: [`wait`] and [`as_completed`], ports of CPython's
//! `concurrent.futures.wait` and `concurrent.futures.as_completed`.
//!
//! Both register one waiter (a channel) on every future that is not done yet; the future
//! sends its id on it when it becomes done (finished, or cancelled: unlike CPython, a future
//! cancelled while pending counts as done at once, not only once an executor notices). The
//! registrations are removed again when the wait returns or the iterator is dropped.

use std::collections::{HashMap, HashSet};
use std::iter::FusedIterator;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::WaitTimeout;
use crate::future::{TaskFuture, next_key};

/// When [`wait`] returns (besides on timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReturnWhen {
    /// As soon as any future is done (finished or cancelled).
    FirstCompleted,
    /// As soon as any future finishes with an error, or when all are done. A cancelled future
    /// does not count as an error here (as in CPython's `FIRST_EXCEPTION`).
    FirstError,
    /// When all futures are done.
    #[default]
    AllCompleted,
}

/// What [`wait`] returns: the futures that were done when it returned, and the others.
/// Both lists keep the order of the input (without its duplicates).
#[derive(Debug, Clone)]
pub struct WaitResult {
    /// The futures that are done (finished or cancelled).
    pub done: Vec<TaskFuture>,
    /// The futures that are not.
    pub not_done: Vec<TaskFuture>,
}

/// Waits until the futures satisfy `return_when`, or until `timeout` (if any) has passed,
/// and splits them into done and not done. Never fails: on timeout the unfinished futures
/// are simply in `not_done`. A future given more than once appears once in the result.
///
/// ```
/// use std::time::Duration;
/// use wasmpool::{promise, wait, ReturnWhen, TaskValue};
///
/// let (p1, f1) = promise();
/// let (_p2, f2) = promise(); // never completed (until `_p2` is dropped)
/// p1.set_result(TaskValue::unit());
///
/// let r = wait(&[f1.clone(), f2.clone()], None, ReturnWhen::FirstCompleted);
/// assert_eq!(r.done.iter().map(|f| f.id()).collect::<Vec<_>>(), [f1.id()]);
///
/// let r = wait(&[f1, f2.clone()], Some(Duration::from_millis(10)), ReturnWhen::AllCompleted);
/// assert_eq!(r.not_done.iter().map(|f| f.id()).collect::<Vec<_>>(), [f2.id()]);
/// ```
pub fn wait(
    futures: &[TaskFuture],
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> WaitResult {
    let deadline = deadline_after(timeout);
    let futures = distinct(futures);
    let (mut waiter, already_done) = Waiter::register(&futures);

    let mut any_done = !already_done.is_empty();
    let mut any_error = already_done.iter().any(TaskFuture::is_error);
    loop {
        let satisfied = waiter.pending.is_empty()
            || match return_when {
                ReturnWhen::FirstCompleted => any_done,
                ReturnWhen::FirstError => any_error,
                ReturnWhen::AllCompleted => false,
            };
        if satisfied {
            break;
        }
        match waiter.next_done(deadline) {
            Some(future) => {
                any_done = true;
                any_error |= future.is_error();
            }
            None => break, // timed out
        }
    }
    drop(waiter); // deregisters

    let (done, not_done) = futures.into_iter().partition(TaskFuture::is_done);
    WaitResult { done, not_done }
}

/// Iterates over the futures as they complete: first those that are done already (in input
/// order), then each one as soon as it is done (finished or cancelled). A future given more
/// than once is yielded once.
///
/// `timeout` bounds the whole iteration, measured from this call: when it has passed with
/// futures still unfinished, the iterator yields one `Err(WaitTimeout)` and then ends.
///
/// ```
/// use std::time::Duration;
/// use wasmpool::{as_completed, promise, TaskValue, WaitTimeout};
///
/// let (p1, f1) = promise();
/// let (p2, f2) = promise();
/// p2.set_result(TaskValue::unit());
///
/// let it = as_completed(&[f1.clone(), f2.clone()], None);
/// std::thread::spawn(move || p1.set_result(TaskValue::unit()));
/// let order: Vec<u64> = it.map(|f| f.unwrap().id()).collect();
/// assert_eq!(order, [f2.id(), f1.id()]); // f2 was done already, f1 came later
///
/// // A timeout ends the iteration with one error.
/// let (_p3, f3) = promise(); // never completed (until `_p3` is dropped)
/// let mut it = as_completed(&[f3], Some(Duration::from_millis(10)));
/// assert!(matches!(it.next(), Some(Err(WaitTimeout(_)))));
/// assert!(it.next().is_none());
/// ```
pub fn as_completed(futures: &[TaskFuture], timeout: Option<Duration>) -> AsCompleted {
    let deadline = deadline_after(timeout);
    let (waiter, already_done) = Waiter::register(&distinct(futures));
    AsCompleted {
        ready: already_done.into_iter(),
        waiter: Some(waiter),
        deadline,
        timeout: timeout.unwrap_or(Duration::MAX),
    }
}

/// The iterator [`as_completed`] returns: yields `Ok(future)` for each future as it is done,
/// or, when the timeout passes first, one `Err(WaitTimeout)` and then nothing.
///
/// Dropping it (even early) removes its registrations from the futures.
#[derive(Debug)]
pub struct AsCompleted {
    /// Futures that were done when the iteration started, not yielded yet.
    ready: std::vec::IntoIter<TaskFuture>,
    /// `None` once the iteration is over (everything yielded, or timed out).
    waiter: Option<Waiter>,
    /// `None`: no timeout (or one too far away to matter).
    deadline: Option<Instant>,
    timeout: Duration,
}

impl Iterator for AsCompleted {
    type Item = Result<TaskFuture, WaitTimeout>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(future) = self.ready.next() {
            return Some(Ok(future));
        }
        let waiter = self.waiter.as_mut()?;
        if waiter.pending.is_empty() {
            self.waiter = None;
            return None;
        }
        match waiter.next_done(self.deadline) {
            Some(future) => Some(Ok(future)),
            None => {
                self.waiter = None; // deregisters
                Some(Err(WaitTimeout(self.timeout)))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let ready = self.ready.len();
        let pending = self.waiter.as_ref().map_or(0, |w| w.pending.len());
        // Each pending future yields once, or all of them together yield one timeout.
        (ready + pending.min(1), Some(ready + pending))
    }
}

impl FusedIterator for AsCompleted {}

/// One registration (one channel) on a set of futures: the futures it waits for, by id.
/// Dropping it removes the registration from those not done yet.
#[derive(Debug)]
struct Waiter {
    key: u64,
    /// Kept so that the channel never disconnects while we wait.
    tx: Sender<u64>,
    rx: Receiver<u64>,
    /// Futures we are registered on and that have not been reported done yet.
    pending: HashMap<u64, TaskFuture>,
}

impl Waiter {
    /// Registers on each of `futures` (which must be distinct); returns the waiter and the
    /// futures that were done already (in input order; the waiter is not registered on them).
    fn register(futures: &[TaskFuture]) -> (Waiter, Vec<TaskFuture>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut waiter = Waiter {
            key: next_key(),
            tx,
            rx,
            pending: HashMap::new(),
        };
        let mut done = Vec::new();
        for future in futures {
            if future.add_waiter(waiter.key, &waiter.tx) {
                waiter.pending.insert(future.id(), future.clone());
            } else {
                done.push(future.clone());
            }
        }
        (waiter, done)
    }

    /// The next of the pending futures to be done, or `None` if `deadline` passes first.
    /// Blocks forever (without a deadline) if none of them ever is: only call it while some
    /// future is pending.
    fn next_done(&mut self, deadline: Option<Instant>) -> Option<TaskFuture> {
        loop {
            let id = match deadline {
                None => self.rx.recv().ok()?,
                Some(deadline) => self.rx.recv_deadline(deadline).ok()?,
            };
            // A done future has dropped its registration already; nothing to remove.
            if let Some(future) = self.pending.remove(&id) {
                return Some(future);
            }
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        for future in self.pending.values() {
            future.remove_waiter(self.key);
        }
    }
}

/// The futures without repeats (same [`TaskFuture::id`]), in the order they first appear.
fn distinct(futures: &[TaskFuture]) -> Vec<TaskFuture> {
    let mut seen = HashSet::new();
    futures
        .iter()
        .filter(|f| seen.insert(f.id()))
        .cloned()
        .collect()
}

/// When a wait of `timeout` started now ends; `None` for no timeout (or an unreachable end).
fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

#[cfg(test)]
mod tests {
    //! The registrations that `wait`, `as_completed` and `.await` put on a future are removed
    //! again (they are not visible from outside the crate).

    use std::future::{Future, IntoFuture};
    use std::pin::Pin;
    use std::task::{Context, Waker};

    use super::*;
    use crate::{TaskValue, promise};

    #[test]
    fn wait_deregisters_on_return() {
        let (_p, pending) = promise();
        let (p, done) = promise();
        p.set_result(TaskValue::unit());
        let futures = [pending.clone(), done];

        wait(&futures, Some(Duration::ZERO), ReturnWhen::AllCompleted);
        assert_eq!(pending.registrations(), (0, 0));
        wait(&futures, None, ReturnWhen::FirstCompleted);
        assert_eq!(pending.registrations(), (0, 0));
    }

    #[test]
    fn as_completed_deregisters_on_timeout_and_drop() {
        let (_p, pending) = promise();
        let mut it = as_completed(std::slice::from_ref(&pending), Some(Duration::ZERO));
        assert_eq!(pending.registrations(), (1, 0));
        assert!(matches!(it.next(), Some(Err(WaitTimeout(_)))));
        assert_eq!(pending.registrations(), (0, 0));

        let it = as_completed(&[pending.clone(), pending.clone()], None);
        assert_eq!(pending.registrations(), (1, 0)); // duplicates register once
        drop(it);
        assert_eq!(pending.registrations(), (0, 0));
    }

    #[test]
    fn terminal_transition_drops_registrations() {
        let (p, f) = promise();
        let it = as_completed(std::slice::from_ref(&f), None);
        let mut awaiting = f.clone().into_future();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..3 {
            assert!(Pin::new(&mut awaiting).poll(&mut cx).is_pending());
        }
        assert_eq!(f.registrations(), (1, 1)); // repeated polls keep one waker
        p.set_result(TaskValue::unit());
        assert_eq!(f.registrations(), (0, 0));
        drop((it, awaiting));
    }

    #[test]
    fn dropped_await_deregisters() {
        let (_p, f) = promise();
        let mut awaiting = f.clone().into_future();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut awaiting).poll(&mut cx).is_pending());
        assert_eq!(f.registrations(), (0, 1));
        drop(awaiting);
        assert_eq!(f.registrations(), (0, 0));
    }
}
