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

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use wal::{Epoch, Zxid};

use crate::barrier::{BarrierId, Barriers};
use crate::broadcast::{self, FollowerBroadcast, LeaderBroadcast, ProposeError};
use crate::discovery::{self, DiscoveryError, FollowerDiscovery, LeaderDiscovery};
use crate::election::{self, Election, ElectionConfig, Outcome, Time};
use crate::follower_sync::{self, FollowerSync};
use crate::leader_sync::{self, LeaderSync};
use crate::leave::{Leave, Violation};
use crate::message::{Message, PeerState, ServerId};
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
    /// Stream txns to a follower (see [`leader_sync::Command::StreamTxns`]).
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

enum FollowPhase {
    Discovery(FollowerDiscovery),
    Sync(FollowerSync),
    Broadcast(FollowerBroadcast),
    /// Only while moving from sync to broadcast, inside one call: never observed between events.
    Switching,
}

struct Follow {
    leader: ServerId,
    phase: FollowPhase,
    /// When this follower started following: discovery and sync must end within `init_limit` of it.
    started: Time,
    last_heard: Time,
}

struct Lead {
    discovery: LeaderDiscovery,
    sync: Option<LeaderSync>,
    broadcast: Option<LeaderBroadcast>,
    epoch: Option<Epoch>,
    last_heard: BTreeMap<ServerId, Time>,
    /// Followers being synced (sent DIFF, TRUNC or SNAP, no NEWLEADER ack yet): they get `initLimit` to answer,
    /// not `syncLimit`, as in ZooKeeper — what is queued for them waits behind their sync stream, a snapshot can
    /// take a while to prepare and ship, and they send nothing meanwhile.
    syncing: BTreeSet<ServerId>,
    started: Time,
    last_ping: Time,
}

impl Lead {
    /// Whether a sync stream went to `follower` since its last FOLLOWERINFO.
    fn is_syncing_or_synced(&self, follower: ServerId) -> bool {
        self.syncing.contains(&follower) || self.broadcast.as_ref().is_some_and(|b| b.has_follower(follower))
    }

    /// The last committed zxid once broadcasting, else `last`.
    fn committed_or(&self, last: Zxid) -> Zxid {
        self.broadcast.as_ref().map_or(last, |b| b.committed())
    }

    /// Stops tracking a follower (gone, silent or dropped): it counts for nothing until it rejoins.
    fn forget(&mut self, follower: ServerId) {
        self.last_heard.remove(&follower);
        self.syncing.remove(&follower);
        if let Some(b) = &mut self.broadcast {
            b.remove_follower(follower);
        }
        if let Some(s) = &mut self.sync {
            s.remove_follower(follower);
        }
    }
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
    /// The last election outcome, to answer looking peers with.
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
        let (election, commands) = Election::start_as(
            config.me,
            config.voters.iter().collect(),
            1,
            durable.repairing.map_or(durable.last_zxid, |vouched| vouched.max(durable.last_zxid)),
            durable.current_epoch,
            config.election,
            now,
            durable.repairing.is_none(),
        );
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

    fn on_message(&mut self, from: ServerId, message: Message, history: &impl History) -> Vec<Action> {
        if let Message::Notification(n) = message {
            if n.sender != from {
                // Votes count per sender: one connection must not vote for others.
                let violation = Violation::ForgedSender { claimed: n.sender };
                tracing::warn!(server = self.config.me.0, peer = from.0, %violation, "dropping the link");
                return vec![Action::Disconnect(from)];
            }
            return self.on_notification(n);
        }
        match &mut self.state {
            State::Looking(_) => {
                if let Message::FollowerInfo { accepted_epoch, .. } = message {
                    self.early_infos.insert(from, accepted_epoch);
                }
                Vec::new()
            }
            State::Following(f) if from == f.leader => {
                f.last_heard = self.now;
                self.follower_message(message)
            }
            State::Following(_) => Vec::new(),
            State::Leading(l) => {
                // A follower is tracked from its FOLLOWERINFO until it is dropped; anything else from an unknown
                // peer is a leftover of a dropped connection.
                if matches!(message, Message::FollowerInfo { .. }) || l.last_heard.contains_key(&from) {
                    l.last_heard.insert(from, self.now);
                    self.leader_message(from, message, history)
                } else {
                    vec![Action::Disconnect(from)]
                }
            }
        }
    }

    fn on_notification(&mut self, n: crate::message::Notification) -> Vec<Action> {
        match &mut self.state {
            State::Looking(election) => {
                let commands = election.on_notification(n, self.now);
                self.after_election(commands)
            }
            _ => match (self.settled, n.state) {
                // A looking peer learns whom we follow or that we lead.
                (Some(outcome), PeerState::Looking | PeerState::Repairing) => {
                    let mut answer = Election::answer_when_settled(self.config.me, &outcome);
                    answer.state = if self.role() == Role::Leading { PeerState::Leading } else { PeerState::Following };
                    vec![Action::Send(n.sender, Message::Notification(answer))]
                }
                _ => Vec::new(),
            },
        }
    }

    fn after_election(&mut self, commands: Vec<election::Command>) -> Vec<Action> {
        let decided = commands.iter().find_map(|c| match c {
            election::Command::Decided(o) => Some(*o),
            _ => None,
        });
        let mut actions = election_actions(commands);
        if let Some(outcome) = decided {
            self.settled = Some(outcome);
            actions.extend(if outcome.leader == self.config.me { self.lead() } else { self.follow(outcome.leader) });
        }
        actions
    }

    fn lead(&mut self) -> Vec<Action> {
        let d = self.durable;
        let mut discovery = LeaderDiscovery::new(
            self.config.me,
            self.config.voters.clone(),
            self.promised_epoch(),
            d.current_epoch,
            self.logged,
        );
        let mut actions = vec![Action::RoleChanged(Role::Leading)];
        // A leader that is a quorum alone (one voter) needs no follower to choose the epoch.
        if self.config.voters.is_quorum([&self.config.me]) {
            match discovery.on_follower_info(self.config.me, self.promised_epoch()) {
                Ok(commands) => actions.extend(discovery_actions(commands)),
                Err(error) => return self.look(Leave::Discovery { follower: self.config.me, error }),
            }
        }
        self.state = State::Leading(Lead {
            discovery,
            sync: None,
            broadcast: None,
            epoch: None,
            last_heard: BTreeMap::new(),
            syncing: BTreeSet::new(),
            started: self.now,
            last_ping: self.now,
        });
        for (from, accepted_epoch) in std::mem::take(&mut self.early_infos) {
            let State::Leading(l) = &mut self.state else { break };
            l.last_heard.insert(from, self.now);
            match l.discovery.on_follower_info(from, accepted_epoch) {
                Ok(commands) => actions.extend(discovery_actions(commands)),
                Err(error) => return self.look(Leave::Discovery { follower: from, error }),
            }
        }
        actions
    }

    fn follow(&mut self, leader: ServerId) -> Vec<Action> {
        let d = self.durable;
        let (discovery, commands) =
            FollowerDiscovery::start(leader, self.promised_epoch(), d.current_epoch, self.logged);
        self.state = State::Following(Follow {
            leader,
            phase: FollowPhase::Discovery(discovery),
            started: self.now,
            last_heard: self.now,
        });
        let mut actions = vec![Action::RoleChanged(Role::Following(leader))];
        actions.extend(discovery_actions(commands));
        actions
    }

    /// Back to election, in the next round, saying why.
    fn look(&mut self, why: Leave) -> Vec<Action> {
        let (me, role) = (self.config.me.0, self.role());
        if why.is_violation() {
            tracing::warn!(server = me, ?role, reason = %why, "back to leader election");
        } else {
            tracing::info!(server = me, ?role, reason = %why, "back to leader election");
        }
        self.round += 1;
        self.settled = None;
        self.early_infos.clear();
        let c = &self.config;
        let (election, commands) = Election::start_as(
            c.me,
            c.voters.iter().collect(),
            self.round,
            self.durable.repairing.map_or(self.logged, |vouched| vouched.max(self.logged)),
            self.durable.current_epoch,
            c.election,
            self.now,
            self.durable.repairing.is_none(),
        );
        self.state = State::Looking(election);
        let mut actions = vec![Action::RoleChanged(Role::Looking)];
        actions.extend(election_actions(commands));
        actions
    }

    fn follower_message(&mut self, message: Message) -> Vec<Action> {
        let State::Following(f) = &mut self.state else { return Vec::new() };
        let leader = f.leader;
        if matches!(message, Message::Ping { .. }) {
            // Heartbeats come in every phase; the answer tells the leader this follower is alive.
            // The round echoed proves to the leader's read barriers that this follower followed it after
            // the round was sent.
            let Message::Ping { round, .. } = message else { unreachable!("matched just above") };
            return vec![Action::Send(leader, Message::Ping { zxid: self.durable.last_zxid, round })];
        }
        let outcome: Result<Vec<Action>, Violation> = match (&mut f.phase, message) {
            (FollowPhase::Discovery(d), Message::LeaderInfo { new_epoch }) => match d.on_leader_info(new_epoch) {
                Ok(commands) => {
                    let acked =
                        commands.iter().any(|c| matches!(c, discovery::Command::Send(_, Message::AckEpoch { .. })));
                    if acked {
                        f.phase = FollowPhase::Sync(FollowerSync::new(
                            leader,
                            self.logged,
                            self.durable.last_zxid,
                            self.applied,
                        ));
                    }
                    Ok(discovery_actions(commands))
                }
                Err(e) => Err(e.into()),
            },
            (FollowPhase::Sync(s), message) => match s.on_message(message) {
                Ok(commands) => Ok(self.follower_sync_actions(commands)),
                Err(e) => Err(e.into()),
            },
            (FollowPhase::Broadcast(b), Message::Proposal { zxid, txn }) => {
                b.on_proposal(zxid, txn).map(broadcast_actions).map_err(Violation::from)
            }
            (FollowPhase::Broadcast(b), Message::Commit { zxid }) => Ok(broadcast_actions(b.on_commit(zxid))),
            _ => Ok(Vec::new()),
        };
        outcome.unwrap_or_else(|violation| self.leave_leader(leader, violation))
    }

    /// A leader that broke the protocol: drop the link to it (what it still streams is of no use) and elect.
    fn leave_leader(&mut self, leader: ServerId, violation: Violation) -> Vec<Action> {
        let mut actions = vec![Action::Disconnect(leader)];
        actions.extend(self.look(Leave::Violation { peer: leader, violation }));
        actions
    }

    fn follower_sync_actions(&mut self, commands: Vec<follower_sync::Command>) -> Vec<Action> {
        let mut actions = Vec::new();
        for command in commands {
            match command {
                follower_sync::Command::Send(to, m) => actions.push(Action::Send(to, m)),
                follower_sync::Command::Truncate(z) => {
                    self.durable.last_zxid = self.durable.last_zxid.min(z);
                    actions.push(Action::Truncate(z));
                }
                follower_sync::Command::SnapshotChunk { offset, data } => {
                    actions.push(Action::SnapshotChunk { offset, data })
                }
                follower_sync::Command::InstallSnapshot(z) => {
                    self.durable.last_zxid = z;
                    actions.push(Action::InstallSnapshot(z));
                }
                follower_sync::Command::Append(z, t) => actions.push(Action::Append(z, t)),
                follower_sync::Command::Apply(z) => actions.push(Action::Apply(z)),
                follower_sync::Command::PersistCurrentEpoch(e) => actions.push(Action::PersistCurrentEpoch(e)),
                follower_sync::Command::Synced => actions.extend(self.enter_follower_broadcast()),
            }
        }
        actions
    }

    fn enter_follower_broadcast(&mut self) -> Vec<Action> {
        let State::Following(f) = &mut self.state else { return Vec::new() };
        if !matches!(f.phase, FollowPhase::Sync(_)) {
            return Vec::new();
        }
        let FollowPhase::Sync(sync) = std::mem::replace(&mut f.phase, FollowPhase::Switching) else {
            unreachable!("checked just above")
        };
        let (broadcast, commands) = sync.into_broadcast();
        f.phase = FollowPhase::Broadcast(broadcast);
        let mut actions = self.follower_sync_actions(commands);
        // The leader's history up to NEWLEADER is durable here (it was acknowledged), and committed.
        if let Some(vouched) = self.durable.repairing.take() {
            tracing::info!(server = self.config.me.0, %vouched, "repaired: synced with the leader; a candidate again");
            actions.push(Action::Repaired);
        }
        actions
    }

    fn leader_message(&mut self, from: ServerId, message: Message, history: &impl History) -> Vec<Action> {
        let State::Leading(l) = &mut self.state else { return Vec::new() };
        let result: Result<Vec<Action>, DiscoveryError> = match message {
            Message::FollowerInfo { accepted_epoch, .. } => {
                // A follower that starts over on the same connection (it re-elected this leader) syncs afresh.
                if l.is_syncing_or_synced(from) {
                    l.forget(from);
                    self.barriers.forget(from);
                    l.last_heard.insert(from, self.now);
                }
                l.discovery.on_follower_info(from, accepted_epoch).map(discovery_actions)
            }
            Message::AckEpoch { .. } if l.sync.is_some() && l.is_syncing_or_synced(from) => {
                // Each ACKEPOCH starts a sync stream: one per FOLLOWERINFO, or a peer could queue any number.
                let violation = Violation::RepeatedAckEpoch;
                tracing::warn!(server = self.config.me.0, follower = from.0, %violation, "dropping the follower");
                return self.drop_follower(from);
            }
            Message::AckEpoch { current_epoch, last_zxid } => match (&mut l.sync, &mut l.broadcast) {
                (None, _) => match l.discovery.on_ack_epoch(from, current_epoch, last_zxid) {
                    Ok(commands) => Ok(self.leader_established(commands, history)),
                    Err(e) => Err(e),
                },
                (Some(sync), broadcast) => {
                    let commands = match broadcast {
                        Some(b) => {
                            let commands =
                                sync.add_late_follower(from, last_zxid, history, b.last_proposed(), b.committed());
                            b.add_follower(from);
                            commands
                        }
                        None => sync.add_follower(from, last_zxid, history),
                    };
                    l.syncing.insert(from);
                    Ok(leader_sync_actions(commands))
                }
            },
            Message::AckNewLeader { zxid } => match &mut l.sync {
                Some(sync) => {
                    l.syncing.remove(&from);
                    let commands = sync.on_ack_newleader(from, zxid);
                    Ok(self.leader_sync_outcome(commands))
                }
                None => Ok(Vec::new()),
            },
            Message::Ack { zxid } => {
                Ok(l.broadcast.as_mut().map_or_else(Vec::new, |b| broadcast_actions(b.on_ack(from, zxid))))
            }
            Message::Ping { round, .. } => {
                let passed = self.barriers.on_echo(from, round, self.config.me, &self.config.voters);
                Ok(passed.into_iter().map(|id| Action::Barrier { id, passed: true }).collect())
            }
            _ => Ok(Vec::new()),
        };
        // A follower ahead of this leader, or one that accepted a later epoch: the election picked the wrong
        // server (or the follower lies); either way the protocol says elect again.
        result.unwrap_or_else(|error| self.look(Leave::Discovery { follower: from, error }))
    }

    /// Forgets a follower and drops the link to it (it reconnects and syncs again).
    fn drop_follower(&mut self, follower: ServerId) -> Vec<Action> {
        let State::Leading(l) = &mut self.state else { return Vec::new() };
        l.forget(follower);
        self.barriers.forget(follower);
        let mut actions = vec![Action::Disconnect(follower)];
        actions.extend(self.check_quorum());
        actions
    }

    fn leader_established(&mut self, commands: Vec<discovery::Command>, history: &impl History) -> Vec<Action> {
        let State::Leading(l) = &mut self.state else { return Vec::new() };
        let mut actions = Vec::new();
        for command in commands {
            match command {
                discovery::Command::Established { epoch, followers } => {
                    let mut sync = LeaderSync::new(
                        self.config.me,
                        self.config.voters.clone(),
                        epoch,
                        self.logged,
                        self.durable.last_zxid,
                    );
                    let mut commands = sync.start();
                    for (follower, last) in followers {
                        commands.extend(sync.add_follower(follower, last, history));
                        l.syncing.insert(follower);
                    }
                    l.epoch = Some(epoch);
                    l.sync = Some(sync);
                    actions.extend(self.leader_sync_outcome(commands));
                    return actions;
                }
                other => actions.extend(discovery_actions(vec![other])),
            }
        }
        actions
    }

    fn leader_sync_outcome(&mut self, commands: Vec<leader_sync::Command>) -> Vec<Action> {
        let State::Leading(l) = &mut self.state else { return Vec::new() };
        let mut actions = Vec::new();
        for command in commands {
            match command {
                leader_sync::Command::StartBroadcast(followers) => {
                    let epoch = l.epoch.expect("established");
                    let b = l.broadcast.get_or_insert_with(|| {
                        LeaderBroadcast::new(
                            self.config.me,
                            self.config.voters.clone(),
                            epoch,
                            self.logged,
                            self.config.window,
                        )
                    });
                    for f in followers {
                        b.add_follower(f);
                    }
                }
                other => actions.extend(leader_sync_actions(vec![other])),
            }
        }
        actions
    }

    fn on_accepted_epoch_persisted(&mut self, history: &impl History) -> Vec<Action> {
        match &mut self.state {
            State::Leading(l) => {
                // Established at once when the leader is a quorum alone.
                let commands = l.discovery.accepted_epoch_persisted();
                self.leader_established(commands, history)
            }
            State::Following(f) => match &mut f.phase {
                FollowPhase::Discovery(d) => {
                    let commands = d.accepted_epoch_persisted();
                    if !commands.is_empty() {
                        f.phase = FollowPhase::Sync(FollowerSync::new(
                            f.leader,
                            self.logged,
                            self.durable.last_zxid,
                            self.applied,
                        ));
                    }
                    discovery_actions(commands)
                }
                _ => Vec::new(),
            },
            State::Looking(_) => Vec::new(),
        }
    }

    fn on_current_epoch_persisted(&mut self) -> Vec<Action> {
        match &mut self.state {
            State::Leading(l) => {
                let Some(sync) = &mut l.sync else { return Vec::new() };
                let commands = sync.current_epoch_persisted();
                let up_to_date = !commands.is_empty();
                let mut actions = self.leader_sync_outcome(commands);
                if up_to_date {
                    // The leader's whole history is committed now: a quorum holds it.
                    actions.push(Action::Apply(self.logged));
                }
                actions
            }
            State::Following(f) => match &mut f.phase {
                FollowPhase::Sync(s) => {
                    let commands = s.current_epoch_persisted();
                    self.follower_sync_actions(commands)
                }
                _ => Vec::new(),
            },
            State::Looking(_) => Vec::new(),
        }
    }

    fn on_persisted(&mut self, zxid: Zxid) -> Vec<Action> {
        match &mut self.state {
            State::Leading(l) => match (&mut l.broadcast, &mut l.sync) {
                (Some(b), _) => broadcast_actions(b.persisted(zxid)),
                (None, Some(sync)) => {
                    let commands = sync.persisted(zxid);
                    self.leader_sync_outcome(commands)
                }
                (None, None) => Vec::new(),
            },
            State::Following(f) => match &mut f.phase {
                FollowPhase::Sync(s) => {
                    let commands = s.persisted(zxid);
                    self.follower_sync_actions(commands)
                }
                FollowPhase::Broadcast(b) => broadcast_actions(b.persisted(zxid)),
                FollowPhase::Discovery(_) | FollowPhase::Switching => Vec::new(),
            },
            State::Looking(_) => Vec::new(),
        }
    }

    fn propose(&mut self, txn: Bytes) -> Vec<Action> {
        let State::Leading(Lead { broadcast: Some(b), .. }) = &mut self.state else {
            return vec![Action::Rejected(ProposeError::NotLeading)];
        };
        match b.propose(txn) {
            Ok((zxid, commands)) => {
                let mut actions = broadcast_actions(commands);
                actions.push(Action::Proposed(zxid));
                actions
            }
            Err(e) => vec![Action::Rejected(e)],
        }
    }

    /// A barrier: passes once a quorum echoes a heartbeat sent now (sent at once rather than at the next tick,
    /// so that a `sync` waits one round trip, not up to a tick). Fails at once on a server that does not lead
    /// and serve.
    fn on_barrier(&mut self, id: BarrierId) -> Vec<Action> {
        let State::Leading(l) = &mut self.state else { return vec![Action::Barrier { id, passed: false }] };
        if l.broadcast.is_none() {
            return vec![Action::Barrier { id, passed: false }];
        }
        let passed = self.barriers.request(id, self.config.me, &self.config.voters);
        let mut actions: Vec<Action> = passed.into_iter().map(|id| Action::Barrier { id, passed: true }).collect();
        if self.barriers.is_waiting() {
            let (zxid, round) = (l.committed_or(self.durable.last_zxid), self.barriers.next_round());
            actions.extend(l.last_heard.keys().map(|&p| Action::Send(p, Message::Ping { zxid, round })));
        }
        actions
    }

    /// A looking server tells a peer it just connected to its vote at once (as ZooKeeper resends its last
    /// message on a new connection), rather than at its next resend, which may be a minute away. A restarted
    /// server's first frame also proves to a listener that still holds its old connection that it is no
    /// impostor (see [`crate::transport`]).
    fn on_connected(&mut self, peer: ServerId) -> Vec<Action> {
        match &self.state {
            State::Looking(election) if peer != self.config.me && self.config.voters.contains(peer) => {
                vec![Action::Send(peer, Message::Notification(election.notification()))]
            }
            _ => Vec::new(),
        }
    }

    fn on_disconnected(&mut self, peer: ServerId) -> Vec<Action> {
        match &mut self.state {
            State::Following(f) if f.leader == peer => self.look(Leave::LeaderGone),
            State::Leading(l) => {
                l.forget(peer);
                self.barriers.forget(peer);
                self.check_quorum()
            }
            _ => Vec::new(),
        }
    }

    fn on_tick(&mut self) -> Vec<Action> {
        let now = self.now;
        let (sync_limit, init_limit) =
            (self.config.tick * self.config.sync_limit, self.config.tick * self.config.init_limit);
        match &mut self.state {
            State::Looking(election) => {
                let commands = election.on_tick(now);
                self.after_election(commands)
            }
            State::Following(f) => {
                // While syncing, the leader may be silent for a while (preparing a snapshot): initLimit, as the
                // whole sync must fit in it anyway; in the broadcast phase, syncLimit.
                let limit = if matches!(f.phase, FollowPhase::Broadcast(_)) { sync_limit } else { init_limit };
                let silent = now.saturating_sub(f.last_heard) > limit;
                let syncing_too_long =
                    !matches!(f.phase, FollowPhase::Broadcast(_)) && now.saturating_sub(f.started) > init_limit;
                if silent || syncing_too_long {
                    return self.look(if silent { Leave::LeaderSilent } else { Leave::SyncTooSlow });
                }
                Vec::new()
            }
            State::Leading(l) => {
                if l.broadcast.is_none() && now.saturating_sub(l.started) > init_limit {
                    return self.look(Leave::NoQuorumSynced);
                }
                let limit = |p: &ServerId| if l.syncing.contains(p) { init_limit } else { sync_limit };
                let silent: Vec<ServerId> =
                    l.last_heard.iter().filter(|(p, &t)| now.saturating_sub(t) > limit(p)).map(|(&p, _)| p).collect();
                let mut actions = Vec::new();
                for p in silent {
                    l.forget(p);
                    self.barriers.forget(p);
                    actions.push(Action::Disconnect(p));
                }
                if now.saturating_sub(l.last_ping) >= self.config.tick {
                    // One heartbeat per tick.
                    l.last_ping = now;
                    let (zxid, round) = (l.committed_or(self.durable.last_zxid), self.barriers.next_round());
                    actions.extend(l.last_heard.keys().map(|&p| Action::Send(p, Message::Ping { zxid, round })));
                }
                actions.extend(self.check_quorum());
                actions
            }
        }
    }

    /// A broadcasting leader that no longer hears from a quorum steps down.
    fn check_quorum(&mut self) -> Vec<Action> {
        let State::Leading(l) = &self.state else { return Vec::new() };
        if l.broadcast.is_none() {
            return Vec::new();
        }
        let mut live: Vec<ServerId> = l.last_heard.keys().copied().collect();
        live.push(self.config.me);
        if self.config.voters.is_quorum(&live) {
            return Vec::new();
        }
        self.look(Leave::LostQuorum)
    }
}

fn election_actions(commands: Vec<election::Command>) -> Vec<Action> {
    commands
        .into_iter()
        .filter_map(|c| match c {
            election::Command::Send(to, n) => Some(Action::Send(to, Message::Notification(n))),
            election::Command::Decided(_) => None,
        })
        .collect()
}

fn discovery_actions(commands: Vec<discovery::Command>) -> Vec<Action> {
    commands
        .into_iter()
        .filter_map(|c| match c {
            discovery::Command::Send(to, m) => Some(Action::Send(to, m)),
            discovery::Command::PersistAcceptedEpoch(e) => Some(Action::PersistAcceptedEpoch(e)),
            discovery::Command::Established { .. } => None,
        })
        .collect()
}

fn leader_sync_actions(commands: Vec<leader_sync::Command>) -> Vec<Action> {
    commands
        .into_iter()
        .filter_map(|c| match c {
            leader_sync::Command::Send(to, m) => Some(Action::Send(to, m)),
            leader_sync::Command::StreamTxns { to, after, until, commit_up_to } => {
                Some(Action::StreamTxns { to, after, until, commit_up_to })
            }
            leader_sync::Command::StreamSnapshot { to, until, commit_up_to } => {
                Some(Action::StreamSnapshot { to, until, commit_up_to })
            }
            leader_sync::Command::PersistCurrentEpoch(e) => Some(Action::PersistCurrentEpoch(e)),
            leader_sync::Command::StartBroadcast(_) => None,
        })
        .collect()
}

fn broadcast_actions(commands: Vec<broadcast::Command>) -> Vec<Action> {
    commands
        .into_iter()
        .map(|c| match c {
            broadcast::Command::Send(to, m) => Action::Send(to, m),
            broadcast::Command::Append(z, t) => Action::Append(z, t),
            broadcast::Command::Apply(z) => Action::Apply(z),
        })
        .collect()
}
