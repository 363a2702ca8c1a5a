//! Ensemble's write-ahead log: a segmented, append-only commit log of zxid-keyed records with group-commit
//! fsync.
//!
//! Every node appends each proposal here and acknowledges it only once [`Wal::append`]'s [`Pending`] has
//! completed, that is, once an `fdatasync` covering the record has returned. One writer thread serves every
//! appender: while one fdatasync runs, new appends queue up, and the next fdatasync covers them all.
//!
//! - [`record`] owns the record format, [`segment::format`] the segment file format, `base` the file that
//!   says where a log restarted after a snapshot begins ([`Wal::restart_after`]).
//! - Recovery ([`Wal::open`]) verifies every checksum, cuts a torn tail, and refuses corruption with an error
//!   naming the segment and offset; [`repair`] is the explicit way to cut a corrupt log.
//! - Reads ([`Wal::iter_from`]) go through memory maps of the durable part of the log.
//! - Every file the log touches goes through the [`fs::FileSystem`] seam: [`Wal::open`] uses the real one
//!   ([`fs::StdFs`]: fallocate, flock, memory maps), [`Wal::open_with`] and [`repair_with`] take any. With the
//!   `sim` feature, [`fs::SimFs`](crate::fs) is an in-memory disk that loses power: at a cut it keeps what was
//!   fsynced and, by seed, any torn part of the rest. `tests/power_loss.rs` cuts the power after every IO step
//!   of a workload (appends, rolls, spares, truncate, purge, restart) and checks every acknowledged append
//!   after reopening: `cargo test -p wal --test power_loss -- --nocapture` (`WAL_POWER_LOSS_SEEDS=N` for more
//!   seeds per step).
//! - [`inspect`] looks at a log directory without changing it (no lock, no cut, read-only files): segments,
//!   seals, the first problem, what [`repair`] would drop, and the records of the valid prefix. Operators' tools
//!   (`ensemble wal ...`) are built on it.
//!
//! ```
//! use wal::{Wal, WalOptions, Zxid};
//!
//! let dir = tempfile::tempdir()?;
//! let (log, _recovery) = Wal::open(dir.path(), WalOptions::default())?;
//! let durable = log.append(Zxid(1), &b"create /a"[..])?;
//! assert_eq!(durable.wait()?, Zxid(1)); // fsynced now
//! let records: Vec<_> = log.iter_from(Zxid(1)).collect::<Result<_, _>>()?;
//! assert_eq!(&records[0].payload[..], b"create /a");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod base;
mod error;
pub mod fs;
mod fsutil;
mod inspect;
mod options;
mod pending;
mod queue;
pub mod record;
mod repair;
mod scan;
pub mod segment;
mod stats;
mod view;
mod wal;
mod writer;
mod zxid;

pub use base::Base;
pub use error::{CorruptionKind, Result, WalError};
pub use inspect::{
    inspect, inspect_with_progress, BaseState, Corruption, Inspection, Problem, Progress, SegmentState, SegmentSummary,
};
pub use options::{BatchObserver, SyncMode, WalOptions, DEFAULT_MAX_PAYLOAD};
pub use pending::Pending;
pub use repair::{repair, repair_with, RepairPlan, Repaired};
pub use scan::TornTail;
pub use stats::WalStats;
pub use view::{Record, WalIter};
pub use wal::{Purged, Recovery, SyncAppend, Wal};
pub use zxid::{Epoch, Zxid};

/// Creates `dir` and any missing parents so that they survive a power cut: each new directory's parent is
/// fsynced, since fsyncing a directory makes its entries durable, not its own name. For the data directories
/// the server creates around the log (the log's own goes through [`Wal::open`]).
pub fn create_dir_durably(dir: &std::path::Path) -> Result<()> {
    wal::create_dir_durably(&fs::StdFs, dir)
}

/// Makes `dir`'s entries (creations, renames, deletions) durable: an fsync of the directory.
pub fn sync_dir(dir: &std::path::Path) -> Result<()> {
    fsutil::sync_dir(&fs::StdFs, dir)
}

/// Like [`sync_dir`], on the filesystem `fs`.
pub fn sync_dir_with(fs: &dyn fs::FileSystem, dir: &std::path::Path) -> Result<()> {
    fsutil::sync_dir(fs, dir)
}

#[doc(hidden)]
pub use fail as __fail;
#[doc(hidden)]
pub use fsutil::injected as __injected;
