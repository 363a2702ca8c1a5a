//! Watches against a 3-node cluster: one-shot data, exists and child watches with their event types and paths,
//! the guarantee that a client sees a watch event before it sees the change, persistent and
//! persistent-recursive watches (addWatch), checkWatches and removeWatches, and explicit pings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ensemble_tests::client::{catch_up, next_event, EPHEMERAL, PERSISTENT};
use ensemble_tests::raw::{err, op, watcher_type, Body, RawSession};
use ensemble_tests::{blocking, connect, connect_with, eventually, Cluster, Sections};
use futures_util::FutureExt as _;
use zookeeper_client::{AddWatchMode, EventType, WatchedEvent};

const SECTION_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watches_on_three_nodes() {
    let cluster = Arc::new(blocking(|| Cluster::start(3)));
    let cs = cluster.connect_string();
    connect(&cs).await.create("/t15", b"", PERSISTENT).await.unwrap();
    let mut s = Sections::new();
    s.run("one-shot watches: types and paths", SECTION_TIMEOUT, oneshot(cs.clone())).await;
    s.run("a watch event comes before the read that shows the change", SECTION_TIMEOUT, ordering(cluster.clone()))
        .await;
    s.run("persistent watch", SECTION_TIMEOUT, persistent(cs.clone())).await;
    s.run("persistent recursive watch", SECTION_TIMEOUT, recursive(cs.clone())).await;
    s.run("checkWatches, removeWatches, one event per watch", SECTION_TIMEOUT, check_remove(cluster.clone())).await;
    s.run("ping keeps a silent session alive; no ping expires it", SECTION_TIMEOUT, ping(cluster.clone())).await;
    s.finish();
}

fn is(event: &WatchedEvent, kind: EventType, path: &str) -> bool {
    event.event_type == kind && event.path == path
}

async fn fired(watcher: zookeeper_client::OneshotWatcher) -> WatchedEvent {
    tokio::time::timeout(Duration::from_secs(10), watcher.changed()).await.expect("a watch event within 10 s")
}

async fn oneshot(cs: String) {
    let w = connect(&cs).await;
    let other = connect(&cs).await;
    w.create("/t15/o", b"", PERSISTENT).await.unwrap();
    other.create("/t15/o/data", b"0", PERSISTENT).await.unwrap();
    w.sync("/t15/o").await.unwrap(); // the other client may have written through another server

    let (_, _, data) = w.get_and_watch_data("/t15/o/data").await.unwrap();
    let (stat, exists) = w.check_and_watch_stat("/t15/o/data").await.unwrap();
    assert!(stat.is_some());
    let (_, missing) = w.check_and_watch_stat("/t15/o/new").await.unwrap();
    let (children, _, child) = w.get_and_watch_children("/t15/o").await.unwrap();
    assert_eq!(children, ["data"]);

    other.set_data("/t15/o/data", b"1", None).await.unwrap();
    let e = fired(data).await;
    assert!(is(&e, EventType::NodeDataChanged, "/t15/o/data"), "{e:?}");
    let e = fired(exists).await;
    assert!(is(&e, EventType::NodeDataChanged, "/t15/o/data"), "{e:?}");
    other.create("/t15/o/new", b"", PERSISTENT).await.unwrap();
    let e = fired(missing).await;
    assert!(is(&e, EventType::NodeCreated, "/t15/o/new"), "{e:?}");
    let e = fired(child).await;
    assert!(is(&e, EventType::NodeChildrenChanged, "/t15/o"), "{e:?}");

    // Deletion fires data, exists and child watches on the node itself.
    let (_, _, data) = w.get_and_watch_data("/t15/o/new").await.unwrap();
    let (_, exists) = w.check_and_watch_stat("/t15/o/new").await.unwrap();
    let (_, _, own_children) = w.get_and_watch_children("/t15/o/new").await.unwrap();
    let (_, _, parent) = w.get_and_watch_children("/t15/o").await.unwrap();
    other.delete("/t15/o/new", None).await.unwrap();
    for watcher in [data, exists, own_children] {
        let e = fired(watcher).await;
        assert!(is(&e, EventType::NodeDeleted, "/t15/o/new"), "{e:?}");
    }
    let e = fired(parent).await;
    assert!(is(&e, EventType::NodeChildrenChanged, "/t15/o"), "{e:?}");

    // Data of an ephemeral whose session closes.
    let owner = connect(&cs).await;
    owner.create("/t15/o/eph", b"", EPHEMERAL).await.unwrap();
    w.sync("/t15/o/eph").await.unwrap();
    let (_, _, data) = w.get_and_watch_data("/t15/o/eph").await.unwrap();
    drop(owner);
    let e = fired(data).await;
    assert!(is(&e, EventType::NodeDeleted, "/t15/o/eph"), "{e:?}");
}

/// ZooKeeper's ordering guarantee: a client that watches a node sees the watch event before it sees the new
/// data. The watcher reads through a follower, the writer writes through the leader, so the follower applies
/// the change on its own time; the first read that shows it must find the event already delivered.
async fn ordering(cluster: Arc<Cluster>) {
    let leader = blocking(|| cluster.leader());
    let follower = blocking(|| cluster.followers())[0];
    let reader = connect(&cluster.client_addr(follower).to_string()).await;
    let writer = connect(&cluster.client_addr(leader).to_string()).await;
    writer.create("/t15/ord", b"0", PERSISTENT).await.unwrap();
    catch_up(&reader, &writer).await;
    for round in 1..=20 {
        let (_, stat, data_watch) = reader.get_and_watch_data("/t15/ord").await.unwrap();
        let (_, _, child_watch) = reader.get_and_watch_children("/t15/ord").await.unwrap();
        writer.set_data("/t15/ord", round.to_string().as_bytes(), Some(stat.version)).await.unwrap();
        writer.create(&format!("/t15/ord/c{round}"), b"", PERSISTENT).await.unwrap();
        let (mut data_watch, mut child_watch) = (Some(data_watch), Some(child_watch));
        let deadline = Instant::now() + Duration::from_secs(10);
        while data_watch.is_some() || child_watch.is_some() {
            assert!(Instant::now() < deadline, "round {round}: the reader does not see the change within 10 s");
            if let Some(watch) = data_watch.take() {
                let (data, _) = reader.get_data("/t15/ord").await.unwrap();
                if data == round.to_string().as_bytes() {
                    let e = watch.changed().now_or_never();
                    let e = e.unwrap_or_else(|| panic!("round {round}: new data read before its watch event"));
                    assert!(is(&e, EventType::NodeDataChanged, "/t15/ord"), "{e:?}");
                } else {
                    data_watch = Some(watch);
                }
            }
            if let Some(watch) = child_watch.take() {
                let children = reader.list_children("/t15/ord").await.unwrap();
                if children.contains(&format!("c{round}")) {
                    let e = watch.changed().now_or_never();
                    let e = e.unwrap_or_else(|| panic!("round {round}: new child listed before its watch event"));
                    assert!(is(&e, EventType::NodeChildrenChanged, "/t15/ord"), "{e:?}");
                } else {
                    child_watch = Some(watch);
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

async fn expect_events(watcher: &mut zookeeper_client::PersistentWatcher, expected: &[(EventType, &str)]) {
    for (i, (kind, path)) in expected.iter().enumerate() {
        let e = next_event(watcher).await;
        assert!(is(&e, *kind, path), "event {i}: expected {kind:?} {path}, got {e:?}");
    }
}

async fn persistent(cs: String) {
    let w = connect(&cs).await;
    let c = connect(&cs).await;
    w.create("/t15/p", b"", PERSISTENT).await.unwrap();
    let mut watch = w.watch("/t15/p/node", AddWatchMode::Persistent).await.unwrap();
    c.create("/t15/p/node", b"", PERSISTENT).await.unwrap();
    c.set_data("/t15/p/node", b"1", None).await.unwrap();
    c.set_data("/t15/p/node", b"2", None).await.unwrap();
    c.create("/t15/p/node/child", b"", PERSISTENT).await.unwrap();
    c.set_data("/t15/p/node/child", b"not watched", None).await.unwrap();
    c.create("/t15/p/node/child/grandchild", b"", PERSISTENT).await.unwrap();
    c.delete("/t15/p/node/child/grandchild", None).await.unwrap();
    c.delete("/t15/p/node/child", None).await.unwrap();
    c.create("/t15/p/sibling", b"", PERSISTENT).await.unwrap();
    c.delete("/t15/p/node", None).await.unwrap();
    c.create("/t15/p/node", b"", PERSISTENT).await.unwrap();
    let node = "/t15/p/node";
    expect_events(
        &mut watch,
        &[
            (EventType::NodeCreated, node),
            (EventType::NodeDataChanged, node),
            (EventType::NodeDataChanged, node),
            (EventType::NodeChildrenChanged, node),
            (EventType::NodeChildrenChanged, node),
            (EventType::NodeDeleted, node),
            (EventType::NodeCreated, node),
        ],
    )
    .await;
}

async fn recursive(cs: String) {
    let w = connect(&cs).await;
    let c = connect(&cs).await;
    w.create("/t15/r", b"", PERSISTENT).await.unwrap();
    let mut watch = w.watch("/t15/r/tree", AddWatchMode::PersistentRecursive).await.unwrap();
    c.create("/t15/r/tree", b"", PERSISTENT).await.unwrap();
    c.create("/t15/r/tree/a", b"", PERSISTENT).await.unwrap();
    c.set_data("/t15/r/tree/a", b"1", None).await.unwrap();
    c.create("/t15/r/tree/a/b", b"", PERSISTENT).await.unwrap();
    c.create("/t15/r/treeish", b"", PERSISTENT).await.unwrap(); // a sibling with the same prefix: not watched
    c.delete("/t15/r/tree/a/b", None).await.unwrap();
    c.delete("/t15/r/tree/a", None).await.unwrap();
    c.set_data("/t15/r/tree", b"end", None).await.unwrap();
    expect_events(
        &mut watch,
        &[
            (EventType::NodeCreated, "/t15/r/tree"),
            (EventType::NodeCreated, "/t15/r/tree/a"),
            (EventType::NodeDataChanged, "/t15/r/tree/a"),
            (EventType::NodeCreated, "/t15/r/tree/a/b"),
            (EventType::NodeDeleted, "/t15/r/tree/a/b"),
            (EventType::NodeDeleted, "/t15/r/tree/a"),
            (EventType::NodeDataChanged, "/t15/r/tree"),
        ],
    )
    .await;
}

async fn raw_request(session: &mut RawSession, code: i32, body: Body) -> i32 {
    session.request(code, body).await.unwrap_or_else(|e| panic!("op {code}: {e}")).err
}

async fn check_remove(cluster: Arc<Cluster>) {
    let addr = cluster.client_addr(blocking(|| cluster.followers())[0]);
    let writer = connect(&cluster.connect_string()).await;
    for path in ["/t15/cw", "/t15/cw/a", "/t15/cw/b"] {
        writer.create(path, b"", PERSISTENT).await.unwrap();
    }
    let mut raw = RawSession::connect(addr, 10_000).await.unwrap();
    let get = |path: &str, watch: bool| Body::new().string(path).boolean(watch);
    let check = |path: &str, kind: i32| Body::new().string(path).int(kind);
    // The writer may have written through another server: sync so that the raw session's node has the nodes.
    assert_eq!(raw_request(&mut raw, op::SYNC, Body::new().string("/t15/cw")).await, err::OK);
    assert_eq!(raw_request(&mut raw, op::CHECK_WATCHES, check("/t15/cw/a", watcher_type::DATA)).await, err::NO_WATCHER);
    assert_eq!(raw_request(&mut raw, op::GET_DATA, get("/t15/cw/a", true)).await, err::OK);
    assert_eq!(raw_request(&mut raw, op::GET_DATA, get("/t15/cw/b", true)).await, err::OK);
    assert_eq!(raw_request(&mut raw, op::GET_DATA, get("/t15/cw/a/missing", true)).await, err::NO_NODE);
    assert_eq!(raw_request(&mut raw, op::CHECK_WATCHES, check("/t15/cw/a", watcher_type::DATA)).await, err::OK);
    assert_eq!(raw_request(&mut raw, op::CHECK_WATCHES, check("/t15/cw/a", watcher_type::ANY)).await, err::OK);
    let children = watcher_type::CHILDREN;
    assert_eq!(raw_request(&mut raw, op::CHECK_WATCHES, check("/t15/cw/a", children)).await, err::NO_WATCHER);
    assert_eq!(raw_request(&mut raw, op::REMOVE_WATCHES, check("/t15/cw/a", watcher_type::DATA)).await, err::OK);
    assert_eq!(raw_request(&mut raw, op::CHECK_WATCHES, check("/t15/cw/a", watcher_type::DATA)).await, err::NO_WATCHER);
    assert_eq!(
        raw_request(&mut raw, op::REMOVE_WATCHES, check("/t15/cw/a", watcher_type::DATA)).await,
        err::NO_WATCHER
    );

    // /t15/cw/a lost its watch, /t15/cw/b kept its one. Each change twice: a one-shot watch fires once.
    for _ in 0..2 {
        writer.set_data("/t15/cw/a", b"x", None).await.unwrap();
        writer.set_data("/t15/cw/b", b"x", None).await.unwrap();
    }
    // Once the raw session's node shows a node created after the writes, it has applied them, so every event
    // they caused was sent before that reply.
    writer.create("/t15/cw/after", b"", PERSISTENT).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while raw_request(&mut raw, op::EXISTS, get("/t15/cw/after", false)).await != err::OK {
        assert!(Instant::now() < deadline, "the raw session's node never shows /t15/cw/after");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(raw.events, [(3, 3, "/t15/cw/b".to_string())], "events: (NodeDataChanged, SyncConnected, path)");
    assert_eq!(raw_request(&mut raw, op::CHECK_WATCHES, check("/t15/cw/b", watcher_type::DATA)).await, err::NO_WATCHER);

    // The Rust client's removal of its last watcher on a path.
    let c = connect(&cluster.connect_string()).await;
    let (_, _, watcher) = c.get_and_watch_data("/t15/cw/a").await.unwrap();
    watcher.remove().await.unwrap();
}

async fn ping(cluster: Arc<Cluster>) {
    let addr = cluster.client_addr(blocking(|| cluster.followers())[0]);
    let observer = connect(&cluster.client_addr(blocking(|| cluster.leader())).to_string()).await;
    // Negotiation: at least 2 ticks, at most maxSessionTimeout.
    let tick = i32::try_from(cluster.options().tick_ms).unwrap();
    let max = i32::try_from(cluster.options().max_session_timeout_ms).unwrap();
    assert_eq!(RawSession::connect(addr, 1).await.unwrap().timeout_ms, 2 * tick);
    assert_eq!(RawSession::connect(addr, 10_000_000).await.unwrap().timeout_ms, max);

    // The shortest session the harness's ZooKeeper timing allows.
    let mut raw = RawSession::connect(addr, 2 * tick).await.unwrap();
    let timeout = Duration::from_millis(u64::try_from(raw.timeout_ms).unwrap());
    assert_eq!(timeout, Duration::from_millis(2 * tick as u64));
    let create = Body::new().string("/t15/pinged").buffer(b"").open_acl().int(1);
    assert_eq!(raw_request(&mut raw, op::CREATE2, create).await, err::OK);
    eventually("the leader has the ephemeral", Duration::from_secs(5), || async {
        observer.check_stat("/t15/pinged").await.unwrap().map(|_| ())
    })
    .await;
    // Nothing but pings (through a follower), for three session timeouts.
    let start = Instant::now();
    while start.elapsed() < 3 * timeout {
        assert_eq!(raw_request(&mut raw, op::PING, Body::new()).await, err::OK);
        let alive = observer.check_stat("/t15/pinged").await.unwrap().is_some();
        assert!(alive, "a session that pings lost its ephemeral {:?} into its pings", start.elapsed());
        tokio::time::sleep(timeout / 4).await;
    }
    // Silence with the connection open: the session expires and the server closes the connection.
    let silent = Instant::now();
    eventually("the silent session's ephemeral is gone", Duration::from_secs(20), || async {
        observer.check_stat("/t15/pinged").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(silent.elapsed() >= timeout / 2, "expired {:?} after the last ping", silent.elapsed());
    assert!(raw.closed_by_server().await, "the server keeps the connection of an expired session open");
    // And the Rust client pings by itself through idle periods longer than its session timeout (the shortest
    // one again).
    let shortest = Duration::from_millis(2 * tick as u64);
    let idle = connect_with(&cluster.connect_string(), shortest).await;
    assert_eq!(idle.session_timeout(), shortest);
    idle.create("/t15/idle", b"", EPHEMERAL).await.unwrap();
    let mut states = idle.state_watcher();
    let changed = tokio::time::timeout(3 * idle.session_timeout(), states.changed()).await;
    assert!(changed.is_err(), "an idle session changed state: {changed:?}");
    assert!(observer.check_stat("/t15/idle").await.unwrap().is_some());
    idle.set_data("/t15/idle", b"still here", None).await.unwrap();
}
