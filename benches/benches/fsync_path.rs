//! The fsync-before-ack path, next to its physical baseline in the same run.
//!
//! - `fsync_path/raw_fdatasync/<size>`: `pwrite` + `fdatasync` of one record's bytes on a preallocated file.
//! - `fsync_path/wal_append_durable/<size>/<writers>`: that many tokio tasks (on a 2-worker runtime, as in the
//!   node), each appending and awaiting durability before its next append. Elements/s = durable appends/s.
//! - `fsync_path/wal_append_durable_threads/<size>/<writers>`: the same from OS threads with blocking waits.
//! - `fsync_path/wal_append_sync_threads/<size>/<writers>` and `wal_append_sync_tasks/<size>/<writers>` (1 and
//!   8 writers): the same with `Wal::append_sync` and `SyncAppend::wait` / `wait_async` (leader/follower group
//!   commit: a waiter that finds the writer idle writes and fsyncs itself).
//! - `fsync_path/raft_engine_durable/<size>/<writers>` (feature `raft-engine`): the same on tikv's raft-engine.
//! - `wal_recover/open_256MiB` next to `wal_recover/read_crc32c_256MiB`: opening (verifying) a 256 MiB log, and
//!   a plain sequential read + crc32c of the same files.
//!
//! Data goes to `ENSEMBLE_BENCH_DIR` (default `target/bench-data`): a real disk, not tmpfs.

use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ensemble_benches::{bench_dir, read_and_crc, RawFdatasync};
use wal::{SyncMode, Wal, WalOptions, Zxid};

const SIZES: [usize; 2] = [100, 1024];
const WRITERS: [usize; 4] = [1, 8, 64, 256];

/// Runs `op` about `iters` times in total from `writers` threads; returns the time for exactly `iters`.
fn run_writers(writers: usize, iters: u64, op: impl Fn(usize) + Sync) -> Duration {
    let per_thread = iters.div_ceil(writers as u64);
    let start = Barrier::new(writers + 1);
    let elapsed = std::thread::scope(|s| {
        for w in 0..writers {
            let (op, start) = (&op, &start);
            s.spawn(move || {
                start.wait();
                for _ in 0..per_thread {
                    op(w);
                }
            });
        }
        start.wait();
        Instant::now()
    })
    .elapsed();
    elapsed.mul_f64(iters as f64 / (per_thread * writers as u64) as f64)
}

/// Prints how many records each fdatasync carried on average, and resets nothing (totals since open).
fn report_batching(log: &Wal) {
    let stats = log.stats();
    let per_batch = stats.records as f64 / stats.batches.max(1) as f64;
    let fsync_us = stats.fsync_time.as_secs_f64() * 1e6 / stats.batches.max(1) as f64;
    eprintln!(
        "    group commit: {per_batch:.1} records per fdatasync, mean fdatasync {fsync_us:.0} us ({} batches)",
        stats.batches
    );
}

/// Runs about `iters` durable appends in total from `writers` tokio tasks; returns the time for exactly `iters`.
/// `sync`: with `append_sync` and `wait_async` instead of `append` and `.await`.
fn run_tasks(
    rt: &tokio::runtime::Runtime,
    log: &Arc<Wal>,
    next: &Arc<Mutex<u64>>,
    (size, writers, sync): (usize, usize, bool),
    iters: u64,
) -> Duration {
    let per_task = iters.div_ceil(writers as u64);
    let started = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|_| {
                let (log, next, payload) = (log.clone(), next.clone(), vec![0xcd; size]);
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        // Zxids are handed out in append order; the queue never fills here, so this never blocks.
                        if sync {
                            let queued = {
                                let mut n = next.lock().unwrap();
                                *n += 1;
                                log.append_sync(Zxid(*n), payload.clone()).unwrap()
                            };
                            queued.wait_async().await.unwrap();
                        } else {
                            let pending = {
                                let mut n = next.lock().unwrap();
                                *n += 1;
                                log.append(Zxid(*n), payload.clone()).unwrap()
                            };
                            pending.await.unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    started.elapsed().mul_f64(iters as f64 / (per_task * writers as u64) as f64)
}

fn fsync_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let dir = bench_dir();
    let mut group = c.benchmark_group("fsync_path");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    for size in SIZES {
        let mut raw = RawFdatasync::new(&dir, 64 << 20);
        let record = vec![0xab; size + wal::record::RECORD_HEADER_LEN];
        group.bench_function(BenchmarkId::new("raw_fdatasync", format!("{size}B")), |b| {
            b.iter(|| raw.write_sync(&record))
        });
        drop(raw);
        for writers in WRITERS {
            let tmp = tempfile::tempdir_in(&dir).unwrap();
            let log = Arc::new(Wal::open(tmp.path(), WalOptions::default()).unwrap().0);
            let next = Arc::new(Mutex::new(0u64));
            let id = BenchmarkId::new("wal_append_durable", format!("{size}B/{writers}"));
            group.bench_function(id, |b| {
                b.iter_custom(|iters| run_tasks(&rt, &log, &next, (size, writers, false), iters))
            });
            report_batching(&log);
            let payload = vec![0xcd; size];
            let id = BenchmarkId::new("wal_append_durable_threads", format!("{size}B/{writers}"));
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    run_writers(writers, iters, |_| {
                        let pending = {
                            let mut n = next.lock().unwrap();
                            *n += 1;
                            log.append(Zxid(*n), payload.clone()).unwrap()
                        };
                        pending.wait().unwrap();
                    })
                })
            });
            if writers <= 8 {
                let id = BenchmarkId::new("wal_append_sync_threads", format!("{size}B/{writers}"));
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        run_writers(writers, iters, |_| {
                            let queued = {
                                let mut n = next.lock().unwrap();
                                *n += 1;
                                log.append_sync(Zxid(*n), payload.clone()).unwrap()
                            };
                            queued.wait().unwrap();
                        })
                    })
                });
                let id = BenchmarkId::new("wal_append_sync_tasks", format!("{size}B/{writers}"));
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| run_tasks(&rt, &log, &next, (size, writers, true), iters))
                });
            }
            #[cfg(feature = "raft-engine")]
            raft_engine_bench::durable(&mut group, &dir, size, writers);
        }
    }
    group.finish();
}

#[cfg(feature = "raft-engine")]
mod raft_engine_bench {
    use super::*;
    use criterion::measurement::WallTime;
    use criterion::BenchmarkGroup;
    use raft_engine::{Config, Engine, LogBatch, ReadableSize};

    /// The durable-append workload on raft-engine: every writer is a raft group of its own, appending with
    /// `sync = true` (raft-engine merges concurrent writers into one fdatasync, as our WAL does).
    pub fn durable(group: &mut BenchmarkGroup<'_, WallTime>, dir: &std::path::Path, size: usize, writers: usize) {
        let tmp = tempfile::tempdir_in(dir).unwrap();
        let config = Config {
            dir: tmp.path().to_str().unwrap().to_owned(),
            target_file_size: ReadableSize::mb(64),
            purge_threshold: ReadableSize::gb(10),
            batch_compression_threshold: ReadableSize(0),
            enable_log_recycle: false,
            prefill_for_recycle: false,
            ..Default::default()
        };
        let engine = Engine::open(config).unwrap();
        let payload = vec![0xcd; size];
        let seq = std::sync::atomic::AtomicU64::new(0);
        let id = BenchmarkId::new("raft_engine_durable", format!("{size}B/{writers}"));
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                run_writers(writers, iters, |w| {
                    let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut batch = LogBatch::with_capacity(1);
                    batch.put(w as u64 + 1, (n % 1024).to_be_bytes().to_vec(), payload.clone()).unwrap();
                    engine.write(&mut batch, true).unwrap();
                })
            })
        });
    }
}

/// Builds a log of about `bytes` bytes of 1 KiB records (unsynced: it is read back from the page cache, as the
/// baseline is).
fn build_log(dir: &std::path::Path, bytes: u64) {
    let options = WalOptions { sync: SyncMode::Never, ..WalOptions::default() };
    let (log, _) = Wal::open(dir, options).unwrap();
    let payload = vec![0x5a; 1024];
    let records = bytes / (payload.len() + wal::record::RECORD_HEADER_LEN) as u64;
    let mut last = None;
    for z in 1..=records {
        last = Some(log.append(Zxid(z), payload.clone()).unwrap());
    }
    last.expect("records").wait().unwrap();
}

fn wal_recover(c: &mut Criterion) {
    let tmp = tempfile::tempdir_in(bench_dir()).unwrap();
    build_log(tmp.path(), 256 << 20);
    let (bytes, _) = read_and_crc(tmp.path());
    let mut group = c.benchmark_group("wal_recover");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("read_crc32c_256MiB", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| read_and_crc(tmp.path()).1).sum())
    });
    group.bench_function("open_256MiB", |b| {
        b.iter(|| {
            let (log, recovery) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
            assert!(recovery.records > 0);
            drop(log);
        })
    });
    group.finish();
}

criterion_group!(benches, fsync_path, wal_recover);
criterion_main!(benches);
