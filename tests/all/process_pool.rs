//! The process pool beyond the shared executor suite: workers are processes and are reused,
//! values and errors cross the process boundary unchanged, output, abort, recycling, the
//! handshake, and a crash matrix.
//!
//! The crash matrix follows CPython's Lib/test/test_concurrent_futures/test_deadlock.py
//! (behaviour, rewritten for wasmpool): whatever happens to a worker, every future resolves,
//! within a generous bound, and the pool says which worker died and how. Waits are bounded
//! (`result_timeout(SOON)`); nothing sleeps to synchronise.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use wasmpool::{
    BuildError, Executor, InstancePolicy, OutputMode, ProcessPoolBuilder, ProcessPoolExecutor,
    Runtime, RuntimeConfig, SubmitError, TaskError, TaskErrorKind, TaskFuture, TaskValue,
    ThreadPoolExecutor,
};

use crate::common::{DropUnlessFailed, SOON, call, fixtures, seed, until_started};
use crate::procfs::{children_of, started_at};

const WORKER: &str = env!("CARGO_BIN_EXE_wasmpool");

fn builder(workers: usize) -> ProcessPoolBuilder {
    ProcessPoolExecutor::builder()
        .workers(workers)
        .worker_program(WORKER)
        .output(OutputMode::Discard)
}

fn pool(workers: usize) -> ProcessPoolExecutor {
    build(builder(workers))
}

/// Builds, retrying the rare `ETXTBSY` of executing a script just written while another
/// test thread forks.
fn build(builder: ProcessPoolBuilder) -> ProcessPoolExecutor {
    let mut tries = 0;
    loop {
        match builder.clone().build() {
            Err(BuildError::Spawn(e)) if e.raw_os_error() == Some(26) && tries < 5 => tries += 1,
            other => return other.expect("the process pool starts"),
        }
    }
}

fn signal(pid: u32, signal: Signal) {
    let pid = Pid::from_raw(pid as i32).expect("a real pid");
    kill_process(pid, signal).expect("signal the worker");
}

/// The outcome of a future that must resolve within the bound.
fn outcome(f: &TaskFuture) -> Result<TaskValue, TaskError> {
    f.result_timeout(SOON)
        .unwrap_or_else(|_| panic!("{f:?} did not resolve within {SOON:?}"))
}

/// The reason of a broken-pool error.
fn broken(outcome: Result<TaskValue, TaskError>) -> String {
    match outcome {
        Err(TaskError::BrokenPool { reason }) => reason,
        other => panic!("expected a broken pool, got {other:?}"),
    }
}

/// Test programs: shell scripts used as worker programs, written once per test binary.
fn script(name: &str) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        // A HELLO frame: length 17, kind 1, "wasmpool", version 999, pid 1.
        let hello_999 = r"\021\000\000\000\001wasmpool\347\003\000\000\001\000\000\000";
        let scripts = [
            (
                "not-a-worker",
                "echo 'Usage: not-a-worker [OPTIONS]'\ncat >/dev/null".into(),
            ),
            (
                "version-999",
                format!("printf '{hello_999}'\ncat >/dev/null"),
            ),
            ("silent", "cat >/dev/null".into()),
            ("dies-at-once", "exit 3".into()),
            ("exit-after-3", hooked("exit-after:3")),
            ("abort-after-2", hooked("abort-after:2")),
            ("garbage-after-2", hooked("garbage-after:2")),
            ("abort-after-3", hooked("abort-after:3")),
            // A worker the first time, silent after that.
            (
                "works-once",
                format!(
                    "mark=\"$(dirname \"$0\")/works-once.mark\"\n\
                     if [ -e \"$mark\" ]; then cat >/dev/null; exit 0; fi\n\
                     touch \"$mark\"\n{}",
                    hooked("none")
                ),
            ),
            // A worker the first time; the next `$FAIL` starts exit at once; a worker again
            // after that.
            ("starts-fail-twice", counted_starts(2)),
            ("starts-fail-always", counted_starts(1000)),
            // The real worker, its channel to the pool copied to a file beside the script.
            (
                "tees-its-channel",
                format!("'{WORKER}' \"$@\" | tee \"$0.channel\""),
            ),
        ];
        for (name, body) in scripts {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod script");
        }
        dir
    });
    dir.path().join(name)
}

/// A worker program that counts its starts (in a file beside it): the first is a real
/// worker, the next `fails` exit at once, before the handshake, and later ones work again.
fn counted_starts(fails: u32) -> String {
    format!(
        "count=\"$0.count\"\n\
         n=$(( $(cat \"$count\" 2>/dev/null || echo 0) + 1 ))\n\
         echo $n > \"$count\"\n\
         if [ $n -ge 2 ] && [ $n -le {} ]; then exit 3; fi\n{}",
        fails + 1,
        hooked("none")
    )
}

/// The real worker with a test hook set (see host/process_pool/worker.rs).
fn hooked(hook: &str) -> String {
    format!("WASMPOOL_WORKER_TEST_HOOK={hook} exec '{WORKER}' \"$@\"")
}

#[test]
fn workers_are_processes_and_are_reused() {
    let pool = pool(2);
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 2);
    assert_ne!(pids[0], pids[1]);
    assert!(!pids.contains(&std::process::id()));
    let futures: Vec<_> = (0..40)
        .map(|n| {
            pool.submit(call(seed(), &format!("quick-task({n})")))
                .unwrap()
        })
        .collect();
    for (n, f) in futures.iter().enumerate() {
        assert_eq!(outcome(f).unwrap().as_i64(), Some(n as i64));
        let report = f.report().expect("a finished task has a report");
        assert!(pids.contains(&report.pid), "{report:?} not in {pids:?}");
        assert!(report.worker == "worker-1" || report.worker == "worker-2");
    }
    // Both took part, and no new process was started.
    let used: std::collections::HashSet<u32> = futures
        .iter()
        .filter_map(|f| f.report())
        .map(|r| r.pid)
        .collect();
    assert_eq!(used.len(), 2);
    assert_eq!(pool.worker_pids(), pids);
    pool.shutdown(true, false);
    assert!(pool.worker_pids().is_empty());
}

/// Runs each call in both pools: what comes back must be the same.
fn same_in_both_pools(
    calls: &[&str],
    configure: impl Fn(ProcessPoolBuilder) -> ProcessPoolBuilder,
) {
    let threads = ThreadPoolExecutor::builder()
        .workers(1)
        .output(OutputMode::Discard)
        .build()
        .unwrap();
    let processes = build(configure(builder(1)));
    for c in calls {
        let expected = threads.submit(call(fixtures(), c)).unwrap().result();
        let got = outcome(&processes.submit(call(fixtures(), c)).unwrap());
        match (&expected, &got) {
            // Backtraces name the same frames; compare the rest.
            (
                Err(TaskError::Trap { trap, panic, .. }),
                Err(TaskError::Trap {
                    trap: t, panic: p, ..
                }),
            ) => {
                assert_eq!((trap, panic), (t, p), "{c}");
            }
            _ => assert_eq!(expected, got, "{c}"),
        }
    }
}

#[test]
fn values_of_every_type_cross_the_process_boundary() {
    same_in_both_pools(
        &[
            "add(-3, 5)",
            "greet(\"wörld 🦀\")",
            "fib(20)",
            "noop()",
            "math.add(2, 3)",
            "types.echo-point({x: -1, y: 2})",
            "types.echo-shape(rect({x: 3, y: 4}))",
            "types.echo-shape(circle(1.5))",
            "types.echo-shape(empty)",
            "types.echo-color(blue)",
            "types.echo-perms({read, exec})",
            "types.echo-option(some(\"x\"))",
            "types.echo-option(none)",
            "types.echo-list([1, 2, 4294967295])",
            "types.echo-tuple((\"t\", 255, true))",
            "types.echo-char('\u{1F980}')",
            "types.echo-result(ok(7))",
            "types.echo-result(err(\"e\"))",
            "types.sum-points([{x: 1, y: 1}, {x: 2, y: 3}])",
            "types.everything({x: 1, y: 2}, rect({x: 3, y: 4}), green, {write}, some([\"a\", \"b\"]), (7, 'z', -9))",
            "get-env(\"HOME\")",
        ],
        |b| b,
    );
}

#[test]
fn errors_cross_the_process_boundary() {
    same_in_both_pools(
        &[
            "fail-with(3)",
            "trap-panic(\"boom\")",
            "trap-unreachable()",
            "fail-with(0)",
        ],
        |b| b,
    );
    let pool =
        build(builder(1).budget(wasmpool::Budget::default().timeout(Duration::from_millis(50))));
    let err = outcome(&pool.submit(call(fixtures(), "loop-forever()")).unwrap()).unwrap_err();
    assert_eq!(
        err,
        TaskError::Timeout {
            limit: Duration::from_millis(50)
        }
    );
    // The worker that stopped that task serves the next one.
    assert_eq!(
        outcome(&pool.submit(call(fixtures(), "add(1, 1)")).unwrap())
            .unwrap()
            .as_i64(),
        Some(2)
    );
}

#[test]
fn components_of_a_metered_runtime_run_metered() {
    let runtime = Runtime::with_config(RuntimeConfig::default().fuel(true)).unwrap();
    let component = runtime.load(env!("WASMPOOL_FIXTURES_WASM")).unwrap();
    let pool = build(builder(1).budget(wasmpool::Budget::default().fuel(10_000)));
    let f = pool
        .submit(component.call_wave("fib(30)").unwrap())
        .unwrap();
    assert_eq!(
        outcome(&f).unwrap_err(),
        TaskError::OutOfFuel { limit: 10_000 }
    );
    let f = pool
        .submit(component.call_wave("add(1, 2)").unwrap())
        .unwrap();
    assert_eq!(outcome(&f).unwrap().as_i64(), Some(3));
    assert!(f.report().unwrap().fuel_consumed.is_some_and(|n| n > 0));
}

#[test]
fn instance_policy_and_initializer_apply_in_the_workers() {
    let counts = |pool: &ProcessPoolExecutor, n: usize| -> Vec<i64> {
        (0..n)
            .map(|_| {
                let f = pool.submit(call(fixtures(), "count()")).unwrap();
                outcome(&f).unwrap().as_i64().unwrap()
            })
            .collect()
    };
    let reuse = build(builder(1).instance_policy(InstancePolicy::Reuse { max_tasks: 3 }));
    assert_eq!(counts(&reuse, 7), [1, 2, 3, 1, 2, 3, 1]);
    let init = build(builder(1).initializer("init"));
    assert_eq!(counts(&init, 2), [101, 101]);
    // A failing initializer breaks the pool, as in concurrent.futures.
    let failing = build(builder(1).initializer("init-fails"));
    let reason = broken(outcome(
        &failing.submit(call(fixtures(), "count()")).unwrap(),
    ));
    assert!(reason.contains("init-fails"), "{reason}");
    match failing.submit(call(fixtures(), "count()")) {
        Err(SubmitError::BrokenPool(r)) => assert_eq!(r, reason),
        other => panic!("expected a broken pool, got {other:?}"),
    }
}

#[test]
fn captured_output_comes_back_in_the_report() {
    let pool = build(builder(1).output(OutputMode::Capture { limit: 1024 }));
    let f = pool
        .submit(call(fixtures(), "print-lines(3, \"hi\")"))
        .unwrap();
    outcome(&f).unwrap();
    assert_eq!(f.report().unwrap().stdout.as_deref(), Some("hi\nhi\nhi\n"));
    let f = pool
        .submit(call(fixtures(), "write-stderr(\"oops\")"))
        .unwrap();
    outcome(&f).unwrap();
    assert_eq!(f.report().unwrap().stderr.as_deref(), Some("oops\n"));
    // Past the limit: cut after the last whole line, marked, and so reported.
    let f = pool
        .submit(call(fixtures(), "print-lines(400, \"hi\")"))
        .unwrap();
    outcome(&f).unwrap();
    let report = f.report().unwrap();
    assert!(report.stdout_truncated && !report.stderr_truncated);
    let kept = "hi\n".repeat(1024 / 3);
    assert_eq!(
        report.stdout,
        Some(format!("{kept}[wasmpool: output cut at 1 KiB]\n"))
    );
}

#[test]
fn forwarded_output_reaches_the_pools_stdout_prefixed() {
    const CHILD: &str = "WASMPOOL_TEST_FORWARD_CHILD";
    if std::env::var_os(CHILD).is_some() {
        // The child: a pool whose tasks print; this process's stdout is the parent's pipe.
        let pool = build(builder(1).output(OutputMode::Prefixed));
        outcome(
            &pool
                .submit(call(fixtures(), "print-lines(2, \"hello\")"))
                .unwrap(),
        )
        .unwrap();
        outcome(
            &pool
                .submit(call(fixtures(), "write-stderr(\"oops\")"))
                .unwrap(),
        )
        .unwrap();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "process_pool::forwarded_output_reaches_the_pools_stdout_prefixed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // (The test harness may print its own "test ... " before the first line.)
    let hellos = stdout
        .lines()
        .filter(|l| l.ends_with("worker-1: hello"))
        .count();
    assert_eq!(hellos, 2, "stdout:\n{stdout}");
    assert!(
        stderr.lines().any(|l| l == "worker-1: oops"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn abort_stops_running_and_handed_tasks_and_the_worker_lives_on() {
    let pool = pool(1);
    let pid = pool.worker_pids()[0];
    let spinning = pool.submit(call(fixtures(), "loop-forever()")).unwrap();
    // Handed to the worker behind the spinning task (pipeline depth 2), not started.
    let handed = pool.submit(call(fixtures(), "loop-forever()")).unwrap();
    until_started(&handed);
    assert!(!handed.cancel(), "a handed task counts as running");
    assert!(handed.abort());
    assert!(spinning.abort());
    assert_eq!(outcome(&spinning), Err(TaskError::Cancelled));
    assert_eq!(outcome(&handed), Err(TaskError::Cancelled));
    let next = pool.submit(call(seed(), "quick-task(5)")).unwrap();
    assert_eq!(outcome(&next).unwrap().as_i64(), Some(5));
    assert_eq!(next.report().unwrap().pid, pid, "the same worker process");
}

/// A guest asleep in WASI with no deadline: the abort stops it, and the same worker runs
/// the next task long before the ten-minute sleep would end. The worker's channel is copied
/// to a file, so the test sees the guest's last line before its sleep (`sleeping 6000`)
/// reach the pool: the task has started, not merely been handed to the worker.
#[test]
fn abort_stops_a_task_sleeping_in_wasi_and_the_worker_runs_the_next() {
    let program = script("tees-its-channel");
    let channel = program.with_extension("channel");
    let pool = DropUnlessFailed(Some(build(
        builder(1)
            .worker_program(&program)
            .output(OutputMode::Plain),
    )));
    let pid = pool.worker_pids()[0];
    let sleeper = pool.submit(call(seed(), "sleep-task(6000)")).unwrap();
    let deadline = Instant::now() + SOON;
    while !std::fs::read(&channel).is_ok_and(|c| c.windows(13).any(|w| w == b"sleeping 6000")) {
        assert!(Instant::now() < deadline, "the guest never said it sleeps");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(sleeper.abort());
    assert_eq!(outcome(&sleeper), Err(TaskError::Cancelled));
    let next = pool.submit(call(seed(), "quick-task(5)")).unwrap();
    let value = next.result_timeout(SOON).expect("the worker is free again");
    assert_eq!(value.unwrap().as_i64(), Some(5));
    assert_eq!(next.report().unwrap().pid, pid, "the same worker process");
}

#[test]
fn shutdown_now_aborts_running_tasks() {
    let pool = pool(2);
    let running: Vec<_> = (0..4)
        .map(|_| pool.submit(call(fixtures(), "loop-forever()")).unwrap())
        .collect();
    let queued = pool.submit(call(fixtures(), "loop-forever()")).unwrap();
    running.iter().for_each(until_started);
    pool.shutdown_now();
    for f in running.iter().chain([&queued]) {
        assert_eq!(outcome(f), Err(TaskError::Cancelled));
    }
    assert!(pool.worker_pids().is_empty());
    assert!(pool.broken_reason().is_none());
}

#[test]
fn max_tasks_per_worker_recycles_with_many_queued_tasks() {
    // CPython's max_tasks_per_child could deadlock with a long queue; here every task
    // resolves and no process runs more than its share.
    let pool = build(builder(2).max_tasks_per_worker(3));
    let futures: Vec<_> = (0..60)
        .map(|n| {
            pool.submit(call(seed(), &format!("quick-task({n})")))
                .unwrap()
        })
        .collect();
    let mut per_pid = std::collections::HashMap::<u32, usize>::new();
    for (n, f) in futures.iter().enumerate() {
        assert_eq!(outcome(f).unwrap().as_i64(), Some(n as i64));
        *per_pid.entry(f.report().unwrap().pid).or_default() += 1;
    }
    assert!(per_pid.values().all(|&n| n <= 3), "{per_pid:?}");
    assert!(per_pid.len() >= 20, "{per_pid:?}");
    assert!(pool.broken_reason().is_none());
    pool.shutdown(true, false);
    assert!(pool.worker_pids().is_empty());
}

/// How many tasks a 1-worker pool hands its worker at once: a 1 s task, then 20 quick ones
/// behind it; the handed ones count as running while the long one holds the worker.
fn handed_at_once(pool: &ProcessPoolExecutor) -> usize {
    let long = pool.submit(call(fixtures(), "sleep-ms(1000)")).unwrap();
    let quick: Vec<_> = (0..20)
        .map(|_| pool.submit(call(fixtures(), "noop()")).unwrap())
        .collect();
    let handed = 1 + quick.iter().filter(|f| f.is_running()).count();
    outcome(&long).unwrap();
    for f in &quick {
        outcome(f).unwrap();
    }
    handed
}

/// Runs `n` quick tasks and returns their mean time in the worker.
fn run_quick(pool: &ProcessPoolExecutor, n: usize) -> Duration {
    let futures: Vec<_> = (0..n)
        .map(|_| pool.submit(call(fixtures(), "noop()")).unwrap())
        .collect();
    let took: Duration = futures
        .iter()
        .map(|f| {
            outcome(f).unwrap();
            f.report().unwrap().elapsed
        })
        .sum();
    took / n as u32
}

/// By default the pipeline follows the tasks (5 ms of work handed ahead): deeper than 2
/// after quick tasks, 2 again right after a long one. A depth set by the builder stays.
#[test]
fn the_pipeline_depth_follows_the_tasks() {
    let adaptive = build(builder(1).instance_policy(InstancePolicy::Reuse { max_tasks: 1000 }));
    // Reused instances: quick enough (tens of µs, even in a debug build) for a deeper pipe.
    let mean = run_quick(&adaptive, 300);
    let deep = handed_at_once(&adaptive);
    assert!(deep > 2, "quick tasks of {mean:?}: handed {deep} at once");
    // The 1 s task weighs 1/8 in the mean, which the 20 quick ones behind it cannot bring
    // below 5 ms (125 ms × (7/8)^20 ≈ 8.6 ms): the next round is handed 2 at once.
    assert_eq!(handed_at_once(&adaptive), 2);

    let fixed = build(builder(1).pipeline_depth(3));
    run_quick(&fixed, 300);
    assert_eq!(handed_at_once(&fixed), 3);
}

#[test]
fn bad_settings_are_refused() {
    for b in [
        builder(0),
        builder(1).pipeline_depth(0),
        builder(1).max_tasks_per_worker(0),
    ] {
        assert!(matches!(b.build(), Err(BuildError::Invalid(_))));
    }
}

#[test]
fn a_missing_worker_program_is_a_spawn_error() {
    let err = builder(2)
        .worker_program("/nonexistent/wasmpool")
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::Spawn(_)), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/wasmpool"), "{err}");
}

/// Builds a pool on a fake worker program; it must fail with a `Worker` error.
fn refused(program: &str, timeout: Duration) -> (String, String) {
    let mut tries = 0;
    loop {
        let result = builder(2)
            .worker_program(script(program))
            .handshake_timeout(timeout)
            .build();
        match result {
            Err(BuildError::Spawn(e)) if e.raw_os_error() == Some(26) && tries < 5 => tries += 1,
            Err(err @ BuildError::Worker { .. }) => {
                let BuildError::Worker { ref reason, .. } = err else {
                    unreachable!()
                };
                return (reason.clone(), err.to_string());
            }
            other => panic!("{program}: expected a worker error, got {other:?}"),
        }
    }
}

#[test]
fn a_program_that_is_not_a_worker_is_refused() {
    let (reason, text) = refused("not-a-worker", SOON);
    assert!(reason.contains("not a wasmpool worker"), "{reason}");
    assert!(reason.contains("Usage: not-a-worker"), "{reason}");
    assert!(text.starts_with("worker worker-"), "{text}");
}

#[test]
fn a_worker_of_another_protocol_version_is_refused() {
    let (reason, _) = refused("version-999", SOON);
    let expected = format!(
        "the worker speaks protocol version 999, this pool speaks version {}",
        wasmpool::process_pool::PROTOCOL_VERSION
    );
    assert_eq!(reason, expected);
}

#[test]
fn a_worker_that_dies_before_the_handshake_is_refused() {
    let (reason, _) = refused("dies-at-once", SOON);
    assert!(reason.contains("exited with code 3"), "{reason}");
}

#[test]
fn a_silent_worker_times_out() {
    let started = Instant::now();
    let (reason, _) = refused("silent", Duration::from_millis(300));
    assert!(reason.contains("no greeting within 300ms"), "{reason}");
    assert!(started.elapsed() < SOON);
}

/// Ported from CPython's Lib/test/test_concurrent_futures (test_process_pool.py and
/// test_shutdown.py, `test_del_shutdown`), rewritten in our own words: a pool that is
/// dropped without `shutdown()` still stops its worker processes and reaps them. After the
/// drop no process with a worker's pid and start time is left, not even a zombie (waited
/// for by polling /proc, bounded by `SOON`).
#[test]
fn dropping_a_pool_without_shutdown_reaps_its_workers() {
    let pool = pool(3);
    let futures: Vec<_> = (0..30)
        .map(|n| {
            pool.submit(call(seed(), &format!("quick-task({n})")))
                .expect("submit to a new pool")
        })
        .collect();
    let workers: Vec<(u32, u64)> = pool
        .worker_pids()
        .into_iter()
        .map(|pid| {
            let start = started_at(pid).unwrap_or_else(|| panic!("worker {pid} is not in /proc"));
            (pid, start)
        })
        .collect();
    assert_eq!(workers.len(), 3, "{workers:?}");
    drop(pool);
    let deadline = Instant::now() + SOON;
    loop {
        let left: Vec<u32> = workers
            .iter()
            .filter(|&&(pid, start)| started_at(pid) == Some(start))
            .map(|&(pid, _)| pid)
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "workers {left:?} still exist {SOON:?} after their pool was dropped (children of \
             this process: {:?})",
            children_of(std::process::id())
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for (n, f) in futures.iter().enumerate() {
        assert_eq!(outcome(f).expect("a quick task").as_i64(), Some(n as i64));
    }
}

/// The other half of CPython's `test_del_shutdown` (same source, our own words): dropping a
/// pool is the context manager's exit, so it waits for the work submitted before it. Three
/// times as many tasks as the workers hold at once (2 × pipeline depth 2) are submitted, so
/// some are normally still queued at the drop; when the drop returns, every future is done,
/// with its own value.
#[test]
fn dropping_a_pool_waits_for_submitted_work() {
    let pool = pool(2);
    let futures: Vec<_> = (0..12)
        .map(|n| {
            pool.submit(call(fixtures(), &format!("sleep-ms({})", 10 + n)))
                .expect("submit to a new pool")
        })
        .collect();
    drop(pool);
    for (n, f) in futures.iter().enumerate() {
        assert!(
            f.is_done(),
            "task {n} was not done when the drop returned: {f:?}"
        );
        assert_eq!(
            f.result().expect("a finished sleep").as_i64(),
            Some(10 + n as i64)
        );
    }
}

mod crash_matrix {
    use super::*;

    /// Long enough that only a broken pool (or an abort) can resolve it within the bound.
    const FOREVER: &str = "sleep-ms(600000)";

    /// A task sleeping in WASI, with a deadline far beyond the tests' bounds.
    fn forever() -> wasmpool::Call {
        call(fixtures(), FOREVER)
            .with_budget(wasmpool::Budget::default().timeout(Duration::from_secs(600)))
    }

    fn long_tasks(pool: &ProcessPoolExecutor, n: usize) -> Vec<TaskFuture> {
        (0..n).map(|_| pool.submit(forever()).unwrap()).collect()
    }

    /// After the pool broke, submit fails at once with the same reason.
    fn submit_is_refused(pool: &ProcessPoolExecutor, reason: &str) {
        let err = pool.submit(call(seed(), "noop()")).unwrap_err();
        assert_eq!(err, SubmitError::BrokenPool(reason.to_string()));
        assert_eq!(pool.broken_reason().as_deref(), Some(reason));
    }

    #[test]
    fn killed_while_idle() {
        let pool = pool(2);
        outcome(&pool.submit(call(seed(), "quick-task(1)")).unwrap()).unwrap();
        let pid = pool.worker_pids()[0];
        signal(pid, Signal::KILL);
        // Submitted before or after the death is noticed: either way it reports it.
        let reason = match pool.submit(forever()) {
            Ok(f) => broken(outcome(&f)),
            Err(SubmitError::BrokenPool(reason)) => reason,
            Err(e) => panic!("{e:?}"),
        };
        assert!(
            reason.contains(&format!("(pid {pid}) terminated abruptly")),
            "{reason}"
        );
        assert!(reason.contains("killed by signal 9 (SIGKILL)"), "{reason}");
        submit_is_refused(&pool, &reason);
        pool.shutdown(true, false);
        assert!(
            pool.worker_pids().is_empty(),
            "the other worker was stopped too"
        );
    }

    #[test]
    fn killed_while_running_wakes_a_blocked_result_at_once() {
        let pool = pool(2);
        let tasks = long_tasks(&pool, 6);
        tasks[..4].iter().for_each(until_started);
        let pid = pool.worker_pids()[0];
        let waiter = {
            let last = tasks[5].clone();
            std::thread::spawn(move || {
                let outcome = last.result();
                (outcome, Instant::now())
            })
        };
        let killed_at = Instant::now();
        signal(pid, Signal::KILL);
        let (last, woke_at) = waiter.join().unwrap();
        let latency = woke_at.saturating_duration_since(killed_at);
        eprintln!("crash_matrix: a blocked result() woke {latency:?} after SIGKILL");
        assert!(latency < Duration::from_secs(5), "{latency:?}");
        let reason = broken(last);
        assert!(
            reason.contains(&format!("worker-1 (pid {pid}) terminated abruptly while running 2 tasks: killed by signal 9 (SIGKILL)")),
            "{reason}"
        );
        for f in &tasks {
            assert_eq!(broken(outcome(f)), reason);
        }
        submit_is_refused(&pool, &reason);
    }

    #[test]
    fn killed_while_results_are_in_flight() {
        let pool = pool(2);
        let victim = pool.worker_pids()[0];
        let futures: Vec<_> = (0..3000)
            .map(|n| {
                pool.submit(call(seed(), &format!("quick-task({n})")))
                    .unwrap()
            })
            .collect();
        // Killed from the reader thread, in the middle of the stream of results.
        futures[200].add_done_callback(move |_| signal(victim, Signal::KILL));
        let mut ok = 0;
        let mut reasons = std::collections::BTreeSet::new();
        for (n, f) in futures.iter().enumerate() {
            match outcome(f) {
                Ok(v) => {
                    assert_eq!(v.as_i64(), Some(n as i64));
                    ok += 1;
                }
                Err(e) => {
                    reasons.insert(broken(Err(e)));
                }
            }
        }
        // The task whose completion killed the worker finished; most after it could not.
        assert!(futures[200].result().is_ok());
        assert!((1..3000).contains(&ok), "{ok}");
        // Every failed task names the same death, the victim's, and so does submit.
        let reason = match Vec::from_iter(reasons).as_slice() {
            [reason] => reason.clone(),
            other => panic!("the failed tasks give {} reasons: {other:?}", other.len()),
        };
        assert!(
            reason.contains(&format!("(pid {victim}) terminated abruptly")),
            "{reason}"
        );
        assert!(reason.contains("killed by signal 9 (SIGKILL)"), "{reason}");
        submit_is_refused(&pool, &reason);
    }

    #[test]
    fn killed_with_big_arguments_in_flight() {
        // CPython's test_crash_big_data: a worker dies while large frames are being
        // written to it.
        let pool = pool(2);
        let big = format!("greet(\"{}\")", "a".repeat(1 << 20));
        let futures: Vec<_> = (0..10)
            .map(|_| pool.submit(call(fixtures(), &big)).unwrap())
            .collect();
        signal(pool.worker_pids()[0], Signal::KILL);
        for f in &futures {
            match outcome(f) {
                Ok(v) => assert_eq!(v.as_str().map(str::len), Some((1 << 20) + 7)),
                Err(e) => assert_eq!(e.kind(), TaskErrorKind::BrokenPool),
            }
        }
    }

    #[test]
    fn worker_aborted_by_sigabrt() {
        let pool = pool(2);
        let tasks = long_tasks(&pool, 3);
        until_started(&tasks[0]);
        signal(pool.worker_pids()[0], Signal::ABORT);
        let reason = broken(outcome(&tasks[2]));
        assert!(reason.contains("killed by signal 6 (SIGABRT"), "{reason}");
        tasks
            .iter()
            .for_each(|f| assert_eq!(outcome(f).unwrap_err().kind(), TaskErrorKind::BrokenPool));
    }

    #[test]
    fn worker_aborts_itself() {
        let pool = build(builder(1).worker_program(script("abort-after-2")));
        let futures: Vec<_> = (0..4)
            .map(|n| {
                pool.submit(call(fixtures(), &format!("sleep-ms({})", 10 * n)))
                    .unwrap()
            })
            .collect();
        let reason = broken(outcome(&futures[3]));
        assert!(reason.contains("SIGABRT"), "{reason}");
        for f in &futures {
            outcome(f).unwrap_err();
        }
    }

    #[test]
    fn worker_segfaults() {
        let pool = pool(2);
        let tasks = long_tasks(&pool, 2);
        tasks.iter().for_each(until_started);
        let pid = pool.worker_pids()[0];
        // The first SIGSEGV sent from outside lands in the handlers of std and wasmtime,
        // which find no fault and restore the default action; the next one kills. Signals
        // of one kind do not queue, so send until the pool reports the death.
        let started = Instant::now();
        let reason = loop {
            let _ = kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::SEGV);
            if let Ok(outcome) = tasks[0].result_timeout(Duration::from_millis(50)) {
                break broken(outcome);
            }
            assert!(started.elapsed() < SOON, "the worker survived SIGSEGV");
        };
        assert!(reason.contains("killed by signal 11 (SIGSEGV"), "{reason}");
        assert_eq!(broken(outcome(&tasks[1])), reason);
    }

    #[test]
    fn worker_exits_cleanly_with_tasks_pending() {
        let pool = build(builder(1).worker_program(script("exit-after-3")));
        let futures: Vec<_> = (0..5)
            .map(|_| pool.submit(call(fixtures(), "sleep-ms(50)")).unwrap())
            .collect();
        assert_eq!(outcome(&futures[0]).unwrap().as_i64(), Some(50));
        let reason = broken(outcome(&futures[4]));
        assert!(
            reason.contains("terminated abruptly while running"),
            "{reason}"
        );
        assert!(reason.contains("exited with code 0"), "{reason}");
        for f in &futures[1..] {
            outcome(f).unwrap_err();
        }
        submit_is_refused(&pool, &reason);
    }

    #[test]
    fn garbage_on_the_channel() {
        let pool = build(builder(1).worker_program(script("garbage-after-2")));
        let futures: Vec<_> = (0..4)
            .map(|_| pool.submit(call(fixtures(), "sleep-ms(20)")).unwrap())
            .collect();
        let reason = broken(outcome(&futures[3]));
        assert!(reason.contains("sent a malformed message"), "{reason}");
        assert!(reason.contains("unexpected frame kind 255"), "{reason}");
        for f in &futures {
            outcome(f).unwrap_or_default();
        }
        submit_is_refused(&pool, &reason);
        // And garbage instead of a greeting: the pool does not start.
        let (reason, _) = refused("not-a-worker", SOON);
        assert!(reason.contains("not a wasmpool worker"), "{reason}");
    }

    #[test]
    fn worker_that_stops_reading() {
        let pool = pool(2);
        let pid = pool.worker_pids()[0];
        signal(pid, Signal::STOP);
        // 40 × 256 KiB: far more than a pipe holds, so the frames for the stopped worker
        // back up. Submitting must not block on it.
        let big = format!("greet(\"{}\")", "b".repeat(256 << 10));
        let started = Instant::now();
        let futures: Vec<_> = (0..40)
            .map(|_| pool.submit(call(fixtures(), &big)).unwrap())
            .collect();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "submit blocked"
        );
        signal(pid, Signal::KILL);
        for f in &futures {
            match outcome(f) {
                Ok(v) => assert!(v.as_str().is_some_and(|s| s.starts_with("hello, bbb"))),
                Err(e) => assert!(broken(Err(e)).contains(&format!("(pid {pid})"))),
            }
        }
    }

    #[test]
    fn crash_during_shutdown() {
        // CPython's test_shutdown_deadlock: a worker dies after shutdown began.
        let pool = pool(2);
        let tasks = long_tasks(&pool, 4);
        tasks.iter().for_each(until_started);
        pool.shutdown(false, false);
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::scope(|s| {
            s.spawn(|| {
                pool.shutdown(true, false);
                let _ = tx.send(());
            });
            signal(pool.worker_pids()[0], Signal::KILL);
            rx.recv_timeout(SOON).expect("shutdown(wait) returned");
        });
        let reason = broken(outcome(&tasks[0]));
        for f in &tasks {
            assert_eq!(broken(outcome(f)), reason);
        }
        assert!(pool.worker_pids().is_empty());
    }

    #[test]
    fn a_replacement_that_never_greets_breaks_the_pool() {
        // The first worker retires after one task; its replacement never answers.
        let pool = build(
            builder(1)
                .worker_program(script("works-once"))
                .max_tasks_per_worker(1)
                .handshake_timeout(Duration::from_millis(500)),
        );
        let futures: Vec<_> = (0..3)
            .map(|n| {
                pool.submit(call(seed(), &format!("quick-task({n})")))
                    .unwrap()
            })
            .collect();
        assert_eq!(outcome(&futures[0]).unwrap().as_i64(), Some(0));
        let reason = broken(outcome(&futures[1]));
        assert!(
            reason.contains("failed the handshake: no greeting within 500ms"),
            "{reason}"
        );
        assert_eq!(broken(outcome(&futures[2])), reason);
        submit_is_refused(&pool, &reason);
    }

    #[test]
    fn kill_workers_resolves_everything() {
        let pool = pool(2);
        let tasks = long_tasks(&pool, 6);
        tasks[..4].iter().for_each(until_started);
        pool.kill_workers();
        for f in &tasks[..4] {
            assert!(broken(outcome(f)).contains("SIGKILL"));
        }
        for f in &tasks[4..] {
            assert_eq!(
                outcome(f),
                Err(TaskError::Cancelled),
                "queued tasks are cancelled"
            );
        }
        // The pool is broken by the first death it saw, and submit says so.
        let reason = pool
            .broken_reason()
            .expect("killing the workers breaks the pool");
        assert!(reason.contains("killed by signal 9 (SIGKILL)"), "{reason}");
        for f in &tasks[..4] {
            assert_eq!(broken(outcome(f)), reason);
        }
        submit_is_refused(&pool, &reason);
    }

    #[test]
    fn terminate_workers_resolves_everything() {
        let pool = pool(2);
        let tasks = long_tasks(&pool, 4);
        tasks.iter().for_each(until_started);
        pool.terminate_workers();
        for f in &tasks {
            assert!(broken(outcome(f)).contains("SIGTERM"));
        }
    }

    #[test]
    fn respawn_fails_only_the_dead_workers_tasks() {
        let pool = build(builder(2).respawn(true));
        let pids = pool.worker_pids();
        // Handed in turn: worker-1 gets long[0] and long[2], worker-2 long[1] and long[3].
        let long = long_tasks(&pool, 4);
        long.iter().for_each(until_started);
        let quick: Vec<_> = (0..4)
            .map(|n| {
                pool.submit(call(seed(), &format!("quick-task({n})")))
                    .unwrap()
            })
            .collect();
        signal(pids[0], Signal::KILL);
        for f in [&long[0], &long[2]] {
            let reason = broken(outcome(f));
            assert!(
                reason.contains(&format!("worker-1 (pid {}) terminated abruptly", pids[0])),
                "{reason}"
            );
            assert!(reason.contains("a new worker takes its place"), "{reason}");
        }
        // The queued tasks run on the replacement.
        for (n, f) in quick.iter().enumerate() {
            assert_eq!(outcome(f).unwrap().as_i64(), Some(n as i64));
            assert!(!pids.contains(&f.report().unwrap().pid));
        }
        assert!(pool.broken_reason().is_none());
        let now = pool.worker_pids();
        assert_eq!(now.len(), 2);
        assert!(now.contains(&pids[1]) && !now.contains(&pids[0]));
        // worker-2's tasks were untouched.
        assert!(long[1].is_running() && long[3].is_running());
        assert!(long[1].abort() && long[3].abort());
        let f = pool.submit(call(seed(), "quick-task(9)")).unwrap();
        assert_eq!(outcome(&f).unwrap().as_i64(), Some(9));
    }

    /// A replacement that dies before its greeting (killed while it starts, say) is started
    /// again; the pool breaks only when replacements keep failing to start.
    #[test]
    fn respawn_retries_replacements_that_die_while_starting() {
        for (script_name, recovers) in [("starts-fail-twice", true), ("starts-fail-always", false)]
        {
            let pool = build(
                builder(1)
                    .respawn(true)
                    .pipeline_depth(1)
                    .worker_program(script(script_name)),
            );
            let long = long_tasks(&pool, 1);
            until_started(&long[0]);
            let queued = pool.submit(call(seed(), "quick-task(5)")).unwrap();
            signal(pool.worker_pids()[0], Signal::KILL);
            assert!(broken(outcome(&long[0])).contains("SIGKILL"));
            if recovers {
                assert_eq!(outcome(&queued).unwrap().as_i64(), Some(5));
                assert!(pool.broken_reason().is_none());
            } else {
                let reason = broken(outcome(&queued));
                assert!(
                    reason.contains("4 replacement workers in a row failed to start"),
                    "{reason}"
                );
                submit_is_refused(&pool, &reason);
            }
        }
    }

    #[test]
    fn respawn_keeps_going_when_workers_keep_dying() {
        // Every worker aborts when its third task arrives: the pool keeps replacing them.
        let pool = build(
            builder(2)
                .respawn(true)
                .worker_program(script("abort-after-3")),
        );
        let futures: Vec<_> = (0..30)
            .map(|n| {
                pool.submit(call(seed(), &format!("quick-task({n})")))
                    .unwrap()
            })
            .collect();
        let mut failed = 0;
        for (n, f) in futures.iter().enumerate() {
            match outcome(f) {
                Ok(v) => assert_eq!(v.as_i64(), Some(n as i64)),
                Err(e) => {
                    assert!(broken(Err(e)).contains("SIGABRT"));
                    failed += 1;
                }
            }
        }
        assert!(failed > 0 && failed < 30, "{failed}");
        assert!(pool.broken_reason().is_none());
    }
}
