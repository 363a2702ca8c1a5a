//! Model tests: random writes against a plain map of what ZooKeeper would hold, and fuzzy snapshots (copied in
//! chunks while writes go on) that replay to exactly the live tree.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use tree::code::Code;
use tree::prep::Request;
use tree::tree::{same_contents, DataTree};
use tree::txn::{Txn, TxnRecord};

#[derive(Clone, Debug)]
enum Op {
    Create { path: String, data: Option<String>, flags: i32, session: i64 },
    Delete { path: String, version: i32 },
    Set { path: String, data: Option<String>, version: i32 },
    Multi(Vec<Op>),
    OpenSession(i64),
    CloseSession(i64),
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..3u8).prop_map(|a| format!("/n{a}")),
        (0..3u8, 0..3u8).prop_map(|(a, b)| format!("/n{a}/m{b}")),
        (0..3u8, 0..2u8, 0..2u8).prop_map(|(a, b, c)| format!("/n{a}/m{b}/k{c}")),
    ]
}

/// Null data (`None`) among short strings, the empty one included: the tree must keep them apart.
fn data() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[a-z]{0,3}")
}

fn simple_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (path(), data(), 0..4i32, 1..4i64).prop_map(|(path, data, flags, session)| Op::Create { path, data, flags, session }),
        2 => (path(), -1..3i32).prop_map(|(path, version)| Op::Delete { path, version }),
        2 => (path(), data(), -1..3i32).prop_map(|(path, data, version)| Op::Set { path, data, version }),
        1 => (1..4i64).prop_map(Op::OpenSession),
        1 => (1..4i64).prop_map(Op::CloseSession),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => simple_op(),
        1 => proptest::collection::vec(simple_op().prop_filter("no sessions in a multi", |o| !matches!(o, Op::OpenSession(_) | Op::CloseSession(_))), 1..4).prop_map(Op::Multi),
    ]
}

/// What the model keeps per node.
#[derive(Clone, Debug, PartialEq)]
struct MNode {
    data: Option<String>,
    version: i32,
    owner: i64,
    /// Child creations so far (the sequential counter).
    creations: i32,
}

#[derive(Clone, Debug, Default)]
struct Model {
    nodes: BTreeMap<String, MNode>,
}

fn parent(p: &str) -> String {
    let i = p.rfind('/').unwrap();
    if i == 0 {
        "/".into()
    } else {
        p[..i].into()
    }
}

impl Model {
    fn new() -> Model {
        let mut nodes = BTreeMap::new();
        nodes.insert("/".into(), MNode { data: Some(String::new()), version: 0, owner: 0, creations: 0 });
        Model { nodes }
    }

    fn children(&self, p: &str) -> usize {
        self.nodes.keys().filter(|k| k.as_str() != "/" && parent(k) == p).count()
    }

    /// Applies `op` as ZooKeeper would; the outcome code.
    fn apply(&mut self, op: &Op) -> Code {
        match op {
            Op::Create { path, data, flags, session } => {
                let Some(parent_node) = self.nodes.get(&parent(path)).cloned() else { return Code::NoNode };
                let path = if flags & 2 != 0 { format!("{path}{:010}", parent_node.creations) } else { path.clone() };
                if self.nodes.contains_key(&path) {
                    return Code::NodeExists;
                }
                if parent_node.owner != 0 {
                    return Code::NoChildrenForEphemerals;
                }
                self.nodes.get_mut(&parent(&path)).unwrap().creations += 1;
                let owner = if flags & 1 != 0 { *session } else { 0 };
                self.nodes.insert(path, MNode { data: data.clone(), version: 0, owner, creations: 0 });
                Code::Ok
            }
            Op::Delete { path, version } => {
                if !self.nodes.contains_key(&parent(path)) || !self.nodes.contains_key(path) {
                    return Code::NoNode;
                }
                if *version != -1 && *version != self.nodes[path].version {
                    return Code::BadVersion;
                }
                if self.children(path) > 0 {
                    return Code::NotEmpty;
                }
                self.nodes.remove(path);
                Code::Ok
            }
            Op::Set { path, data, version } => {
                let Some(node) = self.nodes.get_mut(path) else { return Code::NoNode };
                if *version != -1 && *version != node.version {
                    return Code::BadVersion;
                }
                (node.data, node.version) = (data.clone(), node.version + 1);
                Code::Ok
            }
            Op::Multi(ops) => {
                let mut trial = self.clone();
                for op in ops {
                    let code = trial.apply(op);
                    if code != Code::Ok {
                        return code;
                    }
                }
                *self = trial;
                Code::Ok
            }
            Op::OpenSession(_) => Code::Ok,
            Op::CloseSession(s) => {
                self.nodes.retain(|_, n| n.owner != *s);
                Code::Ok
            }
        }
    }
}

fn request(op: &Op) -> (i64, Request) {
    match op {
        Op::Create { path, data, flags, session } => (*session, with_data(create(path, "", *flags), data)),
        Op::Delete { path, version } => (0, delete(path, *version)),
        Op::Set { path, data, version } => (0, with_data(set(path, "", *version), data)),
        Op::Multi(ops) => (1, Request::Multi(ops.iter().map(|o| request(o).1).collect())),
        Op::OpenSession(s) => (*s, Request::CreateSession { timeout: 30_000 }),
        Op::CloseSession(s) => (*s, Request::CloseSession),
    }
}

fn with_data(mut request: Request, data: &Option<String>) -> Request {
    if let Request::Create { data: d, .. } | Request::SetData { data: d, .. } = &mut request {
        *d = data.clone().map(Bytes::from);
    }
    request
}

/// Ephemerals are created by the op's session even inside a multi (the multi's caller is session 1).
fn normalize(op: &Op) -> Op {
    match op {
        Op::Multi(ops) => Op::Multi(
            ops.iter()
                .map(|o| match o {
                    Op::Create { path, data, flags, .. } => {
                        Op::Create { path: path.clone(), data: data.clone(), flags: *flags, session: 1 }
                    }
                    other => other.clone(),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn check_against(tree: &DataTree, model: &Model) -> Result<(), TestCaseError> {
    let user_nodes = tree.nodes_after(None).filter(|(p, _)| !p.starts_with("/zookeeper")).count();
    prop_assert_eq!(user_nodes, model.nodes.len());
    for (p, m) in &model.nodes {
        let node = tree.get(p).ok_or_else(|| TestCaseError::fail(format!("{p} missing")))?;
        let data = node.data.as_ref().map(|d| std::str::from_utf8(d).unwrap());
        prop_assert_eq!(data, m.data.as_deref(), "data of {}", p);
        prop_assert_eq!(node.stat.version, m.version, "version of {}", p);
        prop_assert_eq!(node.stat.ephemeral_owner, m.owner, "owner of {}", p);
        prop_assert_eq!(node.stat.cversion, m.creations, "cversion of {}", p);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_tree_does_what_zookeeper_does(ops in proptest::collection::vec(op(), 1..60)) {
        let mut h = Harness::new();
        let mut model = Model::new();
        for op in &ops {
            let op = normalize(op);
            let (session, req) = request(&op);
            let applied = h.write(&caller(session), &req);
            let expected = model.apply(&op);
            prop_assert_eq!(applied.code(), expected, "{:?}", op);
            check_against(&h.tree, &model)?;
        }
    }

    /// The applier's way of applying (the txn's data moved into the tree, not shared) builds the same tree,
    /// answers the same, leaves the txn as it was but for its data, and leaves the tree the data's only owner.
    #[test]
    fn moving_the_data_in_builds_the_same_tree(ops in proptest::collection::vec(op(), 1..60)) {
        let mut h = Harness::new();
        let mut moved = DataTree::new();
        for op in &ops {
            let op = normalize(op);
            let (session, req) = request(&op);
            let applied = h.write(&caller(session), &req);
            let record = h.log.last().expect("the write was logged");
            // A copy of the data's bytes, as the applier decodes it: nothing else shares it.
            let mut txn = TxnRecord::decode(&record.encode()).expect("txn round trip").txn;
            let moved_applied = moved.apply_moving_data(&record.header, &mut txn);
            prop_assert_eq!(&moved_applied, &applied, "{:?}", op);
            prop_assert!(same_contents(&h.tree, &moved), "{:?}", op);
            prop_assert_eq!(moved.digest(), h.tree.digest());
            moved.validate().map_err(TestCaseError::fail)?;
            let mut expected = record.txn.clone();
            if let Txn::Create { data, .. } | Txn::SetData { data, .. } = &mut expected {
                *data = None;
            }
            prop_assert_eq!(&txn, &expected);
            if let (None, Txn::Create { path, .. } | Txn::SetData { path, .. }) = (applied.err, &record.txn) {
                let node = moved.get(path).expect("applied");
                // (Empty data decodes to a static buffer, which nobody owns.)
                let owned = node.data.as_ref().is_none_or(|d| d.is_empty() || d.is_unique());
                prop_assert!(owned, "{} shares its data", path);
            }
        }
    }

    /// A snapshot copied a few nodes at a time while writes go on, then replayed from the zxid it started at,
    /// gives exactly the live tree (contents and digest).
    #[test]
    fn fuzzy_snapshot_plus_replay_is_the_live_tree(
        before in proptest::collection::vec(op(), 0..40),
        during in proptest::collection::vec(op(), 0..40),
        after in proptest::collection::vec(op(), 0..10),
        chunk in 1usize..5,
    ) {
        let mut h = Harness::new();
        let run = |h: &mut Harness, op: &Op| {
            let op = normalize(op);
            let (session, req) = request(&op);
            h.write(&caller(session), &req);
        };
        before.iter().for_each(|op| run(&mut h, op));
        let start = h.zxid;
        let mut during = during.iter();
        let mut copy = h.fuzzy_copy(chunk, |h| during.next().map(|op| run(h, op)).is_some());
        during.for_each(|op| run(&mut h, op));
        after.iter().for_each(|op| run(&mut h, op));
        h.replay_onto(&mut copy, start).map_err(TestCaseError::fail)?;
    }
}
