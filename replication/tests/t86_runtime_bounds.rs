//! What the runtime holds for a slow node is bounded in bytes: a real runtime (server 1) follows a scripted
//! leader (server 2, this test), which commits more large txns than the committed stream's budget
//! ([`COMMITTED_BYTES`]) while the node holds every batch it was given. The runtime stops handing over txns at
//! the budget and goes on, in order, once the node lets go.

mod scripted;

use std::time::Duration;

use bytes::Bytes;
use replication::message::Message;
use replication::runtime::{Committed, COMMITTED_BYTES, COMMITTED_TXN_WEIGHT};
use scripted::*;
use wal::{Epoch, Zxid};

/// The txns the leader commits: 300 of 256 KiB, about 75 MiB against the 64 MiB budget.
const TXNS: u32 = 300;
const TXN_BYTES: usize = 256 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_holds_its_batches_holds_the_runtime_at_the_committed_budget() {
    assert!(
        TXNS as usize * (TXN_BYTES + COMMITTED_TXN_WEIGHT) > COMMITTED_BYTES + (8 << 20),
        "the test passes the budget"
    );
    let dir = tempfile::tempdir().unwrap();
    let (_handle, mut streams, addr) = server(dir.path()).await;
    let mut leader = Leader::elected(addr).await;
    assert!(leader.expect(|m| matches!(m, Message::AckEpoch { .. })).await.is_some(), "no ACKEPOCH");
    leader.send(Message::Diff { zxid: Zxid::ZERO }).await;
    leader.send(Message::NewLeader { epoch: Epoch(1), zxid: Zxid::ZERO }).await;
    assert!(leader.expect(|m| matches!(m, Message::AckNewLeader { .. })).await.is_some(), "no ACKNEWLEADER");
    leader.send(Message::UpToDate).await;

    // (The follower's ACKs are left unread: a few bytes each, the socket's buffer takes them all.)
    let zxid = |i: u32| Zxid::new(Epoch(1), i);
    let txn = |i: u32| Bytes::from(vec![i as u8; TXN_BYTES]);
    for i in 1..=TXNS {
        leader.send(Message::Proposal { zxid: zxid(i), txn: txn(i) }).await;
        leader.send(Message::Commit { zxid: zxid(i) }).await;
    }

    // The node takes every batch and holds it (as an applier would while it applies), until none comes for two
    // seconds: the runtime waits for the budget, or it has handed over everything.
    let mut held = Vec::new();
    let mut weight = 0;
    while let Ok(item) = tokio::time::timeout(Duration::from_secs(2), streams.committed.recv()).await {
        match item {
            Some(Committed::Txns(txns, share)) => {
                weight += txns.iter().map(|(_, txn)| txn.len() + COMMITTED_TXN_WEIGHT).sum::<usize>();
                held.push((txns, share));
            }
            other => panic!("expected committed txns, got {other:?}"),
        }
    }
    let count: usize = held.iter().map(|(txns, _)| txns.len()).sum();
    assert!(
        weight <= COMMITTED_BYTES,
        "{count} txns of {weight} bytes handed over, past the budget of {COMMITTED_BYTES}"
    );
    assert!(count < TXNS as usize, "all {count} txns handed over to a node that held them all");
    assert!(weight > COMMITTED_BYTES / 2, "only {weight} bytes handed over: the runtime stopped short of the budget");

    // The node lets go: the rest follows, in order, and nothing is handed over twice.
    let mut got: Vec<Zxid> = held.drain(..).flat_map(|(txns, _)| txns.into_iter().map(|(z, _)| z)).collect();
    while got.len() < TXNS as usize {
        match tokio::time::timeout(WAIT, streams.committed.recv()).await.expect("the rest of the txns in time") {
            Some(Committed::Txns(txns, _)) => {
                for (z, bytes) in txns {
                    assert_eq!(bytes, txn(z.counter()), "txn {z}'s bytes");
                    got.push(z);
                }
            }
            other => panic!("expected committed txns, got {other:?}"),
        }
    }
    assert_eq!(got, (1..=TXNS).map(zxid).collect::<Vec<_>>());
}
