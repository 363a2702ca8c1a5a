//! Three in-process servers on loopback TCP with real WALs: they elect a leader, commit txns on every server,
//! survive the leader's shutdown (a new leader commits more), and the old leader rejoins and catches up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use replication::election::ElectionConfig;
use replication::message::ServerId;
use replication::peer::{Learners, PeerConfig, Role};
use replication::quorum::Voters;
use replication::runtime::{start, Committed, ForwardTo, Handle, ServerConfig, Streams};
use tokio::net::TcpListener;
use wal::{WalOptions, Zxid};

fn peer_config(me: u64) -> PeerConfig {
    PeerConfig {
        me: ServerId(me),
        voters: Voters::new([ServerId(1), ServerId(2), ServerId(3)]),
        tick: Duration::from_millis(100),
        init_limit: 20,
        sync_limit: 10,
        window: 256,
        election: ElectionConfig { initial_timeout: Duration::from_millis(50), ..ElectionConfig::default() },
    }
}

async fn boot(me: u64, dir: &std::path::Path, listener: TcpListener, peers: &BTreeMap<ServerId, SocketAddr>) -> Handle {
    boot_with_streams(me, dir, listener, peers).await.0
}

async fn boot_with_streams(
    me: u64,
    dir: &std::path::Path,
    listener: TcpListener,
    peers: &BTreeMap<ServerId, SocketAddr>,
) -> (Handle, Streams) {
    let wal = WalOptions { segment_size: 4 << 20, ..WalOptions::default() };
    start(ServerConfig {
        peer: peer_config(me),
        listener,
        peers: peers.clone(),
        dir: dir.join(me.to_string()),
        wal,
        snapshots: None,
        transport: Default::default(),
        monitor: std::sync::Arc::new(()),
        quiet_appends_here: true,
    })
    .unwrap()
}

/// Waits until one of `servers` leads and serves and all others follow it and serve; returns the leader.
async fn settled(servers: &BTreeMap<u64, Handle>) -> u64 {
    for _ in 0..300 {
        let roles: Vec<(u64, (Role, bool))> = servers.iter().map(|(&id, h)| (id, *h.role.borrow())).collect();
        let leaders: Vec<u64> = roles.iter().filter(|(_, r)| *r == (Role::Leading, true)).map(|(id, _)| *id).collect();
        if let [leader] = leaders[..] {
            if roles.iter().all(|(id, r)| *id == leader || *r == (Role::Following(ServerId(leader)), true)) {
                return leader;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no settled ensemble within 15 s");
}

async fn applied_everywhere(servers: &BTreeMap<u64, Handle>, zxid: Zxid) {
    for _ in 0..300 {
        if servers.values().all(|h| *h.applied.borrow() >= zxid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{zxid} not applied everywhere within 15 s");
}

/// Waits until `leader`'s view of its learners (what `mntr` reports) has these followers and observers, all
/// synced.
async fn learners_synced(leader: &Handle, followers: usize, observers: usize) {
    let want = Learners { connected: followers + observers, synced_followers: followers, synced_observers: observers };
    for _ in 0..300 {
        let view = *leader.learners.borrow();
        if view.learners == want && view.leading_since.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the leader's view is {:?}, not {want:?}, after 15 s", *leader.learners.borrow());
}

/// `n` bound loopback listeners (ids 1..=n) and the peer map they make.
async fn listeners(n: u64) -> (BTreeMap<ServerId, SocketAddr>, BTreeMap<u64, TcpListener>) {
    let (mut peers, mut listeners) = (BTreeMap::new(), BTreeMap::new());
    for id in 1..=n {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(ServerId(id), l.local_addr().unwrap());
        listeners.insert(id, l);
    }
    (peers, listeners)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_commit_fail_over_and_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let (peers, listeners) = listeners(3).await;
    let mut servers = BTreeMap::new();
    for (id, l) in listeners {
        servers.insert(id, boot(id, dir.path(), l, &peers).await);
    }
    let leader = settled(&servers).await;
    learners_synced(&servers[&leader], 2, 0).await;
    for (_, follower) in servers.iter().filter(|(&id, _)| id != leader) {
        assert_eq!(*follower.learners.borrow(), Default::default(), "a follower has no learners");
    }

    let mut last = Zxid::ZERO;
    for i in 0..100u32 {
        last = servers[&leader].propose(Bytes::from(i.to_be_bytes().to_vec())).await.expect("commit");
    }
    applied_everywhere(&servers, last).await;

    // The leader goes away; the other two elect a new one, in a new epoch, and go on committing.
    servers[&leader].shutdown();
    let old = servers.remove(&leader).unwrap();
    let new_leader = settled(&servers).await;
    assert_ne!(new_leader, leader);
    learners_synced(&servers[&new_leader], 1, 0).await;
    let mut newer = last;
    for i in 0..50u32 {
        newer = servers[&new_leader].propose(Bytes::from(i.to_be_bytes().to_vec())).await.expect("commit");
    }
    assert!(newer.epoch() > last.epoch(), "a new leader means a new epoch");
    applied_everywhere(&servers, newer).await;
    drop(old);

    // The old leader restarts from its disk and catches up.
    let mut listener = None;
    for _ in 0..200 {
        if let Ok(l) = TcpListener::bind(peers[&ServerId(leader)]).await {
            listener = Some(l);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    servers.insert(leader, boot(leader, dir.path(), listener.expect("port free again"), &peers).await);
    settled(&servers).await;
    applied_everywhere(&servers, newer).await;
    learners_synced(&servers[&new_leader], 2, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_streams_the_committed_txns_in_order_and_forwards_reach_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let (peers, listeners) = listeners(3).await;
    let (mut servers, mut streams) = (BTreeMap::new(), BTreeMap::new());
    for (id, l) in listeners {
        let (handle, s) = boot_with_streams(id, dir.path(), l, &peers).await;
        servers.insert(id, handle);
        streams.insert(id, s);
    }
    let leader = settled(&servers).await;
    let txns: Vec<Bytes> = (0..40u32).map(|i| Bytes::from(format!("txn {i}"))).collect();
    let mut zxids = Vec::new();
    for txn in &txns {
        zxids.push(servers[&leader].propose(txn.clone()).await.expect("commit"));
    }
    let expected: Vec<(Zxid, Bytes)> = zxids.into_iter().zip(txns).collect();
    for (id, s) in &mut streams {
        // In zxid order, however the runtime batched them.
        let mut got = Vec::new();
        while got.len() < expected.len() {
            match tokio::time::timeout(Duration::from_secs(10), s.committed.recv()).await.expect("in time") {
                Some(Committed::Txns(batch, _)) => got.extend(batch),
                other => panic!("server {id}: expected committed txns, got {other:?}"),
            }
        }
        assert_eq!(got, expected, "server {id}");
    }
    // A follower's forward reaches the leader, tagged with the follower's id.
    let follower = *servers.keys().find(|&&id| id != leader).unwrap();
    servers[&follower].forward(ForwardTo::Leader, Bytes::from_static(b"to the leader")).await;
    let got = tokio::time::timeout(Duration::from_secs(10), streams.get_mut(&leader).unwrap().forwarded.recv()).await;
    let got = got.expect("in time").expect("open");
    assert_eq!((got.from, got.data), (ServerId(follower), Bytes::from_static(b"to the leader")));
}

/// Forwarded payloads the node has not finished with count against their sender's budget: a peer past it is
/// dropped (it cannot make this server hold more), and once the node is done with what it took, the peer's
/// forwards are taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_past_its_budget_of_forwarded_bytes_is_dropped() {
    use bytes::BytesMut;
    use replication::message::{Message, PeerCodec};
    use replication::transport::TransportConfig;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::codec::Encoder;
    const BUDGET: usize = 1 << 20;
    const PAYLOAD: usize = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let peers = BTreeMap::from([(ServerId(1), address), (ServerId(2), "127.0.0.1:9".parse().unwrap())]);
    let config = ServerConfig {
        peer: PeerConfig { voters: Voters::new([ServerId(1), ServerId(2)]), ..peer_config(1) },
        listener,
        peers,
        dir: dir.path().join("1"),
        wal: WalOptions::default(),
        snapshots: None,
        transport: TransportConfig { forwarded_bytes: BUDGET, ..TransportConfig::default() },
        monitor: std::sync::Arc::new(()),
        quiet_appends_here: true,
    };
    let (_handle, mut streams) = start(config).unwrap();
    let forwards = |n: usize| {
        let mut wire = BytesMut::new();
        for i in 0..n {
            let data = vec![i as u8; PAYLOAD].into();
            PeerCodec::new(2 << 20).encode(Message::Forward { data }, &mut wire).unwrap();
        }
        wire
    };
    // This test is server 2; the node above the runtime takes nothing from the forwarded stream.
    let mut peer2 = tokio::net::TcpStream::connect(address).await.unwrap();
    peer2.write_u64(2).await.unwrap();
    // Each payload weighs its bytes and its queue entries.
    let fit = BUDGET / (PAYLOAD + replication::runtime::FORWARD_ENTRY_WEIGHT);
    peer2.write_all(&forwards(fit + 1)).await.unwrap();
    // Server 1 sends it election notifications, then closes the link.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), peer2.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(_)) | Ok(Err(_))), "a peer past its forwarded budget kept its link");
    let mut taken = Vec::new();
    while let Ok(forwarded) = streams.forwarded.try_recv() {
        assert_eq!((forwarded.from, forwarded.data.len()), (ServerId(2), PAYLOAD));
        taken.push(forwarded);
    }
    assert_eq!(taken.len(), fit, "what fit the budget was handed over");
    // Done with them: the budget is free again.
    drop(taken);
    let mut peer2 = tokio::net::TcpStream::connect(address).await.unwrap();
    peer2.write_u64(2).await.unwrap();
    peer2.write_all(&forwards(1)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), streams.forwarded.recv()).await.expect("in time");
    assert_eq!(got.map(|f| (f.from, f.data.len())), Some((ServerId(2), PAYLOAD)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_a_quorum_alone_leads_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peers = BTreeMap::from([(ServerId(1), listener.local_addr().unwrap())]);
    let peer = PeerConfig { voters: Voters::new([ServerId(1)]), ..peer_config(1) };
    let config = ServerConfig {
        peer,
        listener,
        peers,
        dir: dir.path().join("1"),
        wal: WalOptions::default(),
        snapshots: None,
        transport: Default::default(),
        monitor: std::sync::Arc::new(()),
        quiet_appends_here: true,
    };
    let (handle, _streams) = start(config).unwrap();
    let servers = BTreeMap::from([(1, handle)]);
    assert_eq!(settled(&servers).await, 1);
    let zxid = servers[&1].propose(Bytes::from_static(b"alone")).await.expect("commit");
    applied_everywhere(&servers, zxid).await;
}

/// A member outside `voters` (ZooKeeper's observer) follows the leader and applies every commit, but its acks
/// count towards no quorum: two of the three voters commit without it, and it alone with one voter cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_applies_commits_but_never_counts_towards_a_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let (peers, bound) = listeners(4).await;
    let mut servers = BTreeMap::new();
    for (id, listener) in bound {
        // Voters are 1, 2 and 3 for everyone (the default config); 4 observes.
        let config = ServerConfig {
            peer: peer_config(id),
            listener,
            peers: peers.clone(),
            dir: dir.path().join(id.to_string()),
            wal: WalOptions { segment_size: 4 << 20, ..WalOptions::default() },
            snapshots: None,
            transport: Default::default(),
            monitor: std::sync::Arc::new(()),
            quiet_appends_here: true,
        };
        servers.insert(id, start(config).unwrap().0);
    }
    let leader = settled(&servers).await;
    assert_ne!(leader, 4, "an observer never leads");
    learners_synced(&servers[&leader], 2, 1).await;
    let mut last = Zxid::ZERO;
    for i in 0..20u32 {
        last = servers[&leader].propose(Bytes::from(i.to_be_bytes().to_vec())).await.expect("commit");
    }
    applied_everywhere(&servers, last).await;

    // One voter gone: the leader and the other voter are a quorum.
    let others: Vec<u64> = servers.keys().copied().filter(|&id| id != leader && id != 4).collect();
    servers.remove(&others[0]).unwrap().shutdown();
    let after = servers[&leader].propose(Bytes::from_static(b"two voters")).await.expect("a quorum of voters");
    applied_everywhere(&servers, after).await;
    learners_synced(&servers[&leader], 1, 1).await;
    // Both other voters gone: the leader and the observer are not a quorum, whatever the observer acks.
    servers.remove(&others[1]).unwrap().shutdown();
    let lone = tokio::time::timeout(Duration::from_secs(3), servers[&leader].propose(Bytes::from_static(b"no")));
    assert!(!matches!(lone.await, Ok(Ok(_))), "committed with one voter and an observer");
}
