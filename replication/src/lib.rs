//! Ensemble's replication: ZooKeeper's atomic broadcast (Zab) as state machines without IO, and the wire format
//! servers speak to each other.
//!
//! Done so far: [`message`] (every peer message and the length-prefixed codec), [`election`] (fast leader
//! election), [`quorum`] (majorities and the commit point of cumulative acks) and [`broadcast`] (the leader's
//! proposal pipeline and a follower's log), [`discovery`] (the new epoch) and [`sync`] (the DIFF / TRUNC / SNAP
//! plan), [`follower_sync`] and [`leader_sync`] (both sides of sync, in the order that keeps committed txns).
//! [`peer`] ties the phases together (with heartbeats and step-down, and the read [`barrier`]s that `sync` waits on), [`transport`] carries messages over
//! TCP (secured before its handshake by [`security`]), [`streams`] makes what a syncing follower needs (txns, or a snapshot and txns) as its connection
//! drains, and [`runtime`] drives a peer with a WAL, the snapshot directory and the transport. [`fault`] says
//! whose fault each runtime error is (this server's stops it, a peer's drops the link to it), and [`leave`] why a
//! server goes back to electing; [`monitor`] is what it tells an operator's metrics, [`repairing`] marks a server that
//! takes a damaged part of its log from its peers.
//!
//! # Failpoints
//! With the `failpoints` feature, tests make these IO steps fail (`wal::failpoint!`: `return(EIO)`,
//! `return(ENOSPC)`, and `return(short)` for a write that stops halfway on a full disk); without it they cost
//! nothing. `tests/failpoints.rs` injects each one. The feature turns on the WAL's and the snapshots' too.
//!
//! | name | site |
//! |---|---|
//! | `replication::epochs_create`, `replication::epochs_write` (short), `replication::epochs_fsync`, `replication::epochs_rename`, `replication::epochs_sync_dir` | [`write_epochs`] |
//! | `replication::epochs_read` | [`read_epochs`] |
//! | `replication::repairing_create`, `replication::repairing_write` (short), `replication::repairing_fsync`, `replication::repairing_rename`, `replication::repairing_sync_dir` | [`repairing::mark`] |
//! | `replication::repairing_remove` (and `replication::repairing_sync_dir`) | [`repairing::clear`] |
//! | `replication::repairing_read` | [`repairing::read`] |
//!
//! # Power loss
//! The epochs file and the repair mark go through `wal::fs::FileSystem` (the `_with` functions; the runtime and
//! the plain ones use `StdFs`), so `tests/power_loss.rs` runs them on `wal::fs::SimFs` and cuts the power after
//! every IO step: `cargo test -p replication --test power_loss`.
#![deny(missing_docs)]

pub mod barrier;
pub mod broadcast;
pub mod discovery;
pub mod election;
mod epochs;
pub mod fault;
pub mod follower_sync;
pub mod leader_sync;
pub mod leave;
pub mod message;
pub mod monitor;
pub mod peer;
pub mod quorum;
pub mod repairing;
pub mod runtime;
pub mod security;
pub mod streams;
pub mod sync;
pub mod transport;

/// The `tracing` target of the write path's timeline: TRACE events, each with the txn's `zxid` or the request's
/// `session` and `cxid`, at every hand-off of a write (`scripts/latency-breakdown` turns them into where a
/// lone client's write spends its time). Off unless `RUST_LOG` asks for `latency=trace`.
pub const LATENCY: &str = "latency";

/// The epochs file in a server's log directory, for the tools that lay out a data directory by hand
/// (`ensemble import`) or read one (`ensemble export`).
pub use epochs::{read_epochs, read_epochs_with, write_epochs, write_epochs_with, EpochsError};
