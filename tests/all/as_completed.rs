//! Ported from CPython's Lib/test/test_concurrent_futures/test_as_completed.py (behaviour,
//! rewritten for wasmpool).
//!
//! CPython's tests submit work to an executor; here promises stand in for it, completed from
//! helper threads. A timeout is an `Err(WaitTimeout)` item rather than an exception, and a
//! future cancelled while pending is yielded at once (CPython waits for an executor to notice).

use std::collections::HashSet;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use wasmpool::{Promise, TaskFuture, WaitTimeout, as_completed, promise};

use crate::futures::{SHORT, cancelled, failed, ids, running, succeeded, value, within};

/// Collects everything the iterator yields (on its own thread, see [`within`]).
fn collect_within(
    futures: &[TaskFuture],
    timeout: Option<Duration>,
) -> Vec<Result<TaskFuture, WaitTimeout>> {
    let futures = futures.to_vec();
    within(move || as_completed(&futures, timeout).collect())
}

/// The ids of the yielded futures, and the timeouts yielded (in order).
fn split(items: &[Result<TaskFuture, WaitTimeout>]) -> (Vec<u64>, Vec<WaitTimeout>) {
    let futures = items
        .iter()
        .filter_map(|i| i.as_ref().ok())
        .map(TaskFuture::id)
        .collect();
    let timeouts = items
        .iter()
        .filter_map(|i| i.as_ref().err())
        .copied()
        .collect();
    (futures, timeouts)
}

#[test]
fn no_timeout() {
    let (c, e, s) = (cancelled(), failed(), succeeded());
    let (p1, f1) = running();
    let (p2, f2) = running();
    let helper = thread::spawn(move || {
        p1.set_result(value(42));
        p2.set_result(value(42));
    });
    let all = [c, e, s, f1, f2];
    let items = collect_within(&all, None);
    let (yielded, timeouts) = split(&items);
    assert!(timeouts.is_empty());
    assert_eq!(
        yielded.iter().collect::<HashSet<_>>(),
        ids(&all).iter().collect::<HashSet<_>>()
    );
    assert_eq!(yielded.len(), all.len());
    helper.join().unwrap();
}

#[test]
fn done_first_in_input_order_then_in_completion_order() {
    let (p1, f1) = running();
    let (p2, f2) = running();
    let (p3, f3) = promise();
    let (s, c) = (succeeded(), cancelled());
    // Completed in the order f3, f1, f2, once the iteration has started.
    let (go, rx) = mpsc::channel::<()>();
    let helper = thread::spawn(move || {
        rx.recv().unwrap();
        assert!(p3.set_running_or_notify_cancel());
        p3.set_result(value(3));
        p1.set_result(value(1));
        p2.set_result(value(2));
    });
    let input = [f1.clone(), s.clone(), f2.clone(), c.clone(), f3.clone()];
    let items: Vec<_> = within(move || {
        let it = as_completed(&input, None);
        go.send(()).unwrap();
        it.collect()
    });
    assert_eq!(
        split(&items),
        (vec![s.id(), c.id(), f3.id(), f1.id(), f2.id()], vec![])
    );
    helper.join().unwrap();
}

#[test]
fn yields_each_future_as_it_completes() {
    // Lock-step: each future is completed only after the previous one was yielded.
    let (promises, futures): (Vec<Promise>, Vec<TaskFuture>) = (0..4).map(|_| running()).unzip();
    let (next_tx, next_rx) = mpsc::channel::<()>();
    let helper = thread::spawn(move || {
        for (n, p) in promises.into_iter().enumerate().rev() {
            next_rx.recv().unwrap();
            p.set_result(value(n as u32));
        }
    });
    let expected: Vec<u64> = ids(&futures).into_iter().rev().collect();
    let yielded = within(move || {
        let mut yielded = Vec::new();
        let mut it = as_completed(&futures, None);
        for _ in 0..futures.len() {
            next_tx.send(()).unwrap();
            yielded.push(it.next().unwrap().unwrap().id());
        }
        assert!(it.next().is_none());
        yielded
    });
    assert_eq!(yielded, expected);
    helper.join().unwrap();
}

#[test]
fn future_times_out() {
    let already_completed = [cancelled(), failed(), succeeded()];
    for timeout in [Duration::ZERO, SHORT] {
        let (_p, never) = running();
        let mut futures = already_completed.to_vec();
        futures.push(never.clone());
        let start = Instant::now();
        let items = collect_within(&futures, Some(timeout));
        // The overall timeout counts from the call.
        assert!(start.elapsed() >= timeout);
        assert_eq!(
            split(&items),
            (ids(&already_completed), vec![WaitTimeout(timeout)])
        );
        // The error comes last, and the task was not touched.
        assert!(items.last().unwrap().is_err());
        assert!(never.is_running());
    }
}

#[test]
fn ends_after_the_timeout() {
    let (_p, never) = running();
    let mut it = as_completed(std::slice::from_ref(&never), Some(Duration::ZERO));
    assert_eq!(
        it.next().map(|i| i.map(|f| f.id())),
        Some(Err(WaitTimeout(Duration::ZERO)))
    );
    assert!(it.next().is_none());
    assert!(it.next().is_none());
}

#[test]
fn timeout_error_message() {
    let (_p, pending) = promise();
    let (_r, running) = running();
    let items = collect_within(
        &[cancelled(), pending, running, succeeded()],
        Some(Duration::ZERO),
    );
    let error = items.into_iter().find_map(Result::err).expect("a timeout");
    assert_eq!(
        error.to_string(),
        "wait timed out after 0ns; the task is still going"
    );
}

#[test]
fn duplicate_futures() {
    // bpo-20367
    let (p, f) = running();
    let helper = thread::spawn(move || p.set_result(value(1)));
    let items = collect_within(&[f.clone(), f.clone(), f.clone()], None);
    assert_eq!(split(&items), (vec![f.id()], vec![]));
    helper.join().unwrap();

    let s = succeeded();
    let items = collect_within(&[s.clone(), s.clone()], None);
    assert_eq!(split(&items), (vec![s.id()], vec![]));
}

#[test]
fn empty_input() {
    assert!(as_completed(&[], None).next().is_none());
    assert!(as_completed(&[], Some(Duration::ZERO)).next().is_none());
}

#[test]
fn yields_a_future_cancelled_while_pending() {
    // The fix over CPython: the cancel alone makes it yield, no executor involved.
    let (p, f) = promise();
    let canceller = f.clone();
    let (go, rx) = mpsc::channel::<()>();
    let helper = thread::spawn(move || {
        rx.recv().unwrap();
        assert!(canceller.cancel());
    });
    let waited_on = f.clone();
    let first = within(move || {
        let mut it = as_completed(&[waited_on], None);
        go.send(()).unwrap();
        it.next()
    });
    let first = first.unwrap().unwrap();
    assert_eq!(first.id(), f.id());
    assert!(first.is_cancelled());
    assert!(!p.set_running_or_notify_cancel());
    helper.join().unwrap();
}

#[test]
fn completes_after_timeouts_and_early_drops() {
    // bpo-14406 (the iterator lets go of what it no longer needs): an iterator that timed out,
    // and one dropped before the end, leave the futures usable by later waits.
    let (promises, futures): (Vec<Promise>, Vec<TaskFuture>) = (0..8).map(|_| running()).unzip();
    let mut all = futures.clone();
    all.push(cancelled());
    all.push(succeeded());

    let items = collect_within(&all, Some(Duration::ZERO));
    assert_eq!(split(&items).1, [WaitTimeout(Duration::ZERO)]);
    let mut it = as_completed(&all, None);
    assert!(it.next().unwrap().is_ok());
    drop(it);

    let mut promises = promises.into_iter();
    promises.next().unwrap().set_result(value(0));
    let helper = thread::spawn(move || {
        for p in promises {
            p.set_result(value(1));
        }
    });
    let items = collect_within(&all, None);
    assert_eq!(split(&items).0.len(), all.len());
    helper.join().unwrap();
}
