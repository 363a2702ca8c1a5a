//! A real runtime (server 1) and this test speaking as server 2, its leader, over loopback TCP: what the
//! runtime-level fault tests (`t85_runtime_faults`, `failpoints`) share.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use replication::election::ElectionConfig;
use replication::message::{Message, Notification, PeerCodec, PeerState, ServerId};
use replication::peer::PeerConfig;
use replication::quorum::Voters;
use replication::runtime::{start, Handle, ServerConfig, Streams};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedRead, FramedWrite};
use wal::{Epoch, WalOptions, Zxid};

pub const WAIT: Duration = Duration::from_secs(10);

/// Server 1, in an ensemble of voters 1 and 2 whose server 2 is this test.
pub async fn server(dir: &Path) -> (Handle, Streams, SocketAddr) {
    server_with(dir, WalOptions { segment_size: 4 << 20, ..WalOptions::default() }).await
}

/// [`server`] with its WAL opened with `wal` (an observer of its batches, say).
pub async fn server_with(dir: &Path, wal: WalOptions) -> (Handle, Streams, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Server 2 dials server 1 (the higher id dials): its own address is never used.
    let peers = BTreeMap::from([(ServerId(1), addr), (ServerId(2), "127.0.0.1:9".parse().unwrap())]);
    let peer = PeerConfig {
        me: ServerId(1),
        voters: Voters::new([ServerId(1), ServerId(2)]),
        tick: Duration::from_millis(100),
        init_limit: 50,
        sync_limit: 50,
        window: 16,
        election: ElectionConfig { initial_timeout: Duration::from_millis(50), ..ElectionConfig::default() },
    };
    let config = ServerConfig {
        peer,
        listener,
        peers,
        dir: dir.join("1"),
        wal,
        snapshots: Some(snapshots(dir)),
        transport: Default::default(),
        monitor: std::sync::Arc::new(()),
        quiet_appends_here: true,
    };
    let (handle, streams) = start(config).unwrap();
    (handle, streams, addr)
}

pub fn snapshots(dir: &Path) -> PathBuf {
    dir.join("1-snapshots")
}

/// This test, speaking as server 2.
pub struct Leader {
    reader: FramedRead<OwnedReadHalf, PeerCodec>,
    writer: FramedWrite<OwnedWriteHalf, PeerCodec>,
}

impl Leader {
    pub async fn connect(addr: SocketAddr) -> Leader {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_u64(2).await.unwrap();
        let (read, write) = stream.into_split();
        Leader {
            reader: FramedRead::new(read, PeerCodec::new(4 << 20)),
            writer: FramedWrite::new(write, PeerCodec::new(4 << 20)),
        }
    }

    pub async fn send(&mut self, message: Message) {
        self.writer.send(message).await.unwrap();
    }

    /// The next message matching `wanted` (others are skipped); `None` once the server closed the link.
    pub async fn expect(&mut self, wanted: impl Fn(&Message) -> bool) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.reader.next()).await.expect("a message within 10 s") {
                Some(Ok(m)) if wanted(&m) => return Some(m),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Whether the server closes the link within the wait (whatever it sends meanwhile).
    pub async fn closed(&mut self) -> bool {
        self.expect(|_| false).await.is_none()
    }

    /// Makes server 1 follow this leader in epoch 1, up to its ACKEPOCH.
    pub async fn elected(addr: SocketAddr) -> Leader {
        let mut leader = Leader::connect(addr).await;
        let n = Notification {
            leader: ServerId(2),
            zxid: Zxid::ZERO,
            peer_epoch: Epoch(0),
            election_epoch: 1,
            state: PeerState::Leading,
            sender: ServerId(2),
        };
        leader.send(Message::Notification(n)).await;
        let info = leader.expect(|m| matches!(m, Message::FollowerInfo { .. })).await;
        assert!(info.is_some(), "server 1 does not follow");
        leader.send(Message::LeaderInfo { new_epoch: Epoch(1) }).await;
        leader
    }

    pub async fn acked_epoch(addr: SocketAddr) -> Leader {
        let mut leader = Leader::elected(addr).await;
        let ack = leader.expect(|m| matches!(m, Message::AckEpoch { .. })).await;
        assert!(ack.is_some(), "no ACKEPOCH");
        leader
    }
}

/// The runtime stopped: the node's streams end.
pub async fn stopped(streams: &mut Streams) {
    let end = tokio::time::timeout(WAIT, async { while streams.committed.recv().await.is_some() {} }).await;
    assert!(end.is_ok(), "the runtime still runs after a fault of this server");
}
