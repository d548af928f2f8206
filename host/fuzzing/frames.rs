//! The `worker_frames` and `parent_frames` fuzz targets: streams of frames decoded the way
//! the pool's reader thread and the worker's loop decode them. Every message that decodes
//! must re-encode, the re-encoding must decode to a message equal to the first (every field
//! compared: the messages derive `PartialEq`), and re-encoding that must give the same bytes
//! (the encoding is canonical).

use std::fmt::Debug;

use crate::process_pool::framing::{frame, hello_frame, read_frame, read_hello};
use crate::process_pool::messages::{FromWorker, Message, TaskResult, ToWorker};

/// How far one input got through [`worker_stream`] or [`parent_stream`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reached {
    /// The stream began with a valid greeting (a worker's stream only).
    pub greeting: bool,
    /// Frames read whole from the stream, after the greeting.
    pub frames: usize,
    /// One entry per message that decoded and passed the round-trip checks, in stream
    /// order: its kind (`"HELLO"`, `"OUTPUT"`, `"SETUP"`, `"LOAD"`, `"TASK"`,
    /// `"ABORT"`), or for a RESULT, `"RESULT ok"` or `"RESULT "` and the error's kind
    /// (`"RESULT timeout"`, ...).
    pub round_trips: Vec<String>,
}

/// A message that the round-trip check and the seeds can name.
pub(super) trait Checked: Message + PartialEq + Debug {
    /// What [`Reached::round_trips`] records for it.
    fn label(&self) -> String {
        self.name().into()
    }
}

impl Checked for ToWorker<'_> {}

impl Checked for FromWorker<'_> {
    fn label(&self) -> String {
        match self {
            FromWorker::Result(TaskResult { run, .. }) => match &run.outcome {
                Ok(_) => "RESULT ok".into(),
                Err(e) => format!("RESULT {}", e.kind()),
            },
            FromWorker::Output(_) => self.name().into(),
        }
    }
}

/// The frame the sending side writes for `m`, in one buffer.
pub(super) fn encode<M: Checked>(m: &M) -> Vec<u8> {
    match frame(m) {
        Ok(frame) => frame.into_bytes(),
        Err(e) => panic!("a {} does not encode: {e}", m.label()),
    }
}

/// Checks that `first`, a decoded message, survives encoding and decoding unchanged,
/// and that its encoding is canonical; panics otherwise. Returns its label.
fn check_round_trip<M: Checked>(first: &M) -> String {
    let label = first.label();
    let frame = encode(first);
    let mut rest = &frame[..];
    let (kind, payload) = match read_frame(&mut rest) {
        Ok(Some(read)) => read,
        other => panic!("a re-encoded {label} is not a frame: {other:?}"),
    };
    assert!(
        rest.is_empty(),
        "a re-encoded {label} is more than one frame"
    );
    let second = M::decode(kind, &payload)
        .unwrap_or_else(|e| panic!("a re-encoded {label} does not decode: {e}"));
    assert_eq!(
        &second, first,
        "a {label} decoded from its re-encoding differs from the one decoded first"
    );
    assert_eq!(
        encode(&second),
        frame,
        "the encoding of {label} is not canonical"
    );
    label
}

/// Reads frames the way the worker's loop or the pool's reader thread does, checking
/// each message that decodes.
fn read_frames<M: Checked>(mut input: &[u8], reached: &mut Reached) {
    while let Ok(Some((kind, payload))) = read_frame(&mut input) {
        reached.frames += 1;
        if let Ok(message) = M::decode(kind, &payload) {
            reached.round_trips.push(check_round_trip(&message));
        }
    }
}

/// Bytes a worker could write to the pool: a greeting, then frames, each decoded the
/// way the pool's reader thread does. Every message that decodes (greeting, OUTPUT,
/// RESULT) must survive re-encoding and decoding unchanged, field by field, and its
/// encoding must be canonical.
pub fn worker_stream(data: &[u8]) -> Reached {
    let mut reached = Reached::default();
    let mut input = data;
    // Whatever the greeting's verdict, the frames after it are read on, as a reader
    // would if it did not stop.
    if let Ok(pid) = read_hello(&mut input) {
        let frame = hello_frame(pid);
        assert_eq!(
            read_hello(&mut &frame[..]),
            Ok(pid),
            "a re-encoded greeting does not read back"
        );
        reached.greeting = true;
        reached.round_trips.push("HELLO".into());
    }
    read_frames::<FromWorker>(input, &mut reached);
    reached
}

/// Bytes a parent could write to a worker's stdin: frames decoded the way the worker's
/// loop does. Every message that decodes (SETUP, LOAD, TASK, ABORT) must survive
/// re-encoding and decoding unchanged, field by field, and its encoding must be
/// canonical.
pub fn parent_stream(data: &[u8]) -> Reached {
    let mut reached = Reached::default();
    read_frames::<ToWorker>(data, &mut reached);
    reached
}
