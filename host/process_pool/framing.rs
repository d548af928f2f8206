//! The pipe between a pool and a worker: frames, the greeting, and the one writer loop both
//! sides use.
//!
//! Every frame is `[length: u32 LE][kind: u8][payload]`, where `length` counts the kind byte
//! and the payload and is at most [`MAX_FRAME`]; kinds and payloads are `messages.rs`.
//!
//! The worker's first frame is always its greeting, HELLO (kind 1), 21 bytes:
//! `[17, 0, 0, 0][1]["wasmpool"][version u32 LE][pid u32 LE]`. The pool closes the worker's
//! stdin to ask it to finish its tasks and exit.

use std::io::{BufRead, BufWriter, Read, Write};
use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::error::ProtocolError;

use super::codec::{Reader, malformed};
use super::messages::{Message, PROTOCOL_VERSION};

/// The largest frame either side sends or accepts: 256 MiB (kind and payload).
pub(crate) const MAX_FRAME: u32 = 256 << 20;

/// Buffer size of both directions of the pipe, on both sides.
pub(crate) const CHANNEL_BUFFER: usize = 64 * 1024;

const MAGIC: &[u8; 8] = b"wasmpool";

const HELLO: u8 = 1;

/// The size of a HELLO frame, length field included.
const HELLO_SIZE: usize = 4 + 1 + MAGIC.len() + 4 + 4;

/// What the pool's writer thread writes: whole frames (or several in one buffer), or a frame
/// whose tail is shared rather than copied. (The worker appends its frames to one buffer:
/// `worker/outbox.rs`.)
#[derive(Debug, Clone)]
pub(crate) enum Frame {
    /// Frames, complete.
    Whole(Vec<u8>),
    /// Frames, complete, that the pool keeps too (a batch of TASK frames: see `Handed`).
    Shared(Arc<Vec<u8>>),
    /// One frame: its length, kind and payload head, then the tail (LOAD's code).
    Split { head: Vec<u8>, tail: Arc<[u8]> },
}

#[cfg(any(test, feature = "fuzzing"))]
impl Frame {
    /// The bytes as they go on the pipe, in one buffer.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        match self {
            Frame::Whole(bytes) => bytes,
            Frame::Shared(bytes) => bytes.to_vec(),
            Frame::Split { mut head, tail } => {
                head.extend_from_slice(&tail);
                head
            }
        }
    }
}

/// Appends `m`'s frame, tail included, to `out`. On error `out` is left as it was.
#[inline]
pub(crate) fn append<M: Message>(out: &mut Vec<u8>, m: &M) -> Result<(), ProtocolError> {
    put_head(out, m)?;
    if let Some(tail) = m.tail() {
        out.extend_from_slice(tail);
    }
    Ok(())
}

/// `m`'s frame, with its tail shared rather than copied.
pub(crate) fn frame<M: Message>(m: &M) -> Result<Frame, ProtocolError> {
    let mut head = Vec::new();
    put_head(&mut head, m)?;
    Ok(match m.tail() {
        None => Frame::Whole(head),
        Some(tail) => Frame::Split {
            head,
            tail: tail.clone(),
        },
    })
}

/// Appends the length (counting the tail), the kind and the payload; the one size check.
/// On error truncates `out` back.
#[inline]
fn put_head<M: Message>(out: &mut Vec<u8>, m: &M) -> Result<(), ProtocolError> {
    let start = out.len();
    // Most frames fit: one allocation for a fresh buffer, none for a batch with room.
    out.reserve(64);
    out.extend_from_slice(&[0; 4]);
    out.push(m.kind());
    if let Err(e) = m.encode_payload(out) {
        out.truncate(start);
        return Err(e);
    }
    let tail = m.tail().map_or(0, |t| t.len());
    let len = (out.len() - start - 4) as u64 + tail as u64;
    if len > u64::from(MAX_FRAME) {
        out.truncate(start);
        return Err(ProtocolError::FrameTooLarge {
            len,
            max: MAX_FRAME.into(),
        });
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Reads one frame: its kind and payload. `Ok(None)` at a clean end of stream (between
/// frames); a stream that ends inside a frame is [`ProtocolError::Truncated`].
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn read_frame(input: &mut impl BufRead) -> Result<Option<(u8, Vec<u8>)>, ProtocolError> {
    match use_buffered_frame(input, |kind, payload| (kind, payload.to_vec()))? {
        Some(frame) => Ok(Some(frame)),
        None => read_arriving_frame(input),
    }
}

/// Reads one frame, as [`read_frame`] does, and hands its kind and payload to `use_frame`.
///
/// A frame already whole in `input`'s buffer (the usual case: frames come in bursts, and a
/// buffer holds many) is used where it lies, with no copy and no allocation; others are
/// read as they arrive.
pub(crate) fn read_frame_with<T>(
    input: &mut impl BufRead,
    mut use_frame: impl FnMut(u8, &[u8]) -> T,
) -> Result<Option<T>, ProtocolError> {
    if let Some(used) = use_buffered_frame(input, &mut use_frame)? {
        return Ok(Some(used));
    }
    Ok(read_arriving_frame(input)?.map(|(kind, payload)| use_frame(kind, &payload)))
}

/// Hands the next frame to `use_frame` where it lies, if it is whole in `input`'s buffer
/// (filled first if it is empty) and its length is valid; `None` otherwise (at the end of
/// the stream too): then [`read_arriving_frame`] reads it, or reports what is wrong with it.
fn use_buffered_frame<T>(
    input: &mut impl BufRead,
    use_frame: impl FnOnce(u8, &[u8]) -> T,
) -> Result<Option<T>, ProtocolError> {
    let buf = loop {
        match input.fill_buf() {
            Ok(buf) => break buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtocolError::Io(e.to_string())),
        }
    };
    let Some(len) = buf.first_chunk::<4>().map(|len| u32::from_le_bytes(*len)) else {
        return Ok(None);
    };
    let len = len as usize;
    if len == 0 || len > MAX_FRAME as usize || buf.len() - 4 < len {
        return Ok(None);
    }
    let used = use_frame(buf[4], &buf[5..4 + len]);
    input.consume(4 + len);
    Ok(Some(used))
}

/// The next frame, read as its bytes arrive (the buffer does not hold all of it).
fn read_arriving_frame(input: &mut impl BufRead) -> Result<Option<(u8, Vec<u8>)>, ProtocolError> {
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
    let mut payload = Vec::with_capacity(want.min(CHANNEL_BUFFER));
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

/// Whether `buf` starts with a whole frame (so reading it will not block).
pub(crate) fn whole_frame_buffered(buf: &[u8]) -> bool {
    match buf.first_chunk::<4>() {
        Some(len) => buf.len() - 4 >= u32::from_le_bytes(*len) as usize,
        None => false,
    }
}

/// Writes frames to `out` in the order they arrive: waits for one, writes it and everything
/// else queued, then flushes, so a burst costs one write. Ends when every sender is gone,
/// or when a write fails (the other side is gone).
pub(crate) fn write_frames(out: impl Write, frames: &Receiver<Frame>) {
    let mut out = BufWriter::with_capacity(CHANNEL_BUFFER, out);
    while let Some(first) = crate::spin::recv(frames) {
        let mut next = Some(first);
        while let Some(frame) = next {
            let written = match frame {
                Frame::Whole(bytes) => out.write_all(&bytes),
                Frame::Shared(bytes) => out.write_all(&bytes),
                Frame::Split { head, tail } => {
                    out.write_all(&head).and_then(|()| out.write_all(&tail))
                }
            };
            if written.is_err() {
                return;
            }
            next = frames.try_recv().ok();
        }
        if out.flush().is_err() {
            return;
        }
    }
}

/// The worker's greeting, its first frame.
pub(crate) fn hello_frame(pid: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(HELLO_SIZE);
    f.extend_from_slice(&((HELLO_SIZE - 4) as u32).to_le_bytes());
    f.push(HELLO);
    f.extend_from_slice(MAGIC);
    f.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    f.extend_from_slice(&pid.to_le_bytes());
    f
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wasmtime::component::Val;

    use super::*;
    use crate::process_pool::messages::{Abort, FromWorker, RESULT, TASK, TaskResult, ToWorker};
    use crate::run::TaskRun;
    use crate::value::TaskValue;

    fn split(frame: &[u8]) -> (u8, Vec<u8>) {
        read_frame(&mut &frame[..]).unwrap().unwrap()
    }

    /// Frames whole in the buffer are used where they lie, frames cut by the buffer's end are
    /// read as they arrive: the same frames either way, and the same errors.
    #[test]
    fn frames_read_the_same_whole_in_the_buffer_or_not() {
        let mut stream = Vec::new();
        for id in [1, 2, 300] {
            append(&mut stream, &ToWorker::Abort(Abort { id })).unwrap();
        }
        append(&mut stream, &ToWorker::Abort(Abort { id: u64::MAX })).unwrap();
        let read_all = |capacity: usize| {
            let mut input = std::io::BufReader::with_capacity(capacity, &stream[..]);
            let mut frames = Vec::new();
            while let Some(frame) =
                read_frame_with(&mut input, |kind, payload| (kind, payload.to_vec())).unwrap()
            {
                frames.push(frame);
            }
            frames
        };
        let whole = read_all(4096);
        assert_eq!(whole.len(), 4);
        for capacity in [1, 3, 5, 7] {
            assert_eq!(read_all(capacity), whole, "a buffer of {capacity} bytes");
        }
        let ids: Vec<u64> = whole
            .iter()
            .map(|(kind, payload)| match ToWorker::decode(*kind, payload) {
                Ok(ToWorker::Abort(Abort { id })) => id,
                other => panic!("not an ABORT: {other:?}"),
            })
            .collect();
        assert_eq!(ids, [1, 2, 300, u64::MAX]);

        // An empty frame is malformed whichever way it is read.
        let empty = [0u8; 4];
        for capacity in [2, 4096] {
            let mut input = std::io::BufReader::with_capacity(capacity, &empty[..]);
            assert!(matches!(
                read_frame_with(&mut input, |_, _| ()),
                Err(ProtocolError::Malformed(_))
            ));
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
            FromWorker::decode(TASK, &[]),
            Err(ProtocolError::UnexpectedFrame(TASK))
        ));
        // Trailing bytes after a complete message.
        let mut frame = frame(&ToWorker::Abort(Abort { id: 1 }))
            .unwrap()
            .into_bytes();
        frame.push(0);
        frame[0] += 1;
        let (kind, payload) = split(&frame);
        assert!(matches!(
            ToWorker::decode(kind, &payload),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn append_leaves_the_buffer_as_it_was_on_error() {
        let mut deep = Val::Bool(true);
        for _ in 0..crate::process_pool::codec::values::MAX_DEPTH + 1 {
            deep = Val::Option(Some(Box::new(deep)));
        }
        let task = ToWorker::Task(crate::process_pool::messages::RunTask {
            id: 1,
            component: 1,
            function: 0,
            budget: Default::default(),
            argv: None,
            args: vec![Val::U8(1), deep].into(),
            rest: Vec::new(),
        });
        let mut out = vec![1, 2, 3];
        assert!(matches!(
            append(&mut out, &task),
            Err(ProtocolError::TooDeep(_))
        ));
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn every_truncated_result_fails_cleanly() {
        let result = FromWorker::Result(TaskResult {
            id: 3,
            run: TaskRun {
                outcome: Ok(TaskValue::from(Val::Record(vec![(
                    "x".into(),
                    Val::List(vec![Val::S64(-5); 10]),
                )]))),
                elapsed: Duration::from_micros(1234),
                fuel_consumed: Some(77),
                peak_memory: 65536,
                stdout: Some("out\n".into()),
                stderr: None,
                stdout_truncated: false,
                stderr_truncated: false,
            },
        });
        let frame = frame(&result).unwrap().into_bytes();
        for cut in 0..frame.len() {
            let res = read_frame(&mut &frame[..cut]);
            assert!(cut == 0 || res.is_err(), "cut at {cut}");
        }
        // Cut payloads whose frame length was fixed up: the decoder must notice.
        let (kind, payload) = split(&frame);
        for cut in 0..payload.len() {
            assert!(
                FromWorker::decode(kind, &payload[..cut]).is_err(),
                "cut {cut}"
            );
        }
    }
}
