//! Leader/follower group commit ([`Wal::append_sync`], [`Wal::append_durable`]): an appender that waits for its
//! record does the log's IO itself when nobody is doing it. Checked: every record waited for is durable (on a
//! simulated disk, a power cut right after the wait keeps it), in zxid order, alongside appenders that go through
//! the writer thread; a `SyncAppend` dropped without waiting still reaches the disk (its push did not wake the
//! writer thread, the drop must); waiting from tokio tasks works on both runtime flavors. The same for a batch
//! appended from a task with [`Wal::append_batch_here`]: done on the task's thread when the log is idle (and
//! durable when the call returns), else joining whoever writes.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use wal::fs::{FileSystem, SimFs};
use wal::{Wal, WalOptions, Zxid};

fn records(log: &Wal) -> Vec<u64> {
    log.iter_from(Zxid::ZERO).map(|r| r.unwrap().zxid.0).collect()
}

fn sim_log() -> (SimFs, Wal) {
    sim_log_with(WalOptions::default())
}

fn sim_log_with(options: WalOptions) -> (SimFs, Wal) {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/node")).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    let log = Wal::open_with(Arc::new(fs.clone()), "/node/wal", sim_options(options)).unwrap().0;
    (fs, log)
}

/// Tiny segments (so that appends roll), small payloads, no zero-filled spare.
fn sim_options(options: WalOptions) -> WalOptions {
    WalOptions { segment_size: 4096, max_payload: 96, zero_fill: false, ..options }
}

/// No idle spin: the writer thread sleeps from its first batch on, and nothing but a hand-over wakes it.
fn sleepy() -> WalOptions {
    WalOptions { idle_spin: Duration::ZERO, ..WalOptions::default() }
}

fn batch(zxids: std::ops::RangeInclusive<u64>, byte: u8) -> Vec<(Zxid, Bytes)> {
    zxids.map(|z| (Zxid(z), Bytes::from(vec![byte; 30]))).collect()
}

#[test]
fn a_batch_appended_here_on_an_idle_log_is_durable_when_the_call_returns() {
    // Segments large enough for the whole test: every batch fits the active segment, so it is written on the
    // task's own thread (nothing wakes the sleeping writer thread) and is durable when the call returns. The
    // first record creates the log's first segment, which a task leaves to others: a waiting thread does it.
    let (fs, log) = sim_log_with(WalOptions { segment_size: 1 << 20, ..sleepy() });
    log.append_durable(Zxid(1), vec![5; 30]).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let sizes = [1, 2, 3].into_iter().cycle().take(30);
    let batches: Vec<(u64, u64)> = sizes
        .scan(1, |next, size| {
            let first = *next + 1;
            *next += size;
            Some((first, *next))
        })
        .collect();
    rt.block_on(async {
        for &(first, last) in &batches {
            let pending = log.append_batch_here(batch(first..=last, 5)).await.unwrap();
            let done = pending.now_or_never().expect("made durable before the call returned");
            assert_eq!(done.unwrap(), Zxid(last));
        }
    });
    let after = fs.crash_now(11);
    drop(log);
    let log = Wal::open_with(Arc::new(after), "/node/wal", sim_options(WalOptions::default())).unwrap().0;
    let expected: Vec<u64> = (1..=batches.last().unwrap().1).collect();
    assert_eq!(records(&log), expected, "every batch reported durable survived the power cut");
    assert!(matches!(rt.block_on(log.append_batch_here(Vec::new())), Err(wal::WalError::EmptyBatch)));
}

#[test]
fn a_batch_that_needs_a_new_segment_is_left_to_the_writer_thread() {
    // 4 KiB segments, so that some batches need a new one: a task leaves those to the writer thread (their extra
    // fsyncs would stall the task's thread) and does plain ones itself. Which thread wrote each batch is what the
    // WAL's batch observer sees (it runs on the thread doing the IO); whether a handed-over batch is complete
    // by the time the call returns is a race with the writer thread, so it is not what is checked.
    let writers = Arc::new(Mutex::new(Vec::new()));
    let seen = writers.clone();
    let observer = wal::BatchObserver(Arc::new(move |_, _| seen.lock().unwrap().push(std::thread::current().id())));
    let (fs, log) = sim_log_with(WalOptions { segment_size: 4096, on_batch: Some(observer), ..sleepy() });
    log.append_durable(Zxid(1), vec![5; 30]).unwrap();
    let segments = || fs.read_dir(Path::new("/node/wal")).unwrap().iter().filter(|f| f.ends_with(".wal")).count();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    // For each batch: the thread that appended it, and whether it rolled to a new segment.
    let mut batches = Vec::new();
    rt.block_on(async {
        for z in (2..=400).step_by(2) {
            if z == 200 {
                // A truncation (of nothing) queued midway, which wakes the writer thread itself: nothing upsets.
                drop(log.truncate_after(Zxid(199)).unwrap());
            }
            let before = segments();
            // The batch's IO, when done here, runs before the call's first await point, on this thread.
            let caller = std::thread::current().id();
            let pending = log.append_batch_here(batch(z..=z + 1, 6)).await.unwrap();
            assert_eq!(pending.await.unwrap(), Zxid(z + 1));
            batches.push((caller, segments() > before));
        }
    });
    let writers = writers.lock().unwrap().clone();
    // The first batch is `append_durable`'s; every other is one of the loop's (each awaited before the next).
    assert_eq!(writers.len(), 1 + batches.len());
    let by_caller =
        |(&(caller, _), writer): (&(std::thread::ThreadId, bool), &std::thread::ThreadId)| caller == *writer;
    let rolled: Vec<bool> =
        batches.iter().zip(&writers[1..]).filter(|((_, rolled), _)| *rolled).map(by_caller).collect();
    assert!(rolled.len() >= 2, "the test rolls: {}", rolled.len());
    assert!(rolled.iter().all(|&here| !here), "a batch that rolled was written on the task's thread: {rolled:?}");
    let here = batches.iter().zip(&writers[1..]).filter(|(b, w)| by_caller((b, w))).count();
    assert!(here > 0, "no plain batch was written on the task's thread");
    let after = fs.crash_now(3);
    drop(log);
    let log = Wal::open_with(Arc::new(after), "/node/wal", sim_options(WalOptions::default())).unwrap().0;
    assert_eq!(records(&log), (1..=401).collect::<Vec<_>>());
}

#[test]
fn batches_appended_here_share_the_log_with_the_writer_thread_and_waiting_threads() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Wal::open(dir.path(), WalOptions::default()).unwrap().0);
    let next = Arc::new(Mutex::new(0u64));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    std::thread::scope(|s| {
        // Threads waiting for their records, taking the IO when it is idle: so a batch appended here sometimes
        // finds it busy and joins the next batch written.
        for _ in 0..2 {
            let (log, next) = (log.clone(), next.clone());
            s.spawn(move || {
                for _ in 0..150 {
                    let queued = {
                        let mut n = next.lock().unwrap();
                        *n += 1;
                        (Zxid(*n), log.append_sync(Zxid(*n), vec![1; 60]).unwrap())
                    };
                    assert_eq!(queued.1.wait().unwrap(), queued.0);
                }
            });
        }
        rt.block_on(async {
            let tasks: Vec<_> = (0..4u64)
                .map(|t| {
                    let (log, next) = (log.clone(), next.clone());
                    tokio::spawn(async move {
                        for i in 0..150u64 {
                            // Queued in zxid order under the lock (a std one: the append does not wait on
                            // anything but the queue's room, which is never short here).
                            let pending = {
                                let mut n = next.lock().unwrap();
                                let first = *n + 1;
                                *n += 1 + (t + i) % 3;
                                let records = batch(first..=*n, 2);
                                match t {
                                    0 | 1 => log.append_batch_here(records).now_or_never(),
                                    _ => log.append_batch_async(records).now_or_never(),
                                }
                                .expect("room in the queue")
                                .map(|pending| (Zxid(*n), pending))
                            };
                            let (last, pending) = pending.unwrap();
                            assert_eq!(pending.await.unwrap(), last);
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        });
    });
    let total = *next.lock().unwrap();
    assert_eq!(records(&log), (1..=total).collect::<Vec<_>>());
}

#[test]
fn a_lone_appender_waits_for_records_that_survive_a_power_cut() {
    let (fs, log) = sim_log();
    for z in 1..=100 {
        assert_eq!(log.append_durable(Zxid(z), vec![z as u8; 40]).unwrap(), Zxid(z));
    }
    // Power off right after the last wait returned: everything waited for is on the disk.
    let after = fs.crash_now(7);
    drop(log);
    let log = Wal::open_with(Arc::new(after), "/node/wal", sim_options(WalOptions::default())).unwrap().0;
    assert_eq!(records(&log), (1..=100).collect::<Vec<_>>());
}

#[test]
fn waiting_appenders_and_the_writer_thread_share_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Wal::open(dir.path(), WalOptions::default()).unwrap().0);
    let next = Arc::new(Mutex::new(0u64));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    std::thread::scope(|s| {
        // Threads waiting for their records (taking the IO when it is idle), each queueing in zxid order under
        // the shared lock and waiting outside it.
        for _ in 0..4 {
            let (log, next) = (log.clone(), next.clone());
            s.spawn(move || {
                for _ in 0..200 {
                    let queued = {
                        let mut n = next.lock().unwrap();
                        *n += 1;
                        (Zxid(*n), log.append_sync(Zxid(*n), vec![1; 60]).unwrap())
                    };
                    assert_eq!(queued.1.wait().unwrap(), queued.0);
                }
            });
        }
        // Tasks appending through the writer thread, and tasks waiting with `wait_async`.
        rt.block_on(async {
            let tasks: Vec<_> = (0..4)
                .map(|t| {
                    let (log, next) = (log.clone(), next.clone());
                    tokio::spawn(async move {
                        for _ in 0..200 {
                            if t % 2 == 0 {
                                let pending = {
                                    let mut n = next.lock().unwrap();
                                    *n += 1;
                                    log.append(Zxid(*n), vec![2; 30]).unwrap()
                                };
                                pending.await.unwrap();
                            } else {
                                let (zxid, queued) = {
                                    let mut n = next.lock().unwrap();
                                    *n += 1;
                                    (Zxid(*n), log.append_sync(Zxid(*n), vec![3; 30]).unwrap())
                                };
                                assert_eq!(queued.wait_async().await.unwrap(), zxid);
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        });
    });
    assert_eq!(records(&log), (1..=1600).collect::<Vec<_>>());
}

#[test]
fn a_sync_append_dropped_without_waiting_still_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let log = Wal::open(dir.path(), WalOptions::default()).unwrap().0;
    log.append_durable(Zxid(1), vec![1; 10]).unwrap();
    // Let the writer thread fall asleep: nothing but the drop can wake it for the next record.
    std::thread::sleep(Duration::from_millis(50));
    drop(log.append_sync(Zxid(2), vec![2; 10]).unwrap());
    let started = Instant::now();
    while records(&log) != [1, 2] {
        assert!(started.elapsed() < Duration::from_secs(10), "the dropped append never became durable");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_task_waits_on_a_single_threaded_runtime_too() {
    let dir = tempfile::tempdir().unwrap();
    let log = Wal::open(dir.path(), WalOptions::default()).unwrap().0;
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        for z in 1..=20 {
            let queued = log.append_sync(Zxid(z), vec![4; 10]).unwrap();
            assert_eq!(queued.wait_async().await.unwrap(), Zxid(z));
        }
    });
    assert_eq!(records(&log), (1..=20).collect::<Vec<_>>());
}
