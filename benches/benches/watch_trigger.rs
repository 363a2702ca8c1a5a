//! What a write's watch lookups cost on a server that holds watches: every applied create, delete and setData
//! looks its path (and, for a create or delete, its parent's) up in the watch tables, and a close of a session
//! with 200,000 ephemerals does so 400,000 times under the tree's write lock.
//!
//! - `watch_trigger/unwatched/<n>`: a delete's two triggers (`NodeDeleted` on the path, `NodeChildrenChanged` on
//!   its parent) for a path nobody watches, with `n` other paths watched (data and child watches of 100 sessions).
//! - `watch_trigger/watched/<n>`: the same for a path a session watches with a data watch, which fires (the watch
//!   is set again off the clock).
//! - `watch_trigger/map_get/<n>` (the baseline, measured in the same run): two lookups of the same paths in a
//!   bare `HashMap<String, u64>` of `n` entries, the floor of any table keyed by path.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use node::watch::{Change, Kind, Watches};

/// The server's allocator (`node/src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [usize; 2] = [1_000, 100_000];
const PARENT: &str = "/app/locks/ephemeral-parent";

fn watched(i: usize) -> String {
    format!("/app/config/watched-node-{i:08}")
}

fn deleted(i: usize) -> String {
    format!("{PARENT}/ephemeral-node-number-{i:08}")
}

fn watches(n: usize) -> Watches {
    let mut w = Watches::default();
    for i in 0..n {
        let kind = if i % 2 == 0 { Kind::Data } else { Kind::Child };
        w.add((i % 100) as i64 + 1, kind, &watched(i));
    }
    w
}

fn trigger(c: &mut Criterion) {
    let mut group = c.benchmark_group("watch_trigger");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        let mut w = watches(n);
        let counts = w.counts();
        let paths: Vec<String> = (0..10_000).map(deleted).collect();
        let mut fired = Vec::new();
        group.bench_function(BenchmarkId::new("unwatched", n), |b| {
            let mut i = 0;
            b.iter(|| {
                let path = &paths[i % paths.len()];
                i += 1;
                w.trigger(Change::Deleted(path), &mut fired);
                w.trigger(Change::ChildrenChanged(PARENT), &mut fired);
                assert!(fired.is_empty(), "nobody watches these");
            })
        });
        assert_eq!(w.counts(), counts);
        group.bench_function(BenchmarkId::new("watched", n), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for k in 0..iters as usize {
                    let path = &paths[k % paths.len()];
                    w.add(1_000, Kind::Data, path);
                    let start = Instant::now();
                    w.trigger(Change::Deleted(path), &mut fired);
                    w.trigger(Change::ChildrenChanged(PARENT), &mut fired);
                    elapsed += start.elapsed();
                    assert_eq!(fired.len(), 1, "the data watch fires");
                    fired.clear();
                }
                elapsed
            })
        });
        assert_eq!(w.counts(), counts, "every fired watch is gone");
        let map: HashMap<String, u64> = (0..n).map(|i| (watched(i), i as u64)).collect();
        group.bench_function(BenchmarkId::new("map_get", n), |b| {
            let mut i = 0;
            b.iter(|| {
                let path = &paths[i % paths.len()];
                i += 1;
                assert!(!map.contains_key(path.as_str()) && !map.contains_key(PARENT));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, trigger);
criterion_main!(benches);
