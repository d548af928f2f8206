//! The cluster executor against a real NATS JetStream server (tests/support/nats.rs) and
//! real `wasmpool worker` processes (the binary under test), as a user runs them: the
//! results, the delivery guarantees of the module docs (a worker killed, the server
//! restarted, a poison task, cancel and abort, no worker), what a worker allows, and the
//! `map`/`run --nats` command line.
//!
//! Each test has its own server and queue (`t-<test>`), so they run in parallel. The
//! submitter is always made before the workers: the first to use a queue configures it
//! (a short AckWait here, so a lost worker's tasks come back within seconds).

use std::io::{BufRead, BufReader};
use std::ops::Deref;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;
use tempfile::TempDir;
use wasmpool::cluster::{ClusterBuilder, ClusterExecutor};
use wasmpool::{
    Call, Capabilities, Executor, FutureState, Map, TaskError, TaskErrorKind, TaskFuture,
    TaskReport, TaskValue, ThreadPoolExecutor,
};

use crate::common::{SOON, call, fixtures};
use crate::nats::NatsServer;
use crate::procfs::children_of;

const BIN: &str = env!("CARGO_BIN_EXE_wasmpool");
const FIXTURES: &str = env!("WASMPOOL_FIXTURES_WASM");
/// The queue's AckWait in these tests: a lost worker's tasks are handed out again after it.
const ACK_WAIT: Duration = Duration::from_secs(2);
/// What a worker prints on stderr once it is connected and serving.
const READY: &str = "wasmpool worker: ready";
/// What a worker prints on stderr when it has stopped gracefully.
const STOPPED: &str = "wasmpool worker: stopped: ";
/// The worker's test hook (feature `test-hooks`): `kill-on:FUNC` makes a worker SIGKILL
/// itself when it takes a call of FUNC.
const HOOK: &str = "WASMPOOL_CLUSTER_TEST_HOOK";

/// The compilation cache the workers of all tests share (each compiles the fixture once).
fn worker_cache() -> &'static Path {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

/// Polls `done` until it holds, for at most SOON; panics with `what` otherwise.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + SOON;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {SOON:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------
// The fixture: a server, a queue, and `wasmpool worker` processes

/// A worker's stderr as read so far, and whether it was closed.
#[derive(Default)]
struct Stderr {
    text: Mutex<(String, bool)>,
    changed: Condvar,
}

impl Stderr {
    /// Reads `pipe` on a thread of its own until it closes.
    fn read(pipe: ChildStderr) -> Arc<Stderr> {
        let stderr = Arc::new(Stderr::default());
        let shared = stderr.clone();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut text = shared.text.lock().expect("stderr lock");
                text.0.push_str(&line);
                text.0.push('\n');
                shared.changed.notify_all();
            }
            shared.text.lock().expect("stderr lock").1 = true;
            shared.changed.notify_all();
        });
        stderr
    }

    /// Waits (at most SOON) until `done(text, closed)` holds; returns the text.
    fn wait_until(&self, what: &str, done: impl Fn(&str, bool) -> bool) -> String {
        let deadline = Instant::now() + SOON;
        let mut text = self.text.lock().expect("stderr lock");
        loop {
            if done(&text.0, text.1) {
                return text.0.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{what}: not within {SOON:?}; stderr so far:\n{}",
                text.0
            );
            text = self
                .changed
                .wait_timeout(text, left)
                .expect("stderr lock")
                .0;
        }
    }
}

/// One `wasmpool worker` process.
struct Worker {
    /// Its `--name`: the host its reports name.
    name: String,
    child: Child,
    stderr: Arc<Stderr>,
    /// How it exited, once reaped.
    status: Option<ExitStatus>,
}

/// A NATS server, one queue on it, and the worker processes serving that queue. Dropping it
/// kills and reaps the workers, then the server.
struct Cluster {
    server: NatsServer,
    queue: String,
    workers: Vec<Worker>,
}

impl Cluster {
    /// A server (`None`: no nats-server here, the test returns) and the queue `t-<test>`.
    fn start(test: &str) -> Option<Cluster> {
        let server = NatsServer::start()?;
        Some(Cluster {
            server,
            queue: format!("t-{test}"),
            workers: Vec::new(),
        })
    }

    /// A submitter's settings for this queue, with the tests' short AckWait.
    fn builder(&self) -> ClusterBuilder {
        ClusterExecutor::builder(self.server.url())
            .queue(&self.queue)
            .ack_wait(ACK_WAIT)
    }

    fn submitter(&self) -> Submitter {
        Submitter::new(self.builder())
    }

    /// Starts `wasmpool worker --nats URL --queue Q --name wN ARGS` and waits until it says
    /// it is ready; returns its index.
    fn worker(&mut self, args: &[&str]) -> usize {
        self.worker_with_env(args, &[])
    }

    fn worker_with_env(&mut self, args: &[&str], env: &[(&str, &str)]) -> usize {
        let index = self.workers.len();
        let name = format!("w{index}");
        let mut child = Command::new(BIN)
            .args([
                "worker",
                "--nats",
                &self.server.url(),
                "--queue",
                &self.queue,
            ])
            .args(["--name", &name])
            .args(args)
            .env("XDG_CACHE_HOME", worker_cache())
            .env_remove(HOOK)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {BIN} worker: {e}"));
        let stderr = Stderr::read(child.stderr.take().expect("stderr is piped"));
        self.workers.push(Worker {
            name: name.clone(),
            child,
            stderr: stderr.clone(),
            status: None,
        });
        let text = stderr.wait_until(&format!("worker {name} ready"), |text, closed| {
            text.contains(READY) || closed
        });
        assert!(
            text.contains(READY),
            "worker {name} ended before it was ready:\n{text}\n--- server log ---\n{}",
            self.server.log()
        );
        index
    }

    fn pid(&self, worker: usize) -> u32 {
        self.workers[worker].child.id()
    }

    fn name(&self, worker: usize) -> &str {
        &self.workers[worker].name
    }

    /// SIGKILL, and reap.
    fn kill_worker(&mut self, worker: usize) {
        let w = &mut self.workers[worker];
        w.child.kill().expect("SIGKILL a worker");
        w.status = Some(w.child.wait().expect("reap a worker"));
    }

    /// SIGTERM; waits (at most SOON) until the worker has exited and closed its stderr.
    /// Returns how it exited and what it printed.
    fn stop_worker(&mut self, worker: usize) -> (ExitStatus, String) {
        let pid = Pid::from_raw(self.pid(worker) as i32).expect("a positive pid");
        kill_process(pid, Signal::TERM).expect("SIGTERM a worker");
        let name = self.name(worker).to_string();
        wait_for(&format!("worker {name} exits after SIGTERM"), || {
            self.exited(worker)
        });
        let text = self.workers[worker]
            .stderr
            .wait_until(&format!("worker {name} closes stderr"), |_, closed| closed);
        (self.workers[worker].status.expect("reaped"), text)
    }

    /// Whether `worker` has exited (reaping it).
    fn exited(&mut self, worker: usize) -> bool {
        let w = &mut self.workers[worker];
        if w.status.is_none() {
            w.status = w.child.try_wait().expect("try_wait on a worker");
        }
        w.status.is_some()
    }

    /// The indices of the workers that have exited.
    fn exited_workers(&mut self) -> Vec<usize> {
        (0..self.workers.len())
            .filter(|&w| self.exited(w))
            .collect()
    }

    /// Waits (at most SOON) until `n` workers have exited.
    fn wait_exits(&mut self, n: usize) {
        wait_for(&format!("{n} worker(s) exit"), || {
            self.exited_workers().len() >= n
        });
    }

    /// Checks that `report` names one of the workers, and a process of it: the worker
    /// itself on a thread pool, one of its children on a process pool.
    fn check_report(&self, report: &TaskReport) {
        let host = report
            .host
            .as_deref()
            .expect("a cluster report names the host");
        let worker = self
            .workers
            .iter()
            .position(|w| w.name == host)
            .unwrap_or_else(|| panic!("the report names {host}, not a worker: {report:?}"));
        let pid = self.pid(worker);
        assert!(
            report.pid == pid || children_of(pid).contains(&report.pid),
            "{host} (pid {pid}, children {:?}) did not run the task: {report:?}",
            children_of(pid)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if w.status.is_none() {
                let _ = w.child.kill();
                let _ = w.child.wait();
            }
        }
    }
}

/// A [`ClusterExecutor`] whose drop cannot hang a test: it cancels what has not started and
/// waits (at most SOON, not at all if the test already fails) for the rest; if tasks are
/// still in flight then, it leaks the executor (its own drop would wait for them) and fails
/// the test unless it already fails.
struct Submitter(Option<ClusterExecutor>);

impl Submitter {
    fn new(builder: ClusterBuilder) -> Submitter {
        Submitter(Some(builder.build().expect("connect a ClusterExecutor")))
    }
}

impl Deref for Submitter {
    type Target = ClusterExecutor;

    fn deref(&self) -> &ClusterExecutor {
        self.0.as_ref().expect("the executor lives until drop")
    }
}

impl Drop for Submitter {
    fn drop(&mut self) {
        let Some(executor) = self.0.take() else {
            return;
        };
        executor.shutdown(false, true);
        let deadline = Instant::now() + SOON;
        while executor.in_flight() > 0 && Instant::now() < deadline && !thread::panicking() {
            thread::sleep(Duration::from_millis(10));
        }
        let left = executor.in_flight();
        if left == 0 {
            drop(executor);
            return;
        }
        std::mem::forget(executor);
        if !thread::panicking() {
            panic!("{left} task(s) still in flight {SOON:?} after the test");
        }
    }
}

/// Waits for every task of `map` in input order, each within SOON of the previous (a
/// stalled map fails instead of hanging), calling `each(index)` after each; then checks
/// that the map yields each input exactly once, with its future's outcome. Returns the
/// futures, all done.
fn finish(mut map: Map<'_>, mut each: impl FnMut(usize)) -> Vec<TaskFuture> {
    let futures: Vec<TaskFuture> = map.in_flight().cloned().collect();
    for (i, future) in futures.iter().enumerate() {
        let outcome = future
            .result_timeout(SOON)
            .unwrap_or_else(|_| panic!("input {i}: no outcome within {SOON:?}: {future:?}"));
        each(i);
        let yielded = map.next().unwrap_or_else(|| panic!("the map ended at {i}"));
        assert_eq!(yielded, outcome, "input {i}");
    }
    assert!(map.next().is_none(), "the map yields more than its inputs");
    futures
}

fn outcomes(futures: &[TaskFuture]) -> Vec<Result<TaskValue, TaskError>> {
    futures.iter().map(TaskFuture::result).collect()
}

fn int(outcome: &Result<TaskValue, TaskError>) -> i64 {
    match outcome {
        Ok(value) => value
            .as_i64()
            .unwrap_or_else(|| panic!("not an integer: {value:?}")),
        Err(e) => panic!("failed: {e:?}"),
    }
}

fn value_within_soon(future: &TaskFuture) -> TaskValue {
    future
        .result_timeout(SOON)
        .unwrap_or_else(|_| panic!("no outcome within {SOON:?}: {future:?}"))
        .unwrap_or_else(|e| panic!("failed: {e:?}"))
}

fn error_within_soon(future: &TaskFuture) -> TaskError {
    future
        .error_timeout(SOON)
        .unwrap_or_else(|_| panic!("no outcome within {SOON:?}: {future:?}"))
        .unwrap_or_else(|| panic!("succeeded: {:?}", future.result()))
}

fn submit(executor: &ClusterExecutor, wave: &str) -> TaskFuture {
    executor
        .submit(call(fixtures(), wave))
        .unwrap_or_else(|e| panic!("submit {wave}: {e}"))
}

/// `(tasks run, handed back)` from a worker's stopped line.
fn stopped_summary(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix(STOPPED))
        .unwrap_or_else(|| panic!("no stopped line on the worker's stderr:\n{stderr}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers[..] {
        [run, handed_back] if line.contains("task(s) run") && line.contains("handed back") => {
            (run, handed_back)
        }
        _ => panic!("unexpected stopped line: {line:?}"),
    }
}

fn adds(range: std::ops::Range<i32>) -> Vec<Call> {
    range
        .map(|i| call(fixtures(), &format!("add({i}, {})", 1000 - 3 * i)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Results and reports

#[test]
fn results_equal_the_thread_pools_and_reports_name_the_worker_process() {
    let Some(mut cluster) = Cluster::start("same-results") else {
        return;
    };
    let submitter = cluster.submitter();
    let threads = cluster.worker(&["-j", "2"]);

    // Only the thread-pool worker serves: its tasks run in the worker process itself.
    let futures: Vec<TaskFuture> = (0..8)
        .map(|i| submit(&submitter, &format!("add({i}, 1)")))
        .collect();
    for (i, future) in futures.iter().enumerate() {
        assert_eq!(value_within_soon(future).as_i64(), Some(i as i64 + 1));
        let report = future.report().expect("a finished task has a report");
        assert_eq!(report.host.as_deref(), Some(cluster.name(threads)));
        assert_eq!(report.pid, cluster.pid(threads), "{report:?}");
    }

    let processes = cluster.worker(&["-j", "2", "--pool", "process"]);
    let pool = ThreadPoolExecutor::new(2).expect("thread pool");
    let expected: Vec<_> = pool.map(adds(0..500)).expect("map").collect();
    assert!(expected.iter().all(Result::is_ok), "{expected:?}");
    for chunk in [1, 64] {
        let futures = finish(
            submitter.map_chunked(adds(0..500), chunk).expect("map"),
            |_| {},
        );
        assert_eq!(outcomes(&futures), expected, "chunks of {chunk}");
        for future in &futures {
            cluster.check_report(&future.report().expect("report"));
        }
    }

    // Failures: the same error kinds and messages as on the thread pool.
    let failing = || {
        ["trap-unreachable()", "fail-with(7)", "add(2, 3)"]
            .map(|wave| call(fixtures(), wave))
            .to_vec()
    };
    let expected: Vec<_> = pool.map(failing()).expect("map").collect();
    let kinds = |outcomes: &[Result<TaskValue, TaskError>]| -> Vec<Result<TaskValue, (TaskErrorKind, String)>> {
        outcomes
            .iter()
            .map(|o| o.clone().map_err(|e| (e.kind(), e.to_string())))
            .collect()
    };
    assert_eq!(
        expected[0].as_ref().map_err(TaskError::kind),
        Err(TaskErrorKind::Trap)
    );
    assert_eq!(
        expected[1].as_ref().map_err(TaskError::kind),
        Err(TaskErrorKind::Failed)
    );
    for chunk in [1, 64] {
        let futures = finish(
            submitter.map_chunked(failing(), chunk).expect("map"),
            |_| {},
        );
        assert_eq!(
            kinds(&outcomes(&futures)),
            kinds(&expected),
            "chunks of {chunk}"
        );
    }

    // The thread-pool worker leaves: now the process-pool worker's children run the tasks.
    let (status, _) = cluster.stop_worker(threads);
    assert!(status.success(), "{status}");
    let futures: Vec<TaskFuture> = (0..8)
        .map(|i| submit(&submitter, &format!("add({i}, 2)")))
        .collect();
    for (i, future) in futures.iter().enumerate() {
        assert_eq!(value_within_soon(future).as_i64(), Some(i as i64 + 2));
        let report = future.report().expect("report");
        assert_eq!(report.host.as_deref(), Some(cluster.name(processes)));
        let children = children_of(cluster.pid(processes));
        assert!(
            children.contains(&report.pid),
            "{report:?} not in {children:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Delivery: a lost worker, a server restart, a poison task

/// `sleep-ms` of 20 to 39 ms: 200 of them last a few seconds on two 2-slot workers.
fn sleeps() -> (Vec<Call>, Vec<i64>) {
    let ms: Vec<i64> = (0..200).map(|i| 20 + i % 20).collect();
    let calls = ms
        .iter()
        .map(|ms| call(fixtures(), &format!("sleep-ms({ms})")))
        .collect();
    (calls, ms)
}

#[test]
fn a_worker_killed_mid_map_loses_no_task() {
    let Some(mut cluster) = Cluster::start("killed-worker") else {
        return;
    };
    let submitter = cluster.submitter();
    let doomed = cluster.worker(&["-j", "2"]);
    let survivor = cluster.worker(&["-j", "2"]);
    let (calls, expected) = sleeps();
    let futures = finish(submitter.map(calls).expect("map"), |i| {
        if i == 19 {
            cluster.kill_worker(doomed);
        }
    });
    let values: Vec<i64> = outcomes(&futures).iter().map(int).collect();
    assert_eq!(values, expected);
    assert_eq!(
        cluster.workers[doomed].status.and_then(|s| s.signal()),
        Some(9)
    );
    let hosts: Vec<String> = futures
        .iter()
        .map(|f| f.report().and_then(|r| r.host).expect("host"))
        .collect();
    assert!(hosts.iter().any(|h| h == cluster.name(doomed)), "{hosts:?}");
    assert!(
        hosts.iter().any(|h| h == cluster.name(survivor)),
        "{hosts:?}"
    );
}

#[test]
fn a_server_restart_mid_map_loses_no_task() {
    let Some(mut cluster) = Cluster::start("server-restart") else {
        return;
    };
    let submitter = cluster.submitter();
    cluster.worker(&["-j", "2"]);
    cluster.worker(&["-j", "2"]);
    let (calls, expected) = sleeps();
    let mut restarted = false;
    let futures = finish(submitter.map(calls).expect("map"), |i| {
        if i == 19 {
            cluster.server.restart();
            restarted = true;
        }
    });
    assert!(restarted);
    let values: Vec<i64> = outcomes(&futures).iter().map(int).collect();
    assert_eq!(values, expected);
    // Both workers are still serving after the restart.
    assert_eq!(cluster.exited_workers(), Vec::<usize>::new());
    let after = submit(&submitter, "add(20, 22)");
    assert_eq!(value_within_soon(&after).as_i64(), Some(42));
}

#[test]
fn a_poison_task_fails_alone_after_max_deliver_lost_workers() {
    let Some(mut cluster) = Cluster::start("poison") else {
        return;
    };
    let submitter = Submitter::new(cluster.builder().max_deliver(3));
    // Three workers die of the poison; the fourth is left to serve.
    for _ in 0..4 {
        cluster.worker_with_env(&["-j", "1"], &[(HOOK, "kill-on:trap-unreachable")]);
    }
    let add = |i: i32| call(fixtures(), &format!("add({i}, 1)"));
    // A task held by a worker that dies counts a delivery too (module docs): so that only
    // the poison can reach the limit, it is submitted once the tasks before it are done,
    // and the tasks after it once it has killed its first worker (they can share at most
    // two of its deaths, and get a third delivery).
    let before = (0..10).map(add);
    let poison = std::iter::once_with(|| {
        wait_for("the tasks before the poison are done", || {
            submitter.in_flight() == 0
        });
        call(fixtures(), "trap-unreachable()")
    });
    let after = std::iter::once_with(|| cluster.wait_exits(1)).flat_map(|()| (11..21).map(add));
    let map = submitter
        .map(before.chain(poison).chain(after))
        .expect("map");
    let futures = finish(map, |_| {});
    for (i, outcome) in outcomes(&futures).iter().enumerate() {
        if i == 10 {
            let error = outcome.clone().expect_err("the poison task fails");
            assert_eq!(error.kind(), TaskErrorKind::BrokenPool, "{error:?}");
            let message = error.to_string();
            assert!(message.contains("worker lost"), "{message}");
            assert!(message.contains("3 times"), "{message}");
        } else {
            assert_eq!(int(outcome), i as i64 + 1, "input {i}");
        }
    }
    // Exactly the three workers that took it died, by SIGKILL; the fourth serves on.
    let exited = cluster.exited_workers();
    assert_eq!(exited.len(), 3, "{exited:?}");
    for w in exited {
        assert_eq!(cluster.workers[w].status.and_then(|s| s.signal()), Some(9));
    }
    let after = submit(&submitter, "add(40, 2)");
    assert_eq!(value_within_soon(&after).as_i64(), Some(42));
}

// ---------------------------------------------------------------------------------------
// Cancel, abort, no worker, queue time-out, graceful stop

#[test]
fn withdrawn_tasks_are_never_run_by_a_worker_started_later() {
    let Some(mut cluster) = Cluster::start("withdrawn") else {
        return;
    };
    let out = tempfile::tempdir().expect("temp dir");
    let caps = Capabilities::default().dir_writable(out.path(), "/out");
    let submitter = Submitter::new(cluster.builder().capabilities(caps.clone()));
    let impatient = Submitter::new(
        cluster
            .builder()
            .capabilities(caps)
            .queue_timeout(Duration::from_millis(500)),
    );
    // No worker yet: one task is cancelled, one fails its queue time-out. Both are withdrawn.
    let cancelled = submit(&submitter, r#"write-file("/out/cancelled", "ran")"#);
    assert!(cancelled.cancel());
    let timed_out = submit(&impatient, r#"write-file("/out/timed-out", "ran")"#);
    assert_eq!(
        error_within_soon(&timed_out).kind(),
        TaskErrorKind::QueueTimeout
    );

    let worker = cluster.worker(&[
        "-j",
        "1",
        "--allow-dir-rw",
        &out.path().display().to_string(),
    ]);
    let marker = submit(&submitter, r#"write-file("/out/marker", "ran")"#);
    value_within_soon(&marker);
    // A graceful stop finishes whatever the worker runs: nothing can still be on its way.
    let (status, stderr) = cluster.stop_worker(worker);
    assert!(status.success(), "{status}\n{stderr}");
    assert!(out.path().join("marker").exists());
    assert!(cancelled.is_cancelled());
    assert!(
        !out.path().join("cancelled").exists(),
        "a worker ran a task cancelled before it started\n{stderr}"
    );
    assert!(
        !out.path().join("timed-out").exists(),
        "a worker ran a task withdrawn at its queue time-out\n{stderr}"
    );
    assert_eq!(stopped_summary(&stderr), (1, 0), "{stderr}");
}

#[test]
fn abort_stops_a_running_task_and_frees_the_worker() {
    let Some(mut cluster) = Cluster::start("abort") else {
        return;
    };
    let submitter = cluster.submitter();
    // One slot: the next task runs only if the endless one was stopped.
    let worker = cluster.worker(&["-j", "1"]);
    let endless = submit(&submitter, "loop-forever()");
    endless
        .wait_started(SOON)
        .expect("a worker began the endless task");
    assert!(endless.abort());
    assert!(endless.is_cancelled());
    assert_eq!(endless.result(), Err(TaskError::Cancelled));
    let next = submit(&submitter, "add(2, 3)");
    assert_eq!(value_within_soon(&next).as_i64(), Some(5));
    let (status, stderr) = cluster.stop_worker(worker);
    assert!(status.success(), "{status}\n{stderr}");
    // The aborted task sends no result: the worker ran (and reported) one task.
    assert_eq!(stopped_summary(&stderr), (1, 0), "{stderr}");
    assert!(endless.is_cancelled());
}

#[test]
fn tasks_wait_for_a_worker_started_after_they_were_submitted() {
    let Some(mut cluster) = Cluster::start("late-worker") else {
        return;
    };
    let submitter = cluster.submitter();
    let futures: Vec<TaskFuture> = (0..20)
        .map(|i| submit(&submitter, &format!("add({i}, 5)")))
        .collect();
    // Nobody takes them: they stay pending (this wait is expected to time out).
    assert!(futures[0].wait_started(Duration::from_millis(500)).is_err());
    for future in &futures {
        assert_eq!(future.state(), FutureState::Pending);
    }
    cluster.worker(&["-j", "2"]);
    for (i, future) in futures.iter().enumerate() {
        assert_eq!(value_within_soon(future).as_i64(), Some(i as i64 + 5));
    }
}

#[test]
fn a_task_no_worker_begins_fails_at_the_queue_timeout() {
    let Some(cluster) = Cluster::start("queue-timeout") else {
        return;
    };
    let limit = Duration::from_millis(500);
    let submitter = Submitter::new(cluster.builder().queue_timeout(limit));
    let submitted = Instant::now();
    let futures: Vec<TaskFuture> = (0..3)
        .map(|i| submit(&submitter, &format!("add({i}, 1)")))
        .collect();
    for future in &futures {
        let error = error_within_soon(future);
        assert_eq!(error.kind(), TaskErrorKind::QueueTimeout, "{error:?}");
        assert_eq!(error, TaskError::QueueTimeout { limit });
    }
    assert!(submitted.elapsed() >= limit);
}

#[test]
fn sigterm_lets_the_running_task_finish_and_hands_back_the_queued_ones() {
    let Some(mut cluster) = Cluster::start("graceful-stop") else {
        return;
    };
    let submitter = cluster.submitter();
    let first = cluster.worker(&["-j", "1"]);
    // A first task loads the component: a task this worker takes from now on begins at once
    // (a worker says it began a task when it takes it, before it loads the component).
    assert_eq!(
        value_within_soon(&submit(&submitter, "add(0, 7)")).as_i64(),
        Some(7)
    );
    // The worker takes the long task, and holds or is sent some of the others while it runs
    // (one slot).
    let running = submit(&submitter, "sleep-ms(2000)");
    let queued: Vec<TaskFuture> = (0..5)
        .map(|i| submit(&submitter, &format!("add({i}, 100)")))
        .collect();
    running.wait_started(SOON).expect("a worker began the task");
    assert!(!running.is_done());
    let (status, stderr) = cluster.stop_worker(first);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(value_within_soon(&running).as_i64(), Some(2000));
    let host = running.report().and_then(|r| r.host);
    assert_eq!(host.as_deref(), Some(cluster.name(first)));
    let (run, handed_back) = stopped_summary(&stderr);
    assert_eq!(run, 2, "{stderr}");
    assert!(handed_back <= 5, "{stderr}");
    // Another worker runs the tasks the first one handed back (or never took).
    let second = cluster.worker(&["-j", "1"]);
    for (i, future) in queued.iter().enumerate() {
        let outcome = future
            .result_timeout(SOON)
            .unwrap_or_else(|_| panic!("no outcome within {SOON:?}: {future:?}"));
        assert_eq!(
            outcome.as_ref().map(TaskValue::as_i64),
            Ok(Some(i as i64 + 100)),
            "queued task {i}; the first worker said:\n{stderr}"
        );
        let host = future.report().and_then(|r| r.host);
        assert_eq!(host.as_deref(), Some(cluster.name(second)));
    }
}

// ---------------------------------------------------------------------------------------
// What a worker allows; two submitters

#[test]
fn a_worker_grants_only_the_directories_it_allows() {
    let Some(mut cluster) = Cluster::start("dirs") else {
        return;
    };
    let granted = tempfile::tempdir().expect("temp dir");
    std::fs::write(granted.path().join("data.txt"), "on the worker's disk").expect("write");
    let other = tempfile::tempdir().expect("temp dir");
    std::fs::write(other.path().join("data.txt"), "secret").expect("write");
    let asking = |caps: Capabilities| Submitter::new(cluster.builder().capabilities(caps));
    let outside = asking(Capabilities::default().dir(other.path(), "/data"));
    let writing = asking(Capabilities::default().dir_writable(granted.path(), "/data"));
    let reading = asking(Capabilities::default().dir(granted.path(), "/data"));
    cluster.worker(&[
        "-j",
        "1",
        "--allow-dir",
        &granted.path().display().to_string(),
    ]);

    let read = r#"read-file("/data/data.txt")"#;
    let error = error_within_soon(&submit(&outside, read));
    assert_eq!(error.kind(), TaskErrorKind::Refused, "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&other.path().display().to_string()),
        "{message}"
    );
    let error = error_within_soon(&submit(&writing, read));
    assert_eq!(error.kind(), TaskErrorKind::Refused, "{error:?}");
    assert!(error.to_string().contains("read-only"), "{error}");

    let value = value_within_soon(&submit(&reading, read));
    assert_eq!(value.as_str(), Some("on the worker's disk"), "{value:?}");
}

#[test]
fn two_submitters_on_one_queue_each_get_their_own_results() {
    let Some(mut cluster) = Cluster::start("two-submitters") else {
        return;
    };
    let a = cluster.submitter();
    let b = cluster.submitter();
    assert_ne!(a.submitter_id(), b.submitter_id());
    cluster.worker(&["-j", "2"]);
    cluster.worker(&["-j", "2"]);
    // The component is uploaded once, before both submit at once: two submitters uploading
    // the same component at the same moment is another test's matter
    // (a_component_whose_chunks_vanish_fails_its_task_instead_of_hanging_the_worker).
    assert_eq!(
        value_within_soon(&submit(&a, "add(1, 1)")).as_i64(),
        Some(2)
    );
    // The same task ids on both sides, different values.
    let run = |submitter: &Submitter, offset: i64| -> Vec<i64> {
        let calls = (0..150).map(|i| call(fixtures(), &format!("add({i}, {offset})")));
        let futures = finish(submitter.map(calls).expect("map"), |_| {});
        outcomes(&futures).iter().map(int).collect()
    };
    let (got_a, got_b) = thread::scope(|s| {
        let a = s.spawn(|| run(&a, 0));
        let b = s.spawn(|| run(&b, 100_000));
        (a.join().expect("a"), b.join().expect("b"))
    });
    assert_eq!(got_a, (0..150).collect::<Vec<i64>>());
    assert_eq!(got_b, (100_000..100_150).collect::<Vec<i64>>());
}

/// What a worker sees when two submitters upload the same component at once: the object
/// store's entry names chunks that the second upload has just purged (async-nats's `put`
/// of an existing name purges the old chunks once its own are stored). Made here on
/// purpose: the component's entry is put, then its chunks are purged; the submitter finds
/// the entry and does not upload again.
#[test]
fn a_component_whose_chunks_vanish_fails_its_task_instead_of_hanging_the_worker() {
    use async_nats::jetstream;
    use sha2::{Digest, Sha256};

    let Some(mut cluster) = Cluster::start("vanished-chunks") else {
        return;
    };
    // Creates the queue and the component store.
    let submitter = cluster.submitter();
    let bytes = std::fs::read(FIXTURES).expect("read the fixture component");
    let hash: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let url = cluster.server.url();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(async {
            let client = async_nats::connect(url).await.expect("connect");
            let js = jetstream::new(client);
            let store = js
                .get_object_store("wasmpool-components")
                .await
                .expect("the component store");
            let info = store
                .put(hash.as_str(), &mut bytes.as_slice())
                .await
                .expect("put the component");
            js.get_stream("OBJ_wasmpool-components")
                .await
                .expect("the store's stream")
                .purge()
                .filter(format!("$O.wasmpool-components.C.{}", info.nuid))
                .await
                .expect("purge the component's chunks");
        });
    cluster.worker(&["-j", "1"]);
    let future = submit(&submitter, "add(1, 2)");
    let error = error_within_soon(&future);
    assert_eq!(
        error.kind(),
        TaskErrorKind::ComponentUnavailable,
        "{error:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The command line: map and run --nats

#[test]
fn cli_map_and_run_on_the_cluster() {
    let Some(mut cluster) = Cluster::start("cli") else {
        return;
    };
    let url = cluster.server.url();
    let queue = cluster.queue.clone();
    let worker = cluster.worker(&["-j", "2"]);
    let input: String = (0..100).map(|i| format!("{i}, 1\n")).collect();
    let assert = assert_cmd::Command::new(BIN)
        .env("XDG_CACHE_HOME", worker_cache())
        .args(["map", "--nats", &url, "--queue", &queue, FIXTURES, "add"])
        .args(["--output", "json"])
        .write_stdin(input)
        .timeout(SOON * 2)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    let objects: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect();
    assert_eq!(objects.len(), 100, "{stdout}");
    let mut seen = [false; 100];
    for object in &objects {
        let index = object["index"].as_u64().expect("index") as usize;
        assert!(!seen[index], "index {index} twice:\n{stdout}");
        seen[index] = true;
        assert_eq!(object["ok"], (index + 1).to_string(), "{object}");
        assert_eq!(object["host"], cluster.name(worker), "{object}");
    }

    let assert = assert_cmd::Command::new(BIN)
        .env("XDG_CACHE_HOME", worker_cache())
        .args([
            "run",
            "--nats",
            &url,
            "--queue",
            &queue,
            FIXTURES,
            "add(2, 3)",
        ])
        .timeout(SOON * 2)
        .assert()
        .success();
    assert_eq!(String::from_utf8_lossy(&assert.get_output().stdout), "5\n");
}

/// `bytes` with a custom section `name` of `size` bytes appended (a component may carry
/// custom sections anywhere at its top level; they change nothing it does).
fn with_custom_section(bytes: &[u8], name: &str, size: usize) -> Vec<u8> {
    fn uleb(out: &mut Vec<u8>, mut n: usize) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut contents = Vec::with_capacity(size + name.len() + 8);
    uleb(&mut contents, name.len());
    contents.extend_from_slice(name.as_bytes());
    contents.resize(contents.len() + size, 0x5a);
    let mut out = bytes.to_vec();
    out.push(0);
    uleb(&mut out, contents.len());
    out.extend_from_slice(&contents);
    out
}

#[test]
fn a_20_mib_component_travels_by_content_and_precompiled_code_never_does() {
    let Some(mut cluster) = Cluster::start("large") else {
        return;
    };
    let fixture = std::fs::read(FIXTURES).expect("fixture component");
    let large = with_custom_section(&fixture, "ballast", 20 << 20);
    let component = wasmpool::TaskComponent::from_bytes(&large).expect("the large component loads");
    assert_eq!(component.source().map(|s| s.len()), Some(large.len()));
    let submitter = cluster.submitter();
    cluster.worker(&["-j", "1"]);
    let sum = submitter
        .submit(component.call_wave("add(20, 22)").expect("call"))
        .expect("submit");
    assert_eq!(value_within_soon(&sum).as_i64(), Some(42));

    // Code compiled here is never shipped: a component known only by its precompiled form
    // is refused at submit, with the way out in the message.
    let cwasm = fixtures().precompiled().expect("precompiled");
    // SAFETY: the bytes were made by `precompiled` just above, with the same runtime.
    let precompiled = unsafe {
        fixtures()
            .runtime()
            .load_precompiled(&cwasm, "fixture.cwasm")
    }
    .expect("loads");
    let refused = submitter
        .submit(precompiled.call_wave("add(1, 2)").expect("call"))
        .expect_err("refused");
    let message = refused.to_string();
    assert!(
        message.contains("precompiled") && message.contains("set_source"),
        "{message}"
    );
}
