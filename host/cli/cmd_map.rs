//! `wasmpool map`: one function over many input lines, on a pool, streamed.
//!
//! One loop on the main thread takes, each turn, everything that is ready without waiting:
//! every finished task (each future's done callback adds its index to a shared list,
//! `finished.rs`), then as many parsed input lines (sent in chunks by `input.rs`) as there
//! is room for in the window, which are submitted together. Only when nothing is ready does
//! it flush what it printed (stdout first, then the joblog lines of those results) and wait
//! for input, Ctrl-C, or finished tasks: once tasks are known to be short, for a quarter of
//! those running (or [`MAX_WAIT`]), so a busy pool wakes it once per batch, not per task.
//! Output is also flushed whenever its buffer fills.
//!
//! The window bounds the work in memory: at most [`window`] tasks (64 to 512 per worker,
//! more for shorter tasks, `window.rs`) are submitted and not yet printed (in input order,
//! finished tasks wait for their predecessors inside the window; with `--as-completed` only
//! the running ones count).
//! Lines that are ready together go to the pool in batches (`submit_batch`: one queue
//! operation, one message to a worker process) once the tasks are known to be short: a
//! batch runs on one worker, so its size is what the worker runs in about a millisecond
//! at the tasks' mean time, spread over the workers (`batch.rs`).
//!
//! A task that timed out or whose worker died runs again, up to `--retries` times. A pool
//! that reports itself broken (a worker process died) is replaced by a new one, so one crash
//! fails only the tasks it took with it.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use crossbeam_channel::{Receiver, TryRecvError, select};
use wasmpool::{Call, Executor, OutputMode, SubmitError, TaskError, TaskFuture};

use super::args::MapArgs;
use super::cache;
use super::input::{self, Input};
use super::interrupt::{self, INTERRUPTED};
use super::joblog::{JobLog, Logged, Resume};
use super::pool_settings::{ClusterTarget, Pool, PoolSettings, instance_policy};
use super::print::{CAPTURE_LIMIT, Failure, TaskRecord};
use super::progress::Progress;
use batch::{BATCH_TIME, MAX_BATCH, batch_size};
use finished::{Finished, Reporter};
use output::Output;
use window::window;

mod batch;
mod finished;
mod output;
mod window;

/// The exit status when stdout was closed under us (128 + SIGPIPE, as a shell reports it).
const BROKEN_PIPE: u8 = 141;

/// How long a broken-pool outcome waits for a Ctrl-C that may have caused it.
const SIGNAL_GRACE: Duration = Duration::from_millis(200);

/// The longest the loop waits for more than one finished task.
const MAX_WAIT: Duration = Duration::from_millis(2);

/// How much one finished task moves the mean task time (an exponential moving average).
const MEAN_WEIGHT: f64 = 1.0 / 16.0;

/// Runs `wasmpool map`.
pub fn map(args: &MapArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    let mut sandbox = args.sandbox.resolve()?;
    sandbox.size_pool_for(args.workers);
    let settings = PoolSettings {
        kind: args.pool,
        workers: args.workers,
        budget: sandbox.budget,
        capabilities: sandbox.capabilities,
        // Kept per task and printed with its result, so outputs of tasks never interleave
        // (and JSON lines stay JSON).
        output: OutputMode::Capture {
            limit: CAPTURE_LIMIT,
        },
        policy: instance_policy(args.reuse),
        initializer: args.init.clone(),
        cluster: ClusterTarget::from_args(&args.cluster, args.queue_timeout),
    };
    settings.check_available()?;
    let component = cache::load(&args.load, sandbox.runtime, verbose)?;
    component
        .function(&args.function)
        .map_err(|e| anyhow!("{}: {e}", component.origin()))?;
    settings.check_initializer(&component)?;

    let input_file = args.inputs.as_ref().filter(|p| p.as_os_str() != "-");
    let source: input::Source = BufReader::new(match input_file {
        Some(path) => {
            Box::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
        }
        None => Box::new(io::stdin()),
    });

    let resume = match (args.resume, args.resume_failed) {
        (true, _) => Resume::All,
        (false, true) => Resume::Succeeded,
        (false, false) => Resume::No,
    };
    let (joblog, logged) = match &args.joblog {
        Some(path) => {
            let (log, logged) = JobLog::open(path, &args.function, &args.load.component, resume)?;
            (Some(log), logged)
        }
        None => (None, Logged::default()),
    };
    let logged = Arc::new(logged);

    let progress = Progress::new(!args.no_progress);
    if let Some(path) = input_file.filter(|_| progress.is_shown()) {
        count_in_background(path.clone(), logged.clone(), progress.total_setter());
    }

    let interrupts = interrupt::install()?;
    let Pool {
        executor: pool,
        workers,
    } = settings.build()?;
    let inputs = input::spawn(
        source,
        component,
        args.function.clone(),
        args.input,
        logged,
        window(None, workers),
    )
    .context("cannot start the input reader")?;
    let finished = Finished::new();
    let driver = Driver {
        settings: &settings,
        interrupts,
        pool,
        retired: Vec::new(),
        as_completed: args.as_completed,
        retries: args.retries,
        running: HashMap::new(),
        order: VecDeque::new(),
        ready: HashMap::new(),
        reporter: finished.reporter(),
        any_failed: false,
        workers: workers.max(1),
        mean_task: None,
        output: Output::new(args.output, &args.function, joblog, progress.clone()),
        progress,
    };
    driver.run(&inputs, finished)
}

/// Counts the tasks of the input file on a thread, for the progress bar's total.
fn count_in_background(
    path: PathBuf,
    logged: Arc<Logged>,
    set_total: impl Fn(u64) + Send + 'static,
) {
    let spawned = std::thread::Builder::new()
        .name("count".into())
        .spawn(move || {
            let counted = File::open(&path)
                .and_then(|file| input::count_tasks(BufReader::new(file), &logged));
            if let Ok(total) = counted {
                set_total(total);
            }
        });
    // Without a count the bar just has no total.
    drop(spawned);
}

/// A task submitted and not finished.
struct Running {
    input: String,
    call: Call,
    future: TaskFuture,
    attempt: u32,
}

/// The state of one map.
struct Driver<'a> {
    settings: &'a PoolSettings,
    /// One message per Ctrl-C (or SIGTERM).
    interrupts: Receiver<()>,
    pool: Box<dyn Executor>,
    /// Pools replaced after they broke; dropped (joined) at the end.
    retired: Vec<Box<dyn Executor>>,
    as_completed: bool,
    retries: u32,
    running: HashMap<u64, Running>,
    /// In input order: the indices read and not printed yet (not with `--as-completed`).
    order: VecDeque<u64>,
    /// Finished tasks waiting for an earlier one to be printed.
    ready: HashMap<u64, TaskRecord>,
    /// Done callbacks report `(index, attempt)` here.
    reporter: Reporter,
    progress: Progress,
    any_failed: bool,
    workers: usize,
    /// The mean time of the tasks that ran, in seconds; `None` before the first one.
    mean_task: Option<f64>,
    output: Output<'a>,
}

/// What one turn of the main loop came to.
enum Turn {
    Go,
    End,
    Interrupted,
}

/// The state of the input as the main loop sees it.
struct InputState {
    open: bool,
    /// Inputs received and not submitted yet (the rest of a chunk the window had no room for).
    received: VecDeque<Input>,
    /// The error that ended the input, reported at the end.
    error: Option<anyhow::Error>,
}

impl InputState {
    /// Whether no input is left, received or to come.
    fn is_over(&self) -> bool {
        !self.open && self.received.is_empty()
    }

    /// Takes up to `room` inputs: those received first, then what the reader has sent.
    fn take(&mut self, inputs: &Receiver<input::Message>, room: usize) -> Vec<Input> {
        while self.open && self.received.len() < room {
            match inputs.try_recv() {
                Ok(message) => self.receive(message),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.open = false,
            }
        }
        let n = room.min(self.received.len());
        self.received.drain(..n).collect()
    }

    /// Keeps what the reader sent, or ends the input at its error.
    fn receive(&mut self, message: input::Message) {
        match message {
            Ok(lines) => self.received.extend(lines),
            Err(e) => {
                self.error = Some(e);
                self.open = false;
            }
        }
    }
}

impl Driver<'_> {
    fn run(
        mut self,
        inputs: &Receiver<input::Message>,
        mut finished: Finished,
    ) -> anyhow::Result<ExitCode> {
        let mut input = InputState {
            open: true,
            received: VecDeque::new(),
            error: None,
        };
        let ended = loop {
            match self.turn(inputs, &mut finished, &mut input) {
                Ok(Turn::Go) => {}
                Ok(Turn::End) => break self.output.flush(),
                Ok(Turn::Interrupted) => return Ok(self.stop(StopReason::Interrupted)),
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = ended {
            if is_broken_pipe(&e) {
                return Ok(self.stop(StopReason::StdoutClosed));
            }
            self.stop(StopReason::Error);
            return Err(e);
        }
        self.progress.finish();
        if let Some(e) = input.error {
            return Err(e);
        }
        Ok(if self.any_failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }

    /// How many tasks may be outstanding, for the tasks' mean time so far (`window.rs`).
    fn window(&self) -> usize {
        window(self.mean_task, self.workers)
    }

    /// Tasks submitted and not done with: not printed, or (`--as-completed`) not finished.
    fn outstanding(&self) -> usize {
        if self.as_completed {
            self.running.len()
        } else {
            self.order.len()
        }
    }

    /// One turn: takes what is ready; when nothing is, flushes the output and waits.
    fn turn(
        &mut self,
        inputs: &Receiver<input::Message>,
        finished: &mut Finished,
        input: &mut InputState,
    ) -> anyhow::Result<Turn> {
        if self.interrupts.try_recv().is_ok() {
            return Ok(Turn::Interrupted);
        }
        let done = finished.take();
        let busy = !done.is_empty();
        for &(index, attempt) in &done {
            if self.task_done(index, attempt)? == Interrupted::Yes {
                return Ok(Turn::Interrupted);
            }
        }
        finished.recycle(done);
        let lines = input.take(inputs, self.window().saturating_sub(self.outstanding()));
        if !lines.is_empty() {
            self.start(lines)?;
            return Ok(Turn::Go);
        }
        if busy {
            return Ok(Turn::Go);
        }
        if input.is_over() && self.outstanding() == 0 {
            return Ok(Turn::End);
        }
        // Nothing is ready: what was printed goes out before the loop waits.
        self.output.flush()?;
        let threshold = self.wake_threshold();
        if !finished.arm(threshold) {
            finished.disarm();
            return Ok(Turn::Go);
        }
        let never = crossbeam_channel::never();
        let source = if input.open && self.outstanding() < self.window() {
            inputs
        } else {
            &never
        };
        // Waiting for more than one task is bounded in time: tasks can turn slow.
        let timer = if threshold > 1 {
            crossbeam_channel::after(MAX_WAIT)
        } else {
            crossbeam_channel::never()
        };
        let interrupts = self.interrupts.clone();
        let interrupted = select! {
            recv(source) -> message => {
                match message {
                    Ok(message) => input.receive(message),
                    Err(_) => input.open = false,
                }
                false
            },
            recv(finished.wake()) -> _ => false,
            recv(timer) -> _ => false,
            recv(interrupts) -> _ => true,
        };
        finished.disarm();
        Ok(if interrupted {
            Turn::Interrupted
        } else {
            Turn::Go
        })
    }

    /// How many finished tasks wake the waiting loop: one while tasks are not known to be
    /// short; else a quarter of those running (at most [`MAX_BATCH`]), so that the workers
    /// still hold three quarters of their work when the loop refills the window.
    fn wake_threshold(&self) -> usize {
        match self.mean_task {
            Some(mean) if mean < BATCH_TIME.as_secs_f64() => {
                (self.running.len() / 4).clamp(1, MAX_BATCH)
            }
            _ => 1,
        }
    }

    /// Submits the tasks of input lines read together (and records the lines that are not
    /// valid calls), in batches of [`batch_size`].
    fn start(&mut self, lines: Vec<Input>) -> anyhow::Result<()> {
        let mut calls = Vec::with_capacity(lines.len());
        for input in lines {
            if !self.as_completed {
                self.order.push_back(input.index);
            }
            match input.call {
                Err(message) => self.finish(TaskRecord {
                    index: Some(input.index),
                    input: Some(input.text),
                    outcome: Err(Failure::InvalidInput(message)),
                    report: None,
                    attempt: 1,
                })?,
                Ok(call) => calls.push((input.index, input.text, call)),
            }
        }
        let size = batch_size(self.mean_task, calls.len(), self.workers);
        let mut calls = calls.into_iter().peekable();
        while calls.peek().is_some() {
            let batch: Vec<_> = calls.by_ref().take(size).collect();
            let futures = self.submit(batch.iter().map(|(_, _, call)| call.clone()).collect());
            for ((index, input, call), future) in batch.into_iter().zip(futures) {
                self.watch(&future, index, 1);
                let running = Running {
                    input,
                    call,
                    future,
                    attempt: 1,
                };
                self.running.insert(index, running);
            }
        }
        Ok(())
    }

    /// A done callback fired: retry the task, or record it as finished.
    fn task_done(&mut self, index: u64, attempt: u32) -> anyhow::Result<Interrupted> {
        if self
            .running
            .get(&index)
            .is_none_or(|r| r.attempt != attempt)
        {
            return Ok(Interrupted::No);
        }
        // Done: `result` does not block.
        let outcome = self.running[&index].future.result();
        // Ctrl-C in a terminal signals the whole foreground process group: worker processes
        // die of it at the moment this process is told. Such a "crash" is the interruption,
        // not a failure of the task: give the signal a moment to arrive before believing it.
        if matches!(outcome, Err(TaskError::BrokenPool { .. }))
            && self.interrupts.recv_timeout(SIGNAL_GRACE).is_ok()
        {
            return Ok(Interrupted::Yes);
        }
        let Some(mut running) = self.running.remove(&index) else {
            return Ok(Interrupted::No);
        };
        let outcome = outcome.map_err(Failure::Task);
        if let Err(failure) = &outcome
            && failure.is_retryable()
            && running.attempt <= self.retries
        {
            running.attempt += 1;
            running.future = self.submit_one(&running.call);
            self.watch(&running.future, index, running.attempt);
            self.running.insert(index, running);
            return Ok(Interrupted::No);
        }
        self.finish(TaskRecord {
            index: Some(index),
            input: Some(running.input),
            outcome,
            report: running.future.report(),
            attempt: running.attempt,
        })?;
        Ok(Interrupted::No)
    }

    /// Submits `call` alone (see [`Driver::submit`]).
    fn submit_one(&mut self, call: &Call) -> TaskFuture {
        let futures = self.submit(vec![call.clone()]);
        futures
            .into_iter()
            .next()
            .unwrap_or_else(|| TaskFuture::failed(TaskError::Cancelled))
    }

    /// Submits `calls` as one batch (one call: on its own); a pool that says it is broken
    /// is replaced by a new one first. Never fails: a task that cannot be submitted gets a
    /// future that failed. Returns one future per call, in order.
    fn submit(&mut self, calls: Vec<Call>) -> Vec<TaskFuture> {
        let failed = |e: SubmitError, n: usize| failed_all(&e.into(), n);
        let n = calls.len();
        match submit_to(&*self.pool, &calls) {
            Ok(futures) => return futures,
            Err(SubmitError::BrokenPool(reason)) => {
                self.progress.suspend(|| {
                    eprintln!("wasmpool: the pool is broken ({reason}); starting a new one");
                });
            }
            // Shutdown cannot happen (the driver submits before it shuts a pool down);
            // a call that does not fit the pool is `incompatible`, not retried.
            Err(e) => return failed(e, n),
        }
        match self.settings.build() {
            Ok(pool) => {
                let old = std::mem::replace(&mut self.pool, pool.executor);
                old.shutdown(false, true);
                self.retired.push(old);
                submit_to(&*self.pool, &calls).unwrap_or_else(|e| failed(e, n))
            }
            Err(e) => failed_all(
                &TaskError::BrokenPool {
                    reason: format!("cannot start a new pool: {e:#}"),
                },
                n,
            ),
        }
    }

    /// Makes `future` report `(index, attempt)` to the main loop when it is done.
    fn watch(&self, future: &TaskFuture, index: u64, attempt: u32) {
        let reporter = self.reporter.clone();
        future.add_done_callback(move |_| reporter.report((index, attempt)));
    }

    /// A task has its final outcome: print it now (`--as-completed`, or when it is next in
    /// input order), or keep it until its predecessors are printed.
    fn finish(&mut self, record: TaskRecord) -> anyhow::Result<()> {
        if let Some(report) = &record.report {
            let elapsed = report.elapsed.as_secs_f64();
            self.mean_task = Some(match self.mean_task {
                None => elapsed,
                Some(mean) => mean + (elapsed - mean) * MEAN_WEIGHT,
            });
        }
        self.progress.task_done(record.is_ok());
        self.any_failed |= !record.is_ok();
        if self.as_completed {
            return self.output.print(&record);
        }
        if let Some(index) = record.index {
            self.ready.insert(index, record);
        }
        while let Some(record) = self.order.front().and_then(|i| self.ready.remove(i)) {
            self.order.pop_front();
            self.output.print(&record)?;
        }
        Ok(())
    }

    /// Stops early: aborts the running tasks, prints (and logs) the finished ones that were
    /// waiting for their turn, and says what happened. Returns the exit status.
    fn stop(mut self, reason: StopReason) -> ExitCode {
        let mut aborted = 0;
        let mut running: Vec<(u64, Running)> = self.running.drain().collect();
        running.sort_by_key(|(index, _)| *index);
        for (index, task) in running {
            // `abort` is false for a task that finished meanwhile: it keeps its outcome,
            // unless its worker died of the same Ctrl-C (see `task_done`).
            if task.future.abort()
                || (reason == StopReason::Interrupted
                    && matches!(task.future.result(), Err(TaskError::BrokenPool { .. })))
            {
                aborted += 1;
                continue;
            }
            let record = TaskRecord {
                index: Some(index),
                input: Some(task.input),
                outcome: task.future.result().map_err(Failure::Task),
                report: task.future.report(),
                attempt: task.attempt,
            };
            self.any_failed |= !record.is_ok();
            self.ready.insert(index, record);
        }
        self.pool.shutdown(false, true);
        self.progress.finish();
        let mut ready: Vec<TaskRecord> = self.ready.drain().map(|(_, r)| r).collect();
        ready.sort_by_key(|r| r.index);
        if reason != StopReason::StdoutClosed {
            let printed = ready
                .iter()
                .try_for_each(|record| self.output.print(record));
            // What cannot be written now is lost, and so is its joblog line.
            let _ = printed.and_then(|()| self.output.flush());
        }
        if reason == StopReason::Interrupted {
            let resume = if self.output.has_joblog() {
                "; run it again with --resume to go on"
            } else {
                ""
            };
            eprintln!(
                "wasmpool: interrupted: {} task(s) printed, {aborted} unfinished task(s) aborted{resume}",
                self.output.printed()
            );
        }
        // Every child is gone before the exit status is: the aborted tasks stop, and a
        // process-pool worker that does not stop within its grace is killed and reaped (no
        // worker outlives the map, nor lingers unreaped under pid 1).
        self.pool.shutdown_now();
        for pool in &self.retired {
            pool.shutdown_now();
        }
        match reason {
            StopReason::Interrupted => ExitCode::from(INTERRUPTED),
            StopReason::StdoutClosed => ExitCode::from(BROKEN_PIPE),
            StopReason::Error => ExitCode::from(2),
        }
    }
}

/// Whether the user interrupted the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupted {
    Yes,
    No,
}

/// Why a map stopped before its input ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Interrupted,
    StdoutClosed,
    Error,
}

/// `n` futures that failed with `error`.
fn failed_all(error: &TaskError, n: usize) -> Vec<TaskFuture> {
    (0..n).map(|_| TaskFuture::failed(error.clone())).collect()
}

/// Submits `calls`: one alone, several as a batch.
fn submit_to(pool: &dyn Executor, calls: &[Call]) -> Result<Vec<TaskFuture>, SubmitError> {
    match calls {
        [call] => pool.submit(call.clone()).map(|future| vec![future]),
        _ => pool.submit_batch(calls.to_vec()),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}
