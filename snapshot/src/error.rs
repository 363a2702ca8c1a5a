//! The snapshot crate's one error type.

use std::io;
use std::path::PathBuf;

/// Every error of writing, loading, recovering and retaining snapshots.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// An IO operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A fuzzy snapshot spanned a closeSession that did not list the ephemerals it deleted: recovery could not
    /// replay it over this snapshot exactly, so it was not kept (the next one will be).
    #[error("snapshot from {start_zxid:#x} abandoned: it spans the unlisted closeSession {zxid:#x}")]
    Unreplayable {
        /// Where the snapshot began.
        start_zxid: i64,
        /// The closeSession.
        zxid: i64,
    },
    /// A snapshot transfer between leader and follower went wrong.
    #[error("snapshot transfer: {0}")]
    Transfer(String),
    /// The file does not start with the snapshot magic.
    #[error("{path}: not a snapshot (bad magic)")]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by a newer format version.
    #[error(
        "{path}: snapshot format version {version} is not supported (this build reads versions up to {supported})"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The file fails verification: truncated, a checksum mismatch, or a malformed record.
    #[error("{path}: corrupt snapshot: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The snapshot reflects txns the WAL does not hold: recovering would lose them.
    #[error("{snapshot}: the snapshot reaches zxid {end_zxid:#x} but the WAL ends at {wal_last:#x}")]
    AheadOfWal {
        /// The snapshot.
        snapshot: PathBuf,
        /// The last zxid the snapshot reflects.
        end_zxid: i64,
        /// The last zxid in the WAL (0: empty).
        wal_last: i64,
    },
    /// The WAL no longer holds the txns right after the snapshot's start.
    #[error("{snapshot}: the snapshot starts at zxid {start_zxid:#x} but the WAL starts later, at {wal_first:#x}")]
    WalGap {
        /// The snapshot.
        snapshot: PathBuf,
        /// Its start zxid.
        start_zxid: i64,
        /// The first zxid in the WAL.
        wal_first: i64,
    },
    /// After replay to the snapshot's end zxid, the tree digest differs from the one the snapshot recorded.
    #[error(
        "{snapshot}: tree digest at zxid {zxid:#x} is {found:#x} after replay, the snapshot recorded {expected:#x}"
    )]
    DigestMismatch {
        /// The snapshot.
        snapshot: PathBuf,
        /// The zxid compared at.
        zxid: i64,
        /// The recorded digest.
        expected: u64,
        /// The digest after replay.
        found: u64,
    },
    /// The WAL holds data but no snapshot can be trusted, and the WAL does not go back to the first txn.
    #[error("refusing to start empty over existing data: the WAL starts at zxid {wal_first:#x}, and no snapshot verifies ({rejected})")]
    NoTrustedSnapshot {
        /// The first zxid in the WAL.
        wal_first: i64,
        /// Why each snapshot was rejected.
        rejected: String,
    },
    /// A WAL record does not decode as a txn.
    #[error("WAL record {zxid:#x} is not a valid txn: {reason}")]
    BadTxn {
        /// The record's zxid.
        zxid: i64,
        /// The decoding error.
        reason: String,
    },
    /// The WAL failed.
    #[error(transparent)]
    Wal(#[from] wal::WalError),
}

impl SnapshotError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> SnapshotError {
        SnapshotError::Io { op, path: path.into(), source }
    }
}
