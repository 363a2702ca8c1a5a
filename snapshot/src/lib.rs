//! Fuzzy snapshots of the znode tree, their retention, and recovery from the newest valid snapshot plus the WAL.
//!
//! - [`write::write_fuzzy`] copies the tree in chunks under a read lock while txns go on being applied; the
//!   file ([`format`](mod@format)) is checksummed, written under a temporary name, fsynced, renamed, and the directory
//!   fsynced.
//! - [`recover::recover`] loads the newest snapshot that verifies and replays the WAL after its start zxid,
//!   checking the digest the snapshot recorded at its end zxid.
//! - [`retain::retain`] keeps the newest N valid snapshots and purges the WAL segments none of them needs.
//! - [`transfer`] ships a consistent snapshot to a follower too far behind for a DIFF, and installs it there
//!   without a moment in which the follower holds less history durably than before.
//! - [`inspect`] looks at snapshot files without changing them: summaries, their records one by one, and a
//!   full verification (checksum, structure, digest), for `ensemble snapshot ...`.
//! - [`policy::SnapPolicy`] says when to snapshot (ZooKeeper's randomised `snapCount`).
//!
//! # Filesystem
//! Every file this crate writes or reads (snapshots, their retention, transfers in and out, recovery) goes
//! through [`wal::fs::FileSystem`]: each entry point has a `_with(fs, ...)` twin, and the plain one runs on the
//! real disk ([`wal::fs::StdFs`]). Tests run them on `wal::fs::SimFs`, which loses power
//! (`tests/power_loss.rs`). Only [`inspect`], a read-only operator tool, opens files directly.
//!
//! # Failpoints
//! With the `failpoints` feature, tests make these IO steps fail (`wal::failpoint!`: `return(EIO)`,
//! `return(ENOSPC)`, and `return(short)` for a write that stops halfway on a full disk); without it they cost
//! nothing. `tests/failpoints.rs` injects each one.
//!
//! | name | site |
//! |---|---|
//! | `snapshot::create`, `snapshot::write` (short), `snapshot::fsync`, `snapshot::rename`, `snapshot::sync_dir` | [`write::write_fuzzy`] (the directory fsync is retention's too) |
//! | `snapshot::delete` | [`retain::retain`] deleting an old snapshot (its WAL purge fails at `wal::remove`) |
//! | `snapshot::open`, `snapshot::mmap` | [`read::load`] and [`read::check`], so recovery and retention |
//! | `snapshot::transfer_create`, `snapshot::transfer_write` (short), `snapshot::transfer_fsync`, `snapshot::transfer_stage` | [`transfer::Incoming`] |
//! | `snapshot::transfer_install`, `snapshot::transfer_delete`, `snapshot::transfer_list`, `snapshot::transfer_sync_dir` | [`transfer::install`], [`transfer::finish_installs`] and every transfer directory fsync |
//! | `snapshot::prepare_clear`, `snapshot::prepare_create`, `snapshot::prepare_open` | [`transfer::prepare`] (the leader's private copy; writing it goes through `snapshot::create` ... `snapshot::sync_dir`) |
//! | `snapshot::list`, `snapshot::remove_partial` | [`dir::list`] (recovery, retention, the transfer's newest snapshot) and [`dir::remove_partial`] |
#![deny(missing_docs)]

pub mod dir;
pub mod error;
pub mod format;
pub mod inspect;
pub mod policy;
pub mod read;
pub mod recover;
pub mod retain;
pub mod transfer;
pub mod write;

pub use error::SnapshotError;
