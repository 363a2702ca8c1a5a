//! A deterministic, seeded simulation of whole ensembles running the real runtime
//! (`replication::runtime::start_with_io`: the server's own loop and its `act`, not a model of them) on
//! simulated disks (`wal::fs::SimFs`, which loses power) and a simulated network (`tests/sim/net.rs`), with the
//! node's side (its tree, snapshots, retention, repair at start) as `tests/sim/` does it, all on one tokio
//! current-thread runtime with a paused clock, so that the seed alone decides what happens.
//!
//! Faults, while they strike:
//! - the network delays every message (so links interleave in any order) and loses some, under TCP's link
//!   semantics (FIFO on a connection; a loss, like a duplicate or a reordering TCP could not hide, breaks the
//!   connection, both ends learn of it, it is re-made later); partitions cut a server off;
//! - a process crashes (what it wrote stays: the page cache survives) and restarts;
//! - the power of a minority, of a majority, or of every server at once is cut (each disk keeps what was
//!   fsynced and, by seed, some of the rest, torn), or of one server at a random IO step of what it does next
//!   (between a write and its fsync, a rename and its directory's fsync), or of a follower the moment its ACK
//!   of NEWLEADER reaches its leader (ZOOKEEPER-4646); the WAL runs in its stepped mode, so its writes and
//!   fsyncs happen when the simulation steps the disk and a cut can fall between an append and its durability;
//! - a record of a durable log is found damaged at a restart: the log is cut before it and the server repairs
//!   from its peers (starting empty when its snapshots are ahead of what is left);
//! - servers snapshot and purge their logs behind, so that followers that fall behind need SNAP.
//!
//! Client writes go on throughout. Checks, after every step and at the end (Zab, Junqueira, Reed and Serafini,
//! DSN 2011, section III, the properties of broadcast):
//! - prefix agreement: any two serving servers applied the same txns in the same order, one a prefix of the
//!   other ("total order", "agreement");
//! - durability: every txn a proposer was told committed, or that a serving server applied, is applied by every
//!   server after healing ("integrity": no committed txn lost, across crashes, power cuts and repairs);
//! - no two servers lead the same epoch ("primary order");
//! - liveness: once faults stop, a leader serves and every server catches up within bounded simulated time.
//!
//! A failing seed prints itself; `SIM_SEED=<n>` replays one (`SIM_VERBOSE=1` prints its faults and the servers'
//! logs); `SIM_SEEDS=<n>` runs more, from `SIM_FIRST_SEED` (default 0; `SIM_PROGRESS=1` names each seed as it
//! starts). 1000 seeds (the default) take about 50 s on two cores (the test profile is optimized); the soak is
//! `SIM_SEEDS=20000 cargo test -p replication --test t60_simulation -- --nocapture` (about 17 minutes).

mod sim;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use replication::election::ElectionConfig;
use replication::message::ServerId;
use replication::peer::{PeerConfig, Role};
use replication::quorum::Voters;
use tokio::time::Instant;
use wal::{Epoch, Zxid};

use sim::net::{Net, NetFaults};
use sim::server::SimServer;

/// How long faults strike, in simulated time.
const FAULTS_FOR: Duration = Duration::from_secs(10);
/// How long writes go on after healing.
const WRITES_AFTER_HEALING: Duration = Duration::from_secs(2);
/// The bound on recovery after healing.
const RECOVERY_BOUND: Duration = Duration::from_secs(60);

const FAULTY: NetFaults = NetFaults { loss: 0.003, max_delay: Duration::from_millis(20), cut_after_ack_newleader: 0.2 };
const HEALED: NetFaults = NetFaults { loss: 0.0, max_delay: Duration::from_millis(5), cut_after_ack_newleader: 0.0 };

/// What a run did, for the replay check and the statistics.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    /// Every fault and write outcome, in order, with its simulated time.
    history: Vec<String>,
    /// What every server applied at the end.
    applied: Vec<Zxid>,
    crashes: usize,
    power_cuts: [usize; 3],
    /// Power cuts armed to strike at a random IO step.
    armed_cuts: usize,
    /// Power cuts of a follower the moment its ACK of NEWLEADER arrived.
    ack_cuts: usize,
    repairs: usize,
    /// SNAP syncs started by leaders.
    snaps: usize,
    committed: usize,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    net: Net,
    config: PeerConfig,
    servers: BTreeMap<ServerId, SimServer>,
    /// When each server that is down comes back.
    down_until: BTreeMap<ServerId, Instant>,
    /// Txns a proposer was told committed.
    acked: Arc<Mutex<BTreeSet<Zxid>>>,
    /// Txns a serving server applied.
    committed_ever: BTreeSet<Zxid>,
    leaders: BTreeMap<Epoch, ServerId>,
    start: Instant,
    next_txn: u64,
    outcome: Outcome,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let n = if seed.is_multiple_of(2) { 3 } else { 5 };
        let voters = Voters::new((1..=n).map(ServerId));
        let config = PeerConfig {
            me: ServerId(0),
            voters,
            tick: Duration::from_millis(50),
            init_limit: 10,
            sync_limit: 5,
            window: 16,
            election: ElectionConfig::default(),
        };
        let net = Net::new(seed, FAULTY);
        let mut sim = Sim {
            seed,
            rng: StdRng::seed_from_u64(seed),
            net,
            config,
            servers: (1..=n).map(|id| (ServerId(id), SimServer::new(ServerId(id)))).collect(),
            down_until: BTreeMap::new(),
            acked: Default::default(),
            committed_ever: BTreeSet::new(),
            leaders: BTreeMap::new(),
            start: Instant::now(),
            next_txn: 0,
            outcome: Outcome::default(),
        };
        let ids: Vec<ServerId> = sim.servers.keys().copied().collect();
        for id in ids {
            sim.boot(id);
        }
        sim
    }

    fn log(&mut self, what: String) {
        let ms = self.start.elapsed().as_millis();
        if std::env::var_os("SIM_VERBOSE").is_some() {
            eprintln!("{ms} {what}");
        }
        self.outcome.history.push(format!("{ms} {what}"));
    }

    fn boot(&mut self, id: ServerId) {
        let peer = PeerConfig { me: id, ..self.config.clone() };
        self.servers.get_mut(&id).unwrap().start(&self.net, peer);
        self.down_until.remove(&id);
    }

    /// Crashes `ids` (`power`: their power is cut, each disk resolved by its own seed), down for a while.
    async fn crash(&mut self, ids: Vec<ServerId>, power: bool) {
        for id in ids {
            if !self.servers[&id].is_up() {
                continue;
            }
            let cut = power.then(|| self.rng.gen());
            self.servers.get_mut(&id).unwrap().crash(&self.net, cut).await;
            let down = Duration::from_millis(self.rng.gen_range(10..1500));
            self.down_until.insert(id, Instant::now() + down);
            self.log(format!("{} {id:?} for {down:?}", if power { "power cut" } else { "crash" }));
        }
    }

    fn ids(&self) -> Vec<ServerId> {
        self.servers.keys().copied().collect()
    }

    /// `k` servers chosen at random.
    fn some(&mut self, k: usize) -> Vec<ServerId> {
        let mut ids = self.ids();
        let mut chosen = Vec::new();
        while chosen.len() < k && !ids.is_empty() {
            chosen.push(ids.remove(self.rng.gen_range(0..ids.len())));
        }
        chosen
    }

    async fn fault(&mut self) {
        let n = self.servers.len();
        match self.rng.gen_range(0..1000) {
            0..=4 => {
                let ids = self.some(1);
                self.outcome.crashes += 1;
                self.crash(ids, false).await;
            }
            5..=7 => {
                let k = self.rng.gen_range(1..=(n - 1) / 2);
                let ids = self.some(k);
                self.outcome.power_cuts[0] += 1;
                self.crash(ids.clone(), true).await;
                // Sometimes a record of a durable log is found damaged at the restart. A minority at most
                // repairs at once: with more, no quorum could safely elect a leader.
                let repairing = self.servers.values().filter(|s| s.repairing()).count();
                if (repairing + 1) * 2 < n && self.rng.gen_bool(0.3) {
                    let id = ids[0];
                    if let Some(zxid) = self.servers.get_mut(&id).unwrap().damage(&mut self.rng) {
                        self.log(format!("{id:?}: the record of {zxid} is damaged"));
                    }
                }
            }
            8 => {
                let k = self.rng.gen_range(n / 2 + 1..n);
                let ids = self.some(k);
                self.outcome.power_cuts[1] += 1;
                self.crash(ids, true).await;
            }
            9 => {
                let ids = self.ids();
                self.outcome.power_cuts[2] += 1;
                self.crash(ids, true).await;
            }
            10..=12 => {
                // The power of one server goes off at a random IO step of what it does next.
                let id = self.some(1)[0];
                if self.servers[&id].is_up() {
                    let (steps, seed) = (self.rng.gen_range(1..40), self.rng.gen());
                    self.servers[&id].arm_power_cut(steps, seed);
                    self.outcome.armed_cuts += 1;
                    self.log(format!("{id:?} loses power after {steps} IO steps"));
                }
            }
            13..=17 => {
                let id = self.some(1)[0];
                if self.net.isolated().contains(&id) {
                    self.net.heal();
                    self.log("partition healed".into());
                } else {
                    self.net.isolate(id);
                    self.log(format!("{id:?} cut off"));
                }
            }
            _ => {}
        }
    }

    /// Proposes a txn to the leader that serves, if any; its outcome is recorded when it comes.
    async fn propose(&mut self) {
        let leader = self.servers.values().find(|s| s.role() == (Role::Leading, true));
        let Some(handle) = leader.and_then(|s| s.handle()).cloned() else { return };
        self.next_txn += 1;
        let txn = sim::machine::txn(self.next_txn);
        let Ok(outcome) = handle.submit(txn).await else { return };
        let acked = self.acked.clone();
        tokio::spawn(async move {
            if let Ok(Ok(zxid)) = outcome.await {
                acked.lock().unwrap().insert(zxid);
            }
        });
    }

    fn restart_due(&mut self) {
        let now = Instant::now();
        let due: Vec<ServerId> = self.down_until.iter().filter(|(_, &at)| at <= now).map(|(&id, _)| id).collect();
        for id in due {
            self.log(format!("{id:?} restarts"));
            self.boot(id);
        }
    }

    /// The checks that hold at every moment.
    fn check(&mut self) {
        let seed = self.seed;
        let mut serving: Vec<(ServerId, Vec<Zxid>)> = Vec::new();
        for (&id, server) in &self.servers {
            let state = server.applied.lock().unwrap();
            if let Some(violation) = &state.violation {
                panic!("seed {seed}: {id:?}: {violation}");
            }
            match server.role() {
                (Role::Leading, true) => {
                    // A leader whose power went off is taken down at the next step.
                    let Some(epoch) = server.current_epoch() else { continue };
                    let previous = *self.leaders.entry(epoch).or_insert(id);
                    assert_eq!(previous, id, "seed {seed}: two leaders in epoch {epoch}: {previous:?} and {id:?}");
                }
                (_, false) => continue,
                _ => {}
            }
            serving.push((id, state.zxids.clone()));
        }
        for (a, la) in &serving {
            self.committed_ever.extend(la.iter().copied());
            for (b, lb) in &serving {
                let n = la.len().min(lb.len());
                assert_eq!(&la[..n], &lb[..n], "seed {seed}: {a:?} and {b:?} applied different txns");
            }
        }
    }

    /// Steps the disks (each server's log writes and fsyncs what it has queued, or not yet), and takes down
    /// the servers whose power went off.
    async fn disks(&mut self) {
        for id in self.ids() {
            if self.rng.gen_bool(0.5) {
                self.servers[&id].step_disk();
            }
            if self.servers[&id].lost_power() {
                self.crash(vec![id], true).await;
            }
        }
    }

    async fn step(&mut self, faults: bool, writes: bool) {
        let pause = Duration::from_millis(self.rng.gen_range(1..=10));
        tokio::time::sleep(pause).await;
        self.disks().await;
        self.restart_due();
        self.check();
        if writes && self.rng.gen_bool(0.5) {
            self.propose().await;
        }
        if self.rng.gen_bool(0.03) {
            // Retention on a server that serves (one that only replayed its log may hold uncommitted txns).
            let id = self.some(1)[0];
            if self.servers[&id].role().1 {
                self.servers[&id].snapshot();
                self.log(format!("{id:?} snapshots"));
            }
        }
        if faults {
            self.fault().await;
        }
    }

    /// Everyone up, serving, caught up, with nothing in flight.
    fn settled(&self) -> bool {
        let mut applied = BTreeSet::new();
        for server in self.servers.values() {
            if !server.role().1 {
                return false;
            }
            applied.insert(server.applied.lock().unwrap().zxids.clone());
        }
        applied.len() == 1 && self.net.quiet()
    }

    fn report(&self) -> String {
        let mut lines = Vec::new();
        for (id, server) in &self.servers {
            let applied = server.applied.lock().unwrap();
            lines.push(format!(
                "{id:?}: up {} role {:?} applied {} (last {:?})",
                server.is_up(),
                server.role(),
                applied.zxids.len(),
                applied.zxids.last()
            ));
        }
        lines.join("\n")
    }
}

async fn simulate(seed: u64) -> Outcome {
    let mut sim = Sim::new(seed);
    while sim.start.elapsed() < FAULTS_FOR {
        sim.step(true, true).await;
    }
    // Heal: everyone back, no partition, no loss.
    sim.net.heal();
    sim.net.set_faults(HEALED);
    for id in sim.ids() {
        if !sim.servers[&id].is_up() {
            sim.boot(id);
        }
    }
    sim.log("healed".into());
    let healed = Instant::now();
    while healed.elapsed() < WRITES_AFTER_HEALING {
        sim.step(false, true).await;
    }
    while !sim.settled() {
        assert!(
            healed.elapsed() < RECOVERY_BOUND,
            "seed {seed}: no stable, caught-up ensemble {:?} after healing\n{}",
            healed.elapsed(),
            sim.report()
        );
        sim.step(false, false).await;
    }
    // Let the proposers hear of their last commits.
    tokio::time::sleep(Duration::from_millis(100)).await;
    sim.check();
    let finals = sim.servers.values().next().unwrap().applied.lock().unwrap().zxids.clone();
    let kept: BTreeSet<Zxid> = finals.iter().copied().collect();
    let acked = sim.acked.lock().unwrap().clone();
    let lost: Vec<&Zxid> = sim.committed_ever.union(&acked).filter(|z| !kept.contains(z)).collect();
    assert!(lost.is_empty(), "seed {seed}: committed txns lost: {lost:?}\n{}", sim.report());
    sim.outcome.repairs = sim.servers.values().map(|s| s.repairs).sum();
    sim.outcome.snaps = sim.servers.values().map(|s| s.syncs.snap.load(std::sync::atomic::Ordering::Relaxed)).sum();
    sim.outcome.committed = finals.len();
    sim.outcome.applied = finals;
    let mut outcome = std::mem::take(&mut sim.outcome);
    outcome.history.push(format!("messages {}", sim.net.delivered()));
    outcome.ack_cuts = usize::try_from(sim.net.ack_cuts()).unwrap();
    outcome
}

/// Seeds that fail for a bug found and not fixed yet, each with a test of its own (ignored until it passes) so
/// that the default run stays a gate for everything else. `SIM_SEED=<n>` still runs them. None at present.
const KNOWN_FAILURES: &[u64] = &[];

/// Seed 183 found a liveness bug: two of five servers never rejoined an established ensemble. Two followers had
/// settled on the leader from its LEADING answer of a round it had left (it took them up once re-elected in the
/// next round), so they answered looking servers with another round, zxid and epoch than the leader did, and a
/// late joiner waited for a quorum reporting the same vote and round for ever. Settled servers now answer with
/// the epoch their leader established and agree on the leader and that epoch alone (ZOOKEEPER-1732; see
/// `replication::election`).
#[test]
fn seed_183_late_joiners_rejoin_an_established_ensemble() {
    run(183);
}

/// Runs one seed on a fresh paused runtime.
fn run(seed: u64) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    runtime.block_on(simulate(seed))
}

#[test]
fn simulated_ensembles_on_the_real_runtime_agree_keep_every_commit_and_recover() {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        if std::env::var_os("SIM_VERBOSE").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(std::env::var("SIM_LOG").unwrap_or("info,wal=warn".into()))
                .with_test_writer()
                .try_init();
        }
        let outcome = run(seed);
        eprintln!("seed {seed}: {} txns committed\n{}", outcome.committed, outcome.history.join("\n"));
        return;
    }
    let seeds: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let first: u64 = std::env::var("SIM_FIRST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut total = Outcome::default();
    let mut failed = Vec::new();
    let skipped: Vec<u64> = (first..first + seeds).filter(|s| KNOWN_FAILURES.contains(s)).collect();
    for seed in (first..first + seeds).filter(|s| !KNOWN_FAILURES.contains(s)) {
        if std::env::var_os("SIM_PROGRESS").is_some() {
            eprintln!("seed {seed}");
        }
        let outcome = match std::panic::catch_unwind(|| run(seed)) {
            Ok(outcome) => outcome,
            Err(e) => {
                let message =
                    e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                eprintln!("seed {seed} failed (replay with SIM_SEED={seed}): {}", message.unwrap_or_default());
                failed.push(seed);
                continue;
            }
        };
        total.crashes += outcome.crashes;
        for i in 0..3 {
            total.power_cuts[i] += outcome.power_cuts[i];
        }
        total.repairs += outcome.repairs;
        total.armed_cuts += outcome.armed_cuts;
        total.snaps += outcome.snaps;
        total.ack_cuts += outcome.ack_cuts;
        total.committed += outcome.committed;
    }
    eprintln!(
        "{} seeds: {} txns committed, {} crashes, power cuts of a minority {}, a majority {}, all {}, at an IO step {}, after an ACK of NEWLEADER {}, {} damaged logs repaired, {} SNAP syncs",
        usize::try_from(seeds).unwrap() - skipped.len(), total.committed, total.crashes, total.power_cuts[0], total.power_cuts[1], total.power_cuts[2], total.armed_cuts, total.ack_cuts, total.repairs, total.snaps
    );
    if !skipped.is_empty() {
        eprintln!("skipped known failures (see KNOWN_FAILURES): {skipped:?}");
    }
    assert!(failed.is_empty(), "seeds failed (each printed above; replay with SIM_SEED=<n>): {failed:?}");
    let seeds = usize::try_from(seeds).unwrap();
    assert!(total.committed >= seeds * 10, "hardly anything committed: {}", total.committed);
    assert!(total.snaps >= seeds / 20, "SNAP sync is hardly exercised: {} in {seeds} seeds", total.snaps);
    assert!(total.repairs >= seeds / 10, "repair is hardly exercised: {} in {seeds} seeds", total.repairs);
    assert!(total.ack_cuts >= seeds / 10, "cuts after an ACK of NEWLEADER are rare: {}", total.ack_cuts);
}

/// The same seed twice gives the same history, write for write and fault for fault: a failing seed replays.
#[test]
fn a_seed_replays_exactly() {
    for seed in [1, 2] {
        assert_eq!(run(seed), run(seed), "seed {seed} did not replay");
    }
}
