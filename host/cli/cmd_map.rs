//! `wasmpool map`: one function over many input lines, on a pool, streamed.
//!
//! One loop on the main thread waits on three channels at once: parsed input lines (from
//! `input.rs`, only while there is room in the window), finished tasks (each future's done
//! callback sends its index), and Ctrl-C. The window bounds the work in memory: at most
//! `4 × workers` tasks are submitted and not yet printed (in input order, finished tasks
//! wait for their predecessors inside the window; with `--as-completed` only the running
//! ones count).
//!
//! A task that timed out or whose worker died runs again, up to `--retries` times. A pool
//! that reports itself broken (a worker process died) is replaced by a new one, so one crash
//! fails only the tasks it took with it.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use crossbeam_channel::{Receiver, Sender, select};
use wasmpool::{Call, Executor, OutputMode, SubmitError, TaskError, TaskFuture};

use super::args::{MapArgs, OutputFormat};
use super::cache;
use super::input::{self, Input};
use super::interrupt::{self, INTERRUPTED};
use super::joblog::{JobLog, Logged, Resume};
use super::pool_settings::{ClusterTarget, Pool, PoolSettings, instance_policy};
use super::print::{CAPTURE_LIMIT, Failure, TaskRecord};
use super::progress::Progress;

/// The exit status when stdout was closed under us (128 + SIGPIPE, as a shell reports it).
const BROKEN_PIPE: u8 = 141;

/// How long a broken-pool outcome waits for a Ctrl-C that may have caused it.
const SIGNAL_GRACE: Duration = Duration::from_millis(200);

/// Tasks in the window per worker.
const WINDOW_PER_WORKER: usize = 4;

/// Runs `wasmpool map`.
pub fn map(args: &MapArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    let sandbox = args.sandbox.resolve()?;
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
    let source: Box<dyn BufRead + Send> = match input_file {
        Some(path) => Box::new(BufReader::new(
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => Box::new(BufReader::new(io::stdin())),
    };

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
    let window = workers.saturating_mul(WINDOW_PER_WORKER).max(1);
    let inputs = input::spawn(
        source,
        component,
        args.function.clone(),
        args.input,
        logged,
        window,
    )
    .context("cannot start the input reader")?;
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    let driver = Driver {
        settings: &settings,
        interrupts,
        pool,
        retired: Vec::new(),
        function: &args.function,
        format: args.output,
        as_completed: args.as_completed,
        retries: args.retries,
        window,
        running: HashMap::new(),
        order: VecDeque::new(),
        ready: HashMap::new(),
        done_tx,
        joblog,
        progress,
        any_failed: false,
        printed: 0,
    };
    driver.run(&inputs, &done_rx)
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
    function: &'a str,
    format: OutputFormat,
    as_completed: bool,
    retries: u32,
    window: usize,
    running: HashMap<u64, Running>,
    /// In input order: the indices read and not printed yet (not with `--as-completed`).
    order: VecDeque<u64>,
    /// Finished tasks waiting for an earlier one to be printed.
    ready: HashMap<u64, TaskRecord>,
    /// Done callbacks send `(index, attempt)` here.
    done_tx: Sender<(u64, u32)>,
    joblog: Option<JobLog>,
    progress: Progress,
    any_failed: bool,
    printed: u64,
}

impl Driver<'_> {
    fn run(
        mut self,
        inputs: &Receiver<input::Message>,
        done: &Receiver<(u64, u32)>,
    ) -> anyhow::Result<ExitCode> {
        let interrupts = self.interrupts.clone();
        let never = crossbeam_channel::never();
        let mut input_open = true;
        let mut input_error = None;
        loop {
            let outstanding = if self.as_completed {
                self.running.len()
            } else {
                self.order.len()
            };
            if !input_open && outstanding == 0 {
                break;
            }
            let source = if input_open && outstanding < self.window {
                inputs
            } else {
                &never
            };
            let step = select! {
                recv(source) -> message => match message {
                    Ok(Ok(input)) => self.start(input).map(|()| Interrupted::No),
                    Ok(Err(e)) => {
                        input_error = Some(e);
                        input_open = false;
                        Ok(Interrupted::No)
                    }
                    Err(_) => {
                        input_open = false;
                        Ok(Interrupted::No)
                    }
                },
                recv(done) -> event => match event {
                    Ok((index, attempt)) => self.task_done(index, attempt),
                    Err(_) => Ok(Interrupted::No),
                },
                recv(interrupts) -> _ => return Ok(self.stop(StopReason::Interrupted)),
            };
            let step = match step {
                Ok(Interrupted::Yes) => return Ok(self.stop(StopReason::Interrupted)),
                Ok(Interrupted::No) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = step {
                if is_broken_pipe(&e) {
                    return Ok(self.stop(StopReason::StdoutClosed));
                }
                self.stop(StopReason::Error);
                return Err(e);
            }
        }
        self.progress.finish();
        if let Some(e) = input_error {
            return Err(e);
        }
        Ok(if self.any_failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }

    /// Submits the task of one input line (or records a line that is not a valid call).
    fn start(&mut self, input: Input) -> anyhow::Result<()> {
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
            }),
            Ok(call) => {
                let future = self.submit(&call);
                self.watch(&future, input.index, 1);
                self.running.insert(
                    input.index,
                    Running {
                        input: input.text,
                        call,
                        future,
                        attempt: 1,
                    },
                );
                Ok(())
            }
        }
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
            running.future = self.submit(&running.call);
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

    /// Submits `call`; a pool that says it is broken is replaced by a new one first. Never
    /// fails: a task that cannot be submitted gets a future that failed.
    fn submit(&mut self, call: &Call) -> TaskFuture {
        match self.pool.submit(call.clone()) {
            Ok(future) => return future,
            Err(SubmitError::BrokenPool(reason)) => {
                self.progress.suspend(|| {
                    eprintln!("wasmpool: the pool is broken ({reason}); starting a new one");
                });
            }
            // Shutdown cannot happen (the driver submits before it shuts a pool down);
            // a call that does not fit the pool is `incompatible`, not retried.
            Err(e) => return TaskFuture::failed(e.into()),
        }
        match self.settings.build() {
            Ok(pool) => {
                let old = std::mem::replace(&mut self.pool, pool.executor);
                old.shutdown(false, true);
                self.retired.push(old);
                self.pool
                    .submit(call.clone())
                    .unwrap_or_else(|e| TaskFuture::failed(e.into()))
            }
            Err(e) => TaskFuture::failed(TaskError::BrokenPool {
                reason: format!("cannot start a new pool: {e:#}"),
            }),
        }
    }

    /// Makes `future` report `(index, attempt)` to the main loop when it is done.
    fn watch(&self, future: &TaskFuture, index: u64, attempt: u32) {
        let done = self.done_tx.clone();
        future.add_done_callback(move |_| {
            // The loop has stopped listening only when the map is over.
            let _ = done.send((index, attempt));
        });
    }

    /// A task has its final outcome: print it now (`--as-completed`, or when it is next in
    /// input order), or keep it until its predecessors are printed.
    fn finish(&mut self, record: TaskRecord) -> anyhow::Result<()> {
        self.progress.task_done(record.is_ok());
        self.any_failed |= !record.is_ok();
        if self.as_completed {
            return self.print(&record);
        }
        if let Some(index) = record.index {
            self.ready.insert(index, record);
        }
        while let Some(record) = self.order.front().and_then(|i| self.ready.remove(i)) {
            self.order.pop_front();
            self.print(&record)?;
        }
        Ok(())
    }

    /// Prints one task and logs it in the joblog (after printing: the log never lists a
    /// result that was not shown).
    fn print(&mut self, record: &TaskRecord) -> anyhow::Result<()> {
        let format = self.format;
        let function = self.function;
        self.progress.suspend(|| -> io::Result<()> {
            let mut stdout = io::stdout().lock();
            match format {
                OutputFormat::Json => record.write_json(&mut stdout)?,
                OutputFormat::Text => {
                    record.write_text(function, &mut stdout, &mut io::stderr().lock())?
                }
            }
            stdout.flush()
        })?;
        self.printed += 1;
        if let Some(log) = &mut self.joblog {
            log.record(record)?;
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
            for record in &ready {
                if self.print(record).is_err() {
                    break;
                }
            }
        }
        if reason == StopReason::Interrupted {
            let resume = if self.joblog.is_some() {
                "; run it again with --resume to go on"
            } else {
                ""
            };
            eprintln!(
                "wasmpool: interrupted: {} task(s) printed, {aborted} unfinished task(s) aborted{resume}",
                self.printed
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

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}
