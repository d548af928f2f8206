//! The byte-level encoding under the worker protocol: LEB128 integers, length-prefixed
//! strings, and component values ([`Val`]) as self-describing tag + payload.
//!
//! Decoding never trusts a length: every count is checked against the bytes that remain
//! before anything is allocated, values nest at most [`MAX_DEPTH`] levels, and every failure
//! is a [`ProtocolError`], never a panic.
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
//! An *option value* is a byte 0 (none) or 1 followed by a value.

use wasmtime::component::Val;

use crate::error::ProtocolError;

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

/// Appends encoded data to a byte buffer.
pub(crate) trait Put {
    fn put_u8(&mut self, b: u8);
    fn put_uleb(&mut self, v: u64);
    fn put_bytes(&mut self, b: &[u8]);

    fn put_sleb(&mut self, v: i64) {
        // Zigzag: small magnitudes of either sign stay short.
        self.put_uleb(((v << 1) ^ (v >> 63)) as u64);
    }

    fn put_len(&mut self, n: usize) {
        self.put_uleb(n as u64);
    }

    fn put_str(&mut self, s: &str) {
        self.put_len(s.len());
        self.put_bytes(s.as_bytes());
    }

    fn put_bool(&mut self, b: bool) {
        self.put_u8(u8::from(b));
    }

    fn put_opt_uleb(&mut self, v: Option<u64>) {
        match v {
            None => self.put_u8(0),
            Some(v) => {
                self.put_u8(1);
                self.put_uleb(v);
            }
        }
    }

    fn put_opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.put_u8(0),
            Some(s) => {
                self.put_u8(1);
                self.put_str(s);
            }
        }
    }
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, b: u8) {
        self.push(b);
    }

    fn put_uleb(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.push(byte);
                return;
            }
            self.push(byte | 0x80);
        }
    }

    fn put_bytes(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

/// Reads encoded data from a frame's payload, checking every length.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails unless everything was read (a frame with trailing bytes is malformed).
    pub(crate) fn finish(&self, what: &str) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(malformed(format!(
                "{} unexpected trailing bytes after {what}",
                self.buf.len()
            )))
        }
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], ProtocolError> {
        if n > self.buf.len() {
            return Err(malformed(format!(
                "{what} needs {n} bytes, only {} remain",
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, ProtocolError> {
        Ok(self.bytes(1, what)?[0])
    }

    pub(crate) fn bool(&mut self, what: &str) -> Result<bool, ProtocolError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(malformed(format!("{what}: {b} is not a boolean"))),
        }
    }

    pub(crate) fn u32_le(&mut self, what: &str) -> Result<u32, ProtocolError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn uleb(&mut self, what: &str) -> Result<u64, ProtocolError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = self.u8(what)?;
            let bits = u64::from(byte & 0x7f);
            if i == 9 && bits > 1 {
                break;
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed(format!("{what}: integer overflows 64 bits")))
    }

    pub(crate) fn sleb(&mut self, what: &str) -> Result<i64, ProtocolError> {
        let z = self.uleb(what)?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// A count of items that each take at least `min_size` bytes: checked against what
    /// remains, so a lying count fails here instead of allocating.
    pub(crate) fn count(&mut self, min_size: usize, what: &str) -> Result<usize, ProtocolError> {
        let n = self.uleb(what)?;
        let most = self.remaining() / min_size.max(1);
        match usize::try_from(n) {
            Ok(n) if n <= most => Ok(n),
            _ => Err(malformed(format!(
                "{what}: {n} items cannot fit in the {} bytes that remain",
                self.remaining()
            ))),
        }
    }

    pub(crate) fn str(&mut self, what: &str) -> Result<&'a str, ProtocolError> {
        let n = self.count(1, what)?;
        let bytes = self.bytes(n, what)?;
        std::str::from_utf8(bytes).map_err(|e| malformed(format!("{what}: {e}")))
    }

    pub(crate) fn string(&mut self, what: &str) -> Result<String, ProtocolError> {
        self.str(what).map(str::to_string)
    }

    pub(crate) fn opt_uleb(&mut self, what: &str) -> Result<Option<u64>, ProtocolError> {
        Ok(if self.bool(what)? {
            Some(self.uleb(what)?)
        } else {
            None
        })
    }

    pub(crate) fn opt_string(&mut self, what: &str) -> Result<Option<String>, ProtocolError> {
        Ok(if self.bool(what)? {
            Some(self.string(what)?)
        } else {
            None
        })
    }
}

pub(crate) fn malformed(message: String) -> ProtocolError {
    ProtocolError::Malformed(message)
}

/// Appends `v`. Fails on values that cannot leave this process (resources and other
/// handles); the buffer then holds a partial value and must be dropped.
pub(crate) fn put_val(out: &mut Vec<u8>, v: &Val) -> Result<(), ProtocolError> {
    put_val_at(out, v, 0)
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

pub(crate) fn put_opt_val(
    out: &mut Vec<u8>,
    v: Option<&Val>,
    depth: usize,
) -> Result<(), ProtocolError> {
    match v {
        None => out.put_u8(0),
        Some(v) => {
            out.put_u8(1);
            put_val_at(out, v, depth)?;
        }
    }
    Ok(())
}

/// Reads one value.
pub(crate) fn read_val(r: &mut Reader<'_>) -> Result<Val, ProtocolError> {
    read_val_at(r, 0)
}

/// Reads an option value (a byte 0, or 1 and a value).
pub(crate) fn read_opt_val(r: &mut Reader<'_>) -> Result<Option<Val>, ProtocolError> {
    read_opt_at(r, 0).map(|v| v.map(|b| *b))
}

fn read_opt_at(r: &mut Reader<'_>, depth: usize) -> Result<Option<Box<Val>>, ProtocolError> {
    Ok(if r.bool("option flag")? {
        Some(Box::new(read_val_at(r, depth)?))
    } else {
        None
    })
}

/// Items are read into a vector that grows as they arrive: a count is only a bound.
fn bounded_vec<T>(n: usize) -> Vec<T> {
    Vec::with_capacity(n.min(1024))
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
        STRING => Val::String(r.string("string")?),
        LIST => Val::List(read_seq(r, depth)?),
        TUPLE => Val::Tuple(read_seq(r, depth)?),
        FIXED_LIST => Val::FixedLengthList(read_seq(r, depth)?),
        RECORD => {
            // A field is at least a 1-byte name length and a 1-byte value.
            let n = r.count(2, "record")?;
            let mut fields = bounded_vec(n);
            for _ in 0..n {
                let name = r.string("field name")?;
                fields.push((name, read_val_at(r, depth)?));
            }
            Val::Record(fields)
        }
        VARIANT => {
            let case = r.string("variant case")?;
            Val::Variant(case, read_opt_at(r, depth)?)
        }
        ENUM => Val::Enum(r.string("enum case")?),
        OPTION => Val::Option(read_opt_at(r, depth)?),
        RESULT_OK => Val::Result(Ok(read_opt_at(r, depth)?)),
        RESULT_ERR => Val::Result(Err(read_opt_at(r, depth)?)),
        FLAGS => {
            let n = r.count(1, "flags")?;
            let mut names = bounded_vec(n);
            for _ in 0..n {
                names.push(r.string("flag name")?);
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
        let mut out = Vec::new();
        put_val(&mut out, v).expect("encodes");
        out
    }

    fn decode(bytes: &[u8]) -> Result<Val, ProtocolError> {
        let mut r = Reader::new(bytes);
        let v = read_val(&mut r)?;
        r.finish("the value")?;
        Ok(v)
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
    fn random_bytes_never_panic() {
        // xorshift: deterministic, no dependency.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = encode(&every_kind());
        for round in 0..20_000 {
            let mut bytes = if round % 2 == 0 {
                valid.clone()
            } else {
                (0..(next() % 64)).map(|_| next() as u8).collect()
            };
            // Flip a few bytes of the valid encoding, or use pure noise.
            for _ in 0..(next() % 4) {
                if !bytes.is_empty() {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] = next() as u8;
                }
            }
            let _ = decode(&bytes);
        }
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
        assert_eq!(
            put_val(&mut Vec::new(), &v),
            Err(ProtocolError::TooDeep(MAX_DEPTH))
        );
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

    #[test]
    fn leb_extremes_round_trip() {
        for v in [0, 1, 127, 128, u64::MAX, u64::MAX - 1] {
            let mut out = Vec::new();
            out.put_uleb(v);
            assert_eq!(Reader::new(&out).uleb("x").unwrap(), v);
        }
        for v in [0, -1, 1, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            out.put_sleb(v);
            assert_eq!(Reader::new(&out).sleb("x").unwrap(), v);
        }
    }
}
