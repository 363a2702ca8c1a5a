//! The bulk loader ([`tree::load::Loader`]) builds exactly the tree that `load_node` called on each node in turn
//! builds: the same nodes, children, ACLs (their ids and reference counts too), ephemeral and container indexes, digest
//! and data size, the same orphans left out, and a path listed twice refused; for nodes in path order (what a
//! snapshot holds) and in any other order.

use bytes::Bytes;
use proptest::prelude::*;
use tree::acl::{open_acl_unsafe, perms, Acl, Id};
use tree::load::Loader;
use tree::stat::{StatPersisted, CONTAINER_OWNER};
use tree::tree::{same_contents, DataTree, Node};

/// A node as a snapshot could list it: any path over a small alphabet (so that parents, siblings and orphans
/// are common, and '!' sorts before '/'), ephemeral, container or persistent, with one of two ACLs.
fn node() -> impl Strategy<Value = (String, Node, Vec<Acl>)> {
    let path = prop_oneof![
        1 => Just("/".to_owned()),
        12 => proptest::collection::vec(proptest::sample::select(vec!["a", "b", "a!", "c"]), 1..4)
            .prop_map(|names| format!("/{}", names.join("/"))),
    ];
    let owner = prop_oneof![Just(0i64), Just(7), Just(9), Just(CONTAINER_OWNER)];
    let acl =
        prop_oneof![Just(open_acl_unsafe()), Just(vec![Acl { perms: perms::READ, id: Id::new("digest", "u:x") }]),];
    (path, owner, proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)), acl, 1i64..100).prop_map(
        |(path, owner, data, acl, zxid)| {
            let stat = StatPersisted::created(zxid, zxid, owner);
            (path, Node::new(data.map(Bytes::from), 0, stat), acl)
        },
    )
}

/// The nodes one at a time, as before the loader: the tree, the orphans, or the first path listed twice.
fn one_by_one(nodes: &[(String, Node, Vec<Acl>)]) -> Result<(DataTree, u64), String> {
    let mut tree = DataTree::empty();
    tree.load_session(7, 30_000);
    let mut orphans = 0;
    for (path, node, acl) in nodes {
        match tree.load_node(path.clone(), node.clone(), acl) {
            Ok(()) => {}
            Err(tree::code::Code::NoNode) => orphans += 1,
            Err(_) => return Err(path.clone()),
        }
    }
    Ok((tree, orphans))
}

fn bulk(nodes: &[(String, Node, Vec<Acl>)]) -> Result<(DataTree, u64), String> {
    let mut loader = Loader::new(DataTree::empty(), nodes.len());
    loader.tree_mut().load_session(7, 30_000);
    for (path, node, acl) in nodes {
        loader.node(path.clone(), node.clone(), acl);
    }
    loader.finish().map(|loaded| (loaded.tree, loaded.orphans)).map_err(|duplicate| duplicate.path)
}

fn check(nodes: &[(String, Node, Vec<Acl>)]) -> Result<(), TestCaseError> {
    match (one_by_one(nodes), bulk(nodes)) {
        (Ok((expected, orphans)), Ok((loaded, loaded_orphans))) => {
            prop_assert_eq!(loaded_orphans, orphans);
            prop_assert!(same_contents(&loaded, &expected), "different nodes");
            prop_assert_eq!(loaded.digest(), expected.digest());
            prop_assert_eq!(loaded.node_count(), expected.node_count());
            // The same ids too (the table hands them out in order of first use).
            let table = |t: &DataTree| {
                t.acl_table().entries().map(|(id, list, refs)| (id, list.to_vec(), refs)).collect::<Vec<_>>()
            };
            prop_assert_eq!(table(&loaded), table(&expected), "ACL table");
            let ids = |t: &DataTree| t.nodes_after(None).map(|(p, n)| (p.clone(), n.acl)).collect::<Vec<_>>();
            prop_assert_eq!(ids(&loaded), ids(&expected), "nodes' ACL ids");
            for session in [7, 9] {
                prop_assert_eq!(
                    loaded.ephemerals(session).collect::<Vec<_>>(),
                    expected.ephemerals(session).collect::<Vec<_>>()
                );
            }
            if loaded.get("/").is_some() {
                prop_assert_eq!(loaded.validate(), Ok(()));
            }
        }
        (Err(expected), Err(loaded)) => prop_assert_eq!(loaded, expected, "the same path refused"),
        (expected, loaded) => {
            prop_assert!(false, "one by one {:?}, in bulk {:?}", expected.map(|t| t.1), loaded.map(|t| t.1))
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// In path order with no path twice: the snapshot's case, and the bulk path.
    #[test]
    fn nodes_in_path_order_load_as_one_by_one(mut nodes in proptest::collection::vec(node(), 0..40)) {
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        nodes.dedup_by(|a, b| a.0 == b.0);
        check(&nodes)?;
    }

    /// In any order, duplicates included.
    #[test]
    fn nodes_in_any_order_load_as_one_by_one(nodes in proptest::collection::vec(node(), 0..40)) {
        check(&nodes)?;
    }
}

#[test]
fn a_parent_listed_after_its_child_leaves_the_child_out() {
    let stat = StatPersisted::created(1, 1, 0);
    let nodes: Vec<(String, Node, Vec<Acl>)> = ["/", "/a!", "/a", "/a/b", "/c/d"]
        .iter()
        .map(|p| (p.to_string(), Node::new(None, 0, stat), open_acl_unsafe()))
        .collect();
    let (tree, orphans) = bulk(&nodes).unwrap();
    assert_eq!(orphans, 1, "/c/d has no parent");
    assert!(tree.get("/a/b").is_some() && tree.get("/a!").is_some());
    assert_eq!(tree.validate(), Ok(()));
}
