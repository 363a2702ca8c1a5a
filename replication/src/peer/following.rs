//! The follower side: discovery, sync and broadcast as a follower of one leader.

use super::actions::{broadcast_actions, discovery_actions};
use super::{Action, Peer, Role, State};
use crate::broadcast::FollowerBroadcast;
use crate::discovery::{self, FollowerDiscovery};
use crate::election::Time;
use crate::follower_sync::{self, FollowerSync};
use crate::leave::{Leave, Violation};
use crate::message::{Message, ServerId};

pub(super) enum FollowPhase {
    Discovery(FollowerDiscovery),
    Sync(FollowerSync),
    Broadcast(FollowerBroadcast),
    /// Only while moving from sync to broadcast, inside one call: never observed between events.
    Switching,
}

pub(super) struct Follow {
    pub(super) leader: ServerId,
    pub(super) phase: FollowPhase,
    /// When this follower started following: discovery and sync must end within `init_limit` of it.
    pub(super) started: Time,
    pub(super) last_heard: Time,
}

impl Peer {
    pub(super) fn follow(&mut self, leader: ServerId) -> Vec<Action> {
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

    pub(super) fn follower_message(&mut self, message: Message) -> Vec<Action> {
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

    pub(super) fn follower_sync_actions(&mut self, commands: Vec<follower_sync::Command>) -> Vec<Action> {
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
        f.phase = FollowPhase::Broadcast(broadcast.bounded(self.config.window));
        // Synced: the current epoch is the leader's, durable before NEWLEADER was acknowledged. Answer looking
        // servers with it, as the leader and its other followers do (see `Outcome::established`).
        self.settled = self.settled.map(|o| o.established(self.durable.current_epoch));
        let mut actions = self.follower_sync_actions(commands);
        // The leader's history up to NEWLEADER is durable here (it was acknowledged), and committed.
        if let Some(vouched) = self.durable.repairing.take() {
            tracing::info!(server = self.config.me.0, %vouched, "repaired: synced with the leader; a candidate again");
            actions.push(Action::Repaired);
        }
        actions
    }
}
