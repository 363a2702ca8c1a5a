//! The WAL's one error type.
//!
//! Request errors (a payload too large, a zxid out of order) harm nothing and leave the log usable.
//! [`WalError::Failed`] is fatal: a write or an fsync failed, the log refuses every further write until it is
//! reopened, and nothing that was waiting is reported durable. Open errors ([`WalError::Corruption`],
//! [`WalError::BadMagic`], ...) name the file and offset so that an operator can find them.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::Zxid;

/// Why a segment failed verification.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CorruptionKind {
    /// A record's checksum does not match, and valid records follow it (or it lies in a sealed segment).
    #[error("record checksum mismatch")]
    BadChecksum,
    /// A record header is malformed (its length is impossible) where the log cannot end.
    #[error("malformed record header")]
    BadRecordHeader,
    /// A record's zxid is not above the one before it.
    #[error("zxid {zxid} does not follow {previous}")]
    ZxidOutOfOrder {
        /// The record's zxid.
        zxid: Zxid,
        /// The zxid of the record before it.
        previous: Zxid,
    },
    /// The segment header's checksum does not match.
    #[error("segment header checksum mismatch")]
    BadHeader,
    /// The name of the file does not match the first zxid recorded in its header or its first record.
    #[error("file name says first zxid {named}, content says {found}")]
    NameMismatch {
        /// The zxid the file name carries.
        named: Zxid,
        /// The zxid found inside.
        found: Zxid,
    },
    /// A segment between two others is missing.
    #[error("segment sequence {expected} is missing (found {found})")]
    MissingSegment {
        /// The sequence number that should come next.
        expected: u64,
        /// The sequence number found instead.
        found: u64,
    },
    /// A sealed segment does not end where the next segment's header says it does.
    #[error("sealed segment ends at {found:?} (last zxid {found_zxid}), next segment header says {expected} (last zxid {expected_zxid})")]
    SealMismatch {
        /// The end offset recorded by the next segment.
        expected: u64,
        /// Where the valid records of this segment actually end (None: they run past `expected`).
        found: Option<u64>,
        /// The last zxid recorded by the next segment.
        expected_zxid: Zxid,
        /// The last zxid found in this segment.
        found_zxid: Zxid,
    },
    /// A segment holds no records although later segments exist.
    #[error("sealed segment holds no records")]
    EmptySealedSegment,
}

/// Every error the WAL reports.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An append carried a payload above the configured limit; nothing was written.
    #[error("record payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// An append's zxid is not above the last zxid appended; nothing was written.
    #[error("zxid {zxid} is not above the last appended zxid {last}")]
    ZxidNotIncreasing {
        /// The zxid given.
        zxid: Zxid,
        /// The last zxid already appended.
        last: Zxid,
    },
    /// A write or fsync failed earlier: the log refuses writes until it is reopened.
    #[error("the write-ahead log has failed and refuses writes until reopened: {0}")]
    Failed(#[source] Arc<WalError>),
    /// A batch append with no records.
    #[error("a batch append needs at least one record")]
    EmptyBatch,
    /// The log was closed while the operation waited.
    #[error("the write-ahead log is closed")]
    Closed,
    /// The thread doing the log's IO panicked: what it held may or may not be durable, so the log fails.
    #[error("the thread doing the write-ahead log's IO panicked")]
    IoPanicked,
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
    /// Another process (or another handle in this one) holds the log open.
    #[error("{path} is locked by another open log")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The directory holds a file that no WAL writes.
    #[error("{dir} is not a write-ahead log directory: unexpected file {file:?}")]
    NotAWal {
        /// The directory.
        dir: PathBuf,
        /// The unexpected entry.
        file: String,
    },
    /// A segment file does not start with the WAL magic.
    #[error("{path}: not a WAL segment (bad magic)")]
    BadMagic {
        /// The segment.
        path: PathBuf,
    },
    /// A segment was written by a newer format version.
    #[error("{path}: segment format version {version} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The segment.
        path: PathBuf,
        /// The version found.
        version: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A segment failed verification: the log will not open over it silently.
    #[error("corruption in {segment} at offset {offset}: {kind}")]
    Corruption {
        /// The segment.
        segment: PathBuf,
        /// The byte offset in the segment where valid data stops.
        offset: u64,
        /// What is wrong.
        kind: CorruptionKind,
    },
    /// The base file (see [`crate::Wal::restart_after`]) is damaged.
    #[error("{path}: damaged base file (the log was restarted after a snapshot; it cannot tell where)")]
    BadBase {
        /// The file.
        path: PathBuf,
    },
    /// The log holds a record at or below the zxid it was restarted after.
    #[error("the log was restarted after {base}, but holds {zxid}")]
    RecordBelowBase {
        /// The record's zxid.
        zxid: Zxid,
        /// Where the log begins.
        base: Zxid,
    },
    /// A truncation below the zxid the log was restarted after: the history up to there is in a snapshot, which
    /// the log cannot cut.
    #[error("cannot truncate after {zxid}: the log begins after {base}")]
    TruncateBelowBase {
        /// The zxid asked for.
        zxid: Zxid,
        /// Where the log begins.
        base: Zxid,
    },
    /// The options are inconsistent.
    #[error("invalid WAL options: {0}")]
    InvalidOptions(String),
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> WalError {
        WalError::Io { op, path: path.into(), source }
    }

    /// True for errors after which the log accepts no more writes.
    pub fn is_fatal(&self) -> bool {
        matches!(self, WalError::Failed(_))
    }
}

/// The WAL's result type.
pub type Result<T, E = WalError> = std::result::Result<T, E>;
