//! The `ensemble` server: ZooKeeper's client protocol over the replicated, durable znode tree.
//!
//! - [`config`]: ZooKeeper's `zoo.cfg` and `myid`; [`limits`]: the size limits derived from it.
//! - [`admission`]: which client connections are taken (`maxClientCnxns`, `maxCnxns`); [`throttle`]: how
//!   much client work is held at once (`globalOutstandingLimit`).
//! - [`server`]: one server, wiring recovery, the replication runtime and the tasks below.
//! - [`frame`]: the client port's framing; [`conn`]: a client connection (handshake, requests, ordered replies, events); [`reads`] serves reads,
//!   [`convert`] turns writes into what the leader prepares, [`reply`] builds the frames.
//! - [`leader`]: the leader's request pipeline and session expiry; [`tracker`]: the sessions' deadlines;
//!   [`forward`]: what followers send the leader.
//! - [`apply`]: committed txns into the tree, their watch events and replies; [`watch`]: who to tell.
//! - [`session`], [`auth`]: session ids and passwords, digest authentication.
//! - [`digest`]: the divergence check (tree digests compared with the leader's).
//! - [`read_only`]: read-only mode, serving reads to read-only clients while the quorum is gone.
//! - [`fourlw`], [`report`]: the four-letter words; [`logging`]: the log's formats; [`metrics`]: ZooKeeper's
//!   Prometheus endpoint.
#![deny(missing_docs)]

pub use replication::LATENCY;

pub mod admin;
pub mod admission;
pub mod apply;
pub mod auth;
pub mod config;
pub mod conn;
pub mod convert;
pub mod digest;
pub mod forward;
pub mod fourlw;
pub mod frame;
pub mod http;
pub mod leader;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod read_only;
pub mod reads;
pub mod repair;
pub mod reply;
pub mod report;
pub mod sasl;
pub mod server;
pub mod session;
pub mod shared;
pub mod throttle;
pub mod tls;
pub mod tracker;
pub mod watch;
