//! Model checks of the future's state machine with loom: every interleaving of the two sides
//! of each race below is run, and loom also fails a model in which a thread blocks forever
//! (a lost wake-up) or a shared pointer leaks.
//!
//! Run with `cargo test --features loom --lib future_loom` (`.ci/run` does).

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use std::future::IntoFuture;

use crate::sync::{Arc, set_timeouts_expire};
use crate::{FutureState, TaskError, TaskValue, Val, promise};

fn value(n: u32) -> TaskValue {
    TaskValue::from(Val::U32(n))
}

/// Cancel races the executor starting the task: exactly one of them wins, and the outcome
/// agrees with the winner.
#[test]
fn cancel_vs_start() {
    loom::model(|| {
        let (promise, future) = promise();
        let executor = thread::spawn(move || {
            let started = promise.set_running_or_notify_cancel();
            if started {
                promise.set_result(value(7));
            }
            started
        });
        let cancelled = future.cancel();
        let started = executor.join().unwrap();
        assert_ne!(cancelled, started, "exactly one of cancel and start wins");
        if cancelled {
            assert_eq!(future.state(), FutureState::Cancelled);
            assert_eq!(future.result(), Err(TaskError::Cancelled));
        } else {
            assert_eq!(future.result(), Ok(value(7)));
        }
    });
}

/// A callback added while the result is being set runs exactly once, after the state is
/// final, whichever thread runs it.
#[test]
fn set_result_vs_add_done_callback() {
    loom::model(|| {
        let (promise, future) = promise();
        let runs = Arc::new(AtomicUsize::new(0));
        let executor = thread::spawn(move || promise.set_result(value(1)));
        let seen = Arc::clone(&runs);
        future.add_done_callback(move |f| {
            assert_eq!(f.state(), FutureState::Finished);
            assert_eq!(f.result(), Ok(value(1)));
            seen.fetch_add(1, Ordering::SeqCst);
        });
        executor.join().unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    });
}

/// A blocking `result()` started at any point of the completion wakes up with the value
/// (a lost notification would leave the waiter blocked, which loom reports).
#[test]
fn blocking_result_vs_completion() {
    loom::model(|| {
        let (promise, future) = promise();
        let waiter = {
            let future = future.clone();
            thread::spawn(move || future.result())
        };
        assert!(promise.set_running_or_notify_cancel());
        promise.set_result(value(3));
        assert_eq!(waiter.join().unwrap(), Ok(value(3)));
    });
}

/// Runs `model` with timed waits that expire at any point, then with ones that never do.
fn with_both_timeouts(model: fn()) {
    for expire in [true, false] {
        set_timeouts_expire(expire);
        loom::model(model);
    }
}

/// A timed wait racing the completion either sees the finished value or times out while the
/// future was not done; it never sees a half-set state, and is never left unwoken.
#[test]
fn wait_with_timeout_vs_completion() {
    with_both_timeouts(|| {
        let (promise, future) = promise();
        let waiter = {
            let future = future.clone();
            thread::spawn(move || future.result_timeout(std::time::Duration::from_secs(1)))
        };
        promise.set_result(value(4));
        match waiter.join().unwrap() {
            Ok(outcome) => assert_eq!(outcome, Ok(value(4))),
            Err(timeout) => assert_eq!(timeout.0, std::time::Duration::from_secs(1)),
        }
        assert_eq!(future.result(), Ok(value(4)));
    });
}

/// `wait_started` racing the start: it returns once the task runs, or times out while it
/// was still pending.
#[test]
fn wait_started_vs_start() {
    with_both_timeouts(|| {
        let (promise, future) = promise();
        let waiter = {
            let future = future.clone();
            thread::spawn(move || {
                let started = future
                    .wait_started(std::time::Duration::from_secs(1))
                    .is_ok();
                (started, future.state())
            })
        };
        assert!(promise.set_running_or_notify_cancel());
        let (started, seen) = waiter.join().unwrap();
        if started {
            assert_ne!(seen, FutureState::Pending);
        }
        drop(promise);
        assert!(matches!(future.result(), Err(TaskError::BrokenPool { .. })));
    });
}

/// A `wait`/`as_completed` registration racing the completion: either it is refused because
/// the future is done, or it receives the future's id exactly once.
#[test]
fn waiter_registration_vs_completion() {
    loom::model(|| {
        let (promise, future) = promise();
        let (tx, rx) = crossbeam_channel::unbounded();
        let executor = thread::spawn(move || promise.set_error(TaskError::Cancelled));
        let registered = future.add_waiter(1, &tx);
        executor.join().unwrap();
        let sent: Vec<u64> = rx.try_iter().collect();
        if registered {
            assert_eq!(sent, [future.id()]);
        } else {
            assert!(sent.is_empty());
        }
        assert_eq!(future.registrations(), (0, 0));
    });
}

/// Abort racing the completion of a running task: the future ends cancelled exactly when
/// abort says it won.
#[test]
fn abort_vs_completion() {
    loom::model(|| {
        let (promise, future) = promise();
        assert!(promise.set_running_or_notify_cancel());
        let executor = thread::spawn(move || promise.set_result(value(5)));
        let aborted = future.abort();
        executor.join().unwrap();
        if aborted {
            assert_eq!(future.result(), Err(TaskError::Cancelled));
        } else {
            assert_eq!(future.result(), Ok(value(5)));
        }
    });
}

/// `.await` racing the completion: the awaiting task is woken (loom's `block_on` would
/// otherwise block forever) and its waker slot is gone afterwards.
#[test]
fn await_vs_completion() {
    loom::model(|| {
        let (promise, future) = promise();
        let awaiting = {
            let future = future.clone();
            thread::spawn(move || loom::future::block_on(future.into_future()))
        };
        promise.set_result(value(6));
        assert_eq!(awaiting.join().unwrap(), Ok(value(6)));
        assert_eq!(future.registrations(), (0, 0));
    });
}

/// A promise dropped by a dying executor races a cancel: the future ends either cancelled
/// or broken, never pending.
#[test]
fn dropped_promise_vs_cancel() {
    loom::model(|| {
        let (promise, future) = promise();
        let executor = thread::spawn(move || drop(promise));
        let cancelled = future.cancel();
        executor.join().unwrap();
        match future.result() {
            Err(TaskError::Cancelled) => assert!(cancelled),
            Err(TaskError::BrokenPool { .. }) => assert!(!cancelled),
            other => panic!("unexpected outcome {other:?}"),
        }
    });
}
