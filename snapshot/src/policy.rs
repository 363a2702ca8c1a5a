//! When to snapshot: every `snapCount` txns, randomised between snapCount/2 and snapCount so that the nodes of
//! an ensemble do not all snapshot at the same moment (ZooKeeper's `SyncRequestProcessor`), and never two at
//! once.

use std::sync::atomic::{AtomicBool, Ordering};

/// Counts applied txns and says when a snapshot is due.
#[derive(Debug)]
pub struct SnapPolicy {
    snap_count: u64,
    since_last: u64,
    threshold: u64,
    seed: u64,
    running: AtomicBool,
}

impl SnapPolicy {
    /// A policy for `snap_count` (ZooKeeper's default is 100,000), randomised from `seed`.
    pub fn new(snap_count: u64, seed: u64) -> SnapPolicy {
        let mut policy = SnapPolicy {
            snap_count: snap_count.max(2),
            since_last: 0,
            threshold: 0,
            seed: seed | 1,
            running: AtomicBool::new(false),
        };
        policy.threshold = policy.next_threshold();
        policy
    }

    fn next_threshold(&mut self) -> u64 {
        // xorshift64: deterministic per seed, and cheap.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = self.snap_count / 2;
        half + self.seed % (self.snap_count - half + 1)
    }

    /// Counts one applied txn; true if a snapshot should start now (none is running, and the threshold is
    /// reached). The caller must call [`SnapPolicy::finished`] when that snapshot ends.
    pub fn txn_applied(&mut self) -> bool {
        self.since_last += 1;
        if self.since_last < self.threshold || self.running.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.since_last = 0;
        self.threshold = self.next_threshold();
        true
    }

    /// The snapshot that [`SnapPolicy::txn_applied`] started has ended.
    pub fn finished(&self) {
        self.running.store(false, Ordering::Release);
    }

    /// The current threshold.
    pub fn threshold(&self) -> u64 {
        self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_fall_between_half_and_all_of_snap_count_and_vary() {
        let mut policy = SnapPolicy::new(100, 42);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let t = policy.next_threshold();
            assert!((50..=100).contains(&t), "{t}");
            seen.insert(t);
        }
        assert!(seen.len() > 10);
    }

    #[test]
    fn never_two_at_once() {
        let mut policy = SnapPolicy::new(10, 7);
        let mut started = 0;
        for _ in 0..100 {
            started += usize::from(policy.txn_applied());
        }
        assert_eq!(started, 1, "the first snapshot has not finished");
        policy.finished();
        let more = (0..20).filter(|_| policy.txn_applied()).count();
        assert_eq!(more, 1);
    }
}
