//! Loading components, naming their functions, checking calls, and what comes back:
//! values of every WIT type, guest errors and traps.

use wasmpool::{
    Budget, CallError, Executor, LoadError, OutputMode, PoolingConfig, ReturnWhen, Runtime,
    RuntimeConfig, TaskComponent, TaskError, TaskErrorKind, TaskFuture, ThreadPoolExecutor, Val,
    wait,
};

use crate::common::{SOON, call, fixtures, seed, until_started};

fn run(wave: &str) -> Result<wasmpool::TaskValue, TaskError> {
    let pool = ThreadPoolExecutor::new(1).expect("pool");
    pool.submit(call(fixtures(), wave))
        .expect("submit")
        .result()
}

fn load_bytes(bytes: &[u8]) -> LoadError {
    TaskComponent::from_bytes(bytes).expect_err("must not load")
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let err = TaskComponent::from_file("/nonexistent/task.wasm").unwrap_err();
    assert!(matches!(err, LoadError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/task.wasm"), "{err}");
}

#[test]
fn a_text_file_is_not_wasm() {
    let err = load_bytes(b"this is not wasm at all");
    assert!(matches!(err, LoadError::NotWasm { .. }), "{err:?}");
    assert!(err.to_string().contains("not a WebAssembly file"), "{err}");
}

#[test]
fn a_core_module_is_refused_with_a_hint() {
    // The smallest valid core module: magic and version 1.
    let err = load_bytes(b"\0asm\x01\0\0\0");
    assert!(matches!(err, LoadError::CoreModule { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("core WebAssembly module, not a component"),
        "{err}"
    );
}

#[test]
fn a_truncated_component_says_so() {
    let bytes = std::fs::read(env!("WASMPOOL_SEED_WASM")).unwrap();
    for cut in [6, 100, bytes.len() / 2, bytes.len() - 1] {
        let err = load_bytes(&bytes[..cut]);
        assert!(
            matches!(err, LoadError::Truncated { .. }),
            "cut at {cut}: {err:?}"
        );
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}

#[test]
fn garbage_after_a_component_header_is_invalid() {
    let err = load_bytes(b"\0asm\x0d\0\x01\0\xff\xff\xff\xff\xff\xff");
    assert!(
        matches!(err, LoadError::Invalid { .. } | LoadError::Truncated { .. }),
        "{err:?}"
    );
}

#[test]
fn functions_are_listed_with_wit_signatures() {
    let f = fixtures().function("fib").unwrap();
    assert_eq!(f.signature(), "func(n: u32) -> u64");
    let names: Vec<&str> = fixtures().functions().iter().map(|f| f.name()).collect();
    assert!(
        names.contains(&"wasmpool:tasks/math@0.1.0#add"),
        "{names:?}"
    );
    assert!(
        names.contains(&"wasmpool:tasks/types@0.1.0#everything"),
        "{names:?}"
    );
    let check = seed().function("check-task").unwrap();
    assert_eq!(check.signature(), "func(n: u32) -> result<f64, string>");
    assert!(
        fixtures()
            .imports()
            .iter()
            .any(|i| i.starts_with("wasi:cli/"))
    );
}

#[test]
fn interface_functions_answer_to_every_spelling() {
    for name in [
        "wasmpool:tasks/math@0.1.0#add",
        "wasmpool:tasks/math#add",
        "math#add",
        "math.add",
        "wasmpool:tasks/math.add@0.1.0",
    ] {
        let f = fixtures()
            .function(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(f.name(), "wasmpool:tasks/math@0.1.0#add");
    }
    assert_eq!(run("math.mul(6, 7)").unwrap().as_i64(), Some(42));
    // The top-level `add` and the interface's `add` are different functions.
    assert_eq!(fixtures().function("add").unwrap().interface(), None);
}

#[test]
fn unknown_function_is_refused_at_call_time_listing_the_exports() {
    let err = seed().call("no-such-task", []).unwrap_err();
    let CallError::UnknownFunction { available, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(available.contains("sleep-task"), "{available}");
    assert!(err.to_string().contains("no-such-task"));
    assert!(matches!(
        seed().call_wave("nope(1)"),
        Err(CallError::UnknownFunction { .. })
    ));
}

#[test]
fn wrong_arity_is_refused() {
    let err = seed()
        .call("sleep-task", [Val::U32(1), Val::U32(2)])
        .unwrap_err();
    assert_eq!(
        err,
        CallError::Arity {
            function: "sleep-task".into(),
            expected: 1,
            given: 2
        }
    );
    assert!(matches!(
        seed().call_wave("sleep-task()"),
        Err(CallError::Wave { .. })
    ));
}

#[test]
fn wrong_argument_types_are_refused_naming_the_parameter() {
    let err = seed()
        .call("sleep-task", [Val::String("five".into())])
        .unwrap_err();
    let CallError::Type { param, message, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(param, "n");
    assert!(message.contains("expected u32"), "{message}");

    let point = Val::Record(vec![("x".into(), Val::S32(1)), ("z".into(), Val::S32(2))]);
    let err = fixtures().call("types#echo-point", [point]).unwrap_err();
    assert!(err.to_string().contains("expected field `y`"), "{err}");

    let err = fixtures().call_wave(r#"sleep-ms("soon")"#).unwrap_err();
    assert!(matches!(err, CallError::Wave { .. }), "{err:?}");
    let err = fixtures().call_wave_args("add", "1, ").unwrap_err();
    assert!(matches!(err, CallError::Wave { .. }), "{err:?}");
    let err = fixtures()
        .call_wave_args("add", "1, 99999999999")
        .unwrap_err();
    assert!(matches!(err, CallError::Wave { .. }), "{err:?}");
}

#[test]
fn values_of_every_kind_round_trip_through_wave() {
    let cases = [
        ("types#echo-point({x: 1, y: -2})", "{x: 1, y: -2}"),
        ("types#echo-shape(circle(1.5))", "circle(1.5)"),
        ("types#echo-shape(rect({x: 3, y: 4}))", "rect({x: 3, y: 4})"),
        ("types#echo-shape(empty)", "empty"),
        ("types#echo-color(green)", "green"),
        ("types#echo-perms({read, exec})", "{read, exec}"),
        ("types#echo-perms({})", "{}"),
        (r#"types#echo-option(some("x"))"#, r#"some("x")"#),
        ("types#echo-option(none)", "none"),
        ("types#echo-list([1, 2, 3])", "[1, 2, 3]"),
        ("types#echo-list([])", "[]"),
        (
            r#"types#echo-tuple(("a\"b", 255, true))"#,
            r#"("a\"b", 255, true)"#,
        ),
        ("types#echo-char('☃')", "'☃'"),
        ("types#echo-result(ok(7))", "7"),
        (
            "types#sum-points([{x: 1, y: 2}, {x: 10, y: 20}])",
            "{x: 11, y: 22}",
        ),
        (
            r#"types#everything({x: 1, y: 2}, rect({x: 0, y: 0}), blue, {write}, some(["a", "b"]), (7, 'z', -9))"#,
            r#"({x: 1, y: 2}, rect({x: 0, y: 0}), blue, {write}, some(["a", "b"]), (7, 'z', -9))"#,
        ),
        (r#"greet("ann")"#, r#""hello, ann""#),
        ("fib(20)", "6765"),
        ("noop()", ""),
    ];
    for (input, expected) in cases {
        let value = run(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(value.to_wave(), expected, "{input}");
    }
}

#[test]
fn values_built_in_rust_are_checked_and_returned_intact() {
    let shape = Val::Variant(
        "rect".into(),
        Some(Box::new(Val::Record(vec![
            ("x".into(), Val::S32(5)),
            ("y".into(), Val::S32(6)),
        ]))),
    );
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let call = fixtures()
        .call("types#echo-shape", [shape.clone()])
        .unwrap();
    let value = pool.submit(call).unwrap().result().unwrap();
    assert_eq!(value.val(), Some(&shape));
}

#[test]
fn a_guest_err_is_a_failed_task_with_the_payload_as_text() {
    let err = run(r#"types#echo-result(err("nope"))"#).unwrap_err();
    assert_eq!(
        err,
        TaskError::Failed {
            message: "nope".into(),
            value: r#""nope""#.into()
        }
    );
    let err = run("fail-with(3)").unwrap_err();
    assert_eq!(err.kind(), TaskErrorKind::Failed);
    assert_eq!(err.to_string(), r#"{code: 3, reason: "failed with 3"}"#);
    assert_eq!(run("fail-with(0)").unwrap().as_i64(), Some(0));
}

#[test]
fn a_panic_is_a_trap_carrying_the_panic_message_and_backtrace() {
    let err = run(r#"trap-panic("boom at 42")"#).unwrap_err();
    let TaskError::Trap {
        trap,
        panic,
        backtrace,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(trap.contains("unreachable"), "{trap}");
    assert_eq!(panic.as_deref(), Some("boom at 42"));
    assert!(
        backtrace.contains("trap_panic") || backtrace.contains("trap-panic"),
        "{backtrace}"
    );
    assert!(err.to_string().contains("boom at 42"));
}

#[test]
fn unreachable_is_a_trap_without_panic_message() {
    let err = run("trap-unreachable()").unwrap_err();
    let TaskError::Trap { trap, panic, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(trap.contains("unreachable"), "{trap}");
    assert_eq!(panic, &None);
}

#[test]
fn unbounded_recursion_is_a_stack_overflow() {
    let err = run("recurse-forever(0)").unwrap_err();
    assert_eq!(err.kind(), TaskErrorKind::StackOverflow, "{err:?}");
}

#[test]
fn a_trap_discards_only_its_instance_and_the_pool_goes_on() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let bad = pool.submit(call(fixtures(), "trap-unreachable()")).unwrap();
    let good = pool.submit(call(fixtures(), "add(2, 3)")).unwrap();
    assert_eq!(bad.error().map(|e| e.kind()), Some(TaskErrorKind::Trap));
    assert_eq!(good.result().unwrap().as_i64(), Some(5));
}

#[test]
fn each_task_gets_a_fresh_instance() {
    // `sum-points` of a one-element list returns that element: no state carries over
    // between tasks even on the same single worker.
    let pool = ThreadPoolExecutor::new(1).unwrap();
    for i in 0..5 {
        let f = pool
            .submit(call(
                fixtures(),
                &format!("types#sum-points([{{x: {i}, y: 1}}])"),
            ))
            .unwrap();
        assert_eq!(f.result().unwrap().to_wave(), format!("{{x: {i}, y: 1}}"));
    }
}

/// Aborts its task when dropped, so that a failing assertion cannot leave a pool's drop
/// waiting forever for a `loop-forever` task.
struct AbortOnDrop(TaskFuture);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The fixtures, loaded in a runtime whose instance pool has one slot, and a thread pool of
/// `workers` that discards the tasks' output.
fn one_slot(workers: usize) -> (TaskComponent, ThreadPoolExecutor) {
    let runtime = Runtime::with_pooling(
        RuntimeConfig::default(),
        Some(PoolingConfig::default().instances(1)),
    )
    .unwrap();
    assert_eq!(runtime.pooling().map(|p| p.instances), Some(1));
    let component = runtime.load(env!("WASMPOOL_FIXTURES_WASM")).unwrap();
    let pool = ThreadPoolExecutor::builder()
        .workers(workers)
        .output(OutputMode::Discard)
        .build()
        .unwrap();
    (component, pool)
}

/// Two spinners (with `budget`) on two workers of a runtime with one instance slot:
/// whichever instantiates first holds the slot and spins until aborted; the other finds the
/// pool full (which one depends on scheduling), the only way either can end on its own.
/// Checks the refused one's error; returns the pool, the component and the spinners (each
/// aborted when dropped, so a failed assertion cannot leave the pool's drop waiting).
fn one_slot_two_spinners(budget: Budget) -> (ThreadPoolExecutor, TaskComponent, Vec<AbortOnDrop>) {
    let (component, pool) = one_slot(2);
    let spinners: Vec<AbortOnDrop> = (0..2)
        .map(|_| {
            let call = component.call_wave("loop-forever()").unwrap();
            AbortOnDrop(pool.submit(call.with_budget(budget.clone())).unwrap())
        })
        .collect();
    let futures: Vec<TaskFuture> = spinners.iter().map(|s| s.0.clone()).collect();
    let first = wait(&futures, Some(SOON), ReturnWhen::FirstCompleted);
    assert_eq!(first.done.len(), 1, "neither spinner was refused a slot");
    match first.done[0].result() {
        Err(TaskError::NoInstanceSlot { message }) => {
            assert!(message.contains("maximum concurrent limit"), "{message}")
        }
        other => panic!("expected no free instance slot, got {other:?}"),
    }
    (pool, component, spinners)
}

/// A full instance pool fails the task that finds it full with a clear error, and the slot
/// is free again once the task holding it has ended.
#[test]
fn an_exhausted_instance_pool_is_no_instance_slot() {
    let (pool, component, spinners) = one_slot_two_spinners(Budget::default());
    let holder = spinners
        .iter()
        .map(|s| &s.0)
        .find(|f| !f.is_done())
        .expect("the holder");
    until_started(holder);
    assert!(holder.is_running(), "{holder:?}");
    assert!(holder.abort());
    assert_eq!(holder.result(), Err(TaskError::Cancelled));
    // Once the workers have let go of it (shutdown waits for them), the slot is free again.
    pool.shutdown(true, false);
    let pool = ThreadPoolExecutor::builder()
        .workers(1)
        .output(OutputMode::Discard)
        .build()
        .unwrap();
    let f = pool
        .submit(component.call_wave("add(2, 3)").unwrap())
        .unwrap();
    assert_eq!(f.result_timeout(SOON).unwrap().unwrap().as_i64(), Some(5));
}

/// A worker tears down a task's instance after the task's outcome is out, and before it
/// makes the next instance: one instance slot serves fresh tasks one after another, both
/// handed back to back (no spare between them) and one at a time (a spare may be made
/// between them).
#[test]
fn one_instance_slot_serves_fresh_tasks_one_after_another() {
    let (component, pool) = one_slot(1);
    let add_one = |i: i64| component.call_wave(&format!("add({i}, 1)")).unwrap();
    let futures = pool.submit_batch((0..20).map(add_one).collect()).unwrap();
    for (i, future) in (0..).zip(&futures) {
        assert_eq!(future.result().unwrap().as_i64(), Some(i + 1), "task {i}");
    }
    for i in 0..5 {
        let future = pool.submit(add_one(i)).unwrap();
        assert_eq!(future.result().unwrap().as_i64(), Some(i + 1), "task {i}");
    }
}

/// The same on the async path (a task with a deadline instantiates asynchronously): the
/// pooling limit is still recognised in wasmtime's error.
#[test]
fn an_exhausted_instance_pool_is_no_instance_slot_on_the_async_path() {
    let deadline = Budget::default().timeout(std::time::Duration::from_secs(120));
    // The spinners are aborted as they drop, before the pool (dropped last) waits for them.
    let (_pool, _component, _spinners) = one_slot_two_spinners(deadline);
}

/// A timeout too long for the clock (`Duration::MAX`) is no deadline, not a host panic;
/// the same on the process pool, whose watchdog computes its own deadline from it.
#[test]
fn a_timeout_beyond_the_clock_is_no_deadline() {
    let budget = wasmpool::Budget::default().timeout(std::time::Duration::MAX);
    let thread = wasmpool::ThreadPoolExecutor::builder()
        .workers(1)
        .budget(budget.clone())
        .build()
        .expect("the pool starts");
    let process = wasmpool::ProcessPoolExecutor::builder()
        .workers(1)
        .worker_program(env!("CARGO_BIN_EXE_wasmpool"))
        .budget(budget)
        .build()
        .expect("the pool starts");
    for pool in [&thread as &dyn wasmpool::Executor, &process] {
        let f = pool.submit(call(fixtures(), "add(2, 3)")).expect("submit");
        let value = f.result_timeout(SOON).expect("resolves").expect("runs");
        assert_eq!(value.to_string(), "5");
    }
}
