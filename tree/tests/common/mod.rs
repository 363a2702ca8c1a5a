//! A tree driven the way the leader drives it: prep a request, give it the next zxid, apply.
#![allow(dead_code)]

use bytes::Bytes;
use tree::acl::{open_acl_unsafe, Acl};
use tree::code::op;
use tree::prep::{prep, Caller, PrepOptions, Request};
use tree::tree::{Applied, DataTree};
use tree::txn::{TxnHeader, TxnRecord};

pub struct Harness {
    pub tree: DataTree,
    pub zxid: i64,
    pub log: Vec<TxnRecord>,
    pub options: PrepOptions,
}

impl Harness {
    pub fn new() -> Harness {
        Harness {
            tree: DataTree::new(),
            zxid: 1 << 32,
            log: Vec::new(),
            options: PrepOptions { ttl_enabled: true, enforce_quota: false },
        }
    }

    /// Preps, logs and applies `request` from `caller`; the tree's invariants must hold afterwards.
    pub fn write(&mut self, caller: &Caller, request: &Request) -> Applied {
        let (op, txn) = prep(&self.tree, caller, self.options, request);
        self.zxid += 1;
        let header = TxnHeader { client_id: caller.session, cxid: 0, zxid: self.zxid, time: 1_000 + self.zxid, op };
        let record = TxnRecord { header, txn };
        // Every txn goes through its encoding, as it would through the WAL.
        let record = TxnRecord::decode(&record.encode()).expect("txn round trip");
        let applied = self.tree.apply(&record.header, &record.txn);
        self.log.push(record);
        self.tree.validate().unwrap_or_else(|e| panic!("after {request:?}: {e}"));
        applied
    }

    /// A fuzzy copy of the tree, as the snapshot writer takes one: the sessions, then the nodes `chunk` at a
    /// time in path order, calling `between` (which writes) after each chunk while it has work. Returns the copy;
    /// replaying the log after the copy began must turn it into the live tree.
    pub fn fuzzy_copy(&mut self, chunk: usize, mut between: impl FnMut(&mut Harness) -> bool) -> DataTree {
        let mut copy = DataTree::empty();
        for (&session, &timeout) in self.tree.sessions() {
            copy.load_session(session, timeout);
        }
        let mut cursor: Option<String> = None;
        let mut writing = true;
        loop {
            let nodes: Vec<(String, tree::tree::Node, Vec<Acl>)> = self
                .tree
                .nodes_after(cursor.as_deref())
                .take(chunk)
                .map(|(p, n)| (p.clone(), n.clone(), self.tree.acl_of(n).to_vec()))
                .collect();
            let Some(last) = nodes.last() else { break };
            cursor = Some(last.0.clone());
            for (p, n, acl) in nodes {
                // A node whose parent the walk missed was created after the start: replay recreates it.
                let _ = copy.load_node(p, n, &acl);
            }
            writing = writing && between(self);
        }
        copy
    }

    /// Replays onto `copy` every logged txn after zxid `start`, as recovery replays the WAL over a fuzzy
    /// snapshot; the result must be valid and hold what the live tree holds.
    pub fn replay_onto(&self, copy: &mut DataTree, start: i64) -> Result<(), String> {
        for record in self.log.iter().filter(|r| r.header.zxid > start) {
            copy.apply(&record.header, &record.txn);
        }
        copy.validate()?;
        if copy.digest() != self.tree.digest() {
            return Err(format!("digest {:x} after replay, {:x} live", copy.digest(), self.tree.digest()));
        }
        if !tree::tree::same_contents(copy, &self.tree) {
            return Err("recovered tree differs from the live one".into());
        }
        Ok(())
    }
}

pub fn caller(session: i64) -> Caller {
    Caller { session, auth: Vec::new().into(), expired: false }
}

pub fn create(path: &str, data: &str, flags: i32) -> Request {
    create_with(path, data, flags, open_acl_unsafe())
}

pub fn create_with(path: &str, data: &str, flags: i32, acl: Vec<Acl>) -> Request {
    Request::Create {
        op: op::CREATE2,
        path: path.into(),
        data: Some(Bytes::from(data.to_owned())),
        acl,
        flags,
        ttl: -1,
    }
}

pub fn set(path: &str, data: &str, version: i32) -> Request {
    Request::SetData { path: path.into(), data: Some(Bytes::from(data.to_owned())), version }
}

pub fn delete(path: &str, version: i32) -> Request {
    Request::Delete { path: path.into(), version }
}
