//! The bad-input catalogue (issue 7, part 5): inputs a user or an embedder can get wrong,
//! across the library and the command line, each with the error kind it must give and words
//! the message must contain to name the problem. One table, one test: every failing row is
//! reported at once.
//!
//! What is already asserted elsewhere is not repeated here (cli.rs: a missing file, a text
//! file and a core module on the command line, an unknown function, `.cwasm` without
//! `--allow-precompiled`, exit codes of some usage errors; sandbox_suite.rs: a fuel budget
//! on a runtime without metering).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;
use wasmpool::{
    Budget, BuildError, Call, CallError, Capabilities, Executor, LoadError, OutputMode,
    ProcessPoolExecutor, Runtime, RuntimeConfig, TaskComponent, ThreadPoolExecutor, Val,
};

use crate::common::{SOON, fixtures};

const FIXTURES: &str = env!("WASMPOOL_FIXTURES_WASM");
const BIN: &str = env!("CARGO_BIN_EXE_wasmpool");

/// What a row gave: an error kind (e.g. `LoadError::Truncated`, `task:timeout`, `exit 2`)
/// and its message. `Err` when the bad input was accepted.
type Outcome = Result<(String, String), String>;

struct Row {
    /// The bad input, in words.
    input: &'static str,
    /// The error kind it must give.
    kind: &'static str,
    /// Words the message must contain (it names the problem).
    needles: &'static [&'static str],
    run: Box<dyn Fn(&Files) -> Outcome>,
}

fn row(
    input: &'static str,
    kind: &'static str,
    needles: &'static [&'static str],
    run: impl Fn(&Files) -> Outcome + 'static,
) -> Row {
    Row {
        input,
        kind,
        needles,
        run: Box::new(run),
    }
}

/// Bad files made once, in a temporary directory.
struct Files {
    dir: TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().expect("temp dir");
        let good = std::fs::read(FIXTURES).expect("fixtures");
        let write = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes);
        write("empty.wasm", b"").unwrap();
        write("text.wasm", b"hello, I am text").unwrap();
        write("cut-in-header.wasm", &good[..6]).unwrap();
        write("cut-after-header.wasm", &good[..9]).unwrap();
        write("cut-in-half.wasm", &good[..good.len() / 2]).unwrap();
        write("cut-one-short.wasm", &good[..good.len() - 1]).unwrap();
        write("core.wasm", b"\0asm\x01\0\0\0").unwrap();
        // A component preamble, then a section with id 0x63 (none such) of 3 bytes.
        write("garbage.wasm", b"\0asm\x0d\0\x01\0\x63\x03abc").unwrap();
        // The magic, then a version/layer pair that is neither a module nor a component.
        write("version.wasm", b"\0asm\x02\0\0\0").unwrap();
        write("imports.wasm", UNSATISFIABLE).unwrap();
        let precompiled = fixtures().precompiled().expect("precompiled");
        write("fixtures.cwasm", &precompiled).unwrap();
        write("altered.cwasm", &altered_engine_version(&precompiled)).unwrap();
        std::fs::create_dir(dir.path().join("a-directory.wasm")).unwrap();
        let fifo = dir.path().join("a-fifo.wasm");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", fifo.display());
        Files { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A hand-encoded component that imports a function `frobnicate: func()`, which no host
/// provides: type section (7) with one `func()` type, import section (10) importing it.
const UNSATISFIABLE: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00, // preamble: component
    0x07, 0x05, 0x01, 0x40, 0x00, 0x01, 0x00, // type 0 = func() (no params, no result)
    0x0a, 0x0f, 0x01, 0x00, 0x0a, b'f', b'r', b'o', b'b', b'n', b'i', b'c', b'a', b't', b'e', 0x01,
    0x00, // import "frobnicate" (func (type 0))
];

/// `cwasm` with the wasmtime version in its `.wasmtime.engine` section changed from `48` to
/// `47`: wasmtime refuses it as compiled by another version.
fn altered_engine_version(cwasm: &[u8]) -> Vec<u8> {
    // The section (the first data after the ELF header) starts with its format's version
    // (0), the length of the wasmtime version text, and the text: the major version.
    let major = wasmtime_environ::VERSION
        .split('.')
        .next()
        .unwrap_or_default();
    assert_eq!(
        major, "48",
        "the alteration below assumes a two-digit version"
    );
    let needle = [&[0u8, 2][..], major.as_bytes()].concat();
    let at = cwasm
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the engine section of a .cwasm");
    let mut altered = cwasm.to_vec();
    altered[at + 2..at + needle.len()].copy_from_slice(b"47");
    altered
}

fn load_kind(e: &LoadError) -> &'static str {
    match e {
        LoadError::Io { .. } => "LoadError::Io",
        LoadError::NotWasm { .. } => "LoadError::NotWasm",
        LoadError::CoreModule { .. } => "LoadError::CoreModule",
        LoadError::Truncated { .. } => "LoadError::Truncated",
        LoadError::Invalid { .. } => "LoadError::Invalid",
        LoadError::Link { .. } => "LoadError::Link",
        LoadError::Engine(_) => "LoadError::Engine",
        LoadError::NotAFile { .. } => "LoadError::NotAFile",
        LoadError::TooLarge { .. } => "LoadError::TooLarge",
        LoadError::Precompiled { .. } => "LoadError::Precompiled",
        _ => "LoadError::(new variant)",
    }
}

fn call_kind(e: &CallError) -> &'static str {
    match e {
        CallError::UnknownFunction { .. } => "CallError::UnknownFunction",
        CallError::AmbiguousFunction { .. } => "CallError::AmbiguousFunction",
        CallError::Arity { .. } => "CallError::Arity",
        CallError::Type { .. } => "CallError::Type",
        CallError::Wave { .. } => "CallError::Wave",
        CallError::Json { .. } => "CallError::Json",
        _ => "CallError::(new variant)",
    }
}

fn build_kind(e: &BuildError) -> &'static str {
    match e {
        BuildError::Invalid(_) => "BuildError::Invalid",
        BuildError::Spawn(_) => "BuildError::Spawn",
        BuildError::Worker { .. } => "BuildError::Worker",
        _ => "BuildError::(new variant)",
    }
}

fn load(path: &Path) -> Outcome {
    match TaskComponent::from_file(path) {
        Ok(c) => Err(format!("loaded: {c:?}")),
        Err(e) => Ok((load_kind(&e).into(), e.to_string())),
    }
}

fn wave(text: &str) -> Outcome {
    match fixtures().call_wave(text) {
        Ok(c) => Err(format!("accepted: {c:?}")),
        Err(e) => Ok((call_kind(&e).into(), e.to_string())),
    }
}

fn json_call(name: &str, args: &str) -> Outcome {
    let args: serde_json::Value = serde_json::from_str(args).map_err(|e| e.to_string())?;
    match fixtures().call_json(name, &args) {
        Ok(c) => Err(format!("accepted: {c:?}")),
        Err(e) => Ok((call_kind(&e).into(), e.to_string())),
    }
}

fn call(name: &str, args: Vec<Val>) -> Outcome {
    match fixtures().call(name, args) {
        Ok(c) => Err(format!("accepted: {c:?}")),
        Err(e) => Ok((call_kind(&e).into(), e.to_string())),
    }
}

fn build<T>(result: Result<T, BuildError>) -> Outcome {
    match result {
        Ok(_) => Err("built".into()),
        Err(e) => Ok((build_kind(&e).into(), e.to_string())),
    }
}

/// Runs `call` on a one-worker thread pool with `caps`; the task error's kind and message.
fn task_with(call: Call, caps: Capabilities) -> Outcome {
    let pool = ThreadPoolExecutor::builder()
        .workers(1)
        .output(OutputMode::Discard)
        .capabilities(caps)
        .build()
        .map_err(|e| e.to_string())?;
    let future = pool.submit(call).map_err(|e| e.to_string())?;
    match future.result_timeout(SOON) {
        Err(timeout) => Err(timeout.to_string()),
        Ok(Ok(v)) => Err(format!("succeeded: {}", v.to_wave())),
        Ok(Err(e)) => Ok((format!("task:{}", e.kind()), e.to_string())),
    }
}

fn task(wave: &str, budget: Budget) -> Outcome {
    let call = fixtures()
        .call_wave(wave)
        .map_err(|e| e.to_string())?
        .with_budget(budget);
    task_with(call, Capabilities::default())
}

/// The fixtures on a runtime with fuel metering.
fn metered() -> &'static TaskComponent {
    static C: OnceLock<TaskComponent> = OnceLock::new();
    C.get_or_init(|| {
        Runtime::with_config(RuntimeConfig::default().fuel(true))
            .expect("runtime")
            .load(FIXTURES)
            .expect("fixtures")
    })
}

/// `wasmpool ARGS` with empty stdin and a cache of its own: `exit N` and stderr.
fn cli(files: &Files, args: &[&str]) -> Outcome {
    cli_stdin(files, args, b"")
}

/// `wasmpool ARGS` with `stdin` and a cache of its own: `exit N` and stderr.
fn cli_stdin(files: &Files, args: &[&str], stdin: &[u8]) -> Outcome {
    let output = assert_cmd::Command::new(BIN)
        .env("XDG_CACHE_HOME", files.path("cache"))
        .args(args)
        .write_stdin(stdin)
        .timeout(Duration::from_secs(120))
        .output()
        .map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    match output.status.code() {
        Some(0) => Err(format!("exit 0; stderr: {stderr}")),
        Some(code) => Ok((format!("exit {code}"), stderr)),
        None => Err(format!("killed by a signal; stderr: {stderr}")),
    }
}

/// `wasmpool ARGS` where each `{f}` in ARGS is the path of the file `f` of `files`.
fn cli_files(files: &Files, args: &[&str]) -> Outcome {
    let args: Vec<String> = args
        .iter()
        .map(
            |a| match a.strip_prefix('{').and_then(|a| a.strip_suffix('}')) {
                Some(name) => files.path(name).display().to_string(),
                None => a.to_string(),
            },
        )
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli(files, &args)
}

fn catalogue() -> Vec<Row> {
    vec![
        // ---- files, through the library (TaskComponent::from_file) ----
        row(
            "a missing file",
            "LoadError::Io",
            &["no-such.wasm", "No such file"],
            |f| load(&f.path("no-such.wasm")),
        ),
        row(
            "an empty file",
            "LoadError::NotWasm",
            &["empty.wasm", "not a WebAssembly file"],
            |f| load(&f.path("empty.wasm")),
        ),
        row(
            "a text file",
            "LoadError::NotWasm",
            &["text.wasm", "not a WebAssembly file"],
            |f| load(&f.path("text.wasm")),
        ),
        row(
            "a component cut inside its 8-byte header",
            "LoadError::Truncated",
            &["cut-in-header.wasm", "truncated", "8-byte header"],
            |f| load(&f.path("cut-in-header.wasm")),
        ),
        row(
            "a component cut right after its first section id",
            "LoadError::Truncated",
            &["cut-after-header.wasm", "truncated", "cut off"],
            |f| load(&f.path("cut-after-header.wasm")),
        ),
        row(
            "a component cut in half",
            "LoadError::Truncated",
            &["cut-in-half.wasm", "truncated", "only"],
            |f| load(&f.path("cut-in-half.wasm")),
        ),
        row(
            "a component one byte short",
            "LoadError::Truncated",
            &["cut-one-short.wasm", "truncated"],
            |f| load(&f.path("cut-one-short.wasm")),
        ),
        row(
            "a core module",
            "LoadError::CoreModule",
            &["core.wasm", "core WebAssembly module, not a component"],
            |f| load(&f.path("core.wasm")),
        ),
        row(
            "a component header followed by garbage",
            "LoadError::Invalid",
            &["garbage.wasm", "not a valid component", "section"],
            |f| load(&f.path("garbage.wasm")),
        ),
        row(
            "the wasm magic with an unknown version",
            "LoadError::Invalid",
            &["version.wasm", "unknown wasm version"],
            |f| load(&f.path("version.wasm")),
        ),
        row(
            "a directory instead of a file",
            "LoadError::NotAFile",
            &["a-directory.wasm", "not a regular file", "directory"],
            |f| load(&f.path("a-directory.wasm")),
        ),
        row(
            "a device (/dev/zero) instead of a file: never read without end",
            "LoadError::NotAFile",
            &["/dev/zero", "not a regular file", "character device"],
            |_| load(Path::new("/dev/zero")),
        ),
        row(
            "a FIFO instead of a file: never waited on",
            "LoadError::NotAFile",
            &["a-fifo.wasm", "FIFO"],
            |f| load(&f.path("a-fifo.wasm")),
        ),
        row(
            "a .cwasm where a .wasm is expected",
            "LoadError::Precompiled",
            &["fixtures.cwasm", "already precompiled"],
            |f| load(&f.path("fixtures.cwasm")),
        ),
        row(
            "a component importing a function no host provides",
            "LoadError::Link",
            &["imports.wasm", "cannot be linked", "frobnicate"],
            |f| load(&f.path("imports.wasm")),
        ),
        // ---- names ----
        row(
            "an unknown function",
            "CallError::UnknownFunction",
            &["`nope`", "fib"],
            |_| wave("nope(1)"),
        ),
        row(
            "an unknown interface",
            "CallError::UnknownFunction",
            &["`nosuch.add`", "math@0.1.0#add"],
            |_| wave("nosuch.add(1, 2)"),
        ),
        row(
            "a bare interface function name, with too few arguments",
            "CallError::Arity",
            &["`wasmpool:tasks/types@0.1.0#echo-char` takes 1 argument(s), 0 given"],
            |_| call("echo-char", vec![]),
        ),
        row(
            "a bare function name that two exported interfaces share",
            "CallError::AmbiguousFunction",
            &[
                "`mul` is ambiguous",
                "wasmpool:tasks/math@0.1.0#mul",
                "wasmpool:tasks/checked@0.1.0#mul",
            ],
            |_| call("mul", vec![Val::S32(2), Val::S32(3)]),
        ),
        row(
            "an empty function name",
            "CallError::UnknownFunction",
            &["no function ``"],
            |_| call("", vec![]),
        ),
        row(
            "an empty call",
            "CallError::Wave",
            &["expected a call like `name(args)`"],
            |_| wave(""),
        ),
        row(
            "a name without parentheses",
            "CallError::Wave",
            &["expected a call"],
            |_| wave("fib"),
        ),
        // ---- arity and types (Val arguments) ----
        row(
            "too few arguments (Val)",
            "CallError::Arity",
            &["`fib` takes 1", "0 given"],
            |_| call("fib", vec![]),
        ),
        row(
            "too many arguments (WAVE)",
            "CallError::Wave",
            &["`add`"],
            |_| wave("add(1, 2, 3)"),
        ),
        row(
            "a string for a u32 (Val)",
            "CallError::Type",
            &["argument `n`", "`fib`"],
            |_| call("fib", vec![Val::String("x".into())]),
        ),
        // ---- WAVE values ----
        row(
            "a string for a u32 (WAVE)",
            "CallError::Wave",
            &["`fib`"],
            |_| wave(r#"fib("x")"#),
        ),
        row("a negative u32", "CallError::Wave", &["`fib`"], |_| {
            wave("fib(-1)")
        }),
        row("a u32 out of range", "CallError::Wave", &["`fib`"], |_| {
            wave("fib(4294967296)")
        }),
        row("an s32 out of range", "CallError::Wave", &["`add`"], |_| {
            wave("add(2147483648, 1)")
        }),
        row(
            "an unterminated string",
            "CallError::Wave",
            &["`greet`"],
            |_| wave(r#"greet("ann)"#),
        ),
        row(
            "a bad escape in a string",
            "CallError::Wave",
            &["`greet`"],
            |_| wave(r#"greet("\q")"#),
        ),
        row(
            "an unknown enum case",
            "CallError::Wave",
            &["echo-color"],
            |_| wave("types.echo-color(purple)"),
        ),
        row(
            "an unknown flag",
            "CallError::Wave",
            &["echo-perms"],
            |_| wave("types.echo-perms({read, fly})"),
        ),
        row(
            "a record with a missing field",
            "CallError::Wave",
            &["echo-point"],
            |_| wave("types.echo-point({x: 1})"),
        ),
        row(
            "a record with a field its type lacks: its value's position",
            "CallError::Wave",
            &[
                "echo-point",
                "unknown field `z` (the record has: x, y) at 33..34",
            ],
            |_| wave("types.echo-point({x: 1, y: 2, z: 3})"),
        ),
        row(
            "a stray field in a record inside a list",
            "CallError::Wave",
            &["sum-points", "unknown field `w`"],
            |_| wave("types.sum-points([{x: 1, y: 2}, {x: 1, y: 2, w: 0}])"),
        ),
        row(
            "a stray field in a record that is a variant's payload",
            "CallError::Wave",
            &["echo-shape", "unknown field `q`"],
            |_| wave("types.echo-shape(rect({x: 1, y: 2, q: 1}))"),
        ),
        row(
            "CLI: a map line with a stray record field",
            "exit 1",
            &["task 0:", "unknown field `zz`", "at 17..18"],
            |f| {
                cli_stdin(
                    f,
                    &["map", FIXTURES, "echo-point"],
                    b"{x: 1, y: 2, zz: 3}\n",
                )
            },
        ),
        row(
            "JSON: a field of the wrong type deep inside an argument",
            "CallError::Json",
            &["sum-points", ".ps[1].x: expected s32, got \"a\""],
            |_| {
                json_call(
                    "types.sum-points",
                    r#"[[{"x": 1, "y": 2}, {"x": "a", "y": 2}]]"#,
                )
            },
        ),
        row(
            "JSON: a record with an unknown field (which WAVE drops)",
            "CallError::Json",
            &[".p: no field `z`; expected: x, y"],
            |_| json_call("types.echo-point", r#"[{"x": 1, "y": 2, "z": 3}]"#),
        ),
        row(
            "JSON: a u64 past 2^53 as an inexact number",
            "CallError::Json",
            &[".ms: expected u64", "not exact", "as a string"],
            |_| json_call("sleep-ms", "[1e19]"),
        ),
        row(
            "JSON: a variant as a bare case that needs a payload",
            "CallError::Json",
            &[".s: case `circle` needs a f64 payload"],
            |_| json_call("types.echo-shape", r#"["circle"]"#),
        ),
        row(
            "a variant case without its payload",
            "CallError::Wave",
            &["echo-shape"],
            |_| wave("types.echo-shape(circle)"),
        ),
        row(
            "two characters for a char",
            "CallError::Wave",
            &["echo-char"],
            |_| wave("types.echo-char('ab')"),
        ),
        row(
            "a WAVE error: its position is in the call's text",
            "CallError::Wave",
            &["`add`", "invalid value type at 4..5"],
            |_| wave("add(x, 1)"),
        ),
        row(
            "a WAVE error in the arguments: its position is in the arguments' text",
            "CallError::Wave",
            &["`add`", "invalid value type at 0..1"],
            |_| match fixtures().call_wave_args("add", "x, 1") {
                Ok(c) => Err(format!("accepted: {c:?}")),
                Err(e) => Ok((call_kind(&e).into(), e.to_string())),
            },
        ),
        row(
            "trailing garbage after the call",
            "CallError::Wave",
            &["`fib`"],
            |_| wave("fib(1) and more"),
        ),
        // ---- limits ----
        row(
            "a timeout of 0",
            "task:timeout",
            &["timed out after 0ns"],
            |_| {
                task(
                    "add(1, 2)",
                    Budget::default().timeout(std::time::Duration::ZERO),
                )
            },
        ),
        // A cap below the component's initial memory stops instantiation itself.
        row(
            "a memory cap of 0 bytes",
            "task:memory-limit",
            &["memory limit of 0 bytes"],
            |_| task("add(1, 2)", Budget::default().max_memory(0)),
        ),
        row(
            "a memory cap of 1 byte (below one wasm page)",
            "task:memory-limit",
            &["memory limit of 1 bytes"],
            |_| task("add(1, 2)", Budget::default().max_memory(1)),
        ),
        row(
            "a fuel budget of 0",
            "task:out-of-fuel",
            &["out of fuel", "limit 0"],
            |_| {
                let call = metered().call_wave("fib(5)").map_err(|e| e.to_string())?;
                task_with(
                    call.with_budget(Budget::default().fuel(0)),
                    Capabilities::default(),
                )
            },
        ),
        row(
            "an absurd number of workers for a thread pool",
            "BuildError::Invalid",
            &["99999999999999 workers", "limit of 1024"],
            |_| build(ThreadPoolExecutor::new(99_999_999_999_999)),
        ),
        row(
            "0 workers for a thread pool",
            "BuildError::Invalid",
            &["workers must be at least 1"],
            |_| build(ThreadPoolExecutor::new(0)),
        ),
        row(
            "0 workers for a process pool",
            "BuildError::Invalid",
            &["workers must be at least 1"],
            |_| {
                build(
                    ProcessPoolExecutor::builder()
                        .workers(0)
                        .worker_program(BIN)
                        .build(),
                )
            },
        ),
        row(
            "a process pool whose worker program does not exist",
            "BuildError::Spawn",
            &["cannot start a worker", "No such file"],
            |f| {
                build(
                    ProcessPoolExecutor::builder()
                        .workers(1)
                        .worker_program(f.path("no-such-worker"))
                        .build(),
                )
            },
        ),
        row(
            "a process pool whose worker program is not a wasmpool worker",
            "BuildError::Worker",
            &["worker-1 did not start"],
            |_| {
                build(
                    ProcessPoolExecutor::builder()
                        .workers(1)
                        .worker_program("/bin/true")
                        .build(),
                )
            },
        ),
        row(
            "an initializer the component does not export",
            "task:broken-pool",
            &["initializer", "`no-such-init`"],
            |_| {
                let pool = ThreadPoolExecutor::builder()
                    .workers(1)
                    .output(OutputMode::Discard)
                    .initializer("no-such-init")
                    .build()
                    .map_err(|e| e.to_string())?;
                let future = pool
                    .submit(fixtures().call_wave("noop()").map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
                match future.result_timeout(SOON) {
                    Ok(Err(e)) => Ok((format!("task:{}", e.kind()), e.to_string())),
                    other => Err(format!("{other:?}")),
                }
            },
        ),
        row(
            "a preopen of a missing host directory",
            "task:start",
            &["cannot open", "/no/such/dir"],
            |_| {
                let call = fixtures().call_wave("noop()").map_err(|e| e.to_string())?;
                task_with(call, Capabilities::default().dir("/no/such/dir", "/data"))
            },
        ),
        // ---- the command line: load errors and usage errors exit 2, stderr names them ----
        row(
            "CLI: an empty file",
            "exit 2",
            &["empty.wasm", "not a WebAssembly file"],
            |f| cli_files(f, &["run", "{empty.wasm}", "fib(1)"]),
        ),
        row(
            "CLI: a truncated component",
            "exit 2",
            &["cut-in-half.wasm", "truncated"],
            |f| cli_files(f, &["run", "{cut-in-half.wasm}", "fib(1)"]),
        ),
        row(
            "CLI: a device (/dev/zero) as the component",
            "exit 2",
            &["/dev/zero", "not a regular file", "character device"],
            |f| cli(f, &["inspect", "/dev/zero"]),
        ),
        row(
            "CLI: a FIFO as the component (never waited on)",
            "exit 2",
            &["a-fifo.wasm", "not a regular file", "FIFO"],
            |f| cli_files(f, &["run", "{a-fifo.wasm}", "fib(1)"]),
        ),
        row(
            "CLI: an absurd worker count",
            "exit 2",
            &["99999999999999", "more than the limit of 1024"],
            |f| cli_files(f, &["map", "{empty.wasm}", "fib", "-j", "99999999999999"]),
        ),
        row(
            "CLI: a directory as the component",
            "exit 2",
            &["a-directory.wasm", "directory"],
            |f| cli_files(f, &["inspect", "{a-directory.wasm}"]),
        ),
        row(
            "CLI: unsatisfiable imports",
            "exit 2",
            &["imports.wasm", "frobnicate"],
            |f| cli_files(f, &["map", "{imports.wasm}", "f"]),
        ),
        row(
            "CLI: an unterminated call",
            "exit 2",
            &["invalid WAVE", "`fib`"],
            |f| cli(f, &["run", FIXTURES, "fib(1"]),
        ),
        row(
            "CLI: run --input json with ARGS that are not JSON",
            "exit 2",
            &["ARGS is not JSON", "[1, 2"],
            |f| cli(f, &["run", FIXTURES, "add", "[1, 2", "--input", "json"]),
        ),
        row(
            "CLI: map --input json, a line that does not fit (the others run)",
            "exit 1",
            &["task 1:", "[invalid-input]", ".b: expected s32, got true"],
            |f| {
                cli_stdin(
                    f,
                    &["map", FIXTURES, "add", "--input", "json"],
                    b"[1, 2]\n[1, true]\n",
                )
            },
        ),
        row(
            "CLI: --workers 0",
            "exit 2",
            &["--workers", "at least 1 worker"],
            |f| cli(f, &["map", FIXTURES, "fib", "--workers", "0"]),
        ),
        row(
            "CLI: -j not a number",
            "exit 2",
            &["--workers", "`many`"],
            |f| cli(f, &["map", FIXTURES, "fib", "-j", "many"]),
        ),
        row(
            "CLI: --max-memory 99999999TiB",
            "exit 2",
            &["--max-memory", "too large"],
            |f| {
                cli(
                    f,
                    &["run", FIXTURES, "fib(1)", "--max-memory", "99999999TiB"],
                )
            },
        ),
        row(
            "CLI: --max-memory with an unknown unit",
            "exit 2",
            &["`12XB` is not a size"],
            |f| cli(f, &["run", FIXTURES, "fib(1)", "--max-memory", "12XB"]),
        ),
        row(
            "CLI: a negative --timeout",
            "exit 2",
            &["`-1s` is not a duration"],
            |f| cli(f, &["run", FIXTURES, "fib(1)", "--timeout=-1s"]),
        ),
        row(
            "CLI: --timeout without a unit",
            "exit 2",
            &["`5` needs a unit"],
            |f| cli(f, &["run", FIXTURES, "fib(1)", "--timeout", "5"]),
        ),
        row(
            "CLI: an oversized --timeout",
            "exit 2",
            &["--timeout", "too large", "876000h"],
            |f| {
                cli(
                    f,
                    &[
                        "run",
                        FIXTURES,
                        "fib(1)",
                        "--timeout",
                        "99999999999999999999999s",
                    ],
                )
            },
        ),
        row(
            "CLI: a --timeout that fits a Duration but not a deadline",
            "exit 2",
            &["--timeout", "too large"],
            |f| {
                cli(
                    f,
                    &["run", FIXTURES, "fib(1)", "--timeout", "5000000000000000h"],
                )
            },
        ),
        row(
            "CLI: --timeout 0s",
            "exit 2",
            &["--timeout must be longer than 0"],
            |f| cli(f, &["run", FIXTURES, "fib(1)", "--timeout", "0s"]),
        ),
        row(
            "CLI: --fuel not a number",
            "exit 2",
            &["--fuel", "'lots'"],
            |f| cli(f, &["run", FIXTURES, "fib(1)", "--fuel", "lots"]),
        ),
        row("CLI: --fuel negative", "exit 2", &["--fuel", "'-5'"], |f| {
            cli(f, &["run", FIXTURES, "fib(1)", "--fuel=-5"])
        }),
        row(
            "CLI: --dir-rw naming a file",
            "exit 2",
            &["--dir-rw", "not a directory"],
            |f| cli_files(f, &["run", FIXTURES, "fib(1)", "--dir-rw", "{text.wasm}"]),
        ),
        row(
            "CLI: --dir with an empty host",
            "exit 2",
            &["`::/data` is not HOST[::GUEST]"],
            |f| cli(f, &["run", FIXTURES, "fib(1)", "--dir", "::/data"]),
        ),
        row(
            "CLI: --env with an empty key",
            "exit 2",
            &["`=x` is not KEY[=VAL]"],
            |f| cli(f, &["run", FIXTURES, "fib(1)", "--env", "=x"]),
        ),
        row(
            "CLI: --pool of an unknown kind",
            "exit 2",
            &["--pool", "'fork'"],
            |f| cli(f, &["map", FIXTURES, "fib", "--pool", "fork"]),
        ),
        row("CLI: run without a CALL", "exit 2", &["<CALL>"], |f| {
            cli(f, &["run", FIXTURES])
        }),
        row(
            "CLI: an unknown subcommand",
            "exit 2",
            &["'frobnicate'"],
            |f| cli(f, &["frobnicate"]),
        ),
        row("CLI: an unknown flag", "exit 2", &["'--turbo'"], |f| {
            cli(f, &["run", FIXTURES, "fib(1)", "--turbo"])
        }),
        row(
            "CLI: compile of a .cwasm",
            "exit 2",
            &["fixtures.cwasm", "already precompiled"],
            |f| cli_files(f, &["compile", "{fixtures.cwasm}", "-o", "{again.cwasm}"]),
        ),
        row(
            "CLI: a .cwasm whose engine version was altered: no note about fuel",
            "exit 2",
            &["altered.cwasm", "incompatible version '47'"],
            |f| {
                let run = cli_files(
                    f,
                    &["run", "{altered.cwasm}", "noop", "--allow-precompiled"],
                );
                run.and_then(|(kind, message)| match message.contains("fuel") {
                    true => Err(format!("a note about fuel: {message}")),
                    false => Ok((kind, message)),
                })
            },
        ),
        row(
            "CLI: a map line `x, 1`: the WAVE position is in the line",
            "exit 1",
            &["task 0: add(x, 1) failed", "invalid value type at 0..1"],
            |f| cli_stdin(f, &["map", FIXTURES, "add"], b"x, 1\n"),
        ),
        row(
            "CLI: a map line that is not UTF-8: shown as it is, with U+FFFD",
            "exit 1",
            &["task 0: greet(\"a\u{fffd}\")", "not valid UTF-8"],
            |f| cli_stdin(f, &["map", FIXTURES, "greet"], b"\"a\xff\"\n"),
        ),
        row(
            "CLI: a 2 MB map line that fails: its echo is cut short",
            "exit 1",
            &[
                "task 0: fib(xxxx",
                "… (2000000 bytes in all)",
                "invalid WAVE",
            ],
            |f| {
                let mut line = vec![b'x'; 2_000_000];
                line.push(b'\n');
                let run = cli_stdin(f, &["map", FIXTURES, "fib"], &line);
                run.and_then(|(kind, message)| match message.len() {
                    0..1000 => Ok((kind, message)),
                    n => Err(format!("{n} bytes on stderr")),
                })
            },
        ),
        row(
            "CLI: --resume with a file that is not a joblog",
            "exit 2",
            &["text.wasm", "not a wasmpool joblog"],
            |f| {
                let joblog = ["--joblog", "{text.wasm}", "--resume"];
                let run = cli_files(f, &[&["map", FIXTURES, "fib"][..], &joblog].concat());
                let text = std::fs::read(f.path("text.wasm")).map_err(|e| e.to_string())?;
                match text == b"hello, I am text" {
                    true => run,
                    false => Err(format!("the file was changed: {text:?}")),
                }
            },
        ),
        row(
            "CLI: a missing INPUTS file for map",
            "exit 2",
            &["no-such-inputs.txt"],
            |f| cli_files(f, &["map", FIXTURES, "fib", "{no-such-inputs.txt}"]),
        ),
    ]
}

#[test]
fn every_bad_input_gives_its_error_kind_and_names_the_problem() {
    let files = Files::new();
    let rows = catalogue();
    assert!(rows.len() >= 30, "the catalogue has {} rows", rows.len());
    let mut failures = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (r.run)(&files)))
            .unwrap_or_else(|panic| {
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                Err(format!("panicked: {}", text.unwrap_or_default()))
            });
        let problem = match outcome {
            Err(why) => Some(format!("no error as expected: {why}")),
            Ok((kind, _)) if kind != r.kind => Some(format!("kind {kind}, expected {}", r.kind)),
            Ok((_, message)) => {
                let missing: Vec<_> = r
                    .needles
                    .iter()
                    .filter(|n| !message.contains(**n))
                    .collect();
                (!missing.is_empty()).then(|| format!("message lacks {missing:?}: {message:?}"))
            }
        };
        if let Some(problem) = problem {
            failures.push(format!("row {i} ({}): {problem}", r.input));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// Cache entries replaced by a link to `/dev/zero` or by a FIFO are unusable, not an endless
/// read or a hang: the run compiles again (and says why) and succeeds.
#[test]
fn a_cache_entry_that_is_a_device_or_a_fifo_is_compiled_again() {
    let files = Files::new();
    let cache = files.path("cache-dir");
    let run = || {
        assert_cmd::Command::new(BIN)
            .args(["run", "--cache-dir"])
            .arg(&cache)
            .args([FIXTURES, "add(1, 2)"])
            .timeout(Duration::from_secs(120))
            .output()
            .expect("wasmpool runs")
    };
    assert!(run().status.success());
    for replacement in ["device", "fifo"] {
        let entries: Vec<PathBuf> = std::fs::read_dir(&cache)
            .expect("the cache")
            .map(|e| e.expect("an entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        std::fs::remove_file(&entries[0]).expect("remove the entry");
        let made = match replacement {
            "device" => std::os::unix::fs::symlink("/dev/zero", &entries[0]).is_ok(),
            _ => std::process::Command::new("mkfifo")
                .arg(&entries[0])
                .status()
                .is_ok_and(|s| s.success()),
        };
        assert!(made, "{replacement} at {}", entries[0].display());
        let output = run();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{replacement}: {stderr}");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "3");
        assert!(
            stderr.contains("unusable") && stderr.contains("not a regular file"),
            "{replacement}: {stderr}"
        );
    }
}
