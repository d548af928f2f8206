//! What a finished task looks like on the way out: as text for people, or as one JSON
//! object per line for programs. `run` and `map` print through here.
//!
//! JSON fields (one object per task and line):
//! - `index`: the task's position among the non-blank input lines, from 0 (`map` only);
//! - `input`: the line's arguments, as given (`map` only);
//! - `ok`: the result as WAVE text (`""` for a function without a result), and `value`: the
//!   same result as typed JSON (`null` for a function without a result; the mapping is
//!   `wasmpool::json`'s: records are objects, `u64` beyond 2^53 a decimal string, ...), or
//! - `error`: `{"kind": K, "message": M}` (and `"backtrace"` for a trap or a stack overflow,
//!   when wasmtime captured one), K one of `failed`, `trap`, `timeout`,
//!   `out-of-fuel`, `memory-limit`, `stack-overflow`, `cancelled`, `broken-pool`, `start`,
//!   `panic`, `fuel-not-enabled`, `no-instance-slot`, `unreturnable`,
//!   `component-unavailable`, `incompatible`, `invalid-input`;
//! - the task's report, when it ran: `elapsed_ms`, `worker`, `pid`, `fuel` (with `--fuel`),
//!   `peak_memory` (bytes), `attempt` (1, or more after `--retries`), and `stdout`/`stderr`
//!   (what the task printed, when it printed anything), with `stdout_truncated`/
//!   `stderr_truncated` set to `true` when that was cut at [`CAPTURE_LIMIT`] (the text then
//!   ends with a whole line and `[wasmpool: output cut at 1 MiB]`).

use std::io::{self, Write};

use serde::ser::{Serialize, SerializeMap, Serializer};
use wasmpool::{TaskError, TaskReport, TaskValue};

/// How much a task may print that is kept to go with its result, per stream.
pub const CAPTURE_LIMIT: usize = 1 << 20;

/// Why a task gave no value.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The task ran (or was meant to) and failed.
    Task(TaskError),
    /// Its input line was not a valid call; it never ran.
    InvalidInput(String),
}

impl Failure {
    /// The stable name of the kind of failure (the JSON `kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Task(e) => e.kind().as_str(),
            Failure::InvalidInput(_) => "invalid-input",
        }
    }

    /// What went wrong, in one message.
    pub fn message(&self) -> String {
        match self {
            // Its display carries the backtrace too; that is `backtrace()`.
            Failure::Task(TaskError::StackOverflow { .. }) => "task overflowed its stack".into(),
            Failure::Task(e) => e.to_string(),
            Failure::InvalidInput(message) => message.clone(),
        }
    }

    /// The wasm backtrace of a trap or a stack overflow, if one was captured.
    pub fn backtrace(&self) -> Option<&str> {
        match self {
            Failure::Task(
                TaskError::Trap { backtrace, .. } | TaskError::StackOverflow { backtrace },
            ) if !backtrace.is_empty() => Some(backtrace),
            _ => None,
        }
    }

    /// Whether running the task again may help: a timeout, a worker that died, or a panic of
    /// the host code (which was reported as a broken pool before it had its own kind).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Failure::Task(
                TaskError::Timeout { .. } | TaskError::BrokenPool { .. } | TaskError::Panic { .. }
            )
        )
    }
}

/// One finished task, ready to print.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    /// Position among the non-blank input lines (`map`).
    pub index: Option<u64>,
    /// The arguments as given (`map`).
    pub input: Option<String>,
    /// The value or the failure.
    pub outcome: Result<TaskValue, Failure>,
    /// How the (last) run went; `None` for a task that never ran.
    pub report: Option<TaskReport>,
    /// Which run this outcome is from: 1, or more after retries.
    pub attempt: u32,
}

impl TaskRecord {
    /// Whether the task produced a value.
    pub fn is_ok(&self) -> bool {
        self.outcome.is_ok()
    }

    /// `ok`, or the kind of failure.
    pub fn status(&self) -> &'static str {
        match &self.outcome {
            Ok(_) => "ok",
            Err(failure) => failure.kind(),
        }
    }

    /// The elapsed time in milliseconds (microsecond precision), if the task ran.
    pub fn elapsed_ms(&self) -> Option<f64> {
        self.report
            .as_ref()
            .map(|r| (r.elapsed.as_secs_f64() * 1e6).round() / 1e3)
    }

    /// Writes the task as one JSON line (serialized as it goes: no JSON tree is built).
    /// Generic, not `dyn Write`: serde_json writes each token as a separate write, which a
    /// `Vec` (`map`'s buffer) takes inline.
    pub fn write_json<W: Write>(&self, out: &mut W) -> io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        out.write_all(b"\n")
    }

    /// Writes the task for people: what it printed (when captured, its last line ended),
    /// then its result on stdout, or a line naming the task and its failure on stderr.
    /// `function` names the call in that line, with the input shortened to
    /// [`INPUT_PREVIEW`] characters.
    pub fn write_text(
        &self,
        function: &str,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> io::Result<()> {
        if let Some(report) = &self.report {
            write_lines(stdout, report.stdout.as_deref())?;
            write_lines(stderr, report.stderr.as_deref())?;
        }
        match &self.outcome {
            Ok(value) => {
                let wave = value.to_wave();
                if !wave.is_empty() {
                    writeln!(stdout, "{wave}")?;
                }
            }
            Err(failure) => {
                let call = match (&self.index, &self.input) {
                    (Some(index), Some(input)) => {
                        format!("task {index}: {function}({})", preview(input))
                    }
                    _ => function.to_string(),
                };
                writeln!(
                    stderr,
                    "wasmpool: {call} failed [{}]: {}",
                    failure.kind(),
                    failure.message()
                )?;
                // One call: its backtrace helps. Many: one line per failure.
                if let Some(backtrace) = failure.backtrace().filter(|_| self.index.is_none()) {
                    writeln!(stderr, "{}", backtrace.trim_end())?;
                }
            }
        }
        Ok(())
    }
}

/// How many characters of an input a failure line on stderr shows.
pub const INPUT_PREVIEW: usize = 200;

/// The JSON object of a task, with the fields in the order the module's docs give.
impl Serialize for TaskRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// The `error` object.
        struct Error<'a>(&'a Failure);
        impl Serialize for Error<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(None)?;
                map.serialize_entry("kind", self.0.kind())?;
                map.serialize_entry("message", &self.0.message())?;
                if let Some(backtrace) = self.0.backtrace() {
                    map.serialize_entry("backtrace", backtrace)?;
                }
                map.end()
            }
        }

        let mut map = serializer.serialize_map(None)?;
        if let Some(index) = self.index {
            map.serialize_entry("index", &index)?;
        }
        if let Some(input) = &self.input {
            map.serialize_entry("input", input)?;
        }
        match &self.outcome {
            Ok(value) => {
                map.serialize_entry("ok", &value.to_wave())?;
                map.serialize_entry("value", &value.to_json())?;
            }
            Err(failure) => map.serialize_entry("error", &Error(failure))?,
        }
        if let Some(report) = &self.report {
            map.serialize_entry("elapsed_ms", &self.elapsed_ms())?;
            map.serialize_entry("worker", &report.worker)?;
            if let Some(host) = &report.host {
                map.serialize_entry("host", host)?;
            }
            map.serialize_entry("pid", &report.pid)?;
            if let Some(fuel) = report.fuel_consumed {
                map.serialize_entry("fuel", &fuel)?;
            }
            map.serialize_entry("peak_memory", &report.peak_memory)?;
            let streams = [
                (
                    "stdout",
                    "stdout_truncated",
                    &report.stdout,
                    report.stdout_truncated,
                ),
                (
                    "stderr",
                    "stderr_truncated",
                    &report.stderr,
                    report.stderr_truncated,
                ),
            ];
            for (name, cut, text, truncated) in streams {
                if let Some(text) = text.as_ref().filter(|t| !t.is_empty()) {
                    map.serialize_entry(name, text)?;
                }
                if truncated {
                    map.serialize_entry(cut, &true)?;
                }
            }
        }
        map.serialize_entry("attempt", &self.attempt)?;
        map.end()
    }
}

/// `text`, or its first [`INPUT_PREVIEW`] characters and how long it is.
pub fn preview(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(INPUT_PREVIEW) {
        None => text.into(),
        Some((end, _)) => format!("{}… ({} bytes in all)", &text[..end], text.len()).into(),
    }
}

/// Writes captured `text`, ending its last line if the task did not: the next task's output
/// starts on a line of its own.
fn write_lines(out: &mut dyn Write, text: Option<&str>) -> io::Result<()> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(());
    };
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmpool::Val;

    #[test]
    fn a_host_panic_is_retried_as_a_broken_pool_was_and_a_refused_call_is_not() {
        let panic = Failure::Task(TaskError::Panic {
            worker: "worker-1".into(),
            message: "oops".into(),
        });
        assert_eq!(panic.kind(), "panic");
        assert!(panic.is_retryable());
        let refused = Failure::Task(TaskError::Incompatible {
            message: "too large".into(),
        });
        assert_eq!(refused.kind(), "incompatible");
        assert!(!refused.is_retryable());
        assert_eq!(
            Failure::Task(TaskError::FuelNotEnabled).kind(),
            "fuel-not-enabled"
        );
    }

    #[test]
    fn json_shape() {
        let record = TaskRecord {
            index: Some(3),
            input: Some("\"x\"".into()),
            outcome: Err(Failure::InvalidInput("bad".into())),
            report: None,
            attempt: 1,
        };
        assert_eq!(
            serde_json::to_string(&record).ok().as_deref(),
            Some(
                r#"{"index":3,"input":"\"x\"","error":{"kind":"invalid-input","message":"bad"},"attempt":1}"#
            )
        );
        let ok = TaskRecord {
            index: None,
            input: None,
            outcome: Ok(TaskValue::from(Val::U32(7))),
            report: None,
            attempt: 1,
        };
        let json = serde_json::to_value(&ok).expect("a JSON object");
        assert_eq!(json["ok"], "7");
        assert_eq!(json["value"], 7);
        assert_eq!(ok.status(), "ok");
    }
}
