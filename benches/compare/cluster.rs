//! The cluster rows' setup: one `nats-server -js` on loopback (the tests' fixture,
//! `tests/support/nats.rs`) and two `wasmpool worker --nats URL -j 1` processes serving one
//! queue, so the cluster has 2 workers in all, like the pools it is compared with. Without
//! a `nats-server` (`$WASMPOOL_NATS_SERVER`, PATH, `.ci/venv/bin/nats-server`) or when
//! anything fails to start, [`Cluster::start`] says why on stderr and returns `None`: the
//! cluster rows stay out of the table. On drop the workers get SIGTERM (SIGKILL after a
//! grace period), then the server; all are reaped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use wasmpool::cluster::ClusterExecutor;
use wasmpool::{InstancePolicy, OutputMode};

use super::nats::NatsServer;

/// The queue the bench's workers serve.
const QUEUE: &str = "bench";
/// `wasmpool worker` processes, each with a local thread pool of [`JOBS`].
pub const WORKERS: usize = 2;
pub const JOBS: usize = 1;
/// How long a worker may take to say it is ready (a loaded 2-core machine).
const READY: Duration = Duration::from_secs(60);
/// How long a worker may take to stop after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(10);

/// A running server and its workers.
pub struct Cluster {
    workers: Vec<Worker>,
    server: NatsServer,
    /// `nats-server --version`, for RESULTS.md.
    pub server_version: String,
}

struct Worker {
    child: Child,
    /// The last lines the worker wrote on stderr (for failure notes).
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Cluster {
    /// Starts the server and the workers and waits until every worker is ready; `None`,
    /// with a note on stderr, when there is no `nats-server` or something did not start.
    pub fn start() -> Option<Cluster> {
        // The fixture panics when a server it found does not start: a note here, no failure.
        let server = match std::panic::catch_unwind(NatsServer::start) {
            Ok(Some(server)) => server,
            Ok(None) => {
                eprintln!(
                    "no nats-server ($WASMPOOL_NATS_SERVER, PATH, .ci/venv/bin/nats-server): \
                     the cluster rows are skipped"
                );
                return None;
            }
            Err(_) => {
                eprintln!("nats-server did not start (above): the cluster rows are skipped");
                return None;
            }
        };
        let server_version = version_of(&server);
        let mut cluster = Cluster {
            workers: Vec::new(),
            server,
            server_version,
        };
        let url = cluster.server.url();
        let (ready_tx, ready_rx) = mpsc::channel();
        for i in 0..WORKERS {
            match Worker::spawn(i, &url, ready_tx.clone()) {
                Ok(worker) => cluster.workers.push(worker),
                Err(e) => {
                    eprintln!("cannot run `wasmpool worker`: {e}: the cluster rows are skipped");
                    return None;
                }
            }
        }
        let deadline = Instant::now() + READY;
        let mut ready = 0;
        while ready < WORKERS {
            let left = deadline.saturating_duration_since(Instant::now());
            match ready_rx.recv_timeout(left) {
                Ok(true) => ready += 1,
                Ok(false) | Err(_) => {
                    eprintln!(
                        "a `wasmpool worker` exited or was not ready after {READY:?}: the \
                         cluster rows are skipped; the workers' stderr:\n{}",
                        cluster.logs()
                    );
                    return None;
                }
            }
        }
        Some(cluster)
    }

    /// A submitter on this cluster's queue with `policy`, output discarded like the pools';
    /// warmed up so both workers have fetched and compiled `warm_up`'s component and built
    /// their local pool for these settings before anything is timed.
    pub fn executor(
        &self,
        policy: InstancePolicy,
        warm_up: &[wasmpool::Call],
    ) -> Option<ClusterExecutor> {
        let executor = ClusterExecutor::builder(self.server.url())
            .queue(QUEUE)
            .output(OutputMode::Discard)
            .instance_policy(policy)
            .build()
            .map_err(|e| eprintln!("no cluster executor: {e}: the cluster rows are skipped"))
            .ok()?;
        super::common::run_all(&executor, warm_up);
        Some(executor)
    }

    fn logs(&self) -> String {
        self.workers
            .iter()
            .enumerate()
            .map(|(i, w)| format!("--- worker {i} ---\n{}\n", lock(&w.log).join("\n")))
            .collect()
    }
}

impl Drop for Cluster {
    /// SIGTERM to every worker, then waits (SIGKILL after [`GRACE`]) and reaps them; then
    /// the server stops the same way (the fixture's `stop`).
    fn drop(&mut self) {
        for worker in &self.workers {
            if let Some(pid) = Pid::from_raw(worker.child.id() as i32) {
                let _ = kill_process(pid, Signal::TERM);
            }
        }
        for worker in &mut self.workers {
            let deadline = Instant::now() + GRACE;
            loop {
                match worker.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        eprintln!("a `wasmpool worker` ignored SIGTERM for {GRACE:?}; killing it");
                        let _ = worker.child.kill();
                        let _ = worker.child.wait();
                        break;
                    }
                }
            }
            if let Some(reader) = worker.reader.take() {
                let _ = reader.join();
            }
        }
        self.server.stop();
    }
}

impl Worker {
    /// `wasmpool worker --nats URL --queue bench -j 1 --no-cache`, its stderr read by a
    /// thread that keeps the last lines and sends `true` when the worker says it is ready,
    /// `false` when its stderr ends before that.
    fn spawn(i: usize, url: &str, ready: mpsc::Sender<bool>) -> std::io::Result<Worker> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasmpool"))
            .args(["worker", "--nats", url, "--queue", QUEUE])
            .args(["-j", &JOBS.to_string(), "--no-cache"])
            .args(["--name", &format!("bench-{i}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        let reader = std::thread::spawn(move || {
            let mut said_ready = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !said_ready && line.starts_with("wasmpool worker: ready:") {
                    said_ready = true;
                    let _ = ready.send(true);
                }
                let mut lines = lock(&lines);
                if lines.len() == 50 {
                    lines.remove(0);
                }
                lines.push(line);
            }
            if !said_ready {
                let _ = ready.send(false);
            }
        });
        Ok(Worker {
            child,
            log,
            reader: Some(reader),
        })
    }
}

/// `nats-server --version` of the running server (its binary found through /proc).
fn version_of(server: &NatsServer) -> String {
    std::fs::read_link(format!("/proc/{}/exe", server.pid()))
        .ok()
        .and_then(|exe| Command::new(exe).arg("--version").output().ok())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "nats-server (unknown version)".into())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
