//! A thread pool whose callers help (`ThreadPoolBuilder::caller_helps`): `result()` runs a
//! task that no worker has taken, on the calling thread; nothing else ever does.
//!
//! Each test keeps the pool's one worker busy with a task that spins until aborted, so
//! which thread runs a task is decided by the test, not by timing.

use std::sync::mpsc;
use std::time::Duration;

use wasmpool::{
    BuildError, Executor, FutureState, OutputMode, TaskError, TaskFuture, ThreadPoolExecutor,
};

use crate::common::{DropUnlessFailed, SOON, call, fixtures, until_started};

fn helping_pool() -> DropUnlessFailed<ThreadPoolExecutor> {
    let pool = ThreadPoolExecutor::builder()
        .workers(1)
        .output(OutputMode::Capture { limit: 1024 })
        .caller_helps(true)
        .build()
        .expect("thread pool");
    DropUnlessFailed(Some(pool))
}

/// Occupies the pool's one worker until dropped (then aborts it).
struct Busy(TaskFuture);

impl Busy {
    fn start(pool: &ThreadPoolExecutor) -> Busy {
        let busy = Busy(pool.submit(call(fixtures(), "loop-forever()")).unwrap());
        until_started(&busy.0);
        busy
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `future.result()` on a thread of its own, which must return within [`SOON`] (were it to
/// wait for the busy worker instead of helping, the test fails rather than hangs).
fn helped_result(future: &TaskFuture) -> Result<wasmpool::TaskValue, TaskError> {
    let (tx, rx) = mpsc::channel();
    let future = future.clone();
    std::thread::spawn(move || tx.send(future.result()));
    rx.recv_timeout(SOON)
        .expect("result() ran the task and returned")
}

#[test]
fn a_waiting_caller_runs_the_task_no_worker_took() {
    let pool = helping_pool();
    let busy = Busy::start(&pool);
    let f = pool
        .submit(call(fixtures(), r#"print-lines(2, "hi")"#))
        .unwrap();
    assert_eq!(f.state(), FutureState::Pending);
    // The one worker spins: only a caller can run the task, and `result()` returns.
    assert!(helped_result(&f).is_ok(), "{:?}", f.result());
    let report = f.report().expect("a finished task has a report");
    assert_eq!(report.worker, "worker-caller");
    assert_eq!(report.pid, std::process::id());
    // Its output went to its report, as a worker's would.
    assert_eq!(report.stdout.as_deref(), Some("hi\nhi\n"));
    assert!(busy.0.is_running(), "the worker's task was left alone");
    drop(busy);
    // A task a worker takes is the worker's.
    let g = pool.submit(call(fixtures(), "add(1, 2)")).unwrap();
    until_started(&g);
    assert_eq!(g.result().unwrap().as_i64(), Some(3));
    assert_eq!(g.report().unwrap().worker, "worker-1");
}

#[test]
fn result_timeout_and_batches_never_help() {
    let pool = helping_pool();
    let busy = Busy::start(&pool);
    let single = pool.submit(call(fixtures(), "add(1, 2)")).unwrap();
    let batch = pool
        .submit_batch(vec![call(fixtures(), "add(3, 4)")])
        .unwrap();
    assert!(single.result_timeout(Duration::from_millis(50)).is_err());
    assert_eq!(single.state(), FutureState::Pending);
    // A batch is one worker's, in order: its member waits for the worker, even in result().
    let waiter = std::thread::spawn({
        let member = batch[0].clone();
        move || member.result()
    });
    assert!(batch[0].result_timeout(Duration::from_millis(50)).is_err());
    assert_eq!(batch[0].state(), FutureState::Pending);
    drop(busy);
    assert_eq!(waiter.join().unwrap().unwrap().as_i64(), Some(7));
    assert_eq!(batch[0].report().unwrap().worker, "worker-1");
    // The single task was not helped by `result_timeout`: the freed worker ran it (or this
    // caller does now, if it gets there first); either way it ran once, and finished.
    assert_eq!(single.result().unwrap().as_i64(), Some(3));
}

#[test]
fn shutdown_now_aborts_a_task_a_caller_runs() {
    let pool = helping_pool();
    let busy = Busy::start(&pool);
    let spinner = pool.submit(call(fixtures(), "loop-forever()")).unwrap();
    let caller = std::thread::spawn({
        let spinner = spinner.clone();
        move || spinner.result()
    });
    // The caller thread runs it: the worker is busy.
    until_started(&spinner);
    pool.shutdown_now();
    assert_eq!(caller.join().unwrap(), Err(TaskError::Cancelled));
    assert!(busy.0.is_cancelled());
}

#[test]
fn shutdown_with_cancel_leaves_no_task_for_a_caller() {
    let pool = helping_pool();
    let busy = Busy::start(&pool);
    let queued = pool.submit(call(fixtures(), "add(1, 2)")).unwrap();
    pool.shutdown(false, true);
    assert_eq!(queued.result(), Err(TaskError::Cancelled));
    assert_eq!(queued.report(), None, "it never ran");
    drop(busy);
    assert!(matches!(
        pool.submit(call(fixtures(), "add(1, 2)")),
        Err(wasmpool::SubmitError::Shutdown)
    ));
}

#[test]
fn callers_and_workers_together_run_each_task_once() {
    let pool = helping_pool();
    let calls: Vec<_> = (0..200)
        .map(|n| call(fixtures(), &format!("add({n}, 1)")))
        .collect();
    let futures: Vec<_> = calls.into_iter().map(|c| pool.submit(c).unwrap()).collect();
    for (n, f) in futures.iter().enumerate() {
        // `result()` helps: this thread runs what the worker has not reached.
        assert_eq!(f.result().unwrap().as_i64(), Some(n as i64 + 1));
        let worker = f.report().unwrap().worker;
        assert!(
            worker == "worker-1" || worker == "worker-caller",
            "{worker}"
        );
    }
}

#[test]
fn an_initializer_and_helping_callers_do_not_mix() {
    let built = ThreadPoolExecutor::builder()
        .initializer("noop")
        .caller_helps(true)
        .build();
    match built {
        Err(BuildError::Invalid(message)) => {
            assert!(message.contains("initializer"), "{message}");
        }
        Err(other) => panic!("expected an invalid setting, got {other:?}"),
        Ok(_) => panic!("an initializer with helping callers was accepted"),
    }
}
