//! The divergence check: servers compare tree digests at the same zxids.
//!
//! Every server records its tree digest (ZooKeeper's digest v2, kept incrementally by the tree) after applying
//! a *sampled* zxid: one whose counter is a multiple of [`EVERY`]. The leader sends its samples to the
//! followers (`Forward::Digest`); a follower compares each with its own at the same zxid, whichever arrives
//! second. Applying the same committed txns in the same order must give the same digest; a mismatch means this
//! server's tree differs from the leader's (a bug, a bad disk, a bad replay), and it stops serving rather than
//! answer reads from a wrong tree.

use std::collections::BTreeMap;

/// Digests are compared at zxids whose counter (the low 32 bits) is a multiple of this.
pub const EVERY: i64 = 1024;

/// Samples kept on each side while waiting for the other.
const KEPT: usize = 64;

/// Whether `zxid` is a sampled one.
pub fn sampled(zxid: i64) -> bool {
    (zxid & 0xffff_ffff) % EVERY == 0
}

/// A digest mismatch: the tree at `zxid` differs from the leader's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("tree digest at zxid 0x{zxid:x} is {ours:#x}, the leader's is {leaders:#x}: this server's tree diverged")]
pub struct Diverged {
    /// The zxid.
    pub zxid: i64,
    /// This server's digest.
    pub ours: u64,
    /// The leader's.
    pub leaders: u64,
}

/// Samples waiting for their counterpart.
#[derive(Debug, Default)]
pub struct DigestCheck {
    ours: BTreeMap<i64, u64>,
    leaders: BTreeMap<i64, u64>,
}

impl DigestCheck {
    /// This server's digest after applying `zxid`.
    pub fn ours(&mut self, zxid: i64, digest: u64) -> Result<(), Diverged> {
        match self.leaders.remove(&zxid) {
            Some(leaders) => compare(zxid, digest, leaders),
            None => {
                keep(&mut self.ours, zxid, digest);
                Ok(())
            }
        }
    }

    /// The leader's digest after applying `zxid`.
    pub fn leaders(&mut self, zxid: i64, digest: u64) -> Result<(), Diverged> {
        match self.ours.remove(&zxid) {
            Some(ours) => compare(zxid, ours, digest),
            None => {
                keep(&mut self.leaders, zxid, digest);
                Ok(())
            }
        }
    }
}

fn compare(zxid: i64, ours: u64, leaders: u64) -> Result<(), Diverged> {
    if ours == leaders {
        Ok(())
    } else {
        Err(Diverged { zxid, ours, leaders })
    }
}

/// Keeps the newest [`KEPT`] samples: one side may be far behind the other (a follower catching up), and the
/// samples it will never match (from before a restart, say) must not pile up.
fn keep(samples: &mut BTreeMap<i64, u64>, zxid: i64, digest: u64) {
    samples.insert(zxid, digest);
    while samples.len() > KEPT {
        samples.pop_first();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_digests_pass_in_either_order() {
        let mut check = DigestCheck::default();
        assert_eq!(check.ours(1024, 7), Ok(()));
        assert_eq!(check.leaders(1024, 7), Ok(()));
        assert_eq!(check.leaders(2048, 9), Ok(()));
        assert_eq!(check.ours(2048, 9), Ok(()));
        assert!(check.ours.is_empty() && check.leaders.is_empty());
    }

    #[test]
    fn a_mismatch_is_reported_whichever_side_comes_second() {
        let mut check = DigestCheck::default();
        check.ours(1024, 7).unwrap();
        assert_eq!(check.leaders(1024, 8), Err(Diverged { zxid: 1024, ours: 7, leaders: 8 }));
        check.leaders(2048, 1).unwrap();
        assert_eq!(check.ours(2048, 2), Err(Diverged { zxid: 2048, ours: 2, leaders: 1 }));
    }

    #[test]
    fn unmatched_samples_are_bounded() {
        let mut check = DigestCheck::default();
        for i in 0..1000 {
            check.ours(i * EVERY, 1).unwrap();
        }
        assert_eq!(check.ours.len(), KEPT);
    }

    #[test]
    fn sampling_uses_the_counter() {
        assert!(sampled((3 << 32) | 2048));
        assert!(!sampled((3 << 32) | 2049));
    }
}
