//! Helpers for tests that talk to a cluster through `zookeeper-client`: connecting with retries, polling with
//! a deadline, and running named sections of one test so that one failure does not hide the others.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zookeeper_client::{Acls, Client, CreateMode, CreateOptions, Error, PersistentWatcher, WatchedEvent};

/// Persistent nodes anyone may do anything with.
pub static PERSISTENT: &CreateOptions<'static> = &CreateMode::Persistent.with_acls(Acls::anyone_all());
/// Ephemeral nodes anyone may do anything with.
pub static EPHEMERAL: &CreateOptions<'static> = &CreateMode::Ephemeral.with_acls(Acls::anyone_all());
/// Persistent sequential nodes anyone may do anything with.
pub static SEQUENTIAL: &CreateOptions<'static> = &CreateMode::PersistentSequential.with_acls(Acls::anyone_all());

/// How long a connect may take before the test fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to `cluster` (a connect string) with a 10 s session, retrying for up to 30 s.
pub async fn connect(cluster: &str) -> Client {
    connect_with(cluster, Duration::from_secs(10)).await
}

/// Connects to `cluster` asking for `session_timeout`, retrying for up to 30 s. The new session then syncs, so
/// that it sees every write committed before it connected whichever server it landed on (ZooKeeper promises a
/// client its own writes in order, not other clients' writes at once: that is what `sync` is for).
pub async fn connect_with(cluster: &str, session_timeout: Duration) -> Client {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let mut connector = Client::connector();
        connector.session_timeout(session_timeout);
        let error = match tokio::time::timeout(Duration::from_secs(10), connector.connect(cluster)).await {
            Ok(Ok(client)) => match client.sync("/").await {
                Ok(()) => return client,
                Err(e) => format!("sync after connecting: {e}"),
            },
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no session within 10 s".to_string(),
        };
        assert!(Instant::now() < deadline, "cannot connect to {cluster} within {CONNECT_TIMEOUT:?}: {error}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Calls `f` every 50 ms until it returns `Some`, and returns that; fails the test with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next node event of a persistent watch, skipping session events; fails the test after 10 s.
pub async fn next_event(watcher: &mut PersistentWatcher) -> WatchedEvent {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), watcher.changed())
            .await
            .expect("a persistent watch event within 10 s");
        if event.event_type != zookeeper_client::EventType::Session {
            return event;
        }
    }
}

/// Waits until the node `reader` talks to has applied every write committed before now: `writer` creates a
/// marker node and `reader` polls until it sees it (nodes apply in zxid order). Unlike `sync`, this needs
/// nothing but create and exists from the server.
pub async fn catch_up(reader: &Client, writer: &Client) {
    const DIR: &str = "/ensemble-tests-markers";
    match writer.create(DIR, b"", PERSISTENT).await {
        Ok(_) | Err(Error::NodeExists) => {}
        Err(e) => panic!("create {DIR}: {e}"),
    }
    let (_, seq) = writer.create(&format!("{DIR}/m-"), b"", SEQUENTIAL).await.expect("create a marker");
    let marker = format!("{DIR}/m-{seq}");
    eventually(&format!("the reader's node has {marker}"), Duration::from_secs(30), || async {
        reader.check_stat(&marker).await.ok().flatten().map(|_| ())
    })
    .await;
}

/// Runs a blocking harness call (e.g. [`crate::Cluster::kill`]) from async test code on a multi-thread runtime.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Runs the named sections of a test one after the other, each in its own task with a timeout, and records
/// which failed; [`Sections::finish`] fails the test naming all of them.
#[derive(Default)]
pub struct Sections {
    failed: Vec<String>,
}

impl Sections {
    /// No section run yet.
    pub fn new() -> Sections {
        Sections::default()
    }

    /// Runs `section`; a panic or a timeout marks it failed and the next section still runs. With
    /// `ENSEMBLE_SECTION` set, only the sections whose name contains it run (to debug one of them).
    pub async fn run<F>(&mut self, name: &str, timeout: Duration, section: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if std::env::var("ENSEMBLE_SECTION").is_ok_and(|only| !name.contains(&only)) {
            eprintln!("section {name}: skipped (ENSEMBLE_SECTION)");
            return;
        }
        let started = Instant::now();
        let task = tokio::spawn(section);
        let abort = task.abort_handle();
        let outcome = match tokio::time::timeout(timeout, task).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) if e.is_panic() => Some(panic_message(e.into_panic())),
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => {
                abort.abort();
                Some(format!("timed out after {timeout:?}"))
            }
        };
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            None => eprintln!("section {name}: ok ({secs:.1} s)"),
            Some(message) => {
                eprintln!("section {name}: FAILED after {secs:.1} s: {message}");
                self.failed.push(format!("{name}: {message}"));
            }
        }
    }

    /// Fails the test if any section failed.
    pub fn finish(self) {
        assert!(self.failed.is_empty(), "{} section(s) failed:\n  {}", self.failed.len(), self.failed.join("\n  "));
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload.downcast::<&str>().map_or_else(|_| "(non-string panic)".to_string(), |s| s.to_string()),
    }
}

/// Waits (up to 20 s) until [`write_until`] has a write acknowledged after the first `before`; `after` names
/// what happened before, for the failure.
pub async fn acknowledged_since(acked: &Mutex<Vec<String>>, before: usize, after: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap_or_else(|e| e.into_inner()).len() <= before {
        assert!(Instant::now() < deadline, "no write acknowledged within 20 s after {after}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that every path in `acked` is on each of the servers at the client addresses `servers` (node 1
/// first), each read after a `sync` of `root` there, so that a follower still catching up is not taken for one
/// that lost a write.
pub async fn assert_on_every_server(servers: &[String], root: &str, acked: &[String]) {
    for (i, addr) in servers.iter().enumerate() {
        let client = connect(addr).await;
        client.sync(root).await.unwrap_or_else(|e| panic!("sync {root} on node {}: {e}", i + 1));
        for path in acked {
            let found = client.check_stat(path).await.unwrap_or_else(|e| panic!("read {path} on node {}: {e}", i + 1));
            assert!(found.is_some(), "acknowledged write {path} missing on node {}", i + 1);
        }
    }
}

/// Sequential creates of `{prefix}-NNNNNNNNNN` through the whole connect string `cs` until `stop`, every 5 ms;
/// the acknowledged paths go into `acked`. A write whose connection broke has an unknown outcome and is not
/// recorded (the client reconnects); a server's refusal is a bug in a test that only writes, and panics.
pub async fn write_until(cs: String, prefix: &'static str, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<String>>>) {
    let mut client = connect(&cs).await;
    while !stop.load(Ordering::SeqCst) {
        match client.create(prefix, b"x", SEQUENTIAL).await {
            Ok((_, seq)) => acked.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{prefix}{seq}")),
            Err(e @ (Error::NoNode | Error::NodeExists | Error::NoAuth | Error::BadArguments(_))) => {
                panic!("background write: {e}")
            }
            Err(_) => client = connect(&cs).await,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
