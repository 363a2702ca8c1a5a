//! Repair from peers, in the spirit of PAR (FAST '18): a server that finds a damaged record in its log, or
//! cannot rebuild its tree from its snapshots and log, does not wait for an operator and loses nothing. It marks
//! itself repairing, keeps what verifies, and takes the rest from the leader; until it has, it neither leads
//! nor votes as if it lacked what it lost.
//!
//! Each test damages real files of real `ensemble` processes (one bit of a committed record in a WAL segment
//! that a later one sealed; every snapshot), then checks that every acknowledged write is on every server, read
//! through a client pinned to it, and that the ensemble serves without anyone running a tool.
//!
//! Ensemble only: the files and the repair are this server's. (Apache ZooKeeper, given the same damage, refuses
//! to start or silently loses the damaged txns; PAR documents both.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ensemble_tests::client::PERSISTENT;
use ensemble_tests::fourlw::Mode;
use ensemble_tests::process::Server;
use ensemble_tests::{blocking, connect, eventually, Cluster, Options};
use wal::record::{self, Decoded};
use wal::segment::format::{parse_file_name, HEADER_LEN};
use wal::Zxid;

/// What the test wrote and had acknowledged: path to data.
type Written = BTreeMap<String, Vec<u8>>;

/// A 3-node cluster, if the servers under test are Ensemble's: with 4 MiB segments and a snapshot every 100
/// txns, so that segments are sealed and purged, and snapshots taken, within a few megabytes of writes.
fn ensemble_cluster() -> Option<Cluster> {
    let cluster = blocking(|| Cluster::start_with(Options::small_files()));
    if matches!(cluster.server(), Server::Ensemble(_)) {
        return Some(cluster);
    }
    eprintln!("t46: Ensemble only (the damaged files and the repair are this server's)");
    None
}

/// Writes `big` znodes of 512 KiB (so that the 4 MiB WAL segments roll: the first ones get sealed) and `small`
/// ones under `prefix`; returns them, all acknowledged.
async fn fill(client: &zookeeper_client::Client, prefix: &str, big: usize, small: usize) -> Written {
    client.create(prefix, b"", PERSISTENT).await.expect("create the parent");
    let mut written = Written::new();
    for i in 0..big {
        let data: Vec<u8> = (0..512 * 1024).map(|b| (b as u8) ^ (i as u8)).collect();
        written.insert(format!("{prefix}/big-{i:03}"), data);
    }
    for i in 0..small {
        written.insert(format!("{prefix}/small-{i:04}"), format!("value {i}").into_bytes());
    }
    // Ten at a time: ten of the big ones are 5 MiB in flight, which a loaded machine fsyncs well within the
    // client's patience (it gives up on a connection after a share of its 10 s session).
    for chunk in written.iter().collect::<Vec<_>>().chunks(10) {
        let creates = chunk.iter().map(|(path, data)| client.create(path, data, PERSISTENT));
        for result in futures_util::future::join_all(creates).await {
            result.expect("a quorum serves: the write is acknowledged");
        }
    }
    written
}

/// Every acknowledged write is on node `i`, read through a client connected to it alone.
async fn assert_holds(cluster: &Cluster, i: usize, written: &Written) {
    let client = connect(&cluster.client_addr(i).to_string()).await;
    for (path, data) in written {
        match client.get_data(path).await {
            Ok((found, _)) => assert!(found == *data, "node {}: {path} holds other data", i + 1),
            Err(error) => panic!("node {}: acknowledged write {path} is lost: {error}", i + 1),
        }
    }
}

/// Every acknowledged write is on every node.
async fn assert_everywhere(cluster: &Cluster, written: &Written) {
    for i in 0..cluster.len() {
        assert_holds(cluster, i, written).await;
    }
}

/// The WAL segments of node `i` (in `dataLogDir/log`), oldest first.
fn segments(cluster: &Cluster, i: usize) -> Vec<PathBuf> {
    let dir = cluster.node_dir(i).join("log").join("log");
    let mut found: Vec<(Zxid, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let path = e.ok()?.path();
            Some((parse_file_name(&path.file_name()?.to_string_lossy())?, path))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, path)| path).collect()
}

/// Each record of a segment: where it starts, where it ends, its zxid.
fn records(segment: &Path) -> Vec<(usize, usize, Zxid)> {
    let data = std::fs::read(segment).expect("read a segment");
    let (mut spans, mut offset) = (Vec::new(), HEADER_LEN);
    while let Decoded::Record { zxid, next, .. } = record::decode(&data, offset, 16 << 20) {
        spans.push((offset, next, zxid));
        offset = next;
    }
    spans
}

/// Flips one bit in the middle of the payload of the record spanning `start..end` of `segment`.
fn flip(segment: &Path, (start, end): (usize, usize)) {
    use std::os::unix::fs::FileExt;
    let at = (start + record::RECORD_HEADER_LEN + end) / 2;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(segment).expect("open a segment");
    let mut byte = [0];
    file.read_exact_at(&mut byte, at as u64).expect("read the byte");
    file.write_all_at(&[byte[0] ^ 0x10], at as u64).expect("flip the bit");
    file.sync_all().expect("fsync");
}

/// Damages the `nth` record of node `i`'s first segment, sealed by a later one if retention left two, or else a
/// record that valid ones follow; returns its zxid.
fn damage_committed_record(cluster: &Cluster, i: usize, nth: usize) -> Zxid {
    let segments = segments(cluster, i);
    let spans = records(&segments[0]);
    assert!(segments.len() >= 2 || spans.len() > nth + 1, "node {}: too few records {segments:?}", i + 1);
    let (start, end, zxid) = spans[nth.min(spans.len() - 1)];
    flip(&segments[0], (start, end));
    zxid
}

/// Stops every node, the followers first: the leader then steps down without a new epoch, so that every log
/// ends in the same epoch and zxid (a follower stopped after the leader could see a new epoch the others lack).
fn stop_all(cluster: &Cluster) {
    settle(cluster);
    let leader = cluster.leader();
    for i in cluster.followers().into_iter().chain([leader]) {
        cluster.stop(i);
    }
}

/// Waits until every node has applied the same last zxid: a txn still in flight when the nodes stop (the
/// closeSession of a client just dropped) could otherwise be committed by two nodes and not the third, and a
/// test that then damages those two expects the third to hold everything.
fn settle(cluster: &Cluster) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let zxids = || -> Vec<Option<i64>> {
        (0..cluster.len()).map(|i| ensemble_tests::fourlw::parse_zxid(&cluster.four_letter(i, "srvr"))).collect()
    };
    loop {
        let now = zxids();
        if now.iter().all(|z| z.is_some() && *z == now[0]) {
            // And no txn arrives after it (a close proposed just now, which a loaded machine may take a while
            // to commit).
            std::thread::sleep(std::time::Duration::from_secs(2));
            if zxids() == now {
                return;
            }
        }
        assert!(std::time::Instant::now() < deadline, "the nodes did not agree on a last zxid: {now:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Node `i` said it repaired from its peers, and is no longer marked repairing (polled for 30 s: a node may
/// answer `srvr` a moment before its log line and the mark's removal reach the disk).
fn assert_repaired(cluster: &Cluster, i: usize) {
    let mark = cluster.node_dir(i).join("log").join("repairing");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let log = cluster.log_text(i);
        let said = log.contains("repairing from the peers") && log.contains("repaired: synced with the leader");
        if said && !mark.exists() {
            return;
        }
        if std::time::Instant::now() > deadline {
            assert!(log.contains("repairing from the peers"), "node {} never said it repairs:\n{log}", i + 1);
            assert!(log.contains("repaired: synced with the leader"), "node {} never said it repaired:\n{log}", i + 1);
            panic!("node {}: the repair mark {} is still there", i + 1, mark.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_committed_record_on_a_follower_is_repaired_from_the_leader() {
    let Some(cluster) = ensemble_cluster() else { return };
    let client = connect(&cluster.connect_string()).await;
    let written = fill(&client, "/t46a", 10, 200).await;
    let follower = blocking(|| cluster.followers())[0];
    blocking(|| cluster.stop(follower));
    damage_committed_record(&cluster, follower, 3);

    blocking(|| {
        cluster.start_node(follower);
        cluster.wait_serving();
    });
    // (Polled: one `srvr` may time out on a loaded machine.)
    let mode = eventually("the repaired node answers srvr", Duration::from_secs(30), || async {
        blocking(|| cluster.mode(follower))
    })
    .await;
    assert_eq!(mode, Mode::Follower);
    assert_repaired(&cluster, follower);
    assert_holds(&cluster, follower, &written).await;
    // What it took from the leader is durable: after a restart it serves it from its own disk.
    blocking(|| {
        cluster.kill(follower);
        cluster.start_node(follower);
        cluster.wait_serving();
    });
    assert_holds(&cluster, follower, &written).await;
}

/// The server that would win the election (all logs end alike, and it has the highest id) repairs instead of
/// leading; and two servers damaged in different records both repair from the third.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damaged_servers_never_lead_and_two_of_three_repair_from_the_third() {
    let Some(cluster) = ensemble_cluster() else { return };
    let client = connect(&cluster.connect_string()).await;
    let written = fill(&client, "/t46b", 10, 200).await;
    drop(client);

    // Node 3 alone damaged: node 2 leads.
    blocking(|| stop_all(&cluster));
    damage_committed_record(&cluster, 2, 2);
    blocking(|| {
        (0..3).for_each(|i| cluster.start_node(i));
        cluster.wait_serving();
    });
    assert_eq!(blocking(|| cluster.leader()), 1, "node 2 leads: node 3 is repairing");
    assert_repaired(&cluster, 2);
    assert_everywhere(&cluster, &written).await;

    // Nodes 2 and 3 damaged in different records: node 1 leads, both repair from it. Node 3's log restarted
    // after the snapshot it took from the leader: more writes roll it again, so that a segment is sealed.
    let client = connect(&cluster.connect_string()).await;
    let mut written = written;
    written.extend(fill(&client, "/t46b-more", 10, 50).await);
    written.insert("/t46b-more".into(), Vec::new());
    drop(client);
    blocking(|| stop_all(&cluster));
    let two = damage_committed_record(&cluster, 1, 1);
    let three = damage_committed_record(&cluster, 2, 5);
    assert_ne!(two, three);
    blocking(|| {
        (0..3).for_each(|i| cluster.start_node(i));
        cluster.wait_serving();
    });
    assert_eq!(blocking(|| cluster.leader()), 0, "node 1 leads: nodes 2 and 3 are repairing");
    assert_everywhere(&cluster, &written).await;
    assert_repaired(&cluster, 1);
}

/// The case repair must get right: txns committed by nodes 2 and 3 while node 1 was down; node 3 loses them
/// to a damaged record; node 2 is down. Nodes 1 and 3 are a majority, but neither holds those txns: electing
/// either would lose acknowledged writes, so they must wait for node 2, and then every write is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repairing_server_never_helps_elect_a_leader_that_lacks_what_it_lost() {
    let Some(cluster) = ensemble_cluster() else { return };
    blocking(|| cluster.stop(0));
    let client = connect(&format!("{},{}", cluster.client_addr(1), cluster.client_addr(2))).await;
    let written = fill(&client, "/t46c", 10, 100).await;
    let (_, stat) = client.get_data("/t46c").await.expect("the parent");
    drop(client);
    blocking(|| {
        cluster.stop(1);
        cluster.stop(2);
    });
    // Damage node 3's record of the first of those txns: everything after it is cut.
    let first = Zxid(stat.czxid as u64);
    let segments = segments(&cluster, 2);
    let (segment, (start, end)) = segments
        .iter()
        .find_map(|s| records(s).into_iter().find(|r| r.2 == first).map(|(a, b, _)| (s, (a, b))))
        .unwrap_or_else(|| panic!("node 3 logged {first:?}"));
    flip(segment, (start, end));

    blocking(|| {
        cluster.start_node(0);
        cluster.start_node(2);
    });
    tokio::time::sleep(Duration::from_secs(8)).await;
    for i in [0, 2] {
        let mode = blocking(|| cluster.mode(i));
        assert_eq!(mode, None, "node {} serves as {mode:?} without node 2, which alone holds the writes", i + 1);
    }
    blocking(|| {
        cluster.start_node(1);
        cluster.wait_serving();
    });
    assert_eq!(blocking(|| cluster.leader()), 1, "node 2 leads: it alone holds every write");
    assert_everywhere(&cluster, &written).await;
    assert_repaired(&cluster, 2);
}

/// Every snapshot of a follower is damaged after its log was purged behind them: the tree cannot be rebuilt
/// from what is left, so the follower moves its log and snapshots aside, starts empty and takes a snapshot
/// from the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_whose_snapshots_are_all_damaged_takes_one_from_the_leader() {
    let Some(cluster) = ensemble_cluster() else { return };
    let client = connect(&cluster.connect_string()).await;
    // 15 MiB: four 4 MiB segments, which retention purges once 3 snapshots (snapCount 100) start after them.
    let mut written = fill(&client, "/t46d", 30, 100).await;
    let (_, parent) = client.get_data("/t46d").await.expect("the parent");
    let follower = blocking(|| cluster.followers())[0];
    let first_segment = || parse_file_name(&segments(&cluster, follower)[0].file_name().unwrap().to_string_lossy());
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut batch = 0;
    while first_segment() <= Some(Zxid(parent.czxid as u64)) {
        assert!(std::time::Instant::now() < deadline, "node {}: its log was never purged", follower + 1);
        let more = fill(&client, &format!("/t46d-{batch}"), 0, 200).await;
        written.extend(more);
        written.insert(format!("/t46d-{batch}"), Vec::new());
        batch += 1;
    }
    blocking(|| cluster.stop(follower));
    let snapshots: Vec<PathBuf> = std::fs::read_dir(cluster.node_dir(follower).join("data").join("snapshots"))
        .expect("the snapshot directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("snapshot.")))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 64))
        .collect();
    assert!(!snapshots.is_empty(), "node {} wrote no snapshot", follower + 1);
    for snapshot in &snapshots {
        let len = std::fs::metadata(snapshot).unwrap().len() as usize;
        flip(snapshot, (0, len));
    }

    blocking(|| {
        cluster.start_node(follower);
        cluster.wait_serving();
    });
    let log = cluster.log_text(follower);
    assert!(log.contains("moved the log and snapshots aside"), "node {}:\n{log}", follower + 1);
    assert_repaired(&cluster, follower);
    assert_holds(&cluster, follower, &written).await;
}
