//! One nemesis run: a cluster of real server processes, each in its network namespace, clients recording a
//! history, the seeded faults injected one after the other, then the checks. [`run`] panics with the anomalies
//! (and prints the history's end and writes it whole to a file) if any check fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::availability::{self, Window};
use super::checker;
use super::final_state;
use super::history::{secs, History, MinorityWindow, Op, Outcome, Recorder, SessionFate};
use super::netns::{self, Network};
use super::schedule::{self, Actions, Fault, Step};
use super::workload::{self, Held, Identity};
use crate::cluster::{Cluster, Netns, Options};
use crate::fourlw::Mode;
use crate::{blocking, connect};

/// What one run does.
#[derive(Clone, Debug)]
pub struct Config {
    /// Nodes in the cluster (3 or 5).
    pub nodes: usize,
    /// Seeds the schedule and the clients' choices.
    pub seed: u64,
    /// Faults injected, one after the other.
    pub steps: usize,
    /// Unique among the runs going on at once in this process (names the namespaces and subnet).
    pub tag: u8,
}

/// Registers the register clients write.
const REGISTERS: usize = 3;
/// The clients' session timeout: shorter than every fault, so that pinned sessions expire during one.
const SESSION_TIMEOUT: Duration = Duration::from_secs(2);
/// Faults last this long (longer than the session timeout and than syncLimit, 5 ticks of 200 ms).
const DURATIONS: (Duration, Duration) = (Duration::from_millis(2_500), Duration::from_millis(5_000));
/// After healing, the cluster must acknowledge a write within this.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long availability is measured after healing.
const AFTER: Duration = Duration::from_secs(4);

/// The cluster and its network, dropped in this order (the processes die before their namespaces go).
struct Rig {
    cluster: Cluster,
    network: Mutex<Network>,
}

/// What a run measured, for the availability table.
pub struct Report {
    /// One row per step.
    pub rows: Vec<availability::Row>,
    /// Operations recorded.
    pub operations: usize,
}

/// Runs `config` to the end; panics naming every anomaly.
pub async fn run(config: &Config) -> Report {
    eprintln!(
        "nemesis: {} nodes, seed {} ({} steps); replay with ENSEMBLE_NEMESIS_SEED={}",
        config.nodes, config.seed, config.steps, config.seed
    );
    let rig = blocking(|| start(config));
    let rec = Recorder::new();
    let guard = HistoryOnPanic { rec: rec.clone(), seed: config.seed, tag: config.tag };
    workload::setup(&connect(&rig.cluster.connect_string()).await, REGISTERS).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (writers, ephemerals) = spawn_clients(&rig.cluster, config.seed, &rec, &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut windows = Vec::new();
    let mut minority_windows = Vec::new();
    for step in schedule::schedule(config.seed, config.steps, DURATIONS) {
        let (window, minority) = inject(&rig, &rec, &step).await;
        eprintln!("nemesis: {} (healed at {:.3}s)", window.label, secs(window.heal));
        windows.push(window);
        minority_windows.extend(minority);
    }
    stop.store(true, Ordering::SeqCst);
    let (sessions, held) = join_clients(writers, ephemerals).await;
    blocking(|| rig.cluster.wait_serving());
    let mut history = History { events: rec.events(), registers: REGISTERS, minority_windows, ..History::default() };
    history.sessions = sessions;
    for held in &held {
        history.sessions.extend(workload::fate_at_end(held).await);
    }
    history.servers = final_state::collect(&rig.cluster, REGISTERS, &history.sessions).await;
    // A session seen alive before the servers were read may have expired while they were (a stall of a couple
    // of seconds outlasts these 2 s sessions): its ephemeral may be gone or not, so the run claims nothing of it.
    for held in &held {
        let now = workload::fate_at_end(held).await;
        let before = history.sessions.iter().position(|f| f.session == held.session() && !f.expired);
        if let (Some(i), false) = (before, now.is_some_and(|f| !f.expired)) {
            eprintln!(
                "nemesis: session 0x{:x} expired or unknown after the servers were read",
                history.sessions[i].session
            );
            history.sessions.remove(i);
        }
    }
    drop(held);
    let rows = availability::rows(&availability::acks(&history.events), &windows);
    eprintln!("nemesis: availability, {} nodes, seed {}:\n{}", config.nodes, config.seed, availability::table(&rows));
    eprintln!("nemesis: {}", outcomes(&history));
    let mut anomalies = checker::check(&history);
    if matches!(rig.cluster.server(), crate::process::Server::ZooKeeper) {
        // ZooKeeper 3.8's sync is not a quorum barrier: a leader cut off with a minority may answer it with a
        // stale zxid until it notices (see `Kind::StaleSyncedRead`), which Ensemble's barrier rules out.
        anomalies.retain(|a| a.kind != checker::Kind::StaleSyncedRead);
    }
    if !anomalies.is_empty() {
        panic!("seed {}: {} anomalies\n{}", config.seed, anomalies.len(), checker::summary(&anomalies, 3));
    }
    assert_tested(&history, config);
    drop(guard);
    Report { rows, operations: history.events.len() }
}

/// How the operations ended, and how many sessions expired: a run where nothing failed tested little.
/// How each kind of operation ended, `[setData, getData, create]` by `[ok, failed, indeterminate]`, and how many
/// reads after a sync succeeded.
fn tally(history: &History) -> ([[usize; 3]; 3], usize) {
    let (mut counts, mut synced_reads) = ([[0usize; 3]; 3], 0);
    for event in &history.events {
        let (kind, ended) = match &event.op {
            Op::Cas { outcome, .. } => (0, ended(outcome)),
            Op::Read { outcome, synced, .. } => {
                synced_reads += usize::from(*synced && ended(outcome) == 0);
                (1, ended(outcome))
            }
            Op::Create { outcome, .. } => (2, ended(outcome)),
        };
        counts[kind][ended] += 1;
    }
    (counts, synced_reads)
}

fn outcomes(history: &History) -> String {
    let expired = history.sessions.iter().filter(|s| s.expired).count();
    let [cas, read, create] =
        tally(history).0.map(|[ok, failed, unknown]| format!("{ok} ok, {failed} failed, {unknown} indeterminate"));
    format!("setData: {cas}; getData: {read}; create: {create}; ephemeral sessions expired: {expired}")
}

/// Fails a run that could not have found anything: an operation of some kind never succeeded, no read after a
/// sync succeeded, or (with 3 faults or more) no fault reached a client: no operation indeterminate and no
/// pinned session expired.
fn assert_tested(history: &History, config: &Config) {
    let (counts, synced_reads) = tally(history);
    let [[cas, ..], _, [creates, ..]] = counts;
    assert!(
        cas > 0 && synced_reads > 0 && creates > 0,
        "seed {}: setData {cas}, getData after sync {synced_reads}, create {creates} succeeded: the history says little",
        config.seed
    );
    let untested = checker::untested_minorities(history);
    assert!(
        untested.is_empty(),
        "seed {}: no client tried a write through the minority within {:?}: the run did not test it",
        config.seed,
        untested
    );
    let indeterminate: usize = counts.iter().map(|[_, _, unknown]| unknown).sum();
    let expired = history.sessions.iter().filter(|s| s.expired).count();
    assert!(
        config.steps < 3 || indeterminate + expired > 0,
        "seed {}: {} faults, yet no operation was indeterminate and no session expired: no fault reached a client",
        config.seed,
        config.steps
    );
}

fn ended<T>(outcome: &Outcome<T>) -> usize {
    match outcome {
        Outcome::Ok(_) => 0,
        Outcome::Failed(_) => 1,
        Outcome::Indeterminate(_) => 2,
    }
}

fn start(config: &Config) -> Rig {
    netns::remove_stale();
    let network = Network::create(config.tag, config.nodes);
    let netns = Netns {
        namespaces: (0..config.nodes).map(|i| network.namespace(i).to_string()).collect(),
        ips: (0..config.nodes).map(|i| network.ip(i)).collect(),
    };
    // A 200 ms tick, not ZooKeeper's 2 s: a partition or a pause is noticed after syncLimit ticks, and sessions
    // last 2 ticks at least; faults of a few seconds (`DURATIONS`) must outlast both, so that a leader is deposed
    // and pinned sessions expire within one (at 2 s ticks each fault would last over 10 s). Small segments and a
    // snapshot every 1,000 txns (about one a second here): the killed nodes recover from a snapshot and a log, and
    // lagging ones may sync by SNAP. At every 100 txns the servers snapshotted a growing tree back to back on two
    // cores.
    let options = Options {
        nodes: config.nodes,
        tick_ms: 200,
        sync_limit: 5,
        netns: Some(netns),
        snap_count: 1000,
        ..Options::small_files()
    };
    Rig { cluster: Cluster::start_with(options), network: Mutex::new(network) }
}

type Ephemerals = Vec<JoinHandle<(Vec<SessionFate>, Option<Held>)>>;

/// What a client does.
#[derive(Clone, Copy)]
enum Role {
    Register,
    Set,
    Ephemeral,
}

/// Per node: a register, a set and an ephemeral client pinned to it; and two register clients, a set client
/// and an ephemeral client on the whole connect string.
fn spawn_clients(
    cluster: &Cluster,
    seed: u64,
    rec: &Recorder,
    stop: &Arc<AtomicBool>,
) -> (Vec<JoinHandle<()>>, Ephemerals) {
    let mut clients = Vec::new();
    for i in 0..cluster.len() {
        let pinned = |role| (role, cluster.client_addr(i).to_string(), Some(i));
        clients.extend([pinned(Role::Register), pinned(Role::Set), pinned(Role::Ephemeral)]);
    }
    for role in [Role::Register, Role::Register, Role::Set, Role::Ephemeral] {
        clients.push((role, cluster.connect_string(), None));
    }
    let (mut writers, mut ephemerals) = (Vec::new(), Vec::new());
    for (id, (role, connect, pinned)) in clients.into_iter().enumerate() {
        let who = Identity { id, connect, pinned, session_timeout: SESSION_TIMEOUT };
        let (rec, stop) = (rec.clone(), stop.clone());
        let client_seed = seed.wrapping_mul(1000).wrapping_add(u64::try_from(id).expect("fits"));
        match role {
            Role::Register => {
                writers.push(tokio::spawn(workload::register_client(who, REGISTERS, client_seed, rec, stop)))
            }
            Role::Set => writers.push(tokio::spawn(workload::set_client(who, rec, stop))),
            Role::Ephemeral => ephemerals.push(tokio::spawn(workload::ephemeral_client(who, stop))),
        }
    }
    (writers, ephemerals)
}

/// Injects `step` into a healthy cluster, holds it, heals, and waits until a write is acknowledged again.
async fn inject(rig: &Rig, rec: &Recorder, step: &Step) -> (Window, Option<MinorityWindow>) {
    let leader = blocking(|| rig.cluster.leader());
    let n = rig.cluster.len();
    let actions = schedule::resolve(step, n, leader);
    let label = format!("{:?} ({}, {:.1} s)", step.fault, actions, step.duration.as_secs_f64());
    blocking(|| apply(rig, &actions));
    let start = rec.now();
    // A fault of the leader alone leaves a quorum of the others, which elect one of themselves within the fault
    // (it outlasts syncLimit ticks and an election): watched, so that a fault that missed the leader (it moved
    // before the fault, or the rig cut the wrong node) fails the run instead of passing for one.
    let deposes = matches!(step.fault, Fault::IsolateLeader | Fault::PauseLeader | Fault::KillLeader);
    let (until, mut successor) = (tokio::time::Instant::now() + step.duration, None);
    while let Some(left) = until.checked_duration_since(tokio::time::Instant::now()).filter(|d| !d.is_zero()) {
        if deposes && successor.is_none() {
            successor =
                blocking(|| (0..n).filter(|&i| i != leader).find(|&i| rig.cluster.mode(i) == Some(Mode::Leader)));
        }
        tokio::time::sleep(left.min(Duration::from_millis(100))).await;
    }
    let heal = rec.now();
    blocking(|| undo(rig, &actions));
    assert!(
        !deposes || successor.is_some(),
        "{label}: no other node led within the fault: it missed the leader (node {})",
        leader + 1
    );
    let minority = schedule::minority(n, &actions);
    let running =
        minority.iter().copied().filter(|i| !actions.pause.contains(i) && !actions.kill.contains(i)).collect();
    let minority = (!minority.is_empty()).then_some(MinorityWindow { minority, running, from: start, to: heal });
    let deadline = tokio::time::Instant::now() + RECOVERY_TIMEOUT;
    while !availability::acks(&rec.events()).iter().any(|&t| t > heal) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no write acknowledged within {RECOVERY_TIMEOUT:?} of healing {label}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = heal + u64::try_from(AFTER.as_micros()).expect("fits");
    while rec.now() < after {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (Window { label, start, heal, end: rec.now() }, minority)
}

fn apply(rig: &Rig, actions: &Actions) {
    rig.network.lock().unwrap_or_else(|e| e.into_inner()).cut(&actions.cuts);
    for &i in &actions.pause {
        rig.cluster.pause(i);
    }
    for &i in &actions.kill {
        rig.cluster.kill(i);
    }
}

fn undo(rig: &Rig, actions: &Actions) {
    rig.network.lock().unwrap_or_else(|e| e.into_inner()).heal();
    for &i in &actions.pause {
        rig.cluster.resume(i);
    }
    for &i in &actions.kill {
        rig.cluster.start_node(i);
    }
}

/// Waits for every client to stop (each request and connect is bounded, so they do promptly).
async fn join_clients(writers: Vec<JoinHandle<()>>, ephemerals: Ephemerals) -> (Vec<SessionFate>, Vec<Held>) {
    let bound = Duration::from_secs(30);
    for writer in writers {
        tokio::time::timeout(bound, writer).await.expect("a client stops within 30 s").expect("client task");
    }
    let (mut fates, mut held) = (Vec::new(), Vec::new());
    for task in ephemerals {
        let (seen, open) = tokio::time::timeout(bound, task).await.expect("a client stops within 30 s").expect("task");
        fates.extend(seen);
        held.extend(open);
    }
    (fates, held)
}

/// Writes the whole history to a file and prints its end if the run panics, so a failure can be read.
struct HistoryOnPanic {
    rec: Recorder,
    seed: u64,
    tag: u8,
}

impl Drop for HistoryOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut events = self.rec.events();
        events.sort_by_key(|e| e.invoke);
        let text: String = events.iter().map(|e| format!("{e}\n")).collect();
        let file = std::env::temp_dir().join(format!(
            "ensemble-nemesis-{}-{}-seed{}.history",
            std::process::id(),
            self.tag,
            self.seed
        ));
        let saved =
            std::fs::write(&file, &text).map_or_else(|e| format!("not saved: {e}"), |()| file.display().to_string());
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        eprintln!(
            "nemesis: seed {} failed; last {} of {} events (all in {saved}):",
            self.seed,
            tail.len(),
            events.len()
        );
        for line in tail.iter().rev() {
            eprintln!("  {line}");
        }
    }
}
