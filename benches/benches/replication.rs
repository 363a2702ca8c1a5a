//! `follower_ack_path`: a follower's fsync-before-ack path in isolation. Proposals arrive in batches (one
//! network read's worth), go through the follower's broadcast state machine, are appended to the WAL together,
//! group-fsynced, and acknowledged with one cumulative ACK. Next to it, `raw_batch_fdatasync`: one write of the
//! same bytes plus one fdatasync, the most the disk allows for that batch size. Elements/s = txns/s; the time per
//! iteration is the latency from a batch's arrival to its ACK.

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ensemble_benches::{bench_dir, RawFdatasync};
use replication::broadcast::{Command, FollowerBroadcast};
use replication::message::{Message, ServerId};
use wal::{Epoch, Wal, WalOptions, Zxid};

const BATCHES: [usize; 4] = [1, 8, 64, 256];
const TXN: usize = 100;

fn follower_ack_path(c: &mut Criterion) {
    let dir = bench_dir();
    let mut group = c.benchmark_group("follower_ack_path");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for batch in BATCHES {
        group.throughput(Throughput::Elements(batch as u64));
        let mut raw = RawFdatasync::new(&dir, 64 << 20);
        let bytes = vec![0xab; batch * (TXN + wal::record::RECORD_HEADER_LEN)];
        group.bench_function(BenchmarkId::new("raw_batch_fdatasync", batch), |b| b.iter(|| raw.write_sync(&bytes)));
        drop(raw);

        let tmp = tempfile::tempdir_in(&dir).unwrap();
        let (log, _) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        let leader = ServerId(1);
        let mut follower = FollowerBroadcast::new(leader, Zxid::ZERO);
        let mut next = Zxid::new(Epoch(1), 0);
        let txn = Bytes::from(vec![0xcd; TXN]);
        group.bench_function(BenchmarkId::new("follower", batch), |b| {
            b.iter(|| {
                let mut records = Vec::with_capacity(batch);
                for _ in 0..batch {
                    next = next.next_in_epoch().expect("bench stays in one epoch");
                    for command in follower.on_proposal(next, txn.clone()).expect("in order") {
                        if let Command::Append(zxid, txn) = command {
                            records.push((zxid, txn));
                        }
                    }
                }
                let durable = log.append_batch(records).unwrap().wait().unwrap();
                let commands = follower.persisted(durable);
                assert_eq!(commands, vec![Command::Send(leader, Message::Ack { zxid: durable })], "one ack per batch");
            })
        });
        let stats = log.stats();
        eprintln!("    follower: {:.1} txns per fdatasync", stats.records as f64 / stats.batches.max(1) as f64);
    }
    group.finish();
}

criterion_group!(benches, follower_ack_path);
criterion_main!(benches);
