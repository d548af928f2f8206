//! The pool's state and its scheduling: which tasks wait, which worker runs what, when a
//! batch is handed over, and what a broken pool does to everything in flight. What each
//! event does to this state (a greeting, results, a lost worker, a submit, a shutdown) is
//! decided in `transitions.rs`.
//!
//! Everything here runs under the pool's lock and does no I/O: frames go to the writer
//! threads through channels, and what must happen after the lock is released (resolving
//! futures, which runs their callbacks; killing or starting processes) is returned as
//! [`Effects`]. Nothing here knows `pool.rs` or `process.rs`.
//!
//! Scheduling: a task is handed to the ready worker with the fewest tasks in flight, once
//! that worker is down to its refill mark, and the worker is then filled up to the pipeline
//! depth (`pace.rs`); a batch is handed whole, and a batch of short tasks as soon as the
//! worker is down to the batch's length (it then waits in the worker behind the one
//! running). A task becomes *running* when it is handed, as in CPython's process pool
//! (tasks still in the queue can be cancelled, handed ones cannot).

use std::collections::{HashSet, VecDeque};
use std::ops::Range;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::error::{ProtocolError, SubmitError, TaskError};
use crate::future::Promise;
use crate::report::RunReport;
use crate::value::TaskValue;

use super::framing::Frame;
use super::pace::Pace;

/// A worker process, shared by its reader thread (which reaps it) and the pool (which
/// signals it).
pub(crate) type ChildHandle = Arc<Mutex<Child>>;

/// The settings that the rules depend on.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    /// How many workers the pool keeps (at most, when `on_demand`).
    pub(crate) workers: usize,
    /// Start with one worker, and start more (up to `workers`) only when a task would
    /// otherwise wait: no idle worker is there to take it.
    pub(crate) on_demand: bool,
    pub(crate) respawn: bool,
    pub(crate) max_tasks_per_worker: Option<usize>,
    /// Tasks a worker may have in flight: fixed, or `None` to follow the tasks (`pace.rs`).
    pub(crate) pipeline_depth: Option<usize>,
}

pub(crate) enum Phase {
    Open,
    ShuttingDown,
    Broken(String),
}

pub(crate) struct State {
    pub(crate) rules: Rules,
    pub(crate) phase: Phase,
    /// Tasks not handed to a worker yet (pending; cancellable).
    pub(crate) queue: VecDeque<Batch>,
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
    /// The deadline watchdog thread runs (started with the first task that has a timeout).
    pub(crate) watchdog: bool,
    /// What the watchdog waits for: `Some(t)` until `t`, `None` until woken (or it is busy).
    pub(crate) watching: Option<Instant>,
    /// How many tasks each worker is handed ahead.
    pub(crate) pace: Pace,
}

/// Why the first worker that failed its handshake did (for the build error).
#[derive(Debug)]
pub(crate) struct StartupFailure {
    pub(crate) worker: String,
    pub(crate) reason: String,
    pub(crate) source: Option<ProtocolError>,
}

/// A component as the workers know it.
pub(crate) struct Component {
    pub(crate) id: u64,
    /// Its LOAD frame (the code shared, not copied).
    pub(crate) load: Frame,
}

/// A submitted task, as the pool keeps it until its result arrives.
pub(crate) struct Task {
    pub(crate) id: u64,
    pub(crate) promise: Promise,
    /// Its deadline (the call's budget over the pool's; for a chunk, the sum of its calls'),
    /// which the pool enforces too.
    pub(crate) timeout: Option<Duration>,
    /// The calls it runs: 1, or a chunk's (they count against `max_tasks_per_worker`).
    pub(crate) calls: usize,
}

/// What the queue holds: tasks handed to one worker as a whole, in one write (one task from
/// `submit`, a run of calls of one component from `submit_batch` or `map_chunked`).
pub(crate) struct Batch {
    /// The tasks, in order.
    pub(crate) tasks: Vec<Task>,
    /// Their TASK frames, back to back.
    pub(crate) frames: Vec<u8>,
    /// Where each task's frame ends in `frames`.
    pub(crate) ends: Vec<usize>,
    pub(crate) component: Arc<Component>,
    /// The tasks are running already: a worker that overran a deadline held them, and was
    /// stopped before it started them (see `State::on_overrun`).
    pub(crate) resumed: bool,
}

impl Batch {
    fn all_cancelled(&self) -> bool {
        self.tasks.iter().all(|t| t.promise.is_cancelled())
    }

    /// Marks the tasks running, and keeps only those: a task cancelled while it waited in
    /// the queue is neither sent nor counted in flight. `None` if every one was cancelled.
    fn start(self) -> Option<Batch> {
        let (mut all_started, mut any_started) = (true, false);
        for task in &self.tasks {
            let started = if self.resumed {
                !task.promise.is_cancelled()
            } else {
                task.promise.set_running_or_notify_cancel()
            };
            all_started &= started;
            any_started |= started;
        }
        if all_started {
            return Some(self);
        }
        if !any_started {
            return None;
        }
        let Batch {
            tasks: all,
            frames: all_frames,
            ends: all_ends,
            component,
            resumed,
        } = self;
        let (mut tasks, mut frames, mut ends) = (Vec::new(), Vec::new(), Vec::new());
        let mut begin = 0;
        for (task, end) in all.into_iter().zip(all_ends) {
            // Started tasks are running; the others were cancelled (and a started one
            // aborted just now is cancelled too, and needs no running either).
            if !task.promise.is_cancelled() {
                frames.extend_from_slice(&all_frames[begin..end]);
                ends.push(frames.len());
                tasks.push(task);
            }
            begin = end;
        }
        (!tasks.is_empty()).then_some(Batch {
            tasks,
            frames,
            ends,
            component,
            resumed,
        })
    }
}

/// One worker process, as the pool sees it.
pub(crate) struct Worker {
    pub(crate) serial: u64,
    pub(crate) name: Arc<str>,
    pub(crate) pid: u32,
    pub(crate) child: ChildHandle,
    /// Frames to the worker's writer thread; `None` once the pool closed the worker (its
    /// stdin is then closed, and it exits after its last task).
    pub(crate) tx: Option<Sender<Frame>>,
    /// Handshake done: tasks may be handed to it.
    pub(crate) ready: bool,
    /// Ran its share of tasks (`max_tasks_per_worker`): gets no more, exits when idle.
    pub(crate) retiring: bool,
    pub(crate) assigned: usize,
    pub(crate) loaded: HashSet<u64>,
    /// Tasks handed to it and not answered yet, in the order they were sent. The first one
    /// is running (or about to); the others wait behind it, in the worker.
    pub(crate) in_flight: VecDeque<Handed>,
    /// Since when the first task in flight has been the worker's to run: when it was handed,
    /// or when the result before it arrived. Never earlier than the worker really started it.
    pub(crate) head_since: Instant,
}

/// A task handed to a worker, with its TASK frame (to hand it to another worker if this
/// one is stopped before it starts the task).
pub(crate) struct Handed {
    pub(crate) task: Task,
    pub(crate) component: Arc<Component>,
    /// The frames of the batch it came in, shared with the worker's writer thread.
    pub(crate) frames: Arc<Vec<u8>>,
    /// Its own frame in `frames`.
    pub(crate) frame: Range<usize>,
}

/// How late a worker may answer past a task's deadline before the pool stops it: the
/// worker enforces the deadline itself, and its answer may travel behind a component's
/// first LOAD or a busy machine's scheduling.
pub(crate) fn deadline_grace(timeout: Duration) -> Duration {
    Duration::from_secs(2) + timeout / 10
}

impl Worker {
    /// A worker whose process was just started: not greeted yet, nothing handed to it.
    pub(crate) fn new(
        serial: u64,
        name: Arc<str>,
        pid: u32,
        child: ChildHandle,
        tx: Sender<Frame>,
    ) -> Worker {
        Worker {
            serial,
            name,
            pid,
            child,
            tx: Some(tx),
            ready: false,
            retiring: false,
            assigned: 0,
            loaded: HashSet::new(),
            in_flight: VecDeque::new(),
            head_since: Instant::now(),
        }
    }

    /// When the pool stops this worker if the first task in flight has not been answered:
    /// its deadline plus [`deadline_grace`], counted from [`head_since`](Self::head_since).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let timeout = self.in_flight.front()?.task.timeout?;
        self.head_since
            .checked_add(timeout)?
            .checked_add(deadline_grace(timeout))
    }
}

/// What to do once the state lock is released, in this order (see `Shared::settle`).
#[derive(Default)]
#[must_use]
pub(crate) struct Effects {
    /// Lines to log as warnings.
    pub(crate) warnings: Vec<String>,
    /// Wake whoever waits for the state to change (the startup wait, `wait_for_workers`).
    pub(crate) wake: bool,
    pub(crate) kill: Vec<ChildHandle>,
    /// Queued tasks that `shutdown(cancel_futures)` took out of the queue: to cancel.
    pub(crate) cancelled: Vec<Promise>,
    pub(crate) failed: Vec<(Promise, TaskError)>,
    /// Worker processes to start (already counted in `spawning`).
    pub(crate) spawn: usize,
    /// Tasks that a worker answered.
    pub(crate) completed: Vec<(Promise, Result<TaskValue, TaskError>, RunReport)>,
    /// The worker answered a task it was not running: its channel ends as a protocol error.
    pub(crate) violation: Option<ProtocolError>,
}

impl Effects {
    pub(crate) fn merge(&mut self, other: Effects) {
        self.warnings.extend(other.warnings);
        self.wake |= other.wake;
        self.kill.extend(other.kill);
        self.cancelled.extend(other.cancelled);
        self.failed.extend(other.failed);
        self.spawn += other.spawn;
        self.completed.extend(other.completed);
        if self.violation.is_none() {
            self.violation = other.violation;
        }
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
    pub(crate) fn new(rules: Rules) -> State {
        let pace = rules
            .pipeline_depth
            .map_or_else(Pace::adaptive, Pace::Fixed);
        State {
            pace,
            rules,
            phase: Phase::Open,
            queue: VecDeque::new(),
            workers: Vec::new(),
            spawning: 0,
            startup_failure: None,
            started: false,
            failed_starts: 0,
            watchdog: false,
            watching: None,
        }
    }

    /// Whether a submit may go ahead.
    pub(crate) fn check_open(&self) -> Result<(), SubmitError> {
        self.phase.check()
    }

    pub(crate) fn worker_mut(&mut self, serial: u64) -> Option<&mut Worker> {
        self.workers.iter_mut().find(|w| w.serial == serial)
    }

    /// Hands queued tasks to workers with room, and closes workers that have nothing more
    /// to do (retired ones; all idle ones once the pool shuts down and the queue is empty).
    pub(crate) fn pump(&mut self) -> Effects {
        let mut fx = Effects::default();
        if matches!(self.phase, Phase::Broken(_)) {
            return fx;
        }
        loop {
            while self.queue.front().is_some_and(Batch::all_cancelled) {
                self.queue.pop_front();
            }
            if self.queue.is_empty() {
                break;
            }
            let Some((w, depth)) = self.pick() else {
                break;
            };
            // Filled up to the depth in one go: its frames leave in one write.
            while let Some(batch) = self.queue.pop_front() {
                let Some(batch) = batch.start() else {
                    continue;
                };
                let replace = matches!(self.phase, Phase::Open) || !self.queue.is_empty();
                let worker = &mut self.workers[w];
                worker.hand(batch);
                if self
                    .rules
                    .max_tasks_per_worker
                    .is_some_and(|max| worker.assigned >= max)
                {
                    worker.retiring = true;
                    if replace {
                        self.spawning += 1;
                        fx.spawn += 1;
                    }
                    break;
                }
                if worker.in_flight.len() >= depth {
                    break;
                }
            }
        }
        self.grow(&mut fx);
        let finished = matches!(self.phase, Phase::ShuttingDown) && {
            self.queue.retain(|batch| !batch.all_cancelled());
            self.queue.is_empty()
        };
        for worker in &mut self.workers {
            if worker.in_flight.is_empty() && (worker.retiring || finished) {
                worker.tx = None;
            }
        }
        fx
    }

    /// The ready worker due more tasks, with the fewest in flight (the first of equals), and
    /// the depth to fill it to. A worker is due more once its tasks in flight are down to
    /// the pace's refill mark for the batch at the queue's front (`Pace::refill_before`).
    /// While an on-demand pool can still grow, only an idle worker has room: a task waits
    /// for a new worker rather than behind another task.
    fn pick(&self) -> Option<(usize, usize)> {
        let (depth, refill_at) = if self.can_grow() {
            (1, 0)
        } else {
            let depth = self.pace.depth();
            let next = self.queue.front().map_or(1, |batch| batch.tasks.len());
            (depth, self.pace.refill_before(depth, next))
        };
        self.workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.takes_tasks() && w.in_flight.len() <= refill_at)
            .min_by_key(|(_, w)| w.in_flight.len())
            .map(|(i, _)| (i, depth))
    }

    /// Workers that take tasks, or will once started.
    fn staffed(&self) -> usize {
        self.spawning
            + self
                .workers
                .iter()
                .filter(|w| w.tx.is_some() && !w.retiring)
                .count()
    }

    /// Whether an on-demand pool may start another worker.
    fn can_grow(&self) -> bool {
        self.rules.on_demand
            && matches!(self.phase, Phase::Open)
            && self.staffed() < self.rules.workers
    }

    /// An on-demand pool starts a worker for each batch left waiting (beyond the workers
    /// on their way: being started, or started and not greeted yet), up to its size.
    fn grow(&mut self, fx: &mut Effects) {
        let greeting = self
            .workers
            .iter()
            .filter(|w| !w.ready && w.tx.is_some())
            .count();
        while self.can_grow() && self.spawning + greeting < self.queue.len() {
            self.spawning += 1;
            fx.spawn += 1;
        }
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
        for batch in self.queue.drain(..) {
            for task in batch.tasks {
                fx.failed.push((task.promise, error.clone()));
            }
        }
        for worker in &mut self.workers {
            for handed in worker.in_flight.drain(..) {
                fx.failed.push((handed.task.promise, error.clone()));
            }
            worker.tx = None;
            fx.kill.push(worker.child.clone());
        }
    }
}

impl Worker {
    /// Greeted, open, and not retiring.
    fn takes_tasks(&self) -> bool {
        self.ready && self.tx.is_some() && !self.retiring
    }

    /// Sends `batch` to the worker (its component first, if the worker lacks it).
    fn hand(&mut self, batch: Batch) {
        let frames = Arc::new(batch.frames);
        if let Some(tx) = &self.tx {
            // A send fails only if the writer thread ended, i.e. the process is dying: the
            // reader thread will see that and fail the task with the rest.
            if self.loaded.insert(batch.component.id) {
                let _ = tx.send(batch.component.load.clone());
            }
            let _ = tx.send(Frame::Shared(frames.clone()));
        }
        if self.in_flight.is_empty() {
            self.head_since = Instant::now();
        }
        self.assigned += batch.tasks.iter().map(|t| t.calls).sum::<usize>();
        let mut begin = 0;
        for (task, end) in batch.tasks.into_iter().zip(batch.ends) {
            self.in_flight.push_back(Handed {
                task,
                component: batch.component.clone(),
                frames: frames.clone(),
                frame: begin..end,
            });
            begin = end;
        }
    }
}

// --- queries for the executor ----------------------------------------------------------------

impl State {
    /// The futures of the tasks the workers are running now.
    pub(crate) fn running(&self) -> Vec<crate::future::TaskFuture> {
        self.workers
            .iter()
            .flat_map(|w| w.in_flight.iter().map(|h| h.task.promise.future()))
            .collect()
    }

    /// The worker processes (alive, or exited and not reaped yet).
    pub(crate) fn children(&self) -> Vec<ChildHandle> {
        self.workers.iter().map(|w| w.child.clone()).collect()
    }

    pub(crate) fn pids(&self) -> Vec<u32> {
        self.workers.iter().map(|w| w.pid).collect()
    }

    pub(crate) fn broken_reason(&self) -> Option<String> {
        match &self.phase {
            Phase::Broken(reason) => Some(reason.clone()),
            _ => None,
        }
    }

    /// The earliest time at which a worker is to be stopped for overrunning a deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.workers.iter().filter_map(Worker::deadline).min()
    }

    /// Every worker has exited and been reaped, and none is being started.
    pub(crate) fn all_gone(&self) -> bool {
        self.workers.is_empty() && self.spawning == 0
    }
}
