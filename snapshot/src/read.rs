//! Loading a snapshot: verify the whole file, then rebuild the tree.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::{Buf, Bytes};
use tree::acl::{read_acls, Acl, AclId, OPEN_ACL_ID};
use tree::jute::{JuteError, JuteRead};
use tree::load::{Loaded as LoadedTree, Loader};
use tree::stat::StatPersisted;
use tree::tree::{DataTree, Node};
use wal::failpoint;
use wal::fs::{FileSystem, StdFs};

use crate::error::SnapshotError;
use crate::format::{self, tag, Trailer};

/// A loaded snapshot.
#[derive(Debug)]
pub struct Loaded {
    /// The tree as the snapshot holds it (fuzzy: replay from `start_zxid` to make it exact).
    pub tree: DataTree,
    /// The file.
    pub path: PathBuf,
    /// Its start zxid.
    pub start_zxid: i64,
    /// Its trailer: end zxid and the digest there.
    pub trailer: Trailer,
    /// Nodes skipped because their parent was not in the snapshot (replay recreates them).
    pub orphans: u64,
}

/// Opens and maps the whole snapshot at `path` (`populate`: read it all up front, for a full load).
fn map(fs: &dyn FileSystem, path: &Path, populate: bool) -> Result<Bytes, SnapshotError> {
    let open = || {
        failpoint!("snapshot::open");
        fs.open(path, false)
    };
    let file = open().map_err(|e| SnapshotError::io("open", path, e))?;
    let map = || {
        failpoint!("snapshot::mmap");
        // On the real disk a memory map: snapshot files are written once, under a temporary name, and never
        // modified after the rename (see `StdFs`'s SAFETY note).
        file.map(populate)
    };
    map().map_err(|e| SnapshotError::io("mmap", path, e))
}

/// Checks the snapshot at `path` without building its tree: magic, version, length and the crc32c over the
/// whole file. Returns its start zxid and trailer. What retention needs: a file that passes holds exactly the
/// bytes its writer wrote.
pub fn check(path: &Path) -> Result<(i64, Trailer), SnapshotError> {
    check_with(&StdFs, path)
}

/// Like [`check`], on the filesystem `fs`.
pub fn check_with(fs: &dyn FileSystem, path: &Path) -> Result<(i64, Trailer), SnapshotError> {
    // Read in up front: snapshots are written past the page cache, and faulting a map in page by page cost
    // about 10 us a page here (a sixth of a server's CPU under a create-heavy load).
    let map = map(fs, path, true)?;
    let (start, trailer, _) = format::verify(&map, path)?;
    Ok((start, trailer))
}

/// Reads and verifies the snapshot at `path`.
pub fn load(path: &Path) -> Result<Loaded, SnapshotError> {
    load_with(&StdFs, path)
}

/// Like [`load`], on the filesystem `fs`.
pub fn load_with(fs: &dyn FileSystem, path: &Path) -> Result<Loaded, SnapshotError> {
    let started = Instant::now();
    let map = map(fs, path, true)?;
    let (start_zxid, trailer, mut records) = format::verify(&map, path)?;
    let corrupt = |reason: String| SnapshotError::Corrupt { path: path.to_path_buf(), reason };
    let mut tree = DataTree::empty();
    tree.set_last_zxid(start_zxid);
    let mut loader = Loader::new(tree, usize::try_from(trailer.nodes).unwrap_or(usize::MAX));
    let (mut acls, mut nodes, mut sessions) = (HashMap::<AclId, Vec<Acl>>::new(), 0u64, 0u64);
    let open = tree::acl::open_acl_unsafe();
    let total = trailer.nodes.max(1);
    loop {
        let tag = records.read_u8_checked().map_err(|e| corrupt(e.to_string()))?;
        match tag {
            tag::END => break,
            tag::SESSION => {
                let (id, timeout) = (records.read_long(), records.read_int());
                let (id, timeout) =
                    (id.map_err(|e| corrupt(e.to_string()))?, timeout.map_err(|e| corrupt(e.to_string()))?);
                loader.tree_mut().load_session(id, timeout);
                sessions += 1;
            }
            tag::ACL => {
                let id = records.read_long().map_err(|e| corrupt(e.to_string()))?;
                acls.insert(id, read_acls(&mut records).map_err(|e| corrupt(e.to_string()))?);
            }
            tag::NODE => {
                let (path_str, node, acl_id) = read_node(&mut records).map_err(|e| corrupt(e.to_string()))?;
                let acl = match acl_id {
                    OPEN_ACL_ID => &open,
                    id => acls.get(&id).ok_or_else(|| corrupt(format!("{path_str} uses undefined ACL {id}")))?,
                };
                loader.node(path_str, node, acl);
                nodes += 1;
                if nodes.is_multiple_of((total / 10).max(100_000)) {
                    tracing::info!(path = %path.display(), nodes, total, "loading snapshot");
                }
            }
            other => return Err(corrupt(format!("unknown record tag {other}"))),
        }
    }
    if records.has_remaining() {
        return Err(corrupt(format!("{} bytes after the end record", records.remaining())));
    }
    if nodes != trailer.nodes || sessions != trailer.sessions {
        return Err(corrupt(format!(
            "{nodes} nodes and {sessions} sessions, the trailer says {} and {}",
            trailer.nodes, trailer.sessions
        )));
    }
    let LoadedTree { mut tree, orphans } = loader.finish().map_err(|e| corrupt(e.to_string()))?;
    if tree.get("/").is_none() {
        return Err(corrupt("no root node".into()));
    }
    // The stats nodes hold whatever they did when the writer copied them; replay moves them from a recount.
    tree.setup_quotas();
    tracing::info!(path = %path.display(), nodes, orphans, secs = started.elapsed().as_secs_f64(), "snapshot loaded");
    Ok(Loaded { tree, path: path.to_path_buf(), start_zxid, trailer, orphans })
}

fn read_node(buf: &mut &[u8]) -> Result<(String, Node, AclId), JuteError> {
    let path = buf.read_string()?;
    let data = buf.read_nullable_buffer()?;
    let acl = buf.read_long()?;
    let stat = StatPersisted::read(buf)?;
    Ok((path, Node::new(data, acl, stat), acl))
}

trait ReadTag {
    fn read_u8_checked(&mut self) -> Result<u8, JuteError>;
}

impl ReadTag for &[u8] {
    fn read_u8_checked(&mut self) -> Result<u8, JuteError> {
        self.need(1)?;
        Ok(self.get_u8())
    }
}
