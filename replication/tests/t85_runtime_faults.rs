//! Whose fault it is decides what the runtime does: a real runtime (server 1) follows a scripted leader
//! (server 2, this test, over loopback TCP) into a SNAP sync.
//!
//! - The leader's fault (a chunk at the wrong offset, a snapshot that does not verify): the link to it drops,
//!   nothing is installed, and the runtime carries on (it elects again and takes a new connection).
//! - This server's fault (its epoch file cannot be written, its snapshot directory cannot be created): the
//!   runtime stops, and the node hears of it (its streams end).

mod scripted;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use replication::message::{Message, ServerId};
use replication::peer::Role;
use replication::runtime::{Committed, Handle};
use scripted::*;
use wal::{Epoch, Zxid};

/// The snapshot files server 1 has: installed ones, and staged ones.
fn installed(dir: &Path) -> Vec<String> {
    let names = |d: PathBuf| -> Vec<String> {
        std::fs::read_dir(d)
            .map(|e| e.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    let mut found: Vec<String> = names(snapshots(dir)).into_iter().filter(|n| n.starts_with("snapshot.")).collect();
    found.extend(names(snapshots(dir).join("transfer")).into_iter().filter(|n| n.starts_with("install.")));
    found
}

/// The runtime still runs: it takes a new connection from server 2 and elects (a notification comes).
async fn still_runs(handle: &Handle, addr: SocketAddr) {
    assert!(handle.role.has_changed().is_ok(), "the runtime stopped");
    let mut again = Leader::connect(addr).await;
    let vote = again.expect(|m| matches!(m, Message::Notification(_))).await;
    assert!(vote.is_some(), "no notification on a new connection: the runtime no longer runs");
    assert_eq!(handle.role.borrow().0, Role::Looking);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_at_the_wrong_offset_drops_the_leader_and_the_runtime_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, _streams, addr) = server(dir.path()).await;
    let mut leader = Leader::acked_epoch(addr).await;
    leader.send(Message::Snap { zxid: Zxid::new(Epoch(1), 3), total_bytes: 100 }).await;
    leader.send(Message::SnapChunk { offset: 0, data: Bytes::from(vec![7; 40]) }).await;
    leader.send(Message::SnapChunk { offset: 70, data: Bytes::from(vec![7; 30]) }).await;
    assert!(leader.closed().await, "the link to a leader that sent a chunk at the wrong offset stays up");
    assert_eq!(installed(dir.path()), Vec::<String>::new(), "a snapshot was installed");
    still_runs(&handle, addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_does_not_verify_drops_the_leader_and_the_runtime_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, mut streams, addr) = server(dir.path()).await;
    let mut leader = Leader::acked_epoch(addr).await;
    // Every chunk in place, but the bytes are no snapshot: staging refuses them.
    leader.send(Message::Snap { zxid: Zxid::new(Epoch(1), 3), total_bytes: 64 }).await;
    leader.send(Message::SnapChunk { offset: 0, data: Bytes::from(vec![0xab; 32]) }).await;
    leader.send(Message::SnapChunk { offset: 32, data: Bytes::from(vec![0xcd; 32]) }).await;
    assert!(leader.closed().await, "the link to a leader that sent a bad snapshot stays up");
    assert_eq!(installed(dir.path()), Vec::<String>::new(), "a snapshot that does not verify was installed");
    still_runs(&handle, addr).await;
    // It starts over from its disk, not from the snapshot it was told of: its log is empty, and a leader that
    // behaves syncs it by DIFF.
    let mut leader = Leader::elected(addr).await;
    let ack = leader.expect(|m| matches!(m, Message::AckEpoch { .. })).await;
    let fresh = Message::AckEpoch { current_epoch: Epoch(0), last_zxid: Zxid::ZERO };
    assert_eq!(ack, Some(fresh), "the follower claims history it does not hold");
    let (z1, z2) = (Zxid::new(Epoch(1), 1), Zxid::new(Epoch(1), 2));
    leader.send(Message::Diff { zxid: Zxid::ZERO }).await;
    for zxid in [z1, z2] {
        leader.send(Message::Proposal { zxid, txn: Bytes::from_static(b"txn") }).await;
        leader.send(Message::Commit { zxid }).await;
    }
    leader.send(Message::NewLeader { epoch: Epoch(1), zxid: z2 }).await;
    let acked = leader.expect(|m| matches!(m, Message::AckNewLeader { .. })).await;
    assert_eq!(acked, Some(Message::AckNewLeader { zxid: z2 }));
    leader.send(Message::UpToDate).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(WAIT, streams.committed.recv()).await.expect("committed txns in time") {
            Some(Committed::Txns(txns, _)) => got.extend(txns),
            other => panic!("expected committed txns, got {other:?}"),
        }
    }
    let txn = Bytes::from_static(b"txn");
    assert_eq!(got, vec![(z1, txn.clone()), (z2, txn)]);
}

/// A SNAP sync that broke off (the leader went away mid-snapshot) leaves a partial file; the next SNAP starts
/// a new one at offset 0 and is no fault of anyone's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_sync_that_broke_off_starts_over_at_offset_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, _streams, addr) = server(dir.path()).await;
    let mut leader = Leader::acked_epoch(addr).await;
    leader.send(Message::Snap { zxid: Zxid::new(Epoch(1), 3), total_bytes: 100 }).await;
    leader.send(Message::SnapChunk { offset: 0, data: Bytes::from(vec![7; 40]) }).await;
    // Server 1 answers a ping once it has handled everything before it: the chunk is stored.
    leader.send(Message::Ping { zxid: Zxid::ZERO, round: 1 }).await;
    assert!(leader.expect(|m| matches!(m, Message::Ping { .. })).await.is_some());
    drop(leader);
    let mut leader = Leader::acked_epoch(addr).await;
    leader.send(Message::Snap { zxid: Zxid::new(Epoch(1), 3), total_bytes: 100 }).await;
    leader.send(Message::SnapChunk { offset: 0, data: Bytes::from(vec![7; 40]) }).await;
    leader.send(Message::Ping { zxid: Zxid::ZERO, round: 1 }).await;
    let pong = leader.expect(|m| matches!(m, Message::Ping { .. })).await;
    assert!(pong.is_some(), "the link dropped: the new snapshot's first chunk was taken for a misplaced one");
    assert_eq!(handle.role.borrow().0, Role::Following(ServerId(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_file_that_cannot_be_written_stops_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    // The epochs file is written through `epochs.tmp`: a directory there makes the write fail.
    std::fs::create_dir_all(dir.path().join("1").join("epochs.tmp")).unwrap();
    let (_handle, mut streams, addr) = server(dir.path()).await;
    let _leader = Leader::elected(addr).await;
    stopped(&mut streams).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_directory_that_cannot_be_written_stops_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the transfer directory goes: storing the first chunk fails on this server's disk.
    std::fs::create_dir_all(snapshots(dir.path())).unwrap();
    std::fs::write(snapshots(dir.path()).join("transfer"), b"in the way").unwrap();
    let (_handle, mut streams, addr) = server(dir.path()).await;
    let mut leader = Leader::acked_epoch(addr).await;
    leader.send(Message::Snap { zxid: Zxid::new(Epoch(1), 3), total_bytes: 100 }).await;
    leader.send(Message::SnapChunk { offset: 0, data: Bytes::from(vec![7; 40]) }).await;
    stopped(&mut streams).await;
}

/// A leader that sends proposals and withholds their commits would have its follower hold every one of them in
/// memory: a leader keeps at most one window of proposals in flight, so past `UNCOMMITTED_WINDOWS` windows the
/// follower drops the link (the leader's fault) and carries on. Below that bound, and with commits coming, the
/// proposals are logged and acked as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_withholding_commits_loses_its_follower_past_the_uncommitted_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, _streams, addr) = server(dir.path()).await;
    let mut leader = Leader::acked_epoch(addr).await;
    leader.send(Message::Diff { zxid: Zxid::ZERO }).await;
    leader.send(Message::NewLeader { epoch: Epoch(1), zxid: Zxid::ZERO }).await;
    assert!(leader.expect(|m| matches!(m, Message::AckNewLeader { .. })).await.is_some());
    leader.send(Message::UpToDate).await;
    // The scripted server's window is 16.
    let max = replication::broadcast::UNCOMMITTED_WINDOWS as u32 * 16;
    let acked = |zxid| move |m: &Message| matches!(m, Message::Ack { zxid: z } if *z >= zxid);
    // Twice the bound, committed a window behind: never more than a window uncommitted.
    for counter in 1..=2 * max {
        leader.send(Message::Proposal { zxid: Zxid::new(Epoch(1), counter), txn: Bytes::from_static(b"txn") }).await;
        if counter > 16 {
            leader.send(Message::Commit { zxid: Zxid::new(Epoch(1), counter - 16) }).await;
        }
    }
    assert!(leader.expect(acked(Zxid::new(Epoch(1), 2 * max))).await.is_some(), "all logged and acked");
    // Then exactly the bound past the last commit: still a follower.
    let committed = 2 * max - 16;
    for counter in 2 * max + 1..=committed + max {
        leader.send(Message::Proposal { zxid: Zxid::new(Epoch(1), counter), txn: Bytes::from_static(b"txn") }).await;
    }
    assert!(leader.expect(acked(Zxid::new(Epoch(1), committed + max))).await.is_some(), "at the bound");
    // One more: the link drops.
    let over = Zxid::new(Epoch(1), committed + max + 1);
    leader.send(Message::Proposal { zxid: over, txn: Bytes::from_static(b"txn") }).await;
    assert!(leader.closed().await, "a leader withholding commits keeps its follower");
    still_runs(&handle, addr).await;
}
