//! A heavy guest: the Python component of `tests/python-guest` (CPython inside, ~18 MB),
//! through the library's pools and the command line. What it shows that the Rust fixtures
//! cannot: module globals of an interpreter living exactly as long as its instance
//! (`--reuse`), and an uncaught Python exception becoming a trap on that task's future,
//! with the traceback on the task's stderr.
//!
//! The component is built by `tests/python-guest/build.sh` (componentize-py, a PyPI
//! wheel), so it is not part of the build: the tests run on `$WASMPOOL_PYTHON_GUEST` and
//! skip without it, unless `WASMPOOL_REQUIRE_PYTHON_GUEST` is set (`.ci/run` sets both):
//! then they fail. Compiling it takes tens of seconds, so it is compiled once per test
//! binary for the library's tests and once into the command line's shared cache.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use wasmpool::{
    Executor, InstancePolicy, OutputMode, ProcessPoolExecutor, TaskComponent, TaskErrorKind,
    ThreadPoolExecutor,
};

use crate::cli::{BIN, wasmpool_within};
use crate::common::{SOON, call};

/// Bound of a command line run that may compile the component (a loaded 2-core machine).
const COMPILE: Duration = Duration::from_secs(300);

/// The component's path, `None` (the test returns early) when `WASMPOOL_PYTHON_GUEST` is
/// unset and `WASMPOOL_REQUIRE_PYTHON_GUEST` is too. Panics when it is required and
/// missing, or names no file.
fn guest_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WASMPOOL_PYTHON_GUEST").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "WASMPOOL_PYTHON_GUEST={} is not a file",
            path.display()
        );
        return Some(path);
    }
    let missing = "the Python guest tests need WASMPOOL_PYTHON_GUEST, the component that \
        `sh tests/python-guest/build.sh` builds (`pip install componentize-py==0.25.1` first)";
    let required = std::env::var_os("WASMPOOL_REQUIRE_PYTHON_GUEST").is_some_and(|v| !v.is_empty());
    assert!(
        !required,
        "WASMPOOL_REQUIRE_PYTHON_GUEST is set but {missing}"
    );
    // Written to stderr itself: the test harness captures `eprintln!`.
    static SAY_ONCE: Once = Once::new();
    SAY_ONCE.call_once(|| {
        let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {missing} ***\n");
    });
    None
}

/// The component, compiled once per test binary; `None` to skip (see [`guest_path`]).
fn guest() -> Option<&'static TaskComponent> {
    static GUEST: OnceLock<Option<TaskComponent>> = OnceLock::new();
    GUEST
        .get_or_init(|| {
            let path = guest_path()?;
            let started = Instant::now();
            let component = TaskComponent::from_file(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let _ = writeln!(
                std::io::stderr(),
                "python guest: compiled in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Some(component)
        })
        .as_ref()
}

/// The component's path once it is compiled into the shared cache (by one `inspect`, so
/// that tests running side by side do not each compile it); `None` to skip.
fn cached_guest() -> Option<&'static str> {
    static CACHED: OnceLock<Option<String>> = OnceLock::new();
    CACHED
        .get_or_init(|| {
            let path = guest_path()?
                .into_os_string()
                .into_string()
                .unwrap_or_else(|p| panic!("WASMPOOL_PYTHON_GUEST is not UTF-8: {p:?}"));
            let started = Instant::now();
            wasmpool_within(["inspect", &path], COMPILE)
                .assert()
                .success();
            let _ = writeln!(
                std::io::stderr(),
                "python guest: compiled into the command line's cache in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Some(path)
        })
        .as_deref()
}

/// Runs `wasmpool map GUEST count -j 1 EXTRA...` over six lines; what it printed.
fn counts(guest: &str, extra: &[&str]) -> String {
    let mut args = vec!["map", guest, "count", "-j", "1", "--no-progress"];
    args.extend_from_slice(extra);
    let assert = wasmpool_within(args, COMPILE)
        .write_stdin("1\n2\n3\n4\n5\n6\n")
        .assert()
        .success();
    String::from_utf8_lossy(&assert.get_output().stdout).into_owned()
}

#[test]
fn values_come_back_through_the_thread_pool_and_the_process_pool() {
    let Some(guest) = guest() else { return };
    let calls: Vec<_> = (0..8)
        .map(|i| call(guest, &format!("add({i}, 40)")))
        .collect();
    let expected: Vec<i64> = (40..48).collect();

    let threads = ThreadPoolExecutor::builder()
        .workers(2)
        .output(OutputMode::Discard)
        .build()
        .expect("thread pool");
    let processes = ProcessPoolExecutor::builder()
        .workers(2)
        .worker_program(BIN)
        .output(OutputMode::Discard)
        .build()
        .expect("process pool");
    let pools: [(&str, &dyn Executor); 2] = [("thread", &threads), ("process", &processes)];
    for (name, pool) in pools {
        let futures: Vec<_> = calls
            .iter()
            .map(|c| pool.submit(c.clone()).expect("submit"))
            .collect();
        let values: Vec<i64> = futures
            .iter()
            .map(|f| {
                let value = f
                    .result_timeout(SOON)
                    .unwrap_or_else(|_| panic!("{name} pool: {f:?} did not resolve"))
                    .unwrap_or_else(|e| panic!("{name} pool: {e}"));
                value.as_i64().expect("an s32")
            })
            .collect();
        assert_eq!(values, expected, "{name} pool");
    }
}

/// A reused instance keeps the interpreter's globals across tasks; an exception that
/// escapes the guest traps its task, shows the traceback on that task's stderr, and the
/// trapped instance is discarded: the next task starts counting again.
#[test]
fn an_uncaught_exception_traps_its_task_with_the_traceback_on_its_stderr() {
    let Some(guest) = guest() else { return };
    let pool = ThreadPoolExecutor::builder()
        .workers(1)
        .instance_policy(InstancePolicy::Reuse { max_tasks: 100 })
        .output(OutputMode::Capture { limit: 1 << 20 })
        .build()
        .expect("thread pool");
    let count = || {
        let f = pool.submit(call(guest, "count()")).expect("submit");
        let value = f.result_timeout(SOON).expect("resolves").expect("count");
        value.as_i64().expect("a u32")
    };
    assert_eq!([count(), count()], [1, 2]);

    let failed = pool
        .submit(call(guest, r#"fail("no such user")"#))
        .expect("submit");
    let err = failed
        .result_timeout(SOON)
        .expect("resolves")
        .expect_err("the exception fails the task");
    assert_eq!(err.kind(), TaskErrorKind::Trap, "{err}");
    let report = failed.report().expect("a finished task has a report");
    let stderr = report.stderr.as_deref().unwrap_or_default();
    assert!(stderr.contains("Traceback"), "{stderr}");
    assert!(stderr.contains("ValueError: no such user"), "{stderr}");

    assert_eq!(count(), 1, "the trapped instance was reused");
}

/// `--reuse=4` keeps the module's globals for four tasks, then starts a new instance;
/// without it every task has a fresh interpreter.
#[test]
fn reuse_keeps_module_globals_on_the_command_line_and_fresh_instances_do_not() {
    let Some(guest) = cached_guest() else { return };
    assert_eq!(counts(guest, &["--reuse=4"]), "1\n2\n3\n4\n1\n2\n");
    assert_eq!(counts(guest, &[]), "1\n1\n1\n1\n1\n1\n");
}

/// `run` of a call that raises: exit 1, the trap's kind, and the traceback on stderr.
#[test]
fn run_reports_an_uncaught_exception_as_a_trap() {
    let Some(guest) = cached_guest() else { return };
    let assert = wasmpool_within(["run", guest, r#"fail("no such user")"#], COMPILE)
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(err.contains("fail failed [trap]"), "{err}");
    assert!(err.contains("ValueError: no such user"), "{err}");
    wasmpool_within(["run", guest, "add(2, 3)"], COMPILE)
        .assert()
        .success()
        .stdout("5\n");
}
