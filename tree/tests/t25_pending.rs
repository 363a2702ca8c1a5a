//! The leader preps each write against its committed tree plus the changes of its proposals that tree has not
//! applied yet ([`Pending`]). Model test: for any stream of writes, and any lag between proposing and applying,
//! that gives exactly the txns prep gives against a tree that applied every earlier txn at once; a closeSession's
//! prep gives them even when the tree applies proposals between the holds of its walk.

mod common;

use std::cell::RefCell;
use std::collections::VecDeque;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use tree::acl::{Acl, Id};
use tree::code::op;
use tree::pending::Pending;
use tree::prep::close::prep_close_in_slices;
use tree::prep::{prep, prep_over, Prepared, Request};
use tree::tree::{same_contents, DataTree};
use tree::txn::{TxnHeader, TxnRecord};

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..2u8).prop_map(|a| format!("/n{a}")),
        (0..2u8, 0..2u8).prop_map(|(a, b)| format!("/n{a}/m{b}")),
        (0..2u8, 0..2u8).prop_map(|(a, b)| format!("/n{a}/m{b}/k")),
    ]
}

/// World ACLs with any permissions: a setAcl that takes CREATE or WRITE away makes later writes fail.
fn acl() -> impl Strategy<Value = Vec<Acl>> {
    prop_oneof![
        3 => Just(tree::acl::open_acl_unsafe()),
        1 => (0..32i32).prop_map(|perms| vec![Acl { perms, id: Id::anyone() }]),
    ]
}

fn create() -> impl Strategy<Value = Request> {
    let kind = prop_oneof![
        (Just(op::CREATE), 0..4i32, Just(-1i64)),
        (Just(op::CREATE2), 0..4i32, Just(-1i64)),
        (Just(op::CREATE_CONTAINER), Just(4i32), Just(-1i64)),
        (Just(op::CREATE_TTL), 5..7i32, Just(60_000i64)),
    ];
    (path(), kind, acl(), proptest::option::of("[a-z]{0,3}")).prop_map(|(path, (op, flags, ttl), acl, data)| {
        Request::Create { op, path, data: data.map(Bytes::from), acl, flags, ttl }
    })
}

fn simple() -> impl Strategy<Value = Request> {
    prop_oneof![
        4 => create(),
        2 => (path(), -1..3i32).prop_map(|(path, version)| Request::Delete { path, version }),
        2 => (path(), proptest::option::of("[a-z]{0,3}"), -1..3i32)
            .prop_map(|(path, data, version)| Request::SetData { path, data: data.map(Bytes::from), version }),
        1 => (path(), acl(), -1..2i32).prop_map(|(path, acl, version)| Request::SetAcl { path, acl, version }),
        1 => (path(), -1..3i32).prop_map(|(path, version)| Request::Check { path, version }),
    ]
}

/// A write from one of three sessions.
fn write() -> impl Strategy<Value = (i64, Request)> {
    let request = prop_oneof![
        8 => simple(),
        2 => proptest::collection::vec(simple(), 1..4).prop_map(Request::Multi),
        1 => Just(Request::CreateSession { timeout: 30_000 }),
        1 => Just(Request::CloseSession),
    ];
    (1..4i64, request)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn prepping_over_pending_changes_is_prepping_over_the_applied_tree(
        writes in proptest::collection::vec((write(), 0..8usize), 1..80),
    ) {
        drive(&writes)?;
    }
}

#[test]
fn a_pending_close_empties_the_parents_of_its_ephemerals() {
    let open = tree::acl::open_acl_unsafe();
    let create = |path: &str, flags| Request::Create {
        op: op::CREATE,
        path: path.into(),
        data: None,
        acl: open.clone(),
        flags,
        ttl: -1,
    };
    let writes = [
        ((1, create("/n0", 0)), 0),
        ((2, create("/n0/e", 1)), 0),
        ((2, create("/n0/f", 1)), 0),
        ((1, create("/n1", 0)), 0),
        ((2, create("/n1/e", 1)), 0),
        // The close stays unapplied while the parents' deletes are prepped: each lost all its children.
        ((2, Request::CloseSession), 8),
        ((1, Request::Delete { path: "/n0".into(), version: -1 }), 8),
        ((1, Request::Delete { path: "/n1".into(), version: -1 }), 8),
    ];
    drive(&writes).unwrap();
}

/// Preps each write both ways and compares; each write comes with how many proposals may stay unapplied after
/// it (the committed tree's lag).
fn drive(writes: &[((i64, Request), usize)]) -> Result<(), TestCaseError> {
    let options = tree::prep::PrepOptions { ttl_enabled: true, enforce_quota: false };
    // The oracle: every txn applied as soon as it is prepped.
    let mut eager = DataTree::new();
    // The leader's way: a committed tree that lags, and the changes it has not applied.
    let (committed, mut pending) = (RefCell::new(DataTree::new()), Pending::new());
    let mut unapplied: VecDeque<(u64, TxnRecord)> = VecDeque::new();
    for (seq, ((session, request), lag)) in (1u64..).zip(writes) {
        let caller = caller(*session);
        let expected = prep(&eager, &caller, options, request);
        let Prepared { op, txn, changes } = match request {
            Request::CloseSession => {
                // The leader's walk lets go of the tree between holds (of one or two paths here), and the tree
                // applies a proposal in each gap; the leader retires none while it preps.
                let mut applied_meanwhile = None;
                let read = || {
                    if let Some((seq, record)) = unapplied.pop_front() {
                        committed.borrow_mut().apply(&record.header, &record.txn);
                        applied_meanwhile = Some(seq);
                    }
                    committed.borrow()
                };
                let prepared = prep_close_in_slices(read, &pending, *session, 1 + seq as usize % 2);
                if let Some(seq) = applied_meanwhile {
                    pending.retire(seq);
                }
                prepared
            }
            _ => prep_over(&committed.borrow(), &pending, &caller, options, request),
        };
        prop_assert_eq!(
            &(op, txn.clone()),
            &expected,
            "write {} ({:?}) with {} unapplied",
            seq,
            request,
            unapplied.len()
        );
        let zxid = (1i64 << 32) + seq as i64;
        let record = TxnRecord { header: TxnHeader { client_id: *session, cxid: 0, zxid, time: zxid, op }, txn };
        eager.apply(&record.header, &record.txn);
        pending.absorb(seq, changes);
        pending.check().map_err(TestCaseError::fail)?;
        unapplied.push_back((seq, record));
        while unapplied.len() > *lag {
            let (seq, record) = unapplied.pop_front().expect("not empty");
            committed.borrow_mut().apply(&record.header, &record.txn);
            pending.retire(seq);
            pending.check().map_err(TestCaseError::fail)?;
        }
    }
    let mut committed = committed.into_inner();
    while let Some((seq, record)) = unapplied.pop_front() {
        committed.apply(&record.header, &record.txn);
        pending.retire(seq);
    }
    prop_assert!(pending.is_empty(), "{} paths still pending with everything applied", pending.len());
    prop_assert_eq!(pending.bytes(), 0, "nothing pending weighs nothing");
    prop_assert!(same_contents(&committed, &eager));
    Ok(())
}

#[test]
fn a_multi_leaves_one_pending_change_per_path() {
    let options = tree::prep::PrepOptions { ttl_enabled: false, enforce_quota: false };
    let mut committed = DataTree::new();
    let create = Request::Create {
        op: op::CREATE,
        path: "/a".into(),
        data: None,
        acl: tree::acl::open_acl_unsafe(),
        flags: 0,
        ttl: -1,
    };
    let (op, txn) = prep(&committed, &caller(1), options, &create);
    committed.apply(&TxnHeader { client_id: 1, cxid: 0, zxid: 1, time: 1, op }, &txn);
    // A hostile client's multi: one path set a thousand times, in a txn of a few KiB.
    let sets = (0..1000).map(|_| Request::SetData { path: "/a".into(), data: None, version: -1 }).collect();
    let prepared = prep_over(&committed, &Pending::new(), &caller(1), options, &Request::Multi(sets));
    assert_eq!(prepared.op, op::MULTI);
    assert_eq!(prepared.changes.len(), 1);
}
