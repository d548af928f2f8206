//! The messages between a pool and its workers, independent of how they travel: each is a
//! kind byte and a payload (plus, for LOAD, a tail of code that is not copied). The pipe
//! (`framing.rs`) puts a length in front of them; another carrier can send
//! `kind ‖ payload ‖ tail` as a message body and decode it with [`Message::decode`].
//!
//! ```text
//!  pool -> worker   SETUP   version u32 LE, worker name, task settings
//!  pool -> worker   LOAD    component id, runtime config (instance pool included), origin,
//!                           precompiled code (the rest)
//!  pool -> worker   TASK    task id, component id, function index, budget, argv, args,
//!                           the args of a chunk's other calls (none for one call)
//!  pool -> worker   ABORT   task id
//!  worker -> pool   OUTPUT  stream, one line the guest printed, prefix included (the rest)
//!  worker -> pool   RESULT  task id, task run (outcome, elapsed, fuel, memory, captured
//!                           stdout/stderr, whether it breaks the pool)
//! ```
//!
//! Each message is encoded from the struct it decodes to; payloads use the encoding of
//! `codec/`.

use std::borrow::Cow;
use std::sync::Arc;

use wasmtime::component::Val;

use crate::error::ProtocolError;
use crate::output::HostStream;
use crate::run::TaskRun;
use crate::runtime::RuntimeConfig;
use crate::sandbox::Budget;
use crate::settings::TaskSettings;

use super::codec::{Codec, Put, Reader};

/// The version of the protocol; a pool and a worker must speak the same one.
pub const PROTOCOL_VERSION: u32 = 4;

/// The kind byte of each message (HELLO, 1, belongs to the pipe: see `framing.rs`).
pub(crate) const RESULT: u8 = 2;
pub(crate) const OUTPUT: u8 = 3;
pub(crate) const SETUP: u8 = 16;
pub(crate) const LOAD: u8 = 17;
pub(crate) const TASK: u8 = 18;
pub(crate) const ABORT: u8 = 19;

/// What every task of a worker shares, sent once after the greeting. Its payload starts
/// with [`PROTOCOL_VERSION`], checked on decode.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Setup {
    pub(crate) name: String,
    pub(crate) settings: TaskSettings,
}

/// A component to load, by the id tasks will refer to it with. The code is the rest of
/// the payload (the tail: written without a copy).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Load {
    pub(crate) id: u64,
    pub(crate) config: RuntimeConfig,
    pub(crate) origin: String,
    pub(crate) code: Arc<[u8]>,
}

/// One call to run, or a chunk of calls of one function under one budget and argv (a
/// process pool's `map_chunked`), run one after another as one task whose value is their
/// outcomes ([`TaskValue::chunk`](crate::value::TaskValue::chunk)). The pool encodes it from
/// the calls' own argv and arguments (borrowed); the worker decodes owned ones.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunTask<'a> {
    pub(crate) id: u64,
    pub(crate) component: u64,
    pub(crate) function: usize,
    pub(crate) budget: Budget,
    pub(crate) argv: Option<Cow<'a, [String]>>,
    pub(crate) args: Cow<'a, [Val]>,
    /// The arguments of a chunk's other calls; empty for a single call.
    pub(crate) rest: Vec<Cow<'a, [Val]>>,
}

/// Stop the task `id` now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Abort {
    pub(crate) id: u64,
}

/// A line a task printed (its prefix and newline included); the line is the rest of the
/// payload.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Output<'a> {
    pub(crate) stream: HostStream,
    pub(crate) line: Cow<'a, [u8]>,
}

/// How task `id` went.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskResult {
    pub(crate) id: u64,
    pub(crate) run: TaskRun,
}

/// A message from the pool to a worker.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ToWorker<'a> {
    Setup(Setup),
    Load(Load),
    Task(RunTask<'a>),
    Abort(Abort),
}

/// A message from a worker to the pool.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FromWorker<'a> {
    Output(Output<'a>),
    Result(TaskResult),
}

/// What a carrier needs to move a message: its kind, its payload, and a tail that follows
/// the payload without being copied into it.
pub(crate) trait Message: Sized {
    /// The kind byte.
    fn kind(&self) -> u8;
    /// The kind's name (`"SETUP"`, …, `"RESULT"`), for the fuzz targets' labels.
    #[cfg(any(test, feature = "fuzzing"))]
    fn name(&self) -> &'static str;
    /// Appends the payload, without the tail. Fails as [`Codec::encode`] does.
    fn encode_payload(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError>;
    /// The bytes that end the payload, sent after it as they are (LOAD's code).
    fn tail(&self) -> Option<&Arc<[u8]>> {
        None
    }
    /// Decodes a whole payload (tail included). A kind of the other direction is
    /// [`ProtocolError::UnexpectedFrame`]; trailing bytes are malformed.
    fn decode(kind: u8, payload: &[u8]) -> Result<Self, ProtocolError>;
}

impl Codec for Setup {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let Setup { name, settings } = self;
        out.put_bytes(&PROTOCOL_VERSION.to_le_bytes());
        name.encode(out)?;
        settings.encode(out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let version = r.u32_le("version")?;
        if version != PROTOCOL_VERSION {
            return Err(ProtocolError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: version,
            });
        }
        Ok(Setup {
            name: r.read("worker name")?,
            settings: r.read("settings")?,
        })
    }
}

impl Load {
    /// Everything but the code.
    fn encode_head(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let Load {
            id,
            config,
            origin,
            code: _,
        } = self;
        id.encode(out)?;
        config.encode(out)?;
        origin.encode(out)
    }
}

/// The code runs to the end of the input: a LOAD is always last in its payload.
impl Codec for Load {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        self.encode_head(out)?;
        out.put_bytes(&self.code);
        Ok(())
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(Load {
            id: r.read("component id")?,
            config: r.read("runtime config")?,
            origin: r.read("origin")?,
            code: Arc::from(r.rest()),
        })
    }
}

impl Codec for RunTask<'_> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let RunTask {
            id,
            component,
            function,
            budget,
            argv,
            args,
            rest,
        } = self;
        id.encode(out)?;
        component.encode(out)?;
        function.encode(out)?;
        budget.encode(out)?;
        argv.encode(out)?;
        args.encode(out)?;
        rest.encode(out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(RunTask {
            id: r.read("task id")?,
            component: r.read("component id")?,
            function: r.read("function index")?,
            budget: r.read("budget")?,
            argv: r.read("argv")?,
            args: r.read("arguments")?,
            rest: r.read("a chunk's other arguments")?,
        })
    }
}

impl Codec for Abort {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let Abort { id } = self;
        id.encode(out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(Abort {
            id: r.read("task id")?,
        })
    }
}

/// The line runs to the end of the input: an OUTPUT is always last in its payload.
impl Codec for Output<'_> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let Output { stream, line } = self;
        stream.encode(out)?;
        out.put_bytes(line);
        Ok(())
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(Output {
            stream: r.read("stream")?,
            line: Cow::Owned(r.rest().to_vec()),
        })
    }
}

impl Codec for TaskResult {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let TaskResult { id, run } = self;
        id.encode(out)?;
        run.encode(out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(TaskResult {
            id: r.read("task id")?,
            run: r.read("task run")?,
        })
    }
}

/// Decodes a whole payload as a `T`.
fn payload<T: Codec>(payload: &[u8]) -> Result<T, ProtocolError> {
    let mut r = Reader::new(payload);
    let x = T::decode(&mut r)?;
    r.finish("the frame")?;
    Ok(x)
}

impl Message for ToWorker<'_> {
    fn kind(&self) -> u8 {
        match self {
            ToWorker::Setup(_) => SETUP,
            ToWorker::Load(_) => LOAD,
            ToWorker::Task(_) => TASK,
            ToWorker::Abort(_) => ABORT,
        }
    }

    #[cfg(any(test, feature = "fuzzing"))]
    fn name(&self) -> &'static str {
        match self {
            ToWorker::Setup(_) => "SETUP",
            ToWorker::Load(_) => "LOAD",
            ToWorker::Task(_) => "TASK",
            ToWorker::Abort(_) => "ABORT",
        }
    }

    #[inline]
    fn encode_payload(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        match self {
            ToWorker::Setup(m) => m.encode(out),
            ToWorker::Load(m) => m.encode_head(out),
            ToWorker::Task(m) => m.encode(out),
            ToWorker::Abort(m) => m.encode(out),
        }
    }

    fn tail(&self) -> Option<&Arc<[u8]>> {
        match self {
            ToWorker::Load(m) => Some(&m.code),
            _ => None,
        }
    }

    fn decode(kind: u8, bytes: &[u8]) -> Result<Self, ProtocolError> {
        Ok(match kind {
            SETUP => ToWorker::Setup(payload(bytes)?),
            LOAD => ToWorker::Load(payload(bytes)?),
            TASK => ToWorker::Task(payload(bytes)?),
            ABORT => ToWorker::Abort(payload(bytes)?),
            other => return Err(ProtocolError::UnexpectedFrame(other)),
        })
    }
}

impl Message for FromWorker<'_> {
    fn kind(&self) -> u8 {
        match self {
            FromWorker::Output(_) => OUTPUT,
            FromWorker::Result(_) => RESULT,
        }
    }

    #[cfg(any(test, feature = "fuzzing"))]
    fn name(&self) -> &'static str {
        match self {
            FromWorker::Output(_) => "OUTPUT",
            FromWorker::Result(_) => "RESULT",
        }
    }

    fn encode_payload(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        match self {
            FromWorker::Output(m) => m.encode(out),
            FromWorker::Result(m) => m.encode(out),
        }
    }

    fn decode(kind: u8, bytes: &[u8]) -> Result<Self, ProtocolError> {
        Ok(match kind {
            OUTPUT => FromWorker::Output(payload(bytes)?),
            RESULT => FromWorker::Result(payload(bytes)?),
            other => return Err(ProtocolError::UnexpectedFrame(other)),
        })
    }
}

#[cfg(test)]
mod tests;
