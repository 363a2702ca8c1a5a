//! The four-letter words that list watches, digests and the trace mask, against a 3-node cluster, as ZooKeeper
//! 3.8 answers them: `wchc` (sessions and their data watches), `wchp` (paths and their watchers), `hash` (the
//! digest every 128th zxid), `gtmk` and `stmk` (the trace mask; `stmk` takes the new mask after the word), and
//! `dump` (the leader's session expiry queue or a follower's sessions, each session's ephemerals, and the
//! connections by expiry).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ensemble_tests::client::{EPHEMERAL, PERSISTENT};
use ensemble_tests::{blocking, connect_with, Cluster, Options};
use zookeeper_client::AddWatchMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watches_digests_and_the_trace_mask() {
    // These words are off under ZooKeeper's default whitelist (`srvr` only).
    let options = Options { config: vec!["4lw.commands.whitelist=*".into()], ..Options::default() };
    let cluster = blocking(|| Cluster::start_with(options));
    let node = 0;
    let client = connect_with(&cluster.client_addr(node).to_string(), Duration::from_secs(10)).await;
    let session = format!("0x{:x}", client.session_id().0);
    client.create("/t56", b"", PERSISTENT).await.unwrap();
    client.create("/t56/a", b"", PERSISTENT).await.unwrap();
    let _data = client.get_and_watch_data("/t56/a").await.expect("a data watch");
    let _exists = client.check_and_watch_stat("/t56/missing").await.expect("an exists watch");
    let _children = client.get_and_watch_children("/t56").await.expect("a child watch");
    let _persistent = client.watch("/t56/p", AddWatchMode::Persistent).await.expect("a persistent watch");

    let wchc = blocking(|| cluster.four_letter(node, "wchc"));
    let listed: Vec<&str> = wchc.lines().collect();
    let at = listed.iter().position(|l| *l == session).unwrap_or_else(|| panic!("{session} in wchc:\n{wchc}"));
    let mine: Vec<&str> = listed[at + 1..].iter().take_while(|l| l.starts_with('\t')).copied().collect();
    for path in ["\t/t56/a", "\t/t56/missing", "\t/t56/p"] {
        assert!(mine.contains(&path), "{path} under {session} in wchc:\n{wchc}");
    }
    assert!(!mine.contains(&"\t/t56"), "child watches are not listed:\n{wchc}");
    assert!(wchc.ends_with("\n\n"), "an empty line ends it: {wchc:?}");

    let wchp = blocking(|| cluster.four_letter(node, "wchp"));
    assert!(wchp.contains(&format!("/t56/a\n\t{session}\n")), "wchp:\n{wchp}");
    assert!(wchp.contains(&format!("/t56/missing\n\t{session}\n")), "wchp:\n{wchp}");
    assert!(!wchp.lines().any(|l| l == "/t56"), "child watches are not listed:\n{wchp}");

    assert_eq!(blocking(|| cluster.four_letter(node, "gtmk")), "306", "ZooKeeper's default trace mask");
    assert_eq!(stmk(&cluster, node, 0x1234), "4660");
    assert_eq!(blocking(|| cluster.four_letter(node, "gtmk")), "4660", "stmk set it");

    // 300 more txns: the digest of every 128th zxid is logged, on every node.
    for i in 0..300 {
        client.set_data("/t56/a", format!("{i}").as_bytes(), None).await.unwrap();
    }
    client.sync("/").await.unwrap();
    for i in 0..cluster.len() {
        let hash = blocking(|| cluster.four_letter(i, "hash"));
        let entries: Vec<(i64, i64)> = hash
            .lines()
            .map(|l| {
                let (zxid, digest) = l.split_once(": ").unwrap_or_else(|| panic!("a hash line: {l:?}"));
                (i64::from_str_radix(zxid, 16).expect("hex zxid"), digest.parse().expect("decimal digest"))
            })
            .collect();
        assert!(entries.len() >= 2, "node {}: 300 txns log two digests or more:\n{hash}", i + 1);
        assert!(entries.iter().all(|(zxid, _)| zxid % 128 == 0), "every 128th zxid:\n{hash}");
    }

    // `dump`: a session with two ephemerals, another with none on another node.
    client.create("/t56/e1", b"", EPHEMERAL).await.unwrap();
    client.create("/t56/e2", b"", EPHEMERAL).await.unwrap();
    let other = connect_with(&cluster.client_addr(1).to_string(), Duration::from_secs(4)).await;
    let sessions = [
        (session.clone(), client.session_timeout()),
        (format!("0x{:x}", other.session_id().0), other.session_timeout()),
    ];
    other.sync("/").await.unwrap();
    client.sync("/").await.unwrap();
    let leader = blocking(|| cluster.leader());
    let dump = blocking(|| cluster.four_letter(leader, "dump"));
    let (tracker, rest) = dump.split_once("ephemeral nodes dump:\n").unwrap_or_else(|| panic!("dump:\n{dump}"));
    let (ephemerals, connections) = rest.split_once("Connections dump:\n").unwrap_or_else(|| panic!("dump:\n{dump}"));
    let queue = tracker.strip_prefix("SessionTracker dump:\nSession ").unwrap_or_else(|| panic!("dump:\n{dump}"));
    let tracked = expiry_queue(queue);
    for (session, _) in &sessions {
        assert!(tracked.contains(session), "the leader's expiry queue lists {session}:\n{dump}");
    }
    let mine = format!("Sessions with Ephemerals (1):\n{session}:\n");
    assert!(ephemerals.starts_with(&mine), "{mine:?} in:\n{dump}");
    let mut paths: Vec<&str> = ephemerals[mine.len()..].lines().collect();
    paths.sort_unstable();
    assert_eq!(paths, ["\t/t56/e1", "\t/t56/e2"], "dump:\n{dump}");
    let connections = connections.strip_prefix("Connections ").unwrap_or_else(|| panic!("dump:\n{dump}"));
    let listed = expiry_queue(connections);
    // `NIOServerCnxn.toString`; the asking connection is among them, without a session.
    let asker = listed.iter().any(|c| c.starts_with("ip: /127.0.0.1:") && c.ends_with(" sessionId: 0x0"));
    assert!(asker, "connections:\n{dump}");

    let follower = blocking(|| cluster.followers())[0];
    let dump = blocking(|| cluster.four_letter(follower, "dump"));
    let known = dump.strip_prefix("SessionTracker dump:\nGlobal Sessions(").unwrap_or_else(|| panic!("dump:\n{dump}"));
    for (session, timeout) in &sessions {
        let line = format!("\n{session}\t{}ms\n", timeout.as_millis());
        assert!(known.contains(&line), "a follower lists {line:?}:\n{dump}");
    }
    assert!(dump.contains("ephemeral nodes dump:\nSessions with Ephemerals (1):\n"), "dump:\n{dump}");
}

/// The members of an `ExpiryQueue.dump` (`Sets (<buckets>)/(<members>):`, then `<n> expire at <date>:` and `n`
/// members, each after a tab), checking the counts and the dates' shape (`Tue Dec 01 15:52:14 UTC 2026`).
fn expiry_queue(text: &str) -> Vec<String> {
    let mut lines = text.lines();
    let head = lines.next().unwrap_or_default();
    let counts = head.strip_prefix("Sets (").and_then(|h| h.strip_suffix("):")).unwrap_or_else(|| panic!("{head:?}"));
    let (buckets, members) = counts.split_once(")/(").unwrap_or_else(|| panic!("{head:?}"));
    let (buckets, members): (usize, usize) = (buckets.parse().unwrap(), members.parse().unwrap());
    let (mut seen_buckets, mut listed) = (0, Vec::new());
    let mut lines = lines.peekable();
    while let Some(bucket) = lines.next_if(|l| !l.starts_with('\t')) {
        let (n, date) = bucket.split_once(" expire at ").unwrap_or_else(|| panic!("a bucket line: {bucket:?}"));
        let date: Vec<&str> = date.strip_suffix(':').unwrap_or_else(|| panic!("{bucket:?}")).split(' ').collect();
        assert!(date.len() == 6 && date[3].len() == 8 && date[5].len() == 4, "a Java date: {bucket:?}");
        let n: usize = n.parse().unwrap_or_else(|_| panic!("{bucket:?}"));
        for _ in 0..n {
            let member = lines.next().unwrap_or_else(|| panic!("{n} members after {bucket:?}"));
            listed.push(member.strip_prefix('\t').unwrap_or_else(|| panic!("{member:?}")).to_owned());
        }
        seen_buckets += 1;
    }
    assert_eq!((seen_buckets, listed.len()), (buckets, members), "{text}");
    listed
}

/// `stmk` followed by the new mask as a big-endian long; the answer.
fn stmk(cluster: &Cluster, node: usize, mask: i64) -> String {
    let mut stream = TcpStream::connect(cluster.client_addr(node)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut request = b"stmk".to_vec();
    request.extend_from_slice(&mask.to_be_bytes());
    stream.write_all(&request).expect("stmk");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}
