//! `wasmpool`, the command line: run functions of WebAssembly components, one call
//! (`run`) or one function over many inputs on a pool (`map`); list what a component
//! exports (`inspect`); precompile it (`compile`). See `wasmpool --help` and `host/cli/`.

mod cli;

use std::process::ExitCode;

use clap::FromArgMatches;

fn main() -> ExitCode {
    // Keep this the first statement: a process pool started this binary as its worker
    // when WASMPOOL_WORKER is set; then this serves tasks and exits (see host/process_pool/).
    wasmpool::serve_worker_if_requested();
    let cli = match cli::args::Cli::from_arg_matches(&cli::command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli::dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wasmpool: {e:#}");
            ExitCode::from(2)
        }
    }
}
