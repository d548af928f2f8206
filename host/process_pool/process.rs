//! Worker processes from the pool's side: starting one, the writer thread that feeds its
//! stdin, the reader thread that reads its stdout, and reaping it.
//!
//! Detection does not depend on a task finishing: the reader thread blocks on the worker's
//! stdout, and the kernel ends that read (EOF) the moment the process dies, however it dies.
//! The reader then reaps the process (its exit status names the cause) and reports the loss.
//!
//! This file decides nothing: what the reader sees goes to a [`Listener`] (the pool) as
//! [`Event`]s, and the pool's state decides what they mean.

use std::io::BufReader;
use std::os::unix::process::CommandExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, unbounded};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, Signal, kill_process};

use crate::error::ProtocolError;
use crate::output::write_host;
use crate::run::TaskRun;
use crate::sync::lock;

use super::framing::{
    CHANNEL_BUFFER, Frame, read_frame_with, read_hello, whole_frame_buffered, write_frames,
};
use super::messages::{FromWorker, Message, Output, PROTOCOL_VERSION, TaskResult};
use super::state::ChildHandle;
use super::transitions::{End, Event};

/// The environment variable that starts a program in worker mode (its value is the
/// protocol version the pool speaks). See [`serve_worker_if_requested`](crate::serve_worker_if_requested).
pub const WORKER_ENV: &str = "WASMPOOL_WORKER";

/// How long a worker whose channel ended may take to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_millis(250);

/// Who hears what a worker's reader thread sees (the pool).
pub(crate) trait Listener: Send + Sync + 'static {
    /// Called first on the reader thread.
    fn reader_started(self: &Arc<Self>);
    /// What the reader saw. An error ends the channel as [`End::Protocol`].
    fn report(self: &Arc<Self>, event: Event) -> Result<(), ProtocolError>;
}

/// What a worker process is started with.
pub(crate) struct Spec<'a> {
    pub(crate) serial: u64,
    pub(crate) name: Arc<str>,
    pub(crate) program: &'a Path,
    /// The SETUP frame, the first one the worker reads.
    pub(crate) setup: Frame,
    /// How long the reader waits for the worker's greeting.
    pub(crate) handshake_timeout: Duration,
}

/// A worker process just started, with its writer thread (SETUP queued), its stdout not read
/// yet: [`watch`](Self::watch) it once registered, or [`discard`](Self::discard) it.
pub(crate) struct Launched {
    serial: u64,
    name: Arc<str>,
    pub(crate) pid: u32,
    pub(crate) child: ChildHandle,
    /// Frames to the writer thread.
    pub(crate) tx: Sender<Frame>,
    stdout: ChildStdout,
    handshake_timeout: Duration,
}

/// Starts one worker process and its writer thread, and queues its SETUP frame.
pub(crate) fn launch(spec: &Spec<'_>) -> std::io::Result<Launched> {
    // Each worker gets its own process group: a terminal's Ctrl-C goes to the pool's
    // owner, which decides what to abort, not straight to the workers (which would look
    // like crashes). A worker whose owner dies dies too (`lifeline.rs`).
    let mut command = Command::new(spec.program);
    command
        .env(WORKER_ENV, PROTOCOL_VERSION.to_string())
        .env_remove(super::worker::TEST_HOOK_ENV)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = super::lifeline::spawn(command).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot run {}: {e}", spec.program.display()),
        )
    })?;
    let pid = child.id();
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        kill_and_reap(&mut child);
        return Err(std::io::Error::other("the worker's pipes were not created"));
    };
    let (tx, rx) = unbounded();
    // The channel is fresh and its receiver alive: this cannot fail.
    let _ = tx.send(spec.setup.clone());
    let writer = std::thread::Builder::new()
        .name(format!("{}-writer", spec.name))
        .spawn(move || write_frames(stdin, &rx));
    if let Err(e) = writer {
        kill_and_reap(&mut child);
        return Err(e);
    }
    Ok(Launched {
        serial: spec.serial,
        name: spec.name.clone(),
        pid,
        child: Arc::new(Mutex::new(child)),
        tx,
        stdout,
        handshake_timeout: spec.handshake_timeout,
    })
}

impl Launched {
    /// Starts the reader thread, which reports to `listener` until the channel ends.
    pub(crate) fn watch<L: Listener>(self, listener: Arc<L>) {
        let Launched {
            serial,
            name,
            child,
            stdout,
            handshake_timeout,
            ..
        } = self;
        let reader_listener = listener.clone();
        let reader_child = child.clone();
        let reader = std::thread::Builder::new()
            .name(format!("{name}-reader"))
            .spawn(move || {
                read_loop(
                    &reader_listener,
                    serial,
                    stdout,
                    &reader_child,
                    handshake_timeout,
                );
            });
        if let Err(e) = reader {
            let status = reap(&child, true);
            let end = End::Protocol(ProtocolError::Io(format!("cannot start its reader: {e}")));
            let exit = exit_text(status);
            let _ = listener.report(Event::Gone { serial, end, exit });
        }
    }

    /// Kills the process and reaps it (the pool did not take it).
    pub(crate) fn discard(self) {
        kill_and_reap(&mut lock(&self.child));
    }
}

/// Reads the worker's frames until its channel ends, then reaps it and reports.
fn read_loop<L: Listener>(
    listener: &Arc<L>,
    serial: u64,
    stdout: ChildStdout,
    child: &Mutex<Child>,
    handshake_timeout: Duration,
) {
    listener.reader_started();
    let greeted = wait_for_greeting(&stdout, handshake_timeout);
    let mut input = BufReader::with_capacity(CHANNEL_BUFFER, stdout);
    let end = match greeted.and_then(|()| read_hello(&mut input)) {
        Err(e) => End::Handshake(e),
        Ok(_) => {
            let _ = listener.report(Event::Greeted { serial });
            read_results(listener, serial, &mut input)
        }
    };
    // A worker that broke the protocol may still be running: stop it first.
    let status = reap(child, !matches!(end, End::Eof));
    let exit = exit_text(status);
    let _ = listener.report(Event::Gone { serial, end, exit });
}

/// Waits until the worker has written something (its greeting, or EOF), at most `timeout`.
fn wait_for_greeting(stdout: &ChildStdout, timeout: Duration) -> Result<(), ProtocolError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // A timeout too large for a timespec means no timeout.
        let left = Timespec::try_from(left).ok();
        let mut fds = [PollFd::new(stdout, PollFlags::IN)];
        match poll(&mut fds, left.as_ref()) {
            Ok(0) => return Err(ProtocolError::HandshakeTimeout(timeout)),
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(ProtocolError::Io(e.to_string())),
        }
    }
}

/// Reads frames until the channel ends. Results that arrive together (already in the
/// buffer) are handed over together: one lock and one round of dispatch for the lot.
fn read_results<L: Listener>(
    listener: &Arc<L>,
    serial: u64,
    input: &mut BufReader<ChildStdout>,
) -> End {
    let mut results = Vec::new();
    let end = loop {
        let read = read_frame_with(input, |kind, payload| {
            match FromWorker::decode(kind, payload)? {
                FromWorker::Output(Output { stream, line }) => write_host(stream, &line),
                FromWorker::Result(TaskResult { id, run }) => results.push((id, run)),
            }
            Ok(())
        });
        match read {
            Ok(Some(Ok(()))) => {}
            Ok(None) => break End::Eof,
            Ok(Some(Err(e))) | Err(e) => break End::Protocol(e),
        }
        if !whole_frame_buffered(input.buffer())
            && let Err(e) = report_results(listener, serial, std::mem::take(&mut results))
        {
            break End::Protocol(e);
        }
    };
    match report_results(listener, serial, results) {
        Err(e) if matches!(end, End::Eof) => End::Protocol(e),
        _ => end,
    }
}

/// Hands results over, if there are any.
fn report_results<L: Listener>(
    listener: &Arc<L>,
    serial: u64,
    results: Vec<(u64, TaskRun)>,
) -> Result<(), ProtocolError> {
    if results.is_empty() {
        return Ok(());
    }
    listener.report(Event::Results { serial, results })
}

/// Waits for the process to exit and returns its status: `kill` first, or after a short
/// grace if it does not exit by itself (a process that closed its stdout but lives on).
fn reap(child: &Mutex<Child>, kill: bool) -> Option<ExitStatus> {
    if kill {
        let _ = lock(child).kill();
    }
    let deadline = Instant::now() + EXIT_GRACE;
    let mut pause = Duration::from_micros(100);
    loop {
        match lock(child).try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            let mut child = lock(child);
            let _ = child.kill();
            return child.wait().ok();
        }
        // Polling, not a blocking wait, so that the lock stays free for `kill_workers`.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `signal` to the process unless it has been reaped (then its pid may belong to
/// another process already).
pub(crate) fn signal(child: &Mutex<Child>, signal: Signal) {
    let mut child = lock(child);
    if matches!(child.try_wait(), Ok(None)) {
        let pid = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
        if let Some(pid) = pid {
            let _ = kill_process(pid, signal);
        }
    }
}

/// How a process ended, in words: `killed by signal 9 (SIGKILL)`, `exited with code 1`.
fn exit_text(status: Option<ExitStatus>) -> String {
    let Some(status) = status else {
        return "its exit status is unknown".to_string();
    };
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(sig) => {
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            format!("killed by signal {sig} ({}{core})", signal_name(sig))
        }
        None => format!("ended with status {status}"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        _ => "a signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_read_well() {
        assert_eq!(
            exit_text(Some(ExitStatus::from_raw(9))),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            exit_text(Some(ExitStatus::from_raw(6 | 0x80))),
            "killed by signal 6 (SIGABRT, core dumped)"
        );
        assert_eq!(
            exit_text(Some(ExitStatus::from_raw(3 << 8))),
            "exited with code 3"
        );
        assert_eq!(exit_text(None), "its exit status is unknown");
    }
}
