//! Applying creates and deletes to a large tree, as every server does for each committed one, and the leader's
//! prep of a create.
//!
//! - `tree_apply/create/<n>`: a create of a 100-byte znode under one parent that already has `n` children,
//!   named as `zkload --op create` names them (four clients' `n<client>-<seq>` under `/zkload-<hex>`), applied
//!   to a tree that holds those `n` nodes.
//! - `tree_apply/delete/<n>`: the delete of one of those creates (made off the clock), back down to `n`.
//! - `tree_apply/prep_create/<n>`: the leader's prep of the next such create (nothing pending).
//! - `tree_apply/close_session/200000`: a session's close deleting its 200,000 ephemerals.
//! - `tree_apply/prep_close_session/200000`: the leader's prep of that close (the txn listing the 200,000 and
//!   their pending deletes).
//! - `tree_apply/map_insert/<n>` (the baseline, measured in the same run): the same paths inserted into a bare
//!   `BTreeMap<String, Box<[u8; 120]>>` of the same size, the floor of any ordered map keyed by path.
//!
//! Each sample deletes the nodes it created once its clock has stopped, so every sample sees `n` children.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tree::code::op;
use tree::pending::Pending;
use tree::prep::{prep, prep_over, Caller, PrepOptions, Request};
use tree::tree::DataTree;
use tree::txn::{Txn, TxnHeader};

/// The server's allocator (`node/src/main.rs`): the apply allocates a node, its path and its name per create.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [usize; 2] = [10_000, 500_000];
const ROOT: &str = "/zkload-5f3a9c21d04e7b68";
const CLIENTS: usize = 4;

/// The `i`th path zkload's create load makes.
fn path(i: usize) -> String {
    format!("{ROOT}/n{}-{}", i % CLIENTS, i / CLIENTS)
}

fn create(path: String, data: &Bytes, ephemeral: bool) -> Txn {
    Txn::Create { path, data: Some(data.clone()), acl: tree::acl::open_acl_unsafe(), ephemeral, parent_cversion: -1 }
}

fn header(zxid: i64) -> TxnHeader {
    TxnHeader { client_id: 1, cxid: 0, zxid, time: zxid, op: op::CREATE }
}

/// A tree with the root's parent and its first `n` children.
fn build(n: usize, data: &Bytes) -> DataTree {
    let mut tree = DataTree::new();
    assert_eq!(tree.apply(&header(1), &create(ROOT.into(), &Bytes::new(), false)).err, None);
    for i in 0..n {
        let applied = tree.apply(&header(2 + i as i64), &create(path(i), data, false));
        assert_eq!(applied.err, None);
    }
    tree
}

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("tree_apply");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    let data = Bytes::from(vec![b'x'; 100]);
    for n in SIZES {
        let (mut tree, mut zxid) = (build(n, &data), 2 + n as i64);
        let nodes = tree.node_count();
        group.bench_function(BenchmarkId::new("create", n), |b| {
            b.iter_custom(|iters| {
                // The txns are decoded before the apply in a server too: made outside the clock.
                let mut txns: Vec<Txn> = (0..iters as usize).map(|k| create(path(n + k), &data, false)).collect();
                let start = Instant::now();
                for txn in &mut txns {
                    zxid += 1;
                    let applied = tree.apply_moving_data(&header(zxid), txn);
                    debug_assert_eq!(applied.err, None);
                }
                let elapsed = start.elapsed();
                assert_eq!(tree.node_count(), nodes + iters as usize);
                // Back to `n` children, off the clock.
                for k in 0..iters as usize {
                    zxid += 1;
                    let applied = tree.apply(&header(zxid), &Txn::Delete { path: path(n + k) });
                    assert_eq!(applied.err, None);
                }
                elapsed
            })
        });
        group.bench_function(BenchmarkId::new("delete", n), |b| {
            b.iter_custom(|iters| {
                for k in 0..iters as usize {
                    zxid += 1;
                    let mut txn = create(path(n + k), &data, false);
                    assert_eq!(tree.apply_moving_data(&header(zxid), &mut txn).err, None);
                }
                let txns: Vec<Txn> = (0..iters as usize).map(|k| Txn::Delete { path: path(n + k) }).collect();
                let start = Instant::now();
                for txn in &txns {
                    zxid += 1;
                    let applied = tree.apply(&header(zxid), txn);
                    debug_assert_eq!(applied.err, None);
                }
                let elapsed = start.elapsed();
                assert_eq!(tree.node_count(), nodes);
                elapsed
            })
        });
        // The leader's side of the same create: prep (checks, ACL fix-up, the txn) against the committed tree.
        let caller = Caller { session: 1, ..Caller::default() };
        let options = PrepOptions { ttl_enabled: false, enforce_quota: true };
        let request = Request::Create {
            op: op::CREATE,
            path: path(n),
            data: Some(data.clone()),
            acl: tree::acl::open_acl_unsafe(),
            flags: 0,
            ttl: -1,
        };
        assert_eq!(prep(&tree, &caller, options, &request).0, op::CREATE);
        group
            .bench_function(BenchmarkId::new("prep_create", n), |b| b.iter(|| prep(&tree, &caller, options, &request)));
        drop(tree);
        let mut map: BTreeMap<String, Box<[u8; 120]>> = (0..n).map(|i| (path(i), Box::new([0; 120]))).collect();
        group.bench_function(BenchmarkId::new("map_insert", n), |b| {
            b.iter_custom(|iters| {
                let keys: Vec<String> = (0..iters as usize).map(|k| path(n + k)).collect();
                let start = Instant::now();
                for key in &keys {
                    map.insert(key.clone(), Box::new([0; 120]));
                }
                let elapsed = start.elapsed();
                for key in &keys {
                    map.remove(key);
                }
                assert_eq!(map.len(), n);
                elapsed
            })
        });
    }
    group.finish();
}

/// `tree_apply/close_session/200000`: the close of a session that owns 200,000 ephemerals under one parent
/// (the hostile-client suite's t52 closes such sessions), its txn naming every one. Building the tree is off the
/// clock.
fn close_session(c: &mut Criterion) {
    const EPHEMERALS: usize = 200_000;
    const SESSION: i64 = 7;
    let mut group = c.benchmark_group("tree_apply");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(EPHEMERALS as u64));
    let data = Bytes::from(vec![b'x'; 100]);
    let mut base = build(0, &data);
    let mut zxid = 2;
    assert_eq!(base.apply(&header(zxid), &Txn::CreateSession { timeout: 30_000 }).err, None);
    for i in 0..EPHEMERALS {
        zxid += 1;
        let header = TxnHeader { client_id: SESSION, ..header(zxid) };
        assert_eq!(base.apply(&header, &create(path(i), &data, true)).err, None);
    }
    let caller = Caller { session: SESSION, ..Caller::default() };
    let options = PrepOptions { ttl_enabled: false, enforce_quota: true };
    let pending = Pending::new();
    group.bench_function(BenchmarkId::new("prep_close_session", EPHEMERALS), |b| {
        b.iter(|| {
            let prepared = prep_over(&base, &pending, &caller, options, &Request::CloseSession);
            assert_eq!(prepared.changes.len(), EPHEMERALS + 1);
            prepared
        })
    });
    let close = Txn::CloseSession { paths: (0..EPHEMERALS).map(path).collect() };
    let header = TxnHeader { client_id: SESSION, op: op::CLOSE_SESSION, ..header(zxid + 1) };
    group.bench_function(BenchmarkId::new("close_session", EPHEMERALS), |b| {
        b.iter_batched(
            || base.clone(),
            |mut tree| {
                assert_eq!(tree.apply(&header, &close).deleted.len(), EPHEMERALS);
                tree
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, apply, close_session);
criterion_main!(benches);
