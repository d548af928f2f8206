//! A process pool's `map_chunked`: each chunk's run of alike calls is one task (one frame
//! to a worker, one result back, one future), and the map still yields every call's own
//! outcome, in input order.

use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};
use wasmpool::{
    Budget, Call, Executor, OutputMode, ProcessPoolExecutor, TaskError, TaskErrorKind, TaskValue,
};

use crate::common::{SOON, call, fixtures, seed, until_started};

fn pool(workers: usize, depth: Option<usize>) -> ProcessPoolExecutor {
    pool_with(workers, depth, OutputMode::Discard)
}

fn pool_with(workers: usize, depth: Option<usize>, output: OutputMode) -> ProcessPoolExecutor {
    let builder = ProcessPoolExecutor::builder()
        .workers(workers)
        .worker_program(env!("CARGO_BIN_EXE_wasmpool"))
        .output(output);
    let builder = match depth {
        Some(depth) => builder.pipeline_depth(depth),
        None => builder,
    };
    builder.build().expect("the process pool starts")
}

/// `check-task(n)`: n / 10, except that a multiple of 5 is an error (the guest's own `err`).
fn check(n: u32) -> Call {
    call(seed(), &format!("check-task({n})"))
}

fn expected_check(n: u32) -> Result<f64, String> {
    if n.is_multiple_of(5) {
        Err(format!("the value {n} is no good"))
    } else {
        Ok(f64::from(n) / 10.0)
    }
}

fn as_check(outcome: &Result<TaskValue, TaskError>) -> Result<f64, String> {
    match outcome {
        Ok(value) => Ok(value.as_f64().expect("an f64")),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn every_call_of_a_chunk_gets_its_own_outcome_in_order() {
    let pool = pool(2, None);
    // Chunks of 8 with a failing call in the middle, and now and then a trap (another
    // function: the run of alike calls ends there), after which the next call of the chunk
    // runs in a fresh instance.
    let plan: Vec<Option<u32>> = (0..100u32)
        .map(|i| (i % 13 != 12).then_some(i % 10))
        .collect();
    let calls: Vec<Call> = plan
        .iter()
        .map(|n| match n {
            Some(n) => check(*n),
            None => call(fixtures(), "trap-unreachable()"),
        })
        .collect();
    let outcomes: Vec<_> = pool.map_chunked(calls, 8).unwrap().collect();
    assert_eq!(outcomes.len(), plan.len());
    for (i, (n, outcome)) in plan.iter().zip(&outcomes).enumerate() {
        match n {
            Some(n) => assert_eq!(as_check(outcome), expected_check(*n), "call {i}"),
            None => assert_eq!(
                outcome.as_ref().unwrap_err().kind(),
                TaskErrorKind::Trap,
                "call {i}: {outcome:?}"
            ),
        }
    }
    assert!(pool.broken_reason().is_none());
}

#[test]
fn a_call_past_its_deadline_fails_alone_in_its_chunk() {
    let pool = pool(1, None);
    // Generous for the quick calls (their instantiation counts too) on a loaded machine.
    let budget = Budget::default().timeout(Duration::from_secs(2));
    let sleeps = [0u64, 1, 600_000, 2, 3];
    let calls: Vec<Call> = sleeps
        .iter()
        .map(|ms| call(fixtures(), &format!("sleep-ms({ms})")).with_budget(budget.clone()))
        .collect();
    let outcomes: Vec<_> = pool.map_chunked(calls, 5).unwrap().collect();
    for (ms, outcome) in sleeps.iter().zip(&outcomes) {
        if *ms == 600_000 {
            let err = outcome.as_ref().unwrap_err();
            assert_eq!(err.kind(), TaskErrorKind::Timeout, "{err:?}");
        } else {
            let value = outcome.as_ref().unwrap_or_else(|e| panic!("{ms}: {e}"));
            assert_eq!(value.as_i64(), Some(*ms as i64));
        }
    }
}

#[test]
fn in_flight_gives_each_call_of_a_chunk_a_future_with_its_outcome() {
    let pool = pool(2, None);
    let mut map = pool
        .map_chunked((1..=12).map(check).collect::<Vec<_>>(), 4)
        .unwrap();
    // One call yielded before the futures are asked for: they cover the other eleven.
    assert_eq!(as_check(&map.next().unwrap()), expected_check(1));
    let futures: Vec<_> = map.in_flight().cloned().collect();
    assert_eq!(futures.len(), 11);
    assert!(format!("{map:?}").contains("in_flight: 11"), "{map:?}");
    for (n, future) in (2..=12).zip(&futures) {
        let outcome = future.result_timeout(SOON).expect("resolved in time");
        assert_eq!(as_check(&outcome), expected_check(n), "call {n}");
        assert_eq!(map.next().as_ref().map(as_check), Some(expected_check(n)));
    }
    assert!(map.next().is_none());
}

#[test]
fn dropping_a_chunked_map_cancels_the_chunks_not_started() {
    // One worker, one task handed at a time: while the blocker runs, every chunk waits in
    // the pool's queue.
    let pool = pool(1, Some(1));
    let blocker = pool
        .submit(
            call(fixtures(), "sleep-ms(600000)")
                .with_budget(Budget::default().timeout(Duration::from_secs(600))),
        )
        .unwrap();
    until_started(&blocker);
    let map = pool
        .map_chunked((1..=12).map(check).collect::<Vec<_>>(), 4)
        .unwrap();
    let futures: Vec<_> = map.in_flight().cloned().collect();
    assert_eq!(futures.len(), 12);
    assert!(futures.iter().all(|f| !f.is_done()));
    drop(map);
    for future in &futures {
        assert!(future.is_cancelled(), "{future:?}");
    }
    assert!(blocker.abort());
    let after = pool.submit(check(3)).unwrap();
    assert_eq!(as_check(&after.result()), expected_check(3));
}

#[test]
fn a_worker_killed_under_a_chunk_fails_each_of_its_calls() {
    let pool = pool(1, None);
    let forever = call(fixtures(), "sleep-ms(600000)")
        .with_budget(Budget::default().timeout(Duration::from_secs(600)));
    let map = pool.map_chunked(vec![forever; 6], 3).unwrap();
    let pid = pool.worker_pids()[0];
    let pid_of = Pid::from_raw(pid as i32).expect("a real pid");
    kill_process(pid_of, Signal::KILL).expect("kill the worker");
    let outcomes: Vec<_> = map.collect();
    assert_eq!(outcomes.len(), 6);
    for outcome in &outcomes {
        let err = outcome.as_ref().unwrap_err();
        assert_eq!(err.kind(), TaskErrorKind::BrokenPool, "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("(pid {pid}) terminated abruptly")),
            "{err}"
        );
    }
}

#[test]
fn a_pool_that_captures_output_keeps_one_task_per_call() {
    let pool = pool_with(2, None, OutputMode::Capture { limit: 1024 });
    let map = pool
        .map_chunked((1..=6).map(check).collect::<Vec<_>>(), 3)
        .unwrap();
    let futures: Vec<_> = map.in_flight().cloned().collect();
    let outcomes: Vec<_> = map.collect();
    for ((n, future), outcome) in (1..=6).zip(&futures).zip(&outcomes) {
        assert_eq!(as_check(outcome), expected_check(n));
        let report = future.report().expect("each call has its report");
        assert_eq!(
            report.stdout.as_deref(),
            Some(format!("{n}: starting\n").as_str())
        );
    }
}
