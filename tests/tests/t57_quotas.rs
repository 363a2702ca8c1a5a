//! ZooKeeper's quotas, driven by zkCli.sh as users drive them, on a 3-node cluster: `setquota` (-n, -b, -N,
//! -B), `listquota` and `delquota`. The stats node under `/zookeeper/quota` shows the live node count and data
//! bytes of the subtree on every server, a restarted one (which recounts them after loading its snapshot) and
//! one rejoining with a wiped disk included; with `enforceQuota=true` a create or setData past a hard limit fails with QUOTAEXCEEDED (-125),
//! and one past a soft limit passes and is logged by the leader; without it, writes past any limit pass (and
//! Ensemble's leader logs them).

use std::path::Path;
use std::time::Duration;

use ensemble_tests::client::{catch_up, PERSISTENT};
use ensemble_tests::process::Server;
use ensemble_tests::{blocking, connect, eventually, zkcli, Cluster, Options};
use zookeeper_client::{Client, Error};

/// `listquota PATH` on `node`, once that node has applied everything `writer` wrote.
async fn listquota(cluster: &Cluster, node: usize, writer: &Client, path: &str) -> String {
    let reader = connect(&cluster.client_addr(node).to_string()).await;
    catch_up(&reader, writer).await;
    let addr = cluster.client_addr(node).to_string();
    let command = format!("listquota {path}");
    blocking(|| zkcli::run(&addr, &[&command]))
}

fn assert_lines(out: &str, node: usize, lines: &[&str]) {
    for line in lines {
        assert!(out.lines().any(|l| l.contains(line)), "node {}: no line {line:?} in zkCli's output:\n{out}", node + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zkcli_quotas_show_live_usage_on_every_server_and_after_a_restart() {
    zkcli::require();
    // A snapshot every 100 txns: the restarted follower recovers from one it took while quotas were set.
    let cluster = blocking(|| Cluster::start_with(Options::small_files()));
    let leader = blocking(|| cluster.leader());
    let writer = connect(&cluster.client_addr(leader).to_string()).await;
    writer.create("/t57", b"abc", PERSISTENT).await.unwrap();
    writer.create("/t57/a", b"12345", PERSISTENT).await.unwrap();

    let addr = cluster.client_addr(leader).to_string();
    let out = blocking(|| zkcli::run(&addr, &["setquota -n 10 /t57", "setquota -B 1000 /t57"]));
    assert!(!out.contains("Exception"), "setquota:\n{out}");
    let quota = "Output quota for /t57 count=10,bytes=-1=;byteHardLimit=1000;countHardLimit=-1";
    for node in 0..cluster.len() {
        // The stats node was created as count=0,bytes=0: the server counted /t57 and /t57/a into it.
        assert_lines(
            &listquota(&cluster, node, &writer, "/t57").await,
            node,
            &[quota, "Output stat for /t57 count=2,bytes=8"],
        );
    }

    // Live usage: creates, sets and deletes under /t57 (and not beside it), on every server.
    writer.create("/t57/b", b"xy", PERSISTENT).await.unwrap();
    writer.set_data("/t57/a", b"1", None).await.unwrap();
    writer.create("/t57/tmp", b"gone soon", PERSISTENT).await.unwrap();
    writer.delete("/t57/tmp", None).await.unwrap();
    writer.create("/t57b", b"beside, not under", PERSISTENT).await.unwrap();
    for node in 0..cluster.len() {
        assert_lines(
            &listquota(&cluster, node, &writer, "/t57").await,
            node,
            &["Output stat for /t57 count=3,bytes=6"],
        );
    }

    // A follower killed, written past (more than snapCount, so snapshots are taken meanwhile), restarted: it
    // recovers from its snapshot and log, recounts, then catches up with the leader.
    let follower = blocking(|| cluster.followers())[0];
    blocking(|| cluster.kill(follower));
    writer.create("/t57/c", b"z", PERSISTENT).await.unwrap();
    for i in 0..150 {
        writer.set_data("/t57b", format!("{i}").as_bytes(), None).await.unwrap();
    }
    blocking(|| cluster.restart(follower));
    let expected = "Output stat for /t57 count=4,bytes=7";
    assert_lines(&listquota(&cluster, follower, &writer, "/t57").await, follower, &[expected]);
    // Once more, now that it has a snapshot of its own holding the quota (taken during the 150 writes), then a
    // write under the quota: a server that loaded the snapshot without finding its quotas would not count it.
    blocking(|| cluster.stop(follower));
    blocking(|| cluster.restart(follower));
    assert_lines(&listquota(&cluster, follower, &writer, "/t57").await, follower, &[quota, expected]);
    writer.create("/t57/d", b"w", PERSISTENT).await.unwrap();
    stats_everywhere(&cluster, &writer, "Output stat for /t57 count=5,bytes=8").await;

    // The other follower's disk wiped (its id kept): it rejoins from nothing (Ensemble's leader, whose log is
    // whole here, sends it every txn; ZooKeeper's may send a snapshot), its stats built up txn by txn on a fresh
    // tree; then a write under the quota.
    let wiped = blocking(|| cluster.followers()).into_iter().find(|&f| f != follower).expect("a second follower");
    blocking(|| cluster.kill(wiped));
    wipe(&cluster.node_dir(wiped));
    blocking(|| cluster.restart(wiped));
    assert_lines(&listquota(&cluster, wiped, &writer, "/t57").await, wiped, &[quota, "count=5,bytes=8"]);
    writer.set_data("/t57/d", b"wwww", None).await.unwrap();
    stats_everywhere(&cluster, &writer, "Output stat for /t57 count=5,bytes=11").await;

    // Without enforceQuota (the default) a write past a hard limit passes. Ensemble's leader logs it, as
    // ZooKeeper's documentation says it does (ZooKeeper 3.8 itself logs a quota only when it enforces it).
    writer.set_data("/t57/d", &[b'x'; 1001], None).await.expect("quotas are not enforced by default");
    stats_everywhere(&cluster, &writer, "Output stat for /t57 count=5,bytes=1008").await;
    if matches!(cluster.server(), Server::Ensemble(_)) {
        let leader = blocking(|| cluster.leader());
        eventually("the leader logs the quota exceeded", Duration::from_secs(10), || async {
            let log = blocking(|| cluster.log_text(leader));
            log.contains("Quota exceeded: /t57 [current bytes=1008, hardByteLimit=1000]").then_some(())
        })
        .await;
    }

    // delquota -n drops the count limit; delquota drops the quota and its nodes.
    let out = blocking(|| zkcli::run(&addr, &["delquota -n /t57", "listquota /t57"]));
    assert_lines(&out, leader, &["Output quota for /t57 count=-1,bytes=-1=;byteHardLimit=1000;countHardLimit=-1"]);
    let out = blocking(|| zkcli::run(&addr, &["delquota /t57", "listquota /t57"]));
    assert_lines(&out, leader, &["quota for /t57 does not exist."]);
    assert_eq!(writer.check_stat("/zookeeper/quota/t57").await.unwrap(), None, "delquota trims its directory");
}

/// `listquota /t57` shows `line` on every node.
async fn stats_everywhere(cluster: &Cluster, writer: &Client, line: &str) {
    for node in 0..cluster.len() {
        assert_lines(&listquota(cluster, node, writer, "/t57").await, node, &[line]);
    }
}

/// Empties a stopped node's WAL and snapshots (Ensemble's and ZooKeeper's directories), keeping `myid`.
fn wipe(node_dir: &Path) {
    for dir in [node_dir.join("log"), node_dir.join("data").join("snapshots"), node_dir.join("data").join("version-2")]
    {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
            std::fs::create_dir_all(&dir).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hard_limits_are_enforced_and_soft_limits_logged() {
    zkcli::require();
    // ZooKeeper enforces no quota unless told to (the system property zookeeper.enforceQuota, which its
    // config parser also sets from this zoo.cfg line); this test is about enforcement.
    let options = Options { config: vec!["enforceQuota=true".into()], ..Options::default() };
    let cluster = blocking(|| Cluster::start_with(options));
    let leader = blocking(|| cluster.leader());
    // The leader checks quotas against its tree (ZooKeeper against its committed tree): writing through the
    // leader, each reply means the leader has applied the write, so the next check sees it.
    let addr = cluster.client_addr(leader).to_string();
    let client = connect(&addr).await;
    client.create("/e", b"", PERSISTENT).await.unwrap();
    client.create("/s", b"", PERSISTENT).await.unwrap();
    let out = blocking(|| zkcli::run(&addr, &["setquota -N 3 /e", "setquota -B 10 /e", "setquota -n 1 /s"]));
    assert!(!out.contains("Exception"), "setquota:\n{out}");

    client.create("/e/1", b"", PERSISTENT).await.unwrap();
    client.create("/e/2", b"12345", PERSISTENT).await.unwrap();
    assert_eq!(client.create("/e/3", b"", PERSISTENT).await.unwrap_err(), Error::QuotaExceeded, "4 nodes > 3");
    assert_eq!(client.set_data("/e/2", b"12345678901", None).await.unwrap_err(), Error::QuotaExceeded, "11 bytes");
    client.set_data("/e/2", b"1234567890", None).await.expect("10 bytes is the limit, not past it");
    client.delete("/e/1", None).await.expect("deletes are never refused");
    // Through a follower, which forwards to the leader.
    let follower = blocking(|| cluster.followers())[0];
    let other = connect(&cluster.client_addr(follower).to_string()).await;
    other.create("/e/3", b"", PERSISTENT).await.expect("3 nodes again");
    assert_eq!(other.create("/e/4", b"", PERSISTENT).await.unwrap_err(), Error::QuotaExceeded);
    assert_eq!(client.check_stat("/e/4").await.unwrap(), None, "a refused create makes nothing");
    let out = listquota(&cluster, follower, &client, "/e").await;
    assert_lines(&out, follower, &["Output stat for /e count=3,bytes=10"]);

    // A soft limit: the create passes, the leader logs it.
    client.create("/s/x", b"", PERSISTENT).await.expect("past a soft limit");
    eventually("the leader logs the soft limit", Duration::from_secs(10), || async {
        let log = blocking(|| cluster.log_text(leader));
        log.contains("Quota exceeded: /s [current count=2, softCountLimit=1]").then_some(())
    })
    .await;
}
