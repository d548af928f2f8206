//! Entry points for the fuzz targets in `fuzz/` (built only with the `fuzzing` feature), and
//! the generator of their seed corpora (`fuzz/seeds/<target>/`).
//!
//! Each entry point takes arbitrary bytes, drives one parser of untrusted input the way the
//! library does, and panics only when an invariant breaks; any error the input earns is
//! ignored. Each also says how far the input got (which checks it reached), so that the
//! seed replay in `tests/all/fuzz_seeds.rs` fails if the seeds stop exercising the checks.
//! Not a public API.

use std::sync::OnceLock;

use wasmtime::component::{Val, wasm_wave};

use crate::TaskComponent;

#[cfg(unix)]
pub use frames::{Reached, parent_stream, worker_stream};

/// One seed input of one fuzz target, as [`seed_corpora`] makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The fuzz target (its name in `fuzz/Cargo.toml`, and its directory in `fuzz/seeds/`).
    pub target: &'static str,
    /// The file name of the seed in that directory.
    pub name: String,
    /// The seed's contents.
    pub bytes: Vec<u8>,
}

/// Every seed of every fuzz target, made with the library's own encoders (the worker
/// protocol's frame encoders, and WAVE text aimed at the fixture component's functions by
/// name). `fuzz/seeds/` holds exactly these files; `tests/all/fuzz_seeds.rs` checks that
/// and writes them when `WASMPOOL_WRITE_SEEDS=1`.
pub fn seed_corpora() -> Vec<Seed> {
    let mut seeds = Vec::new();
    #[cfg(unix)]
    {
        seeds.extend(frames::worker_seeds());
        seeds.extend(frames::parent_seeds());
    }
    seeds.extend(wave_seeds());
    seeds.extend(component_seeds());
    seeds
}

/// The checks that the protocol entry points run on each message they decode: the message
/// must re-encode, the re-encoding must decode to a message equal to the first, field by
/// field, and re-encoding that must give the same bytes (the encoding is canonical).
#[cfg(unix)]
mod frames {
    use std::time::Duration;

    use wasmtime::component::Val;

    use super::Seed;
    use crate::component::RuntimeConfig;
    use crate::error::{ProtocolError, TaskError};
    use crate::output::{HostStream, OutputMode};
    use crate::process_pool::protocol::{
        FromWorker, Load, Setup, Task, ToWorker, abort_frame, decode_from_worker, decode_to_worker,
        hello_frame, load_frame_header, output_frame, read_frame, read_hello, result_frame,
        setup_frame, task_frame,
    };
    use crate::run::{InstancePolicy, TaskRun, TaskSettings};
    use crate::sandbox::{Budget, Capabilities};
    use crate::value::TaskValue;

    /// How far one input got through [`worker_stream`] or [`parent_stream`].
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Reached {
        /// The stream began with a valid greeting (a worker's stream only).
        pub greeting: bool,
        /// Frames read whole from the stream, after the greeting.
        pub frames: usize,
        /// One entry per message that decoded and passed the round-trip checks, in stream
        /// order: its kind (`"HELLO"`, `"OUTPUT"`, `"SETUP"`, `"LOAD"`, `"TASK"`,
        /// `"ABORT"`), or for a RESULT, `"RESULT ok"` or `"RESULT "` and the error's kind
        /// (`"RESULT timeout"`, ...).
        pub round_trips: Vec<String>,
    }

    /// Every message of either direction, taken apart field by field (without `..`, so
    /// that a field added to one of the protocol's structs is a compile error here rather
    /// than a field the round-trip check silently skips).
    #[derive(Debug, PartialEq)]
    enum Message {
        Setup(Setup),
        Load {
            id: u64,
            config: RuntimeConfig,
            origin: String,
            code: Vec<u8>,
        },
        Task {
            id: u64,
            component: u64,
            function: usize,
            budget: Budget,
            argv: Option<Vec<String>>,
            args: Vec<Val>,
        },
        Abort(u64),
        Output(HostStream, Vec<u8>),
        Result {
            id: u64,
            outcome: Result<TaskValue, TaskError>,
            elapsed: Duration,
            fuel_consumed: Option<u64>,
            peak_memory: u64,
            stdout: Option<String>,
            stderr: Option<String>,
            breaks_pool: bool,
        },
    }

    impl From<ToWorker> for Message {
        fn from(message: ToWorker) -> Message {
            match message {
                ToWorker::Setup(setup) => Message::Setup(setup),
                ToWorker::Load(Load {
                    id,
                    config,
                    origin,
                    code,
                }) => Message::Load {
                    id,
                    config,
                    origin,
                    code,
                },
                ToWorker::Task(Task {
                    id,
                    component,
                    function,
                    budget,
                    argv,
                    args,
                }) => Message::Task {
                    id,
                    component,
                    function,
                    budget,
                    argv,
                    args,
                },
                ToWorker::Abort(id) => Message::Abort(id),
            }
        }
    }

    impl From<FromWorker> for Message {
        fn from(message: FromWorker) -> Message {
            match message {
                FromWorker::Output(stream, line) => Message::Output(stream, line),
                FromWorker::Result(
                    id,
                    TaskRun {
                        outcome,
                        elapsed,
                        fuel_consumed,
                        peak_memory,
                        stdout,
                        stderr,
                        breaks_pool,
                    },
                ) => Message::Result {
                    id,
                    outcome,
                    elapsed,
                    fuel_consumed,
                    peak_memory,
                    stdout,
                    stderr,
                    breaks_pool,
                },
            }
        }
    }

    impl Message {
        /// The frame the sending side writes for this message, made by its own encoder.
        fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
            match self {
                Message::Setup(setup) => setup_frame(setup),
                Message::Load {
                    id,
                    config,
                    origin,
                    code,
                } => {
                    let mut frame = load_frame_header(*id, config, origin, code.len())?;
                    frame.extend_from_slice(code);
                    Ok(frame)
                }
                Message::Task {
                    id,
                    component,
                    function,
                    budget,
                    argv,
                    args,
                } => task_frame(*id, *component, *function, budget, argv.as_deref(), args),
                Message::Abort(id) => Ok(abort_frame(*id)),
                Message::Output(stream, line) => output_frame(*stream, line),
                Message::Result {
                    id,
                    outcome,
                    elapsed,
                    fuel_consumed,
                    peak_memory,
                    stdout,
                    stderr,
                    breaks_pool,
                } => result_frame(
                    *id,
                    &TaskRun {
                        outcome: outcome.clone(),
                        elapsed: *elapsed,
                        fuel_consumed: *fuel_consumed,
                        peak_memory: *peak_memory,
                        stdout: stdout.clone(),
                        stderr: stderr.clone(),
                        breaks_pool: *breaks_pool,
                    },
                ),
            }
        }

        /// What [`Reached::round_trips`] records for this message.
        fn label(&self) -> String {
            match self {
                Message::Setup(_) => "SETUP".into(),
                Message::Load { .. } => "LOAD".into(),
                Message::Task { .. } => "TASK".into(),
                Message::Abort(_) => "ABORT".into(),
                Message::Output(..) => "OUTPUT".into(),
                Message::Result { outcome: Ok(_), .. } => "RESULT ok".into(),
                Message::Result {
                    outcome: Err(e), ..
                } => format!("RESULT {}", e.kind()),
            }
        }
    }

    type Decode = fn(u8, &[u8]) -> Result<Message, ProtocolError>;

    fn decode_parent(kind: u8, payload: &[u8]) -> Result<Message, ProtocolError> {
        decode_to_worker(kind, payload).map(Message::from)
    }

    fn decode_worker(kind: u8, payload: &[u8]) -> Result<Message, ProtocolError> {
        decode_from_worker(kind, payload).map(Message::from)
    }

    /// Checks that `first`, a decoded message, survives encoding and decoding unchanged,
    /// and that its encoding is canonical; panics otherwise. Returns its label.
    fn check_round_trip(first: &Message, decode: Decode) -> String {
        let label = first.label();
        let frame = first
            .encode()
            .unwrap_or_else(|e| panic!("a decoded {label} does not re-encode: {e}"));
        let mut rest = &frame[..];
        let (kind, payload) = match read_frame(&mut rest) {
            Ok(Some(read)) => read,
            other => panic!("a re-encoded {label} is not a frame: {other:?}"),
        };
        assert!(
            rest.is_empty(),
            "a re-encoded {label} is more than one frame"
        );
        let second = decode(kind, &payload)
            .unwrap_or_else(|e| panic!("a re-encoded {label} does not decode: {e}"));
        assert_eq!(
            &second, first,
            "a {label} decoded from its re-encoding differs from the one decoded first"
        );
        let again = second
            .encode()
            .unwrap_or_else(|e| panic!("a decoded {label} does not re-encode: {e}"));
        assert_eq!(again, frame, "the encoding of {label} is not canonical");
        label
    }

    /// Reads frames the way the worker's loop or the pool's reader thread does, checking
    /// each message that decodes.
    fn read_frames(mut input: &[u8], decode: Decode, reached: &mut Reached) {
        while let Ok(Some((kind, payload))) = read_frame(&mut input) {
            reached.frames += 1;
            if let Ok(message) = decode(kind, &payload) {
                reached.round_trips.push(check_round_trip(&message, decode));
            }
        }
    }

    /// Bytes a worker could write to the pool: a greeting, then frames, each decoded the
    /// way the pool's reader thread does. Every message that decodes (greeting, OUTPUT,
    /// RESULT) must survive re-encoding and decoding unchanged, field by field, and its
    /// encoding must be canonical.
    pub fn worker_stream(data: &[u8]) -> Reached {
        let mut reached = Reached::default();
        let mut input = data;
        // Whatever the greeting's verdict, the frames after it are read on, as a reader
        // would if it did not stop.
        if let Ok(pid) = read_hello(&mut input) {
            let frame = hello_frame(pid);
            assert_eq!(
                read_hello(&mut &frame[..]),
                Ok(pid),
                "a re-encoded greeting does not read back"
            );
            reached.greeting = true;
            reached.round_trips.push("HELLO".into());
        }
        read_frames(input, decode_worker, &mut reached);
        reached
    }

    /// Bytes a parent could write to a worker's stdin: frames decoded the way the worker's
    /// loop does. Every message that decodes (SETUP, LOAD, TASK, ABORT) must survive
    /// re-encoding and decoding unchanged, field by field, and its encoding must be
    /// canonical.
    pub fn parent_stream(data: &[u8]) -> Reached {
        let mut reached = Reached::default();
        read_frames(data, decode_parent, &mut reached);
        reached
    }

    // -----------------------------------------------------------------------------------------
    // Seeds
    // -----------------------------------------------------------------------------------------

    fn seed(target: &'static str, name: &str, frames: &[Vec<u8>]) -> Seed {
        Seed {
            target,
            name: name.to_string(),
            bytes: frames.concat(),
        }
    }

    fn encode(message: &Message) -> Vec<u8> {
        message
            .encode()
            .unwrap_or_else(|e| panic!("a seed's {} does not encode: {e}", message.label()))
    }

    /// A RESULT with an ordinary report: some time, fuel and memory, no captured output.
    fn result(id: u64, outcome: Result<TaskValue, TaskError>) -> Message {
        Message::Result {
            id,
            outcome,
            elapsed: Duration::from_micros(1234),
            fuel_consumed: Some(77),
            peak_memory: 65536,
            stdout: None,
            stderr: None,
            breaks_pool: false,
        }
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
                    encode(&Message::Output(HostStream::Stdout, b"hello\n".to_vec())),
                ],
            ),
            seed(
                TARGET,
                "output-stderr",
                &[
                    hello.clone(),
                    encode(&Message::Output(
                        HostStream::Stderr,
                        b"worker-1: warning\n".to_vec(),
                    )),
                ],
            ),
            seed(
                TARGET,
                "result-unit",
                &[hello.clone(), encode(&result(1, Ok(TaskValue::unit())))],
            ),
        ];
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
                Message::Result {
                    id: 2,
                    outcome: ok(string("done")),
                    elapsed: Duration::from_millis(15),
                    fuel_consumed: None,
                    peak_memory: 1 << 20,
                    stdout: Some("sleeping 5\ndone with 5\n".into()),
                    stderr: Some(String::new()),
                    breaks_pool: false,
                },
            ),
            (
                "result-report-zero",
                Message::Result {
                    id: 0,
                    outcome: Ok(TaskValue::unit()),
                    elapsed: Duration::ZERO,
                    fuel_consumed: Some(0),
                    peak_memory: 0,
                    stdout: None,
                    stderr: None,
                    breaks_pool: false,
                },
            ),
            (
                "result-report-max",
                Message::Result {
                    id: u64::MAX,
                    outcome: ok(Val::U64(u64::MAX)),
                    elapsed: Duration::from_nanos(u64::MAX),
                    fuel_consumed: Some(u64::MAX),
                    peak_memory: u64::MAX,
                    stdout: Some("out".into()),
                    stderr: Some("err".into()),
                    breaks_pool: false,
                },
            ),
            (
                "result-breaks-pool",
                Message::Result {
                    id: 3,
                    outcome: Err(TaskError::Start {
                        message: "the initializer `init-fails` failed".into(),
                    }),
                    elapsed: Duration::from_micros(40),
                    fuel_consumed: Some(12),
                    peak_memory: 65536,
                    stdout: None,
                    stderr: Some("init failed\n".into()),
                    breaks_pool: true,
                },
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
                encode(&Message::Output(
                    HostStream::Stdout,
                    b"sleeping 5\n".to_vec(),
                )),
                encode(&result(1, ok(Val::Float64(0.5)))),
                encode(&Message::Output(HostStream::Stderr, b"oops\n".to_vec())),
                encode(&result(2, Err(TaskError::OutOfFuel { limit: 100 }))),
                encode(&result(3, ok(point(4, 6)))),
            ],
        ));
        seeds
    }

    fn setup(settings: TaskSettings) -> Message {
        Message::Setup(Setup {
            name: "worker-1".into(),
            settings,
        })
    }

    fn task(id: u64, budget: Budget, argv: Option<Vec<String>>, args: Vec<Val>) -> Message {
        Message::Task {
            id,
            component: 1,
            function: 3,
            budget,
            argv,
            args,
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
        let mut messages: Vec<(String, Message)> = vec![
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
        ];
        for (name, config, code) in loads {
            let load = Message::Load {
                id: 1,
                config,
                origin: "target/guests/fixture_tasks.wasm".into(),
                code,
            };
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
            "task-max-ids".into(),
            Message::Task {
                id: u64::MAX,
                component: u64::MAX,
                function: usize::MAX,
                budget: Budget::default(),
                argv: None,
                args: Vec::new(),
            },
        ));
        messages.push(("abort".into(), Message::Abort(5)));
        messages.push(("abort-max".into(), Message::Abort(u64::MAX)));

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
            Message::Load {
                id: 1,
                config: RuntimeConfig::default(),
                origin: "fixture_tasks.wasm".into(),
                code: b"\0asm\x0d\0\x01\0".to_vec(),
            },
            task(1, Budget::default(), None, vec![Val::U32(10)]),
            task(
                2,
                Budget::default().fuel(100),
                None,
                vec![string("a"), string("b")],
            ),
            Message::Abort(2),
        ];
        let frames: Vec<Vec<u8>> = session.iter().map(encode).collect();
        seeds.push(seed(TARGET, "session", &frames));
        seeds
    }
}

/// The fixture component (every WIT type the tests use), compiled once per fuzzing process.
fn fixtures() -> &'static TaskComponent {
    static FIXTURES: OnceLock<TaskComponent> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        TaskComponent::from_bytes(include_bytes!(env!("WASMPOOL_FIXTURES_WASM")))
            .expect("the fixture component loads")
    })
}

/// WAVE arguments for one of the fixture component's functions (the first byte picks it),
/// parsed and type-checked as `Call` does for `wasmpool map`. Arguments that parse must
/// have the parameters' types and must survive printing and parsing again unchanged.
/// Returns whether the input got that far (parsed, and passed those checks).
pub fn wave_args(data: &[u8]) -> bool {
    let Some((&pick, text)) = data.split_first() else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    let component = fixtures();
    let functions = component.functions();
    let function = &functions[usize::from(pick) % functions.len()];
    let name = function.name();
    let Ok(call) = component.call_wave_args(name, text) else {
        return false;
    };
    let types: Vec<_> = function.params().map(|(_, ty)| ty).collect();
    assert_eq!(call.args().len(), types.len(), "arity of {name}({text})");
    for (arg, ty) in call.args().iter().zip(&types) {
        if let Err(e) = crate::types::check_val(arg, ty) {
            panic!("{name}({text}) parsed to an ill-typed argument: {e}");
        }
    }
    let printed = print_args(call.args());
    let reparsed = component
        .call_wave_args(name, &printed)
        .unwrap_or_else(|e| panic!("{name}({text}) printed as ({printed}), which fails: {e}"));
    assert_eq!(
        printed,
        print_args(reparsed.args()),
        "{name}({text}) does not survive printing and parsing"
    );
    true
}

fn print_args(args: &[Val]) -> String {
    let printed: Vec<String> = args
        .iter()
        .map(|v| wasm_wave::to_string(v).expect("a parsed value prints"))
        .collect();
    printed.join(", ")
}

/// Seeds of `wave_args`: WAVE arguments of the fixture's functions, each aimed at its
/// function by name (the first byte is that function's index, as [`wave_args`] picks it).
fn wave_seeds() -> Vec<Seed> {
    const ARGS: &[(&str, &str)] = &[
        ("add", "1, 2"),
        ("add", "-7, 2147483647"),
        ("math.mul", "-3, 4"),
        ("fib", "30"),
        ("greet", "\"ann\""),
        ("greet", r#""tab\t, quote\", unicode \u{1f980}""#),
        ("sleep-ms", "18446744073709551615"),
        ("print-lines", "3, \"line\""),
        ("types.echo-point", "{x: 1, y: 2}"),
        ("types.echo-point", "{x: -2147483648, y: 0}"),
        ("types.echo-shape", "circle(1.5)"),
        ("types.echo-shape", "circle(nan)"),
        ("types.echo-shape", "circle(-inf)"),
        ("types.echo-shape", "circle(-1.5e3)"),
        ("types.echo-shape", "rect({x: 3, y: 4})"),
        ("types.echo-shape", "empty"),
        ("types.echo-color", "red"),
        ("types.echo-perms", "{read, write}"),
        ("types.echo-perms", "{}"),
        ("types.echo-option", "some(\"a\")"),
        ("types.echo-option", "none"),
        ("types.echo-list", "[1, 2, 3]"),
        ("types.echo-list", "[]"),
        ("types.echo-tuple", "(\"a\", 1, true)"),
        ("types.echo-char", "'c'"),
        ("types.echo-char", "'🦀'"),
        ("types.echo-result", "ok(1)"),
        ("types.echo-result", "err(\"e\")"),
        ("types.sum-points", "[{x: 1, y: 2}, {x: -1, y: 0}]"),
        (
            "types.everything",
            "{x: 1, y: -2}, rect({x: 3, y: 4}), blue, {read, exec}, some([\"a\", \"\"]), (7, '🦀', -1099511627776)",
        ),
        (
            "types.everything",
            "{x: 0, y: 0}, empty, green, {}, none, (0, 'x', 0)",
        ),
    ];
    let component = fixtures();
    let functions = component.functions();
    ARGS.iter()
        .enumerate()
        .map(|(i, (name, args))| {
            let function = component
                .function(name)
                .unwrap_or_else(|e| panic!("a WAVE seed's function {name}: {e}"));
            let index = functions
                .iter()
                .position(|f| std::ptr::eq(f, function))
                .expect("a function found by name is one of the functions");
            let pick = u8::try_from(index).expect("the fixture has fewer than 256 functions");
            let mut bytes = vec![pick];
            bytes.extend_from_slice(args.as_bytes());
            Seed {
                target: "wave_args",
                name: format!("seed-{i}"),
                bytes,
            }
        })
        .collect()
}

/// Arbitrary bytes as a component file: loading gives a component or a
/// [`LoadError`](crate::LoadError), never a panic. Returns whether the bytes loaded.
pub fn load_component(data: &[u8]) -> bool {
    let Ok(component) = TaskComponent::from_bytes(data) else {
        return false;
    };
    // Whatever loaded must describe itself without panicking.
    for f in component.functions() {
        let _ = f.signature();
    }
    let _ = component.imports();
    true
}

/// Seeds of `load_component`: the smallest component, and a core module (which is not one).
fn component_seeds() -> Vec<Seed> {
    let seed = |name: &str, bytes: &[u8]| Seed {
        target: "load_component",
        name: name.to_string(),
        bytes: bytes.to_vec(),
    };
    vec![
        seed("empty-component", b"\0asm\x0d\0\x01\0"),
        seed("core-module", b"\0asm\x01\0\0\0"),
    ]
}
