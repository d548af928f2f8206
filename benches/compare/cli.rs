//! `wasmpool map` against the library in the same run: N lines of `math.add(i, 1)`, the
//! command line process timed whole (start, loading the component from the cache, reading,
//! parsing, running, printing `--output json` into a pipe that the bench drains), beside
//! the library's own rate for the same calls (built beforehand; every call submitted, then
//! every result) on a pool like the command line's (2 workers, fresh instances, task output
//! captured). Also the peak RSS of `map` over a short and a long input: flat means the
//! window, not the input, bounds its memory.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wasmpool::{Call, Executor, InstancePolicy, OutputMode, ProcessPoolExecutor};

use crate::{common, turns};

/// The workload of the rows (one for both pools).
pub const WORKLOAD: &str =
    "`map` on the command line vs the library: N × math.add(i, 1), 2 workers, fresh instance";
/// The workload of the memory rows.
pub const MEMORY: &str = "`wasmpool map` peak RSS, math.add(i, 1), thread pool of 2, --output json";

/// The function every line calls.
const FUNCTION: &str = "math.add";
/// Lines of the warm-up run (it also compiles the component into the cache).
const WARM_UP: usize = 2000;

/// What the command line runs on.
#[derive(Clone, Copy)]
enum PoolKind {
    Thread,
    Process,
}

impl PoolKind {
    fn arg(self) -> &'static str {
        match self {
            PoolKind::Thread => "thread",
            PoolKind::Process => "process",
        }
    }
}

/// A finished `map`: how long it took and its peak RSS.
struct MapRun {
    seconds: f64,
    peak_rss_kib: Option<u64>,
}

/// `lines` lines `i, 1`, in a file of `dir`.
fn input_file(dir: &Path, lines: usize) -> std::path::PathBuf {
    let path = dir.join(format!("add-{lines}.txt"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("input file"));
    for i in 0..lines {
        writeln!(file, "{i}, 1").expect("write input");
    }
    file.flush().expect("write input");
    path
}

/// Runs `wasmpool map` on `input` once and checks that it printed `lines` results.
fn run_map(cache: &Path, input: &Path, lines: usize, pool: PoolKind) -> MapRun {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmpool"))
        .env("XDG_CACHE_HOME", cache)
        .args(["map", env!("WASMPOOL_FIXTURES_WASM"), FUNCTION])
        .args([
            "-j",
            "2",
            "--pool",
            pool.arg(),
            "--output",
            "json",
            "--no-progress",
        ])
        .arg(input)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn wasmpool map");
    let pid = child.id();
    // VmHWM only grows: the last reading before the exit is the peak, within one interval.
    let sampler = std::thread::spawn(move || {
        let mut peak = None;
        while let Some(kib) = peak_rss_kib(pid) {
            peak = Some(kib);
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    });
    let stdout = child.stdout.take().expect("its stdout");
    let mut printed = 0usize;
    for line in BufReader::new(stdout).split(b'\n') {
        line.expect("read map's output");
        printed += 1;
    }
    let status = child.wait().expect("wait for map");
    let seconds = started.elapsed().as_secs_f64();
    assert!(status.success(), "wasmpool map failed: {status}");
    assert_eq!(printed, lines, "wasmpool map printed one line per task");
    MapRun {
        seconds,
        peak_rss_kib: sampler.join().ok().flatten(),
    }
}

/// The `VmHWM` of process `pid` in KiB; `None` once it has exited.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `map`'s rate as a share of the library's on one pool, over rounds taken in turns.
pub struct MapShare {
    /// The `map` row's runner.
    pub runner: String,
    pub paired: turns::Paired,
}

/// The rows: for each pool, the library's rate and `map`'s, taken in turns for
/// [`turns::ROUNDS`] rounds after a warm-up (the rows show each side's best round; the
/// share is the median of the rounds' ratios), with `lines` tasks; then `map`'s peak RSS on
/// `lines / 2` and on `long` lines.
pub fn rows(lines: usize, long: usize) -> (Vec<crate::Row>, Vec<MapShare>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache");
    let input = input_file(dir.path(), lines);
    let warm_up = input_file(dir.path(), WARM_UP);
    let component = common::fixtures();
    let calls: Vec<Call> = (0..lines)
        .map(|i| {
            component
                .call_wave(&format!("{FUNCTION}({i}, 1)"))
                .expect("call")
        })
        .collect();
    let mut rows = Vec::new();
    let mut shares = Vec::new();
    for (kind, name) in [(PoolKind::Thread, "thread"), (PoolKind::Process, "process")] {
        // The library and `map` take turns on the same pool kind, after a warm-up of each.
        let take_turns = |pool: &dyn Executor| {
            let mut library = library_rate(pool, &calls);
            run_map(&cache, &warm_up, WARM_UP, kind);
            let mut map = || lines as f64 / run_map(&cache, &input, lines, kind).seconds;
            let mut rates = turns::in_turns(&mut [&mut library, &mut map], turns::ROUNDS);
            let map_rates = rates.pop().unwrap_or_default();
            (rates.pop().unwrap_or_default(), map_rates)
        };
        let (library_rates, map_rates) = match kind {
            PoolKind::Thread => {
                let pool = wasmpool::ThreadPoolExecutor::builder()
                    .workers(2)
                    .output(capture())
                    .instance_policy(InstancePolicy::Fresh)
                    .build()
                    .expect("thread pool");
                take_turns(&pool)
            }
            PoolKind::Process => match ProcessPoolExecutor::builder()
                .workers(2)
                .worker_program(env!("CARGO_BIN_EXE_wasmpool"))
                .output(capture())
                .instance_policy(InstancePolicy::Fresh)
                .build()
            {
                Ok(pool) => take_turns(&pool),
                Err(e) => {
                    eprintln!("no process pool: {e}");
                    continue;
                }
            },
        };
        let library = format!("library, {name} pool: submit every call, then every result");
        let runner = format!("wasmpool map, {name} pool, --output json, whole process");
        rows.push(crate::row(
            WORKLOAD,
            &library,
            turns::best(&library_rates),
            crate::Unit::Rate,
        ));
        rows.push(crate::Row {
            versus: vec![leak(library)],
            ..crate::row(
                WORKLOAD,
                &runner,
                turns::best(&map_rates),
                crate::Unit::Rate,
            )
        });
        if let Some(paired) = turns::Paired::of(&map_rates, &library_rates) {
            shares.push(MapShare { runner, paired });
        }
    }
    for n in [lines / 2, long] {
        let input = input_file(dir.path(), n);
        let run = run_map(&cache, &input, n, PoolKind::Thread);
        rows.push(crate::opt_row(
            MEMORY,
            &format!("{n} lines"),
            run.peak_rss_kib.map(|kib| kib as f64 / 1024.0),
            crate::Unit::MiB,
        ));
        std::fs::remove_file(&input).expect("remove the input");
    }
    (rows, shares)
}

/// Output kept per task, as `map` keeps it.
fn capture() -> OutputMode {
    OutputMode::Capture { limit: 1 << 20 }
}

/// A runner of the library's rate: tasks/s of `calls` submitted all, then awaited (after
/// a warm-up, made here).
fn library_rate<'a, E: Executor + ?Sized>(
    pool: &'a E,
    calls: &'a [Call],
) -> impl FnMut() -> f64 + 'a {
    common::run_all(pool, &calls[..calls.len().min(WARM_UP)]);
    move || {
        let started = Instant::now();
        common::run_all(pool, calls);
        calls.len() as f64 / started.elapsed().as_secs_f64()
    }
}

/// A runner name that lives as long as the table (`Row::versus` holds `&'static str`).
fn leak(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}
