//! What every task of one server shares: the tree, the watches, the connections by session, and counters.
//!
//! Lock order (always this way round, never the reverse): `tree`, then `watches`, then `conns`. The applier
//! holds the tree's write lock while it queues the watch events a txn fires, so a read that sees a change runs
//! after its events are queued, and the connection sends them before the read's reply.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tree::tree::DataTree;

use crate::config::Config;
use crate::digest::DigestCheck;
use crate::session::{SessionId, SessionIds};
use crate::watch::Watches;

/// What a connection's task is told to send or do, in the order it must happen.
#[derive(Debug)]
pub enum Out {
    /// A watch event frame: send it now.
    Event(Bytes),
    /// The reply to the write (or sync) with this xid.
    Reply {
        /// The request's xid.
        cxid: i32,
        /// The reply frame.
        frame: Bytes,
    },
    /// The session's createSession txn was applied.
    SessionCreated,
    /// Close the connection (session closed or expired, or this server stopped serving).
    Close,
}

/// Most messages a connection may have queued before it counts as too slow and is closed.
pub const MAX_QUEUED: usize = 64 * 1024;

/// A connection, as other tasks see it.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    /// Unique per connection.
    pub id: u64,
    tx: mpsc::UnboundedSender<Out>,
    queued: Arc<AtomicUsize>,
    /// The client's address.
    pub addr: std::net::SocketAddr,
    /// Per-connection counters, for `cons`.
    pub counters: Arc<ConnCounters>,
}

/// A connection's counters.
#[derive(Debug, Default)]
pub struct ConnCounters {
    /// Packets received.
    pub received: AtomicU64,
    /// Packets sent.
    pub sent: AtomicU64,
    /// Requests waiting for their reply.
    pub outstanding: AtomicU64,
    /// The last xid seen.
    pub last_cxid: AtomicU64,
}

impl ConnHandle {
    /// A handle and the receiving end for the connection's task.
    pub fn new(id: u64, addr: std::net::SocketAddr) -> (ConnHandle, ConnInbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        (ConnHandle { id, tx, queued: queued.clone(), addr, counters: Arc::default() }, ConnInbox { rx, queued })
    }

    /// Queues `out`; a connection that has fallen [`MAX_QUEUED`] behind is told to close instead.
    pub fn send(&self, out: Out) {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED {
            let _ = self.tx.send(Out::Close);
            return;
        }
        let _ = self.tx.send(out);
    }
}

/// The receiving end of a connection's queue.
pub struct ConnInbox {
    rx: mpsc::UnboundedReceiver<Out>,
    queued: Arc<AtomicUsize>,
}

impl ConnInbox {
    /// The next message.
    pub async fn recv(&mut self) -> Option<Out> {
        let out = self.rx.recv().await;
        self.queued.fetch_sub(usize::from(out.is_some()), Ordering::Relaxed);
        out
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<Out> {
        let out = self.rx.try_recv().ok();
        self.queued.fetch_sub(usize::from(out.is_some()), Ordering::Relaxed);
        out
    }
}

/// Server-wide counters (for `srvr`, `stat`, `mntr`).
#[derive(Debug)]
pub struct Stats {
    /// Packets received from clients.
    pub received: AtomicU64,
    /// Packets sent to clients.
    pub sent: AtomicU64,
    /// Requests in flight.
    pub outstanding: AtomicU64,
    /// Sum, count, min and max of request latencies in microseconds.
    pub latency_sum_us: AtomicU64,
    /// Requests measured.
    pub latency_count: AtomicU64,
    /// The smallest latency.
    pub latency_min_us: AtomicU64,
    /// The largest latency.
    pub latency_max_us: AtomicU64,
    /// When the server started.
    pub started: Instant,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            latency_count: AtomicU64::new(0),
            latency_min_us: AtomicU64::new(u64::MAX),
            latency_max_us: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

impl Stats {
    /// Records one request's latency.
    pub fn record_latency(&self, started: Instant) {
        let us = started.elapsed().as_micros() as u64;
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_min_us.fetch_min(us, Ordering::Relaxed);
        self.latency_max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Resets latency and packet counters (`srst`).
    pub fn reset(&self) {
        for c in [&self.received, &self.sent, &self.latency_sum_us, &self.latency_count, &self.latency_max_us] {
            c.store(0, Ordering::Relaxed);
        }
        self.latency_min_us.store(u64::MAX, Ordering::Relaxed);
    }
}

/// The state one server's tasks share.
pub struct Shared {
    /// The configuration.
    pub config: Arc<Config>,
    /// This server's id.
    pub my_id: u64,
    /// Whether this server runs alone (no `server.N` lines).
    pub standalone: bool,
    /// The znode tree, with every committed txn applied up to `applied`.
    pub tree: RwLock<DataTree>,
    /// Watches of this server's connections.
    pub watches: Mutex<Watches>,
    /// Connections by session.
    pub conns: Mutex<HashMap<SessionId, ConnHandle>>,
    /// Connections per client IP (`maxClientCnxns`).
    pub per_ip: Mutex<HashMap<IpAddr, u32>>,
    /// The last zxid applied to `tree`.
    pub applied: watch::Sender<i64>,
    /// Syncs waiting for the leader, by (session, xid).
    pub syncs: Mutex<HashMap<(SessionId, i32), oneshot::Sender<i64>>>,
    /// Session ids this server hands out.
    pub session_ids: SessionIds,
    /// The super user's digest id (`user:base64(sha1)`), if configured.
    pub super_digest: Option<String>,
    /// Counters.
    pub stats: Stats,
    /// Connection ids.
    pub next_conn: AtomicU64,
    /// Whether this server leads (kept by the role watcher, read by the applier).
    pub leading: AtomicBool,
    /// Digest samples waiting for their counterpart ([`crate::digest`]).
    pub digests: Mutex<DigestCheck>,
    /// The leader's digest samples, for the task that sends them to the followers.
    pub digests_out: mpsc::UnboundedSender<(i64, u64)>,
    /// Set (with the reason) when this server must stop serving: its tree diverged.
    pub halt: watch::Sender<Option<String>>,
}

impl Shared {
    /// The tree, for reading.
    pub fn tree(&self) -> RwLockReadGuard<'_, DataTree> {
        self.tree.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The watches.
    pub fn watches(&self) -> MutexGuard<'_, Watches> {
        lock(&self.watches)
    }

    /// The connections by session.
    pub fn conns(&self) -> MutexGuard<'_, HashMap<SessionId, ConnHandle>> {
        lock(&self.conns)
    }
}

/// Locks a mutex; a panic elsewhere while holding it does not make the data unusable here (every critical
/// section leaves it consistent).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
