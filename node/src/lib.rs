//! The `ensemble` server. So far: its configuration ([`config`]), read from ZooKeeper's own `zoo.cfg` so that an
//! operator can reuse one.
#![deny(missing_docs)]

pub mod config;
