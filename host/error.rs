//! Every public error type of wasmpool.
//!
//! Errors come in two families:
//! - *task errors* ([`TaskError`]): the outcome of one task. They are plain data (strings and
//!   numbers), cheap to clone, and cross the process boundary unchanged.
//! - *operation errors* ([`LoadError`], [`CallError`], [`SubmitError`], [`WaitTimeout`],
//!   [`BuildError`]): something the caller asked for could not be done.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use wasmtime::component::wasm_wave::parser::ParserError;

/// What kind of failure a [`TaskError`] is; stable names for machine-readable output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskErrorKind {
    /// The guest returned `err(..)`.
    Failed,
    /// The guest trapped (`unreachable`, a panic, an out-of-bounds access, ...).
    Trap,
    /// The task ran past its wall-clock deadline.
    Timeout,
    /// The task used up its fuel.
    OutOfFuel,
    /// The task tried to grow linear memory past its cap.
    MemoryLimit,
    /// The task overflowed its stack.
    StackOverflow,
    /// The task was cancelled before it started (or aborted while running).
    Cancelled,
    /// The pool broke (a worker died, or the initializer failed) before the task could finish.
    BrokenPool,
    /// The task could not be started: instantiation failed.
    Start,
    /// The host code panicked while running the task (the pool goes on).
    Panic,
    /// The task has a fuel budget but the runtime does not meter fuel.
    FuelNotEnabled,
    /// The pooling allocator had no free instance slot.
    NoInstanceSlot,
    /// The task finished, but its result cannot be returned across the process boundary.
    Unreturnable,
    /// The worker cannot run the task's component (missing, or failed to load there).
    ComponentUnavailable,
    /// The task was never submitted: the call does not fit the pool.
    Incompatible,
    /// A cluster worker refused the task: it asks for more than the worker allows.
    Refused,
    /// No cluster worker took the task within the submitter's queue time-out.
    QueueTimeout,
}

impl TaskErrorKind {
    /// The kebab-case name used in JSON output (`"out-of-fuel"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskErrorKind::Failed => "failed",
            TaskErrorKind::Trap => "trap",
            TaskErrorKind::Timeout => "timeout",
            TaskErrorKind::OutOfFuel => "out-of-fuel",
            TaskErrorKind::MemoryLimit => "memory-limit",
            TaskErrorKind::StackOverflow => "stack-overflow",
            TaskErrorKind::Cancelled => "cancelled",
            TaskErrorKind::BrokenPool => "broken-pool",
            TaskErrorKind::Start => "start",
            TaskErrorKind::Panic => "panic",
            TaskErrorKind::FuelNotEnabled => "fuel-not-enabled",
            TaskErrorKind::NoInstanceSlot => "no-instance-slot",
            TaskErrorKind::Unreturnable => "unreturnable",
            TaskErrorKind::ComponentUnavailable => "component-unavailable",
            TaskErrorKind::Incompatible => "incompatible",
            TaskErrorKind::Refused => "refused",
            TaskErrorKind::QueueTimeout => "queue-timeout",
        }
    }
}

impl fmt::Display for TaskErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one task did not produce a value. The error of *that* future only: the pool goes on
/// (except for [`TaskError::BrokenPool`], which every pending future of a broken pool gets).
///
/// ```
/// use wasmpool::{TaskError, TaskErrorKind};
/// let e = TaskError::Failed { message: "the value 5 is no good".into(), value: "\"the value 5 is no good\"".into() };
/// assert_eq!(e.kind(), TaskErrorKind::Failed);
/// assert_eq!(e.to_string(), "the value 5 is no good");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The guest returned `err(payload)`. `message` is the payload as text (a `string` payload
    /// verbatim, anything else in WAVE); `value` is always the WAVE text of the payload
    /// (empty when the error case carries no payload).
    #[error("{message}")]
    Failed {
        /// Human-readable payload.
        message: String,
        /// WAVE text of the payload.
        value: String,
    },
    /// The guest trapped.
    #[error("wasm trap: {trap}{}", panic_suffix(.panic))]
    Trap {
        /// The trap's reason, e.g. "wasm `unreachable` instruction executed".
        trap: String,
        /// The guest's panic message, when a Rust guest panicked and said why on stderr.
        panic: Option<String>,
        /// The wasm backtrace, one frame a line.
        backtrace: String,
    },
    /// The task ran past its deadline.
    #[error("task timed out after {limit:?} (the per-task deadline)")]
    Timeout {
        /// The deadline that was hit.
        limit: Duration,
    },
    /// The task used all its fuel.
    #[error("task ran out of fuel (limit {limit} units)")]
    OutOfFuel {
        /// The fuel budget.
        limit: u64,
    },
    /// The task tried to grow memory past its cap.
    #[error("task exceeded its memory limit of {limit} bytes")]
    MemoryLimit {
        /// The linear-memory cap in bytes.
        limit: u64,
    },
    /// The task overflowed the wasm stack.
    #[error("task overflowed its stack{}", backtrace_suffix(.backtrace))]
    StackOverflow {
        /// The wasm backtrace, if captured.
        backtrace: String,
    },
    /// The task was cancelled.
    #[error("task was cancelled")]
    Cancelled,
    /// The pool is broken: a worker died, or the initializer failed. The reason says which
    /// worker and how.
    #[error("broken pool: {reason}")]
    BrokenPool {
        /// Which worker died and how.
        reason: String,
    },
    /// The task's instance could not be created at all: wasmtime refused to instantiate the
    /// component, a granted directory could not be opened, the async runtime did not start,
    /// the instance lacks the export, or the fuel could not be set.
    #[error("task could not start: {message}")]
    Start {
        /// Why instantiation failed.
        message: String,
    },
    /// The host code (wasmpool or wasmtime, not the guest) panicked while running the task.
    /// Only this task fails: the worker discards its kept instance and goes on. See
    /// [`TaskError::is_panic`].
    #[error("{worker} panicked while running the task: {message}")]
    Panic {
        /// The worker that ran the task.
        worker: String,
        /// The panic's message ("unknown panic" when it was not text).
        message: String,
    },
    /// The task has a fuel budget, but its component's runtime was made without fuel
    /// metering.
    #[error("a fuel budget needs a runtime with fuel metering (RuntimeConfig {{ fuel: true }})")]
    FuelNotEnabled,
    /// The runtime's pooling allocator had no free slot for the task's instance (every slot
    /// was in use by other tasks); retrying later may succeed.
    #[error("no instance slot is free: {message}")]
    NoInstanceSlot {
        /// What wasmtime said ("maximum concurrent limit of N for ... reached").
        message: String,
    },
    /// The task finished, but its result cannot be sent back from the worker process (a
    /// resource handle, a value nested too deep, or a frame too large).
    #[error("the task's result cannot be returned: {message}")]
    Unreturnable {
        /// Why it cannot be sent.
        message: String,
    },
    /// The worker process cannot run the task's component: it never received it, the
    /// component failed to load there, or the call does not fit the component there.
    #[error("the worker cannot run the task's component: {message}")]
    ComponentUnavailable {
        /// What went wrong in the worker.
        message: String,
    },
    /// The task was never submitted: the call does not fit this pool (see
    /// [`SubmitError::Incompatible`]).
    #[error("the task was not submitted: {message}")]
    Incompatible {
        /// Why the pool refused the call.
        message: String,
    },
    /// A cluster worker refused to run the task: it asks for a capability or a budget
    /// beyond what the worker's operator allows (a submitter cannot grant itself the
    /// worker's file system).
    #[error("the worker refused the task: {message}")]
    Refused {
        /// What was asked for, and what the worker allows.
        message: String,
    },
    /// No cluster worker took the task within the submitter's queue time-out; it was
    /// withdrawn and will not run.
    #[error("no worker took the task within {limit:?} (the queue time-out)")]
    QueueTimeout {
        /// The queue time-out.
        limit: Duration,
    },
}

fn panic_suffix(panic: &Option<String>) -> String {
    match panic {
        Some(p) => format!(" (guest panicked: {p})"),
        None => String::new(),
    }
}

fn backtrace_suffix(bt: &str) -> String {
    if bt.is_empty() {
        String::new()
    } else {
        format!("\n{bt}")
    }
}

impl TaskError {
    /// The kind of this error.
    pub fn kind(&self) -> TaskErrorKind {
        match self {
            TaskError::Failed { .. } => TaskErrorKind::Failed,
            TaskError::Trap { .. } => TaskErrorKind::Trap,
            TaskError::Timeout { .. } => TaskErrorKind::Timeout,
            TaskError::OutOfFuel { .. } => TaskErrorKind::OutOfFuel,
            TaskError::MemoryLimit { .. } => TaskErrorKind::MemoryLimit,
            TaskError::StackOverflow { .. } => TaskErrorKind::StackOverflow,
            TaskError::Cancelled => TaskErrorKind::Cancelled,
            TaskError::BrokenPool { .. } => TaskErrorKind::BrokenPool,
            TaskError::Start { .. } => TaskErrorKind::Start,
            TaskError::Panic { .. } => TaskErrorKind::Panic,
            TaskError::FuelNotEnabled => TaskErrorKind::FuelNotEnabled,
            TaskError::NoInstanceSlot { .. } => TaskErrorKind::NoInstanceSlot,
            TaskError::Unreturnable { .. } => TaskErrorKind::Unreturnable,
            TaskError::ComponentUnavailable { .. } => TaskErrorKind::ComponentUnavailable,
            TaskError::Incompatible { .. } => TaskErrorKind::Incompatible,
            TaskError::Refused { .. } => TaskErrorKind::Refused,
            TaskError::QueueTimeout { .. } => TaskErrorKind::QueueTimeout,
        }
    }

    /// Whether the host code panicked while running the task (as tokio's
    /// `JoinError::is_panic`). The guest panicking is a [`TaskError::Trap`], not this.
    ///
    /// ```
    /// use wasmpool::TaskError;
    /// let e = TaskError::Panic { worker: "worker-1".into(), message: "oops".into() };
    /// assert!(e.is_panic());
    /// assert_eq!(e.to_string(), "worker-1 panicked while running the task: oops");
    /// assert!(!TaskError::Cancelled.is_panic());
    /// ```
    pub fn is_panic(&self) -> bool {
        matches!(self, TaskError::Panic { .. })
    }
}

/// The error of a task that [`submit`](crate::Executor::submit) refused, for APIs that turn
/// a refusal into a failed future (`map`): `Shutdown` becomes [`TaskError::Cancelled`] (the
/// task never ran, as a future cancelled before it started), `BrokenPool` stays
/// [`TaskError::BrokenPool`], and `Incompatible` becomes [`TaskError::Incompatible`].
///
/// ```
/// use wasmpool::{SubmitError, TaskError};
/// assert_eq!(TaskError::from(SubmitError::Shutdown), TaskError::Cancelled);
/// assert_eq!(
///     TaskError::from(SubmitError::Incompatible("too large".into())).to_string(),
///     "the task was not submitted: too large"
/// );
/// ```
impl From<SubmitError> for TaskError {
    fn from(e: SubmitError) -> TaskError {
        match e {
            SubmitError::Shutdown => TaskError::Cancelled,
            SubmitError::BrokenPool(reason) => TaskError::BrokenPool { reason },
            SubmitError::Incompatible(message) => TaskError::Incompatible { message },
        }
    }
}

/// The text of a panic's payload: the `&str` or `String` it carries, or "unknown panic".
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "unknown panic"
    }
}

/// A timed wait ran out before the future (or futures) finished. The tasks are not touched.
///
/// This is a *wait* timeout; a task's own deadline is [`TaskError::Timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("wait timed out after {0:?}; the task is still going")]
pub struct WaitTimeout(pub Duration);

/// A `.wasm` file could not be loaded as a task component.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The path is not a regular file (a directory, a device such as `/dev/zero`, a FIFO or
    /// a socket): only regular files are read, so that a read always ends.
    #[error("cannot read {path}: not a regular file (it is a {kind})")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The file is larger than a component may be.
    #[error(
        "cannot read {path}: {size} bytes is more than the limit of {limit} bytes for a component"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// [`MAX_COMPONENT_FILE`](crate::MAX_COMPONENT_FILE).
        limit: u64,
    },
    /// The bytes do not start with the wasm magic number.
    #[error("{origin} is not a WebAssembly file (it does not start with \\0asm)")]
    NotWasm {
        /// The file (or `"<bytes>"`).
        origin: String,
    },
    /// The bytes are already compiled: a `.cwasm` (wasmtime's `serialize` output, such as
    /// [`TaskComponent::precompiled`](crate::TaskComponent::precompiled) writes), to be
    /// loaded with [`Runtime::load_precompiled`](crate::Runtime::load_precompiled).
    #[error(
        "{origin} is already precompiled (a .cwasm, not a .wasm); load it as precompiled \
         (`wasmpool run --allow-precompiled`), or give the .wasm it was compiled from"
    )]
    Precompiled {
        /// The file (or `"<bytes>"`).
        origin: String,
    },
    /// The bytes are a core wasm module; a component is needed.
    #[error(
        "{origin} is a core WebAssembly module, not a component; wrap it with `wasm-tools component new` or build for wasm32-wasip2"
    )]
    CoreModule {
        /// The file (or `"<bytes>"`).
        origin: String,
    },
    /// The file ends before the component does.
    #[error("{origin} is truncated: {message}")]
    Truncated {
        /// The file (or `"<bytes>"`).
        origin: String,
        /// What the validator said.
        message: String,
    },
    /// The component is malformed or does not validate.
    #[error("{origin} is not a valid component: {message}")]
    Invalid {
        /// The file (or `"<bytes>"`).
        origin: String,
        /// What wasmtime said.
        message: String,
    },
    /// The component imports something the host does not provide.
    #[error("{origin} cannot be linked: {message}")]
    Link {
        /// The file (or `"<bytes>"`).
        origin: String,
        /// What is missing.
        message: String,
    },
    /// The engine could not be created from the configuration.
    #[error("cannot configure the wasm engine: {0}")]
    Engine(String),
}

/// A call does not fit the component: checked when the call is made, before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No exported function has that name.
    #[error("the component exports no function `{name}`; it exports: {available}")]
    UnknownFunction {
        /// The name asked for.
        name: String,
        /// The exported functions, comma-separated.
        available: String,
    },
    /// A bare function name that more than one exported interface has, and no top-level
    /// function.
    #[error("`{name}` is ambiguous: it may be any of {candidates}; name one of them")]
    AmbiguousFunction {
        /// The name asked for.
        name: String,
        /// The functions it may be, by their full names, comma-separated.
        candidates: String,
    },
    /// Wrong number of arguments.
    #[error("`{function}` takes {expected} argument(s), {given} given")]
    Arity {
        /// The function.
        function: String,
        /// How many it takes.
        expected: usize,
        /// How many were given.
        given: usize,
    },
    /// An argument does not have the parameter's type.
    #[error("argument `{param}` of `{function}`: {message}")]
    Type {
        /// The function.
        function: String,
        /// The parameter's name.
        param: String,
        /// What is wrong.
        message: String,
    },
    /// WAVE text that does not parse (or does not fit the parameter types).
    #[error("invalid WAVE for `{function}`: {message}")]
    Wave {
        /// The function (or the whole call text when the name could not be read).
        function: String,
        /// What the parser said.
        message: String,
    },
    /// JSON arguments that do not fit the parameter types ([`crate::TaskComponent::call_json`]).
    #[error("invalid JSON arguments for `{function}`: {error}")]
    Json {
        /// The function.
        function: String,
        /// Where and why: its path starts at the parameter (`.ps[2].x`).
        error: crate::json_error::JsonError,
    },
}

impl CallError {
    /// The [`CallError::Wave`] of `function` for a parser `error` in a source that is
    /// `prefix` bytes standing for `text[..start]`, then `text[start..]`, then anything the
    /// caller appended: its position is told in `text`'s bytes.
    pub(crate) fn wave(
        function: &str,
        error: &ParserError,
        text: &str,
        prefix: usize,
        start: usize,
    ) -> CallError {
        let what = match (std::error::Error::source(error), error.detail()) {
            (Some(source), _) => format!("{}: {source}", error.kind()),
            (None, Some(detail)) => format!("{}: {detail}", error.kind()),
            (None, None) => error.kind().to_string(),
        };
        CallError::wave_at(function, &what, error.span(), text, prefix, start)
    }

    /// The [`CallError::Wave`] of `function` saying `what` about the bytes `span` of a
    /// source placed as [`CallError::wave`] says.
    pub(crate) fn wave_at(
        function: &str,
        what: &str,
        span: std::ops::Range<usize>,
        text: &str,
        prefix: usize,
        start: usize,
    ) -> CallError {
        let at = |p: usize| if p < prefix { 0 } else { p - prefix + start };
        let (from, to) = (at(span.start).min(text.len()), at(span.end).min(text.len()));
        CallError::Wave {
            function: function.to_string(),
            message: format!("{what} at {from}..{to}"),
        }
    }
}

/// `submit` could not accept the task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The executor was shut down.
    #[error("cannot submit: the executor has been shut down")]
    Shutdown,
    /// The pool is broken (a worker died); the reason names it.
    #[error("cannot submit: broken pool: {0}")]
    BrokenPool(String),
    /// The call belongs to a component of another engine than this executor's.
    #[error("cannot submit: {0}")]
    Incompatible(String),
}

/// An executor could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting is out of range.
    #[error("invalid executor setting: {0}")]
    Invalid(String),
    /// The cluster could not be reached or set up: the NATS server is unreachable, refused
    /// the credentials, or its JetStream refused a stream, consumer or bucket.
    #[error("cluster: {0}")]
    Cluster(String),
    /// A worker thread or process could not be started.
    #[error("cannot start a worker: {0}")]
    Spawn(#[from] std::io::Error),
    /// A worker process started but did not complete its handshake: it is not a wasmpool
    /// worker, speaks another protocol version, died, or did not answer in time.
    #[error("worker {worker} did not start: {reason}")]
    Worker {
        /// The worker's name (`worker-1`, ...).
        worker: String,
        /// What went wrong, in words.
        reason: String,
        /// The protocol error behind it, if that is what it was.
        #[source]
        source: Option<ProtocolError>,
    },
}

/// The channel to a process-pool worker carried something that is not a well-formed frame
/// of the wasmpool worker protocol. The connection cannot be trusted after it: the pool stops
/// that worker, and the message ends up in a [`TaskError::BrokenPool`] or a
/// [`BuildError::Worker`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The stream ended in the middle of a frame.
    #[error("truncated frame: {0}")]
    Truncated(String),
    /// A frame announced a size beyond the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A frame kind this side does not know (or does not expect here).
    #[error("unexpected frame kind {0}")]
    UnexpectedFrame(u8),
    /// A frame's content does not decode.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A value nests deeper than the limit.
    #[error("a value nests deeper than {0} levels")]
    TooDeep(usize),
    /// The first frame was not a wasmpool worker's greeting.
    #[error("not a wasmpool worker: {0}")]
    NotAWorker(String),
    /// The worker said nothing within the handshake timeout.
    #[error(
        "no greeting within {0:?}; is the worker program a wasmpool worker (one whose main \
         calls wasmpool::serve_worker_if_requested)?"
    )]
    HandshakeTimeout(Duration),
    /// The worker speaks another version of the protocol.
    #[error("the worker speaks protocol version {theirs}, this pool speaks version {ours}")]
    VersionMismatch {
        /// This side's version.
        ours: u32,
        /// The worker's version.
        theirs: u32,
    },
    /// A value that cannot cross a process boundary (a resource, stream, future or
    /// error-context handle).
    #[error("cannot send {0} to another process")]
    Unsendable(&'static str),
    /// Reading from or writing to the channel failed.
    #[error("i/o error on the worker channel: {0}")]
    Io(String),
}
