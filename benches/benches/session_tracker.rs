//! What the leader's session tracker costs per expiry round and per touch, with `n` sessions tracked: every
//! touch (each client's ping, on any server) and every round (each half tick) takes the tracker's lock, so a
//! round's length is how long touches wait.
//!
//! - `session_tracker/round/<n>`: an expiry round in which nothing is due (the common case), `n` sessions
//!   tracked.
//! - `session_tracker/touch/<n>`: one touch, a tick after the session's last, `n` sessions tracked.
//! - `session_tracker/scan/<n>` (the baseline, measured in the same run): a `retain` over a bare
//!   `HashMap<i64, Instant>` of `n` deadlines, which is what a round cost when the tracker scanned every session.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use node::tracker::Tracker;

/// The server's allocator (`node/src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [i64; 2] = [1_000, 100_000];
/// ZooKeeper's default tick and the expiry round's interval (`node::leader`), and a 30 s session timeout.
const TICK: Duration = Duration::from_millis(2000);
const TIMEOUT_MS: i32 = 30_000;

fn tracker(c: &mut Criterion) {
    let mut group = c.benchmark_group("session_tracker");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for n in SIZES {
        let t0 = Instant::now();
        let tracker = Tracker::default();
        // Sessions spread over the timeout, as clients that connected at different times are.
        tracker.start((0..n).map(|s| (s, TIMEOUT_MS - (s % 15_000) as i32)), t0, TICK / 2);
        group.bench_function(BenchmarkId::new("round", n), |b| {
            b.iter(|| assert!(tracker.expire(t0).is_empty(), "nothing is due"));
        });
        let mut at = t0;
        let mut session = 0;
        group.bench_function(BenchmarkId::new("touch", n), |b| {
            b.iter(|| {
                session = (session + 1) % n;
                at += TICK;
                tracker.touch(&[session], at);
            });
        });
        assert_eq!(tracker.len(), n as usize, "touches keep every session");

        let mut scanned: HashMap<i64, Instant> = (0..n).map(|s| (s, t0 + TICK * 10)).collect();
        group.bench_function(BenchmarkId::new("scan", n), |b| {
            b.iter(|| scanned.retain(|_, deadline| *deadline > t0));
        });
    }
    group.finish();
}

criterion_group!(benches, tracker);
criterion_main!(benches);
