//! `commit_pipeline/{3,5}`: an in-process ensemble of 3 or 5 servers on loopback TCP, each with its own WAL on
//! the bench disk, committing 100-byte txns from 64 concurrent proposers for 5 seconds. Prints committed txns/s
//! and the p50 / p99 / max latency from propose to commit (at the leader). A custom harness: criterion has no
//! percentiles. `cargo bench -p ensemble-benches --bench commit_pipeline`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ensemble_benches::bench_dir;
use replication::election::ElectionConfig;
use replication::message::ServerId;
use replication::peer::{PeerConfig, Role};
use replication::quorum::Voters;
use replication::runtime::{start, Handle, ServerConfig};
use tokio::net::TcpListener;
use wal::WalOptions;

const PROPOSERS: usize = 64;
const RUN: Duration = Duration::from_secs(5);

async fn ensemble(n: u64, dir: &std::path::Path) -> BTreeMap<u64, Handle> {
    let voters = Voters::new((1..=n).map(ServerId));
    let mut listeners = BTreeMap::new();
    let mut peers = BTreeMap::new();
    for id in 1..=n {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(ServerId(id), l.local_addr().unwrap());
        listeners.insert(id, l);
    }
    let mut servers = BTreeMap::new();
    for (id, listener) in listeners {
        let peer = PeerConfig {
            me: ServerId(id),
            voters: voters.clone(),
            tick: Duration::from_millis(200),
            init_limit: 20,
            sync_limit: 10,
            window: 1024,
            election: ElectionConfig::default(),
        };
        let config = ServerConfig {
            peer,
            listener,
            peers: peers.clone(),
            dir: dir.join(id.to_string()),
            wal: WalOptions::default(),
            snapshots: None,
            transport: Default::default(),
            monitor: std::sync::Arc::new(()),
            quiet_appends_here: true,
        };
        servers.insert(id, start(config).unwrap().0);
    }
    servers
}

async fn leader(servers: &BTreeMap<u64, Handle>) -> Handle {
    loop {
        if let Some(h) = servers.values().find(|h| *h.role.borrow() == (Role::Leading, true)) {
            return h.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn main() {
    // `cargo bench` passes --bench; a filter that names neither size skips this bench.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for n in [3u64, 5] {
        let name = format!("commit_pipeline/{n}");
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let dir = tempfile::tempdir_in(bench_dir()).unwrap();
        rt.block_on(async {
            let servers = ensemble(n, dir.path()).await;
            let leader = leader(&servers).await;
            let latencies = Arc::new(Mutex::new(Vec::new()));
            let deadline = Instant::now() + RUN;
            let tasks: Vec<_> = (0..PROPOSERS)
                .map(|_| {
                    let (leader, latencies) = (leader.clone(), latencies.clone());
                    tokio::spawn(async move {
                        let txn = Bytes::from(vec![0x42; 100]);
                        let mut mine = Vec::new();
                        while Instant::now() < deadline {
                            let started = Instant::now();
                            leader.propose(txn.clone()).await.expect("commit");
                            mine.push(started.elapsed());
                        }
                        latencies.lock().unwrap().extend(mine);
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let mut l = std::mem::take(&mut *latencies.lock().unwrap());
            l.sort();
            let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)];
            println!(
                "{name}: {} txns in {:?}: {:.0} txns/s, commit latency p50 {:?} p99 {:?} max {:?} ({PROPOSERS} proposers, 100 B)",
                l.len(),
                RUN,
                l.len() as f64 / RUN.as_secs_f64(),
                pct(0.5),
                pct(0.99),
                l.last().unwrap()
            );
            for h in servers.values() {
                h.shutdown();
            }
        });
    }
}
