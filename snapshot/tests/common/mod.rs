//! A miniature node: prep a request, log the txn durably in the WAL, then apply it to the tree.
#![allow(dead_code)]

use snapshot::write::SharedTree;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tree::acl::open_acl_unsafe;
use tree::code::op;
use tree::prep::{prep, Caller, PrepOptions, Request};
use tree::tree::DataTree;
use tree::txn::{TxnHeader, TxnRecord};
use wal::{Wal, WalOptions, Zxid};

pub struct Db {
    pub wal: Wal,
    pub tree: SharedTree,
    pub zxid: std::sync::Mutex<i64>,
    pub snap_dir: PathBuf,
}

pub fn wal_options() -> WalOptions {
    WalOptions { segment_size: 16 << 10, max_payload: 8 << 10, ..WalOptions::default() }
}

impl Db {
    /// A fresh database in `dir` (`dir/log`, `dir/snap`).
    pub fn create(dir: &Path) -> Db {
        let (wal, _) = Wal::open(dir.join("log"), wal_options()).unwrap();
        std::fs::create_dir_all(dir.join("snap")).unwrap();
        Db {
            wal,
            tree: SharedTree::new(DataTree::new()),
            zxid: std::sync::Mutex::new(1 << 32),
            snap_dir: dir.join("snap"),
        }
    }

    /// Recovers the database in `dir`.
    pub fn open(dir: &Path) -> Result<(Db, snapshot::recover::Recovered), snapshot::SnapshotError> {
        let (wal, _) = Wal::open(dir.join("log"), wal_options())?;
        let (tree, recovered) = snapshot::recover::recover(&dir.join("snap"), &wal)?;
        let zxid = tree.last_zxid().max(1 << 32);
        Ok((
            Db { wal, tree: SharedTree::new(tree), zxid: std::sync::Mutex::new(zxid), snap_dir: dir.join("snap") },
            recovered,
        ))
    }

    /// Preps, logs (durably) and applies a request.
    pub fn write(&self, session: i64, request: &Request) {
        let mut zxid = self.zxid.lock().unwrap();
        *zxid += 1;
        let record = txn(&self.tree.read().unwrap(), *zxid, session, request);
        self.wal.append(Zxid(*zxid as u64), record.encode()).unwrap().wait().unwrap();
        self.tree.write().unwrap().apply(&record.header, &record.txn);
    }

    pub fn snapshot(&self, chunk: usize) -> snapshot::write::SnapshotInfo {
        snapshot::write::write_fuzzy(&self.snap_dir, &self.tree, chunk).unwrap()
    }

    pub fn digest(&self) -> u64 {
        self.tree.read().unwrap().digest()
    }
}

/// Preps `request` of `session` against `tree` into the txn `zxid`.
pub fn txn(tree: &DataTree, zxid: i64, session: i64, request: &Request) -> TxnRecord {
    let (op, txn) = prep(
        tree,
        &Caller { session, auth: Vec::new().into(), expired: false },
        PrepOptions { ttl_enabled: true, enforce_quota: false },
        request,
    );
    TxnRecord { header: TxnHeader { client_id: session, cxid: 0, zxid, time: zxid, op }, txn }
}

/// `data`: a string, or `None` for null data.
pub fn create<'a>(path: &str, data: impl Into<Option<&'a str>>, flags: i32) -> Request {
    Request::Create {
        op: op::CREATE,
        path: path.into(),
        data: data.into().map(|d| Bytes::from(d.to_owned())),
        acl: open_acl_unsafe(),
        flags,
        ttl: -1,
    }
}

/// `data`: a string, or `None` for null data.
pub fn set<'a>(path: &str, data: impl Into<Option<&'a str>>) -> Request {
    Request::SetData { path: path.into(), data: data.into().map(|d| Bytes::from(d.to_owned())), version: -1 }
}

pub fn delete(path: &str) -> Request {
    Request::Delete { path: path.into(), version: -1 }
}

/// A deterministic mix of writes: creates, sequential creates, data changes, deletes, ephemerals, sessions;
/// with empty and null data among the values.
pub fn workload(db: &Db, from: usize, count: usize) {
    for i in from..from + count {
        let (session, request) = request(i);
        db.write(session, &request);
    }
}

/// The `i`-th request of [`workload`], with its session.
pub fn request(i: usize) -> (i64, Request) {
    let dir = format!("/d{}", i % 7);
    let session = 100 + (i % 3) as i64;
    match i % 9 {
        0 => (0, create(&dir, "", 0)),
        1 | 2 => (0, create(&format!("{dir}/n{}", i % 13), &*format!("v{i}"), 0)),
        3 if i.is_multiple_of(2) => (0, set(&format!("{dir}/n{}", i % 13), None)),
        3 => (0, set(&format!("{dir}/n{}", i % 13), &*format!("w{i}"))),
        4 => (0, create(&format!("{dir}/s-"), None, 2)),
        5 => (0, delete(&format!("{dir}/n{}", (i + 5) % 13))),
        6 => (session, Request::CreateSession { timeout: 10_000 }),
        7 => (session, create(&format!("/e{}", i % 5), "eph", 1)),
        _ => (session, Request::CloseSession),
    }
}
