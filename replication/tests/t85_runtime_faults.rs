//! Whose fault it is decides what the runtime does: a real runtime (server 1) follows a scripted leader
//! (server 2, this test, over loopback TCP) into a SNAP sync.
//!
//! - The leader's fault (a chunk at the wrong offset, a snapshot that does not verify): the link to it drops,
//!   nothing is installed, and the runtime carries on (it elects again and takes a new connection).
//! - This server's fault (its epoch file cannot be written, its snapshot directory cannot be created): the
//!   runtime stops, and the node hears of it (its streams end).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use replication::election::ElectionConfig;
use replication::message::{Message, Notification, PeerCodec, PeerState, ServerId};
use replication::peer::{PeerConfig, Role};
use replication::quorum::Voters;
use replication::runtime::{start, Committed, Handle, ServerConfig, Streams};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedRead, FramedWrite};
use wal::{Epoch, WalOptions, Zxid};

const WAIT: Duration = Duration::from_secs(10);

/// Server 1, in an ensemble of voters 1 and 2 whose server 2 is this test.
async fn server(dir: &Path) -> (Handle, Streams, SocketAddr) {
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
        wal: WalOptions { segment_size: 4 << 20, ..WalOptions::default() },
        snapshots: Some(snapshots(dir)),
        transport: Default::default(),
        monitor: std::sync::Arc::new(()),
    };
    let (handle, streams) = start(config).unwrap();
    (handle, streams, addr)
}

fn snapshots(dir: &Path) -> PathBuf {
    dir.join("1-snapshots")
}

/// This test, speaking as server 2.
struct Leader {
    reader: FramedRead<OwnedReadHalf, PeerCodec>,
    writer: FramedWrite<OwnedWriteHalf, PeerCodec>,
}

impl Leader {
    async fn connect(addr: SocketAddr) -> Leader {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_u64(2).await.unwrap();
        let (read, write) = stream.into_split();
        Leader {
            reader: FramedRead::new(read, PeerCodec::new(4 << 20)),
            writer: FramedWrite::new(write, PeerCodec::new(4 << 20)),
        }
    }

    async fn send(&mut self, message: Message) {
        self.writer.send(message).await.unwrap();
    }

    /// The next message matching `wanted` (others are skipped); `None` once the server closed the link.
    async fn expect(&mut self, wanted: impl Fn(&Message) -> bool) -> Option<Message> {
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
    async fn closed(&mut self) -> bool {
        self.expect(|_| false).await.is_none()
    }

    /// Makes server 1 follow this leader in epoch 1, up to its ACKEPOCH.
    async fn elected(addr: SocketAddr) -> Leader {
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

    async fn acked_epoch(addr: SocketAddr) -> Leader {
        let mut leader = Leader::elected(addr).await;
        let ack = leader.expect(|m| matches!(m, Message::AckEpoch { .. })).await;
        assert!(ack.is_some(), "no ACKEPOCH");
        leader
    }
}

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

/// The runtime stopped: the node's streams end.
async fn stopped(streams: &mut Streams) {
    let end = tokio::time::timeout(WAIT, async { while streams.committed.recv().await.is_some() {} }).await;
    assert!(end.is_ok(), "the runtime still runs after a fault of this server");
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
    for zxid in [z1, z2] {
        let got = tokio::time::timeout(WAIT, streams.committed.recv()).await.expect("a committed txn in time");
        assert_eq!(got, Some(Committed::Txn { zxid, txn: Bytes::from_static(b"txn") }));
    }
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
    leader.send(Message::Ping { zxid: Zxid::ZERO }).await;
    assert!(leader.expect(|m| matches!(m, Message::Ping { .. })).await.is_some());
    drop(leader);
    let mut leader = Leader::acked_epoch(addr).await;
    leader.send(Message::Snap { zxid: Zxid::new(Epoch(1), 3), total_bytes: 100 }).await;
    leader.send(Message::SnapChunk { offset: 0, data: Bytes::from(vec![7; 40]) }).await;
    leader.send(Message::Ping { zxid: Zxid::ZERO }).await;
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
