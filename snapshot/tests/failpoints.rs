//! Injected IO failures (the `failpoints` feature) at every IO step of writing, retaining, reading and
//! transferring snapshots: each fails with an error naming the step and the file, leaves nothing a later start
//! would trust, and the same operation succeeds once the disk is healthy again.
//!
//! Run with `cargo test -p snapshot --features failpoints --test failpoints`. Failpoints are process-global, so
//! every test holds a `FailScenario`, which serialises them.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use fail::FailScenario;
use snapshot::transfer::{self, Incoming};
use snapshot::SnapshotError;
use wal::Zxid;

/// The errno each action injects: a short write fails with ENOSPC.
fn errno(action: &str) -> i32 {
    if action.contains("EIO") {
        libc::EIO
    } else {
        libc::ENOSPC
    }
}

/// Asserts `error` is an IO error of `op` on a file whose name contains `file`, with `errno`.
#[track_caller]
fn assert_io(error: &SnapshotError, op: &str, file: &str, errno: i32) {
    match error {
        SnapshotError::Io { op: got, path, source } => {
            assert_eq!((*got, source.raw_os_error()), (op, Some(errno)), "{error}");
            assert!(path.to_string_lossy().contains(file), "{error}");
        }
        other => panic!("expected an IO error of {op}, got {other}"),
    }
}

/// The files in `dir`, with their bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

/// A database with two snapshots and txns after them.
fn db(dir: &Path) -> Db {
    let db = Db::create(dir);
    workload(&db, 0, 300);
    db.snapshot(7);
    workload(&db, 300, 150);
    db.snapshot(7);
    workload(&db, 450, 40);
    db
}

#[test]
fn a_failed_snapshot_write_leaves_the_previous_snapshots_and_the_same_recovery() {
    let scenario = FailScenario::setup();
    for (point, action, op) in [
        ("snapshot::create", "return(EIO)", "create"),
        ("snapshot::write", "return(ENOSPC)", "write"),
        ("snapshot::write", "1*off->return(short)", "write"),
        ("snapshot::write", "3*off->return(EIO)", "write"),
        ("snapshot::fsync", "return(EIO)", "fsync"),
        ("snapshot::rename", "return(ENOSPC)", "rename"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let (before, digest) = (files(&db.snap_dir), db.digest());
        fail::cfg(point, action).unwrap();
        let error = snapshot::write::write_fuzzy(&db.snap_dir, &db.tree, 7).unwrap_err();
        assert_io(&error, op, ".tmp", errno(action));
        fail::remove(point);
        assert_eq!(files(&db.snap_dir), before, "{point}: no new file, the old ones untouched");
        drop(db);
        let (db, recovered) = Db::open(dir.path()).unwrap();
        assert_eq!(db.digest(), digest, "{point}");
        assert_eq!(recovered.snapshot.as_ref(), before.last().map(|(p, _)| p), "{point}");
        let written = db.snapshot(7);
        drop(db);
        let (db, recovered) = Db::open(dir.path()).unwrap();
        assert_eq!((db.digest(), recovered.snapshot), (digest, Some(written.path)), "{point}: works again");
    }
    scenario.teardown();
}

/// The directory fsync after the rename: the snapshot is complete and fsynced, so recovery may use it, but the
/// writer is told its entry may not be durable.
#[test]
fn a_failed_directory_fsync_after_a_snapshot_is_reported() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let db = db(dir.path());
    let digest = db.digest();
    fail::cfg("snapshot::sync_dir", "return(EIO)").unwrap();
    let error = snapshot::write::write_fuzzy(&db.snap_dir, &db.tree, 7).unwrap_err();
    fail::remove("snapshot::sync_dir");
    assert_io(&error, "fsync directory", "snap", libc::EIO);
    drop(db);
    assert_eq!(Db::open(dir.path()).unwrap().0.digest(), digest);
    scenario.teardown();
}

#[test]
fn a_failed_retention_deletes_nothing_recovery_needs_and_succeeds_after() {
    let scenario = FailScenario::setup();
    for (point, action) in [
        ("snapshot::delete", "return(EIO)"),
        ("snapshot::sync_dir", "return(ENOSPC)"),
        ("wal::remove", "return(EIO)"),
        ("snapshot::open", "return(EIO)"),
        ("snapshot::mmap", "return(EIO)"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let digest = db.digest();
        let newest = files(&db.snap_dir).pop().unwrap();
        fail::cfg(point, action).unwrap();
        let outcome = snapshot::retain::retain(&db.snap_dir, &db.wal, 1);
        fail::remove(point);
        match (point, outcome) {
            ("snapshot::delete", Err(e)) => assert_io(&e, "delete", "snapshot.", libc::EIO),
            ("snapshot::sync_dir", Err(e)) => assert_io(&e, "fsync directory", "snap", libc::ENOSPC),
            ("wal::remove", Err(SnapshotError::Wal(e))) => {
                assert!(e.to_string().contains("delete") && e.to_string().contains(".wal"), "{e}")
            }
            // A snapshot that cannot be read is not counted: with none, nothing is deleted.
            ("snapshot::open" | "snapshot::mmap", Ok(r)) => {
                assert!(r.deleted.is_empty() && r.wal_segments_purged == 0, "{point}: {r:?}")
            }
            (_, outcome) => panic!("{point}: {outcome:?}"),
        }
        assert!(files(&db.snap_dir).contains(&newest), "{point}: the newest snapshot stays");
        drop(db);
        let (db, _) = Db::open(dir.path()).unwrap();
        assert_eq!(db.digest(), digest, "{point}");
        let retained = snapshot::retain::retain(&db.snap_dir, &db.wal, 1).unwrap();
        assert_eq!(retained.kept, vec![newest.0], "{point}: works again");
        drop(db);
        assert_eq!(Db::open(dir.path()).unwrap().0.digest(), digest, "{point}");
    }
    scenario.teardown();
}

/// Recovery that cannot read the newest snapshot stops, naming it, rather than fall back and hide the fault.
#[test]
fn recovery_that_cannot_read_a_snapshot_fails_and_succeeds_after() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let db = db(dir.path());
    let (digest, newest) = (db.digest(), files(&db.snap_dir).pop().unwrap().0);
    drop(db);
    for (point, op) in [("snapshot::open", "open"), ("snapshot::mmap", "mmap")] {
        fail::cfg(point, "return(EIO)").unwrap();
        let error = Db::open(dir.path()).err().expect("recovery must fail");
        fail::remove(point);
        assert_io(&error, op, &newest.file_name().unwrap().to_string_lossy(), libc::EIO);
        let (db, recovered) = Db::open(dir.path()).unwrap();
        assert_eq!((db.digest(), recovered.snapshot.as_ref()), (digest, Some(&newest)), "{point}");
    }
    scenario.teardown();
}

/// A leader with a snapshot and a log, and a follower with a history of its own (its digest).
fn transfer_setup(dirs: &(tempfile::TempDir, tempfile::TempDir)) -> (Db, u64) {
    let leader = db(dirs.0.path());
    let follower = Db::create(dirs.1.path());
    workload(&follower, 1000, 40);
    (leader, follower.digest())
}

/// Receives the leader's consistent snapshot at its last zxid into the follower's transfer area.
fn receive(leader: &Db, follower: &Db, faults: &[(&str, &str)]) -> Result<Zxid, SnapshotError> {
    let at = Zxid(*leader.zxid.lock().unwrap() as u64);
    let prepared = transfer::prepare(&leader.snap_dir, &leader.wal, at).unwrap();
    for (point, action) in faults {
        fail::cfg(*point, action).unwrap();
    }
    let mut incoming = Incoming::create(&follower.snap_dir)?;
    let mut offset = 0;
    while offset < prepared.len {
        let chunk = transfer::read_chunk(&*prepared.file, offset, 1000).unwrap();
        incoming.write(offset, &chunk)?;
        offset += chunk.len() as u64;
    }
    incoming.stage(prepared.zxid)?;
    Ok(prepared.zxid)
}

#[test]
fn a_failed_transfer_leaves_the_followers_history_and_succeeds_after() {
    let scenario = FailScenario::setup();
    for (point, action, op, file) in [
        ("snapshot::transfer_sync_dir", "return(EIO)", "fsync directory", "snap"),
        ("snapshot::transfer_create", "return(EIO)", "create", "incoming.tmp"),
        ("snapshot::transfer_write", "return(ENOSPC)", "write", "incoming.tmp"),
        ("snapshot::transfer_write", "2*off->return(short)", "write", "incoming.tmp"),
        ("snapshot::transfer_fsync", "return(EIO)", "fsync", "incoming.tmp"),
        ("snapshot::transfer_stage", "return(ENOSPC)", "rename", "install."),
    ] {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (leader, follower_digest) = transfer_setup(&dirs);
        let follower = Db::open(dirs.1.path()).unwrap().0;
        let error = receive(&leader, &follower, &[(point, action)]).unwrap_err();
        fail::remove(point);
        assert_io(&error, op, file, errno(action));
        drop(follower);
        let follower = Db::open(dirs.1.path()).unwrap().0;
        assert_eq!(follower.digest(), follower_digest, "{point}: the follower's own history");
        assert!(follower.wal.holds_full_history(), "{point}");
        let zxid = receive(&leader, &follower, &[]).unwrap();
        follower.wal.restart_after(zxid).unwrap().wait().unwrap();
        transfer::install(&follower.snap_dir, zxid).unwrap();
        drop(follower);
        assert_eq!(Db::open(dirs.1.path()).unwrap().0.digest(), leader.digest(), "{point}: works again");
    }
    scenario.teardown();
}

/// The install after the log restart fails: recovery completes it once the disk is healthy, and fails (naming
/// the step) while it is not; never does it start from the follower's old state or an empty tree.
#[test]
fn a_failed_install_is_completed_by_recovery() {
    let scenario = FailScenario::setup();
    for (point, op) in [("snapshot::transfer_install", "install"), ("snapshot::transfer_sync_dir", "fsync directory")] {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (leader, _) = transfer_setup(&dirs);
        let follower = Db::open(dirs.1.path()).unwrap().0;
        let zxid = receive(&leader, &follower, &[]).unwrap();
        follower.wal.restart_after(zxid).unwrap().wait().unwrap();
        fail::cfg(point, "return(EIO)").unwrap();
        assert_io(&transfer::install(&follower.snap_dir, zxid).unwrap_err(), op, "snap", libc::EIO);
        drop(follower);
        let error = Db::open(dirs.1.path()).err().expect("recovery cannot finish the install yet");
        fail::remove(point);
        assert_io(&error, op, "snap", libc::EIO);
        assert_eq!(Db::open(dirs.1.path()).unwrap().0.digest(), leader.digest(), "{point}");
    }
    scenario.teardown();
}

/// A staged snapshot the log was not restarted for is deleted by recovery; if that fails, recovery fails.
#[test]
fn a_failed_cleanup_of_a_transfer_fails_recovery_and_keeps_the_old_state() {
    let scenario = FailScenario::setup();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, follower_digest) = transfer_setup(&dirs);
    let follower = Db::open(dirs.1.path()).unwrap().0;
    receive(&leader, &follower, &[]).unwrap();
    drop(follower); // a crash before the log restart
    fail::cfg("snapshot::transfer_delete", "return(EIO)").unwrap();
    let error = Db::open(dirs.1.path()).err().expect("recovery cannot clean up");
    fail::remove("snapshot::transfer_delete");
    assert_io(&error, "delete", "install.", libc::EIO);
    let follower = Db::open(dirs.1.path()).unwrap().0;
    assert_eq!(follower.digest(), follower_digest);
    scenario.teardown();
}

/// Recovery lists the snapshot directory and deletes what an interrupted write left: when either fails it stops,
/// naming the directory or the file, and starts from the same state once the disk is healthy.
#[test]
fn a_failed_listing_or_cleanup_fails_recovery_and_succeeds_after() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let db = db(dir.path());
    let (digest, snap_dir) = (db.digest(), db.snap_dir.clone());
    drop(db);
    let partial = snap_dir.join("snapshot.1c8.tmp");
    for (point, op, file) in [
        ("snapshot::list", "list", "snap"),
        ("snapshot::remove_partial", "delete", "snapshot.1c8.tmp"),
        ("snapshot::transfer_list", "list", "snap"),
    ] {
        std::fs::write(&partial, b"a snapshot write a crash interrupted").unwrap();
        fail::cfg(point, "return(EIO)").unwrap();
        let error = Db::open(dir.path()).err().expect("recovery must fail");
        fail::remove(point);
        assert_io(&error, op, file, libc::EIO);
        let (db, _) = Db::open(dir.path()).unwrap();
        assert_eq!(db.digest(), digest, "{point}");
        assert!(!partial.exists(), "{point}: the partial write is deleted once the disk is healthy");
    }
    scenario.teardown();
}

/// The leader's preparation of a snapshot to ship (a private copy of the tree written to the transfer area):
/// a failure at any step is reported naming the step and file, leaves no copy behind (or one that recovery
/// deletes, when deleting it is what failed), and the next preparation works.
#[test]
fn a_failed_preparation_leaves_nothing_behind_and_succeeds_after() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let leader = db(dir.path());
    let at = Zxid(*leader.zxid.lock().unwrap() as u64);
    let transfer_area = || -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(leader.snap_dir.join("transfer")) else { return Vec::new() };
        entries.map(|e| e.unwrap().path()).collect()
    };
    for (point, action, op, file) in [
        ("snapshot::prepare_create", "return(EIO)", "create directory", "outgoing-"),
        ("snapshot::write", "return(ENOSPC)", "write", "outgoing-"),
        ("snapshot::write", "2*off->return(short)", "write", "outgoing-"),
        ("snapshot::fsync", "return(EIO)", "fsync", "outgoing-"),
        ("snapshot::prepare_open", "return(EIO)", "open", "outgoing-"),
    ] {
        fail::cfg(point, action).unwrap();
        let error = transfer::prepare(&leader.snap_dir, &leader.wal, at).unwrap_err();
        fail::remove(point);
        assert_io(&error, op, file, errno(action));
        assert_eq!(transfer_area(), Vec::<PathBuf>::new(), "{point}: a copy left behind");
        let prepared = transfer::prepare(&leader.snap_dir, &leader.wal, at).unwrap();
        assert_eq!(prepared.zxid, at, "{point}: works again");
    }
    // Deleting the copy's directory entry fails: the error says so, and recovery deletes the leftover.
    fail::cfg("snapshot::prepare_clear", "return(EIO)").unwrap();
    let error = transfer::prepare(&leader.snap_dir, &leader.wal, at).unwrap_err();
    fail::remove("snapshot::prepare_clear");
    assert_io(&error, "clear", "outgoing-", libc::EIO);
    assert_eq!(transfer_area().len(), 1, "the copy whose deletion failed");
    let digest = leader.digest();
    drop(leader);
    let (leader, _) = Db::open(dir.path()).unwrap();
    assert_eq!(leader.digest(), digest);
    assert_eq!(transfer_area_of(&leader), Vec::<PathBuf>::new(), "recovery deletes the leftover");
    scenario.teardown();
}

fn transfer_area_of(db: &Db) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(db.snap_dir.join("transfer")) else { return Vec::new() };
    entries.map(|e| e.unwrap().path()).collect()
}
