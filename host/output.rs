//! Where a task's stdout and stderr go.
//!
//! Each task gets its own [`LineSink`] per stream. A sink cuts the guest's bytes into lines
//! and forwards each whole line in one write, under the host stream's lock, with a prefix
//! naming the worker. Tasks running at the same time therefore never interleave mid-line.
//! Stderr also keeps a bounded tail, so a guest panic message can go into the task error.
//!
//! A captured stream that outgrows its limit is cut at a line boundary: the kept text ends
//! with a newline, then the line [`cut_marker`] says where it was cut, and nothing after it
//! is kept. So captured text printed one task after another never joins two tasks' lines;
//! the report's `stdout_truncated`/`stderr_truncated` say it was cut (a flag, not the text:
//! a guest can print the marker line itself).

use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// What happens to the stdout and stderr of tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OutputMode {
    /// Forward each line to the host's stdout/stderr, prefixed with the worker's name
    /// (`worker-1: sleeping 5`). The default.
    #[default]
    Prefixed,
    /// Forward each line unchanged.
    Plain,
    /// Drop the output.
    Discard,
    /// Keep each task's stdout and stderr, up to `limit` bytes each, and return them in its
    /// [`TaskReport`](crate::TaskReport). A stream that writes more is cut after its last
    /// whole line within the limit (a single longer line: within the line, ended with a
    /// newline), the line `[wasmpool: output cut at LIMIT]` follows, and the rest is dropped
    /// ([`TaskReport::stdout_truncated`](crate::TaskReport::stdout_truncated) tells).
    Capture {
        /// Bytes kept per stream.
        limit: usize,
    },
}

/// How much of stderr is kept to explain a trap.
const STDERR_TAIL: usize = 4096;
/// A line longer than this is forwarded in pieces, so a guest cannot make the host buffer
/// without bound by never writing a newline.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostStream {
    Stdout,
    Stderr,
}

/// Where a worker's forwarded lines go: part of the task environment (`TaskEnv`) the worker
/// gives each task.
#[derive(Clone, Default)]
pub(crate) enum Destination {
    /// This process's own stdout/stderr (a thread-pool worker).
    #[default]
    Host,
    /// A function that takes each line, prefix and newline included: a process-pool worker,
    /// whose stdout carries the protocol, sends it to the pool as an OUTPUT frame.
    Forward(Forward),
}

/// A function that takes each forwarded line of a stream.
pub(crate) type Forward = Arc<dyn Fn(HostStream, &[u8]) + Send + Sync>;

/// Writes `bytes` to this process's stdout or stderr in one locked write. A closed stream
/// (e.g. `| head`) is not an error: the output is lost, as it would be for a native program.
pub(crate) fn write_host(stream: HostStream, bytes: &[u8]) {
    let _ = match stream {
        HostStream::Stdout => std::io::stdout().lock().write_all(bytes),
        HostStream::Stderr => std::io::stderr().lock().write_all(bytes),
    };
}

/// One stream of one task. Cheap to clone: clones share the buffer.
#[derive(Clone)]
pub(crate) struct LineSink {
    state: Arc<Mutex<SinkState>>,
}

struct SinkState {
    /// `None`: discard. `Some(p)`: forward with prefix `p` (may be empty).
    prefix: Option<Arc<str>>,
    host: HostStream,
    /// Where forwarded lines go.
    destination: Destination,
    /// Bytes after the last newline written so far.
    partial: Vec<u8>,
    /// When `Some`, the last `STDERR_TAIL` bytes written.
    tail: Option<Vec<u8>>,
    /// When capturing: what was kept, and how much may be kept.
    capture: Option<Capture>,
}

/// The kept bytes of a captured stream.
struct Capture {
    kept: Vec<u8>,
    limit: usize,
    /// Set once the stream outgrew `limit`: `kept` ends with the cut marker, and grows no more.
    cut: bool,
}

/// The text of the line that ends a captured stream cut at `limit` bytes, newline included.
pub(crate) fn cut_marker(limit: usize) -> String {
    const KIB: usize = 1 << 10;
    const MIB: usize = 1 << 20;
    let size = match limit {
        0 => "0 bytes".to_string(),
        n if n % MIB == 0 => format!("{} MiB", n / MIB),
        n if n % KIB == 0 => format!("{} KiB", n / KIB),
        n => format!("{n} bytes"),
    };
    format!("{CUT_MARKER_START}{size}]\n")
}

/// How every [`cut_marker`] starts.
const CUT_MARKER_START: &str = "[wasmpool: output cut at ";

impl Capture {
    /// Keeps `bytes` while they fit; the first byte that does not cuts the stream.
    fn push(&mut self, bytes: &[u8]) {
        if self.cut {
            return;
        }
        let room = self.limit.saturating_sub(self.kept.len());
        if bytes.len() <= room {
            self.kept.extend_from_slice(bytes);
            return;
        }
        self.kept.extend_from_slice(&bytes[..room]);
        // Back to the end of the last whole line; a first line longer than the limit is cut
        // within itself and ended here.
        match self.kept.iter().rposition(|&b| b == b'\n') {
            Some(newline) => self.kept.truncate(newline + 1),
            None if self.kept.is_empty() => {}
            None => self.kept.push(b'\n'),
        }
        self.kept
            .extend_from_slice(cut_marker(self.limit).as_bytes());
        self.cut = true;
    }
}

impl LineSink {
    /// The sink of stream `host` of one task, forwarding lines to `destination` as `mode` says.
    pub(crate) fn new(
        mode: OutputMode,
        worker_name: &Arc<str>,
        host: HostStream,
        destination: &Destination,
    ) -> Self {
        let prefix = match mode {
            OutputMode::Prefixed => Some(Arc::from(format!("{worker_name}: "))),
            OutputMode::Plain => Some(Arc::from("")),
            OutputMode::Discard | OutputMode::Capture { .. } => None,
        };
        let capture = match mode {
            OutputMode::Capture { limit } => Some(Capture {
                kept: Vec::new(),
                limit,
                cut: false,
            }),
            _ => None,
        };
        let tail = (host == HostStream::Stderr).then(Vec::new);
        LineSink {
            state: Arc::new(Mutex::new(SinkState {
                prefix,
                host,
                destination: destination.clone(),
                partial: Vec::new(),
                tail,
                capture,
            })),
        }
    }

    fn push(&self, bytes: &[u8]) {
        lock(&self.state).push(bytes);
    }

    /// Forwards an unterminated last line; call when the task ends.
    pub(crate) fn finish(&self) {
        let mut state = lock(&self.state);
        if !state.partial.is_empty() {
            state.partial.push(b'\n');
            let line = std::mem::take(&mut state.partial);
            state.emit(&line);
        }
    }

    /// What was captured since the last call, as text, and whether it was cut at the
    /// limit (`None` unless the mode is `Capture`); the buffer starts empty again for the
    /// next task.
    pub(crate) fn take_captured(&self) -> Option<(String, bool)> {
        let mut state = lock(&self.state);
        let capture = state.capture.as_mut()?;
        let cut = std::mem::take(&mut capture.cut);
        let text = String::from_utf8_lossy(&std::mem::take(&mut capture.kept)).into_owned();
        Some((text, cut))
    }

    /// The last few KiB the guest wrote to this stream (stderr only), as text.
    pub(crate) fn tail(&self) -> String {
        let state = lock(&self.state);
        String::from_utf8_lossy(state.tail.as_deref().unwrap_or_default()).into_owned()
    }
}

impl SinkState {
    fn push(&mut self, mut bytes: &[u8]) {
        if let Some(tail) = &mut self.tail {
            tail.extend_from_slice(bytes);
            if tail.len() > STDERR_TAIL {
                tail.drain(..tail.len() - STDERR_TAIL);
            }
        }
        if let Some(capture) = &mut self.capture {
            capture.push(bytes);
        }
        if self.prefix.is_none() {
            return;
        }
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
            let (line, rest) = bytes.split_at(pos + 1);
            if self.partial.is_empty() {
                self.emit(line);
            } else {
                self.partial.extend_from_slice(line);
                let whole = std::mem::take(&mut self.partial);
                self.emit(&whole);
            }
            bytes = rest;
        }
        self.partial.extend_from_slice(bytes);
        if self.partial.len() >= MAX_LINE {
            self.partial.push(b'\n');
            let chunk = std::mem::take(&mut self.partial);
            self.emit(&chunk);
        }
    }

    /// Writes one newline-terminated line with the prefix, in a single locked write.
    fn emit(&self, line: &[u8]) {
        let Some(prefix) = &self.prefix else { return };
        let mut out = Vec::with_capacity(prefix.len() + line.len());
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(line);
        match &self.destination {
            Destination::Host => write_host(self.host, &out),
            Destination::Forward(forward) => forward(self.host, &out),
        }
    }
}

impl IsTerminal for LineSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LineSink {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// How many bytes a guest may write in one `write` call.
const WRITE_PERMIT: usize = 64 * 1024;

impl OutputStream for LineSink {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineSink {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LineSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a sink capturing at `limit` keeps of `writes`, and whether it was cut.
    fn captured(limit: usize, writes: &[&[u8]]) -> (String, bool) {
        let sink = LineSink::new(
            OutputMode::Capture { limit },
            &Arc::from("w"),
            HostStream::Stdout,
            &Destination::Host,
        );
        for bytes in writes {
            sink.push(bytes);
        }
        sink.finish();
        sink.take_captured().expect("a capturing sink")
    }

    #[test]
    fn a_capture_is_cut_after_its_last_whole_line_and_marked() {
        let (text, cut) = captured(10, &[b"abc\nde", b"f\nghij\n"]);
        assert_eq!(text, "abc\ndef\n[wasmpool: output cut at 10 bytes]\n");
        assert!(cut);
        // One line longer than the limit: cut within it, and ended.
        let (text, cut) = captured(2048, &[&[b'y'; 3000]]);
        assert_eq!(
            text,
            format!("{}\n[wasmpool: output cut at 2 KiB]\n", "y".repeat(2048))
        );
        assert!(cut);
        assert_eq!(
            captured(0, &[b"x"]),
            ("[wasmpool: output cut at 0 bytes]\n".to_string(), true)
        );
        // Up to the limit: kept whole, not cut.
        assert_eq!(
            captured(8, &[b"abc\n", b"def\n"]),
            ("abc\ndef\n".to_string(), false)
        );
        // A guest printing the marker itself is not a cut.
        let (_, cut) = captured(100, &[b"[wasmpool: output cut at 1 MiB]\n"]);
        assert!(!cut);
        assert_eq!(cut_marker(1 << 20), "[wasmpool: output cut at 1 MiB]\n");
    }

    #[test]
    fn the_next_task_of_a_sink_starts_uncut() {
        let sink = LineSink::new(
            OutputMode::Capture { limit: 4 },
            &Arc::from("w"),
            HostStream::Stdout,
            &Destination::Host,
        );
        sink.push(b"abc\ndef\n");
        assert_eq!(
            sink.take_captured(),
            Some(("abc\n[wasmpool: output cut at 4 bytes]\n".to_string(), true))
        );
        sink.push(b"gh\n");
        assert_eq!(sink.take_captured(), Some(("gh\n".to_string(), false)));
    }
}
