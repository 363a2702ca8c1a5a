//! The runtime that drives a [`Peer`] with real IO: the WAL, the epoch file, the TCP transport and a clock.
//!
//! One tokio task owns the peer and does what its actions say: appends go to the WAL (their durability comes
//! back as [`Event::Persisted`], one event for everything that became durable together), epochs are written to
//! a small file by a thread of their own before the peer hears they are durable, txn streams for
//! syncing followers are read from the WAL (or from memory for txns not durable yet), and applied zxids are
//! published. The caller proposes txns through the [`Handle`] and learns when each is committed.
//!
//! The node above reads two streams ([`Streams`]): every committed txn, in zxid order, with its bytes (and a
//! [`Committed::Rebuild`] when a sync cut txns it had already been given at start-up, or installed a snapshot
//! from the leader, so it must rebuild its tree from disk), and the [`Message::Forward`] payloads other servers sent (client requests a follower forwards to its
//! leader, and the leader's answers). Both are bounded. The committed stream pushes back on this loop; forwarded
//! payloads that find their queue full drop the sending peer's connection (it re-syncs) rather than block the
//! loop, because the node's request pipeline itself waits on this loop.
//!
//! Errors say whose fault they are ([`crate::fault`]): this server's (its disk) stop the runtime, and the
//! node with it; another server's drop the link to it and restart the peer from what is on disk (the peer may
//! have moved on as if the failed action had been done), so this server re-elects and re-syncs. Disk work
//! that may block (epoch fsyncs, the chunks of a snapshot from the leader, staging and installing it) runs
//! off the runtime's worker threads.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use wal::{Wal, WalError, Zxid};

use crate::barrier::BarrierId;
use crate::broadcast::ProposeError;
use crate::epochs::{read_epochs, EpochUpdate, EpochWriter};
use crate::fault::{Fault, LocalFault, PeerFault};
use crate::message::{Message, ServerId};
use crate::monitor::{Monitor, SyncKind};
use crate::peer::{Action, DurableState, Event, Learners, Peer, PeerConfig, Role};
use crate::streams::{SnapshotPoint, SnapshotStream, TxnStream};
use crate::sync::History;
use crate::transport::{
    budget_permits, Inbound, InboundReceiver, SendQueues, TcpTransport, Transport, TransportConfig,
};
use crate::LATENCY;
use snapshot::transfer::Incoming;

/// Why a proposal did not commit.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The peer could not propose it.
    #[error(transparent)]
    Rejected(#[from] ProposeError),
    /// Leadership changed before it committed; it may or may not be committed later.
    #[error("leadership changed before the txn committed")]
    Abandoned,
}

/// What the node applies, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Committed {
    /// The txn at `zxid` is committed: apply it.
    Txn {
        /// Its zxid.
        zxid: Zxid,
        /// Its bytes, as proposed.
        txn: Bytes,
    },
    /// Rebuild the tree from the snapshots and the log up to this zxid: the log was cut after it, and txns
    /// after it that were applied at start-up (the whole durable log is replayed then) were never committed;
    /// or a snapshot of the history up to it was installed from the leader, and the log restarted after it.
    Rebuild(Zxid),
}

/// The streams a node consumes.
pub struct Streams {
    /// Committed txns, in zxid order.
    pub committed: mpsc::Receiver<Committed>,
    /// `Forward` payloads from other servers.
    pub forwarded: mpsc::Receiver<Forwarded>,
}

/// A `Forward` payload from another server.
#[derive(Debug)]
pub struct Forwarded {
    /// The server that sent it.
    pub from: ServerId,
    /// What it sent.
    pub data: Bytes,
    /// Its share of the sender's forwarded-bytes budget ([`crate::transport::TransportConfig::forwarded_bytes`]):
    /// the node keeps it with whatever it made of the payload until it is done with that, and drops it then.
    pub share: ForwardShare,
}

/// A forwarded payload's share of its sender's budget, given back when dropped.
#[derive(Debug)]
pub struct ForwardShare(#[allow(dead_code)] OwnedSemaphorePermit);

/// Where a forwarded payload goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardTo {
    /// The current leader (dropped when there is none, or this server leads).
    Leader,
    /// One server.
    Peer(ServerId),
}

type Reply = oneshot::Sender<Result<Zxid, CommitError>>;

/// Bound of each stream to the node.
const STREAM_BOUND: usize = 4096;

/// What a leader knows of its learners, for monitoring (`mntr`): published after every step of the peer; the
/// default (nothing) on a server that does not lead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LearnerView {
    /// The learners connected, and which of them are synced.
    pub learners: Learners,
    /// When this server began to lead and serve (ZooKeeper's `Leader.getUptime` counts from there); `None`
    /// unless it does.
    pub leading_since: Option<Instant>,
}

/// A running server's handle.
#[derive(Clone)]
pub struct Handle {
    proposals: mpsc::Sender<(Bytes, Reply)>,
    barriers: mpsc::Sender<oneshot::Sender<bool>>,
    forwards: mpsc::Sender<(ForwardTo, Bytes)>,
    misbehaved: mpsc::Sender<(ServerId, &'static str)>,
    /// The last zxid applied.
    pub applied: watch::Receiver<Zxid>,
    /// The peer's role and whether it serves.
    pub role: watch::Receiver<(Role, bool)>,
    /// The leader's view of its learners.
    pub learners: watch::Receiver<LearnerView>,
    /// The bytes queued for each peer.
    pub send_queues: SendQueues,
    shutdown: Arc<watch::Sender<bool>>,
}

impl Handle {
    /// Stops the server (its connections close; its WAL stays as it is on disk).
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Proposes a txn (on the leader) and waits until it is committed.
    pub async fn propose(&self, txn: Bytes) -> Result<Zxid, CommitError> {
        self.submit(txn).await?.await.map_err(|_| CommitError::Abandoned)?
    }

    /// Queues a txn for proposal and returns at once with what will tell its fate: txns queued one after
    /// another are proposed in that order.
    pub async fn submit(&self, txn: Bytes) -> Result<oneshot::Receiver<Result<Zxid, CommitError>>, CommitError> {
        let (tx, rx) = oneshot::channel();
        self.proposals.send((txn, tx)).await.map_err(|_| CommitError::Abandoned)?;
        Ok(rx)
    }

    /// Whether this server still leads: true once a quorum of voters (this one included) answered a heartbeat
    /// sent after the call, false when it does not lead and serve or stops before (see [`crate::barrier`]). A
    /// leader answers a `sync` only after this, so that the sync's reads see every write completed before it.
    pub async fn confirm_leadership(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        self.barriers.send(tx).await.is_ok() && rx.await.unwrap_or(false)
    }

    /// Drops the link to `peer`, which sent what the node above cannot use (a forwarded payload that does not
    /// decode, say): its fault, logged with `why`; it reconnects and re-syncs. Best effort: a report that finds
    /// the queue full is dropped (others like it are queued).
    pub fn drop_peer(&self, peer: ServerId, why: &'static str) {
        let _ = self.misbehaved.try_send((peer, why));
    }

    /// Sends `data` to another server as a [`Message::Forward`]; best effort (dropped with no connection).
    pub async fn forward(&self, to: ForwardTo, data: Bytes) {
        let _ = self.forwards.send((to, data)).await;
    }
}

/// Where and how a server runs.
pub struct ServerConfig {
    /// The protocol settings.
    pub peer: PeerConfig,
    /// The peer port, already bound.
    pub listener: TcpListener,
    /// Every voter's peer address.
    pub peers: BTreeMap<ServerId, SocketAddr>,
    /// The data directory: `log/` for the WAL, `epochs` for the two epochs.
    pub dir: PathBuf,
    /// WAL options.
    pub wal: wal::WalOptions,
    /// The snapshot directory, for SNAP sync both ways (`None`: a follower that needs a snapshot is dropped,
    /// and a snapshot from the leader is an error).
    pub snapshots: Option<PathBuf>,
    /// The peer connections' settings (the frame bound must hold the largest txn the node proposes).
    pub transport: TransportConfig,
    /// Told of elections and syncs, for the metrics (`Arc::new(())` ignores them).
    pub monitor: Arc<dyn Monitor>,
}

/// The log as the peer sees it: every zxid in the WAL, plus txns not durable yet, after the snapshot the WAL
/// was restarted from, if it was.
///
/// The node purges old WAL segments behind the runtime's back (snapshot retention), so the start of the log
/// and whether it is complete are read from the WAL itself, and `zxids` is trimmed to match as it goes.
struct Log {
    wal: Arc<Wal>,
    zxids: VecDeque<Zxid>,
    pending: BTreeMap<Zxid, Bytes>,
}

impl Log {
    /// The first zxid still held: the WAL's, or the first pending one when the WAL is empty.
    fn start(&self) -> Option<Zxid> {
        self.wal.first_zxid().or_else(|| self.zxids.front().copied())
    }

    /// Forgets zxids whose segments were purged.
    fn trim(&mut self) {
        if let Some(first) = self.wal.first_zxid() {
            while self.zxids.front().is_some_and(|&z| z < first) {
                self.zxids.pop_front();
            }
        }
    }
}

impl History for Log {
    fn last(&self) -> Option<Zxid> {
        self.zxids.back().copied().or_else(|| self.wal.base())
    }
    fn contains(&self, zxid: Zxid) -> bool {
        let logged = self.start().is_some_and(|first| zxid >= first) && self.zxids.binary_search(&zxid).is_ok();
        logged || self.wal.base() == Some(zxid)
    }
    fn last_below(&self, zxid: Zxid) -> Option<Zxid> {
        let i = self.zxids.partition_point(|&z| z < zxid);
        let logged = i.checked_sub(1).map(|i| self.zxids[i]).filter(|&z| self.start().is_some_and(|first| z >= first));
        // Every logged txn is above the base.
        logged.or_else(|| self.wal.base().filter(|&base| base < zxid))
    }
    fn complete(&self) -> bool {
        self.wal.holds_full_history()
    }
}

type Durability = Pin<Box<dyn Future<Output = Result<Zxid, WalError>> + Send>>;

/// Starts a server with its WAL at `dir/log`; returns its handle and streams. The server runs until the
/// runtime shuts down or a fatal error.
pub fn start(config: ServerConfig) -> Result<(Handle, Streams), WalError> {
    wal::create_dir_durably(&config.dir)?;
    let (wal, _) = Wal::open(config.dir.join("log"), config.wal.clone())?;
    start_with_wal(config, Arc::new(wal))
}

/// Starts a server on a WAL the caller opened (and replayed into its tree: the committed stream starts after
/// the WAL's last zxid).
pub fn start_with_wal(config: ServerConfig, wal: Arc<Wal>) -> Result<(Handle, Streams), WalError> {
    // A process that crashed may have renamed or removed the epochs file or the repair mark without the
    // directory fsync that makes it durable: the page cache shows it, the disk may not. Make what this start
    // reads durable before acting on it, so that a later power cut cannot take back a promise made from it.
    wal::sync_dir(&config.dir)?;
    let (accepted, current) =
        read_epochs(&config.dir).map_err(|e| WalError::Io { op: "read epochs", path: e.path, source: e.source })?;
    let zxids: VecDeque<Zxid> = wal.iter_from(Zxid::ZERO).map(|r| r.map(|r| r.zxid)).collect::<Result<_, _>>()?;
    let repairing = crate::repairing::read(&config.dir).map_err(|e| WalError::Io {
        op: "read the repair mark",
        path: config.dir.join("repairing"),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    })?;
    let durable = DurableState {
        accepted_epoch: accepted,
        current_epoch: current,
        last_zxid: zxids.back().copied().or(wal.base()).unwrap_or(Zxid::ZERO),
        repairing,
    };
    if let Some(vouched) = repairing {
        tracing::warn!(server = config.peer.me.0, %vouched, last_zxid = %durable.last_zxid, "repairing: this server's log lost a damaged part; it takes it from the leader, and elects as no candidate until then");
    }
    let log = Log { wal: wal.clone(), zxids, pending: BTreeMap::new() };
    let epochs = EpochWriter::start(Arc::new(wal::fs::StdFs), config.dir.clone(), (accepted, current))
        .map_err(|e| WalError::Io { op: "start the epochs writer", path: config.dir.clone(), source: e })?;
    let forward_budget = budget_permits(config.transport.forwarded_bytes);
    let forward_budgets = config
        .peers
        .keys()
        .map(|&peer| (peer, (Arc::new(Semaphore::new(forward_budget as usize)), forward_budget)))
        .collect();
    let (transport, inbound) = TcpTransport::start(config.peer.me, config.listener, config.peers, config.transport);
    let send_queues = transport.send_queues();
    let (proposals_tx, proposals) = mpsc::channel(1024);
    let (barriers_tx, barriers) = mpsc::channel(1024);
    let (forwards_tx, forwards) = mpsc::channel(STREAM_BOUND);
    let (misbehaved_tx, misbehaved) = mpsc::channel(64);
    let (committed_tx, committed) = mpsc::channel(STREAM_BOUND);
    let (forwarded_tx, forwarded) = mpsc::channel(STREAM_BOUND);
    let (applied_tx, applied) = watch::channel(durable.last_zxid);
    let (role_tx, role) = watch::channel((Role::Looking, false));
    let (learners_tx, learners) = watch::channel(LearnerView::default());
    let server = Server {
        me: config.peer.me,
        wal,
        delivered: durable.last_zxid,
        undelivered: BTreeMap::new(),
        committed_tx,
        forwarded_tx,
        forward_budgets,
        snapshots: config.snapshots,
        incoming: None,
        transport,
        log,
        durability: VecDeque::new(),
        staged: Vec::new(),
        epochs,
        generation: 0,
        waiters: BTreeMap::new(),
        pending_proposal: VecDeque::new(),
        barriers: BTreeMap::new(),
        next_barrier: 0,
        events: VecDeque::new(),
        applied_tx,
        role_tx,
        learners_tx,
        started: Instant::now(),
        looking_since: Instant::now(),
        monitor: config.monitor,
        dir: config.dir.clone(),
    };
    let (shutdown, stop) = watch::channel(false);
    tokio::spawn(server.run(config.peer, durable, Inputs { inbound, proposals, barriers, forwards, misbehaved, stop }));
    let handle = Handle {
        proposals: proposals_tx,
        barriers: barriers_tx,
        forwards: forwards_tx,
        misbehaved: misbehaved_tx,
        applied,
        role,
        learners,
        send_queues,
        shutdown: Arc::new(shutdown),
    };
    Ok((handle, Streams { committed, forwarded }))
}

/// What the server loop listens to besides its own appends and ticks.
struct Inputs {
    inbound: InboundReceiver,
    proposals: mpsc::Receiver<(Bytes, Reply)>,
    barriers: mpsc::Receiver<oneshot::Sender<bool>>,
    forwards: mpsc::Receiver<(ForwardTo, Bytes)>,
    misbehaved: mpsc::Receiver<(ServerId, &'static str)>,
    stop: watch::Receiver<bool>,
}

/// A snapshot being received from the leader, and where its next chunk must start.
struct Receiving {
    file: Incoming,
    next: u64,
}

struct Server {
    me: ServerId,
    wal: Arc<Wal>,
    /// The last zxid handed to the node on the committed stream.
    delivered: Zxid,
    /// Txns appended and not yet handed to the node, so that delivering them never reads the WAL (whose
    /// iterator scans a segment from its start).
    undelivered: BTreeMap<Zxid, Bytes>,
    committed_tx: mpsc::Sender<Committed>,
    forwarded_tx: mpsc::Sender<Forwarded>,
    /// Each peer's budget of forwarded bytes the node has not finished with.
    forward_budgets: BTreeMap<ServerId, (Arc<Semaphore>, u32)>,
    snapshots: Option<PathBuf>,
    /// A snapshot being received from the leader.
    incoming: Option<Receiving>,
    transport: TcpTransport,
    log: Log,
    /// Appends in flight, oldest first.
    durability: VecDeque<Durability>,
    /// Appends the peer asked for and the WAL has not been handed yet: they go to it as one batch (one queue
    /// entry, one completion, usually one fsync) once the events at hand are handled, or before anything that
    /// must queue behind them (a truncation, a restart of the log, a restart of the peer). Already counted
    /// in `log`, `undelivered` and `log.pending`, like an append in flight.
    staged: Vec<(Zxid, Bytes)>,
    /// Epoch writes in flight.
    epochs: EpochWriter,
    /// How many times the peer was started over: epoch writes asked for by an earlier one are not reported
    /// to a later one.
    generation: u64,
    /// Proposals waiting to commit.
    waiters: BTreeMap<Zxid, Reply>,
    /// Proposals handed to the peer, waiting for it to say which zxid each got.
    pending_proposal: VecDeque<Reply>,
    /// Who waits on each barrier handed to the peer: requests that arrive together share one barrier.
    barriers: BTreeMap<BarrierId, Vec<oneshot::Sender<bool>>>,
    next_barrier: u64,
    /// Events for the peer, in order.
    events: VecDeque<Event>,
    applied_tx: watch::Sender<Zxid>,
    role_tx: watch::Sender<(Role, bool)>,
    learners_tx: watch::Sender<LearnerView>,
    started: Instant,
    /// When this server last began looking for a leader: the election and sync times an operator reads in
    /// the log are measured from it.
    looking_since: Instant,
    monitor: Arc<dyn Monitor>,
    /// The data directory (the repair mark's).
    dir: PathBuf,
}

impl Server {
    async fn run(mut self, config: PeerConfig, durable: DurableState, inputs: Inputs) {
        let Inputs { mut inbound, mut proposals, mut barriers, mut forwards, mut misbehaved, mut stop } = inputs;
        let tick = config.tick / 5;
        let (mut peer, actions) = Peer::new(config.clone(), durable, self.started.elapsed());
        // A peer starts out looking (the role watch starts there too, so no change reports it).
        self.monitor.looking();
        if let Err(fault) = self.carry_out(&mut peer, &config, actions).await {
            return self.stop(fault);
        }
        let mut ticker = tokio::time::interval(tick);
        loop {
            while let Some(event) = self.events.pop_front() {
                let actions = peer.handle(event, &self.log);
                if let Err(fault) = self.carry_out(&mut peer, &config, actions).await {
                    return self.stop(fault);
                }
            }
            if let Err(fault) = self.flush_appends().await {
                return self.stop(fault);
            }
            let event = tokio::select! {
                Some(first) = inbound.recv() => {
                    // Take what else has arrived too, so that its appends go to the WAL as one batch; counted
                    // in messages, not events, so that a stream of forwarded requests (no event) cannot keep
                    // the loop from its other inputs.
                    let (mut next, mut taken) = (Some(first), 1);
                    while let Some(inbound_message) = next.take() {
                        if let Some(event) = self.inbound_event(inbound_message) {
                            self.events.push_back(event);
                        }
                        if taken < MAX_EVENTS_AT_ONCE {
                            next = inbound.try_recv().ok();
                            taken += 1;
                        }
                    }
                    continue;
                }
                _ = ticker.tick() => {
                    self.log.trim();
                    Event::Tick(self.started.elapsed())
                }
                Some((culprit, why)) = misbehaved.recv() => {
                    tracing::warn!(server = self.me.0, peer = culprit.0, why, "dropping the link to the peer");
                    self.transport.disconnect(culprit);
                    continue;
                }
                Some((to, data)) = forwards.recv() => {
                    let to = match (to, peer.role()) {
                        (ForwardTo::Peer(id), _) => id,
                        (ForwardTo::Leader, Role::Following(leader)) => leader,
                        (ForwardTo::Leader, _) => continue,
                    };
                    tracing::trace!(target: LATENCY, server = self.me.0, "forwarding");
                    let _ = self.transport.send(to, Message::Forward { data });
                    continue;
                }
                Some(result) = next_durable(&mut self.durability) => match result {
                    Ok(zxid) => {
                        tracing::trace!(target: LATENCY, server = self.me.0, zxid = zxid.0, "durable");
                        self.log.pending.retain(|&z, _| z > zxid);
                        Event::Persisted(zxid)
                    }
                    Err(source) => {
                        let zxid = self.log.zxids.back().copied().unwrap_or(Zxid::ZERO);
                        return self.stop(LocalFault::Wal { op: "make durable up to", zxid, source });
                    }
                },
                done = self.epochs.next() => match done {
                    Ok((generation, update)) if generation == self.generation => update.event(),
                    // Asked for by the peer before it started over: the new one did not ask.
                    Ok(_) => continue,
                    Err(fault) => return self.stop(fault),
                },
                _ = stop.changed() => return,
                Some(first) = proposals.recv() => {
                    // Take the proposals waiting behind it too: their appends go to the WAL as one batch.
                    let mut next = Some(first);
                    while let Some((txn, reply)) = next.take() {
                        self.pending_proposal.push_back(reply);
                        self.events.push_back(Event::Propose(txn));
                        if self.events.len() < MAX_EVENTS_AT_ONCE {
                            next = proposals.try_recv().ok();
                        }
                    }
                    continue;
                }
                Some(first) = barriers.recv() => {
                    let mut waiting = vec![first];
                    while waiting.len() < MAX_EVENTS_AT_ONCE {
                        let Ok(next) = barriers.try_recv() else { break };
                        waiting.push(next);
                    }
                    self.next_barrier += 1;
                    let id = BarrierId(self.next_barrier);
                    self.barriers.insert(id, waiting);
                    Event::Barrier(id)
                }
                else => return,
            };
            self.events.push_back(event);
        }
    }

    /// The event an inbound message makes for the peer; `None` for a forwarded request, handed to the node.
    fn inbound_event(&self, inbound: Inbound) -> Option<Event> {
        Some(match inbound {
            Inbound::Message(from, Message::Forward { data }) => {
                if let Err(why) = self.hand_over(from, data) {
                    tracing::warn!(server = self.me.0, peer = from.0, why, "dropping the peer");
                    self.transport.disconnect(from);
                }
                return None;
            }
            Inbound::Message(from, m) => {
                let seen = match &m {
                    Message::Proposal { zxid, .. } => Some(("proposal", zxid)),
                    Message::Ack { zxid } => Some(("ack", zxid)),
                    Message::Commit { zxid } => Some(("commit", zxid)),
                    _ => None,
                };
                if let Some((kind, zxid)) = seen {
                    tracing::trace!(target: LATENCY, server = self.me.0, peer = from.0, zxid = zxid.0, kind, "received");
                }
                Event::Message(from, m)
            }
            Inbound::Disconnected(peer) => Event::Disconnected(peer),
            Inbound::Connected(peer) => Event::Connected(peer),
        })
    }

    /// Hands a forwarded payload to the node, with its share of the sender's budget; refuses (never waits: the
    /// node's pipeline may itself wait on this loop) when the queue or the sender's budget is full.
    fn hand_over(&self, from: ServerId, data: Bytes) -> Result<(), &'static str> {
        let (budget, size) = self.forward_budgets.get(&from).ok_or("a forward from an unknown peer")?;
        // A payload larger than the whole budget still passes when none of the peer's is held.
        let weight = budget_permits(data.len()).min(*size);
        let share = budget
            .clone()
            .try_acquire_many_owned(weight)
            .map_err(|_| "the peer's forwarded requests are over its budget of bytes")?;
        let forwarded = Forwarded { from, data, share: ForwardShare(share) };
        match self.forwarded_tx.try_send(forwarded) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err("forwarded requests queue full"),
        }
    }

    /// A fault of this server's: never go on as if the failed write had worked (dropping the server closes
    /// its connections, and the node stops with it).
    fn stop(&self, fault: LocalFault) {
        tracing::error!(server = self.me.0, %fault, "fatal: stopping this server");
    }

    /// Carries out the peer's actions. A peer's fault drops the link to it and starts the peer over from what
    /// is on disk (it may have moved on as if the failed action had been done); only a fault of this server's
    /// is returned.
    async fn carry_out(
        &mut self,
        peer: &mut Peer,
        config: &PeerConfig,
        actions: Vec<Action>,
    ) -> Result<(), LocalFault> {
        let mut actions = actions;
        loop {
            match self.act(peer, actions).await {
                Ok(()) => return Ok(()),
                Err(Fault::Local(fault)) => return Err(fault),
                Err(Fault::Peer { peer: culprit, fault }) => {
                    tracing::warn!(
                        server = self.me.0,
                        peer = culprit.0,
                        %fault,
                        "dropping the link to the peer; starting the protocol over from this server's disk"
                    );
                    self.transport.disconnect(culprit);
                    actions = self.restart_peer(peer, config).await?;
                }
            }
        }
    }

    /// Starts the peer over from the disk, once every write asked of it is done.
    async fn restart_peer(&mut self, peer: &mut Peer, config: &PeerConfig) -> Result<Vec<Action>, LocalFault> {
        self.flush_appends().await?;
        self.incoming = None;
        self.events.clear();
        // The new peer never heard of these proposals.
        for reply in self.pending_proposal.drain(..) {
            let _ = reply.send(Err(CommitError::Abandoned));
        }
        for waiter in std::mem::take(&mut self.barriers).into_values().flatten() {
            let _ = waiter.send(false);
        }
        while let Some(result) = next_durable(&mut self.durability).await {
            let zxid = self.log.zxids.back().copied().unwrap_or(Zxid::ZERO);
            let durable = result.map_err(|source| LocalFault::Wal { op: "make durable up to", zxid, source })?;
            self.log.pending.retain(|&z, _| z > durable);
        }
        let (accepted_epoch, current_epoch) = self.epochs.drain().await?;
        self.generation += 1;
        let last_zxid = self.log.last().unwrap_or(Zxid::ZERO);
        let durable = DurableState { accepted_epoch, current_epoch, last_zxid, repairing: peer.durable().repairing };
        let applied = self.delivered.min(last_zxid);
        let (mut fresh, actions) = Peer::restart(config.clone(), durable, applied, self.started.elapsed());
        fresh.continue_rounds_after(peer.last_round());
        *peer = fresh;
        Ok(actions)
    }

    async fn act(&mut self, peer: &mut Peer, actions: Vec<Action>) -> Result<(), Fault> {
        // What a follower logs or stores came from its leader; a leader's own proposals are its own.
        let leader = match peer.role() {
            Role::Following(leader) => Some(leader),
            _ => None,
        };
        for action in actions {
            match action {
                Action::Send(to, m) => {
                    if matches!(m, Message::Trunc { .. }) {
                        self.monitor.syncing(SyncKind::Trunc);
                    }
                    let _ = self.transport.send(to, m);
                }
                Action::Append(zxid, txn) => self.append(zxid, txn, leader).await?,
                Action::Truncate(zxid) => self.truncate(zxid, leader).await?,
                Action::Apply(zxid) => {
                    self.deliver(zxid).await?;
                    self.applied_tx.send_replace(zxid);
                    let done: Vec<Zxid> = self.waiters.range(..=zxid).map(|(&z, _)| z).collect();
                    for z in done {
                        if let Some(waiter) = self.waiters.remove(&z) {
                            let _ = waiter.send(Ok(z));
                        }
                    }
                }
                Action::PersistAcceptedEpoch(epoch) => {
                    self.epochs.request(self.generation, EpochUpdate::Accepted(epoch)).await?
                }
                Action::PersistCurrentEpoch(epoch) => {
                    self.epochs.request(self.generation, EpochUpdate::Current(epoch)).await?
                }
                Action::StreamTxns { to, after, until, commit_up_to } => {
                    self.monitor.syncing(SyncKind::Diff);
                    tracing::info!(follower = to.0, %after, %until, "syncing a follower with the txns after the last one it shares with this log (DIFF, after a TRUNC if it had more)");
                    let txns = TxnStream::new(&self.wal, self.pending_until(until), after, until, commit_up_to);
                    let _ = self.transport.send_stream(to, Box::new(txns));
                }
                Action::StreamSnapshot { to, until, commit_up_to } => {
                    self.monitor.syncing(SyncKind::Snap);
                    self.stream_snapshot(to, until, commit_up_to, peer.serving())
                }
                Action::SnapshotChunk { offset, data } => {
                    self.receive_chunk(offset, data, leader.ok_or(LocalFault::NotFollowing)?).await?
                }
                Action::InstallSnapshot(zxid) => {
                    self.install_snapshot(zxid, leader.ok_or(LocalFault::NotFollowing)?).await?
                }
                Action::Proposed(zxid) => {
                    if let Some(reply) = self.pending_proposal.pop_front() {
                        self.waiters.insert(zxid, reply);
                    }
                }
                Action::Rejected(error) => {
                    if let Some(reply) = self.pending_proposal.pop_front() {
                        let _ = reply.send(Err(CommitError::Rejected(error)));
                    }
                }
                Action::RoleChanged(role) => {
                    if role != Role::Leading {
                        // Proposals in flight may or may not commit under the next leader: say so.
                        for (_, waiter) in std::mem::take(&mut self.waiters) {
                            let _ = waiter.send(Err(CommitError::Abandoned));
                        }
                    }
                }
                Action::Disconnect(peer_id) => self.transport.disconnect(peer_id),
                Action::Barrier { id, passed } => {
                    for waiter in self.barriers.remove(&id).into_iter().flatten() {
                        let _ = waiter.send(passed);
                    }
                }
                Action::Repaired => {
                    let dir = self.dir.clone();
                    tokio::task::spawn_blocking(move || crate::repairing::clear(&dir))
                        .await
                        .map_err(|e| Fault::task("clear the repair mark", e))?
                        .map_err(LocalFault::Repairing)?;
                }
            }
        }
        // Only a real change wakes the watchers (some rebuild state on every change).
        let now = (peer.role(), peer.serving());
        let before = *self.role_tx.borrow();
        if self.role_tx.send_if_modified(|role| std::mem::replace(role, now) != now) {
            self.log_role_change(before, now, peer);
        }
        self.publish_learners(peer, now == (Role::Leading, true));
        Ok(())
    }

    /// Says, once each, what an operator follows an election by: the leader elected (with the epoch and the
    /// time it took), then serving (with the zxid reached and the time since looking began).
    fn log_role_change(&mut self, before: (Role, bool), now: (Role, bool), peer: &Peer) {
        let role = match now.0 {
            Role::Looking => {
                self.looking_since = Instant::now();
                self.monitor.looking();
                return;
            }
            Role::Leading => "leading".to_owned(),
            Role::Following(leader) => format!("following server {}", leader.0),
        };
        let durable = peer.durable();
        let since_looking = self.looking_since.elapsed();
        let ms = since_looking.as_millis() as u64;
        if before.0 != now.0 {
            self.monitor.elected(since_looking);
            tracing::info!(role = %role, last_zxid = %durable.last_zxid, election_ms = ms, "leader elected");
        }
        if now.1 && !before.1 {
            let applied = *self.applied_tx.borrow();
            tracing::info!(role = %role, epoch = %durable.current_epoch, zxid = %applied, ms_since_looking = ms, "synced: serving");
        }
    }

    /// Publishes the leader's view of its learners if it changed.
    fn publish_learners(&self, peer: &Peer, leading: bool) {
        self.learners_tx.send_if_modified(|view| {
            let leading_since = match (leading, view.leading_since) {
                (true, Some(since)) => Some(since),
                (true, None) => Some(Instant::now()),
                (false, _) => None,
            };
            let now = LearnerView { learners: peer.learners(), leading_since };
            std::mem::replace(view, now) != now
        });
    }

    /// Stages a txn for the WAL (`leader`: the server it came from, if not this one's own proposal). A txn too
    /// large to log is refused here, so that it is blamed on the leader that sent it.
    async fn append(&mut self, zxid: Zxid, txn: Bytes, leader: Option<ServerId>) -> Result<(), Fault> {
        let max = self.wal.max_payload();
        if txn.len() > max {
            return Err(Fault::wal("append", zxid, WalError::PayloadTooLarge { len: txn.len(), max }, leader));
        }
        if self.staged.len() >= MAX_STAGED {
            self.flush_appends().await.map_err(Fault::Local)?;
        }
        tracing::trace!(target: LATENCY, server = self.me.0, zxid = zxid.0, "appended");
        self.log.zxids.push_back(zxid);
        self.undelivered.insert(zxid, txn.clone());
        self.log.pending.insert(zxid, txn.clone());
        self.staged.push((zxid, txn));
        Ok(())
    }

    /// Hands the staged txns to the WAL as one batch (waiting for room in its queue).
    async fn flush_appends(&mut self) -> Result<(), LocalFault> {
        let Some(&(last, _)) = self.staged.last() else { return Ok(()) };
        let staged = std::mem::take(&mut self.staged);
        tracing::trace!(target: LATENCY, server = self.me.0, zxid = last.0, records = staged.len(), "handed");
        let pending = self.wal.append_batch_async(staged).await.map_err(|source| LocalFault::Wal {
            op: "append",
            zxid: last,
            source,
        })?;
        self.durability.push_back(Box::pin(pending));
        Ok(())
    }

    /// Cuts the log after `zxid`, as `leader` said.
    async fn truncate(&mut self, zxid: Zxid, leader: Option<ServerId>) -> Result<(), Fault> {
        tracing::info!(after = %zxid, leader = leader.map(|l| l.0), "truncating the log (TRUNC): txns after this zxid never committed");
        self.flush_appends().await.map_err(Fault::Local)?;
        // Truncation runs behind every queued append: its completion means all of it is durable.
        let truncation = self.wal.truncate_after(zxid).map_err(|e| Fault::wal("truncate after", zxid, e, leader))?;
        truncation.await.map_err(|e| Fault::wal("truncate after", zxid, e, None))?;
        self.durability.clear();
        while self.log.zxids.back().is_some_and(|&z| z > zxid) {
            self.log.zxids.pop_back();
        }
        self.log.pending.retain(|&z, _| z <= zxid);
        self.undelivered.retain(|&z, _| z <= zxid);
        if self.delivered > zxid {
            self.delivered = zxid;
            self.committed_tx.send(Committed::Rebuild(zxid)).await.map_err(|_| LocalFault::NodeGone)?;
        }
        Ok(())
    }

    /// Hands the node every txn after the last one delivered up to `zxid`, from memory: every txn appended
    /// since the start is held in `undelivered` until delivered, and a truncation cuts both.
    async fn deliver(&mut self, zxid: Zxid) -> Result<(), LocalFault> {
        if zxid <= self.delivered {
            return Ok(());
        }
        tracing::trace!(target: LATENCY, server = self.me.0, zxid = zxid.0, "committed");
        let from = Zxid(self.delivered.0.saturating_add(1));
        let rest = match zxid.0.checked_add(1) {
            Some(after) => self.undelivered.split_off(&Zxid(after)),
            None => BTreeMap::new(),
        };
        let batch = std::mem::replace(&mut self.undelivered, rest);
        // The log and the held txns agree on what lies in (delivered, zxid]; if not, applying would skip txns.
        let logged = self.log.zxids.iter().rev().skip_while(|&&z| z > zxid).take_while(|&&z| z >= from).count();
        if batch.len() != logged || batch.keys().next().is_some_and(|&z| z < from) {
            return Err(LocalFault::Undeliverable { from, to: zxid, logged, held: batch.len() });
        }
        self.send_committed(batch.into_iter().map(|(zxid, txn)| Committed::Txn { zxid, txn }).collect(), zxid).await;
        Ok(())
    }

    async fn send_committed(&mut self, batch: Vec<Committed>, zxid: Zxid) {
        for committed in batch {
            if let Committed::Txn { zxid: z, .. } = committed {
                assert!(
                    z > self.delivered,
                    "committed txns go to the node in zxid order: {z} after {}",
                    self.delivered
                );
                self.delivered = z;
            }
            if self.committed_tx.send(committed).await.is_err() {
                // Nobody consumes the stream (a bare runtime in tests): nothing to deliver to.
                self.delivered = zxid;
                break;
            }
        }
    }

    /// The txns appended but not durable yet, up to `until`.
    fn pending_until(&self, until: Zxid) -> Vec<(Zxid, Bytes)> {
        self.log.pending.range(..=until).map(|(&z, txn)| (z, txn.clone())).collect()
    }

    /// Streams a follower too far behind for a DIFF a snapshot of committed history, then the txns after it
    /// (see [`SnapshotPoint`] for where the snapshot ends).
    fn stream_snapshot(&self, to: ServerId, until: Zxid, commit_up_to: Zxid, serving: bool) {
        let Some(snap_dir) = self.snapshots.clone() else {
            tracing::warn!(follower = to.0, "the follower needs a snapshot, and this server has no snapshot directory");
            self.transport.disconnect(to);
            return;
        };
        let point = if serving {
            SnapshotPoint::Delivered(self.delivered.min(self.wal.end()))
        } else {
            SnapshotPoint::NewestSnapshot
        };
        tracing::info!(follower = to.0, ?point, %until, "sending a snapshot");
        let pending = self.pending_until(until);
        let stream = SnapshotStream::new(self.wal.clone(), snap_dir, point, pending, until, commit_up_to);
        let _ = self.transport.send_stream(to, Box::new(stream));
    }

    /// Stores a chunk of the snapshot `leader` sends, on a blocking thread. The first one (offset 0) starts a
    /// new file, whatever an earlier sync that broke off left behind.
    async fn receive_chunk(&mut self, offset: u64, data: Bytes, leader: ServerId) -> Result<(), Fault> {
        let dir = self.snapshots.clone().ok_or(LocalFault::NoSnapshotDirectory)?;
        let receiving = self.incoming.take().filter(|_| offset != 0);
        // The protocol checked the offsets already; a second check keeps a bad chunk off the disk regardless.
        let expected = receiving.as_ref().map_or(0, |r| r.next);
        if offset != expected {
            let fault = PeerFault::ChunkOutOfOrder { got: offset, expected };
            return Err(Fault::Peer { peer: leader, fault });
        }
        let stored = tokio::task::spawn_blocking(move || {
            let mut file = match receiving {
                Some(receiving) => receiving.file,
                None => Incoming::create(&dir)?,
            };
            file.write(offset, &data)?;
            let next = offset.saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
            Ok(Receiving { file, next })
        })
        .await
        .map_err(|e| Fault::task("store a snapshot chunk", e))?;
        self.incoming = Some(stored.map_err(|e| Fault::snapshot("store a chunk", e, leader))?);
        Ok(())
    }

    /// Installs the snapshot received from `leader` as the history up to `zxid`, in the order that never
    /// leaves less history on disk than before (see [`snapshot::transfer`]): stage it (durable, verified),
    /// restart the WAL after it (the commit point), install it. Then the node rebuilds its tree from it.
    async fn install_snapshot(&mut self, zxid: Zxid, leader: ServerId) -> Result<(), Fault> {
        let dir = self.snapshots.clone().ok_or(LocalFault::NoSnapshotDirectory)?;
        let receiving = self.incoming.take().ok_or(Fault::Peer { peer: leader, fault: PeerFault::ChunkWithoutSnap })?;
        // A snapshot that does not verify is the leader's fault; nothing has changed on disk but a staging file.
        tokio::task::spawn_blocking(move || receiving.file.stage(zxid))
            .await
            .map_err(|e| Fault::task("stage the leader's snapshot", e))?
            .map_err(|e| Fault::snapshot("stage", e, leader))?;
        self.flush_appends().await.map_err(Fault::Local)?;
        let restart = self.wal.restart_after(zxid).map_err(|e| Fault::wal("restart the log after", zxid, e, None))?;
        restart.await.map_err(|e| Fault::wal("restart the log after", zxid, e, None))?;
        // Appends from before (all done: the restart ran behind them) no longer matter.
        self.durability.clear();
        self.log.zxids.clear();
        self.log.pending.clear();
        self.undelivered.clear();
        // Past the commit point: whatever fails now is this server's disk.
        let installed = tokio::task::spawn_blocking(move || snapshot::transfer::install(&dir, zxid))
            .await
            .map_err(|e| Fault::task("install the leader's snapshot", e))?;
        installed.map_err(|source| LocalFault::Snapshot { op: "install", source })?;
        self.delivered = zxid;
        // Nobody consumes the stream in a bare runtime (tests): nothing to rebuild then.
        let _ = self.committed_tx.send(Committed::Rebuild(zxid)).await;
        self.applied_tx.send_replace(zxid);
        Ok(())
    }
}

/// Messages (or proposals) taken from a channel at once at most before they are handled.
const MAX_EVENTS_AT_ONCE: usize = 256;

/// Txns staged for the WAL at most before they are handed to it (a bound on one batch's size and latency).
const MAX_STAGED: usize = 1024;

/// Waits for the oldest append in flight; `None` when there is none (so that `select!` skips it).
async fn next_durable(durability: &mut VecDeque<Durability>) -> Option<Result<Zxid, WalError>> {
    let first = durability.front_mut()?;
    let result = first.await;
    durability.pop_front();
    // Everything that became durable with it completes too: report only the newest.
    let mut last = result;
    while let Some(next) = durability.front_mut() {
        match futures_util::FutureExt::now_or_never(next.as_mut()) {
            Some(r) => {
                durability.pop_front();
                last = r;
            }
            None => break,
        }
    }
    Some(last)
}
