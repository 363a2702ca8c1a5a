//! Jute, ZooKeeper's binary encoding: the primitives that `zookeeper.jute` records are made of.
//!
//! All integers are big-endian. A record is its fields in order, with no framing.
//!
//! ```text
//!  int      4 bytes            long     8 bytes            boolean  1 byte (0 or 1)
//!  buffer   int len | len bytes          (len -1: null, read as empty, or as `None` where null is kept)
//!  ustring  int len | len bytes UTF-8    (len -1: null, read as empty)
//!  vector   int count | count elements   (count -1: null, read as empty)
//! ```
//!
//! # Limits
//! Every length is checked against the bytes that remain before anything is allocated, so a hostile length
//! field cannot make the reader allocate more than the frame it was given.

use bytes::{Buf, BufMut, Bytes};

/// Why a jute record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JuteError {
    /// The record ends early.
    #[error("record truncated: needed {needed} more bytes, {remaining} left")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes left.
        remaining: usize,
    },
    /// A length or count is negative (other than -1) or larger than the bytes left.
    #[error("invalid length {0}")]
    BadLength(i32),
    /// A string is not valid UTF-8.
    #[error("string is not valid UTF-8")]
    BadUtf8,
    /// A boolean byte is neither 0 nor 1.
    #[error("invalid boolean byte {0}")]
    BadBool(u8),
    /// A value is outside its domain (an unknown op code, say).
    #[error("invalid value: {0}")]
    Invalid(String),
}

/// Decodes jute primitives from a buffer.
pub trait JuteRead: Buf {
    /// Checks that `n` bytes remain.
    fn need(&self, n: usize) -> Result<(), JuteError> {
        if self.remaining() < n {
            return Err(JuteError::Truncated { needed: n, remaining: self.remaining() });
        }
        Ok(())
    }
    /// An `int`.
    fn read_int(&mut self) -> Result<i32, JuteError> {
        self.need(4)?;
        Ok(self.get_i32())
    }
    /// A `long`.
    fn read_long(&mut self) -> Result<i64, JuteError> {
        self.need(8)?;
        Ok(self.get_i64())
    }
    /// A `boolean`.
    fn read_bool(&mut self) -> Result<bool, JuteError> {
        self.need(1)?;
        match self.get_u8() {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(JuteError::BadBool(b)),
        }
    }
    /// A length prefix: `None` for -1 (null).
    fn read_len(&mut self) -> Result<Option<usize>, JuteError> {
        match self.read_int()? {
            -1 => Ok(None),
            n if n < 0 => Err(JuteError::BadLength(n)),
            n => {
                let len = usize::try_from(n).map_err(|_| JuteError::BadLength(n))?;
                Ok(Some(len))
            }
        }
    }
    /// A `buffer` (null reads as empty).
    fn read_buffer(&mut self) -> Result<Bytes, JuteError> {
        let Some(len) = self.read_len()? else { return Ok(Bytes::new()) };
        self.need(len)?;
        Ok(self.copy_to_bytes(len))
    }
    /// A `buffer` whose null (length -1) is kept apart from empty, as ZooKeeper keeps a znode's data.
    fn read_nullable_buffer(&mut self) -> Result<Option<Bytes>, JuteError> {
        let Some(len) = self.read_len()? else { return Ok(None) };
        self.need(len)?;
        Ok(Some(self.copy_to_bytes(len)))
    }
    /// A `ustring` (null reads as empty).
    fn read_string(&mut self) -> Result<String, JuteError> {
        let Some(len) = self.read_len()? else { return Ok(String::new()) };
        self.need(len)?;
        // Straight into the string's own buffer: one allocation, not a `Bytes` and then a copy of it.
        let mut bytes = Vec::with_capacity(len);
        bytes.put((&mut *self).take(len));
        String::from_utf8(bytes).map_err(|_| JuteError::BadUtf8)
    }
    /// A `vector` count, checked against the bytes left assuming each element takes at least `min_size` bytes.
    fn read_count(&mut self, min_size: usize) -> Result<usize, JuteError> {
        let Some(count) = self.read_len()? else { return Ok(0) };
        if count.saturating_mul(min_size.max(1)) > self.remaining() {
            return Err(JuteError::BadLength(i32::try_from(count).unwrap_or(i32::MAX)));
        }
        Ok(count)
    }
}

impl<B: Buf + ?Sized> JuteRead for B {}

/// Encodes jute primitives into a buffer.
pub trait JuteWrite: BufMut {
    /// An `int`.
    fn write_int(&mut self, v: i32) {
        self.put_i32(v);
    }
    /// A `long`.
    fn write_long(&mut self, v: i64) {
        self.put_i64(v);
    }
    /// A `boolean`.
    fn write_bool(&mut self, v: bool) {
        self.put_u8(u8::from(v));
    }
    /// A `buffer`.
    fn write_buffer(&mut self, v: &[u8]) {
        self.write_len(v.len());
        self.put_slice(v);
    }
    /// A `buffer` that may be null: `None` is written as length -1.
    fn write_nullable_buffer(&mut self, v: Option<&[u8]>) {
        match v {
            Some(v) => self.write_buffer(v),
            None => self.put_i32(-1),
        }
    }
    /// A `ustring`.
    fn write_string(&mut self, v: &str) {
        self.write_buffer(v.as_bytes());
    }
    /// A length or count prefix.
    fn write_len(&mut self, len: usize) {
        let len = i32::try_from(len).expect("jute lengths are bounded by jute.maxbuffer, far below 2 GiB");
        self.put_i32(len);
    }
}

impl<B: BufMut + ?Sized> JuteWrite for B {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn primitives_round_trip(i in any::<i32>(), l in any::<i64>(), b in any::<bool>(), s in ".*", buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut out = Vec::new();
            out.write_int(i);
            out.write_long(l);
            out.write_bool(b);
            out.write_string(&s);
            out.write_buffer(&buf);
            let mut r = &out[..];
            prop_assert_eq!(r.read_int().unwrap(), i);
            prop_assert_eq!(r.read_long().unwrap(), l);
            prop_assert_eq!(r.read_bool().unwrap(), b);
            prop_assert_eq!(r.read_string().unwrap(), s);
            prop_assert_eq!(&r.read_buffer().unwrap()[..], &buf[..]);
            prop_assert_eq!(r.remaining(), 0);
        }

        #[test]
        fn nullable_buffers_keep_null_apart_from_empty(buf in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))) {
            let mut out = Vec::new();
            out.write_nullable_buffer(buf.as_deref());
            let mut r = &out[..];
            prop_assert_eq!(r.read_nullable_buffer().unwrap().map(|b| b.to_vec()), buf);
            prop_assert_eq!(r.remaining(), 0);
        }

        #[test]
        fn truncation_is_an_error_not_a_panic(s in ".{1,20}", cut in any::<proptest::sample::Index>()) {
            let mut out = Vec::new();
            out.write_string(&s);
            let cut = cut.index(out.len());
            prop_assert!((&out[..cut]).read_string().is_err());
        }
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocating() {
        let frame = [0x7f, 0xff, 0xff, 0xff, 1, 2, 3];
        assert!(matches!((&frame[..]).read_buffer(), Err(JuteError::Truncated { .. })));
        assert!(matches!((&frame[..]).read_count(1), Err(JuteError::BadLength(_))));
        let negative = (-5i32).to_be_bytes();
        assert_eq!((&negative[..]).read_buffer(), Err(JuteError::BadLength(-5)));
        let null = (-1i32).to_be_bytes();
        assert_eq!((&null[..]).read_string().unwrap(), "");
        assert_eq!((&null[..]).read_nullable_buffer().unwrap(), None);
        assert_eq!((&negative[..]).read_nullable_buffer(), Err(JuteError::BadLength(-5)));
    }
}
