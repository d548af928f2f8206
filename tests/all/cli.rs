//! The `wasmpool` command line, driven from outside as a user would: each command and flag,
//! the exit statuses, and what goes to stdout and stderr.
//!
//! Every test runs the real binary (`CARGO_BIN_EXE_wasmpool`) on the bundled components.
//! They share one compilation cache directory (so each component is compiled once per test
//! run), except the tests of the cache itself.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::SOON;
use crate::procfs::children_of;

pub(crate) const FIXTURES: &str = env!("WASMPOOL_FIXTURES_WASM");
const SEED: &str = env!("WASMPOOL_SEED_WASM");
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_wasmpool");

/// The cache directory shared by the tests (their XDG_CACHE_HOME).
pub(crate) fn shared_cache() -> &'static Path {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

/// `wasmpool ARGS` with the shared cache and nothing inherited that matters.
fn wasmpool<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    wasmpool_within(args, Duration::from_secs(120))
}

/// [`wasmpool`], killed after `timeout`.
pub(crate) fn wasmpool_within<I, S>(args: I, timeout: Duration) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(BIN);
    command
        .env("XDG_CACHE_HOME", shared_cache())
        .args(args)
        .timeout(timeout);
    command
}

/// Runs `map FIXTURES FUNC EXTRA...` on `input` (stdin).
fn map(function: &str, input: &str, extra: &[&str]) -> assert_cmd::assert::Assert {
    let mut args = vec!["map", FIXTURES, function];
    args.extend_from_slice(extra);
    wasmpool(args).write_stdin(input).assert()
}

fn stdout_of(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stdout).into_owned()
}

fn stderr_of(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stderr).into_owned()
}

/// Parses JSON lines.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

fn kind(object: &Value) -> &str {
    object["error"]["kind"].as_str().unwrap_or("(none)")
}

// ---------------------------------------------------------------------------------------
// inspect

#[test]
fn inspect_lists_functions_by_interface_then_imports() {
    let assert = wasmpool(["inspect", FIXTURES]).assert().success();
    let out = stdout_of(&assert);
    assert!(
        out.contains("exports:\n  fib: func(n: u32) -> u64\n"),
        "{out}"
    );
    assert!(
        out.contains("  greet: func(name: string) -> string\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "  interface wasmpool:tasks/math@0.1.0 (call as math.NAME):\n    add: func(a: s32, b: s32) -> s32\n"
        ),
        "{out}"
    );
    let imports = out.split("imports:\n").nth(1).expect("an imports section");
    assert!(imports.contains("  wasi:cli/stdout@0.2"), "{out}");
    // Top-level functions come before the interfaces.
    let fib = out.find("fib:").expect("fib");
    let math = out.find("interface wasmpool:tasks/math").expect("math");
    assert!(fib < math);
}

#[test]
fn inspect_json_lists_every_export() {
    let assert = wasmpool(["inspect", SEED, "--output", "json"])
        .assert()
        .success();
    let object: Value = serde_json::from_str(&stdout_of(&assert)).expect("one JSON object");
    let exports = object["exports"].as_array().expect("exports");
    let names: Vec<&str> = exports.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "sleep-task",
            "labeled-task",
            "random-sleep-task",
            "check-task",
            "print-task",
            "quick-task",
            "noop"
        ]
    );
    assert_eq!(exports[0]["signature"], "func(n: u32) -> f64");
    assert_eq!(exports[0]["call"], "sleep-task");
    assert!(object["imports"].as_array().is_some_and(|i| !i.is_empty()));
}

// ---------------------------------------------------------------------------------------
// components that cannot be loaded: exit 2, the file and the reason on stderr

#[test]
fn a_missing_file_is_a_load_error() {
    let assert = wasmpool(["run", "no/such/file.wasm", "fib(1)"])
        .assert()
        .code(2);
    let err = stderr_of(&assert);
    assert!(err.contains("no/such/file.wasm"), "{err}");
    assert!(err.contains("No such file"), "{err}");
}

#[test]
fn a_file_that_is_not_wasm_is_a_load_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notes.wasm");
    std::fs::write(&path, "hello, I am text").expect("write");
    for command in ["run", "map", "inspect"] {
        let mut args = vec![command.to_string(), path.display().to_string()];
        if command != "inspect" {
            args.push("fib(1)".into());
        }
        let assert = wasmpool(&args).write_stdin("").assert().code(2);
        let err = stderr_of(&assert);
        assert!(err.contains("notes.wasm"), "{command}: {err}");
        assert!(err.contains("not a WebAssembly file"), "{command}: {err}");
    }
}

#[test]
fn a_core_module_is_a_load_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("core.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0").expect("write");
    let assert = wasmpool(["run", &path.display().to_string(), "f()"])
        .assert()
        .code(2);
    let err = stderr_of(&assert);
    assert!(err.contains("core.wasm"), "{err}");
    assert!(
        err.contains("core WebAssembly module, not a component"),
        "{err}"
    );
}

#[test]
fn an_unknown_function_is_a_usage_error_that_lists_the_exports() {
    let assert = wasmpool(["run", FIXTURES, "nope(1)"]).assert().code(2);
    let err = stderr_of(&assert);
    assert!(err.contains("no function `nope`"), "{err}");
    assert!(err.contains("fib, "), "{err}");

    let assert = map("nope", "1\n", &[]).code(2);
    assert!(stderr_of(&assert).contains("no function `nope`"));
    assert!(stdout_of(&assert).is_empty());
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["run", FIXTURES, "fib(1)", "--timeout", "5"],
        vec!["run", FIXTURES, "fib(1)", "--max-memory", "lots"],
        vec!["map", FIXTURES, "fib", "--workers", "0"],
        vec!["map", FIXTURES, "fib", "--resume"],
        vec!["map", FIXTURES, "fib", "--output", "xml"],
        vec!["run", FIXTURES, "fib(\"x\")"],
        vec!["run", FIXTURES, "fib(1, 2)"],
        vec!["bogus"],
    ] {
        wasmpool(&args).write_stdin("").assert().code(2);
    }
    wasmpool(["run", FIXTURES, "fib(1)", "--dir", "/no/such/dir"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("/no/such/dir"));
}

// ---------------------------------------------------------------------------------------
// run

#[test]
fn run_prints_the_result_as_wave() {
    for (call, expected) in [
        ("fib(20)", "6765\n"),
        (r#"greet("ann")"#, "\"hello, ann\"\n"),
        ("math.add(1, 2)", "3\n"),
        ("wasmpool:tasks/math#mul(6, 7)", "42\n"),
        ("types.echo-point({x: 1, y: -2})", "{x: 1, y: -2}\n"),
        ("noop", ""),
    ] {
        wasmpool(["run", FIXTURES, call])
            .assert()
            .success()
            .stdout(expected);
    }
}

#[test]
fn run_passes_the_task_output_through() {
    wasmpool(["run", FIXTURES, r#"print-lines(2, "hi")"#])
        .assert()
        .success()
        .stdout("hi\nhi\n");
}

#[test]
fn run_failures_exit_1_with_the_kind_and_message() {
    let assert = wasmpool(["run", FIXTURES, r#"trap-panic("boom")"#])
        .assert()
        .code(1);
    let err = stderr_of(&assert);
    assert!(err.contains("trap-panic failed [trap]"), "{err}");
    assert!(err.contains("guest panicked: boom"), "{err}");
    assert!(err.contains("wasm backtrace"), "{err}");

    let assert = wasmpool(["run", FIXTURES, "fail-with(3)"]).assert().code(1);
    assert!(stderr_of(&assert).contains("[failed]"));
}

#[test]
fn run_json_has_the_value_and_the_report() {
    let assert = wasmpool([
        "run",
        FIXTURES,
        r#"print-lines(1, "x")"#,
        "--output",
        "json",
    ])
    .assert()
    .success();
    let objects = json_lines(&stdout_of(&assert));
    assert_eq!(objects.len(), 1);
    let object = &objects[0];
    assert_eq!(object["ok"], "");
    assert_eq!(object["value"], Value::Null);
    assert_eq!(object["stdout"], "x\n");
    assert_eq!(object["worker"], "worker-1");
    assert!(object["elapsed_ms"].as_f64().is_some());
    assert!(object["pid"].as_u64().is_some());
    assert_eq!(object["attempt"], 1);
}

#[test]
fn run_limits_time_fuel_and_memory() {
    let started = Instant::now();
    let assert = wasmpool(["run", FIXTURES, "loop-forever()", "--timeout", "200ms"])
        .assert()
        .code(1);
    assert!(stderr_of(&assert).contains("[timeout]"));
    assert!(started.elapsed() < Duration::from_secs(60));

    let assert = wasmpool([
        "run", FIXTURES, "fib(25)", "--fuel", "1000", "--output", "json",
    ])
    .assert()
    .code(1);
    let object = &json_lines(&stdout_of(&assert))[0];
    assert_eq!(kind(object), "out-of-fuel");

    let assert = wasmpool([
        "run", FIXTURES, "fib(10)", "--fuel", "1000000", "--output", "json",
    ])
    .assert()
    .success();
    let object = &json_lines(&stdout_of(&assert))[0];
    assert_eq!(object["ok"], "55");
    assert!(
        object["fuel"]
            .as_u64()
            .is_some_and(|f| f > 0 && f < 1_000_000)
    );

    let assert = wasmpool([
        "run",
        FIXTURES,
        "allocate-mib(100)",
        "--max-memory",
        "64MiB",
        "--output",
        "json",
    ])
    .assert()
    .code(1);
    assert_eq!(kind(&json_lines(&stdout_of(&assert))[0]), "memory-limit");

    let assert = wasmpool(["run", FIXTURES, "recurse-forever(0)", "--output", "json"])
        .assert()
        .code(1);
    assert_eq!(kind(&json_lines(&stdout_of(&assert))[0]), "stack-overflow");
}

#[test]
fn run_grants_directories_and_environment_variables() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("hello.txt"), "from the host").expect("write");
    let grant = format!("{}::/data", dir.path().display());
    wasmpool([
        "run",
        FIXTURES,
        r#"read-file("/data/hello.txt")"#,
        "--dir",
        &grant,
    ])
    .assert()
    .success()
    .stdout("\"from the host\"\n");
    // Without the grant the guest sees no file system.
    wasmpool(["run", FIXTURES, r#"read-file("/data/hello.txt")"#])
        .assert()
        .code(1);

    wasmpool([
        "run",
        FIXTURES,
        r#"get-env("GREETING")"#,
        "--env",
        "GREETING=hi",
    ])
    .assert()
    .success()
    .stdout("some(\"hi\")\n");
    // KEY alone passes on the host's value; the rest of the host's environment stays out.
    wasmpool([
        "run",
        FIXTURES,
        r#"get-env("WASMPOOL_TEST_VAR")"#,
        "--env",
        "WASMPOOL_TEST_VAR",
    ])
    .env("WASMPOOL_TEST_VAR", "copied")
    .assert()
    .success()
    .stdout("some(\"copied\")\n");
    wasmpool(["run", FIXTURES, r#"get-env("WASMPOOL_TEST_VAR")"#])
        .env("WASMPOOL_TEST_VAR", "copied")
        .assert()
        .success()
        .stdout("none\n");
}

#[test]
fn run_grants_the_network_only_with_the_flag() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a local listener");
    let address = listener.local_addr().expect("its address");
    let call = format!("tcp-connect(\"{address}\")");
    let assert = wasmpool(["run", FIXTURES, &call]).assert().code(1);
    let err = stderr_of(&assert);
    assert!(err.contains("[failed]: Permission denied"), "{err}");
    // With --network the guest connects (the listener's backlog takes the connection).
    wasmpool(["run", FIXTURES, &call, "--network"])
        .assert()
        .success();
}

// ---------------------------------------------------------------------------------------
// map

#[test]
fn map_prints_results_in_input_order_and_skips_blank_lines() {
    map("fib", "10\n\n  \n20\n1\n", &["-j", "2"])
        .success()
        .stdout("55\n6765\n1\n");
}

#[test]
fn map_reads_a_file_or_stdin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let inputs = dir.path().join("inputs.txt");
    std::fs::write(&inputs, "1, 2\n3, 4\n").expect("write");
    let path = inputs.display().to_string();
    wasmpool(["map", FIXTURES, "math.add", &path])
        .assert()
        .success()
        .stdout("3\n7\n");
    wasmpool(["map", FIXTURES, "add", "-"])
        .write_stdin("5, 6\n")
        .assert()
        .success()
        .stdout("11\n");
    wasmpool(["map", FIXTURES, "greet"])
        .write_stdin("\"a\"\n\"b\"\n")
        .assert()
        .success()
        .stdout("\"hello, a\"\n\"hello, b\"\n");
}

#[test]
fn a_malformed_line_fails_alone_as_invalid_input() {
    let assert = map("fib", "10\nnot wave\n\"s\"\n20\n", &["--output", "json"]).code(1);
    let objects = json_lines(&stdout_of(&assert));
    let kinds: Vec<&str> = objects.iter().map(kind).collect();
    assert_eq!(
        kinds,
        ["(none)", "invalid-input", "invalid-input", "(none)"]
    );
    assert_eq!(objects[0]["ok"], "55");
    assert_eq!(objects[1]["index"], 1);
    assert_eq!(objects[1]["input"], "not wave");
    assert!(
        objects[1]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("fib"))
    );
    assert_eq!(objects[3]["ok"], "6765");

    // In text mode: the good results on stdout, one line per bad one on stderr.
    let assert = map("fib", "10\nnot wave\n20\n", &[]).code(1);
    assert_eq!(stdout_of(&assert), "55\n6765\n");
    let err = stderr_of(&assert);
    assert!(
        err.contains("task 1: fib(not wave) failed [invalid-input]"),
        "{err}"
    );
}

#[test]
fn a_trap_fails_its_task_only() {
    let assert = map("trap-panic", "\"one\"\n", &["--output", "json"]).code(1);
    assert_eq!(kind(&json_lines(&stdout_of(&assert))[0]), "trap");

    let assert = map("fail-with", "0\n7\n0\n", &["--output", "json"]).code(1);
    let objects = json_lines(&stdout_of(&assert));
    assert_eq!(objects[0]["ok"], "0");
    assert_eq!(kind(&objects[1]), "failed");
    assert_eq!(objects[2]["ok"], "0");

    // Traps among good results, on a pool of 2.
    let assert = map(
        "types.echo-result",
        "ok(1)\nerr(\"no\")\nok(3)\n",
        &["-j", "2", "--output", "json"],
    )
    .code(1);
    let objects = json_lines(&stdout_of(&assert));
    assert_eq!(objects.len(), 3);
    assert_eq!(objects[0]["ok"], "1");
    assert_eq!(kind(&objects[1]), "failed");
    assert_eq!(objects[2]["ok"], "3");

    let assert = map(
        "allocate-mib",
        "1\n2000\n1\n",
        &["--max-memory", "64MiB", "--output", "json"],
    )
    .code(1);
    let objects = json_lines(&stdout_of(&assert));
    let kinds: Vec<&str> = objects.iter().map(kind).collect();
    assert_eq!(kinds, ["(none)", "memory-limit", "(none)"]);
}

#[test]
fn a_trap_among_good_results_in_text_mode() {
    let assert = map("types.echo-char", "'a'\n'b'\n", &[]).success();
    assert_eq!(stdout_of(&assert), "'a'\n'b'\n");
    let assert = wasmpool(["map", SEED, "check-task", "-j", "2"])
        .write_stdin("1\n5\n2\n")
        .assert()
        .code(1);
    // check-task prints "{n}: starting"; the output of each task comes with its result.
    assert_eq!(
        stdout_of(&assert),
        "1: starting\n0.1\n5: starting\n2: starting\n0.2\n"
    );
    assert!(
        stderr_of(&assert)
            .contains("task 1: check-task(5) failed [failed]: the value 5 is no good")
    );
}

#[test]
fn map_times_out_tasks_that_run_too_long() {
    // Compiled (into the shared cache) before the clock starts: only the map is timed.
    map("sleep-ms", "1\n", &["--timeout", "200ms"])
        .success()
        .stdout("1\n");
    let started = Instant::now();
    let assert = map(
        "sleep-ms",
        "60000\n10\n",
        &["--timeout", "200ms", "--output", "json"],
    )
    .code(1);
    let objects = json_lines(&stdout_of(&assert));
    assert_eq!(kind(&objects[0]), "timeout");
    assert_eq!(objects[1]["ok"], "10");
    // Without the timeout the map would take the whole minute.
    assert!(started.elapsed() < SOON, "{:?}", started.elapsed());
}

#[test]
fn retries_run_a_timed_out_task_again() {
    let assert = map(
        "sleep-ms",
        "5000\n1\n",
        &["--timeout", "100ms", "--retries", "2", "--output", "json"],
    )
    .code(1);
    let objects = json_lines(&stdout_of(&assert));
    assert_eq!(kind(&objects[0]), "timeout");
    assert_eq!(objects[0]["attempt"], 3);
    assert_eq!(objects[1]["attempt"], 1);
    // A failure that retrying cannot fix is not retried.
    let assert = map("fail-with", "1\n", &["--retries", "2", "--output", "json"]).code(1);
    assert_eq!(json_lines(&stdout_of(&assert))[0]["attempt"], 1);
}

#[test]
fn map_json_has_one_object_per_task() {
    let assert = map("print-lines", "1, \"x\"\n", &["--output", "json"]).success();
    let objects = json_lines(&stdout_of(&assert));
    assert_eq!(objects.len(), 1);
    let object = objects[0].as_object().expect("an object");
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "index",
            "input",
            "ok",
            "value",
            "elapsed_ms",
            "worker",
            "pid",
            "peak_memory",
            "stdout",
            "attempt"
        ]
    );
    assert_eq!(object["index"], 0);
    assert_eq!(object["ok"], "");
    assert_eq!(object["stdout"], "x\n");
    assert_eq!(
        object["pid"],
        Value::from(object["pid"].as_u64().expect("pid"))
    );

    let assert = map("fib", "5\n", &["--output", "json", "--fuel", "100000"]).success();
    let object = &json_lines(&stdout_of(&assert))[0];
    assert!(object["fuel"].as_u64().is_some());
}

/// `--input json`: each line an array of the arguments or an object of named parameters;
/// a line that is not JSON, or does not fit, fails alone as `invalid-input` naming the path
/// of the bad part. `--output json` has the result typed in "value" (`jq '.value.x'`).
#[test]
fn map_takes_json_lines_and_gives_typed_values() {
    let input = concat!(
        "[[{\"x\": 1, \"y\": 2}, {\"x\": 10, \"y\": 20}]]\n",
        "{\"ps\": []}\n",
        "[[{\"x\": 1, \"y\": 2}, {\"x\": \"a\", \"y\": 2}]]\n",
        "not json\n",
        "\n",
        "[[{\"x\": -1, \"y\": 1}]]\n",
    );
    let assert = map(
        "types.sum-points",
        input,
        &["--input", "json", "--output", "json"],
    )
    .code(1);
    let objects = json_lines(&stdout_of(&assert));
    let xs: Vec<&Value> = objects.iter().map(|o| &o["value"]["x"]).collect();
    assert_eq!(
        xs,
        [
            &json!(11),
            &json!(0),
            &Value::Null,
            &Value::Null,
            &json!(-1)
        ]
    );
    assert_eq!(objects[0]["ok"], "{x: 11, y: 22}");
    assert_eq!(objects[0]["value"], json!({"x": 11, "y": 22}));
    assert_eq!(kind(&objects[2]), "invalid-input");
    let message = objects[2]["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(".ps[1].x: expected s32, got \"a\""),
        "{message}"
    );
    assert_eq!(kind(&objects[3]), "invalid-input");
    let message = objects[3]["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("not JSON"), "{message}");

    // Text output: WAVE results, the bad line on stderr.
    let assert = map(
        "add",
        "[1, 2]\n{\"b\": 3, \"a\": 4}\n[1]\n",
        &["--input", "json"],
    )
    .code(1);
    assert_eq!(stdout_of(&assert), "3\n7\n");
    let err = stderr_of(&assert);
    assert!(
        err.contains("task 2: add([1]) failed [invalid-input]"),
        "{err}"
    );
    // WAVE stays the default: a JSON array is not WAVE arguments of `add`.
    map("add", "[1, 2]\n", &[]).code(1);
}

#[test]
fn run_takes_json_arguments() {
    let assert = wasmpool([
        "run",
        FIXTURES,
        "types.everything",
        r#"[{"x": 1, "y": 2}, {"circle": 0.5}, "red", ["read", "exec"], null, [1, "☃", "-9007199254740993"]]"#,
        "--input",
        "json",
        "--output",
        "json",
    ])
    .assert()
    .success();
    let object = &json_lines(&stdout_of(&assert))[0];
    assert_eq!(
        object["value"],
        json!([{"x": 1, "y": 2}, {"circle": 0.5}, "red", ["read", "exec"], null, [1, "☃", "-9007199254740993"]])
    );
    assert_eq!(object["value"][0]["x"], 1);
    // Named parameters; text output is WAVE; no ARGS is no arguments.
    wasmpool([
        "run",
        FIXTURES,
        "math.add",
        r#"{"a": 2, "b": 3}"#,
        "--input",
        "json",
    ])
    .assert()
    .success()
    .stdout("5\n");
    wasmpool(["run", FIXTURES, "noop", "--input", "json"])
        .assert()
        .success()
        .stdout("");
    // Arguments that do not fit are a usage error naming the path.
    wasmpool([
        "run",
        FIXTURES,
        "types.echo-point",
        r#"[{"x": 1}]"#,
        "--input",
        "json",
    ])
    .assert()
    .code(2)
    .stderr(predicates::str::contains(".p: missing field `y`"));
    wasmpool(["run", FIXTURES, "add", "[1, 2"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("ARGS is for --input json"));
}

/// Output past the 1 MiB capture limit is cut after a whole line and marked; the next
/// task's output starts on a line of its own; JSON says `stdout_truncated`. On both pools:
/// process-pool workers send the captured text across.
#[test]
fn output_past_the_capture_limit_is_cut_at_a_line_and_marked() {
    const MARKER: &str = "[wasmpool: output cut at 1 MiB]";
    let many_lines = format!("20000, \"{}\"\n", "y".repeat(99));
    let one_long_line = format!("1, \"{}\"\n", "y".repeat(1_500_000));
    for pool in ["thread", "process"] {
        for (input, last_kept) in [(&many_lines, 99), (&one_long_line, 1 << 20)] {
            let input = format!("{input}1, \"zz\"\n");
            let args = ["-j", "1", "--pool", pool];
            let text = stdout_of(&map("print-lines", &input, &args).success());
            let lines: Vec<&str> = text.lines().collect();
            let n = lines.len();
            assert!(n >= 3, "{pool}: {n} lines");
            assert_eq!(lines[n - 2..], [MARKER, "zz"], "{pool}");
            assert_eq!(lines[n - 3], "y".repeat(last_kept), "{pool}");
            assert!(text.len() <= (1 << 20) + 40, "{pool}: {} bytes", text.len());

            let args = ["-j", "1", "--pool", pool, "--output", "json"];
            let objects = json_lines(&stdout_of(&map("print-lines", &input, &args).success()));
            let stdout = objects[0]["stdout"].as_str().expect("stdout");
            assert!(stdout.ends_with(&format!("y\n{MARKER}\n")), "{pool}");
            assert_eq!(objects[0]["stdout_truncated"], true, "{pool}");
            assert_eq!(objects[1]["stdout"], "zz\n");
            assert!(objects[1].get("stdout_truncated").is_none(), "{pool}");
        }
    }
}

#[test]
fn as_completed_prints_in_completion_order() {
    let assert = map(
        "sleep-ms",
        "1500\n1\n",
        &["-j", "2", "--as-completed", "--output", "json"],
    )
    .success();
    let indices: Vec<u64> = json_lines(&stdout_of(&assert))
        .iter()
        .filter_map(|o| o["index"].as_u64())
        .collect();
    assert_eq!(indices, [1, 0]);
    // Without it: input order.
    map("sleep-ms", "300\n1\n", &["-j", "2"])
        .success()
        .stdout("300\n1\n");
}

/// The worker's crash hook is for the wrapper programs the crash tests start as workers: a
/// stray `WASMPOOL_WORKER_TEST_HOOK` in the pool owner's environment never reaches its workers
/// (this test build's workers have the hook compiled in; a release build has none).
#[test]
fn a_stray_crash_hook_in_the_environment_does_not_reach_the_workers() {
    let assert = wasmpool(["map", FIXTURES, "fib", "--pool", "process", "-j", "1"])
        .env("WASMPOOL_WORKER_TEST_HOOK", "abort-after:1")
        .write_stdin("10\n20\n")
        .assert();
    let stderr = stderr_of(&assert);
    assert.success().stdout("55\n6765\n");
    assert!(!stderr.contains("broken-pool"), "{stderr}");
}

#[test]
fn map_on_the_process_pool() {
    let assert = map(
        "fib",
        "10\nnot wave\n20\n",
        &["--pool", "process", "-j", "2", "--output", "json"],
    )
    .code(1);
    let objects = json_lines(&stdout_of(&assert));
    assert_eq!(objects.len(), 3);
    assert_eq!(objects[0]["ok"], "55");
    assert_eq!(kind(&objects[1]), "invalid-input");
    assert_eq!(objects[2]["ok"], "6765");
    assert!(
        objects[0]["worker"]
            .as_str()
            .is_some_and(|w| w.starts_with("worker-"))
    );

    // Output, traps and budgets work the same as on threads.
    let assert = wasmpool(["map", SEED, "check-task", "--pool", "process", "-j", "2"])
        .write_stdin("1\n5\n")
        .assert()
        .code(1);
    assert_eq!(stdout_of(&assert), "1: starting\n0.1\n5: starting\n");
    let assert = map(
        "sleep-ms",
        "5000\n1\n",
        &[
            "--pool",
            "process",
            "--timeout",
            "200ms",
            "--output",
            "json",
        ],
    )
    .code(1);
    let objects = json_lines(&stdout_of(&assert));
    assert_eq!(kind(&objects[0]), "timeout");
    assert_eq!(objects[1]["ok"], "1");
}

/// Kills the worker process while it runs a task: that task fails as `broken-pool` (and
/// with `--retries`, runs again on the worker that takes the dead one's place); the map
/// goes on.
#[test]
fn a_killed_worker_fails_only_its_tasks_and_retries_run_them_again() {
    for retries in ["1", "0"] {
        let mut child = StdCommand::new(BIN)
            .env("XDG_CACHE_HOME", shared_cache())
            .args(["map", FIXTURES, "sleep-ms", "--pool", "process", "-j", "1"])
            .args(["--output", "json", "--retries", retries])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wasmpool");
        {
            let mut stdin = child.stdin.take().expect("stdin");
            std::io::Write::write_all(&mut stdin, b"1\n3000\n").expect("write stdin");
        }
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("read");
        assert!(first.contains("\"ok\":\"1\""), "{first}");
        // The one worker is now sleeping in task 1.
        let workers = children_of(child.id());
        assert_eq!(workers.len(), 1, "{workers:?}");
        let killed = StdCommand::new("kill")
            .args(["-KILL", &workers[0].to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let status = child.wait().expect("wait");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read");
        let objects = json_lines(&rest);
        assert_eq!(objects.len(), 1, "{rest}");
        if retries == "1" {
            assert_eq!(status.code(), Some(0), "{rest}");
            assert_eq!(objects[0]["ok"], "3000");
            assert_eq!(objects[0]["attempt"], 2);
            assert_ne!(objects[0]["pid"], workers[0]);
        } else {
            assert_eq!(status.code(), Some(1), "{rest}");
            assert_eq!(kind(&objects[0]), "broken-pool");
            let message = objects[0]["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("SIGKILL"), "{message}");
        }
    }
}

#[test]
fn no_progress_bar_when_stderr_is_not_a_terminal() {
    let assert = map("fib", "1\n2\n3\n", &[]).success();
    assert_eq!(stderr_of(&assert), "");
}

// ---------------------------------------------------------------------------------------
// joblog, resume, Ctrl-C

#[test]
fn joblog_and_resume_skip_what_finished() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("jobs.log");
    let log_arg = log.display().to_string();
    map("fail-with", "0\n4\n0\n", &["--joblog", &log_arg]).code(1);
    let text = std::fs::read_to_string(&log).expect("the joblog");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert_eq!(rows[1][..3], ["1", "failed", "1"]);
    assert_eq!(rows[1][4], "4");

    // --resume: everything was logged, nothing runs again.
    map(
        "fail-with",
        "0\n4\n0\n",
        &["--joblog", &log_arg, "--resume"],
    )
    .success()
    .stdout("");
    // --resume-failed: only the failed one runs again (it still fails).
    let assert = map(
        "fail-with",
        "0\n4\n0\n",
        &["--joblog", &log_arg, "--resume-failed", "--output", "json"],
    )
    .code(1);
    let objects = json_lines(&stdout_of(&assert));
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0]["index"], 1);
    // A log of another function is refused.
    map("fib", "1\n", &["--joblog", &log_arg, "--resume"]).code(2);
}

/// `--resume` checks each logged task's input: over another input it refuses (exit 2,
/// naming the task and both inputs), runs nothing and logs nothing.
#[test]
fn resume_over_another_input_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("jobs.log");
    let log_arg = log.display().to_string();
    map("fib", "1\n2\n3\n", &["--joblog", &log_arg])
        .success()
        .stdout("1\n1\n2\n");
    let logged = std::fs::read_to_string(&log).expect("the joblog");
    for resume in ["--resume", "--resume-failed"] {
        let assert = map("fib", "7\n8\n9\n10\n", &["--joblog", &log_arg, resume]).code(2);
        assert_eq!(stdout_of(&assert), "", "{resume}");
        let err = stderr_of(&assert);
        assert!(
            err.contains("cannot resume: task 0 reads `7`") && err.contains("logged `1`"),
            "{resume}: {err}"
        );
        assert_eq!(std::fs::read_to_string(&log).ok(), Some(logged.clone()));
    }
    // The same input, with one more line: only that one runs.
    map("fib", "1\n2\n3\n10\n", &["--joblog", &log_arg, "--resume"])
        .success()
        .stdout("55\n");
    // A line that is not UTF-8 is logged as shown, and resumed as such.
    let bad = "\"a\u{fffd}\"";
    let input = b"\"a\xff\"\n".to_vec();
    let args = [
        "map", FIXTURES, "greet", "--output", "json", "--joblog", &log_arg,
    ];
    let assert = wasmpool(args).write_stdin(input.clone()).assert().code(1);
    let objects = json_lines(&stdout_of(&assert));
    assert_eq!(objects[0]["input"], bad);
    let resumed = [&args[..], &["--resume"]].concat();
    wasmpool(resumed)
        .write_stdin(input)
        .assert()
        .success()
        .stdout("");
    // Without --resume, a file that is not a joblog is not overwritten either.
    let inputs = dir.path().join("inputs.txt");
    std::fs::write(&inputs, "1\n2\n").expect("write");
    let assert = map("fib", "1\n", &["--joblog", &inputs.display().to_string()]).code(2);
    assert!(stderr_of(&assert).contains("not a wasmpool joblog"));
    assert_eq!(
        std::fs::read_to_string(&inputs).ok().as_deref(),
        Some("1\n2\n")
    );
}

/// What a child writes to a pipe, read on a thread of its own as it comes, so that a test
/// can wait (within [`SOON`]) for the output that tells it the child got somewhere.
pub(crate) struct Incoming {
    chunks: Receiver<Vec<u8>>,
    bytes: Vec<u8>,
}

impl Incoming {
    pub(crate) fn new(mut source: impl Read + Send + 'static) -> Incoming {
        let (sender, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            // The end, or an error (EIO from a pseudo-terminal whose last user left): no more.
            while let Ok(n @ 1..) = source.read(&mut buffer) {
                if sender.send(buffer[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        Incoming {
            chunks,
            bytes: Vec::new(),
        }
    }

    /// Everything read so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Reads until the text read so far satisfies `seen`; panics (with the text) if `what`
    /// does not show within [`SOON`] or the output ends without it.
    pub(crate) fn wait_for(&mut self, what: &str, seen: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + SOON;
        while !seen(&self.text()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.bytes.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {what} within {SOON:?}: {:?}", self.text())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the output ended before {what}: {:?}", self.text())
                }
            }
        }
    }

    /// Everything, to the end of the output (which must come within [`SOON`]).
    pub(crate) fn until_end(mut self) -> String {
        let deadline = Instant::now() + SOON;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.bytes.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Disconnected) => return self.text(),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("the output did not end within {SOON:?}: {:?}", self.text())
                }
            }
        }
    }
}

/// `path` as one word for `sh`.
fn sh_word(path: impl AsRef<std::ffi::OsStr>) -> String {
    let text = path.as_ref().to_str().expect("a UTF-8 path");
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Interrupting a map: the running task is aborted, what finished is printed and logged,
/// the exit status is 130, and `--resume` runs only what did not finish.
///
/// The task that finished behind the running one is printed and logged only at the
/// interruption, so neither stdout nor the joblog can tell the test it is done; the progress
/// bar can. So this map's stderr is a terminal: a pseudo-terminal from util-linux's `script`,
/// whose output (the terminal's) the test reads; stdout goes to a file.
#[test]
fn ctrl_c_stops_cleanly_and_resume_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("jobs.log");
    let inputs = dir.path().join("inputs.txt");
    let stdout_file = dir.path().join("stdout.txt");
    // Index 2 sleeps for a minute; 3 finishes at once but waits for 2 to be printed.
    std::fs::write(&inputs, "1\n2\n60000\n3\n").expect("write");
    let command = format!(
        "exec {} map {} sleep-ms -j 2 --joblog {} {} >{}",
        sh_word(BIN),
        sh_word(FIXTURES),
        sh_word(&log),
        sh_word(&inputs),
        sh_word(&stdout_file),
    );
    let mut script = StdCommand::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env("XDG_CACHE_HOME", shared_cache())
        .env("SHELL", "/bin/sh")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn script (util-linux), for a terminal");
    let mut terminal = Incoming::new(script.stdout.take().expect("stdout"));
    // Only 0, 1 and 3 can finish: at 3 done, task 3 is done and waits for 2.
    terminal.wait_for("progress bar at 3 tasks done", |t| {
        t.contains(" 3 done") || t.contains(" 3/4 done")
    });
    // `exec`: the shell that `script` started is the map now.
    let map = children_of(script.id());
    assert_eq!(map.len(), 1, "{map:?}");
    let started = Instant::now();
    let killed = StdCommand::new("kill")
        .args(["-INT", &map[0].to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = script.wait().expect("wait");
    assert!(started.elapsed() < SOON, "it did not stop promptly");
    let stderr = terminal.until_end();
    assert_eq!(status.code(), Some(130), "{stderr}");
    let printed = std::fs::read_to_string(&stdout_file).expect("its stdout");
    assert_eq!(printed, "1\n2\n3\n");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(stderr.contains("1 unfinished task(s) aborted"), "{stderr}");
    let logged: Vec<String> = std::fs::read_to_string(&log)
        .expect("the joblog")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(logged, ["0", "1", "3"]);

    // Resume with the long sleep shortened: only index 2 runs.
    std::fs::write(&inputs, "1\n2\n5\n3\n").expect("write");
    wasmpool([
        "map", FIXTURES, "sleep-ms", "--output", "json", "--resume", "--joblog",
    ])
    .arg(&log)
    .arg(&inputs)
    .assert()
    .success()
    .stdout(predicates::str::starts_with(
        "{\"index\":2,\"input\":\"5\",\"ok\":\"5\"",
    ));
}

/// Ctrl-C in a terminal signals the whole process group, worker processes included: their
/// deaths are part of the interruption, not task failures to print or log.
#[test]
fn ctrl_c_on_the_process_pool_does_not_report_the_workers_it_killed() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("jobs.log");
    let mut child = StdCommand::new(BIN)
        .env("XDG_CACHE_HOME", shared_cache())
        .args([
            "map", FIXTURES, "sleep-ms", "-j", "2", "--pool", "process", "--joblog",
        ])
        .arg(&log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, standing for a terminal's foreground group.
        .process_group(0)
        .spawn()
        .expect("spawn wasmpool");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        std::io::Write::write_all(&mut stdin, b"1\n2\n60000\n").expect("write stdin");
    }
    // The run is under way once 0 and 1 are printed. Task 2, whose line came in with theirs,
    // went to a worker when submitted (each takes up to 2 tasks in flight) and sleeps there
    // when the signal comes. (Were it still queued, the same must hold: it is aborted.)
    let mut stdout = Incoming::new(child.stdout.take().expect("stdout"));
    let mut stderr = Incoming::new(child.stderr.take().expect("stderr"));
    stdout.wait_for("output of tasks 0 and 1", |t| t.contains("2\n"));
    let group = format!("-{}", child.id());
    let killed = StdCommand::new("kill")
        .args(["-INT", "--", &group])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    // The report of the interruption is the map's last word.
    stderr.wait_for("report of the interruption", |t| {
        t.contains("unfinished task(s) aborted")
    });
    let stderr = stderr.text();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(!stderr.contains("broken-pool"), "{stderr}");
    assert!(stderr.contains("1 unfinished task(s) aborted"), "{stderr}");
    let logged: Vec<String> = std::fs::read_to_string(&log)
        .expect("the joblog")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(String::from)
        .collect();
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert!(
        logged.iter().all(|l| l.split('\t').nth(1) == Some("ok")),
        "{logged:?}"
    );
}

// ---------------------------------------------------------------------------------------
// compile and the compilation cache

fn cache_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    entries.retain(|p| p.extension().is_some_and(|e| e == "cwasm"));
    entries
}

#[test]
fn the_second_run_loads_from_the_cache() {
    let cache = tempfile::tempdir().expect("temp dir");
    let cache_arg = cache.path().display().to_string();
    let run = || {
        wasmpool([
            "-v",
            "run",
            SEED,
            "quick-task(7)",
            "--cache-dir",
            &cache_arg,
        ])
        .assert()
        .success()
        .stdout("7\n")
    };
    let first = run();
    assert!(
        stderr_of(&first).contains("cache miss: compiled"),
        "{}",
        stderr_of(&first)
    );
    let entries = cache_entries(cache.path());
    assert_eq!(entries.len(), 1, "{entries:?}");
    let written = std::fs::metadata(&entries[0])
        .and_then(|m| m.modified())
        .expect("mtime");

    let second = run();
    let err = stderr_of(&second);
    assert!(err.contains("cache hit"), "{err}");
    assert!(!err.contains("compiled"), "{err}");
    assert_eq!(cache_entries(cache.path()), entries);
    let reused = std::fs::metadata(&entries[0])
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(written, reused, "the entry was rewritten");

    // Another engine setting (fuel metering) is another entry.
    wasmpool([
        "run",
        SEED,
        "quick-task(7)",
        "--fuel",
        "100000",
        "--cache-dir",
        &cache_arg,
    ])
    .assert()
    .success();
    assert_eq!(cache_entries(cache.path()).len(), 2);
}

#[test]
fn a_damaged_cache_entry_is_compiled_again() {
    let cache = tempfile::tempdir().expect("temp dir");
    let cache_arg = cache.path().display().to_string();
    let run = || {
        wasmpool([
            "-v",
            "run",
            SEED,
            "quick-task(3)",
            "--cache-dir",
            &cache_arg,
        ])
    };
    run().assert().success();
    let entries = cache_entries(cache.path());
    assert_eq!(entries.len(), 1);
    let mut bytes = std::fs::read(&entries[0]).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entries[0], &bytes).expect("write");

    let assert = run().assert().success().stdout("3\n");
    let err = stderr_of(&assert);
    assert!(
        err.contains("unusable (checksum mismatch); compiling again"),
        "{err}"
    );
    assert!(err.contains("cache miss"), "{err}");
    let assert = run().assert().success();
    assert!(stderr_of(&assert).contains("cache hit"));

    std::fs::write(&entries[0], b"garbage").expect("write");
    run().assert().success().stdout("3\n");
}

#[test]
fn no_cache_keeps_nothing() {
    let home = tempfile::tempdir().expect("temp dir");
    Command::new(BIN)
        .env("XDG_CACHE_HOME", home.path())
        .args(["-v", "run", SEED, "noop", "--no-cache"])
        .assert()
        .success()
        .stderr("");
    assert!(!home.path().join("wasmpool").exists());
    // Without --no-cache, the default place is $XDG_CACHE_HOME/wasmpool.
    Command::new(BIN)
        .env("XDG_CACHE_HOME", home.path())
        .args(["run", SEED, "noop"])
        .assert()
        .success();
    assert_eq!(cache_entries(&home.path().join("wasmpool")).len(), 1);
}

#[test]
fn compile_writes_a_precompiled_component_that_run_accepts_when_allowed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let component = dir.path().join("fixtures.wasm");
    std::fs::copy(FIXTURES, &component).expect("copy");
    wasmpool(["compile", &component.display().to_string()])
        .assert()
        .success()
        .stdout("");
    let compiled = dir.path().join("fixtures.cwasm");
    let bytes = std::fs::read(&compiled).expect("compile wrote fixtures.cwasm");
    assert!(bytes.starts_with(b"\x7fELF"));

    let compiled_arg = compiled.display().to_string();
    let assert = wasmpool(["run", &compiled_arg, "fib(10)"]).assert().code(2);
    assert!(stderr_of(&assert).contains("--allow-precompiled"));
    wasmpool(["run", &compiled_arg, "fib(10)", "--allow-precompiled"])
        .assert()
        .success()
        .stdout("55\n");
    wasmpool(["map", &compiled_arg, "fib", "--allow-precompiled"])
        .write_stdin("10\n")
        .assert()
        .success()
        .stdout("55\n");
    // Compiled without fuel metering: a run with --fuel cannot use it.
    wasmpool([
        "run",
        &compiled_arg,
        "fib(10)",
        "--allow-precompiled",
        "--fuel",
        "1000",
    ])
    .assert()
    .code(2);

    let out = dir.path().join("metered.cwasm");
    wasmpool([
        "compile",
        FIXTURES,
        "--fuel-metering",
        "-o",
        &out.display().to_string(),
    ])
    .assert()
    .success();
    wasmpool([
        "run",
        &out.display().to_string(),
        "fib(10)",
        "--allow-precompiled",
        "--fuel",
        "100000",
    ])
    .assert()
    .success()
    .stdout("55\n");

    // Not a component: exit 2, nothing written.
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, "junk").expect("write");
    wasmpool(["compile", &junk.display().to_string()])
        .assert()
        .code(2);
    assert!(!dir.path().join("junk.cwasm").exists());
}

// ---------------------------------------------------------------------------------------
// instance reuse, initializers, bare names, functions without parameters, documents about
// the command line itself, and the progress bar in a terminal (issue 15)

/// `--reuse[=N]` keeps a worker's instance for up to N tasks, `--init` runs on every new
/// instance, and a fresh instance per task stays the default. The fixture's `count` returns
/// how many calls its instance has had; `init` starts that count at 100.
#[test]
fn reuse_keeps_an_instance_for_n_tasks_and_init_runs_on_each_new_one() {
    let lines = "a\nb\nc\nd\n";
    let cases: [(&[&str], &str); 6] = [
        (&[], "1\n1\n1\n1\n"),
        (&["--reuse=2"], "1\n2\n1\n2\n"),
        (&["--reuse"], "1\n2\n3\n4\n"),
        (&["--init", "init"], "101\n101\n101\n101\n"),
        (&["--reuse=3", "--init", "init"], "101\n102\n103\n101\n"),
        (&["--reuse=2", "--pool", "process"], "1\n2\n1\n2\n"),
    ];
    for (flags, expected) in cases {
        let mut extra = vec!["-j", "1"];
        extra.extend_from_slice(flags);
        let assert = map("count", lines, &extra).success();
        assert_eq!(stdout_of(&assert), expected, "{flags:?}");
    }
    wasmpool(["run", FIXTURES, "count", "--init", "init"])
        .assert()
        .success()
        .stdout("101\n");
}

/// An initializer that is not there or takes parameters is a usage error before any task;
/// one that fails fails the tasks (`broken-pool`); `--reuse` refuses what it cannot honour.
#[test]
fn reuse_and_init_refuse_what_cannot_work() {
    use predicates::prelude::PredicateBooleanExt;
    use predicates::str::contains;
    map("count", "a\n", &["--init", "fib"])
        .code(2)
        .stderr(contains("--init fib").and(contains("must take no parameters")));
    map("count", "a\n", &["--init", "nope"])
        .code(2)
        .stderr(contains("--init nope").and(contains("no function `nope`")));
    map("count", "a\n", &["--init", "init-fails"])
        .code(1)
        .stderr(contains("[broken-pool]").and(contains("no database here")));
    map("count", "a\n", &["--reuse", "--timeout", "1s"])
        .code(2)
        .stderr(contains("cannot be used with"));
    map("count", "a\n", &["--reuse=0"])
        .code(2)
        .stderr(contains("at least 1 task"));
    let help = wasmpool(["map", "--help"]).assert().success();
    let help = stdout_of(&help);
    assert!(help.contains("no longer isolated"), "{help}");
}

/// A bare name finds the function of that name in the one exported interface that has it,
/// in `run` and `map` alike (`echo-char` is only in `wasmpool:tasks/types`).
#[test]
fn a_bare_name_finds_the_one_interface_function_of_that_name() {
    wasmpool(["run", FIXTURES, "echo-char('x')"])
        .assert()
        .success()
        .stdout("'x'\n");
    map("echo-char", "'a'\n'b'\n", &[])
        .success()
        .stdout("'a'\n'b'\n");
    wasmpool(["run", FIXTURES, "div(2, 3)"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("no function `div`"));
}

/// A bare name that two exported interfaces share (`mul`: `math` and `checked`) is a usage
/// error, in `run` and `map` alike, that names both functions in full; a qualified name
/// picks one. A top-level function of that name is no ambiguity: bare `add` is the world's
/// own (wrapping), not `checked.add` (which refuses to overflow).
#[test]
fn a_bare_name_two_interfaces_share_is_ambiguous_and_a_qualified_one_is_not() {
    use predicates::prelude::PredicateBooleanExt;
    use predicates::str::contains;
    let both = || {
        contains("`mul` is ambiguous")
            .and(contains("wasmpool:tasks/math@0.1.0#mul"))
            .and(contains("wasmpool:tasks/checked@0.1.0#mul"))
    };
    wasmpool(["run", FIXTURES, "mul(2, 3)"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(both());
    map("mul", "2, 3\n", &[]).code(2).stdout("").stderr(both());

    for (call, expected) in [
        ("math.mul(2, 3)", "6\n"),
        ("checked.mul(2, 3)", "6\n"),
        ("wasmpool:tasks/checked#mul(-4, 5)", "-20\n"),
        ("add(2147483647, 1)", "-2147483648\n"),
    ] {
        wasmpool(["run", FIXTURES, call])
            .assert()
            .success()
            .stdout(expected);
    }
    wasmpool(["run", FIXTURES, "checked.add(2147483647, 1)"])
        .assert()
        .code(1)
        .stderr(contains("[failed]").and(contains("2147483647 + 1 overflows an s32")));
    map("checked.mul", "65536, 65536\n3, 4\n", &[])
        .code(1)
        .stdout("12\n")
        .stderr(contains("65536 * 65536 overflows an s32"));
}

/// A function without parameters is called once per non-blank line, whatever the line
/// holds; blank lines are skipped as for any function.
#[test]
fn map_calls_a_function_without_parameters_once_per_non_blank_line() {
    let assert = map(
        "count",
        "x\n\n()\n   \n7\n",
        &["-j", "1", "--reuse", "--output", "json"],
    )
    .success();
    let objects = json_lines(&stdout_of(&assert));
    let seen: Vec<(&str, &str)> = objects
        .iter()
        .map(|o| {
            (
                o["input"].as_str().unwrap_or_default(),
                o["ok"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(seen, [("x", "1"), ("()", "2"), ("7", "3")]);
}

/// Completion scripts and manual pages come from the parser's own definition, and
/// `--version` names the wasmtime release and what the build can do.
#[test]
fn completions_man_pages_and_version_describe_the_command_line() {
    for (shell, marker) in [
        ("bash", "_wasmpool()"),
        ("zsh", "#compdef wasmpool"),
        ("fish", "complete -c wasmpool"),
    ] {
        let assert = wasmpool(["completions", shell]).assert().success();
        let script = stdout_of(&assert);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("reuse"), "{shell}: no --reuse");
    }
    wasmpool(["completions", "tcsh"]).assert().code(2);

    let assert = wasmpool(["man"]).assert().success();
    let page = stdout_of(&assert);
    assert!(page.contains(".TH wasmpool 1"), "{page}");
    assert!(page.contains("completions"), "{page}");
    let dir = tempfile::tempdir().expect("temp dir");
    wasmpool(["man", "--dir"])
        .arg(dir.path())
        .assert()
        .success();
    let map_page = std::fs::read_to_string(dir.path().join("wasmpool-map.1")).expect("map page");
    assert!(map_page.contains(r"\-\-reuse"), "{map_page}");

    let assert = wasmpool(["--version"]).assert().success();
    let version = stdout_of(&assert);
    assert!(
        version.starts_with(concat!("wasmpool ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    assert!(version.contains("wasmtime 48."), "{version}");
    assert!(version.contains("component-model"), "{version}");
}

/// The progress bar in a real terminal (a pseudo-terminal from util-linux's `script`,
/// stdout and stderr both on it): it counts up as tasks finish, results are printed on
/// lines of their own between redraws of the bar (each drawing starts by erasing its line),
/// and the bar is erased when the map is done.
#[test]
fn the_progress_bar_updates_stays_off_the_results_and_is_erased_at_the_end() {
    const ERASE: &str = "\r\x1b[2K";
    let dir = tempfile::tempdir().expect("temp dir");
    let inputs = dir.path().join("inputs.txt");
    // One worker, tasks long enough for the bar to be drawn at every count.
    std::fs::write(&inputs, "401\n402\n403\n404\n").expect("write");
    let command = format!(
        "exec {} map {} sleep-ms -j 1 {}",
        sh_word(BIN),
        sh_word(FIXTURES),
        sh_word(&inputs),
    );
    let mut script = StdCommand::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env("XDG_CACHE_HOME", shared_cache())
        .env("SHELL", "/bin/sh")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn script (util-linux), for a terminal");
    let terminal = Incoming::new(script.stdout.take().expect("stdout"));
    let screen = terminal.until_end();
    let status = script.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{screen:?}");

    for done in 1..=3 {
        let counted = format!(" {done}/4 done,");
        let uncounted = format!(" {done} done,");
        assert!(
            screen.contains(&counted) || screen.contains(&uncounted),
            "no bar at {done} done: {screen:?}"
        );
    }
    let mut results = Vec::new();
    for frame in screen.split(ERASE) {
        let mut lines: Vec<&str> = frame.split("\r\n").collect();
        let bar = lines.pop().unwrap_or_default();
        assert!(
            bar.is_empty() || bar.contains(" done,"),
            "printed over the bar, or a bar in a line of output: {frame:?}"
        );
        assert!(
            lines.iter().all(|l| !l.contains(" done,")),
            "a bar left on a line of its own: {frame:?}"
        );
        results.extend(lines);
    }
    assert_eq!(results, ["401", "402", "403", "404"], "{screen:?}");
    assert!(
        screen.ends_with(ERASE),
        "the bar is still shown: {screen:?}"
    );
}
