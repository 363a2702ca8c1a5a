//! Apache ZooKeeper's own on-disk formats, for moving a ZooKeeper ensemble's data into Ensemble and back
//! (`ensemble import`, `ensemble export`). Kept apart from Ensemble's formats: this crate owns the files under
//! ZooKeeper's `version-2/` directories and nothing else.
//!
//! ```text
//!  FileHeader (16 bytes, every file)   int magic | int version (2) | long dbid           crate::header
//!  snapshot.<zxid>[.gz|.snappy]        header "ZKSN" | sessions | ACL cache | nodes | "/" | seal
//!                                      | digest (3.6+) | seal                           crate::snapshot
//!  log.<zxid>                          header "ZKLG" | (long adler32 | int len | txn | 'B')* | zeros
//!                                                                                         crate::txnlog
//!  .snappy stream                      0x82 "SNAPPY" 0 | int 1 | int 1 | (int len | snappy block)*
//!                                                                                         crate::snappy
//! ```
//!
//! Everything is big-endian jute (see `tree::jute`); the txn records and the `StatPersisted` of a node are the
//! ones `tree` already encodes, since Ensemble's txns are ZooKeeper's. Each module draws its layout, reads and
//! writes it side by side, and is tested by round trips and by damage (every damaged file is refused with the
//! file and the offset, and no length read from a file allocates past the bounds given).
//!
//! [`restore::restore`] is ZooKeeper's recovery rule onto Ensemble's tree; [`export::write_snapshot`] the way
//! back.
//!
//! ```
//! use zkdata::snapshot::{SnapshotWriter, ZxidDigest};
//! use tree::stat::StatPersisted;
//!
//! let mut writer = SnapshotWriter::new(Vec::new(), &[(0x1234, 30_000)]).unwrap();
//! writer.acls(std::iter::empty()).unwrap();
//! writer.node("/", Some(b""), -1, &StatPersisted::default()).unwrap();
//! writer.node("/app", None, -1, &StatPersisted::created(1, 1_700_000_000_000, 0)).unwrap();
//! let (bytes, _) = writer.finish(ZxidDigest { zxid: 1, version: 2, digest: 0 }).unwrap();
//!
//! let mut paths = Vec::new();
//! let meta = zkdata::snapshot::read(&bytes[..], "snapshot.1".as_ref(), 1 << 20, |_, node| {
//!     paths.push(node.path);
//!     Ok(())
//! })
//! .unwrap();
//! assert_eq!(paths, ["/", "/app"]);
//! assert_eq!(meta.sessions, [(0x1234, 30_000)]);
//! ```
#![deny(missing_docs)]

pub mod error;
pub mod export;
pub mod files;
pub mod header;
mod input;
pub mod restore;
pub mod snappy;
pub mod snapshot;
pub mod txnlog;

pub use error::{Corruption, ZkDataError};

/// ZooKeeper's default `jute.maxbuffer` (0xfffff) plus its default extra size (as much again): the longest
/// field its readers accept unless configured otherwise.
pub const DEFAULT_MAX_LEN: u64 = 2 * 0xfffff;
