//! A follower's side of sync (Zab phase 2), without IO, in the order that keeps every committed txn.
//!
//! The leader sends DIFF, TRUNC or SNAP, then the missing txns (PROPOSAL, and COMMIT for the committed ones),
//! then NEWLEADER, and after a quorum has acknowledged NEWLEADER, UPTODATE. The follower:
//! 1. appends the synced txns to its WAL (after cutting its log for TRUNC, or installing the snapshot for SNAP);
//! 2. applies only txns the leader committed, and only once logged;
//! 3. on NEWLEADER, waits until every synced txn is durable, THEN persists the new epoch as its current epoch,
//!    THEN acknowledges NEWLEADER;
//! 4. on UPTODATE, applies the leader's history up to NEWLEADER (a quorum has it: it is committed) and enters
//!    the broadcast phase, acknowledging whatever became durable meanwhile.
//!
//! Apache ZooKeeper lost committed txns where it broke this order: applying uncommitted DIFF txns
//! (ZOOKEEPER-3911), updating the current epoch before the txns were durable (ZOOKEEPER-4643), acknowledging
//! NEWLEADER before writing the txns (ZOOKEEPER-4646), and acknowledging while txns still sat in a queue
//! (ZOOKEEPER-4785). The tests name each.

use bytes::Bytes;
use wal::{Epoch, Zxid};

use crate::broadcast::FollowerBroadcast;
use crate::message::{Message, ServerId};

/// What the node must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Send a message to the leader.
    Send(ServerId, Message),
    /// Cut the WAL after this zxid, durably, and roll the tree back to it (reload from snapshot + WAL).
    Truncate(Zxid),
    /// Store this snapshot chunk (the node writes it to a temporary file).
    SnapshotChunk {
        /// Where the chunk goes.
        offset: u64,
        /// Its bytes.
        data: Bytes,
    },
    /// The snapshot is complete: verify and install it as the state at this zxid.
    InstallSnapshot(Zxid),
    /// Append a txn to the WAL; the node reports back with `persisted`.
    Append(Zxid, Bytes),
    /// Apply every logged txn up to this zxid.
    Apply(Zxid),
    /// Make this the current epoch durably; the node reports back with `current_epoch_persisted`.
    PersistCurrentEpoch(Epoch),
    /// Sync is over: continue in the broadcast phase.
    Synced,
}

/// A violation of the sync protocol by the leader: the follower drops the connection and re-elects.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// A message came in a phase where it makes no sense.
    #[error("unexpected {0} during sync")]
    Unexpected(&'static str),
    /// DIFF from a point that is not this follower's end of log.
    #[error("DIFF after {after}, but the log ends at {last}")]
    DiffMismatch {
        /// Where the leader starts.
        after: Zxid,
        /// Where this follower's log ends.
        last: Zxid,
    },
    /// A proposal that skips zxids of an epoch.
    #[error("proposal {got} after {last}: a gap")]
    Gap {
        /// The proposal's zxid.
        got: Zxid,
        /// The last zxid logged.
        last: Zxid,
    },
    /// A proposal not after the last one.
    #[error("proposal {got} after {last}")]
    OutOfOrder {
        /// The proposal's zxid.
        got: Zxid,
        /// The last zxid logged.
        last: Zxid,
    },
    /// TRUNC to a point after this follower's end of log: nothing to cut, and the log would claim txns it
    /// does not hold.
    #[error("TRUNC to {to}, but the log ends at {last}")]
    TruncAhead {
        /// Where the leader cuts.
        to: Zxid,
        /// Where this follower's log ends.
        last: Zxid,
    },
    /// A snapshot chunk not where the last one ended.
    #[error("snapshot chunk at {got}, expected {expected}")]
    ChunkGap {
        /// Its offset.
        got: u64,
        /// The expected offset.
        expected: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for DIFF, TRUNC or SNAP.
    Start,
    /// Receiving a snapshot.
    Snapshot { zxid: Zxid, total: u64, received: u64 },
    /// Receiving txns.
    Txns,
    /// NEWLEADER received; waiting for the txns logged before it (up to `until`) to be durable.
    AwaitDurable { epoch: Epoch, zxid: Zxid, until: Zxid },
    /// The current epoch is being persisted.
    AwaitEpoch { zxid: Zxid },
    /// NEWLEADER (for the history up to `zxid`) acknowledged; waiting for UPTODATE.
    Acked { zxid: Zxid },
}

/// A follower's sync.
#[derive(Debug)]
pub struct FollowerSync {
    leader: ServerId,
    phase: Phase,
    logged: Zxid,
    durable: Zxid,
    committed: Zxid,
    applied: Zxid,
}

impl FollowerSync {
    /// Sync with `leader` of a follower whose log ends at `logged`, durable up to `durable` (the WAL may still
    /// be writing the rest), and applied up to `applied`.
    pub fn new(leader: ServerId, logged: Zxid, durable: Zxid, applied: Zxid) -> FollowerSync {
        debug_assert!(durable <= logged && applied <= logged);
        FollowerSync { leader, phase: Phase::Start, logged, durable, committed: applied, applied }
    }

    /// Handles a message from the leader.
    pub fn on_message(&mut self, message: Message) -> Result<Vec<Command>, SyncError> {
        match (self.phase, message) {
            (Phase::Start, Message::Diff { zxid }) => {
                if zxid != self.logged {
                    return Err(SyncError::DiffMismatch { after: zxid, last: self.logged });
                }
                self.phase = Phase::Txns;
                Ok(Vec::new())
            }
            (Phase::Start, Message::Trunc { zxid }) => {
                if zxid > self.logged {
                    return Err(SyncError::TruncAhead { to: zxid, last: self.logged });
                }
                self.phase = Phase::Txns;
                (self.logged, self.durable) = (zxid, self.durable.min(zxid));
                (self.committed, self.applied) = (self.committed.min(zxid), self.applied.min(zxid));
                Ok(vec![Command::Truncate(zxid)])
            }
            (Phase::Start, Message::Snap { zxid, total_bytes }) => {
                self.phase = Phase::Snapshot { zxid, total: total_bytes, received: 0 };
                Ok(Vec::new())
            }
            (Phase::Snapshot { zxid, total, received }, Message::SnapChunk { offset, data }) => {
                if offset != received {
                    return Err(SyncError::ChunkGap { got: offset, expected: received });
                }
                let received = received.saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
                let mut commands = vec![Command::SnapshotChunk { offset, data }];
                if received >= total {
                    // The installed snapshot is durable (written, fsynced) and applied: the log restarts there.
                    commands.push(Command::InstallSnapshot(zxid));
                    (self.logged, self.durable, self.committed, self.applied) = (zxid, zxid, zxid, zxid);
                    self.phase = Phase::Txns;
                } else {
                    self.phase = Phase::Snapshot { zxid, total, received };
                }
                Ok(commands)
            }
            (
                Phase::Txns | Phase::AwaitDurable { .. } | Phase::AwaitEpoch { .. } | Phase::Acked { .. },
                Message::Proposal { zxid, txn },
            ) => {
                if zxid <= self.logged {
                    return Err(SyncError::OutOfOrder { got: zxid, last: self.logged });
                }
                if !crate::broadcast::follows(self.logged, zxid) {
                    return Err(SyncError::Gap { got: zxid, last: self.logged });
                }
                self.logged = zxid;
                Ok(vec![Command::Append(zxid, txn)])
            }
            (
                Phase::Txns | Phase::AwaitDurable { .. } | Phase::AwaitEpoch { .. } | Phase::Acked { .. },
                Message::Commit { zxid },
            ) => {
                self.committed = self.committed.max(zxid);
                Ok(self.apply_ready())
            }
            (Phase::Txns, Message::NewLeader { epoch, zxid }) => {
                self.phase = Phase::AwaitDurable { epoch, zxid, until: self.logged };
                Ok(self.epoch_when_durable())
            }
            (Phase::Acked { zxid }, Message::UpToDate) => {
                // A quorum acknowledged NEWLEADER: the leader's whole history up to it is committed now, including
                // txns of an older epoch that the old leader never committed.
                self.committed = self.committed.max(zxid);
                let mut commands = self.apply_ready();
                commands.push(Command::Synced);
                Ok(commands)
            }
            (_, m) => Err(SyncError::Unexpected(name(&m))),
        }
    }

    /// The WAL made everything up to `zxid` durable.
    pub fn persisted(&mut self, zxid: Zxid) -> Vec<Command> {
        self.durable = self.durable.max(zxid.min(self.logged));
        self.epoch_when_durable()
    }

    /// Once every txn synced before NEWLEADER is durable, persist the epoch (never before).
    fn epoch_when_durable(&mut self) -> Vec<Command> {
        match self.phase {
            Phase::AwaitDurable { epoch, zxid, until } if self.durable >= until => {
                self.phase = Phase::AwaitEpoch { zxid };
                vec![Command::PersistCurrentEpoch(epoch)]
            }
            _ => Vec::new(),
        }
    }

    /// The current epoch is durable: acknowledge NEWLEADER.
    pub fn current_epoch_persisted(&mut self) -> Vec<Command> {
        match self.phase {
            Phase::AwaitEpoch { zxid } => {
                self.phase = Phase::Acked { zxid };
                vec![Command::Send(self.leader, Message::AckNewLeader { zxid })]
            }
            _ => Vec::new(),
        }
    }

    fn apply_ready(&mut self) -> Vec<Command> {
        let ready = self.committed.min(self.logged);
        if ready > self.applied {
            self.applied = ready;
            return vec![Command::Apply(ready)];
        }
        Vec::new()
    }

    /// After [`Command::Synced`]: the broadcast phase, with one ack for what became durable meanwhile.
    pub fn into_broadcast(self) -> (FollowerBroadcast, Vec<Command>) {
        let mut broadcast =
            FollowerBroadcast::resume(self.leader, self.logged, self.durable, self.committed, self.applied);
        let acks = broadcast.ack_durable();
        let commands = acks.into_iter().map(|c| match c {
            crate::broadcast::Command::Send(to, m) => Command::Send(to, m),
            other => unreachable!("ack_durable only sends: {other:?}"),
        });
        (broadcast, commands.collect())
    }

    /// The last zxid logged.
    pub fn logged(&self) -> Zxid {
        self.logged
    }
}

fn name(m: &Message) -> &'static str {
    match m {
        Message::Notification(_) => "NOTIFICATION",
        Message::FollowerInfo { .. } => "FOLLOWERINFO",
        Message::LeaderInfo { .. } => "LEADERINFO",
        Message::AckEpoch { .. } => "ACKEPOCH",
        Message::Diff { .. } => "DIFF",
        Message::Trunc { .. } => "TRUNC",
        Message::Snap { .. } => "SNAP",
        Message::SnapChunk { .. } => "SNAP chunk",
        Message::NewLeader { .. } => "NEWLEADER",
        Message::AckNewLeader { .. } => "ACK of NEWLEADER",
        Message::UpToDate => "UPTODATE",
        Message::Proposal { .. } => "PROPOSAL",
        Message::Ack { .. } => "ACK",
        Message::Commit { .. } => "COMMIT",
        Message::Ping { .. } => "PING",
        Message::Digest { .. } => "DIGEST",
        Message::Forward { .. } => "FORWARD",
    }
}
