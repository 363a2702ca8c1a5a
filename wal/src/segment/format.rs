//! The segment file format: file name and header.
//!
//! A segment is named by the first zxid it holds, as 16 lowercase hex digits, so that name order is zxid order:
//! `000000010000002a.wal`. It starts with a 64-byte header, then records (see [`crate::record`]) back to back,
//! then zeros up to the preallocated size.
//!
//! ```text
//!  0          8         12        16        24            32          40               48      52       64
//!  +----------+---------+---------+---------+-------------+-----------+----------------+-------+--------+
//!  |  magic   | version | flags=0 |   seq   | first zxid  | prev end  | prev last zxid | crc32c| zero   |
//!  +----------+---------+---------+---------+-------------+-----------+----------------+-------+--------+
//!    8 bytes    u32 LE    u32 LE    u64 LE     u64 LE        u64 LE       u64 LE         u32 LE
//! ```
//!
//! - `seq` numbers segments 1, 2, 3, ...: a gap between neighbours is a missing segment.
//! - `prev end` and `prev last zxid` seal the previous segment: where its records end and the zxid of its last
//!   record, written (and fsynced) before this segment takes its first record. So a sealed segment has an exact
//!   end, and any bad byte before that end is corruption, never a torn tail. `prev end == 0`: no previous segment.
//! - `crc32c` covers bytes `0..48`.
//!
//! # Invariants
//! - The header in a file with a final name is complete and fsynced: segments are created under a `.tmp` name and
//!   renamed only after that (followed by an fsync of the directory).
//! - The name's zxid equals `first zxid` and the zxid of the first record.

use crate::error::{CorruptionKind, WalError};
use crate::Zxid;
use std::path::Path;

/// Identifies a file as a segment of this log.
pub const MAGIC: [u8; 8] = *b"\x89ENSWAL\n";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes before the first record.
pub const HEADER_LEN: usize = 64;
const CRC_OFFSET: usize = 48;
const _: () = assert!(CRC_OFFSET + 4 <= HEADER_LEN);

/// The extension of a segment file.
pub const EXTENSION: &str = "wal";
/// The extension of a segment being created.
pub const TMP_EXTENSION: &str = "tmp";

/// Where the segment before this one ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seal {
    /// The offset just after its last record.
    pub end: u64,
    /// The zxid of its last record.
    pub last_zxid: Zxid,
}

/// A decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's sequence number.
    pub seq: u64,
    /// The zxid of its first record.
    pub first_zxid: Zxid,
    /// The seal of the previous segment, if there was one when this one was created.
    pub prev: Option<Seal>,
}

impl SegmentHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        debug_assert!(self.seq > 0 && self.first_zxid != Zxid::ZERO);
        let mut buf = [0u8; HEADER_LEN];
        buf[0..8].copy_from_slice(&MAGIC);
        buf[8..12].copy_from_slice(&VERSION.to_le_bytes());
        buf[16..24].copy_from_slice(&self.seq.to_le_bytes());
        buf[24..32].copy_from_slice(&self.first_zxid.0.to_le_bytes());
        let (end, last) = self.prev.map_or((0, 0), |s| (s.end, s.last_zxid.0));
        buf[32..40].copy_from_slice(&end.to_le_bytes());
        buf[40..48].copy_from_slice(&last.to_le_bytes());
        let crc = crc32c::crc32c(&buf[..CRC_OFFSET]);
        buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Decodes and verifies the header at the start of `buf`, read from `path`.
    pub fn decode(buf: &[u8], path: &Path) -> Result<SegmentHeader, WalError> {
        let corrupt = |kind| WalError::Corruption { segment: path.to_path_buf(), offset: 0, kind };
        if buf.len() < MAGIC.len() || buf[..8] != MAGIC {
            return Err(WalError::BadMagic { path: path.to_path_buf() });
        }
        let Some(buf) = buf.get(..HEADER_LEN) else { return Err(corrupt(CorruptionKind::BadHeader)) };
        let u32_at = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        let crc_ok = crc32c::crc32c(&buf[..CRC_OFFSET]) == u32_at(CRC_OFFSET);
        if version != VERSION {
            // A future version may move the checksum, so its header is judged by its version alone.
            return Err(WalError::UnsupportedVersion { path: path.to_path_buf(), version, supported: VERSION });
        }
        if !crc_ok {
            return Err(corrupt(CorruptionKind::BadHeader));
        }
        let (seq, first_zxid) = (u64_at(16), Zxid(u64_at(24)));
        if seq == 0 || first_zxid == Zxid::ZERO {
            return Err(corrupt(CorruptionKind::BadHeader));
        }
        let prev = match u64_at(32) {
            0 => None,
            end => Some(Seal { end, last_zxid: Zxid(u64_at(40)) }),
        };
        Ok(SegmentHeader { seq, first_zxid, prev })
    }
}

/// The file name of the segment whose first record is `first_zxid`.
pub fn file_name(first_zxid: Zxid) -> String {
    format!("{:016x}.{EXTENSION}", first_zxid.0)
}

/// The first zxid a segment file name carries, or `None` if the name is not a segment's.
pub fn parse_file_name(name: &str) -> Option<Zxid> {
    let hex = name.strip_suffix(EXTENSION)?.strip_suffix('.')?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(Zxid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> impl Strategy<Value = SegmentHeader> {
        (1u64.., 1u64.., proptest::option::of((1u64.., any::<u64>()))).prop_map(|(seq, z, prev)| SegmentHeader {
            seq,
            first_zxid: Zxid(z),
            prev: prev.map(|(end, last)| Seal { end, last_zxid: Zxid(last) }),
        })
    }

    proptest! {
        #[test]
        fn header_round_trip(h in header()) {
            let bytes = h.encode();
            prop_assert_eq!(SegmentHeader::decode(&bytes, Path::new("x")).unwrap(), h);
        }

        #[test]
        fn header_bit_flip_is_refused(h in header(), bit in 0usize..(CRC_OFFSET + 4) * 8) {
            let mut bytes = h.encode();
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(SegmentHeader::decode(&bytes, Path::new("x")).is_err());
        }

        #[test]
        fn file_name_round_trip(z in any::<u64>()) {
            prop_assert_eq!(parse_file_name(&file_name(Zxid(z))), Some(Zxid(z)));
        }
    }

    #[test]
    fn names_sort_in_zxid_order() {
        let mut names: Vec<_> = [5u64, 1 << 40, 17, 0xffff_ffff].iter().map(|&z| file_name(Zxid(z))).collect();
        names.sort();
        let zxids: Vec<_> = names.iter().map(|n| parse_file_name(n).unwrap().0).collect();
        assert_eq!(zxids, vec![5, 17, 0xffff_ffff, 1 << 40]);
    }

    #[test]
    fn foreign_names_are_not_segments() {
        for name in ["LOCK", "0000000000000001.wal.tmp", "000000000000001.wal", "000000000000000G.wal", "x.wal"] {
            assert_eq!(parse_file_name(name), None, "{name}");
        }
    }

    #[test]
    fn wrong_magic_and_future_version_get_their_own_errors() {
        let h = SegmentHeader { seq: 1, first_zxid: Zxid(1), prev: None };
        let mut bytes = h.encode();
        bytes[0] = b'X';
        assert!(matches!(SegmentHeader::decode(&bytes, Path::new("x")), Err(WalError::BadMagic { .. })));
        let mut bytes = h.encode();
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(
            SegmentHeader::decode(&bytes, Path::new("x")),
            Err(WalError::UnsupportedVersion { version: 2, .. })
        ));
    }
}
