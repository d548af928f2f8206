//! The `wasmpool` command line: `run`, `map`, `inspect`, `compile`, `worker`, and
//! `completions` and `man` about itself. One mechanism per file; `main.rs` parses the
//! arguments and calls [`dispatch`]. `cmd_*.rs` are the subcommands; the other files are what
//! they share.
//!
//! Exit status: 0 when every task succeeded, 1 when any task failed, 2 for usage errors and
//! components that cannot be loaded (an `Err` from here), 130 when `map` was interrupted.

pub mod args;
mod cache;
mod cmd_compile;
mod cmd_completions;
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
use clap::CommandFactory;

/// The command line as clap sees it, with the long `--version` text: what `main` parses
/// with, and what completions and manual pages are made from.
pub fn command() -> clap::Command {
    Cli::command().long_version(args::long_version())
}

/// Runs the subcommand. An `Err` is a usage error or a component that cannot be loaded.
pub fn dispatch(cli: &Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Run(args) => cmd_run::run(args, cli.verbose),
        Command::Map(args) => cmd_map::map(args, cli.verbose),
        Command::Inspect(args) => cmd_inspect::inspect(args, cli.verbose),
        Command::Compile(args) => cmd_compile::compile(args, cli.verbose),
        Command::Worker(args) => cmd_worker::worker(args, cli.verbose),
        Command::Completions(args) => cmd_completions::completions(args),
        Command::Man(args) => cmd_completions::man(args),
    }
}
