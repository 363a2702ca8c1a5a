//! ZooKeeper's client wire protocol, byte for byte as `zookeeper.jute` defines it and Apache ZooKeeper 3.8 and
//! its clients speak it (checked against captured frames in `testdata/zookeeper-3.8/`).
//!
//! A frame is a 4-byte big-endian length, then a record: a [`connect`] record first, then requests and replies
//! ([`records`]).
#![deny(missing_docs)]

pub mod connect;
pub mod records;
