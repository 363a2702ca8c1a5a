//! A peer that breaks the protocol costs this server its link to that peer, never more: a leader's snapshot
//! chunk at the wrong offset drops the leader (no chunk is stored, nothing installed) and the follower elects
//! again; a notification claiming another sender drops its link and counts for nothing; a follower that asks
//! for a second sync stream is dropped.

use std::time::Duration;

use bytes::Bytes;
use replication::message::{Message, Notification, PeerState, ServerId};
use replication::peer::{Action, DurableState, Event, Peer, Role};
use wal::{Epoch, Zxid};

mod common;
use common::{config, Empty};

fn notification(leader: u64, state: PeerState, sender: u64) -> Notification {
    Notification {
        leader: ServerId(leader),
        zxid: Zxid::ZERO,
        peer_epoch: Epoch(0),
        election_epoch: 1,
        state,
        sender: ServerId(sender),
    }
}

/// Peer 1 following server 2, in sync, receiving a snapshot of 100 bytes.
fn receiving_a_snapshot() -> Peer {
    let (mut peer, _) = Peer::new(config(), DurableState::default(), Duration::ZERO);
    for (sender, state) in [(2, PeerState::Leading), (3, PeerState::Following)] {
        let n = notification(2, state, sender);
        peer.handle(Event::Message(ServerId(sender), Message::Notification(n)), &Empty);
    }
    assert_eq!(peer.role(), Role::Following(ServerId(2)));
    let from_leader = |peer: &mut Peer, m: Message| peer.handle(Event::Message(ServerId(2), m), &Empty);
    from_leader(&mut peer, Message::LeaderInfo { new_epoch: Epoch(1) });
    peer.handle(Event::AcceptedEpochPersisted, &Empty);
    from_leader(&mut peer, Message::Snap { zxid: Zxid::new(Epoch(1), 9), total_bytes: 100 });
    let actions = from_leader(&mut peer, Message::SnapChunk { offset: 0, data: Bytes::from(vec![1; 40]) });
    assert!(matches!(actions[..], [Action::SnapshotChunk { offset: 0, .. }]), "{actions:?}");
    peer
}

#[test]
fn a_snapshot_chunk_at_the_wrong_offset_drops_the_leader_and_installs_nothing() {
    let mut peer = receiving_a_snapshot();
    // The next chunk should start at 40; one at 60 would leave a hole in the file.
    let actions = peer
        .handle(Event::Message(ServerId(2), Message::SnapChunk { offset: 60, data: Bytes::from(vec![2; 40]) }), &Empty);
    assert!(actions.contains(&Action::Disconnect(ServerId(2))), "the link to the leader stays: {actions:?}");
    assert!(
        !actions.iter().any(|a| matches!(a, Action::SnapshotChunk { .. } | Action::InstallSnapshot(_))),
        "a misplaced chunk stored or a snapshot installed: {actions:?}"
    );
    assert_eq!(peer.role(), Role::Looking, "the follower elects again");
    assert_eq!(peer.durable().last_zxid, Zxid::ZERO, "the history is what the disk holds");
    // Whatever the old leader still streams is ignored.
    let actions = peer
        .handle(Event::Message(ServerId(2), Message::SnapChunk { offset: 40, data: Bytes::from(vec![2; 60]) }), &Empty);
    assert!(!actions.iter().any(|a| matches!(a, Action::InstallSnapshot(_))), "{actions:?}");
}

#[test]
fn a_chunk_that_repeats_an_offset_is_refused_as_well() {
    let mut peer = receiving_a_snapshot();
    let actions = peer
        .handle(Event::Message(ServerId(2), Message::SnapChunk { offset: 0, data: Bytes::from(vec![2; 100]) }), &Empty);
    assert!(actions.contains(&Action::Disconnect(ServerId(2))), "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::InstallSnapshot(_))), "{actions:?}");
}

#[test]
fn a_notification_claiming_another_sender_drops_its_link_and_counts_for_nothing() {
    let (mut peer, _) = Peer::new(config(), DurableState::default(), Duration::ZERO);
    // Server 3's connection speaks for server 2 as well: with both votes, server 1 would follow 2.
    let forged = notification(2, PeerState::Leading, 2);
    let actions = peer.handle(Event::Message(ServerId(3), Message::Notification(forged)), &Empty);
    assert_eq!(actions, vec![Action::Disconnect(ServerId(3))]);
    let honest = notification(2, PeerState::Following, 3);
    peer.handle(Event::Message(ServerId(3), Message::Notification(honest)), &Empty);
    assert_eq!(peer.role(), Role::Looking, "a forged vote counted towards a quorum");
}

#[test]
fn a_follower_asking_for_a_second_sync_stream_is_dropped() {
    let z = Zxid::new(Epoch(1), 5);
    let durable = DurableState { accepted_epoch: Epoch(1), current_epoch: Epoch(1), last_zxid: z, repairing: None };
    let (mut peer, _) = Peer::new(config(), durable, Duration::ZERO);
    let vote =
        |sender: u64| Notification { zxid: z, peer_epoch: Epoch(1), ..notification(1, PeerState::Looking, sender) };
    for sender in [2, 3] {
        peer.handle(Event::Message(ServerId(sender), Message::Notification(vote(sender))), &Empty);
    }
    peer.handle(Event::Tick(Duration::from_millis(300)), &Empty);
    assert_eq!(peer.role(), Role::Leading);
    let from = |peer: &mut Peer, m: Message| peer.handle(Event::Message(ServerId(2), m), &Empty);
    from(&mut peer, Message::FollowerInfo { accepted_epoch: Epoch(1), last_zxid: Zxid::ZERO });
    peer.handle(Event::AcceptedEpochPersisted, &Empty);
    let ack = Message::AckEpoch { current_epoch: Epoch(1), last_zxid: Zxid::ZERO };
    let actions = from(&mut peer, ack.clone());
    let streams = |actions: &[Action]| {
        actions.iter().filter(|a| matches!(a, Action::StreamTxns { .. } | Action::StreamSnapshot { .. })).count()
    };
    assert_eq!(streams(&actions), 1, "{actions:?}");
    let actions = from(&mut peer, ack.clone());
    assert_eq!(streams(&actions), 0, "a second stream for the same follower: {actions:?}");
    assert!(actions.contains(&Action::Disconnect(ServerId(2))), "{actions:?}");
    // After a new FOLLOWERINFO (it starts over) it may sync again.
    from(&mut peer, Message::FollowerInfo { accepted_epoch: Epoch(2), last_zxid: Zxid::ZERO });
    assert_eq!(streams(&from(&mut peer, ack)), 1);
}

/// A looking server sends its vote on a new connection at once: a restarted server's first frame is what lets
/// a listener that still holds its old (dead) connection take the new one (an impostor sends none).
#[test]
fn a_looking_server_sends_its_vote_on_a_new_connection() {
    let (mut peer, _) = Peer::new(config(), DurableState::default(), Duration::ZERO);
    let actions = peer.handle(Event::Connected(ServerId(3)), &Empty);
    assert!(
        matches!(&actions[..], [Action::Send(ServerId(3), Message::Notification(n))] if n.sender == ServerId(1) && n.state == PeerState::Looking),
        "{actions:?}"
    );
    assert_eq!(peer.handle(Event::Connected(ServerId(9)), &Empty), vec![], "not a voter");
}

/// An ACK of NEWLEADER from a follower that was never synced (it sent FOLLOWERINFO, then skipped ACKEPOCH)
/// counts for nothing: otherwise the leader would take it for a quorum member holding its history.
#[test]
fn an_ack_of_newleader_without_a_sync_counts_for_nothing() {
    let z = Zxid::new(Epoch(1), 5);
    let durable = DurableState { accepted_epoch: Epoch(1), current_epoch: Epoch(1), last_zxid: z, repairing: None };
    let (mut peer, _) = Peer::new(config(), durable, Duration::ZERO);
    let vote =
        |sender: u64| Notification { zxid: z, peer_epoch: Epoch(1), ..notification(1, PeerState::Looking, sender) };
    for sender in [2, 3] {
        peer.handle(Event::Message(ServerId(sender), Message::Notification(vote(sender))), &Empty);
    }
    peer.handle(Event::Tick(Duration::from_millis(300)), &Empty);
    assert_eq!(peer.role(), Role::Leading);
    let info = Message::FollowerInfo { accepted_epoch: Epoch(1), last_zxid: Zxid::ZERO };
    peer.handle(Event::Message(ServerId(2), info.clone()), &Empty);
    peer.handle(Event::Message(ServerId(3), info), &Empty);
    peer.handle(Event::AcceptedEpochPersisted, &Empty);
    // Server 2 acknowledges the epoch and is synced; server 3 never acknowledges it.
    let ack = Message::AckEpoch { current_epoch: Epoch(1), last_zxid: Zxid::ZERO };
    peer.handle(Event::Message(ServerId(2), ack), &Empty);
    let actions = peer.handle(Event::Message(ServerId(3), Message::AckNewLeader { zxid: z }), &Empty);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::PersistCurrentEpoch(_))),
        "an unsynced follower's ack made a quorum: {actions:?}"
    );
}
