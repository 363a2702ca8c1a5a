//! The door between Apache ZooKeeper and Ensemble (`ensemble import`, `ensemble export`): a real ZooKeeper 3.8
//! (Debian's package) is filled through real clients, stopped, imported; Ensemble (`ENSEMBLE_BIN`) serves the
//! imported directory with the same zoo.cfg and myid; then Ensemble's data is exported and ZooKeeper serves it
//! again. At each step the whole tree is read through kazoo (data, null kept apart from empty, ACL, full stat)
//! and compared with what ZooKeeper served first. Once standalone, once as a 3-server quorum (every server
//! imported from its own ZooKeeper peer), which also takes writes after the move.
//!
//! ZooKeeper is the source whatever `ENSEMBLE_TESTS_SERVER` says. With `ENSEMBLE_TESTS_SERVER=zookeeper`
//! (the mode that checks the tests themselves against ZooKeeper) the middle step, Ensemble serving the
//! imported data, is skipped and said so: the tree goes ZooKeeper → import → export → ZooKeeper, which still
//! checks the comparison and both tools (the `ensemble` binary is needed either way).
//!
//! `snapCount=100` (ZooKeeper snapshots every 50 to 100 txns) makes the bulk of the fill span several
//! snapshots and leaves the last writes only in the log after the newest one, so the import must replay the
//! log over a fuzzy snapshot; the test checks, with `zkdata`, that the newest snapshot is older than writes the
//! imported tree holds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ensemble_tests::process::{find_ensemble, Server};
use ensemble_tests::{blocking, connect, Cluster, Options};
use serde_json::Value;
use zookeeper_client::{Acls, CreateMode};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/interop").join(name)
}

fn ensemble_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    find_ensemble(std::env::var_os("ENSEMBLE_BIN").map(PathBuf::from), &exe).unwrap_or_else(|m| panic!("{m}"))
}

/// The server that serves the imported data: Ensemble, or none in `ENSEMBLE_TESTS_SERVER=zookeeper` mode.
fn target() -> Option<Server> {
    match Server::from_env() {
        Server::ZooKeeper => {
            eprintln!("t80: ENSEMBLE_TESTS_SERVER=zookeeper: skipping Ensemble serving the imported data");
            None
        }
        ensemble => Some(ensemble),
    }
}

/// Runs `cmd` and returns its stdout; fails the test with its output if it fails.
fn run(mut cmd: Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{stdout}\n{stderr}", out.status);
    stdout.into_owned()
}

fn python(script_name: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg(script(script_name)).args(args);
    run(cmd)
}

/// The whole tree as kazoo reads it from `hosts`: path → data, ACL, stat.
fn dump(hosts: &str) -> Value {
    serde_json::from_str(&python("zk_tree_dump.py", &[hosts])).expect("the dump is JSON")
}

/// Fails with the first paths where `got` differs from `want`.
fn assert_same_tree(want: &Value, got: &Value, what: &str) {
    let (want, got) = (want.as_object().expect("object"), got.as_object().expect("object"));
    let differ: Vec<String> = want
        .keys()
        .chain(got.keys())
        .filter(|p| want.get(*p) != got.get(*p))
        .take(5)
        .map(|p| format!("{p}:\n  was {}\n  now {}", short(want.get(p)), short(got.get(p))))
        .collect();
    assert!(
        differ.is_empty(),
        "{what}: the tree differs ({} vs {} znodes):\n{}",
        want.len(),
        got.len(),
        differ.join("\n")
    );
    assert!(want.len() > 100, "{what}: the tree is too small to mean anything ({} znodes)", want.len());
}

fn short(v: Option<&Value>) -> String {
    let text = v.map_or("(none)".to_string(), Value::to_string);
    text.chars().take(240).collect()
}

/// A tool run: `ensemble import|export ... --json`, its summary.
fn tool(args: &[&str]) -> Value {
    let mut cmd = Command::new(ensemble_bin());
    cmd.args(args).arg("--json");
    let summary: Value = serde_json::from_str(&run(cmd)).expect("the summary is JSON");
    assert_eq!(summary["ok"], true, "{summary}");
    summary
}

fn options(nodes: usize) -> Options {
    Options {
        nodes,
        zookeeper_flags: Vec::new(),
        server: Some(Server::ZooKeeper),
        // Several snapshots and log files (ZooKeeper starts a new log at each snapshot) for the door to read and
        // write.
        snap_count: 100,
        prealloc_kib: 4096,
        // TTL nodes among the fill: ZooKeeper has them off by default.
        config: vec!["extendedTypesEnabled=true".into()],
        // The fill's session owns ephemerals and is left open: it must outlive every move (each server start
        // gives it its full timeout again).
        max_session_timeout_ms: 120_000,
        ..Options::default()
    }
}

/// Fills ZooKeeper: the bulk (kazoo), containers and TTL nodes (the Rust client: kazoo has neither), then the
/// tail.
async fn fill(cluster: &Cluster) {
    let hosts = cluster.connect_string();
    blocking(|| python("zk_door_fill.py", &[&hosts, "bulk"]));
    let client = connect(&hosts).await;
    client.create("/door/container", b"c", &CreateMode::Container.with_acls(Acls::anyone_all())).await.unwrap();
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    client.create("/door/container/child", b"", &persistent).await.unwrap();
    let ttl = CreateMode::Persistent.with_acls(Acls::anyone_all()).with_ttl(Duration::from_secs(3600));
    client.create("/door/ttl", b"t", &ttl).await.unwrap();
    drop(client);
    blocking(|| python("zk_door_fill.py", &[&hosts, "tail"]));
}

/// ZooKeeper's tree, dumped once no newest snapshot is at the last zxid, so that the import must replay the log.
/// ZooKeeper snapshots 50 to 100 txns apart, and every session is txns of its own (a dump's create and close
/// too): when a snapshot caught the last one, one write more, and the dump is taken again.
async fn dump_with_the_last_txns_in_the_log(cluster: &Cluster) -> Value {
    let hosts = cluster.connect_string();
    for _ in 0..5 {
        let tree = blocking({
            let hosts = hosts.clone();
            move || dump(&hosts)
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let zxid = (0..cluster.len()).filter_map(|i| last_zxid(&cluster.four_letter(i, "srvr"))).max().unwrap();
        if (0..cluster.len()).all(|i| newest_snapshot(cluster, i) < zxid) {
            return tree;
        }
        blocking(|| python("zk_door_fill.py", &[&hosts, "one"]));
    }
    panic!("ZooKeeper keeps snapshotting at its last zxid");
}

/// `Zxid: 0x...` of a `srvr` answer.
fn last_zxid(srvr: &str) -> Option<i64> {
    let hex = srvr.lines().find_map(|l| l.strip_prefix("Zxid: 0x"))?;
    i64::from_str_radix(hex.trim(), 16).ok()
}

/// The zxid of node `i`'s newest snapshot.
fn newest_snapshot(cluster: &Cluster, i: usize) -> i64 {
    let dir = cluster.node_dir(i).join("data/version-2");
    zkdata::files::list(&dir, zkdata::files::SNAPSHOT_PREFIX).unwrap().last().map_or(-1, |(zxid, _)| *zxid)
}

/// Checks, on the stopped ZooKeeper's files, that the newest snapshot predates the last writes: the import
/// must replay the log.
fn assert_log_only_writes(cluster: &Cluster, i: usize) {
    let dir = cluster.node_dir(i);
    let sources = zkdata::restore::Sources { snap_dir: dir.join("data/version-2"), log_dir: dir.join("log/version-2") };
    let restored = zkdata::restore::restore(&sources, zkdata::DEFAULT_MAX_LEN, &mut |_| {}).expect("ZooKeeper's files");
    assert!(
        restored.replayed > 0 && restored.tree.last_zxid() > restored.snapshot_zxid,
        "the last writes should be in the log only: last zxid {:#x}, newest snapshot {:#x}",
        restored.tree.last_zxid(),
        restored.snapshot_zxid
    );
}

fn import(cluster: &Cluster, i: usize) -> Value {
    let config = cluster.config_path(i);
    let summary = tool(&["import", "--config", config.to_str().unwrap()]);
    assert!(summary["txns_replayed"].as_u64() > Some(0), "{summary}");
    assert!(summary["digests_checked"].as_u64() > Some(0), "{summary}");
    summary
}

fn export(cluster: &Cluster, i: usize) -> Value {
    let config = cluster.config_path(i);
    // --force: ZooKeeper's own version-2 from before the import is still there; it is moved aside.
    let summary = tool(&["export", "--config", config.to_str().unwrap(), "--force"]);
    assert_eq!(summary["moved_aside"].as_array().map(Vec::len), Some(2), "{summary}");
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_zookeeper_moves_to_ensemble_and_back() {
    standalone(options(1)).await;
}

/// ZooKeeper writing its snapshots compressed with snappy-java (`zookeeper.snapshot.compression.method`): the
/// import reads `snapshot.<zxid>.snappy` as ZooKeeper wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zookeeper_with_snappy_snapshots_moves_to_ensemble_and_back() {
    let flags = vec!["-Dzookeeper.snapshot.compression.method=snappy".to_string()];
    standalone(Options { zookeeper_flags: flags, ..options(1) }).await;
}

async fn standalone(options: Options) {
    let snappy = !options.zookeeper_flags.is_empty();
    let mut cluster = blocking(|| Cluster::start_with(options));
    fill(&cluster).await;
    let hosts = cluster.connect_string();
    let zookeeper = dump_with_the_last_txns_in_the_log(&cluster).await;
    cluster.stop(0);
    assert_log_only_writes(&cluster, 0);
    let imported = import(&cluster, 0);
    assert_eq!(imported["snapshot"].as_str().unwrap().ends_with(".snappy"), snappy, "{imported}");
    let mut expected = zookeeper.clone();
    if let Some(server) = target() {
        cluster.switch_server(server);
        blocking(|| cluster.start_all());
        let served = blocking({
            let hosts = hosts.clone();
            move || dump(&hosts)
        });
        assert_same_tree(&zookeeper, &served, "Ensemble serving the imported directory");
        // It takes writes, with zxids after ZooKeeper's.
        let client = connect(&hosts).await;
        let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        let (stat, _) = client.create("/door/after-import", b"new", &persistent).await.unwrap();
        let last = i64::from_str_radix(imported["last_zxid"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
        assert!(stat.czxid > last, "zxid {:#x} after the import's {last:#x}", stat.czxid);
        drop(client);
        expected = blocking({
            let hosts = hosts.clone();
            move || dump(&hosts)
        });
        cluster.stop(0);
    }
    export(&cluster, 0);
    cluster.switch_server(Server::ZooKeeper);
    blocking(|| cluster.start_all());
    let back = blocking(move || dump(&hosts));
    assert_same_tree(&expected, &back, "ZooKeeper serving the exported directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zookeeper_quorum_moves_to_an_ensemble_quorum_and_back() {
    let mut cluster = blocking(|| Cluster::start_with(options(3)));
    fill(&cluster).await;
    let hosts = cluster.connect_string();
    let zookeeper = dump_with_the_last_txns_in_the_log(&cluster).await;
    blocking(|| cluster.stop_all());
    assert_log_only_writes(&cluster, 0);
    for i in 0..3 {
        import(&cluster, i);
    }
    let mut expected = zookeeper.clone();
    if let Some(server) = target() {
        cluster.switch_server(server);
        blocking(|| cluster.start_all());
        // Every server serves the same tree, read from it alone.
        for i in 0..3 {
            let one = cluster.client_addr(i).to_string();
            let served = blocking(move || dump(&one));
            assert_same_tree(&zookeeper, &served, &format!("Ensemble server {} after the import", i + 1));
        }
        let client = connect(&hosts).await;
        let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        for n in 0..20 {
            client.create(&format!("/door/after-import-{n}"), b"new", &persistent).await.unwrap();
        }
        client.set_data("/door/bytes", b"written through Ensemble", None).await.unwrap();
        drop(client);
        expected = blocking({
            let hosts = hosts.clone();
            move || dump(&hosts)
        });
        for i in 0..3 {
            let one = cluster.client_addr(i).to_string();
            let served = blocking(move || dump(&one));
            assert_same_tree(&expected, &served, &format!("Ensemble server {} after writes", i + 1));
        }
        blocking(|| cluster.stop_all());
    }
    for i in 0..3 {
        export(&cluster, i);
    }
    cluster.switch_server(Server::ZooKeeper);
    blocking(|| cluster.start_all());
    let back = blocking(move || dump(&hosts));
    assert_same_tree(&expected, &back, "the ZooKeeper quorum serving the exported directories");
}
