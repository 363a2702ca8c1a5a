//! Durability across crashes on a 3-node cluster, with writers running throughout: SIGKILL of the leader (a new
//! leader is elected, writes go on, the old leader comes back and catches up), SIGKILL of all three nodes at
//! once, and a clean stop (SIGTERM) and restart of all three. After each, every write a client saw succeed is
//! readable on every node, nothing is applied twice, and nothing appears that no client wrote.
//!
//! Each writer (one session, 8 creates in flight at a time) owns sequential nodes `/t30/seq/r<round>w<k>-<n>`
//! (data `r<round>w<k>-<i>` for its i-th attempt) and one node `/t30/last-r<round>w<k>` it sets to its latest
//! `i`. A write whose outcome the client cannot know (the connection broke before the reply) is "uncertain": it
//! may or may not have applied, but at most once. One session's writes must apply in the order it sent them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ensemble_tests::client::{catch_up, PERSISTENT, SEQUENTIAL};
use ensemble_tests::fourlw::parse_mode;
use ensemble_tests::process::Server;
use ensemble_tests::{blocking, connect, eventually, Cluster, Mode, Options};
use zookeeper_client::{Client, Error, MultiReadResult};

const WRITERS: usize = 4;
/// Creates each writer has in flight at once.
const PIPELINE: usize = 8;

#[derive(Clone, Default)]
struct Log {
    /// Attempt i of the sequential create acknowledged with this node name.
    acked: BTreeMap<usize, String>,
    /// Attempts of the sequential create with an unknown outcome.
    uncertain: BTreeSet<usize>,
    /// The last acknowledged set of `/t30/last<k>`, and later attempts with an unknown outcome.
    last_acked: Option<usize>,
    last_uncertain: BTreeSet<usize>,
    expired_sessions: usize,
}

struct Writer {
    /// `r<round>w<k>`: unique in the test.
    name: String,
    log: Mutex<Log>,
    acks: AtomicUsize,
}

/// Whether a write that failed with `e` may still have applied: anything but an answer from the server that
/// refused it (a broken connection shows as ConnectionLoss or as the IO error itself).
fn uncertain(e: &Error) -> bool {
    !matches!(
        e,
        Error::NoNode
            | Error::NodeExists
            | Error::BadVersion
            | Error::NoAuth
            | Error::NotEmpty
            | Error::InvalidAcl
            | Error::BadArguments(_)
            | Error::NoChildrenForEphemerals
    )
}

async fn write_loop(cs: String, w: Arc<Writer>, stop: Arc<AtomicBool>) {
    let mut c = connect(&cs).await;
    c.create(&format!("/t30/last-{}", w.name), b"0", PERSISTENT).await.unwrap();
    let prefix = format!("/t30/seq/{}-", w.name);
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        // PIPELINE creates in flight at once (sent in order), then one set.
        let creates: Vec<_> = (1..=PIPELINE)
            .map(|n| {
                let attempt = i + n;
                let payload = format!("{}-{attempt}", w.name);
                // The request is sent here, in order; the future only waits for the reply.
                let reply = c.create(&prefix, payload.as_bytes(), SEQUENTIAL);
                async move { (attempt, reply.await) }
            })
            .collect();
        let creates = futures_util::future::join_all(creates).await;
        i += PIPELINE;
        let set = c.set_data(&format!("/t30/last-{}", w.name), i.to_string().as_bytes(), None).await;
        let failed = record(&w, creates, i, set);
        if c.state() == zookeeper_client::SessionState::Expired {
            w.log.lock().unwrap().expired_sessions += 1;
            eprintln!("writer {}: session expired; reconnecting", w.name);
            c = connect(&cs).await;
        } else if failed {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

type CreateResult = Result<(zookeeper_client::Stat, zookeeper_client::CreateSequence), Error>;

/// Records the outcome of the creates and of the set of `i`; returns whether the set failed.
fn record(
    w: &Writer,
    creates: Vec<(usize, CreateResult)>,
    i: usize,
    set: Result<zookeeper_client::Stat, Error>,
) -> bool {
    let mut log = w.log.lock().unwrap();
    for (attempt, create) in creates {
        match create {
            Ok((_, seq)) => {
                log.acked.insert(attempt, format!("{}-{seq}", w.name));
                w.acks.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) if uncertain(&e) => {
                log.uncertain.insert(attempt);
            }
            Err(e) => panic!("writer {}: create {attempt}: {e}", w.name),
        }
    }
    match set {
        Ok(_) => {
            log.last_acked = Some(i);
            false
        }
        Err(e) if uncertain(&e) => {
            log.last_uncertain.insert(i);
            true
        }
        Err(e) => panic!("writer {}: set {i}: {e}", w.name),
    }
}

struct Load {
    writers: Vec<Arc<Writer>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(cs: &str, round: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<Arc<Writer>> = (0..WRITERS)
            .map(|k| {
                Arc::new(Writer { name: format!("r{round}w{k}"), log: Mutex::default(), acks: AtomicUsize::new(0) })
            })
            .collect();
        let tasks = writers.iter().map(|w| tokio::spawn(write_loop(cs.to_string(), w.clone(), stop.clone()))).collect();
        Load { writers, stop, tasks }
    }

    /// Waits until every writer had `n` more creates acknowledged.
    async fn progress(&self, n: usize, what: &str) {
        let base: Vec<usize> = self.writers.iter().map(|w| w.acks.load(Ordering::SeqCst)).collect();
        eventually(&format!("every writer has {n} more writes acknowledged {what}"), Duration::from_secs(60), || {
            assert!(!self.tasks.iter().any(|t| t.is_finished()), "a writer stopped (its panic is above)");
            let done = self.writers.iter().zip(&base).all(|(w, b)| w.acks.load(Ordering::SeqCst) >= b + n);
            std::future::ready(done.then_some(()))
        })
        .await;
    }

    async fn stop(self) -> Vec<Arc<Writer>> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("writer task");
        }
        self.writers
    }
}

/// Every node of `path` with its data, read through `c` with multiRead in batches.
async fn read_all(c: &Client, path: &str) -> BTreeMap<String, Vec<u8>> {
    let names = c.list_children(path).await.unwrap();
    let mut out = BTreeMap::new();
    for batch in names.chunks(200) {
        let mut reader = c.new_multi_reader();
        for name in batch {
            reader.add_get_data(&format!("{path}/{name}")).unwrap();
        }
        for (name, result) in batch.iter().zip(reader.commit().await.unwrap()) {
            match result {
                MultiReadResult::Data { data, .. } => out.insert(name.clone(), data),
                other => panic!("{path}/{name}: {other:?}"),
            };
        }
    }
    out
}

/// Checks the writers' logs against every node, each read on its own once it caught up.
async fn verify(cluster: &Cluster, writers: &[Arc<Writer>], when: &str) {
    let logs: Vec<(String, Log)> = writers.iter().map(|w| (w.name.clone(), w.log.lock().unwrap().clone())).collect();
    let mut first: Option<BTreeMap<String, Vec<u8>>> = None;
    let marker = connect(&cluster.connect_string()).await;
    for node in 0..cluster.len() {
        let c = connect(&cluster.client_addr(node).to_string()).await;
        catch_up(&c, &marker).await;
        let seq = read_all(&c, "/t30/seq").await;
        let mut seen: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (name, data) in &seq {
            seen.entry(String::from_utf8_lossy(data).into_owned()).or_default().push(name);
        }
        let at = format!("{when}, node {}", node + 1);
        for (payload, names) in &seen {
            assert_eq!(names.len(), 1, "{at}: {payload} applied {} times: {names:?}", names.len());
        }
        for (k, log) in &logs {
            // One session's writes apply in the order it sent them: sequence numbers grow with the attempts.
            let seqs: Vec<&str> = log.acked.values().map(|name| name.rsplit('-').next().unwrap_or("")).collect();
            assert!(seqs.windows(2).all(|p| p[0] < p[1]), "{at}: writer {k}'s creates applied out of order: {seqs:?}");
            for (i, name) in &log.acked {
                let payload = format!("{k}-{i}");
                let found = seen.get(&payload).unwrap_or_else(|| panic!("{at}: acknowledged {payload} ({name}) lost"));
                assert_eq!(found, &[name.as_str()], "{at}: {payload} under another name");
            }
            let last = c.get_data(&format!("/t30/last-{k}")).await.unwrap().0;
            let last: usize = String::from_utf8_lossy(&last).parse().unwrap_or(0);
            let acked = log.last_acked.unwrap_or(0);
            assert!(
                last == acked || (last > acked && log.last_uncertain.contains(&last)),
                "{at}: /t30/last-{k} is {last}, but the last acknowledged set was {acked}"
            );
        }
        for payload in seen.keys() {
            let known = logs.iter().any(|(k, log)| {
                let attempt = payload.strip_prefix(&format!("{k}-")).and_then(|i| i.parse::<usize>().ok());
                attempt.is_some_and(|i| log.acked.contains_key(&i) || log.uncertain.contains(&i))
            });
            assert!(known, "{at}: {payload} was never written");
        }
        match &first {
            None => first = Some(seq),
            Some(expected) => assert!(expected == &seq, "{at}: the nodes disagree on /t30/seq"),
        }
    }
    let acked: usize = logs.iter().map(|(_, log)| log.acked.len()).sum();
    let unknown: usize = logs.iter().map(|(_, log)| log.uncertain.len()).sum();
    eprintln!("verified {when}: {acked} acknowledged creates, {unknown} uncertain, on every node");
}

/// Polls `srvr` on the nodes other than `dead` until one leads: until then each answer is either a `Mode:` line
/// or ZooKeeper's "not currently serving" (a refused connection is fine too).
fn srvr_while_electing(cluster: &Cluster, dead: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for i in (0..cluster.len()).filter(|&i| i != dead) {
            let Ok(answer) = cluster.try_four_letter(i, "srvr") else { continue };
            match parse_mode(&answer) {
                Some(Mode::Leader) => return,
                Some(_) => {}
                // No answer at all: a node between roles may close a connection before it answers.
                None if answer.is_empty() => {}
                None => assert!(
                    answer.contains("This ZooKeeper instance is not currently serving requests"),
                    "srvr of node {} while electing: {answer:?}",
                    i + 1
                ),
            }
        }
        assert!(Instant::now() < deadline, "no new leader within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crashes_lose_no_acknowledged_write() {
    // Snapshots and segment rolls between the crashes, so that recovery starts from a snapshot and a log.
    let cluster = Arc::new(blocking(|| Cluster::start_with(Options { snap_count: 50, ..Options::small_files() })));
    let cs = cluster.connect_string();
    let setup = connect(&cs).await;
    setup.create("/t30", b"", PERSISTENT).await.unwrap();
    setup.create("/t30/seq", b"", PERSISTENT).await.unwrap();
    for k in 0..WRITERS {
        setup.create(&format!("/t30/last-{k}"), b"0", PERSISTENT).await.unwrap();
    }

    // 1. SIGKILL the leader while the writers write.
    let load = Load::start(&cs, 1);
    load.progress(15, "before the leader is killed").await;
    let old = blocking(|| cluster.leader());
    blocking(|| cluster.kill(old));
    blocking(|| srvr_while_electing(&cluster, old));
    load.progress(15, "after the leader was killed").await;
    let new = blocking(|| cluster.leader());
    assert_ne!(new, old, "the killed node leads");
    blocking(|| cluster.restart(old));
    load.progress(5, "after the old leader came back").await;
    let writers = load.stop().await;
    verify(&cluster, &writers, "after the leader's crash").await;

    // 2. SIGKILL all three while the writers write, then start them again.
    let load = Load::start(&cs, 2);
    load.progress(10, "before all nodes are killed").await;
    blocking(|| {
        (0..cluster.len()).for_each(|i| {
            cluster.kill(i);
        })
    });
    blocking(|| (0..cluster.len()).for_each(|i| cluster.start_node(i)));
    blocking(|| cluster.wait_serving());
    load.progress(10, "after all nodes restarted").await;
    let mut writers = writers;
    writers.extend(load.stop().await);
    verify(&cluster, &writers, "after all nodes were killed").await;

    // 3. Stop all three cleanly and start them again: everything is still there.
    blocking(|| {
        for i in 0..cluster.len() {
            let status = cluster.stop(i);
            if matches!(cluster.server(), Server::Ensemble(_)) {
                assert!(status.success(), "node {} exited with {status} on SIGTERM", i + 1);
            }
        }
        (0..cluster.len()).for_each(|i| cluster.start_node(i));
        cluster.wait_serving();
    });
    verify(&cluster, &writers, "after a clean restart").await;
    let expired: usize = writers.iter().map(|w| w.log.lock().unwrap().expired_sessions).sum();
    eprintln!("writer sessions that expired: {expired}");
}
