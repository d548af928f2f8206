//! The pool's state and the rules that change it: which tasks wait, which worker runs what,
//! when a task is handed over, and what a broken pool does to everything in flight.
//!
//! Everything here runs under the pool's lock and does no I/O: frames go to the writer
//! threads through channels, and what must happen after the lock is released (resolving
//! futures, which runs their callbacks; killing or starting processes) is returned as
//! [`Effects`].
//!
//! Scheduling: a task is handed to the ready worker with the fewest tasks in flight, as long as
//! that worker has fewer than `pipeline_depth`; it becomes *running* at that moment, as in
//! CPython's process pool (tasks still in the queue can be cancelled, handed ones cannot).

use std::collections::{HashSet, VecDeque};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;

use crate::error::{ProtocolError, SubmitError, TaskError};
use crate::future::Promise;

use super::framing::Frame;
use super::pool::{ComponentEntry, Settings};
use super::process::exit_text;

pub(crate) enum Phase {
    Open,
    ShuttingDown,
    Broken(String),
}

pub(crate) struct State {
    pub(crate) phase: Phase,
    /// Tasks not handed to a worker yet (pending; cancellable).
    pub(crate) queue: VecDeque<Job>,
    pub(crate) workers: Vec<Worker>,
    /// Worker processes being started, not in `workers` yet.
    pub(crate) spawning: usize,
    /// Why the first worker that failed its handshake did (for the build error).
    pub(crate) startup_failure: Option<StartupFailure>,
    /// Every first worker greeted: from now on a worker that dies before its handshake is
    /// a replacement (which respawn mode may start again).
    pub(crate) started: bool,
    /// Replacements in a row that died before their handshake (reset by a greeting).
    pub(crate) failed_starts: u32,
}

/// How many replacements in a row may die before their handshake before a respawn pool
/// gives up and breaks: a worker program that cannot start must not be restarted forever,
/// but one replacement killed while it starts must not break the pool.
pub(crate) const MAX_FAILED_STARTS: u32 = 3;

pub(crate) struct StartupFailure {
    pub(crate) worker: String,
    pub(crate) reason: String,
    pub(crate) source: Option<ProtocolError>,
}

/// What the queue holds: one task, or a batch (`submit_batch`, `map_chunked`) handed to one
/// worker as a whole, in one write.
pub(crate) struct Job {
    /// Task ids and promises, in order.
    pub(crate) tasks: Vec<(u64, Promise)>,
    /// Their TASK frames, back to back.
    pub(crate) frames: Vec<u8>,
    /// Where each task's frame ends in `frames`.
    pub(crate) ends: Vec<usize>,
    pub(crate) component: Arc<ComponentEntry>,
}

impl Job {
    fn cancelled(&self) -> bool {
        self.tasks.iter().all(|(_, p)| p.is_cancelled())
    }

    /// Marks the tasks running, and keeps only those: a task cancelled while it waited in
    /// the queue is neither sent nor counted in flight. `None` if every one was cancelled.
    fn start(self) -> Option<Job> {
        let (mut all_started, mut any_started) = (true, false);
        for (_, promise) in &self.tasks {
            let started = promise.set_running_or_notify_cancel();
            all_started &= started;
            any_started |= started;
        }
        if all_started {
            return Some(self);
        }
        if !any_started {
            return None;
        }
        let Job {
            tasks: all,
            frames: all_frames,
            ends: all_ends,
            component,
        } = self;
        let (mut tasks, mut frames, mut ends) = (Vec::new(), Vec::new(), Vec::new());
        let mut begin = 0;
        for (task, end) in all.into_iter().zip(all_ends) {
            // Started tasks are running; the others were cancelled (and a started one
            // aborted just now is cancelled too, and needs no running either).
            if !task.1.is_cancelled() {
                frames.extend_from_slice(&all_frames[begin..end]);
                ends.push(frames.len());
                tasks.push(task);
            }
            begin = end;
        }
        (!tasks.is_empty()).then_some(Job {
            tasks,
            frames,
            ends,
            component,
        })
    }
}

/// One worker process, as the pool sees it.
pub(crate) struct Worker {
    pub(crate) serial: u64,
    pub(crate) name: Arc<str>,
    pub(crate) pid: u32,
    pub(crate) child: Arc<Mutex<Child>>,
    /// Frames to the worker's writer thread; `None` once the pool closed the worker (its
    /// stdin is then closed, and it exits after its last task).
    pub(crate) tx: Option<Sender<Frame>>,
    /// Handshake done: tasks may be handed to it.
    pub(crate) ready: bool,
    /// Ran its share of tasks (`max_tasks_per_worker`): gets no more, exits when idle.
    pub(crate) retiring: bool,
    pub(crate) assigned: usize,
    pub(crate) loaded: HashSet<u64>,
    /// Tasks handed to it and not answered yet, in the order they were sent.
    pub(crate) in_flight: VecDeque<(u64, Promise)>,
}

/// How a worker's channel ended, as its reader thread saw it.
pub(crate) enum End {
    /// End of stream between frames: the process exited (or closed its stdout).
    Eof,
    /// The first frame was not a valid greeting.
    Handshake(ProtocolError),
    /// A malformed frame, or a read error, after the handshake.
    Protocol(ProtocolError),
}

/// What to do once the state lock is released.
#[derive(Default)]
#[must_use]
pub(crate) struct Effects {
    pub(crate) failed: Vec<(Promise, TaskError)>,
    pub(crate) kill: Vec<Arc<Mutex<Child>>>,
    pub(crate) spawn: usize,
}

impl Effects {
    pub(crate) fn merge(&mut self, other: Effects) {
        self.failed.extend(other.failed);
        self.kill.extend(other.kill);
        self.spawn += other.spawn;
    }
}

impl Phase {
    pub(crate) fn check(&self) -> Result<(), SubmitError> {
        match self {
            Phase::Open => Ok(()),
            Phase::ShuttingDown => Err(SubmitError::Shutdown),
            Phase::Broken(reason) => Err(SubmitError::BrokenPool(reason.clone())),
        }
    }
}

impl State {
    pub(crate) fn worker_mut(&mut self, serial: u64) -> Option<&mut Worker> {
        self.workers.iter_mut().find(|w| w.serial == serial)
    }

    /// Hands queued tasks to workers with room, and closes workers that have nothing more
    /// to do (retired ones; all idle ones once the pool shuts down and the queue is empty).
    pub(crate) fn pump(&mut self, settings: &Settings) -> Effects {
        let mut fx = Effects::default();
        if matches!(self.phase, Phase::Broken(_)) {
            return fx;
        }
        loop {
            while self.queue.front().is_some_and(Job::cancelled) {
                self.queue.pop_front();
            }
            if self.queue.is_empty() {
                break;
            }
            let Some(w) = self.pick(settings.pipeline_depth) else {
                break;
            };
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            let Some(job) = job.start() else {
                continue;
            };
            let replace = matches!(self.phase, Phase::Open) || !self.queue.is_empty();
            let worker = &mut self.workers[w];
            worker.hand(job);
            if settings
                .max_tasks_per_worker
                .is_some_and(|max| worker.assigned >= max)
            {
                worker.retiring = true;
                if replace {
                    self.spawning += 1;
                    fx.spawn += 1;
                }
            }
        }
        let finished = matches!(self.phase, Phase::ShuttingDown) && {
            self.queue.retain(|job| !job.cancelled());
            self.queue.is_empty()
        };
        for worker in &mut self.workers {
            if worker.in_flight.is_empty() && (worker.retiring || finished) {
                worker.tx = None;
            }
        }
        fx
    }

    /// The ready worker with room and the fewest tasks in flight (the first of equals).
    fn pick(&self, depth: usize) -> Option<usize> {
        self.workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.ready && w.tx.is_some() && !w.retiring && w.in_flight.len() < depth)
            .min_by_key(|(_, w)| w.in_flight.len())
            .map(|(i, _)| i)
    }

    /// Marks the pool broken: every queued and in-flight task fails with `reason`, every
    /// worker is killed. Later submits fail at once.
    pub(crate) fn break_pool(&mut self, reason: String, fx: &mut Effects) {
        if matches!(self.phase, Phase::Broken(_)) {
            return;
        }
        let error = TaskError::BrokenPool {
            reason: reason.clone(),
        };
        self.phase = Phase::Broken(reason);
        for job in self.queue.drain(..) {
            for (_, promise) in job.tasks {
                fx.failed.push((promise, error.clone()));
            }
        }
        for worker in &mut self.workers {
            for (_, promise) in worker.in_flight.drain(..) {
                fx.failed.push((promise, error.clone()));
            }
            worker.tx = None;
            fx.kill.push(worker.child.clone());
        }
    }
}

impl Worker {
    /// Sends `job` to the worker (its component first, if the worker lacks it).
    fn hand(&mut self, job: Job) {
        if let Some(tx) = &self.tx {
            // A send fails only if the writer thread ended, i.e. the process is dying: the
            // reader thread will see that and fail the task with the rest.
            if self.loaded.insert(job.component.id) {
                let _ = tx.send(job.component.load.clone());
            }
            let _ = tx.send(Frame::Whole(job.frames));
        }
        self.assigned += job.tasks.len();
        self.in_flight.extend(job.tasks);
    }
}

/// Why a worker's loss broke the pool, naming the worker and how it ended.
pub(crate) fn describe(worker: &Worker, end: &End, status: Option<ExitStatus>) -> String {
    let who = format!("{} (pid {})", worker.name, worker.pid);
    let during = match worker.in_flight.len() {
        0 => String::new(),
        1 => " while running 1 task".to_string(),
        n => format!(" while running {n} tasks"),
    };
    match end {
        End::Eof => format!("{who} terminated abruptly{during}: {}", exit_text(status)),
        End::Handshake(e) => format!("{who} failed the handshake: {e}"),
        End::Protocol(e) => format!("{who} sent a malformed message{during} and was stopped: {e}"),
    }
}

pub(crate) fn describe_start(end: &End, status: Option<ExitStatus>) -> String {
    match end {
        End::Handshake(ProtocolError::Truncated(_)) | End::Eof => {
            format!("it ended before the handshake ({})", exit_text(status))
        }
        End::Handshake(e) | End::Protocol(e) => e.to_string(),
    }
}
