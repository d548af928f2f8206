//! The message bodies of the cluster, in the process pool's encoding (`process_pool/codec`):
//! a [`TaskMessage`] (one or more calls of one component, from one submitter) on the task
//! stream, a [`ResultMessage`] (one or more finished tasks) on the submitter's result
//! subject, and a [`StartedMessage`] (tasks a worker began) on its started subject.
//!
//! ```text
//!  TASKS    version u32 LE, submitter, component sha-256, origin, runtime config,
//!           task settings, calls (id, function index, budget, argv, arguments)
//!  RESULTS  version u32 LE, host, results (id, worker, pid, task run)
//!  STARTED  version u32 LE, task ids
//! ```
//!
//! Every body starts with [`CLUSTER_VERSION`]; a body of another version is refused whole.

use std::borrow::Cow;

use wasmtime::component::Val;

use crate::error::ProtocolError;
use crate::process_pool::codec::{Codec, Put, Reader};
use crate::run::TaskRun;
use crate::runtime::RuntimeConfig;
use crate::sandbox::Budget;
use crate::settings::TaskSettings;

/// The version of the cluster's message bodies; submitters and workers must agree.
pub const CLUSTER_VERSION: u32 = 2;

/// One call inside a [`TaskMessage`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RemoteCall<'a> {
    /// The submitter's id of the task (unique per submitter).
    pub(crate) id: u64,
    /// The function's index in the component's exports.
    pub(crate) function: usize,
    /// The whole budget: the submitter's, with the call's own fields on top.
    pub(crate) budget: Budget,
    pub(crate) argv: Option<Cow<'a, [String]>>,
    pub(crate) args: Cow<'a, [Val]>,
}

/// Calls of one component from one submitter: what a worker takes (and acks) as one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskMessage<'a> {
    /// The submitter's id: results go to its result subject.
    pub(crate) submitter: String,
    /// The SHA-256 of the component's `.wasm`, in hex: its name in the object store.
    pub(crate) component: String,
    /// Where the component came from, for messages.
    pub(crate) origin: String,
    pub(crate) config: RuntimeConfig,
    /// What the tasks ask for: output, capabilities, instance policy, initializer (the
    /// budget is per call).
    pub(crate) settings: TaskSettings,
    pub(crate) calls: Vec<RemoteCall<'a>>,
}

/// How one task went, on the worker that ran it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RemoteResult {
    pub(crate) id: u64,
    /// The local worker (thread or process) that ran it.
    pub(crate) worker: String,
    pub(crate) pid: u32,
    pub(crate) run: TaskRun,
}

/// Results for one submitter, from one host.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResultMessage {
    pub(crate) host: String,
    pub(crate) results: Vec<RemoteResult>,
}

/// Tasks a worker has begun to run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StartedMessage {
    pub(crate) ids: Vec<u64>,
}

/// Encodes a body: the version, then `message`.
pub(crate) fn encode<T: Codec>(message: &T) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::with_capacity(64);
    out.put_bytes(&CLUSTER_VERSION.to_le_bytes());
    message.encode(&mut out)?;
    Ok(out)
}

/// Decodes a whole body; another version, malformed or trailing bytes are errors.
pub(crate) fn decode<T: Codec>(body: &[u8]) -> Result<T, ProtocolError> {
    let mut r = Reader::new(body);
    let version = r.u32_le("version")?;
    if version != CLUSTER_VERSION {
        return Err(ProtocolError::VersionMismatch {
            ours: CLUSTER_VERSION,
            theirs: version,
        });
    }
    let message = T::decode(&mut r)?;
    r.finish("the message")?;
    Ok(message)
}

impl Codec for RemoteCall<'_> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let RemoteCall {
            id,
            function,
            budget,
            argv,
            args,
        } = self;
        id.encode(out)?;
        function.encode(out)?;
        budget.encode(out)?;
        argv.encode(out)?;
        args.encode(out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(RemoteCall {
            id: r.read("task id")?,
            function: r.read("function index")?,
            budget: r.read("budget")?,
            argv: r.read("argv")?,
            args: r.read("arguments")?,
        })
    }
}

impl Codec for TaskMessage<'_> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let TaskMessage {
            submitter,
            component,
            origin,
            config,
            settings,
            calls,
        } = self;
        submitter.encode(out)?;
        component.encode(out)?;
        origin.encode(out)?;
        config.encode(out)?;
        settings.encode(out)?;
        calls.encode(out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(TaskMessage {
            submitter: r.read("submitter")?,
            component: r.read("component")?,
            origin: r.read("origin")?,
            config: r.read("runtime config")?,
            settings: r.read("task settings")?,
            calls: r.read("calls")?,
        })
    }
}

impl Codec for RemoteResult {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let RemoteResult {
            id,
            worker,
            pid,
            run,
        } = self;
        id.encode(out)?;
        worker.encode(out)?;
        u64::from(*pid).encode(out)?;
        run.encode(out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let id = r.read("task id")?;
        let worker = r.read("worker")?;
        let pid: u64 = r.read("pid")?;
        let pid = u32::try_from(pid)
            .map_err(|_| ProtocolError::Malformed(format!("pid {pid} out of range")))?;
        Ok(RemoteResult {
            id,
            worker,
            pid,
            run: r.read("task run")?,
        })
    }
}

impl Codec for ResultMessage {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let ResultMessage { host, results } = self;
        host.encode(out)?;
        results.encode(out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(ResultMessage {
            host: r.read("host")?,
            results: r.read("results")?,
        })
    }
}

impl Codec for StartedMessage {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        self.ids.encode(out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(StartedMessage {
            ids: r.read("task ids")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskError;
    use crate::value::TaskValue;
    use std::time::Duration;

    #[test]
    fn a_task_message_round_trips() {
        let message = TaskMessage {
            submitter: "c-1".into(),
            component: "ab".repeat(32),
            origin: "fixture_tasks.wasm".into(),
            config: RuntimeConfig::default(),
            settings: TaskSettings::default(),
            calls: vec![RemoteCall {
                id: 7,
                function: 2,
                budget: Budget::default().timeout(Duration::from_secs(1)),
                argv: Some(Cow::Owned(vec!["x".into()])),
                args: Cow::Owned(vec![Val::U32(5), Val::String("é".into())]),
            }],
        };
        let body = encode(&message).expect("encodes");
        assert_eq!(decode::<TaskMessage>(&body).expect("decodes"), message);
    }

    #[test]
    fn a_result_message_round_trips_and_another_version_is_refused() {
        let message = ResultMessage {
            host: "box".into(),
            results: vec![RemoteResult {
                id: 1,
                worker: "worker-2".into(),
                pid: 42,
                run: TaskRun::failed(TaskError::Cancelled, Duration::from_millis(3)),
            }],
        };
        let mut body = encode(&message).expect("encodes");
        assert_eq!(decode::<ResultMessage>(&body).expect("decodes"), message);
        body[0] = 9;
        assert!(matches!(
            decode::<ResultMessage>(&body),
            Err(ProtocolError::VersionMismatch { theirs: 9, .. })
        ));
        let ok = TaskRun {
            outcome: Ok(TaskValue::from(Val::S64(-3))),
            ..TaskRun::failed(TaskError::Cancelled, Duration::ZERO)
        };
        let one = ResultMessage {
            host: String::new(),
            results: vec![RemoteResult {
                id: 2,
                worker: String::new(),
                pid: 0,
                run: ok,
            }],
        };
        let body = encode(&one).expect("encodes");
        assert_eq!(decode::<ResultMessage>(&body).expect("decodes"), one);
        assert!(decode::<ResultMessage>(&body[..body.len() - 1]).is_err());
    }
}
