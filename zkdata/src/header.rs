//! ZooKeeper's `FileHeader`, the first 16 bytes of every snapshot and txn log.
//!
//! ```text
//!  0        4          8                16
//!  +--------+----------+----------------+
//!  | magic  | version  |      dbid      |     int, int, long; big-endian
//!  +--------+----------+----------------+
//!  snapshot: "ZKSN" (0x5a4b534e), 2, -1      log: "ZKLG" (0x5a4b4c47), 2, 0
//! ```

use std::io::Read;

use crate::error::{Corruption, ZkDataError};
use crate::input::Input;

/// `FileSnap.SNAP_MAGIC`: "ZKSN".
pub const SNAP_MAGIC: u32 = u32::from_be_bytes(*b"ZKSN");
/// `FileTxnLog.TXNLOG_MAGIC`: "ZKLG".
pub const LOG_MAGIC: u32 = u32::from_be_bytes(*b"ZKLG");
/// The only version ZooKeeper has written (`FileSnap.VERSION`, `FileTxnLog.VERSION`).
pub const VERSION: i32 = 2;
/// The dbid ZooKeeper writes in snapshots (`FileSnap.dbId`).
pub const SNAP_DBID: i64 = -1;
/// The dbid ZooKeeper writes in logs (`FileTxnLog.dbId`).
pub const LOG_DBID: i64 = 0;
/// The header's size.
pub const LEN: usize = 16;

const _: () = assert!(SNAP_MAGIC == 0x5a4b_534e && LOG_MAGIC == 0x5a4b_4c47);

/// A file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// [`SNAP_MAGIC`] or [`LOG_MAGIC`].
    pub magic: u32,
    /// [`VERSION`].
    pub version: i32,
    /// The database id.
    pub dbid: i64,
}

impl FileHeader {
    /// The 16 bytes.
    pub fn encode(&self) -> [u8; LEN] {
        let mut out = [0u8; LEN];
        out[0..4].copy_from_slice(&self.magic.to_be_bytes());
        out[4..8].copy_from_slice(&self.version.to_be_bytes());
        out[8..16].copy_from_slice(&self.dbid.to_be_bytes());
        out
    }

    /// Reads a header, which must carry `magic` (the kind of file named by `what`) and [`VERSION`].
    pub(crate) fn read<R: Read>(
        input: &mut Input<R>,
        magic: u32,
        what: &'static str,
    ) -> Result<FileHeader, ZkDataError> {
        let found = input.int()? as u32;
        if found != magic {
            return Err(input.corrupt(0, Corruption::BadMagic { found, expected: magic, what }));
        }
        let version = input.int()?;
        if version != VERSION {
            return Err(input.corrupt(4, Corruption::BadVersion(version)));
        }
        let header = FileHeader { magic, version, dbid: input.long()? };
        debug_assert_eq!(input.offset(), LEN as u64);
        Ok(header)
    }
}
