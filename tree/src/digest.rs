//! The tree digest (ZooKeeper 3.6+ `DigestCalculator`, version 2), kept incrementally.
//!
//! A node's digest is the CRC32 (IEEE) of its path (`""` for the root), its data, and this 60-byte big-endian
//! block (not the `Stat` order):
//!
//! ```text
//!  czxid 8 | mzxid 8 | pzxid 8 | ctime 8 | mtime 8 | version 4 | cversion 4 | aversion 4 | ephemeralOwner 8
//! ```
//!
//! The tree digest is the wrapping 64-bit sum of the digests of every node except those under `/zookeeper/`
//! (`/zookeeper` itself counts). Adding, removing or changing a node adjusts the sum, so reading it is free.
//! ACLs and children are not part of it.

use crate::stat::StatPersisted;

/// The digest format version (ZooKeeper's `DIGEST_VERSION`).
pub const DIGEST_VERSION: i32 = 2;

/// The digest of one node (0 for nodes the digest leaves out).
pub fn node_digest(path: &str, data: &[u8], stat: &StatPersisted) -> u64 {
    if path.starts_with("/zookeeper/") {
        return 0;
    }
    let path = if path == "/" { "" } else { path };
    let mut block = [0u8; 60];
    let longs = [stat.czxid, stat.mzxid, stat.pzxid, stat.ctime, stat.mtime];
    for (i, v) in longs.iter().enumerate() {
        block[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
    }
    block[40..44].copy_from_slice(&stat.version.to_be_bytes());
    block[44..48].copy_from_slice(&stat.cversion.to_be_bytes());
    block[48..52].copy_from_slice(&stat.aversion.to_be_bytes());
    block[52..60].copy_from_slice(&stat.ephemeral_owner.to_be_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(path.as_bytes());
    crc.update(data);
    crc.update(&block);
    u64::from(crc.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zookeeper_subtree_is_left_out_but_its_root_is_not() {
        let stat = StatPersisted::default();
        assert_eq!(node_digest("/zookeeper/quota", b"", &stat), 0);
        assert_ne!(node_digest("/zookeeper", b"", &stat), 0);
        assert_eq!(node_digest("/", b"", &stat), node_digest("", b"", &stat));
    }

    #[test]
    fn every_digested_field_changes_the_digest() {
        let base = StatPersisted::created(5, 100, 0);
        let d = node_digest("/a", b"x", &base);
        let changed = [
            StatPersisted { mzxid: 6, ..base },
            StatPersisted { pzxid: 6, ..base },
            StatPersisted { mtime: 101, ..base },
            StatPersisted { version: 1, ..base },
            StatPersisted { cversion: 1, ..base },
            StatPersisted { aversion: 1, ..base },
            StatPersisted { ephemeral_owner: 9, ..base },
        ];
        for stat in changed {
            assert_ne!(node_digest("/a", b"x", &stat), d, "{stat:?}");
        }
        assert_ne!(node_digest("/a", b"y", &base), d);
        assert_ne!(node_digest("/b", b"x", &base), d);
    }
}
