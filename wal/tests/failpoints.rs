//! Injected IO failures (the `failpoints` feature): a failed write or fsync fails every waiting appender, nothing
//! is reported durable, and the log refuses writes until it is reopened.
//!
//! Run with `cargo test -p wal --features failpoints --test failpoints`. Failpoints are process-global, so every
//! test holds a `FailScenario`, which serialises them.

mod common;

use std::sync::Arc;

use common::*;
use fail::FailScenario;
use futures_util::FutureExt;
use wal::{Wal, WalError, Zxid};

/// The root cause of a failed-log error.
fn cause(error: &WalError) -> &WalError {
    match error {
        WalError::Failed(cause) => cause,
        other => panic!("expected a failed log, got {other}"),
    }
}

fn errno(error: &WalError) -> Option<i32> {
    match cause(error) {
        WalError::Io { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

/// The same when the appender does the IO itself (`append_sync`, leader/follower group commit): its own wait
/// gets the error, later appends through either path fail, and a reopened log holds only what was durable.
#[test]
fn an_fsync_failure_on_the_appenders_own_thread_fails_the_log_the_same() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), tiny());
    for z in 1..=5 {
        log.append_durable(Zxid(z), payload(Zxid(z))).unwrap();
    }
    fail::cfg("wal::fdatasync", "return(EIO)").unwrap();
    let error = log.append_durable(Zxid(6), payload(Zxid(6))).expect_err("not durable after a failed fsync");
    assert!(error.is_fatal());
    assert_eq!(errno(&error), Some(libc::EIO), "{error}");
    fail::remove("wal::fdatasync");
    assert!(matches!(log.append_sync(Zxid(7), vec![1]), Err(WalError::Failed(_))));
    assert!(matches!(log.append(Zxid(7), vec![1]), Err(WalError::Failed(_))));
    drop(log);
    let log = open(dir.path(), tiny());
    let zxids: Vec<u64> = log.iter_from(Zxid::ZERO).map(|r| r.unwrap().zxid.0).collect();
    // The failed record was written before its fsync failed: it may be there, but never less than what was
    // acknowledged.
    assert_eq!(&zxids[..5], &[1, 2, 3, 4, 5], "acknowledged records survive");
    scenario.teardown();
}

/// The same for a batch a task appends and makes durable on its own thread (`append_batch_here`): the call
/// hands back a failed outcome, never a durable one.
#[test]
fn an_fsync_failure_on_a_tasks_own_thread_fails_its_batch_and_the_log() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    // No idle spin: the writer thread sleeps, so the task does the IO (`tiny()` segments hold both batches).
    let log = open(dir.path(), wal::WalOptions { idle_spin: std::time::Duration::ZERO, ..tiny() });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let batch = |zxids: std::ops::RangeInclusive<u64>| -> Vec<(Zxid, bytes::Bytes)> {
        zxids.map(|z| (Zxid(z), payload(Zxid(z)).into())).collect()
    };
    // The first record creates the log's first segment, which a task leaves to others: a waiting thread does it.
    log.append_durable(Zxid(1), payload(Zxid(1))).unwrap();
    rt.block_on(async {
        assert_eq!(log.append_batch_here(batch(2..=2)).await.unwrap().now_or_never().unwrap().unwrap(), Zxid(2));
        fail::cfg("wal::fdatasync", "return(EIO)").unwrap();
        let pending = log.append_batch_here(batch(3..=4)).await.unwrap();
        // Failed on this thread, before the call returned.
        let error = pending.now_or_never().expect("done on the task's thread").expect_err("not durable");
        assert_eq!(errno(&error), Some(libc::EIO), "{error}");
        fail::remove("wal::fdatasync");
        assert!(matches!(log.append_batch_here(batch(5..=5)).await, Err(WalError::Failed(_))));
    });
    drop(log);
    let log = open(dir.path(), tiny());
    let zxids: Vec<u64> = log.iter_from(Zxid::ZERO).map(|r| r.unwrap().zxid.0).collect();
    assert_eq!(&zxids[..2], &[1, 2], "acknowledged records survive");
    scenario.teardown();
}

#[test]
fn an_fsync_failure_fails_every_waiting_appender_and_every_later_one() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path(), tiny()));
    append_all(&log, 1..=10);
    fail::cfg("wal::fdatasync", "return(EIO)").unwrap();
    let next = std::sync::Mutex::new(10u64);
    let outcomes: Vec<Result<Zxid, WalError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let pending = {
                        let mut n = next.lock().unwrap();
                        *n += 1;
                        log.append(Zxid(*n), payload(Zxid(*n)))
                    };
                    pending.and_then(|p| p.wait())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for outcome in &outcomes {
        let error = outcome.as_ref().expect_err("no append may be durable after a failed fsync");
        assert!(error.is_fatal());
        assert_eq!(errno(error), Some(libc::EIO), "{error}");
    }
    fail::remove("wal::fdatasync");
    // Healthy disk again, but the log stays failed until reopened: nothing is retried.
    assert!(matches!(log.append(Zxid(100), vec![1]), Err(WalError::Failed(_))));
    assert!(matches!(log.truncate_after(Zxid(5)), Err(WalError::Failed(_))));
    assert_eq!(log.last_zxid(), Some(Zxid(10)), "readers see only what was durable");
    drop(Arc::try_unwrap(log).expect("sole owner"));
    let log = open(dir.path(), tiny());
    let got = zxids(&log);
    assert_eq!(&got[..10], &(1..=10).collect::<Vec<_>>()[..], "acknowledged records survive");
    let last = log.last_zxid().unwrap().0;
    append_all(&log, [last + 1]);
    scenario.teardown();
}

#[tokio::test]
async fn async_waiters_get_the_failure_too() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), tiny());
    fail::cfg("wal::write", "return(EIO)").unwrap();
    let pendings: Vec<_> = (1..=5).map(|z| log.append(Zxid(z), payload(Zxid(z))).unwrap()).collect();
    for p in pendings {
        let error = p.await.expect_err("a failed write is not durable");
        assert_eq!(errno(&error), Some(libc::EIO));
    }
    assert!(matches!(log.append_async(Zxid(6), vec![]).await, Err(WalError::Failed(_))));
    fail::remove("wal::write");
    scenario.teardown();
}

#[test]
fn a_full_disk_at_segment_roll_fails_cleanly_and_recovers_on_reopen() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), tiny());
    append_all(&log, 1..=5);
    fail::cfg("wal::preallocate", "return(ENOSPC)").unwrap();
    let mut z = 5;
    let error = loop {
        z += 1;
        match log.append(Zxid(z), payload(Zxid(z))).and_then(|p| p.wait()) {
            Ok(_) => assert!(z < 100, "tiny segments must roll"),
            Err(e) => break e,
        }
    };
    assert_eq!(errno(&error), Some(libc::ENOSPC), "{error}");
    assert!(error.to_string().contains("preallocate"), "{error}");
    fail::remove("wal::preallocate");
    drop(log);
    let (log, recovery) = Wal::open(dir.path(), tiny()).unwrap();
    assert!(recovery.removed_tmp_files >= 1, "the half-created segment is cleaned up");
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".wal.tmp")));
    assert_eq!(zxids(&log), (1..z).collect::<Vec<_>>());
    append_all(&log, [z]);
    scenario.teardown();
}

#[test]
fn a_read_only_disk_is_a_clear_error_and_touches_nothing() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    append_all(&open(dir.path(), tiny()), 1..=3);
    let before: Vec<_> = segments(dir.path()).iter().map(|p| std::fs::read(p).unwrap()).collect();
    fail::cfg("wal::write", "return(EROFS)").unwrap();
    let log = open(dir.path(), tiny());
    let error = log.append(Zxid(4), vec![4]).unwrap().wait().unwrap_err();
    assert_eq!(errno(&error), Some(libc::EROFS));
    fail::remove("wal::write");
    drop(log);
    let after: Vec<_> = segments(dir.path()).iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert_eq!(before, after);
    scenario.teardown();
}

#[test]
fn a_failed_truncation_fails_the_log() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), tiny());
    append_all(&log, 1..=100);
    fail::cfg("wal::remove", "return(EIO)").unwrap();
    let error = log.truncate_after(Zxid(10)).unwrap().wait().unwrap_err();
    assert_eq!(errno(&error), Some(libc::EIO));
    assert!(matches!(log.append(Zxid(11), vec![]), Err(WalError::Failed(_))));
    fail::remove("wal::remove");
    drop(log);
    // The interrupted truncation left a log without holes: a prefix of what was there.
    let log = open(dir.path(), tiny());
    let got = zxids(&log);
    assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>());
    assert!(got.len() >= 10);
    scenario.teardown();
}

/// Every step of writing the base file (a restart after a snapshot) that fails fails the restart with an error
/// naming the step and the file, and leaves the old log whole: reopened, it holds what it held. Once the disk is
/// healthy, the same restart succeeds.
#[test]
fn a_failed_base_file_write_leaves_the_old_log_and_the_restart_succeeds_after() {
    let scenario = FailScenario::setup();
    for (point, action, op) in [
        ("wal::base_create", "return(EIO)", "create"),
        ("wal::base_write", "return(ENOSPC)", "write"),
        ("wal::base_write", "return(short)", "write"),
        ("wal::base_fsync", "return(EIO)", "fsync"),
        ("wal::base_rename", "return(ENOSPC)", "rename"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), tiny());
        append_all(&log, 1..=20);
        fail::cfg(point, action).unwrap();
        let error = log.restart_after(Zxid(50)).unwrap().wait().unwrap_err();
        let want = if action.contains("EIO") { libc::EIO } else { libc::ENOSPC };
        assert_eq!(errno(&error), Some(want), "{point}: {error}");
        let message = error.to_string();
        assert!(message.contains(op) && message.contains("base"), "{point}: {message}");
        fail::remove(point);
        drop(log);
        let log = open(dir.path(), tiny());
        assert_eq!(zxids(&log), (1..=20).collect::<Vec<_>>(), "{point}: the old log is whole");
        assert_eq!(log.base(), None, "{point}: no base file is trusted");
        log.restart_after(Zxid(50)).unwrap().wait().unwrap();
        drop(log);
        let log = open(dir.path(), tiny());
        assert_eq!((log.base(), log.end()), (Some(Zxid(50)), Zxid(50)), "{point}: restarted after the fault");
    }
    scenario.teardown();
}

/// A base file that cannot be read fails the open, naming it; it opens once the disk reads again.
#[test]
fn an_unreadable_base_file_fails_the_open() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), tiny());
    log.restart_after(Zxid(7)).unwrap().wait().unwrap();
    drop(log);
    fail::cfg("wal::base_read", "return(EIO)").unwrap();
    let error = Wal::open(dir.path(), tiny()).unwrap_err();
    assert!(
        matches!(&error, WalError::Io { op: "read", path, source } if path.ends_with("base")
        && source.raw_os_error() == Some(libc::EIO)),
        "{error}"
    );
    fail::remove("wal::base_read");
    assert_eq!(open(dir.path(), tiny()).end(), Zxid(7));
    scenario.teardown();
}

/// Runs `f` on a thread of its own and returns what it returns, or fails the test if it has not returned within
/// `secs`: a waiter left waiting for an IO owner that is gone would otherwise hang the test instead of failing it.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || drop(tx.send(f())));
    rx.recv_timeout(std::time::Duration::from_secs(secs)).expect("still waiting: the log hangs instead of failing")
}

/// A panic inside the IO on the writer thread (a bug, not a disk fault) fails the log: the appender waiting for
/// that batch and every later one get an error instead of waiting forever for a thread that is gone, and a
/// reopened log holds everything acknowledged before.
#[test]
fn a_panic_on_the_writer_thread_fails_the_log_instead_of_hanging_its_appenders() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path(), tiny()));
    append_all(&log, 1..=5);
    fail::cfg("wal::fdatasync", "panic").unwrap();
    // Queued without waiting: the writer thread does this batch's IO, and panics in its fdatasync.
    let pending = log.append(Zxid(6), payload(Zxid(6))).unwrap();
    let outcome = within(20, move || pending.wait());
    assert!(outcome.is_err(), "a batch whose fdatasync panicked is not durable: {outcome:?}");
    fail::remove("wal::fdatasync");
    let later = Arc::clone(&log);
    let error = within(20, move || later.append(Zxid(7), vec![7]).and_then(|p| p.wait())).unwrap_err();
    assert!(matches!(cause(&error), WalError::IoPanicked), "{error}");
    let later = Arc::clone(&log);
    let error = within(20, move || later.append_durable(Zxid(7), vec![7])).unwrap_err();
    assert!(error.is_fatal(), "{error}");
    drop(Arc::try_unwrap(log).expect("sole owner"));
    let log = open(dir.path(), tiny());
    assert_eq!(&zxids(&log)[..5], &[1, 2, 3, 4, 5], "acknowledged records survive");
    scenario.teardown();
}

/// The same when the panic comes on an appender's own thread (`append_durable` found the writer idle and did the
/// IO itself): the panic is the caller's, and the IO it had claimed is given back with the log failed, so the
/// next appender, on any path, gets an error instead of waiting for the claim to be released.
#[test]
fn a_panic_on_an_appenders_own_thread_fails_the_log_instead_of_keeping_its_io() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    // No idle spin: the writer thread sleeps, so the appender does the IO.
    let log = Arc::new(open(dir.path(), wal::WalOptions { idle_spin: std::time::Duration::ZERO, ..tiny() }));
    append_all(&log, 1..=5);
    fail::cfg("wal::fdatasync", "panic").unwrap();
    let appender = Arc::clone(&log);
    let panicked = std::thread::spawn(move || appender.append_durable(Zxid(6), payload(Zxid(6)))).join();
    assert!(panicked.is_err(), "the fdatasync panicked on the appender's own thread");
    fail::remove("wal::fdatasync");
    for path in ["queued", "here"] {
        let later = Arc::clone(&log);
        let outcome = within(20, move || match path {
            "queued" => later.append(Zxid(7), vec![7]).and_then(|p| p.wait()),
            _ => later.append_durable(Zxid(7), vec![7]),
        });
        let error = outcome.expect_err("nothing is durable after a panic in the IO");
        assert!(matches!(cause(&error), WalError::IoPanicked), "{path}: {error}");
    }
    drop(Arc::try_unwrap(log).expect("sole owner"));
    let log = open(dir.path(), tiny());
    assert_eq!(&zxids(&log)[..5], &[1, 2, 3, 4, 5], "acknowledged records survive");
    scenario.teardown();
}
