//! `--joblog FILE` and `--resume`: a record of the finished tasks, so a stopped `map`
//! can go on where it stopped.
//!
//! The file is text, one line per finished task, written (and flushed) when the task's
//! result is printed, so the log never claims a result the user has not seen:
//!
//! ```text
//! # wasmpool joblog 1: function=fib component=fixture_tasks.wasm
//! # index<TAB>status<TAB>attempts<TAB>elapsed_ms<TAB>input
//! 0<TAB>ok<TAB>1<TAB>2.513<TAB>20
//! 1<TAB>trap<TAB>1<TAB>0.811<TAB>"x"
//! ```
//!
//! `status` is `ok` or the kind of failure. With `--resume` the tasks of every logged index
//! are skipped; with `--resume-failed` only those logged `ok`. Lines that cannot be read
//! (e.g. the last one, cut short by a crash) are ignored: their tasks run again.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::print::TaskRecord;

const HEADER: &str = "# wasmpool joblog 1:";

/// Which logged tasks a resumed map skips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Start afresh: the log is emptied.
    No,
    /// Skip every logged task.
    All,
    /// Skip the tasks logged `ok`.
    Succeeded,
}

/// An open joblog.
#[derive(Debug)]
pub struct JobLog {
    path: PathBuf,
    file: File,
}

impl JobLog {
    /// Opens `path` for `function` of `component`. With `resume`, reads which indices to
    /// skip and appends; otherwise truncates. A log written for another function is refused.
    pub fn open(
        path: &Path,
        function: &str,
        component: &Path,
        resume: Resume,
    ) -> anyhow::Result<(JobLog, HashSet<u64>)> {
        let context = || format!("joblog {}", path.display());
        let mut skip = HashSet::new();
        let file = if resume == Resume::No {
            let mut file = File::create(path).with_context(context)?;
            write_header(&mut file, function, component)
                .and_then(|()| writeln!(file, "# index\tstatus\tattempts\telapsed_ms\tinput"))
                .with_context(context)?;
            file
        } else {
            let mut file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(path)
                .with_context(context)?;
            let logged_function = read_log(&file, resume, &mut skip).with_context(context)?;
            match logged_function {
                Some(logged) if logged != function => bail!(
                    "joblog {} was written for the function `{logged}`, not `{function}`",
                    path.display()
                ),
                Some(_) => {}
                None => write_header(&mut file, function, component).with_context(context)?,
            }
            end_with_newline(&mut file).with_context(context)?;
            file
        };
        Ok((
            JobLog {
                path: path.to_path_buf(),
                file,
            },
            skip,
        ))
    }

    /// Logs one finished task (one write, so lines of a crash are cut at most at the end).
    pub fn record(&mut self, record: &TaskRecord) -> anyhow::Result<()> {
        let Some(index) = record.index else {
            return Ok(());
        };
        let elapsed = record
            .elapsed_ms()
            .map_or_else(|| "-".to_string(), |ms| ms.to_string());
        let input = record.input.as_deref().unwrap_or_default();
        let line = format!(
            "{index}\t{}\t{}\t{elapsed}\t{input}\n",
            record.status(),
            record.attempt
        );
        self.file
            .write_all(line.as_bytes())
            .with_context(|| format!("cannot write to joblog {}", self.path.display()))
    }
}

/// Writes the header line that names the log's function and component.
fn write_header(file: &mut File, function: &str, component: &Path) -> std::io::Result<()> {
    writeln!(
        file,
        "{HEADER} function={function} component={}",
        component.display()
    )
}

/// Reads a log: fills `skip`, returns the function of its header (if it has one).
fn read_log(
    file: &File,
    resume: Resume,
    skip: &mut HashSet<u64>,
) -> std::io::Result<Option<String>> {
    let mut function = None;
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        let Ok(line) = std::str::from_utf8(&line) else {
            continue;
        };
        if let Some(header) = line.strip_prefix(HEADER) {
            function = header
                .split_whitespace()
                .find_map(|field| field.strip_prefix("function="))
                .map(str::to_string);
            continue;
        }
        let mut fields = line.split('\t');
        let (Some(index), Some(status)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(index) = index.parse::<u64>() else {
            continue;
        };
        if resume == Resume::All || status == "ok" {
            skip.insert(index);
        }
    }
    Ok(function)
}

/// Adds a newline if the file ends without one (a line cut short by a crash).
fn end_with_newline(file: &mut File) -> std::io::Result<()> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(());
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    if last[0] != b'\n' {
        file.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::print::Failure;
    use wasmpool::TaskValue;

    fn record(index: u64, ok: bool) -> TaskRecord {
        TaskRecord {
            index: Some(index),
            input: Some(index.to_string()),
            outcome: if ok {
                Ok(TaskValue::unit())
            } else {
                Err(Failure::InvalidInput("no".into()))
            },
            report: None,
            attempt: 1,
        }
    }

    #[test]
    fn resume_reads_what_was_logged() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log");
        let component = Path::new("c.wasm");
        let (mut log, skip) = JobLog::open(&path, "f", component, Resume::No).expect("open");
        assert!(skip.is_empty());
        log.record(&record(0, true)).expect("write");
        log.record(&record(2, false)).expect("write");
        drop(log);
        // A line cut short by a crash.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"3\to"))
            .expect("append");

        let (_, skip) = JobLog::open(&path, "f", component, Resume::All).expect("resume");
        assert_eq!(skip, HashSet::from([0, 2, 3]));
        let (_, skip) = JobLog::open(&path, "f", component, Resume::Succeeded).expect("resume");
        assert_eq!(skip, HashSet::from([0]));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.ends_with("3\to\n"), "{text:?}");
        let err = JobLog::open(&path, "g", component, Resume::All).expect_err("other function");
        assert!(err.to_string().contains("`f`, not `g`"), "{err}");
    }
}
