//! The messages' encodings, byte for byte, and their round trips.

use std::fmt::Debug;
use std::time::Duration;

use super::*;
use crate::error::TaskError;
use crate::output::OutputMode;
use crate::process_pool::codec::arbitrary::{
    Arbitrary, Gen, assert_round_trips, assert_round_trips_open, nth,
};
use crate::process_pool::framing::{append, frame, read_frame};
use crate::sandbox::Capabilities;
use crate::settings::InstancePolicy;
use crate::value::TaskValue;

/// `m`'s frame, in one buffer.
fn bytes<M: Message>(m: &M) -> Vec<u8> {
    let mut out = Vec::new();
    append(&mut out, m).unwrap();
    // `frame` writes the same bytes, with the tail apart.
    let whole = frame(m).unwrap().into_bytes();
    assert_eq!(whole, out);
    out
}

/// Through the pipe and back: frame, read the frame, decode, compare, re-encode.
fn assert_messages_round_trip<M: Message + Arbitrary + PartialEq + Debug>(cases: usize) {
    for case in 0..cases {
        let m: M = nth(case);
        let sent = bytes(&m);
        let mut rest = &sent[..];
        let (kind, payload) = read_frame(&mut rest).unwrap().unwrap();
        assert!(rest.is_empty());
        assert_eq!(kind, m.kind());
        let got = M::decode(kind, &payload).unwrap_or_else(|e| panic!("{m:?}: {e}"));
        assert_eq!(got, m, "case {case}");
        assert_eq!(bytes(&got), sent, "case {case}: not canonical");
    }
}

#[test]
fn payloads_round_trip() {
    assert_round_trips::<Setup>(2_000);
    assert_round_trips::<RunTask<'static>>(2_000);
    assert_round_trips::<Abort>(500);
    assert_round_trips::<TaskResult>(2_000);
    // Their last field runs to the end of the payload.
    assert_round_trips_open::<Load>(1_000);
    assert_round_trips_open::<Output<'static>>(1_000);
}

#[test]
fn messages_round_trip_through_frames() {
    assert_messages_round_trip::<ToWorker<'static>>(4_000);
    assert_messages_round_trip::<FromWorker<'static>>(4_000);
}

#[test]
fn mangled_payloads_never_panic() {
    let mut g = Gen::new(7);
    for case in 0..4_000 {
        let mut payload = match nth::<ToWorker>(case) {
            m if case % 2 == 0 => bytes(&m)[5..].to_vec(),
            _ => bytes(&nth::<FromWorker>(case))[5..].to_vec(),
        };
        g.mangle(&mut payload);
        for kind in [RESULT, OUTPUT, SETUP, LOAD, TASK, ABORT] {
            let _ = ToWorker::decode(kind, &payload);
            let _ = FromWorker::decode(kind, &payload);
        }
    }
}

#[test]
fn a_kind_of_the_other_direction_is_unexpected() {
    for kind in [0, 1, RESULT, OUTPUT, 20, 255] {
        assert_eq!(
            ToWorker::decode(kind, &[]),
            Err(ProtocolError::UnexpectedFrame(kind))
        );
    }
    for kind in [0, 1, SETUP, LOAD, TASK, ABORT, 255] {
        assert_eq!(
            FromWorker::decode(kind, &[]),
            Err(ProtocolError::UnexpectedFrame(kind))
        );
    }
}

#[test]
fn setup_checks_the_version() {
    let setup = ToWorker::Setup(Setup {
        name: "w".into(),
        settings: TaskSettings::default(),
    });
    let mut sent = bytes(&setup);
    sent[5..9].copy_from_slice(&7u32.to_le_bytes());
    assert_eq!(
        ToWorker::decode(SETUP, &sent[5..]),
        Err(ProtocolError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: 7
        })
    );
}

/// One canonical frame per kind of message.
///
/// Changing these bytes means bumping PROTOCOL_VERSION: a pool and a worker of the same
/// version must agree on every byte.
#[test]
fn golden_frames() {
    let setup = ToWorker::Setup(Setup {
        name: "w-1".into(),
        settings: TaskSettings {
            output: OutputMode::Capture { limit: 300 },
            budget: Budget {
                timeout: Some(Duration::from_nanos(5)),
                fuel: None,
                max_memory: Some(1),
            },
            capabilities: Capabilities {
                dirs: vec![crate::sandbox::DirGrant {
                    host: "/h".into(),
                    guest: "/g".into(),
                    writable: true,
                }],
                env: vec![("A".into(), "b".into())],
                args: vec!["x".into()],
                network: false,
            },
            policy: InstancePolicy::Reuse { max_tasks: 2 },
            initializer: Some("i".into()),
        },
    });
    #[rustfmt::skip]
    assert_eq!(bytes(&setup), [
        39, 0, 0, 0, SETUP,
        4, 0, 0, 0,                       // version
        3, b'w', b'-', b'1',              // name
        3, 0xac, 0x02,                    // capture, limit 300
        1, 5, 0, 1, 1,                    // budget
        1, 2, b'/', b'h', 2, b'/', b'g', 1, // one dir grant
        1, 1, b'A', 1, b'b',              // env
        1, 1, b'x',                       // args
        0,                                // network
        1, 2,                             // reuse, 2 tasks
        1, 1, b'i',                       // initializer
    ]);
    let load = ToWorker::Load(Load {
        id: 4,
        config: RuntimeConfig {
            fuel: true,
            interruptible: false,
            max_wasm_stack: Some(128),
            pooling: Some(crate::runtime::PoolingConfig {
                instances: 2,
                memory_keep_resident: 0,
                table_keep_resident: 300,
            }),
        },
        origin: "x".into(),
        code: Arc::from(&b"abc"[..]),
    });
    #[rustfmt::skip]
    assert_eq!(bytes(&load), [
        17, 0, 0, 0, LOAD,
        4,                 // id
        1, 0, 1, 0x80, 1,  // fuel, not interruptible, stack 128
        1, 2, 0, 0xac, 0x02, // pool: 2 instances, 0 and 300 bytes kept resident
        1, b'x',           // origin
        b'a', b'b', b'c',  // code
    ]);
    let task = ToWorker::Task(RunTask {
        id: 9,
        component: 2,
        function: 5,
        budget: Budget::default(),
        argv: Some(Cow::Owned(vec!["p".into()])),
        args: Cow::Owned(vec![Val::U32(3), Val::String("a".into())]),
        rest: Vec::new(),
    });
    #[rustfmt::skip]
    assert_eq!(bytes(&task), [
        18, 0, 0, 0, TASK,
        9, 2, 5,           // id, component, function
        0, 0, 0,           // budget
        1, 1, 1, b'p',     // argv
        2, 8, 3, 13, 1, b'a', // args: u32 3, string "a"
        0,                 // no other calls
    ]);
    let chunk = ToWorker::Task(RunTask {
        id: 9,
        component: 2,
        function: 5,
        budget: Budget::default(),
        argv: None,
        args: Cow::Owned(vec![Val::U32(3)]),
        rest: vec![Cow::Owned(vec![Val::U32(4)]), Cow::Owned(vec![Val::U32(5)])],
    });
    #[rustfmt::skip]
    assert_eq!(bytes(&chunk), [
        18, 0, 0, 0, TASK,
        9, 2, 5,           // id, component, function
        0, 0, 0,           // budget
        0,                 // no argv
        1, 8, 3,           // args: u32 3
        2, 1, 8, 4, 1, 8, 5, // two other calls: (u32 4), (u32 5)
    ]);
    assert_eq!(
        bytes(&ToWorker::Abort(Abort { id: 5 })),
        [2, 0, 0, 0, ABORT, 5]
    );
    let output = FromWorker::Output(Output {
        stream: HostStream::Stderr,
        line: Cow::Borrowed(b"hi\n"),
    });
    assert_eq!(bytes(&output), [5, 0, 0, 0, OUTPUT, 2, b'h', b'i', b'\n']);
    let result = FromWorker::Result(TaskResult {
        id: 7,
        run: TaskRun {
            outcome: Err(TaskError::OutOfFuel { limit: 10 }),
            elapsed: Duration::from_nanos(1000),
            fuel_consumed: Some(77),
            peak_memory: 0,
            stdout: None,
            stderr: Some("e".into()),
            stdout_truncated: false,
            stderr_truncated: true,
        },
    });
    #[rustfmt::skip]
    assert_eq!(bytes(&result), [
        16, 0, 0, 0, RESULT,
        7,                // id
        1, 3, 10,         // error: out of fuel, limit 10
        0xe8, 0x07,       // elapsed 1000 ns
        1, 77, 0,         // fuel, peak memory
        0, 1, 1, b'e',    // stdout, stderr
        0, 1,             // stdout, stderr truncated
    ]);
    let ok = FromWorker::Result(TaskResult {
        id: 1,
        run: TaskRun {
            outcome: Ok(TaskValue::unit()),
            elapsed: Duration::ZERO,
            fuel_consumed: None,
            peak_memory: 0,
            stdout: None,
            stderr: None,
            stdout_truncated: false,
            stderr_truncated: false,
        },
    });
    assert_eq!(
        bytes(&ok),
        [11, 0, 0, 0, RESULT, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
}
