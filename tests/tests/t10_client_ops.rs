//! Every client operation against a 3-node cluster, through the Rust client `zookeeper-client`: the create
//! variants, reads and writes with versions, children, sequential names, multi and multiRead, ACLs with digest
//! auth and whoAmI, sync, closeSession, the four-letter words, and writes via a follower read on the leader.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ensemble_tests::client::{catch_up, EPHEMERAL, PERSISTENT, SEQUENTIAL};
use ensemble_tests::raw::{op, Body, RawSession, Reader};
use ensemble_tests::{blocking, connect, eventually, Cluster, Mode, Options, Sections};
use sha1::Digest as _;
use zookeeper_client::{
    Acl, Acls, AuthId, AuthUser, CheckWriteError, Client, CreateMode, Error, MultiReadResult, MultiWriteError,
    MultiWriteResult, Permission,
};

const SECTION_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_operations_on_three_nodes() {
    // The four-letter-word section asks `ruok` and `cons`, which ZooKeeper's default whitelist (`srvr`) refuses.
    let config = vec![
        "4lw.commands.whitelist=*".into(),
        // createTTL and the reaping of TTL nodes: ZooKeeper has TTL nodes off by default.
        "extendedTypesEnabled=true".into(),
        // The reaping section waits for the container manager, which by default looks once a minute.
        "znode.container.checkIntervalMs=300".into(),
    ];
    let options = Options { config, ..Options::default() };
    let cluster = Arc::new(blocking(|| Cluster::start_with(options)));
    let cs = cluster.connect_string();
    let setup = connect(&cs).await;
    setup.create("/t10", b"", PERSISTENT).await.unwrap();
    drop(setup);
    let mut s = Sections::new();
    s.run("create variants", SECTION_TIMEOUT, create_variants(cs.clone())).await;
    s.run("read, write, delete with versions", SECTION_TIMEOUT, read_write_delete(cs.clone())).await;
    s.run("children, counts, ephemerals", SECTION_TIMEOUT, children(cs.clone())).await;
    s.run("sequential names", SECTION_TIMEOUT, sequential(cs.clone())).await;
    s.run("multi and multiRead", SECTION_TIMEOUT, multi(cs.clone())).await;
    s.run("ACLs, digest auth, whoAmI", SECTION_TIMEOUT, acls(cs.clone())).await;
    s.run("closeSession", SECTION_TIMEOUT, close_session(cs.clone())).await;
    s.run("replies framed as ZooKeeper's", SECTION_TIMEOUT, raw_replies(cluster.clone())).await;
    s.run("four-letter words", SECTION_TIMEOUT, four_letter_words(cluster.clone())).await;
    s.run("write via a follower, sync and read elsewhere", SECTION_TIMEOUT, follower_writes(cluster.clone())).await;
    s.run("empty containers and expired TTL nodes are deleted", SECTION_TIMEOUT, reaping(cluster.clone())).await;
    s.finish();
}

async fn create_variants(cs: String) {
    let c = connect(&cs).await;
    c.create("/t10/create", b"", PERSISTENT).await.unwrap();
    // create2 (what the client sends by default): the stat of the new node.
    let (stat, _) = c.create("/t10/create/p", b"hello", PERSISTENT).await.unwrap();
    assert!(stat.czxid > 0 && stat.czxid == stat.mzxid && stat.czxid == stat.pzxid, "{stat:?}");
    assert_eq!((stat.version, stat.cversion, stat.aversion, stat.ephemeral_owner), (0, 0, 0, 0));
    assert_eq!((stat.data_length, stat.num_children), (5, 0));
    let (data, got) = c.get_data("/t10/create/p").await.unwrap();
    assert_eq!((data.as_slice(), got), (&b"hello"[..], stat));

    // create (op 1): what a 3.4 client sends; the reply has the path only.
    let mut old = Client::connector();
    old.server_version(3, 4, 0).session_timeout(Duration::from_secs(10));
    let c34 = old.connect(&cs).await.unwrap();
    let (stat, _) = c34.create("/t10/create/v34", b"old", PERSISTENT).await.unwrap();
    assert!(stat.is_invalid(), "op 1 has no stat in its reply");
    c.sync("/t10/create/v34").await.unwrap(); // the other client may have written through another server
    assert_eq!(c.get_data("/t10/create/v34").await.unwrap().0, b"old");

    let (stat, _) = c.create("/t10/create/e", b"", EPHEMERAL).await.unwrap();
    assert_eq!(stat.ephemeral_owner, c.session_id().0);
    assert_eq!(c.create("/t10/create/e/child", b"", PERSISTENT).await, Err(Error::NoChildrenForEphemerals));

    // createContainer: a container shows owner 0, and takes children.
    let container = CreateMode::Container.with_acls(Acls::anyone_all());
    let (stat, _) = c.create("/t10/create/container", b"c", &container).await.unwrap();
    assert_eq!(stat.ephemeral_owner, 0);
    c.create("/t10/create/container/child", b"", PERSISTENT).await.unwrap();
    assert_eq!(c.get_children("/t10/create/container").await.unwrap().1.num_children, 1);

    // createTTL: a persistent node with a TTL (owner 0 as well).
    let ttl = CreateMode::Persistent.with_acls(Acls::anyone_all()).with_ttl(Duration::from_secs(3600));
    match c.create("/t10/create/ttl", b"t", &ttl).await {
        Ok((stat, _)) => assert_eq!((stat.ephemeral_owner, stat.data_length), (0, 1)),
        Err(e) => panic!(
            "createTTL: {e} (Unimplemented means TTL nodes are disabled, as ZooKeeper's extendedTypesEnabled=false)"
        ),
    }
    assert_eq!(c.get_data("/t10/create/ttl").await.unwrap().0, b"t");

    assert_eq!(c.create("/t10/create/p", b"", PERSISTENT).await, Err(Error::NodeExists));
    assert_eq!(c.create("/t10/create/missing/x", b"", PERSISTENT).await, Err(Error::NoNode));
}

async fn read_write_delete(cs: String) {
    let c = connect(&cs).await;
    c.create("/t10/rw", b"", PERSISTENT).await.unwrap();
    assert_eq!(c.check_stat("/t10/rw/a").await.unwrap(), None);
    let (created, _) = c.create("/t10/rw/a", b"v0", PERSISTENT).await.unwrap();
    assert_eq!(c.check_stat("/t10/rw/a").await.unwrap(), Some(created));

    let s1 = c.set_data("/t10/rw/a", b"v1", Some(0)).await.unwrap();
    assert_eq!((s1.version, s1.data_length, s1.czxid), (1, 2, created.czxid));
    assert!(s1.mzxid > created.mzxid && s1.mtime >= created.mtime, "{s1:?}");
    assert_eq!(c.set_data("/t10/rw/a", b"x", Some(0)).await, Err(Error::BadVersion));
    let s2 = c.set_data("/t10/rw/a", b"", None).await.unwrap();
    assert_eq!((s2.version, s2.data_length), (2, 0));
    let (data, stat) = c.get_data("/t10/rw/a").await.unwrap();
    assert_eq!((data.len(), stat), (0, s2));
    let big = vec![7u8; 100_000];
    c.set_data("/t10/rw/a", &big, Some(2)).await.unwrap();
    assert_eq!(c.get_data("/t10/rw/a").await.unwrap().0, big);
    assert_eq!(c.set_data("/t10/rw/missing", b"", None).await, Err(Error::NoNode));
    assert_eq!(c.get_data("/t10/rw/missing").await, Err(Error::NoNode));

    c.create("/t10/rw/a/child", b"", PERSISTENT).await.unwrap();
    assert_eq!(c.delete("/t10/rw/a", None).await, Err(Error::NotEmpty));
    assert_eq!(c.delete("/t10/rw/a/child", Some(5)).await, Err(Error::BadVersion));
    c.delete("/t10/rw/a/child", Some(0)).await.unwrap();
    c.delete("/t10/rw/a", Some(3)).await.unwrap();
    assert_eq!(c.delete("/t10/rw/a", None).await, Err(Error::NoNode));
    assert_eq!(c.check_stat("/t10/rw/a").await.unwrap(), None);
    // The parent's stat counts the children's creations and deletions.
    let (_, parent) = c.get_data("/t10/rw").await.unwrap();
    assert_eq!((parent.num_children, parent.cversion), (0, 2));
}

async fn children(cs: String) {
    let c = connect(&cs).await;
    let other = connect(&cs).await;
    c.create("/t10/ch", b"", PERSISTENT).await.unwrap();
    for name in ["b", "a", "c"] {
        c.create(&format!("/t10/ch/{name}"), b"", PERSISTENT).await.unwrap();
    }
    c.create("/t10/ch/a/x", b"", PERSISTENT).await.unwrap();
    c.create("/t10/ch/a/x/y", b"", PERSISTENT).await.unwrap();
    let mut names = c.list_children("/t10/ch").await.unwrap();
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
    let (mut names2, stat) = c.get_children("/t10/ch").await.unwrap();
    names2.sort();
    assert_eq!((names2, stat.num_children, stat.cversion), (names, 3, 3));
    assert_eq!(c.list_children("/t10/ch/b").await.unwrap(), Vec::<String>::new());
    assert_eq!(c.list_children("/t10/ch/missing").await, Err(Error::NoNode));
    assert_eq!(c.count_descendants_number("/t10/ch").await.unwrap(), 5);
    assert_eq!(c.count_descendants_number("/t10/ch/a").await.unwrap(), 2);
    assert_eq!(c.count_descendants_number("/t10/ch/c").await.unwrap(), 0);

    c.create("/t10/ch/e1", b"", EPHEMERAL).await.unwrap();
    c.create("/t10/ch/a/e2", b"", EPHEMERAL).await.unwrap();
    other.create("/t10/ch/theirs", b"", EPHEMERAL).await.unwrap();
    let mut mine = c.list_ephemerals("/t10/ch").await.unwrap();
    mine.sort();
    assert_eq!(mine, ["/t10/ch/a/e2", "/t10/ch/e1"]);
    assert_eq!(c.list_ephemerals("/t10/ch/a").await.unwrap(), ["/t10/ch/a/e2"]);
    let all = c.list_ephemerals("/").await.unwrap();
    assert!(all.contains(&"/t10/ch/e1".to_string()) && !all.contains(&"/t10/ch/theirs".to_string()), "{all:?}");
    assert_eq!(other.list_ephemerals("/t10/ch").await.unwrap(), ["/t10/ch/theirs"]);

    // A blank prefix, or `/` with blanks around it, lists them all (ZooKeeper trims it); clients that check
    // paths never send one, so the request goes raw.
    let addr = cs.split(',').next().unwrap().parse().unwrap();
    let mut raw = RawSession::connect(addr, 10_000).await.unwrap();
    let create = Body::new().string("/t10/ch/raw-e").buffer(b"").open_acl().int(1);
    assert_eq!(raw.request(op::CREATE2, create).await.unwrap().err, 0);
    for (prefix, listed) in [(" ", true), ("", true), (" / ", true), ("/t10/ch/r", true), ("/t10/x", false)] {
        let reply = raw.request(op::GET_EPHEMERALS, Body::new().string(prefix)).await.unwrap();
        assert_eq!(reply.err, 0, "getEphemerals {prefix:?}");
        let mut r = Reader(&reply.body);
        let paths: Vec<String> = (0..r.int()).map(|_| r.string()).collect();
        let expected: &[&str] = if listed { &["/t10/ch/raw-e"] } else { &[] };
        assert_eq!(paths, expected, "getEphemerals {prefix:?}");
    }
}

async fn sequential(cs: String) {
    let c = connect(&cs).await;
    c.create("/t10/seq", b"", PERSISTENT).await.unwrap();
    c.create("/t10/seq/plain", b"", PERSISTENT).await.unwrap();
    let eseq = CreateMode::EphemeralSequential.with_acls(Acls::anyone_all());
    let mut seqs = Vec::new();
    for i in 0..12 {
        let opts = if i % 3 == 2 { &eseq } else { SEQUENTIAL };
        let (stat, seq) = c.create("/t10/seq/n-", format!("{i}").as_bytes(), opts).await.unwrap();
        assert_eq!(stat.ephemeral_owner != 0, i % 3 == 2);
        seqs.push(seq);
    }
    let numbers: Vec<i64> = seqs.iter().map(|s| s.into_i64()).collect();
    // The suffix is the parent's cversion: one child existed before.
    assert_eq!(numbers, (1..=12).collect::<Vec<i64>>());
    let mut names = c.list_children("/t10/seq").await.unwrap();
    names.sort();
    let expected: Vec<String> =
        std::iter::once("plain".to_string()).chain((1..=12).map(|n| format!("n-{n:010}"))).collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(names, expected_sorted);
    for (i, n) in (1..=12).enumerate() {
        assert_eq!(c.get_data(&format!("/t10/seq/n-{n:010}")).await.unwrap().0, format!("{i}").as_bytes());
    }
    // A name ending in '/' gets a bare number.
    c.create("/t10/seq/dir", b"", PERSISTENT).await.unwrap();
    let (_, seq) = c.create("/t10/seq/dir/", b"", SEQUENTIAL).await.unwrap();
    assert_eq!(c.list_children("/t10/seq/dir").await.unwrap(), [format!("{:010}", seq.into_i64())]);
}

async fn multi(cs: String) {
    let c = connect(&cs).await;
    let other = connect(&cs).await;
    c.create("/t10/m", b"", PERSISTENT).await.unwrap();
    let mut w = c.new_multi_writer();
    w.add_create("/t10/m/a", b"a0", PERSISTENT).unwrap();
    w.add_create("/t10/m/b", b"b0", PERSISTENT).unwrap();
    w.add_create("/t10/m/s-", b"", SEQUENTIAL).unwrap();
    w.add_set_data("/t10/m/a", b"a1", Some(0)).unwrap();
    w.add_check_version("/t10/m/a", 1).unwrap();
    w.add_delete("/t10/m/b", Some(0)).unwrap();
    let results = w.commit().await.unwrap();
    assert_eq!(results.len(), 6);
    assert!(matches!(&results[0], MultiWriteResult::Create { path, .. } if path == "/t10/m/a"), "{results:?}");
    assert!(matches!(&results[2], MultiWriteResult::Create { path, .. } if path == "/t10/m/s-0000000002"));
    assert!(matches!(&results[3], MultiWriteResult::SetData { stat } if stat.version == 1), "{results:?}");
    assert_eq!((&results[4], &results[5]), (&MultiWriteResult::Check, &MultiWriteResult::Delete));
    assert_eq!(c.check_stat("/t10/m/b").await.unwrap(), None);

    // One failing op: nothing of the multi applies, and the error names it.
    let before = c.get_data("/t10/m/a").await.unwrap();
    let mut w = c.new_multi_writer();
    w.add_create("/t10/m/c", b"", PERSISTENT).unwrap();
    w.add_set_data("/t10/m/a", b"never", None).unwrap();
    w.add_check_version("/t10/m/a", 99).unwrap();
    w.add_create("/t10/m/d", b"", PERSISTENT).unwrap();
    let err = w.commit().await.unwrap_err();
    assert_eq!(err, MultiWriteError::OperationFailed { index: 2, source: Error::BadVersion });
    catch_up(&other, &c).await;
    for client in [&c, &other] {
        assert_eq!(client.check_stat("/t10/m/c").await.unwrap(), None, "a failed multi created /t10/m/c");
        assert_eq!(client.check_stat("/t10/m/d").await.unwrap(), None, "a failed multi created /t10/m/d");
        assert_eq!(client.get_data("/t10/m/a").await.unwrap(), before, "a failed multi changed /t10/m/a");
    }
    let mut w = c.new_multi_writer();
    w.add_delete("/t10/m/a", None).unwrap();
    w.add_create("/t10/m/a/under-deleted", b"", PERSISTENT).unwrap();
    assert_eq!(w.commit().await.unwrap_err(), MultiWriteError::OperationFailed { index: 1, source: Error::NoNode });
    assert!(c.check_stat("/t10/m/a").await.unwrap().is_some(), "the delete of a failed multi applied");

    // A check writer: the check first, then the writes.
    let mut cw = c.new_check_writer("/t10/m/a", Some(1)).unwrap();
    cw.add_set_data("/t10/m/a", b"a2", Some(1)).unwrap();
    assert!(matches!(&cw.commit().await.unwrap()[..], [MultiWriteResult::SetData { stat }] if stat.version == 2));
    let mut cw = c.new_check_writer("/t10/m/a", Some(1)).unwrap();
    cw.add_create("/t10/m/e", b"", PERSISTENT).unwrap();
    assert_eq!(cw.commit().await.unwrap_err(), CheckWriteError::CheckFailed { source: Error::BadVersion });

    // multiRead: each op answers on its own, errors included.
    let mut r = c.new_multi_reader();
    r.add_get_data("/t10/m/a").unwrap();
    r.add_get_children("/t10/m").unwrap();
    r.add_get_data("/t10/m/missing").unwrap();
    let results = r.commit().await.unwrap();
    assert!(matches!(&results[0], MultiReadResult::Data { data, stat } if data == b"a2" && stat.version == 2));
    match &results[1] {
        MultiReadResult::Children { children } => {
            let mut children = children.clone();
            children.sort();
            assert_eq!(children, ["a", "s-0000000002"]);
        }
        other => panic!("expected children, got {other:?}"),
    }
    assert!(matches!(&results[2], MultiReadResult::Error { err: Error::NoNode }), "{results:?}");
}

fn digest_id(user: &str, password: &str) -> String {
    let hash = sha1::Sha1::digest(format!("{user}:{password}").as_bytes());
    format!("{user}:{}", base64::engine::general_purpose::STANDARD.encode(hash))
}

async fn acls(cs: String) {
    let alice = connect(&cs).await;
    let auth = alice.auth("digest".into(), b"alice:secret".to_vec());
    tokio::time::timeout(Duration::from_secs(10), auth).await.expect("no reply to auth within 10 s").unwrap();
    let anon = connect(&cs).await;
    let mallory = connect(&cs).await;
    let auth = mallory.auth("digest".into(), b"alice:wrong".to_vec());
    tokio::time::timeout(Duration::from_secs(10), auth).await.expect("no reply to auth within 10 s").unwrap();
    alice.create("/t10/acl", b"", PERSISTENT).await.unwrap();

    alice.create("/t10/acl/private", b"secret", &CreateMode::Persistent.with_acls(Acls::creator_all())).await.unwrap();
    let (acl, stat) = alice.get_acl("/t10/acl/private").await.unwrap();
    let alice_id = AuthId::new("digest", &digest_id("alice", "secret"));
    assert_eq!(acl, [Acl::new(Permission::ALL, alice_id.clone())]);
    assert_eq!(stat.aversion, 0);
    assert_eq!(alice.get_data("/t10/acl/private").await.unwrap().0, b"secret");
    for client in [&anon, &mallory] {
        client.sync("/t10/acl/private").await.unwrap(); // alice may have written through another server
        assert_eq!(client.get_data("/t10/acl/private").await, Err(Error::NoAuth));
        assert_eq!(client.set_data("/t10/acl/private", b"x", None).await, Err(Error::NoAuth));
        assert_eq!(client.list_children("/t10/acl/private").await, Err(Error::NoAuth));
        assert_eq!(client.create("/t10/acl/private/c", b"", PERSISTENT).await, Err(Error::NoAuth));
        assert!(client.check_stat("/t10/acl/private").await.unwrap().is_some(), "exists needs no permission");
    }
    assert_eq!(
        anon.create("/t10/acl/mine", b"", &CreateMode::Persistent.with_acls(Acls::creator_all())).await,
        Err(Error::InvalidAcl),
        "auth:: without any authenticated id"
    );

    // setACL: read-only for the world, everything for alice, with the ACL version checked.
    alice.create("/t10/acl/shared", b"s", PERSISTENT).await.unwrap();
    let read_only = [Acl::new(Permission::ALL, alice_id.clone()), Acl::new(Permission::READ, AuthId::anyone())];
    assert_eq!(alice.set_acl("/t10/acl/shared", &read_only, Some(3)).await, Err(Error::BadVersion));
    let stat = alice.set_acl("/t10/acl/shared", &read_only, Some(0)).await.unwrap();
    assert_eq!((stat.aversion, stat.version), (1, 0));
    assert_eq!(alice.get_acl("/t10/acl/shared").await.unwrap().0, read_only);
    // Without ADMIN, getACL hides digests (ZooKeeper 3.6+: "user:x").
    let redacted = [Acl::new(Permission::ALL, AuthId::new("digest", "alice:x")), read_only[1].clone()];
    anon.sync("/t10/acl/shared").await.unwrap();
    assert_eq!(anon.get_acl("/t10/acl/shared").await.unwrap().0, redacted);
    assert_eq!(anon.get_data("/t10/acl/shared").await.unwrap().0, b"s");
    assert_eq!(anon.set_data("/t10/acl/shared", b"x", None).await, Err(Error::NoAuth));
    assert_eq!(anon.set_acl("/t10/acl/shared", &read_only, None).await, Err(Error::NoAuth), "setACL needs ADMIN");
    assert_eq!(anon.create("/t10/acl/shared/c", b"", PERSISTENT).await, Err(Error::NoAuth));
    let mixed =
        [Acl::new(Permission::ALL, alice_id), Acl::new(Permission::READ | Permission::CREATE, AuthId::anyone())];
    alice.set_acl("/t10/acl/shared", &mixed, Some(1)).await.unwrap();
    anon.create("/t10/acl/shared/c", b"", PERSISTENT).await.unwrap();
    assert_eq!(anon.delete("/t10/acl/shared/c", None).await, Err(Error::NoAuth), "delete needs DELETE on the parent");
    alice.delete("/t10/acl/shared/c", None).await.unwrap();

    // whoAmI: the ip of every connection, and the digest user once authenticated.
    let who = alice.list_auth_users().await.unwrap();
    assert!(who.contains(&AuthUser::new("digest", "alice")), "{who:?}");
    assert!(who.contains(&AuthUser::new("ip", "127.0.0.1")), "{who:?}");
    assert_eq!(anon.list_auth_users().await.unwrap(), [AuthUser::new("ip", "127.0.0.1")]);
}

async fn close_session(cs: String) {
    let watcher = connect(&cs).await;
    watcher.create("/t10/close", b"", PERSISTENT).await.unwrap();
    let owner = connect(&cs).await;
    owner.create("/t10/close/e", b"", EPHEMERAL).await.unwrap();
    watcher.sync("/t10/close").await.unwrap(); // the owner may have written through another server
    let (_, _, deleted) = watcher.get_and_watch_data("/t10/close/e").await.unwrap();
    let timeout = owner.session_timeout();
    assert!(timeout >= Duration::from_secs(9), "the 10 s session asked for got {timeout:?}");
    let closed = std::time::Instant::now();
    drop(owner); // the client sends closeSession
    let event = tokio::time::timeout(Duration::from_secs(5), deleted.changed()).await.expect("NodeDeleted after close");
    assert_eq!((event.event_type, event.path.as_str()), (zookeeper_client::EventType::NodeDeleted, "/t10/close/e"));
    assert!(closed.elapsed() < timeout / 2, "the ephemeral went only at session expiry, not at closeSession");
    assert_eq!(watcher.check_stat("/t10/close/e").await.unwrap(), None);
}

/// Reply details that clients other than the Rust one depend on, checked on the raw protocol: the Java
/// client reads an ErrorResponse body after addWatch, every client matches replies by the xid it sent (auth
/// included), sync returns its path, and a failed multi answers each op with an error result (0 before the
/// failing op, its error, then -2 RuntimeInconsistency), which kazoo and the Java client turn into exceptions.
async fn raw_replies(cluster: Arc<Cluster>) {
    let mut raw = RawSession::connect(cluster.client_addr(0), 10_000).await.unwrap();
    let mut problems = Vec::new();
    let reply = raw.request(op::CREATE2, Body::new().string("/t10/raw").buffer(b"").open_acl().int(0)).await.unwrap();
    assert_eq!(reply.err, 0);
    let reply = raw.request(106, Body::new().string("/t10/raw/w").int(0)).await.unwrap();
    if (reply.err, reply.body.as_slice()) != (0, &[0u8, 0, 0, 0][..]) {
        problems.push(format!(
            "addWatch: err {} body {:?}, ZooKeeper sends ErrorResponse(0): [0, 0, 0, 0]",
            reply.err, reply.body
        ));
    }
    let auth = Body::new().int(0).string("digest").buffer(b"carol:pw");
    match raw.request(100, auth).await {
        Ok(reply) if reply.err == 0 => {}
        Ok(reply) => problems.push(format!("auth: err {}", reply.err)),
        Err(e) => {
            problems.push(format!("auth with a positive xid: {e} (ZooKeeper echoes the request's xid)"));
            raw = RawSession::connect(cluster.client_addr(0), 10_000).await.unwrap();
        }
    }
    match raw.request(op::SYNC, Body::new().string("/t10/raw")).await {
        Ok(reply) if (reply.err, Reader(&reply.body).string()) == (0, "/t10/raw".to_string()) => {}
        Ok(reply) => problems.push(format!("sync: err {} body {:?}", reply.err, reply.body)),
        Err(e) => {
            problems.push(format!("sync: {e}"));
            raw = RawSession::connect(cluster.client_addr(0), 10_000).await.unwrap();
        }
    }

    // multi: create, check (fails), create; then the end marker.
    let header = |b: Body, kind: i32, done: bool| b.int(kind).boolean(done).int(-1);
    let mut body = header(Body::new(), 1, false).string("/t10/raw/m1").buffer(b"").open_acl().int(0);
    body = header(body, 13, false).string("/t10/raw").int(99);
    body = header(body, 1, false).string("/t10/raw/m2").buffer(b"").open_acl().int(0);
    body = header(body, -1, true);
    let reply = raw.request(14, body).await.unwrap();
    let mut r = Reader(&reply.body);
    let mut results = Vec::new();
    loop {
        let (kind, done, err) = (r.int(), r.boolean(), r.int());
        if done {
            break;
        }
        if kind != -1 {
            results.push((kind, err, None));
            break; // a success result's body is not parsed here
        }
        results.push((kind, err, Some(r.int())));
    }
    let expected = [(-1, 0, Some(0)), (-1, -103, Some(-103)), (-1, -2, Some(-2))];
    if results != expected {
        problems
            .push(format!("failed multi: (type, err, ErrorResponse) per op {results:?}, ZooKeeper sends {expected:?}"));
    }
    let exists = raw.request(op::EXISTS, Body::new().string("/t10/raw/m1").boolean(false)).await.unwrap();
    assert_eq!(exists.err, -101, "a failed multi created /t10/raw/m1");
    assert!(problems.is_empty(), "{} difference(s) from ZooKeeper:\n    {}", problems.len(), problems.join("\n    "));
}

async fn four_letter_words(cluster: Arc<Cluster>) {
    blocking(|| {
        let mut modes = Vec::new();
        for i in 0..cluster.len() {
            assert_eq!(cluster.four_letter(i, "ruok"), "imok", "ruok on node {}", i + 1);
            let srvr = cluster.four_letter(i, "srvr");
            modes.push(ensemble_tests::fourlw::parse_mode(&srvr).unwrap_or_else(|| panic!("no Mode in {srvr:?}")));
        }
        modes.sort_by_key(|m| *m != Mode::Leader);
        assert_eq!(modes, [Mode::Leader, Mode::Follower, Mode::Follower]);
    });
    // cons: a line per connection with its session's fields, in ZooKeeper's format.
    let c = connect(&cluster.client_addr(0).to_string()).await;
    c.get_data("/t10").await.unwrap();
    let sid = format!("sid=0x{:x},", c.session_id().0);
    let cons = blocking(|| cluster.four_letter(0, "cons"));
    let line = cons.lines().find(|l| l.contains(&sid)).unwrap_or_else(|| panic!("no {sid} in cons:\n{cons}"));
    let field = |name: &str| -> String {
        let start = line.find(&format!("{name}=")).unwrap_or_else(|| panic!("no {name} in {line}")) + name.len() + 1;
        line[start..].split([',', ')']).next().unwrap().to_owned()
    };
    assert_eq!(field("to"), "10000", "{line}");
    assert_ne!(field("lop"), "NA", "{line}");
    assert_ne!(field("lzxid"), "0xffffffffffffffff", "a connection that was answered has a last zxid: {line}");
    assert!(field("est").parse::<i64>().unwrap() > 1_600_000_000_000, "est is ms since the epoch: {line}");
    let (min, max) = (field("minlat").parse::<i64>().unwrap(), field("maxlat").parse::<i64>().unwrap());
    assert!(min <= max, "{line}");
}

async fn follower_writes(cluster: Arc<Cluster>) {
    let leader = blocking(|| cluster.leader());
    let follower = blocking(|| cluster.followers())[0];
    let on_leader = connect(&cluster.client_addr(leader).to_string()).await;
    let on_follower = connect(&cluster.client_addr(follower).to_string()).await;
    on_follower.create("/t10/fw", b"", PERSISTENT).await.unwrap();
    for i in 0..20 {
        // Written via the follower: on the leader after a sync.
        let value = format!("f{i}");
        on_follower.set_data("/t10/fw", value.as_bytes(), Some(2 * i)).await.unwrap();
        on_leader.sync("/t10/fw").await.unwrap_or_else(|e| panic!("sync through the leader: {e}"));
        assert_eq!(on_leader.get_data("/t10/fw").await.unwrap().0, value.as_bytes(), "round {i}");
        // Written via the leader: on the follower after a sync.
        let value = format!("l{i}");
        on_leader.set_data("/t10/fw", value.as_bytes(), Some(2 * i + 1)).await.unwrap();
        on_follower.sync("/t10/fw").await.unwrap_or_else(|e| panic!("sync through a follower: {e}"));
        assert_eq!(on_follower.get_data("/t10/fw").await.unwrap().0, value.as_bytes(), "round {i}");
    }
    // And every node gets there without a sync.
    for i in 0..cluster.len() {
        let c = connect(&cluster.client_addr(i).to_string()).await;
        eventually(&format!("node {} has the last write", i + 1), Duration::from_secs(10), || async {
            (c.get_data("/t10/fw").await.ok()?.1.version == 40).then_some(())
        })
        .await;
    }
}

/// The leader deletes a container once its last child is gone and a TTL node left unchanged past its TTL
/// (ZooKeeper's ContainerManager), which this test's cluster runs every 300 ms.
async fn reaping(cluster: Arc<Cluster>) {
    let c = connect(&cluster.connect_string()).await;
    c.create("/t10/reap", b"", PERSISTENT).await.unwrap();
    let container = CreateMode::Container.with_acls(Acls::anyone_all());
    c.create("/t10/reap/used", b"", &container).await.unwrap();
    c.create("/t10/reap/used/child", b"", PERSISTENT).await.unwrap();
    c.create("/t10/reap/unused", b"", &container).await.unwrap();
    let short = CreateMode::Persistent.with_acls(Acls::anyone_all()).with_ttl(Duration::from_millis(200));
    c.create("/t10/reap/ttl", b"", &short).await.unwrap();
    let long = CreateMode::Persistent.with_acls(Acls::anyone_all()).with_ttl(Duration::from_secs(3600));
    c.create("/t10/reap/ttl-long", b"", &long).await.unwrap();
    c.delete("/t10/reap/used/child", None).await.unwrap();
    eventually("the emptied container and the expired TTL node are gone", Duration::from_secs(20), || {
        let c = &c;
        async move {
            let used = c.check_stat("/t10/reap/used").await.unwrap();
            let ttl = c.check_stat("/t10/reap/ttl").await.unwrap();
            (used.is_none() && ttl.is_none()).then_some(())
        }
    })
    .await;
    // A container that never had a child, and a TTL node within its TTL, stay.
    assert!(c.check_stat("/t10/reap/unused").await.unwrap().is_some());
    assert!(c.check_stat("/t10/reap/ttl-long").await.unwrap().is_some());
}
