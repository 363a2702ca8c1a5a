//! The inline writer ([`Wal::open_inline`]): each operation is written and fsynced on the caller's thread before
//! the call returns, so a power cut right after the call keeps it; what the thread mode guarantees (nothing
//! completes before the fdatasync covering it, truncate and restart in queue order) holds the same.

use std::path::Path;
use std::sync::Arc;

use futures_util::FutureExt;
use wal::fs::{FileSystem, SimFs};
use wal::{Wal, WalOptions, Zxid};

const DIR: &str = "/node/wal";

fn options() -> WalOptions {
    WalOptions { segment_size: 1024, max_payload: 96, ..WalOptions::default() }
}

fn records(log: &Wal) -> Vec<u64> {
    log.iter_from(Zxid::ZERO).map(|r| r.unwrap().zxid.0).collect()
}

fn fresh_disk() -> SimFs {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/node")).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    fs
}

#[test]
fn an_inline_append_is_durable_when_the_call_returns() {
    let fs = fresh_disk();
    let (log, _) = Wal::open_inline(Arc::new(fs.clone()), DIR, options()).unwrap();
    for z in 1..=40u64 {
        let pending = log.append(Zxid(z), vec![z as u8; 20]).unwrap();
        // Complete already: no thread to wait for.
        assert_eq!(pending.now_or_never().expect("complete on return").unwrap(), Zxid(z));
    }
    let truncated = log.truncate_after(Zxid(30)).unwrap();
    truncated.now_or_never().expect("complete on return").unwrap();
    let batch = (31..=35).map(|z| (Zxid(z), bytes::Bytes::from(vec![1u8; 10]))).collect::<Vec<_>>();
    let appended = log.append_batch_async(batch).now_or_never().expect("no room to wait for").unwrap();
    appended.now_or_never().expect("complete on return").unwrap();
    // Cut the power at once: everything acknowledged is there after the cut, whatever the seed.
    for seed in 0..20 {
        let after = fs.crash_now(seed);
        let (reopened, _) = Wal::open_inline(Arc::new(after), DIR, options()).unwrap();
        assert_eq!(records(&reopened), (1..=35).collect::<Vec<_>>(), "seed {seed}");
    }
}

#[test]
fn an_inline_log_restarts_after_a_snapshot() {
    let fs = fresh_disk();
    let (log, _) = Wal::open_inline(Arc::new(fs.clone()), DIR, options()).unwrap();
    for z in 1..=10u64 {
        drop(log.append(Zxid(z), vec![0u8; 50]).unwrap());
    }
    log.restart_after(Zxid(20)).unwrap().now_or_never().unwrap().unwrap();
    assert_eq!(log.base(), Some(Zxid(20)));
    assert!(records(&log).is_empty());
    log.append(Zxid(21), vec![0u8; 5]).unwrap().now_or_never().unwrap().unwrap();
    assert_eq!(records(&log), vec![21]);
}

#[test]
fn a_stepped_log_writes_only_when_stepped() {
    let fs = fresh_disk();
    let (log, _) = Wal::open_stepped(Arc::new(fs.clone()), DIR, options()).unwrap();
    let mut pending =
        log.append_batch_async(vec![(Zxid(1), bytes::Bytes::from_static(b"a"))]).now_or_never().unwrap().unwrap();
    assert!((&mut pending).now_or_never().is_none(), "durable before any step");
    // A power cut now loses it: it was never written.
    let (before, _) = Wal::open_inline(Arc::new(fs.crash_now(1)), DIR, options()).unwrap();
    assert!(records(&before).is_empty());
    let fs = fresh_disk();
    let (log, _) = Wal::open_stepped(Arc::new(fs.clone()), DIR, options()).unwrap();
    let pending =
        log.append_batch_async(vec![(Zxid(1), bytes::Bytes::from_static(b"a"))]).now_or_never().unwrap().unwrap();
    log.step();
    assert_eq!(pending.now_or_never().expect("complete after the step").unwrap(), Zxid(1));
    let (after, _) = Wal::open_inline(Arc::new(fs.crash_now(1)), DIR, options()).unwrap();
    assert_eq!(records(&after), vec![1]);
}
