//! Chaos: process pools run thousands of mixed tasks (fast, slow, trapping, over budget) while
//! workers are killed at random moments with SIGKILL, SIGSEGV or SIGABRT, in strict mode, in
//! respawn mode, and through `wasmpool map --pool process --retries`.
//!
//! Invariants checked every round: every planned kill happens (a kill counts only when
//! `kill(2)` delivered the signal); every future resolves within `SOON` of the kills; a task
//! either has the outcome its kind calls for or failed with a broken pool that names a killed
//! worker; strict pools are broken afterwards, failed at least one task with a broken-pool
//! error, and refuse work at once; respawn pools lose only the killed workers' in-flight tasks
//! and are back to full strength (probes answered by as many distinct, never-killed workers as
//! the pool has); no worker process outlives its pool, not even as a zombie. The kills are
//! driven by task completions (events), not by timers. The random seed is printed;
//! `WASMPOOL_CHAOS_SEED=<n>` replays a run.

use std::collections::{BTreeSet, VecDeque};
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
    /// Sleeps far longer than any bound here: only a broken pool can end it, so a strict
    /// round that holds one always has a task for its kill to fail.
    Hold,
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
            // The deadline puts the sleep on the path that stopping a worker can interrupt.
            Kind::Hold => call(c, "sleep-ms(600000)")
                .with_budget(Budget::default().timeout(Duration::from_secs(600))),
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

/// Signals a worker in one of the three ways and waits until the pool has seen it die; returns
/// whether `kill(2)` delivered the signal (only such a kill counts). A SIGSEGV sent from
/// outside is absorbed by the first fault handler (which finds no fault and restores the
/// default action), so it is sent again until the worker is gone.
fn kill(pool: &ProcessPoolExecutor, pid: u32, how: usize, events: &mut Events) -> bool {
    let target = Pid::from_raw(pid as i32).unwrap_or_else(|| panic!("worker pid {pid}"));
    let (signal, name) = [
        (Signal::KILL, "SIGKILL"),
        (Signal::SEGV, "SIGSEGV"),
        (Signal::ABORT, "SIGABRT"),
    ][how % 3];
    let delivered = match kill_process(target, signal) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("kill({pid}, {name}) failed: {e}");
            false
        }
    };
    let started = Instant::now();
    while pool.worker_pids().contains(&pid) {
        if delivered && signal == Signal::SEGV {
            // ESRCH: it died meanwhile, which is what we want.
            let _ = kill_process(target, signal);
        }
        // Wait for the next completion or a short while, then look again.
        events.wait(Duration::from_millis(20));
        assert!(started.elapsed() < SOON, "worker {pid} survived {name}");
    }
    delivered
}

/// One round: `n` mixed tasks, `kills` workers killed at random completion counts.
struct Round {
    /// The outcomes with their kinds.
    results: Vec<(Kind, Result<TaskValue, TaskError>)>,
    /// The workers killed, in order: only those `kill(2)` delivered a signal to.
    killed: Vec<u32>,
    /// How many kills the round planned (one per completion count, one more per chase).
    planned: usize,
    /// Every worker pid seen.
    seen: BTreeSet<u32>,
}

impl Round {
    /// Every kill the round planned was delivered (a skipped kill would prove nothing).
    fn assert_every_kill_delivered(&self, r: usize) {
        assert_eq!(
            self.killed.len(),
            self.planned,
            "round {r}: only {:?} of {} planned kills were delivered",
            self.killed,
            self.planned
        );
    }
}

/// With `chase`, some kills are followed by a kill of the replacement as soon as it shows
/// up, often before its handshake (respawn mode starts it again). With `hold`, a task that
/// only a broken pool can end is submitted last, so a strict pool's kill always has a task
/// to fail. Every planned kill happens, or the round fails saying why.
fn round(
    pool: &ProcessPoolExecutor,
    rng: &mut Rng,
    n: usize,
    kills: usize,
    chase: bool,
    hold: bool,
) -> Round {
    let (tx, rx) = unbounded();
    let watch = |future: &TaskFuture| {
        let tx = tx.clone();
        future.add_done_callback(move |f| {
            let _ = tx.send(f.report().map(|r| r.pid));
        });
    };
    let mut seen: BTreeSet<u32> = pool.worker_pids().into_iter().collect();
    let mut tasks = Vec::with_capacity(n + 1);
    let kinds = (0..n).map(|i| Kind::random(rng, i));
    for kind in kinds.chain(hold.then_some(Kind::Hold)) {
        let future = kind
            .submit(pool)
            .unwrap_or_else(|e| panic!("submitting {kind:?} before any kill failed: {e}"));
        watch(&future);
        tasks.push((kind, future));
    }
    let mut events = Events {
        rx,
        completed: 0,
        greeted: BTreeSet::new(),
    };
    // Completion counts below `n`: reached even while the held task runs.
    let mut thresholds: Vec<usize> = (0..kills).map(|_| rng.below(n)).collect();
    thresholds.sort_unstable();
    let mut killed = Vec::new();
    let mut planned = 0;
    for (k, threshold) in thresholds.into_iter().enumerate() {
        planned += 1;
        while events.completed < threshold {
            assert!(events.wait(SOON), "no task completed within {SOON:?}");
        }
        // A victim among the workers that have answered a task: a replacement is killed
        // before its greeting only on purpose (the chase below), at most once per kill, so
        // the pool never sees more failed starts in a row than it tolerates. When none has
        // answered yet (all are replacements), the next completion may make one; when
        // nothing is left to complete, a probe task gives them work.
        let deadline = Instant::now() + SOON;
        let pid = loop {
            let pids = pool.worker_pids();
            seen.extend(&pids);
            let greeted: Vec<u32> = pids
                .iter()
                .copied()
                .filter(|p| events.greeted.contains(p))
                .collect();
            if !greeted.is_empty() {
                break greeted[rng.below(greeted.len())];
            }
            if events.completed == tasks.len() {
                let probe = Kind::Fast(tasks.len() as i32);
                let future = probe.submit(pool).unwrap_or_else(|e| {
                    panic!("kill {k}: a probe to find a victim was refused: {e}")
                });
                watch(&future);
                tasks.push((probe, future));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                events.wait(left),
                "planned kill {k} (at {threshold} completions) found no worker that had \
                 answered a task within {SOON:?}: workers {pids:?}, {} of {} tasks done",
                events.completed,
                tasks.len()
            );
        };
        if kill(pool, pid, rng.below(3), &mut events) {
            killed.push(pid);
        }
        if chase && rng.below(2) == 0 {
            planned += 1;
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
            if kill(pool, replacement, 0, &mut events) {
                killed.push(replacement);
            }
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
        planned,
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
        let round = round(&pool, &mut rng, 400, 3, true, false);
        round.assert_every_kill_delivered(r);
        let broken = check_outcomes(&round);
        eprintln!(
            "respawn chaos, round {r}: killed {:?}, broken-pool failures per kill {broken:?}",
            round.killed
        );
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
        // Back to full strength: batches of probes, as many as the workers can hold at once,
        // until as many distinct workers as the pool has have answered one, none of them a
        // killed worker.
        let started = Instant::now();
        let mut answered = BTreeSet::new();
        let mut batches = 0;
        while answered.len() < WORKERS {
            batches += 1;
            let probes: Vec<TaskFuture> = (0..WORKERS * DEPTH)
                .map(|_| Kind::Slow(2).submit(&pool).expect("submit after the kills"))
                .collect();
            for probe in &probes {
                let outcome = probe.result_timeout(SOON).expect("the probe resolves");
                assert!(
                    Kind::Slow(2).expected(&outcome),
                    "round {r}: probe gave {outcome:?}"
                );
                let pid = probe.report().expect("a probe that ran has a report").pid;
                assert!(
                    !round.killed.contains(&pid),
                    "round {r}: a probe ran on {pid}, a worker killed earlier"
                );
                answered.insert(pid);
            }
            assert!(
                answered.len() >= WORKERS || started.elapsed() < SOON,
                "round {r}: after {batches} batches of probes only {answered:?} answered"
            );
        }
        eprintln!("respawn chaos, round {r}: {batches} batch(es) of probes ran on {answered:?}");
        let pids: BTreeSet<u32> = pool.worker_pids().into_iter().collect();
        assert_eq!(
            answered, pids,
            "round {r}: the probes were answered by {answered:?}, the pool's workers are {pids:?}"
        );
        let mut seen = round.seen;
        seen.extend(pids);
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
        let round = round(&pool, &mut rng, 150, 1, false, true);
        round.assert_every_kill_delivered(r);
        let broken = check_outcomes(&round);
        eprintln!(
            "strict chaos, round {r}: killed {:?}, {} broken-pool failures",
            round.killed, broken[0]
        );
        assert!(
            broken[0] >= 1,
            "round {r}: killing {} failed no task with a broken pool",
            round.killed[0]
        );
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
/// comes out exactly once, successfully, with its own value, and the kills cost retries.
///
/// Kills are planned at distinct output lines; each goes to a worker process that has
/// already printed a result (so it is past its start and holds tasks) and was not killed
/// before. When no such worker exists at the planned line, the kill waits for the next
/// line. Once the planned kills are done, while no output line shows a retry yet, one more
/// worker is killed every `GAP` lines (a kill can, rarely, find a worker between tasks).
#[test]
fn cli_map_with_retries_loses_and_duplicates_nothing() {
    const PLANNED: usize = 4;
    /// Output lines between extra kills, so that the retries of the last kill have had time
    /// to come out.
    const GAP: usize = 16;
    /// No extra kill with fewer lines than this to go: the workers must still have work.
    const MARGIN: usize = 40;
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
    // Distinct lines from 1 (after the first result) to half the run.
    let mut kill_at = BTreeSet::new();
    while kill_at.len() < PLANNED {
        kill_at.insert(1 + rng.below(n / 2));
    }
    let mut kill_at: VecDeque<usize> = kill_at.into_iter().collect();
    let mut lines = Vec::new();
    let mut answered = BTreeSet::new();
    let mut killed: Vec<u32> = Vec::new();
    let mut last_kill = 0;
    let mut retry_seen = false;
    for line in stdout.lines() {
        let line = line.expect("read a line");
        let object: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        if let Some(pid) = object["pid"].as_u64() {
            answered.insert(pid as u32);
        }
        retry_seen |= object["attempt"].as_u64() != Some(1);
        lines.push(line);
        let planned = kill_at.front().is_some_and(|&at| at <= lines.len());
        let extra = kill_at.is_empty()
            && !retry_seen
            && lines.len() >= last_kill + GAP
            && lines.len() + MARGIN <= n;
        if !planned && !extra {
            continue;
        }
        let workers: Vec<u32> = children_of(child.id())
            .into_iter()
            .filter(|pid| answered.contains(pid) && !killed.contains(pid))
            .collect();
        if workers.is_empty() {
            continue; // none has printed a result yet: try again at the next line
        }
        let pid = workers[rng.below(workers.len())];
        let (signal, name) = [(Signal::KILL, "SIGKILL"), (Signal::ABORT, "SIGABRT")][rng.below(2)];
        let target = Pid::from_raw(pid as i32).unwrap_or_else(|| panic!("worker pid {pid}"));
        match kill_process(target, signal) {
            Ok(()) => {
                killed.push(pid);
                last_kill = lines.len();
                if planned {
                    kill_at.pop_front();
                }
            }
            // It died meanwhile (not of our doing): try again at the next line.
            Err(e) => eprintln!("kill({pid}, {name}) failed: {e}"),
        }
    }
    let output = child.wait_with_output().expect("wait for wasmpool map");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        kill_at.is_empty(),
        "the kills planned at lines {kill_at:?} found no live worker that had printed a \
         result (killed so far: {killed:?})"
    );
    let mut indexes = BTreeSet::new();
    let mut retried = 0;
    let mut reruns = 0;
    for line in &lines {
        let object: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let index = object["index"].as_u64().expect("an index") as usize;
        assert!(indexes.insert(index), "index {index} printed twice");
        assert_eq!(object["ok"], inputs[index].to_string(), "{line}");
        let attempt = object["attempt"].as_u64().expect("an attempt");
        assert!(attempt >= 1, "{line}");
        if attempt > 1 {
            retried += 1;
            reruns += attempt - 1;
        }
    }
    assert_eq!(indexes.len(), n, "{} of {n} inputs came out", indexes.len());
    eprintln!(
        "cli chaos: {} workers killed ({PLANNED} planned), {retried} tasks ran more than once \
         ({reruns} reruns)",
        killed.len()
    );
    assert!(killed.len() >= PLANNED, "only {killed:?} were killed");
    assert!(
        retried > 0,
        "{} workers were killed and no task ran more than once: {stderr}",
        killed.len()
    );
}
