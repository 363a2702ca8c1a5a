//! Read-only inspection of snapshot files, for operators' tools (`ensemble snapshot list|dump|verify`).
//!
//! - [`summarize`]: what a file's header and trailer say and whether its checksum holds, without building the
//!   tree (cheap enough for a listing).
//! - [`SnapshotFile::entries`]: its records one by one (sessions, ACL lists, nodes) without building the tree,
//!   stopping with an error at the first malformed one; it reads a file whose checksum fails too, as far as its
//!   records go, so a damaged snapshot can still be looked at.
//! - [`verify`]: checksum, structure (the tree loads: [`crate::read::load`]) and the digest the trailer records,
//!   recomputed: from the loaded tree when no txn was applied while the snapshot was copied (start zxid = end
//!   zxid), else by replaying the WAL's txns from the start zxid to the end zxid over it, as recovery does.
//!
//! Nothing here writes.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use tree::acl::{read_acls, Acl, AclId};
use tree::jute::JuteRead;
use tree::stat::StatPersisted;
use tree::tree::Data;
use tree::txn::TxnRecord;

use crate::error::SnapshotError;
use crate::format::{self, tag, Trailer, HEADER_LEN, MAGIC, TRAILER_LEN};
use crate::read;

/// A snapshot file, mapped read-only.
#[derive(Debug)]
pub struct SnapshotFile {
    path: PathBuf,
    data: Bytes,
}

/// What a listing shows of a snapshot file.
#[derive(Debug)]
pub struct SnapshotSummary {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// The format version its header names (`None`: no snapshot magic).
    pub version: Option<u32>,
    /// The start zxid its header records (`None`: the header does not read).
    pub start_zxid: Option<i64>,
    /// Its trailer, if the file checks out.
    pub trailer: Option<Trailer>,
    /// Why it does not check out (magic, version, length, checksum), if it does not.
    pub error: Option<SnapshotError>,
}

/// One record of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A session.
    Session {
        /// The session id.
        id: i64,
        /// Its timeout in ms.
        timeout: i32,
    },
    /// An ACL list, written before the first node that uses it.
    Acl {
        /// Its id, which nodes refer to.
        id: AclId,
        /// The list.
        acl: Vec<Acl>,
    },
    /// A node.
    Node {
        /// Its path.
        path: String,
        /// Its data (`None`: null).
        data: Data,
        /// Its ACL list's id.
        acl: AclId,
        /// Its stat.
        stat: StatPersisted,
    },
}

impl SnapshotFile {
    /// Maps the file at `path` read-only.
    pub fn open(path: &Path) -> Result<SnapshotFile, SnapshotError> {
        let file = std::fs::File::open(path).map_err(|e| SnapshotError::io("open", path, e))?;
        // SAFETY: snapshot files are written once, under a temporary name, and never modified after the rename;
        // a file changed by another process under the map is outside the contract, as for every mapped store.
        let map = unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(|e| SnapshotError::io("mmap", path, e))?;
        Ok(SnapshotFile { path: path.to_path_buf(), data: Bytes::from_owner(map) })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// The format version and start zxid the header records, if the file starts with the snapshot magic and
    /// holds a whole header.
    pub fn header(&self) -> Option<(u32, i64)> {
        let header = self.data.get(..HEADER_LEN).filter(|h| h[..8] == MAGIC)?;
        let version = u32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
        Some((version, i64::from_be_bytes(header[16..24].try_into().expect("8 bytes"))))
    }

    /// Checks magic, version, length and checksum: the start zxid and the trailer.
    pub fn check(&self) -> Result<(i64, Trailer), SnapshotError> {
        format::verify(&self.data, &self.path).map(|(start, trailer, _)| (start, trailer))
    }

    /// Its records in file order, each with its offset in the file. Reads a file whose checksum fails as well
    /// (as far as its records are well formed); ends after the end record, or with an error at the first record
    /// that does not decode.
    pub fn entries(&self) -> Entries {
        let whole = self.check().is_ok();
        let end = if whole { self.data.len() - TRAILER_LEN } else { self.data.len() };
        let start = HEADER_LEN.min(end);
        Entries { data: self.data.slice(start..end), base: start, read: 0, done: self.header().is_none() }
    }
}

/// The records of a snapshot, from [`SnapshotFile::entries`].
#[derive(Debug)]
pub struct Entries {
    data: Bytes,
    base: usize,
    read: usize,
    done: bool,
}

impl Iterator for Entries {
    type Item = Result<(u64, Entry), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let offset = (self.base + self.read) as u64;
        let mut buf = &self.data[self.read..];
        let before = buf.len();
        let result = read_entry(&mut buf);
        self.read += before - buf.len();
        match result {
            Ok(Some(entry)) => Some(Ok((offset, entry))),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(reason) => {
                self.done = true;
                Some(Err(format!("record at offset {offset}: {reason}")))
            }
        }
    }
}

/// Reads one record; `None` at the end record.
fn read_entry(buf: &mut &[u8]) -> Result<Option<Entry>, String> {
    let Some((&tag, rest)) = buf.split_first() else { return Err("no end record".into()) };
    *buf = rest;
    let s = |e: tree::jute::JuteError| e.to_string();
    Ok(Some(match tag {
        tag::END => return Ok(None),
        tag::SESSION => Entry::Session { id: buf.read_long().map_err(s)?, timeout: buf.read_int().map_err(s)? },
        tag::ACL => Entry::Acl { id: buf.read_long().map_err(s)?, acl: read_acls(buf).map_err(s)? },
        tag::NODE => Entry::Node {
            path: buf.read_string().map_err(s)?,
            data: buf.read_nullable_buffer().map_err(s)?,
            acl: buf.read_long().map_err(s)?,
            stat: StatPersisted::read(buf).map_err(s)?,
        },
        other => return Err(format!("unknown record tag {other}")),
    }))
}

/// What a listing shows of the snapshot at `path`: header, trailer, and whether the checksum holds.
pub fn summarize(path: &Path) -> Result<SnapshotSummary, SnapshotError> {
    let file = SnapshotFile::open(path)?;
    let header = file.header();
    let (trailer, error) = match file.check() {
        Ok((_, trailer)) => (Some(trailer), None),
        Err(e @ SnapshotError::Io { .. }) => return Err(e),
        Err(e) => (None, Some(e)),
    };
    Ok(SnapshotSummary {
        path: path.to_path_buf(),
        size: file.size(),
        version: header.map(|h| h.0),
        start_zxid: header.map(|h| h.1),
        trailer,
        error,
    })
}

/// How the digest was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DigestCheck {
    /// The tree as loaded has the digest the trailer records (no txn was applied during the copy).
    Loaded,
    /// Replaying this many WAL txns over the loaded tree reached the end zxid with the recorded digest.
    Replayed(u64),
    /// Not checked: the snapshot is fuzzy and the WAL to replay was not given or does not hold the txns
    /// needed; the reason says which.
    Unchecked(String),
}

/// What [`verify`] established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The start zxid.
    pub start_zxid: i64,
    /// The trailer.
    pub trailer: Trailer,
    /// Nodes loaded.
    pub nodes: usize,
    /// Nodes skipped because their parent was not in the snapshot (created during the copy; replay creates
    /// them).
    pub orphans: u64,
    /// The digest check.
    pub digest: DigestCheck,
}

/// Verifies the snapshot at `path`: checksum, structure (the tree loads) and digest. `wal` is the log to replay
/// a fuzzy snapshot's txns from (the valid prefix of an inspection, see [`wal::inspect`]); without it, a fuzzy
/// snapshot's digest is left unchecked (and said so). Fails with the reason, as recovery would.
pub fn verify(path: &Path, wal: Option<&wal::Inspection>) -> Result<Verified, SnapshotError> {
    let loaded = read::load(path)?;
    let (start, end, expected) = (loaded.start_zxid, loaded.trailer.end_zxid, loaded.trailer.digest);
    let mut tree = loaded.tree;
    let mismatch = |zxid, found| SnapshotError::DigestMismatch { snapshot: path.to_path_buf(), zxid, expected, found };
    let digest = if end <= start {
        if tree.digest() != expected {
            return Err(mismatch(end, tree.digest()));
        }
        DigestCheck::Loaded
    } else if let Some(wal) = wal {
        match replay(&mut tree, wal, start, end)? {
            Some(replayed) if tree.digest() == expected => DigestCheck::Replayed(replayed),
            Some(_) => return Err(mismatch(end, tree.digest())),
            None => DigestCheck::Unchecked(format!(
                "the WAL in {} does not hold every txn from {:#x} to {end:#x}",
                wal.dir.display(),
                start + 1
            )),
        }
    } else {
        DigestCheck::Unchecked(format!(
            "fuzzy snapshot (txns {:#x} to {end:#x} were applied during the copy): give the WAL to replay them",
            start + 1
        ))
    };
    let nodes = tree.node_count();
    Ok(Verified { start_zxid: start, trailer: loaded.trailer, nodes, orphans: loaded.orphans, digest })
}

/// Applies the WAL's txns after `start` up to `end` to `tree`; `None` if the WAL does not hold them all.
fn replay(
    tree: &mut tree::tree::DataTree,
    wal: &wal::Inspection,
    start: i64,
    end: i64,
) -> Result<Option<u64>, SnapshotError> {
    let from = u64::try_from(start).unwrap_or(0).saturating_add(1);
    let (mut replayed, mut expected_next) = (0u64, from);
    for record in wal.records(wal::Zxid(from)) {
        let record = record?;
        let zxid = i64::try_from(record.zxid.0).unwrap_or(i64::MAX);
        if zxid > end {
            break;
        }
        // Zxids are dense within an epoch; a new epoch starts its counter again at 1.
        if replayed == 0 && record.zxid.0 != expected_next && record.zxid.0 >> 32 == expected_next >> 32 {
            return Ok(None);
        }
        let mut txn =
            TxnRecord::decode(&record.payload).map_err(|e| SnapshotError::BadTxn { zxid, reason: e.to_string() })?;
        txn.header.zxid = zxid;
        tree.apply(&txn.header, &txn.txn);
        (replayed, expected_next) = (replayed + 1, record.zxid.0 + 1);
    }
    Ok((tree.last_zxid() >= end).then_some(replayed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tree::code::op;
    use tree::tree::DataTree;
    use tree::txn::{Txn, TxnHeader};

    /// A WAL of `n` creates under /n, the tree they make, and a snapshot of it written after all of them.
    fn fixture(n: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = wal::Wal::open(dir.path().join("log"), wal::WalOptions::default()).unwrap();
        let tree = crate::write::SharedTree::new(DataTree::new());
        tree.write().unwrap().load_session(0x42, 30000);
        for z in 1..=n {
            let txn = Txn::Create {
                path: format!("/n{z}"),
                data: (z % 2 == 0).then(|| Bytes::from(format!("v{z}"))),
                acl: tree::acl::open_acl_unsafe(),
                ephemeral: false,
                parent_cversion: i32::try_from(z).unwrap(),
            };
            let header = TxnHeader { client_id: 0x42, cxid: 1, zxid: z as i64, time: 7, op: op::CREATE };
            log.append(wal::Zxid(z), TxnRecord { header, txn: txn.clone() }.encode()).unwrap().wait().unwrap();
            tree.write().unwrap().apply(&header, &txn);
        }
        let snaps = dir.path().join("snapshots");
        std::fs::create_dir(&snaps).unwrap();
        let info = crate::write::write_fuzzy(&snaps, &tree, 4).unwrap();
        (dir, info.path)
    }

    /// Rewrites bytes of a snapshot and its checksum, as a writer would have written them.
    fn rewrite(path: &Path, offset: usize, bytes: &[u8]) {
        let mut data = std::fs::read(path).unwrap();
        data[offset..offset + bytes.len()].copy_from_slice(bytes);
        let len = data.len();
        let crc = crc32c::crc32c(&data[..len - 8]);
        data[len - 8..len - 4].copy_from_slice(&crc.to_be_bytes());
        std::fs::write(path, data).unwrap();
    }

    #[test]
    fn a_sound_snapshot_lists_its_records_and_verifies_its_digest_from_the_tree() {
        let (_dir, path) = fixture(10);
        let summary = summarize(&path).unwrap();
        assert!(summary.error.is_none());
        assert_eq!((summary.start_zxid, summary.version), (Some(10), Some(format::VERSION)));
        let count = DataTree::new().node_count() + 10;
        assert_eq!(summary.trailer.unwrap().nodes, count as u64);
        let entries: Vec<Entry> = SnapshotFile::open(&path).unwrap().entries().map(|e| e.unwrap().1).collect();
        assert_eq!(entries[0], Entry::Session { id: 0x42, timeout: 30000 });
        let nodes: Vec<(&str, &Data)> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Node { path, data, .. } => Some((path.as_str(), data)),
                _ => None,
            })
            .collect();
        assert!(nodes.contains(&("/n1", &None)) && nodes.contains(&("/n2", &Some(Bytes::from("v2")))));
        let verified = verify(&path, None).unwrap();
        assert_eq!((verified.digest, verified.nodes), (DigestCheck::Loaded, count));
    }

    #[test]
    fn a_fuzzy_snapshot_is_checked_by_replaying_the_wal() {
        let (dir, path) = fixture(10);
        // Say the copy began at zxid 6: txns 7..=10 were applied while it ran (the content already shows them).
        rewrite(&path, 16, &6i64.to_be_bytes());
        assert!(matches!(verify(&path, None).unwrap().digest, DigestCheck::Unchecked(_)));
        let wal = wal::inspect(dir.path().join("log"), &wal::WalOptions::default()).unwrap();
        assert_eq!(verify(&path, Some(&wal)).unwrap().digest, DigestCheck::Replayed(4));
    }

    #[test]
    fn a_wrong_digest_and_a_bad_byte_are_named() {
        let (_dir, path) = fixture(10);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        rewrite(&path, len - TRAILER_LEN + 8, &1u64.to_be_bytes());
        assert!(matches!(verify(&path, None), Err(SnapshotError::DigestMismatch { .. })));
        let mut data = std::fs::read(&path).unwrap();
        data[HEADER_LEN + 3] ^= 1;
        std::fs::write(&path, &data).unwrap();
        let summary = summarize(&path).unwrap();
        assert!(summary.error.unwrap().to_string().contains("checksum mismatch"));
        assert_eq!(summary.start_zxid, Some(10), "the header still reads");
        // The records still read as far as they are well formed.
        assert!(SnapshotFile::open(&path).unwrap().entries().count() > 0);
    }

    #[test]
    fn garbage_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.0000000000000001");
        for len in [0usize, 7, 8, 23, 24, 25, 64, 200] {
            let mut data: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            if len >= 8 {
                data[..8].copy_from_slice(&MAGIC);
            }
            std::fs::write(&path, &data).unwrap();
            let summary = summarize(&path).unwrap();
            assert!(summary.error.is_some(), "{len}");
            let _ = SnapshotFile::open(&path).unwrap().entries().count();
            assert!(verify(&path, None).is_err());
        }
    }
}
