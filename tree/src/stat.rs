//! A znode's metadata: what the tree keeps ([`StatPersisted`]) and what clients see ([`Stat`]).
//!
//! Jute `Stat`, 68 bytes, big-endian:
//!
//! ```text
//!  0 czxid  8 mzxid  16 ctime  24 mtime  32 version  36 cversion  40 aversion  44 ephemeralOwner
//!  52 dataLength  56 numChildren  60 pzxid  (68)
//! ```

use bytes::Buf;

use crate::jute::{JuteError, JuteRead, JuteWrite};

/// The owner value of container nodes (`EphemeralType.CONTAINER_EPHEMERAL_OWNER`).
pub const CONTAINER_OWNER: i64 = i64::MIN;
/// Owner values with these bits set are extended types (TTL nodes).
pub const EXTENDED_MASK: i64 = 0xff00_0000_0000_0000_u64 as i64;
/// The largest TTL, in milliseconds.
pub const MAX_TTL: i64 = 0x0000_00ff_ffff_ffff;

/// What a node's `ephemeralOwner` field means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerKind {
    /// A persistent node (owner 0).
    Persistent,
    /// An ephemeral node of this session.
    Ephemeral(i64),
    /// A container node.
    Container,
    /// A persistent node with a TTL in milliseconds.
    Ttl(i64),
}

impl OwnerKind {
    /// Decodes an owner field.
    pub fn of(owner: i64) -> OwnerKind {
        match owner {
            0 => OwnerKind::Persistent,
            CONTAINER_OWNER => OwnerKind::Container,
            o if o & EXTENDED_MASK == EXTENDED_MASK && (o >> 40) & 0xffff == 0 => OwnerKind::Ttl(o & MAX_TTL),
            o => OwnerKind::Ephemeral(o),
        }
    }

    /// The owner field for a TTL node.
    pub fn ttl_owner(ttl: i64) -> Option<i64> {
        (1..=MAX_TTL).contains(&ttl).then_some(EXTENDED_MASK | ttl)
    }
}

/// The metadata the tree stores for each node (`StatPersisted`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatPersisted {
    /// The zxid that created the node.
    pub czxid: i64,
    /// The zxid that last changed its data.
    pub mzxid: i64,
    /// Creation time, ms since the epoch.
    pub ctime: i64,
    /// Last data change time.
    pub mtime: i64,
    /// Data version.
    pub version: i32,
    /// Child creations so far (ZooKeeper's persisted form; clients see creations plus deletions).
    pub cversion: i32,
    /// ACL version.
    pub aversion: i32,
    /// The owning session, or a container / TTL marker, or 0.
    pub ephemeral_owner: i64,
    /// The zxid that last changed its children.
    pub pzxid: i64,
}

impl StatPersisted {
    /// The stat of a node created at `zxid`.
    pub fn created(zxid: i64, time: i64, ephemeral_owner: i64) -> StatPersisted {
        StatPersisted {
            czxid: zxid,
            mzxid: zxid,
            ctime: time,
            mtime: time,
            pzxid: zxid,
            ephemeral_owner,
            ..Default::default()
        }
    }

    /// What a client sees, for a node with `data_length` bytes of data and `num_children` children.
    pub fn to_client(&self, data_length: usize, num_children: usize) -> Stat {
        let num_children = i32::try_from(num_children).unwrap_or(i32::MAX);
        Stat {
            czxid: self.czxid,
            mzxid: self.mzxid,
            ctime: self.ctime,
            mtime: self.mtime,
            version: self.version,
            cversion: self.cversion.wrapping_mul(2).wrapping_sub(num_children),
            aversion: self.aversion,
            ephemeral_owner: match OwnerKind::of(self.ephemeral_owner) {
                OwnerKind::Ephemeral(owner) => owner,
                _ => 0,
            },
            data_length: i32::try_from(data_length).unwrap_or(i32::MAX),
            num_children,
            pzxid: self.pzxid,
        }
    }

    /// Encodes the 60-byte jute `StatPersisted`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.write_long(self.czxid);
        out.write_long(self.mzxid);
        out.write_long(self.ctime);
        out.write_long(self.mtime);
        out.write_int(self.version);
        out.write_int(self.cversion);
        out.write_int(self.aversion);
        out.write_long(self.ephemeral_owner);
        out.write_long(self.pzxid);
    }

    /// Decodes a jute `StatPersisted`.
    pub fn read(buf: &mut impl Buf) -> Result<StatPersisted, JuteError> {
        Ok(StatPersisted {
            czxid: buf.read_long()?,
            mzxid: buf.read_long()?,
            ctime: buf.read_long()?,
            mtime: buf.read_long()?,
            version: buf.read_int()?,
            cversion: buf.read_int()?,
            aversion: buf.read_int()?,
            ephemeral_owner: buf.read_long()?,
            pzxid: buf.read_long()?,
        })
    }
}

/// The `Stat` clients see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Stat {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
    pub pzxid: i64,
}

impl Stat {
    /// Encoded size.
    pub const LEN: usize = 68;

    /// Encodes the jute `Stat`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.write_long(self.czxid);
        out.write_long(self.mzxid);
        out.write_long(self.ctime);
        out.write_long(self.mtime);
        out.write_int(self.version);
        out.write_int(self.cversion);
        out.write_int(self.aversion);
        out.write_long(self.ephemeral_owner);
        out.write_int(self.data_length);
        out.write_int(self.num_children);
        out.write_long(self.pzxid);
    }

    /// Decodes a jute `Stat`.
    pub fn read(buf: &mut impl Buf) -> Result<Stat, JuteError> {
        Ok(Stat {
            czxid: buf.read_long()?,
            mzxid: buf.read_long()?,
            ctime: buf.read_long()?,
            mtime: buf.read_long()?,
            version: buf.read_int()?,
            cversion: buf.read_int()?,
            aversion: buf.read_int()?,
            ephemeral_owner: buf.read_long()?,
            data_length: buf.read_int()?,
            num_children: buf.read_int()?,
            pzxid: buf.read_long()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn stat_round_trips(v in proptest::array::uniform11(any::<i64>())) {
            let stat = Stat {
                czxid: v[0], mzxid: v[1], ctime: v[2], mtime: v[3], version: v[4] as i32, cversion: v[5] as i32,
                aversion: v[6] as i32, ephemeral_owner: v[7], data_length: v[8] as i32, num_children: v[9] as i32, pzxid: v[10],
            };
            let mut out = Vec::new();
            stat.write(&mut out);
            prop_assert_eq!(out.len(), Stat::LEN);
            prop_assert_eq!(Stat::read(&mut &out[..]).unwrap(), stat);
        }
    }

    #[test]
    fn stat_layout_offsets() {
        let stat = Stat { version: 0x11223344, pzxid: 0x55, ephemeral_owner: 0x66, ..Stat::default() };
        let mut out = Vec::new();
        stat.write(&mut out);
        assert_eq!(&out[32..36], &[0x11, 0x22, 0x33, 0x44]);
        assert_eq!(out[51], 0x66);
        assert_eq!(out[67], 0x55);
    }

    #[test]
    fn client_cversion_counts_creations_and_deletions() {
        let stat = StatPersisted { cversion: 5, ..Default::default() };
        // 5 created, 2 left: 3 deleted; clients see 5 + 3.
        assert_eq!(stat.to_client(0, 2).cversion, 8);
        assert_eq!(StatPersisted::default().to_client(0, 1).cversion, -1, "a fresh root shows -1, as in ZooKeeper");
    }

    #[test]
    fn owners_decode_to_their_kinds() {
        assert_eq!(OwnerKind::of(0), OwnerKind::Persistent);
        assert_eq!(OwnerKind::of(0x1234), OwnerKind::Ephemeral(0x1234));
        assert_eq!(OwnerKind::of(CONTAINER_OWNER), OwnerKind::Container);
        assert_eq!(OwnerKind::of(OwnerKind::ttl_owner(5000).unwrap()), OwnerKind::Ttl(5000));
        assert_eq!(OwnerKind::ttl_owner(0), None);
        let container = StatPersisted { ephemeral_owner: CONTAINER_OWNER, ..Default::default() };
        assert_eq!(container.to_client(0, 0).ephemeral_owner, 0, "containers show owner 0");
    }
}
