//! A server whose disk fails stops for good instead of serving on: its log directory is deleted under it, the
//! next WAL segment cannot be created, the replication runtime stops on that error, and the process exits with
//! a failure (so that a supervisor restarts it and recovery runs from disk). The other two go on serving. A
//! snapshot that cannot be written stops the server the same way.

use std::time::{Duration, Instant};

use ensemble_tests::client::PERSISTENT;
use ensemble_tests::process::Server;
use ensemble_tests::{blocking, connect, Cluster, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_whose_log_cannot_be_written_exits_and_the_others_go_on() {
    // 4 MiB segments: the victim must need a new one soon.
    let cluster = blocking(|| Cluster::start_with(Options::small_files()));
    if !matches!(cluster.server(), Server::Ensemble(_)) {
        // ZooKeeper keeps running with a deleted log directory until it next rolls its log; not comparable.
        eprintln!("t45: Ensemble only (the failure mode is this server's choice)");
        return;
    }
    let leader = blocking(|| cluster.leader());
    let victim = blocking(|| cluster.followers())[0];
    let writer = connect(&cluster.client_addr(leader).to_string()).await;
    writer.create("/t45", b"", PERSISTENT).await.unwrap();
    std::fs::remove_dir_all(cluster.node_dir(victim).join("log")).unwrap();

    // 4 KiB writes until the victim's 4 MiB segment has to roll (about 1000), and then some.
    let written = write_until_exit(&cluster, victim, &writer, "/t45", &[b'x'; 4096], 100).await;
    let status = cluster.exit_status(victim).expect("it exited on its own");
    assert!(!status.success(), "node {} exited with {status} after its disk failed", victim + 1);
    let log = cluster.log_text(victim);
    // Whichever part meets the failed log first (the replication runtime, or snapshot retention purging it)
    // stops the server; either way its log says that it stops serving and that the write-ahead log failed.
    assert!(
        log.contains("this server stops serving") && log.contains("write-ahead log failed"),
        "node {} does not say why it stopped:\n{log}",
        victim + 1
    );

    // The others serve on, reads and writes.
    writer.create("/t45/after", b"", PERSISTENT).await.unwrap();
    let other = (0..3).find(|&i| i != leader && i != victim).unwrap();
    let reader = connect(&cluster.client_addr(other).to_string()).await;
    assert_eq!(reader.list_children("/t45").await.unwrap().len(), written + 1);
}

/// The same for the snapshot directory: a snapshot that cannot be written (here its directory is replaced by a
/// file, so creating one fails with ENOTDIR, as a failed disk would) stops the server rather than leave it
/// running without snapshots, or trusting one whose fsync failed. The others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_whose_snapshots_cannot_be_written_exits_and_the_others_go_on() {
    let cluster = blocking(|| Cluster::start_with(Options::small_files()));
    if !matches!(cluster.server(), Server::Ensemble(_)) {
        eprintln!("t45: Ensemble only (the failure mode is this server's choice)");
        return;
    }
    let leader = blocking(|| cluster.leader());
    let victim = blocking(|| cluster.followers())[0];
    let writer = connect(&cluster.client_addr(leader).to_string()).await;
    writer.create("/t45s", b"", PERSISTENT).await.unwrap();
    let snapshots = cluster.node_dir(victim).join("data").join("snapshots");
    std::fs::remove_dir_all(&snapshots).unwrap();
    std::fs::write(&snapshots, b"not a directory").unwrap();

    // snapCount is 100: a few hundred writes ask the victim for a snapshot.
    write_until_exit(&cluster, victim, &writer, "/t45s", b"x", 50).await;
    let status = cluster.exit_status(victim).expect("it exited on its own");
    assert!(!status.success(), "node {} exited with {status} after its snapshot failed", victim + 1);
    let log = cluster.log_text(victim);
    assert!(log.contains("snapshot: "), "node {} does not say why it stopped:\n{log}", victim + 1);
    writer.create("/t45s/after", b"", PERSISTENT).await.unwrap();
}

/// Creates children of `parent` with `data`, `batch` at a time (each must succeed: the two healthy servers are a
/// quorum), until node `victim` exits; fails after 60 s. Returns how many it created. Past 3,000 it paces itself,
/// so that a victim slow to notice is not buried under writes.
async fn write_until_exit(
    cluster: &Cluster,
    victim: usize,
    writer: &zookeeper_client::Client,
    parent: &str,
    data: &[u8],
    batch: usize,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut written = 0;
    while cluster.is_running(victim) {
        assert!(Instant::now() < deadline, "node {} still runs after {written} writes", victim + 1);
        let creates = (written..written + batch).map(|i| {
            let path = format!("{parent}/n{i}");
            async move { writer.create(&path, data, PERSISTENT).await.map(|_| ()) }
        });
        for result in futures_util::future::join_all(creates).await {
            result.expect("the two healthy servers are a quorum: writes go on");
        }
        written += batch;
        if written > 3000 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    written
}
