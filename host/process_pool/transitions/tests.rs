//! The rules, one scenario each, on a `State` with no pool around it (the workers are
//! `true` processes; nothing is sent).

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::unbounded;

use super::super::state::{Component, Handed, Rules, Task, deadline_grace};
use super::*;
use crate::future::{TaskFuture, promise};

mod chunks;

const PID: u32 = 4242;

fn state(respawn: bool) -> State {
    let mut st = State::new(Rules {
        workers: 2,
        on_demand: false,
        respawn,
        max_tasks_per_worker: None,
        pipeline_depth: Some(2),
    });
    st.started = true;
    st
}

/// Registers worker `serial` (greeted if `ready`) running `tasks`.
fn add(st: &mut State, serial: u64, ready: bool, tasks: &[u64]) -> Vec<TaskFuture> {
    let child = Command::new("true").spawn().expect("true runs");
    let (tx, _rx) = unbounded();
    let name: Arc<str> = Arc::from(format!("worker-{serial}"));
    let mut worker = Worker::new(serial, name, PID, Arc::new(Mutex::new(child)), tx);
    worker.ready = ready;
    let mut futures = Vec::new();
    for &id in tasks {
        let (promise, future) = promise();
        assert!(promise.set_running_or_notify_cancel());
        worker.in_flight.push_back(Handed {
            task: Task {
                id,
                promise,
                timeout: None,
                calls: 1,
            },
            component: component(),
            frames: Arc::new(Vec::new()),
            frame: 0..0,
        });
        futures.push(future);
    }
    st.spawning += 1;
    assert!(st.on_spawned(worker));
    futures
}

fn component() -> Arc<Component> {
    Arc::new(Component {
        id: 1,
        load: Frame::Whole(Vec::new()),
    })
}

fn gone(serial: u64, end: End, exit: &str) -> Event {
    Event::Gone {
        serial,
        end,
        exit: exit.to_string(),
    }
}

fn reasons(fx: &Effects) -> Vec<String> {
    fx.failed
        .iter()
        .map(|(_, e)| match e {
            TaskError::BrokenPool { reason } => reason.clone(),
            other => panic!("not a broken pool: {other:?}"),
        })
        .collect()
}

fn run(outcome: Result<crate::value::TaskValue, TaskError>) -> TaskRun {
    let mut run = TaskRun::failed(TaskError::Cancelled, Duration::ZERO);
    run.outcome = outcome;
    run
}

const KILLED: &str = "worker-1 (pid 4242) terminated abruptly while running 2 tasks: \
                      killed by signal 9 (SIGKILL)";

#[test]
fn a_strict_pool_breaks_when_a_ready_worker_dies() {
    let mut st = state(false);
    add(&mut st, 1, true, &[1, 2]);
    add(&mut st, 2, true, &[]);
    let fx = st.on(gone(1, End::Eof, "killed by signal 9 (SIGKILL)"));
    assert_eq!(reasons(&fx), [KILLED, KILLED]);
    assert_eq!(st.broken_reason().as_deref(), Some(KILLED));
    assert_eq!(fx.kill.len(), 1, "the other worker is killed");
    assert_eq!(fx.spawn, 0);
    assert!(fx.wake);
    assert_eq!(st.check_open(), Err(SubmitError::BrokenPool(KILLED.into())));
}

#[test]
fn respawn_fails_only_the_dead_workers_tasks_and_replaces_it() {
    let mut st = state(true);
    add(&mut st, 1, true, &[1, 2]);
    add(&mut st, 2, true, &[3]);
    let fx = st.on(gone(1, End::Eof, "killed by signal 9 (SIGKILL)"));
    let expected = format!("{KILLED}; a new worker takes its place (respawn mode)");
    assert_eq!(reasons(&fx), [expected.clone(), expected]);
    assert_eq!((fx.spawn, st.spawning), (1, 1));
    assert!(fx.kill.is_empty());
    assert_eq!(st.broken_reason(), None);
    assert_eq!(st.workers.len(), 1);
    assert_eq!(
        st.workers[0].in_flight.len(),
        1,
        "the other worker's task goes on"
    );
}

#[test]
fn respawn_gives_up_after_four_replacements_in_a_row_fail_to_start() {
    let mut st = state(true);
    for serial in 1..=3 {
        add(&mut st, serial, false, &[]);
        let fx = st.on(gone(serial, End::Eof, "exited with code 1"));
        assert_eq!(fx.spawn, 1, "replacement {serial} is started again");
        assert_eq!(
            fx.warnings,
            [format!(
                "worker-{serial} (pid 4242) terminated abruptly: exited with code 1; \
                 starting another worker (respawn mode)"
            )]
        );
        assert!(fx.failed.is_empty() && fx.kill.is_empty());
        assert_eq!(st.broken_reason(), None);
    }
    add(&mut st, 4, false, &[]);
    let fx = st.on(gone(4, End::Eof, "exited with code 1"));
    assert_eq!(fx.spawn, 0);
    assert_eq!(
        st.broken_reason().as_deref(),
        Some(
            "worker-4 (pid 4242) terminated abruptly: exited with code 1; 4 replacement \
             workers in a row failed to start, so respawn mode gives up"
        )
    );
}

#[test]
fn a_greeting_resets_the_failed_starts() {
    let mut st = state(true);
    add(&mut st, 1, false, &[]);
    let _ = st.on(gone(1, End::Eof, "exited with code 1"));
    assert_eq!(st.failed_starts, 1);
    add(&mut st, 2, false, &[]);
    let fx = st.on(Event::Greeted { serial: 2 });
    assert!(fx.wake);
    assert!(st.workers[0].ready);
    assert_eq!(st.failed_starts, 0);
}

#[test]
fn an_expected_eof_after_close_has_no_effects() {
    let mut st = state(false);
    add(&mut st, 1, true, &[]);
    let fx = st.on_shutdown(false);
    assert!(st.workers[0].tx.is_none(), "the idle worker is closed");
    assert!(fx.failed.is_empty() && fx.cancelled.is_empty());
    let fx = st.on(gone(1, End::Eof, "exited with code 0"));
    assert!(fx.failed.is_empty() && fx.kill.is_empty() && fx.completed.is_empty());
    assert!(fx.warnings.is_empty() && fx.violation.is_none());
    assert_eq!(fx.spawn, 0);
    assert_eq!(st.broken_reason(), None);
    assert!(st.all_gone());
}

#[test]
fn a_result_for_a_task_the_worker_was_not_running_is_a_violation() {
    let mut st = state(false);
    let futures = add(&mut st, 1, true, &[1]);
    let results = vec![
        (1, run(Ok(crate::value::TaskValue::unit()))),
        (99, run(Err(TaskError::Cancelled))),
    ];
    let fx = st.on(Event::Results { serial: 1, results });
    assert_eq!(fx.completed.len(), 1, "the result before it counts");
    assert_eq!(fx.completed[0].2.to_report().worker, "worker-1");
    assert_eq!(fx.completed[0].2.to_report().pid, PID);
    assert_eq!(
        fx.violation,
        Some(ProtocolError::Malformed(
            "a result for task 99, which it was not running".into()
        ))
    );
    drop(fx);
    assert!(futures[0].is_done());
    // The reader then ends the channel: the worker sent a malformed message.
    let fx = st.on(gone(
        1,
        End::Protocol(ProtocolError::Malformed("x".into())),
        "killed by signal 9 (SIGKILL)",
    ));
    assert_eq!(
        st.broken_reason().as_deref(),
        Some("worker-1 (pid 4242) sent a malformed message and was stopped: malformed frame: x")
    );
    assert!(fx.wake);
}

#[test]
fn a_stray_result_in_a_broken_pool_is_skipped() {
    let mut st = state(false);
    add(&mut st, 1, true, &[]);
    let _ = st.on_abandon();
    let results = vec![(5, run(Err(TaskError::Cancelled)))];
    let fx = st.on(Event::Results { serial: 1, results });
    assert!(fx.violation.is_none() && fx.completed.is_empty());
}

#[test]
fn a_failed_initializer_breaks_the_pool() {
    let mut st = state(false);
    add(&mut st, 1, true, &[1, 2]);
    let reason = "the initializer failed: boom".to_string();
    let first = run(Err(TaskError::BrokenPool {
        reason: reason.clone(),
    }));
    let fx = st.on(Event::Results {
        serial: 1,
        results: vec![(1, first)],
    });
    assert_eq!(fx.completed.len(), 1);
    assert_eq!(
        reasons(&fx),
        [reason.as_str()],
        "the other task fails with it"
    );
    assert_eq!(st.broken_reason(), Some(reason));
    assert_eq!(fx.kill.len(), 1);
}

#[test]
fn the_start_waits_for_every_greeting() {
    let mut st = state(false);
    st.started = false;
    add(&mut st, 1, false, &[]);
    add(&mut st, 2, false, &[]);
    assert!(st.start_verdict().is_none());
    let _ = st.on(Event::Greeted { serial: 1 });
    assert!(st.start_verdict().is_none());
    let _ = st.on(Event::Greeted { serial: 2 });
    assert!(matches!(st.start_verdict(), Some(Ok(()))));
    assert!(st.started);
}

#[test]
fn the_start_fails_with_the_first_workers_failure() {
    let mut st = state(true);
    st.started = false;
    add(&mut st, 1, false, &[]);
    add(&mut st, 2, false, &[]);
    let timeout = ProtocolError::HandshakeTimeout(Duration::from_millis(500));
    let fx = st.on(gone(
        1,
        End::Handshake(timeout.clone()),
        "killed by signal 9 (SIGKILL)",
    ));
    assert_eq!(
        fx.spawn, 0,
        "a first start is not retried, even in respawn mode"
    );
    assert!(st.broken_reason().is_some_and(|r| {
        r.starts_with("worker-1 (pid 4242) failed the handshake: no greeting within 500ms")
    }));
    let Some(Err(failure)) = st.start_verdict() else {
        panic!("the start failed");
    };
    assert_eq!(failure.worker, "worker-1");
    assert_eq!(failure.reason, timeout.to_string());
    assert_eq!(failure.source, Some(timeout));
}

#[test]
fn a_worker_that_ends_before_its_greeting_says_so() {
    let mut st = state(false);
    st.started = false;
    add(&mut st, 1, false, &[]);
    let _ = st.on(gone(1, End::Eof, "exited with code 3"));
    let Some(Err(failure)) = st.start_verdict() else {
        panic!("the start failed");
    };
    assert_eq!(
        failure.reason,
        "it ended before the handshake (exited with code 3)"
    );
    assert_eq!(failure.source, None);
}

#[test]
fn a_failed_spawn_breaks_the_pool() {
    let mut st = state(true);
    st.spawning = 3;
    let fx = st.on_spawn_failed(&std::io::Error::other("cannot run /nope: gone"), 2);
    assert!(fx.wake);
    assert_eq!(st.spawning, 0);
    assert_eq!(
        st.broken_reason().as_deref(),
        Some("cannot start a new worker: cannot run /nope: gone")
    );
    let fx = st.on_abandon();
    assert!(fx.failed.is_empty(), "broken already: nothing more");
    assert_eq!(
        st.broken_reason().as_deref(),
        Some("cannot start a new worker: cannot run /nope: gone")
    );
}

#[test]
fn shutdown_with_cancel_takes_the_queue_and_refuses_submits() {
    let mut st = state(false);
    let (batch, future) = one_task(1);
    let fx = st.on_submit(vec![batch]).map_err(|_| ()).expect("open");
    assert!(fx.failed.is_empty());
    assert_eq!(st.queue.len(), 1, "no worker yet: it waits");
    let fx = st.on_shutdown(true);
    assert_eq!(fx.cancelled.len(), 1);
    assert!(st.queue.is_empty());
    assert!(
        !future.is_done(),
        "cancelling is the pool's job, after the lock"
    );
    assert_eq!(st.check_open(), Err(SubmitError::Shutdown));
}

#[test]
fn an_abort_goes_to_the_worker_running_the_task() {
    let mut st = state(false);
    add(&mut st, 1, true, &[1]);
    add(&mut st, 2, true, &[2]);
    assert!(
        st.abort_route(2)
            .is_some_and(|tx| tx.same_channel(st.workers[1].tx.as_ref().unwrap()))
    );
    assert!(st.abort_route(3).is_none());
}

#[test]
fn a_worker_that_overruns_a_deadline_is_stopped_and_its_waiting_tasks_go_to_another() {
    let mut st = state(false);
    let futures = add(&mut st, 1, true, &[1, 2]);
    let _idle = add(&mut st, 2, true, &[]);
    let started = std::time::Instant::now();
    st.workers[0].head_since = started;
    st.workers[0].in_flight[0].task.timeout = Some(Duration::from_secs(1));
    let due = started + Duration::from_secs(1) + deadline_grace(Duration::from_secs(1));
    assert_eq!(st.next_deadline(), Some(due));

    let early = st.on_overrun(due - Duration::from_millis(1));
    assert!(
        early.completed.is_empty() && early.kill.is_empty(),
        "not due yet"
    );

    let fx = st.on_overrun(due);
    assert_eq!(fx.completed.len(), 1, "the running task fails");
    assert!(matches!(
        &fx.completed[0].1,
        Err(TaskError::Timeout { limit }) if *limit == Duration::from_secs(1)
    ));
    assert_eq!(fx.completed[0].2.to_report().worker, "worker-1");
    assert_eq!(fx.kill.len(), 1, "the worker is killed");
    assert_eq!(fx.spawn, 1, "and replaced");
    assert!(fx.failed.is_empty(), "the pool does not break");
    assert!(st.workers[0].tx.is_none() && st.workers[0].in_flight.is_empty());
    let moved: Vec<u64> = st.workers[1].in_flight.iter().map(|h| h.task.id).collect();
    assert_eq!(
        moved,
        [2],
        "the task that waited behind it runs on the idle worker"
    );
    assert!(!futures[1].is_done());
    assert_eq!(st.next_deadline(), None);
    assert!(st.check_open().is_ok());

    // Its channel ends when it dies: expected, nothing more fails.
    let fx = st.on(gone(1, End::Eof, "killed by signal 9 (SIGKILL)"));
    assert!(fx.failed.is_empty() && st.check_open().is_ok());
}

#[test]
fn a_task_without_a_timeout_has_no_deadline_in_the_pool() {
    let mut st = state(false);
    let _futures = add(&mut st, 1, true, &[1]);
    assert_eq!(st.next_deadline(), None);
    let fx = st.on_overrun(std::time::Instant::now() + Duration::from_secs(86_400));
    assert!(fx.completed.is_empty() && fx.kill.is_empty());
}

/// A batch of one task, not started.
fn one_task(id: u64) -> (Batch, TaskFuture) {
    let (promise, future) = promise();
    let batch = Batch {
        tasks: vec![Task {
            id,
            promise,
            timeout: None,
            calls: 1,
        }],
        frames: vec![0],
        ends: vec![1],
        component: component(),
        resumed: false,
    };
    (batch, future)
}

#[test]
fn an_on_demand_pool_starts_a_worker_for_each_task_that_would_wait() {
    let mut st = state(false);
    st.rules.on_demand = true;
    st.rules.workers = 3;
    let _idle = add(&mut st, 1, true, &[]);
    let (batches, _futures): (Vec<Batch>, Vec<TaskFuture>) = (1..=4).map(one_task).unzip();
    let fx = st.on_submit(batches).map_err(|_| ()).expect("open");
    assert_eq!(
        st.workers[0].in_flight.len(),
        1,
        "the idle worker takes one"
    );
    assert_eq!(fx.spawn, 2, "two more workers, up to the pool's size");
    assert_eq!(
        st.queue.len(),
        3,
        "the others wait for them, not behind a task"
    );

    // The two started (`add` counts its own start) and greeted take one task each; the
    // pool is full: the last is pipelined.
    st.spawning -= 2;
    let _second = add(&mut st, 2, true, &[]);
    let _third = add(&mut st, 3, true, &[]);
    let fx = st.on_greeted(3);
    assert_eq!(fx.spawn, 0);
    assert!(st.queue.is_empty());
    let loads: Vec<usize> = st.workers.iter().map(|w| w.in_flight.len()).collect();
    assert_eq!(loads.iter().sum::<usize>(), 4, "{loads:?}");
    assert!(loads.iter().all(|&n| n >= 1), "{loads:?}");
}

#[test]
fn an_on_demand_pool_with_an_idle_worker_starts_none() {
    let mut st = state(false);
    st.rules.on_demand = true;
    st.rules.workers = 8;
    let _idle = add(&mut st, 1, true, &[]);
    let (batch, _future) = one_task(1);
    let fx = st.on_submit(vec![batch]).map_err(|_| ()).expect("open");
    assert_eq!(fx.spawn, 0);
    assert_eq!(st.workers[0].in_flight.len(), 1);
}

/// A batch of `ids`, one task each, as `submit_batch` makes it.
fn batch_of(ids: std::ops::Range<u64>) -> (Batch, Vec<TaskFuture>) {
    let (tasks, futures): (Vec<Task>, Vec<TaskFuture>) = ids
        .map(|id| {
            let (promise, future) = promise();
            let task = Task {
                id,
                promise,
                timeout: None,
                calls: 1,
            };
            (task, future)
        })
        .unzip();
    let batch = Batch {
        ends: (1..=tasks.len()).collect(),
        frames: vec![0; tasks.len()],
        tasks,
        component: component(),
        resumed: false,
    };
    (batch, futures)
}

/// A pool of one idle, greeted worker whose depth follows the tasks, which took `per_task`.
fn one_adaptive_worker(per_task: Duration) -> State {
    let mut st = state(false);
    st.rules.workers = 1;
    st.rules.pipeline_depth = None;
    st.pace = crate::process_pool::pace::Pace::adaptive();
    st.pace.record(per_task * 64, 64);
    let _worker = add(&mut st, 1, true, &[]);
    st
}

#[test]
fn a_batch_of_short_tasks_waits_in_the_worker_behind_the_one_it_runs() {
    // Tasks of 2 µs: a batch of 256 is ~0.5 ms of work.
    let mut st = one_adaptive_worker(Duration::from_micros(2));
    let batches: Vec<(Batch, Vec<TaskFuture>)> =
        (0..3).map(|b| batch_of(b * 256..(b + 1) * 256)).collect();
    let (batches, _futures): (Vec<Batch>, Vec<_>) = batches.into_iter().unzip();
    let _fx = st.on_submit(batches).map_err(|_| ()).expect("open");
    assert_eq!(
        st.workers[0].in_flight.len(),
        512,
        "one batch runs, one waits behind it"
    );
    assert_eq!(st.queue.len(), 1);

    // Half the first batch answered: the worker holds more than a batch, nothing moves.
    let results = |ids: std::ops::Range<u64>| Event::Results {
        serial: 1,
        results: ids
            .map(|id| {
                (
                    id,
                    run(Ok(crate::value::TaskValue::from(
                        wasmtime::component::Val::Bool(true),
                    ))),
                )
            })
            .collect(),
    };
    let _fx = st.on(results(0..128));
    assert_eq!(st.queue.len(), 1);
    // The first batch done: the third is handed while the second runs.
    let _fx = st.on(results(128..256));
    assert!(st.queue.is_empty());
    assert_eq!(st.workers[0].in_flight.len(), 512);
}

#[test]
fn a_batch_of_long_tasks_waits_in_the_pool_until_the_worker_is_nearly_done() {
    // Tasks of 10 ms: a batch of 8 is beyond what may wait in a worker.
    let mut st = one_adaptive_worker(Duration::from_millis(10));
    let (batches, _futures): (Vec<Batch>, Vec<_>) =
        (0..2).map(|b| batch_of(b * 8..(b + 1) * 8)).unzip();
    let _fx = st.on_submit(batches).map_err(|_| ()).expect("open");
    assert_eq!(st.workers[0].in_flight.len(), 8);
    assert_eq!(
        st.queue.len(),
        1,
        "the second batch stays cancellable in the pool"
    );
}
