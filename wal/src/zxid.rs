//! The zxid: ZooKeeper's transaction id, the key of every WAL record.
//!
//! A zxid is `epoch << 32 | counter`: the high 32 bits name the leader's epoch, the low 32 bits count the
//! proposals of that epoch. Zxids only grow, so the log uses them as its order.

use std::fmt;

/// A leader epoch: the high half of a [`Zxid`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u32);

/// A ZooKeeper transaction id (`epoch << 32 | counter`).
///
/// `Zxid::ZERO` means "nothing": no record in the log ever carries it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Zxid(pub u64);

impl Zxid {
    /// The zxid before every real one.
    pub const ZERO: Zxid = Zxid(0);

    /// Builds a zxid from its epoch and its counter within the epoch.
    pub const fn new(epoch: Epoch, counter: u32) -> Zxid {
        Zxid(((epoch.0 as u64) << 32) | counter as u64)
    }

    /// The epoch of the leader that proposed this zxid.
    pub const fn epoch(self) -> Epoch {
        Epoch((self.0 >> 32) as u32)
    }

    /// The position of this zxid within its epoch.
    pub const fn counter(self) -> u32 {
        // Keeping the low 32 bits is the point of this cast.
        (self.0 & 0xffff_ffff) as u32
    }

    /// The next zxid of the same epoch, or `None` when the counter would overflow (a new epoch is needed).
    pub fn next_in_epoch(self) -> Option<Zxid> {
        self.counter().checked_add(1).map(|c| Zxid::new(self.epoch(), c))
    }
}

impl fmt::Display for Zxid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:x}", self.0)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_counter_round_trip() {
        let z = Zxid::new(Epoch(7), 42);
        assert_eq!(z.0, (7u64 << 32) | 42);
        assert_eq!(z.epoch(), Epoch(7));
        assert_eq!(z.counter(), 42);
        assert_eq!(z.to_string(), "0x70000002a");
    }

    #[test]
    fn counter_overflow_needs_a_new_epoch() {
        assert_eq!(Zxid::new(Epoch(1), u32::MAX).next_in_epoch(), None);
        assert_eq!(Zxid::new(Epoch(1), 5).next_in_epoch(), Some(Zxid::new(Epoch(1), 6)));
    }
}
