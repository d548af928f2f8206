//! The rules for chunks (a task of several calls): what they count, and which answers fit.

use super::*;
use crate::value::TaskValue;

#[test]
fn a_chunk_counts_each_of_its_calls_against_max_tasks_per_worker() {
    let mut st = state(false);
    st.rules.max_tasks_per_worker = Some(10);
    let _idle = add(&mut st, 1, true, &[]);
    let _other = add(&mut st, 2, true, &[]);
    // A chunk of 10 calls is one task, and the worker's whole share.
    let (mut chunk, _chunk_future) = one_task(1);
    chunk.tasks[0].calls = 10;
    let (single, _single_future) = one_task(2);
    let fx = st
        .on_submit(vec![chunk, single])
        .map_err(|_| ())
        .expect("open");
    let first = &st.workers[0];
    assert_eq!(first.assigned, 10);
    assert!(first.retiring, "it ran its share: it gets no more");
    assert_eq!(fx.spawn, 1, "a replacement");
    assert_eq!(
        st.workers[1].in_flight.len(),
        1,
        "the other task went to the other worker"
    );
}

#[test]
fn a_result_of_the_wrong_shape_is_a_violation() {
    let chunk = |n: usize| Ok(TaskValue::chunk(vec![Ok(TaskValue::unit()); n]));
    for (calls, outcome, says) in [
        (
            1,
            chunk(2),
            "the result for task 1 is a chunk's, for a single call",
        ),
        (
            3,
            chunk(2),
            "the result for task 1 holds 2 outcomes for a chunk of 3 calls",
        ),
        (
            3,
            Ok(TaskValue::unit()),
            "the result for task 1 is a single value, for a chunk of 3 calls",
        ),
    ] {
        let (fx, _st, future) = answered(calls, outcome);
        assert_eq!(fx.violation, Some(ProtocolError::Malformed(says.into())));
        assert!(fx.completed.is_empty());
        assert!(!future.is_done(), "it waits for the worker's end");
    }
    // The right shapes, and an error for a chunk (it was aborted, or broke the pool).
    for (calls, outcome) in [
        (1, Ok(TaskValue::unit())),
        (3, chunk(3)),
        (3, Err(TaskError::Cancelled)),
    ] {
        let (fx, _st, _future) = answered(calls, outcome);
        assert!(fx.violation.is_none());
        assert_eq!(fx.completed.len(), 1);
    }
}

/// What a worker running task 1, of `calls` calls, answering it with `outcome` leads to,
/// with the state (which holds the promises of the tasks still in flight) and the future.
fn answered(calls: usize, outcome: Result<TaskValue, TaskError>) -> (Effects, State, TaskFuture) {
    let mut st = state(false);
    let mut futures = add(&mut st, 1, true, &[1]);
    st.workers[0].in_flight[0].task.calls = calls;
    let results = vec![(1, run(outcome))];
    let fx = st.on(Event::Results { serial: 1, results });
    (fx, st, futures.remove(0))
}
