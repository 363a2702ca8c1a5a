//! ZooKeeper's quotas in the tree: the stats nodes follow every create, delete, setData, multi and session
//! close under a quota (the deepest one), in place and outside the digest; a recount (what loading a snapshot
//! does) always agrees with them, a fuzzy snapshot included; and the leader's hard-limit check.

mod common;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use tree::code::Code;
use tree::prep::Request;
use tree::quota::{limit_path, stat_path, StatsTrack};
use tree::tree::{same_contents, DataTree};

const PERSISTENT: i32 = 0;
const EPHEMERAL: i32 = 1;

/// What zkCli's `setquota` sends for `path` (its quota directories, then the limits node, then the stats node
/// with `count=0,bytes=0`, which the server recounts), `limits` being the limits node's data.
fn set_quota(h: &mut Harness, path: &str, limits: &str) {
    let mut dir = "/zookeeper/quota".to_owned();
    for segment in path.split('/').skip(1) {
        dir = format!("{dir}/{segment}");
        let _ = h.write(&caller(0), &create(&dir, "", PERSISTENT));
    }
    assert_eq!(h.write(&caller(0), &create(&limit_path(path), limits, PERSISTENT)).code(), Code::Ok);
    assert_eq!(h.write(&caller(0), &create(&stat_path(path), "count=0,bytes=0", PERSISTENT)).code(), Code::Ok);
}

fn stats_text(tree: &DataTree, path: &str) -> String {
    String::from_utf8(tree.get(&stat_path(path)).expect("a stats node").bytes().to_vec()).unwrap()
}

fn stats(tree: &DataTree, path: &str) -> (i64, i64) {
    let s = StatsTrack::parse(tree.get(&stat_path(path)).expect("a stats node").bytes()).unwrap();
    (s.count(), s.bytes())
}

/// A copy of the tree recounted as after loading a snapshot of it.
fn recounted(tree: &DataTree) -> DataTree {
    let mut copy = tree.clone();
    copy.setup_quotas();
    copy
}

#[test]
fn stats_follow_creates_sets_deletes_and_multi() {
    let mut h = Harness::new();
    h.write(&caller(0), &create("/a", "12345", PERSISTENT));
    h.write(&caller(0), &create("/a/x", "1", PERSISTENT));
    h.write(&caller(0), &create("/ab", "not under /a", PERSISTENT));
    set_quota(&mut h, "/a", "count=-1,bytes=-1=;byteHardLimit=-1;countHardLimit=10");
    assert_eq!(stats_text(&h.tree, "/a"), "count=2,bytes=6", "the stats node is recounted when created");
    assert_eq!(h.tree.quota_roots().collect::<Vec<_>>(), ["/a"]);
    let stat_before = h.tree.get(&stat_path("/a")).unwrap().stat;
    let digest_before = h.tree.digest();

    h.write(&caller(0), &create("/a/y", "abc", PERSISTENT));
    assert_eq!(stats(&h.tree, "/a"), (3, 9));
    h.write(&caller(0), &set("/a/y", "abcdefgh", -1));
    assert_eq!(stats(&h.tree, "/a"), (3, 14));
    h.write(&caller(0), &set("/a", "", -1));
    assert_eq!(stats(&h.tree, "/a"), (3, 9));
    h.write(&caller(0), &create("/ab/z", "zz", PERSISTENT));
    assert_eq!(stats(&h.tree, "/a"), (3, 9), "/ab is not under /a");
    let multi = Request::Multi(vec![create("/a/m", "mm", PERSISTENT), delete("/a/x", -1), set("/a/y", "", -1)]);
    assert_eq!(h.write(&caller(0), &multi).code(), Code::Ok);
    assert_eq!(stats(&h.tree, "/a"), (3, 2));
    let failed = Request::Multi(vec![create("/a/n", "nn", PERSISTENT), delete("/a/missing", -1)]);
    assert_eq!(h.write(&caller(0), &failed).code(), Code::NoNode);
    assert_eq!(stats(&h.tree, "/a"), (3, 2), "a failed multi changes nothing");
    h.write(&caller(0), &delete("/a/m", -1));
    assert_eq!(stats(&h.tree, "/a"), (2, 0));

    // Updated in place, as ZooKeeper does: the stats node's stat does not move, and the digest (which validate
    // recomputes from every node) holds nothing of it, the stats node being under `/zookeeper/`.
    assert_eq!(h.tree.get(&stat_path("/a")).unwrap().stat, stat_before);
    h.tree.validate().unwrap();
    assert_ne!(h.tree.digest(), digest_before, "the nodes under /a are in it");
    assert!(same_contents(&recounted(&h.tree), &h.tree), "a recount gives the same stats");

    // delquota: the stats stop following once the limits node is gone.
    h.write(&caller(0), &delete(&stat_path("/a"), -1));
    h.write(&caller(0), &delete(&limit_path("/a"), -1));
    assert_eq!(h.tree.quota_roots().count(), 0);
    h.write(&caller(0), &create("/a/after", "x", PERSISTENT));
    assert!(same_contents(&recounted(&h.tree), &h.tree));
}

#[test]
fn a_closed_session_takes_its_ephemerals_out_of_the_stats() {
    let mut h = Harness::new();
    h.write(&caller(0), &create("/a", "", PERSISTENT));
    set_quota(&mut h, "/a", "count=5,bytes=-1");
    let session = 0x77;
    h.write(&caller(session), &Request::CreateSession { timeout: 10_000 });
    h.write(&caller(session), &create("/a/e1", "e1", EPHEMERAL));
    h.write(&caller(session), &create("/a/e2", "e2-", EPHEMERAL));
    assert_eq!(stats(&h.tree, "/a"), (3, 5));
    h.write(&caller(session), &Request::CloseSession);
    assert_eq!(stats(&h.tree, "/a"), (1, 0));
}

#[test]
fn nested_quotas_count_each_node_for_the_deepest_one() {
    let mut h = Harness::new();
    for p in ["/a", "/a/b", "/a/b/c", "/a/d"] {
        h.write(&caller(0), &create(p, "xx", PERSISTENT));
    }
    set_quota(&mut h, "/a", "count=100,bytes=-1");
    assert_eq!(stats(&h.tree, "/a"), (4, 8));
    // zkCli refuses a quota inside another; a client can still make one.
    set_quota(&mut h, "/a/b", "count=100,bytes=-1");
    assert_eq!(stats(&h.tree, "/a/b"), (2, 4));
    assert_eq!(stats(&h.tree, "/a"), (2, 4), "/a/b's subtree now counts for /a/b only");
    assert_eq!(h.tree.max_quota_prefix("/a/b/c/deep"), Some("/a/b"));
    assert_eq!(h.tree.max_quota_prefix("/a/bc"), Some("/a"));
    assert_eq!(h.tree.max_quota_prefix("/other"), None);

    h.write(&caller(0), &create("/a/b/c/e", "eee", PERSISTENT));
    assert_eq!((stats(&h.tree, "/a/b"), stats(&h.tree, "/a")), ((3, 7), (2, 4)));
    h.write(&caller(0), &create("/a/f", "f", PERSISTENT));
    assert_eq!((stats(&h.tree, "/a/b"), stats(&h.tree, "/a")), ((3, 7), (3, 5)));
    assert!(same_contents(&recounted(&h.tree), &h.tree), "a recount agrees with the incremental stats");

    // Removing the inner quota gives its subtree back to the outer one.
    h.write(&caller(0), &delete(&limit_path("/a/b"), -1));
    assert_eq!(stats(&h.tree, "/a"), (6, 12));
    assert!(same_contents(&recounted(&h.tree), &h.tree));
}

#[test]
fn the_hard_limits_are_enforced_at_prep_and_only_when_asked() {
    let mut h = Harness::new();
    h.write(&caller(0), &create("/q", "", PERSISTENT));
    set_quota(&mut h, "/q", "count=-1,bytes=-1=;byteHardLimit=10;countHardLimit=3");
    h.write(&caller(0), &create("/q/1", "", PERSISTENT));
    // Not enforced: past the hard limit is fine, as with ZooKeeper's default.
    h.write(&caller(0), &create("/q/2", "", PERSISTENT));
    h.write(&caller(0), &create("/q/3", "", PERSISTENT));
    assert_eq!(stats(&h.tree, "/q"), (4, 0));
    h.write(&caller(0), &delete("/q/3", -1));
    h.write(&caller(0), &delete("/q/2", -1));

    h.options.enforce_quota = true;
    assert_eq!(h.write(&caller(0), &create("/q/2", "0123456789", PERSISTENT)).code(), Code::Ok);
    assert_eq!(h.write(&caller(0), &create("/q/3", "", PERSISTENT)).code(), Code::QuotaExceeded, "count 4 > 3");
    assert_eq!(h.write(&caller(0), &set("/q/1", "x", -1)).code(), Code::QuotaExceeded, "11 bytes > 10");
    // ZooKeeper checks the quota before the version.
    assert_eq!(h.write(&caller(0), &set("/q/1", "x", 7)).code(), Code::QuotaExceeded);
    assert_eq!(h.write(&caller(0), &set("/q/2", "9876543210", -1)).code(), Code::Ok, "same size");
    assert_eq!(h.write(&caller(0), &set("/q/2", "short", -1)).code(), Code::Ok, "smaller");
    assert_eq!(h.write(&caller(0), &set("/q/1", "12345", -1)).code(), Code::Ok, "exactly 10");
    assert_eq!(h.write(&caller(0), &create("/elsewhere", "any", PERSISTENT)).code(), Code::Ok);
    let multi = Request::Multi(vec![delete("/q/1", -1), create("/q/3", "", PERSISTENT)]);
    assert_eq!(
        h.write(&caller(0), &multi).multi.iter().map(|a| a.code()).collect::<Vec<_>>(),
        [Code::Ok, Code::QuotaExceeded],
        "each op of a multi is checked against the tree without the ops before it, as in ZooKeeper"
    );
    assert_eq!(stats(&h.tree, "/q"), (3, 10));
    assert_eq!(h.write(&caller(0), &delete("/q/1", -1)).code(), Code::Ok, "deletes are never refused");
    assert_eq!(h.write(&caller(0), &create("/q/3", "", PERSISTENT)).code(), Code::Ok);

    // Soft limits only log.
    h.write(&caller(0), &set(&limit_path("/q"), "count=1,bytes=1", -1));
    assert_eq!(h.write(&caller(0), &create("/q/4", "more", PERSISTENT)).code(), Code::Ok);

    // A hostile client's limits data fails the op as ZooKeeper's prep does, and nothing panics.
    h.write(&caller(0), &set(&limit_path("/q"), "count=lots", -1));
    assert_eq!(h.write(&caller(0), &create("/q/5", "", PERSISTENT)).code(), Code::MarshallingError);
    assert_eq!(h.write(&caller(0), &delete("/q/4", -1)).code(), Code::Ok);
}

#[test]
fn hostile_quota_nodes_change_nothing_else() {
    let mut h = Harness::new();
    h.options.enforce_quota = true;
    h.write(&caller(0), &create("/a", "", PERSISTENT));
    set_quota(&mut h, "/a", "countHardLimit=10");
    // Garbage in the stats node: left alone by the updates (ZooKeeper throws there).
    h.write(&caller(0), &set(&stat_path("/a"), "count=,", -1));
    assert_eq!(h.write(&caller(0), &create("/a/x", "", PERSISTENT)).code(), Code::MarshallingError);
    h.options.enforce_quota = false;
    assert_eq!(h.write(&caller(0), &create("/a/x", "", PERSISTENT)).code(), Code::Ok);
    assert_eq!(stats_text(&h.tree, "/a"), "count=,");
    // Other keys in the stats node are kept, in ZooKeeper's order.
    h.write(&caller(0), &set(&stat_path("/a"), "zz=1,count=2,bytes=0,aa=2", -1));
    h.write(&caller(0), &create("/a/y", "y", PERSISTENT));
    assert_eq!(stats_text(&h.tree, "/a"), "count=3,bytes=1=;aa=2;zz=1");
    // A limits node right under /zookeeper/quota, or a stats node for a missing path, quota nothing.
    for p in ["/zookeeper/quota/zookeeper_limits", "/zookeeper/quota/zookeeper_stats"] {
        assert_eq!(h.write(&caller(0), &create(p, "count=1", PERSISTENT)).code(), Code::Ok);
    }
    h.write(&caller(0), &create("/zookeeper/quota/gone", "", PERSISTENT));
    h.write(&caller(0), &create(&stat_path("/gone"), "", PERSISTENT));
    assert_eq!(stats_text(&h.tree, "/gone"), "count=0,bytes=0");
    assert_eq!(h.tree.quota_roots().collect::<Vec<_>>(), ["/a"]);
    h.tree.validate().unwrap();
}

#[derive(Clone, Debug)]
enum Op {
    Create { path: &'static str, data: String, ephemeral: bool },
    Delete(&'static str),
    Set { path: &'static str, data: String },
    SetQuota { root: &'static str, hard_count: i64 },
    DelQuota(&'static str),
    Multi(Vec<Op>),
    CloseSession,
}

const PATHS: [&str; 8] = ["/n0", "/n0/a", "/n0/a/b", "/n1", "/n1/m0", "/n1/m0/k", "/n1/m1", "/n10"];
/// Quota roots; `/n1/m0` nests under `/n1`.
const ROOTS: [&str; 3] = ["/n0", "/n1", "/n1/m0"];

fn simple_op() -> impl Strategy<Value = Op> {
    let path = proptest::sample::select(PATHS.to_vec());
    let root = proptest::sample::select(ROOTS.to_vec());
    prop_oneof![
        4 => (path.clone(), "[a-z]{0,4}", any::<bool>()).prop_map(|(path, data, ephemeral)| Op::Create { path, data, ephemeral }),
        2 => path.clone().prop_map(Op::Delete),
        2 => (path, "[a-z]{0,6}").prop_map(|(path, data)| Op::Set { path, data }),
        1 => (root.clone(), 1..6i64).prop_map(|(root, hard_count)| Op::SetQuota { root, hard_count }),
        1 => root.prop_map(Op::DelQuota),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => simple_op(),
        1 => Just(Op::CloseSession),
        2 => proptest::collection::vec(simple_op(), 1..4).prop_map(Op::Multi),
    ]
}

/// The session ephemerals belong to.
const SESSION: i64 = 0x51;

fn requests(op: &Op) -> Vec<Request> {
    match op {
        Op::Create { path, data, ephemeral } => {
            vec![create(path, data, if *ephemeral { EPHEMERAL } else { PERSISTENT })]
        }
        Op::Delete(path) => vec![delete(path, -1)],
        Op::Set { path, data } => vec![set(path, data, -1)],
        Op::SetQuota { root, hard_count } => vec![
            create(&limit_path(root), &format!("count=-1,bytes=-1=;countHardLimit={hard_count}"), PERSISTENT),
            create(&stat_path(root), "count=0,bytes=0", PERSISTENT),
        ],
        Op::DelQuota(root) => vec![delete(&stat_path(root), -1), delete(&limit_path(root), -1)],
        Op::Multi(ops) => vec![Request::Multi(ops.iter().flat_map(requests).collect())],
        Op::CloseSession => vec![Request::CloseSession, Request::CreateSession { timeout: 10_000 }],
    }
}

fn harness(enforce: bool) -> Harness {
    let mut h = Harness::new();
    h.options.enforce_quota = enforce;
    for dir in ["/zookeeper/quota/n0", "/zookeeper/quota/n1", "/zookeeper/quota/n1/m0"] {
        h.write(&caller(0), &create(dir, "", PERSISTENT));
    }
    h.write(&caller(SESSION), &Request::CreateSession { timeout: 10_000 });
    h
}

fn run(h: &mut Harness, op: &Op) {
    for request in requests(op) {
        h.write(&caller(SESSION), &request);
    }
}

/// Every quota's stats are what a recount of the tree gives.
fn check_stats(tree: &DataTree) -> Result<(), TestCaseError> {
    for root in tree.quota_roots() {
        prop_assert_eq!(stats(tree, root), tree.quota_usage(root), "stats of {}", root);
    }
    prop_assert!(same_contents(&recounted(tree), tree), "a recount changes the tree");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// After every op, the incremental stats are what a recount gives (and so what a restarted server shows).
    #[test]
    fn the_stats_always_equal_a_recount(ops in proptest::collection::vec(op(), 1..40), enforce in any::<bool>()) {
        let mut h = harness(enforce);
        for op in &ops {
            run(&mut h, op);
            check_stats(&h.tree)?;
        }
    }

    /// A fuzzy snapshot (nodes copied a few at a time while ops go on), loaded and recounted, then the log
    /// replayed from where the copy began, gives the live tree, stats included.
    #[test]
    fn fuzzy_snapshot_recount_and_replay_give_the_live_stats(
        before in proptest::collection::vec(op(), 0..30),
        during in proptest::collection::vec(op(), 0..30),
        after in proptest::collection::vec(op(), 0..10),
        chunk in 1usize..5,
        enforce in any::<bool>(),
    ) {
        let mut h = harness(enforce);
        before.iter().for_each(|op| run(&mut h, op));
        let start = h.zxid;
        let mut during = during.iter();
        let mut copy = h.fuzzy_copy(chunk, |h| during.next().map(|op| run(h, op)).is_some());
        copy.setup_quotas();
        during.for_each(|op| run(&mut h, op));
        after.iter().for_each(|op| run(&mut h, op));
        h.replay_onto(&mut copy, start).map_err(TestCaseError::fail)?;
        check_stats(&copy)?;
    }
}

fn create_raw(path: &str, data: Option<Bytes>) -> Request {
    Request::Create {
        op: tree::code::op::CREATE,
        path: path.into(),
        data,
        acl: tree::acl::open_acl_unsafe(),
        flags: 0,
        ttl: -1,
    }
}

#[test]
fn data_bytes_not_text_are_counted_and_null_data_counts_zero() {
    let mut h = Harness::new();
    h.write(&caller(0), &create("/b", "", PERSISTENT));
    set_quota(&mut h, "/b", "bytes=100");
    h.write(&caller(0), &create_raw("/b/bin", Some(Bytes::from_static(&[0xff, 0, 0xfe]))));
    assert_eq!(stats(&h.tree, "/b"), (2, 3));
    h.write(&caller(0), &create_raw("/b/null", None));
    assert_eq!(stats(&h.tree, "/b"), (3, 3));
    h.write(&caller(0), &Request::SetData { path: "/b/bin".into(), data: None, version: -1 });
    assert_eq!(stats(&h.tree, "/b"), (3, 0));
    h.options.enforce_quota = true;
    h.write(&caller(0), &set(&limit_path("/b"), "byteHardLimit=0", -1));
    assert_eq!(h.write(&caller(0), &create_raw("/b/null2", None)).code(), Code::Ok, "0 bytes more is no more");
    // A stats node set to null reads as no keys, as empty data does (ZooKeeper throws on it).
    h.write(&caller(0), &Request::SetData { path: stat_path("/b"), data: None, version: -1 });
    h.options.enforce_quota = false;
    h.write(&caller(0), &create_raw("/b/after", None));
    assert_eq!(stats_text(&h.tree, "/b"), "count=0,bytes=-1");
    assert_eq!(stats(&recounted(&h.tree), "/b"), (5, 0), "a recount repairs it");
}
