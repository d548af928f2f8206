//! A worker never outlives the process of its pool, whatever that process died of (a
//! `SIGKILL` included) and whatever the worker's guest is doing (spinning, or blocked in a
//! WASI sleep).
//!
//! Two mechanisms, so that one holds where the other does not:
//! - **Death signal** (Linux, Android, FreeBSD): at start the worker asks the kernel for
//!   `SIGKILL` when its parent dies (`PR_SET_PDEATHSIG`, `PROC_PDEATHSIG_CTL`). On Linux
//!   the "parent" is the *thread* that forked the child, so every worker is forked by one
//!   launcher thread that lives as long as the process (see [`spawn`]): a worker started
//!   by a reader thread that ends, or by a short-lived thread of the embedding program,
//!   must not die with it. The worker compares its parent with the pid the pool passed in
//!   [`PARENT_ENV`]: if the pool died before the request took effect, it exits at once.
//! - **End of the channel** (every Unix): the kernel closes the worker's stdin when the pool's
//!   process dies. The worker's main thread reads stdin all the time; at its end, a worker
//!   whose pool is gone exits at once instead of finishing its queued tasks (a pool that
//!   closes the channel on purpose is still there, and gets its results). This also covers
//!   a worker started through a wrapper script that did not `exec` (its parent is the
//!   wrapper): it checks whether the pool's pid still names a process.
//!
//! What this does not cover (documented in SECURITY.md): on systems without a death signal
//! (macOS), a worker whose guest is running learns of its parent's death only through the
//! channel, which its main thread watches; a worker stopped with `SIGSTOP` when the parent
//! dies exits when it is continued.

use std::process::{Child, Command};
use std::sync::OnceLock;

use crossbeam_channel::{Sender, bounded, unbounded};

/// The environment variable that tells a worker the pid of the pool's process.
pub(crate) const PARENT_ENV: &str = "WASMPOOL_WORKER_PARENT";

type Request = (Command, Sender<std::io::Result<Child>>);

/// The launcher thread's queue, made on first use. `None` if the thread could not start
/// (then workers are forked by the calling thread, as before).
static LAUNCHER: OnceLock<Option<Sender<Request>>> = OnceLock::new();

/// Starts `command` from the launcher thread, which lives as long as the process (so a
/// worker's death signal fires when the process dies, not when some thread ends).
pub(crate) fn spawn(mut command: Command) -> std::io::Result<Child> {
    command.env(PARENT_ENV, std::process::id().to_string());
    let launcher = LAUNCHER.get_or_init(|| {
        let (tx, rx) = unbounded::<Request>();
        std::thread::Builder::new()
            .name("wasmpool-launcher".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .ok()
            .map(|_| tx)
    });
    let Some(launcher) = launcher else {
        return command.spawn();
    };
    let (reply, answer) = bounded(1);
    launcher
        .send((command, reply))
        .map_err(|_| std::io::Error::other("the worker launcher thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the worker launcher thread is gone"))?
}

/// Who the worker's pool is, as the worker saw it at start.
enum Pool {
    /// The pool's process is the worker's parent (the usual case).
    Parent(i32),
    /// The pool started a wrapper (a script that did not `exec`) that started the worker.
    Wrapped(i32),
    /// The pool did not say (a worker started by hand).
    Unknown,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Worker side, first thing at start: asks for `SIGKILL` when the parent dies, and fails
/// if the pool's process is gone already (then the worker must exit).
pub(crate) fn bind_to_parent() -> Result<(), String> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("cannot ask for a signal when the pool's process dies: {e}"))?;
    let parent = rustix::process::getppid().map(|pid| pid.as_raw_nonzero().get());
    let pool = match std::env::var(PARENT_ENV).ok().and_then(|p| p.parse().ok()) {
        None => Pool::Unknown,
        Some(pool) if parent == Some(pool) => Pool::Parent(pool),
        Some(pool) => Pool::Wrapped(pool),
    };
    let _ = POOL.set(pool);
    if pool_is_gone() {
        return Err("the pool's process is gone".into());
    }
    Ok(())
}

/// Whether the pool's process has died: this worker was re-parented, or (under a wrapper)
/// the pool's pid names no process. `false` when the pool did not say who it is.
pub(crate) fn pool_is_gone() -> bool {
    match POOL.get() {
        Some(Pool::Parent(pool)) => {
            rustix::process::getppid().map(|pid| pid.as_raw_nonzero().get()) != Some(*pool)
        }
        Some(Pool::Wrapped(pool)) => rustix::process::Pid::from_raw(*pool).is_none_or(|pid| {
            rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH)
        }),
        Some(Pool::Unknown) | None => false,
    }
}
