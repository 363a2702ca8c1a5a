//! Time and lost links: the tick (election resends, heartbeats, and the timeouts that detect a silent leader,
//! silent followers or a lost quorum) and broken connections.

use super::following::FollowPhase;
use super::{Action, Peer, State};
use crate::leave::Leave;
use crate::message::{Message, ServerId};

impl Peer {
    pub(super) fn on_tick(&mut self) -> Vec<Action> {
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
    pub(super) fn check_quorum(&mut self) -> Vec<Action> {
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

    pub(super) fn on_disconnected(&mut self, peer: ServerId) -> Vec<Action> {
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
}
