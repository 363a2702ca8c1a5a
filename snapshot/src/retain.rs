//! Retention: keep the newest N snapshots that verify, and the WAL segments any of them needs.

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
    let keep = keep.max(1);
    let mut retained = Retained::default();
    let snapshots = dir::list_with(fs, snap_dir)?;
    let mut oldest_kept = None;
    for (i, (zxid, path)) in snapshots.iter().enumerate() {
        // The checksum, not a full load: retention runs after every snapshot, and building N trees each time
        // cost a server a third of its CPU under a create-heavy load.
        if read::check_with(fs, path).is_err() {
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
