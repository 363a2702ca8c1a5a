//! `ensemble import` and `ensemble export` run as a process over ZooKeeper files written through `zkdata`'s
//! encoders (the integration test t80 uses a real ZooKeeper): the tree recovered from what they write, their
//! exit codes, what they refuse and what they leave alone. The binary is `$ENSEMBLE_BIN`, else Cargo's.

mod common;

use common::run;
use std::fs::File;
use std::path::Path;
use std::process::Output;

use tree::code::op;
use tree::prep::{prep, Caller, PrepOptions, Request};
use tree::tree::{same_contents, DataTree};
use tree::txn::{TxnHeader, TxnRecord};
use wal::{Epoch, Wal, WalOptions, Zxid};
use zkdata::txnlog::{LogWriter, TxnDigest};

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A ZooKeeper dataDir: a snapshot after the first half of the writes (epoch 1), the rest in a log after it.
/// Returns the tree ZooKeeper would serve.
fn zookeeper_dir(dir: &Path) -> DataTree {
    let version = dir.join("version-2");
    std::fs::create_dir_all(&version).unwrap();
    let mut tree = DataTree::new();
    let mut log = None;
    for i in 0..40i64 {
        if i == 20 {
            zkdata::export::write_snapshot(&tree, &version, &mut |_| {}).unwrap();
            let name = zkdata::files::log_name(tree.last_zxid() + 1);
            log = Some(LogWriter::new(File::create(version.join(name)).unwrap()).unwrap());
        }
        let request = match i % 4 {
            3 => Request::SetData { path: format!("/n{}", i - 1), data: None, version: -1 },
            _ => Request::Create {
                op: op::CREATE2,
                path: format!("/n{i}"),
                data: Some(format!("value {i}").into()),
                acl: tree::acl::open_acl_unsafe(),
                flags: 0,
                ttl: -1,
            },
        };
        let (op, txn) =
            prep(&tree, &Caller::default(), PrepOptions { ttl_enabled: false, enforce_quota: false }, &request);
        let header = TxnHeader { client_id: 7, cxid: 1, zxid: (1 << 32) + 1 + i, time: 1_700_000_000_000 + i, op };
        tree.apply(&header, &txn);
        if let Some(log) = log.as_mut() {
            log.append(&TxnRecord { header, txn }, Some(TxnDigest { version: 2, digest: tree.digest() })).unwrap();
        }
    }
    log.unwrap().finish(1 << 16).unwrap();
    tree
}

/// The tree a server would recover from an Ensemble data directory.
/// The tree of the data directory `data`, and its log, open. The log is opened once: the lock of a log closed
/// and reopened at once can still be held by a child process another test forks in between (flock locks are
/// shared with a forked child until it execs).
fn recover(data: &Path) -> (DataTree, Wal) {
    let (wal, _) = Wal::open(data.join("log"), WalOptions::default()).unwrap();
    let tree = snapshot::recover::recover_until(&data.join("snapshots"), &wal, None).unwrap().0;
    (tree, wal)
}

#[test]
fn an_import_holds_zookeepers_tree_and_continues_its_zxids() {
    let dir = tempfile::tempdir().unwrap();
    let (zk, data) = (dir.path().join("zk"), dir.path().join("ensemble"));
    let expected = zookeeper_dir(&zk);
    let out = run(&["import", "--from-zookeeper", s(&zk), "--to", s(&data), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["txns_replayed"], 20, "{summary}");
    assert_eq!(summary["digests_checked"], 21, "the snapshot's digest and each txn's: {summary}");
    let (tree, wal) = recover(&data);
    assert!(same_contents(&tree, &expected), "the imported tree differs");
    assert_eq!(tree.last_zxid(), expected.last_zxid());
    assert_eq!(wal.base(), Some(Zxid(u64::try_from(expected.last_zxid()).unwrap())), "the log continues after it");
    assert_eq!(replication::read_epochs(&data).unwrap(), (Epoch(1), Epoch(1)));
    assert!(!dir.path().join("ensemble/snapshots.importing").exists() && !data.join("log.importing").exists());
}

#[test]
fn existing_data_is_refused_or_moved_aside_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (zk, data) = (dir.path().join("zk"), dir.path().join("ensemble"));
    zookeeper_dir(&zk);
    assert_eq!(run(&["import", "--from-zookeeper", s(&zk), "--to", s(&data)]).status.code(), Some(0));
    let before: Vec<_> = std::fs::read_dir(data.join("snapshots")).unwrap().map(|e| e.unwrap().path()).collect();
    let out = run(&["import", "--from-zookeeper", s(&zk), "--to", s(&data)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("already hold"), "{}", text(&out));
    let after: Vec<_> = std::fs::read_dir(data.join("snapshots")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(before, after, "nothing changed");
    let out = run(&["import", "--from-zookeeper", s(&zk), "--to", s(&data), "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let aside: Vec<String> =
        std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(
        aside.iter().filter(|n| n.contains(".before-import-")).count(),
        3,
        "snapshots, log and epochs moved aside: {aside:?}"
    );
}

#[test]
fn damaged_zookeeper_files_are_refused_with_the_file_and_offset_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (zk, data) = (dir.path().join("zk"), dir.path().join("ensemble"));
    zookeeper_dir(&zk);
    let log = zkdata::files::list(&zk.join("version-2"), "log").unwrap().pop().unwrap().1;
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[200] ^= 0x40;
    std::fs::write(&log, &bytes).unwrap();
    let out = run(&["import", "--from-zookeeper", s(&zk), "--to", s(&data), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(s(&log)) && text(&out).contains("at offset"), "{}", text(&out));
    assert!(!data.exists() || std::fs::read_dir(&data).unwrap().next().is_none(), "nothing written");
    // A log cut inside a record (not in its preallocated zeros) is damage too.
    bytes[200] ^= 0x40;
    bytes.truncate(210);
    std::fs::write(&log, &bytes).unwrap();
    let out = run(&["import", "--from-zookeeper", s(&zk), "--to", s(&data)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("truncated") || text(&out).contains("out of bounds"), "{}", text(&out));
}

#[test]
fn an_export_is_a_zookeeper_snapshot_of_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (zk, data, back) = (dir.path().join("zk"), dir.path().join("ensemble"), dir.path().join("back"));
    let expected = zookeeper_dir(&zk);
    assert_eq!(run(&["import", "--from-zookeeper", s(&zk), "--to", s(&data)]).status.code(), Some(0));
    let out = run(&["export", "--from", s(&data), "--to-zookeeper", s(&back), "--myid", "3", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let version = back.join("version-2");
    let sources = zkdata::restore::Sources { snap_dir: version.clone(), log_dir: version.clone() };
    let restored = zkdata::restore::restore(&sources, zkdata::DEFAULT_MAX_LEN, &mut |_| {}).unwrap();
    assert!(same_contents(&restored.tree, &expected));
    assert_eq!(restored.digests_checked, 1, "ZooKeeper checks the snapshot's digest as it loads it");
    assert_eq!((restored.accepted_epoch, restored.current_epoch), (Some(1), Some(1)));
    assert_eq!(std::fs::read_to_string(back.join("myid")).unwrap(), "3");
    // The operator's myid is kept: another is refused, and an existing version-2 is not overwritten.
    let out = run(&["export", "--from", s(&data), "--to-zookeeper", s(&back), "--myid", "4"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = run(&["export", "--from", s(&data), "--to-zookeeper", s(&back)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("already hold"), "{}", text(&out));
}
