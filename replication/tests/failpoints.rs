//! Injected IO failures (the `failpoints` feature) in the epochs file and the repair mark: each step that fails
//! fails with an error naming the step and the file, leaves the previous file readable (never a torn one), and
//! the same write succeeds once the disk is healthy; the runtime takes a failed epochs write as this server's
//! fault and stops.
//!
//! Run with `cargo test -p replication --features failpoints --test failpoints`. Failpoints are process-global,
//! so every test holds a `FailScenario`, which serialises them.

mod scripted;

use std::path::Path;

use bytes::Bytes;
use fail::FailScenario;
use replication::message::Message;
use replication::repairing::{self, RepairingError};
use replication::{read_epochs, write_epochs, EpochsError};
use scripted::*;
use wal::{Epoch, Zxid};

/// The errno each action injects: a short write fails with ENOSPC.
fn errno(action: &str) -> i32 {
    if action.contains("EIO") {
        libc::EIO
    } else {
        libc::ENOSPC
    }
}

const WRITE_STEPS: [(&str, &str); 6] = [
    ("create", "return(EIO)"),
    ("write", "return(ENOSPC)"),
    ("write", "return(short)"),
    ("fsync", "return(EIO)"),
    ("rename", "return(ENOSPC)"),
    ("sync_dir", "return(EIO)"),
];

#[track_caller]
fn assert_epochs_error(error: &EpochsError, op: &str, file: &str, errno: i32) {
    assert_eq!((error.op, error.source.raw_os_error()), (op, Some(errno)), "{error}");
    assert!(error.path.ends_with(file), "{error}");
}

#[test]
fn a_failed_epochs_write_leaves_the_old_epochs_and_succeeds_after() {
    let scenario = FailScenario::setup();
    for (step, action) in WRITE_STEPS {
        let dir = tempfile::tempdir().unwrap();
        write_epochs(dir.path(), Epoch(5), Epoch(4)).unwrap();
        let point = format!("replication::epochs_{step}");
        fail::cfg(&point, action).unwrap();
        let error = write_epochs(dir.path(), Epoch(7), Epoch(6)).unwrap_err();
        fail::remove(&point);
        let (op, file, left) = match step {
            "rename" => ("rename", "epochs", (Epoch(5), Epoch(4))),
            // Renamed: the new file is whole and fsynced, but its entry may not be durable.
            "sync_dir" => ("fsync directory", "", (Epoch(7), Epoch(6))),
            _ => (step, "epochs.tmp", (Epoch(5), Epoch(4))),
        };
        let file = if file.is_empty() { dir.path().to_path_buf() } else { dir.path().join(file) };
        assert_epochs_error(&error, op, &file.to_string_lossy(), errno(action));
        assert_eq!(read_epochs(dir.path()).unwrap(), left, "{point}: a whole file, never a torn one");
        write_epochs(dir.path(), Epoch(7), Epoch(6)).unwrap();
        assert_eq!(read_epochs(dir.path()).unwrap(), (Epoch(7), Epoch(6)), "{point}: works again");
    }
    scenario.teardown();
}

#[test]
fn an_unreadable_epochs_file_is_an_error_naming_it() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    write_epochs(dir.path(), Epoch(3), Epoch(3)).unwrap();
    fail::cfg("replication::epochs_read", "return(EIO)").unwrap();
    let error = read_epochs(dir.path()).unwrap_err();
    fail::remove("replication::epochs_read");
    assert_epochs_error(&error, "read", &dir.path().join("epochs").to_string_lossy(), libc::EIO);
    assert_eq!(read_epochs(dir.path()).unwrap(), (Epoch(3), Epoch(3)));
    scenario.teardown();
}

#[track_caller]
fn assert_repairing_error(error: &RepairingError, op: &str, file: &Path, errno: i32) {
    match error {
        RepairingError::Io { op: got, path, source } => {
            assert_eq!((*got, source.raw_os_error()), (op, Some(errno)), "{error}");
            assert_eq!(path, file, "{error}");
        }
        other => panic!("expected an IO error of {op}, got {other}"),
    }
}

#[test]
fn a_failed_repair_mark_leaves_the_old_mark_and_succeeds_after() {
    let scenario = FailScenario::setup();
    for (step, action) in WRITE_STEPS {
        let dir = tempfile::tempdir().unwrap();
        repairing::mark(dir.path(), Zxid(5)).unwrap();
        let point = format!("replication::repairing_{step}");
        fail::cfg(&point, action).unwrap();
        let error = repairing::mark(dir.path(), Zxid(9)).unwrap_err();
        fail::remove(&point);
        let (op, file, left) = match step {
            "sync_dir" => ("fsync", dir.path().to_path_buf(), Zxid(9)),
            _ => (step, dir.path().join("repairing.tmp"), Zxid(5)),
        };
        assert_repairing_error(&error, op, &file, errno(action));
        assert_eq!(repairing::read(dir.path()).unwrap(), Some(left), "{point}: a whole mark, never a torn one");
        assert_eq!(repairing::mark(dir.path(), Zxid(9)).unwrap(), Zxid(9), "{point}: works again");
    }
    scenario.teardown();
}

#[test]
fn a_failed_clear_or_read_of_the_repair_mark_is_an_error_naming_it() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("repairing");
    // What is left after the failure: a failed read or remove keeps the mark; a failed fsync after the remove
    // cannot bring it back.
    for (point, op, file, left) in [
        ("replication::repairing_read", "read", mark.clone(), Some(Zxid(5))),
        ("replication::repairing_remove", "remove", mark.clone(), Some(Zxid(5))),
        ("replication::repairing_sync_dir", "fsync", dir.path().to_path_buf(), None),
    ] {
        repairing::mark(dir.path(), Zxid(5)).unwrap();
        fail::cfg(point, "return(EIO)").unwrap();
        let error = if op == "read" {
            repairing::read(dir.path()).unwrap_err()
        } else {
            repairing::clear(dir.path()).unwrap_err()
        };
        fail::remove(point);
        assert_repairing_error(&error, op, &file, libc::EIO);
        assert_eq!(repairing::read(dir.path()).unwrap(), left, "{point}");
        repairing::clear(dir.path()).unwrap();
        assert_eq!(repairing::read(dir.path()).unwrap(), None, "{point}: works again");
    }
    scenario.teardown();
}

/// Waits until the stopped runtime has let go of its WAL (its tasks wind down after the streams end).
async fn released(log: &Path) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Err(wal::WalError::Locked { .. }) =
        wal::Wal::open(log, wal::WalOptions { segment_size: 4 << 20, ..Default::default() })
    {
        assert!(tokio::time::Instant::now() < deadline, "the stopped runtime holds its WAL");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The epochs writer thread's failure is this server's fault: the runtime stops (a peer's fault would only drop
/// that link), the epochs on disk are the old ones, and once the disk is healthy the server follows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_epochs_write_stops_the_runtime_and_a_restart_follows_after() {
    let scenario = FailScenario::setup();
    for (point, action) in
        [("replication::epochs_fsync", "return(EIO)"), ("replication::epochs_write", "return(short)")]
    {
        let dir = tempfile::tempdir().unwrap();
        fail::cfg(point, action).unwrap();
        let (handle, mut streams, addr) = server(dir.path()).await;
        let _leader = Leader::elected(addr).await;
        stopped(&mut streams).await;
        fail::remove(point);
        assert_eq!(read_epochs(&dir.path().join("1")).unwrap(), (Epoch(0), Epoch(0)), "{point}: the old epochs");
        drop((handle, streams));
        released(&dir.path().join("1").join("log")).await;
        let (_handle, _streams, addr) = server(dir.path()).await;
        Leader::acked_epoch(addr).await;
        assert_eq!(read_epochs(&dir.path().join("1")).unwrap().0, Epoch(1), "{point}: the accepted epoch now");
    }
    scenario.teardown();
}

/// A follower's own fdatasync failing is this server's fault whichever thread runs it (a lone proposal on a
/// quiet loop is written and fsynced on the loop's own thread, `quiet_appends_here`): the proposal is never
/// acknowledged, and the runtime stops. The WAL's batch observer shows that the loop took that path (a build
/// without it fails here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fdatasync_of_a_lone_proposal_is_never_acked_and_stops_the_runtime() {
    let scenario = FailScenario::setup();
    lone_proposal_fails("return(EIO)").await;
    scenario.teardown();
}

/// The same when the fdatasync panics (a bug, not a disk fault) on the loop's thread: the panic ends the loop's
/// task, which stops the runtime (its streams end, which the node's supervisor takes for a stop), with nothing
/// acked, and the log keeps every acknowledged proposal. (That the WAL fails instead of staying claimed is
/// `wal/tests/failpoints.rs`'s to show: the loop does not append again once its task has gone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_lone_proposals_fdatasync_is_never_acked_and_stops_the_runtime() {
    let scenario = FailScenario::setup();
    lone_proposal_fails("panic").await;
    scenario.teardown();
}

/// Which thread made each of a WAL's batches durable (the quiet path is the loop's, a tokio worker; the WAL's
/// own is `wal-writer`), with the batch's record count.
type Writers = std::sync::Arc<std::sync::Mutex<Vec<(usize, Option<String>)>>>;

/// A follower and the test's leader, after lone proposals 1..=`counter` of which the last was made durable on the
/// follower's loop's thread (the quiet path).
struct QuietFollower {
    _handle: replication::runtime::Handle,
    streams: replication::runtime::Streams,
    leader: Leader,
    counter: u32,
    writers: Writers,
}

impl QuietFollower {
    /// Sends lone proposals to a follower until one takes the quiet path.
    async fn start(dir: &Path) -> QuietFollower {
        let writers = Writers::default();
        let seen = writers.clone();
        let observer = wal::BatchObserver(std::sync::Arc::new(move |records, _| {
            seen.lock().unwrap().push((records, std::thread::current().name().map(str::to_owned)));
        }));
        // No idle spin: the WAL's writer thread sleeps between batches, so a quiet loop finds its IO free.
        let idle_spin = std::time::Duration::ZERO;
        let options =
            wal::WalOptions { segment_size: 4 << 20, on_batch: Some(observer), idle_spin, ..Default::default() };
        let (handle, streams, addr) = server_with(dir, options).await;
        let mut leader = Leader::acked_epoch(addr).await;
        leader.send(Message::Diff { zxid: Zxid::ZERO }).await;
        leader.send(Message::NewLeader { epoch: Epoch(1), zxid: Zxid::ZERO }).await;
        assert!(leader.expect(|m| matches!(m, Message::AckNewLeader { .. })).await.is_some());
        leader.send(Message::UpToDate).await;
        let mut follower = QuietFollower { _handle: handle, streams, leader, counter: 0, writers };
        // The first creates the log's first segment, which the loop leaves to the writer thread; the next are
        // quiet, unless one arrives before the writer thread has given the IO back (a race given ten tries).
        loop {
            let writer = follower.propose().await;
            assert_eq!(follower.writers.lock().unwrap()[0].1.as_deref(), Some("wal-writer"), "the first segment");
            if writer.as_deref() != Some("wal-writer") {
                return follower;
            }
            assert!(follower.counter < 11, "a lone proposal takes the quiet path: {:?}", follower.writers);
        }
    }

    /// Sends the next lone proposal and waits for its ack; the thread that made it durable.
    async fn propose(&mut self) -> Option<String> {
        self.counter += 1;
        let zxid = Zxid::new(Epoch(1), self.counter);
        self.leader.send(Message::Proposal { zxid, txn: Bytes::from_static(b"txn") }).await;
        assert_eq!(self.leader.expect(|m| matches!(m, Message::Ack { .. })).await, Some(Message::Ack { zxid }));
        let batches = self.writers.lock().unwrap().clone();
        assert_eq!(batches.len() as u32, self.counter, "one batch per lone proposal: {batches:?}");
        batches[batches.len() - 1].1.clone()
    }
}

/// Sends lone proposals to a quiet follower until one is made durable on its loop's thread, then the next with
/// `wal::fdatasync` set to `action`: it must never be acked, and the runtime must stop.
async fn lone_proposal_fails(action: &str) {
    let dir = tempfile::tempdir().unwrap();
    let QuietFollower { mut streams, mut leader, counter, .. } = QuietFollower::start(dir.path()).await;
    fail::cfg("wal::fdatasync", action).unwrap();
    leader.send(Message::Proposal { zxid: Zxid::new(Epoch(1), counter + 1), txn: Bytes::from_static(b"txn") }).await;
    stopped(&mut streams).await;
    fail::remove("wal::fdatasync");
    // Whatever the link still carries (it may stay open a while after the runtime stopped): no ack among it.
    let after = tokio::time::timeout(WAIT / 10, leader.expect(|m| matches!(m, Message::Ack { .. }))).await;
    assert!(!matches!(after, Ok(Some(_))), "a proposal whose fdatasync failed was acknowledged: {after:?}");
    // The stopped runtime lets go of its log, which holds every proposal acknowledged.
    let log = dir.path().join("1").join("log");
    released(&log).await;
    let (wal, _) = wal::Wal::open(&log, wal::WalOptions { segment_size: 4 << 20, ..Default::default() }).unwrap();
    let logged: Vec<u64> = wal.iter_from(Zxid::ZERO).map(|r| u64::from(r.unwrap().zxid.counter())).collect();
    assert_eq!(&logged[..counter as usize], &(1..=u64::from(counter)).collect::<Vec<_>>()[..], "{action}");
}

/// A disk that stalls blocks a quiet follower's loop once (a lone proposal made durable on the loop's thread),
/// not at every lone write: after a batch slower than `SLOW_HERE` there, the next ones go to the WAL's writer
/// thread, and while their fdatasync stalls in turn the loop still answers its leader's pings. A build that
/// keeps taking the quiet path fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_slow_fdatasync_on_the_loop_the_next_lone_proposals_go_to_the_writer_thread() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut follower = QuietFollower::start(dir.path()).await;
    let stall = replication::runtime::SLOW_HERE * 15;
    fail::cfg("wal::fdatasync", &format!("sleep({})", stall.as_millis())).unwrap();
    let stalled = follower.propose().await;
    assert_ne!(stalled.as_deref(), Some("wal-writer"), "the first stalled batch was the loop's, as it was quiet");
    // Quiet again by every other measure (nothing waited, nothing arrived), but it was slow.
    let next = follower.propose().await;
    assert_eq!(next.as_deref(), Some("wal-writer"), "after a slow batch on the loop: {:?}", follower.writers);
    // The next proposal's fdatasync stalls on the writer thread; the loop answers a ping meanwhile.
    let zxid = Zxid::new(Epoch(1), follower.counter + 1);
    follower.leader.send(Message::Proposal { zxid, txn: Bytes::from_static(b"txn") }).await;
    tokio::time::sleep(stall / 5).await;
    let pinged = tokio::time::Instant::now();
    follower.leader.send(Message::Ping { zxid: Zxid::ZERO, round: 7 }).await;
    let pong = follower.leader.expect(|m| matches!(m, Message::Ping { .. })).await;
    let answered = pinged.elapsed();
    assert!(matches!(pong, Some(Message::Ping { round: 7, .. })), "{pong:?}");
    assert!(answered < stall / 2, "the loop answered a ping {answered:?} after it came, behind a stalled fdatasync");
    assert_eq!(follower.leader.expect(|m| matches!(m, Message::Ack { .. })).await, Some(Message::Ack { zxid }));
    fail::remove("wal::fdatasync");
    scenario.teardown();
}

/// On a runtime with one worker (`TOKIO_WORKER_THREADS=1`, servers sharing cores) a quiet follower still makes a
/// lone proposal durable on its loop's thread (`QuietFollower::start` waits for one), but that thread is the
/// server's only one: a batch slower than `SLOW_HERE_ALONE`, though under `SLOW_HERE`, sends the next ones to the
/// WAL's writer thread. A build that keeps one worker off the quiet path, or that judges it by `SLOW_HERE`, fails
/// here.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn on_one_worker_a_lone_proposal_is_made_durable_on_the_loop_until_a_batch_there_is_slow_for_one() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut follower = QuietFollower::start(dir.path()).await;
    let stall = (replication::runtime::SLOW_HERE_ALONE + replication::runtime::SLOW_HERE) / 2;
    assert!(stall < replication::runtime::SLOW_HERE, "a stall only the one-worker bound calls slow");
    fail::cfg("wal::fdatasync", &format!("sleep({})", stall.as_millis())).unwrap();
    let stalled = follower.propose().await;
    assert_ne!(stalled.as_deref(), Some("wal-writer"), "the stalled batch was the loop's, as it was quiet");
    let next = follower.propose().await;
    assert_eq!(next.as_deref(), Some("wal-writer"), "after a slow batch on the only worker: {:?}", follower.writers);
    fail::remove("wal::fdatasync");
    scenario.teardown();
}

/// A clear whose directory fsync failed leaves the removal in the page cache only; a clear after it (the server
/// restarted) finds no mark and must still make the removal durable, or a power cut brings the mark back.
#[test]
fn a_clear_after_a_failed_clear_makes_the_removal_durable() {
    let scenario = FailScenario::setup();
    let dir = Path::new("/node");
    for seed in 0..16 {
        let fs = wal::fs::SimFs::new();
        wal::fs::FileSystem::create_dir_all(&fs, dir).unwrap();
        wal::fs::FileSystem::sync_dir(&fs, Path::new("/")).unwrap();
        repairing::mark_with(&fs, dir, Zxid(5)).unwrap();
        fail::cfg("replication::repairing_sync_dir", "return(EIO)").unwrap();
        repairing::clear_with(&fs, dir).unwrap_err();
        fail::remove("replication::repairing_sync_dir");
        repairing::clear_with(&fs, dir).unwrap();
        let disk = fs.crash_now(seed);
        assert_eq!(repairing::read_with(&disk, dir).unwrap(), None, "seed {seed}: a completed clear came back");
    }
    scenario.teardown();
}
