//! The znode tree with ZooKeeper's semantics, the transactions that change it, and the tree digest.
//!
//! A crate of its own because three others need it: `snapshot` (which writes and loads the tree), `replication`
//! (which ships txns) and `node` (which preps client requests into txns and answers reads from the tree).
//!
//! - [`prep`] turns a client's write request into a [`txn::Txn`] that carries the outcome (ZooKeeper's
//!   `PrepRequestProcessor`); [`tree::DataTree::apply`] applies it (ZooKeeper's `DataTree.processTxn`).
//! - [`txn`] owns the txn encoding (jute, as in ZooKeeper's txn log), [`stat`] the `Stat` encoding, [`jute`]
//!   the primitives.
//! - [`digest`] is ZooKeeper's tree digest, kept up to date on every apply.
//! - [`quota`] is ZooKeeper's quotas: the stats nodes kept as txns apply, and the leader's hard-limit check.
//!
//! ```
//! use tree::prep::{prep, Caller, PrepOptions, Request};
//! use tree::tree::DataTree;
//! use tree::txn::TxnHeader;
//!
//! let mut tree = DataTree::new();
//! let request = Request::Create {
//!     op: tree::code::op::CREATE, path: "/app".into(), data: Some("v1".into()),
//!     acl: tree::acl::open_acl_unsafe(), flags: 0, ttl: -1,
//! };
//! let (op, txn) = prep(&tree, &Caller::default(), PrepOptions { ttl_enabled: false, enforce_quota: false }, &request);
//! let header = TxnHeader { client_id: 0, cxid: 1, zxid: 0x1_0000_0001, time: 1_700_000_000_000, op };
//! let applied = tree.apply(&header, &txn);
//! assert_eq!(applied.path.as_deref(), Some("/app"));
//! assert_eq!(tree.get("/app").unwrap().bytes(), b"v1");
//! ```
#![deny(missing_docs)]

pub mod acl;
pub mod children;
pub mod code;
pub mod digest;
pub mod jute;
pub mod load;
pub mod path;
pub mod pending;
pub mod prep;
pub mod quota;
pub mod stat;
pub mod tree;
pub mod txn;
