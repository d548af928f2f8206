//! Instructions per task, counted by valgrind's callgrind: numbers that repeat on a noisy
//! machine, where seconds do not. Needs nothing but `valgrind` (and `strace` for
//! `--strace`).
//!
//! ```sh
//! cargo bench --bench instructions                   # every scenario, N = 200
//! cargo bench --bench instructions -- --quick        # N = 50
//! cargo bench --bench instructions -- --profile      # + where each task's instructions go
//! cargo bench --bench instructions -- --strace       # + system calls per task
//! cargo bench --bench instructions -- --only thread-fresh,cli-map
//! cargo bench --bench instructions -- --no-write     # print only
//! ```
//!
//! The counts measured replace theirs in `benches/INSTRUCTIONS.json` (`common/ir_record.rs`),
//! with the date and commit, for `cargo bench --bench compare` to print beside the
//! performance goals.
//!
//! How a number is made: this binary re-runs itself (or `wasmpool map`) under
//! `valgrind --tool=callgrind`, does a warm-up, then runs N tasks and, separately, 2N tasks,
//! and reports `(Ir(2N) − Ir(N)) / N`, so every fixed cost (start-up, warm-up, the first
//! and the last turn of each loop) cancels out. Callgrind runs one thread at a time and counts
//! every thread's instructions, so a pool task's cost includes its worker thread's work.
//! The `*-chunk` scenarios (`map_chunked` with chunks of [`CHUNK`](common::CHUNK), as Python's
//! `map(..., chunksize=256)`) round N up to whole chunks (200 → 256), so that each task
//! carries its share of one chunk's fixed cost, as in a long `map`.
//! - In-process scenarios: the measured loop runs inside [`wasmpool_bench_window`]; callgrind
//!   zeroes all counters when it is entered and writes them out when it returns
//!   (`--zero-before`, `--dump-after`), once for N and once for 2N tasks in one process.
//! - Process pool: one run per task count. Parent side: the same window. Worker side: the
//!   worker process is traced too (`--trace-children=yes`, output files per pid), and its
//!   counters are written whenever its executor loop (`process_pool::worker::execute`)
//!   returns; the sum of those dumps is everything from its start to the end of its last
//!   task, before it closes its channel (see [`worker_dumps`]).
//! - `wasmpool map`: the release binary, whole process, on N and on 2N input lines. The
//!   command line sizes its instance pool to its workers (`-j 1`: 4 slots), which valgrind
//!   can reserve (see [`SLOTS`]); if it ever cannot, the row says "n/a" and why.
//!
//! Every in-process and process-pool scenario runs on a runtime with a pool of [`SLOTS`]
//! instance slots, the default settings otherwise.
//!
//! `WASMPOOL_SPIN_US=0` is set for every run (unless it is already set): a spinning wait
//! polls for a wall-clock time, so the instructions it takes depend on timing, not on the
//! task. The epoch ticker still ticks every millisecond of wall time while a task runs (a
//! few hundred instructions a tick): that is the noise left, well under 1%.
//!
//! The callgrind files stay in `$CARGO_TARGET_TMPDIR/instructions/` for `callgrind_annotate`;
//! `--profile` prints, per scenario, the functions with the most instructions per task (the
//! same difference, per function) and the calls to the allocator per task.

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use wasmpool::{Call, Executor, InstancePolicy, PoolingConfig};

/// Tasks of the smaller measured run (the larger one has twice as many).
const TASKS: usize = 200;
/// The same, with `--quick`.
const QUICK_TASKS: usize = 50;
/// Tasks run before anything is measured (pool slots, lazy statics, caches warmed).
const WARM_UP: usize = 20;
/// `--strace` runs natively, with this many times more tasks: start-up's thread
/// synchronisation (the compiler's threads) varies by hundreds of calls from run to run.
const STRACE_SCALE: usize = 10;
/// Cost centres shown per scenario with `--profile`.
const TOP: usize = 30;
/// Instance slots of the runtime the tasks run on. The default pool (1000 slots, 4 GiB + guard
/// of address space per memory, ~8.6 TB in all) cannot be reserved under valgrind, which
/// manages some tens of GiB at most ("mmap failed to reserve ... Invalid argument"); a pool
/// of 4 can. The slot allocator's own work is a few hundred instructions per task here.
const SLOTS: u32 = 4;
/// The function the in-process measured loops run in (callgrind's trigger).
const WINDOW: &str = "wasmpool_bench_window";
/// The worker process's executor loop: its return is the worker side's trigger.
const WORKER_LOOP: &str = "wasmpool::process_pool::worker::execute";

/// The measured loop: callgrind zeroes its counters on entry and writes them out on return.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn wasmpool_bench_window(work: &mut dyn FnMut()) {
    work();
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    RawFresh,
    RawReuse,
    RawReuseAsync,
    ThreadFresh,
    ThreadFreshBatch,
    ThreadReuse,
    ThreadReuseBatch,
    ProcessFresh,
    ProcessFreshBatch,
    ThreadReuseChunk,
    ProcessReuseChunk,
    CliMap,
}

/// How a scenario's runs are made and read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// This binary, N and 2N in two windows of one process.
    InProcess,
    /// This binary with a process pool of one worker, one process per task count.
    ProcessPool,
    /// `wasmpool map`, whole process, one per task count.
    Cli,
}

impl Scenario {
    const ALL: [Scenario; 12] = [
        Scenario::RawFresh,
        Scenario::RawReuse,
        Scenario::RawReuseAsync,
        Scenario::ThreadFresh,
        Scenario::ThreadFreshBatch,
        Scenario::ThreadReuse,
        Scenario::ThreadReuseBatch,
        Scenario::ThreadReuseChunk,
        Scenario::ProcessFresh,
        Scenario::ProcessFreshBatch,
        Scenario::ProcessReuseChunk,
        Scenario::CliMap,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::RawFresh => "raw-fresh",
            Scenario::RawReuse => "raw-reuse",
            Scenario::RawReuseAsync => "raw-reuse-async",
            Scenario::ThreadFresh => "thread-fresh",
            Scenario::ThreadFreshBatch => "thread-fresh-batch",
            Scenario::ThreadReuse => "thread-reuse",
            Scenario::ThreadReuseBatch => "thread-reuse-batch",
            Scenario::ProcessFresh => "process-fresh",
            Scenario::ProcessFreshBatch => "process-fresh-batch",
            Scenario::ThreadReuseChunk => "thread-reuse-chunk",
            Scenario::ProcessReuseChunk => "process-reuse-chunk",
            Scenario::CliMap => "cli-map",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Scenario::RawFresh => "raw wasmtime: store+WASI+instantiate+call noop, 1 thread",
            Scenario::RawReuse => "raw wasmtime: typed sync call of noop on a kept instance",
            Scenario::RawReuseAsync => {
                "raw wasmtime: call_async of noop on a kept instance (async WASI)"
            }
            Scenario::ThreadFresh => "thread pool, 1 worker, fresh: submit noop, wait, repeat",
            Scenario::ThreadFreshBatch => "thread pool, 1 worker, fresh: submit N, wait all",
            Scenario::ThreadReuse => "thread pool, 1 worker, reuse: submit noop, wait, repeat",
            Scenario::ThreadReuseBatch => "thread pool, 1 worker, reuse: submit N, wait all",
            Scenario::ProcessFresh => "process pool, 1 worker, fresh: submit, wait, repeat",
            Scenario::ProcessFreshBatch => "process pool, 1 worker, fresh: submit N, wait all",
            Scenario::ThreadReuseChunk => {
                "thread pool, 1 worker, reuse: map_chunked(N, 256), read all"
            }
            Scenario::ProcessReuseChunk => {
                "process pool, 1 worker, reuse: map_chunked(N, 256), read all"
            }
            Scenario::CliMap => "wasmpool map math.add -j 1 --pool thread --output json",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Scenario::ProcessFresh | Scenario::ProcessFreshBatch | Scenario::ProcessReuseChunk => {
                Kind::ProcessPool
            }
            Scenario::CliMap => Kind::Cli,
            _ => Kind::InProcess,
        }
    }

    /// The N this scenario measures when asked for `n`: the chunked ones round it up to whole
    /// chunks, so that N and 2N tasks differ by whole chunks (each task then carries its
    /// share of one chunk's fixed cost, as in a long `map`).
    fn tasks(self, n: usize) -> usize {
        match self {
            Scenario::ThreadReuseChunk | Scenario::ProcessReuseChunk => {
                n.next_multiple_of(common::CHUNK)
            }
            _ => n,
        }
    }

    fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let scenario = Scenario::from_name(&args[1]).expect("a scenario");
        let sizes: Vec<usize> = args[2..].iter().map(|n| n.parse().expect("N")).collect();
        child(scenario, &sizes);
        return;
    }
    let mut options = Options {
        tasks: TASKS,
        profile: false,
        strace: false,
        only: Scenario::ALL.to_vec(),
        write: true,
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--quick" => options.tasks = QUICK_TASKS,
            "--profile" => options.profile = true,
            "--strace" => options.strace = true,
            "--no-write" => options.write = false,
            "--only" => {
                let names = rest.next().expect("--only needs scenario names");
                options.only = names
                    .split(',')
                    .map(|n| {
                        Scenario::from_name(n).unwrap_or_else(|| {
                            let all: Vec<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
                            panic!("unknown scenario `{n}`; one of {}", all.join(", "))
                        })
                    })
                    .collect();
            }
            // What `cargo bench` passes, and a filter we do not use.
            _ => {}
        }
    }
    if !tool_present("valgrind") {
        println!("instructions: skipped, `valgrind` is not installed");
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("instructions");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the output directory");
    run(&options, &dir);
}

struct Options {
    tasks: usize,
    profile: bool,
    strace: bool,
    only: Vec<Scenario>,
    /// Keep the counts in `benches/INSTRUCTIONS.json` (off with `--no-write`).
    write: bool,
}

/// One measured side of a scenario.
struct Row {
    scenario: Scenario,
    side: &'static str,
    /// The callgrind outputs for N and 2N tasks (each may be several dumps, summed).
    files: [Vec<PathBuf>; 2],
    /// Instructions in the runs of N and 2N tasks; `None` when they could not be counted.
    ir: Option<[u64; 2]>,
    how: String,
    /// N.
    tasks: usize,
}

impl Row {
    fn new(
        scenario: Scenario,
        side: &'static str,
        tasks: usize,
        files: [Vec<PathBuf>; 2],
        how: &str,
    ) -> Row {
        Row {
            scenario,
            side,
            ir: Some(files.each_ref().map(|f| f.iter().map(|f| totals(f)).sum())),
            files,
            how: how.to_string(),
            tasks,
        }
    }

    fn per_task(&self) -> Option<f64> {
        self.ir
            .map(|[small, large]| (large as f64 - small as f64) / self.tasks as f64)
    }
}

fn run(options: &Options, dir: &Path) {
    let n = options.tasks;
    let mut rows = Vec::new();
    for &scenario in &options.only {
        let n = scenario.tasks(n);
        eprintln!("instructions: {} (N = {n}) ...", scenario.name());
        match scenario.kind() {
            Kind::InProcess => rows.push(in_process(scenario, n, dir)),
            Kind::ProcessPool => rows.extend(process_pool(scenario, n, dir)),
            Kind::Cli => rows.push(cli_map(n, dir)),
        }
    }

    let mut table = String::new();
    let _ = writeln!(
        table,
        "\nInstructions per task (Ir), callgrind, N = {n} (chunked: whole chunks of {chunk}): \
         (Ir(2N) − Ir(N)) / N\n",
        chunk = common::CHUNK
    );
    let _ = writeln!(
        table,
        "| scenario | side | Ir/task | what | measured as |\n|---|---|---:|---|---|"
    );
    for row in &rows {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} |",
            row.scenario.name(),
            row.side,
            row.per_task()
                .map_or("n/a".to_string(), |ir| common::thousands(ir.round() as u64)),
            row.scenario.what(),
            row.how,
        );
    }
    println!("{table}");
    println!("callgrind files: {}", dir.display());
    if options.write {
        let measured: Vec<(String, f64)> = rows
            .iter()
            .filter_map(|row| {
                let key = common::ir_record::key(row.scenario.name(), row.side);
                Some((key, row.per_task()?))
            })
            .collect();
        match common::ir_record::write(&measured) {
            Ok(()) => println!("counts kept in {}", common::ir_record::PATH),
            Err(e) => eprintln!("cannot write {}: {e}", common::ir_record::PATH),
        }
    }

    if options.profile {
        for row in rows.iter().filter(|r| r.ir.is_some()) {
            print_profile(row, dir);
        }
    }
    if options.strace {
        if tool_present("strace") {
            for &scenario in &options.only {
                print_syscalls(scenario, STRACE_SCALE * scenario.tasks(n), dir);
            }
        } else {
            println!("\n--strace: skipped, `strace` is not installed");
        }
    }
}

// ---------------------------------------------------------------------------------------
// The child: what runs under valgrind.

/// Runs `scenario`: a warm-up, then one window per size.
fn child(scenario: Scenario, sizes: &[usize]) {
    let most = sizes.iter().copied().max().unwrap_or(0);
    let component = common::fixtures_with(Some(PoolingConfig::default().instances(SLOTS)));
    let noop = || common::calls(&component, "noop()", 1).remove(0);
    match scenario {
        Scenario::RawFresh => {
            let raw = common::Raw::new(component.runtime());
            windows(sizes, |n| (0..n).for_each(|_| raw.fresh_noop()));
        }
        Scenario::RawReuse => {
            let mut call = common::Raw::new(component.runtime()).kept_sync();
            windows(sizes, |n| (0..n).for_each(|_| call()));
        }
        Scenario::RawReuseAsync => {
            let mut call = common::Raw::new(component.runtime()).kept_async();
            windows(sizes, |n| (0..n).for_each(|_| call()));
        }
        Scenario::ThreadFresh => one_by_one(
            &common::thread_pool(1, InstancePolicy::Fresh),
            &noop(),
            sizes,
        ),
        Scenario::ThreadReuse => one_by_one(&common::thread_pool(1, common::REUSE), &noop(), sizes),
        Scenario::ThreadFreshBatch => {
            let pool = common::thread_pool(1, InstancePolicy::Fresh);
            batches(&pool, &common::calls(&component, "noop()", most), sizes);
        }
        Scenario::ThreadReuseBatch => {
            let pool = common::thread_pool(1, common::REUSE);
            batches(&pool, &common::calls(&component, "noop()", most), sizes);
        }
        Scenario::ProcessFresh => {
            let pool = common::process_pool(1, InstancePolicy::Fresh).expect("a process pool");
            one_by_one(&pool, &noop(), sizes);
        }
        Scenario::ProcessFreshBatch => {
            let pool = common::process_pool(1, InstancePolicy::Fresh).expect("a process pool");
            batches(&pool, &common::calls(&component, "noop()", most), sizes);
        }
        Scenario::ThreadReuseChunk => {
            let pool = common::thread_pool(1, common::REUSE);
            chunked(&pool, &common::calls(&component, "noop()", most), sizes);
        }
        Scenario::ProcessReuseChunk => {
            let pool = common::process_pool(1, common::REUSE).expect("a process pool");
            chunked(&pool, &common::calls(&component, "noop()", most), sizes);
        }
        Scenario::CliMap => unreachable!("`wasmpool map` is run directly"),
    }
}

/// The warm-up (before the first window), then `run(n)` in a window for each size.
fn windows(sizes: &[usize], mut run: impl FnMut(usize)) {
    run(WARM_UP);
    for &n in sizes {
        wasmpool_bench_window(&mut || run(n));
    }
}

/// Each task submitted after the previous one's result came back.
fn one_by_one(pool: &dyn Executor, call: &Call, sizes: &[usize]) {
    windows(sizes, |n| {
        (0..n).for_each(|_| common::round_trip(pool, call))
    });
}

/// `map_chunked` with chunks of [`CHUNK`](common::CHUNK) over the calls, every result read in order.
fn chunked<E: Executor>(pool: &E, calls: &[Call], sizes: &[usize]) {
    windows(sizes, |n| {
        common::map_chunked_all(pool, &calls[..n], common::CHUNK)
    });
}

/// Every task submitted, then every result waited for.
fn batches(pool: &dyn Executor, calls: &[Call], sizes: &[usize]) {
    windows(sizes, |n| common::run_all(pool, &calls[..n]));
}

// ---------------------------------------------------------------------------------------
// The parent: running under callgrind and reading its files.

/// `valgrind --tool=callgrind`, writing `dir/{tag}.{pid}[.{part}]` and its log beside.
fn callgrind(dir: &Path, tag: &str) -> Command {
    let mut command = Command::new("valgrind");
    command
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}/{tag}.%p", dir.display()))
        .arg(format!("--log-file={}/{tag}.%p.log", dir.display()));
    spin_off(&mut command);
    command
}

/// Spinning waits off (see the header), unless the caller chose a spin.
fn spin_off(command: &mut Command) {
    if std::env::var_os("WASMPOOL_SPIN_US").is_none() {
        command.env("WASMPOOL_SPIN_US", "0");
    }
}

/// Runs `command` to its end; panics with its log on failure.
fn finish(command: Command, dir: &Path, tag: &str) -> u32 {
    try_finish(command, dir, tag).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `command` to its end: its pid, or what it and valgrind said when it failed.
fn try_finish(mut command: Command, dir: &Path, tag: &str) -> Result<u32, String> {
    let child = command
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for valgrind");
    if out.status.success() {
        return Ok(pid);
    }
    let log = std::fs::read_to_string(dir.join(format!("{tag}.{pid}.log"))).unwrap_or_default();
    Err(format!(
        "{command:?} failed ({}):\n{}\n{log}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// This bench binary in child mode for `scenario` with windows of `sizes` tasks.
fn child_args(command: &mut Command, scenario: Scenario, sizes: &[usize]) {
    command
        .arg(std::env::current_exe().expect("this bench's path"))
        .args(["--child", scenario.name()])
        .args(sizes.iter().map(ToString::to_string));
}

fn in_process(scenario: Scenario, n: usize, dir: &Path) -> Row {
    let tag = scenario.name();
    let mut command = callgrind(dir, tag);
    command
        .arg("--collect-atstart=yes")
        .arg(format!("--zero-before={WINDOW}"))
        .arg(format!("--dump-after={WINDOW}"));
    child_args(&mut command, scenario, &[n, 2 * n]);
    let pid = finish(command, dir, tag);
    let files = [1, 2].map(|part| vec![dir.join(format!("{tag}.{pid}.{part}"))]);
    Row::new(scenario, "all threads", n, files, "window Δ, one process")
}

fn process_pool(scenario: Scenario, n: usize, dir: &Path) -> [Row; 2] {
    let mut parent = Vec::new();
    let mut worker = Vec::new();
    for tasks in [n, 2 * n] {
        let tag = format!("{}-{tasks}", scenario.name());
        let mut command = callgrind(dir, &tag);
        command
            .arg("--trace-children=yes")
            .arg(format!("--zero-before={WINDOW}"))
            .arg(format!("--dump-after={WINDOW}"))
            .arg(format!("--dump-after={WORKER_LOOP}"));
        child_args(&mut command, scenario, &[tasks]);
        let pid = finish(command, dir, &tag);
        parent.push(vec![dir.join(format!("{tag}.{pid}.1"))]);
        worker.push(worker_dumps(dir, &tag, pid));
    }
    let row = |side, files: Vec<Vec<PathBuf>>, how| {
        Row::new(scenario, side, n, files.try_into().expect("two runs"), how)
    };
    [
        row("parent", parent, "window Δ, two processes"),
        row("worker", worker, "worker start..last task Δ"),
    ]
}

/// The worker's dumps made when [`WORKER_LOOP`] returned, in the run `tag` whose bench
/// process is `pid`. Each dump holds what ran since the one before, so together they hold
/// everything from the worker's start to the return after its last task. callgrind takes a
/// switch to a wasmtime fiber's stack for returns from the frames below it, so the loop
/// "returns" once per task too (and every task dumps); only the last return is real.
/// The dump at exit is left out: it comes after the channel closed, and a worker that is
/// slow to exit is killed by the pool.
fn worker_dumps(dir: &Path, tag: &str, pid: u32) -> Vec<PathBuf> {
    let bench = format!("{tag}.{pid}.");
    let dumps: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the output directory")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            let part = name
                .strip_prefix(&format!("{tag}."))
                .and_then(|rest| rest.split_once('.'));
            !name.starts_with(&bench)
                && part.is_some_and(|(_, n)| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    let workers: std::collections::HashSet<_> = dumps
        .iter()
        .filter_map(|p| {
            p.file_name()?
                .to_str()?
                .rsplit('.')
                .nth(1)
                .map(str::to_string)
        })
        .collect();
    assert!(
        workers.len() == 1,
        "the dumps of one worker for {tag} (is `{WORKER_LOOP}` still a function of its own?): {dumps:?}"
    );
    dumps
}

/// `lines` input lines `i, 1` in `dir`.
fn input_file(dir: &Path, lines: usize) -> PathBuf {
    let path = dir.join(format!("add-{lines}.txt"));
    let mut text = String::new();
    for i in 0..lines {
        let _ = writeln!(text, "{i}, 1");
    }
    std::fs::write(&path, text).expect("the input file");
    path
}

/// `wasmpool map` on `input`, printing into `output`, caching in `cache`; run by `runner`
/// (valgrind, strace) or, without one, directly.
fn map_command(runner: Option<Command>, input: &Path, output: &Path, cache: &Path) -> Command {
    let program = env!("CARGO_BIN_EXE_wasmpool");
    let mut command = match runner {
        Some(mut runner) => {
            runner.arg(program);
            runner
        }
        None => Command::new(program),
    };
    spin_off(&mut command);
    command
        .env("XDG_CACHE_HOME", cache)
        .args(["map", env!("WASMPOOL_FIXTURES_WASM"), "math.add"])
        .arg(input)
        .args([
            "-j",
            "1",
            "--pool",
            "thread",
            "--output",
            "json",
            "--no-progress",
        ])
        .stdout(std::fs::File::create(output).expect("the output file"));
    command
}

/// Checks that `map` printed one line per input line.
fn check_output(output: &Path, lines: usize) {
    let printed = std::fs::read_to_string(output).expect("map's output");
    assert_eq!(printed.lines().count(), lines, "one line per task");
}

fn cli_map(n: usize, dir: &Path) -> Row {
    // Warm the cache under valgrind: code compiled natively may use CPU features valgrind
    // does not offer (AVX-512), and the cache would then compile again in the measured run.
    let cache = dir.join("cache-valgrind");
    let output = dir.join("map-output.txt");
    let warm = input_file(dir, 10);
    let command = map_command(Some(callgrind(dir, "cli-warm-up")), &warm, &output, &cache);
    if let Err(e) = try_finish(command, dir, "cli-warm-up") {
        // An instance pool too large for valgrind's address space (see SLOTS) shows here.
        eprintln!("instructions: `wasmpool map` cannot run under valgrind: {e}");
        let why = if e.contains("memory pool") {
            "not measurable: its instance pool cannot be reserved under valgrind"
        } else {
            "not measurable: it fails under valgrind (see above)"
        };
        return Row {
            scenario: Scenario::CliMap,
            side: "whole process",
            files: [Vec::new(), Vec::new()],
            ir: None,
            how: why.to_string(),
            tasks: n,
        };
    }
    check_output(&output, 10);

    let files = [n, 2 * n].map(|lines| {
        let tag = format!("cli-map-{lines}");
        let input = input_file(dir, lines);
        let command = map_command(Some(callgrind(dir, &tag)), &input, &output, &cache);
        let pid = finish(command, dir, &tag);
        check_output(&output, lines);
        vec![dir.join(format!("{tag}.{pid}"))]
    });
    Row::new(
        Scenario::CliMap,
        "whole process",
        n,
        files,
        "whole process Δ",
    )
}

/// The instruction total of a callgrind output file.
fn totals(file: &Path) -> u64 {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    field("totals:")
        .or_else(|| field("summary:"))
        .unwrap_or_else(|| panic!("no totals in {}", file.display()))
}

// ---------------------------------------------------------------------------------------
// --profile: per function, the same difference.

/// What a callgrind file says about each function.
#[derive(Default, Clone, Copy)]
struct Cost {
    /// Instructions in the function itself.
    own: u64,
    /// Instructions in it and in what it called.
    inclusive: u64,
    /// Times it was called.
    calls: u64,
}

/// [`costs`] of several dumps, added up.
fn costs_of(files: &[PathBuf]) -> HashMap<String, Cost> {
    let mut out: HashMap<String, Cost> = HashMap::new();
    for file in files {
        for (name, cost) in costs(file) {
            let sum = out.entry(name).or_default();
            sum.own += cost.own;
            sum.inclusive += cost.inclusive;
            sum.calls += cost.calls;
        }
    }
    out
}

/// Reads a callgrind output file (name compression, line positions, one event: Ir).
fn costs(file: &Path) -> HashMap<String, Cost> {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let mut names: HashMap<String, String> = HashMap::new();
    let mut name = |spec: &str| -> String {
        // `(id) name` defines, `(id)` refers, a bare name is itself.
        match spec.strip_prefix('(').and_then(|s| s.split_once(')')) {
            Some((id, rest)) => {
                let rest = rest.trim_start();
                if !rest.is_empty() {
                    names.insert(id.to_string(), rest.to_string());
                }
                names.get(id).cloned().unwrap_or_default()
            }
            None => spec.to_string(),
        }
    };
    let mut out: HashMap<String, Cost> = HashMap::new();
    let mut current = String::new();
    let mut callee = String::new();
    let mut in_call = false;
    for line in text.lines() {
        if let Some(spec) = line.strip_prefix("fn=") {
            current = name(spec);
        } else if let Some(spec) = line.strip_prefix("cfn=") {
            callee = name(spec);
        } else if let Some(rest) = line.strip_prefix("calls=") {
            let count: u64 = rest
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            out.entry(callee.clone()).or_default().calls += count;
            in_call = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
            let ir: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let cost = out.entry(current.clone()).or_default();
            cost.inclusive += ir;
            if !std::mem::take(&mut in_call) {
                cost.own += ir;
            }
        }
    }
    out
}

/// Per task: `(2N − N) / N` for every field.
fn per_task(row: &Row, n: usize) -> Vec<(String, [f64; 3])> {
    let [small, large] = row.files.each_ref().map(|f| costs_of(f));
    let zero = Cost::default();
    let mut out: Vec<(String, [f64; 3])> = large
        .iter()
        .map(|(name, big)| {
            let little = small.get(name).unwrap_or(&zero);
            let d = |a: u64, b: u64| (a as f64 - b as f64) / n as f64;
            (
                name.clone(),
                [
                    d(big.inclusive, little.inclusive),
                    d(big.own, little.own),
                    d(big.calls, little.calls),
                ],
            )
        })
        .collect();
    out.sort_by(|a, b| b.1[0].total_cmp(&a.1[0]));
    out
}

/// The allocator's and the kernel-facing libc functions, summed by family.
const FAMILIES: &[(&str, &[&str])] = &[
    ("malloc", &["malloc", "__libc_malloc"]),
    ("free", &["free", "__libc_free", "cfree"]),
    ("realloc", &["realloc", "__libc_realloc"]),
    ("calloc", &["calloc", "__libc_calloc"]),
    (
        "aligned alloc",
        &[
            "posix_memalign",
            "aligned_alloc",
            "memalign",
            "__libc_memalign",
            "_mid_memalign",
        ],
    ),
    (
        "memcpy/memmove",
        &[
            "__memcpy_avx_unaligned_erms",
            "__memmove_avx_unaligned_erms",
            "memcpy",
            "memmove",
        ],
    ),
    ("memset", &["__memset_avx2_unaligned_erms", "memset"]),
];

fn print_profile(row: &Row, dir: &Path) {
    let costs = per_task(row, row.tasks);
    let total = row.per_task().unwrap_or(f64::NAN);
    // Every function, for grep: inclusive, self, calls per task.
    let tsv = dir.join(format!(
        "per-task-{}-{}.tsv",
        row.scenario.name(),
        row.side.replace(' ', "-")
    ));
    let mut text = String::from("inclusive\tself\tcalls\tfunction\n");
    for (name, [inclusive, own, calls]) in &costs {
        let _ = writeln!(text, "{inclusive:.0}\t{own:.0}\t{calls:.2}\t{name}");
    }
    std::fs::write(&tsv, text).expect("the per-task table");
    // The trunk of the stack (main, the thread's entry, the loop) says nothing: skip it.
    let trunk = costs.iter().filter(|(_, c)| c[0] >= 0.99 * total).count();
    println!(
        "\n### {} ({}): {} Ir/task; top {TOP} by inclusive Ir per task\n",
        row.scenario.name(),
        row.side,
        common::thousands(total.round() as u64)
    );
    println!(
        "({trunk} frames of the stack's trunk at ≥ 99% left out; every function: {})\n",
        tsv.display()
    );
    println!("| inclusive | % | self | calls/task | function |\n|---:|---:|---:|---:|---|");
    for (name, [inclusive, own, calls]) in costs.iter().skip(trunk).take(TOP) {
        println!(
            "| {} | {:.1} | {} | {:.2} | `{}` |",
            common::thousands(inclusive.round().max(0.0) as u64),
            100.0 * inclusive / total,
            common::thousands(own.round().max(0.0) as u64),
            calls,
            short(name),
        );
    }
    let mut by_self = costs.clone();
    by_self.sort_by(|a, b| b.1[1].total_cmp(&a.1[1]));
    println!(
        "\nTop 15 by self Ir per task:\n\n| self | % | calls/task | function |\n|---:|---:|---:|---|"
    );
    for (name, [_, own, calls]) in by_self.iter().take(15) {
        println!(
            "| {} | {:.1} | {:.2} | `{}` |",
            common::thousands(own.round().max(0.0) as u64),
            100.0 * own / total,
            calls,
            short(name),
        );
    }
    let index: HashMap<&str, [f64; 3]> = costs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let mut families = String::new();
    for (family, members) in FAMILIES {
        let [calls, own] = members
            .iter()
            .fold([0.0, 0.0], |[c, o], m| match index.get(m) {
                Some([_, own, calls]) => [c + calls, o + own],
                None => [c, o],
            });
        let _ = write!(
            families,
            "{family}: {calls:.1} calls ({} Ir self); ",
            common::thousands(own.round().max(0.0) as u64)
        );
    }
    println!("\nPer task: {families}");
    if let [file] = &row.files[1][..] {
        println!("callgrind_annotate --inclusive=yes {}", file.display());
    }
}

/// A function name without its generic arguments' paths, at most 140 characters.
fn short(name: &str) -> String {
    let mut out: String = name.chars().take(140).collect();
    if out.len() < name.len() {
        out.push('…');
    }
    out.replace('|', "\\|")
}

// ---------------------------------------------------------------------------------------
// --strace: system calls per task, natively (not under valgrind), same difference. Calls
// that synchronise threads (futex, sched_yield) depend on timing: they vary from run to run.

fn print_syscalls(scenario: Scenario, n: usize, dir: &Path) {
    let counts = [n, 2 * n].map(|tasks| strace_counts(scenario, tasks, dir));
    let mut rows: Vec<(String, f64)> = counts[1]
        .iter()
        .map(|(name, big)| {
            let small = counts[0].get(name).copied().unwrap_or(0);
            (name.clone(), (*big as f64 - small as f64) / n as f64)
        })
        .filter(|(_, per)| per.abs() >= 0.05)
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = rows.iter().map(|r| r.1).sum();
    let list: Vec<String> = rows.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
    println!(
        "\nsyscalls/task, {} (strace -c -f, all processes): {total:.1}: {}",
        scenario.name(),
        list.join(", ")
    );
}

/// `strace -c -f` of the scenario's run with `tasks` tasks: calls per system call.
fn strace_counts(scenario: Scenario, tasks: usize, dir: &Path) -> HashMap<String, u64> {
    let report = dir.join(format!("strace-{}-{tasks}.txt", scenario.name()));
    let mut command = Command::new("strace");
    command.args(["-c", "-f", "-o"]).arg(&report);
    spin_off(&mut command);
    let mut command = match scenario.kind() {
        Kind::Cli => {
            let cache = dir.join("cache-native");
            let output = dir.join("map-output-native.txt");
            // Warm the native cache once (a plain run, not counted).
            if !cache.exists() {
                let warm = input_file(dir, 10);
                let status = map_command(None, &warm, &output, &cache).status();
                assert!(
                    status.is_ok_and(|s| s.success()),
                    "wasmpool map (warm-up) failed"
                );
            }
            map_command(Some(command), &input_file(dir, tasks), &output, &cache)
        }
        _ => {
            child_args(&mut command, scenario, &[tasks]);
            command
        }
    };
    let status = command.status().expect("strace");
    assert!(status.success(), "strace run of {} failed", scenario.name());
    let text = std::fs::read_to_string(&report).expect("strace's report");
    // `% time  seconds  usecs/call  calls  [errors]  syscall`
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let name = *cols.last()?;
            let calls = cols.get(3)?.parse().ok()?;
            (name != "total").then(|| (name.to_string(), calls))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------

fn tool_present(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
