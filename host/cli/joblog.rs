//! `--joblog FILE` and `--resume`: a record of the finished tasks, so a stopped `map`
//! can go on where it stopped.
//!
//! The file is text, one line per finished task. Lines are kept in memory until the results
//! they log are on stdout ([`JobLog::record`], then [`JobLog::flush`] after stdout was
//! flushed), so the log never claims a result the user has not seen:
//!
//! ```text
//! # wasmpool joblog 1: function=fib component=fixture_tasks.wasm
//! # index<TAB>status<TAB>attempts<TAB>elapsed_ms<TAB>input
//! 0<TAB>ok<TAB>1<TAB>2.513<TAB>20
//! 1<TAB>trap<TAB>1<TAB>0.811<TAB>"x"
//! ```
//!
//! `status` is `ok` or the kind of failure. With `--resume` the tasks of every logged index
//! are skipped; with `--resume-failed` only those logged `ok`. Either way each logged task's
//! input line must be the one logged for it ([`Logged::verdict`]): a resume over another
//! input is refused, not a silent skip of tasks that never ran.
//!
//! The log is read strictly: a file that does not start with the header is not a joblog
//! (neither resumed nor overwritten), and every line must be a comment or a task. Only a last
//! line without its newline, cut short by a crash, is dropped: its task runs again.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::print::TaskRecord;

const HEADER: &str = "# wasmpool joblog 1:";
/// How the header of any version of the format starts.
const ANY_HEADER: &str = "# wasmpool joblog ";
const COLUMNS: &str = "# index\tstatus\tattempts\telapsed_ms\tinput";

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
    /// Lines of tasks recorded and not written yet: their results may not be on stdout.
    pending: String,
}

/// What a resumed log says about the tasks it lists: for each logged index, its input (as a
/// hash: a million-line log stays small) and whether it is skipped.
#[derive(Debug, Default)]
pub struct Logged {
    /// The log's path, to quote a logged input in an error.
    path: PathBuf,
    tasks: HashMap<u64, LoggedTask>,
}

#[derive(Debug, Clone, Copy)]
struct LoggedTask {
    input: u64,
    skip: bool,
}

/// What to do with one input line of a resumed map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not logged, or logged and to run again.
    Run,
    /// Logged with this input: skip it.
    Skip,
    /// Logged with another input: the input is not the one the log was written for.
    Changed {
        /// The logged input, when the log can still be read.
        logged: Option<String>,
    },
}

impl Logged {
    /// The verdict for the task at `index` whose input line reads `input`.
    pub fn verdict(&self, index: u64, input: &str) -> Verdict {
        match self.tasks.get(&index) {
            None => Verdict::Run,
            Some(task) if task.input != input_hash(input) => Verdict::Changed {
                logged: logged_input(&self.path, index),
            },
            Some(task) if task.skip => Verdict::Skip,
            Some(_) => Verdict::Run,
        }
    }

    /// Whether the task at `index` is skipped, should its input match.
    pub fn skips(&self, index: u64) -> bool {
        self.tasks.get(&index).is_some_and(|t| t.skip)
    }

    /// The joblog's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl JobLog {
    /// Opens `path` for `function` of `component`. With `resume`, reads what was logged and
    /// appends; otherwise empties it. A file that is not a joblog, or a log written for
    /// another function, is refused.
    pub fn open(
        path: &Path,
        function: &str,
        component: &Path,
        resume: Resume,
    ) -> anyhow::Result<(JobLog, Logged)> {
        let context = || format!("joblog {}", path.display());
        let mut logged = Logged {
            path: path.to_path_buf(),
            tasks: HashMap::new(),
        };
        // Append: every write goes to the end, wherever reading left the position.
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(context)?;
        // Checked before anything is changed: another file is left as it is.
        let is_empty = file.metadata().with_context(context)?.len() == 0;
        if !is_empty && !starts_with_header(&mut file).with_context(context)? {
            bail!(
                "{} is not a wasmpool joblog (it does not start with `{ANY_HEADER}`); name \
                 another file, or remove it",
                path.display()
            );
        }
        let len = drop_cut_line(&mut file).with_context(context)?;
        if resume == Resume::No || len == 0 {
            file.set_len(0).with_context(context)?;
            write_header(&mut file, function, component).with_context(context)?;
        } else {
            file.seek(SeekFrom::Start(0)).with_context(context)?;
            let logged_function = read_log(&file, resume, &mut logged.tasks)
                .with_context(|| format!("cannot resume from joblog {}", path.display()))?;
            if logged_function != function {
                bail!(
                    "joblog {} was written for the function `{logged_function}`, not `{function}`",
                    path.display()
                );
            }
        }
        Ok((
            JobLog {
                path: path.to_path_buf(),
                file,
                pending: String::new(),
            },
            logged,
        ))
    }

    /// Logs one finished task, whose result was printed and may still be in a buffer on
    /// its way to stdout: the line is written by the next [`JobLog::flush`].
    pub fn record(&mut self, record: &TaskRecord) {
        let Some(index) = record.index else {
            return;
        };
        let input = record.input.as_deref().unwrap_or_default();
        let _ = write!(
            self.pending,
            "{index}\t{}\t{}\t",
            record.status(),
            record.attempt
        );
        match record.elapsed_ms() {
            Some(ms) => {
                let _ = write!(self.pending, "{ms}");
            }
            None => self.pending.push('-'),
        }
        let _ = writeln!(self.pending, "\t{input}");
    }

    /// Forgets the lines recorded and not written: their results did not reach stdout.
    pub fn discard(&mut self) {
        self.pending.clear();
    }

    /// Writes the lines recorded so far, in one write (a crash cuts at most the last line).
    /// Called only once the results they log are flushed to stdout.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(self.pending.as_bytes());
        self.pending.clear();
        written.with_context(|| format!("cannot write to joblog {}", self.path.display()))
    }
}

/// The hash an input is compared by (within one process: `DefaultHasher::new` is fixed).
fn input_hash(input: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    input.hash(&mut hasher);
    hasher.finish()
}

/// Writes the header lines that name the log's function and component, and its columns.
fn write_header(file: &mut File, function: &str, component: &Path) -> std::io::Result<()> {
    writeln!(
        file,
        "{HEADER} function={function} component={}\n{COLUMNS}",
        component.display()
    )
}

/// Whether the file starts with the header of some version of the joblog format.
fn starts_with_header(file: &mut File) -> std::io::Result<bool> {
    let mut start = vec![0; ANY_HEADER.len()];
    file.seek(SeekFrom::Start(0))?;
    let read = file.take(start.len() as u64).read(&mut start)?;
    Ok(start[..read] == *ANY_HEADER.as_bytes())
}

/// One task line: `index`, `status`, `attempts`, `elapsed_ms` or `-`, then the input (the
/// rest of the line, tabs included).
fn parse_task(line: &str) -> Option<(u64, &str, &str)> {
    let mut fields = line.splitn(5, '\t');
    let index = fields.next()?.parse().ok()?;
    let status = fields.next().filter(|s| !s.is_empty())?;
    fields.next()?.parse::<u32>().ok()?;
    let elapsed = fields.next()?;
    if elapsed != "-" {
        elapsed.parse::<f64>().ok()?;
    }
    Some((index, status, fields.next()?))
}

/// Reads a log whose last line is whole: fills `tasks`, returns the function of its header.
fn read_log(
    file: &File,
    resume: Resume,
    tasks: &mut HashMap<u64, LoggedTask>,
) -> anyhow::Result<String> {
    let mut lines = BufReader::new(file).split(b'\n').enumerate();
    let function = match lines.next() {
        Some((_, Ok(first))) => std::str::from_utf8(&first)
            .ok()
            .and_then(|l| l.strip_prefix(HEADER))
            .and_then(|h| {
                h.split_whitespace()
                    .find_map(|field| field.strip_prefix("function="))
            })
            .map(str::to_string),
        Some((_, Err(e))) => return Err(e.into()),
        None => None,
    };
    let Some(function) = function else {
        bail!("its header is not `{HEADER} function=NAME ...`: another version of wasmpool?");
    };
    for (number, line) in lines {
        let line = line?;
        if line.starts_with(b"#") {
            continue;
        }
        let task = std::str::from_utf8(&line).ok().and_then(parse_task);
        let Some((index, status, input)) = task else {
            bail!(
                "line {} is not a joblog line (index, status, attempts, elapsed_ms, input)",
                number + 1
            );
        };
        let input = input_hash(input);
        let skip = resume == Resume::All || status == "ok";
        match tasks.get_mut(&index) {
            None => {
                tasks.insert(index, LoggedTask { input, skip });
            }
            Some(task) if task.input == input => task.skip |= skip,
            Some(_) => bail!(
                "line {} logs another input for task {index} than an earlier line",
                number + 1
            ),
        }
    }
    Ok(function)
}

/// The input logged for task `index` in the log at `path` (its first line for it).
fn logged_input(path: &Path, index: u64) -> Option<String> {
    let file = File::open(path).ok()?;
    BufReader::new(file)
        .split(b'\n')
        .map_while(Result::ok)
        .filter_map(|line| String::from_utf8(line).ok())
        .find_map(|line| {
            let (i, _, input) = parse_task(&line)?;
            (i == index).then(|| input.to_string())
        })
}

/// Drops a last line that has no newline (cut short by a crash); returns the length left.
fn drop_cut_line(file: &mut File) -> std::io::Result<u64> {
    let len = file.seek(SeekFrom::End(0))?;
    let mut end = len;
    let mut chunk = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(part)?;
        if let Some(newline) = part.iter().rposition(|&b| b == b'\n') {
            end = start + newline as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        file.set_len(end)?;
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::print::Failure;
    use std::collections::HashSet;
    use wasmpool::TaskValue;

    fn record(index: u64, ok: bool) -> TaskRecord {
        TaskRecord {
            index: Some(index),
            input: Some(format!("{index}\tand more")),
            outcome: if ok {
                Ok(TaskValue::unit())
            } else {
                Err(Failure::InvalidInput("no".into()))
            },
            report: None,
            attempt: 1,
        }
    }

    fn skipped(logged: &Logged) -> HashSet<u64> {
        logged
            .tasks
            .keys()
            .copied()
            .filter(|&i| logged.skips(i))
            .collect()
    }

    #[test]
    fn resume_reads_what_was_logged() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log");
        let component = Path::new("c.wasm");
        let (mut log, logged) = JobLog::open(&path, "f", component, Resume::No).expect("open");
        assert!(logged.tasks.is_empty());
        log.record(&record(0, true));
        log.record(&record(2, false));
        log.flush().expect("write");
        drop(log);
        // A line cut short by a crash: dropped, its task runs again.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"3\tok\t1\t0.5\t3\tand m"))
            .expect("append");

        let (_, logged) = JobLog::open(&path, "f", component, Resume::All).expect("resume");
        assert_eq!(skipped(&logged), HashSet::from([0, 2]));
        assert_eq!(logged.verdict(0, "0\tand more"), Verdict::Skip);
        assert_eq!(logged.verdict(3, "3\tand more"), Verdict::Run);
        assert_eq!(
            logged.verdict(2, "7"),
            Verdict::Changed {
                logged: Some("2\tand more".into())
            }
        );
        let (_, logged) = JobLog::open(&path, "f", component, Resume::Succeeded).expect("resume");
        assert_eq!(skipped(&logged), HashSet::from([0]));
        assert_eq!(logged.verdict(2, "2\tand more"), Verdict::Run);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.ends_with("2\tinvalid-input\t1\t-\t2\tand more\n"),
            "{text:?}"
        );
        let err = JobLog::open(&path, "g", component, Resume::All).expect_err("other function");
        assert!(err.to_string().contains("`f`, not `g`"), "{err}");
    }

    #[test]
    fn recorded_lines_reach_the_file_at_a_flush_and_discarded_ones_never() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log");
        let (mut log, _) = JobLog::open(&path, "f", Path::new("c"), Resume::No).expect("open");
        let tasks = |path: &Path| -> Vec<String> {
            let text = std::fs::read_to_string(path).expect("read");
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| l.split('\t').next().unwrap_or_default().to_string())
                .collect()
        };
        log.record(&record(0, true));
        log.record(&record(1, true));
        // Their results may still be in stdout's buffer: not logged yet.
        assert!(tasks(&path).is_empty());
        log.flush().expect("write");
        assert_eq!(tasks(&path), ["0", "1"]);
        // Results that did not reach stdout: never logged.
        log.record(&record(2, true));
        log.discard();
        log.record(&record(3, false));
        log.flush().expect("write");
        assert_eq!(tasks(&path), ["0", "1", "3"]);
    }

    #[test]
    fn a_file_that_is_not_a_joblog_is_neither_resumed_nor_overwritten() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("inputs.txt");
        std::fs::write(&path, "1\n2\n3\n").expect("write");
        for resume in [Resume::No, Resume::All] {
            let err = JobLog::open(&path, "f", Path::new("c"), resume).expect_err("not ours");
            assert!(err.to_string().contains("not a wasmpool joblog"), "{err}");
        }
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("1\n2\n3\n")
        );
        // A header, then a line that is no task.
        std::fs::write(&path, format!("{HEADER} function=f component=c\n1\n")).expect("write");
        let err = JobLog::open(&path, "f", Path::new("c"), Resume::All).expect_err("bad line");
        assert!(
            format!("{err:#}").contains("line 2 is not a joblog line"),
            "{err:#}"
        );
        // Empty or missing: a new log.
        std::fs::write(&path, "").expect("write");
        assert!(JobLog::open(&path, "f", Path::new("c"), Resume::All).is_ok());
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.starts_with(HEADER) && text.ends_with(&format!("{COLUMNS}\n")),
            "{text}"
        );
    }
}
