//! The seed tour: each example under examples/ runs, and its output reads like the
//! reference's (concurrent-futures-pymotw.rst).

use std::path::PathBuf;
use std::process::Command;

/// Builds the examples once per test run (`cargo test --test all` alone would not), so the
/// binaries tested are those of the current sources.
fn build_examples() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let mut args = vec!["build", "--quiet", "--examples"];
        if !cfg!(debug_assertions) {
            args.push("--release");
        }
        let status = Command::new(env!("CARGO"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --examples");
        assert!(status.success(), "cargo build --examples failed");
    });
}

/// Runs examples/<name>.rs, built next to the test binary, and returns its stdout lines.
fn run_example(name: &str) -> Vec<String> {
    build_examples();
    let exe = std::env::current_exe().expect("test binary path");
    let dir: PathBuf = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("examples");
    let path = dir.join(name);
    let out = Command::new(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_string).collect()
}

fn position(lines: &[String], line: &str) -> usize {
    lines
        .iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("no line {line:?} in {lines:#?}"))
}

#[test]
fn thread_pool_map() {
    let lines = run_example("thread_pool_map");
    assert_eq!(lines[0], "main: starting");
    // The workers' first lines may come before or after main's next one.
    let main_lines: Vec<&String> = lines.iter().filter(|l| l.starts_with("main: ")).collect();
    assert!(
        main_lines[1].starts_with("main: unprocessed results Map"),
        "{}",
        main_lines[1]
    );
    assert_eq!(
        lines.last().unwrap(),
        "main: results: [0.5, 0.4, 0.3, 0.2, 0.1]"
    );
    for n in 1..=5 {
        let sleeping = lines
            .iter()
            .position(|l| l.starts_with("worker-") && l.ends_with(&format!(": sleeping {n}")))
            .expect("sleeping line with a worker prefix");
        let done = lines
            .iter()
            .position(|l| l.ends_with(&format!(": done with {n}")))
            .expect("done line");
        assert!(sleeping < done);
    }
    // Both workers took part.
    assert!(lines.iter().any(|l| l.starts_with("worker-1: ")));
    assert!(lines.iter().any(|l| l.starts_with("worker-2: ")));
}

#[test]
fn thread_pool_submit() {
    let lines = run_example("thread_pool_submit");
    assert_eq!(lines[0], "main: starting");
    // The worker's first line may come before or after main's next one.
    let main_lines: Vec<&String> = lines.iter().filter(|l| l.starts_with("main: ")).collect();
    assert!(
        main_lines[1] == "main: future: TaskFuture(#1 state=running)"
            || main_lines[1] == "main: future: TaskFuture(#1 state=pending)",
        "{}",
        main_lines[1]
    );
    let sleeping = lines
        .iter()
        .position(|l| l.starts_with("worker-") && l.ends_with(": sleeping 5"))
        .expect("the task's line, prefixed with its worker");
    assert!(sleeping < position(&lines, "main: result: 0.5"));
    assert_eq!(
        lines.last().unwrap(),
        "main: future after result: TaskFuture(#1 state=finished returned f64)"
    );
}

#[test]
fn as_completed() {
    let lines = run_example("as_completed");
    assert_eq!(lines[0], "main: starting");
    let mut results: Vec<&str> = lines[1..].iter().map(String::as_str).collect();
    results.sort();
    assert_eq!(
        results,
        [
            "main: result: (1, 0.1)",
            "main: result: (2, 0.2)",
            "main: result: (3, 0.3)",
            "main: result: (4, 0.4)",
            "main: result: (5, 0.5)",
        ]
    );
}

#[test]
fn future_callback() {
    let lines = run_example("future_callback");
    assert_eq!(
        lines,
        [
            "main: starting",
            "5: sleeping",
            "5: done",
            "5: value returned: 0.5"
        ]
    );
}

#[test]
fn future_callback_cancel() {
    let lines = run_example("future_callback_cancel");
    assert_eq!(lines[0], "main: starting");
    for n in 1..=10 {
        position(&lines, &format!("main: submitting {n}"));
        let cancelled = lines.contains(&format!("{n}: canceled"));
        let not_cancelled = lines.contains(&format!("{n}: not canceled"));
        assert!(
            cancelled != not_cancelled,
            "task {n}: exactly one outcome line"
        );
        assert_eq!(
            not_cancelled,
            lines.contains(&format!("main: did not cancel {n}"))
        );
        if not_cancelled {
            assert!(
                position(&lines, &format!("{n}: done"))
                    < position(&lines, &format!("{n}: not canceled"))
            );
        }
    }
    // Only tasks that had started (at most one per worker) escape cancellation; the
    // example waits for the first two to start, so exactly 9 and 10 run.
    assert!(lines.contains(&"main: did not cancel 10".to_string()));
    assert!(lines.contains(&"main: did not cancel 9".to_string()));
    for n in 1..=8 {
        assert!(lines.contains(&format!("{n}: canceled")), "{lines:#?}");
    }
}

#[test]
fn future_exception() {
    let lines = run_example("future_exception");
    assert_eq!(
        lines,
        [
            "main: starting",
            "5: starting",
            "main: error: the value 5 is no good",
            "main: saw error \"the value 5 is no good\" when accessing result",
        ]
    );
}

#[test]
fn context_manager() {
    let lines = run_example("context_manager");
    assert_eq!(lines.first().unwrap(), "main: starting");
    assert_eq!(lines.last().unwrap(), "main: done");
    let mut printed: Vec<&str> = lines[1..lines.len() - 1]
        .iter()
        .map(String::as_str)
        .collect();
    printed.sort();
    assert_eq!(printed, ["1", "2", "3", "4"]);
}

#[test]
fn process_pool_map() {
    let lines = run_example("process_pool_map");
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let mut pids = std::collections::HashSet::new();
    for (line, n) in lines.iter().zip((1..=5).rev()) {
        let pid = line
            .strip_prefix(&format!("ran task {n} in process "))
            .unwrap_or_else(|| panic!("{line:?}"));
        let pid: u32 = pid.parse().unwrap_or_else(|_| panic!("{line:?}"));
        assert_ne!(pid, 0);
        pids.insert(pid);
    }
    // Five tasks, two worker processes: workers are reused.
    assert!(pids.len() <= 2, "{lines:#?}");
}

#[test]
fn process_pool_broken() {
    let lines = run_example("process_pool_broken");
    assert_eq!(lines[0], "getting the pid for one worker");
    let pid = lines[1]
        .strip_prefix("killing process ")
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(lines[2], "submitting another task");
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(
        lines[3].starts_with("could not start new tasks: ")
            && lines[3].contains("broken pool: worker-")
            && lines[3].contains(&format!("(pid {pid}) terminated abruptly"))
            && lines[3].contains("killed by signal 9 (SIGKILL)"),
        "{}",
        lines[3]
    );
}
