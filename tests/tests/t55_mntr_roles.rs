//! `mntr`, `srvr` and `stat` on each role — leader, follower, observer, standalone — print the keys Apache
//! ZooKeeper 3.8 prints in that role, and values that mean what ZooKeeper's mean: the ones operators alert on
//! (learners, synced followers and observers, pending syncs, outstanding requests, latencies).
//!
//! ZooKeeper 3.8's `mntr` also prints hundreds of keys from its metrics system (latency summaries per request
//! type, queue sizes, ...) that Ensemble has no counterpart for; these tests pin the keys of `MonitorCommand`'s
//! core (`ZooKeeperServer.dumpMonitorValues` and `registerMetrics`, `QuorumZooKeeperServer`,
//! `LeaderZooKeeperServer.registerMetrics`, `ObserverZooKeeperServer.dumpMonitorValues`) and that the keys of
//! one role appear in no other. Run against ZooKeeper with `ENSEMBLE_TESTS_SERVER=zookeeper` to check the
//! expectations themselves.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use ensemble_tests::client::PERSISTENT;
use ensemble_tests::{blocking, connect, eventually, Cluster, Options};

/// Every role prints these.
const CORE: [&str; 18] = [
    "zk_version",
    "zk_server_state",
    "zk_avg_latency",
    "zk_max_latency",
    "zk_min_latency",
    "zk_packets_received",
    "zk_packets_sent",
    "zk_num_alive_connections",
    "zk_outstanding_requests",
    "zk_uptime",
    "zk_znode_count",
    "zk_watch_count",
    "zk_ephemerals_count",
    "zk_approximate_data_size",
    "zk_global_sessions",
    "zk_local_sessions",
    "zk_open_file_descriptor_count",
    "zk_max_file_descriptor_count",
];

/// A member of a quorum (leader, follower, observer) prints these; a standalone server does not.
const QUORUM: [&str; 2] = ["zk_peer_state", "zk_quorum_size"];

/// Only a leader prints these.
const LEADER: [&str; 9] = [
    "zk_learners",
    "zk_synced_followers",
    "zk_synced_non_voting_followers",
    "zk_synced_observers",
    "zk_pending_syncs",
    "zk_leader_uptime",
    "zk_last_proposal_size",
    "zk_max_proposal_size",
    "zk_min_proposal_size",
];

/// Only an observer prints this.
const OBSERVER: [&str; 1] = ["zk_observer_master_id"];

/// How long a leader may take to count a learner as synced, or to drop a dead one.
const SETTLE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Leader,
    Follower,
    Observer,
    Standalone,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Observer => "observer",
            Role::Standalone => "standalone",
        }
    }
}

/// `mntr` of node `i` as a map; every line must be `zk_<key>\t<value>`, each key once.
fn mntr(cluster: &Cluster, i: usize) -> BTreeMap<String, String> {
    let text = cluster.four_letter(i, "mntr");
    let mut keys = BTreeMap::new();
    for line in text.lines() {
        let (key, value) = line.split_once('\t').unwrap_or_else(|| panic!("not key<TAB>value: {line:?} in\n{text}"));
        assert!(key.starts_with("zk_"), "{line:?} in\n{text}");
        assert!(keys.insert(key.to_owned(), value.to_owned()).is_none(), "{key} twice in\n{text}");
    }
    keys
}

/// A numeric `mntr` value.
fn num(keys: &BTreeMap<String, String>, key: &str) -> f64 {
    let value = keys.get(key).unwrap_or_else(|| panic!("no {key} in {keys:?}"));
    value.parse().unwrap_or_else(|_| panic!("{key} is not a number: {value:?}"))
}

/// `mntr` of node `i` once `ready` holds of it, polling until [`SETTLE`]; a timeout prints the last answer.
async fn mntr_when(
    cluster: &Cluster,
    i: usize,
    what: &str,
    ready: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    struct ShowOnPanic(Mutex<BTreeMap<String, String>>);
    impl Drop for ShowOnPanic {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("the last mntr: {:?}", self.0.lock().unwrap_or_else(|e| e.into_inner()));
            }
        }
    }
    let last = ShowOnPanic(Mutex::new(BTreeMap::new()));
    eventually(&format!("node {} {what}", i + 1), SETTLE, || {
        let keys = blocking(|| mntr(cluster, i));
        let found = ready(&keys).then(|| keys.clone());
        *last.0.lock().unwrap() = keys;
        async move { found }
    })
    .await
}

/// The keys node `i` prints are those of `role`: the core, the quorum keys unless standalone, the leader's keys
/// only on the leader, the observer's only on an observer. Values that mean the same in every role are checked
/// too: the state, the quorum size, latencies, connections, and no request outstanding at rest.
async fn check_role(cluster: &Cluster, i: usize, role: Role, voters: usize) -> BTreeMap<String, String> {
    let keys = mntr_when(cluster, i, "has no request outstanding", |k| num(k, "zk_outstanding_requests") == 0.0).await;
    let has = |key: &str| keys.contains_key(key);
    for key in CORE {
        assert!(has(key), "{role:?} lacks {key}: {keys:?}");
    }
    for (set, present) in [
        (&QUORUM[..], role != Role::Standalone),
        (&LEADER[..], role == Role::Leader),
        (&OBSERVER[..], role == Role::Observer),
    ] {
        for key in set {
            assert_eq!(has(key), present, "{key} on a {role:?}: {keys:?}");
        }
    }
    assert_eq!(keys["zk_server_state"], role.name());
    let (min, avg, max) = (num(&keys, "zk_min_latency"), num(&keys, "zk_avg_latency"), num(&keys, "zk_max_latency"));
    assert!(0.0 <= min && min <= avg && avg <= max, "latency min/avg/max {min}/{avg}/{max}");
    // The connection asking counts, as ZooKeeper counts it.
    assert!(num(&keys, "zk_num_alive_connections") >= 1.0, "{keys:?}");
    assert!(num(&keys, "zk_open_file_descriptor_count") <= num(&keys, "zk_max_file_descriptor_count"));
    if role != Role::Standalone {
        let phase = match role {
            Role::Leader => "leading",
            Role::Follower => "following",
            _ => "observing",
        };
        assert_eq!(keys["zk_peer_state"], format!("{phase} - broadcast"));
        assert_eq!(num(&keys, "zk_quorum_size"), voters as f64, "voters only: observers do not count");
    }
    blocking(|| check_srvr_and_stat(cluster, i, role));
    keys
}

/// `srvr` and `stat` say the mode, a latency line with min <= avg <= max, no request outstanding, the
/// proposal sizes on a leader only, and `stat` lists as many clients as `Connections:` counts, the asker
/// among them.
fn check_srvr_and_stat(cluster: &Cluster, i: usize, role: Role) {
    for word in ["srvr", "stat"] {
        // At rest, but a client's ping may be in flight for a moment.
        let mut text = cluster.four_letter(i, word);
        for _ in 0..20 {
            if text.contains("\nOutstanding: 0\n") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            text = cluster.four_letter(i, word);
        }
        let line = |prefix: &str| -> &str {
            let found = text.lines().find_map(|l| l.strip_prefix(prefix));
            found.unwrap_or_else(|| panic!("no {prefix:?} in {word}:\n{text}")).trim()
        };
        assert_eq!(line("Mode:"), role.name(), "{text}");
        let latency: Vec<f64> = line("Latency min/avg/max:").split('/').map(|v| v.parse().unwrap()).collect();
        assert!(latency.len() == 3 && latency[0] <= latency[1] && latency[1] <= latency[2], "{text}");
        assert_eq!(line("Outstanding:"), "0", "{text}");
        assert_eq!(text.contains("Proposal sizes last/min/max:"), role == Role::Leader, "{text}");
        if word == "stat" {
            let connections: usize = line("Connections:").parse().unwrap();
            let clients = text.lines().skip_while(|l| *l != "Clients:").skip(1).take_while(|l| !l.is_empty());
            let clients: Vec<&str> = clients.collect();
            assert_eq!(clients.len(), connections, "{text}");
            assert!(clients.iter().any(|c| c.ends_with("[0](queued=0,recved=1,sent=0)")), "the asker: {text}");
        }
    }
}

/// Waits until the cluster's leader counts `learners` learners, `followers` synced followers and `observers`
/// synced observers; returns its `mntr`.
async fn leader_counts(
    cluster: &Cluster,
    leader: usize,
    learners: f64,
    followers: f64,
    observers: f64,
) -> BTreeMap<String, String> {
    let what = format!("counts {learners} learners, {followers} synced followers and {observers} synced observers");
    mntr_when(cluster, leader, &what, |k| {
        k.get("zk_learners").is_some()
            && (num(k, "zk_learners"), num(k, "zk_synced_followers"), num(k, "zk_synced_observers"))
                == (learners, followers, observers)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_counts_its_synced_followers_and_drops_a_dead_one() {
    let cluster = blocking(|| Cluster::start_with(Options { nodes: 3, ..whitelisted() }));
    let leader = blocking(|| cluster.leader());
    let keys = leader_counts(&cluster, leader, 2.0, 2.0, 0.0).await;
    assert_eq!(num(&keys, "zk_synced_non_voting_followers"), 0.0);
    assert_eq!(num(&keys, "zk_pending_syncs"), 0.0);

    // A client on the leader writes: a proposal of some bytes, and two connections (it and the asker).
    let client = connect(&cluster.client_addr(leader).to_string()).await;
    client.create("/t55", &[7; 100], PERSISTENT).await.unwrap();
    client.sync("/t55").await.unwrap();
    let keys =
        mntr_when(&cluster, leader, "counts the client and the asker", |k| num(k, "zk_num_alive_connections") == 2.0)
            .await;
    let (last, min, max) =
        (num(&keys, "zk_last_proposal_size"), num(&keys, "zk_min_proposal_size"), num(&keys, "zk_max_proposal_size"));
    assert!(last >= 100.0 && 0.0 < min && min <= last && last <= max, "proposal sizes {last}/{min}/{max}");
    assert!(num(&keys, "zk_leader_uptime") > 0.0, "{keys:?}");
    assert!(num(&keys, "zk_leader_uptime") <= num(&keys, "zk_uptime"), "{keys:?}");
    assert_eq!(num(&keys, "zk_global_sessions"), 1.0, "{keys:?}");
    assert!(num(&keys, "zk_znode_count") >= 2.0, "{keys:?}");

    check_role(&cluster, leader, Role::Leader, 3).await;
    let followers = blocking(|| cluster.followers());
    assert_eq!(followers.len(), 2);
    for &f in &followers {
        check_role(&cluster, f, Role::Follower, 3).await;
    }

    blocking(|| cluster.kill(followers[0]));
    let keys = leader_counts(&cluster, leader, 1.0, 1.0, 0.0).await;
    assert_eq!(keys["zk_server_state"], "leader", "two of three voters still make a quorum");
    check_role(&cluster, leader, Role::Leader, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_observer_each_role_prints_its_own_keys() {
    let options = Options { nodes: 4, observers: 1, ..whitelisted() };
    let cluster = blocking(move || Cluster::start_with(options));
    let (leader, observer) = (blocking(|| cluster.leader()), 3);
    let keys = leader_counts(&cluster, leader, 3.0, 2.0, 1.0).await;
    assert_eq!(num(&keys, "zk_synced_non_voting_followers"), 0.0, "an observer is not a non-voting follower");
    check_role(&cluster, leader, Role::Leader, 3).await;
    for f in blocking(|| cluster.followers()) {
        check_role(&cluster, f, Role::Follower, 3).await;
    }
    let keys = check_role(&cluster, observer, Role::Observer, 3).await;
    assert_eq!(num(&keys, "zk_observer_master_id"), (leader + 1) as f64, "the observer follows the leader");

    blocking(|| cluster.kill(observer));
    leader_counts(&cluster, leader, 2.0, 2.0, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_server_prints_no_quorum_keys() {
    let cluster = blocking(|| Cluster::start_with(Options { nodes: 1, ..whitelisted() }));
    let client = connect(&cluster.client_addr(0).to_string()).await;
    client.create("/t55", b"x", PERSISTENT).await.unwrap();
    let keys = check_role(&cluster, 0, Role::Standalone, 1).await;
    assert_eq!(num(&keys, "zk_global_sessions"), 1.0, "{keys:?}");
    assert_eq!(num(&keys, "zk_num_alive_connections"), 2.0, "the client and the asker: {keys:?}");
}

/// `mntr` and `stat` are off under ZooKeeper's default whitelist (`srvr` only): these tests ask for them.
fn whitelisted() -> Options {
    Options { config: vec!["4lw.commands.whitelist=*".into()], ..Options::default() }
}
