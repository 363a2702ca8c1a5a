//! The leader side: discovery, sync and broadcast as leader, proposals and read barriers.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use wal::{Epoch, Zxid};

use super::actions::{broadcast_actions, discovery_actions, leader_sync_actions};
use super::{Action, Peer, Role, State};
use crate::barrier::BarrierId;
use crate::broadcast::{LeaderBroadcast, ProposeError};
use crate::discovery::{self, DiscoveryError, LeaderDiscovery};
use crate::election::Time;
use crate::leader_sync::{self, LeaderSync};
use crate::leave::{Leave, Violation};
use crate::message::{Message, ServerId};
use crate::sync::History;

pub(super) struct Lead {
    pub(super) discovery: LeaderDiscovery,
    pub(super) sync: Option<LeaderSync>,
    pub(super) broadcast: Option<LeaderBroadcast>,
    pub(super) epoch: Option<Epoch>,
    pub(super) last_heard: BTreeMap<ServerId, Time>,
    /// Followers being synced (sent DIFF, TRUNC or SNAP, no NEWLEADER ack yet): they get `initLimit` to answer,
    /// not `syncLimit`, as in ZooKeeper — what is queued for them waits behind their sync stream, a snapshot can
    /// take a while to prepare and ship, and they send nothing meanwhile.
    pub(super) syncing: BTreeSet<ServerId>,
    pub(super) started: Time,
    pub(super) last_ping: Time,
}

impl Lead {
    /// Whether a sync stream went to `follower` since its last FOLLOWERINFO.
    fn is_syncing_or_synced(&self, follower: ServerId) -> bool {
        self.syncing.contains(&follower) || self.broadcast.as_ref().is_some_and(|b| b.has_follower(follower))
    }

    /// The last committed zxid once broadcasting, else `last`.
    pub(super) fn committed_or(&self, last: Zxid) -> Zxid {
        self.broadcast.as_ref().map_or(last, |b| b.committed())
    }

    /// Stops tracking a follower (gone, silent or dropped): it counts for nothing until it rejoins.
    pub(super) fn forget(&mut self, follower: ServerId) {
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

impl Peer {
    pub(super) fn lead(&mut self) -> Vec<Action> {
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

    pub(super) fn leader_message(&mut self, from: ServerId, message: Message, history: &impl History) -> Vec<Action> {
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

    pub(super) fn leader_established(
        &mut self,
        commands: Vec<discovery::Command>,
        history: &impl History,
    ) -> Vec<Action> {
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

    pub(super) fn leader_sync_outcome(&mut self, commands: Vec<leader_sync::Command>) -> Vec<Action> {
        let State::Leading(l) = &mut self.state else { return Vec::new() };
        let mut actions = Vec::new();
        for command in commands {
            match command {
                leader_sync::Command::StartBroadcast(followers) => {
                    let epoch = l.epoch.expect("established");
                    // A quorum synced: answer looking servers with the epoch established, as the synced followers
                    // do (see `Outcome::established`).
                    self.settled = self.settled.map(|o| o.established(epoch));
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

    pub(super) fn propose(&mut self, txn: Bytes) -> Vec<Action> {
        let State::Leading(Lead { broadcast: Some(b), .. }) = &mut self.state else {
            return vec![Action::Rejected(ProposeError::NotLeading)];
        };
        match b.propose(txn) {
            Ok((zxid, commands)) => {
                // Sized once: this runs for every write.
                let mut actions = Vec::with_capacity(commands.len() + 1);
                actions.extend(commands.into_iter().map(Action::from));
                actions.push(Action::Proposed(zxid));
                actions
            }
            Err(e) => vec![Action::Rejected(e)],
        }
    }

    /// A barrier: passes once a quorum echoes a heartbeat sent now (sent at once rather than at the next tick,
    /// so that a `sync` waits one round trip, not up to a tick). Fails at once on a server that does not lead
    /// and serve.
    pub(super) fn on_barrier(&mut self, id: BarrierId) -> Vec<Action> {
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
}
