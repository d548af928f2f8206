//! The command line, as clap sees it: the four subcommands, their flags, and the parsers
//! of flag values (durations, sizes, directory grants, environment variables).
//!
//! Nothing here touches a component; `limits.rs` turns these values into the library's
//! `Budget`, `Capabilities` and `RuntimeConfig`.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run functions of WebAssembly components: one call, or one function over many inputs on a
/// pool of sandboxed workers (GNU parallel for wasm components).
#[derive(Debug, Parser)]
#[command(name = "wasmpool", version, propagate_version = true)]
#[command(
    after_help = "Exit status: 0 when every task succeeded, 1 when any task failed, \
2 for usage errors and components that cannot be loaded, 130 when interrupted."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Say on stderr what happens behind the scenes (compilation cache hits and misses).
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Call one exported function and print its result as WAVE.
    ///
    /// CALL is a WAVE function call, as `wasmtime run --invoke` takes it:
    /// 'fib(30)', 'greet("ann")', 'math.add(1, 2)', or 'mul(2, 3)' when one exported
    /// interface alone has a `mul`. A function without parameters may be named alone
    /// ('noop'). With --input json, CALL is the function's name and ARGS its arguments in
    /// JSON: `run C.wasm math.add '[1, 2]' --input json`.
    Run(RunArgs),
    /// Call one function once per input line, in parallel on a pool of workers.
    ///
    /// Each non-blank line of INPUTS holds the call's arguments in WAVE, exactly what would
    /// stand between the parentheses: `30`, or `"ann", 3` (with --input json: a JSON array
    /// of them, `["ann", 3]`, or an object of named parameters). A function without
    /// parameters is called once per non-blank line, whatever the line holds. Input is
    /// streamed: at most a few
    /// tasks per worker are read ahead. Results are printed as WAVE, one line per task, in
    /// input order (or completion order with --as-completed).
    Map(MapArgs),
    /// List a component's exported functions with their WIT signatures, and its imports.
    Inspect(InspectArgs),
    /// Serve a cluster queue: take tasks that `run --nats`/`map --nats` (or the library's
    /// ClusterExecutor) submitted to a NATS JetStream server, run them on a local pool, and
    /// send the results back. Runs until SIGTERM or Ctrl-C: then it finishes the running
    /// tasks, hands the queued ones back to the queue, and exits.
    ///
    /// Tasks get only what this worker allows (--allow-*, --max-*): a task that asks for
    /// more fails with the error kind `refused`. Instance reuse and the initializer are
    /// the submitter's choice (`map --reuse`, `--init`).
    Worker(WorkerArgs),
    /// Print a shell completion script: `source <(wasmpool completions bash)`; for zsh,
    /// write it as `_wasmpool` into a directory of $fpath; for fish, into
    /// ~/.config/fish/completions/wasmpool.fish.
    Completions(CompletionsArgs),
    /// Print the manual page (roff) to stdout: `wasmpool man | man -l -`; or, with --dir,
    /// write one page per subcommand there (`wasmpool.1`, `wasmpool-map.1`, ...).
    Man(ManArgs),
    /// Precompile a component to a `.cwasm` file (wasmtime's native-code format).
    ///
    /// `run` and `map` take it with --allow-precompiled. They also keep their own cache of
    /// compiled components, so compiling ahead of time is only needed to ship one.
    Compile(CompileArgs),
}

/// How to load the component (shared by every subcommand that runs one).
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The component: a `.wasm` file (or a `.cwasm` with --allow-precompiled).
    #[arg(value_name = "COMPONENT")]
    pub component: PathBuf,
    /// Where compiled components are cached [default: $XDG_CACHE_HOME/wasmpool, or
    /// ~/.cache/wasmpool].
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,
    /// Compile the component afresh and keep nothing.
    #[arg(long)]
    pub no_cache: bool,
    /// Accept a component precompiled by `wasmpool compile` (a `.cwasm`). Its machine code
    /// runs as it is: only for files you made or trust.
    #[arg(long)]
    pub allow_precompiled: bool,
}

/// What each task may use: its budget and its capabilities (the same for `run` and `map`).
#[derive(Debug, Args, Default)]
pub struct SandboxArgs {
    /// Wall-clock limit per task, e.g. 250ms, 2s, 1m, 1m30s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Fuel per task (about one unit per wasm instruction); turns on fuel metering.
    #[arg(long, value_name = "N")]
    pub fuel: Option<u64>,
    /// Linear-memory cap per task, e.g. 64MiB, 1G, 500MB (K/M/G and KiB/MiB/GiB are powers
    /// of 1024, kB/MB/GB of 1000) [default: 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// Let tasks read the host directory HOST, seen as GUEST (default: the same path).
    /// Read-only; repeatable.
    #[arg(long = "dir", value_name = "HOST[::GUEST]", value_parser = parse_dir)]
    pub dirs: Vec<DirSpec>,
    /// Like --dir, but the tasks may also create, write and delete files in it.
    #[arg(long = "dir-rw", value_name = "HOST[::GUEST]", value_parser = parse_dir)]
    pub dirs_rw: Vec<DirSpec>,
    /// Set an environment variable for the tasks; KEY alone passes on the host's value
    /// (if it has one). Repeatable. Tasks see no other variable.
    #[arg(long = "env", value_name = "KEY[=VAL]", value_parser = parse_env)]
    pub env: Vec<EnvSpec>,
    /// Let tasks open TCP and UDP sockets and look up names, with this host's reach.
    #[arg(long)]
    pub network: bool,
}

/// Where the cluster is, for `run`, `map` and `worker`.
#[derive(Debug, Args, Clone)]
pub struct NatsArgs {
    /// Run the tasks on a cluster: the NATS JetStream server at URL (e.g.
    /// nats://127.0.0.1:4222), served by `wasmpool worker --nats URL` processes.
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// The cluster queue (workers serve one queue each).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "default",
        requires = "nats"
    )]
    pub queue: String,
    /// NATS credentials file (JWT and NKey seed, `.creds`).
    #[arg(long, value_name = "FILE", requires = "nats")]
    pub nats_creds: Option<PathBuf>,
    /// CA certificates (PEM) to trust for the server's TLS certificate; TLS is then required.
    #[arg(long, value_name = "FILE", requires = "nats")]
    pub nats_tls_ca: Option<PathBuf>,
}

/// `wasmpool run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// The call, in WAVE: 'fib(30)', 'greet("ann")', 'math.add(1, 2)'. With --input json:
    /// the function's name alone.
    #[arg(value_name = "CALL")]
    pub call: String,
    /// With --input json: the arguments, a JSON array ('[1, 2]') or an object of named
    /// parameters ('{"a": 1, "b": 2}') [default: []].
    #[arg(value_name = "ARGS")]
    pub args: Option<String>,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// How the arguments are written: `wave` in CALL, or `json` in ARGS.
    #[arg(long, value_enum, default_value_t = InputFormat::Wave)]
    pub input: InputFormat,
    /// Call the export FUNC (no parameters) on the new instance before CALL.
    #[arg(long, value_name = "FUNC")]
    pub init: Option<String>,
    /// How to print the result: the WAVE text, or one JSON object with the report (the
    /// result as WAVE text in "ok" and as JSON in "value").
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub cluster: NatsArgs,
}

/// `wasmpool map`.
#[derive(Debug, Args)]
pub struct MapArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// The function to call: `fib`, or `math.add` inside an exported interface (`mul` alone
    /// when one interface alone has it).
    #[arg(value_name = "FUNC")]
    pub function: String,
    /// The arguments, one call per line ('-' or absent: stdin).
    #[arg(value_name = "INPUTS")]
    pub inputs: Option<PathBuf>,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// Keep each worker's instance for up to N tasks (no limit when N is not given) instead
    /// of a fresh instance per task: much faster for guests with a heavy start (Python,
    /// JavaScript). The trade-off: tasks on one worker are no longer isolated from each
    /// other; a task sees whatever earlier tasks left in the instance's memory and
    /// globals. An instance that trapped or hit a limit is never kept. Not with --timeout
    /// (a task with a deadline always gets a fresh instance).
    #[arg(
        long,
        value_name = "N",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "unlimited",
        value_parser = parse_reuse,
        conflicts_with = "timeout"
    )]
    pub reuse: Option<usize>,
    /// Call the export FUNC (no parameters) once on every new instance before its first
    /// task, e.g. to load what --reuse then keeps. If it fails, the tasks fail with
    /// `broken-pool`.
    #[arg(long, value_name = "FUNC")]
    pub init: Option<String>,
    /// Which pool runs the tasks: threads of this process, or worker processes.
    #[arg(long, value_enum, default_value_t = PoolKind::Thread)]
    pub pool: PoolKind,
    /// How many tasks run at once [default: the number of CPUs]. With `--pool process`,
    /// worker processes start as the tasks need them, up to N.
    #[arg(long, short = 'j', value_name = "N", value_parser = parse_workers)]
    pub workers: Option<usize>,
    /// Print each result as soon as its task finishes, instead of in input order.
    #[arg(long)]
    pub as_completed: bool,
    /// How each input line is written: `wave`, what would stand between the parentheses
    /// (`"ann", 3`); `json`, a JSON array of the arguments (`["ann", 3]`) or an object of
    /// named parameters (`{"name": "ann", "n": 3}`).
    #[arg(long, value_enum, default_value_t = InputFormat::Wave)]
    pub input: InputFormat,
    /// `text`: one WAVE result a line (failures on stderr); `json`: one object per task
    /// and line, with "index", "ok" (WAVE text) and "value" (JSON) or "error" {"kind",
    /// "message"}, and the task's report.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// No progress bar (it is shown only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Run a task again, up to N more times, when it timed out or its worker crashed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,
    /// Write one line per printed task (index, outcome, attempts, time, input) to FILE,
    /// which is emptied first (unless --resume).
    #[arg(long, value_name = "FILE")]
    pub joblog: Option<PathBuf>,
    /// Skip the inputs that --joblog FILE lists as finished (a map that was stopped goes on
    /// where it stopped); keeps appending to FILE.
    #[arg(long, requires = "joblog", conflicts_with = "resume_failed")]
    pub resume: bool,
    /// Like --resume, but run the inputs that failed again.
    #[arg(long, requires = "joblog")]
    pub resume_failed: bool,
    #[command(flatten)]
    pub cluster: NatsArgs,
    /// With --nats: fail a task that no worker has begun within DURATION (kind
    /// `queue-timeout`) instead of waiting for one.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "nats")]
    pub queue_timeout: Option<Duration>,
}

/// `wasmpool worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub cluster: NatsArgs,
    /// Which local pool runs the tasks: threads of this process, or worker processes.
    #[arg(long, value_enum, default_value_t = PoolKind::Thread)]
    pub pool: PoolKind,
    /// How many tasks run at once [default: the number of CPUs].
    #[arg(long, short = 'j', value_name = "N", value_parser = parse_workers)]
    pub workers: Option<usize>,
    /// Let tasks be granted DIR (or a directory inside it), read-only. Repeatable.
    #[arg(long, value_name = "DIR")]
    pub allow_dir: Vec<PathBuf>,
    /// Let tasks be granted DIR (or a directory inside it) with write access. Repeatable.
    #[arg(long, value_name = "DIR")]
    pub allow_dir_rw: Vec<PathBuf>,
    /// Let tasks set the environment variable KEY (`*`: any). Repeatable.
    #[arg(long, value_name = "KEY")]
    pub allow_env: Vec<String>,
    /// Let tasks use the network.
    #[arg(long)]
    pub allow_network: bool,
    /// The longest deadline a task may ask for; tasks without one get it.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_timeout: Option<Duration>,
    /// The most fuel a task may ask for; tasks without a fuel budget get it.
    #[arg(long, value_name = "N")]
    pub max_fuel: Option<u64>,
    /// The largest memory cap a task may ask for; tasks without one get it [default: 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// The name this worker gives in task reports [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Where compiled components are cached [default: $XDG_CACHE_HOME/wasmpool, or
    /// ~/.cache/wasmpool].
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,
    /// Compile components afresh and keep nothing on disk.
    #[arg(long)]
    pub no_cache: bool,
}

/// `wasmpool inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// `text` for people, `json` for programs.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `wasmpool completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// `wasmpool man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write the pages into DIR instead of printing the main page.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `wasmpool compile`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The component (`.wasm`).
    #[arg(value_name = "COMPONENT")]
    pub component: PathBuf,
    /// Where to write the precompiled component [default: COMPONENT with the extension
    /// `.cwasm`].
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Compile with fuel metering, for runs with --fuel.
    #[arg(long)]
    pub fuel_metering: bool,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// One JSON object per line.
    Json,
}

/// How arguments are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// WAVE, as `wasmtime run --invoke` takes it.
    Wave,
    /// JSON, converted by the parameters' WIT types (see the README's command-line section).
    Json,
}

/// Pool kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PoolKind {
    /// Worker threads in this process.
    Thread,
    /// Worker processes.
    Process,
}

/// A `--dir` or `--dir-rw` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSpec {
    /// The host directory.
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
}

/// An `--env` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvSpec {
    /// The variable's name.
    pub key: String,
    /// Its value; `None` passes on the host's.
    pub value: Option<String>,
}

/// What `--version` says: this version, the wasmtime release inside, and what this build
/// can do (the wasmtime features that matter to a user, and the pools).
pub fn long_version() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        // The wasmtime features Cargo.toml enables that change what a user can do.
        let wasmtime_features = "cranelift, component-model, wasi-p2, pooling-allocator, \
                                 parallel-compilation, async, wave, cache";
        let pools = if cfg!(unix) {
            "thread, process, cluster (NATS JetStream)"
        } else {
            "thread, cluster (NATS JetStream)"
        };
        format!(
            "{}\nwasmtime {} ({wasmtime_features})\npools: {pools}\ntarget: {}-{}",
            env!("CARGO_PKG_VERSION"),
            wasmtime_environ::VERSION,
            std::env::consts::ARCH,
            std::env::consts::OS,
        )
    })
}

/// The longest duration a flag takes: 100 years, beyond any task, and short enough that a
/// deadline (now + it) is always a valid `Instant`.
pub const MAX_DURATION: Duration = Duration::from_secs(876_000 * 3600);

/// Parses `250ms`, `2s`, `1.5s`, `1m`, `1h`, `1m30s`, `100us`, `10ns`, up to
/// [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let usage = || format!("`{text}` is not a duration; write e.g. 250ms, 2s, 1m, 1m30s");
    let too_large =
        || format!("`{text}` is too large: the longest duration is 876000h (100 years)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(usage());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("`{text}` needs a unit (ms, s, m, h)"))?;
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let value: f64 = number.parse().map_err(|_| usage())?;
        let seconds_per_unit = match unit.trim() {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return Err(usage()),
        };
        let seconds = value * seconds_per_unit;
        // Also true for an infinite `value` (too many digits for an `f64`); it is never NaN.
        if seconds > MAX_DURATION.as_secs_f64() {
            return Err(too_large());
        }
        let part = Duration::try_from_secs_f64(seconds).map_err(|_| usage())?;
        total = total
            .checked_add(part)
            .filter(|total| *total <= MAX_DURATION)
            .ok_or_else(too_large)?;
        rest = after.trim_start();
    }
    Ok(total)
}

/// Parses `64MiB`, `1G`, `512k`, `500MB`, `4096` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let usage = || format!("`{text}` is not a size; write e.g. 64MiB, 1G, 500MB, 4096");
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let value: u64 = number.parse().map_err(|_| usage())?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" | "b" => 1,
        "K" | "k" | "KiB" | "Ki" => 1 << 10,
        "M" | "MiB" | "Mi" => 1 << 20,
        "G" | "GiB" | "Gi" => 1 << 30,
        "T" | "TiB" | "Ti" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(usage()),
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses `HOST[::GUEST]`.
pub fn parse_dir(text: &str) -> Result<DirSpec, String> {
    let (host, guest) = match text.split_once("::") {
        Some((host, guest)) => (host, guest),
        None => (text, text),
    };
    if host.is_empty() || guest.is_empty() {
        return Err(format!("`{text}` is not HOST[::GUEST]"));
    }
    Ok(DirSpec {
        host: PathBuf::from(host),
        guest: guest.to_string(),
    })
}

/// Parses `KEY=VAL` or `KEY`.
pub fn parse_env(text: &str) -> Result<EnvSpec, String> {
    let (key, value) = match text.split_once('=') {
        Some((key, value)) => (key, Some(value.to_string())),
        None => (text, None),
    };
    if key.is_empty() {
        return Err(format!("`{text}` is not KEY[=VAL]"));
    }
    Ok(EnvSpec {
        key: key.to_string(),
        value,
    })
}

/// Parses `--reuse`'s N: at least 1, or `unlimited` (what `--reuse` alone means).
pub fn parse_reuse(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        _ if text == "unlimited" => Ok(usize::MAX),
        Ok(0) => Err("an instance serves at least 1 task".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("`{text}`: {e}")),
    }
}

/// Parses a worker count: at least 1.
pub fn parse_workers(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("a pool needs at least 1 worker".to_string()),
        Ok(n) if n > wasmpool::MAX_WORKERS => Err(format!(
            "{n} workers is more than the limit of {}",
            wasmpool::MAX_WORKERS
        )),
        Ok(n) => Ok(n),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => Err(format!(
            "`{text}` workers is more than the limit of {}",
            wasmpool::MAX_WORKERS
        )),
        Err(e) => Err(format!("`{text}`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("2 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_duration("876000h"), Ok(MAX_DURATION));
        for large in [
            "876000h1ns",
            "99999999999999999999999s",
            "5000000000000000h",
            "600000h600000h",
        ] {
            let err = parse_duration(large).expect_err(large);
            assert!(err.contains("too large"), "{large}: {err}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn dirs_and_env() {
        assert_eq!(
            parse_dir("/tmp/x::/data"),
            Ok(DirSpec {
                host: "/tmp/x".into(),
                guest: "/data".into()
            })
        );
        assert_eq!(parse_dir("data").map(|d| d.guest), Ok("data".to_string()));
        assert!(parse_dir("::/data").is_err());
        assert_eq!(
            parse_env("A=b=c"),
            Ok(EnvSpec {
                key: "A".into(),
                value: Some("b=c".into())
            })
        );
        assert_eq!(parse_env("HOME").map(|e| e.value), Ok(None));
        assert!(parse_env("=x").is_err());
    }

    #[test]
    fn reuse_counts() {
        assert_eq!(parse_reuse("8"), Ok(8));
        assert_eq!(parse_reuse("unlimited"), Ok(usize::MAX));
        assert!(parse_reuse("0").is_err());
        assert!(parse_reuse("many").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        Cli::command().long_version(long_version()).debug_assert();
    }
}
