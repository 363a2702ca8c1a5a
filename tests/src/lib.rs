//! Harness for the integration tests: starts real `ensemble` processes on loopback and talks to them the way
//! ZooKeeper clients do.
//!
//! - [`Cluster`] writes a ZooKeeper `zoo.cfg` and `myid` per node in a temporary directory, starts each node as
//!   `ensemble start --config FILE` with its log in the node's directory, and waits until every node answers
//!   `srvr` with a `Mode:` line. It kills, stops and restarts nodes and sends four-letter words.
//! - [`Proxy`] sits between a client and the nodes, so a test chooses which node a session talks to, when its
//!   connection breaks, and when no node is reachable.
//! - [`raw::RawSession`] speaks the client protocol directly, for requests the Rust client does not expose.
//! - [`peer_frames`] makes Ensemble peer frames by hand, for strangers on the quorum port (t76, t78).
//! - [`zkcli::run`] runs a zkCli.sh session (Apache ZooKeeper's own CLI) against a node.
//! - [`nemesis`] runs nodes in network namespaces and partitions, pauses and kills them on a seeded schedule
//!   while clients record a history that its checker then verifies (`t90_nemesis`).
//! - [`client`] has the helpers the tests share: connecting with retries, polling with deadlines, and
//!   [`Sections`] to run the parts of a test one after the other without one failure hiding the others.
//!
//! The binary is `$ENSEMBLE_BIN`, else `ensemble` in the target directory of the test executable; the tests
//! fail (never skip) when it is missing, saying to run `cargo build -p node --bin ensemble`.
//!
//! Environment:
//! - `ENSEMBLE_BIN`: the server binary.
//! - `ENSEMBLE_KEEP`: keep every cluster's directory (data and logs) and print where it is.
//! - `ENSEMBLE_LOG`: passed to the nodes as `RUST_LOG`.
//! - `ENSEMBLE_LOG_LINES`: how many lines of each node's log a failing test prints (default 80).
//! - `ENSEMBLE_SECTION`: run only the sections of a test whose name contains this.
//! - `ENSEMBLE_TESTS_SERVER=zookeeper`: run the same tests against Apache ZooKeeper 3.8 (Debian's `zookeeper`
//!   package), to check the tests themselves.
//!
//! ```no_run
//! use ensemble_tests::Cluster;
//!
//! let cluster = Cluster::start(3);
//! let leader = cluster.leader();
//! assert_eq!(cluster.four_letter(leader, "ruok"), "imok");
//! cluster.kill(leader);
//! assert_ne!(cluster.leader(), leader);
//! cluster.restart(leader);
//! ```
#![deny(missing_docs)]

pub mod client;
mod cluster;
pub mod fourlw;
pub mod nemesis;
pub mod peer_frames;
mod ports;
pub mod process;
mod proxy;
pub mod raw;
pub mod zkcli;

pub use client::{blocking, connect, connect_with, eventually, Sections};
pub use cluster::{Cluster, Netns, Options};
pub use fourlw::Mode;
pub use ports::free_ports;
pub use proxy::Proxy;
