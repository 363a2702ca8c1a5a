//! Snapshots shipped from a leader to a follower that is too far behind for a DIFF (Zab's SNAP sync).
//!
//! The leader ships a *consistent* snapshot, one that reflects exactly the committed history up to its zxid:
//! it rebuilds the tree from its own newest snapshot and WAL up to its commit point, in a private copy, and
//! writes that copy out ([`prepare`]). A fuzzy snapshot would not do: the follower could not recover from it
//! until its WAL had caught up with the snapshot's end, and a crash before that would leave it with neither its
//! old log nor a usable new state.
//!
//! The follower never holds less history durably than before, at any crash point:
//! 1. the chunks go to `transfer/incoming.tmp` ([`Incoming`]);
//! 2. [`Incoming::stage`]: fsync, verify (checksum, and start = end = the zxid the leader announced), rename to
//!    `transfer/install.<zxid>`, fsync the directory;
//! 3. the node restarts its WAL after the zxid ([`wal::Wal::restart_after`], whose base file is the commit
//!    point);
//! 4. [`install`]: rename the staged file to `snapshot.<zxid>`, fsync the directory.
//!
//! Recovery ([`finish_installs`], run by [`crate::recover`]) completes a staged install whose zxid is the WAL's
//! base (the crash came between 3 and 4) and deletes any other (the crash came before 3: the old log is intact).
//!
//! ```text
//! <snap dir>/snapshot.<zxid>               the snapshots recovery uses
//! <snap dir>/transfer/incoming.tmp         a snapshot being received
//! <snap dir>/transfer/install.<zxid>       a received snapshot, verified and durable, not installed yet
//! <snap dir>/transfer/outgoing-<n>/        a leader's consistent snapshot being shipped (one per follower)
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wal::fs::{FileSystem, Fs, StdFs, WalFile};
use wal::{failpoint, Wal, Zxid};

use crate::error::SnapshotError;
use crate::recover::{recover_until_with, zxid_i64};
use crate::{format, read, write};

const TRANSFER_DIR: &str = "transfer";
const INCOMING: &str = "incoming.tmp";
const OUTGOING_DIR: &str = "outgoing";

fn transfer_dir(snap_dir: &Path) -> PathBuf {
    snap_dir.join(TRANSFER_DIR)
}

fn staged_path(snap_dir: &Path, zxid: Zxid) -> PathBuf {
    transfer_dir(snap_dir).join(format!("install.{:016x}", zxid.0))
}

fn sync_dir(fs: &dyn FileSystem, dir: &Path) -> Result<(), SnapshotError> {
    let sync = || {
        failpoint!("snapshot::transfer_sync_dir");
        fs.sync_dir(dir)
    };
    sync().map_err(|e| SnapshotError::io("fsync directory", dir, e))
}

/// A consistent snapshot ready to ship.
#[derive(Debug)]
pub struct Prepared {
    /// The zxid it reflects exactly.
    pub zxid: Zxid,
    /// The file, opened (it is deleted from the directory already, so nothing is left behind by a crash).
    pub file: Box<dyn WalFile>,
    /// Its length in bytes.
    pub len: u64,
}

/// Leader: writes a snapshot of exactly the history up to `committed`, rebuilt from the snapshots in
/// `snap_dir` and `wal` (which must hold every txn up to `committed`, durably).
pub fn prepare(snap_dir: &Path, wal: &Wal, committed: Zxid) -> Result<Prepared, SnapshotError> {
    prepare_with(&StdFs, snap_dir, wal, committed)
}

/// Like [`prepare`], with the snapshots on the filesystem `fs`.
pub fn prepare_with(
    fs: &dyn FileSystem,
    snap_dir: &Path,
    wal: &Wal,
    committed: Zxid,
) -> Result<Prepared, SnapshotError> {
    // One preparation at a time per process: each holds a whole copy of the tree, and one that lost its
    // follower cannot be stopped midway, so reconnects must not pile copies up.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (tree, _) = recover_until_with(fs, snap_dir, wal, Some(committed))?;
    if tree.last_zxid() != zxid_i64(committed) {
        return Err(SnapshotError::Transfer(format!(
            "the snapshots and the log reach {:#x}, not the commit point {committed}",
            tree.last_zxid()
        )));
    }
    // One directory per preparation: two followers may need a snapshot at once.
    static PREPARED: AtomicU64 = AtomicU64::new(0);
    let out = transfer_dir(snap_dir).join(format!("{OUTGOING_DIR}-{}", PREPARED.fetch_add(1, Ordering::Relaxed)));
    let clear = || {
        failpoint!("snapshot::prepare_clear");
        fs.remove_dir_all(&out)
    };
    if fs.read_dir(&out).is_ok() {
        clear().map_err(|e| SnapshotError::io("clear", &out, e))?;
    }
    let create = || {
        failpoint!("snapshot::prepare_create");
        fs.create_dir_all(&out)
    };
    create().map_err(|e| SnapshotError::io("create directory", &out, e))?;
    // Nothing applies to this private copy, so the "fuzzy" writer produces a snapshot with start = end (its
    // steps fail at the `snapshot::create` ... `snapshot::sync_dir` failpoints).
    let info = match write::write_fuzzy_with(fs, &out, &write::SharedTree::new(tree), write::DEFAULT_CHUNK) {
        Ok(info) => info,
        Err(error) => {
            // Leave no half-written copy behind (recovery would delete it, but only at the next start).
            let _ = fs.remove_dir_all(&out);
            return Err(error);
        }
    };
    debug_assert_eq!(info.start_zxid, info.end_zxid);
    let open = || {
        failpoint!("snapshot::prepare_open");
        fs.open(&info.path, false)
    };
    let opened = open().map_err(|e| SnapshotError::io("open", &info.path, e));
    // The open file outlives its directory entry: a crash leaves nothing behind, and neither does a failure.
    let cleared = clear().map_err(|e| SnapshotError::io("clear", &out, e));
    let file = opened?;
    cleared?;
    tracing::info!(zxid = %committed, bytes = info.bytes, nodes = info.nodes, "prepared a snapshot to ship");
    Ok(Prepared { zxid: committed, file, len: info.bytes })
}

/// The end zxid of the newest snapshot in `snap_dir` that verifies: a point every txn up to which was
/// committed (a snapshot copies the applied tree, and a server applies only committed txns, except those it
/// replays from its own log at start-up, which a sync confirms or cuts before any commit makes it snapshot).
pub fn newest_snapshot_end(snap_dir: &Path) -> Result<Option<Zxid>, SnapshotError> {
    newest_snapshot_end_with(&StdFs, snap_dir)
}

/// Like [`newest_snapshot_end`], on the filesystem `fs`.
pub fn newest_snapshot_end_with(fs: &dyn FileSystem, snap_dir: &Path) -> Result<Option<Zxid>, SnapshotError> {
    for (_, path) in crate::dir::list_with(fs, snap_dir)? {
        match read::check_with(fs, &path) {
            Ok((_, trailer)) => return Ok(Some(Zxid(u64::try_from(trailer.end_zxid).unwrap_or(0)))),
            Err(error) => tracing::warn!(%error, "skipping a snapshot that does not verify"),
        }
    }
    Ok(None)
}

/// Reads up to `max` bytes of a prepared snapshot from `offset`.
pub fn read_chunk(file: &dyn WalFile, offset: u64, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; max];
    let n = file.read_at(&mut buf, offset)?;
    buf.truncate(n);
    Ok(buf)
}

/// Follower: a snapshot being received.
#[derive(Debug)]
pub struct Incoming {
    fs: Fs,
    snap_dir: PathBuf,
    path: PathBuf,
    file: Box<dyn WalFile>,
    written: u64,
}

impl Incoming {
    /// Starts receiving into `snap_dir/transfer/incoming.tmp` (replacing any earlier partial one).
    pub fn create(snap_dir: &Path) -> Result<Incoming, SnapshotError> {
        Incoming::create_with(Arc::new(StdFs), snap_dir)
    }

    /// Like [`Incoming::create`], on the filesystem `fs`.
    pub fn create_with(fs: Fs, snap_dir: &Path) -> Result<Incoming, SnapshotError> {
        let dir = transfer_dir(snap_dir);
        fs.create_dir_all(&dir).map_err(|e| SnapshotError::io("create directory", &dir, e))?;
        // The staged snapshot's directory must survive a power cut too: the WAL's restart drops the history
        // before it. Synced every time, not only when this call made the directory: a process that died between
        // the two leaves a directory the page cache shows and the disk may not hold (one fsync per transfer).
        sync_dir(&*fs, snap_dir)?;
        let path = dir.join(INCOMING);
        let create = || {
            failpoint!("snapshot::transfer_create");
            fs.create(&path)
        };
        let file = create().map_err(|e| SnapshotError::io("create", &path, e))?;
        Ok(Incoming { fs, snap_dir: snap_dir.to_path_buf(), path, file, written: 0 })
    }

    /// Appends the chunk that starts at `offset` (which must be where the last one ended).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), SnapshotError> {
        if offset != self.written {
            return Err(SnapshotError::Transfer(format!("chunk at {offset}, expected {}", self.written)));
        }
        let (file, at) = (&self.file, self.written);
        let write = || {
            failpoint!("snapshot::transfer_write", short: file.write_at(&data[..data.len() / 2], at));
            file.write_at(data, at)
        };
        write().map_err(|e| SnapshotError::io("write", &self.path, e))?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Makes the received snapshot durable and verifies that it is a consistent snapshot of the history up to
    /// `zxid`; it is then staged (`transfer/install.<zxid>`), not yet used by recovery.
    pub fn stage(self, zxid: Zxid) -> Result<(), SnapshotError> {
        let sync = || {
            failpoint!("snapshot::transfer_fsync");
            self.file.sync_all()
        };
        sync().map_err(|e| SnapshotError::io("fsync", &self.path, e))?;
        drop(self.file);
        let fs = &*self.fs;
        let (start, trailer) = read::check_with(fs, &self.path)?;
        if start != zxid_i64(zxid) || trailer.end_zxid != start {
            return Err(SnapshotError::Transfer(format!(
                "received a snapshot from {start:#x} to {:#x}, expected exactly {zxid}",
                trailer.end_zxid
            )));
        }
        let staged = staged_path(&self.snap_dir, zxid);
        let rename = || {
            failpoint!("snapshot::transfer_stage");
            fs.rename(&self.path, &staged)
        };
        rename().map_err(|e| SnapshotError::io("rename", &staged, e))?;
        // The caller restarts the WAL after `zxid` next, which drops the history before it: the staged file
        // must be durable under its name by then, or recovery finds neither the old log nor the new snapshot.
        sync_dir(fs, &transfer_dir(&self.snap_dir))
    }
}

/// Follower: makes the staged snapshot at `zxid` the newest snapshot. Call only once the WAL was restarted
/// after `zxid`, durably.
pub fn install(snap_dir: &Path, zxid: Zxid) -> Result<PathBuf, SnapshotError> {
    install_with(&StdFs, snap_dir, zxid)
}

/// Like [`install`], on the filesystem `fs`.
pub fn install_with(fs: &dyn FileSystem, snap_dir: &Path, zxid: Zxid) -> Result<PathBuf, SnapshotError> {
    let staged = staged_path(snap_dir, zxid);
    let path = snap_dir.join(format::file_name(zxid_i64(zxid)));
    let rename = || {
        failpoint!("snapshot::transfer_install");
        fs.rename(&staged, &path)
    };
    rename().map_err(|e| SnapshotError::io("install", &path, e))?;
    sync_dir(fs, snap_dir)?;
    tracing::info!(snapshot = %path.display(), "installed the leader's snapshot");
    Ok(path)
}

/// Recovery: completes the staged install that the WAL's restart committed to, and deletes every other
/// leftover of a transfer. Returns the snapshot installed, if any.
pub fn finish_installs(snap_dir: &Path, wal: &Wal) -> Result<Option<PathBuf>, SnapshotError> {
    finish_installs_with(&StdFs, snap_dir, wal)
}

/// Like [`finish_installs`], on the filesystem `fs`.
pub fn finish_installs_with(fs: &dyn FileSystem, snap_dir: &Path, wal: &Wal) -> Result<Option<PathBuf>, SnapshotError> {
    let dir = transfer_dir(snap_dir);
    let read_dir = || {
        failpoint!("snapshot::transfer_list");
        fs.read_dir(&dir)
    };
    let names = match read_dir() {
        Ok(names) => names,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SnapshotError::io("list", &dir, e)),
    };
    // A crashed process may have moved a staged snapshot into place, or deleted leftovers, without the
    // directory fsyncs that make it durable: the page cache shows it, the disk may not. Make it durable before
    // this start relies on it (the snapshot directory first, which holds the new name, then this one).
    sync_dir(fs, snap_dir)?;
    sync_dir(fs, &dir)?;
    let mut installed = None;
    for name in names {
        let staged = name.strip_prefix("install.").and_then(|hex| u64::from_str_radix(hex, 16).ok()).map(Zxid);
        match staged {
            Some(zxid) if wal.base() == Some(zxid) => {
                tracing::warn!(%zxid, "completing the install of a snapshot from the leader that a crash interrupted");
                installed = Some(install_with(fs, snap_dir, zxid)?);
            }
            _ => {
                let path = dir.join(&name);
                tracing::warn!(file = %path.display(), "deleting the leftover of a snapshot transfer");
                let remove = || {
                    failpoint!("snapshot::transfer_delete");
                    // `prepare` makes the only directories here (a leader's copies, gone with its process).
                    if name.starts_with(OUTGOING_DIR) {
                        fs.remove_dir_all(&path)
                    } else {
                        fs.remove(&path)
                    }
                };
                remove().map_err(|e| SnapshotError::io("delete", &path, e))?;
            }
        }
    }
    sync_dir(fs, &dir)?;
    Ok(installed)
}
