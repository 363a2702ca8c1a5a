//! What can go wrong reading or writing ZooKeeper's files: always with the file, and for damage the offset.

use std::path::{Path, PathBuf};

/// Why a ZooKeeper file or directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ZkDataError {
    /// The OS refused a read or a write.
    #[error("{}: cannot {op}: {source}", file.display())]
    Io {
        /// The file or directory.
        file: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file is damaged or is not what its name says. In a `.gz` or `.snappy` snapshot the offset counts the
    /// decompressed bytes (the stream the checksum covers).
    #[error("{} at offset {offset}: {kind}", file.display())]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// Where the damaged record or field begins.
        offset: u64,
        /// What is wrong there.
        kind: Corruption,
    },
    /// The files are each sound but together do not make a state ZooKeeper would serve (no snapshot, a gap in
    /// the logs, ...).
    #[error("{}: {reason}", dir.display())]
    Unusable {
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What is wrong at a [`ZkDataError::Corrupt`] offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// The file header's magic is not the one of this kind of file.
    #[error("bad magic {found:#010x}, expected {expected:#010x} ({what})")]
    BadMagic {
        /// The magic read.
        found: u32,
        /// The magic expected.
        expected: u32,
        /// The kind of file expected.
        what: &'static str,
    },
    /// A header version this reader does not know.
    #[error("unsupported file version {0}")]
    BadVersion(i32),
    /// An Adler32 checksum does not match the bytes it covers.
    #[error("checksum mismatch: stored {stored:#x}, computed {computed:#x}")]
    Checksum {
        /// The checksum in the file.
        stored: u64,
        /// The checksum of the bytes.
        computed: u64,
    },
    /// The file ends inside a record (and not in a log's preallocated zero tail).
    #[error("truncated: the file ends inside a record")]
    Truncated,
    /// A length field is negative or larger than the limit (`jute.maxbuffer`-like, and the file's size).
    #[error("length {len} is out of bounds (limit {limit})")]
    BadLength {
        /// The length read.
        len: i64,
        /// The largest accepted.
        limit: u64,
    },
    /// A record that does not decode or does not fit the state before it.
    #[error("{0}")]
    Invalid(String),
    /// The tree's digest after a txn differs from the one ZooKeeper recorded there.
    #[error("digest mismatch at zxid {zxid:#x}: ZooKeeper recorded {recorded:#x}, the tree has {computed:#x}")]
    Digest {
        /// The zxid at which the digest was recorded.
        zxid: i64,
        /// ZooKeeper's digest.
        recorded: u64,
        /// The digest of the tree rebuilt here.
        computed: u64,
    },
    /// A `.gz` or `.snappy` stream that does not decompress.
    #[error("compressed stream: {0}")]
    Compression(String),
}

impl ZkDataError {
    /// An IO error on `file`.
    pub fn io(file: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> ZkDataError {
        let file = file.to_path_buf();
        move |source| ZkDataError::Io { file, op, source }
    }

    /// Damage in `file` at `offset`.
    pub fn corrupt(file: &Path, offset: u64, kind: Corruption) -> ZkDataError {
        ZkDataError::Corrupt { file: file.to_path_buf(), offset, kind }
    }

    /// The damage found, if this is damage.
    pub fn corruption(&self) -> Option<(&Path, u64, &Corruption)> {
        match self {
            ZkDataError::Corrupt { file, offset, kind } => Some((file, *offset, kind)),
            _ => None,
        }
    }
}
