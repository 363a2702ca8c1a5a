//! When a silent session expires: ZooKeeper's leader expires a session whose client sent nothing for its timeout
//! within that timeout plus one tick (its expiry buckets are a tick wide), never before. A client that stops
//! sending (no pings, its connection left open) on a follower and on the leader; the time from its last reply to
//! the NodeDeleted of its ephemeral, seen by another client, must fall in [timeout, timeout + tick + slack]. The
//! slack (800 ms) is for the event's way to the watcher on a loaded machine; an ensemble that expired after the
//! connection closed (twice the timeout, as Ensemble did) is far outside it.

use std::time::{Duration, Instant};

use ensemble_tests::client::PERSISTENT;
use ensemble_tests::raw::{op, Body, RawSession};
use ensemble_tests::{blocking, connect, Cluster, Sections};

const TIMEOUT_MS: i32 = 4000;
const SLACK: Duration = Duration::from_millis(800);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_session_expires_within_its_timeout_and_a_tick() {
    let cluster = std::sync::Arc::new(blocking(|| Cluster::start(3)));
    connect(&cluster.connect_string()).await.create("/t25", b"", PERSISTENT).await.unwrap();
    let leader = blocking(|| cluster.leader());
    let follower = blocking(|| cluster.followers())[0];
    let mut s = Sections::new();
    let c = cluster.clone();
    s.run("a session on a follower", Duration::from_secs(60), async move { silent(&c, follower, "f").await }).await;
    let c = cluster.clone();
    s.run("a session on the leader", Duration::from_secs(60), async move { silent(&c, leader, "l").await }).await;
    s.finish();
}

async fn silent(cluster: &Cluster, node: usize, name: &str) {
    let tick = Duration::from_millis(cluster.options().tick_ms);
    let path = format!("/t25/{name}");
    let watcher = connect(&cluster.connect_string()).await;
    let mut session = RawSession::connect(cluster.client_addr(node), TIMEOUT_MS).await.expect("session");
    assert_eq!(session.timeout_ms, TIMEOUT_MS, "the timeout asked for is within the server's bounds");
    let create = Body::new().string(&path).buffer(b"").open_acl().int(1);
    assert_eq!(session.request(op::CREATE2, create).await.expect("create").err, 0);
    watcher.sync("/").await.expect("sync");
    let (_, deleted) = watcher.check_and_watch_stat(&path).await.expect("exists watch");
    // The create's reply was the session's last packet, both ways: from here on it is silent.
    let silent_since = Instant::now();
    let event = tokio::time::timeout(Duration::from_secs(30), deleted.changed()).await.expect("the session expires");
    let after = silent_since.elapsed();
    assert_eq!(event.event_type, zookeeper_client::EventType::NodeDeleted);
    let timeout = Duration::from_millis(TIMEOUT_MS as u64);
    eprintln!("  node {}: expired {after:?} after its last packet (timeout {timeout:?}, tick {tick:?})", node + 1);
    assert!(after >= timeout - Duration::from_millis(50), "expired after {after:?}, before its timeout");
    assert!(after <= timeout + tick + SLACK, "expired after {after:?}: over its timeout plus a tick");
    drop(session);
}
