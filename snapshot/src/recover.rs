//! Recovery: the newest snapshot that verifies, plus the WAL after it.
//!
//! - Snapshots are tried newest first; one that fails verification is skipped, and the reason is logged and
//!   reported. Nothing is deleted.
//! - Replay applies every WAL txn after the snapshot's start zxid. It must reach the snapshot's end zxid and
//!   find the digest the snapshot recorded there; otherwise recovery fails (the snapshot holds txns the WAL
//!   lost, or the replicas' states diverged) rather than start from a state that silently lost data.
//! - With no snapshot that verifies, recovery starts from an empty tree only if the WAL is empty or still holds
//!   the log's very first segment (nothing was ever purged).

use std::path::Path;
use std::time::Instant;

use tree::tree::DataTree;
use tree::txn::TxnRecord;
use wal::fs::{FileSystem, StdFs};
use wal::{Wal, Zxid};

use crate::dir;
use crate::error::SnapshotError;
use crate::read::{self, Loaded};

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The snapshot used (`None`: started from an empty tree).
    pub snapshot: Option<std::path::PathBuf>,
    /// Newer snapshots that were skipped, each with the reason.
    pub skipped: Vec<String>,
    /// Txns replayed from the WAL.
    pub replayed: u64,
    /// The last zxid applied.
    pub last_zxid: i64,
    /// The tree digest after recovery.
    pub digest: u64,
}

/// Start-up: finishes or discards what a crash interrupted (snapshot writes, snapshot installs from a leader,
/// see [`crate::transfer`]), then rebuilds the tree from the snapshots in `snap_dir` and `wal`.
pub fn recover(snap_dir: &Path, wal: &Wal) -> Result<(DataTree, Recovered), SnapshotError> {
    recover_with(&StdFs, snap_dir, wal)
}

/// Like [`recover`], with the snapshots on the filesystem `fs` (the WAL is on its own).
pub fn recover_with(fs: &dyn FileSystem, snap_dir: &Path, wal: &Wal) -> Result<(DataTree, Recovered), SnapshotError> {
    let removed = dir::remove_partial_with(fs, snap_dir)?;
    if removed > 0 {
        tracing::warn!(removed, "deleted snapshots whose writing a crash interrupted");
    }
    crate::transfer::finish_installs_with(fs, snap_dir, wal)?;
    recover_until_with(fs, snap_dir, wal, None)
}

/// Rebuilds the tree from the snapshots in `snap_dir` and the WAL up to `until` (all of it with `None`),
/// changing nothing on disk (a snapshot may be being written meanwhile).
///
/// A server whose log was cut while it keeps running (a follower told to TRUNC) rebuilds with `until`: the
/// WAL may already hold txns after the cut that the leader sent, and those reach the tree through the
/// committed stream, not here.
pub fn recover_until(snap_dir: &Path, wal: &Wal, until: Option<Zxid>) -> Result<(DataTree, Recovered), SnapshotError> {
    recover_until_with(&StdFs, snap_dir, wal, until)
}

/// Like [`recover_until`], with the snapshots on the filesystem `fs`.
pub fn recover_until_with(
    fs: &dyn FileSystem,
    snap_dir: &Path,
    wal: &Wal,
    until: Option<Zxid>,
) -> Result<(DataTree, Recovered), SnapshotError> {
    let mut recovered = Recovered::default();
    for (_, path) in dir::list_with(fs, snap_dir)? {
        match read::load_with(fs, &path) {
            // A snapshot that reflects txns past the cut (a TRUNC cut them, or a leader prepares an older
            // point) cannot serve: an older one can.
            Ok(loaded) if until.is_some_and(|until| loaded.trailer.end_zxid > zxid_i64(until)) => {
                tracing::info!(snapshot = %path.display(), "skipping a snapshot that reaches past the point to rebuild");
                recovered.skipped.push(format!("{}: reaches past {:?}", path.display(), until));
            }
            Ok(loaded) => {
                recovered.snapshot = Some(path);
                let tree = replay_from(loaded, wal, until, &mut recovered)?;
                return Ok((tree, recovered));
            }
            // A disk that fails to read says nothing about the snapshot: stop rather than fall back and hide
            // the fault (one deleted meanwhile, by retention while a leader prepares a transfer, is skipped).
            Err(error @ SnapshotError::Io { .. }) if !is_not_found(&error) => return Err(error),
            Err(error) => {
                tracing::warn!(%error, "skipping a snapshot that does not verify; trying an older one");
                recovered.skipped.push(error.to_string());
            }
        }
    }
    if !wal.holds_full_history() && (wal.first_zxid().is_some() || wal.base().is_some()) {
        let first = wal.first_zxid().or(wal.base()).unwrap_or(Zxid::ZERO);
        return Err(SnapshotError::NoTrustedSnapshot {
            wal_first: zxid_i64(first),
            rejected: recovered.skipped.join("; "),
        });
    }
    let mut tree = DataTree::new();
    replay(&mut tree, wal, 0, None, until, Path::new("(no snapshot)"), &mut recovered)?;
    Ok((tree, recovered))
}

fn is_not_found(error: &SnapshotError) -> bool {
    matches!(error, SnapshotError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

fn replay_from(
    loaded: Loaded,
    wal: &Wal,
    until: Option<Zxid>,
    recovered: &mut Recovered,
) -> Result<DataTree, SnapshotError> {
    let Loaded { mut tree, path, start_zxid, trailer, .. } = loaded;
    let wal_last = zxid_i64(wal.end());
    if trailer.end_zxid > wal_last {
        return Err(SnapshotError::AheadOfWal { snapshot: path, end_zxid: trailer.end_zxid, wal_last });
    }
    match wal.base().map(zxid_i64) {
        // A restarted log holds every txn after its base and nothing else.
        Some(base) if base > start_zxid => {
            return Err(SnapshotError::WalGap { snapshot: path, start_zxid, wal_first: base + 1 });
        }
        Some(_) => {}
        None => {
            if let Some(first) = wal.first_zxid().map(zxid_i64) {
                if first > start_zxid && wal_last > start_zxid && !wal.holds_full_history() {
                    return Err(SnapshotError::WalGap { snapshot: path, start_zxid, wal_first: first });
                }
            }
        }
    }
    replay(&mut tree, wal, start_zxid, Some((trailer.end_zxid, trailer.digest)), until, &path, recovered)?;
    Ok(tree)
}

/// Applies every WAL txn after `after`; at `check`'s zxid, the digest must be `check`'s digest.
fn replay(
    tree: &mut DataTree,
    wal: &Wal,
    after: i64,
    check: Option<(i64, u64)>,
    until: Option<Zxid>,
    snapshot: &Path,
    recovered: &mut Recovered,
) -> Result<(), SnapshotError> {
    let started = Instant::now();
    let from = Zxid(u64::try_from(after).unwrap_or(0).saturating_add(1));
    let mut pending_check = check.filter(|&(end, _)| end > after);
    if let Some((end, expected)) = check.filter(|&(end, _)| end <= after) {
        verify_digest(tree, end, expected, snapshot)?;
    }
    for record in wal.iter_from(from) {
        let record = record?;
        if until.is_some_and(|until| record.zxid > until) {
            break;
        }
        let mut txn = TxnRecord::decode(&record.payload)
            .map_err(|e| SnapshotError::BadTxn { zxid: zxid_i64(record.zxid), reason: e.to_string() })?;
        // The WAL's zxid is the txn's: the leader prepares a txn before the zxid is given.
        txn.header.zxid = zxid_i64(record.zxid);
        tree.apply_moving_data(&txn.header, &mut txn.txn);
        recovered.replayed += 1;
        if let Some((end, expected)) = pending_check.filter(|&(end, _)| txn.header.zxid >= end) {
            verify_digest(tree, end, expected, snapshot)?;
            pending_check = None;
        }
        if recovered.replayed.is_multiple_of(100_000) {
            tracing::info!(
                replayed = recovered.replayed,
                zxid = format!("{:#x}", txn.header.zxid),
                "replaying the WAL"
            );
        }
    }
    if let Some((end, _)) = pending_check {
        return Err(SnapshotError::AheadOfWal {
            snapshot: snapshot.to_path_buf(),
            end_zxid: end,
            wal_last: tree.last_zxid(),
        });
    }
    (recovered.last_zxid, recovered.digest) = (tree.last_zxid(), tree.digest());
    tracing::info!(
        replayed = recovered.replayed,
        last_zxid = format!("{:#x}", tree.last_zxid()),
        secs = started.elapsed().as_secs_f64(),
        "recovered the tree"
    );
    Ok(())
}

fn verify_digest(tree: &DataTree, zxid: i64, expected: u64, snapshot: &Path) -> Result<(), SnapshotError> {
    if tree.digest() != expected {
        return Err(SnapshotError::DigestMismatch {
            snapshot: snapshot.to_path_buf(),
            zxid,
            expected,
            found: tree.digest(),
        });
    }
    Ok(())
}

/// A WAL zxid as the tree's (jute long) zxid.
pub(crate) fn zxid_i64(z: Zxid) -> i64 {
    i64::try_from(z.0).unwrap_or(i64::MAX)
}
