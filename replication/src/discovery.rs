//! Discovery (Zab phase 1) as state machines without IO: the elected leader learns the accepted epochs of a
//! quorum and proposes one above all of them; each follower makes the new epoch durable before it acknowledges.
//!
//! Leader: FOLLOWERINFO(acceptedEpoch, lastZxid) from a quorum (the leader counts itself) → new epoch =
//! max(acceptedEpoch) + 1, persisted as the leader's own accepted epoch, then LEADERINFO(newEpoch) to each
//! follower. ACKEPOCH(currentEpoch, lastZxid) from a quorum → the epoch is established. A follower whose
//! (currentEpoch, lastZxid) is ahead of the leader's means the election picked the wrong server: the leader
//! gives up and a new election starts.
//!
//! Follower: LEADERINFO(e) with e below its accepted epoch is refused (a stale leader). Otherwise it persists e
//! as its accepted epoch (fsync, directory fsync: the node does that) and only then sends ACKEPOCH.
//!
//! # Invariants
//! - A follower acknowledges an epoch only once it is durable as its accepted epoch, so it never acknowledges
//!   two leaders of the same epoch.
//! - The new epoch is above every accepted epoch of a quorum, so it is above any epoch a quorum ever accepted.

use std::collections::BTreeMap;

use wal::{Epoch, Zxid};

use crate::message::{Message, ServerId};
use crate::quorum::Voters;

/// What the node must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Send a message.
    Send(ServerId, Message),
    /// Make this the accepted epoch durably, then report [`LeaderDiscovery::accepted_epoch_persisted`] or
    /// [`FollowerDiscovery::accepted_epoch_persisted`].
    PersistAcceptedEpoch(Epoch),
    /// The epoch is established with these followers (their last zxids), and sync can start.
    Established {
        /// The new epoch.
        epoch: Epoch,
        /// Each acknowledging follower's last zxid.
        followers: BTreeMap<ServerId, Zxid>,
    },
}

/// Why discovery failed: the node goes back to election.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// A follower's history is ahead of the leader's.
    #[error("follower {follower:?} is ahead of the leader: epoch {epoch}, zxid {zxid}")]
    FollowerAhead {
        /// The follower.
        follower: ServerId,
        /// Its current epoch.
        epoch: Epoch,
        /// Its last zxid.
        zxid: Zxid,
    },
    /// A follower joining late has accepted an epoch above the leader's.
    #[error("follower {follower:?} accepted epoch {accepted}, above this leader's epoch {epoch}")]
    LatecomerAhead {
        /// The follower.
        follower: ServerId,
        /// Its accepted epoch.
        accepted: Epoch,
        /// The leader's epoch.
        epoch: Epoch,
    },
    /// The leader proposed an epoch below the one this follower accepted.
    #[error("leader proposed epoch {proposed}, below the accepted epoch {accepted}")]
    StaleLeader {
        /// The proposed epoch.
        proposed: Epoch,
        /// This follower's accepted epoch.
        accepted: Epoch,
    },
    /// The epoch space is exhausted.
    #[error("no epoch above {0}")]
    EpochOverflow(Epoch),
}

/// The leader's side of discovery.
#[derive(Debug)]
pub struct LeaderDiscovery {
    me: ServerId,
    voters: Voters,
    current_epoch: Epoch,
    last_zxid: Zxid,
    infos: BTreeMap<ServerId, Epoch>,
    new_epoch: Option<Epoch>,
    persisted: bool,
    acks: BTreeMap<ServerId, Zxid>,
    done: bool,
}

impl LeaderDiscovery {
    /// Discovery for a leader whose accepted epoch, current epoch and last zxid are given.
    pub fn new(
        me: ServerId,
        voters: Voters,
        accepted_epoch: Epoch,
        current_epoch: Epoch,
        last_zxid: Zxid,
    ) -> LeaderDiscovery {
        let mut infos = BTreeMap::new();
        infos.insert(me, accepted_epoch);
        LeaderDiscovery {
            me,
            voters,
            current_epoch,
            last_zxid,
            infos,
            new_epoch: None,
            persisted: false,
            acks: BTreeMap::new(),
            done: false,
        }
    }

    /// A follower connected and told its accepted epoch and last zxid.
    pub fn on_follower_info(&mut self, from: ServerId, accepted_epoch: Epoch) -> Result<Vec<Command>, DiscoveryError> {
        if let Some(epoch) = self.new_epoch {
            // A latecomer: the epoch is chosen; it joins now, or once the epoch is durable here. One that has
            // accepted a later epoch (from a leader that failed) could never join this one: the leader steps
            // down, and the next election picks an epoch above it.
            if accepted_epoch > epoch {
                return Err(DiscoveryError::LatecomerAhead { follower: from, accepted: accepted_epoch, epoch });
            }
            self.infos.insert(from, accepted_epoch);
            return Ok(if self.persisted {
                vec![Command::Send(from, Message::LeaderInfo { new_epoch: epoch })]
            } else {
                Vec::new()
            });
        }
        self.infos.insert(from, accepted_epoch);
        if !self.voters.is_quorum(self.infos.keys()) {
            return Ok(Vec::new());
        }
        let max = self.infos.values().copied().max().expect("the leader itself");
        let epoch = max.0.checked_add(1).map(Epoch).ok_or(DiscoveryError::EpochOverflow(max))?;
        self.new_epoch = Some(epoch);
        Ok(vec![Command::PersistAcceptedEpoch(epoch)])
    }

    /// The new epoch is durable as the leader's accepted epoch: tell the followers.
    pub fn accepted_epoch_persisted(&mut self) -> Vec<Command> {
        let Some(epoch) = self.new_epoch else { return Vec::new() };
        self.persisted = true;
        if self.voters.is_quorum([&self.me]) {
            // A quorum of one (a standalone server): nobody to wait for.
            self.done = true;
            return vec![Command::Established { epoch, followers: BTreeMap::new() }];
        }
        self.infos
            .keys()
            .filter(|&&f| f != self.me)
            .map(|&f| Command::Send(f, Message::LeaderInfo { new_epoch: epoch }))
            .collect()
    }

    /// A follower acknowledged the new epoch with its current epoch and last zxid.
    pub fn on_ack_epoch(
        &mut self,
        from: ServerId,
        current_epoch: Epoch,
        last_zxid: Zxid,
    ) -> Result<Vec<Command>, DiscoveryError> {
        if !self.persisted || self.done {
            return Ok(Vec::new());
        }
        if (current_epoch, last_zxid) > (self.current_epoch, self.last_zxid) {
            return Err(DiscoveryError::FollowerAhead { follower: from, epoch: current_epoch, zxid: last_zxid });
        }
        self.acks.insert(from, last_zxid);
        let mut members: Vec<ServerId> = self.acks.keys().copied().collect();
        members.push(self.me);
        if !self.voters.is_quorum(&members) {
            return Ok(Vec::new());
        }
        self.done = true;
        Ok(vec![Command::Established { epoch: self.new_epoch.expect("persisted"), followers: self.acks.clone() }])
    }
}

/// A follower's side of discovery.
#[derive(Debug)]
pub struct FollowerDiscovery {
    leader: ServerId,
    accepted_epoch: Epoch,
    current_epoch: Epoch,
    last_zxid: Zxid,
    pending: Option<Epoch>,
}

impl FollowerDiscovery {
    /// Discovery for a follower of `leader`; returns the FOLLOWERINFO to send.
    pub fn start(
        leader: ServerId,
        accepted_epoch: Epoch,
        current_epoch: Epoch,
        last_zxid: Zxid,
    ) -> (FollowerDiscovery, Vec<Command>) {
        let d = FollowerDiscovery { leader, accepted_epoch, current_epoch, last_zxid, pending: None };
        (d, vec![Command::Send(leader, Message::FollowerInfo { accepted_epoch, last_zxid })])
    }

    /// The leader proposed `new_epoch`.
    pub fn on_leader_info(&mut self, new_epoch: Epoch) -> Result<Vec<Command>, DiscoveryError> {
        if new_epoch < self.accepted_epoch {
            return Err(DiscoveryError::StaleLeader { proposed: new_epoch, accepted: self.accepted_epoch });
        }
        if new_epoch == self.accepted_epoch {
            // Already durable (a reconnect to the same leader): acknowledge at once.
            return Ok(vec![self.ack()]);
        }
        self.pending = Some(new_epoch);
        Ok(vec![Command::PersistAcceptedEpoch(new_epoch)])
    }

    /// The proposed epoch is durable as the accepted epoch: now acknowledge.
    pub fn accepted_epoch_persisted(&mut self) -> Vec<Command> {
        match self.pending.take() {
            Some(epoch) => {
                self.accepted_epoch = epoch;
                vec![self.ack()]
            }
            None => Vec::new(),
        }
    }

    fn ack(&self) -> Command {
        Command::Send(self.leader, Message::AckEpoch { current_epoch: self.current_epoch, last_zxid: self.last_zxid })
    }

    /// The accepted epoch.
    pub fn accepted_epoch(&self) -> Epoch {
        self.accepted_epoch
    }
}
