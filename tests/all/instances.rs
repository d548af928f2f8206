//! Instance policy: a fresh instance per task by default; opt-in reuse for up to N tasks,
//! discarding an instance that trapped; the initializer, whose failure breaks the pool; and
//! the instance pool a runtime allocates them from, on threads and in worker processes.

use wasmpool::{
    Executor, InstancePolicy, OutputMode, PoolingConfig, ProcessPoolExecutor, Runtime,
    RuntimeConfig, SubmitError, TaskErrorKind, ThreadPoolBuilder, ThreadPoolExecutor,
};

use crate::common::{SOON, call, fixtures};
use crate::escapes::memory_of;

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

/// A runtime's instance pool is part of its configuration, so a process-pool worker builds
/// its runtime with the same pool: with 128 MiB of each memory kept resident, the 64 MiB a
/// task touched stay resident in the worker after the task (the default keeps 4 MiB and
/// gives the rest back to the OS).
#[test]
fn a_runtimes_instance_pool_applies_in_worker_processes() {
    const MIB: u64 = 1 << 20;
    let pooling = PoolingConfig::default().memory_keep_resident(128 << 20);
    let runtime = Runtime::with_config(RuntimeConfig::default().pooling(Some(pooling)))
        .expect("a runtime with its own instance pool");
    let component = runtime.load(env!("WASMPOOL_FIXTURES_WASM")).unwrap();
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .worker_program(env!("CARGO_BIN_EXE_wasmpool"))
        .output(OutputMode::Discard)
        .build()
        .expect("the process pool starts");
    let run = |wave: &str| {
        let f = pool.submit(call(&component, wave)).unwrap();
        let value = f.result_timeout(SOON).expect("the task resolves");
        assert!(value.is_ok(), "{wave}: {value:?}");
        f.report().expect("a finished task has a report").pid
    };
    let worker = run("allocate-mib(1)");
    let before = memory_of(worker).resident;
    assert_eq!(run("allocate-mib(64)"), worker, "one worker ran both");
    let after = memory_of(worker).resident;
    assert!(
        after >= before + 32 * MIB,
        "the worker kept {} MiB of the 64 MiB task resident ({} MiB before, {} MiB after)",
        after.saturating_sub(before) / MIB,
        before / MIB,
        after / MIB
    );
}
