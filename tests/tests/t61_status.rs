//! `ensemble status`: one screen for an ensemble from each server's `srvr` answer. On a 3-node cluster it
//! names the leader, the followers and their lag, and says a quorum serves; with a follower down it still
//! does; with two down it says there is none and exits 1. The tool reads only `srvr`, which every whitelist
//! allows, so it runs against Apache ZooKeeper's servers too.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ensemble_tests::client::PERSISTENT;
use ensemble_tests::process::{find_ensemble, Server};
use ensemble_tests::{blocking, connect, Cluster};
use serde_json::Value;

/// Runs `ensemble status [--json] cs`: its exit code and output.
fn status(bin: &PathBuf, cs: &str, json: bool) -> (i32, String) {
    let mut cmd = Command::new(bin);
    cmd.arg("status").arg(cs);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("ensemble status runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().expect("an exit code"), format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
}

/// `status --json` once its exit code is `code` and `ready` holds (a cluster takes a moment to notice a server
/// is gone, a follower to apply the leader's last txn).
fn status_when(bin: &PathBuf, cs: &str, code: i32, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (got, out) = status(bin, cs, true);
        if got == code {
            let value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: not JSON ({e}):\n{out}"));
            if ready(&value) {
                return value;
            }
        }
        assert!(Instant::now() < deadline, "{what}: exit code {got} (wanted {code}):\n{out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn rows(status: &Value) -> &Vec<Value> {
    status["servers"].as_array().expect("a servers array")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_roles_lag_and_whether_a_quorum_serves() {
    let exe = std::env::current_exe().expect("the test executable");
    let bin =
        find_ensemble(std::env::var_os("ENSEMBLE_BIN").map(PathBuf::from), &exe).unwrap_or_else(|e| panic!("{e}"));
    let cluster = blocking(|| Cluster::start(3));
    let cs = cluster.connect_string();
    let leader = blocking(|| cluster.leader());
    let leader_addr = cluster.client_addr(leader).to_string();
    // A write in the leader's epoch: until a server has a txn of the new epoch, its lag is not a txn count.
    connect(&leader_addr).await.create("/t61", b"", PERSISTENT).await.expect("create /t61");

    let caught_up = |v: &Value| rows(v).iter().all(|row| row["lag"] == 0);
    let healthy = blocking(|| status_when(&bin, &cs, 0, "a healthy cluster, caught up", caught_up));
    assert_eq!(healthy["quorum"], true);
    assert_eq!(healthy["leader"], leader_addr.as_str());
    assert_eq!((healthy["voting_serving"].as_u64(), healthy["voting"].as_u64()), (Some(3), Some(3)));
    for (i, row) in rows(&healthy).iter().enumerate() {
        assert_eq!(row["server"], cluster.client_addr(i).to_string().as_str());
        assert_eq!(row["state"], "serving", "{row}");
        assert_eq!(row["mode"], if i == leader { "leader" } else { "follower" }, "{row}");
        assert!(row["node_count"].as_u64().is_some_and(|n| n >= 4), "{row}");
    }
    let (code, table) = blocking(|| status(&bin, &cs, false));
    assert_eq!(code, 0, "{table}");
    assert!(table.contains(&format!("quorum: yes (leader {leader_addr}; 3 of 3 voting servers serving)")), "{table}");

    let followers = blocking(|| cluster.followers());
    blocking(|| cluster.kill(followers[0]));
    let one_down = blocking(|| status_when(&bin, &cs, 0, "one follower down", |_| true));
    let down = &rows(&one_down)[followers[0]];
    assert_eq!(down["state"], "unreachable", "{one_down}");
    assert_eq!(one_down["voting_serving"].as_u64(), Some(2), "{one_down}");

    blocking(|| cluster.kill(followers[1]));
    let two_down = blocking(|| status_when(&bin, &cs, 1, "two servers down", |_| true));
    assert_eq!(two_down["quorum"], false, "{two_down}");
    let (code, table) = blocking(|| status(&bin, &cs, false));
    assert_eq!(code, 1, "{table}");
    assert!(table.contains("quorum: NO"), "{table}");

    // Every line an Ensemble server logs names it (the harness marks each start with a line of its own).
    if matches!(cluster.server(), Server::Ensemble(_)) {
        for i in 0..cluster.len() {
            let log = cluster.log_text(i);
            let prefix = format!("server={} ", i + 1);
            let stray = log.lines().find(|l| !l.starts_with(&prefix) && !l.starts_with("----- ensemble-tests:"));
            assert_eq!(stray, None, "node {}: a line without {prefix:?}", i + 1);
            // An operator follows an election by two lines: who was elected, and when it serves.
            for line in
                ["INFO replication::runtime: leader elected role=", "INFO replication::runtime: synced: serving"]
            {
                assert!(log.contains(line), "node {}: no {line:?} in its log", i + 1);
            }
        }
    }
}
