//! Hostile bytes on the quorum port never take a server down: on a 3-node cluster, each node's quorum port gets
//! random garbage, a truncated frame and a close, 4 GiB and 2 GiB length prefixes, a handshake claiming an
//! unknown server id, a handshake claiming an existing server's id followed by garbage, and then all of these
//! at once over many connections. After each, every process still runs, the cluster has one leader, a client
//! commits a write through every node, and a writer that ran throughout has lost nothing it was acknowledged.
//! The leader never changes: none of it reaches the protocol. Ensemble logs each refusal with its reason.
//!
//! The bytes follow Ensemble's peer protocol (`replication/src/message.rs`, `transport.rs`): the dialer sends
//! its server id as a u64 (big-endian), then frames of `len u32 BE | tag u8 | fields`. Against Apache ZooKeeper
//! (`ENSEMBLE_TESTS_SERVER=zookeeper`), whose quorum port speaks another protocol (and listens on the leader
//! only), they are garbage all the same; the assertions are the same.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ensemble_tests::client::PERSISTENT;
use ensemble_tests::process::Server;
use ensemble_tests::{blocking, connect, Cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NODES: usize = 3;

/// What a hostile connection sends, for the node (0-based) it attacks.
#[derive(Clone, Copy, Debug)]
enum Attack {
    /// Random bytes (the first 8 read as a server id nobody has).
    Garbage,
    /// A known server's id, then the first 6 bytes of a 13-byte ACK frame, then the end.
    TruncatedFrame,
    /// A known server's id, then a length prefix of 4 GiB - 1.
    Length4GiB,
    /// A known server's id, then a length prefix of 2 GiB and the start of a PROPOSAL.
    Length2GiB,
    /// The id of a server not in the configuration, then a well-formed notification from it.
    UnknownId,
    /// A known server's id (one connected to this node already), then garbage.
    ExistingIdThenGarbage,
}

const ATTACKS: [Attack; 6] = [
    Attack::Garbage,
    Attack::TruncatedFrame,
    Attack::Length4GiB,
    Attack::Length2GiB,
    Attack::UnknownId,
    Attack::ExistingIdThenGarbage,
];

/// The id a hostile dialer of node `target` claims: a server that dials it in the real ensemble (a higher id),
/// else another one.
fn existing_id(target: usize) -> u64 {
    let myid = target as u64 + 1;
    if myid < NODES as u64 {
        NODES as u64
    } else {
        1
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a failure replays.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_be_bytes()[0]
        })
        .collect()
}

/// A notification frame (tag 1): leader, zxid, peer epoch, election epoch, state LOOKING, sender.
fn notification(sender: u64) -> Vec<u8> {
    let mut body = vec![1u8];
    body.extend_from_slice(&sender.to_be_bytes());
    body.extend_from_slice(&0u64.to_be_bytes());
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(&1u64.to_be_bytes());
    body.push(0);
    body.extend_from_slice(&sender.to_be_bytes());
    let mut frame = u32::try_from(body.len()).expect("small").to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

fn bytes(attack: Attack, target: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    match attack {
        Attack::Garbage => return noise(seed, 4096),
        Attack::UnknownId => {
            out.extend_from_slice(&99u64.to_be_bytes());
            out.extend(notification(99));
            return out;
        }
        _ => out.extend_from_slice(&existing_id(target).to_be_bytes()),
    }
    match attack {
        Attack::TruncatedFrame => out.extend_from_slice(&[0, 0, 0, 9, 13, 0]),
        Attack::Length4GiB => out.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 13, 0, 0, 0]),
        Attack::Length2GiB => out.extend_from_slice(&[0x80, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 1]),
        Attack::ExistingIdThenGarbage => out.extend(noise(seed, 1024)),
        Attack::Garbage | Attack::UnknownId => {}
    }
    out
}

/// Sends `attack` to node `target`'s quorum port; the connection, or `None` if it could not be made
/// (ZooKeeper's followers do not listen on it).
async fn send(cluster: &Cluster, target: usize, attack: Attack, seed: u64) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(cluster.quorum_addr(target)).await.ok()?;
    // The server may close first (it refuses the id at once): a failed write is fine.
    let _ = stream.write_all(&bytes(attack, target, seed)).await;
    Some(stream)
}

/// Sends `attack` to node `target`'s quorum port and closes; whether the connection was made. With
/// `expect_close`, the server must close it first.
async fn attack(cluster: &Cluster, target: usize, attack: Attack, seed: u64, expect_close: bool) -> bool {
    let Some(mut stream) = send(cluster, target, attack, seed).await else { return false };
    if expect_close {
        let mut sink = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut sink)).await;
        assert!(read.is_ok(), "node {} kept a connection open after {attack:?}", target + 1);
    }
    true
}

/// Whether Ensemble is expected to close the connection by itself after `attack` (the rest it closes after
/// its handshake timeout, or the test closes them).
fn closes_at_once(attack: Attack, target: usize) -> bool {
    let claims_a_dialer = existing_id(target) > target as u64 + 1;
    match attack {
        Attack::Garbage | Attack::UnknownId | Attack::Length4GiB | Attack::Length2GiB => true,
        Attack::ExistingIdThenGarbage => true,
        Attack::TruncatedFrame => !claims_a_dialer,
    }
}

/// Every process runs and the cluster has one leader, `leader`; a write commits through each node.
async fn serving(cluster: &Arc<Cluster>, leader: usize, after: &str) {
    for i in 0..NODES {
        assert!(blocking(|| cluster.is_running(i)), "node {} exited after {after}", i + 1);
    }
    let c = cluster.clone();
    assert_eq!(blocking(move || c.leader()), leader, "the leader changed after {after}");
    for i in 0..NODES {
        let client = connect(&cluster.client_addr(i).to_string()).await;
        let path = format!("/t50/{}-via-{}", after.replace(' ', "-"), i + 1);
        client.create(&path, b"", PERSISTENT).await.unwrap_or_else(|e| panic!("write via node {}: {e}", i + 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_bytes_on_the_quorum_port_never_take_a_server_down() {
    let cluster = Arc::new(blocking(|| Cluster::start(NODES)));
    let ensemble = matches!(cluster.server(), Server::Ensemble(_));
    let c = cluster.clone();
    let leader = blocking(move || c.leader());
    let cs = cluster.connect_string();
    connect(&cs).await.create("/t50", b"", PERSISTENT).await.unwrap();
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
    let writer = tokio::spawn(ensemble_tests::client::write_until(cs.clone(), "/t50/bg-", stop.clone(), acked.clone()));

    for (n, &kind) in ATTACKS.iter().enumerate() {
        for target in 0..NODES {
            let seed = (n * 31 + target) as u64;
            let reached = attack(&cluster, target, kind, seed, ensemble && closes_at_once(kind, target)).await;
            // Every Ensemble node listens on its quorum port.
            assert!(reached || !ensemble, "node {}'s quorum port refused a connection", target + 1);
        }
        serving(&cluster, leader, &format!("{kind:?}")).await;
    }

    // All of it at once: 100 connections to each node (past its 64 pending handshakes), every attack, held
    // open together for a second.
    let cluster_ref = &cluster;
    let storm = (0..NODES * 100).map(|k| async move {
        let (target, kind) = (k % NODES, ATTACKS[k % ATTACKS.len()]);
        send(cluster_ref, target, kind, 1000 + k as u64).await
    });
    let held = futures_util::future::join_all(storm).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(held);
    serving(&cluster, leader, "many connections at once").await;

    stop.store(true, Ordering::SeqCst);
    writer.await.expect("the background writer");
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "the background writer committed nothing");
    let servers: Vec<String> = (0..NODES).map(|i| cluster.client_addr(i).to_string()).collect();
    ensemble_tests::client::assert_on_every_server(&servers, "/t50", &acked).await;
    eprintln!("t50: {} acknowledged background writes, all on every node", acked.len());
    if ensemble {
        logged_with_reasons(&cluster);
    }
}

/// A peer frame that decodes but carries a forwarded payload that does not (from something claiming a server
/// that dials this node) is that peer's fault: the node drops the link, as for a frame that does not decode,
/// instead of logging and reading on. The claim replaced the real server's link (a connection that sends a frame
/// that decodes does: the real server may have restarted), so that server reconnects, and the ensemble serves
/// again with every acknowledged write. Against ZooKeeper the bytes are garbage and are closed all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarded_payload_that_does_not_decode_drops_the_link() {
    let cluster = Arc::new(blocking(|| Cluster::start(NODES)));
    let ensemble = matches!(cluster.server(), Server::Ensemble(_));
    let cs = cluster.connect_string();
    connect(&cs).await.create("/t50f", b"", PERSISTENT).await.unwrap();
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
    let writer =
        tokio::spawn(ensemble_tests::client::write_until(cs.clone(), "/t50f/bg-", stop.clone(), acked.clone()));
    // Node 1 is dialed by node 3 in the real ensemble: claim to be node 3, then send one Forward frame (tag 17,
    // a u32 length, the payload) whose payload starts with a kind no server sends.
    let (target, claimed) = (0, NODES as u64);
    let payload = [0xee_u8; 32];
    let mut body = vec![17u8];
    body.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&payload);
    let mut bytes = claimed.to_be_bytes().to_vec();
    bytes.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    bytes.extend(body);
    match TcpStream::connect(cluster.quorum_addr(target)).await {
        Ok(mut stream) => {
            let _ = stream.write_all(&bytes).await;
            let mut sink = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut sink)).await;
            assert!(read.is_ok(), "node 1 kept the link of a peer whose forwarded payload does not decode");
        }
        // ZooKeeper's learners do not listen on the quorum port.
        Err(error) => assert!(!ensemble, "node 1's quorum port: {error}"),
    }
    // The real node 3 reconnects; the ensemble serves through every node again.
    blocking(|| cluster.wait_serving());
    for i in 0..NODES {
        let client = connect(&cluster.client_addr(i).to_string()).await;
        let path = format!("/t50f/after-via-{}", i + 1);
        client.create(&path, b"", PERSISTENT).await.unwrap_or_else(|e| panic!("write via node {}: {e}", i + 1));
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("the background writer");
    let acked = acked.lock().unwrap().clone();
    let servers: Vec<String> = (0..NODES).map(|i| cluster.client_addr(i).to_string()).collect();
    ensemble_tests::client::assert_on_every_server(&servers, "/t50f", &acked).await;
    if ensemble {
        let log = cluster.log_text(target);
        let line = log.lines().find(|l| l.contains("WARN") && l.contains("does not decode"));
        assert!(line.is_some_and(|l| l.contains("peer=3")), "node 1 logged no dropped link naming the peer and why");
    }
}

/// Each node logged the refusals with their reason, and no node went back to election.
fn logged_with_reasons(cluster: &Cluster) {
    for i in 0..NODES {
        let log = cluster.log_text(i);
        // Only a higher id may dial a node: the highest refuses every claimed id before any frame.
        let frames_read = existing_id(i) > i as u64 + 1;
        let second = if frames_read { "exceeds the limit" } else { "should not dial this server" };
        for reason in ["fault=unknown server id 99", second] {
            let line = log.lines().find(|l| l.contains("WARN") && l.contains(reason));
            assert!(line.is_some_and(|l| l.contains("addr=")), "node {} logged no refusal with {reason:?}", i + 1);
        }
        let elections: Vec<&str> = log.lines().filter(|l| l.contains("back to leader election")).collect();
        assert!(elections.is_empty(), "node {} went back to election: {elections:?}", i + 1);
    }
}
