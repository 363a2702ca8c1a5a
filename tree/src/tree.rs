//! The znode tree and how txns change it (ZooKeeper's `DataTree`).
//!
//! Nodes live in a `BTreeMap` keyed by full path. Byte order puts every parent before its children (a parent's
//! path is a prefix of its children's), so a walk in key order is a valid load order, and a snapshot can walk
//! the map in chunks, resuming after the last key it wrote, while txns are applied between the chunks.
//!
//! # Invariants (checked by [`DataTree::validate`])
//! - Every node but the root has its parent in the map, listing it among its children, and only those.
//! - The ephemerals index lists exactly the nodes whose owner is a session.
//! - The digest equals the sum of the node digests.
//!
//! Applying a txn is deterministic, and idempotent where a fuzzy snapshot needs it: a create of a node that
//! exists, a delete of one that does not, or a cversion below the current one change nothing but what
//! ZooKeeper changes (the parent's cversion and pzxid move only forward).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use bytes::Bytes;

use crate::acl::{self, Acl, AclId, AclTable, OPEN_ACL_ID};
use crate::children::Children;
use crate::code::{op, Code};
use crate::digest::node_digest;
use crate::path;
use crate::quota::{self, QuotaIndex};
use crate::stat::{OwnerKind, Stat, StatPersisted, CONTAINER_OWNER};
use crate::txn::{Txn, TxnHeader};

/// A znode's data. `None` is ZooKeeper's null data (a jute buffer of length -1, what `create(path, null)`
/// writes), kept apart from empty data through txns, the tree, snapshots and replies: clients tell them apart
/// (the Java client's `getData` returns `null`, kazoo's `None`). Both have length 0 in the stat and the same
/// digest (ZooKeeper's digest skips null data).
pub type Data = Option<Bytes>;

/// One znode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Its data.
    pub data: Data,
    /// Its ACL, by id in the tree's ACL table.
    pub acl: AclId,
    /// Its metadata.
    pub stat: StatPersisted,
    /// The names of its children.
    pub children: Children,
    /// What it adds to the tree's digest under its path, kept up to date by the tree (as ZooKeeper's
    /// `DataNode` caches its digest): a change subtracts it instead of hashing the node as it was.
    digest: u64,
}

// Nodes are allocated one by one (boxed in the map): 128 bytes is mimalloc's size class below 160.
const _: () = assert!(std::mem::size_of::<Node>() <= 128);

impl Node {
    /// A node without children (a tree inserting it fills in its digest).
    pub fn new(data: Data, acl: AclId, stat: StatPersisted) -> Node {
        Node { data, acl, stat, children: Children::new(), digest: 0 }
    }

    /// Its data's bytes (none for null data).
    pub fn bytes(&self) -> &[u8] {
        self.data.as_deref().unwrap_or_default()
    }

    /// The stat a client sees.
    pub fn client_stat(&self) -> Stat {
        self.stat.to_client(self.bytes().len(), self.children.len())
    }

    /// What it adds to the tree's digest, hashed afresh.
    fn compute_digest(&self, path: &str) -> u64 {
        node_digest(path, self.bytes(), &self.stat)
    }
}

/// What applying a txn did, for the reply to the client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The outcome (`Ok` or the first error).
    pub err: Option<Code>,
    /// The path a create made (with its sequential suffix).
    pub path: Option<String>,
    /// The node's stat after the change, for ops that return one.
    pub stat: Option<Stat>,
    /// Per-op outcomes of a multi.
    pub multi: Vec<Applied>,
    /// The nodes a closeSession deleted, in the order it deleted them.
    pub deleted: Vec<String>,
}

impl Applied {
    fn err(code: Code) -> Applied {
        Applied { err: Some(code), ..Applied::default() }
    }

    /// The outcome code.
    pub fn code(&self) -> Code {
        self.err.unwrap_or(Code::Ok)
    }
}

/// The data a create or setData puts in the tree: the data moved out of its txn, else a share of the txn's.
fn own(moved: Option<Data>, data: &Data) -> Data {
    moved.unwrap_or_else(|| data.clone())
}

/// The znode tree, its sessions and its digest.
#[derive(Clone, Debug)]
pub struct DataTree {
    /// Boxed: nodes mostly go in in path order (sequential znodes, one client's creates), which leaves the map's
    /// leaves a little over half full; a 136-byte node inline made each entry cost about 356 bytes with its
    /// path, boxed 274 (a million 100-byte znodes, measured with mimalloc). A lookup compares keys only, so the
    /// box costs one pointer per node reached, not per key compared.
    pub(crate) nodes: BTreeMap<String, Box<Node>>,
    pub(crate) acls: AclTable,
    sessions: BTreeMap<i64, i32>,
    ephemerals: BTreeMap<i64, BTreeSet<String>>,
    /// Containers and TTL nodes: what the leader's reaper looks at, without walking the tree.
    reapable: BTreeSet<String>,
    /// ZooKeeper's approximate data size: the length of every path plus every node's data.
    data_size: u64,
    digest: u64,
    last_zxid: i64,
    /// The zxid of the last closeSession that deleted ephemerals its txn did not list (0: none).
    unlisted_close: i64,
    /// The quota roots (see [`crate::quota`]).
    pub(crate) quotas: QuotaIndex,
}

impl Default for DataTree {
    fn default() -> Self {
        DataTree::new()
    }
}

impl DataTree {
    /// A fresh tree: `/`, `/zookeeper`, `/zookeeper/quota` and `/zookeeper/config` (read-only).
    pub fn new() -> DataTree {
        let mut tree = DataTree::empty();
        tree.insert("/".into(), Node::new(Some(Bytes::new()), OPEN_ACL_ID, StatPersisted::default()));
        for p in ["/zookeeper", "/zookeeper/quota", "/zookeeper/config"] {
            tree.insert(p.into(), Node::new(Some(Bytes::new()), OPEN_ACL_ID, StatPersisted::default()));
            tree.update(path::parent(p), |parent| {
                parent.children.insert(path::name(p).into());
            });
        }
        let read_only = tree.acls.intern(&acl::read_acl_unsafe());
        tree.update("/zookeeper/config", |n| {
            n.acl = read_only;
            n.stat.aversion = -1;
        });
        tree
    }

    /// The node at `path`.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path).map(|node| &**node)
    }

    /// The ACL of a node.
    pub fn acl_of(&self, node: &Node) -> std::sync::Arc<[Acl]> {
        self.acls.get(node.acl)
    }

    /// The tree digest.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// The zxid of the last txn applied.
    pub fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    /// Number of nodes, the root and `/zookeeper/...` included.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The open sessions and their timeouts.
    pub fn sessions(&self) -> &BTreeMap<i64, i32> {
        &self.sessions
    }

    /// The ephemeral nodes of `session`.
    pub fn ephemerals(&self, session: i64) -> impl Iterator<Item = &str> {
        self.ephemerals.get(&session).into_iter().flatten().map(String::as_str)
    }

    /// The ephemerals of `session` after the path `after` (all of them for `None`), in path order: a walk that
    /// lets go of the tree's lock now and then resumes where it stopped.
    pub fn ephemerals_after<'a>(&'a self, session: i64, after: Option<&'a str>) -> impl Iterator<Item = &'a str> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.ephemerals
            .get(&session)
            .into_iter()
            .flat_map(move |set| set.range::<str, _>((from, Bound::Unbounded)))
            .map(String::as_str)
    }

    /// The sessions that own ephemeral nodes, in id order.
    pub fn ephemeral_owners(&self) -> impl Iterator<Item = i64> + '_ {
        self.ephemerals.keys().copied()
    }

    /// ZooKeeper's `approximate_data_size`: the length of every path plus every node's data, kept as it goes.
    pub fn approximate_data_size(&self) -> u64 {
        self.data_size
    }

    /// How many ephemeral nodes there are.
    pub fn ephemeral_count(&self) -> usize {
        self.ephemerals.values().map(BTreeSet::len).sum()
    }

    /// The containers and TTL nodes, in path order: the candidates for ZooKeeper's container reaping.
    pub fn containers_and_ttls(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.reapable.iter().filter_map(|path| self.nodes.get_key_value(path)).map(|(path, node)| (path, &**node))
    }

    /// Nodes in path order, starting after `after` (or from the start), for chunked walks.
    pub fn nodes_after<'a>(&'a self, after: Option<&str>) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
        use std::ops::Bound::{Excluded, Unbounded};
        let start = after.map_or(Unbounded, |a| Excluded(a.to_owned()));
        self.nodes.range((start, Unbounded)).map(|(path, node)| (path, &**node))
    }

    /// The ACL table.
    pub fn acl_table(&self) -> &AclTable {
        &self.acls
    }

    /// Applies one txn. Errors in the result are the txn's outcome (a create of an existing node, say), never
    /// a failure of the tree.
    pub fn apply(&mut self, header: &TxnHeader, txn: &Txn) -> Applied {
        let applied = self.apply_op(header, txn, None);
        self.last_zxid = self.last_zxid.max(header.zxid);
        applied
    }

    /// [`DataTree::apply`], moving the data of a create or setData into the tree instead of sharing it: the txn
    /// is left with null data. For callers that need the txn afterwards for its path (the applier's watches and
    /// reply) but not its data: sharing a `Bytes` decoded from a txn allocates its reference count, a move
    /// does not (one allocation less per write on every server).
    pub fn apply_moving_data(&mut self, header: &TxnHeader, txn: &mut Txn) -> Applied {
        let data = match txn {
            Txn::Create { data, .. }
            | Txn::CreateContainer { data, .. }
            | Txn::CreateTtl { data, .. }
            | Txn::SetData { data, .. } => Some(data.take()),
            _ => None,
        };
        let applied = self.apply_op(header, txn, data);
        self.last_zxid = self.last_zxid.max(header.zxid);
        applied
    }

    /// Applies `txn`; `moved` is the data of a create or setData taken out of it ([`DataTree::apply_moving_data`]),
    /// `None` to share the txn's own.
    fn apply_op(&mut self, h: &TxnHeader, txn: &Txn, moved: Option<Data>) -> Applied {
        let applied = match txn {
            Txn::Create { path, data, acl, ephemeral, parent_cversion } => {
                let owner = if *ephemeral { h.client_id } else { 0 };
                self.create(path, own(moved, data), acl, owner, *parent_cversion, h)
            }
            Txn::CreateContainer { path, data, acl, parent_cversion } => {
                self.create(path, own(moved, data), acl, CONTAINER_OWNER, *parent_cversion, h)
            }
            Txn::CreateTtl { path, data, acl, parent_cversion, ttl } => match OwnerKind::ttl_owner(*ttl) {
                Some(owner) => self.create(path, own(moved, data), acl, owner, *parent_cversion, h),
                None => Applied::err(Code::BadArguments),
            },
            _ => return self.apply_other(h, txn, moved),
        };
        if let (Some(Code::NodeExists), Some((path, cversion))) = (applied.err, txn.created()) {
            // Replay over a fuzzy snapshot that already holds the node: move the parent forward only. ZooKeeper
            // does this for `create` alone, so its create2 / container / TTL replays can leave a parent behind.
            self.raise_cversion(path::parent(path), cversion, h.zxid);
        }
        applied
    }

    fn apply_other(&mut self, h: &TxnHeader, txn: &Txn, moved: Option<Data>) -> Applied {
        match txn {
            Txn::Create { .. } | Txn::CreateContainer { .. } | Txn::CreateTtl { .. } => self.apply_op(h, txn, moved),
            Txn::Delete { path } => self.delete(path, h.zxid),
            Txn::SetData { path, data, version } => self.set_data(path, own(moved, data), *version, h),
            Txn::SetAcl { path, acl, version } => self.set_acl(path, acl, *version),
            Txn::Check { path, .. } => Applied { path: Some(path.clone()), ..Applied::default() },
            Txn::CreateSession { timeout } => {
                self.sessions.insert(h.client_id, *timeout);
                Applied::default()
            }
            Txn::CloseSession { paths } => self.close_session(h.client_id, paths, h.zxid),
            Txn::Error { err } => Applied::err(Code::from_value(*err).unwrap_or(Code::SystemError)),
            Txn::Multi(ops) => self.multi(h, ops),
        }
    }

    fn create(
        &mut self,
        path: &str,
        data: Data,
        acl: &[Acl],
        owner: i64,
        parent_cversion: i32,
        h: &TxnHeader,
    ) -> Applied {
        let parent_path = path::parent(path);
        let Some(parent) = self.nodes.get_mut(parent_path) else { return Applied::err(Code::NoNode) };
        // A parent lists exactly its children (the tree's first invariant), so the insert into its set says
        // whether the node exists: two searches of the map per create, not five (a profile of a create load had
        // the map's searches at a third of the apply).
        if path == "/" || !parent.children.insert(path::name(path).to_owned()) {
            return Applied::err(Code::NodeExists);
        }
        let cversion = if parent_cversion == -1 { parent.stat.cversion.wrapping_add(1) } else { parent_cversion };
        if cversion > parent.stat.cversion {
            parent.stat.cversion = cversion;
            parent.stat.pzxid = h.zxid;
        }
        // The parent's data is unchanged, and so is the data size.
        let before = parent.digest;
        parent.digest = parent.compute_digest(parent_path);
        self.digest = self.digest.wrapping_sub(before).wrapping_add(parent.digest);
        let acl = self.acls.intern(acl);
        let node = Node::new(data, acl, StatPersisted::created(h.zxid, h.time, owner));
        let (stat, len) = (node.client_stat(), quota::data_len(&node));
        self.insert(path.to_owned(), node);
        self.quota_on_create(path, len);
        Applied { path: Some(path.to_owned()), stat: Some(stat), ..Applied::default() }
    }

    fn delete(&mut self, path: &str, zxid: i64) -> Applied {
        let parent_path = path::parent(path);
        let parent = match self.nodes.get_mut(parent_path) {
            Some(parent) if path != "/" => parent,
            _ => return Applied::err(Code::NoNode),
        };
        // As for a create, the parent's set says whether the node exists. Its pzxid moves either way (a replay
        // over a fuzzy snapshot that no longer holds the node); its data does not, nor does the data size.
        let listed = parent.children.remove(path::name(path));
        parent.stat.pzxid = parent.stat.pzxid.max(zxid);
        let before = parent.digest;
        parent.digest = parent.compute_digest(parent_path);
        self.digest = self.digest.wrapping_sub(before).wrapping_add(parent.digest);
        if !listed {
            return Applied::err(Code::NoNode);
        }
        self.remove_unlisted(path);
        Applied::default()
    }

    /// Removes the node at `path`, which its parent no longer lists, and, should it have any (only a replay
    /// over a fuzzy snapshot deletes a node that still has children), its descendants. Returns its owner (0 if
    /// there was no node). One search of the map: the key's copy costs less than a second search.
    fn remove_unlisted(&mut self, path: &str) -> i64 {
        match self.nodes.entry(path.to_owned()) {
            Entry::Occupied(e) if e.get().children.is_empty() => {
                let (_, node) = e.remove_entry();
                self.forget(path, &node);
                self.acls.release(node.acl);
                self.quota_on_delete(path, &node);
                node.stat.ephemeral_owner
            }
            Entry::Occupied(e) => {
                let owner = e.get().stat.ephemeral_owner;
                self.remove_subtree(path);
                owner
            }
            Entry::Vacant(_) => 0,
        }
    }

    /// Removes `path` and, should any exist (only a replay over a fuzzy snapshot can leave some), its
    /// descendants, so that no node is ever left without its parent.
    fn remove_subtree(&mut self, path: &str) {
        let prefix = format!("{path}/");
        let descendants: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
        for p in descendants.iter().rev().chain(std::iter::once(&path.to_owned())) {
            if let Some(node) = self.remove(p) {
                self.acls.release(node.acl);
                self.quota_on_delete(p, &node);
            }
        }
    }

    fn set_data(&mut self, path: &str, data: Data, version: i32, h: &TxnHeader) -> Applied {
        let mut lengths = None;
        let stat = self.update(path, |n| {
            let before = quota::data_len(n);
            n.data = data;
            n.stat.version = version;
            n.stat.mtime = h.time;
            n.stat.mzxid = h.zxid;
            lengths = Some((before, quota::data_len(n)));
        });
        if let Some((before, after)) = lengths {
            self.quota_on_set(path, before, after);
        }
        match stat {
            Some(stat) => Applied { stat: Some(stat), ..Applied::default() },
            None => Applied::err(Code::NoNode),
        }
    }

    fn set_acl(&mut self, path: &str, acl: &[Acl], version: i32) -> Applied {
        let Some(old) = self.nodes.get(path).map(|n| n.acl) else { return Applied::err(Code::NoNode) };
        self.acls.release(old);
        let new = self.acls.intern(acl);
        let stat = self.update(path, |n| {
            n.acl = new;
            n.stat.aversion = version;
        });
        Applied { stat, ..Applied::default() }
    }

    fn close_session(&mut self, session: i64, paths: &[String], zxid: i64) -> Applied {
        self.sessions.remove(&session);
        // The session's index comes out whole: every node in it is deleted below, so no delete searches it.
        let owned = self.ephemerals.remove(&session).unwrap_or_default();
        // The txn's list first, as ZooKeeper does: a delete bumps the parent's pzxid even when a fuzzy snapshot
        // no longer holds the node. Then whatever this replica still indexes under the session: everything, for
        // a txn proposed without its list (a session with more ephemerals than a txn can name).
        let mut deleted = Vec::new();
        let mut owned_deleted = 0;
        self.delete_in_sibling_runs(paths, zxid, |path, owner| {
            owned_deleted += usize::from(owner == session);
            deleted.push(path.to_owned());
        });
        // The list names every ephemeral the session had when the leader prepared the close, and nothing can
        // be added to a closing session, so usually nothing is left; a replay over a fuzzy snapshot can differ
        // (and a listed node's subtree may have held some of the session's: they went uncounted).
        let leftovers: Vec<String> = if paths.is_empty() {
            owned.into_iter().collect()
        } else if owned_deleted == owned.len() {
            Vec::new()
        } else {
            let still = |p: &String| self.nodes.get(p).is_some_and(|n| n.stat.ephemeral_owner == session);
            owned.into_iter().filter(still).collect()
        };
        if !leftovers.is_empty() {
            self.unlisted_close = zxid;
        }
        let mut gone = 0;
        self.delete_in_sibling_runs(&leftovers, zxid, |_, _| gone += 1);
        if gone < leftovers.len() {
            // A leftover whose parent no longer lists it (only a tree that broke its invariants has one) stays,
            // and stays indexed, as a node is indexed until it is removed.
            let still =
                leftovers.iter().filter(|p| self.nodes.get(*p).is_some_and(|n| n.stat.ephemeral_owner == session));
            let still: Vec<String> = still.cloned().collect();
            if !still.is_empty() {
                self.ephemerals.entry(session).or_default().extend(still);
            }
        }
        deleted.extend(leftovers);
        Applied { deleted, ..Applied::default() }
    }

    /// Deletes `paths` in their order, as [`DataTree::delete`] would one by one, but each run of siblings with
    /// one search of the map for their parent and one digest update of it (a close deletes thousands of
    /// siblings); `gone` sees each path deleted (one its parent listed) with its owner.
    fn delete_in_sibling_runs(&mut self, paths: &[String], zxid: i64, mut gone: impl FnMut(&str, i64)) {
        let mut runs = paths;
        while let Some(first) = runs.first() {
            let parent_path = path::parent(first);
            let len = runs.iter().take_while(|p| p.as_str() != "/" && path::parent(p) == parent_path).count();
            let (run, rest) = runs.split_at(len.max(1));
            runs = rest;
            let Some(parent) = self.nodes.get_mut(parent_path).filter(|_| len > 0) else { continue };
            let listed: Vec<&String> = run.iter().filter(|p| parent.children.remove(path::name(p))).collect();
            // The parent's pzxid moves even for a node it no longer lists (a replay over a fuzzy snapshot).
            parent.stat.pzxid = parent.stat.pzxid.max(zxid);
            let before = parent.digest;
            parent.digest = parent.compute_digest(parent_path);
            self.digest = self.digest.wrapping_sub(before).wrapping_add(parent.digest);
            for p in listed {
                let owner = self.remove_unlisted(p);
                gone(p, owner);
            }
        }
    }

    /// The zxid of the last closeSession that deleted ephemerals its txn did not name (0: none since this tree
    /// was built). Replaying such a txn over a fuzzy snapshot taken while it applied cannot know which parents
    /// lost a child before the snapshot copied them, so a snapshot that spans one must not be kept.
    pub fn last_unlisted_close(&self) -> i64 {
        self.unlisted_close
    }

    fn multi(&mut self, h: &TxnHeader, ops: &[(i32, Txn)]) -> Applied {
        let failed = ops.iter().any(|(op, _)| *op == op::ERROR);
        let mut past_failure = false;
        let mut results = Vec::with_capacity(ops.len());
        for (op, txn) in ops {
            past_failure |= *op == op::ERROR;
            let result = match (failed, txn) {
                (true, Txn::Error { err }) => Applied::err(Code::from_value(*err).unwrap_or(Code::SystemError)),
                (true, _) if past_failure => Applied::err(Code::RuntimeInconsistency),
                (true, _) => Applied::err(Code::Ok),
                (false, txn) => self.apply_op(h, txn, None),
            };
            results.push(result);
        }
        let err = results.iter().map(Applied::code).find(|c| *c != Code::Ok);
        Applied { err, multi: results, ..Applied::default() }
    }

    /// Raises a parent's cversion (and pzxid) to `cversion` if it is below (`-1`: one more than now).
    fn raise_cversion(&mut self, path: &str, cversion: i32, zxid: i64) {
        self.update(path, |n| {
            let target = if cversion == -1 { n.stat.cversion.wrapping_add(1) } else { cversion };
            if target > n.stat.cversion {
                n.stat.cversion = target;
                n.stat.pzxid = zxid;
            }
        });
    }

    /// Changes a node, keeping the digest in step; returns its new client stat (`None`: no such node).
    pub(crate) fn update(&mut self, path: &str, change: impl FnOnce(&mut Node)) -> Option<Stat> {
        let node = self.nodes.get_mut(path)?;
        let (before, len) = (node.digest, node.bytes().len() as u64);
        change(node);
        node.digest = node.compute_digest(path);
        self.digest = self.digest.wrapping_sub(before).wrapping_add(node.digest);
        self.data_size = self.data_size - len + node.bytes().len() as u64;
        Some(node.client_stat())
    }

    fn insert(&mut self, path: String, mut node: Node) {
        debug_assert!(!self.nodes.contains_key(&path));
        self.register(&path, &mut node);
        self.nodes.insert(path, Box::new(node));
    }

    /// Counts a node going in at `path` (its digest, the data size, the ephemeral and reapable indexes); the
    /// caller puts it in the map.
    pub(crate) fn register(&mut self, path: &str, node: &mut Node) {
        node.digest = node.compute_digest(path);
        self.digest = self.digest.wrapping_add(node.digest);
        self.data_size += (path.len() + node.bytes().len()) as u64;
        match OwnerKind::of(node.stat.ephemeral_owner) {
            OwnerKind::Ephemeral(owner) => drop(self.ephemerals.entry(owner).or_default().insert(path.to_owned())),
            OwnerKind::Container | OwnerKind::Ttl(_) => drop(self.reapable.insert(path.to_owned())),
            OwnerKind::Persistent => {}
        }
    }

    fn remove(&mut self, path: &str) -> Option<Box<Node>> {
        let node = self.nodes.remove(path)?;
        self.forget(path, &node);
        Some(node)
    }

    /// What removing the node at `path` from the map takes from the digest, the data size and the indexes.
    fn forget(&mut self, path: &str, node: &Node) {
        self.digest = self.digest.wrapping_sub(node.digest);
        self.data_size -= (path.len() + node.bytes().len()) as u64;
        match OwnerKind::of(node.stat.ephemeral_owner) {
            OwnerKind::Ephemeral(owner) => {
                if let Some(set) = self.ephemerals.get_mut(&owner) {
                    set.remove(path);
                    if set.is_empty() {
                        self.ephemerals.remove(&owner);
                    }
                }
            }
            OwnerKind::Container | OwnerKind::Ttl(_) => drop(self.reapable.remove(path)),
            OwnerKind::Persistent => {}
        }
    }

    /// Loads a node as read from a snapshot: inserted as is, its parent's children list updated. Fails with
    /// `NoNode` if the parent is not loaded (snapshots are written in path order, so the parent was not in the
    /// snapshot), and with `NodeExists` for a path loaded twice. Once every node is loaded,
    /// [`DataTree::setup_quotas`] finds the quotas and recounts their stats.
    pub fn load_node(&mut self, path: String, node: Node, acl: &[Acl]) -> Result<(), Code> {
        if self.nodes.contains_key(&path) {
            return Err(Code::NodeExists);
        }
        if path != "/" {
            let parent = self.nodes.get_mut(path::parent(&path)).ok_or(Code::NoNode)?;
            // Children are not part of a node's digest: the parent's digest stays as it is.
            parent.children.insert(path::name(&path).to_owned());
        }
        let node = Node { acl: self.acls.intern(acl), children: Children::new(), ..node };
        self.insert(path, node);
        Ok(())
    }

    /// Records a session as read from a snapshot.
    pub fn load_session(&mut self, session: i64, timeout: i32) {
        self.sessions.insert(session, timeout);
    }

    /// Sets the last applied zxid as read from a snapshot.
    pub fn set_last_zxid(&mut self, zxid: i64) {
        self.last_zxid = zxid;
    }

    /// An empty tree without even a root, to load a snapshot into.
    pub fn empty() -> DataTree {
        DataTree {
            nodes: BTreeMap::new(),
            acls: AclTable::default(),
            sessions: BTreeMap::new(),
            ephemerals: BTreeMap::new(),
            reapable: BTreeSet::new(),
            data_size: 0,
            digest: 0,
            last_zxid: 0,
            unlisted_close: 0,
            quotas: QuotaIndex::default(),
        }
    }

    /// Checks the invariants; a description of the first broken one.
    pub fn validate(&self) -> Result<(), String> {
        let (mut digest, mut size) = (0u64, 0u64);
        for (p, node) in &self.nodes {
            let computed = node.compute_digest(p);
            if node.digest != computed {
                return Err(format!("{p}: cached digest {:#x}, computed {computed:#x}", node.digest));
            }
            digest = digest.wrapping_add(computed);
            size += (p.len() + node.bytes().len()) as u64;
            if p != "/" {
                let parent = self.nodes.get(path::parent(p)).ok_or_else(|| format!("{p} has no parent"))?;
                if !parent.children.contains(path::name(p)) {
                    return Err(format!("{p} is missing from its parent's children"));
                }
            }
            for child in &node.children {
                if !self.nodes.contains_key(&path::join(p, child)) {
                    return Err(format!("{p} lists a child {child} that does not exist"));
                }
            }
            match OwnerKind::of(node.stat.ephemeral_owner) {
                OwnerKind::Ephemeral(owner) if !self.ephemerals.get(&owner).is_some_and(|s| s.contains(p)) => {
                    return Err(format!("ephemeral {p} is not indexed under its session"));
                }
                OwnerKind::Container | OwnerKind::Ttl(_) if !self.reapable.contains(p) => {
                    return Err(format!("container or TTL node {p} is not indexed"));
                }
                _ => {}
            }
        }
        if self.ephemerals.values().flatten().any(|p| !self.nodes.contains_key(p)) {
            return Err("the ephemerals index lists a node that does not exist".into());
        }
        let stray = self.reapable.iter().find(|p| {
            !self.nodes.get(*p).is_some_and(|n| {
                matches!(OwnerKind::of(n.stat.ephemeral_owner), OwnerKind::Container | OwnerKind::Ttl(_))
            })
        });
        if let Some(p) = stray {
            return Err(format!("the container/TTL index lists {p}, which is not a container or TTL node"));
        }
        if digest != self.digest {
            return Err(format!("digest {:x} != recomputed {:x}", self.digest, digest));
        }
        if size != self.data_size {
            return Err(format!("data size {} != recomputed {size}", self.data_size));
        }
        Ok(())
    }
}

/// Two trees hold the same nodes (data, stat, ACL lists, children) and sessions.
pub fn same_contents(a: &DataTree, b: &DataTree) -> bool {
    a.nodes.len() == b.nodes.len()
        && a.sessions == b.sessions
        && a.nodes.iter().zip(&b.nodes).all(|((pa, na), (pb, nb))| {
            pa == pb
                && na.data == nb.data
                && na.stat == nb.stat
                && na.children == nb.children
                && a.acls.get(na.acl) == b.acls.get(nb.acl)
        })
}
