//! The byte encoding of everything the process pool sends: one [`Codec`] impl per type, an
//! encoder and a decoder side by side, so that no type has one half without the other.
//!
//! Layout of the primitives (every message is built from these):
//!
//! | type | bytes |
//! |------|-------|
//! | `bool` | 0 or 1; any other byte is malformed |
//! | `u64`, `usize` | LEB128 (at most 10 bytes, overflow checked; a `usize` must fit) |
//! | `String` | LEB128 length, UTF-8 bytes |
//! | `Duration` | nanoseconds as a `u64`, saturating |
//! | `PathBuf` | LEB128 length, the raw OS bytes (unix) |
//! | `Option<T>` | 0, or 1 and a `T` |
//! | `Vec<T>`, `Cow<[T]>` | LEB128 count, the items |
//! | `(A, B)` | an `A`, then a `B` |
//! | `Result<T, E>` | 0 and a `T`, or 1 and an `E` |
//!
//! Decoding never trusts a length: every count is checked against the bytes that remain
//! before anything is allocated (see [`Codec::MIN_SIZE`]), and every failure is a
//! [`ProtocolError`], never a panic.

pub(crate) mod records;
pub(crate) mod values;

#[cfg(test)]
pub(crate) mod arbitrary;

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::ProtocolError;

/// A type with a byte encoding: `decode(encode(x)) == x`, and the encoding is canonical
/// (re-encoding a decoded value gives the same bytes).
pub(crate) trait Codec: Sized {
    /// The fewest bytes one encoded value takes: a count of items is checked against the
    /// bytes that remain before anything is allocated.
    const MIN_SIZE: usize = 1;

    /// Appends the encoding. Fails only for values that cannot leave the process
    /// (resources, futures, streams, error contexts) or that nest deeper than
    /// [`values::MAX_DEPTH`]; `out` then holds a partial encoding and must be dropped or
    /// truncated.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError>;

    /// Reads one value; fails (never panics) on malformed or truncated input.
    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError>;
}

/// The encoding of `x` in a fresh buffer.
#[cfg(test)]
pub(crate) fn to_bytes<T: Codec>(x: &T) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::new();
    x.encode(&mut out)?;
    Ok(out)
}

/// Decodes exactly one `T` from `bytes`: trailing bytes are malformed.
#[cfg(test)]
pub(crate) fn from_bytes<T: Codec>(bytes: &[u8]) -> Result<T, ProtocolError> {
    let mut r = Reader::new(bytes);
    let x = T::decode(&mut r)?;
    r.finish("the value")?;
    Ok(x)
}

/// A malformed-input error.
pub(crate) fn malformed(message: String) -> ProtocolError {
    ProtocolError::Malformed(message)
}

/// Appends encoded primitives to a byte buffer.
pub(crate) trait Put {
    fn put_u8(&mut self, b: u8);
    fn put_uleb(&mut self, v: u64);
    fn put_bytes(&mut self, b: &[u8]);

    #[inline]
    fn put_sleb(&mut self, v: i64) {
        // Zigzag: small magnitudes of either sign stay short.
        self.put_uleb(((v << 1) ^ (v >> 63)) as u64);
    }

    #[inline]
    fn put_len(&mut self, n: usize) {
        self.put_uleb(n as u64);
    }

    #[inline]
    fn put_str(&mut self, s: &str) {
        self.put_len(s.len());
        self.put_bytes(s.as_bytes());
    }
}

impl Put for Vec<u8> {
    #[inline]
    fn put_u8(&mut self, b: u8) {
        self.push(b);
    }

    #[inline]
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

    #[inline]
    fn put_bytes(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

/// Reads encoded data from a payload, checking every length.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Reads one `T`; a malformed input's message is prefixed with `what`.
    #[inline]
    pub(crate) fn read<T: Codec>(&mut self, what: &str) -> Result<T, ProtocolError> {
        T::decode(self).map_err(|e| match e {
            ProtocolError::Malformed(m) => malformed(format!("{what}: {m}")),
            other => other,
        })
    }

    /// Bytes not read yet.
    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails unless everything was read (a payload with trailing bytes is malformed).
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

    #[inline]
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

    #[inline]
    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, ProtocolError> {
        match self.buf.split_first() {
            Some((&b, rest)) => {
                self.buf = rest;
                Ok(b)
            }
            None => Err(malformed(format!("{what} needs 1 bytes, only 0 remain"))),
        }
    }

    pub(crate) fn u32_le(&mut self, what: &str) -> Result<u32, ProtocolError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[inline]
    pub(crate) fn uleb(&mut self, what: &str) -> Result<u64, ProtocolError> {
        // Most integers here (ids, counts, tags, small sizes) take one byte.
        if let Some((&byte, rest)) = self.buf.split_first()
            && byte < 0x80
        {
            self.buf = rest;
            return Ok(u64::from(byte));
        }
        self.uleb_long(what)
    }

    /// [`uleb`](Self::uleb) of two bytes or more (or of none left).
    #[inline(never)]
    fn uleb_long(&mut self, what: &str) -> Result<u64, ProtocolError> {
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

    #[inline]
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
}

/// Items are read into a vector that grows as they arrive: a count is only a bound.
pub(crate) fn bounded_vec<T>(n: usize) -> Vec<T> {
    Vec::with_capacity(n.min(1024))
}

impl Codec for bool {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        out.put_u8(u8::from(*self));
        Ok(())
    }

    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        match r.u8("boolean")? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(malformed(format!("{b} is not a boolean"))),
        }
    }
}

impl Codec for u64 {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        out.put_uleb(*self);
        Ok(())
    }

    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        r.uleb("integer")
    }
}

impl Codec for u32 {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        out.put_uleb(u64::from(*self));
        Ok(())
    }

    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        u32::try_from(r.uleb("integer")?).map_err(|e| malformed(e.to_string()))
    }
}

impl Codec for usize {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        out.put_len(*self);
        Ok(())
    }

    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        usize::try_from(r.uleb("integer")?).map_err(|e| malformed(e.to_string()))
    }
}

impl Codec for String {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        out.put_str(self);
        Ok(())
    }

    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        r.str("string").map(str::to_string)
    }
}

impl Codec for Duration {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        out.put_uleb(u64::try_from(self.as_nanos()).unwrap_or(u64::MAX));
        Ok(())
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(Duration::from_nanos(r.uleb("duration")?))
    }
}

impl Codec for PathBuf {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = self.as_os_str().as_bytes();
        out.put_len(bytes.len());
        out.put_bytes(bytes);
        Ok(())
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        use std::os::unix::ffi::OsStrExt;
        let len = r.count(1, "path")?;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(
            r.bytes(len, "path")?,
        )))
    }
}

impl<T: Codec> Codec for Option<T> {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        match self {
            None => {
                out.put_u8(0);
                Ok(())
            }
            Some(x) => {
                out.put_u8(1);
                x.encode(out)
            }
        }
    }

    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(if r.read::<bool>("option flag")? {
            Some(T::decode(r)?)
        } else {
            None
        })
    }
}

impl<T: Codec> Codec for Vec<T> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        encode_slice(self, out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let n = r.count(T::MIN_SIZE, "list")?;
        let mut items = bounded_vec(n);
        for _ in 0..n {
            items.push(T::decode(r)?);
        }
        Ok(items)
    }
}

/// A borrowed list encodes like a `Vec` and decodes to an owned one: the pool encodes a
/// task's arguments without copying them.
impl<T: Codec + Clone> Codec for Cow<'_, [T]> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        encode_slice(self, out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Vec::<T>::decode(r).map(Cow::Owned)
    }
}

#[inline]
fn encode_slice<T: Codec>(items: &[T], out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    out.put_len(items.len());
    items.iter().try_for_each(|x| x.encode(out))
}

impl<A: Codec, B: Codec> Codec for (A, B) {
    const MIN_SIZE: usize = A::MIN_SIZE + B::MIN_SIZE;

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        self.0.encode(out)?;
        self.1.encode(out)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok((A::decode(r)?, B::decode(r)?))
    }
}

impl<T: Codec, E: Codec> Codec for Result<T, E> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        match self {
            Ok(x) => {
                out.put_u8(0);
                x.encode(out)
            }
            Err(e) => {
                out.put_u8(1);
                e.encode(out)
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        match r.u8("outcome")? {
            0 => Ok(Ok(T::decode(r)?)),
            1 => Ok(Err(E::decode(r)?)),
            b => Err(malformed(format!("unknown outcome {b}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::arbitrary::assert_round_trips;
    use super::*;

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

    #[test]
    fn primitives_have_their_documented_bytes() {
        assert_eq!(to_bytes(&true).unwrap(), [1]);
        assert_eq!(to_bytes(&300u64).unwrap(), [0xac, 0x02]);
        assert_eq!(to_bytes(&"hé".to_string()).unwrap(), [3, b'h', 0xc3, 0xa9]);
        assert_eq!(to_bytes(&Some(5u64)).unwrap(), [1, 5]);
        assert_eq!(to_bytes(&None::<u64>).unwrap(), [0]);
        assert_eq!(to_bytes(&vec![1u64, 2]).unwrap(), [2, 1, 2]);
        assert_eq!(to_bytes(&(1u64, true)).unwrap(), [1, 1]);
        assert_eq!(to_bytes(&Ok::<u64, bool>(3)).unwrap(), [0, 3]);
        assert_eq!(to_bytes(&Err::<u64, bool>(false)).unwrap(), [1, 0]);
        assert_eq!(
            to_bytes(&Duration::MAX).unwrap(),
            to_bytes(&u64::MAX).unwrap()
        );
        assert!(from_bytes::<bool>(&[2]).is_err());
        assert!(from_bytes::<Result<u64, u64>>(&[2, 0]).is_err());
        assert!(from_bytes::<u64>(&[1, 2]).is_err()); // trailing byte
    }

    #[test]
    fn lying_counts_fail_without_allocating() {
        let mut bytes = Vec::new();
        bytes.put_uleb(u64::MAX >> 1);
        assert!(matches!(
            from_bytes::<Vec<u64>>(&bytes),
            Err(ProtocolError::Malformed(_))
        ));
        // A pair takes at least two bytes: one remaining byte cannot hold one.
        assert!(from_bytes::<Vec<(bool, bool)>>(&[1, 0]).is_err());
    }

    #[test]
    fn primitives_round_trip() {
        assert_round_trips::<bool>(200);
        assert_round_trips::<u64>(2_000);
        assert_round_trips::<usize>(2_000);
        assert_round_trips::<String>(2_000);
        assert_round_trips::<Duration>(2_000);
        assert_round_trips::<PathBuf>(2_000);
        assert_round_trips::<Option<String>>(2_000);
        assert_round_trips::<Vec<(String, String)>>(2_000);
        assert_round_trips::<Result<u64, String>>(2_000);
    }
}
