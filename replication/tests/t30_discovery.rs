//! Discovery: the new epoch is above every accepted epoch of a quorum, followers acknowledge only once it is
//! durable, stale leaders are refused, and a leader behind a follower gives up.

use replication::discovery::{Command, DiscoveryError, FollowerDiscovery, LeaderDiscovery};
use replication::message::{Message, ServerId};
use replication::quorum::Voters;
use wal::{Epoch, Zxid};

const L: ServerId = ServerId(1);
const F2: ServerId = ServerId(2);
const F3: ServerId = ServerId(3);

fn leader() -> LeaderDiscovery {
    LeaderDiscovery::new(L, Voters::new([L, F2, F3]), Epoch(4), Epoch(4), Zxid::new(Epoch(4), 7))
}

#[test]
fn the_new_epoch_is_above_every_accepted_epoch_of_the_quorum_and_durable_first() {
    let mut l = leader();
    assert_eq!(l.on_follower_info(F2, Epoch(6)).unwrap(), vec![Command::PersistAcceptedEpoch(Epoch(7))]);
    // Nothing is sent before the leader's own accepted epoch is durable.
    assert_eq!(l.on_follower_info(F3, Epoch(2)).unwrap(), vec![]);
    assert_eq!(
        l.accepted_epoch_persisted(),
        vec![
            Command::Send(F2, Message::LeaderInfo { new_epoch: Epoch(7) }),
            Command::Send(F3, Message::LeaderInfo { new_epoch: Epoch(7) })
        ]
    );
    // A later latecomer is told at once.
    let f4 = ServerId(4);
    assert_eq!(
        l.on_follower_info(f4, Epoch(2)).unwrap(),
        vec![Command::Send(f4, Message::LeaderInfo { new_epoch: Epoch(7) })]
    );
}

#[test]
fn a_latecomer_before_the_epoch_is_durable_is_told_once_it_is() {
    let mut l = leader();
    l.on_follower_info(F2, Epoch(4)).unwrap();
    assert_eq!(l.on_follower_info(F3, Epoch(4)).unwrap(), vec![], "the epoch is not durable yet");
    let told = l.accepted_epoch_persisted();
    assert!(told.contains(&Command::Send(F3, Message::LeaderInfo { new_epoch: Epoch(5) })), "{told:?}");
}

#[test]
fn a_quorum_of_acks_establishes_the_epoch() {
    let mut l = leader();
    l.on_follower_info(F2, Epoch(4)).unwrap();
    assert_eq!(l.on_ack_epoch(F2, Epoch(4), Zxid::new(Epoch(4), 3)).unwrap(), vec![], "the epoch is not durable yet");
    l.accepted_epoch_persisted();
    let established = l.on_ack_epoch(F2, Epoch(4), Zxid::new(Epoch(4), 3)).unwrap();
    assert_eq!(
        established,
        vec![Command::Established { epoch: Epoch(5), followers: [(F2, Zxid::new(Epoch(4), 3))].into() }]
    );
    assert_eq!(l.on_ack_epoch(F3, Epoch(4), Zxid::ZERO).unwrap(), vec![], "established once");
}

#[test]
fn a_follower_ahead_of_the_leader_sends_everyone_back_to_election() {
    let mut l = leader();
    l.on_follower_info(F2, Epoch(4)).unwrap();
    l.accepted_epoch_persisted();
    let err = l.on_ack_epoch(F2, Epoch(4), Zxid::new(Epoch(4), 8)).unwrap_err();
    assert_eq!(err, DiscoveryError::FollowerAhead { follower: F2, epoch: Epoch(4), zxid: Zxid::new(Epoch(4), 8) });
}

#[test]
fn a_follower_acknowledges_only_after_persisting_and_refuses_stale_leaders() {
    let (mut f, hello) = FollowerDiscovery::start(L, Epoch(5), Epoch(4), Zxid::new(Epoch(4), 3));
    assert_eq!(
        hello,
        vec![Command::Send(L, Message::FollowerInfo { accepted_epoch: Epoch(5), last_zxid: Zxid::new(Epoch(4), 3) })]
    );
    assert_eq!(f.on_leader_info(Epoch(4)), Err(DiscoveryError::StaleLeader { proposed: Epoch(4), accepted: Epoch(5) }));
    assert_eq!(f.on_leader_info(Epoch(6)).unwrap(), vec![Command::PersistAcceptedEpoch(Epoch(6))]);
    assert_eq!(f.accepted_epoch(), Epoch(5), "not accepted until durable");
    let ack = f.accepted_epoch_persisted();
    assert_eq!(
        ack,
        vec![Command::Send(L, Message::AckEpoch { current_epoch: Epoch(4), last_zxid: Zxid::new(Epoch(4), 3) })]
    );
    assert_eq!(f.accepted_epoch(), Epoch(6));
    assert_eq!(f.accepted_epoch_persisted(), vec![], "one ack per epoch");
    // The same leader again (a reconnect): the epoch is durable already.
    assert_eq!(f.on_leader_info(Epoch(6)).unwrap().len(), 1);
}

#[test]
fn a_latecomer_that_accepted_a_later_epoch_makes_the_leader_step_down() {
    let mut l = leader();
    l.on_follower_info(F2, Epoch(4)).unwrap();
    l.accepted_epoch_persisted();
    assert_eq!(
        l.on_follower_info(F3, Epoch(9)),
        Err(DiscoveryError::LatecomerAhead { follower: F3, accepted: Epoch(9), epoch: Epoch(5) })
    );
}

#[test]
fn the_epoch_space_can_run_out() {
    let mut l = LeaderDiscovery::new(L, Voters::new([L, F2, F3]), Epoch(u32::MAX), Epoch(1), Zxid::ZERO);
    assert_eq!(l.on_follower_info(F2, Epoch(1)), Err(DiscoveryError::EpochOverflow(Epoch(u32::MAX))));
}
