//! ZooKeeper's recovery rule (`FileTxnSnapLog.restore`), applied to Ensemble's tree: the newest snapshot that
//! reads whole, then every txn of the logs after its zxid, through [`DataTree::apply`], the code path the
//! server itself applies txns with.
//!
//! The snapshot is fuzzy, so replay starts at its zxid + 1 and txns it already reflects are applied again;
//! that is idempotent where ZooKeeper's `processTransaction` needs it (a create of a node that exists, a delete
//! of one that does not: their errors are ignored, as ZooKeeper ignores NODEEXISTS and NONODE there).
//!
//! Digests, where ZooKeeper recorded them (3.6+): the snapshot's at the zxid its copy ended, and after that
//! point each txn's. A mismatch refuses the import: the tree rebuilt here is not the one ZooKeeper had. One
//! exception, ZooKeeper's own race: the snapshot's digest is the one of the last txn whose application had
//! finished when the copy ended, while the next txn may already have changed nodes the copy took. Its replay
//! rewrites those, so a snapshot digest that does not match is judged by the next txn's digest (which must
//! match); with no txn after it, the mismatch stands and refuses the import. ZooKeeper itself only logs it.
//!
//! Unlike ZooKeeper, which logs and carries on, a gap in the zxids (a log file missing) and a snapshot whose
//! digest zxid the logs never reach are refused: both mean txns are missing.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use tree::acl::open_acl_unsafe;
use tree::code::Code;
use tree::digest::DIGEST_VERSION;
use tree::path::validate_path;
use tree::stat::StatPersisted;
use tree::tree::{DataTree, Node};
use tree::txn::Txn;

use crate::error::{Corruption, ZkDataError};
use crate::files::{self, Compression, Counted, ACCEPTED_EPOCH, CURRENT_EPOCH, LOG_PREFIX, SNAPSHOT_PREFIX};
use crate::snapshot::{self, SnapshotMeta, OPEN_ACL_INDEX};
use crate::txnlog::LogReader;

/// Where ZooKeeper's files are: the `version-2` directories of its dataDir and dataLogDir.
#[derive(Clone, Debug)]
pub struct Sources {
    /// Snapshots and epoch files.
    pub snap_dir: PathBuf,
    /// Txn logs.
    pub log_dir: PathBuf,
}

/// The state ZooKeeper would start with, and how it was found.
#[derive(Debug)]
pub struct Restored {
    /// The tree, its sessions and its last zxid.
    pub tree: DataTree,
    /// The snapshot used.
    pub snapshot: PathBuf,
    /// Its zxid (its name).
    pub snapshot_zxid: i64,
    /// Newer snapshots that did not read whole, each with the reason (file and offset).
    pub skipped: Vec<String>,
    /// The logs replayed.
    pub logs: Vec<PathBuf>,
    /// Txns applied after the snapshot's zxid.
    pub replayed: u64,
    /// Digests compared (the snapshot's and the txns').
    pub digests_checked: u64,
    /// The quorum peer's epochs, if it kept them.
    pub accepted_epoch: Option<i64>,
    /// See `accepted_epoch`.
    pub current_epoch: Option<i64>,
}

/// The size of the files [`restore`] reads when the newest snapshot is sound (the newest snapshot and the logs
/// after it), for a progress bar.
pub fn input_size(sources: &Sources) -> Result<u64, ZkDataError> {
    let Some((zxid, snapshot)) = files::list(&sources.snap_dir, SNAPSHOT_PREFIX)?.pop() else { return Ok(0) };
    let mut total = snapshot.metadata().map_err(ZkDataError::io(&snapshot, "stat"))?.len();
    for log in logs_after(&sources.log_dir, zxid)? {
        total += log.metadata().map_err(ZkDataError::io(&log, "stat"))?.len();
    }
    Ok(total)
}

/// Rebuilds the state ZooKeeper would start with from `sources`. Lengths are bounded by `max_len`
/// (`jute.maxbuffer + jute.maxbuffer.extrasize`); `progress` is told the bytes of the files as they are read.
pub fn restore(sources: &Sources, max_len: u64, progress: &mut dyn FnMut(u64)) -> Result<Restored, ZkDataError> {
    let snapshots = files::list(&sources.snap_dir, SNAPSHOT_PREFIX)?;
    let mut skipped = Vec::new();
    let mut found = None;
    for (zxid, path) in snapshots.iter().rev() {
        match load_snapshot(path, max_len, progress) {
            Ok(loaded) => {
                found = Some((*zxid, path.clone(), loaded));
                break;
            }
            Err(e @ ZkDataError::Corrupt { .. }) => skipped.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    let Some((snapshot_zxid, snapshot, (mut tree, meta))) = found else {
        let reason = match skipped.is_empty() {
            true => "no ZooKeeper snapshot (snapshot.<zxid>) here".to_owned(),
            false => format!("no snapshot reads whole: {}", skipped.join("; ")),
        };
        return Err(ZkDataError::Unusable { dir: sources.snap_dir.clone(), reason });
    };
    tree.set_last_zxid(snapshot_zxid);
    add_system_nodes(&mut tree);
    tree.setup_quotas();
    let mut replay = Replay::new(tree, snapshot_zxid, &snapshot, &meta)?;
    let logs = logs_after(&sources.log_dir, snapshot_zxid)?;
    for log in &logs {
        replay.log(log, max_len, progress)?;
    }
    let Replay { tree, replayed, digests_checked, pending, unsettled, .. } = replay;
    if let Some(mismatch) = unsettled {
        return Err(mismatch);
    }
    if let Some(digest) = pending {
        let reason = format!(
            "{} reflects txns up to {:#x}, but the logs end at {:#x}: txns are missing",
            snapshot.display(),
            digest.zxid,
            tree.last_zxid()
        );
        return Err(ZkDataError::Unusable { dir: sources.log_dir.clone(), reason });
    }
    tree.validate().map_err(|reason| ZkDataError::Unusable { dir: sources.snap_dir.clone(), reason })?;
    Ok(Restored {
        tree,
        snapshot,
        snapshot_zxid,
        skipped,
        logs,
        replayed,
        digests_checked,
        accepted_epoch: files::read_epoch(&sources.snap_dir, ACCEPTED_EPOCH)?,
        current_epoch: files::read_epoch(&sources.snap_dir, CURRENT_EPOCH)?,
    })
}

/// Reads one snapshot into a tree.
pub fn load_snapshot(
    path: &Path,
    max_len: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(DataTree, SnapshotMeta), ZkDataError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (stream, size) = files::open_snapshot(path, progress)?;
    // A plain file cannot hold a field longer than itself; a compressed one is bounded by max_len alone.
    let limit = if Compression::of(&name) == Compression::None { max_len.min(size) } else { max_len };
    let mut tree = DataTree::empty();
    let open = open_acl_unsafe();
    let meta = snapshot::read(stream, path, limit, |acls, node| {
        validate_path(&node.path, false).map_err(|e| e.to_string())?;
        let acl = match node.acl {
            OPEN_ACL_INDEX => &open,
            index => acls.get(&index).ok_or("undefined ACL index")?,
        };
        let loaded = Node::new(node.data, 0, node.stat);
        tree.load_node(node.path.clone(), loaded, acl).map_err(|code| match code {
            Code::NoNode => format!("{}: its parent is not before it", node.path),
            _ => format!("{}: loaded twice", node.path),
        })
    })?;
    for &(id, timeout) in &meta.sessions {
        tree.load_session(id, timeout);
    }
    Ok((tree, meta))
}

/// `/zookeeper`, `/zookeeper/quota` and `/zookeeper/config`, should a snapshot of an old ZooKeeper lack them,
/// as ZooKeeper's `DataTree` adds them.
fn add_system_nodes(tree: &mut DataTree) {
    let fresh = DataTree::new();
    for path in ["/zookeeper", "/zookeeper/quota", "/zookeeper/config"] {
        if tree.get(path).is_none() {
            let node = fresh.get(path).expect("a fresh tree has its system nodes");
            let acl = fresh.acl_of(node).to_vec();
            let loaded = Node::new(node.data.clone(), 0, StatPersisted { ..node.stat });
            // The parent exists: the root is always the snapshot's first node, and /zookeeper comes first here.
            let _ = tree.load_node(path.to_owned(), loaded, &acl);
        }
    }
}

/// The logs ZooKeeper reads after a snapshot at `zxid` (`FileTxnLog.getLogFiles`): the newest that starts at
/// or before `zxid + 1`, and every later one.
fn logs_after(dir: &Path, zxid: i64) -> Result<Vec<PathBuf>, ZkDataError> {
    let logs = files::list(dir, LOG_PREFIX)?;
    let first = logs.iter().rposition(|(start, _)| *start <= zxid.saturating_add(1)).unwrap_or(0);
    Ok(logs.into_iter().skip(first).map(|(_, path)| path).collect())
}

/// Every path a txn names.
fn paths(txn: &Txn) -> Box<dyn Iterator<Item = &str> + '_> {
    match txn {
        Txn::Create { path, .. }
        | Txn::CreateContainer { path, .. }
        | Txn::CreateTtl { path, .. }
        | Txn::Delete { path }
        | Txn::SetData { path, .. }
        | Txn::SetAcl { path, .. }
        | Txn::Check { path, .. } => Box::new(std::iter::once(path.as_str())),
        Txn::CloseSession { paths } => Box::new(paths.iter().map(String::as_str)),
        Txn::Multi(ops) => Box::new(ops.iter().flat_map(|(_, txn)| paths(txn))),
        Txn::CreateSession { .. } | Txn::Error { .. } => Box::new(std::iter::empty()),
    }
}

/// Replay of the logs over a loaded snapshot.
struct Replay {
    tree: DataTree,
    /// The last zxid applied (the snapshot's, at first).
    last: i64,
    replayed: u64,
    digests_checked: u64,
    /// The snapshot's digest, until replay reaches its zxid.
    pending: Option<snapshot::ZxidDigest>,
    /// Whether the tree is past the fuzzy part, so that each txn's digest must match.
    exact: bool,
    /// The snapshot's digest did not match when replay reached its zxid: the error it is unless the next txn's
    /// digest matches (see the module doc).
    unsettled: Option<ZkDataError>,
}

impl Replay {
    fn new(tree: DataTree, zxid: i64, file: &Path, meta: &SnapshotMeta) -> Result<Replay, ZkDataError> {
        // ZooKeeper ignores a digest of another version or from before the snapshot's zxid (a new leader's
        // snapshot at epoch|0).
        let pending = meta.digest.filter(|d| d.version == DIGEST_VERSION && d.zxid > 0 && d.zxid >= zxid);
        let mut replay =
            Replay { tree, last: zxid, replayed: 0, digests_checked: 0, pending, exact: false, unsettled: None };
        replay.check_snapshot_digest(file, meta.bytes)?;
        Ok(replay)
    }

    /// Compares the snapshot's digest once the tree reached its zxid.
    fn check_snapshot_digest(&mut self, file: &Path, offset: u64) -> Result<(), ZkDataError> {
        let Some(digest) = self.pending.filter(|d| d.zxid == self.last) else { return Ok(()) };
        self.pending = None;
        self.exact = true;
        self.digests_checked += 1;
        if digest.digest != self.tree.digest() {
            let kind = Corruption::Digest { zxid: digest.zxid, recorded: digest.digest, computed: self.tree.digest() };
            self.unsettled = Some(ZkDataError::corrupt(file, offset, kind));
        }
        Ok(())
    }

    fn log(&mut self, path: &Path, max_len: u64, progress: &mut dyn FnMut(u64)) -> Result<(), ZkDataError> {
        let file = File::open(path).map_err(ZkDataError::io(path, "open"))?;
        let size = file.metadata().map_err(ZkDataError::io(path, "stat"))?.len();
        let stream = BufReader::with_capacity(1 << 16, Counted { inner: file, progress });
        let mut reader = LogReader::new(stream, path, max_len.min(size))?;
        while let Some(entry) = reader.next_entry()? {
            let zxid = entry.record.header.zxid;
            if zxid <= self.last && self.replayed == 0 {
                continue; // before the snapshot: ZooKeeper's iterator skips it
            }
            let (epoch, counter) = (zxid >> 32, zxid & 0xffff_ffff);
            let in_order = zxid > self.last && (epoch > self.last >> 32 || counter == (self.last & 0xffff_ffff) + 1);
            if !in_order {
                let reason = format!("txn {zxid:#x} follows {:#x}: txns are missing or out of order", self.last);
                return Err(ZkDataError::corrupt(path, entry.offset, Corruption::Invalid(reason)));
            }
            // A path ZooKeeper would never have logged (its checksum is no signature) is refused, not applied.
            if let Some(bad) = paths(&entry.record.txn).find_map(|p| validate_path(p, false).err()) {
                return Err(ZkDataError::corrupt(path, entry.offset, Corruption::Invalid(bad.to_string())));
            }
            self.tree.apply(&entry.record.header, &entry.record.txn);
            self.last = zxid;
            self.replayed += 1;
            if self.pending.is_some_and(|d| d.zxid < zxid) {
                let reason =
                    format!("the snapshot's digest is at {:#x}, which no txn has", self.pending.map_or(0, |d| d.zxid));
                return Err(ZkDataError::corrupt(path, entry.offset, Corruption::Invalid(reason)));
            }
            let exact_before = self.exact;
            self.check_snapshot_digest(path, entry.offset)?;
            match entry.digest {
                Some(d) if exact_before && d.version == DIGEST_VERSION => {
                    self.digests_checked += 1;
                    if d.digest != self.tree.digest() {
                        let kind = Corruption::Digest { zxid, recorded: d.digest, computed: self.tree.digest() };
                        return Err(ZkDataError::corrupt(path, entry.offset, kind));
                    }
                    // The tree is ZooKeeper's again: a snapshot digest that did not match caught this txn in
                    // flight.
                    self.unsettled = None;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use tree::code::op;
    use tree::prep::{prep, Caller, PrepOptions, Request};
    use tree::tree::same_contents;
    use tree::txn::{TxnHeader, TxnRecord};

    use crate::txnlog::{LogWriter, TxnDigest};

    /// A stand-in for ZooKeeper writing its files: txns prepared and applied as a leader does, each logged
    /// with its digest; snapshots of the tree; logs rolled.
    struct Zk {
        dir: tempfile::TempDir,
        tree: DataTree,
        log: Option<LogWriter<File>>,
        session: i64,
    }

    impl Zk {
        fn new() -> Zk {
            let mut zk = Zk { dir: tempfile::tempdir().unwrap(), tree: DataTree::new(), log: None, session: 0x100 };
            zk.roll();
            zk
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        fn sources(&self) -> Sources {
            Sources { snap_dir: self.path().to_path_buf(), log_dir: self.path().to_path_buf() }
        }

        fn request(&mut self, request: Request) {
            let caller = Caller { session: self.session, auth: Vec::new().into(), expired: false };
            let (op, txn) =
                prep(&self.tree, &caller, PrepOptions { ttl_enabled: true, enforce_quota: false }, &request);
            let zxid = self.tree.last_zxid() + 1;
            let header = TxnHeader { client_id: self.session, cxid: 1, zxid, time: 1_700_000_000_000 + zxid, op };
            self.tree.apply(&header, &txn);
            let digest = TxnDigest { version: 2, digest: self.tree.digest() };
            self.log.as_mut().unwrap().append(&TxnRecord { header, txn }, Some(digest)).unwrap();
        }

        fn create(&mut self, path: &str, data: &[u8], flags: i32) {
            let acl = tree::acl::open_acl_unsafe();
            self.request(Request::Create {
                op: op::CREATE2,
                path: path.into(),
                data: Some(data.to_vec().into()),
                acl,
                flags,
                ttl: -1,
            });
        }

        fn set(&mut self, path: &str, data: &[u8]) {
            self.request(Request::SetData { path: path.into(), data: Some(data.to_vec().into()), version: -1 });
        }

        fn delete(&mut self, path: &str) {
            self.request(Request::Delete { path: path.into(), version: -1 });
        }

        /// Ends the current log (preallocated zeros after it) and starts the next, named by the next zxid.
        fn roll(&mut self) {
            if let Some(log) = self.log.take() {
                log.finish(64 << 10).unwrap();
            }
            let path = self.path().join(files::log_name(self.tree.last_zxid() + 1));
            self.log = Some(LogWriter::new(File::create(path).unwrap()).unwrap());
        }

        fn snapshot(&self) -> PathBuf {
            crate::export::write_snapshot(&self.tree, self.path(), &mut |_| {}).unwrap().path
        }

        fn restore(&mut self) -> Result<Restored, ZkDataError> {
            restore(&self.sources(), crate::DEFAULT_MAX_LEN, &mut |_| {})
        }
    }

    fn fill(zk: &mut Zk, from: usize, to: usize) {
        for i in from..to {
            zk.create(&format!("/n{i}"), format!("v{i}").as_bytes(), 0);
            if i % 3 == 0 {
                zk.set(&format!("/n{i}"), b"changed");
            }
            if i % 4 == 1 {
                zk.delete(&format!("/n{}", i - 1));
            }
        }
    }

    #[test]
    fn the_newest_snapshot_and_the_logs_after_it_make_zookeepers_state() {
        let mut zk = Zk::new();
        zk.request(Request::CreateSession { timeout: 30_000 });
        fill(&mut zk, 0, 10);
        zk.create("/seq-", b"", 2);
        zk.create("/eph", b"", 1);
        zk.snapshot();
        zk.roll();
        fill(&mut zk, 10, 30);
        let restored = zk.restore().unwrap();
        assert!(same_contents(&restored.tree, &zk.tree), "the restored tree differs");
        assert_eq!(restored.tree.last_zxid(), zk.tree.last_zxid());
        assert_eq!(restored.tree.digest(), zk.tree.digest());
        assert_eq!(restored.tree.sessions().get(&0x100), Some(&30_000));
        assert!(restored.replayed > 20 && restored.digests_checked == restored.replayed + 1, "{restored:?}");
        assert_eq!(restored.logs.len(), 1, "the log before the snapshot is not read");
    }

    #[test]
    fn a_fuzzy_snapshot_replays_the_txns_it_already_holds() {
        let mut zk = Zk::new();
        fill(&mut zk, 0, 10);
        let began = zk.tree.last_zxid();
        fill(&mut zk, 10, 16);
        // The copy began at `began` and ended later: named by the first, its digest at the second.
        let written = zk.snapshot();
        std::fs::rename(&written, zk.path().join(files::snapshot_name(began))).unwrap();
        fill(&mut zk, 16, 20);
        let restored = zk.restore().unwrap();
        assert!(same_contents(&restored.tree, &zk.tree));
        assert_eq!(restored.snapshot_zxid, began);
        assert!(restored.digests_checked > 1);
    }

    #[test]
    fn a_damaged_log_is_refused_with_its_file_and_offset() {
        let mut zk = Zk::new();
        fill(&mut zk, 0, 5);
        zk.snapshot();
        fill(&mut zk, 5, 10);
        let log = files::list(zk.path(), LOG_PREFIX).unwrap().pop().unwrap().1;
        let mut bytes = std::fs::read(&log).unwrap();
        // A bit of the first record's txn (the record starts after the 16-byte header, its txn 12 bytes later).
        bytes[16 + 12 + 20] ^= 0x01;
        std::fs::write(&log, &bytes).unwrap();
        let err = zk.restore().unwrap_err();
        let (file, offset, kind) = err.corruption().unwrap_or_else(|| panic!("{err}"));
        assert_eq!(file, log);
        assert_eq!(offset, 16, "{err}");
        assert!(matches!(kind, Corruption::Checksum { .. }), "{err}");
        assert!(err.to_string().contains(&format!("at offset {offset}")), "{err}");
    }

    #[test]
    fn a_missing_log_is_a_gap_and_refused() {
        let mut zk = Zk::new();
        fill(&mut zk, 0, 5);
        zk.snapshot();
        zk.roll();
        let lost = zk.path().join(files::log_name(zk.tree.last_zxid() + 1));
        fill(&mut zk, 5, 10);
        zk.roll();
        fill(&mut zk, 10, 15);
        std::fs::remove_file(lost).unwrap();
        let err = zk.restore().unwrap_err();
        assert!(err.to_string().contains("txns are missing"), "{err}");
    }

    #[test]
    fn a_damaged_newest_snapshot_falls_back_to_an_older_one_as_zookeeper_does() {
        let mut zk = Zk::new();
        fill(&mut zk, 0, 5);
        zk.snapshot();
        fill(&mut zk, 5, 10);
        let newest = zk.snapshot();
        fill(&mut zk, 10, 12);
        let mut bytes = std::fs::read(&newest).unwrap();
        bytes[100] ^= 0x10;
        std::fs::write(&newest, &bytes).unwrap();
        let restored = zk.restore().unwrap();
        assert!(same_contents(&restored.tree, &zk.tree));
        assert_eq!(restored.skipped.len(), 1);
        assert!(
            restored.skipped[0].contains(&newest.display().to_string()) && restored.skipped[0].contains("offset"),
            "{:?}",
            restored.skipped
        );
        // With only the damaged one left, nothing is restored, and the reason names it.
        std::fs::remove_file(&restored.snapshot).unwrap();
        let err = zk.restore().unwrap_err();
        assert!(err.to_string().contains(&newest.display().to_string()), "{err}");
    }

    #[test]
    fn a_digest_that_differs_is_refused() {
        let mut zk = Zk::new();
        fill(&mut zk, 0, 5);
        zk.snapshot();
        // A txn whose recorded digest is not the tree's after it: the tree here is not ZooKeeper's.
        let zxid = zk.tree.last_zxid() + 1;
        let header = TxnHeader { client_id: 0, cxid: 0, zxid, time: 0, op: op::SET_DATA };
        let txn = tree::txn::Txn::SetData { path: "/n2".into(), data: None, version: 7 };
        zk.tree.apply(&header, &txn);
        zk.log
            .as_mut()
            .unwrap()
            .append(&TxnRecord { header, txn }, Some(TxnDigest { version: 2, digest: 42 }))
            .unwrap();
        let err = zk.restore().unwrap_err();
        assert!(matches!(err.corruption(), Some((_, _, Corruption::Digest { recorded: 42, .. }))), "{err}");
    }

    /// A snapshot as ZooKeeper writes one when a txn is in flight as its copy ends: named and digested at
    /// `zxid` (the last txn whose application had finished), holding the nodes as the tree holds them now.
    fn snapshot_caught_in_flight(zk: &Zk, nodes: &DataTree, zxid: i64, digest: u64) {
        use crate::snapshot::{SnapshotWriter, ZxidDigest};
        let path = zk.path().join(files::snapshot_name(zxid));
        let sessions: Vec<(i64, i32)> = nodes.sessions().iter().map(|(&id, &timeout)| (id, timeout)).collect();
        let mut out = SnapshotWriter::new(std::io::BufWriter::new(File::create(path).unwrap()), &sessions).unwrap();
        let acls: Vec<_> = nodes.acl_table().entries().map(|(id, list, _)| (id, list)).collect();
        out.acls(acls.into_iter()).unwrap();
        for (path, node) in nodes.nodes_after(None) {
            out.node(path, node.data.as_deref(), node.acl, &node.stat).unwrap();
        }
        let (mut file, _) = out.finish(ZxidDigest { zxid, version: DIGEST_VERSION, digest }).unwrap();
        file.flush().unwrap();
    }

    /// ZooKeeper's race: the snapshot's digest is the last finished txn's, its nodes already hold part of the
    /// next one. Replaying that txn makes the tree ZooKeeper's again, and its digest says so.
    #[test]
    fn a_snapshot_that_caught_the_next_txn_in_flight_is_settled_by_that_txn() {
        let mut zk = Zk::new();
        fill(&mut zk, 0, 6);
        let (zxid, digest) = (zk.tree.last_zxid(), zk.tree.digest());
        zk.set("/n2", b"in flight");
        snapshot_caught_in_flight(&zk, &zk.tree, zxid, digest);
        zk.roll();
        let restored = zk.restore().unwrap();
        assert!(same_contents(&restored.tree, &zk.tree));
        assert_eq!(restored.tree.digest(), zk.tree.digest());
    }

    /// The same mismatch with no txn after it to settle it, or with one whose replay does not make the tree
    /// ZooKeeper's (a node the snapshot holds differently and the txn does not touch): refused.
    #[test]
    fn a_snapshot_digest_that_no_txn_settles_is_refused() {
        let mut zk = Zk::new();
        fill(&mut zk, 0, 6);
        let (zxid, digest) = (zk.tree.last_zxid(), zk.tree.digest());
        // A change the snapshot holds and no txn explains (ZooKeeper's tree never had it).
        let mut copy = zk.tree.clone();
        let header = TxnHeader { client_id: 0, cxid: 0, zxid: zxid + 1, time: 0, op: op::SET_DATA };
        copy.apply(&header, &tree::txn::Txn::SetData { path: "/n2".into(), data: None, version: 9 });
        snapshot_caught_in_flight(&zk, &copy, zxid, digest);
        zk.roll();
        let err = zk.restore().unwrap_err();
        assert!(
            matches!(err.corruption(), Some((_, _, Corruption::Digest { recorded, .. })) if *recorded == digest),
            "{err}"
        );
        // A txn after it that touches another node does not settle it.
        zk.set("/n3", b"after");
        zk.roll();
        let err = zk.restore().unwrap_err();
        assert!(matches!(err.corruption(), Some((_, _, Corruption::Digest { .. }))), "{err}");
    }

    #[test]
    fn a_path_zookeeper_would_not_log_is_refused() {
        let mut zk = Zk::new();
        zk.snapshot();
        let header = TxnHeader { client_id: 0, cxid: 0, zxid: 1, time: 0, op: op::CREATE };
        let txn = tree::txn::Txn::Create {
            path: "/a/".into(),
            data: None,
            acl: vec![],
            ephemeral: false,
            parent_cversion: 1,
        };
        zk.log.as_mut().unwrap().append(&TxnRecord { header, txn }, None).unwrap();
        let err = zk.restore().unwrap_err();
        assert!(matches!(err.corruption(), Some((_, 16, Corruption::Invalid(_)))), "{err}");
    }

    #[test]
    fn compressed_snapshots_restore_alike() {
        let mut zk = Zk::new();
        fill(&mut zk, 0, 30);
        let plain = zk.snapshot();
        let bytes = std::fs::read(&plain).unwrap();
        let expected = zk.restore().unwrap().tree;
        let gz = plain.with_file_name(format!("{}.gz", plain.file_name().unwrap().to_string_lossy()));
        let mut encoder = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        encoder.write_all(&bytes).unwrap();
        encoder.finish().unwrap();
        std::fs::remove_file(&plain).unwrap();
        assert!(same_contents(&zk.restore().unwrap().tree, &expected));
        let snappy = plain.with_file_name(format!("{}.snappy", plain.file_name().unwrap().to_string_lossy()));
        let mut writer = crate::snappy::SnappyWriter::new(File::create(&snappy).unwrap()).unwrap();
        writer.write_all(&bytes).unwrap();
        writer.finish().unwrap();
        std::fs::remove_file(&gz).unwrap();
        assert!(same_contents(&zk.restore().unwrap().tree, &expected));
    }
}
