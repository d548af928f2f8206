//! How a task ended: the one place where wasmtime's errors and the guest's results become a
//! [`TaskValue`] or a [`TaskError`] ([`classify_start`] for instantiation, [`classify`] for
//! the call, [`command_outcome`] and [`unwrap_result`] for what the guest returned).

use std::time::Instant;

use wasmtime::component::Val;
use wasmtime::{Trap, WasmBacktrace};
use wasmtime_wasi::I32Exit;

use crate::component::ExportedFunction;
use crate::error::TaskError;
use crate::sandbox::Budget;
use crate::store::{Interrupted, MemoryLimiter, TaskControl};
use crate::value::{TaskValue, wave_text};

/// Why instantiation failed, as a task error: the limit that stopped it if one did (abort,
/// deadline, memory cap), `NoInstanceSlot` when the pooling allocator was full (wasmtime's
/// `PoolConcurrencyLimitError` anywhere in the error's chain), otherwise `Start` with
/// wasmtime's message.
pub(crate) fn classify_start(
    error: &wasmtime::Error,
    budget: &Budget,
    deadline: Option<Instant>,
    control: &TaskControl,
    limiter: &MemoryLimiter,
) -> TaskError {
    if control.is_aborted() {
        TaskError::Cancelled
    } else if deadline.is_some_and(|d| Instant::now() >= d) {
        TaskError::Timeout {
            limit: budget.timeout.unwrap_or_default(),
        }
    } else if limiter.denied() {
        TaskError::MemoryLimit {
            limit: limiter.max(),
        }
    } else if error
        .chain()
        .any(|e| e.is::<wasmtime::PoolConcurrencyLimitError>())
    {
        TaskError::NoInstanceSlot {
            message: format!("{error:#}"),
        }
    } else {
        TaskError::Start {
            message: format!("{error:#}"),
        }
    }
}

/// A command component's `wasi:cli/run#run` gives its exit code as the value: `ok` is 0,
/// `err` is exit code 1 and a failure (an explicit `exit(n)` is handled in [`classify`]).
pub(crate) fn command_outcome(
    function: &ExportedFunction,
    value: Option<Val>,
) -> Result<Option<Val>, TaskError> {
    let is_command = function.func_name() == "run"
        && function
            .interface()
            .is_some_and(|i| i.starts_with("wasi:cli/run@"));
    match value {
        Some(Val::Result(Ok(_))) if is_command => Ok(Some(Val::S32(0))),
        Some(Val::Result(Err(_))) if is_command => Err(TaskError::Failed {
            message: "exited with code 1".into(),
            value: "1".into(),
        }),
        other => Ok(other),
    }
}

/// How a call that wasmtime failed ended, as a task error (or a value: `exit(0)`).
pub(crate) fn classify(
    err: &wasmtime::Error,
    budget: &Budget,
    limiter: &MemoryLimiter,
    stderr_tail: &str,
) -> Result<Option<Val>, TaskError> {
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return if exit.0 == 0 {
            Ok(Some(Val::S32(0)))
        } else {
            Err(TaskError::Failed {
                message: format!("exited with code {}", exit.0),
                value: exit.0.to_string(),
            })
        };
    }
    if let Some(interrupted) = err.downcast_ref::<Interrupted>() {
        return Err(match interrupted {
            Interrupted::Deadline => TaskError::Timeout {
                limit: budget.timeout.unwrap_or_default(),
            },
            Interrupted::Aborted => TaskError::Cancelled,
        });
    }
    if limiter.denied() {
        return Err(TaskError::MemoryLimit {
            limit: limiter.max(),
        });
    }
    let backtrace = err
        .downcast_ref::<WasmBacktrace>()
        .map(|bt| bt.to_string())
        .unwrap_or_default();
    Err(match err.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => TaskError::StackOverflow { backtrace },
        Some(Trap::OutOfFuel) => TaskError::OutOfFuel {
            limit: budget.fuel.unwrap_or_default(),
        },
        Some(trap) => {
            let text = trap.to_string();
            TaskError::Trap {
                trap: text
                    .strip_prefix("wasm trap: ")
                    .unwrap_or(&text)
                    .to_string(),
                panic: panic_message(stderr_tail),
                backtrace,
            }
        }
        None => TaskError::Trap {
            trap: format!("{err:#}"),
            panic: panic_message(stderr_tail),
            backtrace,
        },
    })
}

/// A `result<T, E>` return becomes the task's value (`ok`) or a `Failed` error (`err`).
pub(crate) fn unwrap_result(value: Option<Val>) -> Result<TaskValue, TaskError> {
    match value {
        Some(Val::Result(Ok(payload))) => Ok(TaskValue::from(payload.map(|b| *b))),
        Some(Val::Result(Err(payload))) => Err(failed(payload.map(|b| *b))),
        other => Ok(TaskValue::from(other)),
    }
}

fn failed(payload: Option<Val>) -> TaskError {
    let value = payload.as_ref().map(wave_text).unwrap_or_default();
    let message = match &payload {
        Some(Val::String(s)) => s.clone(),
        None => "the task returned err".to_string(),
        Some(_) => value.clone(),
    };
    TaskError::Failed { message, value }
}

/// The message of a Rust guest's panic, from what it printed on stderr:
/// `thread '...' panicked at src/lib.rs:1:2:\n<message>\nnote: ...`.
fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.rfind("panicked at ")?;
    let body = stderr[start..].split_once('\n')?.1;
    let message: Vec<&str> = body
        .lines()
        .take_while(|l| !l.starts_with("note: "))
        .collect();
    let message = message.join("\n").trim().to_string();
    (!message.is_empty()).then_some(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_message_is_read_from_rust_panic_output() {
        let stderr = "thread '<unnamed>' panicked at src/lib.rs:20:9:\nboom here\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(panic_message(stderr).as_deref(), Some("boom here"));
        assert_eq!(panic_message("nothing"), None);
    }
}
