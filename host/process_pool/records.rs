//! The encoding of the records the protocol carries besides component values: budgets,
//! capabilities, output modes, runtime settings and task errors. Every struct is taken apart
//! field by field (not with `..`), so that a field added to one of them is a compile error
//! here rather than a setting silently lost on the way to the workers.

use std::path::PathBuf;
use std::time::Duration;

use crate::component::RuntimeConfig;
use crate::error::{ProtocolError, TaskError};
use crate::output::OutputMode;
use crate::sandbox::{Budget, Capabilities, DirGrant};

use super::wire::{Put, Reader, malformed};

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn put_output_mode(out: &mut Vec<u8>, mode: OutputMode) {
    match mode {
        OutputMode::Prefixed => out.put_u8(0),
        OutputMode::Plain => out.put_u8(1),
        OutputMode::Discard => out.put_u8(2),
        OutputMode::Capture { limit } => {
            out.put_u8(3);
            out.put_len(limit);
        }
    }
}

pub(crate) fn read_output_mode(r: &mut Reader<'_>) -> Result<OutputMode, ProtocolError> {
    Ok(match r.u8("output mode")? {
        0 => OutputMode::Prefixed,
        1 => OutputMode::Plain,
        2 => OutputMode::Discard,
        3 => OutputMode::Capture {
            limit: usize::try_from(r.uleb("capture limit")?).unwrap_or(usize::MAX),
        },
        b => return Err(malformed(format!("unknown output mode {b}"))),
    })
}

pub(crate) fn put_budget(out: &mut Vec<u8>, b: &Budget) {
    // Destructured so that a new field is a compile error here, not a silent omission.
    let Budget {
        timeout,
        fuel,
        max_memory,
    } = b;
    out.put_opt_uleb(timeout.map(nanos));
    out.put_opt_uleb(*fuel);
    out.put_opt_uleb(*max_memory);
}

pub(crate) fn read_budget(r: &mut Reader<'_>) -> Result<Budget, ProtocolError> {
    Ok(Budget {
        timeout: r.opt_uleb("timeout")?.map(Duration::from_nanos),
        fuel: r.opt_uleb("fuel")?,
        max_memory: r.opt_uleb("memory cap")?,
    })
}

pub(crate) fn put_strings(out: &mut Vec<u8>, items: &[String]) {
    out.put_len(items.len());
    for s in items {
        out.put_str(s);
    }
}

pub(crate) fn read_strings(r: &mut Reader<'_>, what: &str) -> Result<Vec<String>, ProtocolError> {
    let n = r.count(1, what)?;
    (0..n).map(|_| r.string(what)).collect()
}

pub(crate) fn put_capabilities(out: &mut Vec<u8>, c: &Capabilities) {
    use std::os::unix::ffi::OsStrExt;
    let Capabilities {
        dirs,
        env,
        args,
        network,
    } = c;
    out.put_len(dirs.len());
    for DirGrant {
        host,
        guest,
        writable,
    } in dirs
    {
        let host = host.as_os_str().as_bytes();
        out.put_len(host.len());
        out.put_bytes(host);
        out.put_str(guest);
        out.put_bool(*writable);
    }
    out.put_len(env.len());
    for (key, value) in env {
        out.put_str(key);
        out.put_str(value);
    }
    put_strings(out, args);
    out.put_bool(*network);
}

pub(crate) fn read_capabilities(r: &mut Reader<'_>) -> Result<Capabilities, ProtocolError> {
    use std::os::unix::ffi::OsStrExt;
    let n = r.count(3, "directory grants")?;
    let mut dirs = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let len = r.count(1, "host path")?;
        let host = PathBuf::from(std::ffi::OsStr::from_bytes(r.bytes(len, "host path")?));
        dirs.push(DirGrant {
            host,
            guest: r.string("guest path")?,
            writable: r.bool("writable")?,
        });
    }
    let n = r.count(2, "environment")?;
    let mut env = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        env.push((r.string("variable")?, r.string("value")?));
    }
    let args = read_strings(r, "arguments")?;
    let network = r.bool("network")?;
    Ok(Capabilities {
        dirs,
        env,
        args,
        network,
    })
}

pub(crate) fn put_runtime_config(out: &mut Vec<u8>, c: &RuntimeConfig) {
    let RuntimeConfig {
        fuel,
        interruptible,
        max_wasm_stack,
    } = c;
    out.put_bool(*fuel);
    out.put_bool(*interruptible);
    out.put_opt_uleb(max_wasm_stack.map(|n| n as u64));
}

pub(crate) fn read_runtime_config(r: &mut Reader<'_>) -> Result<RuntimeConfig, ProtocolError> {
    let fuel = r.bool("fuel")?;
    let interruptible = r.bool("interruptible")?;
    let max_wasm_stack = match r.opt_uleb("stack size")? {
        None => None,
        Some(n) => Some(usize::try_from(n).map_err(|e| malformed(format!("stack size: {e}")))?),
    };
    Ok(RuntimeConfig {
        fuel,
        interruptible,
        max_wasm_stack,
    })
}

pub(crate) fn put_task_error(out: &mut Vec<u8>, e: &TaskError) {
    match e {
        TaskError::Failed { message, value } => {
            out.put_u8(0);
            out.put_str(message);
            out.put_str(value);
        }
        TaskError::Trap {
            trap,
            panic,
            backtrace,
        } => {
            out.put_u8(1);
            out.put_str(trap);
            out.put_opt_str(panic.as_deref());
            out.put_str(backtrace);
        }
        TaskError::Timeout { limit } => {
            out.put_u8(2);
            out.put_uleb(nanos(*limit));
        }
        TaskError::OutOfFuel { limit } => {
            out.put_u8(3);
            out.put_uleb(*limit);
        }
        TaskError::MemoryLimit { limit } => {
            out.put_u8(4);
            out.put_uleb(*limit);
        }
        TaskError::StackOverflow { backtrace } => {
            out.put_u8(5);
            out.put_str(backtrace);
        }
        TaskError::Cancelled => out.put_u8(6),
        TaskError::BrokenPool { reason } => {
            out.put_u8(7);
            out.put_str(reason);
        }
        TaskError::Start { message } => {
            out.put_u8(8);
            out.put_str(message);
        }
    }
}

pub(crate) fn read_task_error(r: &mut Reader<'_>) -> Result<TaskError, ProtocolError> {
    Ok(match r.u8("error kind")? {
        0 => TaskError::Failed {
            message: r.string("message")?,
            value: r.string("value")?,
        },
        1 => TaskError::Trap {
            trap: r.string("trap")?,
            panic: r.opt_string("panic")?,
            backtrace: r.string("backtrace")?,
        },
        2 => TaskError::Timeout {
            limit: Duration::from_nanos(r.uleb("limit")?),
        },
        3 => TaskError::OutOfFuel {
            limit: r.uleb("limit")?,
        },
        4 => TaskError::MemoryLimit {
            limit: r.uleb("limit")?,
        },
        5 => TaskError::StackOverflow {
            backtrace: r.string("backtrace")?,
        },
        6 => TaskError::Cancelled,
        7 => TaskError::BrokenPool {
            reason: r.string("reason")?,
        },
        8 => TaskError::Start {
            message: r.string("message")?,
        },
        b => return Err(malformed(format!("unknown error kind {b}"))),
    })
}
