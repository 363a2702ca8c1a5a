//! ZooKeeper's semantics, op by op: what a client sees back and what the tree holds afterwards.

mod common;

use bytes::Bytes;
use common::*;
use tree::acl::{perms, Acl, Id};
use tree::code::{op, Code};
use tree::prep::{Caller, Request};
use tree::stat::OwnerKind;
use tree::txn::{Txn, TxnHeader};

const PERSISTENT: i32 = 0;
const EPHEMERAL: i32 = 1;
const SEQUENTIAL: i32 = 2;
const EPHEMERAL_SEQUENTIAL: i32 = 3;
const CONTAINER: i32 = 4;

#[test]
fn a_fresh_tree_looks_like_zookeepers() {
    let h = Harness::new();
    for p in ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"] {
        assert!(h.tree.get(p).is_some(), "{p}");
    }
    assert_eq!(h.tree.get("/").unwrap().client_stat().cversion, -1);
    assert_eq!(h.tree.get("/zookeeper").unwrap().client_stat().cversion, -2);
    assert_eq!(h.tree.get("/zookeeper/config").unwrap().stat.aversion, -1);
}

#[test]
fn create_returns_path_and_stat_and_updates_the_parent() {
    let mut h = Harness::new();
    let applied = h.write(&caller(0), &create("/app", "v", PERSISTENT));
    assert_eq!(applied.code(), Code::Ok);
    assert_eq!(applied.path.as_deref(), Some("/app"));
    let stat = applied.stat.unwrap();
    assert_eq!((stat.czxid, stat.mzxid, stat.pzxid, stat.version, stat.data_length), (h.zxid, h.zxid, h.zxid, 0, 1));
    let root = h.tree.get("/").unwrap();
    assert_eq!((root.stat.cversion, root.stat.pzxid), (1, h.zxid));
    assert_eq!(h.write(&caller(0), &create("/app", "v", PERSISTENT)).code(), Code::NodeExists);
    assert_eq!(h.write(&caller(0), &create("/nope/child", "", PERSISTENT)).code(), Code::NoNode);
}

#[test]
fn sequential_names_come_from_the_parent_cversion() {
    let mut h = Harness::new();
    h.write(&caller(0), &create("/q", "", PERSISTENT));
    let first = h.write(&caller(0), &create("/q/item-", "", SEQUENTIAL)).path.unwrap();
    let second = h.write(&caller(0), &create("/q/item-", "", SEQUENTIAL)).path.unwrap();
    assert_eq!((first.as_str(), second.as_str()), ("/q/item-0000000000", "/q/item-0000000001"));
    h.write(&caller(0), &delete(&first, -1));
    // Deleting does not reuse numbers: the persisted cversion counts creations.
    let third = h.write(&caller(0), &create("/q/", "", SEQUENTIAL)).path.unwrap();
    assert_eq!(third, "/q/0000000002");
    assert_eq!(h.tree.get("/q").unwrap().client_stat().cversion, 4, "3 creations + 1 deletion");
}

#[test]
fn versions_are_checked_and_minus_one_matches_any() {
    let mut h = Harness::new();
    h.write(&caller(0), &create("/v", "0", PERSISTENT));
    assert_eq!(h.write(&caller(0), &set("/v", "1", 0)).stat.unwrap().version, 1);
    assert_eq!(h.write(&caller(0), &set("/v", "x", 0)).code(), Code::BadVersion);
    assert_eq!(h.write(&caller(0), &set("/v", "2", -1)).stat.unwrap().version, 2);
    assert_eq!(h.tree.get("/v").unwrap().bytes(), b"2");
    assert_eq!(h.write(&caller(0), &Request::Check { path: "/v".into(), version: 1 }).code(), Code::BadVersion);
    assert_eq!(h.write(&caller(0), &Request::Check { path: "/v".into(), version: 2 }).code(), Code::Ok);
    assert_eq!(h.write(&caller(0), &delete("/v", 1)).code(), Code::BadVersion);
    assert_eq!(h.write(&caller(0), &delete("/v", 2)).code(), Code::Ok);
    assert!(h.tree.get("/v").is_none());
}

#[test]
fn a_failed_write_is_an_error_txn_that_changes_nothing_but_takes_a_zxid() {
    let mut h = Harness::new();
    let digest = h.tree.digest();
    let before = h.zxid;
    assert_eq!(h.write(&caller(0), &set("/missing", "x", -1)).code(), Code::NoNode);
    assert_eq!(h.log.last().unwrap().header.op, op::ERROR);
    assert_eq!(h.zxid, before + 1);
    assert_eq!(h.tree.digest(), digest);
}

#[test]
fn deletes_refuse_children_and_special_nodes() {
    let mut h = Harness::new();
    h.write(&caller(0), &create("/a", "", PERSISTENT));
    h.write(&caller(0), &create("/a/b", "", PERSISTENT));
    assert_eq!(h.write(&caller(0), &delete("/a", -1)).code(), Code::NotEmpty);
    for special in ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"] {
        assert_eq!(h.write(&caller(0), &delete(special, -1)).code(), Code::BadArguments, "{special}");
    }
    assert_eq!(h.write(&caller(0), &delete("/a/missing", -1)).code(), Code::NoNode);
}

#[test]
fn invalid_paths_are_bad_arguments() {
    let mut h = Harness::new();
    h.write(&caller(0), &create("/a", "", PERSISTENT));
    for p in ["/a/", "//a", "/a/..", "/.", "relative", "/a\u{1}", "/a/\u{1F600}"] {
        assert_eq!(h.write(&caller(0), &create(p, "", PERSISTENT)).code(), Code::BadArguments, "{p:?}");
    }
    // As in ZooKeeper, the parent is looked up before the full path is validated.
    assert_eq!(h.write(&caller(0), &create("/b/", "", PERSISTENT)).code(), Code::NoNode);
    assert_eq!(h.write(&caller(0), &set("/a/", "", -1)).code(), Code::BadArguments);
}

#[test]
fn ephemerals_belong_to_their_session_and_go_with_it() {
    let mut h = Harness::new();
    let (s1, s2) = (0x100, 0x200);
    h.write(&caller(s1), &Request::CreateSession { timeout: 10_000 });
    h.write(&caller(s2), &Request::CreateSession { timeout: 10_000 });
    let e = h.write(&caller(s1), &create("/e", "", EPHEMERAL));
    assert_eq!(e.stat.unwrap().ephemeral_owner, s1);
    let seq = h.write(&caller(s1), &create("/s-", "", EPHEMERAL_SEQUENTIAL)).path.unwrap();
    h.write(&caller(s2), &create("/other", "", EPHEMERAL));
    assert_eq!(h.write(&caller(s1), &create("/e/child", "", PERSISTENT)).code(), Code::NoChildrenForEphemerals);
    let mut mine: Vec<&str> = h.tree.ephemerals(s1).collect();
    mine.sort();
    assert_eq!(mine, vec!["/e", seq.as_str()]);
    h.write(&caller(s1), &Request::CloseSession);
    assert!(h.tree.get("/e").is_none() && h.tree.get(&seq).is_none());
    assert!(h.tree.get("/other").is_some());
    assert!(!h.tree.sessions().contains_key(&s1) && h.tree.sessions().contains_key(&s2));
}

#[test]
fn an_expired_session_writes_nothing_but_its_close() {
    let mut h = Harness::new();
    let s = 0x100;
    h.write(&caller(s), &Request::CreateSession { timeout: 10_000 });
    h.write(&caller(0), &create("/x", "0", PERSISTENT));
    let digest = h.tree.digest();
    let gone = Caller { expired: true, ..caller(s) };
    for request in [
        create("/x/e", "", EPHEMERAL),
        create("/x/p", "", PERSISTENT),
        set("/x", "1", -1),
        delete("/x", -1),
        Request::SetAcl { path: "/x".into(), acl: tree::acl::open_acl_unsafe(), version: -1 },
        Request::Check { path: "/x".into(), version: -1 },
    ] {
        assert_eq!(h.write(&gone, &request).code(), Code::SessionExpired, "{request:?}");
    }
    // ZooKeeper checks the session per op of a multi: the first fails so, the rest with RUNTIMEINCONSISTENCY.
    let multi = h.write(&gone, &Request::Multi(vec![create("/x/m", "", PERSISTENT), set("/x", "2", -1)]));
    let codes: Vec<Code> = multi.multi.iter().map(|r| r.code()).collect();
    assert_eq!(codes, vec![Code::SessionExpired, Code::RuntimeInconsistency]);
    // A create's mode and TTL are checked first, as in ZooKeeper.
    assert_eq!(h.write(&gone, &create("/x/bad", "", 99)).code(), Code::BadArguments);
    assert_eq!(h.tree.digest(), digest, "nothing changed");
    // Its close still applies (an expiry and the client's own close can both be on their way).
    h.write(&caller(s), &create("/x/mine", "", EPHEMERAL));
    assert_eq!(h.write(&gone, &Request::CloseSession).code(), Code::Ok);
    assert!(h.tree.get("/x/mine").is_none() && !h.tree.sessions().contains_key(&s));
}

#[test]
fn a_close_that_names_no_ephemerals_deletes_them_all_reports_them_and_is_marked_unlisted() {
    let mut h = Harness::new();
    let (s1, s2) = (0x100, 0x200);
    h.write(&caller(s1), &Request::CreateSession { timeout: 10_000 });
    h.write(&caller(s2), &Request::CreateSession { timeout: 10_000 });
    h.write(&caller(0), &create("/p", "", PERSISTENT));
    for i in 0..50 {
        h.write(&caller(s1), &create(&format!("/p/e{i:02}"), "", EPHEMERAL));
    }
    h.write(&caller(s2), &create("/p/other", "", EPHEMERAL));
    let listed = h.write(&caller(s2), &Request::CloseSession);
    assert_eq!(listed.deleted, vec!["/p/other".to_owned()]);
    assert_eq!(h.tree.last_unlisted_close(), 0, "a close that lists its ephemerals is replayable anywhere");
    // What the leader proposes for a session with too many ephemerals to list: the same txn, empty.
    h.zxid += 1;
    let header = TxnHeader { client_id: s1, cxid: 0, zxid: h.zxid, time: 1, op: op::CLOSE_SESSION };
    let applied = h.tree.apply(&header, &Txn::CloseSession { paths: Vec::new() });
    h.tree.validate().unwrap();
    let mut expected: Vec<String> = (0..50).map(|i| format!("/p/e{i:02}")).collect();
    expected.sort();
    assert_eq!(applied.deleted, expected, "every ephemeral of the session, in path order");
    assert_eq!(h.tree.get("/p").unwrap().children.len(), 0);
    assert_eq!(h.tree.ephemeral_count(), 0);
    assert!(!h.tree.sessions().contains_key(&s1));
    assert_eq!(h.tree.last_unlisted_close(), h.zxid);
}

/// A close deletes runs of siblings with one search for their parent and takes the session's index out
/// whole; whatever its list says, it must end as deleting each listed path one by one, then each ephemeral the
/// session still owns, would (what it did before). Lists a leader never makes stand in for a replay over a
/// fuzzy snapshot, where a listed path may be gone, another session's, or a node with children.
#[test]
fn a_close_ends_as_deleting_its_list_then_the_sessions_leftovers_one_by_one() {
    let lists: [&[&str]; 8] = [
        &["/p/a", "/p/b", "/p/c", "/q/e", "/r/k/e"],
        &["/p/a"],
        &[],
        &["/p/b", "/q/e", "/r/k/e", "/p/a", "/p/c"],
        &["/", "/p/zz", "/p/a", "/p/a", "/q/other", "/r", "/p/b"],
        // A node with children that is not the session's, whose subtree holds one of the session's.
        &["/r"],
        &["/r/k", "/q/e", "/p/c"],
        // Not a path at all: "a" takes /a off the root's list, and /a can then no longer be deleted.
        &["a"],
    ];
    for list in lists {
        let mut h = Harness::new();
        let (s1, s2) = (0x100, 0x200);
        h.write(&caller(s1), &Request::CreateSession { timeout: 10_000 });
        h.write(&caller(s2), &Request::CreateSession { timeout: 10_000 });
        for parent in ["/p", "/q", "/r", "/r/k"] {
            h.write(&caller(0), &create(parent, "x", PERSISTENT));
        }
        for path in ["/p/a", "/p/b", "/p/c", "/q/e", "/r/k/e", "/a"] {
            h.write(&caller(s1), &create(path, "data", EPHEMERAL));
        }
        h.write(&caller(s2), &create("/q/other", "", EPHEMERAL));
        h.zxid += 1;
        let header = TxnHeader { client_id: s1, cxid: 0, zxid: h.zxid, time: 1, op: op::CLOSE_SESSION };
        let paths: Vec<String> = list.iter().map(|p| p.to_string()).collect();

        // The oracle: each listed path deleted alone, then what the session still owns, in path order.
        let mut oracle = h.tree.clone();
        let delete = |tree: &mut tree::tree::DataTree, path: &str| {
            tree.apply(&TxnHeader { op: op::DELETE, ..header }, &Txn::Delete { path: path.into() })
        };
        let mut expected: Vec<String> =
            paths.iter().filter(|p| delete(&mut oracle, p).err.is_none()).cloned().collect();
        let leftovers: Vec<String> = oracle.ephemerals(s1).map(str::to_owned).collect();
        for path in &leftovers {
            delete(&mut oracle, path);
        }
        expected.extend(leftovers.iter().cloned());
        let index = |t: &tree::tree::DataTree| t.ephemerals(s1).map(str::to_owned).collect::<Vec<_>>();
        let expected_index = index(&oracle);
        // (Only for the session table: with nothing left to delete, as in every case but "a".)
        oracle.apply(&header, &Txn::CloseSession { paths: Vec::new() });

        let applied = h.tree.apply(&header, &Txn::CloseSession { paths: paths.clone() });
        if list.iter().all(|p| p.starts_with('/')) {
            h.tree.validate().unwrap_or_else(|e| panic!("after closing with {list:?}: {e}"));
            assert_eq!(h.tree.ephemerals(s1).count(), 0);
        }
        assert_eq!(applied.deleted, expected, "closing with {list:?}");
        assert!(tree::tree::same_contents(&h.tree, &oracle), "closing with {list:?}");
        assert_eq!(h.tree.digest(), oracle.digest(), "closing with {list:?}");
        assert_eq!(index(&h.tree), expected_index, "closing with {list:?}: the session's index");
        assert_eq!(h.tree.last_unlisted_close() == h.zxid, !leftovers.is_empty(), "closing with {list:?}");
    }
}

/// A replay can meet what no leader makes: an ephemeral with a child (applied here past prep, which refuses
/// it). A close that finds both must end as one-by-one deletes do: the child goes with its parent, and out of
/// the session's index with it.
#[test]
fn a_close_whose_leftover_has_a_child_leaves_the_index_as_one_by_one_deletes_do() {
    let mut h = Harness::new();
    let s = 0x100;
    h.write(&caller(s), &Request::CreateSession { timeout: 10_000 });
    h.write(&caller(0), &create("/p", "", PERSISTENT));
    h.write(&caller(s), &create("/p/x", "", EPHEMERAL));
    h.zxid += 1;
    let child = Txn::Create {
        path: "/p/x/y".into(),
        data: Some(Bytes::new()),
        acl: tree::acl::open_acl_unsafe(),
        ephemeral: true,
        parent_cversion: -1,
    };
    let header = TxnHeader { client_id: s, cxid: 0, zxid: h.zxid, time: 1, op: op::CREATE };
    assert_eq!(h.tree.apply(&header, &child).err, None);
    h.zxid += 1;
    let header = TxnHeader { client_id: s, cxid: 0, zxid: h.zxid, time: 1, op: op::CLOSE_SESSION };
    let applied = h.tree.apply(&header, &Txn::CloseSession { paths: Vec::new() });
    assert_eq!(applied.deleted, ["/p/x", "/p/x/y"]);
    assert!(h.tree.get("/p/x/y").is_none());
    assert_eq!(h.tree.ephemerals(s).count(), 0, "the index lists no node that is gone");
    h.tree.validate().unwrap();
}

#[test]
fn a_multi_is_all_or_nothing_with_zookeepers_per_op_results() {
    let mut h = Harness::new();
    h.write(&caller(0), &create("/m", "0", PERSISTENT));
    let digest = h.tree.digest();
    let failing =
        Request::Multi(vec![create("/m/a", "", PERSISTENT), set("/m", "1", 7), create("/m/b", "", PERSISTENT)]);
    let applied = h.write(&caller(0), &failing);
    let codes: Vec<Code> = applied.multi.iter().map(|r| r.code()).collect();
    assert_eq!(codes, vec![Code::Ok, Code::BadVersion, Code::RuntimeInconsistency]);
    assert_eq!(h.tree.digest(), digest, "nothing changed");
    assert!(h.tree.get("/m/a").is_none());
    // Later ops see earlier ones: create then set the node just created, then delete it.
    let ok = Request::Multi(vec![
        create("/m/c", "", PERSISTENT),
        set("/m/c", "x", 0),
        Request::Check { path: "/m/c".into(), version: 1 },
    ]);
    let applied = h.write(&caller(0), &ok);
    assert_eq!(applied.code(), Code::Ok);
    assert_eq!(applied.multi.len(), 3);
    assert_eq!(h.tree.get("/m/c").unwrap().stat.version, 1);
    let all_zxid = h.tree.get("/m/c").unwrap().stat;
    assert_eq!(all_zxid.czxid, all_zxid.mzxid, "one zxid for the whole multi");
}

#[test]
fn acls_are_enforced_and_auth_expands_to_the_callers_ids() {
    let mut h = Harness::new();
    let bob = Caller { session: 1, auth: vec![Id::new("digest", "bob:hash")].into(), expired: false };
    let eve = Caller { session: 2, auth: vec![Id::new("digest", "eve:hash")].into(), expired: false };
    let root = Caller { session: 3, auth: vec![Id::new("super", "admin")].into(), expired: false };
    let only_bob = vec![Acl { perms: perms::ALL, id: Id::new("auth", "") }];
    assert_eq!(h.write(&bob, &create_with("/bob", "", PERSISTENT, only_bob.clone())).code(), Code::Ok);
    let stored = h.tree.acl_of(h.tree.get("/bob").unwrap()).to_vec();
    assert_eq!(stored, vec![Acl { perms: perms::ALL, id: Id::new("digest", "bob:hash") }]);
    assert_eq!(h.write(&eve, &set("/bob", "x", -1)).code(), Code::NoAuth);
    assert_eq!(h.write(&eve, &create("/bob/c", "", PERSISTENT)).code(), Code::NoAuth);
    assert_eq!(h.write(&bob, &set("/bob", "x", -1)).code(), Code::Ok);
    assert_eq!(h.write(&root, &set("/bob", "y", -1)).code(), Code::Ok);
    assert_eq!(
        h.write(&caller(4), &create_with("/x", "", PERSISTENT, only_bob)).code(),
        Code::InvalidAcl,
        "auth without ids"
    );
    assert_eq!(h.write(&bob, &create_with("/y", "", PERSISTENT, vec![])).code(), Code::InvalidAcl);
    let bad = vec![Acl { perms: perms::ALL, id: Id::new("world", "everybody") }];
    assert_eq!(h.write(&bob, &create_with("/z", "", PERSISTENT, bad)).code(), Code::InvalidAcl);
    let acl = Request::SetAcl { path: "/bob".into(), acl: tree::acl::read_acl_unsafe(), version: 0 };
    assert_eq!(h.write(&eve, &acl).code(), Code::NoAuth);
    assert_eq!(h.write(&bob, &acl).stat.unwrap().aversion, 1);
    assert_eq!(h.write(&bob, &set("/bob", "z", -1)).code(), Code::NoAuth, "now read-only");
}

#[test]
fn containers_and_ttl_nodes() {
    let mut h = Harness::new();
    let container = Request::Create {
        op: op::CREATE_CONTAINER,
        path: "/c".into(),
        data: Some(Bytes::new()),
        acl: tree::acl::open_acl_unsafe(),
        flags: CONTAINER,
        ttl: -1,
    };
    assert_eq!(h.write(&caller(0), &container).code(), Code::Ok);
    assert_eq!(OwnerKind::of(h.tree.get("/c").unwrap().stat.ephemeral_owner), OwnerKind::Container);
    assert_eq!(h.write(&caller(0), &create("/c/child", "", PERSISTENT)).code(), Code::Ok, "containers have children");
    let ttl = |ttl| Request::Create {
        op: op::CREATE_TTL,
        path: "/t".into(),
        data: Some(Bytes::new()),
        acl: tree::acl::open_acl_unsafe(),
        flags: 5,
        ttl,
    };
    assert_eq!(h.write(&caller(0), &ttl(0)).code(), Code::BadArguments);
    assert_eq!(h.write(&caller(0), &ttl(60_000)).code(), Code::Ok);
    assert_eq!(OwnerKind::of(h.tree.get("/t").unwrap().stat.ephemeral_owner), OwnerKind::Ttl(60_000));
    h.options.ttl_enabled = false;
    assert_eq!(h.write(&caller(0), &ttl(60_000)).code(), Code::Unimplemented);

    // The reaper's index holds exactly the containers and TTL nodes, through creations and deletions.
    assert_eq!(h.write(&caller(0), &create("/plain", "", PERSISTENT)).code(), Code::Ok);
    let indexed = |h: &Harness| h.tree.containers_and_ttls().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(indexed(&h), ["/c", "/t"]);
    assert_eq!(h.write(&caller(0), &delete("/c/child", -1)).code(), Code::Ok);
    assert_eq!(h.write(&caller(0), &delete("/c", -1)).code(), Code::Ok);
    assert_eq!(indexed(&h), ["/t"]);
    h.tree.validate().unwrap();
}

#[test]
fn replicas_applying_the_same_txns_agree_and_replay_is_idempotent() {
    let mut h = Harness::new();
    h.write(&caller(7), &Request::CreateSession { timeout: 5000 });
    h.write(&caller(0), &create("/a", "1", PERSISTENT));
    h.write(&caller(7), &create("/a/e", "", EPHEMERAL));
    h.write(&caller(0), &set("/a", "2", -1));
    h.write(&caller(0), &create("/a/s", "", SEQUENTIAL));
    h.write(&caller(7), &Request::CloseSession);
    let mut replica = tree::tree::DataTree::new();
    for r in &h.log {
        replica.apply(&r.header, &r.txn);
    }
    assert_eq!(replica.digest(), h.tree.digest());
    assert!(tree::tree::same_contents(&replica, &h.tree));
    // Applying everything a second time (a replay over state that already has it) changes nothing.
    for r in &h.log {
        replica.apply(&r.header, &r.txn);
    }
    replica.validate().unwrap();
    assert_eq!(replica.digest(), h.tree.digest());
    assert!(tree::tree::same_contents(&replica, &h.tree));
}

#[test]
fn a_replayed_create_or_delete_answers_as_zookeeper_and_moves_only_the_parent() {
    // The apply answers from the parent's children set (a parent lists exactly its children): a create of a
    // node that exists and a delete of one that does not must still say so and change nothing else.
    let mut tree = tree::tree::DataTree::new();
    let header = |zxid: i64, op: i32| TxnHeader { client_id: 1, cxid: 0, zxid, time: zxid, op };
    let create = |path: &str| Txn::Create {
        path: path.into(),
        data: Some(Bytes::from_static(b"x")),
        acl: tree::acl::open_acl_unsafe(),
        ephemeral: false,
        parent_cversion: -1,
    };
    let delete = |path: &str| Txn::Delete { path: path.into() };
    assert_eq!(tree.apply(&header(1, op::CREATE), &create("/p")).code(), Code::Ok);
    assert_eq!(tree.apply(&header(2, op::CREATE), &create("/p/c")).code(), Code::Ok);
    let (digest, nodes) = (tree.digest(), tree.node_count());
    assert_eq!(tree.apply(&header(3, op::CREATE), &create("/p/c")).code(), Code::NodeExists);
    assert_eq!(tree.get("/p/c").unwrap().stat.czxid, 2, "the replayed create replaced the node");
    assert_eq!(tree.get("/p").unwrap().children.len(), 1);
    assert_eq!(tree.node_count(), nodes);
    tree.validate().unwrap();
    assert_ne!(tree.digest(), digest, "the parent's cversion moves forward, as ZooKeeper's replay does");

    assert_eq!(tree.apply(&header(4, op::DELETE), &delete("/p/c")).code(), Code::Ok);
    assert!(tree.get("/p/c").is_none());
    let digest = tree.digest();
    assert_eq!(tree.apply(&header(5, op::DELETE), &delete("/p/c")).code(), Code::NoNode);
    assert_eq!(tree.get("/p").unwrap().stat.pzxid, 5, "the parent's pzxid moves even when the node is gone");
    assert_eq!(tree.apply(&header(6, op::DELETE), &delete("/nothing/here")).code(), Code::NoNode);
    assert_eq!(tree.apply(&header(7, op::DELETE), &delete("/")).code(), Code::NoNode);
    assert_eq!(tree.node_count(), nodes - 1);
    tree.validate().unwrap();
    assert_ne!(tree.digest(), digest);
}

#[test]
fn an_acl_list_that_would_expand_past_the_bound_is_invalid_and_duplicates_go() {
    let mut h = Harness::new();
    let many = Caller {
        session: 1,
        auth: (0..1000).map(|i| Id::new("digest", &format!("u{i}:hash"))).collect::<Vec<_>>().into(),
        expired: false,
    };
    // 100 `auth` entries with distinct perms: 100,000 entries once expanded.
    let exploding: Vec<Acl> = (0..100).map(|p| Acl { perms: p, id: Id::new("auth", "") }).collect();
    assert_eq!(h.write(&many, &create_with("/boom", "", PERSISTENT, exploding)).code(), Code::InvalidAcl);
    assert!(h.tree.get("/boom").is_none());
    // Repeated entries are kept once, in their first place.
    let twice = vec![Acl { perms: perms::ALL, id: Id::new("auth", "") }; 50];
    assert_eq!(h.write(&many, &create_with("/ok", "", PERSISTENT, twice)).code(), Code::Ok);
    assert_eq!(h.tree.acl_of(h.tree.get("/ok").unwrap()).len(), 1000);
    // A short list (scanned, not hashed) as well as a long one (past the scan, with repeats on both sides).
    let anyone = Acl { perms: perms::ALL, id: Id::anyone() };
    let reader = Acl { perms: perms::READ, id: Id::new("digest", "u1:hash") };
    let short = vec![anyone.clone(), reader.clone(), anyone.clone(), reader.clone()];
    assert_eq!(h.write(&many, &create_with("/short", "", PERSISTENT, short)).code(), Code::Ok);
    assert_eq!(&*h.tree.acl_of(h.tree.get("/short").unwrap()), &[anyone.clone(), reader.clone()]);
    let distinct: Vec<Acl> =
        (0..40).map(|i| Acl { perms: perms::READ, id: Id::new("digest", &format!("v{i}:h")) }).collect();
    let long: Vec<Acl> = distinct.iter().chain(&distinct).chain([&anyone, &anyone]).cloned().collect();
    assert_eq!(h.write(&many, &create_with("/long", "", PERSISTENT, long)).code(), Code::Ok);
    let kept: Vec<Acl> = distinct.into_iter().chain([anyone]).collect();
    assert_eq!(&*h.tree.acl_of(h.tree.get("/long").unwrap()), &kept[..]);
}
