//! Instance policy: a fresh instance per task by default; opt-in reuse for up to N tasks,
//! discarding an instance that trapped; and the initializer, whose failure breaks the pool.

use wasmpool::{
    Executor, InstancePolicy, SubmitError, TaskErrorKind, ThreadPoolBuilder, ThreadPoolExecutor,
};

use crate::common::{call, fixtures};

fn counts(pool: &ThreadPoolExecutor, n: usize) -> Vec<i64> {
    (0..n)
        .map(|_| {
            let f = pool.submit(call(fixtures(), "count()")).unwrap();
            f.result().unwrap().as_i64().unwrap()
        })
        .collect()
}

#[test]
fn fresh_instances_share_nothing() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    assert_eq!(counts(&pool, 3), [1, 1, 1]);
}

#[test]
fn reuse_keeps_an_instance_for_up_to_n_tasks() {
    let pool = ThreadPoolBuilder::new()
        .workers(1)
        .instance_policy(InstancePolicy::Reuse { max_tasks: 3 })
        .build()
        .unwrap();
    assert_eq!(counts(&pool, 7), [1, 2, 3, 1, 2, 3, 1]);
}

#[test]
fn a_trapped_instance_is_never_reused() {
    let pool = ThreadPoolBuilder::new()
        .workers(1)
        .instance_policy(InstancePolicy::Reuse { max_tasks: 100 })
        .build()
        .unwrap();
    assert_eq!(counts(&pool, 2), [1, 2]);
    let trap = pool.submit(call(fixtures(), "trap-unreachable()")).unwrap();
    assert_eq!(trap.result().unwrap_err().kind(), TaskErrorKind::Trap);
    assert_eq!(counts(&pool, 2), [1, 2]);
}

#[test]
fn the_initializer_runs_once_per_new_instance() {
    let pool = ThreadPoolBuilder::new()
        .workers(1)
        .initializer("init")
        .build()
        .unwrap();
    assert_eq!(counts(&pool, 2), [101, 101]);
    let pool = ThreadPoolBuilder::new()
        .workers(1)
        .initializer("init")
        .instance_policy(InstancePolicy::Reuse { max_tasks: 10 })
        .build()
        .unwrap();
    assert_eq!(counts(&pool, 3), [101, 102, 103]);
}

#[test]
fn a_failing_initializer_breaks_the_pool() {
    let pool = ThreadPoolBuilder::new()
        .workers(1)
        .initializer("init-fails")
        .build()
        .unwrap();
    let first = pool.submit(call(fixtures(), "count()")).unwrap();
    let err = first.result().unwrap_err();
    assert_eq!(err.kind(), TaskErrorKind::BrokenPool);
    assert!(err.to_string().contains("no database here"), "{err}");
    assert!(err.to_string().contains("init-fails"), "{err}");
    match pool.submit(call(fixtures(), "count()")) {
        Err(SubmitError::BrokenPool(reason)) => assert!(reason.contains("init-fails")),
        other => panic!("expected a broken pool, got {other:?}"),
    }
}
