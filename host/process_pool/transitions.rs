//! The rules: what each event does to the pool's [`State`], returned as [`Effects`].
//!
//! The reader threads report [`Event`]s (a greeting, results, the end of a worker's
//! channel); the executor's calls submit, shut down, abort and start. Every decision lives
//! here: which result answers which task, when a lost worker breaks the pool and when respawn
//! mode replaces it, when the startup is over, what the reason texts say. Like `state.rs`
//! (which does the scheduling), this file does no I/O and knows neither `pool.rs` nor
//! `process.rs`.

use crossbeam_channel::Sender;

use crate::error::{ProtocolError, SubmitError, TaskError};
use crate::run::TaskRun;

use super::framing::Frame;
use super::state::{Batch, Effects, Phase, State, Worker};

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

/// Why the first worker that failed its handshake did (for the build error).
#[derive(Debug)]
pub(crate) struct StartupFailure {
    pub(crate) worker: String,
    pub(crate) reason: String,
    pub(crate) source: Option<ProtocolError>,
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
        for (id, run) in results {
            let Some(i) = w.in_flight.iter().position(|(t, _)| *t == id) else {
                if !broken {
                    fx.violation = Some(ProtocolError::Malformed(format!(
                        "a result for task {id}, which it was not running"
                    )));
                    break;
                }
                continue;
            };
            let Some((_, promise)) = w.in_flight.remove(i) else {
                continue;
            };
            if run.breaks_pool {
                // The pool's initializer failed: concurrent.futures breaks the pool.
                breaks_pool = Some(match &run.outcome {
                    Err(TaskError::BrokenPool { reason }) => reason.clone(),
                    _ => format!("the initializer failed in {name}"),
                });
            }
            let report = run.report(&name, pid, 1);
            fx.completed.push((promise, run.outcome, report));
        }
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
                for (_, promise) in worker.in_flight {
                    fx.failed.push((promise, error.clone()));
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
                for (_, promise) in worker.in_flight {
                    fx.failed.push((promise, error.clone()));
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
                .map(|(_, promise)| promise)
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

    /// Where an ABORT for `task` goes: the channel to the worker running it, if any.
    pub(crate) fn abort_route(&self, task: u64) -> Option<Sender<Frame>> {
        self.workers
            .iter()
            .find(|w| w.in_flight.iter().any(|(t, _)| *t == task))
            .and_then(|w| w.tx.clone())
    }
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

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use crossbeam_channel::unbounded;

    use super::super::state::{Component, Rules};
    use super::*;
    use crate::future::{TaskFuture, promise};

    const PID: u32 = 4242;

    fn state(respawn: bool) -> State {
        let mut st = State::new(Rules {
            respawn,
            max_tasks_per_worker: None,
            pipeline_depth: 2,
        });
        st.started = true;
        st
    }

    /// Registers worker `serial` (greeted if `ready`) running `tasks`.
    fn add(st: &mut State, serial: u64, ready: bool, tasks: &[u64]) -> Vec<TaskFuture> {
        let child = Command::new("true").spawn().expect("true runs");
        let (tx, _rx) = unbounded();
        let name: Arc<str> = Arc::from(format!("worker-{serial}"));
        let mut worker = Worker::new(serial, name, PID, Arc::new(Mutex::new(child)), tx);
        worker.ready = ready;
        let mut futures = Vec::new();
        for &id in tasks {
            let (promise, future) = promise();
            assert!(promise.set_running_or_notify_cancel());
            worker.in_flight.push_back((id, promise));
            futures.push(future);
        }
        st.spawning += 1;
        assert!(st.on_spawned(worker));
        futures
    }

    fn gone(serial: u64, end: End, exit: &str) -> Event {
        Event::Gone {
            serial,
            end,
            exit: exit.to_string(),
        }
    }

    fn reasons(fx: &Effects) -> Vec<String> {
        fx.failed
            .iter()
            .map(|(_, e)| match e {
                TaskError::BrokenPool { reason } => reason.clone(),
                other => panic!("not a broken pool: {other:?}"),
            })
            .collect()
    }

    fn run(outcome: Result<crate::value::TaskValue, TaskError>) -> TaskRun {
        let mut run = TaskRun::failed(TaskError::Cancelled, Duration::ZERO);
        run.outcome = outcome;
        run
    }

    const KILLED: &str = "worker-1 (pid 4242) terminated abruptly while running 2 tasks: \
                          killed by signal 9 (SIGKILL)";

    #[test]
    fn a_strict_pool_breaks_when_a_ready_worker_dies() {
        let mut st = state(false);
        add(&mut st, 1, true, &[1, 2]);
        add(&mut st, 2, true, &[]);
        let fx = st.on(gone(1, End::Eof, "killed by signal 9 (SIGKILL)"));
        assert_eq!(reasons(&fx), [KILLED, KILLED]);
        assert_eq!(st.broken_reason().as_deref(), Some(KILLED));
        assert_eq!(fx.kill.len(), 1, "the other worker is killed");
        assert_eq!(fx.spawn, 0);
        assert!(fx.wake);
        assert_eq!(st.check_open(), Err(SubmitError::BrokenPool(KILLED.into())));
    }

    #[test]
    fn respawn_fails_only_the_dead_workers_tasks_and_replaces_it() {
        let mut st = state(true);
        add(&mut st, 1, true, &[1, 2]);
        add(&mut st, 2, true, &[3]);
        let fx = st.on(gone(1, End::Eof, "killed by signal 9 (SIGKILL)"));
        let expected = format!("{KILLED}; a new worker takes its place (respawn mode)");
        assert_eq!(reasons(&fx), [expected.clone(), expected]);
        assert_eq!((fx.spawn, st.spawning), (1, 1));
        assert!(fx.kill.is_empty());
        assert_eq!(st.broken_reason(), None);
        assert_eq!(st.workers.len(), 1);
        assert_eq!(
            st.workers[0].in_flight.len(),
            1,
            "the other worker's task goes on"
        );
    }

    #[test]
    fn respawn_gives_up_after_four_replacements_in_a_row_fail_to_start() {
        let mut st = state(true);
        for serial in 1..=3 {
            add(&mut st, serial, false, &[]);
            let fx = st.on(gone(serial, End::Eof, "exited with code 1"));
            assert_eq!(fx.spawn, 1, "replacement {serial} is started again");
            assert_eq!(
                fx.warnings,
                [format!(
                    "worker-{serial} (pid 4242) terminated abruptly: exited with code 1; \
                     starting another worker (respawn mode)"
                )]
            );
            assert!(fx.failed.is_empty() && fx.kill.is_empty());
            assert_eq!(st.broken_reason(), None);
        }
        add(&mut st, 4, false, &[]);
        let fx = st.on(gone(4, End::Eof, "exited with code 1"));
        assert_eq!(fx.spawn, 0);
        assert_eq!(
            st.broken_reason().as_deref(),
            Some(
                "worker-4 (pid 4242) terminated abruptly: exited with code 1; 4 replacement \
                 workers in a row failed to start, so respawn mode gives up"
            )
        );
    }

    #[test]
    fn a_greeting_resets_the_failed_starts() {
        let mut st = state(true);
        add(&mut st, 1, false, &[]);
        let _ = st.on(gone(1, End::Eof, "exited with code 1"));
        assert_eq!(st.failed_starts, 1);
        add(&mut st, 2, false, &[]);
        let fx = st.on(Event::Greeted { serial: 2 });
        assert!(fx.wake);
        assert!(st.workers[0].ready);
        assert_eq!(st.failed_starts, 0);
    }

    #[test]
    fn an_expected_eof_after_close_has_no_effects() {
        let mut st = state(false);
        add(&mut st, 1, true, &[]);
        let fx = st.on_shutdown(false);
        assert!(st.workers[0].tx.is_none(), "the idle worker is closed");
        assert!(fx.failed.is_empty() && fx.cancelled.is_empty());
        let fx = st.on(gone(1, End::Eof, "exited with code 0"));
        assert!(fx.failed.is_empty() && fx.kill.is_empty() && fx.completed.is_empty());
        assert!(fx.warnings.is_empty() && fx.violation.is_none());
        assert_eq!(fx.spawn, 0);
        assert_eq!(st.broken_reason(), None);
        assert!(st.all_gone());
    }

    #[test]
    fn a_result_for_a_task_the_worker_was_not_running_is_a_violation() {
        let mut st = state(false);
        let futures = add(&mut st, 1, true, &[1]);
        let results = vec![
            (1, run(Ok(crate::value::TaskValue::unit()))),
            (99, run(Err(TaskError::Cancelled))),
        ];
        let fx = st.on(Event::Results { serial: 1, results });
        assert_eq!(fx.completed.len(), 1, "the result before it counts");
        assert_eq!(fx.completed[0].2.worker, "worker-1");
        assert_eq!(fx.completed[0].2.pid, PID);
        assert_eq!(
            fx.violation,
            Some(ProtocolError::Malformed(
                "a result for task 99, which it was not running".into()
            ))
        );
        drop(fx);
        assert!(futures[0].is_done());
        // The reader then ends the channel: the worker sent a malformed message.
        let fx = st.on(gone(
            1,
            End::Protocol(ProtocolError::Malformed("x".into())),
            "killed by signal 9 (SIGKILL)",
        ));
        assert_eq!(
            st.broken_reason().as_deref(),
            Some(
                "worker-1 (pid 4242) sent a malformed message and was stopped: malformed frame: x"
            )
        );
        assert!(fx.wake);
    }

    #[test]
    fn a_stray_result_in_a_broken_pool_is_skipped() {
        let mut st = state(false);
        add(&mut st, 1, true, &[]);
        let _ = st.on_abandon();
        let results = vec![(5, run(Err(TaskError::Cancelled)))];
        let fx = st.on(Event::Results { serial: 1, results });
        assert!(fx.violation.is_none() && fx.completed.is_empty());
    }

    #[test]
    fn a_failed_initializer_breaks_the_pool() {
        let mut st = state(false);
        add(&mut st, 1, true, &[1, 2]);
        let reason = "the initializer failed: boom".to_string();
        let mut first = run(Err(TaskError::BrokenPool {
            reason: reason.clone(),
        }));
        first.breaks_pool = true;
        let fx = st.on(Event::Results {
            serial: 1,
            results: vec![(1, first)],
        });
        assert_eq!(fx.completed.len(), 1);
        assert_eq!(
            reasons(&fx),
            [reason.clone()],
            "the other task fails with it"
        );
        assert_eq!(st.broken_reason(), Some(reason));
        assert_eq!(fx.kill.len(), 1);
    }

    #[test]
    fn the_start_waits_for_every_greeting() {
        let mut st = state(false);
        st.started = false;
        add(&mut st, 1, false, &[]);
        add(&mut st, 2, false, &[]);
        assert!(st.start_verdict().is_none());
        let _ = st.on(Event::Greeted { serial: 1 });
        assert!(st.start_verdict().is_none());
        let _ = st.on(Event::Greeted { serial: 2 });
        assert!(matches!(st.start_verdict(), Some(Ok(()))));
        assert!(st.started);
    }

    #[test]
    fn the_start_fails_with_the_first_workers_failure() {
        let mut st = state(true);
        st.started = false;
        add(&mut st, 1, false, &[]);
        add(&mut st, 2, false, &[]);
        let timeout = ProtocolError::HandshakeTimeout(Duration::from_millis(500));
        let fx = st.on(gone(
            1,
            End::Handshake(timeout.clone()),
            "killed by signal 9 (SIGKILL)",
        ));
        assert_eq!(
            fx.spawn, 0,
            "a first start is not retried, even in respawn mode"
        );
        assert!(st.broken_reason().is_some_and(|r| {
            r.starts_with("worker-1 (pid 4242) failed the handshake: no greeting within 500ms")
        }));
        let Some(Err(failure)) = st.start_verdict() else {
            panic!("the start failed");
        };
        assert_eq!(failure.worker, "worker-1");
        assert_eq!(failure.reason, timeout.to_string());
        assert_eq!(failure.source, Some(timeout));
    }

    #[test]
    fn a_worker_that_ends_before_its_greeting_says_so() {
        let mut st = state(false);
        st.started = false;
        add(&mut st, 1, false, &[]);
        let _ = st.on(gone(1, End::Eof, "exited with code 3"));
        let Some(Err(failure)) = st.start_verdict() else {
            panic!("the start failed");
        };
        assert_eq!(
            failure.reason,
            "it ended before the handshake (exited with code 3)"
        );
        assert_eq!(failure.source, None);
    }

    #[test]
    fn a_failed_spawn_breaks_the_pool() {
        let mut st = state(true);
        st.spawning = 3;
        let fx = st.on_spawn_failed(&std::io::Error::other("cannot run /nope: gone"), 2);
        assert!(fx.wake);
        assert_eq!(st.spawning, 0);
        assert_eq!(
            st.broken_reason().as_deref(),
            Some("cannot start a new worker: cannot run /nope: gone")
        );
        let fx = st.on_abandon();
        assert!(fx.failed.is_empty(), "broken already: nothing more");
        assert_eq!(
            st.broken_reason().as_deref(),
            Some("cannot start a new worker: cannot run /nope: gone")
        );
    }

    #[test]
    fn shutdown_with_cancel_takes_the_queue_and_refuses_submits() {
        let mut st = state(false);
        let component = Arc::new(Component {
            id: 1,
            load: Frame::Whole(Vec::new()),
        });
        let (promise, future) = promise();
        let batch = Batch {
            tasks: vec![(1, promise)],
            frames: vec![0],
            ends: vec![1],
            component,
        };
        let fx = st.on_submit(vec![batch]).map_err(|_| ()).expect("open");
        assert!(fx.failed.is_empty());
        assert_eq!(st.queue.len(), 1, "no worker yet: it waits");
        let fx = st.on_shutdown(true);
        assert_eq!(fx.cancelled.len(), 1);
        assert!(st.queue.is_empty());
        assert!(
            !future.is_done(),
            "cancelling is the pool's job, after the lock"
        );
        assert_eq!(st.check_open(), Err(SubmitError::Shutdown));
    }

    #[test]
    fn an_abort_goes_to_the_worker_running_the_task() {
        let mut st = state(false);
        add(&mut st, 1, true, &[1]);
        add(&mut st, 2, true, &[2]);
        assert!(
            st.abort_route(2)
                .is_some_and(|tx| tx.same_channel(st.workers[1].tx.as_ref().unwrap()))
        );
        assert!(st.abort_route(3).is_none());
    }
}
