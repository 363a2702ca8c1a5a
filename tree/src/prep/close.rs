//! The leader's prep of a closeSession: the txn lists every ephemeral the session owns once the pending
//! proposals apply, and its changes delete them and take them off their parents' child counts.
//!
//! A session may own any number of ephemerals (the hostile-client suite's make 200,000), and the applier waits
//! for the tree's write lock while prep holds the read lock: one hold for the whole walk stalled every commit
//! behind it (164 ms at 200,000). So the walk reads the committed tree in holds of at most [`SLICE`] paths, and
//! does everything else (the copies, the sort, the changes) holding nothing.
//!
//! # Why several holds give the answer one would
//! The committed tree changes only by applying proposals of this leader, and `pending` holds every change of
//! each of them until the leader retires it once applied, which it does not do while it preps (`pending` is
//! borrowed for the whole prep). So the tree seen through `pending` is the same before, between and after the
//! holds, and every read below goes through `pending` first.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;

use crate::code::op;
use crate::path;
use crate::pending::{Changes, Pending, View};
use crate::tree::DataTree;
use crate::txn::Txn;

use super::{view, Prepared};

/// The most paths read from the committed tree in one hold of its lock (a hold is then about 100 us).
pub const SLICE: usize = 1024;

/// Preps the close of `session`, reading the committed tree through `read` (which takes its lock) in holds of
/// at most [`SLICE`] paths.
pub fn prep_close<G: Deref<Target = DataTree>>(read: impl FnMut() -> G, pending: &Pending, session: i64) -> Prepared {
    prep_close_in_slices(read, pending, session, SLICE)
}

/// [`prep_close`] with holds of at most `slice` paths (tests take small ones).
pub fn prep_close_in_slices<G: Deref<Target = DataTree>>(
    mut read: impl FnMut() -> G,
    pending: &Pending,
    session: i64,
    slice: usize,
) -> Prepared {
    assert!(slice > 0, "a hold must read something");
    let mut paths = committed_ephemerals(&mut read, pending, session, slice);
    paths.extend(pending.ephemerals_of(session).map(str::to_owned));
    // Path order, as the txn lists them and every server deletes them (the tree's set is in order already; the
    // pending ones are few).
    paths.sort_unstable();
    // An ephemeral has no children, so no listed path is another's parent: each parent loses exactly its listed
    // children, and every path is deleted once.
    let mut lost_children: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &paths {
        *lost_children.entry(path::parent(p)).or_default() += 1;
    }
    let parents: Vec<(&str, usize)> = lost_children.into_iter().collect();
    let mut changes = Vec::with_capacity(paths.len() + parents.len());
    for chunk in parents.chunks(slice) {
        let tree = read();
        for &(parent, lost) in chunk {
            // (A parent gone is a tree that broke its invariants; the delete answers for itself when applied.)
            if let Some(node) = view(&tree, pending, parent) {
                // As the tree deletes each: the parent loses a child (its cversion stays).
                let children = node.children.saturating_sub(lost);
                changes.push((Arc::from(parent), Some(View { children, ..node })));
            }
        }
    }
    changes.extend(paths.iter().map(|p| (Arc::from(p.as_str()), None)));
    Prepared { op: op::CLOSE_SESSION, txn: Txn::CloseSession { paths }, changes: Changes(changes) }
}

/// The committed ephemerals of `session` that no pending proposal touched, read `slice` at a time, each hold
/// resuming after the last path the one before it read.
fn committed_ephemerals<G: Deref<Target = DataTree>>(
    read: &mut impl FnMut() -> G,
    pending: &Pending,
    session: i64,
    slice: usize,
) -> Vec<String> {
    let mut paths = Vec::new();
    // This hold's paths: `paths` grows (and copies itself) between holds, not during one.
    let mut held = Vec::with_capacity(slice);
    let mut last: Option<String> = None;
    loop {
        let tree = read();
        let mut read_here = 0;
        let mut next_last = None;
        for p in tree.ephemerals_after(session, last.as_deref()).take(slice) {
            debug_assert!(last.as_deref() < Some(p), "the walk moves forward");
            read_here += 1;
            next_last = Some(p);
            // One a pending proposal touched is as `pending` says (the pending ones are added after).
            if pending.get(p).is_none() {
                held.push(p.to_owned());
            }
        }
        last = next_last.map(str::to_owned);
        drop(tree);
        paths.append(&mut held);
        if read_here < slice {
            return paths;
        }
    }
}
