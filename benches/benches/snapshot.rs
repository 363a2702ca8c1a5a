//! Snapshots of 100k and 1M znodes of 100 bytes.
//!
//! - `snapshot_write/<n>` and `snapshot_load/<n>`: nodes/s (criterion's throughput), MB/s printed beside.
//! - `apply_during_snapshot` (printed, not a criterion group: it reports percentiles): the latency of applying
//!   setData txns to a 1M-node tree while a fuzzy snapshot of it is written, next to the same without a
//!   snapshot, in one run, and how many of them took over 20 and over 100 us.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use snapshot::write::SharedTree;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use ensemble_benches::bench_dir;
use tree::code::op;
use tree::tree::DataTree;
use tree::txn::{Txn, TxnHeader};

const SIZES: [usize; 2] = [100_000, 1_000_000];

/// A tree of `n` nodes of 100 bytes, 1000 per directory.
fn build(n: usize) -> DataTree {
    let mut tree = DataTree::new();
    let data = Bytes::from(vec![b'x'; 100]);
    let acl = tree::acl::open_acl_unsafe();
    let mut zxid = 1i64 << 32;
    for i in 0..n {
        if i % 1000 == 0 {
            zxid += 1;
            let txn = Txn::Create {
                path: format!("/b{}", i / 1000),
                data: Some(Bytes::new()),
                acl: acl.clone(),
                ephemeral: false,
                parent_cversion: -1,
            };
            tree.apply(&TxnHeader { client_id: 0, cxid: 0, zxid, time: zxid, op: op::CREATE }, &txn);
        }
        zxid += 1;
        let txn = Txn::Create {
            path: format!("/b{}/n{i}", i / 1000),
            data: Some(data.clone()),
            acl: acl.clone(),
            ephemeral: false,
            parent_cversion: -1,
        };
        tree.apply(&TxnHeader { client_id: 0, cxid: 0, zxid, time: zxid, op: op::CREATE }, &txn);
    }
    tree
}

fn snapshots(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    for n in SIZES {
        let tree = SharedTree::new(build(n));
        let dir = tempfile::tempdir_in(bench_dir()).unwrap();
        group.throughput(Throughput::Elements(n as u64));
        // One snapshot up front, so that the load bench has a file even when a filter skips the write bench.
        let info = snapshot::write::write_fuzzy(dir.path(), &tree, snapshot::write::DEFAULT_CHUNK).unwrap();
        eprintln!("    snapshot of {n} nodes: {:.1} MB", info.bytes as f64 / 1e6);
        group.bench_function(BenchmarkId::new("snapshot_write", n), |b| {
            b.iter(|| snapshot::write::write_fuzzy(dir.path(), &tree, snapshot::write::DEFAULT_CHUNK).unwrap())
        });
        group.bench_function(BenchmarkId::new("snapshot_load", n), |b| {
            b.iter(|| snapshot::read::load(&info.path).unwrap())
        });
    }
    group.finish();
}

/// Latency percentiles of applying setData txns for `window`, with or without a snapshot running.
fn apply_latencies(tree: &Arc<SharedTree>, with_snapshot: bool) -> (Vec<Duration>, Duration) {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let snapshotter = with_snapshot.then(|| {
        let (tree, done, path) = (tree.clone(), done.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            let started = Instant::now();
            snapshot::write::write_fuzzy(&path, &tree, snapshot::write::DEFAULT_CHUNK).unwrap();
            done.store(true, Ordering::Release);
            started.elapsed()
        })
    });
    let window = Duration::from_secs(3);
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut zxid = tree.read().unwrap().last_zxid();
    let data = Bytes::from(vec![b'y'; 100]);
    let mut i = 0usize;
    while if with_snapshot { !done.load(Ordering::Acquire) } else { started.elapsed() < window } {
        zxid += 1;
        i += 1;
        let txn = Txn::SetData {
            path: format!("/b{}/n{}", (i * 7919) % 1000, ((i * 7919) % 1000) * 1000 + i % 1000),
            data: Some(data.clone()),
            version: 1,
        };
        let header = TxnHeader { client_id: 0, cxid: 0, zxid, time: zxid, op: op::SET_DATA };
        let t = Instant::now();
        snapshot::write::lock_for_apply(tree).apply(&header, &txn);
        latencies.push(t.elapsed());
        // A steady stream (about 20k txns/s), not a busy loop that starves the snapshot thread.
        std::thread::sleep(Duration::from_micros(50));
    }
    let snapshot_time = snapshotter.map_or(Duration::ZERO, |s| s.join().unwrap());
    latencies.sort();
    (latencies, snapshot_time)
}

fn report(label: &str, l: &[Duration]) -> (Duration, Duration, Duration) {
    let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)];
    let (p50, p99, max) = (pct(0.50), pct(0.99), *l.last().unwrap());
    // The p99 of a snapshot's 2,000 or so applies is its 20th slowest: how many took long says more.
    let over = |us: u64| l.iter().filter(|&&d| d > Duration::from_micros(us)).count();
    println!(
        "apply_during_snapshot/{label}: {} txns, p50 {:?}, p99 {:?}, max {:?}; {} over 20 us, {} over 100 us",
        l.len(),
        p50,
        p99,
        max,
        over(20),
        over(100)
    );
    (p50, p99, max)
}

fn apply_during_snapshot() {
    println!("apply_during_snapshot: building a tree of 1,000,000 nodes");
    let tree = Arc::new(SharedTree::new(build(1_000_000)));
    let (base, _) = apply_latencies(&tree, false);
    let (during, snap_time) = apply_latencies(&tree, true);
    let (_, base_p99, _) = report("without_snapshot", &base);
    let (_, p99, max) = report("with_snapshot", &during);
    println!(
        "apply_during_snapshot: snapshot took {snap_time:?}; p99 ratio {:.2}x (target <= 2x), max {max:?} (target < 10 ms)",
        p99.as_secs_f64() / base_p99.as_secs_f64()
    );
}

criterion_group!(benches, snapshots);

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.as_deref().is_none_or(|f| "apply_during_snapshot".contains(f)) {
        apply_during_snapshot();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
