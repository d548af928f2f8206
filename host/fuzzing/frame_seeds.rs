//! The seeds of `worker_frames` and `parent_frames`, made with the protocol's own encoders:
//! every kind of value, task error, setting and message, and a whole session each way.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Val;

use super::Seed;
use super::frames::encode;
use crate::error::TaskError;
use crate::output::{HostStream, OutputMode};
use crate::process_pool::framing::hello_frame;
use crate::process_pool::messages::{
    Abort, FromWorker, Load, Output, RunTask, Setup, TaskResult, ToWorker,
};
use crate::run::TaskRun;
use crate::runtime::RuntimeConfig;
use crate::sandbox::{Budget, Capabilities};
use crate::settings::{InstancePolicy, TaskSettings};
use crate::value::TaskValue;

fn seed(target: &'static str, name: &str, frames: &[Vec<u8>]) -> Seed {
    Seed {
        target,
        name: name.to_string(),
        bytes: frames.concat(),
    }
}

/// A RESULT with an ordinary report: some time, fuel and memory, no captured output.
fn result(id: u64, outcome: Result<TaskValue, TaskError>) -> FromWorker<'static> {
    report(
        id,
        TaskRun {
            outcome,
            elapsed: Duration::from_micros(1234),
            fuel_consumed: Some(77),
            peak_memory: 65536,
            stdout: None,
            stderr: None,
            stdout_truncated: false,
            stderr_truncated: false,
        },
    )
}

fn report(id: u64, run: TaskRun) -> FromWorker<'static> {
    FromWorker::Result(TaskResult { id, run })
}

fn output(stream: HostStream, line: &'static [u8]) -> FromWorker<'static> {
    FromWorker::Output(Output {
        stream,
        line: Cow::Borrowed(line),
    })
}

fn ok(v: Val) -> Result<TaskValue, TaskError> {
    Ok(TaskValue::from(v))
}

fn string(s: &str) -> Val {
    Val::String(s.into())
}

fn point(x: i32, y: i32) -> Val {
    Val::Record(vec![("x".into(), Val::S32(x)), ("y".into(), Val::S32(y))])
}

/// The fixture's `types.everything` arguments as one tuple: most kinds nested.
fn everything() -> Val {
    Val::Tuple(vec![
        point(1, -2),
        Val::Variant("rect".into(), Some(Box::new(point(3, 4)))),
        Val::Enum("blue".into()),
        Val::Flags(vec!["read".into(), "exec".into()]),
        Val::Option(Some(Box::new(Val::List(vec![string("a"), string("")])))),
        Val::Tuple(vec![Val::U8(7), Val::Char('🦀'), Val::S64(-1 << 40)]),
    ])
}

/// Component values of every kind the protocol carries, by name.
fn values() -> Vec<(&'static str, Val)> {
    vec![
        ("bool", Val::Bool(true)),
        ("s8", Val::S8(i8::MIN)),
        ("s16", Val::S16(-300)),
        ("s32", Val::S32(-7)),
        ("s64", Val::S64(i64::MIN)),
        ("u8", Val::U8(u8::MAX)),
        ("u16", Val::U16(u16::MAX)),
        ("u32", Val::U32(30)),
        ("u64", Val::U64(u64::MAX)),
        ("f32", Val::Float32(1.5)),
        ("f64", Val::Float64(-1.5e300)),
        ("f64-nan", Val::Float64(f64::NAN)),
        ("f64-negative-zero", Val::Float64(-0.0)),
        ("f64-infinity", Val::Float64(f64::INFINITY)),
        ("char", Val::Char('🦀')),
        ("string", string("hello, wörld\n")),
        (
            "list",
            Val::List(vec![Val::U32(1), Val::U32(2), Val::U32(3)]),
        ),
        ("list-empty", Val::List(Vec::new())),
        (
            "tuple",
            Val::Tuple(vec![string("a"), Val::U8(1), Val::Bool(false)]),
        ),
        (
            "fixed-list",
            Val::FixedLengthList(vec![Val::S16(1), Val::S16(-1)]),
        ),
        ("record", point(1, 2)),
        (
            "variant",
            Val::Variant("circle".into(), Some(Box::new(Val::Float64(1.5)))),
        ),
        ("variant-empty", Val::Variant("empty".into(), None)),
        ("enum", Val::Enum("red".into())),
        ("option-some", Val::Option(Some(Box::new(string("a"))))),
        ("option-none", Val::Option(None)),
        ("result-ok", Val::Result(Ok(Some(Box::new(Val::U32(1)))))),
        ("result-ok-empty", Val::Result(Ok(None))),
        ("result-err", Val::Result(Err(Some(Box::new(string("e")))))),
        ("flags", Val::Flags(vec!["read".into(), "write".into()])),
        (
            "map",
            Val::Map(vec![(string("k"), Val::U32(1)), (string("j"), Val::U32(2))]),
        ),
        (
            "list-of-records",
            Val::List(vec![point(1, 2), point(-1, 0)]),
        ),
        ("everything", everything()),
    ]
}

/// One error of every kind (and a trap without a panic message).
fn errors() -> Vec<(&'static str, TaskError)> {
    vec![
        (
            "failed",
            TaskError::Failed {
                message: "the value 5 is no good".into(),
                value: "\"the value 5 is no good\"".into(),
            },
        ),
        (
            "trap",
            TaskError::Trap {
                trap: "wasm trap: wasm `unreachable` instruction executed".into(),
                panic: Some("boom".into()),
                backtrace: "0: fixture_tasks::trap_panic".into(),
            },
        ),
        (
            "trap-no-panic",
            TaskError::Trap {
                trap: "wasm trap: wasm `unreachable` instruction executed".into(),
                panic: None,
                backtrace: String::new(),
            },
        ),
        (
            "timeout",
            TaskError::Timeout {
                limit: Duration::from_millis(250),
            },
        ),
        ("out-of-fuel", TaskError::OutOfFuel { limit: 10_000 }),
        ("memory-limit", TaskError::MemoryLimit { limit: 1 << 20 }),
        (
            "stack-overflow",
            TaskError::StackOverflow {
                backtrace: "0: recurse_forever".into(),
            },
        ),
        ("cancelled", TaskError::Cancelled),
        (
            "broken-pool",
            TaskError::BrokenPool {
                reason: "worker-1 (pid 42) was killed by signal 9".into(),
            },
        ),
        (
            "start",
            TaskError::Start {
                message: "the initializer `init` failed".into(),
            },
        ),
        (
            "panic",
            TaskError::Panic {
                worker: "worker-1".into(),
                message: "index out of bounds".into(),
            },
        ),
        ("fuel-not-enabled", TaskError::FuelNotEnabled),
        (
            "no-instance-slot",
            TaskError::NoInstanceSlot {
                message: "maximum concurrent limit of 1 for memories reached".into(),
            },
        ),
        (
            "unreturnable",
            TaskError::Unreturnable {
                message: "cannot send a resource to another process".into(),
            },
        ),
        (
            "component-unavailable",
            TaskError::ComponentUnavailable {
                message: "component 3 was never sent to this worker".into(),
            },
        ),
        (
            "incompatible",
            TaskError::Incompatible {
                message: "the component is too large for the workers".into(),
            },
        ),
        (
            "refused",
            TaskError::Refused {
                message: "directory /etc is not one the worker grants".into(),
            },
        ),
        (
            "queue-timeout",
            TaskError::QueueTimeout {
                limit: Duration::from_secs(5),
            },
        ),
    ]
}

/// Seeds of `worker_frames`: each a worker's greeting, then frames the pool reads.
pub(super) fn worker_seeds() -> Vec<Seed> {
    const TARGET: &str = "worker_frames";
    let hello = hello_frame(4242);
    let mut seeds = vec![
        seed(TARGET, "hello", std::slice::from_ref(&hello)),
        seed(
            TARGET,
            "hello-output",
            &[
                hello.clone(),
                encode(&output(HostStream::Stdout, b"hello\n")),
            ],
        ),
        seed(
            TARGET,
            "output-stderr",
            &[
                hello.clone(),
                encode(&output(HostStream::Stderr, b"worker-1: warning\n")),
            ],
        ),
        seed(
            TARGET,
            "result-unit",
            &[hello.clone(), encode(&result(1, Ok(TaskValue::unit())))],
        ),
    ];
    // A chunk's result: each call's outcome, a value, an error, nothing.
    let chunk = TaskValue::chunk(vec![
        ok(Val::U32(1)),
        Err(TaskError::Cancelled),
        Ok(TaskValue::unit()),
    ]);
    seeds.push(seed(
        TARGET,
        "result-chunk",
        &[hello.clone(), encode(&result(9, Ok(chunk)))],
    ));
    for (name, value) in values() {
        let frame = encode(&result(7, ok(value)));
        seeds.push(seed(
            TARGET,
            &format!("result-ok-{name}"),
            &[hello.clone(), frame],
        ));
    }
    for (name, error) in errors() {
        let frame = encode(&result(8, Err(error)));
        seeds.push(seed(
            TARGET,
            &format!("result-err-{name}"),
            &[hello.clone(), frame],
        ));
    }
    let reports = [
        (
            "result-with-output",
            report(
                2,
                TaskRun {
                    outcome: ok(string("done")),
                    elapsed: Duration::from_millis(15),
                    fuel_consumed: None,
                    peak_memory: 1 << 20,
                    stdout: Some("sleeping 5\ndone with 5\n".into()),
                    stderr: Some(String::new()),
                    stdout_truncated: false,
                    stderr_truncated: false,
                },
            ),
        ),
        (
            "result-report-zero",
            report(
                0,
                TaskRun {
                    outcome: Ok(TaskValue::unit()),
                    elapsed: Duration::ZERO,
                    fuel_consumed: Some(0),
                    peak_memory: 0,
                    stdout: None,
                    stderr: None,
                    stdout_truncated: false,
                    stderr_truncated: false,
                },
            ),
        ),
        (
            "result-report-max",
            report(
                u64::MAX,
                TaskRun {
                    outcome: ok(Val::U64(u64::MAX)),
                    elapsed: Duration::from_nanos(u64::MAX),
                    fuel_consumed: Some(u64::MAX),
                    peak_memory: u64::MAX,
                    stdout: Some("out".into()),
                    stderr: Some("err".into()),
                    stdout_truncated: false,
                    stderr_truncated: false,
                },
            ),
        ),
    ];
    for (name, message) in &reports {
        seeds.push(seed(TARGET, name, &[hello.clone(), encode(message)]));
    }
    // A whole session: output interleaved with results, as a busy worker writes them.
    seeds.push(seed(
        TARGET,
        "session",
        &[
            hello,
            encode(&output(HostStream::Stdout, b"sleeping 5\n")),
            encode(&result(1, ok(Val::Float64(0.5)))),
            encode(&output(HostStream::Stderr, b"oops\n")),
            encode(&result(2, Err(TaskError::OutOfFuel { limit: 100 }))),
            encode(&result(3, ok(point(4, 6)))),
        ],
    ));
    seeds
}

fn setup(settings: TaskSettings) -> ToWorker<'static> {
    ToWorker::Setup(Setup {
        name: "worker-1".into(),
        settings,
    })
}

fn task(id: u64, budget: Budget, argv: Option<Vec<String>>, args: Vec<Val>) -> ToWorker<'static> {
    ToWorker::Task(run_task(id, budget, argv, args))
}

fn run_task(
    id: u64,
    budget: Budget,
    argv: Option<Vec<String>>,
    args: Vec<Val>,
) -> RunTask<'static> {
    RunTask {
        id,
        component: 1,
        function: 3,
        budget,
        argv: argv.map(Cow::Owned),
        args: Cow::Owned(args),
        rest: Vec::new(),
    }
}

/// Seeds of `parent_frames`: frames a worker reads from the pool.
pub(super) fn parent_seeds() -> Vec<Seed> {
    const TARGET: &str = "parent_frames";
    let full_budget = Budget::default()
        .timeout(Duration::from_millis(250))
        .fuel(1_000_000)
        .max_memory(64 << 20);
    let capabilities = Capabilities::default()
        .dir("/tmp/in", "/data")
        .dir_writable("/tmp/out", "/out")
        .env("LANG", "C.UTF-8")
        .env("EMPTY", "")
        .args(["prog", "--flag"])
        .network(true);
    let mut messages: Vec<(String, ToWorker)> = vec![
        ("setup-default".into(), setup(TaskSettings::default())),
        (
            "setup-full".into(),
            setup(TaskSettings {
                output: OutputMode::Capture { limit: 4096 },
                budget: full_budget.clone(),
                capabilities: capabilities.clone(),
                policy: InstancePolicy::Reuse { max_tasks: 8 },
                initializer: Some("init".into()),
            }),
        ),
        (
            "setup-reuse-unbounded".into(),
            setup(TaskSettings {
                policy: InstancePolicy::Reuse {
                    max_tasks: usize::MAX,
                },
                ..TaskSettings::default()
            }),
        ),
        (
            "setup-capabilities".into(),
            setup(TaskSettings {
                capabilities,
                ..TaskSettings::default()
            }),
        ),
    ];
    let modes = [
        ("prefixed", OutputMode::Prefixed),
        ("plain", OutputMode::Plain),
        ("discard", OutputMode::Discard),
        ("capture", OutputMode::Capture { limit: 0 }),
    ];
    for (name, output) in modes {
        let settings = TaskSettings {
            output,
            ..TaskSettings::default()
        };
        messages.push((format!("setup-output-{name}"), setup(settings)));
    }
    let loads = [
        ("load-default", RuntimeConfig::default(), Vec::new()),
        (
            "load-fuel-stack",
            RuntimeConfig::default()
                .fuel(true)
                .interruptible(false)
                .max_wasm_stack(1 << 16),
            b"\0asm\x0d\0\x01\0".to_vec(),
        ),
        (
            "load-on-demand",
            RuntimeConfig::default().pooling(None),
            Vec::new(),
        ),
    ];
    for (name, config, code) in loads {
        let load = ToWorker::Load(Load {
            id: 1,
            config,
            origin: "target/guests/fixture_tasks.wasm".into(),
            code: Arc::from(code),
        });
        messages.push((name.into(), load));
    }
    let budgets = [
        ("none", Budget::default()),
        ("timeout", Budget::default().timeout(Duration::from_secs(1))),
        ("fuel", Budget::default().fuel(10_000)),
        ("memory", Budget::default().max_memory(1 << 20)),
        ("full", full_budget),
        (
            "max",
            Budget::default()
                .timeout(Duration::from_nanos(u64::MAX))
                .fuel(u64::MAX)
                .max_memory(u64::MAX),
        ),
    ];
    for (name, budget) in budgets {
        let args = vec![Val::U32(30)];
        messages.push((format!("task-budget-{name}"), task(9, budget, None, args)));
    }
    let argvs = [
        ("argv", vec!["prog".to_string(), "--n".into(), "".into()]),
        ("argv-empty", Vec::new()),
    ];
    for (name, argv) in argvs {
        let message = task(10, Budget::default(), Some(argv), Vec::new());
        messages.push((format!("task-{name}"), message));
    }
    messages.push((
        "task-no-args".into(),
        task(0, Budget::default(), None, Vec::new()),
    ));
    messages.push((
        "task-two-args".into(),
        task(
            11,
            Budget::default(),
            None,
            vec![string("ann"), Val::U32(3)],
        ),
    ));
    for (name, value) in values() {
        let message = task(12, Budget::default(), None, vec![value]);
        messages.push((format!("task-arg-{name}"), message));
    }
    messages.push((
        "task-chunk".into(),
        ToWorker::Task(RunTask {
            rest: vec![
                Cow::Owned(vec![string("bo"), Val::U32(4)]),
                Cow::Owned(vec![string("cy"), Val::U32(5)]),
            ],
            ..run_task(
                13,
                Budget::default(),
                None,
                vec![string("ann"), Val::U32(3)],
            )
        }),
    ));
    messages.push((
        "task-max-ids".into(),
        ToWorker::Task(RunTask {
            id: u64::MAX,
            component: u64::MAX,
            function: usize::MAX,
            budget: Budget::default(),
            argv: None,
            args: Cow::Owned(Vec::new()),
            rest: Vec::new(),
        }),
    ));
    messages.push(("abort".into(), ToWorker::Abort(Abort { id: 5 })));
    messages.push(("abort-max".into(), ToWorker::Abort(Abort { id: u64::MAX })));

    let mut seeds: Vec<Seed> = messages
        .iter()
        .map(|(name, message)| seed(TARGET, name, &[encode(message)]))
        .collect();
    // A whole session: what a pool writes to a worker that runs two tasks and aborts one.
    let session = [
        setup(TaskSettings {
            output: OutputMode::Plain,
            ..TaskSettings::default()
        }),
        ToWorker::Load(Load {
            id: 1,
            config: RuntimeConfig::default(),
            origin: "fixture_tasks.wasm".into(),
            code: Arc::from(&b"\0asm\x0d\0\x01\0"[..]),
        }),
        task(1, Budget::default(), None, vec![Val::U32(10)]),
        task(
            2,
            Budget::default().fuel(100),
            None,
            vec![string("a"), string("b")],
        ),
        ToWorker::Abort(Abort { id: 2 }),
    ];
    let frames: Vec<Vec<u8>> = session.iter().map(encode).collect();
    seeds.push(seed(TARGET, "session", &frames));
    seeds
}
