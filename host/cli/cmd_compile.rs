//! `wasmpool compile`: compile a component once, to a `.cwasm` file that `run` and `map`
//! load with `--allow-precompiled` without compiling.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use wasmpool::{Runtime, RuntimeConfig};

use super::args::CompileArgs;
use super::cache;

/// Runs `wasmpool compile`.
pub fn compile(args: &CompileArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    let mut config = RuntimeConfig::default();
    config.fuel = args.fuel_metering;
    let runtime = Runtime::with_config(config).context("cannot start the wasm engine")?;
    let started = std::time::Instant::now();
    let component = runtime.load(&args.component)?;
    let bytes = component.precompiled()?;
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.component));
    if out == args.component {
        anyhow::bail!(
            "{} would be overwritten by its compiled form; name another file with -o",
            out.display()
        );
    }
    cache::write_atomically(&out, &bytes)?;
    if verbose {
        eprintln!(
            "wasmpool: compiled {} in {:.1?}: wrote {} ({} bytes)",
            args.component.display(),
            started.elapsed(),
            out.display(),
            bytes.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `dir/name.wasm` → `dir/name.cwasm`.
fn default_output(component: &std::path::Path) -> PathBuf {
    component.with_extension("cwasm")
}
