//! The side-by-side comparison, in one run: the same workloads through wasmpool, through a
//! raw wasmtime loop on the same engine (the physical limit of the approach: new store +
//! instantiate + call + drop, no pool), through Python's `concurrent.futures`
//! (`compare.py` beside this file, when `python3` is on the PATH), and across processes
//! over a network: wasmpool's cluster executor on a loopback NATS JetStream server with two
//! `wasmpool worker -j 1` processes ([`cluster`]; skipped without a `nats-server`), Dask
//! distributed and Ray (by `compare.py`, when its interpreter can import them). Prints one
//! table and writes `benches/RESULTS.md` with the date and the machine.
//!
//! ```sh
//! cargo bench --bench compare                  # optimised (the numbers to quote)
//! cargo bench --profile dev --bench compare    # quick: wasmtime is optimised in dev too
//! cargo bench --bench compare -- --quick       # fewer tasks per measurement
//! cargo bench --bench compare -- --no-write    # print only, leave RESULTS.md alone
//! cargo bench --bench compare -- --only cli    # only `wasmpool map` vs the library; print only
//! cargo bench --bench compare -- --only heavy  # only the Python guest, fresh vs reuse; print only
//! cargo bench --bench compare -- --only pools  # no cluster, `map` or heavy-guest rows; print only
//! WASMPOOL_BENCH_PYTHON=/path/to/venv/bin/python cargo bench --bench compare  # Dask, Ray
//! ```
//!
//! The Python side runs with `$WASMPOOL_BENCH_PYTHON` (default `python3`); the Dask and
//! Ray rows need `dask[distributed]` and `ray` installed for it. The cluster's server is
//! `$WASMPOOL_NATS_SERVER`, else `nats-server` on PATH, else `.ci/venv/bin/nats-server`.
//!
//! Not criterion: both sides follow one [`Plan`] (the same task counts per workload; rates
//! the best of three after a warm-up, latencies the median, times the least of three),
//! which is enough for ratios measured side by side in one run. The rates whose ratios are
//! goals (the fresh-instance rates of the thread pool, the process pool and the raw loop;
//! the process pool's chunked reuse and Python's `map(chunksize=256)`, the latter from a
//! `compare.py --serve` process; `wasmpool map` and the library) are taken in turns, seven
//! rounds, and each goal is judged on the median of its rounds' ratios ([`turns`]); their
//! rows show the best round.

mod cli;
mod cluster;
#[path = "../common/mod.rs"]
mod common;
mod heavy_guest;
#[path = "../../tests/support/nats.rs"]
mod nats;
mod python_turns;
mod turns;

use std::fmt::Write as _;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmpool::{Call, Executor, InstancePolicy, PoolingConfig};

/// One line of the table.
struct Row {
    workload: &'static str,
    runner: String,
    value: Option<f64>,
    unit: Unit,
    /// The row this one is compared with (its `runner` in the same workload), if any.
    versus: Vec<&'static str>,
}

#[derive(Clone, Copy, PartialEq)]
enum Unit {
    /// Tasks per second: more is better.
    Rate,
    /// Microseconds: less is better.
    Micros,
    /// Seconds: less is better.
    Seconds,
    /// Mebibytes: less is better.
    MiB,
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::Rate if v >= 1e6 => format!("{:.2} M tasks/s", v / 1e6),
            Unit::Rate if v < 1e3 => format!("{v:.0} tasks/s"),
            Unit::Rate => format!("{:.1} k tasks/s", v / 1e3),
            Unit::Micros => format!("{v:.1} µs"),
            Unit::Seconds => format!("{v:.3} s"),
            Unit::MiB => format!("{v:.1} MiB"),
        }
    }
}

struct Args {
    quick: bool,
    write: bool,
    /// `--only cli`: only the rows of `wasmpool map` against the library, printed.
    only_cli: bool,
    /// `--only heavy`: only the heavy guest's rows (fresh against reuse), printed.
    only_heavy: bool,
    /// `--only pools`: the pools, raw wasmtime and Python only (no cluster, `map` or heavy
    /// guest rows), printed.
    only_pools: bool,
}

/// How many tasks each measurement runs, on both sides. The same plan goes to `compare.py`
/// as JSON, so Python runs the same counts under the same repetition rule: rates are the
/// best of [`REPEAT`] runs after a warm-up, round trips the median, times the least of
/// [`REPEAT`].
#[derive(Clone, Copy)]
struct Plan {
    repeat: usize,
    rates: Rates,
    round_trip: RoundTrips,
    fib: Fib,
    /// Lines of `wasmpool map` timed against the library, and of its long memory run.
    cli_lines: usize,
    cli_long: usize,
}

#[derive(Clone, Copy)]
struct Rates {
    fresh: Counts,
    reused: Counts,
}

/// Task counts of one trivial-task workload: unchunked on a thread pool, unchunked on a
/// process pool, and through `map` with chunks of [`CHUNK`](common::CHUNK).
#[derive(Clone, Copy)]
struct Counts {
    thread: usize,
    process: usize,
    map256: usize,
}

#[derive(Clone, Copy)]
struct RoundTrips {
    thread: usize,
    process: usize,
    /// The pause before each round trip of the idle rows: long enough for every thread of
    /// both pools to stop spinning and park.
    gap_ms: f64,
}

#[derive(Clone, Copy)]
struct Fib {
    count: usize,
    n: u32,
}

const REPEAT: usize = 3;

/// The trivial-task workloads, with a fresh instance per task and with instances reused.
const FRESH: &str = "trivial task, fresh instance, 2 workers";
const REUSED: &str = "trivial task, instance reused, 2 workers";

/// The runners of the distributed rows (rates and round trips alike).
const CLUSTER: &str = "wasmpool cluster";
const CLUSTER_MAP256: &str = "wasmpool cluster, map_chunked 256";
const DASK: &str = "Dask distributed, LocalCluster(2 processes × 1 thread)";
const RAY: &str = "Ray, ray.init(num_cpus=2)";

impl Plan {
    fn new(scale: usize) -> Plan {
        Plan {
            repeat: REPEAT,
            rates: Rates {
                fresh: Counts {
                    thread: 20_000 / scale,
                    process: 20_000 / scale,
                    map256: 20_000 / scale,
                },
                reused: Counts {
                    thread: 200_000 / scale,
                    process: 50_000 / scale,
                    map256: 200_000 / scale,
                },
            },
            round_trip: RoundTrips {
                thread: 2000 / scale,
                process: 1000 / scale,
                gap_ms: 1.0,
            },
            fib: Fib { count: 64, n: 25 },
            cli_lines: 200_000 / scale,
            cli_long: 1_000_000 / scale,
        }
    }

    /// The plan as `compare.py` reads it.
    fn to_json(self) -> serde_json::Value {
        let counts = |c: Counts| serde_json::json!({"thread": c.thread, "process": c.process, "map256": c.map256});
        serde_json::json!({
            "repeat": self.repeat,
            "rates": {"fresh": counts(self.rates.fresh), "reused": counts(self.rates.reused)},
            "round_trip": {
                "thread": self.round_trip.thread,
                "process": self.round_trip.process,
                "gap_ms": self.round_trip.gap_ms,
            },
            "fib": {"count": self.fib.count, "n": self.fib.n},
        })
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let args = Args {
        quick: argv.iter().any(|a| a == "--quick"),
        write: !argv.iter().any(|a| a == "--no-write"),
        only_cli: argv.windows(2).any(|w| w[0] == "--only" && w[1] == "cli"),
        only_heavy: argv.windows(2).any(|w| w[0] == "--only" && w[1] == "heavy"),
        only_pools: argv.windows(2).any(|w| w[0] == "--only" && w[1] == "pools"),
    };
    let plan = Plan::new(if args.quick { 4 } else { 1 });
    if args.only_cli {
        let (rows, shares) = cli::rows(plan.cli_lines, plan.cli_long);
        println!("{}{}", render(&rows), cli_goals(&rows, &shares));
        return;
    }
    if args.only_heavy {
        println!("{}", render(&heavy_guest::rows(args.quick)));
        return;
    }
    let mut rows = Vec::new();
    let python = python(&plan);
    let py_value = |key: &str| {
        let mut value = python.as_ref()?;
        for part in key.split('.') {
            value = value.get(part)?;
        }
        Some(value)
    };
    let py = |key: &str| py_value(key)?.as_f64();
    // Dask and Ray: a version when measured, else why not.
    let distributed: Vec<(&str, &str, Result<String, String>)> = [("Dask", "dask"), ("Ray", "ray")]
        .into_iter()
        .map(|(name, key)| {
            let status = match (
                py_value(&format!("{key}.version")).and_then(|v| v.as_str()),
                py_value(&format!("{key}.skipped")).and_then(|v| v.as_str()),
            ) {
                (Some(version), _) => Ok(version.to_string()),
                (None, Some(why)) => Err(why.to_string()),
                (None, None) => Err("compare.py did not run".to_string()),
            };
            if let Err(why) = &status {
                eprintln!("the {name} rows are skipped: {why}");
            }
            (name, key, status)
        })
        .collect();
    let measured = |key: &str| distributed.iter().any(|(_, k, s)| *k == key && s.is_ok());

    let component = common::fixtures();
    let raw = Arc::new(common::Raw::new(component.runtime()));
    let noop = |n: usize| common::calls(&component, "noop()", n);

    // --- Trivial tasks, fresh instance per task, 2 workers ---
    let w = FRESH;
    let counts = plan.rates.fresh;
    eprintln!("{w} ...");
    // Items 2 and 3 of the performance goals are ratios among the thread pool, the process
    // pool and the raw loop: measured in turns.
    let thread_pool = common::thread_pool(2, InstancePolicy::Fresh);
    let process_pool = common::process_pool(2, InstancePolicy::Fresh);
    let (thread_calls, process_calls) = (noop(counts.thread), noop(counts.process));
    let fresh_rates = {
        let mut thread_rate = rate_of(&thread_pool, &thread_calls, 1);
        let mut raw_rate = || raw.fresh_rate(2, counts.thread / 2);
        let mut process_rate = process_pool
            .as_ref()
            .map(|pool| rate_of(pool, &process_calls, 1));
        let mut runners: Vec<&mut dyn FnMut() -> f64> = vec![&mut thread_rate, &mut raw_rate];
        if let Some(rate) = &mut process_rate {
            runners.push(rate);
        }
        turns::in_turns(&mut runners, turns::ROUNDS)
    };
    let (thread_best, raw_fresh_best) =
        (turns::best(&fresh_rates[0]), turns::best(&fresh_rates[1]));
    let process_best = fresh_rates.get(2).map(|r| turns::best(r));
    let mut in_turns = GoalsInTurns {
        item2: turns::Paired::of(&fresh_rates[0], &fresh_rates[1]),
        item3: fresh_rates
            .get(2)
            .and_then(|process| turns::Paired::of(process, &fresh_rates[0])),
        item4: None,
    };
    drop(thread_pool);
    rows.push(Row {
        versus: vec!["raw wasmtime, 2 threads", "Python ThreadPoolExecutor(2)"],
        ..row(w, "wasmpool thread pool", thread_best, Unit::Rate)
    });
    if let (Some(pool), Some(rate)) = (&process_pool, process_best) {
        rows.push(Row {
            versus: vec!["raw wasmtime, 2 threads", "Python ProcessPoolExecutor(2)"],
            ..row(w, "wasmpool process pool", rate, Unit::Rate)
        });
        rows.push(chunked_rate_row(
            w,
            "wasmpool process pool, map_chunked 256",
            pool,
            &noop(counts.map256),
            common::CHUNK,
            &["Python ProcessPoolExecutor(2).map, chunksize=256"],
        ));
    }
    drop(process_pool);
    // One server and two workers for every cluster row (stopped after the round trips).
    eprintln!(
        "starting nats-server and {} `wasmpool worker -j {}` ...",
        cluster::WORKERS,
        cluster::JOBS
    );
    let nats_cluster = if args.only_pools {
        None
    } else {
        cluster::Cluster::start()
    };
    rows.extend(cluster_rate_rows(
        w,
        nats_cluster.as_ref(),
        InstancePolicy::Fresh,
        &noop,
        counts,
    ));
    let pool = common::thread_pool(2, InstancePolicy::Fresh);
    rows.push(chunked_rate_row(
        w,
        "wasmpool thread pool, map_chunked 256",
        &pool,
        &noop(counts.map256),
        common::CHUNK,
        &["raw wasmtime, 2 threads"],
    ));
    drop(pool);
    rows.push(row(
        w,
        "raw wasmtime, 1 thread",
        best(|| raw.fresh_rate(1, counts.thread)),
        Unit::Rate,
    ));
    rows.push(row(
        w,
        "raw wasmtime, 2 threads",
        raw_fresh_best,
        Unit::Rate,
    ));
    let on_demand = Arc::new(common::Raw::new(common::fixtures_with(None).runtime()));
    rows.push(row(
        w,
        "raw wasmtime, 2 threads, no pooling",
        best(|| on_demand.fresh_rate(2, counts.thread / 2)),
        Unit::Rate,
    ));
    drop(on_demand);
    let no_keep = common::fixtures_with(Some(
        PoolingConfig::default()
            .memory_keep_resident(0)
            .table_keep_resident(0),
    ));
    let pool = common::thread_pool(2, InstancePolicy::Fresh);
    rows.push(rate_row(
        w,
        "wasmpool thread pool, keep_resident 0",
        &pool,
        &common::calls(&no_keep, "noop()", counts.thread),
        &[],
    ));
    drop(pool);
    rows.extend(python_rate_rows(w, "fresh", &py));
    rows.extend(distributed_rate_rows(w, "fresh", &py, &measured));

    // --- Trivial tasks, instance reuse, 2 workers ---
    let w = REUSED;
    let counts = plan.rates.reused;
    eprintln!("{w} ...");
    let pool = common::thread_pool(2, common::REUSE);
    rows.push(rate_row(
        w,
        "wasmpool thread pool",
        &pool,
        &noop(counts.thread),
        &["raw wasmtime, 2 threads", "Python ThreadPoolExecutor(2)"],
    ));
    drop(pool);
    let pool = common::thread_pool(2, common::REUSE);
    rows.push(chunked_rate_row(
        w,
        "wasmpool thread pool, map_chunked 256",
        &pool,
        &noop(counts.map256),
        common::CHUNK,
        &["raw wasmtime, 2 threads"],
    ));
    drop(pool);
    if let Some(pool) = common::process_pool(2, common::REUSE) {
        rows.push(rate_row(
            w,
            "wasmpool process pool",
            &pool,
            &noop(counts.process),
            &["Python ProcessPoolExecutor(2)"],
        ));
        // Item 4 in turns with Python's chunked map, when `compare.py --serve` runs.
        let chunked_calls = noop(counts.map256);
        let mut ours = rate_of(&pool, &chunked_calls, common::CHUNK);
        let rate = match python_server() {
            Some(mut python) => {
                let mut theirs = || python.map256_rate(counts.map256);
                let rates = turns::in_turns(&mut [&mut ours, &mut theirs], turns::ROUNDS);
                in_turns.item4 = turns::Paired::of(&rates[0], &rates[1]);
                turns::best(&rates[0])
            }
            None => best(ours),
        };
        rows.push(Row {
            versus: vec!["Python ProcessPoolExecutor(2).map, chunksize=256"],
            ..row(
                w,
                "wasmpool process pool, map_chunked 256",
                rate,
                Unit::Rate,
            )
        });
    }
    rows.extend(cluster_rate_rows(
        w,
        nats_cluster.as_ref(),
        common::REUSE,
        &noop,
        counts,
    ));
    rows.push(row(
        w,
        "raw wasmtime, 2 threads",
        best(|| raw.reused_rate(2, counts.thread / 2)),
        Unit::Rate,
    ));
    // The ceiling of a pool that keeps deadlines able to cut WASI waits short: wasmtime's
    // async call alone, no pool, no IPC.
    rows.push(Row {
        versus: vec![
            "raw wasmtime, 2 threads",
            "Python ProcessPoolExecutor(2).map, chunksize=256",
        ],
        ..row(
            w,
            "raw wasmtime, call_async, 2 threads",
            best(|| raw.reused_async_rate(2, counts.thread / 2)),
            Unit::Rate,
        )
    });
    rows.extend(python_rate_rows(w, "reused", &py));
    rows.extend(distributed_rate_rows(w, "reused", &py, &measured));

    // --- The command line against the library ---
    eprintln!("wasmpool map against the library ...");
    let mut map_shares = Vec::new();
    if !args.only_pools {
        let (cli_rows, shares) = cli::rows(plan.cli_lines, plan.cli_long);
        rows.extend(cli_rows);
        map_shares = shares;
        // --- A heavy guest (CPython), fresh against reuse: only with $WASMPOOL_PYTHON_GUEST ---
        rows.extend(heavy_guest::rows(args.quick));
    }

    // --- Round trips: on an idle pool (every thread parked), and back to back ---
    let idle = "submit→result round trip, idle pool of 2: 1 ms pause before each (median)";
    let busy = "submit→result round trip, back to back on a pool of 2 (median)";
    eprintln!("round trips ...");
    let call = component.call_wave("noop()").expect("call");
    let gap = Duration::from_secs_f64(plan.round_trip.gap_ms / 1000.0);
    for (name, policy, process_runner) in [
        (
            "fresh",
            InstancePolicy::Fresh,
            "wasmpool process pool, fresh",
        ),
        ("reuse", common::REUSE, "wasmpool process pool, reuse"),
    ] {
        let pool = common::thread_pool(2, policy);
        let runner = format!("wasmpool thread pool, {name}");
        let n = plan.round_trip.thread;
        for (w, gap) in [(idle, gap), (busy, Duration::ZERO)] {
            rows.push(Row {
                versus: vec!["Python ThreadPoolExecutor(2)"],
                ..row(
                    w,
                    &runner,
                    median_round_trip(&pool, &call, n, gap),
                    Unit::Micros,
                )
            });
        }
        drop(pool);
        if policy == InstancePolicy::Fresh {
            // The caller runs a task no worker has taken (`caller_helps`): no wake-up.
            let pool = common::helping_thread_pool(2, policy);
            for (w, gap) in [(idle, gap), (busy, Duration::ZERO)] {
                rows.push(Row {
                    versus: vec!["Python ThreadPoolExecutor(2)"],
                    ..row(
                        w,
                        "wasmpool thread pool, fresh, callers help",
                        median_round_trip(&pool, &call, n, gap),
                        Unit::Micros,
                    )
                });
            }
        }
        if let Some(pool) = common::process_pool(2, policy) {
            let runner = format!("wasmpool process pool, {name}");
            let n = plan.round_trip.process;
            for (w, gap) in [(idle, gap), (busy, Duration::ZERO)] {
                rows.push(Row {
                    versus: vec!["Python ProcessPoolExecutor(2)"],
                    ..row(
                        w,
                        &runner,
                        median_round_trip(&pool, &call, n, gap),
                        Unit::Micros,
                    )
                });
            }
        }
        // The cluster: the process pools' count of trips, compared with them and with
        // Dask's and Ray's (which have no instance policy: the same rows for both).
        let warm_up = vec![call.clone(); 20];
        if let Some(executor) = nats_cluster
            .as_ref()
            .and_then(|c| c.executor(policy, &warm_up))
        {
            let runner = format!("{CLUSTER}, {name}");
            let n = plan.round_trip.process;
            for (w, gap) in [(idle, gap), (busy, Duration::ZERO)] {
                rows.push(Row {
                    versus: vec![process_runner, DASK, RAY],
                    ..row(
                        w,
                        &runner,
                        median_round_trip(&executor, &call, n, gap),
                        Unit::Micros,
                    )
                });
            }
        }
    }
    // Every cluster row is taken: the workers and the server go (SIGTERM, reaped).
    let nats_version = nats_cluster.as_ref().map(|c| c.server_version.clone());
    drop(nats_cluster);
    for (w, when) in [(idle, "idle"), (busy, "busy")] {
        for (runner, side) in [
            ("Python ThreadPoolExecutor(2)", "thread"),
            ("Python ProcessPoolExecutor(2)", "process"),
        ] {
            let key = format!("{side}_round_trip_{when}_us");
            rows.push(opt_row(w, runner, py(&key), Unit::Micros));
        }
        for (runner, key) in [(DASK, "dask"), (RAY, "ray")] {
            if measured(key) {
                let value = py(&format!("{key}.round_trip_{when}_us"));
                rows.push(opt_row(w, runner, value, Unit::Micros));
            }
        }
    }

    // --- CPU-bound: a language comparison, not a pool comparison ---
    let w = "CPU-bound, 64 × fib(25): compiled wasm vs the CPython interpreter (a language comparison, not a pool comparison)";
    eprintln!("CPU-bound ...");
    let fibs = common::calls(&component, &format!("fib({})", plan.fib.n), plan.fib.count);
    for workers in [1, 2] {
        let pool = common::thread_pool(workers, InstancePolicy::Fresh);
        let versus = if workers == 2 {
            vec![
                "wasmpool thread pool, 1 worker",
                "Python ProcessPoolExecutor(2)",
            ]
        } else {
            vec!["Python serial"]
        };
        common::run_all(&pool, &fibs[..2]);
        rows.push(Row {
            versus,
            ..row(
                w,
                &format!(
                    "wasmpool thread pool, {workers} worker{}",
                    if workers == 2 { "s" } else { "" }
                ),
                least(|| timed(|| common::run_all(&pool, &fibs))),
                Unit::Seconds,
            )
        });
    }
    if let Some(pool) = common::process_pool(2, InstancePolicy::Fresh) {
        common::run_all(&pool, &fibs[..2]);
        rows.push(Row {
            versus: vec!["Python ProcessPoolExecutor(2)"],
            ..row(
                w,
                "wasmpool process pool, 2 workers",
                least(|| timed(|| common::run_all(&pool, &fibs))),
                Unit::Seconds,
            )
        });
    }
    rows.push(opt_row(
        w,
        "Python serial",
        py("fib_serial_s"),
        Unit::Seconds,
    ));
    rows.push(opt_row(
        w,
        "Python ProcessPoolExecutor(2)",
        py("fib_process2_s"),
        Unit::Seconds,
    ));
    let w = "one fib(25) call (median of 21)";
    let native = median(
        (0..21)
            .map(|_| {
                timed(|| {
                    std::hint::black_box(common::native_fib(std::hint::black_box(25)));
                })
            })
            .collect(),
    );
    let wasm = median((0..21).map(|_| raw.fib_call(25).as_secs_f64()).collect());
    rows.push(Row {
        versus: vec!["native Rust"],
        ..row(
            w,
            "wasm (raw wasmtime call, epoch checks on)",
            wasm * 1e6,
            Unit::Micros,
        )
    });
    rows.push(row(w, "native Rust", native * 1e6, Unit::Micros));

    let table = render(&rows);
    println!("{table}");
    let goals = performance_goals(&rows, idle, &in_turns)
        + &goals(&rows, idle)
        + &cli_goals(&rows, &map_shares);
    println!("{goals}");
    if args.write && !args.only_pools {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/RESULTS.md");
        let setup = Setup {
            python: python.as_ref().map(|p| {
                let field = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
                format!("{} ({})", field("python"), field("executable"))
            }),
            distributed: distributed
                .iter()
                .map(|(name, _, status)| (*name, status.clone()))
                .collect(),
            nats: nats_version,
        };
        let doc = results_md(&table, &goals, &args, &setup);
        std::fs::write(path, doc).expect("write RESULTS.md");
        eprintln!("wrote {path}");
    }
}

/// Python's trivial-task rates for one workload (`fresh` or `reused`), measured with the
/// same task counts as the wasmpool rows of that workload.
fn python_rate_rows(
    workload: &'static str,
    key: &str,
    py: &impl Fn(&str) -> Option<f64>,
) -> [Row; 3] {
    [
        ("Python ThreadPoolExecutor(2)", "thread"),
        ("Python ProcessPoolExecutor(2)", "process"),
        ("Python ProcessPoolExecutor(2).map, chunksize=256", "map256"),
    ]
    .map(|(runner, side)| {
        opt_row(
            workload,
            runner,
            py(&format!("rates.{key}.{side}")),
            Unit::Rate,
        )
    })
}

/// The cluster's rows of one trivial-task workload, with the process pools' counts:
/// unchunked (one JetStream message per task) and through `map_chunked` with chunks of
/// [`CHUNK`](common::CHUNK); none without a cluster.
fn cluster_rate_rows(
    workload: &'static str,
    cluster: Option<&cluster::Cluster>,
    policy: InstancePolicy,
    noop: &impl Fn(usize) -> Vec<Call>,
    counts: Counts,
) -> Vec<Row> {
    let Some(executor) = cluster.and_then(|c| c.executor(policy, &noop(200))) else {
        return Vec::new();
    };
    vec![
        rate_row(
            workload,
            CLUSTER,
            &executor,
            &noop(counts.process),
            &["wasmpool process pool", DASK, RAY],
        ),
        chunked_rate_row(
            workload,
            CLUSTER_MAP256,
            &executor,
            &noop(counts.map256),
            common::CHUNK,
            &["wasmpool process pool, map_chunked 256"],
        ),
    ]
}

/// Dask's and Ray's trivial-task rates for one workload (`fresh` or `reused`: neither has
/// instances, the key only picks the task count, the process pools'), each when measured.
fn distributed_rate_rows(
    workload: &'static str,
    key: &str,
    py: &impl Fn(&str) -> Option<f64>,
    measured: &impl Fn(&str) -> bool,
) -> Vec<Row> {
    [(DASK, "dask"), (RAY, "ray")]
        .into_iter()
        .filter(|(_, side)| measured(side))
        .map(|(runner, side)| {
            opt_row(
                workload,
                runner,
                py(&format!("{side}.rates.{key}")),
                Unit::Rate,
            )
        })
        .collect()
}

fn row(workload: &'static str, runner: &str, value: f64, unit: Unit) -> Row {
    opt_row(workload, runner, Some(value), unit)
}

fn opt_row(workload: &'static str, runner: &str, value: Option<f64>, unit: Unit) -> Row {
    Row {
        workload,
        runner: runner.to_string(),
        value,
        unit,
        versus: Vec::new(),
    }
}

/// Submit every call, then every result: tasks per second, best of 3 (after a warm-up).
fn rate_row<E: Executor>(
    workload: &'static str,
    runner: &str,
    pool: &E,
    calls: &[Call],
    versus: &[&'static str],
) -> Row {
    chunked_rate_row(workload, runner, pool, calls, 1, versus)
}

/// Tasks/s of `calls` through `map_chunked(calls, chunksize)`, or submit-all-then-wait
/// when `chunksize` is 1.
fn chunked_rate_row<E: Executor>(
    workload: &'static str,
    runner: &str,
    pool: &E,
    calls: &[Call],
    chunksize: usize,
    versus: &[&'static str],
) -> Row {
    let rate = best(rate_of(pool, calls, chunksize));
    Row {
        versus: versus.to_vec(),
        ..row(workload, runner, rate, Unit::Rate)
    }
}

/// Warms `pool` up, then measures: each call of the result runs `calls` once through
/// [`chunked_rate_row`]'s way and returns tasks/s.
fn rate_of<'a, E: Executor>(
    pool: &'a E,
    calls: &'a [Call],
    chunksize: usize,
) -> impl FnMut() -> f64 + 'a {
    let run = move |calls: &[Call]| {
        if chunksize == 1 {
            common::run_all(pool, calls);
        } else {
            common::map_chunked_all(pool, calls, chunksize);
        }
    };
    run(&calls[..calls.len().min(100)]);
    move || calls.len() as f64 / timed(|| run(calls))
}

/// The ratios of items 2 to 4 of issue 16, measured in turns (`turns.rs`), when measured.
struct GoalsInTurns {
    /// Thread pool ÷ raw wasmtime, fresh instances.
    item2: Option<turns::Paired>,
    /// Process pool ÷ thread pool, fresh instances, unchunked.
    item3: Option<turns::Paired>,
    /// Process pool `map_chunked 256` ÷ Python's `map(chunksize=256)`, reuse.
    item4: Option<turns::Paired>,
}

/// The median of `n` submit→result round trips in microseconds, each after a pause of
/// `gap` (none: back to back), after 20 to warm up.
fn median_round_trip<E: Executor>(pool: &E, call: &Call, n: usize, gap: Duration) -> f64 {
    for _ in 0..20 {
        common::round_trip(pool, call);
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
        times.push(timed(|| common::round_trip(pool, call)) * 1e6);
    }
    median(times)
}

fn timed(f: impl FnOnce()) -> f64 {
    let started = Instant::now();
    f();
    started.elapsed().as_secs_f64()
}

/// The best (highest) of [`REPEAT`] rates.
fn best(mut f: impl FnMut() -> f64) -> f64 {
    (0..REPEAT).map(|_| f()).fold(f64::MIN, f64::max)
}

/// The least of [`REPEAT`] times.
fn least(mut f: impl FnMut() -> f64) -> f64 {
    (0..REPEAT).map(|_| f()).fold(f64::MAX, f64::min)
}

/// The middle value (of an even count, the upper of the two in the middle).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The Python interpreter `compare.py` runs with: `$WASMPOOL_BENCH_PYTHON`, else `python3`.
fn python_program() -> String {
    std::env::var("WASMPOOL_BENCH_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".into())
}

/// `compare.py` (beside this file).
const PYTHON_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/compare/compare.py");

/// `compare.py --serve`, for a ratio measured in turns; `None` without the interpreter.
fn python_server() -> Option<python_turns::PythonMap> {
    python_turns::PythonMap::start(&python_program(), PYTHON_SCRIPT)
}

/// Runs `compare.py` with `plan`; `None` (and a note on stderr) without the interpreter.
fn python(plan: &Plan) -> Option<serde_json::Value> {
    let program = python_program();
    eprintln!("Python's concurrent.futures, Dask and Ray ({program}) ...");
    let plan = plan.to_json().to_string();
    match Command::new(&program).arg(PYTHON_SCRIPT).arg(plan).output() {
        Ok(out) if out.status.success() => serde_json::from_slice(&out.stdout)
            .map_err(|e| eprintln!("compare.py printed no JSON: {e}"))
            .ok(),
        Ok(out) => {
            eprintln!(
                "compare.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("no {program} ({e}): the Python rows stay empty");
            None
        }
    }
}

/// A markdown table: workload, runner, value, and the ratio to each row it is compared with
/// (> 1 means this row is better: faster or more tasks/s).
fn render(rows: &[Row]) -> String {
    let mut out = String::from("| workload | runner | result | compared |\n|---|---|---|---|\n");
    for r in rows {
        let value = r
            .value
            .map(|v| r.unit.show(v))
            .unwrap_or_else(|| "n/a".into());
        let mut ratios = Vec::new();
        for other in &r.versus {
            let theirs = rows
                .iter()
                .find(|o| o.workload == r.workload && o.runner == *other)
                .and_then(|o| o.value);
            if let (Some(mine), Some(theirs)) = (r.value, theirs) {
                let ratio = if r.unit == Unit::Rate {
                    mine / theirs
                } else {
                    theirs / mine
                };
                ratios.push(format!("{ratio:.2}× {other}"));
            }
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            r.workload,
            r.runner,
            value,
            ratios.join("; ")
        );
    }
    out
}

/// The issue's goals for the cluster, checked against this run's rows: unchunked at least
/// 10× Dask and Ray, `map_chunked 256` at least 100k tasks/s, an idle round trip of at most
/// 1 ms. Only what was measured is judged.
fn goals(rows: &[Row], idle: &str) -> String {
    let value = |workload: &str, runner: &str| {
        rows.iter()
            .find(|r| r.workload == workload && r.runner == runner)
            .and_then(|r| r.value)
    };
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut out = String::from(
        "## The cluster's goals (the issue's), judged on this run\n\n\
         - unchunked tasks/s at least 10× Dask's and Ray's, `map_chunked 256` at least\n  \
         100 k tasks/s, idle round trip (1 ms pause before each, median) at most 1 ms.\n",
    );
    let mut any = false;
    for r in rows.iter().filter(|r| r.runner == CLUSTER) {
        let Some(mine) = r.value else { continue };
        any = true;
        let mut parts = Vec::new();
        for (name, runner) in [("Dask", DASK), ("Ray", RAY)] {
            parts.push(match value(r.workload, runner) {
                Some(theirs) => {
                    let ratio = mine / theirs;
                    format!("{ratio:.1}× {name}: {}", met(ratio >= 10.0))
                }
                None => format!("{name} not measured"),
            });
        }
        let _ = writeln!(
            out,
            "- {}: unchunked {} = {}",
            r.workload,
            Unit::Rate.show(mine),
            parts.join("; ")
        );
    }
    for r in rows.iter().filter(|r| r.runner == CLUSTER_MAP256) {
        let Some(mine) = r.value else { continue };
        let _ = writeln!(
            out,
            "- {}: map_chunked 256 {}: {}",
            r.workload,
            Unit::Rate.show(mine),
            met(mine >= 100e3)
        );
    }
    for r in rows
        .iter()
        .filter(|r| r.workload == idle && r.runner.starts_with(CLUSTER))
    {
        let Some(mine) = r.value else { continue };
        let _ = writeln!(
            out,
            "- idle round trip, {}: {}: {}",
            r.runner,
            Unit::Micros.show(mine),
            met(mine <= 1000.0)
        );
    }
    if !any {
        out.push_str("- not judged: no cluster rows in this run (no nats-server?)\n");
    }
    out
}

/// The performance issue's goals (issue 16, items 2 to 5), judged on this run: each the
/// ratio of two of its rows, or, for items 2 to 4 when measured so, the median of the
/// ratios of rounds taken in turns (`turns.rs`); then the instruction counts the issue asks
/// beside them ([`instruction_counts`]).
fn performance_goals(rows: &[Row], idle: &str, in_turns: &GoalsInTurns) -> String {
    let value = |workload: &str, runner: &str| {
        rows.iter()
            .find(|r| r.workload == workload && r.runner == runner)
            .and_then(|r| r.value)
    };
    // (what, workload, row, the row it is divided by, the goal, whether it is a floor,
    // the ratio in turns)
    let goals = [
        (
            "item 2: thread pool ÷ raw wasmtime (2 threads), fresh instances",
            FRESH,
            "wasmpool thread pool",
            "raw wasmtime, 2 threads",
            0.95,
            true,
            in_turns.item2,
        ),
        (
            "item 3: process pool ÷ thread pool, fresh instances, unchunked",
            FRESH,
            "wasmpool process pool",
            "wasmpool thread pool",
            0.9,
            true,
            in_turns.item3,
        ),
        (
            "item 4: process pool `map_chunked 256` ÷ Python `map(chunksize=256)`, reuse",
            REUSED,
            "wasmpool process pool, map_chunked 256",
            "Python ProcessPoolExecutor(2).map, chunksize=256",
            1.0,
            true,
            in_turns.item4,
        ),
        (
            "item 5: idle round trip, thread pool (fresh) ÷ Python's",
            idle,
            "wasmpool thread pool, fresh",
            "Python ThreadPoolExecutor(2)",
            0.5,
            false,
            None,
        ),
    ];
    let mut out = String::from("\n## The performance goals (issue 16), judged on this run\n\n");
    for (what, workload, mine, theirs, goal, floor, paired) in goals {
        let (Some(a), Some(b)) = (value(workload, mine), value(workload, theirs)) else {
            let _ = writeln!(out, "- {what}: not measured in this run");
            continue;
        };
        let unit = if floor { Unit::Rate } else { Unit::Micros };
        let (ratio, how) = match paired {
            Some(p) => (
                p.median,
                format!("{p}; best rounds {} / {}", unit.show(a), unit.show(b)),
            ),
            None => (
                a / b,
                format!("{} / {} = {:.2}", unit.show(a), unit.show(b), a / b),
            ),
        };
        let (bound, met) = if floor {
            ("at least", ratio >= goal)
        } else {
            ("at most", ratio <= goal)
        };
        let _ = writeln!(
            out,
            "- {what}: {how} (goal: {bound} {goal}): {}",
            if met { "met" } else { "NOT met" }
        );
    }
    out.push_str(&instruction_counts());
    out.push('\n');
    out
}

/// The instruction counts beside the goals: the last ones `cargo bench --bench
/// instructions` kept (`common/ir_record.rs`), with their date and commit.
fn instruction_counts() -> String {
    let counts = common::ir_record::read();
    let ir = |scenario: &str, side: &str| {
        counts
            .get(&common::ir_record::key(scenario, side))
            .map(|c| (c.ir, format!("{}, {}", c.date, c.commit)))
    };
    let show = |v: f64| common::thousands(v.round() as u64);
    let mut out = String::from(
        "\nInstructions per task beside them (callgrind, the last `cargo bench --bench \
         instructions` of each scenario; `benches/INSTRUCTIONS.md`):\n\n",
    );
    let thread = ir("thread-fresh", "all threads");
    let lines = [
        match (&thread, ir("raw-fresh", "all threads")) {
            (Some((t, when)), Some((r, _))) => format!(
                "item 2: thread pool, fresh {} against raw wasmtime {}: {:.3} of the raw loop's \
                 rate by instructions ({when})",
                show(*t),
                show(r),
                r / t
            ),
            _ => "item 2: not counted".into(),
        },
        match (
            &thread,
            ir("process-fresh", "parent"),
            ir("process-fresh", "worker"),
        ) {
            (Some((t, _)), Some((p, when)), Some((w, _))) => format!(
                "item 3: process pool, fresh {} (pool {} + worker {}) against the thread \
                 pool's {}: {:.3} by instructions ({when})",
                show(p + w),
                show(p),
                show(w),
                show(*t),
                t / (p + w)
            ),
            _ => "item 3: not counted".into(),
        },
        match (
            ir("process-reuse-chunk", "parent"),
            ir("process-reuse-chunk", "worker"),
        ) {
            (Some((p, when)), Some((w, _))) => format!(
                "item 4: process pool, a call in a chunk of 256: {} (pool {} + worker {}) \
                 ({when})",
                show(p + w),
                show(p),
                show(w)
            ),
            _ => "item 4: not counted".into(),
        },
        match &thread {
            Some((t, when)) => format!(
                "item 5: thread pool, fresh, submit then wait, one task at a time: {} \
                 ({when})",
                show(*t)
            ),
            None => "item 5: not counted".into(),
        },
    ];
    for line in lines {
        let _ = writeln!(out, "- {line}");
    }
    out
}

/// The issue's goals for `wasmpool map` (issue 15), judged on this run: at least 80% of the
/// library's tasks/s on each pool (the median of rounds in turns), and a peak RSS that does
/// not grow with the input.
fn cli_goals(rows: &[Row], shares: &[cli::MapShare]) -> String {
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut out = String::from(
        "\n## `wasmpool map`'s goals (issue 15), judged on this run\n\n\
         - at least 80% of the library's tasks/s on each pool; peak RSS flat (within 20%)\n  \
         from the short input to the long one.\n",
    );
    for share in shares {
        let _ = writeln!(
            out,
            "- {} ÷ the library's: {}: {}",
            share.runner,
            share.paired,
            met(share.paired.median >= 0.8)
        );
    }
    let rss: Vec<(&str, f64)> = rows
        .iter()
        .filter(|r| r.workload == cli::MEMORY)
        .filter_map(|r| Some((r.runner.as_str(), r.value?)))
        .collect();
    if let [(short, a), (long, b)] = rss[..] {
        let _ = writeln!(
            out,
            "- peak RSS {} ({short}) → {} ({long}): {}",
            Unit::MiB.show(a),
            Unit::MiB.show(b),
            met(b <= a * 1.2)
        );
    }
    out
}

/// What ran, for RESULTS.md's header.
struct Setup {
    /// Python's version and interpreter, if `compare.py` ran.
    python: Option<String>,
    /// Dask's and Ray's versions, or why they were not measured.
    distributed: Vec<(&'static str, Result<String, String>)>,
    /// `nats-server --version`, if the cluster rows ran.
    nats: Option<String>,
}

fn results_md(table: &str, goals: &str, args: &Args, setup: &Setup) -> String {
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown date".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    let profile = if cfg!(debug_assertions) {
        "dev (`--profile dev`: dependencies at opt-level 2, wasmpool itself unoptimised)"
    } else {
        "bench (release, optimised)"
    };
    format!(
        "# wasmpool side by side: results\n\n\
         Written by `cargo bench --bench compare` (see `benches/compare/main.rs`); regenerate it\n\
         with the same command. Ratios > 1 mean the row is better (more tasks/s or less time)\n\
         than the row it is compared with.\n\n\
         - date: {date}\n\
         - machine: {cpus} CPUs, {model}\n\
         - build profile: {profile}{quick}\n\
         - load average when the run ended (1, 5, 15 min): {load}\n\
         - Python: {py}\n\
         - raw wasmtime: the same engine as wasmpool's default runtime (pooling allocator,\n\
           epoch checks on), per task a new `Store` with a WASI context and the same memory\n\
           limiter, instantiate from `InstancePre`, call through an export index resolved\n\
           once, drop; in a plain loop on 1 or 2 threads: what any pool on this approach\n\
           must pay. A pool row above it by more than the noise would mean a wrong baseline.\n\
           With instances reused it is a typed sync call per task; `raw wasmtime, call_async`\n\
           is the call as wasmpool makes it (async WASI, `call_async` polled once), the\n\
           ceiling of a pool whose deadlines cut WASI waits short.\n\
         - both sides run the same task counts per workload and the same rule: rates are the\n\
           best of 3 runs after a warm-up, round trips the median, times the least of 3.\n\
           The rates whose ratios are goals (fresh instances: the thread pool, the process\n\
           pool, the raw loop on 2 threads; reuse: the process pool's `map_chunked 256` and\n\
           Python's `map(chunksize=256)`, from a `compare.py --serve` process that keeps its\n\
           pool) are taken in turns, 7 rounds (the order reversed every other round); their\n\
           rows show the best round, and each goal is judged on the median of the ratios\n\
           within rounds, so both sides of a ratio see the same moments of the machine.\n\
           The idle round trips pause 1 ms before each trip, so every thread of both pools\n\
           has parked; the back-to-back ones do not (wasmpool's threads are still spinning).\n\
           `callers help`: a thread pool built with `caller_helps(true)`, whose `result()`\n\
           runs a task no worker has taken (in the callers' spare instance), so an idle\n\
           trip wakes no thread.\n\
         - `wasmpool map` rows (issue 15): N lines `i, 1` of `math.add` in a file,\n\
           `wasmpool map FIXTURES math.add -j 2 --pool P --output json FILE` timed whole\n\
           (process start, component from the cache, parsing, printing into a pipe the\n\
           bench drains), in turns with the library's rate for the same calls built\n\
           beforehand, submitted all then awaited, on a pool like the command line's (2\n\
           workers, fresh instances, output captured): 7 rounds after a warm-up of each;\n\
           the rows show the best round, the goal is judged on the median of the rounds'\n\
           ratios. Peak RSS is the map's `VmHWM` (thread pool; the process pool's workers\n\
           are not counted).\n\
         - the CPU-bound rows compare compiled wasm with the CPython interpreter: a language\n\
           comparison, not a pool comparison.\n\
         - wasmpool cluster: {cluster}\n\
         - Dask: {dask}\n\
         - Ray: {ray}\n\
         - the cluster, Dask and Ray rows run the process pools' task counts (unchunked\n\
           rates and round trips) and the `map_chunked 256` count, under the same rule;\n\
           Dask and Ray have no instance policy, so their rows in the fresh and reused\n\
           workloads differ only in the task count (and the noise).\n\n\
         Noise: this is a shared 2-core VM, other builds may have been running; rows taken in\n\
         one run are comparable with each other, absolute numbers vary by ±30% between runs.\n\
         The cluster, Dask and Ray rows run their server, scheduler and workers on the same\n\
         2 cores as the submitter.\n\n\
         {table}\n\
         {goals}",
        quick = if args.quick {
            ", `--quick` (fewer tasks per measurement)"
        } else {
            ""
        },
        py = match &setup.python {
            Some(python) => format!(
                "{python}: concurrent.futures, Dask and Ray via `benches/compare/compare.py`"
            ),
            None => format!("not run (no {})", python_program()),
        },
        cluster = match &setup.nats {
            Some(version) => format!(
                "a `ClusterExecutor` in the bench process; `{version}` on\n  \
                 127.0.0.1 (`-js`, file store in a temporary directory); two `wasmpool worker\n  \
                 --nats URL --queue bench -j 1 --no-cache` processes (a thread pool of 1 each:\n  \
                 2 workers in all, like the pools); output discarded as in the pools.\n  \
                 Unchunked: one JetStream message per task; `map_chunked 256`: one message per\n  \
                 256 calls"
            ),
            None => "not run (no nats-server, or it did not start): no cluster rows".into(),
        },
        dask = distributed_note(
            setup,
            "Dask",
            "`LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`, a trivial\n  \
             Python function: rates `client.gather(client.map(f, range(n), pure=False))`,\n  \
             round trips `client.submit(f, 0, pure=False).result()`"
        ),
        ray = distributed_note(
            setup,
            "Ray",
            "`ray.init(num_cpus=2, include_dashboard=False)`, a trivial `@ray.remote`\n  \
             function: rates `ray.get([f.remote(i) for i in range(n)])`, round trips\n  \
             `ray.get(f.remote(0))`"
        ),
    )
}

/// RESULTS.md's line for Dask or Ray: its version and `how`, or why it has no rows.
fn distributed_note(setup: &Setup, name: &str, how: &str) -> String {
    match setup.distributed.iter().find(|(n, _)| *n == name) {
        Some((_, Ok(version))) => format!("{version}, {how}"),
        Some((_, Err(why))) => format!("no rows: {why}"),
        None => "no rows: compare.py did not run".into(),
    }
}
