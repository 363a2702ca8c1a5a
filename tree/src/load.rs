//! Building a tree from a snapshot's nodes in bulk.
//!
//! A snapshot lists nodes in path order (the writer walks the tree's map), so every parent comes before its
//! children and the map can be built in one pass from sorted entries, instead of one B-tree search per node for
//! the duplicate check, one for the parent and one for the insert (the paths of a large tree share long
//! prefixes, and those comparisons were most of a load's time). Each node's parent is found through a hash
//! index of the nodes taken so far, which gives the same answer a map of them would.
//!
//! The result is the tree that [`DataTree::load_node`] called on each node in turn would build, orphans
//! included: a node whose parent was not taken before it (a fuzzy snapshot can hold one) is left out and
//! counted. Nodes that do not come in strictly increasing path order (not what the writer produces) are
//! loaded one by one with `load_node`, which also reports a path listed twice.

use std::collections::HashMap;
use std::sync::Arc;

use crate::acl::Acl;
use crate::children::Children;
use crate::code::Code;
use crate::path;
use crate::tree::{DataTree, Node};

/// Collects a snapshot's nodes, then builds the tree ([`Loader::finish`]).
#[derive(Debug)]
pub struct Loader {
    tree: DataTree,
    /// The nodes given, in order, each with its ACL list: interned only when the node is taken, in order, so
    /// that the ACL ids are the ones `load_node` gives (orphans take none).
    nodes: Vec<(String, Node, Arc<[Acl]>)>,
    /// Whether every path so far was above the one before it.
    in_order: bool,
}

/// Why a load failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path} appears twice")]
pub struct Duplicate {
    /// The path.
    pub path: String,
}

/// A built tree and how many nodes were left out for want of a parent.
#[derive(Debug)]
pub struct Loaded {
    /// The tree.
    pub tree: DataTree,
    /// Nodes whose parent was not loaded before them.
    pub orphans: u64,
}

impl Loader {
    /// A loader into `tree`, which must hold no node yet (sessions and the last zxid may be set on it, before or
    /// through [`Loader::tree_mut`]).
    pub fn new(tree: DataTree, expected_nodes: usize) -> Loader {
        assert_eq!(tree.node_count(), 0, "a loader builds the map of nodes from nothing");
        // The count comes from a file: reserve no more than a little up front, and grow with what arrives.
        Loader { tree, nodes: Vec::with_capacity(expected_nodes.min(1 << 16)), in_order: true }
    }

    /// The tree being loaded, for what is not a node (sessions, the last zxid).
    pub fn tree_mut(&mut self) -> &mut DataTree {
        &mut self.tree
    }

    /// Adds a node (its children are filled in by the load).
    pub fn node(&mut self, path: String, node: Node, acl: &[Acl]) {
        // Most nodes share their list with the one before (the open ACL, a subtree's): share it, no allocation.
        let acl = match self.nodes.last() {
            Some((last, _, list)) => {
                if *last >= path {
                    self.in_order = false;
                }
                if **list == *acl {
                    list.clone()
                } else {
                    acl.into()
                }
            }
            None => acl.into(),
        };
        let mut node = node;
        node.children = Children::new();
        self.nodes.push((path, node, acl));
    }

    /// Builds the tree.
    pub fn finish(self) -> Result<Loaded, Duplicate> {
        let Loader { mut tree, mut nodes, in_order } = self;
        assert_eq!(tree.node_count(), 0, "nodes go through the loader, not around it");
        if !in_order {
            let mut orphans = 0;
            for (path, node, acl) in nodes {
                match tree.load_node(path.clone(), node, &acl) {
                    Ok(()) => {}
                    Err(Code::NoNode) => orphans += 1,
                    Err(_) => return Err(Duplicate { path }),
                }
            }
            return Ok(Loaded { tree, orphans });
        }
        let places = place(&nodes);
        let mut children: Vec<Vec<String>> = Vec::new();
        children.resize_with(nodes.len(), Vec::new);
        for ((path, _, _), place) in nodes.iter().zip(&places) {
            if let Place::Child(parent) = *place {
                children[parent].push(path::name(path).to_owned());
            }
        }
        let mut orphans = 0;
        for (((path, node, acl), place), names) in nodes.iter_mut().zip(&places).zip(children) {
            if *place == Place::Orphan {
                orphans += 1;
                continue;
            }
            node.acl = tree.acls.intern(acl);
            // Names under one parent come in path order, which is their order: the set is built in bulk.
            node.children = names.into_iter().collect();
            tree.register(path, node);
        }
        // In path order already: the map is built in bulk from the taken nodes.
        let mut places = places.into_iter();
        tree.nodes = nodes
            .into_iter()
            .filter(|_| places.next() != Some(Place::Orphan))
            .map(|(path, node, _)| (path, Box::new(node)))
            .collect();
        Ok(Loaded { tree, orphans })
    }
}

/// Where a node goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Root,
    /// Under the node at this index.
    Child(usize),
    /// Nowhere: its parent was not taken before it.
    Orphan,
}

/// Each node's place, as taking the nodes in order would decide it.
fn place(nodes: &[(String, Node, Arc<[Acl]>)]) -> Vec<Place> {
    // A fast hash (SipHash was most of this index's cost), with random keys: a faulty leader's snapshot cannot
    // be crafted to make every path collide.
    let mut taken: HashMap<&str, usize, ahash::RandomState> =
        HashMap::with_capacity_and_hasher(nodes.len(), ahash::RandomState::new());
    nodes
        .iter()
        .enumerate()
        .map(|(i, (path, _, _))| {
            let place = if path == "/" {
                Place::Root
            } else {
                match taken.get(path::parent(path)) {
                    Some(&parent) => Place::Child(parent),
                    None => return Place::Orphan,
                }
            };
            taken.insert(path, i);
            place
        })
        .collect()
}
