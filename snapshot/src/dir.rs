//! The snapshot directory: listing snapshots, cleaning up interrupted writes.

use std::io;
use std::path::{Path, PathBuf};

use wal::failpoint;
use wal::fs::{FileSystem, StdFs};

use crate::error::SnapshotError;
use crate::format;

/// The snapshots in `dir` as (start zxid, path), newest first.
pub fn list(dir: &Path) -> Result<Vec<(i64, PathBuf)>, SnapshotError> {
    list_with(&StdFs, dir)
}

/// Like [`list`], on the filesystem `fs`.
pub fn list_with(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<(i64, PathBuf)>, SnapshotError> {
    let read_dir = || {
        failpoint!("snapshot::list");
        fs.read_dir(dir)
    };
    let names = match read_dir() {
        Ok(names) => names,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SnapshotError::io("list", dir, e)),
    };
    let mut found: Vec<(i64, PathBuf)> =
        names.into_iter().filter_map(|name| Some((format::parse_file_name(&name)?, dir.join(name)))).collect();
    found.sort_by(|a, b| b.cmp(a));
    Ok(found)
}

/// Deletes the temporary files of snapshot writes that a crash interrupted.
pub fn remove_partial(dir: &Path) -> Result<usize, SnapshotError> {
    remove_partial_with(&StdFs, dir)
}

/// Like [`remove_partial`], on the filesystem `fs`. The removals are not made durable: a temporary file that a
/// power cut brings back is only deleted again at the next start.
pub fn remove_partial_with(fs: &dyn FileSystem, dir: &Path) -> Result<usize, SnapshotError> {
    let mut removed = 0;
    let Ok(names) = fs.read_dir(dir) else { return Ok(0) };
    for name in names.into_iter().filter(|name| name.starts_with("snapshot.") && name.ends_with(".tmp")) {
        let path = dir.join(name);
        let remove = || {
            failpoint!("snapshot::remove_partial");
            fs.remove(&path)
        };
        remove().map_err(|e| SnapshotError::io("delete", &path, e))?;
        removed += 1;
    }
    Ok(removed)
}
