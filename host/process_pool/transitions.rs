//! The rules: what each event does to the pool's [`State`], returned as [`Effects`].
//!
//! The reader threads report [`Event`]s (a greeting, results, the end of a worker's
//! channel); the executor's calls submit, shut down, abort and start. Every decision lives
//! here: which result answers which task, when a lost worker breaks the pool and when respawn
//! mode replaces it, when the startup is over, what the reason texts say. Like `state.rs`
//! (which does the scheduling), this file does no I/O and knows neither `pool.rs` nor
//! `process.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::error::{ProtocolError, SubmitError, TaskError};
use crate::run::TaskRun;

use super::framing::Frame;
use super::state::{Batch, Effects, Handed, Phase, StartupFailure, State, Worker, deadline_grace};

/// How many replacements in a row may die before their handshake before a respawn pool
/// gives up and breaks: a worker program that cannot start must not be restarted forever,
/// but one replacement killed while it starts must not break the pool.
pub(crate) const MAX_FAILED_STARTS: u32 = 3;

/// How a worker's channel ended, as its reader thread saw it.
#[derive(Debug)]
pub(crate) enum End {
    /// End of stream between frames: the process exited (or closed its stdout).
    Eof,
    /// The first frame was not a valid greeting.
    Handshake(ProtocolError),
    /// A malformed frame, or a read error, after the handshake.
    Protocol(ProtocolError),
}

/// What a worker's reader thread saw.
#[derive(Debug)]
pub(crate) enum Event {
    /// The worker answered the handshake.
    Greeted { serial: u64 },
    /// Results arrived (those that arrived together, in order).
    Results {
        serial: u64,
        results: Vec<(u64, TaskRun)>,
    },
    /// The worker's channel ended and its process was reaped; `exit` says how it ended
    /// (`killed by signal 9 (SIGKILL)`).
    Gone { serial: u64, end: End, exit: String },
}

impl State {
    /// What a reader thread's event does.
    pub(crate) fn on(&mut self, event: Event) -> Effects {
        match event {
            Event::Greeted { serial } => self.on_greeted(serial),
            Event::Results { serial, results } => self.on_results(serial, results),
            Event::Gone { serial, end, exit } => self.on_gone(serial, end, &exit),
        }
    }

    fn on_greeted(&mut self, serial: u64) -> Effects {
        if let Some(w) = self.worker_mut(serial) {
            w.ready = true;
            self.failed_starts = 0;
        }
        let mut fx = self.pump();
        fx.wake = true;
        fx
    }

    /// Matches each result to the task in flight it answers. A result for a task the worker
    /// was not running is a protocol violation (unless the pool is broken: then it failed
    /// the task already and is stopping the worker).
    fn on_results(&mut self, serial: u64, results: Vec<(u64, TaskRun)>) -> Effects {
        let mut fx = Effects::default();
        if results.is_empty() {
            return fx;
        }
        let broken = matches!(self.phase, Phase::Broken(_));
        let Some(w) = self.worker_mut(serial) else {
            return fx;
        };
        let (name, pid) = (w.name.clone(), w.pid);
        let mut breaks_pool = None;
        let (mut measured, mut took) = (0, Duration::ZERO);
        // The results came in one read: the task after them starts at this time at the latest.
        let now = Instant::now();
        for (id, run) in results {
            let Some(i) = w.in_flight.iter().position(|h| h.task.id == id) else {
                if !broken {
                    fx.violation = Some(ProtocolError::Malformed(format!(
                        "a result for task {id}, which it was not running"
                    )));
                    break;
                }
                continue;
            };
            if let Some(problem) = answer_mismatch(w.in_flight[i].task.calls, &run) {
                fx.violation = Some(ProtocolError::Malformed(format!(
                    "the result for task {id} {problem}"
                )));
                break;
            }
            let Some(handed) = w.in_flight.remove(i) else {
                continue;
            };
            if i == 0 {
                // The next task starts now (at the latest): its deadline counts from here.
                w.head_since = now;
            }
            if let Some(reason) = run.breaks_pool() {
                breaks_pool = Some(reason.to_string());
            }
            measured += 1;
            took += run.elapsed;
            let (outcome, report) = run.into_parts(&name, pid, None);
            fx.completed.push((handed.task.promise, outcome, report));
        }
        self.pace.record(took, measured);
        if let Some(reason) = breaks_pool {
            self.break_pool(reason, &mut fx);
        }
        fx.merge(self.pump());
        fx
    }

    /// The worker's channel ended. Decides whether that was expected (the pool closed it,
    /// or is broken already) or breaks the pool, or, in respawn mode, fails only the
    /// worker's own tasks and starts a replacement.
    fn on_gone(&mut self, serial: u64, end: End, exit: &str) -> Effects {
        let mut fx = Effects::default();
        let Some(i) = self.workers.iter().position(|w| w.serial == serial) else {
            return fx;
        };
        let worker = self.workers.remove(i);
        let closed_by_us = worker.tx.is_none() && worker.in_flight.is_empty();
        let expected =
            matches!(self.phase, Phase::Broken(_)) || (matches!(end, End::Eof) && closed_by_us);
        if !expected {
            let respawn = self.rules.respawn;
            let reason = describe(&worker, &end, exit);
            if !worker.ready && self.startup_failure.is_none() {
                self.startup_failure = Some(StartupFailure {
                    worker: worker.name.to_string(),
                    reason: describe_start(&end, exit),
                    source: match &end {
                        End::Handshake(e) | End::Protocol(e) => Some(e.clone()),
                        End::Eof => None,
                    },
                });
            }
            // Work is left for a replacement to do.
            let needed = matches!(self.phase, Phase::Open) || !self.queue.is_empty();
            if respawn && worker.ready {
                let replace = !worker.retiring && needed;
                let error = TaskError::BrokenPool {
                    reason: if replace {
                        format!("{reason}; a new worker takes its place (respawn mode)")
                    } else {
                        reason
                    },
                };
                for handed in worker.in_flight {
                    fx.failed.push((handed.task.promise, error.clone()));
                }
                if replace {
                    self.spawning += 1;
                    fx.spawn += 1;
                }
            } else if respawn && self.started && (self.failed_starts < MAX_FAILED_STARTS || !needed)
            {
                // A replacement died before its greeting (it had no tasks yet): start
                // another if there is work for it, a bounded number of times in a row.
                if needed {
                    fx.warnings
                        .push(format!("{reason}; starting another worker (respawn mode)"));
                    self.failed_starts += 1;
                    self.spawning += 1;
                    fx.spawn += 1;
                }
            } else {
                let reason = if respawn && self.failed_starts >= MAX_FAILED_STARTS {
                    format!(
                        "{reason}; {} replacement workers in a row failed to start, so \
                         respawn mode gives up",
                        self.failed_starts + 1
                    )
                } else {
                    reason
                };
                let error = TaskError::BrokenPool {
                    reason: reason.clone(),
                };
                for handed in worker.in_flight {
                    fx.failed.push((handed.task.promise, error.clone()));
                }
                self.break_pool(reason, &mut fx);
            }
        }
        fx.merge(self.pump());
        fx.wake = true;
        fx
    }

    /// Registers a worker whose process was just started (`spawning` counted it).
    /// Returns `false`, registering nothing, if the pool broke meanwhile: the caller then
    /// discards the process.
    pub(crate) fn on_spawned(&mut self, worker: Worker) -> bool {
        self.spawning -= 1;
        let added = !matches!(self.phase, Phase::Broken(_));
        if added {
            self.workers.push(worker);
        }
        added
    }

    /// A worker process could not be started (`spawning` counted it, and `not_attempted`
    /// more that the caller will not start either): the pool breaks.
    pub(crate) fn on_spawn_failed(
        &mut self,
        error: &std::io::Error,
        not_attempted: usize,
    ) -> Effects {
        let mut fx = Effects::default();
        self.spawning -= 1 + not_attempted;
        self.break_pool(format!("cannot start a new worker: {error}"), &mut fx);
        fx.wake = true;
        fx
    }

    /// Whether the first start is over: `None` while workers are still to greet, `Ok` once
    /// all did (from then on, a worker that dies before its greeting is a replacement),
    /// `Err` with the first worker's failure once the pool broke.
    pub(crate) fn start_verdict(&mut self) -> Option<Result<(), StartupFailure>> {
        if let Phase::Broken(reason) = &self.phase {
            let reason = reason.clone();
            return Some(Err(self.startup_failure.take().unwrap_or(StartupFailure {
                worker: "a worker".into(),
                reason,
                source: None,
            })));
        }
        if self.spawning == 0 && self.workers.iter().all(|w| w.ready) {
            self.started = true;
            return Some(Ok(()));
        }
        None
    }

    /// Queues `batches` and hands what it can to the workers. If the pool closed
    /// meanwhile, nothing is queued (the caller drops the promises, which fails their
    /// futures).
    pub(crate) fn on_submit(&mut self, batches: Vec<Batch>) -> Result<Effects, SubmitError> {
        self.check_open()?;
        self.queue.extend(batches);
        Ok(self.pump())
    }

    /// Refuses new work from now on; with `cancel_futures`, takes the queued tasks out of
    /// the queue, to be cancelled.
    pub(crate) fn on_shutdown(&mut self, cancel_futures: bool) -> Effects {
        if matches!(self.phase, Phase::Open) {
            self.phase = Phase::ShuttingDown;
        }
        let cancelled: Vec<_> = if cancel_futures {
            self.queue
                .drain(..)
                .flat_map(|batch| batch.tasks)
                .map(|task| task.promise)
                .collect()
        } else {
            Vec::new()
        };
        let mut fx = self.pump();
        fx.cancelled = cancelled;
        fx
    }

    /// Gives up on a pool that could not start: every worker is stopped.
    pub(crate) fn on_abandon(&mut self) -> Effects {
        let mut fx = Effects::default();
        self.break_pool("the pool could not start".into(), &mut fx);
        fx
    }

    /// The deadline watchdog found workers that did not answer their running task within
    /// its deadline and [`deadline_grace`] (frozen, stopped, swapped out, or hostile): each is
    /// killed; its running task fails with [`TaskError::Timeout`]; the tasks waiting behind
    /// it (which it never started) go back to the front of the queue; a new worker takes its
    /// place if there is work for one. The pool does not break: the worker did not crash.
    pub(crate) fn on_overrun(&mut self, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if matches!(self.phase, Phase::Broken(_)) {
            return fx;
        }
        for i in 0..self.workers.len() {
            let worker = &mut self.workers[i];
            if worker.deadline().is_none_or(|due| due > now) {
                continue;
            }
            let Some(head) = worker.in_flight.pop_front() else {
                continue;
            };
            let limit = head.task.timeout.unwrap_or_default();
            let run = TaskRun::failed(TaskError::Timeout { limit }, now - worker.head_since);
            let (outcome, report) = run.into_parts(&worker.name, worker.pid, None);
            fx.completed.push((head.task.promise, outcome, report));
            fx.warnings.push(format!(
                "{} (pid {}) did not answer within {:?} of its task's {limit:?} deadline and \
                 was killed; the task failed with a timeout",
                worker.name,
                worker.pid,
                deadline_grace(limit),
            ));
            for batch in resume(std::mem::take(&mut worker.in_flight))
                .into_iter()
                .rev()
            {
                self.queue.push_front(batch);
            }
            worker.tx = None;
            fx.kill.push(worker.child.clone());
            let needed = matches!(self.phase, Phase::Open) || !self.queue.is_empty();
            if !worker.retiring && needed {
                self.spawning += 1;
                fx.spawn += 1;
            }
        }
        fx.merge(self.pump());
        fx
    }

    /// Where an ABORT for `task` goes: the channel to the worker running it, if any.
    pub(crate) fn abort_route(&self, task: u64) -> Option<Sender<Frame>> {
        self.workers
            .iter()
            .find(|w| w.in_flight.iter().any(|h| h.task.id == task))
            .and_then(|w| w.tx.clone())
    }
}

/// The tasks a stopped worker held and never started, as batches to hand to others (one
/// per run of tasks of one component; their frames copied out of the batches they came in).
fn resume(held: std::collections::VecDeque<Handed>) -> Vec<Batch> {
    let mut batches: Vec<Batch> = Vec::new();
    for handed in held {
        let batch = match batches.last_mut() {
            Some(batch) if Arc::ptr_eq(&batch.component, &handed.component) => batch,
            _ => {
                batches.push(Batch {
                    tasks: Vec::new(),
                    frames: Vec::new(),
                    ends: Vec::new(),
                    component: handed.component.clone(),
                    resumed: true,
                });
                let last = batches.len() - 1;
                &mut batches[last]
            }
        };
        batch.frames.extend_from_slice(&handed.frames[handed.frame]);
        batch.ends.push(batch.frames.len());
        batch.tasks.push(handed.task);
    }
    batches
}

/// Why a worker's loss broke the pool, naming the worker and how it ended.
fn describe(worker: &Worker, end: &End, exit: &str) -> String {
    let who = format!("{} (pid {})", worker.name, worker.pid);
    let during = match worker.in_flight.len() {
        0 => String::new(),
        1 => " while running 1 task".to_string(),
        n => format!(" while running {n} tasks"),
    };
    match end {
        End::Eof => format!("{who} terminated abruptly{during}: {exit}"),
        End::Handshake(e) => format!("{who} failed the handshake: {e}"),
        End::Protocol(e) => format!("{who} sent a malformed message{during} and was stopped: {e}"),
    }
}

/// Why a worker of the first start failed it (the build error's reason).
fn describe_start(end: &End, exit: &str) -> String {
    match end {
        End::Handshake(ProtocolError::Truncated(_)) | End::Eof => {
            format!("it ended before the handshake ({exit})")
        }
        End::Handshake(e) | End::Protocol(e) => e.to_string(),
    }
}

/// What is wrong with `run` as the answer to a task of `calls` calls, if anything: a value
/// holds one outcome per call for a chunk (more than one call), and only for a chunk.
fn answer_mismatch(calls: usize, run: &TaskRun) -> Option<String> {
    let Ok(value) = &run.outcome else {
        return None;
    };
    match (calls, value.as_chunk().map(<[_]>::len)) {
        (1, None) => None,
        (1, Some(_)) => Some("is a chunk's, for a single call".to_string()),
        (calls, Some(outcomes)) if outcomes == calls => None,
        (calls, Some(outcomes)) => Some(format!(
            "holds {outcomes} outcomes for a chunk of {calls} calls"
        )),
        (calls, None) => Some(format!("is a single value, for a chunk of {calls} calls")),
    }
}

#[cfg(test)]
mod tests;
