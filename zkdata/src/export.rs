//! Ensemble's tree as a ZooKeeper 3.8 snapshot, which ZooKeeper loads as its whole state (no log after it).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use tree::digest::DIGEST_VERSION;
use tree::tree::DataTree;

use crate::error::ZkDataError;
use crate::files;
use crate::snapshot::{SnapshotWriter, ZxidDigest};

/// A snapshot written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exported {
    /// The file, `snapshot.<zxid>`.
    pub path: PathBuf,
    /// Its zxid: the tree's last.
    pub zxid: i64,
    /// Nodes written.
    pub nodes: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Writes `tree` into `dir` as `snapshot.<last zxid>`, durably (the file fsynced; the caller fsyncs `dir`). It
/// is consistent, not fuzzy: its digest is at its own zxid, which ZooKeeper checks as it loads it. `progress`
/// is told each node written.
pub fn write_snapshot(tree: &DataTree, dir: &Path, progress: &mut dyn FnMut(u64)) -> Result<Exported, ZkDataError> {
    let zxid = tree.last_zxid();
    let path = dir.join(files::snapshot_name(zxid));
    let file = File::create(&path).map_err(ZkDataError::io(&path, "create"))?;
    let sessions: Vec<(i64, i32)> = tree.sessions().iter().map(|(&id, &timeout)| (id, timeout)).collect();
    let write = || -> std::io::Result<(File, u64, u64)> {
        let mut out = SnapshotWriter::new(BufWriter::with_capacity(1 << 20, file), &sessions)?;
        let table = tree.acl_table();
        out.acls(table.entries().map(|(id, list, _)| (id, list)).collect::<Vec<_>>().into_iter())?;
        let mut nodes = 0;
        for (path, node) in tree.nodes_after(None) {
            out.node(path, node.data.as_deref(), node.acl, &node.stat)?;
            nodes += 1;
            if nodes % 4096 == 0 {
                progress(4096);
            }
        }
        progress(nodes % 4096);
        let digest = ZxidDigest { zxid, version: DIGEST_VERSION, digest: tree.digest() };
        let (out, bytes) = out.finish(digest)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok((file, nodes, bytes))
    };
    let (_, nodes, bytes) = write().map_err(ZkDataError::io(&path, "write"))?;
    Ok(Exported { path, zxid, nodes, bytes })
}
