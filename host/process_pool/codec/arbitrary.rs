//! Arbitrary values of every codec type, from a small deterministic generator, and the
//! property checks built on them: `decode(encode(x)) == x`, the encoding is canonical, a
//! cut encoding fails to decode, and mangled bytes never panic. No dependency: the same
//! seeds give the same values on every run. Built for tests only.

use std::borrow::Cow;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Val;

use crate::error::TaskError;
use crate::output::{HostStream, OutputMode};
use crate::process_pool::messages::{
    Abort, FromWorker, Load, Output, RunTask, Setup, TaskResult, ToWorker,
};
use crate::run::TaskRun;
use crate::runtime::{PoolingConfig, RuntimeConfig};
use crate::sandbox::{Budget, Capabilities, DirGrant};
use crate::settings::{InstancePolicy, TaskSettings};
use crate::value::TaskValue;

use super::{Codec, from_bytes, to_bytes};

/// A deterministic generator (xorshift64*), biased towards edge cases.
pub(crate) struct Gen(u64);

impl Gen {
    pub(crate) fn new(seed: u64) -> Gen {
        // Never zero, and neighbouring seeds far apart.
        Gen(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(crate) fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    /// Often an edge (0, 1, 127, 128, MAX, MAX - 1), otherwise any size.
    pub(crate) fn int(&mut self) -> u64 {
        const EDGES: [u64; 6] = [0, 1, 127, 128, u64::MAX, u64::MAX - 1];
        match self.below(4) {
            0 => EDGES[self.below(EDGES.len() as u64) as usize],
            1 => self.below(300),
            2 => self.next() >> self.below(64),
            _ => self.next(),
        }
    }

    pub(crate) fn float_bits(&mut self) -> u64 {
        const EDGES: [f64; 6] = [0.0, -0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.5];
        if self.chance(2) {
            EDGES[self.below(EDGES.len() as u64) as usize].to_bits()
        } else {
            self.next()
        }
    }

    pub(crate) fn char(&mut self) -> char {
        const EDGES: [char; 6] = ['a', '\0', 'é', '🦀', '\u{10FFFF}', '\u{FFFD}'];
        if self.chance(2) {
            EDGES[self.below(EDGES.len() as u64) as usize]
        } else {
            char::from_u32(self.below(0x11_0000) as u32).unwrap_or('?')
        }
    }

    pub(crate) fn string(&mut self) -> String {
        let n = self.below(6);
        (0..n).map(|_| self.char()).collect()
    }

    /// Bytes, often not UTF-8.
    pub(crate) fn bytes(&mut self) -> Vec<u8> {
        let n = self.below(12);
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Up to three random edits of `bytes`: a byte changed, a cut, or a byte appended.
    pub(crate) fn mangle(&mut self, bytes: &mut Vec<u8>) {
        for _ in 0..self.below(4) {
            match self.below(3) {
                0 if !bytes.is_empty() => {
                    let i = self.below(bytes.len() as u64) as usize;
                    bytes[i] = self.next() as u8;
                }
                1 => bytes.truncate(self.below(bytes.len() as u64 + 1) as usize),
                _ => bytes.push(self.next() as u8),
            }
        }
    }

    /// A short length (0 to 3).
    fn len(&mut self) -> usize {
        self.below(4) as usize
    }
}

/// A type whose values [`Gen`] can make.
pub(crate) trait Arbitrary: Sized {
    fn arbitrary(g: &mut Gen) -> Self;
}

impl Arbitrary for bool {
    fn arbitrary(g: &mut Gen) -> Self {
        g.chance(2)
    }
}

impl Arbitrary for u64 {
    fn arbitrary(g: &mut Gen) -> Self {
        g.int()
    }
}

impl Arbitrary for usize {
    fn arbitrary(g: &mut Gen) -> Self {
        usize::try_from(g.int()).unwrap_or(usize::MAX)
    }
}

impl Arbitrary for String {
    fn arbitrary(g: &mut Gen) -> Self {
        g.string()
    }
}

impl Arbitrary for Duration {
    fn arbitrary(g: &mut Gen) -> Self {
        // Nanoseconds that fit in a u64: what the encoding carries exactly.
        Duration::from_nanos(g.int())
    }
}

impl Arbitrary for PathBuf {
    fn arbitrary(g: &mut Gen) -> Self {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(&g.bytes()))
    }
}

impl<T: Arbitrary> Arbitrary for Option<T> {
    fn arbitrary(g: &mut Gen) -> Self {
        g.chance(2).then(|| T::arbitrary(g))
    }
}

impl<T: Arbitrary> Arbitrary for Vec<T> {
    fn arbitrary(g: &mut Gen) -> Self {
        (0..g.len()).map(|_| T::arbitrary(g)).collect()
    }
}

impl<A: Arbitrary, B: Arbitrary> Arbitrary for (A, B) {
    fn arbitrary(g: &mut Gen) -> Self {
        (A::arbitrary(g), B::arbitrary(g))
    }
}

impl<T: Arbitrary, E: Arbitrary> Arbitrary for Result<T, E> {
    fn arbitrary(g: &mut Gen) -> Self {
        if g.chance(2) {
            Ok(T::arbitrary(g))
        } else {
            Err(E::arbitrary(g))
        }
    }
}

/// The deepest value made (the codec allows more; deep values are tested on their own).
const DEPTH: u64 = 8;

fn val_at(g: &mut Gen, depth: u64) -> Val {
    let leaf = depth >= DEPTH;
    let boxed = |g: &mut Gen| Box::new(val_at(g, depth + 1));
    let opt = |g: &mut Gen| g.chance(2).then(|| Box::new(val_at(g, depth + 1)));
    let seq = |g: &mut Gen| (0..g.len()).map(|_| val_at(g, depth + 1)).collect();
    // Kinds 0..14 have no children; a leaf picks only among those.
    match g.below(if leaf { 14 } else { 25 }) {
        0 => Val::Bool(g.chance(2)),
        1 => Val::S8(g.next() as i8),
        2 => Val::S16(g.next() as i16),
        3 => Val::S32(g.next() as i32),
        4 => Val::S64(g.int() as i64),
        5 => Val::U8(g.next() as u8),
        6 => Val::U16(g.next() as u16),
        7 => Val::U32(g.int() as u32),
        8 => Val::U64(g.int()),
        9 => Val::Float32(f32::from_bits(g.float_bits() as u32)),
        10 => Val::Float64(f64::from_bits(g.float_bits())),
        11 => Val::Char(g.char()),
        12 => Val::String(g.string()),
        13 => Val::Enum(g.string()),
        14 => Val::List(seq(g)),
        15 => Val::Tuple(seq(g)),
        16 => Val::FixedLengthList(seq(g)),
        17 => Val::Record(
            (0..g.len())
                .map(|_| (g.string(), val_at(g, depth + 1)))
                .collect(),
        ),
        18 => Val::Variant(g.string(), opt(g)),
        19 => Val::Option(opt(g)),
        20 => Val::Result(Ok(opt(g))),
        21 => Val::Result(Err(Some(boxed(g)))),
        22 => Val::Flags((0..g.len()).map(|_| g.string()).collect()),
        23 => Val::Map(
            (0..g.len())
                .map(|_| (val_at(g, depth + 1), val_at(g, depth + 1)))
                .collect(),
        ),
        _ => Val::Result(Err(None)),
    }
}

impl Arbitrary for Val {
    fn arbitrary(g: &mut Gen) -> Self {
        val_at(g, 0)
    }
}

/// An option value, or now and then a chunk's outcomes (whose values are option values).
impl Arbitrary for TaskValue {
    fn arbitrary(g: &mut Gen) -> Self {
        if g.below(8) > 0 {
            return TaskValue::from(Option::<Val>::arbitrary(g));
        }
        let outcomes = (0..g.below(5))
            .map(|_| Result::<Option<Val>, TaskError>::arbitrary(g).map(TaskValue::from))
            .collect();
        TaskValue::chunk(outcomes)
    }
}

impl Arbitrary for Budget {
    fn arbitrary(g: &mut Gen) -> Self {
        Budget {
            timeout: Arbitrary::arbitrary(g),
            fuel: Arbitrary::arbitrary(g),
            max_memory: Arbitrary::arbitrary(g),
        }
    }
}

impl Arbitrary for DirGrant {
    fn arbitrary(g: &mut Gen) -> Self {
        DirGrant {
            host: Arbitrary::arbitrary(g),
            guest: Arbitrary::arbitrary(g),
            writable: Arbitrary::arbitrary(g),
        }
    }
}

impl Arbitrary for Capabilities {
    fn arbitrary(g: &mut Gen) -> Self {
        Capabilities {
            dirs: Arbitrary::arbitrary(g),
            env: Arbitrary::arbitrary(g),
            args: Arbitrary::arbitrary(g),
            network: Arbitrary::arbitrary(g),
        }
    }
}

impl Arbitrary for OutputMode {
    fn arbitrary(g: &mut Gen) -> Self {
        match g.below(4) {
            0 => OutputMode::Prefixed,
            1 => OutputMode::Plain,
            2 => OutputMode::Discard,
            _ => OutputMode::Capture {
                limit: Arbitrary::arbitrary(g),
            },
        }
    }
}

impl Arbitrary for InstancePolicy {
    fn arbitrary(g: &mut Gen) -> Self {
        if g.chance(2) {
            InstancePolicy::Fresh
        } else {
            InstancePolicy::Reuse {
                max_tasks: Arbitrary::arbitrary(g),
            }
        }
    }
}

impl Arbitrary for TaskSettings {
    fn arbitrary(g: &mut Gen) -> Self {
        TaskSettings {
            output: Arbitrary::arbitrary(g),
            budget: Arbitrary::arbitrary(g),
            capabilities: Arbitrary::arbitrary(g),
            policy: Arbitrary::arbitrary(g),
            initializer: Arbitrary::arbitrary(g),
        }
    }
}

impl Arbitrary for RuntimeConfig {
    fn arbitrary(g: &mut Gen) -> Self {
        RuntimeConfig {
            fuel: Arbitrary::arbitrary(g),
            interruptible: Arbitrary::arbitrary(g),
            max_wasm_stack: Arbitrary::arbitrary(g),
            pooling: Arbitrary::arbitrary(g),
        }
    }
}

impl Arbitrary for PoolingConfig {
    fn arbitrary(g: &mut Gen) -> Self {
        PoolingConfig {
            instances: u32::try_from(g.int()).unwrap_or(u32::MAX),
            memory_keep_resident: Arbitrary::arbitrary(g),
            table_keep_resident: Arbitrary::arbitrary(g),
        }
    }
}

impl Arbitrary for TaskError {
    fn arbitrary(g: &mut Gen) -> Self {
        let s = |g: &mut Gen| g.string();
        match g.below(17) {
            0 => TaskError::Failed {
                message: s(g),
                value: s(g),
            },
            1 => TaskError::Trap {
                trap: s(g),
                panic: Arbitrary::arbitrary(g),
                backtrace: s(g),
            },
            2 => TaskError::Timeout {
                limit: Arbitrary::arbitrary(g),
            },
            3 => TaskError::OutOfFuel { limit: g.int() },
            4 => TaskError::MemoryLimit { limit: g.int() },
            5 => TaskError::StackOverflow { backtrace: s(g) },
            6 => TaskError::Cancelled,
            7 => TaskError::BrokenPool { reason: s(g) },
            8 => TaskError::Start { message: s(g) },
            9 => TaskError::Panic {
                worker: s(g),
                message: s(g),
            },
            10 => TaskError::FuelNotEnabled,
            11 => TaskError::NoInstanceSlot { message: s(g) },
            12 => TaskError::Unreturnable { message: s(g) },
            13 => TaskError::ComponentUnavailable { message: s(g) },
            14 => TaskError::Incompatible { message: s(g) },
            15 => TaskError::Refused { message: s(g) },
            _ => TaskError::QueueTimeout {
                limit: Arbitrary::arbitrary(g),
            },
        }
    }
}

/// No wildcard: a new kind of task error is a compile error here until the generator
/// (and the codec) make it.
fn _covers(e: &TaskError) {
    match e {
        TaskError::Failed { .. }
        | TaskError::Trap { .. }
        | TaskError::Timeout { .. }
        | TaskError::OutOfFuel { .. }
        | TaskError::MemoryLimit { .. }
        | TaskError::StackOverflow { .. }
        | TaskError::Cancelled
        | TaskError::BrokenPool { .. }
        | TaskError::Start { .. }
        | TaskError::Panic { .. }
        | TaskError::FuelNotEnabled
        | TaskError::NoInstanceSlot { .. }
        | TaskError::Unreturnable { .. }
        | TaskError::ComponentUnavailable { .. }
        | TaskError::Incompatible { .. }
        | TaskError::Refused { .. }
        | TaskError::QueueTimeout { .. } => {}
    }
}

impl Arbitrary for HostStream {
    fn arbitrary(g: &mut Gen) -> Self {
        if g.chance(2) {
            HostStream::Stdout
        } else {
            HostStream::Stderr
        }
    }
}

impl Arbitrary for TaskRun {
    fn arbitrary(g: &mut Gen) -> Self {
        TaskRun {
            outcome: Arbitrary::arbitrary(g),
            elapsed: Arbitrary::arbitrary(g),
            fuel_consumed: Arbitrary::arbitrary(g),
            peak_memory: Arbitrary::arbitrary(g),
            stdout: Arbitrary::arbitrary(g),
            stderr: Arbitrary::arbitrary(g),
            stdout_truncated: Arbitrary::arbitrary(g),
            stderr_truncated: Arbitrary::arbitrary(g),
        }
    }
}

impl Arbitrary for Setup {
    fn arbitrary(g: &mut Gen) -> Self {
        Setup {
            name: Arbitrary::arbitrary(g),
            settings: Arbitrary::arbitrary(g),
        }
    }
}

impl Arbitrary for Load {
    fn arbitrary(g: &mut Gen) -> Self {
        Load {
            id: Arbitrary::arbitrary(g),
            config: Arbitrary::arbitrary(g),
            origin: Arbitrary::arbitrary(g),
            code: Arc::from(g.bytes()),
        }
    }
}

impl Arbitrary for RunTask<'static> {
    fn arbitrary(g: &mut Gen) -> Self {
        RunTask {
            id: Arbitrary::arbitrary(g),
            component: Arbitrary::arbitrary(g),
            function: Arbitrary::arbitrary(g),
            budget: Arbitrary::arbitrary(g),
            argv: Option::<Vec<String>>::arbitrary(g).map(Cow::Owned),
            args: Cow::Owned(Arbitrary::arbitrary(g)),
            rest: if g.below(4) == 0 {
                Vec::<Vec<Val>>::arbitrary(g)
                    .into_iter()
                    .map(Cow::Owned)
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

impl Arbitrary for Abort {
    fn arbitrary(g: &mut Gen) -> Self {
        Abort {
            id: Arbitrary::arbitrary(g),
        }
    }
}

impl Arbitrary for Output<'static> {
    fn arbitrary(g: &mut Gen) -> Self {
        Output {
            stream: Arbitrary::arbitrary(g),
            line: Cow::Owned(g.bytes()),
        }
    }
}

impl Arbitrary for TaskResult {
    fn arbitrary(g: &mut Gen) -> Self {
        TaskResult {
            id: Arbitrary::arbitrary(g),
            run: Arbitrary::arbitrary(g),
        }
    }
}

impl Arbitrary for ToWorker<'static> {
    fn arbitrary(g: &mut Gen) -> Self {
        match g.below(4) {
            0 => ToWorker::Setup(Arbitrary::arbitrary(g)),
            1 => ToWorker::Load(Arbitrary::arbitrary(g)),
            2 => ToWorker::Task(Arbitrary::arbitrary(g)),
            _ => ToWorker::Abort(Arbitrary::arbitrary(g)),
        }
    }
}

impl Arbitrary for FromWorker<'static> {
    fn arbitrary(g: &mut Gen) -> Self {
        if g.chance(2) {
            FromWorker::Output(Arbitrary::arbitrary(g))
        } else {
            FromWorker::Result(Arbitrary::arbitrary(g))
        }
    }
}

/// The `case`-th arbitrary `T`.
pub(crate) fn nth<T: Arbitrary>(case: usize) -> T {
    T::arbitrary(&mut Gen::new(case as u64))
}

/// For `cases` arbitrary values: decoding the encoding gives the value back, re-encoding
/// that gives the same bytes, and (for encodings under 512 bytes) every strict prefix
/// fails to decode.
pub(crate) fn assert_round_trips<T: Codec + Arbitrary + PartialEq + Debug>(cases: usize) {
    check_round_trips::<T>(cases, true);
}

/// [`assert_round_trips`] for a type whose last field runs to the end of the input (a
/// prefix of its encoding is a shorter value, not an error).
pub(crate) fn assert_round_trips_open<T: Codec + Arbitrary + PartialEq + Debug>(cases: usize) {
    check_round_trips::<T>(cases, false);
}

fn check_round_trips<T: Codec + Arbitrary + PartialEq + Debug>(cases: usize, prefixes: bool) {
    for case in 0..cases {
        let x: T = nth(case);
        let bytes = to_bytes(&x).unwrap_or_else(|e| panic!("case {case}: {x:?}: {e}"));
        let back: T = from_bytes(&bytes).unwrap_or_else(|e| panic!("case {case}: {x:?}: {e}"));
        assert_eq!(back, x, "case {case}");
        assert_eq!(
            to_bytes(&back).ok(),
            Some(bytes.clone()),
            "case {case}: not canonical"
        );
        if prefixes && bytes.len() < 512 {
            for cut in 0..bytes.len() {
                assert!(
                    from_bytes::<T>(&bytes[..cut]).is_err(),
                    "case {case}: the prefix of {cut} bytes of {x:?} decodes"
                );
            }
        }
    }
}

/// Feeds mangled encodings (bytes changed, cut, extended) and noise to `T`'s decoder:
/// it must fail or succeed, never panic.
pub(crate) fn assert_never_panics<T: Codec + Arbitrary>(cases: usize) {
    let mut g = Gen::new(0xdec0de);
    for case in 0..cases {
        let mut bytes = if case % 4 == 3 {
            g.bytes()
        } else {
            to_bytes(&nth::<T>(case)).unwrap_or_default()
        };
        g.mangle(&mut bytes);
        let _ = from_bytes::<T>(&bytes);
    }
}
