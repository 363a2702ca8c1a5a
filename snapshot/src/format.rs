//! The snapshot file format. Big-endian, jute primitives (see `tree::jute`).
//!
//! ```text
//!  header   magic "ENSNAP\r\n" (8) | version u32 | flags u32 (0) | start zxid i64           24 bytes
//!  records  tag u8, then:
//!             1 SESSION  i64 session id | i32 timeout
//!             2 ACL      i64 acl id | vector<ACL>                   (before the first node that uses it)
//!             3 NODE     ustring path | buffer data | i64 acl id | StatPersisted (60 bytes)
//!                        (data length -1: null data, kept apart from empty; version 2 and later)
//!             0 END
//!  trailer  end zxid i64 | digest u64 | nodes u64 | sessions u64 | crc32c u32 | "SNAP"      40 bytes
//! ```
//!
//! - `start zxid`: the last zxid applied when the snapshot began. The snapshot is fuzzy: nodes are copied in
//!   chunks while txns go on being applied, so it reflects some txns after `start zxid`; recovery replays every
//!   txn after `start zxid`, which is idempotent.
//! - `end zxid` and `digest`: the last zxid applied and the tree digest when the copy finished. Replay must
//!   reach `end zxid` and find the same digest there.
//! - `crc32c` covers every byte before it.
//! - Nodes come in path order, so a parent precedes its children. A node whose parent is missing (created
//!   after the walk passed its parent's place) is skipped at load: replay creates both.
//!
//! # Invariants
//! - The file is complete and fsynced before it has its final name (`snapshot.<16 hex digits of start zxid>`).

use crate::error::SnapshotError;
use std::path::Path;

/// Identifies a snapshot file.
pub const MAGIC: [u8; 8] = *b"ENSNAP\r\n";
/// The format version this build writes.
pub const VERSION: u32 = 2;
/// The oldest version this build reads: version 1 differs only in never writing null data (length -1), so
/// every version-1 file reads the same under version 2's rules.
pub const OLDEST_READABLE: u32 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = 24;
/// Bytes of the trailer.
pub const TRAILER_LEN: usize = 40;
/// The trailer's closing magic.
pub const END_MAGIC: [u8; 4] = *b"SNAP";
const _: () = assert!(TRAILER_LEN == 8 * 4 + 4 + 4);

/// Record tags.
pub mod tag {
    /// End of records.
    pub const END: u8 = 0;
    /// A session.
    pub const SESSION: u8 = 1;
    /// An ACL list.
    pub const ACL: u8 = 2;
    /// A node.
    pub const NODE: u8 = 3;
}

/// The header.
pub fn encode_header(start_zxid: i64) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_be_bytes());
    out[16..24].copy_from_slice(&start_zxid.to_be_bytes());
    out
}

/// The trailer's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// The last zxid applied when the copy finished.
    pub end_zxid: i64,
    /// The tree digest then.
    pub digest: u64,
    /// Node records written.
    pub nodes: u64,
    /// Session records written.
    pub sessions: u64,
}

impl Trailer {
    /// Encodes the trailer's first 32 bytes (the checksum and end magic follow).
    pub fn encode_fields(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[..8].copy_from_slice(&self.end_zxid.to_be_bytes());
        out[8..16].copy_from_slice(&self.digest.to_be_bytes());
        out[16..24].copy_from_slice(&self.nodes.to_be_bytes());
        out[24..32].copy_from_slice(&self.sessions.to_be_bytes());
        out
    }
}

/// Checks magic, version, length and checksum of a whole snapshot file; returns its start zxid, trailer and
/// the bytes of its records.
pub fn verify<'a>(data: &'a [u8], path: &Path) -> Result<(i64, Trailer, &'a [u8]), SnapshotError> {
    let corrupt = |reason: &str| SnapshotError::Corrupt { path: path.to_path_buf(), reason: reason.to_owned() };
    if data.len() < MAGIC.len() || data[..8] != MAGIC {
        return Err(SnapshotError::BadMagic { path: path.to_path_buf() });
    }
    if data.len() < 12 {
        return Err(corrupt("truncated header"));
    }
    let version = u32::from_be_bytes(data[8..12].try_into().expect("4 bytes"));
    if !(OLDEST_READABLE..=VERSION).contains(&version) {
        return Err(SnapshotError::UnsupportedVersion { path: path.to_path_buf(), version, supported: VERSION });
    }
    if data.len() < HEADER_LEN + 1 + TRAILER_LEN {
        return Err(corrupt("truncated: shorter than a header and a trailer"));
    }
    let trailer = &data[data.len() - TRAILER_LEN..];
    if trailer[36..40] != END_MAGIC {
        return Err(corrupt("truncated: no trailer"));
    }
    let stored = u32::from_be_bytes(trailer[32..36].try_into().expect("4 bytes"));
    if crc32c::crc32c(&data[..data.len() - 8]) != stored {
        return Err(corrupt("checksum mismatch"));
    }
    let long = |b: &[u8]| i64::from_be_bytes(b.try_into().expect("8 bytes"));
    let fields = Trailer {
        end_zxid: long(&trailer[0..8]),
        digest: u64::from_be_bytes(trailer[8..16].try_into().expect("8 bytes")),
        nodes: u64::from_be_bytes(trailer[16..24].try_into().expect("8 bytes")),
        sessions: u64::from_be_bytes(trailer[24..32].try_into().expect("8 bytes")),
    };
    let start = long(&data[16..24]);
    Ok((start, fields, &data[HEADER_LEN..data.len() - TRAILER_LEN]))
}

/// The file name of the snapshot that starts at `start_zxid`.
pub fn file_name(start_zxid: i64) -> String {
    format!("snapshot.{start_zxid:016x}")
}

/// The start zxid a snapshot file name carries.
pub fn parse_file_name(name: &str) -> Option<i64> {
    let hex = name.strip_prefix("snapshot.")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().and_then(|z| i64::try_from(z).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_zxid() {
        assert_eq!(parse_file_name(&file_name(0x1_0000_002a)), Some(0x1_0000_002a));
        assert!(file_name(9) < file_name(0x10));
        assert_eq!(parse_file_name("snapshot.0000000000000001.tmp"), None);
        assert_eq!(parse_file_name("snapshot.000000000000000G"), None);
    }
}
