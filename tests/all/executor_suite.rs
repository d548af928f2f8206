//! The executor test suite, written once and run against every pool (the way CPython's
//! `test_concurrent_futures` mixes executor tests into each pool's test case).
//!
//! Ported in part from CPython's Lib/test/test_concurrent_futures/executor.py and
//! test_shutdown.py (behaviour, rewritten for wasmpool).
//!
//! Each pool states how many tasks it hands to a worker at once (`handed_per_worker`): a
//! handed task counts as running and can no longer be cancelled. The thread pool hands one
//! (a worker takes a task when it is free); the process pool pipelines two per worker, as
//! CPython's process pool queues calls ahead of its workers. The cancellation tests check
//! that exactly the tasks not handed yet are cancelled.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmpool::{Executor, FutureState, SubmitError, TaskError, TaskErrorKind, TaskFuture, Val};

use crate::common::{SOON, call, fixtures, seed, until_started};

/// Runs the suite against the executor type made by `$make(workers)`.
macro_rules! executor_suite {
    ($pool:ident, $make:expr, handed_per_worker = $handed:expr) => {
        mod $pool {
            use super::*;
            fn make(workers: usize) -> impl Executor + 'static {
                ($make)(workers)
            }
            #[test]
            fn submit_returns_the_value() {
                super::submit_returns_the_value(make(2));
            }
            #[test]
            fn map_yields_in_input_order() {
                super::map_yields_in_input_order(make(2));
            }
            #[test]
            fn map_yields_errors_where_they_occur() {
                super::map_yields_errors_where_they_occur(make(2));
            }
            #[test]
            fn map_buffered_keeps_few_tasks_in_flight() {
                super::map_buffered_keeps_few_tasks_in_flight(make(2));
            }
            #[test]
            fn dropping_a_map_cancels_what_has_not_started() {
                super::dropping_a_map_cancels_what_has_not_started(make(1), $handed);
            }
            #[test]
            fn submit_after_shutdown_is_refused() {
                super::submit_after_shutdown_is_refused(make(2));
            }
            #[test]
            fn shutdown_waits_for_queued_work() {
                super::shutdown_waits_for_queued_work(make(2));
            }
            #[test]
            fn shutdown_cancel_futures_cancels_the_backlog() {
                super::shutdown_cancel_futures_cancels_the_backlog(make(1), $handed);
            }
            #[test]
            fn shutdown_without_wait_still_finishes_the_work() {
                super::shutdown_without_wait_still_finishes_the_work(make(2));
            }
            #[test]
            fn cancel_only_while_pending_two_workers_eight_of_ten() {
                super::cancel_only_while_pending_two_workers_eight_of_ten(make(2), $handed);
            }
            #[test]
            fn callbacks_run_exactly_once_for_every_outcome() {
                super::callbacks_run_exactly_once_for_every_outcome(make(2));
            }
            #[test]
            fn many_tasks_all_resolve() {
                super::many_tasks_all_resolve(make(2));
            }
            #[test]
            fn map_chunked_yields_in_input_order_across_components() {
                super::map_chunked_yields_in_input_order_across_components(make(2));
            }
            #[test]
            fn a_batch_runs_on_one_worker_and_its_queued_calls_can_be_cancelled() {
                super::a_batch_runs_on_one_worker_and_its_queued_calls_can_be_cancelled(
                    make(1),
                    $handed,
                );
            }
            #[test]
            fn shutdown_cancel_futures_cancels_the_batch_members_not_started() {
                super::shutdown_cancel_futures_cancels_the_batch_members_not_started(make(1));
            }
            #[test]
            fn shutdown_from_a_callback_does_not_deadlock() {
                super::shutdown_from_a_callback_does_not_deadlock(make(1));
            }
        }
    };
}

executor_suite!(
    thread_pool,
    |n| wasmpool::ThreadPoolExecutor::builder()
        .workers(n)
        .output(wasmpool::OutputMode::Discard)
        .build()
        .expect("thread pool"),
    handed_per_worker = 1
);

// The same rules hold when callers help: `result()` may run a queued task itself, but
// nothing the suite checks (cancellation, shutdown, callbacks, map) may tell.
executor_suite!(
    thread_pool_callers_help,
    |n| wasmpool::ThreadPoolExecutor::builder()
        .workers(n)
        .output(wasmpool::OutputMode::Discard)
        .caller_helps(true)
        .build()
        .expect("thread pool"),
    handed_per_worker = 1
);

executor_suite!(
    process_pool,
    |n| wasmpool::ProcessPoolExecutor::builder()
        .workers(n)
        .worker_program(env!("CARGO_BIN_EXE_wasmpool"))
        .output(wasmpool::OutputMode::Discard)
        .build()
        .expect("process pool"),
    handed_per_worker = 2
);

/// A task that keeps its worker busy until the test releases it: the fixture's
/// `loop-forever`, stopped with [`TaskFuture::abort`]. Dropping it aborts the task too, so
/// that a failing assertion cannot leave the pool's drop waiting for it forever.
struct Blocker(TaskFuture);

impl Blocker {
    /// Submits `loop-forever()` and waits until a worker runs it.
    fn start(pool: &impl Executor) -> Blocker {
        let blocker = Blocker(pool.submit(call(fixtures(), "loop-forever()")).unwrap());
        until_started(&blocker);
        blocker
    }

    /// Stops the task, freeing its worker; it ends cancelled (it never returns a value).
    fn release(&self) {
        assert!(
            self.0.abort(),
            "the blocker finished on its own: {:?}",
            self.0
        );
        assert_eq!(self.0.result(), Err(TaskError::Cancelled));
    }
}

impl Deref for Blocker {
    type Target = TaskFuture;
    fn deref(&self) -> &TaskFuture {
        &self.0
    }
}

impl Drop for Blocker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn submit_returns_the_value(pool: impl Executor) {
    let f = pool.submit(call(seed(), "sleep-task(1)")).unwrap();
    assert_eq!(f.result().unwrap().as_f64(), Some(0.1));
    assert!(f.is_done() && !f.is_cancelled() && !f.is_running());
    let f = pool.submit(call(fixtures(), "fib(15)")).unwrap();
    assert_eq!(f.result().unwrap().as_i64(), Some(610));
}

fn map_yields_in_input_order(pool: impl Executor) {
    // Longer tasks first: they finish last, but map still yields in input order.
    let calls: Vec<_> = [5u32, 4, 3, 2, 1]
        .iter()
        .map(|n| seed().call("sleep-task", [Val::U32(*n)]).unwrap())
        .collect();
    let results: Vec<f64> = pool
        .map(calls)
        .unwrap()
        .map(|r| r.unwrap().as_f64().unwrap())
        .collect();
    assert_eq!(results, [0.5, 0.4, 0.3, 0.2, 0.1]);
}

fn map_yields_errors_where_they_occur(pool: impl Executor) {
    let calls: Vec<_> = (1..=7)
        .map(|n| call(seed(), &format!("check-task({n})")))
        .collect();
    let outcomes: Vec<_> = pool.map(calls).unwrap().collect();
    assert_eq!(outcomes.len(), 7);
    for (i, outcome) in outcomes.iter().enumerate() {
        let n = i + 1;
        if n == 5 {
            let err = outcome.as_ref().unwrap_err();
            assert_eq!(err.to_string(), "the value 5 is no good");
        } else {
            assert_eq!(outcome.as_ref().unwrap().as_f64(), Some(n as f64 / 10.0));
        }
    }
    // Collecting into a Result stops at the first error, like iterating Python's map.
    let calls: Vec<_> = (1..=7)
        .map(|n| call(seed(), &format!("check-task({n})")))
        .collect();
    let err = pool
        .map(calls)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_err();
    assert_eq!(err.kind(), TaskErrorKind::Failed);
}

fn map_buffered_keeps_few_tasks_in_flight(pool: impl Executor) {
    // An endless input: only a lazy, bounded map can take a prefix of it.
    let submitted = Arc::new(AtomicUsize::new(0));
    let counter = submitted.clone();
    let calls = (0u32..).map(move |n| {
        counter.fetch_add(1, Ordering::SeqCst);
        seed().call("quick-task", [Val::U32(n)]).unwrap()
    });
    let mut results = pool.map_buffered(calls, 4);
    for expected in 0..20 {
        let v = results.next().unwrap().unwrap();
        assert_eq!(v.as_i64(), Some(expected));
        // Yielded `expected + 1`; at most 4 more submitted ahead.
        assert!(submitted.load(Ordering::SeqCst) <= expected as usize + 1 + 4);
    }
}

fn dropping_a_map_cancels_what_has_not_started(pool: impl Executor, handed: usize) {
    // The one worker spins until released: nothing of the map can finish meanwhile.
    let blocker = Blocker::start(&pool);
    let calls: Vec<_> = (0..10)
        .map(|n| call(seed(), &format!("quick-task({n})")))
        .collect();
    let map = pool.map(calls).unwrap();
    let futures: Vec<_> = map.in_flight().cloned().collect();
    assert_eq!(futures.len(), 10);
    // The one worker was busy: of the ten, only those its pipeline took (none in the
    // thread pool) have started; dropping the map cancels all the others, and the pool is
    // free for new work right after the blocker and those.
    let started = handed - 1;
    let pending: Vec<bool> = futures
        .iter()
        .map(|f| f.state() == FutureState::Pending)
        .collect();
    assert_eq!(pending.iter().filter(|p| !**p).count(), started);
    drop(map);
    for (f, was_pending) in futures.iter().zip(&pending) {
        assert_eq!(f.is_cancelled(), *was_pending, "{f:?}");
    }
    assert!(blocker.is_running(), "{:?}", *blocker);
    blocker.release();
    for (n, f) in futures[..started].iter().enumerate() {
        assert_eq!(f.result().unwrap().as_i64(), Some(n as i64));
    }
    let after = pool.submit(call(seed(), "quick-task(99)")).unwrap();
    assert_eq!(after.result().unwrap().as_i64(), Some(99));
}

fn map_chunked_yields_in_input_order_across_components(pool: impl Executor) {
    // Runs of 3 calls alternate between the two components, so chunks of 4 mix them.
    let calls: Vec<_> = (0..60)
        .map(|n| match (n / 3) % 2 {
            0 => call(fixtures(), &format!("add({n}, 1000)")),
            _ => call(seed(), &format!("quick-task({n})")),
        })
        .collect();
    let values: Vec<i64> = pool
        .map_chunked(calls, 4)
        .unwrap()
        .map(|r| r.unwrap().as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (0..60)
        .map(|n| if (n / 3) % 2 == 0 { n + 1000 } else { n })
        .collect();
    assert_eq!(values, expected);
}

fn a_batch_runs_on_one_worker_and_its_queued_calls_can_be_cancelled(
    pool: impl Executor,
    handed: usize,
) {
    // The one worker is busy, and its pipeline is full: the batch waits in the queue.
    let blocker = Blocker::start(&pool);
    let fillers: Vec<_> = (1..handed)
        .map(|_| pool.submit(call(fixtures(), "noop()")).unwrap())
        .collect();
    let calls: Vec<_> = (0..6)
        .map(|n| call(seed(), &format!("quick-task({n})")))
        .collect();
    let batch = pool.submit_batch(calls).unwrap();
    assert!(batch.iter().all(|f| f.state() == FutureState::Pending));
    assert!(batch[1].cancel() && batch[4].cancel());
    assert!(blocker.is_running(), "{:?}", *blocker);
    blocker.release();
    for (n, f) in batch.iter().enumerate() {
        match n {
            1 | 4 => assert_eq!(f.result(), Err(TaskError::Cancelled)),
            _ => assert_eq!(f.result().unwrap().as_i64(), Some(n as i64)),
        }
    }
    let workers: Vec<String> = [0, 2, 3, 5]
        .iter()
        .map(|&n| batch[n].report().expect("a report").worker)
        .collect();
    assert!(workers.iter().all(|w| *w == workers[0]), "{workers:?}");
    assert!(fillers.iter().all(|f| f.result().is_ok()));
}

fn shutdown_cancel_futures_cancels_the_batch_members_not_started(pool: impl Executor) {
    let mut calls = vec![call(fixtures(), "loop-forever()")];
    calls.extend((0..4).map(|n| call(seed(), &format!("quick-task({n})"))));
    let batch = pool.submit_batch(calls).unwrap();
    let first = Blocker(batch[0].clone());
    until_started(&first);
    // The thread pool starts each member when its turn comes; the process pool hands the
    // whole batch to the worker, which counts as started. Nothing moves on while the first
    // member spins.
    let pending: Vec<bool> = batch
        .iter()
        .map(|f| f.state() == FutureState::Pending)
        .collect();
    // Cancel (without waiting), then let the worker go on past the first member.
    pool.shutdown(false, true);
    assert!(first.is_running(), "{:?}", *first);
    first.release();
    pool.shutdown(true, true);
    for (n, (f, was_pending)) in batch[1..].iter().zip(&pending[1..]).enumerate() {
        if *was_pending {
            assert_eq!(f.result(), Err(TaskError::Cancelled), "{f:?}");
        } else {
            assert_eq!(f.result().unwrap().as_i64(), Some(n as i64), "{f:?}");
        }
    }
}

fn submit_after_shutdown_is_refused(pool: impl Executor) {
    pool.shutdown(true, false);
    let err = pool.submit(call(seed(), "noop()")).unwrap_err();
    assert_eq!(err, SubmitError::Shutdown);
    let err = pool.submit_batch(vec![call(seed(), "noop()")]).unwrap_err();
    assert_eq!(err, SubmitError::Shutdown);
    assert!(pool.map(vec![call(seed(), "noop()")]).is_err());
    pool.shutdown(true, false); // twice is harmless
}

fn shutdown_waits_for_queued_work(pool: impl Executor) {
    let futures: Vec<_> = (0..20)
        .map(|_| pool.submit(call(fixtures(), "sleep-ms(5)")).unwrap())
        .collect();
    pool.shutdown(true, false);
    for f in &futures {
        assert!(f.is_done(), "{f:?}");
        assert_eq!(f.result().unwrap().as_i64(), Some(5));
    }
}

fn shutdown_cancel_futures_cancels_the_backlog(pool: impl Executor, handed: usize) {
    let running = Blocker::start(&pool);
    let queued: Vec<_> = (0..10)
        .map(|n| {
            pool.submit(call(seed(), &format!("quick-task({n})")))
                .unwrap()
        })
        .collect();
    // What the worker's pipeline took counts as running; the backlog behind it is pending.
    let (taken, backlog) = queued.split_at(handed - 1);
    for f in taken {
        until_started(f);
    }
    assert!(backlog.iter().all(|f| f.state() == FutureState::Pending));
    std::thread::scope(|s| {
        // Should anything below fail, release the worker so that the shutdown can return.
        let _release = Blocker(running.0.clone());
        let shutdown = s.spawn(|| pool.shutdown(true, true));
        // The shutdown cancels the backlog at once ...
        for f in backlog {
            assert_eq!(
                f.result_timeout(SOON),
                Ok(Err(TaskError::Cancelled)),
                "{f:?}"
            );
        }
        // ... and then waits for the running task, which only ends when released.
        assert!(
            !shutdown.is_finished(),
            "shutdown(wait) returned before the work was done"
        );
        assert!(running.is_running(), "{:?}", *running);
        running.release();
        shutdown.join().expect("shutdown returns");
    });
    for (n, f) in taken.iter().enumerate() {
        assert_eq!(f.result().unwrap().as_i64(), Some(n as i64), "{f:?}");
    }
    for f in backlog {
        assert!(f.is_cancelled(), "{f:?}");
    }
}

fn shutdown_without_wait_still_finishes_the_work(pool: impl Executor) {
    let futures: Vec<_> = (0..6)
        .map(|n| {
            pool.submit(call(seed(), &format!("quick-task({n})")))
                .unwrap()
        })
        .collect();
    pool.shutdown(false, false);
    for (n, f) in futures.iter().enumerate() {
        assert_eq!(
            f.result_timeout(SOON).expect("resolves").unwrap().as_i64(),
            Some(n as i64)
        );
    }
}

fn cancel_only_while_pending_two_workers_eight_of_ten(pool: impl Executor, handed: usize) {
    // The reference's "Canceling Tasks": ten tasks on two workers; once the first ones have
    // started, cancel all ten in reverse order: eight succeed (in the thread pool; in
    // general, exactly those not handed to a worker yet: 10 - 2 * handed). The reference's
    // first tasks sleep half a second, which would have to outlast this test's steps: here
    // the tasks the workers take spin until released, the rest are the reference's.
    let started = 2 * handed;
    let blockers: Vec<Blocker> = (0..started)
        .map(|_| Blocker(pool.submit(call(fixtures(), "loop-forever()")).unwrap()))
        .collect();
    let mut tasks: Vec<TaskFuture> = blockers.iter().map(|b| b.0.clone()).collect();
    tasks.extend((1..=10 - started as u32).rev().map(|n| {
        pool.submit(call(seed(), &format!("labeled-task({n})")))
            .unwrap()
    }));
    for f in &tasks[..started] {
        until_started(f);
    }
    let pending: Vec<bool> = tasks
        .iter()
        .map(|f| f.state() == FutureState::Pending)
        .collect();
    let cancelled: Vec<bool> = tasks.iter().rev().map(|f| f.cancel()).collect();
    let cancelled: Vec<bool> = cancelled.into_iter().rev().collect();
    assert_eq!(
        cancelled, pending,
        "exactly the pending tasks are cancelled"
    );
    assert_eq!(cancelled.iter().filter(|c| **c).count(), 10 - started);
    assert!(tasks[started..].iter().all(|f| f.is_cancelled()));
    assert!(tasks[..started].iter().all(|f| f.is_running()));
    for blocker in &blockers {
        blocker.release();
    }
    // The workers are free again, and the cancelled tasks never ran.
    let f = pool.submit(call(seed(), "labeled-task(1)")).unwrap();
    assert_eq!(f.result().unwrap().as_f64(), Some(0.1));
    assert!(tasks[started..].iter().all(|f| f.report().is_none()));
}

fn callbacks_run_exactly_once_for_every_outcome(pool: impl Executor) {
    let calls = [
        "add(1, 2)",
        "trap-unreachable()",
        "fail-with(4)",
        "sleep-ms(1)",
    ];
    let count = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = crossbeam_channel::unbounded();
    for c in calls {
        let f = pool.submit(call(fixtures(), c)).unwrap();
        let (count, tx) = (count.clone(), tx.clone());
        f.add_done_callback(move |f| {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(f.error().map(|e| e.kind()));
        });
    }
    let mut kinds: Vec<_> = (0..calls.len())
        .map(|_| rx.recv_timeout(SOON).expect("callback ran"))
        .collect();
    kinds.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(
        kinds,
        [
            None,
            None,
            Some(TaskErrorKind::Failed),
            Some(TaskErrorKind::Trap)
        ]
    );
    pool.shutdown(true, false);
    assert_eq!(count.load(Ordering::SeqCst), calls.len());
}

fn many_tasks_all_resolve(pool: impl Executor) {
    let futures: Vec<_> = (0..500)
        .map(|n| {
            pool.submit(call(seed(), &format!("quick-task({n})")))
                .unwrap()
        })
        .collect();
    for (n, f) in futures.iter().enumerate() {
        assert_eq!(f.result().unwrap().as_i64(), Some(n as i64));
    }
}

fn shutdown_from_a_callback_does_not_deadlock(pool: impl Executor + 'static) {
    let pool = Arc::new(pool);
    let (tx, rx) = crossbeam_channel::bounded(1);
    let f = pool.submit(call(seed(), "quick-task(1)")).unwrap();
    let inner = pool.clone();
    f.add_done_callback(move |_| {
        inner.shutdown(true, false);
        let _ = tx.send(());
    });
    rx.recv_timeout(SOON)
        .expect("callback finished its shutdown");
    assert_eq!(
        pool.submit(call(seed(), "noop()")).unwrap_err(),
        SubmitError::Shutdown
    );
}
