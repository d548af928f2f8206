//! The worker protocol: versioned, length-prefixed binary frames between the pool and its
//! worker processes (the pool writes to the worker's stdin, the worker answers on its stdout).
//!
//! Every frame is `[length: u32 LE][kind: u8][payload]`, where `length` counts the kind byte
//! and the payload and is at most [`MAX_FRAME`]. Payloads use the encoding of `wire.rs`.
//!
//! ```text
//!  worker -> pool   HELLO   "wasmpool" magic, version u32 LE, pid u32 LE    (first frame, always)
//!  pool -> worker   SETUP   version, worker name, output mode, budget, capabilities
//!  pool -> worker   LOAD    component id, runtime config, origin, precompiled bytes
//!  pool -> worker   TASK    task id, component id, function index, budget, argv, args
//!  pool -> worker   ABORT   task id
//!  worker -> pool   OUTPUT  stream, one line the guest printed (prefix included)
//!  worker -> pool   RESULT  task id, outcome (value or task error), elapsed, fuel, memory,
//!                           captured stdout/stderr
//! ```
//!
//! The pool closes the worker's stdin to ask it to finish its tasks and exit.

use std::io::Read;
use std::time::Duration;

use wasmtime::component::Val;

use crate::component::RuntimeConfig;
use crate::error::{ProtocolError, TaskError};
use crate::output::HostStream;
use crate::run::TaskSettings;
use crate::run::{InstancePolicy, TaskRun};
use crate::sandbox::Budget;
use crate::value::TaskValue;

use super::records::{
    nanos, put_budget, put_capabilities, put_output_mode, put_runtime_config, put_strings,
    put_task_error, read_budget, read_capabilities, read_output_mode, read_runtime_config,
    read_strings, read_task_error,
};
use super::wire::{Put, Reader, malformed, put_opt_val, put_val, read_opt_val, read_val};

/// The version of the protocol; a pool and a worker must speak the same one.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame either side sends or accepts: 256 MiB (kind and payload).
pub(crate) const MAX_FRAME: u32 = 256 << 20;

const MAGIC: &[u8; 8] = b"wasmpool";

const HELLO: u8 = 1;
const RESULT: u8 = 2;
const OUTPUT: u8 = 3;
const SETUP: u8 = 16;
const LOAD: u8 = 17;
const TASK: u8 = 18;
const ABORT: u8 = 19;

/// The size of a HELLO frame, length field included.
const HELLO_SIZE: usize = 4 + 1 + MAGIC.len() + 4 + 4;

// ---------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------

/// A frame under construction: the length is filled in by [`Frame::finish`].
pub(crate) struct Frame(Vec<u8>);

impl Frame {
    fn new(kind: u8) -> Frame {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[0; 4]);
        buf.push(kind);
        Frame(buf)
    }

    /// The bytes to write, with the length set; `extra` more bytes of payload will follow
    /// them (written separately, to avoid a copy).
    fn finish_with(mut self, extra: usize) -> Result<Vec<u8>, ProtocolError> {
        let len = (self.0.len() - 4) as u64 + extra as u64;
        if len > u64::from(MAX_FRAME) {
            return Err(ProtocolError::FrameTooLarge {
                len,
                max: MAX_FRAME.into(),
            });
        }
        self.0[..4].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(self.0)
    }

    fn finish(self) -> Result<Vec<u8>, ProtocolError> {
        self.finish_with(0)
    }
}

impl std::ops::Deref for Frame {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for Frame {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

/// Reads one frame: its kind and payload. `Ok(None)` at a clean end of stream (between
/// frames); a stream that ends inside a frame is [`ProtocolError::Truncated`].
pub(crate) fn read_frame(input: &mut impl Read) -> Result<Option<(u8, Vec<u8>)>, ProtocolError> {
    let mut header = [0u8; 4];
    let got = read_full(input, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    if got < header.len() {
        return Err(ProtocolError::Truncated(format!(
            "the stream ended {got} bytes into a frame header"
        )));
    }
    let len = u32::from_le_bytes(header);
    if len > MAX_FRAME {
        return Err(ProtocolError::FrameTooLarge {
            len: len.into(),
            max: MAX_FRAME.into(),
        });
    }
    if len == 0 {
        return Err(malformed("an empty frame (no kind byte)".into()));
    }
    let mut kind = [0u8];
    if read_full(input, &mut kind)? == 0 {
        return Err(ProtocolError::Truncated(format!(
            "the stream ended at the start of a frame of {len} bytes"
        )));
    }
    // Grows as bytes arrive: a lying length costs no more memory than the bytes sent.
    let want = len as usize - 1;
    let mut payload = Vec::with_capacity(want.min(64 * 1024));
    input
        .take(want as u64)
        .read_to_end(&mut payload)
        .map_err(|e| ProtocolError::Io(e.to_string()))?;
    if payload.len() < want {
        return Err(ProtocolError::Truncated(format!(
            "the stream ended {} bytes into a frame of {len}",
            payload.len() + 1
        )));
    }
    Ok(Some((kind[0], payload)))
}

/// Reads until `buf` is full or the stream ends; returns how much was read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, ProtocolError> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtocolError::Io(e.to_string())),
        }
    }
    Ok(got)
}

// ---------------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------------

/// The worker's greeting, its first frame.
pub(crate) fn hello_frame(pid: u32) -> Vec<u8> {
    let mut f = Frame::new(HELLO);
    f.put_bytes(MAGIC);
    f.put_bytes(&PROTOCOL_VERSION.to_le_bytes());
    f.put_bytes(&pid.to_le_bytes());
    // A fixed 17 bytes: cannot exceed the limit.
    f.finish().unwrap_or_default()
}

/// Reads the worker's greeting and checks it: a wasmpool worker of this protocol version.
/// Returns the worker's pid as it sees it.
pub(crate) fn read_hello(input: &mut impl Read) -> Result<u32, ProtocolError> {
    let mut buf = [0u8; HELLO_SIZE];
    let got = read_full(input, &mut buf)?;
    if got == 0 {
        return Err(ProtocolError::Truncated(
            "the worker closed its channel before the handshake".into(),
        ));
    }
    let expected_len = (HELLO_SIZE - 4) as u32;
    let header_ok = got == HELLO_SIZE
        && buf[..4] == expected_len.to_le_bytes()
        && buf[4] == HELLO
        && &buf[5..13] == MAGIC;
    if !header_ok {
        return Err(ProtocolError::NotAWorker(format!(
            "instead of a greeting it wrote {:?}",
            String::from_utf8_lossy(&buf[..got])
        )));
    }
    let mut r = Reader::new(&buf[13..]);
    let version = r.u32_le("version")?;
    let pid = r.u32_le("pid")?;
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: version,
        });
    }
    Ok(pid)
}

/// What every task of a worker shares, sent once after the greeting.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Setup {
    pub(crate) name: String,
    pub(crate) settings: TaskSettings,
}

pub(crate) fn setup_frame(s: &Setup) -> Result<Vec<u8>, ProtocolError> {
    let mut f = Frame::new(SETUP);
    f.put_bytes(&PROTOCOL_VERSION.to_le_bytes());
    f.put_str(&s.name);
    let TaskSettings {
        output,
        budget,
        capabilities,
        policy,
        initializer,
    } = &s.settings;
    put_output_mode(&mut f, *output);
    put_budget(&mut f, budget);
    put_capabilities(&mut f, capabilities);
    match policy {
        InstancePolicy::Fresh => f.put_u8(0),
        InstancePolicy::Reuse { max_tasks } => {
            f.put_u8(1);
            f.put_len(*max_tasks);
        }
    }
    f.put_opt_str(initializer.as_deref());
    f.finish()
}

// ---------------------------------------------------------------------------------------------
// Messages to the worker
// ---------------------------------------------------------------------------------------------

/// A component to load, by the id tasks will refer to it with.
pub(crate) struct Load {
    pub(crate) id: u64,
    pub(crate) config: RuntimeConfig,
    pub(crate) origin: String,
    pub(crate) code: Vec<u8>,
}

/// The start of a LOAD frame; the `code_len` bytes of precompiled code follow it.
pub(crate) fn load_frame_header(
    id: u64,
    config: &RuntimeConfig,
    origin: &str,
    code_len: usize,
) -> Result<Vec<u8>, ProtocolError> {
    let mut f = Frame::new(LOAD);
    f.put_uleb(id);
    put_runtime_config(&mut f, config);
    f.put_str(origin);
    f.finish_with(code_len)
}

/// One call to run.
pub(crate) struct Task {
    pub(crate) id: u64,
    pub(crate) component: u64,
    pub(crate) function: usize,
    pub(crate) budget: Budget,
    pub(crate) argv: Option<Vec<String>>,
    pub(crate) args: Vec<Val>,
}

/// Encodes a TASK frame. Fails if an argument cannot be sent (a resource) or the frame
/// would be too large.
pub(crate) fn task_frame(
    id: u64,
    component: u64,
    function: usize,
    budget: &Budget,
    argv: Option<&[String]>,
    args: &[Val],
) -> Result<Vec<u8>, ProtocolError> {
    let mut f = Frame::new(TASK);
    f.put_uleb(id);
    f.put_uleb(component);
    f.put_len(function);
    put_budget(&mut f, budget);
    match argv {
        None => f.put_u8(0),
        Some(argv) => {
            f.put_u8(1);
            put_strings(&mut f, argv);
        }
    }
    f.put_len(args.len());
    for arg in args {
        put_val(&mut f, arg)?;
    }
    f.finish()
}

pub(crate) fn abort_frame(id: u64) -> Vec<u8> {
    let mut f = Frame::new(ABORT);
    f.put_uleb(id);
    // At most 11 bytes: cannot exceed the limit.
    f.finish().unwrap_or_default()
}

/// A message from the pool, as the worker reads it.
pub(crate) enum ToWorker {
    Setup(Setup),
    Load(Load),
    Task(Task),
    Abort(u64),
}

pub(crate) fn decode_to_worker(kind: u8, payload: &[u8]) -> Result<ToWorker, ProtocolError> {
    let mut r = Reader::new(payload);
    let message = match kind {
        SETUP => {
            let version = r.u32_le("version")?;
            if version != PROTOCOL_VERSION {
                return Err(ProtocolError::VersionMismatch {
                    ours: PROTOCOL_VERSION,
                    theirs: version,
                });
            }
            ToWorker::Setup(Setup {
                name: r.string("worker name")?,
                settings: TaskSettings {
                    output: read_output_mode(&mut r)?,
                    budget: read_budget(&mut r)?,
                    capabilities: read_capabilities(&mut r)?,
                    policy: match r.u8("instance policy")? {
                        0 => InstancePolicy::Fresh,
                        1 => InstancePolicy::Reuse {
                            max_tasks: usize::try_from(r.uleb("max tasks")?).unwrap_or(usize::MAX),
                        },
                        b => return Err(malformed(format!("unknown instance policy {b}"))),
                    },
                    initializer: r.opt_string("initializer")?,
                },
            })
        }
        LOAD => {
            let id = r.uleb("component id")?;
            let config = read_runtime_config(&mut r)?;
            let origin = r.string("origin")?;
            let code = r.rest().to_vec();
            ToWorker::Load(Load {
                id,
                config,
                origin,
                code,
            })
        }
        TASK => {
            let id = r.uleb("task id")?;
            let component = r.uleb("component id")?;
            let function = usize::try_from(r.uleb("function index")?)
                .map_err(|e| malformed(format!("function index: {e}")))?;
            let budget = read_budget(&mut r)?;
            let argv = if r.bool("argv flag")? {
                Some(read_strings(&mut r, "argv")?)
            } else {
                None
            };
            let n = r.count(1, "arguments")?;
            let mut args = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                args.push(read_val(&mut r)?);
            }
            ToWorker::Task(Task {
                id,
                component,
                function,
                budget,
                argv,
                args,
            })
        }
        ABORT => ToWorker::Abort(r.uleb("task id")?),
        other => return Err(ProtocolError::UnexpectedFrame(other)),
    };
    r.finish("the frame")?;
    Ok(message)
}

// ---------------------------------------------------------------------------------------------
// Messages to the pool
// ---------------------------------------------------------------------------------------------

/// A message from a worker, as the pool reads it.
pub(crate) enum FromWorker {
    Output(HostStream, Vec<u8>),
    Result(u64, TaskRun),
}

pub(crate) fn output_frame(stream: HostStream, line: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let mut f = Frame::new(OUTPUT);
    f.put_u8(match stream {
        HostStream::Stdout => 1,
        HostStream::Stderr => 2,
    });
    f.put_bytes(line);
    f.finish()
}

/// Encodes a RESULT frame. A value that cannot be sent (a resource) becomes a task error.
pub(crate) fn result_frame(id: u64, run: &TaskRun) -> Result<Vec<u8>, ProtocolError> {
    let mut f = Frame::new(RESULT);
    f.put_uleb(id);
    let mut outcome = Vec::new();
    let encoded = match &run.outcome {
        Ok(value) => {
            outcome.put_u8(0);
            put_opt_val(&mut outcome, value.val(), 0)
        }
        Err(e) => {
            outcome.put_u8(1);
            put_task_error(&mut outcome, e);
            Ok(())
        }
    };
    if let Err(e) = encoded {
        outcome.clear();
        outcome.put_u8(1);
        put_task_error(
            &mut outcome,
            &TaskError::Start {
                message: format!("the task's result cannot be returned: {e}"),
            },
        );
    }
    f.put_bytes(&outcome);
    f.put_uleb(nanos(run.elapsed));
    f.put_opt_uleb(run.fuel_consumed);
    f.put_uleb(run.peak_memory);
    f.put_opt_str(run.stdout.as_deref());
    f.put_opt_str(run.stderr.as_deref());
    f.put_bool(run.breaks_pool);
    f.finish()
}

pub(crate) fn decode_from_worker(kind: u8, payload: &[u8]) -> Result<FromWorker, ProtocolError> {
    let mut r = Reader::new(payload);
    let message = match kind {
        OUTPUT => {
            let stream = match r.u8("stream")? {
                1 => HostStream::Stdout,
                2 => HostStream::Stderr,
                s => return Err(malformed(format!("unknown output stream {s}"))),
            };
            FromWorker::Output(stream, r.rest().to_vec())
        }
        RESULT => {
            let id = r.uleb("task id")?;
            let outcome = match r.u8("outcome")? {
                0 => Ok(TaskValue::from(read_opt_val(&mut r)?)),
                1 => Err(read_task_error(&mut r)?),
                b => return Err(malformed(format!("unknown outcome {b}"))),
            };
            let run = TaskRun {
                outcome,
                elapsed: Duration::from_nanos(r.uleb("elapsed")?),
                fuel_consumed: r.opt_uleb("fuel")?,
                peak_memory: r.uleb("peak memory")?,
                stdout: r.opt_string("stdout")?,
                stderr: r.opt_string("stderr")?,
                breaks_pool: r.bool("breaks pool")?,
            };
            FromWorker::Result(id, run)
        }
        other => return Err(ProtocolError::UnexpectedFrame(other)),
    };
    r.finish("the frame")?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::OutputMode;
    use crate::sandbox::Capabilities;

    fn split(frame: &[u8]) -> (u8, Vec<u8>) {
        read_frame(&mut &frame[..]).unwrap().unwrap()
    }

    fn run(outcome: Result<TaskValue, TaskError>) -> TaskRun {
        TaskRun {
            outcome,
            elapsed: Duration::from_micros(1234),
            fuel_consumed: Some(77),
            peak_memory: 65536,
            stdout: Some("out\n".into()),
            stderr: None,
            breaks_pool: false,
        }
    }

    #[test]
    fn hello_is_checked() {
        let frame = hello_frame(4242);
        assert_eq!(frame.len(), HELLO_SIZE);
        assert_eq!(read_hello(&mut &frame[..]), Ok(4242));

        let mut other = frame.clone();
        other[13..17].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(
            read_hello(&mut &other[..]),
            Err(ProtocolError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 7
            })
        );
        let garbage = b"Usage: some-other-program [OPTIONS]\n";
        let err = read_hello(&mut &garbage[..]).unwrap_err();
        assert!(matches!(err, ProtocolError::NotAWorker(_)), "{err:?}");
        assert!(err.to_string().contains("Usage: some-other"), "{err}");
        assert!(matches!(
            read_hello(&mut &b""[..]),
            Err(ProtocolError::Truncated(_))
        ));
    }

    #[test]
    fn setup_round_trips() {
        let setup = Setup {
            name: "worker-3".into(),
            settings: TaskSettings {
                output: OutputMode::Capture { limit: 100 },
                budget: Budget::default()
                    .timeout(Duration::from_millis(250))
                    .fuel(9),
                capabilities: Capabilities::default()
                    .dir("/tmp", "/data")
                    .dir_writable("/var/tmp", "/out")
                    .env("A", "b")
                    .args(["x", "y"])
                    .network(true),
                policy: InstancePolicy::Reuse { max_tasks: 8 },
                initializer: Some("init".into()),
            },
        };
        let (kind, payload) = split(&setup_frame(&setup).unwrap());
        match decode_to_worker(kind, &payload).unwrap() {
            ToWorker::Setup(s) => assert_eq!(s, setup),
            _ => panic!("not a setup"),
        }
    }

    #[test]
    fn tasks_and_loads_round_trip() {
        let args = [Val::String("ann".into()), Val::U32(3)];
        let argv = ["prog".to_string()];
        let budget = Budget::default().max_memory(1 << 20);
        let frame = task_frame(9, 2, 5, &budget, Some(&argv), &args).unwrap();
        let (kind, payload) = split(&frame);
        match decode_to_worker(kind, &payload).unwrap() {
            ToWorker::Task(t) => {
                assert_eq!((t.id, t.component, t.function), (9, 2, 5));
                assert_eq!(t.budget, budget);
                assert_eq!(t.argv.as_deref(), Some(&argv[..]));
                assert_eq!(t.args, args);
            }
            _ => panic!("not a task"),
        }
        let config = RuntimeConfig::default().fuel(true).max_wasm_stack(1 << 16);
        let mut frame = load_frame_header(4, &config, "x.wasm", 3).unwrap();
        frame.extend_from_slice(b"abc");
        let (kind, payload) = split(&frame);
        match decode_to_worker(kind, &payload).unwrap() {
            ToWorker::Load(l) => {
                assert_eq!(
                    (l.id, l.config, l.origin, l.code),
                    (4, config, "x.wasm".into(), b"abc".to_vec())
                );
            }
            _ => panic!("not a load"),
        }
        let (kind, payload) = split(&abort_frame(77));
        assert!(matches!(
            decode_to_worker(kind, &payload),
            Ok(ToWorker::Abort(77))
        ));
    }

    #[test]
    fn results_round_trip_with_every_error_kind() {
        let outcomes = [
            Ok(TaskValue::from(Val::Float64(0.5))),
            Ok(TaskValue::unit()),
            Err(TaskError::Failed {
                message: "m".into(),
                value: "\"m\"".into(),
            }),
            Err(TaskError::Trap {
                trap: "unreachable".into(),
                panic: Some("boom".into()),
                backtrace: "0: f".into(),
            }),
            Err(TaskError::Timeout {
                limit: Duration::from_millis(5),
            }),
            Err(TaskError::OutOfFuel { limit: 10 }),
            Err(TaskError::MemoryLimit { limit: 1 << 20 }),
            Err(TaskError::StackOverflow {
                backtrace: String::new(),
            }),
            Err(TaskError::Cancelled),
            Err(TaskError::BrokenPool { reason: "r".into() }),
            Err(TaskError::Start {
                message: "s".into(),
            }),
        ];
        for outcome in outcomes {
            let sent = run(outcome);
            let (kind, payload) = split(&result_frame(5, &sent).unwrap());
            match decode_from_worker(kind, &payload).unwrap() {
                FromWorker::Result(id, got) => {
                    assert_eq!(id, 5);
                    assert_eq!(got.outcome, sent.outcome);
                    assert_eq!(got.elapsed, sent.elapsed);
                    assert_eq!(got.fuel_consumed, sent.fuel_consumed);
                    assert_eq!(got.peak_memory, sent.peak_memory);
                    assert_eq!(got.stdout, sent.stdout);
                    assert_eq!(got.stderr, sent.stderr);
                    assert_eq!(got.breaks_pool, sent.breaks_pool);
                }
                FromWorker::Output(..) => panic!("not a result"),
            }
        }
    }

    #[test]
    fn framing_errors_are_typed() {
        // A clean end between frames is not an error; inside one it is.
        assert_eq!(read_frame(&mut &b""[..]), Ok(None));
        assert!(matches!(
            read_frame(&mut &[5u8, 0][..]),
            Err(ProtocolError::Truncated(_))
        ));
        assert!(matches!(
            read_frame(&mut &[9u8, 0, 0, 0, RESULT, 1][..]),
            Err(ProtocolError::Truncated(_))
        ));
        let huge = (MAX_FRAME + 1).to_le_bytes();
        assert!(matches!(
            read_frame(&mut &huge[..]),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        assert!(matches!(
            read_frame(&mut &[0u8, 0, 0, 0][..]),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode_from_worker(TASK, &[]),
            Err(ProtocolError::UnexpectedFrame(TASK))
        ));
        // Trailing bytes after a complete message.
        let mut frame = abort_frame(1);
        frame.push(0);
        frame[0] += 1;
        let (kind, payload) = split(&frame);
        assert!(matches!(
            decode_to_worker(kind, &payload),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn every_truncated_result_fails_cleanly() {
        let frame = result_frame(
            3,
            &run(Ok(TaskValue::from(Val::Record(vec![(
                "x".into(),
                Val::List(vec![Val::S64(-5); 10]),
            )])))),
        )
        .unwrap();
        for cut in 0..frame.len() {
            let res = read_frame(&mut &frame[..cut]);
            assert!(cut == 0 || res.is_err(), "cut at {cut}");
        }
        // Cut payloads whose frame length was fixed up: the decoder must notice.
        let (kind, payload) = split(&frame);
        for cut in 0..payload.len() {
            assert!(
                decode_from_worker(kind, &payload[..cut]).is_err(),
                "cut {cut}"
            );
        }
    }
}
