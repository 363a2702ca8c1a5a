//! ZooKeeper's snapshot (`FileSnap`, `SerializeUtils.serializeSnapshot`, `DataTree.serialize`), decoded as a
//! stream and encoded by [`SnapshotWriter`] byte for byte as ZooKeeper 3.8 writes it.
//!
//! ```text
//!  FileHeader           "ZKSN" | 2 | dbid -1                                  (see crate::header)
//!  sessions             int count | count × (long id | int timeout)
//!  ACL cache            int count | count × (long index | vector<ACL>)       ACL: int perms | ustring scheme | ustring id
//!  nodes, pre-order     ustring path | DataNode, ... ; the root's path is "", its children "/a", "/a/b", ...
//!     DataNode          buffer data (-1: null) | long acl index (-1: OPEN_ACL_UNSAFE) | StatPersisted (60 bytes)
//!  end of nodes         ustring "/"
//!  seal                 long Adler32 of every byte before it | ustring "/"
//!  digest (3.6+)        long zxid | int digestVersion | long digest           (version < 2: ustring hex digest)
//!  seal                 long Adler32 of every byte before it | ustring "/"
//! ```
//!
//! The stream is the decompressed one for `.gz` and `.snappy` files. The snapshot is *fuzzy*: it is named by
//! the last zxid applied when the copy began and holds some txns after it; the digest records the zxid the tree
//! had reached when the copy ended, and the tree's digest there.
//!
//! # Limits
//! Every length is at most the limit given (ZooKeeper's `jute.maxbuffer + jute.maxbuffer.extrasize`, and the
//! file's size for plain files), checked before allocating; counts allocate nothing up front.
//!
//! # Invariants
//! - The first node is the root; every other node's parent comes before it.
//! - Each seal equals the Adler32 of every byte before it.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;

use tree::acl::{write_acls, Acl};
use tree::jute::JuteWrite;
use tree::stat::StatPersisted;
use tree::tree::Data;

use crate::error::{Corruption, ZkDataError};
use crate::header::{FileHeader, SNAP_DBID, SNAP_MAGIC, VERSION};
use crate::input::Input;

/// The digest a 3.6+ snapshot records after its seal (`DataTree.ZxidDigest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZxidDigest {
    /// The zxid the tree had reached when the copy ended (0: none recorded).
    pub zxid: i64,
    /// `DigestCalculator`'s version (2 since 3.6).
    pub version: i32,
    /// The tree digest at `zxid`.
    pub digest: u64,
}

/// One node as a snapshot holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotNode {
    /// The full path; `/` for the root (written `""`).
    pub path: String,
    /// The data, null kept apart from empty.
    pub data: Data,
    /// The index of its ACL list in the ACL cache (-1: `OPEN_ACL_UNSAFE`).
    pub acl: i64,
    /// The stat.
    pub stat: StatPersisted,
}

/// What a snapshot holds besides its nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The header's dbid.
    pub dbid: i64,
    /// Sessions and their timeouts, in file order.
    pub sessions: Vec<(i64, i32)>,
    /// The ACL cache: index to list.
    pub acls: BTreeMap<i64, Vec<Acl>>,
    /// How many nodes it holds.
    pub nodes: u64,
    /// The digest, if the snapshot records one.
    pub digest: Option<ZxidDigest>,
    /// Bytes of the (decompressed) stream.
    pub bytes: u64,
}

/// `ReferenceCountedACLCache.OPEN_UNSAFE_ACL_ID`.
pub const OPEN_ACL_INDEX: i64 = -1;

/// Reads a snapshot from its decompressed stream, handing each node to `on_node` with the ACL cache read so
/// far (which is complete: it precedes the nodes). An error from `on_node` is reported at the node's offset.
pub fn read<R: Read>(
    stream: R,
    file: &Path,
    max_len: u64,
    mut on_node: impl FnMut(&BTreeMap<i64, Vec<Acl>>, SnapshotNode) -> Result<(), String>,
) -> Result<SnapshotMeta, ZkDataError> {
    let mut input = Input::new(stream, file, max_len);
    let header = FileHeader::read(&mut input, SNAP_MAGIC, "a ZooKeeper snapshot")?;
    let mut meta = SnapshotMeta { dbid: header.dbid, ..SnapshotMeta::default() };
    let count = input.int()?;
    for _ in 0..count {
        meta.sessions.push((input.long()?, input.int()?));
    }
    let count = input.int()?;
    for _ in 0..count {
        let (at, index) = (input.offset(), input.long()?);
        if meta.acls.insert(index, input.acls()?).is_some() {
            return Err(input.corrupt(at, Corruption::Invalid(format!("ACL index {index} defined twice"))));
        }
    }
    loop {
        let at = input.offset();
        let path = input.string()?;
        if path == "/" {
            break;
        }
        let first = meta.nodes == 0;
        if first != path.is_empty() || (!first && !path.starts_with('/')) {
            return Err(input.corrupt(at, Corruption::Invalid(format!("node path {path:?} out of place"))));
        }
        let node = SnapshotNode {
            path: if first { "/".to_owned() } else { path },
            data: input.buffer()?,
            acl: input.long()?,
            stat: read_stat(&mut input)?,
        };
        if node.acl != OPEN_ACL_INDEX && !meta.acls.contains_key(&node.acl) {
            let reason = format!("{} uses ACL index {}, which the ACL cache does not hold", node.path, node.acl);
            return Err(input.corrupt(at, Corruption::Invalid(reason)));
        }
        on_node(&meta.acls, node).map_err(|reason| input.corrupt(at, Corruption::Invalid(reason)))?;
        meta.nodes += 1;
    }
    read_seal(&mut input)?;
    meta.digest = read_digest(&mut input)?;
    if meta.digest.is_some() {
        read_seal(&mut input)?;
    }
    input.expect_end("the snapshot's seal")?;
    meta.bytes = input.offset();
    Ok(meta)
}

fn read_stat<R: Read>(input: &mut Input<R>) -> Result<StatPersisted, ZkDataError> {
    Ok(StatPersisted {
        czxid: input.long()?,
        mzxid: input.long()?,
        ctime: input.long()?,
        mtime: input.long()?,
        version: input.int()?,
        cversion: input.int()?,
        aversion: input.int()?,
        ephemeral_owner: input.long()?,
        pzxid: input.long()?,
    })
}

/// `SnapStream.checkSealIntegrity`: the Adler32 so far, then "/".
fn read_seal<R: Read>(input: &mut Input<R>) -> Result<(), ZkDataError> {
    let (at, computed) = (input.offset(), u64::from(input.checksum()));
    let stored = input.long()? as u64;
    if stored != computed {
        return Err(input.corrupt(at, Corruption::Checksum { stored, computed }));
    }
    let path_at = input.offset();
    match input.string()?.as_str() {
        "/" => Ok(()),
        other => Err(input.corrupt(path_at, Corruption::Invalid(format!("seal ends with {other:?}, not \"/\"")))),
    }
}

/// `DataTree.deserializeZxidDigest`: absent in snapshots before 3.6 (the stream ends after the seal).
fn read_digest<R: Read>(input: &mut Input<R>) -> Result<Option<ZxidDigest>, ZkDataError> {
    let at = input.offset();
    let mut zxid = [0u8; 8];
    match input.read_some(&mut zxid)? {
        0 => return Ok(None),
        8 => {}
        _ => return Err(input.corrupt(at, Corruption::Truncated)),
    }
    let version = input.int()?;
    let digest = if version < 2 {
        let text_at = input.offset();
        let text = input.string()?;
        u64::from_str_radix(&text, 16)
            .map_err(|_| input.corrupt(text_at, Corruption::Invalid(format!("digest {text:?} is not hex"))))?
    } else {
        input.long()? as u64
    };
    Ok(Some(ZxidDigest { zxid: i64::from_be_bytes(zxid), version, digest }))
}

/// Writes a snapshot as ZooKeeper 3.8's `FileSnap.serialize` does, keeping the Adler32 of the stream.
pub struct SnapshotWriter<W: Write> {
    out: W,
    adler: adler2::Adler32,
    buf: Vec<u8>,
    bytes: u64,
}

impl<W: Write> SnapshotWriter<W> {
    /// Starts a snapshot on `out` with its header and sessions.
    pub fn new(out: W, sessions: &[(i64, i32)]) -> io::Result<SnapshotWriter<W>> {
        let mut writer =
            SnapshotWriter { out, adler: adler2::Adler32::new(), buf: Vec::with_capacity(1 << 16), bytes: 0 };
        let header = FileHeader { magic: SNAP_MAGIC, version: VERSION, dbid: SNAP_DBID };
        writer.buf.extend_from_slice(&header.encode());
        writer.buf.write_len(sessions.len());
        for &(id, timeout) in sessions {
            writer.buf.write_long(id);
            writer.buf.write_int(timeout);
        }
        writer.emit()?;
        Ok(writer)
    }

    fn emit(&mut self) -> io::Result<()> {
        self.adler.write_slice(&self.buf);
        self.out.write_all(&self.buf)?;
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// The ACL cache: each list with its index (never -1, which is `OPEN_ACL_UNSAFE` and not stored).
    pub fn acls<'a>(&mut self, acls: impl ExactSizeIterator<Item = (i64, &'a [Acl])>) -> io::Result<()> {
        self.buf.write_len(acls.len());
        for (index, list) in acls {
            debug_assert_ne!(index, OPEN_ACL_INDEX);
            self.buf.write_long(index);
            write_acls(&mut self.buf, list);
            if self.buf.len() >= 1 << 16 {
                self.emit()?;
            }
        }
        self.emit()
    }

    /// One node; the root (`/`) first, every parent before its children.
    pub fn node(&mut self, path: &str, data: Option<&[u8]>, acl: i64, stat: &StatPersisted) -> io::Result<()> {
        self.buf.write_string(if path == "/" { "" } else { path });
        self.buf.write_nullable_buffer(data);
        self.buf.write_long(acl);
        stat.write(&mut self.buf);
        if self.buf.len() >= 1 << 16 {
            self.emit()?;
        }
        Ok(())
    }

    fn seal(&mut self) -> io::Result<()> {
        self.emit()?;
        self.buf.write_long(i64::from(self.adler.checksum()));
        self.buf.write_string("/");
        self.emit()
    }

    /// Ends the nodes, seals, writes the digest (3.8 always writes one) and seals again; returns the output
    /// and the bytes of the stream.
    pub fn finish(mut self, digest: ZxidDigest) -> io::Result<(W, u64)> {
        self.buf.write_string("/");
        self.seal()?;
        self.buf.write_long(digest.zxid);
        self.buf.write_int(digest.version);
        self.buf.write_long(digest.digest as i64);
        self.seal()?;
        self.out.flush()?;
        Ok((self.out, self.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;
    use tree::acl::Id;

    fn stat() -> impl Strategy<Value = StatPersisted> {
        (any::<[i64; 5]>(), any::<[i32; 3]>(), any::<i64>()).prop_map(|(l, i, owner)| StatPersisted {
            czxid: l[0],
            mzxid: l[1],
            ctime: l[2],
            mtime: l[3],
            version: i[0],
            cversion: i[1],
            aversion: i[2],
            ephemeral_owner: owner,
            pzxid: l[4],
        })
    }

    fn acl() -> impl Strategy<Value = Vec<Acl>> {
        proptest::collection::vec(
            (0i32..32, "[a-z]{1,6}", "[a-z:.0-9]{0,12}").prop_map(|(perms, s, i)| Acl { perms, id: Id::new(&s, &i) }),
            0..3,
        )
    }

    /// Sessions, ACL lists (indexes 1..), nodes (the root first), and the digest.
    type Parts = (Vec<(i64, i32)>, Vec<Vec<Acl>>, Vec<SnapshotNode>, ZxidDigest);

    /// A snapshot: sessions, ACL lists, and a root followed by children that use them.
    fn snapshot() -> impl Strategy<Value = Parts> {
        let data = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from));
        (
            proptest::collection::vec(any::<(i64, i32)>(), 0..4),
            proptest::collection::vec(acl(), 0..3),
            proptest::collection::vec((data, stat(), any::<u8>()), 1..12),
            any::<(i64, u64)>(),
        )
            .prop_map(|(sessions, acls, nodes, (zxid, digest))| {
                let choices = acls.len() as i64 + 1;
                let nodes = nodes
                    .into_iter()
                    .enumerate()
                    .map(|(i, (data, stat, pick))| SnapshotNode {
                        path: if i == 0 { "/".into() } else { format!("/n{i}") },
                        data,
                        // 0 picks OPEN_ACL_UNSAFE (-1), n the n-th list.
                        acl: match i64::from(pick) % choices {
                            0 => -1,
                            n => n,
                        },
                        stat,
                    })
                    .collect();
                (sessions, acls, nodes, ZxidDigest { zxid, version: 2, digest })
            })
    }

    fn encode(sessions: &[(i64, i32)], acls: &[Vec<Acl>], nodes: &[SnapshotNode], digest: ZxidDigest) -> Vec<u8> {
        let mut w = SnapshotWriter::new(Vec::new(), sessions).unwrap();
        w.acls(acls.iter().enumerate().map(|(i, l)| (i as i64 + 1, &l[..]))).unwrap();
        for n in nodes {
            w.node(&n.path, n.data.as_deref(), n.acl, &n.stat).unwrap();
        }
        w.finish(digest).unwrap().0
    }

    fn decode(bytes: &[u8]) -> Result<(SnapshotMeta, Vec<SnapshotNode>), ZkDataError> {
        let mut nodes = Vec::new();
        let meta = read(bytes, Path::new("snapshot.1"), bytes.len() as u64, |_, n| {
            nodes.push(n);
            Ok(())
        })?;
        Ok((meta, nodes))
    }

    proptest! {
        #[test]
        fn round_trips((sessions, acls, nodes, digest) in snapshot()) {
            let bytes = encode(&sessions, &acls, &nodes, digest);
            let (meta, decoded) = decode(&bytes).unwrap();
            prop_assert_eq!(decoded, nodes);
            prop_assert_eq!(meta.sessions, sessions);
            prop_assert_eq!(meta.acls.into_values().collect::<Vec<_>>(), acls);
            prop_assert_eq!(meta.digest, Some(digest));
            prop_assert_eq!(meta.bytes, bytes.len() as u64);
        }

        #[test]
        fn any_damage_is_refused_with_an_offset((sessions, acls, nodes, digest) in snapshot(), at in any::<proptest::sample::Index>(), flip in 1u8..=255, cut in any::<bool>()) {
            let mut bytes = encode(&sessions, &acls, &nodes, digest);
            let at = at.index(bytes.len());
            // Cut right after the first seal, it is a whole snapshot of ZooKeeper before 3.6 (no digest).
            prop_assume!(!(cut && at == bytes.len() - 33));
            if cut { bytes.truncate(at) } else { bytes[at] ^= flip }
            let err = decode(&bytes).unwrap_err();
            let (_, offset, _) = err.corruption().expect("damage is reported as corruption");
            prop_assert!(offset <= bytes.len() as u64);
        }
    }

    #[test]
    fn the_layout_is_zookeepers() {
        let root = SnapshotNode { path: "/".into(), data: None, acl: -1, stat: StatPersisted::default() };
        let bytes = encode(&[(7, 3000)], &[], &[root], ZxidDigest { zxid: 0, version: 2, digest: 0 });
        assert_eq!(&bytes[..16], b"ZKSN\x00\x00\x00\x02\xff\xff\xff\xff\xff\xff\xff\xff");
        assert_eq!(&bytes[16..32], b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x0b\xb8");
        // No ACL lists; the root's path "" (length 0), null data (-1), ACL -1, a 60-byte stat; then "/".
        assert_eq!(&bytes[32..48], b"\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff");
        assert_eq!(&bytes[48..52], b"\xff\xff\xff\xff");
        assert_eq!(&bytes[112..117], b"\x00\x00\x00\x01/");
        let mut adler = adler2::Adler32::new();
        adler.write_slice(&bytes[..117]);
        assert_eq!(&bytes[117..125], &u64::from(adler.checksum()).to_be_bytes());
        // Each seal ends with "/", ZooKeeper's cheap validity check (`isValidCheckedStream`) looks for.
        assert_eq!(&bytes[bytes.len() - 5..], b"\x00\x00\x00\x01/");
        assert_eq!(bytes.len(), 117 + 13 + 20 + 13);
    }

    #[test]
    fn a_huge_length_is_refused_before_allocating() {
        let root = SnapshotNode {
            path: "/".into(),
            data: Some(Bytes::from_static(b"x")),
            acl: -1,
            stat: StatPersisted::default(),
        };
        let mut bytes = encode(&[], &[], &[root], ZxidDigest { zxid: 0, version: 2, digest: 0 });
        // The root's data length, right after its empty path.
        bytes[28..32].copy_from_slice(&0x7fff_fff0i32.to_be_bytes());
        let err = decode(&bytes).unwrap_err();
        assert!(matches!(err.corruption(), Some((_, 28, Corruption::BadLength { .. }))), "{err}");
    }
}
