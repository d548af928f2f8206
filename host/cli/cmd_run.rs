//! `wasmpool run`: one call, written in WAVE (or its arguments in JSON), its result printed
//! as WAVE (or as one JSON object).

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use wasmpool::{Call, OutputMode, TaskComponent};

use super::args::{InputFormat, OutputFormat, PoolKind, RunArgs};
use super::cache;
use super::pool_settings::{ClusterTarget, PoolSettings};
use super::print::{CAPTURE_LIMIT, Failure, TaskRecord};

/// Runs `wasmpool run`.
pub fn run(args: &RunArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    let mut sandbox = args.sandbox.resolve()?;
    sandbox.size_pool_for(Some(1));
    let component = cache::load(&args.load, sandbox.runtime, verbose)?;
    let (call, function) = match args.input {
        InputFormat::Wave => wave_call(&component, args)?,
        InputFormat::Json => {
            let function = args.call.trim();
            let text = args.args.as_deref().unwrap_or("[]");
            let json: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| anyhow!("ARGS is not JSON ({e}): {text}"))?;
            let call = component
                .call_json(function, &json)
                .map_err(|e| anyhow!("{}: {e}", component.origin()))?;
            (call, function.to_string())
        }
    };

    let settings = PoolSettings {
        kind: PoolKind::Thread,
        workers: Some(1),
        budget: sandbox.budget,
        capabilities: sandbox.capabilities,
        // Text: the task's output goes straight through, as it is printed. JSON: it goes
        // into the object, so that stdout holds exactly one JSON object.
        output: match args.output {
            OutputFormat::Text => OutputMode::Plain,
            OutputFormat::Json => OutputMode::Capture {
                limit: CAPTURE_LIMIT,
            },
        },
        policy: wasmpool::InstancePolicy::Fresh,
        initializer: args.init.clone(),
        cluster: ClusterTarget::from_args(&args.cluster, None),
    };
    settings.check_initializer(&component)?;
    let pool = settings.build()?.executor;
    let future = pool.submit(call)?;
    let record = TaskRecord {
        index: None,
        input: None,
        outcome: future.result().map_err(Failure::Task),
        report: future.report(),
        attempt: 1,
    };
    let mut stdout = io::stdout().lock();
    let written = match args.output {
        OutputFormat::Text => record.write_text(&function, &mut stdout, &mut io::stderr().lock()),
        OutputFormat::Json => record.write_json(&mut stdout),
    };
    written.and_then(|()| stdout.flush())?;
    Ok(if record.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The call CALL writes in WAVE, and the function's name as written.
fn wave_call(component: &TaskComponent, args: &RunArgs) -> anyhow::Result<(Call, String)> {
    if let Some(extra) = &args.args {
        bail!(
            "unexpected argument `{extra}`: with WAVE, the arguments are part of CALL \
             ('add(1, 2)'); ARGS is for --input json"
        );
    }
    let text = args.call.trim();
    // `noop` alone is `noop()`.
    let text = if text.contains('(') {
        text.to_string()
    } else {
        format!("{text}()")
    };
    let call = component
        .call_wave(&text)
        .map_err(|e| anyhow!("{}: {e}", component.origin()))?;
    let function = text.split('(').next().unwrap_or_default().trim();
    Ok((call, function.to_string()))
}
