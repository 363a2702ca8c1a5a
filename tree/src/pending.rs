//! The changes of txns the leader proposed that its committed tree has not applied yet (ZooKeeper's
//! `outstandingChanges`): prep reads the committed tree through them, so that each write is checked against
//! every write before it, committed or not, without a second copy of the tree.
//!
//! Each change is tagged with the sequence number of the proposal that made it (the leader's count of its own
//! proposals, in submission order). Once the committed tree has applied a proposal, the changes tagged with it
//! are retired: the tree itself now says the same.
//!
//! # Invariants
//! - For every path it holds, the change is the node's state after the last pending proposal that touched it
//!   (`None`: deleted), tagged with that proposal.
//! - `order` lists every `(seq, path)` absorbed and not yet retired, in non-decreasing seq order; each path in
//!   `latest` has an entry in `order` with its tag.
//! - `owned` indexes exactly the paths of `latest` whose change is a node with a non-zero owner, by owner (a
//!   closeSession looks up its pending ephemerals there, not by scanning every change).
//! - `bytes` is the [`weight`] of what `latest`, `order` and `owned` hold: the leader bounds it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::mem::size_of;
use std::sync::Arc;

use crate::acl::Acl;

/// A node as prep sees it: the tree's state plus the pending changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct View {
    pub(crate) version: i32,
    pub(crate) cversion: i32,
    pub(crate) aversion: i32,
    pub(crate) owner: i64,
    pub(crate) children: usize,
    /// Shared with the tree's ACL table unless a pending change set it.
    pub(crate) acl: Arc<[Acl]>,
    /// Its data length, for the quota check of a setData.
    pub(crate) data_len: usize,
}

/// What one prepared request changes, in the order it changes it (`None`: deleted). Empty for a request that
/// failed its checks (its error txn changes nothing).
#[derive(Debug, Default)]
pub struct Changes(pub(crate) Vec<(Arc<str>, Option<View>)>);

impl Changes {
    /// How many node changes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug)]
struct Change {
    view: Option<View>,
    seq: u64,
}

impl Change {
    /// The node's owner, if it is a node with one.
    fn owner(&self) -> Option<i64> {
        self.view.as_ref().map(|v| v.owner).filter(|&owner| owner != 0)
    }
}

/// The changes of pending proposals, by path.
#[derive(Debug, Default)]
pub struct Pending {
    latest: HashMap<Arc<str>, Change>,
    order: VecDeque<(u64, Arc<str>)>,
    /// The paths of `latest` that are nodes with an owner (ephemerals, containers, TTL nodes), by owner.
    owned: HashMap<i64, HashSet<Arc<str>>>,
    /// Approximate heap bytes held, by [`weight`].
    bytes: usize,
}

/// What each entry costs, roughly (hash tables' spare room aside): an `order` entry owns its path's allocation;
/// a `latest` entry is a table slot; an `owned` entry is a slot. ACL lists are not counted: most are the tree's
/// own, shared (charging them would let a small request with a huge shared list fill the budget), and the rest
/// were built from requests whose bytes the servers' request budgets count.
mod weight {
    use super::*;

    pub(super) fn order(path: &str) -> usize {
        size_of::<(u64, Arc<str>)>() + 2 * size_of::<usize>() + path.len()
    }

    pub(super) const LATEST: usize = size_of::<(Arc<str>, Change)>();

    pub(super) const OWNED: usize = size_of::<Arc<str>>();
}

/// Capacity kept once empty: a closeSession of a session with many ephemerals fills the maps for a moment, and
/// that memory goes back once it applied.
const KEEP_CAPACITY: usize = 4096;

impl Pending {
    /// No pending changes.
    pub fn new() -> Pending {
        Pending::default()
    }

    /// Paths with a pending change.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Approximate heap bytes the pending changes hold.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets every change (the proposals failed: the committed tree is the truth again).
    pub fn clear(&mut self) {
        self.latest.clear();
        self.order.clear();
        self.owned.clear();
        self.bytes = 0;
        self.shrink();
    }

    /// Whether a pending proposal changed `path`.
    pub fn touches(&self, path: &str) -> bool {
        self.latest.contains_key(path)
    }

    /// The pending state of `path`: `None` if no pending proposal touched it, `Some(None)` if one deleted it.
    pub(crate) fn get(&self, path: &str) -> Option<&Option<View>> {
        self.latest.get(path).map(|change| &change.view)
    }

    /// The paths a pending proposal created as an ephemeral of `session` (and no later one deleted).
    pub(crate) fn ephemerals_of(&self, session: i64) -> impl Iterator<Item = &str> {
        self.owned.get(&session).into_iter().flatten().map(|path| &**path)
    }

    /// Adds the changes of proposal `seq`, which must not be older than any absorbed before.
    pub fn absorb(&mut self, seq: u64, changes: Changes) {
        if let Some(&(last, _)) = self.order.back() {
            assert!(seq >= last, "proposal {seq} absorbed after {last}");
        }
        for (path, view) in changes.0 {
            self.bytes += weight::order(&path);
            self.order.push_back((seq, path.clone()));
            let change = Change { view, seq };
            self.bytes += weight::LATEST;
            if let Some(owner) = change.owner() {
                self.own(owner, path.clone());
            }
            if let Some(old) = self.latest.insert(path.clone(), change) {
                self.forget(&path, &old);
            }
        }
    }

    /// Retires the changes of every proposal up to `seq`: the committed tree has applied them.
    pub fn retire(&mut self, seq: u64) {
        while let Some((tag, _)) = self.order.front() {
            if *tag > seq {
                break;
            }
            let (tag, path) = self.order.pop_front().expect("front exists");
            self.bytes = self.bytes.saturating_sub(weight::order(&path));
            // A later proposal that touched the path re-tagged it: its change stays.
            if self.latest.get(&path).is_some_and(|change| change.seq == tag) {
                let change = self.latest.remove(&path).expect("just found");
                self.forget(&path, &change);
            }
        }
        if self.order.is_empty() {
            debug_assert_eq!(self.bytes, 0, "nothing pending weighs nothing");
            // (A miscount must not outlive the changes it was made on: the leader waits on this figure.)
            self.bytes = 0;
            self.shrink();
        }
    }

    /// Indexes `path` under its owner.
    fn own(&mut self, owner: i64, path: Arc<str>) {
        if self.owned.entry(owner).or_default().insert(path) {
            self.bytes += weight::OWNED;
        }
    }

    /// Takes out of the weight and the owner index a change that left `latest` (replaced or retired); the index
    /// keeps `path` if the change that replaced it has the same owner.
    fn forget(&mut self, path: &str, change: &Change) {
        self.bytes = self.bytes.saturating_sub(weight::LATEST);
        let Some(owner) = change.owner() else { return };
        if self.latest.get(path).and_then(Change::owner) == Some(owner) {
            return;
        }
        let paths = self.owned.get_mut(&owner).expect("an owned change is indexed");
        assert!(paths.remove(path), "an owned change is indexed");
        self.bytes = self.bytes.saturating_sub(weight::OWNED);
        if paths.is_empty() {
            self.owned.remove(&owner);
        }
    }

    /// Checks the invariants (tests call it after each step).
    pub fn check(&self) -> Result<(), String> {
        let mut owned: HashMap<i64, HashSet<Arc<str>>> = HashMap::new();
        for (path, change) in &self.latest {
            if let Some(owner) = change.owner() {
                owned.entry(owner).or_default().insert(path.clone());
            }
            if !self.order.iter().any(|(seq, p)| *seq == change.seq && p == path) {
                return Err(format!("{path} has no order entry for its tag {}", change.seq));
            }
        }
        if owned != self.owned {
            return Err(format!("owner index {:?}, changes say {owned:?}", self.owned));
        }
        let bytes = self.order.iter().map(|(_, p)| weight::order(p)).sum::<usize>()
            + self.latest.len() * weight::LATEST
            + self.owned.values().map(|paths| paths.len() * weight::OWNED).sum::<usize>();
        if bytes != self.bytes {
            return Err(format!("weight {} recorded, {bytes} held", self.bytes));
        }
        Ok(())
    }

    fn shrink(&mut self) {
        if self.latest.capacity() > KEEP_CAPACITY {
            self.latest.shrink_to(KEEP_CAPACITY);
        }
        if self.order.capacity() > KEEP_CAPACITY {
            self.order.shrink_to(KEEP_CAPACITY);
        }
        if self.owned.capacity() > KEEP_CAPACITY {
            self.owned.shrink_to(KEEP_CAPACITY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(version: i32) -> View {
        View { version, cversion: 0, aversion: 0, owner: 0, children: 0, acl: Arc::from([]), data_len: 0 }
    }

    fn changes(list: &[(&str, Option<i32>)]) -> Changes {
        Changes(list.iter().map(|(p, v)| (Arc::from(*p), v.map(view))).collect())
    }

    #[test]
    fn a_change_stays_until_the_last_proposal_that_touched_it_retires() {
        let mut pending = Pending::new();
        pending.absorb(1, changes(&[("/a", Some(1)), ("/b", Some(1))]));
        pending.absorb(2, changes(&[("/a", Some(2))]));
        pending.absorb(3, changes(&[("/b", None)]));
        pending.retire(1);
        assert_eq!(pending.get("/a"), Some(&Some(view(2))));
        assert_eq!(pending.get("/b"), Some(&None));
        pending.retire(2);
        assert_eq!(pending.get("/a"), None);
        assert_eq!(pending.get("/b"), Some(&None));
        pending.retire(3);
        assert!(pending.is_empty());
        assert!(pending.order.is_empty());
    }

    fn owned(version: i32, owner: i64) -> Option<View> {
        Some(View { owner, ..view(version) })
    }

    #[test]
    fn the_owner_index_and_the_weight_follow_each_paths_latest_change() {
        let mut pending = Pending::new();
        let one = |path: &str, view: Option<View>| Changes(vec![(Arc::from(path), view)]);
        pending.absorb(1, one("/e", owned(0, 7)));
        pending.absorb(1, one("/f", owned(0, 7)));
        pending.absorb(2, one("/e", owned(1, 7)));
        pending.check().unwrap();
        let mine = |p: &Pending, s| {
            let mut paths: Vec<&str> = p.ephemerals_of(s).collect();
            paths.sort_unstable();
            paths.into_iter().map(str::to_owned).collect::<Vec<_>>()
        };
        assert_eq!(mine(&pending, 7), ["/e", "/f"]);
        // Deleted, then recreated by another session: the index follows.
        pending.absorb(3, one("/f", None));
        assert_eq!(mine(&pending, 7), ["/e"]);
        pending.absorb(4, one("/f", owned(0, 8)));
        assert_eq!((mine(&pending, 7), mine(&pending, 8)), (vec!["/e".to_owned()], vec!["/f".to_owned()]));
        pending.check().unwrap();
        let weight = pending.bytes();
        pending.retire(2);
        pending.check().unwrap();
        assert!(pending.bytes() < weight, "retiring gives weight back");
        assert_eq!(mine(&pending, 7), Vec::<String>::new(), "/e retired: the tree says it now");
        assert_eq!(mine(&pending, 8), ["/f"]);
        pending.retire(4);
        pending.check().unwrap();
        assert_eq!((pending.bytes(), pending.owned.len()), (0, 0));
        pending.absorb(5, one("/g", owned(0, 9)));
        pending.clear();
        pending.check().unwrap();
        assert_eq!(pending.bytes(), 0);
    }

    #[test]
    fn the_weight_counts_paths_but_not_shared_acls() {
        let mut pending = Pending::new();
        let long = "/".to_owned() + &"p".repeat(10_000);
        pending.absorb(1, Changes(vec![(Arc::from(long.as_str()), Some(view(0)))]));
        assert!(pending.bytes() > 10_000, "{}", pending.bytes());
        let acl: Arc<[Acl]> = (0..100)
            .map(|i| Acl { perms: 31, id: crate::acl::Id::new("digest", &format!("user{i}:{}", "h".repeat(100))) })
            .collect();
        let before = pending.bytes();
        pending.absorb(2, Changes(vec![(Arc::from("/a"), Some(View { acl, ..view(0) }))]));
        assert!(pending.bytes() - before < 1_000, "{}", pending.bytes() - before);
        pending.check().unwrap();
    }

    #[test]
    fn a_burst_gives_its_memory_back_once_retired() {
        let mut pending = Pending::new();
        let many: Vec<(String, Option<i32>)> = (0..100_000).map(|i| (format!("/e{i}"), None)).collect();
        let list: Vec<(&str, Option<i32>)> = many.iter().map(|(p, v)| (p.as_str(), *v)).collect();
        pending.absorb(7, changes(&list));
        assert_eq!(pending.len(), 100_000);
        pending.retire(7);
        // (A hash map keeps room for a few more than it was asked to.)
        assert!(pending.latest.capacity() < 2 * KEEP_CAPACITY, "{}", pending.latest.capacity());
        assert!(pending.order.capacity() < 2 * KEEP_CAPACITY, "{}", pending.order.capacity());
    }

    #[test]
    #[should_panic(expected = "absorbed after")]
    fn proposals_are_absorbed_in_order() {
        let mut pending = Pending::new();
        pending.absorb(2, changes(&[("/a", Some(1))]));
        pending.absorb(1, changes(&[("/a", Some(2))]));
    }
}
