//! The snapshot directory: listing snapshots, cleaning up interrupted writes.

use std::path::{Path, PathBuf};

use wal::failpoint;

use crate::error::SnapshotError;
use crate::format;

/// The snapshots in `dir` as (start zxid, path), newest first.
pub fn list(dir: &Path) -> Result<Vec<(i64, PathBuf)>, SnapshotError> {
    let mut found = Vec::new();
    let read_dir = || {
        failpoint!("snapshot::list");
        std::fs::read_dir(dir)
    };
    let entries = match read_dir() {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(SnapshotError::io("list", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| SnapshotError::io("list", dir, e))?;
        if let Some(zxid) = format::parse_file_name(&entry.file_name().to_string_lossy()) {
            found.push((zxid, entry.path()));
        }
    }
    found.sort_by(|a, b| b.cmp(a));
    Ok(found)
}

/// Deletes the temporary files of snapshot writes that a crash interrupted.
pub fn remove_partial(dir: &Path) -> Result<usize, SnapshotError> {
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(0) };
    for entry in entries {
        let entry = entry.map_err(|e| SnapshotError::io("list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("snapshot.") && name.ends_with(".tmp") {
            let remove = || {
                failpoint!("snapshot::remove_partial");
                std::fs::remove_file(entry.path())
            };
            remove().map_err(|e| SnapshotError::io("delete", entry.path(), e))?;
            removed += 1;
        }
    }
    Ok(removed)
}
