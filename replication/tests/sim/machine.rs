//! The node's side of a simulated server, as `node/src/apply.rs` does it: the znode tree it applies committed
//! txns to, rebuilt from disk when the runtime says so (`Committed::Rebuild`), snapshotted now and then with
//! the older log purged behind the snapshots it keeps (retention), so that followers too far behind need SNAP.
//! Every txn creates `/t<n>`, so the zxids a tree applied can be read back from it (each node's czxid) after a
//! restart or a rebuild.

use std::path::Path;

use bytes::Bytes;
use snapshot::write::SharedTree;
use snapshot::SnapshotError;
use tree::acl::open_acl_unsafe;
use tree::code::op;
use tree::prep::{prep, Caller, PrepOptions, Request};
use tree::tree::DataTree;
use tree::txn::{TxnHeader, TxnRecord};
use wal::fs::FileSystem;
use wal::{Wal, Zxid};

/// The snapshot directory.
pub const SNAP: &str = "/data/snapshots";

/// Snapshots kept by retention.
const KEEP: usize = 2;

/// The txn that creates `/t<n>`, prepared as the leader's node prepares one (its zxid is the runtime's to give).
pub fn txn(n: u64) -> Bytes {
    let request = Request::Create {
        op: op::CREATE,
        path: format!("/t{n}"),
        data: None,
        acl: open_acl_unsafe(),
        flags: 0,
        ttl: -1,
    };
    let caller = Caller { session: 0, auth: Vec::new().into(), expired: false };
    let options = PrepOptions { ttl_enabled: false, enforce_quota: false };
    let (op, txn) = prep(&DataTree::new(), &caller, options, &request);
    let header = TxnHeader { client_id: 0, cxid: 0, zxid: 0, time: 0, op };
    Bytes::from(TxnRecord { header, txn }.encode())
}

/// What a server applied: its tree, the zxids in it in order, and the first thing that went wrong on the
/// committed stream (a panic in a task would not fail the test).
pub struct Machine {
    pub tree: SharedTree,
    pub zxids: Vec<Zxid>,
    pub violation: Option<String>,
}

impl Machine {
    /// A fresh server's: an empty tree.
    pub fn empty() -> Machine {
        Machine { tree: SharedTree::new(DataTree::new()), zxids: Vec::new(), violation: None }
    }

    /// The tree the snapshots and the log on disk hold, as the node rebuilds it: at start (`until` is `None`:
    /// all of it, after finishing an install a crash interrupted), and up to `until` on `Rebuild`.
    pub fn recover(fs: &dyn FileSystem, wal: &Wal, until: Option<Zxid>) -> Result<Machine, SnapshotError> {
        let dir = Path::new(SNAP);
        let (tree, _) = match until {
            None => snapshot::recover::recover_with(fs, dir, wal)?,
            Some(_) => snapshot::recover::recover_until_with(fs, dir, wal, until)?,
        };
        let mut zxids: Vec<Zxid> = tree
            .nodes_after(None)
            .filter(|(path, _)| path.starts_with("/t"))
            .map(|(_, node)| Zxid(u64::try_from(node.client_stat().czxid).expect("positive")))
            .collect();
        zxids.sort();
        Ok(Machine { tree: SharedTree::new(tree), zxids, violation: None })
    }

    /// Applies the committed txn `zxid`.
    pub fn apply(&mut self, zxid: Zxid, txn: &[u8]) {
        if let Some(&last) = self.zxids.last().filter(|&&last| last >= zxid) {
            self.violation.get_or_insert(format!("{zxid} committed after {last}"));
        }
        let mut record = TxnRecord::decode(txn).expect("the sim's txns decode");
        record.header.zxid = i64::try_from(zxid.0).expect("zxids fit");
        self.tree.write().unwrap().apply(&record.header, &record.txn);
        self.zxids.push(zxid);
    }

    /// Takes a snapshot of the tree and keeps the newest [`KEEP`] that verify, deleting older ones and queueing
    /// the purge of the log behind the oldest kept (done when the disk is stepped): `snapshot::retain::retain`,
    /// whose blocking wait for the purge a stepped log on this thread cannot answer. Errors are the disk's
    /// (its power went off), which the simulation notices on its own.
    pub fn snapshot_and_retain(&self, fs: &dyn FileSystem, wal: &Wal) -> Result<(), SnapshotError> {
        let dir = Path::new(SNAP);
        snapshot::write::write_fuzzy_with(fs, dir, &self.tree, 1024)?;
        let snapshots = snapshot::dir::list_with(fs, dir)?;
        let valid: Vec<usize> = (0..snapshots.len())
            .filter(|&i| snapshot::read::check_with(fs, &snapshots[i].1).is_ok())
            .take(KEEP)
            .collect();
        let Some(&oldest) = valid.get(KEEP - 1) else { return Ok(()) };
        for (_, path) in &snapshots[oldest + 1..] {
            fs.remove(path).map_err(|source| SnapshotError::Io { op: "delete", path: path.clone(), source })?;
        }
        fs.sync_dir(dir).map_err(|source| SnapshotError::Io { op: "fsync directory", path: dir.into(), source })?;
        let start = u64::try_from(snapshots[oldest].0).unwrap_or(0);
        drop(wal.purge_before(Zxid(start.saturating_add(1)))?);
        Ok(())
    }
}
