//! The `wasmpool` command line: `run`, `map`, `inspect`, `compile` and `worker`. One mechanism per
//! file; `main.rs` parses the arguments and calls [`dispatch`]. `cmd_*.rs` are the five
//! subcommands; the other files are what they share.
//!
//! Exit status: 0 when every task succeeded, 1 when any task failed, 2 for usage errors and
//! components that cannot be loaded (an `Err` from here), 130 when `map` was interrupted.

pub mod args;
mod cache;
mod cmd_compile;
mod cmd_inspect;
mod cmd_map;
mod cmd_run;
mod cmd_worker;
mod input;
mod interrupt;
mod joblog;
mod limits;
mod pool_settings;
mod print;
mod progress;

use std::process::ExitCode;

use args::{Cli, Command};

/// Runs the subcommand. An `Err` is a usage error or a component that cannot be loaded.
pub fn dispatch(cli: &Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Run(args) => cmd_run::run(args, cli.verbose),
        Command::Map(args) => cmd_map::map(args, cli.verbose),
        Command::Inspect(args) => cmd_inspect::inspect(args, cli.verbose),
        Command::Compile(args) => cmd_compile::compile(args, cli.verbose),
        Command::Worker(args) => cmd_worker::worker(args, cli.verbose),
    }
}
