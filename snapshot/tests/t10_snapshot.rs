//! Snapshots: round trip, fuzzy writing during writes, fallback past a corrupt snapshot, bad files, retention.

mod common;

use std::sync::Arc;

use common::*;
use snapshot::SnapshotError;
use tree::tree::same_contents;

#[test]
fn a_snapshot_round_trips_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path());
    workload(&db, 0, 300);
    db.write(0, &tree::prep::Request::SetAcl { path: "/d1".into(), acl: tree::acl::read_acl_unsafe(), version: -1 });
    // Data on both sides of the size a snapshot copies rather than shares (`COPIED_DATA_MAX`, 1 KiB).
    for (path, len) in [("/at_max", 1024), ("/past_max", 1025), ("/large", 6000)] {
        db.write(0, &create(path, "x".repeat(len).as_str(), 0));
    }
    let info = db.snapshot(7);
    let loaded = snapshot::read::load(&info.path).unwrap();
    let live = db.tree.read().unwrap();
    // Null and empty data are both in the tree, and `same_contents` tells them apart (their digests do not).
    assert!(live.nodes_after(None).any(|(_, n)| n.data.is_none()));
    assert!(live.nodes_after(None).any(|(p, n)| p.starts_with("/d") && n.data.as_ref().is_some_and(|d| d.is_empty())));
    assert_eq!((loaded.start_zxid, loaded.trailer.end_zxid), (live.last_zxid(), live.last_zxid()));
    assert_eq!(loaded.trailer.digest, live.digest());
    assert_eq!(loaded.tree.digest(), live.digest());
    assert!(same_contents(&loaded.tree, &live));
    assert_eq!(loaded.tree.get("/large").map(|n| n.bytes().len()), Some(6000));
    loaded.tree.validate().unwrap();
}

#[test]
fn a_snapshot_taken_while_writes_go_on_recovers_to_the_live_tree() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::create(dir.path()));
    workload(&db, 0, 400);
    // The writer goes on until a snapshot was fuzzy (a write landed between its chunks) and one more was taken
    // after it, however the two threads are scheduled: a fixed count of writes may all land between snapshots on a
    // busy machine.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut from = 400;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                workload(&db, from, 50);
                from += 50;
            }
        })
    };
    // Small chunks, many of them, so that writes land between them.
    let (mut infos, deadline) = (Vec::new(), std::time::Instant::now() + std::time::Duration::from_secs(60));
    while !infos.iter().any(|i: &snapshot::write::SnapshotInfo| i.end_zxid > i.start_zxid) {
        assert!(std::time::Instant::now() < deadline, "no snapshot was fuzzy in 60 s of writes");
        infos.push(db.snapshot(2));
    }
    infos.push(db.snapshot(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let live_digest = db.digest();
    let live = db.tree.read().unwrap().clone();
    drop(Arc::try_unwrap(db).ok().expect("sole owner"));
    let (db, recovered) = Db::open(dir.path()).unwrap();
    assert_eq!(recovered.snapshot.as_ref(), Some(&infos.last().unwrap().path));
    assert_eq!(db.digest(), live_digest);
    assert!(same_contents(&db.tree.read().unwrap(), &live));
}

#[test]
fn a_corrupt_newest_snapshot_falls_back_to_the_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path());
    workload(&db, 0, 200);
    let older = db.snapshot(16);
    workload(&db, 200, 200);
    let newest = db.snapshot(16);
    workload(&db, 400, 50);
    let live = db.tree.read().unwrap().clone();
    drop(db);
    let mut bytes = std::fs::read(&newest.path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&newest.path, &bytes).unwrap();
    let (db, recovered) = Db::open(dir.path()).unwrap();
    assert_eq!(recovered.snapshot, Some(older.path));
    assert_eq!(recovered.skipped.len(), 1);
    assert!(recovered.skipped[0].contains("checksum"), "{:?}", recovered.skipped);
    assert!(same_contents(&db.tree.read().unwrap(), &live));
    assert!(newest.path.exists(), "nothing is deleted");
}

#[test]
fn a_version_1_snapshot_still_loads() {
    // Version 1 is version 2 without null data: a tree without null data, labelled 1, must load the same.
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path());
    db.write(0, &create("/a", "x", 0));
    db.write(0, &create("/b", "", 0));
    let info = db.snapshot(16);
    let mut bytes = std::fs::read(&info.path).unwrap();
    bytes[8..12].copy_from_slice(&1u32.to_be_bytes());
    let crc_at = bytes.len() - 8;
    let crc = crc32c::crc32c(&bytes[..crc_at]);
    bytes[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&info.path, &bytes).unwrap();
    let loaded = snapshot::read::load(&info.path).unwrap();
    assert!(same_contents(&loaded.tree, &db.tree.read().unwrap()));
}

#[test]
fn bad_files_get_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path());
    workload(&db, 0, 50);
    let info = db.snapshot(16);
    let good = std::fs::read(&info.path).unwrap();
    let load = |bytes: &[u8]| {
        std::fs::write(&info.path, bytes).unwrap();
        snapshot::read::load(&info.path)
    };
    for cut in [0, 5, 20, good.len() / 2, good.len() - 1] {
        assert!(
            matches!(load(&good[..cut]), Err(SnapshotError::Corrupt { .. } | SnapshotError::BadMagic { .. })),
            "cut {cut}"
        );
    }
    for byte in (0..good.len()).step_by(good.len() / 97 + 1).filter(|&b| !(8..12).contains(&b)) {
        let mut bad = good.clone();
        bad[byte] ^= 0x01;
        let result = load(&bad);
        assert!(
            matches!(result, Err(SnapshotError::Corrupt { .. } | SnapshotError::BadMagic { .. })),
            "flip at {byte}: {result:?}"
        );
    }
    let mut future = good.clone();
    future[11] = 9;
    assert!(matches!(load(&future), Err(SnapshotError::UnsupportedVersion { version: 9, .. })));
    assert!(matches!(load(b"PK\x03\x04 definitely not a snapshot"), Err(SnapshotError::BadMagic { .. })));
}

#[test]
fn a_snapshot_ahead_of_the_wal_is_refused_and_nothing_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path());
    workload(&db, 0, 100);
    let info = db.snapshot(16);
    // The WAL loses its tail (say, a disk restored from an older backup).
    db.wal.truncate_after(wal::Zxid(info.end_zxid as u64 - 10)).unwrap().wait().unwrap();
    drop(db);
    match Db::open(dir.path()) {
        Err(SnapshotError::AheadOfWal { end_zxid, .. }) => assert_eq!(end_zxid, info.end_zxid),
        other => panic!("expected AheadOfWal, got {:?}", other.map(|_| ())),
    }
    assert!(info.path.exists());
}

#[test]
fn a_purged_wal_without_a_trusted_snapshot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path());
    workload(&db, 0, 300);
    let info = db.snapshot(16);
    workload(&db, 300, 100);
    let retained = snapshot::retain::retain(&db.snap_dir, &db.wal, 1).unwrap();
    assert!(retained.wal_segments_purged > 0, "tiny segments: something to purge");
    drop(db);
    std::fs::write(&info.path, b"ENSNAP\r\n\0\0\0\x01 and then garbage").unwrap();
    match Db::open(dir.path()) {
        Err(SnapshotError::NoTrustedSnapshot { rejected, .. }) => assert!(rejected.contains("corrupt"), "{rejected}"),
        other => panic!("expected NoTrustedSnapshot, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_wal_that_holds_the_whole_history_recovers_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path());
    workload(&db, 0, 300);
    let live = db.tree.read().unwrap().clone();
    drop(db);
    let (db, recovered) = Db::open(dir.path()).unwrap();
    assert_eq!(recovered.snapshot, None);
    assert!(same_contents(&db.tree.read().unwrap(), &live));
}

#[test]
fn retention_keeps_the_newest_valid_snapshots_and_the_wal_they_need() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path());
    let mut infos = Vec::new();
    for round in 0..5 {
        workload(&db, round * 100, 100);
        infos.push(db.snapshot(16));
    }
    // The two newest are corrupt: they must not count. One is garbage; the other has one flipped bit in the
    // middle, which only the checksum over the whole file can see.
    std::fs::write(&infos[3].path, b"ENSNAP\r\n\0\0\0\x01 garbage").unwrap();
    let mut bytes = std::fs::read(&infos[4].path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&infos[4].path, &bytes).unwrap();
    let retained = snapshot::retain::retain(&db.snap_dir, &db.wal, 2).unwrap();
    assert_eq!(retained.kept, vec![infos[2].path.clone(), infos[1].path.clone()]);
    assert_eq!(retained.deleted, vec![infos[0].path.clone()]);
    assert!(
        db.wal.first_zxid().unwrap().0 as i64 <= infos[1].start_zxid,
        "the WAL after the oldest kept snapshot stays"
    );
    let live = db.tree.read().unwrap().clone();
    drop(db);
    let (db, recovered) = Db::open(dir.path()).unwrap();
    assert_eq!(recovered.snapshot, Some(infos[2].path.clone()));
    assert!(same_contents(&db.tree.read().unwrap(), &live));
}

#[test]
fn a_snapshot_whose_content_disagrees_with_its_digest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path());
    workload(&db, 0, 100);
    db.write(0, &create("/marker", "abcdef", 0));
    let info = db.snapshot(16);
    drop(db);
    // Change a node's data and re-seal the file: the checksum passes, the digest cannot.
    let mut bytes = std::fs::read(&info.path).unwrap();
    let at = bytes.windows(6).position(|w| w == b"abcdef").unwrap();
    bytes[at] = b'X';
    let len = bytes.len();
    let crc = crc32c::crc32c(&bytes[..len - 8]);
    bytes[len - 8..len - 4].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&info.path, &bytes).unwrap();
    assert!(snapshot::read::load(&info.path).is_ok(), "the file itself verifies");
    match Db::open(dir.path()) {
        Err(SnapshotError::DigestMismatch { zxid, .. }) => assert_eq!(zxid, info.end_zxid),
        other => panic!("expected a digest mismatch, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_wal_record_that_is_not_a_txn_stops_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path());
    workload(&db, 0, 20);
    let next = db.wal.last_zxid().unwrap().0 + 1;
    db.wal.append(wal::Zxid(next), vec![1, 2, 3]).unwrap().wait().unwrap();
    drop(db);
    match Db::open(dir.path()) {
        Err(SnapshotError::BadTxn { zxid, .. }) => assert_eq!(zxid as u64, next),
        other => panic!("expected BadTxn, got {:?}", other.map(|_| ())),
    }
}

/// What a follower does after a TRUNC while its log may already hold the leader's txns past the cut: rebuild
/// from the snapshot and the log up to the cut only. The result is the tree as it stood at the cut.
#[test]
fn recovery_can_stop_at_a_zxid() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path());
    workload(&db, 0, 50);
    db.snapshot(16);
    workload(&db, 50, 30);
    let (at_cut, cut) = {
        let tree = db.tree.read().unwrap();
        (tree.clone(), tree.last_zxid())
    };
    workload(&db, 80, 40);
    let (tree, recovered) =
        snapshot::recover::recover_until(&db.snap_dir, &db.wal, Some(wal::Zxid(cut as u64))).unwrap();
    assert_eq!(recovered.last_zxid, cut);
    assert!(same_contents(&tree, &at_cut), "the txns after the cut are not applied");
    assert_eq!(tree.digest(), at_cut.digest());
    let (full, _) = snapshot::recover::recover(&db.snap_dir, &db.wal).unwrap();
    assert!(full.last_zxid() > cut, "without a limit, everything is replayed");
}

/// A close proposed without its list (a session with too many ephemerals to name in one txn) deletes what the
/// tree indexes for the session: replayed over a fuzzy snapshot that copied some parents before the close and
/// their children after it, it could not move those parents' pzxid. So a snapshot spanning one is not kept.
#[test]
fn a_snapshot_spanning_a_close_that_names_no_ephemerals_is_abandoned() {
    use tree::code::op;
    use tree::txn::{Txn, TxnHeader};
    let dir = tempfile::tempdir().unwrap();
    let session = 0x100;
    let mut live = tree::tree::DataTree::new();
    let mut zxid = 1i64 << 32;
    let mut apply = |tree: &mut tree::tree::DataTree, client_id: i64, op: i32, txn: Txn| {
        zxid += 1;
        tree.apply(&TxnHeader { client_id, cxid: 0, zxid, time: zxid, op }, &txn);
        zxid
    };
    apply(&mut live, session, op::CREATE_SESSION, Txn::CreateSession { timeout: 10_000 });
    let node = |path: String, ephemeral: bool| Txn::Create {
        path,
        data: Some(bytes::Bytes::new()),
        acl: tree::acl::open_acl_unsafe(),
        ephemeral,
        parent_cversion: -1,
    };
    apply(&mut live, 0, op::CREATE, node("/p".into(), false));
    for i in 0..100_000 {
        apply(&mut live, session, op::CREATE, node(format!("/p/e{i:06}"), true));
    }
    let tree = Arc::new(snapshot::write::SharedTree::new(live));
    let writer = {
        let (tree, dir) = (tree.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || snapshot::write::write_fuzzy(&dir, &tree, 1))
    };
    // Once the snapshot has begun (its file exists), the close applies between two of its chunks.
    let started = std::time::Instant::now();
    while !std::fs::read_dir(dir.path()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp")) {
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "the snapshot never began");
        std::thread::yield_now();
    }
    let close = apply(&mut tree.write().unwrap(), session, op::CLOSE_SESSION, Txn::CloseSession { paths: Vec::new() });
    match writer.join().unwrap() {
        Err(SnapshotError::Unreplayable { zxid, .. }) => assert_eq!(zxid, close),
        other => panic!("a snapshot spanning an unlisted close must be abandoned, got {other:?}"),
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "neither the snapshot nor its temporary file stays: {left:?}");
    let after = snapshot::write::write_fuzzy(dir.path(), &tree, 1024).expect("the next snapshot is kept");
    assert_eq!(after.start_zxid, close);
}

#[test]
fn retention_reads_each_snapshot_once_per_process_and_a_new_process_reads_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path());
    let mut infos = Vec::new();
    for round in 0..2 {
        workload(&db, round * 100, 100);
        infos.push(db.snapshot(16));
    }
    let mut retention = snapshot::retain::Retention::new(2);
    let first = retention.run(&db.snap_dir, &db.wal).unwrap();
    assert_eq!(first.kept, vec![infos[1].path.clone(), infos[0].path.clone()]);
    // One bit flipped in a snapshot this process verified already (same length): not read again, still kept.
    let mut bytes = std::fs::read(&infos[0].path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&infos[0].path, &bytes).unwrap();
    let again = retention.run(&db.snap_dir, &db.wal).unwrap();
    assert_eq!(again.kept, first.kept);
    // A new snapshot is read (and verifies); a process that starts afresh reads every one and sees the flip.
    workload(&db, 200, 100);
    infos.push(db.snapshot(16));
    let third = retention.run(&db.snap_dir, &db.wal).unwrap();
    assert_eq!(third.kept, vec![infos[2].path.clone(), infos[1].path.clone()]);
    assert_eq!(third.deleted, vec![infos[0].path.clone()]);
    std::fs::write(&infos[1].path, b"ENSNAP\r\n\0\0\0\x01 garbage").unwrap();
    let fresh = snapshot::retain::Retention::new(2).run(&db.snap_dir, &db.wal).unwrap();
    assert_eq!(fresh.kept, vec![infos[2].path.clone()], "the damaged snapshot no longer counts");
    assert!(fresh.deleted.is_empty(), "with fewer than two valid snapshots, nothing is deleted");
}

#[test]
fn retention_does_not_read_back_a_snapshot_its_process_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(dir.path());
    workload(&db, 0, 100);
    let info = db.snapshot(16);
    let mut retention = snapshot::retain::Retention::new(1);
    retention.written(&info);
    // Damaged after the write (same length): the writer's own checksum stands, so it is not read.
    let mut bytes = std::fs::read(&info.path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&info.path, &bytes).unwrap();
    assert_eq!(retention.run(&db.snap_dir, &db.wal).unwrap().kept, vec![info.path.clone()]);
    assert!(snapshot::retain::Retention::new(1).run(&db.snap_dir, &db.wal).unwrap().kept.is_empty());
}
