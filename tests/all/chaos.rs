//! Chaos: process pools run thousands of mixed tasks (fast, slow, trapping, over budget) while
//! workers are killed at random moments with SIGKILL, SIGSEGV or SIGABRT, in strict mode, in
//! respawn mode, and through `wasmpool map --pool process --retries`.
//!
//! Invariants checked every round: every future resolves within `SOON` of the kills; a task
//! either has the outcome its kind calls for or failed with a broken pool that names a killed
//! worker; strict pools are broken afterwards and refuse work at once; respawn pools lose
//! only the killed workers' in-flight tasks and are back to full strength; no worker process
//! outlives its pool, not even as a zombie. The kills are driven by task completions (events),
//! not by timers. The random seed is printed; `WASMPOOL_CHAOS_SEED=<n>` replays a run.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, unbounded};
use rustix::process::{Pid, Signal, kill_process};
use wasmpool::{
    Budget, Executor, OutputMode, ProcessPoolExecutor, SubmitError, TaskError, TaskFuture,
    TaskValue,
};

use crate::common::{SOON, call, fixtures};
use crate::procfs::{alive, children_of};

const WORKERS: usize = 2;
const DEPTH: usize = 2;

/// xorshift64*: small, seeded, good enough to pick kills and task kinds.
struct Rng(u64);

impl Rng {
    fn seeded(test: &str) -> Rng {
        let seed = std::env::var("WASMPOOL_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                now.as_nanos() as u64 | 1
            });
        eprintln!("{test}: WASMPOOL_CHAOS_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What a task does, and so which outcome it must have unless its worker was killed.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Fast(i32),
    Slow(u64),
    Trap,
    OverBudget,
}

impl Kind {
    fn random(rng: &mut Rng, i: usize) -> Kind {
        match rng.below(10) {
            0..=5 => Kind::Fast(i as i32),
            6 | 7 => Kind::Slow(1 + rng.below(3) as u64),
            8 => Kind::Trap,
            _ => Kind::OverBudget,
        }
    }

    fn submit(self, pool: &ProcessPoolExecutor) -> Result<TaskFuture, SubmitError> {
        let c = fixtures();
        pool.submit(match self {
            Kind::Fast(n) => call(c, &format!("add({n}, 1)")),
            Kind::Slow(ms) => call(c, &format!("sleep-ms({ms})")),
            Kind::Trap => call(c, "trap-unreachable()"),
            Kind::OverBudget => call(c, "loop-forever()")
                .with_budget(Budget::default().timeout(Duration::from_millis(10))),
        })
    }

    fn expected(self, outcome: &Result<TaskValue, TaskError>) -> bool {
        match (self, outcome) {
            (Kind::Fast(n), Ok(v)) => v.as_i64() == Some(i64::from(n) + 1),
            (Kind::Slow(ms), Ok(v)) => v.as_i64() == Some(ms as i64),
            (Kind::Trap, Err(TaskError::Trap { .. })) => true,
            (Kind::OverBudget, Err(TaskError::Timeout { .. })) => true,
            _ => false,
        }
    }
}

/// Completions, as the done callbacks report them: how many, and which workers have
/// answered a task (so are past their handshake).
struct Events {
    rx: Receiver<Option<u32>>,
    completed: usize,
    greeted: BTreeSet<u32>,
}

impl Events {
    /// Waits up to `timeout` for the next completion; whether one came.
    fn wait(&mut self, timeout: Duration) -> bool {
        match self.rx.recv_timeout(timeout) {
            Ok(pid) => {
                self.completed += 1;
                self.greeted.extend(pid);
                true
            }
            Err(_) => false,
        }
    }
}

/// Signals a worker in one of the three ways and waits until the pool has seen it die. A
/// SIGSEGV sent from outside is absorbed by the first fault handler (which finds no fault
/// and restores the default action), so it is sent until the worker is gone.
fn kill(pool: &ProcessPoolExecutor, pid: u32, how: usize, events: &mut Events) {
    let Some(target) = Pid::from_raw(pid as i32) else {
        return;
    };
    let (signal, name) = [
        (Signal::KILL, "SIGKILL"),
        (Signal::SEGV, "SIGSEGV"),
        (Signal::ABORT, "SIGABRT"),
    ][how % 3];
    let started = Instant::now();
    let mut sent = false;
    while pool.worker_pids().contains(&pid) {
        if !sent || signal == Signal::SEGV {
            // ESRCH: it died meanwhile, which is what we want.
            let _ = kill_process(target, signal);
            sent = true;
        }
        // Wait for the next completion or a short while, then look again.
        events.wait(Duration::from_millis(20));
        assert!(started.elapsed() < SOON, "worker {pid} survived {name}");
    }
}

/// One round: `n` mixed tasks, `kills` workers killed at random completion counts.
/// Returns the outcomes with their kinds, the killed pids, and every pid seen.
struct Round {
    results: Vec<(Kind, Result<TaskValue, TaskError>)>,
    killed: Vec<u32>,
    seen: BTreeSet<u32>,
}

/// With `chase`, some kills are followed by a kill of the replacement as soon as it shows
/// up, often before its handshake (respawn mode starts it again).
fn round(pool: &ProcessPoolExecutor, rng: &mut Rng, n: usize, kills: usize, chase: bool) -> Round {
    let (tx, rx) = unbounded();
    let mut seen: BTreeSet<u32> = pool.worker_pids().into_iter().collect();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let kind = Kind::random(rng, i);
        match kind.submit(pool) {
            Ok(future) => {
                let tx = tx.clone();
                future.add_done_callback(move |f| {
                    let _ = tx.send(f.report().map(|r| r.pid));
                });
                tasks.push((kind, future));
            }
            // Strict mode: the pool broke under an earlier kill of this round.
            Err(SubmitError::BrokenPool(_)) => break,
            Err(e) => panic!("submit failed: {e}"),
        }
    }
    let mut events = Events {
        rx,
        completed: 0,
        greeted: BTreeSet::new(),
    };
    let mut thresholds: Vec<usize> = (0..kills).map(|_| rng.below(tasks.len())).collect();
    thresholds.sort_unstable();
    let mut killed = Vec::new();
    'kills: for threshold in thresholds {
        while events.completed < threshold {
            assert!(events.wait(SOON), "no task completed within {SOON:?}");
        }
        // A victim among the workers that have answered a task: a replacement is killed
        // before its greeting only on purpose (the chase below), at most once per kill, so
        // the pool never sees more failed starts in a row than it tolerates.
        let pid = loop {
            let pids = pool.worker_pids();
            seen.extend(&pids);
            let greeted: Vec<u32> = pids
                .into_iter()
                .filter(|p| events.greeted.contains(p))
                .collect();
            if !greeted.is_empty() {
                break greeted[rng.below(greeted.len())];
            }
            if events.completed == tasks.len() || !events.wait(SOON) {
                continue 'kills; // nothing left to run, or (strict) the pool broke
            }
        };
        kill(pool, pid, rng.below(3), &mut events);
        killed.push(pid);
        if chase && rng.below(2) == 0 {
            let started = Instant::now();
            let replacement = loop {
                let fresh = pool.worker_pids().into_iter().find(|p| !seen.contains(p));
                if let Some(fresh) = fresh {
                    break fresh;
                }
                assert!(started.elapsed() < SOON, "no replacement for {pid}");
                events.wait(Duration::from_millis(1));
            };
            seen.insert(replacement);
            kill(pool, replacement, 0, &mut events);
            killed.push(replacement);
        }
    }
    let results = tasks
        .iter()
        .map(|(kind, future)| {
            let outcome = future
                .result_timeout(SOON)
                .unwrap_or_else(|_| panic!("{future:?} ({kind:?}) did not resolve in {SOON:?}"));
            (*kind, outcome)
        })
        .collect();
    seen.extend(pool.worker_pids());
    Round {
        results,
        killed,
        seen,
    }
}

/// Checks that every outcome is the expected one or a broken pool naming a killed worker;
/// returns how many tasks failed with a broken pool, per killed pid.
fn check_outcomes(round: &Round) -> Vec<usize> {
    let mut broken = vec![0; round.killed.len()];
    for (kind, outcome) in &round.results {
        if kind.expected(outcome) {
            continue;
        }
        let Err(TaskError::BrokenPool { reason }) = outcome else {
            panic!("{kind:?} ended with {outcome:?}");
        };
        let Some(k) = round
            .killed
            .iter()
            .position(|pid| reason.contains(&format!("(pid {pid})")))
        else {
            panic!("{kind:?} failed with a broken pool that names no killed worker: {reason}");
        };
        broken[k] += 1;
    }
    broken
}

fn pool(respawn: bool) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .workers(WORKERS)
        .worker_program(env!("CARGO_BIN_EXE_wasmpool"))
        .output(OutputMode::Discard)
        .pipeline_depth(DEPTH)
        .respawn(respawn)
        .build()
        .expect("the pool starts")
}

#[test]
fn respawn_pools_lose_only_the_killed_workers_tasks() {
    let mut rng = Rng::seeded("respawn chaos");
    for r in 0..4 {
        let pool = pool(true);
        let round = round(&pool, &mut rng, 400, 3, true);
        let broken = check_outcomes(&round);
        for (pid, n) in round.killed.iter().zip(&broken) {
            assert!(
                *n <= DEPTH,
                "round {r}: killing {pid} failed {n} tasks, more than it had in flight"
            );
        }
        assert!(
            pool.broken_reason().is_none(),
            "round {r}: {:?}",
            pool.broken_reason()
        );
        // Back to full strength: new work runs, on as many workers as before.
        let started = Instant::now();
        while pool.worker_pids().len() < WORKERS {
            let probe = Kind::Fast(1).submit(&pool).expect("submit after the kills");
            let outcome = probe.result_timeout(SOON).expect("the probe resolves");
            assert!(
                Kind::Fast(1).expected(&outcome),
                "round {r}: probe gave {outcome:?}"
            );
            assert!(
                started.elapsed() < SOON,
                "round {r}: the pool never got its workers back"
            );
        }
        let mut seen = round.seen;
        seen.extend(pool.worker_pids());
        pool.shutdown(true, false);
        for pid in seen {
            assert!(!alive(pid), "round {r}: worker {pid} outlived its pool");
        }
    }
}

#[test]
fn strict_pools_break_and_refuse_work_at_once() {
    let mut rng = Rng::seeded("strict chaos");
    for r in 0..4 {
        let pool = pool(false);
        let round = round(&pool, &mut rng, 150, 1, false);
        check_outcomes(&round);
        let reason = pool
            .broken_reason()
            .expect("a killed worker breaks a strict pool");
        assert!(
            reason.contains(&format!("(pid {})", round.killed[0])),
            "{reason}"
        );
        match Kind::Fast(1).submit(&pool) {
            Err(SubmitError::BrokenPool(why)) => assert_eq!(why, reason),
            other => panic!("round {r}: submit to a broken pool gave {other:?}"),
        }
        pool.shutdown(true, false);
        for pid in round.seen {
            assert!(!alive(pid), "round {r}: worker {pid} outlived its pool");
        }
    }
}

/// `wasmpool map --pool process --retries`: workers killed while the map runs; every input
/// comes out exactly once, successfully, with its own value.
#[test]
fn cli_map_with_retries_loses_and_duplicates_nothing() {
    let mut rng = Rng::seeded("cli chaos");
    let n = 300;
    let inputs: Vec<u64> = (0..n).map(|_| 1 + rng.below(4) as u64).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmpool"))
        .args([
            "map",
            env!("WASMPOOL_FIXTURES_WASM"),
            "sleep-ms",
            "--pool",
            "process",
        ])
        .args([
            "-j",
            "2",
            "--output",
            "json",
            "--retries",
            "10",
            "--no-progress",
        ])
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("wasmpool-chaos-cache"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wasmpool map");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        let text: String = inputs.iter().map(|ms| format!("{ms}\n")).collect();
        stdin.write_all(text.as_bytes()).expect("write the inputs");
    }
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut kill_at: Vec<usize> = (0..4).map(|_| rng.below(n - 20)).collect();
    kill_at.sort_unstable();
    let mut lines = Vec::new();
    let mut kills = 0;
    for line in stdout.lines() {
        lines.push(line.expect("read a line"));
        while kill_at.first() == Some(&lines.len()) {
            kill_at.remove(0);
            let workers = children_of(child.id());
            if let Some(&pid) = workers.get(rng.below(workers.len().max(1))) {
                let signal = [Signal::KILL, Signal::ABORT][rng.below(2)];
                if let Some(pid) = Pid::from_raw(pid as i32) {
                    let _ = kill_process(pid, signal);
                    kills += 1;
                }
            }
        }
    }
    let output = child.wait_with_output().expect("wait for wasmpool map");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let mut indexes = BTreeSet::new();
    let mut retried = 0;
    for line in &lines {
        let object: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let index = object["index"].as_u64().expect("an index") as usize;
        assert!(indexes.insert(index), "index {index} printed twice");
        assert_eq!(object["ok"], inputs[index].to_string(), "{line}");
        if object["attempt"].as_u64() != Some(1) {
            retried += 1;
        }
    }
    assert_eq!(indexes.len(), n, "{} of {n} inputs came out", indexes.len());
    eprintln!("cli chaos: {kills} workers killed, {retried} tasks ran more than once");
}
