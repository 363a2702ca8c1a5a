//! One server's whole protocol: election, then discovery, sync and broadcast as leader or follower, with the
//! heartbeats that detect a dead leader or a lost quorum. Still no IO: events in, actions out.
//!
//! The node feeds it peer messages, ticks (every `tick`, ZooKeeper's tickTime), and completions of the actions
//! it asked for (a WAL batch durable, an epoch persisted), and carries out the actions. A follower that hears
//! nothing from its leader for `sync_limit` ticks (`init_limit` while syncing) starts an election; a leader that
//! has not heard from a quorum within `sync_limit` ticks steps down.
//!
//! # Invariants
//! - The accepted and current epochs only grow, and only through `PersistAcceptedEpoch` / `PersistCurrentEpoch`
//!   that the node completes before the peer relies on them.
//! - A leader proposes only after a quorum acknowledged its NEWLEADER and its current epoch is durable.

mod actions;
mod following;
mod leading;
mod liveness;
mod looking;
mod routing;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use wal::{Epoch, Zxid};

use self::actions::election_actions;
use self::following::{Follow, FollowPhase};
use self::leading::Lead;
use self::looking::ballot;
use crate::barrier::{BarrierId, Barriers};
use crate::broadcast::ProposeError;
use crate::election::{Election, ElectionConfig, Outcome, Time};
use crate::message::{Message, ServerId};
use crate::quorum::Voters;
use crate::sync::History;

/// Static settings.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// This server.
    pub me: ServerId,
    /// The voting members.
    pub voters: Voters,
    /// One tick (ZooKeeper's `tickTime`).
    pub tick: Duration,
    /// Ticks a follower may take to connect and sync (`initLimit`).
    pub init_limit: u32,
    /// Ticks of silence after which a peer counts as gone (`syncLimit`).
    pub sync_limit: u32,
    /// Proposals in flight at most.
    pub window: usize,
    /// Election timing.
    pub election: ElectionConfig,
}

/// What survives a restart: the two epochs and the end of the durable log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DurableState {
    /// The last epoch this server accepted (acknowledged a LEADERINFO for).
    pub accepted_epoch: Epoch,
    /// The epoch of the last leader whose NEWLEADER this server acknowledged.
    pub current_epoch: Epoch,
    /// The last durable zxid in the WAL.
    pub last_zxid: Zxid,
    /// How far the log reached before a repair cut a damaged part off, while this server has not synced with a
    /// leader since ([`crate::repairing`]): it elects as no candidate, vouching for that zxid.
    pub repairing: Option<Zxid>,
}

/// An event for the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message from a peer.
    Message(ServerId, Message),
    /// Time passed; the current time.
    Tick(Time),
    /// The WAL made everything up to this zxid durable.
    Persisted(Zxid),
    /// The accepted epoch asked for is durable.
    AcceptedEpochPersisted,
    /// The current epoch asked for is durable.
    CurrentEpochPersisted,
    /// A client write to propose (on the leader).
    Propose(Bytes),
    /// The connection to a peer broke.
    Disconnected(ServerId),
    /// A connection to a peer is up.
    Connected(ServerId),
    /// Prove that this server still leads (see [`crate::barrier`]); answered by [`Action::Barrier`].
    Barrier(BarrierId),
}

/// What the peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Electing.
    Looking,
    /// Following this leader (serving once synced).
    Following(ServerId),
    /// Leading (serving once a quorum synced).
    Leading,
}

/// A leader's learners, as ZooKeeper's `mntr` counts them (`Leader.getLearners`, `getForwardingFollowers`,
/// `getObservingLearners`); all zero on a server that does not lead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Learners {
    /// Followers and observers the leader tracks, synced or not: from their FOLLOWERINFO until they are dropped
    /// (ZooKeeper's learner handlers, `zk_learners`).
    pub connected: usize,
    /// Voting followers that acknowledged NEWLEADER and receive the broadcast (`zk_synced_followers`).
    pub synced_followers: usize,
    /// Observers (learners that do not vote) that acknowledged NEWLEADER and receive the broadcast
    /// (`zk_synced_observers`).
    pub synced_observers: usize,
}

/// An action for the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a message.
    Send(ServerId, Message),
    /// Append a txn to the WAL; report [`Event::Persisted`] when durable.
    Append(Zxid, Bytes),
    /// Cut the WAL after this zxid durably and roll the tree back to it.
    Truncate(Zxid),
    /// Apply every logged txn up to this zxid to the tree.
    Apply(Zxid),
    /// Persist the accepted epoch; report [`Event::AcceptedEpochPersisted`].
    PersistAcceptedEpoch(Epoch),
    /// Persist the current epoch; report [`Event::CurrentEpochPersisted`].
    PersistCurrentEpoch(Epoch),
    /// Stream txns to a follower (see [`crate::leader_sync::Command::StreamTxns`]).
    StreamTxns {
        /// The follower.
        to: ServerId,
        /// From after this zxid.
        after: Zxid,
        /// Up to this zxid.
        until: Zxid,
        /// COMMIT those up to this zxid.
        commit_up_to: Zxid,
    },
    /// Stream a snapshot of the committed history and the txns after it to a follower.
    StreamSnapshot {
        /// The follower.
        to: ServerId,
        /// Up to this zxid.
        until: Zxid,
        /// COMMIT those up to this zxid.
        commit_up_to: Zxid,
    },
    /// Store a snapshot chunk received from the leader.
    SnapshotChunk {
        /// Its offset.
        offset: u64,
        /// Its bytes.
        data: Bytes,
    },
    /// Install the received snapshot as the state at this zxid.
    InstallSnapshot(Zxid),
    /// A proposal was made with this zxid.
    Proposed(Zxid),
    /// A proposal could not be made.
    Rejected(ProposeError),
    /// The role changed.
    RoleChanged(Role),
    /// Close the connection to this peer (a follower the leader dropped; it will rejoin).
    Disconnect(ServerId),
    /// This server, repairing its log, synced with a leader: its log holds every committed txn durably again.
    /// Remove the repair mark; it elects as a candidate from now on.
    Repaired,
    /// A barrier asked for by [`Event::Barrier`] passed (a quorum still followed this leader after it was
    /// asked for), or failed (this server does not lead, or stopped leading first).
    Barrier {
        /// The barrier.
        id: BarrierId,
        /// Whether it passed.
        passed: bool,
    },
}

enum State {
    Looking(Election),
    Following(Follow),
    Leading(Lead),
}

/// One server's protocol.
pub struct Peer {
    config: PeerConfig,
    durable: DurableState,
    /// The last zxid appended to the WAL (durable or still being written).
    logged: Zxid,
    /// The last zxid applied to the tree (at a start, the node has replayed its whole durable log).
    applied: Zxid,
    /// Epochs asked to be persisted and not yet reported durable. They count as promises at once: once this
    /// server has asked to accept an epoch, it never acts on a lower one, whatever role it moves to meanwhile.
    accepted_pending: Option<Epoch>,
    current_pending: Option<Epoch>,
    round: u64,
    now: Time,
    state: State,
    /// The last election outcome, to answer looking peers with; its epoch becomes the one the leader established
    /// once this server synced with it or, leading, a quorum synced ([`Outcome::established`]).
    settled: Option<Outcome>,
    /// FOLLOWERINFOs that arrived while this server was still electing: a follower can decide on this leader
    /// before the leader itself has (it waits `finalize_wait` for better votes). Taken up if this server leads,
    /// dropped when a new election starts.
    early_infos: BTreeMap<ServerId, Epoch>,
    /// Heartbeat rounds and the read barriers waiting on them (while leading).
    barriers: Barriers,
}

impl Peer {
    /// A peer starting (or restarting) with `durable` state at `now`: it starts looking.
    pub fn new(config: PeerConfig, durable: DurableState, now: Time) -> (Peer, Vec<Action>) {
        Peer::restart(config, durable, durable.last_zxid, now)
    }

    /// A peer starting over from `durable` state at `now` in a process that keeps running, whose tree has
    /// applied the log up to `applied` (at most `durable.last_zxid`): it starts looking. The runtime does this
    /// when it could not carry out what the peer asked for because of another server's fault.
    pub fn restart(config: PeerConfig, durable: DurableState, applied: Zxid, now: Time) -> (Peer, Vec<Action>) {
        debug_assert!(applied <= durable.last_zxid);
        let ballot = ballot(1, durable.last_zxid, &durable);
        let (election, commands) =
            Election::start(config.me, config.voters.iter().collect(), ballot, config.election, now);
        let peer = Peer {
            config,
            durable,
            logged: durable.last_zxid,
            applied,
            accepted_pending: None,
            current_pending: None,
            round: 1,
            now,
            state: State::Looking(election),
            settled: None,
            early_infos: BTreeMap::new(),
            barriers: Barriers::default(),
        };
        let mut actions = election_actions(commands);
        actions.push(Action::RoleChanged(Role::Looking));
        (peer, actions)
    }

    /// The role now.
    pub fn role(&self) -> Role {
        match &self.state {
            State::Looking(_) => Role::Looking,
            State::Following(f) => Role::Following(f.leader),
            State::Leading(_) => Role::Leading,
        }
    }

    /// Whether this peer serves: a leader past sync, or a follower in the broadcast phase.
    pub fn serving(&self) -> bool {
        match &self.state {
            State::Leading(l) => l.broadcast.is_some(),
            State::Following(f) => matches!(f.phase, FollowPhase::Broadcast(_)),
            State::Looking(_) => false,
        }
    }

    /// The learners of this server if it leads: see [`Learners`]. A learner counts as synced once it has
    /// acknowledged NEWLEADER and the leader broadcasts to it (ZooKeeper's `startForwarding`).
    pub fn learners(&self) -> Learners {
        let State::Leading(l) = &self.state else { return Learners::default() };
        let mut learners = Learners { connected: l.last_heard.len(), ..Learners::default() };
        let synced = l.broadcast.iter().flat_map(|b| b.followers());
        for f in synced.filter(|f| l.last_heard.contains_key(f) && !l.syncing.contains(f)) {
            match self.config.voters.contains(f) {
                true => learners.synced_followers += 1,
                false => learners.synced_observers += 1,
            }
        }
        learners
    }

    /// The highest epoch this server accepted or asked to accept: it never acts on a lower one.
    fn promised_epoch(&self) -> Epoch {
        self.accepted_pending.map_or(self.durable.accepted_epoch, |p| p.max(self.durable.accepted_epoch))
    }

    /// The durable state as the peer knows it.
    pub fn durable(&self) -> DurableState {
        self.durable
    }

    /// The last heartbeat round this peer sent: a peer that replaces it in the same process continues after it
    /// ([`Peer::continue_rounds_after`]), so that an echo meant for this one never passes a barrier of the next.
    pub fn last_round(&self) -> u64 {
        self.barriers.last_round()
    }

    /// Numbers heartbeats after `round` (see [`Peer::last_round`]).
    pub fn continue_rounds_after(&mut self, round: u64) {
        self.barriers.continue_after(round);
    }

    /// Handles one event. `history` is the leader's view of its own log, for planning follower syncs.
    pub fn handle(&mut self, event: Event, history: &impl History) -> Vec<Action> {
        match event {
            Event::AcceptedEpochPersisted => {
                if let Some(e) = self.accepted_pending.take() {
                    self.durable.accepted_epoch = self.durable.accepted_epoch.max(e);
                }
            }
            Event::CurrentEpochPersisted => {
                if let Some(e) = self.current_pending.take() {
                    self.durable.current_epoch = self.durable.current_epoch.max(e);
                    self.durable.accepted_epoch = self.durable.accepted_epoch.max(e);
                }
            }
            _ => {}
        }
        let mut actions = self.dispatch(event, history);
        if !(self.role() == Role::Leading && self.serving()) {
            // Barriers pass only while this server leads and serves; echoes count only within that time.
            actions.extend(self.barriers.fail_all().into_iter().map(|id| Action::Barrier { id, passed: false }));
        }
        for action in &actions {
            match action {
                Action::Append(z, _) => self.logged = self.logged.max(*z),
                Action::Apply(z) => self.applied = self.applied.max(*z),
                Action::PersistAcceptedEpoch(e) => {
                    self.accepted_pending = Some(self.accepted_pending.map_or(*e, |p| p.max(*e)))
                }
                Action::PersistCurrentEpoch(e) => {
                    self.current_pending = Some(self.current_pending.map_or(*e, |p| p.max(*e)))
                }
                Action::Truncate(z) => {
                    self.logged = *z;
                    self.durable.last_zxid = self.durable.last_zxid.min(*z);
                    self.applied = self.applied.min(*z);
                }
                Action::InstallSnapshot(z) => (self.logged, self.durable.last_zxid, self.applied) = (*z, *z, *z),
                _ => {}
            }
        }
        actions
    }

    fn dispatch(&mut self, event: Event, history: &impl History) -> Vec<Action> {
        match event {
            Event::Tick(now) => {
                self.now = now;
                self.on_tick()
            }
            Event::Persisted(zxid) => {
                self.durable.last_zxid = self.durable.last_zxid.max(zxid);
                self.on_persisted(zxid)
            }
            Event::AcceptedEpochPersisted => self.on_accepted_epoch_persisted(history),
            Event::CurrentEpochPersisted => self.on_current_epoch_persisted(),
            Event::Propose(txn) => self.propose(txn),
            Event::Message(from, message) => self.on_message(from, message, history),
            Event::Disconnected(peer) => self.on_disconnected(peer),
            Event::Connected(peer) => self.on_connected(peer),
            Event::Barrier(id) => self.on_barrier(id),
        }
    }
}
