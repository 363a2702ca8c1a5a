//! One durable append at a time, against raw `pwrite` + `fdatasync`, measured in alternating blocks so that the
//! disk's drift (on a shared VM an fdatasync takes 80 us one minute and 200 us the next) cancels out: each block
//! of a WAL variant is divided by the mean of the raw blocks just before and after it, and the median of those
//! ratios is reported (issue 14's "within 1.15x of raw write+fdatasync, from a thread and from a tokio task").
//!
//! Variants, all with one writer and `payload` bytes:
//! - `append+wait` (thread) and `append+await` (task): the writer thread does the IO (two hand-offs per append);
//! - `append_sync+wait` (thread) and `append_sync+wait_async` (task on a 2-worker runtime): leader/follower group
//!   commit, the appender does the IO itself when the writer is idle (from a task, in `block_in_place`);
//! - `append_batch_here` (task): the same from a task with no `block_in_place`, as a follower's replication loop
//!   does for a lone batch while it is quiet.
//!
//! The raw file is written through once before the run, as the WAL's segments are zero-filled: both then
//! overwrite written blocks (a first write into an unwritten extent makes fdatasync commit the journal too).
//!
//! `cargo bench -p ensemble-benches --bench fsync_pair` (env `ROUNDS`, default 30; `BLOCK`, appends per block,
//! default 100; data in `ENSEMBLE_BENCH_DIR`, default `target/bench-data`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ensemble_benches::{bench_dir, RawFdatasync};
use wal::{Wal, WalOptions, Zxid};

const RAW_FILE: u64 = 64 << 20;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Copy, Debug)]
enum Variant {
    AppendWait,
    AppendAwait,
    SyncWait,
    SyncWaitAsync,
    BatchHere,
}

const VARIANTS: [(Variant, &str); 5] = [
    (Variant::AppendWait, "append+wait (thread)"),
    (Variant::AppendAwait, "append+await (task)"),
    (Variant::SyncWait, "append_sync+wait (thread)"),
    (Variant::SyncWaitAsync, "append_sync+wait_async (task)"),
    (Variant::BatchHere, "append_batch_here (task)"),
];

/// Mean time per append over `n` appends of `variant`.
fn block(
    variant: Variant,
    log: &Arc<Wal>,
    rt: &tokio::runtime::Runtime,
    next: &mut u64,
    n: usize,
    payload: &[u8],
) -> Duration {
    let first = *next + 1;
    *next += n as u64;
    let started = Instant::now();
    match variant {
        Variant::AppendWait => {
            for z in first..first + n as u64 {
                log.append(Zxid(z), payload.to_vec()).unwrap().wait().unwrap();
            }
        }
        Variant::SyncWait => {
            for z in first..first + n as u64 {
                log.append_sync(Zxid(z), payload.to_vec()).unwrap().wait().unwrap();
            }
        }
        Variant::AppendAwait | Variant::SyncWaitAsync | Variant::BatchHere => {
            let (log, payload) = (log.clone(), payload.to_vec());
            rt.block_on(rt.spawn(async move {
                for z in first..first + n as u64 {
                    match variant {
                        Variant::AppendAwait => drop(log.append(Zxid(z), payload.clone()).unwrap().await.unwrap()),
                        Variant::BatchHere => {
                            let batch = vec![(Zxid(z), payload.clone().into())];
                            assert_eq!(log.append_batch_here(batch).await.unwrap().await.unwrap(), Zxid(z));
                        }
                        _ => drop(log.append_sync(Zxid(z), payload.clone()).unwrap().wait_async().await.unwrap()),
                    }
                }
            }))
            .unwrap();
        }
    }
    started.elapsed() / n as u32
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument, if any, picks payload sizes ("100", "1024").
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let (rounds, n) = (env("ROUNDS", 30), env("BLOCK", 100));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let dir = bench_dir();
    for size in [100usize, 1024] {
        if filter.as_deref().is_some_and(|f| !size.to_string().contains(f)) {
            continue;
        }
        let mut raw = RawFdatasync::written_through(&dir, RAW_FILE);
        let record = vec![0xab; size + wal::record::RECORD_HEADER_LEN];
        let payload = vec![0xcd; size];
        let tmp = tempfile::tempdir_in(&dir).unwrap();
        let log = Arc::new(Wal::open(tmp.path(), WalOptions::default()).unwrap().0);
        let mut next = 0u64;
        let raw_block = |raw: &mut RawFdatasync| {
            let started = Instant::now();
            for _ in 0..n {
                raw.write_sync(&record);
            }
            started.elapsed() / n as u32
        };
        // Warm up both (the WAL's first segment, the page cache, the runtime's threads).
        raw_block(&mut raw);
        for (variant, _) in VARIANTS {
            block(variant, &log, &rt, &mut next, n, &payload);
        }
        let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
        let mut raws = Vec::new();
        for round in 0..rounds {
            // Rotate the order each round, so that no variant always follows another.
            for k in 0..VARIANTS.len() {
                let (variant, _) = VARIANTS[(k + round) % VARIANTS.len()];
                let before = raw_block(&mut raw);
                let took = block(variant, &log, &rt, &mut next, n, &payload);
                let after = raw_block(&mut raw);
                let baseline = (before + after).as_secs_f64() / 2.0;
                ratios[(k + round) % VARIANTS.len()].push(took.as_secs_f64() / baseline);
                raws.push(baseline);
            }
        }
        println!(
            "fsync_pair/{size}B: raw pwrite+fdatasync median {:.1} us over {} blocks of {n}",
            median(raws.clone()) * 1e6,
            raws.len()
        );
        for ((_, name), r) in VARIANTS.iter().zip(ratios) {
            let (lo, hi) = {
                let mut s = r.clone();
                s.sort_by(f64::total_cmp);
                (s[s.len() / 4], s[s.len() * 3 / 4])
            };
            println!("fsync_pair/{size}B/{name}: median {:.2}x raw (quartiles {lo:.2}x-{hi:.2}x)", median(r));
        }
    }
}
