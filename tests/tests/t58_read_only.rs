//! Read-only mode (`readonlymode.enabled=true`, ZooKeeper's `ReadOnlyZooKeeperServer`): a server cut off from its
//! quorum for two seconds serves clients that asked for read-only sessions (the `readOnly` flag at the end of
//! the ConnectRequest), answers every write with NOTREADONLY, says `ro` to `isro`, and refuses clients that did
//! not ask for read-only and sessions created before the partition (global sessions); when the quorum returns
//! it closes the read-only sessions, and clients come back on read-write sessions.
//!
//! A 3-node cluster; two nodes are SIGKILLed, so the third loses its quorum; then they are restarted. The
//! clients are raw protocol sessions (for the exact answers) and kazoo with `read_only=True` (for what a real
//! client does, scripted in `scripts/interop/kazoo_read_only.py`).
//!
//! `localSessionsEnabled=true`: since ZOOKEEPER-3863 (3.7) a ZooKeeper server in read-only mode creates only
//! local sessions, and without local sessions it creates none (the client gets a NOTREADONLY reply header in
//! place of a ConnectResponse: the second test). Ensemble follows it (see `node/src/read_only.rs`).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ensemble_tests::client::PERSISTENT;
use ensemble_tests::raw::{err, op, Body, Connect, RawSession, Reader};
use ensemble_tests::{blocking, connect, eventually, Cluster, Options, Sections};

const DATA: &[u8] = b"written before the partition";
const TIMEOUT_MS: i32 = 10_000;

fn options() -> Options {
    Options {
        config: vec![
            // The feature under test (for Apache ZooKeeper the harness makes it `-Dreadonlymode.enabled=true`).
            "readonlymode.enabled=true".into(),
            // A read-only server creates local sessions only (see the module doc).
            "localSessionsEnabled=true".into(),
            // So that ZooKeeper makes a local session global when it creates an ephemeral (Ensemble's sessions
            // are all global in read-write mode).
            "localSessionsUpgradingEnabled=true".into(),
            // `dump`, which ZooKeeper's default whitelist (`srvr`; `isro` comes with read-only mode) refuses.
            "4lw.commands.whitelist=*".into(),
        ],
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_cut_off_from_its_quorum_serves_read_only_clients_until_it_returns() {
    let cluster = Arc::new(blocking(|| Cluster::start_with(options())));
    let writer = connect(&cluster.connect_string()).await;
    writer.create("/t58", DATA, PERSISTENT).await.expect("create /t58");
    writer.create("/t58/child", b"", PERSISTENT).await.expect("create /t58/child");
    drop(writer);
    let leader = blocking(|| cluster.leader());
    let survivor = blocking(|| cluster.followers())[0];
    let others: Vec<usize> = (0..cluster.len()).filter(|&i| i != survivor).collect();
    let addr = cluster.client_addr(survivor);

    // A session that owns an ephemeral is global (ZooKeeper upgrades a local session that creates one), and its
    // create's reply means the survivor applied it and every write before it.
    let mut global = RawSession::connect(addr, TIMEOUT_MS).await.expect("a session on the survivor");
    let ephemeral = Body::new().string("/t58/ephemeral").buffer(b"").open_acl().int(1);
    assert_eq!(global.request(op::CREATE2, ephemeral).await.expect("create an ephemeral").err, err::OK);
    let (global_id, global_password) = (global.session_id, global.password.clone());

    eprintln!("t58: the leader is node {}; SIGKILL nodes {others:?} (0-based), node {survivor} stays", leader + 1);
    for &i in &others {
        blocking(|| cluster.kill(i));
    }
    eventually("the survivor says `ro` to isro", Duration::from_secs(30), || {
        let answer = cluster.try_four_letter(survivor, "isro").unwrap_or_default();
        std::future::ready((answer == "ro").then_some(()))
    })
    .await;

    let mut s = Sections::new();
    let c = cluster.clone();
    s.run("srvr says read-only", Duration::from_secs(10), async move {
        let srvr = c.four_letter(survivor, "srvr");
        assert!(srvr.contains("READ-ONLY mode; serving only read-only clients\n"), "{srvr}");
        assert!(srvr.contains("\nMode: read-only\n"), "{srvr}");
    })
    .await;
    s.run("a client that did not ask for read-only gets no session", Duration::from_secs(20), async move {
        let connect = Connect { timeout_ms: TIMEOUT_MS, session_id: 0, password: &[0; 16], read_only: false };
        assert_closed(RawSession::open(addr, connect).await, "a read-write client");
    })
    .await;
    s.run("a session from before the partition is not reopened", Duration::from_secs(20), async move {
        let connect =
            Connect { timeout_ms: TIMEOUT_MS, session_id: global_id, password: &global_password, read_only: true };
        assert_closed(RawSession::open(addr, connect).await, "a global session");
    })
    .await;
    s.run("a read-only session reads, and every write answers NOTREADONLY", Duration::from_secs(30), async move {
        read_only_session(addr).await;
    })
    .await;
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    s.run("a read-only session stays open on the survivor", Duration::from_secs(20), async move {
        let mut held = open_read_only(addr, 0, &[0; 16]).await;
        assert_eq!(get_data(&mut held, "/t58").await, DATA);
        // It pings until the server closes it, and says when that was.
        let pinger = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if held.request(op::PING, Body::new()).await.is_err() {
                    return (held, Instant::now());
                }
            }
        });
        let _ = held_tx.send(pinger);
    })
    .await;
    let c = cluster.clone();
    s.run("dump lists the local sessions, then the global ones", Duration::from_secs(10), async move {
        let dump = c.four_letter(survivor, "dump");
        let local = dump.strip_prefix("SessionTracker dump:\nLocal Session Sets (").unwrap_or_else(|| panic!("{dump}"));
        let members: usize = local
            .split_once(")/(")
            .and_then(|(_, m)| m.split_once(')'))
            .map_or(0, |(m, _)| m.parse().unwrap_or_else(|_| panic!("{dump}")));
        assert!(members >= 1, "the held read-only session is a local one:\n{dump}");
        let global = dump.split_once("\nGlobal Sessions(").unwrap_or_else(|| panic!("{dump}")).1;
        assert!(global.contains(&format!("\n0x{global_id:x}\t{TIMEOUT_MS}ms\n")), "{dump}");
    })
    .await;
    let mut kazoo = KazooReadOnly::start(&cluster.connect_string());
    s.run("kazoo connects read-only, reads, and its write fails", Duration::from_secs(90), {
        let lines = kazoo.lines.clone();
        async move { blocking(|| expect_line(&lines, "ro ok", Duration::from_secs(80))) }
    })
    .await;

    eprintln!("t58: restarting nodes {others:?}");
    let restarted = Instant::now();
    for &i in &others {
        blocking(|| cluster.restart(i));
    }
    let c = cluster.clone();
    s.run("the survivor says `rw` and is no longer read-only", Duration::from_secs(60), async move {
        eventually("the survivor says `rw` to isro", Duration::from_secs(50), || {
            std::future::ready((c.try_four_letter(survivor, "isro").unwrap_or_default() == "rw").then_some(()))
        })
        .await;
        let srvr = c.four_letter(survivor, "srvr");
        assert!(!srvr.contains("read-only"), "{srvr}");
    })
    .await;
    let c = cluster.clone();
    s.run("the read-only session is closed and gone", Duration::from_secs(60), async move {
        let pinger = held_rx.await.expect("the held session");
        let (held, closed) = pinger.await.expect("the pinger");
        assert!(closed > restarted, "the held session was closed {:?} before the restart", restarted - closed);
        for i in 0..c.len() {
            // A read-only session was local to the server in read-only mode: no server knows it now.
            let connect = Connect {
                timeout_ms: TIMEOUT_MS,
                session_id: held.session_id,
                password: &held.password,
                read_only: true,
            };
            let reopened = RawSession::open(c.client_addr(i), connect).await.expect("an answer");
            assert_eq!((reopened.timeout_ms, reopened.read_only), (0, Some(false)), "node {}: expired", i + 1);
        }
    })
    .await;
    s.run("kazoo ends up on a read-write session and writes", Duration::from_secs(120), {
        let lines = kazoo.lines.clone();
        kazoo.quorum_back();
        async move { blocking(|| expect_line(&lines, "rw ok", Duration::from_secs(110))) }
    })
    .await;
    let cs = cluster.connect_string();
    s.run("the data is intact", Duration::from_secs(60), async move {
        let client = connect(&cs).await;
        assert_eq!(client.get_data("/t58").await.expect("get /t58").0, DATA);
        let mut children = client.list_children("/t58").await.expect("children of /t58");
        children.retain(|c| c != "ephemeral"); // its session expires whenever the new leader says so
        children.sort();
        assert_eq!(children, ["child", "kazoo-rw"]);
    })
    .await;
    drop(kazoo);
    drop(global);
    s.finish();
}

/// Without `localSessionsEnabled`, a server in read-only mode opens no session at all: ZooKeeper refuses the
/// createSession of what would be a global session like a write, so a read-only client gets a NOTREADONLY reply
/// header (xid 0, the last zxid, -119) where its ConnectResponse should be.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_local_sessions_a_read_only_server_opens_no_session() {
    let options = Options { config: vec!["readonlymode.enabled=true".into()], ..Options::default() };
    let cluster = blocking(|| Cluster::start_with(options));
    connect(&cluster.connect_string()).await.create("/t58", DATA, PERSISTENT).await.expect("create /t58");
    let survivor = blocking(|| cluster.followers())[0];
    for i in (0..cluster.len()).filter(|&i| i != survivor) {
        blocking(|| cluster.kill(i));
    }
    eventually("the survivor says `ro` to isro", Duration::from_secs(30), || {
        std::future::ready((cluster.try_four_letter(survivor, "isro").unwrap_or_default() == "ro").then_some(()))
    })
    .await;
    let connect = Connect { timeout_ms: TIMEOUT_MS, session_id: 0, password: &[0; 16], read_only: true };
    match RawSession::open(cluster.client_addr(survivor), connect).await {
        Ok(s) => panic!("a session was opened: 0x{:x}, timeout {} ms", s.session_id, s.timeout_ms),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            let header = e.to_string();
            assert_eq!(header.len(), 32, "a reply header: {header}");
            assert!(header.starts_with("00000000") && header.ends_with("ffffff89"), "xid 0, NOTREADONLY: {header}");
        }
        Err(e) => panic!("expected a NOTREADONLY reply header, got {e}"),
    }
    let connect = Connect { read_only: false, ..connect };
    assert_closed(RawSession::open(cluster.client_addr(survivor), connect).await, "a read-write client");
}

/// A new read-only session on `addr` (or `session` reopened with `password`), which must be granted as one.
async fn open_read_only(addr: SocketAddr, session: i64, password: &[u8]) -> RawSession {
    let connect = Connect { timeout_ms: TIMEOUT_MS, session_id: session, password, read_only: true };
    let opened = RawSession::open(addr, connect).await.expect("a read-only session");
    assert!(opened.timeout_ms > 0 && opened.session_id != 0, "a session is granted ({} ms)", opened.timeout_ms);
    assert_eq!(opened.read_only, Some(true), "the ConnectResponse says read-only");
    opened
}

/// Reads, refused writes, reopening, and closing of one read-only session.
async fn read_only_session(addr: SocketAddr) {
    let mut ro = open_read_only(addr, 0, &[0; 16]).await;
    assert_eq!(get_data(&mut ro, "/t58").await, DATA);
    let exists = ro.request(op::EXISTS, Body::new().string("/t58/child").boolean(true)).await.expect("exists");
    assert_eq!(exists.err, err::OK);
    let writes = [
        ("create", op::CREATE2, Body::new().string("/t58/ro").buffer(b"").open_acl().int(0)),
        ("setData", op::SET_DATA, Body::new().string("/t58").buffer(b"x").int(-1)),
        ("delete", op::DELETE, Body::new().string("/t58/child").int(-1)),
        ("check", op::CHECK, Body::new().string("/t58").int(-1)),
        ("sync", op::SYNC, Body::new().string("/t58")),
        // A multi is refused before its body is read: this one has none.
        ("multi", op::MULTI, Body::new()),
    ];
    for (name, code, body) in writes {
        let reply = ro.request(code, body).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(reply.err, err::NOT_READ_ONLY, "{name} in read-only mode");
    }
    assert_eq!(get_data(&mut ro, "/t58").await, DATA, "the session goes on after refused writes");

    // The session outlives its connection, on this server, until its timeout.
    let (id, password) = (ro.session_id, ro.password.clone());
    drop(ro);
    let mut again = open_read_only(addr, id, &password).await;
    assert_eq!(again.session_id, id, "the same session");
    assert_eq!(get_data(&mut again, "/t58").await, DATA);
    let closed = again.request(op::CLOSE_SESSION, Body::new()).await.expect("closeSession");
    assert_eq!(closed.err, err::OK);
    assert!(again.closed_by_server().await, "the connection closes with the session");
    let connect = Connect { timeout_ms: TIMEOUT_MS, session_id: id, password: &password, read_only: true };
    let gone = RawSession::open(addr, connect).await.expect("an answer");
    assert_eq!((gone.timeout_ms, gone.session_id), (0, 0), "a closed session is expired");
}

async fn get_data(session: &mut RawSession, path: &str) -> Vec<u8> {
    let reply = session.request(op::GET_DATA, Body::new().string(path).boolean(false)).await.expect("getData");
    assert_eq!(reply.err, err::OK, "getData {path}");
    Reader(&reply.body).buffer()
}

/// The server closed the connection instead of answering the ConnectRequest.
fn assert_closed(opened: std::io::Result<RawSession>, who: &str) {
    match opened {
        Ok(s) => panic!("{who} got an answer: session 0x{:x}, timeout {} ms", s.session_id, s.timeout_ms),
        Err(e) => assert!(
            matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset),
            "{who}: expected the connection closed, got {e}"
        ),
    }
}

/// `scripts/interop/kazoo_read_only.py`, its output lines as they come.
struct KazooReadOnly {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: Arc<std::sync::Mutex<mpsc::Receiver<String>>>,
}

impl KazooReadOnly {
    fn start(hosts: &str) -> KazooReadOnly {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/interop/kazoo_read_only.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([hosts, "/t58", std::str::from_utf8(DATA).expect("utf-8")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run python3 (kazoo: python3 -m pip install kazoo)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("kazoo_read_only.py: {line}");
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        KazooReadOnly { child, stdin, lines: Arc::new(std::sync::Mutex::new(rx)) }
    }

    /// Tells the script the quorum is back (phase 2).
    fn quorum_back(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"quorum back\n");
        }
    }
}

impl Drop for KazooReadOnly {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for the line `want` from the script; fails on a `FAIL` line, its exit, or the timeout.
fn expect_line(lines: &std::sync::Mutex<mpsc::Receiver<String>>, want: &str, timeout: Duration) {
    let lines = lines.lock().unwrap_or_else(|e| e.into_inner());
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line == want => return,
            Ok(line) if line.starts_with("FAIL") => panic!("kazoo: {line}"),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("kazoo did not say {want:?} within {timeout:?}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("kazoo exited before saying {want:?}"),
        }
    }
}
