//! A follower's sync, step by step: each test named after the Apache ZooKeeper data-loss bug whose ordering it
//! pins down, then TRUNC, SNAP and protocol violations.

use bytes::Bytes;
use replication::follower_sync::{Command, FollowerSync, SyncError};
use replication::message::{Message, ServerId};
use wal::{Epoch, Zxid};

const L: ServerId = ServerId(1);

fn z(c: u32) -> Zxid {
    Zxid::new(Epoch(1), c)
}

fn proposal(c: u32) -> Message {
    Message::Proposal { zxid: z(c), txn: Bytes::from(format!("t{c}")) }
}

fn commit(c: u32) -> Message {
    Message::Commit { zxid: z(c) }
}

/// A follower at z(2) that received DIFF and txns 3..=last, with commits up to `committed`, then NEWLEADER.
fn diffed(last: u32, committed: u32) -> (FollowerSync, Vec<Command>) {
    let mut f = FollowerSync::new(L, z(2), z(2), z(2));
    let mut commands = f.on_message(Message::Diff { zxid: z(2) }).unwrap();
    for c in 3..=last {
        commands.extend(f.on_message(proposal(c)).unwrap());
        if c <= committed {
            commands.extend(f.on_message(commit(c)).unwrap());
        }
    }
    commands.extend(f.on_message(Message::NewLeader { epoch: Epoch(2), zxid: z(last) }).unwrap());
    (f, commands)
}

#[test]
fn zookeeper_3911_uncommitted_diff_txns_are_logged_but_not_applied() {
    let (mut f, commands) = diffed(5, 3);
    let applied: Vec<&Command> = commands.iter().filter(|c| matches!(c, Command::Apply(_))).collect();
    assert_eq!(applied, vec![&Command::Apply(z(3))], "4 and 5 were proposed, not committed");
    assert_eq!(commands.iter().filter(|c| matches!(c, Command::Append(..))).count(), 3);
    assert_eq!(f.on_message(commit(5)).unwrap(), vec![Command::Apply(z(5))]);
}

#[test]
fn zookeeper_4643_the_epoch_is_persisted_only_after_the_synced_txns_are_durable() {
    let (mut f, commands) = diffed(5, 5);
    assert!(!commands.iter().any(|c| matches!(c, Command::PersistCurrentEpoch(_))), "txns are not durable yet");
    assert_eq!(f.persisted(z(5)), vec![Command::PersistCurrentEpoch(Epoch(2))]);
}

#[test]
fn zookeeper_4646_newleader_is_acknowledged_only_after_txns_and_epoch_are_durable() {
    let (mut f, commands) = diffed(4, 4);
    assert!(!commands.iter().any(|c| matches!(c, Command::Send(_, Message::AckNewLeader { .. }))));
    assert_eq!(f.current_epoch_persisted(), vec![], "the epoch was never asked to be persisted");
    let epoch = f.persisted(z(4));
    assert_eq!(epoch, vec![Command::PersistCurrentEpoch(Epoch(2))]);
    assert_eq!(f.current_epoch_persisted(), vec![Command::Send(L, Message::AckNewLeader { zxid: z(4) })]);
    assert_eq!(f.on_message(Message::UpToDate).unwrap(), vec![Command::Synced], "all was committed and applied");
}

#[test]
fn uptodate_commits_the_leaders_history_up_to_newleader() {
    // Txns 4 and 5 came without COMMIT (the old leader never committed them); NEWLEADER's quorum commits them.
    let (mut f, _) = diffed(5, 3);
    f.persisted(z(5));
    f.current_epoch_persisted();
    assert_eq!(f.on_message(Message::UpToDate).unwrap(), vec![Command::Apply(z(5)), Command::Synced]);
}

#[test]
fn zookeeper_4785_txns_still_queued_at_newleader_hold_back_the_ack() {
    let (mut f, _) = diffed(6, 6);
    // The WAL has made only part of the synced txns durable (the rest is still in its queue).
    assert_eq!(f.persisted(z(4)), vec![]);
    assert_eq!(f.current_epoch_persisted(), vec![]);
    // New proposals after NEWLEADER do not hold the ack back, but the synced ones do.
    f.on_message(proposal(7)).unwrap();
    assert_eq!(f.persisted(z(6)), vec![Command::PersistCurrentEpoch(Epoch(2))]);
}

#[test]
fn trunc_cuts_the_log_before_the_leaders_txns_follow() {
    let mut f = FollowerSync::new(L, z(9), z(9), z(9));
    assert_eq!(f.on_message(Message::Trunc { zxid: z(6) }).unwrap(), vec![Command::Truncate(z(6))]);
    assert_eq!(f.logged(), z(6));
    let t = Bytes::from_static(b"x");
    let zz = Zxid::new(Epoch(2), 1);
    assert_eq!(f.on_message(Message::Proposal { zxid: zz, txn: t.clone() }).unwrap(), vec![Command::Append(zz, t)]);
    f.on_message(Message::NewLeader { epoch: Epoch(2), zxid: zz }).unwrap();
    assert_eq!(f.persisted(zz), vec![Command::PersistCurrentEpoch(Epoch(2))]);
}

#[test]
fn snap_installs_a_snapshot_from_chunks_in_order() {
    let mut f = FollowerSync::new(L, z(1), z(1), z(1));
    let at = Zxid::new(Epoch(3), 40);
    assert_eq!(f.on_message(Message::Snap { zxid: at, total_bytes: 6 }).unwrap(), vec![]);
    let gap = f.on_message(Message::SnapChunk { offset: 2, data: Bytes::from_static(b"xx") });
    assert_eq!(gap, Err(SyncError::ChunkGap { got: 2, expected: 0 }));
    let mut f = FollowerSync::new(L, z(1), z(1), z(1));
    f.on_message(Message::Snap { zxid: at, total_bytes: 6 }).unwrap();
    let first = f.on_message(Message::SnapChunk { offset: 0, data: Bytes::from_static(b"abcd") }).unwrap();
    assert_eq!(first, vec![Command::SnapshotChunk { offset: 0, data: Bytes::from_static(b"abcd") }]);
    let last = f.on_message(Message::SnapChunk { offset: 4, data: Bytes::from_static(b"ef") }).unwrap();
    assert_eq!(last.last(), Some(&Command::InstallSnapshot(at)));
    assert_eq!(f.logged(), at);
    // The installed snapshot is durable: NEWLEADER can move straight on to the epoch.
    let newleader = f.on_message(Message::NewLeader { epoch: Epoch(4), zxid: at }).unwrap();
    assert_eq!(newleader, vec![Command::PersistCurrentEpoch(Epoch(4))]);
}

#[test]
fn protocol_violations_are_errors() {
    let mut f = FollowerSync::new(L, z(5), z(5), z(5));
    assert_eq!(f.on_message(Message::Diff { zxid: z(4) }), Err(SyncError::DiffMismatch { after: z(4), last: z(5) }));
    let mut f = FollowerSync::new(L, z(5), z(5), z(5));
    assert_eq!(f.on_message(Message::UpToDate), Err(SyncError::Unexpected("UPTODATE")));
    assert_eq!(f.on_message(proposal(6)), Err(SyncError::Unexpected("PROPOSAL")), "txns before DIFF/TRUNC/SNAP");
    f.on_message(Message::Diff { zxid: z(5) }).unwrap();
    f.on_message(proposal(6)).unwrap();
    assert_eq!(f.on_message(proposal(6)), Err(SyncError::OutOfOrder { got: z(6), last: z(6) }));
    assert_eq!(f.on_message(Message::UpToDate), Err(SyncError::Unexpected("UPTODATE")), "before NEWLEADER was acked");
    // A TRUNC past the end of the log would make it claim txns it does not hold (and apply them on COMMIT).
    let mut f = FollowerSync::new(L, z(5), z(5), z(5));
    assert_eq!(f.on_message(Message::Trunc { zxid: z(9) }), Err(SyncError::TruncAhead { to: z(9), last: z(5) }));
    assert_eq!(f.logged(), z(5));
}

#[test]
fn entering_broadcast_acks_what_became_durable_meanwhile() {
    let (mut f, _) = diffed(4, 4);
    f.persisted(z(4));
    f.current_epoch_persisted();
    f.on_message(proposal(5)).unwrap();
    f.persisted(z(5));
    f.on_message(Message::UpToDate).unwrap();
    let (_, commands) = f.into_broadcast();
    assert_eq!(commands, vec![Command::Send(L, Message::Ack { zxid: z(5) })]);
}

/// ZOOKEEPER-4925: a follower kept the txns of its DIFF sync out of the history it would later sync others
/// from, so, once leader, it propagated a hole (data loss). Here every txn of a sync is appended to the log, the
/// one history there is (the runtime's leader-side history is the WAL plus txns not yet durable), and a
/// discontinuous stream is refused outright rather than logged with a hole.
#[test]
fn zookeeper_4925_every_synced_txn_enters_the_log_and_a_hole_is_refused() {
    let (_, commands) = diffed(6, 6);
    let appended: Vec<Zxid> = commands
        .iter()
        .filter_map(|c| match c {
            Command::Append(zxid, _) => Some(*zxid),
            _ => None,
        })
        .collect();
    assert_eq!(appended, vec![z(3), z(4), z(5), z(6)], "committed during sync or not, every txn is logged");

    let mut f = FollowerSync::new(L, z(2), z(2), z(2));
    f.on_message(Message::Diff { zxid: z(2) }).unwrap();
    f.on_message(proposal(3)).unwrap();
    assert!(f.on_message(proposal(5)).is_err(), "4 is missing: a hole, not a history");

    // An empty follower's first txn must be the first of its epoch too.
    let mut f = FollowerSync::new(L, Zxid::ZERO, Zxid::ZERO, Zxid::ZERO);
    f.on_message(Message::Diff { zxid: Zxid::ZERO }).unwrap();
    assert!(f.on_message(proposal(2)).is_err(), "1 is missing: a hole, not a history");
}

/// ZOOKEEPER-3642: a learner whose leader died after SNAP but before NEWLEADER had advanced its last zxid to
/// the snapshot's while holding the snapshot only in memory; the next leader DIFFed it from there, and a
/// restart lost everything up to that zxid. Here the follower's position moves to the snapshot's zxid only
/// with the command that installs it durably (the runtime writes and fsyncs it before the next event); a
/// partial transfer leaves the position, and what a new leader would sync from, where it was.
#[test]
fn zookeeper_3642_the_log_position_moves_to_a_snapshot_only_when_it_is_installed() {
    let at = Zxid::new(Epoch(3), 40);
    let mut f = FollowerSync::new(L, z(1), z(1), z(1));
    f.on_message(Message::Snap { zxid: at, total_bytes: 6 }).unwrap();
    let partial = f.on_message(Message::SnapChunk { offset: 0, data: Bytes::from_static(b"abcd") }).unwrap();
    assert!(!partial.iter().any(|c| matches!(c, Command::InstallSnapshot(_))), "{partial:?}");
    assert_eq!(f.logged(), z(1), "the leader dies here: the next one syncs this follower from z(1), not from {at}");
    let rest = f.on_message(Message::SnapChunk { offset: 4, data: Bytes::from_static(b"ef") }).unwrap();
    assert_eq!(rest.last(), Some(&Command::InstallSnapshot(at)));
    assert_eq!(f.logged(), at);
}
