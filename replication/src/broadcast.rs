//! The broadcast phase (Zab phase 3) as state machines without IO: the leader's proposal pipeline and a
//! follower's log, each turning events into commands.
//!
//! Leader: a write gets the next zxid of the epoch and becomes a PROPOSAL to every synced follower and an append
//! to the leader's own WAL; at most `window` proposals are in flight (back-pressure beyond). Acks are cumulative;
//! the leader's own fsync is one vote. When a quorum has a zxid durable, the leader sends one cumulative COMMIT
//! and applies everything up to it, in zxid order.
//!
//! Follower: a proposal must come in zxid order; it is appended to the WAL. When the WAL reports a batch durable,
//! the follower sends ONE cumulative ACK for the highest durable zxid. A COMMIT applies everything logged up to it.
//!
//! # Invariants
//! - `applied <= committed <= logged` on every member, and zxids are strictly increasing.
//! - Nothing is acked before the WAL says it is durable; nothing is committed before a quorum acked it.

use std::collections::{BTreeSet, VecDeque};

use bytes::Bytes;
use wal::{Epoch, Zxid};

use crate::message::{Message, ServerId};
use crate::quorum::{AckTracker, Voters};

/// What the node must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Send a message to a peer.
    Send(ServerId, Message),
    /// Append a txn to the local WAL (the node reports back with `persisted`).
    Append(Zxid, Bytes),
    /// Apply every logged txn up to this zxid to the tree, in order.
    Apply(Zxid),
}

/// Why a proposal was not made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// The window of proposals in flight is full: wait for commits.
    #[error("{0} proposals in flight: wait for commits")]
    WindowFull(usize),
    /// This server is not a leader that broadcasts (it follows, is electing, or is still syncing followers).
    #[error("not the leader, or not serving yet")]
    NotLeading,
    /// The epoch's 32-bit counter is used up: a new epoch (a new election) is needed.
    #[error("the counter of epoch {0} is exhausted; a new epoch is needed")]
    EpochExhausted(Epoch),
}

/// The leader's side.
#[derive(Debug)]
pub struct LeaderBroadcast {
    me: ServerId,
    epoch: Epoch,
    last_proposed: Zxid,
    /// Followers that have synced and receive proposals.
    followers: BTreeSet<ServerId>,
    in_flight: VecDeque<Zxid>,
    window: usize,
    acks: AckTracker,
}

impl LeaderBroadcast {
    /// The broadcast phase of a leader of `epoch` whose log ends at `last_zxid` (all of it committed by the
    /// sync phase).
    pub fn new(me: ServerId, voters: Voters, epoch: Epoch, last_zxid: Zxid, window: usize) -> LeaderBroadcast {
        assert!(window > 0, "a window of at least one proposal");
        let start = Zxid::new(epoch, 0).max(last_zxid);
        LeaderBroadcast {
            me,
            epoch,
            last_proposed: start,
            followers: BTreeSet::new(),
            in_flight: VecDeque::new(),
            window,
            acks: AckTracker::new(voters, start),
        }
    }

    /// A follower finished syncing: proposals go to it from now on.
    pub fn add_follower(&mut self, follower: ServerId) {
        self.followers.insert(follower);
    }

    /// Whether `follower` gets the proposals.
    pub fn has_follower(&self, follower: ServerId) -> bool {
        self.followers.contains(&follower)
    }

    /// A follower disconnected.
    pub fn remove_follower(&mut self, follower: ServerId) {
        self.followers.remove(&follower);
        self.acks.forget(follower);
    }

    /// Proposes a txn: its zxid and the commands (append locally, send to each follower).
    pub fn propose(&mut self, txn: Bytes) -> Result<(Zxid, Vec<Command>), ProposeError> {
        if self.in_flight.len() >= self.window {
            return Err(ProposeError::WindowFull(self.in_flight.len()));
        }
        let zxid = self.next_zxid().ok_or(ProposeError::EpochExhausted(self.epoch))?;
        debug_assert!(zxid > self.last_proposed);
        self.last_proposed = zxid;
        self.in_flight.push_back(zxid);
        let mut commands = Vec::with_capacity(1 + self.followers.len());
        commands.push(Command::Append(zxid, txn.clone()));
        commands.extend(self.followers.iter().map(|&f| Command::Send(f, Message::Proposal { zxid, txn: txn.clone() })));
        Ok((zxid, commands))
    }

    fn next_zxid(&self) -> Option<Zxid> {
        if self.last_proposed.epoch() == self.epoch {
            self.last_proposed.next_in_epoch()
        } else {
            Some(Zxid::new(self.epoch, 1))
        }
    }

    /// The leader's own WAL made everything up to `zxid` durable.
    pub fn persisted(&mut self, zxid: Zxid) -> Vec<Command> {
        let me = self.me;
        self.on_ack(me, zxid)
    }

    /// A follower acked everything up to `zxid`.
    pub fn on_ack(&mut self, from: ServerId, zxid: Zxid) -> Vec<Command> {
        if zxid > self.last_proposed {
            // An ack for something never proposed: a confused or malicious peer. Ignore it.
            return Vec::new();
        }
        let Some(committed) = self.acks.ack(from, zxid) else { return Vec::new() };
        while self.in_flight.front().is_some_and(|&z| z <= committed) {
            self.in_flight.pop_front();
        }
        let mut commands: Vec<Command> =
            self.followers.iter().map(|&f| Command::Send(f, Message::Commit { zxid: committed })).collect();
        commands.push(Command::Apply(committed));
        commands
    }

    /// The commit point.
    pub fn committed(&self) -> Zxid {
        self.acks.committed()
    }

    /// The last zxid proposed.
    pub fn last_proposed(&self) -> Zxid {
        self.last_proposed
    }

    /// The followers that receive proposals.
    pub fn followers(&self) -> impl Iterator<Item = ServerId> + '_ {
        self.followers.iter().copied()
    }

    /// Proposals in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

/// Whether `next` can come right after `last` in a leader's history: zxids of one epoch are consecutive (every
/// proposal, failed writes included, takes the next counter), and a new epoch starts at counter 1.
pub fn follows(last: Zxid, next: Zxid) -> bool {
    if next.epoch() == last.epoch() {
        last.next_in_epoch() == Some(next)
    } else {
        next.epoch() > last.epoch() && next.counter() == 1
    }
}

/// Why a follower refused a message: the leader's stream is inconsistent, and the follower must re-sync.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// A proposal skipped zxids: messages were lost, which a live connection never does.
    #[error("proposal {got} after {last}: a gap")]
    Gap {
        /// The proposal's zxid.
        got: Zxid,
        /// The last zxid logged.
        last: Zxid,
    },
    /// A proposal did not come after the last one.
    #[error("proposal {got} after {last}: out of order")]
    OutOfOrder {
        /// The proposal's zxid.
        got: Zxid,
        /// The last zxid logged.
        last: Zxid,
    },
    /// A proposal that leaves more proposals past the last commit than a leader keeping the window sends.
    #[error("proposal {got} with the last commit at {committed}: over {max} proposals uncommitted")]
    Uncommitted {
        /// The proposal's zxid.
        got: Zxid,
        /// The last commit received.
        committed: Zxid,
        /// The bound.
        max: u64,
    },
}

/// A follower's side.
#[derive(Debug)]
pub struct FollowerBroadcast {
    leader: ServerId,
    logged: Zxid,
    durable: Zxid,
    committed: Zxid,
    acked: Zxid,
    applied: Zxid,
    /// Proposals past the last commit at most, beyond which the leader misbehaves ([`FollowerBroadcast::bounded`]).
    max_uncommitted: u64,
}

/// How many windows of proposals past its last commit a follower holds at most: a leader has at most one
/// window in flight, and sends the commit that makes room for a proposal before the proposal, so twice that
/// already means a leader that withholds commits (each proposal is held in memory until its commit comes);
/// the rest is slack. Every server must use the same window (the node's is a constant): a leader running with
/// more than this many times a follower's window would lose that follower again and again.
pub const UNCOMMITTED_WINDOWS: u64 = 4;

impl FollowerBroadcast {
    /// The broadcast phase of a follower of `leader` whose log ends at `last_zxid`, all of it durable and
    /// committed (the sync phase made it so).
    pub fn new(leader: ServerId, last_zxid: Zxid) -> FollowerBroadcast {
        FollowerBroadcast {
            leader,
            logged: last_zxid,
            durable: last_zxid,
            committed: last_zxid,
            acked: last_zxid,
            applied: last_zxid,
            max_uncommitted: u64::MAX,
        }
    }

    /// Refuses a proposal that leaves more than [`UNCOMMITTED_WINDOWS`] times `window` (the ensemble's, which
    /// the leader keeps to) proposals of the current epoch past the last commit ([`StreamError::Uncommitted`]):
    /// a leader that sends proposals and withholds their commits would otherwise fill this follower's memory.
    pub fn bounded(mut self, window: usize) -> FollowerBroadcast {
        self.max_uncommitted = UNCOMMITTED_WINDOWS.saturating_mul(window as u64);
        self
    }

    /// The broadcast phase of a follower coming out of sync with this state. Nothing counts as acked yet: the
    /// first ack (see [`FollowerBroadcast::ack_durable`]) covers everything durable.
    pub fn resume(leader: ServerId, logged: Zxid, durable: Zxid, committed: Zxid, applied: Zxid) -> FollowerBroadcast {
        debug_assert!(applied <= committed.min(logged) && durable <= logged);
        FollowerBroadcast { leader, logged, durable, committed, acked: Zxid::ZERO, applied, max_uncommitted: u64::MAX }
    }

    /// Acks everything durable that was not acked yet.
    pub fn ack_durable(&mut self) -> Vec<Command> {
        if self.durable > self.acked {
            self.acked = self.durable;
            return vec![Command::Send(self.leader, Message::Ack { zxid: self.durable })];
        }
        Vec::new()
    }

    /// A proposal from the leader: append it.
    pub fn on_proposal(&mut self, zxid: Zxid, txn: Bytes) -> Result<Vec<Command>, StreamError> {
        if zxid <= self.logged {
            return Err(StreamError::OutOfOrder { got: zxid, last: self.logged });
        }
        if !follows(self.logged, zxid) {
            return Err(StreamError::Gap { got: zxid, last: self.logged });
        }
        // Proposals of this epoch past the last commit (all of them if the last commit is of an earlier epoch:
        // the counters of an epoch start at 1 and have no gaps).
        let uncommitted = match self.committed.epoch() == zxid.epoch() {
            true => u64::from(zxid.counter()).saturating_sub(u64::from(self.committed.counter())),
            false => u64::from(zxid.counter()),
        };
        if uncommitted > self.max_uncommitted {
            return Err(StreamError::Uncommitted { got: zxid, committed: self.committed, max: self.max_uncommitted });
        }
        self.logged = zxid;
        Ok(vec![Command::Append(zxid, txn)])
    }

    /// The WAL made everything up to `zxid` durable (one group-commit batch): one cumulative ack.
    pub fn persisted(&mut self, zxid: Zxid) -> Vec<Command> {
        debug_assert!(zxid <= self.logged, "durable beyond what was logged");
        self.durable = self.durable.max(zxid);
        let mut commands = self.ack_durable();
        commands.extend(self.apply_ready());
        commands
    }

    /// A commit from the leader: everything up to `zxid` is committed.
    pub fn on_commit(&mut self, zxid: Zxid) -> Vec<Command> {
        self.committed = self.committed.max(zxid);
        self.apply_ready()
    }

    /// Applies what is committed and logged (a commit can overtake this follower's own log only if the leader
    /// misbehaves; then nothing past the log is applied).
    fn apply_ready(&mut self) -> Vec<Command> {
        let ready = self.committed.min(self.logged);
        if ready > self.applied {
            self.applied = ready;
            return vec![Command::Apply(ready)];
        }
        Vec::new()
    }

    /// The last zxid applied.
    pub fn applied(&self) -> Zxid {
        self.applied
    }
}
