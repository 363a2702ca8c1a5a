//! Fast leader election (ZooKeeper's `FastLeaderElection`) as a state machine without IO.
//!
//! Each looking server votes, first for itself, and tells every voter. A vote for a server with a higher
//! (last logged epoch, last zxid, server id) replaces the current one and is announced again. Once a quorum of
//! voters vote for the same server in the same round, the server waits `finalize_wait` for a better vote; if none
//! comes, the election is over: that server leads and the others follow. Votes of a lower round are ignored, a
//! higher round restarts the tally. Servers that have already settled answer with the established leader, and a
//! late joiner follows it once a quorum of them agree and the leader itself confirms it leads.
//!
//! Settled servers agree when they name the same leader in the same epoch, whatever round and zxid they report
//! (ZooKeeper's `Vote.equals` for servers out of election, ZOOKEEPER-1732): members of one leadership can have
//! settled in different rounds and on different votes (a follower decides on the leader's LEADING answer of a
//! round the leader has since left, and the leader, re-elected in the next round, takes it up). Once synced,
//! each answers with the epoch the leader established ([`Outcome::established`]), which names that leadership
//! alone: no two leaders ever establish the same epoch.
//!
//! Time is passed in ([`Time`]), never read, so simulations replay exactly. Notifications are re-sent on a
//! timeout that doubles from `initial_timeout` up to `max_timeout` while no decision is made.
//!
//! A server repairing its log from its peers (its log lost a damaged suffix, see [`crate::repairing`]) is no
//! candidate: it announces itself as [`PeerState::Repairing`] and votes only for a server whose (epoch, zxid)
//! is at least what its log held before the damage, never for itself. So it never votes as if it lacked what it
//! lost: a committed txn it held is held by any leader it helps elect. Other servers never adopt its vote for
//! itself, nor count it.
//!
//! # Invariants
//! - The proposal only grows in vote order within a round.
//! - A decision needs a quorum of voters agreeing on one vote in the current round.
//! - A server that is no candidate never proposes, nor decides for, itself.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use wal::{Epoch, Zxid};

use crate::message::{Notification, PeerState, ServerId};

/// A point in time: the time since an origin the caller picks (simulated or real).
pub type Time = Duration;

/// A vote: who should lead, and what that server's log holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vote {
    /// The proposed leader.
    pub leader: ServerId,
    /// Its last logged zxid.
    pub zxid: Zxid,
    /// The epoch of that zxid (its current epoch).
    pub epoch: Epoch,
}

impl Vote {
    /// ZooKeeper's total order on votes: higher epoch, then higher zxid, then higher server id wins.
    pub fn beats(&self, other: &Vote) -> bool {
        (self.epoch, self.zxid, self.leader) > (other.epoch, other.zxid, other.leader)
    }

    /// Whether two settled servers' votes name the same leadership: the same leader and epoch. Their zxids and
    /// rounds may differ (see the module doc).
    pub fn same_leadership(&self, other: &Vote) -> bool {
        (self.leader, self.epoch) == (other.leader, other.epoch)
    }
}

/// Election timing.
#[derive(Clone, Copy, Debug)]
pub struct ElectionConfig {
    /// How long to wait for a better vote once a quorum agrees (ZooKeeper's `finalizeWait`, 200 ms).
    pub finalize_wait: Duration,
    /// The first re-send interval (200 ms).
    pub initial_timeout: Duration,
    /// The longest re-send interval (ZooKeeper's `maxNotificationInterval`, 60 s).
    pub max_timeout: Duration,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            finalize_wait: Duration::from_millis(200),
            initial_timeout: Duration::from_millis(200),
            max_timeout: Duration::from_secs(60),
        }
    }
}

/// What the election decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The leader.
    pub leader: ServerId,
    /// The vote that won.
    pub vote: Vote,
    /// The round it was decided in.
    pub round: u64,
    /// This server's new state.
    pub state: PeerState,
}

impl Outcome {
    /// The outcome a server answers looking ones with once its leader established `epoch` (a follower synced
    /// with it, a leader a quorum synced with): the vote's epoch becomes that epoch. Without this, members of one
    /// leadership that settled on different votes (see the module doc) report different epochs for ever, and a
    /// late joiner never sees a quorum agree (ZooKeeper's `QuorumPeer.updateElectionVote`).
    pub fn established(self, epoch: Epoch) -> Outcome {
        debug_assert!(epoch >= self.vote.epoch, "established {epoch:?} below the vote {:?}", self.vote);
        Outcome { vote: Vote { epoch, ..self.vote }, ..self }
    }
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Send this notification to that voter.
    Send(ServerId, Notification),
    /// The election is over.
    Decided(Outcome),
}

/// One server's election.
#[derive(Debug)]
pub struct Election {
    me: ServerId,
    voters: BTreeSet<ServerId>,
    config: ElectionConfig,
    round: u64,
    /// This server's own vote: itself, with its log.
    own: Vote,
    proposal: Vote,
    /// Votes of looking voters in this round.
    received: BTreeMap<ServerId, Vote>,
    /// Votes of settled servers (following or leading), with their round.
    settled: BTreeMap<ServerId, (Vote, u64, PeerState)>,
    timeout: Duration,
    next_resend: Time,
    finalize_at: Option<Time>,
    decided: Option<Outcome>,
    /// Whether this server may lead (`false` while it repairs its log from its peers).
    candidate: bool,
}

/// What a server enters an election with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ballot {
    /// The round: one above the last round this server took part in.
    pub round: u64,
    /// The last zxid its log holds; while it repairs, what its log held before the damage (it vouches for it).
    pub last_zxid: Zxid,
    /// Its current epoch.
    pub epoch: Epoch,
    /// Whether it may lead (`false` while it repairs its log from its peers: it then votes for others only).
    pub candidate: bool,
}

impl Ballot {
    /// A candidate's ballot.
    pub fn candidate(round: u64, last_zxid: Zxid, epoch: Epoch) -> Ballot {
        Ballot { round, last_zxid, epoch, candidate: true }
    }
}

impl Election {
    /// Starts an election with `ballot`, voting for itself (if a candidate). Returns the notifications to send.
    pub fn start(
        me: ServerId,
        voters: BTreeSet<ServerId>,
        ballot: Ballot,
        config: ElectionConfig,
        now: Time,
    ) -> (Election, Vec<Command>) {
        let Ballot { round, last_zxid, epoch, candidate } = ballot;
        let proposal = Vote { leader: me, zxid: last_zxid, epoch };
        let mut election = Election {
            me,
            voters,
            config,
            round,
            own: proposal,
            proposal,
            received: BTreeMap::new(),
            settled: BTreeMap::new(),
            timeout: config.initial_timeout,
            next_resend: now + config.initial_timeout,
            finalize_at: None,
            decided: None,
            candidate,
        };
        if candidate {
            election.received.insert(me, proposal);
        }
        if candidate && election.quorum_agrees(&election.received, &proposal) {
            // A quorum of one (a standalone server): decide at the first tick.
            election.finalize_at = Some(now);
        }
        let commands = election.announce();
        (election, commands)
    }

    /// The current vote.
    pub fn proposal(&self) -> Vote {
        self.proposal
    }

    /// The current round.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The outcome, once decided.
    pub fn outcome(&self) -> Option<Outcome> {
        self.decided
    }

    /// Handles a notification received at `now`.
    pub fn on_notification(&mut self, n: Notification, now: Time) -> Vec<Command> {
        if self.decided.is_some() || n.sender == self.me {
            return Vec::new();
        }
        let vote = Vote { leader: n.leader, zxid: n.zxid, epoch: n.peer_epoch };
        if !matches!(n.state, PeerState::Looking | PeerState::Repairing) {
            return self.on_settled(n, vote, now);
        }
        if !self.voters.contains(&n.sender) {
            return Vec::new();
        }
        // It looks again: what it said when it followed or led no longer holds (a leader that lost its quorum
        // must not confirm its leadership, nor a former follower count towards it, from an old answer).
        self.settled.remove(&n.sender);
        // A repairing server's vote for itself is no candidacy: neither adopted nor counted.
        let counts = !(n.state == PeerState::Repairing && vote.leader == n.sender);
        let mut commands = Vec::new();
        if n.election_epoch > self.round {
            // A newer round: join it, and vote afresh for the better of its vote and our own.
            self.round = n.election_epoch;
            self.received.clear();
            self.proposal = if counts && self.may_adopt(&vote, &self.own) { vote } else { self.own };
            self.finalize_at = None;
            commands.extend(self.announce());
        } else if n.election_epoch < self.round {
            // The sender lags: tell it where we are.
            return vec![Command::Send(n.sender, self.notification())];
        } else if counts && self.may_adopt(&vote, &self.proposal) {
            self.proposal = vote;
            self.finalize_at = None;
            commands.extend(self.announce());
        }
        if counts {
            self.received.insert(n.sender, vote);
        }
        if self.proposes_another() || self.candidate {
            self.received.insert(self.me, self.proposal);
        }
        if self.finalize_at.is_none()
            && (self.candidate || self.proposes_another())
            && self.quorum_agrees(&self.received, &self.proposal)
        {
            self.finalize_at = Some(now + self.config.finalize_wait);
        }
        commands
    }

    /// Whether `vote` should replace `current` as this server's proposal. A candidate takes the better vote
    /// (ZooKeeper's order); a server that is no candidate takes a vote for another server whose log reaches at
    /// least as far as its own did before the damage, the better one if it had one already.
    fn may_adopt(&self, vote: &Vote, current: &Vote) -> bool {
        if self.candidate {
            return vote.beats(current);
        }
        let reaches = (vote.epoch, vote.zxid) >= (self.own.epoch, self.own.zxid);
        vote.leader != self.me && reaches && (current.leader == self.me || vote.beats(current))
    }

    /// Whether this server proposes a server other than itself.
    fn proposes_another(&self) -> bool {
        self.proposal.leader != self.me
    }

    /// A notification from a server that is already following or leading.
    fn on_settled(&mut self, n: Notification, vote: Vote, now: Time) -> Vec<Command> {
        if !self.voters.contains(&n.sender) {
            // Only voters count towards a quorum, and only they are remembered: the map stays bounded.
            return Vec::new();
        }
        if !self.candidate && vote.leader == self.me {
            // Settled on this server, which cannot lead: they will find out.
            return Vec::new();
        }
        self.settled.insert(n.sender, (vote, n.election_epoch, n.state));
        // Settled on another server: those naming the same leadership agree (see the module doc). Settled on this
        // one, which is looking: only votes of its own round count, as they may still make it lead.
        let agrees = |v: &Vote, round: u64| match vote.leader == self.me {
            true => *v == vote && round == n.election_epoch,
            false => v.same_leadership(&vote),
        };
        let agreeing: BTreeMap<ServerId, Vote> =
            self.settled.iter().filter(|(_, (v, round, _))| agrees(v, *round)).map(|(s, _)| (*s, vote)).collect();
        // ZooKeeper's checkLeader: another leader must say itself that it leads; if the vote is for us, the round
        // must be ours.
        let leader_confirms = if vote.leader == self.me {
            n.election_epoch == self.round
        } else {
            self.settled.get(&vote.leader).is_some_and(|(v, _, s)| v.same_leadership(&vote) && *s == PeerState::Leading)
        };
        let mut with_me = agreeing;
        with_me.insert(self.me, vote);
        if leader_confirms && self.quorum_agrees(&with_me, &vote) {
            self.round = n.election_epoch;
            self.proposal = vote;
            return self.decide(now);
        }
        Vec::new()
    }

    /// Handles the passing of time: re-sends on timeout, decides when the finalize wait has passed.
    pub fn on_tick(&mut self, now: Time) -> Vec<Command> {
        if self.decided.is_some() {
            return Vec::new();
        }
        if self.finalize_at.is_some_and(|at| now >= at) {
            return self.decide(now);
        }
        if now >= self.next_resend {
            self.timeout = (self.timeout * 2).min(self.config.max_timeout);
            self.next_resend = now + self.timeout;
            return self.announce();
        }
        Vec::new()
    }

    fn decide(&mut self, _now: Time) -> Vec<Command> {
        assert!(self.candidate || self.proposal.leader != self.me, "a server that is no candidate never leads");
        let state = if self.proposal.leader == self.me { PeerState::Leading } else { PeerState::Following };
        let outcome = Outcome { leader: self.proposal.leader, vote: self.proposal, round: self.round, state };
        self.decided = Some(outcome);
        // Tell everyone at once how this server settled. A server still looking may be counting this one's
        // earlier LOOKING vote towards another candidate; without this, that candidate can win a quorum of
        // stale votes and lead alone until initLimit runs out (seen when three servers start together).
        let settled = Election::answer_when_settled(self.me, &outcome);
        let mut commands: Vec<Command> =
            self.voters.iter().filter(|&&v| v != self.me).map(|&v| Command::Send(v, settled)).collect();
        commands.push(Command::Decided(outcome));
        commands
    }

    /// The answer a settled server gives to a looking one: its vote, round and state.
    pub fn answer_when_settled(me: ServerId, outcome: &Outcome) -> Notification {
        Notification {
            leader: outcome.leader,
            zxid: outcome.vote.zxid,
            peer_epoch: outcome.vote.epoch,
            election_epoch: outcome.round,
            state: outcome.state,
            sender: me,
        }
    }

    fn quorum_agrees(&self, votes: &BTreeMap<ServerId, Vote>, vote: &Vote) -> bool {
        let agreeing = votes.iter().filter(|(s, v)| self.voters.contains(s) && *v == vote).count();
        agreeing * 2 > self.voters.len()
    }

    /// This server's current vote, as it announces it.
    pub fn notification(&self) -> Notification {
        Notification {
            leader: self.proposal.leader,
            zxid: self.proposal.zxid,
            peer_epoch: self.proposal.epoch,
            election_epoch: self.round,
            state: if self.candidate { PeerState::Looking } else { PeerState::Repairing },
            sender: self.me,
        }
    }

    fn announce(&self) -> Vec<Command> {
        let n = self.notification();
        self.voters.iter().filter(|&&v| v != self.me).map(|&v| Command::Send(v, n)).collect()
    }
}
