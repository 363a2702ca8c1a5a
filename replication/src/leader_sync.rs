//! The leader's side of sync (Zab phase 2), without IO.
//!
//! For each follower that acknowledged the new epoch, the leader plans DIFF / TRUNC / SNAP ([`crate::sync`]),
//! streams what the follower lacks (the node reads it from the WAL or the snapshot: this machine only says what),
//! and sends NEWLEADER. Once a quorum, the leader included, has acknowledged NEWLEADER, the leader persists the
//! new epoch as its own current epoch; only then does it send UPTODATE and start broadcasting. (Persisting it
//! earlier would let a leader that crashes right away win a later election with an epoch no txn of which a
//! quorum holds.) A follower that acknowledges later gets UPTODATE at once.
//!
//! # Invariants
//! - UPTODATE goes out only after a quorum has the new history durable and the leader's current epoch is durable.

use std::collections::BTreeSet;

use wal::{Epoch, Zxid};

use crate::message::{Message, ServerId};
use crate::quorum::Voters;
use crate::sync::{plan, History, SyncPlan};

/// What the node must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Send a message to a follower.
    Send(ServerId, Message),
    /// Send the follower every txn after `after` up to `until` (from the WAL, or memory for txns not yet
    /// durable), each as a PROPOSAL, followed by a COMMIT for those up to `commit_up_to`; in order, on the
    /// follower's connection, before anything sent after this command.
    StreamTxns {
        /// The follower.
        to: ServerId,
        /// The last zxid it has.
        after: Zxid,
        /// The leader's last zxid.
        until: Zxid,
        /// Txns up to this one are committed (during the first sync: none; UPTODATE commits them).
        commit_up_to: Zxid,
    },
    /// Send the follower a snapshot of the history up to a committed zxid of the leader's choosing (SNAP and
    /// its chunks), then the txns after it up to `until`, as [`Command::StreamTxns`] does.
    StreamSnapshot {
        /// The follower.
        to: ServerId,
        /// The leader's last zxid.
        until: Zxid,
        /// Txns up to this one are committed.
        commit_up_to: Zxid,
    },
    /// Make this the leader's current epoch durably; report back with `current_epoch_persisted`.
    PersistCurrentEpoch(Epoch),
    /// These followers are synced: broadcast to them from now on.
    StartBroadcast(Vec<ServerId>),
}

/// The leader's sync of its followers.
#[derive(Debug)]
pub struct LeaderSync {
    me: ServerId,
    voters: Voters,
    epoch: Epoch,
    last_zxid: Zxid,
    acked: BTreeSet<ServerId>,
    /// Followers that were sent NEWLEADER: once the leader broadcasts, proposals go to them too (after
    /// NEWLEADER on their connection), so that none misses a txn between its sync and its UPTODATE.
    syncing: BTreeSet<ServerId>,
    /// Whether the leader's own log is durable up to `last_zxid` (only then does it count in the quorum).
    self_durable: bool,
    epoch_persisting: bool,
    up_to_date: bool,
}

impl LeaderSync {
    /// Sync for a leader of `epoch` whose history ends at `last_zxid`, durable up to `durable`.
    pub fn new(me: ServerId, voters: Voters, epoch: Epoch, last_zxid: Zxid, durable: Zxid) -> LeaderSync {
        let self_durable = durable >= last_zxid;
        LeaderSync {
            me,
            voters,
            epoch,
            last_zxid,
            acked: BTreeSet::new(),
            syncing: BTreeSet::new(),
            self_durable,
            epoch_persisting: false,
            up_to_date: false,
        }
    }

    /// Call once at the start: a leader that is a quorum alone (a one-server ensemble) persists its epoch at once
    /// (once its log is durable).
    pub fn start(&mut self) -> Vec<Command> {
        self.maybe_persist_epoch()
    }

    /// The leader's WAL made everything up to `zxid` durable.
    pub fn persisted(&mut self, zxid: Zxid) -> Vec<Command> {
        if !self.self_durable && zxid >= self.last_zxid {
            self.self_durable = true;
            return self.maybe_persist_epoch();
        }
        Vec::new()
    }

    /// Once a quorum, counting the leader only if its own log is durable, holds the history: persist the epoch.
    fn maybe_persist_epoch(&mut self) -> Vec<Command> {
        if self.epoch_persisting || self.up_to_date {
            return Vec::new();
        }
        let mut members: Vec<ServerId> = self.acked.iter().copied().collect();
        if self.self_durable {
            members.push(self.me);
        }
        if !self.voters.is_quorum(&members) {
            return Vec::new();
        }
        self.epoch_persisting = true;
        vec![Command::PersistCurrentEpoch(self.epoch)]
    }

    /// Starts syncing a follower whose log ends at `follower_last`, while the epoch is being established: its
    /// txns come without COMMIT, and UPTODATE commits the whole history.
    pub fn add_follower(&mut self, follower: ServerId, follower_last: Zxid, history: &impl History) -> Vec<Command> {
        self.sync_follower(follower, follower_last, history, self.last_zxid, Zxid::ZERO, self.last_zxid)
    }

    /// Starts syncing a follower that joins while the leader broadcasts: it gets every txn up to the last
    /// proposed one, COMMITs up to the commit point, and NEWLEADER at the commit point; proposals after that
    /// reach it through the broadcast.
    pub fn add_late_follower(
        &mut self,
        follower: ServerId,
        follower_last: Zxid,
        history: &impl History,
        last_proposed: Zxid,
        committed: Zxid,
    ) -> Vec<Command> {
        self.sync_follower(follower, follower_last, history, last_proposed, committed, committed)
    }

    fn sync_follower(
        &mut self,
        follower: ServerId,
        follower_last: Zxid,
        history: &impl History,
        until: Zxid,
        commit_up_to: Zxid,
        newleader: Zxid,
    ) -> Vec<Command> {
        let mut commands = match plan(history, follower_last) {
            SyncPlan::Diff { after } => vec![
                Command::Send(follower, Message::Diff { zxid: after }),
                Command::StreamTxns { to: follower, after, until, commit_up_to },
            ],
            SyncPlan::TruncThenDiff { to } => vec![
                Command::Send(follower, Message::Trunc { zxid: to }),
                Command::StreamTxns { to: follower, after: to, until, commit_up_to },
            ],
            SyncPlan::Snap => vec![Command::StreamSnapshot { to: follower, until, commit_up_to }],
        };
        commands.push(Command::Send(follower, Message::NewLeader { epoch: self.epoch, zxid: newleader }));
        self.syncing.insert(follower);
        commands
    }

    /// A follower acknowledged NEWLEADER: its log holds the leader's history durably, and its current epoch is
    /// the new one.
    pub fn on_ack_newleader(&mut self, from: ServerId, zxid: Zxid) -> Vec<Command> {
        if zxid < self.last_zxid || from == self.me || !self.syncing.contains(&from) {
            // A history shorter than the one it was sent is not synced; the leader does not ack itself; and an
            // ack from a follower that was sent no NEWLEADER (since it last connected) vouches for nothing.
            return Vec::new();
        }
        if self.up_to_date {
            return vec![Command::Send(from, Message::UpToDate), Command::StartBroadcast(vec![from])];
        }
        self.acked.insert(from);
        self.maybe_persist_epoch()
    }

    /// The leader's current epoch is durable: the followers that acknowledged get UPTODATE.
    pub fn current_epoch_persisted(&mut self) -> Vec<Command> {
        if !self.epoch_persisting || self.up_to_date {
            return Vec::new();
        }
        self.up_to_date = true;
        let mut commands: Vec<Command> = self.acked.iter().map(|&f| Command::Send(f, Message::UpToDate)).collect();
        commands.push(Command::StartBroadcast(self.syncing.iter().copied().collect()));
        commands
    }

    /// A follower's connection is gone: it starts over when it reconnects.
    pub fn remove_follower(&mut self, follower: ServerId) {
        self.syncing.remove(&follower);
    }

    /// Whether the leader serves (UPTODATE went out).
    pub fn is_up_to_date(&self) -> bool {
        self.up_to_date
    }
}
