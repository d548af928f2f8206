//! Sandbox escapes tried (issue 7, part 6): a guest that tries to get out, each attempt
//! contained and asserted. capabilities.rs already covers reading /etc/passwd and an
//! absolute host path without a grant, `../` and a file symlink out of a read-only preopen,
//! PATH without a grant and a TCP connect to 127.0.0.1 without the network grant;
//! sandbox_suite.rs covers deadlines, abort, fuel, an explicit memory cap and stack overflow
//! on the thread pool. What is here is what those do not: writes, /proc, directory
//! symlinks, a preopen named `/`, HOME, name lookup and IPv6, the *default* memory cap with
//! a worker process's RSS, the same hogs inside worker processes, and output floods.
//!
//! Not tried: table growth (no fixture grows a table; `store.rs` caps tables at
//! `MAX_TABLE_ELEMENTS`, 2^20 elements per instance, untested).

use std::path::Path;
use std::time::Duration;

use wasmpool::{
    Budget, Capabilities, DEFAULT_MAX_MEMORY, Executor, OutputMode, ProcessPoolExecutor, Runtime,
    RuntimeConfig, TaskError, TaskErrorKind, TaskFuture, TaskValue, ThreadPoolExecutor,
};

use crate::common::{SOON, call, fixtures, until_started};

const WORKER: &str = env!("CARGO_BIN_EXE_wasmpool");

fn thread_pool(caps: Capabilities) -> ThreadPoolExecutor {
    ThreadPoolExecutor::builder()
        .workers(1)
        .output(OutputMode::Discard)
        .capabilities(caps)
        .build()
        .expect("thread pool")
}

fn process_pool() -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .workers(1)
        .worker_program(WORKER)
        .output(OutputMode::Discard)
        .build()
        .expect("process pool")
}

fn outcome(f: &TaskFuture) -> Result<TaskValue, TaskError> {
    f.result_timeout(SOON)
        .unwrap_or_else(|_| panic!("{f:?} did not resolve within {SOON:?}"))
}

fn run_with(caps: Capabilities, wave: &str) -> Result<TaskValue, TaskError> {
    let pool = thread_pool(caps);
    outcome(&pool.submit(call(fixtures(), wave)).unwrap())
}

/// A WAVE string literal.
fn lit(s: impl AsRef<str>) -> String {
    format!("{:?}", s.as_ref())
}

fn lit_path(p: &Path) -> String {
    lit(p.to_str().expect("UTF-8 temp path"))
}

/// The guest got an `err` (a WASI error it saw as an `io::Error`): refused inside the
/// sandbox, not a host failure. Returns the error's text. (capabilities.rs uses it too.)
pub(crate) fn refused(result: Result<TaskValue, TaskError>, what: &str) -> String {
    match result {
        Err(TaskError::Failed { message, .. }) => message,
        other => panic!("{what}: expected a refusal inside the guest, got {other:?}"),
    }
}

/// What `/proc/{pid}/status` says about a process's memory, in bytes (Linux). (instances.rs
/// uses it too.)
pub(crate) struct Memory {
    /// Resident now (`VmRSS`).
    pub(crate) resident: u64,
    /// The most it ever had resident (`VmHWM`).
    pub(crate) peak: u64,
}

pub(crate) fn memory_of(pid: u32) -> Memory {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let field = |name: &str| -> u64 {
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {path}"));
        kib << 10
    };
    Memory {
        resident: field("VmRSS:"),
        peak: field("VmHWM:"),
    }
}

#[test]
fn proc_self_environ_is_unreachable() {
    // Without any grant, and with a grant of an unrelated directory.
    let dir = tempfile::tempdir().unwrap();
    for caps in [
        Capabilities::default(),
        Capabilities::default().dir(dir.path(), "/data"),
    ] {
        let message = refused(
            run_with(caps.clone(), r#"read-file("/proc/self/environ")"#),
            "read /proc/self/environ",
        );
        assert!(!message.contains("PATH="), "{message}");
        let message = refused(
            run_with(caps, r#"read-file("/data/../../proc/self/environ")"#),
            "read /proc/self/environ via ..",
        );
        assert!(!message.contains("PATH="), "{message}");
    }
}

#[test]
fn a_preopen_named_root_is_not_the_host_root() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mine.txt"), "granted").unwrap();
    let caps = Capabilities::default().dir(dir.path(), "/");
    let v = run_with(caps.clone(), r#"read-file("/mine.txt")"#).unwrap();
    assert_eq!(v.as_str(), Some("granted"));
    refused(
        run_with(caps.clone(), r#"read-file("/etc/passwd")"#),
        "/etc/passwd through a preopen named /",
    );
    refused(
        run_with(caps, r#"read-file("/../../../../etc/passwd")"#),
        "/../../etc/passwd through a preopen named /",
    );
}

#[test]
fn writes_outside_the_grants_do_not_reach_the_host() {
    let outer = tempfile::tempdir().unwrap();
    let inner = outer.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    let victim = outer.path().join("victim.txt");
    std::fs::write(&victim, "original").unwrap();

    // No grant: an absolute host path.
    let target = outer.path().join("dropped.txt");
    refused(
        run_with(
            Capabilities::default(),
            &format!("write-file({}, \"x\")", lit_path(&target)),
        ),
        "write to an absolute host path",
    );
    assert!(!target.exists());

    // A writable grant of `inner`: `..`, a file symlink and a directory symlink out of it.
    let rw = Capabilities::default().dir_writable(&inner, "/data");
    refused(
        run_with(rw.clone(), r#"write-file("/data/../dropped.txt", "x")"#),
        "write with ..",
    );
    assert!(!target.exists());

    std::os::unix::fs::symlink(&victim, inner.join("file-link")).unwrap();
    refused(
        run_with(rw.clone(), r#"write-file("/data/file-link", "pwned")"#),
        "write through an absolute file symlink",
    );
    std::os::unix::fs::symlink("../victim.txt", inner.join("rel-link")).unwrap();
    refused(
        run_with(rw.clone(), r#"write-file("/data/rel-link", "pwned")"#),
        "write through a relative file symlink",
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "original");

    std::os::unix::fs::symlink(outer.path(), inner.join("dir-link")).unwrap();
    refused(
        run_with(
            rw.clone(),
            r#"write-file("/data/dir-link/dropped.txt", "x")"#,
        ),
        "write through a directory symlink",
    );
    assert!(!target.exists());
    refused(
        run_with(rw.clone(), r#"read-file("/data/dir-link/victim.txt")"#),
        "read through a directory symlink",
    );
    refused(
        run_with(rw.clone(), r#"read-file("/data/rel-link")"#),
        "read through a relative file symlink",
    );

    // Inside the grant, writing works: the refusals above are about the path, not the grant.
    run_with(rw, r#"write-file("/data/fine.txt", "ok")"#).unwrap();
    assert_eq!(
        std::fs::read_to_string(inner.join("fine.txt")).unwrap(),
        "ok"
    );
}

#[test]
fn host_environment_stays_hidden_even_with_other_variables_granted() {
    assert!(std::env::var("PATH").is_ok());
    let caps = Capabilities::default().env("GREETING", "hi");
    for key in ["PATH", "HOME", "USER", "CARGO_MANIFEST_DIR"] {
        let v = run_with(caps.clone(), &format!("get-env({})", lit(key))).unwrap();
        assert_eq!(v.to_wave(), "none", "{key}");
    }
    let v = run_with(caps, r#"get-env("GREETING")"#).unwrap();
    assert_eq!(v.to_wave(), r#"some("hi")"#);
}

#[test]
fn no_sockets_by_name_or_over_ipv6_without_the_grant() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    // Name lookup is off: "localhost" does not resolve.
    refused(
        run_with(
            Capabilities::default(),
            &format!("tcp-connect({})", lit(format!("localhost:{port}"))),
        ),
        "connect by name",
    );
    let message = refused(
        run_with(
            Capabilities::default(),
            &format!("tcp-connect({})", lit(format!("[::1]:{port}"))),
        ),
        "connect over IPv6",
    );
    assert!(message.contains("ermission denied"), "{message}");
    assert_eq!(
        listener.accept().map(drop).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "nothing reached the host"
    );
}

#[test]
fn the_default_memory_cap_stops_a_grower_and_the_host_gets_its_memory_back() {
    let grower_stopped = |f: &TaskFuture| {
        assert_eq!(
            outcome(f).unwrap_err(),
            TaskError::MemoryLimit {
                limit: DEFAULT_MAX_MEMORY
            }
        );
        let peak = f.report().expect("report").peak_memory;
        assert!(
            peak > DEFAULT_MAX_MEMORY / 2 && peak <= DEFAULT_MAX_MEMORY,
            "{peak}"
        );
    };
    let pool = thread_pool(Capabilities::default());
    grower_stopped(&pool.submit(call(fixtures(), "allocate-forever()")).unwrap());
    let f = pool.submit(call(fixtures(), "add(1, 2)")).unwrap();
    assert_eq!(outcome(&f).unwrap().as_i64(), Some(3));

    // Whether the instance's memory went with it is measured in a process that runs
    // nothing but this test's tasks: a worker of a process pool of its own (the test
    // binary's RSS moves with every test running beside this one).
    let pool = process_pool();
    let warm_up = pool.submit(call(fixtures(), "add(1, 2)")).unwrap();
    assert_eq!(outcome(&warm_up).unwrap().as_i64(), Some(3));
    let worker = warm_up.report().expect("report").pid;
    let before = memory_of(worker);
    let f = pool.submit(call(fixtures(), "allocate-forever()")).unwrap();
    grower_stopped(&f);
    assert_eq!(f.report().unwrap().pid, worker, "the same worker ran it");
    // The worker lives on; once it has run another task, it is done with the grower.
    let f = pool.submit(call(fixtures(), "add(1, 2)")).unwrap();
    assert_eq!(outcome(&f).unwrap().as_i64(), Some(3));
    assert_eq!(f.report().unwrap().pid, worker, "the same worker ran it");
    let after = memory_of(worker);
    // The guest's memory was resident in that worker (so the measure sees it) ...
    assert!(
        after.peak >= before.resident + DEFAULT_MAX_MEMORY / 2,
        "worker peak RSS {} bytes, {} before the grower",
        after.peak,
        before.resident
    );
    // ... and it was given back when the instance went.
    assert!(
        after.resident < before.resident + DEFAULT_MAX_MEMORY / 8,
        "worker RSS {} -> {} bytes",
        before.resident,
        after.resident
    );
}

#[test]
fn hogs_are_contained_inside_a_worker_process() {
    let pool = process_pool();
    let host = std::process::id();
    let healthy = |pool: &ProcessPoolExecutor| {
        let f = pool.submit(call(fixtures(), "add(40, 2)")).unwrap();
        assert_eq!(outcome(&f).unwrap().as_i64(), Some(42));
        assert_ne!(f.report().expect("report").pid, host, "ran in a worker");
    };

    let cap = Budget::default().max_memory(16 << 20);
    let f = pool
        .submit(call(fixtures(), "allocate-forever()").with_budget(cap))
        .unwrap();
    assert_eq!(
        outcome(&f).unwrap_err(),
        TaskError::MemoryLimit { limit: 16 << 20 }
    );
    healthy(&pool);

    let f = pool.submit(call(fixtures(), "recurse-forever(0)")).unwrap();
    assert_eq!(
        outcome(&f).unwrap_err().kind(),
        TaskErrorKind::StackOverflow
    );
    healthy(&pool);

    let deadline = Budget::default().timeout(Duration::from_millis(200));
    let f = pool
        .submit(call(fixtures(), "loop-forever()").with_budget(deadline))
        .unwrap();
    assert_eq!(
        outcome(&f).unwrap_err(),
        TaskError::Timeout {
            limit: Duration::from_millis(200)
        }
    );
    healthy(&pool);

    let f = pool.submit(call(fixtures(), "loop-forever()")).unwrap();
    until_started(&f);
    assert!(f.abort());
    assert_eq!(outcome(&f).unwrap_err(), TaskError::Cancelled);
    healthy(&pool);
}

#[test]
fn a_smaller_stack_limit_still_ends_in_stack_overflow() {
    let component = Runtime::with_config(RuntimeConfig::default().max_wasm_stack(64 << 10))
        .expect("runtime")
        .load(env!("WASMPOOL_FIXTURES_WASM"))
        .expect("fixtures");
    let pool = thread_pool(Capabilities::default());
    let f = pool
        .submit(component.call_wave("recurse-forever(0)").unwrap())
        .unwrap();
    let err = outcome(&f).unwrap_err();
    assert_eq!(err.kind(), TaskErrorKind::StackOverflow, "{err}");
    assert!(err.to_string().contains("overflowed its stack"), "{err}");
    let f = pool
        .submit(component.call_wave("fib(10)").unwrap())
        .unwrap();
    assert_eq!(outcome(&f).unwrap().as_i64(), Some(55));
}

#[test]
fn a_stdout_flood_is_bounded_when_captured_and_finishes_when_discarded() {
    const LIMIT: usize = 4096;
    let line = "0123456789abcdef";
    let flood = format!("print-lines(200000, {})", lit(line)); // 3.4 MB of output
    let captured = ThreadPoolExecutor::builder()
        .workers(1)
        .output(OutputMode::Capture { limit: LIMIT })
        .build()
        .unwrap();
    let f = captured.submit(call(fixtures(), &flood)).unwrap();
    outcome(&f).expect("the flood finishes");
    let report = f.report().expect("report");
    assert!(report.stdout_truncated);
    let stdout = report.stdout.expect("captured");
    // The whole lines that fit, then the mark of the cut.
    let kept = format!("{line}\n").repeat(LIMIT / (line.len() + 1));
    assert_eq!(stdout, format!("{kept}[wasmpool: output cut at 4 KiB]\n"));
    // The next task's capture starts empty.
    let f = captured
        .submit(call(fixtures(), r#"print-lines(1, "next")"#))
        .unwrap();
    outcome(&f).unwrap();
    let report = f.report().unwrap();
    assert_eq!(report.stdout.as_deref(), Some("next\n"));
    assert!(!report.stdout_truncated);

    let discarded = thread_pool(Capabilities::default());
    let f = discarded.submit(call(fixtures(), &flood)).unwrap();
    outcome(&f).expect("the flood finishes");
    assert_eq!(f.report().expect("report").stdout, None);
}
