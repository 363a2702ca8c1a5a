//! Retention: keep the newest N snapshots that verify, and the WAL segments any of them needs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use wal::fs::{FileSystem, StdFs};
use wal::{failpoint, Wal, Zxid};

use crate::error::SnapshotError;
use crate::{dir, read, write};

/// What retention deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retained {
    /// Snapshots kept (valid ones).
    pub kept: Vec<PathBuf>,
    /// Snapshots deleted.
    pub deleted: Vec<PathBuf>,
    /// WAL segments purged.
    pub wal_segments_purged: usize,
}

/// How many snapshots to keep by default (ZooKeeper's `autopurge.snapRetainCount` default).
pub const DEFAULT_RETAIN: usize = 3;

/// Keeps the newest `keep` snapshots that verify; deletes every snapshot older than the oldest of them, and the
/// WAL segments that hold only txns before its start. Snapshots that fail verification are not counted, so a
/// run of bad snapshots never costs the data that recovery needs; with fewer than `keep` valid ones, nothing
/// is deleted.
pub fn retain(snap_dir: &Path, wal: &Wal, keep: usize) -> Result<Retained, SnapshotError> {
    retain_with(&StdFs, snap_dir, wal, keep)
}

/// Like [`retain`], with the snapshots on the filesystem `fs` (the WAL is on its own).
pub fn retain_with(fs: &dyn FileSystem, snap_dir: &Path, wal: &Wal, keep: usize) -> Result<Retained, SnapshotError> {
    Retention::new(keep).run_with(fs, snap_dir, wal)
}

/// [`retain`] run again and again (after every snapshot) by one process, which remembers the snapshots it has
/// verified or written itself: a snapshot is never changed once renamed into place, so one that verified is not
/// read again, and one this process wrote carries the checksum of the very bytes it wrote (reading it back
/// cost a server an eighth of its CPU under a create-heavy load, a 50-80 MB snapshot a second). A process
/// that starts afresh reads every snapshot once, from the disk.
#[derive(Debug)]
pub struct Retention {
    keep: usize,
    /// Snapshots that verified, with their lengths (a file of the same name written again is checked again
    /// unless it has the same length; either way this process wrote it and synced it).
    verified: HashSet<(PathBuf, u64)>,
}

impl Retention {
    /// Keeps the newest `keep` snapshots (at least one); nothing verified yet.
    pub fn new(keep: usize) -> Retention {
        Retention { keep: keep.max(1), verified: HashSet::new() }
    }

    /// Counts a snapshot this process just wrote (and synced) as verified.
    pub fn written(&mut self, info: &crate::write::SnapshotInfo) {
        self.verified.insert((info.path.clone(), info.bytes));
    }

    /// [`retain`], reading only the snapshots not verified by an earlier run.
    pub fn run(&mut self, snap_dir: &Path, wal: &Wal) -> Result<Retained, SnapshotError> {
        self.run_with(&StdFs, snap_dir, wal)
    }

    /// [`Retention::run`] on the filesystem `fs`.
    pub fn run_with(&mut self, fs: &dyn FileSystem, snap_dir: &Path, wal: &Wal) -> Result<Retained, SnapshotError> {
        let snapshots = dir::list_with(fs, snap_dir)?;
        self.verified.retain(|(path, _)| snapshots.iter().any(|(_, p)| p == path));
        let verified = &mut self.verified;
        let mut verifies = |path: &Path| {
            let Ok(len) = fs.open(path, false).and_then(|f| f.size()) else { return false };
            if verified.contains(&(path.to_path_buf(), len)) {
                return true;
            }
            // The checksum, not a full load: building N trees each time cost a server a third of its CPU under a
            // create-heavy load.
            let ok = read::check_with(fs, path).is_ok();
            if ok {
                verified.insert((path.to_path_buf(), len));
            }
            ok
        };
        retain_listed(fs, snap_dir, wal, self.keep, &snapshots, &mut verifies)
    }
}

fn retain_listed(
    fs: &dyn FileSystem,
    snap_dir: &Path,
    wal: &Wal,
    keep: usize,
    snapshots: &[(i64, PathBuf)],
    verifies: &mut dyn FnMut(&Path) -> bool,
) -> Result<Retained, SnapshotError> {
    let mut retained = Retained::default();
    let mut oldest_kept = None;
    for (i, (zxid, path)) in snapshots.iter().enumerate() {
        if !verifies(path) {
            tracing::warn!(path = %path.display(), "retention: snapshot does not verify; not counted");
            continue;
        }
        retained.kept.push(path.clone());
        if retained.kept.len() == keep {
            oldest_kept = Some((i, *zxid));
            break;
        }
    }
    let Some((index, start_zxid)) = oldest_kept else { return Ok(retained) };
    for (_, path) in &snapshots[index + 1..] {
        let delete = || {
            failpoint!("snapshot::delete");
            fs.remove(path)
        };
        delete().map_err(|e| SnapshotError::io("delete", path, e))?;
        retained.deleted.push(path.clone());
    }
    if !retained.deleted.is_empty() {
        write::sync_dir(fs, snap_dir)?;
    }
    let purge_point = Zxid(u64::try_from(start_zxid).unwrap_or(0).saturating_add(1));
    retained.wal_segments_purged = wal.purge_before(purge_point)?.wait()?.segments;
    Ok(retained)
}
