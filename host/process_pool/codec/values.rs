//! The encoding of component values ([`Val`]) as self-describing tag + payload, and of a
//! task's value ([`TaskValue`], an option value).
//!
//! Values nest at most [`MAX_DEPTH`] levels, both ways; a value that cannot leave the
//! process (a resource or another handle) fails to encode.
//!
//! Value encoding (one tag byte, then the payload):
//!
//! | tag | value | payload |
//! |-----|-------|---------|
//! | 0/1 | `bool` false/true | — |
//! | 2, 3, 4, 5 | `s8`, `s16`, `s32`, `s64` | zigzag LEB128 |
//! | 6, 7, 8, 9 | `u8`, `u16`, `u32`, `u64` | LEB128 |
//! | 10, 11 | `f32`, `f64` | IEEE bits, little-endian, 4 or 8 bytes |
//! | 12 | `char` | LEB128 scalar value |
//! | 13 | `string` | LEB128 length, UTF-8 bytes |
//! | 14, 15, 16 | `list`, `tuple`, fixed-length list | LEB128 count, values |
//! | 17 | `record` | LEB128 count, (name string, value) pairs |
//! | 18 | `variant` | name string, option value |
//! | 19 | `enum` | name string |
//! | 20 | `option` | option value |
//! | 21, 22 | `result` ok / err | option value |
//! | 23 | `flags` | LEB128 count, name strings |
//! | 24 | `map` | LEB128 count, (key value, value) pairs |
//!
//! An *option value* is a byte 0 (none) or 1 followed by a value. A task's value is an
//! option value, or, for the one task a process pool's chunked map makes of a chunk, the
//! byte 2, a LEB128 count and that many outcomes (`Result<TaskValue, TaskError>`, whose
//! values are option values: chunks do not nest).

use wasmtime::component::Val;

use crate::error::{ProtocolError, TaskError};
use crate::value::TaskValue;

use super::{Codec, Put, Reader, bounded_vec, malformed};

/// The deepest nesting of values accepted (the component model's own type-depth limit is
/// lower, so no real value comes close).
pub(crate) const MAX_DEPTH: usize = 128;

const BOOL_FALSE: u8 = 0;
const BOOL_TRUE: u8 = 1;
const S8: u8 = 2;
const S16: u8 = 3;
const S32: u8 = 4;
const S64: u8 = 5;
const U8: u8 = 6;
const U16: u8 = 7;
const U32: u8 = 8;
const U64: u8 = 9;
const F32: u8 = 10;
const F64: u8 = 11;
const CHAR: u8 = 12;
const STRING: u8 = 13;
const LIST: u8 = 14;
const TUPLE: u8 = 15;
const FIXED_LIST: u8 = 16;
const RECORD: u8 = 17;
const VARIANT: u8 = 18;
const ENUM: u8 = 19;
const OPTION: u8 = 20;
const RESULT_OK: u8 = 21;
const RESULT_ERR: u8 = 22;
const FLAGS: u8 = 23;
const MAP: u8 = 24;

impl Codec for Val {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        put_val_at(out, self, 0)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        read_val_at(r, 0)
    }
}

/// The tag of a chunk's outcomes, where an option value has 0 or 1.
const CHUNK: u8 = 2;

/// An option value (the unit value is none), or a chunk's outcomes.
impl Codec for TaskValue {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let Some(outcomes) = self.as_chunk() else {
            return put_opt_val(out, self.val(), 0);
        };
        out.put_u8(CHUNK);
        out.put_len(outcomes.len());
        for outcome in outcomes {
            if let Ok(value) = outcome
                && value.as_chunk().is_some()
            {
                return Err(ProtocolError::Unsendable("a chunk inside a chunk"));
            }
            outcome.encode(out)?;
        }
        Ok(())
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        match r.u8("task value")? {
            CHUNK => {
                let n = r.count(<Result<Plain, TaskError>>::MIN_SIZE, "chunk")?;
                let mut outcomes = bounded_vec(n);
                for _ in 0..n {
                    let outcome = r.read::<Result<Plain, TaskError>>("chunk outcome")?;
                    outcomes.push(outcome.map(|plain| plain.0));
                }
                Ok(TaskValue::chunk(outcomes))
            }
            flag => plain_value(r, flag),
        }
    }
}

/// A task's value that is not a chunk's: an option value.
struct Plain(TaskValue);

impl Codec for Plain {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        put_opt_val(out, self.0.val(), 0)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let flag = r.u8("option flag")?;
        plain_value(r, flag).map(Plain)
    }
}

/// The rest of an option value whose flag byte was `flag`.
fn plain_value(r: &mut Reader<'_>, flag: u8) -> Result<TaskValue, ProtocolError> {
    match flag {
        0 => Ok(TaskValue::unit()),
        1 => read_val_at(r, 0).map(TaskValue::from),
        b => Err(malformed(format!("{b} is not a task value"))),
    }
}

fn put_val_at(out: &mut Vec<u8>, v: &Val, depth: usize) -> Result<(), ProtocolError> {
    if depth >= MAX_DEPTH {
        return Err(ProtocolError::TooDeep(MAX_DEPTH));
    }
    let depth = depth + 1;
    match v {
        Val::Bool(b) => out.put_u8(if *b { BOOL_TRUE } else { BOOL_FALSE }),
        Val::S8(x) => signed(out, S8, (*x).into()),
        Val::S16(x) => signed(out, S16, (*x).into()),
        Val::S32(x) => signed(out, S32, (*x).into()),
        Val::S64(x) => signed(out, S64, *x),
        Val::U8(x) => unsigned(out, U8, (*x).into()),
        Val::U16(x) => unsigned(out, U16, (*x).into()),
        Val::U32(x) => unsigned(out, U32, (*x).into()),
        Val::U64(x) => unsigned(out, U64, *x),
        Val::Float32(x) => {
            out.put_u8(F32);
            out.put_bytes(&x.to_bits().to_le_bytes());
        }
        Val::Float64(x) => {
            out.put_u8(F64);
            out.put_bytes(&x.to_bits().to_le_bytes());
        }
        Val::Char(c) => unsigned(out, CHAR, u64::from(*c)),
        Val::String(s) => {
            out.put_u8(STRING);
            out.put_str(s);
        }
        Val::List(items) => put_seq(out, LIST, items, depth)?,
        Val::Tuple(items) => put_seq(out, TUPLE, items, depth)?,
        Val::FixedLengthList(items) => put_seq(out, FIXED_LIST, items, depth)?,
        Val::Record(fields) => {
            out.put_u8(RECORD);
            out.put_len(fields.len());
            for (name, value) in fields {
                out.put_str(name);
                put_val_at(out, value, depth)?;
            }
        }
        Val::Variant(case, payload) => {
            out.put_u8(VARIANT);
            out.put_str(case);
            put_opt_val(out, payload.as_deref(), depth)?;
        }
        Val::Enum(case) => {
            out.put_u8(ENUM);
            out.put_str(case);
        }
        Val::Option(v) => {
            out.put_u8(OPTION);
            put_opt_val(out, v.as_deref(), depth)?;
        }
        Val::Result(Ok(v)) => {
            out.put_u8(RESULT_OK);
            put_opt_val(out, v.as_deref(), depth)?;
        }
        Val::Result(Err(v)) => {
            out.put_u8(RESULT_ERR);
            put_opt_val(out, v.as_deref(), depth)?;
        }
        Val::Flags(names) => {
            out.put_u8(FLAGS);
            out.put_len(names.len());
            for name in names {
                out.put_str(name);
            }
        }
        Val::Map(pairs) => {
            out.put_u8(MAP);
            out.put_len(pairs.len());
            for (key, value) in pairs {
                put_val_at(out, key, depth)?;
                put_val_at(out, value, depth)?;
            }
        }
        Val::Resource(_) => return Err(ProtocolError::Unsendable("a resource handle")),
        Val::Future(_) => return Err(ProtocolError::Unsendable("a future handle")),
        Val::Stream(_) => return Err(ProtocolError::Unsendable("a stream handle")),
        Val::ErrorContext(_) => return Err(ProtocolError::Unsendable("an error-context")),
    }
    Ok(())
}

fn signed(out: &mut Vec<u8>, tag: u8, v: i64) {
    out.put_u8(tag);
    out.put_sleb(v);
}

fn unsigned(out: &mut Vec<u8>, tag: u8, v: u64) {
    out.put_u8(tag);
    out.put_uleb(v);
}

fn put_seq(out: &mut Vec<u8>, tag: u8, items: &[Val], depth: usize) -> Result<(), ProtocolError> {
    out.put_u8(tag);
    out.put_len(items.len());
    items.iter().try_for_each(|v| put_val_at(out, v, depth))
}

fn put_opt_val(out: &mut Vec<u8>, v: Option<&Val>, depth: usize) -> Result<(), ProtocolError> {
    match v {
        None => out.put_u8(0),
        Some(v) => {
            out.put_u8(1);
            put_val_at(out, v, depth)?;
        }
    }
    Ok(())
}

fn read_opt_at(r: &mut Reader<'_>, depth: usize) -> Result<Option<Box<Val>>, ProtocolError> {
    Ok(if r.read::<bool>("option flag")? {
        Some(Box::new(read_val_at(r, depth)?))
    } else {
        None
    })
}

fn read_val_at(r: &mut Reader<'_>, depth: usize) -> Result<Val, ProtocolError> {
    if depth >= MAX_DEPTH {
        return Err(ProtocolError::TooDeep(MAX_DEPTH));
    }
    let depth = depth + 1;
    let narrow = |what: &str, e: std::num::TryFromIntError| malformed(format!("{what}: {e}"));
    Ok(match r.u8("value tag")? {
        BOOL_FALSE => Val::Bool(false),
        BOOL_TRUE => Val::Bool(true),
        S8 => Val::S8(r.sleb("s8")?.try_into().map_err(|e| narrow("s8", e))?),
        S16 => Val::S16(r.sleb("s16")?.try_into().map_err(|e| narrow("s16", e))?),
        S32 => Val::S32(r.sleb("s32")?.try_into().map_err(|e| narrow("s32", e))?),
        S64 => Val::S64(r.sleb("s64")?),
        U8 => Val::U8(r.uleb("u8")?.try_into().map_err(|e| narrow("u8", e))?),
        U16 => Val::U16(r.uleb("u16")?.try_into().map_err(|e| narrow("u16", e))?),
        U32 => Val::U32(r.uleb("u32")?.try_into().map_err(|e| narrow("u32", e))?),
        U64 => Val::U64(r.uleb("u64")?),
        F32 => {
            let b = r.bytes(4, "f32")?;
            Val::Float32(f32::from_bits(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        }
        F64 => {
            let b = r.bytes(8, "f64")?;
            let mut bits = [0u8; 8];
            bits.copy_from_slice(b);
            Val::Float64(f64::from_bits(u64::from_le_bytes(bits)))
        }
        CHAR => {
            let n = r.uleb("char")?;
            let c = u32::try_from(n).ok().and_then(char::from_u32);
            Val::Char(c.ok_or_else(|| malformed(format!("char: {n:#x} is not a scalar value")))?)
        }
        STRING => Val::String(r.str("string").map(str::to_string)?),
        LIST => Val::List(read_seq(r, depth)?),
        TUPLE => Val::Tuple(read_seq(r, depth)?),
        FIXED_LIST => Val::FixedLengthList(read_seq(r, depth)?),
        RECORD => {
            // A field is at least a 1-byte name length and a 1-byte value.
            let n = r.count(2, "record")?;
            let mut fields = bounded_vec(n);
            for _ in 0..n {
                let name = r.str("field name").map(str::to_string)?;
                fields.push((name, read_val_at(r, depth)?));
            }
            Val::Record(fields)
        }
        VARIANT => {
            let case = r.str("variant case").map(str::to_string)?;
            Val::Variant(case, read_opt_at(r, depth)?)
        }
        ENUM => Val::Enum(r.str("enum case").map(str::to_string)?),
        OPTION => Val::Option(read_opt_at(r, depth)?),
        RESULT_OK => Val::Result(Ok(read_opt_at(r, depth)?)),
        RESULT_ERR => Val::Result(Err(read_opt_at(r, depth)?)),
        FLAGS => {
            let n = r.count(1, "flags")?;
            let mut names = bounded_vec(n);
            for _ in 0..n {
                names.push(r.str("flag name").map(str::to_string)?);
            }
            Val::Flags(names)
        }
        MAP => {
            let n = r.count(2, "map")?;
            let mut pairs = bounded_vec(n);
            for _ in 0..n {
                let key = read_val_at(r, depth)?;
                pairs.push((key, read_val_at(r, depth)?));
            }
            Val::Map(pairs)
        }
        tag => return Err(malformed(format!("unknown value tag {tag}"))),
    })
}

fn read_seq(r: &mut Reader<'_>, depth: usize) -> Result<Vec<Val>, ProtocolError> {
    let n = r.count(1, "list")?;
    let mut items = bounded_vec(n);
    for _ in 0..n {
        items.push(read_val_at(r, depth)?);
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::super::arbitrary::{assert_never_panics, assert_round_trips};
    use super::super::{from_bytes, to_bytes};
    use super::*;

    fn every_kind() -> Val {
        Val::Tuple(vec![
            Val::Bool(true),
            Val::Bool(false),
            Val::S8(-128),
            Val::S16(i16::MIN),
            Val::S32(-1),
            Val::S64(i64::MIN),
            Val::U8(255),
            Val::U16(u16::MAX),
            Val::U32(u32::MAX),
            Val::U64(u64::MAX),
            Val::Float32(-0.5),
            Val::Float64(f64::MAX),
            Val::Char('🦀'),
            Val::String("hello, wörld".into()),
            Val::List(vec![Val::U32(1), Val::U32(2)]),
            Val::FixedLengthList(vec![Val::U8(7)]),
            Val::Record(vec![("x".into(), Val::S32(3)), ("y".into(), Val::S32(-4))]),
            Val::Variant("circle".into(), Some(Box::new(Val::Float64(1.5)))),
            Val::Variant("empty".into(), None),
            Val::Enum("green".into()),
            Val::Option(None),
            Val::Option(Some(Box::new(Val::String(String::new())))),
            Val::Result(Ok(None)),
            Val::Result(Err(Some(Box::new(Val::String("no".into()))))),
            Val::Flags(vec!["read".into(), "exec".into()]),
            Val::Map(vec![(Val::String("k".into()), Val::U64(9))]),
        ])
    }

    fn encode(v: &Val) -> Vec<u8> {
        to_bytes(v).expect("encodes")
    }

    fn decode(bytes: &[u8]) -> Result<Val, ProtocolError> {
        from_bytes(bytes)
    }

    #[test]
    fn every_kind_of_value_round_trips() {
        let v = every_kind();
        assert_eq!(decode(&encode(&v)).unwrap(), v);
    }

    #[test]
    fn nan_bits_survive() {
        let v = Val::Float64(f64::from_bits(0x7ff8_dead_beef_0001));
        match decode(&encode(&v)).unwrap() {
            Val::Float64(x) => assert_eq!(x.to_bits(), 0x7ff8_dead_beef_0001),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn small_values_are_small() {
        assert_eq!(encode(&Val::U32(5)), [U32, 5]);
        assert_eq!(encode(&Val::S32(-1)), [S32, 1]);
        assert_eq!(encode(&Val::Bool(true)), [BOOL_TRUE]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode(&every_kind());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn chunks_do_not_nest() {
        let inner = TaskValue::chunk(vec![Ok(TaskValue::unit())]);
        let outer = TaskValue::chunk(vec![Ok(TaskValue::from(Val::U8(1))), Ok(inner)]);
        assert!(matches!(
            to_bytes(&outer),
            Err(ProtocolError::Unsendable(_))
        ));
        // Written by hand: a chunk of one outcome, ok, whose value is a chunk again.
        let err = from_bytes::<TaskValue>(&[CHUNK, 1, 0, CHUNK, 0]).unwrap_err();
        assert!(err.to_string().contains("2 is not a task value"), "{err}");
        let flat = TaskValue::chunk(vec![
            Ok(TaskValue::from(Val::U8(1))),
            Err(TaskError::Cancelled),
        ]);
        assert_eq!(
            from_bytes::<TaskValue>(&to_bytes(&flat).unwrap()).unwrap(),
            flat
        );
    }

    #[test]
    fn random_and_mutated_bytes_never_panic() {
        assert_never_panics::<Val>(20_000);
        assert_never_panics::<TaskValue>(5_000);
    }

    #[test]
    fn arbitrary_values_round_trip() {
        assert_round_trips::<Val>(5_000);
        assert_round_trips::<TaskValue>(2_000);
    }

    #[test]
    fn lying_counts_fail_without_allocating() {
        let mut bytes = vec![LIST];
        bytes.put_uleb(u64::MAX >> 1);
        assert!(matches!(decode(&bytes), Err(ProtocolError::Malformed(_))));
        let mut bytes = vec![STRING];
        bytes.put_uleb(1 << 40);
        assert!(matches!(decode(&bytes), Err(ProtocolError::Malformed(_))));
    }

    #[test]
    fn deep_nesting_is_refused_both_ways() {
        let mut bytes = [OPTION, 1].repeat(MAX_DEPTH + 10);
        bytes.push(BOOL_TRUE);
        assert_eq!(decode(&bytes), Err(ProtocolError::TooDeep(MAX_DEPTH)));
        let mut v = Val::Bool(true);
        for _ in 0..MAX_DEPTH + 1 {
            v = Val::Option(Some(Box::new(v)));
        }
        assert_eq!(to_bytes(&v), Err(ProtocolError::TooDeep(MAX_DEPTH)));
    }

    #[test]
    fn bad_scalars_are_malformed() {
        assert!(decode(&[CHAR, 0x80, 0xb0, 0x03]).is_err()); // U+D800, a surrogate
        assert!(decode(&[U8, 0x80, 0x02]).is_err()); // 256 in a u8
        assert!(decode(&[STRING, 2, 0xff, 0xfe]).is_err()); // not UTF-8
        assert!(decode(&[99]).is_err());
        let overlong = [
            U64, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ];
        assert!(decode(&overlong).is_err());
    }
}
