//! What `map` prints, on its way out: records are formatted into a buffer that goes to
//! stdout in one write when the main loop has nothing else to do (or the buffer fills), and
//! their joblog lines are written only after that write: the log never lists a result that
//! is not on stdout.

use std::io::{self, Write};

use crate::cli::args::OutputFormat;
use crate::cli::joblog::JobLog;
use crate::cli::print::TaskRecord;
use crate::cli::progress::Progress;

/// Printed output kept before it is written even though the loop is busy.
const BUFFER: usize = 64 << 10;

/// The output of one map.
pub struct Output<'a> {
    format: OutputFormat,
    function: &'a str,
    joblog: Option<JobLog>,
    /// Drawn on stderr; hidden while anything is written.
    progress: Progress,
    /// Printed and not written to stdout yet (their joblog lines wait in the log).
    out: Vec<u8>,
    /// What one task writes to stderr in text mode, written at once.
    err: Vec<u8>,
    /// Tasks printed, written or not.
    printed: u64,
}

impl<'a> Output<'a> {
    /// Prints `format` records of `function`, logged in `joblog` if there is one.
    pub fn new(
        format: OutputFormat,
        function: &'a str,
        joblog: Option<JobLog>,
        progress: Progress,
    ) -> Self {
        Output {
            format,
            function,
            joblog,
            progress,
            out: Vec::new(),
            err: Vec::new(),
            printed: 0,
        }
    }

    /// How many tasks were printed.
    pub fn printed(&self) -> u64 {
        self.printed
    }

    /// Whether there is a joblog (a stopped map can be resumed).
    pub fn has_joblog(&self) -> bool {
        self.joblog.is_some()
    }

    /// Prints one task into the buffer and records its joblog line. In text mode, what the
    /// task has for stderr is written at once, after the buffered output before it.
    pub fn print(&mut self, record: &TaskRecord) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Json => record.write_json(&mut self.out)?,
            OutputFormat::Text => {
                record.write_text(self.function, &mut self.out, &mut self.err)?;
                if !self.err.is_empty() {
                    self.flush_stdout()?;
                    let err = &self.err;
                    let written = self.progress.suspend(|| io::stderr().lock().write_all(err));
                    self.err.clear();
                    written?;
                }
            }
        }
        self.printed += 1;
        if let Some(log) = &mut self.joblog {
            log.record(record);
        }
        if self.out.len() >= BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffer to stdout, then the joblog lines of what it held.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.flush_stdout()?;
        if let Some(log) = &mut self.joblog {
            log.flush()?;
        }
        Ok(())
    }

    /// Writes the buffer to stdout (with the progress bar hidden). If that fails, the
    /// joblog forgets the lines it has not written: their results may not be shown.
    fn flush_stdout(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = &self.out;
        let written = self.progress.suspend(|| {
            let mut stdout = io::stdout().lock();
            stdout.write_all(out)?;
            stdout.flush()
        });
        self.out.clear();
        if written.is_err()
            && let Some(log) = &mut self.joblog
        {
            log.discard();
        }
        written
    }
}
