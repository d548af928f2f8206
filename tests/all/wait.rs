//! Ported from CPython's Lib/test/test_concurrent_futures/test_wait.py (behaviour, rewritten
//! for wasmpool).
//!
//! CPython's tests submit work to an executor; here promises stand in for it, completed from
//! helper threads. One deliberate difference: a future cancelled while pending is done for
//! `wait` at once (CPython's `CANCELLED_FUTURE` stays "not done" until an executor calls
//! `set_running_or_notify_cancel`).

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use wasmpool::{ReturnWhen, TaskError, TaskFuture, WaitResult, promise, wait};

use crate::futures::{SHORT, cancelled, failed, ids, running, succeeded, trap, value, within};

/// `wait` on its own thread (see [`within`]).
fn wait_within(
    futures: &[TaskFuture],
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> WaitResult {
    let futures = futures.to_vec();
    within(move || wait(&futures, timeout, return_when))
}

#[test]
fn duplicates_are_returned_once() {
    // bpo-20369
    let (p, f) = promise();
    let helper = thread::spawn(move || p.set_result(value(2)));
    let r = wait_within(&[f.clone(), f.clone()], None, ReturnWhen::AllCompleted);
    assert_eq!(ids(&r.done), [f.id()]);
    assert!(r.not_done.is_empty());
    helper.join().unwrap();
}

#[test]
fn empty_input_returns_at_once() {
    for return_when in [
        ReturnWhen::FirstCompleted,
        ReturnWhen::FirstError,
        ReturnWhen::AllCompleted,
    ] {
        let r = wait_within(&[], None, return_when);
        assert!(r.done.is_empty() && r.not_done.is_empty());
    }
}

#[test]
fn first_completed() {
    let (p1, f1) = running();
    let (_p2, f2) = running(); // never completes during the test
    let (go, rx) = mpsc::channel::<()>();
    let helper = thread::spawn(move || {
        rx.recv().unwrap();
        p1.set_result(value(42));
    });
    let (a, b) = (f1.clone(), f2.clone());
    let r = within(move || {
        go.send(()).unwrap();
        wait(&[a, b], None, ReturnWhen::FirstCompleted)
    });
    assert_eq!(ids(&r.done), [f1.id()]);
    assert_eq!(ids(&r.not_done), [f2.id()]);
    helper.join().unwrap();
}

#[test]
fn first_completed_some_already_completed() {
    let (c, s) = (cancelled(), succeeded());
    let (_p, pending) = running();
    let r = wait_within(
        &[c.clone(), s.clone(), pending.clone()],
        None,
        ReturnWhen::FirstCompleted,
    );
    assert_eq!(ids(&r.done), [c.id(), s.id()]);
    assert_eq!(ids(&r.not_done), [pending.id()]);
}

#[test]
fn first_completed_wakes_on_cancel_while_pending() {
    // The fix over CPython: the cancel alone ends the wait, no executor involved.
    let (p, f) = promise();
    let (_p2, other) = running();
    let canceller = f.clone();
    let (go, rx) = mpsc::channel::<()>();
    let helper = thread::spawn(move || {
        rx.recv().unwrap();
        assert!(canceller.cancel());
    });
    let (a, b) = (f.clone(), other.clone());
    let r = within(move || {
        go.send(()).unwrap();
        wait(&[a, b], None, ReturnWhen::FirstCompleted)
    });
    assert_eq!(ids(&r.done), [f.id()]);
    assert!(r.done[0].is_cancelled());
    assert_eq!(ids(&r.not_done), [other.id()]);
    assert!(!p.set_running_or_notify_cancel());
    helper.join().unwrap();
}

#[test]
fn first_error() {
    let (p1, f1) = running();
    let (p2, f2) = running();
    let (_p3, f3) = running(); // never completes during the test
    // f1 finishes before f2 fails.
    let helper = thread::spawn(move || {
        p1.set_result(value(42));
        p2.set_error(trap());
    });
    let r = wait_within(
        &[f1.clone(), f2.clone(), f3.clone()],
        None,
        ReturnWhen::FirstError,
    );
    assert_eq!(ids(&r.done), [f1.id(), f2.id()]);
    assert_eq!(ids(&r.not_done), [f3.id()]);
    helper.join().unwrap();
}

#[test]
fn first_error_some_already_complete() {
    let (s, c1, c2) = (succeeded(), cancelled(), cancelled());
    let (p1, f1) = running();
    let (_p2, f2) = running(); // never completes during the test
    let helper = thread::spawn(move || p1.set_error(trap()));
    let r = wait_within(
        &[s.clone(), c1.clone(), c2.clone(), f1.clone(), f2.clone()],
        None,
        ReturnWhen::FirstError,
    );
    // CPython leaves its not-yet-notified CANCELLED_FUTURE in `not_done`; here it is done.
    assert_eq!(ids(&r.done), [s.id(), c1.id(), c2.id(), f1.id()]);
    assert_eq!(ids(&r.not_done), [f2.id()]);
    helper.join().unwrap();
}

#[test]
fn first_error_one_already_failed() {
    let e = failed();
    let (_p, f1) = running();
    let r = wait_within(&[e.clone(), f1.clone()], None, ReturnWhen::FirstError);
    assert_eq!(ids(&r.done), [e.id()]);
    assert_eq!(ids(&r.not_done), [f1.id()]);
}

#[test]
fn first_error_does_not_count_a_cancelled_future_as_an_error() {
    let (c, s) = (cancelled(), succeeded());
    let (_p, pending) = running();
    let start = Instant::now();
    let r = wait_within(
        &[c.clone(), s.clone(), pending.clone()],
        Some(SHORT),
        ReturnWhen::FirstError,
    );
    // It waited for `pending` until the timeout rather than returning on the cancelled one.
    assert!(start.elapsed() >= SHORT);
    assert_eq!(ids(&r.done), [c.id(), s.id()]);
    assert_eq!(ids(&r.not_done), [pending.id()]);
}

#[test]
fn first_error_without_errors_waits_for_all() {
    let (p1, f1) = running();
    let (p2, f2) = running();
    let helper = thread::spawn(move || {
        p1.set_result(value(1));
        p2.set_result(value(2));
    });
    let r = wait_within(&[f1.clone(), f2.clone()], None, ReturnWhen::FirstError);
    assert_eq!(ids(&r.done), [f1.id(), f2.id()]);
    assert!(r.not_done.is_empty());
    helper.join().unwrap();
}

#[test]
fn all_completed() {
    let (s, c, e) = (succeeded(), cancelled(), failed());
    let (p1, f1) = running();
    let (p2, f2) = promise();
    let helper = thread::spawn(move || {
        p1.set_error(TaskError::Failed {
            message: "division by zero".into(),
            value: String::new(),
        });
        assert!(p2.set_running_or_notify_cancel());
        p2.set_result(value(42));
    });
    let all = [s, c, e, f1, f2];
    let r = wait_within(&all, None, ReturnWhen::AllCompleted);
    assert_eq!(ids(&r.done), ids(&all));
    assert!(r.not_done.is_empty());
    helper.join().unwrap();
}

#[test]
fn all_completed_keeps_input_order() {
    let promises_and_futures: Vec<_> = (0..5).map(|_| running()).collect();
    let futures: Vec<TaskFuture> = promises_and_futures
        .iter()
        .map(|(_, f)| f.clone())
        .collect();
    // Completed last to first.
    let helper = thread::spawn(move || {
        for (n, (p, _)) in promises_and_futures.into_iter().enumerate().rev() {
            p.set_result(value(n as u32));
        }
    });
    let r = wait_within(&futures, None, ReturnWhen::AllCompleted);
    assert_eq!(ids(&r.done), ids(&futures));
    helper.join().unwrap();
}

#[test]
fn all_completed_wakes_on_cancel_while_pending() {
    let (_p, f) = promise();
    let s = succeeded();
    let canceller = f.clone();
    let helper = thread::spawn(move || assert!(canceller.cancel()));
    let r = wait_within(&[s.clone(), f.clone()], None, ReturnWhen::AllCompleted);
    assert_eq!(ids(&r.done), [s.id(), f.id()]);
    helper.join().unwrap();
}

#[test]
fn timeout() {
    let (c, e, s) = (cancelled(), failed(), succeeded());
    let (_p, pending) = running(); // never completes during the test
    let start = Instant::now();
    let r = wait_within(
        &[c.clone(), e.clone(), s.clone(), pending.clone()],
        Some(SHORT),
        ReturnWhen::AllCompleted,
    );
    assert!(start.elapsed() >= SHORT);
    assert_eq!(ids(&r.done), [c.id(), e.id(), s.id()]);
    assert_eq!(ids(&r.not_done), [pending.id()]);
    // Timing out did not touch the task.
    assert!(pending.is_running());
}

#[test]
fn zero_timeout_only_looks() {
    let s = succeeded();
    let (_p, pending) = promise();
    for return_when in [ReturnWhen::FirstError, ReturnWhen::AllCompleted] {
        let r = wait_within(
            &[pending.clone(), s.clone()],
            Some(Duration::ZERO),
            return_when,
        );
        assert_eq!(ids(&r.done), [s.id()]);
        assert_eq!(ids(&r.not_done), [pending.id()]);
    }
}

#[test]
fn futures_can_be_waited_on_again_after_a_timeout() {
    let (p, f) = running();
    let r = wait_within(
        std::slice::from_ref(&f),
        Some(Duration::ZERO),
        ReturnWhen::AllCompleted,
    );
    assert_eq!(ids(&r.not_done), [f.id()]);
    let helper = thread::spawn(move || p.set_result(value(1)));
    let r = wait_within(std::slice::from_ref(&f), None, ReturnWhen::AllCompleted);
    assert_eq!(ids(&r.done), [f.id()]);
    helper.join().unwrap();
}

#[test]
fn pending_calls_race() {
    // bpo-14406: many futures completed from several threads at once while waiting on all.
    let mut promises = Vec::new();
    let mut futures = Vec::new();
    for _ in 0..100 {
        let (p, f) = promise();
        promises.push(p);
        futures.push(f);
    }
    let mut helpers = Vec::new();
    for chunk in 0..4 {
        let mine: Vec<_> = promises.drain(..25).collect();
        helpers.push(thread::spawn(move || {
            for p in mine {
                assert!(p.set_running_or_notify_cancel());
                p.set_result(value(chunk));
            }
        }));
    }
    let r = wait_within(&futures, None, ReturnWhen::AllCompleted);
    assert_eq!(r.done.len(), 100);
    assert!(r.not_done.is_empty());
    for h in helpers {
        h.join().unwrap();
    }
}
