//! Read barriers: how a leader proves it still leads before it answers a `sync`.
//!
//! ZooKeeper answers a learner's `sync` once the leader's outstanding proposals commit, without asking whether
//! it still leads. A leader cut off with a minority keeps answering until it notices it lost its quorum (up to
//! `syncLimit` ticks), so a client on that minority can read, after `sync`, a value that a new leader has
//! already overwritten — a write that completed before the sync began, invisible to it. The nemesis suite found
//! exactly that (`StaleSyncedRead`, five nodes, the leader and one follower cut off from the other three).
//!
//! A barrier closes the gap as Raft's ReadIndex does. The leader numbers its heartbeats (the `round` of
//! [`Message::Ping`](crate::message::Message::Ping)) and a follower echoes the round it answers. A barrier
//! requested now passes once a quorum of voters (the leader included) has echoed a round sent after the
//! request: at the moment each of them answered, it still followed this leader, so no quorum had yet moved to
//! a later epoch, and no later leader can have committed anything before the request. Whatever was committed
//! before the request is in this leader's history; the node answers the sync once that is applied.
//!
//! # Invariants
//! - Rounds only grow, across terms and across a restart of the peer inside one process
//!   ([`Barriers::continue_after`]), so an echo of an old round can never pass a newer barrier.
//! - An echo of a round never sent is ignored (a faulty follower cannot pass a barrier by naming the future).
//! - A barrier passes only while its leader leads; when it stops leading, every pending barrier fails.

use std::collections::{BTreeMap, VecDeque};

use crate::message::ServerId;
use crate::quorum::Voters;

/// Names one barrier request, chosen by whoever asks (the runtime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BarrierId(pub u64);

/// A leader's heartbeat rounds, its followers' echoes, and the barriers waiting on them.
#[derive(Debug, Default)]
pub struct Barriers {
    /// The last heartbeat round sent.
    sent: u64,
    /// The highest round each follower echoed while this server leads.
    echoed: BTreeMap<ServerId, u64>,
    /// Barriers waiting, each with the first round that can pass it; rounds never decrease along the queue.
    pending: VecDeque<(BarrierId, u64)>,
}

impl Barriers {
    /// Starts the rounds after `round` (the last one a previous peer of this process sent).
    pub fn continue_after(&mut self, round: u64) {
        self.sent = self.sent.max(round);
    }

    /// The last round sent.
    pub fn last_round(&self) -> u64 {
        self.sent
    }

    /// Numbers a new heartbeat round, to send to every follower now.
    pub fn next_round(&mut self) -> u64 {
        self.sent += 1;
        self.sent
    }

    /// Queues a barrier that the next round (to be sent right after this call) can pass; it passes at once when
    /// `me` alone is a quorum.
    pub fn request(&mut self, id: BarrierId, me: ServerId, voters: &Voters) -> Vec<BarrierId> {
        self.pending.push_back((id, self.sent + 1));
        self.passed(me, voters)
    }

    /// A follower echoed `round`; returns the barriers that passed.
    pub fn on_echo(&mut self, from: ServerId, round: u64, me: ServerId, voters: &Voters) -> Vec<BarrierId> {
        if round > self.sent {
            return Vec::new();
        }
        let echoed = self.echoed.entry(from).or_default();
        *echoed = (*echoed).max(round);
        self.passed(me, voters)
    }

    /// A follower is no longer tracked: its echoes no longer count (it must echo again after it rejoins).
    pub fn forget(&mut self, follower: ServerId) {
        self.echoed.remove(&follower);
    }

    /// This server stops leading: every pending barrier fails, and every echo is forgotten.
    pub fn fail_all(&mut self) -> Vec<BarrierId> {
        self.echoed.clear();
        self.pending.drain(..).map(|(id, _)| id).collect()
    }

    /// Whether any barrier waits.
    pub fn is_waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    fn passed(&mut self, me: ServerId, voters: &Voters) -> Vec<BarrierId> {
        let mut passed = Vec::new();
        while let Some(&(id, round)) = self.pending.front() {
            let answered = self.echoed.iter().filter(|(_, &r)| r >= round).map(|(p, _)| p);
            if !voters.is_quorum(answered.chain([&me])) {
                break;
            }
            self.pending.pop_front();
            passed.push(id);
        }
        passed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn five() -> Voters {
        Voters::new((1..=5).map(ServerId))
    }

    #[test]
    fn a_barrier_passes_once_a_quorum_echoes_a_round_sent_after_it() {
        let (mut b, me, voters) = (Barriers::default(), ServerId(1), five());
        // Echoes of earlier rounds are on record before the request: they do not count for it.
        let early = b.next_round();
        assert!(b.on_echo(ServerId(2), early, me, &voters).is_empty());
        assert!(b.on_echo(ServerId(3), early, me, &voters).is_empty());
        assert!(b.request(BarrierId(7), me, &voters).is_empty());
        let round = b.next_round();
        assert!(b.on_echo(ServerId(2), round, me, &voters).is_empty(), "the leader and one follower are 2 of 5");
        assert_eq!(b.on_echo(ServerId(3), round, me, &voters), vec![BarrierId(7)]);
        assert!(!b.is_waiting());
    }

    #[test]
    fn a_minority_never_passes_a_barrier_and_losing_the_lead_fails_it() {
        let (mut b, me, voters) = (Barriers::default(), ServerId(1), five());
        b.request(BarrierId(1), me, &voters);
        for _ in 0..10 {
            let round = b.next_round();
            assert!(b.on_echo(ServerId(2), round, me, &voters).is_empty());
        }
        assert_eq!(b.fail_all(), vec![BarrierId(1)]);
        assert!(!b.is_waiting());
    }

    #[test]
    fn echoes_of_rounds_never_sent_and_of_forgotten_followers_do_not_count() {
        let (mut b, me, voters) = (Barriers::default(), ServerId(1), five());
        b.request(BarrierId(1), me, &voters);
        assert!(b.on_echo(ServerId(2), 1_000, me, &voters).is_empty());
        assert!(b.on_echo(ServerId(3), 1_000, me, &voters).is_empty());
        let round = b.next_round();
        b.on_echo(ServerId(2), round, me, &voters);
        b.forget(ServerId(2));
        assert!(b.on_echo(ServerId(3), round, me, &voters).is_empty());
        assert_eq!(b.on_echo(ServerId(4), round, me, &voters), vec![BarrierId(1)]);
    }

    #[test]
    fn barriers_pass_in_order_and_a_lone_voter_passes_at_once() {
        let (mut b, me, voters) =
            (Barriers::default(), ServerId(1), Voters::new([ServerId(1), ServerId(2), ServerId(3)]));
        b.request(BarrierId(1), me, &voters);
        let first = b.next_round();
        b.request(BarrierId(2), me, &voters);
        let second = b.next_round();
        assert_eq!(b.on_echo(ServerId(2), first, me, &voters), vec![BarrierId(1)]);
        assert_eq!(b.on_echo(ServerId(3), second, me, &voters), vec![BarrierId(2)]);
        let mut alone = Barriers::default();
        assert_eq!(alone.request(BarrierId(3), me, &Voters::new([me])), vec![BarrierId(3)]);
    }

    #[test]
    fn rounds_continue_across_a_restart_of_the_peer() {
        let mut b = Barriers::default();
        b.continue_after(41);
        assert_eq!(b.next_round(), 42);
        b.continue_after(3);
        assert_eq!(b.last_round(), 42);
    }
}
