//! Routes a peer message or a completion (WAL durable, epoch durable) to the current role's sub-machine.

use wal::Zxid;

use super::actions::{broadcast_actions, discovery_actions};
use super::following::FollowPhase;
use super::{Action, Peer, State};
use crate::follower_sync::FollowerSync;
use crate::leave::Violation;
use crate::message::{Message, ServerId};
use crate::sync::History;

impl Peer {
    pub(super) fn on_message(&mut self, from: ServerId, message: Message, history: &impl History) -> Vec<Action> {
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

    pub(super) fn on_accepted_epoch_persisted(&mut self, history: &impl History) -> Vec<Action> {
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

    pub(super) fn on_current_epoch_persisted(&mut self) -> Vec<Action> {
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

    pub(super) fn on_persisted(&mut self, zxid: Zxid) -> Vec<Action> {
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
}
