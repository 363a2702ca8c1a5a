//! The broadcast phase: exact commands for each event, and a simulated pipeline (one leader, followers, WALs
//! that fsync in random batches, FIFO links with random timing) that must commit and apply everything, in order,
//! everywhere, never committing what a quorum has not made durable.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use proptest::prelude::*;
use replication::broadcast::{Command, FollowerBroadcast, LeaderBroadcast, ProposeError, StreamError};
use replication::message::{Message, ServerId};
use replication::quorum::Voters;
use wal::{Epoch, Zxid};

const L: ServerId = ServerId(1);
const F2: ServerId = ServerId(2);
const F3: ServerId = ServerId(3);

fn z(counter: u32) -> Zxid {
    Zxid::new(Epoch(1), counter)
}

fn leader(window: usize) -> LeaderBroadcast {
    let mut l = LeaderBroadcast::new(L, Voters::new([L, F2, F3]), Epoch(1), Zxid::ZERO, window);
    l.add_follower(F2);
    l.add_follower(F3);
    l
}

#[test]
fn a_proposal_is_appended_locally_and_sent_to_every_follower() {
    let mut l = leader(10);
    let (zxid, commands) = l.propose(Bytes::from_static(b"t1")).unwrap();
    assert_eq!(zxid, z(1));
    let t = Bytes::from_static(b"t1");
    assert_eq!(
        commands,
        vec![
            Command::Append(z(1), t.clone()),
            Command::Send(F2, Message::Proposal { zxid: z(1), txn: t.clone() }),
            Command::Send(F3, Message::Proposal { zxid: z(1), txn: t }),
        ]
    );
}

#[test]
fn a_quorum_of_durable_copies_commits_and_the_leader_counts_as_one() {
    let mut l = leader(10);
    l.propose(Bytes::from_static(b"t1")).unwrap();
    assert_eq!(l.persisted(z(1)), vec![], "one of three is not a quorum");
    assert_eq!(
        l.on_ack(F3, z(1)),
        vec![
            Command::Send(F2, Message::Commit { zxid: z(1) }),
            Command::Send(F3, Message::Commit { zxid: z(1) }),
            Command::Apply(z(1))
        ]
    );
    assert_eq!(l.on_ack(F2, z(1)), vec![], "already committed");
}

#[test]
fn cumulative_acks_commit_many_proposals_with_one_commit() {
    let mut l = leader(10);
    for i in 1..=3 {
        l.propose(Bytes::from(format!("t{i}"))).unwrap();
    }
    assert_eq!(l.on_ack(F2, z(3)), vec![]);
    let commands = l.persisted(z(3));
    assert_eq!(commands.iter().filter(|c| matches!(c, Command::Send(_, Message::Commit { .. }))).count(), 2);
    assert_eq!(commands.last(), Some(&Command::Apply(z(3))));
    assert_eq!(l.in_flight(), 0);
}

#[test]
fn the_window_bounds_proposals_in_flight() {
    let mut l = leader(2);
    l.propose(Bytes::new()).unwrap();
    l.propose(Bytes::new()).unwrap();
    assert_eq!(l.propose(Bytes::new()), Err(ProposeError::WindowFull(2)));
    l.persisted(z(1));
    l.on_ack(F2, z(1));
    assert!(l.propose(Bytes::new()).is_ok(), "a commit frees the window");
}

#[test]
fn an_exhausted_epoch_counter_demands_a_new_epoch() {
    let mut l = LeaderBroadcast::new(L, Voters::new([L]), Epoch(1), Zxid::new(Epoch(1), u32::MAX - 1), 10);
    assert_eq!(l.propose(Bytes::new()).unwrap().0, Zxid::new(Epoch(1), u32::MAX));
    l.persisted(Zxid::new(Epoch(1), u32::MAX));
    assert_eq!(l.propose(Bytes::new()), Err(ProposeError::EpochExhausted(Epoch(1))));
}

#[test]
fn acks_for_unproposed_zxids_are_ignored() {
    let mut l = leader(10);
    l.propose(Bytes::new()).unwrap();
    assert_eq!(l.on_ack(F2, z(5)), vec![]);
    assert_eq!(l.on_ack(F3, z(5)), vec![]);
    assert_eq!(l.committed(), Zxid::new(Epoch(1), 0));
}

#[test]
fn a_follower_acks_once_per_durable_batch_and_applies_commits() {
    let mut f = FollowerBroadcast::new(L, Zxid::ZERO);
    assert_eq!(
        f.on_proposal(z(1), Bytes::from_static(b"a")).unwrap(),
        vec![Command::Append(z(1), Bytes::from_static(b"a"))]
    );
    f.on_proposal(z(2), Bytes::from_static(b"b")).unwrap();
    assert_eq!(f.on_proposal(z(2), Bytes::new()), Err(StreamError::OutOfOrder { got: z(2), last: z(2) }));
    // One fsync batch covered both: one ack.
    assert_eq!(f.persisted(z(2)), vec![Command::Send(L, Message::Ack { zxid: z(2) })]);
    assert_eq!(f.persisted(z(2)), vec![], "no duplicate ack");
    assert_eq!(f.on_commit(z(1)), vec![Command::Apply(z(1))]);
    assert_eq!(f.on_commit(z(9)), vec![Command::Apply(z(2))], "never past the log");
    assert_eq!(f.applied(), z(2));
}

#[test]
fn a_follower_refuses_a_proposal_past_its_uncommitted_bound_counting_a_new_epoch_from_its_start() {
    let old = Zxid::new(Epoch(1), 5);
    let e2 = |counter| Zxid::new(Epoch(2), counter);
    // Out of sync with everything of epoch 1 committed: epoch 2's proposals are all uncommitted.
    let mut f = FollowerBroadcast::resume(L, old, old, old, old).bounded(2);
    let max = replication::broadcast::UNCOMMITTED_WINDOWS as u32 * 2;
    for counter in 1..=max {
        assert!(f.on_proposal(e2(counter), Bytes::new()).is_ok(), "{counter} of {max}");
    }
    let refused = f.on_proposal(e2(max + 1), Bytes::new());
    assert_eq!(refused, Err(StreamError::Uncommitted { got: e2(max + 1), committed: old, max: u64::from(max) }));
    // A commit in epoch 2 makes room for as many proposals as it covers.
    f.on_commit(e2(2));
    assert!(f.on_proposal(e2(max + 1), Bytes::new()).is_ok());
    assert!(f.on_proposal(e2(max + 2), Bytes::new()).is_ok());
    assert!(matches!(f.on_proposal(e2(max + 3), Bytes::new()), Err(StreamError::Uncommitted { .. })));
}

/// One member's simulated WAL: appended but not yet durable txns, made durable in random batches.
#[derive(Default)]
struct Disk {
    pending: Vec<Zxid>,
    durable: Zxid,
    log: Vec<Zxid>,
}

#[derive(Clone, Debug)]
enum Step {
    Propose,
    Fsync(u8),
    Deliver(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![2 => Just(Step::Propose), 2 => (0u8..3).prop_map(Step::Fsync), 3 => (0u8..4).prop_map(Step::Deliver)]
}

proptest! {
    #[test]
    fn a_pipeline_commits_everything_everywhere_in_order(steps in proptest::collection::vec(step(), 1..200), window in 1usize..8) {
        let ids = [L, F2, F3];
        let mut l = leader(window);
        let mut followers: BTreeMap<ServerId, FollowerBroadcast> = [F2, F3].into_iter().map(|f| (f, FollowerBroadcast::new(L, Zxid::ZERO))).collect();
        let mut disks: BTreeMap<ServerId, Disk> = ids.iter().map(|&i| (i, Disk::default())).collect();
        let mut applied: BTreeMap<ServerId, Zxid> = ids.iter().map(|&i| (i, Zxid::ZERO)).collect();
        // FIFO links, as TCP gives: (from, to) -> messages.
        let mut links: BTreeMap<(ServerId, ServerId), VecDeque<Message>> = BTreeMap::new();
        let mut proposed = Vec::new();
        let run = |me: ServerId, commands: Vec<Command>, disks: &mut BTreeMap<ServerId, Disk>, links: &mut BTreeMap<(ServerId, ServerId), VecDeque<Message>>, applied: &mut BTreeMap<ServerId, Zxid>| {
            for c in commands {
                match c {
                    Command::Append(zxid, _) => {
                        let d = disks.get_mut(&me).unwrap();
                        d.pending.push(zxid);
                        d.log.push(zxid);
                    }
                    Command::Send(to, m) => links.entry((me, to)).or_default().push_back(m),
                    Command::Apply(zxid) => {
                        let a = applied.get_mut(&me).unwrap();
                        assert!(zxid > *a, "apply moved back");
                        *a = zxid;
                    }
                }
            }
        };
        // The random steps, then enough fsyncs and deliveries to drain everything.
        let drain = (0..400).map(|i| if i % 2 == 0 { Step::Fsync((i / 2 % 3) as u8) } else { Step::Deliver((i % 4) as u8) });
        for s in steps.iter().cloned().chain(drain) {
            match s {
                Step::Propose => {
                    if let Ok((zxid, commands)) = l.propose(Bytes::new()) {
                        proposed.push(zxid);
                        run(L, commands, &mut disks, &mut links, &mut applied);
                    }
                }
                Step::Fsync(i) => {
                    let me = ids[i as usize];
                    let d = disks.get_mut(&me).unwrap();
                    let Some(&last) = d.pending.last() else { continue };
                    d.pending.clear();
                    d.durable = last;
                    let commands = if me == L { l.persisted(last) } else { followers.get_mut(&me).unwrap().persisted(last) };
                    run(me, commands, &mut disks, &mut links, &mut applied);
                }
                Step::Deliver(i) => {
                    let keys: Vec<_> = links.iter().filter(|(_, q)| !q.is_empty()).map(|(k, _)| *k).collect();
                    let Some(&(from, to)) = keys.get(i as usize % keys.len().max(1)) else { continue };
                    let m = links.get_mut(&(from, to)).unwrap().pop_front().unwrap();
                    let commands = match (to, m) {
                        (L, Message::Ack { zxid }) => l.on_ack(from, zxid),
                        (f, Message::Proposal { zxid, txn }) => followers.get_mut(&f).unwrap().on_proposal(zxid, txn).expect("in order on a FIFO link"),
                        (f, Message::Commit { zxid }) => followers.get_mut(&f).unwrap().on_commit(zxid),
                        (_, other) => panic!("unexpected {other:?}"),
                    };
                    run(to, commands, &mut disks, &mut links, &mut applied);
                }
            }
            // Never committed beyond what a quorum has durable.
            let c = l.committed();
            let durable = disks.values().filter(|d| d.durable >= c).count();
            prop_assert!(c <= Zxid::new(Epoch(1), 0) || durable >= 2, "commit {:?} with {} durable copies", c, durable);
        }
        // Everything proposed is committed and applied everywhere, and every log holds the same txns in order.
        if let Some(&last) = proposed.last() {
            prop_assert_eq!(l.committed(), last);
            for (id, a) in &applied {
                prop_assert_eq!(*a, last, "{:?} applied up to {:?}", id, a);
            }
        }
        for d in disks.values() {
            prop_assert_eq!(&d.log, &proposed);
        }
    }
}
