//! The nemesis suite (issue 10): no acknowledged write is lost, and reads and writes keep ZooKeeper's
//! guarantees, while real server processes are partitioned, paused and killed.
//!
//! Each node runs in its own network namespace on a bridge; partitions are blackhole routes between namespaces
//! (isolate the leader, isolate a follower, a majority/minority split, a bridge), pauses are SIGSTOP/SIGCONT
//! longer than the session timeout and syncLimit (of the leader and of followers), kills are SIGKILL and a
//! restart, and two faults combine. The faults come in a seeded order (every fault once per round) while
//! clients pinned to one server and clients on the whole connect string run compare-and-set registers, reads
//! with and without sync, sequential creates and ephemerals. `ensemble_tests::nemesis::checker` then checks
//! the history (see there for the rules) and the servers' state after healing; availability (acknowledged
//! writes per second during and after each fault, time from healing to the first acknowledged write) is
//! printed.
//!
//! Environment: `ENSEMBLE_NEMESIS_SEED=S` replays seed S; `ENSEMBLE_NEMESIS_SEEDS=N` runs N seeds from a random
//! start (a soak: `scripts/nemesis-soak`); `ENSEMBLE_NEMESIS_STEPS=K` injects K faults per seed (default one
//! round of every fault). Without them, one random seed per test, printed for replay. Needs root (`ip netns`).

use ensemble_tests::nemesis::schedule::FAULTS;
use ensemble_tests::nemesis::{run, Config};

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|e| panic!("{name}={v:?}: {e}")))
}

/// The seeds to run: the one to replay, or N from a random start.
fn seeds() -> Vec<u64> {
    if let Some(seed) = env("ENSEMBLE_NEMESIS_SEED") {
        return vec![seed];
    }
    let count = env("ENSEMBLE_NEMESIS_SEEDS").unwrap_or(1);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let start = u64::from(nanos) ^ (u64::from(std::process::id()) << 32);
    (0..count).map(|i| start.wrapping_add(i)).collect()
}

/// The 3- and 5-node runs take turns: eight servers and their clients at once on a 2-core machine can stall long
/// enough (syncLimit is 1 s at the runner's 200 ms tick) to depose a leader no fault touched.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn nemesis(nodes: usize, tag: u8) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let steps = env("ENSEMBLE_NEMESIS_STEPS").map_or(FAULTS.len(), |s| usize::try_from(s).expect("fits"));
    for seed in seeds() {
        let report = run(&Config { nodes, seed, steps, tag }).await;
        eprintln!("nemesis: {nodes} nodes, seed {seed}: {} operations checked, no anomaly", report.operations);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes() {
    nemesis(3, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes() {
    nemesis(5, 5).await;
}
