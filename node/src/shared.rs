//! What every task of one server shares: the tree, the watches, the connections by session, and counters.
//!
//! Lock order (always this way round, never the reverse): `tree`, then `watches`, then `conns`. The applier
//! holds the tree's write lock while it queues the watch events a txn fires, so a read that sees a change runs
//! after its events are queued, and the connection sends them before the read's reply.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLockReadGuard};
use std::time::Instant;

use bytes::Bytes;
use snapshot::write::SharedTree;
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

/// Most bytes of frames a connection may have queued before it counts as too slow and is closed (events carry
/// paths of up to `jute.maxbuffer` bytes each).
pub const MAX_QUEUED_BYTES: usize = 16 << 20;

/// A connection, as other tasks see it.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    /// Unique per connection.
    pub id: u64,
    tx: mpsc::UnboundedSender<Out>,
    queue: Arc<Queued>,
    /// The client's address.
    pub addr: std::net::SocketAddr,
    /// Per-connection counters, for `cons`.
    pub counters: Arc<ConnCounters>,
}

/// Request latencies: count, min, max and the last one in microseconds, and the sum in whole milliseconds per
/// request, as ZooKeeper adds them up, so that the mean lies between the minimum and the maximum as printed
/// (lock-free, for `srvr`, `mntr` and `cons`).
#[derive(Debug)]
pub struct Latency {
    sum_ms: AtomicU64,
    count: AtomicU64,
    min_us: AtomicU64,
    max_us: AtomicU64,
    last_us: AtomicU64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            sum_ms: AtomicU64::new(0),
            count: AtomicU64::new(0),
            min_us: AtomicU64::new(u64::MAX),
            max_us: AtomicU64::new(0),
            last_us: AtomicU64::new(0),
        }
    }
}

/// A summary of [`Latency`] in milliseconds, as ZooKeeper prints it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencyMs {
    /// The smallest (0 with none measured).
    pub min: i64,
    /// The mean.
    pub avg: f64,
    /// The largest.
    pub max: i64,
    /// The last one.
    pub last: i64,
}

impl Latency {
    /// Records one request that started at `started`.
    pub fn record(&self, started: Instant) {
        self.record_us(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    }

    fn record_us(&self, us: u64) {
        self.sum_ms.fetch_add(us / 1000, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.min_us.fetch_min(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        self.last_us.store(us, Ordering::Relaxed);
    }

    /// Forgets every measurement.
    pub fn reset(&self) {
        for c in [&self.sum_ms, &self.count, &self.max_us, &self.last_us] {
            c.store(0, Ordering::Relaxed);
        }
        self.min_us.store(u64::MAX, Ordering::Relaxed);
    }

    /// The summary in milliseconds.
    pub fn ms(&self) -> LatencyMs {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 {
            return LatencyMs::default();
        }
        let ms = |us: u64| (us / 1000) as i64;
        LatencyMs {
            min: ms(self.min_us.load(Ordering::Relaxed)),
            avg: self.sum_ms.load(Ordering::Relaxed) as f64 / count as f64,
            max: ms(self.max_us.load(Ordering::Relaxed)),
            last: ms(self.last_us.load(Ordering::Relaxed)),
        }
    }
}

/// A connection's counters (`cons`).
#[derive(Debug)]
pub struct ConnCounters {
    /// Packets received.
    pub received: AtomicU64,
    /// Whether a packet came since the last touch ([`crate::server`]'s toucher takes it): a session is alive
    /// while its client sends, as ZooKeeper's session tracker counts it, not while its connection is open.
    pub active: AtomicBool,
    /// Packets sent.
    pub sent: AtomicU64,
    /// Requests waiting for their reply.
    pub outstanding: AtomicU64,
    /// The last xid seen.
    pub last_cxid: AtomicU64,
    /// The last request's opcode (`i32::MIN`: none yet).
    pub last_op: AtomicI32,
    /// The zxid of the last reply (-1: none yet).
    pub last_zxid: AtomicI64,
    /// When the last reply went out, ms on the server's monotonic clock (since it started).
    pub last_response_ms: AtomicI64,
    /// The negotiated session timeout, ms.
    pub session_timeout_ms: AtomicI32,
    /// When the connection was accepted, ms since the Unix epoch.
    pub established_ms: i64,
    /// Request latencies.
    pub latency: Latency,
}

impl ConnCounters {
    fn new() -> ConnCounters {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        ConnCounters {
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
            last_cxid: AtomicU64::new(0),
            last_op: AtomicI32::new(i32::MIN),
            last_zxid: AtomicI64::new(-1),
            last_response_ms: AtomicI64::new(0),
            session_timeout_ms: AtomicI32::new(0),
            established_ms: now as i64,
            latency: Latency::default(),
            active: AtomicBool::new(true),
        }
    }

    /// Resets what `crst` resets (ZooKeeper's `ServerCnxn.resetStats`).
    pub fn reset(&self) {
        for c in [&self.received, &self.sent] {
            c.store(0, Ordering::Relaxed);
        }
        self.last_op.store(i32::MIN, Ordering::Relaxed);
        self.last_zxid.store(-1, Ordering::Relaxed);
        self.last_response_ms.store(0, Ordering::Relaxed);
        self.latency.reset();
    }
}

impl ConnHandle {
    /// A handle and the receiving end for the connection's task.
    pub fn new(id: u64, addr: std::net::SocketAddr) -> (ConnHandle, ConnInbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Arc::new(Queued::default());
        let counters = Arc::new(ConnCounters::new());
        (ConnHandle { id, tx, queue: queue.clone(), addr, counters }, ConnInbox { rx, queue })
    }

    /// Queues `out`; a connection that has fallen [`MAX_QUEUED`] messages or [`MAX_QUEUED_BYTES`] behind is
    /// told to close instead, once, and whatever comes for it after that is dropped: the queue never holds more
    /// than `MAX_QUEUED + 1` messages or `MAX_QUEUED_BYTES` of frames.
    pub fn send(&self, out: Out) {
        let queue = &self.queue;
        if queue.overflowed.load(Ordering::Relaxed) {
            return;
        }
        let len = out.len();
        let messages = queue.messages.fetch_add(1, Ordering::Relaxed) + 1;
        let bytes = queue.bytes.fetch_add(len, Ordering::Relaxed) + len;
        if messages > MAX_QUEUED || bytes > MAX_QUEUED_BYTES {
            queue.bytes.fetch_sub(len, Ordering::Relaxed);
            // The message's place goes to the close (counted like any message, so the receiver's accounting holds).
            if !queue.overflowed.swap(true, Ordering::Relaxed) {
                tracing::warn!(client = %self.addr, messages, bytes, "a client fell too far behind: closing it");
                let _ = self.tx.send(Out::Close);
            } else {
                queue.messages.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
        let _ = self.tx.send(out);
    }
}

impl Out {
    /// The bytes it holds.
    fn len(&self) -> usize {
        match self {
            Out::Event(frame) | Out::Reply { frame, .. } => frame.len(),
            Out::SessionCreated | Out::Close => 0,
        }
    }
}

/// What a connection has queued and not yet taken.
#[derive(Debug, Default)]
struct Queued {
    messages: AtomicUsize,
    bytes: AtomicUsize,
    /// Set once the connection was told to close for falling behind.
    overflowed: AtomicBool,
}

/// The receiving end of a connection's queue.
pub struct ConnInbox {
    rx: mpsc::UnboundedReceiver<Out>,
    queue: Arc<Queued>,
}

impl ConnInbox {
    /// The next message.
    pub async fn recv(&mut self) -> Option<Out> {
        let out = self.rx.recv().await;
        self.taken(out.as_ref());
        out
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<Out> {
        let out = self.rx.try_recv().ok();
        self.taken(out.as_ref());
        out
    }

    fn taken(&self, out: Option<&Out>) {
        if let Some(out) = out {
            self.queue.messages.fetch_sub(1, Ordering::Relaxed);
            self.queue.bytes.fetch_sub(out.len(), Ordering::Relaxed);
        }
    }
}

/// Sizes in bytes of what was last, at least and at most recorded (ZooKeeper's `BufferStats`, which `stat`
/// and `mntr` print as `-1` before the first).
#[derive(Debug)]
pub struct BufferStats {
    last: AtomicI64,
    min: AtomicI64,
    max: AtomicI64,
}

impl Default for BufferStats {
    fn default() -> Self {
        BufferStats { last: AtomicI64::new(-1), min: AtomicI64::new(-1), max: AtomicI64::new(-1) }
    }
}

impl BufferStats {
    /// Records one size.
    pub fn record(&self, bytes: usize) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.last.store(bytes, Ordering::Relaxed);
        // -1 (none yet) is below every size: take the first as the minimum.
        let _ = self.min.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| (m < 0 || bytes < m).then_some(bytes));
        self.max.fetch_max(bytes, Ordering::Relaxed);
    }

    /// Last, smallest and largest size; `None` before the first.
    pub fn get(&self) -> [Option<u32>; 3] {
        [&self.last, &self.min, &self.max].map(|c| u32::try_from(c.load(Ordering::Relaxed)).ok())
    }

    /// Forgets every size (`srst`).
    pub fn reset(&self) {
        for c in [&self.last, &self.min, &self.max] {
            c.store(-1, Ordering::Relaxed);
        }
    }
}

/// Syncs forwarded by learners that wait on the leader for the proposals before them to commit, counted by
/// the proposal each waits for: ZooKeeper's `Leader.pendingSyncs` (`zk_pending_syncs` is its size).
#[derive(Debug, Default)]
pub struct PendingSyncs(Mutex<BTreeMap<u64, usize>>);

/// One pending sync; it stops counting when dropped, however its wait ends.
pub struct PendingSync<'a> {
    syncs: &'a PendingSyncs,
    target: u64,
}

impl PendingSyncs {
    /// Counts a sync waiting for proposal number `target` until the guard is dropped.
    pub fn wait_for(&self, target: u64) -> PendingSync<'_> {
        *lock(&self.0).entry(target).or_default() += 1;
        PendingSync { syncs: self, target }
    }

    /// How many distinct proposals learners' syncs wait for.
    pub fn count(&self) -> usize {
        lock(&self.0).len()
    }
}

impl Drop for PendingSync<'_> {
    fn drop(&mut self) {
        let mut waiting = lock(&self.syncs.0);
        if let Some(n) = waiting.get_mut(&self.target) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&self.target);
            }
        }
    }
}

/// Server-wide counters (for `srvr`, `stat`, `mntr`).
#[derive(Debug)]
pub struct Stats {
    /// Packets received from clients.
    pub received: AtomicU64,
    /// Packets sent to clients.
    pub sent: AtomicU64,
    /// Requests received from clients and not answered yet, reads and pings included (ZooKeeper's
    /// `requestsInProcess`).
    pub outstanding: AtomicU64,
    /// Request latencies.
    pub latency: Latency,
    /// When the server started.
    pub started: Instant,
    /// Sizes of the txns this server proposed as leader (`Proposal sizes`, `zk_*_proposal_size`).
    pub proposal_sizes: BufferStats,
    /// Learners' syncs waiting on this leader.
    pub learner_syncs: PendingSyncs,
    /// What the metrics observe that `mntr` has no value for (latency summaries, WAL batches, commits).
    pub instruments: crate::metrics::Instruments,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
            latency: Latency::default(),
            started: Instant::now(),
            proposal_sizes: BufferStats::default(),
            learner_syncs: PendingSyncs::default(),
            instruments: crate::metrics::Instruments::default(),
        }
    }
}

impl Stats {
    /// Resets latency and packet counters and the proposal sizes (`srst`).
    pub fn reset(&self) {
        for c in [&self.received, &self.sent] {
            c.store(0, Ordering::Relaxed);
        }
        self.latency.reset();
        self.proposal_sizes.reset();
    }
}

/// Every how many zxids the digest is logged for `hash` (ZooKeeper's `DataTree.DIGEST_LOG_INTERVAL`).
pub const DIGEST_LOG_INTERVAL: i64 = 128;

/// How many logged digests are kept (ZooKeeper's `DataTree.DIGEST_LOG_LIMIT`).
pub const DIGEST_LOG_LIMIT: usize = 1024;

/// The state one server's tasks share.
pub struct Shared {
    /// The configuration.
    pub config: Arc<Config>,
    /// This server's id.
    pub my_id: u64,
    /// Whether this server runs alone (no `server.N` lines).
    pub standalone: bool,
    /// The znode tree, with every committed txn applied up to `applied`.
    pub tree: SharedTree,
    /// Watches of this server's connections.
    pub watches: Mutex<Watches>,
    /// Connections by session.
    pub conns: Mutex<HashMap<SessionId, ConnHandle>>,
    /// Connections per client address and in all (`maxClientCnxns`, `maxCnxns`).
    pub admission: Arc<crate::admission::Admission>,
    /// Requests in flight across connections (`globalOutstandingLimit`).
    pub throttle: Arc<crate::throttle::Throttle>,
    /// Size limits, from `jute.maxbuffer`.
    pub limits: crate::limits::Limits,
    /// The last zxid applied to `tree`.
    pub applied: watch::Sender<i64>,
    /// Syncs waiting for the leader, by (session, xid).
    pub syncs: Mutex<HashMap<(SessionId, i32), oneshot::Sender<i64>>>,
    /// Session ids this server hands out.
    pub session_ids: SessionIds,
    /// The super user's digest id (`user:base64(sha1)`), if configured.
    pub super_digest: Option<String>,
    /// Client SASL: its users, and which schemes sessions must have authenticated with.
    pub sasl: crate::sasl::Sasl,
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
    /// Set (with the reason) when this server must stop serving: its tree diverged, or it failed.
    pub halt: watch::Sender<Option<String>>,
    /// ZooKeeper's trace mask (`gtmk`, `stmk`): kept and reported, it selects nothing here (Ensemble logs through
    /// `tracing` and `RUST_LOG`).
    pub trace_mask: AtomicI64,
    /// The tree digest every [`DIGEST_LOG_INTERVAL`]th zxid, the last [`DIGEST_LOG_LIMIT`] of them (`hash`).
    pub digest_log: Mutex<std::collections::VecDeque<(i64, u64)>>,
    /// Set (with the reason) when this server failed for good and its process should exit, so that a restart
    /// recovers from disk (a halt on a divergence is not a failure: that server stays up for the operator).
    pub fatal: watch::Sender<Option<String>>,
    /// Read-only mode (`readonlymode.enabled`): whether this server serves read-only now, and its sessions.
    pub read_only: crate::read_only::ReadOnly,
    /// The sessions this server tracks while it leads ([`crate::tracker`]).
    pub tracker: crate::tracker::Tracker,
}

impl Shared {
    /// The state of server `my_id` with `config`, over `tree` (recovered up to zxid `applied`), and the receiving
    /// end of [`Shared::digests_out`].
    pub fn new(
        config: Arc<Config>,
        (my_id, standalone): (u64, bool),
        (tree, applied): (DataTree, i64),
        sasl: crate::sasl::Sasl,
        stats: Stats,
    ) -> (Arc<Shared>, mpsc::UnboundedReceiver<(i64, u64)>) {
        use crate::admission::Admission;
        use crate::throttle::{self, Throttle};
        let (digests_out, digests_in) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            my_id,
            standalone,
            applied: watch::channel(applied).0,
            tree: SharedTree::new(tree),
            watches: Mutex::default(),
            conns: Mutex::new(HashMap::new()),
            admission: Admission::new(config.max_client_cnxns, config.max_cnxns),
            limits: crate::limits::Limits::new(&config),
            throttle: Throttle::new(config.global_outstanding_limit.into(), throttle::DEFAULT_MAX_BYTES),
            syncs: Mutex::new(HashMap::new()),
            session_ids: SessionIds::new(my_id),
            super_digest: config.super_digest.clone(),
            sasl,
            stats,
            next_conn: AtomicU64::new(1),
            leading: AtomicBool::new(false),
            digests: Mutex::default(),
            digests_out,
            halt: watch::channel(None).0,
            fatal: watch::channel(None).0,
            trace_mask: AtomicI64::new(crate::fourlw::DEFAULT_TRACE_MASK),
            digest_log: Mutex::default(),
            read_only: crate::read_only::ReadOnly::new(config.read_only_mode),
            tracker: crate::tracker::Tracker::default(),
            config,
        });
        (shared, digests_in)
    }

    /// The tree, for reading.
    ///
    /// The applier holds the write lock for as long as a txn takes, which for a closeSession with a huge number
    /// of ephemerals is a long time: a reader that would wait gives its runtime thread up first (so that
    /// heartbeats and other connections run meanwhile), rather than block a worker thread.
    pub fn tree(&self) -> RwLockReadGuard<'_, DataTree> {
        match self.tree.try_read() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                let read = || self.tree.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                    Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(read),
                    _ => read(),
                }
            }
        }
    }

    /// The watches.
    pub fn watches(&self) -> MutexGuard<'_, Watches> {
        lock(&self.watches)
    }

    /// Stops this server serving for good, with `reason`, unless it already stopped (the first reason stays).
    pub fn halt(&self, reason: String) {
        self.halt.send_if_modified(|halt| match halt {
            Some(_) => false,
            None => {
                *halt = Some(reason);
                true
            }
        });
    }

    /// Fails this server for good: it stops serving, closes its clients, and its process should exit (the
    /// first reason stays).
    pub fn fail(&self, reason: String) {
        tracing::error!(%reason, "this server stops serving");
        self.halt(reason.clone());
        for conn in self.conns().values() {
            conn.send(Out::Close);
        }
        self.fatal.send_if_modified(|fatal| match fatal {
            Some(_) => false,
            None => {
                *fatal = Some(reason);
                true
            }
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes everything queued: (events, closes).
    fn drain(inbox: &mut ConnInbox) -> (usize, usize) {
        let (mut events, mut closes) = (0, 0);
        while let Some(out) = inbox.try_recv() {
            match out {
                Out::Event(_) => events += 1,
                Out::Close => closes += 1,
                _ => panic!("only events were sent"),
            }
        }
        (events, closes)
    }

    #[test]
    fn a_connection_that_does_not_drain_gets_one_close_and_its_queue_stays_bounded() {
        let (handle, mut inbox) = ConnHandle::new(1, "127.0.0.1:1".parse().unwrap());
        for _ in 0..MAX_QUEUED + 100 {
            handle.send(Out::Event(bytes::Bytes::new()));
        }
        let (events, closes) = drain(&mut inbox);
        assert_eq!((events, closes), (MAX_QUEUED, 1));
    }

    #[test]
    fn a_connection_falling_behind_in_bytes_gets_one_close() {
        let (handle, mut inbox) = ConnHandle::new(1, "127.0.0.1:1".parse().unwrap());
        let frame = bytes::Bytes::from(vec![0u8; 1 << 20]);
        for _ in 0..40 {
            handle.send(Out::Event(frame.clone()));
        }
        let (events, closes) = drain(&mut inbox);
        assert_eq!((events, closes), (MAX_QUEUED_BYTES >> 20, 1));
        assert_eq!(inbox.queue.messages.load(Ordering::Relaxed), 0);
        assert_eq!(inbox.queue.bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_mean_latency_lies_between_the_minimum_and_the_maximum_in_whole_milliseconds() {
        let latency = Latency::default();
        assert_eq!(latency.ms(), LatencyMs::default(), "none measured: 0/0.0/0");
        // Three requests of 1.5 ms: ZooKeeper counts each as 1 ms, and prints 1/1.0/1 (not 1/1.5/1).
        for _ in 0..3 {
            latency.record_us(1500);
        }
        assert_eq!(latency.ms(), LatencyMs { min: 1, avg: 1.0, max: 1, last: 1 });
        latency.record_us(4999);
        assert_eq!(latency.ms(), LatencyMs { min: 1, avg: 1.75, max: 4, last: 4 });
        latency.reset();
        assert_eq!(latency.ms(), LatencyMs::default());
    }

    #[test]
    fn buffer_stats_start_at_minus_one_and_track_last_min_max() {
        let sizes = BufferStats::default();
        assert_eq!(sizes.get(), [None, None, None]);
        for bytes in [120, 36, 4096, 50] {
            sizes.record(bytes);
        }
        assert_eq!(sizes.get(), [Some(50), Some(36), Some(4096)]);
        sizes.reset();
        assert_eq!(sizes.get(), [None, None, None]);
    }

    #[test]
    fn pending_syncs_count_distinct_targets_while_their_guards_live() {
        let syncs = PendingSyncs::default();
        let a = syncs.wait_for(7);
        let b = syncs.wait_for(7);
        let c = syncs.wait_for(9);
        assert_eq!(syncs.count(), 2, "two syncs wait for proposal 7, one for 9");
        drop(a);
        assert_eq!(syncs.count(), 2);
        drop((b, c));
        assert_eq!(syncs.count(), 0);
    }
}
