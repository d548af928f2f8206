//! Budgets and aborts, written once and run against every pool: each limit gives its own
//! error kind, the pool serves the next task, and healthy tasks beside a hog are unharmed.

use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use wasmpool::{
    Budget, Executor, FutureState, Runtime, RuntimeConfig, TaskComponent, TaskError, TaskErrorKind,
    TaskFuture,
};

use crate::common::{DropUnlessFailed, SOON, call, fixtures, until_started};

/// How late a deadline or an abort may resolve its future on this loaded 2-core machine
/// (the design target is a few milliseconds; benches measure that).
const LATE: Duration = Duration::from_secs(2);

/// The fixtures, loaded by a runtime that meters fuel.
fn metered_fixtures() -> &'static TaskComponent {
    static C: OnceLock<TaskComponent> = OnceLock::new();
    C.get_or_init(|| {
        Runtime::with_config(RuntimeConfig::default().fuel(true))
            .expect("runtime")
            .load(env!("WASMPOOL_FIXTURES_WASM"))
            .expect("fixtures")
    })
}

macro_rules! sandbox_suite {
    ($pool:ident, $make:expr) => {
        mod $pool {
            use super::*;
            fn make(workers: usize) -> impl Executor + 'static {
                ($make)(workers)
            }
            #[test]
            fn deadline_stops_a_spinning_task() {
                super::deadline_stops_a_spinning_task(make(1));
            }
            #[test]
            fn deadline_stops_a_task_sleeping_in_wasi() {
                super::deadline_stops_a_task_sleeping_in_wasi(make(1));
            }
            #[test]
            fn fuel_runs_out() {
                super::fuel_runs_out(make(1));
            }
            #[test]
            fn memory_cap_stops_a_grower() {
                super::memory_cap_stops_a_grower(make(1));
            }
            #[test]
            fn stack_overflow_has_its_own_kind() {
                super::stack_overflow_has_its_own_kind(make(1));
            }
            #[test]
            fn abort_stops_a_spinning_task() {
                super::abort_stops_a_spinning_task(make(1));
            }
            #[test]
            fn abort_of_a_pending_task_cancels_it() {
                super::abort_of_a_pending_task_cancels_it(make(1));
            }
            #[test]
            fn a_hog_does_not_harm_its_neighbours() {
                super::a_hog_does_not_harm_its_neighbours(make(2));
            }
            #[test]
            fn reports_say_where_and_how_much() {
                super::reports_say_where_and_how_much(make(1));
            }
        }
    };
}

sandbox_suite!(thread_pool, |n| wasmpool::ThreadPoolExecutor::builder()
    .workers(n)
    .output(wasmpool::OutputMode::Discard)
    .build()
    .expect("thread pool"));

// Depth 1: a task handed to a worker waits behind whatever that worker runs, so a hog
// would hold up the one task pipelined behind it (documented on `pipeline_depth`).
sandbox_suite!(process_pool, |n| wasmpool::ProcessPoolExecutor::builder()
    .workers(n)
    .pipeline_depth(1)
    .worker_program(env!("CARGO_BIN_EXE_wasmpool"))
    .output(wasmpool::OutputMode::Discard)
    .build()
    .expect("process pool"));

// A guest asleep in WASI, with no deadline: the thread pool here; the process pool's worker
// in process_pool.rs, which can tell when its guest is asleep (a handed task may not have
// started yet). Its `shutdown_now` kills the workers, so it never waited for a sleeper.

#[test]
fn thread_pool_abort_stops_a_task_sleeping_in_wasi() {
    let pool = wasmpool::ThreadPoolExecutor::builder()
        .workers(1)
        .output(wasmpool::OutputMode::Discard)
        .build()
        .expect("thread pool");
    let pool = DropUnlessFailed(Some(pool));
    let f = pool
        .submit(call(fixtures(), SLEEP_WITHOUT_DEADLINE))
        .unwrap();
    until_started(&f);
    assert!(f.abort());
    assert_eq!(f.result().unwrap_err(), TaskError::Cancelled);
    // The worker thread itself was freed: with one worker, the next task runs within
    // `SOON`, long before the sleep would have ended.
    still_serves(&*pool);
}

#[test]
fn thread_pool_shutdown_now_stops_a_task_sleeping_in_wasi() {
    let pool = wasmpool::ThreadPoolExecutor::builder()
        .workers(1)
        .output(wasmpool::OutputMode::Discard)
        .build()
        .expect("thread pool");
    let pool = Arc::new(pool);
    let f = pool
        .submit(call(fixtures(), SLEEP_WITHOUT_DEADLINE))
        .unwrap();
    until_started(&f);
    let (returned, has_returned) = mpsc::channel();
    let stopping = pool.clone();
    // On a thread of its own: if it hangs, the test fails instead of hanging with it.
    std::thread::spawn(move || {
        stopping.shutdown_now();
        let _ = returned.send(());
    });
    has_returned
        .recv_timeout(SOON)
        .expect("shutdown_now returns while the guest would still sleep");
    assert_eq!(f.result().unwrap_err(), TaskError::Cancelled);
}

fn timeout(ms: u64) -> Budget {
    Budget::default().timeout(Duration::from_millis(ms))
}

/// Aborts its task when dropped, so that a failing assertion cannot leave a pool's drop
/// waiting forever for a `loop-forever` task.
struct AbortOnDrop(TaskFuture);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A ten-minute sleep in WASI with no deadline: within the tests' bounds, only an abort
/// (or `shutdown_now`) can end it.
const SLEEP_WITHOUT_DEADLINE: &str = "sleep-ms(600000)";

/// The pool still runs a task normally.
fn still_serves(pool: &impl Executor) {
    let f = pool.submit(call(fixtures(), "add(40, 2)")).unwrap();
    assert_eq!(f.result_timeout(SOON).unwrap().unwrap().as_i64(), Some(42));
}

fn deadline_stops_a_spinning_task(pool: impl Executor) {
    let started = Instant::now();
    let f = pool
        .submit(call(fixtures(), "loop-forever()").with_budget(timeout(200)))
        .unwrap();
    let err = f.result_timeout(SOON).expect("resolves").unwrap_err();
    assert_eq!(
        err,
        TaskError::Timeout {
            limit: Duration::from_millis(200)
        }
    );
    assert!(err.to_string().contains("200ms"), "{err}");
    assert!(started.elapsed() < Duration::from_millis(200) + LATE);
    still_serves(&pool);
}

fn deadline_stops_a_task_sleeping_in_wasi(pool: impl Executor) {
    let started = Instant::now();
    let f = pool
        .submit(call(fixtures(), "sleep-ms(60000)").with_budget(timeout(200)))
        .unwrap();
    let err = f.result_timeout(SOON).expect("resolves").unwrap_err();
    assert_eq!(err.kind(), TaskErrorKind::Timeout);
    assert!(started.elapsed() < Duration::from_millis(200) + LATE);
    // The worker was freed, not left sleeping for a minute.
    still_serves(&pool);
    // A task that finishes in time is unaffected by its deadline.
    let ok = pool
        .submit(call(fixtures(), "sleep-ms(10)").with_budget(timeout(10_000)))
        .unwrap();
    assert_eq!(ok.result().unwrap().as_i64(), Some(10));
}

fn fuel_runs_out(pool: impl Executor) {
    let fuel = Budget::default().fuel(10_000);
    let f = pool
        .submit(
            metered_fixtures()
                .call_wave("fib(30)")
                .unwrap()
                .with_budget(fuel),
        )
        .unwrap();
    let err = f.result().unwrap_err();
    assert_eq!(err, TaskError::OutOfFuel { limit: 10_000 });
    assert!(err.to_string().contains("10000"), "{err}");
    // Enough fuel: the value, and the fuel used is reported.
    let f = pool
        .submit(
            metered_fixtures()
                .call_wave("fib(10)")
                .unwrap()
                .with_budget(Budget::default().fuel(10_000_000)),
        )
        .unwrap();
    assert_eq!(f.result().unwrap().as_i64(), Some(55));
    let used = f
        .report()
        .and_then(|r| r.fuel_consumed)
        .expect("fuel reported");
    assert!(used > 0 && used < 10_000_000, "{used}");
    // A fuel budget on a runtime without metering is refused clearly.
    let f = pool
        .submit(call(fixtures(), "fib(10)").with_budget(Budget::default().fuel(5)))
        .unwrap();
    let err = f.result().unwrap_err();
    assert_eq!(err, TaskError::FuelNotEnabled);
    assert_eq!(err.kind(), TaskErrorKind::FuelNotEnabled);
    assert!(err.to_string().contains("fuel"), "{err}");
    still_serves(&pool);
}

fn memory_cap_stops_a_grower(pool: impl Executor) {
    let cap = Budget::default().max_memory(32 << 20);
    let f = pool
        .submit(call(fixtures(), "allocate-forever()").with_budget(cap.clone()))
        .unwrap();
    let err = f.result_timeout(SOON).expect("resolves").unwrap_err();
    assert_eq!(err, TaskError::MemoryLimit { limit: 32 << 20 });
    assert!(err.to_string().contains("33554432"), "{err}");
    // Under the cap, memory use is reported.
    let f = pool
        .submit(call(fixtures(), "allocate-mib(8)").with_budget(cap))
        .unwrap();
    assert_eq!(f.result().unwrap().as_i64(), Some(8));
    let peak = f.report().expect("report").peak_memory;
    assert!((8 << 20..=32 << 20).contains(&peak), "{peak}");
    still_serves(&pool);
}

fn stack_overflow_has_its_own_kind(pool: impl Executor) {
    let f = pool.submit(call(fixtures(), "recurse-forever(0)")).unwrap();
    assert_eq!(f.result().unwrap_err().kind(), TaskErrorKind::StackOverflow);
    still_serves(&pool);
}

fn abort_stops_a_spinning_task(pool: impl Executor) {
    let f = pool.submit(call(fixtures(), "loop-forever()")).unwrap();
    until_started(&f);
    assert!(f.abort());
    assert!(f.is_cancelled());
    assert_eq!(f.result().unwrap_err(), TaskError::Cancelled);
    // The worker itself was freed: with one worker, the next task runs.
    still_serves(&pool);
    assert!(!f.abort() || f.is_cancelled());
}

fn abort_of_a_pending_task_cancels_it(pool: impl Executor) {
    // The one worker spins until aborted, so the next task stays pending meanwhile.
    let blocker = AbortOnDrop(pool.submit(call(fixtures(), "loop-forever()")).unwrap());
    until_started(&blocker.0);
    let queued = AbortOnDrop(pool.submit(call(fixtures(), "loop-forever()")).unwrap());
    assert_eq!(queued.0.state(), FutureState::Pending);
    assert!(queued.0.abort());
    assert!(queued.0.is_cancelled());
    assert_eq!(queued.0.result(), Err(TaskError::Cancelled));
    // Aborting the queued task left the running one alone.
    assert!(blocker.0.is_running(), "{:?}", blocker.0);
    assert!(blocker.0.abort());
    // The aborted queued task never runs: with one worker, the next task does.
    still_serves(&pool);
    assert_eq!(queued.0.report(), None, "the queued task never ran");
}

fn a_hog_does_not_harm_its_neighbours(pool: impl Executor) {
    // A hog with no budget at all: it spins until aborted, however long the others take.
    let hog = AbortOnDrop(pool.submit(call(fixtures(), "loop-forever()")).unwrap());
    until_started(&hog.0);
    let grower = pool
        .submit(
            call(fixtures(), "allocate-forever()")
                .with_budget(Budget::default().max_memory(16 << 20)),
        )
        .unwrap();
    let healthy: Vec<_> = (0..20)
        .map(|i| {
            pool.submit(call(fixtures(), &format!("add({i}, 1)")))
                .unwrap()
        })
        .collect();
    for (i, f) in healthy.iter().enumerate() {
        assert_eq!(
            f.result_timeout(SOON).unwrap().unwrap().as_i64(),
            Some(i as i64 + 1)
        );
    }
    assert_eq!(
        grower.result_timeout(SOON).unwrap().unwrap_err().kind(),
        TaskErrorKind::MemoryLimit
    );
    // The healthy tasks and the grower finished while the hog still spun on the other
    // worker; stopping it frees that worker too.
    assert!(hog.0.is_running(), "{:?}", hog.0);
    assert!(hog.0.abort());
    assert_eq!(hog.0.result(), Err(TaskError::Cancelled));
    still_serves(&pool);
}

fn reports_say_where_and_how_much(pool: impl Executor) {
    let f = pool.submit(call(fixtures(), "sleep-ms(20)")).unwrap();
    assert_eq!(f.report(), None, "no report before the task finishes");
    f.result().unwrap();
    let report = f.report().expect("report");
    assert!(report.worker.ends_with("-1"), "{report:?}");
    assert!(report.pid > 0);
    assert!(report.elapsed >= Duration::from_millis(20), "{report:?}");
    assert_eq!(report.fuel_consumed, None);
    assert!(report.peak_memory > 0);
    // A failed task has a report too; a cancelled one that never ran has none.
    let failed = pool.submit(call(fixtures(), "trap-unreachable()")).unwrap();
    assert!(failed.result().is_err());
    assert!(failed.report().is_some());
}
