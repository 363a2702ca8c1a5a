//! The looking phase: votes from peers, the election's outcome, and going back to election.

use super::actions::election_actions;
use super::{Action, DurableState, Peer, Role, State};
use crate::election::{self, Ballot, Election};
use crate::leave::Leave;
use crate::message::{Message, PeerState, ServerId};
use wal::Zxid;

impl Peer {
    pub(super) fn on_notification(&mut self, n: crate::message::Notification) -> Vec<Action> {
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

    pub(super) fn after_election(&mut self, commands: Vec<election::Command>) -> Vec<Action> {
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

    /// Back to election, in the next round, saying why.
    pub(super) fn look(&mut self, why: Leave) -> Vec<Action> {
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
        let ballot = ballot(self.round, self.logged, &self.durable);
        let (election, commands) = Election::start(c.me, c.voters.iter().collect(), ballot, c.election, self.now);
        self.state = State::Looking(election);
        let mut actions = vec![Action::RoleChanged(Role::Looking)];
        actions.extend(election_actions(commands));
        actions
    }

    /// A looking server tells a peer it just connected to its vote at once (as ZooKeeper resends its last
    /// message on a new connection), rather than at its next resend, which may be a minute away. A restarted
    /// server's first frame also proves to a listener that still holds its old connection that it is no
    /// impostor (see [`crate::transport`]).
    pub(super) fn on_connected(&mut self, peer: ServerId) -> Vec<Action> {
        match &self.state {
            State::Looking(election) if peer != self.config.me && self.config.voters.contains(peer) => {
                vec![Action::Send(peer, Message::Notification(election.notification()))]
            }
            _ => Vec::new(),
        }
    }
}

/// The ballot of a server whose log reaches `logged`: while it repairs, it vouches for what its log held before
/// the damage and is no candidate (it must never lead, nor vote as if it lacked what it lost).
pub(super) fn ballot(round: u64, logged: Zxid, durable: &DurableState) -> Ballot {
    match durable.repairing {
        Some(vouched) => {
            Ballot { round, last_zxid: vouched.max(logged), epoch: durable.current_epoch, candidate: false }
        }
        None => Ballot::candidate(round, logged, durable.current_epoch),
    }
}
