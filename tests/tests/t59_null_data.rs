//! Null data: ZooKeeper keeps a znode's `null` data (a jute buffer of length -1, what `create(path, null)` and
//! zkCli's `create /path` write) apart from empty data, and so must every layer that stores data: the request,
//! the txn, the tree, snapshots, recovery after a restart, SNAP sync to a follower, and the getData reply.
//!
//! Null data is written three ways (a raw create2, setData and multi; zkCli's `create` without data; kazoo's
//! `create(path, None)`) next to empty and non-empty data, and read back byte for byte (the length field of the
//! getData reply) and through kazoo (`None` against `b""`) from every server: after the writes, on a follower
//! that was down while the leader's log was purged past it (so it syncs by snapshot), and after every server
//! restarted (recovery from a snapshot and the log).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use ensemble_tests::client::PERSISTENT;
use ensemble_tests::process::Server;
use ensemble_tests::raw::{err, op, Body, RawSession, Reader};
use ensemble_tests::{blocking, connect, eventually, Cluster, Options};
use zookeeper_client::Client;

const ZKCLI: &str = "/usr/share/zookeeper/bin/zkCli.sh";

/// Znodes of 4 KiB written while a follower is away: enough for retention to purge the leader's log past it.
const FILL: usize = 4000;

/// Every znode the test writes, with the data each must end with (`None`: null).
const EXPECTED: [(&str, Option<&[u8]>); 9] = [
    ("/t59/null", None),
    ("/t59/empty", Some(b"")),
    ("/t59/bytes", Some(b"x")),
    ("/t59/set-null", None),
    ("/t59/set-empty", Some(b"")),
    ("/t59/multi-null", None),
    ("/t59/zkcli", None),
    ("/t59/kazoo", None),
    ("/t59/set-while-away", None),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn null_data_survives_every_layer() {
    require_tools();
    // Small segments, so that the leader's log is purged past the follower that is away (a SNAP sync).
    let cluster = blocking(|| Cluster::start_with(Options { snap_count: 1000, ..Options::small_files() }));
    let leader = blocking(|| cluster.leader());
    // The longest session the default bounds allow: this one sends no pings, and waits through two zkCli.sh runs
    // and a kazoo run before its next request.
    let mut raw = RawSession::connect(cluster.client_addr(leader), 40_000).await.unwrap();
    create(&mut raw, "/t59", Some(b"")).await;
    create(&mut raw, "/t59/null", None).await;
    create(&mut raw, "/t59/empty", Some(b"")).await;
    create(&mut raw, "/t59/bytes", Some(b"x")).await;
    create(&mut raw, "/t59/set-null", Some(b"y")).await;
    set(&mut raw, "/t59/set-null", None).await;
    create(&mut raw, "/t59/set-empty", None).await;
    set(&mut raw, "/t59/set-empty", Some(b"")).await;
    create(&mut raw, "/t59/set-while-away", Some(b"z")).await;
    let multi = Body::new()
        .int(op::CREATE2)
        .boolean(false)
        .int(-1)
        .string("/t59/multi-null")
        .null_buffer()
        .open_acl()
        .int(0)
        .int(-1)
        .boolean(true)
        .int(-1);
    assert_eq!(raw.request(op::MULTI, multi).await.unwrap().err, err::OK, "multi");
    zkcli(cluster.client_addr(leader), &["create", "/t59/zkcli"], "Created /t59/zkcli");
    kazoo(&cluster.connect_string(), "zk.create('/t59/kazoo', None)");
    let (null_shown, _) = zkcli(cluster.client_addr(leader), &["get", "/t59/null"], "");
    assert!(null_shown.lines().any(|l| l == "null"), "zkCli's get prints null data as `null`:\n{null_shown}");

    // A follower away while the leader's log is purged past it gets a snapshot, with a null set while it was away.
    let away = blocking(|| cluster.followers())[0];
    blocking(|| cluster.kill(away));
    set(&mut raw, "/t59/set-while-away", None).await;
    let writer = connect(&cluster.client_addr(leader).to_string()).await;
    fill(&writer).await;
    blocking(|| cluster.restart(away));
    let follower = connect(&cluster.client_addr(away).to_string()).await;
    eventually("the follower caught up", Duration::from_secs(60), || async {
        (follower.list_children("/t59/fill").await.ok()?.len() == FILL).then_some(())
    })
    .await;
    if matches!(cluster.server(), Server::Ensemble(_)) {
        let log = cluster.log_text(away);
        assert!(log.contains("installed the leader's snapshot"), "the follower did not sync by snapshot:\n{log}");
    }
    drop((raw, writer, follower));
    expect_everywhere(&cluster, "after the writes and a SNAP sync").await;

    // Every server recovers from its snapshot and log.
    for i in 0..cluster.len() {
        blocking(|| cluster.kill(i));
    }
    for i in 0..cluster.len() {
        blocking(|| cluster.start_node(i));
    }
    blocking(|| cluster.wait_serving());
    expect_everywhere(&cluster, "after every server restarted").await;
}

/// Every server holds exactly [`EXPECTED`], read byte for byte and by kazoo.
async fn expect_everywhere(cluster: &Cluster, when: &str) {
    for i in 0..cluster.len() {
        let addr = cluster.client_addr(i);
        let what = format!("node {} holds the expected data {when}", i + 1);
        eventually(&what, Duration::from_secs(30), || async {
            let mut raw = RawSession::connect(addr, 10_000).await.ok()?;
            for (path, data) in EXPECTED {
                let (got, data_length) = get(&mut raw, path).await?;
                assert_eq!(got.as_deref(), data, "node {}, {when}: the data of {path}", i + 1);
                assert_eq!(data_length, data.map_or(0, <[u8]>::len), "node {}, {when}: dataLength of {path}", i + 1);
            }
            Some(())
        })
        .await;
        let checks: Vec<String> =
            EXPECTED.iter().map(|(path, data)| format!("check({path:?}, {})", python_bytes(*data))).collect();
        kazoo(&addr.to_string(), &checks.join("; "));
    }
}

async fn create(raw: &mut RawSession, path: &str, data: Option<&[u8]>) {
    let body = with_data(Body::new().string(path), data).open_acl().int(0);
    let reply = raw.request(op::CREATE2, body).await.unwrap();
    assert_eq!(reply.err, err::OK, "create {path}");
}

async fn set(raw: &mut RawSession, path: &str, data: Option<&[u8]>) {
    let reply = raw.request(op::SET_DATA, with_data(Body::new().string(path), data).int(-1)).await.unwrap();
    assert_eq!(reply.err, err::OK, "setData {path}");
}

/// A getData's data (`None`: null) and the `dataLength` of its stat; `None` if the node is not there yet.
async fn get(raw: &mut RawSession, path: &str) -> Option<(Option<Vec<u8>>, usize)> {
    let reply = raw.request(op::GET_DATA, Body::new().string(path).boolean(false)).await.ok()?;
    if reply.err == err::NO_NODE {
        return None;
    }
    assert_eq!(reply.err, err::OK, "getData {path}");
    let mut r = Reader(&reply.body);
    let data = r.nullable_buffer();
    // Stat: czxid, mzxid, ctime, mtime (longs), version, cversion, aversion (ints), ephemeralOwner, dataLength.
    for _ in 0..4 {
        r.long();
    }
    for _ in 0..3 {
        r.int();
    }
    r.long();
    let data_length = usize::try_from(r.int()).expect("dataLength is never negative");
    Some((data, data_length))
}

fn with_data(body: Body, data: Option<&[u8]>) -> Body {
    match data {
        Some(d) => body.buffer(d),
        None => body.null_buffer(),
    }
}

/// Creates `/t59/fill/n<i>` with 4 KiB each, 100 at a time in flight.
async fn fill(client: &Client) {
    client.create("/t59/fill", b"", PERSISTENT).await.unwrap();
    let data = vec![b'f'; 4096];
    for chunk in (0..FILL).collect::<Vec<_>>().chunks(100) {
        let creates = chunk.iter().map(|i| {
            let (path, data) = (format!("/t59/fill/n{i}"), &data);
            async move { client.create(&path, data, PERSISTENT).await.map(|_| ()) }
        });
        for (i, result) in chunk.iter().zip(futures_util::future::join_all(creates).await) {
            result.unwrap_or_else(|e| panic!("create /t59/fill/n{i}: {e}"));
        }
    }
}

fn python_bytes(data: Option<&[u8]>) -> String {
    match data {
        None => "None".into(),
        Some(d) => format!("b{:?}", String::from_utf8(d.to_vec()).expect("ASCII test data")),
    }
}

/// Runs `statements` in a kazoo session on `hosts`, with `check(path, expected)` defined; fails the test with
/// the script's output if it fails.
fn kazoo(hosts: &str, statements: &str) {
    let script = format!(
        "import sys\nfrom kazoo.client import KazooClient\nzk = KazooClient(hosts={hosts:?}, timeout=15)\nzk.start(timeout=30)\n\
         def check(path, expected):\n    got = zk.get(path)[0]\n    assert got == expected, f'{{path}}: kazoo got {{got!r}}, expected {{expected!r}}'\n\
         {statements}\nzk.stop()\n"
    );
    let out = Command::new("python3").arg("-c").arg(&script).output().expect("python3 runs");
    assert!(
        out.status.success(),
        "kazoo on {hosts}: {statements}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs one zkCli.sh command against `addr`; its output (stdout, stderr). Fails unless stdout or stderr
/// contains `expect`.
fn zkcli(addr: SocketAddr, command: &[&str], expect: &str) -> (String, String) {
    let out = Command::new(ZKCLI).arg("-server").arg(addr.to_string()).args(command).output().expect("zkCli.sh runs");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(
        stdout.contains(expect) || stderr.contains(expect),
        "zkCli {command:?} did not print {expect:?}:\n{stdout}{stderr}"
    );
    (stdout, stderr)
}

fn require_tools() {
    let kazoo = Command::new("python3").args(["-c", "import kazoo"]).status().is_ok_and(|s| s.success());
    assert!(kazoo, "kazoo is not installed for python3: install it with `python3 -m pip install kazoo`");
    assert!(
        std::path::Path::new(ZKCLI).is_file(),
        "{ZKCLI} is missing: install it with `apt-get install -y zookeeper`"
    );
}
