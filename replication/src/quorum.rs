//! Majority quorums, and the commit point that cumulative acks imply.
//!
//! Acks are cumulative: a voter acking zxid Z says every proposal up to Z is durable in its log. So the highest
//! zxid that a quorum has made durable is the q-th highest of the voters' acks, where q is the quorum size; the
//! leader's own fsync counts as its vote.
//!
//! # Invariants
//! - The commit point never moves back.
//! - It never passes a zxid that fewer than a quorum of voters have acked.

use std::collections::{BTreeMap, BTreeSet};

use wal::Zxid;

use crate::message::ServerId;

/// The voting members of an ensemble.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voters(BTreeSet<ServerId>);

impl Voters {
    /// The voters; there must be at least one.
    pub fn new(voters: impl IntoIterator<Item = ServerId>) -> Voters {
        let set: BTreeSet<ServerId> = voters.into_iter().collect();
        assert!(!set.is_empty(), "an ensemble has at least one voter");
        Voters(set)
    }

    /// How many voters make a quorum: a strict majority.
    pub fn quorum_size(&self) -> usize {
        self.0.len() / 2 + 1
    }

    /// Whether `members` include a quorum of voters.
    pub fn is_quorum<'a>(&self, members: impl IntoIterator<Item = &'a ServerId>) -> bool {
        members.into_iter().filter(|m| self.0.contains(m)).collect::<BTreeSet<_>>().len() >= self.quorum_size()
    }

    /// Whether `id` votes.
    pub fn contains(&self, id: ServerId) -> bool {
        self.0.contains(&id)
    }

    /// The voters, in id order.
    pub fn iter(&self) -> impl Iterator<Item = ServerId> + '_ {
        self.0.iter().copied()
    }
}

/// Tracks cumulative acks and the commit point they imply.
#[derive(Clone, Debug)]
pub struct AckTracker {
    voters: Voters,
    acked: BTreeMap<ServerId, Zxid>,
    committed: Zxid,
}

impl AckTracker {
    /// A tracker whose commit point starts at `committed`.
    pub fn new(voters: Voters, committed: Zxid) -> AckTracker {
        AckTracker { voters, acked: BTreeMap::new(), committed }
    }

    /// Records that `from` has everything up to `zxid` durable; returns the new commit point if it moved.
    /// Acks from non-voters (observers) and acks that go backwards are ignored.
    pub fn ack(&mut self, from: ServerId, zxid: Zxid) -> Option<Zxid> {
        if !self.voters.contains(from) {
            return None;
        }
        let entry = self.acked.entry(from).or_insert(Zxid::ZERO);
        *entry = (*entry).max(zxid);
        let mut acks: Vec<Zxid> = self.acked.values().copied().collect();
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let point = acks.get(self.voters.quorum_size() - 1).copied()?;
        if point > self.committed {
            self.committed = point;
            return Some(point);
        }
        None
    }

    /// Forgets a voter's acks (it disconnected; it acks again after it re-syncs).
    pub fn forget(&mut self, voter: ServerId) {
        self.acked.remove(&voter);
    }

    /// The commit point.
    pub fn committed(&self) -> Zxid {
        self.committed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn voters(n: u64) -> Voters {
        Voters::new((1..=n).map(ServerId))
    }

    #[test]
    fn quorum_sizes() {
        assert_eq!(voters(1).quorum_size(), 1);
        assert_eq!(voters(3).quorum_size(), 2);
        assert_eq!(voters(4).quorum_size(), 3);
        assert_eq!(voters(5).quorum_size(), 3);
        assert!(voters(5).is_quorum(&[ServerId(1), ServerId(2), ServerId(5)]));
        assert!(!voters(5).is_quorum(&[ServerId(1), ServerId(1), ServerId(9)]));
    }

    #[test]
    fn commit_follows_the_quorum_th_highest_ack() {
        let mut t = AckTracker::new(voters(3), Zxid(0));
        assert_eq!(t.ack(ServerId(1), Zxid(10)), None, "one of three");
        assert_eq!(t.ack(ServerId(2), Zxid(7)), Some(Zxid(7)));
        assert_eq!(t.ack(ServerId(3), Zxid(12)), Some(Zxid(10)));
        assert_eq!(t.ack(ServerId(2), Zxid(5)), None, "acks never go back");
        assert_eq!(t.ack(ServerId(9), Zxid(99)), None, "observers do not vote");
        assert_eq!(t.committed(), Zxid(10));
    }

    proptest! {
        #[test]
        fn the_commit_point_is_always_backed_by_a_quorum(n in 1u64..8, acks in proptest::collection::vec((1u64..9, 1u64..100), 0..60)) {
            let v = voters(n);
            let mut t = AckTracker::new(v.clone(), Zxid(0));
            let mut highest: BTreeMap<ServerId, Zxid> = BTreeMap::new();
            let mut last = Zxid(0);
            for (from, z) in acks {
                let (from, z) = (ServerId(from), Zxid(z));
                t.ack(from, z);
                if v.contains(from) {
                    let e = highest.entry(from).or_insert(Zxid(0));
                    *e = (*e).max(z);
                }
                let c = t.committed();
                prop_assert!(c >= last, "the commit point moved back");
                last = c;
                if c > Zxid(0) {
                    let backing = highest.values().filter(|&&a| a >= c).count();
                    prop_assert!(backing >= v.quorum_size(), "commit {:?} backed by {} of {}", c, backing, n);
                }
            }
        }
    }
}
