//! The TCP transport on loopback: messages flow both ways in order, a dead peer is reported, and a restarted
//! one is reconnected to.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use replication::message::{Message, ServerId};
use replication::security::{BoxedStream, PeerIdentity, Upgrade};
use replication::transport::{
    Inbound, InboundReceiver, LinkFault, SendError, TcpTransport, Transport, TransportConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wal::Zxid;

fn config() -> TransportConfig {
    TransportConfig { backoff: (Duration::from_millis(10), Duration::from_millis(100)), ..TransportConfig::default() }
}

async fn next(rx: &mut InboundReceiver) -> Inbound {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("transport event within 10 s").expect("open")
}

/// Waits until `rx` reports a connection to `peer`.
async fn connected(rx: &mut InboundReceiver, peer: ServerId) {
    loop {
        if next(rx).await == Inbound::Connected(peer) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_in_order_and_reconnects_follow_restarts() {
    let (l1, l2) = (TcpListener::bind("127.0.0.1:0").await.unwrap(), TcpListener::bind("127.0.0.1:0").await.unwrap());
    let (a1, a2): (SocketAddr, SocketAddr) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let peers: BTreeMap<ServerId, SocketAddr> = [(ServerId(1), a1), (ServerId(2), a2)].into();
    let (t1, mut rx1) = TcpTransport::start(ServerId(1), l1, peers.clone(), config());
    let (t2, mut rx2) = TcpTransport::start(ServerId(2), l2, peers.clone(), config());
    connected(&mut rx1, ServerId(2)).await;
    connected(&mut rx2, ServerId(1)).await;

    for i in 1..=100u64 {
        t1.send(ServerId(2), Message::Proposal { zxid: Zxid(i), txn: vec![i as u8; 10].into() }).unwrap();
    }
    for i in 1..=100u64 {
        match next(&mut rx2).await {
            Inbound::Message(ServerId(1), Message::Proposal { zxid, .. }) => assert_eq!(zxid, Zxid(i), "in order"),
            other => panic!("unexpected {other:?}"),
        }
    }
    t2.send(ServerId(1), Message::Ack { zxid: Zxid(100) }).unwrap();
    assert_eq!(next(&mut rx1).await, Inbound::Message(ServerId(2), Message::Ack { zxid: Zxid(100) }));
    assert_eq!(t1.send(ServerId(9), Message::UpToDate), Err(SendError::NotConnected(ServerId(9))));

    // Server 2 dies: server 1 hears of it.
    drop(t2);
    drop(rx2);
    loop {
        if next(&mut rx1).await == Inbound::Disconnected(ServerId(2)) {
            break;
        }
    }
    // Server 2 comes back on the same address: server 1 reconnects by itself.
    // (The old listener closes once its aborted task is dropped: retry the bind for a moment.)
    let mut l2 = None;
    for _ in 0..200 {
        match TcpListener::bind(a2).await {
            Ok(l) => {
                l2 = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let l2 = l2.expect("the address is free again within 2 s");
    let (t2, mut rx2) = TcpTransport::start(ServerId(2), l2, peers, config());
    connected(&mut rx1, ServerId(2)).await;
    connected(&mut rx2, ServerId(1)).await;
    t1.send(ServerId(2), Message::Ping { zxid: Zxid(7), round: 3 }).unwrap();
    assert_eq!(next(&mut rx2).await, Inbound::Message(ServerId(1), Message::Ping { zxid: Zxid(7), round: 3 }));
    drop(t2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_garbage_are_refused() {
    use tokio::io::AsyncWriteExt;
    let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a1 = l1.local_addr().unwrap();
    let peers: BTreeMap<ServerId, SocketAddr> =
        [(ServerId(1), a1), (ServerId(2), "127.0.0.1:1".parse().unwrap())].into();
    let (_t1, mut rx1) = TcpTransport::start(ServerId(5), l1, peers, config());
    // An unknown id: refused.
    let mut s = tokio::net::TcpStream::connect(a1).await.unwrap();
    s.write_u64(77).await.unwrap();
    // A known id, then garbage instead of frames: connected, then dropped.
    let mut s2 = tokio::net::TcpStream::connect(a1).await.unwrap();
    s2.write_u64(1).await.unwrap();
    assert_eq!(next(&mut rx1).await, Inbound::Connected(ServerId(1)));
    s2.write_all(&[0xff; 16]).await.unwrap();
    assert_eq!(next(&mut rx1).await, Inbound::Disconnected(ServerId(1)));
    drop(s);
}

/// A peer whose send queue passes its byte bound is disconnected (it re-syncs), never buffered for without
/// limit; a stream takes a slot, not bytes.
#[tokio::test(flavor = "current_thread")]
async fn a_queue_past_its_byte_bound_disconnects_the_peer() {
    let (l1, l2) = (TcpListener::bind("127.0.0.1:0").await.unwrap(), TcpListener::bind("127.0.0.1:0").await.unwrap());
    let peers: BTreeMap<ServerId, SocketAddr> =
        [(ServerId(1), l1.local_addr().unwrap()), (ServerId(2), l2.local_addr().unwrap())].into();
    let small = TransportConfig { queue_bytes: 4096, ..config() };
    let (t1, mut rx1) = TcpTransport::start(ServerId(1), l1, peers.clone(), small);
    let (_t2, mut rx2) = TcpTransport::start(ServerId(2), l2, peers.clone(), config());
    connected(&mut rx1, ServerId(2)).await;
    connected(&mut rx2, ServerId(1)).await;
    // Nothing below yields, so the connection's writer cannot drain meanwhile.
    let empty: replication::transport::MessageStream = Box::new(std::iter::empty());
    t1.send_stream(ServerId(2), empty).unwrap();
    let txn: bytes::Bytes = vec![7u8; 1000].into();
    let mut results = Vec::new();
    for i in 1..=10u64 {
        results.push(t1.send(ServerId(2), Message::Proposal { zxid: Zxid(i), txn: txn.clone() }));
    }
    assert!(results[..3].iter().all(Result::is_ok), "{results:?}");
    assert_eq!(results[3], Err(SendError::QueueFull(ServerId(2))), "the fourth KiB passes 4 KiB: {results:?}");
    loop {
        if next(&mut rx1).await == Inbound::Disconnected(ServerId(2)) {
            break;
        }
    }
}

/// A connection claiming the id of a connected server, then sending garbage or nothing, never cuts that
/// server's real link; a length prefix over the bound, or a flood of connections that never finish their
/// handshake, only cost their own connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostors_huge_frames_and_floods_never_cut_a_real_link() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (l1, l2) = (TcpListener::bind("127.0.0.1:0").await.unwrap(), TcpListener::bind("127.0.0.1:0").await.unwrap());
    let a1 = l1.local_addr().unwrap();
    let peers: BTreeMap<ServerId, SocketAddr> = [(ServerId(1), a1), (ServerId(2), l2.local_addr().unwrap())].into();
    let (t1, mut rx1) = TcpTransport::start(ServerId(1), l1, peers.clone(), config());
    let (_t2, mut rx2) = TcpTransport::start(ServerId(2), l2, peers, config());
    connected(&mut rx1, ServerId(2)).await;
    connected(&mut rx2, ServerId(1)).await;

    // Server 2's id, then garbage; server 2's id, then a 4 GiB and a 2 GiB length prefix; server 2's id, then
    // a truncated frame and the end; and server 2's id, then silence.
    let attacks: [&[u8]; 4] = [&[0xde; 64], &[0xff, 0xff, 0xff, 0xff, 13], &[0x80, 0, 0, 0, 13], &[0, 0, 0, 9, 13, 0]];
    let mut held = Vec::new();
    for bytes in attacks {
        let mut s = tokio::net::TcpStream::connect(a1).await.unwrap();
        s.write_u64(2).await.unwrap();
        s.write_all(bytes).await.unwrap();
        held.push(s);
    }
    let mut silent = tokio::net::TcpStream::connect(a1).await.unwrap();
    silent.write_u64(2).await.unwrap();
    // A flood of connections that never send their id: past the bound, the listener closes them at once.
    let mut flood = Vec::new();
    for _ in 0..(replication::transport::MAX_HANDSHAKES + 16) {
        flood.push(tokio::net::TcpStream::connect(a1).await.unwrap());
    }
    // Well within the handshake timeout (5 s), only the ones past the bound are closed.
    let closed = flood.iter_mut().map(|s| async move {
        let mut byte = [0u8; 1];
        matches!(tokio::time::timeout(Duration::from_secs(1), s.read(&mut byte)).await, Ok(Ok(0)) | Ok(Err(_)))
    });
    let closed_at_once = futures_util::future::join_all(closed).await.into_iter().filter(|&c| c).count();
    assert!(
        (16..=replication::transport::MAX_HANDSHAKES).contains(&closed_at_once),
        "{closed_at_once} of {} connections that sent no id were closed within a second",
        flood.len()
    );
    // The garbage connections are closed by server 1...
    for mut s in held {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(_)) | Ok(Err(_))), "a connection that sent garbage was kept open");
    }
    // ...and the real link carried on throughout: no disconnect was reported, and messages still flow.
    t1.send(ServerId(2), Message::Ping { zxid: Zxid(42), round: 1 }).unwrap();
    loop {
        match next(&mut rx2).await {
            Inbound::Message(ServerId(1), Message::Ping { zxid, .. }) => {
                assert_eq!(zxid, Zxid(42));
                break;
            }
            Inbound::Disconnected(peer) => panic!("the real link to {peer:?} was cut"),
            _ => {}
        }
    }
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(100), rx1.recv()).await {
        assert!(!matches!(event, Inbound::Disconnected(_)), "server 1 dropped its real link: {event:?}");
    }
    drop((silent, flood));
}

/// A message this server cannot frame (over its frame bound) ends the link, reported as a disconnect, even
/// when the peer keeps its end open: a link whose writer died must not stay up, swallowing every later send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_whose_writer_fails_is_dropped_and_reported() {
    use tokio::io::AsyncWriteExt;
    let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a1 = l1.local_addr().unwrap();
    let peers: BTreeMap<ServerId, SocketAddr> =
        [(ServerId(1), a1), (ServerId(2), "127.0.0.1:9".parse().unwrap())].into();
    let small = TransportConfig { max_frame: 1024, ..config() };
    let (t1, mut rx1) = TcpTransport::start(ServerId(1), l1, peers, small);
    // This test is server 2: it dials, and keeps its end open whatever server 1 does.
    let mut peer2 = tokio::net::TcpStream::connect(a1).await.unwrap();
    peer2.write_u64(2).await.unwrap();
    connected(&mut rx1, ServerId(2)).await;
    let big = Message::Proposal { zxid: Zxid(1), txn: vec![0u8; 4096].into() };
    t1.send(ServerId(2), big).unwrap();
    loop {
        if next(&mut rx1).await == Inbound::Disconnected(ServerId(2)) {
            break;
        }
    }
    drop(peer2);
}

/// Messages of every size, mixed at random and sent in bursts that fill the socket (the writer batches what is
/// queued into one write, and large ones flush as they go), arrive intact and in the order sent: Zab needs FIFO
/// links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_large_messages_mixed_arrive_in_order() {
    use rand::{Rng, SeedableRng};
    let (l1, l2) = (TcpListener::bind("127.0.0.1:0").await.unwrap(), TcpListener::bind("127.0.0.1:0").await.unwrap());
    let peers: BTreeMap<ServerId, SocketAddr> =
        [(ServerId(1), l1.local_addr().unwrap()), (ServerId(2), l2.local_addr().unwrap())].into();
    let (t1, mut rx1) = TcpTransport::start(ServerId(1), l1, peers.clone(), config());
    let (_t2, mut rx2) = TcpTransport::start(ServerId(2), l2, peers, config());
    connected(&mut rx1, ServerId(2)).await;
    connected(&mut rx2, ServerId(1)).await;
    const MESSAGES: u64 = 3000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let receiver = tokio::spawn(async move {
        let mut expected = 1;
        while expected <= MESSAGES {
            match next(&mut rx2).await {
                Inbound::Message(ServerId(1), Message::Proposal { zxid, txn }) => {
                    assert_eq!(zxid, Zxid(expected), "in order");
                    assert!(txn.iter().all(|&b| b == (expected % 251) as u8), "intact");
                    expected += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    for i in 1..=MESSAGES {
        // Mostly small, some large.
        let len = if rng.gen_bool(0.1) { rng.gen_range(20_000..200_000) } else { rng.gen_range(0..2_000) };
        t1.send(ServerId(2), Message::Proposal { zxid: Zxid(i), txn: vec![(i % 251) as u8; len].into() }).unwrap();
        if rng.gen_bool(0.05) {
            tokio::task::yield_now().await;
        }
    }
    tokio::time::timeout(Duration::from_secs(60), receiver).await.expect("all arrive").unwrap();
}

/// A peer that sends faster than this server takes its messages in is read only as far as its byte budget:
/// the rest waits in TCP (its writes block), memory holds at most the budget, and another peer's message is
/// not held up behind the flood. Nothing of the flood is lost once the server takes it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_is_read_only_as_far_as_its_byte_budget() {
    use bytes::BytesMut;
    use replication::message::PeerCodec;
    use tokio_util::codec::Encoder;
    const BUDGET: usize = 1 << 20;
    const PAYLOAD: usize = 64 << 10;
    const FLOOD: usize = 1024; // 64 MiB: more than loopback's socket buffers hold, by far.
    let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a1 = l1.local_addr().unwrap();
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let peers: BTreeMap<ServerId, SocketAddr> =
        [(ServerId(1), a1), (ServerId(2), nowhere), (ServerId(3), nowhere)].into();
    let (_t1, mut rx1) =
        TcpTransport::start(ServerId(1), l1, peers, TransportConfig { inbound_bytes: BUDGET, ..config() });
    let frame = |message: Message| {
        let mut wire = BytesMut::new();
        PeerCodec::new(1 << 20).encode(message, &mut wire).unwrap();
        wire
    };
    // This test is servers 2 and 3: they dial server 1 (the higher id dials).
    let mut peer2 = TcpStream::connect(a1).await.unwrap();
    peer2.write_u64(2).await.unwrap();
    connected(&mut rx1, ServerId(2)).await;
    let mut peer3 = TcpStream::connect(a1).await.unwrap();
    peer3.write_u64(3).await.unwrap();
    connected(&mut rx1, ServerId(3)).await;
    let flood = tokio::spawn(async move {
        for i in 0..FLOOD {
            let data = vec![(i % 251) as u8; PAYLOAD].into();
            peer2.write_all(&frame(Message::Forward { data })).await.unwrap();
        }
        peer2
    });
    // Nobody takes server 1's messages in for a while: the flood stalls on TCP.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!flood.is_finished(), "64 MiB went into a server that took none of it in");
    peer3.write_all(&frame(Message::Ping { zxid: Zxid(7), round: 1 })).await.unwrap();
    // Time for server 1 to read it before anything is taken in (which frees server 2's budget), with room for a
    // loaded machine.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Server 3's ping was queued while server 2's budget was spent: at most a budget's worth of the flood is
    // ahead of it.
    let mut ahead = 0;
    loop {
        match next(&mut rx1).await {
            Inbound::Message(ServerId(2), Message::Forward { data }) => {
                assert_eq!(data.len(), PAYLOAD);
                assert!(data.iter().all(|&b| b == (ahead % 251) as u8), "message {ahead} of the flood, in order");
                ahead += 1;
            }
            Inbound::Message(ServerId(3), Message::Ping { zxid, .. }) => {
                assert_eq!(zxid, Zxid(7));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        (1..=BUDGET / PAYLOAD).contains(&ahead),
        "{ahead} flood messages of {PAYLOAD} bytes were queued ahead of another peer's, with a budget of {BUDGET}"
    );
    // Taken in, the whole flood arrives, in order.
    let mut got = ahead;
    while got < FLOOD {
        match next(&mut rx1).await {
            Inbound::Message(ServerId(2), Message::Forward { data }) => {
                assert!(data.iter().all(|&b| b == (got % 251) as u8), "message {got} of the flood, in order");
                got += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(tokio::time::timeout(Duration::from_secs(10), flood).await.expect("the flood was sent in the end"));
}

/// A toy [`PeerSecurity`]: the dialer sends one "proof" byte before its id, and the listener admits only the id
/// equal to it. Stands in for the node's TLS, whose certificate names the server it may claim.
struct Token(u8);

impl replication::security::PeerSecurity for Token {
    fn accept(&self, mut stream: TcpStream, _: SocketAddr) -> Upgrade<(BoxedStream, PeerIdentity)> {
        Box::pin(async move {
            let proof = stream.read_u8().await.map_err(LinkFault::Handshake)?;
            Ok((Box::new(stream) as BoxedStream, PeerIdentity::Certificate(vec![proof])))
        })
    }

    fn admit(&self, claimed: ServerId, identity: &PeerIdentity) -> Result<(), LinkFault> {
        match identity {
            PeerIdentity::Certificate(proof) if proof[..] == [claimed.0 as u8] => Ok(()),
            _ => Err(LinkFault::Identity { claimed: claimed.0, reason: "its proof names another server".into() }),
        }
    }

    fn connect(&self, mut stream: TcpStream, _: ServerId, _: SocketAddr) -> Upgrade<BoxedStream> {
        let proof = self.0;
        Box::pin(async move {
            stream.write_u8(proof).await.map_err(LinkFault::Handshake)?;
            Ok(Box::new(stream) as BoxedStream)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_security_seam_upgrades_both_ends_and_admits_only_proven_ids() {
    let (l1, l2) = (TcpListener::bind("127.0.0.1:0").await.unwrap(), TcpListener::bind("127.0.0.1:0").await.unwrap());
    let (a1, a2): (SocketAddr, SocketAddr) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let peers: BTreeMap<ServerId, SocketAddr> =
        [(ServerId(1), a1), (ServerId(2), a2), (ServerId(3), "127.0.0.1:9".parse().unwrap())].into();
    let with = |proof| TransportConfig { security: Arc::new(Token(proof)), ..config() };
    let (_t1, mut rx1) = TcpTransport::start(ServerId(1), l1, peers.clone(), with(1));
    let (_t2, _rx2) = TcpTransport::start(ServerId(2), l2, peers, with(2));
    connected(&mut rx1, ServerId(2)).await;

    // A stranger proving it is server 2 but claiming 3 is refused before any frame; one proving 3 gets in.
    for (proof, admitted) in [(2u8, false), (3u8, true)] {
        let mut stranger = tokio::net::TcpStream::connect(a1).await.unwrap();
        stranger.write_u8(proof).await.unwrap();
        stranger.write_u64(3).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), stranger.read(&mut buf)).await;
        assert_eq!(read.is_err(), admitted, "proof {proof} claiming 3: {read:?}");
        if admitted {
            connected(&mut rx1, ServerId(3)).await;
        }
    }
}
