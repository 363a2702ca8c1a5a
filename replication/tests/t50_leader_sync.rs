//! The leader's side of sync: the plan per follower, NEWLEADER last, and UPTODATE only after a quorum has the
//! history and the leader's current epoch is durable.

use std::collections::BTreeSet;

use replication::leader_sync::{Command, LeaderSync};
use replication::message::{Message, ServerId};
use replication::quorum::Voters;
use replication::sync::History;
use wal::{Epoch, Zxid};

const L: ServerId = ServerId(1);
const F2: ServerId = ServerId(2);
const F3: ServerId = ServerId(3);

struct Log(BTreeSet<Zxid>);

impl History for Log {
    fn last(&self) -> Option<Zxid> {
        self.0.last().copied()
    }
    fn contains(&self, zxid: Zxid) -> bool {
        self.0.contains(&zxid)
    }
    fn last_below(&self, zxid: Zxid) -> Option<Zxid> {
        self.0.range(..zxid).next_back().copied()
    }
    fn complete(&self) -> bool {
        true
    }
}

fn z(e: u32, c: u32) -> Zxid {
    Zxid::new(Epoch(e), c)
}

fn history() -> Log {
    Log([z(1, 1), z(1, 2), z(1, 3), z(2, 1)].into_iter().collect())
}

fn sync() -> LeaderSync {
    LeaderSync::new(L, Voters::new([L, F2, F3]), Epoch(3), z(2, 1), z(2, 1))
}

#[test]
fn a_lagging_follower_gets_diff_then_the_txns_then_newleader() {
    let mut s = sync();
    assert_eq!(
        s.add_follower(F2, z(1, 2), &history()),
        vec![
            Command::Send(F2, Message::Diff { zxid: z(1, 2) }),
            Command::StreamTxns { to: F2, after: z(1, 2), until: z(2, 1), commit_up_to: Zxid::ZERO },
            Command::Send(F2, Message::NewLeader { epoch: Epoch(3), zxid: z(2, 1) }),
        ]
    );
}

#[test]
fn a_divergent_follower_gets_trunc_and_an_empty_one_of_a_purged_leader_gets_a_snapshot() {
    let mut s = sync();
    let commands = s.add_follower(F2, z(1, 7), &history());
    assert_eq!(commands[0], Command::Send(F2, Message::Trunc { zxid: z(1, 3) }));
    assert_eq!(commands[1], Command::StreamTxns { to: F2, after: z(1, 3), until: z(2, 1), commit_up_to: Zxid::ZERO });
    struct Purged;
    impl History for Purged {
        fn last(&self) -> Option<Zxid> {
            Some(z(2, 1))
        }
        fn contains(&self, zxid: Zxid) -> bool {
            zxid == z(2, 1)
        }
        fn last_below(&self, _: Zxid) -> Option<Zxid> {
            None
        }
        fn complete(&self) -> bool {
            false
        }
    }
    let commands = s.add_follower(F3, Zxid::ZERO, &Purged);
    assert_eq!(commands[0], Command::StreamSnapshot { to: F3, until: z(2, 1), commit_up_to: Zxid::ZERO });
}

#[test]
fn uptodate_waits_for_a_quorum_and_for_the_leaders_own_epoch() {
    let mut s = sync();
    s.add_follower(F2, z(2, 1), &history());
    s.add_follower(F3, z(2, 1), &history());
    assert_eq!(s.on_ack_newleader(F2, z(1, 3)), vec![], "an ack for a shorter history does not count");
    assert_eq!(s.on_ack_newleader(F2, z(2, 1)), vec![Command::PersistCurrentEpoch(Epoch(3))]);
    assert!(!s.is_up_to_date(), "not before the leader's epoch is durable");
    assert_eq!(s.on_ack_newleader(F3, z(2, 1)), vec![], "the epoch is being persisted");
    assert_eq!(
        s.current_epoch_persisted(),
        vec![
            Command::Send(F2, Message::UpToDate),
            Command::Send(F3, Message::UpToDate),
            Command::StartBroadcast(vec![F2, F3])
        ]
    );
    assert!(s.is_up_to_date());
}

#[test]
fn a_follower_joining_during_broadcast_gets_commits_up_to_the_commit_point_only() {
    let mut s = sync();
    let commands = s.add_late_follower(F3, z(1, 3), &history(), z(3, 5), z(3, 2));
    assert_eq!(commands[1], Command::StreamTxns { to: F3, after: z(1, 3), until: z(3, 5), commit_up_to: z(3, 2) });
    assert_eq!(commands[2], Command::Send(F3, Message::NewLeader { epoch: Epoch(3), zxid: z(3, 2) }));
}

#[test]
fn followers_still_syncing_receive_the_broadcast_from_its_start() {
    // F3 was sent NEWLEADER but has not acknowledged when the leader starts serving: proposals must reach it
    // anyway (after NEWLEADER on its connection), or it would miss them.
    let mut s = sync();
    s.add_follower(F2, z(2, 1), &history());
    s.add_follower(F3, z(1, 1), &history());
    s.on_ack_newleader(F2, z(2, 1));
    let commands = s.current_epoch_persisted();
    assert_eq!(commands, vec![Command::Send(F2, Message::UpToDate), Command::StartBroadcast(vec![F2, F3])]);
    s.remove_follower(F3);
}

#[test]
fn a_late_follower_is_up_to_date_as_soon_as_it_acknowledges() {
    let mut s = LeaderSync::new(L, Voters::new([L, F2, F3]), Epoch(3), z(2, 1), z(2, 1));
    s.add_follower(F2, z(2, 1), &history());
    s.on_ack_newleader(F2, z(2, 1));
    s.current_epoch_persisted();
    s.add_late_follower(F3, z(2, 1), &history(), z(2, 1), z(2, 1));
    assert_eq!(
        s.on_ack_newleader(F3, z(2, 1)),
        vec![Command::Send(F3, Message::UpToDate), Command::StartBroadcast(vec![F3])]
    );
}

#[test]
fn an_ack_from_a_follower_that_was_sent_no_newleader_counts_for_nothing() {
    let mut s = LeaderSync::new(L, Voters::new([L, F2, F3]), Epoch(3), z(2, 1), z(2, 1));
    assert_eq!(s.on_ack_newleader(F2, z(2, 1)), vec![], "F2 was never synced");
    s.add_follower(F2, z(2, 1), &history());
    s.remove_follower(F2);
    assert_eq!(s.on_ack_newleader(F2, z(2, 1)), vec![], "F2's sync ended with its connection");
    s.add_follower(F2, z(2, 1), &history());
    assert_eq!(s.on_ack_newleader(F2, z(2, 1)), vec![Command::PersistCurrentEpoch(Epoch(3))]);
}

#[test]
fn a_single_server_ensemble_needs_only_itself() {
    let mut s = LeaderSync::new(L, Voters::new([L]), Epoch(1), Zxid::ZERO, Zxid::ZERO);
    assert_eq!(s.start(), vec![Command::PersistCurrentEpoch(Epoch(1))]);
    assert_eq!(s.current_epoch_persisted(), vec![Command::StartBroadcast(vec![])]);
    assert!(s.is_up_to_date());
    // In a larger ensemble, start asks for nothing: followers must acknowledge first.
    assert_eq!(sync().start(), vec![]);
}

#[test]
fn the_leader_counts_itself_only_once_its_own_log_is_durable() {
    let mut s = LeaderSync::new(L, Voters::new([L, F2, F3]), Epoch(3), z(2, 1), z(1, 3));
    s.add_follower(F2, z(2, 1), &history());
    assert_eq!(s.on_ack_newleader(F2, z(2, 1)), vec![], "the leader's tail is not durable: one of three");
    assert_eq!(s.persisted(z(2, 1)), vec![Command::PersistCurrentEpoch(Epoch(3))]);
}
