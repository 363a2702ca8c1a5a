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

use std::collections::{HashMap, VecDeque};
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

/// The changes of pending proposals, by path.
#[derive(Debug, Default)]
pub struct Pending {
    latest: HashMap<Arc<str>, Change>,
    order: VecDeque<(u64, Arc<str>)>,
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

    /// Forgets every change (the proposals failed: the committed tree is the truth again).
    pub fn clear(&mut self) {
        self.latest.clear();
        self.order.clear();
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
        self.latest
            .iter()
            .filter(move |(_, c)| c.view.as_ref().is_some_and(|v| v.owner == session))
            .map(|(path, _)| &**path)
    }

    /// Adds the changes of proposal `seq`, which must not be older than any absorbed before.
    pub fn absorb(&mut self, seq: u64, changes: Changes) {
        if let Some(&(last, _)) = self.order.back() {
            assert!(seq >= last, "proposal {seq} absorbed after {last}");
        }
        for (path, view) in changes.0 {
            self.order.push_back((seq, path.clone()));
            self.latest.insert(path, Change { view, seq });
        }
    }

    /// Retires the changes of every proposal up to `seq`: the committed tree has applied them.
    pub fn retire(&mut self, seq: u64) {
        while let Some((tag, _)) = self.order.front() {
            if *tag > seq {
                break;
            }
            let (tag, path) = self.order.pop_front().expect("front exists");
            // A later proposal that touched the path re-tagged it: its change stays.
            if self.latest.get(&path).is_some_and(|change| change.seq == tag) {
                self.latest.remove(&path);
            }
        }
        if self.order.is_empty() {
            self.shrink();
        }
    }

    fn shrink(&mut self) {
        if self.latest.capacity() > KEEP_CAPACITY {
            self.latest.shrink_to(KEEP_CAPACITY);
        }
        if self.order.capacity() > KEEP_CAPACITY {
            self.order.shrink_to(KEEP_CAPACITY);
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
