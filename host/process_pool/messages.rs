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
mod tests {
    use std::fmt::Debug;
    use std::time::Duration;

    use super::*;
    use crate::error::TaskError;
    use crate::output::OutputMode;
    use crate::process_pool::codec::arbitrary::{
        Arbitrary, Gen, assert_round_trips, assert_round_trips_open, nth,
    };
    use crate::process_pool::framing::{append, frame, read_frame};
    use crate::sandbox::Capabilities;
    use crate::settings::InstancePolicy;
    use crate::value::TaskValue;

    /// `m`'s frame, in one buffer.
    fn bytes<M: Message>(m: &M) -> Vec<u8> {
        let mut out = Vec::new();
        append(&mut out, m).unwrap();
        // `frame` writes the same bytes, with the tail apart.
        let whole = frame(m).unwrap().into_bytes();
        assert_eq!(whole, out);
        out
    }

    /// Through the pipe and back: frame, read the frame, decode, compare, re-encode.
    fn assert_messages_round_trip<M: Message + Arbitrary + PartialEq + Debug>(cases: usize) {
        for case in 0..cases {
            let m: M = nth(case);
            let sent = bytes(&m);
            let mut rest = &sent[..];
            let (kind, payload) = read_frame(&mut rest).unwrap().unwrap();
            assert!(rest.is_empty());
            assert_eq!(kind, m.kind());
            let got = M::decode(kind, &payload).unwrap_or_else(|e| panic!("{m:?}: {e}"));
            assert_eq!(got, m, "case {case}");
            assert_eq!(bytes(&got), sent, "case {case}: not canonical");
        }
    }

    #[test]
    fn payloads_round_trip() {
        assert_round_trips::<Setup>(2_000);
        assert_round_trips::<RunTask<'static>>(2_000);
        assert_round_trips::<Abort>(500);
        assert_round_trips::<TaskResult>(2_000);
        // Their last field runs to the end of the payload.
        assert_round_trips_open::<Load>(1_000);
        assert_round_trips_open::<Output<'static>>(1_000);
    }

    #[test]
    fn messages_round_trip_through_frames() {
        assert_messages_round_trip::<ToWorker<'static>>(4_000);
        assert_messages_round_trip::<FromWorker<'static>>(4_000);
    }

    #[test]
    fn mangled_payloads_never_panic() {
        let mut g = Gen::new(7);
        for case in 0..4_000 {
            let mut payload = match nth::<ToWorker>(case) {
                m if case % 2 == 0 => bytes(&m)[5..].to_vec(),
                _ => bytes(&nth::<FromWorker>(case))[5..].to_vec(),
            };
            g.mangle(&mut payload);
            for kind in [RESULT, OUTPUT, SETUP, LOAD, TASK, ABORT] {
                let _ = ToWorker::decode(kind, &payload);
                let _ = FromWorker::decode(kind, &payload);
            }
        }
    }

    #[test]
    fn a_kind_of_the_other_direction_is_unexpected() {
        for kind in [0, 1, RESULT, OUTPUT, 20, 255] {
            assert_eq!(
                ToWorker::decode(kind, &[]),
                Err(ProtocolError::UnexpectedFrame(kind))
            );
        }
        for kind in [0, 1, SETUP, LOAD, TASK, ABORT, 255] {
            assert_eq!(
                FromWorker::decode(kind, &[]),
                Err(ProtocolError::UnexpectedFrame(kind))
            );
        }
    }

    #[test]
    fn setup_checks_the_version() {
        let setup = ToWorker::Setup(Setup {
            name: "w".into(),
            settings: TaskSettings::default(),
        });
        let mut sent = bytes(&setup);
        sent[5..9].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(
            ToWorker::decode(SETUP, &sent[5..]),
            Err(ProtocolError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 7
            })
        );
    }

    /// One canonical frame per kind of message.
    ///
    /// Changing these bytes means bumping PROTOCOL_VERSION: a pool and a worker of the same
    /// version must agree on every byte.
    #[test]
    fn golden_frames() {
        let setup = ToWorker::Setup(Setup {
            name: "w-1".into(),
            settings: TaskSettings {
                output: OutputMode::Capture { limit: 300 },
                budget: Budget {
                    timeout: Some(Duration::from_nanos(5)),
                    fuel: None,
                    max_memory: Some(1),
                },
                capabilities: Capabilities {
                    dirs: vec![crate::sandbox::DirGrant {
                        host: "/h".into(),
                        guest: "/g".into(),
                        writable: true,
                    }],
                    env: vec![("A".into(), "b".into())],
                    args: vec!["x".into()],
                    network: false,
                },
                policy: InstancePolicy::Reuse { max_tasks: 2 },
                initializer: Some("i".into()),
            },
        });
        #[rustfmt::skip]
        assert_eq!(bytes(&setup), [
            39, 0, 0, 0, SETUP,
            4, 0, 0, 0,                       // version
            3, b'w', b'-', b'1',              // name
            3, 0xac, 0x02,                    // capture, limit 300
            1, 5, 0, 1, 1,                    // budget
            1, 2, b'/', b'h', 2, b'/', b'g', 1, // one dir grant
            1, 1, b'A', 1, b'b',              // env
            1, 1, b'x',                       // args
            0,                                // network
            1, 2,                             // reuse, 2 tasks
            1, 1, b'i',                       // initializer
        ]);
        let load = ToWorker::Load(Load {
            id: 4,
            config: RuntimeConfig {
                fuel: true,
                interruptible: false,
                max_wasm_stack: Some(128),
                pooling: Some(crate::runtime::PoolingConfig {
                    instances: 2,
                    memory_keep_resident: 0,
                    table_keep_resident: 300,
                }),
            },
            origin: "x".into(),
            code: Arc::from(&b"abc"[..]),
        });
        #[rustfmt::skip]
        assert_eq!(bytes(&load), [
            17, 0, 0, 0, LOAD,
            4,                 // id
            1, 0, 1, 0x80, 1,  // fuel, not interruptible, stack 128
            1, 2, 0, 0xac, 0x02, // pool: 2 instances, 0 and 300 bytes kept resident
            1, b'x',           // origin
            b'a', b'b', b'c',  // code
        ]);
        let task = ToWorker::Task(RunTask {
            id: 9,
            component: 2,
            function: 5,
            budget: Budget::default(),
            argv: Some(Cow::Owned(vec!["p".into()])),
            args: Cow::Owned(vec![Val::U32(3), Val::String("a".into())]),
            rest: Vec::new(),
        });
        #[rustfmt::skip]
        assert_eq!(bytes(&task), [
            18, 0, 0, 0, TASK,
            9, 2, 5,           // id, component, function
            0, 0, 0,           // budget
            1, 1, 1, b'p',     // argv
            2, 8, 3, 13, 1, b'a', // args: u32 3, string "a"
            0,                 // no other calls
        ]);
        let chunk = ToWorker::Task(RunTask {
            id: 9,
            component: 2,
            function: 5,
            budget: Budget::default(),
            argv: None,
            args: Cow::Owned(vec![Val::U32(3)]),
            rest: vec![Cow::Owned(vec![Val::U32(4)]), Cow::Owned(vec![Val::U32(5)])],
        });
        #[rustfmt::skip]
        assert_eq!(bytes(&chunk), [
            18, 0, 0, 0, TASK,
            9, 2, 5,           // id, component, function
            0, 0, 0,           // budget
            0,                 // no argv
            1, 8, 3,           // args: u32 3
            2, 1, 8, 4, 1, 8, 5, // two other calls: (u32 4), (u32 5)
        ]);
        assert_eq!(
            bytes(&ToWorker::Abort(Abort { id: 5 })),
            [2, 0, 0, 0, ABORT, 5]
        );
        let output = FromWorker::Output(Output {
            stream: HostStream::Stderr,
            line: Cow::Borrowed(b"hi\n"),
        });
        assert_eq!(bytes(&output), [5, 0, 0, 0, OUTPUT, 2, b'h', b'i', b'\n']);
        let result = FromWorker::Result(TaskResult {
            id: 7,
            run: TaskRun {
                outcome: Err(TaskError::OutOfFuel { limit: 10 }),
                elapsed: Duration::from_nanos(1000),
                fuel_consumed: Some(77),
                peak_memory: 0,
                stdout: None,
                stderr: Some("e".into()),
                stdout_truncated: false,
                stderr_truncated: true,
            },
        });
        #[rustfmt::skip]
        assert_eq!(bytes(&result), [
            16, 0, 0, 0, RESULT,
            7,                // id
            1, 3, 10,         // error: out of fuel, limit 10
            0xe8, 0x07,       // elapsed 1000 ns
            1, 77, 0,         // fuel, peak memory
            0, 1, 1, b'e',    // stdout, stderr
            0, 1,             // stdout, stderr truncated
        ]);
        let ok = FromWorker::Result(TaskResult {
            id: 1,
            run: TaskRun {
                outcome: Ok(TaskValue::unit()),
                elapsed: Duration::ZERO,
                fuel_consumed: None,
                peak_memory: 0,
                stdout: None,
                stderr: None,
                stdout_truncated: false,
                stderr_truncated: false,
            },
        });
        assert_eq!(
            bytes(&ok),
            [11, 0, 0, 0, RESULT, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }
}
