//! The `wasmpool` command line: `run`, `map`, `inspect` and `compile`. One mechanism per
//! file; `main.rs` parses the arguments and calls [`dispatch`].
//!
//! Exit status: 0 when every task succeeded, 1 when any task failed, 2 for usage errors and
//! components that cannot be loaded (an `Err` from here), 130 when `map` was interrupted.

pub mod args;
mod cache;
mod compile;
mod input;
mod inspect;
mod interrupt;
mod joblog;
mod limits;
mod map;
mod output;
mod pool;
mod progress;
mod run;

use std::process::ExitCode;

use args::{Cli, Command};

/// Runs the subcommand. An `Err` is a usage error or a component that cannot be loaded.
pub fn dispatch(cli: &Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Run(args) => run::run(args, cli.verbose),
        Command::Map(args) => map::map(args, cli.verbose),
        Command::Inspect(args) => inspect::inspect(args, cli.verbose),
        Command::Compile(args) => compile::compile(args, cli.verbose),
    }
}
