//! `map`'s input: the lines of a file or of stdin, read on a thread of their own and handed
//! over through a bounded channel, so that the input is never read far ahead of the tasks
//! (a million-line input is never in memory) and the main loop never blocks on a read.
//!
//! Each non-blank line is one task; its index counts the non-blank lines from 0. The line's
//! text is parsed here as the arguments of the function, in WAVE or in JSON (`--input`): a
//! line that does not parse is an input of its own, that fails alone as `invalid-input`. A
//! function without parameters is called once per non-blank line, whatever the line holds
//! (`seq 100 | wasmpool map c.wasm noop` calls `noop` 100 times, like GNU parallel's `-N0`).

use std::io::{self, BufRead};
use std::sync::Arc;
use std::thread;

use anyhow::anyhow;
use crossbeam_channel::Receiver;
use wasmpool::{Call, TaskComponent};

use super::args::InputFormat;
use super::joblog::{Logged, Verdict};
use super::print::preview;

/// The longest line read; longer ones are an `invalid-input` of their own.
const MAX_LINE: usize = 16 << 20;

/// How many bytes of a line longer than [`MAX_LINE`] its input text shows.
const TOO_LONG_SHOWN: usize = 64;

/// One input line.
#[derive(Debug)]
pub struct Input {
    /// Its position among the non-blank lines, from 0.
    pub index: u64,
    /// The arguments, as written (trimmed); for a line that is not UTF-8, as much of it as
    /// is, with U+FFFD for the rest; for a line that is too long, its start and `…`.
    pub text: String,
    /// The checked call, or why the line is not one.
    pub call: Result<Call, String>,
}

/// What the reader sends: inputs in the order read, or the error that ended the input (a
/// read error, or a line that is not the one a resumed joblog logged for its task).
pub type Message = anyhow::Result<Vec<Input>>;

/// The most inputs in one message. Lines are sent in chunks, so that reading ahead costs
/// the main loop one channel operation (and at most one wake-up) per chunk, not per line.
const CHUNK: usize = 64;

/// Where `map` reads its lines: a file or stdin, with a buffer the reader can look into.
pub type Source = io::BufReader<Box<dyn io::Read + Send>>;

/// Starts reading `source` on a new thread. At most `capacity` parsed lines wait in the
/// channel (in chunks of up to [`CHUNK`]); it is closed at the end of the input (after an
/// error, if one happened). A chunk goes as soon as it is full, or before a read that may
/// block, so a line typed at a terminal is not held back. Lines that `logged` skips are
/// counted and dropped; a line that it logged with another input ends the input with an
/// error. Lines are calls of `function` written in `format`.
pub fn spawn(
    source: Source,
    component: TaskComponent,
    function: String,
    format: InputFormat,
    logged: Arc<Logged>,
    capacity: usize,
) -> io::Result<Receiver<Message>> {
    let chunk = CHUNK.min(capacity).max(1);
    let (sender, receiver) = crossbeam_channel::bounded((capacity / chunk).max(1));
    let takes_no_args = component
        .function(&function)
        .is_ok_and(|f| f.params().len() == 0);
    thread::Builder::new().name("input".into()).spawn(move || {
        let mut lines = Lines::new(source);
        let mut index = 0;
        let mut pending = Vec::with_capacity(chunk);
        // Sends what is pending; false when the receiver is gone (the map stopped early).
        let send = |pending: &mut Vec<Input>| {
            pending.is_empty()
                || sender
                    .send(Ok(std::mem::replace(pending, Vec::with_capacity(chunk))))
                    .is_ok()
        };
        loop {
            if lines.source.buffer().is_empty() && !send(&mut pending) {
                return;
            }
            let line = match lines.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => {
                    send(&mut pending);
                    return;
                }
                Err(e) => {
                    if send(&mut pending) {
                        let _ = sender.send(Err(anyhow!(e).context("error reading the input")));
                    }
                    return;
                }
            };
            let text = match &line {
                Ok(text) => text.trim(),
                Err(bad) => bad.text.as_str(),
            };
            if line.is_ok() && text.is_empty() {
                continue;
            }
            let this = index;
            index += 1;
            match logged.verdict(this, text) {
                Verdict::Run => {}
                Verdict::Skip => continue,
                Verdict::Changed { logged: was } => {
                    if send(&mut pending) {
                        let _ = sender.send(Err(changed(&logged, this, text, was.as_deref())));
                    }
                    return;
                }
            }
            pending.push(Input {
                index: this,
                text: text.to_string(),
                call: match &line {
                    Ok(_) if takes_no_args => component
                        .call(&function, Vec::new())
                        .map_err(|e| e.to_string()),
                    Ok(_) => parse_call(&component, &function, format, text),
                    Err(bad) => Err(bad.why.clone()),
                },
            });
            if pending.len() >= chunk && !send(&mut pending) {
                return;
            }
        }
    })?;
    Ok(receiver)
}

/// The call of `function` whose arguments are `text`, a line written in `format`; the
/// error is the `invalid-input` message.
pub fn parse_call(
    component: &TaskComponent,
    function: &str,
    format: InputFormat,
    text: &str,
) -> Result<Call, String> {
    match format {
        InputFormat::Wave => component.call_wave_args(function, text),
        InputFormat::Json => {
            let args: serde_json::Value =
                serde_json::from_str(text).map_err(|e| format!("the line is not JSON: {e}"))?;
            component.call_json(function, &args)
        }
    }
    .map_err(|e| e.to_string())
}

/// The error of a resumed map whose input line for task `index` reads `text`, though the
/// joblog logged `was` for it.
fn changed(logged: &Logged, index: u64, text: &str, was: Option<&str>) -> anyhow::Error {
    let was = was.map_or_else(
        || "another input".to_string(),
        |w| format!("`{}`", preview(w)),
    );
    anyhow!(
        "cannot resume: task {index} reads `{}`, but joblog {} logged {was} for it; this \
         input is not the one the joblog was written for (run without --resume to start \
         afresh, or name another --joblog)",
        preview(text),
        logged.path().display()
    )
}

/// Counts the non-blank lines of a file that `logged` does not skip (for the progress bar's
/// total), reading it once more in constant memory.
pub fn count_tasks(source: impl BufRead, logged: &Logged) -> io::Result<u64> {
    let mut lines = Lines::new(source);
    let (mut index, mut count) = (0u64, 0u64);
    while let Some(line) = lines.next_line()? {
        if matches!(&line, Ok(text) if text.trim().is_empty()) {
            continue;
        }
        if !logged.skips(index) {
            count += 1;
        }
        index += 1;
    }
    Ok(count)
}

/// Splits a byte stream into lines of bounded length.
struct Lines<R> {
    source: R,
    buffer: Vec<u8>,
}

/// A line: its text, or why it is unusable.
type Line = Result<String, BadLine>;

/// A line that is not UTF-8 or is too long.
#[derive(Debug, PartialEq)]
struct BadLine {
    /// Why it is unusable.
    why: String,
    /// What it shows as text.
    text: String,
}

impl<R: BufRead> Lines<R> {
    fn new(source: R) -> Self {
        Lines {
            source,
            buffer: Vec::new(),
        }
    }

    /// The next line, `None` at the end.
    fn next_line(&mut self) -> io::Result<Option<Line>> {
        self.buffer.clear();
        let limit = MAX_LINE as u64 + 1;
        let read = <&mut R as io::Read>::take(&mut self.source, limit)
            .read_until(b'\n', &mut self.buffer)?;
        if read == 0 {
            return Ok(None);
        }
        if self.buffer.last() == Some(&b'\n') {
            self.buffer.pop();
        } else if self.buffer.len() > MAX_LINE {
            self.skip_rest_of_line()?;
            let start = String::from_utf8_lossy(&self.buffer[..TOO_LONG_SHOWN]);
            return Ok(Some(Err(BadLine {
                why: format!("the line is longer than {MAX_LINE} bytes"),
                text: format!("{}…", start.trim_start()),
            })));
        }
        Ok(Some(match std::str::from_utf8(&self.buffer) {
            Ok(text) => Ok(text.to_string()),
            Err(e) => Err(BadLine {
                why: format!(
                    "the line is not valid UTF-8 (at byte {}; shown with U+FFFD)",
                    e.valid_up_to()
                ),
                text: String::from_utf8_lossy(&self.buffer).trim().to_string(),
            }),
        }))
    }

    fn skip_rest_of_line(&mut self) -> io::Result<()> {
        loop {
            let chunk = self.source.fill_buf()?;
            if chunk.is_empty() {
                return Ok(());
            }
            match chunk.iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    self.source.consume(pos + 1);
                    return Ok(());
                }
                None => {
                    let len = chunk.len();
                    self.source.consume(len);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_checked() {
        let mut lines = Lines::new(&b"1\r\n\n \xff\nlast"[..]);
        assert_eq!(lines.next_line().ok().flatten(), Some(Ok("1\r".into())));
        assert_eq!(lines.next_line().ok().flatten(), Some(Ok(String::new())));
        assert!(matches!(lines.next_line(), Ok(Some(Err(_)))));
        assert_eq!(lines.next_line().ok().flatten(), Some(Ok("last".into())));
        assert!(matches!(lines.next_line(), Ok(None)));
    }

    #[test]
    fn counting_skips_blank_lines() {
        let logged = Logged::default();
        assert_eq!(count_tasks(&b"a\n\n b\nc\n  \n"[..], &logged).ok(), Some(3));
    }
}
