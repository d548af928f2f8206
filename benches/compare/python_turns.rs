//! Python's side of a ratio measured in turns (`turns.rs`): a `compare.py --serve` process
//! that keeps its `ProcessPoolExecutor(2)` alive between measurements and runs one when
//! asked, so that its rounds alternate with wasmpool's in the same minutes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// A running `compare.py --serve`.
pub struct PythonMap {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl PythonMap {
    /// Starts `compare.py --serve` with `program` and waits for its pool; `None` (and why,
    /// on stderr) if it cannot start.
    pub fn start(program: &str, script: &str) -> Option<PythonMap> {
        let mut child = Command::new(program)
            .arg(script)
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| eprintln!("no `{program} compare.py --serve` ({e})"))
            .ok()?;
        let (stdin, stdout) = (child.stdin.take()?, child.stdout.take()?);
        let mut server = PythonMap {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
        };
        match server.line().as_deref() {
            Some("ready") => Some(server),
            other => {
                eprintln!("compare.py --serve did not start: {other:?}");
                None
            }
        }
    }

    /// Tasks/s of one `map(..., chunksize=256)` of `n` trivial tasks; NaN if it failed.
    pub fn map256_rate(&mut self, n: usize) -> f64 {
        let asked = self.stdin.as_mut().is_some_and(|stdin| {
            writeln!(stdin, "map256 {n}")
                .and_then(|()| stdin.flush())
                .is_ok()
        });
        asked
            .then(|| self.line()?.parse().ok())
            .flatten()
            .unwrap_or(f64::NAN)
    }

    fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line.trim().to_string()),
            _ => None,
        }
    }
}

impl Drop for PythonMap {
    /// Closes its stdin (its loop ends, its pool shuts down) and waits for it.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
