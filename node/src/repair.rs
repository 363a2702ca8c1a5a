//! Repair from peers at start (members of a quorum only).
//!
//! A log with a damaged record, or a data directory from which the tree cannot be rebuilt (a torn or corrupt
//! snapshot the log no longer covers, a snapshot past a cut log), does not wait for an operator. The server
//! marks itself repairing first ([`replication::repairing`], vouching for how far its log and snapshots
//! reached), then keeps what verifies: the log is cut just before the damaged record; if the tree still cannot
//! be rebuilt, the log and the snapshots are moved aside (each into a `damaged-<unix seconds>/` beside it, for
//! the operator) and the server starts empty. Either way it starts as a follower that takes what it lacks from the
//! leader by DIFF or SNAP, and until it has, it neither leads nor votes as if it lacked what it lost (see
//! `replication::election`).
//!
//! A standalone server has no peers to repair from, and a disk that fails to read is a local failure: both
//! still refuse to start, naming the file. So does a snapshot of a newer format (a downgrade, not damage).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use snapshot::recover::Recovered;
use snapshot::SnapshotError;
use tree::tree::DataTree;
use wal::{Recovery, Wal, WalError, WalOptions, Zxid};

use crate::server::StartError;

/// Where a server keeps its log and snapshots.
pub struct Dirs<'a> {
    /// `dataLogDir`: the WAL in `log/`, the epochs and the repair mark.
    pub log_dir: &'a Path,
    /// The snapshots.
    pub snap_dir: &'a Path,
    /// Whether this server runs alone (it then never repairs).
    pub standalone: bool,
}

/// Opens the WAL in `log_dir/log`; a member of a quorum whose log holds a damaged record cuts it there first.
pub fn open_wal(dirs: &Dirs, options: &WalOptions) -> Result<(Wal, Recovery), StartError> {
    let wal_dir = dirs.log_dir.join("log");
    match Wal::open(&wal_dir, options.clone()) {
        Err(error @ WalError::Corruption { .. }) if !dirs.standalone => {
            tracing::warn!(%error, "the write-ahead log holds a damaged record: repairing from the peers");
            cut_damaged_log(dirs.log_dir, &wal_dir, options)?;
            Ok(Wal::open(&wal_dir, options.clone())?)
        }
        other => Ok(other?),
    }
}

/// Marks the server repairing, vouching for every record that still reads, then cuts the log before the
/// damage. A crash in between leaves the mark and the uncut log, and the next start does this again.
fn cut_damaged_log(log_dir: &Path, wal_dir: &Path, options: &WalOptions) -> Result<(), StartError> {
    let inspection = wal::inspect(wal_dir, options)?;
    let Some(plan) = inspection.repair_plan else {
        return Err(StartError::Config(format!("{}: reported damaged, and no repair plan found", wal_dir.display())));
    };
    // Nothing readable at all: how far the log reached is unknown, so vouch for everything (follow only).
    let vouched = plan.last_readable_zxid.unwrap_or(Zxid(u64::MAX));
    let vouched = replication::repairing::mark(log_dir, vouched).map_err(repair_error)?;
    let repaired = wal::repair(wal_dir, options)?;
    tracing::warn!(
        segment = %plan.segment.display(),
        offset = plan.offset,
        corruption = %plan.corruption,
        last_kept = %plan.last_good_zxid.map_or("none".into(), |z| z.to_string()),
        records_dropped = plan.records_dropped,
        removed_segments = plan.removed_segments.len(),
        %vouched,
        repaired = repaired.is_some(),
        "cut the log before the damaged record; the rest comes from the leader"
    );
    Ok(())
}

/// Rebuilds the tree from the snapshots and the log; a member of a quorum that cannot (the data is damaged)
/// marks itself repairing, moves the log and snapshots aside and starts empty.
pub fn recover(dirs: &Dirs, wal: Wal, options: &WalOptions) -> Result<(Wal, DataTree, Recovered), StartError> {
    let error = match snapshot::recover::recover(dirs.snap_dir, &wal) {
        Ok((tree, recovered)) => return Ok((wal, tree, recovered)),
        Err(error) if dirs.standalone || !damaged(&error) => return Err(error.into()),
        Err(error) => error,
    };
    tracing::warn!(%error, "the tree cannot be rebuilt from this server's snapshots and log: repairing from the peers");
    let newest_snapshot = snapshot::dir::list(dirs.snap_dir)?.first().map(|&(zxid, _)| Zxid(zxid.max(0) as u64));
    let vouched = wal.last_zxid().max(wal.base()).max(newest_snapshot).unwrap_or(Zxid::ZERO);
    drop(wal);
    let vouched = replication::repairing::mark(dirs.log_dir, vouched).map_err(repair_error)?;
    let aside = move_aside(dirs)?;
    tracing::warn!(moved_to = %aside.display(), %vouched, "moved the log and snapshots aside; starting empty, the leader sends a snapshot");
    let (wal, _) = open_wal(dirs, options)?;
    let (tree, recovered) = snapshot::recover::recover(dirs.snap_dir, &wal)?;
    Ok((wal, tree, recovered))
}

/// Whether recovery failed because of what is on disk (not the disk itself, nor a newer format).
fn damaged(error: &SnapshotError) -> bool {
    match error {
        SnapshotError::Io { .. }
        | SnapshotError::UnsupportedVersion { .. }
        | SnapshotError::Transfer(_)
        | SnapshotError::Wal(_) => false,
        SnapshotError::Unreplayable { .. }
        | SnapshotError::BadMagic { .. }
        | SnapshotError::Corrupt { .. }
        | SnapshotError::AheadOfWal { .. }
        | SnapshotError::WalGap { .. }
        | SnapshotError::DigestMismatch { .. }
        | SnapshotError::NoTrustedSnapshot { .. }
        | SnapshotError::BadTxn { .. } => true,
    }
}

/// Moves `log_dir/log` and the snapshot directory each into a `damaged-<unix seconds>/` beside it (the two may
/// lie on different file systems), durably; both are recreated empty. Returns the log's.
fn move_aside(dirs: &Dirs) -> Result<PathBuf, StartError> {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let aside_name = format!("damaged-{seconds}");
    let log = dirs.log_dir.join("log");
    for from in [log.as_path(), dirs.snap_dir] {
        let (Some(parent), Some(name)) = (from.parent(), from.file_name()) else { continue };
        let aside = parent.join(&aside_name);
        std::fs::create_dir_all(&aside).map_err(io("create", &aside))?;
        if from.exists() {
            std::fs::rename(from, aside.join(name)).map_err(io("move aside", from))?;
        }
        std::fs::create_dir_all(from).map_err(io("create", from))?;
        for dir in [aside.as_path(), parent] {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync", dir))?;
        }
    }
    Ok(dirs.log_dir.join(aside_name))
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StartError + 'a {
    move |source| StartError::Io { what: format!("{what} {}", path.display()), source }
}

fn repair_error(error: replication::repairing::RepairingError) -> StartError {
    StartError::Config(error.to_string())
}
