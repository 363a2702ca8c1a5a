//! How the leader brings a follower to its history (Zab phase 2): the plan for one follower.
//!
//! - DIFF: the follower's last zxid is in the leader's history, and the leader still holds every txn after it
//!   (in memory or in the WAL): send those.
//! - TRUNC, then DIFF: the follower holds txns the leader does not (proposed by an old leader, never committed):
//!   it cuts its log after the last zxid the two share, durably, then gets the rest.
//! - SNAP: the follower is too far behind (the leader purged what it would need): ship a snapshot, then the
//!   txns after it.
//!
//! Whatever the plan, the follower makes the synced txns durable, then persists the new epoch as its current
//! epoch, then acknowledges NEWLEADER; Apache ZooKeeper lost committed data when followers did those steps in
//! another order (ZOOKEEPER-3911, -4643, -4646).

use wal::Zxid;

/// What the leader knows of its own history: the zxids it can still send as txns, and the zxid of the
/// snapshot its log begins after, if it was restarted from one (that zxid is part of the history too: a
/// follower that ends there needs only what follows).
pub trait History {
    /// The newest zxid.
    fn last(&self) -> Option<Zxid>;
    /// Whether the history holds exactly this zxid (as a txn it can send, or as its snapshot base).
    fn contains(&self, zxid: Zxid) -> bool;
    /// The newest zxid of the history (txn or snapshot base) that is below `zxid`.
    fn last_below(&self, zxid: Zxid) -> Option<Zxid>;
    /// Whether the history goes back to the very first txn (nothing was purged).
    fn complete(&self) -> bool;
}

/// The plan for one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPlan {
    /// Send every txn after `after` (none if the follower is up to date).
    Diff {
        /// The follower's last zxid, which the leader holds too.
        after: Zxid,
    },
    /// The follower cuts its log after `to`, then gets every txn after it.
    TruncThenDiff {
        /// The last zxid both share.
        to: Zxid,
    },
    /// Ship a snapshot, then the txns after it.
    Snap,
}

/// Plans the sync of a follower whose log ends at `follower_last`.
///
/// A follower's log is the leader's committed history up to some point, perhaps followed by txns of an older
/// epoch that were never committed; so the last zxid of the leader's history at or below the follower's end is
/// where the two agree (ZooKeeper's rule too).
pub fn plan(history: &impl History, follower_last: Zxid) -> SyncPlan {
    let Some(last) = history.last() else {
        // The leader has no history at all: an empty follower is in step, anyone else must cut everything.
        return if follower_last == Zxid::ZERO {
            SyncPlan::Diff { after: Zxid::ZERO }
        } else {
            SyncPlan::TruncThenDiff { to: Zxid::ZERO }
        };
    };
    if follower_last == last || history.contains(follower_last) {
        return SyncPlan::Diff { after: follower_last };
    }
    match history.last_below(follower_last) {
        Some(shared) => SyncPlan::TruncThenDiff { to: shared },
        // With the whole history at hand, what the follower has before the leader's first txn was never
        // committed (the leader would hold it): it cuts everything. Otherwise that part of the history exists
        // only in snapshots: ship one.
        None if history.complete() && follower_last == Zxid::ZERO => SyncPlan::Diff { after: Zxid::ZERO },
        None if history.complete() => SyncPlan::TruncThenDiff { to: Zxid::ZERO },
        None => SyncPlan::Snap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use wal::Epoch;

    struct Log(BTreeSet<Zxid>, bool);

    impl History for Log {
        fn complete(&self) -> bool {
            self.1
        }
        fn last(&self) -> Option<Zxid> {
            self.0.last().copied()
        }
        fn contains(&self, zxid: Zxid) -> bool {
            self.0.contains(&zxid)
        }
        fn last_below(&self, zxid: Zxid) -> Option<Zxid> {
            self.0.range(..zxid).next_back().copied()
        }
    }

    fn z(e: u32, c: u32) -> Zxid {
        Zxid::new(Epoch(e), c)
    }

    /// A history that goes back to the first txn.
    fn log(zxids: &[Zxid]) -> Log {
        Log(zxids.iter().copied().collect(), true)
    }

    /// A history whose older part was purged.
    fn purged(zxids: &[Zxid]) -> Log {
        Log(zxids.iter().copied().collect(), false)
    }

    #[test]
    fn an_up_to_date_or_lagging_follower_gets_a_diff() {
        let l = log(&[z(1, 1), z(1, 2), z(1, 3), z(2, 1)]);
        assert_eq!(plan(&l, z(2, 1)), SyncPlan::Diff { after: z(2, 1) });
        assert_eq!(plan(&l, z(1, 2)), SyncPlan::Diff { after: z(1, 2) });
        assert_eq!(plan(&l, z(1, 1)), SyncPlan::Diff { after: z(1, 1) });
    }

    #[test]
    fn a_follower_with_uncommitted_txns_of_an_old_epoch_truncates() {
        // The follower logged (1,4) and (1,5) from an old leader that died before committing them; the new
        // leader went on with epoch 2.
        let l = log(&[z(1, 1), z(1, 2), z(1, 3), z(2, 1), z(2, 2)]);
        assert_eq!(plan(&l, z(1, 5)), SyncPlan::TruncThenDiff { to: z(1, 3) });
        // Ahead of the leader's end in the same epoch: cut back to the leader's end.
        let l = log(&[z(1, 1), z(1, 2)]);
        assert_eq!(plan(&l, z(1, 4)), SyncPlan::TruncThenDiff { to: z(1, 2) });
    }

    #[test]
    fn a_follower_behind_the_oldest_retained_txn_gets_a_snapshot() {
        let l = purged(&[z(3, 10), z(3, 11)]);
        assert_eq!(plan(&l, z(2, 7)), SyncPlan::Snap);
        assert_eq!(plan(&l, Zxid::ZERO), SyncPlan::Snap);
        // Inside the range but divergent, with nothing shared the leader still holds.
        let l = purged(&[z(3, 10), z(3, 12)]);
        assert_eq!(plan(&l, z(3, 11)), SyncPlan::TruncThenDiff { to: z(3, 10) });
        assert_eq!(plan(&purged(&[z(3, 12)]), z(3, 11)), SyncPlan::Snap);
    }

    #[test]
    fn a_leader_restarted_from_a_snapshot_counts_its_base_as_history() {
        // The leader installed a snapshot at (3,5) and holds no txn after it yet (the base is the only zxid).
        let l = purged(&[z(3, 5)]);
        assert_eq!(plan(&l, z(3, 5)), SyncPlan::Diff { after: z(3, 5) });
        assert_eq!(plan(&l, z(3, 4)), SyncPlan::Snap);
        assert_eq!(plan(&l, Zxid::ZERO), SyncPlan::Snap, "an empty follower cannot start from nothing");
        assert_eq!(plan(&l, z(3, 7)), SyncPlan::TruncThenDiff { to: z(3, 5) });
        // And with txns after the base.
        let l = purged(&[z(3, 5), z(3, 6), z(4, 1)]);
        assert_eq!(plan(&l, z(3, 5)), SyncPlan::Diff { after: z(3, 5) });
        assert_eq!(plan(&l, z(3, 9)), SyncPlan::TruncThenDiff { to: z(3, 6) });
    }

    #[test]
    fn a_follower_whose_whole_log_predates_a_complete_history_cuts_it_all() {
        let l = log(&[z(2, 1), z(2, 2)]);
        assert_eq!(plan(&l, z(1, 5)), SyncPlan::TruncThenDiff { to: Zxid::ZERO });
    }

    #[test]
    fn an_empty_follower_of_a_full_history_gets_a_diff() {
        let l = log(&[z(1, 1), z(1, 2)]);
        assert_eq!(plan(&l, Zxid::ZERO), SyncPlan::Diff { after: Zxid::ZERO });
    }

    #[test]
    fn a_leader_without_txns() {
        let l = log(&[]);
        assert_eq!(plan(&l, Zxid::ZERO), SyncPlan::Diff { after: Zxid::ZERO });
        assert_eq!(plan(&l, z(1, 3)), SyncPlan::TruncThenDiff { to: Zxid::ZERO });
    }
}
