//! The leader's request pipeline: client writes from every server of the ensemble are prepared here (checked
//! and turned into txns, ZooKeeper's `PrepRequestProcessor`), in arrival order, and proposed.
//!
//! Prepared txns take effect only when they commit, yet each write must be checked against every write before
//! it, committed or not (two creates of one path, two sequential creates under one parent). So the pipeline
//! keeps the changes of its proposals that the committed tree has not applied yet ([`Pending`], ZooKeeper's
//! outstanding changes) and preps against the committed tree through them. Once the tree applied a proposal,
//! its changes are retired. When a proposal fails (leadership is lost), the changes are dropped, and the
//! pipeline waits for every proposal in flight to resolve and for the tree to apply the whole committed history
//! before it preps again.
//!
//! The leader also expires sessions: every server touches the sessions of its connections in the
//! [`Tracker`](crate::tracker::Tracker), and the pipeline closes a session not touched within its timeout
//! through a closeSession txn. And it deletes empty containers and expired TTL nodes (ZooKeeper's
//! `ContainerManager`), through ordinary deletes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use replication::message::ServerId;
use replication::peer::Role;
use replication::runtime::{ForwardShare, ForwardTo, Handle};
use tokio::sync::{mpsc, oneshot, watch};
use tree::acl::Id;
use tree::pending::Pending;
use tree::prep::{self, Caller, PrepOptions, Prepared, Request};
use tree::stat::OwnerKind;
use tree::txn::{Txn, TxnHeader, TxnRecord};

use crate::forward::Forward;
use crate::session::SessionId;
use crate::shared::{lock, Out, Shared};
use crate::throttle::Ticket;

/// Where a request came from: this server's own clients or a follower's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A connection on this server.
    Local,
    /// A connection on that server.
    Peer(ServerId),
}

/// An item for the pipeline.
#[derive(Debug)]
pub enum Item {
    /// A write to prepare and propose.
    Write {
        /// Who sent it.
        origin: Origin,
        /// The session.
        session: SessionId,
        /// The client's xid.
        cxid: i32,
        /// The session's identities.
        auth: Arc<[Id]>,
        /// The write.
        request: Request,
    },
    /// A client's sync: answered once every write proposed before it has committed.
    Sync {
        /// Who sent it.
        origin: Origin,
        /// The session.
        session: SessionId,
        /// The client's xid.
        cxid: i32,
    },
    /// A client re-attached its session on this server: its connection on any other server must close.
    Attach {
        /// The server it attached on.
        origin: Origin,
        /// The session.
        session: SessionId,
    },
}

/// The sending end of the pipeline's queue.
///
/// The queue is not bounded in count: every item holds a share of a budget in bytes until the pipeline is done
/// with it ([`Hold`]), so that the handler of what followers forward never waits for the queue (ZooKeeper's
/// request queue is unbounded too, and its learner handlers never block on it) while what it holds stays
/// bounded: by each follower's forwarded-bytes budget, and by this server's client budget ([`crate::throttle`]).
#[derive(Clone, Debug)]
pub struct Queue(mpsc::UnboundedSender<Queued>);

/// The receiving end of the pipeline's queue.
pub type Items = mpsc::UnboundedReceiver<Queued>;

/// An item in the queue, with the budget share it holds.
#[derive(Debug)]
pub struct Queued {
    item: Item,
    hold: Hold,
}

/// The budget share a queued item holds until the pipeline is done with it: a write until it is proposed (or
/// refused), a sync until it is answered.
#[derive(Debug)]
pub enum Hold {
    /// A follower's item: its share of that follower's forwarded-bytes budget, which counts the payload's bytes
    /// and its queue entries ([`replication::runtime::FORWARD_ENTRY_WEIGHT`]).
    Forwarded(ForwardShare),
    /// This server's client's: the request's ticket, shared with its connection (which gives its part back
    /// when it answers or closes), so that a connection that closed still counts for what it queued.
    Local(Arc<Ticket>),
}

impl Hold {
    /// Whether the item is a client's write or sync whose connection closed (it held the request's ticket):
    /// nobody waits for its answer. A closeSession still closes; a handshake's items are the queue's alone.
    fn is_stale(&self, item: &Item) -> bool {
        let Hold::Local(ticket) = self else { return false };
        let request = match item {
            Item::Write { request, .. } => Some(request),
            Item::Sync { .. } => None,
            Item::Attach { .. } => return false,
        };
        let kept = matches!(request, Some(Request::CloseSession | Request::CreateSession { .. }));
        !kept && Arc::strong_count(ticket) == 1
    }
}

/// The pipeline is gone: this server is shutting down.
#[derive(Debug)]
pub struct Stopped;

impl Queue {
    /// A queue and its receiving end.
    pub fn new() -> (Queue, Items) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Queue(tx), rx)
    }

    /// Queues an item from this server's clients, with its request's ticket.
    pub fn local(&self, item: Item, ticket: Arc<Ticket>) -> Result<(), Stopped> {
        self.0.send(Queued { item, hold: Hold::Local(ticket) }).map_err(|_| Stopped)
    }

    /// Queues a follower's item with its share of that follower's budget (a pipeline that is gone drops it).
    pub fn forwarded(&self, item: Item, share: ForwardShare) {
        let _ = self.0.send(Queued { item, hold: Hold::Forwarded(share) });
    }
}

/// Proposals in flight at most (the replication window): the pipeline waits for commits rather than have a
/// proposal refused.
pub const WINDOW: usize = 1000;

/// Heap bytes of pending changes past which the pipeline preps nothing more until the tree has applied (and the
/// pipeline retired) enough: the window bounds proposals in flight by count, this bounds what the leader keeps
/// of them by size (a multi of tiny creates weighs several times its txn here). A single request may pass it
/// (a closeSession of many ephemerals); the next waits.
pub const PENDING_BYTES: usize = 64 << 20;

/// Runs the pipeline until its queue closes.
pub async fn run(shared: Arc<Shared>, handle: Handle, items: Items) {
    let tick = shared.config.tick;
    // Resolving runs beside the pipeline in this task (not a task of its own, which nothing would supervise):
    // the pipeline waits for it (the window, syncs) while it handles an item, and it ends once the pipeline has
    // ended and dropped its sender.
    let (pipeline, resolving) = Pipeline::new(shared, handle);
    tokio::join!(pipeline.run(items, tick), resolving);
}

struct Pipeline {
    shared: Arc<Shared>,
    handle: Handle,
    /// The role, watched: any change since the pipeline became ready makes its pending changes stale (another
    /// leader may have committed txns meanwhile, even if none of ours failed).
    role: watch::Receiver<(Role, bool)>,
    /// Whether the committed tree had applied this leader's whole committed history when the pipeline last
    /// began to prep, and nothing failed since.
    ready: bool,
    /// The changes of this leader's proposals that the committed tree has not applied yet.
    pending: Pending,
    /// Each committed proposal's zxid, in order, from [`resolve`]: once the tree has applied a zxid, the
    /// proposal's pending changes retire.
    committed: Arc<Mutex<VecDeque<(u64, i64)>>>,
    /// Set by a proposal that failed: the pending changes are wrong from there on.
    failed: Arc<AtomicBool>,
    /// Proposals submitted, and the count of those resolved (committed or failed, in order).
    submitted: u64,
    completed: Arc<watch::Sender<u64>>,
    /// Each submitted proposal's fate, in submission order, for [`resolve`].
    outcomes: mpsc::Sender<(u64, Outcome)>,
    /// Expired sessions whose close is yet to be proposed, in the order they expired.
    closing: VecDeque<SessionId>,
    /// Counts the times the pipeline started over (a new role, a failed proposal): what one term prepared or
    /// decided is not the next one's.
    term: u64,
    options: PrepOptions,
}

/// How often the pipeline expires sessions, and the granularity of their deadlines in the tracker: half a tick. A
/// deadline rounds up by less than that, and the next round comes less than that after, so a session expires less
/// than a tick after its timeout, as in ZooKeeper (its deadlines round up to a tick, its expirer wakes on time).
fn expiry_interval(tick: Duration) -> Duration {
    tick / 2
}

/// What woke the pipeline.
enum Wake {
    Item(Queued),
    Expire,
    Reap,
}

impl Pipeline {
    /// A pipeline that has not begun to prep, and the resolving of its proposals, which must run beside it.
    fn new(shared: Arc<Shared>, handle: Handle) -> (Pipeline, impl std::future::Future<Output = ()>) {
        let options =
            PrepOptions { ttl_enabled: shared.config.extended_types, enforce_quota: shared.config.enforce_quota };
        let failed = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(watch::channel(0).0);
        let committed = Arc::new(Mutex::new(VecDeque::new()));
        let (outcomes, resolving) = mpsc::channel(WINDOW);
        let resolving = resolve(resolving, failed.clone(), completed.clone(), committed.clone());
        let pipeline = Pipeline {
            shared,
            role: handle.role.clone(),
            handle,
            ready: false,
            pending: Pending::new(),
            committed,
            failed,
            submitted: 0,
            completed,
            outcomes,
            closing: VecDeque::new(),
            term: 0,
            options,
        };
        (pipeline, resolving)
    }

    /// Handles items until the queue closes, expiring sessions and reaping nodes on their timers.
    async fn run(mut self, mut items: Items, tick: Duration) {
        let mut expiry = tokio::time::interval(expiry_interval(tick));
        let mut reaping = tokio::time::interval(self.shared.config.container_check_interval);
        // A round that overran (closes waiting for the window) is not made up for by a burst of rounds, which the
        // timers' precedence below would run back to back ahead of every item.
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reaping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The timers first: under a steady load, items are always ready, and expiry must keep its time.
            let wake = tokio::select! {
                biased;
                _ = expiry.tick() => Wake::Expire,
                _ = reaping.tick() => Wake::Reap,
                queued = items.recv() => match queued {
                    Some(queued) => Wake::Item(queued),
                    None => return,
                },
            };
            match wake {
                Wake::Item(Queued { item, hold }) if hold.is_stale(&item) => {
                    // ZooKeeper's request throttler drops a request whose connection closed the same way
                    // (`zookeeper.request_throttle_drop_stale`), a closeSession excepted.
                    tracing::debug!(?item, "a request whose connection closed: dropped");
                    if let Item::Sync { session, cxid, .. } = item {
                        lock(&self.shared.syncs).remove(&(session, cxid));
                    }
                }
                Wake::Item(Queued { item, hold }) => self.handle(item, hold).await,
                Wake::Expire => self.expire().await,
                Wake::Reap => self.reap().await,
            }
        }
    }

    fn leading(&self) -> bool {
        *self.handle.role.borrow() == (Role::Leading, true)
    }

    /// Whether the pipeline can prep: it leads, and the committed tree has applied everything this leader's
    /// history committed before it began (waited for after a start or a failure, once every proposal in flight
    /// has resolved; the session tracker is rebuilt from the tree then).
    async fn ready(&mut self) -> bool {
        let role_changed = self.role.has_changed().unwrap_or(true);
        // Nothing changed since the pipeline became ready, which it does only on a role that leads: it still is
        // (without reading the role, which takes the watch's lock, for each write).
        if self.ready && !role_changed && !self.failed.load(Ordering::Acquire) {
            return true;
        }
        if self.failed.swap(false, Ordering::AcqRel) || role_changed || !self.leading() {
            self.ready = false;
            self.pending.clear();
            lock(&self.committed).clear();
            self.shared.tracker.stop();
            self.closing.clear();
            self.term += 1;
        }
        if !self.leading() {
            return false;
        }
        if !self.ready {
            let deadline = tokio::time::sleep(self.shared.config.tick * self.shared.config.init_limit);
            tokio::pin!(deadline);
            // Every proposal submitted so far resolves first (commits or fails): one that committed after the
            // pipeline began to prep again would change the tree under preps that did not see it.
            let (submitted, mut completed) = (self.submitted, self.completed.subscribe());
            tokio::select! {
                done = completed.wait_for(|&done| done >= submitted) => if done.is_err() { return false },
                _ = &mut deadline => {
                    tracing::warn!(submitted, "the proposals in flight did not resolve in time");
                    return false;
                }
            }
            // What they committed is in the history the tree must reach; their failures are accounted for.
            lock(&self.committed).clear();
            self.failed.store(false, Ordering::Release);
            let target = self.handle.applied.borrow().0 as i64;
            let mut applied = self.shared.applied.subscribe();
            loop {
                if *applied.borrow_and_update() >= target {
                    break;
                }
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() { return false },
                    _ = &mut deadline => {
                        tracing::warn!(target, "the tree did not catch up with the committed history in time");
                        return false;
                    }
                }
            }
            // The role marked seen here is the one the fast path above relies on: it must lead.
            if *self.role.borrow_and_update() != (Role::Leading, true) {
                return false;
            }
            let tree = self.shared.tree();
            let sessions = tree.sessions().iter().map(|(&s, &t)| (s, t));
            self.shared.tracker.start(sessions, Instant::now(), expiry_interval(self.shared.config.tick));
            let sessions = self.shared.tracker.len();
            tracing::info!(zxid = tree.last_zxid(), sessions, "leading: pipeline ready");
            self.ready = true;
        }
        true
    }

    /// Retires the pending changes of the proposals the committed tree has applied.
    fn retire(&mut self) {
        // Read before the tree (the caller locks it after): the tree has applied at least this much.
        let applied = *self.shared.applied.borrow();
        let retired = applied_through(&mut lock(&self.committed), applied);
        if let Some(seq) = retired {
            self.pending.retire(seq);
        }
    }

    /// Waits until the pending changes weigh at most [`PENDING_BYTES`]; false if this server stops leading
    /// meanwhile.
    async fn drain(&mut self) -> bool {
        let mut applied = self.shared.applied.subscribe();
        tracing::debug!(bytes = self.pending.bytes(), "pending changes over their budget: waiting for applies");
        loop {
            self.retire();
            if self.pending.bytes() <= PENDING_BYTES {
                return true;
            }
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return false },
                // A failed proposal or a new role drops the changes instead (`ready`), and applies stop then.
                _ = tokio::time::sleep(self.shared.config.tick) => {}
            }
            if !self.ready().await {
                return false;
            }
        }
    }

    /// Handles an item; its budget share is given back once it is done (a write proposed or refused, a sync
    /// answered).
    async fn handle(&mut self, item: Item, hold: Hold) {
        match item {
            Item::Attach { origin, session } => {
                // The session moved: its connection on the old server is closed (ZooKeeper answers that one's
                // requests SESSIONMOVED), so that one server at a time serves it.
                if let Some(old) = self.shared.tracker.attach(session, origin) {
                    tracing::debug!(session = format_args!("0x{session:x}"), ?old, ?origin, "session moved");
                    self.drop_request(old, session).await;
                }
            }
            Item::Write { origin, session, cxid, auth, request } => {
                // ZooKeeper's checkSession: once a client re-attached its session elsewhere, a write that still
                // comes from the old connection does not apply, and that connection is torn down (ZooKeeper
                // treats SESSIONMOVED as a connection-level error, ZOOKEEPER-710). The attach already asked for
                // the close; this covers the writes that reach the leader before it happened.
                // (After `ready()`: a new term rebuilds the session table, owners included.)
                let current = self.ready().await;
                let moved = current && self.shared.tracker.owner(session).is_some_and(|owner| owner != origin);
                if moved {
                    tracing::debug!(session = format_args!("0x{session:x}"), ?origin, "a write from a moved session");
                    self.drop_request(origin, session).await;
                } else if !self.propose(session, cxid, auth, &request, None).await {
                    self.drop_request(origin, session).await;
                } else if matches!(request, Request::CreateSession { .. }) {
                    self.shared.tracker.attach(session, origin);
                }
            }
            Item::Sync { origin, session, cxid } => {
                let (target, mut completed) = (self.submitted, self.completed.subscribe());
                let (shared, handle) = (self.shared.clone(), self.handle.clone());
                tokio::spawn(async move {
                    let _hold = hold;
                    // A learner's sync that has to wait counts in `zk_pending_syncs` until it is answered.
                    let waits = matches!(origin, Origin::Peer(_)) && *completed.borrow() < target;
                    let _pending = waits.then(|| shared.stats.learner_syncs.wait_for(target));
                    // Every write completed before the sync began is either among this leader's proposals so
                    // far, or committed before it led (and applied before it proposed anything) — unless a
                    // newer leader committed it, which the barrier rules out: a quorum still follows this one
                    // after the sync arrived. Without it, a leader cut off with a minority would answer with a
                    // stale zxid until it noticed (ZooKeeper's behaviour; the nemesis suite's StaleSyncedRead).
                    let completes = async { completed.wait_for(|&done| done >= target).await.is_ok() };
                    let (done, leads) = tokio::join!(completes, handle.confirm_leadership());
                    if !done || !leads {
                        return;
                    }
                    let zxid = handle.applied.borrow().0 as i64;
                    match origin {
                        Origin::Local => {
                            if let Some(waiter) = lock(&shared.syncs).remove(&(session, cxid)) {
                                let _ = waiter.send(zxid);
                            }
                        }
                        Origin::Peer(peer) => {
                            let answer = Forward::Synced { session, cxid, zxid }.encode();
                            handle.forward(ForwardTo::Peer(peer), answer).await;
                        }
                    }
                });
            }
        }
    }

    /// Prepares and proposes one write; false when this server cannot (it does not lead). With `term`, only in
    /// that term of the pipeline (an expired session's close: a new term gave the session a fresh timeout).
    async fn propose(
        &mut self,
        session: SessionId,
        cxid: i32,
        auth: Arc<[Id]>,
        request: &Request,
        term: Option<u64>,
    ) -> bool {
        let (options, limit) = (self.options, self.shared.limits.txn);
        if !self.ready().await {
            return false;
        }
        self.retire();
        if self.pending.bytes() > PENDING_BYTES && !self.drain().await {
            return false;
        }
        if term.is_some_and(|term| term != self.term) {
            return false;
        }
        // A session the tracker does not know (expired, or closed by a write before this one) writes nothing but its
        // close; session 0 is the server's own (the reaper's deletes).
        let expired = session != 0 && !self.shared.tracker.contains(session);
        let caller = Caller { session, auth, expired };
        let (shared, pending) = (&self.shared, &self.pending);
        let prepare = || {
            let (Prepared { op, txn, changes }, last_zxid) = match request {
                // A session's ephemerals may be any number: the walk lets go of the tree now and then, so that
                // the applier does not wait for all of it.
                Request::CloseSession => {
                    let prepared = prep::close::prep_close(|| shared.tree(), pending, session);
                    (prepared, shared.tree().last_zxid())
                }
                _ => {
                    let tree = shared.tree();
                    (prep::prep_over(&tree, pending, &caller, options, request), tree.last_zxid())
                }
            };
            let time = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            // The zxid is the runtime's to give (the applier and a replay take it from the log), not this one.
            let header = TxnHeader { client_id: session, cxid, zxid: last_zxid + 1, time, op };
            let (_, bytes) = fit(TxnRecord { header, txn }, limit)?;
            Some((bytes, changes))
        };
        // Closing a session walks all its ephemerals (any number of them): off the runtime's threads, so that
        // heartbeats and other clients go on meanwhile.
        let prepared = match request {
            Request::CloseSession => tokio::task::block_in_place(prepare),
            _ => prepare(),
        };
        let Some((bytes, changes)) = prepared else { return false };
        let bytes = Bytes::from(bytes);
        let size = bytes.len();
        let (submitted, mut completed) = (self.submitted, self.completed.subscribe());
        if completed.wait_for(|&done| submitted - done < WINDOW as u64).await.is_err() {
            return false;
        }
        // What was prepared read the tree and the pending changes of this term: if the role changed or a
        // proposal failed meanwhile (a close's walk lets go of the tree between holds, and the wait above
        // yields), the tree may be another term's and the pending changes stale. Not proposed (`ready()` resets
        // the pipeline for the next write). An unchanged role is still the leading one `ready()` saw.
        if self.role.has_changed().unwrap_or(true) || self.failed.load(Ordering::Acquire) {
            tracing::debug!(session = format_args!("0x{session:x}"), "the role changed while a write was prepared");
            return false;
        }
        match self.handle.submit(bytes).await {
            Ok(outcome) => {
                tracing::trace!(target: crate::LATENCY, session, cxid, "submitted");
                self.submitted += 1;
                self.pending.absorb(self.submitted, changes);
                self.shared.stats.proposal_sizes.record(size);
                // Once submitted (ZooKeeper's tracker does it as the request is prepared; here a prepared write that
                // is not proposed would leave a session tracked until the pipeline starts over). The pipeline
                // handles one item at a time, so the next write of the session already sees it.
                match request {
                    Request::CreateSession { timeout } => self.shared.tracker.add(session, *timeout, Instant::now()),
                    Request::CloseSession => {
                        self.shared.tracker.remove(session);
                        // Its client closed it first: no second close when it comes due.
                        self.closing.retain(|&s| s != session);
                    }
                    _ => {}
                }
                // Room is certain (at most WINDOW in flight), and `resolve` runs as long as the pipeline does.
                self.outcomes.send((self.submitted, outcome)).await.expect("resolve outlives the pipeline's sender");
                true
            }
            Err(_) => {
                self.failed.store(true, Ordering::Release);
                false
            }
        }
    }
}

/// Pops the committed proposals (sequence number, zxid; in order) whose zxid the tree has applied, and returns
/// the last one's sequence number: the changes of it and of every proposal before it may retire.
fn applied_through(committed: &mut VecDeque<(u64, i64)>, applied: i64) -> Option<u64> {
    let mut retired = None;
    while let Some(&(seq, zxid)) = committed.front() {
        if zxid > applied {
            break;
        }
        committed.pop_front();
        retired = Some(seq);
    }
    retired
}

/// What tells a proposal's fate.
type Outcome = oneshot::Receiver<Result<wal::Zxid, replication::runtime::CommitError>>;

/// Counts proposals as they resolve, in order (one task for all of them, not one per proposal): a failure
/// marks the pipeline's pending changes stale, a commit tells the pipeline the proposal's zxid (`committed`),
/// and `completed` moves on either way (syncs and the window wait on it).
async fn resolve(
    mut outcomes: mpsc::Receiver<(u64, Outcome)>,
    failed: Arc<AtomicBool>,
    completed: Arc<watch::Sender<u64>>,
    committed: Arc<Mutex<VecDeque<(u64, i64)>>>,
) {
    // `None`: the runtime dropped the proposal without an answer.
    let settle = |seq: u64, outcome: Option<Result<wal::Zxid, replication::runtime::CommitError>>| match outcome {
        Some(Ok(zxid)) => lock(&committed).push_back((seq, zxid.0 as i64)),
        outcome => {
            tracing::debug!(?outcome, "a proposal failed: the pending changes will be dropped");
            failed.store(true, Ordering::Release);
        }
    };
    let mut next = outcomes.recv().await;
    while let Some((seq, outcome)) = next.take() {
        settle(seq, outcome.await.ok());
        // Settle the proposals behind it that resolved with it (a commit covers many), then wake the waiters
        // once for all of them.
        let mut done = seq;
        while let Ok((seq, mut outcome)) = outcomes.try_recv() {
            match outcome.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => {
                    next = Some((seq, outcome));
                    break;
                }
                Ok(result) => settle(seq, Some(result)),
                Err(oneshot::error::TryRecvError::Closed) => settle(seq, None),
            }
            done = seq;
        }
        completed.send_modify(|completed| *completed = (*completed).max(done));
        if next.is_none() {
            next = outcomes.recv().await;
        }
    }
}

/// The txn as it can be proposed within `limit` bytes: as prepared if it fits; a closeSession without its list
/// of ephemerals if the list is too long (every server then deletes what its tree holds for the session, in the
/// same single txn, so the close stays atomic); `None` for anything else over the limit, which is not proposed
/// (ZooKeeper closes the connection of a client that sends more than `jute.maxbuffer`; this is the same answer
/// for a request whose txn would outgrow what the log and the peers take).
fn fit(record: TxnRecord, limit: usize) -> Option<(TxnRecord, Vec<u8>)> {
    // Sized before it is encoded: a close's list of 200,000 paths is 9 MB that would be copied only to be dropped.
    let len = TxnHeader::SIZE + record.txn.size_hint();
    if len <= limit {
        let bytes = record.encode();
        debug_assert_eq!(bytes.len(), len, "size_hint is exact");
        return Some((record, bytes));
    }
    let session = format_args!("0x{:x}", record.header.client_id);
    match record.txn {
        Txn::CloseSession { paths } => {
            tracing::info!(%session, ephemerals = paths.len(), bytes = len, limit, "closing a session with too many ephemerals to list: the txn names none");
            let record = TxnRecord { txn: Txn::CloseSession { paths: Vec::new() }, ..record };
            let bytes = record.encode();
            Some((record, bytes))
        }
        _ => {
            tracing::warn!(%session, op = record.header.op, bytes = len, limit, "a request's txn is over the size limit: not proposed, the client's connection closes");
            None
        }
    }
}

impl Pipeline {
    /// Tells whoever sent a request this server could not take it: the client reconnects and retries.
    async fn drop_request(&self, origin: Origin, session: SessionId) {
        match origin {
            Origin::Local => {
                if let Some(conn) = self.shared.conns().get(&session) {
                    conn.send(Out::Close);
                }
            }
            Origin::Peer(peer) => self.handle.forward(ForwardTo::Peer(peer), Forward::Dropped(session).encode()).await,
        }
    }

    /// Deletes containers whose last child went (or that never had one, past `maxNeverUsedIntervalMs`) and TTL
    /// nodes without children unchanged for longer than their TTL. Once per `znode.container.checkIntervalMs`,
    /// it looks at the committed tree's containers and TTL nodes only (the tree indexes them), past those a
    /// pending proposal changed (a child on its way, say): their delete waits for the next check.
    async fn reap(&mut self) {
        let max_never_used = self.shared.config.container_max_never_used.as_millis() as i64;
        // Not leading, `ready` lets go of the pending changes.
        if !self.ready().await {
            return;
        }
        self.retire();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let doomed: Vec<String> = {
            let tree = self.shared.tree();
            tree.containers_and_ttls()
                .filter(|(path, _)| !self.pending.touches(path))
                .filter(|(_, node)| node.children.is_empty())
                .filter(|(_, node)| match OwnerKind::of(node.stat.ephemeral_owner) {
                    OwnerKind::Container if node.stat.cversion > 0 => true,
                    OwnerKind::Container => max_never_used > 0 && now - node.stat.ctime > max_never_used,
                    OwnerKind::Ttl(ttl) => now - node.stat.mtime > ttl,
                    _ => false,
                })
                .map(|(path, _)| path.clone())
                .collect()
        };
        let system: Arc<[Id]> = Arc::from([Id::new("super", "")]);
        for path in doomed {
            tracing::debug!(path, "deleting an empty container or an expired TTL node");
            self.propose(0, 0, system.clone(), &Request::Delete { path, version: -1 }, None).await;
        }
    }

    /// Closes sessions whose deadline passed.
    async fn expire(&mut self) {
        // Becoming ready also starts the session deadlines of a new leader; a deposed one, which may get no
        // other item that would, lets go of its pending changes here.
        if !self.ready().await {
            return;
        }
        // Taken out of the tracker at once: a touch that comes while a close waits (for the window, for applies)
        // finds its session closing, as ZooKeeper's finds it.
        let started = Instant::now();
        for session in self.shared.tracker.expire(started) {
            tracing::info!(session = format_args!("0x{session:x}"), "session expired");
            self.closing.push_back(session);
        }
        // A quarter tick of closes per round at most (each may wait for the window or for applies): the items
        // take turns with them, and the rest wait for the next round.
        while started.elapsed() < self.shared.config.tick / 4 {
            let Some(session) = self.closing.pop_front() else { break };
            // A close not proposed in its term is not this term's to make: a new term's tracker (`ready()`
            // rebuilds it, and drops the closes due) gave every session of the tree a fresh timeout.
            if !self.ready().await {
                break;
            }
            if self.shared.tracker.contains(session) {
                continue;
            }
            let term = Some(self.term);
            self.propose(session, 0, Arc::from([]), &Request::CloseSession, term).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replication::runtime::{Detached, Reply};
    use tree::code::op;
    use tree::tree::DataTree;

    const TICK: Duration = Duration::from_millis(100);

    /// A leader's pipeline on a detached replication handle (the test plays the replication runtime), with
    /// ZooKeeper's defaults but a 100 ms tick; its queue, its server's state and the handle's other ends.
    fn pipeline() -> (Queue, Arc<Shared>, Detached) {
        let shared = server();
        let (handle, detached) = Handle::detached((Role::Leading, true));
        let (items, queue) = Queue::new();
        tokio::spawn(run(shared.clone(), handle, queue));
        (items, shared, detached)
    }

    /// A leader's state, with ZooKeeper's defaults but a 100 ms tick, and an empty tree.
    fn server() -> Arc<Shared> {
        let text = format!("tickTime={}\ndataDir=/nonexistent\nclientPort=2181\n", TICK.as_millis());
        let config = Arc::new(crate::config::Config::parse(&text).expect("a valid config"));
        let sasl = crate::sasl::Sasl::load(&config.sasl).expect("no SASL");
        Shared::new(config, (1, false), (DataTree::new(), 0), sasl, crate::shared::Stats::default()).0
    }

    /// A request's budget share (of a budget of its own: these tests do not exercise the throttle).
    fn ticket() -> Arc<Ticket> {
        Arc::new(crate::throttle::Throttle::new(u64::MAX, u64::MAX).take(0))
    }

    fn create_session(session: SessionId, timeout_ms: i32) -> Item {
        let request = Request::CreateSession { timeout: timeout_ms };
        Item::Write { origin: Origin::Local, session, cxid: 0, auth: Arc::from([]), request }
    }

    /// The next proposal within `within`, decoded, with its reply.
    async fn proposal(detached: &mut Detached, within: Duration) -> Option<(TxnHeader, Reply)> {
        let (bytes, reply) = tokio::time::timeout(within, detached.proposals.recv()).await.ok()??;
        Some((TxnRecord::decode(&bytes).expect("a txn").header, reply))
    }

    /// A pipeline asked to create sessions 0x51 and 0x52 with `timeout`, and when it was asked.
    fn two_sessions(timeout: Duration) -> (Queue, Arc<Shared>, Detached, Instant) {
        let (items, shared, detached) = pipeline();
        for session in [0x51, 0x52] {
            items.local(create_session(session, timeout.as_millis() as i32), ticket()).unwrap();
        }
        (items, shared, detached, Instant::now())
    }

    /// Touches the session every tick, as its server's toucher would while its client is active.
    async fn touch_every_tick(shared: Arc<Shared>, session: SessionId) {
        loop {
            shared.tracker.touch(&[session], Instant::now());
            tokio::time::sleep(TICK).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expiry_close_decided_in_one_term_is_not_proposed_in_the_next() {
        let (handle, mut detached) = Handle::detached((Role::Leading, true));
        let (mut pipeline, resolving) = Pipeline::new(server(), handle);
        tokio::spawn(resolving);
        assert!(pipeline.ready().await, "leading");
        let decided = pipeline.term;
        // The role goes and comes back (an election this server won again) between the round that found 0x51
        // expired and its close: the new term's tracker gave every session a fresh timeout.
        detached.role.send((Role::Looking, false)).unwrap();
        detached.role.send((Role::Leading, true)).unwrap();
        let close = Request::CloseSession;
        let proposed = pipeline.propose(0x51, 0, Arc::from([]), &close, Some(decided)).await;
        assert!(!proposed, "a close decided in the term before");
        assert!(pipeline.term != decided, "a new term");
        assert!(proposal(&mut detached, 3 * TICK).await.is_none(), "nothing proposed");
        let now = Some(pipeline.term);
        assert!(pipeline.propose(0x51, 0, Arc::from([]), &close, now).await, "the same close decided in this term");
        let (header, _reply) = proposal(&mut detached, 3 * TICK).await.expect("proposed");
        assert_eq!((header.op, header.client_id), (op::CLOSE_SESSION, 0x51));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sync_holds_its_requests_budget_share_until_it_is_answered() {
        let (items, shared, mut detached) = pipeline();
        let (waiter, answer) = oneshot::channel();
        lock(&shared.syncs).insert((0x51, 7), waiter);
        let ticket = ticket();
        items.local(Item::Sync { origin: Origin::Local, session: 0x51, cxid: 7 }, ticket.clone()).unwrap();
        // The sync waits for the barrier that confirms this server still leads.
        let barrier = tokio::time::timeout(3 * TICK, detached.barriers.recv()).await.expect("a barrier").unwrap();
        assert_eq!(Arc::strong_count(&ticket), 2, "the waiting sync holds the ticket");
        barrier.send(true).unwrap();
        tokio::time::timeout(3 * TICK, answer).await.expect("answered").expect("a zxid");
        let released = Instant::now();
        while Arc::strong_count(&ticket) != 1 {
            assert!(released.elapsed() < 3 * TICK, "the answered sync still holds the ticket");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_slowed_by_its_disk_expires_a_silent_session_on_time_and_keeps_a_touched_one() {
        let timeout = Duration::from_millis(300);
        let (items, shared, mut detached, created) = two_sessions(timeout);
        let touching = tokio::spawn(touch_every_tick(shared, 0x52));
        // A steady load of writes (sessions that do not expire in this test) on a disk that commits one txn per
        // 40 ms once the window is full: every write the pipeline handles then waits that long for room.
        const WRITES: i64 = WINDOW as i64 + 100;
        for session in 0x1000..0x1000 + WRITES {
            items.local(create_session(session, 60_000), ticket()).unwrap();
        }
        let mut in_flight = VecDeque::new();
        let mut closed = Vec::new();
        let mut zxid = 0;
        while created.elapsed() < Duration::from_secs(3) {
            if in_flight.len() >= WINDOW {
                tokio::time::sleep(Duration::from_millis(40)).await;
                let reply: Reply = in_flight.pop_front().expect("a full window");
                zxid += 1;
                let _ = reply.send(Ok(wal::Zxid(zxid)));
            }
            let Some((header, reply)) = proposal(&mut detached, Duration::from_millis(200)).await else { continue };
            if header.op == op::CLOSE_SESSION {
                closed.push((header.client_id, created.elapsed()));
            }
            in_flight.push_back(reply);
        }
        touching.abort();
        assert!(zxid > 20, "the writes kept the window full for the whole run: {zxid} committed");
        let [(0x51, after)] = closed[..] else { panic!("0x51, and only 0x51, is closed: {closed:x?}") };
        // Its timeout, half a tick for the expiry round, and the waits for room of the write in hand and of the
        // close (40 ms each), with room for a busy machine.
        let late = timeout + 2 * TICK + Duration::from_millis(300);
        assert!(after >= timeout && after < late, "0x51 closed after {after:?}, not within {timeout:?} to {late:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mass_expiry_on_a_slow_disk_lets_a_clients_write_through_between_its_closes() {
        let (items, _shared, mut detached) = pipeline();
        // 200 sessions of 300 ms, committed at once and then silent.
        const DOOMED: i64 = 200;
        for session in 1..=DOOMED {
            items.local(create_session(session, 300), ticket()).unwrap();
            let (_, reply) = proposal(&mut detached, Duration::from_secs(5)).await.expect("a createSession");
            let _ = reply.send(Ok(wal::Zxid(session as u64)));
        }
        // A full window of long sessions, then a disk that commits one txn per 30 ms: each close waits that long.
        let mut in_flight: VecDeque<Reply> = VecDeque::new();
        for session in 0x1000..0x1000 + WINDOW as i64 {
            items.local(create_session(session, 60_000), ticket()).unwrap();
            in_flight.push_back(proposal(&mut detached, Duration::from_secs(5)).await.expect("a createSession").1);
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        // The sessions have expired; a client's write comes now.
        let write = Item::Write {
            origin: Origin::Local,
            session: 0x1000,
            cxid: 1,
            auth: Arc::from([]),
            request: Request::Delete { path: "/a".into(), version: -1 },
        };
        // (Its connection stays open: it holds the request's ticket too.)
        let open = ticket();
        items.local(write, open.clone()).unwrap();
        let (queued, mut closes, mut zxid) = (Instant::now(), 0, DOOMED as u64);
        let waited = loop {
            tokio::time::sleep(Duration::from_millis(30)).await;
            zxid += 1;
            let _ = in_flight.pop_front().expect("a full window").send(Ok(wal::Zxid(zxid)));
            let (header, reply) = proposal(&mut detached, Duration::from_secs(2)).await.expect("a close or the write");
            in_flight.push_back(reply);
            match (header.op, header.client_id) {
                (op::CLOSE_SESSION, _) => closes += 1,
                (_, 0x1000) => break queued.elapsed(),
                other => panic!("an unexpected proposal {other:?}"),
            }
            assert!(closes < DOOMED, "every close went before the write");
        };
        // Closes take a quarter tick per round (about one at 30 ms each), and the write its turn after one.
        assert!(closes < DOOMED / 4, "{closes} closes went before the write, which waited {waited:?}");
        drop(open);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_leader_expires_a_session_nobody_touches_and_not_one_that_is_touched() {
        let timeout = Duration::from_millis(300);
        let (_items, shared, mut detached, created) = two_sessions(timeout);
        for (i, session) in [0x51, 0x52].into_iter().enumerate() {
            let (header, reply) = proposal(&mut detached, Duration::from_secs(5)).await.expect("the createSession");
            assert_eq!((header.op, header.client_id), (op::CREATE_SESSION, session));
            let _ = reply.send(Ok(wal::Zxid(i as u64 + 1)));
        }
        // 0x52 is touched every tick; 0x51 is not, and the pipeline has nothing else to do.
        let touching = tokio::spawn(touch_every_tick(shared, 0x52));
        let (header, _reply) = proposal(&mut detached, Duration::from_secs(3)).await.expect("0x51 expires");
        assert_eq!((header.op, header.client_id), (op::CLOSE_SESSION, 0x51));
        let waited = created.elapsed();
        assert!(waited >= timeout, "expired after {waited:?}, before its {timeout:?} timeout");
        // Still touched after ten timeouts' worth: no close.
        assert!(proposal(&mut detached, 10 * timeout).await.is_none(), "a touched session expired");
        touching.abort();
        let (header, _reply) = proposal(&mut detached, Duration::from_secs(3)).await.expect("0x52 expires once left");
        assert_eq!((header.op, header.client_id), (op::CLOSE_SESSION, 0x52));
    }

    /// Has the pipeline propose a window's worth of createSessions (sessions 1 to WINDOW), and returns their
    /// replies, unanswered.
    async fn fill_the_window(items: &Queue, detached: &mut Detached) -> Vec<Reply> {
        let mut replies = Vec::new();
        for session in 1..=WINDOW as i64 {
            items.local(create_session(session, 4000), ticket()).unwrap();
            replies.push(proposal(detached, Duration::from_secs(5)).await.expect("a proposal").1);
        }
        replies
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_prepared_before_the_role_changed_is_not_proposed() {
        let (items, _shared, mut detached) = pipeline();
        // A full window: the next write is prepared, then waits for room.
        let replies = fill_the_window(&items, &mut detached).await;
        items.local(create_session(WINDOW as i64 + 1, 4000), ticket()).unwrap();
        assert!(proposal(&mut detached, Duration::from_millis(300)).await.is_none(), "proposed past the window");
        // The leader loses its quorum meanwhile (it looks for a leader again), and the window's proposals commit.
        detached.role.send((Role::Looking, false)).unwrap();
        for (zxid, reply) in replies.into_iter().enumerate() {
            let _ = reply.send(Ok(wal::Zxid(zxid as u64 + 1)));
        }
        assert!(
            proposal(&mut detached, Duration::from_secs(1)).await.is_none(),
            "a write prepared under the old role was proposed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_connections_queued_writes_count_in_the_budget_until_dropped_unproposed() {
        let (items, shared, mut detached) = pipeline();
        // A full window: the pipeline waits with the next write in hand.
        let replies = fill_the_window(&items, &mut detached).await;
        // A client's write waits for room, its connection open; another client queues ten writes behind it, and
        // its connection closes, giving back its part of their tickets.
        let throttle = shared.throttle.clone();
        let delete = |session| Item::Write {
            origin: Origin::Local,
            session,
            cxid: 1,
            auth: Arc::from([]),
            request: Request::Delete { path: "/a".into(), version: -1 },
        };
        let open = Arc::new(throttle.take(100));
        items.local(delete(0x6000), open.clone()).unwrap();
        tokio::time::sleep(TICK).await;
        for session in 0..10 {
            let ticket = Arc::new(throttle.take(100));
            items.local(delete(0x5000 + session), ticket.clone()).unwrap();
            drop(ticket);
        }
        tokio::time::sleep(TICK).await;
        assert_eq!(throttle.in_flight(), (11, 1100), "queued writes count until the pipeline is done with them");
        for (zxid, reply) in replies.into_iter().enumerate() {
            let _ = reply.send(Ok(wal::Zxid(zxid as u64 + 1)));
        }
        // The open connection's write is proposed; the closed one's are dropped unproposed.
        let mut proposed = Vec::new();
        while let Some((header, reply)) = proposal(&mut detached, Duration::from_millis(500)).await {
            proposed.push((header.op, header.client_id));
            let _ = reply.send(Ok(wal::Zxid(WINDOW as u64 + proposed.len() as u64)));
        }
        // (A delete of a node that is not there: an error txn, as ZooKeeper proposes it.)
        assert_eq!(proposed, [(op::ERROR, 0x6000)], "only the open connection's write was proposed");
        assert_eq!(throttle.in_flight(), (1, 100), "the dropped writes gave their budget back");
        drop(open);
        assert_eq!(throttle.in_flight(), (0, 0));
    }

    #[test]
    fn a_proposal_retires_once_the_tree_has_applied_its_zxid_not_when_it_commits() {
        let mut committed: VecDeque<(u64, i64)> = [(1, 10), (2, 11), (3, 13)].into();
        assert_eq!(applied_through(&mut committed, 9), None, "nothing applied yet");
        assert_eq!(applied_through(&mut committed, 11), Some(2));
        assert_eq!(committed, VecDeque::from([(3, 13)]), "the proposal not applied stays");
        assert_eq!(applied_through(&mut committed, 12), None);
        assert_eq!(applied_through(&mut committed, 13), Some(3));
        assert!(committed.is_empty());
    }
}
