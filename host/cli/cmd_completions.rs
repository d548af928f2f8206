//! `wasmpool completions SHELL` and `wasmpool man`: documents made from the command line's
//! own definition ([`super::command`]), so they list exactly the flags the parser takes.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Context;

use super::args::{CompletionsArgs, ManArgs};

/// Prints the completion script for `args.shell`.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = super::command();
    // Into memory first: clap_complete panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "wasmpool", &mut script);
    let mut out = io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .context("cannot write the completion script")?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the main manual page, or writes every page into `args.dir`.
pub fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    let command = super::command();
    match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .and_then(|()| clap_mangen::generate_to(command, dir))
                .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
        }
        None => {
            let mut out = io::stdout().lock();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .and_then(|()| out.flush())
                .context("cannot write the manual page")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
