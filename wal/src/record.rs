//! The record format: one zxid and its opaque payload, checksummed.
//!
//! ```text
//!  0        4        8                16                    16 + len
//!  +--------+--------+----------------+---------------------+
//!  |  len   | crc32c |      zxid      |   payload (len B)   |
//!  +--------+--------+----------------+---------------------+
//!    u32 LE   u32 LE      u64 LE
//! ```
//!
//! `crc32c` covers `len`, `zxid` and the payload: every byte of the record except the checksum itself.
//!
//! # Invariants
//! - `zxid != 0`, so a run of zeros (a preallocated, never written region) never decodes as a record: sixteen
//!   zero bytes are the end-of-log marker ([`Decoded::End`]).
//! - `len <= max_payload` when appended (configured; 1 MiB + 1 KiB by default, like ZooKeeper's
//!   `jute.maxbuffer` plus its extra allowance); read back, `len <= READ_CEILING` (1 GiB), so that lowering the
//!   limit never makes a logged record unreadable.

use std::ops::Range;

use crate::Zxid;

/// Bytes before the payload.
pub const RECORD_HEADER_LEN: usize = 16;
const _: () = assert!(RECORD_HEADER_LEN == 4 + 4 + 8);

/// The bytes a record with a payload of `payload_len` bytes occupies.
pub const fn encoded_len(payload_len: usize) -> usize {
    RECORD_HEADER_LEN + payload_len
}

/// What lies at an offset of a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A valid record.
    Record {
        /// Its zxid.
        zxid: Zxid,
        /// Where its payload lies in the buffer.
        payload: Range<usize>,
        /// The offset just after it.
        next: usize,
    },
    /// A zero header: the unwritten, preallocated part of a segment.
    End,
    /// Fewer bytes remain than the header or its payload needs.
    Truncated,
    /// The length field exceeds the limit: garbage or a torn header.
    BadLength,
    /// The checksum does not match.
    BadChecksum,
}

/// Appends the encoding of one record to `buf`.
pub fn encode(buf: &mut Vec<u8>, zxid: Zxid, payload: &[u8]) {
    debug_assert!(zxid != Zxid::ZERO, "zxid 0 is the end-of-log marker");
    let len = u32::try_from(payload.len()).expect("payload length is bounded by max_payload, far below 4 GiB");
    let start = buf.len();
    buf.reserve(encoded_len(payload.len()));
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&zxid.0.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = checksum(&buf[start..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The checksum of an encoded record (whose checksum field is ignored).
fn checksum(record: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&record[0..4]);
    crc32c::crc32c_append(crc, &record[8..])
}

/// Decodes the record at `offset` of `buf`, accepting payloads of up to `max_payload` bytes.
pub fn decode(buf: &[u8], offset: usize, max_payload: usize) -> Decoded {
    let Some(header) = buf.get(offset..offset.saturating_add(RECORD_HEADER_LEN)) else {
        return if buf.get(offset..).is_some_and(|rest| rest.iter().all(|&b| b == 0)) {
            Decoded::End
        } else {
            Decoded::Truncated
        };
    };
    if header.iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let stored_crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let zxid = Zxid(u64::from_le_bytes(header[8..16].try_into().expect("8 bytes")));
    let Ok(len) = usize::try_from(len) else { return Decoded::BadLength };
    if len > max_payload {
        return Decoded::BadLength;
    }
    let end = offset + RECORD_HEADER_LEN + len;
    let Some(record) = buf.get(offset..end) else { return Decoded::Truncated };
    if checksum(record) != stored_crc || zxid == Zxid::ZERO {
        return Decoded::BadChecksum;
    }
    Decoded::Record { zxid, payload: offset + RECORD_HEADER_LEN..end, next: end }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1 << 16;

    proptest! {
        #[test]
        fn round_trip(zxid in 1u64.., payload in proptest::collection::vec(any::<u8>(), 0..2048), pad in 0usize..64) {
            let mut buf = vec![0xAA; pad];
            encode(&mut buf, Zxid(zxid), &payload);
            prop_assert_eq!(buf.len(), pad + encoded_len(payload.len()));
            match decode(&buf, pad, MAX) {
                Decoded::Record { zxid: z, payload: range, next } => {
                    prop_assert_eq!(z, Zxid(zxid));
                    prop_assert_eq!(&buf[range], &payload[..]);
                    prop_assert_eq!(next, buf.len());
                }
                other => prop_assert!(false, "decoded {:?}", other),
            }
        }

        #[test]
        fn any_bit_flip_is_detected(zxid in 1u64.., payload in proptest::collection::vec(any::<u8>(), 0..256), bit in any::<proptest::sample::Index>()) {
            let mut buf = Vec::new();
            encode(&mut buf, Zxid(zxid), &payload);
            let bit = bit.index(buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            let is_record = matches!(decode(&buf, 0, MAX), Decoded::Record { .. });
            prop_assert!(!is_record, "flip of bit {} went unnoticed", bit);
        }

        #[test]
        fn any_cut_is_not_a_record(zxid in 1u64.., payload in proptest::collection::vec(1u8.., 1..256), cut in any::<proptest::sample::Index>()) {
            let mut buf = Vec::new();
            encode(&mut buf, Zxid(zxid), &payload);
            let cut = cut.index(buf.len());
            let is_record = matches!(decode(&buf[..cut], 0, MAX), Decoded::Record { .. });
            prop_assert!(!is_record, "a record cut at {} decoded", cut);
        }
    }

    #[test]
    fn zeros_are_the_end_marker() {
        assert_eq!(decode(&[0; 40], 8, MAX), Decoded::End);
        assert_eq!(decode(&[0; 5], 0, MAX), Decoded::End);
        assert_eq!(decode(&[], 0, MAX), Decoded::End);
    }

    #[test]
    fn oversized_length_is_rejected_without_reading_on() {
        let mut buf = Vec::new();
        encode(&mut buf, Zxid(9), &[7; 100]);
        assert_eq!(decode(&buf, 0, 99), Decoded::BadLength);
    }

    #[test]
    fn layout_is_little_endian_len_crc_zxid_payload() {
        let mut buf = Vec::new();
        encode(&mut buf, Zxid(0x0102_0304_0506_0708), b"ab");
        assert_eq!(&buf[0..4], &[2, 0, 0, 0]);
        assert_eq!(&buf[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&buf[16..], b"ab");
        let mut covered = buf[0..4].to_vec();
        covered.extend_from_slice(&buf[8..]);
        assert_eq!(u32::from_le_bytes(buf[4..8].try_into().unwrap()), crc32c::crc32c(&covered));
    }
}
