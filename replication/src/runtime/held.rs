//! Txns held in memory in zxid order: the ones appended and not yet durable, and the ones appended and not yet
//! handed to the node.
//!
//! Txns arrive in increasing zxid order and leave from the front (once durable, once delivered) or from the
//! back (a truncation), so a deque does what an ordered map did, without a tree node allocated and freed per
//! txn on every write's path.
//!
//! Invariant: zxids strictly increase from front to back (asserted on every push).

use std::collections::VecDeque;

use bytes::Bytes;
use wal::Zxid;

/// Txns in increasing zxid order.
#[derive(Debug, Default)]
pub(super) struct Held {
    txns: VecDeque<(Zxid, Bytes)>,
}

impl Held {
    /// Holds `txn` after every txn held.
    ///
    /// # Panics
    /// If `zxid` is not above the last zxid held: the runtime appends in zxid order.
    pub(super) fn push(&mut self, zxid: Zxid, txn: Bytes) {
        if let Some(&(last, _)) = self.txns.back() {
            assert!(zxid > last, "txns are held in zxid order: {zxid} after {last}");
        }
        self.txns.push_back((zxid, txn));
    }

    /// How many txns are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.txns.len()
    }

    /// Whether nothing is held.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    /// How many held txns have a zxid at most `zxid`.
    fn count_through(&self, zxid: Zxid) -> usize {
        self.txns.partition_point(|&(z, _)| z <= zxid)
    }

    /// Takes out every txn up to `zxid`, in order.
    pub(super) fn take_through(&mut self, zxid: Zxid) -> Vec<(Zxid, Bytes)> {
        let n = self.count_through(zxid);
        let taken = self.txns.drain(..n).collect();
        self.shrink();
        taken
    }

    /// Forgets every txn up to `zxid`.
    pub(super) fn forget_through(&mut self, zxid: Zxid) {
        let n = self.count_through(zxid);
        self.txns.drain(..n);
        self.shrink();
    }

    /// Forgets every txn after `zxid` (a truncation).
    pub(super) fn cut_after(&mut self, zxid: Zxid) {
        let n = self.count_through(zxid);
        self.txns.truncate(n);
        self.shrink();
    }

    /// Gives back most of the room a burst left (a long DIFF sync holds every txn until the follower is up to
    /// date): a deque keeps its largest capacity otherwise, for the life of the process.
    fn shrink(&mut self) {
        if self.txns.capacity() > SHRINK_ABOVE && self.txns.len() < self.txns.capacity() / 4 {
            self.txns.shrink_to(self.txns.len() * 2);
        }
    }

    /// The txns up to `zxid`, in order.
    pub(super) fn through(&self, zxid: Zxid) -> impl Iterator<Item = &(Zxid, Bytes)> + '_ {
        self.txns.range(..self.count_through(zxid))
    }

    /// Forgets everything.
    pub(super) fn clear(&mut self) {
        self.txns.clear();
        self.shrink();
    }
}

/// Capacity (in txns) a deque keeps however few it holds: what a steady stream of writes uses.
const SHRINK_ABOVE: usize = 1024;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Push(u64),
        Take(u64),
        Forget(u64),
        Cut(u64),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1..4u64).prop_map(Op::Push),
            1 => (0..64u64).prop_map(Op::Take),
            1 => (0..64u64).prop_map(Op::Forget),
            1 => (0..64u64).prop_map(Op::Cut),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        /// Held does what the ordered map it replaced did, for any sequence of the runtime's operations.
        #[test]
        fn held_txns_behave_as_an_ordered_map(ops in proptest::collection::vec(op(), 0..200)) {
            let (mut held, mut model) = (Held::default(), BTreeMap::<Zxid, Bytes>::new());
            let mut last = 0u64;
            for op in ops {
                match op {
                    Op::Push(gap) => {
                        last += gap;
                        let txn = Bytes::from(last.to_be_bytes().to_vec());
                        held.push(Zxid(last), txn.clone());
                        model.insert(Zxid(last), txn);
                    }
                    Op::Take(z) => {
                        let rest = model.split_off(&Zxid(z + 1));
                        let taken: Vec<_> = std::mem::replace(&mut model, rest).into_iter().collect();
                        prop_assert_eq!(held.take_through(Zxid(z)), taken);
                    }
                    Op::Forget(z) => {
                        model.retain(|&k, _| k > Zxid(z));
                        held.forget_through(Zxid(z));
                    }
                    Op::Cut(z) => {
                        model.retain(|&k, _| k <= Zxid(z));
                        held.cut_after(Zxid(z));
                    }
                    Op::Clear => {
                        model.clear();
                        held.clear();
                    }
                }
                prop_assert_eq!(held.len(), model.len());
                prop_assert_eq!(held.is_empty(), model.is_empty());
                let through: Vec<_> = held.through(Zxid(last / 2)).cloned().collect();
                let expected: Vec<_> = model.range(..=Zxid(last / 2)).map(|(&z, t)| (z, t.clone())).collect();
                prop_assert_eq!(through, expected);
            }
        }
    }

    #[test]
    fn the_room_a_burst_took_is_given_back() {
        let mut held = Held::default();
        for z in 1..=100_000 {
            held.push(Zxid(z), Bytes::new());
        }
        held.forget_through(Zxid(99_990));
        assert!(held.txns.capacity() <= 2 * SHRINK_ABOVE, "capacity {} for 10 txns", held.txns.capacity());
        for z in 100_001..=200_000 {
            held.push(Zxid(z), Bytes::new());
        }
        held.clear();
        assert!(held.txns.capacity() <= SHRINK_ABOVE, "capacity {} after a clear", held.txns.capacity());
    }

    #[test]
    #[should_panic(expected = "txns are held in zxid order")]
    fn a_txn_out_of_order_is_refused() {
        let mut held = Held::default();
        held.push(Zxid(5), Bytes::new());
        held.push(Zxid(5), Bytes::new());
    }
}
