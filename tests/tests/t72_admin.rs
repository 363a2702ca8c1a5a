//! ZooKeeper's AdminServer (`admin.enableServer`, `admin.serverAddress`, `admin.serverPort`,
//! `admin.commandURL`): its commands as JSON over HTTP.
//!
//! A 3-node cluster serves the commands on an admin port per node (they share a host; the harness turns the
//! AdminServer off by default for that reason). For a leader and a follower, each command's answer must have
//! `command` and `error: null` and exactly the keys, with the JSON types, that ZooKeeper 3.8's `Commands.java`
//! puts in it ([`EXPECTED`], checked against Apache ZooKeeper itself: the test runs against both servers, as
//! `ENSEMBLE_TESTS_SERVER=zookeeper` starts Debian's ZooKeeper 3.8.0 with Jetty's jars on its classpath).
//! `monitor` must carry `mntr`'s figures; an unknown command answers as ZooKeeper's does; and the endpoint
//! still answers while a slow-loris connection hangs on it and after an oversized request head.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ensemble_tests::client::PERSISTENT;
use ensemble_tests::process::Server;
use ensemble_tests::{connect, free_ports, Cluster, Options};
use serde_json::Value;

/// A JSON type, as the comparison sees it (values are not compared).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum T {
    Str,
    Num,
    Bool,
    Obj,
    Arr,
    /// A string or null.
    OptStr,
}

fn type_of(value: &Value) -> Option<T> {
    match value {
        Value::String(_) => Some(T::Str),
        Value::Number(_) => Some(T::Num),
        Value::Bool(_) => Some(T::Bool),
        Value::Object(_) => Some(T::Obj),
        Value::Array(_) => Some(T::Arr),
        Value::Null => None,
    }
}

use T::{Arr, Bool, Num, Obj, OptStr, Str};

/// A command's name, whether its key set is exact, and its keys with their types.
type Expected = (&'static str, bool, &'static [(&'static str, T)]);

/// Each command's keys and types besides `command` and `error`, on a follower, from ZooKeeper 3.8.0's
/// `Commands.java` (and `ServerStats`, `BufferStats`, `ZooKeeperServerConf`, `WatchesSummary`,
/// `ServerCnxn.getConnectionInfo`, as its Jackson `JsonOutputter` writes them in snake case). `true`: the key
/// set must be exactly this; `false`: at least these (`monitor` also dumps the metrics provider's values, and
/// `environment` the JVM's).
const EXPECTED: [Expected; 22] = [
    ("ruok", true, &[]),
    (
        "monitor",
        false,
        &[
            ("version", Str),
            ("server_state", Str),
            ("avg_latency", Num),
            ("max_latency", Num),
            ("min_latency", Num),
            ("packets_received", Num),
            ("packets_sent", Num),
            ("num_alive_connections", Num),
            ("outstanding_requests", Num),
            ("uptime", Num),
            ("znode_count", Num),
            ("watch_count", Num),
            ("ephemerals_count", Num),
            ("approximate_data_size", Num),
            ("global_sessions", Num),
            ("local_sessions", Num),
            ("open_file_descriptor_count", Num),
            ("max_file_descriptor_count", Num),
            ("quorum_size", Num),
        ],
    ),
    ("server_stats", true, SRVR),
    ("stats", true, &[]), // SRVR plus the two lists; see `expected`.
    ("connections", true, &[("connections", Arr), ("secure_connections", Arr)]),
    (
        "configuration",
        true,
        &[
            ("client_port", Num),
            ("data_dir", Str),
            ("data_log_dir", Str),
            ("tick_time", Num),
            ("max_client_cnxns", Num),
            ("min_session_timeout", Num),
            ("max_session_timeout", Num),
            ("server_id", Num),
            ("client_port_listen_backlog", Num),
        ],
    ),
    ("environment", false, &[("zookeeper.version", Str), ("host.name", Str)]),
    ("watches", true, &[("session_id_to_watched_paths", Obj)]),
    ("watches_by_path", true, &[("path_to_session_ids", Obj)]),
    ("watch_summary", true, &[("num_connections", Num), ("num_paths", Num), ("num_total_watches", Num)]),
    ("dump", true, &[("expiry_time_to_session_ids", Obj), ("session_id_to_ephemeral_paths", Obj)]),
    ("leader", true, &[("is_leader", Bool), ("leader_id", Num), ("leader_ip", Str)]),
    ("voting_view", true, &[("current_config", Obj)]),
    ("is_read_only", true, &[("read_only", Bool)]),
    ("last_snapshot", true, &[("zxid", Str), ("timestamp", Num)]),
    (
        "zabstate",
        true,
        &[
            ("myid", Num),
            ("is_leader", Bool),
            // MultipleAddresses objects, as Jackson writes their getters.
            ("quorum_address", Obj),
            ("election_address", Obj),
            ("client_address", Str),
            ("voting", Bool),
            ("last_zxid", Str),
            ("zab_epoch", Num),
            ("zab_counter", Num),
            ("zabstate", Str),
        ],
    ),
    ("dirs", true, &[("datadir_size", Num), ("logdir_size", Num)]),
    ("get_trace_mask", true, &[("tracemask", Num)]),
    ("hash", true, &[("digests", Arr)]),
    ("observers", true, &[("synced_observers", Num), ("observers", Arr)]),
    ("observer_connection_stat_reset", true, &[]),
    // The config file's text; null on ZooKeeper 3.8.0's quorum peers, as QuorumPeerMain never passes the text
    // it read (QuorumPeerConfig.initialConfig) on to its QuorumPeer. Ensemble answers the text.
    ("initial_configuration", true, &[("initial_configuration", OptStr)]),
];

/// `server_stats` (`srvr`), on a follower.
const SRVR: &[(&str, T)] =
    &[("version", Str), ("read_only", Bool), ("server_stats", Obj), ("client_response", Obj), ("node_count", Num)];

/// `server_stats.server_stats`: `ServerStats`' getters.
const SERVER_STATS: [&str; 18] = [
    "packets_sent",
    "packets_received",
    "fsync_threshold_exceed_count",
    "client_response_stats",
    "data_dir_size",
    "log_dir_size",
    "server_state",
    "last_processed_zxid",
    "outstanding_requests",
    "avg_latency",
    "max_latency",
    "min_latency",
    "num_alive_client_connections",
    "auth_failed_count",
    "non_mtlsremote_conn_count",
    "non_mtlslocal_conn_count",
    "provider_null",
    "uptime",
];

/// The keys `command` must answer with on a leader (`leader`) or a follower.
fn expected(command: &str, leader: bool) -> (bool, Vec<(&'static str, T)>) {
    let (_, exact, keys) = EXPECTED.iter().find(|(name, _, _)| *name == command).expect("listed");
    let mut keys = keys.to_vec();
    if command == "stats" {
        keys = SRVR.to_vec();
        keys.extend([("connections", Arr), ("secure_connections", Arr)]);
    }
    if leader && matches!(command, "stats" | "server_stats") {
        keys.push(("proposal_stats", Obj));
    }
    if leader && command == "monitor" {
        for key in ["learners", "synced_followers", "synced_non_voting_followers", "synced_observers"] {
            keys.push((key, Num));
        }
        for key in ["pending_syncs", "leader_uptime", "last_proposal_size", "max_proposal_size", "min_proposal_size"] {
            keys.push((key, Num));
        }
    }
    (*exact, keys)
}

fn get(port: u16, path: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    match agent.get(&url).call() {
        Ok(response) => (response.status(), response.into_string().expect("a body")),
        Err(ureq::Error::Status(code, response)) => (code, response.into_string().unwrap_or_default()),
        Err(error) => panic!("GET {url}: {error}"),
    }
}

fn command(port: u16, name: &str) -> serde_json::Map<String, Value> {
    let (status, body) = get(port, &format!("/commands/{name}"));
    assert_eq!(status, 200, "{name}: {body}");
    match serde_json::from_str(&body) {
        Ok(Value::Object(map)) => map,
        other => panic!("{name}: not a JSON object ({other:?}): {body}"),
    }
}

/// Checks one node's answer to `name` against [`expected`]; a description of each difference.
fn differences(port: u16, name: &str, leader: bool) -> Vec<String> {
    let answer = command(port, name);
    let mut found = Vec::new();
    if answer.get("command") != Some(&Value::from(name)) || answer.get("error") != Some(&Value::Null) {
        found.push(format!("{name}: command/error are {:?}/{:?}", answer.get("command"), answer.get("error")));
    }
    let (exact, keys) = expected(name, leader);
    for (key, kind) in &keys {
        match answer.get(*key).map(type_of) {
            None => found.push(format!("{name}: no {key}")),
            Some(None | Some(Str)) if *kind == OptStr => {}
            Some(got) if got != Some(*kind) => {
                found.push(format!("{name}: {key} is {got:?}, expected {kind:?}: {}", answer[*key]))
            }
            Some(_) => {}
        }
    }
    if exact {
        for key in answer.keys().filter(|k| *k != "command" && *k != "error") {
            if !keys.iter().any(|(k, _)| k == key) {
                found.push(format!("{name}: unexpected key {key}"));
            }
        }
    }
    if let Some(Value::Object(stats)) = answer.get("server_stats") {
        let mut got: Vec<&str> = stats.keys().map(String::as_str).collect();
        let mut want = SERVER_STATS.to_vec();
        got.sort_unstable();
        want.sort_unstable();
        if got != want {
            found.push(format!("{name}: server_stats has {got:?}, expected {want:?}"));
        }
    }
    found
}

/// A `zk_key\tvalue` of an `mntr` answer.
fn mntr_value(mntr: &str, key: &str) -> Option<f64> {
    mntr.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('\t')?.parse().ok())
}

#[test]
fn the_admin_server_answers_zookeepers_commands() {
    let ports = free_ports(3);
    let cluster = Cluster::start_with(Options {
        config: vec!["4lw.commands.whitelist=*".into()],
        // Each node's AdminServer on a port of its own (they share a host).
        node_config: ports
            .iter()
            .map(|p| {
                let address = "admin.serverAddress=127.0.0.1".to_owned();
                vec!["admin.enableServer=true".into(), address, format!("admin.serverPort={p}")]
            })
            .collect(),
        ..Options::default()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let client = runtime.block_on(async {
        let client = connect(&cluster.connect_string()).await;
        for i in 0..3 {
            client.create(&format!("/t72-{i}"), b"data", PERSISTENT).await.expect("create");
            client.get_data(&format!("/t72-{i}")).await.expect("read");
        }
        client
    });
    let leader = cluster.leader();
    let follower = cluster.followers()[0];

    // GET /commands lists every command as a link.
    let (status, list) = get(ports[leader], "/commands");
    assert_eq!(status, 200, "{list}");
    for (name, _, _) in EXPECTED {
        assert!(list.contains(&format!("<a href=\"/commands/{name}\">{name}</a>")), "{name} not listed: {list}");
    }

    let mut found = Vec::new();
    for (i, is_leader) in [(leader, true), (follower, false)] {
        for (name, _, _) in EXPECTED {
            found.extend(differences(ports[i], name, is_leader).into_iter().map(|d| format!("node {i}: {d}")));
        }
    }
    assert!(found.is_empty(), "answers differ from ZooKeeper 3.8's:\n{}", found.join("\n"));

    // An alias answers under its command's primary name (`CommandBase.initializeResponse`); `monitor`
    // carries mntr's figures.
    assert_eq!(command(ports[follower], "mntr")["command"], Value::from("monitor"));
    let monitor = command(ports[leader], "monitor");
    let mntr = cluster.four_letter(leader, "mntr");
    for key in ["znode_count", "quorum_size", "learners", "synced_followers"] {
        let theirs = mntr_value(&mntr, &format!("zk_{key}"));
        assert_eq!(monitor[key].as_f64(), theirs, "{key}: monitor {monitor:?}, mntr {mntr}");
    }
    assert_eq!(monitor["server_state"], Value::from("leader"));

    // set_trace_mask takes its mask as a parameter, and get_trace_mask reports it; without one, ZooKeeper's error.
    let (status, body) = get(ports[follower], "/commands/set_trace_mask?traceMask=306");
    assert_eq!(status, 200, "{body}");
    assert_eq!(command(ports[follower], "get_trace_mask")["tracemask"], Value::from(306));
    let missing = command(ports[follower], "stmk");
    assert_eq!(missing["error"], Value::from("setTraceMask requires long traceMask argument"), "{missing:?}");

    if *cluster.server() != Server::ZooKeeper {
        let text = command(ports[follower], "icfg")["initial_configuration"].clone();
        assert!(text.as_str().is_some_and(|t| t.contains("admin.serverPort=")), "{text}");
    }

    // An unknown command: 200, its name, and the error ZooKeeper gives. Another path: 404.
    let unknown = command(ports[follower], "no_such_command");
    assert_eq!(unknown.get("command"), Some(&Value::from("no_such_command")));
    assert_eq!(unknown.get("error"), Some(&Value::from("Unknown command: no_such_command")));
    assert_eq!(get(ports[follower], "/no-such-path").0, 404);

    hostile_clients(ports[follower], cluster.server());
    drop(client);
}

/// A slow-loris connection and an oversized request head: the endpoint still answers.
fn hostile_clients(port: u16, server: &Server) {
    // Slow loris: a request head never finished, one header line at a time.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    slow.write_all(b"GET /commands/ruok HTTP/1.1\r\nHost: x\r\n").expect("write");
    for i in 0..3 {
        let _ = write!(slow, "X-Slow-{i}: y\r\n");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(get(port, "/commands/ruok").0, 200, "ruok while a slow loris hangs on");
    }
    // Ensemble cuts a head not sent within 10 s; Jetty's idle timeout is 30 s.
    if *server != Server::ZooKeeper {
        slow.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let started = Instant::now();
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        assert!(started.elapsed() < Duration::from_secs(15), "the slow loris kept its connection");
    }

    // An oversized head (a 64 KiB header): refused, never answered as a command.
    let mut big = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    big.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let header = "a".repeat(64 * 1024);
    let _ = write!(big, "GET /commands/ruok HTTP/1.1\r\nHost: x\r\nX-Big: {header}\r\n\r\n");
    let mut answer = Vec::new();
    let _ = big.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.starts_with("HTTP/1.1 200"), "an oversized head was answered: {answer}");
    assert_eq!(get(port, "/commands/ruok").0, 200, "ruok after an oversized head");
}
