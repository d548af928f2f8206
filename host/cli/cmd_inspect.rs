//! `wasmpool inspect`: a component's exported functions, grouped by interface, with their
//! WIT signatures and the name to call each by; then its imports.

use std::io::{self, Write};
use std::process::ExitCode;

use serde_json::json;
use wasmpool::{ExportedFunction, RuntimeConfig};

use super::args::{InspectArgs, OutputFormat};
use super::cache;

/// Runs `wasmpool inspect`.
pub fn inspect(args: &InspectArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    let component = cache::load(&args.load, RuntimeConfig::default(), verbose)?;
    let functions = component.functions();
    let imports = component.imports();
    let mut out = io::stdout().lock();
    match args.output {
        OutputFormat::Json => {
            let exports: Vec<_> = functions
                .iter()
                .map(|f| {
                    json!({
                        "name": f.name(),
                        "interface": f.interface(),
                        "function": f.func_name(),
                        "call": call_name(f),
                        "signature": f.signature(),
                    })
                })
                .collect();
            let object = json!({
                "component": component.origin(),
                "exports": exports,
                "imports": imports,
            });
            writeln!(out, "{object}")?;
        }
        OutputFormat::Text => {
            writeln!(out, "{}", component.origin())?;
            writeln!(out, "exports:")?;
            for f in functions.iter().filter(|f| f.interface().is_none()) {
                writeln!(out, "  {}: {}", f.func_name(), f.signature())?;
            }
            let mut interfaces: Vec<&str> = Vec::new();
            for f in functions {
                if let Some(i) = f.interface()
                    && !interfaces.contains(&i)
                {
                    interfaces.push(i);
                }
            }
            for interface in interfaces {
                let mut members = functions
                    .iter()
                    .filter(|f| f.interface() == Some(interface));
                let prefix = members
                    .next()
                    .map(|f| call_name(f).trim_end_matches(f.func_name()).to_string())
                    .unwrap_or_default();
                writeln!(out, "  interface {interface} (call as {prefix}NAME):")?;
                for f in functions
                    .iter()
                    .filter(|f| f.interface() == Some(interface))
                {
                    writeln!(out, "    {}: {}", f.func_name(), f.signature())?;
                }
            }
            writeln!(out, "imports:")?;
            for import in &imports {
                writeln!(out, "  {import}")?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The shortest name `run` and `map` accept for `f`: `fib`, or `math.add` for a function of
/// the exported interface `wasmpool:tasks/math@0.1.0`.
fn call_name(f: &ExportedFunction) -> String {
    match f.interface() {
        None => f.func_name().to_string(),
        Some(interface) => {
            let unversioned = interface.split('@').next().unwrap_or(interface);
            let short = unversioned.rsplit('/').next().unwrap_or(unversioned);
            format!("{short}.{}", f.func_name())
        }
    }
}
