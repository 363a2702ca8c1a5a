//! The peer across role changes: an epoch it has asked to accept binds it at once, even if it moves on before
//! the node reports the epoch durable (a bug the simulation found: seed 15692 of a 20000-seed soak).

use std::time::Duration;

use replication::message::{Message, Notification, PeerState, ServerId};
use replication::peer::{Action, DurableState, Event, Learners, Peer, Role};
use wal::{Epoch, Zxid};

mod common;
use common::{config, Empty};

/// Makes peer 1 follow `leader` by showing it a quorum of settled servers under that leader.
fn follow(peer: &mut Peer, leader: u64, round: u64) -> Vec<Action> {
    let mut actions = Vec::new();
    for (sender, state) in [(leader, PeerState::Leading), (if leader == 2 { 3 } else { 2 }, PeerState::Following)] {
        let n = Notification {
            leader: ServerId(leader),
            zxid: Zxid::ZERO,
            peer_epoch: Epoch(0),
            election_epoch: round,
            state,
            sender: ServerId(sender),
        };
        actions.extend(peer.handle(Event::Message(ServerId(sender), Message::Notification(n)), &Empty));
    }
    actions
}

#[test]
fn an_epoch_asked_to_be_accepted_binds_before_it_is_reported_durable() {
    let (mut peer, _) = Peer::new(config(), DurableState::default(), Duration::ZERO);
    follow(&mut peer, 2, 1);
    assert_eq!(peer.role(), Role::Following(ServerId(2)));
    let actions = peer.handle(Event::Message(ServerId(2), Message::LeaderInfo { new_epoch: Epoch(5) }), &Empty);
    assert!(actions.contains(&Action::PersistAcceptedEpoch(Epoch(5))));
    // The leader goes away before the node reports epoch 5 durable.
    peer.handle(Event::Disconnected(ServerId(2)), &Empty);
    assert_eq!(peer.role(), Role::Looking);
    // The durable report arrives while looking; then the peer follows server 3.
    peer.handle(Event::AcceptedEpochPersisted, &Empty);
    assert_eq!(peer.durable().accepted_epoch, Epoch(5));
    let actions = follow(&mut peer, 3, 2);
    let info = actions.iter().find_map(|a| match a {
        Action::Send(ServerId(3), Message::FollowerInfo { accepted_epoch, .. }) => Some(*accepted_epoch),
        _ => None,
    });
    assert_eq!(info, Some(Epoch(5)), "{actions:?}");
    // A leader proposing a lower epoch is refused: the peer goes back to election.
    peer.handle(Event::Message(ServerId(3), Message::LeaderInfo { new_epoch: Epoch(4) }), &Empty);
    assert_eq!(peer.role(), Role::Looking);
}

#[test]
fn the_promise_holds_even_before_the_report() {
    let (mut peer, _) = Peer::new(config(), DurableState::default(), Duration::ZERO);
    follow(&mut peer, 2, 1);
    peer.handle(Event::Message(ServerId(2), Message::LeaderInfo { new_epoch: Epoch(5) }), &Empty);
    peer.handle(Event::Disconnected(ServerId(2)), &Empty);
    // No durable report yet: following another leader, the peer still says it accepted 5.
    let actions = follow(&mut peer, 3, 2);
    assert!(
        actions.contains(&Action::Send(
            ServerId(3),
            Message::FollowerInfo { accepted_epoch: Epoch(5), last_zxid: Zxid::ZERO }
        )),
        "{actions:?}"
    );
}

/// Drives peer 1 from election to broadcast as a follower of 2 in epoch 1, with an empty history.
fn synced_follower() -> Peer {
    let (mut peer, _) = Peer::new(config(), DurableState::default(), Duration::ZERO);
    follow(&mut peer, 2, 1);
    let from_leader = |peer: &mut Peer, m: Message| peer.handle(Event::Message(ServerId(2), m), &Empty);
    from_leader(&mut peer, Message::LeaderInfo { new_epoch: Epoch(1) });
    peer.handle(Event::AcceptedEpochPersisted, &Empty);
    from_leader(&mut peer, Message::Diff { zxid: Zxid::ZERO });
    let actions = from_leader(&mut peer, Message::NewLeader { epoch: Epoch(1), zxid: Zxid::ZERO });
    assert!(actions.contains(&Action::PersistCurrentEpoch(Epoch(1))), "{actions:?}");
    let actions = peer.handle(Event::CurrentEpochPersisted, &Empty);
    assert!(
        actions.iter().any(|a| matches!(a, Action::Send(ServerId(2), Message::AckNewLeader { .. }))),
        "{actions:?}"
    );
    from_leader(&mut peer, Message::UpToDate);
    assert!(peer.serving(), "in the broadcast phase");
    peer
}

/// The rule everything rests on: a follower acknowledges a proposal only once the node reported it durable.
/// The simulation catches an ACK sent at append time too (committed txns lost after crashes); this pins the
/// order itself, on one follower, without a crash.
#[test]
fn a_follower_acknowledges_a_proposal_only_after_it_is_durable() {
    let mut peer = synced_follower();
    let (z1, z2) = (Zxid::new(Epoch(1), 1), Zxid::new(Epoch(1), 2));
    let mut actions = Vec::new();
    for zxid in [z1, z2] {
        let txn = bytes::Bytes::from_static(b"txn");
        actions.extend(peer.handle(Event::Message(ServerId(2), Message::Proposal { zxid, txn: txn.clone() }), &Empty));
        assert!(actions.contains(&Action::Append(zxid, txn)), "{actions:?}");
    }
    let acks = |actions: &[Action]| -> Vec<Zxid> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(_, Message::Ack { zxid }) => Some(*zxid),
                _ => None,
            })
            .collect()
    };
    assert_eq!(acks(&actions), vec![], "nothing is durable yet: no ACK");
    assert_eq!(acks(&peer.handle(Event::Persisted(z1), &Empty)), vec![z1]);
    // One cumulative ACK for what became durable together.
    assert_eq!(acks(&peer.handle(Event::Persisted(z2), &Empty)), vec![z2]);
    let actions = peer.handle(Event::Message(ServerId(2), Message::Commit { zxid: z2 }), &Empty);
    assert!(actions.contains(&Action::Apply(z2)), "{actions:?}");
}

/// ZOOKEEPER-4646 / -4785 at the peer level, in order: a follower synced by DIFF acknowledges NEWLEADER only
/// after the synced txns are durable AND the new epoch is persisted — never at append time, never with the
/// epoch write still pending. (The simulation's crashes did not catch an early ACK in 3000 seeds; this does.)
#[test]
fn newleader_is_acknowledged_only_after_the_synced_txns_and_then_the_epoch_are_durable() {
    let (mut peer, _) = Peer::new(config(), DurableState::default(), Duration::ZERO);
    follow(&mut peer, 2, 1);
    let from_leader = |peer: &mut Peer, m: Message| peer.handle(Event::Message(ServerId(2), m), &Empty);
    from_leader(&mut peer, Message::LeaderInfo { new_epoch: Epoch(2) });
    peer.handle(Event::AcceptedEpochPersisted, &Empty);
    let acked = |actions: &[Action]| actions.iter().any(|a| matches!(a, Action::Send(_, Message::AckNewLeader { .. })));
    let (z1, z2) = (Zxid::new(Epoch(1), 1), Zxid::new(Epoch(1), 2));
    let mut actions = from_leader(&mut peer, Message::Diff { zxid: Zxid::ZERO });
    for zxid in [z1, z2] {
        actions.extend(from_leader(&mut peer, Message::Proposal { zxid, txn: bytes::Bytes::from_static(b"t") }));
    }
    actions.extend(from_leader(&mut peer, Message::NewLeader { epoch: Epoch(2), zxid: z2 }));
    assert!(!acked(&actions), "NEWLEADER acknowledged with the synced txns only appended: {actions:?}");
    assert!(!actions.contains(&Action::PersistCurrentEpoch(Epoch(2))), "epoch persisted before the txns: {actions:?}");
    // Half of the synced txns durable: still nothing.
    let actions = peer.handle(Event::Persisted(z1), &Empty);
    assert!(!acked(&actions) && !actions.contains(&Action::PersistCurrentEpoch(Epoch(2))), "{actions:?}");
    // All durable: the epoch is persisted first, and the ACK waits for that too.
    let actions = peer.handle(Event::Persisted(z2), &Empty);
    assert!(actions.contains(&Action::PersistCurrentEpoch(Epoch(2))), "{actions:?}");
    assert!(!acked(&actions), "NEWLEADER acknowledged before the epoch write completed: {actions:?}");
    let actions = peer.handle(Event::CurrentEpochPersisted, &Empty);
    assert!(acked(&actions), "{actions:?}");
    assert_eq!(peer.durable().current_epoch, Epoch(2));
}

/// While it syncs, a follower gives its leader initLimit, not syncLimit, to say something (the leader may be
/// preparing a snapshot, and its heartbeats wait behind the sync stream); in the broadcast phase, syncLimit.
#[test]
fn a_syncing_follower_waits_init_limit_for_its_leader_and_a_synced_one_sync_limit() {
    let tick = config().tick;
    let (mut peer, _) = Peer::new(config(), DurableState::default(), Duration::ZERO);
    follow(&mut peer, 2, 1);
    peer.handle(Event::Message(ServerId(2), Message::LeaderInfo { new_epoch: Epoch(1) }), &Empty);
    peer.handle(Event::AcceptedEpochPersisted, &Empty);
    peer.handle(Event::Message(ServerId(2), Message::Snap { zxid: Zxid::new(Epoch(1), 9), total_bytes: 10 }), &Empty);
    // Silent for longer than syncLimit (5 ticks), within initLimit (10 ticks): still following.
    peer.handle(Event::Tick(tick * 7), &Empty);
    assert_eq!(peer.role(), Role::Following(ServerId(2)), "dropped its leader at syncLimit while syncing");
    peer.handle(Event::Tick(tick * 11), &Empty);
    assert_eq!(peer.role(), Role::Looking, "a sync must still end within initLimit");

    let mut synced = synced_follower();
    synced.handle(Event::Tick(tick * 7), &Empty);
    assert_eq!(synced.role(), Role::Looking, "in the broadcast phase, syncLimit applies");
}

/// The leader's side of the same rule: a follower it is syncing (no NEWLEADER ack yet) is dropped only after
/// initLimit of silence, one in the broadcast phase after syncLimit.
#[test]
fn a_leader_gives_a_syncing_follower_init_limit() {
    let tick = config().tick;
    let z = Zxid::new(Epoch(1), 5);
    let durable = DurableState { accepted_epoch: Epoch(1), current_epoch: Epoch(1), last_zxid: z, repairing: None };
    let (mut peer, _) = Peer::new(config(), durable, Duration::ZERO);
    let vote = |sender: u64| Notification {
        leader: ServerId(1),
        zxid: z,
        peer_epoch: Epoch(1),
        election_epoch: 1,
        state: PeerState::Looking,
        sender: ServerId(sender),
    };
    for sender in [2, 3] {
        peer.handle(Event::Message(ServerId(sender), Message::Notification(vote(sender))), &Empty);
    }
    peer.handle(Event::Tick(tick * 3), &Empty); // past the finalize wait (200 ms)
    assert_eq!(peer.role(), Role::Leading, "server 1 has the highest zxid");
    let from = |peer: &mut Peer, m: Message| peer.handle(Event::Message(ServerId(2), m), &Empty);
    let actions = from(&mut peer, Message::FollowerInfo { accepted_epoch: Epoch(1), last_zxid: Zxid::ZERO });
    assert!(actions.contains(&Action::PersistAcceptedEpoch(Epoch(2))), "{actions:?}");
    peer.handle(Event::AcceptedEpochPersisted, &Empty);
    // Server 2 acknowledges the epoch; its sync starts (it has nothing: the leader's history is not complete
    // as far as `Empty` knows, so it plans a snapshot).
    let actions = from(&mut peer, Message::AckEpoch { current_epoch: Epoch(1), last_zxid: Zxid::ZERO });
    assert!(actions.iter().any(|a| matches!(a, Action::Send(ServerId(2), Message::NewLeader { .. }))), "{actions:?}");
    let at = tick * 3; // when server 2 was last heard from
    let disconnects = |actions: &[Action]| actions.contains(&Action::Disconnect(ServerId(2)));
    let actions = peer.handle(Event::Tick(at + tick * 7), &Empty);
    assert!(!disconnects(&actions), "a syncing follower dropped at syncLimit: {actions:?}");
    let actions = peer.handle(Event::Tick(at + tick * 11), &Empty);
    assert!(disconnects(&actions) || peer.role() == Role::Looking, "still tracked past initLimit: {actions:?}");
}

/// What `mntr` reports of a leader's learners (ZooKeeper's `zk_learners`, `zk_synced_followers`,
/// `zk_synced_observers`): every learner tracked counts as connected; one counts as synced from its NEWLEADER
/// acknowledgement (ZooKeeper's `startForwarding`) until it is dropped, as a follower if it votes and as an
/// observer if not.
#[test]
fn a_leader_counts_its_learners_and_which_of_them_are_synced() {
    let tick = config().tick;
    let z = Zxid::new(Epoch(1), 5);
    let durable = DurableState { accepted_epoch: Epoch(1), current_epoch: Epoch(1), last_zxid: z, repairing: None };
    // Voters 1, 2 and 3; server 4 is an observer (not a voter).
    let (mut peer, _) = Peer::new(config(), durable, Duration::ZERO);
    let vote = |sender: u64| Notification {
        leader: ServerId(1),
        zxid: z,
        peer_epoch: Epoch(1),
        election_epoch: 1,
        state: PeerState::Looking,
        sender: ServerId(sender),
    };
    for sender in [2, 3] {
        peer.handle(Event::Message(ServerId(sender), Message::Notification(vote(sender))), &Empty);
    }
    peer.handle(Event::Tick(tick * 3), &Empty);
    assert_eq!(peer.role(), Role::Leading);
    let from = |peer: &mut Peer, id: u64, m: Message| peer.handle(Event::Message(ServerId(id), m), &Empty);
    let learners =
        |connected, synced_followers, synced_observers| Learners { connected, synced_followers, synced_observers };
    assert_eq!(peer.learners(), learners(0, 0, 0));

    let info = Message::FollowerInfo { accepted_epoch: Epoch(1), last_zxid: Zxid::ZERO };
    from(&mut peer, 2, info.clone());
    peer.handle(Event::AcceptedEpochPersisted, &Empty);
    from(&mut peer, 4, info.clone());
    assert_eq!(peer.learners(), learners(2, 0, 0), "connected, not synced");
    let ack_epoch = Message::AckEpoch { current_epoch: Epoch(1), last_zxid: Zxid::ZERO };
    from(&mut peer, 2, ack_epoch.clone());
    from(&mut peer, 4, ack_epoch.clone());
    from(&mut peer, 2, Message::AckNewLeader { zxid: z });
    let actions = peer.handle(Event::CurrentEpochPersisted, &Empty);
    assert!(actions.contains(&Action::Send(ServerId(2), Message::UpToDate)), "{actions:?}");
    assert!(peer.serving());
    assert_eq!(peer.learners(), learners(2, 1, 0), "the observer is still syncing");
    from(&mut peer, 4, Message::AckNewLeader { zxid: z });
    assert_eq!(peer.learners(), learners(2, 1, 1));

    // Server 3 joins while the leader broadcasts: it receives proposals at once, and is synced only once it
    // acknowledges NEWLEADER.
    from(&mut peer, 3, info);
    from(&mut peer, 3, ack_epoch);
    assert_eq!(peer.learners(), learners(3, 1, 1));
    from(&mut peer, 3, Message::AckNewLeader { zxid: z });
    assert_eq!(peer.learners(), learners(3, 2, 1));

    peer.handle(Event::Disconnected(ServerId(2)), &Empty);
    assert_eq!(peer.learners(), learners(2, 1, 1), "a dropped follower no longer counts");
    peer.handle(Event::Disconnected(ServerId(4)), &Empty);
    assert_eq!(peer.learners(), learners(1, 1, 0));
    peer.handle(Event::Disconnected(ServerId(3)), &Empty);
    assert_eq!(peer.role(), Role::Looking, "no quorum left");
    assert_eq!(peer.learners(), learners(0, 0, 0), "a server that does not lead has no learners");
}

/// The last zxid of the leader [`elected_leader`] makes.
const LEADER_ZXID: Zxid = Zxid::new(Epoch(1), 5);

/// Drives peer 1 (last zxid [`LEADER_ZXID`], epoch 1) to win the election on the votes of 2 and 3: leading, no
/// follower synced yet.
fn elected_leader() -> Peer {
    let z = LEADER_ZXID;
    let durable = DurableState { accepted_epoch: Epoch(1), current_epoch: Epoch(1), last_zxid: z, repairing: None };
    let (mut peer, _) = Peer::new(config(), durable, Duration::ZERO);
    for sender in [2, 3] {
        let vote = Notification {
            leader: ServerId(1),
            zxid: z,
            peer_epoch: Epoch(1),
            election_epoch: 1,
            state: PeerState::Looking,
            sender: ServerId(sender),
        };
        peer.handle(Event::Message(ServerId(sender), Message::Notification(vote)), &Empty);
    }
    peer.handle(Event::Tick(config().tick * 3), &Empty);
    assert_eq!(peer.role(), Role::Leading);
    peer
}

/// Drives peer 1 to lead and serve epoch 2 with voter 2 synced and observer 4 connected (voter 3 away).
fn serving_leader() -> Peer {
    let z = LEADER_ZXID;
    let mut peer = elected_leader();
    let from = |peer: &mut Peer, id: u64, m: Message| peer.handle(Event::Message(ServerId(id), m), &Empty);
    for id in [2, 4] {
        from(&mut peer, id, Message::FollowerInfo { accepted_epoch: Epoch(1), last_zxid: Zxid::ZERO });
        peer.handle(Event::AcceptedEpochPersisted, &Empty);
    }
    for id in [2, 4] {
        from(&mut peer, id, Message::AckEpoch { current_epoch: Epoch(1), last_zxid: Zxid::ZERO });
    }
    from(&mut peer, 2, Message::AckNewLeader { zxid: z });
    peer.handle(Event::CurrentEpochPersisted, &Empty);
    assert!(peer.role() == Role::Leading && peer.serving());
    peer
}

/// The round of the heartbeat a barrier sent to `to`.
fn ping_round(actions: &[Action], to: u64) -> Option<u64> {
    actions.iter().find_map(|a| match a {
        Action::Send(id, Message::Ping { round, .. }) if *id == ServerId(to) => Some(*round),
        _ => None,
    })
}

/// A `sync` is answered only once the leader proved it still leads: a barrier sends a heartbeat to every
/// learner at once and passes when a quorum of voters echoed it — an observer's echo, or an echo of an earlier
/// round, does not count.
#[test]
fn a_barrier_passes_when_a_quorum_of_voters_echoes_a_heartbeat_sent_after_it() {
    use replication::barrier::BarrierId;
    let mut peer = serving_leader();
    let from = |peer: &mut Peer, id: u64, m: Message| peer.handle(Event::Message(ServerId(id), m), &Empty);
    // A heartbeat of the tick, answered before the barrier: it proves nothing about the time after.
    let actions = peer.handle(Event::Tick(config().tick * 5), &Empty);
    let old = ping_round(&actions, 2).expect("a heartbeat each tick");
    let actions = peer.handle(Event::Barrier(BarrierId(1)), &Empty);
    let round = ping_round(&actions, 2).expect("the barrier sends a heartbeat at once");
    assert!(round > old);
    assert_eq!(ping_round(&actions, 4), Some(round), "observers get it too");
    assert!(!actions.iter().any(|a| matches!(a, Action::Barrier { .. })), "{actions:?}");
    let echo = |round| Message::Ping { zxid: Zxid::ZERO, round };
    assert!(from(&mut peer, 2, echo(old)).is_empty(), "an echo of an earlier round");
    assert!(from(&mut peer, 4, echo(round)).is_empty(), "an observer's echo");
    assert!(from(&mut peer, 2, echo(round + 5)).is_empty(), "an echo of a round never sent");
    let actions = from(&mut peer, 2, echo(round));
    assert_eq!(actions, vec![Action::Barrier { id: BarrierId(1), passed: true }]);
}

/// A leader that loses its quorum fails its waiting barriers (the sync goes unanswered rather than stale); a
/// server that does not lead fails one at once; a follower echoes the round of each heartbeat.
#[test]
fn a_barrier_fails_when_the_leader_stops_leading_and_on_a_follower() {
    use replication::barrier::BarrierId;
    let mut peer = serving_leader();
    peer.handle(Event::Barrier(BarrierId(7)), &Empty);
    let actions = peer.handle(Event::Disconnected(ServerId(2)), &Empty);
    assert_eq!(peer.role(), Role::Looking);
    assert!(actions.contains(&Action::Barrier { id: BarrierId(7), passed: false }), "{actions:?}");

    let mut follower = synced_follower();
    let actions = follower.handle(Event::Barrier(BarrierId(8)), &Empty);
    assert_eq!(actions, vec![Action::Barrier { id: BarrierId(8), passed: false }]);
    let actions = follower.handle(Event::Message(ServerId(2), Message::Ping { zxid: Zxid::ZERO, round: 41 }), &Empty);
    assert!(matches!(actions[..], [Action::Send(ServerId(2), Message::Ping { round: 41, .. })]), "{actions:?}");
}

/// The answer `peer` gives a looking server 3 (ZooKeeper's reply to a LOOKING notification).
fn answer_to_looking(peer: &mut Peer) -> Notification {
    let looking = Notification {
        leader: ServerId(3),
        zxid: Zxid::ZERO,
        peer_epoch: Epoch(0),
        election_epoch: 7,
        state: PeerState::Looking,
        sender: ServerId(3),
    };
    let actions = peer.handle(Event::Message(ServerId(3), Message::Notification(looking)), &Empty);
    match actions.as_slice() {
        [Action::Send(ServerId(3), Message::Notification(n))] => *n,
        other => panic!("no single answer: {other:?}"),
    }
}

/// Seed 183 of the simulation, at the peer: members of one leadership may have settled on different votes
/// (different rounds, zxids and epochs), so once synced each answers looking servers with the epoch its leader
/// established, and a late joiner sees them agree (ZOOKEEPER-1732, `QuorumPeer.updateElectionVote`).
#[test]
fn settled_servers_answer_with_the_epoch_their_leader_established() {
    // Follower 1 settled on leader 2's vote of epoch 0; it synced in epoch 1.
    let mut follower = synced_follower();
    let n = answer_to_looking(&mut follower);
    assert_eq!((n.leader, n.peer_epoch, n.state), (ServerId(2), Epoch(1), PeerState::Following), "{n:?}");

    // Leader 1 won with its vote of epoch 1; a quorum synced in epoch 2.
    let mut leader = serving_leader();
    let n = answer_to_looking(&mut leader);
    assert_eq!((n.leader, n.peer_epoch, n.state), (ServerId(1), Epoch(2), PeerState::Leading), "{n:?}");
}

/// Before the leader has a quorum synced, it still answers with the vote it won with: the epoch it proposes is
/// not established yet.
#[test]
fn a_leader_answers_with_its_elected_vote_until_a_quorum_synced() {
    let (mut peer, z) = (elected_leader(), LEADER_ZXID);
    let n = answer_to_looking(&mut peer);
    assert_eq!((n.leader, n.peer_epoch, n.zxid, n.state), (ServerId(1), Epoch(1), z, PeerState::Leading), "{n:?}");
}
