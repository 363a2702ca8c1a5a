//! Whose fault an error of the replication runtime is, in its type.
//!
//! - A [`LocalFault`] is this server's: its disk failed (an fsync, a write, an epoch file, installing a snapshot
//!   on our disk) or its own state stopped adding up. Going on could acknowledge what is not durable or serve a
//!   tree that no longer follows the leader, so the runtime stops (never retries: see "fsyncgate").
//! - A [`PeerFault`] is another server's: it sent something this server cannot take (a snapshot chunk at the
//!   wrong offset, a snapshot that does not verify, a txn the WAL refuses, a TRUNC below our snapshot). The link
//!   to that peer is dropped, this server restarts its protocol from what is on its disk (as after a restart,
//!   without one), and carries on: it re-elects and re-syncs.
//!
//! Faults of a peer found by the transport (a frame that does not decode or is over the size bound, an unknown
//! or duplicate server id, a peer that stops reading) are [`crate::transport::LinkFault`]s, and faults found by
//! the protocol (a message that makes no sense in the current phase) are [`crate::leave::Violation`]s: both only
//! ever drop a link.

use snapshot::SnapshotError;
use wal::{Epoch, WalError, Zxid};

use crate::message::ServerId;

/// A fault of this server: it stops.
#[derive(Debug, thiserror::Error)]
pub enum LocalFault {
    /// The WAL failed (a write, an fsync, a truncation, a restart).
    #[error("WAL: {op} {zxid}: {source}")]
    Wal {
        /// What was being done.
        op: &'static str,
        /// The zxid it was done at.
        zxid: Zxid,
        /// Why it failed.
        #[source]
        source: WalError,
    },
    /// The epochs file could not be made durable.
    #[error("persist epochs (accepted {accepted}, current {current}): {source}")]
    Epochs {
        /// The accepted epoch being written.
        accepted: Epoch,
        /// The current epoch being written.
        current: Epoch,
        /// Why it failed: the step and the file.
        #[source]
        source: crate::epochs::EpochsError,
    },
    /// The thread that writes the epochs file is gone.
    #[error("the epochs writer thread is gone")]
    EpochsWriterGone,
    /// The repair mark could not be removed once the server synced.
    #[error("clear the repair mark: {0}")]
    Repairing(#[source] crate::repairing::RepairingError),
    /// Storing, staging or installing the leader's snapshot failed on this server's disk.
    #[error("snapshot from the leader: {op}: {source}")]
    Snapshot {
        /// What was being done.
        op: &'static str,
        /// Why it failed.
        #[source]
        source: SnapshotError,
    },
    /// The leader sent a snapshot and this server has no snapshot directory (its configuration).
    #[error("the leader sent a snapshot, and this server has no snapshot directory")]
    NoSnapshotDirectory,
    /// A blocking task doing this server's disk work panicked or was cancelled.
    #[error("blocking disk task for {op}: {reason}")]
    Task {
        /// What it was doing.
        op: &'static str,
        /// The join error.
        reason: String,
    },
    /// The log and the txns held for the node disagree: applying would skip txns.
    #[error("committed txns {from}..={to}: {logged} in the log, {held} held for the node")]
    Undeliverable {
        /// The first zxid to deliver.
        from: Zxid,
        /// The last.
        to: Zxid,
        /// How many the log has in that range.
        logged: usize,
        /// How many are held in memory.
        held: usize,
    },
    /// The node stopped consuming the committed stream while it had to rebuild.
    #[error("the node is gone")]
    NodeGone,
    /// The protocol asked to store or install a snapshot while this server follows no leader (a bug here).
    #[error("snapshot data to store while following no leader")]
    NotFollowing,
}

/// A fault of another server: the link to it drops, and this server carries on.
#[derive(Debug, thiserror::Error)]
pub enum PeerFault {
    /// A snapshot chunk that does not start where the received bytes end.
    #[error("snapshot chunk at offset {got}, expected {expected}")]
    ChunkOutOfOrder {
        /// Its offset.
        got: u64,
        /// Where the received bytes end.
        expected: u64,
    },
    /// A snapshot chunk, or the end of a snapshot, with no snapshot begun.
    #[error("snapshot data without a SNAP that began it")]
    ChunkWithoutSnap,
    /// The snapshot received does not verify as the history up to the zxid the leader announced, or a chunk
    /// of it does not fit.
    #[error("the snapshot it sent does not verify: {source}")]
    BadSnapshot {
        /// What is wrong with it.
        #[source]
        source: SnapshotError,
    },
    /// A txn this server's WAL refuses to log (over the record size limit, or not above the last zxid logged):
    /// nothing was written.
    #[error("it sent txn {zxid}, which this server cannot log: {source}")]
    UnloggableTxn {
        /// The txn's zxid.
        zxid: Zxid,
        /// Why the WAL refused it.
        #[source]
        source: WalError,
    },
    /// A TRUNC below the snapshot this server's log starts after: nothing was cut.
    #[error("it asked to cut the log after {zxid}, below where the log begins: {source}")]
    TruncBelowBase {
        /// Where it asked to cut.
        zxid: Zxid,
        /// The WAL's refusal.
        #[source]
        source: WalError,
    },
}

/// An error of the runtime, by whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// This server's: it stops.
    #[error("local fault: {0}")]
    Local(#[from] LocalFault),
    /// A peer's: the link to it drops.
    #[error("fault of server {}: {fault}", peer.0)]
    Peer {
        /// The peer.
        peer: ServerId,
        /// What it did.
        fault: PeerFault,
    },
}

impl Fault {
    /// A WAL error while doing `op` at `zxid` for what `leader` sent (`None`: for this server's own proposals).
    /// Only a refusal that wrote nothing and that the sender caused is the sender's fault.
    pub fn wal(op: &'static str, zxid: Zxid, source: WalError, leader: Option<ServerId>) -> Fault {
        match (leader, source) {
            (Some(peer), source @ (WalError::PayloadTooLarge { .. } | WalError::ZxidNotIncreasing { .. })) => {
                Fault::Peer { peer, fault: PeerFault::UnloggableTxn { zxid, source } }
            }
            (Some(peer), source @ WalError::TruncateBelowBase { .. }) => {
                Fault::Peer { peer, fault: PeerFault::TruncBelowBase { zxid, source } }
            }
            (_, source) => Fault::Local(LocalFault::Wal { op, zxid, source }),
        }
    }

    /// A snapshot error while doing `op` with what `leader` sent: a failed read or write of our disk is ours;
    /// a chunk out of place, or bytes that do not verify, are the leader's.
    pub fn snapshot(op: &'static str, source: SnapshotError, leader: ServerId) -> Fault {
        match source {
            SnapshotError::Transfer(_)
            | SnapshotError::BadMagic { .. }
            | SnapshotError::UnsupportedVersion { .. }
            | SnapshotError::Corrupt { .. } => Fault::Peer { peer: leader, fault: PeerFault::BadSnapshot { source } },
            source => Fault::Local(LocalFault::Snapshot { op, source }),
        }
    }

    /// A blocking task that did not finish.
    pub fn task(op: &'static str, error: tokio::task::JoinError) -> Fault {
        Fault::Local(LocalFault::Task { op, reason: error.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io() -> std::io::Error {
        std::io::Error::other("EIO")
    }

    #[test]
    fn a_snapshot_that_does_not_verify_is_the_leaders_fault_a_disk_error_ours() {
        let leader = ServerId(2);
        let corrupt = SnapshotError::Corrupt { path: "x".into(), reason: "crc".into() };
        assert!(matches!(Fault::snapshot("stage", corrupt, leader), Fault::Peer { peer, .. } if peer == leader));
        let transfer = SnapshotError::Transfer("chunk at 9, expected 0".into());
        assert!(matches!(Fault::snapshot("write", transfer, leader), Fault::Peer { .. }));
        let disk = SnapshotError::Io { op: "fsync", path: "x".into(), source: io() };
        assert!(matches!(Fault::snapshot("stage", disk, leader), Fault::Local(LocalFault::Snapshot { .. })));
    }

    #[test]
    fn a_wal_refusal_of_what_the_leader_sent_is_the_leaders_fault_a_failed_write_ours() {
        let leader = Some(ServerId(3));
        let big = WalError::PayloadTooLarge { len: 10, max: 5 };
        assert!(matches!(Fault::wal("append", Zxid(1), big, leader), Fault::Peer { .. }));
        let own = WalError::PayloadTooLarge { len: 10, max: 5 };
        assert!(matches!(Fault::wal("append", Zxid(1), own, None), Fault::Local(_)), "our own proposal: ours");
        let stale = WalError::ZxidNotIncreasing { zxid: Zxid(2), last: Zxid(2) };
        assert!(matches!(Fault::wal("append", Zxid(2), stale, leader), Fault::Peer { .. }));
        let own = WalError::ZxidNotIncreasing { zxid: Zxid(2), last: Zxid(2) };
        assert!(matches!(Fault::wal("append", Zxid(2), own, None), Fault::Local(_)), "our own proposal: ours");
        let below = WalError::TruncateBelowBase { zxid: Zxid(1), base: Zxid(4) };
        assert!(matches!(Fault::wal("truncate", Zxid(1), below, leader), Fault::Peer { .. }));
        let failed = WalError::Io { op: "fdatasync", path: "log".into(), source: io() };
        assert!(matches!(Fault::wal("append", Zxid(1), failed, leader), Fault::Local(_)));
    }
}
