//! Soak: a million tasks through each pool (and instance policy), with the host's resources
//! sampled as they run. Not criterion and not run by CI: run it by hand and quote the table.
//!
//! ```text
//! cargo bench --bench soak                 # 1,000,000 tasks per configuration
//! cargo bench --bench soak -- 200000       # fewer
//! cargo bench --bench soak -- 20000 "thread pool, reuse"   # one configuration
//! ```
//!
//! (One configuration with few tasks is also what `valgrind --tool=callgrind` profiles.)
//!
//! For each configuration it prints RSS (this process, and this process plus its worker
//! processes), threads, open file descriptors and child processes at the start (after a
//! warm-up of 10,000 tasks) and after every tenth of the run, then fails (exit status 1) if
//! anything grew beyond noise: RSS by more than 8 MiB or 10 %, threads, descriptors or
//! children by any amount. Tasks are fed through `map_buffered`, so at most 256 are in
//! flight and the input is never held in memory.

mod common;
#[path = "../tests/support/procfs.rs"]
mod procfs;

use std::fs;
use std::process::ExitCode;
use std::time::Instant;

use wasmpool::{Call, Executor, InstancePolicy, PoolingConfig};

use procfs::children_of;

use common::{REUSE, fixtures, fixtures_with, process_pool, thread_pool};

const WARM_UP: usize = 10_000;
const IN_FLIGHT: usize = 256;

/// What one sample holds.
#[derive(Debug, Clone, Copy)]
struct Sample {
    tasks: usize,
    rss_kib: u64,
    total_rss_kib: u64,
    threads: u64,
    fds: usize,
    children: usize,
}

/// `VmRSS` / `Threads` of a process, from /proc.
fn status_field(pid: u32, field: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn sample(tasks: usize) -> Sample {
    let me = std::process::id();
    let kids = children_of(me);
    let rss = status_field(me, "VmRSS:");
    let kids_rss: u64 = kids.iter().map(|&pid| status_field(pid, "VmRSS:")).sum();
    Sample {
        tasks,
        rss_kib: rss,
        total_rss_kib: rss + kids_rss,
        threads: status_field(me, "Threads:"),
        fds: fs::read_dir("/proc/self/fd").map_or(0, Iterator::count),
        children: kids.len(),
    }
}

/// Runs `n` tasks on a pool, calling the progress callback with the count done after each.
type Runner<'a> = &'a dyn Fn(usize, &mut dyn FnMut(usize));

/// Runs `n` calls through `pool`, sampling every tenth; returns the samples and tasks/s.
fn soak(pool: Runner<'_>, n: usize) -> (Vec<Sample>, f64) {
    pool(WARM_UP, &mut |_| {});
    let mut samples = vec![sample(0)];
    let step = (n / 10).max(1);
    let start = Instant::now();
    pool(n, &mut |done| {
        if done % step == 0 {
            samples.push(sample(done));
        }
    });
    let rate = n as f64 / start.elapsed().as_secs_f64();
    (samples, rate)
}

/// Feeds `n` copies of `call` through `map_buffered`, checking every result and calling
/// `progress` with the count done after each.
fn drive<E: Executor>(pool: &E, call: &Call, n: usize, progress: &mut dyn FnMut(usize)) {
    let calls = std::iter::repeat_n(call.clone(), n);
    for (i, outcome) in pool.map_buffered(calls, IN_FLIGHT).enumerate() {
        if let Err(e) = outcome {
            panic!("task {i} failed: {e}");
        }
        progress(i + 1);
    }
}

fn grew(first: &Sample, last: &Sample) -> Vec<String> {
    let mut problems = Vec::new();
    let allowed = |kib: u64| kib + (8 * 1024).max(kib / 10);
    if last.rss_kib > allowed(first.rss_kib) {
        problems.push(format!("RSS {} -> {} KiB", first.rss_kib, last.rss_kib));
    }
    if last.total_rss_kib > allowed(first.total_rss_kib) {
        let (a, b) = (first.total_rss_kib, last.total_rss_kib);
        problems.push(format!("RSS with workers {a} -> {b} KiB"));
    }
    if last.threads > first.threads {
        problems.push(format!("threads {} -> {}", first.threads, last.threads));
    }
    if last.fds > first.fds {
        problems.push(format!("descriptors {} -> {}", first.fds, last.fds));
    }
    if last.children > first.children {
        problems.push(format!("children {} -> {}", first.children, last.children));
    }
    problems
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; the first number, if any, is the task count.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = args
        .iter()
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(1_000_000);
    // Any other argument but cargo's `--bench` picks the configurations whose name has it.
    let only: Vec<&String> = args
        .iter()
        .filter(|a| a.parse::<usize>().is_err() && !a.starts_with("--"))
        .collect();
    // Under valgrind, which cannot reserve the default pool's terabytes of address space:
    // `SOAK_POOL_INSTANCES=4`.
    let component = match std::env::var("SOAK_POOL_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(instances) => fixtures_with(Some(PoolingConfig::default().instances(instances))),
        None => fixtures(),
    };
    let call = component.call_wave("add(2, 3)").expect("the call");
    let mut failed = false;
    let configs: [(&str, bool, InstancePolicy); 4] = [
        ("thread pool, fresh", false, InstancePolicy::Fresh),
        ("thread pool, reuse", false, REUSE),
        ("process pool, fresh", true, InstancePolicy::Fresh),
        ("process pool, reuse", true, REUSE),
    ];
    println!("soak: {n} tasks per configuration, 2 workers, {IN_FLIGHT} in flight");
    for (name, process, policy) in configs {
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        let (samples, rate) = if process {
            let Some(pool) = process_pool(2, policy) else {
                return ExitCode::FAILURE;
            };
            let idle = sample(0);
            println!(
                "\n{name}: idle pool of 2 before any task: this process {} KiB, with its \
                 workers {} KiB ({:.1} MiB)",
                idle.rss_kib,
                idle.total_rss_kib,
                idle.total_rss_kib as f64 / 1024.0
            );
            soak(&|n, progress| drive(&pool, &call, n, progress), n)
        } else {
            let pool = thread_pool(2, policy);
            soak(&|n, progress| drive(&pool, &call, n, progress), n)
        };
        println!("\n{name}: {rate:.0} tasks/s");
        println!("  tasks      RSS KiB  +workers KiB  threads  fds  children");
        for s in &samples {
            println!(
                "  {:>8}  {:>9}  {:>12}  {:>7}  {:>3}  {:>8}",
                s.tasks, s.rss_kib, s.total_rss_kib, s.threads, s.fds, s.children
            );
        }
        let (first, last) = (samples[0], samples[samples.len() - 1]);
        for problem in grew(&first, &last) {
            println!("  GREW: {problem}");
            failed = true;
        }
    }
    let left = children_of(std::process::id());
    if !left.is_empty() {
        println!("\nGREW: worker processes outlived their pools: {left:?}");
        failed = true;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
