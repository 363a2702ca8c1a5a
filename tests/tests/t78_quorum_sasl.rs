//! Quorum SASL (issue 12, peers without TLS): ZooKeeper's `quorum.auth.*` keys on three servers, DIGEST-MD5
//! with the `QuorumServer` and `QuorumLearner` sections of one JAAS file (`java.security.auth.login.config`,
//! a JVM property for ZooKeeper).
//!
//! One cluster, while a client writes throughout (every acknowledged write is on every server at the end):
//! 1. ZooKeeper's rolling switch from no SASL: each server in turn restarted with `quorum.auth.enableSasl=true`,
//!    then each with `quorum.auth.learnerRequireSasl=true`, then each with `quorum.auth.serverRequireSasl=true`;
//!    the cluster serves and acknowledges writes after every restart, and through every server at the end.
//! 2. Server 3 restarted with a `QuorumLearner` section holding a wrong password
//!    (`quorum.auth.learner.saslLoginContext=BadLearner`) runs but never follows or leads, the other two serve,
//!    and its log says why; back with the right section, it follows again.
//! 3. Ensemble only (its peer frames are made by hand, as in t76): a plaintext stranger claiming server 3 and
//!    forwarding a create is refused and nothing is created; a SASL frame announcing a 2 GiB token, and an
//!    exchange that stalls after the challenge, are dropped; the same forwarded create after a real exchange
//!    with the `QuorumLearner` credentials does create the node (so the frames would work if the checks did
//!    not refuse them). The cluster serves after each.
//!
//! Runs against Apache ZooKeeper 3.8 too (`ENSEMBLE_TESTS_SERVER=zookeeper`), without part 3.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ensemble_tests::client::PERSISTENT;
use ensemble_tests::peer_frames::{claim_and_create, closed};
use ensemble_tests::process::Server;
use ensemble_tests::{blocking, connect, Cluster, Mode, Options};
use node::sasl::quorum::frame::{self, Frame, Status};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const NODES: usize = 3;

const JAAS: &str = r#"QuorumServer {
    org.apache.zookeeper.server.auth.DigestLoginModule required
    user_learner="quorum-secret";
};
QuorumLearner {
    org.apache.zookeeper.server.auth.DigestLoginModule required
    username="learner"
    password="quorum-secret";
};
BadLearner {
    org.apache.zookeeper.server.auth.DigestLoginModule required
    username="learner"
    password="not-the-secret";
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quorum_sasl_rolling_switch_wrong_password_and_strangers() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let jaas = dir.path().join("jaas.conf");
    std::fs::write(&jaas, JAAS).unwrap();
    // Snapshots and purges under the background writer, so that a restarted server recovers from a snapshot and
    // may sync by SNAP over the authenticated link.
    let options = Options { config: vec![jaas_line(&jaas)], ..Options::small_files() };
    let cluster = Arc::new(blocking(move || Cluster::start_with(options)));
    let ensemble = matches!(cluster.server(), Server::Ensemble(_));
    let cs = cluster.connect_string();
    connect(&cs).await.create("/t78", b"", PERSISTENT).await.unwrap();
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
    let writer = tokio::spawn(ensemble_tests::client::write_until(cs.clone(), "/t78/bg-", stop.clone(), acked.clone()));

    // 1. The rolling switch, ZooKeeper's three steps, one server at a time.
    for key in ["quorum.auth.enableSasl", "quorum.auth.learnerRequireSasl", "quorum.auth.serverRequireSasl"] {
        for i in 0..NODES {
            let before = acked.lock().unwrap().len();
            let (c, line) = (cluster.clone(), format!("{key}=true"));
            blocking(move || {
                c.stop(i);
                c.set_config_lines(i, &[line]);
                c.restart(i);
            });
            ensemble_tests::client::acknowledged_since(&acked, before, &format!("{key} on node {}", i + 1)).await;
        }
        eprintln!("t78: {key}=true on every server at {:?}", started.elapsed());
    }
    serving(&cluster, &[0, 1, 2], "the switch").await;

    // 2. A wrong QuorumLearner password keeps server 3 out.
    wrong_password_cannot_join(&cluster, ensemble).await;
    serving(&cluster, &[0, 1, 2], "server 3's return").await;

    // 3. Ensemble's own peer frames: strangers on the quorum port.
    if ensemble {
        strangers_are_refused(&cluster).await;
        serving(&cluster, &[0, 1, 2], "the strangers").await;
    } else {
        eprintln!("t78: ZooKeeper mode: the hand-made Ensemble peer and SASL frames are skipped");
    }

    stop.store(true, Ordering::SeqCst);
    writer.await.expect("the background writer");
    let acked = acked.lock().unwrap().clone();
    let servers: Vec<String> = (0..NODES).map(|i| cluster.client_addr(i).to_string()).collect();
    ensemble_tests::client::assert_on_every_server(&servers, "/t78", &acked).await;
    eprintln!("t78: {} acknowledged writes, all on every node; {:?} in all", acked.len(), started.elapsed());
}

fn jaas_line(jaas: &Path) -> String {
    format!("java.security.auth.login.config={}", jaas.display())
}

/// Nodes `nodes` run and each commits a write.
async fn serving(cluster: &Arc<Cluster>, nodes: &[usize], after: &str) {
    for &i in nodes {
        assert!(blocking(|| cluster.is_running(i)), "node {} exited after {after}", i + 1);
        let client = connect(&cluster.client_addr(i).to_string()).await;
        let path = format!("/t78/{}-via-{}", after.replace([' ', '\''], "-"), i + 1);
        client.create(&path, b"", PERSISTENT).await.unwrap_or_else(|e| panic!("write via node {}: {e}", i + 1));
    }
}

/// Server 3 with a wrong QuorumLearner password: for 10 s it runs but neither follows nor leads while the
/// others serve, and its log names the refusal; then it comes back with the right section.
async fn wrong_password_cannot_join(cluster: &Arc<Cluster>, ensemble: bool) {
    let c = cluster.clone();
    blocking(move || {
        c.stop(2);
        c.set_config_lines(2, &["quorum.auth.learner.saslLoginContext=BadLearner".into()]);
        c.start_node(2);
    });
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let c = cluster.clone();
        let (running, mode) = blocking(move || (c.is_running(2), c.mode(2)));
        assert!(running, "server 3 stopped over a wrong quorum password");
        assert!(
            !matches!(mode, Some(Mode::Follower | Mode::Leader)),
            "server 3 joined with a wrong password: {mode:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    serving(cluster, &[0, 1], "a wrong password on server 3").await;
    let log = cluster.log_text(2);
    let why =
        if ensemble { "refused the credentials of user \"learner\"" } else { "Authentication failed against server" };
    assert!(log.contains(why), "server 3's log does not say {why:?}");
    eprintln!("t78: server 3 with a wrong quorum password stayed out; its log says {why:?}");
    let c = cluster.clone();
    blocking(move || {
        c.stop(2);
        c.set_config_lines(2, &["quorum.auth.learner.saslLoginContext=".into()]);
        c.restart(2);
    });
}

/// Ensemble only: with `serverRequireSasl`, a plaintext stranger claiming server 3 and forwarding a create, a
/// 2 GiB SASL token length, and an exchange stalled after the challenge are dropped by the leader; the same
/// create forwarded after a real exchange with the QuorumLearner credentials is taken.
async fn strangers_are_refused(cluster: &Arc<Cluster>) {
    let leader = leader_other_than_3(cluster).await;
    let quorum = cluster.quorum_addr(leader);
    let client3 = connect(&cluster.client_addr(NODES - 1).to_string()).await;
    let session = client3.session_id().0;

    let mut plain = TcpStream::connect(quorum).await.unwrap();
    let _ = plain.write_all(&claim_and_create(3, session, "/t78/plaintext-stranger")).await;
    assert!(closed(&mut plain).await, "the leader kept a plaintext stranger's connection");

    let mut huge = TcpStream::connect(quorum).await.unwrap();
    let mut header = Frame::new(Status::InProgress, Vec::new()).encode();
    header[6..].copy_from_slice(&0x8000_0000u32.to_be_bytes());
    huge.write_all(&header).await.unwrap();
    assert!(closed(&mut huge).await, "the leader kept a connection announcing a 2 GiB SASL token");

    let mut stalled = TcpStream::connect(quorum).await.unwrap();
    frame::write(&mut stalled, &Frame::new(Status::InProgress, Vec::new())).await.unwrap();
    let challenge = frame::read(&mut stalled).await.expect("a challenge");
    assert_eq!(challenge.status, Status::InProgress);
    assert!(closed(&mut stalled).await, "the leader kept an exchange that stalled after its challenge");

    let mut honest = TcpStream::connect(quorum).await.unwrap();
    node::sasl::quorum::exchange::learn(&mut honest, "learner", "quorum-secret").await.expect("the right password");
    honest.write_all(&claim_and_create(3, session, "/t78/by-a-learner")).await.unwrap();
    honest.flush().await.unwrap();
    let leader_client = connect(&cluster.client_addr(leader).to_string()).await;
    let created = async {
        while leader_client.check_stat("/t78/by-a-learner").await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), created).await.expect("an authenticated member forwards a create");
    drop(honest);
    assert_eq!(leader_client.check_stat("/t78/plaintext-stranger").await.unwrap(), None, "the stranger's create");

    let log = cluster.log_text(leader);
    for refusal in
        ["claims to be server 3, but it did not authenticate with quorum SASL", "over the limit", "no server id within"]
    {
        assert!(log.contains(refusal), "the leader logged no refusal with {refusal:?}");
    }
    eprintln!("t78: the strangers were refused, the authenticated learner let in");
}

/// The leader's index, after moving the leadership off server 3 if it had it (nobody dials the highest id, so
/// a stranger claiming id 3 must dial a lower one).
async fn leader_other_than_3(cluster: &Arc<Cluster>) -> usize {
    let c = cluster.clone();
    blocking(move || {
        let leader = c.leader();
        if leader != NODES - 1 {
            return leader;
        }
        c.stop(NODES - 1);
        let leader = c.leader();
        c.restart(NODES - 1);
        assert_eq!(c.leader(), leader, "the leadership moved when server 3 came back");
        leader
    })
}
