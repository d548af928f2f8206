//! The encoding of the records the protocol carries besides component values: budgets,
//! capabilities, output modes, settings, runtime configurations, task errors and task runs.
//!
//! Every struct is taken apart field by field (never with `..`), so that a field added to
//! one of them is a compile error here rather than a setting silently lost on the way to
//! the workers.
//!
//! | type | bytes |
//! |------|-------|
//! | `Budget` | `Option<Duration>` timeout, `Option<u64>` fuel, `Option<u64>` memory cap |
//! | `DirGrant` | `PathBuf` host, `String` guest, `bool` writable |
//! | `Capabilities` | `Vec<DirGrant>`, `Vec<(String, String)>` env, `Vec<String>` args, `bool` network |
//! | `OutputMode` | 0 prefixed, 1 plain, 2 discard, 3 and a `usize` limit: capture |
//! | `InstancePolicy` | 0 fresh, 1 and a `usize`: reuse for at most that many tasks |
//! | `TaskSettings` | `OutputMode`, `Budget`, `Capabilities`, `InstancePolicy`, `Option<String>` initializer |
//! | `RuntimeConfig` | `bool` fuel, `bool` interruptible, `Option<usize>` stack size, `Option<PoolingConfig>` |
//! | `PoolingConfig` | `u32` instances, `usize` memory kept resident, `usize` table kept resident |
//! | `TaskError` | a kind byte 0–8, then the variant's fields in order |
//! | `HostStream` | 1 stdout, 2 stderr |
//! | `TaskRun` | `Result<TaskValue, TaskError>`, `Duration` elapsed, `Option<u64>` fuel, `u64` peak memory, `Option<String>` stdout, `Option<String>` stderr, `bool` stdout truncated, `bool` stderr truncated |

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{ProtocolError, TaskError};
use crate::output::{HostStream, OutputMode};
use crate::run::TaskRun;
use crate::runtime::{PoolingConfig, RuntimeConfig};
use crate::sandbox::{Budget, Capabilities, DirGrant};
use crate::settings::{InstancePolicy, TaskSettings};
use crate::value::TaskValue;

use super::{Codec, Put, Reader, malformed};

impl Codec for Budget {
    const MIN_SIZE: usize = 3;

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let Budget {
            timeout,
            fuel,
            max_memory,
        } = self;
        timeout.encode(out)?;
        fuel.encode(out)?;
        max_memory.encode(out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(Budget {
            timeout: r.read("timeout")?,
            fuel: r.read("fuel")?,
            max_memory: r.read("memory cap")?,
        })
    }
}

impl Codec for DirGrant {
    const MIN_SIZE: usize = 3;

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let DirGrant {
            host,
            guest,
            writable,
        } = self;
        host.encode(out)?;
        guest.encode(out)?;
        writable.encode(out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(DirGrant {
            host: r.read::<PathBuf>("host path")?,
            guest: r.read("guest path")?,
            writable: r.read("writable")?,
        })
    }
}

impl Codec for Capabilities {
    const MIN_SIZE: usize = 4;

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let Capabilities {
            dirs,
            env,
            args,
            network,
        } = self;
        dirs.encode(out)?;
        env.encode(out)?;
        args.encode(out)?;
        network.encode(out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(Capabilities {
            dirs: r.read("directory grants")?,
            env: r.read("environment")?,
            args: r.read("arguments")?,
            network: r.read("network")?,
        })
    }
}

impl Codec for OutputMode {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        match self {
            OutputMode::Prefixed => out.put_u8(0),
            OutputMode::Plain => out.put_u8(1),
            OutputMode::Discard => out.put_u8(2),
            OutputMode::Capture { limit } => {
                out.put_u8(3);
                out.put_len(*limit);
            }
        }
        Ok(())
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(match r.u8("output mode")? {
            0 => OutputMode::Prefixed,
            1 => OutputMode::Plain,
            2 => OutputMode::Discard,
            3 => OutputMode::Capture {
                limit: r.read("capture limit")?,
            },
            b => return Err(malformed(format!("unknown output mode {b}"))),
        })
    }
}

impl Codec for InstancePolicy {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        match self {
            InstancePolicy::Fresh => out.put_u8(0),
            InstancePolicy::Reuse { max_tasks } => {
                out.put_u8(1);
                out.put_len(*max_tasks);
            }
        }
        Ok(())
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(match r.u8("instance policy")? {
            0 => InstancePolicy::Fresh,
            1 => InstancePolicy::Reuse {
                max_tasks: r.read("max tasks")?,
            },
            b => return Err(malformed(format!("unknown instance policy {b}"))),
        })
    }
}

impl Codec for TaskSettings {
    const MIN_SIZE: usize = 10;

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let TaskSettings {
            output,
            budget,
            capabilities,
            policy,
            initializer,
        } = self;
        output.encode(out)?;
        budget.encode(out)?;
        capabilities.encode(out)?;
        policy.encode(out)?;
        initializer.encode(out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(TaskSettings {
            output: r.read("output mode")?,
            budget: r.read("budget")?,
            capabilities: r.read("capabilities")?,
            policy: r.read("instance policy")?,
            initializer: r.read("initializer")?,
        })
    }
}

impl Codec for RuntimeConfig {
    const MIN_SIZE: usize = 4;

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let RuntimeConfig {
            fuel,
            interruptible,
            max_wasm_stack,
            pooling,
        } = self;
        fuel.encode(out)?;
        interruptible.encode(out)?;
        max_wasm_stack.encode(out)?;
        pooling.encode(out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(RuntimeConfig {
            fuel: r.read("fuel")?,
            interruptible: r.read("interruptible")?,
            max_wasm_stack: r.read("stack size")?,
            pooling: r.read("instance pool")?,
        })
    }
}

impl Codec for PoolingConfig {
    const MIN_SIZE: usize = 3;

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let PoolingConfig {
            instances,
            memory_keep_resident,
            table_keep_resident,
        } = self;
        instances.encode(out)?;
        memory_keep_resident.encode(out)?;
        table_keep_resident.encode(out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(PoolingConfig {
            instances: r.read("instances")?,
            memory_keep_resident: r.read("memory kept resident")?,
            table_keep_resident: r.read("table kept resident")?,
        })
    }
}

impl Codec for TaskError {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        match self {
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
                panic.encode(out)?;
                out.put_str(backtrace);
            }
            TaskError::Timeout { limit } => {
                out.put_u8(2);
                limit.encode(out)?;
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
            TaskError::Panic { worker, message } => {
                out.put_u8(9);
                out.put_str(worker);
                out.put_str(message);
            }
            TaskError::FuelNotEnabled => out.put_u8(10),
            TaskError::NoInstanceSlot { message } => {
                out.put_u8(11);
                out.put_str(message);
            }
            TaskError::Unreturnable { message } => {
                out.put_u8(12);
                out.put_str(message);
            }
            TaskError::ComponentUnavailable { message } => {
                out.put_u8(13);
                out.put_str(message);
            }
            TaskError::Incompatible { message } => {
                out.put_u8(14);
                out.put_str(message);
            }
            TaskError::Refused { message } => {
                out.put_u8(15);
                out.put_str(message);
            }
            TaskError::QueueTimeout { limit } => {
                out.put_u8(16);
                limit.encode(out)?;
            }
        }
        Ok(())
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(match r.u8("error kind")? {
            0 => TaskError::Failed {
                message: r.read("message")?,
                value: r.read("value")?,
            },
            1 => TaskError::Trap {
                trap: r.read("trap")?,
                panic: r.read("panic")?,
                backtrace: r.read("backtrace")?,
            },
            2 => TaskError::Timeout {
                limit: r.read::<Duration>("limit")?,
            },
            3 => TaskError::OutOfFuel {
                limit: r.read("limit")?,
            },
            4 => TaskError::MemoryLimit {
                limit: r.read("limit")?,
            },
            5 => TaskError::StackOverflow {
                backtrace: r.read("backtrace")?,
            },
            6 => TaskError::Cancelled,
            7 => TaskError::BrokenPool {
                reason: r.read("reason")?,
            },
            8 => TaskError::Start {
                message: r.read("message")?,
            },
            9 => TaskError::Panic {
                worker: r.read("worker")?,
                message: r.read("message")?,
            },
            10 => TaskError::FuelNotEnabled,
            11 => TaskError::NoInstanceSlot {
                message: r.read("message")?,
            },
            12 => TaskError::Unreturnable {
                message: r.read("message")?,
            },
            13 => TaskError::ComponentUnavailable {
                message: r.read("message")?,
            },
            14 => TaskError::Incompatible {
                message: r.read("message")?,
            },
            15 => TaskError::Refused {
                message: r.read("message")?,
            },
            16 => TaskError::QueueTimeout {
                limit: r.read::<Duration>("limit")?,
            },
            b => return Err(malformed(format!("unknown error kind {b}"))),
        })
    }
}

impl Codec for HostStream {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        out.put_u8(match self {
            HostStream::Stdout => 1,
            HostStream::Stderr => 2,
        });
        Ok(())
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        match r.u8("stream")? {
            1 => Ok(HostStream::Stdout),
            2 => Ok(HostStream::Stderr),
            s => Err(malformed(format!("unknown output stream {s}"))),
        }
    }
}

impl Codec for TaskRun {
    const MIN_SIZE: usize = 9;

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let TaskRun {
            outcome,
            elapsed,
            fuel_consumed,
            peak_memory,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
        } = self;
        outcome.encode(out)?;
        elapsed.encode(out)?;
        fuel_consumed.encode(out)?;
        peak_memory.encode(out)?;
        stdout.encode(out)?;
        stderr.encode(out)?;
        stdout_truncated.encode(out)?;
        stderr_truncated.encode(out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(TaskRun {
            outcome: r.read::<Result<TaskValue, TaskError>>("outcome")?,
            elapsed: r.read("elapsed")?,
            fuel_consumed: r.read("fuel")?,
            peak_memory: r.read("peak memory")?,
            stdout: r.read("stdout")?,
            stderr: r.read("stderr")?,
            stdout_truncated: r.read("stdout truncated")?,
            stderr_truncated: r.read("stderr truncated")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::arbitrary::{assert_never_panics, assert_round_trips};
    use super::*;

    #[test]
    fn every_record_round_trips() {
        assert_round_trips::<Budget>(2_000);
        assert_round_trips::<DirGrant>(2_000);
        assert_round_trips::<Capabilities>(2_000);
        assert_round_trips::<OutputMode>(2_000);
        assert_round_trips::<InstancePolicy>(2_000);
        assert_round_trips::<TaskSettings>(2_000);
        assert_round_trips::<RuntimeConfig>(2_000);
        assert_round_trips::<PoolingConfig>(2_000);
        assert_round_trips::<TaskError>(2_000);
        assert_round_trips::<HostStream>(200);
        assert_round_trips::<TaskRun>(2_000);
    }

    #[test]
    fn random_and_mutated_records_never_panic() {
        assert_never_panics::<TaskSettings>(5_000);
        assert_never_panics::<TaskRun>(5_000);
    }

    #[test]
    fn unknown_tags_are_malformed() {
        let f = super::super::from_bytes::<TaskError>;
        assert!(matches!(f(&[15]), Err(ProtocolError::Malformed(_))));
        assert!(super::super::from_bytes::<OutputMode>(&[4]).is_err());
        assert!(super::super::from_bytes::<InstancePolicy>(&[2]).is_err());
        assert!(super::super::from_bytes::<HostStream>(&[0]).is_err());
    }

    #[test]
    fn an_instance_count_beyond_u32_is_malformed() {
        let f = super::super::from_bytes::<PoolingConfig>;
        // 2^32 - 1 instances, then 2^32: uleb 0xff.. 0x0f, then 0x80.. 0x10.
        let max = f(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0]).expect("u32::MAX decodes");
        assert_eq!(max.instances, u32::MAX);
        let over = f(&[0x80, 0x80, 0x80, 0x80, 0x10, 0, 0]);
        assert!(matches!(over, Err(ProtocolError::Malformed(_))), "{over:?}");
    }
}
