//! SNAP sync's disk side: a leader prepares a consistent snapshot, a follower receives, stages and installs it,
//! and a crash at any step leaves the follower either with its old state or with the leader's.

mod common;

use std::path::Path;

use common::*;
use snapshot::transfer::{self, Incoming};
use snapshot::SnapshotError;
use wal::Zxid;

/// A leader whose oldest txns exist only in snapshots (its log was purged), and a follower far behind it whose
/// log ends in txns the leader never had.
struct Setup {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    leader: Db,
    follower_dir: std::path::PathBuf,
    follower_digest: u64,
}

fn setup() -> Setup {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = Db::create(ld.path());
    workload(&leader, 0, 200);
    leader.snapshot(7);
    workload(&leader, 200, 100);
    leader.snapshot(7);
    let retained = snapshot::retain::retain(&leader.snap_dir, &leader.wal, 1).unwrap();
    assert!(retained.wal_segments_purged > 0, "the leader's log must be purged for this test");
    workload(&leader, 300, 50);
    let follower_digest = {
        let follower = Db::create(fd.path());
        workload(&follower, 1000, 40); // a history of its own
        follower.digest()
    };
    Setup { follower_dir: fd.path().to_path_buf(), _dirs: (ld, fd), leader, follower_digest }
}

fn committed(db: &Db) -> Zxid {
    Zxid(*db.zxid.lock().unwrap() as u64)
}

/// Ships the leader's consistent snapshot to the follower's transfer area, in small chunks.
fn receive(leader: &Db, follower: &Db) -> Zxid {
    let prepared = transfer::prepare(&leader.snap_dir, &leader.wal, committed(leader)).unwrap();
    let mut incoming = Incoming::create(&follower.snap_dir).unwrap();
    let mut offset = 0;
    while offset < prepared.len {
        let chunk = transfer::read_chunk(&*prepared.file, offset, 1000).unwrap();
        incoming.write(offset, &chunk).unwrap();
        offset += chunk.len() as u64;
    }
    incoming.stage(prepared.zxid).unwrap();
    prepared.zxid
}

fn reopen(dir: &Path) -> Db {
    Db::open(dir).unwrap().0
}

#[test]
fn an_installed_snapshot_gives_the_follower_the_leaders_tree_and_its_log_continues_after_it() {
    let s = setup();
    let follower = reopen(&s.follower_dir);
    let zxid = receive(&s.leader, &follower);
    follower.wal.restart_after(zxid).unwrap().wait().unwrap();
    transfer::install(&follower.snap_dir, zxid).unwrap();
    drop(follower);
    let follower = reopen(&s.follower_dir);
    assert_eq!(follower.digest(), s.leader.digest(), "the follower's tree is the leader's");
    assert_eq!(follower.wal.end(), zxid);

    // Txns after the snapshot, logged by the follower as the leader sends them, recover on top of it.
    workload(&s.leader, 350, 30);
    for record in s.leader.wal.iter_from(Zxid(zxid.0 + 1)) {
        let record = record.unwrap();
        follower.wal.append(record.zxid, record.payload).unwrap().wait().unwrap();
    }
    drop(follower);
    let follower = reopen(&s.follower_dir);
    assert_eq!(follower.digest(), s.leader.digest());
}

#[test]
fn a_crash_before_the_log_restart_keeps_the_old_state_and_drops_the_staged_snapshot() {
    let s = setup();
    let follower = reopen(&s.follower_dir);
    receive(&s.leader, &follower);
    drop(follower); // the crash
    let follower = reopen(&s.follower_dir);
    assert_eq!(follower.digest(), s.follower_digest, "the old state must be intact");
    assert!(follower.wal.holds_full_history());
    let left: Vec<_> = std::fs::read_dir(follower.snap_dir.join("transfer")).unwrap().collect();
    assert!(left.is_empty(), "the staged snapshot must go: {left:?}");
}

#[test]
fn a_crash_between_the_log_restart_and_the_install_completes_the_install() {
    let s = setup();
    let follower = reopen(&s.follower_dir);
    let zxid = receive(&s.leader, &follower);
    follower.wal.restart_after(zxid).unwrap().wait().unwrap();
    drop(follower); // the crash: the old log is gone, the snapshot is staged only
    let follower = reopen(&s.follower_dir);
    assert_eq!(follower.digest(), s.leader.digest(), "recovery must finish the install");
    assert_eq!(follower.wal.end(), zxid);
}

#[test]
fn a_damaged_or_mislabelled_snapshot_is_refused_before_anything_changes() {
    let s = setup();
    let follower = reopen(&s.follower_dir);
    let prepared = transfer::prepare(&s.leader.snap_dir, &s.leader.wal, committed(&s.leader)).unwrap();
    let mut bytes = transfer::read_chunk(&*prepared.file, 0, prepared.len as usize).unwrap();
    assert_eq!(bytes.len() as u64, prepared.len);

    let mut wrong = Incoming::create(&follower.snap_dir).unwrap();
    wrong.write(0, &bytes).unwrap();
    let err = wrong.stage(Zxid(prepared.zxid.0 - 1)).unwrap_err();
    assert!(matches!(err, SnapshotError::Transfer(_)), "{err}");

    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    let mut damaged = Incoming::create(&follower.snap_dir).unwrap();
    damaged.write(0, &bytes).unwrap();
    let err = damaged.stage(prepared.zxid).unwrap_err();
    assert!(matches!(err, SnapshotError::Corrupt { .. }), "{err}");

    let mut gap = Incoming::create(&follower.snap_dir).unwrap();
    assert!(matches!(gap.write(10, &bytes[10..20]), Err(SnapshotError::Transfer(_))));
    drop(follower);
    assert_eq!(reopen(&s.follower_dir).digest(), s.follower_digest);
}

#[test]
fn a_leader_cannot_prepare_beyond_what_its_log_holds() {
    let s = setup();
    let beyond = Zxid(committed(&s.leader).0 + 5);
    assert!(transfer::prepare(&s.leader.snap_dir, &s.leader.wal, beyond).is_err());
}

#[test]
fn two_followers_can_be_sent_snapshots_at_once() {
    let s = setup();
    let at = committed(&s.leader);
    let lens: Vec<u64> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| transfer::prepare(&s.leader.snap_dir, &s.leader.wal, at).unwrap().len))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(lens[0], lens[1], "the same history makes the same snapshot");
}

/// The stats of a quota come out of a SNAP transfer (prepared by the leader from its snapshot and log, loaded
/// and recounted by the follower) and out of the follower's recovery after it as the leader has them.
#[test]
fn quota_stats_survive_a_snap_transfer() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = Db::create(ld.path());
    for p in ["/d1", "/zookeeper/quota/d1"] {
        leader.write(0, &create(p, "", 0));
    }
    leader.write(0, &create("/zookeeper/quota/d1/zookeeper_limits", "count=-1,bytes=-1=;countHardLimit=99", 0));
    leader.write(0, &create("/zookeeper/quota/d1/zookeeper_stats", "count=0,bytes=0", 0));
    workload(&leader, 0, 200);
    leader.snapshot(7);
    workload(&leader, 200, 100);
    leader.snapshot(7);
    let retained = snapshot::retain::retain(&leader.snap_dir, &leader.wal, 1).unwrap();
    assert!(retained.wal_segments_purged > 0, "the leader's log must be purged for this test");
    workload(&leader, 300, 50);
    let stats = |db: &Db| {
        let tree = db.tree.read().unwrap();
        let data = tree.get("/zookeeper/quota/d1/zookeeper_stats").expect("the stats node").bytes().to_vec();
        (String::from_utf8(data).unwrap(), tree.quota_usage("/d1"))
    };
    let (text, (count, bytes)) = stats(&leader);
    assert!(count > 1, "the workload wrote under /d1");
    assert_eq!(text, format!("count={count},bytes={bytes}"));

    let follower = Db::create(fd.path());
    let zxid = receive(&leader, &follower);
    follower.wal.restart_after(zxid).unwrap().wait().unwrap();
    transfer::install(&follower.snap_dir, zxid).unwrap();
    drop(follower);
    let follower = reopen(fd.path());
    assert_eq!(stats(&follower), stats(&leader));
    workload(&leader, 350, 40);
    for record in leader.wal.iter_from(Zxid(zxid.0 + 1)) {
        let record = record.unwrap();
        follower.wal.append(record.zxid, record.payload).unwrap().wait().unwrap();
    }
    drop(follower);
    let follower = reopen(fd.path());
    assert_eq!(stats(&follower), stats(&leader));
    assert!(tree::tree::same_contents(&follower.tree.read().unwrap(), &leader.tree.read().unwrap()));
}
